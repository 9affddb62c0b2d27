/* runtime: AVX-512 kernels. One body (rt_kern512_body.h) compiled three
 * times: AVX-512 F/BW/DQ/VL with maddubs, with AVX-512 VNNI dpbusd, and
 * with VNNI and GFNI (4-bit codes unpacked by one gf2p8affineqb); all give
 * the scalar reference's bytes (rt_kern_ref.c). */
#include <string.h>

#include <immintrin.h>

#include "rt_private.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")

/* n scales of dtype dt from p as f32 into out (then 16 zeros); div: / 127. */
static inline __attribute__((always_inline)) void
conv_512(qtk_dtype dt, const uint8_t *p, size_t n, int div, float *out)
{
	for (size_t g = 0; g < n; g += 16) {
		size_t m = n - g < 16 ? n - g : 16;
		__mmask16 k = m == 16 ? 0xffff : (__mmask16)((1u << m) - 1);
		__m512 v;

		if (dt == QTK_DT_F32)
			v = _mm512_maskz_loadu_ps(k, p + 4 * g);
		else if (dt == QTK_DT_F16)
			v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p + 2 * g));
		else
			v = _mm512_castsi512_ps(_mm512_slli_epi32(
				_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p + 2 * g)), 16));
		if (div)
			v = _mm512_div_ps(v, _mm512_set1_ps(127.0f));
		_mm512_storeu_ps(out + g, v);
	}
	_mm512_storeu_ps(out + n, _mm512_setzero_ps());
}

/* rt_row_scales_ref, vectorized (exact conversions: the same values). */
static void row_scales_512(const rt_job *J, int kind, size_t r, float *ws, float *wb)
{
	size_t g0 = r * J->gpr;
	size_t es = qtk_dtype_size(J->sdt);

	if (J->dq) {
		rt_row_scales_ref(J, r, ws, wb);
		return;
	}
	conv_512(J->sdt, J->scales + g0 * es, J->gpr, kind == RK_L4 && J->path == QTK_RT_INT8, ws);
	if (RK_AFFINE(kind))
		conv_512(J->sdt, J->biases + g0 * es, J->gpr, 0, wb);
}

#define RT_VNNI 0
#define RT_GFNI 0
#define NM(x) x##_512
#include "rt_kern512_body.h"
#undef RT_VNNI
#undef RT_GFNI
#undef NM
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c,avx512vnni")
#define RT_VNNI 1
#define RT_GFNI 0
#define NM(x) x##_512v
#include "rt_kern512_body.h"
#undef RT_VNNI
#undef RT_GFNI
#undef NM
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c,avx512vnni,gfni")
#define RT_VNNI 1
#define RT_GFNI 1
#define NM(x) x##_512g
#include "rt_kern512_body.h"
#undef RT_VNNI
#undef RT_GFNI
#undef NM
#pragma GCC pop_options

void rt_rows_avx512(const rt_job *J, size_t r0, size_t r1, void *scratch)
{
	if (J->path == QTK_RT_INT8 && J->gfni)
		table_512g[J->kind](J, r0, r1, scratch);
	else if (J->path == QTK_RT_INT8 && J->vnni)
		table_512v[J->kind](J, r0, r1, scratch);
	else
		table_512[J->kind](J, r0, r1, scratch);
}
