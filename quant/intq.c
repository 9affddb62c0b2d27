/* quant: group-wise integer and NF4 schemes (scalar reference path).
 *   INT8         ggml Q8_0 rule: d = amax/127, q = roundf(x/d) (ties away)
 *   INT4         ggml Q4_0 rule: d = max/-8 (max = signed value of largest
 *                magnitude, first one wins), code = min(15, (int)(x/d + 8.5))
 *   INT4_AFFINE  ggml Q4_1 rule: d = (max-min)/15, bias = min,
 *                code = min(15, (int)((x-min)/d + 0.5))
 *   INT8_AFFINE  the same rule with 255 levels
 *   NF4          bitsandbytes: x/absmax, nearest of 16 NF4 values by the
 *                bitsandbytes decision tree (strict '>' at the midpoints)
 * Codes are computed from the f32 scale (as ggml does); the stored scale is
 * the scale rounded to scale_dtype. A group whose largest magnitude is below
 * FLT_MIN (all zero or subnormal only) is a zero group: codes for 0, scale 0,
 * bias 0; so is a group whose scale rounds to 0 in the scale dtype or whose
 * 1/d overflows (affine: a constant group carried by the bias). A group
 * whose stored scale or bias is not finite fails with QTK_E_Q_SCALE_RANGE. NaN/Inf input fails with
 * QTK_E_Q_NONFINITE naming tensor, row and group. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "acc_impl.h"
#include "quant_impl.h"

static const float nf4_values[16] = {
	-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
	-0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
	0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f,
	0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
	0.7229568362236023f, 1.0f,
};

/* Midpoints of neighbouring NF4 values as bitsandbytes spells them; a value
 * exactly on a midpoint takes the lower code. */
static const float nf4_mid[15] = {
	-0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f,
	-0.33967943489551544f, -0.23460740596055984f, -0.13791173323988914f,
	-0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,
	0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
	0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
};

const float *qtk_q_nf4_table(void)
{
	return nf4_values;
}

float qtk_q_nf4_value(unsigned code)
{
	return nf4_values[code & 15];
}

unsigned qtk_q_nf4_code(float x)
{
	/* same decisions as a binary search over the midpoints */
	unsigned lo = 0;
	for (unsigned step = 8; step; step >>= 1)
		if (lo + step <= 15 && x > nf4_mid[lo + step - 1])
			lo += step;
	return lo;
}

static const char *tname(const qtk_q_opts *o)
{
	return o && o->tensor ? o->tensor : "?";
}

static float load_scale(qtk_dtype dt, const void *p, size_t i)
{
	float f;
	if (dt == QTK_DT_F32) {
		memcpy(&f, (const uint8_t *)p + 4 * i, 4);
		return f;
	}
	uint16_t h;
	memcpy(&h, (const uint8_t *)p + 2 * i, 2);
	return dt == QTK_DT_F16 ? qtk_f16_to_f32(h) : qtk_bf16_to_f32(h);
}

/* Store v; returns the value as stored. */
static float store_scale(qtk_dtype dt, void *p, size_t i, float v)
{
	if (dt == QTK_DT_F32) {
		memcpy((uint8_t *)p + 4 * i, &v, 4);
		return v;
	}
	uint16_t h = dt == QTK_DT_F16 ? qtk_f32_to_f16(v) : qtk_f32_to_bf16(v);
	memcpy((uint8_t *)p + 2 * i, &h, 2);
	return dt == QTK_DT_F16 ? qtk_f16_to_f32(h) : qtk_bf16_to_f32(h);
}

static void put_code(const qtk_q_layout *L, uint8_t *row, size_t i, unsigned c)
{
	if (L->scheme == QTK_SCHEME_INT8 || L->scheme == QTK_SCHEME_INT8_AFFINE) {
		row[i] = (uint8_t)c;
	} else if (i & 1) {
		row[i >> 1] = (uint8_t)((row[i >> 1] & 0x0f) | (c << 4));
	} else {
		row[i >> 1] = (uint8_t)((row[i >> 1] & 0xf0) | (c & 15));
	}
}

static unsigned get_code(const qtk_q_layout *L, const uint8_t *row, size_t i)
{
	if (L->scheme == QTK_SCHEME_INT8 || L->scheme == QTK_SCHEME_INT8_AFFINE)
		return row[i];
	return (row[i >> 1] >> ((i & 1) * 4)) & 15;
}

