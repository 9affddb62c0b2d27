/* tests: the integer path on row-interleaved weights (qtk_rt_interleave,
 * docs/kernels.md "Interleaved weights"). The scalar reference gives the
 * definition's bytes, computed here from the planes on their own; every
 * variant, thread count and batch column gives the reference's bytes;
 * layouts without a copy are left alone; the result is near the float
 * path. */
#include <math.h>
#include <stdlib.h>

#include "qtk_runtime.h"
#include "rt_private.h"
#include "test.h"

typedef struct {
	qtk_q_layout L;
	size_t rows, cols;
	void *pl[QTK_PLANE_MAX];
	float *ws;  /* [rows][gpr] the integer path's f32 scales */
	qtk_rt_tensor t;
} iw;

static void iw_free(iw *w)
{
	qtk_rt_uninterleave(&w->t);
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		free(w->pl[p]);
	free(w->ws);
	memset(w, 0, sizeof *w);
}

static float scale_at(qtk_dtype dt, const void *p, size_t i)
{
	uint16_t h;
	float f;

	if (dt == QTK_DT_F32) {
		memcpy(&f, (const uint8_t *)p + 4 * i, 4);
		return f;
	}
	memcpy(&h, (const uint8_t *)p + 2 * i, 2);
	return dt == QTK_DT_F16 ? qtk_f16_to_f32(h) : qtk_bf16_to_f32(h);
}

/* Quantize N(0, s) weights (an outlier per row) with layout L; double
 * quant through F32 scales and qtk_q_double_quant, as convert does. */
static int iw_make(iw *w, const qtk_q_layout *L, size_t rows, size_t cols, uint64_t seed)
{
	const qtk_q_scheme *sc = qtk_q_scheme_get(L->scheme);
	int dq = (L->flags & QTK_QF_DOUBLE_QUANT) != 0;
	qtk_q_layout Lq = *L;
	uint64_t sz[QTK_PLANE_MAX], szq[QTK_PLANE_MAX], s = seed;
	size_t gpr = (size_t)qtk_q_groups_per_row(L, cols);
	float *src = malloc(rows * cols * sizeof(float)), *absmax = malloc(rows * gpr * 4 + 4);
	qtk_status st;
	int rc = -1;

	memset(w, 0, sizeof *w);
	w->L = *L;
	w->rows = rows;
	w->cols = cols;
	w->ws = malloc(rows * gpr * sizeof(float));
	for (size_t i = 0; i < rows * cols; i++)
		src[i] = t_rand_normal(&s) * (0.02f + 0.01f * (float)(i / cols % 5)) *
		         (i % cols == (i / cols * 7) % cols ? 20.0f : 1.0f);
	if (dq) {
		Lq.flags &= ~QTK_QF_DOUBLE_QUANT;
		Lq.scale_dtype = QTK_DT_F32;
	}
	if (qtk_q_plane_sizes(L, rows, cols, sz) || qtk_q_plane_sizes(&Lq, rows, cols, szq))
		goto out;
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		uint64_t n = sz[p] > szq[p] ? sz[p] : szq[p];
		w->pl[p] = n ? calloc(1, n) : NULL;
	}
	qtk_q_planes pl = { { w->pl[0], dq ? absmax : w->pl[1], w->pl[2], NULL } };
	if (qtk_q_quantize_rows(&Lq, src, rows, cols, &pl, NULL, &st) != QTK_OK)
		goto out;
	if (dq) {
		if (qtk_q_double_quant(absmax, rows * gpr, w->pl[1], w->pl[3], &st) != QTK_OK)
			goto out;
		qtk_q_double_dequant(w->pl[1], rows * gpr, w->pl[3], absmax);
	}
	for (size_t i = 0; i < rows * gpr; i++) {
		w->ws[i] = dq ? absmax[i] : scale_at(L->scale_dtype, w->pl[1], i);
		if (sc->mode == QTK_QMODE_LOOKUP)
			w->ws[i] = w->ws[i] / 127.0f;
	}
	const void *planes[QTK_PLANE_MAX] = { w->pl[0], w->pl[1], w->pl[2], w->pl[3] };
	if (qtk_rt_tensor_init(&w->t, "w", L, rows, cols, planes, &st) == QTK_OK)
		rc = 0;
