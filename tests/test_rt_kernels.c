/* tests: the runtime kernels (qtk_rt_matmul). Every variant (scalar
 * reference, AVX2, AVX2 + AVX-VNNI, AVX-512, AVX-512 + VNNI, + GFNI) gives the
 * reference's bytes for every quantized row of the scheme table x group x
 * scale dtype x odd shape x batch 1, 3, 64, on both activation paths; the float
 * path is within its rounding bound of a double-precision product of the
 * dequantized weights, the integer path within its documented bound of the
 * float path; 1, 2 and 3 threads give the same bytes; column b of a batch
 * is the batch-1 product of vector b. */
#include <dirent.h>
#include <unistd.h>
#include <math.h>
#include <stdlib.h>

#include "qtk_runtime.h"
#include "test.h"

/* ---- quantized test weights ------------------------------------------ */

typedef struct {
	qtk_q_layout L;
	size_t rows, cols;
	void *pl[QTK_PLANE_MAX];
	qtk_rt_tensor t;
	float *wd;   /* dequantized [rows][cols] */
	float *wi;   /* scale * integer-path value (no bias) [rows][cols] */
} qw;

static void qw_free(qw *w)
{
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		free(w->pl[p]);
	free(w->wd);
	free(w->wi);
	memset(w, 0, sizeof *w);
}

/* Weights N(0, 1) with a row-dependent scale, an all-zero group, an
 * outlier per row. */
static void gen_w(float *w, size_t rows, size_t cols, uint64_t seed)
{
	uint64_t s = seed;

	for (size_t r = 0; r < rows; r++)
		for (size_t c = 0; c < cols; c++) {
			float v = t_rand_normal(&s) * (0.02f + 0.01f * (float)(r % 5));
			if (r == 1 && c < 16)
				v = 0.0f;
			if (c == (r * 7) % cols)
				v *= 20.0f;
			w[r * cols + c] = v;
		}
}

static float scale_at(const qtk_q_layout *L, const void *p, size_t i)
{
	uint16_t h;
	float f;

	if (L->scale_dtype == QTK_DT_F32) {
		memcpy(&f, (const uint8_t *)p + 4 * i, 4);
		return f;
	}
	memcpy(&h, (const uint8_t *)p + 2 * i, 2);
	return L->scale_dtype == QTK_DT_F16 ? qtk_f16_to_f32(h) : qtk_bf16_to_f32(h);
}

/* Quantize src into w with layout L (double quant: through the F32-scale
 * layout and qtk_q_double_quant, as convert does). 0 on success. */
