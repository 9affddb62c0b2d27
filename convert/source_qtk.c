/* convert: a .qtk file as the pipeline's source (`qtk export`, or convert of
 * a .qtk). Each tensor carries its stored layout and planes: a sink that
 * holds the layout gets the planes as they are, and reading f32 dequantizes
 * them. The metadata says where the checkpoint it was made from is
 * (--requantize reads it there, after checking the recorded size and crc32
 * of each of its files), and records its config, recipe and options. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "conv_impl.h"

/* One stored tensor: its planes, mapped or (zstd) decompressed. */
typedef struct {
	const qtk_pack_tensor *pt;
	const void *plane[QTK_PLANE_MAX];
	void *owned[QTK_PLANE_MAX];
} qtk_rec;

struct src_qtk {
	qtk_pack_file *f;
	qtk_rec *rec;             /* [n] */
	json_t *meta;             /* the metadata (an empty object if none) */
	char *srcdir;             /* directory of the recorded source, or NULL */
	char *config;             /* the recorded config, compact, or NULL */
	src *origin;              /* the recorded source, opened and checked by
	                             src_origin_tensor */
};

int src_is_qtk(const char *path)
{
	unsigned char m[8];
	qtk_status tmp;
	int fd, yes;

	if (qtk_fmt_open_input(path, &fd, NULL, &tmp) != QTK_OK)
		return 0;
	yes = read(fd, m, 8) == 8 && memcmp(m, QTK_PACK_MAGIC, 8) == 0;
	close(fd);
	return yes;
}

/* The metadata: source directory, config, recipe's main scheme, search. */
static qtk_err load_meta(src *s, struct src_qtk *q, qtk_status *st)
{
	size_t len;
	const char *text = qtk_pack_metadata(q->f, &len);
	json_t *files, *cfg;
	const char *p, *sch, *grp;
	uint64_t gv = 0;
	int id;
	unsigned jm = qtk_json_begin();

	q->meta = text ? json_loads(text, 0, NULL) : NULL;
	if (!q->meta)
		q->meta = json_object();
	if (qtk_json_end(jm) || !q->meta) /* not a silent empty metadata */
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory reading the metadata", s->path);
	files = json_object_get(json_object_get(q->meta, "source"), "files");
	p = json_string_value(json_object_get(json_array_get(files, 0), "path"));
	if (p) {
		const char *sl = strrchr(p, '/');
		q->srcdir = sl ? qtk_malloc((size_t)(sl - p) + 1) : qtk_strdup(".");
		if (!q->srcdir)
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		if (sl) {
			memcpy(q->srcdir, p, (size_t)(sl - p));
			q->srcdir[sl - p] = 0;
		}
	}
	s->dir = q->srcdir;
	s->search = json_is_true(json_object_get(json_object_get(q->meta, "options"), "search"));
	/* the recipe's main scheme and group (GGUF file type, MLX
	 * "quantization"); anything but a group size ("row", junk): none */
	sch = json_string_value(json_object_get(json_object_get(q->meta, "recipe"), "scheme"));
	grp = json_string_value(json_object_get(json_object_get(q->meta, "recipe"), "group"));
	id = sch ? qtk_q_scheme_from_name(sch) : -1;
	s->main_scheme = id >= 0 ? (qtk_scheme_id)id : QTK_SCHEME_RAW;
	s->main_group = grp && qtk_parse_u64("group", grp, 1, 4096, &gv, NULL) == QTK_OK ?
	                (uint32_t)gv : 0;
	s->has_main = 1;
	/* the config stored at conversion time, unless the source's is there */
	cfg = json_object_get(q->meta, "config");
	if (cfg) {
		char path[4096];
		struct stat sb;

		snprintf(path, sizeof path, "%s/config.json", q->srcdir ? q->srcdir : "");
		if (!q->srcdir || stat(path, &sb) != 0) {
			jm = qtk_json_begin();
			q->config = json_dumps(cfg, JSON_COMPACT | JSON_ENCODE_ANY);
			if (qtk_json_end(jm) || !q->config)
				return qtk_fail(st, QTK_E_NOMEM, "out of memory");
			s->config_json = q->config;
		}
	}
	s->recorded = text && len ? text : NULL;
	return QTK_OK;
}

/* Every tensor's planes, crc32-checked; double-quantized scales refused
 * (no other format holds them, and dequantizing them is not exact). */
