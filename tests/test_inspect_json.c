/* tests: `qtk inspect --json` stays bounded and valid for any valid input —
 * a GGUF holding a 16M-element array (it took 4 s and 920 MB and printed
 * all of it), long strings, and bytes that are not UTF-8 in file names,
 * GGUF keys, names and strings, and .qtk tensor names (it printed "out of
 * memory" and leaked). Output is checked with Python's json module. */
#include <stdlib.h>
#include <sys/stat.h>

#include "qtk_formats.h"
#include "test.h"
#include "test_gguf_util.h"
#include "test_pack_util.h"

static const char *bin(void)
{
	const char *b = getenv("QTK_BIN");
	if (!b || !*b)
		SKIP("QTK_BIN not set (run through make test)");
	return b;
}

static int have_python(void)
{
	return t_system("python3 -c 'import json' 2>/dev/null") == 0;
}

/* Python checks on the JSON in file `json` (the script sees it as d). */
static int py_check(const char *json, const char *assertions)
{
	return t_system("python3 -c 'import json,sys; d=json.load(open(sys.argv[1], encoding=\"utf-8\")); "
	                "%s' '%s'", assertions, json);
}

static long file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

#define BIG_N (16u << 20)

/* One u8 array of 16M elements, a 1 MiB string, an array of 100 strings of
 * 70000 bytes each, a tensor. The JSON shows 64 elements, 64 KiB of the
 * string and 1 KiB of each string element. */
static void big_gguf(const char *path)
{
	static const uint64_t ne[1] = { 32 };
	tg_buf g = { 0 };
	char *s = malloc(1u << 20);

	if (!s)
		abort();
	tg_buf_header(&g, 1, 3);
	tg_buf_str(&g, "big.u8");
	tg_buf_u32(&g, QTK_GGUF_ARRAY);
	tg_buf_u32(&g, QTK_GGUF_U8);
	tg_buf_u64(&g, BIG_N);
	tg_buf_need(&g, BIG_N);
	for (uint32_t i = 0; i < BIG_N; i++)
		g.b[g.len++] = (uint8_t)(i * 7);
	for (size_t i = 0; i < (1u << 20); i++)
		s[i] = (char)('a' + i % 26);
	memcpy(s + 65535, "\xc3\xa9", 2); /* é across the 64 KiB cut */
	tg_buf_str(&g, "big.str");
	tg_buf_u32(&g, QTK_GGUF_STRING);
	tg_buf_strn(&g, s, 1u << 20);
	tg_buf_str(&g, "big.strs");
	tg_buf_u32(&g, QTK_GGUF_ARRAY);
	tg_buf_u32(&g, QTK_GGUF_STRING);
	tg_buf_u64(&g, 100);
	for (int i = 0; i < 100; i++)
		tg_buf_strn(&g, s, 70000);
	tg_buf_info(&g, "w", 1, ne, QTK_GGML_F32, 0);
	tg_buf_pad(&g, 32);
	tg_buf_need(&g, 128);
	memset(g.b + g.len, 0, 128);
	g.len += 128;
	if (t_write_file(path, g.b, g.len) != 0)
		t_fail_at(__FILE__, __LINE__, "cannot write %s", path);
	free(g.b);
	free(s);
}