static size_t group_len(const qtk_q_layout *L, size_t cols)
{
	return L->group == QTK_GROUP_ROW ? cols : L->group;
}

/* One element's code (same arithmetic as the per-scheme loops below). */
static unsigned code_of(qtk_scheme_id s, float x, float id, float mn)
{
	float v;
	switch (s) {
	case QTK_SCHEME_INT8:
		v = roundf(x * id);
		v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
		return (uint8_t)(int8_t)v;
	case QTK_SCHEME_INT4:
		v = x * id + 8.5f;
		v = v < 0.0f ? 0.0f : v > 15.0f ? 15.0f : v;
		return (unsigned)(int)v;
	case QTK_SCHEME_INT4_AFFINE:
	case QTK_SCHEME_INT8_AFFINE:
		v = (x - mn) * id + 0.5f;
		v = v < 0.0f ? 0.0f : v > (s == QTK_SCHEME_INT4_AFFINE ? 15.0f : 255.0f)
		        ? (s == QTK_SCHEME_INT4_AFFINE ? 15.0f : 255.0f) : v;
		return (unsigned)(int)v;
	default:
		return qtk_q_nf4_code(x * id);
	}
}

static float deq(const qtk_q_layout *L, unsigned c, float d, float b);

/* Data-free search: clipping ratios r = 1, 0.95, ..., 0.65 of the RTN range
 * (symmetric: d = r * d_rtn; affine: [min, max] shrunk by r around its
 * centre), each scored by the (importance-weighted) squared error computed
 * in double with the f32 scale; the first best ratio wins, so r = 1 (RTN)
 * is kept unless a smaller ratio is strictly better. Deterministic. */
static void search_group(const qtk_q_layout *L, const float *x, size_t n,
                         const float *imp, float *d, float *mn)
{
	int affine = L->scheme == QTK_SCHEME_INT4_AFFINE || L->scheme == QTK_SCHEME_INT8_AFFINE;
	float levels = L->scheme == QTK_SCHEME_INT4_AFFINE ? 15.0f : 255.0f;
	float d0 = *d, lo0 = *mn, c = 0, h = 0;
	double best = -1;

	if (affine) {
		/* the largest stored value is mn + levels*d: recover max from d */
		float mx = lo0 + d0 * levels;
		c = 0.5f * (lo0 + mx);
		h = 0.5f * (mx - lo0);
		if (h == 0.0f)
			return;
	}
	for (int k = 0; k < 8; k++) {
		float r = 1.0f - 0.05f * (float)k, td, tm = 0;
		if (affine) {
			tm = c - h * r;
			td = (2.0f * h * r) / levels;
		} else {
			td = d0 * r;
		}
		float id = td != 0.0f ? 1.0f / td : 0.0f;
		double e = 0;
		for (size_t j = 0; j < n; j++) {
			unsigned q = code_of(L->scheme, x[j], id, tm);
			double diff = (double)x[j] - (double)deq(L, q, td, tm);
			e += (imp ? (double)imp[j] : 1.0) * diff * diff;
		}
		if (best < 0 || e < best) {
			best = e;
			*d = td;
			*mn = tm;
		}
	}
}

