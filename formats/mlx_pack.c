/* formats: MLX quantized-weight packing. MLX stores a quantized linear
 * weight as U32 [out, in*bits/32] with element i of a row at bits
 * [bits*i, bits*(i+1)) of the row's little-endian bit stream, plus scales
 * and biases [out, in/group], w = scales*q + biases with q unsigned.
 *
 * qtk's 4-bit and 8-bit code planes already have that bit order (4-bit:
 * element 2i in the low nibble of byte i), so only the code values change:
 *   int4-affine, int8-affine: q as stored, bias as stored;
 *   int4 (stores q+8):        codes as stored, bias = -8 * scale;
 *   int8 (two's complement):  q' = q + 128 (flip the top bit), bias = -128 * scale.
 * scale*q' + bias = scale*q exactly in f32 arithmetic: both products are
 * exact (an f16/f32 scale times an integer of at most 8 bits) and so is
 * their difference, which is a multiple of scale of at most 8 bits. */
#include <math.h>

#include "gguf_impl.h"

qtk_err qtk_mlx_pack_bits(const uint8_t *q, size_t cols, unsigned bits, uint32_t *out,
                          qtk_status *st)
{
	size_t words;

	if (bits == 0 || bits > 8 || (cols * bits) % 32)
		return qtk_fail(st, QTK_E_GG_LAYOUT, "MLX: %zu elements of %u bits do not fill whole "
		                "32-bit words", cols, bits);
	words = cols * bits / 32;
	memset(out, 0, words * sizeof *out);
	for (size_t i = 0; i < cols; i++) {
		uint64_t pos = (uint64_t)i * bits, v = q[i] & ((1u << bits) - 1);
		size_t w = (size_t)(pos / 32);
		unsigned sh = (unsigned)(pos % 32);
		out[w] |= (uint32_t)(v << sh);
		if (sh + bits > 32)
			out[w + 1] |= (uint32_t)(v >> (32 - sh));
	}
	return QTK_OK;
}

qtk_err qtk_mlx_unpack_bits(const uint32_t *in, size_t cols, unsigned bits, uint8_t *q,
                            qtk_status *st)
{
	if (bits == 0 || bits > 8 || (cols * bits) % 32)
		return qtk_fail(st, QTK_E_GG_LAYOUT, "MLX: %zu elements of %u bits do not fill whole "
		                "32-bit words", cols, bits);
	for (size_t i = 0; i < cols; i++) {
		uint64_t pos = (uint64_t)i * bits;
		size_t w = (size_t)(pos / 32);
		unsigned sh = (unsigned)(pos % 32);
		uint64_t v = in[w] >> sh;
		if (sh + bits > 32)
			v |= (uint64_t)in[w + 1] << (32 - sh);
		q[i] = (uint8_t)(v & ((1u << bits) - 1));
	}
	return QTK_OK;
}

qtk_err qtk_mlx_form(const qtk_q_layout *L, uint64_t cols, unsigned *bits, unsigned *offset,
                     qtk_status *st)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);
	const char *why = NULL;

	/* MLX affine holds any uniform grid of 1..8 bits: unsigned codes as
	 * they are, signed ones moved up by half the range (w = scale *
	 * (q - offset) = scale * q + bias with bias = -offset * scale) */
	if (!s || !s->quantized) {
		why = "not a quantized scheme";
	} else if (s->mode != QTK_QMODE_SYM && s->mode != QTK_QMODE_AFFINE) {
		why = "its codes are not uniform; MLX affine cannot hold them";
	} else if (s->code_bits == 0 || s->code_bits > 8) {
		why = "MLX codes have 1 to 8 bits";
	} else {
		*bits = s->code_bits;
		*offset = s->code_signed ? 1u << (s->code_bits - 1) : s->code_offset;
	}
	if (!why && L->group != 32 && L->group != 64 && L->group != 128)
		why = "MLX groups are 32, 64 or 128";
	if (!why && (L->flags & QTK_QF_DOUBLE_QUANT))
		why = "double-quantized scales have no MLX form";
	/* QTK_QF_MLX_AFFINE (affine only) is MLX's own rule: the same form */
	if (!why && (cols % L->group || (cols * *bits) % 32))
		why = "the row length is not a multiple of the group";
	if (why)
		return qtk_fail(st, QTK_E_GG_LAYOUT, "no exact MLX form for %s g%u rows of %llu: %s",
		                s ? s->name : "?", L->group, (unsigned long long)cols, why);
	return QTK_OK;
}

