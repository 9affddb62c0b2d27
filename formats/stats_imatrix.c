/* formats: llama.cpp's importance matrix files as activation statistics.
 * GGUF (llama-imatrix's default; tools/imatrix/imatrix.cpp): per weight
 * NAME, F32 NAME.in_sum2 [nmat][cols] (sum of x^2) and NAME.counts
 * [nmat][1] (vectors summed), KVs general.type = "imatrix",
 * imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size (llama-quantize
 * wants all three). Legacy .dat: i32 n_entries; per entry i32 name length,
 * name, i32 ncall, i32 nval, f32 values[nval] = mean(x^2) * ncall; then
 * optionally i32 chunk count, i32 length and the dataset's name. All
 * little-endian. qtk keeps one matrix per weight: per-expert (MoE) rows
 * are refused. */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fileio.h"
#include "stats_impl.h"

static const char sfx_sum2[] = ".in_sum2", sfx_counts[] = ".counts";

/* ggml's GGML_MAX_NAME: tensor names are at most 63 bytes */
#define GGML_NAME_MAX 63

static int ends_with(const char *s, const char *sfx, size_t *base)
{
	size_t a = strlen(s), b = strlen(sfx);

	if (a <= b || strcmp(s + a - b, sfx))
		return 0;
	*base = a - b;
	return 1;
}

/* ---- GGUF: reading ----------------------------------------------------- */

static qtk_err read_count(const char *path, const qtk_gguf_tensor *c, uint64_t *out,
                          qtk_status *st)
{
	float f;

	QTK_TRY(qtk_gguf_read_f32(c, 0, 1, &f, st));
	/* 2^53: beyond it a count is no longer a whole number of tokens (and
	 * past 2^64 would not convert) */
	if (!isfinite(f) || f < 0 || f != floorf(f) || f > 0x1p53f)
		return qtk_fail(st, QTK_E_FORMAT, "%s: '%s': count %g (must be a whole number from 0 "
		                "to 2^53)", path, c->name, (double)f);
	*out = (uint64_t)f;
	return QTK_OK;
}

static qtk_err read_pair(const char *path, const char *name, const qtk_gguf_tensor *s2,
                         const qtk_gguf_tensor *cn, qtk_stats *s, qtk_status *st)
{
	qtk_stats_entry *e;
	uint64_t count = 0;
	float *tmp;
	qtk_err rc;

	if (s2->n_dims > 2 || s2->rows != 1 || cn->nelem != 1)
		return qtk_fail(st, s2->rows > 1 && s2->n_dims == 2 && cn->nelem == s2->rows
		                    ? QTK_E_UNSUPPORTED : QTK_E_FORMAT,
		                "%s: '%s' has %" PRIu64 " rows and '%s' %" PRIu64 " counts (qtk reads "
		                "one [1][cols] matrix and one count per weight; per-expert statistics "
		                "are not supported)", path, s2->name, s2->rows, cn->name, cn->nelem);
	QTK_TRY(read_count(path, cn, &count, st));
	if (count == 0)
		return QTK_OK; /* no vector reached it: no statistics, as llama-quantize */
	QTK_TRY(stats_add_read(s, path, name, s2->cols, 0, &e, st));
	e->count = count;
	if (!(tmp = qtk_malloc(s2->cols * sizeof *tmp)))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	rc = qtk_gguf_read_f32(s2, 0, s2->cols, tmp, st);
	for (uint64_t j = 0; !rc && j < s2->cols; j++)
		e->sum2[j] = (double)tmp[j];
	qtk_free(tmp);
	return rc ? rc : stats_check_entry(e, path, st);
}

