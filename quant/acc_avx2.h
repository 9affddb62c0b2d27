/* quant (private): the error sums of acc_impl.h in AVX2 registers, shared
 * by acc_block_avx2 (qtk_q_acc_add) and the fused AVX2 quantize kernels
 * (intq_simd.c), so both run the very same operations. The 16 lanes are
 * two halves of 8, each a met256 of its own: half 0 takes elements 16k to
 * 16k + 7 of the call, half 1 elements 16k + 8 to 16k + 15. Per vector of 8
 * (x, y): e = x - y, f32 lane sums of e², x², y², x·y and max |e|; after a
 * half's 16th vector (256 elements of the call) and at the end, its f32
 * lanes are added to its 8 double lanes of acc_lanes and start again from
 * +0. The halves never meet: each lane sees its elements in order however
 * a caller interleaves the two. */
#ifndef QTK_ACC_AVX2_H
#define QTK_ACC_AVX2_H

#include <immintrin.h>

#include "acc_impl.h"

#define ACC256 static inline __attribute__((always_inline, target("avx2")))

typedef struct {
	__m256 se, sx, sy, sd, mx;
	unsigned nv; /* vectors in the current block */
} met256;

ACC256 void met8_init(met256 *M)
{
	M->se = M->sx = M->sy = M->sd = M->mx = _mm256_setzero_ps();
	M->nv = 0;
}

/* d[0..8) += the 8 f32 lanes of s, in double */
ACC256 void met8_add(double *d, __m256 s)
{
	__m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(s));
	__m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(s, 1));
	_mm256_storeu_pd(d, _mm256_add_pd(_mm256_loadu_pd(d), lo));
	_mm256_storeu_pd(d + 4, _mm256_add_pd(_mm256_loadu_pd(d + 4), hi));
}

/* d = s > d ? s : d, lane by lane (NaN: d) */
ACC256 void met8_max(double *d, __m256 s)
{
	__m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(s));
	__m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(s, 1));
	_mm256_storeu_pd(d, _mm256_max_pd(lo, _mm256_loadu_pd(d)));
	_mm256_storeu_pd(d + 4, _mm256_max_pd(hi, _mm256_loadu_pd(d + 4)));
}

/* End of a block of half h (lanes 8h to 8h + 7 of A). */
ACC256 void met8_flush(met256 *M, acc_lanes *A, int h)
{
	met8_add(A->sse + 8 * h, M->se);
	met8_add(A->ssw + 8 * h, M->sx);
	met8_add(A->ssh + 8 * h, M->sy);
	met8_add(A->dot + 8 * h, M->sd);
	met8_max(A->mx + 8 * h, M->mx);
	M->se = M->sx = M->sy = M->sd = M->mx = _mm256_setzero_ps();
	M->nv = 0;
}

ACC256 void met8_vec(met256 *M, acc_lanes *A, int h, __m256 x, __m256 y)
{
	__m256 e = _mm256_sub_ps(x, y);
	M->se = _mm256_add_ps(M->se, _mm256_mul_ps(e, e));
	M->sx = _mm256_add_ps(M->sx, _mm256_mul_ps(x, x));
	M->sy = _mm256_add_ps(M->sy, _mm256_mul_ps(y, y));
	M->sd = _mm256_add_ps(M->sd, _mm256_mul_ps(x, y));
	e = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), e);
	M->mx = _mm256_max_ps(e, M->mx); /* |e| > mx ? |e| : mx (NaN: mx) */
	if (++M->nv == 16) /* 256 elements of the call */
		met8_flush(M, A, h);
}

/* The end of a call: a short last block of half h into A. */
ACC256 void met8_end(met256 *M, acc_lanes *A, int h)
{
	if (M->nv)
		met8_flush(M, A, h);
}

#endif
