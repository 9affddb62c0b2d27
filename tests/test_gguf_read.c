/* tests: the GGUF reader on the real v1 file (stories260K, as llama.cpp
 * wrote it) and on hand-built v1/v2/v3 files: KVs of every kind through
 * the typed getters, tensor infos in both dim orders, and dequantization
 * of F32/F16/BF16/Q8_0/Q4_0/Q4_1 against an independent decoder. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qtk_formats.h"
#include "test.h"
#include "test_gguf_util.h"

#define STORIES_GGUF "stories260K/source-tinyllamas-stories-260k-f32.gguf"

TEST(gguf_read_stories260k_v1)
{
	qtk_gguf_file *f;
	qtk_status st;
	const qtk_gguf_kv *kv;
	const qtk_gguf_tensor *t;
	uint64_t u, len;
	double d;
	const char *s;
	int64_t id;

	REQUIRE(qtk_gguf_open(t_data(STORIES_GGUF), &f, &st) == QTK_OK);
	CHECK_EQ(qtk_gguf_version(f), 1);
	CHECK_EQ(qtk_gguf_kv_count(f), 18);
	CHECK_EQ(qtk_gguf_count(f), 48);
	CHECK_EQ(qtk_gguf_alignment(f), 32);
	CHECK_EQ(qtk_gguf_get_str(f, "general.architecture", &s, &len, &st), QTK_OK);
	CHECK(len == 5 && !memcmp(s, "llama", 5));
	CHECK_EQ(qtk_gguf_get_uint(f, "llama.block_count", &u, &st), QTK_OK);
	CHECK_EQ(u, 5);
	CHECK_EQ(qtk_gguf_get_uint(f, "llama.attention.head_count_kv", &u, &st), QTK_OK);
	CHECK_EQ(u, 4);
	CHECK_EQ(qtk_gguf_get_f64(f, "llama.attention.layer_norm_rms_epsilon", &d, &st), QTK_OK);
	CHECK(d == (double)1e-5f);
	CHECK_EQ(qtk_gguf_get_f64(f, "llama.block_count", &d, &st), QTK_E_GG_KV_MISMATCH);
	CHECK(strstr(st.msg, "'llama.block_count' is u32") != NULL);
	CHECK_EQ(qtk_gguf_get_uint(f, "no.such.key", &u, &st), QTK_E_NOT_FOUND);
	kv = qtk_gguf_kv_find(f, "tokenizer.ggml.tokens");
	REQUIRE(kv != NULL);
	CHECK_EQ(kv->count, 512);
	CHECK_EQ(qtk_gguf_arr_str(kv, 0, &s, &len), QTK_OK);
	CHECK(len == 5 && !memcmp(s, "<unk>", 5));
	CHECK_EQ(qtk_gguf_arr_str(kv, 3, &s, &len), QTK_OK);
	CHECK(len == 6 && !memcmp(s, "<0x00>", 6));
	CHECK_EQ(qtk_gguf_arr_str(kv, 512, &s, &len), QTK_E_ARG);
	kv = qtk_gguf_kv_find(f, "tokenizer.ggml.token_type");
	REQUIRE(kv != NULL);
	CHECK_EQ(qtk_gguf_arr_int(kv, 0, &id), QTK_OK);
	CHECK_EQ(id, 2);
	CHECK_EQ(qtk_gguf_arr_int(kv, 3, &id), QTK_OK);
	CHECK_EQ(id, 6);
	t = qtk_gguf_find(f, "blk.0.attn_k.weight");
	REQUIRE(t != NULL);
	CHECK_EQ(t->type, QTK_GGML_F32);
	CHECK_EQ(t->n_dims, 2);
	CHECK_EQ(t->ne[0], 64);
	CHECK_EQ(t->ne[1], 32);
	CHECK_EQ(t->shape[0], 32);
	CHECK_EQ(t->shape[1], 64);
	CHECK_EQ(t->rows, 32);
	CHECK_EQ(t->cols, 64);
	CHECK_EQ(t->nbytes, 32 * 64 * 4);
	CHECK_EQ(t->file_offset % 32, 0);
	CHECK(qtk_gguf_find(f, "output.weight") != NULL);
	CHECK(qtk_gguf_find(f, "nope") == NULL);
	{
		/* read_f32 returns the stored floats, also for a sub-range */
		float a[64], b[10];
		const float *raw = t->data;
		CHECK_EQ(qtk_gguf_read_f32(t, 64, 64, a, &st), QTK_OK);
		CHECK(!memcmp(a, raw + 64, sizeof a));
		CHECK_EQ(qtk_gguf_read_f32(t, 2040, 10, b, &st), QTK_E_ARG);
		CHECK_EQ(qtk_gguf_read_f32(t, 2038, 10, b, &st), QTK_OK);
		CHECK(!memcmp(b, raw + 2038, sizeof b));
	}
	qtk_gguf_close(f);
	qtk_gguf_close(NULL);
}

