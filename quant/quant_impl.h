/* quant (private): functions the scheme table points at, and helpers shared
 * by the scheme implementations. */
#ifndef QTK_QUANT_IMPL_H
#define QTK_QUANT_IMPL_H

#include <math.h>
#include <stdint.h>

#include <string.h>

#include "qtk_quant.h"

/* F32 / F16 / BF16 storage (float_store.c) */
qtk_err float_quantize(const qtk_q_layout *L, const float *src, size_t nrows,
                       size_t cols, const qtk_q_planes *dst,
                       const qtk_q_opts *opts, qtk_status *st);
void float_dequantize(const qtk_q_layout *L, const qtk_q_cplanes *src,
                      size_t nrows, size_t cols, float *dst);
float float_dot(const qtk_q_layout *L, const qtk_q_cplanes *row, size_t cols,
                const float *x);

/* INT8, INT4, INT4_AFFINE, NF4, INT8_AFFINE (intq.c) */
qtk_err intq_quantize(const qtk_q_layout *L, const float *src, size_t nrows,
                      size_t cols, const qtk_q_planes *dst,
                      const qtk_q_opts *opts, qtk_status *st);
void intq_dequantize(const qtk_q_layout *L, const qtk_q_cplanes *src,
                     size_t nrows, size_t cols, float *dst);
float intq_dot(const qtk_q_layout *L, const qtk_q_cplanes *row, size_t cols,
               const float *x);
/* intq_quantize plus each row's error sums into acc (*row_buf: as q_acc_row) */
qtk_err intq_quantize_acc(const qtk_q_layout *L, const float *src, size_t nrows,
                          size_t cols, const qtk_q_planes *dst, const qtk_q_opts *opts,
                          qtk_q_acc *acc, float **row_buf, qtk_status *st);
/* Add the error sums of row r of dst (quantized from x) to acc: the row
 * dequantized into *buf (cols floats, allocated on first use; the caller
 * frees it) and qtk_q_acc_add (scheme.c). */
qtk_err q_acc_row(const qtk_q_layout *L, const qtk_q_planes *dst, size_t r, size_t cols,
                  const float *x, qtk_q_acc *acc, float **buf, qtk_status *st);

struct acc_lanes;

/* ------------------------------------------------------------------ */
/* Group kernels of the integer schemes (intq.c: scalar reference,     */
/* intq_simd.c: AVX2 / AVX-512). Every variant gives the same bits.    */
/* ------------------------------------------------------------------ */

#ifdef __clang__
/* no FMA contraction: every path does the same separate f32 mul and add
 * (gcc: -std=c11 already implies -ffp-contract=off) */
#pragma STDC FP_CONTRACT OFF
#endif

/* Code rule of a group ("mode"); the 8-bit modes store one byte per code,
 * the others two codes per byte (low nibble first). */
enum {
	QM_INT8, /* roundf(x*p), clamp [-127, 127]            (ggml Q8_0) */
	QM_INT4, /* (int)(x*p + 8.5), clamp [0, 15]            (ggml Q4_0) */
	QM_NF4,  /* number of NF4 midpoints strictly below x*p  (bitsandbytes) */
	QM_AFF4, /* (int)((x-b)*p + 0.5), clamp [0, 15]        (ggml Q4_1) */
	QM_AFF8, /* the same with 255 levels */
	QM_MLX4, /* rint((x-b)/p), clamp [0, 15]  (MLX affine; p is the scale) */
	QM_MLX8  /* the same with 255 levels */
};
#define QM_AFFINE(m) ((m) >= QM_AFF4)
#define QM_8BIT(m) ((m) == QM_INT8 || (m) == QM_AFF8 || (m) == QM_MLX8)
#define QM_LEVELS(m) ((m) == QM_AFF8 || (m) == QM_MLX8 ? 255.0f : 15.0f)

