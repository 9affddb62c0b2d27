/* tests (private): a small hand-built GGUF file (any version) with one
 * tensor per readable type, KVs of every kind (nested arrays too), and the
 * byte positions of its fields so malformed-file tests can patch them. */
#ifndef QTK_TEST_GGUF_UTIL_H
#define QTK_TEST_GGUF_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define TG_NT 6   /* tensors */
#define TG_NKV 7  /* KVs */

typedef struct {
	uint8_t *buf;          /* malloc'd file bytes */
	size_t len, cap;
	unsigned wide;         /* 4 (v1) or 8 */
	/* field positions */
	size_t n_tensors, n_kv;
	size_t kv_key[TG_NKV];     /* the key's length field */
	size_t kv_type[TG_NKV];
	size_t kv_val[TG_NKV];     /* first byte of the value */
	size_t t_name[TG_NT];      /* the name's length field */
	size_t t_ndims[TG_NT], t_ne[TG_NT], t_type[TG_NT], t_off[TG_NT];
	size_t data;               /* start of the data section */
	size_t t_data[TG_NT];      /* absolute start of each tensor's data */
	size_t end;                /* end of the last tensor's data (padding follows) */
} tg_file;

/* Names: "general.architecture"="llama", "general.alignment"=32 (u32),
 * "t.f32"=1.5f, "t.i64"=-7, "t.strs"=["a","bc",""], "t.nested"=[[1,2],[3]]
 * (u16), "t.bool"=true. Tensors (ne0 x ne1): f32 "w.f32" 8x2, "w.f16" 8,
 * "w.bf16" 8, "w.q8_0" 64x2, "w.q4_0" 32x3, "w.q4_1" 32. Data bytes are a
 * deterministic pattern with finite f16 scales. */
void tg_build(tg_file *g, unsigned version);
void tg_free(tg_file *g);
void tg_put32(uint8_t *p, uint32_t v);
void tg_put64(uint8_t *p, uint64_t v);
/* Write a count/length field (4 or 8 bytes as the version has them). */
void tg_putlen(const tg_file *g, size_t pos, uint64_t v);

/* A growing buffer for hand-built GGUF v3 files (aborts on OOM). */
typedef struct {
	uint8_t *b;
	size_t len, cap;
} tg_buf;

void tg_buf_need(tg_buf *g, size_t n);
void tg_buf_u32(tg_buf *g, uint32_t v);
void tg_buf_u64(tg_buf *g, uint64_t v);
void tg_buf_bytes(tg_buf *g, const void *p, size_t n);
/* u64 length + bytes */
void tg_buf_strn(tg_buf *g, const char *s, size_t n);
void tg_buf_str(tg_buf *g, const char *s);
/* Zero bytes up to a multiple of align. */
void tg_buf_pad(tg_buf *g, uint32_t align);
/* Start over with a v3 header of nt tensors and nkv KVs. */
void tg_buf_header(tg_buf *g, uint64_t nt, uint64_t nkv);
/* A tensor info: name, dims ne[0..n_dims), ggml type, offset. */
void tg_buf_info(tg_buf *g, const char *name, uint32_t n_dims, const uint64_t *ne,
                 uint32_t type, uint64_t offset);

#endif
