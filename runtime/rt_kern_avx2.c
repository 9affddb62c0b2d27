/* runtime: AVX2 kernels. One body (rt_kern256_body.h) compiled twice:
 * AVX2 with maddubs, and with AVX-VNNI dpbusd; both give the scalar
 * reference's bytes (rt_kern_ref.c). */
#include <string.h>

#include <immintrin.h>

#include "rt_private.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

/* n scales of dtype dt from p as f32 into out (then 16 zeros); div: / 127. */
static inline __attribute__((always_inline)) void
conv_256(qtk_dtype dt, const uint8_t *p, size_t n, int div, float *out)
{
	size_t g = 0;

	for (; g + 8 <= n; g += 8) {
		__m256 v;
		if (dt == QTK_DT_F32)
			v = _mm256_loadu_ps((const float *)(const void *)(p + 4 * g));
		else if (dt == QTK_DT_F16)
			v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p + 2 * g)));
		else
			v = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(
				_mm_loadu_si128((const __m128i *)(const void *)(p + 2 * g))), 16));
		if (div)
			v = _mm256_div_ps(v, _mm256_set1_ps(127.0f));
		_mm256_storeu_ps(out + g, v);
	}
	for (; g < n; g++) {
		uint16_t h;
		float f;
		if (dt == QTK_DT_F32) {
			memcpy(&f, p + 4 * g, 4);
		} else {
			memcpy(&h, p + 2 * g, 2);
			f = dt == QTK_DT_F16 ? qtk_f16_to_f32(h) : qtk_bf16_to_f32(h);
		}
		out[g] = div ? f / 127.0f : f;
	}
	_mm256_storeu_ps(out + n, _mm256_setzero_ps());
	_mm256_storeu_ps(out + n + 8, _mm256_setzero_ps());
}

/* rt_row_scales_ref, vectorized (exact conversions: the same values). */
static void row_scales_256(const rt_job *J, int kind, size_t r, float *ws, float *wb)
{
	size_t g0 = r * J->gpr;
	size_t es = qtk_dtype_size(J->sdt);

	if (J->dq) {
		rt_row_scales_ref(J, r, ws, wb);
		return;
	}
	conv_256(J->sdt, J->scales + g0 * es, J->gpr, kind == RK_L4 && J->path == QTK_RT_INT8, ws);
	if (RK_AFFINE(kind))
		conv_256(J->sdt, J->biases + g0 * es, J->gpr, 0, wb);
}

#define RT_VNNI 0
#define NM(x) x##_256
#include "rt_kern256_body.h"
#undef RT_VNNI
#undef NM
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")
#define RT_VNNI 1
#define NM(x) x##_256v
#include "rt_kern256_body.h"
#undef RT_VNNI
#undef NM
#pragma GCC pop_options

void rt_rows_avx2(const rt_job *J, size_t r0, size_t r1, void *scratch)
{
	if (J->path == QTK_RT_INT8 && J->vnni)
		table_256v[J->kind](J, r0, r1, scratch);
	else
		table_256[J->kind](J, r0, r1, scratch);
}
