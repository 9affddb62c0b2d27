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
 * 1/d overflows (affine: a constant group carried by the bias). Their
 * nonzero elements (affine: those other than the bias) are counted in
 * opts->flushed, so the report can say what became zero. A group
 * whose stored scale or bias is not finite fails with QTK_E_Q_SCALE_RANGE. NaN/Inf input fails with
 * QTK_E_Q_NONFINITE naming tensor, row and group. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "acc_impl.h"
#include "half.h"
#include "quant_impl.h"

const float intq_nf4_values[16] = {
	-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
	-0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
	0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f,
	0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
	0.7229568362236023f, 1.0f,
};

/* Midpoints of neighbouring NF4 values as bitsandbytes spells them; a value
 * exactly on a midpoint takes the lower code. */
const float intq_nf4_mid[16] = {
	-0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f,
	-0.33967943489551544f, -0.23460740596055984f, -0.13791173323988914f,
	-0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,
	0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
	0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
	INFINITY, /* padding: never below any x */
};

const float *qtk_q_nf4_table(void)
{
	return intq_nf4_values;
}

float qtk_q_nf4_value(unsigned code)
{
	return intq_nf4_values[code & 15];
}

unsigned qtk_q_nf4_code(float x)
{
	/* same decisions as a binary search over the midpoints */
	unsigned lo = 0;
	for (unsigned step = 8; step; step >>= 1)
		if (lo + step <= 15 && x > intq_nf4_mid[lo + step - 1])
			lo += step;
	return lo;
}

static const char *tname(const qtk_q_opts *o)
{
	return o && o->tensor ? o->tensor : "?";
}

float intq_load_scale(qtk_dtype dt, const void *p, size_t i)
{
	float f;
	if (dt == QTK_DT_F32) {
		memcpy(&f, (const uint8_t *)p + 4 * i, 4);
		return f;
	}
	uint16_t h;
	memcpy(&h, (const uint8_t *)p + 2 * i, 2);
	return dt == QTK_DT_F16 ? half_to_f32(h) : bhalf_to_f32(h);
}

float intq_store_scale(qtk_dtype dt, void *p, size_t i, float v)
{
	if (dt == QTK_DT_F32) {
		memcpy((uint8_t *)p + 4 * i, &v, 4);
		return v;
	}
	uint16_t h = dt == QTK_DT_F16 ? f32_to_half(v) : f32_to_bhalf(v);
	memcpy((uint8_t *)p + 2 * i, &h, 2);
	return dt == QTK_DT_F16 ? half_to_f32(h) : bhalf_to_f32(h);
}

static size_t group_len(const qtk_q_layout *L, size_t cols)
{
	return L->group == QTK_GROUP_ROW ? cols : L->group;
}

/* The kernel mode of a layout, from its row's code properties; -1 when no
 * kernel stores them (a new row must add one, not fall into another's). */
int intq_mode(const qtk_q_layout *L)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);
	int mlx = (L->flags & QTK_QF_MLX_AFFINE) != 0;

	if (!s || !s->quantized)
		return -1;
	if (s->mode == QTK_QMODE_SYM && s->code_bits == 8 && s->code_signed)
		return QM_INT8;
	if (s->mode == QTK_QMODE_SYM && s->code_bits == 4 && !s->code_signed &&
	    s->code_offset == 8)
		return QM_INT4;
	if (s->mode == QTK_QMODE_AFFINE && s->code_bits == 4)
		return mlx ? QM_MLX4 : QM_AFF4;
	if (s->mode == QTK_QMODE_AFFINE && s->code_bits == 8)
		return mlx ? QM_MLX8 : QM_AFF8;
	if (s->mode == QTK_QMODE_LOOKUP && s->code_bits == 4 && s->levels == intq_nf4_values)
		return QM_NF4;
	return -1;
}

/* Byte offset of element i0 (a group start) in a code row. */
static size_t code_off(int m, size_t i0)
{
	return QM_8BIT(m) ? i0 : i0 / 2;
}

static const intq_kernels *kernels(void)
{
	switch (qtk_isa_active()) {
	case QTK_ISA_AVX512:
		return &intq_k_avx512;
	case QTK_ISA_AVX2:
		return &intq_k_avx2;
	default:
		return &intq_k_scalar;
	}
}

/* ------------------------------------------------------------------ */
/* Scalar reference kernels (the definition every SIMD variant meets)  */
/* ------------------------------------------------------------------ */

