/* tests: GPTQ (quant/gptq.c). Against a straightforward unblocked double
 * implementation of the published algorithm written here; with H = I (and
 * any diagonal H, with or without act-order) it is round-to-nearest to the
 * byte; the returned weights are the dequantized planes; every integer
 * scheme and group size lowers the layer-output error on held-out inputs
 * below RTN and the importance-weighted search; dead columns; bad input;
 * allocation failures; the OpenBLAS table agrees with the plain loops. */
#include <math.h>
#include <stdlib.h>

#include "qtk_quant.h"
#include "qtk_runtime.h"
#include "test.h"

static uint64_t rng = 88172645463325252ull;

static double urand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

static double nrand(void)
{
	double u = urand(), v = urand();
	return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

/* ---- data ------------------------------------------------------------ */

/* n inputs of cols channels that share 8 latent factors (plus unit noise
 * each) with per-channel scales from 0.3 to 3: a correlated layer input. */
static float *make_x(size_t n, size_t cols, uint64_t seed)
{
	float *x = malloc(n * cols * sizeof *x);
	double mix[8 * 512], sc[512];
	uint64_t keep = rng;

	rng = 1234567;
	for (size_t j = 0; j < cols; j++) {
		sc[j] = 0.3 * pow(10.0, urand());
		for (int k = 0; k < 8; k++)
			mix[j * 8 + k] = nrand();
	}
	rng = seed;
	for (size_t t = 0; t < n; t++) {
		double f[8];
		for (int k = 0; k < 8; k++)
			f[k] = nrand();
		for (size_t j = 0; j < cols; j++) {
			double v = 1.0 * nrand();
			for (int k = 0; k < 8; k++)
				v += mix[j * 8 + k] * f[k];
			x[t * cols + j] = (float)(sc[j] * v);
		}
	}
	rng = keep;
	return x;
}

/* H = 2 X^T X / n */
static double *hessian(const float *x, size_t n, size_t cols)
{
	double *h = calloc(cols * cols, sizeof *h);

	for (size_t t = 0; t < n; t++)
		for (size_t i = 0; i < cols; i++)
			for (size_t j = 0; j < cols; j++)
				h[i * cols + j] += 2.0 * (double)x[t * cols + i] * (double)x[t * cols + j] / (double)n;
	return h;
}

static float *make_w(size_t rows, size_t cols, uint64_t seed)
{
	float *w = malloc(rows * cols * sizeof *w);

	rng = seed;
	for (size_t i = 0; i < rows * cols; i++)
		w[i] = (float)(0.05 * nrand());
	return w;
}

/* The layer-output error on inputs with Hessian h: sum over rows of
 * (w - q) h (w - q)^T (= 2/n times the summed squared output error). */
static double out_err(const float *w, const float *q, const double *h, size_t rows,
                      size_t cols)
{
	double s = 0;

	for (size_t r = 0; r < rows; r++)
		for (size_t i = 0; i < cols; i++) {
			double ei = (double)w[r * cols + i] - (double)q[r * cols + i], t = 0;
			for (size_t j = 0; j < cols; j++)
				t += h[i * cols + j] * ((double)w[r * cols + j] - (double)q[r * cols + j]);
			s += ei * t;
		}
	return s;
}

/* Planes for rows x cols of L in one block. */
typedef struct {
	uint8_t *buf;
	uint64_t sz[QTK_PLANE_MAX];
	qtk_q_planes p;
	qtk_q_cplanes c;
} planes;

static void planes_new(planes *P, const qtk_q_layout *L, size_t rows, size_t cols)
{
	uint64_t off = 0;

	memset(P, 0, sizeof *P);
	qtk_q_plane_sizes(L, rows, cols, P->sz);
	P->buf = calloc(1, P->sz[0] + P->sz[1] + P->sz[2] + 64);
	for (int k = 0; k < 3; k++) {
		P->p.p[k] = P->sz[k] ? P->buf + off : NULL;
		P->c.p[k] = P->p.p[k];
		off += P->sz[k];
	}
}

static int planes_eq(const planes *a, const planes *b)
{
	for (int k = 0; k < 3; k++)
		if (a->sz[k] != b->sz[k] || (a->sz[k] && memcmp(a->p.p[k], b->p.p[k], a->sz[k])))
			return 0;
	return 1;
}

/* The table's integer schemes (every quantized one). */
static int is_int(int id)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(id);
	return s && s->quantized;
}

static const uint32_t groups[] = { 16, 32, 64, 128, 256, QTK_GROUP_ROW };

/* ---- the reference: unblocked, double ------------------------------- */

