/* formats: LLaMA-family helpers for GGUF export — HF LlamaForCausalLM
 * tensor names to llama.cpp's, the q/k row order (HF rotate-half back to
 * ggml's interleaved RoPE), the llama.* hyper-parameters from config.json,
 * and the sentencepiece vocabulary from tokenizer.model (protobuf wire
 * format, read with bounds checks) as tokenizer.ggml.* KVs. */
#include <stdio.h>
#include <stdlib.h>

#include "fileio.h"
#include "gguf_impl.h"

/* ---- names ------------------------------------------------------------ */

static const struct { const char *hf, *gg; } layer_names[] = {
	{ "self_attn.q_proj", "attn_q" },     { "self_attn.k_proj", "attn_k" },
	{ "self_attn.v_proj", "attn_v" },     { "self_attn.o_proj", "attn_output" },
	{ "mlp.gate_proj", "ffn_gate" },      { "mlp.up_proj", "ffn_up" },
	{ "mlp.down_proj", "ffn_down" },      { "input_layernorm", "attn_norm" },
	{ "post_attention_layernorm", "ffn_norm" },
};

qtk_err qtk_gguf_llama_name(const char *hf, char *out, size_t n, int *qk)
{
	const char *suffix, *p;
	char *end;
	unsigned long layer;
	int w;

	*qk = 0;
	if (!strcmp(hf, "model.embed_tokens.weight"))
		w = snprintf(out, n, "token_embd.weight");
	else if (!strcmp(hf, "model.norm.weight"))
		w = snprintf(out, n, "output_norm.weight");
	else if (!strcmp(hf, "lm_head.weight"))
		w = snprintf(out, n, "output.weight");
	else if (!strncmp(hf, "model.layers.", 13) && hf[13] >= '0' && hf[13] <= '9') {
		layer = strtoul(hf + 13, &end, 10);
		if (*end != '.' || layer > 100000)
			return QTK_E_NOT_FOUND;
		p = end + 1;
		suffix = strrchr(p, '.');
		if (!suffix || (strcmp(suffix, ".weight") && strcmp(suffix, ".bias")))
			return QTK_E_NOT_FOUND;
		for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++) {
			size_t l = strlen(layer_names[i].hf);
			if ((size_t)(suffix - p) == l && !strncmp(p, layer_names[i].hf, l)) {
				*qk = i < 2 ? (int)i + 1 : 0;
				w = snprintf(out, n, "blk.%lu.%s%s", layer, layer_names[i].gg, suffix);
				return w > 0 && (size_t)w < n ? QTK_OK : QTK_E_ARG;
			}
		}
		return QTK_E_NOT_FOUND;
	} else
		return QTK_E_NOT_FOUND;
	return w > 0 && (size_t)w < n ? QTK_OK : QTK_E_ARG;
}

/* ---- q/k row order ---------------------------------------------------- */

/* HF stores head h's rows as [t][p] (t in {0,1}: the two rotate-half
 * halves, p < hd/2); ggml as [p][t] (interleaved pairs). ggml row
 * h*hd + 2p + t comes from HF row h*hd + t*hd/2 + p. */
uint64_t qtk_gguf_llama_qk_src_row(uint64_t row, uint64_t rows, uint32_t n_head)
{
	uint64_t hd = rows / n_head, h = row / hd, r = row % hd;

	return h * hd + (r & 1) * (hd / 2) + r / 2;
}

qtk_err qtk_gguf_llama_unpermute(const void *src, void *dst, uint64_t rows, uint64_t row_bytes,
                                 uint32_t n_head, qtk_status *st)
{
	uint64_t sz;

	if (!n_head || rows % n_head || (rows / n_head) % 2)
		return qtk_fail(st, QTK_E_GG_LAYOUT,
		                "q/k un-permutation: %llu rows do not split into %u heads of even size",
		                (unsigned long long)rows, n_head);
	if (__builtin_mul_overflow(rows, row_bytes, &sz) || sz > SIZE_MAX)
		return qtk_fail(st, QTK_E_OVERFLOW, "q/k un-permutation: size overflows");
	for (uint64_t r = 0; r < rows; r++)
		memcpy((uint8_t *)dst + r * row_bytes,
		       (const uint8_t *)src + qtk_gguf_llama_qk_src_row(r, rows, n_head) * row_bytes,
		       (size_t)row_bytes);
	return QTK_OK;
}

/* ---- config.json (qtk_model_desc) -------------------------------------- */

