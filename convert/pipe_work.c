/* convert: the pipeline's workers. Threads take work items in order and
 * read the source as f32 in cache-sized pieces, quantize with the error
 * sums fused, and put the planes to the sink (or copy bytes, or a .qtk
 * source's stored planes); a value a narrow type of qtk's choosing cannot
 * hold marks the tensor for a second pass. Memory per thread is a few
 * chunk buffers; consumed source pages are dropped from the resident set
 * as we go. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipe_impl.h"

/* The tensor's calibration, made by the first item that needs it. */
static qtk_err calib_need(job *j, plan_tensor *p, qtk_status *st)
{
	qtk_err rc = QTK_OK;

	if (!p->has_stats)
		return QTK_OK;
	pthread_mutex_lock(&j->calib_lock);
	if (!p->ct_made) {
		rc = calib_tensor_make(j->cal, p->t->name, p->cols, &p->ct, st);
		p->ct_made = rc == QTK_OK;
		/* double quantization is a pass over f32 scales after the
		 * search: such a tensor gets the weighted search, not GPTQ */
		if (p->ct_made && (p->d.layout.flags & QTK_QF_DOUBLE_QUANT)) {
			qtk_gptq_free(p->ct.f);
			p->ct.f = NULL;
		}
		if (p->ct_made)
			p->calib_used = p->ct.f ? "gptq" : "weighted";
	}
	pthread_mutex_unlock(&j->calib_lock);
	return rc;
}

/* An item of p is finished: the last one frees the calibration. */
static void calib_item_done(job *j, plan_tensor *p)
{
	if (!p->has_stats || __atomic_sub_fetch(&p->ct_left, 1, __ATOMIC_ACQ_REL))
		return;
	pthread_mutex_lock(&j->calib_lock);
	calib_tensor_free(&p->ct);
	p->ct_made = 0;
	pthread_mutex_unlock(&j->calib_lock);
}

/* An item's extent: nrows rows of cols (ELEM: one run of cols elements)
 * from element elem0; its source bytes [boff, boff + blen). */
typedef struct {
	uint64_t nrows, cols, elem0, nelem, boff, blen;
} item_span;

typedef struct {
	float *in, *out;
	uint8_t *planes[QTK_PLANE_MAX];
	size_t plane_cap[QTK_PLANE_MAX];
	sink_scratch sc;        /* the sink's (GGUF blocks) */
	/* A finished item whose put waits (put_item): its planes live in
	 * spare, which changed places with planes. */
	uint8_t *spare[QTK_PLANE_MAX];
	size_t spare_cap[QTK_PLANE_MAX];
	int pending;
	const work_item *pend_it;
	item_span pend_v;
	qtk_q_cplanes pend_c;
} worker_buf;

static void set_error(job *j, const qtk_status *st)
{
	pthread_mutex_lock(&j->lock);
	if (!j->failed) {
		j->err = *st;
		__atomic_store_n(&j->failed, 1, __ATOMIC_SEQ_CST);
	}
	pthread_mutex_unlock(&j->lock);
}

/* *buf at least n bytes (its contents not kept); 0: out of memory */
static int fit(uint8_t **buf, size_t *cap, size_t n)
{
	if (*cap >= n)
		return 1;
	qtk_free(*buf);
	*buf = qtk_malloc(n);
	*cap = *buf ? n : 0;
	return *buf != NULL;
}

static qtk_err grow(worker_buf *b, int p, size_t n, qtk_status *st)
{
	if (!fit(&b->planes[p], &b->plane_cap[p], n))
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	return QTK_OK;
}

/* The source file of tensor p. */
static const char *src_path(const job *j, const plan_tensor *p)
{
	return p->vs->files[p->vt->file].path;
}

/* The W_* bit a value error rc of p asks for, 0: it is an error. */
static int widen_bit(const job *j, const plan_tensor *p, qtk_err rc)
{
	if (p->from == QTK_FROM_REQUANT) /* every narrow type was qtk's pick */
		return rc == QTK_E_Q_VALUE_RANGE || rc == QTK_E_Q_SCALE_RANGE ? W_STORE : 0;
	if (p->from == QTK_FROM_STORED) /* stored scales the sink converts */
		return (rc == QTK_E_Q_SCALE_RANGE || rc == QTK_E_GG_LAYOUT) && p->auto_scales ?
		       W_SCALES : 0;
	return rc == QTK_E_Q_VALUE_RANGE && p->auto_store ? W_STORE
	     : rc == QTK_E_Q_SCALE_RANGE && p->auto_scales ? W_SCALES : 0;
}

