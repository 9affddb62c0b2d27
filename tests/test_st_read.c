/* tests: safetensors reader — real checkpoints, valid edge cases, the
 * malformed suite (one error code each) and sharded sets. */
#include <stdlib.h>

#include "../formats/qtk_formats.h"
#include "test.h"

/* Write 8-byte length + hdr + datalen bytes (0,1,2,...) to path. */
static const char *mk(const char *rel, const char *hdr, size_t datalen)
{
	const char *p = t_tmp(rel);
	size_t hl = strlen(hdr), n = 8 + hl + datalen;
	uint8_t *b = malloc(n);
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
	memcpy(b + 8, hdr, hl);
	for (size_t i = 0; i < datalen; i++)
		b[8 + hl + i] = (uint8_t)i;
	t_write_file(p, b, n);
	free(b);
	return p;
}

static const char *mk_raw(const char *rel, const void *b, size_t n)
{
	const char *p = t_tmp(rel);
	t_write_file(p, b, n);
	return p;
}

TEST(st_stories260k_f32)
{
	qtk_status st;
	qtk_st_file *f;
	REQUIRE(qtk_st_open(t_data("stories260K/model.safetensors"), &f, &st) == QTK_OK);
	CHECK_EQ(qtk_st_count(f), 47);
	CHECK_EQ(qtk_st_shard_count(f), 1);
	CHECK_EQ(qtk_st_shard_size(f, 0), 1045200);
	CHECK_STR(qtk_st_meta_get(f, "format"), "pt");
	CHECK_EQ(qtk_st_meta_count(f), 3);
	uint64_t sum = 0, prev = 0;
	for (size_t i = 0; i < qtk_st_count(f); i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i);
		CHECK_EQ(t->dtype, QTK_DT_F32);
		CHECK(t->file_offset >= prev); /* data order */
		prev = t->file_offset;
		sum += t->nbytes;
		CHECK(qtk_st_find(f, t->name) == t);
	}
	CHECK_EQ(sum, 1040128);
	const qtk_st_tensor *e = qtk_st_get(f, 0);
	CHECK_STR(e->name, "model.embed_tokens.weight");
	CHECK_EQ(e->ndim, 2);
	CHECK_EQ(e->shape[0], 512);
	CHECK_EQ(e->shape[1], 64);
	float v[3];
	REQUIRE(qtk_st_read_f32(e, 0, 3, v, &st) == QTK_OK);
	CHECK(v[0] == -0.29474878311157227f && v[1] == 0.5618956089019775f &&
	      v[2] == 0.1754225343465805f);
	const qtk_st_tensor *nw = qtk_st_find(f, "model.norm.weight");
	REQUIRE(nw);
	CHECK(nw == qtk_st_get(f, 46));
	REQUIRE(qtk_st_read_f32(nw, 1, 2, v, &st) == QTK_OK);
	CHECK(v[0] == 1.3673226833343506f && v[1] == 1.7504382133483887f);
	CHECK(qtk_st_read_f32(nw, 63, 2, v, &st) == QTK_E_ARG);
	CHECK(qtk_st_read_f32(nw, UINT64_MAX, 2, v, &st) == QTK_E_ARG);
	CHECK(qtk_st_find(f, "nope") == NULL);
	CHECK(qtk_st_get(f, 47) == NULL);
	qtk_st_close(f);
	qtk_st_close(NULL);
}

/* The BF16 and F16 files are documented casts of the F32 one. */
TEST(st_stories260k_half_files_match_f32)
{
	qtk_status st;
	qtk_st_file *f, *h[2];
	REQUIRE(qtk_st_open(t_data("stories260K/model.safetensors"), &f, &st) == QTK_OK);
	REQUIRE(qtk_st_open(t_data("stories260K/model.bf16.safetensors"), &h[0], &st) == QTK_OK);
	REQUIRE(qtk_st_open(t_data("stories260K/model.f16.safetensors"), &h[1], &st) == QTK_OK);
	qtk_dtype want[2] = { QTK_DT_BF16, QTK_DT_F16 };
	for (int k = 0; k < 2; k++) {
		CHECK_EQ(qtk_st_count(h[k]), 47);
		size_t bad = 0;
		for (size_t i = 0; i < 47; i++) {
			const qtk_st_tensor *a = qtk_st_get(f, i), *b = qtk_st_find(h[k], a->name);
			REQUIRE(b && b->dtype == want[k] && b->nelem == a->nelem);
			const float *x = a->data;
			const uint16_t *y = b->data;
			for (uint64_t j = 0; j < a->nelem; j++) {
				uint16_t c = k ? qtk_f32_to_f16(x[j]) : qtk_f32_to_bf16(x[j]);
				bad += c != y[j];
			}
		}
		CHECK_EQ(bad, 0);
	}
	qtk_st_close(f);
	qtk_st_close(h[0]);
	qtk_st_close(h[1]);
}

TEST(st_read_f32_integer_dtype_refused)
{
	qtk_status st;
	qtk_st_file *f;
	REQUIRE(qtk_st_open(t_data("stories260K/reference_logits.safetensors"), &f, &st) == QTK_OK);
	CHECK_EQ(qtk_st_count(f), 2);
	const qtk_st_tensor *ids = qtk_st_get(f, 0), *lg = qtk_st_get(f, 1);
	CHECK_STR(ids->name, "input_ids");
	CHECK_EQ(ids->dtype, QTK_DT_I32);
	CHECK_STR(lg->name, "logits");
	CHECK_EQ(lg->shape[0], 256);
	CHECK_EQ(lg->shape[1], 512);
	float v;
	CHECK_EQ(qtk_st_read_f32(ids, 0, 1, &v, &st), QTK_E_ARG);
	CHECK(strstr(st.msg, "input_ids") != NULL);
	CHECK_EQ(qtk_st_read_f32(lg, 0, 1, &v, &st), QTK_OK);
	qtk_st_close(f);
}

