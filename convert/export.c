/* convert: `qtk export` — repack a .qtk file as GGUF or MLX without the
 * source checkpoint. Stored codes go over unchanged wherever the target
 * holds them exactly (sink_gguf.c / sink_mlx.c decide, as for convert);
 * a tensor the target cannot hold is refused, or with --requantize
 * quantized again from the source checkpoint recorded in the metadata
 * (after checking the recorded size and crc32 of its file). */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "conv_impl.h"

#define CHUNK_ELEMS (1u << 20)

enum {
	K_PLANES,  /* stored planes as they are (layout unchanged) */
	K_COPY,    /* RAW bytes of the stored codes plane */
	K_F32,     /* stored values -> f32 -> a float target dtype (exact) */
	K_SRC,     /* requantized from the source checkpoint */
};

typedef struct {
	const qtk_pack_tensor *pt;
	int kind;
	qtk_q_layout out;           /* layout written (== stored for K_PLANES) */
	const src_tensor *s;        /* K_SRC: the source tensor */
	const void *plane[QTK_PLANE_MAX]; /* stored planes (mapped or read) */
	void *owned[QTK_PLANE_MAX];
	char why[320];              /* why it was requantized */
	/* K_SRC: every narrow type of the requantized layout is qtk's pick,
	 * so a value one cannot hold widens the tensor to F32 (GGUF: an F32
	 * tensor; MLX: F32 scales and biases) in a second pass, as convert */
	int widen;                  /* survives the re-plan */
	char note[360];             /* why it was widened */
	uint64_t flushed;           /* nonzero values stored as zero */
} ex_tensor;

typedef struct {
	const qtk_export_opts *o;
	qtk_pack_file *f;
	size_t n;
	ex_tensor *t;
	src fake;                   /* the .qtk's tensors as a src, for the planners */
	src_tensor *ft;
	src *source;                /* opened for --requantize */
	int gguf;
	gguf_plan gp;
	gguf_tensor_plan *gt;
	qtk_gguf_writer *gw;
	mlx_sink *ms;
	json_t *meta;
	char *srcdir;
	char *cfg_text;             /* config for the MLX sink (borrowed by it) */
	int search;
	size_t next;                /* atomic */
	int failed;                 /* atomic */
	int redo;                   /* atomic: a tensor was marked to widen */
	pthread_mutex_t lock;
	qtk_status err;
} ex_job;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the .qtk and its metadata ----------------------------------------- */

static qtk_err load_meta(ex_job *j, qtk_status *st)
{
	size_t len;
	const char *text = qtk_pack_metadata(j->f, &len);
	json_t *files;
	const char *p;
	unsigned jm = qtk_json_begin();

	j->meta = text ? json_loads(text, 0, NULL) : NULL;
	if (!j->meta)
		j->meta = json_object();
	if (qtk_json_end(jm) || !j->meta) /* not a silent empty metadata */
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory reading the metadata",
		                j->o->input);
	files = json_object_get(json_object_get(j->meta, "source"), "files");
	p = json_string_value(json_object_get(json_array_get(files, 0), "path"));
	if (p) {
		const char *sl = strrchr(p, '/');
		j->srcdir = sl ? qtk_malloc((size_t)(sl - p) + 1) : qtk_strdup(".");
		if (!j->srcdir)
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		if (sl) {
			memcpy(j->srcdir, p, (size_t)(sl - p));
			j->srcdir[sl - p] = 0;
		}
	}
	j->search = json_is_true(json_object_get(json_object_get(j->meta, "options"), "search"));
	return QTK_OK;
}

static qtk_err make_fake_src(ex_job *j, qtk_status *st)
{
	j->n = qtk_pack_count(j->f);
	j->t = qtk_calloc(j->n ? j->n : 1, sizeof *j->t);
	j->ft = qtk_calloc(j->n ? j->n : 1, sizeof *j->ft);
	if (!j->t || !j->ft)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	for (size_t i = 0; i < j->n; i++) {
		const qtk_pack_tensor *pt = qtk_pack_get(j->f, i);
		src_tensor *s = &j->ft[i];

		j->t[i].pt = pt;
		s->name = pt->name;
		s->dtype = pt->src_dtype;
		s->ndim = pt->ndim;
		memcpy(s->shape, pt->shape, sizeof s->shape);
		s->nelem = pt->rows * pt->cols;
		s->nbytes = s->nelem * qtk_dtype_size(pt->src_dtype);
	}
	j->fake.format = "qtk";
	j->fake.n = j->n;
	j->fake.t = j->ft;
	j->fake.dir = j->srcdir;
	return QTK_OK;
}

