/* quant (base): crc32 (the zlib / gzip / PNG CRC: reflected polynomial
 * 0xEDB88320, initial and final inversion), equal to zlib's crc32().
 * Long buffers are folded 64 bytes at a time with carry-less multiplies
 * (PCLMULQDQ, on every CPU qtk runs AVX2 kernels on), following Intel's
 * "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ"
 * (Gopal et al., 2009): each 128-bit accumulator a is advanced over D bits
 * of message as a.lo * (x^(D+32) mod P) xor a.hi * (x^(D-32) mod P), the
 * constants bit-reflected and shifted for the reflected domain; the final
 * 128 bits are reduced to 64, then to 32 by Barrett reduction with
 * mu = floor(x^64 / P). Heads, tails and short buffers go to zlib. */
#include <immintrin.h>
#include <zlib.h>

#include "qtk_quant.h"

/* Folding constants for the reflected CRC-32 polynomial (33 bits each). */
static const uint64_t k_fold512[2] = { 0x154442bd4ull, 0x1c6e41596ull };
static const uint64_t k_fold128[2] = { 0x1751997d0ull, 0x0ccaa009eull };
static const uint64_t k_fold64 = 0x163cd6124ull;
static const uint64_t k_barrett[2] = { 0x1db710641ull, 0x1f7011641ull }; /* P, mu */

/* a advanced over one distance (constants k) and xored into d. */
__attribute__((target("pclmul,sse4.1"))) static inline __m128i
fold(__m128i a, __m128i k, __m128i d)
{
	__m128i lo = _mm_clmulepi64_si128(a, k, 0x00);
	__m128i hi = _mm_clmulepi64_si128(a, k, 0x11);
	return _mm_xor_si128(_mm_xor_si128(lo, hi), d);
}

/* The 64-byte fold's four lanes l, then the n < 64 bytes at p (n % 16 ==
 * 0) folded in, reduced to the 32-bit state. */
__attribute__((target("pclmul,sse4.1"))) static uint32_t
crc_finish(const __m128i l[4], const uint8_t *p, size_t n)
{
	__m128i k = _mm_loadu_si128((const __m128i *)k_fold128);
	__m128i mask32 = _mm_setr_epi32(-1, 0, -1, 0), t, u, a0;

	a0 = fold(l[0], k, l[1]);
	a0 = fold(a0, k, l[2]);
	a0 = fold(a0, k, l[3]);
	for (; n >= 16; p += 16, n -= 16)
		a0 = fold(a0, k, _mm_loadu_si128((const __m128i *)p));
	/* 128 -> 96 -> 64 bits */
	t = _mm_clmulepi64_si128(a0, k, 0x10);
	a0 = _mm_xor_si128(_mm_srli_si128(a0, 8), t);
	u = _mm_srli_si128(a0, 4);
	a0 = _mm_and_si128(a0, mask32);
	a0 = _mm_clmulepi64_si128(a0, _mm_cvtsi64_si128((long long)k_fold64), 0x00);
	a0 = _mm_xor_si128(a0, u);
	/* Barrett: 64 -> 32 bits */
	k = _mm_loadu_si128((const __m128i *)k_barrett);
	t = _mm_and_si128(a0, mask32);
	t = _mm_clmulepi64_si128(t, k, 0x10);
	t = _mm_and_si128(t, mask32);
	t = _mm_clmulepi64_si128(t, k, 0x00);
	a0 = _mm_xor_si128(a0, t);
	return (uint32_t)_mm_extract_epi32(a0, 1);
}

/* crc: the running (inverted) state; n >= 64, n % 16 == 0. */
__attribute__((target("pclmul,sse4.1"))) static uint32_t
crc_fold(uint32_t crc, const uint8_t *p, size_t n)
{
	__m128i k = _mm_loadu_si128((const __m128i *)k_fold512);
	__m128i l[4];

	for (int i = 0; i < 4; i++)
		l[i] = _mm_loadu_si128((const __m128i *)(p + 16 * i));
	l[0] = _mm_xor_si128(l[0], _mm_cvtsi32_si128((int)crc));
	for (p += 64, n -= 64; n >= 64; p += 64, n -= 64)
		for (int i = 0; i < 4; i++)
			l[i] = fold(l[i], k, _mm_loadu_si128((const __m128i *)(p + 16 * i)));
	return crc_finish(l, p, n);
}

/* ---- wide folds: the 64-byte step's four 128-bit lanes, several steps at
 * a time, with VPCLMULQDQ on 256- or 512-bit registers ------------------ */

/* the same fold on every 128-bit lane */
#define FOLD512(a, k, d) \
	_mm512_xor_si512(_mm512_xor_si512(_mm512_clmulepi64_epi128(a, k, 0x00), \
	                                  _mm512_clmulepi64_epi128(a, k, 0x11)), d)
#define FOLD256(a, k, d) \
	_mm256_xor_si256(_mm256_xor_si256(_mm256_clmulepi64_epi128(a, k, 0x00), \
	                                  _mm256_clmulepi64_epi128(a, k, 0x11)), d)

/* AVX-512: four 64-byte accumulators, 256 bytes a step (a distance of
 * 2048 bits); then each folded into the next (64 bytes on) leaves the
 * four lanes of the 64-byte fold, which finishes the buffer. n >= 512. */
