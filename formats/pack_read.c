/* formats: the packed-format reader. Maps the file and validates every
 * field it will ever use (docs/format.md, "Reader checks") before handing
 * out a pointer: sizes are checked against the real file size before the
 * mapping is touched, all arithmetic is overflow-checked, and each kind of
 * malformation has its own QTK_E_PK_* code. Open is O(tensors): plane bytes
 * are read only by verify (or QTK_PACK_OPEN_VERIFY). */
#include "pack_impl.h"

struct qtk_pack_file {
	qtk_map map;             /* when opened from a path */
	const uint8_t *data;
	uint64_t size;
	char *name;              /* for messages */
	qtk_pack_tensor *t;      /* [n] decoded and validated */
	size_t n;
	const uint8_t *index;    /* [n] u32 tensor numbers sorted by name */
	const char *meta;        /* NUL-terminated JSON text */
	uint64_t meta_len;
	uint32_t minor;
	uint64_t *pad_from;      /* [n] start of the padding before tensor i's
	                          * first plane: the end of the plane before it,
	                          * or the start of the data section */
};

typedef struct {
	uint32_t recsize, align;
	uint64_t count, dir, index, strtab, strsize, data, datasize, meta, metasize;
} pk_hdr;

static qtk_err check_header(const qtk_pack_file *f, pk_hdr *h, qtk_status *st)
{
	const uint8_t *b = f->data;
	uint16_t major;
	uint32_t rflags, hsize;

	if (f->size < PK_HEADER_SIZE)
		return qtk_fail(st, QTK_E_PK_TOO_SMALL, "%s: %llu bytes, shorter than the %u-byte header",
		                f->name, (unsigned long long)f->size, PK_HEADER_SIZE);
	if (memcmp(b + H_MAGIC, PK_MAGIC, 8) != 0)
		return qtk_fail(st, QTK_E_PK_MAGIC, "%s: not a .qtk file (bad magic)", f->name);
	major = pk_get16(b + H_MAJOR);
	if (major != QTK_PACK_VERSION_MAJOR)
		return qtk_fail(st, QTK_E_PK_VERSION, "%s: format version %u.%u; this qtk reads version %u.x",
		                f->name, major, pk_get16(b + H_MINOR), QTK_PACK_VERSION_MAJOR);
	if (pk_get32(b + H_BOM) != PK_BOM)
		return qtk_fail(st, QTK_E_PK_BYTE_ORDER, "%s: byte order mark 0x%08x, expected 0x%08x (little-endian)",
		                f->name, pk_get32(b + H_BOM), PK_BOM);
	if (pk_crc32(0, b, H_HCRC) != pk_get32(b + H_HCRC))
		return qtk_fail(st, QTK_E_PK_HEADER_CRC, "%s: header checksum mismatch", f->name);
	rflags = pk_get32(b + H_RFLAGS);
	if (rflags & ~PK_RF_KNOWN)
		return qtk_fail(st, QTK_E_PK_VERSION, "%s: requires features 0x%x this qtk does not know",
		                f->name, rflags & ~PK_RF_KNOWN);
	hsize = pk_get32(b + H_HSIZE);
	h->recsize = pk_get32(b + H_RECSIZE);
	h->align = pk_get32(b + H_ALIGN);
	if (hsize < PK_HEADER_SIZE || hsize % 8 || h->recsize < PK_RECORD_SIZE ||
	    h->recsize % 8 || h->recsize > 65536 || h->align < PK_PLANE_ALIGN ||
	    h->align > (1u << 30) || (h->align & (h->align - 1)))
		return qtk_fail(st, QTK_E_PK_HEADER, "%s: header size %u, record size %u or alignment %u invalid",
		                f->name, hsize, h->recsize, h->align);
	if (pk_get64(b + H_FSIZE) != f->size)
		return qtk_fail(st, QTK_E_PK_FILE_SIZE, "%s: header says %llu bytes, file has %llu (truncated?)",
		                f->name, (unsigned long long)pk_get64(b + H_FSIZE),
		                (unsigned long long)f->size);
	h->count = pk_get64(b + H_COUNT);
	h->dir = pk_get64(b + H_DIR);
	h->index = pk_get64(b + H_INDEX);
	h->strtab = pk_get64(b + H_STRTAB);
	h->strsize = pk_get64(b + H_STRSIZE);
	h->data = pk_get64(b + H_DATA);
	h->datasize = pk_get64(b + H_DATASIZE);
	h->meta = pk_get64(b + H_META);
	h->metasize = pk_get64(b + H_METASIZE);
	if (h->dir != hsize)
		return qtk_fail(st, QTK_E_PK_SECTION, "%s: directory at %llu, expected right after the header",
		                f->name, (unsigned long long)h->dir);
	return QTK_OK;
}

