/* runtime: activations prepared for the kernels (see rt_act in
 * rt_private.h and docs/kernels.md).
 *   FLOAT path: x copied into position order, zero padded.
 *   INT8 path, per block of 32 elements: amax = max |x|; d = amax / 127;
 *   id = 1 / d (0 when d is 0; a block so small that 1/d overflows counts
 *   as zero: d = 0); q = clamp(round-to-nearest-even(x * id), -127, 127);
 *   a block holding a NaN or Inf gets d = NaN and q = 0, so every product
 *   that reads it is NaN. Per lane (positions 4j..4j+3): corr times the
 *   integer sum of q (the SIMD kernels' correction), and the f32 sum
 *   (x[p0] + x[p1]) + (x[p2] + x[p3]) of the original values (the affine
 *   kernels' bias term).
 * The scalar code defines the result; the AVX2 / AVX-512 paths do the same
 * IEEE operations (max, div, mul, round to nearest even, add) and give the
 * same bytes. */
#include <float.h>
#include <math.h>
#include <string.h>

#include <immintrin.h>

#include "rt_private.h"

/* Round to nearest, ties to even, for |v| < 2^23 (the IEEE default mode). */
static inline float rne(float v)
{
	float a = fabsf(v);

	if (a < 0x1p23f)
		a = (a + 0x1p23f) - 0x1p23f;
	return copysignf(a, v);
}

/* Block scale and reciprocal; 0 for a zero (or vanishingly small) block. */
static inline void block_scale(float amax, float *d, float *id)
{
	*d = amax / 127.0f;
	*id = *d != 0.0f ? 1.0f / *d : 0.0f;
	if (!(*id <= FLT_MAX)) { /* 1/d overflowed: amax is subnormal */
		*d = 0.0f;
		*id = 0.0f;
	}
}

/* Lane sums of one block in position order: corr * (sum of q), and the
 * f32 sums of xp. */
static void lane_sums(const int8_t *q, const float *xp, int corr, int32_t *s, float *xs)
{
	for (int j = 0; j < 8; j++) {
		const int8_t *qq = q + 4 * j;
		const float *xx = xp + 4 * j;
		s[j] = corr * (qq[0] + qq[1] + qq[2] + qq[3]);
		xs[j] = (xx[0] + xx[1]) + (xx[2] + xx[3]);
	}
}

/* One vector, scalar: the definition. */
static void prep_int_ref(const rt_act *a, const float *x, size_t b)
{
	int8_t *q = a->q + b * a->nbp * RT_BLK;
	int32_t *s = a->s + b * a->nbp * 8;
	float *d = a->d + b * a->nbp * 8, *xs = a->xs + b * a->nbp * 8;

	for (size_t k = 0; k < a->nbp; k++) {
		float xp[RT_BLK], amax = 0, bd, id;
		int bad = 0;

		for (unsigned p = 0; p < RT_BLK; p++) {
			size_t e = rt_elem(a->order, k, p);
			xp[p] = e < a->cols ? x[e] : 0.0f;
			if (!isfinite(xp[p]))
				bad = 1;
			else if (fabsf(xp[p]) > amax)
				amax = fabsf(xp[p]);
		}
		block_scale(amax, &bd, &id);
		if (bad) {
			bd = NAN;
			id = 0.0f;
		}
		for (unsigned p = 0; p < RT_BLK; p++) {
			float v = rne(xp[p] * id);
			v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
			q[k * RT_BLK + p] = bad ? 0 : (int8_t)v;
		}
		lane_sums(q + k * RT_BLK, xp, a->corr, s + k * 8, xs + k * 8);
		for (int j = 0; j < 8; j++)
			d[k * 8 + j] = bd;
	}
}

static void prep_float(const rt_act *a, const float *x, size_t b)
{
	float *xf = a->xf + b * a->nbp * RT_BLK;

	if (!a->order) {
		memcpy(xf, x, a->cols * sizeof(float));
		memset(xf + a->cols, 0, (a->nbp * RT_BLK - a->cols) * sizeof(float));
		return;
	}
	for (size_t k = 0; k < a->nbp; k++)
		for (unsigned p = 0; p < RT_BLK; p++) {
			size_t e = rt_elem(1, k, p);
			xf[k * RT_BLK + p] = e < a->cols ? x[e] : 0.0f;
		}
}