TEST(st_real_gpt2_and_blazepose)
{
	const char *g = t_shared("ckpts/capp-gpt2/model.safetensors");
	const char *b = t_shared("ckpts/human-models/blazepose-heavy.safetensors");
	if (!g || !b)
		SKIP("../shared/ckpts (capp-gpt2, human-models) not present");
	qtk_status st;
	qtk_st_file *f;
	REQUIRE(qtk_st_open(g, &f, &st) == QTK_OK);
	CHECK_EQ(qtk_st_count(f), 52);
	CHECK_STR(qtk_st_get(f, 51)->name, "transformer.wte.weight");
	CHECK_EQ(qtk_st_find(f, "transformer.wte.weight")->shape[0], 53);
	qtk_st_close(f);
	REQUIRE(qtk_st_open(b, &f, &st) == QTK_OK);
	CHECK_EQ(qtk_st_count(f), 412);
	size_t nf16 = 0;
	for (size_t i = 0; i < qtk_st_count(f); i++)
		nf16 += qtk_st_get(f, i)->dtype == QTK_DT_F16;
	CHECK_EQ(nf16, 396);
	const qtk_st_tensor *p = qtk_st_get(f, 0);
	CHECK_STR(p->name, "StatefulPartitionedCall/model/channel_padding/Pad/paddings");
	CHECK_EQ(((const int32_t *)p->data)[7], 48);
	qtk_st_close(f);
}

TEST(st_sharded_blazepose_equals_single)
{
	const char *b = t_shared("ckpts/human-models/blazepose-heavy.safetensors");
	const char *d = t_shared("ckpts/human-models/blazepose-heavy-sharded");
	if (!b || !d)
		SKIP("../shared/ckpts/human-models not present");
	char idx[4096];
	snprintf(idx, sizeof idx, "%s/blazepose-heavy.safetensors.index.json", d);
	qtk_status st;
	qtk_st_file *one, *sh[2];
	REQUIRE(qtk_st_open(b, &one, &st) == QTK_OK);
	REQUIRE(qtk_st_open(idx, &sh[0], &st) == QTK_OK);
	REQUIRE(qtk_st_open(d, &sh[1], &st) == QTK_OK); /* the directory */
	for (int k = 0; k < 2; k++) {
		CHECK_EQ(qtk_st_shard_count(sh[k]), 4);
		CHECK_EQ(qtk_st_count(sh[k]), qtk_st_count(one));
		CHECK_STR(qtk_st_dir(sh[k]), d);
		size_t bad = 0;
		uint32_t shard = 0;
		for (size_t i = 0; i < qtk_st_count(one); i++) {
			const qtk_st_tensor *a = qtk_st_get(one, i);
			const qtk_st_tensor *s = qtk_st_find(sh[k], a->name);
			REQUIRE(s);
			bad += s->dtype != a->dtype || s->nbytes != a->nbytes || s->ndim != a->ndim ||
			       memcmp(s->shape, a->shape, sizeof a->shape) ||
			       memcmp(s->data, a->data, (size_t)a->nbytes);
			const qtk_st_tensor *g = qtk_st_get(sh[k], i);
			bad += g->shard < shard; /* data order: shard, then offset */
			shard = g->shard;
		}
		CHECK_EQ(bad, 0);
		CHECK_EQ(shard, 3);
	}
	qtk_st_close(one);
	qtk_st_close(sh[0]);
	qtk_st_close(sh[1]);
}

TEST(st_valid_edge_cases)
{
	qtk_status st;
	qtk_st_file *f;
	/* zero-element tensors (anywhere), rank 0, header padded with spaces */
	const char *p = mk("edge.safetensors",
	                   "{\"__metadata__\":{\"k\":\"v\",\"e\":\"\"},"
	                   "\"z\":{\"dtype\":\"F32\",\"shape\":[0,64],\"data_offsets\":[0,0]},"
	                   "\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]},"
	                   "\"z2\":{\"dtype\":\"BF16\",\"shape\":[3,0],\"data_offsets\":[8,8]},"
	                   "\"b\xf0\x9f\x98\x80\xc3\xa9\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[8,10]}}     ",
	                   10);
	REQUIRE(qtk_st_open(p, &f, &st) == QTK_OK);
	CHECK_EQ(qtk_st_count(f), 4);
	CHECK_STR(qtk_st_get(f, 0)->name, "z");
	CHECK_STR(qtk_st_get(f, 1)->name, "s");
	CHECK_EQ(qtk_st_find(f, "s")->ndim, 0);
	CHECK_EQ(qtk_st_find(f, "s")->nelem, 1);
	CHECK_EQ(qtk_st_find(f, "z")->nelem, 0);
	CHECK_STR(qtk_st_meta_get(f, "e"), "");
	CHECK(qtk_st_find(f, "b\xf0\x9f\x98\x80\xc3\xa9") != NULL); /* 4- and 2-byte UTF-8 */
	CHECK_STR(qtk_st_meta_key(f, 0), "k");
	CHECK_EQ(qtk_st_read_f32(qtk_st_find(f, "z"), 0, 0, NULL, &st), QTK_OK);
	qtk_st_close(f);
	/* no tensors at all */
	REQUIRE(qtk_st_open(mk("empty.safetensors", "{}      ", 0), &f, &st) == QTK_OK);
	CHECK_EQ(qtk_st_count(f), 0);
	CHECK(qtk_st_find(f, "x") == NULL);
	qtk_st_close(f);
	/* every dtype name is accepted */
	for (int dt = 0; dt < QTK_DT_COUNT; dt++) {
		char h[256];
		snprintf(h, sizeof h, "{\"t\":{\"dtype\":\"%s\",\"shape\":[2],\"data_offsets\":[0,%zu]}}",
		         qtk_dtype_name((qtk_dtype)dt), 2 * qtk_dtype_size((qtk_dtype)dt));
		CHECK_MSG(qtk_st_open(mk("dt.safetensors", h, 2 * qtk_dtype_size((qtk_dtype)dt)), &f,
		                      &st) == QTK_OK, "dtype %s: %s", qtk_dtype_name((qtk_dtype)dt), st.msg);
		CHECK_EQ(qtk_st_read_f32(qtk_st_get(f, 0), 0, 0, NULL, &st),
		         qtk_dtype_is_float((qtk_dtype)dt) ? QTK_OK : QTK_E_ARG);
		qtk_st_close(f);
	}
}

