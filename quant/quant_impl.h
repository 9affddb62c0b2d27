/* quant (private): functions the scheme table points at, and helpers shared
 * by the scheme implementations. */
#ifndef QTK_QUANT_IMPL_H
#define QTK_QUANT_IMPL_H

#include "qtk_quant.h"

/* F32 / F16 / BF16 storage (float_store.c) */
qtk_err float_quantize(const qtk_q_layout *L, const float *src, size_t nrows,
                       size_t cols, const qtk_q_planes *dst,
                       const qtk_q_opts *opts, qtk_status *st);
void float_dequantize(const qtk_q_layout *L, const qtk_q_cplanes *src,
                      size_t nrows, size_t cols, float *dst);
float float_dot(const qtk_q_layout *L, const qtk_q_cplanes *row, size_t cols,
                const float *x);

/* INT8, INT4, INT4_AFFINE, NF4, INT8_AFFINE (intq.c) */
qtk_err intq_quantize(const qtk_q_layout *L, const float *src, size_t nrows,
                      size_t cols, const qtk_q_planes *dst,
                      const qtk_q_opts *opts, qtk_status *st);
void intq_dequantize(const qtk_q_layout *L, const qtk_q_cplanes *src,
                     size_t nrows, size_t cols, float *dst);
float intq_dot(const qtk_q_layout *L, const qtk_q_cplanes *row, size_t cols,
               const float *x);

/* SIMD dequantization of n elements of one group starting at element i0
 * (intq_simd.c); bit-identical to the scalar path. */
const float *qtk_q_nf4_table(void);
void intq_deq_group_avx2(qtk_scheme_id s, const uint8_t *codes, size_t i0,
                         size_t n, float d, float b, float *out);
void intq_deq_group_avx512(qtk_scheme_id s, const uint8_t *codes, size_t i0,
                           size_t n, float d, float b, float *out);

#endif
