/* tests: a second, independently written set of checks of the group-wise
 * quantizers (from the quant2 branch): golden vectors derived by hand from
 * the published reference rules (ggml Q8_0/Q4_0/Q4_1, bitsandbytes NF4),
 * edge cases over every quantized scheme of the table (incl. tiny but
 * normal groups), chunking, the dot order, search, double quant, metrics. */
#include <math.h>
#include <stdlib.h>

#include "qtk_quant.h"
#include "test.h"

/* Planes for a [rows][cols] tensor, one allocation each. */
typedef struct {
	void *p[QTK_PLANE_MAX];
	uint64_t size[QTK_PLANE_MAX];
} bufs;

static int bufs_alloc(bufs *b, const qtk_q_layout *L, size_t rows, size_t cols)
{
	memset(b, 0, sizeof *b);
	if (qtk_q_plane_sizes(L, rows, cols, b->size) != QTK_OK)
		return 0;
	for (int i = 0; i < QTK_PLANE_MAX; i++)
		b->p[i] = calloc(1, b->size[i] + 1);
	return 1;
}

static void bufs_free(bufs *b)
{
	for (int i = 0; i < QTK_PLANE_MAX; i++)
		free(b->p[i]);
}

static qtk_q_planes planes_of(const bufs *b)
{
	qtk_q_planes p;
	for (int i = 0; i < QTK_PLANE_MAX; i++)
		p.p[i] = b->p[i];
	return p;
}

static qtk_q_cplanes cplanes_of(const bufs *b)
{
	qtk_q_cplanes p;
	for (int i = 0; i < QTK_PLANE_MAX; i++)
		p.p[i] = b->p[i];
	return p;
}

static const qtk_scheme_id qschemes[] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4,
	QTK_SCHEME_INT4_AFFINE, QTK_SCHEME_NF4, QTK_SCHEME_INT8_AFFINE };
#define NQ (sizeof qschemes / sizeof qschemes[0])

static uint32_t rng_state = 12345;
static float frand(void) /* deterministic, roughly N(0, 1) */
{
	float s = 0;
	for (int i = 0; i < 4; i++) {
		rng_state = rng_state * 1664525u + 1013904223u;
		s += (float)(rng_state >> 8) / 16777216.0f - 0.5f;
	}
	return s * 1.7f;
}

static int code_at(const qtk_q_layout *L, const bufs *b, size_t cols, size_t r, size_t c)
{
	const uint8_t *row = (const uint8_t *)b->p[0] + r * qtk_q_row_bytes(L, cols, 0);
	if (qtk_q_scheme_get(L->scheme)->code_bits == 8)
		return row[c];
	return (row[c / 2] >> (4 * (c & 1))) & 15;
}

static float param_at(const qtk_q_layout *L, const void *plane, size_t i)
{
	uint16_t h;
	float f;
	if (L->scale_dtype == QTK_DT_F32) {
		memcpy(&f, (const char *)plane + 4 * i, 4);
		return f;
	}
	memcpy(&h, (const char *)plane + 2 * i, 2);
	return L->scale_dtype == QTK_DT_F16 ? qtk_f16_to_f32(h) : qtk_bf16_to_f32(h);
}

/* Quantize one row of 32 with group 32, f16 scales. */
static int quant32(qtk_scheme_id id, const float *x, bufs *b, qtk_q_layout *L)
{
	qtk_status st;
	qtk_q_planes p;
	memset(L, 0, sizeof *L);
	L->scheme = id;
	L->group = 32;
	L->scale_dtype = QTK_DT_F16;
	if (!bufs_alloc(b, L, 1, 32))
		return 0;
	p = planes_of(b);
	return qtk_q_quantize_rows(L, x, 1, 32, &p, NULL, &st) == QTK_OK;
}

