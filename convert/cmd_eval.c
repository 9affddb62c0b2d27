/* convert: `qtk eval MODEL --text FILE` — perplexity over a text in
 * windows, and with --against REF the KL divergence, top-1 agreement and
 * logit error against a reference model, as llama-perplexity prints them. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void eval_usage(FILE *f)
{
	fprintf(f,
"Usage: qtk eval MODEL --text FILE [OPTIONS]\n\n"
"Perplexity of a LLaMA-family model (.qtk, GGUF or safetensors) over a text.\n"
"The text is tokenized once (BOS first when the vocabulary asks for it) and\n"
"cut into consecutive windows of --ctx tokens, each run as a new sequence\n"
"with BOS in its first position.\n\n"
"  -t, --text FILE        the text (required)\n"
"  -c, --ctx N            window length (default: 512, or the model's context\n"
"                         if shorter)\n"
"      --tokens N         use only the first N tokens of the text\n"
"      --score all|half   all (default): every position after the first of\n"
"                         each window, the last shorter window too; half:\n"
"                         llama-perplexity's rule, whole windows only, the\n"
"                         second half of each scored\n"
"      --against REF      a reference model of the same vocabulary (e.g. the\n"
"                         float source): KL divergence of MODEL's next-token\n"
"                         distribution from REF's (mean, median, p99, max),\n"
"                         top-1 agreement, RMS change of the next token's\n"
"                         probability, logit RMS error\n"
"      --json             print the results as one JSON object on stdout\n"
"  -j, --threads N        threads (default: all cores)\n"
"      --path P           activation path of MODEL's quantized weights: int8\n"
"                         (default) or float\n"
"      --ref-path P       the same for REF (default: float)\n"
"      --tokenizer PATH   tokenizer file (default: found beside MODEL)\n"
"  -q, --quiet            no progress on stderr\n"
"  -h, --help             show this help\n\n"
"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

enum { OPT_TOKENS = 256, OPT_SCORE, OPT_AGAINST, OPT_JSON, OPT_PATH, OPT_REF_PATH, OPT_TOK };

static const struct option long_opts[] = {
	{ "text", required_argument, NULL, 't' },
	{ "ctx", required_argument, NULL, 'c' },
	{ "tokens", required_argument, NULL, OPT_TOKENS },
	{ "score", required_argument, NULL, OPT_SCORE },
	{ "against", required_argument, NULL, OPT_AGAINST },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "threads", required_argument, NULL, 'j' },
	{ "path", required_argument, NULL, OPT_PATH },
	{ "ref-path", required_argument, NULL, OPT_REF_PATH },
	{ "tokenizer", required_argument, NULL, OPT_TOK },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

typedef struct {
	const char *model, *text, *against, *tokenizer;
	uint64_t ctx, tokens, threads;
	int half, json, quiet;
	qtk_rt_path path, ref_path;
} eval_args;

static int parse_args(int argc, char **argv, eval_args *a)
{
	int ch, rc;

	memset(a, 0, sizeof *a);
	a->path = QTK_RT_INT8;
	a->ref_path = QTK_RT_FLOAT;
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":t:c:j:qh", long_opts, NULL)) != -1) {
		switch (ch) {
		case 't': a->text = optarg; break;
		case 'c':
			if ((rc = cli_uint("eval", "--ctx", optarg, 2, UINT32_MAX, &a->ctx)))
				return rc;
			break;
		case OPT_TOKENS:
			if ((rc = cli_uint("eval", "--tokens", optarg, 2, SIZE_MAX / 4, &a->tokens)))
				return rc;
			break;
		case OPT_SCORE:
			if (!strcmp(optarg, "all"))
				a->half = 0;
			else if (!strcmp(optarg, "half"))
				a->half = 1;
			else
				return cli_usage_error("eval", "unknown --score '%s' (all, half)", optarg);
			break;
		case OPT_AGAINST: a->against = optarg; break;
		case OPT_JSON: a->json = 1; break;
		case 'j':
			if ((rc = cli_uint("eval", "--threads", optarg, 1, 1024, &a->threads)))
				return rc;
			break;
		case OPT_PATH:
		case OPT_REF_PATH:
			if (cli_parse_path(optarg, ch == OPT_PATH ? &a->path : &a->ref_path))
				return cli_usage_error("eval", "unknown path '%s' (float, int8)", optarg);
			break;
		case OPT_TOK: a->tokenizer = optarg; break;
		case 'q': a->quiet = 1; break;
		case 'h':
			eval_usage(stdout);
			return -1;
		case ':':
			return cli_usage_error("eval", "option '%s' needs a value", argv[optind - 1]);
		default:
			return cli_usage_error("eval", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return cli_usage_error("eval", "missing MODEL");
	if (optind + 1 < argc)
		return cli_usage_error("eval", "one model at a time (the reference goes with --against)");
	if (!a->text)
		return cli_usage_error("eval", "missing --text FILE");
	a->model = argv[optind];
	return 0;
}

static void on_window(void *user, size_t w, size_t nw)
{
	const double *t0 = user;

	fprintf(stderr, "\r[%zu/%zu windows] %.1f s", w, nw, cli_now() - *t0);
	if (w == nw)
		fprintf(stderr, "\n");
}

static void print_text(const eval_args *a, const qtk_rt_eval_result *r, size_t n,
                       uint32_t ctx, double secs)
{
	printf("%s: %zu tokens of %s, %llu windows of %u, %llu positions scored (%s)\n",
	       a->model, n, a->text, (unsigned long long)r->windows, ctx,
	       (unsigned long long)r->scored,
	       a->half ? "second half of each window" : "every position after the first");
	printf("perplexity: %.4f ± %.5f\n", r->ppl, r->ppl_err);
	if (a->against) {
		printf("against %s: perplexity %.4f ± %.5f\n", a->against, r->ref_ppl, r->ref_ppl_err);
		printf("  ln(PPL/PPL_ref): %.6f ± %.6f\n", r->ln_ratio, r->ln_ratio_err);
		printf("  KL divergence:   mean %.6f ± %.6f, median %.6f, p99 %.6f, max %.6f\n",
		       r->kld_mean, r->kld_err, r->kld_median, r->kld_p99, r->kld_max);
		printf("  same top token:  %.3f ± %.3f %%\n", 100 * r->top1, 100 * r->top1_err);
		printf("  RMS Δp:          %.3f ± %.3f %%\n", 100 * r->dp_rms, 100 * r->dp_rms_err);
		printf("  logit RMS error: %.6f\n", r->logit_rms);
	}
	printf("%.1f s, %.0f tokens/s\n", secs,
	       secs > 0 ? (double)r->windows * ctx / secs * (a->against ? 2 : 1) : 0.0);
}

static void print_json(const eval_args *a, const qtk_rt_eval_result *r, size_t n,
                       uint32_t ctx, double secs)
{
	json_t *o = json_object();
	char *s;

	json_object_set_new(o, "model", json_string(a->model));
	json_object_set_new(o, "text", json_string(a->text));
	json_object_set_new(o, "tokens", json_integer((json_int_t)n));
	json_object_set_new(o, "ctx", json_integer(ctx));
	json_object_set_new(o, "score", json_string(a->half ? "half" : "all"));
	json_object_set_new(o, "windows", json_integer((json_int_t)r->windows));
	json_object_set_new(o, "scored", json_integer((json_int_t)r->scored));
	json_object_set_new(o, "perplexity", json_real(r->ppl));
	json_object_set_new(o, "perplexity_err", json_real(r->ppl_err));
	if (a->against) {
		json_object_set_new(o, "against", json_string(a->against));
		json_object_set_new(o, "ref_perplexity", json_real(r->ref_ppl));
		json_object_set_new(o, "ln_ppl_ratio", json_real(r->ln_ratio));
		json_object_set_new(o, "kld_mean", json_real(r->kld_mean));
		json_object_set_new(o, "kld_err", json_real(r->kld_err));
		json_object_set_new(o, "kld_median", json_real(r->kld_median));
		json_object_set_new(o, "kld_p99", json_real(r->kld_p99));
		json_object_set_new(o, "kld_max", json_real(r->kld_max));
		json_object_set_new(o, "top1", json_real(r->top1));
		json_object_set_new(o, "top1_err", json_real(r->top1_err));
		json_object_set_new(o, "dp_rms", json_real(r->dp_rms));
		json_object_set_new(o, "logit_rms", json_real(r->logit_rms));
	}
	json_object_set_new(o, "seconds", json_real(secs));
	s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
	if (s)
		printf("%s\n", s);
	free(s);
	json_decref(o);
}

static int evaluate(const eval_args *a, qtk_rt_lm_ctx *m, qtk_rt_lm_ctx *ref,
                    const qtk_tok *tok)
{
	qtk_rt_eval_opts o = { .half = a->half, .bos = qtk_tok_wants_bos(tok) ? qtk_tok_bos(tok) : -1 };
	qtk_rt_eval_result r;
	qtk_status st;
	int32_t *ids;
	size_t n;
	double t0;
	int rc;

	o.ctx = qtk_rt_lm_ctx_size(m);
	if ((rc = cli_tokenize_file(a->text, tok, 0, a->tokens, &ids, &n)) != QTK_EXIT_OK)
		return rc;
	t0 = cli_now();
	if (!a->quiet && isatty(2)) {
		o.progress = on_window;
		o.user = &t0;
	}
	if (qtk_rt_eval(m, ref, ids, n, &o, &r, &st) != QTK_OK) {
		qtk_free(ids);
		return cli_report(&st);
	}
	qtk_free(ids);
	if (a->json)
		print_json(a, &r, n, o.ctx, cli_now() - t0);
	else
		print_text(a, &r, n, o.ctx, cli_now() - t0);
	return QTK_EXIT_OK;
}

int cmd_eval(int argc, char **argv)
{
	eval_args a;
	qtk_rt_pool *pool = NULL;
	qtk_rt_lm *lm = NULL, *rlm = NULL;
	qtk_rt_lm_ctx *c = NULL, *rc_ = NULL;
	qtk_tok *tok = NULL;
	qtk_status st;
	uint32_t n_ctx;
	int rc = parse_args(argc, argv, &a);

	if (rc)
		return rc < 0 ? QTK_EXIT_OK : rc;
	if (qtk_rt_pool_create((unsigned)a.threads, &pool, &st) != QTK_OK)
		return cli_report(&st);
	/* the context holds one window: --ctx, else at most 512 */
	n_ctx = (uint32_t)a.ctx;
	rc = cli_lm_open(a.model, pool, a.path, n_ctx, 512, &lm, &c);
	if (rc == QTK_EXIT_OK && a.against)
		rc = cli_lm_open(a.against, pool, a.ref_path, qtk_rt_lm_ctx_size(c), 0, &rlm, &rc_);
	if (rc == QTK_EXIT_OK && qtk_rt_lm_tokenizer(lm, a.tokenizer, &tok, &st) != QTK_OK)
		rc = cli_report(&st);
	if (rc == QTK_EXIT_OK)
		rc = evaluate(&a, c, rc_, tok);
	qtk_tok_close(tok);
	qtk_rt_lm_ctx_free(rc_);
	qtk_rt_lm_ctx_free(c);
	qtk_rt_lm_close(rlm);
	qtk_rt_lm_close(lm);
	qtk_rt_pool_free(pool);
	return rc;
}