static int qw_make(qw *w, const qtk_q_layout *L, size_t rows, size_t cols, const float *src)
{
	const qtk_q_scheme *sc = qtk_q_scheme_get(L->scheme);
	qtk_q_layout Lq = *L;
	uint64_t sz[QTK_PLANE_MAX], szq[QTK_PLANE_MAX];
	size_t gpr = (size_t)qtk_q_groups_per_row(L, cols);
	int dq = (L->flags & QTK_QF_DOUBLE_QUANT) != 0;
	float *absmax = NULL;
	qtk_status st;

	memset(w, 0, sizeof *w);
	w->L = *L;
	w->rows = rows;
	w->cols = cols;
	if (dq) {
		Lq.flags &= ~QTK_QF_DOUBLE_QUANT;
		Lq.scale_dtype = QTK_DT_F32;
	}
	if (qtk_q_plane_sizes(L, rows, cols, sz) || qtk_q_plane_sizes(&Lq, rows, cols, szq))
		return -1;
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		uint64_t n = sz[p] > szq[p] ? sz[p] : szq[p];
		w->pl[p] = n ? calloc(1, n) : NULL;
	}
	qtk_q_planes pl = { { w->pl[0], w->pl[1], w->pl[2], NULL } };
	if (dq) {
		absmax = malloc(rows * gpr * sizeof(float));
		pl.p[QTK_PLANE_SCALES] = absmax;
	}
	if (qtk_q_quantize_rows(&Lq, src, rows, cols, &pl, NULL, &st) != QTK_OK) {
		printf("    quantize: %s\n", st.msg);
		free(absmax);
		return -1;
	}
	if (dq && qtk_q_double_quant(absmax, rows * gpr, w->pl[1], w->pl[3], &st) != QTK_OK) {
		free(absmax);
		return -1;
	}
	if (dq)
		qtk_q_double_dequant(w->pl[1], rows * gpr, w->pl[3], absmax);
	/* dequantized weights and the integer path's weights */
	w->wd = malloc(rows * cols * sizeof(float));
	w->wi = malloc(rows * cols * sizeof(float));
	qtk_q_cplanes cp = { { w->pl[0], dq ? absmax : w->pl[1], w->pl[2], NULL } };
	qtk_q_dequantize_rows(&Lq, &cp, rows, cols, w->wd);
	size_t cb = (size_t)qtk_q_row_bytes(L, cols, QTK_PLANE_CODES);
	size_t gl = L->group == QTK_GROUP_ROW ? cols : L->group;
	for (size_t r = 0; r < rows; r++)
		for (size_t c = 0; c < cols; c++) {
			const uint8_t *row = (const uint8_t *)w->pl[0] + r * cb;
			unsigned code = sc->code_bits == 8 ? row[c] : (row[c / 2] >> (4 * (c & 1))) & 15;
			size_t gi = r * gpr + c / gl;
			float s = dq ? absmax[gi] : scale_at(L, w->pl[1], gi), v;
			switch (sc->mode) {
			case QTK_QMODE_SYM:
				v = sc->code_signed ? (float)(int8_t)code : (float)((int)code - sc->code_offset);
				break;
			case QTK_QMODE_LOOKUP:
				v = rintf(127.0f * sc->levels[code]) / 127.0f;
				break;
			default:
				v = (float)code;
			}
			w->wi[r * cols + c] = s * v;
		}
	free(absmax);
	const void *planes[QTK_PLANE_MAX] = { w->pl[0], w->pl[1], w->pl[2], w->pl[3] };
	if (qtk_rt_tensor_init(&w->t, "w", L, rows, cols, planes, &st) != QTK_OK) {
		printf("    tensor_init: %s\n", st.msg);
		return -1;
	}
	return 0;
}

/* ---- variants ---------------------------------------------------------- */

static const struct {
	qtk_isa isa;
	int vnni, gfni;
	const char *name;
} variants[] = {
	{ QTK_ISA_SCALAR, 0, 0, "scalar" },      { QTK_ISA_AVX2, 0, 0, "avx2" },
	{ QTK_ISA_AVX2, 1, 0, "avx2-vnni" },     { QTK_ISA_AVX512, 0, 0, "avx512" },
	{ QTK_ISA_AVX512, 1, 0, "avx512-vnni" }, { QTK_ISA_AVX512, 1, 1, "avx512-vnni-gfni" },
};
#define NVAR (sizeof variants / sizeof variants[0])

/* Force variant v; 0 if this CPU does not have it. */
static int use_variant(size_t v)
{
	if (qtk_isa_force(variants[v].isa) != variants[v].isa)
		return 0;
	qtk_rt_allow_vnni(variants[v].vnni);
	qtk_rt_allow_gfni(variants[v].gfni);
	return !strcmp(qtk_rt_variant(), variants[v].name);
}

static void gen_x(float *x, size_t n, size_t cols, uint64_t seed)
{
	uint64_t s = seed;

	for (size_t i = 0; i < n; i++) {
		x[i] = t_rand_normal(&s);
		if (i % cols >= 32 && i % cols < 64)
			x[i] = 0.0f; /* an all-zero block */
		if (i % cols == 70)
			x[i] = 50.0f; /* an outlier */
	}
}

static int matmul(qtk_rt_pool *pool, const qw *w, qtk_rt_path path, const float *x,
                  size_t batch, float *y)
{
	qtk_status st;
	qtk_err rc = qtk_rt_matmul(pool, &w->t, path, x, batch, y, &st);

	if (rc)
		printf("    matmul: %s\n", st.msg);
	return rc;
}

