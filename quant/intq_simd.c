/* quant: AVX2 / AVX-512 dequantization of one group of codes. Bit-identical
 * to the scalar deq(): each element is one f32 multiply of the code value by
 * d (NF4: the table value, loaded exactly), and for affine schemes one f32
 * add of b afterwards. No FMA is enabled, so mul and add stay separate. */
#include <immintrin.h>
#include <string.h>

#include "quant_impl.h"

/* Code values of n elements starting at element i0 (i0 even) as int32. */
static void unpack(qtk_scheme_id s, const uint8_t *codes, size_t i0, size_t n,
                   int32_t *q)
{
	if (s == QTK_SCHEME_INT8) {
		for (size_t j = 0; j < n; j++)
			q[j] = (int8_t)codes[i0 + j];
	} else if (s == QTK_SCHEME_INT8_AFFINE) {
		for (size_t j = 0; j < n; j++)
			q[j] = codes[i0 + j];
	} else {
		const uint8_t *p = codes + i0 / 2;
		int sub = s == QTK_SCHEME_INT4 ? 8 : 0;
		for (size_t j = 0; j < n; j++)
			q[j] = ((p[j >> 1] >> ((j & 1) * 4)) & 15) - sub;
	}
}

__attribute__((target("avx2"))) void
intq_deq_group_avx2(qtk_scheme_id s, const uint8_t *codes, size_t i0, size_t n,
                    float d, float b, float *out)
{
	int32_t q[64];
	int affine = s == QTK_SCHEME_INT4_AFFINE || s == QTK_SCHEME_INT8_AFFINE;
	__m256 vd = _mm256_set1_ps(d), vb = _mm256_set1_ps(b);

	for (size_t j0 = 0; j0 < n; j0 += 64) {
		size_t m = n - j0 < 64 ? n - j0 : 64, j = 0;
		unpack(s, codes, i0 + j0, m, q);
		for (; j + 8 <= m; j += 8) {
			__m256i vq = _mm256_loadu_si256((const __m256i *)(q + j));
			__m256 v = s == QTK_SCHEME_NF4
			                   ? _mm256_i32gather_ps(qtk_q_nf4_table(), vq, 4)
			                   : _mm256_cvtepi32_ps(vq);
			v = _mm256_mul_ps(v, vd);
			if (affine)
				v = _mm256_add_ps(v, vb);
			_mm256_storeu_ps(out + j0 + j, v);
		}
		for (; j < m; j++) {
			float v = s == QTK_SCHEME_NF4 ? qtk_q_nf4_table()[q[j]] : (float)q[j];
			out[j0 + j] = affine ? v * d + b : v * d;
		}
	}
}

__attribute__((target("avx512f"))) void
intq_deq_group_avx512(qtk_scheme_id s, const uint8_t *codes, size_t i0, size_t n,
                      float d, float b, float *out)
{
	int32_t q[64];
	int affine = s == QTK_SCHEME_INT4_AFFINE || s == QTK_SCHEME_INT8_AFFINE;
	__m512 vd = _mm512_set1_ps(d), vb = _mm512_set1_ps(b);

	for (size_t j0 = 0; j0 < n; j0 += 64) {
		size_t m = n - j0 < 64 ? n - j0 : 64, j = 0;
		unpack(s, codes, i0 + j0, m, q);
		for (; j + 16 <= m; j += 16) {
			__m512i vq = _mm512_loadu_si512(q + j);
			__m512 v = s == QTK_SCHEME_NF4
			                   ? _mm512_i32gather_ps(vq, qtk_q_nf4_table(), 4)
			                   : _mm512_cvtepi32_ps(vq);
			v = _mm512_mul_ps(v, vd);
			if (affine)
				v = _mm512_add_ps(v, vb);
			_mm512_storeu_ps(out + j0 + j, v);
		}
		for (; j < m; j++) {
			float v = s == QTK_SCHEME_NF4 ? qtk_q_nf4_table()[q[j]] : (float)q[j];
			out[j0 + j] = affine ? v * d + b : v * d;
		}
	}
}
