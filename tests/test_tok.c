/* tests: the SPM tokenizer (runtime/rt_tok*.c) on stories260K's tok512
 * vocabulary from its three files. Expected ids were produced by
 * llama.cpp's llama-tokenize (commit 18ef86ec, --no-parse-special, on the
 * GGUF re-saved as v3 by qtk) and, for QTK_TOK_SP_WHITESPACE, by
 * sentencepiece 0.1.97 (Debian python3-sentencepiece) with [1] + encode(). */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "qtk_runtime.h"
#include "test.h"

#define TOK_MODEL "stories260K/tokenizer.model"
#define TOK_BIN "stories260K/tokenizer.bin"
#define TOK_GGUF "stories260K/source-tinyllamas-stories-260k-f32.gguf"
/* tok512 as transformers' LlamaConverter writes it (tests/tools/spm_to_tokenizer_json.py) */
#define TOK_JSON "tok512/tokenizer.json"

static const char *const sources[] = { TOK_MODEL, TOK_BIN, TOK_GGUF, TOK_JSON };
#define NSRC 4

/* Encode s (len bytes) into a malloc'd array. */
static int32_t *enc(const qtk_tok *t, const char *s, size_t len, unsigned flags, size_t *n)
{
	size_t cap = qtk_tok_max_tokens(len);
	int32_t *ids = malloc(cap * sizeof *ids);
	qtk_status st;

	*n = 0;
	if (!ids)
		return NULL;
	if (qtk_tok_encode(t, s, len, flags, ids, cap, n, &st)) {
		t_fail_at(__FILE__, __LINE__, "encode: %s", st.msg);
		free(ids);
		return NULL;
	}
	return ids;
}

static int roundtrips(const qtk_tok *t, const char *s, size_t len, const int32_t *ids, size_t n)
{
	char *d;
	size_t dl;
	qtk_status st;
	int ok;

	if (qtk_tok_decode(t, ids, n, &d, &dl, &st))
		return 0;
	ok = dl == len && !memcmp(d, s, len) && d[dl] == 0;
	qtk_free(d);
	return ok;
}

static const struct {
	const char *text;
	int32_t ids[24];
	int n;
} lcpp[] = {
	{ "", { 1 }, 1 },
	{ " ", { 1, 410, 410 }, 3 },
	{ "   ", { 1, 410, 410, 410, 410 }, 5 },
	{ "\n", { 1, 410, 13 }, 3 },
	{ "a\n\nb", { 1, 261, 13, 13, 430 }, 5 },
	{ "Hello world  x", { 1, 346, 306, 414, 263, 304, 341, 410, 410, 444 }, 10 },
	{ "  leading and trailing  ",
	  { 1, 410, 410, 278, 411, 380, 299, 269, 259, 420, 412, 290, 299, 410, 410 }, 15 },
	{ "Once upon a time, there was a little girl named Lily.",
	  { 1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426 }, 16 },
	/* emoji, CJK: byte fallback */
	{ "\xf0\x9f\x98\x80 emoji", { 1, 410, 243, 162, 155, 131, 344, 423, 414, 449, 417 }, 11 },
	{ "\xe4\xbd\xa0\xe5\xa5\xbd CJK", { 1, 410, 231, 192, 163, 232, 168, 192, 410, 457, 454, 462 },
	  12 },
	/* not UTF-8: 0xff announces 4 bytes and takes the U+2581 after it along */
	{ "\xff\xfe bad", { 1, 410, 258, 257, 229, 153, 132, 430, 380 }, 9 },
	{ "\xe4" "a", { 1, 410, 231, 100 }, 4 },
	{ "x\xe4", { 1, 410, 444, 231 }, 4 },
	{ "\xc3", { 1, 410, 198 }, 3 },
	/* the two longest pieces (9 bytes: U+2581 little, U+2581 friend) */
	{ "little friend", { 1, 376, 374 }, 3 },
	{ "\t tab", { 1, 410, 12, 259, 412, 430 }, 6 },
	/* control and byte pieces' text is plain text (no special parsing) */
	{ "<s> </s> <unk> <0x0A>",
	  { 1, 410, 504, 419, 505, 410, 504, 492, 419, 505, 410, 504, 379, 433, 505, 410, 504, 477,
	    444, 477, 447, 505 }, 22 },
};

TEST(tok_llama_cpp_ids)
{
	for (int k = 0; k < NSRC; k++) {
		qtk_tok *t;
		qtk_status st;

		REQUIRE(qtk_tok_open(t_data(sources[k]), &t, &st) == QTK_OK);
		CHECK_EQ(qtk_tok_count(t), 512);
		CHECK_EQ(qtk_tok_bos(t), 1);
		CHECK_EQ(qtk_tok_eos(t), 2);
		CHECK_EQ(qtk_tok_unk(t), 0);
		CHECK(qtk_tok_wants_bos(t));
		for (size_t c = 0; c < sizeof lcpp / sizeof lcpp[0]; c++) {
			size_t len = strlen(lcpp[c].text), n;
			int32_t *ids = enc(t, lcpp[c].text, len, QTK_TOK_ADD_BOS, &n);
			REQUIRE(ids);
			CHECK_MSG(n == (size_t)lcpp[c].n && !memcmp(ids, lcpp[c].ids, n * sizeof *ids),
			          "%s: case %zu: %zu tokens, ids differ from llama.cpp's", sources[k], c, n);
			CHECK_MSG(roundtrips(t, lcpp[c].text, len, ids, n), "%s: case %zu: no round trip",
			          sources[k], c);
			CHECK_MSG(roundtrips(t, lcpp[c].text, len, ids + 1, n - 1),
			          "%s: case %zu: no round trip without BOS", sources[k], c);
			free(ids);
		}
		qtk_tok_close(t);
	}
}

