/* tests: shared MLX checks for test_convert_mlx.c and test_export.c. */
#ifndef QTK_TEST_MLX_UTIL_H
#define QTK_TEST_MLX_UTIL_H

#include "qtk_convert.h"

typedef struct {
	int quantized;   /* tensors checked as weight/scales/biases */
	int floats;      /* tensors whose bytes equal the .qtk's stored bytes */
	int fallback;    /* quantized in the .qtk, float (source) in MLX */
	int bad;         /* mismatches (each also reported with t_fail_at) */
} mlx_cmp;

/* Every tensor of the .qtk file against the MLX directory: quantized ones
 * dequantized independently (U32 bit streams, w = scales*q + biases) must
 * equal qtk's dequantization bit for bit; float ones byte for byte. */
mlx_cmp mlx_compare_qtk(const char *mlxdir, const char *qtk);

/* Convert with the library: scheme/group, optional --set spec, format,
 * scale dtype (MLX output of a bf16 model quantizes with bf16 scales). */
int mlx_test_convert(const char *in, const char *out, qtk_out_format fmt, qtk_scheme_id s,
                     uint32_t g, const char *set, qtk_dtype sdt, qtk_status *st);

#endif