/* Lower Cholesky in place (unblocked); 0 if not positive definite. */
static int ref_chol(double *a, size_t n)
{
	for (size_t j = 0; j < n; j++) {
		for (size_t i = j; i < n; i++) {
			double s = a[i * n + j];
			for (size_t k = 0; k < j; k++)
				s -= a[i * n + k] * a[j * n + k];
			if (i == j) {
				if (s <= 0)
					return 0;
				a[j * n + j] = sqrt(s);
			} else {
				a[i * n + j] = s / a[j * n + j];
			}
		}
		for (size_t k = j + 1; k < n; k++)
			a[j * n + k] = 0;
	}
	return 1;
}

/* The group rule of INT8 or INT4 (F32 scales) on values x[0..n): the scale */
static double ref_scale(int scheme, const double *x, size_t n)
{
	double amax = 0, edge = 0;

	for (size_t j = 0; j < n; j++)
		if (fabs(x[j]) > amax) {
			amax = fabs(x[j]);
			edge = x[j];
		}
	return scheme == QTK_SCHEME_INT8 ? amax / 127.0 : edge / -8.0;
}

static double ref_q(int scheme, double x, double d)
{
	if (d == 0)
		return 0;
	if (scheme == QTK_SCHEME_INT8) {
		double v = round(x / d);
		v = v > 127 ? 127 : v < -127 ? -127 : v;
		return v * d;
	}
	double v = floor(x / d + 8.5);
	v = v < 0 ? 0 : v > 15 ? 15 : v;
	return (v - 8) * d;
}

/* gptq.py: dead columns, damping, act-order (static groups), H^-1 and its
 * upper Cholesky factor, then column by column: quantize, err = (w - q) /
 * U[i][i], W[:, i:] -= err U[i, i:]. q: [rows][cols] out. */
static void ref_gptq(int scheme, size_t gl, int act, const float *w0, const double *h0,
                     size_t rows, size_t cols, float *q)
{
	size_t n = cols;
	double *h = malloc(n * n * sizeof *h), *hi = calloc(n * n, sizeof *h);
	double *w = malloc(rows * n * sizeof *w), *sc = malloc(rows * n * sizeof *sc);
	size_t *perm = malloc(n * sizeof *perm);
	double mean = 0;

	memcpy(h, h0, n * n * sizeof *h);
	for (size_t i = 0; i < rows * n; i++)
		w[i] = w0[i];
	for (size_t i = 0; i < n; i++)
		if (h[i * n + i] == 0) {
			h[i * n + i] = 1;
			for (size_t r = 0; r < rows; r++)
				w[r * n + i] = 0;
		}
	for (size_t i = 0; i < n; i++)
		mean += h[i * n + i] / (double)n;
	for (size_t i = 0; i < n; i++)
		h[i * n + i] += 0.01 * mean;
	/* static groups (act-order): scales from the original weights */
	for (size_t r = 0; r < rows; r++)
		for (size_t g0 = 0; g0 < n; g0 += gl)
			sc[r * n + g0 / gl] = ref_scale(scheme, w + r * n + g0, n - g0 < gl ? n - g0 : gl);
	for (size_t i = 0; i < n; i++)
		perm[i] = i;
	if (act) /* stable sort by decreasing diagonal */
		for (size_t i = 1; i < n; i++)
			for (size_t j = i; j > 0 && h[perm[j] * n + perm[j]] > h[perm[j - 1] * n + perm[j - 1]]; j--) {
				size_t t = perm[j];
				perm[j] = perm[j - 1];
				perm[j - 1] = t;
			}
	double *hp = malloc(n * n * sizeof *hp);
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++)
			hp[i * n + j] = h[perm[i] * n + perm[j]];
	/* H^-1 = L^-T L^-1 by solving L L^T x = e_k for each k */
	ref_chol(hp, n);
	for (size_t k = 0; k < n; k++) {
		double *y = calloc(n, sizeof *y);
		for (size_t i = 0; i < n; i++) {
			double s = i == k;
			for (size_t j = 0; j < i; j++)
				s -= hp[i * n + j] * y[j];
			y[i] = s / hp[i * n + i];
		}
		for (size_t i = n; i-- > 0;) {
			double s = y[i];
			for (size_t j = i + 1; j < n; j++)
				s -= hp[j * n + i] * y[j];
			y[i] = s / hp[i * n + i];
		}
		for (size_t i = 0; i < n; i++)
			hi[i * n + k] = y[i];
		free(y);
	}
	ref_chol(hi, n); /* lower C, C C^T = H^-1: the upper factor is C^T */
	for (size_t r = 0; r < rows; r++) {
		double *wr = malloc(n * sizeof *wr), d = 0;
		for (size_t i = 0; i < n; i++)
			wr[i] = w[r * n + perm[i]];
		for (size_t i = 0; i < n; i++) {
			size_t c = perm[i];
			if (act) {
				d = sc[r * n + c / gl];
			} else if (c % gl == 0) {
				d = ref_scale(scheme, wr + i, n - i < gl ? n - i : gl);
			}
			double v = ref_q(scheme, wr[i], d), err = (wr[i] - v) / hi[i * n + i];
			q[r * n + c] = (float)v;
			for (size_t j = i; j < n; j++)
				wr[j] -= err * hi[j * n + i];
		}
		free(wr);
	}
	free(h);
	free(hi);
	free(hp);
	free(w);
	free(sc);
	free(perm);
}

