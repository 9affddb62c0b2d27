/* runtime: opening a LLaMA-family model — the file (.qtk, GGUF or
 * safetensors), its description, every weight found by name (Hugging Face
 * or GGUF names) and checked against the description, and the tokenizer
 * that goes with it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lm_impl.h"

/* ---- small helpers ------------------------------------------------------ */

static void *own(qtk_rt_lm *lm, void *p)
{
	if (!p)
		return NULL;
	if (lm->nowned == lm->cap_owned) {
		size_t cap = lm->cap_owned ? 2 * lm->cap_owned : 64;
		void **n = qtk_realloc(lm->owned, cap * sizeof *n);
		if (!n) {
			qtk_free(p);
			return NULL;
		}
		lm->owned = n;
		lm->cap_owned = cap;
	}
	lm->owned[lm->nowned++] = p;
	return p;
}

/* The first n bytes of path (0 if it has fewer or cannot be read). */
static int read_magic(const char *path, char *buf, size_t n)
{
	FILE *f = fopen(path, "rb");
	int ok;

	if (!f)
		return 0;
	ok = fread(buf, 1, n, f) == n;
	fclose(f);
	return ok;
}

static char *dir_of(const char *path)
{
	const char *s = strrchr(path, '/');
	char *d;

	if (!s)
		return qtk_strdup(".");
	if (s == path)
		return qtk_strdup("/");
	d = qtk_malloc((size_t)(s - path) + 1);
	if (d) {
		memcpy(d, path, (size_t)(s - path));
		d[s - path] = 0;
	}
	return d;
}

void lm_rows_f32(const qtk_rt_tensor *t, const qtk_q_layout *L, const void *scales,
                 uint64_t row0, size_t n, float *out)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);
	const uint8_t *codes = t->planes[QTK_PLANE_CODES].data;
	qtk_q_cplanes cp;

	if (!s->quantized) {
		qtk_dtype dt = s->mode == QTK_QMODE_RAW ? L->dtype : s->store_dtype;
		qtk_to_f32(dt, codes + row0 * t->cols * qtk_dtype_size(dt), out, n * (size_t)t->cols);
		return;
	}
	memset(&cp, 0, sizeof cp);
	cp.p[QTK_PLANE_CODES] = codes + row0 * qtk_q_row_bytes(L, t->cols, QTK_PLANE_CODES);
	cp.p[QTK_PLANE_SCALES] = (const uint8_t *)(scales ? scales : t->planes[QTK_PLANE_SCALES].data) +
	                         row0 * qtk_q_row_bytes(L, t->cols, QTK_PLANE_SCALES);
	if (s->has_bias)
		cp.p[QTK_PLANE_BIASES] = (const uint8_t *)t->planes[QTK_PLANE_BIASES].data +
		                         row0 * qtk_q_row_bytes(L, t->cols, QTK_PLANE_BIASES);
	qtk_q_dequantize_rows(L, &cp, n, (size_t)t->cols, out);
}

/* ---- weights by name ---------------------------------------------------- */

/* The scheme row that stores source bytes as they are (found in quant's
 * table by its mode, as the kernels find theirs). */
static qtk_scheme_id raw_scheme(void)
{
	for (int id = 0; id < QTK_SCHEME_COUNT; id++)
		if (qtk_q_scheme_get((qtk_scheme_id)id)->mode == QTK_QMODE_RAW)
			return (qtk_scheme_id)id;
	return (qtk_scheme_id)0;
}

/* A view of a safetensors tensor: in place for F32 (4-byte aligned), F16
 * and BF16 (2-byte aligned); other float dtypes widened to f32 at load. */
