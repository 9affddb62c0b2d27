/* tests: qtk convert --format mlx. The MLX directory is read back with the
 * safetensors reader and an independent MLX dequantizer (U32 bit streams,
 * w = scales*q + biases) must equal the dequantization of the .qtk file
 * converted with the same options, bit for bit; config.json entries,
 * sharding (forced small), refusals, -j invariance and failure safety. */
#include <jansson.h>
#include <stdlib.h>
#include <unistd.h>

#include "test.h"
#include "test_mlx_util.h"
#include "test_conv_util.h"

int mlx_test_convert(const char *in, const char *out, qtk_out_format fmt, qtk_scheme_id s,
                     uint32_t g, const char *set, qtk_dtype sdt, qtk_status *st)
{
	/* MLX's affine rule for every output, so .qtk and MLX files of the
	 * same options hold the same parameters */
	qtk_conv_opts o = { .input = in, .output = out, .format = fmt,
	                    .scale_dtype = sdt, .threads = 2, .force = 1, .affine_rule = 2 };
	return t_convert(&o, s, g, &(t_rules){ .set = set }, NULL, st);
}

/* ---- the independent MLX reader ---------------------------------------- */

static unsigned stream_code(const uint8_t *row, uint64_t i, unsigned bits)
{
	unsigned q = 0;

	for (unsigned b = 0; b < bits; b++) {
		uint64_t k = i * bits + b;
		/* word k/32 little-endian: bit k%32 of it is bit k%8 of byte k/8 */
		q |= ((row[k / 8] >> (k % 8)) & 1u) << b;
	}
	return q;
}

static float to_f32(qtk_dtype dt, const uint8_t *p)
{
	float f;

	qtk_to_f32(dt, p, &f, 1);
	return f;
}

static int check_quant(const qtk_st_file *m, const qtk_pack_tensor *t, const char *prefix)
{
	char n_s[600], n_b[600];
	const qtk_st_tensor *w = qtk_st_find(m, t->name), *s, *b;
	qtk_q_cplanes cp = { { 0 } };
	uint64_t rows = t->rows, cols = t->cols, words, gpr, g = t->layout.group;
	unsigned bits = qtk_q_scheme_get(t->layout.scheme)->code_bits;
	float *ref;
	int bad = 0;

	snprintf(n_s, sizeof n_s, "%s.scales", prefix);
	snprintf(n_b, sizeof n_b, "%s.biases", prefix);
	s = qtk_st_find(m, n_s);
	b = qtk_st_find(m, n_b);
	if (!w || !s || !b || w->dtype != QTK_DT_U32 || s->dtype != b->dtype) {
		t_fail_at(__FILE__, __LINE__, "%s: MLX triple missing or mistyped", t->name);
		return 1;
	}
	words = cols * bits / 32;
	gpr = cols / g;
	if (w->nelem != rows * words || s->nelem != rows * gpr || b->nelem != rows * gpr ||
	    w->shape[w->ndim - 1] != words || s->shape[s->ndim - 1] != gpr) {
		t_fail_at(__FILE__, __LINE__, "%s: MLX shapes wrong", t->name);
		return 1;
	}
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		cp.p[p] = t->planes[p].data;
	ref = malloc(rows * cols * sizeof *ref + 4);
	if (!ref)
		return 1;
	qtk_q_dequantize_rows(&t->layout, &cp, (size_t)rows, (size_t)cols, ref);
	for (uint64_t r = 0; r < rows && !bad; r++) {
		const uint8_t *wr = (const uint8_t *)w->data + r * words * 4;
		size_t es = qtk_dtype_size(s->dtype);
		for (uint64_t i = 0; i < cols; i++) {
			float sc = to_f32(s->dtype, (const uint8_t *)s->data + (r * gpr + i / g) * es);
			float bi = to_f32(b->dtype, (const uint8_t *)b->data + (r * gpr + i / g) * es);
			float v = sc * (float)stream_code(wr, i, bits) + bi;
			/* bit for bit, except that scale*0 may be -0 where MLX's
			 * scale*q' + bias gives +0 */
			if (memcmp(&v, &ref[r * cols + i], 4) && !(v == 0 && ref[r * cols + i] == 0)) {
				t_fail_at(__FILE__, __LINE__, "%s [%llu][%llu]: MLX %.9g, qtk %.9g",
				          t->name, (unsigned long long)r, (unsigned long long)i,
				          (double)v, (double)ref[r * cols + i]);
				bad = 1;
				break;
			}
		}
	}
	free(ref);
	return bad;
}