/* ---- tests ----------------------------------------------------------- */

static qtk_err run_gptq(const double *h, size_t cols, const qtk_gptq_opts *go,
                        const qtk_gemm *g, const qtk_q_layout *L, float *w, size_t rows,
                        planes *P, const qtk_q_opts *qo, qtk_status *st)
{
	qtk_gptq *f;

	QTK_TRY(qtk_gptq_prepare(h, cols, go, g, &f, st));
	qtk_err rc = qtk_gptq_quantize(f, g, L, w, rows, cols, &P->p, qo, st);
	qtk_gptq_free(f);
	return rc;
}

/* H = I, and any diagonal H with or without act-order: no error reaches
 * another column, so GPTQ is qtk's round-to-nearest (or search, weighted
 * by 1 / U[i][i]^2 = the damped diagonal) to the byte, for every scheme,
 * group size, scale dtype and rule; and the returned weights are the
 * dequantized planes. */
TEST(gptq_diagonal_hessian_is_rtn)
{
	enum { R = 5, C = 320 };
	double *h = calloc(C * C, sizeof *h);
	float *w0 = make_w(R, C, 7), *w = malloc(sizeof(float) * R * C);
	float *deq = malloc(sizeof(float) * R * C);
	qtk_status st;
	int n = 0;

	float *imp = malloc(sizeof(float) * C);

	for (int diag = 0; diag < 2; diag++) {
		double sum = 0, lambda;
		for (size_t i = 0; i < C; i++) {
			h[i * C + i] = diag ? 0.5 + urand() : 1.0;
			sum += h[i * C + i];
		}
		/* the search's weights as GPTQ forms them: u = 1 / sqrt(h + lambda)
		 * in double, narrowed; 1 / u^2 in float */
		lambda = 0.01 * (sum / (double)C);
		for (size_t i = 0; i < C; i++) {
			float u = (float)(1.0 / sqrt(h[i * C + i] + lambda));
			imp[i] = 1.0f / (u * u);
		}
		for (int id = 0; id < QTK_SCHEME_COUNT; id++)
		for (size_t gi = 0; gi < sizeof groups / sizeof *groups; gi++)
		for (int v = 0; v < 8; v++) {
			qtk_q_layout L = { .scheme = id, .group = groups[gi],
			                   .scale_dtype = v & 1 ? QTK_DT_F32 : QTK_DT_F16 };
			const qtk_q_scheme *s = qtk_q_scheme_get(id);
			qtk_q_opts qo = { .search = (v >> 1) & 1, .tensor = "t" };
			qtk_gptq_opts go;
			planes A, B;
			if (!is_int(id) || ((v & 4) && !s->has_bias))
				continue;
			L.flags = v & 4 ? QTK_QF_MLX_AFFINE : 0;
			qtk_gptq_opts_init(&go);
			go.act_order = diag;
			memcpy(w, w0, sizeof(float) * R * C);
			planes_new(&A, &L, R, C);
			planes_new(&B, &L, R, C);
			qtk_q_opts ro = qo;
			ro.importance = imp;
			REQUIRE(qtk_q_quantize_rows(&L, w0, R, C, &A.p, &ro, &st) == QTK_OK);
			CHECK_MSG(run_gptq(h, C, &go, NULL, &L, w, R, &B, &qo, &st) == QTK_OK, "%s",
			          st.msg);
			CHECK_MSG(planes_eq(&A, &B), "%s group %u v%d diag %d: planes differ",
			          s->name, L.group, v, diag);
			qtk_q_dequantize_rows(&L, &B.c, R, C, deq);
			CHECK_MSG(!memcmp(deq, w, sizeof(float) * R * C),
			          "%s group %u v%d: w is not the dequantized result", s->name, L.group, v);
			free(A.buf);
			free(B.buf);
			n++;
		}
	}
	CHECK(n >= 2 * 6 * 5 * 4);
	free(imp);
	free(h);
	free(w0);
	free(w);
	free(deq);
}

/* Against the unblocked double reference: int8 and int4 (F32 scales),
 * groups 32 and the row (more than a block: fitted on the lazily updated
 * weights), with and without act-order; blocks of 128 and of 48 (a group
 * that straddles blocks). Equal up to rounding: a code flips only where
 * f32 and double land on either side of a rounding edge. */
