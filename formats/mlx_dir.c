/* formats: the MLX model directory, laid out as mlx-lm writes one:
 * model.safetensors, or model-0000N-of-0000M.safetensors shards of at most
 * 5 GiB plus model.safetensors.index.json; config.json (the caller's text)
 * and the tokenizer files of the source directory beside them. The
 * directory is built beside the target under a temporary name (qtk_outdir)
 * and renamed into place only when complete; every file in it is written
 * through fileio's crash-safe writer. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

#define MLX_SHARD_LIMIT (5ull << 30) /* mlx-lm: MAX_FILE_SIZE_GB (5) << 30 */

/* Files mlx-lm needs beside the weights, copied when present. */
static const char *const copy_files[] = {
	"tokenizer.json", "tokenizer_config.json", "tokenizer.model",
	"special_tokens_map.json", "generation_config.json",
};

typedef struct {
	qtk_st_desc d;          /* d.name owned */
	uint64_t bytes;
	size_t shard, idx;      /* file, and index of the tensor in it */
} dir_entry;

struct qtk_mlx_dir {
	dir_entry *e;           /* [n] */
	size_t n;
	size_t nshards;
	qtk_st_writer **w;      /* [nshards] */
	qtk_outdir *od;         /* the target directory and the one being built */
};

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

/* ---- a previous output -------------------------------------------------- */

/* Is name one of the files this writer writes? 2: a weights file. */
static int our_name(const char *name)
{
	size_t n = strlen(name), d = 0;

	if (!strcmp(name, "model.safetensors"))
		return 2;
	if (!strcmp(name, "model.safetensors.index.json") || !strcmp(name, "config.json"))
		return 1;
	for (size_t i = 0; i < sizeof copy_files / sizeof *copy_files; i++)
		if (!strcmp(name, copy_files[i]))
			return 1;
	/* model-0000N-of-0000M.safetensors (%05zu: 5 digits or more) */
	if (strncmp(name, "model-", 6) || !ends_with(name, ".safetensors"))
		return 0;
	name += 6;
	n -= 6 + strlen(".safetensors");
	for (int part = 0; part < 2; part++) {
		size_t k = 0;

		while (d + k < n && name[d + k] >= '0' && name[d + k] <= '9')
			k++;
		if (k < 5)
			return 0;
		d += k;
		if (part == 0) {
			if (n - d < 4 || strncmp(name + d, "-of-", 4))
				return 0;
			d += 4;
		}
	}
	return d == n ? 2 : 0;
}

/* Every .safetensors file of dir is valid with the metadata "format":
 * "mlx" (a Hugging Face checkpoint has "pt" there). */
static qtk_err weights_are_mlx(const char *dir, qtk_status *st)
{
	char path[PATH_MAX];
	struct dirent *e;
	DIR *d = opendir(dir);

	if (!d)
		return qtk_fail(st, QTK_E_IO, "%s: cannot read directory: %s", dir, strerror(errno));
	while ((e = readdir(d)) != NULL) {
		qtk_st_file *f;
		const char *fmt;
		qtk_err rc;

		if (our_name(e->d_name) != 2)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		if ((rc = qtk_st_open(path, &f, st)) != QTK_OK) {
			closedir(d);
			return rc;
		}
		fmt = qtk_st_meta_get(f, "format");
		rc = fmt && !strcmp(fmt, "mlx") ? QTK_OK
		     : qtk_fail(st, QTK_E_ARG, "%s: no safetensors metadata \"format\": \"mlx\": "
		                "not a previous MLX output; not replaced, even with --force", path);
		qtk_st_close(f);
		if (rc) {
			closedir(d);
			return rc;
		}
	}
	closedir(d);
	return QTK_OK;
}

/* A previous qtk MLX output: a directory whose every entry is a regular
 * file named as this writer names its files, config.json among them, and
 * whose every .safetensors file is an MLX one. The first foreign entry in
 * name order is reported. */
static qtk_err mlx_is_ours(const char *dir, qtk_status *st)
{
	char foreign[256] = "";
	int config = 0, weights = 0, named = 0; /* named: foreign only by its type */
	struct dirent *e;
	DIR *d = opendir(dir);

	if (!d)
		return qtk_fail(st, QTK_E_IO, "%s: cannot read directory: %s", dir, strerror(errno));
	while ((e = readdir(d)) != NULL) {
		struct stat sb;
		int kind = our_name(e->d_name);

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (!kind || fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 ||
		    !S_ISREG(sb.st_mode)) {
			if (!*foreign || strcmp(e->d_name, foreign) < 0) {
				snprintf(foreign, sizeof foreign, "%s", e->d_name);
				named = kind != 0;
			}
			continue;
		}
		config |= !strcmp(e->d_name, "config.json");
		weights |= kind == 2;
	}
	closedir(d);
	if (*foreign)
		return qtk_fail(st, QTK_E_ARG, "%s: holds '%s', %s: not a previous MLX output; not "
		                "replaced, even with --force", dir, foreign,
		                named ? "which is not a regular file" : "a file qtk's MLX output has not");
	if (!config || !weights)
		return qtk_fail(st, QTK_E_ARG, "%s: no %s: not a previous MLX output; not replaced, "
		                "even with --force", dir, config ? "model*.safetensors" : "config.json");
	return weights_are_mlx(dir, st);
}

