/* runtime: the description of a LLaMA-family model (qtk_rt_lm_desc) from
 * a GGUF file's llama.* KVs, a Hugging Face config.json, or the config a
 * .qtk file's metadata carries. What the forward cannot run (biases,
 * another activation, rope scaling) is refused by name here. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lm_impl.h"

/* ---- GGUF ------------------------------------------------------------- */

static qtk_err gg_u32(const qtk_gguf_file *g, const char *where, const char *arch,
                      const char *key, int required, uint32_t def, uint32_t *out,
                      qtk_status *st)
{
	char k[128];
	uint64_t v;
	qtk_err rc;

	snprintf(k, sizeof k, "%s.%s", arch, key);
	rc = qtk_gguf_get_uint(g, k, &v, st);
	if (rc == QTK_E_NOT_FOUND && !required) {
		*out = def;
		return QTK_OK;
	}
	if (rc == QTK_E_NOT_FOUND)
		return qtk_fail(st, QTK_E_FORMAT, "%s: key '%s' is missing", where, k);
	if (rc || v == 0 || v > UINT32_MAX)
		return qtk_fail(st, QTK_E_FORMAT, "%s: key '%s' is not a positive 32-bit integer",
		                where, k);
	*out = (uint32_t)v;
	return QTK_OK;
}

static qtk_err gg_f32(const qtk_gguf_file *g, const char *where, const char *arch,
                      const char *key, int required, float def, float *out, qtk_status *st)
{
	char k[128];
	double v;
	qtk_err rc;

	snprintf(k, sizeof k, "%s.%s", arch, key);
	rc = qtk_gguf_get_f64(g, k, &v, st);
	if (rc == QTK_E_NOT_FOUND && !required) {
		*out = def;
		return QTK_OK;
	}
	if (rc == QTK_E_NOT_FOUND)
		return qtk_fail(st, QTK_E_FORMAT, "%s: key '%s' is missing", where, k);
	if (rc || !isfinite(v))
		return qtk_fail(st, QTK_E_FORMAT, "%s: key '%s' is not a finite number", where, k);
	*out = (float)v;
	return QTK_OK;
}

qtk_err lm_desc_gguf(const qtk_gguf_file *g, const char *where, qtk_rt_lm_desc *d,
                     qtk_status *st)
{
	const char *a, *arch = "llama";
	uint64_t len;
	char k[128];

	memset(d, 0, sizeof *d);
	if (qtk_gguf_get_str(g, "general.architecture", &a, &len, st) != QTK_OK)
		return qtk_fail(st, QTK_E_FORMAT, "%s: no general.architecture string", where);
	if (len != 5 || memcmp(a, "llama", 5))
		return qtk_fail(st, QTK_E_UNSUPPORTED,
		                "%s: architecture '%.*s' is not one qtk runs (llama)", where,
		                (int)(len > 64 ? 64 : len), a);
	QTK_TRY(gg_u32(g, where, arch, "embedding_length", 1, 0, &d->n_embd, st));
	QTK_TRY(gg_u32(g, where, arch, "block_count", 1, 0, &d->n_layer, st));
	QTK_TRY(gg_u32(g, where, arch, "feed_forward_length", 1, 0, &d->n_ff, st));
	QTK_TRY(gg_u32(g, where, arch, "attention.head_count", 1, 0, &d->n_head, st));
	QTK_TRY(gg_u32(g, where, arch, "attention.head_count_kv", 0, d->n_head, &d->n_head_kv, st));
	QTK_TRY(gg_u32(g, where, arch, "context_length", 0, 2048, &d->n_ctx, st));
	if (d->n_embd % d->n_head)
		return qtk_fail(st, QTK_E_FORMAT, "%s: %u heads do not divide embedding_length %u",
		                where, d->n_head, d->n_embd);
	QTK_TRY(gg_u32(g, where, arch, "attention.key_length", 0, d->n_embd / d->n_head,
	               &d->head_dim, st));
	QTK_TRY(gg_u32(g, where, arch, "rope.dimension_count", 0, d->head_dim, &d->rope_dims, st));
	QTK_TRY(gg_u32(g, where, arch, "vocab_size", 0, 0, &d->n_vocab, st));
	QTK_TRY(gg_f32(g, where, arch, "attention.layer_norm_rms_epsilon", 1, 0, &d->rms_eps, st));
	QTK_TRY(gg_f32(g, where, arch, "rope.freq_base", 0, 10000.0f, &d->rope_theta, st));
	snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
	if (qtk_gguf_get_str(g, k, &a, &len, NULL) == QTK_OK && !(len == 4 && !memcmp(a, "none", 4)))
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: rope scaling '%.*s' is not supported",
		                where, (int)(len > 64 ? 64 : len), a);
	snprintf(k, sizeof k, "%s.attention.value_length", arch);
	{
		uint64_t vl;
		if (qtk_gguf_get_uint(g, k, &vl, NULL) == QTK_OK && vl != d->head_dim)
			return qtk_fail(st, QTK_E_UNSUPPORTED,
			                "%s: value_length %llu differs from key_length %u", where,
			                (unsigned long long)vl, d->head_dim);
	}
	d->rope = QTK_RT_ROPE_INTERLEAVED;
	d->names = QTK_RT_NAMES_GGUF;
	return QTK_OK;
}

