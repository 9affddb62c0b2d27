/* convert: `qtk inspect FILE.qtk` — the directory of a packed file: per
 * tensor scheme, group, shape, bits per weight (incl. scales), bytes; totals
 * and metadata; `--json` prints the same as one JSON object. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "qtk_formats.h"

/* The metadata qtk convert writes, summarized (any other JSON as it is):
 * provenance, options, recipe, and the worst tensor of the error
 * statistics; --json prints everything. */
static void print_metadata(const char *text)
{
	json_t *m = json_loads(text, 0, NULL), *src, *files, *t, *opts, *rec;
	const char *key, *worst = NULL;
	double wv = -1;
	size_t nstat = 0, i;

	if (!json_is_object(m) || !json_is_object(json_object_get(m, "source"))) {
		printf("metadata: %s\n", CLI_TXT(text));
		json_decref(m);
		return;
	}
	printf("metadata (qtk %s", json_string_value(json_object_get(m, "qtk_version")) ?
	       CLI_TXT(json_string_value(json_object_get(m, "qtk_version"))) : "?");
	if (json_is_string(json_object_get(m, "model")))
		printf(", model %s", CLI_TXT(json_string_value(json_object_get(m, "model"))));
	printf("; --json prints all of it):\n");
	src = json_object_get(m, "source");
	files = json_object_get(src, "files");
	printf("  source: %s", json_string_value(json_object_get(src, "format")) ?
	       CLI_TXT(json_string_value(json_object_get(src, "format"))) : "?");
	json_array_foreach(files, i, t)
		printf("%s %s (%lld bytes%s%s)", i ? "," : "",
		       json_string_value(json_object_get(t, "name")) ?
		       CLI_TXT(json_string_value(json_object_get(t, "name"))) : "?",
		       (long long)json_integer_value(json_object_get(t, "bytes")),
		       json_string_length(json_object_get(t, "crc32")) ? ", crc32 " : "",
		       json_string_length(json_object_get(t, "crc32")) ?
		       CLI_TXT(json_string_value(json_object_get(t, "crc32"))) : "");
	printf("\n");
	if (json_is_object(json_object_get(m, "config")))
		printf("  config.json: stored\n");
	opts = json_object_get(m, "options");
	if (json_is_object(opts)) {
		json_t *v;
		printf("  options:");
		json_object_foreach(opts, key, v) {
			char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
			printf(" %s=%s", CLI_TXT(key), s ? CLI_TXT(s) : "?");
			free(s);
		}
		printf("\n");
	}
	rec = json_object_get(m, "recipe");
	if (json_is_object(rec))
		printf("  recipe: scheme %s, group %s, %zu rules\n",
		       json_string_value(json_object_get(rec, "scheme")) ?
		       CLI_TXT(json_string_value(json_object_get(rec, "scheme"))) : "?",
		       json_string_value(json_object_get(rec, "group")) ?
		       CLI_TXT(json_string_value(json_object_get(rec, "group"))) : "?",
		       json_array_size(json_object_get(rec, "rules")));
	json_object_foreach(json_object_get(m, "tensors"), key, t) {
		json_t *r = json_object_get(t, "rel_fro");
		if (!json_is_number(r))
			continue;
		nstat++;
		if (json_number_value(r) > wv) {
			wv = json_number_value(r);
			worst = key;
		}
	}
	if (nstat)
		printf("  error statistics: %zu tensors, worst relative error %.4g (%s)\n", nstat,
		       wv, CLI_TXT(worst));
	json_decref(m);
}

static uint64_t tensor_bytes(const qtk_pack_tensor *t, int stored)
{
	uint64_t b = 0;

	for (int p = 0; p < QTK_PLANE_MAX; p++)
		b += stored ? t->planes[p].stored_size : t->planes[p].size;
	return b;
}

static void shape_str(const qtk_pack_tensor *t, char *buf, size_t n)
{
	size_t k = (size_t)snprintf(buf, n, "[");

	for (uint32_t d = 0; d < t->ndim && k < n; d++)
		k += (size_t)snprintf(buf + k, n - k, "%s%llu", d ? ", " : "",
		                      (unsigned long long)t->shape[d]);
	if (k < n)
		snprintf(buf + k, n - k, "]");
}

static void group_str(const qtk_pack_tensor *t, char *buf, size_t n)
{
	if (!qtk_q_scheme_get(t->layout.scheme)->quantized)
		snprintf(buf, n, "-");
	else if (t->layout.group == QTK_GROUP_ROW)
		snprintf(buf, n, "row");
	else
		snprintf(buf, n, "%u", t->layout.group);
}

