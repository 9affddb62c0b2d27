/* tests: GGUF tensors of more than ggml's 4 dims, as gguf-py writes them
 * (n_dims = the rank, ne = the torch shape reversed): the Wan GGUFs that
 * ComfyUI-GGUF's tools/fix_5d_tensors.py writes hold patch_embedding.weight
 * as a true 5-D tensor. The reader takes up to QTK_MAX_DIMS (8) with every
 * other check unchanged; convert reads such a file exactly as the same
 * tensors in safetensors (.qtk keeps the 5-D shape, GGUF output stores the
 * [rows][cols] view with comfy.gguf.orig_shape, MLX as from safetensors). */
#include <stdlib.h>
#include <sys/stat.h>

#include "gen.h"
#include "qtk_convert.h"
#include "qtk_runtime.h"
#include "test.h"
#include "test_conv_util.h"

typedef struct {
	const char *name;
	uint32_t type;            /* ggml type */
	uint32_t ndim;
	uint64_t shape[9];        /* torch order: shape[ndim-1] is ne[0] */
	const void *data;
	uint64_t nbytes;
} g5_tensor;

static void put(uint8_t **p, const void *v, size_t n)
{
	memcpy(*p, v, n);
	*p += n;
}

static void put32(uint8_t **p, uint32_t v) { put(p, &v, 4); }
static void put64(uint8_t **p, uint64_t v) { put(p, &v, 8); }

/* A GGUF v3 file as gguf-py's GGUFWriter lays one out: one string KV
 * general.architecture, tensor infos (n_dims, ne reversed from the torch
 * shape), data at multiples of 32. */
static void write_gguf(const char *path, const char *arch, const g5_tensor *t, size_t n)
{
	size_t cap = 4096, data = 0;
	uint8_t *buf, *p;

	for (size_t i = 0; i < n; i++) {
		cap += 64 + strlen(t[i].name) + 8 * t[i].ndim;
		data += (t[i].nbytes + 31) & ~(uint64_t)31;
	}
	buf = calloc(1, cap + data);
	REQUIRE(buf);
	p = buf;
	put(&p, "GGUF", 4);
	put32(&p, 3);
	put64(&p, n);
	put64(&p, 1);
	put64(&p, strlen("general.architecture"));
	put(&p, "general.architecture", strlen("general.architecture"));
	put32(&p, 8); /* string */
	put64(&p, strlen(arch));
	put(&p, arch, strlen(arch));
	for (size_t i = 0, off = 0; i < n; i++) {
		put64(&p, strlen(t[i].name));
		put(&p, t[i].name, strlen(t[i].name));
		put32(&p, t[i].ndim);
		for (uint32_t d = 0; d < t[i].ndim; d++)
			put64(&p, t[i].shape[t[i].ndim - 1 - d]);
		put32(&p, t[i].type);
		put64(&p, off);
		off += (t[i].nbytes + 31) & ~(uint64_t)31;
	}
	p = buf + (((size_t)(p - buf) + 31) & ~(size_t)31);
	for (size_t i = 0; i < n; i++) {
		memcpy(p, t[i].data, t[i].nbytes);
		p += (t[i].nbytes + 31) & ~(uint64_t)31;
	}
	CHECK(t_write_file(path, buf, (size_t)(p - buf)) == 0);
	free(buf);
}

/* n finite F16 values, N(0, 0.02). */
static uint16_t *f16_values(uint64_t n, uint64_t seed)
{
	float *f = malloc(n * sizeof *f);
	uint16_t *h = malloc(n * sizeof *h);

	if (f && h) {
		gen_normal(f, n, 0.02f, &seed);
		qtk_from_f32(QTK_DT_F16, f, h, (size_t)n);
	}
	free(f);
	return h;
}

static uint64_t elems(const g5_tensor *t)
{
	uint64_t n = 1;
	for (uint32_t d = 0; d < t->ndim; d++)
		n *= t->shape[d];
	return n;
}