/* sentencepiece folds spaces when the model says so (tok512 does) */
TEST(tok_sentencepiece_whitespace)
{
	static const struct {
		const char *text;
		int32_t ids[16];
		int n;
	} sp[] = {
		{ "", { 1 }, 1 },
		{ " ", { 1 }, 1 },
		{ "   ", { 1 }, 1 },
		{ "\n", { 1, 410, 13 }, 3 },
		{ "Hello world  x", { 1, 346, 306, 414, 263, 304, 341, 410, 444 }, 9 },
		{ "  leading and trailing  ", { 1, 278, 411, 380, 299, 269, 259, 420, 412, 290, 299 }, 11 },
		{ " \xf0\x9f\x98\x80 ", { 1, 410, 243, 162, 155, 131 }, 6 },
		{ "a  \n  b", { 1, 261, 410, 13, 268 }, 5 },
	};
	qtk_tok *t, *g;
	qtk_status st;
	size_t n;
	int32_t *ids;

	REQUIRE(qtk_tok_open(t_data(TOK_MODEL), &t, &st) == QTK_OK);
	REQUIRE(qtk_tok_open(t_data(TOK_GGUF), &g, &st) == QTK_OK);
	for (size_t c = 0; c < sizeof sp / sizeof sp[0]; c++) {
		ids = enc(t, sp[c].text, strlen(sp[c].text), QTK_TOK_ADD_BOS | QTK_TOK_SP_WHITESPACE, &n);
		REQUIRE(ids);
		CHECK_MSG(n == (size_t)sp[c].n && !memcmp(ids, sp[c].ids, n * sizeof *ids),
		          "case %zu: ids differ from sentencepiece's", c);
		free(ids);
	}
	/* the GGUF does not carry remove_extra_whitespaces: the flag does nothing */
	ids = enc(g, "Hello world  x", 14, QTK_TOK_ADD_BOS | QTK_TOK_SP_WHITESPACE, &n);
	CHECK_EQ(n, 10);
	free(ids);
	qtk_tok_close(t);
	qtk_tok_close(g);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* All of tinystories.txt: 100708 tokens with BOS, as llama-tokenize gives
 * them (crc32 of the little-endian i32 ids), from each file; 100703 as
 * sentencepiece gives them. reference_logits' input_ids are the first 256. */
TEST(tok_tinystories)
{
	size_t len, n;
	char *text = t_read_file(t_data("stories260K/tinystories.txt"), &len);
	qtk_st_file *ref;
	const qtk_st_tensor *in;
	qtk_status st;

	REQUIRE(text);
	REQUIRE(qtk_st_open(t_data("stories260K/reference_logits.safetensors"), &ref, &st) == QTK_OK);
	in = qtk_st_find(ref, "input_ids");
	REQUIRE(in && in->dtype == QTK_DT_I32 && in->nelem == 256);
	for (int k = 0; k < NSRC; k++) {
		qtk_tok *t;
		int32_t *ids;
		double t0;

		REQUIRE(qtk_tok_open(t_data(sources[k]), &t, &st) == QTK_OK);
		t0 = now_ms();
		ids = enc(t, text, len, QTK_TOK_ADD_BOS, &n);
		t0 = now_ms() - t0;
		REQUIRE(ids);
		CHECK_EQ(n, 100708);
		CHECK_EQ(qtk_crc32(0, ids, n * sizeof *ids), 0xb5eec72bu);
		CHECK(!memcmp(ids, in->data, 256 * sizeof *ids));
		CHECK(roundtrips(t, text, len, ids, n));
		/* milliseconds (28 ms on a 2-core Xeon); generous for sanitizers */
		CHECK_MSG(t0 < 3000, "%s: encoding took %.0f ms", sources[k], t0);
		if (k == 0)
			printf("  tinystories.txt: %zu bytes, %zu tokens in %.1f ms\n", len, n, t0);
		free(ids);
		if (k == 0) {
			ids = enc(t, text, len, QTK_TOK_ADD_BOS | QTK_TOK_SP_WHITESPACE, &n);
			REQUIRE(ids);
			CHECK_EQ(n, 100703);
			CHECK_EQ(qtk_crc32(0, ids, n * sizeof *ids), 0xf5bdbf85u);
			CHECK(!memcmp(ids, in->data, 256 * sizeof *ids));
			free(ids);
		}
		qtk_tok_close(t);
	}
	qtk_st_close(ref);
	free(text);
}

/* Random bytes (spaces, newlines, ASCII, UTF-8, stray bytes): all three
 * files give the same ids, and decoding gives the bytes back. */
TEST(tok_random_roundtrip)
{
	static const char *const bits[] = { " ", "  ", "\n", "a", "the", " little", "Lily", ".",
	                                    "\xc3\xa9", "\xe4\xbd\xa0", "\xf0\x9f\x98\x80", "\xff",
	                                    "\x80", "\xe2\x96", "\xe2\x96\x81", "\t", "\0", "x" };
	qtk_tok *t[NSRC];
	qtk_status st;
	uint64_t rs = 7;
	char buf[512];

	for (int k = 0; k < NSRC; k++)
		REQUIRE(qtk_tok_open(t_data(sources[k]), &t[k], &st) == QTK_OK);
	for (int r = 0; r < 400; r++) {
		size_t len = 0, n[NSRC];
		int32_t *ids[NSRC];
		int pieces = (int)(t_rand_u64(&rs) % 40);

		for (int p = 0; p < pieces; p++) {
			const char *b = bits[t_rand_u64(&rs) % (sizeof bits / sizeof bits[0])];
			size_t bl = *b ? strlen(b) : 1;
			memcpy(buf + len, b, bl);
			len += bl;
		}
		for (int k = 0; k < NSRC; k++) {
			ids[k] = enc(t[k], buf, len, r & 1 ? QTK_TOK_ADD_BOS : 0, &n[k]);
			REQUIRE(ids[k]);
			CHECK(n[k] <= qtk_tok_max_tokens(len));
		}
		for (int k = 1; k < NSRC; k++)
			CHECK_MSG(n[k] == n[0] && !memcmp(ids[k], ids[0], n[0] * 4), "%s: round %d",
			          sources[k], r);
		/* U+2581 in the text is a space to SPM: it comes back as ' ' */
		if (!memmem(buf, len, "\xe2\x96\x81", 3))
			CHECK_MSG(roundtrips(t[0], buf, len, ids[0], n[0]), "round %d (%zu bytes)", r, len);
		for (int k = 0; k < NSRC; k++)
			free(ids[k]);
	}
	for (int k = 0; k < NSRC; k++)
		qtk_tok_close(t[k]);
}

TEST(tok_edges)
{
	qtk_tok *t;
	qtk_status st;
	int32_t ids[8];
	size_t n, len;
	char *big, *d;
	int32_t *many;

	REQUIRE(qtk_tok_open(t_data(TOK_BIN), &t, &st) == QTK_OK);
	/* empty text: nothing, or just BOS / EOS */
	CHECK(qtk_tok_encode(t, "", 0, 0, ids, 8, &n, &st) == QTK_OK && n == 0);
	CHECK(qtk_tok_encode(t, NULL, 0, QTK_TOK_ADD_BOS | QTK_TOK_ADD_EOS, ids, 8, &n, &st) ==
	      QTK_OK && n == 2 && ids[0] == 1 && ids[1] == 2);
	/* a buffer too small */
	CHECK_EQ(qtk_tok_encode(t, "Hello world", 11, 0, ids, 2, &n, &st), QTK_E_ARG);
	CHECK(strstr(st.msg, "tokenizer.bin") != NULL);
	CHECK_EQ(qtk_tok_encode(t, "", 0, QTK_TOK_ADD_BOS, ids, 0, &n, &st), QTK_E_ARG);
	/* 100000 letters without a space: longer than any piece */
	len = 100000;
	big = malloc(len);
	REQUIRE(big);
	memset(big, 'a', len);
	many = enc(t, big, len, 0, &n);
	REQUIRE(many);
	CHECK_EQ(n, len);            /* U+2581 a, then single "a" pieces (412) */
	CHECK(many[0] == 261 && many[1] == 412 && many[n - 1] == 412);
	CHECK(roundtrips(t, big, len, many, n));
	free(many);
	/* 100000 spaces: U+2581 U+2581 is no piece, each space is one token */
	memset(big, ' ', len);
	many = enc(t, big, len, 0, &n);
	REQUIRE(many);
	CHECK_EQ(n, len + 1);
	CHECK(roundtrips(t, big, len, many, n));
	free(many);
	free(big);
	/* decoding: BOS / EOS / <unk> give nothing; the first space goes */
	{
		int32_t s[] = { 1, 376, 374, 2, 0, 13, 3 + 0xe4 };
		CHECK(qtk_tok_decode(t, s, 7, &d, &len, &st) == QTK_OK);
		CHECK(len == 15 && !memcmp(d, "little friend\n\xe4", 15));
		qtk_free(d);
		s[0] = 410; /* a lone U+2581 piece first: its space is the one put in front */
		CHECK(qtk_tok_decode(t, s, 3, &d, &len, &st) == QTK_OK);
		CHECK_STR(d, " little friend");
		qtk_free(d);
		s[1] = 5000;
		CHECK_EQ(qtk_tok_decode(t, s, 3, &d, &len, &st), QTK_E_ARG);
		CHECK(d == NULL && strstr(st.msg, "5000"));
		CHECK(qtk_tok_decode(t, s, 0, &d, &len, &st) == QTK_OK && len == 0 && d && !*d);
		qtk_free(d);
	}
	/* llama2.c's per-token text: the space goes only after BOS (or at -1) */
	{
		const char *p = qtk_tok_text(t, 1, 376, &len);
		CHECK(len == 6 && !memcmp(p, "little", 6));
		p = qtk_tok_text(t, 376, 374, &len);
		CHECK(len == 7 && !memcmp(p, " friend", 7));
		p = qtk_tok_text(t, -1, 374, &len);
		CHECK(len == 6 && !memcmp(p, "friend", 6));
		p = qtk_tok_text(t, 376, 3 + 0x0a, &len);
		CHECK(len == 1 && *p == '\n');
		p = qtk_tok_text(t, 376, 2, &len);
		CHECK(p && len == 0);
		CHECK(qtk_tok_text(t, 1, 512, &len) == NULL && len == 0);
		CHECK(qtk_tok_text(t, 1, -1, &len) == NULL);
	}
	/* the pieces: tokenizer.bin's ' ' is stored as U+2581 */
	{
		const char *p = qtk_tok_piece(t, 376, &len);
		CHECK(len == 9 && !memcmp(p, "\xe2\x96\x81little", 9));
		CHECK_EQ(qtk_tok_find(t, "\xe2\x96\x81little", 9), 376);
		CHECK_EQ(qtk_tok_find(t, " little", 7), -1);
		CHECK_EQ(qtk_tok_type(t, 1), QTK_TOK_CONTROL);
		CHECK_EQ(qtk_tok_type(t, 0), QTK_TOK_UNKNOWN);
		CHECK_EQ(qtk_tok_type(t, 3), QTK_TOK_BYTE);
		CHECK_EQ(qtk_tok_type(t, 376), QTK_TOK_NORMAL);
		CHECK_EQ(qtk_tok_type(t, 512), 0);
		CHECK(qtk_tok_piece(t, 512, &len) == NULL);
	}
	CHECK_EQ(qtk_tok_check_count(t, 512, &st), QTK_OK);
	CHECK_EQ(qtk_tok_check_count(t, 32000, &st), QTK_E_FORMAT);
	CHECK(strstr(st.msg, "tokenizer.bin") && strstr(st.msg, "32000"));
	qtk_tok_close(t);
	qtk_tok_close(NULL);
}

/* The three files hold the same vocabulary, piece by piece. */
TEST(tok_sources_agree)
{
	qtk_tok *t[NSRC];
	qtk_status st;

	for (int k = 0; k < NSRC; k++)
		REQUIRE(qtk_tok_open(t_data(sources[k]), &t[k], &st) == QTK_OK);
	for (int32_t i = 0; i < 512; i++) {
		size_t l0, l;
		const char *p0 = qtk_tok_piece(t[0], i, &l0), *p;
		for (int k = 1; k < NSRC; k++) {
			p = qtk_tok_piece(t[k], i, &l);
			/* tokenizer.bin stores BOS/EOS as "\n<s>\n", "\n</s>\n" */
			if (k != 1 || (i != 1 && i != 2))
				CHECK_MSG(l == l0 && !memcmp(p, p0, l), "%s: piece %d differs", sources[k], i);
			/* tokenizer.json has merge ranks instead of scores */
			if (k != 3)
				CHECK_MSG(qtk_tok_score(t[k], i) == qtk_tok_score(t[0], i), "%s: score %d",
				          sources[k], i);
			CHECK_MSG(qtk_tok_type(t[k], i) == qtk_tok_type(t[0], i), "%s: type %d", sources[k], i);
		}
	}
	for (int k = 0; k < NSRC; k++)
		qtk_tok_close(t[k]);
}

/* ---- malformed files -------------------------------------------------- */

static void put_i32(uint8_t *p, int32_t v) { memcpy(p, &v, 4); }

/* Write b[0, n) as NAME in the test dir; qtk_tok_open must fail with code
 * and a message naming the file. */
static void expect_fail(const uint8_t *b, size_t n, const char *name, qtk_err code,
                        const char *what)
{
	qtk_tok *t = (qtk_tok *)1;
	qtk_status st;
	qtk_err rc;

	REQUIRE(t_write_file(t_tmp(name), b, n) == 0);
	rc = qtk_tok_open(t_tmp(name), &t, &st);
	CHECK_MSG(rc == code, "%s: got %s (%s), expected %s", what, qtk_err_name(rc), st.msg,
	          qtk_err_name(code));
	CHECK_MSG(!rc || (t == NULL && strstr(st.msg, name)), "%s: '%s' does not name the file",
	          what, st.msg);
	if (!rc)
		qtk_tok_close(t);
}

TEST(tok_bin_malformed)
{
	size_t n, cuts = 0, ok = 0;
	uint8_t *b = t_read_file(t_data(TOK_BIN), &n), *m;
	float nan = NAN;

	REQUIRE(b && n > 100);
	m = malloc(n + 16);
	REQUIRE(m);
	expect_fail(b, 0, "empty.bin", QTK_E_FORMAT, "empty file");
	expect_fail(b, 3, "short.bin", QTK_E_FORMAT, "3 bytes");
	expect_fail(b, 4, "header.bin", QTK_E_FORMAT, "no tokens");
	/* every cut: either on a token boundary (fewer tokens) or an error */
	for (size_t cut = 5; cut < n; cut += 1) {
		qtk_tok *t;
		qtk_status st;
		REQUIRE(t_write_file(t_tmp("cut.bin"), b, cut) == 0);
		if (qtk_tok_open(t_tmp("cut.bin"), &t, &st) == QTK_OK) {
			ok++;
			CHECK(qtk_tok_count(t) < 512);
			qtk_tok_close(t);
		} else {
			cuts++;
			CHECK_MSG(st.code == QTK_E_FORMAT && strstr(st.msg, "cut.bin") &&
			          (strstr(st.msg, "truncated") || strstr(st.msg, "past the end")),
			          "cut %zu: %s", cut, st.msg);
		}
	}
	CHECK(ok > 100 && cuts > ok);
	/* token 0 ("<unk>") starts at 4: score, then length */
	memcpy(m, b, n);
	put_i32(m + 8, -1);
	expect_fail(m, n, "neg.bin", QTK_E_FORMAT, "negative length");
	put_i32(m + 8, 1 << 30);
	expect_fail(m, n, "huge.bin", QTK_E_FORMAT, "length past the end");
	put_i32(m + 8, 8); /* more than max_token_length 7 */
	expect_fail(m, n, "long.bin", QTK_E_FORMAT, "length above max_token_length");
	memcpy(m, b, n);
	put_i32(m, 0);
	expect_fail(m, n, "max0.bin", QTK_E_FORMAT, "max_token_length 0");
	put_i32(m, -5);
	expect_fail(m, n, "maxneg.bin", QTK_E_FORMAT, "negative max_token_length");
	memcpy(m, b, n);
	memcpy(m + 4, &nan, 4);
	expect_fail(m, n, "nan.bin", QTK_E_FORMAT, "NaN score");
	/* trailing bytes too few for a token header */
	memcpy(m, b, n);
	memset(m + n, 0, 16);
	expect_fail(m, n + 3, "tail.bin", QTK_E_FORMAT, "3 trailing bytes");
	/* a zero-length token at the end is fine (llama2.c reads it) */
	{
		qtk_tok *t;
		qtk_status st;
		REQUIRE(t_write_file(t_tmp("extra.bin"), m, n + 8) == 0);
		CHECK(qtk_tok_open(t_tmp("extra.bin"), &t, &st) == QTK_OK);
		if (t) {
			CHECK_EQ(qtk_tok_count(t), 513);
			CHECK_EQ(qtk_tok_check_count(t, 512, &st), QTK_E_FORMAT);
		}
		qtk_tok_close(t);
	}
	/* a duplicate piece: token 3 "<0x00>" renamed to token 4's "<0x01>" */
	memcpy(m, b, n);
	{
		size_t at = 4;
		for (int i = 0; i < 3; i++) {
			int32_t l;
			memcpy(&l, m + at + 4, 4);
			at += 8 + (size_t)l;
		}
		REQUIRE(!memcmp(m + at + 8, "<0x00>", 6));
		m[at + 8 + 4] = '1';
		expect_fail(m, n, "dup.bin", QTK_E_FORMAT, "duplicate piece");
	}
	free(m);
	free(b);
}

/* A GGUF with only tokenizer KVs, written by qtk's writer. */
typedef struct {
	int model;           /* 0 none, 1 "llama", 2 "gpt2" */
	uint32_t tok_type;   /* element type of tokenizer.ggml.tokens (STRING) */
	uint32_t score_type; /* F32, or another */
	size_t nscores;
	uint32_t tt_type;    /* I32, or another */
	int bos_str;         /* bos_token_id as a string */
	int no_bos;          /* add_bos_token false */
	int bos_big;         /* bos_token_id 100, past the 9 tokens */
} gg_spec;

static void gg_write(const char *path, const gg_spec *g)
{
	static const char *const pieces[] = { "<unk>", "<s>", "</s>", "<0x41>", "\xe2\x96\x81", "a",
	                                      "\xe2\x96\x81" "a", "b", "ab" };
	const size_t n = sizeof pieces / sizeof pieces[0];
	float scores[16] = { 0, 0, 0, 0, -1, -2, -3, -4, -5 };
	int32_t types[16] = { 2, 3, 3, 6, 1, 1, 1, 1, 1 };
	qtk_gguf_kvs *k = qtk_gguf_kvs_new();
	qtk_gguf_writer *w;
	qtk_status st;

	REQUIRE(k);
	if (g->model)
		qtk_gguf_kvs_add_str(k, "tokenizer.ggml.model", g->model == 1 ? "llama" : "gpt2", g->model == 1 ? 5 : 4, &st);
	if (g->tok_type == QTK_GGUF_STRING)
		qtk_gguf_kvs_add_arr_str(k, "tokenizer.ggml.tokens", pieces, NULL, n, &st);
	else
		qtk_gguf_kvs_add_arr(k, "tokenizer.ggml.tokens", g->tok_type, types, n, &st);
	qtk_gguf_kvs_add_arr(k, "tokenizer.ggml.scores", g->score_type, scores, g->nscores, &st);
	qtk_gguf_kvs_add_arr(k, "tokenizer.ggml.token_type", g->tt_type, types, n, &st);
	if (g->bos_str)
		qtk_gguf_kvs_add_str(k, "tokenizer.ggml.bos_token_id", "1", 1, &st);
	else
		qtk_gguf_kvs_add_u32(k, "tokenizer.ggml.bos_token_id", g->bos_big ? 100 : 1, &st);
	if (g->no_bos)
		qtk_gguf_kvs_add_bool(k, "tokenizer.ggml.add_bos_token", 0, &st);
	REQUIRE(qtk_gguf_writer_open(&w, path, k, NULL, 0, NULL, &st) == QTK_OK);
	REQUIRE(qtk_gguf_writer_commit(w, &st) == QTK_OK);
	qtk_gguf_kvs_free(k);
}

TEST(tok_gguf_vocab)
{
	static const gg_spec good = { 1, QTK_GGUF_STRING, QTK_GGUF_F32, 9, QTK_GGUF_I32, 0, 0, 0 };
	static const struct {
		const char *what;
		gg_spec g;
		qtk_err code;
	} bad[] = {
		{ "no tokenizer.ggml.model", { 0, QTK_GGUF_STRING, QTK_GGUF_F32, 9, QTK_GGUF_I32, 0, 0, 0 },
		  QTK_E_NOT_FOUND },
		{ "gpt2 vocabulary", { 2, QTK_GGUF_STRING, QTK_GGUF_F32, 9, QTK_GGUF_I32, 0, 0, 0 },
		  QTK_E_UNSUPPORTED },
		{ "tokens of i32", { 1, QTK_GGUF_I32, QTK_GGUF_F32, 9, QTK_GGUF_I32, 0, 0, 0 },
		  QTK_E_GG_KV_MISMATCH },
		{ "scores of i32", { 1, QTK_GGUF_STRING, QTK_GGUF_I32, 9, QTK_GGUF_I32, 0, 0, 0 },
		  QTK_E_GG_KV_MISMATCH },
		{ "8 scores for 9 tokens", { 1, QTK_GGUF_STRING, QTK_GGUF_F32, 8, QTK_GGUF_I32, 0, 0, 0 },
		  QTK_E_FORMAT },
		{ "token_type of f32", { 1, QTK_GGUF_STRING, QTK_GGUF_F32, 9, QTK_GGUF_F32, 0, 0, 0 },
		  QTK_E_GG_KV_MISMATCH },
		{ "bos id a string", { 1, QTK_GGUF_STRING, QTK_GGUF_F32, 9, QTK_GGUF_I32, 1, 0, 0 },
		  QTK_E_GG_KV_MISMATCH },
	};
	qtk_tok *t;
	qtk_status st;
	int32_t ids[16];
	size_t n;
	char name[32];

	gg_write(t_tmp("v.gguf"), &good);
	REQUIRE(qtk_tok_open(t_tmp("v.gguf"), &t, &st) == QTK_OK);
	/* "ab aA": U+2581 a (6) then b (7) beats a then "ab" (8) by score; A
	 * is the byte token <0x41>; 0x80 has no byte token and becomes <unk> */
	CHECK(qtk_tok_encode(t, "ab aA", 5, QTK_TOK_ADD_BOS, ids, 16, &n, &st) == QTK_OK);
	CHECK(n == 5 && ids[0] == 1 && ids[1] == 6 && ids[2] == 7 && ids[3] == 6 && ids[4] == 3);
	CHECK(qtk_tok_encode(t, "a\x80", 2, 0, ids, 16, &n, &st) == QTK_OK);
	CHECK(n == 2 && ids[0] == 6 && ids[1] == 0);
	CHECK(qtk_tok_wants_bos(t));
	qtk_tok_close(t);
	{
		gg_spec g = good;
		g.no_bos = 1;
		gg_write(t_tmp("nobos.gguf"), &g);
		REQUIRE(qtk_tok_open(t_tmp("nobos.gguf"), &t, &st) == QTK_OK);
		CHECK(!qtk_tok_wants_bos(t));
		qtk_tok_close(t);
		/* a BOS id past the vocabulary keeps the default 1 (llama.cpp too) */
		g.no_bos = 0;
		g.bos_big = 1;
		gg_write(t_tmp("bigbos.gguf"), &g);
		REQUIRE(qtk_tok_open(t_tmp("bigbos.gguf"), &t, &st) == QTK_OK);
		CHECK_EQ(qtk_tok_bos(t), 1);
		qtk_tok_close(t);
	}
	for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
		snprintf(name, sizeof name, "bad%zu.gguf", c);
		gg_write(t_tmp(name), &bad[c].g);
		t = (qtk_tok *)1;
		CHECK_MSG(qtk_tok_open(t_tmp(name), &t, &st) == bad[c].code, "%s: %s", bad[c].what,
		          st.msg);
		CHECK_MSG(t == NULL && strstr(st.msg, name), "%s: '%s'", bad[c].what, st.msg);
	}
}

