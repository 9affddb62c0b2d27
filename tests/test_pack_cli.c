/* tests: `qtk verify`, `qtk inspect FILE.qtk [--json]`, `qtk pack --zstd`
 * and `qtk unpack` through the built binary ($QTK_BIN). */
#include <stdlib.h>

#include "qtk_formats.h"
#include "test.h"
#include "test_pack_util.h"

static const char *bin(void)
{
	const char *b = getenv("QTK_BIN");
	if (!b || !*b)
		SKIP("QTK_BIN not set (run through make test)");
	return b;
}

static int contains(const char *path, const char *needle)
{
	char *s = t_read_file(path, NULL);
	int yes = s && strstr(s, needle);
	free(s);
	return yes;
}

TEST(pack_cli_verify_inspect_pack_unpack)
{
	const char *q = bin();
	tp_sample s;
	qtk_status st;
	char f[4200];

	snprintf(f, sizeof f, "%s", t_tmp("m.qtk"));
	tp_sample_init(&s);
	REQUIRE(tp_write(&s, f, 4096, 0, "{\"recipe\":\"demo\"}", &st) == QTK_OK);
	CHECK_EQ(t_system("%s verify %s > %s 2>&1", q, f, t_tmp("v.txt")), 0);
	CHECK(contains(t_tmp("v.txt"), "OK (16 tensors"));
	CHECK_EQ(t_system("%s inspect %s > %s 2>&1", q, f, t_tmp("i.txt")), 0);
	CHECK(contains(t_tmp("i.txt"), "model.nf4.weight"));
	CHECK(contains(t_tmp("i.txt"), "\"recipe\":\"demo\""));
	CHECK(contains(t_tmp("i.txt"), "16 tensors"));
	CHECK_EQ(t_system("%s inspect --json %s > %s 2>&1", q, f, t_tmp("i.json")), 0);
	CHECK_EQ(t_system("python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
	                  "assert len(d[\"tensors\"])==16 and d[\"metadata\"][\"recipe\"]==\"demo\"' %s",
	                  t_tmp("i.json")), 0);
	/* pack / unpack round trip is byte-identical */
	CHECK_EQ(t_system("%s pack --zstd %s %s", q, f, t_tmp("z.qtk")), 0);
	CHECK_EQ(t_system("%s verify -q %s", q, t_tmp("z.qtk")), 0);
	CHECK_EQ(t_system("%s inspect %s --json > %s", q, t_tmp("z.qtk"), t_tmp("zi.json")), 0);
	CHECK(contains(t_tmp("zi.json"), "\"zstd\": true"));
	CHECK_EQ(t_system("%s pack --zstd %s %s 2>/dev/null", q, f, t_tmp("z.qtk")), 1);
	CHECK_EQ(t_system("%s unpack %s %s", q, t_tmp("z.qtk"), t_tmp("u.qtk")), 0);
	CHECK_EQ(t_system("cmp -s %s %s", f, t_tmp("u.qtk")), 0);
	CHECK_EQ(t_system("%s unpack %s %s 2>/dev/null", q, f, f), 1);
	/* usage errors */
	CHECK_EQ(t_system("%s verify 2>/dev/null", q), 2);
	CHECK_EQ(t_system("%s pack --level 0 a b 2>/dev/null", q), 2);
	CHECK_EQ(t_system("%s verify --help > /dev/null", q), 0);
}

TEST(pack_cli_verify_names_bad_tensor)
{
	const char *q = bin();
	tp_sample s;
	qtk_status st;
	char f[4200];
	uint8_t *b;
	size_t n;

	snprintf(f, sizeof f, "%s", t_tmp("m.qtk"));
	tp_sample_init(&s);
	REQUIRE(tp_write(&s, f, 4096, 0, NULL, &st) == QTK_OK);
	b = t_read_file(f, &n);
	REQUIRE(b);
	b[tp_get64(b + 72) + 5] ^= 1; /* first byte of data: first tensor */
	REQUIRE(t_write_file(f, b, n) == 0);
	CHECK_EQ(t_system("%s verify %s 2> %s", q, f, t_tmp("e.txt")), 1);
	CHECK(contains(t_tmp("e.txt"), "tensor 'model.int8-affine.weight': plane 0: crc32 mismatch"));
	REQUIRE(t_write_file(f, b, 100) == 0);
	CHECK_EQ(t_system("%s verify %s 2> %s", q, f, t_tmp("e.txt")), 1);
	CHECK(contains(t_tmp("e.txt"), "shorter than the 128-byte header"));
	free(b);
}
