/* quant: AVX2 and AVX-512 group kernels of the integer schemes (see
 * intq_kernels in quant_impl.h). Bit-identical to the scalar reference in
 * intq.c: the same f32 operations in the same order per element (separate
 * mul and add, no FMA), roundf rebuilt exactly from trunc, NF4 codes as the
 * count of midpoints below x, sums in 16 lanes (element j in lane j % 16)
 * folded by intq_fold16. Tails shorter than 16 run the scalar rule. */
#include <float.h>
#include <math.h>
#include <immintrin.h>
#include <string.h>

#include "acc_avx2.h"
#include "acc_avx512.h"
#include "quant_impl.h"

/* Calls body(M, ...) with the mode as a constant, so each mode's loop is
 * specialized (the bodies are always_inline). */
#define DISPATCH(body, m, ...)                                                   \
	switch (m) {                                                             \
	case QM_INT8: return body(QM_INT8, __VA_ARGS__);                         \
	case QM_INT4: return body(QM_INT4, __VA_ARGS__);                         \
	case QM_NF4: return body(QM_NF4, __VA_ARGS__);                           \
	case QM_AFF4: return body(QM_AFF4, __VA_ARGS__);                         \
	case QM_AFF8: return body(QM_AFF8, __VA_ARGS__);                         \
	case QM_MLX4: return body(QM_MLX4, __VA_ARGS__);                         \
	default: return body(QM_MLX8, __VA_ARGS__);                              \
	}

#define INL static inline __attribute__((always_inline))

static uint32_t fbits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

/* Scalar tail of the scan (the vector part's results folded in). */
static int scan_tail(const float *x, size_t j, size_t n, uint32_t ab, float lo,
                     float hi, float *amax, float *mn, float *mx)
{
	for (; j < n; j++) {
		uint32_t u = fbits(x[j]) & 0x7fffffffu;
		ab = u > ab ? u : ab;
		lo = x[j] < lo ? x[j] : lo;
		hi = x[j] > hi ? x[j] : hi;
	}
	if (ab >= 0x7f800000u) /* Inf or NaN somewhere */
		return 0;
	memcpy(amax, &ab, 4);
	*mn = lo;
	*mx = hi;
	return 1;
}

static size_t first_abs_tail(const float *x, size_t j, size_t n, float a)
{
	while (j + 1 < n && fabsf(x[j]) != a)
		j++;
	return j;
}

/* Store 16 code bytes (values of intq_code1) at element j of a group. */
static void store16(int m, __m128i b, uint8_t *codes, size_t j)
{
	if (QM_8BIT(m)) {
		_mm_storeu_si128((__m128i *)(codes + j), b);
		return;
	}
	/* 16-bit lane i = c[2i] | c[2i+1] << 8 -> c[2i] | c[2i+1] << 4 */
	__m128i w = _mm_or_si128(b, _mm_srli_epi16(b, 4));
	w = _mm_and_si128(w, _mm_set1_epi16(0xff));
	_mm_storel_epi64((__m128i *)(codes + j / 2), _mm_packus_epi16(w, w));
}

/* 16 code bytes at element j (8-bit: as stored; 4-bit: unpacked). */
static __m128i load16(int m, const uint8_t *codes, size_t j)
{
	if (QM_8BIT(m))
		return _mm_loadu_si128((const __m128i *)(codes + j));
	__m128i b = _mm_loadl_epi64((const __m128i *)(codes + j / 2));
	__m128i lo = _mm_and_si128(b, _mm_set1_epi8(15));
	__m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(15));
	return _mm_unpacklo_epi8(lo, hi);
}

/* ===================================================================== */
/* AVX-512 (F, BW, DQ, VL)                                                */
/* ===================================================================== */

#define T512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
/* with F16C for the scalar f16 scale store */
#define T512H __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,f16c")))

T512 static int scan_512(const float *x, size_t n, float *amax, float *mn, float *mx)
{
	__m512i ab = _mm512_setzero_si512(), msk = _mm512_set1_epi32(0x7fffffff);
	__m512 lo = _mm512_set1_ps(FLT_MAX), hi = _mm512_set1_ps(-FLT_MAX);
	size_t j = 0;

	for (; j + 16 <= n; j += 16) {
		__m512 v = _mm512_loadu_ps(x + j);
		ab = _mm512_max_epu32(ab, _mm512_and_si512(_mm512_castps_si512(v), msk));
		lo = _mm512_min_ps(lo, v);
		hi = _mm512_max_ps(hi, v);
	}
	return scan_tail(x, j, n, _mm512_reduce_max_epu32(ab), _mm512_reduce_min_ps(lo),
	                 _mm512_reduce_max_ps(hi), amax, mn, mx);
}

T512 static size_t first_abs_512(const float *x, size_t n, float a)
{
	__m512i t = _mm512_set1_epi32((int)fbits(a)), msk = _mm512_set1_epi32(0x7fffffff);
	size_t j = 0;

	for (; j + 16 <= n; j += 16) {
		__m512i v = _mm512_and_si512(_mm512_loadu_si512(x + j), msk);
		__mmask16 k = _mm512_cmpeq_epi32_mask(v, t);
		if (k)
			return j + (size_t)__builtin_ctz(k);
	}
	return first_abs_tail(x, j, n, a);
}

/* Codes of 16 elements as int32 (intq_code1, lane by lane). */
T512 INL __m512i code16_512(const int m, __m512 x, __m512 p, __m512 b)
{
	__m512 v, lim = _mm512_set1_ps(QM_LEVELS(m)), zero = _mm512_setzero_ps();

	switch (m) {
	case QM_INT8: {
		/* roundf(y) = trunc(y + copysign(0.5 - 2^-25, y)) (code8r_256),
		 * clamped before the trunc */
		__m512 y = _mm512_mul_ps(x, p);
		v = _mm512_add_ps(y, _mm512_or_ps(_mm512_and_ps(y, _mm512_set1_ps(-0.0f)),
		                                  _mm512_set1_ps(0x1.fffffep-2f)));
		v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
		return _mm512_cvttps_epi32(v);
	}
	case QM_INT4:
		v = _mm512_add_ps(_mm512_mul_ps(x, p), _mm512_set1_ps(8.5f));
		break;
	case QM_NF4: {
		/* binary search over the 15 midpoints = their count below y */
		__m512 y = _mm512_mul_ps(x, p);
		__m512 mids = _mm512_loadu_ps(intq_nf4_mid);
		__m512i lo = _mm512_setzero_si512();
#define NF4_STEP(step)                                                           \
	lo = _mm512_mask_add_epi32(                                              \
		lo,                                                              \
		_mm512_cmp_ps_mask(y, _mm512_permutexvar_ps(_mm512_add_epi32(    \
			lo, _mm512_set1_epi32(step - 1)), mids), _CMP_GT_OQ),    \
		lo, _mm512_set1_epi32(step))
		NF4_STEP(8);
		NF4_STEP(4);
		NF4_STEP(2);
		NF4_STEP(1);
#undef NF4_STEP
		return lo;
	}
	case QM_AFF4:
	case QM_AFF8:
		v = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(x, b), p), _mm512_set1_ps(0.5f));
		break;
	default: /* MLX: rint of a true division */
		v = _mm512_roundscale_ps(_mm512_div_ps(_mm512_sub_ps(x, b), p),
		                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
		break;
	}
	v = _mm512_min_ps(_mm512_max_ps(v, zero), lim);
	return _mm512_cvttps_epi32(v);
}

/* The value a code stands for (intq_val1), from int32 codes. */
T512 INL __m512 val16_512(const int m, __m512i q)
{
	if (m == QM_NF4)
		return _mm512_permutexvar_ps(q, _mm512_loadu_ps(intq_nf4_values));
	if (m == QM_INT4)
		q = _mm512_sub_epi32(q, _mm512_set1_epi32(8));
	return _mm512_cvtepi32_ps(q);
}

T512 INL __m512i unpack16_512(const int m, const uint8_t *codes, size_t j)
{
	__m128i b = load16(m, codes, j);
	return m == QM_INT8 ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
}

/* Store 16 codes given as int32 lanes (values of intq_code1) at element
 * j: bytes, or for 4 bits lanes 2i, 2i+1 (< 16) as byte i = low | high << 4. */
T512 INL void store_q512(const int m, __m512i q, uint8_t *codes, size_t j)
{
	if (QM_8BIT(m)) {
		_mm_storeu_si128((__m128i *)(codes + j), _mm512_cvtepi32_epi8(q));
		return;
	}
	_mm_storel_epi64((__m128i *)(codes + j / 2),
	                 _mm512_cvtepi64_epi8(_mm512_or_si512(q, _mm512_srli_epi64(q, 28))));
}

