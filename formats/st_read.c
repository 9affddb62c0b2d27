/* formats: safetensors reader — one file, a sharded index or a directory,
 * presented as one namespace of zero-copy tensor views (docs/safetensors.md). */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "fileio.h"
#include "qtk_formats.h"
#include "st_private.h"

struct qtk_st_file {
	char *path;                    /* the file or index opened */
	char *dir;
	size_t nshards;
	qtk_map *maps;
	size_t n, cap;
	qtk_st_tensor *t;
	const qtk_st_tensor **by_name; /* sorted by name, for find */
	size_t nmeta;
	char **meta;                   /* key, value, key, value ... */
	int borrowed;                  /* maps[0] is caller memory (open_mem) */
};

static char *dup_n(const char *s, size_t n)
{
	char *p = qtk_malloc(n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = 0;
	}
	return p;
}

/* Strict UTF-8: no overlongs, no surrogates, nothing past U+10FFFF. */
static int utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = s[i];
		size_t k;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			k = 1, cp = c & 0x1F, min = 0x80;
		} else if ((c & 0xF0) == 0xE0) {
			k = 2, cp = c & 0x0F, min = 0x800;
		} else if ((c & 0xF8) == 0xF0) {
			k = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return 0;
		}
		if (n - i <= k)
			return 0;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + j] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += k + 1;
	}
	return 1;
}

