/* quant: AVX2(+F16C) and AVX-512 conversions between F16/BF16 and F32,
 * chosen at run time by qtk_to_f32/qtk_from_f32 via qtk_isa_active().
 * Tails go through the scalar reference, so results are bit-identical. */
#include <immintrin.h>
#include <string.h>

#include "dtype_simd.h"
#include "half.h"
#include "qtk_quant.h"

/* The 16-bit side may be unaligned (tensor data in a mapping): vector loads
 * and stores are unaligned ones, scalar tails go through memcpy. */

/* Widening reads its source once, in order, usually from the page cache
 * (a checkpoint's mapping), whose 4 KB pages are scattered in memory: the
 * hardware prefetcher stops at each page's end, and the loop waits on
 * memory. So it asks for the line PF_AHEAD bytes on, once per 64-byte line
 * read. Reading a 970 MB page-cached F16 file this way went from 9.7 to
 * 22-26 GB/s on one core (4 KB on: 21; 16 KB: 24). A prefetch past the end
 * of the source is harmless: it does not fault. */
#ifndef QTK_PF_AHEAD
#define QTK_PF_AHEAD 8192
#endif
#define PF(p) _mm_prefetch((const char *)(p) + QTK_PF_AHEAD, _MM_HINT_T0)

static inline uint16_t ld16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return v;
}

/* F16 -> F32: the hardware conversion is exact, except that it quiets
 * signalling NaNs; the reference keeps every payload bit, so NaN lanes are
 * rebuilt with integer operations. */
__attribute__((target("avx2,f16c"))) void qtk_f16_to_f32_avx2(const void *src_, float *dst,
                                                               size_t n)
{
	const uint8_t *s8 = src_;
	size_t i = 0;
	const __m256i e = _mm256_set1_epi32(0x7c00), m = _mm256_set1_epi32(0x3ff);
	for (; i + 8 <= n; i += 8) {
		if (!(i & 31))
			PF(s8 + 2 * i);
		__m128i h = _mm_loadu_si128((const __m128i *)(const void *)(s8 + 2 * i));
		__m256 f = _mm256_cvtph_ps(h);
		__m256i w = _mm256_cvtepu16_epi32(h);
		__m256i isnan = _mm256_andnot_si256(
			_mm256_cmpeq_epi32(_mm256_and_si256(w, m), _mm256_setzero_si256()),
			_mm256_cmpeq_epi32(_mm256_and_si256(w, e), e));
		if (!_mm256_testz_si256(isnan, isnan)) {
			__m256i nb = _mm256_or_si256(
				_mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x8000)), 16),
				                _mm256_set1_epi32(0x7f800000)),
				_mm256_slli_epi32(_mm256_and_si256(w, m), 13));
			f = _mm256_blendv_ps(f, _mm256_castsi256_ps(nb), _mm256_castsi256_ps(isnan));
		}
		_mm256_storeu_ps(dst + i, f);
	}
	for (; i < n; i++)
		dst[i] = qtk_f16_to_f32(ld16(s8 + 2 * i));
}

__attribute__((target("avx512f"))) void qtk_f16_to_f32_avx512(const void *src_, float *dst,
                                                               size_t n)
{
	const uint8_t *s8 = src_;
	size_t i = 0;
	const __m512i e = _mm512_set1_epi32(0x7c00), m = _mm512_set1_epi32(0x3ff);
	for (; i + 16 <= n; i += 16) {
		if (!(i & 31))
			PF(s8 + 2 * i);
		__m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(s8 + 2 * i));
		__m512 f = _mm512_cvtph_ps(h);
		__m512i w = _mm512_cvtepu16_epi32(h);
		__mmask16 isnan = _mm512_cmpeq_epi32_mask(_mm512_and_si512(w, e), e) &
		                  _mm512_test_epi32_mask(w, m);
		if (isnan) {
			__m512i nb = _mm512_or_si512(
				_mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(w, _mm512_set1_epi32(0x8000)), 16),
				                _mm512_set1_epi32(0x7f800000)),
				_mm512_slli_epi32(_mm512_and_si512(w, m), 13));
			f = _mm512_mask_mov_ps(f, isnan, _mm512_castsi512_ps(nb));
		}
		_mm512_storeu_ps(dst + i, f);
	}
	for (; i < n; i++)
		dst[i] = qtk_f16_to_f32(ld16(s8 + 2 * i));
}

