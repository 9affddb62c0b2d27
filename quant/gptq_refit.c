/* quant: GPTQ's scales refitted to its own objective.
 *
 * The sweep fixes each group's scale when it reaches the group, before the
 * error of the columns after it is known. Once every code is chosen, the
 * scales (and affine biases) are a linear least-squares problem of their
 * own: per row, with A mapping the group parameters to the row's
 * dequantized values (column c of group g: v_c * s_g + b_g, v_c the code's
 * value), minimize (w - A x)^T H (w - A x) over x, w the row before
 * quantization and H the damped Hessian the sweep used. The normal
 * equations A^T H A x = A^T H w couple every group of the row through H, so
 * they are solved by preconditioned conjugate gradients on the change of x,
 * all rows of a chunk at once: each iteration is one product of the chunk's
 * direction (expanded to columns) with H, an sgemm, and the preconditioner
 * is the diagonal of A^T diag(H) A. A row whose objective, measured after
 * the new parameters are stored in the scale dtype, is not lower than
 * before keeps its sweep parameters, so the refit never makes a row worse.
 * Codes do not change. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "quant_impl.h"

#define REFIT_ROWS 32 /* rows per chunk: the sgemm's m */

typedef struct {
	const qtk_q_layout *L;
	const qtk_gemm *g;
	const float *h;
	float *hd; /* [cols] the diagonal of h, for the preconditioner */
	int m, aff;
	size_t cols, gl, gpr, nu, cb;
	/* chunk buffers: [REFIT_ROWS][cols] floats, [REFIT_ROWS][nu] doubles */
	float *v, *res, *t, *pw;
	double *x, *r, *z, *p, *np, *minv, *old;
	uint8_t *live;
} refit_ctx;

static void hmul(const refit_ctx *c, size_t n, const float *a, float *out)
{
	if (c->g && c->g->sgemm)
		c->g->sgemm(c->g->ctx, 0, 0, n, c->cols, c->cols, 1.0f, a, c->cols, c->h, c->cols,
		            0.0f, out, c->cols);
	else
		qtk_sgemm_ref(NULL, 0, 0, n, c->cols, c->cols, 1.0f, a, c->cols, c->h, c->cols,
		              0.0f, out, c->cols);
}

/* out[k] = A^T t for one row: scale unknowns first, then biases. */
static void at_mul(const refit_ctx *c, const float *v, const float *t, double *out)
{
	for (size_t gi = 0; gi < c->gpr; gi++) {
		size_t i0 = gi * c->gl, i1 = i0 + c->gl < c->cols ? i0 + c->gl : c->cols;
		double ss = 0, sb = 0;
		for (size_t i = i0; i < i1; i++) {
			ss += (double)v[i] * (double)t[i];
			sb += (double)t[i];
		}
		out[gi] = ss;
		if (c->aff)
			out[c->gpr + gi] = sb;
	}
}

/* out = A p for one row. */
static void a_mul(const refit_ctx *c, const float *v, const double *p, float *out)
{
	for (size_t gi = 0; gi < c->gpr; gi++) {
		size_t i0 = gi * c->gl, i1 = i0 + c->gl < c->cols ? i0 + c->gl : c->cols;
		double ps = p[gi], pb = c->aff ? p[c->gpr + gi] : 0.0;
		for (size_t i = i0; i < i1; i++)
			out[i] = (float)((double)v[i] * ps + pb);
	}
}

static double dot(const double *a, const double *b, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

static double objective(const float *res, const float *t, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)res[i] * (double)t[i];
	return s;
}

/* Rows [0, n) of a chunk: wo the rows before quantization, w their
 * dequantized values (updated), row0 the chunk's first row in dst. */
