/* convert: what `qtk run` and `qtk eval` share — option values, the clock,
 * opening a model with a context. */
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
