/* convert: `qtk calibrate MODEL --text FILE -o STATS` — run the float model
 * over a text in windows and record, for every linear weight, the
 * statistics of its inputs (token count, per-channel sum x^2 and sum x,
 * optionally X^T X); `qtk calibrate --merge A B ... -o OUT` adds statistics
 * files (docs/calibration.md). */
#include <cblas.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calib.h"
#include "cli.h"

static void calibrate_usage(FILE *f)
{
	fprintf(f,
"Usage: qtk calibrate MODEL --text FILE -o STATS [OPTIONS]\n"
"       qtk calibrate MODEL --vocab -o STATS [OPTIONS]\n"
"       qtk calibrate MODEL --generate N -o STATS [OPTIONS]\n"
"       qtk calibrate --merge STATS... -o STATS [OPTIONS]\n\n"
"Run a LLaMA-family model (.qtk, GGUF or safetensors) on the float path\n"
"over a text and record, for every linear weight (the tied output head\n"
"under the embedding's name), the statistics of its input vectors: the\n"
"token count, per input channel the sum of x^2 and the sum of x, and with\n"
"--xtx the full X^T X. The text is tokenized once (BOS first when the\n"
"vocabulary asks for it) and cut into windows of --ctx tokens, each run as\n"
"a new sequence with BOS in its first position. With --vocab there is no\n"
"text: every token of the vocabulary is run once, alone at position 0 (the\n"
"model's own inputs, weighted alike; with --xtx, for --calib-mode gptq\n"
"--damp 1: calibration.md, \"Without a text\"). With --generate the model\n"
"writes its own text: N sequences from BOS, each token drawn from its\n"
"softmax at temperature 1, up to EOS or --ctx tokens.\n\n"
"  -t, --text FILE        the calibration text (or --vocab, or --merge)\n"
"      --vocab            statistics from the vocabulary instead of a text\n"
"      --generate N       statistics from N sequences the model writes\n"
"      --seed S           --generate's random seed (default 1)\n"
"  -o, --output STATS     the statistics file to write (required)\n"
"  -c, --ctx N            window length (default: 512, or the model's context\n"
"                         if shorter)\n"
"      --tokens N         use at most N tokens of the text\n"
"      --skip N           leave out the first N tokens of the text\n"
"      --xtx              also record X^T X ([cols][cols] per weight; qtk\n"
"                         format only)\n"
"      --format F         qtk (safetensors, the default), imatrix (llama.cpp's\n"
"                         GGUF imatrix) or dat (its legacy format); default\n"
"                         from the name: *.gguf imatrix, *.dat dat, else qtk\n"
"      --merge            the arguments are statistics files (any kind) to add\n"
"                         up, weighted by their token counts\n"
"  -j, --threads N        threads (default: all cores)\n"
"      --tokenizer PATH   tokenizer file (default: found beside MODEL)\n"
"  -f, --force            replace an existing output\n"
"  -q, --quiet            no progress on stderr\n"
"  -h, --help             show this help\n\n"
"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

enum { OPT_TOKENS = 256, OPT_SKIP, OPT_XTX, OPT_FORMAT, OPT_MERGE, OPT_TOK, OPT_VOCAB,
       OPT_GENERATE, OPT_SEED };

static const struct option long_opts[] = {
	{ "text", required_argument, NULL, 't' },
	{ "output", required_argument, NULL, 'o' },
	{ "ctx", required_argument, NULL, 'c' },
	{ "tokens", required_argument, NULL, OPT_TOKENS },
	{ "skip", required_argument, NULL, OPT_SKIP },
	{ "xtx", no_argument, NULL, OPT_XTX },
	{ "format", required_argument, NULL, OPT_FORMAT },
	{ "merge", no_argument, NULL, OPT_MERGE },
	{ "vocab", no_argument, NULL, OPT_VOCAB },
	{ "generate", required_argument, NULL, OPT_GENERATE },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "threads", required_argument, NULL, 'j' },
	{ "tokenizer", required_argument, NULL, OPT_TOK },
	{ "force", no_argument, NULL, 'f' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

typedef struct {
	const char *text, *out, *tokenizer;
	char *const *inputs;   /* MODEL, or the files to merge */
	int ninputs;
	uint64_t ctx, tokens, skip, threads, generate, seed;
	int xtx, merge, vocab, seed_given, force, quiet, format; /* format: -1 from the name */
} calib_args;

static int parse_format(const char *s, int *f)
{
	static const char *const names[] = { "qtk", "imatrix", "dat" };

	for (int i = 0; i < 3; i++)
		if (!strcmp(s, names[i])) {
			*f = i; /* = qtk_stats_kind */
			return 0;
		}
	return cli_usage_error("calibrate", "unknown --format '%s' (qtk, imatrix, dat)", s);
}

static int parse_opt(int ch, calib_args *a, char **argv)
{
	switch (ch) {
	case 't': a->text = optarg; return 0;
	case 'o': a->out = optarg; return 0;
	case 'c': return cli_uint("calibrate", "--ctx", optarg, 2, UINT32_MAX, &a->ctx);
	case OPT_TOKENS: return cli_uint("calibrate", "--tokens", optarg, 1, SIZE_MAX / 4, &a->tokens);
	case OPT_SKIP: return cli_uint("calibrate", "--skip", optarg, 0, SIZE_MAX / 4, &a->skip);
	case OPT_XTX: a->xtx = 1; return 0;
	case OPT_FORMAT: return parse_format(optarg, &a->format);
	case OPT_MERGE: a->merge = 1; return 0;
	case OPT_VOCAB: a->vocab = 1; return 0;
	case OPT_GENERATE:
		return cli_uint("calibrate", "--generate", optarg, 1, 1u << 24, &a->generate);
	case OPT_SEED:
		a->seed_given = 1;
		return cli_uint("calibrate", "--seed", optarg, 0, UINT64_MAX, &a->seed);
	case 'j': return cli_uint("calibrate", "--threads", optarg, 1, 1024, &a->threads);
	case OPT_TOK: a->tokenizer = optarg; return 0;
	case 'f': a->force = 1; return 0;
	case 'q': a->quiet = 1; return 0;
	case 'h': calibrate_usage(stdout); return -1;
	case ':': return cli_usage_error("calibrate", "option '%s' needs a value", argv[optind - 1]);
	default: return cli_usage_error("calibrate", "unknown option '%s'", argv[optind - 1]);
	}
}

static int ends_with(const char *s, const char *sfx)
{
	size_t a = strlen(s), b = strlen(sfx);

	return a >= b && !strcmp(s + a - b, sfx);
}

static int parse_args(int argc, char **argv, calib_args *a)
{
	int ch, rc;

	memset(a, 0, sizeof *a);
	a->format = -1;
	a->seed = 1;
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":t:o:c:j:fqh", long_opts, NULL)) != -1)
		if ((rc = parse_opt(ch, a, argv)))
			return rc;
	a->inputs = argv + optind;
	a->ninputs = argc - optind;
	if (!a->ninputs)
		return cli_usage_error("calibrate", a->merge ? "missing STATS files to merge"
		                                             : "missing MODEL");
	if (!a->out)
		return cli_usage_error("calibrate", "missing -o STATS");
	if (a->merge && (a->text || a->xtx || a->tokens || a->skip || a->ctx || a->tokenizer ||
	                 a->vocab || a->generate || a->seed_given))
		return cli_usage_error("calibrate", "--merge takes statistics files, not --text, "
		                       "--vocab, --generate, --seed, --xtx, --tokens, --skip, --ctx "
		                       "or --tokenizer");
	if (a->vocab && (a->text || a->tokens || a->skip || a->ctx || a->tokenizer ||
	                 a->generate || a->seed_given))
		return cli_usage_error("calibrate", "--vocab runs the vocabulary, not a text: no "
		                       "--text, --generate, --seed, --tokens, --skip, --ctx or "
		                       "--tokenizer");
	if (a->generate && (a->text || a->tokens || a->skip))
		return cli_usage_error("calibrate", "--generate writes its own text: no --text, "
		                       "--tokens or --skip");
	if (a->seed_given && !a->generate)
		return cli_usage_error("calibrate", "--seed needs --generate");
	if (!a->merge && a->ninputs > 1)
		return cli_usage_error("calibrate", "one model at a time (--merge adds statistics files)");
	if (!a->merge && !a->vocab && !a->generate && !a->text)
		return cli_usage_error("calibrate", "missing --text FILE (or --vocab, or --generate N)");
	if (a->format < 0)
		a->format = ends_with(a->out, ".gguf") ? QTK_STATS_IMATRIX
		            : ends_with(a->out, ".dat") ? QTK_STATS_DAT : QTK_STATS_QTK;
	if (a->xtx && a->format != QTK_STATS_QTK)
		return cli_usage_error("calibrate", "--xtx needs --format qtk (imatrix and dat hold "
		                       "only the sums of squares)");
	return 0;
}

