/* tests: qtk_crc32 equals zlib's crc32 for every length around the
 * folding thresholds, every alignment, chained calls and long buffers, at
 * every ISA level, with and without the wide (VPCLMULQDQ) folds. */
#include <stdlib.h>
#include <zlib.h>

#include "qtk_quant.h"
#include "test.h"

TEST(crc32_equals_zlib)
{
	enum { N = 1 << 20 };
	static const qtk_isa isas[] = { QTK_ISA_SCALAR, QTK_ISA_AVX2, QTK_ISA_AVX512 };
	uint8_t *b = malloc(N + 64);
	qtk_isa isa0 = qtk_isa_active();
	uint32_t s = 7;

	REQUIRE(b);
	for (size_t i = 0; i < N + 64; i++) {
		s = s * 1103515245u + 12345u;
		b[i] = (uint8_t)(s >> 16);
	}
	for (size_t k = 0; k < 6; k++) {
		if (!qtk_isa_supported(isas[k / 2]))
			continue;
		qtk_isa_force(isas[k / 2]);
		if (!qtk_crc32_wide(k % 2) && k % 2)
			continue; /* no VPCLMULQDQ here: the 64-byte fold ran already */
		for (size_t off = 0; off < 17; off++)
			for (size_t n = 0; n < 1400; n += n < 700 ? 1 : 7)
				CHECK_MSG(qtk_crc32(0, b + off, n) == (uint32_t)crc32(0, b + off, (uInt)n),
				          "%s%s: offset %zu length %zu", qtk_isa_name(isas[k / 2]),
				          k % 2 ? " wide" : "", off, n);
		CHECK_EQ(qtk_crc32(0, b, N), (uint32_t)crc32(0, b, N));
		CHECK_EQ(qtk_crc32(0xdeadbeef, b + 3, N - 5), (uint32_t)crc32(0xdeadbeef, b + 3, N - 5));
		/* chained */
		CHECK_EQ(qtk_crc32(qtk_crc32(0, b, 1000), b + 1000, 5000),
		         (uint32_t)crc32(0, b, 6000));
		/* all-zero and all-ones buffers */
		memset(b, 0, 4096);
		CHECK_EQ(qtk_crc32(0, b, 4096), (uint32_t)crc32(0, b, 4096));
		memset(b, 0xff, 4096);
		CHECK_EQ(qtk_crc32(0, b, 4096), (uint32_t)crc32(0, b, 4096));
	}
	qtk_isa_force(isa0);
	qtk_crc32_wide(1);
	free(b);
}
