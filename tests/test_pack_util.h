/* tests (private): a sample .qtk file with one tensor per scheme row plus
 * edge shapes, and helpers to patch files while keeping checksums valid. */
#ifndef QTK_TEST_PACK_UTIL_H
#define QTK_TEST_PACK_UTIL_H

#include "qtk_formats.h"

#define TP_MAX 32
typedef struct {
	qtk_pack_desc d[TP_MAX];
	char names[TP_MAX][48];
	size_t n;
} tp_sample;

/* Fill s with every scheme row and the edge cases. */
void tp_sample_init(tp_sample *s);
/* The deterministic content of byte k of plane p of tensor i (scale and
 * bias planes hold finite values of their dtype). */
void tp_plane_bytes(const tp_sample *s, size_t i, int p, uint8_t *dst, uint64_t size);
/* Write s to path (tensor_align; chunked puts in a scrambled order). */
qtk_err tp_write(const tp_sample *s, const char *path, uint32_t align, int force,
                 const char *meta, qtk_status *st);
/* Recompute header and directory crc32s after a patch (buffer = file). */
void tp_fix_crcs(uint8_t *buf, size_t size);
/* Offset of record i in a file buffer. */
size_t tp_record(const uint8_t *buf, size_t i);
uint64_t tp_get64(const uint8_t *p);
void tp_put64(uint8_t *p, uint64_t v);
void tp_put32(uint8_t *p, uint32_t v);
uint32_t tp_get32(const uint8_t *p);

#endif
