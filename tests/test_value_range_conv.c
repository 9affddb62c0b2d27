/* tests: issue 15 through the converter. A finite value a narrow type
 * cannot hold is refused (exit 1, message naming file, tensor and index,
 * no output left) where the user chose the type, and widened to F32 with a
 * note where qtk chose it (GGUF's F16 for rows the block does not divide,
 * default F16 scales, MLX scales in the model dtype, a "wider" rule);
 * nonzero values stored as zero are counted and reported. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gen.h"
#include "qtk_convert.h"
#include "test.h"
#include "test_conv_util.h"

/* A path in this test's directory that stays put (t_tmp is a ring). */
#define TPATH(var, rel)     \
	char var[1024];     \
	snprintf(var, sizeof var, "%s", t_tmp(rel))

static const char *qbin(void)
{
	const char *b = getenv("QTK_BIN");
	return b && *b ? b : "build/qtk";
}

/* One tensor: 'name' [rows][cols] ~ N(0, 0.02) in dtype (F32/F16/BF16),
 * with value v at (vr, vc) when v != 0. */
typedef struct {
	const char *name;
	uint64_t rows, cols;
	uint64_t vr, vc;
	float v;
} t_spec;

static void write_ckpt(const char *path, qtk_dtype dt, const t_spec *ts, size_t n)
{
	qtk_st_desc d[8];
	void *data[8];
	uint64_t s = 15;
	qtk_status st;
	qtk_write_opts wo = { .force = 1 };

	for (size_t i = 0; i < n; i++) {
		uint64_t ne = ts[i].rows * ts[i].cols;
		float *f = malloc(ne * 4);
		d[i] = (qtk_st_desc){ .name = ts[i].name, .dtype = dt, .ndim = 2,
		                      .shape = { ts[i].rows, ts[i].cols } };
		gen_normal(f, ne, 0.02f, &s);
		if (ts[i].v != 0.0f)
			f[ts[i].vr * ts[i].cols + ts[i].vc] = ts[i].v;
		if (dt != QTK_DT_F32) {
			void *h = malloc(ne * 2);
			qtk_from_f32(dt, f, h, ne);
			free(f);
			data[i] = h;
		} else {
			data[i] = f;
		}
	}
	if (qtk_st_write(path, d, (const void *const *)data, n, NULL, &wo, &st) != QTK_OK)
		t_fail_at(__FILE__, __LINE__, "writing %s: %s", path, st.msg);
	for (size_t i = 0; i < n; i++)
		free(data[i]);
}

static char *slurp(const char *path)
{
	size_t n;
	char *b = t_read_file(path, &n);
	char *s = malloc(n + 1);
	if (b)
		memcpy(s, b, n);
	s[b ? n : 0] = 0;
	free(b);
	return s;
}

/* Exit status of `qtk convert IN -o OUT ARGS`, stderr in *err (freed by
 * the caller). */
static int run(const char *in, const char *out, const char *args, char **err)
{
	TPATH(ef, "stderr.txt");
	int rc = t_system("%s convert %s -o %s %s -q 2>%s", qbin(), in, out, args, ef);
	*err = slurp(ef);
	return rc;
}

#define HAS(s, sub) CHECK_MSG(strstr((s), (sub)) != NULL, "'%s' not in: %s", (sub), (s))

