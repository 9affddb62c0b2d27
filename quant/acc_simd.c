/* quant: the error accumulators' blocks (see acc_impl.h): scalar reference,
 * AVX2 and AVX-512, bit-identical. */
#include <immintrin.h>
#include <math.h>

#include "acc_impl.h"

#define AB 256 /* block length (acc_impl.h) */

void acc_block_scalar(acc_lanes *A, const float *w, const float *w_hat, size_t n)
{
	for (size_t b = 0; b < n; b += AB) {
		float se[16] = { 0 }, sx[16] = { 0 }, sy[16] = { 0 }, sd[16] = { 0 };
		float mx[16] = { 0 };
		size_t m = n - b < AB ? n - b : AB;

		for (size_t i = 0; i < m; i++) {
			size_t l = i % 16;
			float x = w[b + i], y = w_hat[b + i], e = x - y;
			se[l] += e * e;
			sx[l] += x * x;
			sy[l] += y * y;
			sd[l] += x * y;
			mx[l] = fabsf(e) > mx[l] ? fabsf(e) : mx[l];
		}
		for (int l = 0; l < 16; l++) {
			A->sse[l] += (double)se[l];
			A->ssw[l] += (double)sx[l];
			A->ssh[l] += (double)sy[l];
			A->dot[l] += (double)sd[l];
			A->mx[l] = (double)mx[l] > A->mx[l] ? (double)mx[l] : A->mx[l];
		}
	}
}

/* Add 8 f32 lane sums to 8 double accumulators at d. */
__attribute__((target("avx2"))) static inline void add8(double *d, __m256 s)
{
	__m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(s));
	__m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(s, 1));
	_mm256_storeu_pd(d, _mm256_add_pd(_mm256_loadu_pd(d), lo));
	_mm256_storeu_pd(d + 4, _mm256_add_pd(_mm256_loadu_pd(d + 4), hi));
}

__attribute__((target("avx2"))) static inline void max8(double *d, __m256 s)
{
	__m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(s));
	__m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(s, 1));
	__m256d a = _mm256_loadu_pd(d), b = _mm256_loadu_pd(d + 4);
	_mm256_storeu_pd(d, _mm256_blendv_pd(a, lo, _mm256_cmp_pd(lo, a, _CMP_GT_OQ)));
	_mm256_storeu_pd(d + 4, _mm256_blendv_pd(b, hi, _mm256_cmp_pd(hi, b, _CMP_GT_OQ)));
}

__attribute__((target("avx2"))) void
acc_block_avx2(acc_lanes *A, const float *w, const float *w_hat, size_t n)
{
	const __m256 sign = _mm256_set1_ps(-0.0f);

	for (size_t b = 0; b < n; b += AB) {
		__m256 se[2], sx[2], sy[2], sd[2], mx[2];
		size_t m = n - b < AB ? n - b : AB;

		for (int h = 0; h < 2; h++)
			se[h] = sx[h] = sy[h] = sd[h] = mx[h] = _mm256_setzero_ps();
		for (size_t i = 0; i < m; i += 16) {
			for (int h = 0; h < 2; h++) {
				size_t at = b + i + 8 * (size_t)h;
				__m256 x, y, e;
				if (i + 8 * (size_t)h + 8 <= m) {
					x = _mm256_loadu_ps(w + at);
					y = _mm256_loadu_ps(w_hat + at);
				} else {
					/* short block: absent elements are 0 (adding +0 to
					 * a sum that is never -0 changes nothing) */
					float xb[8] = { 0 }, yb[8] = { 0 };
					for (size_t k = 0; i + 8 * (size_t)h + k < m && k < 8; k++) {
						xb[k] = w[at + k];
						yb[k] = w_hat[at + k];
					}
					x = _mm256_loadu_ps(xb);
					y = _mm256_loadu_ps(yb);
				}
				e = _mm256_sub_ps(x, y);
				se[h] = _mm256_add_ps(se[h], _mm256_mul_ps(e, e));
				sx[h] = _mm256_add_ps(sx[h], _mm256_mul_ps(x, x));
				sy[h] = _mm256_add_ps(sy[h], _mm256_mul_ps(y, y));
				sd[h] = _mm256_add_ps(sd[h], _mm256_mul_ps(x, y));
				e = _mm256_andnot_ps(sign, e);
				mx[h] = _mm256_blendv_ps(mx[h], e, _mm256_cmp_ps(e, mx[h], _CMP_GT_OQ));
			}
		}
		for (int h = 0; h < 2; h++) {
			add8(A->sse + 8 * h, se[h]);
			add8(A->ssw + 8 * h, sx[h]);
			add8(A->ssh + 8 * h, sy[h]);
			add8(A->dot + 8 * h, sd[h]);
			max8(A->mx + 8 * h, mx[h]);
		}
	}
}