static qtk_err st_view(qtk_rt_lm *lm, const qtk_st_tensor *t, const qtk_rt_tensor **out,
                       qtk_status *st)
{
	qtk_rt_tensor *v = &lm->views[lm->nviews];
	const void *planes[QTK_PLANE_MAX] = { NULL };
	qtk_q_layout L = { .scheme = raw_scheme(), .dtype = t->dtype };
	uint64_t cols = t->ndim ? t->shape[t->ndim - 1] : 1, rows;
	uintptr_t a = (uintptr_t)t->data;

	if (lm->nviews == lm->cap_views)
		return qtk_fail(st, QTK_E_ARG, "%s: too many tensors looked up", lm->path);
	if (!qtk_dtype_is_float(t->dtype))
		return qtk_fail(st, QTK_E_FORMAT, "%s: tensor '%s': dtype %s is not a float type",
		                lm->path, t->name, qtk_dtype_name(t->dtype));
	rows = cols ? t->nelem / cols : 0;
	planes[QTK_PLANE_CODES] = t->data;
	if (!((t->dtype == QTK_DT_F32 && a % 4 == 0) ||
	      ((t->dtype == QTK_DT_F16 || t->dtype == QTK_DT_BF16) && a % 2 == 0))) {
		float *f;
		if (t->nelem > SIZE_MAX / sizeof(float) ||
		    !(f = own(lm, qtk_malloc((size_t)t->nelem * sizeof(float) + 1))))
			return qtk_fail(st, QTK_E_NOMEM, "%s: tensor '%s': out of memory", lm->path,
			                t->name);
		QTK_TRY(qtk_st_read_f32(t, 0, t->nelem, f, st));
		L.dtype = QTK_DT_F32;
		planes[QTK_PLANE_CODES] = f;
	}
	QTK_TRY(qtk_rt_tensor_init(v, t->name, &L, rows, cols, planes, st));
	lm->nviews++;
	*out = v;
	return QTK_OK;
}

/* Tensor `name`, or NULL (and QTK_OK) when the model has none. */
static qtk_err find(qtk_rt_lm *lm, const char *name, const qtk_rt_tensor **out, qtk_status *st)
{
	const qtk_st_tensor *t;

	*out = NULL;
	if (lm->rt) {
		*out = qtk_rt_find(lm->rt, name);
		return QTK_OK;
	}
	t = qtk_st_find(lm->st, name);
	return t ? st_view(lm, t, out, st) : QTK_OK;
}

/* Names of a block's tensors: Hugging Face, then GGUF. */
enum { W_Q, W_K, W_V, W_O, W_GATE, W_UP, W_DOWN, W_ATTN_NORM, W_FFN_NORM, W_COUNT };
static const char *const layer_pre[2] = { "model.layers.", "blk." };
static const char *const layer_suf[2][W_COUNT] = {
	{ ".self_attn.q_proj.weight", ".self_attn.k_proj.weight", ".self_attn.v_proj.weight",
	  ".self_attn.o_proj.weight", ".mlp.gate_proj.weight", ".mlp.up_proj.weight",
	  ".mlp.down_proj.weight", ".input_layernorm.weight", ".post_attention_layernorm.weight" },
	{ ".attn_q.weight", ".attn_k.weight", ".attn_v.weight", ".attn_output.weight",
	  ".ffn_gate.weight", ".ffn_up.weight", ".ffn_down.weight", ".attn_norm.weight",
	  ".ffn_norm.weight" },
};
static const char *const embd_name[2] = { "model.embed_tokens.weight", "token_embd.weight" };
static const char *const head_name[2] = { "lm_head.weight", "output.weight" };
static const char *const norm_name[2] = { "model.norm.weight", "output_norm.weight" };

/* A required tensor of shape (rows, cols) (rows 0: a vector of cols). */
static qtk_err need(qtk_rt_lm *lm, const char *name, uint64_t rows, uint64_t cols,
                    const qtk_rt_tensor **out, qtk_status *st)
{
	const qtk_rt_tensor *t;

	QTK_TRY(find(lm, name, &t, st));
	if (!t)
		return qtk_fail(st, QTK_E_FORMAT, "%s: tensor '%s' is missing", lm->path, name);
	if (rows ? (t->rows != rows || t->cols != cols) : (t->rows * t->cols != cols))
		return qtk_fail(st, QTK_E_FORMAT,
		                "%s: tensor '%s' is [%llu, %llu]; the model description needs [%llu, %llu]",
		                lm->path, name, (unsigned long long)t->rows, (unsigned long long)t->cols,
		                (unsigned long long)(rows ? rows : 1), (unsigned long long)cols);
	if (rows && !qtk_rt_supported(&t->layout))
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: tensor '%s': no kernel reads scheme %s",
		                lm->path, name, qtk_q_scheme_get(t->layout.scheme)->name);
	*out = t;
	return QTK_OK;
}

