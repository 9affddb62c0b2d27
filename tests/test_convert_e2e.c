/* tests: qtk convert end to end on real checkpoints — every scheme; each
 * stored tensor dequantized and checked element by element against the
 * scheme's error bound for its group; kept tensors bit-identical; the
 * sharded checkpoint converts to the same bytes as the single file. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>

#include "qtk_convert.h"
#include "qtk_runtime.h"
#include "test.h"

/* Largest error a round-to-nearest quantizer may make on one element of a
 * group with absolute maximum amax and range [mn, mx] (see
 * docs/quantization.md; the slack covers the f16 rounding of stored scales). */
static double bound(qtk_scheme_id s, double amax, double mn, double mx)
{
	const double h = 1.0 / 1024; /* f16 relative rounding, with margin */
	const double sub = 0x1p-25;  /* f16 absolute rounding of a subnormal scale */

	switch (s) {
	case QTK_SCHEME_INT8:
		return amax / 127 * (0.5 + 127 * h) + 127 * sub;
	case QTK_SCHEME_INT4: /* the clipped end of [-8, 7] costs one step */
		return amax / 8 * (1.0 + 8 * h) + 8 * sub;
	case QTK_SCHEME_INT4_AFFINE:
		return (mx - mn) / 15 * (0.5 + 15 * h) + fabs(mn) * h + amax * h + 16 * sub;
	case QTK_SCHEME_INT8_AFFINE:
		return (mx - mn) / 255 * (0.5 + 255 * h) + fabs(mn) * h + amax * h + 256 * sub;
	case QTK_SCHEME_NF4: /* half the widest gap of the code, [-1, -0.696] */
		return amax * (0.152 + h) + sub;
	case QTK_SCHEME_F16:
		return amax * h + 6e-8;
	case QTK_SCHEME_BF16:
		return amax / 256 + 1e-38;
	default:
		return 0;
	}
}

/* Check every tensor of OUT against the source; returns the number of
 * quantized tensors checked. */
static int check_against_source(const char *in, const char *out, qtk_scheme_id scheme)
{
	qtk_st_file *src = NULL;
	qtk_rt_model *m = NULL;
	qtk_status st;
	int checked = 0;

	if (qtk_st_open(in, &src, &st) || qtk_rt_open(out, QTK_RT_VERIFY, &m, &st)) {
		t_fail_at(__FILE__, __LINE__, "open: %s", st.msg);
		qtk_st_close(src);
		return 0;
	}
	CHECK_EQ(qtk_rt_count(m), qtk_st_count(src));
	for (size_t i = 0; i < qtk_st_count(src); i++) {
		const qtk_st_tensor *s = qtk_st_get(src, i);
		const qtk_rt_tensor *t = qtk_rt_find(m, s->name);
		qtk_q_cplanes cp;
		float *ref, *got;
		uint64_t cols, rows, g;

		if (!t) {
			t_fail_at(__FILE__, __LINE__, "%s: missing tensor %s", out, s->name);
			continue;
		}
		CHECK_EQ(t->ndim, s->ndim);
		CHECK_EQ(t->src_dtype, s->dtype);
		if (t->scheme == QTK_SCHEME_RAW) {
			CHECK_MSG(t->planes[0].size == s->nbytes &&
			          memcmp(t->planes[0].data, s->data, s->nbytes) == 0,
			          "%s: kept tensor %s differs", out, s->name);
			continue;
		}
		rows = t->rows;
		cols = t->cols;
		ref = malloc((rows * cols + 1) * sizeof(float));
		got = malloc((rows * cols + 1) * sizeof(float));
		if (!ref || !got || qtk_st_read_f32(s, 0, s->nelem, ref, &st) != QTK_OK) {
			t_fail_at(__FILE__, __LINE__, "%s: cannot read %s", in, s->name);
			free(ref);
			free(got);
			continue;
		}
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			cp.p[p] = t->planes[p].data;
		qtk_q_dequantize_rows(&t->layout, &cp, rows, cols, got);
		g = t->group == QTK_GROUP_ROW || !qtk_q_scheme_get(t->scheme)->quantized ? cols : t->group;
		for (uint64_t r = 0; r < rows; r++) {
			for (uint64_t c0 = 0; c0 < cols; c0 += g) {
				uint64_t n = cols - c0 < g ? cols - c0 : g;
				const float *w = ref + r * cols + c0, *q = got + r * cols + c0;
				double amax = 0, mn = HUGE_VAL, mx = -HUGE_VAL, b, worst = 0;

				for (uint64_t k = 0; k < n; k++) {
					amax = fmax(amax, fabs((double)w[k]));
					mn = fmin(mn, (double)w[k]);
					mx = fmax(mx, (double)w[k]);
				}
				if (!qtk_q_scheme_get(t->scheme)->quantized) {
					/* float casts: bound per element */
					for (uint64_t k = 0; k < n; k++) {
						b = bound(t->scheme, fabs((double)w[k]), 0, 0);
						worst = fmax(worst, fabs((double)q[k] - (double)w[k]) - b);
					}
				} else {
					b = bound(t->scheme, amax, fmin(mn, 0), fmax(mx, 0));
					for (uint64_t k = 0; k < n; k++)
						worst = fmax(worst, fabs((double)q[k] - (double)w[k]) - b);
				}
				if (worst > 0) {
					t_fail_at(__FILE__, __LINE__, "%s: %s row %llu group at %llu: error "
					          "exceeds the %s bound by %g (amax %g)", out, s->name,
					          (unsigned long long)r, (unsigned long long)c0,
					          qtk_q_scheme_get(t->scheme)->name, worst, amax);
					r = rows;
					break;
				}
			}
		}
		if (t->scheme == scheme)
			checked++;
		free(ref);
		free(got);
	}
	qtk_rt_close(m);
	qtk_st_close(src);
	return checked;
}

