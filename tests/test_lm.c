/* tests: the LLaMA-family forward on stories260K — the float path against
 * reference_logits.safetensors (a float64 forward), perplexity of the
 * first 256 tokens from safetensors, GGUF and .qtk, Hugging Face and GGUF
 * q/k orders, greedy generation, the int8 activation path, the hook. */
#include <math.h>
#include <stdlib.h>

#include "qtk_convert.h"
#include "qtk_runtime.h"
#include "test.h"
#include "test_conv_util.h"

/* The reference: input_ids I32[256] and logits F32[256][512]. */
typedef struct {
	qtk_st_file *f;
	int32_t ids[256];
	float *logits;
} ref_t;

static int ref_open(ref_t *r)
{
	qtk_status st;
	const qtk_st_tensor *ids, *lg;

	memset(r, 0, sizeof *r);
	if (qtk_st_open(t_data("stories260K/reference_logits.safetensors"), &r->f, &st))
		return -1;
	ids = qtk_st_find(r->f, "input_ids");
	lg = qtk_st_find(r->f, "logits");
	if (!ids || !lg || ids->nelem != 256 || lg->nelem != 256 * 512 || ids->dtype != QTK_DT_I32)
		return -1;
	memcpy(r->ids, ids->data, sizeof r->ids);
	r->logits = malloc(256 * 512 * sizeof(float));
	return r->logits && qtk_st_read_f32(lg, 0, lg->nelem, r->logits, &st) == QTK_OK ? 0 : -1;
}

static void ref_close(ref_t *r)
{
	free(r->logits);
	qtk_st_close(r->f);
}

/* Logits of all 256 reference positions from the model at path. */
static float *run_logits(const char *path, qtk_rt_path p, uint32_t n_batch, unsigned threads,
                         const int32_t *ids, size_t n)
{
	qtk_rt_lm *lm = NULL;
	qtk_rt_lm_ctx *c = NULL;
	qtk_rt_lm_opts o = { .n_batch = n_batch, .path = p, .threads = threads };
	qtk_status st;
	float *lg = malloc(n * 512 * sizeof(float));

	if (!lg || qtk_rt_lm_open(path, &lm, &st) || qtk_rt_lm_ctx_new(lm, &o, &c, &st) ||
	    qtk_rt_lm_forward(c, ids, n, 0, lg, n, &st)) {
		printf("    %s\n", st.msg);
		free(lg);
		lg = NULL;
	}
	qtk_rt_lm_ctx_free(c);
	qtk_rt_lm_close(lm);
	return lg;
}

/* Mean over positions of KL(softmax(p) || softmax(q)), rows of 512. */
static double mean_kld(const float *p, const float *q, size_t rows)
{
	double sum = 0;

	for (size_t r = 0; r < rows; r++) {
		const float *a = p + r * 512, *b = q + r * 512;
		double ma = a[0], mb = b[0], za = 0, zb = 0, k = 0;
		for (int i = 1; i < 512; i++) {
			ma = fmax(ma, (double)a[i]);
			mb = fmax(mb, (double)b[i]);
		}
		for (int i = 0; i < 512; i++) {
			za += exp((double)a[i] - ma);
			zb += exp((double)b[i] - mb);
		}
		for (int i = 0; i < 512; i++) {
			double la = (double)a[i] - ma - log(za), lb = (double)b[i] - mb - log(zb);
			k += exp(la) * (la - lb);
		}
		sum += k;
	}
	return sum / (double)rows;
}

static double max_diff(const float *a, const float *b, size_t n)
{
	double m = 0;

	for (size_t i = 0; i < n; i++)
		m = fmax(m, fabs((double)a[i] - (double)b[i]));
	return m;
}