static qtk_err cfg_u32(const qtk_model_desc *d, int key, int required, uint32_t def,
                       uint32_t *out, qtk_status *st)
{
	const qtk_model_val *v = &d->v[key];

	if (v->kind == QTK_MV_ABSENT && !required) {
		*out = def;
		return QTK_OK;
	}
	if (v->kind != QTK_MV_INT || v->i <= 0 || v->i > UINT32_MAX)
		return qtk_fail(st, QTK_E_GG_CONFIG, "%s: '%s' %s", d->where, qtk_model_key_name(key),
		                v->kind != QTK_MV_ABSENT ? "is not a positive 32-bit integer"
		                                         : "is missing");
	*out = (uint32_t)v->i;
	return QTK_OK;
}

static int is_number(const qtk_model_val *v)
{
	return v->kind == QTK_MV_INT || v->kind == QTK_MV_REAL;
}

static qtk_err config_parse(const qtk_model_desc *d, qtk_gguf_llama_hparams *hp,
                            qtk_status *st)
{
	const char *path = d->where;
	const qtk_model_val *v;

	memset(hp, 0, sizeof *hp);
	QTK_TRY(cfg_u32(d, QTK_MK_HIDDEN_SIZE, 1, 0, &hp->n_embd, st));
	QTK_TRY(cfg_u32(d, QTK_MK_NUM_HIDDEN_LAYERS, 1, 0, &hp->n_layer, st));
	QTK_TRY(cfg_u32(d, QTK_MK_NUM_ATTENTION_HEADS, 1, 0, &hp->n_head, st));
	QTK_TRY(cfg_u32(d, QTK_MK_NUM_KEY_VALUE_HEADS, 0, hp->n_head, &hp->n_head_kv, st));
	QTK_TRY(cfg_u32(d, QTK_MK_INTERMEDIATE_SIZE, 1, 0, &hp->n_ff, st));
	QTK_TRY(cfg_u32(d, QTK_MK_MAX_POSITION_EMBEDDINGS, 0, 2048, &hp->n_ctx, st));
	QTK_TRY(cfg_u32(d, QTK_MK_VOCAB_SIZE, 0, 0, &hp->n_vocab, st));
	if (hp->n_embd % hp->n_head || hp->n_head % hp->n_head_kv)
		return qtk_fail(st, QTK_E_GG_CONFIG,
		                "%s: hidden_size %u, %u heads and %u KV heads do not divide", path,
		                hp->n_embd, hp->n_head, hp->n_head_kv);
	hp->head_dim = hp->n_embd / hp->n_head;
	v = &d->v[QTK_MK_HEAD_DIM];
	if (v->kind == QTK_MV_INT && v->i != hp->head_dim)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: head_dim %lld differs from hidden_size / heads",
		                path, (long long)v->i);
	v = &d->v[QTK_MK_RMS_NORM_EPS];
	if (!is_number(v))
		return qtk_fail(st, QTK_E_GG_CONFIG, "%s: 'rms_norm_eps' is missing or not a number", path);
	hp->rms_eps = (float)v->d;
	v = &d->v[QTK_MK_ROPE_THETA];
	hp->rope_theta = is_number(v) ? (float)v->d : 10000.0f;
	hp->tied = d->v[QTK_MK_TIE_WORD_EMBEDDINGS].kind == QTK_MV_TRUE;
	v = &d->v[QTK_MK_ROPE_SCALING];
	if (v->kind != QTK_MV_ABSENT && v->kind != QTK_MV_NULL)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: rope_scaling is not supported yet", path);
	return QTK_OK;
}

qtk_err qtk_gguf_llama_config(const char *config_path, qtk_gguf_kvs *k,
                              qtk_gguf_llama_hparams *hp, qtk_status *st)
{
	qtk_model_desc *d = qtk_malloc(sizeof *d);
	qtk_err rc;

	if (!d)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", config_path);
	rc = qtk_model_desc_read(config_path, d, st);
	if (rc == QTK_E_FORMAT)
		st->code = rc = QTK_E_GG_CONFIG; /* not JSON */
	if (!rc)
		rc = qtk_gguf_llama_desc(d, k, hp, st);
	qtk_free(d);
	return rc;
}

qtk_err qtk_gguf_llama_desc(const qtk_model_desc *d, qtk_gguf_kvs *k,
                            qtk_gguf_llama_hparams *hp, qtk_status *st)
{
	qtk_err rc;

	rc = d->is_object ? config_parse(d, hp, st)
	                  : qtk_fail(st, QTK_E_GG_CONFIG, "%s: not a JSON object", d->where);
	if (rc || !k)
		return rc;
	QTK_TRY(qtk_gguf_kvs_add_str(k, "general.architecture", "llama", 5, st));
	QTK_TRY(qtk_gguf_kvs_add_u32(k, "llama.context_length", hp->n_ctx, st));
	QTK_TRY(qtk_gguf_kvs_add_u32(k, "llama.embedding_length", hp->n_embd, st));
	QTK_TRY(qtk_gguf_kvs_add_u32(k, "llama.block_count", hp->n_layer, st));
	QTK_TRY(qtk_gguf_kvs_add_u32(k, "llama.feed_forward_length", hp->n_ff, st));
	QTK_TRY(qtk_gguf_kvs_add_u32(k, "llama.rope.dimension_count", hp->head_dim, st));
	QTK_TRY(qtk_gguf_kvs_add_u32(k, "llama.attention.head_count", hp->n_head, st));
	QTK_TRY(qtk_gguf_kvs_add_u32(k, "llama.attention.head_count_kv", hp->n_head_kv, st));
	QTK_TRY(qtk_gguf_kvs_add_f32(k, "llama.attention.layer_norm_rms_epsilon", hp->rms_eps, st));
	QTK_TRY(qtk_gguf_kvs_add_f32(k, "llama.rope.freq_base", hp->rope_theta, st));
	if (hp->n_vocab)
		QTK_TRY(qtk_gguf_kvs_add_u32(k, "llama.vocab_size", hp->n_vocab, st));
	return QTK_OK;
}

