/* quant: NF4 double quantization of the group absmax values (tensor-level).
 * Following bitsandbytes' nested quantization as far as qtk's fixed plane
 * geometry allows: offset = mean of all absmax values (sum in double, stored
 * f32), then (absmax - offset) quantized blockwise in blocks of 256 groups
 * with one f32 scale per block. Deviation: bitsandbytes uses its dynamic
 * 8-bit map for the codes; qtk uses linear symmetric int8:
 * s = max|a - offset| / 127 over the block, q = roundf((a - offset) / s)
 * clamped to [-127, 127], stored as a two's complement byte; a block whose
 * values all equal the offset has s = 0 and q = 0.
 * DQ plane: f32 offset, then one f32 scale per block (little-endian). */
#include <math.h>
#include <string.h>

#include "quant_impl.h"

qtk_err qtk_q_double_quant(const float *absmax, uint64_t ngroups, uint8_t *codes,
                           void *dq, qtk_status *st)
{
	double sum = 0;
	uint8_t *out = dq;

	for (uint64_t i = 0; i < ngroups; i++) {
		if (!isfinite(absmax[i]) || absmax[i] < 0.0f)
			return qtk_fail(st, QTK_E_Q_NONFINITE,
			                "double quant: group %llu: absmax %g is not a finite "
			                "non-negative value", (unsigned long long)i,
			                (double)absmax[i]);
		sum += (double)absmax[i];
	}
	float off = ngroups ? (float)(sum / (double)ngroups) : 0.0f;
	memcpy(out, &off, 4);
	for (uint64_t b = 0; b * 256 < ngroups; b++) {
		uint64_t i0 = b * 256, n = ngroups - i0 < 256 ? ngroups - i0 : 256;
		float m = 0;
		for (uint64_t j = 0; j < n; j++) {
			float a = fabsf(absmax[i0 + j] - off);
			m = a > m ? a : m;
		}
		float s = m / 127.0f, is = s != 0.0f ? 1.0f / s : 0.0f;
		if (!isfinite(is))
			return qtk_fail(st, QTK_E_Q_SCALE_RANGE,
			                "double quant: block %llu: scale %g has no finite inverse",
			                (unsigned long long)b, (double)s);
		memcpy(out + 4 + 4 * b, &s, 4);
		for (uint64_t j = 0; j < n; j++) {
			float v = roundf((absmax[i0 + j] - off) * is);
			v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
			codes[i0 + j] = (uint8_t)(int8_t)v;
		}
	}
	return QTK_OK;
}

void qtk_q_double_dequant(const uint8_t *codes, uint64_t ngroups, const void *dq,
                          float *absmax)
{
	const uint8_t *in = dq;
	float off, s;

	memcpy(&off, in, 4);
	for (uint64_t i = 0; i < ngroups; i++) {
		if (i % 256 == 0)
			memcpy(&s, in + 4 + 4 * (i / 256), 4);
		absmax[i] = (float)(int8_t)codes[i] * s + off;
	}
}