const float *qtk_q_nf4_table(void);
const float *qtk_q_nf4_mids(void);
extern const float intq_nf4_values[16]; /* the NF4 code values */
/* QM_* kernel mode of a layout from its scheme row; -1 if none stores it. */
int intq_mode(const qtk_q_layout *L);
extern const float intq_nf4_mid[16];    /* 15 midpoints ascending, then +Inf */

/* The code of one element (p: reciprocal scale, or the scale for MLX;
 * b: the bias for affine modes). NaN/Inf never reach here. */
static inline unsigned intq_code1(int m, float x, float p, float b)
{
	float v;

	switch (m) {
	case QM_INT8:
		v = roundf(x * p);
		v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
		return (uint8_t)(int8_t)v;
	case QM_INT4:
		v = x * p + 8.5f; /* in [0.5, 16.5] up to rounding: (int) is safe */
		v = v < 0.0f ? 0.0f : v > 15.0f ? 15.0f : v;
		return (unsigned)(int)v;
	case QM_NF4: /* the decision tree = the count of midpoints < x*p */
		return qtk_q_nf4_code(x * p);
	case QM_AFF4:
	case QM_AFF8:
		v = (x - b) * p + 0.5f;
		v = v < 0.0f ? 0.0f : v > QM_LEVELS(m) ? QM_LEVELS(m) : v;
		return (unsigned)(int)v;
	default: /* MLX */
		v = rintf((x - b) / p);
		v = v < 0.0f ? 0.0f : v > QM_LEVELS(m) ? QM_LEVELS(m) : v;
		return (unsigned)(int)v;
	}
}

/* The value a code stands for before the scale is applied. */
static inline float intq_val1(int m, unsigned c)
{
	switch (m) {
	case QM_INT8:
		return (float)(int8_t)c;
	case QM_INT4:
		return (float)((int)c - 8);
	case QM_NF4:
		return intq_nf4_values[c & 15];
	default:
		return (float)c;
	}
}

/* Sum of 16 lanes in a fixed tree: l += l + k for k = 8, 4, 2, 1. */
static inline float intq_fold16(float *l)
{
	for (int k = 8; k; k >>= 1)
		for (int i = 0; i < k; i++)
			l[i] = l[i] + l[i + k];
	return l[0];
}

static inline unsigned intq_get_code(int m, const uint8_t *codes, size_t j)
{
	return QM_8BIT(m) ? codes[j] : (codes[j >> 1] >> ((j & 1) * 4)) & 15;
}

/* Elements [j, n) of the sqerr and dot kernels, into lanes j % 16: the
 * scalar reference runs them from 0, SIMD variants for their tails. */
static inline void intq_sqerr_tail(int m, const float *x, const float *imp, size_t j,
                                   size_t n, float p, float b, float d, float db,
                                   float *lane)
{
	for (; j < n; j++) {
		float w = intq_val1(m, intq_code1(m, x[j], p, b)) * d;
		if (QM_AFFINE(m))
			w = w + db;
		float e = x[j] - w;
		e = e * e;
		if (imp)
			e = e * imp[j];
		lane[j & 15] += e;
	}
}

/* Elements [j, n) of the fitsums kernel into lanes j % 16 of l[0..5):
 * w (imp or 1), w v, w v^2, w x, w v x with v the value of x's code. */
static inline void intq_fitsums_tail(int m, const float *x, const float *imp, size_t j,
                                     size_t n, float p, float b, float l[5][16])
{
	for (; j < n; j++) {
		float v = intq_val1(m, intq_code1(m, x[j], p, b)), w = imp ? imp[j] : 1.0f;
		float wv = w * v;
		l[0][j & 15] += w;
		l[1][j & 15] += wv;
		l[2][j & 15] += wv * v;
		l[3][j & 15] += w * x[j];
		l[4][j & 15] += wv * x[j];
	}
}

static inline void intq_dot_tail(int m, const uint8_t *codes, size_t j, size_t n,
                                 const float *x, float *s, float *sx)
{
	for (; j < n; j++) {
		float v = intq_val1(m, intq_get_code(m, codes, j)) * x[j];
		s[j & 15] += v;
		sx[j & 15] += x[j];
	}
}