TEST(gptq_matches_unblocked_reference)
{
	enum { R = 12, C = 200, N = 600 };
	float *x = make_x(N, C, 5), *w0 = make_w(R, C, 11);
	double *h = hessian(x, N, C);
	float *w = malloc(sizeof(float) * R * C), *q = malloc(sizeof(float) * R * C);
	static const int schemes[] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4 };
	qtk_status st;

	for (int si = 0; si < 2; si++)
	for (int gi = 0; gi < 2; gi++)
	for (int act = 0; act < 2; act++)
	for (int bs = 0; bs < 2; bs++) {
		qtk_q_layout L = { .scheme = schemes[si], .group = gi ? QTK_GROUP_ROW : 32,
		                   .scale_dtype = QTK_DT_F32 };
		qtk_gptq_opts go;
		planes P;
		size_t gl = gi ? C : 32, diff = 0;
		qtk_gptq_opts_init(&go);
		go.act_order = act;
		go.block = bs ? 48 : 128;
		memcpy(w, w0, sizeof(float) * R * C);
		planes_new(&P, &L, R, C);
		REQUIRE(run_gptq(h, C, &go, NULL, &L, w, R, &P, NULL, &st) == QTK_OK);
		ref_gptq(schemes[si], gl, act, w0, h, R, C, q);
		for (size_t i = 0; i < R * C; i++)
			diff += fabs((double)w[i] - (double)q[i]) > 1e-5 * (fabs((double)q[i]) + 1e-3);
		double e1 = out_err(w0, w, h, R, C), e2 = out_err(w0, q, h, R, C);
		if (getenv("QTK_GPTQ_PRINT"))
			printf("    scheme %d group %zu act %d block %u: %zu of %d differ, err %g vs %g\n",
			       schemes[si], gl, act, go.block, diff, R * C, e1, e2);
		CHECK_MSG(diff <= R * C / 1000 && fabs(e1 - e2) <= 0.001 * e2,
		          "scheme %d group %zu act %d block %u: %zu of %d values differ, err %g vs %g",
		          schemes[si], gl, act, go.block, diff, R * C, e1, e2);
		free(P.buf);
	}
	free(x);
	free(w0);
	free(h);
	free(w);
	free(q);
}

/* Every scheme and group size, on a correlated input: the summed
 * layer-output error on held-out inputs is at most 0.7x RTN's for GPTQ
 * (act-order or not), and the importance-weighted search lies between. */
TEST(gptq_beats_rtn_on_held_out_outputs)
{
	enum { R = 16, C = 256, N = 1024 };
	float *xc = make_x(N, C, 21), *xh = make_x(N, C, 22), *w0 = make_w(R, C, 3);
	double *hc = hessian(xc, N, C), *hh = hessian(xh, N, C);
	float *w = malloc(sizeof(float) * R * C), *q = malloc(sizeof(float) * R * C);
	float imp[C];
	qtk_status st;

	for (size_t j = 0; j < C; j++)
		imp[j] = (float)hc[j * C + j];
	for (int id = 0; id < QTK_SCHEME_COUNT; id++)
	for (size_t gi = 0; gi < sizeof groups / sizeof *groups; gi++) {
		qtk_q_layout L = { .scheme = id, .group = groups[gi], .scale_dtype = QTK_DT_F16 };
		qtk_q_opts rtn = { .tensor = "t" }, wt = { .search = 1, .importance = imp };
		double e[4];
		planes P;
		if (!is_int(id))
			continue;
		planes_new(&P, &L, R, C);
		REQUIRE(qtk_q_quantize_rows(&L, w0, R, C, &P.p, &rtn, &st) == QTK_OK);
		qtk_q_dequantize_rows(&L, &P.c, R, C, q);
		e[0] = out_err(w0, q, hh, R, C);
		REQUIRE(qtk_q_quantize_rows(&L, w0, R, C, &P.p, &wt, &st) == QTK_OK);
		qtk_q_dequantize_rows(&L, &P.c, R, C, q);
		e[1] = out_err(w0, q, hh, R, C);
		for (int act = 0; act < 2; act++) {
			qtk_gptq_opts go;
			qtk_gptq_opts_init(&go);
			go.act_order = act;
			memcpy(w, w0, sizeof(float) * R * C);
			REQUIRE(run_gptq(hc, C, &go, NULL, &L, w, R, &P, &wt, &st) == QTK_OK);
			e[2 + act] = out_err(w0, w, hh, R, C);
		}
		/* the diagonal weighting knows nothing of the correlations:
		 * at 8 bits, where the search moves little, it can land a few
		 * per cent either side of RTN */
		CHECK_MSG(e[2] <= 0.7 * e[0] && e[3] <= 0.7 * e[0] && e[1] <= 1.1 * e[0] &&
		          e[1] >= e[2] && e[1] >= e[3],
		          "%s group %u: rtn %g weighted %g gptq %g act-order %g",
		          qtk_q_scheme_get(id)->name, L.group, e[0], e[1], e[2], e[3]);
		if (getenv("QTK_GPTQ_PRINT")) /* the figures for docs/quantization.md */
			printf("    %-12s g%-4u out err: rtn %.4g  weighted %.4g  gptq %.4g (%.2fx)  act-order %.4g (%.2fx)\n",
			       qtk_q_scheme_get(id)->name, L.group, e[0], e[1], e[2], e[2] / e[0],
			       e[3], e[3] / e[0]);
		free(P.buf);
	}
	free(xc);
	free(xh);
	free(w0);
	free(hc);
	free(hh);
	free(w);
	free(q);
}