TEST(quantx_golden_q8_0)
{
	float x[32] = { 0 };
	qtk_q_layout L;
	bufs b;

	/* amax 127 -> d = 1; roundf ties away from zero */
	x[0] = 127; x[1] = 2.5f; x[2] = -2.5f; x[3] = 0.49f; x[4] = -127; x[5] = -63.5f;
	REQUIRE(quant32(QTK_SCHEME_INT8, x, &b, &L));
	CHECK_EQ((int8_t)code_at(&L, &b, 32, 0, 0), 127);
	CHECK_EQ((int8_t)code_at(&L, &b, 32, 0, 1), 3);
	CHECK_EQ((int8_t)code_at(&L, &b, 32, 0, 2), -3);
	CHECK_EQ((int8_t)code_at(&L, &b, 32, 0, 3), 0);
	CHECK_EQ((int8_t)code_at(&L, &b, 32, 0, 4), -127);
	CHECK_EQ((int8_t)code_at(&L, &b, 32, 0, 5), -64);
	CHECK_EQ(((uint16_t *)b.p[1])[0], 0x3c00); /* f16 1.0 */
	bufs_free(&b);
}

TEST(quantx_golden_q4_0)
{
	float x[32] = { 0 };
	qtk_q_layout L;
	bufs b;

	/* max (largest magnitude, signed) = -8 -> d = 1; q+8 = trunc(x + 8.5) */
	x[0] = 7; x[1] = -8; x[2] = 0.5f; x[3] = -0.5f; x[4] = 1.5f; x[5] = -1.5f;
	REQUIRE(quant32(QTK_SCHEME_INT4, x, &b, &L));
	int want[6] = { 15, 0, 9, 8, 10, 7 };
	for (int i = 0; i < 6; i++)
		CHECK_EQ(code_at(&L, &b, 32, 0, i), want[i]);
	CHECK_EQ(code_at(&L, &b, 32, 0, 31), 8); /* zero -> q 0 */
	CHECK_EQ(((uint16_t *)b.p[1])[0], 0x3c00);
	bufs_free(&b);

	/* positive max 16 first, -16 later: d = -2, -16 clamps to q = 7 */
	memset(x, 0, sizeof x);
	x[0] = 16; x[1] = -14; x[2] = -16; x[3] = 3;
	REQUIRE(quant32(QTK_SCHEME_INT4, x, &b, &L));
	CHECK_EQ(code_at(&L, &b, 32, 0, 0), 0);
	CHECK_EQ(code_at(&L, &b, 32, 0, 1), 15);
	CHECK_EQ(code_at(&L, &b, 32, 0, 2), 15);
	CHECK_EQ(code_at(&L, &b, 32, 0, 3), 7); /* -1.5 + 8.5 = 7 */
	CHECK_EQ(((uint16_t *)b.p[1])[0], 0xc000); /* f16 -2.0 */
	bufs_free(&b);
}

TEST(quantx_golden_q4_1)
{
	float x[32];
	qtk_q_layout L;
	bufs b;

	for (int i = 0; i < 32; i++)
		x[i] = 3;
	/* min -1, max 14 -> d = 1, m = -1; q = trunc((x - m) + 0.5) */
	x[0] = -1; x[1] = 14; x[2] = 0.5f; x[3] = 13.4f;
	REQUIRE(quant32(QTK_SCHEME_INT4_AFFINE, x, &b, &L));
	CHECK_EQ(code_at(&L, &b, 32, 0, 0), 0);
	CHECK_EQ(code_at(&L, &b, 32, 0, 1), 15);
	CHECK_EQ(code_at(&L, &b, 32, 0, 2), 2); /* 1.5 + 0.5: tie goes up */
	CHECK_EQ(code_at(&L, &b, 32, 0, 3), 14);
	CHECK_EQ(code_at(&L, &b, 32, 0, 4), 4);
	CHECK_EQ(((uint16_t *)b.p[1])[0], 0x3c00);
	CHECK_EQ(((uint16_t *)b.p[2])[0], 0xbc00); /* bias -1 */
	bufs_free(&b);
}