out:
	if (rc)
		printf("    make: %s\n", st.msg);
	free(src);
	free(absmax);
	return rc;
}

/* The integer value of element c of row r. */
static int ival(const iw *w, size_t r, size_t c)
{
	const qtk_q_scheme *sc = qtk_q_scheme_get(w->L.scheme);
	const uint8_t *row = (const uint8_t *)w->pl[0] +
	                     r * qtk_q_row_bytes(&w->L, w->cols, QTK_PLANE_CODES);
	unsigned code = sc->code_bits == 8 ? row[c] : (row[c / 2] >> (4 * (c & 1))) & 15;

	if (sc->mode == QTK_QMODE_LOOKUP)
		return (int)rintf(127.0f * sc->levels[code]);
	return sc->code_signed ? (int8_t)code : (int)code - sc->code_offset;
}

/* The definition, from the planes: per block of 32 elements the
 * activations' int8 codes q and scale d (amax / 127, round to nearest
 * even), the exact sum p of v * q, acc = fmaf(p, ws * d, acc). */
static void reference(const iw *w, const float *x, size_t B, float *y)
{
	size_t gl = w->L.group == QTK_GROUP_ROW ? w->cols : w->L.group;
	size_t gpr = (size_t)qtk_q_groups_per_row(&w->L, w->cols);

	for (size_t b = 0; b < B; b++)
		for (size_t r = 0; r < w->rows; r++) {
			float acc = 0.0f;
			for (size_t k = 0; k * 32 < w->cols; k++) {
				const float *xb = x + b * w->cols + k * 32;
				size_t n = w->cols - k * 32 < 32 ? w->cols - k * 32 : 32;
				float amax = 0.0f, d, id;
				int32_t p = 0;
				for (size_t i = 0; i < n; i++)
					amax = fabsf(xb[i]) > amax ? fabsf(xb[i]) : amax;
				d = amax / 127.0f;
				id = d != 0.0f ? 1.0f / d : 0.0f;
				for (size_t i = 0; i < n; i++) {
					float q = rintf(xb[i] * id);
					q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
					p += ival(w, r, k * 32 + i) * (int32_t)q;
				}
				acc = fmaf((float)p, w->ws[r * gpr + k * 32 / gl] * d, acc);
			}
			y[b * w->rows + r] = acc;
		}
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

static const struct {
	qtk_isa isa;
	int vnni;
	const char *name;
} variants[] = {
	{ QTK_ISA_SCALAR, 0, "scalar" }, { QTK_ISA_AVX2, 0, "avx2" },
	{ QTK_ISA_AVX512, 0, "avx512" }, { QTK_ISA_AVX512, 1, "avx512-vnni" },
};
#define NVAR (sizeof variants / sizeof variants[0])

static int use_variant(size_t v)
{
	if (qtk_isa_force(variants[v].isa) != variants[v].isa)
		return 0;
	qtk_rt_allow_vnni(variants[v].vnni);
	return !strncmp(qtk_rt_variant(), variants[v].name, strlen(variants[v].name)) &&
	       (variants[v].vnni || !strstr(qtk_rt_variant(), "vnni"));
}

static int matmul(qtk_rt_pool *pool, const iw *w, qtk_rt_path path, const float *x,
                  size_t B, float *y)
{
	qtk_status st;
	qtk_err rc = qtk_rt_matmul(pool, &w->t, path, x, B, y, &st);

	if (rc)
		printf("    matmul: %s\n", st.msg);
	return rc;
}

/* The layouts with a copy: int4, NF4 (and with double quant), int8. */
static const struct {
	qtk_scheme_id s;
	uint32_t flags;
	qtk_dtype sdt;
} ilv_layouts[] = {
	{ QTK_SCHEME_INT4, 0, QTK_DT_F16 },   { QTK_SCHEME_INT4, 0, QTK_DT_BF16 },
	{ QTK_SCHEME_NF4, 0, QTK_DT_F32 },    { QTK_SCHEME_NF4, QTK_QF_DOUBLE_QUANT, QTK_DT_F16 },
	{ QTK_SCHEME_INT8, 0, QTK_DT_F16 },   { QTK_SCHEME_INT8, 0, QTK_DT_F32 },
};
static const uint32_t ilv_groups[] = { 32, 64, 128, QTK_GROUP_ROW };
/* 135 and 100 rows: 9 and 7 groups, so one vector's streams (four at
 * AVX-512, two at AVX2) come with a remainder and a partial last group */
static const size_t ilv_shapes[][2] = { { 5, 263 }, { 17, 64 }, { 1, 40 }, { 33, 97 },
                                        { 16, 32 }, { 40, 300 }, { 135, 70 }, { 100, 64 } };

TEST(rt_ilv_every_variant_gives_the_definition)
{
	static const size_t batches[] = { 1, 3, 64 };
	qtk_isa best = qtk_isa_active();
	int vn = qtk_rt_allow_vnni(1), cases = 0, compared = 0;

	for (size_t li = 0; li < sizeof ilv_layouts / sizeof *ilv_layouts; li++)
	for (size_t gi = 0; gi < sizeof ilv_groups / sizeof *ilv_groups; gi++)
	for (size_t sh = 0; sh < sizeof ilv_shapes / sizeof *ilv_shapes; sh++) {
		size_t rows = ilv_shapes[sh][0], cols = ilv_shapes[sh][1];
		qtk_q_layout L = { .scheme = ilv_layouts[li].s, .group = ilv_groups[gi],
		                   .scale_dtype = ilv_layouts[li].sdt, .dtype = QTK_DT_F32,
		                   .flags = ilv_layouts[li].flags };
		qtk_status st;
		iw w;

		REQUIRE(iw_make(&w, &L, rows, cols, 3 + sh) == 0);
		REQUIRE(qtk_rt_interleave(&w.t, NULL, &st) == QTK_OK);
		CHECK_MSG(w.t.ilv != NULL, "%s g%u: no interleaved copy",
		          qtk_q_scheme_get(L.scheme)->name, L.group);
		cases++;
		for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++) {
			size_t B = batches[bi];
			float *x = malloc(B * cols * 4), *y0 = malloc(B * rows * 4);
			float *y1 = malloc(B * rows * 4);
			gen_x(x, B * cols, cols, 7 + bi);
			reference(&w, x, B, y0);
			for (size_t v = 0; v < NVAR; v++) {
				if (!use_variant(v))
					continue;
				memset(y1, 0xA5, B * rows * 4);
				REQUIRE(matmul(NULL, &w, QTK_RT_INT8, x, B, y1) == 0);
				CHECK_MSG(!memcmp(y0, y1, B * rows * 4),
				          "%s %s%s g%u %s [%zu][%zu] batch %zu: differs from the definition",
				          variants[v].name, qtk_q_scheme_get(L.scheme)->name,
				          L.flags ? "+dq" : "", L.group, qtk_dtype_name(L.scale_dtype),
				          rows, cols, B);
				compared++;
			}
			free(x);
			free(y0);
			free(y1);
		}
		iw_free(&w);
	}
	qtk_isa_force(best);
	qtk_rt_allow_vnni(vn);
	printf("    %d layouts x shapes, %d comparisons\n", cases, compared);
	CHECK(cases >= 100);
}

