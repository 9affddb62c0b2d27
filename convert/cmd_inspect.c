/* convert: `qtk inspect PATH` — dispatch on what PATH is. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "qtk_formats.h"

static void inspect_usage(FILE *f)
{
	fprintf(f, "Usage: qtk inspect [--json] PATH\n\n"
	           "Show the tensors (name, dtype, shape, bytes), totals and metadata of\n"
	           "PATH: a .safetensors file, a *.safetensors.index.json, a model directory\n"
	           "(the file Hugging Face loaders read in it, shown as \"read ...\"), a\n"
	           "GGUF file or a .qtk file.\n"
	           "The checkpoint is fully validated; a malformed one is an error.\n\n"
	           "  --json      print the same as JSON on stdout\n"
	           "  -h, --help  show this help\n\n"
	           "Exit status: 0 ok, 1 invalid or unreadable input, 2 bad usage.\n");
}

static void shape_str(const qtk_st_tensor *t, char *b, size_t n)
{
	size_t k = (size_t)snprintf(b, n, "[");
	for (uint32_t i = 0; i < t->ndim && k < n; i++)
		k += (size_t)snprintf(b + k, n - k, "%s%" PRIu64, i ? ", " : "", t->shape[i]);
	if (k < n)
		snprintf(b + k, n - k, "]");
}

static int print_text(const char *path, const qtk_st_file *f)
{
	uint64_t bytes = 0, params = 0, per[QTK_DT_COUNT] = { 0 };
	size_t n = qtk_st_count(f), w = 4;
	for (size_t i = 0; i < n; i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i);
		size_t l = strlen(t->name);
		w = l > w && l < 80 ? l : w;
	}
	printf("%s: safetensors, %zu tensor%s in %zu file%s\n", CLI_TXT(path), n, n == 1 ? "" : "s",
	       qtk_st_shard_count(f), qtk_st_shard_count(f) == 1 ? "" : "s");
	if (strcmp(path, qtk_st_path(f)))
		printf("  read %s (picked in the directory)\n", CLI_TXT(qtk_st_path(f)));
	for (size_t i = 0; i < qtk_st_meta_count(f); i++) {
		const char *k = qtk_st_meta_key(f, i);
		printf("  meta %s = %s\n", CLI_TXT(k), CLI_TXT(qtk_st_meta_get(f, k)));
	}
	printf("\n%-*s  %-7s  %-20s  %12s\n", (int)w, "name", "dtype", "shape", "bytes");
	for (size_t i = 0; i < n; i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i);
		char sh[256];
		shape_str(t, sh, sizeof sh);
		printf("%-*s  %-7s  %-20s  %12" PRIu64 "\n", (int)w, CLI_TXT(t->name),
		       qtk_dtype_name(t->dtype), sh, t->nbytes);
		bytes += t->nbytes;
		params += t->nelem;
		per[t->dtype] += t->nelem;
	}
	printf("\ntotal: %zu tensors, %" PRIu64 " elements, %" PRIu64 " bytes\n", n, params,
	       bytes);
	for (int d = 0; d < QTK_DT_COUNT; d++)
		if (per[d])
			printf("  %-7s %" PRIu64 " elements\n", qtk_dtype_name((qtk_dtype)d), per[d]);
	return QTK_EXIT_OK;
}

/* Streamed (names and metadata are UTF-8, checked by the reader; paths
 * may be any bytes). */
static int print_json(const char *path, const qtk_st_file *f)
{
	uint64_t bytes = 0, params = 0;
	cj_writer j;

	for (size_t i = 0; i < qtk_st_count(f); i++) {
		bytes += qtk_st_get(f, i)->nbytes;
		params += qtk_st_get(f, i)->nelem;
	}
	cj_init(&j, stdout);
	cj_obj(&j, NULL);
	cj_str(&j, "path", path);
	cj_str(&j, "resolved", qtk_st_path(f));
	cj_str(&j, "format", "safetensors");
	cj_uint(&j, "tensor_count", qtk_st_count(f));
	cj_uint(&j, "total_elements", params);
	cj_uint(&j, "total_bytes", bytes);
	cj_obj(&j, "metadata");
	for (size_t i = 0; i < qtk_st_meta_count(f); i++) {
		const char *k = qtk_st_meta_key(f, i);
		cj_str(&j, k, qtk_st_meta_get(f, k));
	}
	cj_end_obj(&j);
	cj_arr(&j, "shards");
	for (size_t i = 0; i < qtk_st_shard_count(f); i++) {
		cj_obj(&j, NULL);
		cj_str(&j, "path", qtk_st_shard_path(f, i));
		cj_uint(&j, "bytes", qtk_st_shard_size(f, i));
		cj_end_obj(&j);
	}
	cj_end_arr(&j);
	cj_arr(&j, "tensors");
	for (size_t i = 0; i < qtk_st_count(f); i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i);

		cj_obj(&j, NULL);
		cj_str(&j, "name", t->name);
		cj_str(&j, "dtype", qtk_dtype_name(t->dtype));
		cj_arr(&j, "shape");
		for (uint32_t k = 0; k < t->ndim; k++)
			cj_uint(&j, NULL, t->shape[k]);
		cj_end_arr(&j);
		cj_uint(&j, "elements", t->nelem);
		cj_uint(&j, "bytes", t->nbytes);
		cj_uint(&j, "shard", t->shard);
		cj_uint(&j, "offset", t->file_offset);
		cj_end_obj(&j);
	}
	cj_end_arr(&j);
	cj_end_obj(&j);
	return cj_finish(&j);
}

/* 1 if the file at path starts with the n bytes of magic (not for a
 * directory or FIFO: the safetensors reader then says what it is). */
static int has_magic(const char *path, const char *magic, size_t n)
{
	char buf[8];
	qtk_status tmp;
	int fd, yes;

	if (qtk_fmt_open_input(path, &fd, NULL, &tmp) != QTK_OK)
		return 0;
	yes = n <= sizeof buf && read(fd, buf, n) == (ssize_t)n && !memcmp(buf, magic, n);
	close(fd);
	return yes;
}

int cmd_inspect(int argc, char **argv)
{
	int json = 0;
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			inspect_usage(stdout);
			return QTK_EXIT_OK;
		} else if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else if (!strcmp(argv[i], "--")) {
			if (i + 1 < argc && !path)
				path = argv[++i];
			if (i + 1 < argc)
				return cli_usage_error("inspect", "only one PATH");
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return cli_usage_error("inspect", "unknown option '%s'", argv[i]);
		} else if (path) {
			return cli_usage_error("inspect", "only one PATH");
		} else {
			path = argv[i];
		}
	}
	if (!path)
		return cli_usage_error("inspect", "missing PATH");
	if (has_magic(path, QTK_PACK_MAGIC, 8))
		return cli_inspect_pack(path, json);
	if (has_magic(path, QTK_GGUF_MAGIC, 4))
		return cli_inspect_gguf(path, json);
	qtk_status st;
	qtk_st_file *f;
	if (qtk_st_open(path, &f, &st) != QTK_OK)
		return cli_report(&st);
	int rc = json ? print_json(path, f) : print_text(path, f);
	fflush(stdout);
	qtk_st_close(f);
	return rc;
}