/* Dead columns (diag H = 0): zeroed as gptq.py does, or kept and
 * quantized on their own (no error goes in or out of them). */
TEST(gptq_dead_columns)
{
	enum { R = 6, C = 96, N = 300 };
	float *x = make_x(N, C, 9), *w0 = make_w(R, C, 4), *w = malloc(sizeof(float) * R * C);
	qtk_q_layout L = { .scheme = QTK_SCHEME_INT8, .group = 32, .scale_dtype = QTK_DT_F32 };
	static const size_t dead[] = { 0, 5, 40, 95 };
	qtk_status st;
	double *h;

	for (size_t t = 0; t < N; t++)
		for (size_t k = 0; k < 4; k++)
			x[t * C + dead[k]] = 0.0f;
	h = hessian(x, N, C);
	for (int keep = 0; keep < 2; keep++)
	for (int act = 0; act < 2; act++) {
		qtk_gptq_opts go;
		planes P;
		qtk_gptq_opts_init(&go);
		go.keep_dead = keep;
		go.act_order = act;
		memcpy(w, w0, sizeof(float) * R * C);
		planes_new(&P, &L, R, C);
		REQUIRE(run_gptq(h, C, &go, NULL, &L, w, R, &P, NULL, &st) == QTK_OK);
		for (size_t r = 0; r < R; r++)
			for (size_t k = 0; k < 4; k++) {
				float v = w[r * C + dead[k]], v0 = w0[r * C + dead[k]];
				const float *sc = (const float *)P.p.p[QTK_PLANE_SCALES];
				float d = sc[r * (C / 32) + dead[k] / 32];
				if (keep)
					CHECK_MSG(fabs((double)v - (double)v0) <= 0.5001 * (double)d,
					          "kept dead column %zu row %zu: %g for %g (step %g)",
					          dead[k], r, (double)v, (double)v0, (double)d);
				else
					CHECK_MSG(v == 0.0f, "dead column %zu row %zu: %g", dead[k], r,
					          (double)v);
			}
		free(P.buf);
	}
	/* an all-zero Hessian: every column dead */
	memset(h, 0, sizeof(double) * C * C);
	{
		planes P;
		planes_new(&P, &L, R, C);
		memcpy(w, w0, sizeof(float) * R * C);
		CHECK(run_gptq(h, C, NULL, NULL, &L, w, R, &P, NULL, &st) == QTK_OK);
		for (size_t i = 0; i < R * C; i++)
			CHECK(w[i] == 0.0f);
		free(P.buf);
	}
	free(x);
	free(w0);
	free(w);
	free(h);
}

