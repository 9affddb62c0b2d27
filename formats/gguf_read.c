/* formats: the GGUF reader (v1, v2, v3). Maps the file and validates every
 * field before use: every count is checked against the bytes left before
 * anything is allocated for it (a count of 2^64-1 fails, it is not
 * allocated), every length and size is overflow-checked, tensor ranges are
 * checked for bounds, alignment and overlap, keys and names for duplicates.
 * v1 differs from v2/v3 only in the width of counts, string lengths and
 * dims (u32 instead of u64). Each malformation has its own QTK_E_GG_* code. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "fileio.h"
#include "gguf_impl.h"

/* F32/F16/BF16 tensors are converted in place from the little-endian file */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "qtk's GGUF reader assumes a little-endian host");

/* A name or offset with the index it belongs to, for sorting without a
 * global comparison context (opens may run on several threads). */
struct gg_ref {
	const char *s;
	uint64_t off;
	size_t i;
};

struct qtk_gguf_file {
	qtk_map map;            /* when opened from a path */
	const uint8_t *data;
	uint64_t size;
	char *name;             /* for messages */
	uint32_t version, align;
	uint64_t data_off;      /* start of the data section */
	qtk_gguf_kv *kv;
	size_t nkv;
	qtk_gguf_tensor *t;
	size_t n;
	struct gg_ref *t_sorted; /* tensors sorted by name */
	struct gg_ref *kv_sorted; /* KVs sorted by key */
	char *strs;             /* NUL-terminated keys and names */
	uint64_t *offs;         /* string-array element offsets, all arrays */
};

/* ---- value types -------------------------------------------------- */

static const char *const vt_names[QTK_GGUF_VTYPE_COUNT] = {
	"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string",
	"array", "u64", "i64", "f64",
};
static const uint8_t vt_size[QTK_GGUF_VTYPE_COUNT] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

const char *qtk_gguf_vtype_name(uint32_t v)
{
	return v < QTK_GGUF_VTYPE_COUNT ? vt_names[v] : NULL;
}

uint32_t qtk_gg_scalar_size(uint32_t v)
{
	return v < QTK_GGUF_VTYPE_COUNT ? vt_size[v] : 0;
}

/* ---- the cursor ----------------------------------------------------- */

typedef struct {
	qtk_gguf_file *f;
	uint64_t pos;
	unsigned wide;          /* bytes of counts/lengths: 4 (v1) or 8 */
	qtk_status *st;
} cur;

static uint64_t left(const cur *c) { return c->f->size - c->pos; }

/* Read a count or length (u32 in v1, u64 after). */
static qtk_err rd_len(cur *c, uint64_t *v, qtk_err code, const char *what, const char *whose)
{
	if (left(c) < c->wide)
		return qtk_fail(c->st, code, "%s: %s%s%s: %s field at %llu past the end of the file",
		                c->f->name, whose ? "'" : "", whose ? whose : "", whose ? "'" : "",
		                what, (unsigned long long)c->pos);
	*v = c->wide == 4 ? gg_le32(c->f->data + c->pos) : gg_le64(c->f->data + c->pos);
	c->pos += c->wide;
	return QTK_OK;
}

static qtk_err rd_u32(cur *c, uint32_t *v, qtk_err code, const char *what, const char *whose)
{
	if (left(c) < 4)
		return qtk_fail(c->st, code, "%s: '%s': %s at %llu past the end of the file",
		                c->f->name, whose ? whose : "?", what, (unsigned long long)c->pos);
	*v = gg_le32(c->f->data + c->pos);
	c->pos += 4;
	return QTK_OK;
}

/* A string: length, then bytes (all inside the file). */
static qtk_err rd_str(cur *c, const uint8_t **s, uint64_t *len, const char *what, const char *whose)
{
	QTK_TRY(rd_len(c, len, QTK_E_GG_STRING, what, whose));
	if (*len > left(c))
		return qtk_fail(c->st, QTK_E_GG_STRING,
		                "%s: %s%s%s%s length %llu at %llu runs past the end of the file (%llu bytes left)",
		                c->f->name, whose ? "'" : "", whose ? whose : "", whose ? "': " : "",
		                what, (unsigned long long)*len, (unsigned long long)(c->pos - c->wide),
		                (unsigned long long)left(c));
	*s = c->f->data + c->pos;
	c->pos += *len;
	return QTK_OK;
}

/* A key or tensor name: non-empty, no NUL (we hand out C strings). */
static qtk_err rd_name(cur *c, const uint8_t **s, uint64_t *len, const char *what)
{
	QTK_TRY(rd_str(c, s, len, what, NULL));
	if (*len == 0)
		return qtk_fail(c->st, QTK_E_GG_NAME, "%s: empty %s at %llu", c->f->name, what,
		                (unsigned long long)(c->pos - c->wide));
	if (memchr(*s, 0, (size_t)*len))
		return qtk_fail(c->st, QTK_E_GG_NAME, "%s: %s '%.*s' contains a NUL byte", c->f->name,
		                what, (int)strnlen((const char *)*s, (size_t)*len), (const char *)*s);
	return QTK_OK;
}

