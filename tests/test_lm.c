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
