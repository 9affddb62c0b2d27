/* quant: the scheme table and the geometry of stored planes.
 * Everything else in qtk (CLI names, plane sizes, reader validation, kernel
 * choice, tests) reads this table instead of switching on schemes. */
#include <string.h>

#include "qtk_quant.h"
#include "quant_impl.h"

#define INTQ .quantize = intq_quantize, .dequantize = intq_dequantize, .dot = intq_dot

/* Rows name their own id in wider/requant_* (a float row's is itself). */
#define SAME(id) .wider = id, .requant_sym = id, .requant_affine = id

static const qtk_q_scheme schemes[QTK_SCHEME_COUNT] = {
	[QTK_SCHEME_RAW] = { .name = "raw", .code_bits = 0, .mode = QTK_QMODE_RAW,
		SAME(QTK_SCHEME_RAW), .verify_limit = 1e-5 },
	[QTK_SCHEME_F32] = { .name = "f32", .code_bits = 32, .float_store = 1,
		.store_dtype = QTK_DT_F32, .mode = QTK_QMODE_FLOAT, .quantize = float_quantize,
		.dequantize = float_dequantize, .dot = float_dot, SAME(QTK_SCHEME_F32),
		.verify_limit = 1e-5 },
	[QTK_SCHEME_F16] = { .name = "f16", .code_bits = 16, .float_store = 1,
		.store_dtype = QTK_DT_F16, .mode = QTK_QMODE_FLOAT, .quantize = float_quantize,
		.dequantize = float_dequantize, .dot = float_dot, SAME(QTK_SCHEME_F16),
		.verify_limit = 1e-3 },
	[QTK_SCHEME_BF16] = { .name = "bf16", .code_bits = 16, .float_store = 1,
		.store_dtype = QTK_DT_BF16, .mode = QTK_QMODE_FLOAT, .quantize = float_quantize,
		.dequantize = float_dequantize, .dot = float_dot, SAME(QTK_SCHEME_BF16),
		.verify_limit = 1e-2 },
	[QTK_SCHEME_INT8] = { .name = "int8", .code_bits = 8, .quantized = 1,
		.mode = QTK_QMODE_SYM, .code_signed = 1, INTQ, .is_default = 1,
		.wider = QTK_SCHEME_F16, .requant_sym = QTK_SCHEME_INT8,
		.requant_affine = QTK_SCHEME_INT8_AFFINE, .verify_limit = 0.02 },
	[QTK_SCHEME_INT4] = { .name = "int4", .code_bits = 4, .quantized = 1,
		.mode = QTK_QMODE_SYM, .code_offset = 8, INTQ, .wider = QTK_SCHEME_INT8,
		.requant_sym = QTK_SCHEME_INT4, .requant_affine = QTK_SCHEME_INT4_AFFINE,
		.verify_limit = 0.25 },
	[QTK_SCHEME_INT4_AFFINE] = { .name = "int4-affine", .code_bits = 4,
		.quantized = 1, .has_bias = 1, .mode = QTK_QMODE_AFFINE, INTQ,
		.wider = QTK_SCHEME_INT8, .requant_sym = QTK_SCHEME_INT4,
		.requant_affine = QTK_SCHEME_INT4_AFFINE, .verify_limit = 0.25 },
	[QTK_SCHEME_NF4] = { .name = "nf4", .code_bits = 4, .quantized = 1,
		.mode = QTK_QMODE_LOOKUP, .levels = intq_nf4_values, INTQ, .double_quant = 1,
		.wider = QTK_SCHEME_INT8, .requant_sym = QTK_SCHEME_INT4,
		.requant_affine = QTK_SCHEME_INT4_AFFINE, .verify_limit = 0.25 },
	[QTK_SCHEME_INT8_AFFINE] = { .name = "int8-affine", .code_bits = 8,
		.quantized = 1, .has_bias = 1, .mode = QTK_QMODE_AFFINE, INTQ,
		.wider = QTK_SCHEME_F16, .requant_sym = QTK_SCHEME_INT8,
		.requant_affine = QTK_SCHEME_INT8_AFFINE, .verify_limit = 0.02 },
};

const qtk_q_scheme *qtk_q_scheme_get(qtk_scheme_id id)
{
	return (unsigned)id < QTK_SCHEME_COUNT ? &schemes[id] : NULL;
}

int qtk_q_scheme_from_name(const char *name)
{
	for (int i = 0; i < QTK_SCHEME_COUNT; i++)
		if (!strcmp(name, schemes[i].name))
			return i;
	return -1;
}