static int print_text(const char *path, const qtk_pack_file *f)
{
	uint64_t total = 0, stored = 0, elems = 0;
	size_t n = qtk_pack_count(f);

	printf("%s: qtk packed format %d.%u, %zu tensors, %llu bytes\n", CLI_TXT(path),
	       QTK_PACK_VERSION_MAJOR, qtk_pack_version_minor(f), n,
	       (unsigned long long)qtk_pack_file_size(f));
	printf("%-40s %-12s %-6s %-5s %-20s %7s %12s\n", "name", "scheme", "group", "src",
	       "shape", "bpw", "bytes");
	for (size_t i = 0; i < n; i++) {
		const qtk_pack_tensor *t = qtk_pack_get(f, i);
		char shape[160], group[16];

		shape_str(t, shape, sizeof shape);
		group_str(t, group, sizeof group);
		printf("%-40s %-12s %-6s %-5s %-20s %7.3f %12llu%s\n", CLI_TXT(t->name),
		       qtk_q_scheme_get(t->layout.scheme)->name, group,
		       qtk_dtype_name(t->src_dtype), shape,
		       qtk_q_bits_per_weight(&t->layout, t->rows, t->cols),
		       (unsigned long long)tensor_bytes(t, 0),
		       tensor_bytes(t, 1) != tensor_bytes(t, 0) ? " (zstd)" : "");
		total += tensor_bytes(t, 0);
		stored += tensor_bytes(t, 1);
		elems += t->rows * t->cols;
	}
	printf("total: %llu elements, %llu bytes (%.3f bits per weight)",
	       (unsigned long long)elems, (unsigned long long)total,
	       elems ? 8.0 * (double)total / (double)elems : 0.0);
	if (stored != total)
		printf(", %llu stored (zstd)", (unsigned long long)stored);
	printf("\n");
	print_metadata(qtk_pack_metadata(f, NULL));
	return QTK_EXIT_OK;
}

static void tensor_json(cj_writer *j, const qtk_pack_tensor *t)
{
	cj_obj(j, NULL);
	cj_str(j, "name", t->name);
	cj_str(j, "scheme", qtk_q_scheme_get(t->layout.scheme)->name);
	if (t->layout.group == QTK_GROUP_ROW)
		cj_str(j, "group", "row");
	else
		cj_uint(j, "group", t->layout.group);
	cj_str(j, "src_dtype", qtk_dtype_name(t->src_dtype));
	cj_arr(j, "shape");
	for (uint32_t d = 0; d < t->ndim; d++)
		cj_uint(j, NULL, t->shape[d]);
	cj_end_arr(j);
	cj_real(j, "bits_per_weight", qtk_q_bits_per_weight(&t->layout, t->rows, t->cols), 17);
	cj_uint(j, "bytes", tensor_bytes(t, 0));
	cj_arr(j, "planes");
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		const qtk_pack_plane *pl = &t->planes[p];

		if (!pl->size)
			continue;
		cj_obj(j, NULL);
		cj_int(j, "plane", p);
		cj_str(j, "dtype", qtk_dtype_name(qtk_pack_plane_dtype(t, p)));
		cj_uint(j, "offset", pl->offset);
		cj_uint(j, "size", pl->size);
		cj_uint(j, "stored_size", pl->stored_size);
		cj_uint(j, "crc32", pl->crc32);
		cj_bool(j, "zstd", (pl->flags & QTK_PACK_PF_ZSTD) != 0);
		cj_bool(j, "bytesplit", (pl->flags & QTK_PACK_PF_BYTESPLIT) != 0);
		cj_end_obj(j);
	}
	cj_end_arr(j);
	cj_end_obj(j);
}

/* Streamed; the metadata is parsed (jansson checks it is UTF-8 JSON) and
 * written back compact, or null if it is not JSON. */
static int print_json(const char *path, const qtk_pack_file *f)
{
	uint64_t total = 0, stored = 0;
	json_t *meta;
	cj_writer j;

	cj_init(&j, stdout);
	cj_obj(&j, NULL);
	cj_str(&j, "file", path);
	cj_str(&j, "format", "qtk");
	cj_arr(&j, "version");
	cj_int(&j, NULL, QTK_PACK_VERSION_MAJOR);
	cj_uint(&j, NULL, qtk_pack_version_minor(f));
	cj_end_arr(&j);
	cj_uint(&j, "file_size", qtk_pack_file_size(f));
	cj_arr(&j, "tensors");
	for (size_t i = 0; i < qtk_pack_count(f); i++) {
		tensor_json(&j, qtk_pack_get(f, i));
		total += tensor_bytes(qtk_pack_get(f, i), 0);
		stored += tensor_bytes(qtk_pack_get(f, i), 1);
	}
	cj_end_arr(&j);
	cj_uint(&j, "total_bytes", total);
	cj_uint(&j, "stored_bytes", stored);
	meta = json_loads(qtk_pack_metadata(f, NULL), 0, NULL);
	cj_raw_begin(&j, "metadata");
	if (!meta || json_dumpf(meta, stdout, JSON_COMPACT | JSON_ENCODE_ANY) != 0)
		fputs("null", stdout);
	json_decref(meta);
	cj_end_obj(&j);
	return cj_finish(&j);
}

int cli_inspect_pack(const char *path, int json)
{
	qtk_pack_file *f;
	qtk_status st;
	int rc;

	if (qtk_pack_open(path, 0, &f, &st) != QTK_OK)
		return cli_report(&st);
	rc = json ? print_json(path, f) : print_text(path, f);
	qtk_pack_close(f);
	return rc;
}