/* What a marked tensor becomes, for the report. */
static const char *widened_to(const job *j, const plan_tensor *p, int w)
{
	if (p->from == QTK_FROM_REQUANT) /* the sink widens (sink_ops.requant) */
		return qtk_q_scheme_get(p->d.layout.scheme)->quantized && j->out.ops->scales_f32 ?
		       "scales and biases stored in F32" : "stored in F32";
	return w == W_SCALES ? "scales and biases stored in F32"
	     : p->vt->dtype == QTK_DT_BF16 && !p->vt->blk_elems ? "kept in BF16 (the source's)"
	                                                        : "stored in F32";
}

/* A quantize (or MLX scale) error of tensor i. A value the narrow type
 * cannot hold where that type was qtk's own choice marks the tensor for
 * F32 and returns QTK_OK (the item is dropped, the output redone);
 * anything else fails, a value error's message naming the source file. */
static qtk_err value_error(job *j, size_t i, qtk_err rc, qtk_status *st)
{
	const plan_tensor *p = &j->pt[i];
	int w = widen_bit(j, p, rc);

	if (!w) {
		if (rc != QTK_E_NOMEM && rc != QTK_E_IO)
			qtk_status_prefix(st, src_path(j, p));
		return rc;
	}
	pthread_mutex_lock(&j->lock);
	if (!j->widen[i]) {
		const char *m = st->msg, *q = !strncmp(m, "tensor '", 8) ? strstr(m, "': ") : NULL;
		char why[400];

		snprintf(why, sizeof why, "%s; %s instead", q ? q + 3 : m, widened_to(j, p, w));
		j->widen_why[i] = qtk_strdup(why); /* NULL: the report says less */
		__atomic_store_n(&j->widen[i], (uint8_t)w, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&j->redo, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&j->lock);
	return QTK_OK;
}

static int redoing(const job *j)
{
	return __atomic_load_n(&j->redo, __ATOMIC_ACQUIRE);
}

static qtk_err do_raw(job *j, size_t k, const work_item *it, qtk_status *st)
{
	const plan_tensor *p = &j->pt[it->tensor];
	const uint8_t *from = p->vt->data + it->start;

	if (redoing(j)) /* this output is dropped: nothing to copy */
		return QTK_OK;
	if (p->vt->preadable) { /* read, not mapped (source.c's staged reads) */
		uint32_t crc = 0;
		for (uint64_t o = it->start, end = it->start + it->count; o < end;) {
			const uint8_t *b;
			size_t n;
			QTK_TRY(src_read_raw(p->vs, p->vt, o, end, &b, &n, st));
			QTK_TRY(j->out.ops->put_bytes(j->out.ctx, it->tensor, o, b, n, st));
			if (j->want_crc)
				crc = qtk_crc32(crc, b, n);
			o += n;
		}
		if (j->want_crc)
			j->crc[k] = crc;
		return QTK_OK;
	}
	QTK_TRY(j->out.ops->put_bytes(j->out.ctx, it->tensor, it->start, from, (size_t)it->count,
	                              st));
	if (j->want_crc)
		j->crc[k] = qtk_crc32(0, from, it->count);
	src_release(p->vt, it->start, it->count);
	return QTK_OK;
}

/* Rows of a stored tensor (a .qtk source) whose layout the sink keeps:
 * its planes as they are, rows gathered where the sink reorders them. */
static qtk_err do_pass(job *j, const work_item *it, worker_buf *b, qtk_status *st)
{
	const plan_tensor *p = &j->pt[it->tensor];
	const qtk_q_layout *L = &p->d.layout;
	const void *const *pl = src_stored_planes(p->vt);
	qtk_q_cplanes c;
	qtk_err rc;

	if (redoing(j) && (!j->out.ops->checks_values ||
	                   __atomic_load_n(&j->widen[it->tensor], __ATOMIC_RELAXED)))
		return QTK_OK; /* dropped output: only the marks matter */
	memset(&c, 0, sizeof c);
	for (int k = 0; k < QTK_PLANE_DQ; k++) {
		uint64_t rb = qtk_q_row_bytes(L, p->cols, k);

		if (!rb || !pl[k])
			continue;
		if (!p->gathered) {
			c.p[k] = (const uint8_t *)pl[k] + it->start * rb;
			continue;
		}
		QTK_TRY(grow(b, k, (size_t)(rb * it->count), st));
		for (uint64_t r = 0; r < it->count; r++) {
			uint64_t sr = j->out.ops->row_src(j->out.ctx, it->tensor, it->start + r, p->rows);
			memcpy(b->planes[k] + r * rb, (const uint8_t *)pl[k] + sr * rb, (size_t)rb);
		}
		c.p[k] = b->planes[k];
	}
	rc = j->out.ops->put_rows(j->out.ctx, it->tensor, L, &c, it->start * p->cols,
	                          (size_t)it->count, (size_t)p->cols, 0, &b->sc, st);
	if (j->out.ops->checks_values && (rc == QTK_E_Q_SCALE_RANGE || rc == QTK_E_GG_LAYOUT))
		return value_error(j, it->tensor, rc, st);
	return rc;
}

/* One plane's bytes (double quantization: only sinks that hold it get
 * such layouts from their planners). */
static qtk_err put_plane(job *j, size_t i, int plane, uint64_t off, const void *buf,
                         size_t len, qtk_status *st)
{
	if (!j->out.ops->put_plane)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "tensor '%s': the output cannot hold a "
		                "double-quantized plane", j->pt[i].t->name);
	return j->out.ops->put_plane(j->out.ctx, i, plane, off, buf, len, st);
}