/* Every scheme row of the table (with each flag that applies), as layouts. */
static int next_layout(size_t *it, uint32_t group, qtk_dtype sdt, qtk_q_layout *L)
{
	static const uint32_t flags[] = { 0, QTK_QF_DOUBLE_QUANT, QTK_QF_MLX_AFFINE };

	for (; *it < (size_t)QTK_SCHEME_COUNT * 3; (*it)++) {
		const qtk_q_scheme *s = qtk_q_scheme_get((qtk_scheme_id)(*it / 3));
		if (!s->quantized)
			continue;
		memset(L, 0, sizeof *L);
		L->scheme = (qtk_scheme_id)(*it / 3);
		L->group = group;
		L->scale_dtype = sdt;
		L->flags = flags[*it % 3];
		L->dtype = QTK_DT_F32;
		if (qtk_q_layout_check(L, 1, 1, NULL) != QTK_OK)
			continue;
		if ((L->flags & QTK_QF_DOUBLE_QUANT) && sdt != QTK_DT_F16)
			continue; /* the scale dtype plays no part */
		(*it)++;
		return 1;
	}
	return 0;
}

/* ---- every variant == reference ---------------------------------------- */

TEST(rt_kernels_every_variant_matches_reference)
{
	static const uint32_t groups[] = { 16, 32, 64, 128, QTK_GROUP_ROW };
	static const qtk_dtype sdts[] = { QTK_DT_F16, QTK_DT_BF16, QTK_DT_F32 };
	static const size_t shapes[][2] = { { 5, 263 }, { 9, 64 }, { 1, 40 }, { 6, 16 },
	                                    { 3, 1 }, { 7, 97 } };
	static const size_t batches[] = { 1, 3, 64 };
	int compared = 0, cases = 0;
	qtk_isa best = qtk_isa_active();
	int vn = qtk_rt_allow_vnni(1), gf = qtk_rt_allow_gfni(1);

	for (size_t gi = 0; gi < sizeof groups / sizeof *groups; gi++)
	for (size_t si = 0; si < sizeof sdts / sizeof *sdts; si++)
	for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++) {
		size_t rows = shapes[sh][0], cols = shapes[sh][1], it = 0;
		qtk_q_layout L;
		float *src = malloc(rows * cols * sizeof(float));

		gen_w(src, rows, cols, 11 + sh);
		while (next_layout(&it, groups[gi], sdts[si], &L)) {
			qw w;
			REQUIRE(qw_make(&w, &L, rows, cols, src) == 0);
			cases++;
			for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++)
			for (int path = 0; path < 2; path++) {
				size_t B = batches[bi];
				float *x = malloc(B * cols * sizeof(float));
				float *y0 = malloc(B * rows * sizeof(float));
				float *y1 = malloc(B * rows * sizeof(float));
				gen_x(x, B * cols, cols, 5 + bi);
				REQUIRE(use_variant(0));
				REQUIRE(matmul(NULL, &w, (qtk_rt_path)path, x, B, y0) == 0);
				for (size_t v = 1; v < NVAR; v++) {
					if (!use_variant(v))
						continue;
					memset(y1, 0xA5, B * rows * sizeof(float));
					REQUIRE(matmul(NULL, &w, (qtk_rt_path)path, x, B, y1) == 0);
					CHECK_MSG(!memcmp(y0, y1, B * rows * sizeof(float)),
					          "%s %s g%u %s [%zu][%zu] batch %zu %s path: differs from the reference",
					          variants[v].name, qtk_q_scheme_get(L.scheme)->name, L.group,
					          qtk_dtype_name(L.scale_dtype), rows, cols, B,
					          path ? "int8" : "float");
					compared++;
				}
				free(x);
				free(y0);
				free(y1);
			}
			qw_free(&w);
		}
		free(src);
	}
	qtk_isa_force(best);
	qtk_rt_allow_vnni(vn);
	qtk_rt_allow_gfni(gf);
	printf("    %d layouts x shapes, %d variant comparisons\n", cases, compared);
	CHECK(cases > 100);
}

/* ---- error bounds ------------------------------------------------------- */

/* The float path against double sums of the dequantized weights:
 * |y - sum w x| <= (2 * nbp + 5) * 2^-24 * sum |w x| (each lane sums
 * 2 * nbp products by fma, then 4 folding adds). The integer path against
 * the float path: the activation error sum_k d_k / 2 * sum_{j in k}
 * |s_j v_j| (d_k = amax_k / 127, round to nearest), NF4's table error
 * sum |x_j| * |w_j - w'_j|, plus rounding of both. */
