/* quant: element types and their exact conversion to and from f32.
 * The scalar functions here are the reference; SIMD paths must match them
 * bit for bit. */
#include <math.h>
#include <string.h>

#include "qtk_quant.h"
#include "dtype_simd.h"
#include "half.h"

static const struct {
	const char *name;
	size_t size;
	int is_float;
} dtypes[QTK_DT_COUNT] = {
	[QTK_DT_F32] = { "F32", 4, 1 },      [QTK_DT_F16] = { "F16", 2, 1 },
	[QTK_DT_BF16] = { "BF16", 2, 1 },    [QTK_DT_F64] = { "F64", 8, 1 },
	[QTK_DT_F8_E4M3] = { "F8_E4M3", 1, 1 },
	[QTK_DT_F8_E5M2] = { "F8_E5M2", 1, 1 },
	[QTK_DT_I64] = { "I64", 8, 0 },      [QTK_DT_I32] = { "I32", 4, 0 },
	[QTK_DT_I16] = { "I16", 2, 0 },      [QTK_DT_I8] = { "I8", 1, 0 },
	[QTK_DT_U64] = { "U64", 8, 0 },      [QTK_DT_U32] = { "U32", 4, 0 },
	[QTK_DT_U16] = { "U16", 2, 0 },      [QTK_DT_U8] = { "U8", 1, 0 },
	[QTK_DT_BOOL] = { "BOOL", 1, 0 },
};

size_t qtk_dtype_size(qtk_dtype dt)
{
	return (unsigned)dt < QTK_DT_COUNT ? dtypes[dt].size : 0;
}

const char *qtk_dtype_name(qtk_dtype dt)
{
	return (unsigned)dt < QTK_DT_COUNT ? dtypes[dt].name : NULL;
}

int qtk_dtype_from_name(const char *name)
{
	for (int i = 0; i < QTK_DT_COUNT; i++)
		if (!strcmp(name, dtypes[i].name))
			return i;
	return -1;
}

int qtk_dtype_is_float(qtk_dtype dt)
{
	return (unsigned)dt < QTK_DT_COUNT && dtypes[dt].is_float;
}

float qtk_f16_to_f32(uint16_t h)
{
	return half_to_f32(h);
}

uint16_t qtk_f32_to_f16(float f)
{
	return f32_to_half(f);
}

float qtk_bf16_to_f32(uint16_t b)
{
	return bhalf_to_f32(b);
}

uint16_t qtk_f32_to_bf16(float f)
{
	return f32_to_bhalf(f);
}

float qtk_e4m3_to_f32(uint8_t v)
{
	uint32_t sign = (uint32_t)(v & 0x80) << 24;
	uint32_t exp = (v >> 3) & 0xf;
	uint32_t man = v & 0x7;

	if (exp == 0xf && man == 0x7) /* the only NaN encodings (fn: no Inf) */
		return f32_from_bits(sign | 0x7fc00000u);
	if (exp == 0) /* subnormal: man * 2^-9 */
		return f32_from_bits(sign | bits_from_f32((float)man * 0x1p-9f));
	return f32_from_bits(sign | ((exp + 120) << 23) | (man << 20));
}

float qtk_e5m2_to_f32(uint8_t v)
{
	/* E5M2 is the top byte of an IEEE half */
	return qtk_f16_to_f32((uint16_t)(v << 8));
}

/* ---- row conversion --------------------------------------------------- */