/* Quantize one group x[0..n) starting at element i0 of row `row`. */
static qtk_err quant_group(const qtk_q_layout *L, const float *x, size_t n,
                           const float *imp, uint8_t *codes, size_t i0, void *scales,
                           void *biases, size_t gi, const qtk_q_opts *o,
                           uint64_t row, uint64_t g, qtk_status *st)
{
	float amax = 0, maxv = 0, mn = FLT_MAX, mx = -FLT_MAX;

	for (size_t j = 0; j < n; j++) {
		if (!isfinite(x[j]))
			return qtk_fail(st, QTK_E_Q_NONFINITE,
			                "tensor '%s': row %llu group %llu: %s in the input",
			                tname(o), (unsigned long long)row,
			                (unsigned long long)g, isnan(x[j]) ? "NaN" : "Inf");
		float a = fabsf(x[j]);
		if (a > amax) {
			amax = a;
			maxv = x[j];
		}
		mn = x[j] < mn ? x[j] : mn;
		mx = x[j] > mx ? x[j] : mx;
	}
	int affine = L->scheme == QTK_SCHEME_INT4_AFFINE || L->scheme == QTK_SCHEME_INT8_AFFINE;
	if (amax < FLT_MIN) { /* all zero or subnormal only */
zero_group:;
		unsigned zc = L->scheme == QTK_SCHEME_INT4 ? 8 : L->scheme == QTK_SCHEME_NF4 ? 7 : 0;
		for (size_t j = 0; j < n; j++)
			put_code(L, codes, i0 + j, zc);
		store_scale(L->scale_dtype, scales, gi, 0.0f);
		if (affine)
			store_scale(L->scale_dtype, biases, gi, 0.0f);
		return QTK_OK;
	}
	float d, id, sd;
	switch (L->scheme) {
	case QTK_SCHEME_INT8:
		d = amax / 127.0f;
		break;
	case QTK_SCHEME_INT4:
		d = maxv / -8.0f;
		break;
	case QTK_SCHEME_INT4_AFFINE:
		d = (mx - mn) / 15.0f;
		break;
	case QTK_SCHEME_INT8_AFFINE:
		d = (mx - mn) / 255.0f;
		break;
	default: /* NF4 */
		d = amax;
		break;
	}
	if (o && o->search)
		search_group(L, x, n, imp, &d, &mn);
	id = d != 0.0f ? 1.0f / d : 0.0f;
	sd = store_scale(L->scale_dtype, scales, gi, d);
	/* Tiny but normal groups (near-dead channels): a scale that rounds to 0
	 * in the scale dtype (F16: < 2^-25) or whose reciprocal overflows f32 is
	 * a zero group (symmetric) or a constant group carried by the bias
	 * (affine), instead of failing the tensor. Its error is at most its
	 * largest magnitude (affine: its range plus the bias rounding). */
	if (d != 0.0f && (sd == 0.0f || !isfinite(id))) {
		if (!affine)
			goto zero_group;
		d = 0.0f;
		id = 0.0f;
		sd = store_scale(L->scale_dtype, scales, gi, 0.0f);
	}
	/* a constant affine group has d = 0 and is carried by the bias alone */
	if (!isfinite(sd) || (sd == 0.0f && !affine) || !isfinite(id))
		return qtk_fail(st, QTK_E_Q_SCALE_RANGE,
		                "tensor '%s': row %llu group %llu: scale %g does not fit %s",
		                tname(o), (unsigned long long)row, (unsigned long long)g,
		                (double)d, qtk_dtype_name(L->scale_dtype));
	if (affine) {
		float sb = store_scale(L->scale_dtype, biases, gi, mn);
		if (!isfinite(sb) || (affine && d != 0.0f && sd == 0.0f))
			return qtk_fail(st, QTK_E_Q_SCALE_RANGE,
			                "tensor '%s': row %llu group %llu: scale %g / bias %g do not fit %s",
			                tname(o), (unsigned long long)row, (unsigned long long)g,
			                (double)d, (double)mn, qtk_dtype_name(L->scale_dtype));
	}
	/* one loop per scheme (no switch per element); i0 is even, so 4-bit
	 * codes pack in pairs */
	switch (L->scheme) {
	case QTK_SCHEME_INT8:
		for (size_t j = 0; j < n; j++) {
			float v = roundf(x[j] * id); /* |v| <= 127 up to rounding */
			v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
			codes[i0 + j] = (uint8_t)(int8_t)v;
		}
		break;
	case QTK_SCHEME_INT8_AFFINE:
		for (size_t j = 0; j < n; j++) {
			float v = (x[j] - mn) * id + 0.5f; /* in [0.5, 255.5] up to rounding */
			v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
			codes[i0 + j] = (uint8_t)(int)v;
		}
		break;
	default: {
		uint8_t *out = codes + i0 / 2;
		for (size_t j = 0; j < n; j += 2) {
			unsigned c[2] = { 0, 0 };
			for (size_t t = 0; t < 2 && j + t < n; t++) {
				float v, xv = x[j + t];
				if (L->scheme == QTK_SCHEME_INT4) {
					v = xv * id + 8.5f; /* in [0.5, 16.5]: (int) is safe */
					v = v < 0.0f ? 0.0f : v > 15.0f ? 15.0f : v;
					c[t] = (unsigned)(int)v;
				} else if (L->scheme == QTK_SCHEME_INT4_AFFINE) {
					v = (xv - mn) * id + 0.5f;
					v = v < 0.0f ? 0.0f : v > 15.0f ? 15.0f : v;
					c[t] = (unsigned)(int)v;
				} else {
					c[t] = qtk_q_nf4_code(xv * id);
				}
			}
			out[j / 2] = (uint8_t)(c[0] | c[1] << 4);
		}
		break;
	}
	}
	return QTK_OK;
}