T512 INL void encode_b512(const int m, const float *x, size_t n, float p, float b,
                          uint8_t *codes)
{
	__m512 vp = _mm512_set1_ps(p), vb = _mm512_set1_ps(b);
	size_t j = 0;

	for (; j + 16 <= n; j += 16) {
		store_q512(m, code16_512(m, _mm512_loadu_ps(x + j), vp, vb), codes, j);
	}
	for (; j < n; j += QM_8BIT(m) ? 1 : 2) {
		unsigned lo = intq_code1(m, x[j], p, b);
		if (QM_8BIT(m))
			codes[j] = (uint8_t)lo;
		else
			codes[j / 2] = (uint8_t)(lo | (j + 1 < n ? intq_code1(m, x[j + 1], p, b) : 0) << 4);
	}
}

T512 static void encode_512(int m, const float *x, size_t n, float p, float b,
                            uint8_t *codes)
{
	DISPATCH(encode_b512, m, x, n, p, b, codes)
}

T512 INL float sqerr1_512(const int m, const float *x, const float *imp, size_t n,
                          float p, float b, float d, float db)
{
	__m512 vp = _mm512_set1_ps(p), vb = _mm512_set1_ps(b), vd = _mm512_set1_ps(d);
	__m512 vdb = _mm512_set1_ps(db), acc = _mm512_setzero_ps();
	float lane[16];
	size_t j = 0;

	for (; j + 16 <= n; j += 16) {
		__m512 xv = _mm512_loadu_ps(x + j);
		__m512 w = _mm512_mul_ps(val16_512(m, code16_512(m, xv, vp, vb)), vd);
		if (QM_AFFINE(m))
			w = _mm512_add_ps(w, vdb);
		__m512 e = _mm512_sub_ps(xv, w);
		e = _mm512_mul_ps(e, e);
		if (imp)
			e = _mm512_mul_ps(e, _mm512_loadu_ps(imp + j));
		acc = _mm512_add_ps(acc, e);
	}
	if (j == n) { /* intq_fold16 in registers: l[i] + l[i + k], k = 8, 4, 2, 1 */
		__m256 a = _mm256_add_ps(_mm512_castps512_ps256(acc),
		                         _mm512_extractf32x8_ps(acc, 1));
		__m128 q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
		q = _mm_add_ps(q, _mm_movehl_ps(q, q));
		return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
	}
	_mm512_storeu_ps(lane, acc);
	intq_sqerr_tail(m, x, imp, j, n, p, b, d, db, lane);
	return intq_fold16(lane);
}

T512 INL void sqerr_b512(const int m, const float *x, const float *imp, size_t n,
                         size_t nc, const float *p, const float *b, const float *d,
                         const float *db, float *e)
{
	for (size_t k = 0; k < nc; k++)
		e[k] = sqerr1_512(m, x, imp, n, p[k], b[k], d[k], db[k]);
}

T512 static void sqerr_512(int m, const float *x, const float *imp, size_t n, size_t nc,
                           const float *p, const float *b, const float *d,
                           const float *db, float *e)
{
	DISPATCH(sqerr_b512, m, x, imp, n, nc, p, b, d, db, e)
}

T512 INL void deq_b512(const int m, const uint8_t *codes, size_t n, float d, float b,
                       float *out)
{
	__m512 vd = _mm512_set1_ps(d), vb = _mm512_set1_ps(b);
	size_t j = 0;

	for (; j + 16 <= n; j += 16) {
		__m512 w = _mm512_mul_ps(val16_512(m, unpack16_512(m, codes, j)), vd);
		if (QM_AFFINE(m))
			w = _mm512_add_ps(w, vb);
		_mm512_storeu_ps(out + j, w);
	}
	for (; j < n; j++) {
		float w = intq_val1(m, intq_get_code(m, codes, j)) * d;
		out[j] = QM_AFFINE(m) ? w + b : w;
	}
}

T512 static void deq_512(int m, const uint8_t *codes, size_t n, float d, float b,
                         float *out)
{
	DISPATCH(deq_b512, m, codes, n, d, b, out)
}

T512 INL float dot_b512(const int m, const uint8_t *codes, size_t n, float d, float b,
                        const float *x)
{
	__m512 s = _mm512_setzero_ps(), sx = _mm512_setzero_ps();
	float ls[16], lx[16];
	size_t j = 0;

	for (; j + 16 <= n; j += 16) {
		__m512 xv = _mm512_loadu_ps(x + j);
		s = _mm512_add_ps(s, _mm512_mul_ps(val16_512(m, unpack16_512(m, codes, j)), xv));
		if (QM_AFFINE(m))
			sx = _mm512_add_ps(sx, xv);
	}
	_mm512_storeu_ps(ls, s);
	_mm512_storeu_ps(lx, sx);
	intq_dot_tail(m, codes, j, n, x, ls, lx);
	return intq_dot_fold(m, ls, lx, d, b);
}

T512 static float dot_512(int m, const uint8_t *codes, size_t n, float d, float b,
                          const float *x)
{
	DISPATCH(dot_b512, m, codes, n, d, b, x)
}

/* intq_fold16 of 16 lanes in registers: l[i] + l[i + k], k = 8, 4, 2, 1 */
T512 INL float fold16_512(__m512 acc)
{
	__m256 a = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
	__m128 q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
	q = _mm_add_ps(q, _mm_movehl_ps(q, q));
	return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
}

T512 INL void fitsums_b512(const int m, const float *x, const float *imp, size_t n, float p,
                           float b, float *s)
{
	__m512 vp = _mm512_set1_ps(p), vb = _mm512_set1_ps(b), one = _mm512_set1_ps(1.0f);
	__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0;
	float l[5][16];
	size_t j = 0;

	for (; j + 16 <= n; j += 16) {
		__m512 xv = _mm512_loadu_ps(x + j);
		__m512 v = val16_512(m, code16_512(m, xv, vp, vb));
		__m512 w = imp ? _mm512_loadu_ps(imp + j) : one;
		__m512 wv = _mm512_mul_ps(w, v);
		a0 = _mm512_add_ps(a0, w);
		a1 = _mm512_add_ps(a1, wv);
		a2 = _mm512_add_ps(a2, _mm512_mul_ps(wv, v));
		a3 = _mm512_add_ps(a3, _mm512_mul_ps(w, xv));
		a4 = _mm512_add_ps(a4, _mm512_mul_ps(wv, xv));
	}
	if (j == n) { /* intq_fold16 in registers, as sqerr1_512 */
		s[0] = fold16_512(a0);
		s[1] = fold16_512(a1);
		s[2] = fold16_512(a2);
		s[3] = fold16_512(a3);
		s[4] = fold16_512(a4);
		return;
	}
	_mm512_storeu_ps(l[0], a0);
	_mm512_storeu_ps(l[1], a1);
	_mm512_storeu_ps(l[2], a2);
	_mm512_storeu_ps(l[3], a3);
	_mm512_storeu_ps(l[4], a4);
	intq_fitsums_tail(m, x, imp, j, n, p, b, l);
	for (int k = 0; k < 5; k++)
		s[k] = intq_fold16(l[k]);
}

T512 static void fitsums_512(int m, const float *x, const float *imp, size_t n, float p,
                             float b, float *s)
{
	DISPATCH(fitsums_b512, m, x, imp, n, p, b, s)
}

/* The codes of a group from p, and (M) its error sums against the values
 * dequantize gives: val(q) * sd. */
T512H INL void emit_512(const int m, const int acc, const float *x, size_t n, float p,
                        float sd, uint8_t *codes, met512 *M)
{
	for (size_t j = 0; j < n; j += 16) {
		__m512 xv = _mm512_loadu_ps(x + j);
		__m512i q = code16_512(m, xv, _mm512_set1_ps(p), _mm512_setzero_ps());
		store_q512(m, q, codes, j);
		if (acc)
			met_vec(M, xv, _mm512_mul_ps(val16_512(m, q), _mm512_set1_ps(sd)));
	}
}

/* The RTN scale d of a group (quant_group's rule for int8, int4, nf4), or
 * 0 when the group needs the group path: non-finite or all below FLT_MIN.
 * An int4 min/max tie is settled as there: the first of the two decides. */
