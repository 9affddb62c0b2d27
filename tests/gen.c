/* tests: generated checkpoints (see gen.h). Tensors are written chunk by
 * chunk through the streaming safetensors writer, so multi-GB files need
 * only a few MB of memory. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen.h"

#define CHUNK (1u << 20)

static uint64_t next_u64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void gen_normal(float *x, uint64_t n, float sigma, uint64_t *state)
{
	/* sum of 4 uniform 16-bit pieces: mean 2, variance 4/12 */
	const float k = sigma * 1.7320508f / 65536.0f;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t r = next_u64(state);
		int32_t s = (int32_t)(r & 0xffff) + (int32_t)((r >> 16) & 0xffff) +
		            (int32_t)((r >> 32) & 0xffff) + (int32_t)(r >> 48) - 131070;
		x[i] = (float)s * k;
	}
}

typedef struct {
	qtk_st_desc d;
	int kind;           /* 0 weight-like, 1 norm scale (~1), 2 bias (small) */
} gen_tensor;

/* Fill and write all tensors, chunk by chunk. */
static qtk_err write_all(const char *out, gen_tensor *t, size_t n, uint64_t seed,
                         const char *const *meta, qtk_status *st)
{
	qtk_st_desc *descs = calloc(n ? n : 1, sizeof *descs);
	float *f = malloc(CHUNK * sizeof(float));
	uint8_t *buf = malloc(CHUNK * 8);
	qtk_st_writer *w = NULL;
	qtk_write_opts wo = { .force = 1 };
	qtk_err rc;

	if (!descs || !f || !buf) {
		rc = qtk_fail(st, QTK_E_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		descs[i] = t[i].d;
	rc = qtk_st_writer_open(&w, out, descs, n, meta, &wo, st);
	if (rc)
		goto out;
	for (size_t i = 0; i < n && !rc; i++) {
		uint64_t nel = 1, cols = t[i].d.ndim ? t[i].d.shape[t[i].d.ndim - 1] : 1;
		size_t es = qtk_dtype_size(t[i].d.dtype);
		uint64_t s = seed ^ (0x51ed270b27a5c3ull * (i + 1));

		for (uint32_t k = 0; k < t[i].d.ndim; k++)
			nel *= t[i].d.shape[k];
		for (uint64_t e = 0; e < nel && !rc; e += CHUNK) {
			uint64_t m = nel - e < CHUNK ? nel - e : CHUNK;

			gen_normal(f, m, t[i].kind == 2 ? 0.01f : 0.02f, &s);
			for (uint64_t q = 0; q < m; q++) {
				if (t[i].kind == 1)
					f[q] += 1.0f;
				/* outlier input channels: every 97th column of a weight */
				else if (t[i].kind == 0 && t[i].d.ndim >= 2 && ((e + q) % cols) % 97 == 5)
					f[q] *= 20.0f;
			}
			if (t[i].d.dtype == QTK_DT_F32 || t[i].d.dtype == QTK_DT_F16 ||
			    t[i].d.dtype == QTK_DT_BF16)
				qtk_from_f32(t[i].d.dtype, f, buf, m);
			else
				memset(buf, 0, m * es);
			rc = qtk_st_writer_put(w, i, e * es, buf, m * es, st);
		}
	}
	if (rc) {
		qtk_st_writer_abort(w);
	} else {
		rc = qtk_st_writer_commit(w, st);
	}
out:
	free(descs);
	free(f);
	free(buf);
	return rc;
}

static int kind_of(const char *name, uint32_t ndim)
{
	if (ndim <= 1 && (strstr(name, "norm") || strstr(name, ".scale")))
		return 1;
	return ndim <= 1 ? 2 : 0;
}

long gen_dit_standin(const char *spec, unsigned scale, int dtype, const char *out,
                     uint64_t seed, qtk_status *st)
{
	json_error_t je;
	json_t *root = json_load_file(spec, 0, &je), *meta, *v;
	const char *key, *keep = "";
	gen_tensor *t = NULL;
	size_t n = 0, cap;
	long rc = -1;

	if (!root) {
		qtk_fail(st, QTK_E_ARG, "%s: %s", spec, je.text);
		return -1;
	}
	meta = json_object_get(root, "__metadata__");
	if (meta && json_is_string(json_object_get(meta, "keep_dims")))
		keep = json_string_value(json_object_get(meta, "keep_dims"));
	cap = json_object_size(root);
	t = calloc(cap ? cap : 1, sizeof *t);
	if (!t)
		goto out;
	json_object_foreach(root, key, v) {
		json_t *shape = json_object_get(v, "shape"), *d;
		size_t k;
		int dt;

		if (!strcmp(key, "__metadata__"))
			continue;
		dt = dtype >= 0 ? dtype :
		     qtk_dtype_from_name(json_string_value(json_object_get(v, "dtype")));
		if (dt < 0 || !json_is_array(shape) || json_array_size(shape) > QTK_MAX_DIMS) {
			qtk_fail(st, QTK_E_ARG, "%s: bad entry '%s'", spec, key);
			goto out;
		}
		t[n].d.name = key;
		t[n].d.dtype = (qtk_dtype)dt;
		t[n].d.ndim = (uint32_t)json_array_size(shape);
		json_array_foreach(shape, k, d) {
			uint64_t dim = (uint64_t)json_integer_value(d);
			char num[32];
			int kept;

			snprintf(num, sizeof num, "%llu", (unsigned long long)dim);
			/* keep_dims is a comma list of values */
			kept = 0;
			for (const char *p = keep; *p;) {
				size_t l = strcspn(p, ",");
				if (l == strlen(num) && !strncmp(p, num, l))
					kept = 1;
				p += l + (p[l] == ',');
			}
			t[n].d.shape[k] = (dim <= 16 || kept || scale <= 1) ? dim : dim / scale;
		}
		t[n].kind = kind_of(key, t[n].d.ndim);
		n++;
	}
	if (write_all(out, t, n, seed, NULL, st) == QTK_OK)
		rc = (long)n;
out:
	free(t);
	json_decref(root);
	return rc;
}

/* Tensor k: name, dims d0 (and d1 when 2-D). */
static size_t put(gen_tensor *t, char (*names)[96], size_t k, qtk_dtype dt, uint32_t ndim,
                  uint64_t d0, uint64_t d1, int kind, const char *name)
{
	snprintf(names[k], 96, "%s", name);
	t[k].d = (qtk_st_desc){ .name = names[k], .dtype = dt, .ndim = ndim, .shape = { d0, d1 } };
	t[k].kind = kind;
	return k + 1;
}

/* The 9 tensors of LLaMA layer l (HF names) from k on; returns the next k. */
static size_t llama_layer(gen_tensor *t, char (*names)[96], size_t k, qtk_dtype dt,
                          uint64_t l, uint64_t dim, uint64_t ffn)
{
	static const struct { const char *part; int rows_ffn, cols_ffn, norm; } w[] = {
		{ "self_attn.q_proj.weight", 0, 0, 0 }, { "self_attn.k_proj.weight", 0, 0, 0 },
		{ "self_attn.v_proj.weight", 0, 0, 0 }, { "self_attn.o_proj.weight", 0, 0, 0 },
		{ "mlp.gate_proj.weight", 1, 0, 0 }, { "mlp.up_proj.weight", 1, 0, 0 },
		{ "mlp.down_proj.weight", 0, 1, 0 }, { "input_layernorm.weight", 0, 0, 1 },
		{ "post_attention_layernorm.weight", 0, 0, 1 },
	};
	char name[96];

	for (size_t i = 0; i < sizeof w / sizeof *w; i++) {
		snprintf(name, sizeof name, "model.layers.%llu.%s", (unsigned long long)l, w[i].part);
		k = w[i].norm ? put(t, names, k, dt, 1, dim, 0, 1, name)
		              : put(t, names, k, dt, 2, w[i].rows_ffn ? ffn : dim,
		                    w[i].cols_ffn ? ffn : dim, 0, name);
	}
	return k;
}

long gen_llama_like(const char *out, qtk_dtype dtype, uint64_t dim, uint64_t ffn,
                    uint64_t target_bytes, uint64_t seed, qtk_status *st)
{
	size_t es = qtk_dtype_size(dtype);
	uint64_t per_layer = (4 * dim * dim + 3 * ffn * dim + 2 * dim) * es;
	uint64_t layers = target_bytes / per_layer + (target_bytes % per_layer != 0);
	size_t n = (size_t)layers * 9 + 1, k = 0;
	gen_tensor *t = calloc(n, sizeof *t);
	char (*names)[96] = calloc(n, 96);
	long rc = -1;

	if (!t || !names) {
		qtk_fail(st, QTK_E_NOMEM, "out of memory");
		goto out;
	}
	for (uint64_t l = 0; l < layers; l++)
		k = llama_layer(t, names, k, dtype, l, dim, ffn);
	k = put(t, names, k, dtype, 1, dim, 0, 1, "model.norm.weight");
	if (write_all(out, t, k, seed, NULL, st) == QTK_OK)
		rc = (long)k;
out:
	free(t);
	free(names);
	return rc;
}

long gen_llama_model(const char *dir, qtk_dtype dtype, uint64_t dim, uint64_t ffn,
                     uint64_t layers, uint64_t vocab, uint64_t heads, uint64_t seed,
                     qtk_status *st)
{
	size_t n = (size_t)layers * 9 + 3, k = 0;
	gen_tensor *t = calloc(n, sizeof *t);
	char (*names)[96] = calloc(n, 96), path[4096];
	long rc = -1;
	FILE *f;

	if (!t || !names) {
		qtk_fail(st, QTK_E_NOMEM, "out of memory");
		goto out;
	}
	k = put(t, names, k, dtype, 2, vocab, dim, 0, "model.embed_tokens.weight");
	for (uint64_t l = 0; l < layers; l++)
		k = llama_layer(t, names, k, dtype, l, dim, ffn);
	k = put(t, names, k, dtype, 1, dim, 0, 1, "model.norm.weight");
	k = put(t, names, k, dtype, 2, vocab, dim, 0, "lm_head.weight");
	snprintf(path, sizeof path, "%s/config.json", dir);
	f = fopen(path, "w");
	if (!f) {
		qtk_fail(st, QTK_E_IO, "%s: cannot create", path);
		goto out;
	}
	fprintf(f, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
	           "\"hidden_size\": %llu, \"intermediate_size\": %llu, "
	           "\"num_hidden_layers\": %llu, \"num_attention_heads\": %llu, "
	           "\"num_key_value_heads\": %llu, \"vocab_size\": %llu, "
	           "\"max_position_embeddings\": 2048, \"rms_norm_eps\": 1e-05, "
	           "\"rope_theta\": 10000.0, \"tie_word_embeddings\": false, "
	           "\"torch_dtype\": \"%s\"}\n",
	        (unsigned long long)dim, (unsigned long long)ffn, (unsigned long long)layers,
	        (unsigned long long)heads, (unsigned long long)heads, (unsigned long long)vocab,
	        dtype == QTK_DT_BF16 ? "bfloat16" : dtype == QTK_DT_F16 ? "float16" : "float32");
	if (fclose(f) != 0) {
		qtk_fail(st, QTK_E_IO, "%s: write failed", path);
		goto out;
	}
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	if (write_all(path, t, k, seed, NULL, st) == QTK_OK)
		rc = (long)k;
out:
	free(t);
	free(names);
	return rc;
}
