/* convert: `qtk pack --zstd IN.qtk OUT.qtk` and `qtk unpack IN.qtk OUT.qtk`
 * — convert between the mmap form and the zstd transport form, losslessly
 * (unpack restores the original bytes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "qtk_formats.h"

static void pack_usage(FILE *f, int unpack)
{
	if (unpack)
		fprintf(f, "Usage: qtk unpack [--force] IN.qtk OUT.qtk\n\n"
		           "Store every plane of IN plain again (the mmap form).\n\n");
	else
		fprintf(f, "Usage: qtk pack [--zstd] [--level N] [--no-split] [--force] IN.qtk OUT.qtk\n\n"
		           "Store every plane of IN as an independent zstd frame (the transport\n"
		           "form; loaders accept it and decompress planes at load).\n\n"
		           "  --zstd        compress with zstd (the default and only codec)\n"
		           "  --level N     zstd level 1..19 (default 9)\n"
		           "  --no-split    do not split 16-bit planes into byte planes first\n");
	fprintf(f, "  -f, --force   replace an existing OUT (a regular file only)\n"
	           "  -h, --help    show this help\n");
}

static int run(int argc, char **argv, int unpack)
{
	const char *cmd = unpack ? "unpack" : "pack", *paths[2] = { NULL, NULL };
	int level = 9, split = 1, npaths = 0;
	qtk_write_opts o = { 0 };
	qtk_status st;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			pack_usage(stdout, unpack);
			return QTK_EXIT_OK;
		} else if (!strcmp(argv[i], "--force") || !strcmp(argv[i], "-f")) {
			o.force = 1;
		} else if (!unpack && !strcmp(argv[i], "--zstd")) {
			continue;
		} else if (!unpack && !strcmp(argv[i], "--no-split")) {
			split = 0;
		} else if (!unpack && !strcmp(argv[i], "--level")) {
			char *end;
			if (++i >= argc)
				return cli_usage_error(cmd, "--level needs a value");
			level = (int)strtol(argv[i], &end, 10);
			if (*end || level < 1 || level > 19)
				return cli_usage_error(cmd, "--level must be 1..19");
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return cli_usage_error(cmd, "unknown option '%s'", argv[i]);
		} else if (npaths < 2) {
			paths[npaths++] = argv[i];
		} else {
			return cli_usage_error(cmd, "too many arguments");
		}
	}
	if (npaths != 2)
		return cli_usage_error(cmd, "need IN.qtk and OUT.qtk");
	o.inputs = paths;
	o.ninputs = 1;
	if (qtk_pack_transcode(paths[0], paths[1], !unpack, level, split, &o, &st) != QTK_OK)
		return cli_report(&st);
	return QTK_EXIT_OK;
}

int cmd_pack(int argc, char **argv)
{
	return run(argc, argv, 0);
}

int cmd_unpack(int argc, char **argv)
{
	return run(argc, argv, 1);
}