TEST(lm_reference_logits)
{
	ref_t r;
	float *lg;
	double e;

	REQUIRE(ref_open(&r) == 0);
	lg = run_logits(t_data("stories260K/model.safetensors"), QTK_RT_FLOAT, 0, 2, r.ids, 256);
	REQUIRE(lg);
	e = max_diff(lg, r.logits, 256 * 512);
	printf("    max |logit - reference| = %.3g over 256 positions\n", e);
	CHECK(e <= 1e-4);
	free(lg);
	ref_close(&r);
}

/* The source GGUF (v1, Meta's q/k order, interleaved RoPE) and the
 * safetensors (Hugging Face's permuted rows, rotate-half RoPE) are the
 * same model: the same logits up to the order of float sums. */
TEST(lm_gguf_and_hf_orders_agree)
{
	ref_t r;
	float *a, *b;
	double e;

	REQUIRE(ref_open(&r) == 0);
	a = run_logits(t_data("stories260K/model.safetensors"), QTK_RT_FLOAT, 0, 2, r.ids, 256);
	b = run_logits(t_data("stories260K/source-tinyllamas-stories-260k-f32.gguf"), QTK_RT_FLOAT,
	               0, 2, r.ids, 256);
	REQUIRE(a && b);
	e = max_diff(a, b, 256 * 512);
	printf("    max |HF - GGUF| = %.3g, GGUF vs reference %.3g\n", e,
	       max_diff(b, r.logits, 256 * 512));
	CHECK(e <= 5e-5); /* f32 sums in another order */
	CHECK(max_diff(b, r.logits, 256 * 512) <= 1e-4);
	free(a);
	free(b);
	ref_close(&r);
}

/* Token by token (generation), in odd steps and all at once (prompt
 * processing), on 1 and 2 threads. */
TEST(lm_steps_and_threads)
{
	ref_t r;
	float *all, *one, *odd, *t1;

	REQUIRE(ref_open(&r) == 0);
	all = run_logits(t_data("stories260K/model.safetensors"), QTK_RT_FLOAT, 256, 2, r.ids, 256);
	one = run_logits(t_data("stories260K/model.safetensors"), QTK_RT_FLOAT, 1, 2, r.ids, 256);
	odd = run_logits(t_data("stories260K/model.safetensors"), QTK_RT_FLOAT, 7, 2, r.ids, 256);
	t1 = run_logits(t_data("stories260K/model.safetensors"), QTK_RT_FLOAT, 256, 1, r.ids, 256);
	REQUIRE(all && one && odd && t1);
	printf("    max diff: batch 1 %.3g, batch 7 %.3g\n", max_diff(all, one, 256 * 512),
	       max_diff(all, odd, 256 * 512));
	CHECK(max_diff(all, one, 256 * 512) <= 5e-5); /* sgemv vs sgemm sums */
	CHECK(max_diff(all, odd, 256 * 512) <= 5e-5);
	CHECK(memcmp(all, t1, 256 * 512 * sizeof(float)) == 0);
	free(all);
	free(one);
	free(odd);
	free(t1);
	ref_close(&r);
}

/* Perplexity of the first 256 tokens of tinystories.txt (BOS first), every
 * position after the first scored: 3.74 for stories260K. */
static int ppl256(const char *path, qtk_rt_path p, double *ppl)
{
	qtk_rt_lm *lm = NULL;
	qtk_rt_lm_ctx *c = NULL;
	qtk_rt_lm_opts o = { .path = p, .threads = 2 };
	qtk_rt_eval_opts eo = { .ctx = 256, .bos = 1 };
	qtk_rt_eval_result r;
	ref_t ref;
	qtk_status st;
	int rc = -1;

	if (ref_open(&ref))
		return -1;
	if (!qtk_rt_lm_open(path, &lm, &st) && !qtk_rt_lm_ctx_new(lm, &o, &c, &st) &&
	    !qtk_rt_eval(c, NULL, ref.ids, 256, &eo, &r, &st)) {
		*ppl = r.ppl;
		rc = r.scored == 255 && r.windows == 1 ? 0 : -1;
	} else {
		printf("    %s\n", st.msg);
	}
	qtk_rt_lm_ctx_free(c);
	qtk_rt_lm_close(lm);
	ref_close(&ref);
	return rc;
}