/* The group value of the dot kernel from its lanes: S*d (+ b*X). */
static inline float intq_dot_fold(int m, float *s, float *sx, float d, float b)
{
	float t = intq_fold16(s) * d;
	if (QM_AFFINE(m)) {
		float u = b * intq_fold16(sx);
		t = t + u;
	}
	return t;
}

/* Per-group kernels. `codes` points at the group's first code byte (4-bit:
 * groups start on an even element, so on a byte). */
typedef struct {
	/* max |x|, min, max of x[0..n); 0 if a NaN or Inf is present (then the
	 * outputs are meaningless). min may differ from the scalar scan in the
	 * sign of a zero; callers fix that up. */
	int (*scan)(const float *x, size_t n, float *amax, float *mn, float *mx);
	/* index of the first element with |x| == a (a is present) */
	size_t (*first_abs)(const float *x, size_t n, float a);
	/* codes of n elements by intq_code1 (4-bit: pairs packed, an odd last
	 * element leaves the high nibble 0) */
	void (*encode)(int m, const float *x, size_t n, float p, float b,
	               uint8_t *codes);
	/* for each of nc candidates k: e[k] = the sum of imp_j * (x_j - w_j)^2
	 * (imp = NULL: weight 1) with the codes of intq_code1(m, x, p[k],
	 * b[k]) and w = val*d[k] (+ db[k] for affine): element j adds
	 * ((x-w)*(x-w))*imp in f32 lane j % 16, then intq_fold16 */
	void (*sqerr)(int m, const float *x, const float *imp, size_t n, size_t nc,
	              const float *p, const float *b, const float *d, const float *db,
	              float *e);
	/* out = val*d (+ b for affine) */
	void (*deq)(int m, const uint8_t *codes, size_t n, float d, float b,
	            float *out);
	/* the group's dot with x: lanes j % 16 of val_j*x_j (and of x_j for
	 * affine), each folded; S*d (+ b*X). See docs/quantization.md. */
	float (*dot)(int m, const uint8_t *codes, size_t n, float d, float b,
	             const float *x);
	/* Round-to-nearest of one whole row of a symmetric scheme (INT8, INT4,
	 * NF4) in groups of gl (16 | gl, gl | cols) with f16 scales, fused: the
	 * same results as quant_group for every group, or 0 as soon as a group
	 * needs its special cases (non-finite, zero or tiny, a scale f16
	 * cannot hold): the caller then redoes the row group
	 * by group. NULL where there is none. */
	int (*rtn_row)(int m, const float *x, size_t cols, size_t gl, uint16_t *scales,
	               uint8_t *codes, struct acc_lanes *A);
	/* The same with the data-free search (search_group's candidates, errors
	 * and choice; imp: the row's importance or NULL); 0 also when a
	 * candidate's stored scale is not an ordinary finite non-zero f16.
	 * A (both): NULL, or the row's error lanes (acc_impl.h) to fill: the
	 * sums qtk_q_acc_add would give on the row and its dequantization. */
	int (*search_row)(int m, const float *x, size_t cols, size_t gl, const float *imp,
	                  uint16_t *scales, uint8_t *codes, struct acc_lanes *A);
	/* The sums of the search's refits for the codes of (p, b): s[k] =
	 * intq_fold16 of lanes l[k] filled as intq_fitsums_tail does from 0. */
	void (*fitsums)(int m, const float *x, const float *imp, size_t n, float p, float b,
	                float *s);
} intq_kernels;

/* Scale (or bias) i of a plane in dtype dt (F32, F16, BF16); store returns
 * the value as stored. */
float intq_load_scale(qtk_dtype dt, const void *p, size_t i);
float intq_store_scale(qtk_dtype dt, void *p, size_t i, float v);

