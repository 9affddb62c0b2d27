/* formats: the packed-format writer. The layout of every plane is computed
 * from the descriptions at open, so plane bytes can be pwritten in any order
 * from any thread; commit checks that every plane byte was written exactly
 * once, combines the chunk crcs, and writes directory, name index, string
 * table, metadata and finally the header, then fsync + rename (fileio.h). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <zlib.h>

#include "pack_impl.h"

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* qsort context: no globals, so the names travel with the indices. */
typedef struct {
	uint32_t idx;
	const char *name;
} name_ref;

static int cmp_name(const void *a, const void *b)
{
	return strcmp(((const name_ref *)a)->name, ((const name_ref *)b)->name);
}

void pk_writer_free(qtk_pack_writer *w)
{
	if (!w)
		return;
	qtk_out_abort(&w->out);
	for (size_t i = 0; w->t && i < w->n; i++)
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			qtk_free(w->t[i].p[p].chunks);
	if (w->lock_init)
		pthread_mutex_destroy(&w->lock);
	qtk_free(w->t);
	qtk_free(w->strtab);
	qtk_free(w->index);
	qtk_free(w);
}

/* Check one description and fill its 2-D view and plane sizes. */
static qtk_err check_desc(const char *path, const qtk_pack_desc *d, pk_wtensor *t,
                          qtk_status *st)
{
	uint64_t sizes[QTK_PLANE_MAX];
	qtk_err rc;

	if (!d->name || !d->name[0] || strlen(d->name) > 65535)
		return qtk_fail(st, QTK_E_PK_NAME, "%s: tensor name empty or longer than 65535 bytes",
		                path);
	rc = pk_shape_2d(d->ndim, d->shape, &t->rows, &t->cols);
	if (rc)
		return qtk_fail(st, rc, "%s: tensor '%s': %s", path, d->name,
		                rc == QTK_E_PK_NDIM ? "more than 8 dimensions"
		                                    : "shape overflows");
	if ((unsigned)d->src_dtype >= QTK_DT_COUNT ||
	    (unsigned)d->layout.scale_dtype >= QTK_DT_COUNT ||
	    (unsigned)d->layout.dtype >= QTK_DT_COUNT)
		return qtk_fail(st, QTK_E_PK_LAYOUT, "%s: tensor '%s': unknown dtype", path, d->name);
	if (!qtk_q_scheme_get(d->layout.scheme))
		return qtk_fail(st, QTK_E_PK_SCHEME, "%s: tensor '%s': unknown scheme id %d",
		                path, d->name, (int)d->layout.scheme);
	rc = qtk_q_layout_check(&d->layout, t->rows, t->cols, st);
	if (rc) {
		qtk_status_prefix(st, d->name);
		qtk_status_prefix(st, path);
		if (st)
			st->code = QTK_E_PK_LAYOUT;
		return QTK_E_PK_LAYOUT;
	}
	if (qtk_q_plane_sizes(&d->layout, t->rows, t->cols, sizes) != QTK_OK)
		return qtk_fail(st, QTK_E_OVERFLOW, "%s: tensor '%s': plane size overflows",
		                path, d->name);
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		t->p[p].size = t->p[p].stored = sizes[p];
	t->d = *d;
	return QTK_OK;
}