static void refit_chunk(refit_ctx *c, const float *wo, float *w, size_t n, size_t row0,
                        const qtk_q_planes *dst, unsigned iters)
{
	size_t cols = c->cols, nu = c->nu, gpr = c->gpr;
	qtk_dtype dt = c->L->scale_dtype;
	void *sp = dst->p[QTK_PLANE_SCALES], *bp = dst->p[QTK_PLANE_BIASES];
	double f0[REFIT_ROWS], rz[REFIT_ROWS];

	for (size_t k = 0; k < n; k++) {
		const uint8_t *codes = (const uint8_t *)dst->p[QTK_PLANE_CODES] + (row0 + k) * c->cb;
		float *v = c->v + k * cols, *res = c->res + k * cols;
		for (size_t i = 0; i < cols; i++) {
			v[i] = intq_val1(c->m, intq_get_code(c->m, codes, i));
			res[i] = wo[k * cols + i] - w[k * cols + i];
		}
	}
	hmul(c, n, c->res, c->t);
	for (size_t k = 0; k < n; k++) {
		const float *v = c->v + k * cols;
		double *r = c->r + k * nu, *z = c->z + k * nu, *p = c->p + k * nu;
		double *mi = c->minv + k * nu;
		f0[k] = objective(c->res + k * cols, c->t + k * cols, cols);
		at_mul(c, v, c->t + k * cols, r);
		for (size_t gi = 0; gi < gpr; gi++) {
			size_t i0 = gi * c->gl, i1 = i0 + c->gl < cols ? i0 + c->gl : cols;
			double ds = 0, db = 0;
			for (size_t i = i0; i < i1; i++) {
				double hd = (double)c->hd[i];
				ds += (double)v[i] * (double)v[i] * hd;
				db += hd;
			}
			mi[gi] = ds > 0 ? 1.0 / ds : 0.0;
			if (c->aff)
				mi[gpr + gi] = db > 0 ? 1.0 / db : 0.0;
		}
		for (size_t u = 0; u < nu; u++) {
			z[u] = mi[u] * r[u];
			p[u] = z[u];
			c->x[k * nu + u] = 0.0;
		}
		rz[k] = dot(r, z, nu);
		c->live[k] = rz[k] > 0 && isfinite(rz[k]);
	}
	for (unsigned it = 0; it < iters; it++) {
		int any = 0;
		for (size_t k = 0; k < n; k++) {
			if (c->live[k])
				a_mul(c, c->v + k * cols, c->p + k * nu, c->pw + k * cols);
			else
				memset(c->pw + k * cols, 0, cols * sizeof(float));
			any |= c->live[k];
		}
		if (!any)
			break;
		hmul(c, n, c->pw, c->t);
		for (size_t k = 0; k < n; k++) {
			double *x = c->x + k * nu, *r = c->r + k * nu, *z = c->z + k * nu;
			double *p = c->p + k * nu, *np = c->np + k * nu, *mi = c->minv + k * nu;
			if (!c->live[k])
				continue;
			at_mul(c, c->v + k * cols, c->t + k * cols, np);
			double pnp = dot(p, np, nu);
			if (!(pnp > 0) || !isfinite(pnp)) {
				c->live[k] = 0;
				continue;
			}
			double alpha = rz[k] / pnp;
			for (size_t u = 0; u < nu; u++) {
				x[u] += alpha * p[u];
				r[u] -= alpha * np[u];
				z[u] = mi[u] * r[u];
			}
			double rz1 = dot(r, z, nu), beta = rz1 / rz[k];
			if (!(rz1 > 0) || !isfinite(rz1)) {
				c->live[k] = 0;
				continue;
			}
			for (size_t u = 0; u < nu; u++)
				p[u] = z[u] + beta * p[u];
			rz[k] = rz1;
		}
	}
	/* store the new parameters, the new values, and the residual */
	for (size_t k = 0; k < n; k++) {
		const float *v = c->v + k * cols;
		double *x = c->x + k * nu, *old = c->old + k * nu;
		size_t r = row0 + k;
		for (size_t gi = 0; gi < gpr; gi++) {
			size_t i0 = gi * c->gl, i1 = i0 + c->gl < cols ? i0 + c->gl : cols;
			size_t at = r * gpr + gi;
			float s0 = intq_load_scale(dt, sp, at), b0 = c->aff ? intq_load_scale(dt, bp, at) : 0;
			float s1 = (float)((double)s0 + x[gi]);
			float b1 = c->aff ? (float)((double)b0 + x[gpr + gi]) : 0.0f;
			old[gi] = (double)s0;
			if (c->aff)
				old[gpr + gi] = (double)b0;
			/* a zero group stays zero; NF4 keeps a non-negative scale */
			if ((s0 == 0.0f && !c->aff) || !isfinite(s1) || !isfinite(b1) ||
			    (c->m == QM_NF4 && s1 < 0.0f))
				s1 = s0, b1 = b0;
			s1 = intq_store_scale(dt, sp, at, s1);
			if (c->aff)
				b1 = intq_store_scale(dt, bp, at, b1);
			if (!isfinite(s1) || !isfinite(b1) || (s1 == 0.0f && !c->aff)) {
				s1 = intq_store_scale(dt, sp, at, s0);
				if (c->aff)
					b1 = intq_store_scale(dt, bp, at, b0);
			}
			for (size_t i = i0; i < i1; i++)
				c->pw[k * cols + i] = c->aff ? v[i] * s1 + b1 : v[i] * s1;
		}
		for (size_t i = 0; i < cols; i++)
			c->res[k * cols + i] = wo[k * cols + i] - c->pw[k * cols + i];
	}
	hmul(c, n, c->res, c->t);
	for (size_t k = 0; k < n; k++) {
		size_t r = row0 + k;
		if (objective(c->res + k * cols, c->t + k * cols, cols) < f0[k]) {
			memcpy(w + k * cols, c->pw + k * cols, cols * sizeof(float));
			continue;
		}
		for (size_t gi = 0; gi < gpr; gi++) { /* not better: the sweep's */
			intq_store_scale(dt, sp, r * gpr + gi, (float)c->old[k * nu + gi]);
			if (c->aff)
				intq_store_scale(dt, bp, r * gpr + gi, (float)c->old[k * nu + gpr + gi]);
		}
	}
}

