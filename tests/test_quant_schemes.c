/* tests: golden vectors for the group-wise schemes (ggml Q8_0/Q4_0/Q4_1
 * rules, bitsandbytes NF4), edge cases, errors, metrics. */
#include <math.h>
#include <stdlib.h>

#include "qtk_quant.h"
#include "test.h"

static qtk_q_layout lay(qtk_scheme_id s, uint32_t g, qtk_dtype sd)
{
	qtk_q_layout L = { .scheme = s, .group = g, .scale_dtype = sd, .dtype = QTK_DT_F32 };
	return L;
}

static float f32_at(const void *p, size_t i)
{
	float f;
	memcpy(&f, (const uint8_t *)p + 4 * i, 4);
	return f;
}

/* Quantize rows x cols with F32 scales into fresh buffers. */
typedef struct { uint8_t c[4096]; float s[256], b[256]; } bufs;

static qtk_err quant(const qtk_q_layout *L, const float *x, size_t rows, size_t cols,
                     bufs *B, qtk_status *st)
{
	qtk_q_planes P = { { B->c, B->s, B->b, NULL } };
	qtk_q_opts o = { .tensor = "w", .row0 = 10 };
	memset(B, 0xAA, sizeof *B);
	return qtk_q_quantize_rows(L, x, rows, cols, &P, &o, st);
}

TEST(quant_int8_q8_0_golden)
{
	qtk_q_layout L = lay(QTK_SCHEME_INT8, 16, QTK_DT_F32);
	float x[16] = { 127, -127, 0.5f, -0.5f, 1.5f, 2.5f, -2.5f, 63.5f, 0, 1, -1, 100, 3.49f, 0.49f, -126.5f, 7 };
	bufs B;
	qtk_status st;
	REQUIRE(quant(&L, x, 1, 16, &B, &st) == QTK_OK);
	CHECK(f32_at(B.s, 0) == 1.0f);
	/* roundf: ties away from zero */
	int8_t want[16] = { 127, -127, 1, -1, 2, 3, -3, 64, 0, 1, -1, 100, 3, 0, -127, 7 };
	for (int i = 0; i < 16; i++)
		CHECK_EQ((int8_t)B.c[i], want[i]);
}

TEST(quant_int4_q4_0_golden)
{
	qtk_q_layout L = lay(QTK_SCHEME_INT4, 16, QTK_DT_F32);
	/* max = the signed value of largest magnitude: -8 -> d = 1 */
	float x[16] = { -8, 7, 7.5f, 0.5f, -0.5f, 1.49f, 3, -3, 0, 6.5f, -7.5f, 2, -1, 1, 4, 5 };
	bufs B;
	qtk_status st;
	REQUIRE(quant(&L, x, 1, 16, &B, &st) == QTK_OK);
	CHECK(f32_at(B.s, 0) == 1.0f);
	/* code = min(15, (int)(x + 8.5)): x+8 rounded half up, clamped */
	int want[16] = { 0, 15, 15, 9, 8, 9, 11, 5, 8, 15, 1, 10, 7, 9, 12, 13 };
	for (int i = 0; i < 16; i++)
		CHECK_EQ((B.c[i / 2] >> (4 * (i & 1))) & 15, want[i]);
	/* positive max: d = 8 / -8 = -1, so x = 8 maps to code 0 */
	x[0] = 8;
	REQUIRE(quant(&L, x, 1, 16, &B, &st) == QTK_OK);
	CHECK(f32_at(B.s, 0) == -1.0f);
	CHECK_EQ(B.c[0] & 15, 0);
	/* x[10] = -7.5 with d = -1: (int)(7.5 + 8.5) = 16 -> clamped to 15 */
	CHECK_EQ(B.c[5] & 15, 15);
	CHECK_EQ((B.c[5] >> 4) & 15, 6); /* x[11] = 2: (int)(-2 + 8.5) = 6 */
}