/* ---- sentencepiece tokenizer.model ------------------------------------ */

typedef struct {
	const uint8_t *p, *end;
} pb;

static int pb_varint(pb *b, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (b->p >= b->end)
			return -1;
		uint8_t c = *b->p++;
		*v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			return 0;
	}
	return -1;
}

/* Next field: number, wire type, and for wire type 2 the payload. */
static int pb_field(pb *b, uint32_t *field, uint32_t *wt, pb *sub, uint64_t *ival)
{
	uint64_t key, len;

	if (pb_varint(b, &key) || (key >> 3) == 0 || (key >> 3) > UINT32_MAX)
		return -1;
	*field = (uint32_t)(key >> 3);
	*wt = key & 7;
	switch (*wt) {
	case 0:
		return pb_varint(b, ival);
	case 1:
		if (b->end - b->p < 8)
			return -1;
		*ival = gg_le64(b->p);
		b->p += 8;
		return 0;
	case 2:
		if (pb_varint(b, &len) || len > (uint64_t)(b->end - b->p))
			return -1;
		sub->p = b->p;
		sub->end = b->p + len;
		b->p += len;
		return 0;
	case 5:
		if (b->end - b->p < 4)
			return -1;
		*ival = gg_le32(b->p);
		b->p += 4;
		return 0;
	}
	return -1;
}

void qtk_spm_free(qtk_spm_vocab *v)
{
	if (!v)
		return;
	qtk_free(v->pieces);
	qtk_free(v->lens);
	qtk_free(v->scores);
	qtk_free(v->types);
	if (v->map_) {
		qtk_map_close(v->map_);
		qtk_free(v->map_);
	}
	qtk_free(v);
}

static qtk_err spm_bad(qtk_status *st, const char *path, const char *what, uint64_t i)
{
	return qtk_fail(st, QTK_E_GG_TOKENIZER, "%s: not a sentencepiece model: %s (piece %llu)",
	                path, what, (unsigned long long)i);
}

/* normalizer_spec {2 precompiled_charsmap, 3 add_dummy_prefix,
 * 4 remove_extra_whitespaces, 5 escape_whitespaces} */
static qtk_err spm_normalizer(qtk_spm_vocab *v, pb sub, const char *path, qtk_status *st)
{
	uint32_t f, wt;
	uint64_t iv;
	pb s2;

	while (sub.p < sub.end) {
		if (pb_field(&sub, &f, &wt, &s2, &iv))
			return spm_bad(st, path, "bad normalizer_spec field", 0);
		if (f == 2 && wt == 2)
			v->has_charsmap = s2.end > s2.p;
		else if (wt == 0 && f == 3)
			v->add_dummy_prefix = iv != 0;
		else if (wt == 0 && f == 4)
			v->remove_extra_ws = iv != 0;
		else if (wt == 0 && f == 5)
			v->escape_ws = iv != 0;
	}
	return QTK_OK;
}

/* ModelProto: 1 = repeated SentencePiece {1 piece, 2 score (f32), 3 type},
 * 2 = TrainerSpec {3 model_type, 24 treat_whitespace_as_suffix,
 * 35 byte_fallback, 40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id},
 * 3 = NormalizerSpec (spm_normalizer). */