mlx_cmp mlx_compare_qtk(const char *mlxdir, const char *qtk)
{
	mlx_cmp c = { 0, 0, 0, 0 };
	qtk_st_file *m = NULL;
	qtk_pack_file *f = NULL;
	qtk_status st;

	if (qtk_st_open(mlxdir, &m, &st) || qtk_pack_open(qtk, 0, &f, &st)) {
		t_fail_at(__FILE__, __LINE__, "open: %s", st.msg);
		qtk_st_close(m);
		c.bad = 1;
		return c;
	}
	for (size_t i = 0; i < qtk_pack_count(f); i++) {
		const qtk_pack_tensor *t = qtk_pack_get(f, i);
		const qtk_q_scheme *sc = qtk_q_scheme_get(t->layout.scheme);
		const qtk_st_tensor *x = qtk_st_find(m, t->name);
		char prefix[512];
		size_t len = strlen(t->name);

		if (!x) {
			t_fail_at(__FILE__, __LINE__, "%s: not in the MLX output", t->name);
			c.bad++;
			continue;
		}
		if (len > 7 && !strcmp(t->name + len - 7, ".weight"))
			len -= 7;
		snprintf(prefix, sizeof prefix, "%.*s", (int)len, t->name);
		if (sc->quantized) {
			char sn[520];
			snprintf(sn, sizeof sn, "%s.scales", prefix);
			if (!qtk_st_find(m, sn)) {
				/* rows the group does not divide: source precision in MLX */
				CHECK_MSG(t->cols % t->layout.group != 0 && x->dtype == t->src_dtype,
				          "%s: quantized in .qtk but float in MLX", t->name);
				c.fallback++;
				continue;
			}
			c.bad += check_quant(m, t, prefix);
			c.quantized++;
			continue;
		}
		if (x->nbytes != t->planes[QTK_PLANE_CODES].size ||
		    memcmp(x->data, t->planes[QTK_PLANE_CODES].data, x->nbytes)) {
			t_fail_at(__FILE__, __LINE__, "%s: float bytes differ", t->name);
			c.bad++;
		}
		c.floats++;
	}
	qtk_pack_close(f);
	qtk_st_close(m);
	return c;
}

/* ---- tests -------------------------------------------------------------- */

static const char *stories(void)
{
	return t_data("stories260K/model.safetensors");
}

/* Convert in to MLX and to .qtk with the same options; compare. */
static mlx_cmp both(const char *in, qtk_scheme_id s, uint32_t g, const char *set)
{
	qtk_dtype sdt = strstr(in, "bf16") ? QTK_DT_BF16 : QTK_DT_F16;
	char dir[512], q[512];
	qtk_status st;
	mlx_cmp bad = { 0, 0, 0, 1 };

	snprintf(dir, sizeof dir, "%s", t_tmp("mlx"));
	snprintf(q, sizeof q, "%s", t_tmp("m.qtk"));
	if (mlx_test_convert(in, dir, QTK_OUT_MLX, s, g, set, sdt, &st) ||
	    mlx_test_convert(in, q, QTK_OUT_QTK, s, g, set, sdt, &st)) {
		t_fail_at(__FILE__, __LINE__, "%s: convert: %s", in, st.msg);
		return bad;
	}
	return mlx_compare_qtk(dir, q);
}

