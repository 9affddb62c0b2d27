/* convert: the pipeline's input — tensors of a safetensors checkpoint
 * (single file, index or directory) behind one interface. */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conv_impl.h"

qtk_err src_open(src **out, const char *path, qtk_status *st)
{
	src *s = qtk_calloc(1, sizeof *s);
	qtk_err rc;

	*out = NULL;
	if (!s)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	rc = qtk_st_open(path, &s->st, st);
	if (rc) {
		qtk_free(s);
		return rc;
	}
	s->format = "safetensors";
	s->n = qtk_st_count(s->st);
	s->nfiles = qtk_st_shard_count(s->st);
	s->t = qtk_calloc(s->n ? s->n : 1, sizeof *s->t);
	s->files = qtk_calloc(s->nfiles ? s->nfiles : 1, sizeof *s->files);
	if (!s->t || !s->files) {
		src_close(s);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	s->dir = qtk_st_dir(s->st);
	for (size_t f = 0; f < s->nfiles; f++) {
		s->files[f].path = qtk_st_shard_path(s->st, f);
		s->files[f].size = qtk_st_shard_size(s->st, f);
		s->files[f].data_start = s->files[f].size;
	}
	for (size_t i = 0; i < s->n; i++) {
		const qtk_st_tensor *t = qtk_st_get(s->st, i);
		src_tensor *d = &s->t[i];
		src_file *f = &s->files[t->shard];

		d->name = t->name;
		d->dtype = t->dtype;
		d->ndim = t->ndim;
		memcpy(d->shape, t->shape, sizeof d->shape);
		d->nelem = t->nelem;
		d->nbytes = t->nbytes;
		d->data = t->data;
		d->file = t->shard;
		d->file_offset = t->file_offset;
		d->handle = t;
		if (t->file_offset < f->data_start) {
			f->data_start = t->file_offset;
			f->base = (const uint8_t *)t->data - t->file_offset;
		}
	}
	*out = s;
	return QTK_OK;
}

void src_close(src *s)
{
	if (!s)
		return;
	qtk_st_close(s->st);
	qtk_free(s->t);
	qtk_free(s->files);
	qtk_free(s);
}

qtk_err src_read_f32(const src *s, const src_tensor *t, uint64_t elem0,
                     uint64_t n, float *dst, qtk_status *st)
{
	(void)s;
	return qtk_st_read_f32(t->handle, elem0, n, dst, st);
}

void src_release(const src_tensor *t, uint64_t off, uint64_t len)
{
	static long page;
	uintptr_t a, b;

	if (!page)
		page = sysconf(_SC_PAGESIZE);
	if (!t->data || len == 0)
		return;
	/* whole pages inside the range only: neighbours may still be read */
	a = ((uintptr_t)t->data + off + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
	b = ((uintptr_t)t->data + off + len) & ~((uintptr_t)page - 1);
	if (b > a)
		madvise((void *)a, b - a, MADV_DONTNEED);
}
