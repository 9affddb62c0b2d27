/* tests: the fused row kernels (AVX2 and AVX-512, each ISA the CPU has;
 * INT8, INT4, NF4 with f16 scales and whole groups; round-to-nearest and
 * the data-free search, with and without importance) give the bytes of
 * the group-by-group scalar reference, including rows they hand back
 * midway (a zero, tiny, tied, non-finite or f16-overflowing group after
 * ordinary ones), and their error sums equal dequantize + qtk_q_acc_add
 * row by row; on long rows and on rows shorter than a block. */
#include <math.h>
#include <stdlib.h>

#include "qtk_quant.h"
#include "test.h"

/* C: 17 groups of 128, 136 of 16, so every group size has runs of 8 and
 * 16 groups (the AVX2 and AVX-512 blocks) and, but for g16 on AVX2, a
 * tail after them. */
enum { R = 14, C = 2176 };

static uint32_t seed = 99;
static float urand(void)
{
	seed = seed * 1664525u + 1013904223u;
	return (float)(seed >> 8) / 8388608.0f - 1.0f;
}

/* Row r: ordinary values, with row-specific trouble from column 1200 on
 * (rows 3-9) or in one place (rows 10-13). */
static void fill(float *x)
{
	for (int r = 0; r < R; r++)
		for (int i = 0; i < C; i++) {
			float *v = &x[r * C + i];
			*v = urand() * (r % 3 == 0 ? 0.02f : r % 3 == 1 ? 3.0f : 700.0f);
			switch (r) {
			case 10: /* one min/max tie (+5 first) in the first block */
				*v = i == 40 ? 5.0f : i == 43 ? -5.0f : *v;
				continue;
			case 11: /* one zero group in the first block at every size */
				*v = i >= 128 && i < 256 ? 0.0f : *v;
				continue;
			case 12: /* NaN in a block: an error */
				*v = i == 1000 ? NAN : *v;
				continue;
			case 13: /* Inf in the first group */
				*v = i == 5 ? -INFINITY : *v;
				continue;
			default: break;
			}
			if (i < 1200)
				continue;
			switch (r) {
			case 3: *v = 0.0f; break;                             /* zero groups */
			case 4: *v = urand() * 1e-39f; break;                 /* subnormal only */
			case 5: *v = urand() * 1e-30f; break;                 /* tiny, normal */
			case 6: *v = (i % 2 ? 0.5f : -0.5f); break;           /* min/max tie */
			case 7: *v = i % 16 == 3 ? -2.0f : i % 16 == 9 ? 2.0f : 0.1f; break;
			case 8: *v = urand() * 2.0e5f; break;                 /* scale > f16 for int4 */
			case 9: *v = (float)((int)(urand() * 127.0f)) + 0.5f; break; /* .5 ties */
			default: break;
			}
		}
}

/* One ISA's fused rows against the scalar group path (see the head): the
 * first cols of each row of x (cols % 128 == 0 or cols < 128 leave each
 * group size some whole rows). */