static int json_u64(const json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return 0;
	*out = (uint64_t)json_integer_value(v);
	return 1;
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

static int cmp_offset(const void *a, const void *b)
{
	const qtk_st_tensor *x = a, *y = b;
	if (x->shard != y->shard)
		return x->shard < y->shard ? -1 : 1;
	if (x->file_offset != y->file_offset)
		return x->file_offset < y->file_offset ? -1 : 1;
	if (x->nbytes != y->nbytes)
		return x->nbytes < y->nbytes ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b)
{
	const qtk_st_tensor *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

/* The name index for find; a name twice (across shards) is an error. */
static qtk_err build_names(qtk_st_file *f, const char *path, qtk_status *st)
{
	f->by_name = qtk_calloc(f->n ? f->n : 1, sizeof *f->by_name);
	if (!f->by_name)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	for (size_t i = 0; i < f->n; i++)
		f->by_name[i] = &f->t[i];
	qsort(f->by_name, f->n, sizeof *f->by_name, cmp_name);
	for (size_t i = 1; i < f->n; i++)
		if (!strcmp(f->by_name[i - 1]->name, f->by_name[i]->name))
			return qtk_fail(st, QTK_E_ST_DUPLICATE, "%s: tensor '%s': in '%s' and in '%s'",
			                path, f->by_name[i]->name,
			                base_name(f->maps[f->by_name[i - 1]->shard].path),
			                base_name(f->maps[f->by_name[i]->shard].path));
	return QTK_OK;
}

static qtk_err push_tensor(qtk_st_file *f, qtk_st_tensor **out, qtk_status *st)
{
	if (f->n == f->cap) {
		size_t nc = f->cap ? f->cap * 2 : 16, bytes;
		if (__builtin_mul_overflow(nc, sizeof *f->t, &bytes))
			return qtk_fail(st, QTK_E_OVERFLOW, "too many tensors");
		qtk_st_tensor *t = qtk_realloc(f->t, bytes);
		if (!t)
			return qtk_fail(st, QTK_E_NOMEM, "out of memory for tensor table");
		f->t = t;
		f->cap = nc;
	}
	*out = &f->t[f->n++];
	memset(*out, 0, sizeof **out);
	return QTK_OK;
}

static qtk_err parse_meta(qtk_st_file *f, const char *path, json_t *m, int keep,
                          qtk_status *st)
{
	if (!json_is_object(m))
		return qtk_fail(st, QTK_E_ST_METADATA, "%s: __metadata__ is not an object", path);
	const char *k;
	json_t *v;
	json_object_foreach(m, k, v) {
		if (!json_is_string(v))
			return qtk_fail(st, QTK_E_ST_METADATA,
			                "%s: __metadata__ value of '%s' is not a string", path, k);
	}
	if (!keep)
		return QTK_OK;
	size_t n = json_object_size(m);
	f->meta = qtk_calloc(n ? 2 * n : 1, sizeof *f->meta);
	if (!f->meta)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory for metadata", path);
	json_object_foreach(m, k, v) {
		char *kk = qtk_strdup(k);
		char *vv = kk ? dup_n(json_string_value(v), json_string_length(v)) : NULL;
		if (!vv) {
			qtk_free(kk);
			return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory for metadata", path);
		}
		f->meta[2 * f->nmeta] = kk;
		f->meta[2 * f->nmeta + 1] = vv;
		f->nmeta++;
	}
	return QTK_OK;
}

static qtk_err parse_entry(qtk_st_file *f, const qtk_map *m, uint32_t shard,
                           const char *name, json_t *e, uint64_t data0,
                           qtk_status *st)
{
	const char *path = m->path;
	if (!*name)
		return qtk_fail(st, QTK_E_ST_NAME, "%s: a tensor has an empty name", path);
	if (!json_is_object(e))
		return qtk_fail(st, QTK_E_ST_NOT_OBJECT, "%s: tensor '%s': entry is not an object",
		                path, name);
	json_t *jd = json_object_get(e, "dtype"), *js = json_object_get(e, "shape"),
	       *jo = json_object_get(e, "data_offsets");
	if (!jd || !js || !jo)
		return qtk_fail(st, QTK_E_ST_KEYS, "%s: tensor '%s': missing '%s'", path, name,
		                !jd ? "dtype" : !js ? "shape" : "data_offsets");
	if (json_object_size(e) != 3) {
		const char *k;
		json_t *v;
		json_object_foreach(e, k, v) {
			if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
				return qtk_fail(st, QTK_E_ST_KEYS, "%s: tensor '%s': unknown key '%s'",
				                path, name, k);
		}
	}
	int dt = json_is_string(jd) ? qtk_dtype_from_name(json_string_value(jd)) : -1;
	if (dt < 0)
		return qtk_fail(st, QTK_E_ST_DTYPE, "%s: tensor '%s': unknown dtype %s%s%s", path,
		                name, json_is_string(jd) ? "'" : "",
		                json_is_string(jd) ? json_string_value(jd) : "(not a string)",
		                json_is_string(jd) ? "'" : "");
	if (!json_is_array(js))
		return qtk_fail(st, QTK_E_ST_SHAPE, "%s: tensor '%s': shape is not an array", path,
		                name);
	size_t rank = json_array_size(js);
	if (rank > QTK_MAX_DIMS)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: tensor '%s': rank %zu > %d", path, name,
		                rank, QTK_MAX_DIMS);
	uint64_t shape[QTK_MAX_DIMS], nelem = 1, nbytes;
	for (size_t i = 0; i < rank; i++) {
		if (!json_u64(json_array_get(js, i), &shape[i]))
			return qtk_fail(st, QTK_E_ST_SHAPE,
			                "%s: tensor '%s': dimension %zu is not a non-negative integer",
			                path, name, i);
	}
	int ovf = 0;
	for (size_t i = 0; i < rank; i++)
		ovf |= __builtin_mul_overflow(nelem, shape[i], &nelem);
	if (ovf || __builtin_mul_overflow(nelem, (uint64_t)qtk_dtype_size((qtk_dtype)dt), &nbytes))
		return qtk_fail(st, QTK_E_ST_SHAPE_OVERFLOW, "%s: tensor '%s': shape size overflows",
		                path, name);
	uint64_t a, b;
	if (!json_is_array(jo) || json_array_size(jo) != 2 ||
	    !json_u64(json_array_get(jo, 0), &a) || !json_u64(json_array_get(jo, 1), &b) ||
	    b < a)
		return qtk_fail(st, QTK_E_ST_OFFSETS,
		                "%s: tensor '%s': data_offsets is not [begin, end] with begin <= end",
		                path, name);
	if (b - a != nbytes)
		return qtk_fail(st, QTK_E_ST_SIZE_MISMATCH,
		                "%s: tensor '%s': shape needs %llu bytes, data_offsets span %llu",
		                path, name, (unsigned long long)nbytes,
		                (unsigned long long)(b - a));
	if (b > m->size - data0)
		return qtk_fail(st, QTK_E_ST_OUT_OF_BOUNDS,
		                "%s: tensor '%s': range ends at %llu, data section has %llu bytes",
		                path, name, (unsigned long long)b,
		                (unsigned long long)(m->size - data0));
	qtk_st_tensor *t = NULL;
	QTK_TRY(push_tensor(f, &t, st));
	if (!t)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	t->name = qtk_strdup(name);
	if (!t->name) {
		f->n--;
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	t->dtype = (qtk_dtype)dt;
	t->ndim = (uint32_t)rank;
	for (size_t i = 0; i < rank; i++)
		t->shape[i] = shape[i];
	t->nelem = nelem;
	t->nbytes = nbytes;
	t->shard = shard;
	t->file_ = path;
	t->file_offset = data0 + a;
	t->data = m->data ? m->data + data0 + a : NULL;
	return QTK_OK;
}

/* Parse one mapped file and append its tensors (sorted by offset, layout
 * checked) to f. */
static qtk_err parse_one(qtk_st_file *f, uint32_t shard, int keep_meta, qtk_status *st)
{
	const qtk_map *m = &f->maps[shard];
	const char *path = m->path;
	if (m->size < 8)
		return qtk_fail(st, QTK_E_ST_TOO_SMALL, "%s: %llu bytes, shorter than the 8-byte header length",
		                path, (unsigned long long)m->size);
	uint64_t hl = 0;
	for (int i = 7; i >= 0; i--)
		hl = (hl << 8) | m->data[i];
	if (hl == 0 || hl > QTK_ST_MAX_HEADER || hl > m->size - 8)
		return qtk_fail(st, QTK_E_ST_HEADER_LEN,
		                "%s: header length %llu is 0, above %u or past the end (%llu bytes)",
		                path, (unsigned long long)hl, QTK_ST_MAX_HEADER,
		                (unsigned long long)m->size);
	const uint8_t *h = m->data + 8;
	if (!utf8_valid(h, (size_t)hl))
		return qtk_fail(st, QTK_E_ST_UTF8, "%s: header is not valid UTF-8", path);
	json_error_t je;
	unsigned jm = qtk_json_begin();
	json_t *root = json_loadb((const char *)h, (size_t)hl, JSON_REJECT_DUPLICATES, &je);
	if (qtk_json_end(jm)) {
		json_decref(root);
		return qtk_fail(st, QTK_E_NOMEM, "%s: header: out of memory", path);
	}
	if (!root) {
		if (json_error_code(&je) == json_error_duplicate_key)
			return qtk_fail(st, QTK_E_ST_DUPLICATE, "%s: header: %s", path, je.text);
		if (json_error_code(&je) == json_error_numeric_overflow)
			return qtk_fail(st, QTK_E_OVERFLOW, "%s: header: %s (above 2^63-1)", path,
			                je.text);
		if (json_error_code(&je) == json_error_out_of_memory)
			return qtk_fail(st, QTK_E_NOMEM, "%s: header: %s", path, je.text);
		return qtk_fail(st, QTK_E_ST_JSON, "%s: header is not JSON: %s (byte %d)", path,
		                je.text, je.position);
	}
	qtk_err rc = QTK_OK;
	size_t first = f->n;
	uint64_t data0 = 8 + hl, dsize = m->size - data0;
	if (!json_is_object(root)) {
		rc = qtk_fail(st, QTK_E_ST_NOT_OBJECT, "%s: header is not a JSON object", path);
		goto out;
	}
	const char *k;
	json_t *v;
	json_object_foreach(root, k, v) {
		if (!strcmp(k, "__metadata__"))
			rc = parse_meta(f, path, v, keep_meta, st);
		else
			rc = parse_entry(f, m, shard, k, v, data0, st);
		if (rc)
			goto out;
	}
	size_t cnt = f->n - first;
	qtk_st_tensor *t = cnt ? f->t + first : NULL;
	if (cnt > 1)
		qsort(t, cnt, sizeof *t, cmp_offset);
	uint64_t end = 0;
	for (size_t i = 0; i < cnt; i++) {
		uint64_t a = t[i].file_offset - data0;
		if (i == 0 && a != 0) {
			rc = qtk_fail(st, QTK_E_ST_FIRST_OFFSET,
			              "%s: tensor '%s': first tensor starts at %llu, not 0", path,
			              t[i].name, (unsigned long long)a);
			goto out;
		}
		if (a < end) {
			rc = qtk_fail(st, QTK_E_ST_OVERLAP,
			              "%s: tensor '%s': starts at %llu, inside '%s' (ends at %llu)",
			              path, t[i].name, (unsigned long long)a, t[i - 1].name,
			              (unsigned long long)end);
			goto out;
		}
		if (a > end) {
			rc = qtk_fail(st, QTK_E_ST_GAP,
			              "%s: tensor '%s': starts at %llu, leaving %llu unused bytes before it",
			              path, t[i].name, (unsigned long long)a,
			              (unsigned long long)(a - end));
			goto out;
		}
		end = a + t[i].nbytes;
	}
	if (end != dsize)
		rc = qtk_fail(st, QTK_E_ST_TRAILING,
		              "%s: %llu bytes after the last tensor (data section %llu bytes)", path,
		              (unsigned long long)(dsize - end), (unsigned long long)dsize);
out:
	json_decref(root);
	return rc;
}

void qtk_st_close(qtk_st_file *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n; i++)
		qtk_free((char *)(uintptr_t)f->t[i].name);
	qtk_free(f->t);
	qtk_free(f->by_name);
	for (size_t i = 0; i < 2 * f->nmeta; i++)
		qtk_free(f->meta[i]);
	qtk_free(f->meta);
	for (size_t i = 0; i < f->nshards; i++) {
		if (f->borrowed)
			qtk_free(f->maps[i].path);
		else
			qtk_map_close(&f->maps[i]);
	}
	qtk_free(f->maps);
	qtk_free(f->dir);
	qtk_free(f->path);
	qtk_free(f);
}

static int ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && !strcmp(s + a - b, suf);
}

