/* quant (private): the error accumulators' lanes. One call to
 * qtk_q_acc_add runs in blocks of 256 elements; element i goes to lane
 * i % 16. Within a block every lane sums, with e = w - w_hat (f32), e², w²
 * and ŵ² in f32 (each a fused multiply-add, fmaf, from +0) and keeps max
 * |e|; after the block each lane's sums are added to its double
 * accumulators (16 per quantity, folded in lane order at the end of the
 * call). The SIMD bodies (acc_simd.c) do exactly these operations, so
 * every ISA gives the same bits. The dot product w·ŵ is not summed: the
 * fold takes it from the others, (Σw² + Σŵ² - Σe²) / 2, which is as
 * exact as a fourth f32 sum would be and saves a third of the work.
 * n: any length (the last block may be short). */
#ifndef QTK_ACC_IMPL_H
#define QTK_ACC_IMPL_H

#include <stddef.h>

#include "qtk_quant.h"

typedef struct acc_lanes {
	double sse[16], ssw[16], ssh[16], mx[16];
} acc_lanes;

/* Fold a call's 16 lanes into a (lane order), n elements. */
void acc_fold(qtk_q_acc *a, const acc_lanes *A, size_t n);

/* A call's lanes over w, w_hat [0, n): A is all zero on entry and holds
 * the call's double lanes on return. */
void acc_block_scalar(acc_lanes *A, const float *w, const float *w_hat, size_t n);
void acc_block_avx2(acc_lanes *A, const float *w, const float *w_hat, size_t n);
void acc_block_avx512(acc_lanes *A, const float *w, const float *w_hat, size_t n);

#endif
