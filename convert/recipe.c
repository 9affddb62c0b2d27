/* convert: recipes — ordered rules that decide each tensor's storage, the
 * shipped presets, and model detection from tensor names.
 * Order of precedence: rules in the order added (the CLI adds --set/--keep
 * first, then the recipe file, then the preset); then the defaults. */
#include <fnmatch.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qtk_convert.h"

struct qtk_recipe {
	qtk_scheme_id scheme;   /* main scheme */
	uint32_t group;         /* main group */
	qtk_rule *rules;
	size_t n, cap;
};

/* ---- presets ------------------------------------------------------------ */

typedef struct {
	const char *pattern;
	qtk_rule_action action;
	int ndim;
	uint64_t max_elems;
} preset_rule;

/* In the spirit of llama.cpp's *_M types: the projections quantization
 * hurts most (attention V, FFN down, the output head) one step wider. */
static const preset_rule mixed_rules[] = {
	{ "*.v_proj.weight", QTK_ACT_WIDER, -1, UINT64_MAX },
	{ "*.attn_v.weight", QTK_ACT_WIDER, -1, UINT64_MAX },
	{ "*.down_proj.weight", QTK_ACT_WIDER, -1, UINT64_MAX },
	{ "*.ffn_down.weight", QTK_ACT_WIDER, -1, UINT64_MAX },
	{ "lm_head.weight", QTK_ACT_WIDER, -1, UINT64_MAX },
	{ "output.weight", QTK_ACT_WIDER, -1, UINT64_MAX },
	{ NULL, 0, 0, 0 },
};
static const preset_rule none_rules[] = { { NULL, 0, 0, 0 } };

/* qtk's own presets; every model family with keep patterns adds its own
 * (formats' family table). */
static const struct {
	const char *name;
	const preset_rule *rules;
} presets[] = {
	{ "none", none_rules }, { "mixed", mixed_rules },
};
#define NPRESETS (sizeof presets / sizeof presets[0])
#define MAX_PRESETS 32

qtk_scheme_id qtk_recipe_main_scheme(const qtk_recipe *r)
{
	return r->scheme;
}

uint32_t qtk_recipe_main_group(const qtk_recipe *r)
{
	return r->group;
}

const char *const *qtk_recipe_presets(void)
{
	static const char *names[MAX_PRESETS + 1];
	size_t n = 0;

	for (size_t i = 0; i < NPRESETS; i++)
		names[n++] = presets[i].name;
	for (size_t i = 0; i < qtk_model_family_count() && n < MAX_PRESETS; i++)
		if (qtk_model_family_at(i)->keep)
			names[n++] = qtk_model_family_at(i)->name;
	names[n] = NULL;
	return names;
}

/* ---- building ----------------------------------------------------------- */

qtk_err qtk_recipe_new(qtk_recipe **out, qtk_scheme_id scheme, uint32_t group,
                       qtk_status *st)
{
	qtk_recipe *r;

	*out = NULL;
	if (!qtk_q_scheme_get(scheme) || scheme == QTK_SCHEME_RAW)
		return qtk_fail(st, QTK_E_ARG, "unknown main scheme %d", (int)scheme);
	r = qtk_calloc(1, sizeof *r);
	if (!r)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	r->scheme = scheme;
	r->group = group;
	*out = r;
	return QTK_OK;
}

void qtk_recipe_free(qtk_recipe *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++) {
		qtk_free((void *)(uintptr_t)r->rules[i].pattern);
		qtk_free((void *)(uintptr_t)r->rules[i].origin);
	}
	qtk_free(r->rules);
	qtk_free(r);
}