/* Skip (validating) one value of type vt; depth counts array nesting.
 * nstr counts string-array elements (for the offsets table). */
static qtk_err skip_value(cur *c, uint32_t vt, int depth, const char *key, uint64_t *nstr);

static qtk_err skip_array(cur *c, int depth, const char *key, uint32_t *et, uint64_t *count,
                          uint64_t *nstr)
{
	uint64_t min;

	if (depth >= GG_MAX_NEST)
		return qtk_fail(c->st, QTK_E_GG_ARRAY, "%s: KV '%s': arrays nested deeper than %d",
		                c->f->name, key, GG_MAX_NEST);
	QTK_TRY(rd_u32(c, et, QTK_E_GG_KV_TYPE, "array element type", key));
	if (*et >= QTK_GGUF_VTYPE_COUNT)
		return qtk_fail(c->st, QTK_E_GG_KV_TYPE, "%s: KV '%s': unknown array element type %u",
		                c->f->name, key, *et);
	QTK_TRY(rd_len(c, count, QTK_E_GG_COUNT, "array count", key));
	/* the least each element can take: its size, or its length field(s) */
	min = *et == QTK_GGUF_STRING ? c->wide : *et == QTK_GGUF_ARRAY ? 4 + c->wide : vt_size[*et];
	if (*count > left(c) / min)
		return qtk_fail(c->st, QTK_E_GG_COUNT,
		                "%s: KV '%s': array count %llu of %s does not fit the %llu bytes left",
		                c->f->name, key, (unsigned long long)*count, vt_names[*et],
		                (unsigned long long)left(c));
	if (*et == QTK_GGUF_BOOL)
		for (uint64_t i = 0; i < *count; i++)
			if (c->f->data[c->pos + i] > 1)
				return qtk_fail(c->st, QTK_E_GG_BOOL,
				                "%s: KV '%s': bool array element %llu is %u, not 0 or 1",
				                c->f->name, key, (unsigned long long)i, c->f->data[c->pos + i]);
	if (*et != QTK_GGUF_STRING && *et != QTK_GGUF_ARRAY) {
		c->pos += *count * min;
		return QTK_OK;
	}
	if (*et == QTK_GGUF_STRING && depth == 0)
		*nstr += *count;
	for (uint64_t i = 0; i < *count; i++)
		QTK_TRY(skip_value(c, *et, depth + 1, key, nstr));
	return QTK_OK;
}

static qtk_err skip_value(cur *c, uint32_t vt, int depth, const char *key, uint64_t *nstr)
{
	const uint8_t *s;
	uint64_t len, count;
	uint32_t et;

	if (vt == QTK_GGUF_STRING)
		return rd_str(c, &s, &len, "string", key);
	if (vt == QTK_GGUF_ARRAY)
		return skip_array(c, depth, key, &et, &count, nstr);
	if (vt >= QTK_GGUF_VTYPE_COUNT)
		return qtk_fail(c->st, QTK_E_GG_KV_TYPE, "%s: KV '%s': unknown value type %u",
		                c->f->name, key, vt);
	if (left(c) < vt_size[vt])
		return qtk_fail(c->st, QTK_E_GG_COUNT, "%s: KV '%s': %s value past the end of the file",
		                c->f->name, key, vt_names[vt]);
	/* the spec: 0 is false, 1 is true, anything else makes the file invalid */
	if (vt == QTK_GGUF_BOOL && c->f->data[c->pos] > 1)
		return qtk_fail(c->st, QTK_E_GG_BOOL, "%s: KV '%s': bool value %u, not 0 or 1",
		                c->f->name, key, c->f->data[c->pos]);
	c->pos += vt_size[vt];
	return QTK_OK;
}

/* ---- parsing -------------------------------------------------------- */

static int cmp_name(const void *a, const void *b)
{
	return strcmp(((const struct gg_ref *)a)->s, ((const struct gg_ref *)b)->s);
}

static int cmp_off(const void *a, const void *b)
{
	uint64_t x = ((const struct gg_ref *)a)->off, y = ((const struct gg_ref *)b)->off;
	return x < y ? -1 : x > y;
}

