/* convert: the pipeline's report and metadata. Per-item error sums merge
 * in item order into each tensor's metrics (so they do not depend on -j);
 * the metadata records the source files with their crc32s (combined from
 * the items'), config, recipe, options and every tensor's layout. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "pipe_impl.h"

static const char *group_name(uint32_t g, char buf[16])
{
	if (g == QTK_GROUP_ROW)
		return "row";
	snprintf(buf, 16, "%u", g);
	return buf;
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

static int by_offset(const void *a, const void *b)
{
	uint64_t x = (*(const plan_tensor *const *)a)->t->file_offset;
	uint64_t y = (*(const plan_tensor *const *)b)->t->file_offset;

	return x < y ? -1 : x > y;
}

/* crc32 of a whole source file: the bytes between tensors (header, GGUF
 * alignment padding, trailing bytes) read from the mapping, each tensor's
 * bytes combined from its work items' crcs. */
static uLong file_crc(const job *j, size_t f, const plan_tensor **order)
{
	const src_file *sf = &j->s->files[f];
	uLong crc = 0;
	uint64_t pos = 0;
	size_t n = 0;

	for (size_t i = 0; i < j->n; i++)
		if (j->pt[i].t->file == f)
			order[n++] = &j->pt[i];
	qsort(order, n, sizeof *order, by_offset);
	for (size_t i = 0; i < n; i++) {
		const plan_tensor *p = order[i];
		if (p->t->file_offset > pos)
			crc = qtk_crc32((uint32_t)crc, sf->base + pos, p->t->file_offset - pos);
		for (size_t k = 0; k < p->nitems; k++)
			crc = crc32_combine(crc, j->crc[p->item0 + k],
			                    (z_off_t)pipe_item_src_bytes(j, &j->items[p->item0 + k]));
		if (p->t->file_offset + p->t->nbytes > pos)
			pos = p->t->file_offset + p->t->nbytes;
	}
	if (sf->size > pos)
		crc = qtk_crc32((uint32_t)crc, sf->base + pos, sf->size - pos);
	return crc;
}

/* Per source file: size and crc32 of all its bytes; NULL: out of memory. */
static json_t *sources_json(const job *j)
{
	json_t *files;
	const plan_tensor **order = qtk_malloc((j->n ? j->n : 1) * sizeof *order);

	if (!order)
		return NULL;
	files = json_array();
	for (size_t f = 0; f < j->s->nfiles; f++) {
		const src_file *sf = &j->s->files[f];
		int have = sf->base && j->want_crc;
		uLong crc = have ? file_crc(j, f, order) : 0;
		char hex[16];
		json_t *o = json_object();

		snprintf(hex, sizeof hex, "%08lx", (unsigned long)crc);
		json_object_set_new(o, "name", json_string(base_name(sf->path)));
		{
			/* where it was, for `qtk export --requantize` */
			char *abs = realpath(sf->path, NULL);
			json_object_set_new(o, "path", json_string(abs ? abs : sf->path));
			free(abs);
		}
		json_object_set_new(o, "bytes", json_integer((json_int_t)sf->size));
		json_object_set_new(o, "crc32", json_string(have ? hex : ""));
		json_array_append_new(files, o);
	}
	qtk_free(order);
	return files;
}

static void metrics_json(json_t *o, const qtk_q_metrics *m)
{
	json_object_set_new(o, "rmse", json_real(m->rmse));
	json_object_set_new(o, "max_abs", json_real(m->max_abs));
	json_object_set_new(o, "rel_fro", json_real(m->rel_fro));
	json_object_set_new(o, "snr_db", json_real(m->snr_db));
	json_object_set_new(o, "cosine", json_real(m->cosine));
}

/* A .qtk source: what its metadata records (the checkpoint it was made
 * from, config, recipe, options), so that its output can be requantized
 * from that checkpoint as the .qtk could. */