TEST(convert_mlx_equals_qtk_every_scheme_and_group)
{
	static const qtk_scheme_id s[] = { QTK_SCHEME_INT4, QTK_SCHEME_INT4_AFFINE,
	                                   QTK_SCHEME_INT8, QTK_SCHEME_INT8_AFFINE };
	static const uint32_t g[] = { 32, 64, 128 };

	for (int i = 0; i < 4; i++)
		for (int k = 0; k < 3; k++) {
			mlx_cmp c = both(stories(), s[i], g[k], NULL);
			CHECK_MSG(c.bad == 0, "scheme %d group %u: %d mismatches", s[i], g[k], c.bad);
			/* 36 2-D weights; ffn_down (172 wide) stays float; g128 leaves
			 * only the 128-wide rows (none: dim 64) */
			CHECK_EQ(c.quantized + c.fallback, 36);
			if (g[k] == 32)
				CHECK_EQ(c.quantized, 31);
			CHECK_EQ(c.floats, 11);
		}
}

TEST(convert_mlx_bf16_and_f16_models_keep_their_dtype)
{
	const char *in[] = { "stories260K/model.bf16.safetensors",
	                     "stories260K/model.f16.safetensors" };
	const qtk_dtype dt[] = { QTK_DT_BF16, QTK_DT_F16 };

	for (int i = 0; i < 2; i++) {
		char src[512];
		qtk_st_file *m = NULL;
		qtk_status st;
		mlx_cmp c;

		snprintf(src, sizeof src, "%s", t_data(in[i]));
		c = both(src, QTK_SCHEME_INT8, 32, NULL);
		CHECK_EQ(c.bad, 0);
		CHECK_EQ(c.quantized, 31);
		REQUIRE(qtk_st_open(t_tmp("mlx"), &m, &st) == QTK_OK);
		CHECK_EQ(qtk_st_find(m, "model.layers.0.mlp.up_proj.scales")->dtype, dt[i]);
		CHECK_EQ(qtk_st_find(m, "model.layers.0.mlp.up_proj.biases")->dtype, dt[i]);
		CHECK_EQ(qtk_st_find(m, "model.norm.weight")->dtype, dt[i]);
		CHECK_STR(qtk_st_meta_get(m, "format"), "mlx");
		qtk_st_close(m);
	}
}

TEST(convert_mlx_config_entries)
{
	char dir[512], path[600];
	qtk_status st;
	json_t *cfg, *q, *qc, *e;

	snprintf(dir, sizeof dir, "%s", t_tmp("mlx"));
	REQUIRE(mlx_test_convert(stories(), dir, QTK_OUT_MLX, QTK_SCHEME_INT4, 64,
	                         "*v_proj*=int8-affine:32", QTK_DT_F16, &st) == QTK_OK);
	snprintf(path, sizeof path, "%s/config.json", dir);
	cfg = json_load_file(path, 0, NULL);
	REQUIRE(cfg);
	q = json_object_get(cfg, "quantization");
	qc = json_object_get(cfg, "quantization_config");
	CHECK(json_equal(q, qc));
	CHECK_EQ(json_integer_value(json_object_get(q, "group_size")), 64);
	CHECK_EQ(json_integer_value(json_object_get(q, "bits")), 4);
	CHECK_STR(json_string_value(json_object_get(q, "mode")), "affine");
	e = json_object_get(q, "model.layers.2.self_attn.v_proj");
	CHECK_EQ(json_integer_value(json_object_get(e, "group_size")), 32);
	CHECK_EQ(json_integer_value(json_object_get(e, "bits")), 8);
	CHECK(json_object_get(q, "model.layers.2.self_attn.q_proj") == NULL);
	/* the source's own fields carry over */
	CHECK_STR(json_string_value(json_object_get(cfg, "model_type")), "llama");
	CHECK_EQ(json_integer_value(json_object_get(cfg, "num_hidden_layers")), 5);
	json_decref(cfg);
	snprintf(path, sizeof path, "%s/tokenizer.model", dir);
	CHECK(t_exists(path));

	/* a weight kept in float is marked false */
	REQUIRE(mlx_test_convert(stories(), dir, QTK_OUT_MLX, QTK_SCHEME_INT8, 32,
	                         "*k_proj*=f32", QTK_DT_F16, &st) == QTK_OK);
	snprintf(path, sizeof path, "%s/config.json", dir);
	cfg = json_load_file(path, 0, NULL);
	REQUIRE(cfg);
	q = json_object_get(cfg, "quantization");
	CHECK(json_is_false(json_object_get(q, "model.layers.0.self_attn.k_proj")));
	CHECK(json_object_get(q, "model.layers.0.mlp.down_proj") == NULL); /* 172 % 32 */
	json_decref(cfg);
}