/* Open a file that must be refused with code, the message holding needle. */
static void expect_refused(const char *path, qtk_err code, const char *needle)
{
	qtk_gguf_file *g = NULL;
	qtk_status st;
	qtk_err rc = qtk_gguf_open(path, &g, &st);

	CHECK_MSG(rc == code, "got %s, want %s (%s)", qtk_err_name(rc), qtk_err_name(code),
	          rc ? st.msg : "");
	CHECK_MSG(rc == QTK_OK || strstr(st.msg, needle), "'%s' not in '%s'", needle, st.msg);
	CHECK(g == NULL);
	qtk_gguf_close(g);
}

/* 5-D (F16 and Q8_0) and 8-D tensors read with their shapes and values;
 * 9 dims, a zero or a wrapping 5th dim, and a 5-D block tensor whose ne[0]
 * the block does not divide are refused as before. */
TEST(gguf_read_more_than_4_dims)
{
	uint16_t *pe = f16_values(5120 * 16 * 2 * 2, 1);
	uint8_t q8[6 * 34];
	float f8[6];
	char path[4096];
	qtk_gguf_file *g = NULL;
	qtk_status st;

	REQUIRE(pe);
	for (int b = 0; b < 6; b++) {
		uint16_t d = qtk_f32_to_f16(0.125f * (float)(b + 1));
		memcpy(q8 + 34 * b, &d, 2);
		for (int j = 0; j < 32; j++)
			q8[34 * b + 2 + j] = (uint8_t)(int8_t)(j - 16 + b);
	}
	for (int i = 0; i < 6; i++)
		f8[i] = (float)i - 2.5f;
	g5_tensor t[] = {
		{ "patch_embedding.weight", QTK_GGML_F16, 5, { 5120, 16, 1, 2, 2 }, pe,
		  5120 * 16 * 2 * 2 * 2 },
		{ "q8.weight", QTK_GGML_Q8_0, 5, { 3, 1, 1, 2, 32 }, q8, sizeof q8 },
		{ "f32.8d", QTK_GGML_F32, 8, { 3, 1, 1, 1, 1, 1, 1, 2 }, f8, sizeof f8 },
	};
	snprintf(path, sizeof path, "%s", t_tmp("5d.gguf"));
	write_gguf(path, "wan", t, 3);
	CHECK_MSG(qtk_gguf_open(path, &g, &st) == QTK_OK, "%s", st.msg);
	for (size_t i = 0; g && i < 3; i++) {
		const qtk_gguf_tensor *x = qtk_gguf_find(g, t[i].name);
		uint64_t n = elems(&t[i]);
		float *v = malloc(n * sizeof *v);

		REQUIRE(x && v);
		CHECK_EQ(x->n_dims, t[i].ndim);
		CHECK_EQ(x->ndim, t[i].ndim);
		for (uint32_t d = 0; d < t[i].ndim; d++) {
			CHECK_EQ(x->shape[d], t[i].shape[d]);
			CHECK_EQ(x->ne[d], t[i].shape[t[i].ndim - 1 - d]);
		}
		CHECK_EQ(x->nelem, n);
		CHECK_EQ(x->cols, t[i].shape[t[i].ndim - 1]);
		CHECK_EQ(x->rows, n / x->cols);
		CHECK_EQ(x->nbytes, t[i].nbytes);
		CHECK(!memcmp(x->data, t[i].data, t[i].nbytes));
		CHECK_EQ(qtk_gguf_read_f32(x, 0, n, v, &st), QTK_OK);
		for (uint64_t k = 0; k < n; k++) {
			float want = i == 0 ? qtk_f16_to_f32(pe[k]) :
			             i == 2 ? f8[k] :
			             qtk_f16_to_f32((uint16_t)(q8[34 * (k / 32)] |
			                                       q8[34 * (k / 32) + 1] << 8)) *
			             (float)(int8_t)q8[34 * (k / 32) + 2 + k % 32];
			if (v[k] != want) {
				t_fail_at(__FILE__, __LINE__, "%s[%llu] = %g, want %g", t[i].name,
				          (unsigned long long)k, (double)v[k], (double)want);
				break;
			}
		}
		free(v);
	}
	qtk_gguf_close(g);

	/* n_dims 9: above QTK_MAX_DIMS */
	g5_tensor nine = { "w9", QTK_GGML_F32, 9, { 1, 1, 1, 1, 1, 1, 1, 1, 6 }, f8, sizeof f8 };
	write_gguf(path, "wan", &nine, 1);
	expect_refused(path, QTK_E_GG_NDIM, "'w9': 9 dims (1 to 8 allowed)");
	/* the checks on each dim, the element count and blocks still apply */
	g5_tensor zero = { "w5", QTK_GGML_F32, 5, { 0, 1, 1, 2, 3 }, f8, sizeof f8 };
	write_gguf(path, "wan", &zero, 1);
	expect_refused(path, QTK_E_GG_DIM, "'w5': ne[4] = 0 is zero");
	g5_tensor wrap = { "w5", QTK_GGML_F32, 5, { 1ull << 40, 1, 1, 1, 1ull << 30 }, f8,
	                   sizeof f8 };
	write_gguf(path, "wan", &wrap, 1);
	expect_refused(path, QTK_E_GG_SHAPE, "'w5': element count overflows at ne[4]");
	g5_tensor blk = { "w5", QTK_GGML_Q8_0, 5, { 2, 1, 1, 1, 48 }, q8, sizeof q8 };
	write_gguf(path, "wan", &blk, 1);
	expect_refused(path, QTK_E_GG_BLOCK, "'w5': ne[0] = 48 is not a multiple of Q8_0");
	free(pe);
}