static qtk_err parse_header(cur *c, uint64_t *nt, uint64_t *nkv)
{
	qtk_gguf_file *f = c->f;

	if (f->size < 8)
		return qtk_fail(c->st, QTK_E_GG_TOO_SMALL, "%s: %llu bytes, shorter than a GGUF header",
		                f->name, (unsigned long long)f->size);
	if (memcmp(f->data, GG_MAGIC, 4) != 0)
		return qtk_fail(c->st, QTK_E_GG_MAGIC, "%s: not a GGUF file (bad magic)", f->name);
	f->version = gg_le32(f->data + 4);
	if (f->version < 1 || f->version > 3)
		return qtk_fail(c->st, QTK_E_GG_VERSION, "%s: GGUF version %u; qtk reads 1, 2 and 3",
		                f->name, f->version);
	c->wide = f->version == 1 ? 4 : 8;
	c->pos = 8;
	if (f->size < 8 + 2ull * c->wide)
		return qtk_fail(c->st, QTK_E_GG_TOO_SMALL, "%s: %llu bytes, shorter than a GGUF v%u header",
		                f->name, (unsigned long long)f->size, f->version);
	QTK_TRY(rd_len(c, nt, QTK_E_GG_COUNT, "tensor count", NULL));
	QTK_TRY(rd_len(c, nkv, QTK_E_GG_COUNT, "KV count", NULL));
	/* a KV takes at least key length + 1 byte + type + 1 byte; a tensor
	 * info at least name length + 1 + n_dims + 1 dim + type + offset */
	if (*nkv > left(c) / (c->wide + 6))
		return qtk_fail(c->st, QTK_E_GG_COUNT, "%s: KV count %llu does not fit a %llu-byte file",
		                f->name, (unsigned long long)*nkv, (unsigned long long)f->size);
	if (*nt > left(c) / (2ull * c->wide + 17))
		return qtk_fail(c->st, QTK_E_GG_COUNT, "%s: tensor count %llu does not fit a %llu-byte file",
		                f->name, (unsigned long long)*nt, (unsigned long long)f->size);
	return QTK_OK;
}

/* The spec's rules for keys: ASCII (printable here: no control bytes), at
 * most 65535 bytes. */
static qtk_err check_key(cur *c, const uint8_t *s, uint64_t len)
{
	if (len > 65535)
		return qtk_fail(c->st, QTK_E_GG_NAME, "%s: key of %llu bytes at %llu (at most 65535)",
		                c->f->name, (unsigned long long)len,
		                (unsigned long long)(c->pos - len - c->wide));
	for (uint64_t i = 0; i < len; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return qtk_fail(c->st, QTK_E_GG_NAME,
			                "%s: key '%.*s' has byte 0x%02x at %llu (keys are printable ASCII)",
			                c->f->name, (int)i, (const char *)s, s[i],
			                (unsigned long long)i);
	return QTK_OK;
}

/* Pass 1 over the KVs: validate, note where each is, count name bytes and
 * string-array elements. Pass 2 (fill_kvs) fills the records. */
static qtk_err parse_kvs(cur *c, uint64_t nkv, uint64_t *namebytes, uint64_t *nstr)
{
	qtk_gguf_file *f = c->f;
	char key[96];

	for (uint64_t i = 0; i < nkv; i++) {
		qtk_gguf_kv *kv = &f->kv[i];
		const uint8_t *s;
		uint64_t len, start;

		QTK_TRY(rd_name(c, &s, &len, "key"));
		QTK_TRY(check_key(c, s, len));
		snprintf(key, sizeof key, "%.*s", (int)(len < 80 ? len : 80), (const char *)s);
		kv->key = (const char *)s;          /* fixed up in fill */
		kv->count = len;                    /* key length until fill */
		*namebytes += len + 1;
		QTK_TRY(rd_u32(c, &kv->type, QTK_E_GG_KV_TYPE, "value type", key));
		if (kv->type >= QTK_GGUF_VTYPE_COUNT)
			return qtk_fail(c->st, QTK_E_GG_KV_TYPE, "%s: KV '%s': unknown value type %u",
			                f->name, key, kv->type);
		start = c->pos;
		kv->data = f->data + start;
		QTK_TRY(skip_value(c, kv->type, 0, key, nstr));
		kv->size = c->pos - start;
	}
	return QTK_OK;
}

static qtk_err parse_infos(cur *c, uint64_t *namebytes)
{
	qtk_gguf_file *f = c->f;
	char name[96];

	for (size_t i = 0; i < f->n; i++) {
		qtk_gguf_tensor *t = &f->t[i];
		const uint8_t *s;
		uint64_t len;

		QTK_TRY(rd_name(c, &s, &len, "tensor name"));
		snprintf(name, sizeof name, "%.*s", (int)(len < 80 ? len : 80), (const char *)s);
		t->name = (const char *)s;
		t->nelem = len;                     /* name length until fill */
		*namebytes += len + 1;
		QTK_TRY(rd_u32(c, &t->n_dims, QTK_E_GG_NDIM, "n_dims", name));
		if (t->n_dims == 0 || t->n_dims > QTK_GGUF_READ_MAX_DIMS)
			return qtk_fail(c->st, QTK_E_GG_NDIM, "%s: tensor '%s': %u dims (1 to %d allowed)",
			                f->name, name, t->n_dims, QTK_GGUF_READ_MAX_DIMS);
		for (uint32_t d = 0; d < QTK_GGUF_READ_MAX_DIMS; d++)
			t->ne[d] = 1;
		for (uint32_t d = 0; d < t->n_dims; d++) {
			QTK_TRY(rd_len(c, &t->ne[d], QTK_E_GG_DIM, "dim", name));
			if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX)
				return qtk_fail(c->st, QTK_E_GG_DIM, "%s: tensor '%s': ne[%u] = %lld is %s",
				                f->name, name, d, (long long)t->ne[d],
				                t->ne[d] ? "negative" : "zero");
		}
		QTK_TRY(rd_u32(c, &t->type, QTK_E_GG_TYPE, "type", name));
		if (left(c) < 8)
			return qtk_fail(c->st, QTK_E_GG_COUNT, "%s: tensor '%s': offset past the end of the file",
			                f->name, name);
		t->offset = gg_le64(f->data + c->pos);
		c->pos += 8;
	}
	return QTK_OK;
}

