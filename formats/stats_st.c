/* formats: qtk's activation statistics file — a safetensors file with, per
 * weight NAME, the tensors NAME.count (I64 [1], tokens), NAME.sum2 (F64
 * [cols], sum x^2), optionally NAME.sum (F64 [cols], sum x) and NAME.xtx
 * (F64 [cols][cols], X^T X, full and symmetric), and __metadata__
 * "qtk.stats" = "1" with the chunk count, chunk size and datasets
 * (docs/calibration.md). F32 sums are read too (PyTorch hooks). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_private.h"
#include "stats_impl.h"

enum { SX_SUM2, SX_SUM, SX_COUNT, SX_XTX, SX_N };
static const char *const sfx[SX_N] = { ".sum2", ".sum", ".count", ".xtx" };

static int suffix_of(const char *name, size_t *base)
{
	size_t n = strlen(name);

	for (int i = 0; i < SX_N; i++) {
		size_t l = strlen(sfx[i]);
		if (n > l && !strcmp(name + n - l, sfx[i])) {
			*base = n - l;
			return i;
		}
	}
	return -1;
}

/* base + suffix i into buf (base is at most STATS_NAME_MAX bytes). */
static const char *sname(char *buf, const char *base, size_t blen, int i)
{
	memcpy(buf, base, blen);
	strcpy(buf + blen, sfx[i]);
	return buf;
}

/* ---- reading ----------------------------------------------------------- */

/* n floats of t (F32 or F64, shape checked by the caller) as doubles. */
static qtk_err read_doubles(const char *path, const qtk_st_tensor *t, double *dst,
                            qtk_status *st)
{
	if (t->dtype == QTK_DT_F64) {
		memcpy(dst, t->data, t->nelem * sizeof *dst);
		return QTK_OK;
	}
	if (t->dtype == QTK_DT_F32) {
		const unsigned char *p = t->data;
		for (uint64_t i = 0; i < t->nelem; i++) {
			float f;
			memcpy(&f, p + 4 * i, 4);
			dst[i] = (double)f;
		}
		return QTK_OK;
	}
	return qtk_fail(st, QTK_E_FORMAT, "%s: tensor '%s' is %s (F64 or F32 expected)", path,
	                t->name, qtk_dtype_name(t->dtype));
}

static qtk_err read_count(const char *path, const qtk_st_tensor *t, uint64_t *count,
                          qtk_status *st)
{
	int64_t v;

	if ((t->dtype != QTK_DT_I64 && t->dtype != QTK_DT_U64) || t->nelem != 1 || t->ndim > 1)
		return qtk_fail(st, QTK_E_FORMAT, "%s: tensor '%s' must be I64 [1] (the token count), "
		                "not %s with %" PRIu64 " elements", path, t->name,
		                qtk_dtype_name(t->dtype), t->nelem);
	memcpy(&v, t->data, 8);
	if (t->dtype == QTK_DT_I64 ? v <= 0 : v == 0)
		return qtk_fail(st, QTK_E_FORMAT, "%s: tensor '%s': token count %" PRId64
		                " (must be >= 1)", path, t->name, v);
	*count = (uint64_t)v;
	return QTK_OK;
}

static qtk_err check_shape(const char *path, const qtk_st_tensor *t, uint32_t ndim,
                           uint64_t cols, qtk_status *st)
{
	int ok = t->ndim == ndim && t->shape[0] == cols && (ndim == 1 || t->shape[1] == cols);

	return ok ? QTK_OK
	       : qtk_fail(st, QTK_E_FORMAT, "%s: tensor '%s' must be [%" PRIu64 "]%s (as the "
	                  "sum of squares), has %u dims [%" PRIu64 "...]", path, t->name, cols,
	                  ndim == 2 ? "[cols]" : "", t->ndim, t->ndim ? t->shape[0] : 0);
}