/* ---- accumulating ------------------------------------------------------ */

/* The hook's state. One step's sums are kept for the input they came from,
 * so the products that read the same input (q, k, v; gate, up) compute them
 * once. */
typedef struct {
	qtk_stats *s;
	unsigned flags;        /* QTK_STATS_SUM, QTK_STATS_XTX */
	qtk_err rc;            /* the first failure (the hook cannot return one) */
	qtk_status st;
	float *x;              /* [n][cols] copy of the last input */
	size_t n, cols, cap;
	double *sum, *sum2;    /* [cols] of that input */
	size_t col_cap;        /* capacity of sum and sum2 */
	float *xtx;            /* [cols][cols] upper triangle (ssyrk) of it */
	size_t xtx_cap;
} calib_acc;

static int grow(void **p, size_t *cap, size_t need, size_t elsize)
{
	void *np;

	if (need <= *cap)
		return 0;
	if (!(np = qtk_realloc(*p, need * elsize)))
		return -1;
	*p = np;
	*cap = need;
	return 0;
}

/* Sums (and X^T X) of x [n][cols] into the acc's step buffers. */
static qtk_err step_sums(calib_acc *a, const float *x, size_t n, size_t cols)
{
	size_t sc = a->col_cap;

	if (n > SIZE_MAX / cols || grow((void **)&a->x, &a->cap, n * cols, sizeof *a->x) ||
	    grow((void **)&a->sum, &sc, cols, sizeof *a->sum) ||
	    (sc = a->col_cap, grow((void **)&a->sum2, &sc, cols, sizeof *a->sum2)) ||
	    ((a->flags & QTK_STATS_XTX) &&
	     grow((void **)&a->xtx, &a->xtx_cap, cols * cols, sizeof *a->xtx))) {
		a->n = 0; /* the cached step is gone */
		return qtk_fail(&a->st, QTK_E_NOMEM, "calibrate: out of memory for %zu x %zu inputs",
		                n, cols);
	}
	a->col_cap = sc;
	memcpy(a->x, x, n * cols * sizeof *x);
	a->n = n;
	a->cols = cols;
	for (size_t j = 0; j < cols; j++)
		a->sum[j] = a->sum2[j] = 0;
	for (size_t t = 0; t < n; t++)
		for (size_t j = 0; j < cols; j++) {
			double v = (double)x[t * cols + j];
			a->sum[j] += v;
			a->sum2[j] += v * v;
		}
	if (a->flags & QTK_STATS_XTX)
		cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)cols, (blasint)n, 1.0f, x,
		            (blasint)cols, 0.0f, a->xtx, (blasint)cols);
	return QTK_OK;
}