#define A_HDR_BOMB "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"
#define T1(dt, shape, a, b) "{\"t\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" a "," b "]}}"

typedef struct {
	const char *what;
	const char *hdr; /* NULL: use raw */
	size_t datalen;
	qtk_err want;
	const char *raw;
	size_t rawlen;
} bad_case;

static const bad_case bad_cases[] = {
	{ "empty file", NULL, 0, QTK_E_ST_TOO_SMALL, "", 0 },
	{ "1 byte", NULL, 0, QTK_E_ST_TOO_SMALL, "\x02", 1 },
	{ "4 bytes", NULL, 0, QTK_E_ST_TOO_SMALL, "\x02\0\0\0", 4 },
	{ "7 bytes", NULL, 0, QTK_E_ST_TOO_SMALL, "\x02\0\0\0\0\0\0", 7 },
	{ "header length 0", NULL, 0, QTK_E_ST_HEADER_LEN, "\0\0\0\0\0\0\0\0{}", 10 },
	{ "header past EOF", NULL, 0, QTK_E_ST_HEADER_LEN, "\x10\0\0\0\0\0\0\0{}", 10 },
	{ "header above 100 MB", NULL, 0, QTK_E_ST_HEADER_LEN, "\x01\xe1\xf5\x05\0\0\0\0{}", 10 },
	{ "header length 2^64-1", NULL, 0, QTK_E_ST_HEADER_LEN,
	  "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10 },
	{ "invalid UTF-8 byte", "{\"\xff\":1}", 0, QTK_E_ST_UTF8, NULL, 0 },
	{ "overlong UTF-8", "{\"\xc0\xaf\":1}", 0, QTK_E_ST_UTF8, NULL, 0 },
	{ "UTF-8 surrogate", "{\"\xed\xa0\x80\":1}", 0, QTK_E_ST_UTF8, NULL, 0 },
	{ "UTF-8 above U+10FFFF", "{\"\xf4\x90\x80\x80\":1}", 0, QTK_E_ST_UTF8, NULL, 0 },
	{ "truncated UTF-8", "{\"a\":1}\xe2\x82", 0, QTK_E_ST_UTF8, NULL, 0 },
	{ "truncated JSON", "{\"t\":", 0, QTK_E_ST_JSON, NULL, 0 },
	{ "JSON then garbage", "{} x", 0, QTK_E_ST_JSON, NULL, 0 },
	{ "NUL byte in header", NULL, 0, QTK_E_ST_JSON, "\x03\0\0\0\0\0\0\0{\0}", 11 },
	{ "escaped NUL in name", "{\"a\\u0000b\":{}}", 0, QTK_E_ST_JSON, NULL, 0 },
	{ "header is an array", "[]", 0, QTK_E_ST_NOT_OBJECT, NULL, 0 },
	{ "header is a string", "\"x\"", 0, QTK_E_ST_JSON, NULL, 0 },
	{ "entry is a number", "{\"t\":1}", 0, QTK_E_ST_NOT_OBJECT, NULL, 0 },
	{ "metadata is an array", "{\"__metadata__\":[]}", 0, QTK_E_ST_METADATA, NULL, 0 },
	{ "metadata value not string", "{\"__metadata__\":{\"a\":1}}", 0, QTK_E_ST_METADATA, NULL, 0 },
	{ "unknown dtype", T1("F128", "[1]", "0", "16"), 16, QTK_E_ST_DTYPE, NULL, 0 },
	{ "dtype lower case", T1("f32", "[1]", "0", "4"), 4, QTK_E_ST_DTYPE, NULL, 0 },
	{ "dtype not a string", "{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
	  QTK_E_ST_DTYPE, NULL, 0 },
	{ "missing dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, QTK_E_ST_KEYS, NULL, 0 },
	{ "missing shape", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, QTK_E_ST_KEYS, NULL, 0 },
	{ "missing data_offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, QTK_E_ST_KEYS, NULL, 0 },
	{ "unknown key", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":0}}", 4,
	  QTK_E_ST_KEYS, NULL, 0 },
	{ "shape not array", T1("F32", "4", "0", "4"), 4, QTK_E_ST_SHAPE, NULL, 0 },
	{ "negative dim", T1("F32", "[-1]", "0", "4"), 4, QTK_E_ST_SHAPE, NULL, 0 },
	{ "fractional dim", T1("F32", "[1.5]", "0", "4"), 4, QTK_E_ST_SHAPE, NULL, 0 },
	{ "string dim", T1("F32", "[\"1\"]", "0", "4"), 4, QTK_E_ST_SHAPE, NULL, 0 },
	{ "rank 9", T1("F32", "[1,1,1,1,1,1,1,1,1]", "0", "4"), 4, QTK_E_UNSUPPORTED, NULL, 0 },
	{ "dims overflow", T1("F32", "[4294967296,4294967296]", "0", "4"), 4,
	  QTK_E_ST_SHAPE_OVERFLOW, NULL, 0 },
	{ "bytes overflow", T1("F32", "[4611686018427387904]", "0", "4"), 4,
	  QTK_E_ST_SHAPE_OVERFLOW, NULL, 0 },
	{ "dim above 2^64", T1("F32", "[18446744073709551616]", "0", "4"), 4, QTK_E_OVERFLOW, NULL, 0 },
	{ "I32 [2, 2^64-2]", T1("I32", "[2,18446744073709551614]", "0", "4"), 4, QTK_E_OVERFLOW,
	  NULL, 0 },
	{ "I32 [2, 2^62] products overflow", T1("I32", "[2,4611686018427387904]", "0", "4"), 4,
	  QTK_E_ST_SHAPE_OVERFLOW, NULL, 0 },
	{ "data cut short", T1("F32", "[4]", "0", "16"), 10, QTK_E_ST_OUT_OF_BOUNDS, NULL, 0 },
	{ "tensor named __metadata__",
	  "{\"__metadata__\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
	  QTK_E_ST_METADATA, NULL, 0 },
	{ "ten tensors at one range",
	  "{\"a0\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	  "\"a1\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	  "\"a2\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	  "\"a3\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	  "\"a4\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	  "\"a5\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	  "\"a6\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	  "\"a7\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	  "\"a8\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	  "\"a9\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
	  QTK_E_ST_OVERLAP, NULL, 0 },
	{ "offsets not array", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":4}}", 4,
	  QTK_E_ST_OFFSETS, NULL, 0 },
	{ "three offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
	  QTK_E_ST_OFFSETS, NULL, 0 },
	{ "end before begin", T1("F32", "[0]", "4", "0"), 4, QTK_E_ST_OFFSETS, NULL, 0 },
	{ "negative offset", T1("F32", "[1]", "-4", "0"), 4, QTK_E_ST_OFFSETS, NULL, 0 },
	{ "offset above 2^63-1", T1("F32", "[1]", "0", "18446744073709551615"), 4, QTK_E_OVERFLOW,
	  NULL, 0 },
	{ "size mismatch", T1("F32", "[2]", "0", "4"), 8, QTK_E_ST_SIZE_MISMATCH, NULL, 0 },
	{ "past data end", T1("F32", "[2]", "0", "8"), 4, QTK_E_ST_OUT_OF_BOUNDS, NULL, 0 },
	{ "first not at 0", T1("F32", "[1]", "4", "8"), 8, QTK_E_ST_FIRST_OFFSET, NULL, 0 },
	{ "overlap",
	  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, QTK_E_ST_OVERLAP, NULL, 0 },
	{ "same range twice",
	  "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
	  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, QTK_E_ST_OVERLAP, NULL, 0 },
	{ "gap",
	  "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
	  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, QTK_E_ST_GAP, NULL, 0 },
	{ "trailing bytes", T1("F32", "[1]", "0", "4"), 5, QTK_E_ST_TRAILING, NULL, 0 },
	{ "no tensors but data", "{}", 4, QTK_E_ST_TRAILING, NULL, 0 },
	{ "duplicate name",
	  "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
	  "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, QTK_E_ST_DUPLICATE, NULL, 0 },
	{ "empty name", "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
	  QTK_E_ST_NAME, NULL, 0 },
	/* more parser bug classes: numbers that are not integers, duplicates
	 * below the top level, a byte-order mark, an empty header */
	{ "dim in exponent form", T1("F32", "[1e0]", "0", "4"), 4, QTK_E_ST_SHAPE, NULL, 0 },
	{ "dim 1.0", T1("F32", "[1.0]", "0", "4"), 4, QTK_E_ST_SHAPE, NULL, 0 },
	{ "dim -1e0", T1("F32", "[-1e0]", "0", "4"), 4, QTK_E_ST_SHAPE, NULL, 0 },
	{ "offset 4.0", T1("F32", "[1]", "0", "4.0"), 4, QTK_E_ST_OFFSETS, NULL, 0 },
	{ "offset as string", T1("F32", "[1]", "0", "\"4\""), 4, QTK_E_ST_OFFSETS, NULL, 0 },
	{ "negative begin", T1("F32", "[1]", "-1", "4"), 4, QTK_E_ST_OFFSETS, NULL, 0 },
	{ "dim with leading zero", T1("F32", "[01]", "0", "4"), 4, QTK_E_ST_JSON, NULL, 0 },
	{ "dim true", T1("F32", "[true]", "0", "4"), 4, QTK_E_ST_SHAPE, NULL, 0 },
	{ "duplicate key in an entry",
	  "{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
	  QTK_E_ST_DUPLICATE, NULL, 0 },
	{ "duplicate key in metadata", "{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0,
	  QTK_E_ST_DUPLICATE, NULL, 0 },
	{ "two __metadata__", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, QTK_E_ST_DUPLICATE,
	  NULL, 0 },
	{ "UTF-8 byte-order mark", "\xef\xbb\xbf{}", 0, QTK_E_ST_JSON, NULL, 0 },
	{ "header of spaces", "        ", 0, QTK_E_ST_JSON, NULL, 0 },
	{ "header null", "null", 0, QTK_E_ST_JSON, NULL, 0 },
	{ "metadata value null", "{\"__metadata__\":{\"a\":null}}", 0, QTK_E_ST_METADATA, NULL, 0 },
	{ "shape of 1000 dims", NULL, 0, QTK_E_UNSUPPORTED, NULL, 0 }, /* built below */
};

TEST(st_malformed_suite)
{
	size_t n = sizeof bad_cases / sizeof bad_cases[0];
	CHECK(n >= 30);
	for (size_t i = 0; i < n; i++) {
		const bad_case *c = &bad_cases[i];
		char rel[64];
		snprintf(rel, sizeof rel, "bad%02zu.safetensors", i);
		const char *p;

		if (!strcmp(c->what, "shape of 1000 dims")) {
			char *h = malloc(8192);
			size_t k = (size_t)snprintf(h, 8192, "{\"t\":{\"dtype\":\"U8\",\"shape\":[1");
			for (int d = 1; d < 1000; d++)
				k += (size_t)snprintf(h + k, 8192 - k, ",1");
			snprintf(h + k, 8192 - k, "],\"data_offsets\":[0,1]}}");
			p = mk(rel, h, 1);
			free(h);
		} else {
			p = c->hdr ? mk(rel, c->hdr, c->datalen) : mk_raw(rel, c->raw, c->rawlen);
		}
		qtk_status st;
		qtk_st_file *f = (qtk_st_file *)&st; /* must come back NULL */
		qtk_err rc = qtk_st_open(p, &f, &st);
		CHECK_MSG(rc == c->want, "%s: got %s, want %s (%s)", c->what, qtk_err_name(rc),
		          qtk_err_name(c->want), st.msg);
		CHECK_MSG(f == NULL, "%s: out not NULL", c->what);
		CHECK_MSG(strstr(st.msg, rel) != NULL, "%s: message does not name the file: %s",
		          c->what, st.msg);
		qtk_st_close(f);
	}
}

/* JSON nesting bombs (a stack-depth attack on recursive parsers): in a
 * shape, in the metadata, at the top, and in a sharded index. jansson
 * stops at depth 2048; the file is refused, the process survives. */
TEST(st_json_nesting_bombs)
{
	static const char *const where[] = { "{\"t\":{\"dtype\":\"F32\",\"shape\":", "{\"__metadata__\":",
	                                     "" };
	size_t depth = 200000;

	for (int w = 0; w < 3; w++) {
		size_t pre = strlen(where[w]), k = 0;
		char *h = malloc(pre + 2 * depth + 64), rel[32];
		qtk_st_file *f;
		qtk_status st;

		memcpy(h, where[w], pre);
		k = pre;
		memset(h + k, '[', depth);
		k += depth;
		memset(h + k, ']', depth);
		k += depth;
		k += (size_t)snprintf(h + k, 64, "%s", w == 0 ? ",\"data_offsets\":[0,0]}}" : w == 1 ? "}" : "");
		h[k] = 0;
		snprintf(rel, sizeof rel, "bomb%d.safetensors", w);
		CHECK_EQ(qtk_st_open(mk(rel, h, 0), &f, &st), QTK_E_ST_JSON);
		CHECK(f == NULL);
		free(h);
	}
	/* the same in an index */
	{
		char *ix = malloc(2 * depth + 64);
		size_t k = (size_t)snprintf(ix, 64, "{\"weight_map\":{\"a\":");
		qtk_st_file *f;
		qtk_status st;

		memset(ix + k, '[', depth);
		memset(ix + k + depth, ']', depth);
		snprintf(ix + k + 2 * depth, 8, "}}");
		t_system("mkdir -p '%s'", t_tmp("bombset"));
		mk("bombset/s1.safetensors", A_HDR_BOMB, 4);
		t_write_file(t_tmp("bombset/m.safetensors.index.json"), ix, strlen(ix));
		CHECK_EQ(qtk_st_open(t_tmp("bombset"), &f, &st), QTK_E_ST_INDEX);
		free(ix);
	}
}

/* Index files: the shard name must be a plain, non-empty file name; the
 * JSON must be valid UTF-8 and free of duplicate keys. */
TEST(st_index_malformed)
{
	static const struct {
		const char *what, *index;
		qtk_err want;
	} cs[] = {
		{ "empty shard name", "{\"weight_map\":{\"a\":\"\"}}", QTK_E_ST_INDEX },
		{ "shard is '.'", "{\"weight_map\":{\"a\":\".\"}}", QTK_E_ST_INDEX },
		{ "shard is '..'", "{\"weight_map\":{\"a\":\"..\"}}", QTK_E_ST_INDEX },
		{ "absolute shard path", "{\"weight_map\":{\"a\":\"/etc/passwd\"}}", QTK_E_ST_INDEX },
		{ "duplicate index key",
		  "{\"weight_map\":{\"a\":\"s1.safetensors\",\"a\":\"s1.safetensors\"}}", QTK_E_ST_INDEX },
		{ "index not UTF-8", "{\"weight_map\":{\"a\":\"s1.safetensors\"},\"x\":\"\xff\"}", QTK_E_ST_INDEX },
		{ "weight_map an array", "{\"weight_map\":[\"s1.safetensors\"]}", QTK_E_ST_INDEX },
		{ "index is empty", "", QTK_E_ST_INDEX },
		{ "index names itself", "{\"weight_map\":{\"a\":\"m.safetensors.index.json\"}}",
		  QTK_E_ST_HEADER_LEN },
	};
	for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
		char dir[32], rel[64];
		qtk_st_file *f = NULL;
		qtk_status st;
		qtk_err rc;

		snprintf(dir, sizeof dir, "ix%zu", i);
		t_system("mkdir -p '%s'", t_tmp(dir));
		snprintf(rel, sizeof rel, "%s/s1.safetensors", dir);
		mk(rel, A_HDR_BOMB, 4);
		snprintf(rel, sizeof rel, "%s/m.safetensors.index.json", dir);
		t_write_file(t_tmp(rel), cs[i].index, strlen(cs[i].index));
		rc = qtk_st_open(t_tmp(dir), &f, &st);
		CHECK_MSG(rc == cs[i].want, "%s: got %s (%s)", cs[i].what, qtk_err_name(rc), st.msg);
		CHECK(f == NULL);
	}
}

TEST(st_error_names_tensor)
{
	qtk_status st;
	qtk_st_file *f;
	const char *p = mk("named.safetensors", T1("F32", "[2]", "0", "8"), 4);
	CHECK_EQ(qtk_st_open(p, &f, &st), QTK_E_ST_OUT_OF_BOUNDS);
	CHECK(strstr(st.msg, "'t'") != NULL);
	CHECK(strstr(st.msg, "named.safetensors") != NULL);
}

static void write_shard(const char *dir, const char *name, const char *hdr, size_t dl)
{
	char rel[128];
	snprintf(rel, sizeof rel, "%s/%s", dir, name);
	mk(rel, hdr, dl);
}

static void write_index(const char *dir, const char *body)
{
	char rel[128];
	snprintf(rel, sizeof rel, "%s/m.safetensors.index.json", dir);
	t_write_file(t_tmp(rel), body, strlen(body));
}

#define A_HDR "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"
#define B_HDR "{\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}"

TEST(st_sharded_checks)
{
	static const struct {
		const char *what, *index, *s2hdr;
		qtk_err want;
	} cs[] = {
		{ "ok", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}", B_HDR,
		  QTK_OK },
		{ "no weight_map", "{\"metadata\":{}}", B_HDR, QTK_E_ST_INDEX },
		{ "not JSON", "{", B_HDR, QTK_E_ST_INDEX },
		{ "shard with a path", "{\"weight_map\":{\"a\":\"../s1.safetensors\"}}", B_HDR,
		  QTK_E_ST_INDEX },
		{ "metadata not an object",
		  "{\"metadata\":1,\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}",
		  B_HDR, QTK_E_ST_INDEX },
		{ "shard not a string", "{\"weight_map\":{\"a\":1}}", B_HDR, QTK_E_ST_INDEX },
		{ "missing shard", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s9.safetensors\"}}",
		  B_HDR, QTK_E_ST_SHARD_MISSING },
		{ "tensor absent from its shard",
		  "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\",\"c\":\"s2.safetensors\"}}",
		  B_HDR, QTK_E_ST_SHARD_TENSOR },
		{ "shard tensor not in index",
		  "{\"weight_map\":{\"a\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}", B_HDR,
		  QTK_E_ST_SHARD_TENSOR },
		{ "index names the wrong shard",
		  "{\"weight_map\":{\"a\":\"s2.safetensors\",\"b\":\"s1.safetensors\"}}", B_HDR,
		  QTK_E_ST_SHARD_TENSOR },
		{ "duplicate across shards",
		  "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}",
		  "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
		  "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[4,8]}}",
		  QTK_E_ST_DUPLICATE },
		{ "broken shard", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}",
		  "{\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,4]}}",
		  QTK_E_ST_SIZE_MISMATCH },
	};
	for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
		char dir[32];
		snprintf(dir, sizeof dir, "sh%zu", i);
		t_system("mkdir -p '%s'", t_tmp(dir));
		write_shard(dir, "s1.safetensors", A_HDR, 4);
		write_shard(dir, "s2.safetensors", cs[i].s2hdr, strstr(cs[i].s2hdr, "[4,8]") ? 8 : 4);
		write_index(dir, cs[i].index);
		qtk_status st;
		qtk_st_file *f = NULL;
		qtk_err rc = qtk_st_open(t_tmp(dir), &f, &st);
		CHECK_MSG(rc == cs[i].want, "%s: got %s, want %s (%s)", cs[i].what,
		          qtk_err_name(rc), qtk_err_name(cs[i].want), st.msg);
		if (!rc) {
			CHECK_EQ(qtk_st_count(f), 2);
			CHECK_EQ(qtk_st_shard_count(f), 2);
			CHECK_EQ(qtk_st_find(f, "b")->shard, 1);
			CHECK_STR(qtk_st_get(f, 1)->name, "b");
		}
		qtk_st_close(f);
	}
}