static qtk_err load_planes(src *s, struct src_qtk *q, qtk_status *st)
{
	for (size_t i = 0; i < s->n; i++) {
		qtk_rec *e = &q->rec[i];

		QTK_TRY(qtk_pack_verify_tensor(q->f, i, st));
		for (int p = 0; p < QTK_PLANE_DQ; p++) {
			const qtk_pack_plane *pl = &e->pt->planes[p];
			if (!pl->size)
				continue;
			if (!(pl->flags & QTK_PACK_PF_ZSTD)) {
				e->plane[p] = pl->data;
				continue;
			}
			e->owned[p] = qtk_malloc((size_t)pl->size);
			if (!e->owned[p])
				return qtk_fail(st, QTK_E_NOMEM, "out of memory");
			QTK_TRY(qtk_pack_plane_read(q->f, e->pt, p, e->owned[p], st));
			e->plane[p] = e->owned[p];
		}
		if (e->pt->layout.flags & QTK_QF_DOUBLE_QUANT)
			return qtk_fail(st, QTK_E_UNSUPPORTED, "tensor '%s': double-quantized scales "
			                "cannot be exported", e->pt->name);
	}
	return QTK_OK;
}

static void make_tensors(src *s, struct src_qtk *q)
{
	for (size_t i = 0; i < s->n; i++) {
		const qtk_pack_tensor *pt = qtk_pack_get(q->f, i);
		src_tensor *d = &s->t[i];

		q->rec[i].pt = pt;
		d->name = pt->name;
		d->dtype = pt->src_dtype;
		d->ndim = pt->ndim;
		memcpy(d->shape, pt->shape, sizeof d->shape);
		d->nelem = pt->rows * pt->cols;
		d->nbytes = d->nelem * qtk_dtype_size(pt->src_dtype);
		d->stored = &pt->layout;
		d->handle = &q->rec[i];
		/* a quantized tensor reads as whole rows; its planes are no
		 * source bytes to drop from memory (they may be the heap's) */
		d->rows_only = !qtk_q_scheme_get(pt->layout.scheme)->float_store &&
		               pt->layout.scheme != QTK_SCHEME_RAW;
		d->keep_pages = 1;
	}
}

qtk_err src_open_qtk(src *s, const char *path, qtk_status *st)
{
	struct src_qtk *q = qtk_calloc(1, sizeof *q);

	if (!q)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	s->qtk = q;
	s->format = "qtk";
	s->path = path;
	QTK_TRY(qtk_pack_open(path, 0, &q->f, st));
	QTK_TRY(load_meta(s, q, st));
	/* config.json and tokenizer files are read from there */
	QTK_TRY(src_check_side_files(q->srcdir, st));
	s->n = qtk_pack_count(q->f);
	s->nfiles = 1;
	s->t = qtk_calloc(s->n ? s->n : 1, sizeof *s->t);
	s->files = qtk_calloc(1, sizeof *s->files);
	q->rec = qtk_calloc(s->n ? s->n : 1, sizeof *q->rec);
	if (!s->t || !s->files || !q->rec)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	s->files[0].path = path;
	s->files[0].size = qtk_pack_file_size(q->f);
	s->files[0].fd = -1; /* stored planes: read from the mapping */
	make_tensors(s, q);
	QTK_TRY(load_planes(s, q, st));
	for (size_t i = 0; i < s->n; i++) /* raw bytes: the codes plane */
		if (q->rec[i].pt->layout.scheme == QTK_SCHEME_RAW) {
			s->t[i].data = q->rec[i].plane[QTK_PLANE_CODES];
			s->t[i].nbytes = q->rec[i].pt->planes[QTK_PLANE_CODES].size;
		}
	return QTK_OK;
}

qtk_err src_open_qtk_file(src **out, const char *path, qtk_status *st)
{
	src *s = qtk_calloc(1, sizeof *s);
	qtk_err rc;

	*out = NULL;
	if (!s)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	rc = src_open_qtk(s, path, st);
	if (rc) {
		src_close(s);
		return rc;
	}
	*out = s;
	return QTK_OK;
}

void src_qtk_close(struct src_qtk *q)
{
	if (!q)
		return;
	for (size_t i = 0; q->rec && q->f && i < qtk_pack_count(q->f); i++)
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			qtk_free(q->rec[i].owned[p]);
	qtk_free(q->rec);
	src_close(q->origin);
	qtk_pack_close(q->f);
	json_decref(q->meta);
	free(q->config);
	qtk_free(q->srcdir);
	qtk_free(q);
}

const void *const *src_stored_planes(const src_tensor *t)
{
	return ((const qtk_rec *)t->handle)->plane;
}