/* Flip, cut and overwrite bytes of the three files: an error naming the
 * file or a tokenizer that encodes, never a crash. */
TEST(tok_mutations)
{
	uint64_t rs = 99;

	for (int k = 0; k < NSRC; k++) {
		size_t n;
		uint8_t *b = t_read_file(t_data(sources[k]), &n), *m;
		static const char *const names[] = { "m.model", "m.bin", "m.gguf", "m.json" };
		const char *name = names[k];
		int ok = 0, bad = 0;
		/* the GGUF's vocabulary lies in its first 11456 bytes */
		size_t span = k == 2 ? 11456 : n;

		REQUIRE(b);
		m = malloc(n);
		REQUIRE(m);
		for (int r = 0; r < 150; r++) {
			size_t at = (size_t)(t_rand_u64(&rs) % span), len = n;
			qtk_tok *t;
			qtk_status st;
			int32_t ids[64];
			size_t nt;

			memcpy(m, b, n);
			switch (t_rand_u64(&rs) % 3) {
			case 0: m[at] ^= (uint8_t)(1u << (t_rand_u64(&rs) % 8)); break;
			case 1: len = at; break;
			default:
				for (size_t j = 0; j < 4 && at + j < n; j++)
					m[at + j] = (uint8_t)t_rand_u64(&rs);
			}
			REQUIRE(t_write_file(t_tmp(name), m, len) == 0);
			if (qtk_tok_open(t_tmp(name), &t, &st) == QTK_OK) {
				ok++;
				CHECK(qtk_tok_encode(t, "Once upon a time", 16, QTK_TOK_ADD_BOS, ids, 64, &nt,
				                     &st) == QTK_OK);
				qtk_tok_close(t);
			} else {
				bad++;
				CHECK_MSG(strstr(st.msg, name) != NULL, "%s", st.msg);
			}
		}
		CHECK(ok > 0 && bad > 0);
		free(m);
		free(b);
	}
}