__attribute__((target("avx2"))) void qtk_bf16_to_f32_avx2(const void *src_, float *dst,
                                                           size_t n)
{
	const uint8_t *s8 = src_;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		if (!(i & 31))
			PF(s8 + 2 * i);
		__m128i h = _mm_loadu_si128((const __m128i *)(const void *)(s8 + 2 * i));
		__m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
		_mm256_storeu_si256((__m256i *)(void *)(dst + i), w);
	}
	for (; i < n; i++)
		dst[i] = qtk_bf16_to_f32(ld16(s8 + 2 * i));
}

__attribute__((target("avx512f"))) void qtk_bf16_to_f32_avx512(const void *src_, float *dst,
                                                                size_t n)
{
	const uint8_t *s8 = src_;
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		if (!(i & 31))
			PF(s8 + 2 * i);
		__m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(s8 + 2 * i));
		__m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
		_mm512_storeu_si512((void *)(dst + i), w);
	}
	for (; i < n; i++)
		dst[i] = qtk_bf16_to_f32(ld16(s8 + 2 * i));
}

/* Narrowing checks (half.h). A lane flushes when |x| - 1 <= flush_max - 1
 * and overflows when |x| - ovf_min <= Inf - ovf_min - 1, both unsigned (0
 * wraps to the top, NaN and Inf lie above the overflow range): so each
 * vector only folds |x| - 1 and |x| - ovf_min into running unsigned minima
 * (two subtracts, two mins), and once per block of NARROW_BLOCK elements
 * the minima are compared with the limits. A block with a hit is rechecked
 * lane by lane with the scalar predicates (narrow_lanes); blocks without
 * one (nearly all) cost no branch per vector and no second pass. */
#define NARROW_BLOCK 256

static void narrow_lanes(const float *src, size_t i, size_t w, uint32_t flush_max,
                         uint32_t ovf_min, size_t *first, uint64_t *flushed)
{
	for (size_t k = 0; k < w; k++) {
		uint32_t a;
		memcpy(&a, &src[i + k], 4);
		a &= 0x7fffffffu;
		*flushed += (uint64_t)narrow_flushes(a, flush_max);
		if (narrow_overflows(a, ovf_min) && i + k < *first)
			*first = i + k;
	}
}

/* The scalar tail of a narrowing kernel (its checks: narrow_lanes). */
static void narrow_tail(int f16, const float *src, uint8_t *d8, size_t i, size_t n)
{
	for (; i < n; i++) {
		uint16_t h = f16 ? qtk_f32_to_f16(src[i]) : qtk_f32_to_bf16(src[i]);
		memcpy(d8 + 2 * i, &h, 2);
	}
}

/* End of the block starting at i: whole steps of `step` elements. */
static size_t block_end(size_t i, size_t n, size_t step)
{
	return n - i >= NARROW_BLOCK ? i + NARROW_BLOCK : i + (n - i) / step * step;
}

typedef struct {
	__m256i fl, ov; /* running minima of |x| - 1 and |x| - ovf_min */
} nacc256;

__attribute__((target("avx2"))) static inline void nacc256_add(nacc256 *m, __m256i a,
                                                               __m256i ovf_min)
{
	m->fl = _mm256_min_epu32(m->fl, _mm256_sub_epi32(a, _mm256_set1_epi32(1)));
	m->ov = _mm256_min_epu32(m->ov, _mm256_sub_epi32(a, ovf_min));
}

