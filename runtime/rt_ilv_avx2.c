/* runtime: AVX2 kernels on interleaved weights (maddubs + madd). A
 * group's 16 rows are two vectors of 8 lanes (bytes 0..31 and 32..63 of
 * each 64-byte chunk); per lane the same steps as rt_ilv.c's reference,
 * so the same bytes. */
#include <string.h>

#include <immintrin.h>

#include "rt_private.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

#define INL static inline __attribute__((always_inline))

/* Position groups j = 0..7 of half hf of a block: S4 unsigned, S8 and
 * NF4 signed. */
INL void codes_256(const int kind, const rt_ilv *I, const uint8_t *blk, int hf, __m256i w[8])
{
	if (kind == RK_S8) {
#pragma GCC unroll 8
		for (int j = 0; j < 8; j++)
			w[j] = _mm256_load_si256((const __m256i *)(const void *)(blk + 64 * j + 32 * hf));
		return;
	}
	const __m256i m4 = _mm256_set1_epi8(15);
#pragma GCC unroll 4
	for (int h = 0; h < 4; h++) {
		__m256i v = _mm256_load_si256((const __m256i *)(const void *)(blk + 64 * h + 32 * hf));
		w[h] = _mm256_and_si256(v, m4);
		w[h + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
	}
	if (kind == RK_L4) {
		__m256i lut = _mm256_broadcastsi128_si256(
			_mm_loadu_si128((const __m128i *)(const void *)I->lut_s));
#pragma GCC unroll 8
		for (int j = 0; j < 8; j++)
			w[j] = _mm256_shuffle_epi8(lut, w[j]);
	}
}

INL __m256i bcast_256(const int8_t *q)
{
	int32_t v;

	memcpy(&v, q, 4);
	return _mm256_set1_epi32(v);
}

INL __m256i dot_256(const int kind, const __m256i w[8], const int8_t *q, int32_t corr)
{
	const __m256i one16 = _mm256_set1_epi16(1);
	__m256i s = _mm256_set1_epi32(corr);

	if (kind == RK_S4) {
		/* pairs of u4 x s8 are at most 3810: eight sums fit int16 */
		__m256i t = _mm256_maddubs_epi16(w[0], bcast_256(q));
#pragma GCC unroll 8
		for (int j = 1; j < 8; j++)
			t = _mm256_add_epi16(t, _mm256_maddubs_epi16(w[j], bcast_256(q + 4 * j)));
		return _mm256_add_epi32(s, _mm256_madd_epi16(t, one16));
	}
#pragma GCC unroll 8
	for (int j = 0; j < 8; j++) {
		/* |w| * (a with w's sign): |w| <= 128, |a| <= 127, pairs fit int16 */
		__m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(w[j]),
		                                 _mm256_sign_epi8(bcast_256(q + 4 * j), w[j]));
		s = _mm256_add_epi32(s, _mm256_madd_epi16(p, one16));
	}
	return s;
}

/* Half hf of group g against C vectors bi[0..C) (C = 4 only now). */
INL void half_256(const int kind, const int C, const rt_ijob *J, size_t g, int hf,
                  const size_t *bi)
{
	const rt_ilv *I = J->L;
	const rt_act *A = J->act;
	const uint8_t *cb = I->codes + g * I->nb * I->bb;
	const size_t s0 = g * I->gpr * RT_IR + 8 * (size_t)hf;
	size_t r0 = g * RT_IR + 8 * (size_t)hf;
	__m256 acc[4];

#pragma GCC unroll 4
	for (int c = 0; c < C; c++)
		acc[c] = _mm256_setzero_ps();
	for (size_t k = 0; k < I->nb; k++) {
		size_t s = I->gshift < 0 ? 0 : (k * RT_BLK) >> I->gshift;
		__m256i w[8];
		/* every line of a block some blocks ahead (see rt_ilv512_body.h) */
		for (size_t o = 0; o < I->bb; o += 64)
			_mm_prefetch((const char *)(cb + (k + 16) * I->bb + o), _MM_HINT_T0);
		codes_256(kind, I, cb + k * I->bb, hf, w);
		__m256 ws = I->sh ? _mm256_cvtph_ps(_mm_load_si128(
		                            (const __m128i *)(const void *)((const uint16_t *)I->scales +
		                                                            s0 + s * RT_IR)))
		                  : _mm256_load_ps((const float *)I->scales + s0 + s * RT_IR);
#pragma GCC unroll 4
		for (int c = 0; c < C; c++) {
			size_t o = bi[c] * A->nbp + k;
			__m256i p = dot_256(kind, w, A->q + o * RT_BLK, A->sb[o]);
			acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
			                         _mm256_mul_ps(ws, _mm256_set1_ps(A->d[o * 8])), acc[c]);
		}
	}
