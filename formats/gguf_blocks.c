/* formats: ggml's 32-element blocks (Q8_0, Q4_0, Q4_1) — dequantization
 * as ggml defines it, and lossless repacking of qtk code planes into
 * blocks and back. Pure functions, no I/O.
 *
 * Block layouts (ggml-common.h):
 *   Q8_0: f16 d, i8 qs[32];             x[j] = d * qs[j]
 *   Q4_0: f16 d, u8 qs[16];             x[j] = d * ((qs[j] & 15) - 8),
 *                                       x[j+16] = d * ((qs[j] >> 4) - 8)
 *   Q4_1: f16 d, f16 m, u8 qs[16];      x[j] = d * (qs[j] & 15) + m, ...
 * qtk planes (quant/qtk_quant.h): 4-bit element 2i in the low nibble of
 * byte i; INT4 stores q + 8, INT4_AFFINE q; scales/biases one per group. */
#include "gguf_impl.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

void qtk_gg_deq_q8_0(const uint8_t *b, float *y)
{
	float d = qtk_f16_to_f32(gg_le16(b));

	for (int j = 0; j < 32; j++)
		y[j] = (float)(int8_t)b[2 + j] * d;
}

void qtk_gg_deq_q4_0(const uint8_t *b, float *y)
{
	float d = qtk_f16_to_f32(gg_le16(b));

	for (int j = 0; j < 16; j++) {
		y[j] = (float)((b[2 + j] & 15) - 8) * d;
		y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
	}
}

void qtk_gg_deq_q4_1(const uint8_t *b, float *y)
{
	float d = qtk_f16_to_f32(gg_le16(b)), m = qtk_f16_to_f32(gg_le16(b + 2));

	for (int j = 0; j < 16; j++) {
		y[j] = (float)(b[4 + j] & 15) * d + m;
		y[j + 16] = (float)(b[4 + j] >> 4) * d + m;
	}
}

qtk_err qtk_gguf_type_for_layout(const qtk_q_layout *L, uint64_t cols, uint32_t *type,
                                 qtk_status *st)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);
	int t = qtk_ggml_type_of_scheme(L->scheme);
	const char *why = NULL;

	if (s && s->float_store && t >= 0) {
		*type = (uint32_t)t;
		return QTK_OK;
	}
	if (!s || !s->quantized || t < 0)
		why = "the scheme has no GGUF block type";
	if (!why && L->group != qtk_ggml_block_elems((uint32_t)t))
		why = "GGUF blocks hold groups of 32 only";
	if (!why && L->scale_dtype != QTK_DT_F16)
		why = "GGUF blocks hold f16 scales only";
	if (!why && (L->flags & QTK_QF_DOUBLE_QUANT))
		why = "double-quantized scales have no GGUF form";
	/* QTK_QF_MLX_AFFINE int4-affine is still d * q + m: Q4_1 holds it */
	if (!why && cols % QTK_GGUF_QK)
		why = "the row length is not a multiple of 32";
	if (why)
		return qtk_fail(st, QTK_E_GG_LAYOUT, "no exact GGUF type for %s g%u rows of %llu: %s",
		                s ? s->name : "?", L->group, (unsigned long long)cols, why);
	*type = (uint32_t)t;
	return QTK_OK;
}

static qtk_err check_cols(size_t cols, qtk_status *st)
{
	if (cols == 0 || cols % QTK_GGUF_QK)
		return qtk_fail(st, QTK_E_GG_LAYOUT, "row length %zu is not a positive multiple of 32",
		                cols);
	return QTK_OK;
}

qtk_err qtk_gguf_pack_q8_0(const int8_t *codes, const uint16_t *scales, size_t nrows,
                           size_t cols, void *dst, qtk_status *st)
{
	uint8_t *o = dst;

	QTK_TRY(check_cols(cols, st));
	for (size_t g = 0; g < nrows * (cols / 32); g++, o += 34) {
		gg_put16(o, scales[g]);
		memcpy(o + 2, codes + 32 * g, 32);
	}
	return QTK_OK;
}

qtk_err qtk_gguf_unpack_q8_0(const void *src, size_t nrows, size_t cols, int8_t *codes,
                             uint16_t *scales, qtk_status *st)
{
	const uint8_t *b = src;

	QTK_TRY(check_cols(cols, st));
	for (size_t g = 0; g < nrows * (cols / 32); g++, b += 34) {
		scales[g] = gg_le16(b);
		memcpy(codes + 32 * g, b + 2, 32);
	}
	return QTK_OK;
}