/* Copy keys and names into one NUL-terminated arena; build string-array
 * offset tables. */
static qtk_err fill(qtk_gguf_file *f, unsigned wide, uint64_t namebytes, uint64_t nstr,
                    qtk_status *st)
{
	char *p;
	uint64_t *o;

	f->strs = qtk_malloc(namebytes ? (size_t)namebytes : 1);
	f->offs = qtk_malloc(nstr ? (size_t)nstr * sizeof *f->offs : 1);
	if (!f->strs || !f->offs)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", f->name);
	p = f->strs;
	o = f->offs;
	for (size_t i = 0; i < f->nkv; i++) {
		qtk_gguf_kv *kv = &f->kv[i];
		memcpy(p, kv->key, (size_t)kv->count);
		p[kv->count] = 0;
		kv->key = p;
		p += kv->count + 1;
		kv->count = 1;
		kv->arr_type = 0;
		kv->str_off_ = NULL;
		kv->len_bytes_ = wide;
		if (kv->type == QTK_GGUF_STRING) {
			kv->count = wide == 4 ? gg_le32(kv->data) : gg_le64(kv->data);
			kv->data += wide;
		} else if (kv->type == QTK_GGUF_ARRAY) {
			kv->arr_type = gg_le32(kv->data);
			kv->count = wide == 4 ? gg_le32(kv->data + 4) : gg_le64(kv->data + 4);
			kv->data += 4 + wide;
			if (kv->arr_type == QTK_GGUF_STRING) {
				uint64_t off = 0;
				kv->str_off_ = o;
				for (uint64_t j = 0; j < kv->count; j++) {
					const uint8_t *q = kv->data + off;
					*o++ = off;
					off += wide + (wide == 4 ? gg_le32(q) : gg_le64(q));
				}
			}
		}
	}
	for (size_t i = 0; i < f->n; i++) {
		qtk_gguf_tensor *t = &f->t[i];
		memcpy(p, t->name, (size_t)t->nelem);
		p[t->nelem] = 0;
		t->name = p;
		p += t->nelem + 1;
	}
	return QTK_OK;
}

static qtk_err check_dups(qtk_gguf_file *f, qtk_status *st)
{
	for (size_t i = 0; i < f->nkv; i++)
		f->kv_sorted[i] = (struct gg_ref){ f->kv[i].key, 0, i };
	qsort(f->kv_sorted, f->nkv, sizeof *f->kv_sorted, cmp_name);
	for (size_t i = 1; i < f->nkv; i++)
		if (!strcmp(f->kv_sorted[i].s, f->kv_sorted[i - 1].s))
			return qtk_fail(st, QTK_E_GG_DUP_KEY, "%s: KV '%s' appears twice", f->name,
			                f->kv_sorted[i].s);
	for (size_t i = 0; i < f->n; i++)
		f->t_sorted[i] = (struct gg_ref){ f->t[i].name, 0, i };
	qsort(f->t_sorted, f->n, sizeof *f->t_sorted, cmp_name);
	for (size_t i = 1; i < f->n; i++)
		if (!strcmp(f->t_sorted[i].s, f->t_sorted[i - 1].s))
			return qtk_fail(st, QTK_E_GG_DUP_TENSOR, "%s: tensor '%s' appears twice", f->name,
			                f->t_sorted[i].s);
	return QTK_OK;
}

static qtk_err check_alignment(qtk_gguf_file *f, qtk_status *st)
{
	const qtk_gguf_kv *kv = qtk_gguf_kv_find(f, "general.alignment");
	uint32_t a;

	f->align = QTK_GGUF_DEFAULT_ALIGN;
	if (!kv)
		return QTK_OK;
	if (kv->type != QTK_GGUF_U32)
		return qtk_fail(st, QTK_E_GG_ALIGNMENT, "%s: KV 'general.alignment' is %s, not u32",
		                f->name, vt_names[kv->type]);
	a = gg_le32(kv->data);
	if (a == 0 || (a & (a - 1)))
		return qtk_fail(st, QTK_E_GG_ALIGNMENT,
		                "%s: KV 'general.alignment' = %u is not a power of two", f->name, a);
	if (a > QTK_GGUF_MAX_ALIGN)
		return qtk_fail(st, QTK_E_GG_ALIGNMENT,
		                "%s: KV 'general.alignment' = %u is larger than %u, the most qtk accepts (a page on any common platform)",
		                f->name, a, QTK_GGUF_MAX_ALIGN);
	f->align = a;
	return QTK_OK;
}