TEST(quantx_golden_nf4_tree_and_ties)
{
	/* each threshold itself takes the lower code (strict '>') */
	static const float th[15] = { -0.8480964004993439f, -0.6106329262256622f,
		-0.4599952697753906f, -0.33967943489551544f, -0.23460740596055984f,
		-0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
		0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f,
		0.3893125355243683f, 0.5016634166240692f, 0.6427869200706482f,
		0.8614784181118011f };
	for (int i = 0; i < 15; i++) {
		CHECK_EQ(qtk_q_nf4_code(th[i]), i);
		CHECK_EQ(qtk_q_nf4_code(nextafterf(th[i], 2.0f)), i + 1);
	}
	/* and every code value maps to itself */
	for (int i = 0; i < 16; i++)
		CHECK_EQ(qtk_q_nf4_code(qtk_q_nf4_value((unsigned)i)), i);
	CHECK_EQ(qtk_q_nf4_code(-1.0f), 0);
	CHECK_EQ(qtk_q_nf4_code(1.0f), 15);

	float x[32] = { 0 };
	qtk_q_layout L;
	bufs b;
	x[0] = -2; x[1] = 2 * 0.03979014977812767f; x[2] = 1.0f; x[3] = 0.9f;
	REQUIRE(quant32(QTK_SCHEME_NF4, x, &b, &L));
	CHECK_EQ(code_at(&L, &b, 32, 0, 0), 0);
	CHECK_EQ(code_at(&L, &b, 32, 0, 1), 7);   /* exactly at threshold after x/2 */
	CHECK_EQ(code_at(&L, &b, 32, 0, 2), 12);  /* 0.5 -> 0.4407 (threshold 0.5017) */
	CHECK_EQ(code_at(&L, &b, 32, 0, 3), 12);
	CHECK_EQ(code_at(&L, &b, 32, 0, 5), 7);
	CHECK_EQ(((uint16_t *)b.p[1])[0], 0x4000); /* absmax 2 */
	bufs_free(&b);
}

/* Every scheme, scale dtype and group: reconstruction error per element is
 * within one quantization step of the group range; dot matches the defined
 * lane order; chunked quantization equals one call. */