TEST(value_range_conv_f16_scheme_refused_every_format)
{
	TPATH(in, "in.safetensors");
	/* row 50 col 70: element 6470, in the 7th work item of --chunk 1024 */
	t_spec ts[2] = { { "w0", 64, 256, 0, 0, 0 }, { "w1", 96, 128, 50, 70, 7e4f } };
	static const char *const fmt[3] = { "qtk", "gguf", "mlx" };
	static const char *const outn[3] = { "o.qtk", "o.gguf", "o.mlx" };

	write_ckpt(in, QTK_DT_F32, ts, 2);
	for (int k = 0; k < 3; k++) {
		TPATH(out, outn[k]);
		char args[128], *err;
		snprintf(args, sizeof args, "-F %s --scheme f16 --chunk 1024 -j 3", fmt[k]);
		CHECK_EQ(run(in, out, args, &err), 1);
		HAS(err, in);
		HAS(err, "tensor 'w1': row 50 col 70: 70000 does not fit F16");
		CHECK_MSG(!t_exists(out), "%s: output left", fmt[k]);
		CHECK_MSG(t_dir_entries(t_tmpdir()) == 2, "%s: a temporary left", fmt[k]);
		free(err);
	}
	/* -7e4 too, and in the flat runs of one thread */
	ts[1].v = -7e4f;
	write_ckpt(in, QTK_DT_F32, ts, 2);
	{
		char *err;
		CHECK_EQ(run(in, t_tmp("o.qtk"), "--scheme f16 -j 1", &err), 1);
		HAS(err, "row 50 col 70: -70000 does not fit F16");
		free(err);
	}
	/* a value F16 holds converts */
	ts[1].v = 65504.0f;
	write_ckpt(in, QTK_DT_F32, ts, 2);
	{
		char *err;
		CHECK_EQ(run(in, t_tmp("o.qtk"), "--scheme f16", &err), 0);
		free(err);
	}
}

TEST(value_range_conv_bf16_near_flt_max_refused)
{
	TPATH(in, "in.safetensors");
	TPATH(out, "o.qtk");
	t_spec ts[1] = { { "w", 32, 64, 31, 63, 3.3962e38f } };
	char *err;

	write_ckpt(in, QTK_DT_F32, ts, 1);
	CHECK_EQ(run(in, out, "--scheme bf16", &err), 1);
	HAS(err, in);
	HAS(err, "tensor 'w': row 31 col 63: 3.3962");
	HAS(err, "does not fit BF16");
	CHECK(!t_exists(out));
	free(err);
	ts[0].v = 3.3895e38f; /* rounds to BF16's largest finite */
	write_ckpt(in, QTK_DT_F32, ts, 1);
	CHECK_EQ(run(in, out, "--scheme bf16", &err), 0);
	free(err);
}

/* The value of element (r, c) of GGUF tensor name as f32, and its type. */
static float gguf_at(const char *path, const char *name, uint64_t r, uint64_t c,
                     uint32_t *type)
{
	qtk_gguf_file *f = NULL;
	qtk_status st;
	float v = NAN;

	if (qtk_gguf_open(path, &f, &st) != QTK_OK) {
		t_fail_at(__FILE__, __LINE__, "%s", st.msg);
		return v;
	}
	const qtk_gguf_tensor *t = qtk_gguf_find(f, name);
	if (t) {
		*type = t->type;
		if (qtk_gguf_read_f32(t, r * t->cols + c, 1, &v, &st) != QTK_OK)
			t_fail_at(__FILE__, __LINE__, "%s", st.msg);
	}
	qtk_gguf_close(f);
	return v;
}

