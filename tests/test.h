/* tests: the qtk test harness. Each TEST registers itself; the runner runs
 * every test in a forked child (a crash fails one test, not the run) and
 * ends with one line "N passed, N failed[, N skipped]". */
#ifndef QTK_TEST_H
#define QTK_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef void (*t_fn)(void);
void t_register(const char *name, const char *file, t_fn fn);

#define TEST(name)                                                        \
	static void test_##name(void);                                    \
	__attribute__((constructor)) static void t_reg_##name(void)       \
	{                                                                 \
		t_register(#name, __FILE__, test_##name);                 \
	}                                                                 \
	static void test_##name(void)

/* Record a failure and go on. */
void t_fail_at(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Mark the test skipped (with a reason) and leave it: call via SKIP. */
void t_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
int t_failed(void);

#define CHECK(c)                                                           \
	do {                                                               \
		if (!(c))                                                  \
			t_fail_at(__FILE__, __LINE__, "CHECK(%s)", #c);    \
	} while (0)
#define CHECK_MSG(c, ...)                                                  \
	do {                                                               \
		if (!(c))                                                  \
			t_fail_at(__FILE__, __LINE__, __VA_ARGS__);        \
	} while (0)
#define CHECK_EQ(a, b)                                                     \
	do {                                                               \
		long long a_ = (long long)(a), b_ = (long long)(b);        \
		if (a_ != b_)                                              \
			t_fail_at(__FILE__, __LINE__, "%s == %s: %lld != %lld", \
			          #a, #b, a_, b_);                         \
	} while (0)
#define CHECK_STR(a, b)                                                    \
	do {                                                               \
		const char *a_ = (a), *b_ = (b);                           \
		if (!a_ || !b_ || strcmp(a_, b_) != 0)                     \
			t_fail_at(__FILE__, __LINE__, "%s == %s: '%s' != '%s'", \
			          #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
	} while (0)
/* Fail and leave the test now. */
#define REQUIRE(c)                                                         \
	do {                                                               \
		if (!(c)) {                                                \
			t_fail_at(__FILE__, __LINE__, "REQUIRE(%s)", #c);  \
			return;                                            \
		}                                                          \
	} while (0)
#define SKIP(...) t_skip(__VA_ARGS__)

/* Paths. Tests run from the repository root. */
const char *t_data(const char *rel);   /* tests/data/REL (static buffer ring) */
/* ../shared/REL (or $QTK_SHARED/REL) if it exists, else NULL. */
const char *t_shared(const char *rel);
/* A fresh empty directory for this test, removed when it ends. */
const char *t_tmpdir(void);
/* t_tmpdir()/REL in a static buffer ring. */
const char *t_tmp(const char *rel);

/* Small file helpers. */
int t_write_file(const char *path, const void *data, size_t n);
/* Whole file in a malloc'd buffer (caller frees); NULL on error. */
void *t_read_file(const char *path, size_t *n);
/* 1 when both files read and hold the same bytes. */
int t_same_file(const char *a, const char *b);
int t_exists(const char *path);
/* Number of entries in a directory other than . and .. */
int t_dir_entries(const char *dir);
/* Run a shell command; returns its exit status (or -1). */
int t_system(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Deterministic pseudo-random numbers (splitmix64). */
uint64_t t_rand_u64(uint64_t *state);
float t_rand_normal(uint64_t *state);

#endif