TEST(inspect_json_bounded_for_huge_gguf_values)
{
	const char *q = bin(), *in = t_tmp("big.gguf"), *out = t_tmp("big.json");
	long n;

	if (!have_python())
		SKIP("no python3");
	big_gguf(in);
	/* 300 MB of address space is plenty for streaming (the old tree took
	 * 920 MB); ASan reserves terabytes, so no limit there */
#if defined(__SANITIZE_ADDRESS__)
	CHECK_EQ(t_system("%s inspect --json %s > %s", q, in, out), 0);
#else
	CHECK_EQ(t_system("ulimit -v 300000; %s inspect --json %s > %s", q, in, out), 0);
#endif
	n = file_size(out);
	CHECK_MSG(n > 0 && n < 200000, "%ld bytes of JSON", n);
	CHECK_EQ(py_check(out,
	         "a=d[\"kv\"][\"big.u8\"]; assert a[\"count\"]==16777216 and a[\"truncated\"] is True "
	         "and a[\"value\"]==[i*7%256 for i in range(64)], a; "
	         "s=d[\"kv\"][\"big.str\"]; assert s[\"length\"]==1048576 and s[\"truncated\"] is True "
	         "and len(s[\"value\"].encode())==65535 and s[\"value\"].startswith(\"abc\"), len(s[\"value\"]); "
	         "t=d[\"kv\"][\"big.strs\"]; assert t[\"count\"]==100 and len(t[\"value\"])==64 "
	         "and t[\"truncated\"] is True and len(t[\"value\"][0])==1024; "
	         "assert d[\"tensors\"][0][\"name\"]==\"w\""), 0);
	/* text mode: the first elements only */
	CHECK_EQ(t_system("%s inspect %s > %s", q, in, out), 0);
	n = file_size(out);
	CHECK_MSG(n > 0 && n < 4096, "%ld bytes of text", n);
}

/* A GGUF whose tensor name and string value hold bytes that are not
 * UTF-8 (and control characters): valid JSON, invalid bytes as U+FFFD. */
static void odd_gguf(const char *path)
{
	static const uint64_t ne[1] = { 32 };
	tg_buf g = { 0 };

	tg_buf_header(&g, 1, 2);
	tg_buf_str(&g, "key.x"); /* keys must be ASCII (the reader refuses others) */
	tg_buf_u32(&g, QTK_GGUF_STRING);
	tg_buf_str(&g, "v\x01\"\\\xc3\x28\xed\xa0\x80\xf0\x9f\x98\x80");
	tg_buf_str(&g, "arr");
	tg_buf_u32(&g, QTK_GGUF_ARRAY);
	tg_buf_u32(&g, QTK_GGUF_STRING);
	tg_buf_u64(&g, 2);
	tg_buf_str(&g, "\x80");
	tg_buf_str(&g, "ok");
	tg_buf_info(&g, "w\xc0\xaf", 1, ne, QTK_GGML_F32, 0);
	tg_buf_pad(&g, 32);
	tg_buf_need(&g, 128);
	memset(g.b + g.len, 0, 128);
	g.len += 128;
	if (t_write_file(path, g.b, g.len) != 0)
		t_fail_at(__FILE__, __LINE__, "cannot write %s", path);
	free(g.b);
}

