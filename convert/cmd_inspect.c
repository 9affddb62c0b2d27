/* convert: `qtk inspect PATH` — dispatch on what PATH is. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void inspect_usage(FILE *f)
{
	fprintf(f, "Usage: qtk inspect [--json] PATH\n\n"
	           "Show the tensors (name, dtype, shape, bytes), totals and metadata of\n"
	           "PATH: a .safetensors file, a *.safetensors.index.json, or a directory.\n\n"
	           "  --json      print the same as JSON on stdout\n"
	           "  -h, --help  show this help\n");
}

int cmd_inspect(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			inspect_usage(stdout);
			return QTK_EXIT_OK;
		}
	/* .qtk files (cli_inspect_pack.c) */
	for (int i = 1; i < argc; i++)
		if (argv[i][0] != '-' && cli_is_pack(argv[i]))
			return cli_inspect_pack(argv[i], argc == 3 && (!strcmp(argv[1], "--json") ||
			                                               !strcmp(argv[2], "--json")));
	return cli_usage_error("inspect", "not available yet");
}