/* The layout DQ items quantize with: f32 scales (the group absmax). */
static qtk_q_layout dq_inner(const qtk_q_layout *L)
{
	qtk_q_layout q = *L;

	q.flags &= ~QTK_QF_DOUBLE_QUANT;
	q.scale_dtype = QTK_DT_F32;
	return q;
}

/* Last item of a double-quantized tensor: 8-bit absmax codes and the DQ
 * plane from every group's absmax (the same call as in memory, so the
 * result does not depend on the chunking), then the metrics against the
 * double-dequantized scales: a second read of the source, requantized
 * (deterministic: the same codes) chunk by chunk. */
/* The nonzero values of rows [r0, r0+n) (x; amax: their groups' f32
 * absmax) in groups whose absmax came back from double quantization as
 * <= 0 (p->absmax): the group decodes to (about) zero, which the report
 * counts as flushed. */
static uint64_t dq_lost(const plan_tensor *p, uint64_t r0, uint64_t n, const float *x,
                        const float *amax)
{
	uint64_t gpr = qtk_q_groups_per_row(&p->d.layout, p->cols), lost = 0;
	uint64_t gl = p->d.layout.group == QTK_GROUP_ROW ? p->cols : p->d.layout.group;

	for (uint64_t r = 0; r < n; r++)
		for (uint64_t g = 0; g < gpr; g++) {
			uint64_t i0 = g * gl, e = p->cols - i0 < gl ? p->cols - i0 : gl;
			if (p->absmax[(r0 + r) * gpr + g] > 0.0f || !(amax[r * gpr + g] > 0.0f))
				continue;
			for (uint64_t k = 0; k < e; k++)
				lost += x[r * p->cols + i0 + k] != 0.0f;
		}
	return lost;
}

