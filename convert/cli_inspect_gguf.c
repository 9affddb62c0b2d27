/* convert: `qtk inspect FILE.gguf` — version, alignment, every KV (arrays
 * shown by element type, count and their first elements) and every tensor
 * (name, ggml type, shape in safetensors order and as ggml ne[], bytes,
 * offset); `--json` prints the same as one JSON object. */
#include <inttypes.h>
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
		printf("\"%s%s\"", cli_text((const char *)kv->data,
		       kv->count < SHOW_CHARS ? (size_t)kv->count : SHOW_CHARS),
		       kv->count > SHOW_CHARS ? "..." : "");
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
			printf("\"%s\"", cli_text(s, len < 24 ? (size_t)len : 24));
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
	       " bytes\n", CLI_TXT(path), qtk_gguf_version(f), qtk_gguf_kv_count(f), n,
	       qtk_gguf_alignment(f), qtk_gguf_data_offset(f), qtk_gguf_file_size(f));
	for (size_t i = 0; i < qtk_gguf_kv_count(f); i++) {
		const qtk_gguf_kv *kv = qtk_gguf_kv_get(f, i);
		printf("  %-40s %-6s ", CLI_TXT(kv->key), qtk_gguf_vtype_name(kv->type));
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
		printf("%-44s %-6s %-20s %12" PRIu64 " %12" PRIu64 "\n", CLI_TXT(t->name),
		       qtk_ggml_type_name(t->type), shape, t->nbytes, t->file_offset);
		bytes += t->nbytes;
		elems += t->nelem;
	}
	printf("total: %zu tensors, %" PRIu64 " elements, %" PRIu64 " bytes of tensor data\n", n,
	       elems, bytes);
	return QTK_EXIT_OK;
}

/* A string value, cut at max bytes; 1 if it was cut. */
static int json_str(cj_writer *j, const char *key, const char *s, uint64_t len, size_t max)
{
	size_t n = cj_utf8_cut(s, len > SIZE_MAX ? SIZE_MAX : (size_t)len, max);

	cj_strn(j, key, s, n);
	return n < len;
}

/* One scalar of type vt at p (arrays' elements and scalar KVs alike). */
static void json_scalar(cj_writer *j, const char *key, uint32_t vt, const uint8_t *p)
{
	qtk_gguf_kv a;
	double d;
	int64_t i;

	memset(&a, 0, sizeof a);
	a.type = QTK_GGUF_ARRAY;
	a.arr_type = vt;
	a.count = 1;
	a.data = p;
	if (vt == QTK_GGUF_BOOL)
		cj_bool(j, key, p[0] != 0);
	else if (vt == QTK_GGUF_F32 || vt == QTK_GGUF_F64)
		cj_real(j, key, qtk_gguf_arr_f64(&a, 0, &d) ? 0 : d, vt == QTK_GGUF_F32 ? 9 : 17);
	else if (vt == QTK_GGUF_U64)
		cj_uint(j, key, (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
		                (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
		                (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56);
	else if (!qtk_gguf_arr_int(&a, 0, &i))
		cj_int(j, key, i);
	else
		cj_null(j, key);
}

/* Bytes of a scalar value type (0: string, array, unknown). */
static uint32_t scalar_size(uint32_t vt)
{
	static const uint8_t sz[QTK_GGUF_VTYPE_COUNT] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

	return vt < QTK_GGUF_VTYPE_COUNT ? sz[vt] : 0;
}

/* {"type", "value"}; arrays add "elem_type", "count" and show their first
 * CJ_MAX_ELEMS elements; "truncated": true when anything is left out. */
static void kv_json(cj_writer *j, const qtk_gguf_kv *kv)
{
	int cut = 0;

	cj_obj(j, kv->key);
	cj_str(j, "type", qtk_gguf_vtype_name(kv->type));
	if (kv->type == QTK_GGUF_STRING) {
		cut = json_str(j, "value", (const char *)kv->data, kv->count, CJ_MAX_STR);
		if (cut)
			cj_uint(j, "length", kv->count);
	} else if (kv->type == QTK_GGUF_ARRAY) {
		uint32_t sz = scalar_size(kv->arr_type);

		cj_str(j, "elem_type", qtk_gguf_vtype_name(kv->arr_type));
		cj_uint(j, "count", kv->count);
		cj_arr(j, "value");
		for (uint64_t i = 0; i < kv->count && i < CJ_MAX_ELEMS; i++) {
			const char *s;
			uint64_t len;

			if (!qtk_gguf_arr_str(kv, i, &s, &len))
				cut |= json_str(j, NULL, s, len, CJ_MAX_ELEM_STR);
			else if (sz)
				json_scalar(j, NULL, kv->arr_type, kv->data + i * sz);
			else
				cj_null(j, NULL); /* nested arrays: count only */
		}
		cj_end_arr(j);
		cut |= kv->count > CJ_MAX_ELEMS;
	} else {
		json_scalar(j, "value", kv->type, kv->data);
	}
	if (cut)
		cj_bool(j, "truncated", 1);
	cj_end_obj(j);
}

/* Streamed: memory stays flat whatever the KVs hold. */
static int print_json(const char *path, const qtk_gguf_file *f)
{
	cj_writer j;

	cj_init(&j, stdout);
	cj_obj(&j, NULL);
	cj_str(&j, "path", path);
	cj_str(&j, "format", "gguf");
	cj_uint(&j, "version", qtk_gguf_version(f));
	cj_uint(&j, "alignment", qtk_gguf_alignment(f));
	cj_uint(&j, "data_offset", qtk_gguf_data_offset(f));
	cj_obj(&j, "kv");
	for (size_t i = 0; i < qtk_gguf_kv_count(f); i++)
		kv_json(&j, qtk_gguf_kv_get(f, i));
	cj_end_obj(&j);
	cj_arr(&j, "tensors");
	for (size_t i = 0; i < qtk_gguf_count(f); i++) {
		const qtk_gguf_tensor *t = qtk_gguf_get(f, i);

		cj_obj(&j, NULL);
		cj_str(&j, "name", t->name);
		cj_str(&j, "type", qtk_ggml_type_name(t->type));
		cj_arr(&j, "shape");
		for (uint32_t d = 0; d < t->ndim; d++)
			cj_uint(&j, NULL, t->shape[d]);
		cj_end_arr(&j);
		cj_arr(&j, "ne");
		for (uint32_t d = 0; d < t->ndim; d++)
			cj_uint(&j, NULL, t->ne[d]);
		cj_end_arr(&j);
		cj_uint(&j, "bytes", t->nbytes);
		cj_uint(&j, "offset", t->file_offset);
		cj_end_obj(&j);
	}
	cj_end_arr(&j);
	cj_end_obj(&j);
	return cj_finish(&j);
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