static void add_step(const calib_acc *a, qtk_stats_entry *e)
{
	size_t c = a->cols;

	e->count += a->n;
	for (size_t j = 0; j < c; j++) {
		e->sum2[j] += a->sum2[j];
		if (e->sum)
			e->sum[j] += a->sum[j];
	}
	if (e->xtx)
		for (size_t i = 0; i < c; i++)
			for (size_t j = i; j < c; j++)
				e->xtx[i * c + j] += (double)a->xtx[i * c + j];
}

static void on_input(void *user, const char *weight, const float *x, size_t n, size_t cols)
{
	calib_acc *a = user;
	qtk_stats_entry *e;

	if (a->rc || !n)
		return;
	if (!(e = qtk_stats_find(a->s, weight)) &&
	    (a->rc = qtk_stats_add(a->s, weight, cols, a->flags, &e, &a->st)))
		return;
	if (e->cols != cols) {
		a->rc = qtk_fail(&a->st, QTK_E_ARG, "calibrate: weight '%s' read inputs of %zu and "
		                 "of %llu channels", weight, cols, (unsigned long long)e->cols);
		return;
	}
	if (!(n == a->n && cols == a->cols && !memcmp(x, a->x, n * cols * sizeof *x)) &&
	    (a->rc = step_sums(a, x, n, cols)))
		return;
	add_step(a, e);
}