TEST(value_range_conv_gguf_f16_fallback_goes_f32)
{
	TPATH(in, "in.safetensors");
	TPATH(out, "o.gguf");
	/* rows of 100: the 32-element block does not divide them, GGUF's
	 * fallback is F16; 'v' has 7e4, 'u' does not */
	t_spec ts[3] = { { "w", 64, 256, 0, 0, 0 }, { "v", 64, 100, 5, 7, 7e4f },
	                 { "u", 64, 100, 0, 0, 0 } };
	qtk_conv_opts o = { .input = in, .output = out, .format = QTK_OUT_GGUF,
	                    .scale_dtype = QTK_DT_F16, .threads = 3, .chunk_elems = 1024 };
	qtk_conv_report *rep = NULL;
	qtk_status st;
	uint32_t type = 0;

	write_ckpt(in, QTK_DT_F32, ts, 3);
	REQUIRE(t_convert(&o, QTK_SCHEME_INT8, 32, NULL, &rep, &st) == QTK_OK);
	for (size_t i = 0; i < rep->ntensors; i++) {
		const qtk_conv_tensor *t = &rep->tensors[i];
		if (!strcmp(t->name, "v")) {
			CHECK_EQ(t->layout.scheme, QTK_SCHEME_F32);
			CHECK_MSG(t->fallback && strstr(t->fallback, "row 5 col 7: 70000 does not fit "
			                                "F16") && strstr(t->fallback, "F32"),
			          "fallback: %s", t->fallback ? t->fallback : "(none)");
		} else {
			CHECK(t->fallback == NULL);
			CHECK_EQ(t->layout.scheme, !strcmp(t->name, "u") ? QTK_SCHEME_F16
			                                                 : QTK_SCHEME_INT8);
		}
	}
	qtk_conv_report_free(rep);
	/* the exact value, in an F32 tensor; 'u' stays F16 */
	CHECK(gguf_at(out, "v", 5, 7, &type) == 7e4f);
	CHECK_EQ(type, QTK_GGML_F32);
	gguf_at(out, "u", 0, 0, &type);
	CHECK_EQ(type, QTK_GGML_F16);
	/* the command line says so, -q or not */
	{
		char *err;
		CHECK_EQ(run(in, t_tmp("c.gguf"), "-F gguf --scheme int8 --group 32", &err), 0);
		HAS(err, "tensor 'v': row 5 col 7: 70000 does not fit F16");
		HAS(err, "stored in F32 instead");
		free(err);
		CHECK(gguf_at(t_tmp("c.gguf"), "v", 5, 7, &type) == 7e4f);
	}
	/* a user's F16 is refused, a Q8_0 scale beyond F16 too (the block type
	 * holds F16 scales: the user's pick) */
	{
		char *err;
		CHECK_EQ(run(in, t_tmp("d.gguf"), "-F gguf --scheme f16", &err), 1);
		HAS(err, "tensor 'v': row 5 col 7: 70000 does not fit F16");
		free(err);
		ts[0].v = 1e7f;
		ts[0].vr = 9;
		ts[0].vc = 40;
		write_ckpt(in, QTK_DT_F32, ts, 3);
		CHECK_EQ(run(in, t_tmp("d.gguf"), "-F gguf --scheme int8 --group 32", &err), 1);
		HAS(err, in);
		HAS(err, "tensor 'w': row 9 group 1: scale");
		HAS(err, "does not fit F16");
		CHECK(!t_exists(t_tmp("d.gguf")));
		free(err);
	}
}

/* Dequantized element (r, c) of a .qtk tensor, and its layout. */
static float qtk_at(const char *path, const char *name, uint64_t r, uint64_t c,
                    qtk_q_layout *L)
{
	qtk_pack_file *f = NULL;
	qtk_status st;
	float v = NAN;

	if (qtk_pack_open(path, 0, &f, &st) != QTK_OK) {
		t_fail_at(__FILE__, __LINE__, "%s", st.msg);
		return v;
	}
	const qtk_pack_tensor *t = qtk_pack_find(f, name);
	if (t) {
		float *row = malloc(t->cols * 4);
		qtk_q_cplanes cp;
		*L = t->layout;
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			cp.p[p] = t->planes[p].data ? (const uint8_t *)t->planes[p].data +
			          r * qtk_q_row_bytes(&t->layout, t->cols, p) : NULL;
		qtk_q_dequantize_rows(&t->layout, &cp, 1, t->cols, row);
		v = row[c];
		free(row);
	}
	qtk_pack_close(f);
	return v;
}