qtk_err intq_quantize(const qtk_q_layout *L, const float *src, size_t nrows,
                      size_t cols, const qtk_q_planes *dst,
                      const qtk_q_opts *opts, qtk_status *st)
{
	size_t gl = group_len(L, cols);
	size_t gpr = (size_t)qtk_q_groups_per_row(L, cols);
	size_t cb = (size_t)qtk_q_row_bytes(L, cols, QTK_PLANE_CODES);
	uint64_t row0 = opts ? opts->row0 : 0;

	if (L->flags & QTK_QF_DOUBLE_QUANT)
		return qtk_fail(st, QTK_E_UNSUPPORTED,
		                "tensor '%s': double quantization is a tensor-level pass: quantize with F32 scales, then qtk_q_double_quant",
		                tname(opts));
	for (size_t r = 0; r < nrows; r++) {
		uint8_t *codes = (uint8_t *)dst->p[QTK_PLANE_CODES] + r * cb;
		memset(codes, 0, cb);
		for (size_t g = 0; g < gpr; g++) {
			size_t i0 = g * gl, n = cols - i0 < gl ? cols - i0 : gl;
			const float *imp = opts && opts->importance ? opts->importance + i0 : NULL;
			QTK_TRY(quant_group(L, src + r * cols + i0, n, imp, codes, i0,
			                    dst->p[QTK_PLANE_SCALES], dst->p[QTK_PLANE_BIASES],
			                    r * gpr + g, opts, row0 + r, g, st));
		}
	}
	return QTK_OK;
}

/* Element value: the exact arithmetic every path uses (one multiply, or one
 * multiply and one add for affine, in f32). */
static float deq(const qtk_q_layout *L, unsigned c, float d, float b)
{
	switch (L->scheme) {
	case QTK_SCHEME_INT8:
		return (float)(int8_t)c * d;
	case QTK_SCHEME_INT4:
		return (float)((int)c - 8) * d;
	case QTK_SCHEME_NF4:
		return nf4_values[c] * d;
	default:
		return (float)c * d + b;
	}
}

static void deq_row(const qtk_q_layout *L, const qtk_q_cplanes *src, size_t r,
                    size_t cols, float *out)
{
	size_t gl = group_len(L, cols);
	size_t gpr = (size_t)qtk_q_groups_per_row(L, cols);
	size_t cb = (size_t)qtk_q_row_bytes(L, cols, QTK_PLANE_CODES);
	const uint8_t *codes = (const uint8_t *)src->p[QTK_PLANE_CODES] + r * cb;
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);
	qtk_isa isa = qtk_isa_active();

	for (size_t g = 0; g < gpr; g++) {
		float d = load_scale(L->scale_dtype, src->p[QTK_PLANE_SCALES], r * gpr + g);
		float b = s->has_bias ? load_scale(L->scale_dtype, src->p[QTK_PLANE_BIASES],
		                                   r * gpr + g) : 0.0f;
		size_t i0 = g * gl, n = cols - i0 < gl ? cols - i0 : gl;
		if (isa == QTK_ISA_AVX512) {
			intq_deq_group_avx512(L->scheme, codes, i0, n, d, b, out + i0);
			continue;
		}
		if (isa == QTK_ISA_AVX2) {
			intq_deq_group_avx2(L->scheme, codes, i0, n, d, b, out + i0);
			continue;
		}
		for (size_t j = 0; j < n; j++)
			out[i0 + j] = deq(L, get_code(L, codes, i0 + j), d, b);
	}
}

void intq_dequantize(const qtk_q_layout *L, const qtk_q_cplanes *src,
                     size_t nrows, size_t cols, float *dst)
{
	for (size_t r = 0; r < nrows; r++)
		deq_row(L, src, r, cols, dst + r * cols);
}

/* Dot of one row: w_j as dequantize gives it, summed in element order in
 * double, rounded once to f32. */
