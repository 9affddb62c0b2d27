/* quant: the error accumulators' blocks (see acc_impl.h): scalar reference,
 * AVX2 and AVX-512, bit-identical. */
#include <immintrin.h>
#include <math.h>

#include "acc_avx2.h"
#include "acc_avx512.h"

#define AB 256 /* block length (acc_impl.h) */

/* The reference loop; fmaf is exact, so the copy built for FMA hardware
 * (one instruction instead of a library call) gives the same bits. */
static inline __attribute__((always_inline)) void
acc_block_ref(acc_lanes *A, const float *w, const float *w_hat, size_t n)
{
	for (size_t b = 0; b < n; b += AB) {
		float se[16] = { 0 }, sx[16] = { 0 }, sy[16] = { 0 };
		float mx[16] = { 0 };
		size_t m = n - b < AB ? n - b : AB;

		for (size_t i = 0; i < m; i++) {
			size_t l = i % 16;
			float x = w[b + i], y = w_hat[b + i], e = x - y;
			se[l] = fmaf(e, e, se[l]);
			sx[l] = fmaf(x, x, sx[l]);
			sy[l] = fmaf(y, y, sy[l]);
			mx[l] = fabsf(e) > mx[l] ? fabsf(e) : mx[l];
		}
		for (int l = 0; l < 16; l++) {
			A->sse[l] += (double)se[l];
			A->ssw[l] += (double)sx[l];
			A->ssh[l] += (double)sy[l];
			A->mx[l] = (double)mx[l] > A->mx[l] ? (double)mx[l] : A->mx[l];
		}
	}
}

static __attribute__((target("fma"))) void
acc_block_fma(acc_lanes *A, const float *w, const float *w_hat, size_t n)
{
	acc_block_ref(A, w, w_hat, n);
}

void acc_block_scalar(acc_lanes *A, const float *w, const float *w_hat, size_t n)
{
	if (qtk_isa_supported(QTK_ISA_AVX2)) /* the AVX2 level implies FMA */
		acc_block_fma(A, w, w_hat, n);
	else
		acc_block_ref(A, w, w_hat, n);
}

/* met256 (acc_avx2.h); the short last vectors read absent elements as 0
 * (adding +0 to a sum that is never -0 changes nothing). */
__attribute__((target("avx2,fma"))) void
acc_block_avx2(acc_lanes *A, const float *w, const float *w_hat, size_t n)
{
	const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	met256 M;

	met2_init(&M);
	for (size_t i = 0; i < n; i += 16) {
		__m256 x[2], y[2];
		for (int h = 0; h < 2; h++) {
			size_t at = i + 8 * (size_t)h;
			if (at + 8 <= n) {
				x[h] = _mm256_loadu_ps(w + at);
				y[h] = _mm256_loadu_ps(w_hat + at);
			} else {
				int left = at < n ? (int)(n - at) : 0;
				__m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), idx);
				x[h] = _mm256_maskload_ps(w + (at < n ? at : n), k);
				y[h] = _mm256_maskload_ps(w_hat + (at < n ? at : n), k);
			}
		}
		met2_vec(&M, A, x[0], y[0], x[1], y[1]);
	}
	met2_end(&M, A);
}

/* A call's lanes start at 0 (qtk_q_acc_add clears A): met512 from zero,
 * the short last block's absent elements read as 0 (adding +0 to a sum that
 * is never -0 changes nothing). */
__attribute__((target("avx512f"))) void
acc_block_avx512(acc_lanes *A, const float *w, const float *w_hat, size_t n)
{
	met512 M;

	met_init(&M);
	for (size_t i = 0; i < n; i += 16) {
		__mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
		met_vec(&M, _mm512_maskz_loadu_ps(k, w + i), _mm512_maskz_loadu_ps(k, w_hat + i));
	}
	met_store(&M, A);
}
