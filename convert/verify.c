/* convert: `qtk verify FILE --against SOURCE` — for every tensor of FILE,
 * the error of its stored weights W_hat against the source weights W, and
 * of the layer output: W_hat X (qtk_rt_matmul on FILE's planes) against
 * W X (OpenBLAS sgemm on the source rows in f32), X a reproducible batch
 * of input vectors (verify_inputs.c).
 *
 * One tensor at a time; its rows go in blocks (one qtk_rt_matmul each,
 * the output of at most 2^20 values) and each block in fixed chunks of
 * rows, run on the pool's threads: a chunk reads its source rows,
 * dequantizes its stored rows, computes its reference outputs and sums its
 * errors in double into its own accumulators, merged in chunk order. Block
 * and chunk sizes depend on the shape only, so the numbers do not depend
 * on the thread count. Memory: one tensor's decoded planes (zstd, GGUF
 * blocks), X, one block's outputs and a few chunk buffers per thread. */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "verify_impl.h"

#define CHUNK_ELEMS (1u << 16)   /* weights per chunk of rows */
#define BLOCK_OUTS (1u << 20)    /* outputs per block of rows */
#define MAX_X_ELEMS (1u << 28)   /* batch * cols: 1 GiB of inputs */

/* Defaults of the limit on out_rel_err: a column of quant's scheme table
 * (docs/cli.md, "How the limits were chosen"). */
double qtk_verify_default_limit(qtk_scheme_id s)
{
	return qtk_q_scheme_get(s) ? qtk_q_scheme_get(s)->verify_limit : 0.0;
}

/* ---- one tensor ----------------------------------------------------------- */

typedef struct {
	float *ws, *wh;        /* [chunk_rows][cols] source and stored rows */
	float *yref;           /* [batch][chunk_rows] */
	float *absmax;         /* [chunk_rows * gpr] double-quant scales */
	double *e2, *r2;       /* [chunk_rows] per row: error and reference sums */
} thr_buf;

/* What one chunk found. */
typedef struct {
	qtk_q_acc w, out;
	double row_max;
	int64_t bad_src, bad_hat, bad_out; /* first row with a NaN/Inf, or -1 */
	int err;
} chunk_res;

typedef struct {
	const vf_tensor *t;
	const src *s;
	const void *const *pl;     /* FILE's planes of the whole tensor */
	qtk_q_layout Ld;           /* the layout rows are dequantized with */
	uint64_t gpr;
	const float *x;
	size_t batch, cols;
	float *yhat;               /* [batch][nb]: this block's outputs */
	int fallback;              /* no kernel: W_hat X from dequantized rows */
	uint64_t b0, nb, chunk_rows;
	chunk_res *res;            /* [chunks of the block] */
	thr_buf *tb;               /* [threads] */
	pthread_mutex_t mu;        /* guards err */
	qtk_status err;
} tjob;

static void set_err(tjob *J, const qtk_status *st)
{
	pthread_mutex_lock(&J->mu);
	if (J->err.code == QTK_OK)
		J->err = *st;
	pthread_mutex_unlock(&J->mu);
}

static int thr_alloc(tjob *J, thr_buf *b)
{
	size_t cr = (size_t)J->chunk_rows, w = cr * J->cols;

	if (b->ws)
		return 0;
	b->ws = qtk_malloc(w * sizeof(float));
	b->wh = qtk_malloc(w * sizeof(float));
	b->yref = qtk_malloc(J->batch * cr * sizeof(float));
	b->absmax = qtk_malloc((cr * (size_t)J->gpr + 1) * sizeof(float));
	b->e2 = qtk_malloc(cr * sizeof(double));
	b->r2 = qtk_malloc(cr * sizeof(double));
	return b->ws && b->wh && b->yref && b->absmax && b->e2 && b->r2 ? 0 : -1;
}

static void thr_free(thr_buf *b)
{
	qtk_free(b->ws);
	qtk_free(b->wh);
	qtk_free(b->yref);
	qtk_free(b->absmax);
	qtk_free(b->e2);
	qtk_free(b->r2);
	memset(b, 0, sizeof *b);
}