/* A norm weight (n_embd) as an f32 copy. */
static qtk_err need_norm(qtk_rt_lm *lm, const char *name, float **out, qtk_status *st)
{
	const qtk_rt_tensor *t;
	const qtk_q_scheme *s;

	QTK_TRY(need(lm, name, 0, lm->d.n_embd, &t, st));
	s = qtk_q_scheme_get(t->layout.scheme);
	if ((t->layout.flags & QTK_QF_DOUBLE_QUANT) ||
	    (s->mode == QTK_QMODE_RAW && !qtk_dtype_is_float(t->layout.dtype)))
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: tensor '%s': a norm weight stored as %s",
		                lm->path, name, s->name);
	if (!(*out = own(lm, qtk_malloc(lm->d.n_embd * sizeof(float)))))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", lm->path);
	lm_rows_f32(t, &t->layout, NULL, 0, (size_t)t->rows, *out);
	return QTK_OK;
}

static void count(qtk_rt_lm *lm, const qtk_rt_tensor *t)
{
	const char *name;
	const qtk_q_scheme *s = qtk_q_scheme_get(t->layout.scheme);

	lm->params += t->rows * t->cols;
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		lm->bytes += t->planes[p].size;
	if (t == lm->embd && t != lm->head)
		return; /* a lookup table: not among the products */
	name = s->mode == QTK_QMODE_RAW
	     ? (t->layout.dtype == QTK_DT_F32 ? "f32" : t->layout.dtype == QTK_DT_F16 ? "f16"
	        : t->layout.dtype == QTK_DT_BF16 ? "bf16" : "raw")
	     : s->name;
	if (!lm->scheme)
		lm->scheme = name;
	else if (strcmp(lm->scheme, name))
		lm->scheme = "mixed";
}

static qtk_err load_layer(qtk_rt_lm *lm, uint32_t l, qtk_status *st)
{
	const qtk_rt_lm_desc *d = &lm->d;
	lm_layer *L = &lm->layers[l];
	uint64_t q = (uint64_t)d->n_head * d->head_dim, kv = (uint64_t)d->n_head_kv * d->head_dim;
	char n[W_COUNT][160];

	for (int w = 0; w < W_COUNT; w++)
		snprintf(n[w], sizeof n[w], "%s%u%s", layer_pre[d->names], l, layer_suf[d->names][w]);
	QTK_TRY(need(lm, n[W_Q], q, d->n_embd, &L->wq, st));
	QTK_TRY(need(lm, n[W_K], kv, d->n_embd, &L->wk, st));
	QTK_TRY(need(lm, n[W_V], kv, d->n_embd, &L->wv, st));
	QTK_TRY(need(lm, n[W_O], d->n_embd, q, &L->wo, st));
	QTK_TRY(need(lm, n[W_GATE], d->n_ff, d->n_embd, &L->w_gate, st));
	QTK_TRY(need(lm, n[W_UP], d->n_ff, d->n_embd, &L->w_up, st));
	QTK_TRY(need(lm, n[W_DOWN], d->n_embd, d->n_ff, &L->w_down, st));
	QTK_TRY(need_norm(lm, n[W_ATTN_NORM], &L->attn_norm, st));
	QTK_TRY(need_norm(lm, n[W_FFN_NORM], &L->ffn_norm, st));
	count(lm, L->wq);
	count(lm, L->wk);
	count(lm, L->wv);
	count(lm, L->wo);
	count(lm, L->w_gate);
	count(lm, L->w_up);
	count(lm, L->w_down);
	lm->params += 2 * (uint64_t)d->n_embd;
	return QTK_OK;
}