TEST(quant_int4_affine_q4_1_golden)
{
	qtk_q_layout L = lay(QTK_SCHEME_INT4_AFFINE, 16, QTK_DT_F32);
	float x[16];
	for (int i = 0; i < 16; i++)
		x[i] = -3.0f + (float)i; /* min -3, max 12, d = 1 */
	x[1] = -1.5f; /* (x - min) = 1.5 -> (int)(2.0) = 2: ties up */
	bufs B;
	qtk_status st;
	REQUIRE(quant(&L, x, 1, 16, &B, &st) == QTK_OK);
	CHECK(f32_at(B.s, 0) == 1.0f);
	CHECK(f32_at(B.b, 0) == -3.0f);
	for (int i = 0; i < 16; i++)
		CHECK_EQ((B.c[i / 2] >> (4 * (i & 1))) & 15, i == 1 ? 2 : i);
	float y[16];
	qtk_q_cplanes C = { { B.c, B.s, B.b, NULL } };
	qtk_q_dequantize_rows(&L, &C, 1, 16, y);
	CHECK(y[15] == 12.0f && y[1] == -1.0f);
}

TEST(quant_nf4_bnb_codes_and_ties)
{
	/* code values are sorted, 7 is 0 and the ends are -1 and 1 */
	CHECK(qtk_q_nf4_value(0) == -1.0f && qtk_q_nf4_value(7) == 0.0f &&
	      qtk_q_nf4_value(15) == 1.0f);
	for (unsigned c = 0; c < 16; c++)
		CHECK_EQ(qtk_q_nf4_code(qtk_q_nf4_value(c)), c);
	/* exactly on a bitsandbytes threshold -> lower code; just above -> upper */
	CHECK_EQ(qtk_q_nf4_code(0.03979014977812767f), 7);
	CHECK_EQ(qtk_q_nf4_code(nextafterf(0.03979014977812767f, 1)), 8);
	CHECK_EQ(qtk_q_nf4_code(0.8614784181118011f), 14);
	CHECK_EQ(qtk_q_nf4_code(-0.8480964004993439f), 0);
	CHECK_EQ(qtk_q_nf4_code(-0.045525018125772476f), 6);
	CHECK_EQ(qtk_q_nf4_code(-0.04f), 7);
	/* nearest value everywhere away from the thresholds */
	for (int k = -1000; k <= 1000; k++) {
		float x = (float)k / 1000.0f;
		unsigned c = qtk_q_nf4_code(x), best = 0;
		for (unsigned j = 1; j < 16; j++)
			if (fabsf(x - qtk_q_nf4_value(j)) < fabsf(x - qtk_q_nf4_value(best)))
				best = j;
		CHECK_MSG(c == best || fabsf(fabsf(x - qtk_q_nf4_value(c)) -
		                             fabsf(x - qtk_q_nf4_value(best))) < 1e-6f,
		          "x=%g code %u nearest %u", (double)x, c, best);
	}
	qtk_q_layout L = lay(QTK_SCHEME_NF4, 16, QTK_DT_F32);
	float x[16] = { 2, -2, 1, 0, 0.5f, -0.5f, 1.44f, -1.7f, 0, 0, 0, 0, 0, 0, 0, 0.1f };
	bufs B;
	qtk_status st;
	REQUIRE(quant(&L, x, 1, 16, &B, &st) == QTK_OK);
	CHECK(f32_at(B.s, 0) == 2.0f);
	for (int i = 0; i < 16; i++)
		CHECK_EQ((B.c[i / 2] >> (4 * (i & 1))) & 15, qtk_q_nf4_code(x[i] * 0.5f));
	CHECK_EQ(B.c[0] & 15, 15);
	CHECK_EQ(B.c[0] >> 4, 0);
}

