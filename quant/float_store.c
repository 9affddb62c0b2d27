/* quant: plain float storage (F32, F16, BF16) as rows of the scheme table.
 * Conversion rounds to nearest even; NaN/Inf are kept (a float copy is not
 * a quantization, so non-finite values pass through unchanged), but a
 * finite value the type cannot hold is refused, never stored as Inf, and
 * nonzero values that flush to zero are counted (opts->flushed). */
#include "quant_impl.h"

static qtk_dtype store_dtype(const qtk_q_layout *L)
{
	return qtk_q_scheme_get(L->scheme)->store_dtype;
}

/* A finite value the store dtype cannot hold: never written as Inf. */
static qtk_err value_range(const qtk_q_layout *L, const float *src, size_t i, size_t cols,
                           const qtk_q_opts *o, qtk_status *st)
{
	uint64_t row, col;
	qtk_dtype dt = store_dtype(L);

	if (o && o->row_len) {
		row = (o->elem0 + i) / o->row_len;
		col = (o->elem0 + i) % o->row_len;
	} else {
		row = (o ? o->row0 : 0) + i / cols;
		col = i % cols;
	}
	return qtk_fail(st, QTK_E_Q_VALUE_RANGE,
	                "tensor '%s': row %llu col %llu: %.9g does not fit %s (largest finite %s)",
	                o && o->tensor ? o->tensor : "?", (unsigned long long)row,
	                (unsigned long long)col, (double)src[i], qtk_dtype_name(dt),
	                dt == QTK_DT_F16 ? "65504" : "3.3895314e38");
}

qtk_err float_quantize(const qtk_q_layout *L, const float *src, size_t nrows,
                       size_t cols, const qtk_q_planes *dst,
                       const qtk_q_opts *opts, qtk_status *st)
{
	size_t n = nrows * cols, first;

	QTK_TRY(qtk_from_f32_checked(store_dtype(L), src, dst->p[QTK_PLANE_CODES], n, &first,
	                             opts ? opts->flushed : NULL));
	return first < n ? value_range(L, src, first, cols, opts, st) : QTK_OK;
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