TEST(rt_kernels_error_bounds)
{
	static const uint32_t groups[] = { 16, 32, 128, QTK_GROUP_ROW };
	const size_t rows = 23, cols = 1000, B = 3;
	const double u = 0x1p-24;
	float *src = malloc(rows * cols * sizeof(float)), x[3 * 1000];
	float yf[3 * 23], yi[3 * 23];
	double worst_f = 0, worst_i = 0;

	gen_w(src, rows, cols, 99);
	gen_x(x, B * cols, cols, 7);
	for (size_t gi = 0; gi < 4; gi++) {
		size_t it = 0;
		qtk_q_layout L;
		while (next_layout(&it, groups[gi], QTK_DT_F16, &L)) {
			qw w;
			REQUIRE(qw_make(&w, &L, rows, cols, src) == 0);
			REQUIRE(matmul(NULL, &w, QTK_RT_FLOAT, x, B, yf) == 0);
			REQUIRE(matmul(NULL, &w, QTK_RT_INT8, x, B, yi) == 0);
			size_t nbp = (cols + 31) / 32;
			nbp += nbp & 1;
			for (size_t b = 0; b < B; b++)
				for (size_t r = 0; r < rows; r++) {
					const float *xb = x + b * cols, *wd = w.wd + r * cols, *wi = w.wi + r * cols;
					double exact = 0, mag = 0, eact = 0, enf = 0, magi = 0;
					for (size_t c = 0; c < cols; c++) {
						exact += (double)wd[c] * (double)xb[c];
						mag += fabs((double)wd[c] * (double)xb[c]);
						magi += fabs((double)wi[c] * (double)xb[c]);
						if (qtk_q_scheme_get(L.scheme)->mode == QTK_QMODE_LOOKUP)
							enf += fabs((double)xb[c]) * fabs((double)wd[c] - (double)wi[c]);
					}
					/* activation blocks: 32 elements (8-bit codes); the even,
					 * then the odd elements of 64 (4-bit codes) */
					int four = qtk_q_scheme_get(L.scheme)->code_bits == 4;
					for (size_t k = 0; k * 32 < cols + 32; k++) {
						float amax = 0;
						double sw = 0;
						for (size_t t = 0; t < 32; t++) {
							size_t c = four ? (k / 2) * 64 + 2 * t + (k & 1) : k * 32 + t;
							if (c >= cols)
								continue;
							amax = fabsf(xb[c]) > amax ? fabsf(xb[c]) : amax;
							sw += fabs((double)wi[c]);
						}
						eact += (double)(amax / 127.0f) / 2 * sw;
					}
					double bf = (2.0 * (double)nbp + 5) * u * mag;
					double df = fabs((double)yf[b * rows + r] - exact);
					double bi = eact * (1 + 1e-6) + enf + bf +
					            ((double)nbp + 8) * u * 2 * (magi + eact) + 1e-30;
					double di = fabs((double)yi[b * rows + r] - (double)yf[b * rows + r]);
					CHECK_MSG(df <= bf, "%s g%u row %zu: float path off by %g, bound %g",
					          qtk_q_scheme_get(L.scheme)->name, L.group, r, df, bf);
					CHECK_MSG(di <= bi, "%s g%u row %zu: int8 path off by %g, bound %g",
					          qtk_q_scheme_get(L.scheme)->name, L.group, r, di, bi);
					worst_f = df / bf > worst_f ? df / bf : worst_f;
					worst_i = di / bi > worst_i ? di / bi : worst_i;
				}
			qw_free(&w);
		}
	}
	printf("    worst error / bound: float path %.3f, int8 path %.3f\n", worst_f, worst_i);
	free(src);
}

/* ---- threads, batches --------------------------------------------------- */

