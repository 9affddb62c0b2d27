/* convert: the in-memory sink. Each tensor's planes are allocated at open
 * (their sizes from quant's table) and filled by the workers as a .qtk
 * file's would be; commit hands the whole model to the caller, abort
 * frees it. Nothing touches the disk. */
#include <stdlib.h>
#include <string.h>

#include "conv_impl.h"

typedef struct {
	qtk_mem_model *m;
	qtk_mem_model **out;
} mem_sink;

void qtk_mem_model_free(qtk_mem_model *m)
{
	if (!m)
		return;
	for (size_t i = 0; m->t && i < m->n; i++) {
		qtk_free(m->t[i].name);
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			qtk_free(m->t[i].planes[p]);
	}
	qtk_free(m->t);
	qtk_free(m->metadata_json);
	qtk_free(m);
}

static qtk_err mem_tensor(qtk_mem_tensor *t, const qtk_pack_desc *d, qtk_status *st)
{
	t->name = qtk_strdup(d->name);
	if (!t->name)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	t->ndim = d->ndim;
	memcpy(t->shape, d->shape, sizeof t->shape);
	t->src_dtype = d->src_dtype;
	t->layout = d->layout;
	t->cols = d->ndim ? d->shape[d->ndim - 1] : 1;
	t->rows = 1;
	for (uint32_t k = 0; k + 1 < d->ndim; k++)
		t->rows *= d->shape[k]; /* checked by the source reader */
	if (qtk_q_plane_sizes(&t->layout, t->rows, t->cols, t->sizes))
		return qtk_fail(st, QTK_E_OVERFLOW, "tensor '%s': plane sizes overflow", d->name);
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		if (!t->sizes[p])
			continue;
		if (t->sizes[p] > SIZE_MAX || !(t->planes[p] = qtk_malloc((size_t)t->sizes[p])))
			return qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory for %llu bytes",
			                d->name, (unsigned long long)t->sizes[p]);
	}
	return QTK_OK;
}

static qtk_err m_open(void *ctx, const char *path, const qtk_pack_desc *d, size_t n,
                      const qtk_write_opts *wo, qtk_status *st)
{
	mem_sink *s = ctx;

	(void)path;
	(void)wo;
	s->m = qtk_calloc(1, sizeof *s->m);
	if (!s->m || !(s->m->t = qtk_calloc(n ? n : 1, sizeof *s->m->t)))
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	s->m->n = n;
	for (size_t i = 0; i < n; i++)
		QTK_TRY(mem_tensor(&s->m->t[i], &d[i], st));
	return QTK_OK;
}

/* Copy len bytes to plane p of tensor i at off, inside the plane. */
static qtk_err put(mem_sink *s, size_t i, int p, uint64_t off, const void *buf, size_t len,
                   qtk_status *st)
{
	qtk_mem_tensor *t = &s->m->t[i];

	if (off > t->sizes[p] || len > t->sizes[p] - off)
		return qtk_fail(st, QTK_E_ARG, "tensor '%s': plane %d: bytes [%llu, +%zu) outside "
		                "its %llu", t->name, p, (unsigned long long)off, len,
		                (unsigned long long)t->sizes[p]);
	memcpy((uint8_t *)t->planes[p] + off, buf, len);
	return QTK_OK;
}

static qtk_err m_put_bytes(void *ctx, size_t i, uint64_t off, const void *buf, size_t len,
                           qtk_status *st)
{
	return put(ctx, i, QTK_PLANE_CODES, off, buf, len, st);
}

static qtk_err m_put_rows(void *ctx, size_t i, const qtk_q_layout *L, const qtk_q_cplanes *p,
                          uint64_t elem0, size_t nrows, size_t cols, int flat,
                          sink_scratch *sc, qtk_status *st)
{
	(void)sc;
	for (int pl = 0; pl < QTK_PLANE_DQ; pl++) {
		uint64_t rb = qtk_q_row_bytes(L, cols, pl);

		if (rb)
			QTK_TRY(put(ctx, i, pl, flat ? elem0 * (rb / cols) : elem0 / cols * rb,
			            p->p[pl], (size_t)(rb * nrows), st));
	}
	return QTK_OK;
}

static qtk_err m_put_plane(void *ctx, size_t i, int plane, uint64_t off, const void *buf,
                           size_t len, qtk_status *st)
{
	return put(ctx, i, plane, off, buf, len, st);
}

static qtk_err m_commit(void *ctx, const char *meta, qtk_status *st)
{
	mem_sink *s = ctx;
	qtk_err rc = QTK_OK;

	if (meta && !(s->m->metadata_json = qtk_strdup(meta)))
		rc = qtk_fail(st, QTK_E_NOMEM, "out of memory");
	if (rc)
		qtk_mem_model_free(s->m);
	else
		*s->out = s->m;
	qtk_free(s);
	return rc;
}

static void m_abort(void *ctx)
{
	mem_sink *s = ctx;

	if (!s)
		return;
	qtk_mem_model_free(s->m);
	qtk_free(s);
}

static const sink_ops mem_ops = {
	.records_crc = 1,
	.open = m_open, .put_bytes = m_put_bytes, .put_rows = m_put_rows,
	.put_plane = m_put_plane, .commit = m_commit, .abort = m_abort,
};

qtk_err sink_mem_new(sink *k, const sink_args *a, qtk_status *st)
{
	qtk_mem_model **out = a->memory;
	mem_sink *s;

	if (!out)
		return qtk_fail(st, QTK_E_ARG, "memory output without a place for the model");
	if (!(s = qtk_calloc(1, sizeof *s)))
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	s->out = out;
	k->ops = &mem_ops;
	k->ctx = s;
	return QTK_OK;
}