TEST(convert_mlx_shards_with_small_limit)
{
	char dir[512], one[512], path[600];
	qtk_status st;
	json_t *idx;
	qtk_st_file *a = NULL, *b = NULL;
	int nshards = 0;

	snprintf(dir, sizeof dir, "%s", t_tmp("sharded"));
	snprintf(one, sizeof one, "%s", t_tmp("one"));
	REQUIRE(mlx_test_convert(stories(), one, QTK_OUT_MLX, QTK_SCHEME_INT4, 32, NULL, QTK_DT_F16, &st) ==
	        QTK_OK);
	setenv("QTK_MLX_SHARD_BYTES", "100000", 1);
	REQUIRE(mlx_test_convert(stories(), dir, QTK_OUT_MLX, QTK_SCHEME_INT4, 32, NULL, QTK_DT_F16, &st) ==
	        QTK_OK);
	unsetenv("QTK_MLX_SHARD_BYTES");
	for (int k = 1; k < 10; k++) {
		snprintf(path, sizeof path, "%s/model-%05d-of-00005.safetensors", dir, k);
		nshards += t_exists(path);
	}
	CHECK_EQ(nshards, 5); /* 376 KB in shards of at most 100 KB, whole tensors */
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	CHECK(!t_exists(path));
	snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
	idx = json_load_file(path, 0, NULL);
	REQUIRE(idx);
	REQUIRE(qtk_st_open(dir, &a, &st) == QTK_OK);
	REQUIRE(qtk_st_open(one, &b, &st) == QTK_OK);
	{
		uint64_t total = 0;
		for (size_t i = 0; i < qtk_st_count(a); i++)
			total += qtk_st_get(a, i)->nbytes;
		CHECK_EQ(json_integer_value(json_object_get(json_object_get(idx, "metadata"),
		                                            "total_size")), total);
	}
	CHECK_EQ(json_object_size(json_object_get(idx, "weight_map")), qtk_st_count(b));
	CHECK_EQ(qtk_st_count(a), qtk_st_count(b));
	for (size_t i = 0; i < qtk_st_count(b); i++) {
		const qtk_st_tensor *x = qtk_st_get(b, i), *y = qtk_st_find(a, x->name);
		CHECK_MSG(y && y->nbytes == x->nbytes && !memcmp(y->data, x->data, x->nbytes),
		          "%s differs between sharded and single", x->name);
	}
	for (size_t k = 0; k < qtk_st_shard_count(a); k++) {
		CHECK(qtk_st_shard_size(a, k) <= 100000 + 4096); /* + header */
	}
	json_decref(idx);
	qtk_st_close(a);
	qtk_st_close(b);
}

TEST(convert_mlx_refuses_nf4_and_row_groups_naming_the_tensor)
{
	char dir[512];
	qtk_status st;

	snprintf(dir, sizeof dir, "%s", t_tmp("out"));
	CHECK_EQ(mlx_test_convert(stories(), dir, QTK_OUT_MLX, QTK_SCHEME_NF4, 64, NULL, QTK_DT_F16, &st),
	         QTK_E_UNSUPPORTED);
	CHECK_MSG(strstr(st.msg, "tensor 'model.embed_tokens.weight'") &&
	          strstr(st.msg, "nf4"), "message: %s", st.msg);
	CHECK_EQ(mlx_test_convert(stories(), dir, QTK_OUT_MLX, QTK_SCHEME_INT8, QTK_GROUP_ROW,
	                          NULL, QTK_DT_F16, &st), QTK_E_UNSUPPORTED);
	CHECK_MSG(strstr(st.msg, "tensor '") && strstr(st.msg, "groups are 32, 64 or 128"),
	          "message: %s", st.msg);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 0);
	/* a rule sending the nf4 tensors to float makes it valid */
	CHECK_EQ(mlx_test_convert(stories(), dir, QTK_OUT_MLX, QTK_SCHEME_INT4, 32, "*=f16", QTK_DT_F16, &st),
	         QTK_OK);
}