TEST(quant_zero_subnormal_short_last_group)
{
	static const qtk_scheme_id ids[] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4,
		QTK_SCHEME_INT4_AFFINE, QTK_SCHEME_NF4, QTK_SCHEME_INT8_AFFINE };
	float x[40];
	for (int i = 0; i < 40; i++)
		x[i] = i < 16 ? 0.0f : i < 32 ? (i & 1 ? 1e-40f : -1e-41f) : (float)(i - 35) * 0.25f;
	for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
		for (int g = 0; g < 2; g++) {
			qtk_q_layout L = lay(ids[k], g ? QTK_GROUP_ROW : 16, QTK_DT_F16);
			bufs B;
			qtk_status st;
			float y[40];
			/* 40 = 16 + 16 + a short group of 8 (or one row group) */
			REQUIRE(quant(&L, x, 1, 40, &B, &st) == QTK_OK);
			qtk_q_cplanes C = { { B.c, B.s, B.b, NULL } };
			qtk_q_dequantize_rows(&L, &C, 1, 40, y);
			for (int i = 0; i < 32 && !g; i++)
				CHECK_MSG(y[i] == 0.0f, "%s y[%d]=%g", qtk_q_scheme_get(ids[k])->name,
				          i, (double)y[i]);
			qtk_q_acc a = { 0 };
			qtk_q_metrics m;
			qtk_q_acc_add(&a, x + 32, y + 32, 8);
			qtk_q_metrics_from(&a, &m);
			CHECK_MSG(m.max_abs <= (ids[k] == QTK_SCHEME_NF4 ? 0.2 : 0.13),
			          "%s g=%d max_abs %g", qtk_q_scheme_get(ids[k])->name, g, m.max_abs);
			/* dot agrees with dequantize (to f32 lane rounding; the exact
			 * definition is tested in test_quant_simd.c) */
			qtk_q_cplanes R = C;
			double ref = 0, mag = 0;
			for (int i = 0; i < 40; i++) {
				ref += (double)y[i] * (double)x[i];
				mag += fabs((double)y[i] * (double)x[i]);
			}
			CHECK(fabs((double)qtk_q_scheme_get(ids[k])->dot(&L, &R, 40, x) - ref) <=
			      1e-6 * mag);
		}
	}
}

TEST(quant_errors_nonfinite_and_scale_range)
{
	qtk_q_layout L = lay(QTK_SCHEME_INT8, 16, QTK_DT_F16);
	float x[32] = { 0 };
	bufs B;
	qtk_status st;
	x[20] = NAN;
	CHECK_EQ(quant(&L, x, 2, 16, &B, &st), QTK_E_Q_NONFINITE);
	CHECK_STR(st.msg, "tensor 'w': row 11 group 0: NaN in the input");
	x[20] = -INFINITY;
	CHECK_EQ(quant(&L, x, 1, 32, &B, &st), QTK_E_Q_NONFINITE);
	CHECK_STR(st.msg, "tensor 'w': row 10 group 1: Inf in the input");
	x[20] = 3e38f; /* 3e38/127 does not fit f16 */
	CHECK_EQ(quant(&L, x, 1, 32, &B, &st), QTK_E_Q_SCALE_RANGE);
	x[20] = 1e-30f; /* normal, but its scale flushes to 0 in f16: a zero
	                   group (quantx_tiny_normal_groups), not an error */
	CHECK_EQ(quant(&L, x, 1, 32, &B, &st), QTK_OK);
	L.scale_dtype = QTK_DT_F32;
	CHECK_EQ(quant(&L, x, 1, 32, &B, &st), QTK_OK);
}

