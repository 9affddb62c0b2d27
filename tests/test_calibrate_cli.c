/* tests: `qtk calibrate` on stories260K — every linear weight (the tied
 * head under the embedding's name) with the right count, sums and X^T X
 * equal to a direct recomputation, merging equal to one run over the same
 * tokens, output kinds, usage errors and failures; with QTK_LLAMA_BIN,
 * llama-quantize takes qtk's imatrix and qtk reads llama-imatrix's. */
#include <math.h>
#include <stdlib.h>

#include "qtk_runtime.h"
#include "test.h"

static const char *bin(void)
{
	const char *b = getenv("QTK_BIN");
	return b ? b : "build/qtk";
}

#define S260 "tests/data/stories260K/"
#define TEXT S260 "tinystories.txt"

static qtk_stats *open_stats(const char *path)
{
	qtk_stats *s = NULL;
	qtk_status st;

	if (qtk_stats_open(path, &s, NULL, &st))
		t_fail_at(__FILE__, __LINE__, "%s", st.msg);
	return s;
}

/* ---- the direct recomputation ------------------------------------------ */

/* Sums of one weight's inputs, in double, token by token. */
typedef struct {
	const char *weight;
	size_t cols;
	uint64_t count;
	double sum[256], sum2[256], xtx[64 * 64];
} direct;

static void on_input(void *user, const char *w, const float *x, size_t n, size_t cols)
{
	direct *d = user;

	if (strcmp(w, d->weight))
		return;
	d->cols = cols;
	d->count += n;
	for (size_t t = 0; t < n; t++)
		for (size_t j = 0; j < cols; j++) {
			double v = (double)x[t * cols + j];
			d->sum[j] += v;
			d->sum2[j] += v * v;
			for (size_t k = 0; cols <= 64 && k < cols; k++)
				d->xtx[j * cols + k] += v * (double)x[t * cols + k];
		}
}

/* Run stories260K over the first n tokens of the text in windows of ctx,
 * BOS first in each, as `qtk calibrate` does; d collects its weight. */
static int run_direct(direct *d, size_t ntok, size_t ctx)
{
	qtk_rt_lm *lm = NULL;
	qtk_rt_lm_ctx *c = NULL;
	qtk_tok *tok = NULL;
	qtk_rt_lm_opts o = { .n_ctx = (uint32_t)ctx, .threads = 1, .hook = on_input, .hook_user = d };
	qtk_status st;
	size_t len, n = 0;
	char *text = t_read_file(TEXT, &len);
	int32_t *ids = text ? malloc(qtk_tok_max_tokens(len) * sizeof *ids) : NULL;
	float dummy;
	int ok = ids && !qtk_rt_lm_open(S260 "model.safetensors", &lm, &st) &&
	         !qtk_rt_lm_ctx_new(lm, &o, &c, &st) && !qtk_rt_lm_tokenizer(lm, NULL, &tok, &st) &&
	         !qtk_tok_encode(tok, text, len, QTK_TOK_ADD_BOS, ids, qtk_tok_max_tokens(len), &n,
	                         &st) && n >= ntok;

	for (size_t off = 0; ok && off < ntok; off += ctx) {
		size_t m = ntok - off < ctx ? ntok - off : ctx;
		ids[off] = qtk_tok_bos(tok);
		ok = !qtk_rt_lm_forward(c, ids + off, m, 0, &dummy, 0, &st);
	}
	qtk_tok_close(tok);
	qtk_rt_lm_ctx_free(c);
	qtk_rt_lm_close(lm);
	free(ids);
	free(text);
	return ok ? 0 : -1;
}

static int close_rel(double a, double b, double tol)
{
	return fabs(a - b) <= tol * fmax(fabs(a), fabs(b)) + 1e-12;
}

