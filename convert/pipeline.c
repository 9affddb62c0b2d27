/* convert: the streaming conversion pipeline.
 * Plan every tensor (recipe decision, planes, sizes), lay the output out up
 * front, then let worker threads take fixed work items (row or element
 * chunks of one tensor, in file order) and quantize + pwrite them. Work items
 * do not depend on the thread count, and per-item error accumulators merge
 * in item order, so the output is byte-identical for any -j. Memory per
 * thread is a few chunk buffers; consumed source pages are dropped from the
 * resident set as we go. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "calib.h"
#include "conv_impl.h"

#define DEFAULT_CHUNK_ELEMS (1u << 20)
#define SUB_ELEMS 16384u        /* f32 values processed in cache at a time */

/* How a tensor's items run: source bytes copied (RAW), f32 runs of a flat
 * float store (ELEM), rows quantized (ROWS), stored planes copied (PASS). */
enum { MODE_RAW, MODE_ELEM, MODE_ROWS, MODE_PASS };

typedef struct {
	size_t tensor;
	uint64_t start, count;  /* bytes (RAW), elements (ELEM) or rows (ROWS) */
} work_item;

typedef struct {
	const src_tensor *t;    /* the tensor, as the output names and shapes it */
	const src *vs;          /* where its values or bytes are read: the */
	const src_tensor *vt;   /*   source's t, or the recorded checkpoint's */
	qtk_decision d;
	uint64_t rows, cols;
	int mode;
	size_t item0, nitems;
	uint64_t out_bytes;
	/* --calib: made by the first item of the tensor, freed by its last
	 * (a GPTQ factor is cols^2 floats); under job.calib_lock */
	calib_tensor ct;
	int ct_made, has_stats;
	const char *calib_used; /* "gptq" or "weighted" once made */
	size_t ct_left;         /* items not finished, in this pass */
	uint64_t total, per;    /* units to cover (bytes, elements or rows by
	                           mode) and units per work item */
	/* NF4 double quantization: items quantize with f32 scales into absmax
	 * (allocated by the first item, under job.lock); the item that brings
	 * remaining to 0 double-quantizes them and computes the metrics */
	float *absmax;          /* [rows * groups per row] */
	size_t remaining;       /* atomic: items not finished */
	/* the narrow types qtk chose itself (not the user): a value they
	 * cannot hold widens them to F32 (job.widen) instead of failing */
	int auto_store;         /* an F16/BF16 float store */
	int auto_scales;        /* the scale dtype (F16/BF16) */
	int gathered;           /* the sink writes rows out of source order */
	uint64_t flushed;       /* atomic: nonzero values stored as zero */
	qtk_conv_from from;     /* a .qtk source: stored, dequantized, requantized */
	char why[320];          /* QTK_FROM_REQUANT: why */
} plan_tensor;

/* job.widen bits: what a second pass stores wider: F32, or for a float
 * store of a BF16 source its own BF16 bytes (they hold every value) */
enum { W_STORE = 1, W_SCALES = 2 };

typedef struct {
	const qtk_conv_opts *o;
	src *s;
	plan_tensor *pt;
	size_t n;
	work_item *items;
	size_t nitems;
	uint64_t chunk;
	qtk_q_acc *acc;         /* [nitems] */
	uint32_t *crc;          /* [nitems] crc32 of each item's source bytes */
	int want_crc;           /* the sink records the source crc32s */
	int search;             /* the data-free search (a .qtk: as recorded) */
	sink out;               /* where tensors go: made by each pass, planned,
	                           opened, then committed or aborted */
	size_t next;            /* atomic: next item to take */
	size_t items_done;      /* atomic */
	uint64_t bytes_done;    /* atomic: source bytes */
	int failed;             /* atomic */
	calib *cal;             /* --calib statistics, or NULL */
	pthread_mutex_t calib_lock;
	pthread_mutex_t lock;   /* guards err and live */
	pthread_cond_t idle;    /* signalled by each worker as it ends */
	int live;               /* workers not yet ended */
	qtk_status err;
	/* Fallbacks: a tensor whose narrow type was qtk's own choice and met a
	 * value it cannot hold is marked here (under lock) and the run goes on
	 * without writing; then the output is dropped and everything planned
	 * and written again with the marked tensors in F32. Both survive the
	 * re-plan; redo is reset by it. */
	uint8_t *widen;         /* [n] W_* */
	char **widen_why;       /* [n] the first value error of a marked tensor */
	int redo;               /* atomic: some tensor was marked in this pass */
} job;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- planning ----------------------------------------------------------- */

static void shape_2d(const src_tensor *t, uint64_t *rows, uint64_t *cols)
{
	*cols = t->ndim ? t->shape[t->ndim - 1] : 1;
	*rows = 1;
	for (uint32_t i = 0; i + 1 < t->ndim; i++)
		*rows *= t->shape[i]; /* the product is checked by the reader */
}

/* Which quantized weights the statistics cover; a width that does not
 * match is an error naming both. */
static qtk_err check_calib(job *j, qtk_status *st)
{
	size_t used = 0;

	for (size_t i = 0; i < j->n; i++) {
		plan_tensor *p = &j->pt[i];
		int has;

		p->ct_left = p->nitems;
		if (p->mode != MODE_ROWS || !qtk_q_scheme_get(p->d.layout.scheme)->quantized)
			continue; /* kept and float-stored tensors take no statistics */
		if ((has = calib_check(j->cal, p->t->name, p->cols, st)) < 0)
			return QTK_E_ARG;
		if (!has)
			continue;
		p->has_stats = 1;
		used++;
	}
	if (used == 0)
		return qtk_fail(st, QTK_E_ARG, "%s: no statistics for any quantized weight",
		                calib_path(j->cal));
	return QTK_OK;
}

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

