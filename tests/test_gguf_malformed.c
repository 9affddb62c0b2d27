/* tests: the malformed-GGUF suite. Each case patches one field of a valid
 * hand-built file (tests/test_gguf_util.c) into a known GGUF parser attack
 * or mistake — counts of 2^64-1 or whose product wraps, lengths past the
 * end, dims that wrap, misaligned / out-of-bounds / overlapping data,
 * unknown types, duplicates — writes it to disk, opens it and expects its
 * own error code and a message naming the key or tensor. Plus: every
 * truncation of valid v1/v2/v3 files fails cleanly. */
#include <stdlib.h>
#include <string.h>

#include "qtk_formats.h"
#include "test.h"
#include "test_gguf_util.h"

typedef struct {
	const char *name;
	unsigned version;
	qtk_err code;
	const char *needle;    /* must appear in the message */
} mcase;

static const mcase cases[] = {
	{ "too_small", 3, QTK_E_GG_TOO_SMALL, "shorter" },
	{ "bad_magic", 3, QTK_E_GG_MAGIC, "magic" },
	{ "version_0", 3, QTK_E_GG_VERSION, "version 0" },
	{ "version_4", 3, QTK_E_GG_VERSION, "version 4" },
	{ "n_tensors_max", 3, QTK_E_GG_COUNT, "tensor count 18446744073709551615" },
	{ "n_kv_max", 3, QTK_E_GG_COUNT, "KV count 18446744073709551615" },
	{ "n_kv_wraps", 3, QTK_E_GG_COUNT, "KV count 9223372036854775808" },
	{ "v1_n_tensors_max", 1, QTK_E_GG_COUNT, "tensor count 4294967295" },
	{ "key_len_max", 3, QTK_E_GG_STRING, "length 18446744073709551615" },
	{ "key_len_past_end", 3, QTK_E_GG_STRING, "runs past the end" },
	{ "v1_str_len_past_end", 1, QTK_E_GG_STRING, "'general.architecture'" },
	{ "str_len_wraps", 3, QTK_E_GG_STRING, "'general.architecture'" },
	{ "empty_key", 3, QTK_E_GG_NAME, "empty key" },
	{ "nul_in_key", 3, QTK_E_GG_NAME, "NUL" },
	{ "kv_type_unknown", 3, QTK_E_GG_KV_TYPE, "'t.f32': unknown value type 13" },
	{ "arr_type_unknown", 3, QTK_E_GG_KV_TYPE, "'t.strs': unknown array element type" },
	{ "arr_count_max", 3, QTK_E_GG_COUNT, "'t.strs': array count 18446744073709551615" },
	{ "arr_count_wraps", 3, QTK_E_GG_COUNT, "'t.nested': array count 4611686018427387905" },
	{ "nested_count_past_end", 3, QTK_E_GG_COUNT, "'t.nested'" },
	{ "nest_too_deep", 3, QTK_E_GG_ARRAY, "nested deeper" },
	{ "dup_key", 3, QTK_E_GG_DUP_KEY, "'t.f32' appears twice" },
	{ "align_not_pow2", 3, QTK_E_GG_ALIGNMENT, "33 is not a power of two" },
	{ "align_zero", 3, QTK_E_GG_ALIGNMENT, "0 is not a power of two" },
	{ "align_wrong_type", 3, QTK_E_GG_ALIGNMENT, "is i32, not u32" },
	{ "ndims_9", 3, QTK_E_GG_NDIM, "'w.f32': 9 dims (1 to 8 allowed)" },
	{ "ndims_0", 3, QTK_E_GG_NDIM, "'w.f16': 0 dims" },
	{ "dim_zero", 3, QTK_E_GG_DIM, "'w.f32': ne[0] = 0 is zero" },
	{ "dim_negative", 3, QTK_E_GG_DIM, "'w.q8_0': ne[1] = -9223372036854775808 is negative" },
	{ "v1_dim_zero", 1, QTK_E_GG_DIM, "'w.bf16'" },
	{ "nelem_wraps", 3, QTK_E_GG_SHAPE, "'w.f32': element count overflows" },
	{ "bytes_wrap", 3, QTK_E_GG_SHAPE, "'w.f32': byte size overflows" },
	{ "type_retired", 3, QTK_E_GG_TYPE, "'w.f16': unknown ggml type 4" },
	{ "type_unknown", 3, QTK_E_GG_TYPE, "'w.q4_1': unknown ggml type 99" },
	{ "not_block_multiple", 3, QTK_E_GG_BLOCK, "'w.q8_0': ne[0] = 48 is not a multiple of Q8_0" },
	{ "misaligned", 3, QTK_E_GG_MISALIGNED, "'w.bf16': offset" },
	{ "offset_past_end", 3, QTK_E_GG_BOUNDS, "'w.q4_1'" },
	{ "offset_wraps", 3, QTK_E_GG_BOUNDS, "'w.q4_0'" },
	{ "data_truncated", 3, QTK_E_GG_BOUNDS, "'w.q4_1'" },
	{ "overlap", 3, QTK_E_GG_OVERLAP, "share bytes" },
	{ "dup_tensor", 2, QTK_E_GG_DUP_TENSOR, "'w.f32' appears twice" },
	{ "tensor_info_truncated", 3, QTK_E_GG_DIM, "'w.q4_1'" },
	/* found by the hostile sweep (test_hostile.c): spec violations that opened */
	{ "bool_value_2", 3, QTK_E_GG_BOOL, "'t.bool': bool value 2" },
	{ "bool_value_ff_v1", 1, QTK_E_GG_BOOL, "'t.bool': bool value 255" },
	{ "bool_array_element", 3, QTK_E_GG_BOOL, "'t.nested': bool array element 0 is 2" },
	{ "key_not_ascii", 3, QTK_E_GG_NAME, "key 't.' has byte 0xe9 at 2" },
	{ "key_control_byte", 2, QTK_E_GG_NAME, "byte 0x01 at 0" },
	{ "key_len_65536", 3, QTK_E_GG_NAME, "key of 65536 bytes" },
	/* more of the classes GGUF readers got wrong */
	{ "type_u32_max", 3, QTK_E_GG_TYPE, "'w.q8_0': unknown ggml type 4294967295" },
	{ "ndims_u32_max", 3, QTK_E_GG_NDIM, "'w.q4_0': 4294967295 dims" },
	{ "arr_str_len_max", 3, QTK_E_GG_STRING, "'t.strs'" },
	{ "arr_str_len_wraps", 3, QTK_E_GG_STRING, "'t.strs'" },
	{ "v1_arr_str_len_max", 1, QTK_E_GG_STRING, "'t.strs'" },
	{ "kv_type_u32_max", 3, QTK_E_GG_KV_TYPE, "'t.i64': unknown value type 4294967295" },
	{ "nested_elem_type_unknown", 3, QTK_E_GG_KV_TYPE, "'t.nested': unknown array element type 13" },
};