TEST(calibrate_names_counts_and_sums)
{
	static const char *const lin[] = { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
	                                   "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
	                                   "mlp.down_proj" };
	static const char *const watch[] = { "model.layers.2.mlp.down_proj.weight",
	                                     "model.embed_tokens.weight" };
	const char *out = t_tmp("s.stats");
	qtk_stats *s;
	char name[96];

	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " --tokens 300 "
	                  "--ctx 128 -j 1 -q -o %s", bin(), out), 0);
	REQUIRE((s = open_stats(out)) != NULL);
	CHECK_EQ(qtk_stats_count(s), 5 * 7 + 1);
	for (int l = 0; l < 5; l++)
		for (int k = 0; k < 7; k++) {
			const qtk_stats_entry *e;
			snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, lin[k]);
			e = qtk_stats_find(s, name);
			CHECK_MSG(e && e->count == 300 && e->cols == (k == 6 ? 172u : 64u) && e->sum &&
			          !e->xtx, "%s", name);
		}
	CHECK(qtk_stats_find(s, "model.embed_tokens.weight") != NULL);
	CHECK(qtk_stats_find(s, "lm_head.weight") == NULL);
	CHECK_EQ(qtk_stats_info_of(s)->chunks, 3);
	CHECK_EQ(qtk_stats_info_of(s)->chunk_size, 128);
	for (int w = 0; w < 2; w++) {
		direct *d = calloc(1, sizeof *d);
		const qtk_stats_entry *e = qtk_stats_find(s, watch[w]);
		REQUIRE(d && e);
		d->weight = watch[w];
		REQUIRE(run_direct(d, 300, 128) == 0);
		CHECK_EQ(d->count, e->count);
		CHECK_EQ(d->cols, e->cols);
		for (size_t j = 0; j < d->cols; j++)
			CHECK_MSG(close_rel(d->sum[j], e->sum[j], 1e-9) &&
			          close_rel(d->sum2[j], e->sum2[j], 1e-9), "%s[%zu]: %g %g / %g %g",
			          watch[w], j, d->sum[j], e->sum[j], d->sum2[j], e->sum2[j]);
		free(d);
	}
	qtk_stats_free(s);
}

TEST(calibrate_xtx_matches_direct)
{
	const char *out = t_tmp("x.stats");
	direct *d = calloc(1, sizeof *d);
	const qtk_stats_entry *e;
	qtk_stats *s;

	REQUIRE(d);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " --tokens 200 "
	                  "--ctx 128 --xtx -q -o %s", bin(), out), 0);
	REQUIRE((s = open_stats(out)) != NULL);
	d->weight = "model.layers.1.self_attn.o_proj.weight";
	REQUIRE(run_direct(d, 200, 128) == 0);
	e = qtk_stats_find(s, d->weight);
	REQUIRE(e && e->xtx && e->cols == 64);
	/* per step in F32 (ssyrk), summed in F64: to F32 rounding of the
	 * step's products, measured against the channels' scale */
	for (size_t i = 0; i < 64; i++)
		for (size_t j = 0; j < 64; j++) {
			double scale = sqrt(d->xtx[i * 64 + i] * d->xtx[j * 64 + j]);
			CHECK_MSG(fabs(e->xtx[i * 64 + j] - d->xtx[i * 64 + j]) <= 1e-5 * scale,
			          "[%zu][%zu] %g vs %g", i, j, e->xtx[i * 64 + j], d->xtx[i * 64 + j]);
			CHECK(e->xtx[i * 64 + j] == e->xtx[j * 64 + i]);
		}
	qtk_stats_free(s);
	free(d);
	/* the same bytes at any thread count */
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " --tokens 200 "
	                  "--ctx 128 --xtx -q -j 2 -o %s.2", bin(), out), 0);
	CHECK_EQ(t_system("cmp -s %s %s.2", out, out), 0);
}

/* Two runs over consecutive halves of the tokens, merged, are one run over
 * all of them (windows aligned: --skip is a multiple of --ctx). */