/* Source rows [r0, r0+n) in FILE's row order, as f32. */
static qtk_err read_source(const tjob *J, uint64_t r0, size_t n, float *dst, qtk_status *st)
{
	const vf_tensor *t = J->t;

	if (t->rows_order == VF_ROWS_SAME)
		return src_read_f32(J->s, t->s, r0 * J->cols, n * J->cols, dst, st);
	for (size_t r = 0; r < n; r++)
		QTK_TRY(src_read_f32(J->s, t->s, vf_src_row(t, r0 + r) * J->cols, J->cols,
		                     dst + r * J->cols, st));
	return QTK_OK;
}

/* Stored rows [r0, r0+n) as f32, exactly as qtk_q_dequantize_rows gives
 * them (double-quantized scales rebuilt as qtk_q_double_dequant does). */
static void dequant_rows(const tjob *J, uint64_t r0, size_t n, thr_buf *b)
{
	const qtk_q_layout *L = &J->t->L;
	qtk_q_cplanes cp;

	for (int k = 0; k < QTK_PLANE_MAX; k++) {
		uint64_t rb = qtk_q_row_bytes(L, J->cols, k);
		cp.p[k] = J->pl[k] && rb ? (const uint8_t *)J->pl[k] + r0 * rb : NULL;
	}
	if (L->flags & QTK_QF_DOUBLE_QUANT) {
		const uint8_t *codes = J->pl[QTK_PLANE_SCALES], *dq = J->pl[QTK_PLANE_DQ];
		uint64_t g0 = r0 * J->gpr;
		float off, s;

		memcpy(&off, dq, 4);
		for (uint64_t g = 0; g < n * J->gpr; g++) {
			memcpy(&s, dq + 4 + 4 * ((g0 + g) / 256), 4);
			b->absmax[g] = (float)(int8_t)codes[g0 + g] * s + off;
		}
		cp.p[QTK_PLANE_SCALES] = b->absmax;
	}
	if (L->scheme == QTK_SCHEME_RAW) /* the table has no dequantize for raw bytes */
		qtk_to_f32(L->dtype, cp.p[QTK_PLANE_CODES], b->wh, n * J->cols);
	else
		qtk_q_dequantize_rows(&J->Ld, &cp, n, J->cols, b->wh);
}

static int64_t first_bad_row(const float *v, size_t rows, size_t stride, size_t n)
{
	for (size_t r = 0; r < rows; r++)
		for (size_t j = 0; j < n; j++)
			if (!isfinite(v[r * stride + j]))
				return (int64_t)r;
	return -1;
}

/* Errors of the outputs of rows [r0, r0+n): Y_hat columns against yref. */
static void out_errors(tjob *J, chunk_res *c, thr_buf *b, uint64_t r0, size_t n)
{
	const float *yh = J->yhat + (r0 - J->b0);

	memset(b->e2, 0, n * sizeof(double));
	memset(b->r2, 0, n * sizeof(double));
	for (size_t v = 0; v < J->batch; v++) {
		const float *y = b->yref + v * n, *h = yh + v * J->nb;
		qtk_q_acc_add(&c->out, y, h, n);
		for (size_t r = 0; r < n; r++) {
			double d = (double)y[r] - (double)h[r];
			b->e2[r] += d * d;
			b->r2[r] += (double)y[r] * (double)y[r];
			if (c->bad_out < 0 && !isfinite(h[r]))
				c->bad_out = (int64_t)(r0 + r);
		}
	}
	for (size_t r = 0; r < n; r++) {
		double e = b->r2[r] > 0 ? sqrt(b->e2[r] / b->r2[r])
		                        : b->e2[r] > 0 ? (double)INFINITY : 0.0;
		if (!(e <= c->row_max)) /* NaN counts as worst */
			c->row_max = e;
	}
}