/* 32 qtk nibbles (16 bytes, pairs) <-> ggml's split halves. */
#if defined(__SSE2__)
/* 32 codes: qtk's pairs (2i, 2i+1) in byte i -> ggml's (j, j+16) in byte j */
static void to_ggml_nibbles(const uint8_t *q, uint8_t *qs)
{
	const __m128i m = _mm_set1_epi8(15);
	__m128i b = _mm_loadu_si128((const __m128i *)(const void *)q);
	__m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
	__m128i v0 = _mm_unpacklo_epi8(lo, hi), v1 = _mm_unpackhi_epi8(lo, hi); /* v[0..15], v[16..31] */

	_mm_storeu_si128((__m128i *)(void *)qs, _mm_or_si128(v0, _mm_slli_epi16(v1, 4)));
}

static void from_ggml_nibbles(const uint8_t *qs, uint8_t *q)
{
	const __m128i m = _mm_set1_epi8(15), ff = _mm_set1_epi16(0xff);
	__m128i b = _mm_loadu_si128((const __m128i *)(const void *)qs);
	__m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);

	/* 16-bit lane i of lo: v[2i] | v[2i+1] << 8 -> v[2i] | v[2i+1] << 4 */
	lo = _mm_and_si128(_mm_or_si128(lo, _mm_srli_epi16(lo, 4)), ff);
	hi = _mm_and_si128(_mm_or_si128(hi, _mm_srli_epi16(hi, 4)), ff);
	_mm_storeu_si128((__m128i *)(void *)q, _mm_packus_epi16(lo, hi));
}
#else
static void to_ggml_nibbles(const uint8_t *q, uint8_t *qs)
{
	uint8_t v[32];

	for (int i = 0; i < 16; i++) {
		v[2 * i] = q[i] & 15;
		v[2 * i + 1] = q[i] >> 4;
	}
	for (int j = 0; j < 16; j++)
		qs[j] = (uint8_t)(v[j] | v[j + 16] << 4);
}

static void from_ggml_nibbles(const uint8_t *qs, uint8_t *q)
{
	uint8_t v[32];

	for (int j = 0; j < 16; j++) {
		v[j] = qs[j] & 15;
		v[j + 16] = qs[j] >> 4;
	}
	for (int i = 0; i < 16; i++)
		q[i] = (uint8_t)(v[2 * i] | v[2 * i + 1] << 4);
}
#endif

qtk_err qtk_gguf_pack_q4_0(const uint8_t *codes, const uint16_t *scales, size_t nrows,
                           size_t cols, void *dst, qtk_status *st)
{
	uint8_t *o = dst;

	QTK_TRY(check_cols(cols, st));
	for (size_t g = 0; g < nrows * (cols / 32); g++, o += 18) {
		gg_put16(o, scales[g]);
		to_ggml_nibbles(codes + 16 * g, o + 2);
	}
	return QTK_OK;
}

qtk_err qtk_gguf_unpack_q4_0(const void *src, size_t nrows, size_t cols, uint8_t *codes,
                             uint16_t *scales, qtk_status *st)
{
	const uint8_t *b = src;

	QTK_TRY(check_cols(cols, st));
	for (size_t g = 0; g < nrows * (cols / 32); g++, b += 18) {
		scales[g] = gg_le16(b);
		from_ggml_nibbles(b + 2, codes + 16 * g);
	}
	return QTK_OK;
}

qtk_err qtk_gguf_pack_q4_1(const uint8_t *codes, const uint16_t *scales,
                           const uint16_t *biases, size_t nrows, size_t cols, void *dst,
                           qtk_status *st)
{
	uint8_t *o = dst;

	QTK_TRY(check_cols(cols, st));
	for (size_t g = 0; g < nrows * (cols / 32); g++, o += 20) {
		gg_put16(o, scales[g]);
		gg_put16(o + 2, biases[g]);
		to_ggml_nibbles(codes + 16 * g, o + 4);
	}
	return QTK_OK;
}

qtk_err qtk_gguf_unpack_q4_1(const void *src, size_t nrows, size_t cols, uint8_t *codes,
                             uint16_t *scales, uint16_t *biases, qtk_status *st)
{
	const uint8_t *b = src;

	QTK_TRY(check_cols(cols, st));
	for (size_t g = 0; g < nrows * (cols / 32); g++, b += 20) {
		scales[g] = gg_le16(b);
		biases[g] = gg_le16(b + 2);
		from_ggml_nibbles(b + 4, codes + 16 * g);
	}
	return QTK_OK;
}