/* stories260K converted by qtk: kind QTK_OUT_QTK or QTK_OUT_GGUF, scheme s,
 * group g (ffn_down's rows of 172 go to F16 in GGUF: 32 does not divide). */
static int make(const char *out, qtk_out_format kind, qtk_scheme_id s, uint32_t g,
                const t_rules *rules)
{
	qtk_conv_opts o = { .input = t_data("stories260K/model.safetensors"), .output = out,
	                    .format = kind, .scale_dtype = QTK_DT_F16, .threads = 2, .force = 1 };
	qtk_status st;

	if (t_convert(&o, s, g, rules, NULL, &st) != QTK_OK) {
		printf("    %s\n", st.msg);
		return -1;
	}
	return 0;
}

TEST(lm_perplexity_256_tokens)
{
	static const char *const names[] = { "safetensors", "source GGUF v1", "qtk's F32 GGUF",
	                                      "F32 .qtk", "f16 safetensors", "bf16 safetensors" };
	char paths[6][512]; /* t_data and t_tmp return a ring of buffers */
	double ppl;

	snprintf(paths[0], 512, "%s", t_data("stories260K/model.safetensors"));
	snprintf(paths[1], 512, "%s", t_data("stories260K/source-tinyllamas-stories-260k-f32.gguf"));
	snprintf(paths[2], 512, "%s", t_tmp("f32.gguf"));
	snprintf(paths[3], 512, "%s", t_tmp("f32.qtk"));
	snprintf(paths[4], 512, "%s", t_data("stories260K/model.f16.safetensors"));
	snprintf(paths[5], 512, "%s", t_data("stories260K/model.bf16.safetensors"));
	REQUIRE(make(paths[2], QTK_OUT_GGUF, QTK_SCHEME_F32, 32, NULL) == 0);
	REQUIRE(make(paths[3], QTK_OUT_QTK, QTK_SCHEME_F32, 32, NULL) == 0);
	for (int i = 0; i < 6; i++) {
		REQUIRE(ppl256(paths[i], QTK_RT_FLOAT, &ppl) == 0);
		printf("    %-18s %.4f\n", names[i], ppl);
		CHECK_MSG(fabs(ppl - 3.74) <= (i < 4 ? 0.01 : 0.02), "%s: %.4f", names[i], ppl);
	}
}

/* Quantized weights: the int8 activation path stays close to the float
 * path; both give the same bytes on 1 and 2 threads, in steps of 1 and of
 * 256 tokens, and on every ISA. */