static const qtk_outdir_kind mlx_kind = { .name = "MLX", .check = mlx_is_ours };

/* ---- opening -------------------------------------------------------------- */

static void shard_name(const qtk_mlx_dir *d, size_t k, char *buf, size_t n)
{
	if (d->nshards == 1)
		snprintf(buf, n, "model.safetensors");
	else
		snprintf(buf, n, "model-%05zu-of-%05zu.safetensors", k + 1, d->nshards);
}

/* $QTK_MLX_SHARD_BYTES (tests force small shards) or 5 GiB. */
static qtk_err shard_limit(uint64_t *limit, qtk_status *st)
{
	const char *e = getenv("QTK_MLX_SHARD_BYTES");

	*limit = MLX_SHARD_LIMIT;
	if (!e || !*e)
		return QTK_OK;
	return qtk_parse_u64("QTK_MLX_SHARD_BYTES", e, 1, UINT64_MAX, limit, st);
}

/* Greedy, in output order, as mlx-lm's make_shards (never an empty shard). */
static void assign_shards(qtk_mlx_dir *d, uint64_t limit)
{
	uint64_t size = 0;
	size_t shard = 0, idx = 0;

	for (size_t i = 0; i < d->n; i++) {
		if (idx > 0 && size + d->e[i].bytes > limit) {
			shard++;
			idx = 0;
			size = 0;
		}
		d->e[i].shard = shard;
		d->e[i].idx = idx++;
		size += d->e[i].bytes;
	}
	d->nshards = d->n ? shard + 1 : 1;
}

static qtk_err open_shards(qtk_mlx_dir *d, qtk_status *st)
{
	static const char *const meta[] = { "format", "mlx", NULL };
	qtk_write_opts wo = { 0 };
	qtk_st_desc *sd = qtk_calloc(d->n ? d->n : 1, sizeof *sd);
	char name[64], path[PATH_MAX];
	qtk_err rc = QTK_OK;
	size_t first = 0;

	d->w = qtk_calloc(d->nshards, sizeof *d->w);
	if (!sd || !d->w) {
		qtk_free(sd);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	for (size_t k = 0; k < d->nshards && !rc; k++) {
		size_t cnt = 0;

		while (first + cnt < d->n && d->e[first + cnt].shard == k) {
			sd[cnt] = d->e[first + cnt].d;
			cnt++;
		}
		shard_name(d, k, name, sizeof name);
		snprintf(path, sizeof path, "%s/%s", qtk_outdir_tmp(d->od), name);
		rc = qtk_st_writer_open(&d->w[k], path, sd, cnt, meta, &wo, st);
		first += cnt;
	}
	qtk_free(sd);
	return rc;
}

/* The entries, names copied and sizes checked. */
static qtk_err copy_entries(qtk_mlx_dir *d, const qtk_st_desc *t, size_t n, qtk_status *st)
{
	d->e = qtk_calloc(n ? n : 1, sizeof *d->e);
	if (!d->e)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		dir_entry *e = &d->e[i];
		uint64_t b = qtk_dtype_size(t[i].dtype);

		e->d = t[i];
		if (!(e->d.name = qtk_strdup(t[i].name)))
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		d->n = i + 1;
		for (uint32_t k = 0; k < t[i].ndim; k++)
			if (__builtin_mul_overflow(b, t[i].shape[k], &b))
				return qtk_fail(st, QTK_E_OVERFLOW, "tensor '%s': MLX size overflows",
				                t[i].name);
		e->bytes = b;
	}
	return QTK_OK;
}

qtk_err qtk_mlx_dir_open(qtk_mlx_dir **out, const char *path, const qtk_st_desc *t,
                         size_t n, const qtk_write_opts *opts, qtk_status *st)
{
	qtk_mlx_dir *d = qtk_calloc(1, sizeof *d);
	uint64_t limit;
	qtk_err rc;

	*out = NULL;
	if (!d)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	rc = copy_entries(d, t, n, st);
	if (!rc)
		rc = shard_limit(&limit, st);
	if (!rc)
		rc = qtk_outdir_open(&d->od, path, opts, &mlx_kind, st);
	if (!rc) {
		assign_shards(d, limit);
		rc = open_shards(d, st);
	}
	if (rc) {
		qtk_mlx_dir_abort(d);
		return rc;
	}
	*out = d;
	return QTK_OK;
}