static qtk_err spm_parse(qtk_spm_vocab *v, const char *path, qtk_status *st)
{
	const qtk_map *m = v->map_;
	pb b = { m->data, m->data + m->size }, sub, s2;
	uint32_t f, wt;
	uint64_t iv, n = 0;

	if (!m->size)
		return spm_bad(st, path, "empty file", 0);
	/* count pieces first: each takes at least 2 bytes, so n <= size/2 */
	while (b.p < b.end) {
		if (pb_field(&b, &f, &wt, &sub, &iv))
			return spm_bad(st, path, "bad field", n);
		n += f == 1 && wt == 2;
	}
	v->pieces = qtk_calloc(n ? n : 1, sizeof *v->pieces);
	v->lens = qtk_calloc(n ? n : 1, sizeof *v->lens);
	v->scores = qtk_calloc(n ? n : 1, sizeof *v->scores);
	v->types = qtk_calloc(n ? n : 1, sizeof *v->types);
	if (!v->pieces || !v->lens || !v->scores || !v->types)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	v->unk_id = 0;
	v->bos_id = 1;
	v->eos_id = 2;
	v->pad_id = -1;
	v->model_type = 1;
	v->add_dummy_prefix = v->remove_extra_ws = v->escape_ws = 1;
	b.p = m->data;
	while (b.p < b.end) {
		pb_field(&b, &f, &wt, &sub, &iv);
		if (f == 1 && wt == 2) {
			uint64_t i = v->n++;
			int have_piece = 0;
			v->types[i] = 1; /* NORMAL unless given */
			while (sub.p < sub.end) {
				if (pb_field(&sub, &f, &wt, &s2, &iv))
					return spm_bad(st, path, "bad piece field", i);
				if (f == 1 && wt == 2) {
					v->pieces[i] = (const char *)s2.p;
					v->lens[i] = (size_t)(s2.end - s2.p);
					have_piece = 1;
				} else if (f == 2 && wt == 5) {
					uint32_t u = (uint32_t)iv;
					memcpy(&v->scores[i], &u, 4);
				} else if (f == 3 && wt == 0) {
					if (iv < 1 || iv > 6)
						return spm_bad(st, path, "unknown piece type", i);
					v->types[i] = (int32_t)iv;
				}
			}
			if (!have_piece)
				return spm_bad(st, path, "piece without text", i);
		} else if (f == 2 && wt == 2) {
			while (sub.p < sub.end) {
				if (pb_field(&sub, &f, &wt, &s2, &iv))
					return spm_bad(st, path, "bad trainer_spec field", 0);
				if (wt == 0 && f >= 40 && f <= 43) {
					int32_t id = (int32_t)(uint32_t)iv;
					if (f == 40) v->unk_id = id;
					if (f == 41) v->bos_id = id;
					if (f == 42) v->eos_id = id;
					if (f == 43) v->pad_id = id;
				} else if (wt == 0 && f == 3)
					v->model_type = (int32_t)(uint32_t)iv;
				else if (wt == 0 && f == 24)
					v->ws_as_suffix = iv != 0;
				else if (wt == 0 && f == 35)
					v->byte_fallback = iv != 0;
			}
		} else if (f == 3 && wt == 2) {
			QTK_TRY(spm_normalizer(v, sub, path, st));
		}
	}
	if (v->n == 0)
		return spm_bad(st, path, "no pieces", 0);
	return QTK_OK;
}

qtk_err qtk_spm_read(const char *path, qtk_spm_vocab **out, qtk_status *st)
{
	qtk_spm_vocab *v;
	qtk_err rc;

	*out = NULL;
	if (!(v = qtk_calloc(1, sizeof *v)))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	if (!(v->map_ = qtk_calloc(1, sizeof(qtk_map)))) {
		qtk_free(v);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	((qtk_map *)v->map_)->fd = -1;
	rc = qtk_map_open(v->map_, path, st);
	if (!rc)
		rc = spm_parse(v, path, st);
	if (rc) {
		qtk_spm_free(v);
		return rc;
	}
	*out = v;
	return QTK_OK;
}

qtk_err qtk_gguf_spm_kvs(const qtk_spm_vocab *v, qtk_gguf_kvs *k, qtk_status *st)
{
	QTK_TRY(qtk_gguf_kvs_add_str(k, "tokenizer.ggml.model", "llama", 5, st));
	QTK_TRY(qtk_gguf_kvs_add_arr_str(k, "tokenizer.ggml.tokens", v->pieces, v->lens, v->n, st));
	QTK_TRY(qtk_gguf_kvs_add_arr(k, "tokenizer.ggml.scores", QTK_GGUF_F32, v->scores, v->n, st));
	QTK_TRY(qtk_gguf_kvs_add_arr(k, "tokenizer.ggml.token_type", QTK_GGUF_I32, v->types, v->n, st));
	if (v->bos_id >= 0)
		QTK_TRY(qtk_gguf_kvs_add_u32(k, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos_id, st));
	if (v->eos_id >= 0)
		QTK_TRY(qtk_gguf_kvs_add_u32(k, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos_id, st));
	if (v->unk_id >= 0)
		QTK_TRY(qtk_gguf_kvs_add_u32(k, "tokenizer.ggml.unknown_token_id", (uint32_t)v->unk_id, st));
	if (v->pad_id >= 0)
		QTK_TRY(qtk_gguf_kvs_add_u32(k, "tokenizer.ggml.padding_token_id", (uint32_t)v->pad_id, st));
	return QTK_OK;
}
