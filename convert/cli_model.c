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
