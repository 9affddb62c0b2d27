/* convert: GGUF output — per-tensor names and ggml types, the KVs
 * (architecture, llama.* hyper-parameters, sentencepiece vocabulary, file
 * type), and qtk planes turned into ggml blocks. The file itself is written
 * by formats' streaming GGUF writer. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "conv_impl.h"

/* Whether t's family is a DiT, and the longest name its GGUF readers take
 * (ggml's 63 bytes when the family is unknown). */
static int is_dit(const gguf_plan *g)
{
	return g->fam && g->fam->dit;
}

static size_t name_max(const gguf_plan *g)
{
	return g->fam ? g->fam->gguf_name_max : 63;
}

/* A GGUF input: its names stay, its KVs are copied (the file type and
 * quantization version are set anew), its architecture is the model. */
static qtk_err plan_from_gguf(gguf_plan *g, const src *s, qtk_scheme_id main_scheme,
                              qtk_status *st)
{
	const char *arch = NULL;
	uint64_t len = 0;

	g->kvs = qtk_gguf_kvs_new();
	if (!g->kvs)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	for (size_t i = 0; i < qtk_gguf_kv_count(s->gg); i++) {
		const qtk_gguf_kv *kv = qtk_gguf_kv_get(s->gg, i);
		if (!strcmp(kv->key, "general.file_type") ||
		    !strcmp(kv->key, "general.quantization_version"))
			continue;
		QTK_TRY(qtk_gguf_kvs_add_kv(g->kvs, kv, st));
	}
	if (qtk_gguf_get_str(s->gg, "general.architecture", &arch, &len, NULL) == QTK_OK &&
	    len < sizeof g->arch) {
		memcpy(g->arch, arch, len);
		g->arch[len] = 0;
		g->fam = qtk_model_family_find(arch, len);
	}
	QTK_TRY(qtk_gguf_kvs_add_u32(g->kvs, "general.file_type", qtk_ggml_file_type(main_scheme), st));
	QTK_TRY(qtk_gguf_kvs_add_u32(g->kvs, "general.quantization_version", 2, st));
	return QTK_OK;
}

/* llama.* KVs from the model description, and the sentencepiece vocabulary
 * when dir has a tokenizer.model. */
static qtk_err plan_llama(gguf_plan *g, src *s, qtk_status *st)
{
	const qtk_model_desc *d;
	char path[4096];
	struct stat sb;
	qtk_err rc = src_model_desc(s, &d, st);

	if (rc == QTK_E_FORMAT)
		st->code = rc = QTK_E_GG_CONFIG; /* config.json is not JSON */
	QTK_TRY(rc);
	snprintf(path, sizeof path, "%s/config.json", s->dir ? s->dir : ".");
	if (!d->present)
		return qtk_fail(st, QTK_E_ARG,
		                "GGUF output of a LLaMA checkpoint needs its config.json (%s)", path);
	QTK_TRY(qtk_gguf_llama_desc(d, g->kvs, &g->hp, st));
	g->have_hp = 1;
	snprintf(path, sizeof path, "%s/tokenizer.model", s->dir ? s->dir : ".");
	if (stat(path, &sb) == 0) {
		qtk_spm_vocab *v = NULL;
		QTK_TRY(qtk_spm_read(path, &v, st));
		rc = qtk_gguf_spm_kvs(v, g->kvs, st);
		qtk_spm_free(v);
	}
	return rc;
}

/* Any other model: its config.json's model_type, when there is one (tensor
 * names stay as they are); a config.json that is not JSON says nothing. */
static qtk_err plan_model_type(gguf_plan *g, src *s, qtk_status *st)
{
	const qtk_model_desc *d;
	const qtk_model_val *mt;
	qtk_err rc = src_model_desc(s, &d, st);

	if (rc == QTK_E_FORMAT)
		return QTK_OK;
	QTK_TRY(rc);
	mt = &d->v[QTK_MK_MODEL_TYPE];
	if (mt->kind == QTK_MV_STRING && mt->len > 0 && mt->len < 64)
		QTK_TRY(qtk_gguf_kvs_add_str(g->kvs, "general.architecture", mt->s, mt->len, st));
	return QTK_OK;
}

