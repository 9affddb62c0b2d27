/* tests (private): the hostile-input sweep's pieces — small valid sample
 * files of every format qtk reads, the mutations applied to them (every
 * truncation, four byte values at every offset), a per-case time limit,
 * and independent validators written from the GGUF and safetensors specs
 * (not from qtk's readers) that say whether a mutated file is still
 * structurally valid, so an accept can be told right from wrong. */
#ifndef QTK_TEST_HOSTILE_UTIL_H
#define QTK_TEST_HOSTILE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "qtk_formats.h"

/* ---- per-case time limit ------------------------------------------- */

/* Seconds one library case may take before the test dies naming it. */
#define HS_CASE_SECONDS 10u
/* Install the SIGALRM handler (once per test). */
void hs_guard_init(void);
/* Name the case now running and arm the alarm. */
void hs_case(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Disarm. */
void hs_case_done(void);

/* A scratch directory for the many small files a sweep writes: on tmpfs
 * (/dev/shm) when there is one — ext4 with discard makes every truncating
 * rewrite wait for the device — else under t_tmpdir(). hs_scratch_done
 * removes it. */
const char *hs_scratch(void);
void hs_scratch_done(void);

/* ---- mutations -------------------------------------------------------- */

enum { HS_TRUNC = 0, HS_SET00, HS_SETFF, HS_XOR01, HS_XOR80, HS_KINDS };
typedef struct {
	size_t at;  /* HS_TRUNC: the new length; else the byte changed */
	int kind;
} hs_mut;

/* Apply m to src[0..n) into dst (n bytes of room); *len gets the new
 * length. Returns 0 when m changes nothing (0x00 over a 0x00 byte). */
int hs_mutate(const uint8_t *src, size_t n, hs_mut m, uint8_t *dst, size_t *len);
/* "cut at 17" / "byte 17 = 0xff" (static buffer ring). */
const char *hs_mut_str(hs_mut m);
/* Every mutation of an n-byte file: n truncations, then 4 per offset. */
size_t hs_mut_count(size_t n);
hs_mut hs_mut_get(size_t n, size_t k);

/* ---- samples ------------------------------------------------------------ */

/* A safetensors file with tensors of every kind a checkpoint has: F32, F16
 * (one over 1024 elements, so convert quantizes it), BF16, F64, F8_E4M3,
 * I32, U8, BOOL, a rank-0 scalar, a zero-element tensor, and UTF-8
 * metadata. malloc'd bytes; NULL on failure. */
uint8_t *hs_st_sample(size_t *n);
/* A sharded set in dir: s1.safetensors, s2.safetensors and
 * m.safetensors.index.json. 0 on success. */
int hs_st_sharded(const char *dir);
/* A GGUF v3 file written by qtk's writer: KVs of all 13 value types,
 * arrays of numbers, bools and strings, a nested array, general.alignment,
 * and F32, F16, BF16, Q8_0, Q4_0, Q4_1, I8, I32 tensors (one F16 over 1024
 * elements). path is a scratch file name. */
uint8_t *hs_gguf_sample(const char *path, size_t *n);
/* A .qtk file of every scheme row plus NF4 double-quant, row groups, f32
 * and bf16 scales, rank 0/1/3 and an empty tensor (tensor_align 64); as
 * the zstd transport form when zstd. path: scratch file name. */
uint8_t *hs_qtk_sample(const char *path, int zstd, size_t *n);

/* ---- independent validators -------------------------------------------- */

/* 1 if b[0..n) is a GGUF file within the rules docs/export.md lists (which
 * are the spec's plus qtk's documented extra strictness) and the spec's
 * rules for bool values (0 or 1) and keys (ASCII, at most 65535 bytes);
 * else 0 with the reason in why. */
int hs_gguf_valid(const uint8_t *b, size_t n, char *why, size_t wn);
/* 1 if b[0..n) is a single safetensors file within docs/safetensors.md's
 * rules, checked with a UTF-8 decoder and JSON walk of this file's own. */
int hs_st_valid(const uint8_t *b, size_t n, char *why, size_t wn);
/* 1 if the opened file f reports exactly the tensors of b (name, dtype,
 * shape, offset, size). */
int hs_st_same(const qtk_st_file *f, const uint8_t *b, size_t n, char *why, size_t wn);

/* The tensor whose plane bytes hold offset k of a valid .qtk file, or -1. */
long hs_qtk_tensor_at(const uint8_t *b, size_t n, size_t k);
/* Byte ranges of a valid .qtk file that are zero padding (between the
 * string table and the data, between planes, between data and metadata):
 * 1 if offset k is one. */
int hs_qtk_is_padding(const uint8_t *b, size_t n, size_t k);

#endif