qtk_err qtk_recipe_add(qtk_recipe *r, const qtk_rule *rule, qtk_status *st)
{
	qtk_rule *nr;

	if (!rule->pattern || !*rule->pattern)
		return qtk_fail(st, QTK_E_ARG, "rule with an empty pattern");
	if (rule->action == QTK_ACT_STORE) {
		qtk_q_layout L = { .scheme = rule->scheme, .scale_dtype = QTK_DT_F16,
		                   .dtype = QTK_DT_F32 };
		const qtk_q_scheme *s = qtk_q_scheme_get(rule->scheme);

		if (!s || rule->scheme == QTK_SCHEME_RAW)
			return qtk_fail(st, QTK_E_ARG, "rule '%s': unknown scheme", rule->pattern);
		L.group = s->quantized ? (rule->group == QTK_RULE_MAIN_GROUP ? 32 : rule->group) : 0;
		QTK_TRY(qtk_q_layout_check(&L, 1, 1, st));
	}
	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 16;
		nr = qtk_realloc(r->rules, cap * sizeof *nr);
		if (!nr)
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		r->rules = nr;
		r->cap = cap;
	}
	nr = &r->rules[r->n];
	*nr = *rule;
	{
		char *pat = qtk_strdup(rule->pattern);
		char *org = qtk_strdup(rule->origin ? rule->origin : "rule");

		if (!pat || !org) {
			qtk_free(pat);
			qtk_free(org);
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		}
		nr->pattern = pat;
		nr->origin = org;
	}
	r->n++;
	return QTK_OK;
}

/* "SCHEME" or "SCHEME:GROUP" where GROUP is a number or "row". */
static qtk_err parse_scheme_group(const char *spec, const char *what,
                                  qtk_scheme_id *scheme, uint32_t *group,
                                  qtk_status *st)
{
	char name[32];
	const char *colon = strchr(spec, ':');
	size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
	int id;

	if (n == 0 || n >= sizeof name)
		return qtk_fail(st, QTK_E_ARG, "%s: bad scheme '%s'", what, spec);
	memcpy(name, spec, n);
	name[n] = '\0';
	id = qtk_q_scheme_from_name(name);
	if (id < 0 || id == QTK_SCHEME_RAW)
		return qtk_fail(st, QTK_E_ARG, "%s: unknown scheme '%s'", what, name);
	*scheme = (qtk_scheme_id)id;
	*group = QTK_RULE_MAIN_GROUP;
	if (colon) {
		uint64_t g;

		char gwhat[160];

		if (!qtk_q_scheme_get(*scheme)->quantized)
			return qtk_fail(st, QTK_E_ARG, "%s: scheme %s takes no group", what, name);
		if (!strcmp(colon + 1, "row")) {
			*group = QTK_GROUP_ROW;
			return QTK_OK;
		}
		/* 1..4096 here; qtk_recipe_add checks it is a power of two >= 16 */
		snprintf(gwhat, sizeof gwhat, "%s: group", what);
		QTK_TRY(qtk_parse_u64(gwhat, colon + 1, 1, 4096, &g, st));
		*group = (uint32_t)g;
	}
	return QTK_OK;
}

qtk_err qtk_recipe_add_set(qtk_recipe *r, const char *spec, qtk_status *st)
{
	const char *eq = strrchr(spec, '=');
	qtk_rule rule = { .ndim = -1, .max_elems = UINT64_MAX,
	                  .action = QTK_ACT_STORE, .origin = "--set" };
	char *pat, what[128];
	qtk_err rc;

	snprintf(what, sizeof what, "--set '%.100s'", spec);
	if (!eq || eq == spec)
		return qtk_fail(st, QTK_E_ARG, "%s: expected PATTERN=SCHEME[:GROUP]", what);
	QTK_TRY(parse_scheme_group(eq + 1, what, &rule.scheme, &rule.group, st));
	pat = qtk_malloc((size_t)(eq - spec) + 1);
	if (!pat)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	memcpy(pat, spec, (size_t)(eq - spec));
	pat[eq - spec] = '\0';
	rule.pattern = pat;
	rc = qtk_recipe_add(r, &rule, st);
	qtk_free(pat);
	if (rc == QTK_E_ARG)
		qtk_status_prefix(st, what);
	return rc;
}

static qtk_err add_keep(qtk_recipe *r, const char *pattern, const char *origin,
                        qtk_status *st)
{
	qtk_rule rule = { .pattern = pattern, .ndim = -1,
	                  .max_elems = UINT64_MAX, .action = QTK_ACT_KEEP,
	                  .origin = origin };

	return qtk_recipe_add(r, &rule, st);
}

qtk_err qtk_recipe_add_keep(qtk_recipe *r, const char *pattern, qtk_status *st)
{
	return add_keep(r, pattern, "--keep", st);
}