TEST(quant_chunked_equals_whole_and_metrics)
{
	static const qtk_scheme_id ids[] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4,
		QTK_SCHEME_INT4_AFFINE, QTK_SCHEME_NF4, QTK_SCHEME_INT8_AFFINE };
	enum { R = 6, C = 100 };
	float x[R * C];
	uint32_t s = 12345;
	for (int i = 0; i < R * C; i++) {
		s = s * 1664525u + 1013904223u;
		x[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 4.0f;
	}
	for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
		qtk_q_layout L = lay(ids[k], 32, QTK_DT_F16);
		uint64_t sz[QTK_PLANE_MAX];
		REQUIRE(qtk_q_plane_sizes(&L, R, C, sz) == QTK_OK);
		bufs A, B;
		qtk_status st;
		REQUIRE(quant(&L, x, R, C, &A, &st) == QTK_OK);
		memset(&B, 0xAA, sizeof B);
		size_t cb = qtk_q_row_bytes(&L, C, 0), sb = qtk_q_row_bytes(&L, C, 1);
		for (size_t r0 = 0; r0 < R; r0 += 4) {
			size_t n = R - r0 < 4 ? R - r0 : 4;
			qtk_q_planes P = { { B.c + r0 * cb, (uint8_t *)B.s + r0 * sb,
			                     (uint8_t *)B.b + r0 * sb, NULL } };
			qtk_q_opts o = { .tensor = "w", .row0 = r0 };
			REQUIRE(qtk_q_quantize_rows(&L, x + r0 * C, n, C, &P, &o, &st) == QTK_OK);
		}
		CHECK(!memcmp(A.c, B.c, sz[0]) && !memcmp(A.s, B.s, sz[1]) &&
		      !memcmp(A.b, B.b, sz[2]));
		float y[R * C];
		qtk_q_cplanes CP = { { A.c, A.s, A.b, NULL } };
		qtk_q_dequantize_rows(&L, &CP, R, C, y);
		qtk_q_acc a1 = { 0 }, a2 = { 0 }, all = { 0 };
		qtk_q_metrics m;
		qtk_q_acc_add(&a1, x, y, 300);
		qtk_q_acc_add(&a2, x + 300, y + 300, 300);
		qtk_q_acc_merge(&a1, &a2);
		qtk_q_acc_add(&all, x, y, 600);
		qtk_q_metrics_from(&a1, &m);
		CHECK(m.n == 600 && fabs(a1.sse - all.sse) <= 1e-6 * all.sse); /* f32 blocks */
		/* uniform in [-2, 2]: 8-bit RMSE ~ 2/127/sqrt(12), 4-bit ~ 16x more */
		double lim = qtk_q_scheme_get(ids[k])->code_bits == 8 ? 0.01 : 0.2;
		CHECK_MSG(m.rmse > 0 && m.rmse < lim && m.cosine > 0.98 && m.snr_db > 10,
		          "%s rmse %g cos %g snr %g", qtk_q_scheme_get(ids[k])->name, m.rmse,
		          m.cosine, m.snr_db);
	}
}

static double sse_of(const qtk_q_layout *L, const float *x, size_t rows, size_t cols,
                     int search, const float *imp)
{
	static bufs B;
	static float y[1024];
	qtk_q_planes P = { { B.c, B.s, B.b, NULL } };
	qtk_q_opts o = { .tensor = "w", .search = search, .importance = imp };
	qtk_status st;
	double e = 0;
	if (qtk_q_quantize_rows(L, x, rows, cols, &P, &o, &st) != QTK_OK)
		return -1;
	qtk_q_cplanes C = { { B.c, B.s, B.b, NULL } };
	qtk_q_dequantize_rows(L, &C, rows, cols, y);
	for (size_t i = 0; i < rows * cols; i++)
		e += (imp ? (double)imp[i % cols] : 1.0) * ((double)x[i] - (double)y[i]) *
		     ((double)x[i] - (double)y[i]);
	return e;
}

TEST(quant_search_beats_rtn_and_is_deterministic)
{
	static const qtk_scheme_id ids[] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4,
		QTK_SCHEME_INT4_AFFINE, QTK_SCHEME_NF4, QTK_SCHEME_INT8_AFFINE };
	enum { R = 8, C = 128 };
	float x[R * C], imp[C];
	uint32_t s = 777;
	for (int i = 0; i < R * C; i++) {
		s = s * 1664525u + 1013904223u;
		float u = (float)(s >> 8) / 16777216.0f - 0.5f;
		x[i] = u * u * u * 8.0f; /* heavy-tailed: clipping pays */
	}
	for (int i = 0; i < C; i++)
		imp[i] = (float)(1 + i % 7);
	for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
		qtk_q_layout L = lay(ids[k], 32, QTK_DT_F32);
		double rtn = sse_of(&L, x, R, C, 0, NULL), srch = sse_of(&L, x, R, C, 1, NULL);
		double srch2 = sse_of(&L, x, R, C, 1, NULL);
		double rtn_w = sse_of(&L, x, R, C, 0, imp), srch_w = sse_of(&L, x, R, C, 1, imp);
		REQUIRE(rtn > 0 && srch > 0);
		CHECK(srch == srch2);
		/* the grid starts at RTN; 4-bit must gain on heavy tails */
		CHECK_MSG(srch <= rtn * 1.0001, "%s search %g rtn %g",
		          qtk_q_scheme_get(ids[k])->name, srch, rtn);
		CHECK_MSG(srch_w <= rtn_w * 1.0001, "%s weighted search %g rtn %g",
		          qtk_q_scheme_get(ids[k])->name, srch_w, rtn_w);
		if (qtk_q_scheme_get(ids[k])->code_bits == 4)
			CHECK_MSG(srch < 0.97 * rtn, "%s search %g rtn %g",
			          qtk_q_scheme_get(ids[k])->name, srch, rtn);
	}
}