/* X^T X was accumulated in the upper triangle: mirror it. */
static void finish_xtx(qtk_stats *s)
{
	for (size_t k = 0; k < qtk_stats_count(s); k++) {
		qtk_stats_entry *e = qtk_stats_get(s, k);
		uint64_t c = e->cols;
		for (uint64_t i = 0; e->xtx && i < c; i++)
			for (uint64_t j = i + 1; j < c; j++)
				e->xtx[j * c + i] = e->xtx[i * c + j];
	}
}

static void acc_free(calib_acc *a)
{
	qtk_free(a->x);
	qtk_free(a->sum);
	qtk_free(a->sum2);
	qtk_free(a->xtx);
}

/* ---- running ----------------------------------------------------------- */

/* Every window through the model; the hook accumulates. */
static int run_windows(const calib_args *a, qtk_rt_lm_ctx *c, calib_acc *acc, int32_t *ids,
                       size_t n, int32_t bos)
{
	size_t ctx = qtk_rt_lm_ctx_size(c), nw = (n + ctx - 1) / ctx;
	int progress = !a->quiet && isatty(2);
	double t0 = cli_now();
	float dummy;
	qtk_status st;

	for (size_t w = 0; w < nw; w++) {
		size_t off = w * ctx, len = n - off < ctx ? n - off : ctx;
		int32_t first = ids[off];
		if (bos >= 0)
			ids[off] = bos;
		if (qtk_rt_lm_forward(c, ids + off, len, 0, &dummy, 0, &st) != QTK_OK)
			return cli_report(&st);
		ids[off] = first;
		if (acc->rc)
			return cli_report(&acc->st);
		if (progress)
			fprintf(stderr, "\r[%zu/%zu windows] %zu tokens, %.1f s", w + 1, nw, off + len,
			        cli_now() - t0);
	}
	if (progress)
		fprintf(stderr, "\n");
	return QTK_EXIT_OK;
}

/* --vocab: every token id alone at position 0, a batch at a time. */
static int run_vocab(const calib_args *a, qtk_rt_lm_ctx *c, calib_acc *acc, uint32_t nv)
{
	enum { STEP = 4096 };
	int progress = !a->quiet && isatty(2);
	double t0 = cli_now();
	int32_t *ids = qtk_malloc(STEP * sizeof *ids);
	qtk_status st;

	if (!ids) {
		qtk_fail(&st, QTK_E_NOMEM, "calibrate: out of memory");
		return cli_report(&st);
	}
	for (uint32_t s = 0; s < nv; s += STEP) {
		uint32_t m = nv - s < STEP ? nv - s : STEP;
		for (uint32_t i = 0; i < m; i++)
			ids[i] = (int32_t)(s + i);
		if (qtk_rt_lm_forward_each(c, ids, m, NULL, &st) != QTK_OK) {
			qtk_free(ids);
			return cli_report(&st);
		}
		if (acc->rc) {
			qtk_free(ids);
			return cli_report(&acc->st);
		}
		if (progress)
			fprintf(stderr, "\r[%u/%u tokens] %.1f s", s + m, nv, cli_now() - t0);
	}
	if (progress)
		fprintf(stderr, "\n");
	qtk_free(ids);
	return QTK_EXIT_OK;
}

/* --generate: sequences the model writes, from BOS, each token drawn at
 * temperature 1, up to EOS or the context, one at a time on gen (a
 * context without the hook); then each sequence is run again as a whole
 * on c, whose hook records it (prompt processing: matrix products). *n:
 * the tokens recorded. */