static int fused_vs_scalar(qtk_isa isa, const float *x, const float *imp, size_t cols)
{
	static const qtk_scheme_id sch[] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4, QTK_SCHEME_NF4 };
	static const uint32_t groups[] = { 16, 32, 64, 128 };
	static uint8_t c0[R * C], c1[R * C], s0[R * C], s1[R * C];
	int compared = 0;

	for (int mode = 0; mode < 3; mode++) /* RTN, search, search + importance */
	for (size_t k = 0; k < 3; k++)
		for (size_t g = 0; g < 4; g++) {
			qtk_q_layout L = { .scheme = sch[k], .group = groups[g],
			                   .scale_dtype = QTK_DT_F16, .dtype = QTK_DT_F32 };
			qtk_q_planes p0 = { { c0, s0, NULL, NULL } }, p1 = { { c1, s1, NULL, NULL } };
			qtk_q_opts o = { .tensor = "w", .search = mode > 0,
			                 .importance = mode == 2 ? imp : NULL };
			qtk_status st0, st1;
			qtk_q_acc a0 = { 0 }, a1 = { 0 }, ar = { 0 };
			uint64_t sz[QTK_PLANE_MAX];
			int rc0, rc1;

			/* one row at a time, so a failing row does not hide the others */
			for (int r = 0; r < R; r++) {
				qtk_q_planes q0 = p0, q1 = p1;
				size_t cb = (size_t)qtk_q_row_bytes(&L, cols, QTK_PLANE_CODES);
				size_t sb = (size_t)qtk_q_row_bytes(&L, cols, QTK_PLANE_SCALES);
				q0.p[0] = c0 + r * cb;
				q0.p[1] = s0 + r * sb;
				q1.p[0] = c1 + r * cb;
				q1.p[1] = s1 + r * sb;
				o.row0 = (uint64_t)r;
				qtk_isa_force(QTK_ISA_SCALAR);
				rc0 = qtk_q_quantize_rows_acc(&L, x + r * C, 1, cols, &q0, &o, &a0, &st0);
				qtk_isa_force(isa);
				rc1 = qtk_q_quantize_rows_acc(&L, x + r * C, 1, cols, &q1, &o, &a1, &st1);
				CHECK_EQ(rc0, rc1);
				if (!rc0) {
					/* the reference: dequantize the row, qtk_q_acc_add */
					static float y[C];
					qtk_q_cplanes cp = { { q0.p[0], q0.p[1], NULL, NULL } };
					qtk_isa_force(QTK_ISA_SCALAR);
					qtk_q_dequantize_rows(&L, &cp, 1, cols, y);
					qtk_q_acc_add(&ar, x + r * C, y, cols);
				}
				if (rc0 || rc1) {
					CHECK_STR(st0.msg, st1.msg);
					memset(c0 + r * cb, 0, cb);
					memset(c1 + r * cb, 0, cb);
					memset(s0 + r * sb, 0, sb);
					memset(s1 + r * sb, 0, sb);
				}
			}
			if (groups[g] > cols || cols % groups[g])
				continue;
			if (qtk_q_plane_sizes(&L, R, cols, sz) != QTK_OK) {
				CHECK(!"plane sizes");
				return compared;
			}
			CHECK_MSG(!memcmp(c0, c1, sz[0]) && !memcmp(s0, s1, sz[1]),
			          "%s: %s g%u cols %zu mode %d differs", qtk_isa_name(isa),
			          qtk_q_scheme_get(sch[k])->name, groups[g], cols, mode);
			/* the error sums: fused = group path (scalar) = dequantize +
			 * qtk_q_acc_add, bit for bit */
			CHECK_MSG(!memcmp(&a0, &a1, sizeof a0) && !memcmp(&a0, &ar, sizeof a0),
			          "%s: %s g%u cols %zu mode %d: sums differ (sse %.17g %.17g %.17g)",
			          qtk_isa_name(isa), qtk_q_scheme_get(sch[k])->name, groups[g], cols,
			          mode, a0.sse, a1.sse, ar.sse);
			CHECK(a0.n > 0 && a0.sse > 0);
			compared++;
		}
	return compared;
}

TEST(quant_fused_rows_equal_group_path)
{
	static float x[R * C], imp[C];
	qtk_isa isa0 = qtk_isa_active();
	int isas = 0;

	fill(x);
	for (int i = 0; i < C; i++)
		imp[i] = 0.25f + (float)(i % 7);
	for (int isa = QTK_ISA_AVX2; isa <= QTK_ISA_AVX512; isa++) {
		if (!qtk_isa_supported((qtk_isa)isa)) {
			printf("    %s not available here: skipped\n", qtk_isa_name((qtk_isa)isa));
			continue;
		}
		CHECK_EQ(fused_vs_scalar((qtk_isa)isa, x, imp, C), 36);
		/* short rows: fewer groups than a block (8 on AVX2, 16 on
		 * AVX-512), a block and one group, a block and a half, ... */
		CHECK_EQ(fused_vs_scalar((qtk_isa)isa, x, imp, 48), 9);
		CHECK_EQ(fused_vs_scalar((qtk_isa)isa, x, imp, 96), 18);
		CHECK_EQ(fused_vs_scalar((qtk_isa)isa, x, imp, 144), 9);
		CHECK_EQ(fused_vs_scalar((qtk_isa)isa, x, imp, 288), 18);
		CHECK_EQ(fused_vs_scalar((qtk_isa)isa, x, imp, 384), 36);
		isas++;
	}
	qtk_isa_force(isa0);
	if (!isas)
		SKIP("no AVX2 on this CPU: no fused kernel runs");
}
