/* tests: recipes — rule precedence, --set/--keep, recipe files, presets,
 * defaults, and model detection on the real DiT tensor lists. */
#include <jansson.h>
#include <stdlib.h>

#include "qtk_convert.h"
#include "test.h"

static qtk_decision decide(const qtk_recipe *r, const char *name, qtk_dtype dt,
                           uint32_t ndim, uint64_t d0, uint64_t d1)
{
	uint64_t shape[QTK_MAX_DIMS] = { d0, d1 };
	qtk_decision d;
	qtk_status st;

	if (qtk_recipe_decide(r, name, dt, ndim, shape, &d, &st) != QTK_OK) {
		memset(&d, 0, sizeof d);
		d.layout.scheme = (qtk_scheme_id)-1;
	}
	return d;
}

TEST(recipe_defaults)
{
	qtk_recipe *r;
	qtk_status st;
	qtk_decision d;

	REQUIRE(qtk_recipe_new(&r, QTK_SCHEME_INT4, 64, &st) == QTK_OK);
	d = decide(r, "w", QTK_DT_BF16, 2, 4096, 4096);
	CHECK_EQ(d.layout.scheme, QTK_SCHEME_INT4);
	CHECK_EQ(d.layout.group, 64);
	CHECK_STR(d.origin, "default: main scheme");
	/* 1-D, tiny, integer, short rows: kept at source precision */
	CHECK_EQ(decide(r, "norm", QTK_DT_BF16, 1, 4096, 0).layout.scheme, QTK_SCHEME_RAW);
	CHECK_EQ(decide(r, "tiny", QTK_DT_F32, 2, 32, 32).layout.scheme, QTK_SCHEME_RAW);
	CHECK_EQ(decide(r, "tiny", QTK_DT_F32, 2, 33, 32).layout.scheme, QTK_SCHEME_INT4);
	CHECK_EQ(decide(r, "ids", QTK_DT_I32, 2, 4096, 4096).layout.scheme, QTK_SCHEME_RAW);
	CHECK_EQ(decide(r, "ids", QTK_DT_I32, 2, 4096, 4096).layout.dtype, QTK_DT_I32);
	CHECK_EQ(decide(r, "conv", QTK_DT_F16, 2, 4096, 3).layout.scheme, QTK_SCHEME_RAW);
	/* embeddings follow the main scheme */
	CHECK_EQ(decide(r, "model.embed_tokens.weight", QTK_DT_F32, 2, 512, 64).layout.scheme,
	         QTK_SCHEME_INT4);
	qtk_recipe_free(r);
}

