/* convert (private): the qtk command line. Each command is one cmd_*.c file
 * with an entry in the table in main.c. */
#ifndef QTK_CLI_H
#define QTK_CLI_H

#include <stdio.h>

#include "qtk_convert.h"

/* Exit codes (docs/cli.md). */
enum {
	QTK_EXIT_OK = 0,
	QTK_EXIT_FAIL = 1,   /* the operation failed (bad input, I/O, ...) */
	QTK_EXIT_USAGE = 2,  /* bad command line */
	QTK_EXIT_INTERRUPTED = 130,
};

typedef struct {
	const char *name;
	const char *summary;
	int (*run)(int argc, char **argv); /* argv[0] is the command name */
} qtk_cli_cmd;

int cmd_inspect(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_pack(int argc, char **argv);
int cmd_unpack(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_bench(int argc, char **argv);
/* `inspect` of a .qtk file (cli_inspect_pack.c) and of a GGUF file
 * (cli_inspect_gguf.c); cmd_inspect.c picks one by the file's magic. */
int cli_inspect_pack(const char *path, int json);
int cli_inspect_gguf(const char *path, int json);

/* Shared by `run` and `eval` (cli_model.c). */
#include "qtk_runtime.h"
/* "float" or "int8"; -1 if neither. */
int cli_parse_path(const char *s, qtk_rt_path *p);
/* A decimal integer in [lo, hi]; -1 if not. */
int cli_parse_num(const char *s, unsigned long long lo, unsigned long long hi,
                  unsigned long long *v);
/* Seconds on a monotonic clock. */
double cli_now(void);
/* Open a model and a context of n_ctx positions (0: the model's, at most
 * cap) on pool, or print the failure and return QTK_EXIT_FAIL. */
int cli_lm_open(const char *path, qtk_rt_pool *pool, qtk_rt_path p, uint32_t n_ctx,
                uint32_t cap, qtk_rt_lm **lm, qtk_rt_lm_ctx **ctx);

/* Print "qtk: MSG" to stderr for a failed status; returns QTK_EXIT_FAIL. */
int cli_report(const qtk_status *st);
/* Print "qtk CMD: MSG\nTry 'qtk CMD --help'." and return QTK_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