static int scan_ref(const float *x, size_t n, float *amax, float *mn, float *mx)
{
	float a = 0, lo = FLT_MAX, hi = -FLT_MAX;

	for (size_t j = 0; j < n; j++) {
		if (!isfinite(x[j]))
			return 0;
		a = fabsf(x[j]) > a ? fabsf(x[j]) : a;
		lo = x[j] < lo ? x[j] : lo;
		hi = x[j] > hi ? x[j] : hi;
	}
	*amax = a;
	*mn = lo;
	*mx = hi;
	return 1;
}

static size_t first_abs_ref(const float *x, size_t n, float a)
{
	size_t j = 0;

	while (j + 1 < n && fabsf(x[j]) != a)
		j++;
	return j;
}

static void encode_ref(int m, const float *x, size_t n, float p, float b,
                       uint8_t *codes)
{
	if (QM_8BIT(m)) {
		for (size_t j = 0; j < n; j++)
			codes[j] = (uint8_t)intq_code1(m, x[j], p, b);
		return;
	}
	for (size_t j = 0; j < n; j += 2) {
		unsigned lo = intq_code1(m, x[j], p, b);
		unsigned hi = j + 1 < n ? intq_code1(m, x[j + 1], p, b) : 0;
		codes[j / 2] = (uint8_t)(lo | hi << 4);
	}
}

static void sqerr_ref(int m, const float *x, const float *imp, size_t n, size_t nc,
                      const float *p, const float *b, const float *d, const float *db,
                      float *e)
{
	for (size_t k = 0; k < nc; k++) {
		float lane[16] = { 0 };
		intq_sqerr_tail(m, x, imp, 0, n, p[k], b[k], d[k], db[k], lane);
		e[k] = intq_fold16(lane);
	}
}

static void deq_ref(int m, const uint8_t *codes, size_t n, float d, float b,
                    float *out)
{
	for (size_t j = 0; j < n; j++) {
		float w = intq_val1(m, intq_get_code(m, codes, j)) * d;
		out[j] = QM_AFFINE(m) ? w + b : w;
	}
}

static float dot_ref(int m, const uint8_t *codes, size_t n, float d, float b,
                     const float *x)
{
	float s[16] = { 0 }, sx[16] = { 0 };

	intq_dot_tail(m, codes, 0, n, x, s, sx);
	return intq_dot_fold(m, s, sx, d, b);
}

static void fitsums_ref(int m, const float *x, const float *imp, size_t n, float p, float b,
                        float *s)
{
	float l[5][16] = { { 0 } };

	intq_fitsums_tail(m, x, imp, 0, n, p, b, l);
	for (int k = 0; k < 5; k++)
		s[k] = intq_fold16(l[k]);
}

const intq_kernels intq_k_scalar = {
	scan_ref, first_abs_ref, encode_ref, sqerr_ref, deq_ref, dot_ref, NULL, NULL, fitsums_ref,
};

/* ------------------------------------------------------------------ */
/* Quantize                                                            */
/* ------------------------------------------------------------------ */

/* What one quantize call shares across its groups. */
typedef struct {
	const qtk_q_layout *L;
	const intq_kernels *K;
	const qtk_q_opts *o;
	int m;         /* QM_* */
	int affine;
} qctx;

/* MLX affine_quantize parameters of a group with range [lo, hi], in f32:
 * scale = max((hi-lo)/levels, 1e-7); edge = lo if |lo| > |hi| else hi,
 * the scale negated when edge = hi; q0 = rint(edge/scale); q0 != 0:
 * scale = edge/q0, bias = edge; else bias = 0. */
static void mlx_params(float lo, float hi, float levels, float *s, float *b)
{
	int mask = fabsf(lo) > fabsf(hi);
	float sc = (hi - lo) / levels, edge = mask ? lo : hi;

	sc = sc > 1e-7f ? sc : 1e-7f;
	if (!mask)
		sc = -sc;
	float q0 = rintf(edge / sc);
	if (q0 != 0.0f) {
		*s = edge / q0;
		*b = edge;
	} else {
		*s = sc;
		*b = 0.0f;
	}
}

/* Ratios of the search's grid; r = 1 (RTN) comes first. The negative ones
 * flip the scale's sign (symmetric modes; affine modes skip them): for
 * int4 (levels -8..7) -8/7 puts the largest magnitude on +7 instead of -8,
 * for NF4 -1 mirrors its uneven levels; with the refits after the grid
 * they lowered the RMSE of every symmetric scheme on the real checkpoints
 * (docs/quantization.md). */
