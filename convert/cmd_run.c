/* convert: `qtk run MODEL -p PROMPT` — generate text with a LLaMA-family
 * model: the prompt in one batched step, then one token per step, greedy
 * or sampled at a temperature; prompt and generation tokens/s on stderr. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static void run_usage(FILE *f)
{
	fprintf(f,
"Usage: qtk run MODEL [-p PROMPT] [OPTIONS]\n\n"
"Generate text with a LLaMA-family model: a .qtk file, a GGUF file or a\n"
"safetensors checkpoint (file, index or directory, with config.json). The\n"
"prompt (BOS first when the vocabulary asks for it) runs in one batched\n"
"step, then each new token in one step; the text goes to stdout, the\n"
"prompt and generation speeds to stderr.\n\n"
"  -p, --prompt TEXT      the prompt (default: empty, BOS only)\n"
"  -n, --tokens N         tokens to generate (default 256; stops early at EOS\n"
"                         or when the context is full)\n"
"      --temp T           sampling temperature (default 0: greedy)\n"
"      --seed S           random seed for --temp > 0 (default: from the clock)\n"
"  -c, --ctx N            context length (default: the model's)\n"
"  -j, --threads N        threads (default: all cores)\n"
"      --path P           activation path of quantized weights: int8 (default)\n"
"                         or float\n"
"      --tokenizer PATH   tokenizer.model, tokenizer.json, tokenizer.bin or a\n"
"                         GGUF (default: found beside the model, see docs)\n"
"  -h, --help             show this help\n\n"
"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

enum { OPT_TEMP = 256, OPT_SEED, OPT_PATH, OPT_TOK };

static const struct option long_opts[] = {
	{ "prompt", required_argument, NULL, 'p' },
	{ "tokens", required_argument, NULL, 'n' },
	{ "temp", required_argument, NULL, OPT_TEMP },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "ctx", required_argument, NULL, 'c' },
	{ "threads", required_argument, NULL, 'j' },
	{ "path", required_argument, NULL, OPT_PATH },
	{ "tokenizer", required_argument, NULL, OPT_TOK },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

typedef struct {
	const char *model, *prompt, *tokenizer;
	uint64_t n, ctx, threads, seed;
	int seed_given;
	double temp;
	qtk_rt_path path;
} run_args;

static int parse_args(int argc, char **argv, run_args *a)
{
	int ch, rc;
	char *end;

	memset(a, 0, sizeof *a);
	a->prompt = "";
	a->n = 256;
	a->path = QTK_RT_INT8;
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":p:n:c:j:h", long_opts, NULL)) != -1) {
		switch (ch) {
		case 'p': a->prompt = optarg; break;
		case 'n':
			if ((rc = cli_uint("run", "--tokens", optarg, 0, 1u << 30, &a->n)))
				return rc;
			break;
		case OPT_TEMP:
			a->temp = strtod(optarg, &end);
			if (!*optarg || *end || !(a->temp >= 0) || !isfinite(a->temp))
				return cli_usage_error("run", "bad temperature '%s'", optarg);
			break;
		case OPT_SEED:
			if ((rc = cli_uint("run", "--seed", optarg, 0, UINT64_MAX, &a->seed)))
				return rc;
			a->seed_given = 1;
			break;
		case 'c':
			if ((rc = cli_uint("run", "--ctx", optarg, 1, UINT32_MAX, &a->ctx)))
				return rc;
			break;
		case 'j':
			if ((rc = cli_uint("run", "--threads", optarg, 1, 1024, &a->threads)))
				return rc;
			break;
		case OPT_PATH:
			if (cli_parse_path(optarg, &a->path))
				return cli_usage_error("run", "unknown path '%s' (float, int8)", optarg);
			break;
		case OPT_TOK: a->tokenizer = optarg; break;
		case 'h':
			run_usage(stdout);
			return -1;
		case ':':
			return cli_usage_error("run", "option '%s' needs a value", argv[optind - 1]);
		default:
			return cli_usage_error("run", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return cli_usage_error("run", "missing MODEL");
	if (optind + 1 < argc)
		return cli_usage_error("run", "one model at a time");
	a->model = argv[optind];
	return 0;
}

/* ---- generation ----------------------------------------------------------- */

static void put_token(const qtk_tok *tok, int32_t prev, int32_t id)
{
	size_t len;
	const char *s = qtk_tok_text(tok, prev, id, &len);

	if (s && len)
		fwrite(s, 1, len, stdout);
}

typedef struct {
	size_t n_prompt, n_gen;
	double t_prompt, t_gen;
} run_stats;

