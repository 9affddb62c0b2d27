/* convert: the pipeline's input — tensors of a safetensors checkpoint
 * (single file, index or directory), of a GGUF file or of a .qtk file
 * (source_qtk.c) behind one interface. GGUF tensors keep their names; dims are given in safetensors
 * order (the last is ggml's ne[0]); Q8_0 / Q4_0 / Q4_1 tensors read as f32
 * exactly as ggml dequantizes them. */
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conv_impl.h"

static uint64_t src_serials; /* sources opened: staged reads know theirs */

/* Does path start with the GGUF magic? (Directories, FIFOs and short files:
 * no; the safetensors reader then says what they are.) */
static int is_gguf(const char *path)
{
	unsigned char m[4];
	qtk_status tmp;
	int fd, yes;

	if (qtk_fmt_open_input(path, &fd, NULL, &tmp) != QTK_OK)
		return 0;
	yes = read(fd, m, 4) == 4 && memcmp(m, "GGUF", 4) == 0;
	close(fd);
	return yes;
}

/* Files read beside a checkpoint when present: config.json (metadata, GGUF
 * and MLX), tokenizer.model (GGUF vocabulary) and those MLX output copies. */
static const char *const side_files[] = {
	"config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
	"special_tokens_map.json", "generation_config.json",
};

qtk_err src_check_side_files(const char *dir, qtk_status *st)
{
	char path[4096];

	for (size_t i = 0; dir && i < sizeof side_files / sizeof *side_files; i++) {
		qtk_err rc;

		if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, side_files[i]) >= sizeof path)
			return qtk_fail(st, QTK_E_ARG, "%s: path too long", dir);
		rc = qtk_fmt_check_input(path, st);
		if (rc && rc != QTK_E_NOT_FOUND)
			return rc;
	}
	return QTK_OK;
}

/* The dtype a GGUF tensor reads as: a plain type's own, f32 for the block
 * types qtk dequantizes (formats' ggml type table); *ok = 0 for others. */
static qtk_dtype gguf_dtype(uint32_t type, int *ok)
{
	const qtk_ggml_type_info *t = qtk_ggml_type_get(type);

	*ok = t && (t->plain || t->deq);
	return t && t->plain ? t->dtype : QTK_DT_F32;
}

/* Tensors read through a staging buffer with pread, not from the mapping:
 * the first touch of a mapped page costs far more than a copy on the
 * virtual machines qtk runs on (widening a page-cached bf16 file from
 * its fresh mapping ran at 2.5-3.1 GB/s on one core, pread of 256 KB
 * pieces and widening them at 14 GB/s), and a read needs no page-table
 * entries to drop afterwards. The 16- and 32-bit float types, whose
 * widening is exact (F64 keeps its range check in the reader). */
static int stage_dtype(const src_tensor *t)
{
	return !t->blk_elems &&
	       (t->dtype == QTK_DT_F16 || t->dtype == QTK_DT_BF16 || t->dtype == QTK_DT_F32);
}