/* The model description for the GGUF planner: the recorded source
 * directory's config.json (the planner reads it), else the config stored
 * in the metadata, parsed here. */
static qtk_err config_desc(ex_job *j, qtk_status *st)
{
	char path[4096], where[4200];
	struct stat sb;
	json_t *cfg = json_object_get(j->meta, "config");
	char *text;
	unsigned jm;
	qtk_err rc;

	if (j->fake.desc_done) /* the first pass's */
		return QTK_OK;
	if (j->srcdir) {
		snprintf(path, sizeof path, "%s/config.json", j->srcdir);
		if (stat(path, &sb) == 0)
			return QTK_OK;
	}
	if (!cfg)
		return QTK_OK;
	jm = qtk_json_begin();
	text = json_dumps(cfg, JSON_COMPACT | JSON_ENCODE_ANY);
	if (qtk_json_end(jm) || !text) {
		free(text);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	snprintf(where, sizeof where, "%s: metadata config", j->o->input);
	rc = (j->fake.desc = qtk_calloc(1, sizeof *j->fake.desc)) == NULL
	     ? qtk_fail(st, QTK_E_NOMEM, "out of memory")
	     : qtk_model_desc_parse(text, strlen(text), NULL, where, j->fake.desc, st);
	free(text);
	QTK_TRY(rc);
	j->fake.desc_done = 1;
	return QTK_OK;
}

/* ---- deciding ----------------------------------------------------------- */

static int same_layout(const qtk_q_layout *a, const qtk_q_layout *b)
{
	return a->scheme == b->scheme && a->group == b->group &&
	       a->scale_dtype == b->scale_dtype && a->flags == b->flags &&
	       (a->scheme != QTK_SCHEME_RAW || a->dtype == b->dtype);
}

/* The layout --requantize uses when the target cannot hold the stored one. */
static qtk_q_layout requant_layout(const ex_job *j, const ex_tensor *e)
{
	qtk_q_layout L = e->pt->layout;
	qtk_dtype md = e->pt->src_dtype;

	/* ggml's affine rule for GGUF, MLX's for MLX (as convert does) */
	L.flags = 0;
	L.scale_dtype = QTK_DT_F16;
	const qtk_q_scheme *s = qtk_q_scheme_get(L.scheme);
	unsigned bits, off;
	qtk_status tmp;

	/* a scheme the sink has no form of: the same bits on its grid */
	if (j->gguf) {
		if (qtk_ggml_type_of_scheme(L.scheme) < 0)
			L.scheme = s->requant_sym;
		L.group = 32;
	} else {
		if (L.group != 32 && L.group != 64 && L.group != 128)
			L.group = 64;
		if (qtk_mlx_form(&L, L.group, &bits, &off, &tmp) != QTK_OK)
			L.scheme = s->requant_affine;
		if (qtk_q_scheme_get(L.scheme)->has_bias)
			L.flags = QTK_QF_MLX_AFFINE;
		if (md == QTK_DT_F16 || md == QTK_DT_BF16)
			L.scale_dtype = md;
	}
	return L;
}

/* A planner's message without its leading "tensor 'NAME': ". */
static const char *reason(const char *msg)
{
	const char *p = !strncmp(msg, "tensor '", 8) ? strstr(msg, "': ") : NULL;
	return p ? p + 3 : msg;
}

static int is_quant(const qtk_q_layout *L)
{
	return qtk_q_scheme_get(L->scheme)->quantized;
}

static qtk_err decide_gguf(ex_job *j, size_t i, qtk_status *st)
{
	ex_tensor *e = &j->t[i];
	const qtk_q_layout *S = &e->pt->layout;
	qtk_q_layout L = *S;
	qtk_status tmp;
	qtk_err rc = gguf_plan_tensor(&j->gp, &j->ft[i], &L, &j->gt[i], &tmp);

	if (rc == QTK_OK && same_layout(&L, S)) {
		e->kind = S->scheme == QTK_SCHEME_RAW ? K_COPY : K_PLANES;
	} else if (rc == QTK_OK && (!is_quant(S) || L.scheme == conv_float_scheme(QTK_DT_F32))) {
		e->kind = K_F32; /* float to float, or quantized values into F32: exact */
	} else {
		if (rc == QTK_OK)
			snprintf(e->why, sizeof e->why, "rows of %llu: the 32-element block does not "
			         "divide them (GGUF keeps them in F16)", (unsigned long long)e->pt->cols);
		else
			snprintf(e->why, sizeof e->why, "%s", reason(tmp.msg));
		if (!j->o->requantize)
			return qtk_fail(st, QTK_E_UNSUPPORTED, "tensor '%s': GGUF cannot hold the stored "
			                "%s/g%u exactly: %s (use --requantize)", e->pt->name,
			                qtk_q_scheme_get(S->scheme)->name, S->group, e->why);
		if (rc != QTK_OK) {
			L = requant_layout(j, e);
			QTK_TRY(gguf_plan_tensor(&j->gp, &j->ft[i], &L, &j->gt[i], st));
		}
		e->kind = K_SRC;
		if (e->widen && L.scheme != QTK_SCHEME_RAW) {
			memset(&L, 0, sizeof L);
			L.scheme = conv_float_scheme(QTK_DT_F32);
			L.dtype = e->pt->src_dtype;
			j->gt[i].type = QTK_GGML_F32;
		}
	}
	e->out = L;
	return QTK_OK;
}

/* MLX scales in the model dtype when every value is exact there, else F32. */
static qtk_err mlx_scales_dtype(ex_job *j, size_t i, qtk_status *st)
{
	ex_tensor *e = &j->t[i];
	qtk_dtype md = mlx_model_dtype(j->ms, i);
	uint64_t n = e->pt->rows * qtk_q_groups_per_row(&e->pt->layout, e->pt->cols);
	void *buf;
	qtk_status tmp;
	int ok;

	if (md == QTK_DT_F32)
		return QTK_OK;
	buf = qtk_malloc((size_t)n * 4 + 4);
	if (!buf)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	ok = qtk_mlx_scales(&e->pt->layout, e->plane[QTK_PLANE_SCALES], (size_t)n, md, buf,
	                    &tmp) == QTK_OK &&
	     qtk_mlx_biases(&e->pt->layout, e->plane[QTK_PLANE_SCALES],
	                    e->plane[QTK_PLANE_BIASES], (size_t)n, md, buf, &tmp) == QTK_OK;
	qtk_free(buf);
	return ok ? QTK_OK : mlx_set_scale_dtype(j->ms, i, QTK_DT_F32, st);
}

static qtk_err decide_mlx(ex_job *j, size_t i, qtk_status *st)
{
	ex_tensor *e = &j->t[i];
	const qtk_q_layout *S = &e->pt->layout;
	qtk_q_layout L = *S;
	qtk_status tmp;

	if (mlx_plan_tensor(j->ms, i, &j->ft[i], &L, &tmp) == QTK_OK) {
		e->out = L;
		e->kind = is_quant(S) ? K_PLANES : S->scheme == QTK_SCHEME_RAW ? K_COPY : K_PLANES;
		return is_quant(S) ? mlx_scales_dtype(j, i, st) : QTK_OK;
	}
	snprintf(e->why, sizeof e->why, "%s", reason(tmp.msg));
	if (!j->o->requantize)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s (use --requantize)", tmp.msg);
	L = requant_layout(j, e);
	if (mlx_plan_tensor(j->ms, i, &j->ft[i], &L, &tmp) != QTK_OK) {
		/* rows the group does not divide, or 1-D: source precision */
		L.scheme = QTK_SCHEME_RAW;
		L.dtype = e->pt->src_dtype;
		L.group = 0;
		QTK_TRY(mlx_plan_tensor(j->ms, i, &j->ft[i], &L, st));
	}
	if (e->widen && is_quant(&L)) {
		L.scale_dtype = QTK_DT_F32;
		QTK_TRY(mlx_set_scale_dtype(j->ms, i, QTK_DT_F32, st));
	}
	e->out = L;
	e->kind = K_SRC;
	return QTK_OK;
}

/* ---- the source, for --requantize -------------------------------------- */

static qtk_err open_source(ex_job *j, qtk_status *st)
{
	json_t *files = json_object_get(json_object_get(j->meta, "source"), "files");
	const char *first = json_string_value(json_object_get(json_array_get(files, 0), "path"));
	size_t k;
	json_t *fo;

	if (!first)
		return qtk_fail(st, QTK_E_NOT_FOUND, "%s: the metadata records no source path; "
		                "cannot requantize", j->o->input);
	/* the checkpoint is the index (several files) or the single file */
	if (json_array_size(files) > 1) {
		char idx[4096];
		snprintf(idx, sizeof idx, "%s", j->srcdir);
		QTK_TRY(src_open(&j->source, idx, st));
	} else {
		qtk_err rc = src_open(&j->source, first, st);
		if (rc) {
			qtk_status_prefix(st, "source recorded in the .qtk metadata");
			return rc;
		}
	}
	json_array_foreach(files, k, fo) {
		const char *name = json_string_value(json_object_get(fo, "name"));
		const char *crc = json_string_value(json_object_get(fo, "crc32"));
		uint64_t bytes = (uint64_t)json_integer_value(json_object_get(fo, "bytes"));
		int found = 0;

		for (size_t f = 0; f < j->source->nfiles; f++) {
			const src_file *sf = &j->source->files[f];
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
			                "the checkpoint at %s", name ? name : "?", j->o->input, first);
	}
	for (size_t i = 0; i < j->n; i++) {
		ex_tensor *e = &j->t[i];
		if (e->kind != K_SRC)
			continue;
		for (size_t k2 = 0; k2 < j->source->n && !e->s; k2++)
			if (!strcmp(j->source->t[k2].name, e->pt->name))
				e->s = &j->source->t[k2];
		if (!e->s || e->s->nelem != j->ft[i].nelem || e->s->dtype != j->ft[i].dtype)
			return qtk_fail(st, QTK_E_NOT_FOUND, "tensor '%s': not in the source checkpoint "
			                "with the recorded dtype and shape", e->pt->name);
	}
	return QTK_OK;
}

/* ---- writing ------------------------------------------------------------ */

static uint64_t plane_row_bytes(const qtk_q_layout *L, uint64_t cols, int p)
{
	if (L->scheme == QTK_SCHEME_RAW)
		return p == QTK_PLANE_CODES ? cols * qtk_dtype_size(L->dtype) : 0;
	return qtk_q_row_bytes(L, cols, p);
}

/* Output row r of tensor i comes from stored / source row src_row(r). */
static uint64_t src_row(const ex_job *j, size_t i, uint64_t r)
{
	if (j->gguf && j->gt[i].qk)
		return qtk_gguf_llama_qk_src_row(r, j->t[i].pt->rows, j->gt[i].n_head);
	return r;
}

typedef struct {
	float *f;
	uint8_t *p[QTK_PLANE_MAX];
	uint8_t *blocks;
} ex_buf;

/* Rows [r0, r0+nr) of tensor i into planes of e->out in b. */
static qtk_err fill_rows(ex_job *j, size_t i, uint64_t r0, uint64_t nr, ex_buf *b,
                         qtk_status *st)
{
	ex_tensor *e = &j->t[i];
	uint64_t cols = e->pt->cols;
	const qtk_q_layout *S = &e->pt->layout;
	qtk_q_planes dst;
	qtk_q_opts qo = { .search = j->search, .tensor = e->pt->name, .row0 = r0,
	                  .flushed = &e->flushed };

	if (e->kind == K_PLANES || e->kind == K_COPY) {
		for (int p = 0; p < QTK_PLANE_DQ; p++) {
			uint64_t rb = plane_row_bytes(S, cols, p);
			for (uint64_t r = 0; rb && r < nr; r++)
				memcpy(b->p[p] + r * rb, (const uint8_t *)e->plane[p] +
				       src_row(j, i, r0 + r) * rb, (size_t)rb);
		}
		return QTK_OK;
	}
	for (uint64_t r = 0; r < nr; r++) {
		uint64_t sr = src_row(j, i, r0 + r);
		float *out = b->f + r * cols;

		if (e->kind == K_SRC) {
			QTK_TRY(src_read_f32(j->source, e->s, sr * cols, cols, out, st));
		} else if (S->scheme == QTK_SCHEME_RAW) {
			qtk_to_f32(S->dtype, (const uint8_t *)e->plane[QTK_PLANE_CODES] +
			           sr * plane_row_bytes(S, cols, 0), out, (size_t)cols);
		} else {
			qtk_q_cplanes cp;
			for (int p = 0; p < QTK_PLANE_MAX; p++)
				cp.p[p] = e->plane[p] ? (const uint8_t *)e->plane[p] +
				          sr * plane_row_bytes(S, cols, p) : NULL;
			qtk_q_dequantize_rows(S, &cp, 1, (size_t)cols, out);
		}
	}
	if (e->out.scheme == QTK_SCHEME_RAW) { /* source bytes as they are */
		uint64_t rb = plane_row_bytes(&e->out, cols, 0);
		for (uint64_t r = 0; r < nr; r++)
			memcpy(b->p[0] + r * rb, e->s->data + src_row(j, i, r0 + r) * rb, (size_t)rb);
		return QTK_OK;
	}
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		dst.p[p] = p < QTK_PLANE_DQ ? b->p[p] : NULL;
	return qtk_q_quantize_rows(&e->out, b->f, (size_t)nr, (size_t)cols, &dst, &qo, st);
}

static qtk_err emit_rows(ex_job *j, size_t i, uint64_t r0, uint64_t nr, ex_buf *b,
                         qtk_status *st)
{
	ex_tensor *e = &j->t[i];
	uint64_t cols = e->pt->cols;
	qtk_q_cplanes cp;

	for (int p = 0; p < QTK_PLANE_MAX; p++)
		cp.p[p] = p < QTK_PLANE_DQ ? b->p[p] : NULL;
	if (j->ms) {
		if (e->out.scheme == QTK_SCHEME_RAW) {
			uint64_t rb = plane_row_bytes(&e->out, cols, 0);
			return mlx_put_raw(j->ms, i, r0 * rb, b->p[0], (size_t)(nr * rb), st);
		}
		return mlx_put_rows(j->ms, i, &e->out, &cp, r0 * cols, (size_t)nr, (size_t)cols, st);
	}
	if (e->out.scheme == QTK_SCHEME_RAW || qtk_q_scheme_get(e->out.scheme)->float_store) {
		uint64_t rb = plane_row_bytes(&e->out, cols, 0);
		return qtk_gguf_writer_put(j->gw, i, r0 * rb, b->p[0], (size_t)(nr * rb), st);
	} else {
		uint64_t rb = gguf_row_bytes(j->gt[i].type, cols);
		QTK_TRY(qtk_ggml_pack_rows(j->gt[i].type, &cp, (size_t)nr, (size_t)cols, b->blocks, st));
		return qtk_gguf_writer_put(j->gw, i, r0 * rb, b->blocks, (size_t)(nr * rb), st);
	}
}

/* A value error of tensor i while filling or emitting rows. A requantized
 * tensor's narrow types are qtk's pick: a value they cannot hold marks
 * it for F32 (*marked, QTK_OK: the output is redone). Anything else fails,
 * naming the file the values came from. */
static qtk_err value_error(ex_job *j, size_t i, qtk_err rc, int *marked, qtk_status *st)
{
	ex_tensor *e = &j->t[i];

	*marked = e->kind == K_SRC && !e->widen &&
	          (rc == QTK_E_Q_VALUE_RANGE || rc == QTK_E_Q_SCALE_RANGE);
	if (!*marked) {
		if (rc != QTK_E_NOMEM && rc != QTK_E_IO && rc != QTK_E_INTERRUPTED)
			qtk_status_prefix(st, e->kind == K_SRC ? j->source->files[e->s->file].path
			                                       : j->o->input);
		return rc;
	}
	{
		const char *m = st->msg, *q = !strncmp(m, "tensor '", 8) ? strstr(m, "': ") : NULL;
		snprintf(e->note, sizeof e->note, "%s; %s in F32 instead", q ? q + 3 : m,
		         j->gguf ? "stored" : "scales and biases stored");
	}
	e->widen = 1; /* only this tensor's worker touches e */
	__atomic_store_n(&j->redo, 1, __ATOMIC_RELEASE);
	return QTK_OK;
}

static qtk_err do_tensor(ex_job *j, size_t i, qtk_status *st)
{
	ex_tensor *e = &j->t[i];
	uint64_t rows = e->pt->rows, cols = e->pt->cols;
	uint64_t per = cols >= CHUNK_ELEMS || !cols ? 1 : CHUNK_ELEMS / cols;
	ex_buf b;
	qtk_err rc = QTK_OK;

	memset(&b, 0, sizeof b);
	if (per > rows)
		per = rows ? rows : 1;
	b.f = qtk_malloc((size_t)(per * cols) * sizeof(float) + 16);
	b.blocks = qtk_malloc((size_t)(per * cols) * 2 + 64);
	for (int p = 0; p < QTK_PLANE_DQ; p++) {
		uint64_t rb = plane_row_bytes(&e->pt->layout, cols, p);
		uint64_t ro = plane_row_bytes(&e->out, cols, p);
		b.p[p] = qtk_malloc((size_t)(per * (rb > ro ? rb : ro)) + 16);
		if (!b.p[p])
			rc = QTK_E_NOMEM;
	}
	if (rc || !b.f || !b.blocks)
		rc = qtk_fail(st, QTK_E_NOMEM, "out of memory");
	e->flushed = 0;
	for (uint64_t r0 = 0; !rc && r0 < rows; r0 += per) {
		uint64_t nr = rows - r0 < per ? rows - r0 : per;
		int marked = 0;

		if (j->o->cancel && *j->o->cancel)
			rc = qtk_fail(st, QTK_E_INTERRUPTED, "interrupted");
		if (!rc && (rc = fill_rows(j, i, r0, nr, &b, st)) != QTK_OK)
			rc = value_error(j, i, rc, &marked, st);
		if (!rc && !marked && (rc = emit_rows(j, i, r0, nr, &b, st)) != QTK_OK &&
		    (rc == QTK_E_Q_SCALE_RANGE || rc == QTK_E_GG_LAYOUT))
			rc = value_error(j, i, rc, &marked, st);
		if (marked)
			break;
	}
	qtk_free(b.f);
	qtk_free(b.blocks);
	for (int p = 0; p < QTK_PLANE_DQ; p++)
		qtk_free(b.p[p]);
	return rc;
}

static void *worker(void *arg)
{
	ex_job *j = arg;
	qtk_status st;

	qtk_status_clear(&st);
	while (!__atomic_load_n(&j->failed, __ATOMIC_RELAXED)) {
		size_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
		if (i >= j->n)
			break;
		if (do_tensor(j, i, &st)) {
			pthread_mutex_lock(&j->lock);
			if (!j->failed)
				j->err = st;
			__atomic_store_n(&j->failed, 1, __ATOMIC_SEQ_CST);
			pthread_mutex_unlock(&j->lock);
		}
	}
	return NULL;
}

static qtk_err run(ex_job *j, int nthreads, qtk_status *st)
{
	pthread_t tids[64];
	int started = 0;

	if (nthreads > 64)
		nthreads = 64;
	for (; started < nthreads; started++)
		if (pthread_create(&tids[started], NULL, worker, j))
			break;
	if (!started)
		return qtk_fail(st, QTK_E_NOMEM, "cannot start worker threads");
	for (int k = 0; k < started; k++)
		pthread_join(tids[k], NULL);
	if (j->failed) {
		*st = j->err;
		return st->code;
	}
	return QTK_OK;
}

/* ---- entry -------------------------------------------------------------- */

static qtk_err load_planes(ex_job *j, qtk_status *st)
{
	for (size_t i = 0; i < j->n; i++) {
		ex_tensor *e = &j->t[i];

		QTK_TRY(qtk_pack_verify_tensor(j->f, i, st));
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
			QTK_TRY(qtk_pack_plane_read(j->f, e->pt, p, e->owned[p], st));
			e->plane[p] = e->owned[p];
		}
		if (e->pt->layout.flags & QTK_QF_DOUBLE_QUANT)
			return qtk_fail(st, QTK_E_UNSUPPORTED, "tensor '%s': double-quantized scales "
			                "cannot be exported", e->pt->name);
	}
	return QTK_OK;
}