const float intq_ratios[2][INTQ_NRATIO] = {
	{ 1.0f, 0.95f, 0.9f, 0.85f, 0.8f, 0.75f, -8.0f / 7.0f, -1.0f },
	{ 1.0f, 0.95f, 0.9f, 0.85f, 0.8f, 0.75f, 8.0f / 7.0f, 1.07f },
};

const float *intq_ratios_of(int m)
{
	return intq_ratios[m == QM_INT8 || m == QM_NF4];
}
_Static_assert(2 * INTQ_NRATIO <= 16, "search parameters fit one vector");

/* The search: its grid over the ratios above, then intq_refine. On entry
 * *d, *mn hold the RTN parameters (the r = 1 candidate, exactly); lo, hi
 * are the group's min and max. Symmetric: d = r * d_rtn; affine: [lo, hi]
 * shrunk by r around its centre, then the scheme's rule (Q4_1: d =
 * range/levels, bias = low end; MLX: mlx_params). Each candidate's codes come from its f32
 * parameters (as stored codes do) and its error from the parameters rounded
 * to the scale dtype (as dequantize sees them), by the sqerr kernel (f32
 * lanes, fixed fold: the same on every ISA). The first strictly best
 * candidate wins, so RTN is kept unless a ratio is better. A candidate
 * whose stored parameters are not finite is skipped; intq_refine's refits
 * then replace the winner only when strictly better. */
static void search_group(const qctx *c, const float *x, size_t n, const float *imp,
                         float lo, float hi, float *d, float *mn)
{
	float levels = QM_LEVELS(c->m), mid = 0.5f * (lo + hi), h = 0.5f * (hi - lo);
	/* sv: the scales, then the biases; padded to 16 so the conversions
	 * below run as one vector (no scalar tail) */
	float td[INTQ_NRATIO], tm[INTQ_NRATIO], sv[16] = { 0 };
	uint16_t hv[16];
	int mlx = c->m >= QM_MLX4;

	if (c->affine && h == 0.0f)
		return; /* constant group: RTN is exact */
	for (size_t k = 0; k < INTQ_NRATIO; k++) {
		float r = intq_ratios_of(c->m)[k];
		td[k] = *d;
		tm[k] = *mn;
		if (k > 0 && mlx) {
			mlx_params(mid - h * r, mid + h * r, levels, &td[k], &tm[k]);
		} else if (k > 0 && c->affine) {
			tm[k] = mid - h * r;
			td[k] = (2.0f * h * r) / levels;
		} else if (k > 0) {
			td[k] = td[0] * r;
		}
		sv[k] = td[k];
		sv[INTQ_NRATIO + k] = c->affine ? tm[k] : 0.0f;
		if (r < 0.0f && c->affine)
			sv[k] = INFINITY; /* sign flips: symmetric modes only (skipped) */
	}
	/* all parameters as they read back from the scale dtype, at once */
	if (c->L->scale_dtype != QTK_DT_F32) {
		qtk_from_f32(c->L->scale_dtype, sv, hv, 16);
		qtk_to_f32(c->L->scale_dtype, hv, sv, 16);
	}
	/* the candidates whose stored parameters are finite, in order */
	float p[INTQ_NRATIO], b[INTQ_NRATIO], sd[INTQ_NRATIO], sb[INTQ_NRATIO], e[INTQ_NRATIO];
	size_t idx[INTQ_NRATIO], nc = 0;
	for (size_t k = 0; k < INTQ_NRATIO; k++) {
		if (!isfinite(sv[k]) || !isfinite(sv[INTQ_NRATIO + k]))
			continue;
		/* 1/td overflowing is a zero group later (tiny-group rule):
		 * score it as one */
		p[nc] = mlx ? td[k] : td[k] != 0.0f ? 1.0f / td[k] : 0.0f;
		if (!isfinite(p[nc]))
			p[nc] = 0.0f;
		b[nc] = tm[k];
		sd[nc] = sv[k];
		sb[nc] = sv[INTQ_NRATIO + k];
		idx[nc++] = k;
	}
	if (!nc)
		return;
	c->K->sqerr(c->m, x, imp, n, nc, p, b, sd, sb, e);
	float gd[INTQ_NRATIO], gb[INTQ_NRATIO];
	for (size_t k = 0; k < nc; k++) {
		gd[k] = td[idx[k]];
		gb[k] = c->affine ? tm[idx[k]] : 0.0f;
	}
	float bb = c->affine ? *mn : 0.0f;
	intq_refine(c->K, c->m, c->L->scale_dtype, x, imp, n, nc, gd, gb, e, d, &bb);
	if (c->affine)
		*mn = bb;
}