/* Bad input: named errors, no output claimed. */
TEST(gptq_bad_input)
{
	enum { C = 32 };
	double h[C * C] = { 0 };
	float w[2 * C];
	qtk_q_layout L = { .scheme = QTK_SCHEME_INT4, .group = 16, .scale_dtype = QTK_DT_F16 };
	qtk_q_opts qo = { .tensor = "blk.0.w" };
	qtk_gptq_opts go;
	qtk_gptq *f = NULL;
	qtk_status st;
	planes P;

	for (size_t i = 0; i < C; i++)
		h[i * C + i] = 1.0;
	for (size_t i = 0; i < 2 * C; i++)
		w[i] = (float)i - 20.0f;
	qtk_gptq_opts_init(&go);
	h[3 * C + 4] = NAN;
	CHECK(qtk_gptq_prepare(h, C, &go, NULL, &f, &st) == QTK_E_Q_NONFINITE);
	CHECK(strstr(st.msg, "(3, 4)") && !f);
	h[3 * C + 4] = 0.0;
	h[7 * C + 7] = -1.0;
	CHECK(qtk_gptq_prepare(h, C, &go, NULL, &f, &st) == QTK_E_ARG);
	CHECK(strstr(st.msg, "diagonal 7") != NULL);
	h[7 * C + 7] = 1.0;
	h[1] = h[C] = 2.0; /* [[1, 2], [2, 1]] is indefinite */
	go.damp = 0.0;
	CHECK(qtk_gptq_prepare(h, C, &go, NULL, &f, &st) == QTK_E_Q_HESSIAN);
	CHECK(strstr(st.msg, "damping") != NULL);
	go.damp = -1.0;
	CHECK(qtk_gptq_prepare(h, C, &go, NULL, &f, &st) == QTK_E_ARG);
	go.damp = NAN;
	CHECK(qtk_gptq_prepare(h, C, &go, NULL, &f, &st) == QTK_E_ARG);
	CHECK(qtk_gptq_prepare(h, 0, NULL, NULL, &f, &st) == QTK_E_ARG);
	h[1] = h[C] = 0.0;
	REQUIRE(qtk_gptq_prepare(h, C, NULL, NULL, &f, &st) == QTK_OK);
	planes_new(&P, &L, 2, C);
	CHECK(qtk_gptq_quantize(f, NULL, &L, w, 2, C - 16, &P.p, &qo, &st) == QTK_E_ARG);
	CHECK(strstr(st.msg, "blk.0.w") != NULL);
	L.scheme = QTK_SCHEME_F16;
	L.group = 0;
	CHECK(qtk_gptq_quantize(f, NULL, &L, w, 2, C, &P.p, &qo, &st) == QTK_E_UNSUPPORTED);
	L = (qtk_q_layout){ .scheme = QTK_SCHEME_NF4, .group = 16, .scale_dtype = QTK_DT_F16,
	                    .flags = QTK_QF_DOUBLE_QUANT };
	CHECK(qtk_gptq_quantize(f, NULL, &L, w, 2, C, &P.p, &qo, &st) == QTK_E_UNSUPPORTED);
	L = (qtk_q_layout){ .scheme = QTK_SCHEME_INT4, .group = 16, .scale_dtype = QTK_DT_F16 };
	w[C + 20] = INFINITY;
	qo.row0 = 40;
	CHECK(qtk_gptq_quantize(f, NULL, &L, w, 2, C, &P.p, &qo, &st) == QTK_E_Q_NONFINITE);
	CHECK_MSG(strstr(st.msg, "row 41 group 1") != NULL, "%s", st.msg);
	w[C + 20] = 1e30f; /* a scale f16 cannot hold */
	CHECK(qtk_gptq_quantize(f, NULL, &L, w, 2, C, &P.p, &qo, &st) == QTK_E_Q_SCALE_RANGE);
	free(P.buf);
	qtk_gptq_free(f);
	qtk_gptq_free(NULL);
}

/* Every allocation failing in turn: QTK_E_NOMEM, nothing leaked (make
 * check), and then the same result as without faults. */
TEST(gptq_alloc_faults)
{
	enum { R = 4, C = 150, N = 200 };
	float *x = make_x(N, C, 2), *w0 = make_w(R, C, 8), *w = malloc(sizeof(float) * R * C);
	float *ref = malloc(sizeof(float) * R * C);
	double *h = hessian(x, N, C);
	qtk_q_layout L = { .scheme = QTK_SCHEME_INT4_AFFINE, .group = 32, .scale_dtype = QTK_DT_F16 };
	qtk_gptq_opts go;
	qtk_status st;
	planes P;
	int seen = 0;

	qtk_gptq_opts_init(&go);
	go.act_order = 1;
	planes_new(&P, &L, R, C);
	for (int refit = 0; refit < 2; refit++) {
	go.refit = refit ? 3 : 0;
	memcpy(ref, w0, sizeof(float) * R * C);
	REQUIRE(run_gptq(h, C, &go, NULL, &L, ref, R, &P, NULL, &st) == QTK_OK);
	for (uint64_t k = 1; k < 40; k++) {
		memcpy(w, w0, sizeof(float) * R * C);
		qtk_fault_arm(QTK_FAULT_ALLOC, k, 0);
		qtk_err rc = run_gptq(h, C, &go, NULL, &L, w, R, &P, NULL, &st);
		int fired = qtk_fault_fired(QTK_FAULT_ALLOC);
		qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
		if (!fired) {
			CHECK(rc == QTK_OK && !memcmp(w, ref, sizeof(float) * R * C));
			break;
		}
		seen++;
		CHECK_MSG(rc == QTK_E_NOMEM, "refit %d allocation %llu: %d %s", refit,
		          (unsigned long long)k, rc, st.msg);
	}
	CHECK(seen >= (refit ? 10 : 6));
	seen = 0;
	}
	free(P.buf);
	free(x);
	free(w0);
	free(w);
	free(ref);
	free(h);
}