TEST(lm_int8_path_close_to_float)
{
	static const qtk_scheme_id cases[] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4, QTK_SCHEME_NF4,
	                                       QTK_SCHEME_INT4_AFFINE };
	/* under make check (QTK_SANITIZED, ~10x slower) int8 and nf4 only, and
	 * no scalar forward: rt_kernels_every_variant_matches_reference checks
	 * every ISA against the scalar kernels bit for bit already */
	int san = getenv("QTK_SANITIZED") != NULL;
	ref_t r;

	REQUIRE(ref_open(&r) == 0);
	for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
		float *f, *i8, *i8b1, *i8t1, *fs;
		double pf, pi, e;
		qtk_isa isa;

		if (san && k != 0 && k != 2)
			continue;

		REQUIRE(make(t_tmp("q.qtk"), QTK_OUT_QTK, cases[k], 32, NULL) == 0);
		f = run_logits(t_tmp("q.qtk"), QTK_RT_FLOAT, 256, 2, r.ids, 256);
		i8 = run_logits(t_tmp("q.qtk"), QTK_RT_INT8, 256, 2, r.ids, 256);
		i8b1 = run_logits(t_tmp("q.qtk"), QTK_RT_INT8, 1, 1, r.ids, 256);
		i8t1 = run_logits(t_tmp("q.qtk"), QTK_RT_INT8, 256, 1, r.ids, 256);
		/* the scalar kernels are slow: two schemes are enough */
		isa = qtk_isa_force(k < 2 && !san ? QTK_ISA_SCALAR : qtk_isa_active());
		fs = run_logits(t_tmp("q.qtk"), QTK_RT_FLOAT, 256, 1, r.ids, 256);
		qtk_isa_force(isa);
		REQUIRE(f && i8 && i8b1 && i8t1 && fs);
		REQUIRE(ppl256(t_tmp("q.qtk"), QTK_RT_FLOAT, &pf) == 0);
		REQUIRE(ppl256(t_tmp("q.qtk"), QTK_RT_INT8, &pi) == 0);
		e = mean_kld(f, i8, 256);
		printf("    %-12s ppl float %.4f, int8 %.4f; KL(float || int8) %.5f, max |logit diff| %.3f\n",
		       qtk_q_scheme_get(cases[k])->name, pf, pi, e, max_diff(f, i8, 256 * 512));
		/* int8 activations per block of 32 (as llama.cpp's Q8_0 ones):
		 * within 1 % of perplexity, a KL divergence far below the
		 * weights' own (0.1 for int4 against f32 on this model) */
		CHECK(fabs(pi - pf) <= 0.01 * pf);
		CHECK(e <= 0.01);
		CHECK(memcmp(i8, i8b1, 256 * 512 * sizeof(float)) == 0);
		CHECK(memcmp(i8, i8t1, 256 * 512 * sizeof(float)) == 0);
		CHECK(memcmp(f, fs, 256 * 512 * sizeof(float)) == 0);
		/* the model interleaves its weights for the int8 path: the planes'
		 * kernels (QTK_INTERLEAVE=0) sum in another order (int4: over
		 * other activation blocks), as close to the float path */
		if (!san) {
			float *ip;
			setenv("QTK_INTERLEAVE", "0", 1);
			ip = run_logits(t_tmp("q.qtk"), QTK_RT_INT8, 256, 2, r.ids, 256);
			unsetenv("QTK_INTERLEAVE");
			REQUIRE(ip);
			CHECK(mean_kld(f, ip, 256) <= 0.01);
			CHECK(cases[k] != QTK_SCHEME_INT4 || memcmp(i8, ip, 256 * 512 * sizeof(float)));
			free(ip);
		}
		free(f);
		free(i8);
		free(i8b1);
		free(i8t1);
		free(fs);
	}
	ref_close(&r);
}

/* The hook sees every product's input by weight name: 7 per layer and
 * the head's (under the embedding's name: stories260K is tied), x rows
 * of the step's tokens; q/k/v share one x, gate/up another. */
typedef struct {
	int calls, q_k_v_same, gate_up_same, head_rows, bad_cols;
	const float *last;
	char last_name[96], head_name[96];
} hook_rec;

static void on_input(void *user, const char *w, const float *x, size_t n, size_t cols)
{
	hook_rec *h = user;
	size_t l = strlen(w);

	h->calls++;
	if (l > 13 && (!strcmp(w + l - 13, "k_proj.weight") || !strcmp(w + l - 13, "v_proj.weight")))
		h->q_k_v_same += x == h->last;
	if (l > 14 && !strcmp(w + l - 14, "up_proj.weight"))
		h->gate_up_same += x == h->last;
	if (!strcmp(w, "model.embed_tokens.weight")) {
		h->head_rows += (int)n;
		snprintf(h->head_name, sizeof h->head_name, "%s", w);
	}
	h->bad_cols += cols != (l > 16 && !strcmp(w + l - 16, "down_proj.weight") ? 172u : 64u);
	h->last = x;
	snprintf(h->last_name, sizeof h->last_name, "%s", w);
}