/* gptq_refit.c: after a GPTQ sweep of rows [0, rows) into dst (codes
 * fixed), each row's group scales (and biases) refitted to minimize
 * (wo - w)^T h (wo - w) by `iters` conjugate-gradient iterations; wo: the
 * rows before quantization, w: their dequantized values (updated). */
qtk_err gptq_refit(const qtk_q_layout *L, int m, const float *h, size_t cols,
                   const float *wo, float *w, size_t rows, const qtk_q_planes *dst,
                   unsigned iters, const qtk_gemm *g, const char *tensor, qtk_status *st);

/* The parameters chosen for one group: codes are intq_code1(m, x, p, b),
 * values intq_val1(m, code) * sd (+ sb for affine modes). A zero group
 * (zero = 1) has p = b = sd = sb = 0, which encodes every x as the code
 * of 0. */
typedef struct {
	float p, b;    /* encode parameters (f32, as the codes use them) */
	float sd, sb;  /* scale and bias as stored (as dequantize reads them) */
	int zero;
} intq_gfit;

/* Fit one group x[0..n) of an integer scheme as quantize does (RTN, or the
 * search when opts->search; imp: the group's importance or NULL), storing
 * its scale (and bias) at index gi of scales (biases); row and g name the
 * group in messages. The codes are left to the caller. */
qtk_err intq_fit(const qtk_q_layout *L, const qtk_q_opts *opts, const float *x, size_t n,
                 const float *imp, void *scales, void *biases, size_t gi, uint64_t row,
                 uint64_t g, intq_gfit *f, qtk_status *st);

/* The ratios of the search's grid (intq.c), r = 1 first; at most 8 (the
 * AVX2 search kernel holds them in one vector). */
#define INTQ_NRATIO 8
extern const float intq_ratios[2][INTQ_NRATIO];
/* The ratios mode m uses (int8 and nf4: no sign flips; nf4's scale is
 * its absmax, which double quantization needs non-negative). */
const float *intq_ratios_of(int m);

extern const intq_kernels intq_k_scalar, intq_k_avx2, intq_k_avx512;

/* The search's last stage (intq.c): from the grid's winner (*d, *b: its
 * f32 parameters; b unused for symmetric modes), weighted least-squares
 * refits of the scale (and bias for affine modes) to the winner's codes,
 * each kept only if its error with the parameters stored in sdt is
 * strictly lower (K->sqerr). Scalar sums: the same bits at every ISA. */
void intq_refit(const intq_kernels *K, int m, qtk_dtype sdt, const float *x,
                const float *imp, size_t n, float *d, float *b);

/* The search after its grid (intq.c): gd, gb, e[0..nc) the grid's usable
 * candidates in order (f32 scale, bias (0 for symmetric modes), error);
 * the first strictly best of them, then of the least-squares refits of
 * each one's codes, then intq_refit from the winner, into *d, *b. */
void intq_refine(const intq_kernels *K, int m, qtk_dtype sdt, const float *x,
                 const float *imp, size_t n, size_t nc, const float *gd, const float *gb,
                 const float *e, float *d, float *b);

/* A group's importance as the search uses it: NULL when all n weights are
 * equal (only their ratios matter, and so equal weights give the
 * unweighted search's bits). */
static inline const float *intq_imp(const float *imp, size_t n)
{
	if (!imp)
		return NULL;
	for (size_t j = 1; j < n; j++)
		if (imp[j] != imp[0])
			return imp;
	return NULL;
}

/* INT4 (ggml Q4_0): of a group's min and max, the one of larger magnitude
 * (callers handle -mn == mx, where the first in the group decides). Chosen
 * without a branch: which end wins is a coin flip from group to group. */
static inline float intq_q4_edge(float mn, float mx)
{
	uint32_t a, b, k = 0u - (uint32_t)(-mn > mx);
	float r;

	memcpy(&a, &mn, 4);
	memcpy(&b, &mx, 4);
	a = (a & k) | (b & ~k);
	memcpy(&r, &a, 4);
	return r;
}

#endif
