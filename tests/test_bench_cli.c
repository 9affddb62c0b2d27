/* tests: `qtk bench` through the built binary ($QTK_BIN): generated and
 * file weights, the JSON keys, usage errors. Times are not checked, so
 * the cache-flush buffer is 64 MiB (QTK_BENCH_PROBE_BYTES) instead of
 * the 512 MiB or more a measurement reads before each cold call. */
#include <stdlib.h>

#include "test.h"

static const char *bin(void)
{
	const char *b = getenv("QTK_BIN");
	if (!b || !*b)
		SKIP("QTK_BIN not set (run through make test)");
	return b;
}

TEST(bench_cli_json_and_text)
{
	const char *q = bin();

	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=67108864 %s bench -s 64x300 -s 40x64 -S int4,nf4 -j 2 -r 1 -b 3 --json > %s", q,
	                  t_tmp("b.json")), 0);
	/* per scheme, shape and layout (the planes, the interleaved copy):
	 * gemv cold and hot, gemm; plain keys */
	CHECK_EQ(t_system("python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d[\"results\"];"
	                  "assert d[\"read_gbps\"] > 0 and len(r) == 24, len(r);"
	                  "assert {e[\"path\"] for e in r} == {\"int8\", \"int8-ilv\"};"
	                  "assert all(k in e for e in r for k in (\"gbps\", \"speedup\", \"ms\", \"gflops\"));"
	                  "assert all(\"fraction_of_bandwidth\" in e for e in r if e[\"op\"] == \"gemv\");"
	                  /* a cold GEMV's bound: its own flush reads, a real figure */
	                  "assert all(0 < e[\"bandwidth_gbps\"] < 1e4 and abs(e[\"fraction_of_bandwidth\"]"
	                  " - e[\"gbps\"] / e[\"bandwidth_gbps\"]) < 1e-9 for e in r if e[\"cache\"] == \"cold\");"
	                  "assert {(e[\"scheme\"], e[\"rows\"], e[\"cols\"]) for e in r} == "
	                  "{(\"int4\", 64, 300), (\"nf4\", 64, 300), (\"int4\", 40, 64), (\"nf4\", 40, 64)}' %s",
	                  t_tmp("b.json")), 0);
	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=67108864 %s bench -s 64x64 -S int8 -j 1 -r 1 -b 0 -p both > %s", q,
	                  t_tmp("b.txt")), 0);
	char *s = t_read_file(t_tmp("b.txt"), NULL);
	REQUIRE(s);
	CHECK(strstr(s, "read bandwidth from memory") && strstr(s, "int8 g32 F16"));
	CHECK(strstr(s, " float ") && strstr(s, " int8     cold") && strstr(s, " int8-ilv cold"));
	free(s);
	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=67108864 %s bench -s 64x64 -S int8 -j 1 -r 1 -b 0 -l planes > %s", q,
	                  t_tmp("b.txt")), 0);
	s = t_read_file(t_tmp("b.txt"), NULL);
	REQUIRE(s);
	CHECK(strstr(s, " int8     cold") && !strstr(s, "int8-ilv"));
	free(s);
}

TEST(bench_cli_file_and_errors)
{
	const char *q = bin();

	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=67108864 %s bench %s -j 1 -r 1 -b 2 --json > %s", q,
	                  t_data("stories260K/source-tinyllamas-stories-260k-f32.gguf"),
	                  t_tmp("g.json")), 0);
	CHECK_EQ(t_system("python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d[\"results\"];"
	                  "assert r and all(e[\"scheme\"] == \"f32\" and e[\"path\"] == \"blas\" for e in r)' %s",
	                  t_tmp("g.json")), 0);
	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=67108864 %s bench -s 12 2>/dev/null", q), 2);
	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=67108864 %s bench -S f16 2>/dev/null", q), 2);
	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=67108864 %s bench -p fast 2>/dev/null", q), 2);
	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=67108864 %s bench -l rows 2>/dev/null", q), 2);
	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=67108864 %s bench a b 2>/dev/null", q), 2);
	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=67108864 %s bench %s 2>/dev/null", q, t_tmp("missing.qtk")), 1);
	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=67108864 %s bench --help > /dev/null", q), 0);
	/* the probe size is checked before anything runs */
	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=1048575 %s bench --help 2>/dev/null", q), 2);
	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=64M %s bench --help 2>/dev/null", q), 2);
	CHECK_EQ(t_system("QTK_BENCH_PROBE_BYTES=2147483649 %s bench --help 2>/dev/null", q), 2);
}