static char *path_join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	size_t sep = a && dir[a - 1] == '/' ? 0 : 1; /* "ckpt/" + name: one slash */
	char *p = qtk_malloc(a + b + 2);
	if (p) {
		memcpy(p, dir, a);
		p[a] = '/';
		memcpy(p + a + sep, name, b + 1);
	}
	return p;
}

static char *dir_of(const char *path)
{
	const char *s = strrchr(path, '/');
	if (!s)
		return qtk_strdup(".");
	if (s == path)
		return qtk_strdup("/");
	return dup_n(path, (size_t)(s - path));
}

static qtk_err alloc_maps(qtk_st_file *f, size_t n, qtk_status *st)
{
	f->maps = qtk_calloc(n, sizeof *f->maps);
	if (!f->maps)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		f->maps[i].fd = -1;
	return QTK_OK;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The index: weight_map name -> shard file (no directories in it). */
static qtk_err open_index(qtk_st_file *f, const char *path, qtk_status *st)
{
	qtk_map im = { .fd = -1 };
	QTK_TRY(qtk_map_open(&im, path, st));
	json_error_t je;
	unsigned jm = qtk_json_begin();
	json_t *root = im.size ? json_loadb((const char *)im.data, (size_t)im.size,
	                                    JSON_REJECT_DUPLICATES, &je)
	                       : NULL;
	qtk_map_close(&im);
	qtk_err rc = QTK_OK;
	const char **files = NULL;
	if (qtk_json_end(jm)) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
		goto out;
	}
	json_t *wm = root ? json_object_get(root, "weight_map") : NULL;
	if (!root || !json_is_object(root) || !json_is_object(wm)) {
		rc = qtk_fail(st, QTK_E_ST_INDEX, "%s: %s", path,
		              !root ? "not valid JSON" : "no \"weight_map\" object");
		goto out;
	}
	size_t nw = json_object_size(wm), nf = 0;
	files = qtk_calloc(nw ? nw : 1, sizeof *files);
	if (!files) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
		goto out;
	}
	const char *k;
	json_t *v;
	json_object_foreach(wm, k, v) {
		const char *s = json_string_value(v);
		if (!s || !*s || strchr(s, '/') || !strcmp(s, ".") || !strcmp(s, "..")) {
			rc = qtk_fail(st, QTK_E_ST_INDEX,
			              "%s: tensor '%s': shard is not a plain file name", path, k);
			goto out;
		}
		files[nf++] = s;
	}
	qsort(files, nf, sizeof *files, cmp_str);
	size_t u = 0;
	for (size_t i = 0; i < nf; i++)
		if (!u || strcmp(files[u - 1], files[i]))
			files[u++] = files[i];
	if ((rc = alloc_maps(f, u ? u : 1, st)))
		goto out;
	for (size_t i = 0; i < u; i++) {
		char *sp = path_join(f->dir, files[i]);
		struct stat sb;
		if (!sp) {
			rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
			goto out;
		}
		if (stat(sp, &sb) != 0 && errno == ENOENT) {
			rc = qtk_fail(st, QTK_E_ST_SHARD_MISSING, "%s: shard '%s' does not exist", path,
			              files[i]);
			qtk_free(sp);
			goto out;
		}
		rc = qtk_map_open(&f->maps[i], sp, st);
		qtk_free(sp);
		if (rc)
			goto out;
		f->nshards = i + 1;
		if ((rc = parse_one(f, (uint32_t)i, i == 0, st)))
			goto out;
	}
	if ((rc = build_names(f, path, st)))
		goto out;
	/* every shard tensor is in the index, under that shard */
	for (size_t i = 0; i < f->n; i++) {
		const char *want = json_string_value(json_object_get(wm, f->t[i].name));
		const char *have = base_name(f->maps[f->t[i].shard].path);
		if (!want || strcmp(want, have)) {
			rc = qtk_fail(st, QTK_E_ST_SHARD_TENSOR,
			              want ? "%s: tensor '%s': index says '%s', found in '%s'"
			                   : "%s: tensor '%s': in shard '%s%s' but not in the index",
			              path, f->t[i].name, want ? want : "", have);
			goto out;
		}
	}
	if (f->n != nw) { /* names are unique now, so some index entry is absent */
		json_object_foreach(wm, k, v) {
			if (!qtk_st_find(f, k)) {
				rc = qtk_fail(st, QTK_E_ST_SHARD_TENSOR,
				              "%s: tensor '%s': not found in its shard '%s'", path, k,
				              json_string_value(v));
				goto out;
			}
		}
	}
	json_t *md = json_object_get(root, "metadata");
	if (md && !json_is_object(md))
		rc = qtk_fail(st, QTK_E_ST_INDEX, "%s: \"metadata\" is not an object", path);
