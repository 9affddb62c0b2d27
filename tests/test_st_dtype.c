/* tests: SIMD dtype conversions (quant/dtype_simd.c) are bit-identical to
 * the scalar reference at every ISA level, for every F16/BF16 pattern, at
 * unaligned addresses and odd lengths. */
#include <stdlib.h>

#include "../quant/qtk_quant.h"
#include "test.h"

static const qtk_isa isas[] = { QTK_ISA_AVX2, QTK_ISA_AVX512 };

TEST(st_dtype_simd_to_f32_all_patterns)
{
	size_t n = 65536 + 13; /* every pattern, plus a tail */
	uint8_t *raw = malloc(2 * n + 1);
	float *ref = malloc(n * 4), *got = malloc(n * 4);
	for (size_t i = 0; i < n; i++) {
		uint16_t h = (uint16_t)(i * 40503u); /* a permutation of all patterns */
		memcpy(raw + 1 + 2 * i, &h, 2);    /* odd address: unaligned */
	}
	int tested = 0;
	for (int d = 0; d < 2; d++) {
		qtk_dtype dt = d ? QTK_DT_BF16 : QTK_DT_F16;
		qtk_isa old = qtk_isa_force(QTK_ISA_SCALAR);
		REQUIRE(qtk_to_f32(dt, raw + 1, ref, n) == QTK_OK);
		for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
			if (!qtk_isa_supported(isas[k]))
				continue;
			qtk_isa_force(isas[k]);
			for (size_t len = n - 17; len <= n; len += 8) { /* several tails */
				memset(got, 0xAB, n * 4);
				REQUIRE(qtk_to_f32(dt, raw + 1, got, len) == QTK_OK);
				CHECK_MSG(!memcmp(ref, got, len * 4), "%s %s len %zu differs",
				          qtk_dtype_name(dt), qtk_isa_name(isas[k]), len);
			}
			tested++;
		}
		qtk_isa_force(old);
	}
	free(raw);
	free(ref);
	free(got);
	if (!tested)
		SKIP("no SIMD level on this CPU");
}

TEST(st_dtype_simd_f32_to_half)
{
	size_t n = (1u << 20) + 5;
	float *src = malloc(n * 4);
	uint8_t *ref = malloc(2 * n + 1), *got = malloc(2 * n + 1);
	uint64_t s = 42;
	static const uint32_t special[] = { 0, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u,
	                                    0x7f800001u, 0xff800001u, 0x7fffffffu, 0x3f808000u,
	                                    0x3f818000u, 0x7f7fffffu, 0x00000001u, 0x3f80ffffu };
	for (size_t i = 0; i < n; i++) {
		uint32_t u = (uint32_t)t_rand_u64(&s);
		if (i < sizeof special / sizeof special[0])
			u = special[i];
		else if (i % 3 == 0) /* many exact halfway cases */
			u = (u & 0xffff0000u) | 0x8000u;
		memcpy(&src[i], &u, 4);
	}
	int tested = 0;
	for (int d = 0; d < 2; d++) {
		qtk_dtype dt = d ? QTK_DT_F16 : QTK_DT_BF16;
		if (d) /* F16: subnormal, overflow and halfway cases of its own */
			for (size_t i = 13; i < n; i += 2) {
				uint32_t u;
				memcpy(&u, &src[i], 4);
				u = (u & 0x80000000u) | (0x33000000u + (u % 0x14800000u));
				u = i % 4 == 1 ? (u & 0xffffe000u) | 0x1000u : u; /* halfway */
				memcpy(&src[i], &u, 4);
			}
		qtk_isa old = qtk_isa_force(QTK_ISA_SCALAR);
		REQUIRE(qtk_from_f32(dt, src, ref + 1, n) == QTK_OK);
		for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
			if (!qtk_isa_supported(isas[k]))
				continue;
			qtk_isa_force(isas[k]);
			memset(got, 0, 2 * n + 1);
			REQUIRE(qtk_from_f32(dt, src, got + 1, n) == QTK_OK);
			size_t bad = 0, first = 0;
			for (size_t i = 0; i < n; i++)
				if (memcmp(ref + 1 + 2 * i, got + 1 + 2 * i, 2) && !bad++)
					first = i;
			CHECK_MSG(!bad, "%s %s: %zu differ, first at %zu", qtk_dtype_name(dt),
			          qtk_isa_name(isas[k]), bad, first);
			tested++;
		}
		qtk_isa_force(old);
	}
	free(src);
	free(ref);
	free(got);
	if (!tested)
		SKIP("no SIMD level on this CPU");
}