/* The entry of the weight whose sum of squares is t. */
static qtk_err read_entry(const char *path, qtk_st_file *f, const qtk_st_tensor *t,
                          size_t blen, qtk_stats *s, qtk_status *st)
{
	char base[STATS_NAME_MAX + 1], buf[STATS_NAME_MAX + 16];
	const qtk_st_tensor *cnt, *sum, *xtx;
	qtk_stats_entry *e;
	uint64_t cols;

	if (blen == 0 || blen > STATS_NAME_MAX)
		return qtk_fail(st, QTK_E_FORMAT, "%s: tensor '%.64s': weight name of %zu bytes "
		                "(1 to %d)", path, t->name, blen, STATS_NAME_MAX);
	memcpy(base, t->name, blen);
	base[blen] = 0;
	if (t->ndim != 1 || t->shape[0] == 0)
		return qtk_fail(st, QTK_E_FORMAT, "%s: tensor '%s' must be [cols], cols >= 1", path,
		                t->name);
	cols = t->shape[0];
	cnt = qtk_st_find(f, sname(buf, base, blen, SX_COUNT));
	if (!cnt)
		return qtk_fail(st, QTK_E_FORMAT, "%s: weight '%s' has no '%s' (its token count)",
		                path, base, buf);
	sum = qtk_st_find(f, sname(buf, base, blen, SX_SUM));
	xtx = qtk_st_find(f, sname(buf, base, blen, SX_XTX));
	if (sum)
		QTK_TRY(check_shape(path, sum, 1, cols, st));
	if (xtx)
		QTK_TRY(check_shape(path, xtx, 2, cols, st));
	QTK_TRY(stats_add_read(s, path, base, cols,
	                       (sum ? QTK_STATS_SUM : 0) | (xtx ? QTK_STATS_XTX : 0), &e, st));
	QTK_TRY(read_count(path, cnt, &e->count, st));
	QTK_TRY(read_doubles(path, t, e->sum2, st));
	if (sum)
		QTK_TRY(read_doubles(path, sum, e->sum, st));
	if (xtx)
		QTK_TRY(read_doubles(path, xtx, e->xtx, st));
	return stats_check_entry(e, path, st);
}

static qtk_err read_meta(const char *path, qtk_st_file *f, qtk_stats *s, qtk_status *st)
{
	qtk_stats_info *in = qtk_stats_info_of(s);
	const char *v = qtk_st_meta_get(f, "qtk.stats");
	uint64_t x;
	char key[64];

	if (v && strcmp(v, "1"))
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: statistics format version '%s' (this qtk "
		                "reads 1)", path, v);
	if ((v = qtk_st_meta_get(f, "qtk.stats.chunks"))) {
		QTK_TRY(qtk_parse_u64("qtk.stats.chunks", v, 0, UINT64_MAX, &in->chunks, st));
	}
	if ((v = qtk_st_meta_get(f, "qtk.stats.chunk_size"))) {
		QTK_TRY(qtk_parse_u64("qtk.stats.chunk_size", v, 0, UINT32_MAX, &x, st));
		in->chunk_size = (uint32_t)x;
	}
	if ((v = qtk_st_meta_get(f, "qtk.stats.counts")) && strcmp(v, "tokens")) {
		if (strcmp(v, "chunks"))
			return qtk_fail(st, QTK_E_FORMAT, "%s: qtk.stats.counts is '%s' (tokens or "
			                "chunks)", path, v);
		in->counts_chunks = 1;
	}
	for (unsigned i = 0;; i++) {
		snprintf(key, sizeof key, "qtk.stats.dataset.%u", i);
		if (!(v = qtk_st_meta_get(f, key)))
			break;
		QTK_TRY(qtk_stats_add_dataset(s, v, st));
	}
	return QTK_OK;
}

static qtk_err read_all(const char *path, qtk_st_file *f, qtk_stats *s, qtk_status *st)
{
	char buf[STATS_NAME_MAX + 16];
	size_t blen;

	QTK_TRY(read_meta(path, f, s, st));
	for (size_t i = 0; i < qtk_st_count(f); i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i);
		if (suffix_of(t->name, &blen) == SX_SUM2)
			QTK_TRY(read_entry(path, f, t, blen, s, st));
	}
	/* every other tensor belongs to one of those weights */
	for (size_t i = 0; i < qtk_st_count(f); i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i);
		int k = suffix_of(t->name, &blen);
		if (k < 0)
			return qtk_fail(st, QTK_E_FORMAT, "%s: tensor '%s' is not a statistic (NAME.sum2, "
			                ".sum, .count or .xtx)", path, t->name);
		if (blen > STATS_NAME_MAX || !qtk_st_find(f, sname(buf, t->name, blen, SX_SUM2)))
			return qtk_fail(st, QTK_E_FORMAT, "%s: tensor '%s' has no '%.*s.sum2' beside it",
			                path, t->name, (int)(blen > 200 ? 200 : blen), t->name);
	}
	return QTK_OK;
}

