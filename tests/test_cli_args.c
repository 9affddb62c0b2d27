/* tests: the command line's numbers and rules. Every numeric option goes
 * through one strict parser (qtk_parse_u64: decimal digits only, range
 * checked), so signs, wrap-around, junk, spaces and out-of-range values are
 * usage errors (exit 2) naming the option; a --set rule is checked
 * completely (scheme, group legal for it) before any file is opened. The
 * input path never exists: a value the parser accepts reaches the open and
 * exits 1, so 2 can only come from the parser. */
#include <stdlib.h>

#include "qtk_convert.h"
#include "test.h"
#include "test_cli_util.h"

/* Values no numeric option accepts. */
static const char *const bad_numbers[] = {
	"-1", "+64", "64x", " 64", "64 ", "", "18446744073709551616",
	"-18446744073709551552", "99999999999999999999999999999", "0x40", "6 4",
	"1e3", "64.0", "-0", "\t64", "64\n",
};

typedef struct {
	const char *cmd, *opt;   /* command and option */
	const char *lo_bad, *lo_ok, *hi_ok, *hi_bad; /* range edges */
} num_opt;

static const num_opt num_opts[] = {
	{ "convert", "--group", "8", "16", "4096", "8192" },
	{ "convert", "-g", "0", "16", "4096", "4097" },
	{ "convert", "--threads", "0", "1", "1024", "1025" },
	{ "convert", "-j", "0", "1", "1024", "1025" },
	{ "convert", "--chunk", "1023", "1024", "1073741824", "1073741825" },
	{ "export", "--threads", "0", "1", "1024", "1025" },
	{ "export", "-j", "0", "1", "1024", "1025" },
	{ "pack", "--level", "0", "1", "19", "20" },
	{ "bench", "--threads", "0", "1", "1024", "1025" },
	{ "bench", "--batch", NULL, "0", "4096", "4097" },
	{ "bench", "--reps", "0", "1", "64", "65" },
	{ "run", "--threads", "0", "1", "1024", "1025" },
	{ "run", "--tokens", NULL, "0", "1073741824", "1073741825" },
	{ "run", "--seed", NULL, "0", "18446744073709551615", NULL },
	{ "eval", "--ctx", "1", "2", "4294967295", "4294967296" },
	{ "eval", "--threads", "0", "1", "1024", "1025" },
	{ "verify", "--seed", NULL, "0", "18446744073709551615", NULL },
	{ "calibrate", "--generate", "0", "1", "16777216", "16777217" },
	{ "calibrate", "--seed", NULL, "0", "18446744073709551615", NULL },
};

/* Run one command line with option=value; returns the exit code, and 1 in
 * *named if stderr names the option. */
static int run_opt(const num_opt *o, const char *value, int *named)
{
	const char *missing = t_tmp("missing-input");
	const char *argv[16];
	int n = 0, rc;
	char *err;

	argv[n++] = t_qtk_bin();
	argv[n++] = o->cmd;
	if (!strcmp(o->cmd, "convert")) {
		argv[n++] = missing;
		argv[n++] = "-o";
		argv[n++] = t_tmp("out.qtk");
		argv[n++] = "-s";
		argv[n++] = "int4";
	} else if (!strcmp(o->cmd, "export")) {
		argv[n++] = missing;
		argv[n++] = "--to";
		argv[n++] = "gguf";
		argv[n++] = "-o";
		argv[n++] = t_tmp("out.gguf");
	} else if (!strcmp(o->cmd, "bench") || !strcmp(o->cmd, "run")) {
		argv[n++] = missing;
	} else if (!strcmp(o->cmd, "eval")) {
		argv[n++] = missing;
		argv[n++] = "--text";
		argv[n++] = missing;
	} else if (!strcmp(o->cmd, "calibrate")) {
		argv[n++] = missing;
		argv[n++] = "-o";
		argv[n++] = t_tmp("out.stats");
		argv[n++] = "--generate"; /* --seed needs it; a later --generate wins */
		argv[n++] = "1";
	} else if (!strcmp(o->cmd, "verify")) {
		argv[n++] = missing;
		argv[n++] = "--against";
		argv[n++] = missing;
	} else {
		argv[n++] = missing;
		argv[n++] = t_tmp("out.qtk");
	}
	argv[n++] = o->opt;
	argv[n++] = value;
	argv[n] = NULL;
	rc = t_run(argv, NULL, NULL, t_tmp("err.txt"), 60, NULL);
	err = t_read_file(t_tmp("err.txt"), NULL);
	/* "-g" is reported as --group, "-j" as --threads */
	*named = err && (strstr(err, o->opt) ||
	                 (!strcmp(o->opt, "-g") && strstr(err, "--group")) ||
	                 (!strcmp(o->opt, "-j") && strstr(err, "--threads")));
	free(err);
	return rc;
}