T512H INL float rtn_scale_512(const int m, const float *x, size_t n)
{
	__m512i ab = _mm512_setzero_si512(), msk = _mm512_set1_epi32(0x7fffffff);
	__m512 lo = _mm512_set1_ps(FLT_MAX), hi = _mm512_set1_ps(-FLT_MAX);
	__m512 inf = _mm512_set1_ps(INFINITY);
	__mmask16 bad = 0;
	uint32_t abits;
	float amax, mn, mx;

	if (m == QM_INT4) {
		/* min and max (two reductions); NaN or Inf found by a mask */
		for (size_t j = 0; j < n; j += 16) {
			__m512 v = _mm512_loadu_ps(x + j);
			bad |= _mm512_cmp_ps_mask(_mm512_abs_ps(v), inf, _CMP_NLT_UQ);
			lo = _mm512_min_ps(lo, v);
			hi = _mm512_max_ps(hi, v);
		}
		if (bad)
			return 0.0f;
		mn = _mm512_reduce_min_ps(lo);
		mx = _mm512_reduce_max_ps(hi);
		amax = -mn > mx ? -mn : mx;
		if (amax < FLT_MIN)
			return 0.0f; /* zero or tiny */
		if (-mn == mx) /* a tie: the first of the two in the group decides */
			return x[first_abs_512(x, n, amax)] * -0.125f;
		return intq_q4_edge(mn, mx) * -0.125f;
	}
	/* int8, nf4: the largest magnitude (its bits: Inf and NaN are above) */
	for (size_t j = 0; j < n; j += 16)
		ab = _mm512_max_epu32(ab, _mm512_and_si512(_mm512_loadu_si512(x + j), msk));
	abits = _mm512_reduce_max_epu32(ab);
	if (abits >= 0x7f800000u || abits < 0x00800000u)
		return 0.0f;
	memcpy(&amax, &abits, 4);
	return m == QM_INT8 ? amax / 127.0f : amax;
}

/* One group of rtn_row (see quant_impl.h): the scale, its f16 store and
 * the codes without leaving registers or calling out, so the groups'
 * dependency chains overlap in the out-of-order core. */
T512H INL int rtn_group_512(const int m, const int acc, const float *x, size_t n, uint16_t *sc,
                            uint8_t *codes, met512 *M)
{
	float d = rtn_scale_512(m, x, n), id, sd;
	unsigned short h;

	if (d == 0.0f)
		return 0;
	id = 1.0f / d;
	h = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
	sd = _cvtsh_ss(h);
	if (sd == 0.0f || !(fabsf(sd) <= FLT_MAX) || !(fabsf(id) <= FLT_MAX))
		return 0;
	memcpy(sc, &h, 2);
	emit_512(m, acc, x, n, id, sd, codes, M);
	return 1;
}

/* One group of search_row: search_group's symmetric candidates
 * td_k = d * r_k, codes from p_k = 1/td_k, errors with the f16-stored
 * scale (sqerr1_512: the same lanes and fold), the first strictly best. */
T512H INL int search_group_512(const int m, const int acc, const float *x, size_t n, const float *imp,
                               uint16_t *sc, uint8_t *codes, met512 *M)
{
	float d = rtn_scale_512(m, x, n), p[16], sd[16], e[INTQ_NRATIO];
	__m512 vr, vt, vp, vs;
	__m256i h;
	__mmask16 live = (__mmask16)((1u << INTQ_NRATIO) - 1);
	size_t w = 0;

	if (d == 0.0f)
		return 0;
	/* td_0 = d, td_k = d * r_k; every stored scale an ordinary f16 */
	vr = _mm512_maskz_loadu_ps(live, intq_ratios_of(m));
	vt = _mm512_mask_mul_ps(_mm512_setzero_ps(), live & (__mmask16)~1u, _mm512_set1_ps(d), vr);
	vt = _mm512_mask_mov_ps(vt, 1, _mm512_set1_ps(d));
	vp = _mm512_div_ps(_mm512_set1_ps(1.0f), vt);
	h = _mm512_cvtps_ph(vt, _MM_FROUND_TO_NEAREST_INT);
	vs = _mm512_cvtph_ps(h);
	if (_mm512_mask_cmp_ps_mask(live, _mm512_abs_ps(vs), _mm512_set1_ps(FLT_MAX), _CMP_GT_OQ) ||
	    _mm512_mask_cmp_ps_mask(live, vs, _mm512_setzero_ps(), _CMP_EQ_OQ) ||
	    _mm512_mask_cmp_ps_mask(live, _mm512_abs_ps(vp), _mm512_set1_ps(FLT_MAX), _CMP_GT_OQ))
		return 0;
	_mm512_storeu_ps(p, vp);
	_mm512_storeu_ps(sd, vs);
	for (size_t k = 0; k < INTQ_NRATIO; k++)
		e[k] = sqerr1_512(m, x, imp, n, p[k], 0.0f, sd[k], 0.0f);
	for (size_t k = 1; k < INTQ_NRATIO; k++)
		if (e[k] < e[w])
			w = k;
	{
		float td[16], t, b = 0.0f, zb[INTQ_NRATIO] = { 0 };
		uint16_t hs[16];
		_mm512_storeu_ps(td, vt);
		_mm256_storeu_si256((__m256i *)hs, h);
		intq_refine(&intq_k_avx512, m, QTK_DT_F16, x, imp, n, INTQ_NRATIO, td, zb, e, &t, &b);
		if (t != td[w]) { /* a refit won: its scale, checked as above */
			unsigned short hh = _cvtss_sh(t, _MM_FROUND_TO_NEAREST_INT);
			p[w] = 1.0f / t;
			sd[w] = _cvtsh_ss(hh);
			hs[w] = hh;
			if (sd[w] == 0.0f || !(fabsf(sd[w]) <= FLT_MAX) || !(fabsf(p[w]) <= FLT_MAX))
				return 0;
		}
		memcpy(sc, &hs[w], 2);
	}
	emit_512(m, acc, x, n, p[w], sd[w], codes, M);
	return 1;
}

T512H INL int search_row_b512(const int m, const int acc, const float *x, size_t cols, size_t gl,
                              const float *imp, uint16_t *scales, uint8_t *codes,
                              acc_lanes *A)
{
	met512 M;

	met_init(&M);
	for (size_t g = 0, i0 = 0; i0 < cols; g++, i0 += gl)
		if (!search_group_512(m, acc, x + i0, gl, intq_imp(imp ? imp + i0 : NULL, gl),
		                      scales + g,
		                      codes + (QM_8BIT(m) ? i0 : i0 / 2), &M))
			return 0;
	if (acc)
		met_store(&M, A);
	return 1;
}

T512H static int search_row_512(int m, const float *x, size_t cols, size_t gl,
                                const float *imp, uint16_t *scales, uint8_t *codes,
                                acc_lanes *A)
{
	switch (m) {
	case QM_INT8: return A ? search_row_b512(QM_INT8, 1, x, cols, gl, imp, scales, codes, A)
	                       : search_row_b512(QM_INT8, 0, x, cols, gl, imp, scales, codes, A);
	case QM_INT4: return A ? search_row_b512(QM_INT4, 1, x, cols, gl, imp, scales, codes, A)
	                       : search_row_b512(QM_INT4, 0, x, cols, gl, imp, scales, codes, A);
	case QM_NF4: return A ? search_row_b512(QM_NF4, 1, x, cols, gl, imp, scales, codes, A)
	                      : search_row_b512(QM_NF4, 0, x, cols, gl, imp, scales, codes, A);
	default: return 0;
	}
}

/* op k of the 16-group reduction: 0 min, 1 max (f32), 2 max (u32 bits) */
T512 INL __m512 red_op(const int k, __m512 a, __m512 b)
{
	if (k == 0)
		return _mm512_min_ps(a, b);
	if (k == 1)
		return _mm512_max_ps(a, b);
	return _mm512_castsi512_ps(_mm512_max_epu32(_mm512_castps_si512(a), _mm512_castps_si512(b)));
}

/* Lane g of the result: op over the 16 lanes of v[g] (v is clobbered). A
 * transpose by halves: v[2i], v[2i+1] share a vector after the first step
 * (256-bit halves), four groups after the second (128-bit quarters), and
 * so on; then lane 4q + j holds group 4j + q, which the last permute
 * undoes. min and max do not depend on order (NaN is found apart). */
T512 INL __m512 red16_512(const int k, __m512 *v)
{
	const __m512i tr = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);

	for (int i = 0; i < 8; i++)
		v[i] = red_op(k, _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
		              _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xee));
	for (int i = 0; i < 4; i++)
		v[i] = red_op(k, _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x88),
		              _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xdd));
	for (int i = 0; i < 2; i++)
		v[i] = red_op(k, _mm512_shuffle_ps(v[2 * i], v[2 * i + 1], 0x44),
		              _mm512_shuffle_ps(v[2 * i], v[2 * i + 1], 0xee));
	v[0] = red_op(k, _mm512_shuffle_ps(v[0], v[1], 0x88), _mm512_shuffle_ps(v[0], v[1], 0xdd));
	return _mm512_permutexvar_ps(tr, v[0]);
}