/* The encode parameter of scale d: MLX divides by the scale, the others
 * multiply by its f32 reciprocal. */
static float enc_p(int m, float d)
{
	return m >= QM_MLX4 ? d : 1.0f / d;
}

/* The weighted least-squares parameters for the codes of (d, b): *nd
 * (and *nb for affine modes); 0 if there are none (all codes equal, zero
 * weights) or they are not usable (not finite, a zero scale). */
static int refit_params(const intq_kernels *K, int m, const float *x, const float *imp,
                        size_t n, float d, float b, float *nd, float *nb)
{
	float s[5], p = enc_p(m, d);

	if (d == 0.0f || !isfinite(p))
		return 0;
	K->fitsums(m, x, imp, n, p, b, s); /* sum w, w v, w v^2, w x, w v x */
	*nb = b;
	if (!QM_AFFINE(m)) { /* min sum w (x - d v)^2: d = sum w v x / sum w v^2 */
		if (!(s[2] > 0.0f))
			return 0;
		*nd = s[4] / s[2];
	} else { /* min sum w (x - d v - b)^2, the 2x2 normal equations */
		double det = (double)s[0] * (double)s[2] - (double)s[1] * (double)s[1];
		if (!(det > 0.0))
			return 0;
		*nd = (float)(((double)s[0] * (double)s[4] - (double)s[1] * (double)s[3]) / det);
		*nb = (float)(((double)s[2] * (double)s[3] - (double)s[1] * (double)s[4]) / det);
	}
	return isfinite(*nd) && *nd != 0.0f && isfinite(*nb) && isfinite(enc_p(m, *nd));
}

/* Grid candidates whose codes are refitted: the 3 best (all 8 lowered no
 * RMSE in docs/quantization.md's table by more than 0.1 %, 2 lost 8 % of
 * blazepose-heavy's int8 gain). */
#define INTQ_REFIT_TOP 3

void intq_refine(const intq_kernels *K, int m, qtk_dtype sdt, const float *x,
                 const float *imp, size_t n, size_t nc, const float *gd, const float *gb,
                 const float *e, float *d, float *b)
{
	float rd[INTQ_NRATIO], rb[INTQ_NRATIO], sv[2 * INTQ_NRATIO] = { 0 }, p[INTQ_NRATIO];
	float er[INTQ_NRATIO], best;
	size_t w = 0, nr = 0;
	int aff = QM_AFFINE(m);

	for (size_t k = 1; k < nc; k++)
		if (e[k] < e[w])
			w = k;
	best = e[w];
	*d = gd[w];
	*b = gb[w];
	for (size_t k = 0; k < nc; k++) {
		size_t better = 0; /* grid candidates ahead of k (ties: by order) */
		for (size_t i = 0; i < nc; i++)
			better += e[i] < e[k] || (e[i] == e[k] && i < k);
		if (better < INTQ_REFIT_TOP &&
		    refit_params(K, m, x, imp, n, gd[k], gb[k], &rd[nr], &rb[nr]))
			nr++;
	}
	for (size_t k = 0; k < nr; k++) {
		sv[k] = rd[k];
		sv[INTQ_NRATIO + k] = aff ? rb[k] : 0.0f;
		p[k] = enc_p(m, rd[k]);
	}
	if (sdt != QTK_DT_F32) {
		uint16_t hv[2 * INTQ_NRATIO];
		qtk_from_f32(sdt, sv, hv, 2 * INTQ_NRATIO);
		qtk_to_f32(sdt, hv, sv, 2 * INTQ_NRATIO);
	}
	if (nr) {
		K->sqerr(m, x, imp, n, nr, p, rb, sv, sv + INTQ_NRATIO, er);
		for (size_t k = 0; k < nr; k++)
			if (er[k] < best && isfinite(sv[k]) && sv[k] != 0.0f &&
			    isfinite(sv[INTQ_NRATIO + k])) {
				best = er[k];
				*d = rd[k];
				*b = rb[k];
			}
	}
	intq_refit(K, m, sdt, x, imp, n, d, b);
}

/* Refits of intq_refit (INTQ_REFITS at most: each one's codes can move,
 * so the next refit starts from them). */
#define INTQ_REFITS 2