/* Projections with a bias are another architecture (Qwen2 and the like). */
static qtk_err refuse_biases(qtk_rt_lm *lm, qtk_status *st)
{
	static const char *const bias[2][4] = {
		{ "model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.k_proj.bias",
		  "model.layers.0.self_attn.v_proj.bias", "model.layers.0.self_attn.o_proj.bias" },
		{ "blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias",
		  "blk.0.attn_output.bias" },
	};
	for (int i = 0; i < 4; i++) {
		const char *n = bias[lm->d.names][i];
		if (lm->st ? qtk_st_find(lm->st, n) != NULL : qtk_rt_find(lm->rt, n) != NULL)
			return qtk_fail(st, QTK_E_UNSUPPORTED,
			                "%s: tensor '%s': projections with biases are not supported",
			                lm->path, n);
	}
	return QTK_OK;
}

/* NF4 with double-quantized scales: rebuild the f32 group scales once so
 * embedding rows can be looked up one at a time. */
static qtk_err embd_lookup_layout(qtk_rt_lm *lm, qtk_status *st)
{
	const qtk_rt_tensor *t = lm->embd;
	uint64_t ng = t->rows * qtk_q_groups_per_row(&t->layout, t->cols);
	float *absmax;

	lm->embd_layout = t->layout;
	lm->embd_scales = NULL;
	if (!(t->layout.flags & QTK_QF_DOUBLE_QUANT))
		return QTK_OK;
	if (ng > SIZE_MAX / sizeof(float) || !(absmax = own(lm, qtk_malloc((size_t)ng * 4 + 4))))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", lm->path);
	qtk_q_double_dequant(t->planes[QTK_PLANE_SCALES].data, ng, t->planes[QTK_PLANE_DQ].data,
	                     absmax);
	lm->embd_layout.flags &= ~QTK_QF_DOUBLE_QUANT;
	lm->embd_layout.scale_dtype = QTK_DT_F32;
	lm->embd_scales = absmax;
	return QTK_OK;
}

/* The integer path's interleaved copy of every linear weight
 * (docs/kernels.md), made on a pool of every core; QTK_INTERLEAVE=0 keeps
 * the planes' kernels (for comparisons). */
static qtk_err interleave_all(qtk_rt_lm *lm, qtk_status *st)
{
	const char *env = getenv("QTK_INTERLEAVE");
	qtk_rt_pool *pool;
	qtk_err rc = QTK_OK;

	if (!lm->rt || (env && !strcmp(env, "0")))
		return QTK_OK;
	QTK_TRY(qtk_rt_pool_create(0, &pool, st));
	for (uint32_t l = 0; l < lm->d.n_layer && !rc; l++) {
		const lm_layer *L = &lm->layers[l];
		const qtk_rt_tensor *w[] = { L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up,
		                             L->w_down };
		for (size_t i = 0; i < sizeof w / sizeof *w && !rc; i++)
			rc = qtk_rt_model_interleave(lm->rt, w[i], pool, st);
	}
	if (!rc)
		rc = qtk_rt_model_interleave(lm->rt, lm->head, pool, st);
	qtk_rt_pool_free(pool);
	if (rc)
		qtk_status_prefix(st, lm->path);
	return rc;
}

static qtk_err load_weights(qtk_rt_lm *lm, qtk_status *st)
{
	qtk_rt_lm_desc *d = &lm->d;
	const qtk_rt_tensor *e, *h;
	int nm = d->names;

	QTK_TRY(find(lm, embd_name[nm], &e, st));
	if (!e)
		return qtk_fail(st, QTK_E_FORMAT, "%s: tensor '%s' is missing", lm->path, embd_name[nm]);
	if (d->n_vocab && e->rows != d->n_vocab)
		return qtk_fail(st, QTK_E_FORMAT, "%s: tensor '%s' has %llu rows; the vocabulary has %u",
		                lm->path, embd_name[nm], (unsigned long long)e->rows, d->n_vocab);
	if (e->rows > UINT32_MAX)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: vocabulary too large", lm->path);
	d->n_vocab = (uint32_t)e->rows;
	QTK_TRY(lm_desc_check(d, lm->path, st));
	QTK_TRY(need(lm, embd_name[nm], d->n_vocab, d->n_embd, &lm->embd, st));
	QTK_TRY(find(lm, head_name[nm], &h, st));
	d->tied = d->tied || !h;
	lm->head = lm->embd;
	if (!d->tied)
		QTK_TRY(need(lm, head_name[nm], d->n_vocab, d->n_embd, &lm->head, st));
	QTK_TRY(refuse_biases(lm, st));
	if (!(lm->layers = own(lm, qtk_calloc(d->n_layer, sizeof *lm->layers))))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", lm->path);
	for (uint32_t l = 0; l < d->n_layer; l++)
		QTK_TRY(load_layer(lm, l, st));
	QTK_TRY(need_norm(lm, norm_name[nm], &lm->out_norm, st));
	lm->params += d->n_embd;
	count(lm, lm->head);
	if (!d->tied)
		count(lm, lm->embd);
	QTK_TRY(embd_lookup_layout(lm, st));
	return interleave_all(lm, st);
}