TEST(rt_kernels_threads_and_batches_give_the_same_bytes)
{
	static const qtk_scheme_id ids[] = { QTK_SCHEME_INT4, QTK_SCHEME_INT8, QTK_SCHEME_NF4,
	                                     QTK_SCHEME_INT4_AFFINE, QTK_SCHEME_INT8_AFFINE };
	const size_t rows = 301, cols = 777, B = 9;
	float *src = malloc(rows * cols * sizeof(float)), *x = malloc(B * cols * sizeof(float));
	float *y[3], *y1 = malloc(rows * sizeof(float));
	qtk_rt_pool *pool[3];
	qtk_status st;

	for (int t = 0; t < 3; t++) {
		y[t] = malloc(B * rows * sizeof(float));
		REQUIRE(qtk_rt_pool_create((unsigned)t + 1, &pool[t], &st) == QTK_OK);
		CHECK_EQ(qtk_rt_pool_threads(pool[t]), t + 1);
	}
	gen_w(src, rows, cols, 3);
	gen_x(x, B * cols, cols, 4);
	for (size_t i = 0; i < sizeof ids / sizeof *ids; i++)
		for (int path = 0; path < 2; path++) {
			qtk_q_layout L = { ids[i], 32, QTK_DT_F16, 0, QTK_DT_F32 };
			qw w;
			REQUIRE(qw_make(&w, &L, rows, cols, src) == 0);
			for (int t = 0; t < 3; t++)
				REQUIRE(matmul(pool[t], &w, (qtk_rt_path)path, x, B, y[t]) == 0);
			CHECK(!memcmp(y[0], y[1], B * rows * sizeof(float)));
			CHECK(!memcmp(y[0], y[2], B * rows * sizeof(float)));
			for (size_t b = 0; b < B; b++) {
				REQUIRE(matmul(pool[1], &w, (qtk_rt_path)path, x + b * cols, 1, y1) == 0);
				CHECK_MSG(!memcmp(y1, y[0] + b * rows, rows * sizeof(float)),
				          "%s %s path: column %zu of the batch differs from its GEMV",
				          qtk_q_scheme_get(ids[i])->name, path ? "int8" : "float", b);
			}
			qw_free(&w);
		}
	for (int t = 0; t < 3; t++) {
		qtk_rt_pool_free(pool[t]);
		free(y[t]);
	}
	free(src);
	free(x);
	free(y1);
}

/* A batch of 64 on the best ISA, and pools used back to back. */
TEST(rt_kernels_batch_64)
{
	const size_t rows = 70, cols = 300, B = 64;
	float *src = malloc(rows * cols * sizeof(float)), *x = malloc(B * cols * sizeof(float));
	float *y = malloc(B * rows * sizeof(float)), *y1 = malloc(rows * sizeof(float));
	qtk_rt_pool *pool;
	qtk_status st;
	qtk_q_layout L = { QTK_SCHEME_NF4, 64, QTK_DT_BF16, 0, QTK_DT_F32 };
	qw w;

	REQUIRE(qtk_rt_pool_create(2, &pool, &st) == QTK_OK);
	gen_w(src, rows, cols, 8);
	gen_x(x, B * cols, cols, 9);
	REQUIRE(qw_make(&w, &L, rows, cols, src) == 0);
	for (int path = 0; path < 2; path++) {
		REQUIRE(matmul(pool, &w, (qtk_rt_path)path, x, B, y) == 0);
		for (size_t b = 0; b < B; b++) {
			REQUIRE(matmul(pool, &w, (qtk_rt_path)path, x + b * cols, 1, y1) == 0);
			CHECK(!memcmp(y1, y + b * rows, rows * sizeof(float)));
		}
	}
	qw_free(&w);
	qtk_rt_pool_free(pool);
	free(src);
	free(x);
	free(y);
	free(y1);
}

/* One row as f32 (embedding lookups): the dequantized values, every layout. */
TEST(rt_kernels_row_f32_is_the_dequantized_row)
{
	static const uint32_t groups[] = { 16, 64, QTK_GROUP_ROW };
	const size_t rows = 5, cols = 97;
	float src[5 * 97], row[97];
	qtk_status st;
	int n = 0;

	gen_w(src, rows, cols, 21);
	for (size_t gi = 0; gi < 3; gi++) {
		size_t it = 0;
		qtk_q_layout L;
		while (next_layout(&it, groups[gi], gi ? QTK_DT_BF16 : QTK_DT_F16, &L)) {
			qw w;
			REQUIRE(qw_make(&w, &L, rows, cols, src) == 0);
			for (size_t r = 0; r < rows; r++) {
				REQUIRE(qtk_rt_row_f32(&w.t, r, row, &st) == QTK_OK);
				CHECK_MSG(!memcmp(row, w.wd + r * cols, sizeof row), "%s g%u row %zu",
				          qtk_q_scheme_get(L.scheme)->name, L.group, r);
			}
			CHECK_EQ(qtk_rt_row_f32(&w.t, rows, row, &st), QTK_E_ARG);
			qw_free(&w);
			n++;
		}
	}
	CHECK(n >= 15);
	/* float storage: widened */
	uint16_t h[4] = { 0x3c00, 0xc000, 0x0001, 0x7bff };
	qtk_q_layout F = { (qtk_scheme_id)qtk_q_scheme_from_name("f16"), 0, QTK_DT_F16, 0, QTK_DT_F16 };
	const void *pl[QTK_PLANE_MAX] = { h, NULL, NULL, NULL };
	qtk_rt_tensor t;
	REQUIRE(qtk_rt_tensor_init(&t, "e", &F, 2, 2, pl, &st) == QTK_OK);
	REQUIRE(qtk_rt_row_f32(&t, 1, row, &st) == QTK_OK);
	CHECK(row[0] == qtk_f16_to_f32(0x0001) && row[1] == 65504.0f);
}

