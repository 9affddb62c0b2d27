/* tests/fuzz: the GGUF reader on arbitrary bytes. Opens from memory, walks
 * every KV through the typed getters and array accessors and copies it
 * into a v3 KV list, looks every
 * tensor up by name and dequantizes its first and last elements. Built as
 * a libFuzzer target with -DQTK_LIBFUZZER (scripts/fuzz.sh); the test
 * suite runs fuzz_gguf_one over tests/fuzz/seeds/gguf/. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "qtk_formats.h"

int fuzz_gguf_one(const uint8_t *data, size_t size);

static void walk_kv(const qtk_gguf_file *f, const qtk_gguf_kv *kv)
{
	qtk_status st;
	uint64_t u, len;
	int64_t i;
	double d;
	int b;
	const char *s;

	qtk_gguf_get_uint(f, kv->key, &u, &st);
	qtk_gguf_get_int(f, kv->key, &i, &st);
	qtk_gguf_get_f64(f, kv->key, &d, &st);
	qtk_gguf_get_bool(f, kv->key, &b, &st);
	if (!qtk_gguf_get_str(f, kv->key, &s, &len, &st) && len)
		(void)(volatile char)s[len - 1];
	if (kv->type != QTK_GGUF_ARRAY)
		return;
	for (uint64_t k = 0; k < kv->count && k < 4096; k++) {
		if (!qtk_gguf_arr_str(kv, k, &s, &len) && len)
			(void)(volatile char)s[len - 1];
		qtk_gguf_arr_f64(kv, k, &d);
		qtk_gguf_arr_int(kv, k, &i);
	}
	/* one past the end must be refused */
	qtk_gguf_arr_f64(kv, kv->count, &d);
}

int fuzz_gguf_one(const uint8_t *data, size_t size)
{
	qtk_gguf_file *f;
	qtk_gguf_kvs *kvs;
	qtk_status st;
	float buf[64];

	if (qtk_gguf_open_mem(data, size, "fuzz", &f, &st) != QTK_OK)
		return 0;
	kvs = qtk_gguf_kvs_new();
	for (size_t i = 0; i < qtk_gguf_kv_count(f); i++) {
		const qtk_gguf_kv *kv = qtk_gguf_kv_get(f, i);
		walk_kv(f, kv);
		if (qtk_gguf_kv_find(f, kv->key) == NULL)
			__builtin_trap();
		/* re-encoding for v3 trusts the reader's validation */
		if (kvs)
			qtk_gguf_kvs_add_kv(kvs, kv, &st);
	}
	qtk_gguf_kvs_free(kvs);
	for (size_t i = 0; i < qtk_gguf_count(f); i++) {
		const qtk_gguf_tensor *t = qtk_gguf_get(f, i);
		uint64_t n = t->nelem < 64 ? t->nelem : 64;
		if (qtk_gguf_find(f, t->name) != t)
			__builtin_trap();
		if (t->file_offset + t->nbytes > size)
			__builtin_trap();
		qtk_gguf_read_f32(t, 0, n, buf, &st);
		qtk_gguf_read_f32(t, t->nelem - n, n, buf, &st);
		qtk_gguf_read_f32(t, t->nelem, 1, buf, &st);
	}
	qtk_gguf_close(f);
	return 0;
}

#ifdef QTK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_gguf_one(data, size);
}
#endif