void intq_refit(const intq_kernels *K, int m, qtk_dtype sdt, const float *x,
                const float *imp, size_t n, float *d, float *b)
{
	int aff = QM_AFFINE(m);

	for (int it = 0; it < INTQ_REFITS; it++) {
		float nd, nb, p[2], bb[2], sv[4], e[2];
		if (!refit_params(K, m, x, imp, n, *d, *b, &nd, &nb))
			return;
		/* the old and the new parameters as dequantize would see them */
		sv[0] = *d;
		sv[1] = nd;
		sv[2] = aff ? *b : 0.0f;
		sv[3] = aff ? nb : 0.0f;
		if (sdt != QTK_DT_F32) {
			uint16_t hv[4];
			qtk_from_f32(sdt, sv, hv, 4);
			qtk_to_f32(sdt, hv, sv, 4);
		}
		for (int k = 0; k < 4; k++)
			if (!isfinite(sv[k]))
				return;
		if (sv[1] == 0.0f)
			return;
		p[0] = enc_p(m, *d);
		p[1] = enc_p(m, nd);
		bb[0] = *b;
		bb[1] = nb;
		K->sqerr(m, x, imp, n, 2, p, bb, sv, sv + 2, e);
		if (!(e[1] < e[0]))
			return;
		*d = nd;
		*b = nb;
	}
}

static qtk_err nonfinite(const qctx *c, const float *x, uint64_t row, uint64_t g,
                         qtk_status *st)
{
	size_t j = 0;

	while (isfinite(x[j]))
		j++;
	return qtk_fail(st, QTK_E_Q_NONFINITE, "tensor '%s': row %llu group %llu: %s in the input",
	                tname(c->o), (unsigned long long)row, (unsigned long long)g,
	                isnan(x[j]) ? "NaN" : "Inf");
}

static qtk_err range_fail(const qctx *c, uint64_t row, uint64_t g, float d, float b,
                          qtk_status *st)
{
	if (!c->affine)
		return qtk_fail(st, QTK_E_Q_SCALE_RANGE,
		                "tensor '%s': row %llu group %llu: scale %g does not fit %s",
		                tname(c->o), (unsigned long long)row, (unsigned long long)g,
		                (double)d, qtk_dtype_name(c->L->scale_dtype));
	return qtk_fail(st, QTK_E_Q_SCALE_RANGE,
	                "tensor '%s': row %llu group %llu: scale %g / bias %g do not fit %s",
	                tname(c->o), (unsigned long long)row, (unsigned long long)g,
	                (double)d, (double)b, qtk_dtype_name(c->L->scale_dtype));
}

/* Count into opts->flushed the elements of x[0..n) that differ from v:
 * what a zero group (v = 0) or a bias-only group (v = the bias) loses. */
static void count_flushed(const qctx *c, const float *x, size_t n, float v)
{
	uint64_t k = 0;

	if (!c->o || !c->o->flushed)
		return;
	for (size_t j = 0; j < n; j++)
		k += x[j] != v;
	*c->o->flushed += k;
}

/* A zero group: codes for 0 in every element (codes not NULL), scale 0,
 * bias 0 (scales not NULL; x: the group's values, the nonzero ones
 * counted as flushed). */
static void zero_group(const qctx *c, const float *x, size_t n, uint8_t *codes, void *scales,
                       void *biases, size_t gi)
{
	unsigned zc = c->m == QM_INT4 ? 8 : c->m == QM_NF4 ? 7 : 0;

	if (scales) {
		count_flushed(c, x, n, 0.0f);
		intq_store_scale(c->L->scale_dtype, scales, gi, 0.0f);
		if (c->affine)
			intq_store_scale(c->L->scale_dtype, biases, gi, 0.0f);
	}
	if (!codes)
		return;
	if (QM_8BIT(c->m))
		memset(codes, (int)zc, n);
	else
		for (size_t j = 0; j < n; j += 2)
			codes[j / 2] = (uint8_t)(zc | (j + 1 < n ? zc << 4 : 0));
}

/* MLX affine group: the parameters above (search: over clipped ranges),
 * no zero-group case (the 1e-7 floor keeps the scale away from 0). */
static qtk_err mlx_fit(const qctx *c, const float *x, size_t n, const float *imp,
                       float mn, float mx, void *scales, void *biases, size_t gi,
                       uint64_t row, uint64_t g, intq_gfit *f, qtk_status *st)
{
	qtk_dtype dt = c->L->scale_dtype;
	float s, b;

	mlx_params(mn, mx, QM_LEVELS(c->m), &s, &b);
	if (c->o && c->o->search)
		search_group(c, x, n, imp, mn, mx, &s, &b);
	float ss = intq_store_scale(dt, scales, gi, s), sb = intq_store_scale(dt, biases, gi, b);
	if (!isfinite(s) || !isfinite(ss) || !isfinite(sb) || ss == 0.0f)
		return range_fail(c, row, g, s, b, st);
	*f = (intq_gfit){ .p = s, .b = b, .sd = ss, .sb = sb };
	return QTK_OK;
}