/* 1 if a lane of the block flushes or overflows */
__attribute__((target("avx2"))) static inline int nacc256_hit(const nacc256 *m,
                                                              uint32_t flush_max,
                                                              uint32_t ovf_min)
{
	__m256i fl_lim = _mm256_set1_epi32((int)(flush_max - 1));
	__m256i ov_lim = _mm256_set1_epi32((int)(F32_INF_BITS - ovf_min - 1));
	__m256i hit = _mm256_or_si256(
		_mm256_cmpeq_epi32(_mm256_min_epu32(m->fl, fl_lim), m->fl),
		_mm256_cmpeq_epi32(_mm256_min_epu32(m->ov, ov_lim), m->ov));
	return !_mm256_testz_si256(hit, hit);
}

typedef struct {
	__m512i fl, ov;
} nacc512;

__attribute__((target("avx512f"))) static inline void nacc512_add(nacc512 *m, __m512i a,
                                                                  __m512i ovf_min)
{
	m->fl = _mm512_min_epu32(m->fl, _mm512_sub_epi32(a, _mm512_set1_epi32(1)));
	m->ov = _mm512_min_epu32(m->ov, _mm512_sub_epi32(a, ovf_min));
}

__attribute__((target("avx512f"))) static inline int nacc512_hit(const nacc512 *m,
                                                                 uint32_t flush_max,
                                                                 uint32_t ovf_min)
{
	return (_mm512_cmple_epu32_mask(m->fl, _mm512_set1_epi32((int)(flush_max - 1))) |
	        _mm512_cmple_epu32_mask(m->ov, _mm512_set1_epi32((int)(F32_INF_BITS - ovf_min - 1)))) != 0;
}

/* F32 -> BF16, round to nearest even; NaN: quiet bit set, sign kept. */
__attribute__((target("avx2"))) size_t qtk_f32_to_bf16_avx2(const float *src, void *dst_,
                                                             size_t n, uint64_t *flushed)
{
	uint8_t *d8 = dst_;
	size_t i = 0, first = n;
	const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff),
	              abs = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000),
	              q = _mm256_set1_epi32(0x40), om = _mm256_set1_epi32((int)BHALF_OVF_MIN);
	while (i + 16 <= n) {
		size_t b0 = i, end = block_end(i, n, 16);
		nacc256 m = { _mm256_set1_epi32(-1), _mm256_set1_epi32(-1) };
		for (; i < end; i += 16) {
			__m256i r[2];
			for (int k = 0; k < 2; k++) {
				__m256i u = _mm256_loadu_si256((const __m256i *)(const void *)(src + i + 8 * k));
				__m256i a = _mm256_and_si256(u, abs);
				__m256i isnan = _mm256_cmpgt_epi32(a, inf);
				__m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
				__m256i rn = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, lsb)), 16);
				__m256i nn = _mm256_or_si256(_mm256_srli_epi32(u, 16), q);
				r[k] = _mm256_blendv_epi8(rn, nn, isnan);
				nacc256_add(&m, a, om);
			}
			__m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xd8);
			_mm256_storeu_si256((__m256i *)(void *)(d8 + 2 * i), p);
		}
		if (nacc256_hit(&m, BHALF_FLUSH_MAX, BHALF_OVF_MIN))
			narrow_lanes(src, b0, i - b0, BHALF_FLUSH_MAX, BHALF_OVF_MIN, &first, flushed);
	}
	narrow_lanes(src, i, n - i, BHALF_FLUSH_MAX, BHALF_OVF_MIN, &first, flushed);
	narrow_tail(0, src, d8, i, n);
	return first;
}