static qtk_err open_out(ex_job *j, qtk_status *st)
{
	const char *inputs[66];
	qtk_write_opts wo = { .force = j->o->force, .inputs = inputs };
	qtk_gguf_desc *d;
	qtk_err rc;

	inputs[wo.ninputs++] = j->o->input;
	for (size_t f = 0; j->source && f < j->source->nfiles && wo.ninputs < 65; f++)
		inputs[wo.ninputs++] = j->source->files[f].path;
	if (j->ms)
		return mlx_open(j->ms, j->o->output, &wo, st);
	d = qtk_calloc(j->n ? j->n : 1, sizeof *d);
	if (!d)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	for (size_t i = 0; i < j->n; i++) {
		const src_tensor *t = &j->ft[i];
		d[i].name = j->gt[i].name;
		d[i].type = j->gt[i].type;
		d[i].n_dims = t->ndim ? t->ndim : 1;
		for (uint32_t k = 0; k < QTK_GGUF_MAX_DIMS; k++)
			d[i].ne[k] = k < t->ndim ? t->shape[t->ndim - 1 - k] : 1;
		if (j->gt[i].flat) {
			/* > 4 dims: [rows][cols], the shape in comfy.gguf.orig_shape
			 * (gguf_plan_tensor), as convert writes it */
			d[i].n_dims = 2;
			d[i].ne[0] = t->shape[t->ndim - 1];
			d[i].ne[1] = t->nelem / t->shape[t->ndim - 1];
		}
	}
	rc = qtk_gguf_writer_open(&j->gw, j->o->output, j->gp.kvs, d, j->n, &wo, st);
	qtk_free(d);
	return rc;
}