/* The parameters of one group x[0..n) (see intq_gfit), its scale and bias
 * stored at gi. */
static qtk_err fit_group(const qctx *c, const float *x, size_t n, const float *imp,
                         void *scales, void *biases, size_t gi, uint64_t row, uint64_t g,
                         intq_gfit *f, qtk_status *st)
{
	float amax, mn, mx, d, id, sd;

	if (!c->K->scan(x, n, &amax, &mn, &mx))
		return nonfinite(c, x, row, g, st);
	if (mn == 0.0f) /* the first zero's sign, as the scalar scan keeps it */
		for (size_t j = 0; j < n; j++)
			if (x[j] == 0.0f) {
				mn = x[j];
				break;
			}
	if (c->m >= QM_MLX4)
		return mlx_fit(c, x, n, imp, mn, mx, scales, biases, gi, row, g, f, st);
	if (amax < FLT_MIN) { /* all zero or subnormal only */
		zero_group(c, x, n, NULL, scales, biases, gi);
		*f = (intq_gfit){ .zero = 1 };
		return QTK_OK;
	}
	switch (c->m) {
	case QM_INT8:
		d = amax / 127.0f;
		break;
	case QM_INT4: /* the signed value of the first largest magnitude: the
	               * min or the max, unless both have it (then the first) */
		if (-mn != mx) {
			d = intq_q4_edge(mn, mx) * -0.125f; /* = / -8 exactly */
		} else {
			d = x[c->K->first_abs(x, n, amax)] / -8.0f;
		}
		break;
	case QM_AFF4:
	case QM_AFF8:
		d = (mx - mn) / QM_LEVELS(c->m);
		break;
	default: /* NF4 */
		d = amax;
		break;
	}
	if (c->o && c->o->search)
		search_group(c, x, n, imp, mn, mx, &d, &mn);
	id = d != 0.0f ? 1.0f / d : 0.0f;
	sd = intq_store_scale(c->L->scale_dtype, scales, gi, d);
	/* Tiny but normal groups (near-dead channels): a scale that rounds to 0
	 * in the scale dtype (F16: < 2^-25) or whose reciprocal overflows f32 is
	 * a zero group (symmetric) or a constant group carried by the bias
	 * (affine), instead of failing the tensor. Its error is at most its
	 * largest magnitude (affine: its range plus the bias rounding). */
	if (d != 0.0f && (sd == 0.0f || !isfinite(id))) {
		if (!c->affine) {
			zero_group(c, x, n, NULL, scales, biases, gi);
			*f = (intq_gfit){ .zero = 1 };
			return QTK_OK;
		}
		d = 0.0f;
		id = 0.0f;
		sd = intq_store_scale(c->L->scale_dtype, scales, gi, 0.0f);
		count_flushed(c, x, n, mn);
	}
	/* a constant affine group has d = 0 and is carried by the bias alone */
	if (!isfinite(sd) || (sd == 0.0f && !c->affine) || !isfinite(id))
		return qtk_fail(st, QTK_E_Q_SCALE_RANGE,
		                "tensor '%s': row %llu group %llu: scale %g does not fit %s",
		                tname(c->o), (unsigned long long)row, (unsigned long long)g,
		                (double)d, qtk_dtype_name(c->L->scale_dtype));
	float sb = 0.0f;
	if (c->affine) {
		sb = intq_store_scale(c->L->scale_dtype, biases, gi, mn);
		if (!isfinite(sb))
			return range_fail(c, row, g, d, mn, st);
	}
	*f = (intq_gfit){ .p = id, .b = mn, .sd = sd, .sb = sb };
	return QTK_OK;
}

/* Quantize one group x[0..n); codes points at its first code byte. */
static qtk_err quant_group(const qctx *c, const float *x, size_t n, const float *imp,
                           uint8_t *codes, void *scales, void *biases, size_t gi,
                           uint64_t row, uint64_t g, qtk_status *st)
{
	intq_gfit f;

	QTK_TRY(fit_group(c, x, n, imp, scales, biases, gi, row, g, &f, st));
	if (f.zero)
		zero_group(c, x, n, codes, NULL, NULL, gi);
	else
		c->K->encode(c->m, x, n, f.p, f.b, codes);
	return QTK_OK;
}