/* One row's GPTQ objective in double: (w - q) h (w - q)^T. */
static double row_err(const float *w, const float *q, const double *h, size_t cols)
{
	return out_err(w, q, h, 1, cols);
}

/* The refit after the sweep (qtk_gptq_opts.refit): for every integer
 * scheme, groups 32, 64 and the row, F16 and F32 scales, with and without
 * act-order, the codes are the sweep's, the returned weights are the
 * dequantized planes, no row's objective (damped H, in double) rises, and
 * the total falls. A symmetric row-group row has one unknown, so one
 * conjugate-gradient step lands on the closed form s = q'Hw / q'Hq. */
TEST(gptq_refit_lowers_objective_codes_kept)
{
	enum { R = 10, C = 192, N = 500 };
	float *x = make_x(N, C, 41), *w0 = make_w(R, C, 42);
	double *h = hessian(x, N, C), *hd = malloc(sizeof(double) * C * C);
	float *a = malloc(sizeof(float) * R * C), *b = malloc(sizeof(float) * R * C);
	float *deq = malloc(sizeof(float) * R * C);
	static const uint32_t rg[] = { 32, 64, QTK_GROUP_ROW };
	double mean = 0;
	qtk_status st;
	int n = 0, closed = 0;

	for (size_t i = 0; i < C; i++)
		mean += h[i * C + i] / C;
	memcpy(hd, h, sizeof(double) * C * C);
	for (size_t i = 0; i < C; i++)
		hd[i * C + i] += 0.01 * mean;
	for (int id = 0; id < QTK_SCHEME_COUNT; id++)
	for (size_t gi = 0; gi < sizeof rg / sizeof *rg; gi++)
	for (int v = 0; v < 4; v++) {
		qtk_q_layout L = { .scheme = id, .group = rg[gi],
		                   .scale_dtype = v & 1 ? QTK_DT_F32 : QTK_DT_F16 };
		qtk_gptq_opts go;
		planes A, B;
		double ea = 0, eb = 0;
		if (!is_int(id))
			continue;
		qtk_gptq_opts_init(&go);
		go.act_order = v >> 1;
		memcpy(a, w0, sizeof(float) * R * C);
		memcpy(b, w0, sizeof(float) * R * C);
		planes_new(&A, &L, R, C);
		planes_new(&B, &L, R, C);
		REQUIRE(run_gptq(h, C, &go, NULL, &L, a, R, &A, NULL, &st) == QTK_OK);
		go.refit = 4;
		REQUIRE(run_gptq(h, C, &go, NULL, &L, b, R, &B, NULL, &st) == QTK_OK);
		CHECK_MSG(!memcmp(A.p.p[QTK_PLANE_CODES], B.p.p[QTK_PLANE_CODES],
		                  A.sz[QTK_PLANE_CODES]),
		          "%s group %u v%d: the refit changed codes", qtk_q_scheme_get(id)->name,
		          L.group, v);
		qtk_q_dequantize_rows(&L, &B.c, R, C, deq);
		CHECK(!memcmp(deq, b, sizeof(float) * R * C));
		for (size_t r = 0; r < R; r++) {
			double e0 = row_err(w0 + r * C, a + r * C, hd, C);
			double e1 = row_err(w0 + r * C, b + r * C, hd, C);
			CHECK_MSG(e1 <= e0 * (1 + 1e-6), "%s group %u v%d row %zu: %g > %g",
			          qtk_q_scheme_get(id)->name, L.group, v, r, e1, e0);
			ea += e0;
			eb += e1;
		}
		/* at 8 bits with F16 scales the scale's rounding can be all
		 * there is to gain; at 4 bits there is always more */
		CHECK_MSG(qtk_q_scheme_get(id)->code_bits > 4 ? eb <= ea : eb < 0.995 * ea,
		          "%s group %u v%d: refit %g, sweep %g", qtk_q_scheme_get(id)->name,
		          L.group, v, eb, ea);
		if (getenv("QTK_GPTQ_PRINT"))
			printf("    %-12s g%-4u v%d objective: sweep %.4g refit %.4g (%.3fx)\n",
			       qtk_q_scheme_get(id)->name, L.group, v, ea, eb, eb / ea);
		if (L.group == QTK_GROUP_ROW && (v & 1) && !B.sz[QTK_PLANE_BIASES]) {
			const float *sc = (const float *)B.p.p[QTK_PLANE_SCALES];
			const float *s0 = (const float *)A.p.p[QTK_PLANE_SCALES];
			for (size_t r = 0; r < R; r++) {
				/* q: the codes' values, the sweep's dequantized row over
				 * its scale */
				double qhw = 0, qhq = 0;
				for (size_t i = 0; i < C; i++) {
					double ti = 0, ui = 0;
					for (size_t j = 0; j < C; j++) {
						double qj = (double)a[r * C + j] / (double)s0[r];
						ti += hd[i * C + j] * (double)w0[r * C + j];
						ui += hd[i * C + j] * qj;
					}
					double qi = (double)a[r * C + i] / (double)s0[r];
					qhw += qi * ti;
					qhq += qi * ui;
				}
				double s = qhw / qhq;
				CHECK_MSG(fabs((double)sc[r] - s) <= 1e-4 * fabs(s),
				          "%s row %zu: refit scale %.9g, closed form %.9g",
				          qtk_q_scheme_get(id)->name, r, (double)sc[r], s);
				closed++;
			}
		}
		free(A.buf);
		free(B.buf);
		n++;
	}
	CHECK(n >= 4 * 3 * 4 && closed >= 2 * R);
	free(x);
	free(w0);
	free(h);
	free(hd);
	free(a);
	free(b);
	free(deq);
}