/* One vector's groups as streams: every group once, in steps of at most
 * n, the parts equal (so a thread's streams are as far apart as they can
 * be), the remainder last. */
TEST(rt_ilv_streams_cover_every_group_once)
{
	int checked = 0;

	for (size_t g0 = 0; g0 < 4; g0 += 3)
		for (size_t len = 0; len <= 41; len++)
			for (int n = 1; n <= 4; n++) {
				unsigned char seen[64] = { 0 };
				size_t gs[4], step = 0, total = 0;
				int k;
				while ((k = rt_ilv_streams(g0, g0 + len, n, step, gs)) > 0) {
					CHECK_MSG(k <= n, "%d streams of %d", k, n);
					for (int j = 0; j < k; j++) {
						CHECK_MSG(gs[j] >= g0 && gs[j] < g0 + len, "group %zu of [%zu, %zu)",
						          gs[j], g0, g0 + len);
						seen[gs[j] - g0]++;
						if (j && k == n && len >= (size_t)n)
							CHECK_MSG(gs[j] - gs[j - 1] == len / (size_t)n,
							          "streams %zu apart, not %zu", gs[j] - gs[j - 1],
							          len / (size_t)n);
					}
					total += (size_t)k;
					REQUIRE(++step <= len + 1);
				}
				CHECK_MSG(total == len, "%zu of %zu groups", total, len);
				for (size_t i = 0; i < len; i++)
					CHECK_MSG(seen[i] == 1, "group %zu seen %u times (len %zu, n %d)", g0 + i,
					          seen[i], len, n);
				CHECK(rt_ilv_streams(g0, g0 + len, n, step + 1, gs) == 0);
				checked++;
			}
	CHECK(checked == 2 * 42 * 4);
}