/* ---- inputs that are not ordinary --------------------------------------- */

TEST(rt_kernels_nonfinite_input_gives_nan)
{
	const size_t rows = 4, cols = 64;
	float src[4 * 64], x[64], y[4];
	qtk_q_layout L = { QTK_SCHEME_INT4, 32, QTK_DT_F16, 0, QTK_DT_F32 };
	qw w;

	gen_w(src, rows, cols, 1);
	REQUIRE(qw_make(&w, &L, rows, cols, src) == 0);
	gen_x(x, cols, cols, 1);
	x[5] = NAN;
	for (int path = 0; path < 2; path++) {
		REQUIRE(matmul(NULL, &w, (qtk_rt_path)path, x, 1, y) == 0);
		for (size_t r = 0; r < rows; r++)
			CHECK(isnan(y[r]));
	}
	x[5] = INFINITY;
	REQUIRE(matmul(NULL, &w, QTK_RT_INT8, x, 1, y) == 0);
	CHECK(isnan(y[0]));
	/* a vanishingly small block counts as zero */
	memset(x, 0, sizeof x);
	x[3] = 1e-44f;
	REQUIRE(matmul(NULL, &w, QTK_RT_INT8, x, 1, y) == 0);
	CHECK(y[0] == 0.0f);
	qw_free(&w);
}

TEST(rt_kernels_bad_arguments)
{
	float src[8 * 64], x[64], y[8];
	qtk_q_layout L = { QTK_SCHEME_INT8, 32, QTK_DT_F16, 0, QTK_DT_F32 };
	qtk_rt_tensor t;
	qtk_status st;
	qw w;

	gen_w(src, 8, 64, 1);
	gen_x(x, 64, 64, 1);
	REQUIRE(qw_make(&w, &L, 8, 64, src) == 0);
	CHECK_EQ(qtk_rt_matmul(NULL, &w.t, QTK_RT_INT8, x, 0, y, &st), QTK_E_ARG);
	CHECK_EQ(qtk_rt_matmul(NULL, &w.t, QTK_RT_INT8, NULL, 1, y, &st), QTK_E_ARG);
	CHECK_EQ(qtk_rt_matmul(NULL, &w.t, (qtk_rt_path)7, x, 1, y, &st), QTK_E_ARG);
	t = w.t;
	t.planes[QTK_PLANE_SCALES].size--;
	CHECK_EQ(qtk_rt_matmul(NULL, &t, QTK_RT_INT8, x, 1, y, &st), QTK_E_ARG);
	CHECK(strstr(st.msg, "plane 1") != NULL);
	t = w.t;
	t.planes[QTK_PLANE_CODES].data = NULL;
	CHECK_EQ(qtk_rt_matmul(NULL, &t, QTK_RT_INT8, x, 1, y, &st), QTK_E_ARG);
	t = w.t;
	t.layout.group = 24;
	CHECK_EQ(qtk_rt_matmul(NULL, &t, QTK_RT_INT8, x, 1, y, &st), QTK_E_ARG);
	/* raw integer storage: no kernel */
	qtk_q_layout R = { QTK_SCHEME_RAW, 0, QTK_DT_F16, 0, QTK_DT_I32 };
	const void *pl[QTK_PLANE_MAX] = { src, NULL, NULL, NULL };
	REQUIRE(qtk_rt_tensor_init(&t, "ints", &R, 8, 64, pl, &st) == QTK_OK);
	CHECK_EQ(qtk_rt_matmul(NULL, &t, QTK_RT_INT8, x, 1, y, &st), QTK_E_UNSUPPORTED);
	CHECK(strstr(st.msg, "'ints'") != NULL);
	CHECK(!qtk_rt_supported(&R));
	pl[0] = NULL;
	CHECK_EQ(qtk_rt_tensor_init(&t, "w", &L, 8, 64, pl, &st), QTK_E_ARG);
	qw_free(&w);
}

