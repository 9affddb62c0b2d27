/* formats (private): GGUF internals shared by gguf_read.c, gguf_write.c
 * and gguf_blocks.c. GGUF is little-endian; see docs/export.md. */
#ifndef QTK_GGUF_IMPL_H
#define QTK_GGUF_IMPL_H

#include <stdint.h>
#include <string.h>

#include "qtk_formats.h"

#define GG_MAGIC "GGUF"
#define GG_MAX_NEST 8  /* arrays of arrays, deeper is rejected */

static inline uint16_t gg_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t gg_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t gg_le64(const uint8_t *p)
{
	return (uint64_t)gg_le32(p) | (uint64_t)gg_le32(p + 4) << 32;
}
static inline void gg_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void gg_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void gg_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Bytes of one scalar value type; 0 for STRING/ARRAY/unknown. */
uint32_t qtk_gg_scalar_size(uint32_t vtype);

/* Dequantize one 32-element block (Q8_0: 34 bytes, Q4_0: 18, Q4_1: 20). */
void qtk_gg_deq_q8_0(const uint8_t *b, float *y);
void qtk_gg_deq_q4_0(const uint8_t *b, float *y);
void qtk_gg_deq_q4_1(const uint8_t *b, float *y);

#endif