TEST(value_range_conv_scales_default_widen_explicit_refuse)
{
	TPATH(in, "in.safetensors");
	TPATH(out, "o.qtk");
	/* int4: |w| / 8 = 75000 does not fit an F16 scale */
	t_spec ts[2] = { { "w", 16, 128, 3, 70, 6e5f }, { "x", 16, 128, 0, 0, 0 } };
	qtk_conv_opts o = { .input = in, .output = out, .scale_dtype = QTK_DT_F16, .threads = 2 };
	qtk_conv_report *rep = NULL;
	qtk_status st;
	qtk_q_layout L;
	char *err;

	write_ckpt(in, QTK_DT_F32, ts, 2);
	REQUIRE(t_convert(&o, QTK_SCHEME_INT4, 32, NULL, &rep, &st) == QTK_OK);
	CHECK_EQ(rep->tensors[0].layout.scale_dtype, QTK_DT_F32);
	CHECK_MSG(rep->tensors[0].fallback &&
	          strstr(rep->tensors[0].fallback, "row 3 group 2: scale") &&
	          strstr(rep->tensors[0].fallback, "scales and biases stored in F32"), "%s",
	          rep->tensors[0].fallback ? rep->tensors[0].fallback : "(none)");
	CHECK_EQ(rep->tensors[1].layout.scale_dtype, QTK_DT_F16);
	CHECK(rep->tensors[1].fallback == NULL);
	qtk_conv_report_free(rep);
	CHECK(fabsf(qtk_at(out, "w", 3, 70, &L) - 6e5f) < 1.0f);
	CHECK_EQ(L.scale_dtype, QTK_DT_F32);
	/* the metadata records it */
	{
		qtk_pack_file *f = NULL;
		size_t len;
		REQUIRE(qtk_pack_open(out, 0, &f, &st) == QTK_OK);
		HAS(qtk_pack_metadata(f, &len), "\"fallback\":\"row 3 group 2: scale");
		qtk_pack_close(f);
	}
	/* --scale-dtype f16 given: refused, naming file, tensor, row, group */
	CHECK_EQ(run(in, t_tmp("e.qtk"), "--scheme int4 --group 32 --scale-dtype f16", &err), 1);
	HAS(err, in);
	HAS(err, "tensor 'w': row 3 group 2: scale -75000 does not fit F16");
	CHECK(!t_exists(t_tmp("e.qtk")));
	free(err);
	/* the same without the flag: a note */
	CHECK_EQ(run(in, t_tmp("e.qtk"), "--scheme int4 --group 32", &err), 0);
	HAS(err, "qtk: note:");
	HAS(err, "tensor 'w': row 3 group 2: scale -75000 does not fit F16; scales and biases "
	         "stored in F32 instead");
	free(err);
}

TEST(value_range_conv_affine_bias_overflow)
{
	TPATH(in, "in.safetensors");
	TPATH(out, "o.qtk");
	float *f = malloc(40 * 64 * 4);
	qtk_st_desc d = { .name = "w", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 40, 64 } };
	const void *data[1] = { f };
	qtk_write_opts wo = { .force = 1 };
	qtk_status st;
	qtk_q_layout L;
	char *err;

	for (int i = 0; i < 40 * 64; i++)
		f[i] = 0.01f * (float)(i % 17);
	for (int i = 0; i < 32; i++) /* row 6 group 1: [-70000, -69969] */
		f[6 * 64 + 32 + i] = -7e4f + (float)i;
	REQUIRE(qtk_st_write(in, &d, data, 1, NULL, &wo, &st) == QTK_OK);
	free(f);
	CHECK_EQ(run(in, out, "--scheme int4-affine --group 32 --scale-dtype f16", &err), 1);
	HAS(err, in);
	HAS(err, "tensor 'w': row 6 group 1: scale");
	HAS(err, "bias -70000 do not fit F16");
	CHECK(!t_exists(out));
	free(err);
	CHECK_EQ(run(in, out, "--scheme int4-affine --group 32", &err), 0);
	HAS(err, "tensor 'w': row 6 group 1:");
	HAS(err, "scales and biases stored in F32 instead");
	free(err);
	CHECK(fabsf(qtk_at(out, "w", 6, 32, &L) + 7e4f) <= 1.0f);
	CHECK_EQ(L.scale_dtype, QTK_DT_F32);
}

