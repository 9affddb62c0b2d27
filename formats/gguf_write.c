/* formats: the GGUF v3 writer. KVs are collected first (qtk_gguf_kvs, kept
 * serialized), then qtk_gguf_writer_open lays out header, KVs, tensor
 * infos and data (each tensor at a multiple of general.alignment, in the
 * order given), writes all of it but the tensor bytes and sizes the file.
 * Tensor bytes then go in with qtk_gguf_writer_put from any thread, in any
 * order; commit checks every byte was written once, fsyncs and renames
 * (formats/fileio.h: the output appears whole or not at all). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "fileio.h"
#include "gguf_impl.h"

/* ---- KV lists -------------------------------------------------------- */

struct qtk_gguf_kvs {
	uint8_t *buf;       /* serialized KV pairs, v3 layout */
	size_t len, cap;
	char **keys;
	size_t n, kcap;
	size_t *slot;       /* [nslot] key set, open addressing: 1 + index into
	                     * keys, 0 = empty; nslot a power of two >= 2n */
	size_t nslot;
	uint64_t seed;      /* per list, so no fixed set of keys collides */
	uint32_t align;     /* general.alignment when set, else 0 */
};

qtk_gguf_kvs *qtk_gguf_kvs_new(void)
{
	qtk_gguf_kvs *k = qtk_calloc(1, sizeof(qtk_gguf_kvs));
	uint64_t s;

	if (k) {
		/* the address (ASLR) mixed: only probe lengths depend on it */
		s = (uint64_t)(uintptr_t)k * 0x9e3779b97f4a7c15ull;
		k->seed = s ^ (s >> 29);
	}
	return k;
}

void qtk_gguf_kvs_free(qtk_gguf_kvs *k)
{
	if (!k)
		return;
	for (size_t i = 0; i < k->n; i++)
		qtk_free(k->keys[i]);
	qtk_free(k->keys);
	qtk_free(k->slot);
	qtk_free(k->buf);
	qtk_free(k);
}