TEST(inspect_json_non_utf8_is_valid_json)
{
	const char *q = bin(), *out = t_tmp("o.json");
	char gg[4200], qk[4200], sf[4200];
	tp_sample s;
	qtk_status st;

	if (!have_python())
		SKIP("no python3");
	/* GGUF: path, key, name and strings */
	snprintf(gg, sizeof gg, "%s", t_tmp("g\xff\xfe.gguf"));
	odd_gguf(gg);
	CHECK_EQ(t_system("%s inspect --json '%s' > %s", q, gg, out), 0);
	CHECK_EQ(py_check(out,
	         "assert d[\"path\"].endswith(\"g\\ufffd\\ufffd.gguf\"), d[\"path\"]; "
	         "v=d[\"kv\"][\"key.x\"][\"value\"]; "
	         "assert v==\"v\\x01\\\"\\\\\\ufffd(\\ufffd\\ufffd\\ufffd\\U0001F600\", ascii(v); "
	         "assert d[\"kv\"][\"arr\"][\"value\"]==[\"\\ufffd\",\"ok\"]; "
	         "assert d[\"tensors\"][0][\"name\"]==\"w\\ufffd\\ufffd\""), 0);
	CHECK_EQ(t_system("%s inspect '%s' > /dev/null", q, gg), 0);

	/* .qtk: path and a tensor name */
	tp_sample_init(&s);
	snprintf(s.names[0], sizeof s.names[0], "z\xfe.weight");
	snprintf(qk, sizeof qk, "%s", t_tmp("q\xff.qtk"));
	REQUIRE(tp_write(&s, qk, 64, 0, "{\"m\":\"\\u00e9\"}", &st) == QTK_OK);
	CHECK_EQ(t_system("%s inspect --json '%s' > %s", q, qk, out), 0);
	CHECK_EQ(py_check(out,
	         "assert d[\"file\"].endswith(\"q\\ufffd.qtk\"); "
	         "assert \"z\\ufffd.weight\" in [t[\"name\"] for t in d[\"tensors\"]]; "
	         "assert d[\"metadata\"]=={\"m\":\"\\u00e9\"}, d[\"metadata\"]"), 0);

	/* safetensors: path (names are UTF-8 by the format) */
	snprintf(sf, sizeof sf, "%s", t_tmp("s\xff.safetensors"));
	REQUIRE(t_system("cp tests/data/stories260K/reference_logits.safetensors '%s'", sf) == 0);
	CHECK_EQ(t_system("%s inspect --json '%s' > %s", q, sf, out), 0);
	CHECK_EQ(py_check(out,
	         "assert d[\"path\"].endswith(\"s\\ufffd.safetensors\"); "
	         "assert d[\"shards\"][0][\"path\"].endswith(\"s\\ufffd.safetensors\"); "
	         "assert d[\"tensor_count\"]==2"), 0);
}

/* Text output: a hostile file cannot reach the terminal with control bytes
 * (ESC sequences, C1 CSI) or invalid UTF-8: they print as \xNN. */
TEST(inspect_text_escapes_control_bytes)
{
	const char *q = bin(), *out = t_tmp("o.txt");
	static const uint64_t ne[1] = { 32 };
	char gg[4200];
	tg_buf g = { 0 };
	size_t n;
	unsigned char *b;

	snprintf(gg, sizeof gg, "%s", t_tmp("esc\x1b[2J.gguf"));
	tg_buf_header(&g, 1, 2);
	tg_buf_str(&g, "general.name");
	tg_buf_u32(&g, QTK_GGUF_STRING);
	tg_buf_str(&g, "\x1b]0;owned\x07\x1b[31mred\xc2\x9b" "1m\x7f\\");
	tg_buf_str(&g, "arr");
	tg_buf_u32(&g, QTK_GGUF_ARRAY);
	tg_buf_u32(&g, QTK_GGUF_STRING);
	tg_buf_u64(&g, 1);
	tg_buf_str(&g, "\x1b[H\xff");
	tg_buf_info(&g, "w\x1b[1m\r", 1, ne, QTK_GGML_F32, 0);
	tg_buf_pad(&g, 32);
	tg_buf_need(&g, 128);
	memset(g.b + g.len, 0, 128);
	g.len += 128;
	REQUIRE(t_write_file(gg, g.b, g.len) == 0);
	free(g.b);
	CHECK_EQ(t_system("%s inspect '%s' > %s", q, gg, out), 0);
	b = (unsigned char *)t_read_file(out, &n);
	REQUIRE(b);
	for (size_t i = 0; i < n; i++)
		CHECK_MSG(b[i] >= 0x20 || b[i] == '\n', "raw control byte 0x%02x at %zu", b[i], i);
	for (size_t i = 0; i + 1 < n; i++)
		CHECK_MSG(!(b[i] == 0xc2 && b[i + 1] >= 0x80 && b[i + 1] < 0xa0), "raw C1 at %zu", i);
	CHECK(memmem(b, n, "\\x1b]0;owned\\x07\\x1b[31mred\\xc2\\x9b1m\\x7f\\\\", 41) != NULL);
	CHECK(memmem(b, n, "w\\x1b[1m\\x0d", 11) != NULL);
	CHECK(memmem(b, n, "esc\\x1b[2J.gguf", 15) != NULL);
	free(b);
}