out:
	qtk_free(files);
	json_decref(root);
	return rc;
}

static int is_dir(const char *p)
{
	struct stat sb;
	return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* ---- a directory: the file a Hugging Face loader reads in it ----------- */

/* Looked for in this order: transformers' names (modeling_utils checks
 * model.safetensors before model.safetensors.index.json), then diffusers'
 * (ModelMixin checks the index first). A variant (model.fp16.safetensors)
 * is read only when named, or as a directory's only file. */
static const char *const hf_names[] = {
	"model.safetensors",
	"model.safetensors.index.json",
	"diffusion_pytorch_model.safetensors.index.json",
	"diffusion_pytorch_model.safetensors",
};

typedef struct {
	char **v;
	size_t n, cap;
} name_list;

static int list_push(name_list *l, const char *s)
{
	if (l->n == l->cap) {
		size_t nc = l->cap ? 2 * l->cap : 8;
		char **v = nc < SIZE_MAX / sizeof *v ? qtk_realloc(l->v, nc * sizeof *v) : NULL;
		if (!v)
			return -1;
		l->v = v;
		l->cap = nc;
	}
	if (!(l->v[l->n] = qtk_strdup(s)))
		return -1;
	l->n++;
	return 0;
}

static void list_free(name_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		qtk_free(l->v[i]);
	qtk_free(l->v);
}

/* "a, b, c" in name order, as many as fit in buf, then "...". */
static const char *list_join(name_list *l, char *buf, size_t len)
{
	size_t k = 0;

	qsort(l->v, l->n, sizeof *l->v, cmp_str);
	buf[0] = 0;
	for (size_t i = 0; i < l->n; i++) {
		size_t need = strlen(l->v[i]) + (i ? 2 : 0);
		if (k + need + 5 > len) {
			snprintf(buf + k, len - k, "%s...", i ? ", " : "");
			break;
		}
		k += (size_t)snprintf(buf + k, len - k, "%s%s", i ? ", " : "", l->v[i]);
	}
	return buf;
}

/* Pick the file to read in dir: the first of hf_names present, else the
 * only *.safetensors.index.json, else the only .safetensors file (names
 * starting with '.' are not candidates). Several of a kind: QTK_E_ARG
 * naming them; none: QTK_E_NOT_FOUND. Directories never pick a GGUF. */
static qtk_err pick_in_dir(const char *dir, char **out, qtk_status *st)
{
	name_list idx = { 0 }, one = { 0 };
	size_t ngguf = 0, named = sizeof hf_names / sizeof *hf_names;
	char names[160];
	const char *pick = NULL;
	struct dirent *e;
	qtk_err rc = QTK_OK;
	DIR *d = opendir(dir);

	*out = NULL;
	if (!d)
		return qtk_fail(st, QTK_E_IO, "%s: cannot open directory: %s", dir, strerror(errno));
	for (errno = 0; (e = readdir(d)); errno = 0) {
		const char *n = e->d_name;
		int bad = 0;
		for (size_t k = 0; k < named; k++)
			if (!strcmp(n, hf_names[k]))
				named = k;
		if (n[0] == '.')
			continue;
		if (ends_with(n, ".safetensors.index.json"))
			bad = list_push(&idx, n);
		else if (ends_with(n, ".safetensors"))
			bad = list_push(&one, n);
		else if (ends_with(n, ".gguf"))
			ngguf++;
		if (bad) {
			rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", dir);
			break;
		}
	}
	if (!rc && errno)
		rc = qtk_fail(st, QTK_E_IO, "%s: cannot read directory: %s", dir, strerror(errno));
	closedir(d);
	if (rc)
		goto out;
	if (named < sizeof hf_names / sizeof *hf_names)
		pick = hf_names[named];
	else if (idx.n == 1)
		pick = idx.v[0];
	else if (idx.n > 1)
		rc = qtk_fail(st, QTK_E_ARG,
		              "%s: no model.safetensors, diffusion_pytorch_model.safetensors or "
		              "their index, and %zu index files: %s; name one",
		              dir, idx.n, list_join(&idx, names, sizeof names));
	else if (one.n == 1)
		pick = one.v[0];
	else if (one.n > 1)
		rc = qtk_fail(st, QTK_E_ARG,
		              "%s: no model.safetensors, diffusion_pytorch_model.safetensors or "
		              "index, and %zu .safetensors files: %s; name one",
		              dir, one.n, list_join(&one, names, sizeof names));
	else if (ngguf)
		rc = qtk_fail(st, QTK_E_NOT_FOUND,
		              "%s: no .safetensors file or index (a directory is not read as GGUF: "
		              "name one of its %zu .gguf file%s)", dir, ngguf, ngguf == 1 ? "" : "s");
	else
		rc = qtk_fail(st, QTK_E_NOT_FOUND, "%s: no .safetensors file or index", dir);
	if (pick && !(*out = path_join(dir, pick)))
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", dir);
out:
	list_free(&idx);
	list_free(&one);
	return rc;
}

qtk_err qtk_st_resolve(const char *path, char **out, qtk_status *st)
{
	if (!out)
		return qtk_fail(st, QTK_E_ARG, "qtk_st_resolve: out is NULL");
	*out = NULL;
	if (!path)
		return qtk_fail(st, QTK_E_ARG, "qtk_st_resolve: path is NULL");
	if (is_dir(path))
		return pick_in_dir(path, out, st);
	*out = qtk_strdup(path);
	return *out ? QTK_OK : qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
}

qtk_err qtk_st_open(const char *path, qtk_st_file **out, qtk_status *st)
{
	if (!out)
		return qtk_fail(st, QTK_E_ARG, "qtk_st_open: out is NULL");
	*out = NULL;
	if (!path)
		return qtk_fail(st, QTK_E_ARG, "qtk_st_open: path is NULL");
	char *picked = NULL;
	QTK_TRY(qtk_st_resolve(path, &picked, st));
	path = picked;
	qtk_err rc = QTK_OK;
	qtk_st_file *f = qtk_calloc(1, sizeof *f);
	if (!f || !(f->dir = dir_of(path))) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
		goto fail;
	}
	f->path = picked;
	picked = NULL;
	if (ends_with(path, ".index.json")) {
		rc = open_index(f, path, st);
	} else {
		if (!(rc = alloc_maps(f, 1, st)) && !(rc = qtk_map_open(&f->maps[0], path, st))) {
			f->nshards = 1;
			rc = parse_one(f, 0, 1, st);
		}
		if (!rc)
			rc = build_names(f, path, st);
	}
	if (rc)
		goto fail;
	*out = f;
	return QTK_OK;
fail:
	qtk_st_close(f);
	qtk_free(picked);
	return rc;
}