static void run_chunk(tjob *J, size_t c, thr_buf *b)
{
	chunk_res *R = &J->res[c];
	uint64_t r0 = J->b0 + c * J->chunk_rows;
	size_t n = (size_t)(J->b0 + J->nb - r0 < J->chunk_rows ? J->b0 + J->nb - r0
	                                                         : J->chunk_rows);
	qtk_status st;
	int64_t bad;

	R->bad_src = R->bad_hat = R->bad_out = -1;
	if (read_source(J, r0, n, b->ws, &st)) {
		R->err = 1;
		set_err(J, &st);
		return;
	}
	dequant_rows(J, r0, n, b);
	qtk_q_acc_add(&R->w, b->ws, b->wh, n * J->cols);
	if ((bad = first_bad_row(b->ws, n, J->cols, J->cols)) >= 0)
		R->bad_src = (int64_t)r0 + bad;
	if ((bad = first_bad_row(b->wh, n, J->cols, J->cols)) >= 0)
		R->bad_hat = (int64_t)r0 + bad;
	/* yref [batch][n] = X [batch][cols] . W^T */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)J->batch, (blasint)n,
	            (blasint)J->cols, 1.0f, J->x, (blasint)J->cols, b->ws, (blasint)J->cols,
	            0.0f, b->yref, (blasint)n);
	if (J->fallback)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)J->batch, (blasint)n,
		            (blasint)J->cols, 1.0f, J->x, (blasint)J->cols, b->wh,
		            (blasint)J->cols, 0.0f, J->yhat + (r0 - J->b0), (blasint)J->nb);
	out_errors(J, R, b, r0, n);
}

static void chunk_range(void *ctx, size_t begin, size_t end, unsigned thread)
{
	tjob *J = ctx;
	thr_buf *b = &J->tb[thread];

	if (thr_alloc(J, b)) {
		qtk_status st;
		qtk_fail(&st, QTK_E_NOMEM, "tensor '%s': out of memory for chunk buffers",
		         J->t->name);
		set_err(J, &st);
		for (size_t c = begin; c < end; c++)
			J->res[c].err = 1;
		return;
	}
	for (size_t c = begin; c < end; c++)
		run_chunk(J, c, b);
}

/* ---- the job ------------------------------------------------------------- */

typedef struct {
	const qtk_verify_opts *o;
	vf_file f;
	src *s;
	act_stats *stats;
	qtk_rt_pool *pool;
	vf_tensor *t;
	size_t batch;
	float *x;                  /* the inputs of the last tensor */
	size_t x_cols;
	const act_stats_entry *x_stats;
	int have_x;
} vjob;

static uint64_t gcd64(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t r = a % b;
		a = b;
		b = r;
	}
	return a;
}

/* The statistics of t's inputs, under FILE's name, the source's, or the
 * LLaMA GGUF name of either (an imatrix names weights as llama.cpp does). */
static qtk_err find_stats(const vjob *j, const vf_tensor *t, const act_stats_entry **e,
                          qtk_status *st)
{
	const char *names[2] = { t->name, t->s->name };
	char buf[256];
	int qk;

	*e = NULL;
	for (int k = 0; k < 2 && !*e; k++) {
		*e = act_stats_find(j->stats, names[k]);
		if (!*e && qtk_gguf_llama_name(names[k], buf, sizeof buf, &qk) == QTK_OK)
			*e = act_stats_find(j->stats, buf);
	}
	if (*e && (*e)->n != t->cols)
		return qtk_fail(st, QTK_E_ARG, "%s: weight '%s' has statistics for %llu input "
		                "channels, tensor '%s' of %s has %llu columns",
		                act_stats_name(j->stats), (*e)->name, (unsigned long long)(*e)->n,
		                t->name, j->f.path, (unsigned long long)t->cols);
	return QTK_OK;
}

static qtk_err prepare_x(vjob *j, const vf_tensor *t, const act_stats_entry *e,
                         qtk_status *st)
{
	size_t n;

	if (j->have_x && j->x_cols == t->cols && j->x_stats == e)
		return QTK_OK;
	if (t->cols > INT32_MAX || __builtin_mul_overflow(j->batch, (size_t)t->cols, &n) ||
	    n > MAX_X_ELEMS)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: tensor '%s': rows of %llu elements "
		                "times %zu input vectors are too large to verify", j->f.path,
		                t->name, (unsigned long long)t->cols, j->batch);
	qtk_free(j->x);
	j->have_x = 0;
	if (!(j->x = qtk_malloc(n * sizeof(float))))
		return qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory for the inputs",
		                t->name);
	verify_draw_inputs(j->o->seed, e, j->batch, (size_t)t->cols, j->x);
	j->x_cols = (size_t)t->cols;
	j->x_stats = e;
	j->have_x = 1;
	return QTK_OK;
}

