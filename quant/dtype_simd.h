/* quant (private): SIMD variants of the dtype conversions in dtype.c. Each
 * is bit-identical to the scalar reference (tests compare every F16/BF16
 * pattern under each forced ISA). */
#ifndef QTK_DTYPE_SIMD_H
#define QTK_DTYPE_SIMD_H
#include <stddef.h>
#include <stdint.h>

void qtk_f16_to_f32_avx2(const void *src_, float *dst, size_t n);
void qtk_f16_to_f32_avx512(const void *src_, float *dst, size_t n);
void qtk_bf16_to_f32_avx2(const void *src_, float *dst, size_t n);
void qtk_bf16_to_f32_avx512(const void *src_, float *dst, size_t n);
/* Narrowing: every value converted; returns the index of the first finite
 * value stored as Inf (n: none) and adds the nonzero values stored as zero
 * to *flushed (qtk_from_f32_checked; the predicates are in half.h). */
size_t qtk_f32_to_bf16_avx2(const float *src, void *dst_, size_t n, uint64_t *flushed);
size_t qtk_f32_to_bf16_avx512(const float *src, void *dst_, size_t n, uint64_t *flushed);
size_t qtk_f32_to_f16_avx2(const float *src, void *dst_, size_t n, uint64_t *flushed);
size_t qtk_f32_to_f16_avx512(const float *src, void *dst_, size_t n, uint64_t *flushed);
#endif