qtk_scheme_id qtk_q_scheme_default(void)
{
	for (int i = 0; i < QTK_SCHEME_COUNT; i++)
		if (schemes[i].is_default)
			return (qtk_scheme_id)i;
	return QTK_SCHEME_COUNT; /* unreachable: tests check that one row has it */
}

int qtk_q_scheme_float(qtk_dtype dt)
{
	for (int i = 0; i < QTK_SCHEME_COUNT; i++)
		if (schemes[i].float_store && schemes[i].store_dtype == dt)
			return i;
	return -1;
}

int qtk_q_scheme_find(unsigned code_bits, qtk_q_mode mode, int code_signed,
                      unsigned code_offset)
{
	for (int i = 0; i < QTK_SCHEME_COUNT; i++) {
		const qtk_q_scheme *s = &schemes[i];
		if (!s->quantized || s->code_bits != code_bits || s->mode != mode)
			continue;
		if (mode != QTK_QMODE_SYM ||
		    (code_signed ? s->code_signed : !s->code_signed && s->code_offset == code_offset))
			return i;
	}
	return -1;
}

static int valid_group(uint32_t g)
{
	/* QTK_GROUP_ROW, or a power of two from 16 to 4096 */
	return g == QTK_GROUP_ROW || (g >= 16 && g <= 4096 && (g & (g - 1)) == 0);
}

qtk_err qtk_q_layout_check(const qtk_q_layout *L, uint64_t rows, uint64_t cols,
                           qtk_status *st)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);

	(void)rows;
	(void)cols;
	if (!s)
		return qtk_fail(st, QTK_E_ARG, "unknown scheme id %d", (int)L->scheme);
	if (L->scheme == QTK_SCHEME_RAW) {
		if (!qtk_dtype_size(L->dtype))
			return qtk_fail(st, QTK_E_ARG, "raw storage with unknown dtype %d",
			                (int)L->dtype);
	} else if ((unsigned)L->dtype >= QTK_DT_COUNT) {
		return qtk_fail(st, QTK_E_ARG, "unknown source dtype %d", (int)L->dtype);
	}
	if (!s->quantized) {
		if (L->group != 0 || L->flags != 0)
			return qtk_fail(st, QTK_E_ARG, "scheme %s takes no group or flags", s->name);
		return QTK_OK;
	}
	if (s->quantize == intq_quantize && intq_mode(L) < 0)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "scheme %s: no integer kernel stores its codes",
		                s->name);
	if (!valid_group(L->group))
		return qtk_fail(st, QTK_E_ARG,
		                "scheme %s: group %u is not a power of two in [16, 4096] or 'row'",
		                s->name, L->group);
	if (L->flags & ~(QTK_QF_DOUBLE_QUANT | QTK_QF_MLX_AFFINE))
		return qtk_fail(st, QTK_E_ARG, "scheme %s: unknown flags 0x%x", s->name, L->flags);
	if ((L->flags & QTK_QF_DOUBLE_QUANT) && !s->double_quant)
		return qtk_fail(st, QTK_E_ARG, "scheme %s: double quantization is not defined for it",
		                s->name);
	if ((L->flags & QTK_QF_MLX_AFFINE) && !s->has_bias)
		return qtk_fail(st, QTK_E_ARG,
		                "scheme %s: the MLX affine rule is defined for int4-affine and int8-affine only",
		                s->name);
	if (L->scale_dtype != QTK_DT_F16 && L->scale_dtype != QTK_DT_F32 &&
	    L->scale_dtype != QTK_DT_BF16)
		return qtk_fail(st, QTK_E_ARG, "scheme %s: scale dtype must be F16, BF16 or F32",
		                s->name);
	return QTK_OK;
}

uint64_t qtk_q_groups_per_row(const qtk_q_layout *L, uint64_t cols)
{
	if (L->group == QTK_GROUP_ROW)
		return cols ? 1 : 0;
	return cols / L->group + (cols % L->group != 0);
}

