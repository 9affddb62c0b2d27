/* quant: the error accumulators' blocks (see acc_impl.h): scalar reference,
 * AVX2 and AVX-512, bit-identical. */
#include <immintrin.h>
#include <math.h>

#include "acc_avx512.h"

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

/* A call's lanes start at 0 (qtk_q_acc_add clears A): met512 from zero,
 * the short last block's absent elements read as 0 (adding +0 to a sum that
 * is never -0 changes nothing). */
__attribute__((target("avx512f"))) void
acc_block_avx512(acc_lanes *A, const float *w, const float *w_hat, size_t n)
{
	met512 M;

	met_init(&M);
	for (size_t i = 0; i < n; i += 16) {
		__mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
		met_vec(&M, _mm512_maskz_loadu_ps(k, w + i), _mm512_maskz_loadu_ps(k, w_hat + i));
	}
	met_store(&M, A);
}