TEST(quantx_all_schemes_roundtrip_chunked_dot)
{
	enum { R = 6, C = 200 };
	static float w[R * C], h[R * C];
	static const uint32_t groups[] = { 32, 64, 128, QTK_GROUP_ROW };
	static const qtk_dtype sdt[] = { QTK_DT_F16, QTK_DT_BF16, QTK_DT_F32 };

	for (int i = 0; i < R * C; i++)
		w[i] = frand();
	w[7] = 9.0f; /* one outlier */
	for (size_t s = 0; s < NQ; s++)
		for (size_t gi = 0; gi < 4; gi++)
			for (size_t di = 0; di < 3; di++) {
				qtk_q_layout L = { qschemes[s], groups[gi], sdt[di], 0, QTK_DT_F32 };
				bufs a, c;
				qtk_status st;
				REQUIRE(bufs_alloc(&a, &L, R, C) && bufs_alloc(&c, &L, R, C));
				qtk_q_planes pa = planes_of(&a);
				CHECK_EQ(qtk_q_quantize_rows(&L, w, R, C, &pa, NULL, &st), QTK_OK);
				/* rows 0-1 then 2-5 into offset planes */
				qtk_q_planes p1 = planes_of(&c), p2;
				CHECK_EQ(qtk_q_quantize_rows(&L, w, 2, C, &p1, NULL, &st), QTK_OK);
				for (int p = 0; p < QTK_PLANE_DQ; p++)
					p2.p[p] = (char *)c.p[p] + 2 * qtk_q_row_bytes(&L, C, p);
				CHECK_EQ(qtk_q_quantize_rows(&L, w + 2 * C, 4, C, &p2, NULL, &st), QTK_OK);
				for (int p = 0; p < QTK_PLANE_DQ; p++)
					CHECK(memcmp(a.p[p], c.p[p], a.size[p]) == 0);
				qtk_q_cplanes ca = cplanes_of(&a);
				qtk_q_dequantize_rows(&L, &ca, R, C, h);
				size_t g = groups[gi] ? groups[gi] : C;
				int bits = qtk_q_scheme_get(L.scheme)->code_bits;
				double bad = 0;
				for (size_t r = 0; r < R; r++)
					for (size_t c0 = 0; c0 < C; c0 += g) {
						size_t n = C - c0 < g ? C - c0 : g;
						float lo = 0, hi = 0;
						for (size_t i = 0; i < n; i++) {
							float v = w[r * C + c0 + i];
							lo = fminf(lo, v);
							hi = fmaxf(hi, v);
						}
						/* NF4's widest step is 0.30 of absmax */
						double amax = fmax(-(double)lo, (double)hi);
						/* codes use the f32 scale, the stored one is rounded:
						 * up to 2^-9 (bf16) / 2^-11 (f16) relative on scale and
						 * bias, i.e. up to 3 * 2^-9 of amax for affine bf16 */
						double step = (double)(hi - lo) / (bits == 8 ? 254.0 : 14.0) * 1.02 +
						              (L.scheme == QTK_SCHEME_NF4 ? 0.31 * amax : 0) +
						              amax * (L.scale_dtype == QTK_DT_BF16 ? 0x1p-7 : 0x1p-9);
						for (size_t i = 0; i < n; i++) {
							double e = fabs((double)w[r * C + c0 + i] - (double)h[r * C + c0 + i]);
							if (e > step)
								bad = e;
						}
					}
				CHECK_MSG(bad == 0, "%s g%u %s: error %g beyond a step",
				          qtk_q_scheme_get(L.scheme)->name, L.group,
				          qtk_dtype_name(L.scheme ? L.scale_dtype : 0), bad);
				/* dot of row 3: close to the double dot of the dequantized row */
				float x[C];
				double want = 0, mag = 0;
				for (int i = 0; i < C; i++)
					x[i] = frand();
				for (int i = 0; i < C; i++) {
					want += (double)h[3 * C + i] * (double)x[i];
					mag += fabs((double)h[3 * C + i] * (double)x[i]);
				}
				qtk_q_cplanes row3;
				for (int p = 0; p < QTK_PLANE_MAX; p++)
					row3.p[p] = (const char *)a.p[p] + 3 * qtk_q_row_bytes(&L, C, p);
				float got = qtk_q_scheme_get(L.scheme)->dot(&L, &row3, C, x);
				CHECK(fabs((double)got - want) <= 1e-5 * mag);
				bufs_free(&a);
				bufs_free(&c);
			}
}

/* A short last group is quantized exactly as a row of its own. */
TEST(quantx_short_last_group)
{
	enum { C = 100 };
	float w[C];
	for (int i = 0; i < C; i++)
		w[i] = frand();
	for (size_t s = 0; s < NQ; s++) {
		qtk_q_layout L = { qschemes[s], 32, QTK_DT_F16, 0, QTK_DT_F32 };
		qtk_q_layout T = { qschemes[s], QTK_GROUP_ROW, QTK_DT_F16, 0, QTK_DT_F32 };
		bufs a, t;
		qtk_status st;
		REQUIRE(bufs_alloc(&a, &L, 1, C) && bufs_alloc(&t, &T, 1, 4));
		CHECK_EQ(qtk_q_groups_per_row(&L, C), 4);
		qtk_q_planes pa = planes_of(&a), pt = planes_of(&t);
		CHECK_EQ(qtk_q_quantize_rows(&L, w, 1, C, &pa, NULL, &st), QTK_OK);
		CHECK_EQ(qtk_q_quantize_rows(&T, w + 96, 1, 4, &pt, NULL, &st), QTK_OK);
		for (int i = 0; i < 4; i++)
			CHECK_EQ(code_at(&L, &a, C, 0, 96 + i), code_at(&T, &t, 4, 0, i));
		CHECK(param_at(&L, a.p[1], 3) == param_at(&T, t.p[1], 0));
		bufs_free(&a);
		bufs_free(&t);
	}
}