/* ---- AVX-512: a pair of blocks as four vectors, tails by masked loads -- */

#define T512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

/* Quantize block k from v0, v1 (its 32 positions). */
T512 static inline void block_512(const rt_act *a, size_t k, __m512 v0, __m512 v1,
                                  int8_t *q, int32_t *s, float *d, float *xs)
{
	const __m512 lim = _mm512_set1_ps(FLT_MAX);
	/* lanes 0, 4, 8, 12 of two vectors */
	const __m512i pick = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0,
	                                       0, 0);
	__m512 a0 = _mm512_abs_ps(v0), a1 = _mm512_abs_ps(v1);
	int bad = (_mm512_cmp_ps_mask(a0, lim, _CMP_NLE_UQ) |
	           _mm512_cmp_ps_mask(a1, lim, _CMP_NLE_UQ)) != 0;
	float amax = bad ? 0.0f : _mm512_reduce_max_ps(_mm512_max_ps(a0, a1)), bd, id;

	block_scale(amax, &bd, &id);
	if (bad) {
		bd = NAN;
		id = 0.0f;
	}
	__m512 vid = _mm512_set1_ps(id);
	__m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid));
	__m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
	q0 = _mm512_max_epi32(_mm512_min_epi32(q0, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
	q1 = _mm512_max_epi32(_mm512_min_epi32(q1, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
	__m256i qb = _mm256_set_m128i(_mm512_cvtepi32_epi8(q1), _mm512_cvtepi32_epi8(q0));
	_mm256_storeu_si256((__m256i *)(void *)(q + k * RT_BLK), qb);
	__m256i sq = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), qb),
	                               _mm256_set1_epi16(1));
	sq = _mm256_mullo_epi32(sq, _mm256_set1_epi32(a->corr));
	_mm256_storeu_si256((__m256i *)(void *)(s + k * 8), sq);
	/* lane sums of x: (x0 + x1) + (x2 + x3) */
	__m512 t0 = _mm512_add_ps(v0, _mm512_permute_ps(v0, 0xb1));
	__m512 t1 = _mm512_add_ps(v1, _mm512_permute_ps(v1, 0xb1));
	t0 = _mm512_add_ps(t0, _mm512_permute_ps(t0, 0x4e));
	t1 = _mm512_add_ps(t1, _mm512_permute_ps(t1, 0x4e));
	_mm256_storeu_ps(xs + k * 8, _mm512_castps512_ps256(_mm512_permutex2var_ps(t0, pick, t1)));
	_mm256_storeu_ps(d + k * 8, _mm256_set1_ps(bd));
}

T512 static void prep_int_avx512(const rt_act *a, const float *x, size_t b)
{
	int8_t *q = a->q + b * a->nbp * RT_BLK;
	int32_t *s = a->s + b * a->nbp * 8;
	float *d = a->d + b * a->nbp * 8, *xs = a->xs + b * a->nbp * 8;
	const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22,
	                                     24, 26, 28, 30);
	const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));

	for (size_t k = 0; k < a->nbp; k += 2) {
		size_t e0 = k * RT_BLK, n = e0 < a->cols ? a->cols - e0 : 0;
		__m512 v[4];

		for (int i = 0; i < 4; i++) {
			size_t m = n > 16 * (size_t)i ? n - 16 * (size_t)i : 0;
			__mmask16 mk = m >= 16 ? 0xffff : (__mmask16)((1u << m) - 1);
			v[i] = _mm512_maskz_loadu_ps(mk, x + e0 + 16 * (size_t)i);
		}
		if (a->order) { /* block k: the even elements, k + 1: the odd ones */
			__m512 e1 = _mm512_permutex2var_ps(v[0], ev, v[1]);
			__m512 e2 = _mm512_permutex2var_ps(v[2], ev, v[3]);
			__m512 o1 = _mm512_permutex2var_ps(v[0], od, v[1]);
			__m512 o2 = _mm512_permutex2var_ps(v[2], od, v[3]);
			v[0] = e1;
			v[1] = e2;
			v[2] = o1;
			v[3] = o2;
		}
		block_512(a, k, v[0], v[1], q, s, d, xs);
		block_512(a, k + 1, v[2], v[3], q, s, d, xs);
	}
}

