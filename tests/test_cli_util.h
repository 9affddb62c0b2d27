/* tests (private): run the qtk binary with an exact argv (no shell, so
 * values like "" or " 64" reach it as they are), an optional environment
 * variable, output files, and a time limit. */
#ifndef QTK_TEST_CLI_UTIL_H
#define QTK_TEST_CLI_UTIL_H

/* $QTK_BIN, or build/qtk. */
const char *t_qtk_bin(void);

/* Outcome of t_run besides exit codes 0..255. */
enum { T_RUN_CRASH = -1000, T_RUN_TIMEOUT = -1001, T_RUN_ERROR = -1002 };

/* Run argv (argv[0] is the program; NULL-terminated) with env ("NAME=VALUE",
 * or NULL) added, stdout to out and stderr to err (NULL: /dev/null).
 * Returns the exit code, T_RUN_CRASH (killed by a signal other than the
 * time limit's: the signal number is in *sig when sig is not NULL),
 * T_RUN_TIMEOUT (still running after timeout_s seconds; it is killed) or
 * T_RUN_ERROR (fork failed). */
int t_run(const char *const *argv, const char *env, const char *out, const char *err,
          unsigned timeout_s, int *sig);

#endif