static qtk_err read_kvs(const char *path, qtk_gguf_file *g, qtk_stats *s, qtk_status *st)
{
	const qtk_gguf_kv *kv = qtk_gguf_kv_find(g, "imatrix.datasets");
	qtk_stats_info *in = qtk_stats_info_of(s);
	const char *str;
	uint64_t len, v;
	qtk_err rc;

	if (qtk_gguf_get_str(g, "general.type", &str, &len, NULL) == QTK_OK &&
	    !(len == 7 && !memcmp(str, "imatrix", 7)))
		return qtk_fail(st, QTK_E_FORMAT, "%s: general.type is '%.*s', not 'imatrix'", path,
		                (int)(len < 64 ? len : 64), str);
	if ((rc = qtk_gguf_get_uint(g, "imatrix.chunk_count", &in->chunks, st)) &&
	    rc != QTK_E_NOT_FOUND)
		return rc;
	if ((rc = qtk_gguf_get_uint(g, "imatrix.chunk_size", &v, st)) == QTK_OK)
		in->chunk_size = v <= UINT32_MAX ? (uint32_t)v : 0;
	else if (rc != QTK_E_NOT_FOUND)
		return rc;
	for (uint64_t i = 0; kv && i < kv->count; i++) {
		char buf[STATS_NAME_MAX + 1];
		if (qtk_gguf_arr_str(kv, i, &str, &len) != QTK_OK)
			return qtk_fail(st, QTK_E_FORMAT, "%s: imatrix.datasets is not an array of "
			                "strings", path);
		snprintf(buf, sizeof buf, "%.*s", (int)(len < STATS_NAME_MAX ? len : STATS_NAME_MAX),
		         str);
		QTK_TRY(qtk_stats_add_dataset(s, buf, st));
	}
	return QTK_OK;
}

static qtk_err read_gguf(const char *path, qtk_gguf_file *g, qtk_stats *s, qtk_status *st)
{
	char name[STATS_NAME_MAX + 16];
	size_t pairs = 0;

	QTK_TRY(read_kvs(path, g, s, st));
	for (size_t i = 0; i < qtk_gguf_count(g); i++) {
		const qtk_gguf_tensor *t = qtk_gguf_get(g, i), *o;
		int is_sum2;
		size_t base;

		if (ends_with(t->name, sfx_sum2, &base))
			is_sum2 = 1;
		else if (ends_with(t->name, sfx_counts, &base))
			is_sum2 = 0;
		else
			continue; /* not a statistic; llama.cpp ignores it too */
		if (base > STATS_NAME_MAX)
			return qtk_fail(st, QTK_E_FORMAT, "%s: tensor name '%.64s...' is too long", path,
			                t->name);
		memcpy(name, t->name, base);
		strcpy(name + base, is_sum2 ? sfx_counts : sfx_sum2);
		o = qtk_gguf_find(g, name);
		name[base] = 0;
		if (!o)
			return qtk_fail(st, QTK_E_FORMAT, "%s: imatrix: '%s' has no '%s%s' beside it",
			                path, t->name, name, is_sum2 ? sfx_counts : sfx_sum2);
		if (is_sum2) {
			pairs++;
			QTK_TRY(read_pair(path, name, t, o, s, st));
		}
	}
	if (!pairs)
		return qtk_fail(st, QTK_E_FORMAT, "%s: a GGUF file without imatrix statistics (no "
		                "NAME.in_sum2 tensors)", path);
	return QTK_OK;
}

qtk_err stats_read_imatrix(const uint8_t *data, size_t size, const char *path, qtk_stats *s,
                           qtk_status *st)
{
	qtk_gguf_file *g;
	qtk_err rc;

	QTK_TRY(qtk_gguf_open_mem(data, size, path, &g, st));
	rc = read_gguf(path, g, s, st);
	qtk_gguf_close(g);
	return rc;
}

/* ---- GGUF: writing ----------------------------------------------------- */

/* x as F32: a finite value F32 cannot hold (too large, or too small and
 * not zero) is an error, never Inf or 0. */
static qtk_err to_f32(const char *path, const qtk_stats_entry *e, uint64_t j, double x,
                      float *out, qtk_status *st)
{
	*out = (float)x;
	if (!isfinite(*out) || (*out == 0 && x != 0))
		return qtk_fail(st, QTK_E_Q_VALUE_RANGE, "%s: weight '%s': the sum of squares %g of "
		                "channel %" PRIu64 " does not fit F32", path, e->name, x, j);
	return QTK_OK;
}