TEST(value_range_conv_flushed_counted_and_reported)
{
	TPATH(in, "in.safetensors");
	TPATH(out, "o.qtk");
	t_spec ts[1] = { { "w", 16, 128, 0, 0, 0 } };
	qtk_conv_opts o = { .input = in, .output = out, .scale_dtype = QTK_DT_F16, .threads = 2,
	                    .force = 1 };
	qtk_conv_report *rep = NULL;
	qtk_status st;
	char *err;

	write_ckpt(in, QTK_DT_F32, ts, 1);
	/* row 2 group 1 of int8/g64: 64 tiny values, the scale flushes in F16 */
	{
		qtk_st_file *sf = NULL;
		float *f = malloc(16 * 128 * 4);
		qtk_st_desc d = { .name = "w", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 16, 128 } };
		const void *data[1] = { f };
		qtk_write_opts wo = { .force = 1 };
		REQUIRE(qtk_st_open(in, &sf, &st) == QTK_OK);
		REQUIRE(qtk_st_read_f32(qtk_st_find(sf, "w"), 0, 16 * 128, f, &st) == QTK_OK);
		qtk_st_close(sf);
		for (int i = 0; i < 64; i++)
			f[2 * 128 + 64 + i] = i % 2 ? 1e-9f : 0.0f;
		REQUIRE(qtk_st_write(in, &d, data, 1, NULL, &wo, &st) == QTK_OK);
		free(f);
	}
	REQUIRE(t_convert(&o, QTK_SCHEME_INT8, 64, NULL, &rep, &st) == QTK_OK);
	CHECK_EQ(rep->tensors[0].flushed, 32);
	qtk_conv_report_free(rep);
	CHECK_EQ(run(in, t_tmp("c.qtk"), "--scheme int8 --group 64", &err), 0);
	HAS(err, "tensor 'w': 32 nonzero values stored as zero");
	free(err);
	/* F16 float store: the same 32 flush; F32 scales: nothing does */
	REQUIRE(t_convert(&o, QTK_SCHEME_F16, 0, NULL, &rep, &st) == QTK_OK);
	CHECK_EQ(rep->tensors[0].flushed, 32);
	qtk_conv_report_free(rep);
	o.scale_dtype = QTK_DT_F32;
	REQUIRE(t_convert(&o, QTK_SCHEME_INT8, 64, NULL, &rep, &st) == QTK_OK);
	CHECK_EQ(rep->tensors[0].flushed, 0);
	qtk_conv_report_free(rep);
	/* --json lists the count */
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int8 --group 64 --json > %s 2>/dev/null",
	                  qbin(), in, t_tmp("j.qtk"), t_tmp("j.json")), 0);
	err = slurp(t_tmp("j.json"));
	HAS(err, "\"flushed\": 32");
	free(err);
}

/* The dtype of tensor name in an MLX directory's model.safetensors. */
static int mlx_dtype(const char *dir, const char *name)
{
	char path[512];
	qtk_st_file *f = NULL;
	qtk_status st;
	int dt = -1;

	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	if (qtk_st_open(path, &f, &st) != QTK_OK)
		return -1;
	const qtk_st_tensor *t = qtk_st_find(f, name);
	if (t)
		dt = (int)t->dtype;
	qtk_st_close(f);
	return dt;
}

