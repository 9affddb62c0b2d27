/* runtime: a loaded .qtk model — the validated packed file plus a view per
 * tensor: zero-copy into the mapping, or decompressed copies for zstd
 * planes of the transport form. GGUF files load through rt_gguf.c. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rt_private.h"

void qtk_rt_close(qtk_rt_model *m)
{
	if (!m)
		return;
	for (size_t k = 0; m->owned && k < m->n * QTK_PLANE_MAX; k++)
		qtk_free(m->owned[k]);
	for (size_t i = 0; m->t && i < m->n; i++)
		qtk_rt_uninterleave(&m->t[i]);
	qtk_free(m->owned);
	qtk_free(m->t);
	qtk_pack_close(m->f);
	qtk_gguf_close(m->g);
	qtk_free(m);
}

/* Decompress plane p of tensor i into a 64-byte aligned buffer. */
static qtk_err load_plane(qtk_rt_model *m, size_t i, int p, qtk_status *st)
{
	const qtk_pack_tensor *pt = qtk_pack_get(m->f, i);
	uint64_t size = pt->planes[p].size;
	uint8_t *raw, *aligned;
	qtk_err rc;

	if (size > SIZE_MAX - 64)
		return qtk_fail(st, QTK_E_OVERFLOW, "tensor '%s': plane too large", pt->name);
	raw = qtk_malloc((size_t)size + 64);
	if (!raw)
		return qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory for %llu bytes",
		                pt->name, (unsigned long long)size);
	m->owned[i * QTK_PLANE_MAX + (size_t)p] = raw;
	aligned = raw + (64 - (uintptr_t)raw % 64) % 64;
	rc = qtk_pack_plane_read(m->f, pt, p, aligned, st);
	m->t[i].planes[p].data = aligned;
	m->t[i].zero_copy = 0;
	return rc;
}

static qtk_err build_views(qtk_rt_model *m, qtk_status *st)
{
	for (size_t i = 0; i < m->n; i++) {
		const qtk_pack_tensor *pt = qtk_pack_get(m->f, i);
		qtk_rt_tensor *t = &m->t[i];

		t->name = pt->name;
		t->ndim = pt->ndim;
		memcpy(t->shape, pt->shape, sizeof t->shape);
		t->src_dtype = pt->src_dtype;
		t->layout = pt->layout;
		t->scheme = pt->layout.scheme;
		t->group = pt->layout.group;
		t->rows = pt->rows;
		t->cols = pt->cols;
		t->zero_copy = 1;
		for (int p = 0; p < QTK_PLANE_MAX; p++) {
			t->planes[p].size = pt->planes[p].size;
			t->planes[p].dtype = qtk_pack_plane_dtype(pt, p);
			t->planes[p].data = pt->planes[p].data;
			if (pt->planes[p].size && (pt->planes[p].flags & QTK_PACK_PF_ZSTD))
				QTK_TRY(load_plane(m, i, p, st));
		}
	}
	return QTK_OK;
}

qtk_err qtk_rt_open(const char *path, unsigned flags, qtk_rt_model **out, qtk_status *st)
{
	qtk_rt_model *m;
	qtk_err rc;

	if (!out)
		return qtk_fail(st, QTK_E_ARG, "no output pointer");
	*out = NULL;
	if (path && rt_is_gguf(path))
		return rt_open_gguf(path, out, st);
	m = qtk_calloc(1, sizeof *m);
	if (!m)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path ? path : "");
	rc = qtk_pack_open(path, (flags & QTK_RT_VERIFY) ? QTK_PACK_OPEN_VERIFY : 0, &m->f, st);
	if (!rc) {
		m->n = qtk_pack_count(m->f);
		m->t = qtk_calloc(m->n ? m->n : 1, sizeof *m->t);
		m->owned = qtk_calloc(m->n ? m->n * QTK_PLANE_MAX : 1, sizeof *m->owned);
		if (!m->t || !m->owned)
			rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	if (!rc)
		rc = build_views(m, st);
	if (rc) {
		qtk_rt_close(m);
		return rc;
	}
	if (flags & QTK_RT_PREFETCH)
		madvise((void *)(uintptr_t)qtk_pack_file_data(m->f),
		        (size_t)qtk_pack_file_size(m->f), MADV_WILLNEED);
	*out = m;
	return QTK_OK;
}

size_t qtk_rt_count(const qtk_rt_model *m)
{
	return m ? m->n : 0;
}

const qtk_rt_tensor *qtk_rt_get(const qtk_rt_model *m, size_t i)
{
	return m && i < m->n ? &m->t[i] : NULL;
}

const qtk_rt_tensor *qtk_rt_find(const qtk_rt_model *m, const char *name)
{
	const qtk_pack_tensor *pt;
	const qtk_gguf_tensor *gt;

	if (!m || !name)
		return NULL;
	if (m->g) {
		gt = qtk_gguf_find(m->g, name);
		return gt ? &m->t[(size_t)(gt - qtk_gguf_get(m->g, 0))] : NULL;
	}
	pt = qtk_pack_find(m->f, name);
	return pt ? &m->t[qtk_pack_index_of(m->f, pt)] : NULL;
}

const char *qtk_rt_metadata(const qtk_rt_model *m)
{
	return m && m->f ? qtk_pack_metadata(m->f, NULL) : NULL;
}

int qtk_rt_prefetch(const qtk_rt_model *m, const qtk_rt_tensor *t)
{
	uintptr_t lo = UINTPTR_MAX, hi = 0, page = (uintptr_t)sysconf(_SC_PAGESIZE);

	if (!m || !t)
		return EINVAL;
	if (!t->zero_copy)
		return 0;
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		uintptr_t a = (uintptr_t)t->planes[p].data;
		if (!t->planes[p].size)
			continue;
		lo = a < lo ? a : lo;
		hi = a + t->planes[p].size > hi ? a + t->planes[p].size : hi;
	}
	if (hi == 0)
		return 0;
	lo -= lo % page;
	return madvise((void *)lo, hi - lo, MADV_WILLNEED) ? errno : 0;
}

void rt_release_pages(const qtk_rt_tensor *t)
{
	uintptr_t lo = UINTPTR_MAX, hi = 0, page = (uintptr_t)sysconf(_SC_PAGESIZE);

	if (!t->zero_copy)
		return;
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		uintptr_t a = (uintptr_t)t->planes[p].data;
		if (!t->planes[p].size)
			continue;
		lo = a < lo ? a : lo;
		hi = a + t->planes[p].size > hi ? a + t->planes[p].size : hi;
	}
	/* whole pages inside the tensor only: neighbours keep theirs */
	lo = (lo + page - 1) / page * page;
	hi -= hi % page;
	if (hi > lo)
		(void)madvise((void *)lo, hi - lo, MADV_DONTNEED); /* a hint: failure is harmless */
}

qtk_err qtk_rt_verify(const qtk_rt_model *m, qtk_status *st)
{
	if (!m)
		return qtk_fail(st, QTK_E_ARG, "no model");
	if (m->g)
		return QTK_OK; /* GGUF has no checksums; the reader checked the layout */
	return qtk_pack_verify(m->f, st);
}

const qtk_pack_file *qtk_rt_file(const qtk_rt_model *m)
{
	return m ? m->f : NULL;
}

const qtk_gguf_file *qtk_rt_gguf(const qtk_rt_model *m)
{
	return m ? m->g : NULL;
}