TEST(lm_hook_sees_every_linear_input)
{
	qtk_rt_lm *lm;
	qtk_rt_lm_ctx *c;
	hook_rec h = { 0 };
	qtk_rt_lm_opts o = { .n_batch = 100, .threads = 1, .hook = on_input, .hook_user = &h };
	qtk_status st;
	ref_t r;
	float lg[512];

	REQUIRE(ref_open(&r) == 0);
	REQUIRE(qtk_rt_lm_open(t_data("stories260K/model.safetensors"), &lm, &st) == QTK_OK);
	REQUIRE(qtk_rt_lm_ctx_new(lm, &o, &c, &st) == QTK_OK);
	/* 256 tokens in steps of 100, 100, 56; logits of the last one only */
	REQUIRE(qtk_rt_lm_forward(c, r.ids, 256, 0, lg, 1, &st) == QTK_OK);
	CHECK_EQ(h.calls, 3 * (5 * 7 + 1));
	CHECK_EQ(h.q_k_v_same, 3 * 5 * 2);
	CHECK_EQ(h.gate_up_same, 3 * 5);
	CHECK_EQ(h.head_rows, 256); /* the head's input for every token, logits or not */
	CHECK_EQ(h.bad_cols, 0);
	CHECK_STR(h.last_name, "model.embed_tokens.weight");
	qtk_rt_lm_ctx_free(c);
	qtk_rt_lm_close(lm);
	ref_close(&r);
}

/* forward_each: every token alone at position 0, in batches, gives the
 * logits of that token run as a sequence of its own (one step at
 * position 0), and of the same call at another batch size; the cache is
 * not used. */
TEST(lm_forward_each_is_tokens_alone)
{
	enum { N = 40 };
	qtk_rt_lm *lm;
	qtk_rt_lm_ctx *c, *c1;
	qtk_rt_lm_opts o = { .n_batch = 16, .threads = 2 }, o1 = { .n_ctx = 8, .threads = 2 };
	qtk_status st;
	int32_t ids[N];
	float *all = malloc((size_t)N * 512 * sizeof *all), *b7 = malloc((size_t)N * 512 * 4);
	float one[512];
	double worst = 0;

	REQUIRE(all && b7);
	for (int i = 0; i < N; i++)
		ids[i] = (int32_t)((i * 37 + 5) % 512);
	REQUIRE(qtk_rt_lm_open(t_data("stories260K/model.safetensors"), &lm, &st) == QTK_OK);
	REQUIRE(qtk_rt_lm_ctx_new(lm, &o, &c, &st) == QTK_OK);
	REQUIRE(qtk_rt_lm_ctx_new(lm, &o1, &c1, &st) == QTK_OK);
	REQUIRE(qtk_rt_lm_forward_each(c, ids, N, all, &st) == QTK_OK);
	for (int i = 0; i < N; i++) {
		REQUIRE(qtk_rt_lm_forward(c1, ids + i, 1, 0, one, 1, &st) == QTK_OK);
		double d = max_diff(one, all + (size_t)i * 512, 512);
		worst = d > worst ? d : worst;
	}
	CHECK_MSG(worst < 1e-4, "max |logit difference| %g", worst);
	qtk_rt_lm_ctx_free(c);
	o.n_batch = 7;
	REQUIRE(qtk_rt_lm_ctx_new(lm, &o, &c, &st) == QTK_OK);
	REQUIRE(qtk_rt_lm_forward_each(c, ids, N, b7, &st) == QTK_OK);
	CHECK(max_diff(all, b7, (size_t)N * 512) < 1e-4);
	/* a token outside the vocabulary is named */
	ids[3] = 512;
	CHECK(qtk_rt_lm_forward_each(c, ids, N, NULL, &st) == QTK_E_ARG &&
	      strstr(st.msg, "token id 512"));
	qtk_rt_lm_ctx_free(c);
	qtk_rt_lm_ctx_free(c1);
	qtk_rt_lm_close(lm);
	free(all);
	free(b7);
}

