/* tests/bench: GPTQ of one 4096 x 4096 layer with a full Hessian (int4,
 * group 32, f16 scales), OpenBLAS on 2 threads: the factorization (double)
 * and the sweep (f32) timed apart: plain, with act-order, and with
 * act-order and the scale refit (qtk convert's default, 4 steps). */
#include <cblas.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "qtk_quant.h"
#include "qtk_runtime.h"

enum { N = 4096, K = 1024 };

/* H = 2/K B B^T + diag(0.05): a correlated, full-rank Hessian. */
static double *make_h(size_t n)
{
	float *b = qtk_malloc(n * K * sizeof *b);
	double *bd = qtk_malloc(n * K * sizeof *bd), *h = qtk_malloc(n * n * sizeof *h);

	if (!b || !bd || !h) {
		qtk_free(b);
		qtk_free(bd);
		qtk_free(h);
		return NULL;
	}
	b_fill_normal(b, n * K, 1.0f, 5);
	for (size_t i = 0; i < n * K; i++)
		bd[i] = b[i];
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n, K, 2.0 / K, bd, K,
	            bd, K, 0.0, h, (int)n);
	for (size_t i = 0; i < n; i++)
		h[i * n + i] += 0.05;
	qtk_free(b);
	qtk_free(bd);
	return h;
}

BENCH(gptq)
{
	qtk_q_layout L = { .scheme = QTK_SCHEME_INT4, .group = 32, .scale_dtype = QTK_DT_F16 };
	const qtk_gemm *g = qtk_rt_gemm_blas();
	qtk_q_planes P = { { 0 } };
	uint64_t sz[QTK_PLANE_MAX];
	qtk_gptq_opts go;
	qtk_gptq *f = NULL;
	qtk_status st;
	float *w = qtk_malloc((size_t)N * N * sizeof *w);
	double *h, t0, t1, t2;

	openblas_set_num_threads(2);
	h = make_h(N);
	qtk_q_plane_sizes(&L, N, N, sz);
	P.p[0] = qtk_malloc(sz[0]);
	P.p[1] = qtk_malloc(sz[1]);
	if (!w || !h || !P.p[0] || !P.p[1])
		goto out;
	b_fill_normal(w, (size_t)N * N, 0.02f, 6);
	qtk_gptq_opts_init(&go);
	for (int act = 0; act < 3; act++) {
		go.act_order = act > 0;
		go.refit = act == 2 ? QTK_GPTQ_REFIT_DEFAULT : 0;
		t0 = b_now();
		if (qtk_gptq_prepare(h, N, &go, g, &f, &st) != QTK_OK)
			goto fail;
		t1 = b_now();
		if (qtk_gptq_quantize(f, g, &L, w, N, N, &P, NULL, &st) != QTK_OK)
			goto fail;
		t2 = b_now();
		qtk_gptq_free(f);
		f = NULL;
		printf("gptq: %dx%d int4 g32, full Hessian, OpenBLAS %s, 2 threads, ISA %s%s: "
		       "factor %.2f s, sweep %.2f s, total %.2f s; peak RSS %.0f MiB\n",
		       N, N, openblas_get_corename(), qtk_isa_name(qtk_isa_active()),
		       act == 2 ? ", act-order, refit 4" : act ? ", act-order" : "", t1 - t0, t2 - t1, t2 - t0, b_peak_rss_mib());
		b_fill_normal(w, (size_t)N * N, 0.02f, 6);
	}
	goto out;
fail:
	fprintf(stderr, "gptq bench: %s\n", st.msg);
out:
	openblas_set_num_threads(1);
	qtk_gptq_free(f);
	qtk_free(w);
	qtk_free(h);
	qtk_free(P.p[0]);
	qtk_free(P.p[1]);
}