const char *const pk_plane_names[QTK_PLANE_MAX] = { "codes", "scales", "biases", "dq" };

/* Index of the first nonzero byte of b[0, n), or n. */
static uint64_t first_nonzero(const uint8_t *b, uint64_t n)
{
	uint64_t k = 0, w;

	for (; k < n && ((uintptr_t)(b + k) & 7); k++)
		if (b[k])
			return k;
	for (; n - k >= 8; k += 8) {
		memcpy(&w, b + k, 8);
		if (w)
			break;
	}
	for (; k < n; k++)
		if (b[k])
			return k;
	return n;
}

qtk_err pk_check_zero(const qtk_pack_file *f, uint64_t a, uint64_t b, const char *where,
                      qtk_status *st)
{
	uint64_t k = a < b ? first_nonzero(f->data + a, b - a) : 0;

	if (a >= b || k == b - a)
		return QTK_OK;
	return qtk_fail(st, QTK_E_PK_PADDING, "%s: byte 0x%02x at offset %llu is not zero: it is padding [%llu, %llu) %s",
	                f->name, f->data[a + k], (unsigned long long)(a + k),
	                (unsigned long long)a, (unsigned long long)b, where);
}

/* Sections in order: header | records | index | strings | pad | data | meta. */
static qtk_err check_sections(const qtk_pack_file *f, const pk_hdr *h, qtk_status *st)
{
	uint64_t recbytes, idxbytes, end;

	/* each tensor costs at least recsize + 4 bytes of this file */
	if (h->count > f->size / ((uint64_t)h->recsize + 4) ||
	    __builtin_mul_overflow(h->count, (uint64_t)h->recsize, &recbytes) ||
	    __builtin_mul_overflow(h->count, (uint64_t)4, &idxbytes) || h->count > UINT32_MAX)
		return qtk_fail(st, QTK_E_PK_COUNT, "%s: tensor count %llu does not fit a %llu-byte file",
		                f->name, (unsigned long long)h->count, (unsigned long long)f->size);
	if (h->index != h->dir + recbytes || h->strtab != h->index + idxbytes)
		return qtk_fail(st, QTK_E_PK_SECTION, "%s: name index or string table misplaced", f->name);
	if (__builtin_add_overflow(h->strtab, h->strsize, &end) || end > h->data ||
	    h->data % h->align || __builtin_add_overflow(h->data, h->datasize, &end) ||
	    end > h->meta || __builtin_add_overflow(h->meta, h->metasize, &end) ||
	    end != f->size)
		return qtk_fail(st, QTK_E_PK_SECTION,
		                "%s: sections out of order or out of bounds (strings %llu+%llu, data %llu+%llu, metadata %llu+%llu, file %llu)",
		                f->name, (unsigned long long)h->strtab, (unsigned long long)h->strsize,
		                (unsigned long long)h->data, (unsigned long long)h->datasize,
		                (unsigned long long)h->meta, (unsigned long long)h->metasize,
		                (unsigned long long)f->size);
	if (pk_crc32(0, f->data + h->dir, h->strtab + h->strsize - h->dir) !=
	    pk_get32(f->data + H_DIRCRC))
		return qtk_fail(st, QTK_E_PK_DIR_CRC, "%s: directory checksum mismatch", f->name);
	if (h->metasize == 0 || f->data[h->meta + h->metasize - 1] != 0 ||
	    memchr(f->data + h->meta, 0, (size_t)h->metasize - 1) != NULL ||
	    pk_crc32(0, f->data + h->meta, h->metasize) != pk_get32(f->data + H_METACRC))
		return qtk_fail(st, QTK_E_PK_META, "%s: metadata section is not one NUL-terminated text with a matching crc32",
		                f->name);
	/* O(padding): less than tensor_align bytes in a file qtk wrote, on the
	 * pages the directory crc has just read */
	return pk_check_zero(f, h->strtab + h->strsize, h->data,
	                     "between the string table and the data section", st);
}

static qtk_err decode_name(const qtk_pack_file *f, const pk_hdr *h, const uint8_t *r,
                           size_t i, qtk_pack_tensor *t, qtk_status *st)
{
	uint64_t off = pk_get32(r + R_NAME_OFF), len = pk_get32(r + R_NAME_LEN);
	const char *s = (const char *)f->data + h->strtab;

	if (len == 0 || off + len >= h->strsize || s[off + len] != '\0' ||
	    memchr(s + off, 0, (size_t)len) != NULL)
		return qtk_fail(st, QTK_E_PK_NAME, "%s: tensor #%zu: name (offset %llu, length %llu) is empty, unterminated or outside the %llu-byte string table",
		                f->name, i, (unsigned long long)off, (unsigned long long)len,
		                (unsigned long long)h->strsize);
	t->name = s + off;
	return QTK_OK;
}