/* ---- Hugging Face config (formats' qtk_model_desc) ------------------- */

static qtk_err cfg_u32(const qtk_model_desc *c, const char *where, int key, int required,
                       uint32_t def, uint32_t *out, qtk_status *st)
{
	const qtk_model_val *v = &c->v[key];

	if ((v->kind == QTK_MV_ABSENT || v->kind == QTK_MV_NULL) && !required) {
		*out = def;
		return QTK_OK;
	}
	if (v->kind != QTK_MV_INT || v->i <= 0 || v->i > UINT32_MAX)
		return qtk_fail(st, QTK_E_FORMAT, "%s: '%s' %s", where, qtk_model_key_name(key),
		                v->kind != QTK_MV_ABSENT ? "is not a positive 32-bit integer"
		                                         : "is missing");
	*out = (uint32_t)v->i;
	return QTK_OK;
}

static qtk_err cfg_f32(const qtk_model_desc *c, const char *where, int key, int required,
                       float def, float *out, qtk_status *st)
{
	const qtk_model_val *v = &c->v[key];

	if ((v->kind == QTK_MV_ABSENT || v->kind == QTK_MV_NULL) && !required) {
		*out = def;
		return QTK_OK;
	}
	if ((v->kind != QTK_MV_INT && v->kind != QTK_MV_REAL) || !isfinite(v->d))
		return qtk_fail(st, QTK_E_FORMAT, "%s: '%s' %s", where, qtk_model_key_name(key),
		                v->kind != QTK_MV_ABSENT ? "is not a finite number" : "is missing");
	*out = (float)v->d;
	return QTK_OK;
}

/* A true boolean at key is something the forward does not have. */
static qtk_err cfg_refuse_true(const qtk_model_desc *c, const char *where, int key,
                               qtk_status *st)
{
	if (c->v[key].kind == QTK_MV_TRUE)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: '%s' is true: not supported", where,
		                qtk_model_key_name(key));
	return QTK_OK;
}

static int str_is(const qtk_model_val *v, const char *s)
{
	return v->kind == QTK_MV_STRING && v->len == strlen(s) && !strcmp(v->s, s);
}