/* ---- the description ---------------------------------------------------- */

/* A .qtk file: the config in its metadata, else the KVs of the source GGUF
 * it records. The names decide the RoPE pairing. */
static qtk_err desc_qtk(qtk_rt_lm *lm, qtk_status *st)
{
	int have;
	qtk_err rc;

	QTK_TRY(lm_desc_qtk_meta(qtk_rt_metadata(lm->rt), lm->path, &lm->d, &have, &lm->src_path,
	                         &lm->src_gguf, st));
	if (!have && lm->src_gguf && lm->src_path) {
		qtk_gguf_file *g;
		rc = qtk_gguf_open(lm->src_path, &g, st);
		if (rc == QTK_OK) {
			rc = lm_desc_gguf(g, lm->src_path, &lm->d, st);
			qtk_gguf_close(g);
		}
		if (rc)
			qtk_status_prefix(st, lm->path);
		QTK_TRY(rc);
		have = 1;
	}
	if (!have)
		return qtk_fail(st, QTK_E_FORMAT,
		                "%s: no model description: the metadata has no config and records no "
		                "source GGUF", lm->path);
	if (qtk_rt_find(lm->rt, embd_name[QTK_RT_NAMES_GGUF])) {
		lm->d.names = QTK_RT_NAMES_GGUF;
		lm->d.rope = QTK_RT_ROPE_INTERLEAVED;
	} else {
		lm->d.names = QTK_RT_NAMES_HF;
		lm->d.rope = QTK_RT_ROPE_HALF;
	}
	return QTK_OK;
}

static qtk_err open_file(qtk_rt_lm *lm, qtk_status *st)
{
	char magic[8], cfg[4096];

	if (read_magic(lm->path, magic, 4) && !memcmp(magic, QTK_GGUF_MAGIC, 4)) {
		QTK_TRY(qtk_rt_open(lm->path, 0, &lm->rt, st));
		return lm_desc_gguf(qtk_rt_gguf(lm->rt), lm->path, &lm->d, st);
	}
	if (read_magic(lm->path, magic, 8) && !memcmp(magic, QTK_PACK_MAGIC, 8)) {
		QTK_TRY(qtk_rt_open(lm->path, 0, &lm->rt, st));
		return desc_qtk(lm, st);
	}
	QTK_TRY(qtk_st_open(lm->path, &lm->st, st));
	qtk_free(lm->dir);
	if (!(lm->dir = qtk_strdup(qtk_st_dir(lm->st))))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", lm->path);
	if ((size_t)snprintf(cfg, sizeof cfg, "%s/config.json", lm->dir) >= sizeof cfg)
		return qtk_fail(st, QTK_E_ARG, "%s: path too long", lm->path);
	QTK_TRY(lm_desc_config_file(cfg, &lm->d, st));
	/* every tensor at most once, the embedding twice when tied */
	lm->cap_views = qtk_st_count(lm->st) + 2;
	if (!(lm->views = own(lm, qtk_calloc(lm->cap_views, sizeof *lm->views))))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", lm->path);
	return QTK_OK;
}

qtk_err qtk_rt_lm_open(const char *path, qtk_rt_lm **out, qtk_status *st)
{
	qtk_rt_lm *lm;
	qtk_err rc;

	if (!out || !path)
		return qtk_fail(st, QTK_E_ARG, "qtk_rt_lm_open: NULL argument");
	*out = NULL;
	if (!(lm = qtk_calloc(1, sizeof *lm)))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	lm->path = qtk_strdup(path);
	lm->dir = dir_of(path);
	if (!lm->path || !lm->dir)
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	else
		rc = open_file(lm, st);
	if (!rc)
		rc = load_weights(lm, st);
	if (rc) {
		qtk_rt_lm_close(lm);
		return rc;
	}
	*out = lm;
	return QTK_OK;
}