static qtk_err dq_finish(job *j, plan_tensor *p, worker_buf *b, qtk_status *st)
{
	const qtk_q_layout *L = &p->d.layout;
	qtk_q_layout q = dq_inner(L);
	uint64_t gpr = qtk_q_groups_per_row(L, p->cols), ng = p->rows * gpr;
	uint64_t sizes[QTK_PLANE_MAX], per = j->chunk / p->cols ? j->chunk / p->cols : 1;
	size_t ti = (size_t)(p - j->pt);
	qtk_q_opts qo = { .search = j->search || p->ct.importance,
	                  .importance = p->ct.importance, .tensor = p->vt->name };
	qtk_q_acc *acc = &j->acc[p->item0];
	uint8_t *codes8 = qtk_malloc((size_t)ng), *dq;
	uint64_t flushed = 0;
	qtk_err rc;

	if (qtk_q_plane_sizes(L, p->rows, p->cols, sizes) || !codes8) {
		qtk_free(codes8);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	rc = grow(b, QTK_PLANE_CODES, (size_t)(qtk_q_row_bytes(&q, p->cols, 0) * per), st);
	if (!rc)
		rc = grow(b, QTK_PLANE_SCALES, (size_t)(gpr * 4 * per), st);
	if (rc) {
		qtk_free(codes8);
		return rc;
	}
	dq = qtk_malloc((size_t)sizes[QTK_PLANE_DQ]);
	rc = dq ? qtk_q_double_quant(p->absmax, ng, codes8, dq, st)
	        : qtk_fail(st, QTK_E_NOMEM, "out of memory");
	if (rc && rc != QTK_E_NOMEM) {
		char pre[300];
		snprintf(pre, sizeof pre, "%s: tensor '%s'", src_path(j, p), p->vt->name);
		qtk_status_prefix(st, pre);
	}
	if (!rc)
		rc = put_plane(j, ti, QTK_PLANE_SCALES, 0, codes8, (size_t)ng, st);
	if (!rc)
		rc = put_plane(j, ti, QTK_PLANE_DQ, 0, dq, (size_t)sizes[QTK_PLANE_DQ], st);
	if (!rc)
		qtk_q_double_dequant(codes8, ng, dq, p->absmax);
	qtk_free(codes8);
	qtk_free(dq);
	memset(acc, 0, sizeof *acc);
	for (uint64_t r0 = 0; !rc && r0 < p->rows; r0 += per) {
		uint64_t n = p->rows - r0 < per ? p->rows - r0 : per, off, len;
		qtk_q_planes d = { { b->planes[QTK_PLANE_CODES], b->planes[QTK_PLANE_SCALES] } };
		qtk_q_cplanes c = { { b->planes[QTK_PLANE_CODES], p->absmax + r0 * gpr } };

		qo.row0 = r0;
		rc = src_read_f32(p->vs, p->vt, r0 * p->cols, n * p->cols, b->in, st);
		if (!rc)
			rc = qtk_q_quantize_rows(&q, b->in, (size_t)n, (size_t)p->cols, &d, &qo, st);
		if (rc) {
			if (rc != QTK_E_NOMEM && rc != QTK_E_IO)
				qtk_status_prefix(st, src_path(j, p));
			break;
		}
		qtk_q_dequantize_rows(&q, &c, (size_t)n, (size_t)p->cols, b->out);
		/* row by row: the sums do not depend on the chunk size */
		for (uint64_t r = 0; r < n; r++)
			qtk_q_acc_add(acc, b->in + r * p->cols, b->out + r * p->cols, (size_t)p->cols);
		flushed += dq_lost(p, r0, n, b->in, (const float *)(void *)b->planes[QTK_PLANE_SCALES]);
		src_span(p->vt, r0 * p->cols, n * p->cols, &off, &len);
		src_release(p->vt, off, len);
	}
	__atomic_add_fetch(&p->flushed, flushed, __ATOMIC_RELAXED);
	return rc;
}

/* One item of a double-quantized tensor: codes to the file, f32 absmax to
 * the tensor's buffer; the last item finishes the tensor. */
static qtk_err dq_item(job *j, size_t k, const work_item *it, worker_buf *b,
                       uint64_t elem0, uint64_t nelem, uint32_t crc, const qtk_q_opts *qo,
                       qtk_status *st)
{
	plan_tensor *p = &j->pt[it->tensor];
	qtk_q_layout q = dq_inner(&p->d.layout);
	uint64_t gpr = qtk_q_groups_per_row(&q, p->cols), cb = qtk_q_row_bytes(&q, p->cols, 0);
	uint64_t boff, blen;
	qtk_q_planes d;
	qtk_err rc = QTK_OK;

	pthread_mutex_lock(&j->lock);
	if (!p->absmax)
		p->absmax = qtk_malloc((size_t)(p->rows * gpr) * sizeof(float));
	pthread_mutex_unlock(&j->lock);
	if (!p->absmax)
		return qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory for %llu group scales",
		                p->vt->name, (unsigned long long)(p->rows * gpr));
	memset(&d, 0, sizeof d);
	d.p[QTK_PLANE_CODES] = b->planes[QTK_PLANE_CODES];
	d.p[QTK_PLANE_SCALES] = p->absmax + it->start * gpr;
	rc = qtk_q_quantize_rows(&q, b->in, (size_t)it->count, (size_t)p->cols, &d, qo, st);
	if (rc)
		return value_error(j, it->tensor, rc, st);
	QTK_TRY(put_plane(j, it->tensor, QTK_PLANE_CODES, it->start * cb,
	                  b->planes[QTK_PLANE_CODES], (size_t)(cb * it->count), st));
	src_span(p->vt, elem0, nelem, &boff, &blen);
	if (j->want_crc) /* read_rows took it, unless the rows were gathered */
		j->crc[k] = p->gathered ? qtk_crc32(0, p->vt->data + boff, blen) : crc;
	src_release(p->vt, boff, blen);
	if (__atomic_sub_fetch(&p->remaining, 1, __ATOMIC_ACQ_REL) == 0) {
		rc = dq_finish(j, p, b, st);
		qtk_free(p->absmax);
		p->absmax = NULL;
	}
	return rc;
}

