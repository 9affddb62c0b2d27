/* convert: `qtk inspect FILE.gguf` — version, alignment, every KV (arrays
 * shown by element type, count and their first elements) and every tensor
 * (name, ggml type, shape in safetensors order and as ggml ne[], bytes,
 * offset); `--json` prints the same as one JSON object. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "qtk_formats.h"

#define SHOW_ELEMS 6   /* array elements shown in text mode */
#define SHOW_CHARS 60  /* string characters shown in text mode */

static void print_scalar(const qtk_gguf_kv *kv)
{
	switch (kv->type) {
	case QTK_GGUF_STRING:
		printf("\"%.*s%s\"", (int)(kv->count < SHOW_CHARS ? kv->count : SHOW_CHARS),
		       (const char *)kv->data, kv->count > SHOW_CHARS ? "..." : "");
		break;
	default: {
		/* reuse the array accessors by viewing the scalar as a 1-array */
		qtk_gguf_kv a = *kv;
		double d;
		int64_t i;
		a.type = QTK_GGUF_ARRAY;
		a.arr_type = kv->type;
		a.count = 1;
		if (kv->type == QTK_GGUF_BOOL)
			printf("%s", kv->data[0] ? "true" : "false");
		else if (kv->type == QTK_GGUF_F32 || kv->type == QTK_GGUF_F64) {
			if (!qtk_gguf_arr_f64(&a, 0, &d))
				printf("%.9g", d);
		} else if (!qtk_gguf_arr_int(&a, 0, &i))
			printf("%" PRId64, i);
		else if (!qtk_gguf_arr_f64(&a, 0, &d))
			printf("%.0f", d); /* u64 above INT64_MAX */
	}
	}
}

static void print_array(const qtk_gguf_kv *kv)
{
	printf("[%s x %" PRIu64 "]", qtk_gguf_vtype_name(kv->arr_type), kv->count);
	for (uint64_t i = 0; i < kv->count && i < SHOW_ELEMS; i++) {
		const char *s;
		uint64_t len;
		double d;
		printf(i ? ", " : " ");
		if (!qtk_gguf_arr_str(kv, i, &s, &len))
			printf("\"%.*s\"", (int)(len < 24 ? len : 24), s);
		else if (!qtk_gguf_arr_f64(kv, i, &d))
			printf("%.9g", d);
		else
			printf("...");
	}
	if (kv->count > SHOW_ELEMS)
		printf(", ...");
}

static int print_text(const char *path, const qtk_gguf_file *f)
{
	size_t n = qtk_gguf_count(f);
	uint64_t bytes = 0, elems = 0;

	printf("%s: GGUF v%u, %zu KVs, %zu tensors, alignment %u, data at %" PRIu64 ", %" PRIu64
	       " bytes\n", path, qtk_gguf_version(f), qtk_gguf_kv_count(f), n,
	       qtk_gguf_alignment(f), qtk_gguf_data_offset(f), qtk_gguf_file_size(f));
	for (size_t i = 0; i < qtk_gguf_kv_count(f); i++) {
		const qtk_gguf_kv *kv = qtk_gguf_kv_get(f, i);
		printf("  %-40s %-6s ", kv->key, qtk_gguf_vtype_name(kv->type));
		if (kv->type == QTK_GGUF_ARRAY)
			print_array(kv);
		else
			print_scalar(kv);
		printf("\n");
	}
	printf("%-44s %-6s %-20s %12s %12s\n", "tensor", "type", "shape", "bytes", "offset");
	for (size_t i = 0; i < n; i++) {
		const qtk_gguf_tensor *t = qtk_gguf_get(f, i);
		char shape[96];
		size_t k = (size_t)snprintf(shape, sizeof shape, "[");
		for (uint32_t d = 0; d < t->ndim && k < sizeof shape; d++)
			k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%" PRIu64, d ? ", " : "",
			                      t->shape[d]);
		if (k < sizeof shape)
			snprintf(shape + k, sizeof shape - k, "]");
		printf("%-44s %-6s %-20s %12" PRIu64 " %12" PRIu64 "\n", t->name,
		       qtk_ggml_type_name(t->type), shape, t->nbytes, t->file_offset);
		bytes += t->nbytes;
		elems += t->nelem;
	}
	printf("total: %zu tensors, %" PRIu64 " elements, %" PRIu64 " bytes of tensor data\n", n,
	       elems, bytes);
	return QTK_EXIT_OK;
}

