/* tests (private): see test_conv_util.h. */
#include "test_conv_util.h"

int t_convert(const qtk_conv_opts *o, qtk_scheme_id s, uint32_t g, const t_rules *rules,
              qtk_conv_report **rep, qtk_status *st)
{
	qtk_conv_opts oo = *o;
	qtk_conv_report *r0 = NULL;
	qtk_recipe *r = NULL;
	int rc;

	if (qtk_recipe_new(&r, s, g, st) != QTK_OK)
		return -1;
	if (rules && ((rules->keep && qtk_recipe_add_keep(r, rules->keep, st) != QTK_OK) ||
	              (rules->set && qtk_recipe_add_set(r, rules->set, st) != QTK_OK) ||
	              (rules->preset && qtk_recipe_add_preset(r, rules->preset, st) != QTK_OK))) {
		qtk_recipe_free(r);
		return -1;
	}
	oo.recipe = r;
	rc = qtk_convert(&oo, rep ? rep : &r0, st);
	qtk_conv_report_free(r0);
	qtk_recipe_free(r);
	return rc;
}