/* Bad input: each failure names the file, tensor or key, and the problem. */
static qtk_err open_dir(const char *cfg, const char *drop, const char *extra, qtk_status *st)
{
	qtk_st_file *f;
	qtk_rt_lm *lm = NULL;
	qtk_st_desc d[64];
	const void *data[64];
	size_t n = 0;
	qtk_err rc;
	float bias[64] = { 0 };
	qtk_write_opts wo = { .force = 1 };

	if (qtk_st_open(t_data("stories260K/model.safetensors"), &f, st))
		return QTK_E_IO;
	for (size_t i = 0; i < qtk_st_count(f) && n < 63; i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i);
		if (drop && !strcmp(t->name, drop))
			continue;
		memset(&d[n], 0, sizeof d[n]);
		d[n].name = t->name;
		d[n].dtype = t->dtype;
		d[n].ndim = t->ndim;
		memcpy(d[n].shape, t->shape, sizeof d[n].shape);
		data[n++] = t->data;
	}
	if (extra) {
		memset(&d[n], 0, sizeof d[n]);
		d[n].name = extra;
		d[n].dtype = QTK_DT_F32;
		d[n].ndim = 1;
		d[n].shape[0] = 64;
		data[n++] = bias;
	}
	rc = qtk_st_write(t_tmp("m/model.safetensors"), d, data, n, NULL, &wo, st);
	qtk_st_close(f);
	if (rc || t_write_file(t_tmp("m/config.json"), cfg, strlen(cfg)))
		return QTK_E_IO;
	rc = qtk_rt_lm_open(t_tmp("m"), &lm, st);
	qtk_rt_lm_close(lm);
	return rc;
}

#define CFG(extra) "{\"hidden_size\": 64, \"num_hidden_layers\": 5, \"num_attention_heads\": 8, " \
	"\"num_key_value_heads\": 4, \"intermediate_size\": 172, \"rms_norm_eps\": 1e-5, " \
	"\"vocab_size\": 512, \"tie_word_embeddings\": true" extra "}"