static void convert_file(const char *in, const char *out, qtk_scheme_id s, uint32_t g,
                         int search)
{
	qtk_recipe *r = NULL;
	qtk_conv_report *rep = NULL;
	qtk_status st;
	qtk_conv_opts o = { .input = in, .output = out, .scale_dtype = QTK_DT_F16,
	                    .threads = 2, .search = search, .force = 1 };

	REQUIRE(qtk_recipe_new(&r, s, g, &st) == QTK_OK);
	o.recipe = r;
	if (qtk_convert(&o, &rep, &st) != QTK_OK)
		t_fail_at(__FILE__, __LINE__, "convert %s -> %s: %s", in, out, st.msg);
	qtk_conv_report_free(rep);
	qtk_recipe_free(r);
}

static const qtk_scheme_id all_schemes[] = {
	QTK_SCHEME_INT8, QTK_SCHEME_INT4, QTK_SCHEME_INT4_AFFINE, QTK_SCHEME_NF4,
	QTK_SCHEME_INT8_AFFINE, QTK_SCHEME_F16, QTK_SCHEME_BF16,
};

static void convert_and_check_all(const char *in_path, int expect_quantized)
{
	char in[4096], out[4096];

	/* t_data/t_tmp return ring buffers: keep our own copies */
	snprintf(in, sizeof in, "%s", in_path);
	snprintf(out, sizeof out, "%s", t_tmp("out.qtk"));
	for (size_t k = 0; k < sizeof all_schemes / sizeof all_schemes[0]; k++) {
		int n;

		convert_file(in, out, all_schemes[k], 64, 0);
		n = check_against_source(in, out, all_schemes[k]);
		CHECK_MSG(!expect_quantized || n > 0 || all_schemes[k] == QTK_SCHEME_F16 ||
		          all_schemes[k] == QTK_SCHEME_BF16,
		          "%s: no tensor stored as %s", in, qtk_q_scheme_get(all_schemes[k])->name);
	}
}

TEST(convert_e2e_stories260k_every_scheme)
{
	convert_and_check_all(t_data("stories260K/model.safetensors"), 1);
	convert_and_check_all(t_data("stories260K/model.bf16.safetensors"), 1);
}

TEST(convert_e2e_shared_checkpoints)
{
	const char *gpt2 = t_shared("ckpts/capp-gpt2/model.safetensors");
	const char *pose = t_shared("ckpts/human-models/blazepose-heavy.safetensors");

	if (!gpt2 || !pose)
		SKIP("../shared/ckpts not present (capp-gpt2, human-models)");
	convert_and_check_all(gpt2, 1);
	convert_and_check_all(pose, 1);
}