/* Shapes, sizes, bounds, alignment and overlap of every tensor. */
static qtk_err check_tensors(qtk_gguf_file *f, uint64_t end_of_infos, qtk_status *st)
{
	uint64_t pad = end_of_infos % f->align, avail;
	struct gg_ref *ix;

	if (__builtin_add_overflow(end_of_infos, pad ? f->align - pad : 0, &f->data_off))
		return qtk_fail(st, QTK_E_GG_BOUNDS, "%s: data section offset overflows", f->name);
	if (f->data_off > f->size) {
		/* no data section at all: only possible when no tensor needs one */
		if (f->n)
			return qtk_fail(st, QTK_E_GG_BOUNDS,
			                "%s: data section at %llu starts past the end of the file (%llu bytes)",
			                f->name, (unsigned long long)f->data_off, (unsigned long long)f->size);
		f->data_off = f->size;
	}
	avail = f->size - f->data_off;
	for (size_t i = 0; i < f->n; i++) {
		qtk_gguf_tensor *t = &f->t[i];
		const qtk_ggml_type_info *ty = qtk_ggml_type_get(t->type);
		uint64_t nel = 1, rows = 1, end;

		if (!ty || !ty->name)
			return qtk_fail(st, QTK_E_GG_TYPE, "%s: tensor '%s': unknown ggml type %u",
			                f->name, t->name, t->type);
		for (uint32_t d = 0; d < t->n_dims; d++)
			if (__builtin_mul_overflow(nel, t->ne[d], &nel) || nel > (uint64_t)INT64_MAX)
				return qtk_fail(st, QTK_E_GG_SHAPE,
				                "%s: tensor '%s': element count overflows at ne[%u] = %llu",
				                f->name, t->name, d, (unsigned long long)t->ne[d]);
		if (t->ne[0] % ty->blck)
			return qtk_fail(st, QTK_E_GG_BLOCK,
			                "%s: tensor '%s': ne[0] = %llu is not a multiple of %s's block of %u",
			                f->name, t->name, (unsigned long long)t->ne[0], ty->name, ty->blck);
		rows = nel / t->ne[0];
		if (__builtin_mul_overflow(t->ne[0] / ty->blck, (uint64_t)ty->bytes, &t->nbytes) ||
		    __builtin_mul_overflow(t->nbytes, rows, &t->nbytes))
			return qtk_fail(st, QTK_E_GG_SHAPE, "%s: tensor '%s': byte size overflows",
			                f->name, t->name);
		t->nelem = nel;
		t->rows = rows;
		t->cols = t->ne[0];
		t->ndim = t->n_dims;
		for (uint32_t d = 0; d < t->n_dims; d++)
			t->shape[t->n_dims - 1 - d] = t->ne[d];
		if (t->offset % f->align)
			return qtk_fail(st, QTK_E_GG_MISALIGNED,
			                "%s: tensor '%s': offset %llu is not a multiple of the alignment %u",
			                f->name, t->name, (unsigned long long)t->offset, f->align);
		if (__builtin_add_overflow(t->offset, t->nbytes, &end) || end > avail)
			return qtk_fail(st, QTK_E_GG_BOUNDS,
			                "%s: tensor '%s': data [%llu, +%llu) runs past the end of the %llu-byte data section",
			                f->name, t->name, (unsigned long long)t->offset,
			                (unsigned long long)t->nbytes, (unsigned long long)avail);
		t->file_offset = f->data_off + t->offset;
		t->data = f->data + t->file_offset;
		t->file_ = f->name;
	}
	/* t_sorted is free again after check_dups: reuse it by offset, then
	 * restore the name order */
	ix = f->t_sorted;
	for (size_t i = 0; i < f->n; i++)
		ix[i] = (struct gg_ref){ f->t[i].name, f->t[i].offset, i };
	qsort(ix, f->n, sizeof *ix, cmp_off);
	for (size_t i = 1; i < f->n; i++) {
		const qtk_gguf_tensor *a = &f->t[ix[i - 1].i], *b = &f->t[ix[i].i];
		if (a->offset + a->nbytes > b->offset)
			return qtk_fail(st, QTK_E_GG_OVERLAP, "%s: tensors '%s' and '%s' share bytes at %llu",
			                f->name, a->name, b->name, (unsigned long long)b->offset);
	}
	qsort(ix, f->n, sizeof *ix, cmp_name);
	return QTK_OK;
}