TEST(lm_bad_models_are_refused_by_name)
{
	qtk_status st;
	qtk_rt_lm *lm = NULL;

	REQUIRE(t_system("mkdir -p %s", t_tmp("m")) == 0);
	CHECK_EQ(open_dir(CFG(""), NULL, NULL, &st), QTK_OK);
	CHECK_EQ(open_dir(CFG(""), "model.layers.3.mlp.up_proj.weight", NULL, &st), QTK_E_FORMAT);
	CHECK(strstr(st.msg, "model.layers.3.mlp.up_proj.weight") && strstr(st.msg, "missing"));
	CHECK_EQ(open_dir(CFG(", \"model_type\": \"qwen2\""), NULL, NULL, &st), QTK_E_UNSUPPORTED);
	CHECK(strstr(st.msg, "qwen2") && strstr(st.msg, "config.json"));
	CHECK_EQ(open_dir(CFG(", \"rope_scaling\": {\"type\": \"linear\"}"), NULL, NULL, &st),
	         QTK_E_UNSUPPORTED);
	CHECK_EQ(open_dir(CFG(", \"hidden_act\": \"gelu\""), NULL, NULL, &st), QTK_E_UNSUPPORTED);
	CHECK_EQ(open_dir(CFG(""), NULL, "model.layers.0.self_attn.q_proj.bias", &st),
	         QTK_E_UNSUPPORTED);
	CHECK(strstr(st.msg, "q_proj.bias") != NULL);
	/* the description and the tensors disagree */
	CHECK_EQ(open_dir("{\"hidden_size\": 64, \"num_hidden_layers\": 5, \"num_attention_heads\": 8, "
	                  "\"intermediate_size\": 172, \"rms_norm_eps\": 1e-5}", NULL, NULL, &st),
	         QTK_E_FORMAT); /* 8 KV heads: k_proj should have 64 rows */
	CHECK(strstr(st.msg, "k_proj") && strstr(st.msg, "[32, 64]"));
	CHECK_EQ(open_dir(CFG(", \"num_key_value_heads\": 3"), NULL, NULL, &st), QTK_E_FORMAT);
	CHECK_EQ(open_dir("{\"hidden_size\": 64}", NULL, NULL, &st), QTK_E_FORMAT);
	CHECK(strstr(st.msg, "num_hidden_layers") != NULL);
	CHECK_EQ(open_dir("[1, 2]", NULL, NULL, &st), QTK_E_FORMAT);
	CHECK_EQ(open_dir("{\"hidden_size\": ", NULL, NULL, &st), QTK_E_FORMAT);
	/* a sliding window shorter than the context asked for */
	CHECK_EQ(open_dir(CFG(", \"sliding_window\": 100"), NULL, NULL, &st), QTK_OK);
	{
		qtk_rt_lm_ctx *c = NULL;
		qtk_rt_lm_opts o = { .threads = 1 };
		REQUIRE(qtk_rt_lm_open(t_tmp("m"), &lm, &st) == QTK_OK);
		CHECK_EQ(qtk_rt_lm_ctx_new(lm, &o, &c, &st), QTK_E_UNSUPPORTED);
		CHECK(!c && strstr(st.msg, "window is 100"));
		o.n_ctx = 100;
		CHECK_EQ(qtk_rt_lm_ctx_new(lm, &o, &c, &st), QTK_OK);
		qtk_rt_lm_ctx_free(c);
		qtk_rt_lm_close(lm);
		lm = NULL;
	}
	/* no config.json at all */
	REQUIRE(t_system("rm %s", t_tmp("m/config.json")) == 0);
	CHECK(qtk_rt_lm_open(t_tmp("m"), &lm, &st) != QTK_OK && !lm);
	CHECK(strstr(st.msg, "config.json") != NULL);
	/* a GGUF of another architecture, a file that is no model */
	CHECK(qtk_rt_lm_open(t_data("stories260K/tokenizer.model"), &lm, &st) != QTK_OK && !lm);
}

TEST(lm_bad_calls)
{
	qtk_rt_lm *lm;
	qtk_rt_lm_ctx *c;
	qtk_rt_lm_opts o = { .n_ctx = 16, .threads = 1 };
	qtk_status st;
	int32_t ids[20] = { 1, 2, 3 };
	float lg[3 * 512];
	qtk_rt_eval_opts eo = { .ctx = 16, .half = 1, .bos = 1 };
	qtk_rt_eval_result r;

	REQUIRE(qtk_rt_lm_open(t_data("stories260K/model.safetensors"), &lm, &st) == QTK_OK);
	REQUIRE(qtk_rt_lm_ctx_new(lm, &o, &c, &st) == QTK_OK);
	ids[1] = 512;
	CHECK_EQ(qtk_rt_lm_forward(c, ids, 3, 0, lg, 3, &st), QTK_E_ARG);
	CHECK(strstr(st.msg, "token id 512") != NULL);
	ids[1] = -1;
	CHECK_EQ(qtk_rt_lm_forward(c, ids, 3, 0, lg, 3, &st), QTK_E_ARG);
	ids[1] = 5;
	CHECK_EQ(qtk_rt_lm_forward(c, ids, 3, 14, lg, 3, &st), QTK_E_ARG); /* past 16 */
	CHECK_EQ(qtk_rt_lm_forward(c, ids, 3, SIZE_MAX, lg, 3, &st), QTK_E_ARG);
	CHECK_EQ(qtk_rt_lm_forward(c, ids, 3, 0, lg, 4, &st), QTK_E_ARG);
	CHECK_EQ(qtk_rt_lm_forward(c, ids, 3, 13, lg, 3, &st), QTK_OK);
	CHECK_EQ(qtk_rt_lm_forward(c, ids, 0, 0, NULL, 0, &st), QTK_OK);
	CHECK_EQ(qtk_rt_eval(c, NULL, ids, 15, &eo, &r, &st), QTK_E_ARG); /* < one window */
	CHECK_EQ(qtk_rt_eval(c, NULL, ids, 16, &eo, &r, &st), QTK_OK);
	CHECK_EQ(r.scored, 7);
	eo.ctx = 17;
	CHECK_EQ(qtk_rt_eval(c, NULL, ids, 20, &eo, &r, &st), QTK_E_ARG); /* > context */
	eo.ctx = 8;
	eo.half = 0;
	CHECK_EQ(qtk_rt_eval(c, NULL, ids, 17, &eo, &r, &st), QTK_OK); /* 8 + 8 + 1 */
	CHECK_EQ(r.windows, 2);
	CHECK_EQ(r.scored, 14);
	CHECK_EQ(qtk_rt_eval(c, NULL, ids, 18, &eo, &r, &st), QTK_OK);
	CHECK_EQ(r.windows, 3);
	CHECK_EQ(r.scored, 15);
	qtk_rt_lm_ctx_free(c);
	qtk_rt_lm_close(lm);
}