static int run_generate(const calib_args *a, qtk_rt_lm_ctx *gen, qtk_rt_lm_ctx *c,
                        calib_acc *acc, const qtk_tok *tok, size_t *n)
{
	size_t V = qtk_rt_lm_describe(qtk_rt_lm_ctx_model(c))->n_vocab;
	size_t ctx = qtk_rt_lm_ctx_size(c);
	int progress = !a->quiet && isatty(2);
	float *logits = qtk_malloc(V * sizeof *logits), dummy;
	int32_t *seq = qtk_malloc(ctx * sizeof *seq);
	uint64_t rng = a->seed;
	int32_t bos = qtk_tok_bos(tok), eos = qtk_tok_eos(tok);
	double t0 = cli_now();
	qtk_status st;
	int rc = QTK_EXIT_OK;

	*n = 0;
	if (!logits || !seq) {
		qtk_fail(&st, QTK_E_NOMEM, "calibrate: out of memory");
		rc = cli_report(&st);
	} else if (bos < 0) {
		qtk_fail(&st, QTK_E_UNSUPPORTED, "%s: the vocabulary has no BOS token to start "
		         "--generate from", a->inputs[0]);
		rc = cli_report(&st);
	}
	for (uint64_t q = 0; !rc && q < a->generate; q++) {
		size_t len = 0;
		seq[len++] = bos;
		while (len < ctx) {
			if (qtk_rt_lm_forward(gen, seq + len - 1, 1, len - 1, logits, 1, &st) != QTK_OK) {
				rc = cli_report(&st);
				break;
			}
			int32_t t = cli_sample(logits, V, 1.0, &rng);
			if (t == eos)
				break;
			seq[len++] = t;
		}
		if (rc)
			break;
		if (qtk_rt_lm_forward(c, seq, len, 0, &dummy, 0, &st) != QTK_OK)
			rc = cli_report(&st);
		else if (acc->rc)
			rc = cli_report(&acc->st);
		*n += len;
		if (!rc && progress)
			fprintf(stderr, "\r[%llu/%llu sequences] %zu tokens, %.1f s",
			        (unsigned long long)q + 1, (unsigned long long)a->generate, *n,
			        cli_now() - t0);
	}
	if (progress)
		fprintf(stderr, "\n");
	qtk_free(logits);
	qtk_free(seq);
	return rc;
}

static int write_stats(const calib_args *a, const qtk_stats *s, const char *const *inputs,
                       size_t ninputs)
{
	qtk_write_opts wo = { .force = a->force, .inputs = inputs, .ninputs = ninputs };
	qtk_status st;

	if (qtk_stats_write(s, a->out, (qtk_stats_kind)a->format, &wo, &st) != QTK_OK)
		return cli_report(&st);
	return QTK_EXIT_OK;
}

static int calibrate(const calib_args *a, qtk_rt_lm *lm, qtk_rt_pool *pool, qtk_stats *s)
{
	calib_acc acc = { .s = s, .flags = QTK_STATS_SUM | (a->xtx ? QTK_STATS_XTX : 0) };
	qtk_rt_lm_opts o = { .path = QTK_RT_FLOAT, .pool = pool, .hook = on_input,
	                     .hook_user = &acc };
	const qtk_rt_lm_desc *d = qtk_rt_lm_describe(lm);
	qtk_rt_lm_ctx *c = NULL, *gen = NULL;
	qtk_tok *tok = NULL;
	qtk_status st;
	int32_t *ids = NULL;
	size_t n = 0;
	double t0 = cli_now();
	int rc = QTK_EXIT_OK;

	o.n_ctx = a->ctx ? (uint32_t)a->ctx : d->n_ctx < 512 ? d->n_ctx : 512;
	if (a->vocab) { /* no positions past 0: the smallest cache */
		o.n_ctx = 1;
		o.n_batch = 512;
	}
	if (qtk_rt_lm_ctx_new(lm, &o, &c, &st) != QTK_OK ||
	    (!a->vocab && qtk_rt_lm_tokenizer(lm, a->tokenizer, &tok, &st) != QTK_OK))
		rc = cli_report(&st);
	if (!rc && a->vocab) {
		n = d->n_vocab;
		rc = run_vocab(a, c, &acc, d->n_vocab);
	} else if (!rc && a->generate) {
		qtk_rt_lm_opts og = o;
		og.hook = NULL;
		og.hook_user = NULL;
		if (qtk_rt_lm_ctx_new(lm, &og, &gen, &st) != QTK_OK)
			rc = cli_report(&st);
		else
			rc = run_generate(a, gen, c, &acc, tok, &n);
	} else if (!rc) {
		rc = cli_tokenize_file(a->text, tok, a->skip, a->tokens, &ids, &n);
		if (!rc)
			rc = run_windows(a, c, &acc, ids, n,
			                 qtk_tok_wants_bos(tok) ? qtk_tok_bos(tok) : -1);
	}
	if (!rc) {
		qtk_stats_info *in = qtk_stats_info_of(s);
		char gname[96];
		snprintf(gname, sizeof gname, "generated: %llu sequences, seed %llu",
		         (unsigned long long)a->generate, (unsigned long long)a->seed);
		in->chunks = a->vocab ? n : a->generate ? a->generate : (n + o.n_ctx - 1) / o.n_ctx;
		in->chunk_size = a->vocab ? 1 : o.n_ctx;
		finish_xtx(s);
		const char *ds = a->vocab ? CALIB_VOCAB_DATASET : a->generate ? gname : a->text;
		if (qtk_stats_add_dataset(s, ds, &st) != QTK_OK)
			rc = cli_report(&st);
	}
	if (!rc && !a->quiet && a->generate)
		fprintf(stderr, "calibrate: %zu tokens in %llu sequences the model wrote (at most %u "
		        "each), %zu weights, %.1f s\n", n, (unsigned long long)a->generate, o.n_ctx,
		        qtk_stats_count(s), cli_now() - t0);
	else if (!rc && !a->quiet && a->vocab)
		fprintf(stderr, "calibrate: %zu tokens of the vocabulary, each alone, %zu weights, "
		        "%.1f s\n", n, qtk_stats_count(s), cli_now() - t0);
	else if (!rc && !a->quiet)
		fprintf(stderr, "calibrate: %zu tokens in %llu windows of %u, %zu weights, %.1f s\n",
		        n, (unsigned long long)qtk_stats_info_of(s)->chunks, o.n_ctx,
		        qtk_stats_count(s), cli_now() - t0);
	qtk_free(ids);
	acc_free(&acc);
	qtk_tok_close(tok);
	qtk_rt_lm_ctx_free(c);
	qtk_rt_lm_ctx_free(gen);
	return rc;
}

