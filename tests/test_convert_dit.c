/* tests: diffusion transformers at their real names and (scaled) shapes.
 * Stand-ins of FLUX.1-dev, Wan2.1-T2V-14B and LTX-Video 2B are generated
 * from the tensor lists in tests/data/dit/ (every dim above 16 divided by
 * 32, except the fixture's keep_dims; random N(0, 0.02) values, the real
 * dtypes), then detected from the file, converted with their preset to
 * .qtk and to GGUF, and the preset's kept tensors checked in both. */
#include <stdlib.h>

#include "gen.h"
#include "qtk_convert.h"
#include "test.h"
#include "test_conv_util.h"

static const struct {
	const char *fixture, *model, *gguf_prefix;
	const char *kept[7];
} models[] = {
	{ "dit/flux1-dev.json", "flux", "",
	  { "img_in.", "txt_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.", NULL } },
	{ "dit/wan2.1-t2v-14b.json", "wan", "",
	  { "patch_embedding.", "text_embedding.", "time_embedding.", "time_projection.",
	    "head.", "modulation", NULL } },
	{ "dit/ltx-video-2b.json", "ltxv", "model.diffusion_model.",
	  { "adaln_single.", "caption_projection.", "patchify_proj.", "proj_out.",
	    "scale_shift_table", NULL } },
};

static int preset_keeps(size_t m, const char *name)
{
	for (int k = 0; models[m].kept[k]; k++)
		if (strstr(name, models[m].kept[k]))
			return 1;
	return 0;
}

static int convert(const char *in, const char *out, qtk_out_format fmt, const char *preset,
                   qtk_conv_report **rep, qtk_status *st)
{
	qtk_conv_opts o = { .input = in, .output = out, .format = fmt,
	                    .scale_dtype = QTK_DT_F16, .threads = 2, .force = 1 };
	return t_convert(&o, QTK_SCHEME_INT4, 32, &(t_rules){ .preset = preset }, rep, st);
}

TEST(convert_dit_standins_qtk_and_gguf)
{
	for (size_t m = 0; m < sizeof models / sizeof *models; m++) {
		char in[4096], out[4096], gout[4096];
		const char *model = NULL;
		qtk_conv_report *rep = NULL;
		qtk_st_file *src = NULL;
		qtk_gguf_file *g = NULL;
		qtk_status st;
		size_t kept = 0, quant = 0, n, flat = 0;
		const char *arch;
		uint64_t len;

		snprintf(in, sizeof in, "%s", t_tmp("dit.safetensors"));
		snprintf(out, sizeof out, "%s", t_tmp("dit.qtk"));
		snprintf(gout, sizeof gout, "%s", t_tmp("dit.gguf"));
		REQUIRE(gen_dit_standin(t_data(models[m].fixture), 32, -1, in, 7, &st) > 0);
		REQUIRE(qtk_detect_model_path(in, &model, &st) == QTK_OK);
		CHECK_STR(model, models[m].model);
		REQUIRE(qtk_st_open(in, &src, &st) == QTK_OK);
		n = qtk_st_count(src);

		/* .qtk: the preset's tensors stay at source precision, the
		 * blocks' 2-D weights are int4 */
		CHECK_MSG(convert(in, out, QTK_OUT_QTK, models[m].model, &rep, &st) == QTK_OK,
		          "%s: %s", models[m].model, st.msg);
		for (size_t i = 0; rep && i < rep->ntensors; i++) {
			const qtk_conv_tensor *t = &rep->tensors[i];
			if (preset_keeps(m, t->name)) {
				CHECK_MSG(t->layout.scheme == QTK_SCHEME_RAW, "%s: %s not kept",
				          models[m].model, t->name);
				kept++;
			} else if (t->ndim == 2 && t->shape[0] * t->shape[1] > 1024 &&
			           t->shape[1] >= 32) {
				CHECK_MSG(t->layout.scheme == QTK_SCHEME_INT4, "%s: %s is %s",
				          models[m].model, t->name,
				          qtk_q_scheme_get(t->layout.scheme)->name);
				quant++;
			}
		}
		CHECK_MSG(kept >= 5 && quant >= 100, "%s: %zu kept, %zu quantized",
		          models[m].model, kept, quant);
		CHECK_EQ(rep ? rep->ntensors : 0, n);
		qtk_conv_report_free(rep);
		rep = NULL;

		/* GGUF: architecture, names without the ComfyUI prefix, kept
		 * tensors in their source type, 1-D in F32, the rest Q4_0 (or
		 * F16 where 32 does not divide the row) */
		CHECK_MSG(convert(in, gout, QTK_OUT_GGUF, models[m].model, &rep, &st) == QTK_OK,
		          "%s: %s", models[m].model, st.msg);
		qtk_conv_report_free(rep);
		if (qtk_gguf_open(gout, &g, &st) != QTK_OK) {
			t_fail_at(__FILE__, __LINE__, "%s", st.msg);
			qtk_st_close(src);
			continue;
		}
		CHECK_EQ(qtk_gguf_get_str(g, "general.architecture", &arch, &len, &st), QTK_OK);
		CHECK(len == strlen(models[m].model) && !memcmp(arch, models[m].model, len));
		CHECK_EQ(qtk_gguf_count(g), n);
		for (size_t i = 0; i < n; i++) {
			const qtk_st_tensor *s = qtk_st_get(src, i);
			const char *gname = s->name + strlen(models[m].gguf_prefix);
			const qtk_gguf_tensor *t = qtk_gguf_find(g, gname);
			uint32_t want;

			CHECK_MSG(strncmp(s->name, models[m].gguf_prefix, strlen(models[m].gguf_prefix)) == 0,
			          "%s", s->name);
			if (!t) {
				t_fail_at(__FILE__, __LINE__, "%s: no GGUF tensor %s", models[m].model, gname);
				continue;
			}
			if (s->ndim <= 1 || s->nelem <= 1024)
				want = QTK_GGML_F32;
			else if (preset_keeps(m, s->name))
				want = s->dtype == QTK_DT_BF16 ? QTK_GGML_BF16 : s->dtype == QTK_DT_F16 ?
				       QTK_GGML_F16 : QTK_GGML_F32;
			else if (s->shape[s->ndim - 1] % 32)
				want = QTK_GGML_F16;
			else
				want = QTK_GGML_Q4_0;
			CHECK_MSG(t->type == want, "%s: %s is %s, want %s", models[m].model, gname,
			          qtk_ggml_type_name(t->type), qtk_ggml_type_name(want));
			CHECK(t->nelem == s->nelem);
			if (s->ndim > 4) {
				/* ComfyUI-GGUF's convention for > 4 dims */
				char key[256];
				const qtk_gguf_kv *kv;
				int64_t v;
				snprintf(key, sizeof key, "comfy.gguf.orig_shape.%s", gname);
				kv = qtk_gguf_kv_find(g, key);
				CHECK_MSG(kv && kv->type == QTK_GGUF_ARRAY && kv->arr_type == QTK_GGUF_I32 &&
				          kv->count == s->ndim, "%s: no INT32 orig_shape", gname);
				for (uint32_t k = 0; kv && k < s->ndim && k < kv->count; k++)
					CHECK(qtk_gguf_arr_int(kv, k, &v) == QTK_OK && (uint64_t)v == s->shape[k]);
				CHECK(t->n_dims == 2 && t->ne[0] == s->shape[s->ndim - 1]);
				flat++;
			}
		}
		CHECK_EQ(flat, m == 1); /* Wan's Conv3d patch embedding */
		qtk_gguf_close(g);
		qtk_st_close(src);
	}
}