TEST(st_open_directory_rules)
{
	qtk_status st;
	qtk_st_file *f = NULL;
	t_system("mkdir -p '%s' '%s' '%s'", t_tmp("d1"), t_tmp("d2"), t_tmp("d3"));
	mk("d1/only.safetensors", A_HDR, 4);
	CHECK_EQ(qtk_st_open(t_tmp("d1"), &f, &st), QTK_OK);
	CHECK_EQ(qtk_st_count(f), 1);
	qtk_st_close(f);
	mk("d2/x.safetensors", A_HDR, 4);
	mk("d2/y.safetensors", A_HDR, 4);
	CHECK_EQ(qtk_st_open(t_tmp("d2"), &f, &st), QTK_E_ARG);
	CHECK_EQ(qtk_st_open(t_tmp("d3"), &f, &st), QTK_E_NOT_FOUND);
	CHECK_EQ(qtk_st_open(t_tmp("nope.safetensors"), &f, &st), QTK_E_NOT_FOUND);
	CHECK(f == NULL);
}

/* A one-tensor file whose tensor is named tag, so the file read shows. */
static void mk_tagged(const char *dir, const char *file, const char *tag)
{
	char rel[256], hdr[256];
	snprintf(rel, sizeof rel, "%s/%s", dir, file);
	snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
	         tag);
	mk(rel, hdr, 4);
}