/* Apply case c to a freshly built file. */
static void patch(tg_file *g, const char *c)
{
	uint8_t *b = g->buf;

	if (!strcmp(c, "too_small"))
		g->len = 6;
	else if (!strcmp(c, "bad_magic"))
		b[3] = 'X';
	else if (!strcmp(c, "version_0"))
		tg_put32(b + 4, 0);
	else if (!strcmp(c, "version_4"))
		tg_put32(b + 4, 4);
	else if (!strcmp(c, "n_tensors_max") || !strcmp(c, "v1_n_tensors_max"))
		tg_putlen(g, g->n_tensors, UINT64_MAX);
	else if (!strcmp(c, "n_kv_max"))
		tg_putlen(g, g->n_kv, UINT64_MAX);
	else if (!strcmp(c, "n_kv_wraps"))
		tg_putlen(g, g->n_kv, 1ull << 63);  /* x a 16-byte record wraps to 0 */
	else if (!strcmp(c, "key_len_max"))
		tg_putlen(g, g->kv_key[2], UINT64_MAX);
	else if (!strcmp(c, "key_len_past_end"))
		tg_putlen(g, g->kv_key[3], g->len);
	else if (!strcmp(c, "v1_str_len_past_end"))
		tg_putlen(g, g->kv_val[0], 0xffffffffu);
	else if (!strcmp(c, "str_len_wraps"))
		tg_putlen(g, g->kv_val[0], UINT64_MAX - 4); /* pos + len wraps */
	else if (!strcmp(c, "empty_key")) {
		/* key "t.f32" -> length 0, then its bytes read as type: make the
		 * check fire first by keeping the rest as is */
		tg_putlen(g, g->kv_key[2], 0);
	} else if (!strcmp(c, "nul_in_key"))
		b[g->kv_key[3] + g->wide + 1] = 0;
	else if (!strcmp(c, "kv_type_unknown"))
		tg_put32(b + g->kv_type[2], 13);
	else if (!strcmp(c, "arr_type_unknown"))
		tg_put32(b + g->kv_val[4], 77);
	else if (!strcmp(c, "arr_count_max"))
		tg_putlen(g, g->kv_val[4] + 4, UINT64_MAX);
	else if (!strcmp(c, "arr_count_wraps")) {
		/* outer array of u32 with 2^62+1 elements: x 4 bytes wraps to 4 */
		tg_put32(b + g->kv_val[5], QTK_GGUF_U32);
		tg_putlen(g, g->kv_val[5] + 4, (1ull << 62) + 1);
	} else if (!strcmp(c, "nested_count_past_end"))
		tg_putlen(g, g->kv_val[5] + 4 + g->wide + 4, 1u << 30); /* inner count */
	else if (!strcmp(c, "dup_key"))
		memcpy(b + g->kv_key[3] + g->wide, "t.f32", 5); /* "t.i64" -> "t.f32" */
	else if (!strcmp(c, "align_not_pow2"))
		tg_put32(b + g->kv_val[1], 33);
	else if (!strcmp(c, "align_zero"))
		tg_put32(b + g->kv_val[1], 0);
	else if (!strcmp(c, "align_wrong_type"))
		tg_put32(b + g->kv_type[1], QTK_GGUF_I32);
	else if (!strcmp(c, "ndims_9"))
		tg_put32(b + g->t_ndims[0], 9);
	else if (!strcmp(c, "ndims_0"))
		tg_put32(b + g->t_ndims[1], 0);
	else if (!strcmp(c, "dim_zero"))
		tg_putlen(g, g->t_ne[0], 0);
	else if (!strcmp(c, "dim_negative"))
		tg_putlen(g, g->t_ne[3] + 8, 1ull << 63);
	else if (!strcmp(c, "v1_dim_zero"))
		tg_putlen(g, g->t_ne[2], 0);
	else if (!strcmp(c, "nelem_wraps"))
		tg_putlen(g, g->t_ne[0] + 8, 1ull << 62); /* 8 x 2^62 = 2^65 */
	else if (!strcmp(c, "bytes_wrap"))
		tg_putlen(g, g->t_ne[0] + 8, 1ull << 59); /* 2^62 elements x 4 bytes */
	else if (!strcmp(c, "type_retired"))
		tg_put32(b + g->t_type[1], 4);
	else if (!strcmp(c, "type_unknown"))
		tg_put32(b + g->t_type[5], 99);
	else if (!strcmp(c, "not_block_multiple"))
		tg_putlen(g, g->t_ne[3], 48);
	else if (!strcmp(c, "misaligned"))
		tg_put64(b + g->t_off[2], g->t_data[2] - g->data + 4);
	else if (!strcmp(c, "offset_past_end"))
		tg_put64(b + g->t_off[5], g->len - g->data);
	else if (!strcmp(c, "offset_wraps"))
		tg_put64(b + g->t_off[4], UINT64_MAX - 31);
	else if (!strcmp(c, "data_truncated"))
		g->len = g->end - 1;
	else if (!strcmp(c, "overlap"))
		tg_put64(b + g->t_off[1], 0);
	else if (!strcmp(c, "dup_tensor"))
		memcpy(b + g->t_name[1] + g->wide, "w.f32", 5);
	else if (!strcmp(c, "tensor_info_truncated"))
		g->len = g->t_ne[5] + 3;
	else if (!strcmp(c, "bool_value_2"))
		b[g->kv_val[6]] = 2;
	else if (!strcmp(c, "bool_value_ff_v1"))
		b[g->kv_val[6]] = 0xff;
	else if (!strcmp(c, "bool_array_element"))
		tg_put32(b + g->kv_val[5], QTK_GGUF_BOOL); /* elements: the bytes 02 00 00 00 ... */
	else if (!strcmp(c, "key_not_ascii"))
		b[g->kv_key[3] + g->wide + 2] ^= 0x80;  /* "t.i64" -> "t.\xe964" */
	else if (!strcmp(c, "key_control_byte"))
		b[g->kv_key[0] + g->wide] = 0x01;
	else if (!strcmp(c, "type_u32_max"))
		tg_put32(b + g->t_type[3], UINT32_MAX);
	else if (!strcmp(c, "ndims_u32_max"))
		tg_put32(b + g->t_ndims[4], UINT32_MAX);
	else if (!strcmp(c, "arr_str_len_max") || !strcmp(c, "v1_arr_str_len_max"))
		tg_putlen(g, g->kv_val[4] + 4 + g->wide, UINT64_MAX); /* "a" */
	else if (!strcmp(c, "arr_str_len_wraps"))
		tg_putlen(g, g->kv_val[4] + 4 + 2 * g->wide + 1, UINT64_MAX - 8); /* "bc" */
	else if (!strcmp(c, "kv_type_u32_max"))
		tg_put32(b + g->kv_type[3], UINT32_MAX);
	else if (!strcmp(c, "nested_elem_type_unknown"))
		tg_put32(b + g->kv_val[5] + 4 + g->wide, 13); /* the first inner array's type */
	else if (!strcmp(c, "key_len_65536")) {
		/* key 2 ("t.f32") becomes 65536 bytes of 'k' */
		size_t at = g->kv_key[2], rest = at + g->wide + 5, big = 65536;
		uint8_t *nb = malloc(g->len + big);
		memcpy(nb, b, at);
		tg_put64(nb + at, big);
		memset(nb + at + 8, 'k', big);
		memcpy(nb + at + 8 + big, b + rest, g->len - rest);
		free(g->buf);
		g->buf = nb;
		g->len = at + 8 + big + g->len - rest;
	} else if (!strcmp(c, "nest_too_deep")) {
		/* replace "t.nested" by 9 nested levels: [[[...[u8 x 0]...]]] */
		size_t at = g->kv_val[5];
		uint8_t *nb = malloc(at + 9 * 12 + 64);
		memcpy(nb, b, at);
		for (int i = 0; i < 9; i++) {
			tg_put32(nb + at, QTK_GGUF_ARRAY);
			tg_put64(nb + at + 4, 1);
			at += 12;
		}
		tg_put32(nb + at, QTK_GGUF_U8);
		tg_put64(nb + at + 4, 0);
		at += 12;
		free(g->buf);
		g->buf = nb;
		g->len = at;
	}
}

