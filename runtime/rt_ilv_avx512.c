/* runtime: AVX-512 kernels on interleaved weights. One body
 * (rt_ilv512_body.h) compiled with maddubs and with AVX-512 VNNI dpbusd;
 * both give rt_ilv.c's reference bytes. */
#include <string.h>

#include <immintrin.h>

#include "rt_private.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")
#define RT_VNNI 0
#define NM(x) ilv512_##x
#include "rt_ilv512_body.h"
#undef RT_VNNI
#undef NM
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c,avx512vnni")
#define RT_VNNI 1
#define NM(x) ilv512v_##x
#include "rt_ilv512_body.h"
#undef RT_VNNI
#undef NM
#pragma GCC pop_options

void rt_ilv_avx512(const rt_ijob *J, size_t g0, size_t g1)
{
	if (J->vnni)
		ilv512v_dispatch(J, g0, g1);
	else
		ilv512_dispatch(J, g0, g1);
}
