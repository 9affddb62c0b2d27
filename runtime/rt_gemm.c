/* runtime: the qtk_gemm table (quant/qtk_quant.h) on OpenBLAS, for the
 * dense algebra of GPTQ, which quant may not link. OpenBLAS runs these on
 * as many threads as it is set to (openblas_set_num_threads); the caller
 * decides. */
#include <cblas.h>

#include "rt_private.h"

static void sgemm_blas(void *ctx, int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                       const float *a, size_t lda, const float *b, size_t ldb, float beta,
                       float *c, size_t ldc)
{
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
	            (blasint)m, (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb,
	            beta, c, (blasint)ldc);
}

static void dgemm_blas(void *ctx, int ta, int tb, size_t m, size_t n, size_t k, double alpha,
                       const double *a, size_t lda, const double *b, size_t ldb, double beta,
                       double *c, size_t ldc)
{
	cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
	            (blasint)m, (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb,
	            beta, c, (blasint)ldc);
}

static const qtk_gemm blas_gemm = { sgemm_blas, dgemm_blas, NULL };

const qtk_gemm *qtk_rt_gemm_blas(void)
{
	return &blas_gemm;
}