qtk_err qtk_st_open_mem(const void *data, size_t size, const char *name, qtk_st_file **out,
                        qtk_status *st)
{
	if (!out || (size && !data) || !name)
		return qtk_fail(st, QTK_E_ARG, "qtk_st_open_mem: NULL argument");
	*out = NULL;
	qtk_err rc;
	qtk_st_file *f = qtk_calloc(1, sizeof *f);
	if (!f)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", name);
	f->borrowed = 1;
	if (!(f->dir = qtk_strdup(".")) || !(f->path = qtk_strdup(name))) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", name);
		goto fail;
	}
	if ((rc = alloc_maps(f, 1, st)))
		goto fail;
	f->nshards = 1;
	f->maps[0].data = size ? data : NULL;
	f->maps[0].size = size;
	if (!(f->maps[0].path = qtk_strdup(name))) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", name);
		goto fail;
	}
	if ((rc = parse_one(f, 0, 1, st)) || (rc = build_names(f, name, st)))
		goto fail;
	*out = f;
	return QTK_OK;
fail:
	qtk_st_close(f);
	return rc;
}

size_t qtk_st_count(const qtk_st_file *f) { return f ? f->n : 0; }

const qtk_st_tensor *qtk_st_get(const qtk_st_file *f, size_t i)
{
	return f && i < f->n ? &f->t[i] : NULL;
}