TEST(convert_mlx_output_safety)
{
	const char *q = getenv("QTK_BIN");
	char dir[512], in[512], copy[600], err[512];
	char *msg;

	if (!q)
		SKIP("QTK_BIN not set");
	snprintf(dir, sizeof dir, "%s", t_tmp("out"));
	snprintf(in, sizeof in, "%s", stories());
	snprintf(err, sizeof err, "%s", t_tmp("err"));
	CHECK_EQ(t_system("%s convert %s -o %s --format mlx --scheme int4 --group 32 -q", q, in,
	                  dir), 0);
	CHECK_EQ(t_system("%s convert %s -o %s --format mlx --scheme int8 -q 2>%s", q, in, dir,
	                  err), 1);
	msg = t_read_file(err, NULL);
	CHECK(msg && strstr(msg, "--force"));
	free(msg);
	CHECK_EQ(t_system("%s convert %s -o %s --format mlx --scheme int8 --group 32 -q -f", q,
	                  in, dir), 0);
	/* an input inside the output directory is refused */
	snprintf(copy, sizeof copy, "%s/in.safetensors", dir);
	CHECK_EQ(t_system("cp %s %s", in, copy), 0);
	CHECK_EQ(t_system("%s convert %s -o %s --format mlx --scheme int8 -q -f 2>/dev/null", q,
	                  copy, dir), 1);
	CHECK(t_exists(copy));
	/* dry run writes nothing; unknown format is a usage error */
	CHECK_EQ(t_system("%s convert %s -o %s2 --format mlx --scheme int4 -n > /dev/null", q,
	                  in, dir), 0);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 2); /* out, err */
	CHECK_EQ(t_system("%s convert %s -o %s2 --format mlz --scheme int4 2>/dev/null", q, in,
	                  dir), 2);
}

TEST(convert_mlx_threads_give_identical_bytes)
{
	const char *q = getenv("QTK_BIN");
	char a[512], b[512];

	if (!q)
		SKIP("QTK_BIN not set");
	snprintf(a, sizeof a, "%s", t_tmp("a"));
	snprintf(b, sizeof b, "%s", t_tmp("b"));
	CHECK_EQ(t_system("%s convert %s -o %s --format mlx --scheme int4 --group 32 --chunk 1024"
	                  " -j1 -q", q, stories(), a), 0);
	CHECK_EQ(t_system("%s convert %s -o %s --format mlx --scheme int4 --group 32 --chunk 1024"
	                  " -j3 -q", q, stories(), b), 0);
	CHECK_EQ(t_system("diff -r %s %s", a, b), 0);
}

TEST(convert_mlx_faults_leave_nothing)
{
	char dir[512];
	qtk_status st;
	int fired = 1;

	snprintf(dir, sizeof dir, "%s", t_tmp("out"));
	for (uint64_t n = 1; fired && n < 200; n++) {
		int rc;
		qtk_fault_arm(QTK_FAULT_WRITE, n, 28 /* ENOSPC */);
		rc = mlx_test_convert(stories(), dir, QTK_OUT_MLX, QTK_SCHEME_INT4, 32, NULL, QTK_DT_F16, &st);
		fired = qtk_fault_fired(QTK_FAULT_WRITE);
		qtk_fault_arm(QTK_FAULT_WRITE, 0, 0);
		if (!fired) {
			CHECK_EQ(rc, QTK_OK);
			break;
		}
		CHECK_MSG(rc == QTK_E_IO, "write %llu: rc %d", (unsigned long long)n, rc);
		CHECK_MSG(t_dir_entries(t_tmpdir()) == 0, "write %llu left files", (unsigned long long)n);
	}
	CHECK(!fired);
	for (int k = 0; k < 3; k++) {
		static const qtk_fault_kind kinds[] = { QTK_FAULT_FSYNC, QTK_FAULT_RENAME,
		                                        QTK_FAULT_OPEN };
		for (uint64_t n = 1; n < 4; n++) {
			char d2[600];
			int rc;
			snprintf(d2, sizeof d2, "%s%d%llu", dir, k, (unsigned long long)n);
			qtk_fault_arm(kinds[k], n, 5 /* EIO */);
			rc = mlx_test_convert(stories(), d2, QTK_OUT_MLX, QTK_SCHEME_INT4, 32, NULL, QTK_DT_F16, &st);
			if (qtk_fault_fired(kinds[k]))
				CHECK_MSG(rc != QTK_OK && !t_exists(d2), "fault %d/%llu", k,
				          (unsigned long long)n);
			qtk_fault_arm(kinds[k], 0, 0);
		}
	}
}