uint64_t qtk_q_row_bytes(const qtk_q_layout *L, uint64_t cols, int plane)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);
	uint64_t gpr;

	if (!s)
		return 0;
	switch (plane) {
	case QTK_PLANE_CODES:
		if (L->scheme == QTK_SCHEME_RAW)
			return cols * qtk_dtype_size(L->dtype);
		/* sub-byte codes: each row starts on a byte */
		return (cols * s->code_bits + 7) / 8;
	case QTK_PLANE_SCALES:
		if (!s->quantized)
			return 0;
		gpr = qtk_q_groups_per_row(L, cols);
		if (L->flags & QTK_QF_DOUBLE_QUANT)
			return gpr;
		return gpr * qtk_dtype_size(L->scale_dtype);
	case QTK_PLANE_BIASES:
		return s->has_bias ? qtk_q_groups_per_row(L, cols) * qtk_dtype_size(L->scale_dtype) : 0;
	default:
		return 0;
	}
}

qtk_err qtk_q_plane_sizes(const qtk_q_layout *L, uint64_t rows, uint64_t cols,
                          uint64_t sizes[QTK_PLANE_MAX])
{
	uint64_t n;

	memset(sizes, 0, sizeof(uint64_t) * QTK_PLANE_MAX);
	if (!qtk_q_scheme_get(L->scheme))
		return QTK_E_ARG;
	/* cols * 32 bits must not overflow before the division in row_bytes */
	if (__builtin_mul_overflow(cols, (uint64_t)64, &n) ||
	    __builtin_mul_overflow(rows, cols, &n))
		return QTK_E_OVERFLOW;
	for (int p = 0; p < QTK_PLANE_DQ; p++)
		if (__builtin_mul_overflow(rows, qtk_q_row_bytes(L, cols, p), &sizes[p]))
			return QTK_E_OVERFLOW;
	if (L->flags & QTK_QF_DOUBLE_QUANT) {
		/* f32 offset, then one f32 scale per block of 256 group scales */
		uint64_t groups = rows * qtk_q_groups_per_row(L, cols);
		sizes[QTK_PLANE_DQ] = 4 + 4 * (groups / 256 + (groups % 256 != 0));
	}
	return QTK_OK;
}

double qtk_q_bits_per_weight(const qtk_q_layout *L, uint64_t rows, uint64_t cols)
{
	uint64_t sizes[QTK_PLANE_MAX];
	double total = 0;

	if (rows == 0 || cols == 0 || qtk_q_plane_sizes(L, rows, cols, sizes) != QTK_OK)
		return 0;
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		total += (double)sizes[p];
	return total * 8.0 / ((double)rows * (double)cols);
}

qtk_err qtk_q_quantize_rows(const qtk_q_layout *L, const float *src, size_t nrows,
                            size_t cols, const qtk_q_planes *dst,
                            const qtk_q_opts *opts, qtk_status *st)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);

	if (!s || !s->quantize)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "scheme %s cannot quantize from f32",
		                s ? s->name : "?");
	return s->quantize(L, src, nrows, cols, dst, opts, st);
}

qtk_err q_acc_row(const qtk_q_layout *L, const qtk_q_planes *dst, size_t r, size_t cols,
                  const float *x, qtk_q_acc *acc, float **buf, qtk_status *st)
{
	qtk_q_cplanes cp;

	if (!*buf && !(*buf = qtk_malloc((cols ? cols : 1) * sizeof(float))))
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		uint64_t rb = qtk_q_row_bytes(L, cols, p);
		cp.p[p] = dst->p[p] && rb ? (const uint8_t *)dst->p[p] + r * rb : NULL;
	}
	qtk_q_dequantize_rows(L, &cp, 1, cols, *buf);
	qtk_q_acc_add(acc, x, *buf, cols);
	return QTK_OK;
}

qtk_err qtk_q_quantize_rows_acc(const qtk_q_layout *L, const float *src, size_t nrows,
                                size_t cols, const qtk_q_planes *dst,
                                const qtk_q_opts *opts, qtk_q_acc *acc, qtk_status *st)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);
	float *row = NULL; /* allocated only for rows the fused kernels do not sum */
	qtk_err rc;

	if (s && s->quantize == intq_quantize) {
		rc = intq_quantize_acc(L, src, nrows, cols, dst, opts, acc, &row, st);
	} else {
		rc = qtk_q_quantize_rows(L, src, nrows, cols, dst, opts, st);
		for (size_t r = 0; !rc && r < nrows; r++)
			rc = q_acc_row(L, dst, r, cols, src + r * cols, acc, &row, st);
	}
	qtk_free(row);
	return rc;
}

void qtk_q_dequantize_rows(const qtk_q_layout *L, const qtk_q_cplanes *src,
                           size_t nrows, size_t cols, float *dst)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);

	if (s && s->dequantize)
		s->dequantize(L, src, nrows, cols, dst);
}
