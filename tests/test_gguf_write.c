/* tests: the GGUF v3 writer (round trip through the reader, puts from two
 * threads in scrambled order, coverage check, argument errors, faults at
 * every Nth alloc/write/fsync/rename/open) and the block packers (golden
 * blocks from ggml's reference quantizers, qtk planes <-> blocks). */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qtk_formats.h"
#include "test.h"

/* ---- ggml reference quantizers (from the definitions in ggml-quants.c) */

#define MINI(a, b) ((a) < (b) ? (a) : (b))

static void ref_q8_0(const float *x, uint8_t *y)
{
	float amax = 0;
	for (int j = 0; j < 32; j++)
		amax = fmaxf(amax, fabsf(x[j]));
	float d = amax / 127, id = d != 0 ? 1.0f / d : 0.0f;
	uint16_t h = qtk_f32_to_f16(d);
	y[0] = (uint8_t)h;
	y[1] = (uint8_t)(h >> 8);
	for (int j = 0; j < 32; j++)
		y[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

static void ref_q4_0(const float *x, uint8_t *y)
{
	float amax = 0, max = 0;
	for (int j = 0; j < 32; j++)
		if (amax < fabsf(x[j])) {
			amax = fabsf(x[j]);
			max = x[j];
		}
	float d = max / -8, id = d != 0 ? 1.0f / d : 0.0f;
	uint16_t h = qtk_f32_to_f16(d);
	y[0] = (uint8_t)h;
	y[1] = (uint8_t)(h >> 8);
	for (int j = 0; j < 16; j++) {
		uint8_t a = (uint8_t)MINI(15, (int8_t)(x[j] * id + 8.5f));
		uint8_t b = (uint8_t)MINI(15, (int8_t)(x[j + 16] * id + 8.5f));
		y[2 + j] = (uint8_t)(a | b << 4);
	}
}

static void ref_q4_1(const float *x, uint8_t *y)
{
	float min = FLT_MAX, max = -FLT_MAX;
	for (int j = 0; j < 32; j++) {
		min = fminf(min, x[j]);
		max = fmaxf(max, x[j]);
	}
	float d = (max - min) / 15, id = d != 0 ? 1.0f / d : 0.0f;
	uint16_t h = qtk_f32_to_f16(d), m = qtk_f32_to_f16(min);
	y[0] = (uint8_t)h;
	y[1] = (uint8_t)(h >> 8);
	y[2] = (uint8_t)m;
	y[3] = (uint8_t)(m >> 8);
	for (int j = 0; j < 16; j++) {
		uint8_t a = (uint8_t)MINI(15, (int8_t)((x[j] - min) * id + 0.5f));
		uint8_t b = (uint8_t)MINI(15, (int8_t)((x[j + 16] - min) * id + 0.5f));
		y[4 + j] = (uint8_t)(a | b << 4);
	}
}

/* The same rules written in qtk's plane convention (quant/qtk_quant.h):
 * codes per element in order, 4-bit pairs low nibble first, f16 scales. */
static void qtk_planes_int4(const float *x, int affine, uint8_t *codes, uint16_t *scale,
                            uint16_t *bias)
{
	uint8_t q[32];
	if (affine) {
		float min = FLT_MAX, max = -FLT_MAX;
		for (int j = 0; j < 32; j++) {
			min = fminf(min, x[j]);
			max = fmaxf(max, x[j]);
		}
		float d = (max - min) / 15, id = d != 0 ? 1.0f / d : 0.0f;
		*scale = qtk_f32_to_f16(d);
		*bias = qtk_f32_to_f16(min);
		for (int j = 0; j < 32; j++)
			q[j] = (uint8_t)MINI(15, (int8_t)((x[j] - min) * id + 0.5f));
	} else {
		float amax = 0, max = 0;
		for (int j = 0; j < 32; j++)
			if (amax < fabsf(x[j])) {
				amax = fabsf(x[j]);
				max = x[j];
			}
		float d = max / -8, id = d != 0 ? 1.0f / d : 0.0f;
		*scale = qtk_f32_to_f16(d);
		for (int j = 0; j < 32; j++)
			q[j] = (uint8_t)MINI(15, (int8_t)(x[j] * id + 8.5f)); /* q + 8 */
	}
	for (int i = 0; i < 16; i++)
		codes[i] = (uint8_t)(q[2 * i] | q[2 * i + 1] << 4);
}

static float frand(uint32_t *s)
{
	*s = *s * 1664525u + 1013904223u;
	return (float)((int32_t)(*s >> 8) - (1 << 23)) / (float)(1 << 23);
}

/* The vectors: a ramp, a constant, zeros, one outlier, random. */
static void vec(int k, float *x)
{
	uint32_t s = 12345u + (uint32_t)k;
	for (int j = 0; j < 32; j++)
		x[j] = k == 0 ? (float)(j - 16) : k == 1 ? 0.75f : k == 2 ? 0.0f :
		       k == 3 ? (j == 5 ? -40.0f : 0.01f * (float)j) : frand(&s) * (float)k;
}

TEST(gguf_blocks_golden_literal)
{
	/* x[j] = j - 16: max |x| is x[0] = -16, d = -16 / -8 = 2, q + 8 =
	 * trunc(j/2 + 0.5) capped at 15: bytes qs[j] = q[j] | q[j+16] << 4 */
	float x[32];
	uint8_t b[18];
	vec(0, x);
	ref_q4_0(x, b);
	CHECK_EQ(b[0] | b[1] << 8, 0x4000);  /* f16 2.0 */
	CHECK_EQ(b[2], 0x80);
	CHECK_EQ(b[3], 0x91);
	CHECK_EQ(b[17], 0xf8);               /* j=15: 8, j=31: 16 -> 15 */
}

TEST(gguf_blocks_pack_equals_ggml_reference)
{
	for (int k = 0; k < 12; k++) {
		float x[32], y[32];
		uint8_t ref[34], out[34], codes[32], c2[32];
		uint16_t sc, bi, s2, b2;
		qtk_status st;

		vec(k, x);
		/* Q8_0: codes = the ref block's qs, scale = its d */
		ref_q8_0(x, ref);
		memcpy(codes, ref + 2, 32);
		sc = (uint16_t)(ref[0] | ref[1] << 8);
		CHECK_EQ(qtk_gguf_pack_q8_0((const int8_t *)codes, &sc, 1, 32, out, &st), QTK_OK);
		CHECK_MSG(!memcmp(out, ref, 34), "q8_0 vector %d", k);
		CHECK_EQ(qtk_gguf_unpack_q8_0(out, 1, 32, (int8_t *)c2, &s2, &st), QTK_OK);
		CHECK(!memcmp(c2, codes, 32) && s2 == sc);
		/* Q4_0 from qtk int4 planes */
		ref_q4_0(x, ref);
		qtk_planes_int4(x, 0, codes, &sc, &bi);
		CHECK_EQ(qtk_gguf_pack_q4_0(codes, &sc, 1, 32, out, &st), QTK_OK);
		CHECK_MSG(!memcmp(out, ref, 18), "q4_0 vector %d", k);
		CHECK_EQ(qtk_gguf_unpack_q4_0(out, 1, 32, c2, &s2, &st), QTK_OK);
		CHECK(!memcmp(c2, codes, 16) && s2 == sc);
		/* dequantized: ggml's x = d*(q-8) is qtk's w = scale*q */
		{
			qtk_gguf_tensor t = { .name = "t", .type = QTK_GGML_Q4_0, .nelem = 32, .data = out };
			CHECK_EQ(qtk_gguf_read_f32(&t, 0, 32, y, &st), QTK_OK);
			for (int j = 0; j < 32; j++) {
				int q = ((codes[j / 2] >> (4 * (j & 1))) & 15) - 8;
				float w = qtk_f16_to_f32(sc) * (float)q;
				CHECK(!memcmp(&w, &y[j], 4));
			}
		}
		/* Q4_1 from qtk int4-affine planes */
		ref_q4_1(x, ref);
		qtk_planes_int4(x, 1, codes, &sc, &bi);
		CHECK_EQ(qtk_gguf_pack_q4_1(codes, &sc, &bi, 1, 32, out, &st), QTK_OK);
		CHECK_MSG(!memcmp(out, ref, 20), "q4_1 vector %d", k);
		CHECK_EQ(qtk_gguf_unpack_q4_1(out, 1, 32, c2, &s2, &b2, &st), QTK_OK);
		CHECK(!memcmp(c2, codes, 16) && s2 == sc && b2 == bi);
		{
			qtk_gguf_tensor t = { .name = "t", .type = QTK_GGML_Q4_1, .nelem = 32, .data = out };
			CHECK_EQ(qtk_gguf_read_f32(&t, 0, 32, y, &st), QTK_OK);
			for (int j = 0; j < 32; j++) {
				int q = (codes[j / 2] >> (4 * (j & 1))) & 15;
				float w = qtk_f16_to_f32(sc) * (float)q + qtk_f16_to_f32(bi);
				CHECK(!memcmp(&w, &y[j], 4));
			}
		}
	}
}

TEST(gguf_blocks_layout_mapping)
{
	qtk_q_layout L = { .scheme = QTK_SCHEME_INT4, .group = 32, .scale_dtype = QTK_DT_F16 };
	qtk_status st;
	uint32_t type = 0;
	uint8_t dummy[64] = { 0 };
	uint16_t sc = 0;

	CHECK_EQ(qtk_gguf_type_for_layout(&L, 64, &type, &st), QTK_OK);
	CHECK_EQ(type, QTK_GGML_Q4_0);
	L.scheme = QTK_SCHEME_INT8;
	CHECK_EQ(qtk_gguf_type_for_layout(&L, 64, &type, &st), QTK_OK);
	CHECK_EQ(type, QTK_GGML_Q8_0);
	L.scheme = QTK_SCHEME_INT4_AFFINE;
	CHECK_EQ(qtk_gguf_type_for_layout(&L, 64, &type, &st), QTK_OK);
	CHECK_EQ(type, QTK_GGML_Q4_1);
	CHECK_EQ(qtk_gguf_type_for_layout(&L, 48, &type, &st), QTK_E_GG_LAYOUT);
	CHECK(strstr(st.msg, "multiple of 32") != NULL);
	L.group = 64;
	CHECK_EQ(qtk_gguf_type_for_layout(&L, 64, &type, &st), QTK_E_GG_LAYOUT);
	CHECK(strstr(st.msg, "groups of 32") != NULL);
	L.group = 32;
	L.scale_dtype = QTK_DT_F32;
	CHECK_EQ(qtk_gguf_type_for_layout(&L, 64, &type, &st), QTK_E_GG_LAYOUT);
	L.scheme = QTK_SCHEME_NF4;
	L.scale_dtype = QTK_DT_F16;
	CHECK_EQ(qtk_gguf_type_for_layout(&L, 64, &type, &st), QTK_E_GG_LAYOUT);
	CHECK(strstr(st.msg, "nf4") != NULL);
	L.scheme = QTK_SCHEME_BF16;
	CHECK_EQ(qtk_gguf_type_for_layout(&L, 7, &type, &st), QTK_OK);
	CHECK_EQ(type, QTK_GGML_BF16);
	CHECK_EQ(qtk_gguf_pack_q4_0(dummy, &sc, 1, 40, dummy, &st), QTK_E_GG_LAYOUT);
}

/* ---- writer ---------------------------------------------------------- */

#define WN 5
static const qtk_gguf_desc wdesc[WN] = {
	{ "token_embd.weight", QTK_GGML_Q8_0, 2, { 64, 3, 1, 1 } },
	{ "blk.0.attn_norm.weight", QTK_GGML_F32, 1, { 7, 1, 1, 1 } },
	{ "blk.0.ffn_up.weight", QTK_GGML_Q4_0, 3, { 32, 5, 2, 1 } },
	{ "blk.0.ffn_down.weight", QTK_GGML_Q4_1, 2, { 96, 2, 1, 1 } },
	{ "output.weight", QTK_GGML_F16, 4, { 3, 1, 2, 2 } },
};

static uint8_t wbyte(size_t i, uint64_t k)
{
	uint8_t b = (uint8_t)(k * 131 + i * 17 + 3);
	return b;
}

static qtk_gguf_kvs *make_kvs(void)
{
	static const char *toks[] = { "<unk>", "<s>", "hello", "" };
	static const float scores[] = { 0, -1.5f, 2.25f, -0.0f };
	static const int32_t types[] = { 2, 3, 1, 6 };
	qtk_gguf_kvs *k = qtk_gguf_kvs_new();
	qtk_status st;
	int64_t big = -5000000000;
	if (!k)
		return NULL;
	if (qtk_gguf_kvs_add_str(k, "general.architecture", "llama", 5, &st) ||
	    qtk_gguf_kvs_add_u32(k, "general.quantization_version", 2, &st) ||
	    qtk_gguf_kvs_add_u32(k, "general.alignment", 32, &st) ||
	    qtk_gguf_kvs_add_f32(k, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &st) ||
	    qtk_gguf_kvs_add_bool(k, "t.flag", 1, &st) ||
	    qtk_gguf_kvs_add(k, "t.i64", QTK_GGUF_I64, &big, &st) ||
	    qtk_gguf_kvs_add_arr_str(k, "tokenizer.ggml.tokens", toks, NULL, 4, &st) ||
	    qtk_gguf_kvs_add_arr(k, "tokenizer.ggml.scores", QTK_GGUF_F32, scores, 4, &st) ||
	    qtk_gguf_kvs_add_arr(k, "tokenizer.ggml.token_type", QTK_GGUF_I32, types, 4, &st)) {
		qtk_gguf_kvs_free(k);
		return NULL;
	}
	return k;
}

typedef struct { qtk_gguf_writer *w; int part; qtk_err rc; } put_job;

/* Thread `part` writes its half of the chunks of 13 bytes, back to front. */
static void *put_thread(void *arg)
{
	put_job *j = arg;
	qtk_status st;
	for (size_t i = WN; i-- > 0;) {
		uint64_t n = qtk_gguf_writer_tensor_bytes(j->w, i);
		uint64_t chunks = (n + 12) / 13;
		for (uint64_t c = chunks; c-- > 0;) {
			uint8_t buf[13];
			uint64_t off = c * 13, len = n - off < 13 ? n - off : 13;
			if ((c + i) % 2 != (uint64_t)j->part)
				continue;
			for (uint64_t k = 0; k < len; k++)
				buf[k] = wbyte(i, off + k);
			if (!j->rc)
				j->rc = qtk_gguf_writer_put(j->w, i, off, buf, (size_t)len, &st);
		}
	}
	return NULL;
}

static qtk_err write_sample(const char *path, int force, qtk_status *st)
{
	qtk_gguf_kvs *k = make_kvs();
	qtk_gguf_writer *w;
	qtk_write_opts o = { .force = force };
	put_job jobs[2] = { { NULL, 0, QTK_OK }, { NULL, 1, QTK_OK } };
	pthread_t th;
	qtk_err rc;

	if (!k)
		return qtk_fail(st, QTK_E_NOMEM, "kvs");
	rc = qtk_gguf_writer_open(&w, path, k, wdesc, WN, &o, st);
	qtk_gguf_kvs_free(k);
	if (rc)
		return rc;
	jobs[0].w = jobs[1].w = w;
	if (pthread_create(&th, NULL, put_thread, &jobs[1]) != 0) {
		qtk_gguf_writer_abort(w);
		return qtk_fail(st, QTK_E_IO, "thread");
	}
	put_thread(&jobs[0]);
	pthread_join(th, NULL);
	if (jobs[0].rc || jobs[1].rc) {
		qtk_gguf_writer_abort(w);
		return qtk_fail(st, jobs[0].rc ? jobs[0].rc : jobs[1].rc, "put failed");
	}
	return qtk_gguf_writer_commit(w, st);
}

TEST(gguf_write_round_trip)
{
	const char *path = t_tmp("w.gguf");
	qtk_gguf_file *f;
	qtk_status st;
	const qtk_gguf_kv *kv;
	uint64_t u, len;
	int64_t i64;
	double d;
	const char *s;

	REQUIRE(write_sample(path, 0, &st) == QTK_OK);
	REQUIRE(qtk_gguf_open(path, &f, &st) == QTK_OK);
	CHECK_EQ(qtk_gguf_version(f), 3);
	CHECK_EQ(qtk_gguf_kv_count(f), 9);
	CHECK_EQ(qtk_gguf_get_uint(f, "general.quantization_version", &u, &st), QTK_OK);
	CHECK_EQ(u, 2);
	CHECK_EQ(qtk_gguf_get_f64(f, "llama.attention.layer_norm_rms_epsilon", &d, &st), QTK_OK);
	CHECK(d == (double)1e-5f);
	CHECK_EQ(qtk_gguf_get_int(f, "t.i64", &i64, &st), QTK_OK);
	CHECK_EQ(i64, -5000000000);
	kv = qtk_gguf_kv_find(f, "tokenizer.ggml.tokens");
	REQUIRE(kv && kv->count == 4);
	CHECK(!qtk_gguf_arr_str(kv, 2, &s, &len) && len == 5 && !memcmp(s, "hello", 5));
	CHECK(!qtk_gguf_arr_str(kv, 3, &s, &len) && len == 0);
	kv = qtk_gguf_kv_find(f, "tokenizer.ggml.scores");
	REQUIRE(kv);
	CHECK(!qtk_gguf_arr_f64(kv, 2, &d) && d == 2.25);
	kv = qtk_gguf_kv_find(f, "tokenizer.ggml.token_type");
	REQUIRE(kv);
	CHECK(!qtk_gguf_arr_int(kv, 3, &i64) && i64 == 6);
	REQUIRE(qtk_gguf_count(f) == WN);
	for (size_t i = 0; i < WN; i++) {
		const qtk_gguf_tensor *t = qtk_gguf_get(f, i);
		const uint8_t *p = t->data;
		int ok = 1;
		CHECK_STR(t->name, wdesc[i].name);
		CHECK_EQ(t->type, wdesc[i].type);
		CHECK_EQ(t->n_dims, wdesc[i].n_dims);
		for (uint32_t dd = 0; dd < 4; dd++)
			CHECK_EQ(t->ne[dd], wdesc[i].ne[dd]);
		CHECK_EQ(t->file_offset % 32, 0);
		for (uint64_t k = 0; k < t->nbytes; k++)
			ok &= p[k] == wbyte(i, k);
		CHECK_MSG(ok, "tensor %zu bytes differ", i);
	}
	CHECK_EQ(qtk_gguf_find(f, "blk.0.ffn_up.weight")->shape[0], 2);
	CHECK_EQ(qtk_gguf_find(f, "blk.0.ffn_up.weight")->shape[2], 32);
	qtk_gguf_close(f);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
	/* no --force: refuses to replace */
	CHECK_EQ(write_sample(path, 0, &st), QTK_E_EXISTS);
	CHECK_EQ(write_sample(path, 1, &st), QTK_OK);
}

TEST(gguf_write_rejects_bad_input)
{
	const char *path = t_tmp("bad.gguf");
	qtk_gguf_writer *w;
	qtk_gguf_kvs *k = qtk_gguf_kvs_new();
	qtk_status st;
	qtk_gguf_desc d[2] = { wdesc[0], wdesc[0] };
	uint8_t buf[64] = { 0 };

	REQUIRE(k);
	CHECK_EQ(qtk_gguf_kvs_add_u32(k, "a", 1, &st), QTK_OK);
	CHECK_EQ(qtk_gguf_kvs_add_u32(k, "a", 2, &st), QTK_E_GG_DUP_KEY);
	CHECK_EQ(qtk_gguf_kvs_add_u32(k, "", 2, &st), QTK_E_GG_NAME);
	CHECK_EQ(qtk_gguf_kvs_add_u32(k, "general.alignment", 48, &st), QTK_E_GG_ALIGNMENT);
	CHECK_EQ(qtk_gguf_kvs_add_f32(k, "general.alignment", 32, &st), QTK_E_GG_ALIGNMENT);
	/* what the reader would refuse (GGUF spec: ASCII keys, bools 0/1) */
	CHECK_EQ(qtk_gguf_kvs_add_u32(k, "caf\xc3\xa9", 1, &st), QTK_E_GG_NAME);
	CHECK_EQ(qtk_gguf_kvs_add_u32(k, "tab\there", 1, &st), QTK_E_GG_NAME);
	CHECK_EQ(qtk_gguf_kvs_add(k, "b", QTK_GGUF_BOOL, "\x02", &st), QTK_E_GG_BOOL);
	CHECK_EQ(qtk_gguf_kvs_add_arr(k, "bs", QTK_GGUF_BOOL, "\x01\x00\xff", 3, &st), QTK_E_GG_BOOL);
	CHECK_EQ(qtk_gguf_kvs_count(k), 1);
	CHECK_EQ(qtk_gguf_writer_open(&w, path, k, d, 2, NULL, &st), QTK_E_GG_DUP_TENSOR);
	d[1].name = "x";
	d[1].ne[0] = 48;
	CHECK_EQ(qtk_gguf_writer_open(&w, path, k, d, 2, NULL, &st), QTK_E_GG_BLOCK);
	d[1].ne[0] = 64;
	d[1].type = 4;
	CHECK_EQ(qtk_gguf_writer_open(&w, path, k, d, 2, NULL, &st), QTK_E_GG_TYPE);
	d[1].type = QTK_GGML_F32;
	d[1].n_dims = 5;
	CHECK_EQ(qtk_gguf_writer_open(&w, path, k, d, 2, NULL, &st), QTK_E_GG_NDIM);
	d[1].n_dims = 2;
	d[1].ne[1] = 0;
	CHECK_EQ(qtk_gguf_writer_open(&w, path, k, d, 2, NULL, &st), QTK_E_GG_DIM);
	d[1].ne[1] = 1ull << 62;
	CHECK_EQ(qtk_gguf_writer_open(&w, path, k, d, 2, NULL, &st), QTK_E_GG_SHAPE);
	d[1].ne[1] = 1;
	REQUIRE(qtk_gguf_writer_open(&w, path, k, d, 2, NULL, &st) == QTK_OK);
	CHECK_EQ(qtk_gguf_writer_put(w, 2, 0, buf, 1, &st), QTK_E_ARG);
	CHECK_EQ(qtk_gguf_writer_put(w, 1, 250, buf, 7, &st), QTK_E_ARG);
	CHECK_EQ(qtk_gguf_writer_put(w, 1, 0, buf, 64, &st), QTK_OK);
	/* tensor 0 never written: commit refuses, nothing left behind */
	CHECK_EQ(qtk_gguf_writer_commit(w, &st), QTK_E_GG_INCOMPLETE);
	CHECK(strstr(st.msg, "'token_embd.weight': 0 of 204 bytes") != NULL);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 0);
	REQUIRE(qtk_gguf_writer_open(&w, path, k, d, 2, NULL, &st) == QTK_OK);
	qtk_gguf_writer_abort(w);
	qtk_gguf_writer_abort(NULL);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 0);
	qtk_gguf_kvs_free(k);
}