/* f32 values of rows [r0, r0 + n) of a ROWS item (GGUF q/k rows gathered:
 * GGUF row r is HF row qk_src_row(r), a permutation within heads). */
static qtk_err read_rows(job *j, const work_item *it, const plan_tensor *p, uint64_t r0,
                         uint64_t n, uint64_t cols, float *out, uint32_t *crc,
                         qtk_status *st)
{
	if (p->gathered) {
		for (uint64_t r = 0; r < n; r++) {
			uint64_t sr = j->out.ops->row_src(j->out.ctx, it->tensor, it->start + r0 + r,
			                                  p->rows);
			QTK_TRY(src_read_f32(p->vs, p->vt, sr * cols, cols, out + r * cols, st));
		}
		return QTK_OK;
	}
	/* the source may read ahead to the item's end; crc: the bytes' crc32
	 * while they pass (.qtk output) */
	return src_read_f32_at(p->vs, p->vt, (it->start + r0) * cols, n * cols,
	                       (it->start + it->count) * cols, out, crc, st);
}

/* The item in cache-sized pieces (read, quantize, dequantize, measure
 * while the f32 values are in L2); the planes dst collect the whole item
 * for one write. *marked: a value marked the tensor for a second pass
 * (QTK_OK, the item is dropped). */
static qtk_err quant_pieces(job *j, size_t k, const work_item *it, worker_buf *b,
                            const qtk_q_planes *dst, const item_span *v, qtk_q_opts *qo,
                            int *marked, qtk_status *st)
{
	plan_tensor *p = &j->pt[it->tensor];
	const qtk_q_layout *L = &p->d.layout;
	int elem = p->mode == MODE_ELEM;
	int gathered = p->gathered; /* rows not in file order */
	uint32_t crc = 0;
	uint64_t cols = v->cols, units = elem ? cols : v->nrows;
	uint64_t sub = elem ? SUB_ELEMS : (cols >= SUB_ELEMS ? 1 : SUB_ELEMS / cols);

	if (p->ct.f) /* GPTQ: the whole item at once (its BLAS-3 updates) */
		sub = v->nrows;
	for (uint64_t u0 = 0; u0 < units; u0 += sub) {
		uint64_t nu = units - u0 < sub ? units - u0 : sub;
		uint64_t sr = elem ? 1 : nu, sc = elem ? nu : cols;
		qtk_q_planes d;
		qtk_err rc;

		for (int pl = 0; pl < QTK_PLANE_MAX; pl++) {
			uint64_t off = elem ? qtk_q_row_bytes(L, u0, pl)
			                    : u0 * qtk_q_row_bytes(L, cols, pl);
			d.p[pl] = dst->p[pl] ? (uint8_t *)dst->p[pl] + off : NULL;
		}
		/* the crc32 of the bytes read, as they pass (not of gathered rows:
		 * the file's order is taken below) */
		uint32_t *pc = j->want_crc && !gathered ? &crc : NULL;
		if (elem)
			QTK_TRY(src_read_f32_at(p->vs, p->vt, v->elem0 + u0, nu, v->elem0 + v->nelem,
			                        b->in, pc, st));
		else
			QTK_TRY(read_rows(j, it, p, u0, nu, cols, b->in, pc, st));
		qo->row0 = elem ? 0 : it->start + u0;
		qo->elem0 = elem ? v->elem0 + u0 : 0;
		/* codes and each row's error sums in one pass */
		rc = p->ct.f ? calib_quantize_acc(&p->ct, L, b->in, b->out, (size_t)sr,
		                                  (size_t)sc, &d, qo, &j->acc[k], st)
		             : qtk_q_quantize_rows_acc(L, b->in, (size_t)sr, (size_t)sc, &d,
		                                       qo, &j->acc[k], st);
		if (rc) {
			*marked = 1;
			return value_error(j, it->tensor, rc, st);
		}
	}
	if (j->want_crc)
		j->crc[k] = gathered ? qtk_crc32(0, p->vt->data + v->boff, v->blen) : crc;
	return QTK_OK;
}