/* Wan-like tensors: the Conv3d patch embedding at its real shape (kept by
 * the wan preset; rows of 2 are kept anyway), a 5-D tensor whose rows the
 * main scheme quantizes, and a 2-D one. */
#define PE_N (5120ull * 16 * 1 * 2 * 2)
#define Q5_N (8ull * 4 * 2 * 2 * 64)
#define W2_N (64ull * 128)

static void write_wan_like(const char *gguf, const char *st_path, uint16_t **keep)
{
	uint16_t *pe = f16_values(PE_N, 11), *q5 = f16_values(Q5_N, 12), *w2 = f16_values(W2_N, 13);
	g5_tensor t[] = {
		{ "patch_embedding.weight", QTK_GGML_F16, 5, { 5120, 16, 1, 2, 2 }, pe, PE_N * 2 },
		{ "blocks.0.self_attn.q.weight", QTK_GGML_F16, 5, { 8, 4, 2, 2, 64 }, q5, Q5_N * 2 },
		{ "blocks.0.ffn.0.weight", QTK_GGML_F16, 2, { 64, 128 }, w2, W2_N * 2 },
	};
	qtk_st_desc d[3];
	const void *data[3];
	qtk_write_opts wo = { .force = 1 };
	qtk_status st;

	REQUIRE(pe && q5 && w2);
	write_gguf(gguf, "wan", t, 3);
	for (int i = 0; i < 3; i++) {
		d[i] = (qtk_st_desc){ .name = t[i].name, .dtype = QTK_DT_F16, .ndim = t[i].ndim };
		memcpy(d[i].shape, t[i].shape, t[i].ndim * sizeof *d[i].shape);
		data[i] = t[i].data;
	}
	CHECK_MSG(qtk_st_write(st_path, d, data, 3, NULL, &wo, &st) == QTK_OK, "%s", st.msg);
	*keep = pe;
	free(q5);
	free(w2);
}

static int conv(const char *in, const char *out, qtk_out_format fmt, qtk_status *st)
{
	qtk_conv_opts o = { .input = in, .output = out, .format = fmt,
	                    .scale_dtype = QTK_DT_F16, .threads = 2, .force = 1 };
	return t_convert(&o, QTK_SCHEME_INT8, 32, &(t_rules){ .preset = "wan" }, NULL, st);
}

