/* tests: the model-family table. Every row is detected from names built
 * from its own patterns (and no earlier row takes them), has its preset
 * when it keeps tensors, and is found by name. */
#include <stdlib.h>

#include "qtk_convert.h"
#include "test.h"

/* A tensor name a pattern matches: '*' at the front matches nothing, any
 * other '*' the text "weight". */
static void name_of(const char *pat, char *out, size_t n)
{
	size_t o = 0;

	for (const char *p = pat; *p && o + 8 < n; p++) {
		if (*p != '*')
			out[o++] = *p;
		else if (p != pat)
			o += (size_t)snprintf(out + o, n - o, "weight");
	}
	out[o] = '\0';
}

TEST(model_family_every_row)
{
	size_t n = qtk_model_family_count();

	REQUIRE(n >= 5);
	for (size_t i = 0; i < n; i++) {
		const qtk_model_family *f = qtk_model_family_at(i);
		char buf[QTK_FAMILY_PATTERNS][128];
		const char *names[QTK_FAMILY_PATTERNS];
		size_t k = 0;
		const char *const *any = f->detect_any[0] ? f->detect_any : f->detect;

		CHECK(qtk_model_family_find(f->name, strlen(f->name)) == f);
		CHECK_MSG(f->gguf_name_max >= 63 && f->gguf_reader, "%s", f->name);
		for (; k < QTK_FAMILY_PATTERNS && any[k]; k++) {
			name_of(any[k], buf[k], sizeof buf[k]);
			names[k] = buf[k];
		}
		REQUIRE(k > 0);
		/* all patterns (detect), or each one alone (detect_any) */
		if (f->detect_any[0]) {
			for (size_t a = 0; a < k; a++)
				CHECK_MSG(qtk_model_detect(&names[a], 1) == f, "%s: '%s'", f->name,
				          names[a]);
		} else {
			CHECK_MSG(qtk_model_detect(names, k) == f, "%s", f->name);
			if (k > 1)
				CHECK_MSG(qtk_model_detect(names, 1) != f, "%s: one pattern is enough",
				          f->name);
		}
		CHECK_STR(qtk_detect_model(names, k), f->name);
		if (f->keep) {
			qtk_recipe *r;
			qtk_status st;
			int listed = 0;
			for (const char *const *p = qtk_recipe_presets(); *p; p++)
				listed |= !strcmp(*p, f->name);
			CHECK_MSG(listed, "%s: no preset listed", f->name);
			REQUIRE(qtk_recipe_new(&r, qtk_q_scheme_default(), 32, &st) == QTK_OK);
			CHECK_MSG(qtk_recipe_add_preset(r, f->name, &st) == QTK_OK, "%s", st.msg);
			qtk_recipe_free(r);
		}
		if (f->dit)
			CHECK_MSG(f->gguf_arch != NULL, "%s: a DiT writes its architecture", f->name);
	}
	CHECK(qtk_model_family_at(n) == NULL);
	CHECK(qtk_model_family_find("nope", 4) == NULL);
}

TEST(model_family_unknown_preset_lists_all)
{
	qtk_recipe *r;
	qtk_status st;

	REQUIRE(qtk_recipe_new(&r, qtk_q_scheme_default(), 32, &st) == QTK_OK);
	CHECK_EQ(qtk_recipe_add_preset(r, "llama", &st), QTK_E_ARG);
	CHECK_STR(st.msg, "unknown preset 'llama' (have: none, mixed, flux, wan, ltxv)");
	qtk_recipe_free(r);
}