/* The recipe's decision for tensor i of a checkpoint, as the sink holds
 * it (with the fallbacks a first pass marked in j->widen). */
static qtk_err plan_recipe(job *j, size_t i, plan_tensor *p, qtk_status *st)
{
	const qtk_conv_opts *o = j->o;
	const sink_ops *K = j->out.ops;
	const src_tensor *t = p->t;
	const qtk_q_scheme *sc;

	QTK_TRY(qtk_recipe_decide(o->recipe, t->name, t->dtype, t->ndim, t->shape, &p->d, st));
	sc = qtk_q_scheme_get(p->d.layout.scheme);
	p->auto_store = p->d.wider && sc->float_store;
	p->auto_scales = sc->quantized && !o->scale_dtype_set;
	if (sc->quantized) {
		p->d.layout.scale_dtype = o->scale_dtype;
		/* double quantization is an NF4 option; empty tensors have no
		 * groups to double-quantize */
		p->d.layout.flags = o->qflags & ~QTK_QF_MLX_AFFINE;
		if (!sc->double_quant || t->nelem == 0)
			p->d.layout.flags &= ~QTK_QF_DOUBLE_QUANT;
		if (sc->has_bias &&
		    (o->affine_rule == 2 || (o->affine_rule == 0 && K->mlx_affine) ||
		     (o->qflags & QTK_QF_MLX_AFFINE)))
			p->d.layout.flags |= QTK_QF_MLX_AFFINE;
	}
	if (!K->keeps_blocks && t->blk_elems && p->d.layout.scheme == QTK_SCHEME_RAW) {
		/* a kept ggml block tensor: its exact f32 values */
		memset(&p->d.layout, 0, sizeof p->d.layout);
		p->d.layout.scheme = conv_float_scheme(QTK_DT_F32);
		sc = qtk_q_scheme_get(p->d.layout.scheme);
	}
	if (!sc->float_store || sc->store_dtype == QTK_DT_F32)
		p->auto_store = 0;
	if (j->widen[i] & W_STORE) {
		/* a BF16 source goes back to its own bytes, anything else F32 */
		int bf = t->dtype == QTK_DT_BF16 && !t->blk_elems;
		memset(&p->d.layout, 0, sizeof p->d.layout);
		p->d.layout.scheme = bf ? QTK_SCHEME_RAW : conv_float_scheme(QTK_DT_F32);
		p->d.layout.dtype = t->dtype;
		p->auto_store = 0;
	}
	if (K->plan)
		QTK_TRY(K->plan(j->out.ctx, i, t, &p->d.layout, &p->auto_store, &p->auto_scales,
		                o->scale_dtype_set, st));
	sc = qtk_q_scheme_get(p->d.layout.scheme);
	if (!sc->float_store || sc->store_dtype == QTK_DT_F32 || (j->widen[i] & W_STORE))
		p->auto_store = 0;
	if (!sc->quantized || p->d.layout.scale_dtype == QTK_DT_F32)
		p->auto_scales = 0;
	if ((j->widen[i] & W_SCALES) && sc->quantized) {
		p->d.layout.scale_dtype = QTK_DT_F32;
		if (K->scales_f32)
			QTK_TRY(K->scales_f32(j->out.ctx, i, st));
		p->auto_scales = 0;
	}
	return QTK_OK;
}

static int same_layout(const qtk_q_layout *a, const qtk_q_layout *b)
{
	return a->scheme == b->scheme && a->group == b->group &&
	       a->scale_dtype == b->scale_dtype && a->flags == b->flags &&
	       (a->scheme != QTK_SCHEME_RAW || a->dtype == b->dtype);
}

/* Tensor i of a .qtk source: its stored layout when the sink keeps it (the
 * planes go over as they are), its stored values when the sink widens
 * them exactly (a float, or quantized values into F32), else requantized
 * from the recorded checkpoint (o->requantize) or refused. */
static qtk_err plan_stored(job *j, size_t i, plan_tensor *p, qtk_status *st)
{
	const sink_ops *K = j->out.ops;
	const qtk_q_layout *S = p->t->stored;
	qtk_q_layout L = *S;
	qtk_status tmp;
	qtk_err rc = QTK_OK;

	p->d.origin = "stored";
	if (K->plan) {
		int as = 0, ac = 0;
		qtk_status_clear(&tmp);
		rc = K->plan(j->out.ctx, i, p->t, &L, &as, &ac, 0, &tmp);
		if (rc == QTK_E_NOMEM || rc == QTK_E_IO) {
			*st = tmp;
			return rc;
		}
	}
	if (rc == QTK_OK && same_layout(&L, S)) {
		p->from = QTK_FROM_STORED;
		/* a sink that converts the stored scales (MLX, to the model's
		 * dtype) picked that type: F32 when a value needs it */
		p->auto_scales = qtk_q_scheme_get(S->scheme)->quantized && K->scales_f32 &&
		                 !(j->widen[i] & W_SCALES);
		if ((j->widen[i] & W_SCALES) && K->scales_f32)
			QTK_TRY(K->scales_f32(j->out.ctx, i, st));
	} else if (rc == QTK_OK && (!qtk_q_scheme_get(S->scheme)->quantized ||
	                            L.scheme == conv_float_scheme(QTK_DT_F32))) {
		p->from = QTK_FROM_DEQUANT; /* float to float, or into F32: exact */
	} else {
		if (!K->requant) /* cannot happen: such sinks keep every layout */
			return qtk_fail(st, QTK_E_UNSUPPORTED, "tensor '%s': %s", p->t->name, tmp.msg);
		QTK_TRY(K->requant(j->out.ctx, i, p->t, rc ? tmp.msg : NULL, j->o->requantize,
		                   j->widen[i] != 0, &L, p->why, sizeof p->why, st));
		QTK_TRY(src_origin_tensor(j->s, i, &p->vs, &p->vt, st));
		p->from = QTK_FROM_REQUANT;
		p->d.origin = "requantized from the source";
	}
	p->d.layout = L;
	return QTK_OK;
}

