/* quant: GPTQ (Frantar et al. 2022; the reference is IST-DASLab gptq.py).
 *
 * Prepare: H (double) with dead columns (diag 0) given diag 1, damping
 * lambda = damp * mean(diag H) on the diagonal, columns permuted by
 * decreasing diag H when act-order is asked; then U, the upper Cholesky
 * factor of H^-1 (U^T U = H^-1), in double, as f32. U comes from one
 * Cholesky and one triangular inverse: with J the order reversal, J H J =
 * M M^T (M lower) gives H^-1 = (J M^-1 J)^T (J M^-1 J), and J M^-1 J is
 * upper with a positive diagonal, so it is the factor. For a row-major
 * n x n array, J A J is the array reversed.
 *
 * Quantize: the columns in blocks of 128. Inside a block, each row on its
 * own (rows never interact): the weight's code by the group's parameters,
 * q its value, err = (w - q) / U[i][i], the block's later columns of the
 * row -= err * U[i][.]. After the block, the columns right of it get all
 * of the block's errors at once: W[:, i2:] -= Err * U[i1:i2, i2:], the
 * BLAS-3 product that is most of the time.
 *
 * A group's parameters (qtk's rule: intq_fit, with the search if asked,
 * weighted by each column's 1 / U[i][i]^2; opts->importance is not used)
 * are fitted when the sweep reaches its first column, on the row's current
 * weights over the group: those have received every earlier column's
 * error (in-block updates reach the rest of the block, the lazy update
 * everything past it, and a group of more than a block starts on a block
 * boundary). Static groups are fitted on the original weights up front. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "quant_impl.h"

struct qtk_gptq {
	size_t cols;
	float *u;        /* [cols][cols] upper factor, act order (in the block of h8) */
	size_t *perm;    /* act order: sweep position -> original column; or NULL */
	uint8_t *dead;   /* [cols] 1 where diag H was 0 */
	float *lw;       /* [cols] by original column: 1 / U[i][i]^2, what an
	                    error in the column costs (the search's weights) */
	float *h;        /* [cols][cols] the damped H, original order, f32, when
	                    the scales are refitted after the sweep; or NULL */
	unsigned refit;  /* conjugate-gradient iterations of that refit */
	int zero_dead;   /* set dead columns' weights to 0 first */
	int static_groups;
	size_t block;
};

void qtk_gptq_opts_init(qtk_gptq_opts *o)
{
	memset(o, 0, sizeof *o);
	o->damp = 0.01;
	o->block = 128;
}

/* ------------------------------------------------------------------ */
/* Plain gemm                                                          */
/* ------------------------------------------------------------------ */

/* Element (i, j) of op(A) for a row-major A with row stride ld. */
#define OPA(a, t, ld, i, j) ((t) ? (a)[(size_t)(j) * (ld) + (i)] : (a)[(size_t)(i) * (ld) + (j)])

void qtk_sgemm_ref(void *ctx, int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                   const float *a, size_t lda, const float *b, size_t ldb, float beta,
                   float *c, size_t ldc)
{
	for (size_t i = 0; i < m; i++) {
		float *ci = c + i * ldc;
		for (size_t j = 0; j < n; j++)
			ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
		for (size_t l = 0; l < k; l++) {
			float s = alpha * OPA(a, ta, lda, i, l);
			if (!tb) { /* the common case: a contiguous row of B */
				const float *bl = b + l * ldb;
				for (size_t j = 0; j < n; j++)
					ci[j] += s * bl[j];
			} else {
				for (size_t j = 0; j < n; j++)
					ci[j] += s * b[j * ldb + l];
			}
		}
	}
}

void qtk_dgemm_ref(void *ctx, int ta, int tb, size_t m, size_t n, size_t k, double alpha,
                   const double *a, size_t lda, const double *b, size_t ldb, double beta,
                   double *c, size_t ldc)
{
	for (size_t i = 0; i < m; i++) {
		double *ci = c + i * ldc;
		for (size_t j = 0; j < n; j++)
			ci[j] = beta == 0.0 ? 0.0 : beta * ci[j];
		if (tb) { /* rows of B^T are rows of B: dot products */
			for (size_t j = 0; j < n; j++) {
				const double *bj = b + j * ldb;
				double s = 0;
				for (size_t l = 0; l < k; l++)
					s += OPA(a, ta, lda, i, l) * bj[l];
				ci[j] += alpha * s;
			}
			continue;
		}
		for (size_t l = 0; l < k; l++) {
			double s = alpha * OPA(a, ta, lda, i, l);
			const double *bl = b + l * ldb;
			for (size_t j = 0; j < n; j++)
				ci[j] += s * bl[j];
		}
	}
}

