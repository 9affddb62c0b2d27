/* bench: quantize (RTN and searched) and dequantize throughput per scheme,
 * in GB/s of f32, next to memcpy of the same bytes in the same run; one
 * core, group 32 (64 for the wider check), f16 scales. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "qtk_quant.h"

enum { R = 512, C = 4096 }; /* 8 MiB of f32 */

typedef struct {
	qtk_q_layout L;
	const float *w;
	float *out;
	qtk_q_planes p;
	qtk_q_opts o;
	void *src, *dst;
} job;

static void run_q(void *a)
{
	job *j = a;
	qtk_status st;
	if (qtk_q_quantize_rows(&j->L, j->w, R, C, &j->p, &j->o, &st) != QTK_OK)
		fprintf(stderr, "bench_quant: %s\n", st.msg);
}

static void run_dq(void *a)
{
	job *j = a;
	qtk_q_cplanes c;
	for (int i = 0; i < QTK_PLANE_MAX; i++)
		c.p[i] = j->p.p[i];
	qtk_q_dequantize_rows(&j->L, &c, R, C, j->out);
}

static void run_memcpy(void *a)
{
	job *j = a;
	memcpy(j->dst, j->src, (size_t)R * C * 4);
}

BENCH(quant)
{
	static const qtk_scheme_id ids[] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4,
		QTK_SCHEME_INT4_AFFINE, QTK_SCHEME_NF4, QTK_SCHEME_INT8_AFFINE };
	size_t bytes = (size_t)R * C * 4;
	float *w = malloc(bytes), *out = malloc(bytes);
	job j;
	double gb = (double)bytes / 1e9, tm;

	if (!w || !out)
		return;
	b_fill_normal(w, (size_t)R * C, 0.02f, 7);
	memset(&j, 0, sizeof j);
	j.w = w;
	j.out = out;
	j.src = w;
	j.dst = out;
	tm = b_best(5, run_memcpy, &j);
	printf("quant: %zu MiB f32 [%d x %d], isa %s, one core\n", bytes >> 20, R, C,
	       qtk_isa_name(qtk_isa_active()));
	printf("%-12s %5s %10s %10s %10s %8s %10s\n", "scheme", "group", "rtn GB/s",
	       "search GB/s", "dequant GB/s", "search/x", "memcpy GB/s");
	for (size_t s = 0; s < sizeof ids / sizeof ids[0]; s++) {
		uint64_t sz[QTK_PLANE_MAX];
		double tr, ts, td;
		j.L = (qtk_q_layout){ ids[s], 32, QTK_DT_F16, 0, QTK_DT_F32 };
		qtk_q_plane_sizes(&j.L, R, C, sz);
		for (int i = 0; i < QTK_PLANE_MAX; i++)
			j.p.p[i] = malloc(sz[i] + 1);
		j.o = (qtk_q_opts){ 0, NULL, "bench", 0 };
		tr = b_best(3, run_q, &j);
		td = b_best(5, run_dq, &j);
		j.o.search = 1;
		ts = b_best(2, run_q, &j);
		printf("%-12s %5u %10.3f %10.3f %10.3f %8.1f %10.2f\n",
		       qtk_q_scheme_get(ids[s])->name, j.L.group, gb / tr, gb / ts, gb / td,
		       ts / tr, gb / tm);
		for (int i = 0; i < QTK_PLANE_MAX; i++)
			free(j.p.p[i]);
	}
	free(w);
	free(out);
}