static int run_model(const calib_args *a)
{
	const char *inputs[2] = { a->inputs[0], a->text };
	size_t ninputs = a->vocab || a->generate ? 1 : 2;
	qtk_rt_pool *pool = NULL;
	qtk_rt_lm *lm = NULL;
	qtk_stats *s = NULL;
	qtk_status st;
	int rc = QTK_EXIT_OK;

	if (qtk_stats_new(&s, &st) != QTK_OK ||
	    qtk_rt_pool_create((unsigned)a->threads, &pool, &st) != QTK_OK ||
	    qtk_rt_lm_open(a->inputs[0], &lm, &st) != QTK_OK)
		rc = cli_report(&st);
	if (!rc)
		rc = calibrate(a, lm, pool, s);
	if (!rc)
		rc = write_stats(a, s, inputs, ninputs);
	qtk_rt_lm_close(lm);
	qtk_rt_pool_free(pool);
	qtk_stats_free(s);
	return rc;
}

static int run_merge(const calib_args *a)
{
	qtk_stats *s = NULL, *in;
	qtk_status st;
	int rc = QTK_EXIT_OK;

	if (qtk_stats_new(&s, &st) != QTK_OK)
		return cli_report(&st);
	for (int i = 0; !rc && i < a->ninputs; i++) {
		if (qtk_stats_open(a->inputs[i], &in, NULL, &st) != QTK_OK) {
			rc = cli_report(&st);
			break;
		}
		if (qtk_stats_merge(s, in, &st) != QTK_OK) {
			qtk_status_prefix(&st, a->inputs[i]);
			rc = cli_report(&st);
		}
		qtk_stats_free(in);
	}
	if (!rc)
		rc = write_stats(a, s, (const char *const *)a->inputs, (size_t)a->ninputs);
	if (!rc && !a->quiet)
		fprintf(stderr, "calibrate: merged %d files, %zu weights into %s\n", a->ninputs,
		        qtk_stats_count(s), a->out);
	qtk_stats_free(s);
	return rc;
}

/* SIGINT/SIGTERM: nothing is written until the end, so stopping at once
 * is clean once a temporary output being written is removed. */
static void on_signal(int sig)
{
	qtk_fmt_remove_temps();
	signal(sig, SIG_DFL);
	raise(sig);
}

int cmd_calibrate(int argc, char **argv)
{
	struct sigaction sa, old_int, old_term;
	calib_args a;
	int rc = parse_args(argc, argv, &a);

	if (rc)
		return rc < 0 ? QTK_EXIT_OK : rc;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	rc = a.merge ? run_merge(&a) : run_model(&a);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	return rc;
}
