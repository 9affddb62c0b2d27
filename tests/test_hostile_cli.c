/* tests: the hostile-input sweep through the qtk command (a sample of the
 * cases test_hostile.c runs through the library): truncations and byte
 * changes spread over each sample file, each through inspect, inspect
 * --json and convert (safetensors, sharded set, GGUF) or inspect, verify,
 * export and pack/unpack (.qtk), each run under a time limit. Every run
 * must exit 0 or 1 (no signal, no hang); a command that writes must either
 * succeed with a readable output or leave the output directory empty (no
 * output, no temporary); verify must refuse every changed .qtk byte
 * outside zero padding. 72 cases per file; under make check (QTK_SANITIZED)
 * 18, a quarter: each run of the sanitized binary costs ~10x more. */
#include <stdlib.h>

#include "qtk_formats.h"
#include "test.h"
#include "test_cli_util.h"
#include "test_hostile_util.h"

#define CLI_SECONDS 20u

typedef struct {
	char in[320], out[320];   /* scratch input file (or directory), output directory */
	size_t runs, ok_runs;
	int shown;
} cli_ctx;

static size_t samples(void)
{
	const char *san = getenv("QTK_SANITIZED");
	return san && *san ? 18 : 72;
}

/* Case s of ns spread over the mutations of an n-byte file: even s cut
 * the file, odd s change a byte, both at offsets spread evenly, the byte
 * value rotating through the four kinds. */
static hs_mut pick(size_t n, size_t s, size_t ns)
{
	hs_mut m;

	m.at = (size_t)((double)n * (double)(s / 2) / (double)(ns / 2 + 1));
	m.at = (m.at * 7 + s * 13) % n; /* not only round offsets */
	m.kind = s % 2 ? 1 + (int)(s / 2 % 4) : HS_TRUNC;
	return m;
}

/* Run argv; it must exit 0 or 1. Returns the code (or -1 after a failure). */
static int run(cli_ctx *c, const char *const *argv, const char *what)
{
	int sig = 0, rc = t_run(argv, NULL, NULL, NULL, CLI_SECONDS, &sig);

	c->runs++;
	if (rc == 0 || rc == 1) {
		c->ok_runs += rc == 0;
		return rc;
	}
	if (c->shown++ < 12)
		t_fail_at(__FILE__, __LINE__, "%s: qtk %s %s: %s", what, argv[1], argv[2],
		          rc == T_RUN_CRASH ? "killed by a signal"
		          : rc == T_RUN_TIMEOUT ? "did not finish (hang?)" : "exit code not 0/1");
	if (rc == T_RUN_CRASH && c->shown < 14)
		printf("    (signal %d)\n", sig);
	return -1;
}

/* After a command that writes OUT (a file or directory) into c->out: on
 * failure nothing may be left there; on success check the output reads. */
static void check_out(cli_ctx *c, int rc, const char *kind, const char *what)
{
	char path[400];
	qtk_status st;
	int n = t_dir_entries(c->out), good = 1;

	snprintf(path, sizeof path, "%s/out", c->out);
	if (rc != 0) {
		if (n != 0 && c->shown++ < 12)
			t_fail_at(__FILE__, __LINE__, "%s: failed %s left %d entries in the output directory",
			          what, kind, n);
	} else if (!strcmp(kind, "qtk")) {
		qtk_pack_file *f;
		good = qtk_pack_open(path, QTK_PACK_OPEN_VERIFY, &f, &st) == QTK_OK;
		qtk_pack_close(f);
	} else if (!strcmp(kind, "gguf")) {
		qtk_gguf_file *f;
		good = qtk_gguf_open(path, &f, &st) == QTK_OK;
		qtk_gguf_close(f);
	} else {
		qtk_st_file *f;
		good = qtk_st_open(path, &f, &st) == QTK_OK;
		qtk_st_close(f);
	}
	if (!good && c->shown++ < 12)
		t_fail_at(__FILE__, __LINE__, "%s: %s output does not read back: %s", what, kind, st.msg);
	if (rc == 0 && n != 1 && c->shown++ < 12)
		t_fail_at(__FILE__, __LINE__, "%s: %d entries beside the %s output", what, n, kind);
	t_system("rm -rf '%s'/* '%s'/.[!.]*", c->out, c->out);
}

/* A checkpoint at c->in: inspect, inspect --json, convert to .qtk, GGUF
 * or MLX (by case number). */
static void run_checkpoint(cli_ctx *c, size_t s, const char *what)
{
	static const char *const forms[3][2] = { { "qtk", "int4" }, { "gguf", "int8" },
	                                          { "mlx", "int4" } };
	const char *q = t_qtk_bin(), *form = forms[s % 3][0];
	char out[400];
	const char *ins[] = { q, "inspect", c->in, NULL };
	const char *insj[] = { q, "inspect", "--json", c->in, NULL };
	const char *conv[] = { q, "convert", c->in, "-o", out, "-F", form, "-s", forms[s % 3][1],
	                       "-g", "32", "-q", NULL };
	int rc;

	snprintf(out, sizeof out, "%s/out", c->out);
	run(c, ins, what);
	run(c, insj, what);
	rc = run(c, conv, what);
	if (rc >= 0)
		check_out(c, rc, !strcmp(form, "mlx") ? "mlx" : form, what);
}

