/* tests: the LLaMA export helpers on stories260K. Its HF checkpoint
 * (tests/data/stories260K/model.safetensors) was converted from the
 * llama.cpp-layout GGUF beside it with q/k rows permuted for rotate-half
 * RoPE (README.txt): mapping the names, un-permuting q/k and writing a
 * GGUF with the config and tokenizer KVs must give back exactly the
 * original tensors, hyper-parameters and 512-token vocabulary. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qtk_formats.h"
#include "test.h"

#define SRC_GGUF "stories260K/source-tinyllamas-stories-260k-f32.gguf"

/* A minimal safetensors reader for the test (F32 tensors only). */
typedef struct {
	char *buf;
	size_t size;
	json_t *hdr;
	size_t data0;
} st_file;

static int st_load(st_file *s, const char *path)
{
	uint64_t n = 0;
	s->buf = t_read_file(path, &s->size);
	if (!s->buf || s->size < 8)
		return -1;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | (uint8_t)s->buf[i];
	s->hdr = json_loadb(s->buf + 8, (size_t)n, 0, NULL);
	s->data0 = 8 + (size_t)n;
	return s->hdr ? 0 : -1;
}

static const float *st_tensor(const st_file *s, const char *name, size_t *rows, size_t *cols)
{
	json_t *t = json_object_get(s->hdr, name), *sh;
	if (!t)
		return NULL;
	sh = json_object_get(t, "shape");
	*rows = (size_t)json_integer_value(json_array_get(sh, 0));
	*cols = json_array_size(sh) > 1 ? (size_t)json_integer_value(json_array_get(sh, 1)) : 1;
	return (const float *)(s->buf + s->data0 +
	                       json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 0)));
}

static void st_free(st_file *s)
{
	json_decref(s->hdr);
	free(s->buf);
}

TEST(gguf_llama_names)
{
	static const char *map[][2] = {
		{ "model.embed_tokens.weight", "token_embd.weight" },
		{ "model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight" },
		{ "model.layers.12.self_attn.k_proj.weight", "blk.12.attn_k.weight" },
		{ "model.layers.3.self_attn.v_proj.weight", "blk.3.attn_v.weight" },
		{ "model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output.weight" },
		{ "model.layers.3.mlp.gate_proj.weight", "blk.3.ffn_gate.weight" },
		{ "model.layers.3.mlp.up_proj.weight", "blk.3.ffn_up.weight" },
		{ "model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight" },
		{ "model.layers.3.input_layernorm.weight", "blk.3.attn_norm.weight" },
		{ "model.layers.3.post_attention_layernorm.weight", "blk.3.ffn_norm.weight" },
		{ "model.layers.7.self_attn.q_proj.bias", "blk.7.attn_q.bias" },
		{ "model.norm.weight", "output_norm.weight" },
		{ "lm_head.weight", "output.weight" },
	};
	static const char *unknown[] = { "model.layers.x.mlp.up_proj.weight", "model.layers.1.foo.weight",
	                                 "model.layers.1.mlp.up_proj", "rotary_emb.inv_freq", "" };
	char out[64];
	int qk;

	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
		CHECK_EQ(qtk_gguf_llama_name(map[i][0], out, sizeof out, &qk), QTK_OK);
		CHECK_STR(out, map[i][1]);
		CHECK_EQ(qk, i == 1 || i == 10 ? 1 : i == 2 ? 2 : 0);
	}
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
		CHECK_EQ(qtk_gguf_llama_name(unknown[i], out, sizeof out, &qk), QTK_E_NOT_FOUND);
	CHECK_EQ(qtk_gguf_llama_name(map[1][0], out, 8, &qk), QTK_E_ARG);
}

