/* convert: `qtk`, the command line. Dispatches to one cmd_* per command. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "cli.h"

static const qtk_cli_cmd commands[] = {
	{ "convert", "quantize a checkpoint into a .qtk, GGUF or MLX output", cmd_convert },
	{ "export", "repack a .qtk file as GGUF or MLX (exact where the target allows)", cmd_export },
	{ "inspect", "show the tensors and metadata of a checkpoint or .qtk file", cmd_inspect },
	{ "verify", "check a .qtk file's structure and every checksum", cmd_verify },
	{ "pack", "store a .qtk file's planes as zstd frames (transport form)", cmd_pack },
	{ "unpack", "store a .qtk file's planes plain again (mmap form)", cmd_unpack },
	{ "run", "generate text with a LLaMA-family model", cmd_run },
	{ "eval", "perplexity and KL divergence of a model over a text", cmd_eval },
	{ "calibrate", "activation statistics of a model over a text (imatrix, X^T X)", cmd_calibrate },
	{ "bench", "time the runtime kernels against OpenBLAS and the memory bandwidth", cmd_bench },
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: qtk [--help] [--version] COMMAND [ARGS...]\n\n"
	           "Turn neural-network checkpoints into quantized weight files.\n\n"
	           "Commands:\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nRun 'qtk COMMAND --help' for a command's options.\n"
	           "Exit status: 0 success, 1 failure, 2 usage error, 130 interrupted.\n");
}

int cli_report(const qtk_status *st)
{
	fprintf(stderr, "qtk: %s\n", st->msg[0] ? st->msg : qtk_err_name(st->code));
	return QTK_EXIT_FAIL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "qtk %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'qtk %s --help' for more information.\n", cmd);
	return QTK_EXIT_USAGE;
}

int cli_decimal(const char *s, double *out)
{
	char *end;
	double d;

	if (!((*s >= '0' && *s <= '9') || *s == '.') || strspn(s, "0123456789.eE+-") != strlen(s))
		return -1;
	d = strtod(s, &end);
	if (*end || !isfinite(d) || d < 0)
		return -1;
	*out = d;
	return 0;
}

int cli_uint(const char *cmd, const char *opt, const char *s, uint64_t lo, uint64_t hi,
             uint64_t *out)
{
	qtk_status st;

	if (qtk_parse_u64(opt, s, lo, hi, out, &st) != QTK_OK)
		return cli_usage_error(cmd, "%s", st.msg);
	return 0;
}

/* The environment variables the library reads: a value it would ignore or
 * misread is a usage error here, before any file is touched. */
static int check_env(void)
{
	const char *isa = getenv("QTK_ISA"), *shard = getenv("QTK_MLX_SHARD_BYTES");
	const char *probe = getenv("QTK_BENCH_PROBE_BYTES");
	uint64_t v;
	qtk_status st;

	if (isa && *isa && qtk_isa_from_name(isa) < 0) {
		fprintf(stderr, "qtk: QTK_ISA='%.64s': expected scalar, avx2 or avx512\n", isa);
		return QTK_EXIT_USAGE;
	}
	if (shard && *shard &&
	    qtk_parse_u64("QTK_MLX_SHARD_BYTES", shard, 1, UINT64_MAX, &v, &st) != QTK_OK) {
		fprintf(stderr, "qtk: %s\n", st.msg);
		return QTK_EXIT_USAGE;
	}
	if (probe && *probe && qtk_parse_u64("QTK_BENCH_PROBE_BYTES", probe, 1u << 20, 2048u << 20,
	                                     &v, &st) != QTK_OK) {
		fprintf(stderr, "qtk: %s\n", st.msg);
		return QTK_EXIT_USAGE;
	}
	return 0;
}

/* OpenBLAS 0.3.21 (Debian 12) picks its SSE3 "Prescott" kernels on CPUs it
 * does not know (recent AMD and Intel ones), at library load, from
 * OPENBLAS_CORETYPE. The commands that compute with it (float weights,
 * reference products) run themselves again with the kernels of the ISA in
 * effect, unless the user chose (OPENBLAS_CORETYPE set, or bench's
 * --blas-as-is). Returns only when not re-running. */
static void fix_openblas(int argc, char **argv)
{
	static const char *const uses[] = { "run", "eval", "bench", "verify", "calibrate" };
	const char *core = openblas_get_corename();
	qtk_isa isa = qtk_isa_active();
	int used = 0;

	for (size_t i = 0; i < sizeof uses / sizeof uses[0]; i++)
		used |= !strcmp(argv[1], uses[i]);
	for (int i = 2; i < argc; i++)
		if (!strcmp(argv[i], "--blas-as-is"))
			return;
	if (!used || getenv("OPENBLAS_CORETYPE") || !core || strcmp(core, "Prescott") ||
	    isa < QTK_ISA_AVX2)
		return;
	if (setenv("OPENBLAS_CORETYPE", isa == QTK_ISA_AVX512 ? "SkylakeX" : "Haswell", 1))
		return;
	execv("/proc/self/exe", argv);
	unsetenv("OPENBLAS_CORETYPE"); /* exec failed: go on with what OpenBLAS chose */
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return QTK_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return QTK_EXIT_OK;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("qtk %s\n", QTK_VERSION);
		return QTK_EXIT_OK;
	}
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		if (strcmp(argv[1], commands[i].name))
			continue;
		if (check_env())
			return QTK_EXIT_USAGE;
		fix_openblas(argc, argv);
		/* an input truncated while mapped: a message, not a crash */
		qtk_fmt_catch_sigbus(QTK_EXIT_FAIL);
		return commands[i].run(argc - 1, argv + 1);
	}
	fprintf(stderr, "qtk: unknown command '%s'\nTry 'qtk --help' for more information.\n",
	        argv[1]);
	return QTK_EXIT_USAGE;
}