/* An index naming two shards holding tag.a and tag.b (both written). */
static void mk_set(const char *dir, const char *index, const char *stem, const char *tag)
{
	char rel[256], s1[128], s2[128], ta[64], tb[64], body[512];
	snprintf(s1, sizeof s1, "%s-00001-of-00002.safetensors", stem);
	snprintf(s2, sizeof s2, "%s-00002-of-00002.safetensors", stem);
	snprintf(ta, sizeof ta, "%s.a", tag);
	snprintf(tb, sizeof tb, "%s.b", tag);
	mk_tagged(dir, s1, ta);
	mk_tagged(dir, s2, tb);
	snprintf(body, sizeof body, "{\"weight_map\":{\"%s\":\"%s\",\"%s\":\"%s\"}}", ta, s1, tb, s2);
	snprintf(rel, sizeof rel, "%s/%s", dir, index);
	t_write_file(t_tmp(rel), body, strlen(body));
}

/* Open dir: the file picked is dir/file and its tensors are tag's. */
static void expect_pick(const char *dir, const char *file, const char *tag)
{
	char d[512], want[600], ta[64];
	qtk_status st;
	qtk_st_file *f = NULL;
	char *r = NULL;

	snprintf(d, sizeof d, "%s", t_tmp(dir));
	snprintf(want, sizeof want, "%s/%s", d, file);
	snprintf(ta, sizeof ta, "%s.a", tag);
	CHECK_MSG(qtk_st_open(d, &f, &st) == QTK_OK, "%s: %s", dir, st.msg);
	if (f) {
		CHECK_STR(qtk_st_path(f), want);
		CHECK_MSG(qtk_st_find(f, tag) || qtk_st_find(f, ta), "%s: read %s, not %s's",
		          dir, qtk_st_get(f, 0)->name, tag);
	}
	qtk_st_close(f);
	CHECK_EQ(qtk_st_resolve(d, &r, &st), QTK_OK);
	CHECK_STR(r, want);
	qtk_free(r);
}