qtk_err gguf_plan_begin(gguf_plan *g, src *s, qtk_scheme_id main_scheme, qtk_status *st)
{
	const char **names = qtk_calloc(s->n ? s->n : 1, sizeof *names);

	memset(g, 0, sizeof *g);
	if (!names)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	if (s->gg) {
		qtk_free(names);
		return plan_from_gguf(g, s, main_scheme, st);
	}
	for (size_t i = 0; i < s->n; i++)
		names[i] = s->t[i].name;
	g->fam = qtk_model_detect(names, s->n);
	qtk_free(names);
	g->kvs = qtk_gguf_kvs_new();
	if (!g->kvs)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	if (g->fam && g->fam->llama_hparams)
		QTK_TRY(plan_llama(g, s, st));
	else if (g->fam && g->fam->gguf_arch)
		QTK_TRY(qtk_gguf_kvs_add_str(g->kvs, "general.architecture", g->fam->gguf_arch,
		                             strlen(g->fam->gguf_arch), st));
	else
		QTK_TRY(plan_model_type(g, s, st));
	QTK_TRY(qtk_gguf_kvs_add_u32(g->kvs, "general.file_type", qtk_ggml_file_type(main_scheme), st));
	QTK_TRY(qtk_gguf_kvs_add_u32(g->kvs, "general.quantization_version", 2, st));
	return QTK_OK;
}

void gguf_plan_end(gguf_plan *g)
{
	qtk_gguf_kvs_free(g->kvs);
	g->kvs = NULL;
}

static qtk_err plan_type(const src_tensor *t, qtk_q_layout *L, gguf_tensor_plan *out,
                         qtk_status *st);

qtk_err gguf_plan_tensor(gguf_plan *g, const src_tensor *t, qtk_q_layout *L,
                         gguf_tensor_plan *out, qtk_status *st)
{
	int32_t dims[QTK_MAX_DIMS];
	char key[192];

	memset(out, 0, sizeof *out);
	/* name */
	if (g->have_hp && qtk_gguf_llama_name(t->name, out->name, sizeof out->name,
	                                      &out->qk) == QTK_OK) {
		out->n_head = out->qk == 1 ? g->hp.n_head : g->hp.n_head_kv;
	} else {
		const char *n = t->name;
		out->qk = 0;
		if (is_dit(g) && !strncmp(n, QTK_DIT_PREFIX, strlen(QTK_DIT_PREFIX)))
			n += strlen(QTK_DIT_PREFIX);
		if (strlen(n) > name_max(g))
			return qtk_fail(st, QTK_E_UNSUPPORTED,
			                "tensor '%s': a GGUF tensor name of %zu bytes: %s reads at most %zu",
			                n, strlen(n), g->fam ? g->fam->gguf_reader : "ggml",
			                name_max(g));
		snprintf(out->name, sizeof out->name, "%s", n);
	}
	if (t->ndim > QTK_GGUF_MAX_DIMS) {
		/* GGUF holds at most 4 dims (Wan's Conv3d patch embedding has 5):
		 * store [rows][cols] and the real shape where ComfyUI-GGUF's loader
		 * looks for it, an INT32 array under comfy.gguf.orig_shape.NAME */
		for (uint32_t k = 0; k < t->ndim; k++) {
			if (t->shape[k] > INT32_MAX)
				return qtk_fail(st, QTK_E_UNSUPPORTED,
				                "tensor '%s': dim %llu does not fit GGUF's INT32 orig_shape",
				                t->name, (unsigned long long)t->shape[k]);
			dims[k] = (int32_t)t->shape[k];
		}
		out->flat = 1;
	}
	QTK_TRY(plan_type(t, L, out, st));
	if (out->flat) {
		/* once the tensor is planned: a refused layout planned again
		 * (export --requantize) adds it once */
		snprintf(key, sizeof key, "comfy.gguf.orig_shape.%s", out->name);
		QTK_TRY(qtk_gguf_kvs_add_arr(g->kvs, key, QTK_GGUF_I32, dims, t->ndim, st));
	}
	return QTK_OK;
}