qtk_err src_qtk_read_f32(const src_tensor *t, uint64_t elem0, uint64_t n, float *dst,
                         qtk_status *st)
{
	const qtk_rec *e = t->handle;
	const qtk_q_layout *S = &e->pt->layout;
	uint64_t cols = e->pt->cols;
	qtk_q_cplanes cp;

	if (!t->rows_only) { /* raw bytes or a float store: element by element */
		qtk_dtype dt = S->scheme == QTK_SCHEME_RAW ? S->dtype
		                                          : qtk_q_scheme_get(S->scheme)->store_dtype;
		qtk_to_f32(dt, (const uint8_t *)e->plane[QTK_PLANE_CODES] + elem0 * qtk_dtype_size(dt),
		           dst, (size_t)n);
		return QTK_OK;
	}
	if (!cols || elem0 % cols || n % cols)
		return qtk_fail(st, QTK_E_ARG, "tensor '%s': a quantized tensor reads whole rows",
		                t->name);
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		cp.p[p] = e->plane[p] ? (const uint8_t *)e->plane[p] +
		          elem0 / cols * qtk_q_row_bytes(S, cols, p) : NULL;
	qtk_q_dequantize_rows(S, &cp, (size_t)(n / cols), (size_t)cols, dst);
	return QTK_OK;
}

/* ---- the recorded source, for --requantize ------------------------------ */

/* Each recorded file of the checkpoint, by name: its size, and its crc32
 * where the .qtk recorded one. */
static qtk_err check_files(const src *s, const src *o, json_t *files, const char *first,
                           qtk_status *st)
{
	size_t k;
	json_t *fo;

	json_array_foreach(files, k, fo) {
		const char *name = json_string_value(json_object_get(fo, "name"));
		const char *crc = json_string_value(json_object_get(fo, "crc32"));
		uint64_t bytes = (uint64_t)json_integer_value(json_object_get(fo, "bytes"));
		int found = 0;

		for (size_t f = 0; f < o->nfiles; f++) {
			const src_file *sf = &o->files[f];
			const char *b = strrchr(sf->path, '/');
			char hex[16];

			if (!name || strcmp(b ? b + 1 : sf->path, name))
				continue;
			found = 1;
			if (sf->size != bytes)
				return qtk_fail(st, QTK_E_CHECKSUM, "%s: %llu bytes, the .qtk recorded %llu: "
				                "not the checkpoint it was made from", sf->path,
				                (unsigned long long)sf->size, (unsigned long long)bytes);
			if (sf->base && crc && *crc) {
				snprintf(hex, sizeof hex, "%08lx",
				         (unsigned long)crc32_z(0, sf->base, (size_t)sf->size));
				if (strcmp(hex, crc))
					return qtk_fail(st, QTK_E_CHECKSUM, "%s: crc32 %s, the .qtk recorded %s: "
					                "not the checkpoint it was made from", sf->path, hex, crc);
			}
		}
		if (!found)
			return qtk_fail(st, QTK_E_NOT_FOUND, "source file '%s' recorded in %s is not in "
			                "the checkpoint at %s", name ? name : "?", s->path, first);
	}
	return QTK_OK;
}

/* Open the checkpoint the metadata records: the index's directory (several
 * files) or the single file, then check it is the one. */
static qtk_err open_origin(src *s, struct src_qtk *q, qtk_status *st)
{
	json_t *files = json_object_get(json_object_get(q->meta, "source"), "files");
	const char *first = json_string_value(json_object_get(json_array_get(files, 0), "path"));
	qtk_err rc;

	if (!first)
		return qtk_fail(st, QTK_E_NOT_FOUND, "%s: the metadata records no source path; "
		                "cannot requantize", s->path);
	if (json_array_size(files) > 1) {
		rc = src_open(&q->origin, q->srcdir, st);
	} else {
		rc = src_open(&q->origin, first, st);
		if (rc)
			qtk_status_prefix(st, "source recorded in the .qtk metadata");
	}
	if (!rc && q->origin->qtk)
		rc = qtk_fail(st, QTK_E_UNSUPPORTED, "%s: the recorded source is a .qtk file; "
		              "cannot requantize", s->path);
	if (!rc)
		rc = check_files(s, q->origin, files, first, st);
	if (rc) {
		src_close(q->origin);
		q->origin = NULL;
	}
	return rc;
}

qtk_err src_origin_tensor(src *s, size_t i, const src **os, const src_tensor **ot,
                          qtk_status *st)
{
	struct src_qtk *q = s->qtk;
	const src_tensor *t = &s->t[i], *hit = NULL;

	if (!q->origin) /* opened once: a second pass has it */
		QTK_TRY(open_origin(s, q, st));
	for (size_t k = 0; k < q->origin->n && !hit; k++)
		if (!strcmp(q->origin->t[k].name, t->name))
			hit = &q->origin->t[k];
	if (!hit || hit->nelem != t->nelem || hit->dtype != t->dtype)
		return qtk_fail(st, QTK_E_NOT_FOUND, "tensor '%s': not in the source checkpoint "
		                "with the recorded dtype and shape", t->name);
	*os = q->origin;
	*ot = hit;
	return QTK_OK;
}

const src *src_origin(const src *s)
{
	return s->qtk ? s->qtk->origin : NULL;
}