static qtk_err cfg_arch(const qtk_model_desc *c, const char *where, qtk_status *st)
{
	static const char *const ok[] = { "llama", "mistral" };
	const qtk_model_val *mt = &c->v[QTK_MK_MODEL_TYPE], *act = &c->v[QTK_MK_HIDDEN_ACT];
	const qtk_model_val *rs = &c->v[QTK_MK_ROPE_SCALING];

	if (mt->kind == QTK_MV_STRING) {
		size_t i = 0;
		while (i < sizeof ok / sizeof *ok && !str_is(mt, ok[i]))
			i++;
		if (i == sizeof ok / sizeof *ok)
			return qtk_fail(st, QTK_E_UNSUPPORTED,
			                "%s: model_type '%s' is not one qtk runs (llama, mistral)", where,
			                mt->s);
	}
	if (act->kind == QTK_MV_STRING && !str_is(act, "silu"))
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: hidden_act '%s' is not supported (silu)",
		                where, act->s);
	QTK_TRY(cfg_refuse_true(c, where, QTK_MK_ATTENTION_BIAS, st));
	QTK_TRY(cfg_refuse_true(c, where, QTK_MK_MLP_BIAS, st));
	if (rs->kind != QTK_MV_ABSENT && rs->kind != QTK_MV_NULL)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: rope_scaling is not supported", where);
	return QTK_OK;
}

static qtk_err cfg_parse(const qtk_model_desc *c, const char *where, qtk_rt_lm_desc *d,
                         qtk_status *st)
{
	float prf = 1.0f;

	memset(d, 0, sizeof *d);
	if (!c->is_object)
		return qtk_fail(st, QTK_E_FORMAT, "%s: the config is not a JSON object", where);
	QTK_TRY(cfg_arch(c, where, st));
	QTK_TRY(cfg_u32(c, where, QTK_MK_HIDDEN_SIZE, 1, 0, &d->n_embd, st));
	QTK_TRY(cfg_u32(c, where, QTK_MK_NUM_HIDDEN_LAYERS, 1, 0, &d->n_layer, st));
	QTK_TRY(cfg_u32(c, where, QTK_MK_NUM_ATTENTION_HEADS, 1, 0, &d->n_head, st));
	QTK_TRY(cfg_u32(c, where, QTK_MK_NUM_KEY_VALUE_HEADS, 0, d->n_head, &d->n_head_kv, st));
	QTK_TRY(cfg_u32(c, where, QTK_MK_INTERMEDIATE_SIZE, 1, 0, &d->n_ff, st));
	QTK_TRY(cfg_u32(c, where, QTK_MK_MAX_POSITION_EMBEDDINGS, 0, 2048, &d->n_ctx, st));
	QTK_TRY(cfg_u32(c, where, QTK_MK_VOCAB_SIZE, 0, 0, &d->n_vocab, st));
	if (d->n_embd % d->n_head)
		return qtk_fail(st, QTK_E_FORMAT, "%s: %u heads do not divide hidden_size %u", where,
		                d->n_head, d->n_embd);
	QTK_TRY(cfg_u32(c, where, QTK_MK_HEAD_DIM, 0, d->n_embd / d->n_head, &d->head_dim, st));
	QTK_TRY(cfg_f32(c, where, QTK_MK_RMS_NORM_EPS, 1, 0, &d->rms_eps, st));
	QTK_TRY(cfg_f32(c, where, QTK_MK_ROPE_THETA, 0, 10000.0f, &d->rope_theta, st));
	QTK_TRY(cfg_u32(c, where, QTK_MK_SLIDING_WINDOW, 0, 0, &d->window, st));
	QTK_TRY(cfg_f32(c, where, QTK_MK_PARTIAL_ROTARY_FACTOR, 0, 1.0f, &prf, st));
	if (!(prf > 0.0f && prf <= 1.0f))
		return qtk_fail(st, QTK_E_FORMAT, "%s: partial_rotary_factor %g is not in (0, 1]",
		                where, (double)prf);
	d->rope_dims = (uint32_t)((float)d->head_dim * prf);
	d->tied = c->v[QTK_MK_TIE_WORD_EMBEDDINGS].kind == QTK_MV_TRUE;
	d->rope = QTK_RT_ROPE_HALF;
	d->names = QTK_RT_NAMES_HF;
	return QTK_OK;
}