/* All-zero, constant, subnormal-only groups; NaN/Inf rejection; scale range. */
TEST(quantx_edge_groups_and_errors)
{
	enum { C = 64 };
	float w[2 * C], h[2 * C];

	for (size_t s = 0; s < NQ; s++) {
		qtk_q_layout L = { qschemes[s], 32, QTK_DT_F16, 0, QTK_DT_F32 };
		const char *nm = qtk_q_scheme_get(L.scheme)->name;
		bufs a;
		qtk_status st;
		qtk_q_opts o = { .tensor = "blk.0.w", .row0 = 3 };
		REQUIRE(bufs_alloc(&a, &L, 2, C));
		qtk_q_planes pa = planes_of(&a);
		qtk_q_cplanes ca = cplanes_of(&a);
		for (int i = 0; i < 2 * C; i++)
			w[i] = i < 32 ? 0.0f : i < 64 ? 0x1p-140f * (float)(i - 40) :
			       i < 96 ? 0.75f : frand();
		CHECK_EQ(qtk_q_quantize_rows(&L, w, 2, C, &pa, &o, &st), QTK_OK);
		qtk_q_dequantize_rows(&L, &ca, 2, C, h);
		for (int i = 0; i < 64; i++)
			CHECK_MSG(fabsf(h[i]) <= 0x1p-130f, "%s: zero/subnormal %d -> %g", nm, i,
			          (double)h[i]);
		for (int i = 64; i < 96; i++)
			CHECK_MSG(fabsf(h[i] - 0.75f) < 1e-3f, "%s: constant -> %g", nm, (double)h[i]);
		/* never a 0 or Inf scale for a group that has a non-zero value
		 * above the epsilon */
		CHECK(param_at(&L, a.p[1], 2) != 0 || qtk_q_scheme_get(L.scheme)->has_bias);
		for (int i = 0; i < 4; i++)
			CHECK(isfinite(param_at(&L, a.p[1], i)));

		/* NaN / Inf: named by tensor, absolute row and group */
		w[C + 40] = NAN;
		CHECK_EQ(qtk_q_quantize_rows(&L, w, 2, C, &pa, &o, &st), QTK_E_Q_NONFINITE);
		CHECK_MSG(strstr(st.msg, "blk.0.w") && strstr(st.msg, "row 4 group 1") &&
		          strstr(st.msg, "NaN"), "%s", st.msg);
		w[C + 40] = -INFINITY;
		CHECK_EQ(qtk_q_quantize_rows(&L, w, 2, C, &pa, &o, &st), QTK_E_Q_NONFINITE);
		CHECK(strstr(st.msg, "Inf") != NULL);
		w[C + 40] = 0.5f;

		/* a scale (4-bit: |w| > 65504 * 8) or bias beyond f16 */
		w[C + 1] = -65504.0f * 20;
		qtk_err rc = qtk_q_quantize_rows(&L, w, 2, C, &pa, &o, &st);
		if (L.scheme == QTK_SCHEME_INT8)
			CHECK_EQ(rc, QTK_OK); /* 1310080 / 127 fits */
		else
			CHECK_MSG(rc == QTK_E_Q_SCALE_RANGE && strstr(st.msg, "row 4 group 0"),
			          "%s: %s", nm, st.msg);
		L.scale_dtype = QTK_DT_F32;
		bufs_free(&a);
		REQUIRE(bufs_alloc(&a, &L, 2, C));
		pa = planes_of(&a);
		CHECK_EQ(qtk_q_quantize_rows(&L, w, 2, C, &pa, &o, &st), QTK_OK);
		bufs_free(&a);
	}
}

static double tensor_err(const qtk_q_layout *L, const float *w, size_t R, size_t C,
                         const qtk_q_opts *o, void *out_copy, size_t *out_n)
{
	bufs a;
	qtk_status st;
	float *h = malloc(R * C * sizeof *h);
	double e = 0;
	if (!bufs_alloc(&a, L, R, C) || !h)
		return -1;
	qtk_q_planes pa = planes_of(&a);
	qtk_q_cplanes ca = cplanes_of(&a);
	if (qtk_q_quantize_rows(L, w, R, C, &pa, o, &st) != QTK_OK)
		return -1;
	qtk_q_dequantize_rows(L, &ca, R, C, h);
	for (size_t i = 0; i < R * C; i++) {
		double d = (double)w[i] - (double)h[i];
		double wt = o && o->importance ? (double)o->importance[i % C] : 1.0;
		e += wt * d * d;
	}
	if (out_copy) {
		memcpy(out_copy, a.p[0], a.size[0]);
		*out_n = a.size[0];
	}
	bufs_free(&a);
	free(h);
	return e;
}