static qtk_err imatrix_kvs(const qtk_stats *s, const char *path, qtk_gguf_kvs **out,
                           qtk_status *st)
{
	const qtk_stats_info *in = stats_info(s);
	size_t nd = qtk_stats_dataset_count(s);
	const char *none = "";
	const char **ds = qtk_calloc(nd ? nd : 1, sizeof *ds);
	qtk_gguf_kvs *k = qtk_gguf_kvs_new();
	qtk_err rc;

	*out = NULL;
	if (!ds || !k) {
		qtk_free((void *)ds);
		qtk_gguf_kvs_free(k);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	for (size_t i = 0; i < nd; i++)
		ds[i] = qtk_stats_dataset(s, i);
	if (!nd)
		ds[0] = none; /* llama-quantize wants the key; it holds the names */
	if (in->chunks > UINT32_MAX)
		rc = qtk_fail(st, QTK_E_OVERFLOW, "%s: %" PRIu64 " chunks do not fit "
		              "imatrix.chunk_count (u32)", path, in->chunks);
	else if (!(rc = qtk_gguf_kvs_add_str(k, "general.type", "imatrix", 7, st)) &&
	         !(rc = qtk_gguf_kvs_add_arr_str(k, "imatrix.datasets", ds, NULL, nd ? nd : 1, st)) &&
	         !(rc = qtk_gguf_kvs_add_u32(k, "imatrix.chunk_count", (uint32_t)in->chunks, st)))
		rc = qtk_gguf_kvs_add_u32(k, "imatrix.chunk_size", in->chunk_size, st);
	qtk_free((void *)ds);
	if (rc)
		qtk_gguf_kvs_free(k);
	else
		*out = k;
	return rc;
}

static qtk_err put_entry(qtk_gguf_writer *w, size_t i, const qtk_stats_entry *e,
                         const char *path, float *tmp, qtk_status *st)
{
	float c = (float)e->count;

	for (uint64_t j = 0; j < e->cols; j++)
		QTK_TRY(to_f32(path, e, j, e->sum2[j], &tmp[j], st));
	QTK_TRY(qtk_gguf_writer_put(w, 2 * i, 0, tmp, e->cols * sizeof *tmp, st));
	return qtk_gguf_writer_put(w, 2 * i + 1, 0, &c, sizeof c, st);
}

qtk_err stats_write_imatrix(const qtk_stats *s, const char *path, const qtk_write_opts *opts,
                            qtk_status *st)
{
	size_t n = qtk_stats_count(s);
	qtk_gguf_desc *d = qtk_calloc(2 * n, sizeof *d);
	char (*names)[GGML_NAME_MAX + 1] = qtk_calloc(2 * n, sizeof *names);
	qtk_gguf_kvs *k = NULL;
	qtk_gguf_writer *w = NULL;
	uint64_t maxc = 1;
	float *tmp = NULL;
	qtk_err rc = QTK_OK;

	if (!d || !names) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
		goto out;
	}
	for (size_t i = 0; !rc && i < n; i++) {
		const qtk_stats_entry *e = qtk_stats_get(s, i);
		if (strlen(e->key) + sizeof sfx_sum2 - 1 > GGML_NAME_MAX) {
			rc = qtk_fail(st, QTK_E_ARG, "%s: weight '%s': '%s%s' is longer than the %d bytes "
			              "ggml reads", path, e->name, e->key, sfx_sum2, GGML_NAME_MAX);
			break;
		}
		snprintf(names[2 * i], sizeof names[0], "%s%s", e->key, sfx_sum2);
		snprintf(names[2 * i + 1], sizeof names[0], "%s%s", e->key, sfx_counts);
		d[2 * i] = (qtk_gguf_desc){ names[2 * i], QTK_GGML_F32, 2, { e->cols, 1, 1, 1 } };
		d[2 * i + 1] = (qtk_gguf_desc){ names[2 * i + 1], QTK_GGML_F32, 2, { 1, 1, 1, 1 } };
		maxc = e->cols > maxc ? e->cols : maxc;
	}
	if (!rc && !(tmp = qtk_malloc(maxc * sizeof *tmp)))
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	if (!rc)
		rc = imatrix_kvs(s, path, &k, st);
	if (!rc)
		rc = qtk_gguf_writer_open(&w, path, k, d, 2 * n, opts, st);
	for (size_t i = 0; !rc && i < n; i++)
		rc = put_entry(w, i, qtk_stats_get(s, i), path, tmp, st);
	if (w)
		rc = rc ? (qtk_gguf_writer_abort(w), rc) : qtk_gguf_writer_commit(w, st);
out:
	qtk_gguf_kvs_free(k);
	qtk_free(tmp);
	qtk_free(d);
	qtk_free(names);
	return rc;
}