static qtk_err open_gguf(src *s, const char *path, qtk_status *st)
{
	QTK_TRY(qtk_gguf_open(path, &s->gg, st));
	s->format = "gguf";
	s->path = path;
	s->n = qtk_gguf_count(s->gg);
	s->nfiles = 1;
	s->t = qtk_calloc(s->n ? s->n : 1, sizeof *s->t);
	s->files = qtk_calloc(1, sizeof *s->files);
	if (!s->t || !s->files)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	s->files[0].path = path;
	s->files[0].size = qtk_gguf_file_size(s->gg);
	s->files[0].data_start = qtk_gguf_data_offset(s->gg);
	s->files[0].fd = qtk_gguf_fd(s->gg);
	for (size_t i = 0; i < s->n; i++) {
		const qtk_gguf_tensor *t = qtk_gguf_get(s->gg, i);
		src_tensor *d = &s->t[i];
		int ok;

		d->name = t->name;
		d->dtype = gguf_dtype(t->type, &ok);
		if (!ok)
			return qtk_fail(st, QTK_E_UNSUPPORTED,
			                "%s: tensor '%s': ggml type %s is not an input qtk reads "
			                "(F32, F16, BF16, F64, I8-I64, Q8_0, Q4_0, Q4_1)",
			                path, t->name, qtk_ggml_type_name(t->type) ?
			                qtk_ggml_type_name(t->type) : "?");
		d->gtype = t->type;
		if (qtk_ggml_block_elems(t->type) > 1) {
			d->blk_elems = qtk_ggml_block_elems(t->type);
			d->blk_bytes = qtk_ggml_block_bytes(t->type);
		}
		d->ndim = t->ndim;
		memcpy(d->shape, t->shape, sizeof d->shape);
		d->nelem = t->nelem;
		d->nbytes = t->nbytes;
		d->data = t->data;
		d->file = 0;
		d->file_offset = t->file_offset;
		d->handle = t;
		d->preadable = s->files[0].fd >= 0;
		d->staged = stage_dtype(d) && d->preadable;
		if (i == 0)
			s->files[0].base = (const uint8_t *)t->data - t->file_offset;
	}
	if (s->n == 0) /* no tensor: nothing points into the mapping */
		s->files[0].base = NULL;
	return QTK_OK;
}