/* rtn_group_512 on 16 groups of gl at once: the scale rule runs on a
 * vector of 16 groups (one reduction for all of them, no per-group
 * branch), then the codes and error sums group by group. 0 when any of
 * the 16 needs the group path. */
T512H INL int rtn_block_512(const int m, const int acc, const float *x, size_t gl, uint16_t *sc,
                            uint8_t *codes, met512 *M)
{
	__m512 a[16], b[16], d, id, sd, amax, inf = _mm512_set1_ps(INFINITY);
	__m512 fmax = _mm512_set1_ps(FLT_MAX);
	__m256i h;
	__mmask16 bad = 0;
	float pv[16], dv[16];

	if (m == QM_INT4) {
		/* per group min and max; NaN apart (min/max would drop it) */
		for (int g = 0; g < 16; g++) {
			const float *xg = x + (size_t)g * gl;
			__m512 lo = _mm512_loadu_ps(xg), hi = lo;
			bad |= _mm512_cmp_ps_mask(lo, lo, _CMP_UNORD_Q);
			for (size_t j = 16; j < gl; j += 16) {
				__m512 v = _mm512_loadu_ps(xg + j);
				bad |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
				lo = _mm512_min_ps(lo, v);
				hi = _mm512_max_ps(hi, v);
			}
			a[g] = lo;
			b[g] = hi;
		}
		__m512 mn = red16_512(0, a), mx = red16_512(1, b);
		__m512 nmn = _mm512_sub_ps(_mm512_setzero_ps(), mn);
		/* intq_q4_edge: of min and max the one of larger magnitude;
		 * Inf (it is the min or the max), zero or tiny: the group path */
		__mmask16 lo_wins = _mm512_cmp_ps_mask(nmn, mx, _CMP_GT_OQ), tie;
		__m512 edge = _mm512_mask_blend_ps(lo_wins, mx, mn);
		amax = _mm512_mask_blend_ps(lo_wins, mx, nmn);
		bad = (__mmask16)(bad | _mm512_cmp_ps_mask(amax, inf, _CMP_NLT_UQ) |
		                  _mm512_cmp_ps_mask(amax, _mm512_set1_ps(FLT_MIN), _CMP_LT_OQ));
		tie = (__mmask16)(_mm512_cmp_ps_mask(nmn, mx, _CMP_EQ_OQ) & ~bad);
		if (tie) { /* -min = max: the first of the two in the group decides */
			_mm512_storeu_ps(pv, amax);
			_mm512_storeu_ps(dv, edge);
			for (unsigned t = tie; t; t &= t - 1) {
				size_t g = (size_t)__builtin_ctz(t);
				dv[g] = x[g * gl + first_abs_512(x + g * gl, gl, pv[g])];
			}
			edge = _mm512_loadu_ps(dv);
		}
		d = _mm512_mul_ps(edge, _mm512_set1_ps(-0.125f));
	} else {
		/* int8, nf4: the largest magnitude's bits (Inf and NaN above) */
		const __m512i msk = _mm512_set1_epi32(0x7fffffff);
		for (int g = 0; g < 16; g++) {
			const float *xg = x + (size_t)g * gl;
			__m512i ab = _mm512_and_si512(_mm512_loadu_si512(xg), msk);
			for (size_t j = 16; j < gl; j += 16)
				ab = _mm512_max_epu32(ab, _mm512_and_si512(_mm512_loadu_si512(xg + j), msk));
			a[g] = _mm512_castsi512_ps(ab);
		}
		__m512i ab = _mm512_castps_si512(red16_512(2, a));
		bad = (__mmask16)(_mm512_cmpge_epu32_mask(ab, _mm512_set1_epi32(0x7f800000)) |
		                  _mm512_cmplt_epu32_mask(ab, _mm512_set1_epi32(0x00800000)));
		amax = _mm512_castsi512_ps(ab);
		d = m == QM_INT8 ? _mm512_div_ps(amax, _mm512_set1_ps(127.0f)) : amax;
	}
	id = _mm512_div_ps(_mm512_set1_ps(1.0f), d);
	h = _mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT);
	sd = _mm512_cvtph_ps(h);
	bad = (__mmask16)(bad | _mm512_cmp_ps_mask(sd, _mm512_setzero_ps(), _CMP_EQ_OQ) |
	                  _mm512_cmp_ps_mask(_mm512_abs_ps(sd), fmax, _CMP_NLE_UQ) |
	                  _mm512_cmp_ps_mask(_mm512_abs_ps(id), fmax, _CMP_NLE_UQ));
	if (bad)
		return 0;
	_mm256_storeu_si256((__m256i *)sc, h);
	_mm512_storeu_ps(pv, id);
	_mm512_storeu_ps(dv, sd);
	for (size_t g = 0; g < 16; g++)
		emit_512(m, acc, x + g * gl, gl, pv[g], dv[g],
		         codes + (QM_8BIT(m) ? g * gl : g * gl / 2), M);
	return 1;
}

T512H INL int rtn_row_b512(const int m, const int acc, const float *x, size_t cols, size_t gl,
                           uint16_t *scales, uint8_t *codes, acc_lanes *A)
{
	met512 M;
	size_t g = 0, i0 = 0;

	met_init(&M);
	for (; i0 + 16 * gl <= cols; g += 16, i0 += 16 * gl)
		if (!rtn_block_512(m, acc, x + i0, gl, scales + g, codes + (QM_8BIT(m) ? i0 : i0 / 2),
		                   &M))
			return 0;
	for (; i0 < cols; g++, i0 += gl)
		if (!rtn_group_512(m, acc, x + i0, gl, scales + g, codes + (QM_8BIT(m) ? i0 : i0 / 2),
		                   &M))
			return 0;
	if (acc)
		met_store(&M, A);
	return 1;
}

T512H static int rtn_row_512(int m, const float *x, size_t cols, size_t gl,
                             uint16_t *scales, uint8_t *codes, acc_lanes *A)
{
	switch (m) {
	case QM_INT8: return A ? rtn_row_b512(QM_INT8, 1, x, cols, gl, scales, codes, A)
	                       : rtn_row_b512(QM_INT8, 0, x, cols, gl, scales, codes, A);
	case QM_INT4: return A ? rtn_row_b512(QM_INT4, 1, x, cols, gl, scales, codes, A)
	                       : rtn_row_b512(QM_INT4, 0, x, cols, gl, scales, codes, A);
	case QM_NF4: return A ? rtn_row_b512(QM_NF4, 1, x, cols, gl, scales, codes, A)
	                      : rtn_row_b512(QM_NF4, 0, x, cols, gl, scales, codes, A);
	default: return 0;
	}
}

const intq_kernels intq_k_avx512 = {
	scan_512, first_abs_512, encode_512, sqerr_512, deq_512, dot_512, rtn_row_512,
	search_row_512, fitsums_512,
};

/* ===================================================================== */
/* AVX2: 16 elements as two 8-lane halves (lanes 0-7 and 8-15)            */
/* ===================================================================== */

#define T256 __attribute__((target("avx2")))

T256 INL float hmin8(__m256 v)
{
	__m128 a = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	a = _mm_min_ps(a, _mm_movehl_ps(a, a));
	a = _mm_min_ss(a, _mm_shuffle_ps(a, a, 1));
	return _mm_cvtss_f32(a);
}

T256 INL float hmax8(__m256 v)
{
	__m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	a = _mm_max_ps(a, _mm_movehl_ps(a, a));
	a = _mm_max_ss(a, _mm_shuffle_ps(a, a, 1));
	return _mm_cvtss_f32(a);
}

T256 static int scan_256(const float *x, size_t n, float *amax, float *mn, float *mx)
{
	__m256i ab = _mm256_setzero_si256(), msk = _mm256_set1_epi32(0x7fffffff);
	__m256 lo = _mm256_set1_ps(FLT_MAX), hi = _mm256_set1_ps(-FLT_MAX);
	uint32_t t[8], m = 0;
	size_t j = 0;

	for (; j + 8 <= n; j += 8) {
		__m256 v = _mm256_loadu_ps(x + j);
		ab = _mm256_max_epu32(ab, _mm256_and_si256(_mm256_castps_si256(v), msk));
		lo = _mm256_min_ps(lo, v);
		hi = _mm256_max_ps(hi, v);
	}
	_mm256_storeu_si256((__m256i *)t, ab);
	for (int i = 0; i < 8; i++)
		m = t[i] > m ? t[i] : m;
	return scan_tail(x, j, n, m, hmin8(lo), hmax8(hi), amax, mn, mx);
}