static qtk_err plan(ex_job *j, qtk_status *st)
{
	const char *recipe = NULL;
	char *rj = json_dumps(json_object_get(j->meta, "recipe"), JSON_COMPACT);
	mlx_cfg mc = { .dir = j->srcdir, .exact = 1 };
	int need_src = 0;

	recipe = rj;
	mlx_main_from_recipe(recipe, &mc);
	free(rj);
	if (j->gguf) {
		QTK_TRY(config_desc(j, st));
		QTK_TRY(gguf_plan_begin(&j->gp, &j->fake, mc.main_scheme, st));
		j->gt = qtk_calloc(j->n ? j->n : 1, sizeof *j->gt);
		if (!j->gt)
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	} else {
		char *cfg = json_dumps(json_object_get(j->meta, "config"), JSON_COMPACT);
		struct stat sb;
		char path[4096];

		snprintf(path, sizeof path, "%s/config.json", j->srcdir ? j->srcdir : "");
		/* the config stored at conversion time, unless the source's is there */
		mc.config_json = j->srcdir && stat(path, &sb) == 0 ? NULL : cfg;
		if (mc.config_json == NULL)
			free(cfg);
		QTK_TRY(mlx_begin(&j->ms, &mc, j->n, st));
		j->cfg_text = (char *)(uintptr_t)mc.config_json; /* the sink borrows it */
	}
	for (size_t i = 0; i < j->n; i++) {
		QTK_TRY(j->gguf ? decide_gguf(j, i, st) : decide_mlx(j, i, st));
		need_src |= j->t[i].kind == K_SRC;
	}
	if (need_src && !j->source) /* a second pass has it open */
		QTK_TRY(open_source(j, st));
	return QTK_OK;
}