float intq_dot(const qtk_q_layout *L, const qtk_q_cplanes *row, size_t cols,
               const float *x)
{
	size_t gl = group_len(L, cols);
	size_t gpr = (size_t)qtk_q_groups_per_row(L, cols);
	const uint8_t *codes = row->p[QTK_PLANE_CODES];
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);
	double acc = 0;

	for (size_t g = 0; g < gpr; g++) {
		float d = load_scale(L->scale_dtype, row->p[QTK_PLANE_SCALES], g);
		float b = s->has_bias ? load_scale(L->scale_dtype, row->p[QTK_PLANE_BIASES], g) : 0.0f;
		size_t i0 = g * gl, n = cols - i0 < gl ? cols - i0 : gl;
		for (size_t j = 0; j < n; j++)
			acc += (double)deq(L, get_code(L, codes, i0 + j), d, b) * (double)x[i0 + j];
	}
	return (float)acc;
}

/* ------------------------------------------------------------------ */
/* Metrics                                                             */
/* ------------------------------------------------------------------ */

/* Sums run in 8 fixed lanes (element i goes to lane i % 8 of this call),
 * folded lane 0..7 in order at the end: independent chains the compiler can
 * vectorize, and the same result for the same call on every machine. */
void qtk_q_acc_add(qtk_q_acc *a, const float *w, const float *w_hat, size_t n)
{
	double sse[8] = { 0 }, ssw[8] = { 0 }, ssh[8] = { 0 }, dot[8] = { 0 };
	double mx[8] = { 0 };
	size_t i = 0;
	qtk_isa isa = qtk_isa_active();

	if (isa != QTK_ISA_SCALAR && n >= 8) {
		i = n & ~(size_t)7;
		if (isa == QTK_ISA_AVX512)
			acc_lanes_avx512(w, w_hat, i, sse, ssw, ssh, dot, mx);
		else
			acc_lanes_avx2(w, w_hat, i, sse, ssw, ssh, dot, mx);
	}
	for (; i + 8 <= n; i += 8) {
		for (int l = 0; l < 8; l++) {
			double x = (double)w[i + l], y = (double)w_hat[i + l], e = x - y;
			sse[l] += e * e;
			ssw[l] += x * x;
			ssh[l] += y * y;
			dot[l] += x * y;
			mx[l] = fabs(e) > mx[l] ? fabs(e) : mx[l];
		}
	}
	for (int l = 0; i < n; i++, l++) {
		double x = (double)w[i], y = (double)w_hat[i], e = x - y;
		sse[l] += e * e;
		ssw[l] += x * x;
		ssh[l] += y * y;
		dot[l] += x * y;
		mx[l] = fabs(e) > mx[l] ? fabs(e) : mx[l];
	}
	for (int l = 0; l < 8; l++) {
		a->sse += sse[l];
		a->ssw += ssw[l];
		a->sshat += ssh[l];
		a->dot += dot[l];
		if (mx[l] > a->max_abs)
			a->max_abs = mx[l];
	}
	a->n += n;
}

void qtk_q_acc_merge(qtk_q_acc *into, const qtk_q_acc *from)
{
	into->sse += from->sse;
	into->ssw += from->ssw;
	into->sshat += from->sshat;
	into->dot += from->dot;
	if (from->max_abs > into->max_abs)
		into->max_abs = from->max_abs;
	into->n += from->n;
}

/* rel_fro = ||w - w_hat|| / ||w|| (0 when both are 0, Inf when only w is);
 * snr_db = 10 log10(ssw / sse) (+Inf when sse = 0); cosine 1 when both
 * vectors are 0, 0 when exactly one is. */
void qtk_q_metrics_from(const qtk_q_acc *a, qtk_q_metrics *m)
{
	m->n = a->n;
	m->rmse = a->n ? sqrt(a->sse / (double)a->n) : 0.0;
	m->max_abs = a->max_abs;
	m->rel_fro = a->ssw > 0 ? sqrt(a->sse / a->ssw) : (a->sse > 0 ? (double)INFINITY : 0.0);
	m->snr_db = a->sse > 0 ? 10.0 * log10(a->ssw / a->sse) : (double)INFINITY;
	if (a->ssw > 0 && a->sshat > 0)
		m->cosine = a->dot / (sqrt(a->ssw) * sqrt(a->sshat));
	else
		m->cosine = (a->ssw == 0 && a->sshat == 0) ? 1.0 : 0.0;
}
