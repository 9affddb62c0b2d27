/* convert: `qtk verify FILE.qtk` — validate the directory, then check every
 * plane's crc32, every zstd frame, every stored scale and the padding
 * between planes; report the first bad tensor (or padding byte). With
 * --against SOURCE, cli_verify_against.c also measures every tensor. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "qtk_formats.h"

static void verify_usage(FILE *f)
{
	fprintf(f, "Usage: qtk verify [-q] FILE.qtk\n"
	           "       qtk verify FILE --against SOURCE [OPTIONS]\n\n"
	           "Check a packed file: structure, every plane's crc32, zstd frames,\n"
	           "NaN/Inf scales, zero padding and the metadata JSON. Exit 0 if intact,\n"
	           "1 otherwise (the message names the first bad tensor, or the offset\n"
	           "of a nonzero padding byte and its gap), 2 for a bad command line.\n\n"
	           "  -q, --quiet  print nothing on success\n"
	           "  -h, --help   show this help\n\n");
	cli_verify_against_usage(f);
}

int cmd_verify(int argc, char **argv)
{
	const char *path = NULL;
	qtk_pack_file *f;
	qtk_status st;
	int quiet = 0;
	uint64_t bytes = 0;

	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--against"))
			return cli_verify_against(argc, argv);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			verify_usage(stdout);
			return QTK_EXIT_OK;
		} else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
			quiet = 1;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return cli_usage_error("verify", "unknown option '%s'", argv[i]);
		} else if (path) {
			return cli_usage_error("verify", "one file at a time");
		} else {
			path = argv[i];
		}
	}
	if (!path)
		return cli_usage_error("verify", "missing FILE.qtk");
	if (qtk_pack_open(path, 0, &f, &st) != QTK_OK)
		return cli_report(&st);
	if (qtk_pack_verify(f, &st) != QTK_OK) {
		qtk_pack_close(f);
		return cli_report(&st);
	}
	for (size_t i = 0; i < qtk_pack_count(f); i++)
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			bytes += qtk_pack_get(f, i)->planes[p].size;
	if (!quiet)
		printf("%s: OK (%zu tensors, %llu plane bytes, all crc32 match)\n", path,
		       qtk_pack_count(f), (unsigned long long)bytes);
	qtk_pack_close(f);
	return QTK_EXIT_OK;
}