TEST(gguf_llama_unpermute_is_inverse_of_hf_permute)
{
	/* HF: w.reshape(H, hd/2, 2, in).transpose(0, 2, 1, 3): HF row
	 * (h, t, p) = original row (h, p, t). Build it that way, undo it. */
	enum { H = 3, HD = 6, ROWS = H * HD };
	uint32_t orig[ROWS], hf[ROWS], back[ROWS];
	qtk_status st;

	for (uint32_t r = 0; r < ROWS; r++)
		orig[r] = r * 7 + 1;
	for (uint32_t h = 0; h < H; h++)
		for (uint32_t p = 0; p < HD / 2; p++)
			for (uint32_t t = 0; t < 2; t++)
				hf[h * HD + t * (HD / 2) + p] = orig[h * HD + 2 * p + t];
	CHECK_EQ(qtk_gguf_llama_unpermute(hf, back, ROWS, 4, H, &st), QTK_OK);
	CHECK(!memcmp(back, orig, sizeof orig));
	CHECK_EQ(qtk_gguf_llama_unpermute(hf, back, ROWS, 4, 4, &st), QTK_E_GG_LAYOUT);
	CHECK_EQ(qtk_gguf_llama_unpermute(hf, back, 9, 4, 3, &st), QTK_E_GG_LAYOUT);
}

TEST(gguf_llama_config_kvs_match_source)
{
	qtk_gguf_kvs *k = qtk_gguf_kvs_new();
	qtk_gguf_llama_hparams hp;
	qtk_gguf_file *src, *out;
	qtk_gguf_writer *w;
	qtk_status st;
	static const char *keys[] = {
		"llama.context_length", "llama.embedding_length", "llama.block_count",
		"llama.feed_forward_length", "llama.rope.dimension_count",
		"llama.attention.head_count", "llama.attention.head_count_kv",
	};

	REQUIRE(k);
	REQUIRE(qtk_gguf_llama_config(t_data("stories260K/config.json"), k, &hp, &st) == QTK_OK);
	CHECK_EQ(hp.n_head, 8);
	CHECK_EQ(hp.n_head_kv, 4);
	CHECK_EQ(hp.head_dim, 8);
	CHECK(hp.tied);
	REQUIRE(qtk_gguf_writer_open(&w, t_tmp("c.gguf"), k, NULL, 0, NULL, &st) == QTK_OK);
	REQUIRE(qtk_gguf_writer_commit(w, &st) == QTK_OK);
	REQUIRE(qtk_gguf_open(t_tmp("c.gguf"), &out, &st) == QTK_OK);
	REQUIRE(qtk_gguf_open(t_data(SRC_GGUF), &src, &st) == QTK_OK);
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		uint64_t a = 0, b = 1;
		CHECK_EQ(qtk_gguf_get_uint(src, keys[i], &a, &st), QTK_OK);
		CHECK_EQ(qtk_gguf_get_uint(out, keys[i], &b, &st), QTK_OK);
		CHECK_MSG(a == b, "%s: %llu != %llu", keys[i], (unsigned long long)a,
		          (unsigned long long)b);
	}
	{
		double a = 0, b = 1;
		CHECK_EQ(qtk_gguf_get_f64(src, "llama.attention.layer_norm_rms_epsilon", &a, &st), QTK_OK);
		CHECK_EQ(qtk_gguf_get_f64(out, "llama.attention.layer_norm_rms_epsilon", &b, &st), QTK_OK);
		CHECK(a == b);
	}
	qtk_gguf_close(src);
	qtk_gguf_close(out);
	qtk_gguf_kvs_free(k);
	/* a config without hidden_size */
	REQUIRE(t_write_file(t_tmp("bad.json"), "{\"num_hidden_layers\": 2}", 24) == 0);
	CHECK_EQ(qtk_gguf_llama_config(t_tmp("bad.json"), NULL, &hp, &st), QTK_E_GG_CONFIG);
	CHECK(strstr(st.msg, "'hidden_size' is missing") != NULL);
}

