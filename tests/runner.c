/* tests: the runner. Runs each registered test in a forked child with its
 * own temporary directory and a time limit; prints one line per test and
 * "N passed, N failed[, N skipped]" alone on the last line.
 * Usage: qtk_tests [-v] [-x] [-jN] [NAME-SUBSTRING...]
 *   -jN runs N tests side by side (each test's lines are printed together
 *   when it ends, so the order of lines follows the order of completion).
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

int t_same_file(const char *a, const char *b)
{
	size_t na = 0, nb = 0;
	char *x = t_read_file(a, &na), *y = t_read_file(b, &nb);
	int same = x && y && na == nb && !memcmp(x, y, na);

	free(x);
	free(y);
	return same;
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

/* One test in a forked child whose stdout and stderr go to a file, so tests
 * that run side by side do not mix their lines; the parent prints the file
 * when the test ends. */
struct job {
	pid_t pid;
	int idx;
	double t0;
	char dir[4096], out[4200];
};

static int start_one(int i, struct job *j)
{
	const char *base = getenv("TMPDIR");
	int fd;

	j->idx = i;
	j->t0 = now_s();
	j->pid = -1;
	snprintf(j->dir, sizeof j->dir, "%.4000s/qtk-test-XXXXXX",
	         base && *base ? base : "/tmp");
	snprintf(j->out, sizeof j->out, "%.4000s/qtk-test-out-XXXXXX",
	         base && *base ? base : "/tmp");
	if (!mkdtemp(j->dir))
		return -1;
	fd = mkstemp(j->out);
	if (fd < 0) {
		rm_rf(j->dir);
		return -1;
	}
	snprintf(tmpdir, sizeof tmpdir, "%s", j->dir);
	fflush(stdout);
	fflush(stderr);
	j->pid = fork();
	if (j->pid == 0) {
		const char *lim = getenv("QTK_TEST_TIMEOUT");
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
		alarm(lim ? (unsigned)atoi(lim) : 600);
		failures = 0;
		tests[i].fn();
		fflush(stdout);
		_exit(failures ? 1 : 0);
	}
	close(fd);
	if (j->pid < 0) {
		rm_rf(j->dir);
		unlink(j->out);
		return -1;
	}
	return 0;
}

/* 0 pass, 1 fail, 2 skip; copies the test's output to stdout. */
static int finish_one(struct job *j, int status)
{
	FILE *f = fopen(j->out, "rb");
	char buf[4096];
	size_t n;
	int rc;

	if (f) {
		while ((n = fread(buf, 1, sizeof buf, f)) > 0)
			fwrite(buf, 1, n, stdout);
		fclose(f);
	}
	unlink(j->out);
	rm_rf(j->dir);
	if (WIFSIGNALED(status)) {
		printf("    killed by signal %d%s\n", WTERMSIG(status),
		       WTERMSIG(status) == SIGALRM ? " (time limit)" : "");
		rc = 1;
	} else if (WEXITSTATUS(status) == EXIT_SKIP) {
		rc = 2;
	} else {
		rc = WEXITSTATUS(status) ? 1 : 0;
	}
	return rc;
}

static int run_inprocess(int i)
{
	const char *base = getenv("TMPDIR");

	snprintf(tmpdir, sizeof tmpdir, "%s/qtk-test-XXXXXX",
	         base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		printf("    cannot make a temporary directory: %s\n", strerror(errno));
		return 1;
	}
	failures = 0;
	tests[i].fn();
	rm_rf(tmpdir);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	int first = 1, verbose = 0, stop = 0, nofork = getenv("QTK_TEST_NOFORK") != NULL;
	int jobs = 1;
	int passed = 0, failed = 0, skipped = 0;

	while (first < argc && argv[first][0] == '-') {
		if (!strcmp(argv[first], "-v"))
			verbose = 1;
		else if (!strcmp(argv[first], "-x"))
			stop = 1;
		else if (!strncmp(argv[first], "-j", 2) && argv[first][2]) {
			jobs = atoi(argv[first] + 2);
			if (jobs < 1 || jobs > 64) {
				fprintf(stderr, "%s: -jN wants 1 to 64\n", argv[0]);
				return 2;
			}
		}
		else if (!strcmp(argv[first], "-l")) {
			for (int i = 0; i < ntests; i++)
				printf("%s\n", tests[i].name);
			return 0;
		} else {
			fprintf(stderr, "usage: %s [-v] [-x] [-jN] [-l] [NAME-SUBSTRING...]\n", argv[0]);
			return 2;
		}
		first++;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	{
		struct job *run = calloc((size_t)jobs, sizeof *run);
		int next = 0, active = 0;

		if (!run) {
			fprintf(stderr, "out of memory\n");
			return 2;
		}
		for (;;) {
			int rc, status, k;
			pid_t pid;

			/* start tests while there are free slots */
			while (!nofork && active < jobs && !(stop && failed)) {
				while (next < ntests && !selected(tests[next].name, argc, argv, first))
					next++;
				if (next >= ntests)
					break;
				for (k = 0; run[k].pid > 0; k++)
					;
				if (verbose)
					printf("run  %s (%s)\n", tests[next].name, tests[next].file);
				if (start_one(next, &run[k]) < 0) {
					printf("FAIL %s (cannot start: %s)\n", tests[next].name,
					       strerror(errno));
					failed++;
				} else {
					active++;
				}
				next++;
			}
			if (nofork) {
				while (next < ntests && !selected(tests[next].name, argc, argv, first))
					next++;
				if (next >= ntests || (stop && failed))
					break;
				{
					double t0 = now_s();
					rc = run_inprocess(next);
					printf("%s %s (%.2fs)\n", rc == 0 ? "ok  " : "FAIL",
					       tests[next].name, now_s() - t0);
				}
				if (rc == 0)
					passed++;
				else
					failed++;
				next++;
				continue;
			}
			if (active == 0)
				break;
			pid = waitpid(-1, &status, 0);
			if (pid < 0) {
				if (errno == EINTR)
					continue;
				printf("wait failed: %s\n", strerror(errno));
				return 2;
			}
			for (k = 0; k < jobs && run[k].pid != pid; k++)
				;
			if (k == jobs)
				continue; /* not ours (a grandchild reparented here) */
			rc = finish_one(&run[k], status);
			printf("%s %s (%.2fs)\n", rc == 0 ? "ok  " : rc == 2 ? "skip" : "FAIL",
			       tests[run[k].idx].name, now_s() - run[k].t0);
			run[k].pid = 0;
			active--;
			if (rc == 0)
				passed++;
			else if (rc == 2)
				skipped++;
			else
				failed++;
		}
		free(run);
	}
	if (skipped)
		printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	else
		printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
