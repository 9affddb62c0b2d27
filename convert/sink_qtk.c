/* convert: the .qtk sink. Planes go to formats' pack writer as they are;
 * the metadata is written on commit. */
#include "conv_impl.h"

/* Byte offset in plane pl of element elem0: a flat run of a float store,
 * or the start of row elem0 / cols. */
static uint64_t plane_off(const qtk_q_layout *L, int pl, uint64_t elem0, size_t cols,
                          int flat)
{
	uint64_t rb = qtk_q_row_bytes(L, cols, pl);

	return flat ? elem0 * (rb / cols) : elem0 / cols * rb;
}

static qtk_err q_open(void *ctx, const char *path, const qtk_pack_desc *d, size_t n,
                      const qtk_write_opts *wo, qtk_status *st)
{
	return qtk_pack_writer_open((qtk_pack_writer **)ctx, path, d, n, wo, st);
}

static qtk_err q_put_bytes(void *ctx, size_t i, uint64_t off, const void *buf, size_t len,
                           qtk_status *st)
{
	return qtk_pack_writer_put(*(qtk_pack_writer **)ctx, i, QTK_PLANE_CODES, off, buf, len,
	                           st);
}

static qtk_err q_put_rows(void *ctx, size_t i, const qtk_q_layout *L, const qtk_q_cplanes *p,
                          uint64_t elem0, size_t nrows, size_t cols, int flat,
                          sink_scratch *sc, qtk_status *st)
{
	(void)sc;
	for (int pl = 0; pl < QTK_PLANE_DQ; pl++) {
		uint64_t rb = qtk_q_row_bytes(L, cols, pl);

		if (!rb)
			continue;
		QTK_TRY(qtk_pack_writer_put(*(qtk_pack_writer **)ctx, i, pl,
		                            plane_off(L, pl, elem0, cols, flat), p->p[pl],
		                            (size_t)(rb * nrows), st));
	}
	return QTK_OK;
}

static qtk_err q_put_plane(void *ctx, size_t i, int plane, uint64_t off, const void *buf,
                           size_t len, qtk_status *st)
{
	return qtk_pack_writer_put(*(qtk_pack_writer **)ctx, i, plane, off, buf, len, st);
}

static qtk_err q_commit(void *ctx, const char *meta, qtk_status *st)
{
	qtk_pack_writer **w = ctx;
	qtk_err rc = qtk_pack_writer_commit(*w, meta, st);

	*w = NULL; /* the commit frees it either way */
	qtk_free(w);
	return rc;
}

static void q_abort(void *ctx)
{
	qtk_pack_writer **w = ctx;

	if (!w)
		return;
	qtk_pack_writer_abort(*w);
	qtk_free(w);
}

static const sink_ops qtk_ops = {
	.records_crc = 1,
	.open = q_open, .put_bytes = q_put_bytes, .put_rows = q_put_rows,
	.put_plane = q_put_plane, .commit = q_commit, .abort = q_abort,
};

qtk_err sink_qtk_new(sink *k, const sink_args *a, qtk_status *st)
{
	(void)a;
	k->ops = &qtk_ops;
	k->ctx = qtk_calloc(1, sizeof(qtk_pack_writer *));
	return k->ctx ? QTK_OK : qtk_fail(st, QTK_E_NOMEM, "out of memory");
}