static qtk_err parse(qtk_gguf_file *f, qtk_status *st)
{
	cur c = { .f = f, .st = st };
	uint64_t nt, nkv, namebytes = 0, nstr = 0;

	QTK_TRY(parse_header(&c, &nt, &nkv));
	f->kv = qtk_calloc(nkv ? (size_t)nkv : 1, sizeof *f->kv);
	f->t = qtk_calloc(nt ? (size_t)nt : 1, sizeof *f->t);
	f->t_sorted = qtk_malloc((nt ? (size_t)nt : 1) * sizeof *f->t_sorted);
	f->kv_sorted = qtk_malloc((nkv ? (size_t)nkv : 1) * sizeof *f->kv_sorted);
	if (!f->kv || !f->t || !f->t_sorted || !f->kv_sorted)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", f->name);
	f->nkv = (size_t)nkv;
	f->n = (size_t)nt;
	QTK_TRY(parse_kvs(&c, nkv, &namebytes, &nstr));
	QTK_TRY(parse_infos(&c, &namebytes));
	QTK_TRY(fill(f, c.wide, namebytes, nstr, st));
	QTK_TRY(check_dups(f, st));
	QTK_TRY(check_alignment(f, st));
	return check_tensors(f, c.pos, st);
}

static qtk_err open_common(qtk_gguf_file *f, qtk_gguf_file **out, qtk_status *st)
{
	qtk_err rc = f->name ? parse(f, st) : qtk_fail(st, QTK_E_NOMEM, "out of memory");

	if (rc) {
		qtk_gguf_close(f);
		return rc;
	}
	*out = f;
	return QTK_OK;
}

qtk_err qtk_gguf_open_mem(const void *data, size_t size, const char *name,
                          qtk_gguf_file **out, qtk_status *st)
{
	qtk_gguf_file *f;

	*out = NULL;
	if (!(f = qtk_calloc(1, sizeof *f)))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", name ? name : "gguf");
	f->map.fd = -1;
	f->data = data;
	f->size = size;
	f->name = qtk_strdup(name ? name : "gguf");
	return open_common(f, out, st);
}

qtk_err qtk_gguf_open(const char *path, qtk_gguf_file **out, qtk_status *st)
{
	qtk_gguf_file *f;
	qtk_err rc;

	*out = NULL;
	if (!(f = qtk_calloc(1, sizeof *f)))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	rc = qtk_map_open(&f->map, path, st);
	if (rc) {
		qtk_free(f);
		return rc;
	}
	f->data = f->map.data;
	f->size = f->map.size;
	f->name = qtk_strdup(path);
	return open_common(f, out, st);
}

void qtk_gguf_close(qtk_gguf_file *f)
{
	if (!f)
		return;
	if (f->map.path)
		qtk_map_close(&f->map);
	qtk_free(f->kv);
	qtk_free(f->t);
	qtk_free(f->t_sorted);
	qtk_free(f->kv_sorted);
	qtk_free(f->strs);
	qtk_free(f->offs);
	qtk_free(f->name);
	qtk_free(f);
}

/* ---- accessors ------------------------------------------------------ */

uint32_t qtk_gguf_version(const qtk_gguf_file *f) { return f->version; }
uint32_t qtk_gguf_alignment(const qtk_gguf_file *f) { return f->align; }
uint64_t qtk_gguf_data_offset(const qtk_gguf_file *f) { return f->data_off; }
uint64_t qtk_gguf_file_size(const qtk_gguf_file *f) { return f->size; }
int qtk_gguf_fd(const qtk_gguf_file *f) { return f && f->map.data ? f->map.fd : -1; }
size_t qtk_gguf_kv_count(const qtk_gguf_file *f) { return f->nkv; }
size_t qtk_gguf_count(const qtk_gguf_file *f) { return f->n; }

const qtk_gguf_kv *qtk_gguf_kv_get(const qtk_gguf_file *f, size_t i)
{
	return i < f->nkv ? &f->kv[i] : NULL;
}