/* Drop the output and the planners' state for a second pass (the marks in
 * j->t[].widen stay). */
static void plan_reset(ex_job *j)
{
	qtk_gguf_writer_abort(j->gw);
	mlx_abort(j->ms);
	j->gw = NULL;
	j->ms = NULL;
	free(j->cfg_text);
	j->cfg_text = NULL;
	gguf_plan_end(&j->gp);
	qtk_free(j->gt);
	j->gt = NULL;
	j->next = 0;
	j->redo = 0;
}

static void job_free(ex_job *j)
{
	for (size_t i = 0; j->t && i < j->n; i++)
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			qtk_free(j->t[i].owned[p]);
	qtk_free(j->t);
	qtk_free(j->ft);
	qtk_free(j->gt);
	gguf_plan_end(&j->gp);
	qtk_gguf_writer_abort(j->gw);
	mlx_abort(j->ms);
	src_close(j->source);
	qtk_pack_close(j->f);
	json_decref(j->meta);
	free(j->cfg_text);
	qtk_free(j->srcdir);
	qtk_free(j->fake.desc);
	pthread_mutex_destroy(&j->lock);
}

static qtk_err make_report(ex_job *j, qtk_export_report **out, qtk_status *st)
{
	qtk_export_report *r = qtk_calloc(1, sizeof *r);

	if (!r)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	r->ntensors = j->n;
	r->requantized = qtk_calloc(j->n ? j->n : 1, sizeof *r->requantized);
	r->reasons = qtk_calloc(j->n ? j->n : 1, sizeof *r->reasons);
	r->flushed = qtk_calloc(j->n ? j->n : 1, sizeof *r->flushed);
	r->notes = qtk_calloc(j->n ? j->n : 1, sizeof *r->notes);
	if (!r->requantized || !r->reasons || !r->flushed || !r->notes) {
		qtk_export_report_free(r);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	for (size_t i = 0; i < j->n; i++) {
		const ex_tensor *e = &j->t[i];
		if (e->kind == K_PLANES || e->kind == K_COPY)
			r->exact++;
		else if (e->kind == K_F32)
			r->widened++;
		if (e->kind != K_SRC)
			continue;
		r->flushed[r->nrequantized] = e->flushed;
		r->notes[r->nrequantized] = e->note[0] ? qtk_strdup(e->note) : NULL;
		r->requantized[r->nrequantized] = qtk_strdup(e->pt->name);
		r->reasons[r->nrequantized] = qtk_strdup(e->why);
		if (!r->requantized[r->nrequantized] || !r->reasons[r->nrequantized] ||
		    (e->note[0] && !r->notes[r->nrequantized])) {
			r->nrequantized++;
			qtk_export_report_free(r);
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		}
		r->nrequantized++;
	}
	*out = r;
	return QTK_OK;
}

void qtk_export_report_free(qtk_export_report *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nrequantized; i++) {
		qtk_free(r->requantized[i]);
		qtk_free(r->reasons[i]);
		if (r->notes)
			qtk_free(r->notes[i]);
	}
	qtk_free(r->notes);
	qtk_free(r->requantized);
	qtk_free(r->reasons);
	qtk_free(r->flushed);
	qtk_free(r);
}