/* FNV-1a from a seeded basis, then a 64-bit finalizer (murmur3's fmix). */
static uint64_t key_hash(const char *key, uint64_t seed)
{
	uint64_t h = 0xcbf29ce484222325ull ^ seed;

	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t *key_slot(const qtk_gguf_kvs *k, const char *key, uint64_t h)
{
	size_t m = k->nslot - 1, i = (size_t)h & m;

	while (k->slot[i] && strcmp(k->keys[k->slot[i] - 1], key))
		i = (i + 1) & m;
	return &k->slot[i];
}

/* Room for one more key at load <= 1/2 (rehash into twice the slots). */
static int slots_reserve(qtk_gguf_kvs *k)
{
	size_t ns = k->nslot ? k->nslot : 32, *old = k->slot, oldn = k->nslot;

	while (ns / 2 < k->n + 1)
		if (__builtin_mul_overflow(ns, 2, &ns))
			return -1;
	if (ns == k->nslot)
		return 0;
	if (ns > SIZE_MAX / sizeof *k->slot || !(k->slot = qtk_calloc(ns, sizeof *k->slot))) {
		k->slot = old;
		return -1;
	}
	k->nslot = ns;
	for (size_t i = 0; i < oldn; i++)
		if (old[i])
			*key_slot(k, k->keys[old[i] - 1], key_hash(k->keys[old[i] - 1], k->seed)) = old[i];
	qtk_free(old);
	return 0;
}

size_t qtk_gguf_kvs_count(const qtk_gguf_kvs *k) { return k->n; }

static int grow(qtk_gguf_kvs *k, size_t more)
{
	size_t need, cap;
	uint8_t *p;

	if (__builtin_add_overflow(k->len, more, &need))
		return -1;
	if (need <= k->cap)
		return 0;
	cap = k->cap ? k->cap : 256;
	while (cap < need)
		if (__builtin_mul_overflow(cap, 2, &cap))
			return -1;
	if (!(p = qtk_realloc(k->buf, cap)))
		return -1;
	k->buf = p;
	k->cap = cap;
	return 0;
}

static void put_bytes(qtk_gguf_kvs *k, const void *p, size_t n)
{
	memcpy(k->buf + k->len, p, n);
	k->len += n;
}

static void put_u32(qtk_gguf_kvs *k, uint32_t v)
{
	gg_put32(k->buf + k->len, v);
	k->len += 4;
}

static void put_u64(qtk_gguf_kvs *k, uint64_t v)
{
	gg_put64(k->buf + k->len, v);
	k->len += 8;
}

/* Start a KV: check the key, remember it, write key and type. */
static qtk_err kv_begin(qtk_gguf_kvs *k, const char *key, uint32_t type, size_t value_bytes,
                        qtk_status *st)
{
	size_t kl = key ? strlen(key) : 0, need, *slot;
	char **keys;

	if (!kl)
		return qtk_fail(st, QTK_E_GG_NAME, "GGUF writer: empty KV key");
	/* what the reader accepts: printable ASCII, at most 65535 bytes */
	if (kl > 65535)
		return qtk_fail(st, QTK_E_GG_NAME, "GGUF writer: KV key of %zu bytes (at most 65535)", kl);
	for (size_t i = 0; i < kl; i++)
		if ((unsigned char)key[i] < 0x20 || (unsigned char)key[i] > 0x7e)
			return qtk_fail(st, QTK_E_GG_NAME, "GGUF writer: KV key '%s' is not printable ASCII",
			                key);
	/* a hash set, not a scan: 80k KVs copied from a GGUF took 14 s */
	if (slots_reserve(k))
		return qtk_fail(st, QTK_E_NOMEM, "GGUF writer: out of memory");
	slot = key_slot(k, key, key_hash(key, k->seed));
	if (*slot)
		return qtk_fail(st, QTK_E_GG_DUP_KEY, "GGUF writer: KV '%s' added twice", key);
	if (__builtin_add_overflow(kl, 12, &need) || __builtin_add_overflow(need, value_bytes, &need))
		return qtk_fail(st, QTK_E_OVERFLOW, "GGUF writer: KV '%s' too large", key);
	if (k->n == k->kcap) {
		size_t nc = k->kcap ? 2 * k->kcap : 16;
		if (!(keys = qtk_realloc(k->keys, nc * sizeof *keys)))
			return qtk_fail(st, QTK_E_NOMEM, "GGUF writer: out of memory");
		k->keys = keys;
		k->kcap = nc;
	}
	if (grow(k, need) || !(k->keys[k->n] = qtk_strdup(key)))
		return qtk_fail(st, QTK_E_NOMEM, "GGUF writer: out of memory");
	*slot = ++k->n;
	put_u64(k, kl);
	put_bytes(k, key, kl);
	put_u32(k, type);
	return QTK_OK;
}

qtk_err qtk_gguf_kvs_add(qtk_gguf_kvs *k, const char *key, uint32_t type, const void *value,
                         qtk_status *st)
{
	uint32_t sz = qtk_gg_scalar_size(type);
	uint8_t le[8];

	if (!sz)
		return qtk_fail(st, QTK_E_ARG, "GGUF writer: KV '%s': type %u is not a scalar",
		                key ? key : "", type);
	if (type == QTK_GGUF_U32 && key && !strcmp(key, "general.alignment")) {
		uint32_t a;
		memcpy(&a, value, 4);
		if (!a || (a & (a - 1)))
			return qtk_fail(st, QTK_E_GG_ALIGNMENT,
			                "GGUF writer: general.alignment %u is not a power of two", a);
		if (a > QTK_GGUF_MAX_ALIGN)
			return qtk_fail(st, QTK_E_GG_ALIGNMENT,
			                "GGUF writer: general.alignment %u is larger than %u, the most qtk writes",
			                a, QTK_GGUF_MAX_ALIGN);
	} else if (key && !strcmp(key, "general.alignment"))
		return qtk_fail(st, QTK_E_GG_ALIGNMENT, "GGUF writer: general.alignment must be u32");
	if (type == QTK_GGUF_BOOL && *(const uint8_t *)value > 1)
		return qtk_fail(st, QTK_E_GG_BOOL, "GGUF writer: KV '%s': bool value %u, not 0 or 1",
		                key ? key : "", *(const uint8_t *)value);
	QTK_TRY(kv_begin(k, key, type, sz, st));
	/* host values to little-endian */
	if (sz == 1)
		memcpy(le, value, 1);
	else if (sz == 2) {
		uint16_t v;
		memcpy(&v, value, 2);
		gg_put16(le, v);
	} else if (sz == 4) {
		uint32_t v;
		memcpy(&v, value, 4);
		gg_put32(le, v);
		if (type == QTK_GGUF_U32 && !strcmp(key, "general.alignment"))
			k->align = v;
	} else {
		uint64_t v;
		memcpy(&v, value, 8);
		gg_put64(le, v);
	}
	put_bytes(k, le, sz);
	return QTK_OK;
}

qtk_err qtk_gguf_kvs_add_u32(qtk_gguf_kvs *k, const char *key, uint32_t v, qtk_status *st)
{
	return qtk_gguf_kvs_add(k, key, QTK_GGUF_U32, &v, st);
}

qtk_err qtk_gguf_kvs_add_i32(qtk_gguf_kvs *k, const char *key, int32_t v, qtk_status *st)
{
	return qtk_gguf_kvs_add(k, key, QTK_GGUF_I32, &v, st);
}

qtk_err qtk_gguf_kvs_add_f32(qtk_gguf_kvs *k, const char *key, float v, qtk_status *st)
{
	return qtk_gguf_kvs_add(k, key, QTK_GGUF_F32, &v, st);
}

qtk_err qtk_gguf_kvs_add_bool(qtk_gguf_kvs *k, const char *key, int v, qtk_status *st)
{
	uint8_t b = v != 0;
	return qtk_gguf_kvs_add(k, key, QTK_GGUF_BOOL, &b, st);
}

qtk_err qtk_gguf_kvs_add_str(qtk_gguf_kvs *k, const char *key, const char *s, size_t len,
                             qtk_status *st)
{
	QTK_TRY(kv_begin(k, key, QTK_GGUF_STRING, len + 8, st));
	put_u64(k, len);
	put_bytes(k, s, len);
	return QTK_OK;
}

qtk_err qtk_gguf_kvs_add_arr(qtk_gguf_kvs *k, const char *key, uint32_t elem_type,
                             const void *elems, size_t n, qtk_status *st)
{
	uint32_t sz = qtk_gg_scalar_size(elem_type);
	size_t bytes;
	const uint8_t *p = elems;

	if (!sz)
		return qtk_fail(st, QTK_E_ARG, "GGUF writer: KV '%s': array of type %u not supported here",
		                key ? key : "", elem_type);
	if (__builtin_mul_overflow(n, (size_t)sz, &bytes) || bytes > SIZE_MAX - 12)
		return qtk_fail(st, QTK_E_OVERFLOW, "GGUF writer: KV '%s' too large", key);
	for (size_t i = 0; elem_type == QTK_GGUF_BOOL && i < n; i++)
		if (p[i] > 1)
			return qtk_fail(st, QTK_E_GG_BOOL,
			                "GGUF writer: KV '%s': bool element %zu is %u, not 0 or 1",
			                key ? key : "", i, p[i]);
	QTK_TRY(kv_begin(k, key, QTK_GGUF_ARRAY, bytes + 12, st));
	put_u32(k, elem_type);
	put_u64(k, n);
	for (size_t i = 0; i < n; i++, p += sz) {
		uint8_t *o = k->buf + k->len;
		if (sz == 1)
			*o = *p;
		else if (sz == 2) {
			uint16_t v;
			memcpy(&v, p, 2);
			gg_put16(o, v);
		} else if (sz == 4) {
			uint32_t v;
			memcpy(&v, p, 4);
			gg_put32(o, v);
		} else {
			uint64_t v;
			memcpy(&v, p, 8);
			gg_put64(o, v);
		}
		k->len += sz;
	}
	return QTK_OK;
}

qtk_err qtk_gguf_kvs_add_arr_str(qtk_gguf_kvs *k, const char *key, const char *const *strs,
                                 const size_t *lens, size_t n, qtk_status *st)
{
	size_t bytes = 12;

	for (size_t i = 0; i < n; i++) {
		size_t l = lens ? lens[i] : strlen(strs[i]);
		if (__builtin_add_overflow(bytes, l + 8, &bytes))
			return qtk_fail(st, QTK_E_OVERFLOW, "GGUF writer: KV '%s' too large", key);
	}
	QTK_TRY(kv_begin(k, key, QTK_GGUF_ARRAY, bytes, st));
	put_u32(k, QTK_GGUF_STRING);
	put_u64(k, n);
	for (size_t i = 0; i < n; i++) {
		size_t l = lens ? lens[i] : strlen(strs[i]);
		put_u64(k, l);
		put_bytes(k, strs[i], l);
	}
	return QTK_OK;
}

/* Re-encode one validated value of type vt from a file whose lengths are
 * `wide` bytes into v3 form at the end of k's buffer (room reserved).
 * Returns the bytes consumed from src. */
static uint64_t copy_value(qtk_gguf_kvs *k, const uint8_t *src, uint32_t vt, unsigned wide)
{
	uint64_t n, used;
	uint32_t et, sz;

	if (vt == QTK_GGUF_STRING) {
		n = wide == 4 ? gg_le32(src) : gg_le64(src);
		put_u64(k, n);
		put_bytes(k, src + wide, (size_t)n);
		return wide + n;
	}
	if (vt != QTK_GGUF_ARRAY) {
		sz = qtk_gg_scalar_size(vt);
		put_bytes(k, src, sz);
		return sz;
	}
	et = gg_le32(src);
	n = wide == 4 ? gg_le32(src + 4) : gg_le64(src + 4);
	put_u32(k, et);
	put_u64(k, n);
	used = 4 + wide;
	if ((sz = qtk_gg_scalar_size(et)) != 0) {
		put_bytes(k, src + used, (size_t)(n * sz));
		return used + n * sz;
	}
	for (uint64_t i = 0; i < n; i++)
		used += copy_value(k, src + used, et, wide);
	return used;
}

qtk_err qtk_gguf_kvs_add_kv(qtk_gguf_kvs *k, const qtk_gguf_kv *kv, qtk_status *st)
{
	/* the value's bytes as in the file, from its type field on */
	const uint8_t *src;
	uint64_t bound;
	unsigned wide = kv->len_bytes_ ? kv->len_bytes_ : 8;

	if (kv->type == QTK_GGUF_STRING)
		src = kv->data - wide;
	else if (kv->type == QTK_GGUF_ARRAY)
		src = kv->data - 4 - wide;
	else
		src = kv->data;
	/* v1 -> v3 at most doubles each 4-byte length field */
	if (__builtin_mul_overflow(kv->size, (uint64_t)2, &bound) || bound > SIZE_MAX - 16)
		return qtk_fail(st, QTK_E_OVERFLOW, "GGUF writer: KV '%s' too large", kv->key);
	if (kv->type == QTK_GGUF_U32 && !strcmp(kv->key, "general.alignment"))
		return qtk_gguf_kvs_add(k, kv->key, kv->type, &(uint32_t){ gg_le32(kv->data) }, st);
	QTK_TRY(kv_begin(k, kv->key, kv->type, (size_t)bound + 16, st));
	copy_value(k, src, kv->type, wide);
	return QTK_OK;
}

/* ---- the writer ------------------------------------------------------ */

struct qtk_gguf_writer {
	qtk_outfile out;
	size_t n;
	uint64_t *off;          /* absolute file offset of each tensor's data */
	uint64_t *nbytes;
	uint64_t *written;      /* bytes put so far, under lock */
	char **names;
	pthread_mutex_t lock;
	int lock_ok;
	int failed;             /* a put failed: commit refuses */
};

static void writer_free(qtk_gguf_writer *w)
{
	if (!w)
		return;
	qtk_out_abort(&w->out);
	for (size_t i = 0; w->names && i < w->n; i++)
		qtk_free(w->names[i]);
	qtk_free(w->names);
	qtk_free(w->off);
	qtk_free(w->nbytes);
	qtk_free(w->written);
	if (w->lock_ok)
		pthread_mutex_destroy(&w->lock);
	qtk_free(w);
}

void qtk_gguf_writer_abort(qtk_gguf_writer *w)
{
	writer_free(w);
}

/* Byte size of one described tensor; validates the description. */
static qtk_err desc_bytes(const qtk_gguf_desc *d, uint64_t *bytes, qtk_status *st)
{
	uint32_t blck = qtk_ggml_block_elems(d->type), bb = qtk_ggml_block_bytes(d->type);
	uint64_t rows = 1;

	if (!d->name || !*d->name)
		return qtk_fail(st, QTK_E_GG_NAME, "GGUF writer: tensor with an empty name");
	if (!blck)
		return qtk_fail(st, QTK_E_GG_TYPE, "GGUF writer: tensor '%s': unknown ggml type %u",
		                d->name, d->type);
	if (d->n_dims == 0 || d->n_dims > QTK_GGUF_MAX_DIMS)
		return qtk_fail(st, QTK_E_GG_NDIM, "GGUF writer: tensor '%s': %u dims", d->name,
		                d->n_dims);
	for (uint32_t i = 0; i < d->n_dims; i++) {
		if (d->ne[i] == 0 || d->ne[i] > (uint64_t)INT64_MAX)
			return qtk_fail(st, QTK_E_GG_DIM, "GGUF writer: tensor '%s': ne[%u] = %llu",
			                d->name, i, (unsigned long long)d->ne[i]);
		if (i && __builtin_mul_overflow(rows, d->ne[i], &rows))
			return qtk_fail(st, QTK_E_GG_SHAPE, "GGUF writer: tensor '%s': size overflows",
			                d->name);
	}
	if (d->ne[0] % blck)
		return qtk_fail(st, QTK_E_GG_BLOCK,
		                "GGUF writer: tensor '%s': ne[0] = %llu is not a multiple of %s's block of %u",
		                d->name, (unsigned long long)d->ne[0], qtk_ggml_type_name(d->type), blck);
	if (__builtin_mul_overflow(d->ne[0] / blck, (uint64_t)bb, bytes) ||
	    __builtin_mul_overflow(*bytes, rows, bytes) || *bytes > (uint64_t)INT64_MAX)
		return qtk_fail(st, QTK_E_GG_SHAPE, "GGUF writer: tensor '%s': size overflows", d->name);
	return QTK_OK;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Check names are unique (sorted copy of the pointers). */
static qtk_err check_unique(qtk_gguf_writer *w, qtk_status *st)
{
	char **s = qtk_malloc((w->n ? w->n : 1) * sizeof *s);
	qtk_err rc = QTK_OK;

	if (!s)
		return qtk_fail(st, QTK_E_NOMEM, "GGUF writer: out of memory");
	memcpy(s, w->names, w->n * sizeof *s);
	qsort(s, w->n, sizeof *s, cmp_names);
	for (size_t i = 1; i < w->n && !rc; i++)
		if (!strcmp(s[i], s[i - 1]))
			rc = qtk_fail(st, QTK_E_GG_DUP_TENSOR, "GGUF writer: tensor '%s' given twice", s[i]);
	qtk_free(s);
	return rc;
}

static uint64_t align_up(uint64_t v, uint32_t a, int *ovf)
{
	uint64_t r = v % a;
	if (r && __builtin_add_overflow(v, a - r, &v))
		*ovf = 1;
	return v;
}

/* Serialize header + KVs + infos into a buffer of hdr_size bytes. */
static qtk_err build_meta(qtk_gguf_writer *w, const qtk_gguf_kvs *kvs, const qtk_gguf_desc *d,
                          uint32_t align, uint8_t **out, uint64_t *hdr_size, uint64_t *total,
                          const char *path, qtk_status *st)
{
	uint64_t size = 24 + (kvs ? kvs->len : 0), data = 0;
	int ovf = 0;
	uint8_t *b, *p;

	for (size_t i = 0; i < w->n; i++) {
		size_t nl = strlen(d[i].name);
		if (__builtin_add_overflow(size, 8 + nl + 4 + 8ull * d[i].n_dims + 4 + 8, &size))
			ovf = 1;
	}
	*hdr_size = align_up(size, align, &ovf);
	for (size_t i = 0; i < w->n; i++) {
		w->off[i] = data;
		if (__builtin_add_overflow(data, w->nbytes[i], &data))
			ovf = 1;
		data = align_up(data, align, &ovf);
	}
	if (ovf || __builtin_add_overflow(*hdr_size, data, total) || *hdr_size > SIZE_MAX)
		return qtk_fail(st, QTK_E_OVERFLOW, "%s: GGUF layout overflows", path);
	if (!(b = qtk_calloc(1, (size_t)*hdr_size)))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	memcpy(b, GG_MAGIC, 4);
	gg_put32(b + 4, 3);
	gg_put64(b + 8, w->n);
	gg_put64(b + 16, kvs ? kvs->n : 0);
	p = b + 24;
	if (kvs && kvs->len) {
		memcpy(p, kvs->buf, kvs->len);
		p += kvs->len;
	}
	for (size_t i = 0; i < w->n; i++) {
		size_t nl = strlen(d[i].name);
		gg_put64(p, nl);
		memcpy(p + 8, d[i].name, nl);
		p += 8 + nl;
		gg_put32(p, d[i].n_dims);
		p += 4;
		for (uint32_t j = 0; j < d[i].n_dims; j++, p += 8)
			gg_put64(p, d[i].ne[j]);
		gg_put32(p, d[i].type);
		gg_put64(p + 4, w->off[i]);
		p += 12;
		w->off[i] += *hdr_size;
	}
	*out = b;
	return QTK_OK;
}

qtk_err qtk_gguf_writer_open(qtk_gguf_writer **out, const char *path, const qtk_gguf_kvs *kvs,
                             const qtk_gguf_desc *descs, size_t n, const qtk_write_opts *opts,
                             qtk_status *st)
{
	qtk_gguf_writer *w;
	uint32_t align = kvs && kvs->align ? kvs->align : QTK_GGUF_DEFAULT_ALIGN;
	uint64_t hdr_size = 0, total = 0;
	uint8_t *meta = NULL;
	qtk_err rc;

	*out = NULL;
	if (!(w = qtk_calloc(1, sizeof *w)))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	w->out.fd = -1;
	w->out.slot = -1;
	w->n = n;
	w->off = qtk_calloc(n ? n : 1, sizeof *w->off);
	w->nbytes = qtk_calloc(n ? n : 1, sizeof *w->nbytes);
	w->written = qtk_calloc(n ? n : 1, sizeof *w->written);
	w->names = qtk_calloc(n ? n : 1, sizeof *w->names);
	if (!w->off || !w->nbytes || !w->written || !w->names) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		if ((rc = desc_bytes(&descs[i], &w->nbytes[i], st)))
			goto fail;
		if (!(w->names[i] = qtk_strdup(descs[i].name))) {
			rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
			goto fail;
		}
	}
	if ((rc = check_unique(w, st)) ||
	    (rc = build_meta(w, kvs, descs, align, &meta, &hdr_size, &total, path, st)))
		goto fail;
	if (pthread_mutex_init(&w->lock, NULL) != 0) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: cannot create a lock", path);
		goto fail;
	}
	w->lock_ok = 1;
	if ((rc = qtk_out_open(&w->out, path, opts, st)) ||
	    (rc = qtk_out_truncate(&w->out, total, st)) ||
	    (rc = qtk_out_pwrite(&w->out, meta, (size_t)hdr_size, 0, st)))
		goto fail;
	qtk_free(meta);
	*out = w;
	return QTK_OK;
fail:
	qtk_free(meta);
	writer_free(w);
	return rc;
}