T256 static size_t first_abs_256(const float *x, size_t n, float a)
{
	__m256i t = _mm256_set1_epi32((int)fbits(a)), msk = _mm256_set1_epi32(0x7fffffff);
	size_t j = 0;

	for (; j + 8 <= n; j += 8) {
		__m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + j)), msk);
		int k = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(v, t)));
		if (k)
			return j + (size_t)__builtin_ctz((unsigned)k);
	}
	return first_abs_tail(x, j, n, a);
}

/* NF4 codes of y (= x * p) as int32, and in *hi the lanes whose code is 8
 * or more: qtk_q_nf4_code's binary search over the midpoints (their count
 * below y), against mid[7], then mid[3] or mid[11], then mid[lo + 1] of
 * lo = 0, 4, 8, 12, then mid[lo] of even lo. */
T256 INL __m256i nf4_code8(__m256 y, __m256 *hi)
{
	const float *md = intq_nf4_mid;
	__m256 gt = _mm256_cmp_ps(y, _mm256_set1_ps(md[7]), _CMP_GT_OQ), t;
	__m256i lo = _mm256_and_si256(_mm256_castps_si256(gt), _mm256_set1_epi32(8));

	*hi = gt;
	t = _mm256_blendv_ps(_mm256_set1_ps(md[3]), _mm256_set1_ps(md[11]), gt);
	gt = _mm256_cmp_ps(y, t, _CMP_GT_OQ);
	lo = _mm256_add_epi32(lo, _mm256_and_si256(_mm256_castps_si256(gt), _mm256_set1_epi32(4)));
	t = _mm256_permutevar8x32_ps(_mm256_setr_ps(md[1], md[5], md[9], md[13], 0, 0, 0, 0),
	                             _mm256_srli_epi32(lo, 2));
	gt = _mm256_cmp_ps(y, t, _CMP_GT_OQ);
	lo = _mm256_add_epi32(lo, _mm256_and_si256(_mm256_castps_si256(gt), _mm256_set1_epi32(2)));
	t = _mm256_permutevar8x32_ps(_mm256_setr_ps(md[0], md[2], md[4], md[6], md[8], md[10],
	                                            md[12], md[14]),
	                             _mm256_srli_epi32(lo, 1));
	gt = _mm256_cmp_ps(y, t, _CMP_GT_OQ);
	return _mm256_sub_epi32(lo, _mm256_castps_si256(gt));
}

/* Codes of 8 elements as int32 (intq_code1, lane by lane). rtn: p is the
 * reciprocal of the group's RTN scale, so |x*p| <= 8 (int4) or 127 (int8)
 * up to rounding, and the clamps that cannot bind are left out. */
T256 INL __m256i code8r_256(const int m, const int rtn, __m256 x, __m256 p, __m256 b)
{
	__m256 v, lim = _mm256_set1_ps(QM_LEVELS(m)), zero = _mm256_setzero_ps();

	switch (m) {
	case QM_INT8: {
		/* roundf(y) = trunc(y + copysign(0.5 - 2^-25, y)) for every
		 * finite y: the sum rounds up to the next integer exactly when
		 * |frac(y)| >= 0.5 (0.5 itself by the tie to even) */
		__m256 y = _mm256_mul_ps(x, p);
		__m256 h = _mm256_or_ps(_mm256_and_ps(y, _mm256_set1_ps(-0.0f)),
		                        _mm256_set1_ps(0x1.fffffep-2f));
		v = _mm256_add_ps(y, h);
		if (!rtn) /* clamp, then trunc = trunc, then clamp */
			v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.0f)),
			                  _mm256_set1_ps(127.0f));
		return _mm256_cvttps_epi32(v);
	}
	case QM_INT4:
		v = _mm256_add_ps(_mm256_mul_ps(x, p), _mm256_set1_ps(8.5f));
		if (!rtn) /* RTN: v >= 0.5 up to rounding */
			v = _mm256_max_ps(v, zero);
		return _mm256_cvttps_epi32(_mm256_min_ps(v, lim));
	case QM_NF4: {
		__m256 hi;
		return nf4_code8(_mm256_mul_ps(x, p), &hi);
	}
	case QM_AFF4:
	case QM_AFF8:
		v = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(x, b), p), _mm256_set1_ps(0.5f));
		break;
	default:
		v = _mm256_round_ps(_mm256_div_ps(_mm256_sub_ps(x, b), p),
		                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
		break;
	}
	v = _mm256_min_ps(_mm256_max_ps(v, zero), lim);
	return _mm256_cvttps_epi32(v);
}

T256 INL __m256i code8_256(const int m, __m256 x, __m256 p, __m256 b)
{
	return code8r_256(m, 0, x, p, b);
}

T256 INL __m256 val8_256(const int m, __m256i q)
{
	if (m == QM_NF4) {
		const float *t = intq_nf4_values;
		__m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(t), q);
		__m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(t + 8), q);
		/* bit 3 of the code picks the upper half */
		return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(q, 28)));
	}
	if (m == QM_INT4)
		q = _mm256_sub_epi32(q, _mm256_set1_epi32(8));
	return _mm256_cvtepi32_ps(q);
}

/* The values of a group's codes times its scale d, val(q) * d, for NF4 as
 * two 8-entry tables of those products (the same f32 multiplications). */
typedef struct {
	__m256 d, lo, hi; /* d; NF4: values 0-7 and 8-15 times d */
} vscale;

T256 INL vscale vscale_256(const int m, __m256 d)
{
	vscale v = { d, d, d };

	if (m == QM_NF4) {
		v.lo = _mm256_mul_ps(_mm256_loadu_ps(intq_nf4_values), d);
		v.hi = _mm256_mul_ps(_mm256_loadu_ps(intq_nf4_values + 8), d);
	}
	return v;
}

/* The codes of x (code8r_256) into *q, and val(q) * d. */
T256 INL __m256 codeval8_256(const int m, const int rtn, __m256 x, __m256 p, __m256 b,
                             vscale s, __m256i *q)
{
	if (m == QM_NF4) {
		__m256 hi;
		*q = nf4_code8(_mm256_mul_ps(x, p), &hi);
		return _mm256_blendv_ps(_mm256_permutevar8x32_ps(s.lo, *q),
		                        _mm256_permutevar8x32_ps(s.hi, *q), hi);
	}
	*q = code8r_256(m, rtn, x, p, b);
	return _mm256_mul_ps(val8_256(m, *q), s.d);
}

/* int32 codes of elements [8h, 8h + 8) of 16 code bytes */
T256 INL __m256i unpack8_256(const int m, __m128i b, int h)
{
	if (h)
		b = _mm_srli_si128(b, 8);
	return m == QM_INT8 ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
}

T256 INL void encode_b256(const int m, const float *x, size_t n, float p, float b,
                          uint8_t *codes)
{
	__m256 vp = _mm256_set1_ps(p), vb = _mm256_set1_ps(b);
	size_t j = 0;

	for (; j + 16 <= n; j += 16) {
		__m256i q0 = code8_256(m, _mm256_loadu_ps(x + j), vp, vb);
		__m256i q1 = code8_256(m, _mm256_loadu_ps(x + j + 8), vp, vb);
		__m128i a = _mm_packs_epi32(_mm256_castsi256_si128(q0), _mm256_extracti128_si256(q0, 1));
		__m128i c = _mm_packs_epi32(_mm256_castsi256_si128(q1), _mm256_extracti128_si256(q1, 1));
		store16(m, m == QM_INT8 ? _mm_packs_epi16(a, c) : _mm_packus_epi16(a, c), codes, j);
	}
	for (; j < n; j += QM_8BIT(m) ? 1 : 2) {
		unsigned lo = intq_code1(m, x[j], p, b);
		if (QM_8BIT(m))
			codes[j] = (uint8_t)lo;
		else
			codes[j / 2] = (uint8_t)(lo | (j + 1 < n ? intq_code1(m, x[j + 1], p, b) : 0) << 4);
	}
}

T256 static void encode_256(int m, const float *x, size_t n, float p, float b,
                            uint8_t *codes)
{
	DISPATCH(encode_b256, m, x, n, p, b, codes)
}

T256 INL __m256 err8_256(const int m, const float *x, const float *imp, size_t j,
                         __m256 vp, __m256 vb, vscale vd, __m256 vdb)
{
	__m256 xv = _mm256_loadu_ps(x + j);
	__m256i q;
	__m256 w = codeval8_256(m, 0, xv, vp, vb, vd, &q);
	if (QM_AFFINE(m))
		w = _mm256_add_ps(w, vdb);
	__m256 e = _mm256_sub_ps(xv, w);
	e = _mm256_mul_ps(e, e);
	if (imp)
		e = _mm256_mul_ps(e, _mm256_loadu_ps(imp + j));
	return e;
}