/* Open dir: refused with code, the message holding each needle. */
static void expect_refusal(const char *dir, qtk_err code, const char *n1, const char *n2)
{
	qtk_status st;
	qtk_st_file *f = NULL;
	qtk_err rc = qtk_st_open(t_tmp(dir), &f, &st);

	CHECK_MSG(rc == code, "%s: got %s, want %s (%s)", dir, qtk_err_name(rc),
	          qtk_err_name(code), rc ? st.msg : "");
	CHECK(f == NULL);
	CHECK_MSG(!n1 || strstr(st.msg, n1), "%s: '%s' not in '%s'", dir, n1, st.msg);
	CHECK_MSG(!n2 || strstr(st.msg, n2), "%s: '%s' not in '%s'", dir, n2, st.msg);
	qtk_st_close(f);
}

/* A directory is read as Hugging Face loaders read it; other .safetensors
 * files beside the checkpoint (reference outputs, a consolidated copy) no
 * longer make it ambiguous. */
TEST(st_open_directory_hf_names)
{
	const char *dirs[] = { "hf1", "hf2", "hf3", "df1", "df2", "any1", "any2", "var1",
	                       "var2", "idx2", "gg", "dot", "fifo" };
	for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++)
		t_system("mkdir -p '%s'", t_tmp(dirs[i]));

	/* transformers: model.safetensors before its index, as from_pretrained */
	mk_set("hf1", "model.safetensors.index.json", "model", "sharded");
	mk_tagged("hf1", "model.safetensors", "single");
	mk_tagged("hf1", "consolidated.safetensors", "consolidated");
	mk_tagged("hf1", "reference_logits.safetensors", "logits");
	expect_pick("hf1", "model.safetensors", "single");
	/* the index beside a consolidated copy and reference outputs */
	mk_set("hf2", "model.safetensors.index.json", "model", "sharded");
	mk_tagged("hf2", "consolidated.safetensors", "consolidated");
	mk_tagged("hf2", "reference_logits.safetensors", "logits");
	expect_pick("hf2", "model.safetensors.index.json", "sharded");
	/* transformers' names come before diffusers' */
	mk_tagged("hf3", "model.safetensors", "single");
	mk_tagged("hf3", "diffusion_pytorch_model.safetensors", "dit");
	expect_pick("hf3", "model.safetensors", "single");
	/* diffusers: the index before the single file, as ModelMixin */
	mk_set("df1", "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model",
	       "dit");
	expect_pick("df1", "diffusion_pytorch_model.safetensors.index.json", "dit");
	mk_tagged("df1", "diffusion_pytorch_model.safetensors", "dit1");
	expect_pick("df1", "diffusion_pytorch_model.safetensors.index.json", "dit");
	mk_tagged("df2", "diffusion_pytorch_model.safetensors", "dit1");
	mk_tagged("df2", "reference.safetensors", "ref");
	expect_pick("df2", "diffusion_pytorch_model.safetensors", "dit1");
	/* no Hugging Face name: the only file, else refused naming them all */
	mk_tagged("any1", "flux1-dev.safetensors", "flux");
	expect_pick("any1", "flux1-dev.safetensors", "flux");
	mk_tagged("any2", "flux1-dev.safetensors", "flux");
	mk_tagged("any2", "ae.safetensors", "ae");
	expect_refusal("any2", QTK_E_ARG, "2 .safetensors files: ae.safetensors, flux1-dev.safetensors",
	               "name one");
	/* variants are read only when named (or when alone) */
	mk_tagged("var1", "model.safetensors", "f32");
	mk_tagged("var1", "model.fp16.safetensors", "f16");
	expect_pick("var1", "model.safetensors", "f32");
	mk_tagged("var2", "model.fp16.safetensors", "f16");
	mk_tagged("var2", "model.bf16.safetensors", "bf16");
	expect_refusal("var2", QTK_E_ARG, "model.bf16.safetensors, model.fp16.safetensors", NULL);
	/* one index of another name is picked; two are refused */
	mk_set("idx2", "a.safetensors.index.json", "a", "a");
	expect_pick("idx2", "a.safetensors.index.json", "a");
	mk_set("idx2", "b.safetensors.index.json", "b", "b");
	expect_refusal("idx2", QTK_E_ARG, "2 index files: a.safetensors.index.json, "
	               "b.safetensors.index.json", NULL);
	/* a directory is never read as GGUF; hidden files are no candidates */
	t_write_file(t_tmp("gg/m-Q4_0.gguf"), "GGUF", 4);
	expect_refusal("gg", QTK_E_NOT_FOUND, "no .safetensors file or index",
	               "1 .gguf file");
	mk_tagged("dot", "._w.safetensors", "appledouble");
	mk_tagged("dot", "w.safetensors", "w");
	expect_pick("dot", "w.safetensors", "w");
	/* a named entry that is not a regular file is refused, not skipped */
	mk_tagged("fifo", "other.safetensors", "other");
	t_system("mkfifo '%s'", t_tmp("fifo/model.safetensors"));
	expect_refusal("fifo", QTK_E_IO, "model.safetensors: is a FIFO", NULL);
	/* "dir/" joins with one slash */
	{
		char d[512], *r = NULL;
		qtk_status st;
		snprintf(d, sizeof d, "%s/", t_tmp("hf1"));
		CHECK_EQ(qtk_st_resolve(d, &r, &st), QTK_OK);
		CHECK(r && strstr(r, "hf1/model.safetensors") && !strstr(r, "//"));
		qtk_free(r);
		/* a file resolves to itself */
		snprintf(d, sizeof d, "%s", t_tmp("hf1/consolidated.safetensors"));
		CHECK_EQ(qtk_st_resolve(d, &r, &st), QTK_OK);
		CHECK_STR(r, d);
		qtk_free(r);
	}
}