TEST(tok_open_errors)
{
	static const uint8_t unigram[] = { 0x12, 0x02, 0x18, 0x01 }; /* trainer_spec.model_type = 1 */
	qtk_tok *t = (qtk_tok *)1;
	qtk_status st;
	size_t n;
	uint8_t *b;
	qtk_spm_vocab *v;

	CHECK_EQ(qtk_tok_open(t_tmp("nope.model"), &t, &st), QTK_E_NOT_FOUND);
	CHECK(t == NULL && strstr(st.msg, "nope.model"));
	CHECK_EQ(qtk_tok_open(t_tmp("nope.bin"), &t, &st), QTK_E_NOT_FOUND);
	CHECK_EQ(qtk_tok_open(t_tmp("nope"), &t, &st), QTK_E_NOT_FOUND);
	CHECK(t == NULL && strstr(st.msg, "nope"));
	CHECK_EQ(qtk_tok_open(t_tmpdir(), &t, &st), QTK_E_IO);
	REQUIRE(t_write_file(t_tmp("tokenizer.json"), "{\"model\": {}}", 13) == 0);
	CHECK_EQ(qtk_tok_open(t_tmp("tokenizer.json"), &t, &st), QTK_E_UNSUPPORTED);
	CHECK(strstr(st.msg, "tokenizer.json") && strstr(st.msg, "model type"));
	CHECK_EQ(qtk_tok_open(NULL, &t, &st), QTK_E_ARG);
	/* a GGUF without a vocabulary */
	{
		qtk_gguf_writer *w;
		REQUIRE(qtk_gguf_writer_open(&w, t_tmp("empty.gguf"), NULL, NULL, 0, NULL, &st) == QTK_OK);
		REQUIRE(qtk_gguf_writer_commit(w, &st) == QTK_OK);
		CHECK_EQ(qtk_tok_open(t_tmp("empty.gguf"), &t, &st), QTK_E_NOT_FOUND);
		CHECK(strstr(st.msg, "empty.gguf") && strstr(st.msg, "tokenizer.ggml.model"));
	}
	/* the sentencepiece reader's fields */
	REQUIRE(qtk_spm_read(t_data(TOK_MODEL), &v, &st) == QTK_OK);
	CHECK(v->model_type == 2 && v->byte_fallback && v->add_dummy_prefix && v->remove_extra_ws &&
	      v->escape_ws && !v->ws_as_suffix && !v->has_charsmap);
	qtk_spm_free(v);
	/* a unigram model (trainer_spec given twice: protobuf merges them) */
	b = t_read_file(t_data(TOK_MODEL), &n);
	REQUIRE(b);
	b = realloc(b, n + sizeof unigram);
	REQUIRE(b);
	memcpy(b + n, unigram, sizeof unigram);
	expect_fail(b, n + sizeof unigram, "uni.model", QTK_E_UNSUPPORTED, "unigram");
	/* trainer_spec.bos_id = 600 (field 41: key c8 02, value d8 04) */
	b = realloc(b, n + 6);
	REQUIRE(b);
	memcpy(b + n, (const uint8_t[]){ 0x12, 0x04, 0xc8, 0x02, 0xd8, 0x04 }, 6);
	expect_fail(b, n + 6, "bos.model", QTK_E_FORMAT, "BOS id 600");
	/* without an extension, told by content */
	REQUIRE(t_write_file(t_tmp("vocab"), b, n) == 0);
	CHECK(qtk_tok_open(t_tmp("vocab"), &t, &st) == QTK_OK && qtk_tok_count(t) == 512);
	qtk_tok_close(t);
	free(b);
	b = t_read_file(t_data(TOK_BIN), &n);
	REQUIRE(b && t_write_file(t_tmp("vocab2"), b, n) == 0);
	CHECK(qtk_tok_open(t_tmp("vocab2"), &t, &st) == QTK_OK && qtk_tok_count(t) == 512);
	qtk_tok_close(t);
	free(b);
	b = t_read_file(t_data(TOK_GGUF), &n);
	REQUIRE(b && t_write_file(t_tmp("vocab3"), b, n) == 0);
	CHECK(qtk_tok_open(t_tmp("vocab3"), &t, &st) == QTK_OK && qtk_tok_count(t) == 512);
	qtk_tok_close(t);
	free(b);
}

