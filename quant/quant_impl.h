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

/* Group-wise quantizers INT8/INT4/INT4_AFFINE/NF4/INT8_AFFINE (groupq.c) */
qtk_err groupq_quantize(const qtk_q_layout *L, const float *src, size_t nrows,
                        size_t cols, const qtk_q_planes *dst,
                        const qtk_q_opts *opts, qtk_status *st);
void groupq_dequantize(const qtk_q_layout *L, const qtk_q_cplanes *src,
                       size_t nrows, size_t cols, float *dst);
float groupq_dot(const qtk_q_layout *L, const qtk_q_cplanes *row, size_t cols,
                 const float *x);

/* One group's parameters: p is the value stored in SCALES (INT8/INT4/
 * INT4_AFFINE: d; NF4: absmax; INT8_AFFINE: the MLX scale), b the bias. */
typedef struct { float p, b; } gparams;
/* MLX affine_quantize's per-group scale/bias rule for `bits` bits (f32). */
gparams qtk_mlx_affine_params(float lo, float hi, int bits);
/* bitsandbytes NF4 code values and nearest-code decision tree. */
extern const float qtk_nf4_values[16];
uint8_t qtk_nf4_code(float x);

#endif
