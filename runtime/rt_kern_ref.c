/* runtime: the scalar reference kernels. They define every result of
 * qtk_rt_matmul on quantized weights, reduction order included; the AVX2
 * and AVX-512 variants give the same bytes (docs/kernels.md).
 *
 * Both paths sum into 16 f32 lanes, each lane in increasing position order
 * with one fused multiply-add per step, then fold the lanes with
 * rt_fold16. Positions run block by block in the activation order of
 * rt_act (rt_private.h); nbp blocks, the padding ones included (their terms
 * are exact zeros).
 *   FLOAT: w = val(code) * scale (+ bias), the value qtk_q_dequantize_rows
 *          gives; position P of the row adds w * x into lane P % 16.
 *   INT8:  lane j of block k (positions 4j..4j+3, one group) has the exact
 *          integer p = sum v(code) * q; into lane 8*(k % 2) + j go
 *          fma(p, ws * d) and, affine, fma(xs, bias), ws the group scale
 *          (NF4: absmax / 127, v = round(127 * level)). */
#include <math.h>
#include <string.h>

#include "rt_private.h"

static float load_scale(qtk_dtype dt, const uint8_t *p, size_t i)
{
	uint16_t h;
	float f;

	if (dt == QTK_DT_F32) {
		memcpy(&f, p + 4 * i, 4);
		return f;
	}
	memcpy(&h, p + 2 * i, 2);
	return dt == QTK_DT_F16 ? qtk_f16_to_f32(h) : qtk_bf16_to_f32(h);
}

void rt_row_scales_ref(const rt_job *J, size_t r, float *ws, float *wb)
{
	size_t g0 = r * J->gpr;

	for (size_t g = 0; g < J->gpr; g++) {
		if (J->dq) { /* as qtk_q_double_dequant: code * block scale + offset */
			float off, s;
			memcpy(&off, J->dq, 4);
			memcpy(&s, J->dq + 4 + 4 * ((g0 + g) / 256), 4);
			ws[g] = (float)(int8_t)J->scales[g0 + g] * s + off;
		} else {
			ws[g] = load_scale(J->sdt, J->scales, g0 + g);
		}
		if (J->kind == RK_L4 && J->path == QTK_RT_INT8)
			ws[g] = ws[g] / 127.0f;
		if (wb)
			wb[g] = RK_AFFINE(J->kind) ? load_scale(J->sdt, J->biases, g0 + g) : 0.0f;
	}
	for (size_t g = J->gpr; g < J->gpr + RT_SPAD; g++) {
		ws[g] = 0.0f;
		if (wb)
			wb[g] = 0.0f;
	}
}

static unsigned code_at(const rt_job *J, const uint8_t *row, size_t e)
{
	if (e >= J->cols)
		return 0;
	return RK_BITS(J->kind) == 8 ? row[e] : (row[e >> 1] >> ((e & 1) * 4)) & 15;
}

/* The integer value of a code on the INT8 path. */
static int ival(const rt_job *J, unsigned c)
{
	switch (J->kind) {
	case RK_S8: return (int8_t)c;
	case RK_S4: return (int)c - J->off;
	case RK_L4: return J->lut_s[c & 15];
	default: return (int)c;
	}
}

/* The value of a code before its scale on the FLOAT path. */
static float fval(const rt_job *J, unsigned c)
{
	switch (J->kind) {
	case RK_S8: return (float)(int8_t)c;
	case RK_S4: return (float)((int)c - J->off);
	case RK_L4: return J->lut_f[c & 15];
	default: return (float)c;
	}
}

static float int_row(const rt_job *J, const uint8_t *row, const float *ws,
                     const float *wb, size_t b)
{
	const rt_act *a = J->act;
	const int8_t *q = a->q + b * a->nbp * RT_BLK;
	const int32_t *s = a->s + b * a->nbp * 8;
	const float *d = a->d + b * a->nbp * 8, *xs = a->xs + b * a->nbp * 8;
	float acc[16] = { 0 };

	(void)s;
	for (size_t k = 0; k < a->nbp; k++)
		for (unsigned j = 0; j < 8; j++) {
			int32_t p = 0;
			for (unsigned t = 0; t < 4; t++) {
				unsigned pos = 4 * j + t;
				p += ival(J, code_at(J, row, rt_elem(a->order, k, pos))) *
				     q[k * RT_BLK + pos];
			}
			size_t g = rt_group(J, rt_elem(a->order, k, 4 * j));
			unsigned l = 8 * (unsigned)(k & 1) + j;
			acc[l] = fmaf((float)p, ws[g] * d[k * 8 + j], acc[l]);
			if (RK_AFFINE(J->kind))
				acc[l] = fmaf(xs[k * 8 + j], wb[g], acc[l]);
		}
	return rt_fold16(acc);
}

static float float_row(const rt_job *J, const uint8_t *row, const float *ws,
                       const float *wb, size_t b)
{
	const rt_act *a = J->act;
	const float *xf = a->xf + b * a->nbp * RT_BLK;
	float acc[16] = { 0 };

	for (size_t k = 0; k < a->nbp; k++)
		for (unsigned p = 0; p < RT_BLK; p++) {
			size_t e = rt_elem(a->order, k, p), g = rt_group(J, e);
			float w = fval(J, code_at(J, row, e)) * ws[g];
			if (RK_AFFINE(J->kind))
				w = w + wb[g];
			acc[p & 15] = fmaf(w, xf[k * RT_BLK + p], acc[p & 15]);
		}
	return rt_fold16(acc);
}

void rt_rows_scalar(const rt_job *J, size_t r0, size_t r1, void *scratch)
{
	float *ws = scratch, *wb = ws + J->gpr + RT_SPAD;

	for (size_t r = r0; r < r1; r++) {
		const uint8_t *row = J->codes + r * J->cb;
		rt_row_scales_ref(J, r, ws, wb);
		for (size_t b = 0; b < J->act->batch; b++)
			J->y[b * J->rows + r] = J->path == QTK_RT_INT8 ? int_row(J, row, ws, wb, b)
			                                               : float_row(J, row, ws, wb, b);
	}
}