static qtk_err decode_layout(const qtk_pack_file *f, const uint8_t *r, qtk_pack_tensor *t,
                             qtk_status *st)
{
	qtk_err rc;

	t->ndim = r[R_NDIM];
	if (t->ndim > QTK_MAX_DIMS)
		return qtk_fail(st, QTK_E_PK_NDIM, "%s: tensor '%s': %u dimensions, at most %d",
		                f->name, t->name, t->ndim, QTK_MAX_DIMS);
	for (uint32_t d = 0; d < t->ndim; d++)
		t->shape[d] = pk_get64(r + R_SHAPE + 8 * d);
	if (pk_shape_2d(t->ndim, t->shape, &t->rows, &t->cols) != QTK_OK)
		return qtk_fail(st, QTK_E_PK_SHAPE, "%s: tensor '%s': a dimension is negative or the element count overflows",
		                f->name, t->name);
	if (!qtk_q_scheme_get((qtk_scheme_id)r[R_SCHEME]))
		return qtk_fail(st, QTK_E_PK_SCHEME, "%s: tensor '%s': unknown scheme id %u",
		                f->name, t->name, r[R_SCHEME]);
	if (r[R_SRC_DT] >= QTK_DT_COUNT || r[R_SCALE_DT] >= QTK_DT_COUNT ||
	    r[R_DTYPE] >= QTK_DT_COUNT)
		return qtk_fail(st, QTK_E_PK_LAYOUT, "%s: tensor '%s': unknown dtype id", f->name, t->name);
	t->src_dtype = (qtk_dtype)r[R_SRC_DT];
	t->layout.scheme = (qtk_scheme_id)r[R_SCHEME];
	t->layout.scale_dtype = (qtk_dtype)r[R_SCALE_DT];
	t->layout.dtype = (qtk_dtype)r[R_DTYPE];
	t->layout.group = pk_get32(r + R_GROUP);
	t->layout.flags = pk_get32(r + R_QFLAGS);
	rc = qtk_q_layout_check(&t->layout, t->rows, t->cols, st);
	if (rc) {
		qtk_status_prefix(st, t->name);
		qtk_status_prefix(st, "tensor");
		qtk_status_prefix(st, f->name);
		if (st)
			st->code = QTK_E_PK_LAYOUT;
		return QTK_E_PK_LAYOUT;
	}
	return QTK_OK;
}

static qtk_err decode_plane(const qtk_pack_file *f, const pk_hdr *h, const uint8_t *q,
                            qtk_pack_tensor *t, int p, uint64_t expect, int first,
                            uint64_t *prev_end, qtk_status *st)
{
	qtk_pack_plane *pl = &t->planes[p];
	uint64_t end;

	pl->offset = pk_get64(q + P_OFFSET);
	pl->size = pk_get64(q + P_SIZE);
	pl->stored_size = pk_get64(q + P_STORED);
	pl->crc32 = pk_get32(q + P_CRC);
	pl->flags = pk_get32(q + P_FLAGS);
	if (pl->size != expect)
		return qtk_fail(st, QTK_E_PK_PLANE_SIZE, "%s: tensor '%s': plane %d has %llu bytes, the scheme needs %llu",
		                f->name, t->name, p, (unsigned long long)pl->size,
		                (unsigned long long)expect);
	if (pl->size == 0) {
		if (pl->offset || pl->stored_size || pl->crc32 || pl->flags)
			return qtk_fail(st, QTK_E_PK_PLANE_FLAGS, "%s: tensor '%s': empty plane %d has non-zero fields",
			                f->name, t->name, p);
		return QTK_OK;
	}
	if ((pl->flags & ~(QTK_PACK_PF_ZSTD | QTK_PACK_PF_BYTESPLIT)) ||
	    ((pl->flags & QTK_PACK_PF_BYTESPLIT) &&
	     (!(pl->flags & QTK_PACK_PF_ZSTD) || !pk_plane_is16(&t->layout, p))) ||
	    ((pl->flags & QTK_PACK_PF_ZSTD) ? pl->stored_size == 0 : pl->stored_size != pl->size) ||
	    ((pl->flags & QTK_PACK_PF_ZSTD) && !(pk_get32(f->data + H_RFLAGS) & PK_RF_COMPRESSED)))
		return qtk_fail(st, QTK_E_PK_PLANE_FLAGS, "%s: tensor '%s': plane %d: flags 0x%x / stored size %llu inconsistent",
		                f->name, t->name, p, pl->flags, (unsigned long long)pl->stored_size);
	if (pl->offset % PK_PLANE_ALIGN || (first && pl->offset % h->align))
		return qtk_fail(st, QTK_E_PK_ALIGN, "%s: tensor '%s': plane %d at offset %llu is not %u-byte aligned",
		                f->name, t->name, p, (unsigned long long)pl->offset,
		                first ? h->align : PK_PLANE_ALIGN);
	if (pl->offset < h->data || __builtin_add_overflow(pl->offset, pl->stored_size, &end) ||
	    end > h->data + h->datasize)
		return qtk_fail(st, QTK_E_PK_BOUNDS, "%s: tensor '%s': plane %d [%llu, +%llu) outside the data section [%llu, %llu)",
		                f->name, t->name, p, (unsigned long long)pl->offset,
		                (unsigned long long)pl->stored_size, (unsigned long long)h->data,
		                (unsigned long long)(h->data + h->datasize));
	if (pl->offset < *prev_end)
		return qtk_fail(st, QTK_E_PK_OVERLAP, "%s: tensor '%s': plane %d at %llu overlaps (or precedes) the plane before it, which ends at %llu",
		                f->name, t->name, p, (unsigned long long)pl->offset,
		                (unsigned long long)*prev_end);
	*prev_end = end;
	pl->data = f->data + pl->offset;
	return QTK_OK;
}