static void sweep(qtk_fault_kind kind, int err, int with_old)
{
	const char *path = t_tmp("out.gguf");
	int done = 0;

	for (uint64_t nth = 1; nth < 10000 && !done; nth++) {
		qtk_status st = { 0 };
		qtk_err rc;
		size_t n;
		char *now;

		if (with_old)
			REQUIRE(t_write_file(path, "old contents", 12) == 0);
		else
			unlink(path);
		qtk_fault_arm(kind, nth, err);
		rc = write_sample(path, with_old, &st);
		if (!qtk_fault_fired(kind)) {
			qtk_fault_arm(kind, 0, 0);
			CHECK_MSG(rc == QTK_OK, "kind %d n %llu: %s", kind, (unsigned long long)nth, st.msg);
			CHECK(nth > 1);
			done = 1;
			break;
		}
		qtk_fault_arm(kind, 0, 0);
		if (rc == QTK_OK) {
			done = 1;  /* absorbed after the rename (directory fsync) */
			break;
		}
		CHECK_MSG(t_dir_entries(t_tmpdir()) == with_old, "kind %d n %llu: %d files left",
		          kind, (unsigned long long)nth, t_dir_entries(t_tmpdir()));
		now = t_read_file(path, &n);
		if (with_old)
			CHECK_MSG(now && n == 12 && !memcmp(now, "old contents", 12),
			          "kind %d n %llu: old output changed", kind, (unsigned long long)nth);
		else
			CHECK(now == NULL);
		free(now);
	}
	CHECK(done);
	{
		qtk_gguf_file *f;
		qtk_status st;
		CHECK_EQ(qtk_gguf_open(path, &f, &st), QTK_OK);
		qtk_gguf_close(f);
	}
}

