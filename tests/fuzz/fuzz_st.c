/* tests/fuzz: safetensors reader target. fuzz_st_one parses the input as a
 * whole .safetensors file in memory, then touches every tensor the way a
 * consumer would (find by name, convert floats to f32). Must never crash,
 * leak or read out of bounds, whatever the bytes. */
#include <stdint.h>
#include <stddef.h>

#include "../../formats/qtk_formats.h"
#include "../../formats/st_private.h"

int fuzz_st_one(const uint8_t *data, size_t size);

int fuzz_st_one(const uint8_t *data, size_t size)
{
	qtk_status st;
	qtk_st_file *f = NULL;
	if (qtk_st_open_mem(data, size, "fuzz.safetensors", &f, &st) != QTK_OK)
		return 0;
	float buf[64];
	for (size_t i = 0; i < qtk_st_count(f); i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i);
		if (qtk_st_find(f, t->name) != t)
			__builtin_trap();
		uint64_t n = t->nelem < 64 ? t->nelem : 64;
		if (qtk_st_read_f32(t, 0, n, buf, &st) == QTK_OK && n)
			(void)qtk_st_read_f32(t, t->nelem - n, n, buf, &st);
	}
	for (size_t i = 0; i < qtk_st_meta_count(f); i++)
		(void)qtk_st_meta_get(f, qtk_st_meta_key(f, i));
	qtk_st_close(f);
	return 0;
}

#ifdef QTK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_st_one(data, size);
}
#endif
