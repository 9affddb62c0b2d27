/* tests/bench: safetensors — open+validate of a 10,000-tensor header, and
 * F16/BF16 -> F32 conversion throughput per ISA next to memcpy of the same
 * bytes, measured in the same run. `make bench T=st` */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/qtk_formats.h"
#include "bench.h"

typedef struct {
	const char *path;
	qtk_dtype dt;
	const void *src;
	float *dst;
	void *dst16;
	size_t n;
} st_arg;

static void open_once(void *a)
{
	st_arg *x = a;
	qtk_status st;
	qtk_st_file *f;
	if (qtk_st_open(x->path, &f, &st) != QTK_OK) {
		fprintf(stderr, "bench_st: %s\n", st.msg);
		exit(1);
	}
	qtk_st_close(f);
}

static void conv_once(void *a)
{
	st_arg *x = a;
	qtk_to_f32(x->dt, x->src, x->dst, x->n);
}

static void from_once(void *a)
{
	st_arg *x = a;
	qtk_from_f32(x->dt, x->dst, x->dst16, x->n);
}

static void copy_once(void *a)
{
	st_arg *x = a;
	memcpy(x->dst16, x->src, x->n * 2);
}

BENCH(st_open_10k)
{
	enum { N = 10000 };
	char path[512];
	snprintf(path, sizeof path, "%s/qtk_bench_st_10k.safetensors", b_dir());
	qtk_st_desc *d = calloc(N, sizeof *d);
	const void **data = calloc(N, sizeof *data);
	char (*names)[48] = calloc(N, sizeof *names);
	static float zero[64 * 4];
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof names[i], "model.layers.%d.mlp.weight_%d", i / 10, i % 10);
		d[i] = (qtk_st_desc){ .name = names[i], .dtype = QTK_DT_F32, .ndim = 2,
		                      .shape = { 4, 16 } };
		data[i] = zero;
	}
	qtk_status st;
	qtk_write_opts o = { .force = 1 };
	if (qtk_st_write(path, d, data, N, NULL, &o, &st) != QTK_OK) {
		fprintf(stderr, "bench_st: %s\n", st.msg);
		exit(1);
	}
	st_arg a = { .path = path };
	double t = b_best(5, open_once, &a);
	printf("st_open_10k      %d tensors: open+validate %.2f ms (%.0f ns/tensor)\n", N,
	       t * 1e3, t * 1e9 / N);
	remove(path);
	free(d);
	free(data);
	free(names);
}

BENCH(st_convert)
{
	size_t n = 8u << 20; /* 8 Mi elements: 16 MiB in, 32 MiB out */
	uint16_t *src = malloc(n * 2), *d16 = malloc(n * 2);
	float *dst = malloc(n * 4);
	uint64_t s = 1;
	for (size_t i = 0; i < n; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		src[i] = (uint16_t)(0x3c00 ^ ((s >> 40) & 0x8fff)); /* finite, mixed signs */
	}
	st_arg a = { .src = src, .dst = dst, .dst16 = d16, .n = n };
	double tc = b_best(5, copy_once, &a);
	printf("st_convert       memcpy %zu MiB: %.2f GB/s (input bytes)\n", n * 2 >> 20,
	       (double)n * 2 / tc / 1e9);
	static const qtk_isa isas[] = { QTK_ISA_SCALAR, QTK_ISA_AVX2, QTK_ISA_AVX512 };
	qtk_isa old = qtk_isa_force(QTK_ISA_SCALAR);
	for (size_t k = 0; k < 3; k++) {
		if (!qtk_isa_supported(isas[k]))
			continue;
		qtk_isa_force(isas[k]);
		for (int d = 0; d < 2; d++) {
			a.dt = d ? QTK_DT_BF16 : QTK_DT_F16;
			double t = b_best(5, conv_once, &a);
			double tf = b_best(5, from_once, &a);
			printf("st_convert       %-6s %-4s->F32 %6.2f GB/s in (%.2fx memcpy)", qtk_isa_name(isas[k]),
			       qtk_dtype_name(a.dt), (double)n * 2 / t / 1e9, tc / t);
			printf("   F32->%-4s %6.2f GB/s in\n", qtk_dtype_name(a.dt), (double)n * 4 / tf / 1e9);
		}
	}
	qtk_isa_force(old);
	free(src);
	free(d16);
	free(dst);
}
