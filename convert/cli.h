/* convert (private): the qtk command line. Each command is one cmd_*.c file
 * with an entry in the table in main.c. */
#ifndef QTK_CLI_H
#define QTK_CLI_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "qtk_convert.h"
#include "qtk_runtime.h" /* bench (and the commands that run models) */

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
int cmd_calibrate(int argc, char **argv);
/* The progress bar of convert and export (cli_progress.c). */
typedef struct {
	int tty, verbose;
	double t0, last;
	size_t last_done;
} cli_progress;

/* 1 when there is something to show: a bar (bar set and stderr a
 * terminal) or, with verbose, a line per tensor. */
int cli_progress_init(cli_progress *p, int bar, int verbose);
/* qtk_conv_opts.progress / qtk_export_opts.progress; ctx: a cli_progress. */
void cli_on_progress(void *ctx, size_t done, size_t total, uint64_t bytes,
                     uint64_t bytes_total, const char *tensor);
/* "1.5 MB" */
void cli_human_bytes(double b, char *buf, size_t n);

/* `inspect` of a .qtk file (cli_inspect_pack.c) and of a GGUF file
 * (cli_inspect_gguf.c); cmd_inspect.c picks one by the file's magic. */
int cli_inspect_pack(const char *path, int json);
int cli_inspect_gguf(const char *path, int json);
/* `verify FILE --against SOURCE` (cli_verify_against.c); cmd_verify.c
 * hands over when --against is among its arguments. */
int cli_verify_against(int argc, char **argv);
void cli_verify_against_usage(FILE *f);

/* `inspect --json` output bounds (docs/cli.md): arrays show their first
 * CJ_MAX_ELEMS elements, string values their first CJ_MAX_STR bytes and
 * string elements of arrays their first CJ_MAX_ELEM_STR bytes, so one KV
 * prints at most about 64 KiB (x6 if every byte is a control character). */
#define CJ_MAX_ELEMS 64
#define CJ_MAX_STR 65536
#define CJ_MAX_ELEM_STR 1024

/* A streaming JSON writer (cli_json.c): each call writes one value (with
 * its key inside an object) straight to the stream, so memory does not
 * grow with the output. Strings come out as valid UTF-8: each byte that is
 * not part of a valid UTF-8 sequence becomes U+FFFD. */
#define CJ_MAX_DEPTH 16
typedef struct {
	FILE *out;
	int depth;
	char first[CJ_MAX_DEPTH]; /* no value written yet at this depth */
} cj_writer;

void cj_init(cj_writer *j, FILE *out);
void cj_obj(cj_writer *j, const char *key);    /* key NULL: not in an object */
void cj_arr(cj_writer *j, const char *key);
void cj_end_obj(cj_writer *j);
void cj_end_arr(cj_writer *j);
void cj_str(cj_writer *j, const char *key, const char *s); /* NULL: null */
void cj_strn(cj_writer *j, const char *key, const char *s, size_t n);
void cj_int(cj_writer *j, const char *key, int64_t v);
void cj_uint(cj_writer *j, const char *key, uint64_t v);
/* digits: 9 for f32, 17 for f64; NaN and Inf as null */
void cj_real(cj_writer *j, const char *key, double v, int digits);
void cj_bool(cj_writer *j, const char *key, int v);
void cj_null(cj_writer *j, const char *key);
/* Write the key; the caller then writes one JSON value itself. */
void cj_raw_begin(cj_writer *j, const char *key);
/* The final newline and flush; QTK_EXIT_FAIL (with a message) if the
 * output could not be written. */
int cj_finish(cj_writer *j);
/* n, or the largest length <= max that does not split a UTF-8 sequence. */
size_t cj_utf8_cut(const char *s, size_t n, size_t max);

/* Names and strings read from a file (or a path) as text output shows
 * them: control bytes, backslashes, C1 controls and bytes that are not
 * valid UTF-8 written as \xNN / \\, so a hostile file cannot send terminal
 * escape sequences; at most CLI_TEXT_MAX bytes, then "...". Points into a
 * ring of 8 static buffers (for several in one printf). */
#define CLI_TEXT_MAX 1024
const char *cli_text(const char *s, size_t n);
#define CLI_TXT(s) cli_text((s), (s) ? strlen(s) : 0)

/* Shared by `run` and `eval` (cli_model.c). */
#include "qtk_runtime.h"
/* "float" or "int8"; -1 if neither. */
int cli_parse_path(const char *s, qtk_rt_path *p);
/* Seconds on a monotonic clock. */
double cli_now(void);
/* Open a model and a context of n_ctx positions (0: the model's, at most
 * cap) on pool, or print the failure and return QTK_EXIT_FAIL. */
int cli_lm_open(const char *path, qtk_rt_pool *pool, qtk_rt_path p, uint32_t n_ctx,
                uint32_t cap, qtk_rt_lm **lm, qtk_rt_lm_ctx **ctx);
/* The tokens of text file path (BOS first if the vocabulary wants it),
 * the first skip left out (an error if none remain), at most max of the
 * rest (0: all): *ids (qtk_free it; NULL on failure), *n. Prints a failure
 * and returns QTK_EXIT_FAIL. Shared by eval and calibrate. */
int cli_tokenize_file(const char *path, const qtk_tok *tok, uint64_t skip, uint64_t max,
                      int32_t **ids, size_t *n);
/* The next number of a splitmix64 stream. */
uint64_t cli_rng_next(uint64_t *s);
/* Greedy (the first largest logit) at temp 0, else a draw from
 * softmax(logits / temp) with rng. Shared by run and calibrate. */
int32_t cli_sample(const float *logits, size_t V, double temp, uint64_t *rng);

/* A decimal number (digits, '.', an exponent; no sign, space, hex, inf or
 * nan, which strtod would take), finite and not negative, nothing after
 * it: 0, or -1 with *out untouched. */
int cli_decimal(const char *s, double *out);
/* Print "qtk: MSG" to stderr for a failed status; returns QTK_EXIT_FAIL. */
int cli_report(const qtk_status *st);
/* The value of option opt as a number in [lo, hi] (qtk_parse_u64: digits
 * only, no sign or junk): 0, or QTK_EXIT_USAGE after printing a usage
 * error that names the option and the value. */
int cli_uint(const char *cmd, const char *opt, const char *s, uint64_t lo, uint64_t hi,
             uint64_t *out);
/* Print "qtk CMD: MSG\nTry 'qtk CMD --help'." and return QTK_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