T256 INL float sqerr1_256(const int m, const float *x, const float *imp, size_t n,
                          float p, float b, float d, float db)
{
	__m256 vp = _mm256_set1_ps(p), vb = _mm256_set1_ps(b);
	__m256 vdb = _mm256_set1_ps(db), a0 = _mm256_setzero_ps(), a1 = a0;
	vscale vd = vscale_256(m, _mm256_set1_ps(d));
	float lane[16];
	size_t j = 0;

	for (; j + 16 <= n; j += 16) {
		a0 = _mm256_add_ps(a0, err8_256(m, x, imp, j, vp, vb, vd, vdb));
		a1 = _mm256_add_ps(a1, err8_256(m, x, imp, j + 8, vp, vb, vd, vdb));
	}
	if (j == n) { /* intq_fold16 in registers */
		__m256 a = _mm256_add_ps(a0, a1);
		__m128 q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
		q = _mm_add_ps(q, _mm_movehl_ps(q, q));
		return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
	}
	_mm256_storeu_ps(lane, a0);
	_mm256_storeu_ps(lane + 8, a1);
	intq_sqerr_tail(m, x, imp, j, n, p, b, d, db, lane);
	return intq_fold16(lane);
}

T256 INL void sqerr_b256(const int m, const float *x, const float *imp, size_t n,
                         size_t nc, const float *p, const float *b, const float *d,
                         const float *db, float *e)
{
	for (size_t k = 0; k < nc; k++)
		e[k] = sqerr1_256(m, x, imp, n, p[k], b[k], d[k], db[k]);
}

T256 static void sqerr_256(int m, const float *x, const float *imp, size_t n, size_t nc,
                           const float *p, const float *b, const float *d,
                           const float *db, float *e)
{
	DISPATCH(sqerr_b256, m, x, imp, n, nc, p, b, d, db, e)
}

T256 INL void deq_b256(const int m, const uint8_t *codes, size_t n, float d, float b,
                       float *out)
{
	__m256 vd = _mm256_set1_ps(d), vb = _mm256_set1_ps(b);
	size_t j = 0;

	for (; j + 16 <= n; j += 16) {
		__m128i c = load16(m, codes, j);
		for (int h = 0; h < 2; h++) {
			__m256 w = _mm256_mul_ps(val8_256(m, unpack8_256(m, c, h)), vd);
			if (QM_AFFINE(m))
				w = _mm256_add_ps(w, vb);
			_mm256_storeu_ps(out + j + 8 * h, w);
		}
	}
	for (; j < n; j++) {
		float w = intq_val1(m, intq_get_code(m, codes, j)) * d;
		out[j] = QM_AFFINE(m) ? w + b : w;
	}
}

T256 static void deq_256(int m, const uint8_t *codes, size_t n, float d, float b,
                         float *out)
{
	DISPATCH(deq_b256, m, codes, n, d, b, out)
}

T256 INL float dot_b256(const int m, const uint8_t *codes, size_t n, float d, float b,
                        const float *x)
{
	__m256 s[2] = { _mm256_setzero_ps(), _mm256_setzero_ps() }, sx[2] = { s[0], s[0] };
	float ls[16], lx[16];
	size_t j = 0;

	for (; j + 16 <= n; j += 16) {
		__m128i c = load16(m, codes, j);
		for (int h = 0; h < 2; h++) {
			__m256 xv = _mm256_loadu_ps(x + j + 8 * h);
			__m256 v = _mm256_mul_ps(val8_256(m, unpack8_256(m, c, h)), xv);
			s[h] = _mm256_add_ps(s[h], v);
			if (QM_AFFINE(m))
				sx[h] = _mm256_add_ps(sx[h], xv);
		}
	}
	for (int h = 0; h < 2; h++) {
		_mm256_storeu_ps(ls + 8 * h, s[h]);
		_mm256_storeu_ps(lx + 8 * h, sx[h]);
	}
	intq_dot_tail(m, codes, j, n, x, ls, lx);
	return intq_dot_fold(m, ls, lx, d, b);
}

T256 static float dot_256(int m, const uint8_t *codes, size_t n, float d, float b,
                          const float *x)
{
	DISPATCH(dot_b256, m, codes, n, d, b, x)
}

/* fitsums_b512 on two 8-lane halves (lanes 0-7, 8-15). */
T256 INL void fitsums_b256(const int m, const float *x, const float *imp, size_t n, float p,
                           float b, float *s)
{
	__m256 vp = _mm256_set1_ps(p), vb = _mm256_set1_ps(b), one = _mm256_set1_ps(1.0f);
	__m256 a[5][2];
	float l[5][16];
	size_t j = 0;

	for (int k = 0; k < 5; k++)
		a[k][0] = a[k][1] = _mm256_setzero_ps();
	for (; j + 16 <= n; j += 16)
		for (int h = 0; h < 2; h++) {
			__m256 xv = _mm256_loadu_ps(x + j + 8 * h);
			__m256 v = val8_256(m, code8_256(m, xv, vp, vb));
			__m256 w = imp ? _mm256_loadu_ps(imp + j + 8 * h) : one;
			__m256 wv = _mm256_mul_ps(w, v);
			a[0][h] = _mm256_add_ps(a[0][h], w);
			a[1][h] = _mm256_add_ps(a[1][h], wv);
			a[2][h] = _mm256_add_ps(a[2][h], _mm256_mul_ps(wv, v));
			a[3][h] = _mm256_add_ps(a[3][h], _mm256_mul_ps(w, xv));
			a[4][h] = _mm256_add_ps(a[4][h], _mm256_mul_ps(wv, xv));
		}
	if (j == n) { /* intq_fold16 in registers, as sqerr1_256 */
		for (int k = 0; k < 5; k++) {
			__m256 t = _mm256_add_ps(a[k][0], a[k][1]);
			__m128 q = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
			q = _mm_add_ps(q, _mm_movehl_ps(q, q));
			s[k] = _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
		}
		return;
	}
	for (int k = 0; k < 5; k++) {
		_mm256_storeu_ps(l[k], a[k][0]);
		_mm256_storeu_ps(l[k] + 8, a[k][1]);
	}
	intq_fitsums_tail(m, x, imp, j, n, p, b, l);
	for (int k = 0; k < 5; k++)
		s[k] = intq_fold16(l[k]);
}

T256 static void fitsums_256(int m, const float *x, const float *imp, size_t n, float p,
                             float b, float *s)
{
	DISPATCH(fitsums_b256, m, x, imp, n, p, b, s)
}

/* ---- the fused row kernels (AVX2 + F16C) ---------------------------- */

#define T256H __attribute__((target("avx2,f16c,fma")))

/* Store 16 codes given as int32 lanes (q0: elements j to j + 7, q1: the
 * next 8) at element j. */
T256 INL void store_q16_256(const int m, __m256i q0, __m256i q1, uint8_t *codes, size_t j)
{
	/* 16-bit lanes: elements 0-3, 8-11 | 4-7, 12-15 */
	__m256i w = QM_INT8 == m ? _mm256_packs_epi32(q0, q1) : _mm256_packus_epi32(q0, q1);

	if (QM_8BIT(m)) {
		__m256i b = _mm256_packs_epi16(w, w); /* bytes 0-3, 8-11 | 4-7, 12-15 */
		_mm_storeu_si128((__m128i *)(codes + j),
		                 _mm_unpacklo_epi32(_mm256_castsi256_si128(b),
		                                    _mm256_extracti128_si256(b, 1)));
		return;
	}
	/* 32-bit lane i: c[2i] | c[2i+1] << 16 -> byte 0 = c[2i] | c[2i+1] << 4,
	 * bytes of pairs 0, 1, 4, 5 | 2, 3, 6, 7; those to bytes 0-3 */
	const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	                                      -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
	                                      -1, -1, -1, -1);
	__m256i b = _mm256_shuffle_epi8(_mm256_or_si256(w, _mm256_srli_epi32(w, 12)), pick);
	_mm_storel_epi64((__m128i *)(codes + j / 2),
	                 _mm_unpacklo_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
}

/* The codes of a group from p, and (M) its error sums against the values
 * dequantize gives, val(q) * sd; 16 elements at a time. rtn: p is the RTN
 * one (code8r_256). */
T256H INL void emit16_256(const int m, const int acc, const int rtn, const float *x, size_t n,
                          __m256 p, __m256 sd, uint8_t *codes, met256 *M, acc_lanes *A)
{
	vscale vs = vscale_256(m, sd);

	for (size_t j = 0; j < n; j += 16) {
		__m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);
		__m256i q0, q1;
		__m256 y0 = codeval8_256(m, rtn, x0, p, _mm256_setzero_ps(), vs, &q0);
		__m256 y1 = codeval8_256(m, rtn, x1, p, _mm256_setzero_ps(), vs, &q1);
		store_q16_256(m, q0, q1, codes, j);
		if (acc)
			met2_vec(M, A, x0, y0, x1, y1);
	}
}