/* Binary search of a name-sorted index. */
static const struct gg_ref *find_ref(const struct gg_ref *r, size_t n, const char *name)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(r[mid].s, name);
		if (!c)
			return &r[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const qtk_gguf_kv *qtk_gguf_kv_find(const qtk_gguf_file *f, const char *key)
{
	const struct gg_ref *r = find_ref(f->kv_sorted, f->nkv, key);
	return r ? &f->kv[r->i] : NULL;
}

const qtk_gguf_tensor *qtk_gguf_get(const qtk_gguf_file *f, size_t i)
{
	return i < f->n ? &f->t[i] : NULL;
}

const qtk_gguf_tensor *qtk_gguf_find(const qtk_gguf_file *f, const char *name)
{
	const struct gg_ref *r = find_ref(f->t_sorted, f->n, name);
	return r ? &f->t[r->i] : NULL;
}

/* One scalar of type vt at p as int64 (ok=0 if not an integer or > INT64_MAX). */
static int scalar_int(uint32_t vt, const uint8_t *p, int64_t *v, uint64_t *u, int *neg)
{
	*neg = 0;
	switch (vt) {
	case QTK_GGUF_U8: case QTK_GGUF_BOOL: *u = p[0]; break;
	case QTK_GGUF_I8: *v = (int8_t)p[0]; goto sgn;
	case QTK_GGUF_U16: *u = gg_le16(p); break;
	case QTK_GGUF_I16: *v = (int16_t)gg_le16(p); goto sgn;
	case QTK_GGUF_U32: *u = gg_le32(p); break;
	case QTK_GGUF_I32: *v = (int32_t)gg_le32(p); goto sgn;
	case QTK_GGUF_U64: *u = gg_le64(p); break;
	case QTK_GGUF_I64: *v = (int64_t)gg_le64(p); goto sgn;
	default: return 0;
	}
	*v = (int64_t)*u;
	return 1;
sgn:
	*neg = *v < 0;
	*u = (uint64_t)*v;
	return 1;
}

static qtk_err find_kv(const qtk_gguf_file *f, const char *key, const qtk_gguf_kv **kv,
                       qtk_status *st)
{
	*kv = qtk_gguf_kv_find(f, key);
	if (!*kv)
		return qtk_fail(st, QTK_E_NOT_FOUND, "%s: no KV '%s'", f->name, key);
	return QTK_OK;
}

static qtk_err mismatch(const qtk_gguf_file *f, const qtk_gguf_kv *kv, const char *want,
                        qtk_status *st)
{
	return qtk_fail(st, QTK_E_GG_KV_MISMATCH, "%s: KV '%s' is %s, expected %s", f->name,
	                kv->key, vt_names[kv->type], want);
}

qtk_err qtk_gguf_get_uint(const qtk_gguf_file *f, const char *key, uint64_t *out, qtk_status *st)
{
	const qtk_gguf_kv *kv;
	int64_t v;
	int neg;

	QTK_TRY(find_kv(f, key, &kv, st));
	if (kv->type == QTK_GGUF_BOOL || !scalar_int(kv->type, kv->data, &v, out, &neg) || neg)
		return mismatch(f, kv, "a non-negative integer", st);
	return QTK_OK;
}

qtk_err qtk_gguf_get_int(const qtk_gguf_file *f, const char *key, int64_t *out, qtk_status *st)
{
	const qtk_gguf_kv *kv;
	uint64_t u;
	int neg;

	QTK_TRY(find_kv(f, key, &kv, st));
	if (kv->type == QTK_GGUF_BOOL || !scalar_int(kv->type, kv->data, out, &u, &neg) ||
	    (!neg && u > (uint64_t)INT64_MAX))
		return mismatch(f, kv, "an integer", st);
	return QTK_OK;
}

static double f32_at(const uint8_t *p)
{
	uint32_t u = gg_le32(p);
	float x;
	memcpy(&x, &u, 4);
	return (double)x;
}

static double f64_at(const uint8_t *p)
{
	uint64_t u = gg_le64(p);
	double x;
	memcpy(&x, &u, 8);
	return x;
}

qtk_err qtk_gguf_get_f64(const qtk_gguf_file *f, const char *key, double *out, qtk_status *st)
{
	const qtk_gguf_kv *kv;

	QTK_TRY(find_kv(f, key, &kv, st));
	if (kv->type == QTK_GGUF_F32)
		*out = f32_at(kv->data);
	else if (kv->type == QTK_GGUF_F64)
		*out = f64_at(kv->data);
	else
		return mismatch(f, kv, "f32 or f64", st);
	return QTK_OK;
}

qtk_err qtk_gguf_get_bool(const qtk_gguf_file *f, const char *key, int *out, qtk_status *st)
{
	const qtk_gguf_kv *kv;

	QTK_TRY(find_kv(f, key, &kv, st));
	if (kv->type != QTK_GGUF_BOOL)
		return mismatch(f, kv, "bool", st);
	*out = kv->data[0] != 0;
	return QTK_OK;
}

qtk_err qtk_gguf_get_str(const qtk_gguf_file *f, const char *key, const char **s,
                         uint64_t *len, qtk_status *st)
{
	const qtk_gguf_kv *kv;

	QTK_TRY(find_kv(f, key, &kv, st));
	if (kv->type != QTK_GGUF_STRING)
		return mismatch(f, kv, "string", st);
	*s = (const char *)kv->data;
	*len = kv->count;
	return QTK_OK;
}

qtk_err qtk_gguf_arr_str(const qtk_gguf_kv *kv, uint64_t i, const char **s, uint64_t *len)
{
	const uint8_t *p;

	if (kv->type != QTK_GGUF_ARRAY || kv->arr_type != QTK_GGUF_STRING || i >= kv->count ||
	    !kv->str_off_)
		return QTK_E_ARG;
	p = kv->data + kv->str_off_[i];
	*len = kv->len_bytes_ == 4 ? gg_le32(p) : gg_le64(p);
	*s = (const char *)p + kv->len_bytes_;
	return QTK_OK;
}

qtk_err qtk_gguf_arr_f64(const qtk_gguf_kv *kv, uint64_t i, double *out)
{
	uint32_t et = kv->arr_type;
	const uint8_t *p;
	int64_t v;
	uint64_t u;
	int neg;

	if (kv->type != QTK_GGUF_ARRAY || i >= kv->count || et >= QTK_GGUF_VTYPE_COUNT ||
	    !vt_size[et])
		return QTK_E_ARG;
	p = kv->data + i * vt_size[et];
	if (et == QTK_GGUF_F32)
		*out = f32_at(p);
	else if (et == QTK_GGUF_F64)
		*out = f64_at(p);
	else if (scalar_int(et, p, &v, &u, &neg))
		*out = neg ? (double)v : (double)u;
	else
		return QTK_E_ARG;
	return QTK_OK;
}

qtk_err qtk_gguf_arr_int(const qtk_gguf_kv *kv, uint64_t i, int64_t *out)
{
	uint32_t et = kv->arr_type;
	uint64_t u;
	int neg;

	if (kv->type != QTK_GGUF_ARRAY || i >= kv->count || et >= QTK_GGUF_VTYPE_COUNT ||
	    !vt_size[et] || !scalar_int(et, kv->data + i * vt_size[et], out, &u, &neg) ||
	    (!neg && u > (uint64_t)INT64_MAX))
		return QTK_E_ARG;
	return QTK_OK;
}

/* ---- dequantization ------------------------------------------------- */

/* F64 to f32 rounding to nearest; a finite value beyond f32's range is an
 * error (it would silently become Inf), NaN and Inf stay what they are. */
static qtk_err f64_to_f32(const qtk_gguf_tensor *t, uint64_t elem0, uint64_t n, float *dst,
                          qtk_status *st)
{
	const uint8_t *b = (const uint8_t *)t->data + 8 * elem0;

	for (uint64_t k = 0; k < n; k++) {
		double x = f64_at(b + 8 * k);

		dst[k] = (float)x;
		if (isinf(dst[k]) && !isinf(x))
			return qtk_fail(st, QTK_E_UNSUPPORTED,
			                "%s: tensor '%s': F64 element %llu = %g is outside the f32 range",
			                t->file_ ? t->file_ : "gguf", t->name,
			                (unsigned long long)(elem0 + k), x);
	}
	return QTK_OK;
}

qtk_err qtk_gguf_read_f32(const qtk_gguf_tensor *t, uint64_t elem0, uint64_t n, float *dst,
                          qtk_status *st)
{
	const uint8_t *b = t->data;
	const char *file = t->file_ ? t->file_ : "gguf";
	uint64_t end;
	float blk[QTK_GGUF_QK];
	const qtk_ggml_type_info *ty = qtk_ggml_type_get(t->type);

	if (__builtin_add_overflow(elem0, n, &end) || end > t->nelem)
		return qtk_fail(st, QTK_E_ARG, "%s: tensor '%s': elements [%llu, +%llu) outside its %llu",
		                file, t->name, (unsigned long long)elem0, (unsigned long long)n,
		                (unsigned long long)t->nelem);
	switch (t->type) {
	/* GGUF is little-endian, as are the hosts qtk builds for (x86-64);
	 * qtk_to_f32 is exact and picks its SIMD variant at run time */
	case QTK_GGML_F32:
		memcpy(dst, b + 4 * elem0, (size_t)n * 4);
		return QTK_OK;
	case QTK_GGML_F16:
		return qtk_to_f32(QTK_DT_F16, b + 2 * elem0, dst, (size_t)n) ? QTK_E_ARG : QTK_OK;
	case QTK_GGML_BF16:
		return qtk_to_f32(QTK_DT_BF16, b + 2 * elem0, dst, (size_t)n) ? QTK_E_ARG : QTK_OK;
	case QTK_GGML_F64:
		return f64_to_f32(t, elem0, n, dst, st);
	default:
		if (ty && ty->deq && ty->blck == QTK_GGUF_QK)
			break; /* the block types of the ggml type table */
		return qtk_fail(st, QTK_E_UNSUPPORTED,
		                "%s: tensor '%s': cannot dequantize ggml type %s (qtk reads F32, F16, BF16, F64, Q8_0, Q4_0, Q4_1)",
		                file, t->name, qtk_ggml_type_name(t->type));
	}
	for (uint64_t e = elem0; e < end;) {
		uint64_t bi = e / QTK_GGUF_QK, j0 = e % QTK_GGUF_QK;
		uint64_t take = QTK_GGUF_QK - j0;
		const uint8_t *blkp = b + bi * qtk_ggml_block_bytes(t->type);

		float *y;

		if (take > end - e)
			take = end - e;
		/* whole blocks straight into dst, partial ones through blk */
		y = take == QTK_GGUF_QK ? dst + (e - elem0) : blk;
		ty->deq(blkp, y);
		if (y == blk)
			memcpy(dst + (e - elem0), blk + j0, (size_t)take * sizeof(float));
		e += take;
	}
	return QTK_OK;
}
