/* tests: qtk export. A .qtk exported to GGUF equals `convert --format gguf`
 * of the same options byte for byte (requantizing only what GGUF cannot
 * hold); exported to MLX it equals `convert --format mlx` and dequantizes
 * like the .qtk bit for bit; refusals name the tensor; --requantize checks
 * the recorded source; malformed inputs fail clearly and write nothing. */
#include <stdlib.h>
#include <unistd.h>

#include "test.h"
#include "test_mlx_util.h"

static const char *stories(void)
{
	return t_data("stories260K/model.safetensors");
}

static int do_export(const char *in, const char *out, qtk_out_format fmt, int requant,
                     qtk_export_report **rep, qtk_status *st)
{
	qtk_export_opts o = { .input = in, .output = out, .format = fmt,
	                      .requantize = requant, .threads = 2, .force = 1 };
	qtk_export_report *r = NULL;
	int rc = qtk_export(&o, &r, st);

	if (rep)
		*rep = r;
	else
		qtk_export_report_free(r);
	return rc;
}

TEST(export_gguf_equals_convert_gguf)
{
	static const qtk_scheme_id s[] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4,
	                                   QTK_SCHEME_INT4_AFFINE, QTK_SCHEME_F16 };
	char q[512], a[512], b[512];

	snprintf(q, sizeof q, "%s", t_tmp("m.qtk"));
	snprintf(a, sizeof a, "%s", t_tmp("convert.gguf"));
	snprintf(b, sizeof b, "%s", t_tmp("export.gguf"));
	for (int i = 0; i < 4; i++) {
		qtk_status st;
		qtk_export_report *rep = NULL;
		qtk_gguf_file *x = NULL, *y = NULL;

		REQUIRE(mlx_test_convert(stories(), q, QTK_OUT_QTK, s[i], 32, NULL, QTK_DT_F16, &st)
		        == QTK_OK);
		REQUIRE(mlx_test_convert(stories(), a, QTK_OUT_GGUF, s[i], 32, NULL, QTK_DT_F16, &st)
		        == QTK_OK);
		CHECK_EQ(do_export(q, b, QTK_OUT_GGUF, 1, &rep, &st), QTK_OK);
		REQUIRE(rep);
		/* only the five 172-wide ffn_down (F16 in GGUF) come from the source */
		CHECK_EQ(rep->nrequantized, s[i] == QTK_SCHEME_F16 ? 0 : 5);
		qtk_export_report_free(rep);
		CHECK_MSG(t_same_file(a, b), "scheme %d: export differs from convert", s[i]);
		/* and qtk's GGUF reader sees identical tensors */
		REQUIRE(qtk_gguf_open(a, &x, &st) == QTK_OK);
		REQUIRE(qtk_gguf_open(b, &y, &st) == QTK_OK);
		CHECK_EQ(qtk_gguf_count(x), qtk_gguf_count(y));
		for (size_t k = 0; k < qtk_gguf_count(x); k++) {
			const qtk_gguf_tensor *u = qtk_gguf_get(x, k), *v = qtk_gguf_get(y, k);
			CHECK(u->type == v->type && u->nbytes == v->nbytes &&
			      !memcmp(u->data, v->data, u->nbytes));
		}
		CHECK_EQ(qtk_gguf_find(y, "blk.0.attn_q.weight")->type,
		         s[i] == QTK_SCHEME_INT8 ? QTK_GGML_Q8_0 : s[i] == QTK_SCHEME_INT4 ?
		         QTK_GGML_Q4_0 : s[i] == QTK_SCHEME_INT4_AFFINE ? QTK_GGML_Q4_1 : QTK_GGML_F16);
		qtk_gguf_close(x);
		qtk_gguf_close(y);
	}
}

