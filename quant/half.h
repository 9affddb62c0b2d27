/* quant (private): f16 / bf16 <-> f32 scalar conversions, inline for the
 * per-group scale loads and stores of the kernels' drivers. Round to
 * nearest even; NaN quieted with its top payload bits; f16 overflow to
 * Inf; subnormals exact. qtk_f16_to_f32 and friends (dtype.c) are these. */
#ifndef QTK_HALF_H
#define QTK_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float f32_from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static inline uint32_t bits_from_f32(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static inline float half_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f;
	uint32_t man = h & 0x3ff;

	if (exp == 0x1f) /* Inf / NaN: keep the payload */
		return f32_from_bits(sign | 0x7f800000u | (man << 13));
	if (exp == 0) {
		if (man == 0)
			return f32_from_bits(sign);
		/* subnormal: man * 2^-24, exact in f32 */
		float v = (float)man * 0x1p-24f;
		return f32_from_bits(sign | bits_from_f32(v));
	}
	return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

static inline uint16_t f32_to_half(float f)
{
	uint32_t u = bits_from_f32(f);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
	uint32_t a = u & 0x7fffffffu;

	if (a > 0x7f800000u) /* NaN: quiet, keep the top payload bits */
		return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
	if (a >= 0x477ff000u) /* rounds to >= 65520: Inf */
		return (uint16_t)(sign | 0x7c00);
	if (a < 0x38800000u) { /* below the smallest normal (2^-14) */
		/* value / 2^-24, rounded to nearest even by the FPU's default mode:
		 * adding 0.5 (2^-1) shifts the mantissa so the float add rounds */
		float v = f32_from_bits(a) * 0x1p+24f; /* exact scaling */
		/* round half to even */
		float r = nearbyintf(v);
		return (uint16_t)(sign | (uint16_t)r);
	}
	/* normal: rebias and round the 13 dropped bits to nearest even */
	uint32_t m = a + ((uint32_t)(15 - 127) << 23);
	m += 0x0fffu + ((m >> 13) & 1u);
	return (uint16_t)(sign | (m >> 13));
}

static inline float bhalf_to_f32(uint16_t b)
{
	return f32_from_bits((uint32_t)b << 16);
}

static inline uint16_t f32_to_bhalf(float f)
{
	uint32_t u = bits_from_f32(f);

	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: quiet it, keep sign */
		return (uint16_t)((u >> 16) | 0x0040);
	u += 0x7fffu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

/* What narrowing does to a finite f32 whose magnitude bits (|x| as u32)
 * are a; HALF_* for F16, BHALF_* for BF16. Overflow: a finite value that
 * rounds to Inf (F16: |x| >= 65520; BF16: |x| >= 3.3961775e38).
 * Flush: a nonzero value that rounds to zero (F16: |x| <= 2^-25, whose tie
 * goes to the even 0; BF16 keeps f32's exponent range, so only f32
 * subnormals <= 2^-134 flush). The SIMD kernels test the same ranges. */
#define HALF_FLUSH_MAX 0x33000000u
#define HALF_OVF_MIN 0x477ff000u
#define BHALF_FLUSH_MAX 0x00008000u
#define BHALF_OVF_MIN 0x7f7f8000u
#define F32_INF_BITS 0x7f800000u

static inline int narrow_flushes(uint32_t a, uint32_t flush_max)
{
	return a - 1u < flush_max; /* 1 <= a <= flush_max */
}

static inline int narrow_overflows(uint32_t a, uint32_t ovf_min)
{
	return a - ovf_min < F32_INF_BITS - ovf_min; /* ovf_min <= a < Inf */
}

#endif