TEST(calibrate_merge_equals_one_run)
{
	const char *a = t_tmp("a.stats"), *b = t_tmp("b.stats"), *all = t_tmp("all.stats"),
	           *m = t_tmp("m.stats"), *mg = t_tmp("m.gguf");
	qtk_stats *sm, *sa, *sg;

	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " --tokens 256 "
	                  "--ctx 128 --xtx -q -o %s", bin(), a), 0);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " --skip 256 "
	                  "--tokens 256 --ctx 128 --xtx -q -o %s", bin(), b), 0);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " --tokens 512 "
	                  "--ctx 128 --xtx -q -o %s", bin(), all), 0);
	CHECK_EQ(t_system("%s calibrate --merge %s %s -q -o %s", bin(), a, b, m), 0);
	CHECK_EQ(t_system("%s calibrate --merge %s %s -q -o %s", bin(), a, b, mg), 0);
	REQUIRE((sm = open_stats(m)) && (sa = open_stats(all)) && (sg = open_stats(mg)));
	CHECK_EQ(qtk_stats_count(sm), qtk_stats_count(sa));
	CHECK_EQ(qtk_stats_info_of(sm)->chunks, 4);
	for (size_t i = 0; i < qtk_stats_count(sa); i++) {
		const qtk_stats_entry *x = qtk_stats_get(sa, i), *y = qtk_stats_find(sm, x->name),
		                      *g = qtk_stats_find(sg, x->name);
		REQUIRE(y && g && y->xtx && y->sum);
		CHECK_EQ(y->count, 512);
		CHECK_EQ(g->count, 512);
		for (size_t j = 0; j < x->cols; j++) {
			CHECK(close_rel(x->sum2[j], y->sum2[j], 1e-12));
			CHECK(close_rel(x->sum[j], y->sum[j], 1e-9));
			CHECK(g->sum2[j] == (double)(float)y->sum2[j]);
		}
		for (size_t j = 0; j < x->cols * x->cols; j++)
			CHECK(close_rel(x->xtx[j], y->xtx[j], 1e-9));
	}
	qtk_stats_free(sm);
	qtk_stats_free(sa);
	qtk_stats_free(sg);
}

TEST(calibrate_output_kinds_and_gguf_names)
{
	const char *g = t_tmp("s.gguf"), *d = t_tmp("s.bin");
	qtk_stats *s;
	qtk_stats_kind k;
	qtk_status st;

	/* a GGUF model (this one has its own output.weight): its names; the
	 * kind from the output's name, or --format */
	CHECK_EQ(t_system("%s calibrate " S260 "source-tinyllamas-stories-260k-f32.gguf --text " TEXT
	                  " --tokens 100 -q -o %s", bin(), g), 0);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT
	                  " --tokens 100 -q --format dat -o %s", bin(), d), 0);
	REQUIRE(qtk_stats_open(g, &s, &k, &st) == QTK_OK);
	CHECK_EQ(k, QTK_STATS_IMATRIX);
	CHECK(qtk_stats_find(s, "blk.4.ffn_down.weight") && qtk_stats_find(s, "output.weight"));
	CHECK(qtk_stats_find(s, "model.layers.4.mlp.down_proj.weight") != NULL);
	CHECK_EQ(qtk_stats_count(s), 36);
	CHECK_STR(qtk_stats_get(s, 0)->name, qtk_stats_get(s, 0)->key);
	qtk_stats_free(s);
	REQUIRE(qtk_stats_open(d, &s, &k, &st) == QTK_OK);
	CHECK_EQ(k, QTK_STATS_DAT);
	CHECK(qtk_stats_find(s, "model.layers.4.mlp.down_proj.weight") != NULL);
	qtk_stats_free(s);
}

TEST(calibrate_usage_and_failures)
{
	const char *err = t_tmp("err.txt"), *out = t_tmp("o.stats");
	char *msg;
	size_t n;

	CHECK_EQ(t_system("%s calibrate --help > /dev/null", bin()), 0);
	CHECK_EQ(t_system("%s calibrate 2> %s", bin(), err), 2);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " 2> %s", bin(), err), 2);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors -o %s 2> %s", bin(), out, err), 2);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " --xtx -o x.gguf "
	                  "2> %s", bin(), err), 2);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " --format npz -o %s "
	                  "2> %s", bin(), out, err), 2);
	CHECK_EQ(t_system("%s calibrate --merge a b --text " TEXT " -o %s 2> %s", bin(), out, err), 2);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " --ctx 1 -o %s "
	                  "2> %s", bin(), out, err), 2);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1); /* err.txt */
	/* failures: exit 1, a message naming the file, no output */
	CHECK_EQ(t_system("%s calibrate %s --text " TEXT " -o %s 2> %s", bin(), t_tmp("none"), out,
	                  err), 1);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " --skip 9999999 "
	                  "-o %s 2> %s", bin(), out, err), 1);
	REQUIRE((msg = t_read_file(err, &n)) != NULL);
	CHECK_MSG(strstr(msg, "none left after --skip 9999999"), "%s", msg);
	free(msg);
	REQUIRE(t_write_file(t_tmp("junk.dat"), "junk junk junk junk junk", 24) == 0);
	CHECK_EQ(t_system("%s calibrate --merge %s -o %s 2> %s", bin(), t_tmp("junk.dat"), out, err), 1);
	REQUIRE((msg = t_read_file(err, &n)) != NULL);
	CHECK_MSG(strstr(msg, "junk.dat") && strstr(msg, "not a statistics file"), "%s", msg);
	free(msg);
	CHECK(!t_exists(out));
	/* an existing output stays without --force; an input is never the output */
	REQUIRE(t_write_file(out, "old", 3) == 0);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " --tokens 50 -q "
	                  "-o %s 2> %s", bin(), out, err), 1);
	msg = t_read_file(out, &n);
	CHECK(msg && n == 3);
	free(msg);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " --tokens 50 -q -f "
	                  "-o %s", bin(), out), 0);
	CHECK_EQ(t_system("%s calibrate --merge %s -q -f -o %s 2> %s", bin(), out, out, err), 1);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text %s --tokens 50 -q -f -o %s "
	                  "2> %s", bin(), err, err, err), 1);
}