/* Search never does worse than RTN (per group, so per tensor), helps the
 * 4-bit schemes clearly on Gaussian data, is deterministic, and honours
 * importance weights. */
TEST(quantx_search_beats_rtn)
{
	enum { R = 16, C = 256 };
	static float w[R * C], imp[C];
	static uint8_t c1[R * C], c2[R * C];
	size_t n1, n2;

	for (int i = 0; i < R * C; i++)
		w[i] = frand();
	for (int i = 0; i < C; i++)
		imp[i] = (float)(1 + (i % 7));
	for (size_t s = 0; s < NQ; s++) {
		qtk_q_layout L = { qschemes[s], 64, QTK_DT_F16, 0, QTK_DT_F32 };
		qtk_q_opts rtn = { .tensor = "w" }, srch = { .search = 1, .tensor = "w" };
		qtk_q_opts wr = { .importance = imp, .tensor = "w" };
		qtk_q_opts ws = { .search = 1, .importance = imp, .tensor = "w" };
		double e0 = tensor_err(&L, w, R, C, &rtn, NULL, NULL);
		double e1 = tensor_err(&L, w, R, C, &srch, c1, &n1);
		double e2 = tensor_err(&L, w, R, C, &srch, c2, &n2);
		CHECK(e2 == e1);
		const char *nm = qtk_q_scheme_get(L.scheme)->name;
		CHECK_MSG(e0 > 0 && e1 <= e0, "%s: search %g rtn %g", nm, e1, e0);
		if (qtk_q_scheme_get(L.scheme)->code_bits == 4)
			CHECK_MSG(e1 < 0.97 * e0, "%s: search %g rtn %g (expected >3%% less)", nm, e1, e0);
		CHECK(n1 == n2 && memcmp(c1, c2, n1) == 0);
		double w0 = tensor_err(&L, w, R, C, &wr, NULL, NULL);
		double w1 = tensor_err(&L, w, R, C, &ws, NULL, NULL);
		CHECK_MSG(w1 <= w0, "%s: weighted search %g rtn %g", nm, w1, w0);
	}
}