TEST(value_range_conv_mlx_scales_and_biases)
{
	TPATH(in, "in.safetensors");
	/* F16 model: scales in F16 (qtk's pick); int8's bias -128 * 515 does
	 * not fit F16 */
	t_spec ts[3] = { { "a.weight", 64, 256, 3, 70, 65400.0f }, { "b.weight", 64, 256, 0, 0, 0 },
	                 { "c.weight", 64, 256, 60, 7, -65400.0f } };
	char *err;

	/* -j 1: 'a' is marked first; 'c' must still be found in that pass */
	write_ckpt(in, QTK_DT_F16, ts, 3);
	CHECK_EQ(run(in, t_tmp("m1"), "-F mlx --scheme int8 --group 64 -j 1", &err), 0);
	HAS(err, "tensor 'a.weight': row 3: MLX bias of group 1 (-65920) does not fit F16; "
	         "scales and biases stored in F32 instead");
	HAS(err, "tensor 'c.weight': row 60: MLX bias of group 0");
	free(err);
	CHECK_EQ(mlx_dtype(t_tmp("m1"), "a.scales"), QTK_DT_F32);
	CHECK_EQ(mlx_dtype(t_tmp("m1"), "a.biases"), QTK_DT_F32);
	CHECK_EQ(mlx_dtype(t_tmp("m1"), "b.scales"), QTK_DT_F16);
	CHECK_EQ(mlx_dtype(t_tmp("m1"), "c.biases"), QTK_DT_F32);
	/* F32 model, int4 scale beyond F16: default scales widen, an explicit
	 * --scale-dtype f16 refuses */
	ts[0].v = 6e5f;
	ts[2].v = 0;
	write_ckpt(in, QTK_DT_F32, ts, 3);
	CHECK_EQ(run(in, t_tmp("m2"), "-F mlx --scheme int4 --group 64", &err), 0);
	HAS(err, "tensor 'a.weight': row 3 group 1: scale -75000 does not fit F16");
	free(err);
	CHECK_EQ(run(in, t_tmp("m3"), "-F mlx --scheme int4 --group 64 --scale-dtype f16", &err),
	         1);
	HAS(err, in);
	HAS(err, "tensor 'a.weight': row 3 group 1: scale -75000 does not fit F16");
	CHECK(!t_exists(t_tmp("m3")));
	free(err);
}

TEST(value_range_conv_wider_rule_f16_widens)
{
	TPATH(in, "in.safetensors");
	TPATH(out, "o.qtk");
	/* preset mixed with an 8-bit main scheme: v_proj one step wider (F16) */
	t_spec ts[2] = { { "model.layers.0.self_attn.v_proj.weight", 64, 128, 7, 9, 7e4f },
	                 { "model.layers.0.self_attn.q_proj.weight", 64, 128, 0, 0, 0 } };
	qtk_conv_opts o = { .input = in, .output = out, .scale_dtype = QTK_DT_F16, .threads = 2 };
	t_rules ru = { .preset = "mixed" };
	qtk_conv_report *rep = NULL;
	qtk_status st;
	qtk_q_layout L;

	write_ckpt(in, QTK_DT_F32, ts, 2);
	REQUIRE(t_convert(&o, QTK_SCHEME_INT8, 64, &ru, &rep, &st) == QTK_OK);
	for (size_t i = 0; i < rep->ntensors; i++)
		if (strstr(rep->tensors[i].name, "v_proj")) {
			CHECK_EQ(rep->tensors[i].layout.scheme, QTK_SCHEME_F32);
			CHECK(rep->tensors[i].fallback != NULL);
		}
	qtk_conv_report_free(rep);
	CHECK(qtk_at(out, "model.layers.0.self_attn.v_proj.weight", 7, 9, &L) == 7e4f);
	/* the same tensor set to f16 by the user: refused */
	ru.preset = NULL;
	ru.set = "*.v_proj.weight=f16";
	o.force = 1;
	CHECK_EQ(t_convert(&o, QTK_SCHEME_INT8, 64, &ru, &rep, &st), QTK_E_Q_VALUE_RANGE);
	CHECK_MSG(strstr(st.msg, in) && strstr(st.msg, "row 7 col 9: 70000"), "%s", st.msg);
}

/* Exit status of `qtk export QTK --to FMT -o OUT -R`, stderr in *err. */
static int run_export(const char *qtk, const char *fmt, const char *out, char **err)
{
	TPATH(ef, "stderr.txt");
	int rc = t_system("%s export %s --to %s -o %s -R -q 2>%s", qbin(), qtk, fmt, out, ef);
	*err = slurp(ef);
	return rc;
}