qtk_err lm_desc_config_file(const char *path, qtk_rt_lm_desc *d, qtk_status *st)
{
	qtk_model_desc *c = qtk_malloc(sizeof *c);
	qtk_err rc;

	if (!c)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	rc = qtk_model_desc_read(path, c, st);
	if (!rc)
		rc = cfg_parse(c, path, d, st);
	qtk_free(c);
	return rc;
}

/* The source a .qtk file's metadata records: its first file and format. */
static qtk_err meta_source(const char *meta, const char *where, char **src_path,
                           int *src_gguf, qtk_status *st)
{
	unsigned jm = qtk_json_begin();
	json_t *root = meta ? json_loads(meta, 0, NULL) : NULL;
	json_t *src = json_object_get(root, "source");
	const char *fmt = json_string_value(json_object_get(src, "format"));
	json_t *f0 = json_array_get(json_object_get(src, "files"), 0);
	const char *p = json_string_value(json_object_get(f0, "path"));
	int obj = json_is_object(root);
	qtk_err rc = QTK_OK;

	*src_gguf = fmt && !strcmp(fmt, "gguf");
	if (obj && p && !(*src_path = qtk_strdup(p)))
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", where);
	json_decref(root);
	if (qtk_json_end(jm))
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", where);
	else if (!obj)
		rc = qtk_fail(st, QTK_E_FORMAT, "%s: the metadata is not a JSON object", where);
	return rc;
}

qtk_err lm_desc_qtk_meta(const char *meta, const char *where, qtk_rt_lm_desc *d, int *have,
                         char **src_path, int *src_gguf, qtk_status *st)
{
	qtk_model_desc *c = NULL;
	char w[512];
	qtk_err rc;

	*have = 0;
	*src_path = NULL;
	*src_gguf = 0;
	rc = meta_source(meta, where, src_path, src_gguf, st);
	snprintf(w, sizeof w, "%s: metadata config", where);
	if (!rc && !(c = qtk_malloc(sizeof *c)))
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", where);
	if (!rc)
		rc = qtk_model_desc_parse(meta, strlen(meta), "config", w, c, st);
	if (!rc && c->present) {
		rc = cfg_parse(c, w, d, st);
		*have = rc == QTK_OK;
	}
	qtk_free(c);
	if (rc) {
		qtk_free(*src_path);
		*src_path = NULL;
	}
	return rc;
}

qtk_err lm_desc_check(const qtk_rt_lm_desc *d, const char *where, qtk_status *st)
{
	uint64_t q;

	if (!d->n_embd || !d->n_layer || !d->n_head || !d->n_head_kv || !d->head_dim ||
	    !d->n_ff || !d->n_vocab || !d->n_ctx)
		return qtk_fail(st, QTK_E_FORMAT, "%s: the model description has a zero size", where);
	if (d->n_head % d->n_head_kv)
		return qtk_fail(st, QTK_E_FORMAT, "%s: %u KV heads do not divide %u heads", where,
		                d->n_head_kv, d->n_head);
	if (d->rope_dims == 0 || d->rope_dims % 2 || d->rope_dims > d->head_dim)
		return qtk_fail(st, QTK_E_FORMAT,
		                "%s: RoPE over %u dimensions of heads of %u (must be even, > 0, <= head)",
		                where, d->rope_dims, d->head_dim);
	if (!(d->rms_eps > 0.0f) || !isfinite(d->rms_eps))
		return qtk_fail(st, QTK_E_FORMAT, "%s: RMSNorm epsilon %g is not positive", where,
		                (double)d->rms_eps);
	if (!(d->rope_theta > 0.0f) || !isfinite(d->rope_theta))
		return qtk_fail(st, QTK_E_FORMAT, "%s: RoPE theta %g is not positive", where,
		                (double)d->rope_theta);
	/* sizes the forward multiplies: heads * head_dim must fit easily */
	q = (uint64_t)d->n_head * d->head_dim;
	if (q > (1u << 24) || d->n_ff > (1u << 26) || d->n_embd > (1u << 24))
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: dimensions beyond what qtk runs", where);
	return QTK_OK;
}