/* How tensor p's items run, and how many units each covers. */
static void plan_items(job *j, plan_tensor *p)
{
	const qtk_q_scheme *sc = qtk_q_scheme_get(p->d.layout.scheme);
	const src_tensor *v = p->vt;

	if (p->d.layout.scheme == QTK_SCHEME_RAW) {
		p->mode = MODE_RAW;
		p->total = v->nbytes;
		p->per = j->chunk * 4;
	} else if (p->from == QTK_FROM_STORED) {
		p->mode = MODE_PASS;
		p->total = p->rows;
		p->per = p->cols == 0 || p->cols >= j->chunk ? 1 : j->chunk / p->cols;
	} else if (sc->float_store && !p->gathered && !v->rows_only) {
		p->mode = MODE_ELEM;
		p->total = v->nelem;
		p->per = j->chunk;
		if (v->blk_elems) /* items on block boundaries */
			p->per = (p->per + v->blk_elems - 1) / v->blk_elems * v->blk_elems;
	} else {
		p->mode = MODE_ROWS;
		p->total = p->rows;
		p->per = p->cols == 0 || p->cols >= j->chunk ? 1 : j->chunk / p->cols;
	}
	/* an empty tensor (nelem 0) has no work items */
	p->nitems = p->t->nelem ? (size_t)(p->total / p->per + (p->total % p->per != 0)) : 0;
	p->remaining = p->nitems;
}

/* Plan tensor i: its layout as the sink holds it, sizes, work items. */
static qtk_err plan_one(job *j, size_t i, qtk_status *st)
{
	const sink_ops *K = j->out.ops;
	plan_tensor *p = &j->pt[i];
	uint64_t sizes[QTK_PLANE_MAX];

	p->t = &j->s->t[i];
	p->vs = j->s;
	p->vt = p->t;
	shape_2d(p->t, &p->rows, &p->cols);
	QTK_TRY(p->t->stored ? plan_stored(j, i, p, st) : plan_recipe(j, i, p, st));
	p->gathered = K->gathered && K->gathered(j->out.ctx, i);
	if (qtk_q_layout_check(&p->d.layout, p->rows, p->cols, st)) {
		qtk_status_prefix(st, p->t->name);
		return st->code;
	}
	if (qtk_q_plane_sizes(&p->d.layout, p->rows, p->cols, sizes))
		return qtk_fail(st, QTK_E_OVERFLOW, "tensor '%s': output size overflows", p->t->name);
	p->out_bytes = sizes[0] + sizes[1] + sizes[2] + sizes[3];
	if (K->out_bytes && K->out_bytes(j->out.ctx, i, p->rows, p->cols))
		p->out_bytes = K->out_bytes(j->out.ctx, i, p->rows, p->cols);
	plan_items(j, p);
	return QTK_OK;
}

static qtk_err plan(job *j, qtk_status *st)
{
	size_t nitems = 0;

	j->n = j->s->n;
	j->want_crc = j->out.ops->records_crc && !j->s->qtk;
	j->search = j->s->qtk ? j->s->search : j->o->search;
	j->pt = qtk_calloc(j->n ? j->n : 1, sizeof *j->pt);
	if (!j->pt)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	for (size_t i = 0; i < j->n; i++) {
		QTK_TRY(plan_one(j, i, st));
		j->pt[i].item0 = nitems;
		nitems += j->pt[i].nitems;
	}
	if (j->cal)
		QTK_TRY(check_calib(j, st));
	j->nitems = nitems;
	j->items = qtk_calloc(nitems ? nitems : 1, sizeof *j->items);
	j->acc = qtk_calloc(nitems ? nitems : 1, sizeof *j->acc);
	j->crc = qtk_calloc(nitems ? nitems : 1, sizeof *j->crc);
	if (!j->items || !j->acc || !j->crc)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	for (size_t i = 0; i < j->n; i++) {
		plan_tensor *p = &j->pt[i];

		for (size_t k = 0; k < p->nitems; k++) {
			work_item *w = &j->items[p->item0 + k];
			w->tensor = i;
			w->start = (uint64_t)k * p->per;
			w->count = p->total - w->start < p->per ? p->total - w->start : p->per;
		}
	}
	return QTK_OK;
}

/* ---- workers ------------------------------------------------------------ */