/* ---- legacy .dat: reading ---------------------------------------------- */

typedef struct {
	const uint8_t *p;
	uint64_t left;
	const char *path;
} cursor;

static qtk_err get_i32(cursor *c, const char *what, int32_t *v, qtk_status *st)
{
	if (c->left < 4)
		return qtk_fail(st, QTK_E_FORMAT, "%s: not a statistics file qtk reads (as a legacy "
		                "imatrix .dat: truncated at %s)", c->path, what);
	memcpy(v, c->p, 4);
	c->p += 4;
	c->left -= 4;
	return QTK_OK;
}

static qtk_err dat_entry(cursor *c, int32_t idx, qtk_stats *s, qtk_status *st)
{
	char name[STATS_NAME_MAX + 1];
	qtk_stats_entry *e;
	int32_t len = 0, ncall = 0, nval = 0;

	QTK_TRY(get_i32(c, "a name length", &len, st));
	if (len < 1 || len > STATS_NAME_MAX || (uint64_t)len > c->left ||
	    memchr(c->p, 0, (size_t)len))
		return qtk_fail(st, QTK_E_FORMAT, "%s: not a statistics file qtk reads (as a legacy "
		                "imatrix .dat: entry %d has a name of %d bytes, %" PRIu64 " left)",
		                c->path, idx, len, c->left);
	memcpy(name, c->p, (size_t)len);
	name[len] = 0;
	c->p += len;
	c->left -= (uint64_t)len;
	QTK_TRY(get_i32(c, "a call count", &ncall, st));
	QTK_TRY(get_i32(c, "a value count", &nval, st));
	if (ncall < 1 || nval < 1 || (uint64_t)nval * 4 > c->left)
		return qtk_fail(st, QTK_E_FORMAT, "%s: weight '%s': %d calls, %d values, %" PRIu64
		                " bytes left (calls >= 1, values >= 1 and in the file)", c->path,
		                name, ncall, nval, c->left);
	QTK_TRY(stats_add_read(s, c->path, name, (uint64_t)nval, 0, &e, st));
	e->count = (uint64_t)ncall;
	for (int32_t j = 0; j < nval; j++) {
		float f;
		memcpy(&f, c->p + 4 * (size_t)j, 4);
		e->sum2[j] = (double)f;
	}
	c->p += 4 * (uint64_t)nval;
	c->left -= 4 * (uint64_t)nval;
	return stats_check_entry(e, c->path, st);
}

static qtk_err dat_trailer(cursor *c, qtk_stats *s, qtk_status *st)
{
	char ds[STATS_NAME_MAX + 1];
	int32_t chunks = 0, len = 0;

	if (!c->left)
		return QTK_OK; /* the trailer is optional */
	QTK_TRY(get_i32(c, "the chunk count", &chunks, st));
	if (chunks < 0)
		return qtk_fail(st, QTK_E_FORMAT, "%s: chunk count %d", c->path, chunks);
	qtk_stats_info_of(s)->chunks = (uint64_t)chunks;
	if (!c->left)
		return QTK_OK;
	QTK_TRY(get_i32(c, "the dataset name's length", &len, st));
	if (len < 0 || len > STATS_NAME_MAX || (uint64_t)len != c->left ||
	    memchr(c->p, 0, (size_t)len))
		return qtk_fail(st, QTK_E_FORMAT, "%s: dataset name of %d bytes with %" PRIu64
		                " bytes left", c->path, len, c->left);
	if (!len)
		return QTK_OK;
	memcpy(ds, c->p, (size_t)len);
	ds[len] = 0;
	return qtk_stats_add_dataset(s, ds, st);
}

qtk_err stats_read_dat(const uint8_t *data, size_t size, const char *path, qtk_stats *s,
                       qtk_status *st)
{
	cursor c = { data, size, path };
	int32_t n = 0;

	QTK_TRY(get_i32(&c, "the entry count", &n, st));
	if (n < 1 || (uint64_t)n > c.left / 16)
		return qtk_fail(st, QTK_E_FORMAT, "%s: not a statistics file qtk reads (as a legacy "
		                "imatrix .dat: %d entries in %zu bytes)", path, n, size);
	for (int32_t i = 0; i < n; i++)
		QTK_TRY(dat_entry(&c, i, s, st));
	QTK_TRY(dat_trailer(&c, s, st));
	qtk_stats_info_of(s)->counts_chunks = 1;
	return QTK_OK;
}

