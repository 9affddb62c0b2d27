/* quant: plain float storage (F32, F16, BF16) as rows of the scheme table.
 * Conversion rounds to nearest even; NaN/Inf are kept (a float copy is not
 * a quantization, so non-finite values pass through unchanged). */
#include "quant_impl.h"

static qtk_dtype store_dtype(const qtk_q_layout *L)
{
	return qtk_q_scheme_get(L->scheme)->store_dtype;
}

qtk_err float_quantize(const qtk_q_layout *L, const float *src, size_t nrows,
                       size_t cols, const qtk_q_planes *dst,
                       const qtk_q_opts *opts, qtk_status *st)
{
	(void)opts;
	(void)st;
	return qtk_from_f32(store_dtype(L), src, dst->p[QTK_PLANE_CODES], nrows * cols);
}

void float_dequantize(const qtk_q_layout *L, const qtk_q_cplanes *src,
                      size_t nrows, size_t cols, float *dst)
{
	qtk_to_f32(store_dtype(L), src->p[QTK_PLANE_CODES], dst, nrows * cols);
}

float float_dot(const qtk_q_layout *L, const qtk_q_cplanes *row, size_t cols,
                const float *x)
{
	float buf[256];
	double acc = 0;
	const uint8_t *p = row->p[QTK_PLANE_CODES];
	size_t es = qtk_dtype_size(store_dtype(L));

	for (size_t i = 0; i < cols; i += 256) {
		size_t n = cols - i < 256 ? cols - i : 256;
		qtk_to_f32(store_dtype(L), p + i * es, buf, n);
		for (size_t j = 0; j < n; j++)
			acc += (double)buf[j] * (double)x[i + j];
	}
	return (float)acc;
}
