/* tests/bench: runner for `make bench`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench.h"
#include "qtk_quant.h"

#define MAX_BENCH 256
static struct { const char *name; b_fn fn; } benches[MAX_BENCH];
static int nbench;

void b_register(const char *name, b_fn fn)
{
	if (nbench < MAX_BENCH) {
		benches[nbench].name = name;
		benches[nbench].fn = fn;
		nbench++;
	}
}

double b_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double b_best(int reps, void (*fn)(void *), void *arg)
{
	double best = 1e30;

	for (int i = 0; i < reps; i++) {
		double t0 = b_now();
		fn(arg);
		double t = b_now() - t0;
		if (t < best)
			best = t;
	}
	return best;
}

const char *b_dir(void)
{
	const char *d = getenv("QTK_BENCH_DIR");
	return d && *d ? d : "/tmp";
}

double b_peak_rss_mib(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_maxrss / 1024.0;
}

void b_fill_normal(float *x, size_t n, float sigma, uint64_t seed)
{
	uint64_t s = seed;

	for (size_t i = 0; i < n; i++) {
		uint64_t z;
		double u1, u2;

		z = (s += 0x9e3779b97f4a7c15ull);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		z ^= z >> 31;
		u1 = ((double)(z >> 11) + 1.0) * 0x1p-53;
		u2 = (double)(z & 0x7ff) / 2048.0;
		x[i] = sigma * (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
	}
}

int main(int argc, char **argv)
{
	printf("qtk bench: isa %s\n", qtk_isa_name(qtk_isa_active()));
	for (int i = 0; i < nbench; i++) {
		int run = argc < 2;
		for (int a = 1; a < argc; a++)
			if (strstr(benches[i].name, argv[a]))
				run = 1;
		if (!run)
			continue;
		printf("\n== %s\n", benches[i].name);
		fflush(stdout);
		benches[i].fn();
		fflush(stdout);
	}
	return 0;
}