/* Independent element decoder, written from the block definitions. */
static float ref_elem(uint32_t type, const uint8_t *data, uint64_t e)
{
	uint64_t b = e / 32, j = e % 32;
	const uint8_t *p;
	uint32_t u;
	float x;

	switch (type) {
	case QTK_GGML_F32:
		memcpy(&u, data + 4 * e, 4);
		memcpy(&x, &u, 4);
		return x;
	case QTK_GGML_F16:
		return qtk_f16_to_f32((uint16_t)(data[2 * e] | data[2 * e + 1] << 8));
	case QTK_GGML_BF16:
		u = (uint32_t)(data[2 * e] | data[2 * e + 1] << 8) << 16;
		memcpy(&x, &u, 4);
		return x;
	case QTK_GGML_Q8_0:
		p = data + 34 * b;
		return qtk_f16_to_f32((uint16_t)(p[0] | p[1] << 8)) * (float)(int8_t)p[2 + j];
	case QTK_GGML_Q4_0:
		p = data + 18 * b;
		return qtk_f16_to_f32((uint16_t)(p[0] | p[1] << 8)) *
		       (float)((j < 16 ? p[2 + j] & 15 : p[2 + j - 16] >> 4) - 8);
	case QTK_GGML_Q4_1:
		p = data + 20 * b;
		return qtk_f16_to_f32((uint16_t)(p[0] | p[1] << 8)) *
		               (float)(j < 16 ? p[4 + j] & 15 : p[4 + j - 16] >> 4) +
		       qtk_f16_to_f32((uint16_t)(p[2] | p[3] << 8));
	}
	return NAN;
}

static void check_file(const tg_file *g, unsigned v)
{
	static const char *names[TG_NT] = { "w.f32", "w.f16", "w.bf16", "w.q8_0", "w.q4_0", "w.q4_1" };
	static const uint64_t nel[TG_NT] = { 16, 8, 8, 128, 96, 32 };
	qtk_gguf_file *f;
	qtk_status st;
	const qtk_gguf_kv *kv;
	uint64_t len;
	int64_t i64;
	double d;
	int b;
	const char *s;

	REQUIRE(qtk_gguf_open_mem(g->buf, g->len, "built", &f, &st) == QTK_OK);
	CHECK_EQ(qtk_gguf_version(f), v);
	CHECK_EQ(qtk_gguf_kv_count(f), TG_NKV);
	CHECK_EQ(qtk_gguf_get_f64(f, "t.f32", &d, &st), QTK_OK);
	CHECK(d == 1.5);
	CHECK_EQ(qtk_gguf_get_int(f, "t.i64", &i64, &st), QTK_OK);
	CHECK_EQ(i64, -7);
	CHECK_EQ(qtk_gguf_get_uint(f, "t.i64", &len, &st), QTK_E_GG_KV_MISMATCH);
	CHECK_EQ(qtk_gguf_get_bool(f, "t.bool", &b, &st), QTK_OK);
	CHECK_EQ(b, 1);
	kv = qtk_gguf_kv_find(f, "t.strs");
	REQUIRE(kv && kv->count == 3 && kv->arr_type == QTK_GGUF_STRING);
	CHECK(!qtk_gguf_arr_str(kv, 1, &s, &len) && len == 2 && !memcmp(s, "bc", 2));
	CHECK(!qtk_gguf_arr_str(kv, 2, &s, &len) && len == 0);
	CHECK_EQ(qtk_gguf_arr_f64(kv, 0, &d), QTK_E_ARG);
	kv = qtk_gguf_kv_find(f, "t.nested");
	REQUIRE(kv && kv->count == 2 && kv->arr_type == QTK_GGUF_ARRAY);
	CHECK_EQ(kv->size, 4 + g->wide + 2 * (4 + g->wide) + 6);
	CHECK_EQ(qtk_gguf_count(f), TG_NT);
	for (int i = 0; i < TG_NT; i++) {
		const qtk_gguf_tensor *t = qtk_gguf_find(f, names[i]);
		float *all, part[40];
		REQUIRE(t != NULL && t == qtk_gguf_get(f, (size_t)i));
		CHECK_EQ(t->nelem, nel[i]);
		CHECK_EQ(t->file_offset, g->t_data[i]);
		all = malloc(t->nelem * sizeof *all);
		CHECK_EQ(qtk_gguf_read_f32(t, 0, t->nelem, all, &st), QTK_OK);
		for (uint64_t e = 0; e < t->nelem; e++) {
			float r = ref_elem(t->type, t->data, e);
			CHECK_MSG(!memcmp(&r, &all[e], 4), "%s[%llu]: %g != %g", names[i],
			          (unsigned long long)e, (double)all[e], (double)r);
		}
		/* ranges that start and end inside blocks */
		for (uint64_t e0 = 0; e0 + 1 < t->nelem; e0 += 7) {
			uint64_t n = t->nelem - e0 < 40 ? t->nelem - e0 : 40;
			CHECK_EQ(qtk_gguf_read_f32(t, e0, n, part, &st), QTK_OK);
			CHECK(!memcmp(part, all + e0, n * sizeof *part));
		}
		free(all);
	}
	qtk_gguf_close(f);
}

