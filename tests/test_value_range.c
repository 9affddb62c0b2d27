/* tests: finite values never silently become Inf or zero (issue 15). The
 * narrowing checks of qtk_from_f32_checked on every ISA against the
 * converted bits; float stores and group scales that refuse what their
 * type cannot hold, and count what flushes to zero. The conversion-level
 * cases (.qtk, GGUF, MLX, export) are in test_value_range_conv.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qtk_quant.h"
#include "test.h"

static float f_of(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* What the converted bits say: the first finite input stored as Inf and
 * the nonzero inputs stored as zero. */
static void truth(qtk_dtype dt, const float *src, const uint8_t *out, size_t n,
                  size_t *first, uint64_t *flushed)
{
	*first = n;
	*flushed = 0;
	for (size_t i = 0; i < n; i++) {
		uint16_t h;
		memcpy(&h, out + 2 * i, 2);
		float back = dt == QTK_DT_F16 ? qtk_f16_to_f32(h) : qtk_bf16_to_f32(h);
		if (isfinite(src[i]) && isinf(back) && *first == n)
			*first = i;
		if (src[i] != 0.0f && !isnan(src[i]) && back == 0.0f)
			(*flushed)++;
	}
}

TEST(value_range_narrowing_checks_every_isa)
{
	/* values around each edge, in every lane position and in the tails */
	static const uint32_t edge[] = {
		0x477fe000u, 0x477fefffu, 0x477ff000u, 0x477ff001u, 0x47800000u, /* F16 max */
		0x7f7f7fffu, 0x7f7f8000u, 0x7f7fffffu,                           /* BF16 max */
		0x33000000u, 0x33000001u, 0x32ffffffu, 0x00000001u, 0x00008000u,  /* flush */
		0x00008001u, 0x00800000u, 0x7f800000u, 0x7fc00000u, 0x7f800001u,
		0x00000000u, 0x3f800000u, 0x2f800000u,
	};
	size_t ne = sizeof edge / sizeof edge[0];
	size_t n = 4099;
	float *src = malloc(n * 4);
	uint8_t *out = malloc(2 * n);
	uint64_t s = 15;
	int tested = 0;

	REQUIRE(src && out);
	for (int d = 0; d < 2; d++) {
		qtk_dtype dt = d ? QTK_DT_F16 : QTK_DT_BF16;
		for (int round = 0; round < 40; round++) {
			size_t len = round < 20 ? (size_t)round + 1 : n - (size_t)round; /* tails */
			for (size_t i = 0; i < len; i++) {
				uint32_t u = edge[t_rand_u64(&s) % ne];
				if (t_rand_u64(&s) % 4 == 0)
					u = 0x3c000000u + (uint32_t)(t_rand_u64(&s) % 0x4000000u);
				u |= (uint32_t)(t_rand_u64(&s) & 1) << 31;
				memcpy(&src[i], &u, 4);
			}
			size_t f0 = 0, want_f;
			uint64_t fl0 = 0, want_fl;
			qtk_isa old = qtk_isa_force(QTK_ISA_SCALAR);
			REQUIRE(qtk_from_f32_checked(dt, src, out, len, &f0, &fl0) == QTK_OK);
			truth(dt, src, out, len, &want_f, &want_fl);
			CHECK_MSG(f0 == want_f && fl0 == want_fl, "%s scalar len %zu: first %zu/%zu "
			          "flushed %llu/%llu", qtk_dtype_name(dt), len, f0, want_f,
			          (unsigned long long)fl0, (unsigned long long)want_fl);
			for (qtk_isa isa = QTK_ISA_AVX2; isa <= QTK_ISA_AVX512; isa++) {
				size_t f1 = 7;
				uint64_t fl1 = 0;
				if (!qtk_isa_supported(isa))
					continue;
				qtk_isa_force(isa);
				REQUIRE(qtk_from_f32_checked(dt, src, out, len, &f1, &fl1) == QTK_OK);
				CHECK_MSG(f1 == f0 && fl1 == fl0, "%s %s len %zu: first %zu/%zu flushed "
				          "%llu/%llu", qtk_dtype_name(dt), qtk_isa_name(isa), len, f1, f0,
				          (unsigned long long)fl1, (unsigned long long)fl0);
				tested++;
			}
			qtk_isa_force(old);
		}
	}
	/* the single edges */
	size_t f;
	uint64_t fl = 0;
	float x = 70000.0f;
	CHECK_EQ(qtk_from_f32_checked(QTK_DT_F16, &x, out, 1, &f, &fl), QTK_OK);
	CHECK_EQ(f, 0);
	x = 65519.0f;
	CHECK_EQ(qtk_from_f32_checked(QTK_DT_F16, &x, out, 1, &f, &fl), QTK_OK);
	CHECK_EQ(f, 1);
	x = 3.3962e38f;
	CHECK_EQ(qtk_from_f32_checked(QTK_DT_BF16, &x, out, 1, &f, &fl), QTK_OK);
	CHECK_EQ(f, 0);
	x = f_of(0x33000000u); /* 2^-25: the tie goes to 0 */
	CHECK_EQ(qtk_from_f32_checked(QTK_DT_F16, &x, out, 1, &f, &fl), QTK_OK);
	CHECK_EQ(fl, 1);
	CHECK_EQ(qtk_from_f32_checked(QTK_DT_F32, &x, src, 1, &f, &fl), QTK_OK);
	CHECK(f == 1 && fl == 1);
	free(src);
	free(out);
	if (!tested)
		SKIP("no SIMD level on this CPU");
}

