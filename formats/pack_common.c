/* formats: helpers shared by the packed-format writer and reader. */
#include <zlib.h>

#include "pack_impl.h"

uint32_t pk_crc32(uint32_t crc, const void *buf, uint64_t n)
{
	return qtk_crc32(crc, buf, n);
}

qtk_err pk_shape_2d(uint32_t ndim, const uint64_t *shape, uint64_t *rows,
                    uint64_t *cols)
{
	uint64_t r = 1, total;

	if (ndim > QTK_MAX_DIMS)
		return QTK_E_PK_NDIM;
	for (uint32_t d = 0; d < ndim; d++)
		if (shape[d] > (uint64_t)INT64_MAX)
			return QTK_E_PK_SHAPE; /* "negative" as a signed dim */
	for (uint32_t d = 0; d + 1 < ndim; d++)
		if (__builtin_mul_overflow(r, shape[d], &r))
			return QTK_E_PK_SHAPE;
	*cols = ndim ? shape[ndim - 1] : 1;
	if (__builtin_mul_overflow(r, *cols, &total) || total > (uint64_t)INT64_MAX)
		return QTK_E_PK_SHAPE;
	*rows = r;
	return QTK_OK;
}

qtk_dtype qtk_pack_plane_dtype(const qtk_pack_tensor *t, int p)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(t->layout.scheme);

	if (!s)
		return QTK_DT_U8;
	switch (p) {
	case QTK_PLANE_CODES:
		if (s->float_store)
			return s->store_dtype;
		return s->quantized ? QTK_DT_U8 : t->layout.dtype;
	case QTK_PLANE_SCALES:
		return (t->layout.flags & QTK_QF_DOUBLE_QUANT) ? QTK_DT_U8 : t->layout.scale_dtype;
	case QTK_PLANE_BIASES:
		return t->layout.scale_dtype;
	default:
		return QTK_DT_F32;
	}
}

int pk_plane_is16(const qtk_q_layout *L, int p)
{
	qtk_pack_tensor t;

	memset(&t, 0, sizeof t);
	t.layout = *L;
	return qtk_dtype_size(qtk_pack_plane_dtype(&t, p)) == 2;
}
