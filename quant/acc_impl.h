/* quant (private): SIMD bodies of qtk_q_acc_add (acc_simd.c). They run the
 * same 8 lanes as the scalar loop (element i of the call to lane i % 8),
 * with the same double operations in the same order (separate multiply and
 * add, no FMA), so every ISA gives the same sums bit for bit. n is a
 * multiple of 8; the lane arrays are updated in place. */
#ifndef QTK_ACC_IMPL_H
#define QTK_ACC_IMPL_H

#include <stddef.h>

void acc_lanes_avx2(const float *w, const float *w_hat, size_t n, double *sse,
                    double *ssw, double *ssh, double *dot, double *mx);
void acc_lanes_avx512(const float *w, const float *w_hat, size_t n, double *sse,
                      double *ssw, double *ssh, double *dot, double *mx);

#endif