TEST(gguf_llama_tokenizer_matches_source)
{
	qtk_spm_vocab *v;
	qtk_gguf_file *src;
	qtk_status st;
	const qtk_gguf_kv *tok, *sc, *ty;
	int bad = 0;

	REQUIRE(qtk_spm_read(t_data("stories260K/tokenizer.model"), &v, &st) == QTK_OK);
	REQUIRE(qtk_gguf_open(t_data(SRC_GGUF), &src, &st) == QTK_OK);
	CHECK_EQ(v->n, 512);
	CHECK_EQ(v->bos_id, 1);
	CHECK_EQ(v->eos_id, 2);
	CHECK_EQ(v->unk_id, 0);
	tok = qtk_gguf_kv_find(src, "tokenizer.ggml.tokens");
	sc = qtk_gguf_kv_find(src, "tokenizer.ggml.scores");
	ty = qtk_gguf_kv_find(src, "tokenizer.ggml.token_type");
	REQUIRE(tok && sc && ty && tok->count == v->n);
	for (size_t i = 0; i < v->n; i++) {
		const char *s;
		uint64_t len;
		double d;
		int64_t t;
		float f;
		CHECK_EQ(qtk_gguf_arr_str(tok, i, &s, &len), QTK_OK);
		CHECK_EQ(qtk_gguf_arr_f64(sc, i, &d), QTK_OK);
		CHECK_EQ(qtk_gguf_arr_int(ty, i, &t), QTK_OK);
		f = (float)d;
		bad += len != v->lens[i] || memcmp(s, v->pieces[i], (size_t)len) ||
		       memcmp(&f, &v->scores[i], 4) || t != v->types[i];
	}
	CHECK_EQ(bad, 0);
	qtk_gguf_close(src);
	qtk_spm_free(v);
	/* truncated and empty models fail with the tokenizer code */
	{
		size_t n;
		char *b = t_read_file(t_data("stories260K/tokenizer.model"), &n);
		REQUIRE(b);
		REQUIRE(t_write_file(t_tmp("cut.model"), b, n / 2 + 1) == 0);
		CHECK_EQ(qtk_spm_read(t_tmp("cut.model"), &v, &st), QTK_E_GG_TOKENIZER);
		CHECK(v == NULL);
		REQUIRE(t_write_file(t_tmp("empty.model"), b, 0) == 0);
		CHECK_EQ(qtk_spm_read(t_tmp("empty.model"), &v, &st), QTK_E_GG_TOKENIZER);
		free(b);
	}
	qtk_spm_free(NULL);
}

/* The whole F32 export: HF names -> GGUF names, q/k un-permuted, config and
 * tokenizer KVs, written by the streaming writer, read back: every tensor
 * equals the original llama.cpp file's bit for bit. */
TEST(gguf_llama_stories260k_export_f32_equals_source)
{
	st_file s;
	qtk_gguf_kvs *k = qtk_gguf_kvs_new();
	qtk_gguf_llama_hparams hp;
	qtk_spm_vocab *v;
	qtk_gguf_desc d[64];
	char names[64][64];
	const float *src[64];
	int qkv[64];
	size_t n = 0, rows[64], cols[64];
	qtk_gguf_writer *w;
	qtk_gguf_file *out, *ref;
	qtk_status st;
	const char *key;
	json_t *val;

	REQUIRE(k && st_load(&s, t_data("stories260K/model.safetensors")) == 0);
	REQUIRE(qtk_gguf_llama_config(t_data("stories260K/config.json"), k, &hp, &st) == QTK_OK);
	REQUIRE(qtk_spm_read(t_data("stories260K/tokenizer.model"), &v, &st) == QTK_OK);
	REQUIRE(qtk_gguf_spm_kvs(v, k, &st) == QTK_OK);
	REQUIRE(qtk_gguf_kvs_add_u32(k, "general.file_type", 0, &st) == QTK_OK);
	json_object_foreach(s.hdr, key, val) {
		if (!strcmp(key, "__metadata__"))
			continue;
		REQUIRE(n < 64);
		REQUIRE(qtk_gguf_llama_name(key, names[n], sizeof names[n], &qkv[n]) == QTK_OK);
		src[n] = st_tensor(&s, key, &rows[n], &cols[n]);
		d[n] = (qtk_gguf_desc){ names[n], QTK_GGML_F32, cols[n] > 1 || rows[n] == 1 ? 2 : 1,
		                        { cols[n] > 1 ? cols[n] : rows[n], cols[n] > 1 ? rows[n] : 1, 1, 1 } };
		n++;
	}
	CHECK_EQ(n, 47); /* tied: no output.weight */
	REQUIRE(qtk_gguf_writer_open(&w, t_tmp("s.gguf"), k, d, n, NULL, &st) == QTK_OK);
	for (size_t i = 0; i < n; i++) {
		size_t bytes = rows[i] * cols[i] * 4;
		float *buf = malloc(bytes);
		if (qkv[i])
			CHECK_EQ(qtk_gguf_llama_unpermute(src[i], buf, rows[i], cols[i] * 4,
			                                  qkv[i] == 1 ? hp.n_head : hp.n_head_kv, &st), QTK_OK);
		else
			memcpy(buf, src[i], bytes);
		CHECK_EQ(qtk_gguf_writer_put(w, i, 0, buf, bytes, &st), QTK_OK);
		free(buf);
	}
	REQUIRE(qtk_gguf_writer_commit(w, &st) == QTK_OK);
	REQUIRE(qtk_gguf_open(t_tmp("s.gguf"), &out, &st) == QTK_OK);
	REQUIRE(qtk_gguf_open(t_data(SRC_GGUF), &ref, &st) == QTK_OK);
	for (size_t i = 0; i < qtk_gguf_count(ref); i++) {
		const qtk_gguf_tensor *a = qtk_gguf_get(ref, i);
		const qtk_gguf_tensor *b = qtk_gguf_find(out, !strcmp(a->name, "output.weight") ?
		                                               "token_embd.weight" : a->name);
		CHECK_MSG(b != NULL, "%s missing", a->name);
		if (!b)
			continue;
		CHECK_EQ(a->n_dims, b->n_dims);
		CHECK_EQ(a->ne[0], b->ne[0]);
		CHECK_EQ(a->ne[1], b->ne[1]);
		CHECK_MSG(a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes),
		          "%s differs from the source", a->name);
	}
	{
		const qtk_gguf_kv *t = qtk_gguf_kv_find(out, "tokenizer.ggml.tokens");
		CHECK(t && t->count == 512);
	}
	qtk_gguf_close(out);
	qtk_gguf_close(ref);
	qtk_spm_free(v);
	qtk_gguf_kvs_free(k);
	st_free(&s);
}

