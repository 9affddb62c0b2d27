/* formats: safetensors writer. The whole layout (header, offsets) is fixed
 * at open, so tensor bytes can be written in any order and from several
 * threads; commit checks that every byte arrived. Output is atomic (fileio). */
#include <string.h>

#include <jansson.h>

#include "fileio.h"
#include "qtk_formats.h"

struct qtk_st_writer {
	qtk_outfile o;
	size_t n;
	uint64_t *off;     /* absolute file offset of each tensor */
	uint64_t *size;    /* bytes of each tensor */
	uint64_t *written; /* bytes put so far (atomic) */
};

static void writer_free(qtk_st_writer *w)
{
	qtk_out_abort(&w->o);
	qtk_free(w->off);
	qtk_free(w->size);
	qtk_free(w->written);
	qtk_free(w);
}

void qtk_st_writer_abort(qtk_st_writer *w)
{
	if (w)
		writer_free(w);
}

/* Build the header JSON for descs; fills sizes. Returns a qtk_malloc'd,
 * space-padded string whose length makes the data start 8-aligned. */
static qtk_err build_header_json(const char *path, const qtk_st_desc *d, size_t n,
                            const char *const *meta, uint64_t *size, char **out,
                            size_t *outlen, qtk_status *st)
{
	qtk_err rc = QTK_OK;
	char *txt = NULL;
	json_t *root = json_object();
	if (!root)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	if (meta) {
		json_t *m = json_object();
		if (!m || json_object_set_new(root, "__metadata__", m)) {
			rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
			goto out;
		}
		for (size_t i = 0; meta[i]; i += 2) {
			if (!meta[i + 1]) {
				rc = qtk_fail(st, QTK_E_ARG, "%s: metadata key '%s' has no value", path,
				              meta[i]);
				goto out;
			}
			if (json_object_set_new(m, meta[i], json_string(meta[i + 1]))) {
				rc = qtk_fail(st, QTK_E_ARG, "%s: metadata '%s' is not valid UTF-8",
				              path, meta[i]);
				goto out;
			}
		}
	}
	uint64_t off = 0;
	for (size_t i = 0; i < n; i++) {
		const char *name = d[i].name;
		size_t es = qtk_dtype_size(d[i].dtype);
		if (!name || !*name || !strcmp(name, "__metadata__")) {
			rc = qtk_fail(st, QTK_E_ARG, "%s: tensor %zu: name '%s' is not allowed", path,
			              i, name ? name : "(null)");
			goto out;
		}
		if (!es || d[i].ndim > QTK_MAX_DIMS) {
			rc = qtk_fail(st, QTK_E_ARG, "%s: tensor '%s': bad dtype or rank", path, name);
			goto out;
		}
		if (json_object_get(root, name)) {
			rc = qtk_fail(st, QTK_E_ST_DUPLICATE, "%s: tensor '%s' given twice", path,
			              name);
			goto out;
		}
		uint64_t ne = 1, nb, end;
		int ovf = 0;
		json_t *shape = json_array(), *offs = json_array(), *e = json_object();
		for (uint32_t k = 0; k < d[i].ndim; k++)
			ovf |= __builtin_mul_overflow(ne, d[i].shape[k], &ne);
		ovf |= __builtin_mul_overflow(ne, (uint64_t)es, &nb);
		ovf |= __builtin_add_overflow(off, nb, &end);
		ovf |= end > (uint64_t)INT64_MAX;
		if (ovf) {
			json_decref(shape);
			json_decref(offs);
			json_decref(e);
			rc = qtk_fail(st, QTK_E_OVERFLOW, "%s: tensor '%s': size overflows", path,
			              name);
			goto out;
		}
		int bad = !shape || !offs || !e;
		for (uint32_t k = 0; !bad && k < d[i].ndim; k++)
			bad |= json_array_append_new(shape, json_integer((json_int_t)d[i].shape[k]));
		bad |= !offs || json_array_append_new(offs, json_integer((json_int_t)off));
		bad |= !offs || json_array_append_new(offs, json_integer((json_int_t)end));
		bad |= !e || json_object_set_new(e, "dtype", json_string(qtk_dtype_name(d[i].dtype)));
		bad |= !e || json_object_set_new(e, "shape", shape);
		shape = NULL;
		bad |= !e || json_object_set_new(e, "data_offsets", offs);
		offs = NULL;
		if (bad || json_object_set_new(root, name, e)) {
			rc = qtk_fail(st, QTK_E_ARG,
			              "%s: tensor '%s': cannot encode (invalid UTF-8 or out of memory)",
			              path, name);
			goto out;
		}
		size[i] = nb;
		off = end;
	}
	txt = json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII);
	if (!txt) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
		goto out;
	}
	size_t len = strlen(txt), pad = (8 - len % 8) % 8;
	if (len + pad > QTK_ST_MAX_HEADER) {
		rc = qtk_fail(st, QTK_E_UNSUPPORTED, "%s: header of %zu bytes is above %u", path,
		              len, QTK_ST_MAX_HEADER);
		goto out;
	}
	*out = qtk_malloc(len + pad);
	if (!*out) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
		goto out;
	}
	memcpy(*out, txt, len);
	memset(*out + len, ' ', pad);
	*outlen = len + pad;
out:
	free(txt);
	json_decref(root);
	return rc;
}