/* Fail each allocation of open and encode in turn: QTK_E_NOMEM, no leak
 * (make check), and then success. tokenizer.json allocates a few thousand
 * times through jansson: every one of the first 300, then every 13th. */
TEST(tok_alloc_faults)
{
	for (int k = 0; k < NSRC; k++) {
		int done = 0, failed = 0;
		for (uint64_t nth = 1; nth < 100000 && !done; nth += nth < 300 ? 1 : 13) {
			qtk_tok *t = NULL;
			qtk_status st;
			int32_t ids[64];
			size_t n;
			qtk_err rc;

			qtk_fault_arm(QTK_FAULT_ALLOC, nth, 0);
			rc = qtk_tok_open(t_data(sources[k]), &t, &st);
			if (!rc)
				rc = qtk_tok_encode(t, "Once upon a time", 16, QTK_TOK_ADD_BOS, ids, 64, &n, &st);
			done = !qtk_fault_fired(QTK_FAULT_ALLOC);
			qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
			CHECK_MSG(done ? rc == QTK_OK : rc == QTK_E_NOMEM, "%s: alloc %llu: %s", sources[k],
			          (unsigned long long)nth, st.msg);
			failed += rc == QTK_E_NOMEM;
			qtk_tok_close(t);
		}
		CHECK(done && failed >= 8);
	}
}

