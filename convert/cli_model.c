/* convert: what `qtk run`, `eval` and `calibrate` share — option values,
 * the clock, opening a model with a context, sampling. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

int cli_parse_path(const char *s, qtk_rt_path *p)
{
	if (!strcmp(s, "float"))
		*p = QTK_RT_FLOAT;
	else if (!strcmp(s, "int8"))
		*p = QTK_RT_INT8;
	else
		return -1;
	return 0;
}

double cli_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int cli_lm_open(const char *path, qtk_rt_pool *pool, qtk_rt_path p, uint32_t n_ctx,
                uint32_t cap, qtk_rt_lm **lm, qtk_rt_lm_ctx **ctx)
{
	qtk_rt_lm_opts o = { .n_ctx = n_ctx, .path = p, .pool = pool };
	qtk_status st;

	*ctx = NULL;
	if (qtk_rt_lm_open(path, lm, &st) != QTK_OK)
		return cli_report(&st);
	if (!n_ctx)
		o.n_ctx = qtk_rt_lm_describe(*lm)->n_ctx < cap ? qtk_rt_lm_describe(*lm)->n_ctx : cap;
	if (qtk_rt_lm_ctx_new(*lm, &o, ctx, &st) != QTK_OK) {
		qtk_rt_lm_close(*lm);
		*lm = NULL;
		return cli_report(&st);
	}
	return QTK_EXIT_OK;
}

int cli_tokenize_file(const char *path, const qtk_tok *tok, uint64_t skip, uint64_t max,
                      int32_t **ids, size_t *n)
{
	char *text;
	size_t len, cap;
	qtk_status st;
	unsigned flags = qtk_tok_wants_bos(tok) ? QTK_TOK_ADD_BOS : 0;

	*ids = NULL;
	*n = 0;
	if (qtk_fmt_read_input(path, &text, &len, &st) != QTK_OK)
		return cli_report(&st);
	cap = qtk_tok_max_tokens(len);
	if (!(*ids = qtk_malloc(cap * sizeof **ids))) {
		qtk_free(text);
		fprintf(stderr, "qtk: %s: out of memory for %zu tokens\n", path, cap);
		return QTK_EXIT_FAIL;
	}
	if (qtk_tok_encode(tok, text, len, flags, *ids, cap, n, &st) != QTK_OK) {
		qtk_free(text);
		qtk_free(*ids);
		*ids = NULL;
		qtk_status_prefix(&st, path);
		return cli_report(&st);
	}
	qtk_free(text);
	if (skip && skip >= *n) {
		fprintf(stderr, "qtk: %s: %zu tokens, none left after --skip %llu\n", path, *n,
		        (unsigned long long)skip);
		qtk_free(*ids);
		*ids = NULL;
		return QTK_EXIT_FAIL;
	}
	memmove(*ids, *ids + skip, (*n - (size_t)skip) * sizeof **ids);
	*n -= (size_t)skip;
	if (max && *n > max)
		*n = (size_t)max;
	return QTK_EXIT_OK;
}

uint64_t cli_rng_next(uint64_t *s) /* splitmix64 */
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

int32_t cli_sample(const float *l, size_t V, double temp, uint64_t *rng)
{
	size_t im = 0;
	double sum = 0, r, acc = 0;

	for (size_t i = 1; i < V; i++)
		if (l[i] > l[im])
			im = i;
	if (temp == 0)
		return (int32_t)im;
	for (size_t i = 0; i < V; i++)
		sum += exp(((double)l[i] - (double)l[im]) / temp);
	r = (double)(cli_rng_next(rng) >> 11) * 0x1p-53 * sum;
	for (size_t i = 0; i < V; i++) {
		acc += exp(((double)l[i] - (double)l[im]) / temp);
		if (r < acc)
			return (int32_t)i;
	}
	return (int32_t)im;
}