TEST(quantx_metrics_values_and_merge)
{
	float w[4] = { 1, 2, 3, 4 }, h[4] = { 1, 2, 3, 5 };
	qtk_q_acc a = { 0 }, b = { 0 }, c = { 0 };
	qtk_q_metrics m;

	qtk_q_acc_add(&a, w, h, 4);
	qtk_q_metrics_from(&a, &m);
	CHECK_EQ(m.n, 4);
	CHECK(m.rmse == 0.5 && m.max_abs == 1.0);
	CHECK(fabs(m.rel_fro - 1 / sqrt(30.0)) < 1e-12);
	CHECK(fabs(m.snr_db - 10 * log10(30.0)) < 1e-12);
	CHECK(fabs(m.cosine - 34 / sqrt(30.0 * 39.0)) < 1e-12);
	qtk_q_acc_add(&b, w, h, 2);
	qtk_q_acc_add(&c, w + 2, h + 2, 2);
	qtk_q_acc_merge(&b, &c);
	CHECK(b.sse == a.sse && b.ssw == a.ssw && b.dot == a.dot && b.n == 4);
	/* exact reconstruction and all-zero tensors */
	qtk_q_acc z = { 0 };
	qtk_q_acc_add(&z, w, w, 4);
	qtk_q_metrics_from(&z, &m);
	CHECK(m.rmse == 0 && isinf(m.snr_db) && m.cosine == 1.0 && m.rel_fro == 0);
	float zero[3] = { 0 };
	memset(&z, 0, sizeof z);
	qtk_q_acc_add(&z, zero, zero, 3);
	qtk_q_metrics_from(&z, &m);
	CHECK(m.cosine == 1.0 && m.rel_fro == 0);
	/* long input: block/lane order is deterministic and close to double */
	enum { N = 5000 };
	static float x[N], y[N];
	double sse = 0, ssw = 0, ssh = 0, dot = 0;
	for (int i = 0; i < N; i++) {
		x[i] = frand();
		y[i] = x[i] + 0.01f * frand();
		double d = (double)(x[i] - y[i]);
		sse += d * d;
		ssw += (double)x[i] * (double)x[i];
		ssh += (double)y[i] * (double)y[i];
		dot += (double)x[i] * (double)y[i];
	}
	memset(&z, 0, sizeof z);
	qtk_q_acc_add(&z, x, y, N);
	CHECK(fabs(z.sse - sse) < 1e-5 * sse);
	CHECK(fabs(z.ssw - ssw) < 1e-6 * ssw && fabs(z.sshat - ssh) < 1e-6 * ssh);
	/* the dot product is taken from the other sums (acc_impl.h): as
	 * close to the double one as they are, and so is 1 - cosine */
	CHECK_MSG(fabs(z.dot - dot) < 1e-6 * dot, "dot %.17g, double %.17g", z.dot, dot);
	qtk_q_metrics_from(&z, &m);
	CHECK_MSG(fabs((1 - m.cosine) - (1 - dot / sqrt(ssw * ssh))) < 1e-7,
	          "cosine %.17g, double %.17g", m.cosine, dot / sqrt(ssw * ssh));
	/* w and -w: cosine -1, never past it */
	for (int i = 0; i < N; i++)
		y[i] = -x[i];
	memset(&z, 0, sizeof z);
	qtk_q_acc_add(&z, x, y, N);
	qtk_q_metrics_from(&z, &m);
	CHECK_MSG(m.cosine >= -1.0 && m.cosine < -1.0 + 1e-6, "cosine %.17g", m.cosine);
	/* a tiny error: cosine within [-1, 1] and close to 1 */
	for (int i = 0; i < N; i++)
		y[i] = x[i] * (1.0f + 0x1p-22f);
	memset(&z, 0, sizeof z);
	qtk_q_acc_add(&z, x, y, N);
	qtk_q_metrics_from(&z, &m);
	CHECK_MSG(m.cosine <= 1.0 && m.cosine > 1.0 - 1e-9, "cosine %.17g", m.cosine);
}

/* Double quant: the chunked flow (F32 absmax, then one tensor pass) gives
 * absmax within half a block step and a reconstruction close to plain NF4. */
