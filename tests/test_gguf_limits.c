/* tests: GGUF inputs that cost too much when handled naively — a million
 * KVs (GGUF -> GGUF must stay linear: the writer's duplicate-key check was
 * a scan, 14 s for 80k KVs), and general.alignment beyond qtk's bound of
 * 64 KiB (a 64-byte file with 2^31 made a 2 GiB output). */
#include <stdlib.h>
#include <unistd.h>

#include "qtk_convert.h"
#include "qtk_formats.h"
#include "test.h"
#include "test_conv_util.h"
#include "test_gguf_util.h"

/* One F32 tensor "w" of 32 x 2 at offset 0, then its data (aligned). */
static void gb_tensor_f32(tg_buf *g, uint32_t align)
{
	static const uint64_t ne[2] = { 32, 2 };

	tg_buf_info(g, "w", 2, ne, 0 /* F32 */, 0);
	tg_buf_pad(g, align);
	for (int i = 0; i < 64; i++) {
		float x = (float)i / 8 - 4;
		uint32_t u;
		memcpy(&u, &x, 4);
		tg_buf_u32(g, u);
	}
}

static int conv(const char *in, const char *out, qtk_out_format fmt, qtk_status *st)
{
	qtk_conv_opts o = { .input = in, .output = out, .format = fmt,
	                    .scale_dtype = QTK_DT_F16, .threads = 1, .force = 1 };
	return t_convert(&o, QTK_SCHEME_INT8, 32, NULL, NULL, st);
}

#define MANY_KVS 1000000u

/* A GGUF with a million u32 KVs (and one tensor) converts to GGUF with all
 * of them. With the old scan (n^2/2 strcmp, 14 s at 80k) this would take
 * over half an hour: the runner's 600 s limit fails it. */
TEST(gguf_million_kvs_convert_in_linear_time)
{
	tg_buf g = { 0 };
	char key[32], in[4200], out[4200];
	qtk_gguf_file *f = NULL;
	qtk_status st;
	uint64_t v = 0;

	tg_buf_header(&g, 1, MANY_KVS);
	for (uint32_t i = 0; i < MANY_KVS; i++) {
		snprintf(key, sizeof key, "x.%u", i * 2654435761u); /* distinct, unordered */
		tg_buf_str(&g, key);
		tg_buf_u32(&g, 4); /* u32 */
		tg_buf_u32(&g, i);
	}
	gb_tensor_f32(&g, 32);
	snprintf(in, sizeof in, "%s", t_tmp("many.gguf"));
	snprintf(out, sizeof out, "%s", t_tmp("many.out.gguf"));
	REQUIRE(t_write_file(in, g.b, g.len) == 0);
	CHECK_MSG(conv(in, out, QTK_OUT_GGUF, &st) == QTK_OK, "%s", st.msg);
	REQUIRE(qtk_gguf_open(out, &f, &st) == QTK_OK);
	/* all of them, plus general.file_type and general.quantization_version */
	CHECK_EQ(qtk_gguf_kv_count(f), MANY_KVS + 2);
	snprintf(key, sizeof key, "x.%u", 777777u * 2654435761u);
	CHECK_EQ(qtk_gguf_get_uint(f, key, &v, &st), QTK_OK);
	CHECK_EQ(v, 777777);
	qtk_gguf_close(f);

	/* a duplicate key, last of the million: refused by the reader */
	snprintf(key, sizeof key, "x.%u", 5u * 2654435761u);
	{
		tg_buf h = { 0 };
		qtk_gguf_file *d = NULL;

		tg_buf_header(&h, 0, MANY_KVS);
		for (uint32_t i = 0; i + 1 < MANY_KVS; i++) {
			char k2[32];
			snprintf(k2, sizeof k2, "x.%u", i * 2654435761u);
			tg_buf_str(&h, k2);
			tg_buf_u32(&h, 4);
			tg_buf_u32(&h, i);
		}
		tg_buf_str(&h, key);
		tg_buf_u32(&h, 4);
		tg_buf_u32(&h, 0);
		CHECK_EQ(qtk_gguf_open_mem(h.b, h.len, "dup.gguf", &d, &st), QTK_E_GG_DUP_KEY);
		CHECK_MSG(strstr(st.msg, key) && strstr(st.msg, "dup.gguf"), "%s", st.msg);
		CHECK(d == NULL);
		free(h.b);
	}
	free(g.b);
}

/* The writer's key set: a million distinct keys go in, a repeated one
 * (early, late, after growth) is refused each time, and the list is
 * unchanged by a refusal. */
