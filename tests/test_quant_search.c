/* tests: the search (clipping grid, then weighted least-squares refits of
 * the scale, and of scale and bias jointly for affine schemes). Equal
 * importance gives the unweighted bytes; the search is never worse than
 * round-to-nearest in the weighted squared error it minimizes, on random
 * weights and on real checkpoints (stories260K, and those in
 * ../shared/ckpts when present), every scheme. QTK_SEARCH_PRINT=1 prints
 * the RMSE reductions quoted in docs/quantization.md. */
#include <math.h>
#include <stdlib.h>

#include "qtk_formats.h"
#include "qtk_quant.h"
#include "test.h"

static uint32_t seed = 4242;

static float urand(void)
{
	seed = seed * 1664525u + 1013904223u;
	return (float)(seed >> 8) / 8388608.0f - 1.0f;
}

static const uint32_t groups[] = { 16, 32, 64, 128, QTK_GROUP_ROW };

/* Quantize x with L and opts, dequantize into y. */
static qtk_err roundtrip(const qtk_q_layout *L, const float *x, size_t rows, size_t cols,
                         const qtk_q_opts *o, float *y, uint8_t **bytes, uint64_t *nbytes)
{
	uint64_t sz[QTK_PLANE_MAX], off = 0;
	qtk_q_planes P = { { 0 } };
	qtk_q_cplanes C;
	qtk_status st;

	qtk_q_plane_sizes(L, rows, cols, sz);
	*nbytes = sz[0] + sz[1] + sz[2];
	*bytes = calloc(1, *nbytes + 1);
	for (int k = 0; k < 3; k++) {
		P.p[k] = sz[k] ? *bytes + off : NULL;
		C.p[k] = P.p[k];
		off += sz[k];
	}
	C.p[3] = NULL;
	QTK_TRY(qtk_q_quantize_rows(L, x, rows, cols, &P, o, &st));
	qtk_q_dequantize_rows(L, &C, rows, cols, y);
	return QTK_OK;
}

/* sum imp[col] (x - y)^2 in double */
static double wsse(const float *x, const float *y, const float *imp, size_t rows, size_t cols)
{
	double s = 0;

	for (size_t i = 0; i < rows * cols; i++) {
		double e = (double)x[i] - (double)y[i];
		s += e * e * (imp ? (double)imp[i % cols] : 1.0);
	}
	return s;
}

static int quantized(int id)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(id);
	return s && s->quantized;
}

TEST(search_equal_importance_is_unweighted)
{
	enum { R = 6, C = 512 };
	float *x = malloc(sizeof(float) * R * C), *y = malloc(sizeof(float) * R * C);
	float one[C], eq[C];

	for (size_t i = 0; i < R * C; i++)
		x[i] = urand() * (i % 7 == 0 ? 3.0f : 0.5f);
	for (size_t j = 0; j < C; j++) {
		one[j] = 1.0f;
		eq[j] = 3.7f;
	}
	for (int id = 0; id < QTK_SCHEME_COUNT; id++)
	for (size_t g = 0; g < sizeof groups / sizeof *groups; g++)
	for (int v = 0; v < 4; v++) {
		qtk_q_layout L = { .scheme = id, .group = groups[g],
		                   .scale_dtype = v & 1 ? QTK_DT_F32 : QTK_DT_F16 };
		const float *imps[2] = { one, eq };
		uint8_t *a, *b;
		uint64_t na, nb;
		if (!quantized(id) || ((v & 2) && !qtk_q_scheme_get(id)->has_bias))
			continue;
		L.flags = v & 2 ? QTK_QF_MLX_AFFINE : 0;
		qtk_q_opts o = { .search = 1 };
		REQUIRE(roundtrip(&L, x, R, C, &o, y, &a, &na) == QTK_OK);
		for (int k = 0; k < 2; k++) {
			o.importance = imps[k];
			REQUIRE(roundtrip(&L, x, R, C, &o, y, &b, &nb) == QTK_OK);
			CHECK_MSG(na == nb && !memcmp(a, b, na), "%s g%u v%d importance %g: bytes differ",
			          qtk_q_scheme_get(id)->name, L.group, v, (double)imps[k][0]);
			free(b);
		}
		free(a);
	}
	free(x);
	free(y);
}

/* Search vs RTN on x: the weighted error may not grow (the lanes' f32
 * rounding aside: 1e-6 relative). *gain: 1 - rmse_search / rmse_rtn. */