/* Names into one string table, and the by-name index (rejecting dups). */
static qtk_err build_names(qtk_pack_writer *w, const char *path, qtk_status *st)
{
	uint64_t total = 0, off = 0;
	name_ref *refs;

	for (size_t i = 0; i < w->n; i++)
		total += strlen(w->t[i].d.name) + 1;
	if (total > UINT32_MAX)
		return qtk_fail(st, QTK_E_OVERFLOW, "%s: names exceed 4 GiB", path);
	w->strtab = qtk_malloc((size_t)total);
	w->index = qtk_malloc(w->n * sizeof *w->index);
	refs = qtk_malloc(w->n * sizeof *refs);
	if (!w->strtab || !w->index || !refs) {
		qtk_free(refs);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	for (size_t i = 0; i < w->n; i++) {
		size_t len = strlen(w->t[i].d.name);
		memcpy(w->strtab + off, w->t[i].d.name, len + 1);
		w->t[i].d.name = w->strtab + off;
		w->t[i].name_off = (uint32_t)off;
		w->t[i].name_len = (uint32_t)len;
		off += len + 1;
		refs[i].idx = (uint32_t)i;
		refs[i].name = w->t[i].d.name;
	}
	w->strtab_size = total;
	qsort(refs, w->n, sizeof *refs, cmp_name);
	for (size_t k = 0; k < w->n; k++) {
		if (k > 0 && !strcmp(refs[k].name, refs[k - 1].name)) {
			qtk_fail(st, QTK_E_PK_DUPLICATE, "%s: tensor '%s' appears twice", path,
			         refs[k].name);
			qtk_free(refs);
			return QTK_E_PK_DUPLICATE;
		}
		w->index[k] = refs[k].idx;
	}
	qtk_free(refs);
	return QTK_OK;
}

qtk_err pk_writer_create(qtk_pack_writer **out, const char *path,
                         const qtk_pack_desc *descs, size_t n, uint32_t align,
                         const qtk_write_opts *opts, qtk_status *st)
{
	qtk_pack_writer *w;
	uint64_t dir_end;
	qtk_err rc;

	*out = NULL;
	if (!path)
		return qtk_fail(st, QTK_E_ARG, "no output path");
	if (align < PK_PLANE_ALIGN || align > (1u << 30) || (align & (align - 1)))
		return qtk_fail(st, QTK_E_ARG, "%s: tensor alignment %u is not a power of two in [64, 2^30]",
		                path, align);
	if (n > UINT32_MAX || (n && !descs))
		return qtk_fail(st, QTK_E_ARG, "%s: bad tensor list", path);
	w = qtk_calloc(1, sizeof *w);
	if (!w)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	w->out.fd = -1;
	w->out.slot = -1;
	w->n = n;
	w->align = align;
	w->t = qtk_calloc(n ? n : 1, sizeof *w->t);
	if (!w->t) {
		pk_writer_free(w);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	for (size_t i = 0; i < n; i++) {
		rc = check_desc(path, &descs[i], &w->t[i], st);
		if (rc) {
			pk_writer_free(w);
			return rc;
		}
	}
	rc = build_names(w, path, st);
	if (rc) {
		pk_writer_free(w);
		return rc;
	}
	/* header, records, index, strings; then data on a tensor boundary */
	dir_end = PK_HEADER_SIZE + (uint64_t)n * (PK_RECORD_SIZE + 4) + w->strtab_size;
	w->data_offset = w->data_end = align_up(dir_end, align);
	if (pthread_mutex_init(&w->lock, NULL) != 0) {
		pk_writer_free(w);
		return qtk_fail(st, QTK_E_NOMEM, "%s: cannot create a lock", path);
	}
	w->lock_init = 1;
	rc = qtk_out_open(&w->out, path, opts, st);
	if (rc) {
		pk_writer_free(w);
		return rc;
	}
	*out = w;
	return QTK_OK;
}

uint64_t pk_place(qtk_pack_writer *w, size_t i, int p, uint64_t stored)
{
	int first = 1;

	for (int q = 0; q < p; q++)
		if (w->t[i].p[q].stored)
			first = 0;
	if (!stored)
		return 0;
	w->data_end = align_up(w->data_end, first ? w->align : PK_PLANE_ALIGN);
	w->t[i].p[p].offset = w->data_end;
	w->t[i].p[p].stored = stored;
	w->data_end += stored;
	return w->t[i].p[p].offset;
}

/* Reserve the data's blocks now, so a full disk fails at open rather than
 * after a long conversion. Filesystems without fallocate are fine. */
static qtk_err reserve_space(qtk_pack_writer *w, qtk_status *st)
{
	int err = qtk_fault_check(QTK_FAULT_WRITE);

	if (err)
		return qtk_fail(st, QTK_E_IO, "%s: cannot reserve %llu bytes: %s", w->out.path,
		                (unsigned long long)w->data_end, strerror(err));
	return qtk_out_reserve(&w->out, w->data_end, st);
}

qtk_err qtk_pack_writer_open_aligned(qtk_pack_writer **out, const char *path,
                                     const qtk_pack_desc *descs, size_t n,
                                     uint32_t tensor_align,
                                     const qtk_write_opts *opts, qtk_status *st)
{
	qtk_pack_writer *w;
	qtk_err rc;

	if (!out)
		return qtk_fail(st, QTK_E_ARG, "no writer pointer");
	*out = NULL;
	rc = pk_writer_create(&w, path, descs, n, tensor_align, opts, st);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++)
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			pk_place(w, i, p, w->t[i].p[p].size);
	/* sparse until written; the metadata goes after the data at commit */
	rc = qtk_out_truncate(&w->out, w->data_end, st);
	if (!rc)
		rc = reserve_space(w, st);
	if (rc) {
		pk_writer_free(w);
		return rc;
	}
	*out = w;
	return QTK_OK;
}

qtk_err qtk_pack_writer_open(qtk_pack_writer **out, const char *path,
                             const qtk_pack_desc *descs, size_t n,
                             const qtk_write_opts *opts, qtk_status *st)
{
	return qtk_pack_writer_open_aligned(out, path, descs, n, PK_DEFAULT_ALIGN, opts, st);
}

uint64_t qtk_pack_writer_size(const qtk_pack_writer *w)
{
	return w ? w->data_end : 0;
}

qtk_err qtk_pack_writer_put(qtk_pack_writer *w, size_t i, int plane, uint64_t off,
                            const void *buf, size_t len, qtk_status *st)
{
	pk_wplane *pl;
	uint64_t end;
	qtk_err rc;
	pk_chunk c;

	if (!w || i >= w->n || plane < 0 || plane >= QTK_PLANE_MAX || (len && !buf))
		return qtk_fail(st, QTK_E_ARG, "pack writer: bad put arguments");
	pl = &w->t[i].p[plane];
	if (__builtin_add_overflow(off, (uint64_t)len, &end) || end > pl->size)
		return qtk_fail(st, QTK_E_ARG, "%s: tensor '%s' plane %d: bytes [%llu, +%zu) outside its %llu bytes",
		                w->out.path, w->t[i].d.name, plane, (unsigned long long)off, len,
		                (unsigned long long)pl->size);
	if (len == 0)
		return QTK_OK;
	rc = qtk_out_pwrite(&w->out, buf, len, pl->offset + off, st);
	c.off = off;
	c.len = len;
	c.crc = rc ? 0 : pk_crc32(0, buf, len);
	pthread_mutex_lock(&w->lock);
	if (rc) {
		w->failed = 1;
	} else if (pl->nchunks == pl->cap) {
		size_t cap = pl->cap ? pl->cap * 2 : 4;
		pk_chunk *nc = qtk_realloc(pl->chunks, cap * sizeof *nc);
		if (!nc) {
			w->failed = 1;
			rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", w->out.path);
		} else {
			pl->chunks = nc;
			pl->cap = cap;
		}
	}
	if (!rc)
		pl->chunks[pl->nchunks++] = c;
	pthread_mutex_unlock(&w->lock);
	return rc;
}

static int cmp_chunk(const void *a, const void *b)
{
	const pk_chunk *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

/* Every byte written exactly once? Combine the crcs in offset order. */
static qtk_err close_plane(qtk_pack_writer *w, size_t i, int p, qtk_status *st)
{
	pk_wplane *pl = &w->t[i].p[p];
	uint64_t pos = 0;
	uint32_t crc = 0;

	if (pl->nchunks > 1)
		qsort(pl->chunks, pl->nchunks, sizeof *pl->chunks, cmp_chunk);
	for (size_t k = 0; k < pl->nchunks; k++) {
		if (pl->chunks[k].off != pos)
			return qtk_fail(st, QTK_E_PK_INCOMPLETE,
			                "%s: tensor '%s' plane %d: byte %llu %s", w->out.path,
			                w->t[i].d.name, p, (unsigned long long)
			                (pl->chunks[k].off < pos ? pl->chunks[k].off : pos),
			                pl->chunks[k].off < pos ? "written twice" : "never written");
		crc = (uint32_t)crc32_combine(crc, pl->chunks[k].crc, (z_off_t)pl->chunks[k].len);
		pos += pl->chunks[k].len;
	}
	if (pos != pl->size)
		return qtk_fail(st, QTK_E_PK_INCOMPLETE, "%s: tensor '%s' plane %d: byte %llu never written",
		                w->out.path, w->t[i].d.name, p, (unsigned long long)pos);
	pl->crc = crc;
	return QTK_OK;
}

static void encode_record(uint8_t *r, const pk_wtensor *t, int stored_crc)
{
	memset(r, 0, PK_RECORD_SIZE);
	pk_put32(r + R_NAME_OFF, t->name_off);
	pk_put32(r + R_NAME_LEN, t->name_len);
	r[R_NDIM] = (uint8_t)t->d.ndim;
	r[R_SCHEME] = (uint8_t)t->d.layout.scheme;
	r[R_SRC_DT] = (uint8_t)t->d.src_dtype;
	r[R_SCALE_DT] = (uint8_t)t->d.layout.scale_dtype;
	r[R_DTYPE] = (uint8_t)t->d.layout.dtype;
	pk_put32(r + R_GROUP, t->d.layout.group);
	pk_put32(r + R_QFLAGS, t->d.layout.flags);
	for (uint32_t d = 0; d < t->d.ndim; d++)
		pk_put64(r + R_SHAPE + 8 * d, t->d.shape[d]);
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		uint8_t *q = r + R_PLANES + R_PLANE_SIZE * p;
		pk_put64(q + P_OFFSET, t->p[p].offset);
		pk_put64(q + P_SIZE, t->p[p].size);
		pk_put64(q + P_STORED, t->p[p].stored);
		pk_put32(q + P_CRC, t->p[p].crc);
		pk_put32(q + P_FLAGS, t->p[p].flags);
	}
	if (stored_crc)
		pk_put32(r + R_STORED_CRC, t->stored_crc);
}

/* Directory section: records, index, strings (contiguous) and its crc. */
static qtk_err write_directory(qtk_pack_writer *w, uint32_t *crc, uint32_t *rflags,
                               qtk_status *st)
{
	uint64_t n = w->n, size = n * (PK_RECORD_SIZE + 4) + w->strtab_size;
	uint8_t *buf = qtk_malloc(size ? (size_t)size : 1);
	qtk_err rc;

	if (!buf)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", w->out.path);
	*rflags = 0;
	for (size_t i = 0; i < w->n; i++)
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			if (w->t[i].p[p].flags & QTK_PACK_PF_ZSTD)
				*rflags |= PK_RF_COMPRESSED;
	/* zstd frames: the plane crc32s cover the decompressed bytes only, and
	 * frames have bits a decoder ignores; the stored bytes get a crc too */
	for (size_t i = 0; i < w->n; i++)
		encode_record(buf + i * PK_RECORD_SIZE, &w->t[i], (*rflags & PK_RF_COMPRESSED) != 0);
	for (size_t k = 0; k < w->n; k++)
		pk_put32(buf + n * PK_RECORD_SIZE + 4 * k, w->index[k]);
	memcpy(buf + n * (PK_RECORD_SIZE + 4), w->strtab, (size_t)w->strtab_size);
	*crc = pk_crc32(0, buf, size);
	rc = qtk_out_pwrite(&w->out, buf, (size_t)size, PK_HEADER_SIZE, st);
	qtk_free(buf);
	return rc;
}

static void encode_header(uint8_t *h, const qtk_pack_writer *w, uint32_t rflags,
                          uint32_t dircrc, uint64_t meta_off, uint64_t meta_size,
                          uint32_t metacrc)
{
	uint64_t n = w->n;

	memset(h, 0, PK_HEADER_SIZE);
	memcpy(h + H_MAGIC, PK_MAGIC, 8);
	pk_put16(h + H_MAJOR, QTK_PACK_VERSION_MAJOR);
	pk_put16(h + H_MINOR, QTK_PACK_VERSION_MINOR);
	pk_put32(h + H_BOM, PK_BOM);
	pk_put32(h + H_HSIZE, PK_HEADER_SIZE);
	pk_put32(h + H_RFLAGS, rflags);
	pk_put32(h + H_OFLAGS, rflags & PK_RF_COMPRESSED ? PK_OF_STORED_CRC : 0);
	pk_put32(h + H_RECSIZE, PK_RECORD_SIZE);
	pk_put64(h + H_COUNT, n);
	pk_put64(h + H_DIR, PK_HEADER_SIZE);
	pk_put64(h + H_INDEX, PK_HEADER_SIZE + n * PK_RECORD_SIZE);
	pk_put64(h + H_STRTAB, PK_HEADER_SIZE + n * (PK_RECORD_SIZE + 4));
	pk_put64(h + H_STRSIZE, w->strtab_size);
	pk_put64(h + H_DATA, w->data_offset);
	pk_put64(h + H_DATASIZE, w->data_end - w->data_offset);
	pk_put64(h + H_META, meta_off);
	pk_put64(h + H_METASIZE, meta_size);
	pk_put64(h + H_FSIZE, meta_off + meta_size);
	pk_put32(h + H_ALIGN, w->align);
	pk_put32(h + H_DIRCRC, dircrc);
	pk_put32(h + H_METACRC, metacrc);
	pk_put32(h + H_HCRC, pk_crc32(0, h, H_HCRC));
}

static qtk_err check_meta(const char *path, const char *meta, qtk_status *st)
{
	json_error_t e;
	unsigned jm = qtk_json_begin();
	json_t *j = json_loads(meta, 0, &e);
	int ok = j && json_is_object(j);

	json_decref(j);
	if (qtk_json_end(jm))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory checking the metadata", path);
	if (!ok)
		return qtk_fail(st, QTK_E_ARG, "%s: metadata is not a JSON object (%s)", path,
		                j ? "not an object" : e.text);
	return QTK_OK;
}

qtk_err pk_writer_finish(qtk_pack_writer *w, const char *meta, qtk_status *st)
{
	uint8_t h[PK_HEADER_SIZE];
	uint64_t meta_off, meta_size;
	uint32_t dircrc = 0, metacrc, rflags = 0;
	qtk_err rc;

	if (!meta)
		meta = "{}";
	rc = check_meta(w->out.path, meta, st);
	meta_off = w->data_end;
	meta_size = strlen(meta) + 1; /* the NUL is part of the section */
	metacrc = pk_crc32(0, meta, meta_size);
	if (!rc)
		rc = write_directory(w, &dircrc, &rflags, st);
	if (!rc)
		rc = qtk_out_pwrite(&w->out, meta, (size_t)meta_size, meta_off, st);
	if (!rc) {
		encode_header(h, w, rflags, dircrc, meta_off, meta_size, metacrc);
		rc = qtk_out_pwrite(&w->out, h, sizeof h, 0, st);
	}
	if (!rc)
		rc = qtk_out_commit(&w->out, st);
	pk_writer_free(w);
	return rc;
}

qtk_err qtk_pack_writer_commit(qtk_pack_writer *w, const char *metadata_json,
                               qtk_status *st)
{
	qtk_err rc = QTK_OK;

	if (!w)
		return qtk_fail(st, QTK_E_ARG, "no writer");
	if (w->failed)
		rc = qtk_fail(st, QTK_E_IO, "%s: an earlier write failed; output not committed",
		              w->out.path);
	for (size_t i = 0; !rc && i < w->n; i++)
		for (int p = 0; !rc && p < QTK_PLANE_MAX; p++)
			rc = close_plane(w, i, p, st);
	if (rc) {
		pk_writer_free(w);
		return rc;
	}
	return pk_writer_finish(w, metadata_json, st);
}

void qtk_pack_writer_abort(qtk_pack_writer *w)
{
	pk_writer_free(w);
}