/* The ggml type of t; *L changed to what GGUF holds (see gguf_plan_tensor). */
static qtk_err plan_type(const src_tensor *t, qtk_q_layout *L, gguf_tensor_plan *out,
                         qtk_status *st)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);
	uint64_t cols = t->ndim ? t->shape[t->ndim - 1] : 1;
	qtk_status tmp;

	if (!qtk_dtype_is_float(t->dtype)) {
		/* signed integers: GGUF's I8..I64, copied as they are (whatever
		 * their size: they are not weights) */
		int ty = qtk_ggml_type_of_dtype(t->dtype);
		if (ty < 0)
			return qtk_fail(st, QTK_E_UNSUPPORTED,
			                "tensor '%s': %s tensors have no GGUF type (GGUF holds signed "
			                "integers only)", t->name, qtk_dtype_name(t->dtype));
		out->type = (uint32_t)ty;
		if (L->scheme != QTK_SCHEME_RAW)
			return qtk_fail(st, QTK_E_UNSUPPORTED,
			                "tensor '%s': an integer tensor can only be kept as it is",
			                t->name);
		return QTK_OK;
	}
	/* 1-D and tiny tensors in F32, as llama.cpp and ComfyUI-GGUF keep them */
	if (t->ndim <= 1 || t->nelem <= 1024) {
		L->scheme = t->dtype == QTK_DT_F32 && !t->blk_elems ? QTK_SCHEME_RAW
		                                                    : conv_float_scheme(QTK_DT_F32);
		L->group = 0;
		L->flags = 0;
		out->type = QTK_GGML_F32;
		return QTK_OK;
	}
	if (L->scheme == QTK_SCHEME_RAW && out->qk) {
		/* rows are gathered in GGUF order: a row-wise float copy */
		L->scheme = conv_float_scheme(t->dtype);
		s = qtk_q_scheme_get(L->scheme);
	}
	if (L->scheme == QTK_SCHEME_RAW && t->blk_elems) {
		out->type = t->gtype; /* kept ggml blocks are copied as they are */
		return QTK_OK;
	}
	if (L->scheme == QTK_SCHEME_RAW && t->dtype == QTK_DT_F64) {
		out->type = QTK_GGML_F64; /* kept as it is */
		return QTK_OK;
	}
	if (L->scheme == QTK_SCHEME_RAW) {
		/* F32/F16/BF16 as they are; F8 widened exactly to F32 */
		if (qtk_q_scheme_float(t->dtype) < 0) {
			L->scheme = conv_float_scheme(QTK_DT_F32);
			out->type = QTK_GGML_F32;
		} else {
			out->type = (uint32_t)qtk_ggml_type_of_dtype(t->dtype);
		}
		return QTK_OK;
	}
	if (s->float_store) {
		int ty = qtk_ggml_type_of_dtype(s->store_dtype);
		out->type = ty >= 0 ? (uint32_t)ty : QTK_GGML_F32;
		return QTK_OK;
	}
	if (qtk_gguf_type_for_layout(L, cols, &out->type, &tmp) == QTK_OK)
		return QTK_OK;
	if (cols % 32 != 0) {
		/* rows the 32-element block does not divide: F16, as llama.cpp */
		L->scheme = t->dtype == QTK_DT_F16 ? QTK_SCHEME_RAW : conv_float_scheme(QTK_DT_F16);
		L->group = 0;
		L->flags = 0;
		out->type = QTK_GGML_F16;
		out->fallback = L->scheme != QTK_SCHEME_RAW;
		return QTK_OK;
	}
	return qtk_fail(st, QTK_E_UNSUPPORTED, "tensor '%s': GGUF cannot hold it: %s", t->name,
	                tmp.msg);
}

