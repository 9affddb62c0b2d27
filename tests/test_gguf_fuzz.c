/* tests: the GGUF fuzz target's regression pass — every seed in
 * tests/fuzz/seeds/gguf/ through fuzz_gguf_one, then a few thousand
 * deterministic mutations of each (bit flips, truncations, 4- and 8-byte
 * overwrites with boundary values: the widths of GGUF's counts, lengths,
 * dims, types and offsets). A crash or sanitizer report fails the test.
 * built_v*.gguf seeds are valid files; stories260k_head_v1.gguf is the
 * metadata of the real v1 file without its tensor data. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "qtk_formats.h"
#include "test.h"

int fuzz_gguf_one(const uint8_t *data, size_t size);

TEST(gguf_fuzz_seeds_regression)
{
	const char *dir = "tests/fuzz/seeds/gguf";
	DIR *d = opendir(dir);
	struct dirent *e;
	int seeds = 0, opened = 0;
	uint64_t rs = 11;

	REQUIRE(d);
	while ((e = readdir(d)) != NULL) {
		static const uint64_t vals[] = { 0, 1, 3, 4, 5, 8, 9, 13, 31, 32, 0x7f, 0xff, 0xffff,
			0xffffffffu, UINT64_MAX, 1ull << 63, 1ull << 62, UINT64_MAX - 7 };
		char path[4096];
		size_t n;
		uint8_t *b, *m;
		qtk_gguf_file *f;
		qtk_status st;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		b = t_read_file(path, &n);
		REQUIRE(b && n > 0);
		seeds++;
		if (!strncmp(e->d_name, "built_", 6)) {
			CHECK_MSG(qtk_gguf_open_mem(b, n, path, &f, &st) == QTK_OK, "%s: %s", path, st.msg);
			qtk_gguf_close(f);
			opened++;
		}
		CHECK_EQ(fuzz_gguf_one(b, n), 0);
		m = malloc(n);
		for (int k = 0; k < 4000; k++) {
			size_t at = (size_t)(t_rand_u64(&rs) % n), len = n;
			int kind = (int)(t_rand_u64(&rs) % 4);

			memcpy(m, b, n);
			if (kind == 0)
				m[at] ^= (uint8_t)(1u << (t_rand_u64(&rs) % 8));
			else if (kind == 1)
				len = at;
			else {
				uint64_t v = vals[t_rand_u64(&rs) % (sizeof vals / sizeof vals[0])];
				for (size_t j = 0; j < (kind == 2 ? 4u : 8u) && at + j < n; j++)
					m[at + j] = (uint8_t)(v >> (8 * j));
			}
			CHECK_EQ(fuzz_gguf_one(m, len), 0);
		}
		free(m);
		free(b);
	}
	closedir(d);
	CHECK(seeds >= 4);
	CHECK_EQ(opened, 3);
}