typedef struct {
	float *in, *out;
	uint8_t *planes[QTK_PLANE_MAX];
	size_t plane_cap[QTK_PLANE_MAX];
	sink_scratch sc;        /* the sink's (GGUF blocks) */
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

static qtk_err grow(worker_buf *b, int p, size_t n, qtk_status *st)
{
	if (b->plane_cap[p] >= n)
		return QTK_OK;
	qtk_free(b->planes[p]);
	b->planes[p] = qtk_malloc(n);
	b->plane_cap[p] = b->planes[p] ? n : 0;
	if (!b->planes[p])
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
                       uint64_t elem0, uint64_t nelem, const qtk_q_opts *qo, qtk_status *st)
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
	if (j->want_crc)
		j->crc[k] = qtk_crc32(0, p->vt->data + boff, blen);
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
                         uint64_t n, uint64_t cols, float *out, qtk_status *st)
{
	if (p->gathered) {
		for (uint64_t r = 0; r < n; r++) {
			uint64_t sr = j->out.ops->row_src(j->out.ctx, it->tensor, it->start + r0 + r,
			                                  p->rows);
			QTK_TRY(src_read_f32(p->vs, p->vt, sr * cols, cols, out + r * cols, st));
		}
		return QTK_OK;
	}
	return src_read_f32(p->vs, p->vt, (it->start + r0) * cols, n * cols, out, st);
}

static qtk_err do_quant(job *j, size_t k, const work_item *it, worker_buf *b,
                        qtk_status *st)
{
	plan_tensor *p = &j->pt[it->tensor];
	const qtk_q_layout *L = &p->d.layout;
	uint64_t nrows, cols, elem0, nelem, boff, blen, flushed = 0;
	qtk_q_planes dst;
	qtk_q_cplanes csrc;
	qtk_q_opts qo = { .search = j->search, .tensor = p->vt->name,
	                  .flushed = &flushed };
	if (redoing(j) && __atomic_load_n(&j->widen[it->tensor], __ATOMIC_RELAXED))
		return QTK_OK; /* marked for F32 in this pass: its items are dropped */
	if (p->mode == MODE_ELEM) {
		nrows = 1;
		cols = it->count;
		elem0 = it->start;
		qo.row0 = 0;
		qo.row_len = p->cols; /* name row and column of a flat run */
	} else {
		nrows = it->count;
		cols = p->cols;
		elem0 = it->start * p->cols;
		qo.row0 = it->start;
	}
	nelem = nrows * cols;
	if (p->mode == MODE_ROWS) {
		/* statistics: the search weighs channels by them (GPTQ below) */
		QTK_TRY(calib_need(j, p, st));
		if (p->ct.importance) {
			qo.importance = p->ct.importance;
			qo.search = 1;
		}
	}
	src_span(p->vt, elem0, nelem, &boff, &blen);
	if (!p->gathered) /* gathered rows: not contiguous */
		src_prefault(p->vt, boff, blen);
	for (int pl = 0; pl < QTK_PLANE_DQ; pl++) {
		uint64_t rb = qtk_q_row_bytes(L, cols, pl);
		QTK_TRY(grow(b, pl, (size_t)(rb * nrows), st));
		dst.p[pl] = rb ? b->planes[pl] : NULL;
		csrc.p[pl] = dst.p[pl];
	}
	dst.p[QTK_PLANE_DQ] = NULL;
	csrc.p[QTK_PLANE_DQ] = NULL;
	if (L->flags & QTK_QF_DOUBLE_QUANT) {
		qtk_err rc;
		QTK_TRY(read_rows(j, it, p, 0, nrows, cols, b->in, st));
		rc = dq_item(j, k, it, b, elem0, nelem, &qo, st);
		__atomic_add_fetch(&p->flushed, flushed, __ATOMIC_RELAXED);
		return rc;
	}
	/* The item in cache-sized pieces (read, quantize, dequantize, measure
	 * while the f32 values are in L2); the planes collect the whole item
	 * for one write. */
	{
		int elem = p->mode == MODE_ELEM;
		int gathered = p->gathered; /* rows not in file order */
		uint32_t crc = 0;
		uint64_t units = elem ? cols : nrows;
		uint64_t sub = elem ? SUB_ELEMS : (cols >= SUB_ELEMS ? 1 : SUB_ELEMS / cols);

		if (p->ct.f) /* GPTQ: the whole item at once (its BLAS-3 updates) */
			sub = nrows;

		for (uint64_t u0 = 0; u0 < units; u0 += sub) {
			uint64_t nu = units - u0 < sub ? units - u0 : sub;
			uint64_t sr = elem ? 1 : nu, sc = elem ? nu : cols;
			qtk_q_planes d;
			qtk_err rc;

			for (int pl = 0; pl < QTK_PLANE_MAX; pl++) {
				uint64_t off = elem ? qtk_q_row_bytes(L, u0, pl)
				                    : u0 * qtk_q_row_bytes(L, cols, pl);
				d.p[pl] = dst.p[pl] ? (uint8_t *)dst.p[pl] + off : NULL;
			}
			if (elem)
				QTK_TRY(src_read_f32(p->vs, p->vt, elem0 + u0, nu, b->in, st));
			else
				QTK_TRY(read_rows(j, it, p, u0, nu, cols, b->in, st));
			if (j->want_crc && !gathered) { /* the bytes just read, while cached */
				uint64_t o, l;
				src_span(p->vt, elem ? elem0 + u0 : elem0 + u0 * cols, sr * sc, &o, &l);
				crc = qtk_crc32(crc, p->vt->data + o, l);
			}
			qo.row0 = elem ? 0 : it->start + u0;
			qo.elem0 = elem ? elem0 + u0 : 0;
			/* codes and each row's error sums in one pass */
			rc = p->ct.f ? calib_quantize_acc(&p->ct, L, b->in, b->out, (size_t)sr,
			                                  (size_t)sc, &d, &qo, &j->acc[k], st)
			             : qtk_q_quantize_rows_acc(L, b->in, (size_t)sr, (size_t)sc, &d,
			                                       &qo, &j->acc[k], st);
			if (rc)
				return value_error(j, it->tensor, rc, st);
		}
		if (j->want_crc)
			j->crc[k] = gathered ? qtk_crc32(0, p->vt->data + boff, blen) : crc;
	}
	__atomic_add_fetch(&p->flushed, flushed, __ATOMIC_RELAXED);
	/* this output is dropped: only the marks matter now (a sink that
	 * converts values, MLX, finds some while putting, so it still puts) */
	if (redoing(j) && !j->out.ops->checks_values)
		return QTK_OK;
	{
		qtk_err rc = j->out.ops->put_rows(j->out.ctx, it->tensor, L, &csrc, elem0,
		                                  (size_t)nrows, (size_t)cols,
		                                  p->mode == MODE_ELEM, &b->sc, st);
		if (j->out.ops->checks_values &&
		    (rc == QTK_E_Q_SCALE_RANGE || rc == QTK_E_GG_LAYOUT)) /* a scale or bias */
			return value_error(j, it->tensor, rc, st);
		if (rc)
			return rc;
	}
	src_release(p->vt, boff, blen);
	return QTK_OK;
}