TEST(gguf_kvs_duplicate_keys_refused_at_scale)
{
	qtk_gguf_kvs *k = qtk_gguf_kvs_new();
	char key[32];
	qtk_status st;

	REQUIRE(k);
	for (uint32_t i = 0; i < MANY_KVS; i++) {
		snprintf(key, sizeof key, "k%u", i);
		if (qtk_gguf_kvs_add_u32(k, key, i, &st) != QTK_OK) {
			t_fail_at(__FILE__, __LINE__, "%s: %s", key, st.msg);
			break;
		}
		if (i % 99991 == 0) {
			char old[32];
			snprintf(old, sizeof old, "k%u", i / 2);
			CHECK_EQ(qtk_gguf_kvs_add_u32(k, old, 1, &st), QTK_E_GG_DUP_KEY);
			CHECK(strstr(st.msg, old) != NULL);
		}
	}
	CHECK_EQ(qtk_gguf_kvs_count(k), MANY_KVS);
	CHECK_EQ(qtk_gguf_kvs_add_str(k, "k0", "x", 1, &st), QTK_E_GG_DUP_KEY);
	CHECK_EQ(qtk_gguf_kvs_add_str(k, "k999999", "x", 1, &st), QTK_E_GG_DUP_KEY);
	CHECK_EQ(qtk_gguf_kvs_add_str(k, "k1000000", "x", 1, &st), QTK_OK);
	CHECK_EQ(qtk_gguf_kvs_count(k), MANY_KVS + 1);
	qtk_gguf_kvs_free(k);
}

/* A file with only general.alignment = a (and optionally the tensor "w"). */
static void align_file(tg_buf *g, uint32_t a, int tensor)
{
	tg_buf_header(g, tensor ? 1 : 0, 1);
	tg_buf_str(g, "general.alignment");
	tg_buf_u32(g, 4);
	tg_buf_u32(g, a);
	if (tensor)
		gb_tensor_f32(g, a);
}

/* general.alignment is bounded by 64 KiB (QTK_GGUF_MAX_ALIGN) on read and
 * on write: a 57-byte file asking for 2^31 made a fully allocated 2 GiB
 * GGUF output (its header padded to the alignment). */
TEST(gguf_alignment_bounded)
{
	tg_buf g = { 0 };
	qtk_gguf_file *f = NULL;
	qtk_gguf_kvs *k;
	qtk_status st;
	char in[4200], out[4200];

	align_file(&g, 1u << 31, 0);
	REQUIRE(qtk_gguf_open_mem(g.b, g.len, "big.gguf", &f, &st) == QTK_E_GG_ALIGNMENT);
	CHECK_MSG(strstr(st.msg, "big.gguf") && strstr(st.msg, "2147483648") &&
	          strstr(st.msg, "65536"), "%s", st.msg);
	CHECK(f == NULL);
	align_file(&g, 1u << 17, 1);
	REQUIRE(qtk_gguf_open_mem(g.b, g.len, "big.gguf", &f, &st) == QTK_E_GG_ALIGNMENT);
	CHECK(strstr(st.msg, "131072") != NULL);

	/* convert refuses it naming the file, and writes nothing */
	align_file(&g, 1u << 31, 0);
	snprintf(in, sizeof in, "%s", t_tmp("a31.gguf"));
	snprintf(out, sizeof out, "%s", t_tmp("a31.out.gguf"));
	REQUIRE(t_write_file(in, g.b, g.len) == 0);
	CHECK_EQ(conv(in, out, QTK_OUT_GGUF, &st), QTK_E_GG_ALIGNMENT);
	CHECK_MSG(strstr(st.msg, "a31.gguf") && strstr(st.msg, "2147483648"), "%s", st.msg);
	CHECK(access(out, F_OK) != 0);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1);

	/* 64 KiB itself is fine, read and carried over to the output */
	align_file(&g, 65536, 1);
	REQUIRE(qtk_gguf_open_mem(g.b, g.len, "ok.gguf", &f, &st) == QTK_OK);
	CHECK_EQ(qtk_gguf_alignment(f), 65536);
	CHECK_EQ(qtk_gguf_data_offset(f), 65536);
	qtk_gguf_close(f);
	snprintf(in, sizeof in, "%s", t_tmp("a16.gguf"));
	REQUIRE(t_write_file(in, g.b, g.len) == 0);
	CHECK_MSG(conv(in, out, QTK_OUT_GGUF, &st) == QTK_OK, "%s", st.msg);
	REQUIRE(qtk_gguf_open(out, &f, &st) == QTK_OK);
	CHECK_EQ(qtk_gguf_alignment(f), 65536);
	qtk_gguf_close(f);

	/* the writer: 64 KiB yes, 128 KiB and 2^31 no */
	k = qtk_gguf_kvs_new();
	REQUIRE(k);
	CHECK_EQ(qtk_gguf_kvs_add_u32(k, "general.alignment", 1u << 31, &st), QTK_E_GG_ALIGNMENT);
	CHECK(strstr(st.msg, "2147483648") != NULL);
	CHECK_EQ(qtk_gguf_kvs_add_u32(k, "general.alignment", 1u << 17, &st), QTK_E_GG_ALIGNMENT);
	CHECK_EQ(qtk_gguf_kvs_add_u32(k, "general.alignment", 65536, &st), QTK_OK);
	qtk_gguf_kvs_free(k);
	free(g.b);
}