static qtk_q_layout flay(qtk_scheme_id s)
{
	qtk_q_layout L = { .scheme = s, .dtype = QTK_DT_F32 };
	return L;
}

TEST(value_range_float_store_refuses_and_counts)
{
	float x[3 * 40];
	uint16_t out[3 * 40];
	qtk_q_planes P = { { out, NULL, NULL, NULL } };
	uint64_t flushed = 0;
	qtk_q_opts o = { .tensor = "w", .row0 = 5, .flushed = &flushed };
	qtk_q_layout L = flay(QTK_SCHEME_F16);
	qtk_status st;

	for (int i = 0; i < 120; i++)
		x[i] = 0.01f * (float)(i - 60);
	x[1 * 40 + 33] = 7e4f;
	for (qtk_isa isa = QTK_ISA_SCALAR; isa <= QTK_ISA_AVX512; isa++) {
		if (!qtk_isa_supported(isa))
			continue;
		qtk_isa old = qtk_isa_force(isa);
		CHECK_EQ(qtk_q_quantize_rows(&L, x, 3, 40, &P, &o, &st), QTK_E_Q_VALUE_RANGE);
		CHECK_MSG(strstr(st.msg, "tensor 'w': row 6 col 33: 70000 does not fit F16"),
		          "%s: %s", qtk_isa_name(isa), st.msg);
		qtk_isa_force(old);
	}
	/* a flat run: row and column from elem0 and row_len */
	qtk_q_opts of = { .tensor = "w", .elem0 = 1000, .row_len = 64 };
	CHECK_EQ(qtk_q_quantize_rows(&L, x, 1, 120, &P, &of, &st), QTK_E_Q_VALUE_RANGE);
	CHECK_MSG(strstr(st.msg, "row 16 col 49:"), "%s", st.msg); /* 1073 = 16 * 64 + 49 */
	/* BF16: a value near FLT_MAX rounds to Inf */
	x[1 * 40 + 33] = -3.3962e38f;
	L = flay(QTK_SCHEME_BF16);
	CHECK_EQ(qtk_q_quantize_rows(&L, x, 3, 40, &P, &o, &st), QTK_E_Q_VALUE_RANGE);
	CHECK_MSG(strstr(st.msg, "row 6 col 33: -3.396") && strstr(st.msg, "BF16"), "%s", st.msg);
	x[1 * 40 + 33] = 3.3895e38f; /* fits */
	CHECK_EQ(qtk_q_quantize_rows(&L, x, 3, 40, &P, &o, &st), QTK_OK);
	/* F16 flush: counted, not refused */
	L = flay(QTK_SCHEME_F16);
	x[1 * 40 + 33] = 1e-9f;
	x[2] = -2e-8f;
	x[3] = 1e-7f; /* a subnormal F16, not zero */
	flushed = 0;
	CHECK_EQ(qtk_q_quantize_rows(&L, x, 3, 40, &P, &o, &st), QTK_OK);
	CHECK_EQ(flushed, 2);
	/* NaN and Inf stay what they are (a float copy) */
	x[4] = NAN;
	x[5] = -INFINITY;
	CHECK_EQ(qtk_q_quantize_rows(&L, x, 3, 40, &P, &o, &st), QTK_OK);
	CHECK(isinf(qtk_f16_to_f32(out[5])) && isnan(qtk_f16_to_f32(out[4])));
}