TEST(gguf_malformed_suite)
{
	size_t n = sizeof cases / sizeof cases[0];
	char path[64];

	CHECK(n >= 25);
	for (size_t i = 0; i < n; i++) {
		tg_file g;
		qtk_gguf_file *f = (qtk_gguf_file *)1;
		qtk_status st = { 0 };
		qtk_err rc;

		tg_build(&g, cases[i].version);
		patch(&g, cases[i].name);
		snprintf(path, sizeof path, "%s.gguf", cases[i].name);
		REQUIRE(t_write_file(t_tmp(path), g.buf, g.len) == 0);
		rc = qtk_gguf_open(t_tmp(path), &f, &st);
		CHECK_MSG(rc == cases[i].code, "%s: got %s (%s), want %s", cases[i].name,
		          qtk_err_name(rc), st.msg, qtk_err_name(cases[i].code));
		CHECK_MSG(f == NULL, "%s: handle not NULL", cases[i].name);
		CHECK_MSG(strstr(st.msg, cases[i].needle) != NULL, "%s: message '%s' lacks '%s'",
		          cases[i].name, st.msg, cases[i].needle);
		CHECK_MSG(strstr(st.msg, path) != NULL, "%s: message '%s' lacks the file",
		          cases[i].name, st.msg);
		/* the same bytes from memory */
		rc = qtk_gguf_open_mem(g.buf, g.len, "m", &f, &st);
		CHECK_MSG(rc == cases[i].code, "%s (mem): got %s", cases[i].name, qtk_err_name(rc));
		tg_free(&g);
	}
}