TEST(recipe_set_keep_precedence)
{
	qtk_recipe *r;
	qtk_status st;

	REQUIRE(qtk_recipe_new(&r, QTK_SCHEME_NF4, 64, &st) == QTK_OK);
	CHECK_EQ(qtk_recipe_add_set(r, "*.v_proj.*=int8:32", &st), QTK_OK);
	CHECK_EQ(qtk_recipe_add_keep(r, "*.v_proj.*", &st), QTK_OK);  /* shadowed */
	CHECK_EQ(qtk_recipe_add_keep(r, "*lm_head*", &st), QTK_OK);
	CHECK_EQ(qtk_recipe_add_set(r, "*=int4-affine:row", &st), QTK_OK);
	qtk_decision d = decide(r, "l.0.v_proj.weight", QTK_DT_F32, 2, 256, 256);
	CHECK_EQ(d.layout.scheme, QTK_SCHEME_INT8);
	CHECK_EQ(d.layout.group, 32);
	CHECK_STR(d.origin, "--set");
	d = decide(r, "lm_head.weight", QTK_DT_F32, 2, 256, 256);
	CHECK_EQ(d.layout.scheme, QTK_SCHEME_RAW);
	CHECK_STR(d.origin, "--keep");
	/* an explicit rule beats the 1-D default */
	d = decide(r, "norm.weight", QTK_DT_F32, 1, 256, 0);
	CHECK_EQ(d.layout.scheme, QTK_SCHEME_INT4_AFFINE);
	CHECK_EQ(d.layout.group, QTK_GROUP_ROW);
	/* f16 of an f16 source is a plain copy */
	CHECK_EQ(qtk_recipe_add_set(r, "x", &st), QTK_E_ARG);
	CHECK_EQ(qtk_recipe_add_set(r, "=int8", &st), QTK_E_ARG);
	CHECK_EQ(qtk_recipe_add_set(r, "a=int9", &st), QTK_E_ARG);
	CHECK_EQ(qtk_recipe_add_set(r, "a=int8:48", &st), QTK_E_ARG);  /* not a power of 2 */
	CHECK_EQ(qtk_recipe_add_set(r, "a=int8:", &st), QTK_E_ARG);
	CHECK_EQ(qtk_recipe_add_set(r, "a=raw", &st), QTK_E_ARG);
	qtk_recipe_free(r);

	REQUIRE(qtk_recipe_new(&r, QTK_SCHEME_INT8, 64, &st) == QTK_OK);
	CHECK_EQ(qtk_recipe_add_set(r, "h.*=f16", &st), QTK_OK);
	CHECK_EQ(decide(r, "h.w", QTK_DT_F16, 2, 256, 256).layout.scheme, QTK_SCHEME_RAW);
	CHECK_EQ(decide(r, "h.w", QTK_DT_F32, 2, 256, 256).layout.scheme, QTK_SCHEME_F16);
	CHECK_EQ(decide(r, "h.w", QTK_DT_F32, 2, 256, 256).layout.group, 0);
	qtk_recipe_free(r);
}

TEST(recipe_file_rules)
{
	const char *path = t_tmp("r.json");
	const char *text =
		"{\"scheme\": \"nf4\", \"group\": 128, \"description\": \"test\",\n"
		" \"rules\": [\n"
		"  {\"match\": \"*.down_proj.weight\", \"scheme\": \"int8\", \"group\": 32},\n"
		"  {\"match\": \"*\", \"ndim\": 2, \"max_elements\": 5000, \"keep\": true},\n"
		"  {\"match\": \"big.*\", \"min_elements\": 1000000, \"wider\": true}\n"
		" ],\n"
		" \"preset\": \"mixed\"}\n";
	qtk_recipe *r;
	qtk_status st;
	char *json;

	REQUIRE(t_write_file(path, text, strlen(text)) == 0);
	REQUIRE(qtk_recipe_new(&r, QTK_SCHEME_INT4, 64, &st) == QTK_OK);
	CHECK_EQ(qtk_recipe_load(r, path, 0, 0, &st), QTK_OK);
	/* the file's main scheme/group apply (not given on the command line) */
	qtk_decision d = decide(r, "other", QTK_DT_F32, 2, 4096, 4096);
	CHECK_EQ(d.layout.scheme, QTK_SCHEME_NF4);
	CHECK_EQ(d.layout.group, 128);
	d = decide(r, "l.down_proj.weight", QTK_DT_F32, 2, 4096, 4096);
	CHECK_EQ(d.layout.scheme, QTK_SCHEME_INT8);
	CHECK_STR(d.origin, "recipe rule 1");
	CHECK_EQ(decide(r, "small", QTK_DT_F32, 2, 50, 100).layout.scheme, QTK_SCHEME_RAW);
	CHECK_EQ(decide(r, "big.w", QTK_DT_F32, 2, 2048, 2048).layout.scheme, QTK_SCHEME_INT8);
	/* the preset named in the file comes after its rules */
	d = decide(r, "l.v_proj.weight", QTK_DT_F32, 2, 4096, 4096);
	CHECK_EQ(d.layout.scheme, QTK_SCHEME_INT8);
	CHECK_STR(d.origin, "preset mixed");
	json = qtk_recipe_json(r);
	REQUIRE(json != NULL);
	CHECK(strstr(json, "\"match\":\"*.down_proj.weight\"") != NULL);
	free(json);
	qtk_recipe_free(r);

	/* the command line's scheme wins over the file's */
	REQUIRE(qtk_recipe_new(&r, QTK_SCHEME_INT4, 64, &st) == QTK_OK);
	CHECK_EQ(qtk_recipe_load(r, path, 1, 1, &st), QTK_OK);
	d = decide(r, "other", QTK_DT_F32, 2, 4096, 4096);
	CHECK_EQ(d.layout.scheme, QTK_SCHEME_INT4);
	CHECK_EQ(d.layout.group, 64);
	qtk_recipe_free(r);
}