static json_t *recorded_head(const job *j)
{
	static const char *const keys[] = { "source", "config", "recipe", "options" };
	json_t *m = json_loads(j->s->recorded, 0, NULL), *root = json_object();

	if (!root) {
		json_decref(m);
		return NULL;
	}
	json_object_set_new(root, "qtk_version", json_string(QTK_VERSION));
	for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
		if (json_object_get(m, keys[k]))
			json_object_set(root, keys[k], json_object_get(m, keys[k]));
	json_decref(m);
	return root;
}

/* The run's provenance: source files and their crc32s, config, recipe,
 * options. NULL: out of memory. */
static json_t *run_head(const job *j, json_t *cfg)
{
	const qtk_conv_opts *o = j->o;
	json_t *root = json_object(), *sj = json_object();
	json_t *opts = json_object(), *rec = NULL;
	char *recipe = o->recipe ? qtk_recipe_json(o->recipe) : NULL;
	json_t *files = sources_json(j);

	if (!files || (o->recipe && !recipe) || !root || !sj || !opts) {
		json_decref(files);
		free(recipe);
		json_decref(root);
		json_decref(sj);
		json_decref(opts);
		json_decref(cfg);
		return NULL;
	}
	json_object_set_new(root, "qtk_version", json_string(QTK_VERSION));
	json_object_set_new(sj, "format", json_string(j->s->format));
	json_object_set_new(sj, "files", files);
	if (j->s->st && qtk_st_meta_count(j->s->st)) {
		json_t *m = json_object();
		for (size_t i = 0; i < qtk_st_meta_count(j->s->st); i++) {
			const char *k = qtk_st_meta_key(j->s->st, i);
			json_object_set_new(m, k, json_string(qtk_st_meta_get(j->s->st, k)));
		}
		json_object_set_new(sj, "metadata", m);
	}
	json_object_set_new(root, "source", sj);
	if (cfg)
		json_object_set_new(root, "config", cfg);
	if (recipe) {
		rec = json_loads(recipe, 0, NULL);
		free(recipe);
	}
	if (rec)
		json_object_set_new(root, "recipe", rec);
	json_object_set_new(opts, "scale_dtype", json_string(qtk_dtype_name(o->scale_dtype)));
	json_object_set_new(opts, "search", json_boolean(o->search));
	json_object_set_new(opts, "double_quant", json_boolean(o->qflags & QTK_QF_DOUBLE_QUANT));
	json_object_set_new(opts, "calib", o->calib ? json_string(base_name(o->calib)) : json_null());
	if (j->cal && calib_damp(j->cal) > 0)
		json_object_set_new(opts, "gptq_damp", json_real(calib_damp(j->cal)));
	json_object_set_new(root, "options", opts);
	return root;
}

static char *build_metadata_json(const job *j, const qtk_conv_report *rep, json_t *cfg)
{
	json_t *root, *tens = json_object();
	char *text, buf[16];

	if (j->s->recorded) {
		json_decref(cfg);
		root = recorded_head(j);
	} else {
		root = run_head(j, cfg);
	}
	if (!root || !tens) {
		json_decref(root);
		json_decref(tens);
		return NULL;
	}
	if (rep->model)
		json_object_set_new(root, "model", json_string(rep->model));
	for (size_t i = 0; i < rep->ntensors; i++) {
		const qtk_conv_tensor *t = &rep->tensors[i];
		json_t *e = json_object();

		json_object_set_new(e, "scheme", json_string(t->layout.scheme == QTK_SCHEME_RAW ?
		                    "raw" : qtk_q_scheme_get(t->layout.scheme)->name));
		if (qtk_q_scheme_get(t->layout.scheme)->quantized)
			json_object_set_new(e, "group", json_string(group_name(t->layout.group, buf)));
		json_object_set_new(e, "rule", json_string(t->origin));
		if (t->has_metrics)
			metrics_json(e, &t->m);
		if (t->flushed)
			json_object_set_new(e, "flushed", json_integer((json_int_t)t->flushed));
		if (t->fallback)
			json_object_set_new(e, "fallback", json_string(t->fallback));
		json_object_set_new(tens, t->name, e);
	}
	json_object_set_new(root, "tensors", tens);
	text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
	json_decref(root);
	return text;
}