/* Every allocation of a product (pool, threads' scratch, activations)
 * failing in turn: QTK_E_NOMEM (or a pool that cannot start), nothing
 * leaked (make check), and the product right once the sweep is past. */
TEST(rt_kernels_allocation_faults)
{
	const size_t rows = 40, cols = 100, B = 3;
	float src[40 * 100], x[3 * 100], y0[3 * 40], y[3 * 40];
	qtk_q_layout L = { QTK_SCHEME_NF4, 32, QTK_DT_F16, QTK_QF_DOUBLE_QUANT, QTK_DT_F32 };
	qtk_status st;
	qw w;
	int done = 0;

	gen_w(src, rows, cols, 2);
	gen_x(x, B * cols, cols, 3);
	REQUIRE(qw_make(&w, &L, rows, cols, src) == 0);
	REQUIRE(matmul(NULL, &w, QTK_RT_INT8, x, B, y0) == 0);
	for (int path = 0; path < 2; path++)
		for (uint64_t nth = 1; nth < 1000; nth++) {
			qtk_rt_pool *pool = NULL;
			qtk_err rc;

			qtk_fault_arm(QTK_FAULT_ALLOC, nth, 0);
			rc = qtk_rt_pool_create(2, &pool, &st);
			if (!rc) {
				rc = qtk_rt_matmul(pool, &w.t, (qtk_rt_path)path, x, B, y, &st);
				qtk_rt_pool_free(pool);
			} else {
				CHECK(pool == NULL);
			}
			if (!qtk_fault_fired(QTK_FAULT_ALLOC)) {
				qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
				CHECK_MSG(rc == QTK_OK, "n %llu: %s", (unsigned long long)nth, st.msg);
				if (path == 1)
					CHECK(!memcmp(y, y0, sizeof y));
				done++;
				break;
			}
			qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
			CHECK_MSG(rc == QTK_E_NOMEM, "n %llu: %s", (unsigned long long)nth,
			          qtk_err_name(rc));
		}
	CHECK_EQ(done, 2);
	qw_free(&w);
}

/* ---- the scheme table ---------------------------------------------------- */

/* A new quantized row of quant's table without a kernel fails here. */
TEST(rt_kernels_every_scheme_row_has_a_kernel)
{
	for (int id = 0; id < QTK_SCHEME_COUNT; id++) {
		const qtk_q_scheme *s = qtk_q_scheme_get((qtk_scheme_id)id);
		qtk_q_layout L = { (qtk_scheme_id)id, s->quantized ? 32 : 0, QTK_DT_F16, 0,
		                   QTK_DT_F32 };
		CHECK_MSG(qtk_rt_supported(&L), "scheme '%s' has no runtime kernel", s->name);
		if (s->quantized)
			CHECK_MSG(s->mode >= QTK_QMODE_SYM && (s->mode == QTK_QMODE_AFFINE) == s->has_bias,
			          "scheme '%s': mode and bias plane disagree", s->name);
	}
}

/* Kernels (and GGUF block types) are matched to schemes by table columns:
 * runtime/ never names a scheme id. */
TEST(rt_kernels_runtime_names_no_scheme)
{
	DIR *d = opendir("runtime");
	struct dirent *e;
	int files = 0;

	REQUIRE(d != NULL);
	while ((e = readdir(d))) {
		char path[512];
		size_t n;
		char *text;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "runtime/%s", e->d_name);
		text = t_read_file(path, &n);
		REQUIRE(text != NULL);
		text = realloc(text, n + 1);
		text[n] = 0;
		/* QTK_SCHEME_COUNT (the table's size) is not a scheme */
		for (const char *h = text; (h = strstr(h, "QTK_SCHEME_")); h++)
			CHECK_MSG(!strncmp(h, "QTK_SCHEME_COUNT", 16), "%s names a QTK_SCHEME_ id: %.24s",
			          path, h);
		free(text);
		files++;
	}
	closedir(d);
	CHECK(files >= 5);
}