/* One tokenizer, encoded from two threads at once. */
typedef struct {
	const qtk_tok *t;
	const char *text;
	size_t len, n;
	uint32_t crc;
} enc_job;

static void *enc_thread(void *arg)
{
	enc_job *j = arg;
	size_t n;
	int32_t *ids = enc(j->t, j->text, j->len, QTK_TOK_ADD_BOS, &n);

	j->n = n;
	j->crc = ids ? qtk_crc32(0, ids, n * sizeof *ids) : 0;
	free(ids);
	return NULL;
}

TEST(tok_threads)
{
	size_t len;
	char *text = t_read_file(t_data("stories260K/tinystories.txt"), &len);
	qtk_tok *t;
	qtk_status st;
	enc_job j[2];
	pthread_t th[2];

	REQUIRE(text);
	REQUIRE(qtk_tok_open(t_data(TOK_GGUF), &t, &st) == QTK_OK);
	for (int i = 0; i < 2; i++) {
		j[i] = (enc_job){ t, text, len, 0, 0 };
		REQUIRE(pthread_create(&th[i], NULL, enc_thread, &j[i]) == 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 2; i++)
		CHECK(j[i].n == 100708 && j[i].crc == 0xb5eec72bu);
	qtk_tok_close(t);
	free(text);
}

/* User-defined pieces are cut out of the text first (llama.cpp does so
 * without special parsing): the GGUF with "ed" (266) and "ing" (299)
 * marked user-defined; ids from llama-tokenize on the same patch. */
TEST(tok_user_defined)
{
	static const struct {
		const char *text;
		int32_t ids[20];
		int n;
	} cases[] = {
		{ "played and smiled", { 1, 337, 266, 410, 269, 262, 423, 290, 266 }, 9 },
		{ "ed", { 1, 266 }, 2 },
		{ "edinged", { 1, 266, 299, 266 }, 4 },
		{ "The bird sang while playing. She wanted",
		  { 1, 291, 268, 315, 418, 296, 416, 428, 263, 415, 290, 411, 337, 299, 410, 426, 338, 391,
		    266 }, 19 },
		{ " ed ing", { 1, 410, 410, 266, 410, 410, 299 }, 7 },
	};
	static const char key[] = "tokenizer.ggml.token_type";
	size_t n;
	uint8_t *b = t_read_file(t_data(TOK_GGUF), &n), *p;
	uint32_t count;
	int32_t ud = QTK_TOK_USER_DEFINED;
	qtk_tok *t;
	qtk_status st;

	REQUIRE(b);
	p = memmem(b, n, key, sizeof key - 1);
	REQUIRE(p);
	p += sizeof key - 1 + 8; /* value type, element type; v1: a u32 count */
	memcpy(&count, p, 4);
	REQUIRE(count == 512);
	memcpy(p + 4 + 4 * 266, &ud, 4);
	memcpy(p + 4 + 4 * 299, &ud, 4);
	REQUIRE(t_write_file(t_tmp("ud.gguf"), b, n) == 0);
	REQUIRE(qtk_tok_open(t_tmp("ud.gguf"), &t, &st) == QTK_OK);
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		size_t len = strlen(cases[c].text), nt;
		int32_t *ids = enc(t, cases[c].text, len, QTK_TOK_ADD_BOS, &nt);
		REQUIRE(ids);
		CHECK_MSG(nt == (size_t)cases[c].n && !memcmp(ids, cases[c].ids, nt * sizeof *ids),
		          "case %zu: ids differ from llama.cpp's", c);
		/* a user-defined piece decodes as its text */
		if (c == 2)
			CHECK(roundtrips(t, cases[c].text, len, ids, nt));
		free(ids);
	}
	qtk_tok_close(t);
	free(b);
}

