/* tests/fuzz: the activation statistics readers (qtk safetensors, imatrix
 * GGUF, legacy .dat; told by content) on arbitrary bytes. Opens from
 * memory, looks every weight up under its name and its key, reads every
 * value, and merges the set into itself. Built as a libFuzzer target with
 * -DQTK_LIBFUZZER (scripts/fuzz.sh); the test suite runs fuzz_stats_one
 * over tests/fuzz/seeds/stats/. */
#include <stddef.h>
#include <stdint.h>

#include "qtk_formats.h"

int fuzz_stats_one(const uint8_t *data, size_t size);

int fuzz_stats_one(const uint8_t *data, size_t size)
{
	qtk_stats *s, *m = NULL;
	qtk_status st;
	volatile double acc = 0;

	if (qtk_stats_open_mem(data, size, "fuzz", &s, NULL, &st) != QTK_OK)
		return 0;
	for (size_t i = 0; i < qtk_stats_count(s); i++) {
		const qtk_stats_entry *e = qtk_stats_get(s, i);
		if (qtk_stats_find(s, e->name) != e || qtk_stats_find(s, e->key) != e)
			__builtin_trap();
		for (uint64_t j = 0; j < e->cols; j++)
			acc += e->sum2[j] + (e->sum ? e->sum[j] : 0) +
			       (e->xtx ? e->xtx[j * e->cols + j] : 0);
	}
	/* a valid set merges into an empty one and into a copy of itself */
	if (qtk_stats_new(&m, &st) == QTK_OK && qtk_stats_merge(m, s, &st) == QTK_OK)
		(void)qtk_stats_merge(m, s, &st);
	qtk_stats_free(m);
	qtk_stats_free(s);
	return 0;
}

#ifdef QTK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_stats_one(data, size);
}
#endif
