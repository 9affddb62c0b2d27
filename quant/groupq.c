/* quant: the group-wise quantizers INT8 (ggml Q8_0), INT4 (ggml Q4_0),
 * INT4_AFFINE (ggml Q4_1), NF4 (bitsandbytes) and INT8_AFFINE (MLX affine,
 * 8 bits), scalar reference paths, plus the data-free scale search.
 * docs/quantization.md states every rule; the comments here name the
 * reference each one follows. Codes are always computed from the f32
 * parameters of the reference (as ggml / bitsandbytes / MLX do), then the
 * parameters are rounded to the scale dtype and checked finite. */
#include <math.h>
#include <string.h>

#include "quant_impl.h"

/* Groups whose largest magnitude (or, affine, whose range) is below this are
 * zero (or constant) groups: scale 0, every code at the zero point. Also
 * keeps 1/d finite. Groups whose scale underflows the scale dtype (f16:
 * scale < 2^-25) are treated the same way. */
#define TINY 0x1p-64f

/* bitsandbytes NF4 code values (index = stored nibble). */
const float qtk_nf4_values[16] = {
	-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
	-0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
	0.07958029955625534f, 0.16093020141124725f, 0.24611230611801147f,
	0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
	0.7229568362236023f, 1.0f,
};

/* The 15 thresholds of dQuantizeNF4, ascending. */
static const float nf4_th[15] = { -0.8480964004993439f, -0.6106329262256622f,
	-0.4599952697753906f, -0.33967943489551544f, -0.23460740596055984f,
	-0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
	0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f,
	0.3893125355243683f, 0.5016634166240692f, 0.6427869200706482f,
	0.8614784181118011f };

/* bitsandbytes dQuantizeNF4: a binary decision tree on x = w / absmax with
 * strict '>' at each threshold, so a value exactly at a threshold takes the
 * lower code. NaN would take code 0; qtk never passes NaN. */