TEST(recipe_file_errors)
{
	static const char *const bad[] = {
		"[]",
		"{\"rules\": {}}",
		"{\"unknown\": 1}",
		"{\"scheme\": \"int3\"}",
		"{\"group\": 0}",
		"{\"rules\": [{\"scheme\": \"int8\"}]}",
		"{\"rules\": [{\"match\": \"*\"}]}",
		"{\"rules\": [{\"match\": \"*\", \"keep\": true, \"scheme\": \"int8\"}]}",
		"{\"rules\": [{\"match\": \"*\", \"keep\": true, \"group\": 32}]}",
		"{\"rules\": [{\"match\": \"*\", \"scheme\": \"int8\", \"colour\": 1}]}",
		"{\"rules\": [{\"match\": \"*\", \"ndim\": -1, \"keep\": true}]}",
		"{\"preset\": \"nope\"}",
		"{\"scheme\": \"int8\", \"scheme\": \"int4\"}",
		"{\"rules\": [",
	};
	const char *path = t_tmp("bad.json");
	qtk_status st;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		qtk_recipe *r;
		REQUIRE(t_write_file(path, bad[i], strlen(bad[i])) == 0);
		REQUIRE(qtk_recipe_new(&r, QTK_SCHEME_INT4, 64, &st) == QTK_OK);
		st.msg[0] = 0;
		CHECK_MSG(qtk_recipe_load(r, path, 0, 0, &st) == QTK_E_ARG, "accepted: %s", bad[i]);
		CHECK_MSG(strstr(st.msg, "bad.json") != NULL, "message lacks file: %s", st.msg);
		qtk_recipe_free(r);
	}
	{
		qtk_recipe *r;
		REQUIRE(qtk_recipe_new(&r, QTK_SCHEME_INT4, 64, &st) == QTK_OK);
		CHECK_EQ(qtk_recipe_load(r, t_tmp("missing.json"), 0, 0, &st), QTK_E_ARG);
		CHECK_EQ(qtk_recipe_add_preset(r, "nope", &st), QTK_E_ARG);
		qtk_recipe_free(r);
	}
}

TEST(recipe_mixed_is_one_step_wider)
{
	qtk_recipe *r;
	qtk_status st;

	REQUIRE(qtk_recipe_new(&r, QTK_SCHEME_INT4_AFFINE, 32, &st) == QTK_OK);
	REQUIRE(qtk_recipe_add_preset(r, "mixed", &st) == QTK_OK);
	CHECK_EQ(decide(r, "model.layers.3.mlp.down_proj.weight", QTK_DT_BF16, 2, 4096, 11008)
	         .layout.scheme, QTK_SCHEME_INT8);
	CHECK_EQ(decide(r, "lm_head.weight", QTK_DT_BF16, 2, 32000, 4096).layout.scheme,
	         QTK_SCHEME_INT8);
	CHECK_EQ(decide(r, "model.layers.3.mlp.up_proj.weight", QTK_DT_BF16, 2, 11008, 4096)
	         .layout.scheme, QTK_SCHEME_INT4_AFFINE);
	qtk_recipe_free(r);
	REQUIRE(qtk_recipe_new(&r, QTK_SCHEME_INT8, 32, &st) == QTK_OK);
	REQUIRE(qtk_recipe_add_preset(r, "mixed", &st) == QTK_OK);
	CHECK_EQ(decide(r, "blk.0.attn_v.weight", QTK_DT_F32, 2, 4096, 4096).layout.scheme,
	         QTK_SCHEME_F16);
	qtk_recipe_free(r);
}