/* ---- tokenizer.json --------------------------------------------------- */

/* tok512's tokenizer.json edited with jansson, written as NAME. */
static const char *json_variant(const char *name, const char *key, json_t *value,
                                const char *model_key, json_t *model_value)
{
	json_error_t e;
	json_t *root = json_load_file(t_data(TOK_JSON), 0, &e);
	const char *path = t_tmp(name);

	if (!root)
		return NULL;
	if (key)
		json_object_set_new(root, key, value);
	if (model_key)
		json_object_set_new(json_object_get(root, "model"), model_key, model_value);
	json_dump_file(root, path, 0);
	json_decref(root);
	return path;
}

TEST(tok_json)
{
	qtk_tok *t, *m;
	qtk_status st;
	int32_t a[16], b[16];
	size_t na, nb;
	const char *path;

	/* the legacy normalizer (Prepend + Replace) is tested with the others;
	 * Metaspace "first" puts no space in front of text opening with one */
	path = json_variant("meta.json", "pre_tokenizer",
	                    json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement",
	                              "\xe2\x96\x81", "prepend_scheme", "first", "split", 0),
	                    NULL, NULL);
	REQUIRE(path);
	{
		json_error_t e;
		json_t *root = json_load_file(path, 0, &e);
		REQUIRE(root);
		json_object_set_new(root, "normalizer", json_null());
		json_dump_file(root, path, 0);
		json_decref(root);
	}
	REQUIRE(qtk_tok_open(path, &m, &st) == QTK_OK);
	REQUIRE(qtk_tok_open(t_data(TOK_JSON), &t, &st) == QTK_OK);
	CHECK(qtk_tok_encode(m, " Hello", 6, 0, a, 16, &na, &st) == QTK_OK);
	CHECK(qtk_tok_encode(t, "Hello", 5, 0, b, 16, &nb, &st) == QTK_OK);
	CHECK(na == 3 && nb == 3 && !memcmp(a, b, sizeof a[0] * 3));
	CHECK(qtk_tok_encode(t, " Hello", 6, 0, b, 16, &nb, &st) == QTK_OK && nb == 4 && b[0] == 410);
	CHECK(qtk_tok_encode(m, "Hello world  x", 14, QTK_TOK_ADD_BOS, a, 16, &na, &st) == QTK_OK);
	CHECK(na == 10 && a[7] == 410 && a[8] == 410 && a[9] == 444);
	qtk_tok_close(m);
	qtk_tok_close(t);
	/* prepend_scheme never: no space in front, none taken off */
	path = json_variant("never.json", "pre_tokenizer",
	                    json_pack("{s:s, s:s, s:s}", "type", "Metaspace", "replacement",
	                              "\xe2\x96\x81", "prepend_scheme", "never"), NULL, NULL);
	REQUIRE(path);
	{
		json_error_t e;
		json_t *root = json_load_file(path, 0, &e);
		REQUIRE(root);
		json_object_set_new(root, "normalizer", json_null());
		json_dump_file(root, path, 0);
		json_decref(root);
	}
	REQUIRE(qtk_tok_open(path, &m, &st) == QTK_OK);
	CHECK(qtk_tok_encode(m, "a b", 3, 0, a, 16, &na, &st) == QTK_OK);
	CHECK(na == 2 && a[0] == 412 && a[1] == 268); /* a, U+2581 b */
	CHECK(roundtrips(m, "a b", 3, a, na));
	qtk_tok_close(m);
}