/* ---- AVX2: a pair of blocks as eight vectors ---------------------------- */

#define T256 __attribute__((target("avx2,fma")))

T256 static inline void block_256(const rt_act *a, size_t k, const __m256 *v, int8_t *q,
                                  int32_t *s, float *d, float *xs)
{
	const __m256 sgn = _mm256_set1_ps(-0.0f), lim = _mm256_set1_ps(FLT_MAX);
	__m256 m = _mm256_setzero_ps(), badv = _mm256_setzero_ps();
	float bd, id;

	for (int i = 0; i < 4; i++) {
		__m256 av = _mm256_andnot_ps(sgn, v[i]);
		badv = _mm256_or_ps(badv, _mm256_cmp_ps(av, lim, _CMP_NLE_UQ));
		m = _mm256_max_ps(m, av);
	}
	int bad = _mm256_movemask_ps(badv) != 0;
	__m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
	h = _mm_max_ps(h, _mm_movehl_ps(h, h));
	h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
	block_scale(bad ? 0.0f : _mm_cvtss_f32(h), &bd, &id);
	if (bad) {
		bd = NAN;
		id = 0.0f;
	}
	__m256 vid = _mm256_set1_ps(id);
	__m256i qi[4];
	for (int i = 0; i < 4; i++) {
		qi[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], vid));
		qi[i] = _mm256_max_epi32(_mm256_min_epi32(qi[i], _mm256_set1_epi32(127)),
		                         _mm256_set1_epi32(-127));
	}
	/* int32 -> int8 in order: packs interleave 128-bit halves, fix with a permute */
	__m256i w01 = _mm256_packs_epi32(qi[0], qi[1]), w23 = _mm256_packs_epi32(qi[2], qi[3]);
	__m256i bb = _mm256_packs_epi16(w01, w23);
	bb = _mm256_permutevar8x32_epi32(bb, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
	_mm256_storeu_si256((__m256i *)(void *)(q + k * RT_BLK), bb);
	__m256i sq = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), bb),
	                               _mm256_set1_epi16(1));
	sq = _mm256_mullo_epi32(sq, _mm256_set1_epi32(a->corr));
	_mm256_storeu_si256((__m256i *)(void *)(s + k * 8), sq);
	/* lane sums of x: (x0 + x1) + (x2 + x3), lanes 0 and 4 of each vector */
	__m256 t[4];
	for (int i = 0; i < 4; i++) {
		t[i] = _mm256_add_ps(v[i], _mm256_permute_ps(v[i], 0xb1));
		t[i] = _mm256_add_ps(t[i], _mm256_permute_ps(t[i], 0x4e));
	}
	__m256 u01 = _mm256_shuffle_ps(t[0], t[1], 0x00);
	__m256 u23 = _mm256_shuffle_ps(t[2], t[3], 0x00);
	__m256 u = _mm256_shuffle_ps(u01, u23, 0x88); /* t0[0] t1[0] t2[0] t3[0] | t0[4] .. t3[4] */
	u = _mm256_permutevar8x32_ps(u, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
	_mm256_storeu_ps(xs + k * 8, u);
	_mm256_storeu_ps(d + k * 8, _mm256_set1_ps(bd));
}