static json_t *kv_json(const qtk_gguf_kv *kv)
{
	json_t *o = json_object(), *v;

	json_object_set_new(o, "type", json_string(qtk_gguf_vtype_name(kv->type)));
	if (kv->type == QTK_GGUF_STRING) {
		v = json_stringn((const char *)kv->data, (size_t)kv->count);
		json_object_set_new(o, "value", v ? v : json_null());
	} else if (kv->type == QTK_GGUF_ARRAY) {
		json_t *a = json_array();
		json_object_set_new(o, "elem_type", json_string(qtk_gguf_vtype_name(kv->arr_type)));
		json_object_set_new(o, "count", json_integer((json_int_t)kv->count));
		for (uint64_t i = 0; i < kv->count; i++) {
			const char *s;
			uint64_t len;
			double d;
			int64_t n;
			if (!qtk_gguf_arr_str(kv, i, &s, &len))
				v = json_stringn(s, (size_t)len);
			else if (kv->arr_type != QTK_GGUF_F32 && kv->arr_type != QTK_GGUF_F64 &&
			         !qtk_gguf_arr_int(kv, i, &n))
				v = json_integer(n);
			else if (!qtk_gguf_arr_f64(kv, i, &d))
				v = json_real(d);
			else
				v = json_null();   /* nested arrays: count only */
			json_array_append_new(a, v ? v : json_null());
		}
		json_object_set_new(o, "value", a);
	} else {
		qtk_gguf_kv a = *kv;
		double d;
		int64_t n;
		a.type = QTK_GGUF_ARRAY;
		a.arr_type = kv->type;
		a.count = 1;
		if (kv->type == QTK_GGUF_BOOL)
			json_object_set_new(o, "value", json_boolean(kv->data[0]));
		else if (kv->type != QTK_GGUF_F32 && kv->type != QTK_GGUF_F64 &&
		         !qtk_gguf_arr_int(&a, 0, &n))
			json_object_set_new(o, "value", json_integer(n));
		else if (!qtk_gguf_arr_f64(&a, 0, &d))
			json_object_set_new(o, "value", json_real(d));
	}
	return o;
}

static int print_json(const char *path, const qtk_gguf_file *f)
{
	json_t *root = json_object(), *kvs = json_object(), *ts = json_array();
	char *s;

	json_object_set_new(root, "path", json_string(path));
	json_object_set_new(root, "format", json_string("gguf"));
	json_object_set_new(root, "version", json_integer(qtk_gguf_version(f)));
	json_object_set_new(root, "alignment", json_integer(qtk_gguf_alignment(f)));
	json_object_set_new(root, "data_offset", json_integer((json_int_t)qtk_gguf_data_offset(f)));
	for (size_t i = 0; i < qtk_gguf_kv_count(f); i++) {
		const qtk_gguf_kv *kv = qtk_gguf_kv_get(f, i);
		json_object_set_new(kvs, kv->key, kv_json(kv));
	}
	json_object_set_new(root, "kv", kvs);
	for (size_t i = 0; i < qtk_gguf_count(f); i++) {
		const qtk_gguf_tensor *t = qtk_gguf_get(f, i);
		json_t *o = json_object(), *sh = json_array(), *ne = json_array();
		for (uint32_t d = 0; d < t->ndim; d++) {
			json_array_append_new(sh, json_integer((json_int_t)t->shape[d]));
			json_array_append_new(ne, json_integer((json_int_t)t->ne[d]));
		}
		json_object_set_new(o, "name", json_string(t->name));
		json_object_set_new(o, "type", json_string(qtk_ggml_type_name(t->type)));
		json_object_set_new(o, "shape", sh);
		json_object_set_new(o, "ne", ne);
		json_object_set_new(o, "bytes", json_integer((json_int_t)t->nbytes));
		json_object_set_new(o, "offset", json_integer((json_int_t)t->file_offset));
		json_array_append_new(ts, o);
	}
	json_object_set_new(root, "tensors", ts);
	s = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (!s) {
		fprintf(stderr, "qtk: out of memory\n");
		return QTK_EXIT_FAIL;
	}
	printf("%s\n", s);
	free(s);
	return QTK_EXIT_OK;
}

int cli_inspect_gguf(const char *path, int json)
{
	qtk_status st = { 0 };
	qtk_gguf_file *f;
	int rc;

	if (qtk_gguf_open(path, &f, &st))
		return cli_report(&st);
	rc = json ? print_json(path, f) : print_text(path, f);
	qtk_gguf_close(f);
	return rc;
}