static qtk_err decode_tensor(const qtk_pack_file *f, const pk_hdr *h, size_t i,
                             uint64_t *prev_end, qtk_status *st)
{
	const uint8_t *r = f->data + h->dir + (uint64_t)i * h->recsize;
	qtk_pack_tensor *t = &f->t[i];
	uint64_t sizes[QTK_PLANE_MAX];
	int first = 1;

	QTK_TRY(decode_name(f, h, r, i, t, st));
	QTK_TRY(decode_layout(f, r, t, st));
	if (qtk_q_plane_sizes(&t->layout, t->rows, t->cols, sizes) != QTK_OK)
		return qtk_fail(st, QTK_E_PK_SHAPE, "%s: tensor '%s': plane sizes overflow",
		                f->name, t->name);
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		QTK_TRY(decode_plane(f, h, r + R_PLANES + R_PLANE_SIZE * p, t, p, sizes[p],
		                     first, prev_end, st));
		if (sizes[p])
			first = 0;
	}
	return QTK_OK;
}

/* The name index: strictly increasing names, so also a permutation and
 * free of duplicates; checked in one pass. */
static qtk_err check_index(const qtk_pack_file *f, qtk_status *st)
{
	for (size_t k = 0; k < f->n; k++) {
		uint32_t a = pk_get32(f->index + 4 * k), b;
		int c;

		if (a >= f->n)
			return qtk_fail(st, QTK_E_PK_INDEX, "%s: name index entry %zu is %u, past %zu tensors",
			                f->name, k, a, f->n);
		if (k == 0)
			continue;
		b = pk_get32(f->index + 4 * (k - 1));
		c = strcmp(f->t[b].name, f->t[a].name);
		if (c == 0 && a != b)
			return qtk_fail(st, QTK_E_PK_DUPLICATE, "%s: tensor '%s' appears twice", f->name,
			                f->t[a].name);
		if (c >= 0)
			return qtk_fail(st, QTK_E_PK_INDEX, "%s: name index not sorted at entry %zu", f->name, k);
	}
	return QTK_OK;
}