T256 static void prep_int_avx2(const rt_act *a, const float *x, size_t b)
{
	int8_t *q = a->q + b * a->nbp * RT_BLK;
	int32_t *s = a->s + b * a->nbp * 8;
	float *d = a->d + b * a->nbp * 8, *xs = a->xs + b * a->nbp * 8;
	const __m256i pe = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);

	for (size_t k = 0; k < a->nbp; k += 2) {
		size_t e0 = k * RT_BLK, n = e0 < a->cols ? a->cols - e0 : 0;
		float buf[2 * RT_BLK];
		const float *src = x + e0;
		__m256 v[8], u[8];

		if (n < 2 * RT_BLK) {
			memset(buf, 0, sizeof buf);
			memcpy(buf, x + e0, n * sizeof(float));
			src = buf;
		}
		for (int i = 0; i < 8; i++)
			v[i] = _mm256_loadu_ps(src + 8 * i);
		if (a->order) { /* block k: the even elements, k + 1: the odd ones */
			for (int i = 0; i < 8; i++)
				v[i] = _mm256_permutevar8x32_ps(v[i], pe); /* evens | odds of 8 */
			for (int j = 0; j < 4; j++) {
				u[j] = _mm256_permute2f128_ps(v[2 * j], v[2 * j + 1], 0x20);
				u[4 + j] = _mm256_permute2f128_ps(v[2 * j], v[2 * j + 1], 0x31);
			}
		} else {
			for (int i = 0; i < 8; i++)
				u[i] = v[i];
		}
		block_256(a, k, u, q, s, d, xs);
		block_256(a, k + 1, u + 4, q, s, d, xs);
	}
}

/* The per-block sums of s (integers: any order gives the same). */
static void block_sums(const rt_act *a, size_t b)
{
	const int32_t *s = a->s + b * a->nbp * 8;
	int32_t *sb = a->sb + b * a->nbp;

	for (size_t k = 0; k < a->nbp; k++) {
		int32_t t = 0;
		for (int j = 0; j < 8; j++)
			t += s[k * 8 + j];
		sb[k] = t;
	}
}

/* ---- driver ------------------------------------------------------------ */

typedef struct {
	const rt_act *a;
	const float *x;
	qtk_isa isa;
} prep_ctx;

static void prep_range(void *ctx, size_t b0, size_t b1, unsigned t)
{
	const prep_ctx *c = ctx;

	(void)t;
	for (size_t b = b0; b < b1; b++) {
		const float *xb = c->x + b * c->a->cols;
		if (c->a->path == QTK_RT_FLOAT) {
			prep_float(c->a, xb, b);
			continue;
		}
		if (c->isa == QTK_ISA_AVX512)
			prep_int_avx512(c->a, xb, b);
		else if (c->isa == QTK_ISA_AVX2)
			prep_int_avx2(c->a, xb, b);
		else
			prep_int_ref(c->a, xb, b);
		block_sums(c->a, b);
	}
}

void rt_act_free(rt_act *a)
{
	qtk_free(a->mem);
	memset(a, 0, sizeof *a);
}

qtk_err rt_act_prepare(rt_act *a, qtk_isa isa, qtk_rt_pool *pool, const float *x,
                       size_t batch, size_t cols, int order, int path, int corr)
{
	size_t nb = (cols + RT_BLK - 1) / RT_BLK, nbp = nb + (nb & 1), n, need;
	uint8_t *m;

	/* the caller checked batch * cols * sizeof(float) fits */
	n = batch * nbp;
	need = path == QTK_RT_FLOAT ? n * RT_BLK * 4 + 64 : n * (RT_BLK + 3 * 32 + 4) + 5 * 64;
	if (need > a->cap) {
		qtk_free(a->mem);
		a->cap = 0;
		a->mem = qtk_malloc(need);
		if (!a->mem)
			return QTK_E_NOMEM;
		a->cap = need;
	}
	m = (uint8_t *)a->mem + (64 - (uintptr_t)a->mem % 64) % 64;
	a->batch = batch;
	a->cols = cols;
	a->nb = nb;
	a->nbp = nbp;
	a->order = order;
	a->path = path;
	a->corr = corr;
	a->q = NULL;
	a->s = a->sb = NULL;
	a->d = a->xs = a->xf = NULL;
	if (path == QTK_RT_FLOAT) {
		a->xf = (float *)(void *)m;
	} else {
		a->s = (int32_t *)(void *)m;
		a->d = (float *)(void *)(m + n * 32);
		a->xs = (float *)(void *)(m + n * 64);
		a->q = (int8_t *)(m + n * 96);
		a->sb = (int32_t *)(void *)(m + n * 128);
	}
	prep_ctx c = { a, x, isa };
	qtk_rt_pool_run(batch > 1 ? pool : NULL, batch, prep_range, &c);
	return QTK_OK;
}