/* emit16_256 on 8 groups of gl in a row (pv, dv: their p and sd), the
 * sums kept in registers from group to group. */
T256H INL void emit8_256(const int m, const int acc, const float *x, size_t gl,
                         const float *pv, const float *dv, uint8_t *codes, met256 *M,
                         acc_lanes *A)
{
	met256 L = *M;

	for (size_t g = 0; g < 8; g++)
		emit16_256(m, acc, 1, x + g * gl, gl, _mm256_broadcast_ss(pv + g),
		           _mm256_broadcast_ss(dv + g), codes + (QM_8BIT(m) ? g * gl : g * gl / 2),
		           &L, A);
	*M = L;
}

T256 INL uint32_t hmaxu8(__m256i v)
{
	__m128i a = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
	a = _mm_max_epu32(a, _mm_shuffle_epi32(a, 0x4e));
	a = _mm_max_epu32(a, _mm_shuffle_epi32(a, 0xb1));
	return (uint32_t)_mm_cvtsi128_si32(a);
}

/* rtn_scale_512 on 8-lane vectors: the RTN scale d of a group, or 0 when
 * the group needs the group path (non-finite, all below FLT_MIN). */
T256H INL float rtn_scale_256(const int m, const float *x, size_t n)
{
	uint32_t abits;
	float amax, mn, mx;

	if (m == QM_INT4) {
		/* min and max; NaN apart (min/max would drop it), Inf is one of them */
		__m256 lo = _mm256_loadu_ps(x), hi = lo, bad = _mm256_cmp_ps(lo, lo, _CMP_UNORD_Q);
		for (size_t j = 8; j < n; j += 8) {
			__m256 v = _mm256_loadu_ps(x + j);
			bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
			lo = _mm256_min_ps(lo, v);
			hi = _mm256_max_ps(hi, v);
		}
		if (_mm256_movemask_ps(bad))
			return 0.0f;
		mn = hmin8(lo);
		mx = hmax8(hi);
		amax = -mn > mx ? -mn : mx;
		if (amax < FLT_MIN || !(amax <= FLT_MAX))
			return 0.0f; /* zero or tiny, or Inf */
		if (-mn == mx) /* a tie: the first of the two in the group decides */
			return x[first_abs_256(x, n, amax)] * -0.125f;
		return intq_q4_edge(mn, mx) * -0.125f;
	}
	/* int8, nf4: the largest magnitude (its bits: Inf and NaN are above) */
	const __m256i msk = _mm256_set1_epi32(0x7fffffff);
	__m256i ab = _mm256_setzero_si256();
	for (size_t j = 0; j < n; j += 8)
		ab = _mm256_max_epu32(ab, _mm256_and_si256(
			_mm256_loadu_si256((const __m256i *)(x + j)), msk));
	abits = hmaxu8(ab);
	if (abits >= 0x7f800000u || abits < 0x00800000u)
		return 0.0f;
	memcpy(&amax, &abits, 4);
	return m == QM_INT8 ? amax / 127.0f : amax;
}

/* One group of rtn_row (rtn_group_512's rule). */
T256H INL int rtn_group_256(const int m, const int acc, const float *x, size_t n,
                            uint16_t *sc, uint8_t *codes, met256 *M, acc_lanes *A)
{
	float d = rtn_scale_256(m, x, n), id, sd;
	unsigned short h;

	if (d == 0.0f)
		return 0;
	id = 1.0f / d;
	h = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
	sd = _cvtsh_ss(h);
	if (sd == 0.0f || !(fabsf(sd) <= FLT_MAX) || !(fabsf(id) <= FLT_MAX))
		return 0;
	memcpy(sc, &h, 2);
	emit16_256(m, acc, 1, x, n, _mm256_set1_ps(id), _mm256_set1_ps(sd), codes, M, A);
	return 1;
}

/* op k of the 8-group reduction: 0 min, 1 max (f32), 2 max (u32 bits) */
T256 INL __m256 red_op256(const int k, __m256 a, __m256 b)
{
	if (k == 0)
		return _mm256_min_ps(a, b);
	if (k == 1)
		return _mm256_max_ps(a, b);
	return _mm256_castsi256_ps(_mm256_max_epu32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
}

/* Lane g of the result: op over the 8 lanes of v[g] (v is clobbered); the
 * transpose by halves of red16_512 with one step less: after the last step
 * lane 4q + j holds group 2j + q, which the permute undoes. */
T256 INL __m256 red8_256(const int k, __m256 *v)
{
	const __m256i tr = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);

	for (int i = 0; i < 4; i++)
		v[i] = red_op256(k, _mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x20),
		                 _mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x31));
	for (int i = 0; i < 2; i++)
		v[i] = red_op256(k, _mm256_shuffle_ps(v[2 * i], v[2 * i + 1], 0x44),
		                 _mm256_shuffle_ps(v[2 * i], v[2 * i + 1], 0xee));
	v[0] = red_op256(k, _mm256_shuffle_ps(v[0], v[1], 0x88), _mm256_shuffle_ps(v[0], v[1], 0xdd));
	return _mm256_permutevar8x32_ps(v[0], tr);
}

/* rtn_block_512 on 8 groups of gl: the scale rule on a vector of 8 groups,
 * then the codes and error sums group by group. 0 when any of the 8 needs
 * the group path. */
T256H INL int rtn_block_256(const int m, const int acc, const float *x, size_t gl,
                            uint16_t *sc, uint8_t *codes, met256 *M, acc_lanes *A)
{
	const __m256 fmax = _mm256_set1_ps(FLT_MAX), sign = _mm256_set1_ps(-0.0f);
	__m256 a[8], b[8], d, id, sd, amax, bad = _mm256_setzero_ps();
	__m128i h;
	float pv[8], dv[8];

	if (m == QM_INT4) {
		/* per group min and max; NaN apart (min/max would drop it), but
		 * with the error sums a NaN makes them NaN, which rtn_row_b256
		 * checks once per row */
		for (int g = 0; g < 8; g++) {
			const float *xg = x + (size_t)g * gl;
			__m256 lo = _mm256_loadu_ps(xg), hi = lo;
			if (!acc)
				bad = _mm256_or_ps(bad, _mm256_cmp_ps(lo, lo, _CMP_UNORD_Q));
			for (size_t j = 8; j < gl; j += 8) {
				__m256 v = _mm256_loadu_ps(xg + j);
				if (!acc)
					bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
				lo = _mm256_min_ps(lo, v);
				hi = _mm256_max_ps(hi, v);
			}
			a[g] = lo;
			b[g] = hi;
		}
		if (_mm256_movemask_ps(bad))
			return 0;
		__m256 mn = red8_256(0, a), mx = red8_256(1, b);
		__m256 nmn = _mm256_sub_ps(_mm256_setzero_ps(), mn);
		/* intq_q4_edge: of min and max the one of larger magnitude;
		 * Inf (it is the min or the max), zero or tiny: the group path */
		__m256 lo_wins = _mm256_cmp_ps(nmn, mx, _CMP_GT_OQ), tie;
		__m256 edge = _mm256_blendv_ps(mx, mn, lo_wins);
		amax = _mm256_blendv_ps(mx, nmn, lo_wins);
		bad = _mm256_or_ps(_mm256_cmp_ps(amax, fmax, _CMP_NLE_UQ),
		                   _mm256_cmp_ps(amax, _mm256_set1_ps(FLT_MIN), _CMP_LT_OQ));
		if (_mm256_movemask_ps(bad))
			return 0;
		tie = _mm256_cmp_ps(nmn, mx, _CMP_EQ_OQ);
		if (_mm256_movemask_ps(tie)) { /* -min = max: the first of the two decides */
			_mm256_storeu_ps(pv, amax);
			_mm256_storeu_ps(dv, edge);
			for (unsigned t = (unsigned)_mm256_movemask_ps(tie); t; t &= t - 1) {
				size_t g = (size_t)__builtin_ctz(t);
				dv[g] = x[g * gl + first_abs_256(x + g * gl, gl, pv[g])];
			}
			edge = _mm256_loadu_ps(dv);
		}
		d = _mm256_mul_ps(edge, _mm256_set1_ps(-0.125f));
	} else {
		/* int8, nf4: the largest magnitude's bits (Inf and NaN above) */
		const __m256i msk = _mm256_set1_epi32(0x7fffffff);
		for (int g = 0; g < 8; g++) {
			const float *xg = x + (size_t)g * gl;
			__m256i ab = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)xg), msk);
			for (size_t j = 8; j < gl; j += 8)
				ab = _mm256_max_epu32(ab, _mm256_and_si256(
					_mm256_loadu_si256((const __m256i *)(xg + j)), msk));
			a[g] = _mm256_castsi256_ps(ab);
		}
		__m256i ab = _mm256_castps_si256(red8_256(2, a));
		/* unsigned compares as signed ones: the bits are below 2^31 */
		bad = _mm256_castsi256_ps(_mm256_or_si256(
			_mm256_cmpgt_epi32(ab, _mm256_set1_epi32(0x7f7fffff)),
			_mm256_cmpgt_epi32(_mm256_set1_epi32(0x00800000), ab)));
		if (_mm256_movemask_ps(bad))
			return 0;
		amax = _mm256_castsi256_ps(ab);
		d = m == QM_INT8 ? _mm256_div_ps(amax, _mm256_set1_ps(127.0f)) : amax;
	}
	id = _mm256_div_ps(_mm256_set1_ps(1.0f), d);
	h = _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT);
	sd = _mm256_cvtph_ps(h);
	bad = _mm256_or_ps(_mm256_cmp_ps(sd, _mm256_setzero_ps(), _CMP_EQ_OQ),
	                   _mm256_or_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, sd), fmax, _CMP_NLE_UQ),
	                                _mm256_cmp_ps(_mm256_andnot_ps(sign, id), fmax, _CMP_NLE_UQ)));
	if (_mm256_movemask_ps(bad))
		return 0;
	_mm_storeu_si128((__m128i *)sc, h);
	_mm256_storeu_ps(pv, id);
	_mm256_storeu_ps(dv, sd);
	emit8_256(m, acc, x, gl, pv, dv, codes, M, A);
	return 1;
}