TEST(export_gguf_without_requantize_is_exact_or_refused)
{
	char q[512], out[512];
	qtk_status st;
	qtk_export_report *rep = NULL;

	snprintf(q, sizeof q, "%s", t_tmp("m.qtk"));
	snprintf(out, sizeof out, "%s", t_tmp("out.gguf"));
	/* ffn_down kept in f32: everything is exact without the source */
	REQUIRE(mlx_test_convert(stories(), q, QTK_OUT_QTK, QTK_SCHEME_INT8, 32, "*down_proj*=f32",
	                         QTK_DT_F16, &st) == QTK_OK);
	CHECK_EQ(do_export(q, out, QTK_OUT_GGUF, 0, &rep, &st), QTK_OK);
	CHECK(rep && rep->nrequantized == 0 && rep->exact == 47);
	qtk_export_report_free(rep);

	REQUIRE(mlx_test_convert(stories(), q, QTK_OUT_QTK, QTK_SCHEME_NF4, 32, NULL, QTK_DT_F16,
	                         &st) == QTK_OK);
	CHECK_EQ(do_export(q, t_tmp("nf4.gguf"), QTK_OUT_GGUF, 0, NULL, &st), QTK_E_UNSUPPORTED);
	CHECK_MSG(strstr(st.msg, "tensor 'model.embed_tokens.weight'") && strstr(st.msg, "nf4") &&
	          strstr(st.msg, "--requantize"), "message: %s", st.msg);
	CHECK(!t_exists(t_tmp("nf4.gguf")));

	REQUIRE(mlx_test_convert(stories(), q, QTK_OUT_QTK, QTK_SCHEME_INT4, 64, NULL, QTK_DT_F16,
	                         &st) == QTK_OK);
	CHECK_EQ(do_export(q, t_tmp("g64.gguf"), QTK_OUT_GGUF, 0, NULL, &st), QTK_E_UNSUPPORTED);
	CHECK_MSG(strstr(st.msg, "tensor '") && strstr(st.msg, "32"), "message: %s", st.msg);
	CHECK(!t_exists(t_tmp("g64.gguf")));
	/* with --requantize: int4 g32 (Q4_0) from the source, as convert would */
	CHECK_EQ(do_export(q, t_tmp("g64.gguf"), QTK_OUT_GGUF, 1, &rep, &st), QTK_OK);
	CHECK(rep && rep->nrequantized == 36);
	qtk_export_report_free(rep);
	REQUIRE(mlx_test_convert(stories(), t_tmp("c.gguf"), QTK_OUT_GGUF, QTK_SCHEME_INT4, 32,
	                         NULL, QTK_DT_F16, &st) == QTK_OK);
	{
		char a[512], b[512];
		snprintf(a, sizeof a, "%s", t_tmp("c.gguf"));
		snprintf(b, sizeof b, "%s", t_tmp("g64.gguf"));
		/* same tensors; general.file_type differs (the .qtk's main scheme
		 * is int4 g64 -> Q4_0 either way), so compare tensor data */
		qtk_gguf_file *x = NULL, *y = NULL;
		REQUIRE(qtk_gguf_open(a, &x, &st) == QTK_OK);
		REQUIRE(qtk_gguf_open(b, &y, &st) == QTK_OK);
		for (size_t k = 0; k < qtk_gguf_count(x); k++) {
			const qtk_gguf_tensor *u = qtk_gguf_get(x, k), *v = qtk_gguf_get(y, k);
			CHECK_MSG(u->type == v->type && u->nbytes == v->nbytes &&
			          !memcmp(u->data, v->data, u->nbytes), "%s differs", u->name);
		}
		qtk_gguf_close(x);
		qtk_gguf_close(y);
	}
}

TEST(export_mlx_equals_convert_mlx_and_the_qtk)
{
	static const qtk_scheme_id s[] = { QTK_SCHEME_INT4, QTK_SCHEME_INT8_AFFINE };
	static const uint32_t g[] = { 64, 32 };
	char q[512], a[512], b[512];

	snprintf(q, sizeof q, "%s", t_tmp("m.qtk"));
	snprintf(a, sizeof a, "%s", t_tmp("convert"));
	snprintf(b, sizeof b, "%s", t_tmp("export"));
	for (int i = 0; i < 2; i++) {
		qtk_status st;
		mlx_cmp c;

		REQUIRE(mlx_test_convert(stories(), q, QTK_OUT_QTK, s[i], g[i], "*down_proj*=f32",
		                         QTK_DT_F16, &st) == QTK_OK);
		REQUIRE(mlx_test_convert(stories(), a, QTK_OUT_MLX, s[i], g[i], "*down_proj*=f32",
		                         QTK_DT_F16, &st) == QTK_OK);
		CHECK_EQ(do_export(q, b, QTK_OUT_MLX, 0, NULL, &st), QTK_OK);
		CHECK_EQ(t_system("diff -r %s %s", a, b), 0);
		c = mlx_compare_qtk(b, q);
		CHECK_EQ(c.bad, 0);
		CHECK(c.quantized > 0);
	}
}