TEST(convert_e2e_sharded_equals_single)
{
	const char *single = t_shared("ckpts/human-models/blazepose-heavy.safetensors");
	const char *index = t_shared("ckpts/human-models/blazepose-heavy-sharded/"
	                             "blazepose-heavy.safetensors.index.json");
	qtk_rt_model *a = NULL, *b = NULL;
	qtk_status st;

	if (!single || !index)
		SKIP("../shared/ckpts/human-models not present");
	convert_file(single, t_tmp("single.qtk"), QTK_SCHEME_INT4, 32, 0);
	convert_file(index, t_tmp("sharded.qtk"), QTK_SCHEME_INT4, 32, 0);
	REQUIRE(qtk_rt_open(t_tmp("single.qtk"), 0, &a, &st) == QTK_OK);
	REQUIRE(qtk_rt_open(t_tmp("sharded.qtk"), 0, &b, &st) == QTK_OK);
	CHECK_EQ(qtk_rt_count(a), qtk_rt_count(b));
	for (size_t i = 0; i < qtk_rt_count(a); i++) {
		const qtk_rt_tensor *x = qtk_rt_get(a, i), *y = qtk_rt_find(b, x->name);
		REQUIRE(y);
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			CHECK_MSG(x->planes[p].size == y->planes[p].size &&
			          (!x->planes[p].size ||
			           !memcmp(x->planes[p].data, y->planes[p].data, x->planes[p].size)),
			          "%s plane %d differs", x->name, p);
	}
	qtk_rt_close(a);
	qtk_rt_close(b);
}

TEST(convert_e2e_search_never_worse_than_rtn)
{
	const char *in = t_data("stories260K/model.safetensors");
	static const qtk_scheme_id four[] = { QTK_SCHEME_INT4, QTK_SCHEME_INT4_AFFINE,
	                                      QTK_SCHEME_NF4 };
	for (size_t k = 0; k < 3; k++) {
		qtk_recipe *r = NULL;
		qtk_conv_report *rtn = NULL, *srch = NULL;
		qtk_status st;
		qtk_conv_opts o = { .input = in, .output = t_tmp("a.qtk"), .scale_dtype = QTK_DT_F16,
		                    .force = 1 };
		double sse_rtn = 0, sse_s = 0;

		REQUIRE(qtk_recipe_new(&r, four[k], 32, &st) == QTK_OK);
		o.recipe = r;
		REQUIRE(qtk_convert(&o, &rtn, &st) == QTK_OK);
		o.search = 1;
		o.output = t_tmp("b.qtk");
		REQUIRE(qtk_convert(&o, &srch, &st) == QTK_OK);
		for (size_t i = 0; i < rtn->ntensors; i++) {
			if (!rtn->tensors[i].has_metrics)
				continue;
			sse_rtn += rtn->tensors[i].m.rmse * rtn->tensors[i].m.rmse * (double)rtn->tensors[i].m.n;
			sse_s += srch->tensors[i].m.rmse * srch->tensors[i].m.rmse * (double)srch->tensors[i].m.n;
		}
		printf("    %s: RMSE-weighted SSE rtn %.6g, search %.6g (%.1f%% lower)\n",
		       qtk_q_scheme_get(four[k])->name, sse_rtn, sse_s, 100 * (1 - sse_s / sse_rtn));
		CHECK_MSG(sse_s < sse_rtn, "%s: search did not reduce the error",
		          qtk_q_scheme_get(four[k])->name);
		qtk_conv_report_free(rtn);
		qtk_conv_report_free(srch);
		qtk_recipe_free(r);
	}
}

TEST(convert_e2e_metadata)
{
	const char *in = t_data("stories260K/model.safetensors");
	qtk_rt_model *m = NULL;
	qtk_status st;
	json_t *meta, *t;

	convert_file(in, t_tmp("m.qtk"), QTK_SCHEME_INT8, 32, 0);
	REQUIRE(qtk_rt_open(t_tmp("m.qtk"), 0, &m, &st) == QTK_OK);
	meta = json_loads(qtk_rt_metadata(m), 0, NULL);
	REQUIRE(meta);
	CHECK_STR(json_string_value(json_object_get(meta, "qtk_version")), QTK_VERSION);
	CHECK_STR(json_string_value(json_object_get(json_object_get(meta, "config"), "model_type")),
	          "llama");
	CHECK_STR(json_string_value(json_object_get(meta, "model")), "llama");
	t = json_object_get(json_object_get(meta, "tensors"), "model.layers.0.mlp.down_proj.weight");
	CHECK_STR(json_string_value(json_object_get(t, "scheme")), "int8");
	CHECK(json_real_value(json_object_get(t, "rel_fro")) > 0);
	CHECK(json_real_value(json_object_get(t, "rel_fro")) < 0.02);
	t = json_array_get(json_object_get(json_object_get(meta, "source"), "files"), 0);
	CHECK_EQ(json_integer_value(json_object_get(t, "bytes")), 1045200);
	CHECK_EQ(strlen(json_string_value(json_object_get(t, "crc32"))), 8);
	json_decref(meta);
	qtk_rt_close(m);
}