TEST(rt_ilv_threads_and_batch_columns_give_the_same_bytes)
{
	const size_t rows = 75, cols = 320, B = 9;
	qtk_q_layout L = { .scheme = QTK_SCHEME_INT4, .group = 32, .scale_dtype = QTK_DT_F16,
	                   .dtype = QTK_DT_F32 };
	float x[9 * 320], y1[9 * 75], yt[9 * 75], yb[75];
	qtk_status st;
	iw w;

	REQUIRE(iw_make(&w, &L, rows, cols, 21) == 0);
	REQUIRE(qtk_rt_interleave(&w.t, NULL, &st) == QTK_OK);
	gen_x(x, B * cols, cols, 4);
	REQUIRE(matmul(NULL, &w, QTK_RT_INT8, x, B, y1) == 0);
	for (unsigned t = 2; t <= 3; t++) {
		qtk_rt_pool *p;
		REQUIRE(qtk_rt_pool_create(t, &p, &st) == QTK_OK);
		REQUIRE(qtk_rt_interleave(&w.t, p, &st) == QTK_OK);
		REQUIRE(matmul(p, &w, QTK_RT_INT8, x, B, yt) == 0);
		CHECK_MSG(!memcmp(y1, yt, sizeof yt), "%u threads differ from 1", t);
		/* a copy made on t threads is the same copy */
		qtk_rt_uninterleave(&w.t);
		REQUIRE(qtk_rt_interleave(&w.t, p, &st) == QTK_OK);
		REQUIRE(matmul(p, &w, QTK_RT_INT8, x, B, yt) == 0);
		CHECK_MSG(!memcmp(y1, yt, sizeof yt), "a copy made on %u threads differs", t);
		qtk_rt_pool_free(p);
	}
	for (size_t b = 0; b < B; b++) {
		REQUIRE(matmul(NULL, &w, QTK_RT_INT8, x + b * cols, 1, yb) == 0);
		CHECK_MSG(!memcmp(yb, y1 + b * rows, sizeof yb), "column %zu of the batch differs", b);
	}
	iw_free(&w);
}

/* Group 16 and the affine schemes keep the planes' kernels; the float path
 * and qtk_rt_row_f32 read the planes whether or not there is a copy. */