TEST(export_mlx_refusals_and_requantize)
{
	char q[512], out[512];
	qtk_status st;
	qtk_export_report *rep = NULL;

	snprintf(q, sizeof q, "%s", t_tmp("m.qtk"));
	snprintf(out, sizeof out, "%s", t_tmp("out"));
	REQUIRE(mlx_test_convert(stories(), q, QTK_OUT_QTK, QTK_SCHEME_NF4, 64, NULL, QTK_DT_F16,
	                         &st) == QTK_OK);
	CHECK_EQ(do_export(q, out, QTK_OUT_MLX, 0, NULL, &st), QTK_E_UNSUPPORTED);
	CHECK_MSG(strstr(st.msg, "tensor 'model.embed_tokens.weight'") && strstr(st.msg, "nf4"),
	          "message: %s", st.msg);
	CHECK(!t_exists(out));
	CHECK_EQ(do_export(q, out, QTK_OUT_MLX, 1, &rep, &st), QTK_OK);
	CHECK(rep && rep->nrequantized == 36); /* nf4 -> int4-affine g64; down_proj -> f32 */
	qtk_export_report_free(rep);
	{
		/* the requantized weights equal convert --format mlx int4-affine g64 */
		char c[512];
		snprintf(c, sizeof c, "%s", t_tmp("c"));
		REQUIRE(mlx_test_convert(stories(), c, QTK_OUT_MLX, QTK_SCHEME_INT4_AFFINE, 64, NULL,
		                         QTK_DT_F16, &st) == QTK_OK);
		CHECK_EQ(t_system("cmp -s %s/model.safetensors %s/model.safetensors", c, out), 0);
	}
}

TEST(export_requantize_checks_the_source)
{
	char dir[512], src[600], q[512], out[512];
	qtk_status st;

	snprintf(dir, sizeof dir, "%s", t_tmp("ckpt"));
	snprintf(q, sizeof q, "%s", t_tmp("m.qtk"));
	snprintf(out, sizeof out, "%s", t_tmp("out.gguf"));
	snprintf(src, sizeof src, "%s/model.safetensors", dir);
	REQUIRE(t_system("mkdir -p %s && cp %s %s/config.json %s/tokenizer.model %s/", dir,
	                 stories(), t_data("stories260K"), t_data("stories260K"), dir) == 0);
	REQUIRE(mlx_test_convert(src, q, QTK_OUT_QTK, QTK_SCHEME_INT8, 32, NULL, QTK_DT_F16, &st)
	        == QTK_OK);
	/* one byte of a weight changed: crc32 differs */
	REQUIRE(t_system("printf '\\001' | dd of=%s bs=1 seek=900000 conv=notrunc 2>/dev/null",
	                 src) == 0);
	CHECK_EQ(do_export(q, out, QTK_OUT_GGUF, 1, NULL, &st), QTK_E_CHECKSUM);
	CHECK_MSG(strstr(st.msg, "crc32") && strstr(st.msg, "model.safetensors"), "message: %s",
	          st.msg);
	CHECK(!t_exists(out));
	/* gone */
	REQUIRE(unlink(src) == 0);
	CHECK_EQ(do_export(q, out, QTK_OUT_GGUF, 1, NULL, &st), QTK_E_NOT_FOUND);
	CHECK_MSG(strstr(st.msg, "source"), "message: %s", st.msg);
	CHECK(!t_exists(out));
	/* without --requantize the source is not needed (config from metadata) */
	REQUIRE(mlx_test_convert(stories(), q, QTK_OUT_QTK, QTK_SCHEME_INT8, 32, "*down_proj*=f16",
	                         QTK_DT_F16, &st) == QTK_OK);
	CHECK_EQ(do_export(q, out, QTK_OUT_GGUF, 0, NULL, &st), QTK_OK);
}