qtk_err stats_read_st(const uint8_t *data, size_t size, const char *path, qtk_stats *s,
                      qtk_status *st)
{
	qtk_st_file *f;
	qtk_err rc;

	QTK_TRY(qtk_st_open_mem(data, size, path, &f, st));
	rc = read_all(path, f, s, st);
	qtk_st_close(f);
	return rc;
}

/* ---- writing ----------------------------------------------------------- */

/* Meta pairs: format, counts, chunks, chunk size, datasets, NULL. The
 * numbers are printed into num, the dataset keys into *keys (freed by the
 * caller with the array). */
static const char **make_meta(const qtk_stats *s, const qtk_stats_info *in, char (*num)[24],
                              char **keys)
{
	size_t nd = qtk_stats_dataset_count(s), k = 0;
	const char **m = qtk_calloc(2 * (4 + nd) + 1, sizeof *m);

	*keys = qtk_malloc(nd * 48 + 1);
	if (!m || !*keys) {
		qtk_free((void *)m);
		return NULL;
	}
	snprintf(num[0], 24, "%" PRIu64, in->chunks);
	snprintf(num[1], 24, "%" PRIu32, in->chunk_size);
	m[k++] = "qtk.stats";            m[k++] = "1";
	m[k++] = "qtk.stats.counts";     m[k++] = in->counts_chunks ? "chunks" : "tokens";
	m[k++] = "qtk.stats.chunks";     m[k++] = num[0];
	m[k++] = "qtk.stats.chunk_size"; m[k++] = num[1];
	for (size_t i = 0; i < nd; i++) {
		snprintf(*keys + 48 * i, 48, "qtk.stats.dataset.%zu", i);
		m[k++] = *keys + 48 * i;
		m[k++] = qtk_stats_dataset(s, i);
	}
	m[k] = NULL;
	return m;
}

qtk_err stats_write_st(const qtk_stats *s, const char *path, const qtk_write_opts *opts,
                       qtk_status *st)
{
	size_t n = qtk_stats_count(s), nt = 0;
	qtk_st_desc *d = qtk_calloc(4 * n, sizeof *d);
	const void **data = qtk_calloc(4 * n, sizeof *data);
	char (*names)[STATS_NAME_MAX + 16] = qtk_calloc(4 * n, sizeof *names);
	int64_t *counts = qtk_calloc(n, sizeof *counts);
	char num[2][24];
	const char **meta = NULL;
	char *keys = NULL;
	qtk_err rc;

	if (!d || !data || !names || !counts ||
	    !(meta = make_meta(s, stats_info(s), num, &keys))) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const qtk_stats_entry *e = qtk_stats_get(s, i);
		size_t bl = strlen(e->name);
		const double *v[SX_N] = { e->sum2, e->sum, NULL, e->xtx };
		if (e->count > INT64_MAX) {
			rc = qtk_fail(st, QTK_E_OVERFLOW, "%s: weight '%s': token count too large", path,
			              e->name);
			goto out;
		}
		counts[i] = (int64_t)e->count;
		for (int k = 0; k < SX_N; k++) {
			if (k != SX_COUNT && !v[k])
				continue;
			d[nt].name = sname(names[nt], e->name, bl, k);
			d[nt].dtype = k == SX_COUNT ? QTK_DT_I64 : QTK_DT_F64;
			d[nt].ndim = k == SX_XTX ? 2 : 1;
			d[nt].shape[0] = k == SX_COUNT ? 1 : e->cols;
			d[nt].shape[1] = e->cols;
			data[nt] = k == SX_COUNT ? (const void *)&counts[i] : (const void *)v[k];
			nt++;
		}
	}
	rc = qtk_st_write(path, d, data, nt, meta, opts, st);
out:
	qtk_free((void *)meta);
	qtk_free(keys);
	qtk_free(d);
	qtk_free((void *)data);
	qtk_free(names);
	qtk_free(counts);
	return rc;
}