TEST(value_range_group_scales)
{
	float x[64];
	uint8_t codes[64];
	uint16_t sc[4], bi[4];
	qtk_q_planes P = { { codes, sc, bi, NULL } };
	uint64_t flushed = 0;
	qtk_q_opts o = { .tensor = "w", .row0 = 2, .flushed = &flushed };
	qtk_q_layout L = { .scheme = QTK_SCHEME_INT4, .group = 32, .scale_dtype = QTK_DT_F16,
	                   .dtype = QTK_DT_F32 };
	qtk_status st;

	for (int i = 0; i < 64; i++)
		x[i] = 0.01f * (float)(i - 30);
	/* a scale beyond F16: refused naming row and group */
	x[40] = 6e5f;
	CHECK_EQ(qtk_q_quantize_rows(&L, x, 1, 64, &P, &o, &st), QTK_E_Q_SCALE_RANGE);
	CHECK_MSG(strstr(st.msg, "tensor 'w': row 2 group 1") && strstr(st.msg, "F16"), "%s",
	          st.msg);
	/* an affine bias beyond F16 */
	L.scheme = QTK_SCHEME_INT4_AFFINE;
	x[40] = -7e4f;
	for (int i = 32; i < 64; i++)
		x[i] = x[40] + (float)(i - 32);
	CHECK_EQ(qtk_q_quantize_rows(&L, x, 1, 64, &P, &o, &st), QTK_E_Q_SCALE_RANGE);
	CHECK_MSG(strstr(st.msg, "row 2 group 1") && strstr(st.msg, "bias -7"), "%s", st.msg);
	/* a scale that flushes to zero in F16: a zero group, its values counted */
	for (int sch = 0; sch < 3; sch++) {
		static const qtk_scheme_id ids[3] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4, QTK_SCHEME_NF4 };
		L.scheme = ids[sch];
		for (int i = 0; i < 64; i++)
			x[i] = i < 32 ? 0.01f * (float)(i - 16) : (i % 3 ? 1e-9f : 0.0f);
		flushed = 0;
		CHECK_EQ(qtk_q_quantize_rows(&L, x, 1, 64, &P, &o, &st), QTK_OK);
		CHECK_MSG(flushed == 21, "%s: %llu flushed", qtk_q_scheme_get(L.scheme)->name,
		          (unsigned long long)flushed);
		CHECK_EQ(sc[1], 0);
		/* F32 scales hold it: nothing flushed */
		L.scale_dtype = QTK_DT_F32;
		flushed = 0;
		{
			float sc32[2];
			qtk_q_planes P32 = { { codes, sc32, NULL, NULL } };
			CHECK_EQ(qtk_q_quantize_rows(&L, x, 1, 64, &P32, &o, &st), QTK_OK);
			CHECK_EQ(flushed, 0);
			CHECK(sc32[1] != 0.0f);
		}
		L.scale_dtype = QTK_DT_F16;
	}
	/* an affine group whose scale flushes: carried by its bias, the values
	 * other than the bias counted */
	L.scheme = QTK_SCHEME_INT4_AFFINE;
	for (int i = 32; i < 64; i++)
		x[i] = 1e-3f + (i % 2 ? 1e-9f : 0.0f);
	flushed = 0;
	CHECK_EQ(qtk_q_quantize_rows(&L, x, 1, 64, &P, &o, &st), QTK_OK);
	CHECK_EQ(flushed, 16);
}