TEST(cli_numbers_strict)
{
	/* under make check (QTK_SANITIZED, ~10x slower): every bad number for
	 * the first option of each command (every option goes through one
	 * parser, cli_uint), four of them in turn for the others; the edges
	 * of every option */
	int san = getenv("QTK_SANITIZED") != NULL;
	enum { NBAD = sizeof bad_numbers / sizeof bad_numbers[0] };

	for (size_t i = 0; i < sizeof num_opts / sizeof num_opts[0]; i++) {
		const num_opt *o = &num_opts[i];
		const char *edge_bad[2] = { o->lo_bad, o->hi_bad };
		const char *edge_ok[2] = { o->lo_ok, o->hi_ok };
		int first = i == 0 || strcmp(num_opts[i - 1].cmd, o->cmd);
		int named;

		for (size_t k = 0; k < NBAD; k++) {
			if (san && !first && (k + NBAD - (4 * i) % NBAD) % NBAD >= 4)
				continue;
			int rc = run_opt(o, bad_numbers[k], &named);
			CHECK_MSG(rc == 2 && named, "%s %s '%s': exit %d%s", o->cmd, o->opt,
			          bad_numbers[k], rc, named ? "" : ", option not named");
		}
		for (int k = 0; k < 2; k++) {
			/* NULL: the edge is the type's own (0, or 2^64 - 1) */
			int rc = edge_bad[k] ? run_opt(o, edge_bad[k], &named) : 2;
			CHECK_MSG(rc == 2 && (named || !edge_bad[k]), "%s %s %s: exit %d", o->cmd,
			          o->opt, edge_bad[k] ? edge_bad[k] : "-", rc);
			rc = run_opt(o, edge_ok[k], &named);
			CHECK_MSG(rc == 1, "%s %s %s: exit %d, want 1 (input missing)", o->cmd, o->opt,
			          edge_ok[k], rc);
		}
	}
}

/* --group takes powers of two only, and 'row'. */
TEST(cli_group_power_of_two)
{
	static const num_opt g = { "convert", "--group", 0, 0, 0, 0 };
	static const char *const bad[] = { "48", "17", "100", "4095", "Row", "row " };
	static const char *const ok[] = { "16", "32", "64", "128", "256", "1024", "4096", "row" };
	int named;

	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
		CHECK_MSG(run_opt(&g, bad[k], &named) == 2 && named, "--group %s", bad[k]);
	for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++)
		CHECK_MSG(run_opt(&g, ok[k], &named) == 1, "--group %s", ok[k]);
}

/* A bad --set rule is a usage error (exit 2, naming --set) before the input
 * is opened; a good one reaches the open (exit 1 for the missing input). */
TEST(cli_set_rules_checked_at_parse)
{
	static const char *const bad[] = {
		"x=int4:3", "x=int4:0", "x=int4:8", "x=int4:48", "x=int4:8192", "x=int4:",
		"x=int4:-18446744073709551552", "x=int4:+64", "x=int4:64x", "x=int4: 64",
		"x=int4:18446744073709551680", "x=f16:64", "x=bf16:row", "x=raw", "x=nf5",
		"x=", "=int4", "x", "x=:64", "x=INT4",
	};
	static const char *const ok[] = {
		"x=int4:row", "x=nf4:64", "x=int8:4096", "x=int4-affine:16", "x=f16", "a=b=int8",
		"*.weight=int8-affine",
	};
	for (int pass = 0; pass < 2; pass++) {
		size_t n = pass ? sizeof ok / sizeof ok[0] : sizeof bad / sizeof bad[0];

		for (size_t k = 0; k < n; k++) {
			const char *rule = pass ? ok[k] : bad[k];
			const char *argv[] = { t_qtk_bin(), "convert", t_tmp("missing"), "-o",
			                       t_tmp("o.qtk"), "-s", "int4", "--set", rule, NULL };
			int rc = t_run(argv, NULL, NULL, t_tmp("err.txt"), 60, NULL);
			char *err = t_read_file(t_tmp("err.txt"), NULL);

			if (!pass)
				CHECK_MSG(rc == 2 && err && strstr(err, "--set"), "--set '%s': exit %d: %s",
				          rule, rc, err ? err : "");
			else
				CHECK_MSG(rc == 1, "--set '%s': exit %d: %s", rule, rc, err ? err : "");
			free(err);
		}
	}
}

/* --preset names are checked at parse time too; so are the environment
 * variables the library reads. */