TEST(gguf_write_fault_sweeps)
{
	sweep(QTK_FAULT_ALLOC, 0, 1);
	sweep(QTK_FAULT_ALLOC, 0, 0);
	sweep(QTK_FAULT_WRITE, ENOSPC, 1);
	sweep(QTK_FAULT_WRITE, EIO, 0);
	sweep(QTK_FAULT_FSYNC, EIO, 1);
	sweep(QTK_FAULT_RENAME, EXDEV, 1);
	sweep(QTK_FAULT_OPEN, EACCES, 0);
}

/* Compare two KVs through the accessors (nested arrays: counts only). */
static int same_kv(const qtk_gguf_kv *a, const qtk_gguf_kv *b)
{
	if (strcmp(a->key, b->key) || a->type != b->type || a->count != b->count)
		return 0;
	if (a->type == QTK_GGUF_STRING)
		return !memcmp(a->data, b->data, (size_t)a->count);
	if (a->type != QTK_GGUF_ARRAY)
		return !memcmp(a->data, b->data, (size_t)a->size);
	if (a->arr_type != b->arr_type)
		return 0;
	for (uint64_t i = 0; i < a->count; i++) {
		const char *s1, *s2;
		uint64_t l1, l2;
		double d1, d2;
		if (a->arr_type == QTK_GGUF_STRING) {
			if (qtk_gguf_arr_str(a, i, &s1, &l1) || qtk_gguf_arr_str(b, i, &s2, &l2) ||
			    l1 != l2 || memcmp(s1, s2, (size_t)l1))
				return 0;
		} else if (a->arr_type != QTK_GGUF_ARRAY) {
			if (qtk_gguf_arr_f64(a, i, &d1) || qtk_gguf_arr_f64(b, i, &d2) || d1 != d2)
				return 0;
		}
	}
	return 1;
}