static qtk_err parse(qtk_pack_file *f, unsigned flags, qtk_status *st)
{
	pk_hdr h;
	uint64_t prev_end;

	memset(&h, 0, sizeof h);
	QTK_TRY(check_header(f, &h, st));
	QTK_TRY(check_sections(f, &h, st));
	prev_end = h.data;
	f->minor = pk_get16(f->data + H_MINOR);
	f->n = (size_t)h.count;
	f->index = f->data + h.index;
	f->meta = (const char *)f->data + h.meta;
	f->meta_len = h.metasize - 1;
	/* count was bounded by the file size above */
	f->t = qtk_calloc(f->n ? f->n : 1, sizeof *f->t);
	f->pad_from = qtk_malloc((f->n ? f->n : 1) * sizeof *f->pad_from);
	if (!f->t || !f->pad_from)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", f->name);
	for (size_t i = 0; i < f->n; i++) {
		f->pad_from[i] = prev_end;
		QTK_TRY(decode_tensor(f, &h, i, &prev_end, st));
	}
	QTK_TRY(check_index(f, st));
	/* after the last plane up to the metadata: empty in a file qtk wrote,
	 * and next to the metadata open has just read. Padding between planes
	 * is checked by verify, which reads the planes around it. */
	QTK_TRY(pk_check_zero(f, prev_end, h.data + h.datasize,
	                      prev_end == h.data ? "in a data section that holds no plane"
	                                         : "after the last plane of the data section", st));
	QTK_TRY(pk_check_zero(f, h.data + h.datasize, h.meta,
	                      "between the data section and the metadata", st));
	if (flags & QTK_PACK_OPEN_VERIFY)
		QTK_TRY(qtk_pack_verify(f, st));
	return QTK_OK;
}

static qtk_err open_common(qtk_pack_file *f, unsigned flags, qtk_pack_file **out,
                           qtk_status *st)
{
	qtk_err rc = parse(f, flags, st);

	if (rc) {
		qtk_pack_close(f);
		return rc;
	}
	*out = f;
	return QTK_OK;
}

qtk_err qtk_pack_open_mem(const void *data, size_t size, const char *name,
                          unsigned flags, qtk_pack_file **out, qtk_status *st)
{
	qtk_pack_file *f;

	if (!out)
		return qtk_fail(st, QTK_E_ARG, "no output pointer");
	*out = NULL;
	if (!data && size)
		return qtk_fail(st, QTK_E_ARG, "no data");
	f = qtk_calloc(1, sizeof *f);
	if (f)
		f->name = qtk_strdup(name ? name : "(memory)");
	if (!f || !f->name) {
		qtk_free(f);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	f->map.fd = -1;
	f->data = data;
	f->size = size;
	return open_common(f, flags, out, st);
}

qtk_err qtk_pack_open(const char *path, unsigned flags, qtk_pack_file **out,
                      qtk_status *st)
{
	qtk_pack_file *f;
	qtk_err rc;

	if (!out || !path)
		return qtk_fail(st, QTK_E_ARG, "no path or output pointer");
	*out = NULL;
	f = qtk_calloc(1, sizeof *f);
	if (!f)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	f->map.fd = -1;
	rc = qtk_map_open(&f->map, path, st);
	if (!rc) {
		f->name = qtk_strdup(path);
		if (!f->name)
			rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	if (rc) {
		qtk_pack_close(f);
		return rc;
	}
	/* the size comes from fstat: nothing past it is ever touched */
	f->data = f->map.data;
	f->size = f->map.size;
	return open_common(f, flags, out, st);
}

void qtk_pack_close(qtk_pack_file *f)
{
	if (!f)
		return;
	if (f->map.fd >= 0 || f->map.data)
		qtk_map_close(&f->map);
	qtk_free(f->t);
	qtk_free(f->pad_from);
	qtk_free(f->name);
	qtk_free(f);
}

size_t qtk_pack_count(const qtk_pack_file *f)
{
	return f ? f->n : 0;
}

const qtk_pack_tensor *qtk_pack_get(const qtk_pack_file *f, size_t i)
{
	return f && i < f->n ? &f->t[i] : NULL;
}

const qtk_pack_tensor *qtk_pack_find(const qtk_pack_file *f, const char *name)
{
	size_t lo = 0, hi;

	if (!f || !name)
		return NULL;
	hi = f->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const qtk_pack_tensor *t = &f->t[pk_get32(f->index + 4 * mid)];
		int c = strcmp(t->name, name);

		if (c == 0)
			return t;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

size_t qtk_pack_index_of(const qtk_pack_file *f, const qtk_pack_tensor *t)
{
	return (size_t)(t - f->t);
}

const char *qtk_pack_metadata(const qtk_pack_file *f, size_t *len)
{
	if (len)
		*len = f ? (size_t)f->meta_len : 0;
	return f ? f->meta : NULL;
}

uint64_t qtk_pack_file_size(const qtk_pack_file *f)
{
	return f ? f->size : 0;
}

const void *qtk_pack_file_data(const qtk_pack_file *f)
{
	return f ? f->data : NULL;
}

uint32_t qtk_pack_version_minor(const qtk_pack_file *f)
{
	return f ? f->minor : 0;
}

const char *pk_file_name(const qtk_pack_file *f)
{
	return f->name;
}

uint64_t pk_pad_from(const qtk_pack_file *f, size_t i)
{
	return f->pad_from[i];
}