TEST(export_malformed_input_fails_clearly)
{
	char q[512], bad[512], out[512];
	qtk_status st;
	size_t n;
	uint8_t *data;

	snprintf(q, sizeof q, "%s", t_tmp("m.qtk"));
	snprintf(bad, sizeof bad, "%s", t_tmp("bad.qtk"));
	snprintf(out, sizeof out, "%s", t_tmp("out"));
	REQUIRE(mlx_test_convert(stories(), q, QTK_OUT_QTK, QTK_SCHEME_INT4, 32, NULL, QTK_DT_F16,
	                         &st) == QTK_OK);
	data = t_read_file(q, &n);
	REQUIRE(data);
	/* truncated */
	REQUIRE(t_write_file(bad, data, n / 2) == 0);
	CHECK(do_export(bad, out, QTK_OUT_MLX, 0, NULL, &st) != QTK_OK);
	CHECK_MSG(strstr(st.msg, "bad.qtk"), "message: %s", st.msg);
	CHECK(!t_exists(out));
	REQUIRE(t_write_file(bad, data, 100) == 0);
	CHECK_EQ(do_export(bad, out, QTK_OUT_GGUF, 0, NULL, &st), QTK_E_PK_TOO_SMALL);
	/* a flipped code byte: crc32 mismatch names the tensor */
	data[n - 100] ^= 0x5a;
	REQUIRE(t_write_file(bad, data, n) == 0);
	CHECK(do_export(bad, out, QTK_OUT_MLX, 0, NULL, &st) != QTK_OK);
	CHECK(!t_exists(out));
	/* not a .qtk at all */
	CHECK(do_export(stories(), out, QTK_OUT_MLX, 0, NULL, &st) != QTK_OK);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 2); /* m.qtk, bad.qtk */
	free(data);
}

TEST(export_cli)
{
	const char *qb = getenv("QTK_BIN");
	char q[512], out[512], err[512];
	char *msg;

	if (!qb)
		SKIP("QTK_BIN not set");
	snprintf(q, sizeof q, "%s", t_tmp("m.qtk"));
	snprintf(out, sizeof out, "%s", t_tmp("out"));
	snprintf(err, sizeof err, "%s", t_tmp("err"));
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int4 --group 64 -q", qb, stories(), q), 0);
	CHECK_EQ(t_system("%s export --help > /dev/null", qb), 0);
	CHECK_EQ(t_system("%s export %s -o %s 2>/dev/null", qb, q, out), 2);          /* no --to */
	CHECK_EQ(t_system("%s export %s --to onnx -o %s 2>/dev/null", qb, q, out), 2);
	CHECK_EQ(t_system("%s export %s --to gguf 2>/dev/null", qb, q), 2);           /* no -o */
	CHECK_EQ(t_system("%s export %s --to gguf -o %s.gguf 2>%s", qb, q, out, err), 1);
	msg = t_read_file(err, NULL);
	CHECK(msg && strstr(msg, "qtk: ") && strstr(msg, "--requantize"));
	free(msg);
	CHECK_EQ(t_system("%s export %s --to mlx -o %s -R -q", qb, q, out), 0);
	CHECK_EQ(t_system("%s export %s --to mlx -o %s -R -q 2>/dev/null", qb, q, out), 1);
	CHECK_EQ(t_system("%s export %s --to mlx -o %s -R -f --json > %s", qb, q, out, err), 0);
	msg = t_read_file(err, NULL);
	CHECK(msg && strstr(msg, "\"requantized\"") && strstr(msg, "down_proj"));
	free(msg);
}

TEST(export_real_checkpoints)
{
	const char *rel[] = { "ckpts/capp-gpt2/model.safetensors",
	                      "ckpts/human-models/blazepose-heavy.safetensors" };
	int found = 0;

	for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
		const char *p = t_shared(rel[i]);
		char in[512], q[512], m[512], g[512];
		qtk_status st;
		mlx_cmp c;

		if (!p)
			continue;
		found++;
		snprintf(in, sizeof in, "%s", p);
		snprintf(q, sizeof q, "%s", t_tmp("m.qtk"));
		snprintf(m, sizeof m, "%s", t_tmp("mlx"));
		snprintf(g, sizeof g, "%s", t_tmp("m.gguf"));
		REQUIRE(mlx_test_convert(in, q, QTK_OUT_QTK, QTK_SCHEME_INT8, 32, NULL, QTK_DT_F16,
		                         &st) == QTK_OK);
		CHECK_MSG(do_export(q, m, QTK_OUT_MLX, 1, NULL, &st) == QTK_OK, "%s: %s", in, st.msg);
		c = mlx_compare_qtk(m, q);
		CHECK_MSG(c.bad == 0 && c.quantized > 0, "%s: %d bad, %d quantized", in, c.bad,
		          c.quantized);
		if (i == 0) /* blazepose has tensor names ggml cannot read (66+ bytes) */
			CHECK_MSG(do_export(q, g, QTK_OUT_GGUF, 1, NULL, &st) == QTK_OK, "%s: %s", in,
			          st.msg);
	}
	if (!found)
		SKIP("../shared/ckpts not present");
}