/* f32 lane sums s added to double lanes (lo: lanes 0-7, hi: 8-15). */
__attribute__((target("avx512f"))) static inline void
add16(__m512d *lo, __m512d *hi, __m512 s)
{
	*lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(s)));
	*hi = _mm512_add_pd(*hi, _mm512_cvtps_pd(_mm256_castpd_ps(
	                             _mm512_extractf64x4_pd(_mm512_castps_pd(s), 1))));
}

__attribute__((target("avx512f"))) static inline void
max16(__m512d *lo, __m512d *hi, __m512 s)
{
	__m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(s));
	__m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
	*lo = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(a, *lo, _CMP_GT_OQ), *lo, a);
	*hi = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(b, *hi, _CMP_GT_OQ), *hi, b);
}

__attribute__((target("avx512f"))) void
acc_block_avx512(acc_lanes *A, const float *w, const float *w_hat, size_t n)
{
	__m512d e0 = _mm512_loadu_pd(A->sse), e1 = _mm512_loadu_pd(A->sse + 8);
	__m512d x0 = _mm512_loadu_pd(A->ssw), x1 = _mm512_loadu_pd(A->ssw + 8);
	__m512d y0 = _mm512_loadu_pd(A->ssh), y1 = _mm512_loadu_pd(A->ssh + 8);
	__m512d d0 = _mm512_loadu_pd(A->dot), d1 = _mm512_loadu_pd(A->dot + 8);
	__m512d m0 = _mm512_loadu_pd(A->mx), m1 = _mm512_loadu_pd(A->mx + 8);

	for (size_t b = 0; b < n; b += AB) {
		__m512 se = _mm512_setzero_ps(), sx = se, sy = se, sd = se, mx = se;
		size_t m = n - b < AB ? n - b : AB;

		for (size_t i = 0; i < m; i += 16) {
			__mmask16 k = m - i >= 16 ? (__mmask16)0xffff
			                          : (__mmask16)((1u << (m - i)) - 1);
			__m512 x = _mm512_maskz_loadu_ps(k, w + b + i);
			__m512 y = _mm512_maskz_loadu_ps(k, w_hat + b + i);
			__m512 e = _mm512_sub_ps(x, y);
			se = _mm512_add_ps(se, _mm512_mul_ps(e, e));
			sx = _mm512_add_ps(sx, _mm512_mul_ps(x, x));
			sy = _mm512_add_ps(sy, _mm512_mul_ps(y, y));
			sd = _mm512_add_ps(sd, _mm512_mul_ps(x, y));
			e = _mm512_abs_ps(e);
			mx = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(e, mx, _CMP_GT_OQ), mx, e);
		}
		add16(&e0, &e1, se);
		add16(&x0, &x1, sx);
		add16(&y0, &y1, sy);
		add16(&d0, &d1, sd);
		max16(&m0, &m1, mx);
	}
	_mm512_storeu_pd(A->sse, e0);
	_mm512_storeu_pd(A->sse + 8, e1);
	_mm512_storeu_pd(A->ssw, x0);
	_mm512_storeu_pd(A->ssw + 8, x1);
	_mm512_storeu_pd(A->ssh, y0);
	_mm512_storeu_pd(A->ssh + 8, y1);
	_mm512_storeu_pd(A->dot, d0);
	_mm512_storeu_pd(A->dot + 8, d1);
	_mm512_storeu_pd(A->mx, m0);
	_mm512_storeu_pd(A->mx + 8, m1);
}