static int generate(const run_args *a, qtk_rt_lm_ctx *c, const qtk_tok *tok,
                    const int32_t *ids, size_t n, run_stats *rs)
{
	size_t V = qtk_rt_lm_describe(qtk_rt_lm_ctx_model(c))->n_vocab, pos = n;
	float *logits = malloc(V * sizeof *logits);
	uint64_t rng = a->seed;
	int32_t prev = -1, next;
	qtk_status st;
	double t0;

	if (!logits) {
		fprintf(stderr, "qtk: out of memory\n");
		return QTK_EXIT_FAIL;
	}
	for (size_t i = 0; i < n; i++) {
		put_token(tok, prev, ids[i]);
		prev = ids[i];
	}
	fflush(stdout);
	t0 = cli_now();
	if (qtk_rt_lm_forward(c, ids, n, 0, logits, 1, &st) != QTK_OK) {
		free(logits);
		return cli_report(&st);
	}
	rs->t_prompt = cli_now() - t0;
	t0 = cli_now();
	while (rs->n_gen < a->n && pos < qtk_rt_lm_ctx_size(c)) {
		next = cli_sample(logits, V, a->temp, &rng);
		if (next == qtk_tok_eos(tok))
			break;
		put_token(tok, prev, next);
		fflush(stdout);
		prev = next;
		if (qtk_rt_lm_forward(c, &next, 1, pos++, logits, 1, &st) != QTK_OK) {
			free(logits);
			return cli_report(&st);
		}
		rs->n_gen++;
	}
	rs->t_gen = cli_now() - t0;
	printf("\n");
	fflush(stdout); /* the text ends before the speeds on stderr */
	free(logits);
	return QTK_EXIT_OK;
}

static int run_model(const run_args *a, qtk_rt_lm_ctx *c, const qtk_tok *tok)
{
	size_t len = strlen(a->prompt), cap = qtk_tok_max_tokens(len), n;
	int32_t *ids = malloc(cap * sizeof *ids);
	unsigned flags = qtk_tok_wants_bos(tok) ? QTK_TOK_ADD_BOS : 0;
	run_stats rs = { 0 };
	qtk_status st;
	int rc;

	if (!ids) {
		fprintf(stderr, "qtk: out of memory\n");
		return QTK_EXIT_FAIL;
	}
	if (qtk_tok_encode(tok, a->prompt, len, flags, ids, cap, &n, &st) != QTK_OK) {
		free(ids);
		return cli_report(&st);
	}
	if (n == 0 || n >= qtk_rt_lm_ctx_size(c)) {
		free(ids);
		fprintf(stderr, "qtk: the prompt has %zu tokens; the context holds %u\n", n,
		        qtk_rt_lm_ctx_size(c));
		return QTK_EXIT_FAIL;
	}
	rs.n_prompt = n;
	rc = generate(a, c, tok, ids, n, &rs);
	free(ids);
	if (rc == QTK_EXIT_OK)
		fprintf(stderr, "prompt: %zu tokens in %.3f s (%.1f tokens/s); generation: %zu tokens "
		        "in %.3f s (%.1f tokens/s)\n", rs.n_prompt, rs.t_prompt,
		        rs.t_prompt > 0 ? (double)rs.n_prompt / rs.t_prompt : 0.0, rs.n_gen, rs.t_gen,
		        rs.t_gen > 0 ? (double)rs.n_gen / rs.t_gen : 0.0);
	return rc;
}

int cmd_run(int argc, char **argv)
{
	run_args a;
	qtk_rt_pool *pool = NULL;
	qtk_rt_lm *lm = NULL;
	qtk_rt_lm_ctx *c = NULL;
	qtk_tok *tok = NULL;
	qtk_status st;
	int rc = parse_args(argc, argv, &a);

	if (rc)
		return rc < 0 ? QTK_EXIT_OK : rc;
	if (!a.seed_given)
		a.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	if (qtk_rt_pool_create((unsigned)a.threads, &pool, &st) != QTK_OK)
		return cli_report(&st);
	rc = cli_lm_open(a.model, pool, a.path, (uint32_t)a.ctx, UINT32_MAX, &lm, &c);
	if (rc == QTK_EXIT_OK && qtk_rt_lm_tokenizer(lm, a.tokenizer, &tok, &st) != QTK_OK)
		rc = cli_report(&st);
	if (rc == QTK_EXIT_OK) {
		fprintf(stderr, "%s: %s, %u layers, %llu parameters, %s path, %u threads%s",
		        a.model, qtk_rt_lm_scheme(lm), qtk_rt_lm_describe(lm)->n_layer,
		        (unsigned long long)qtk_rt_lm_params(lm, NULL),
		        a.path == QTK_RT_INT8 ? "int8" : "float", qtk_rt_pool_threads(pool),
		        a.temp > 0 ? "" : ", greedy\n");
		if (a.temp > 0)
			fprintf(stderr, ", temperature %g, seed %llu\n", a.temp, (unsigned long long)a.seed);
		rc = run_model(&a, c, tok);
	}
	qtk_tok_close(tok);
	qtk_rt_lm_ctx_free(c);
	qtk_rt_lm_close(lm);
	qtk_rt_pool_free(pool);
	return rc;
}
