/* quant: AVX2 / AVX-512 lanes of the error accumulators (see acc_impl.h). */
#include <immintrin.h>

#include "acc_impl.h"

__attribute__((target("avx2"))) void
acc_lanes_avx2(const float *w, const float *w_hat, size_t n, double *sse, double *ssw,
               double *ssh, double *dot, double *mx)
{
	const __m256d sign = _mm256_set1_pd(-0.0);
	__m256d e2[2], x2[2], y2[2], d2[2], m2[2];

	for (int h = 0; h < 2; h++) {
		e2[h] = _mm256_loadu_pd(sse + 4 * h);
		x2[h] = _mm256_loadu_pd(ssw + 4 * h);
		y2[h] = _mm256_loadu_pd(ssh + 4 * h);
		d2[h] = _mm256_loadu_pd(dot + 4 * h);
		m2[h] = _mm256_loadu_pd(mx + 4 * h);
	}
	for (size_t i = 0; i < n; i += 8) {
		for (int h = 0; h < 2; h++) {
			__m256d x = _mm256_cvtps_pd(_mm_loadu_ps(w + i + 4 * h));
			__m256d y = _mm256_cvtps_pd(_mm_loadu_ps(w_hat + i + 4 * h));
			__m256d e = _mm256_sub_pd(x, y);
			e2[h] = _mm256_add_pd(e2[h], _mm256_mul_pd(e, e));
			x2[h] = _mm256_add_pd(x2[h], _mm256_mul_pd(x, x));
			y2[h] = _mm256_add_pd(y2[h], _mm256_mul_pd(y, y));
			d2[h] = _mm256_add_pd(d2[h], _mm256_mul_pd(x, y));
			/* fabs(e) > m ? fabs(e) : m, for finite values */
			e = _mm256_andnot_pd(sign, e);
			m2[h] = _mm256_blendv_pd(m2[h], e, _mm256_cmp_pd(e, m2[h], _CMP_GT_OQ));
		}
	}
	for (int h = 0; h < 2; h++) {
		_mm256_storeu_pd(sse + 4 * h, e2[h]);
		_mm256_storeu_pd(ssw + 4 * h, x2[h]);
		_mm256_storeu_pd(ssh + 4 * h, y2[h]);
		_mm256_storeu_pd(dot + 4 * h, d2[h]);
		_mm256_storeu_pd(mx + 4 * h, m2[h]);
	}
}

__attribute__((target("avx512f"))) void
acc_lanes_avx512(const float *w, const float *w_hat, size_t n, double *sse, double *ssw,
                 double *ssh, double *dot, double *mx)
{
	__m512d e2 = _mm512_loadu_pd(sse), x2 = _mm512_loadu_pd(ssw);
	__m512d y2 = _mm512_loadu_pd(ssh), d2 = _mm512_loadu_pd(dot);
	__m512d m2 = _mm512_loadu_pd(mx);

	for (size_t i = 0; i < n; i += 8) {
		__m512d x = _mm512_cvtps_pd(_mm256_loadu_ps(w + i));
		__m512d y = _mm512_cvtps_pd(_mm256_loadu_ps(w_hat + i));
		__m512d e = _mm512_sub_pd(x, y);
		e2 = _mm512_add_pd(e2, _mm512_mul_pd(e, e));
		x2 = _mm512_add_pd(x2, _mm512_mul_pd(x, x));
		y2 = _mm512_add_pd(y2, _mm512_mul_pd(y, y));
		d2 = _mm512_add_pd(d2, _mm512_mul_pd(x, y));
		e = _mm512_abs_pd(e);
		m2 = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(e, m2, _CMP_GT_OQ), m2, e);
	}
	_mm512_storeu_pd(sse, e2);
	_mm512_storeu_pd(ssw, x2);
	_mm512_storeu_pd(ssh, y2);
	_mm512_storeu_pd(dot, d2);
	_mm512_storeu_pd(mx, m2);
}
