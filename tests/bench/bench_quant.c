/* tests/bench: RTN and searched quantize, dequantize and dot throughput per
 * scheme at the active ISA and at scalar (one core), in GB/s of f32 (dot: of
 * the f32 weights the packed row stands for), next to memcpy of the same
 * bytes; plus bits per weight of every scheme x group x scale dtype. */
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "qtk_quant.h"

enum { ROWS = 1024, COLS = 4096 };

typedef struct {
	qtk_q_layout L;
	float *x, *y;
	qtk_q_planes P;
	qtk_q_cplanes C;
	int search, acc;
} job;

static void run_q(void *a)
{
	job *j = a;
	qtk_status st;
	qtk_q_opts o = { .tensor = "bench", .search = j->search };
	qtk_q_acc acc = { 0 };
	if ((j->acc ? qtk_q_quantize_rows_acc(&j->L, j->x, ROWS, COLS, &j->P, &o, &acc, &st)
	            : qtk_q_quantize_rows(&j->L, j->x, ROWS, COLS, &j->P, &o, &st)) != QTK_OK)
		fprintf(stderr, "quantize failed: %s\n", st.msg);
}

static void run_dq(void *a)
{
	job *j = a;
	qtk_q_dequantize_rows(&j->L, &j->C, ROWS, COLS, j->y);
}

static volatile float dot_sink;

static void run_dot(void *a)
{
	job *j = a;
	const qtk_q_scheme *s = qtk_q_scheme_get(j->L.scheme);
	float acc = 0;

	for (size_t r = 0; r < ROWS; r++) {
		qtk_q_cplanes R;
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			R.p[p] = j->C.p[p] ? (const uint8_t *)j->C.p[p] +
			                         r * qtk_q_row_bytes(&j->L, COLS, p) : NULL;
		acc += s->dot(&j->L, &R, COLS, j->x);
	}
	dot_sink = acc;
}

static void run_cp(void *a)
{
	job *j = a;
	memcpy(j->y, j->x, sizeof(float) * ROWS * COLS);
}

BENCH(quant)
{
	static const qtk_scheme_id ids[] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4,
		QTK_SCHEME_INT4_AFFINE, QTK_SCHEME_NF4, QTK_SCHEME_INT8_AFFINE };
	job j = { .L = { .group = 32, .scale_dtype = QTK_DT_F16, .dtype = QTK_DT_F32 } };
	size_t n = (size_t)ROWS * COLS;
	double gb = (double)n * 4 / 1e9;

	j.x = qtk_malloc(n * 4);
	j.y = qtk_malloc(n * 4);
	for (int p = 0; p < 3; p++)
		j.P.p[p] = qtk_calloc(n, 4);
	if (!j.x || !j.y || !j.P.p[0] || !j.P.p[1] || !j.P.p[2])
		goto out;
	for (int p = 0; p < 3; p++)
		j.C.p[p] = j.P.p[p];
	b_fill_normal(j.x, n, 0.02f, 1);
	qtk_isa best = qtk_isa_active();
	printf("quant: %dx%d f32 (%.1f MB), group 32, f16 scales; GB/s of f32 (dot: of the f32 weights)\n",
	       ROWS, COLS, gb * 1e3);
	printf("RTN+err: with the error sums convert reports (qtk_q_quantize_rows_acc)\n");
	printf("%-12s %-7s %9s %9s %9s %9s %9s %9s %8s\n", "scheme", "isa", "RTN", "RTN+err",
	       "search", "deq", "dot", "memcpy", "srch/RTN");
	for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
		j.L.scheme = ids[k];
		for (int pass = 0; pass < 2; pass++) {
			qtk_isa isa = qtk_isa_force(pass ? QTK_ISA_SCALAR : best);
			int reps = pass ? 2 : 5;
			j.search = 0;
			run_q(&j); /* warm: pages touched, clocks up */
			double tq = b_best(reps, run_q, &j);
			j.acc = 1;
			double ta = b_best(reps, run_q, &j);
			j.acc = 0;
			j.search = 1;
			double ts = b_best(reps, run_q, &j);
			j.search = 0;
			run_q(&j);
			double td = b_best(reps, run_dq, &j), tt = b_best(reps, run_dot, &j);
			double tc = b_best(reps, run_cp, &j);
			printf("%-12s %-7s %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f %7.1fx\n",
			       qtk_q_scheme_get(ids[k])->name, qtk_isa_name(isa), gb / tq, gb / ta, gb / ts,
			       gb / td, gb / tt, gb / tc, ts / tq);
		}
	}
	qtk_isa_force(best);
	printf("\nbits per weight (4096x4096), scale dtype f16 / f32:\n");
	printf("%-12s %13s %13s %13s %13s\n", "scheme", "g32", "g64", "g128", "row");
	for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
		static const uint32_t gs[] = { 32, 64, 128, QTK_GROUP_ROW };
		printf("%-12s", qtk_q_scheme_get(ids[k])->name);
		for (int g = 0; g < 4; g++) {
			qtk_q_layout L = { .scheme = ids[k], .group = gs[g], .dtype = QTK_DT_F32 };
			L.scale_dtype = QTK_DT_F16;
			double a = qtk_q_bits_per_weight(&L, 4096, 4096);
			L.scale_dtype = QTK_DT_F32;
			printf("  %5.3f/%5.3f", a, qtk_q_bits_per_weight(&L, 4096, 4096));
		}
		printf("\n");
	}
out:
	qtk_free(j.x);
	qtk_free(j.y);
	for (int p = 0; p < 3; p++)
		qtk_free(j.P.p[p]);
}