qtk_err qtk_recipe_add_preset(qtk_recipe *r, const char *name, qtk_status *st)
{
	const qtk_model_family *f = qtk_model_family_find(name, strlen(name));
	const char *const *all = qtk_recipe_presets();
	char origin[64], have[256];
	size_t len = 0;

	snprintf(origin, sizeof origin, "preset %s", name);
	for (size_t i = 0; i < NPRESETS; i++) {
		if (strcmp(name, presets[i].name))
			continue;
		for (const preset_rule *p = presets[i].rules; p->pattern; p++) {
			qtk_rule rule = { .pattern = p->pattern,
			                  .ndim = p->ndim, .max_elems = p->max_elems,
			                  .action = p->action, .origin = origin };
			QTK_TRY(qtk_recipe_add(r, &rule, st));
		}
		return QTK_OK;
	}
	for (const char *const *k = f ? f->keep : NULL; k && *k; k++)
		QTK_TRY(add_keep(r, *k, origin, st));
	if (f && f->keep)
		return QTK_OK;
	have[0] = '\0';
	for (size_t i = 0; all[i] && len < sizeof have; i++)
		len += (size_t)snprintf(have + len, sizeof have - len, "%s%s", i ? ", " : "",
		                        all[i]);
	return qtk_fail(st, QTK_E_ARG, "unknown preset '%s' (have: %s)", name, have);
}

static qtk_err json_rule(qtk_recipe *r, const char *path, size_t idx,
                         json_t *j, qtk_status *st)
{
	char origin[64];
	qtk_rule rule = { .ndim = -1, .max_elems = UINT64_MAX, .origin = origin };
	const char *key;
	json_t *v;
	int nact = 0;

	snprintf(origin, sizeof origin, "recipe rule %zu", idx + 1);
	if (!json_is_object(j))
		return qtk_fail(st, QTK_E_ARG, "%s: rule %zu is not an object", path, idx + 1);
	json_object_foreach(j, key, v) {
		if (!strcmp(key, "match") && json_is_string(v)) {
			rule.pattern = json_string_value(v);
		} else if (!strcmp(key, "ndim") && json_is_integer(v) &&
		           json_integer_value(v) >= 0 && json_integer_value(v) <= QTK_MAX_DIMS) {
			rule.ndim = (int)json_integer_value(v);
		} else if (!strcmp(key, "min_elements") && json_is_integer(v) &&
		           json_integer_value(v) >= 0) {
			rule.min_elems = (uint64_t)json_integer_value(v);
		} else if (!strcmp(key, "max_elements") && json_is_integer(v) &&
		           json_integer_value(v) >= 0) {
			rule.max_elems = (uint64_t)json_integer_value(v);
		} else if (!strcmp(key, "keep") && json_is_true(v)) {
			rule.action = QTK_ACT_KEEP;
			nact++;
		} else if (!strcmp(key, "wider") && json_is_true(v)) {
			rule.action = QTK_ACT_WIDER;
			nact++;
		} else if (!strcmp(key, "scheme") && json_is_string(v)) {
			QTK_TRY(parse_scheme_group(json_string_value(v), path, &rule.scheme,
			                           &rule.group, st));
			rule.action = QTK_ACT_STORE;
			nact++;
		} else if (strcmp(key, "group")) {
			return qtk_fail(st, QTK_E_ARG, "%s: rule %zu: bad or unknown key '%s'",
			                path, idx + 1, key);
		}
	}
	v = json_object_get(j, "group");
	if (v) {
		if (json_is_string(v) && !strcmp(json_string_value(v), "row"))
			rule.group = QTK_GROUP_ROW;
		else if (json_is_integer(v) && json_integer_value(v) > 0 &&
		         json_integer_value(v) <= 4096)
			rule.group = (uint32_t)json_integer_value(v);
		else
			return qtk_fail(st, QTK_E_ARG, "%s: rule %zu: bad group", path, idx + 1);
		if (rule.action != QTK_ACT_STORE)
			return qtk_fail(st, QTK_E_ARG, "%s: rule %zu: group without scheme",
			                path, idx + 1);
	}
	if (!rule.pattern)
		return qtk_fail(st, QTK_E_ARG, "%s: rule %zu: missing \"match\"", path, idx + 1);
	if (nact != 1)
		return qtk_fail(st, QTK_E_ARG,
		                "%s: rule %zu: needs exactly one of \"scheme\", \"keep\": true, \"wider\": true",
		                path, idx + 1);
	return qtk_recipe_add(r, &rule, st);
}

