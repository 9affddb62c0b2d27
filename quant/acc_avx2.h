/* quant (private): the error sums of acc_impl.h in AVX2 registers, shared
 * by acc_block_avx2 (qtk_q_acc_add) and the fused AVX2 quantize kernels
 * (intq_simd.c), so both run the very same operations. The 16 lanes are
 * two halves of 8: per 16 elements (x, y), half 0 takes elements 0-7 and
 * half 1 elements 8-15; per half e = x - y, f32 lane sums of e², x² and y²
 * (fused multiply-adds) and max |e|. Every 16 such steps (256 elements) and at the end, the
 * f32 lanes are added to the double lanes of acc_lanes and start again
 * from +0. */
#ifndef QTK_ACC_AVX2_H
#define QTK_ACC_AVX2_H

#include <immintrin.h>

#include "acc_impl.h"

#define ACC256 static inline __attribute__((always_inline, target("avx2,fma")))

typedef struct {
	__m256 se, sx, sy, mx;
} met8; /* one half's f32 lanes */

typedef struct {
	met8 h0, h1;  /* lanes 0-7, 8-15 */
	unsigned nv;  /* steps of 16 in the current block */
} met256;

ACC256 void met8_zero(met8 *H)
{
	H->se = H->sx = H->sy = H->mx = _mm256_setzero_ps();
}

ACC256 void met2_init(met256 *M)
{
	met8_zero(&M->h0);
	met8_zero(&M->h1);
	M->nv = 0;
}

/* d[0..8) += the 8 f32 lanes of s, in double */
ACC256 void met2_add(double *d, __m256 s)
{
	__m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(s));
	__m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(s, 1));
	_mm256_storeu_pd(d, _mm256_add_pd(_mm256_loadu_pd(d), lo));
	_mm256_storeu_pd(d + 4, _mm256_add_pd(_mm256_loadu_pd(d + 4), hi));
}

/* d = s > d ? s : d, lane by lane (NaN: d) */
ACC256 void met2_max(double *d, __m256 s)
{
	__m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(s));
	__m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(s, 1));
	_mm256_storeu_pd(d, _mm256_max_pd(lo, _mm256_loadu_pd(d)));
	_mm256_storeu_pd(d + 4, _mm256_max_pd(hi, _mm256_loadu_pd(d + 4)));
}

/* A half's f32 lanes into lanes l to l + 7 of A. */
ACC256 void met8_flush(met8 *H, acc_lanes *A, int l)
{
	met2_add(A->sse + l, H->se);
	met2_add(A->ssw + l, H->sx);
	met2_add(A->ssh + l, H->sy);
	met2_max(A->mx + l, H->mx);
}

/* End of a block: the f32 lanes into A, then from +0 again. */
ACC256 void met2_flush(met256 *M, acc_lanes *A)
{
	met8_flush(&M->h0, A, 0);
	met8_flush(&M->h1, A, 8);
	met2_init(M);
}

/* One half's vector of 8 */
ACC256 void met8_vec(met8 *H, __m256 x, __m256 y)
{
	__m256 e = _mm256_sub_ps(x, y);
	H->se = _mm256_fmadd_ps(e, e, H->se);
	H->sx = _mm256_fmadd_ps(x, x, H->sx);
	H->sy = _mm256_fmadd_ps(y, y, H->sy);
	e = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), e);
	H->mx = _mm256_max_ps(e, H->mx); /* |e| > mx ? |e| : mx (NaN: mx) */
}

/* 16 elements: x0, y0 elements 0-7, x1, y1 elements 8-15. */
ACC256 void met2_vec(met256 *M, acc_lanes *A, __m256 x0, __m256 y0, __m256 x1, __m256 y1)
{
	met8_vec(&M->h0, x0, y0);
	met8_vec(&M->h1, x1, y1);
	if (++M->nv == 16) /* 256 elements of the call */
		met2_flush(M, A);
}

/* The end of a call: a short last block into A. */
ACC256 void met2_end(met256 *M, acc_lanes *A)
{
	if (M->nv)
		met2_flush(M, A);
}

#endif