/* A view of rows [b0, b0+nb) of the planes for qtk_rt_matmul; a
 * double-quantized tensor's DQ plane is copied from b0's block on (blocks
 * start at a multiple of 256 groups). */
static qtk_err sub_view(const tjob *J, const void *const pl[QTK_PLANE_MAX], uint64_t b0,
                        uint64_t nb, qtk_rt_tensor *v, uint8_t *dq, qtk_status *st)
{
	const qtk_q_layout *L = &J->t->L;
	const void *p[QTK_PLANE_MAX] = { NULL };

	for (int k = 0; k < QTK_PLANE_DQ; k++) {
		uint64_t rb = qtk_q_row_bytes(L, J->cols, k);
		p[k] = pl[k] && rb ? (const uint8_t *)pl[k] + b0 * rb : NULL;
	}
	if (L->flags & QTK_QF_DOUBLE_QUANT) {
		uint64_t g0 = b0 * J->gpr, ng = nb * J->gpr, nblk = (ng + 255) / 256;
		memcpy(dq, pl[QTK_PLANE_DQ], 4);
		memcpy(dq + 4, (const uint8_t *)pl[QTK_PLANE_DQ] + 4 + 4 * (g0 / 256), 4 * nblk);
		p[QTK_PLANE_DQ] = dq;
	}
	return qtk_rt_tensor_init(v, J->t->name, L, nb, J->cols, p, st);
}