/* The planes of an item, quantized, to the sink, now. */
static qtk_err put_now(job *j, const work_item *it, worker_buf *b, const qtk_q_cplanes *c,
                       const item_span *v, qtk_status *st)
{
	const plan_tensor *p = &j->pt[it->tensor];
	qtk_err rc;

	/* this output is dropped: only the marks matter now (a sink that
	 * converts values, MLX, finds some while putting, so it still puts) */
	if (redoing(j) && !j->out.ops->checks_values)
		return QTK_OK;
	__atomic_add_fetch(&j->putting, 1, __ATOMIC_ACQ_REL);
	rc = j->out.ops->put_rows(j->out.ctx, it->tensor, &p->d.layout, c, v->elem0,
	                          (size_t)v->nrows, (size_t)v->cols, p->mode == MODE_ELEM,
	                          &b->sc, st);
	__atomic_sub_fetch(&j->putting, 1, __ATOMIC_ACQ_REL);
	if (j->out.ops->checks_values &&
	    (rc == QTK_E_Q_SCALE_RANGE || rc == QTK_E_GG_LAYOUT)) /* a scale or bias */
		return value_error(j, it->tensor, rc, st);
	return rc;
}

/* The item kept back by put_item, if any, to the sink. */
static qtk_err put_pending(job *j, worker_buf *b, qtk_status *st)
{
	if (!b->pending)
		return QTK_OK;
	b->pending = 0;
	return put_now(j, b->pend_it, b, &b->pend_c, &b->pend_v, st);
}

static int defer_always; /* conv_defer_puts */

void conv_defer_puts(int always)
{
	__atomic_store_n(&defer_always, always, __ATOMIC_RELAXED);
}

/* The planes of an item to the sink. Writers of one file queue on its
 * lock in the kernel, spinning while the holder copies: when another
 * worker is putting, this item waits in spare planes (one at most) and
 * the worker goes on to the next item, putting both later. Items end
 * anywhere in the file at any time anyway (workers take them in order
 * but finish out of order), so the bytes are the same. */
static qtk_err put_item(job *j, const work_item *it, worker_buf *b, const qtk_q_cplanes *c,
                        const item_span *v, qtk_status *st)
{
	const plan_tensor *p = &j->pt[it->tensor];

	/* the source bytes are no longer needed: the planes hold the item */
	src_release(p->vt, v->boff, v->blen);
	if (!b->pending && (__atomic_load_n(&j->putting, __ATOMIC_ACQUIRE) ||
	                    __atomic_load_n(&defer_always, __ATOMIC_RELAXED))) {
		int ok = 1; /* out of memory for spare planes: put now */
		for (int pl = 0; pl < QTK_PLANE_MAX && ok; pl++)
			ok = !c->p[pl] || fit(&b->spare[pl], &b->spare_cap[pl], b->plane_cap[pl]);
		if (ok) {
			for (int pl = 0; pl < QTK_PLANE_MAX; pl++) {
				uint8_t *t = b->planes[pl];
				size_t n = b->plane_cap[pl];
				b->planes[pl] = b->spare[pl];
				b->plane_cap[pl] = b->spare_cap[pl];
				b->spare[pl] = t;
				b->spare_cap[pl] = n;
			}
			b->pending = 1;
			b->pend_it = it;
			b->pend_v = *v;
			b->pend_c = *c; /* its pointers are into what is now spare */
			return QTK_OK;
		}
	}
	QTK_TRY(put_pending(j, b, st));
	return put_now(j, it, b, c, v, st);
}