/* The tokenizer reader on mutated tokenizer.model files: bit flips,
 * truncations and varint-sized overwrites never crash; a result is either
 * an error with the tokenizer code or a vocabulary whose pieces lie inside
 * the file. */
TEST(gguf_llama_tokenizer_mutations)
{
	size_t n;
	uint8_t *b = t_read_file(t_data("stories260K/tokenizer.model"), &n), *m;
	uint64_t rs = 17;
	int ok = 0, bad = 0;

	REQUIRE(b && n > 16);
	m = malloc(n);
	for (int k = 0; k < 600; k++) {
		static const uint8_t vals[] = { 0x00, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x15, 0x1a };
		size_t at = (size_t)(t_rand_u64(&rs) % n), len = n;
		qtk_spm_vocab *v;
		qtk_status st;
		int kind = (int)(t_rand_u64(&rs) % 3);

		memcpy(m, b, n);
		if (kind == 0)
			m[at] ^= (uint8_t)(1u << (t_rand_u64(&rs) % 8));
		else if (kind == 1)
			len = at;
		else
			for (size_t j = 0; j < 5 && at + j < n; j++)
				m[at + j] = vals[t_rand_u64(&rs) % sizeof vals];
		REQUIRE(t_write_file(t_tmp("m.model"), m, len) == 0);
		if (qtk_spm_read(t_tmp("m.model"), &v, &st) == QTK_OK) {
			ok++;
			CHECK(v->n > 0);
			qtk_spm_free(v);
		} else {
			bad++;
			CHECK_MSG(st.code == QTK_E_GG_TOKENIZER, "%s", st.msg);
		}
	}
	CHECK(ok > 0 && bad > 0);
	free(m);
	free(b);
}