/* The metadata stored in the output (rep->metadata_json), built under a
 * jansson guard (qtk_formats.h). */
qtk_err pipe_build_metadata(const job *j, qtk_conv_report *rep, qtk_status *st)
{
	unsigned jm = qtk_json_begin();
	json_t *cfg = NULL;
	qtk_err rc = src_config_object(j->s, &cfg, st); /* NULL: none */

	if (!rc)
		rep->metadata_json = build_metadata_json(j, rep, cfg);
	if (qtk_json_end(jm) || (!rc && !rep->metadata_json)) {
		free(rep->metadata_json);
		rep->metadata_json = NULL;
		return qtk_fail(st, QTK_E_NOMEM, "out of memory building metadata");
	}
	return rc;
}

qtk_err pipe_make_report(job *j, qtk_conv_report **out, qtk_status *st)
{
	qtk_conv_report *rep = qtk_calloc(1, sizeof *rep);
	const char **names;

	*out = NULL;
	if (!rep)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	rep->tensors = qtk_calloc(j->n ? j->n : 1, sizeof *rep->tensors);
	rep->ntensors = rep->tensors ? j->n : 0;
	names = qtk_calloc(j->n ? j->n : 1, sizeof *names);
	if (!rep->tensors || !names) {
		qtk_free(names);
		qtk_conv_report_free(rep);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	for (size_t i = 0; i < j->n; i++) {
		const plan_tensor *p = &j->pt[i];
		qtk_conv_tensor *t = &rep->tensors[i];
		qtk_q_acc acc;

		names[i] = p->t->name;
		t->name = qtk_strdup(p->t->name);
		if (!t->name) {
			qtk_free(names);
			qtk_conv_report_free(rep);
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		}
		t->src_dtype = p->t->dtype;
		t->ndim = p->t->ndim;
		memcpy(t->shape, p->t->shape, sizeof t->shape);
		t->layout = p->d.layout;
		t->origin = p->d.origin;
		t->src_bytes = p->t->nbytes;
		t->out_bytes = p->out_bytes;
		t->flushed = p->flushed;
		t->from = p->from;
		if (p->from == QTK_FROM_REQUANT && !(t->requant_why = qtk_strdup(p->why))) {
			qtk_free(names);
			qtk_conv_report_free(rep);
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		}
		if (j->cal && p->mode == MODE_ROWS && qtk_q_scheme_get(t->layout.scheme)->quantized)
			t->calib = p->calib_used ? p->calib_used : "none";
		if (j->widen_why && j->widen_why[i] && !(t->fallback = qtk_strdup(j->widen_why[i]))) {
			qtk_free(names);
			qtk_conv_report_free(rep);
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		}
		rep->src_bytes += t->src_bytes;
		rep->out_bytes += t->out_bytes;
		rep->nparams += p->t->nelem;
		if (p->mode != MODE_RAW && p->mode != MODE_PASS && !j->o->dry_run && p->t->nelem) {
			memset(&acc, 0, sizeof acc);
			for (size_t k = 0; k < p->nitems; k++)
				qtk_q_acc_merge(&acc, &j->acc[p->item0 + k]);
			qtk_q_metrics_from(&acc, &t->m);
			t->has_metrics = 1;
		}
	}
	rep->model = qtk_detect_model(names, j->n);
	qtk_free(names);
	if (j->cal) {
		rep->calib_damp = calib_damp(j->cal);
		rep->calib_vocab = calib_is_vocab(j->cal);
	}
	if (!(rep->resolved = qtk_strdup(j->s->path))) {
		qtk_conv_report_free(rep);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	*out = rep;
	return QTK_OK;
}

void qtk_conv_report_free(qtk_conv_report *rep)
{
	if (!rep)
		return;
	for (size_t i = 0; i < rep->ntensors; i++) {
		qtk_free(rep->tensors[i].name);
		qtk_free(rep->tensors[i].fallback);
		qtk_free(rep->tensors[i].requant_why);
	}
	qtk_free(rep->tensors);
	free(rep->metadata_json);
	qtk_free(rep->resolved);
	qtk_free(rep);
}