uint64_t gguf_row_bytes(uint32_t type, uint64_t cols)
{
	uint32_t be = qtk_ggml_block_elems(type), bb = qtk_ggml_block_bytes(type);

	return be ? cols / be * bb : 0;
}

/* ---- the sink -------------------------------------------------------- */

typedef struct {
	gguf_plan g;
	gguf_tensor_plan *gt;   /* [n] */
	size_t n;
	qtk_gguf_writer *w;
} gguf_out;

static qtk_err g_plan(void *ctx, size_t i, const src_tensor *t, qtk_q_layout *L,
                      int *auto_store, int *auto_scales, int scale_dtype_set, qtk_status *st)
{
	gguf_out *o = ctx;

	(void)scale_dtype_set;
	QTK_TRY(gguf_plan_tensor(&o->g, t, L, &o->gt[i], st));
	/* block types hold F16 scales by definition: the user's pick */
	*auto_store |= o->gt[i].fallback;
	*auto_scales = 0;
	return QTK_OK;
}

static uint64_t g_out_bytes(void *ctx, size_t i, uint64_t rows, uint64_t cols)
{
	uint32_t type = ((gguf_out *)ctx)->gt[i].type;

	return qtk_ggml_block_elems(type) > 1 ? gguf_row_bytes(type, cols) * rows : 0;
}

static int g_gathered(void *ctx, size_t i)
{
	return ((gguf_out *)ctx)->gt[i].qk != 0;
}

static uint64_t g_row_src(void *ctx, size_t i, uint64_t r, uint64_t rows)
{
	return qtk_gguf_llama_qk_src_row(r, rows, ((gguf_out *)ctx)->gt[i].n_head);
}

static qtk_err g_open(void *ctx, const char *path, const qtk_pack_desc *pd, size_t n,
                      const qtk_write_opts *wo, qtk_status *st)
{
	gguf_out *o = ctx;
	qtk_gguf_desc *d = qtk_calloc(n ? n : 1, sizeof *d);
	qtk_err rc;

	if (!d)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const qtk_pack_desc *t = &pd[i];

		d[i].name = o->gt[i].name;
		d[i].type = o->gt[i].type;
		d[i].n_dims = t->ndim ? t->ndim : 1;
		for (uint32_t k = 0; k < QTK_GGUF_MAX_DIMS; k++)
			d[i].ne[k] = k < t->ndim ? t->shape[t->ndim - 1 - k] : 1;
		if (o->gt[i].flat) { /* [rows][cols], the real shape in a KV */
			uint64_t rows = 1;
			for (uint32_t k = 0; k + 1 < t->ndim; k++)
				rows *= t->shape[k];
			d[i].n_dims = 2;
			d[i].ne[0] = t->shape[t->ndim - 1];
			d[i].ne[1] = rows;
		}
	}
	rc = qtk_gguf_writer_open(&o->w, path, o->g.kvs, d, n, wo, st);
	qtk_free(d);
	return rc;
}

static qtk_err g_put_bytes(void *ctx, size_t i, uint64_t off, const void *buf, size_t len,
                           qtk_status *st)
{
	return qtk_gguf_writer_put(((gguf_out *)ctx)->w, i, off, buf, len, st);
}