TEST(value_range_export_requantized_widen_to_f32)
{
	TPATH(in, "in.safetensors");
	TPATH(q1, "a.qtk");
	TPATH(q2, "b.qtk");
	TPATH(g, "o.gguf");
	TPATH(m, "o.mlx");
	/* 'w': an int4 scale beyond F16 (F32 scales in the .qtk); 'v': rows of
	 * 100 with 7e4, int8 per row (GGUF would keep it in F16) */
	t_spec ts[2] = { { "w", 16, 128, 3, 70, 6e5f }, { "v", 16, 100, 5, 7, 7e4f } };
	uint32_t type = 0;
	char *err;

	write_ckpt(in, QTK_DT_F32, ts, 2);
	REQUIRE(run(in, q1, "--scheme int4 --group 32 --set v=int8:row", &err) == 0);
	free(err);
	CHECK_EQ(run_export(q1, "gguf", g, &err), 0);
	HAS(err, "qtk: note:");
	HAS(err, "tensor 'w': row 3 group 2: scale -75000 does not fit F16; stored in F32 instead");
	HAS(err, "tensor 'v': row 5 col 7: 70000 does not fit F16 (largest finite 65504); "
	         "stored in F32 instead");
	free(err);
	CHECK(gguf_at(g, "v", 5, 7, &type) == 7e4f);
	CHECK_EQ(type, QTK_GGML_F32);
	CHECK(gguf_at(g, "w", 3, 70, &type) == 6e5f);
	CHECK_EQ(type, QTK_GGML_F32);
	/* MLX: nf4 is requantized as MLX int4-affine with F16 scales (qtk's
	 * pick for an F32 model): the bias 6e5 does not fit, F32 then */
	ts[1].v = 0;
	write_ckpt(in, QTK_DT_F32, ts, 2);
	REQUIRE(run(in, q2, "--scheme nf4 --group 64", &err) == 0);
	free(err);
	CHECK_EQ(run_export(q2, "mlx", m, &err), 0);
	HAS(err, "tensor 'w': row 3 group 1: scale");
	HAS(err, "scales and biases stored in F32 instead");
	free(err);
	CHECK_EQ(mlx_dtype(m, "w.scales"), QTK_DT_F32);
	CHECK_EQ(mlx_dtype(m, "w.biases"), QTK_DT_F32);
	CHECK_EQ(mlx_dtype(m, "v"), QTK_DT_F32); /* rows of 100: kept at source precision */
}

TEST(value_range_conv_double_quant_absmax_lost_counted)
{
	TPATH(in, "in.safetensors");
	TPATH(out, "o.qtk");
	/* 256 groups of 64 (one double-quant block): absmax 0.01 everywhere but
	 * 1.0 at (0, 0) and 1e-6 at (5, 3). offset = 3.540001/256, s = (1 -
	 * offset)/127, and the 1e-6 group comes back as offset - 2s < 0: its 64
	 * nonzero values decode to (about) zero */
	float *f = malloc(16 * 1024 * 4);
	qtk_st_desc d = { .name = "w", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 16, 1024 } };
	const void *data[1] = { f };
	qtk_write_opts wo = { .force = 1 };
	qtk_conv_opts o = { .input = in, .output = out, .scale_dtype = QTK_DT_F16, .threads = 2,
	                    .qflags = QTK_QF_DOUBLE_QUANT };
	qtk_conv_report *rep = NULL;
	qtk_status st;

	for (int r = 0; r < 16; r++)
		for (int c = 0; c < 1024; c++) {
			float a = r == 0 && c < 64 ? 1.0f : r == 5 && c / 64 == 3 ? 1e-6f : 0.01f;
			f[r * 1024 + c] = c % 64 ? (c % 2 ? 0.5f : -0.25f) * a : a;
		}
	REQUIRE(qtk_st_write(in, &d, data, 1, NULL, &wo, &st) == QTK_OK);
	free(f);
	REQUIRE(t_convert(&o, QTK_SCHEME_NF4, 64, NULL, &rep, &st) == QTK_OK);
	CHECK_EQ(rep->tensors[0].flushed, 64);
	qtk_conv_report_free(rep);
}