/* Every cut of a valid file before the end of its last tensor (the rest
 * is padding) fails with an error (never a crash or OK). */
TEST(gguf_malformed_every_truncation)
{
	for (unsigned v = 1; v <= 3; v++) {
		tg_file g;
		tg_build(&g, v);
		for (size_t len = 0; len < g.end; len++) {
			qtk_gguf_file *f;
			qtk_status st;
			uint8_t *copy = malloc(len ? len : 1);
			memcpy(copy, g.buf, len);
			qtk_err rc = qtk_gguf_open_mem(copy, len, "cut", &f, &st);
			CHECK_MSG(rc != QTK_OK, "v%u: cut at %zu of %zu opened", v, len, g.len);
			if (!rc)
				qtk_gguf_close(f);
			free(copy);
		}
		tg_free(&g);
	}
}

/* Open fails cleanly when the Nth allocation fails, for every N. */
TEST(gguf_read_alloc_faults)
{
	tg_file g;
	int done = 0;

	tg_build(&g, 3);
	for (uint64_t nth = 1; nth < 100 && !done; nth++) {
		qtk_gguf_file *f;
		qtk_status st;
		qtk_fault_arm(QTK_FAULT_ALLOC, nth, 0);
		qtk_err rc = qtk_gguf_open_mem(g.buf, g.len, "m", &f, &st);
		int fired = qtk_fault_fired(QTK_FAULT_ALLOC);
		qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
		if (!fired) {
			CHECK_EQ(rc, QTK_OK);
			done = 1;
		} else
			CHECK_EQ(rc, QTK_E_NOMEM);
		if (!rc)
			qtk_gguf_close(f);
	}
	CHECK(done);
	tg_free(&g);
}