/* ggml's quantize_row_q8_0_ref, from its definition (ggml-quants.c). */
static void q8_0_row(const float *x, size_t n, uint8_t *y)
{
	for (size_t b = 0; b < n / 32; b++, x += 32, y += 34) {
		float amax = 0;
		for (int j = 0; j < 32; j++)
			amax = fmaxf(amax, fabsf(x[j]));
		float d = amax / 127, id = d != 0 ? 1.0f / d : 0.0f;
		uint16_t h = qtk_f32_to_f16(d);
		y[0] = (uint8_t)h;
		y[1] = (uint8_t)(h >> 8);
		for (int j = 0; j < 32; j++)
			y[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
	}
}

/* Target type of the LLaMA rules at Q8_0: 1-D in F32, rows the block does
 * not divide in F16, the rest Q8_0; data for an f32 [rows][cols]. */
static uint32_t q8_type(size_t rows, size_t cols)
{
	return cols == 1 || rows == 1 ? QTK_GGML_F32 : cols % 32 ? QTK_GGML_F16 : QTK_GGML_Q8_0;
}

static size_t encode(uint32_t type, const float *x, size_t rows, size_t cols, uint8_t *out)
{
	if (type == QTK_GGML_F32) {
		memcpy(out, x, rows * cols * 4);
		return rows * cols * 4;
	}
	if (type == QTK_GGML_F16) {
		qtk_from_f32(QTK_DT_F16, x, out, rows * cols);
		return rows * cols * 2;
	}
	q8_0_row(x, rows * cols, out);
	return rows * cols / 32 * 34;
}

/* stories260K exported at Q8_0 from the HF checkpoint (q/k un-permuted
 * first, as whole rows) equals the original GGUF's f32 tensors quantized
 * the same way: the un-permutation commutes with row-local blocks. */
TEST(gguf_llama_stories260k_export_q8_0_equals_source)
{
	st_file s;
	qtk_gguf_llama_hparams hp;
	qtk_gguf_desc d[64];
	char names[64][64];
	const float *src[64];
	int qkv[64];
	size_t n = 0, rows[64], cols[64], nq = 0;
	qtk_gguf_writer *w;
	qtk_gguf_file *out, *ref;
	qtk_status st;
	const char *key;
	json_t *val;

	REQUIRE(st_load(&s, t_data("stories260K/model.safetensors")) == 0);
	REQUIRE(qtk_gguf_llama_config(t_data("stories260K/config.json"), NULL, &hp, &st) == QTK_OK);
	json_object_foreach(s.hdr, key, val) {
		if (!strcmp(key, "__metadata__"))
			continue;
		REQUIRE(n < 64);
		REQUIRE(qtk_gguf_llama_name(key, names[n], sizeof names[n], &qkv[n]) == QTK_OK);
		src[n] = st_tensor(&s, key, &rows[n], &cols[n]);
		d[n] = (qtk_gguf_desc){ names[n], q8_type(rows[n], cols[n]), cols[n] > 1 ? 2 : 1,
		                        { cols[n] > 1 ? cols[n] : rows[n], cols[n] > 1 ? rows[n] : 1, 1, 1 } };
		nq += d[n].type == QTK_GGML_Q8_0;
		n++;
	}
	CHECK(nq >= 30);
	REQUIRE(qtk_gguf_writer_open(&w, t_tmp("q8.gguf"), NULL, d, n, NULL, &st) == QTK_OK);
	for (size_t i = 0; i < n; i++) {
		float *x = malloc(rows[i] * cols[i] * 4);
		uint8_t *b = malloc(rows[i] * cols[i] * 4);
		size_t len;
		if (qkv[i])
			CHECK_EQ(qtk_gguf_llama_unpermute(src[i], x, rows[i], cols[i] * 4,
			                                  qkv[i] == 1 ? hp.n_head : hp.n_head_kv, &st), QTK_OK);
		else
			memcpy(x, src[i], rows[i] * cols[i] * 4);
		len = encode(d[i].type, x, rows[i], cols[i], b);
		CHECK_EQ(qtk_gguf_writer_put(w, i, 0, b, len, &st), QTK_OK);
		free(x);
		free(b);
	}
	REQUIRE(qtk_gguf_writer_commit(w, &st) == QTK_OK);
	REQUIRE(qtk_gguf_open(t_tmp("q8.gguf"), &out, &st) == QTK_OK);
	REQUIRE(qtk_gguf_open(t_data(SRC_GGUF), &ref, &st) == QTK_OK);
	for (size_t i = 0; i < qtk_gguf_count(ref); i++) {
		const qtk_gguf_tensor *a = qtk_gguf_get(ref, i);
		const qtk_gguf_tensor *b = qtk_gguf_find(out, !strcmp(a->name, "output.weight") ?
		                                               "token_embd.weight" : a->name);
		uint8_t *want;
		size_t len;
		REQUIRE(b != NULL);
		want = malloc(a->nbytes);
		len = encode(b->type, a->data, (size_t)a->rows, (size_t)a->cols, want);
		CHECK_MSG(len == b->nbytes && !memcmp(want, b->data, len), "%s (%s) differs", a->name,
		          qtk_ggml_type_name(b->type));
		free(want);
	}
	qtk_gguf_close(out);
	qtk_gguf_close(ref);
	st_free(&s);
}