TEST(quantx_nf4_double_quant_flow)
{
	enum { R = 80, C = 128 }; /* 320 groups of 32: two DQ blocks, one short */
	static float w[R * C], h[R * C], h2[R * C], am[R * 4], back[R * 4];
	static uint8_t codes[R * 4];
	qtk_q_layout L = { QTK_SCHEME_NF4, 32, QTK_DT_F32, 0, QTK_DT_F32 };
	qtk_q_layout D = L;
	qtk_status st;
	bufs a;
	uint64_t sz[QTK_PLANE_MAX];

	for (int i = 0; i < R * C; i++)
		w[i] = frand() * (float)(1 + i / 700);
	D.flags = QTK_QF_DOUBLE_QUANT;
	REQUIRE(qtk_q_plane_sizes(&D, R, C, sz) == QTK_OK);
	CHECK_EQ(sz[QTK_PLANE_SCALES], R * 4);
	CHECK_EQ(sz[QTK_PLANE_DQ], 4 + 4 * 2);
	uint8_t *dq = calloc(1, sz[QTK_PLANE_DQ]);
	REQUIRE(bufs_alloc(&a, &L, R, C) && dq);
	qtk_q_planes pa = planes_of(&a);
	CHECK(qtk_q_quantize_rows(&D, w, R, C, &pa, NULL, &st) != QTK_OK);
	/* two chunks into the f32 temp absmax */
	CHECK_EQ(qtk_q_quantize_rows(&L, w, 10, C, &pa, NULL, &st), QTK_OK);
	qtk_q_planes p2 = pa;
	for (int p = 0; p < QTK_PLANE_DQ; p++)
		p2.p[p] = (char *)a.p[p] + 10 * qtk_q_row_bytes(&L, C, p);
	CHECK_EQ(qtk_q_quantize_rows(&L, w + 10 * C, R - 10, C, &p2, NULL, &st), QTK_OK);
	memcpy(am, a.p[1], sizeof am);
	CHECK_EQ(qtk_q_double_quant(am, R * 4, codes, dq, &st), QTK_OK);
	qtk_q_double_dequant(codes, R * 4, dq, back);
	for (int i = 0; i < R * 4; i++) {
		float s;
		memcpy(&s, dq + 4 + 4 * (i / 256), 4);
		CHECK(s > 0 && fabsf(back[i] - am[i]) <= 0.5f * s * 1.001f);
	}
	qtk_q_cplanes ca = cplanes_of(&a);
	qtk_q_dequantize_rows(&L, &ca, R, C, h);
	memcpy(a.p[1], back, sizeof back);
	qtk_q_dequantize_rows(&L, &ca, R, C, h2);
	qtk_q_acc e1 = { 0 }, e2 = { 0 };
	qtk_q_metrics m1, m2;
	qtk_q_acc_add(&e1, w, h, R * C);
	qtk_q_acc_add(&e2, w, h2, R * C);
	qtk_q_metrics_from(&e1, &m1);
	qtk_q_metrics_from(&e2, &m2);
	CHECK_MSG(m2.rmse < 1.1 * m1.rmse, "dq rmse %g vs %g", m2.rmse, m1.rmse);
	float bad[2] = { 1, NAN };
	CHECK_EQ(qtk_q_double_quant(bad, 2, codes, dq, &st), QTK_E_Q_NONFINITE);
	free(dq);
	bufs_free(&a);
}

/* Tiny but normal groups: a scale that underflows the scale dtype (F16:
 * < 2^-25) or whose reciprocal would overflow must not fail the tensor
 * (real checkpoints have near-dead channels) nor store 0 for a group it
 * then reconstructs as non-zero: it becomes a zero group, error <= amax. */
TEST(quantx_tiny_normal_groups)
{
	static const float amax[] = { 1e-6f, 1e-7f, 0x1p-124f, 0x1p-100f };
	static const qtk_dtype sdt[] = { QTK_DT_F16, QTK_DT_BF16, QTK_DT_F32 };
	float w[64], h[64];

	for (size_t s = 0; s < NQ; s++)
		for (size_t d = 0; d < 3; d++)
			for (size_t a = 0; a < 4; a++) {
				qtk_q_layout L = { qschemes[s], 32, sdt[d], 0, QTK_DT_F32 };
				bufs b;
				qtk_status st;
				for (int i = 0; i < 64; i++)
					w[i] = amax[a] * (float)((i * 7) % 11 - 5) / 5.0f;
				REQUIRE(bufs_alloc(&b, &L, 1, 64));
				qtk_q_planes p = planes_of(&b);
				qtk_q_cplanes c = cplanes_of(&b);
				qtk_err rc = qtk_q_quantize_rows(&L, w, 1, 64, &p, NULL, &st);
				CHECK_MSG(rc == QTK_OK, "%s %s amax %g: %s", qtk_q_scheme_get(L.scheme)->name,
				          qtk_dtype_name(L.scale_dtype), (double)amax[a], st.msg);
				qtk_q_dequantize_rows(&L, &c, 1, 64, h);
				for (int i = 0; i < 64; i++)
					CHECK_MSG(isfinite(h[i]) && fabsf(h[i] - w[i]) <= 2.0f * amax[a] + 0x1p-24f /* f16 bias step */, "%s %s amax %g: w %g h %g", qtk_q_scheme_get(L.scheme)->name, qtk_dtype_name(L.scale_dtype), (double)amax[a], (double)w[i], (double)h[i]);
				bufs_free(&b);
			}
}