TEST(gguf_read_built_v1_v2_v3)
{
	for (unsigned v = 1; v <= 3; v++) {
		tg_file g;
		tg_build(&g, v);
		check_file(&g, v);
		/* and through a real file + mmap */
		REQUIRE(t_write_file(t_tmp("b.gguf"), g.buf, g.len) == 0);
		{
			qtk_gguf_file *f;
			qtk_status st;
			CHECK_EQ(qtk_gguf_open(t_tmp("b.gguf"), &f, &st), QTK_OK);
			qtk_gguf_close(f);
		}
		tg_free(&g);
	}
}

TEST(gguf_read_unsupported_type_named)
{
	tg_file g;
	qtk_gguf_file *f;
	qtk_status st;
	float x[32];

	tg_build(&g, 3);
	tg_put32(g.buf + g.t_type[4], 20); /* Q4_0 -> IQ4_NL: same block size */
	REQUIRE(qtk_gguf_open_mem(g.buf, g.len, "m", &f, &st) == QTK_OK);
	CHECK_EQ(qtk_gguf_read_f32(qtk_gguf_find(f, "w.q4_0"), 0, 32, x, &st), QTK_E_UNSUPPORTED);
	CHECK(strstr(st.msg, "IQ4_NL") && strstr(st.msg, "m: tensor 'w.q4_0'"));
	qtk_gguf_close(f);
	tg_free(&g);
}

TEST(gguf_inspect_cli)
{
	char cmd[512];
	const char *bin = getenv("QTK_BIN");

	if (!bin)
		SKIP("QTK_BIN not set (run through make test)");
	snprintf(cmd, sizeof cmd, "%s inspect %s > %s", bin, t_data(STORIES_GGUF), t_tmp("o.txt"));
	CHECK_EQ(system(cmd), 0);
	{
		size_t n;
		char *o = t_read_file(t_tmp("o.txt"), &n);
		REQUIRE(o != NULL);
		CHECK(strstr(o, "GGUF v1, 18 KVs, 48 tensors") != NULL);
		CHECK(strstr(o, "blk.0.attn_k.weight") != NULL);
		CHECK(strstr(o, "[string x 512]") != NULL);
		free(o);
	}
	snprintf(cmd, sizeof cmd, "%s inspect --json %s > %s", bin, t_data(STORIES_GGUF),
	         t_tmp("o.json"));
	CHECK_EQ(system(cmd), 0);
	{
		size_t n;
		char *o = t_read_file(t_tmp("o.json"), &n);
		REQUIRE(o != NULL);
		CHECK(strstr(o, "\"ne\"") != NULL && strstr(o, "\"<unk>\"") != NULL);
		free(o);
	}
	/* a malformed file: exit 1 with the reason */
	REQUIRE(t_write_file(t_tmp("bad.gguf"), "GGUF\x09\0\0\0", 8) == 0);
	snprintf(cmd, sizeof cmd, "%s inspect %s 2> %s", bin, t_tmp("bad.gguf"), t_tmp("e.txt"));
	CHECK(system(cmd) != 0);
	{
		size_t n;
		char *o = t_read_file(t_tmp("e.txt"), &n);
		CHECK(o && strstr(o, "version 9"));
		free(o);
	}
}