TEST(tok_json_refused)
{
	static const struct {
		const char *what, *key, *model_key;
		const char *value; /* JSON text */
		qtk_err code;
	} bad[] = {
		{ "byte-level", "pre_tokenizer", NULL, "{\"type\": \"ByteLevel\"}", QTK_E_UNSUPPORTED },
		{ "NFKC", "normalizer", NULL, "{\"type\": \"NFKC\"}", QTK_E_UNSUPPORTED },
		{ "no escaping", "normalizer", NULL, "null", QTK_E_UNSUPPORTED },
		{ "unigram", NULL, "type", "\"Unigram\"", QTK_E_UNSUPPORTED },
		{ "wordpiece prefix", NULL, "continuing_subword_prefix", "\"##\"", QTK_E_UNSUPPORTED },
		{ "merges not a list", NULL, "merges", "{}", QTK_E_FORMAT },
		{ "merge of unknown pieces", NULL, "merges", "[\"x q\"]", QTK_E_FORMAT },
		{ "merge not a pair", NULL, "merges", "[[\"a\"]]", QTK_E_FORMAT },
		{ "vocab id negative", NULL, "vocab", "{\"a\": -1}", QTK_E_FORMAT },
		{ "two pieces, one id", NULL, "vocab", "{\"a\": 3, \"b\": 3}", QTK_E_FORMAT },
	};
	char name[32];

	for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
		json_error_t e;
		json_t *v = json_loads(bad[c].value, JSON_DECODE_ANY, &e);
		const char *path;
		qtk_tok *t = (qtk_tok *)1;
		qtk_status st;

		REQUIRE(v);
		snprintf(name, sizeof name, "bad%zu.json", c);
		path = json_variant(name, bad[c].key, bad[c].key ? v : NULL, bad[c].model_key,
		                    bad[c].model_key ? v : NULL);
		REQUIRE(path);
		CHECK_MSG(qtk_tok_open(path, &t, &st) == bad[c].code, "%s: %s", bad[c].what, st.msg);
		CHECK_MSG(t == NULL && strstr(st.msg, name), "%s: '%s'", bad[c].what, st.msg);
	}
	REQUIRE(t_write_file(t_tmp("broken.json"), "{\"model\": ", 10) == 0);
	{
		qtk_tok *t;
		qtk_status st;
		CHECK_EQ(qtk_tok_open(t_tmp("broken.json"), &t, &st), QTK_E_FORMAT);
		CHECK(strstr(st.msg, "broken.json") != NULL);
		CHECK_EQ(qtk_tok_open(t_tmp("missing.json"), &t, &st), QTK_E_NOT_FOUND);
	}
}

/* A piece with U+2581 inside ("a▁b") lets merges cross words: then the
 * whole text merges in one heap (the per-word shortcut would give
 * U+2581 a, U+2581 b). */
TEST(tok_cross_word_piece)
{
	static const char *const pieces[] = { "<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b",
	                                      "\xe2\x96\x81" "a", "a\xe2\x96\x81", "a\xe2\x96\x81" "b",
	                                      "\xe2\x96\x81" "b" };
	static const float scores[] = { 0, 0, 0, 0, 0, 0, -2, -1, -0.5f, -4 };
	static const int32_t types[] = { 2, 3, 3, 1, 1, 1, 1, 1, 1, 1 };
	qtk_gguf_kvs *k = qtk_gguf_kvs_new();
	qtk_gguf_writer *w;
	qtk_tok *t;
	qtk_status st;
	int32_t ids[8];
	size_t n;

	REQUIRE(k);
	REQUIRE(qtk_gguf_kvs_add_str(k, "tokenizer.ggml.model", "llama", 5, &st) == QTK_OK);
	REQUIRE(qtk_gguf_kvs_add_arr_str(k, "tokenizer.ggml.tokens", pieces, NULL, 10, &st) == QTK_OK);
	REQUIRE(qtk_gguf_kvs_add_arr(k, "tokenizer.ggml.scores", QTK_GGUF_F32, scores, 10, &st) == QTK_OK);
	REQUIRE(qtk_gguf_kvs_add_arr(k, "tokenizer.ggml.token_type", QTK_GGUF_I32, types, 10, &st) ==
	        QTK_OK);
	REQUIRE(qtk_gguf_writer_open(&w, t_tmp("x.gguf"), k, NULL, 0, NULL, &st) == QTK_OK);
	REQUIRE(qtk_gguf_writer_commit(w, &st) == QTK_OK);
	qtk_gguf_kvs_free(k);
	REQUIRE(qtk_tok_open(t_tmp("x.gguf"), &t, &st) == QTK_OK);
	CHECK(qtk_tok_encode(t, "a b", 3, 0, ids, 8, &n, &st) == QTK_OK);
	CHECK(n == 2 && ids[0] == 3 && ids[1] == 8);
	CHECK(qtk_tok_encode(t, "b a b", 5, 0, ids, 8, &n, &st) == QTK_OK);
	CHECK(n == 3 && ids[0] == 9 && ids[1] == 3 && ids[2] == 8);
	qtk_tok_close(t);
}