qtk_err src_open(src **out, const char *path, qtk_status *st)
{
	src *s = qtk_calloc(1, sizeof *s);
	qtk_err rc;

	*out = NULL;
	if (!s)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	s->serial = __atomic_add_fetch(&src_serials, 1, __ATOMIC_RELAXED);
	if (is_gguf(path) || src_is_qtk(path)) {
		rc = is_gguf(path) ? open_gguf(s, path, st) : src_open_qtk(s, path, st);
		if (rc) {
			src_close(s);
			return rc;
		}
		*out = s;
		return QTK_OK;
	}
	rc = qtk_st_open(path, &s->st, st);
	if (rc) {
		qtk_free(s);
		return rc;
	}
	s->format = "safetensors";
	s->path = qtk_st_path(s->st);
	s->n = qtk_st_count(s->st);
	s->nfiles = qtk_st_shard_count(s->st);
	s->t = qtk_calloc(s->n ? s->n : 1, sizeof *s->t);
	s->files = qtk_calloc(s->nfiles ? s->nfiles : 1, sizeof *s->files);
	if (!s->t || !s->files) {
		src_close(s);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	s->dir = qtk_st_dir(s->st);
	rc = src_check_side_files(s->dir, st);
	if (rc) {
		src_close(s);
		return rc;
	}
	for (size_t f = 0; f < s->nfiles; f++) {
		s->files[f].path = qtk_st_shard_path(s->st, f);
		s->files[f].size = qtk_st_shard_size(s->st, f);
		s->files[f].data_start = s->files[f].size;
		s->files[f].fd = qtk_st_shard_fd(s->st, f);
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
		d->preadable = f->fd >= 0;
		d->staged = stage_dtype(d) && d->preadable;
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
	qtk_gguf_close(s->gg);
	src_qtk_close(s->qtk);
	qtk_free(s->desc);
	qtk_free(s->cfg_text);
	qtk_free(s->t);
	qtk_free(s->files);
	qtk_free(s);
}

/* The config's text (read on the first call); *text NULL when none. */
static qtk_err config_text(src *s, const char **text, size_t *len, qtk_status *st)
{
	if (!s->cfg_done) {
		s->cfg_rc = QTK_E_NOT_FOUND;
		if (s->dir) {
			snprintf(s->cfg_where, sizeof s->cfg_where, "%s/config.json", s->dir);
			s->cfg_rc = qtk_fmt_read_input(s->cfg_where, &s->cfg_text, &s->cfg_len,
			                               &s->cfg_st);
		}
		if (s->cfg_rc == QTK_E_NOT_FOUND && s->config_json) {
			/* a .qtk's: the config its metadata records */
			snprintf(s->cfg_where, sizeof s->cfg_where, "%s: metadata config", s->path);
			s->cfg_len = strlen(s->config_json);
			s->cfg_text = qtk_malloc(s->cfg_len + 1);
			s->cfg_rc = s->cfg_text ? QTK_OK
			            : qtk_fail(&s->cfg_st, QTK_E_NOMEM, "out of memory");
			if (s->cfg_text)
				memcpy(s->cfg_text, s->config_json, s->cfg_len + 1);
		}
		s->cfg_done = 1;
	}
	*text = s->cfg_rc == QTK_OK ? s->cfg_text : NULL;
	*len = s->cfg_len;
	if (s->cfg_rc && s->cfg_rc != QTK_E_NOT_FOUND)
		*st = s->cfg_st;
	return s->cfg_rc == QTK_E_NOT_FOUND ? QTK_OK : s->cfg_rc;
}

qtk_err src_model_desc(src *s, const qtk_model_desc **d, qtk_status *st)
{
	const char *text;
	size_t len;
	qtk_err rc;

	if (!s->desc_done) {
		if (!s->desc && !(s->desc = qtk_calloc(1, sizeof *s->desc)))
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		memset(s->desc, 0, sizeof *s->desc);
		QTK_TRY(config_text(s, &text, &len, st)); /* not cached: the caller fails */
		if (text && (rc = qtk_model_desc_parse(text, len, NULL, s->cfg_where, s->desc,
		                                       st)) != QTK_OK)
			return rc;
		s->desc_done = 1; /* text NULL: present = 0 */
	}
	*d = s->desc;
	return QTK_OK;
}

qtk_err src_config_object(src *s, json_t **obj, qtk_status *st)
{
	const char *text;
	size_t len;
	qtk_status tmp;

	*obj = NULL;
	/* not a regular file: refused when the input was opened */
	if (config_text(s, &text, &len, &tmp) == QTK_E_NOMEM)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	if (!text)
		return QTK_OK;
	*obj = json_loadb(text, len, 0, NULL);
	if (*obj && !json_is_object(*obj)) {
		json_decref(*obj);
		*obj = NULL;
	}
	return QTK_OK;
}

/* ---- staged reads ------------------------------------------------------
 * Each thread reads through its own 256 KB stage: one pread fills it with
 * the bytes asked for and, up to the caller's extent (upto: the rest of
 * its work item), the bytes that follow, so the next pieces of the item
 * come from the stage without a system call (32 KB preads ran at 8 GB/s
 * with widening on one core here, 256 KB ones at 14). The stage is known
 * by its source's serial number, file and offsets: a descriptor number
 * reused by a later source cannot serve stale bytes. */
#define STAGE_BYTES (256u << 10)

typedef struct {
	uint64_t serial;          /* of the source (0: empty) */
	uint32_t file;
	uint64_t off, len;        /* file bytes held */
	uint8_t buf[STAGE_BYTES];
} stage;

static pthread_key_t stage_key;
static pthread_once_t stage_once = PTHREAD_ONCE_INIT;
static int stage_key_ok;

static void stage_key_make(void)
{
	stage_key_ok = pthread_key_create(&stage_key, qtk_free) == 0;
}

static stage *stage_get(void)
{
	stage *g;

	pthread_once(&stage_once, stage_key_make);
	if (!stage_key_ok)
		return NULL;
	g = pthread_getspecific(stage_key);
	if (!g) {
		g = qtk_malloc(sizeof *g);
		if (g && pthread_setspecific(stage_key, g) != 0) {
			qtk_free(g);
			g = NULL;
		}
		if (g)
			g->serial = 0;
	}
	return g;
}

/* The stage holding file bytes [at, at + need) of t's file, filled from at
 * up to stop (at most STAGE_BYTES) when it does not; need <= stop - at. */
static qtk_err stage_at(const src *s, const src_tensor *t, uint64_t at, uint64_t stop,
                        size_t need, stage **out, qtk_status *st)
{
	const src_file *f = &s->files[t->file];
	stage *g = stage_get();

	if (!g)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory for a read buffer", f->path);
	if (g->serial != s->serial || g->file != t->file || at < g->off ||
	    at + need > g->off + g->len) {
		uint64_t len = stop - at < STAGE_BYTES ? stop - at : STAGE_BYTES;

		g->serial = 0; /* empty until the read succeeds */
		QTK_TRY(qtk_fmt_pread(f->fd, g->buf, (size_t)len, at, f->path, st));
		g->serial = s->serial;
		g->file = t->file;
		g->off = at;
		g->len = len;
	}
	*out = g;
	return QTK_OK;
}

/* Elements [elem0, elem0 + n) of t through this thread's stage, reading
 * ahead to element upto at most. */
static qtk_err read_staged(const src *s, const src_tensor *t, uint64_t elem0, uint64_t n,
                           uint64_t upto, float *dst, uint32_t *crc, qtk_status *st)
{
	const src_file *f = &s->files[t->file];
	size_t es = qtk_dtype_size(t->dtype);
	uint64_t end, stop;

	if (__builtin_add_overflow(elem0, n, &end) || end > t->nelem)
		return qtk_fail(st, QTK_E_ARG, "%s: tensor '%s': elements [%llu, +%llu) past %llu",
		                f->path, t->name, (unsigned long long)elem0, (unsigned long long)n,
		                (unsigned long long)t->nelem);
	stop = t->file_offset + (upto > end && upto <= t->nelem ? upto : end) * es;
	for (uint64_t i = 0; i < n;) {
		uint64_t at = t->file_offset + (elem0 + i) * es;
		size_t m;
		stage *g;

		QTK_TRY(stage_at(s, t, at, stop, es, &g, st));
		m = (size_t)((g->off + g->len - at) / es);
		if (m > n - i)
			m = (size_t)(n - i);
		if (crc)
			*crc = qtk_crc32(*crc, g->buf + (at - g->off), m * es);
		if (qtk_to_f32(t->dtype, g->buf + (at - g->off), dst + i, m))
			return qtk_fail(st, QTK_E_ARG, "%s: tensor '%s': conversion to f32 failed",
			                f->path, t->name);
		i += m;
	}
	return QTK_OK;
}

qtk_err src_read_raw(const src *s, const src_tensor *t, uint64_t off, uint64_t upto,
                     const uint8_t **p, size_t *len, qtk_status *st)
{
	const src_file *f = &s->files[t->file];
	uint64_t at;
	stage *g;

	*p = NULL;
	*len = 0;
	if (!t->preadable || off >= upto || upto > t->nbytes)
		return qtk_fail(st, QTK_E_ARG, "%s: tensor '%s': bytes [%llu, %llu) of %llu",
		                f->path, t->name, (unsigned long long)off, (unsigned long long)upto,
		                (unsigned long long)t->nbytes);
	at = t->file_offset + off;
	QTK_TRY(stage_at(s, t, at, t->file_offset + upto, 1, &g, st));
	*p = g->buf + (at - g->off);
	*len = (size_t)(g->off + g->len - at < upto - off ? g->off + g->len - at : upto - off);
	return QTK_OK;
}

qtk_err src_read_f32_at(const src *s, const src_tensor *t, uint64_t elem0, uint64_t n,
                        uint64_t upto, float *dst, uint32_t *crc, qtk_status *st)
{
	uint64_t off, len;

	if (t->staged)
		return read_staged(s, t, elem0, n, upto, dst, crc, st);
	if (s->gg)
		QTK_TRY(qtk_gguf_read_f32(t->handle, elem0, n, dst, st));
	else if (s->qtk)
		QTK_TRY(src_qtk_read_f32(t, elem0, n, dst, st));
	else
		QTK_TRY(qtk_st_read_f32(t->handle, elem0, n, dst, st));
	if (crc) {
		src_span(t, elem0, n, &off, &len);
		*crc = qtk_crc32(*crc, t->data + off, len);
	}
	return QTK_OK;
}

qtk_err src_read_f32(const src *s, const src_tensor *t, uint64_t elem0,
                     uint64_t n, float *dst, qtk_status *st)
{
	return src_read_f32_at(s, t, elem0, n, 0, dst, NULL, st);
}

void src_span(const src_tensor *t, uint64_t elem0, uint64_t n, uint64_t *off,
              uint64_t *len)
{
	if (t->blk_elems) {
		uint64_t b0 = elem0 / t->blk_elems;
		uint64_t b1 = (elem0 + n + t->blk_elems - 1) / t->blk_elems;
		*off = b0 * t->blk_bytes;
		*len = (b1 - b0) * t->blk_bytes;
		return;
	}
	*off = elem0 * qtk_dtype_size(t->dtype);
	*len = n * qtk_dtype_size(t->dtype);
}

/* The page-aligned part of t's bytes [off, off+len): outward (whole pages
 * touching the range) or inward (whole pages inside it). 0 if none. */
static int page_range(const src_tensor *t, uint64_t off, uint64_t len, int outward,
                      uintptr_t *a, uintptr_t *b)
{
	static long page;
	uintptr_t m;

	if (!page)
		page = sysconf(_SC_PAGESIZE);
	if (!t->data || t->keep_pages || t->staged || len == 0)
		return 0; /* staged: read with pread, never mapped in */
	m = (uintptr_t)page - 1;
	*a = (uintptr_t)t->data + off;
	*b = *a + len;
	*a = outward ? *a & ~m : (*a + m) & ~m;
	*b = outward ? (*b + m) & ~m : *b & ~m;
	return *b > *a;
}

void src_prefault(const src *s, const src_tensor *t, uint64_t off, uint64_t len)
{
	uintptr_t a, b;

	/* values read with pread: ask for the whole item's readahead at once
	 * (two workers' interleaved reads on one descriptor look random to
	 * the kernel's own readahead); the rest read the mapping */
	if (t->staged && len > 0) {
		(void)posix_fadvise(s->files[t->file].fd, (off_t)(t->file_offset + off), (off_t)len,
		                    POSIX_FADV_WILLNEED);
		return;
	}
#ifdef MADV_POPULATE_READ
	/* one call maps the range's page-cache pages (instead of a fault per
	 * page); an old kernel says EINVAL and the reads fault as usual */
	if (page_range(t, off, len, 1, &a, &b))
		madvise((void *)a, b - a, MADV_POPULATE_READ);
#else
	(void)t, (void)off, (void)len, (void)a, (void)b;
#endif
}

void src_release(const src_tensor *t, uint64_t off, uint64_t len)
{
	uintptr_t a, b;

	/* whole pages inside the range only: neighbours may still be read */
	if (page_range(t, off, len, 0, &a, &b))
		madvise((void *)a, b - a, MADV_DONTNEED);
}

qtk_err qtk_detect_model_path(const char *input, const char **model, qtk_status *st)
{
	const char **names;
	src *s;

	*model = NULL;
	QTK_TRY(src_open(&s, input, st));
	if (s->gg) {
		const char *a;
		uint64_t len;
		const qtk_model_family *f = NULL;
		if (qtk_gguf_get_str(s->gg, "general.architecture", &a, &len, NULL) == QTK_OK)
			f = qtk_model_family_find(a, (size_t)len);
		*model = f ? f->name : NULL;
		if (*model) {
			src_close(s);
			return QTK_OK;
		}
	}
	names = qtk_calloc(s->n + 1, sizeof *names);
	if (!names) {
		src_close(s);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	for (size_t i = 0; i < s->n; i++)
		names[i] = s->t[i].name;
	*model = qtk_detect_model(names, s->n);
	qtk_free(names);
	src_close(s);
	return QTK_OK;
}