qtk_err qtk_mlx_pack_codes(const qtk_q_layout *L, const void *codes, size_t nrows, size_t cols,
                           uint32_t *out, qtk_status *st)
{
	unsigned bits, offset;
	const uint8_t *c = codes;
	size_t row_bytes, words;

	QTK_TRY(qtk_mlx_form(L, cols, &bits, &offset, st));
	row_bytes = cols * bits / 8;
	words = row_bytes / 4;
	for (size_t r = 0; r < nrows; r++, c += row_bytes, out += words)
		for (size_t w = 0; w < words; w++) {
			uint32_t v = gg_le32(c + 4 * w);
			out[w] = offset == 128 ? v ^ 0x80808080u : v;
		}
	return QTK_OK;
}

qtk_err qtk_mlx_unpack_codes(const qtk_q_layout *L, const uint32_t *in, size_t nrows,
                             size_t cols, void *codes, qtk_status *st)
{
	unsigned bits, offset;
	uint8_t *c = codes;
	size_t row_bytes, words;

	QTK_TRY(qtk_mlx_form(L, cols, &bits, &offset, st));
	row_bytes = cols * bits / 8;
	words = row_bytes / 4;
	for (size_t r = 0; r < nrows; r++, c += row_bytes, in += words)
		for (size_t w = 0; w < words; w++)
			gg_put32(c + 4 * w, offset == 128 ? in[w] ^ 0x80808080u : in[w]);
	return QTK_OK;
}

/* Convert n scale-dtype values (times -offset) to out_dtype, exactly: a
 * value out_dtype cannot hold fails with QTK_E_Q_SCALE_RANGE (the caller
 * may widen to F32), an inexact one with QTK_E_GG_LAYOUT. */
static qtk_err convert(const qtk_q_layout *L, const void *vals, unsigned offset, size_t n,
                       qtk_dtype out_dtype, void *out, const char *what, qtk_status *st)
{
	size_t osz = qtk_dtype_size(out_dtype), ssz = qtk_dtype_size(L->scale_dtype);

	if ((out_dtype != QTK_DT_F16 && out_dtype != QTK_DT_BF16 && out_dtype != QTK_DT_F32) ||
	    (L->scale_dtype != QTK_DT_F16 && L->scale_dtype != QTK_DT_BF16 &&
	     L->scale_dtype != QTK_DT_F32))
		return qtk_fail(st, QTK_E_ARG, "MLX %s: dtype must be F16, BF16 or F32", what);
	for (size_t i = 0; i < n; i++) {
		const uint8_t *sp = (const uint8_t *)vals + i * ssz;
		float s, b, back;
		uint8_t tmp[4];
		if (L->scale_dtype == QTK_DT_BF16)
			s = qtk_bf16_to_f32(gg_le16(sp));
		else if (ssz == 2)
			s = qtk_f16_to_f32(gg_le16(sp));
		else {
			uint32_t u = gg_le32(sp);
			memcpy(&s, &u, 4);
		}
		b = offset ? -(float)offset * s : s;
		qtk_from_f32(out_dtype, &b, tmp, 1);
		qtk_to_f32(out_dtype, tmp, &back, 1);
		if (isfinite(s) && !isfinite(back)) /* never written as Inf */
			return qtk_fail(st, QTK_E_Q_SCALE_RANGE, "MLX %s of group %zu (%g) does not "
			                "fit %s", what, i, (double)b, qtk_dtype_name(out_dtype));
		if (memcmp(&back, &b, 4) && !(back == 0 && b == 0))
			return qtk_fail(st, QTK_E_GG_LAYOUT, "MLX %s of group %zu (%g) is not exact in %s",
			                what, i, (double)b, qtk_dtype_name(out_dtype));
		memcpy((uint8_t *)out + i * osz, tmp, osz);
	}
	return QTK_OK;
}

qtk_err qtk_mlx_scales(const qtk_q_layout *L, const void *scales, size_t n, qtk_dtype out_dtype,
                       void *out, qtk_status *st)
{
	unsigned bits, offset;

	QTK_TRY(qtk_mlx_form(L, L->group, &bits, &offset, st));
	return convert(L, scales, 0, n, out_dtype, out, "scale", st);
}

qtk_err qtk_mlx_biases(const qtk_q_layout *L, const void *scales, const void *biases, size_t n,
                       qtk_dtype out_dtype, void *out, qtk_status *st)
{
	unsigned bits, offset;

	QTK_TRY(qtk_mlx_form(L, L->group, &bits, &offset, st));
	return convert(L, offset ? scales : biases, offset, n, out_dtype, out, "bias", st);
}
