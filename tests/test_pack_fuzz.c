/* tests: the fuzz target's regression pass — every seed in
 * tests/fuzz/seeds/pack/ through fuzz_pack_one, then a few thousand
 * deterministic mutations of each (byte flips, truncations, field-sized
 * overwrites with boundary values), half of them with the header and
 * directory crc32s recomputed so the mutation reaches the field checks
 * behind them. A crash fails the test. */
#include <dirent.h>
#include <stdlib.h>
#include <zlib.h>

#include "qtk_formats.h"
#include "test.h"

int fuzz_pack_one(const uint8_t *data, size_t size);

TEST(pack_fuzz_seeds_regression)
{
	const char *dir = "tests/fuzz/seeds/pack";
	DIR *d = opendir(dir);
	struct dirent *e;
	int seeds = 0;
	uint64_t rs = 7;

	REQUIRE(d);
	while ((e = readdir(d)) != NULL) {
		char path[4096];
		size_t n;
		uint8_t *b, *m;
		qtk_pack_file *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		b = t_read_file(path, &n);
		REQUIRE(b);
		seeds++;
		/* the seeds themselves are valid files */
		CHECK_MSG(qtk_pack_open_mem(b, n, path, QTK_PACK_OPEN_VERIFY, &f, NULL) == QTK_OK, "%s", path);
		qtk_pack_close(f);
		CHECK_EQ(fuzz_pack_one(b, n), 0);
		m = malloc(n);
		for (int k = 0; k < 6000; k++) {
			static const uint64_t vals[] = { 0, 1, 0x7f, 0xff, 0xffff, 0xffffffffu,
				UINT64_MAX, 1ull << 63, 64, 4096 };
			size_t at = (size_t)(t_rand_u64(&rs) % n), len = n;
			int kind = (int)(t_rand_u64(&rs) % 3);

			memcpy(m, b, n);
			if (kind == 0) {
				m[at] ^= (uint8_t)(1u << (t_rand_u64(&rs) % 8));
			} else if (kind == 1) {
				len = at;
			} else {
				uint64_t v = vals[t_rand_u64(&rs) % (sizeof vals / sizeof vals[0])];
				for (size_t j = 0; j < 8 && at + j < n; j++)
					m[at + j] = (uint8_t)(v >> (8 * j));
			}
			if (k % 2 && len >= 128) {
				/* re-seal: directory crc (if the range is sane), header crc */
				uint64_t dof = 0, str = 0, ss = 0;
				for (int j = 7; j >= 0; j--) {
					dof = dof << 8 | m[40 + j];
					str = str << 8 | m[56 + j];
					ss = ss << 8 | m[64 + j];
				}
				if (dof <= len && str <= len && ss <= len - str && dof <= str + ss) {
					uint32_t c = (uint32_t)crc32(0, m + dof, (uInt)(str + ss - dof));
					memcpy(m + 116, &c, 4);
				}
				{
					uint32_t c = (uint32_t)crc32(0, m, 124);
					memcpy(m + 124, &c, 4);
				}
			}
			fuzz_pack_one(m, len);
		}
		free(m);
		free(b);
	}
	closedir(d);
	CHECK(seeds >= 3);
}
