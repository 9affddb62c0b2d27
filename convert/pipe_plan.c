/* convert: the pipeline's plan. Each tensor gets its layout (the recipe's
 * decision, or a .qtk source's stored layout) as the sink holds it, its
 * output size, and fixed work items: byte ranges, element runs or row
 * ranges of the tensor, which do not depend on the thread count. */
#include <string.h>

#include "pipe_impl.h"

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
	qtk_status_clear(&tmp);
	if (K->plan) {
		int as = 0, ac = 0;
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
		int ok = 1;
		p->auto_scales = qtk_q_scheme_get(S->scheme)->quantized && K->scales_f32 &&
		                 !(j->widen[i] & W_SCALES);
		if (p->auto_scales && K->check_scales) {
			const void *const *pl = src_stored_planes(p->t);
			qtk_q_cplanes c = { { pl[0], pl[1], pl[2], pl[3] } };
			QTK_TRY(K->check_scales(j->out.ctx, i, S, &c, p->rows, p->cols, &ok, st));
		}
		if (((j->widen[i] & W_SCALES) || !ok) && K->scales_f32) {
			QTK_TRY(K->scales_f32(j->out.ctx, i, st));
			p->auto_scales = 0; /* F32 holds every value */
		}
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

qtk_err pipe_plan(job *j, qtk_status *st)
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

/* The sink, planner state and all, ends by sinks_abort or its commit. */
void pipe_plan_free(job *j)
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