const char *qtk_mlx_dir_path(const qtk_mlx_dir *d)
{
	return qtk_outdir_path(d->od);
}

qtk_err qtk_mlx_dir_put(qtk_mlx_dir *d, size_t i, uint64_t off, const void *buf, size_t len,
                        qtk_status *st)
{
	const dir_entry *e = &d->e[i];

	return qtk_st_writer_put(d->w[e->shard], e->idx, off, buf, len, st);
}

/* ---- commit ------------------------------------------------------------- */

/* File name of the directory being built: data written, fsync'd and put in
 * place by fileio's writer; a failure names the final path. */
static qtk_err put_file(const qtk_mlx_dir *d, const char *name, const void *data, size_t n,
                        qtk_status *st)
{
	char path[PATH_MAX];
	qtk_outfile o;
	qtk_err rc;

	snprintf(path, sizeof path, "%s/%s", qtk_outdir_tmp(d->od), name);
	rc = qtk_out_open(&o, path, NULL, st);
	if (!rc && n)
		rc = qtk_out_pwrite(&o, data, n, 0, st);
	if (!rc)
		rc = qtk_out_commit(&o, st);
	else
		qtk_out_abort(&o);
	if (rc && rc != QTK_E_NOMEM) {
		size_t tl = strlen(path);
		if (!strncmp(st->msg, path, tl)) { /* "TMP/NAME: ..." -> "PATH/NAME: ..." */
			char msg[sizeof st->msg];
			snprintf(msg, sizeof msg, "%s/%s%s", qtk_outdir_path(d->od), name, st->msg + tl);
			snprintf(st->msg, sizeof st->msg, "%s", msg);
		}
	}
	return rc;
}

static qtk_err write_index(const qtk_mlx_dir *d, qtk_status *st)
{
	json_t *root = json_object(), *meta = json_object(), *map = json_object();
	uint64_t total = 0;
	char name[64], *text;
	qtk_err rc;

	for (size_t i = 0; i < d->n; i++) {
		total += d->e[i].bytes;
		shard_name(d, d->e[i].shard, name, sizeof name);
		json_object_set_new(map, d->e[i].d.name, json_string(name));
	}
	json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
	json_object_set_new(root, "metadata", meta);
	json_object_set_new(root, "weight_map", map);
	text = json_dumps(root, JSON_INDENT(4) | JSON_SORT_KEYS);
	json_decref(root);
	if (!text)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	rc = put_file(d, "model.safetensors.index.json", text, strlen(text), st);
	free(text);
	return rc;
}

static qtk_err copy_file(const qtk_mlx_dir *d, const char *from_dir, const char *name,
                         qtk_status *st)
{
	char from[PATH_MAX], *buf;
	size_t size;
	qtk_err rc;

	snprintf(from, sizeof from, "%s/%s", from_dir, name);
	rc = qtk_fmt_read_input(from, &buf, &size, st);
	if (rc == QTK_E_NOT_FOUND)
		return QTK_OK; /* absent: nothing to copy */
	if (rc)
		return rc;
	rc = put_file(d, name, buf, size, st);
	qtk_free(buf);
	return rc;
}

qtk_err qtk_mlx_dir_commit(qtk_mlx_dir *d, const char *config_json, size_t len,
                           const char *copy_from, qtk_status *st)
{
	qtk_err rc = QTK_OK;

	for (size_t k = 0; k < d->nshards && !rc; k++) {
		rc = qtk_st_writer_commit(d->w[k], st);
		d->w[k] = NULL;
	}
	if (!rc && d->nshards > 1) { /* under a jansson guard (qtk_formats.h) */
		unsigned jm = qtk_json_begin();
		rc = write_index(d, st);
		if (qtk_json_end(jm))
			rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory writing the index",
			              qtk_outdir_path(d->od));
	}
	if (!rc)
		rc = put_file(d, "config.json", config_json, len, st);
	for (size_t i = 0; !rc && copy_from && i < sizeof copy_files / sizeof *copy_files; i++)
		rc = copy_file(d, copy_from, copy_files[i], st);
	if (!rc) {
		rc = qtk_outdir_commit(d->od, st);
		d->od = NULL; /* freed by the commit */
	}
	qtk_mlx_dir_abort(d);
	return rc;
}

void qtk_mlx_dir_abort(qtk_mlx_dir *d)
{
	if (!d)
		return;
	for (size_t k = 0; d->w && k < d->nshards; k++)
		qtk_st_writer_abort(d->w[k]);
	qtk_outdir_abort(d->od);
	for (size_t i = 0; i < d->n; i++)
		qtk_free((char *)(uintptr_t)d->e[i].d.name);
	qtk_free(d->e);
	qtk_free(d->w);
	qtk_free(d);
}
