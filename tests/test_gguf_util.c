/* tests (private): see test_gguf_util.h. */
#include <stdlib.h>
#include <string.h>

#include "qtk_formats.h"
#include "test_gguf_util.h"

void tg_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void tg_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void tg_putlen(const tg_file *g, size_t pos, uint64_t v)
{
	if (g->wide == 4)
		tg_put32(g->buf + pos, (uint32_t)v);
	else
		tg_put64(g->buf + pos, v);
}

static size_t room(tg_file *g, size_t n)
{
	size_t at = g->len;
	if (g->len + n > g->cap) {
		g->cap = (g->len + n) * 2 + 256;
		g->buf = realloc(g->buf, g->cap);
	}
	memset(g->buf + g->len, 0, n);
	g->len += n;
	return at;
}

static size_t u32(tg_file *g, uint32_t v)
{
	size_t at = room(g, 4);
	tg_put32(g->buf + at, v);
	return at;
}

static size_t len_(tg_file *g, uint64_t v)
{
	size_t at = room(g, g->wide);
	tg_putlen(g, at, v);
	return at;
}

static size_t str(tg_file *g, const char *s)
{
	size_t at = len_(g, strlen(s)), b = room(g, strlen(s));
	memcpy(g->buf + b, s, strlen(s));
	return at;
}

static void kv(tg_file *g, int i, const char *key, uint32_t type)
{
	g->kv_key[i] = str(g, key);
	g->kv_type[i] = u32(g, type);
	g->kv_val[i] = g->len;
}

static const struct { const char *name; uint32_t type; uint32_t nd; uint64_t ne0, ne1; } T[TG_NT] = {
	{ "w.f32", QTK_GGML_F32, 2, 8, 2 },   { "w.f16", QTK_GGML_F16, 1, 8, 1 },
	{ "w.bf16", QTK_GGML_BF16, 1, 8, 1 }, { "w.q8_0", QTK_GGML_Q8_0, 2, 64, 2 },
	{ "w.q4_0", QTK_GGML_Q4_0, 2, 32, 3 }, { "w.q4_1", QTK_GGML_Q4_1, 1, 32, 1 },
};

void tg_build(tg_file *g, unsigned version)
{
	uint64_t off = 0, sizes[TG_NT];
	size_t at;

	memset(g, 0, sizeof *g);
	g->wide = version == 1 ? 4 : 8;
	at = room(g, 4);
	memcpy(g->buf + at, "GGUF", 4);
	u32(g, version);
	g->n_tensors = len_(g, TG_NT);
	g->n_kv = len_(g, TG_NKV);
	kv(g, 0, "general.architecture", QTK_GGUF_STRING);
	str(g, "llama");
	kv(g, 1, "general.alignment", QTK_GGUF_U32);
	u32(g, 32);
	kv(g, 2, "t.f32", QTK_GGUF_F32);
	u32(g, 0x3fc00000u);
	kv(g, 3, "t.i64", QTK_GGUF_I64);
	at = room(g, 8);
	tg_put64(g->buf + at, (uint64_t)-7);
	kv(g, 4, "t.strs", QTK_GGUF_ARRAY);
	u32(g, QTK_GGUF_STRING);
	len_(g, 3);
	str(g, "a");
	str(g, "bc");
	str(g, "");
	kv(g, 5, "t.nested", QTK_GGUF_ARRAY);
	u32(g, QTK_GGUF_ARRAY);
	len_(g, 2);
	u32(g, QTK_GGUF_U16);
	len_(g, 2);
	at = room(g, 4);
	g->buf[at] = 1;
	g->buf[at + 2] = 2;
	u32(g, QTK_GGUF_U16);
	len_(g, 1);
	at = room(g, 2);
	g->buf[at] = 3;
	kv(g, 6, "t.bool", QTK_GGUF_BOOL);
	at = room(g, 1);
	g->buf[at] = 1;
	for (int i = 0; i < TG_NT; i++) {
		uint32_t blck = qtk_ggml_block_elems(T[i].type), bb = qtk_ggml_block_bytes(T[i].type);
		sizes[i] = T[i].ne0 / blck * bb * T[i].ne1;
		g->t_name[i] = str(g, T[i].name);
		g->t_ndims[i] = u32(g, T[i].nd);
		g->t_ne[i] = len_(g, T[i].ne0);
		if (T[i].nd == 2)
			len_(g, T[i].ne1);
		g->t_type[i] = u32(g, T[i].type);
		g->t_off[i] = room(g, 8);
		tg_put64(g->buf + g->t_off[i], off);
		off += (sizes[i] + 31) / 32 * 32;
	}
	room(g, (32 - g->len % 32) % 32);
	g->data = g->len;
	room(g, off);
	for (int i = 0; i < TG_NT; i++) {
		uint8_t *p = g->buf + g->data;
		uint32_t bb = qtk_ggml_block_bytes(T[i].type), blck = qtk_ggml_block_elems(T[i].type);
		g->t_data[i] = g->data;
		for (int j = 0; j < i; j++)
			g->t_data[i] += (sizes[j] + 31) / 32 * 32;
		p = g->buf + g->t_data[i];
		for (uint64_t k = 0; k < sizes[i]; k++)
			p[k] = (uint8_t)(k * 37 + (uint64_t)i * 11 + 5);
		/* finite f16 scales (and Q4_1 mins) at the start of each block;
		 * finite f16/bf16 values: clear the exponent's top bit */
		if (blck == 32)
			for (uint64_t b = 0; b < sizes[i] / bb; b++) {
				p[b * bb + 1] &= 0x3b;
				if (T[i].type == QTK_GGML_Q4_1)
					p[b * bb + 3] &= 0xbb;
			}
		else if (T[i].type != QTK_GGML_F32)
			for (uint64_t k = 1; k < sizes[i]; k += 2)
				p[k] &= 0xbb;
		else
			for (uint64_t k = 3; k < sizes[i]; k += 4)
				p[k] &= 0xbb;
		g->end = g->t_data[i] + sizes[i];
	}
}