__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.1"))) static uint32_t
crc_fold_512(uint32_t crc, const uint8_t *p, size_t n)
{
	__m512i k = _mm512_broadcast_i32x4(_mm_set_epi64x(0x1322d1430ll, 0x11542778all));
	__m512i k1 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)k_fold512));
	__m512i a0 = _mm512_loadu_si512(p), a1 = _mm512_loadu_si512(p + 64);
	__m512i a2 = _mm512_loadu_si512(p + 128), a3 = _mm512_loadu_si512(p + 192);
	__m128i l[4];

	a0 = _mm512_xor_si512(a0, _mm512_castsi128_si512(_mm_cvtsi32_si128((int)crc)));
	for (p += 256, n -= 256; n >= 256; p += 256, n -= 256) {
		a0 = FOLD512(a0, k, _mm512_loadu_si512(p));
		a1 = FOLD512(a1, k, _mm512_loadu_si512(p + 64));
		a2 = FOLD512(a2, k, _mm512_loadu_si512(p + 128));
		a3 = FOLD512(a3, k, _mm512_loadu_si512(p + 192));
	}
	a1 = FOLD512(a0, k1, a1);
	a2 = FOLD512(a1, k1, a2);
	a3 = FOLD512(a2, k1, a3);
	for (; n >= 64; p += 64, n -= 64)
		a3 = FOLD512(a3, k1, _mm512_loadu_si512(p));
	/* the 64-byte fold's state, then its remaining < 64 bytes */
	l[0] = _mm512_extracti32x4_epi32(a3, 0);
	l[1] = _mm512_extracti32x4_epi32(a3, 1);
	l[2] = _mm512_extracti32x4_epi32(a3, 2);
	l[3] = _mm512_extracti32x4_epi32(a3, 3);
	return crc_finish(l, p, n);
}

/* AVX2: four 32-byte accumulators, 128 bytes a step (1024 bits); the pairs
 * 64 bytes apart folded together leave the 64-byte fold's lanes. n >= 256. */
__attribute__((target("avx2,vpclmulqdq,pclmul,sse4.1"))) static uint32_t
crc_fold_256(uint32_t crc, const uint8_t *p, size_t n)
{
	__m256i k = _mm256_broadcastsi128_si256(_mm_set_epi64x(0x14a7fe880ll, 0x1e88ef372ll));
	__m256i k1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)k_fold512));
	__m256i a0 = _mm256_loadu_si256((const __m256i *)p);
	__m256i a1 = _mm256_loadu_si256((const __m256i *)(p + 32));
	__m256i a2 = _mm256_loadu_si256((const __m256i *)(p + 64));
	__m256i a3 = _mm256_loadu_si256((const __m256i *)(p + 96));
	__m128i l[4];

	a0 = _mm256_xor_si256(a0, _mm256_castsi128_si256(_mm_cvtsi32_si128((int)crc)));
	for (p += 128, n -= 128; n >= 128; p += 128, n -= 128) {
		a0 = FOLD256(a0, k, _mm256_loadu_si256((const __m256i *)p));
		a1 = FOLD256(a1, k, _mm256_loadu_si256((const __m256i *)(p + 32)));
		a2 = FOLD256(a2, k, _mm256_loadu_si256((const __m256i *)(p + 64)));
		a3 = FOLD256(a3, k, _mm256_loadu_si256((const __m256i *)(p + 96)));
	}
	a2 = FOLD256(a0, k1, a2);
	a3 = FOLD256(a1, k1, a3);
	for (; n >= 64; p += 64, n -= 64) {
		a2 = FOLD256(a2, k1, _mm256_loadu_si256((const __m256i *)p));
		a3 = FOLD256(a3, k1, _mm256_loadu_si256((const __m256i *)(p + 32)));
	}
	l[0] = _mm256_castsi256_si128(a2);
	l[1] = _mm256_extracti128_si256(a2, 1);
	l[2] = _mm256_castsi256_si128(a3);
	l[3] = _mm256_extracti128_si256(a3, 1);
	return crc_finish(l, p, n);
}

static int wide_on = 1;

int qtk_crc32_wide(int on)
{
	if (on >= 0)
		__atomic_store_n(&wide_on, on ? 1 : 0, __ATOMIC_RELAXED);
	return __atomic_load_n(&wide_on, __ATOMIC_RELAXED) &&
	       qtk_cpu_has(QTK_CPU_VPCLMULQDQ) && qtk_isa_active() >= QTK_ISA_AVX2;
}

uint32_t qtk_crc32(uint32_t crc, const void *buf, uint64_t n)
{
	const uint8_t *p = buf;

	if (n >= 256 && qtk_isa_active() >= QTK_ISA_AVX2) {
		/* zlib up to a 16-byte boundary of the length, folding for the
		 * bulk, zlib for the tail */
		uint64_t bulk = n & ~(uint64_t)15;

		if (!qtk_crc32_wide(-1))
			crc = ~crc_fold(~crc, p, (size_t)bulk);
		else if (bulk >= 512 && qtk_isa_active() >= QTK_ISA_AVX512)
			crc = ~crc_fold_512(~crc, p, (size_t)bulk);
		else
			crc = ~crc_fold_256(~crc, p, (size_t)bulk);
		p += bulk;
		n -= bulk;
	}
	while (n) {
		uInt k = n > 0x40000000u ? 0x40000000u : (uInt)n;
		crc = (uint32_t)crc32(crc, p, k);
		p += k;
		n -= k;
	}
	return crc;
}