TEST(value_range_conv_gguf_fallback_bf16_source_stays_bf16)
{
	TPATH(in, "in.safetensors");
	TPATH(out, "o.gguf");
	/* a BF16 checkpoint: GGUF's F16 for rows of 100 cannot hold 7e4 (its
	 * BF16 value, 70144); the source's own BF16 bytes can */
	t_spec ts[2] = { { "w", 64, 256, 0, 0, 0 }, { "v", 64, 100, 5, 7, 7e4f } };
	uint32_t type = 0;
	char *err;
	float want;
	uint16_t h = qtk_f32_to_bf16(7e4f);

	want = qtk_bf16_to_f32(h);
	write_ckpt(in, QTK_DT_BF16, ts, 2);
	CHECK_EQ(run(in, out, "-F gguf --scheme int8 --group 32", &err), 0);
	HAS(err, "tensor 'v': row 5 col 7: 70144 does not fit F16 (largest finite 65504); "
	         "kept in BF16 (the source's) instead");
	free(err);
	CHECK(gguf_at(out, "v", 5, 7, &type) == want);
	CHECK_EQ(type, QTK_GGML_BF16);
}

/* An F64 safetensors value beyond f32's range: refused naming file, tensor
 * and element, where it used to reach the quantizer as Inf (and a 1-D F64
 * tensor kept as it is still converts byte for byte). */
TEST(value_range_conv_f64_beyond_f32_refused)
{
	TPATH(in, "in64.safetensors");
	TPATH(out, "o.qtk");
	qtk_st_desc d[2] = {
		{ .name = "w", .dtype = QTK_DT_F64, .ndim = 2, .shape = { 32, 64 } },
		{ .name = "b", .dtype = QTK_DT_F64, .ndim = 1, .shape = { 4 } },
	};
	double *w = calloc(32 * 64, sizeof *w), b[4] = { 1e300, -1e300, 0, 1 };
	const void *data[2] = { w, b };
	qtk_write_opts wo = { .force = 1 };
	qtk_status st;
	char *err;

	for (size_t i = 0; i < 32 * 64; i++)
		w[i] = 0.01 * (double)((int)(i % 37) - 18);
	w[5 * 64 + 9] = 1e39; /* row 5, col 9: element 329 */
	REQUIRE(qtk_st_write(in, d, data, 2, NULL, &wo, &st) == QTK_OK);
	CHECK_EQ(run(in, out, "--scheme int8", &err), 1);
	HAS(err, in);
	HAS(err, "tensor 'w': element 329 is 1e+39, beyond f32's range");
	CHECK(!t_exists(out));
	free(err);
	/* the library read says the same, and a value f32 holds reads */
	{
		qtk_st_file *f;
		float buf[64];
		REQUIRE(qtk_st_open(in, &f, &st) == QTK_OK);
		const qtk_st_tensor *t = qtk_st_find(f, "w");
		CHECK_EQ(qtk_st_read_f32(t, 320, 10, buf, &st), QTK_E_UNSUPPORTED);
		HAS(st.msg, in);
		CHECK_EQ(qtk_st_read_f32(t, 0, 64, buf, &st), QTK_OK);
		CHECK(buf[1] == (float)(0.01 * -17));
		qtk_st_close(f);
	}
	/* fixed: the big value replaced by one f32 holds; 'b' (1-D, kept) has
	 * 1e300 and is stored as its F64 bytes */
	w[5 * 64 + 9] = 3e38;
	REQUIRE(qtk_st_write(in, d, data, 2, NULL, &wo, &st) == QTK_OK);
	CHECK_EQ(run(in, out, "--scheme int8", &err), 0);
	free(err);
	free(w);
}