__attribute__((target("avx512f"))) size_t qtk_f32_to_bf16_avx512(const float *src, void *dst_,
                                                                  size_t n, uint64_t *flushed)
{
	uint8_t *d8 = dst_;
	size_t i = 0, first = n;
	const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff),
	              abs = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000),
	              q = _mm512_set1_epi32(0x40), om = _mm512_set1_epi32((int)BHALF_OVF_MIN);
	while (i + 16 <= n) {
		size_t b0 = i, end = block_end(i, n, 16);
		nacc512 m = { _mm512_set1_epi32(-1), _mm512_set1_epi32(-1) };
		for (; i < end; i += 16) {
			__m512i u = _mm512_loadu_si512((const void *)(src + i));
			__m512i a = _mm512_and_si512(u, abs);
			__mmask16 isnan = _mm512_cmpgt_epi32_mask(a, inf);
			__m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
			__m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, lsb)), 16);
			r = _mm512_mask_mov_epi32(r, isnan, _mm512_or_si512(_mm512_srli_epi32(u, 16), q));
			_mm256_storeu_si256((__m256i *)(void *)(d8 + 2 * i), _mm512_cvtepi32_epi16(r));
			nacc512_add(&m, a, om);
		}
		if (nacc512_hit(&m, BHALF_FLUSH_MAX, BHALF_OVF_MIN))
			narrow_lanes(src, b0, i - b0, BHALF_FLUSH_MAX, BHALF_OVF_MIN, &first, flushed);
	}
	narrow_lanes(src, i, n - i, BHALF_FLUSH_MAX, BHALF_OVF_MIN, &first, flushed);
	narrow_tail(0, src, d8, i, n);
	return first;
}

/* F32 -> F16, round to nearest even. The hardware conversion matches the
 * reference exactly: subnormals rounded, >= 65520 to Inf, NaN quieted with
 * the top 10 payload bits kept. */
__attribute__((target("avx2,f16c"))) size_t qtk_f32_to_f16_avx2(const float *src, void *dst_,
                                                                 size_t n, uint64_t *flushed)
{
	uint8_t *d8 = dst_;
	size_t i = 0, first = n;
	const __m256i abs = _mm256_set1_epi32(0x7fffffff), om = _mm256_set1_epi32((int)HALF_OVF_MIN);
	while (i + 8 <= n) {
		size_t b0 = i, end = block_end(i, n, 8);
		nacc256 m = { _mm256_set1_epi32(-1), _mm256_set1_epi32(-1) };
		for (; i < end; i += 8) {
			__m256 v = _mm256_loadu_ps(src + i);
			__m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
			_mm_storeu_si128((__m128i *)(void *)(d8 + 2 * i), h);
			nacc256_add(&m, _mm256_and_si256(_mm256_castps_si256(v), abs), om);
		}
		if (nacc256_hit(&m, HALF_FLUSH_MAX, HALF_OVF_MIN))
			narrow_lanes(src, b0, i - b0, HALF_FLUSH_MAX, HALF_OVF_MIN, &first, flushed);
	}
	narrow_lanes(src, i, n - i, HALF_FLUSH_MAX, HALF_OVF_MIN, &first, flushed);
	narrow_tail(1, src, d8, i, n);
	return first;
}

__attribute__((target("avx512f"))) size_t qtk_f32_to_f16_avx512(const float *src, void *dst_,
                                                                 size_t n, uint64_t *flushed)
{
	uint8_t *d8 = dst_;
	size_t i = 0, first = n;
	const __m512i abs = _mm512_set1_epi32(0x7fffffff), om = _mm512_set1_epi32((int)HALF_OVF_MIN);
	while (i + 16 <= n) {
		size_t b0 = i, end = block_end(i, n, 16);
		nacc512 m = { _mm512_set1_epi32(-1), _mm512_set1_epi32(-1) };
		for (; i < end; i += 16) {
			__m512 v = _mm512_loadu_ps(src + i);
			__m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
			_mm256_storeu_si256((__m256i *)(void *)(d8 + 2 * i), h);
			nacc512_add(&m, _mm512_and_si512(_mm512_castps_si512(v), abs), om);
		}
		if (nacc512_hit(&m, HALF_FLUSH_MAX, HALF_OVF_MIN))
			narrow_lanes(src, b0, i - b0, HALF_FLUSH_MAX, HALF_OVF_MIN, &first, flushed);
	}
	narrow_lanes(src, i, n - i, HALF_FLUSH_MAX, HALF_OVF_MIN, &first, flushed);
	narrow_tail(1, src, d8, i, n);
	return first;
}