static int no_worse(const qtk_q_layout *L, const float *x, size_t rows, size_t cols,
                    const float *imp, double *gain)
{
	float *y = malloc(sizeof(float) * rows * cols);
	qtk_q_opts rtn = { 0 }, srch = { .search = 1, .importance = imp };
	uint8_t *b;
	uint64_t nb;
	double e0, e1;

	if (roundtrip(L, x, rows, cols, &rtn, y, &b, &nb) != QTK_OK)
		return free(y), 0;
	free(b);
	e0 = wsse(x, y, imp, rows, cols);
	if (roundtrip(L, x, rows, cols, &srch, y, &b, &nb) != QTK_OK)
		return free(y), 0;
	free(b);
	e1 = wsse(x, y, imp, rows, cols);
	free(y);
	*gain = e0 > 0 ? 1.0 - sqrt(e1 / e0) : 0.0;
	return e1 <= e0 * (1.0 + 1e-6);
}

TEST(search_never_worse_than_rtn_random)
{
	enum { R = 8, C = 768 };
	float *x = malloc(sizeof(float) * R * C), imp[C];

	for (size_t i = 0; i < R * C; i++) /* heavy-ish tails */
		x[i] = urand() * urand() * urand() * 2.0f;
	for (size_t j = 0; j < C; j++)
		imp[j] = 0.05f + (urand() + 1.0f) * (urand() + 1.0f);
	for (int id = 0; id < QTK_SCHEME_COUNT; id++)
	for (size_t g = 0; g < sizeof groups / sizeof *groups; g++)
	for (int v = 0; v < 4; v++) {
		qtk_q_layout L = { .scheme = id, .group = groups[g], .scale_dtype = QTK_DT_F16 };
		double gain;
		if (!quantized(id) || ((v & 2) && !qtk_q_scheme_get(id)->has_bias))
			continue;
		L.flags = v & 2 ? QTK_QF_MLX_AFFINE : 0;
		CHECK_MSG(no_worse(&L, x, R, C, v & 1 ? imp : NULL, &gain),
		          "%s g%u v%d: search worse than RTN", qtk_q_scheme_get(id)->name, L.group, v);
	}
	free(x);
}

/* Every 2-D float tensor of a checkpoint, every scheme at group 32 (f16
 * scales): never worse; the RMSE reduction over the whole file printed. */
static void real_file(const char *path)
{
	qtk_st_file *f;
	qtk_status st;

	REQUIRE(qtk_st_open(path, &f, &st) == QTK_OK);
	for (int id = 0; id < QTK_SCHEME_COUNT; id++) {
		qtk_q_layout L = { .scheme = id, .group = 32, .scale_dtype = QTK_DT_F16 };
		double e0 = 0, e1 = 0;
		if (!quantized(id))
			continue;
		for (size_t i = 0; i < qtk_st_count(f); i++) {
			const qtk_st_tensor *t = qtk_st_get(f, i);
			if (t->ndim < 2 || !qtk_dtype_is_float(t->dtype) || t->nelem < 1024)
				continue;
			size_t cols = (size_t)t->shape[t->ndim - 1], rows = (size_t)(t->nelem / cols);
			float *x = malloc(sizeof(float) * t->nelem), *y = malloc(sizeof(float) * t->nelem);
			qtk_q_opts rtn = { 0 }, srch = { .search = 1 };
			uint8_t *b;
			uint64_t nb;
			REQUIRE(qtk_st_read_f32(t, 0, t->nelem, x, &st) == QTK_OK);
			REQUIRE(roundtrip(&L, x, rows, cols, &rtn, y, &b, &nb) == QTK_OK);
			free(b);
			double a0 = wsse(x, y, NULL, rows, cols);
			REQUIRE(roundtrip(&L, x, rows, cols, &srch, y, &b, &nb) == QTK_OK);
			free(b);
			double a1 = wsse(x, y, NULL, rows, cols);
			CHECK_MSG(a1 <= a0 * (1.0 + 1e-6), "%s: %s %s: search %g > RTN %g", path,
			          t->name, qtk_q_scheme_get(id)->name, a1, a0);
			e0 += a0;
			e1 += a1;
			free(x);
			free(y);
		}
		if (getenv("QTK_SEARCH_PRINT"))
			printf("    %s %-12s g32: RMSE search/RTN %.4f (%.1f%% lower)\n", path,
			       qtk_q_scheme_get(id)->name, sqrt(e1 / e0), 100.0 * (1.0 - sqrt(e1 / e0)));
	}
	qtk_st_close(f);
}

TEST(search_never_worse_than_rtn_stories260K)
{
	real_file(t_data("stories260K/model.safetensors"));
}

TEST(search_never_worse_than_rtn_shared_ckpts)
{
	const char *gpt2 = t_shared("ckpts/capp-gpt2/model.safetensors");
	const char *pose = t_shared("ckpts/human-models/blazepose-heavy.safetensors");

	if (!gpt2 && !pose)
		SKIP("no ../shared/ckpts (capp-gpt2, human-models): real-weight search check not run");
	if (gpt2)
		real_file(gpt2);
	if (pose)
		real_file(pose);
}