uint64_t qtk_gguf_writer_tensor_bytes(const qtk_gguf_writer *w, size_t i)
{
	return i < w->n ? w->nbytes[i] : 0;
}

uint64_t qtk_gguf_writer_tensor_offset(const qtk_gguf_writer *w, size_t i)
{
	return i < w->n ? w->off[i] : 0;
}

qtk_err qtk_gguf_writer_put(qtk_gguf_writer *w, size_t i, uint64_t off, const void *buf,
                            size_t len, qtk_status *st)
{
	uint64_t end;
	qtk_err rc;

	if (i >= w->n)
		return qtk_fail(st, QTK_E_ARG, "%s: no tensor #%zu (%zu tensors)", w->out.path, i, w->n);
	if (__builtin_add_overflow(off, (uint64_t)len, &end) || end > w->nbytes[i])
		return qtk_fail(st, QTK_E_ARG, "%s: tensor '%s': bytes [%llu, +%zu) outside its %llu",
		                w->out.path, w->names[i], (unsigned long long)off, len,
		                (unsigned long long)w->nbytes[i]);
	rc = qtk_out_pwrite(&w->out, buf, len, w->off[i] + off, st);
	pthread_mutex_lock(&w->lock);
	if (rc)
		w->failed = 1;
	else
		w->written[i] += len;
	pthread_mutex_unlock(&w->lock);
	return rc;
}

qtk_err qtk_gguf_writer_commit(qtk_gguf_writer *w, qtk_status *st)
{
	qtk_err rc = QTK_OK;

	if (w->failed)
		rc = qtk_fail(st, QTK_E_IO, "%s: an earlier write failed", w->out.path);
	for (size_t i = 0; i < w->n && !rc; i++)
		if (w->written[i] != w->nbytes[i])
			rc = qtk_fail(st, QTK_E_GG_INCOMPLETE,
			              "%s: tensor '%s': %llu of %llu bytes written", w->out.path,
			              w->names[i], (unsigned long long)w->written[i],
			              (unsigned long long)w->nbytes[i]);
	if (!rc)
		rc = qtk_out_commit(&w->out, st);
	writer_free(w);
	return rc;
}
