/* quant (private): the error sums of acc_impl.h in AVX-512 registers,
 * shared by acc_block_avx512 (qtk_q_acc_add) and the fused quantize
 * kernels (intq_simd.c), so both run the very same operations: per vector
 * of 16 (x, y): e = x - y, f32 lane sums of e², x² and y² (fused
 * multiply-adds) and max |e|;
 * every 16 vectors (256 elements) and at the end, the f32 lanes are added
 * to the double lanes and start again from +0. */
#ifndef QTK_ACC_AVX512_H
#define QTK_ACC_AVX512_H

#include <immintrin.h>

#include "acc_impl.h"

#define ACC512 static inline __attribute__((always_inline, target("avx512f")))

typedef struct {
	__m512 se, sx, sy, mx;
	__m512d e0, e1, x0, x1, y0, y1, m0, m1;
	unsigned nv; /* vectors in the current block */
} met512;

ACC512 void met_init(met512 *M)
{
	M->se = M->sx = M->sy = M->mx = _mm512_setzero_ps();
	M->e0 = M->e1 = M->x0 = M->x1 = M->y0 = M->y1 = M->m0 = M->m1 =
		_mm512_setzero_pd();
	M->nv = 0;
}

ACC512 void met_add(__m512d *lo, __m512d *hi, __m512 s)
{
	*lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(s)));
	*hi = _mm512_add_pd(*hi, _mm512_cvtps_pd(_mm256_castpd_ps(
	                             _mm512_extractf64x4_pd(_mm512_castps_pd(s), 1))));
}

ACC512 void met_max(__m512d *lo, __m512d *hi, __m512 s)
{
	__m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(s));
	__m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
	*lo = _mm512_max_pd(a, *lo); /* a > lo ? a : lo (NaN: lo) */
	*hi = _mm512_max_pd(b, *hi);
}

/* End of a block: f32 lanes into the double lanes, then from +0 again. */
ACC512 void met_flush(met512 *M)
{
	met_add(&M->e0, &M->e1, M->se);
	met_add(&M->x0, &M->x1, M->sx);
	met_add(&M->y0, &M->y1, M->sy);
	met_max(&M->m0, &M->m1, M->mx);
	M->se = M->sx = M->sy = M->mx = _mm512_setzero_ps();
	M->nv = 0;
}

ACC512 void met_vec(met512 *M, __m512 x, __m512 y)
{
	__m512 e = _mm512_sub_ps(x, y);
	M->se = _mm512_fmadd_ps(e, e, M->se);
	M->sx = _mm512_fmadd_ps(x, x, M->sx);
	M->sy = _mm512_fmadd_ps(y, y, M->sy);
	M->mx = _mm512_max_ps(_mm512_abs_ps(e), M->mx); /* |e| > mx ? |e| : mx (NaN: mx) */
	if (++M->nv == 16) /* 256 elements */
		met_flush(M);
}

/* The call's lanes into A (flushing a short last block). */
ACC512 void met_store(met512 *M, acc_lanes *A)
{
	if (M->nv)
		met_flush(M);
	_mm512_storeu_pd(A->sse, M->e0);
	_mm512_storeu_pd(A->sse + 8, M->e1);
	_mm512_storeu_pd(A->ssw, M->x0);
	_mm512_storeu_pd(A->ssw + 8, M->x1);
	_mm512_storeu_pd(A->ssh, M->y0);
	_mm512_storeu_pd(A->ssh + 8, M->y1);
	_mm512_storeu_pd(A->mx, M->m0);
	_mm512_storeu_pd(A->mx + 8, M->m1);
}

#endif