const qtk_st_tensor *qtk_st_find(const qtk_st_file *f, const char *name)
{
	if (!f || !name || !f->n)
		return NULL;
	qtk_st_tensor key = { .name = name };
	const qtk_st_tensor *kp = &key;
	const qtk_st_tensor **r = bsearch(&kp, f->by_name, f->n, sizeof *f->by_name, cmp_name);
	return r ? *r : NULL;
}

size_t qtk_st_meta_count(const qtk_st_file *f) { return f ? f->nmeta : 0; }

const char *qtk_st_meta_key(const qtk_st_file *f, size_t i)
{
	return f && i < f->nmeta ? f->meta[2 * i] : NULL;
}

const char *qtk_st_meta_get(const qtk_st_file *f, const char *key)
{
	for (size_t i = 0; f && key && i < f->nmeta; i++)
		if (!strcmp(f->meta[2 * i], key))
			return f->meta[2 * i + 1];
	return NULL;
}

size_t qtk_st_shard_count(const qtk_st_file *f) { return f ? f->nshards : 0; }

const char *qtk_st_shard_path(const qtk_st_file *f, size_t i)
{
	return f && i < f->nshards ? f->maps[i].path : NULL;
}

uint64_t qtk_st_shard_size(const qtk_st_file *f, size_t i)
{
	return f && i < f->nshards ? f->maps[i].size : 0;
}