#pragma GCC unroll 4
	for (int c = 0; c < C; c++) {
		float *y = J->y + bi[c] * I->rows + r0;
		if (r0 + 8 <= I->rows) {
			_mm256_storeu_ps(y, acc[c]);
		} else {
			float t[8];
			_mm256_storeu_ps(t, acc[c]);
			for (size_t i = 0; r0 + i < I->rows; i++)
				y[i] = t[i];
		}
	}
}

/* Block k of the group at cb (scales from s0) against C <= 2 vectors
 * bi[0..C), into acc[c][half]. */
INL void both_blk(const int kind, const int C, const rt_ijob *J, const uint8_t *cb, size_t s0,
                  size_t k, const size_t *bi, __m256 acc[][2])
{
	const rt_ilv *I = J->L;
	const rt_act *A = J->act;
	const __m256i one16 = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(15);
	__m256i lut = _mm256_setzero_si256();
	size_t s = I->gshift < 0 ? 0 : (k * RT_BLK) >> I->gshift;
	const uint8_t *blk = cb + k * I->bb;
	__m256 ws[2];

	if (kind == RK_L4)
		lut = _mm256_broadcastsi128_si256(
			_mm_loadu_si128((const __m128i *)(const void *)I->lut_s));
	/* every line of a block some blocks ahead (see rt_ilv512_body.h) */
	for (size_t o = 0; o < I->bb; o += 64)
		_mm_prefetch((const char *)(blk + 16 * I->bb + o), _MM_HINT_T0);
	for (int hf = 0; hf < 2; hf++)
		ws[hf] = I->sh ? _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(const void *)(
		                         (const uint16_t *)I->scales + s0 + s * RT_IR + 8 * hf)))
		               : _mm256_load_ps((const float *)I->scales + s0 + s * RT_IR + 8 * hf);
#pragma GCC unroll 2
	for (int c = 0; c < C; c++) {
		size_t o = bi[c] * A->nbp + k;
		const int8_t *q = A->q + o * RT_BLK;
		__m256i si[2] = { _mm256_set1_epi32(A->sb[o]), _mm256_set1_epi32(A->sb[o]) };
		if (kind == RK_S4) {
			/* eight u4 x s8 pairs per lane and half: at most 30480 */
			__m256i t[2] = { _mm256_setzero_si256(), _mm256_setzero_si256() };
#pragma GCC unroll 4
			for (int h = 0; h < 4; h++) {
				__m256i alo = bcast_256(q + 4 * h), ahi = bcast_256(q + 16 + 4 * h);
				for (int hf = 0; hf < 2; hf++) {
					__m256i v = _mm256_load_si256(
						(const __m256i *)(const void *)(blk + 64 * h + 32 * hf));
					t[hf] = _mm256_add_epi16(
						t[hf], _mm256_maddubs_epi16(_mm256_and_si256(v, m4), alo));
					t[hf] = _mm256_add_epi16(
						t[hf], _mm256_maddubs_epi16(
							       _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), ahi));
				}
			}
			for (int hf = 0; hf < 2; hf++)
				si[hf] = _mm256_add_epi32(si[hf], _mm256_madd_epi16(t[hf], one16));
		} else {
#pragma GCC unroll 8
			for (int j = 0; j < 8; j++) {
				__m256i a = bcast_256(q + 4 * j);
				for (int hf = 0; hf < 2; hf++) {
					__m256i w;
					if (kind == RK_S8) {
						w = _mm256_load_si256(
							(const __m256i *)(const void *)(blk + 64 * j + 32 * hf));
					} else {
						__m256i v = _mm256_load_si256((const __m256i *)(const void *)(
							blk + 64 * (j & 3) + 32 * hf));
						w = _mm256_shuffle_epi8(
							lut, _mm256_and_si256(j < 4 ? v : _mm256_srli_epi16(v, 4), m4));
					}
					__m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(w),
					                                 _mm256_sign_epi8(a, w));
					si[hf] = _mm256_add_epi32(si[hf], _mm256_madd_epi16(p, one16));
				}
			}
		}
		for (int hf = 0; hf < 2; hf++)
			acc[c][hf] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si[hf]),
			                             _mm256_mul_ps(ws[hf], _mm256_set1_ps(A->d[o * 8])),
			                             acc[c][hf]);
	}
}