/* build_header_json under a jansson guard (qtk_formats.h). */
static qtk_err build_header(const char *path, const qtk_st_desc *d, size_t n,
                            const char *const *meta, uint64_t *size, char **out,
                            size_t *outlen, qtk_status *st)
{
	unsigned jm = qtk_json_begin();
	qtk_err rc = build_header_json(path, d, n, meta, size, out, outlen, st);

	if (qtk_json_end(jm)) {
		if (rc == QTK_OK)
			qtk_free(*out);
		*out = NULL;
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	return rc;
}

qtk_err qtk_st_writer_open(qtk_st_writer **out, const char *path, const qtk_st_desc *descs,
                           size_t n, const char *const *meta, const qtk_write_opts *opts,
                           qtk_status *st)
{
	if (!out)
		return qtk_fail(st, QTK_E_ARG, "qtk_st_writer_open: out is NULL");
	*out = NULL;
	if (!path || (n && !descs))
		return qtk_fail(st, QTK_E_ARG, "qtk_st_writer_open: NULL argument");
	qtk_st_writer *w = qtk_calloc(1, sizeof *w);
	if (!w)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	w->o.fd = -1;
	w->o.slot = -1;
	w->n = n;
	size_t k = n ? n : 1;
	w->off = qtk_calloc(k, sizeof *w->off);
	w->size = qtk_calloc(k, sizeof *w->size);
	w->written = qtk_calloc(k, sizeof *w->written);
	char *hdr = NULL;
	size_t hl = 0;
	qtk_err rc;
	if (!w->off || !w->size || !w->written) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
		goto fail;
	}
	if ((rc = build_header(path, descs, n, meta, w->size, &hdr, &hl, st)))
		goto fail;
	uint64_t pos = 8 + hl;
	for (size_t i = 0; i < n; i++) {
		w->off[i] = pos;
		pos += w->size[i]; /* bounded by the header's checks */
	}
	if ((rc = qtk_out_open(&w->o, path, opts, st)))
		goto fail;
	uint8_t len8[8];
	for (int i = 0; i < 8; i++)
		len8[i] = (uint8_t)((uint64_t)hl >> (8 * i));
	if ((rc = qtk_out_truncate(&w->o, pos, st)) ||
	    (rc = qtk_out_pwrite(&w->o, len8, 8, 0, st)) ||
	    (rc = qtk_out_pwrite(&w->o, hdr, hl, 8, st)))
		goto fail;
	qtk_free(hdr);
	*out = w;
	return QTK_OK;
fail:
	qtk_free(hdr);
	writer_free(w);
	return rc;
}

qtk_err qtk_st_writer_put(qtk_st_writer *w, size_t i, uint64_t off, const void *buf,
                          size_t len, qtk_status *st)
{
	uint64_t end;
	if (!w || i >= w->n || (len && !buf))
		return qtk_fail(st, QTK_E_ARG, "qtk_st_writer_put: bad argument");
	if (__builtin_add_overflow(off, (uint64_t)len, &end) || end > w->size[i])
		return qtk_fail(st, QTK_E_ARG, "%s: tensor %zu: bytes [%llu, %llu) past its %llu",
		                w->o.path, i, (unsigned long long)off, (unsigned long long)end,
		                (unsigned long long)w->size[i]);
	if (!len)
		return QTK_OK;
	QTK_TRY(qtk_out_pwrite(&w->o, buf, len, w->off[i] + off, st));
	__atomic_add_fetch(&w->written[i], (uint64_t)len, __ATOMIC_RELAXED);
	return QTK_OK;
}

qtk_err qtk_st_writer_commit(qtk_st_writer *w, qtk_status *st)
{
	if (!w)
		return qtk_fail(st, QTK_E_ARG, "qtk_st_writer_commit: NULL writer");
	qtk_err rc = QTK_OK;
	for (size_t i = 0; i < w->n && !rc; i++) {
		uint64_t got = __atomic_load_n(&w->written[i], __ATOMIC_ACQUIRE);
		if (got != w->size[i])
			rc = qtk_fail(st, QTK_E_ARG, "%s: tensor %zu: %llu of %llu bytes written",
			              w->o.path, i, (unsigned long long)got,
			              (unsigned long long)w->size[i]);
	}
	if (!rc)
		rc = qtk_out_commit(&w->o, st);
	writer_free(w);
	return rc;
}

qtk_err qtk_st_write(const char *path, const qtk_st_desc *descs, const void *const *data,
                     size_t n, const char *const *meta, const qtk_write_opts *opts,
                     qtk_status *st)
{
	qtk_st_writer *w;
	if (n && !data)
		return qtk_fail(st, QTK_E_ARG, "qtk_st_write: data is NULL");
	QTK_TRY(qtk_st_writer_open(&w, path, descs, n, meta, opts, st));
	for (size_t i = 0; i < n; i++) {
		if (w->size[i] > SIZE_MAX) {
			qtk_st_writer_abort(w);
			return qtk_fail(st, QTK_E_OVERFLOW, "%s: tensor too large", path);
		}
		qtk_err rc = qtk_st_writer_put(w, i, 0, data[i], (size_t)w->size[i], st);
		if (rc) {
			qtk_st_writer_abort(w);
			return rc;
		}
	}
	return qtk_st_writer_commit(w, st);
}