/* Float rows go as they are; quantized rows become ggml blocks. */
static qtk_err g_put_rows(void *ctx, size_t i, const qtk_q_layout *L, const qtk_q_cplanes *p,
                          uint64_t elem0, size_t nrows, size_t cols, int flat,
                          sink_scratch *sc, qtk_status *st)
{
	gguf_out *o = ctx;
	uint32_t type = o->gt[i].type;
	uint64_t rb;

	if (qtk_q_scheme_get(L->scheme)->float_store) {
		rb = qtk_q_row_bytes(L, cols, QTK_PLANE_CODES);
		return qtk_gguf_writer_put(o->w, i, flat ? elem0 * (rb / cols) : elem0 / cols * rb,
		                           p->p[QTK_PLANE_CODES], (size_t)(rb * nrows), st);
	}
	rb = gguf_row_bytes(type, cols);
	if (sc->cap < rb * nrows) {
		qtk_free(sc->p);
		sc->p = qtk_malloc((size_t)(rb * nrows));
		sc->cap = sc->p ? (size_t)(rb * nrows) : 0;
		if (!sc->p)
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	QTK_TRY(qtk_ggml_pack_rows(type, p, nrows, cols, sc->p, st));
	return qtk_gguf_writer_put(o->w, i, elem0 / cols * rb, sc->p, (size_t)(rb * nrows), st);
}

static void g_free(gguf_out *o)
{
	gguf_plan_end(&o->g);
	qtk_free(o->gt);
	qtk_free(o);
}

static qtk_err g_commit(void *ctx, const char *meta, qtk_status *st)
{
	gguf_out *o = ctx;
	qtk_err rc = qtk_gguf_writer_commit(o->w, st); /* GGUF has no place for meta */

	(void)meta;
	g_free(o);
	return rc;
}

static void g_abort(void *ctx)
{
	gguf_out *o = ctx;

	if (!o)
		return;
	qtk_gguf_writer_abort(o->w);
	g_free(o);
}

/* A stored layout (a .qtk source) GGUF cannot hold exactly: the same bits
 * as a block type of 32 (a scheme with no ggml type: its symmetric twin),
 * F16 scales, from the recorded source; F32 when a value needs it. */
static qtk_err g_requant(void *ctx, size_t i, const src_tensor *t, const char *plan_msg,
                         int requantize, int widen, qtk_q_layout *L, char *why, size_t nwhy,
                         qtk_status *st)
{
	gguf_out *o = ctx;
	const qtk_q_layout *S = t->stored;
	uint64_t cols = t->ndim ? t->shape[t->ndim - 1] : 1;

	if (plan_msg)
		snprintf(why, nwhy, "%s", conv_reason(plan_msg));
	else
		snprintf(why, nwhy, "rows of %llu: the 32-element block does not divide them "
		         "(GGUF keeps them in F16)", (unsigned long long)cols);
	if (!requantize)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "tensor '%s': GGUF cannot hold the stored "
		                "%s/g%u exactly: %s (use --requantize)", t->name,
		                qtk_q_scheme_get(S->scheme)->name, S->group, why);
	if (plan_msg) { /* refused: else *L is the planner's F16 already */
		*L = *S;
		L->flags = 0;
		L->scale_dtype = QTK_DT_F16;
		if (qtk_ggml_type_of_scheme(L->scheme) < 0)
			L->scheme = qtk_q_scheme_get(S->scheme)->requant_sym;
		L->group = 32;
		QTK_TRY(gguf_plan_tensor(&o->g, t, L, &o->gt[i], st));
	}
	if (widen && L->scheme != QTK_SCHEME_RAW) {
		memset(L, 0, sizeof *L);
		L->scheme = conv_float_scheme(QTK_DT_F32);
		L->dtype = t->dtype;
		o->gt[i].type = QTK_GGML_F32;
	}
	return QTK_OK;
}

static const sink_ops gguf_ops = {
	.plan = g_plan, .out_bytes = g_out_bytes, .gathered = g_gathered, .row_src = g_row_src,
	.keeps_blocks = 1,
	.open = g_open, .put_bytes = g_put_bytes, .put_rows = g_put_rows,
	.commit = g_commit, .abort = g_abort, .requant = g_requant,
};

qtk_err sink_gguf_new(sink *k, const sink_args *a, qtk_status *st)
{
	gguf_out *o = qtk_calloc(1, sizeof *o);

	if (!o)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	/* the sink exists from here: abort frees whatever was made */
	k->ops = &gguf_ops;
	k->ctx = o;
	o->n = a->s->n;
	if (!(o->gt = qtk_calloc(o->n ? o->n : 1, sizeof *o->gt)))
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	return gguf_plan_begin(&o->g, a->s, a->main_scheme, st);
}