T256H INL int rtn_row_b256(const int m, const int acc, const float *x, size_t cols, size_t gl,
                           uint16_t *scales, uint8_t *codes, acc_lanes *A)
{
	met256 M;
	size_t g = 0, i0 = 0;

	if (acc)
		memset(A, 0, sizeof *A);
	met2_init(&M);
	for (; i0 + 8 * gl <= cols; g += 8, i0 += 8 * gl)
		if (!rtn_block_256(m, acc, x + i0, gl, scales + g,
		                   codes + (QM_8BIT(m) ? i0 : i0 / 2), &M, A))
			return 0;
	for (; i0 < cols; g++, i0 += gl)
		if (!rtn_group_256(m, acc, x + i0, gl, scales + g,
		                   codes + (QM_8BIT(m) ? i0 : i0 / 2), &M, A))
			return 0;
	if (acc) {
		met2_end(&M, A);
		/* a NaN in x made its e = x - y and so its lane's e² sum NaN
		 * (the int4 blocks leave NaN to this) */
		for (int l = 0; l < 16; l++)
			if (A->sse[l] != A->sse[l])
				return 0;
	}
	return 1;
}

T256H static int rtn_row_256(int m, const float *x, size_t cols, size_t gl,
                             uint16_t *scales, uint8_t *codes, acc_lanes *A)
{
	switch (m) {
	case QM_INT8: return A ? rtn_row_b256(QM_INT8, 1, x, cols, gl, scales, codes, A)
	                       : rtn_row_b256(QM_INT8, 0, x, cols, gl, scales, codes, A);
	case QM_INT4: return A ? rtn_row_b256(QM_INT4, 1, x, cols, gl, scales, codes, A)
	                       : rtn_row_b256(QM_INT4, 0, x, cols, gl, scales, codes, A);
	case QM_NF4: return A ? rtn_row_b256(QM_NF4, 1, x, cols, gl, scales, codes, A)
	                      : rtn_row_b256(QM_NF4, 0, x, cols, gl, scales, codes, A);
	default: return 0;
	}
}

/* One group of search_row (search_group_512's candidates, errors and
 * choice on 8-lane vectors: 6 candidates, lanes 6 and 7 unused). */
T256H INL int search_group_256(const int m, const int acc, const float *x, size_t n,
                               const float *imp, uint16_t *sc, uint8_t *codes, met256 *M,
                               acc_lanes *A)
{
	const __m256 fmax = _mm256_set1_ps(FLT_MAX), sign = _mm256_set1_ps(-0.0f);
	const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32(INTQ_NRATIO),
	                                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
	float d = rtn_scale_256(m, x, n), p[8], sd[8], e[INTQ_NRATIO];
	uint16_t hs[8];
	__m256 vt, vp, vs, bad;
	__m128i h;
	size_t w = 0;

	if (d == 0.0f)
		return 0;
	/* td_0 = d, td_k = d * r_k; every stored scale an ordinary f16 */
	vt = _mm256_mul_ps(_mm256_set1_ps(d), _mm256_maskload_ps(intq_ratios_of(m), live));
	vt = _mm256_blend_ps(vt, _mm256_set1_ps(d), 1);
	vp = _mm256_div_ps(_mm256_set1_ps(1.0f), vt);
	h = _mm256_cvtps_ph(vt, _MM_FROUND_TO_NEAREST_INT);
	vs = _mm256_cvtph_ps(h);
	bad = _mm256_or_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, vs), fmax, _CMP_GT_OQ),
	                   _mm256_or_ps(_mm256_cmp_ps(vs, _mm256_setzero_ps(), _CMP_EQ_OQ),
	                                _mm256_cmp_ps(_mm256_andnot_ps(sign, vp), fmax, _CMP_GT_OQ)));
	if (_mm256_movemask_ps(_mm256_and_ps(bad, _mm256_castsi256_ps(live))))
		return 0;
	_mm256_storeu_ps(p, vp);
	_mm256_storeu_ps(sd, vs);
	for (size_t k = 0; k < INTQ_NRATIO; k++)
		e[k] = sqerr1_256(m, x, imp, n, p[k], 0.0f, sd[k], 0.0f);
	for (size_t k = 1; k < INTQ_NRATIO; k++)
		if (e[k] < e[w])
			w = k;
	_mm_storeu_si128((__m128i *)hs, h);
	{
		float td[8], t, b = 0.0f, zb[INTQ_NRATIO] = { 0 };
		_mm256_storeu_ps(td, vt);
		intq_refine(&intq_k_avx2, m, QTK_DT_F16, x, imp, n, INTQ_NRATIO, td, zb, e, &t, &b);
		if (t != td[w]) { /* a refit won: its scale, checked as above */
			unsigned short hh = _cvtss_sh(t, _MM_FROUND_TO_NEAREST_INT);
			p[w] = 1.0f / t;
			sd[w] = _cvtsh_ss(hh);
			hs[w] = hh;
			if (sd[w] == 0.0f || !(fabsf(sd[w]) <= FLT_MAX) || !(fabsf(p[w]) <= FLT_MAX))
				return 0;
		}
	}
	memcpy(sc, &hs[w], 2);
	emit16_256(m, acc, 0, x, n, _mm256_set1_ps(p[w]), _mm256_set1_ps(sd[w]), codes, M, A);
	return 1;
}

T256H INL int search_row_b256(const int m, const int acc, const float *x, size_t cols,
                              size_t gl, const float *imp, uint16_t *scales, uint8_t *codes,
                              acc_lanes *A)
{
	met256 M;

	if (acc)
		memset(A, 0, sizeof *A);
	met2_init(&M);
	for (size_t g = 0, i0 = 0; i0 < cols; g++, i0 += gl)
		if (!search_group_256(m, acc, x + i0, gl, intq_imp(imp ? imp + i0 : NULL, gl),
		                      scales + g,
		                      codes + (QM_8BIT(m) ? i0 : i0 / 2), &M, A))
			return 0;
	if (acc) {
		met2_end(&M, A);
	}
	return 1;
}

T256H static int search_row_256(int m, const float *x, size_t cols, size_t gl,
                                const float *imp, uint16_t *scales, uint8_t *codes,
                                acc_lanes *A)
{
	switch (m) {
	case QM_INT8: return A ? search_row_b256(QM_INT8, 1, x, cols, gl, imp, scales, codes, A)
	                       : search_row_b256(QM_INT8, 0, x, cols, gl, imp, scales, codes, A);
	case QM_INT4: return A ? search_row_b256(QM_INT4, 1, x, cols, gl, imp, scales, codes, A)
	                       : search_row_b256(QM_INT4, 0, x, cols, gl, imp, scales, codes, A);
	case QM_NF4: return A ? search_row_b256(QM_NF4, 1, x, cols, gl, imp, scales, codes, A)
	                      : search_row_b256(QM_NF4, 0, x, cols, gl, imp, scales, codes, A);
	default: return 0;
	}
}

const intq_kernels intq_k_avx2 = {
	scan_256, first_abs_256, encode_256, sqerr_256, deq_256, dot_256, rtn_row_256,
	search_row_256, fitsums_256,
};