/* A .qtk at c->in: inspect (both), verify (must refuse unless intact or
 * only padding changed), export to GGUF, unpack or pack. */
static void run_qtk(cli_ctx *c, int zstd, int intact, const char *what)
{
	const char *q = t_qtk_bin();
	char out[400];
	const char *ins[] = { q, "inspect", c->in, NULL };
	const char *insj[] = { q, "inspect", "--json", c->in, NULL };
	const char *ver[] = { q, "verify", "-q", c->in, NULL };
	const char *exp[] = { q, "export", c->in, "--to", "gguf", "-o", out, "-R", "-q", NULL };
	const char *pk[] = { q, zstd ? "unpack" : "pack", c->in, out, NULL };
	int rc;

	snprintf(out, sizeof out, "%s/out", c->out);
	run(c, ins, what);
	run(c, insj, what);
	rc = run(c, ver, what);
	if (rc >= 0 && rc != !intact && intact >= 0 && c->shown++ < 12)
		t_fail_at(__FILE__, __LINE__, "%s: qtk verify exit %d", what, rc);
	if ((rc = run(c, exp, what)) >= 0)
		check_out(c, rc, "gguf", what);
	if ((rc = run(c, pk, what)) >= 0)
		check_out(c, rc, "qtk", what);
}

static void setup(cli_ctx *c, const char *in_name)
{
	memset(c, 0, sizeof *c);
	snprintf(c->in, sizeof c->in, "%s/in", hs_scratch());
	snprintf(c->out, sizeof c->out, "%s/out", hs_scratch());
	t_system("mkdir -p '%s' '%s'", c->in, c->out);
	snprintf(c->in + strlen(c->in), sizeof c->in - strlen(c->in), "/%s", in_name);
}

/* kind: 0 safetensors, 1 GGUF, 2 .qtk, 3 .qtk zstd form */
static void sweep_file(int kind)
{
	static const char *const names[4] = { "m.safetensors", "m.gguf", "m.qtk", "mz.qtk" };
	size_t n, len, ns = samples();
	uint8_t *b, *m;
	cli_ctx c;

	setup(&c, names[kind]);
	b = kind == 0 ? hs_st_sample(&n) : kind == 1 ? hs_gguf_sample(t_tmp("g.gguf"), &n)
	  : hs_qtk_sample(t_tmp("q.qtk"), kind == 3, &n);
	REQUIRE(b);
	m = malloc(n);
	for (size_t s = 0; s <= ns; s++) {
		hs_mut mu = pick(n, s, ns);
		char what[96];
		int changed;

		/* case ns: the file as it is, which every command must take */
		changed = s < ns && hs_mutate(b, n, mu, m, &len);
		snprintf(what, sizeof what, "%s %s", names[kind], changed ? hs_mut_str(mu) : "intact");
		REQUIRE(t_write_file(c.in, changed ? m : b, changed ? len : n) == 0);
		if (kind < 2)
			run_checkpoint(&c, s, what);
		else
			run_qtk(&c, kind == 3,
			        !changed ? 1 : mu.kind != HS_TRUNC && hs_qtk_is_padding(b, n, mu.at) ? -1 : 0,
			        what);
		if (!changed && c.shown == 0 && kind < 2)
			CHECK_MSG(c.ok_runs >= 3, "%s: the intact file failed", names[kind]);
	}
	printf("    %zu cases, %zu runs, %zu exited 0\n", ns + 1, c.runs, c.ok_runs);
	CHECK_EQ(c.shown, 0);
	free(m);
	free(b);
	hs_scratch_done();
}

TEST(hostile_cli_safetensors)
{
	sweep_file(0);
}

TEST(hostile_cli_gguf)
{
	sweep_file(1);
}

TEST(hostile_cli_qtk)
{
	sweep_file(2);
	sweep_file(3);
}

/* The sharded set: each of its three files mutated in turn. */
TEST(hostile_cli_sharded)
{
	static const char *const names[] = { "s1.safetensors", "s2.safetensors",
	                                     "m.safetensors.index.json" };
	size_t ns = samples() / 3 + 1;
	cli_ctx c;

	setup(&c, "set");
	REQUIRE(t_system("mkdir -p '%s'", c.in) == 0 && hs_st_sharded(c.in) == 0);
	for (int fi = 0; fi < 3; fi++) {
		char path[400];
		size_t n, len;
		uint8_t *b, *m;

		snprintf(path, sizeof path, "%s/%s", c.in, names[fi]);
		b = t_read_file(path, &n);
		REQUIRE(b);
		m = malloc(n);
		for (size_t s = 0; s < ns; s++) {
			hs_mut mu = pick(n, s, ns);
			char what[96];

			if (!hs_mutate(b, n, mu, m, &len))
				continue;
			snprintf(what, sizeof what, "%s %s", names[fi], hs_mut_str(mu));
			REQUIRE(t_write_file(path, m, len) == 0);
			run_checkpoint(&c, s + (size_t)fi, what);
		}
		REQUIRE(t_write_file(path, b, n) == 0);
		free(m);
		free(b);
	}
	run_checkpoint(&c, 0, "intact set");
	printf("    %zu runs, %zu exited 0\n", c.runs, c.ok_runs);
	CHECK_EQ(c.shown, 0);
	hs_scratch_done();
}
