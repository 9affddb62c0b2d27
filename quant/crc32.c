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

/* crc: the running (inverted) state; n >= 64, n % 16 == 0. */
__attribute__((target("pclmul,sse4.1"))) static uint32_t
crc_fold(uint32_t crc, const uint8_t *p, size_t n)
{
	__m128i k = _mm_loadu_si128((const __m128i *)k_fold512);
	__m128i a0 = _mm_loadu_si128((const __m128i *)p);
	__m128i a1 = _mm_loadu_si128((const __m128i *)(p + 16));
	__m128i a2 = _mm_loadu_si128((const __m128i *)(p + 32));
	__m128i a3 = _mm_loadu_si128((const __m128i *)(p + 48));
	__m128i mask32 = _mm_setr_epi32(-1, 0, -1, 0), t, u;

	a0 = _mm_xor_si128(a0, _mm_cvtsi32_si128((int)crc));
	p += 64;
	n -= 64;
	for (; n >= 64; p += 64, n -= 64) {
		a0 = fold(a0, k, _mm_loadu_si128((const __m128i *)p));
		a1 = fold(a1, k, _mm_loadu_si128((const __m128i *)(p + 16)));
		a2 = fold(a2, k, _mm_loadu_si128((const __m128i *)(p + 32)));
		a3 = fold(a3, k, _mm_loadu_si128((const __m128i *)(p + 48)));
	}
	k = _mm_loadu_si128((const __m128i *)k_fold128);
	a0 = fold(a0, k, a1);
	a0 = fold(a0, k, a2);
	a0 = fold(a0, k, a3);
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

uint32_t qtk_crc32(uint32_t crc, const void *buf, uint64_t n)
{
	const uint8_t *p = buf;

	if (n >= 256 && qtk_isa_active() >= QTK_ISA_AVX2) {
		/* zlib up to a 16-byte boundary of the length, folding for the
		 * bulk, zlib for the tail */
		uint64_t bulk = n & ~(uint64_t)15;
		crc = ~crc_fold(~crc, p, (size_t)bulk);
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