TEST(rt_ilv_other_layouts_and_paths_are_left_alone)
{
	static const struct { qtk_scheme_id s; uint32_t g; } none[] = {
		{ QTK_SCHEME_INT4, 16 }, { QTK_SCHEME_NF4, 16 }, { QTK_SCHEME_INT8, 16 },
		{ QTK_SCHEME_INT4_AFFINE, 32 }, { QTK_SCHEME_INT8_AFFINE, 64 },
	};
	const size_t rows = 9, cols = 128;
	float x[128], y0[9], y1[9], r0[128], r1[128];
	qtk_status st;

	gen_x(x, cols, cols, 1);
	for (size_t i = 0; i < sizeof none / sizeof *none; i++) {
		qtk_q_layout L = { .scheme = none[i].s, .group = none[i].g,
		                   .scale_dtype = QTK_DT_F16, .dtype = QTK_DT_F32 };
		iw w;
		REQUIRE(iw_make(&w, &L, rows, cols, 5) == 0);
		REQUIRE(matmul(NULL, &w, QTK_RT_INT8, x, 1, y0) == 0);
		REQUIRE(qtk_rt_interleave(&w.t, NULL, &st) == QTK_OK);
		CHECK(w.t.ilv == NULL);
		REQUIRE(matmul(NULL, &w, QTK_RT_INT8, x, 1, y1) == 0);
		CHECK(!memcmp(y0, y1, sizeof y0));
		iw_free(&w);
	}
	qtk_q_layout L = { .scheme = QTK_SCHEME_NF4, .group = 64, .scale_dtype = QTK_DT_F16,
	                   .dtype = QTK_DT_F32 };
	iw w;
	REQUIRE(iw_make(&w, &L, rows, cols, 5) == 0);
	REQUIRE(matmul(NULL, &w, QTK_RT_FLOAT, x, 1, y0) == 0);
	REQUIRE(qtk_rt_row_f32(&w.t, 3, r0, &st) == QTK_OK);
	REQUIRE(qtk_rt_interleave(&w.t, NULL, &st) == QTK_OK);
	REQUIRE(w.t.ilv != NULL);
	REQUIRE(matmul(NULL, &w, QTK_RT_FLOAT, x, 1, y1) == 0);
	REQUIRE(qtk_rt_row_f32(&w.t, 3, r1, &st) == QTK_OK);
	CHECK(!memcmp(y0, y1, sizeof y0));
	CHECK(!memcmp(r0, r1, sizeof r0));
	/* twice is once; NULL is fine */
	REQUIRE(qtk_rt_interleave(&w.t, NULL, &st) == QTK_OK);
	qtk_rt_uninterleave(NULL);
	CHECK(qtk_rt_interleave(NULL, NULL, &st) == QTK_E_ARG);
	iw_free(&w);
}

/* Near the float path (loosely, against sum |w x|), and for 8-bit codes
 * the planes' integer kernels' integers in another f32 order. */
TEST(rt_ilv_is_near_the_float_path)
{
	const size_t rows = 37, cols = 1000;
	float x[1000], yf[37], yi[37], yo[37];
	qtk_status st;

	gen_x(x, cols, cols, 9);
	for (size_t li = 0; li < sizeof ilv_layouts / sizeof *ilv_layouts; li++) {
		qtk_q_layout L = { .scheme = ilv_layouts[li].s, .group = 32,
		                   .scale_dtype = ilv_layouts[li].sdt, .dtype = QTK_DT_F32,
		                   .flags = ilv_layouts[li].flags };
		float row[1000];
		iw w;
		REQUIRE(iw_make(&w, &L, rows, cols, 13) == 0);
		REQUIRE(matmul(NULL, &w, QTK_RT_FLOAT, x, 1, yf) == 0);
		REQUIRE(matmul(NULL, &w, QTK_RT_INT8, x, 1, yo) == 0);
		REQUIRE(qtk_rt_interleave(&w.t, NULL, &st) == QTK_OK);
		REQUIRE(matmul(NULL, &w, QTK_RT_INT8, x, 1, yi) == 0);
		for (size_t r = 0; r < rows; r++) {
			double sa = 0;
			REQUIRE(qtk_rt_row_f32(&w.t, r, row, &st) == QTK_OK);
			for (size_t c = 0; c < cols; c++)
				sa += fabs((double)row[c] * (double)x[c]);
			CHECK_MSG(fabs((double)yi[r] - (double)yf[r]) <= 0.02 * sa,
			          "%s row %zu: %g vs float %g (sum |wx| %g)",
			          qtk_q_scheme_get(L.scheme)->name, r, (double)yi[r], (double)yf[r], sa);
			/* 8-bit codes: the planes' kernels quantize the same blocks of x
			 * (4-bit: even and odd elements), so the same integers, summed
			 * in another f32 order */
			CHECK_MSG(qtk_q_scheme_get(L.scheme)->code_bits != 8 ||
			          fabs((double)yi[r] - (double)yo[r]) <= 1e-5 * sa,
			          "%s row %zu: %g vs the planes' integer path %g",
			          qtk_q_scheme_get(L.scheme)->name, r, (double)yi[r], (double)yo[r]);
		}
		iw_free(&w);
	}
}