/* Every tensor of a .qtk file equal to b's: shape, scheme, plane bytes. */
static void same_qtk(const char *pa, const char *pb)
{
	qtk_rt_model *a = NULL, *b = NULL;
	qtk_status st;

	if (qtk_rt_open(pa, 0, &a, &st) != QTK_OK || qtk_rt_open(pb, 0, &b, &st) != QTK_OK) {
		t_fail_at(__FILE__, __LINE__, "open: %s", st.msg);
		qtk_rt_close(a);
		return;
	}
	CHECK_EQ(qtk_rt_count(a), qtk_rt_count(b));
	for (size_t i = 0; i < qtk_rt_count(b); i++) {
		const qtk_rt_tensor *y = qtk_rt_get(b, i), *x = qtk_rt_find(a, y->name);
		if (!x) {
			t_fail_at(__FILE__, __LINE__, "no %s", y->name);
			continue;
		}
		CHECK_EQ(x->ndim, y->ndim);
		CHECK(!memcmp(x->shape, y->shape, y->ndim * sizeof *y->shape));
		CHECK_EQ(x->scheme, y->scheme);
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			CHECK_MSG(x->planes[p].size == y->planes[p].size &&
			          (!y->planes[p].size ||
			           !memcmp(x->planes[p].data, y->planes[p].data, y->planes[p].size)),
			          "%s: plane %d differs", y->name, p);
	}
	qtk_rt_close(a);
	qtk_rt_close(b);
}

/* Every tensor of GGUF file a equal to b's (type, dims, bytes); a tensor
 * of more than 4 dims in src is stored as its [rows][cols] view with
 * comfy.gguf.orig_shape.NAME giving its shape. Returns the flat ones. */
static int same_gguf(const char *pa, const char *pb, const char *src)
{
	qtk_gguf_file *a = NULL, *b = NULL, *s = NULL;
	qtk_status st;
	int flat = 0;

	if (qtk_gguf_open(pa, &a, &st) || qtk_gguf_open(pb, &b, &st) ||
	    qtk_gguf_open(src, &s, &st)) {
		t_fail_at(__FILE__, __LINE__, "open: %s", st.msg);
		qtk_gguf_close(a);
		qtk_gguf_close(b);
		return -1;
	}
	CHECK_EQ(qtk_gguf_count(a), qtk_gguf_count(b));
	for (size_t i = 0; i < qtk_gguf_count(b); i++) {
		const qtk_gguf_tensor *y = qtk_gguf_get(b, i), *x = qtk_gguf_find(a, y->name);
		const qtk_gguf_tensor *z = qtk_gguf_find(s, y->name);
		char key[256];
		const qtk_gguf_kv *kv;
		int64_t v;

		if (!x || !z) {
			t_fail_at(__FILE__, __LINE__, "no %s", y->name);
			continue;
		}
		CHECK_MSG(x->type == y->type && x->n_dims == y->n_dims &&
		          !memcmp(x->ne, y->ne, sizeof x->ne) && x->nbytes == y->nbytes &&
		          !memcmp(x->data, y->data, x->nbytes), "%s differs", y->name);
		CHECK_EQ(x->nelem, z->nelem);
		snprintf(key, sizeof key, "comfy.gguf.orig_shape.%s", y->name);
		kv = qtk_gguf_kv_find(a, key);
		if (z->n_dims <= QTK_GGUF_MAX_DIMS) {
			CHECK(!kv);
			continue;
		}
		flat++;
		CHECK_MSG(x->n_dims == 2 && x->ne[0] == z->ne[0] && x->ne[1] == z->rows,
		          "%s: %u dims", y->name, x->n_dims);
		CHECK_MSG(kv && kv->type == QTK_GGUF_ARRAY && kv->arr_type == QTK_GGUF_I32 &&
		          kv->count == z->ndim, "%s: no INT32 orig_shape", y->name);
		for (uint32_t k = 0; kv && k < z->ndim && k < kv->count; k++)
			CHECK(qtk_gguf_arr_int(kv, k, &v) == QTK_OK && (uint64_t)v == z->shape[k]);
	}
	qtk_gguf_close(a);
	qtk_gguf_close(b);
	qtk_gguf_close(s);
	return flat;
}

/* A Wan GGUF with a true 5-D patch_embedding.weight converts to .qtk, GGUF
 * and MLX exactly as the same tensors in safetensors do; the .qtk keeps
 * the 5-D shape and values, and exports to the same GGUF. */
