/* runtime: float weights (f32, f16, bf16 storage) through OpenBLAS.
 * Rows go in fixed chunks (a function of the shape only, never of the
 * thread count), each chunk one sgemv / sgemm call on one thread of qtk's
 * pool (OpenBLAS itself set to one thread by the pool): the bytes do not
 * depend on the thread count. F16 / BF16 chunks are widened to f32 per
 * call into the thread's scratch buffer (qtk_to_f32, exact), so a model in
 * F16 keeps its size in memory; the widening reads the weights once, as
 * the product does. */
#include <string.h>

#include <cblas.h>

#include "rt_private.h"

qtk_err rt_blas_matmul(qtk_rt_pool *pool, const qtk_rt_tensor *w, qtk_dtype dt,
                       const float *x, size_t batch, float *y, qtk_status *st);

typedef struct {
	qtk_rt_pool *pool;
	const uint8_t *data;
	qtk_dtype dt;
	size_t rows, cols, batch, chunk;
	const float *x;
	float *y;
	int err;
} blas_job;

static void blas_range(void *ctx, size_t b, size_t e, unsigned t)
{
	blas_job *J = ctx;
	size_t es = qtk_dtype_size(J->dt);
	float *buf = NULL;

	if (J->dt != QTK_DT_F32) {
		buf = rt_pool_scratch(J->pool, t, J->chunk * J->cols * sizeof(float));
		if (!buf) {
			__atomic_store_n(&J->err, 1, __ATOMIC_RELAXED);
			return;
		}
	}
	for (size_t c = b; c < e; c++) {
		size_t r0 = c * J->chunk, n = J->rows - r0 < J->chunk ? J->rows - r0 : J->chunk;
		const float *a = (const float *)(const void *)(J->data + r0 * J->cols * es);

		if (buf) {
			qtk_to_f32(J->dt, J->data + r0 * J->cols * es, buf, n * J->cols);
			a = buf;
		}
		if (J->batch == 1)
			cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)n, (blasint)J->cols, 1.0f, a,
			            (blasint)J->cols, J->x, 1, 0.0f, J->y + r0, 1);
		else
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)J->batch,
			            (blasint)n, (blasint)J->cols, 1.0f, J->x, (blasint)J->cols, a,
			            (blasint)J->cols, 0.0f, J->y + r0, (blasint)J->rows);
	}
}

qtk_err rt_blas_matmul(qtk_rt_pool *pool, const qtk_rt_tensor *w, qtk_dtype dt,
                       const float *x, size_t batch, float *y, qtk_status *st)
{
	blas_job J;
	size_t per;

	if (w->rows > (uint64_t)INT32_MAX || w->cols > (uint64_t)INT32_MAX ||
	    batch > (size_t)INT32_MAX)
		return qtk_fail(st, QTK_E_UNSUPPORTED,
		                "tensor '%s': %llux%llu x %zu is beyond OpenBLAS's int sizes",
		                w->name ? w->name : "?", (unsigned long long)w->rows,
		                (unsigned long long)w->cols, batch);
	memset(&J, 0, sizeof J);
	J.pool = pool;
	J.data = w->planes[QTK_PLANE_CODES].data;
	J.dt = dt;
	J.rows = (size_t)w->rows;
	J.cols = (size_t)w->cols;
	J.batch = batch;
	J.x = x;
	J.y = y;
	/* chunks of about 256 KB of f32 weights for a vector (the widened
	 * chunk stays in L2), 1 MB for a batch (X is packed once per chunk);
	 * at least 16 rows, a multiple of 16 */
	per = (batch == 1 ? (256u << 10) : (1u << 20)) / (J.cols * sizeof(float));
	J.chunk = per < 16 ? 16 : per - per % 16;
	qtk_rt_pool_run(pool, (J.rows + J.chunk - 1) / J.chunk, blas_range, &J);
	if (J.err)
		return qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory for widened rows",
		                w->name ? w->name : "?");
	return QTK_OK;
}