void tg_free(tg_file *g)
{
	free(g->buf);
	g->buf = NULL;
}

/* ---- tg_buf ------------------------------------------------------------ */

void tg_buf_need(tg_buf *g, size_t n)
{
	if (g->len + n <= g->cap)
		return;
	while (g->len + n > g->cap)
		g->cap = g->cap ? 2 * g->cap : 4096;
	g->b = realloc(g->b, g->cap);
	if (!g->b)
		abort();
}

void tg_buf_bytes(tg_buf *g, const void *p, size_t n)
{
	tg_buf_need(g, n);
	memcpy(g->b + g->len, p, n);
	g->len += n;
}

void tg_buf_u32(tg_buf *g, uint32_t v)
{
	tg_buf_need(g, 4);
	tg_put32(g->b + g->len, v);
	g->len += 4;
}

void tg_buf_u64(tg_buf *g, uint64_t v)
{
	tg_buf_need(g, 8);
	tg_put64(g->b + g->len, v);
	g->len += 8;
}

void tg_buf_strn(tg_buf *g, const char *s, size_t n)
{
	tg_buf_u64(g, n);
	tg_buf_bytes(g, s, n);
}

void tg_buf_str(tg_buf *g, const char *s)
{
	tg_buf_strn(g, s, strlen(s));
}

void tg_buf_pad(tg_buf *g, uint32_t align)
{
	static const uint8_t zero[1];

	while (g->len % align)
		tg_buf_bytes(g, zero, 1);
}

void tg_buf_header(tg_buf *g, uint64_t nt, uint64_t nkv)
{
	g->len = 0;
	tg_buf_bytes(g, "GGUF", 4);
	tg_buf_u32(g, 3);
	tg_buf_u64(g, nt);
	tg_buf_u64(g, nkv);
}

void tg_buf_info(tg_buf *g, const char *name, uint32_t n_dims, const uint64_t *ne,
                 uint32_t type, uint64_t offset)
{
	tg_buf_str(g, name);
	tg_buf_u32(g, n_dims);
	for (uint32_t d = 0; d < n_dims; d++)
		tg_buf_u64(g, ne[d]);
	tg_buf_u32(g, type);
	tg_buf_u64(g, offset);
}