/* Names of a DiT fixture (real checkpoint tensor list). */
static const char **fixture_names(const char *file, size_t *n, json_t **root)
{
	json_t *v;
	const char *key, **names;

	*root = json_load_file(t_data(file), 0, NULL);
	if (!*root)
		return NULL;
	names = calloc(json_object_size(*root), sizeof *names);
	*n = 0;
	json_object_foreach(*root, key, v)
		if (strcmp(key, "__metadata__"))
			names[(*n)++] = key;
	return names;
}

TEST(recipe_detect_and_presets_on_real_dit_names)
{
	static const struct {
		const char *file, *model;
		const char *kept[3];
		const char *quantized;
	} cases[] = {
		{ "dit/flux1-dev.json", "flux",
		  { "img_in.weight", "final_layer.linear.weight", "guidance_in.in_layer.weight" },
		  "double_blocks.0.img_attn.qkv.weight" },
		{ "dit/wan2.1-t2v-14b.json", "wan",
		  { "patch_embedding.weight", "head.head.weight", "blocks.0.modulation" },
		  "blocks.0.self_attn.q.weight" },
		{ "dit/ltx-video-2b.json", "ltxv",
		  { "model.diffusion_model.adaln_single.linear.weight",
		    "model.diffusion_model.proj_out.weight",
		    "model.diffusion_model.scale_shift_table" },
		  "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight" },
	};
	for (size_t c = 0; c < 3; c++) {
		json_t *root;
		size_t n;
		const char **names = fixture_names(cases[c].file, &n, &root);
		qtk_recipe *r;
		qtk_status st;
		size_t kept = 0, quant = 0;

		REQUIRE(names != NULL);
		CHECK_STR(qtk_detect_model(names, n), cases[c].model);
		REQUIRE(qtk_recipe_new(&r, QTK_SCHEME_INT4, 32, &st) == QTK_OK);
		REQUIRE(qtk_recipe_add_preset(r, cases[c].model, &st) == QTK_OK);
		for (size_t i = 0; i < n; i++) {
			json_t *e = json_object_get(root, names[i]), *sh = json_object_get(e, "shape");
			uint64_t shape[QTK_MAX_DIMS] = { 0 };
			qtk_decision d;

			for (size_t k = 0; k < json_array_size(sh); k++)
				shape[k] = (uint64_t)json_integer_value(json_array_get(sh, k));
			REQUIRE(qtk_recipe_decide(r, names[i], QTK_DT_BF16, (uint32_t)json_array_size(sh),
			                          shape, &d, &st) == QTK_OK);
			if (d.layout.scheme == QTK_SCHEME_RAW)
				kept++;
			else
				quant++;
			for (int k = 0; k < 3; k++)
				if (!strcmp(names[i], cases[c].kept[k]))
					CHECK_MSG(d.layout.scheme == QTK_SCHEME_RAW, "%s: %s not kept",
					          cases[c].model, names[i]);
			if (!strcmp(names[i], cases[c].quantized))
				CHECK_MSG(d.layout.scheme == QTK_SCHEME_INT4, "%s: %s not quantized",
				          cases[c].model, names[i]);
		}
		CHECK(kept > 0 && quant > 0);
		printf("    %s: %zu tensors, %zu quantized, %zu kept\n", cases[c].model, n, quant, kept);
		qtk_recipe_free(r);
		free(names);
		json_decref(root);
	}
	{
		const char *llama[] = { "model.embed_tokens.weight",
		                        "model.layers.0.self_attn.q_proj.weight" };
		const char *none[] = { "a", "b" };
		CHECK_STR(qtk_detect_model(llama, 2), "llama");
		CHECK(qtk_detect_model(none, 2) == NULL);
	}
}