uint8_t qtk_nf4_code(float x)
{
	if (x > 0.03979014977812767f) {
		if (x > 0.3893125355243683f) {
			if (x > 0.6427869200706482f)
				return x > 0.8614784181118011f ? 15 : 14;
			return x > 0.5016634166240692f ? 13 : 12;
		}
		if (x > 0.2035212516784668f)
			return x > 0.2920137718319893f ? 11 : 10;
		return x > 0.1202552504837513f ? 9 : 8;
	}
	if (x > -0.33967943489551544f) {
		if (x > -0.13791173323988914f)
			return x > -0.045525018125772476f ? 7 : 6;
		return x > -0.23460740596055984f ? 5 : 4;
	}
	if (x > -0.6106329262256622f)
		return x > -0.4599952697753906f ? 3 : 2;
	return x > -0.8480964004993439f ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* Per-group parameters and codes                                      */
/* ------------------------------------------------------------------ */

static int kind_bits(qtk_scheme_id k)
{
	return (k == QTK_SCHEME_INT8 || k == QTK_SCHEME_INT8_AFFINE) ? 8 : 4;
}

/* RTN parameters, exactly as the reference computes them in f32. */
static gparams rtn_params(qtk_scheme_id k, const float *x, size_t n)
{
	gparams g = { 0, 0 };
	float amax = 0, mx = 0, lo = x[0], hi = x[0];

	for (size_t i = 0; i < n; i++) {
		float a = fabsf(x[i]);
		amax = a > amax ? a : amax;
		lo = x[i] < lo ? x[i] : lo;
		hi = x[i] > hi ? x[i] : hi;
	}
	if (k == QTK_SCHEME_INT4) /* Q4_0: the first element of largest magnitude */
		for (size_t i = 0; i < n; i++)
			if (fabsf(x[i]) == amax) {
				mx = x[i];
				break;
			}
	switch (k) {
	case QTK_SCHEME_INT8: /* Q8_0: d = amax / 127 */
		g.p = amax < TINY ? 0 : amax / 127.0f;
		break;
	case QTK_SCHEME_INT4: /* Q4_0: d = max / -8, max signed */
		g.p = amax < TINY ? 0 : mx / -8.0f;
		break;
	case QTK_SCHEME_NF4: /* bitsandbytes: absmax */
		g.p = amax < TINY ? 0 : amax;
		break;
	case QTK_SCHEME_INT4_AFFINE: /* Q4_1: d = (max - min) / 15, m = min */
		g.p = hi - lo < TINY ? 0 : (hi - lo) / 15.0f;
		g.b = lo;
		break;
	case QTK_SCHEME_INT8_AFFINE:
		g = qtk_mlx_affine_params(lo, hi, 8);
		break;
	default:
		break;
	}
	return g;
}

/* MLX affine_quantize (mlx/ops.cpp), per group in f32:
 *   scale = max((max - min) / n_bins, 1e-7); edge = min if |min| > |max|
 *   else max, and scale is negated when edge = max; q0 = rint(edge/scale);
 *   if q0 != 0: scale = edge / q0, bias = edge; else bias = 0. */
gparams qtk_mlx_affine_params(float lo, float hi, int bits)
{
	float nbins = (float)((1 << bits) - 1);
	int mask = fabsf(lo) > fabsf(hi);
	float s = (hi - lo) / nbins;
	float edge = mask ? lo : hi;
	float q0;
	gparams g;

	s = s > 1e-7f ? s : 1e-7f;
	if (!mask)
		s = -s;
	q0 = nearbyintf(edge / s);
	if (q0 != 0) {
		g.p = edge / q0;
		g.b = edge;
	} else {
		g.p = s;
		g.b = 0;
	}
	return g;
}

/* Codes of one group from parameters (f32). Every value is clamped as a
 * float before the integer conversion (it is never NaN: inputs are finite
 * and 1/d is finite), so no conversion is ever out of range; for RTN parameters the clamps never bind except where the
 * reference clamps too (Q4_0/Q4_1 MIN(15, .), MLX clip). */
static void encode(qtk_scheme_id k, const float *x, size_t n, gparams g, uint8_t *q)
{
	float id, t;

	switch (k) {
	case QTK_SCHEME_INT8: /* q = roundf(x * (1/d)): half away from zero */
		id = g.p != 0 ? 1.0f / g.p : 0.0f;
		for (size_t i = 0; i < n; i++) {
			int v;
			float f;
			t = x[i] * id;
			t = t < -127.0f ? -127.0f : t > 127.0f ? 127.0f : t;
			/* roundf without the libm call: t - trunc(t) is exact */
			v = (int)t;
			f = t - (float)v;
			v += (f >= 0.5f) - (f <= -0.5f);
			q[i] = (uint8_t)(int8_t)v;
		}
		break;
	case QTK_SCHEME_INT4: /* q+8 = min(15, trunc(x * (1/d) + 8.5)) */
		id = g.p != 0 ? 1.0f / g.p : 0.0f;
		for (size_t i = 0; i < n; i++) {
			t = x[i] * id;
			t += 8.5f;
			t = t < 0.0f ? 0.0f : t > 15.0f ? 15.0f : t;
			q[i] = (uint8_t)t;
		}
		break;
	case QTK_SCHEME_INT4_AFFINE: /* q = min(15, trunc((x - m) * (1/d) + 0.5)) */
		id = g.p != 0 ? 1.0f / g.p : 0.0f;
		for (size_t i = 0; i < n; i++) {
			t = x[i] - g.b;
			t *= id;
			t += 0.5f;
			t = t < 0.0f ? 0.0f : t > 15.0f ? 15.0f : t;
			q[i] = (uint8_t)t;
		}
		break;
	case QTK_SCHEME_NF4: /* tree(x * (1/absmax)); zero group: code 7 (0.0) */
		if (g.p == 0) {
			memset(q, 7, n);
			break;
		}
		id = 1.0f / g.p;
		/* the tree is a search over sorted thresholds with strict '>', so
		 * its code is the number of thresholds below x (branch-free) */
		for (size_t i = 0; i < n; i++) {
			float v = x[i] * id;
			int c = 0;
			for (int j = 0; j < 15; j++)
				c += v > nf4_th[j];
			q[i] = (uint8_t)c;
		}
		break;
	case QTK_SCHEME_INT8_AFFINE: /* clip(rint((x - bias) / scale), 0, 255) */
		for (size_t i = 0; i < n; i++) {
			t = x[i] - g.b;
			t /= g.p;
			t = t < 0.0f ? 0.0f : t > 255.0f ? 255.0f : t;
			/* rint (ties to even) for 0 <= t < 2^23, no libm call */
			t += 0x1p23f;
			t -= 0x1p23f;
			q[i] = (uint8_t)t;
		}
		break;
	default:
		break;
	}
}

/* Value of code q under (stored) parameters; the dequantize arithmetic. */
static inline float decode(qtk_scheme_id k, uint8_t q, float p, float b)
{
	float t;

	switch (k) {
	case QTK_SCHEME_INT8:
		return (float)(int8_t)q * p;
	case QTK_SCHEME_INT4:
		return (float)((int)q - 8) * p;
	case QTK_SCHEME_NF4:
		return qtk_nf4_values[q & 15] * p;
	case QTK_SCHEME_INT4_AFFINE:
	case QTK_SCHEME_INT8_AFFINE:
		t = (float)q * p;
		return t + b;
	default:
		return 0;
	}
}

/* Decode n codes starting at column c0 (even for 4-bit when n > 1) of a
 * code row into o; the same arithmetic as decode(), one loop per scheme. */
static void decode_group(qtk_scheme_id k, int bits, const uint8_t *crow, size_t c0,
                         size_t n, float p, float b, float *o)
{
	float lut[16];

	if (bits == 8) {
		const uint8_t *c = crow + c0;
		if (k == QTK_SCHEME_INT8)
			for (size_t i = 0; i < n; i++)
				o[i] = (float)(int8_t)c[i] * p;
		else
			for (size_t i = 0; i < n; i++) {
				float t = (float)c[i] * p;
				o[i] = t + b;
			}
		return;
	}
	for (int i = 0; i < 16; i++)
		lut[i] = decode(k, (uint8_t)i, p, b);
	if (c0 & 1) { /* only a one-element view (dot) starts odd */
		for (size_t i = 0; i < n; i++) {
			size_t c = c0 + i;
			o[i] = lut[(crow[c / 2] >> (4 * (c & 1))) & 15];
		}
		return;
	}
	const uint8_t *c = crow + c0 / 2;
	for (size_t i = 0; i + 1 < n; i += 2) {
		o[i] = lut[c[i / 2] & 15];
		o[i + 1] = lut[c[i / 2] >> 4];
	}
	if (n & 1)
		o[n - 1] = lut[c[n / 2] & 15];
}

/* ------------------------------------------------------------------ */
/* Scale storage                                                        */
/* ------------------------------------------------------------------ */

/* Round v to dtype and back. */
static float round_to(qtk_dtype dt, float v)
{
	if (dt == QTK_DT_F16)
		return qtk_f16_to_f32(qtk_f32_to_f16(v));
	if (dt == QTK_DT_BF16)
		return qtk_bf16_to_f32(qtk_f32_to_bf16(v));
	return v;
}

static void store_param(qtk_dtype dt, void *plane, size_t idx, float v)
{
	uint16_t h;

	if (dt == QTK_DT_F32) {
		memcpy((char *)plane + 4 * idx, &v, 4);
		return;
	}
	h = dt == QTK_DT_F16 ? qtk_f32_to_f16(v) : qtk_f32_to_bf16(v);
	memcpy((char *)plane + 2 * idx, &h, 2);
}

static float load_param(qtk_dtype dt, const void *plane, size_t idx)
{
	uint16_t h;
	float v;

	if (dt == QTK_DT_F32) {
		memcpy(&v, (const char *)plane + 4 * idx, 4);
		return v;
	}
	memcpy(&h, (const char *)plane + 2 * idx, 2);
	return dt == QTK_DT_F16 ? qtk_f16_to_f32(h) : qtk_bf16_to_f32(h);
}

/* ------------------------------------------------------------------ */
/* Data-free search                                                     */
/* ------------------------------------------------------------------ */

/* Weighted squared error of codes q under stored parameters: per-element
 * value as decode(), squared difference summed in double. */
static double group_err(qtk_scheme_id k, const float *x, const float *imp, size_t n,
                        const uint8_t *q, float p, float b)
{
	float lut[16], v[256];
	double e = 0;

	if (kind_bits(k) == 4)
		for (int i = 0; i < 16; i++)
			lut[i] = decode(k, (uint8_t)i, p, b);
	for (size_t c0 = 0; c0 < n; c0 += 256) {
		size_t m = n - c0 < 256 ? n - c0 : 256;
		if (kind_bits(k) == 4)
			for (size_t i = 0; i < m; i++)
				v[i] = lut[q[c0 + i]];
		else if (k == QTK_SCHEME_INT8)
			for (size_t i = 0; i < m; i++)
				v[i] = (float)(int8_t)q[c0 + i] * p;
		else
			for (size_t i = 0; i < m; i++) {
				float t = (float)q[c0 + i] * p;
				v[i] = t + b;
			}
		for (size_t i = 0; i < m; i++) {
			double d = (double)x[c0 + i] - (double)v[i];
			e += imp ? (double)imp[c0 + i] * d * d : d * d;
		}
	}
	return e;
}

/* Least-squares refit of the parameters for fixed codes:
 * symmetric: p = sum(w x v) / sum(w v^2) with v the code value at p = 1;
 * affine: the 2x2 normal equations for x ~ p*q + b. 0 if degenerate. */
static int refit(qtk_scheme_id k, const float *x, const float *imp, size_t n,
                 const uint8_t *q, gparams *g)
{
	double sw = 0, sq = 0, sqq = 0, sx = 0, sqx = 0, det;

	for (size_t i = 0; i < n; i++) {
		double w = imp ? (double)imp[i] : 1.0;
		double v = k == QTK_SCHEME_INT4_AFFINE || k == QTK_SCHEME_INT8_AFFINE
		           ? (double)q[i] : (double)decode(k, q[i], 1.0f, 0.0f);
		sw += w;
		sq += w * v;
		sqq += w * v * v;
		sx += w * (double)x[i];
		sqx += w * v * (double)x[i];
	}
	if (k != QTK_SCHEME_INT4_AFFINE && k != QTK_SCHEME_INT8_AFFINE) {
		if (!(sqq > 0))
			return 0;
		g->p = (float)(sqx / sqq);
		return isfinite(g->p) && g->p != 0;
	}
	det = sw * sqq - sq * sq;
	if (!(det > 0))
		return 0;
	g->p = (float)((sw * sqx - sq * sx) / det);
	g->b = (float)((sqq * sx - sq * sqx) / det);
	return isfinite(g->p) && isfinite(g->b) && g->p != 0;
}

#define NRATIO 5
static const float ratios[NRATIO] = { 0.95f, 0.9f, 0.85f, 0.8f, 0.7f };

/* Try candidate g (rounded to dt): encode, score, keep if strictly better. */
static void try_cand(qtk_scheme_id k, qtk_dtype dt, const float *x, const float *imp,
                     size_t n, gparams g, uint8_t *tmp, uint8_t *best_q,
                     gparams *best, double *best_e)
{
	double e;

	g.p = round_to(dt, g.p);
	g.b = round_to(dt, g.b);
	if (!isfinite(g.p) || !isfinite(g.b) || g.p == 0)
		return;
	encode(k, x, n, g, tmp);
	e = group_err(k, x, imp, n, tmp, g.p, g.b);
	if (e < *best_e) {
		*best_e = e;
		*best = g;
		memcpy(best_q, tmp, n);
	}
}

/* Search: start from the RTN result (parameters and codes exactly as RTN
 * stores them), try clipped ranges (symmetric: p * r; affine: the range
 * shrunk by r about its centre, re-derived by the scheme's RTN rule), then
 * two least-squares refits of the best codes. Each candidate's parameters
 * are rounded to the scale dtype first and its codes are computed from the
 * rounded values; the first candidate with the strictly lowest weighted
 * error wins, so the result is deterministic and never worse than RTN. */
static gparams search_group(qtk_scheme_id k, qtk_dtype dt, const float *x,
                            const float *imp, size_t n, gparams rtn,
                            uint8_t *q, uint8_t *tmp)
{
	gparams best = { round_to(dt, rtn.p), round_to(dt, rtn.b) }, g;
	double best_e = group_err(k, x, imp, n, q, best.p, best.b);
	int affine = k == QTK_SCHEME_INT4_AFFINE || k == QTK_SCHEME_INT8_AFFINE;
	float lo = x[0], hi = x[0];

	if (rtn.p == 0 || best_e == 0)
		return best;
	for (size_t i = 0; i < n; i++) {
		lo = x[i] < lo ? x[i] : lo;
		hi = x[i] > hi ? x[i] : hi;
	}
	for (int r = 0; r < NRATIO; r++) {
		if (!affine) {
			g.p = rtn.p * ratios[r];
			g.b = 0;
		} else {
			float c = 0.5f * lo + 0.5f * hi, h = 0.5f * hi - 0.5f * lo;
			float l2 = c - h * ratios[r], h2 = c + h * ratios[r];
			if (k == QTK_SCHEME_INT4_AFFINE) {
				g.p = (h2 - l2) / 15.0f;
				g.b = l2;
			} else {
				g = qtk_mlx_affine_params(l2, h2, 8);
			}
		}
		try_cand(k, dt, x, imp, n, g, tmp, q, &best, &best_e);
	}
	for (int it = 0; it < 2; it++) {
		g = best;
		if (!refit(k, x, imp, n, q, &g))
			break;
		try_cand(k, dt, x, imp, n, g, tmp, q, &best, &best_e);
	}
	return best;
}

/* ------------------------------------------------------------------ */
/* Row driver                                                           */
/* ------------------------------------------------------------------ */

static void put_codes(int bits, uint8_t *row, size_t c0, const uint8_t *q, size_t n)
{
	if (bits == 8) {
		memcpy(row + c0, q, n);
		return;
	}
	/* c0 is even: groups are >= 16 elements or the whole row */
	for (size_t i = 0; i + 1 < n; i += 2)
		row[(c0 + i) / 2] = (uint8_t)(q[i] | (q[i + 1] << 4));
	if (n & 1)
		row[(c0 + n - 1) / 2] = q[n - 1];
}

/* 1 if no NaN/Inf among x[0..n) (exponent bits all ones), branch-free. */
static int all_finite(const float *x, size_t n)
{
	uint32_t bad = 0, u;

	for (size_t i = 0; i < n; i++) {
		memcpy(&u, &x[i], 4);
		bad |= (u & 0x7f800000u) == 0x7f800000u;
	}
	return !bad;
}

static qtk_err nonfinite(const qtk_q_opts *o, size_t r, size_t gi, size_t col,
                         float v, qtk_status *st)
{
	return qtk_fail(st, QTK_E_Q_NONFINITE,
	                "tensor '%s': row %llu, group %zu (column %zu): value is %s",
	                o && o->tensor ? o->tensor : "?",
	                (unsigned long long)((o ? o->row0 : 0) + r), gi, col,
	                isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf"));
}

qtk_err groupq_quantize(const qtk_q_layout *L, const float *src, size_t nrows,
                        size_t cols, const qtk_q_planes *dst,
                        const qtk_q_opts *opts, qtk_status *st)
{
	qtk_scheme_id k = L->scheme;
	const qtk_q_scheme *s = qtk_q_scheme_get(k);
	size_t g = L->group == QTK_GROUP_ROW ? cols : L->group;
	size_t gpr = qtk_q_groups_per_row(L, cols);
	size_t rb = qtk_q_row_bytes(L, cols, QTK_PLANE_CODES);
	int bits = kind_bits(k), search = opts && opts->search;
	const float *imp = opts ? opts->importance : NULL;
	uint8_t *q, *tmp;
	qtk_err rc = QTK_OK;

	QTK_TRY(qtk_q_layout_check(L, nrows, cols, st));
	if (L->flags & QTK_QF_DOUBLE_QUANT)
		return qtk_fail(st, QTK_E_ARG,
		                "tensor '%s': double quantization is tensor-level: quantize "
		                "with scale dtype F32 and no flag, then qtk_q_double_quant",
		                opts && opts->tensor ? opts->tensor : "?");
	if (!nrows || !cols)
		return QTK_OK;
	q = qtk_malloc(2 * g);
	if (!q)
		return qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory (%zu bytes)",
		                opts && opts->tensor ? opts->tensor : "?", 2 * g);
	tmp = q + g;
	for (size_t r = 0; r < nrows && rc == QTK_OK; r++) {
		const float *row = src + r * cols;
		uint8_t *crow = (uint8_t *)dst->p[QTK_PLANE_CODES] + r * rb;
		for (size_t gi = 0; gi < gpr; gi++) {
			size_t c0 = gi * g, n = cols - c0 < g ? cols - c0 : g;
			const float *x = row + c0;
			gparams gp, sp;
			if (!all_finite(x, n)) {
				size_t i = 0;
				while (isfinite(x[i]))
					i++;
				rc = nonfinite(opts, r, gi, c0 + i, x[i], st);
				goto out;
			}
			gp = rtn_params(k, x, n);
			if (!isfinite(gp.p) || !isfinite(gp.b))
				goto range;
			encode(k, x, n, gp, q);
			sp.p = round_to(L->scale_dtype, gp.p);
			sp.b = round_to(L->scale_dtype, gp.b);
			if (sp.p == 0 && gp.p != 0 && k != QTK_SCHEME_INT8_AFFINE) {
				/* scale underflows the dtype: a zero (constant) group */
				gp.p = 0;
				encode(k, x, n, gp, q);
			}
			if (search)
				sp = search_group(k, L->scale_dtype, x, imp ? imp + c0 : NULL,
				                  n, gp, q, tmp);
			if (!isfinite(sp.p) || !isfinite(sp.b))
				goto range;
			put_codes(bits, crow, c0, q, n);
			store_param(L->scale_dtype, dst->p[QTK_PLANE_SCALES], r * gpr + gi, sp.p);
			if (s->has_bias)
				store_param(L->scale_dtype, dst->p[QTK_PLANE_BIASES], r * gpr + gi, sp.b);
			continue;
range:
			rc = qtk_fail(st, QTK_E_Q_SCALE_RANGE,
			              "tensor '%s': row %llu, group %zu: %s scale/bias does not "
			              "fit %s (values up to %g); use an f32 scale dtype",
			              opts && opts->tensor ? opts->tensor : "?",
			              (unsigned long long)((opts ? opts->row0 : 0) + r), gi, s->name,
			              qtk_dtype_name(L->scale_dtype),
			              (double)fmaxf(fabsf(gp.p), fabsf(gp.b)));
			goto out;
		}
	}
out:
	qtk_free(q);
	return rc;
}

void groupq_dequantize(const qtk_q_layout *L, const qtk_q_cplanes *src,
                       size_t nrows, size_t cols, float *dst)
{
	qtk_scheme_id k = L->scheme;
	size_t g = L->group == QTK_GROUP_ROW ? cols : L->group;
	size_t gpr = qtk_q_groups_per_row(L, cols);
	size_t rb = qtk_q_row_bytes(L, cols, QTK_PLANE_CODES);
	int bits = kind_bits(k), bias = qtk_q_scheme_get(k)->has_bias;

	for (size_t r = 0; r < nrows; r++) {
		const uint8_t *crow = (const uint8_t *)src->p[QTK_PLANE_CODES] + r * rb;
		for (size_t gi = 0; gi < gpr; gi++) {
			size_t c0 = gi * g, n = cols - c0 < g ? cols - c0 : g;
			float p = load_param(L->scale_dtype, src->p[QTK_PLANE_SCALES], r * gpr + gi);
			float b = bias ? load_param(L->scale_dtype, src->p[QTK_PLANE_BIASES],
			                            r * gpr + gi) : 0.0f;
			decode_group(k, bits, crow, c0, n, p, b, dst + r * cols + c0);
		}
	}
}

/* Row . x: the dequantized values times x, summed in 8 float lanes (element
 * i into lane i % 8), lanes folded as (l + l+4), (l + l+2), (l + l+1). */
float groupq_dot(const qtk_q_layout *L, const qtk_q_cplanes *row, size_t cols,
                 const float *x)
{
	float buf[256], lane[8] = { 0 };
	size_t g = L->group == QTK_GROUP_ROW ? cols : L->group;
	int bias = qtk_q_scheme_get(L->scheme)->has_bias, bits = kind_bits(L->scheme);
	const uint8_t *cr = row->p[QTK_PLANE_CODES];

	for (size_t c0 = 0; c0 < cols;) {
		size_t gi = c0 / g, gend = gi * g + g < cols ? gi * g + g : cols;
		size_t n = gend - c0 < 256 ? gend - c0 : 256;
		float p = load_param(L->scale_dtype, row->p[QTK_PLANE_SCALES], gi);
		float b = bias ? load_param(L->scale_dtype, row->p[QTK_PLANE_BIASES], gi) : 0.0f;
		decode_group(L->scheme, bits, cr, c0, n, p, b, buf);
		for (size_t i = 0; i < n; i++) {
			float t = buf[i] * x[c0 + i];
			lane[(c0 + i) & 7] += t;
		}
		c0 += n;
	}
	for (int i = 0; i < 4; i++)
		lane[i] += lane[i + 4];
	lane[0] += lane[2];
	lane[1] += lane[3];
	return lane[0] + lane[1];
}