/* ---- legacy .dat: writing ---------------------------------------------- */

static void put_i32(uint8_t **p, int32_t v)
{
	memcpy(*p, &v, 4);
	*p += 4;
}

/* The chunks (ncall) an entry's count stands for: the count itself when
 * it counts chunks, else tokens / chunk size rounded up, as llama-imatrix. */
static uint64_t ncall_of(const qtk_stats_entry *e, const qtk_stats_info *in)
{
	if (in->counts_chunks)
		return e->count;
	if (!in->chunk_size)
		return 1;
	return e->count / in->chunk_size + (e->count % in->chunk_size != 0);
}

/* Bytes of the whole file, or 0 (with st) when something does not fit i32. */
static uint64_t dat_size(const qtk_stats *s, const char *path, qtk_status *st)
{
	const qtk_stats_info *in = stats_info(s);
	const char *ds = qtk_stats_dataset_count(s)
	                 ? qtk_stats_dataset(s, qtk_stats_dataset_count(s) - 1) : "";
	uint64_t bytes = 4 + 8 + strlen(ds);

	if (qtk_stats_count(s) > INT32_MAX || in->chunks > INT32_MAX)
		return qtk_fail(st, QTK_E_OVERFLOW, "%s: too many entries or chunks for a .dat", path),
		       0;
	for (size_t i = 0; i < qtk_stats_count(s); i++) {
		const qtk_stats_entry *e = qtk_stats_get(s, i);
		if (e->cols > INT32_MAX || ncall_of(e, in) > INT32_MAX)
			return qtk_fail(st, QTK_E_OVERFLOW, "%s: weight '%s': %" PRIu64 " channels, %"
			                PRIu64 " chunks do not fit a .dat (i32)", path, e->name, e->cols,
			                ncall_of(e, in)), 0;
		bytes += 12 + strlen(e->key) + 4 * e->cols;
	}
	return bytes;
}

static qtk_err dat_fill(const qtk_stats *s, const char *path, uint8_t *p, qtk_status *st)
{
	const qtk_stats_info *in = stats_info(s);
	const char *ds = qtk_stats_dataset_count(s)
	                 ? qtk_stats_dataset(s, qtk_stats_dataset_count(s) - 1) : "";

	put_i32(&p, (int32_t)qtk_stats_count(s));
	for (size_t i = 0; i < qtk_stats_count(s); i++) {
		const qtk_stats_entry *e = qtk_stats_get(s, i);
		uint64_t ncall = ncall_of(e, in);
		put_i32(&p, (int32_t)strlen(e->key));
		memcpy(p, e->key, strlen(e->key));
		p += strlen(e->key);
		put_i32(&p, (int32_t)ncall);
		put_i32(&p, (int32_t)e->cols);
		for (uint64_t j = 0; j < e->cols; j++) {
			float f;
			QTK_TRY(to_f32(path, e, j, e->sum2[j] / (double)e->count * (double)ncall, &f, st));
			memcpy(p, &f, 4);
			p += 4;
		}
	}
	put_i32(&p, (int32_t)in->chunks);
	put_i32(&p, (int32_t)strlen(ds));
	memcpy(p, ds, strlen(ds));
	return QTK_OK;
}

qtk_err stats_write_dat(const qtk_stats *s, const char *path, const qtk_write_opts *opts,
                        qtk_status *st)
{
	uint64_t size = dat_size(s, path, st);
	qtk_outfile o;
	uint8_t *buf;
	qtk_err rc;

	if (!size)
		return st ? st->code : QTK_E_OVERFLOW;
	if (size > SIZE_MAX || !(buf = qtk_malloc((size_t)size)))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory for %" PRIu64 " bytes", path, size);
	rc = dat_fill(s, path, buf, st);
	if (!rc && !(rc = qtk_out_open(&o, path, opts, st))) {
		rc = qtk_out_pwrite(&o, buf, (size_t)size, 0, st);
		if (!rc)
			rc = qtk_out_commit(&o, st);
		qtk_out_abort(&o);
	}
	qtk_free(buf);
	return rc;
}