static void to_f32_scalar(qtk_dtype dt, const void *src, float *dst, size_t n)
{
	const uint8_t *s = src;

	switch (dt) {
	case QTK_DT_F32:
		memcpy(dst, src, n * 4);
		break;
	case QTK_DT_F16:
		for (size_t i = 0; i < n; i++) {
			uint16_t h;
			memcpy(&h, s + 2 * i, 2);
			dst[i] = qtk_f16_to_f32(h);
		}
		break;
	case QTK_DT_BF16:
		for (size_t i = 0; i < n; i++) {
			uint16_t h;
			memcpy(&h, s + 2 * i, 2);
			dst[i] = qtk_bf16_to_f32(h);
		}
		break;
	case QTK_DT_F64:
		for (size_t i = 0; i < n; i++) {
			double d;
			memcpy(&d, s + 8 * i, 8);
			dst[i] = (float)d;
		}
		break;
	case QTK_DT_F8_E4M3:
		for (size_t i = 0; i < n; i++)
			dst[i] = qtk_e4m3_to_f32(s[i]);
		break;
	case QTK_DT_F8_E5M2:
		for (size_t i = 0; i < n; i++)
			dst[i] = qtk_e5m2_to_f32(s[i]);
		break;
	default:
		break;
	}
}

qtk_err qtk_to_f32(qtk_dtype dt, const void *src, float *dst, size_t n)
{
	if (!qtk_dtype_is_float(dt))
		return QTK_E_ARG;
	if (dt == QTK_DT_F16 || dt == QTK_DT_BF16) {
		qtk_isa isa = qtk_isa_active();
		if (isa == QTK_ISA_AVX512) {
			(dt == QTK_DT_F16 ? qtk_f16_to_f32_avx512 : qtk_bf16_to_f32_avx512)(src, dst, n);
			return QTK_OK;
		}
		if (isa == QTK_ISA_AVX2) {
			(dt == QTK_DT_F16 ? qtk_f16_to_f32_avx2 : qtk_bf16_to_f32_avx2)(src, dst, n);
			return QTK_OK;
		}
	}
	to_f32_scalar(dt, src, dst, n);
	return QTK_OK;
}

/* The scalar reference of qtk_from_f32_checked. */
static size_t narrow_scalar(int f16, const float *src, uint8_t *d, size_t n,
                            uint64_t *flushed)
{
	uint32_t flush_max = f16 ? HALF_FLUSH_MAX : BHALF_FLUSH_MAX;
	uint32_t ovf_min = f16 ? HALF_OVF_MIN : BHALF_OVF_MIN;
	size_t first = n;

	for (size_t i = 0; i < n; i++) {
		uint16_t h = f16 ? qtk_f32_to_f16(src[i]) : qtk_f32_to_bf16(src[i]);
		uint32_t a = bits_from_f32(src[i]) & 0x7fffffffu;

		memcpy(d + 2 * i, &h, 2);
		*flushed += (uint64_t)narrow_flushes(a, flush_max);
		if (first == n && narrow_overflows(a, ovf_min))
			first = i;
	}
	return first;
}

qtk_err qtk_from_f32_checked(qtk_dtype dt, const float *src, void *dst, size_t n,
                             size_t *first_ovf, uint64_t *flushed)
{
	qtk_isa isa = qtk_isa_active();
	uint64_t fl = 0;
	size_t first = n;

	switch (dt) {
	case QTK_DT_F32:
		memcpy(dst, src, n * 4);
		break;
	case QTK_DT_F16:
		first = isa == QTK_ISA_AVX512 ? qtk_f32_to_f16_avx512(src, dst, n, &fl)
		      : isa == QTK_ISA_AVX2   ? qtk_f32_to_f16_avx2(src, dst, n, &fl)
		                              : narrow_scalar(1, src, dst, n, &fl);
		break;
	case QTK_DT_BF16:
		first = isa == QTK_ISA_AVX512 ? qtk_f32_to_bf16_avx512(src, dst, n, &fl)
		      : isa == QTK_ISA_AVX2   ? qtk_f32_to_bf16_avx2(src, dst, n, &fl)
		                              : narrow_scalar(0, src, dst, n, &fl);
		break;
	default:
		return QTK_E_ARG;
	}
	if (first_ovf)
		*first_ovf = first;
	if (flushed)
		*flushed += fl;
	return QTK_OK;
}

qtk_err qtk_from_f32(qtk_dtype dt, const float *src, void *dst, size_t n)
{
	return qtk_from_f32_checked(dt, src, dst, n, NULL, NULL);
}