/* The ambiguity message stays within the status buffer, however many
 * candidates there are. */
TEST(st_open_directory_many_candidates)
{
	qtk_status st;
	qtk_st_file *f = NULL;
	t_system("mkdir -p '%s'", t_tmp("many"));
	for (int i = 0; i < 40; i++) {
		char n[64];
		snprintf(n, sizeof n, "checkpoint-step-%06d.safetensors", i);
		mk_tagged("many", n, "t");
	}
	CHECK_EQ(qtk_st_open(t_tmp("many"), &f, &st), QTK_E_ARG);
	CHECK(strstr(st.msg, "40 .safetensors files: checkpoint-step-000000.safetensors") != NULL);
	CHECK(strstr(st.msg, "...") != NULL);
	CHECK(strlen(st.msg) < sizeof st.msg - 1);
}

/* Every allocation failure is reported as NOMEM and leaks nothing. */
TEST(st_open_alloc_failures)
{
	qtk_status st;
	qtk_st_file *f;
	int ok = 0;
	for (uint64_t n = 1; n < 100000 && !ok; n++) {
		qtk_fault_arm(QTK_FAULT_ALLOC, n, 0);
		qtk_err rc = qtk_st_open(t_data("stories260K/model.safetensors"), &f, &st);
		int fired = qtk_fault_fired(QTK_FAULT_ALLOC);
		qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
		if (!fired) {
			CHECK_EQ(rc, QTK_OK);
			ok = 1;
		} else {
			CHECK_MSG(rc == QTK_E_NOMEM || rc == QTK_E_IO, "n=%llu: %s", (unsigned long long)n,
			          qtk_err_name(rc));
		}
		qtk_st_close(f);
	}
	CHECK(ok);
}