TEST(convert_mlx_real_checkpoints)
{
	const char *rel[] = { "ckpts/capp-gpt2/model.safetensors",
	                      "ckpts/human-models/blazepose-heavy.safetensors",
	                      "ckpts/human-models/blazepose-heavy-sharded",
	                      "ckpts/stories260K/model.bf16.safetensors" };
	int found = 0;

	for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
		const char *p = t_shared(rel[i]);
		char in[512];
		mlx_cmp c;

		if (!p)
			continue;
		snprintf(in, sizeof in, "%s", p);
		found++;
		c = both(in, QTK_SCHEME_INT4_AFFINE, 64, NULL);
		CHECK_MSG(c.bad == 0 && c.quantized > 0, "%s: %d bad, %d quantized", in, c.bad,
		          c.quantized);
		c = both(in, QTK_SCHEME_INT8, 32, NULL);
		CHECK_MSG(c.bad == 0 && c.quantized > 0, "%s: %d bad, %d quantized", in, c.bad,
		          c.quantized);
	}
	if (!found)
		SKIP("../shared/ckpts not present");
}

/* The affine rule: MLX's by default for MLX output, ggml's (Q4_1) for .qtk
 * and GGUF; --affine-rule overrides both ways. Symmetric schemes ignore it. */
TEST(convert_affine_rule_defaults)
{
	static const struct { qtk_out_format fmt; int rule; qtk_scheme_id s; int mlx; } c[] = {
		{ QTK_OUT_MLX, 0, QTK_SCHEME_INT4_AFFINE, 1 },
		{ QTK_OUT_QTK, 0, QTK_SCHEME_INT4_AFFINE, 0 },
		{ QTK_OUT_GGUF, 0, QTK_SCHEME_INT4_AFFINE, 0 },
		{ QTK_OUT_MLX, 1, QTK_SCHEME_INT4_AFFINE, 0 },
		{ QTK_OUT_QTK, 2, QTK_SCHEME_INT8_AFFINE, 1 },
		{ QTK_OUT_GGUF, 2, QTK_SCHEME_INT4_AFFINE, 1 },
		{ QTK_OUT_QTK, 2, QTK_SCHEME_INT4, 0 },
	};
	for (size_t k = 0; k < sizeof c / sizeof *c; k++) {
		char out[4096];
		qtk_conv_report *rep = NULL;
		qtk_status st;
		size_t quant = 0;
		qtk_conv_opts o = { .input = t_data("stories260K/model.safetensors"), .output = out,
		                    .format = c[k].fmt, .scale_dtype = QTK_DT_F16, .threads = 1,
		                    .force = 1, .affine_rule = c[k].rule };

		snprintf(out, sizeof out, "%s", t_tmp(c[k].fmt == QTK_OUT_MLX ? "o" :
		                                      c[k].fmt == QTK_OUT_GGUF ? "o.gguf" : "o.qtk"));
		CHECK_MSG(t_convert(&o, c[k].s, 32, NULL, &rep, &st) == QTK_OK, "case %zu: %s", k,
		          st.msg);
		for (size_t i = 0; rep && i < rep->ntensors; i++) {
			const qtk_q_layout *L = &rep->tensors[i].layout;
			if (L->scheme != c[k].s)
				continue;
			quant++;
			CHECK_MSG(!!(L->flags & QTK_QF_MLX_AFFINE) == c[k].mlx, "case %zu: %s flags %u",
			          k, rep->tensors[i].name, L->flags);
		}
		CHECK_MSG(quant > 20, "case %zu: %zu quantized", k, quant);
		qtk_conv_report_free(rep);
	}
}