qtk_err qtk_recipe_load(qtk_recipe *r, const char *path, int scheme_from_cli,
                        int group_from_cli, qtk_status *st)
{
	json_error_t jerr;
	json_t *root, *v;
	qtk_err rc = QTK_OK;
	const char *key;
	char *text;
	size_t len;
	unsigned jm;

	rc = qtk_fmt_read_input(path, &text, &len, st);
	if (rc) /* a recipe that cannot be read is a bad argument, as one that cannot be parsed */
		return rc == QTK_E_NOMEM ? rc : (st->code = QTK_E_ARG);
	jm = qtk_json_begin();
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	qtk_free(text);
	if (qtk_json_end(jm)) {
		json_decref(root);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	if (!root)
		return qtk_fail(st, QTK_E_ARG, "%s: line %d: %s", path, jerr.line, jerr.text);
	if (!json_is_object(root)) {
		rc = qtk_fail(st, QTK_E_ARG, "%s: a recipe is a JSON object", path);
		goto out;
	}
	json_object_foreach(root, key, v) {
		if (strcmp(key, "scheme") && strcmp(key, "group") && strcmp(key, "rules") &&
		    strcmp(key, "preset") && strcmp(key, "description")) {
			rc = qtk_fail(st, QTK_E_ARG, "%s: unknown key '%s'", path, key);
			goto out;
		}
	}
	v = json_object_get(root, "scheme");
	if (v && !scheme_from_cli) {
		qtk_scheme_id s;
		uint32_t g;

		if (!json_is_string(v)) {
			rc = qtk_fail(st, QTK_E_ARG, "%s: \"scheme\" must be a string", path);
			goto out;
		}
		rc = parse_scheme_group(json_string_value(v), path, &s, &g, st);
		if (rc)
			goto out;
		r->scheme = s;
		if (g != QTK_RULE_MAIN_GROUP && !group_from_cli)
			r->group = g;
	}
	v = json_object_get(root, "group");
	if (v && !group_from_cli) {
		if (json_is_string(v) && !strcmp(json_string_value(v), "row"))
			r->group = QTK_GROUP_ROW;
		else if (json_is_integer(v) && json_integer_value(v) > 0 &&
		         json_integer_value(v) <= 4096)
			r->group = (uint32_t)json_integer_value(v);
		else {
			rc = qtk_fail(st, QTK_E_ARG, "%s: bad \"group\"", path);
			goto out;
		}
	}
	v = json_object_get(root, "rules");
	if (v) {
		size_t i;
		json_t *rj;

		if (!json_is_array(v)) {
			rc = qtk_fail(st, QTK_E_ARG, "%s: \"rules\" must be an array", path);
			goto out;
		}
		json_array_foreach(v, i, rj) {
			rc = json_rule(r, path, i, rj, st);
			if (rc)
				goto out;
		}
	}
	v = json_object_get(root, "preset");
	if (v) {
		if (!json_is_string(v)) {
			rc = qtk_fail(st, QTK_E_ARG, "%s: \"preset\" must be a string", path);
			goto out;
		}
		rc = qtk_recipe_add_preset(r, json_string_value(v), st);
		if (rc)
			qtk_status_prefix(st, path);
	}
out:
	json_decref(root);
	return rc;
}

/* ---- deciding ----------------------------------------------------------- */

static int rule_matches(const qtk_rule *ru, const char *name, uint32_t ndim,
                        uint64_t nelem)
{
	if (ru->ndim >= 0 && (uint32_t)ru->ndim != ndim)
		return 0;
	if (nelem < ru->min_elems || nelem > ru->max_elems)
		return 0;
	return fnmatch(ru->pattern, name, 0) == 0;
}

static void set_store(qtk_q_layout *L, qtk_scheme_id s, uint32_t group)
{
	L->scheme = s;
	L->group = qtk_q_scheme_get(s)->quantized ? group : 0;
	if (!qtk_q_scheme_get(s)->quantized)
		L->flags = 0;
}

qtk_err qtk_recipe_decide(const qtk_recipe *r, const char *name, qtk_dtype dtype,
                          uint32_t ndim, const uint64_t *shape, qtk_decision *d,
                          qtk_status *st)
{
	uint64_t nelem = 1, cols = ndim ? shape[ndim - 1] : 1;
	const qtk_rule *hit = NULL;

	for (uint32_t i = 0; i < ndim; i++)
		if (__builtin_mul_overflow(nelem, shape[i], &nelem))
			return qtk_fail(st, QTK_E_OVERFLOW, "tensor '%s': shape overflows", name);
	memset(d, 0, sizeof *d);
	d->layout.dtype = dtype;
	d->layout.scale_dtype = QTK_DT_F16;
	d->layout.scheme = QTK_SCHEME_RAW;
	if (!qtk_dtype_is_float(dtype)) {
		d->origin = "default: integer tensor, copied";
		return QTK_OK;
	}
	for (size_t i = 0; i < r->n && !hit; i++)
		if (rule_matches(&r->rules[i], name, ndim, nelem))
			hit = &r->rules[i];
	if (hit) {
		d->origin = hit->origin;
		switch (hit->action) {
		case QTK_ACT_KEEP:
			return QTK_OK;
		case QTK_ACT_WIDER:
			set_store(&d->layout, qtk_q_scheme_get(r->scheme)->wider, r->group);
			d->wider = 1;
			break;
		case QTK_ACT_STORE:
			set_store(&d->layout, hit->scheme,
			          hit->group == QTK_RULE_MAIN_GROUP ? r->group : hit->group);
			break;
		}
	} else if (ndim <= 1) {
		d->origin = "default: 1-D, kept";
		return QTK_OK;
	} else if (nelem <= 1024) {
		d->origin = "default: <= 1024 elements, kept";
		return QTK_OK;
	} else if (cols < 32 && qtk_q_scheme_get(r->scheme)->quantized) {
		d->origin = "default: rows shorter than 32, kept";
		return QTK_OK;
	} else {
		d->origin = "default: main scheme";
		set_store(&d->layout, r->scheme, r->group);
	}
	/* a float store of the source dtype is a plain copy */
	if (qtk_q_scheme_get(d->layout.scheme)->float_store &&
	    qtk_q_scheme_get(d->layout.scheme)->store_dtype == dtype)
		d->layout.scheme = QTK_SCHEME_RAW;
	return QTK_OK;
}

/* ---- introspection ------------------------------------------------------ */

static const char *group_str(uint32_t g, char buf[16])
{
	if (g == QTK_GROUP_ROW)
		return "row";
	snprintf(buf, 16, "%u", g);
	return buf;
}

char *qtk_recipe_json(const qtk_recipe *r)
{
	unsigned jm = qtk_json_begin();
	json_t *root = json_object(), *rules = json_array();
	char buf[16], *text;

	json_object_set_new(root, "scheme", json_string(qtk_q_scheme_get(r->scheme)->name));
	json_object_set_new(root, "group", json_string(group_str(r->group, buf)));
	for (size_t i = 0; i < r->n; i++) {
		const qtk_rule *ru = &r->rules[i];
		json_t *o = json_object();

		json_object_set_new(o, "match", json_string(ru->pattern));
		if (ru->ndim >= 0)
			json_object_set_new(o, "ndim", json_integer(ru->ndim));
		if (ru->min_elems)
			json_object_set_new(o, "min_elements", json_integer((json_int_t)ru->min_elems));
		if (ru->max_elems != UINT64_MAX)
			json_object_set_new(o, "max_elements", json_integer((json_int_t)ru->max_elems));
		if (ru->action == QTK_ACT_KEEP)
			json_object_set_new(o, "keep", json_true());
		else if (ru->action == QTK_ACT_WIDER)
			json_object_set_new(o, "wider", json_true());
		else {
			json_object_set_new(o, "scheme", json_string(qtk_q_scheme_get(ru->scheme)->name));
			if (ru->group != QTK_RULE_MAIN_GROUP)
				json_object_set_new(o, "group", json_string(group_str(ru->group, buf)));
		}
		json_object_set_new(o, "from", json_string(ru->origin));
		json_array_append_new(rules, o);
	}
	json_object_set_new(root, "rules", rules);
	text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(root);
	if (qtk_json_end(jm)) {
		free(text);
		return NULL;
	}
	return text;
}

/* ---- model detection ---------------------------------------------------- */

const char *qtk_detect_model(const char *const *names, size_t n)
{
	const qtk_model_family *f = qtk_model_detect(names, n);

	return f ? f->name : NULL;
}