qtk_err intq_fit(const qtk_q_layout *L, const qtk_q_opts *opts, const float *x, size_t n,
                 const float *imp, void *scales, void *biases, size_t gi, uint64_t row,
                 uint64_t g, intq_gfit *f, qtk_status *st)
{
	qctx c = { .L = L, .K = kernels(), .o = opts, .m = intq_mode(L) };

	c.affine = QM_AFFINE(c.m);
	return fit_group(&c, x, n, intq_imp(imp, n), scales, biases, gi, row, g, f, st);
}

/* Rows [0, nrows) of src; with acc, each row's error sums too (row by
 * row: a fused kernel's lanes, or q_acc_row). */
static qtk_err quantize_rows(const qtk_q_layout *L, const float *src, size_t nrows,
                             size_t cols, const qtk_q_planes *dst, const qtk_q_opts *opts,
                             qtk_q_acc *acc, float **row_buf, qtk_status *st)
{
	size_t gl = group_len(L, cols);
	size_t gpr = (size_t)qtk_q_groups_per_row(L, cols);
	size_t cb = (size_t)qtk_q_row_bytes(L, cols, QTK_PLANE_CODES);
	uint64_t row0 = opts ? opts->row0 : 0;
	qctx c = { .L = L, .K = kernels(), .o = opts, .m = intq_mode(L) };

	if (c.m < 0)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "tensor '%s': scheme %s has no quantize kernel",
		                tname(opts), qtk_q_scheme_get(L->scheme) ?
		                qtk_q_scheme_get(L->scheme)->name : "?");
	c.affine = QM_AFFINE(c.m);
	if (L->flags & QTK_QF_DOUBLE_QUANT)
		return qtk_fail(st, QTK_E_UNSUPPORTED,
		                "tensor '%s': double quantization is a tensor-level pass: quantize with F32 scales, then qtk_q_double_quant",
		                tname(opts));
	/* symmetric schemes with f16 scales and whole groups: a fused row
	 * kernel where the ISA has one (the special cases send a row back to
	 * the group-by-group path below) */
	int search = opts && opts->search;
	int fused = (search ? c.K->search_row != NULL : c.K->rtn_row != NULL) &&
	            L->scale_dtype == QTK_DT_F16 &&
	            (c.m == QM_INT8 || c.m == QM_INT4 || c.m == QM_NF4) &&
	            L->group != QTK_GROUP_ROW && gl % 16 == 0 && cols % gl == 0;

	for (size_t r = 0; r < nrows; r++) {
		const float *x = src + r * cols;
		uint8_t *codes = (uint8_t *)dst->p[QTK_PLANE_CODES] + r * cb;
		uint16_t *sc = (uint16_t *)dst->p[QTK_PLANE_SCALES] + r * gpr;
		acc_lanes A;
		acc_lanes *ap = acc ? &A : NULL;

		if (fused && (search ? c.K->search_row(c.m, x, cols, gl, opts->importance, sc,
		                                       codes, ap)
		                     : c.K->rtn_row(c.m, x, cols, gl, sc, codes, ap))) {
			if (acc)
				acc_fold(acc, &A, cols);
			continue;
		}
		memset(codes, 0, cb);
		for (size_t g = 0; g < gpr; g++) {
			size_t i0 = g * gl, n = cols - i0 < gl ? cols - i0 : gl;
			const float *imp = opts && opts->importance ?
			                   intq_imp(opts->importance + i0, n) : NULL;
			QTK_TRY(quant_group(&c, x + i0, n, imp, codes + code_off(c.m, i0),
			                    dst->p[QTK_PLANE_SCALES], dst->p[QTK_PLANE_BIASES],
			                    r * gpr + g, row0 + r, g, st));
		}
		if (acc)
			QTK_TRY(q_acc_row(L, dst, r, cols, x, acc, row_buf, st));
	}
	return QTK_OK;
}

qtk_err intq_quantize(const qtk_q_layout *L, const float *src, size_t nrows,
                      size_t cols, const qtk_q_planes *dst,
                      const qtk_q_opts *opts, qtk_status *st)
{
	return quantize_rows(L, src, nrows, cols, dst, opts, NULL, NULL, st);
}

qtk_err intq_quantize_acc(const qtk_q_layout *L, const float *src, size_t nrows,
                          size_t cols, const qtk_q_planes *dst, const qtk_q_opts *opts,
                          qtk_q_acc *acc, float **row_buf, qtk_status *st)
{
	return quantize_rows(L, src, nrows, cols, dst, opts, acc, row_buf, st);
}