qtk_err gptq_refit(const qtk_q_layout *L, int m, const float *h, size_t cols,
                   const float *wo, float *w, size_t rows, const qtk_q_planes *dst,
                   unsigned iters, const qtk_gemm *g, const char *tensor, qtk_status *st)
{
	refit_ctx c = { .L = L, .g = g, .h = h, .m = m, .aff = QM_AFFINE(m), .cols = cols };
	size_t nf, nd;
	qtk_err rc = QTK_OK;

	c.gl = L->group == QTK_GROUP_ROW ? cols : L->group;
	c.gpr = (size_t)qtk_q_groups_per_row(L, cols);
	c.cb = (size_t)qtk_q_row_bytes(L, cols, QTK_PLANE_CODES);
	c.nu = c.aff ? 2 * c.gpr : c.gpr;
	if (__builtin_mul_overflow(cols, (size_t)REFIT_ROWS, &nf) || nf > SIZE_MAX / 16 ||
	    __builtin_mul_overflow(c.nu, (size_t)REFIT_ROWS, &nd) || nd > SIZE_MAX / 64)
		return qtk_fail(st, QTK_E_OVERFLOW, "tensor '%s': %zu columns are too many for the "
		                "GPTQ refit", tensor ? tensor : "?", cols);
	c.v = qtk_malloc(4 * nf * sizeof(float));
	c.x = qtk_malloc(7 * nd * sizeof(double));
	c.live = qtk_malloc(REFIT_ROWS);
	c.hd = qtk_malloc(cols * sizeof(float));
	if (!c.v || !c.x || !c.live || !c.hd) {
		rc = qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory for the GPTQ refit",
		              tensor ? tensor : "?");
		goto out;
	}
	c.res = c.v + nf;
	c.t = c.res + nf;
	c.pw = c.t + nf;
	c.r = c.x + nd;
	c.z = c.r + nd;
	c.p = c.z + nd;
	c.np = c.p + nd;
	c.minv = c.np + nd;
	c.old = c.minv + nd;
	for (size_t i = 0; i < cols; i++)
		c.hd[i] = h[i * cols + i];
	for (size_t r0 = 0; r0 < rows; r0 += REFIT_ROWS) {
		size_t n = rows - r0 < REFIT_ROWS ? rows - r0 : REFIT_ROWS;
		refit_chunk(&c, wo + r0 * cols, w + r0 * cols, n, r0, dst, iters);
	}
out:
	qtk_free(c.v);
	qtk_free(c.x);
	qtk_free(c.live);
	qtk_free(c.hd);
	return rc;
}