static void dgemm(const qtk_gemm *g, int ta, int tb, size_t m, size_t n, size_t k,
                  double alpha, const double *a, size_t lda, const double *b, size_t ldb,
                  double beta, double *c, size_t ldc)
{
	if (!m || !n || !k)
		return;
	if (g && g->dgemm)
		g->dgemm(g->ctx, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
	else
		qtk_dgemm_ref(NULL, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* ------------------------------------------------------------------ */
/* Factorization (double)                                              */
/* ------------------------------------------------------------------ */

#define NB 128   /* Cholesky panel width */
#define TRI_BASE 64

/* Lower Cholesky of the n x n block at a (stride ld) in place, unblocked;
 * 0 if a pivot is not positive. */
static int chol_small(double *a, size_t n, size_t ld)
{
	for (size_t j = 0; j < n; j++) {
		double *aj = a + j * ld, s = aj[j];
		for (size_t l = 0; l < j; l++)
			s -= aj[l] * aj[l];
		if (!(s > 0.0) || !isfinite(s))
			return 0;
		aj[j] = sqrt(s);
		for (size_t i = j + 1; i < n; i++) {
			double *ai = a + i * ld, t = ai[j];
			for (size_t l = 0; l < j; l++)
				t -= ai[l] * aj[l];
			ai[j] = t / aj[j];
		}
	}
	return 1;
}

/* Lower Cholesky of a (n x n, row-major) in place, right-looking in
 * panels of NB: the panel's diagonal block, the rows below it by forward
 * substitution, then the trailing matrix -= panel * panel^T (dgemm). The
 * upper triangle is set to 0. Returns the failing column + 1, or 0. */
static size_t chol(const qtk_gemm *g, double *a, size_t n)
{
	for (size_t k = 0; k < n; k += NB) {
		size_t nb = n - k < NB ? n - k : NB, r0 = k + nb;
		double *akk = a + k * n + k;
		if (!chol_small(akk, nb, n))
			return k + 1;
		/* A21 = A21 * L11^-T: each row x solves x L11^T = a */
		for (size_t i = r0; i < n; i++) {
			double *x = a + i * n + k;
			for (size_t j = 0; j < nb; j++) {
				const double *lj = akk + j * n;
				double s = x[j];
				for (size_t l = 0; l < j; l++)
					s -= x[l] * lj[l];
				x[j] = s / lj[j];
			}
		}
		dgemm(g, 0, 1, n - r0, n - r0, nb, -1.0, a + r0 * n + k, n, a + r0 * n + k, n,
		      1.0, a + r0 * n + r0, n);
	}
	for (size_t i = 0; i < n; i++)
		memset(a + i * n + i + 1, 0, (n - i - 1) * sizeof *a);
	return 0;
}

/* Inverse of the lower triangular n x n block at a (stride ld) in place,
 * its upper part zero and left zero. Row by row: X[i][j] = -(sum over k
 * in [j, i) of L[i][k] X[k][j]) / L[i][i], j ascending, so L[i][k >= j]
 * is still there when X[i][j] is written. */
static void trinv_small(double *a, size_t n, size_t ld)
{
	for (size_t i = 0; i < n; i++) {
		double *ai = a + i * ld, d = ai[i];
		for (size_t j = 0; j < i; j++) {
			double s = 0;
			for (size_t k = j; k < i; k++)
				s += ai[k] * a[k * ld + j];
			ai[j] = -s / d;
		}
		ai[i] = 1.0 / d;
	}
}

/* The same, recursive: X11 = L11^-1, X22 = L22^-1, X21 = -X22 L21 X11
 * (two dgemm). The product T = L21 X11 is kept transposed in the zero
 * upper-right block (n1 x n2, the shape of T^T), then cleared again: no
 * scratch beyond the matrix. */
static void trinv(const qtk_gemm *g, double *a, size_t n, size_t ld)
{
	if (n <= TRI_BASE) {
		trinv_small(a, n, ld);
		return;
	}
	size_t n1 = n / 2, n2 = n - n1;
	double *a11 = a, *a12 = a + n1, *a21 = a + n1 * ld, *a22 = a21 + n1;
	trinv(g, a11, n1, ld);
	trinv(g, a22, n2, ld);
	dgemm(g, 1, 1, n1, n2, n1, 1.0, a11, ld, a21, ld, 0.0, a12, ld); /* T^T = X11^T L21^T */
	dgemm(g, 0, 1, n2, n1, n2, -1.0, a22, ld, a12, ld, 0.0, a21, ld);
	for (size_t i = 0; i < n1; i++)
		memset(a12 + i * ld, 0, n2 * sizeof *a12);
}

static int cmp_diag(const double *d, size_t a, size_t b)
{
	/* decreasing, ties by index (a stable order) */
	if (d[a] != d[b])
		return d[a] > d[b] ? -1 : 1;
	return a < b ? -1 : a > b;
}

/* perm = the columns by decreasing d (merge sort, stable). */
static qtk_err act_order(const double *d, size_t n, size_t *perm)
{
	size_t *t = qtk_malloc(n * sizeof *t);

	if (!t)
		return QTK_E_NOMEM;
	for (size_t i = 0; i < n; i++)
		perm[i] = i;
	for (size_t w = 1; w < n; w *= 2) {
		for (size_t lo = 0; lo < n; lo += 2 * w) {
			size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
			size_t i = lo, j = mid, k = lo;
			while (i < mid && j < hi)
				t[k++] = cmp_diag(d, perm[i], perm[j]) <= 0 ? perm[i++] : perm[j++];
			while (i < mid)
				t[k++] = perm[i++];
			while (j < hi)
				t[k++] = perm[j++];
		}
		memcpy(perm, t, n * sizeof *t);
	}
	qtk_free(t);
	return QTK_OK;
}

/* Check h, mark dead columns, take the damped diagonal into d. */
static qtk_err scan_hessian(const double *h, size_t n, double damp, uint8_t *dead, double *d,
                            qtk_status *st)
{
	double sum = 0;

	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++)
			if (!isfinite(h[i * n + j]))
				return qtk_fail(st, QTK_E_Q_NONFINITE,
				                "GPTQ: Hessian element (%zu, %zu) is %s", i, j,
				                isnan(h[i * n + j]) ? "NaN" : "Inf");
	for (size_t i = 0; i < n; i++) {
		double v = h[i * n + i];
		if (v < 0)
			return qtk_fail(st, QTK_E_ARG,
			                "GPTQ: Hessian diagonal %zu is %g: not X^T X of any input",
			                i, v);
		dead[i] = v == 0.0;
		d[i] = dead[i] ? 1.0 : v;
		sum += d[i];
	}
	double lambda = damp * (sum / (double)n);
	for (size_t i = 0; i < n; i++)
		d[i] += lambda;
	return QTK_OK;
}

/* a = J P^T H P J with the damped diagonal d (P: perm or none): a[i][j] =
 * H[p(n-1-i)][p(n-1-j)]. Dead columns keep their zero off-diagonals. */
static void load_reversed(const double *h, size_t n, const size_t *perm, const double *d,
                          double *a)
{
	for (size_t i = 0; i < n; i++) {
		size_t pi = perm ? perm[n - 1 - i] : n - 1 - i;
		double *ai = a + i * n;
		for (size_t j = 0; j < n; j++) {
			size_t pj = perm ? perm[n - 1 - j] : n - 1 - j;
			ai[j] = pi == pj ? d[pi] : h[pi * n + pj];
		}
	}
}

/* The array reversed in place (J A J for a square row-major A). */
static void reverse(double *a, size_t len)
{
	for (size_t i = 0, j = len - 1; i < j; i++, j--) {
		double t = a[i];
		a[i] = a[j];
		a[j] = t;
	}
}

/* The n*n doubles of a as f32 in the first half of the same block, in
 * ascending order: f32 k lands in bytes [4k, 4k+4), which belong to
 * doubles k/2 <= k, already read. */
static float *narrow_in_place(double *a, size_t len)
{
	unsigned char *p = (unsigned char *)a;

	for (size_t k = 0; k < len; k++) {
		double v;
		float f;
		memcpy(&v, p + 8 * k, 8);
		f = (float)v;
		memcpy(p + 4 * k, &f, 4);
	}
	return (float *)(void *)a;
}

qtk_err qtk_gptq_prepare(const double *h, size_t cols, const qtk_gptq_opts *o,
                         const qtk_gemm *g, qtk_gptq **out, qtk_status *st)
{
	qtk_gptq_opts def;
	qtk_gptq *f = NULL;
	double *a = NULL, *d = NULL;
	size_t len, bad;
	qtk_err rc = QTK_E_NOMEM;

	*out = NULL;
	if (!o) {
		qtk_gptq_opts_init(&def);
		o = &def;
	}
	if (!cols)
		return qtk_fail(st, QTK_E_ARG, "GPTQ: a Hessian of 0 columns");
	if (!(o->damp >= 0.0) || !isfinite(o->damp))
		return qtk_fail(st, QTK_E_ARG, "GPTQ: damping %g is not a finite value >= 0",
		                o->damp);
	if (__builtin_mul_overflow(cols, cols, &len) || len > SIZE_MAX / 8)
		return qtk_fail(st, QTK_E_OVERFLOW, "GPTQ: a Hessian of %zu columns is too large",
		                cols);
	f = qtk_calloc(1, sizeof *f);
	d = qtk_malloc(cols * sizeof *d);
	a = qtk_malloc(len * sizeof *a);
	if (!f || !d || !a || !(f->dead = qtk_malloc(cols)))
		goto fail;
	f->cols = cols;
	f->zero_dead = !o->keep_dead;
	f->static_groups = o->static_groups || o->act_order;
	f->block = o->block ? o->block : 128;
	if ((rc = scan_hessian(h, cols, o->damp, f->dead, d, st)) != QTK_OK)
		goto out;
	if (o->act_order) {
		rc = QTK_E_NOMEM;
		if (!(f->perm = qtk_malloc(cols * sizeof *f->perm)) ||
		    act_order(d, cols, f->perm) != QTK_OK)
			goto fail;
	}
	if (o->refit) {
		rc = QTK_E_NOMEM;
		if (!(f->h = qtk_malloc(len * sizeof *f->h)))
			goto fail;
		for (size_t i = 0; i < cols; i++)
			for (size_t j = 0; j < cols; j++)
				f->h[i * cols + j] = (float)(i == j ? d[i] : h[i * cols + j]);
		f->refit = o->refit;
	}
	load_reversed(h, cols, f->perm, d, a);
	if ((bad = chol(g, a, cols)) != 0) {
		size_t c = cols - bad; /* the reversed order's column, back */
		rc = qtk_fail(st, QTK_E_Q_HESSIAN,
		              "GPTQ: the damped Hessian is not positive definite (pivot at column %zu); raise the damping (now %g)",
		              f->perm ? f->perm[c] : c, o->damp);
		goto out;
	}
	trinv(g, a, cols, cols);
	reverse(a, len);
	f->u = narrow_in_place(a, len);
	a = NULL;
	for (size_t i = 0; i < cols; i++)
		if (!isfinite(f->u[i * cols + i]) || f->u[i * cols + i] <= 0.0f) {
			rc = qtk_fail(st, QTK_E_Q_HESSIAN,
			              "GPTQ: the inverse Hessian's factor is %g at column %zu (f32); raise the damping (now %g)",
			              (double)f->u[i * cols + i], f->perm ? f->perm[i] : i, o->damp);
			goto out;
		}
	if (!(f->lw = qtk_malloc(cols * sizeof *f->lw)))
		goto fail;
	for (size_t i = 0; i < cols; i++) {
		float u = f->u[i * cols + i];
		f->lw[f->perm ? f->perm[i] : i] = 1.0f / (u * u);
	}
	*out = f;
	f = NULL;
	rc = QTK_OK;
	goto out;
fail:
	rc = qtk_fail(st, QTK_E_NOMEM, "GPTQ: out of memory for a Hessian of %zu columns", cols);
out:
	qtk_free(a);
	qtk_free(d);
	qtk_gptq_free(f);
	return rc;
}

void qtk_gptq_free(qtk_gptq *f)
{
	if (!f)
		return;
	qtk_free(f->u);
	qtk_free(f->perm);
	qtk_free(f->dead);
	qtk_free(f->lw);
	qtk_free(f->h);
	qtk_free(f);
}

/* ------------------------------------------------------------------ */
/* The sweep                                                           */
/* ------------------------------------------------------------------ */

/* What one qtk_gptq_quantize call shares. */
typedef struct {
	const qtk_gptq *f;
	const qtk_q_layout *L;
	const qtk_q_opts *o;
	const qtk_q_planes *dst;
	int m;             /* QM_* */
	size_t cols, gl, gpr, cb;
	intq_gfit *fit;    /* [rows][gpr] static, else [rows] (the current group) */
} sweep;

static void put_code(int m, uint8_t *row, size_t c, unsigned q)
{
	if (QM_8BIT(m))
		row[c] = (uint8_t)q;
	else
		row[c / 2] = (uint8_t)(row[c / 2] | q << (4 * (c & 1)));
}

/* Fit group gi of row r on x (its gl or fewer values) into *fit. */
static qtk_err fit(const sweep *s, size_t r, size_t gi, const float *x, intq_gfit *fit,
                   qtk_status *st)
{
	size_t i0 = gi * s->gl, n = s->cols - i0 < s->gl ? s->cols - i0 : s->gl;
	/* the search weighs each column by what its error costs GPTQ's
	 * objective (w - q)^2 / U[i][i]^2: on stories260K, held-out KL
	 * divergence 0.0538 against 0.0557 with mean x^2 (docs/calibration.md) */
	const float *imp = s->f->lw + i0;
	uint64_t row0 = s->o ? s->o->row0 : 0;

	return intq_fit(s->L, s->o, x, n, imp, s->dst->p[QTK_PLANE_SCALES],
	                s->dst->p[QTK_PLANE_BIASES], r * s->gpr + gi, row0 + r, gi, fit, st);
}

/* Columns [i1, i2) (sweep positions) of row r: quantize each, store its
 * code and value, propagate its error over the rest of the block, and
 * keep the scaled errors in e[0, i2 - i1). */
static qtk_err sweep_row(const sweep *s, size_t r, float *w, size_t i1, size_t i2, float *e,
                         qtk_status *st)
{
	const qtk_gptq *f = s->f;
	uint8_t *codes = (uint8_t *)s->dst->p[QTK_PLANE_CODES] + r * s->cb;
	int aff = QM_AFFINE(s->m);

	for (size_t i = i1; i < i2; i++) {
		size_t c = f->perm ? f->perm[i] : i, gi = c / s->gl;
		const float *u = f->u + i * s->cols;
		intq_gfit *gf;
		if (f->static_groups) {
			gf = &s->fit[r * s->gpr + gi];
		} else {
			gf = &s->fit[r];
			if (c % s->gl == 0) /* no perm here: c = i */
				QTK_TRY(fit(s, r, gi, w + c, gf, st));
		}
		unsigned q = intq_code1(s->m, w[i], gf->p, gf->b);
		float v = intq_val1(s->m, q) * gf->sd;
		if (aff)
			v = v + gf->sb;
		put_code(s->m, codes, c, q);
		float err = (w[i] - v) / u[i];
		e[i - i1] = err;
		w[i] = v;
		for (size_t j = i + 1; j < i2; j++)
			w[j] -= err * u[j];
	}
	return QTK_OK;
}

/* Permute each row's columns: to sweep order (fwd: y[i] = x[perm[i]]) or
 * back (y[perm[i]] = x[i]). */
static void permute_rows(const size_t *perm, float *w, size_t rows, size_t cols, float *t,
                         int fwd)
{
	for (size_t r = 0; r < rows; r++) {
		float *x = w + r * cols;
		for (size_t i = 0; i < cols; i++)
			if (fwd)
				t[i] = x[perm[i]];
			else
				t[perm[i]] = x[i];
		memcpy(x, t, cols * sizeof *t);
	}
}

static qtk_err check_layout(const qtk_q_layout *L, size_t cols, const qtk_gptq *f,
                            const qtk_q_opts *o, qtk_status *st)
{
	const char *tn = o && o->tensor ? o->tensor : "?";
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);

	QTK_TRY(qtk_q_layout_check(L, 0, cols, st));
	if (!s->quantized)
		return qtk_fail(st, QTK_E_UNSUPPORTED,
		                "tensor '%s': GPTQ needs an integer scheme, not %s", tn, s->name);
	if (L->flags & QTK_QF_DOUBLE_QUANT)
		return qtk_fail(st, QTK_E_UNSUPPORTED,
		                "tensor '%s': double quantization is a tensor-level pass: GPTQ with F32 scales, then qtk_q_double_quant",
		                tn);
	if (cols != f->cols)
		return qtk_fail(st, QTK_E_ARG,
		                "tensor '%s': %zu columns, but the Hessian has %zu", tn, cols,
		                f->cols);
	return QTK_OK;
}

qtk_err qtk_gptq_quantize(const qtk_gptq *f, const qtk_gemm *g, const qtk_q_layout *L,
                          float *w, size_t rows, size_t cols, const qtk_q_planes *dst,
                          const qtk_q_opts *opts, qtk_status *st)
{
	sweep s = { .f = f, .L = L, .o = opts, .dst = dst, .cols = cols };
	size_t nfit, B = f->block, nerr;
	float *e = NULL, *t = NULL, *wo = NULL;
	qtk_err rc = QTK_OK;

	QTK_TRY(check_layout(L, cols, f, opts, st));
	if (!rows)
		return QTK_OK;
	s.m = intq_mode(L);
	s.gl = L->group == QTK_GROUP_ROW ? cols : L->group;
	s.gpr = (size_t)qtk_q_groups_per_row(L, cols);
	s.cb = (size_t)qtk_q_row_bytes(L, cols, QTK_PLANE_CODES);
	/* Groups fitted during the sweep must see current weights: a group
	 * that starts inside a block must end in it (the lazy update has not
	 * reached the columns past the block), so the block is cut to a
	 * multiple of the group, or to a power of two that divides it. */
	if (!f->static_groups && s.gpr > 1) {
		if (s.gl <= B)
			B -= B % s.gl;
		else
			while (s.gl % B)
				B &= B - 1;
	}
	nfit = f->static_groups ? s.gpr : 1;
	size_t ncb;
	if (__builtin_mul_overflow(rows, nfit, &nfit) || __builtin_mul_overflow(rows, B, &nerr) ||
	    __builtin_mul_overflow(rows, s.cb, &ncb) || nerr > SIZE_MAX / sizeof(float) ||
	    nfit > SIZE_MAX / sizeof(intq_gfit))
		return qtk_fail(st, QTK_E_OVERFLOW, "GPTQ: %zu rows are too many", rows);
	s.fit = qtk_malloc(nfit * sizeof *s.fit);
	e = qtk_malloc(nerr * sizeof *e);
	t = qtk_malloc(cols * sizeof *t);
	if (!s.fit || !e || !t) {
		rc = qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory for GPTQ",
		              opts && opts->tensor ? opts->tensor : "?");
		goto out;
	}
	memset(dst->p[QTK_PLANE_CODES], 0, ncb);
	for (size_t r = 0; r < rows; r++)
		for (size_t c = 0; c < cols; c++)
			if (f->zero_dead && f->dead[c])
				w[r * cols + c] = 0.0f;
	if (f->h) { /* the refit needs the rows as they were */
		if (!(wo = qtk_malloc(rows * cols * sizeof *wo))) {
			rc = qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory for GPTQ",
			              opts && opts->tensor ? opts->tensor : "?");
			goto out;
		}
		memcpy(wo, w, rows * cols * sizeof *wo);
	}
	if (f->static_groups)
		for (size_t r = 0; r < rows; r++)
			for (size_t gi = 0; gi < s.gpr; gi++)
				if ((rc = fit(&s, r, gi, w + r * cols + gi * s.gl, &s.fit[r * s.gpr + gi],
				              st)) != QTK_OK)
					goto out;
	if (f->perm)
		permute_rows(f->perm, w, rows, cols, t, 1);
	for (size_t i1 = 0; i1 < cols; i1 += B) {
		size_t i2 = cols - i1 < B ? cols : i1 + B, nb = i2 - i1;
		for (size_t r = 0; r < rows; r++)
			if ((rc = sweep_row(&s, r, w + r * cols, i1, i2, e + r * nb, st)) != QTK_OK)
				goto out;
		if (i2 == cols)
			break;
		if (g && g->sgemm)
			g->sgemm(g->ctx, 0, 0, rows, cols - i2, nb, -1.0f, e, nb,
			         f->u + i1 * cols + i2, cols, 1.0f, w + i2, cols);
		else
			qtk_sgemm_ref(NULL, 0, 0, rows, cols - i2, nb, -1.0f, e, nb,
			              f->u + i1 * cols + i2, cols, 1.0f, w + i2, cols);
	}
	if (f->perm)
		permute_rows(f->perm, w, rows, cols, t, 0);
	if (f->h)
		rc = gptq_refit(L, s.m, f->h, cols, wo, w, rows, dst, f->refit, g,
		                opts ? opts->tensor : NULL, st);
out:
	qtk_free(wo);
	qtk_free(t);
	qtk_free(e);
	qtk_free(s.fit);
	return rc;
}
