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

/* ---- Hugging Face config ---------------------------------------------- */

static qtk_err cfg_u32(json_t *c, const char *where, const char *key, int required,
                       uint32_t def, uint32_t *out, qtk_status *st)
{
	json_t *v = json_object_get(c, key);

	if ((!v || json_is_null(v)) && !required) {
		*out = def;
		return QTK_OK;
	}
	if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > UINT32_MAX)
		return qtk_fail(st, QTK_E_FORMAT, "%s: '%s' %s", where, key,
		                v ? "is not a positive 32-bit integer" : "is missing");
	*out = (uint32_t)json_integer_value(v);
	return QTK_OK;
}

static qtk_err cfg_f32(json_t *c, const char *where, const char *key, int required,
                       float def, float *out, qtk_status *st)
{
	json_t *v = json_object_get(c, key);

	if ((!v || json_is_null(v)) && !required) {
		*out = def;
		return QTK_OK;
	}
	if (!json_is_number(v) || !isfinite(json_number_value(v)))
		return qtk_fail(st, QTK_E_FORMAT, "%s: '%s' %s", where, key,
		                v ? "is not a finite number" : "is missing");
	*out = (float)json_number_value(v);
	return QTK_OK;
}

/* A true boolean at key is something the forward does not have. */
static qtk_err cfg_refuse_true(json_t *c, const char *where, const char *key,
                               qtk_status *st)
{
	if (json_is_true(json_object_get(c, key)))
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: '%s' is true: not supported", where, key);
	return QTK_OK;
}

static qtk_err cfg_arch(json_t *c, const char *where, qtk_status *st)
{
	static const char *const ok[] = { "llama", "mistral" };
	json_t *mt = json_object_get(c, "model_type");
	const char *act;

	if (json_is_string(mt)) {
		size_t i = 0;
		while (i < sizeof ok / sizeof *ok && strcmp(json_string_value(mt), ok[i]))
			i++;
		if (i == sizeof ok / sizeof *ok)
			return qtk_fail(st, QTK_E_UNSUPPORTED,
			                "%s: model_type '%s' is not one qtk runs (llama, mistral)", where,
			                json_string_value(mt));
	}
	act = json_string_value(json_object_get(c, "hidden_act"));
	if (act && strcmp(act, "silu"))
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: hidden_act '%s' is not supported (silu)",
		                where, act);
	QTK_TRY(cfg_refuse_true(c, where, "attention_bias", st));
	QTK_TRY(cfg_refuse_true(c, where, "mlp_bias", st));
	if (json_object_get(c, "rope_scaling") && !json_is_null(json_object_get(c, "rope_scaling")))
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: rope_scaling is not supported", where);
	return QTK_OK;
}

static qtk_err cfg_parse(json_t *c, const char *where, qtk_rt_lm_desc *d, qtk_status *st)
{
	float prf;

	memset(d, 0, sizeof *d);
	if (!json_is_object(c))
		return qtk_fail(st, QTK_E_FORMAT, "%s: the config is not a JSON object", where);
	QTK_TRY(cfg_arch(c, where, st));
	QTK_TRY(cfg_u32(c, where, "hidden_size", 1, 0, &d->n_embd, st));
	QTK_TRY(cfg_u32(c, where, "num_hidden_layers", 1, 0, &d->n_layer, st));
	QTK_TRY(cfg_u32(c, where, "num_attention_heads", 1, 0, &d->n_head, st));
	QTK_TRY(cfg_u32(c, where, "num_key_value_heads", 0, d->n_head, &d->n_head_kv, st));
	QTK_TRY(cfg_u32(c, where, "intermediate_size", 1, 0, &d->n_ff, st));
	QTK_TRY(cfg_u32(c, where, "max_position_embeddings", 0, 2048, &d->n_ctx, st));
	QTK_TRY(cfg_u32(c, where, "vocab_size", 0, 0, &d->n_vocab, st));
	if (d->n_embd % d->n_head)
		return qtk_fail(st, QTK_E_FORMAT, "%s: %u heads do not divide hidden_size %u", where,
		                d->n_head, d->n_embd);
	QTK_TRY(cfg_u32(c, where, "head_dim", 0, d->n_embd / d->n_head, &d->head_dim, st));
	QTK_TRY(cfg_f32(c, where, "rms_norm_eps", 1, 0, &d->rms_eps, st));
	QTK_TRY(cfg_f32(c, where, "rope_theta", 0, 10000.0f, &d->rope_theta, st));
	QTK_TRY(cfg_u32(c, where, "sliding_window", 0, 0, &d->window, st));
	QTK_TRY(cfg_f32(c, where, "partial_rotary_factor", 0, 1.0f, &prf, st));
	if (!(prf > 0.0f && prf <= 1.0f))
		return qtk_fail(st, QTK_E_FORMAT, "%s: partial_rotary_factor %g is not in (0, 1]",
		                where, (double)prf);
	d->rope_dims = (uint32_t)((float)d->head_dim * prf);
	d->tied = json_is_true(json_object_get(c, "tie_word_embeddings"));
	d->rope = QTK_RT_ROPE_HALF;
	d->names = QTK_RT_NAMES_HF;
	return QTK_OK;
}

qtk_err lm_desc_config_file(const char *path, qtk_rt_lm_desc *d, qtk_status *st)
{
	json_error_t e;
	json_t *root;
	qtk_err rc;
	char *text;
	size_t len;

	QTK_TRY(qtk_fmt_read_input(path, &text, &len, st));
	root = json_loadb(text, len, 0, &e);
	qtk_free(text);
	if (!root)
		return qtk_fail(st, QTK_E_FORMAT, "%s: %s (line %d)", path, e.text, e.line);
	rc = cfg_parse(root, path, d, st);
	json_decref(root);
	return rc;
}

qtk_err lm_desc_qtk_meta(const char *meta, const char *where, qtk_rt_lm_desc *d, int *have,
                         char **src_path, int *src_gguf, qtk_status *st)
{
	json_t *root = meta ? json_loads(meta, 0, NULL) : NULL;
	json_t *src, *cfg, *f0;
	const char *fmt, *p;
	char w[512];
	qtk_err rc = QTK_OK;

	*have = 0;
	*src_path = NULL;
	*src_gguf = 0;
	if (!json_is_object(root)) {
		json_decref(root);
		return qtk_fail(st, QTK_E_FORMAT, "%s: the metadata is not a JSON object", where);
	}
	src = json_object_get(root, "source");
	fmt = json_string_value(json_object_get(src, "format"));
	f0 = json_array_get(json_object_get(src, "files"), 0);
	p = json_string_value(json_object_get(f0, "path"));
	*src_gguf = fmt && !strcmp(fmt, "gguf");
	if (p && !(*src_path = qtk_strdup(p)))
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", where);
	cfg = json_object_get(root, "config");
	if (!rc && cfg) {
		snprintf(w, sizeof w, "%s: metadata config", where);
		rc = cfg_parse(cfg, w, d, st);
		*have = rc == QTK_OK;
	}
	json_decref(root);
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