/* ---- llama.cpp (optional) ---------------------------------------------- */

static const char *llama_bin(void)
{
	const char *b = getenv("QTK_LLAMA_BIN");
	static char p[4096];

	if (!b || !*b)
		SKIP("QTK_LLAMA_BIN is not set (llama.cpp's build/bin): llama-quantize and "
		     "llama-imatrix interop not checked");
	snprintf(p, sizeof p, "%s/llama-quantize", b);
	if (!t_exists(p))
		SKIP("%s not found", p);
	return b;
}

TEST(calibrate_llama_cpp_interop)
{
	const char *L = llama_bin(), *m = t_tmp("m.gguf"), *im = t_tmp("q.imatrix.gguf"),
	           *dat = t_tmp("q.dat"), *li = t_tmp("li.gguf"), *own = t_tmp("own.stats"),
	           *log = t_tmp("log.txt");
	qtk_stats *a, *b;
	char *msg;
	size_t n;

	CHECK_EQ(t_system("%s convert " S260 "model.safetensors -F gguf -s f32 -q -o %s", bin(), m), 0);
	CHECK_EQ(t_system("%s calibrate " S260 "model.safetensors --text " TEXT " --tokens 1024 "
	                  "--ctx 256 -q -o %s", bin(), im), 0);
	CHECK_EQ(t_system("%s calibrate --merge %s -q -o %s", bin(), im, dat), 0);
	/* llama-quantize takes both kinds (ffn_down's 172 columns are not a
	 * multiple of 32: F16, as qtk's own Q4_0 export) */
	for (int k = 0; k < 2; k++) {
		CHECK_EQ(t_system("LD_LIBRARY_PATH=%s %s/llama-quantize --imatrix %s --tensor-type "
		                  "ffn_down=f16 --token-embedding-type q4_0 %s %s Q4_0 > %s 2>&1", L, L,
		                  k ? dat : im, m, t_tmp("q4.gguf"), log), 0);
		REQUIRE((msg = t_read_file(log, &n)) != NULL);
		CHECK_MSG(strstr(msg, "loaded 36 importance matrix entries") &&
		          !strstr(msg, "did not find weights"), "%s", msg);
		free(msg);
	}
	/* qtk reads llama-imatrix's file; the means of x^2 agree with qtk's
	 * own run over the same windows (llama.cpp's F16 KV cache: 1e-3) */
	CHECK_EQ(t_system("LD_LIBRARY_PATH=%s %s/llama-imatrix -m %s -f " TEXT " -c 128 --chunks 4 "
	                  "-t 2 -o %s > %s 2>&1", L, L, m, li, log), 0);
	CHECK_EQ(t_system("%s calibrate %s --text " TEXT " --tokens 512 --ctx 128 -q -o %s", bin(), m,
	                  own), 0);
	REQUIRE((a = open_stats(li)) && (b = open_stats(own)));
	CHECK_EQ(qtk_stats_count(a), 35); /* llama-imatrix leaves out the tied head */
	for (size_t i = 0; i < qtk_stats_count(a); i++) {
		const qtk_stats_entry *x = qtk_stats_get(a, i), *y = qtk_stats_find(b, x->name);
		REQUIRE(y);
		CHECK_EQ(x->count, 512);
		for (size_t j = 0; j < x->cols; j++)
			CHECK_MSG(close_rel(x->sum2[j] / (double)x->count, y->sum2[j] / (double)y->count,
			                    5e-3), "%s[%zu]", x->name, j);
	}
	qtk_stats_free(a);
	qtk_stats_free(b);
}