/* Every KV of a v1 file (stories260K; and the built file with nested
 * arrays) copies into a v3 file with the same values; copying the v3 KVs
 * again gives the same bytes. */
TEST(gguf_write_copies_kvs_across_versions)
{
	for (int round = 0; round < 2; round++) {
		qtk_gguf_file *a, *b, *c;
		qtk_gguf_kvs *k = qtk_gguf_kvs_new(), *k2 = qtk_gguf_kvs_new();
		qtk_gguf_writer *w;
		qtk_status st;
		const char *src = round ? t_tmp("nested_v1.gguf")
		                        : t_data("stories260K/source-tinyllamas-stories-260k-f32.gguf");

		if (round) {
			/* a v1 file with a nested array: the fuzz seed built_v1 */
			size_t n;
			char *buf = t_read_file("tests/fuzz/seeds/gguf/built_v1.gguf", &n);
			REQUIRE(buf && t_write_file(src, buf, n) == 0);
			free(buf);
		}
		REQUIRE(k && k2 && qtk_gguf_open(src, &a, &st) == QTK_OK);
		CHECK_EQ(qtk_gguf_version(a), 1);
		for (size_t i = 0; i < qtk_gguf_kv_count(a); i++)
			CHECK_EQ(qtk_gguf_kvs_add_kv(k, qtk_gguf_kv_get(a, i), &st), QTK_OK);
		qtk_write_opts o = { .force = 1 };
		REQUIRE(qtk_gguf_writer_open(&w, t_tmp("v3.gguf"), k, NULL, 0, &o, &st) == QTK_OK);
		REQUIRE(qtk_gguf_writer_commit(w, &st) == QTK_OK);
		REQUIRE(qtk_gguf_open(t_tmp("v3.gguf"), &b, &st) == QTK_OK);
		CHECK_EQ(qtk_gguf_version(b), 3);
		REQUIRE(qtk_gguf_kv_count(b) == qtk_gguf_kv_count(a));
		for (size_t i = 0; i < qtk_gguf_kv_count(a); i++) {
			CHECK_MSG(same_kv(qtk_gguf_kv_get(a, i), qtk_gguf_kv_get(b, i)), "KV '%s' differs",
			          qtk_gguf_kv_get(a, i)->key);
			CHECK_EQ(qtk_gguf_kvs_add_kv(k2, qtk_gguf_kv_get(b, i), &st), QTK_OK);
		}
		REQUIRE(qtk_gguf_writer_open(&w, t_tmp("v3b.gguf"), k2, NULL, 0, &o, &st) == QTK_OK);
		REQUIRE(qtk_gguf_writer_commit(w, &st) == QTK_OK);
		REQUIRE(qtk_gguf_open(t_tmp("v3b.gguf"), &c, &st) == QTK_OK);
		for (size_t i = 0; i < qtk_gguf_kv_count(b); i++) {
			const qtk_gguf_kv *x = qtk_gguf_kv_get(b, i), *y = qtk_gguf_kv_get(c, i);
			CHECK_MSG(x->size == y->size && !memcmp(x->data, y->data, (size_t)x->size),
			          "KV '%s' not stable", x->key);
		}
		if (round) {
			const qtk_gguf_kv *x = qtk_gguf_kv_find(b, "t.nested");
			REQUIRE(x);
			CHECK_EQ(x->size, 4 + 8 + 2 * (4 + 8) + 6); /* v3 widths */
		}
		qtk_gguf_close(a);
		qtk_gguf_close(b);
		qtk_gguf_close(c);
		qtk_gguf_kvs_free(k);
		qtk_gguf_kvs_free(k2);
	}
}
