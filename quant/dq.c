/* quant: NF4 double quantization, after bitsandbytes' nested quantization
 * (compress_statistics): the tensor's group absmax values are centred on
 * their mean (the f32 offset) and quantized blockwise, 256 values per block,
 * to 8 bits with one f32 scale per block. Where qtk differs: bitsandbytes
 * uses its 256-value dynamic (tree) code for the 8-bit step; qtk uses a
 * linear symmetric code, byte = 128 + roundf((a - offset) / s) with
 * s = max |a - offset| / 127 over the block (byte 0 unused). The mean is
 * summed in double in index order and rounded to f32 once.
 *
 * DQ plane: f32 offset, then f32 s for block 0, 1, ... (little-endian).
 * This is a tensor-level pass: a chunked caller quantizes its rows with
 * scale_dtype F32 and no flag into a temporary [rows][groups] f32 absmax
 * array, and once every chunk is done calls qtk_q_double_quant on it to
 * produce the SCALES (u8) and DQ planes. The 4-bit codes are computed from
 * the f32 absmax, as bitsandbytes does. To dequantize, the reader calls
 * qtk_q_double_dequant to recover the f32 absmax values, then
 * qtk_q_dequantize_rows with scale_dtype F32 and no flag. */
#include <math.h>
#include <string.h>

#include "qtk_quant.h"

qtk_err qtk_q_double_quant(const float *absmax, uint64_t n, uint8_t *codes,
                           void *dq, qtk_status *st)
{
	double sum = 0;
	float off, s;
	uint8_t *out = dq;

	for (uint64_t i = 0; i < n; i++) {
		if (!isfinite(absmax[i]) || absmax[i] < 0)
			return qtk_fail(st, QTK_E_Q_NONFINITE,
			                "double quant: group absmax %llu is %g",
			                (unsigned long long)i, (double)absmax[i]);
		sum += (double)absmax[i];
	}
	off = n ? (float)(sum / (double)n) : 0.0f;
	memcpy(out, &off, 4);
	for (uint64_t b0 = 0, blk = 0; b0 < n; b0 += 256, blk++) {
		uint64_t m = n - b0 < 256 ? n - b0 : 256;
		float amax = 0, id;
		for (uint64_t i = 0; i < m; i++) {
			float a = fabsf(absmax[b0 + i] - off);
			amax = a > amax ? a : amax;
		}
		s = amax / 127.0f;
		if (!isfinite(s))
			return qtk_fail(st, QTK_E_Q_SCALE_RANGE, "double quant: block %llu scale overflows",
			                (unsigned long long)blk);
		id = s > 0 ? 1.0f / s : 0.0f;
		for (uint64_t i = 0; i < m; i++) {
			float t = (absmax[b0 + i] - off) * id;
			t = t < -127.0f ? -127.0f : t > 127.0f ? 127.0f : t;
			codes[b0 + i] = (uint8_t)(128 + (int)roundf(t));
		}
		memcpy(out + 4 + 4 * blk, &s, 4);
	}
	return QTK_OK;
}

void qtk_q_double_dequant(const uint8_t *codes, const void *dq, uint64_t n, float *absmax)
{
	const uint8_t *in = dq;
	float off, s = 0;

	memcpy(&off, in, 4);
	for (uint64_t i = 0; i < n; i++) {
		float t;
		if (i % 256 == 0)
			memcpy(&s, in + 4 + 4 * (i / 256), 4);
		t = (float)((int)codes[i] - 128) * s;
		t += off;
		/* an absmax is never negative; a tiny group may round below 0 */
		absmax[i] = t > 0 ? t : 0.0f;
	}
}