/* ---- float storage through OpenBLAS --------------------------------------- */

TEST(rt_kernels_float_weights_through_blas)
{
	static const qtk_dtype dts[] = { QTK_DT_F32, QTK_DT_F16, QTK_DT_BF16 };
	const size_t rows = 77, cols = 130, B = 5;
	float *src = malloc(rows * cols * sizeof(float)), *wf = malloc(rows * cols * sizeof(float));
	float x[5 * 130], y[3][5 * 77];
	void *buf = malloc(rows * cols * 4);
	qtk_rt_pool *pool[3];
	qtk_status st;

	gen_w(src, rows, cols, 5);
	gen_x(x, B * cols, cols, 6);
	for (int t = 0; t < 3; t++)
		REQUIRE(qtk_rt_pool_create((unsigned)t + 1, &pool[t], &st) == QTK_OK);
	for (size_t i = 0; i < 3; i++) {
		int id = qtk_q_scheme_from_name(dts[i] == QTK_DT_F32 ? "f32"
		                                : dts[i] == QTK_DT_F16 ? "f16" : "bf16");
		qtk_q_layout L = { (qtk_scheme_id)id, 0, QTK_DT_F16, 0, QTK_DT_F32 };
		const void *pl[QTK_PLANE_MAX] = { buf, NULL, NULL, NULL };
		qtk_rt_tensor t;
		REQUIRE(qtk_from_f32(dts[i], src, buf, rows * cols) == QTK_OK);
		REQUIRE(qtk_to_f32(dts[i], buf, wf, rows * cols) == QTK_OK);
		REQUIRE(qtk_rt_tensor_init(&t, "f", &L, rows, cols, pl, &st) == QTK_OK);
		for (size_t b = 1; b <= B; b += B - 1) {
			for (int th = 0; th < 3; th++)
				REQUIRE(qtk_rt_matmul(pool[th], &t, QTK_RT_INT8, x, b, y[th], &st) == QTK_OK);
			CHECK(!memcmp(y[0], y[1], b * rows * sizeof(float)));
			CHECK(!memcmp(y[0], y[2], b * rows * sizeof(float)));
			for (size_t v = 0; v < b; v++)
				for (size_t r = 0; r < rows; r++) {
					double e = 0, m = 0;
					for (size_t c = 0; c < cols; c++) {
						e += (double)wf[r * cols + c] * (double)x[v * cols + c];
						m += fabs((double)wf[r * cols + c] * (double)x[v * cols + c]);
					}
					CHECK(fabs((double)y[0][v * rows + r] - e) <= (double)cols * 0x1p-24 * m + 1e-30);
				}
		}
	}
	for (int t = 0; t < 3; t++)
		qtk_rt_pool_free(pool[t]);
	free(src);
	free(wf);
	free(buf);
}

/* The pool runs ranges that cover [0, n) once, on the threads it has. */
static void count_range(void *ctx, size_t b, size_t e, unsigned t)
{
	int *hits = ctx;

	(void)t;
	for (size_t i = b; i < e; i++)
		__atomic_add_fetch(&hits[i], 1, __ATOMIC_RELAXED);
}

TEST(rt_pool_covers_every_index_once)
{
	qtk_rt_pool *p;
	qtk_status st;
	int hits[1000];

	REQUIRE(qtk_rt_pool_create(3, &p, &st) == QTK_OK);
	for (int round = 0; round < 200; round++) {
		size_t n = (size_t)(round * 7) % 1000;
		memset(hits, 0, sizeof hits);
		qtk_rt_pool_run(p, n, count_range, hits);
		for (size_t i = 0; i < n; i++)
			CHECK(hits[i] == 1);
		if (round % 50 == 0)
			usleep(200000); /* let the workers fall asleep */
	}
	/* gaps around the workers' polling time (1 ms): jobs arrive while
	 * they go to sleep; a lost wake-up hangs here */
	for (int round = 0; round < 300; round++) {
		size_t n = 3 + (size_t)round % 17;
		memset(hits, 0, sizeof hits);
		usleep(700 + (useconds_t)(round * 37) % 700);
		qtk_rt_pool_run(p, n, count_range, hits);
		for (size_t i = 0; i < n; i++)
			CHECK(hits[i] == 1);
	}
	qtk_rt_pool_free(p);
	qtk_rt_pool_free(NULL);
}