TEST(convert_gguf_5d_as_from_safetensors)
{
	char gg[4096], sf[4096], a[4096], b[4096], c[4096], fa[4200], fb[4200];
	uint16_t *pe = NULL;
	qtk_rt_model *m = NULL;
	qtk_status st;

	snprintf(gg, sizeof gg, "%s", t_tmp("wan.gguf"));
	snprintf(sf, sizeof sf, "%s", t_tmp("wan.safetensors"));
	write_wan_like(gg, sf, &pe);
	REQUIRE(pe);

	/* .qtk */
	snprintf(a, sizeof a, "%s", t_tmp("g.qtk"));
	snprintf(b, sizeof b, "%s", t_tmp("s.qtk"));
	CHECK_MSG(conv(gg, a, QTK_OUT_QTK, &st) == QTK_OK, "%s", st.msg);
	CHECK_MSG(conv(sf, b, QTK_OUT_QTK, &st) == QTK_OK, "%s", st.msg);
	same_qtk(a, b);
	if (qtk_rt_open(a, 0, &m, &st) == QTK_OK) {
		const qtk_rt_tensor *t = qtk_rt_find(m, "patch_embedding.weight");
		const qtk_rt_tensor *q = qtk_rt_find(m, "blocks.0.self_attn.q.weight");
		static const uint64_t want[5] = { 5120, 16, 1, 2, 2 };
		REQUIRE(t && q);
		CHECK_EQ(t->ndim, 5);
		CHECK(!memcmp(t->shape, want, sizeof want));
		CHECK_MSG(t->planes[QTK_PLANE_CODES].size == PE_N * 2 &&
		          !memcmp(t->planes[QTK_PLANE_CODES].data, pe, PE_N * 2),
		          "patch_embedding.weight: values differ");
		CHECK_EQ(q->ndim, 5);
		CHECK_EQ(q->scheme, QTK_SCHEME_INT8);
	} else {
		t_fail_at(__FILE__, __LINE__, "%s", st.msg);
	}
	qtk_rt_close(m);

	/* GGUF: [rows][cols] and orig_shape, as from safetensors */
	snprintf(fa, sizeof fa, "%s", t_tmp("g.gguf"));
	snprintf(fb, sizeof fb, "%s", t_tmp("s.gguf"));
	CHECK_MSG(conv(gg, fa, QTK_OUT_GGUF, &st) == QTK_OK, "%s", st.msg);
	CHECK_MSG(conv(sf, fb, QTK_OUT_GGUF, &st) == QTK_OK, "%s", st.msg);
	CHECK_EQ(same_gguf(fa, fb, gg), 2);
	{
		qtk_gguf_file *g = NULL;
		const qtk_gguf_tensor *t;
		REQUIRE(qtk_gguf_open(fa, &g, &st) == QTK_OK);
		t = qtk_gguf_find(g, "patch_embedding.weight");
		CHECK_MSG(t && t->type == QTK_GGML_F16 && t->nbytes == PE_N * 2 &&
		          !memcmp(t->data, pe, PE_N * 2), "patch_embedding.weight: values differ");
		qtk_gguf_close(g);
	}

	/* back: the .qtk exported to GGUF gives the same tensors */
	snprintf(c, sizeof c, "%s", t_tmp("x.gguf"));
	{
		qtk_export_opts o = { .input = a, .output = c, .format = QTK_OUT_GGUF,
		                      .threads = 2, .force = 1 };
		qtk_export_report *r = NULL;
		CHECK_MSG(qtk_export(&o, &r, &st) == QTK_OK, "%s", st.msg);
		qtk_export_report_free(r);
		CHECK_EQ(same_gguf(c, fa, gg), 2);
	}

	/* MLX: the same directory as from safetensors */
	snprintf(fa, sizeof fa, "%s", t_tmp("g.mlx"));
	snprintf(fb, sizeof fb, "%s", t_tmp("s.mlx"));
	CHECK_MSG(conv(gg, fa, QTK_OUT_MLX, &st) == QTK_OK, "%s", st.msg);
	CHECK_MSG(conv(sf, fb, QTK_OUT_MLX, &st) == QTK_OK, "%s", st.msg);
	strcat(fa, "/model.safetensors");
	strcat(fb, "/model.safetensors");
	CHECK(t_same_file(fa, fb));
	free(pe);
}