/* The OpenBLAS table (runtime) and the plain loops agree: the same
 * products in another order, so values within rounding and the codes
 * nearly all equal; and the gemm semantics (transposes, strides) match. */
TEST(gptq_blas_table_agrees)
{
	enum { R = 20, C = 300, N = 800 };
	float *x = make_x(N, C, 31), *w0 = make_w(R, C, 32);
	float *a = malloc(sizeof(float) * R * C), *b = malloc(sizeof(float) * R * C);
	double *h = hessian(x, N, C);
	const qtk_gemm *g = qtk_rt_gemm_blas();
	qtk_q_layout L = { .scheme = QTK_SCHEME_INT4, .group = 64, .scale_dtype = QTK_DT_F16 };
	qtk_status st;
	planes P;
	size_t diff = 0;

	/* the four transposes, odd strides */
	for (int t = 0; t < 4; t++) {
		double A[7 * 9], B[9 * 11], C1[5 * 13], C2[5 * 13];
		float As[7 * 9], Bs[9 * 11], S1[5 * 13], S2[5 * 13];
		int ta = t & 1, tb = t >> 1;
		for (int i = 0; i < 63; i++)
			As[i] = (float)(A[i] = nrand());
		for (int i = 0; i < 99; i++)
			Bs[i] = (float)(B[i] = nrand());
		for (int i = 0; i < 65; i++) {
			S1[i] = S2[i] = (float)(C1[i] = C2[i] = nrand());
		}
		/* m = 5, n = 6, k = 4 inside the arrays (A: ld 9, B: ld 11 or,
		 * transposed, 9; C: ld 13) */
		g->dgemm(g->ctx, ta, tb, 5, 6, 4, -0.5, A, 9, B, tb ? 9 : 11, 1.0, C1, 13);
		qtk_dgemm_ref(NULL, ta, tb, 5, 6, 4, -0.5, A, 9, B, tb ? 9 : 11, 1.0, C2, 13);
		g->sgemm(g->ctx, ta, tb, 5, 6, 4, 2.0f, As, 9, Bs, tb ? 9 : 11, 0.0f, S1, 13);
		qtk_sgemm_ref(NULL, ta, tb, 5, 6, 4, 2.0f, As, 9, Bs, tb ? 9 : 11, 0.0f, S2, 13);
		for (int i = 0; i < 65; i++) {
			CHECK(fabs(C1[i] - C2[i]) <= 1e-12 * (1 + fabs(C2[i])));
			CHECK(fabs((double)S1[i] - (double)S2[i]) <= 1e-5 * (1 + fabs((double)S2[i])));
		}
	}
	memcpy(a, w0, sizeof(float) * R * C);
	memcpy(b, w0, sizeof(float) * R * C);
	planes_new(&P, &L, R, C);
	REQUIRE(run_gptq(h, C, NULL, g, &L, a, R, &P, NULL, &st) == QTK_OK);
	REQUIRE(run_gptq(h, C, NULL, NULL, &L, b, R, &P, NULL, &st) == QTK_OK);
	for (size_t i = 0; i < R * C; i++)
		diff += fabs((double)a[i] - (double)b[i]) > 1e-5 * (fabs((double)b[i]) + 1e-3);
	double ea = out_err(w0, a, h, R, C), eb = out_err(w0, b, h, R, C);
	CHECK_MSG(diff <= R * C / 200 && fabs(ea - eb) <= 0.01 * eb, "%zu differ; err %g vs %g",
	          diff, ea, eb);
	free(P.buf);
	free(x);
	free(w0);
	free(a);
	free(b);
	free(h);
}