/* acc[c][half] of group g into y. */
INL void both_store(const int C, const rt_ijob *J, size_t g, const size_t *bi, __m256 acc[][2])
{
	const rt_ilv *I = J->L;
	const size_t r0 = g * RT_IR;

#pragma GCC unroll 2
	for (int c = 0; c < C; c++) {
		float *y = J->y + bi[c] * I->rows + r0, t[16];
		if (r0 + 16 <= I->rows) {
			_mm256_storeu_ps(y, acc[c][0]);
			_mm256_storeu_ps(y + 8, acc[c][1]);
		} else {
			_mm256_storeu_ps(t, acc[c][0]);
			_mm256_storeu_ps(t + 8, acc[c][1]);
			for (size_t i = 0; r0 + i < I->rows; i++)
				y[i] = t[i];
		}
	}
}

/* Both halves of group g against C <= 2 vectors in one pass over its
 * blocks: each 64-byte line is read once and each activation broadcast
 * serves both halves (what generation, one vector, spends its time on).
 * The integer sums are exact and the f32 steps per lane are half_256's,
 * so the same bytes. */
INL void both_256(const int kind, const int C, const rt_ijob *J, size_t g, const size_t *bi)
{
	const rt_ilv *I = J->L;
	const uint8_t *cb = I->codes + g * I->nb * I->bb;
	__m256 acc[2][2];

#pragma GCC unroll 2
	for (int c = 0; c < C; c++)
		acc[c][0] = acc[c][1] = _mm256_setzero_ps();
	for (size_t k = 0; k < I->nb; k++)
		both_blk(kind, C, J, cb, g * I->gpr * RT_IR, k, bi, acc);
	both_store(C, J, g, bi, acc);
}

/* Groups gs[0..N) against vector 0, their blocks in step: N streams
 * through memory (rt_ilv512_body.h's NM(multi)); two here, and each with
 * its software prefetch: at AVX2 with its 16 registers, four streams
 * spill the accumulators and measured slower. */
INL void multi_256(const int kind, const int N, const rt_ijob *J, const size_t *gs)
{
	const rt_ilv *I = J->L;
	const size_t bi[2] = { 0, 0 };
	__m256 acc[2][1][2];

#pragma GCC unroll 2
	for (int i = 0; i < N; i++)
		acc[i][0][0] = acc[i][0][1] = _mm256_setzero_ps();
	for (size_t k = 0; k < I->nb; k++)
#pragma GCC unroll 2
		for (int i = 0; i < N; i++)
			both_blk(kind, 1, J, I->codes + gs[i] * I->nb * I->bb, gs[i] * I->gpr * RT_IR,
			         k, bi, acc[i]);
#pragma GCC unroll 2
	for (int i = 0; i < N; i++)
		both_store(1, J, gs[i], bi, acc[i]);
}

INL void run_256(const int kind, const rt_ijob *J, size_t g0, size_t g1)
{
	const size_t B = J->act->batch;

	if (B == 1) {
		size_t step = 0, gs[2];
		int n;
		while ((n = rt_ilv_streams(g0, g1, 2, step++, gs)) > 0) {
			if (n == 2)
				multi_256(kind, 2, J, gs);
			else
				multi_256(kind, 1, J, gs);
		}
		return;
	}

	for (size_t cc = 0; cc < B; cc += J->tile_cols) {
		size_t ce = cc + J->tile_cols < B ? cc + J->tile_cols : B;
		for (size_t g = g0; g < g1; g++)
			for (size_t b0 = cc; b0 < ce;) {
				size_t left = ce - b0, bi[4];
				int C = left >= 4 ? 4 : left >= 2 ? 2 : 1;
				for (int c = 0; c < 4; c++)
					bi[c] = b0 + (size_t)(c < C ? c : C - 1);
				if (C == 4) { /* four vectors: a half at a time (registers) */
					for (int hf = 0; hf < 2 && g * RT_IR + 8 * (size_t)hf < J->L->rows; hf++)
						half_256(kind, 4, J, g, hf, bi);
				} else if (C == 2) {
					both_256(kind, 2, J, g, bi);
				} else {
					both_256(kind, 1, J, g, bi);
				}
				b0 += (size_t)C;
			}
	}
}

static void s4_256(const rt_ijob *J, size_t g0, size_t g1) { run_256(RK_S4, J, g0, g1); }
static void s8_256(const rt_ijob *J, size_t g0, size_t g1) { run_256(RK_S8, J, g0, g1); }
static void l4_256(const rt_ijob *J, size_t g0, size_t g1) { run_256(RK_L4, J, g0, g1); }

#undef INL
#pragma GCC pop_options

void rt_ilv_avx2(const rt_ijob *J, size_t g0, size_t g1)
{
	switch (J->L->kind) {
	case RK_S4: s4_256(J, g0, g1); break;
	case RK_S8: s8_256(J, g0, g1); break;
	default: l4_256(J, g0, g1); break;
	}
}