/* ------------------------------------------------------------------ */
/* Dequantize and dot                                                  */
/* ------------------------------------------------------------------ */

void intq_dequantize(const qtk_q_layout *L, const qtk_q_cplanes *src,
                     size_t nrows, size_t cols, float *dst)
{
	size_t gl = group_len(L, cols);
	size_t gpr = (size_t)qtk_q_groups_per_row(L, cols);
	size_t cb = (size_t)qtk_q_row_bytes(L, cols, QTK_PLANE_CODES);
	const intq_kernels *K = kernels();
	int m = intq_mode(L);

	if (m < 0) /* unreachable: qtk_q_layout_check refuses such layouts */
		return;
	for (size_t r = 0; r < nrows; r++) {
		const uint8_t *codes = (const uint8_t *)src->p[QTK_PLANE_CODES] + r * cb;
		float *out = dst + r * cols;
		for (size_t g = 0; g < gpr; g++) {
			size_t gi = r * gpr + g, i0 = g * gl, n = cols - i0 < gl ? cols - i0 : gl;
			float d = intq_load_scale(L->scale_dtype, src->p[QTK_PLANE_SCALES], gi);
			float b = QM_AFFINE(m) ? intq_load_scale(L->scale_dtype, src->p[QTK_PLANE_BIASES], gi)
			                       : 0.0f;
			K->deq(m, codes + code_off(m, i0), n, d, b, out + i0);
		}
	}
}

/* Dot of one row: each group's f32 value from the dot kernel (16 lanes,
 * fixed fold), groups summed in double in order, rounded once to f32. */
float intq_dot(const qtk_q_layout *L, const qtk_q_cplanes *row, size_t cols,
               const float *x)
{
	size_t gl = group_len(L, cols);
	size_t gpr = (size_t)qtk_q_groups_per_row(L, cols);
	const uint8_t *codes = row->p[QTK_PLANE_CODES];
	const intq_kernels *K = kernels();
	int m = intq_mode(L);
	double acc = 0;

	if (m < 0) /* unreachable: qtk_q_layout_check refuses such layouts */
		return 0.0f;
	for (size_t g = 0; g < gpr; g++) {
		size_t i0 = g * gl, n = cols - i0 < gl ? cols - i0 : gl;
		float d = intq_load_scale(L->scale_dtype, row->p[QTK_PLANE_SCALES], g);
		float b = QM_AFFINE(m) ? intq_load_scale(L->scale_dtype, row->p[QTK_PLANE_BIASES], g)
		                       : 0.0f;
		acc += (double)K->dot(m, codes + code_off(m, i0), n, d, b, x + i0);
	}
	return (float)acc;
}

/* ------------------------------------------------------------------ */
/* Metrics                                                             */
/* ------------------------------------------------------------------ */

/* Blocks of 256, 16 lanes, f32 within a block and double across blocks
 * (acc_impl.h): the same bits for the same call at every ISA. The f32
 * block sums add a relative error of about 1e-7 to each quantity, far
 * below what the metrics are read for. */
void acc_fold(qtk_q_acc *a, const acc_lanes *A, size_t n)
{
	for (int l = 0; l < 16; l++) {
		a->sse += A->sse[l];
		a->ssw += A->ssw[l];
		a->sshat += A->ssh[l];
		/* w·ŵ = (w² + ŵ² - (w - ŵ)²) / 2 (acc_impl.h) */
		a->dot += (A->ssw[l] + A->ssh[l] - A->sse[l]) * 0.5;
		if (A->mx[l] > a->max_abs)
			a->max_abs = A->mx[l];
	}
	a->n += n;
}

void qtk_q_acc_add(qtk_q_acc *a, const float *w, const float *w_hat, size_t n)
{
	acc_lanes A;
	qtk_isa isa = qtk_isa_active();

	memset(&A, 0, sizeof A);
	if (isa == QTK_ISA_AVX512)
		acc_block_avx512(&A, w, w_hat, n);
	else if (isa == QTK_ISA_AVX2)
		acc_block_avx2(&A, w, w_hat, n);
	else
		acc_block_scalar(&A, w, w_hat, n);
	acc_fold(a, &A, n);
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
		m->cosine = fmin(1.0, fmax(-1.0, a->dot / (sqrt(a->ssw) * sqrt(a->sshat))));
	else
		m->cosine = (a->ssw == 0 && a->sshat == 0) ? 1.0 : 0.0;
}