static qtk_err do_quant(job *j, size_t k, const work_item *it, worker_buf *b,
                        qtk_status *st)
{
	plan_tensor *p = &j->pt[it->tensor];
	const qtk_q_layout *L = &p->d.layout;
	uint64_t flushed = 0;
	item_span v;
	qtk_q_planes dst;
	qtk_q_cplanes csrc;
	qtk_q_opts qo = { .search = j->search, .tensor = p->vt->name,
	                  .flushed = &flushed };
	int marked = 0;
	qtk_err rc;

	if (redoing(j) && __atomic_load_n(&j->widen[it->tensor], __ATOMIC_RELAXED))
		return QTK_OK; /* marked for F32 in this pass: its items are dropped */
	if (p->mode == MODE_ELEM) {
		v.nrows = 1;
		v.cols = it->count;
		v.elem0 = it->start;
		qo.row0 = 0;
		qo.row_len = p->cols; /* name row and column of a flat run */
	} else {
		v.nrows = it->count;
		v.cols = p->cols;
		v.elem0 = it->start * p->cols;
		qo.row0 = it->start;
	}
	v.nelem = v.nrows * v.cols;
	if (p->mode == MODE_ROWS) {
		/* statistics: the search weighs channels by them (GPTQ below) */
		QTK_TRY(calib_need(j, p, st));
		if (p->ct.importance) {
			qo.importance = p->ct.importance;
			qo.search = 1;
		} else if (j->cal) { /* not covered: the data-free search, as said */
			qo.search = 1;
		}
	}
	src_span(p->vt, v.elem0, v.nelem, &v.boff, &v.blen);
	if (!p->gathered) /* gathered rows: not contiguous */
		src_prefault(p->vs, p->vt, v.boff, v.blen);
	for (int pl = 0; pl < QTK_PLANE_DQ; pl++) {
		uint64_t rb = qtk_q_row_bytes(L, v.cols, pl);
		QTK_TRY(grow(b, pl, (size_t)(rb * v.nrows), st));
		dst.p[pl] = rb ? b->planes[pl] : NULL;
		csrc.p[pl] = dst.p[pl];
	}
	dst.p[QTK_PLANE_DQ] = NULL;
	csrc.p[QTK_PLANE_DQ] = NULL;
	if (L->flags & QTK_QF_DOUBLE_QUANT) {
		uint32_t crc = 0;
		QTK_TRY(read_rows(j, it, p, 0, v.nrows, v.cols, b->in,
		                  j->want_crc && !p->gathered ? &crc : NULL, st));
		rc = dq_item(j, k, it, b, v.elem0, v.nelem, crc, &qo, st);
		__atomic_add_fetch(&p->flushed, flushed, __ATOMIC_RELAXED);
		return rc;
	}
	rc = quant_pieces(j, k, it, b, &dst, &v, &qo, &marked, st);
	if (rc || marked) /* failed, or dropped for a second pass */
		return rc;
	__atomic_add_fetch(&p->flushed, flushed, __ATOMIC_RELAXED);
	return put_item(j, it, b, &csrc, &v, st);
}

uint64_t pipe_item_src_bytes(const job *j, const work_item *it)
{
	const plan_tensor *p = &j->pt[it->tensor];
	uint64_t off, len;

	switch (p->mode) {
	case MODE_RAW:
		return it->count;
	case MODE_ELEM:
		src_span(p->vt, it->start, it->count, &off, &len);
		return len;
	default:
		src_span(p->vt, it->start * p->cols, it->count * p->cols, &off, &len);
		return len;
	}
}