/* Every allocation of making a copy (on a pool) and of a product on it
 * fails cleanly: QTK_E_NOMEM, no copy left half made. */
TEST(rt_ilv_allocation_faults)
{
	const size_t rows = 40, cols = 100, B = 3;
	qtk_q_layout L = { .scheme = QTK_SCHEME_NF4, .group = 32, .scale_dtype = QTK_DT_F16,
	                   .dtype = QTK_DT_F32, .flags = QTK_QF_DOUBLE_QUANT };
	float x[3 * 100], y0[3 * 40], y[3 * 40];
	qtk_status st;
	int done = 0;
	iw w;

	gen_x(x, B * cols, cols, 3);
	REQUIRE(iw_make(&w, &L, rows, cols, 2) == 0);
	REQUIRE(qtk_rt_interleave(&w.t, NULL, &st) == QTK_OK);
	REQUIRE(matmul(NULL, &w, QTK_RT_INT8, x, B, y0) == 0);
	qtk_rt_uninterleave(&w.t);
	for (uint64_t nth = 1; nth < 1000; nth++) {
		qtk_rt_pool *pool = NULL;
		qtk_err rc;

		qtk_fault_arm(QTK_FAULT_ALLOC, nth, 0);
		rc = qtk_rt_pool_create(2, &pool, &st);
		if (!rc) {
			rc = qtk_rt_interleave(&w.t, pool, &st);
			CHECK(rc == QTK_OK || w.t.ilv == NULL);
			if (!rc)
				rc = qtk_rt_matmul(pool, &w.t, QTK_RT_INT8, x, B, y, &st);
			qtk_rt_pool_free(pool);
		}
		if (!qtk_fault_fired(QTK_FAULT_ALLOC)) {
			qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
			CHECK_MSG(rc == QTK_OK, "n %llu: %s", (unsigned long long)nth, st.msg);
			CHECK(!memcmp(y, y0, sizeof y));
			done = 1;
			break;
		}
		qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
		CHECK_MSG(rc == QTK_E_NOMEM, "n %llu: %s", (unsigned long long)nth, qtk_err_name(rc));
		qtk_rt_uninterleave(&w.t);
	}
	CHECK(done);
	iw_free(&w);
}

/* A model interleaves only its own tensors. */
TEST(rt_ilv_model_tensors_only)
{
	qtk_rt_model *m;
	qtk_status st;
	iw w;
	qtk_q_layout L = { .scheme = QTK_SCHEME_INT4, .group = 32, .scale_dtype = QTK_DT_F16,
	                   .dtype = QTK_DT_F32 };

	REQUIRE(qtk_rt_open(t_data("stories260K/source-tinyllamas-stories-260k-f32.gguf"), 0, &m,
	                    &st) == QTK_OK);
	REQUIRE(iw_make(&w, &L, 16, 64, 1) == 0);
	CHECK(qtk_rt_model_interleave(m, &w.t, NULL, &st) == QTK_E_ARG);
	CHECK(qtk_rt_model_interleave(NULL, &w.t, NULL, &st) == QTK_E_ARG);
	/* f32 tensors have no copy */
	CHECK(qtk_rt_model_interleave(m, qtk_rt_get(m, 0), NULL, &st) == QTK_OK);
	CHECK(qtk_rt_get(m, 0)->ilv == NULL);
	CHECK_EQ(qtk_rt_interleaved_bytes(qtk_rt_get(m, 0)), 0);
	CHECK_EQ(qtk_rt_interleaved_bytes(NULL), 0);
	REQUIRE(qtk_rt_interleave(&w.t, NULL, &st) == QTK_OK);
	CHECK_EQ(qtk_rt_interleaved_bytes(&w.t), 256 * 2 + 16 * 2 * 2); /* F16 scales kept */
	iw_free(&w);
	qtk_rt_close(m);
}
