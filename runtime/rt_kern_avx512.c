/* runtime: AVX-512 kernels (placeholder: the scalar reference). */
#include "rt_private.h"

void rt_rows_avx512(const rt_job *J, size_t r0, size_t r1, void *scratch)
{
	rt_rows_scalar(J, r0, r1, scratch);
}