static uint64_t item_src_bytes(const job *j, const work_item *it)
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
		__atomic_fetch_add(&j->bytes_done, item_src_bytes(j, it), __ATOMIC_RELAXED);
		__atomic_fetch_add(&j->items_done, 1, __ATOMIC_RELEASE);
	}
	qtk_free(b.in);
	qtk_free(b.out);
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		qtk_free(b.planes[p]);
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

static qtk_err run_workers(job *j, int nthreads, qtk_status *st)
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

/* ---- metadata and report ------------------------------------------------ */

static const char *group_name(uint32_t g, char buf[16])
{
	if (g == QTK_GROUP_ROW)
		return "row";
	snprintf(buf, 16, "%u", g);
	return buf;
}

/* config.json beside the source (*cfg NULL: none, or not an object). */
static qtk_err config_json(const src *s, json_t **cfg, qtk_status *st)
{
	char path[4096], *text;
	size_t len;
	qtk_status tmp;

	*cfg = NULL;
	if (!s->dir)
		return QTK_OK;
	snprintf(path, sizeof path, "%s/config.json", s->dir);
	/* not a regular file: refused when the input was opened */
	if (qtk_fmt_read_input(path, &text, &len, &tmp) != QTK_OK)
		return tmp.code == QTK_E_NOMEM ? qtk_fail(st, QTK_E_NOMEM, "out of memory") : QTK_OK;
	*cfg = json_loadb(text, len, 0, NULL);
	qtk_free(text);
	if (*cfg && !json_is_object(*cfg)) {
		json_decref(*cfg);
		*cfg = NULL;
	}
	return QTK_OK;
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

static int by_offset(const void *a, const void *b)
{
	uint64_t x = (*(const plan_tensor *const *)a)->t->file_offset;
	uint64_t y = (*(const plan_tensor *const *)b)->t->file_offset;

	return x < y ? -1 : x > y;
}

/* crc32 of a whole source file: the bytes between tensors (header, GGUF
 * alignment padding, trailing bytes) read from the mapping, each tensor's
 * bytes combined from its work items' crcs. */
static uLong file_crc(const job *j, size_t f, const plan_tensor **order)
{
	const src_file *sf = &j->s->files[f];
	uLong crc = 0;
	uint64_t pos = 0;
	size_t n = 0;

	for (size_t i = 0; i < j->n; i++)
		if (j->pt[i].t->file == f)
			order[n++] = &j->pt[i];
	qsort(order, n, sizeof *order, by_offset);
	for (size_t i = 0; i < n; i++) {
		const plan_tensor *p = order[i];
		if (p->t->file_offset > pos)
			crc = qtk_crc32((uint32_t)crc, sf->base + pos, p->t->file_offset - pos);
		for (size_t k = 0; k < p->nitems; k++)
			crc = crc32_combine(crc, j->crc[p->item0 + k],
			                    (z_off_t)item_src_bytes(j, &j->items[p->item0 + k]));
		if (p->t->file_offset + p->t->nbytes > pos)
			pos = p->t->file_offset + p->t->nbytes;
	}
	if (sf->size > pos)
		crc = qtk_crc32((uint32_t)crc, sf->base + pos, sf->size - pos);
	return crc;
}

/* Per source file: size and crc32 of all its bytes; NULL: out of memory. */
static json_t *sources_json(const job *j)
{
	json_t *files;
	const plan_tensor **order = qtk_malloc((j->n ? j->n : 1) * sizeof *order);

	if (!order)
		return NULL;
	files = json_array();
	for (size_t f = 0; f < j->s->nfiles; f++) {
		const src_file *sf = &j->s->files[f];
		int have = sf->base && j->want_crc;
		uLong crc = have ? file_crc(j, f, order) : 0;
		char hex[16];
		json_t *o = json_object();

		snprintf(hex, sizeof hex, "%08lx", (unsigned long)crc);
		json_object_set_new(o, "name", json_string(base_name(sf->path)));
		{
			/* where it was, for `qtk export --requantize` */
			char *abs = realpath(sf->path, NULL);
			json_object_set_new(o, "path", json_string(abs ? abs : sf->path));
			free(abs);
		}
		json_object_set_new(o, "bytes", json_integer((json_int_t)sf->size));
		json_object_set_new(o, "crc32", json_string(have ? hex : ""));
		json_array_append_new(files, o);
	}
	qtk_free(order);
	return files;
}

static void metrics_json(json_t *o, const qtk_q_metrics *m)
{
	json_object_set_new(o, "rmse", json_real(m->rmse));
	json_object_set_new(o, "max_abs", json_real(m->max_abs));
	json_object_set_new(o, "rel_fro", json_real(m->rel_fro));
	json_object_set_new(o, "snr_db", json_real(m->snr_db));
	json_object_set_new(o, "cosine", json_real(m->cosine));
}

/* A .qtk source: what its metadata records (the checkpoint it was made
 * from, config, recipe, options), so that its output can be requantized
 * from that checkpoint as the .qtk could. */
static json_t *recorded_head(const job *j)
{
	static const char *const keys[] = { "source", "config", "recipe", "options" };
	json_t *m = json_loads(j->s->recorded, 0, NULL), *root = json_object();

	if (!root) {
		json_decref(m);
		return NULL;
	}
	json_object_set_new(root, "qtk_version", json_string(QTK_VERSION));
	for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
		if (json_object_get(m, keys[k]))
			json_object_set(root, keys[k], json_object_get(m, keys[k]));
	json_decref(m);
	return root;
}

/* The run's provenance: source files and their crc32s, config, recipe,
 * options. NULL: out of memory. */
static json_t *run_head(const job *j, json_t *cfg)
{
	const qtk_conv_opts *o = j->o;
	json_t *root = json_object(), *sj = json_object();
	json_t *opts = json_object(), *rec = NULL;
	char *recipe = o->recipe ? qtk_recipe_json(o->recipe) : NULL;
	json_t *files = sources_json(j);

	if (!files || (o->recipe && !recipe) || !root || !sj || !opts) {
		json_decref(files);
		free(recipe);
		json_decref(root);
		json_decref(sj);
		json_decref(opts);
		json_decref(cfg);
		return NULL;
	}
	json_object_set_new(root, "qtk_version", json_string(QTK_VERSION));
	json_object_set_new(sj, "format", json_string(j->s->format));
	json_object_set_new(sj, "files", files);
	if (j->s->st && qtk_st_meta_count(j->s->st)) {
		json_t *m = json_object();
		for (size_t i = 0; i < qtk_st_meta_count(j->s->st); i++) {
			const char *k = qtk_st_meta_key(j->s->st, i);
			json_object_set_new(m, k, json_string(qtk_st_meta_get(j->s->st, k)));
		}
		json_object_set_new(sj, "metadata", m);
	}
	json_object_set_new(root, "source", sj);
	if (cfg)
		json_object_set_new(root, "config", cfg);
	if (recipe) {
		rec = json_loads(recipe, 0, NULL);
		free(recipe);
	}
	if (rec)
		json_object_set_new(root, "recipe", rec);
	json_object_set_new(opts, "scale_dtype", json_string(qtk_dtype_name(o->scale_dtype)));
	json_object_set_new(opts, "search", json_boolean(o->search));
	json_object_set_new(opts, "double_quant", json_boolean(o->qflags & QTK_QF_DOUBLE_QUANT));
	json_object_set_new(opts, "calib", o->calib ? json_string(base_name(o->calib)) : json_null());
	json_object_set_new(root, "options", opts);
	return root;
}

static char *build_metadata_json(const job *j, const qtk_conv_report *rep, json_t *cfg)
{
	json_t *root, *tens = json_object();
	char *text, buf[16];

	if (j->s->recorded) {
		json_decref(cfg);
		root = recorded_head(j);
	} else {
		root = run_head(j, cfg);
	}
	if (!root || !tens) {
		json_decref(root);
		json_decref(tens);
		return NULL;
	}
	if (rep->model)
		json_object_set_new(root, "model", json_string(rep->model));
	for (size_t i = 0; i < rep->ntensors; i++) {
		const qtk_conv_tensor *t = &rep->tensors[i];
		json_t *e = json_object();

		json_object_set_new(e, "scheme", json_string(t->layout.scheme == QTK_SCHEME_RAW ?
		                    "raw" : qtk_q_scheme_get(t->layout.scheme)->name));
		if (qtk_q_scheme_get(t->layout.scheme)->quantized)
			json_object_set_new(e, "group", json_string(group_name(t->layout.group, buf)));
		json_object_set_new(e, "rule", json_string(t->origin));
		if (t->has_metrics)
			metrics_json(e, &t->m);
		if (t->flushed)
			json_object_set_new(e, "flushed", json_integer((json_int_t)t->flushed));
		if (t->fallback)
			json_object_set_new(e, "fallback", json_string(t->fallback));
		json_object_set_new(tens, t->name, e);
	}
	json_object_set_new(root, "tensors", tens);
	text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
	json_decref(root);
	return text;
}

/* The metadata stored in the output (rep->metadata_json), built under a
 * jansson guard (qtk_formats.h). */
static qtk_err build_metadata(const job *j, qtk_conv_report *rep, qtk_status *st)
{
	unsigned jm = qtk_json_begin();
	json_t *cfg = NULL;
	qtk_err rc = config_json(j->s, &cfg, st);

	if (!rc)
		rep->metadata_json = build_metadata_json(j, rep, cfg);
	if (qtk_json_end(jm) || (!rc && !rep->metadata_json)) {
		free(rep->metadata_json);
		rep->metadata_json = NULL;
		return qtk_fail(st, QTK_E_NOMEM, "out of memory building metadata");
	}
	return rc;
}

static qtk_err make_report(job *j, qtk_conv_report **out, qtk_status *st)
{
	qtk_conv_report *rep = qtk_calloc(1, sizeof *rep);
	const char **names;

	*out = NULL;
	if (!rep)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	rep->tensors = qtk_calloc(j->n ? j->n : 1, sizeof *rep->tensors);
	rep->ntensors = rep->tensors ? j->n : 0;
	names = qtk_calloc(j->n ? j->n : 1, sizeof *names);
	if (!rep->tensors || !names) {
		qtk_free(names);
		qtk_conv_report_free(rep);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	for (size_t i = 0; i < j->n; i++) {
		const plan_tensor *p = &j->pt[i];
		qtk_conv_tensor *t = &rep->tensors[i];
		qtk_q_acc acc;

		names[i] = p->t->name;
		t->name = qtk_strdup(p->t->name);
		if (!t->name) {
			qtk_free(names);
			qtk_conv_report_free(rep);
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		}
		t->src_dtype = p->t->dtype;
		t->ndim = p->t->ndim;
		memcpy(t->shape, p->t->shape, sizeof t->shape);
		t->layout = p->d.layout;
		t->origin = p->d.origin;
		t->src_bytes = p->t->nbytes;
		t->out_bytes = p->out_bytes;
		t->flushed = p->flushed;
		t->from = p->from;
		if (p->from == QTK_FROM_REQUANT && !(t->requant_why = qtk_strdup(p->why))) {
			qtk_free(names);
			qtk_conv_report_free(rep);
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		}
		if (j->cal && p->mode == MODE_ROWS && qtk_q_scheme_get(t->layout.scheme)->quantized)
			t->calib = p->calib_used ? p->calib_used : "none";
		if (j->widen_why && j->widen_why[i] && !(t->fallback = qtk_strdup(j->widen_why[i]))) {
			qtk_free(names);
			qtk_conv_report_free(rep);
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		}
		rep->src_bytes += t->src_bytes;
		rep->out_bytes += t->out_bytes;
		rep->nparams += p->t->nelem;
		if (p->mode != MODE_RAW && p->mode != MODE_PASS && !j->o->dry_run && p->t->nelem) {
			memset(&acc, 0, sizeof acc);
			for (size_t k = 0; k < p->nitems; k++)
				qtk_q_acc_merge(&acc, &j->acc[p->item0 + k]);
			qtk_q_metrics_from(&acc, &t->m);
			t->has_metrics = 1;
		}
	}
	rep->model = qtk_detect_model(names, j->n);
	qtk_free(names);
	if (!(rep->resolved = qtk_strdup(j->s->path))) {
		qtk_conv_report_free(rep);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	*out = rep;
	return QTK_OK;
}

void qtk_conv_report_free(qtk_conv_report *rep)
{
	if (!rep)
		return;
	for (size_t i = 0; i < rep->ntensors; i++) {
		qtk_free(rep->tensors[i].name);
		qtk_free(rep->tensors[i].fallback);
		qtk_free(rep->tensors[i].requant_why);
	}
	qtk_free(rep->tensors);
	free(rep->metadata_json);
	qtk_free(rep->resolved);
	qtk_free(rep);
}

/* ---- entry -------------------------------------------------------------- */

/* Undo plan(), for job_free or a second pass (the sink, planner state and
 * all, ends by sinks_abort or its commit). */
static void plan_free(job *j)
{
	for (size_t i = 0; j->pt && i < j->n; i++) {
		calib_tensor_free(&j->pt[i].ct);
		qtk_free(j->pt[i].absmax);
	}
	qtk_free(j->pt);
	qtk_free(j->items);
	qtk_free(j->acc);
	qtk_free(j->crc);
	j->pt = NULL;
	j->items = NULL;
	j->acc = NULL;
	j->crc = NULL;
	j->nitems = 0;
	j->next = j->items_done = 0;
	j->bytes_done = 0;
	j->redo = 0;
}

/* Drop whatever output is open, whichever the sink: its temporary goes,
 * the output path stays as it was. Every failure after the open ends here
 * (job_free), and a second pass starts here. */
static void sinks_abort(job *j)
{
	if (j->out.ops)
		j->out.ops->abort(j->out.ctx);
	memset(&j->out, 0, sizeof j->out);
}

static void job_free(job *j)
{
	sinks_abort(j);
	plan_free(j);
	for (size_t i = 0; j->widen_why && j->s && i < j->s->n; i++)
		qtk_free(j->widen_why[i]);
	qtk_free(j->widen_why);
	qtk_free(j->widen);
	src_close(j->s);
	calib_close(j->cal);
	pthread_mutex_destroy(&j->calib_lock);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->idle);
}

/* The sink of this run's format, new for each pass (the only place that
 * asks which). */
static qtk_err sinks_begin(job *j, qtk_status *st)
{
	sink_args a = { .s = j->s, .exact = j->s->qtk != NULL };

	if (j->s->has_main) { /* a .qtk: its recorded recipe's */
		a.main_scheme = j->s->main_scheme;
		a.main_group = j->s->main_group;
	} else {
		a.main_scheme = qtk_recipe_main_scheme(j->o->recipe);
		a.main_group = qtk_recipe_main_group(j->o->recipe);
	}

	switch (j->o->format) {
	case QTK_OUT_GGUF:
		return sink_gguf_new(&j->out, &a, st);
	case QTK_OUT_MLX:
		return sink_mlx_new(&j->out, &a, st);
	case QTK_OUT_MEMORY:
		return sink_mem_new(&j->out, j->o->memory, st);
	default:
		return sink_qtk_new(&j->out, st);
	}
}

/* Open the output and run the workers; on success j->out is left open for
 * the commit, on failure (or when j->redo asks for a second pass) it is
 * aborted. */
static qtk_err write_output(job *j, int nthreads, qtk_status *st)
{
	const qtk_conv_opts *o = j->o;
	const char *inputs[64];
	qtk_write_opts wo = { .force = o->force, .inputs = inputs };
	qtk_pack_desc *descs = qtk_calloc(j->n ? j->n : 1, sizeof *descs);
	const src *og = src_origin(j->s); /* a .qtk's checkpoint, if requantizing */
	qtk_err rc;

	if (!descs)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");

	for (size_t f = 0; f < j->s->nfiles && wo.ninputs < 62; f++)
		inputs[wo.ninputs++] = j->s->files[f].path;
	for (size_t f = 0; og && f < og->nfiles && wo.ninputs < 62; f++)
		inputs[wo.ninputs++] = og->files[f].path;
	if (o->calib)
		inputs[wo.ninputs++] = o->calib;
	for (size_t i = 0; i < j->n; i++) {
		descs[i].name = j->pt[i].t->name;
		descs[i].ndim = j->pt[i].t->ndim;
		memcpy(descs[i].shape, j->pt[i].t->shape, sizeof descs[i].shape);
		descs[i].src_dtype = j->pt[i].t->dtype;
		descs[i].layout = j->pt[i].d.layout;
	}
	rc = j->out.ops->open(j->out.ctx, o->output, descs, j->n, &wo, st);
	qtk_free(descs);
	if (rc)
		return rc;
	rc = run_workers(j, nthreads, st);
	if (rc || j->redo) /* failed, or to be written again with fallbacks */
		sinks_abort(j);
	return rc;
}

qtk_err conv_run(const qtk_conv_opts *o, const conv_hooks *h, qtk_conv_report **out,
                 qtk_status *st)
{
	int qtk_only = h && h->qtk_only;
	job j;
	qtk_conv_report *rep = NULL;
	double t0 = now_s();
	int nthreads = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
	qtk_err rc;

	*out = NULL;
	memset(&j, 0, sizeof j);
	pthread_mutex_init(&j.lock, NULL);
	pthread_mutex_init(&j.calib_lock, NULL);
	pthread_cond_init(&j.idle, NULL);
	j.o = o;
	j.chunk = o->chunk_elems ? o->chunk_elems : DEFAULT_CHUNK_ELEMS;
	if (nthreads < 1)
		nthreads = 1;
	if (!o->input || (!o->recipe && !qtk_only && !src_is_qtk(o->input)) ||
	    (!o->output && !o->dry_run && o->format != QTK_OUT_MEMORY)) {
		pthread_mutex_destroy(&j.lock);
		pthread_mutex_destroy(&j.calib_lock);
		pthread_cond_destroy(&j.idle);
		return qtk_fail(st, QTK_E_ARG, "convert: input, output and recipe are required");
	}
	rc = qtk_only ? src_open_qtk_file(&j.s, o->input, st) : src_open(&j.s, o->input, st);
	if (!rc && o->calib && j.s->qtk)
		rc = qtk_fail(st, QTK_E_ARG, "%s: a .qtk input keeps its stored layouts: "
		              "statistics (--calib) do not apply", o->input);
	if (!rc && o->calib)
		rc = calib_open(o->calib, o->calib_gptq ? CALIB_GPTQ : CALIB_WEIGHTED, &o->gptq,
		                &j.cal, st);
	if (rc)
		goto out;
	j.widen = qtk_calloc(j.s->n ? j.s->n : 1, 1);
	j.widen_why = qtk_calloc(j.s->n ? j.s->n : 1, sizeof *j.widen_why);
	if (!j.widen || !j.widen_why) {
		rc = qtk_fail(st, QTK_E_NOMEM, "out of memory");
		goto out;
	}
	/* At most two passes: the second when the first marked tensors whose
	 * narrow type (qtk's own choice) cannot hold a value; they go in F32
	 * and cannot be marked again. */
	for (int pass = 0;; pass++) {
		rc = sinks_begin(&j, st);
		if (rc) {
			if (j.s->qtk) /* as its plan's errors */
				qtk_status_prefix(st, o->input);
			goto out;
		}
		rc = plan(&j, st);
		if (rc) {
			qtk_status_prefix(st, o->input);
			goto out;
		}
		if (o->dry_run) {
			rc = make_report(&j, &rep, st);
			goto out;
		}
		rc = write_output(&j, nthreads, st);
		if (rc)
			goto out;
		if (!j.redo)
			break;
		if (pass) { /* cannot happen: a marked tensor is F32 now */
			rc = qtk_fail(st, QTK_E_FORMAT, "%s: a value range fallback did not settle",
			              o->input);
			goto out;
		}
		plan_free(&j);
	}
	rc = make_report(&j, &rep, st);
	if (rc)
		goto out; /* job_free aborts the output */
	rep->threads = nthreads;
	rc = build_metadata(&j, rep, st);
	if (!rc && h && h->before_commit)
		rc = h->before_commit(h->ctx, rep, st);
	if (rc)
		goto out;
	rc = j.out.ops->commit(j.out.ctx, rep->metadata_json, st);
	memset(&j.out, 0, sizeof j.out); /* committed or dropped, either way */
out:
	if (rc == QTK_OK && rep)
		rep->seconds = now_s() - t0;
	if (rc) {
		qtk_conv_report_free(rep);
		rep = NULL;
	}
	job_free(&j);
	*out = rep;
	return rc;
}

qtk_err qtk_convert(const qtk_conv_opts *o, qtk_conv_report **out, qtk_status *st)
{
	return conv_run(o, NULL, out, st);
}