int qtk_st_shard_fd(const qtk_st_file *f, size_t i)
{
	return f && i < f->nshards && f->maps[i].data ? f->maps[i].fd : -1;
}

const char *qtk_st_dir(const qtk_st_file *f) { return f ? f->dir : NULL; }

const char *qtk_st_path(const qtk_st_file *f) { return f ? f->path : NULL; }

qtk_err qtk_st_read_f32(const qtk_st_tensor *t, uint64_t elem0, uint64_t n, float *dst,
                        qtk_status *st)
{
	const char *file;
	uint64_t end;

	if (!t || (n && !dst))
		return qtk_fail(st, QTK_E_ARG, "qtk_st_read_f32: NULL argument");
	file = t->file_ ? t->file_ : "safetensors";
	if (!qtk_dtype_is_float(t->dtype))
		return qtk_fail(st, QTK_E_ARG, "%s: tensor '%s': dtype %s is not a float type", file,
		                t->name, qtk_dtype_name(t->dtype));
	if (__builtin_add_overflow(elem0, n, &end) || end > t->nelem)
		return qtk_fail(st, QTK_E_ARG, "%s: tensor '%s': elements [%llu, +%llu) past %llu",
		                file, t->name, (unsigned long long)elem0, (unsigned long long)n,
		                (unsigned long long)t->nelem);
	if (!n)
		return QTK_OK;
	if (n > SIZE_MAX)
		return qtk_fail(st, QTK_E_OVERFLOW, "%s: tensor '%s': read too large", file, t->name);
	const uint8_t *src = (const uint8_t *)t->data + elem0 * qtk_dtype_size(t->dtype);
	qtk_err rc = qtk_to_f32(t->dtype, src, dst, (size_t)n);
	if (rc)
		return qtk_fail(st, rc, "%s: tensor '%s': conversion to f32 failed", file, t->name);
	/* F64 is the one source type whose finite values can exceed f32: a
	 * value rounded to Inf there is refused, not passed on as Inf */
	if (t->dtype == QTK_DT_F64)
		for (size_t i = 0; i < (size_t)n; i++)
			if (isinf(dst[i])) {
				double v;
				memcpy(&v, src + 8 * i, 8);
				if (isfinite(v))
					return qtk_fail(st, QTK_E_UNSUPPORTED,
					                "%s: tensor '%s': element %llu is %g, beyond f32's range",
					                file, t->name,
					                (unsigned long long)(elem0 + i), v);
			}
	return QTK_OK;
}
