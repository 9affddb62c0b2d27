/* tests: the error accumulators give the same sums at every ISA (AVX2 and
 * AVX-512 lanes against the scalar loop, bit for bit), for every length
 * around the 8-lane boundary and for long runs. */
#include <stdlib.h>

#include "qtk_quant.h"
#include "test.h"

static int same(const qtk_q_acc *a, const qtk_q_acc *b)
{
	return !memcmp(&a->sse, &b->sse, sizeof a->sse) && !memcmp(&a->ssw, &b->ssw, sizeof a->ssw) &&
	       !memcmp(&a->sshat, &b->sshat, sizeof a->sshat) &&
	       !memcmp(&a->dot, &b->dot, sizeof a->dot) &&
	       !memcmp(&a->max_abs, &b->max_abs, sizeof a->max_abs) && a->n == b->n;
}

TEST(quant_acc_simd_equals_scalar)
{
	enum { N = 100003 };
	static const qtk_isa isas[] = { QTK_ISA_AVX2, QTK_ISA_AVX512 };
	float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
	uint32_t s = 12345;
	int tested = 0;
	qtk_isa isa0 = qtk_isa_active();

	REQUIRE(x && y);
	for (size_t i = 0; i < N; i++) {
		s = s * 1664525u + 1013904223u;
		x[i] = (float)((int32_t)s) * 1e-9f;
		s = s * 1664525u + 1013904223u;
		y[i] = x[i] + (float)((int32_t)s) * 1e-12f;
	}
	x[77] = 3.0e4f; /* one outlier for max_abs */
	for (size_t k = 0; k < 2; k++) {
		if (!qtk_isa_supported(isas[k])) {
			printf("    %s not available here: skipped\n", qtk_isa_name(isas[k]));
			continue;
		}
		tested++;
		for (size_t n = 0; n < 200; n++) {
			qtk_q_acc a = { 0 }, b = { 0 };
			qtk_isa_force(QTK_ISA_SCALAR);
			qtk_q_acc_add(&a, x + 3, y + 3, n);
			qtk_q_acc_add(&a, x + 70, y + 70, n + 9);
			qtk_isa_force(isas[k]);
			qtk_q_acc_add(&b, x + 3, y + 3, n);
			qtk_q_acc_add(&b, x + 70, y + 70, n + 9);
			CHECK_MSG(same(&a, &b), "%s: n = %zu differs", qtk_isa_name(isas[k]), n);
		}
		{
			qtk_q_acc a = { 0 }, b = { 0 };
			qtk_isa_force(QTK_ISA_SCALAR);
			qtk_q_acc_add(&a, x, y, N);
			qtk_isa_force(isas[k]);
			qtk_q_acc_add(&b, x, y, N);
			CHECK_MSG(same(&a, &b), "%s: long run differs", qtk_isa_name(isas[k]));
			CHECK(b.max_abs > 2.9e4 && b.n == N);
		}
	}
	qtk_isa_force(isa0);
	free(x);
	free(y);
	if (!tested)
		SKIP("no AVX2 on this CPU");
}
