/* tests/fuzz: the packed-format reader on arbitrary bytes. Opens with full
 * verification, walks every tensor, looks each up by name and reads every
 * plane. Built as a libFuzzer target with -DQTK_LIBFUZZER (scripts/fuzz.sh);
 * the test suite runs fuzz_pack_one over tests/fuzz/seeds/pack/. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "qtk_formats.h"

int fuzz_pack_one(const uint8_t *data, size_t size);

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static int exercise(const uint8_t *data, size_t size);

/* Run the input as is, and again with its header and directory crc32s
 * recomputed, so that mutations reach the field checks behind the crcs. */
int fuzz_pack_one(const uint8_t *data, size_t size)
{
	uint8_t *m;
	uint64_t dir, str, ss;

	exercise(data, size);
	if (size < 128 || size > (1u << 20) || !(m = malloc(size)))
		return 0;
	memcpy(m, data, size);
	dir = le64(m + 40);
	str = le64(m + 56);
	ss = le64(m + 64);
	if (dir <= size && str <= size && ss <= size - str && dir <= str + ss)
		put32(m + 116, (uint32_t)crc32(0, m + dir, (uInt)(str + ss - dir)));
	put32(m + 124, (uint32_t)crc32(0, m, 124));
	exercise(m, size);
	free(m);
	return 0;
}

static int exercise(const uint8_t *data, size_t size)
{
	qtk_pack_file *f;
	qtk_status st;
	int ok = 0;

	if (qtk_pack_open_mem(data, size, "fuzz", QTK_PACK_OPEN_VERIFY, &f, &st) != QTK_OK) {
		/* also the cheap path: structure only */
		if (qtk_pack_open_mem(data, size, "fuzz", 0, &f, &st) != QTK_OK)
			return 0;
	}
	for (size_t i = 0; i < qtk_pack_count(f); i++) {
		const qtk_pack_tensor *t = qtk_pack_get(f, i);

		if (qtk_pack_find(f, t->name) != t)
			__builtin_trap(); /* the index must find every tensor */
		for (int p = 0; p < QTK_PLANE_MAX; p++) {
			uint8_t *buf;

			/* stored bytes are in bounds: touch the first and last */
			if (t->planes[p].stored_size)
				ok += ((const uint8_t *)t->planes[p].data)[0] +
				      ((const uint8_t *)t->planes[p].data)[t->planes[p].stored_size - 1];
			if (!t->planes[p].size || t->planes[p].size > (64u << 20))
				continue;
			buf = qtk_malloc((size_t)t->planes[p].size);
			if (buf && qtk_pack_plane_read(f, t, p, buf, &st) == QTK_OK)
				ok++;
			qtk_free(buf);
		}
	}
	(void)qtk_pack_metadata(f, NULL);
	qtk_pack_close(f);
	return ok >= 0 ? 0 : 1;
}

#ifdef QTK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_pack_one(data, size);
	return 0;
}
#endif
