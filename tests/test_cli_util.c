/* tests (private): see test_cli_util.h. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_cli_util.h"

const char *t_qtk_bin(void)
{
	const char *b = getenv("QTK_BIN");
	return b && *b ? b : "build/qtk";
}

static void redirect(const char *path, int fd)
{
	int f = open(path ? path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (f >= 0) {
		dup2(f, fd);
		close(f);
	}
}

int t_run(const char *const *argv, const char *env, const char *out, const char *err,
          unsigned timeout_s, int *sig)
{
	struct timespec t0, now, nap = { 0, 1000000 };
	int status;
	pid_t pid, w;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return T_RUN_ERROR;
	if (pid == 0) {
		redirect(out, 1);
		redirect(err, 2);
		if (env)
			putenv((char *)(uintptr_t)env);
		execv(argv[0], (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* poll with a short sleep: no SIGCHLD/alarm games in the caller's process */
	for (;;) {
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			return T_RUN_ERROR;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - t0.tv_sec >= (time_t)timeout_s) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return T_RUN_TIMEOUT;
		}
		nanosleep(&nap, NULL);
		if (nap.tv_nsec < 20000000)
			nap.tv_nsec *= 2;
	}
	if (WIFSIGNALED(status)) {
		if (sig)
			*sig = WTERMSIG(status);
		return T_RUN_CRASH;
	}
	return WEXITSTATUS(status);
}