TEST(quant_edge_constant_outlier_f16_overflow)
{
	bufs B;
	qtk_status st;
	float x[32], y[32];
	/* constant group: affine carries it in the bias exactly */
	for (int i = 0; i < 32; i++)
		x[i] = 0.75f;
	qtk_q_layout L = lay(QTK_SCHEME_INT4_AFFINE, 32, QTK_DT_F16);
	REQUIRE(quant(&L, x, 1, 32, &B, &st) == QTK_OK);
	qtk_q_cplanes C = { { B.c, B.s, B.b, NULL } };
	qtk_q_dequantize_rows(&L, &C, 1, 32, y);
	for (int i = 0; i < 32; i++)
		CHECK(y[i] == 0.75f);
	L.scheme = QTK_SCHEME_INT4; /* symmetric: 0.75 -> -8 * (0.75/-8) */
	REQUIRE(quant(&L, x, 1, 32, &B, &st) == QTK_OK);
	qtk_q_dequantize_rows(&L, &C, 1, 32, y);
	CHECK(y[0] == 0.75f);
	/* one huge outlier: it is reproduced to within half a step */
	x[5] = 1000.0f;
	for (qtk_scheme_id s = QTK_SCHEME_INT8; s <= QTK_SCHEME_INT8_AFFINE; s++) {
		L.scheme = s;
		REQUIRE(quant(&L, x, 1, 32, &B, &st) == QTK_OK);
		qtk_q_dequantize_rows(&L, &C, 1, 32, y);
		CHECK_MSG(fabsf(y[5] - 1000.0f) <= 1.0f, "%s outlier -> %g",
		          qtk_q_scheme_get(s)->name, (double)y[5]);
	}
	/* |w| > 65504 * 8: the int4 f16 scale would be Inf */
	x[5] = 65504.0f * 8.5f;
	L.scheme = QTK_SCHEME_INT4;
	CHECK_EQ(quant(&L, x, 1, 32, &B, &st), QTK_E_Q_SCALE_RANGE);
	CHECK(strstr(st.msg, "row 10 group 0") != NULL);
	L.scale_dtype = QTK_DT_F32;
	CHECK_EQ(quant(&L, x, 1, 32, &B, &st), QTK_OK);
}