TEST(cli_preset_and_env_checked)
{
	const char *conv[] = { t_qtk_bin(), "convert", t_tmp("missing"), "-o", t_tmp("o.qtk"),
	                       "-s", "int4", "-p", "fluxx", NULL };
	const char *insp[] = { t_qtk_bin(), "inspect", t_tmp("missing"), NULL };
	static const char *const bad_env[] = {
		"QTK_ISA=avx3", "QTK_ISA=AVX2", "QTK_ISA=avx2 ", "QTK_MLX_SHARD_BYTES=-1",
		"QTK_MLX_SHARD_BYTES=0", "QTK_MLX_SHARD_BYTES=1k", "QTK_MLX_SHARD_BYTES=18446744073709551616",
	};
	static const char *const ok_env[] = {
		"QTK_ISA=scalar", "QTK_ISA=avx2", "QTK_ISA=avx512", "QTK_ISA=", "QTK_MLX_SHARD_BYTES=100000",
	};

	CHECK_EQ(t_run(conv, NULL, NULL, NULL, 60, NULL), 2);
	conv[8] = "flux";
	CHECK_EQ(t_run(conv, NULL, NULL, NULL, 60, NULL), 1);
	for (size_t k = 0; k < sizeof bad_env / sizeof bad_env[0]; k++) {
		int rc = t_run(insp, bad_env[k], NULL, t_tmp("err.txt"), 60, NULL);
		char *err = t_read_file(t_tmp("err.txt"), NULL);
		char name[32];

		snprintf(name, sizeof name, "%.*s", (int)(strchr(bad_env[k], '=') - bad_env[k]),
		         bad_env[k]);
		CHECK_MSG(rc == 2 && err && strstr(err, name), "%s: exit %d", bad_env[k], rc);
		free(err);
	}
	for (size_t k = 0; k < sizeof ok_env / sizeof ok_env[0]; k++)
		CHECK_MSG(t_run(insp, ok_env[k], NULL, NULL, 60, NULL) == 1, "%s", ok_env[k]);
}

/* The parser itself: the option's own bounds, the message names it. */
TEST(parse_u64_table)
{
	static const struct {
		const char *s;
		uint64_t lo, hi, want; /* want: 0 = must fail (no case wants 0) */
	} cs[] = {
		{ "64", 16, 4096, 64 }, { "0064", 16, 4096, 64 }, { "16", 16, 4096, 16 },
		{ "4096", 16, 4096, 4096 }, { "18446744073709551615", 1, UINT64_MAX, UINT64_MAX },
		{ "18446744073709551616", 1, UINT64_MAX, 0 }, { "15", 16, 4096, 0 },
		{ "4097", 16, 4096, 0 }, { "-18446744073709551552", 1, UINT64_MAX, 0 },
		{ "+64", 16, 4096, 0 }, { " 64", 16, 4096, 0 }, { "64 ", 16, 4096, 0 },
		{ "64x", 16, 4096, 0 }, { "", 0, 10, 0 }, { "0x10", 0, 100, 0 },
		{ "184467440737095516150", 1, UINT64_MAX, 0 }, { "1", 1, 1, 1 },
	};
	for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
		uint64_t v = 12345;
		qtk_status st = { 0 };
		qtk_err rc = qtk_parse_u64("--opt", cs[i].s, cs[i].lo, cs[i].hi, &v, &st);

		if (cs[i].want) {
			CHECK_MSG(rc == QTK_OK && v == cs[i].want, "'%s': %s", cs[i].s, st.msg);
		} else {
			CHECK_MSG(rc == QTK_E_ARG && v == 12345, "'%s' accepted as %llu", cs[i].s,
			          (unsigned long long)v);
			CHECK_MSG(strstr(st.msg, "--opt") != NULL, "'%s': %s", cs[i].s, st.msg);
		}
	}
	CHECK_EQ(qtk_parse_u64("x", NULL, 0, 1, NULL, NULL), QTK_E_ARG);
}

/* The library's --set: the same checks, QTK_E_ARG naming the rule. */
TEST(recipe_add_set_strict)
{
	static const char *const bad[] = { "x=int4:3", "x=int4:-18446744073709551552",
	                                   "x=int4:+64", "x=f16:32", "x=int4:0", "x=int4:64x" };
	qtk_recipe *r;
	qtk_status st;

	REQUIRE(qtk_recipe_new(&r, QTK_SCHEME_INT4, 64, &st) == QTK_OK);
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		CHECK_MSG(qtk_recipe_add_set(r, bad[k], &st) == QTK_E_ARG, "%s accepted", bad[k]);
		CHECK_MSG(strstr(st.msg, bad[k]) != NULL, "%s: %s", bad[k], st.msg);
	}
	CHECK_EQ(qtk_recipe_add_set(r, "x=int4:64", &st), QTK_OK);
	qtk_recipe_free(r);
}
