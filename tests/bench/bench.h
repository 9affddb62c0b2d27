/* tests/bench: the benchmark harness behind `make bench`. Each BENCH
 * registers itself; qtk_bench runs those whose name contains an argument
 * (all by default). Benchmarks print their own table rows; they measure,
 * they never pass or fail on time. */
#ifndef QTK_BENCH_H
#define QTK_BENCH_H

#include <stddef.h>
#include <stdint.h>

typedef void (*b_fn)(void);
void b_register(const char *name, b_fn fn);

#define BENCH(name)                                                       \
	static void bench_##name(void);                                   \
	__attribute__((constructor)) static void b_reg_##name(void)       \
	{                                                                 \
		b_register(#name, bench_##name);                          \
	}                                                                 \
	static void bench_##name(void)

double b_now(void);                 /* monotonic seconds */
/* Best-of-`reps` seconds of fn(arg): the least disturbed run. */
double b_best(int reps, void (*fn)(void *), void *arg);
/* Scratch directory for generated files ($QTK_BENCH_DIR or /tmp). */
const char *b_dir(void);
/* Peak resident set of this process so far, in MiB. */
double b_peak_rss_mib(void);
/* Fill with deterministic pseudo-random N(0, sigma) floats. */
void b_fill_normal(float *x, size_t n, float sigma, uint64_t seed);

#endif