/* A .qtk made from a GGUF keeps GGUF names (interleaved RoPE) and records
 * its source: the description and the vocabulary come from there. A .qtk
 * made from safetensors finds the tokenizer beside its source. */
TEST(lm_qtk_finds_description_and_tokenizer_through_its_source)
{
	qtk_conv_opts o = { .output = t_tmp("g.qtk"), .format = QTK_OUT_QTK,
	                    .scale_dtype = QTK_DT_F16, .threads = 2, .force = 1 };
	qtk_rt_lm *lm;
	qtk_tok *tok = NULL;
	qtk_status st;
	double ppl;

	o.input = t_data("stories260K/source-tinyllamas-stories-260k-f32.gguf");
	REQUIRE(t_convert(&o, QTK_SCHEME_F32, 32, NULL, NULL, &st) == QTK_OK);
	REQUIRE(qtk_rt_lm_open(t_tmp("g.qtk"), &lm, &st) == QTK_OK);
	CHECK_EQ(qtk_rt_lm_describe(lm)->rope, QTK_RT_ROPE_INTERLEAVED);
	CHECK_EQ(qtk_rt_lm_describe(lm)->n_head_kv, 4);
	CHECK_EQ(qtk_rt_lm_describe(lm)->tied, 0); /* the v1 file has output.weight */
	CHECK_EQ(qtk_rt_lm_tokenizer(lm, NULL, &tok, &st), QTK_OK);
	CHECK(tok && qtk_tok_count(tok) == 512);
	qtk_tok_close(tok);
	qtk_rt_lm_close(lm);
	REQUIRE(ppl256(t_tmp("g.qtk"), QTK_RT_FLOAT, &ppl) == 0);
	CHECK(fabs(ppl - 3.74) <= 0.01);

	REQUIRE(make(t_tmp("h.qtk"), QTK_OUT_QTK, QTK_SCHEME_INT8, 32, NULL) == 0);
	REQUIRE(qtk_rt_lm_open(t_tmp("h.qtk"), &lm, &st) == QTK_OK);
	CHECK_EQ(qtk_rt_lm_describe(lm)->rope, QTK_RT_ROPE_HALF);
	CHECK_STR(qtk_rt_lm_scheme(lm), "int8");
	CHECK_EQ(qtk_rt_lm_tokenizer(lm, NULL, &tok, &st), QTK_OK);
	qtk_tok_close(tok);
	CHECK_EQ(qtk_rt_lm_tokenizer(lm, t_tmp("nothing.model"), &tok, &st), QTK_E_NOT_FOUND);
	CHECK(!tok);
	qtk_rt_lm_close(lm);
}