qtk_err qtk_export(const qtk_export_opts *o, qtk_export_report **out, qtk_status *st)
{
	ex_job j;
	double t0 = now_s();
	int nthreads = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
	qtk_err rc;

	*out = NULL;
	if (!o->input || !o->output)
		return qtk_fail(st, QTK_E_ARG, "export: input and output are required");
	if (o->format != QTK_OUT_GGUF && o->format != QTK_OUT_MLX)
		return qtk_fail(st, QTK_E_ARG, "export: the target is gguf or mlx");
	memset(&j, 0, sizeof j);
	pthread_mutex_init(&j.lock, NULL);
	j.o = o;
	j.gguf = o->format == QTK_OUT_GGUF;
	rc = qtk_pack_open(o->input, 0, &j.f, st);
	if (!rc)
		rc = load_meta(&j, st);
	if (!rc) /* config.json and tokenizer files are read from there */
		rc = src_check_side_files(j.srcdir, st);
	if (!rc)
		rc = make_fake_src(&j, st);
	if (!rc)
		rc = load_planes(&j, st);
	/* two passes at most: the second when requantized tensors were marked
	 * to widen (they are F32 then and cannot be marked again) */
	for (int pass = 0; !rc && pass < 2; pass++) {
		if (pass)
			plan_reset(&j);
		if ((rc = plan(&j, st)) != QTK_OK)
			qtk_status_prefix(st, o->input);
		if (!rc)
			rc = open_out(&j, st);
		if (!rc)
			rc = run(&j, nthreads < 1 ? 1 : nthreads, st);
		if (!rc && !j.redo)
			break;
		if (!rc && pass)
			rc = qtk_fail(st, QTK_E_FORMAT, "%s: a value range fallback did not settle",
			              o->input);
	}
	if (!rc)
		rc = make_report(&j, out, st);
	if (!rc && j.gguf)
		rc = qtk_gguf_writer_commit(j.gw, st);
	else if (!rc)
		rc = mlx_commit(j.ms, st);
	if (!rc || *out) {
		j.gw = NULL;
		j.ms = NULL;
	}
	if (rc) {
		qtk_export_report_free(*out);
		*out = NULL;
	} else {
		(*out)->seconds = now_s() - t0;
		(*out)->threads = nthreads < 1 ? 1 : nthreads;
	}
	job_free(&j);
	return rc;
}