void qtk_rt_lm_close(qtk_rt_lm *lm)
{
	if (!lm)
		return;
	for (size_t i = 0; i < lm->nowned; i++)
		qtk_free(lm->owned[i]);
	qtk_free(lm->owned);
	qtk_rt_close(lm->rt);
	qtk_st_close(lm->st);
	qtk_free(lm->src_path);
	qtk_free(lm->dir);
	qtk_free(lm->path);
	qtk_free(lm);
}

const qtk_rt_lm_desc *qtk_rt_lm_describe(const qtk_rt_lm *lm)
{
	return lm ? &lm->d : NULL;
}

const char *qtk_rt_lm_scheme(const qtk_rt_lm *lm)
{
	return lm && lm->scheme ? lm->scheme : "";
}

uint64_t qtk_rt_lm_params(const qtk_rt_lm *lm, uint64_t *bytes)
{
	if (bytes)
		*bytes = lm ? lm->bytes : 0;
	return lm ? lm->params : 0;
}

/* ---- the tokenizer ------------------------------------------------------ */

static const char *const tok_files[] = { "tokenizer.model", "tokenizer.json", "tokenizer.bin" };

/* The first tokenizer file in dir; 1 if found (path in buf). */
static int tok_in(const char *dir, char *buf, size_t n)
{
	for (size_t i = 0; dir && i < sizeof tok_files / sizeof *tok_files; i++) {
		if ((size_t)snprintf(buf, n, "%s/%s", dir, tok_files[i]) >= n)
			continue;
		if (qtk_fmt_check_input(buf, NULL) == QTK_OK)
			return 1;
	}
	return 0;
}

static qtk_err tok_find(const qtk_rt_lm *lm, qtk_tok **out, qtk_status *st)
{
	char buf[4096], *sdir = NULL;
	qtk_err rc;

	if (lm->rt && qtk_rt_gguf(lm->rt))
		return qtk_tok_from_gguf(qtk_rt_gguf(lm->rt), lm->path, out, st);
	if (tok_in(lm->dir, buf, sizeof buf))
		return qtk_tok_open(buf, out, st);
	if (lm->src_path) {
		if (lm->src_gguf && qtk_fmt_check_input(lm->src_path, NULL) == QTK_OK)
			return qtk_tok_open(lm->src_path, out, st);
		/* the source may be a file or a directory of shards */
		if (tok_in(lm->src_path, buf, sizeof buf))
			return qtk_tok_open(buf, out, st);
		if (!(sdir = dir_of(lm->src_path)))
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		if (tok_in(sdir, buf, sizeof buf)) {
			qtk_free(sdir);
			return qtk_tok_open(buf, out, st);
		}
	}
	rc = qtk_fail(st, QTK_E_NOT_FOUND,
	              "%s: no tokenizer (tokenizer.model, tokenizer.json or tokenizer.bin) in %s%s%s; "
	              "give one with --tokenizer", lm->path, lm->dir, sdir ? " or " : "",
	              sdir ? sdir : "");
	qtk_free(sdir);
	return rc;
}

qtk_err qtk_rt_lm_tokenizer(const qtk_rt_lm *lm, const char *path, qtk_tok **out,
                            qtk_status *st)
{
	if (!lm || !out)
		return qtk_fail(st, QTK_E_ARG, "qtk_rt_lm_tokenizer: NULL argument");
	*out = NULL;
	QTK_TRY(path ? qtk_tok_open(path, out, st) : tok_find(lm, out, st));
	if (qtk_tok_count(*out) > lm->d.n_vocab) {
		qtk_err rc = qtk_fail(st, QTK_E_FORMAT,
		                      "%s: the tokenizer has %zu tokens, the model's vocabulary %u",
		                      path ? path : lm->path, qtk_tok_count(*out), lm->d.n_vocab);
		qtk_tok_close(*out);
		*out = NULL;
		return rc;
	}
	return QTK_OK;
}