static void *worker(void *arg)
{
	job *j = arg;
	worker_buf b;
	qtk_status st;
	uint64_t max_elems = j->chunk;

	memset(&b, 0, sizeof b);
	qtk_status_clear(&st);
	/* a chunk holds at least one row, which may exceed the chunk size */
	for (size_t i = 0; i < j->n; i++)
		if (j->pt[i].mode == MODE_ROWS && j->pt[i].cols > max_elems)
			max_elems = j->pt[i].cols;
	b.in = qtk_malloc(max_elems * sizeof(float));
	b.out = qtk_malloc(max_elems * sizeof(float));
	if (!b.in || !b.out) {
		qtk_fail(&st, QTK_E_NOMEM, "out of memory for chunk buffers");
		set_error(j, &st);
	}
	while (!__atomic_load_n(&j->failed, __ATOMIC_RELAXED)) {
		size_t k = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
		const work_item *it;
		qtk_err rc;

		if (k >= j->nitems)
			break;
		if (j->o->cancel && *j->o->cancel) {
			qtk_fail(&st, QTK_E_INTERRUPTED, "interrupted");
			set_error(j, &st);
			break;
		}
		it = &j->items[k];
		switch (j->pt[it->tensor].mode) {
		case MODE_RAW: rc = do_raw(j, k, it, &st); break;
		case MODE_PASS: rc = do_pass(j, it, &b, &st); break;
		default: rc = do_quant(j, k, it, &b, &st); break;
		}
		if (!rc)
			calib_item_done(j, &j->pt[it->tensor]);
		if (rc) {
			set_error(j, &st);
			break;
		}
		__atomic_fetch_add(&j->bytes_done, pipe_item_src_bytes(j, it), __ATOMIC_RELAXED);
		__atomic_fetch_add(&j->items_done, 1, __ATOMIC_RELEASE);
	}
	if (b.pending && !__atomic_load_n(&j->failed, __ATOMIC_RELAXED) &&
	    put_pending(j, &b, &st))
		set_error(j, &st);
	qtk_free(b.in);
	qtk_free(b.out);
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		qtk_free(b.planes[p]);
		qtk_free(b.spare[p]);
	}
	qtk_free(b.sc.p);
	pthread_mutex_lock(&j->lock);
	j->live--;
	pthread_cond_signal(&j->idle);
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

/* ---- running ------------------------------------------------------------ */

static size_t tensors_done(const job *j, size_t items_done)
{
	/* items are taken in order, so tensors before the first unfinished item
	 * are done; an estimate good enough for a progress bar */
	size_t lo = 0, hi = j->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (j->pt[mid].item0 + j->pt[mid].nitems <= items_done)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void report_progress(const job *j, uint64_t total)
{
	size_t td = tensors_done(j, __atomic_load_n(&j->items_done, __ATOMIC_ACQUIRE));

	j->o->progress(j->o->progress_ctx, td, j->n,
	               __atomic_load_n(&j->bytes_done, __ATOMIC_RELAXED), total,
	               td < j->n ? j->pt[td].t->name : "");
}

qtk_err pipe_run_workers(job *j, int nthreads, qtk_status *st)
{
	pthread_t *tids = qtk_calloc((size_t)nthreads, sizeof *tids);
	uint64_t total = 0;
	int started = 0;

	if (!tids)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	for (size_t i = 0; i < j->n; i++)
		total += j->pt[i].t->nbytes;
	for (; started < nthreads; started++) {
		pthread_mutex_lock(&j->lock);
		j->live++;
		pthread_mutex_unlock(&j->lock);
		if (pthread_create(&tids[started], NULL, worker, j) != 0) {
			pthread_mutex_lock(&j->lock);
			j->live--;
			pthread_mutex_unlock(&j->lock);
			break;
		}
	}
	if (started == 0) {
		qtk_free(tids);
		return qtk_fail(st, QTK_E_NOMEM, "cannot start worker threads");
	}
	/* progress every 50 ms until the last worker ends (it wakes us at
	 * once: no poll interval added to the run) */
	for (;;) {
		struct timespec until;
		int live;

		if (j->o->progress)
			report_progress(j, total);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 50 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&j->lock);
		if (j->live > 0)
			pthread_cond_timedwait(&j->idle, &j->lock, &until);
		live = j->live;
		pthread_mutex_unlock(&j->lock);
		if (live == 0)
			break;
	}
	if (j->o->progress) /* the final figures */
		report_progress(j, total);
	for (int i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	qtk_free(tids);
	if (j->failed) {
		*st = j->err;
		return st->code;
	}
	return QTK_OK;
}
