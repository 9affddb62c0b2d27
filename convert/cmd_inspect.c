/* convert: `qtk inspect PATH` — dispatch on what PATH is. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "qtk_formats.h"

static void inspect_usage(FILE *f)
{
	fprintf(f, "Usage: qtk inspect [--json] PATH\n\n"
	           "Show the tensors (name, dtype, shape, bytes), totals and metadata of\n"
	           "PATH: a .safetensors file, a *.safetensors.index.json, a directory, or a\n"
	           ".qtk file.\n"
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
	printf("%s: safetensors, %zu tensor%s in %zu file%s\n", path, n, n == 1 ? "" : "s",
	       qtk_st_shard_count(f), qtk_st_shard_count(f) == 1 ? "" : "s");
	for (size_t i = 0; i < qtk_st_meta_count(f); i++) {
		const char *k = qtk_st_meta_key(f, i);
		printf("  meta %s = %s\n", k, qtk_st_meta_get(f, k));
	}
	printf("\n%-*s  %-7s  %-20s  %12s\n", (int)w, "name", "dtype", "shape", "bytes");
	for (size_t i = 0; i < n; i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i);
		char sh[256];
		shape_str(t, sh, sizeof sh);
		printf("%-*s  %-7s  %-20s  %12" PRIu64 "\n", (int)w, t->name,
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

static int print_json(const char *path, const qtk_st_file *f)
{
	json_t *r = json_object(), *ts = json_array(), *sh = json_array(), *md = json_object();
	uint64_t bytes = 0, params = 0;
	int bad = !r || !ts || !sh || !md;
	for (size_t i = 0; !bad && i < qtk_st_shard_count(f); i++)
		bad |= json_array_append_new(sh, json_pack("{s:s, s:I}", "path",
		                                            qtk_st_shard_path(f, i), "bytes",
		                                            (json_int_t)qtk_st_shard_size(f, i)));
	for (size_t i = 0; !bad && i < qtk_st_count(f); i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i);
		json_t *s = json_array();
		for (uint32_t k = 0; s && k < t->ndim; k++)
			bad |= json_array_append_new(s, json_integer((json_int_t)t->shape[k]));
		bad |= !s || json_array_append_new(
		                     ts, json_pack("{s:s, s:s, s:o, s:I, s:I, s:i, s:I}", "name",
		                                   t->name, "dtype", qtk_dtype_name(t->dtype),
		                                   "shape", s, "elements", (json_int_t)t->nelem,
		                                   "bytes", (json_int_t)t->nbytes, "shard",
		                                   (int)t->shard, "offset",
		                                   (json_int_t)t->file_offset));
		bytes += t->nbytes;
		params += t->nelem;
	}
	for (size_t i = 0; !bad && i < qtk_st_meta_count(f); i++) {
		const char *k = qtk_st_meta_key(f, i);
		bad |= json_object_set_new(md, k, json_string(qtk_st_meta_get(f, k)));
	}
	bad |= bad || json_object_set_new(r, "path", json_string(path)) ||
	       json_object_set_new(r, "format", json_string("safetensors")) ||
	       json_object_set_new(r, "tensor_count", json_integer((json_int_t)qtk_st_count(f))) ||
	       json_object_set_new(r, "total_elements", json_integer((json_int_t)params)) ||
	       json_object_set_new(r, "total_bytes", json_integer((json_int_t)bytes)) ||
	       json_object_set_new(r, "metadata", md) || json_object_set_new(r, "shards", sh) ||
	       json_object_set_new(r, "tensors", ts);
	if (bad) {
		json_decref(r);
		fprintf(stderr, "qtk: out of memory\n");
		return QTK_EXIT_FAIL;
	}
	int rc = json_dumpf(r, stdout, JSON_INDENT(1)) == 0 && putchar('\n') != EOF
	                 ? QTK_EXIT_OK
	                 : QTK_EXIT_FAIL;
	json_decref(r);
	return rc;
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
