/* tests (private): one call to convert with a fresh recipe, for the
 * conversion tests. */
#ifndef QTK_TEST_CONV_UTIL_H
#define QTK_TEST_CONV_UTIL_H

#include "qtk_convert.h"

/* Rules added to the recipe after its main scheme and group (NULL: none). */
typedef struct {
	const char *keep, *set, *preset;
} t_rules;

/* qtk_convert(*o) with o->recipe = a recipe of main scheme s and group g
 * plus the rules; *rep gets the report when rep is not NULL (the caller
 * frees it), else it is freed. Returns the qtk_err, or -1 if the recipe
 * could not be built (st says why). */
int t_convert(const qtk_conv_opts *o, qtk_scheme_id s, uint32_t g, const t_rules *rules,
              qtk_conv_report **rep, qtk_status *st);

#endif