/* Measure tensor i into *r. */
static qtk_err measure(vjob *j, size_t i, qtk_verify_tensor *r, qtk_status *st)
{
	const vf_tensor *t = &j->t[i];
	unsigned nt = qtk_rt_pool_threads(j->pool);
	const void *pl[QTK_PLANE_MAX];
	void *owned[QTK_PLANE_MAX];
	const act_stats_entry *e = NULL;
	uint64_t target, align = 1, block, nchunks;
	qtk_q_acc wacc, oacc;
	int64_t bad_src = -1, bad_hat = -1, bad_out = -1;
	uint8_t *dq = NULL;
	tjob J;
	qtk_err rc;

	memset(&J, 0, sizeof J);
	memset(&wacc, 0, sizeof wacc);
	memset(&oacc, 0, sizeof oacc);
	if (j->stats)
		QTK_TRY(find_stats(j, t, &e, st));
	QTK_TRY(prepare_x(j, t, e, st));
	r->from_stats = e != NULL;
	if ((rc = vf_planes(&j->f, i, t, pl, owned, st))) {
		for (int k = 0; k < QTK_PLANE_MAX; k++)
			qtk_free(owned[k]);
		return rc;
	}
	J.t = t;
	J.s = j->s;
	J.pl = pl;
	J.Ld = t->L;
	J.gpr = qtk_q_groups_per_row(&t->L, t->cols);
	if (t->L.flags & QTK_QF_DOUBLE_QUANT) {
		J.Ld.flags &= ~QTK_QF_DOUBLE_QUANT;
		J.Ld.scale_dtype = QTK_DT_F32;
		align = 256 / gcd64(J.gpr ? J.gpr : 1, 256);
	}
	J.x = j->x;
	J.batch = j->batch;
	J.cols = (size_t)t->cols;
	J.fallback = !qtk_rt_supported(&t->L);
	target = BLOCK_OUTS / j->batch ? BLOCK_OUTS / j->batch : 1;
	block = target > align ? target - target % align : align;
	block = block < t->rows ? block : t->rows;
	J.chunk_rows = CHUNK_ELEMS / J.cols ? CHUNK_ELEMS / J.cols : 1;
	J.chunk_rows = J.chunk_rows < block ? J.chunk_rows : block;
	nchunks = (block + J.chunk_rows - 1) / J.chunk_rows;
	pthread_mutex_init(&J.mu, NULL);
	J.yhat = qtk_malloc((size_t)block * J.batch * sizeof(float));
	J.res = qtk_calloc((size_t)nchunks, sizeof *J.res);
	J.tb = qtk_calloc(nt, sizeof *J.tb);
	if (t->L.flags & QTK_QF_DOUBLE_QUANT)
		dq = qtk_malloc((size_t)(4 + 4 * ((block * J.gpr + 255) / 256)));
	rc = !J.yhat || !J.res || !J.tb || ((t->L.flags & QTK_QF_DOUBLE_QUANT) && !dq)
	     ? qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory", t->name) : QTK_OK;
	for (uint64_t b0 = 0; !rc && b0 < t->rows; b0 += block) {
		qtk_rt_tensor v;
		J.b0 = b0;
		J.nb = t->rows - b0 < block ? t->rows - b0 : block;
		nchunks = (J.nb + J.chunk_rows - 1) / J.chunk_rows;
		memset(J.res, 0, (size_t)nchunks * sizeof *J.res);
		if (!J.fallback) {
			rc = sub_view(&J, pl, b0, J.nb, &v, dq, st);
			if (!rc)
				rc = qtk_rt_matmul(j->pool, &v, j->o->path, J.x, J.batch, J.yhat, st);
			if (rc)
				break;
		}
		qtk_rt_pool_run(j->pool, (size_t)nchunks, chunk_range, &J);
		for (size_t c = 0; c < nchunks; c++) {
			chunk_res *R = &J.res[c];
			if (R->err) {
				rc = J.err.code ? J.err.code : QTK_E_NOMEM;
				*st = J.err;
				break;
			}
			qtk_q_acc_merge(&wacc, &R->w);
			qtk_q_acc_merge(&oacc, &R->out);
			if (!(R->row_max <= r->out_row_max))
				r->out_row_max = R->row_max;
			bad_src = bad_src < 0 ? R->bad_src : bad_src;
			bad_hat = bad_hat < 0 ? R->bad_hat : bad_hat;
			bad_out = bad_out < 0 ? R->bad_out : bad_out;
		}
	}
	qtk_q_metrics_from(&wacc, &r->w);
	qtk_q_metrics_from(&oacc, &r->out);
	if (!rc) {
		char msg[200];
		msg[0] = 0;
		if (bad_src >= 0)
			snprintf(msg, sizeof msg, "row %lld of the source has a NaN or Inf",
			         (long long)bad_src);
		else if (bad_hat >= 0)
			snprintf(msg, sizeof msg, "row %lld holds a NaN or Inf where the source is "
			         "finite", (long long)bad_hat);
		else if (bad_out >= 0)
			snprintf(msg, sizeof msg, "the output of row %lld is not finite",
			         (long long)bad_out);
		if (msg[0] && !(r->problem = qtk_strdup(msg)))
			rc = qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	for (unsigned k = 0; J.tb && k < nt; k++)
		thr_free(&J.tb[k]);
	qtk_free(J.tb);
	qtk_free(J.res);
	qtk_free(J.yhat);
	qtk_free(dq);
	pthread_mutex_destroy(&J.mu);
	for (int k = 0; k < QTK_PLANE_MAX; k++)
		qtk_free(owned[k]);
	src_release(t->s, 0, t->s->nbytes);
	return rc;
}

/* ---- report ----------------------------------------------------------------- */

void qtk_verify_report_free(qtk_verify_report *rep)
{
	if (!rep)
		return;
	for (size_t i = 0; i < rep->n; i++) {
		qtk_free(rep->t[i].name);
		qtk_free(rep->t[i].source_name);
		qtk_free(rep->t[i].problem);
	}
	for (size_t i = 0; i < rep->nskipped; i++) {
		qtk_free(rep->skipped[i]);
		qtk_free(rep->skip_reasons[i]);
	}
	qtk_free(rep->t);
	qtk_free(rep->skipped);
	qtk_free(rep->skip_reasons);
	qtk_free(rep->source_unused_first);
	qtk_free(rep);
}

static double limit_of(const qtk_verify_opts *o, qtk_scheme_id s)
{
	if (o->max_out_err && (unsigned)s < QTK_SCHEME_COUNT && !isnan(o->max_out_err[s]))
		return o->max_out_err[s];
	return qtk_verify_default_limit(s);
}

static qtk_err run_all(vjob *j, qtk_verify_report *rep, qtk_status *st)
{
	for (size_t i = 0; i < j->f.n; i++) {
		const vf_tensor *t = &j->t[i];

		if (t->skip) {
			rep->skipped[rep->nskipped] = qtk_strdup(t->name);
			rep->skip_reasons[rep->nskipped] = qtk_strdup(t->skip);
			if (!rep->skipped[rep->nskipped++] || !rep->skip_reasons[rep->nskipped - 1])
				return qtk_fail(st, QTK_E_NOMEM, "out of memory");
			continue;
		}
		qtk_verify_tensor *r = &rep->t[rep->n++];
		r->layout = t->L;
		r->rows = t->rows;
		r->cols = t->cols;
		r->qk_rows = t->rows_order != VF_ROWS_SAME;
		r->name = qtk_strdup(t->name);
		r->source_name = qtk_strdup(t->s->name);
		if (!r->name || !r->source_name)
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		QTK_TRY(measure(j, i, r, st));
		r->limit = limit_of(j->o, t->L.scheme);
		r->pass = !r->problem && r->out.rel_fro <= r->limit;
		rep->nfailed += !r->pass;
	}
	return QTK_OK;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static qtk_err setup(vjob *j, qtk_verify_report *rep, qtk_status *st)
{
	const char *first = NULL;
	size_t n;

	QTK_TRY(vf_open(&j->f, j->o->file, st));
	QTK_TRY(src_open(&j->s, j->o->source, st));
	n = j->f.n ? j->f.n : 1;
	j->t = qtk_calloc(n, sizeof *j->t);
	rep->t = qtk_calloc(n, sizeof *rep->t);
	rep->skipped = qtk_calloc(n, sizeof *rep->skipped);
	rep->skip_reasons = qtk_calloc(n, sizeof *rep->skip_reasons);
	if (!j->t || !rep->t || !rep->skipped || !rep->skip_reasons)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	QTK_TRY(vf_match_all(&j->f, j->s, j->t, &rep->source_unused, &first, st));
	if (first && !(rep->source_unused_first = qtk_strdup(first)))
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	if (j->o->inputs)
		QTK_TRY(act_stats_open(j->o->inputs, &j->stats, st));
	QTK_TRY(qtk_rt_pool_create(j->o->threads > 0 ? (unsigned)j->o->threads : 0, &j->pool, st));
	rep->threads = (int)qtk_rt_pool_threads(j->pool);
	return QTK_OK;
}

qtk_err qtk_verify_against(const qtk_verify_opts *o, qtk_verify_report **out,
                           qtk_status *st)
{
	qtk_verify_report *rep;
	vjob j;
	double t0 = now_s();
	qtk_err rc;

	*out = NULL;
	if (!o || !o->file || !o->source)
		return qtk_fail(st, QTK_E_ARG, "verify: FILE and SOURCE are required");
	if (o->path != QTK_RT_FLOAT && o->path != QTK_RT_INT8)
		return qtk_fail(st, QTK_E_ARG, "verify: unknown activation path %d", (int)o->path);
	if (!(rep = qtk_calloc(1, sizeof *rep)))
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	memset(&j, 0, sizeof j);
	j.o = o;
	j.batch = o->batch ? o->batch : QTK_VERIFY_BATCH;
	rep->batch = (uint32_t)j.batch;
	rc = setup(&j, rep, st);
	if (!rc)
		rc = run_all(&j, rep, st);
	qtk_rt_pool_free(j.pool);
	act_stats_close(j.stats);
	qtk_free(j.x);
	qtk_free(j.t);
	src_close(j.s);
	vf_close(&j.f);
	if (rc) {
		qtk_verify_report_free(rep);
		return rc;
	}
	rep->seconds = now_s() - t0;
	*out = rep;
	return QTK_OK;
}
