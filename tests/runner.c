/* tests: the runner. Runs each registered test in a forked child with its
 * own temporary directory and a time limit; prints one line per test and
 * "N passed, N failed[, N skipped]" alone on the last line.
 * Usage: qtk_tests [-v] [-x] [NAME-SUBSTRING...]
 *   QTK_TEST_NOFORK=1 runs tests in-process (for gdb). */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#define MAX_TESTS 4096
#define EXIT_SKIP 77

static struct {
	const char *name, *file;
	t_fn fn;
} tests[MAX_TESTS];
static int ntests;
static int failures;
static char tmpdir[4096];

void t_register(const char *name, const char *file, t_fn fn)
{
	if (ntests == MAX_TESTS) {
		fprintf(stderr, "too many tests\n");
		exit(2);
	}
	tests[ntests].name = name;
	tests[ntests].file = file;
	tests[ntests].fn = fn;
	ntests++;
}

void t_fail_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	if (failures < 20) {
		fprintf(stdout, "    %s:%d: ", file, line);
		va_start(ap, fmt);
		vfprintf(stdout, fmt, ap);
		va_end(ap);
		fputc('\n', stdout);
		fflush(stdout);
	} else if (failures == 20) {
		printf("    (further failures not shown)\n");
	}
	failures++;
}

int t_failed(void)
{
	return failures;
}

void t_skip(const char *fmt, ...)
{
	va_list ap;

	printf("    skipped: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	exit(EXIT_SKIP);
}

static const char *ring(const char *a, const char *b)
{
	static char buf[8][8192];
	static int i;
	char *out = buf[i++ & 7];

	snprintf(out, 8192, "%.4000s%.4000s", a, b);
	return out;
}

const char *t_data(const char *rel)
{
	return ring("tests/data/", rel);
}

const char *t_shared(const char *rel)
{
	const char *root = getenv("QTK_SHARED");
	char base[4096];
	const char *p;
	struct stat sb;

	snprintf(base, sizeof base, "%s/", root && *root ? root : "../shared");
	p = ring(base, rel);
	return stat(p, &sb) == 0 ? p : NULL;
}

const char *t_tmpdir(void)
{
	return tmpdir;
}

const char *t_tmp(const char *rel)
{
	char base[4096];

	snprintf(base, sizeof base, "%.4000s/", tmpdir);
	return ring(base, rel);
}

int t_write_file(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	int ok;

	if (!f)
		return -1;
	ok = fwrite(data, 1, n, f) == n;
	return (fclose(f) == 0 && ok) ? 0 : -1;
}

void *t_read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long len;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 &&
	    fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)len + 1);
		if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
			free(buf);
			buf = NULL;
		}
		if (buf) {
			buf[len] = 0;
			if (n)
				*n = (size_t)len;
		}
	}
	fclose(f);
	return buf;
}

int t_exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0;
}

int t_dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

int t_system(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	fflush(stdout);
	rc = system(cmd);
	if (rc == -1 || !WIFEXITED(rc))
		return -1;
	return WEXITSTATUS(rc);
}

uint64_t t_rand_u64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

float t_rand_normal(uint64_t *s)
{
	/* Box-Muller on two uniforms in (0, 1] */
	double u1 = ((double)(t_rand_u64(s) >> 11) + 1.0) * 0x1p-53;
	double u2 = (double)(t_rand_u64(s) >> 11) * 0x1p-53;
	return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void rm_rf(const char *path)
{
	char cmd[4200];

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", path);
}

static int selected(const char *name, int argc, char **argv, int first)
{
	if (first >= argc)
		return 1;
	for (int i = first; i < argc; i++)
		if (strstr(name, argv[i]))
			return 1;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* 0 pass, 1 fail, 2 skip */
static int run_one(int i, int nofork)
{
	const char *base = getenv("TMPDIR");
	int status;
	pid_t pid;

	snprintf(tmpdir, sizeof tmpdir, "%s/qtk-test-XXXXXX",
	         base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		printf("    cannot make a temporary directory: %s\n", strerror(errno));
		return 1;
	}
	fflush(stdout);
	if (nofork) {
		failures = 0;
		tests[i].fn();
		rm_rf(tmpdir);
		return failures ? 1 : 0;
	}
	pid = fork();
	if (pid == 0) {
		const char *lim = getenv("QTK_TEST_TIMEOUT");
		alarm(lim ? (unsigned)atoi(lim) : 600);
		failures = 0;
		tests[i].fn();
		fflush(stdout);
		_exit(failures ? 1 : 0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0) {
		printf("    fork/wait failed: %s\n", strerror(errno));
		rm_rf(tmpdir);
		return 1;
	}
	rm_rf(tmpdir);
	if (WIFSIGNALED(status)) {
		printf("    killed by signal %d%s\n", WTERMSIG(status),
		       WTERMSIG(status) == SIGALRM ? " (time limit)" : "");
		return 1;
	}
	if (WEXITSTATUS(status) == EXIT_SKIP)
		return 2;
	return WEXITSTATUS(status) ? 1 : 0;
}

int main(int argc, char **argv)
{
	int first = 1, verbose = 0, stop = 0, nofork = getenv("QTK_TEST_NOFORK") != NULL;
	int passed = 0, failed = 0, skipped = 0;

	while (first < argc && argv[first][0] == '-') {
		if (!strcmp(argv[first], "-v"))
			verbose = 1;
		else if (!strcmp(argv[first], "-x"))
			stop = 1;
		else if (!strcmp(argv[first], "-l")) {
			for (int i = 0; i < ntests; i++)
				printf("%s\n", tests[i].name);
			return 0;
		} else {
			fprintf(stderr, "usage: %s [-v] [-x] [-l] [NAME-SUBSTRING...]\n", argv[0]);
			return 2;
		}
		first++;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0; i < ntests; i++) {
		double t0;
		int rc;

		if (!selected(tests[i].name, argc, argv, first))
			continue;
		if (verbose)
			printf("run  %s (%s)\n", tests[i].name, tests[i].file);
		t0 = now_s();
		rc = run_one(i, nofork);
		printf("%s %s (%.2fs)\n", rc == 0 ? "ok  " : rc == 2 ? "skip" : "FAIL",
		       tests[i].name, now_s() - t0);
		if (rc == 0)
			passed++;
		else if (rc == 2)
			skipped++;
		else
			failed++;
		if (rc == 1 && stop)
			break;
	}
	if (skipped)
		printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	else
		printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