TEST(quant_nf4_double_quant_round_trip)
{
	enum { R = 40, C = 256 }; /* 40 * 8 = 320 groups: one full block + 64 */
	static float x[R * C], y[R * C], amax[R * 8], back[R * 8];
	static uint8_t codes[R * C / 2], dqc[R * 8], dq[4 + 4 * 2];
	uint32_t s = 99;
	for (int i = 0; i < R * C; i++) {
		s = s * 1664525u + 1013904223u;
		x[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * (float)(1 + (i / 32) % 5);
	}
	qtk_q_layout L = lay(QTK_SCHEME_NF4, 32, QTK_DT_F32), LD = L;
	LD.flags = QTK_QF_DOUBLE_QUANT;
	uint64_t sz[QTK_PLANE_MAX];
	REQUIRE(qtk_q_plane_sizes(&LD, R, C, sz) == QTK_OK);
	CHECK_EQ(sz[QTK_PLANE_SCALES], sizeof dqc);
	CHECK_EQ(sz[QTK_PLANE_DQ], sizeof dq);
	qtk_q_planes P = { { codes, amax, NULL, NULL } };
	qtk_q_opts o = { .tensor = "w" };
	qtk_status st;
	/* the flagged layout is not quantized row-wise */
	CHECK_EQ(qtk_q_quantize_rows(&LD, x, R, C, &P, &o, &st), QTK_E_UNSUPPORTED);
	REQUIRE(qtk_q_quantize_rows(&L, x, R, C, &P, &o, &st) == QTK_OK);
	REQUIRE(qtk_q_double_quant(amax, R * 8, dqc, dq, &st) == QTK_OK);
	qtk_q_double_dequant(dqc, R * 8, dq, back);
	double mean = 0;
	for (int i = 0; i < R * 8; i++)
		mean += (double)amax[i];
	float off;
	memcpy(&off, dq, 4);
	CHECK(off == (float)(mean / (R * 8)));
	for (int i = 0; i < R * 8; i++) {
		float sb;
		memcpy(&sb, dq + 4 + 4 * (i / 256), 4);
		CHECK_MSG(fabsf(back[i] - amax[i]) <= 0.5f * sb * 1.0001f, "group %d: %g vs %g",
		          i, (double)back[i], (double)amax[i]);
	}
	/* dequantize with the rebuilt absmax values */
	qtk_q_cplanes CP = { { codes, back, NULL, NULL } };
	qtk_q_dequantize_rows(&L, &CP, R, C, y);
	qtk_q_acc a = { 0 };
	qtk_q_metrics m;
	qtk_q_acc_add(&a, x, y, R * C);
	qtk_q_metrics_from(&a, &m);
	CHECK_MSG(m.cosine > 0.99, "cosine %g", m.cosine);
	float bad = NAN;
	CHECK_EQ(qtk_q_double_quant(&bad, 1, dqc, dq, &st), QTK_E_Q_NONFINITE);
}

TEST(quant_every_scheme_every_isa_bit_identical)
{
	enum { R = 5, C = 200 }; /* 200 = 6 groups of 32 + a short one of 8 */
	static float x[R * C], y0[R * C], y1[R * C];
	static uint8_t c0[R * C * 4], s0[R * 64 * 4], b0[R * 64 * 4];
	static uint8_t c1[R * C * 4], s1[R * 64 * 4], b1[R * 64 * 4];
	uint32_t s = 4242;
	qtk_isa best = qtk_isa_force(QTK_ISA_AVX512);
	for (int i = 0; i < R * C; i++) {
		s = s * 1664525u + 1013904223u;
		x[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 3.0f;
	}
	for (int id = QTK_SCHEME_F32; id < QTK_SCHEME_COUNT; id++) {
		const qtk_q_scheme *sc = qtk_q_scheme_get((qtk_scheme_id)id);
		if (!sc->quantize)
			continue;
		for (int gi = 0; gi < 2; gi++) {
			qtk_q_layout L = { .scheme = (qtk_scheme_id)id, .dtype = QTK_DT_F32,
				.scale_dtype = QTK_DT_F16 };
			if (sc->quantized)
				L.group = gi ? QTK_GROUP_ROW : 32;
			else if (gi)
				continue;
			uint64_t sz[QTK_PLANE_MAX];
			REQUIRE(qtk_q_plane_sizes(&L, R, C, sz) == QTK_OK);
			qtk_q_planes P0 = { { c0, s0, b0, NULL } }, P1 = { { c1, s1, b1, NULL } };
			qtk_q_cplanes C0 = { { c0, s0, b0, NULL } };
			qtk_q_opts o = { .tensor = "w" };
			qtk_status st;
			qtk_isa_force(QTK_ISA_SCALAR);
			REQUIRE(qtk_q_quantize_rows(&L, x, R, C, &P0, &o, &st) == QTK_OK);
			qtk_q_dequantize_rows(&L, &C0, R, C, y0);
			float d0 = sc->dot(&L, &C0, C, x);
			for (int isa = QTK_ISA_AVX2; isa <= (int)best; isa++) {
				CHECK_EQ(qtk_isa_force((qtk_isa)isa), isa);
				memset(c1, 0x55, sizeof c1);
				REQUIRE(qtk_q_quantize_rows(&L, x, R, C, &P1, &o, &st) == QTK_OK);
				CHECK_MSG(!memcmp(c0, c1, sz[0]) && !memcmp(s0, s1, sz[1]) &&
				          !memcmp(b0, b1, sz[2]), "%s isa %d: planes differ",
				          sc->name, isa);
				memset(y1, 0x55, sizeof y1);
				qtk_q_dequantize_rows(&L, &C0, R, C, y1);
				CHECK_MSG(!memcmp(y0, y1, sizeof y0), "%s g%u isa %d: dequant differs",
				          sc->name, L.group, isa);
				CHECK_MSG(sc->dot(&L, &C0, C, x) == d0, "%s isa %d: dot differs",
				          sc->name, isa);
			}
		}
	}
	qtk_isa_force(best);
}