/* Picking a file in a directory: every allocation failure (candidate
 * lists, the joined path) is NOMEM with nothing leaked, for a pick and for
 * the refusal that lists the candidates. */
TEST(st_open_directory_alloc_failures)
{
	static const struct { const char *dir; qtk_err want; } cs[] = {
		{ "pick", QTK_OK }, { "ambiguous", QTK_E_ARG },
	};
	t_system("mkdir -p '%s' '%s'", t_tmp("pick"), t_tmp("ambiguous"));
	mk_set("pick", "model.safetensors.index.json", "model", "sharded");
	mk_tagged("pick", "consolidated.safetensors", "consolidated");
	mk_tagged("pick", "reference_logits.safetensors", "logits");
	for (int i = 0; i < 12; i++) {
		char n[64];
		snprintf(n, sizeof n, "step-%02d.safetensors", i);
		mk_tagged("ambiguous", n, "t");
	}
	for (size_t c = 0; c < sizeof cs / sizeof *cs; c++) {
		char d[512];
		int done = 0;
		snprintf(d, sizeof d, "%s", t_tmp(cs[c].dir));
		for (uint64_t n = 1; n < 100000 && !done; n++) {
			qtk_status st;
			qtk_st_file *f = NULL;
			qtk_fault_arm(QTK_FAULT_ALLOC, n, 0);
			qtk_err rc = qtk_st_open(d, &f, &st);
			int fired = qtk_fault_fired(QTK_FAULT_ALLOC);
			qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
			if (!fired) {
				CHECK_MSG(rc == cs[c].want, "%s: %s", cs[c].dir, qtk_err_name(rc));
				done = 1;
			} else {
				CHECK_MSG(rc == QTK_E_NOMEM, "%s, n=%llu: %s (%s)", cs[c].dir,
				          (unsigned long long)n, qtk_err_name(rc), st.msg);
				CHECK(f == NULL);
			}
			qtk_st_close(f);
		}
		CHECK(done);
	}
}
