/* formats: activation statistics per linear weight — the container
 * (entries kept sorted by their GGUF-spelled key, so a weight is found
 * under either spelling), merging, value checks, and opening or writing a
 * file of any supported kind. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "fileio.h"
#include "stats_impl.h"

struct qtk_stats {
	qtk_stats_entry **e;   /* [n], sorted by key */
	size_t n, cap;
	char **datasets;       /* [ndatasets] */
	size_t ndatasets;
	qtk_stats_info info;
};

qtk_err qtk_stats_new(qtk_stats **out, qtk_status *st)
{
	*out = qtk_calloc(1, sizeof **out);
	return *out ? QTK_OK : qtk_fail(st, QTK_E_NOMEM, "statistics: out of memory");
}

static void entry_free(qtk_stats_entry *e)
{
	if (!e)
		return;
	qtk_free(e->name);
	qtk_free(e->key);
	qtk_free(e->sum2);
	qtk_free(e->sum);
	qtk_free(e->xtx);
	qtk_free(e);
}

void qtk_stats_free(qtk_stats *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		entry_free(s->e[i]);
	for (size_t i = 0; i < s->ndatasets; i++)
		qtk_free(s->datasets[i]);
	qtk_free(s->datasets);
	qtk_free(s->e);
	qtk_free(s);
}

size_t qtk_stats_count(const qtk_stats *s)
{
	return s ? s->n : 0;
}

qtk_stats_entry *qtk_stats_get(const qtk_stats *s, size_t i)
{
	return s && i < s->n ? s->e[i] : NULL;
}

qtk_stats_info *qtk_stats_info_of(qtk_stats *s)
{
	return &s->info;
}

const qtk_stats_info *stats_info(const qtk_stats *s)
{
	return &s->info;
}

/* The GGUF spelling of name into buf (a LLaMA HF name mapped, others as
 * they are). */
static void key_of(const char *name, char *buf, size_t n)
{
	int qk;

	if (qtk_gguf_llama_name(name, buf, n, &qk) != QTK_OK)
		snprintf(buf, n, "%s", name);
}

/* Index of key in s, or where it would go (*found 0). */
static size_t lookup(const qtk_stats *s, const char *key, int *found)
{
	size_t lo = 0, hi = s->n;

	*found = 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s->e[mid]->key, key);
		if (!c) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

qtk_stats_entry *qtk_stats_find(const qtk_stats *s, const char *name)
{
	char key[STATS_NAME_MAX + 64];
	int found;
	size_t i;

	if (!s || !name)
		return NULL;
	key_of(name, key, sizeof key);
	i = lookup(s, key, &found);
	return found ? s->e[i] : NULL;
}

static double *zeros(uint64_t n)
{
	if (n > SIZE_MAX / sizeof(double))
		return NULL;
	return qtk_calloc((size_t)n ? (size_t)n : 1, sizeof(double));
}

qtk_err qtk_stats_add(qtk_stats *s, const char *name, uint64_t cols, unsigned flags,
                      qtk_stats_entry **out, qtk_status *st)
{
	char key[STATS_NAME_MAX + 64];
	qtk_stats_entry *e;
	uint64_t sq;
	size_t at;
	int found;

	*out = NULL;
	if (!*name || strlen(name) > STATS_NAME_MAX)
		return qtk_fail(st, QTK_E_ARG, "statistics: weight name of %zu bytes (1 to %d)",
		                strlen(name), STATS_NAME_MAX);
	if (cols == 0 || __builtin_mul_overflow(cols, cols, &sq) || sq > SIZE_MAX / sizeof(double))
		return qtk_fail(st, QTK_E_ARG, "statistics: weight '%s': %llu channels", name,
		                (unsigned long long)cols);
	key_of(name, key, sizeof key);
	at = lookup(s, key, &found);
	if (found)
		return qtk_fail(st, QTK_E_ARG, "statistics: weight '%s' is there twice (as '%s')",
		                name, s->e[at]->name);
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		qtk_stats_entry **ne = qtk_realloc(s->e, cap * sizeof *ne);
		if (!ne)
			return qtk_fail(st, QTK_E_NOMEM, "statistics: out of memory");
		s->e = ne;
		s->cap = cap;
	}
	e = qtk_calloc(1, sizeof *e);
	if (!e || !(e->name = qtk_strdup(name)) || !(e->key = qtk_strdup(key)) ||
	    !(e->sum2 = zeros(cols)) || ((flags & QTK_STATS_SUM) && !(e->sum = zeros(cols))) ||
	    ((flags & QTK_STATS_XTX) && !(e->xtx = zeros(sq)))) {
		entry_free(e);
		return qtk_fail(st, QTK_E_NOMEM, "statistics: weight '%s': out of memory for %llu "
		                "channels", name, (unsigned long long)cols);
	}
	e->cols = cols;
	memmove(s->e + at + 1, s->e + at, (s->n - at) * sizeof *s->e);
	s->e[at] = e;
	s->n++;
	*out = e;
	return QTK_OK;
}

qtk_err stats_add_read(qtk_stats *s, const char *path, const char *name, uint64_t cols,
                       unsigned flags, qtk_stats_entry **e, qtk_status *st)
{
	qtk_err rc = qtk_stats_add(s, name, cols, flags, e, st);

	if (rc == QTK_E_ARG) {
		qtk_status_prefix(st, path);
		rc = QTK_E_FORMAT;
		if (st)
			st->code = rc;
	}
	return rc;
}

qtk_err qtk_stats_add_dataset(qtk_stats *s, const char *name, qtk_status *st)
{
	char **nd = qtk_realloc(s->datasets, (s->ndatasets + 1) * sizeof *nd);

	if (!nd)
		return qtk_fail(st, QTK_E_NOMEM, "statistics: out of memory");
	s->datasets = nd;
	if (!(nd[s->ndatasets] = qtk_strdup(name)))
		return qtk_fail(st, QTK_E_NOMEM, "statistics: out of memory");
	s->ndatasets++;
	return QTK_OK;
}

size_t qtk_stats_dataset_count(const qtk_stats *s)
{
	return s ? s->ndatasets : 0;
}

const char *qtk_stats_dataset(const qtk_stats *s, size_t i)
{
	return s && i < s->ndatasets ? s->datasets[i] : NULL;
}

/* ---- checks ------------------------------------------------------------ */

static qtk_err bad(const qtk_stats_entry *e, const char *what, const char *field, uint64_t j,
                   double v, const char *rule, qtk_status *st)
{
	return qtk_fail(st, QTK_E_FORMAT, "%s: weight '%s': %s of channel %llu is %g (%s)", what,
	                e->name, field, (unsigned long long)j, v, rule);
}

/* X^T X: finite, symmetric, its diagonal the sums of squares (both are
 * sums of the same products, in different orders: agree to 1e-3). */
static qtk_err check_xtx(const qtk_stats_entry *e, const char *what, qtk_status *st)
{
	uint64_t n = e->cols;

	for (uint64_t i = 0; i < n; i++) {
		double d = e->xtx[i * n + i], s2 = e->sum2[i];
		if (!(fabs(d - s2) <= 1e-3 * fmax(fabs(d), fabs(s2)) + 1e-30))
			return qtk_fail(st, QTK_E_FORMAT, "%s: weight '%s': X^T X[%llu][%llu] = %g but "
			                "the sum of squares of channel %llu is %g", what, e->name,
			                (unsigned long long)i, (unsigned long long)i, d,
			                (unsigned long long)i, s2);
		for (uint64_t j = i + 1; j < n; j++) {
			double a = e->xtx[i * n + j], b = e->xtx[j * n + i];
			if (!isfinite(a) || a != b)
				return qtk_fail(st, QTK_E_FORMAT, "%s: weight '%s': X^T X[%llu][%llu] = %g "
				                "and [%llu][%llu] = %g (must be finite and symmetric)",
				                what, e->name, (unsigned long long)i, (unsigned long long)j,
				                a, (unsigned long long)j, (unsigned long long)i, b);
		}
	}
	return QTK_OK;
}

qtk_err stats_check_entry(const qtk_stats_entry *e, const char *what, qtk_status *st)
{
	if (e->count == 0)
		return qtk_fail(st, QTK_E_FORMAT, "%s: weight '%s': token count 0", what, e->name);
	for (uint64_t j = 0; j < e->cols; j++) {
		if (!isfinite(e->sum2[j]) || e->sum2[j] < 0)
			return bad(e, what, "the sum of squares", j, e->sum2[j],
			           "must be finite and not negative", st);
		if (e->sum && !isfinite(e->sum[j]))
			return bad(e, what, "the sum", j, e->sum[j], "must be finite", st);
		/* |sum x| <= sqrt(count * sum x^2) (Cauchy-Schwarz), with room
		 * for rounding */
		if (e->sum && fabs(e->sum[j]) > 1.001 * sqrt((double)e->count * e->sum2[j]) + 1e-30)
			return bad(e, what, "the sum", j, e->sum[j],
			           "larger than the sum of squares allows", st);
	}
	return e->xtx ? check_xtx(e, what, st) : QTK_OK;
}

/* ---- merging ----------------------------------------------------------- */

static void add_into(double *d, const double *s, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		d[i] += s[i];
}

static qtk_err merge_one(qtk_stats *dst, const qtk_stats_entry *se, qtk_status *st)
{
	qtk_stats_entry *de = qtk_stats_find(dst, se->key);
	unsigned flags = (se->sum ? QTK_STATS_SUM : 0) | (se->xtx ? QTK_STATS_XTX : 0);

	if (!de) {
		QTK_TRY(qtk_stats_add(dst, se->name, se->cols, flags, &de, st));
		de->count = se->count;
		memcpy(de->sum2, se->sum2, se->cols * sizeof(double));
		if (se->sum)
			memcpy(de->sum, se->sum, se->cols * sizeof(double));
		if (se->xtx)
			memcpy(de->xtx, se->xtx, se->cols * se->cols * sizeof(double));
		return QTK_OK;
	}
	if (de->cols != se->cols)
		return qtk_fail(st, QTK_E_ARG, "statistics: weight '%s' has %llu channels in one set "
		                "and %llu in the other", se->name, (unsigned long long)de->cols,
		                (unsigned long long)se->cols);
	if (__builtin_add_overflow(de->count, se->count, &de->count))
		return qtk_fail(st, QTK_E_OVERFLOW, "statistics: weight '%s': token count overflows",
		                se->name);
	add_into(de->sum2, se->sum2, se->cols);
	if (de->sum && se->sum)
		add_into(de->sum, se->sum, se->cols);
	else {
		qtk_free(de->sum);
		de->sum = NULL;
	}
	if (de->xtx && se->xtx)
		add_into(de->xtx, se->xtx, se->cols * se->cols);
	else {
		qtk_free(de->xtx);
		de->xtx = NULL;
	}
	return QTK_OK;
}

qtk_err qtk_stats_merge(qtk_stats *dst, const qtk_stats *src, qtk_status *st)
{
	if (dst->n && src->n && dst->info.counts_chunks != src->info.counts_chunks)
		return qtk_fail(st, QTK_E_ARG, "statistics: a legacy .dat counts chunks, not tokens: "
		                "it cannot be weighted against token counts (merge .dat files "
		                "only with each other)");
	if (!dst->n)
		dst->info.counts_chunks = src->info.counts_chunks;
	for (size_t i = 0; i < src->n; i++)
		QTK_TRY(merge_one(dst, src->e[i], st));
	for (size_t i = 0; i < src->ndatasets; i++)
		QTK_TRY(qtk_stats_add_dataset(dst, src->datasets[i], st));
	if (__builtin_add_overflow(dst->info.chunks, src->info.chunks, &dst->info.chunks))
		return qtk_fail(st, QTK_E_OVERFLOW, "statistics: chunk count overflows");
	if (!dst->info.chunk_size)
		dst->info.chunk_size = src->info.chunk_size;
	else if (src->info.chunk_size && src->info.chunk_size != dst->info.chunk_size)
		dst->info.chunk_size = 0; /* mixed */
	return QTK_OK;
}

/* ---- files ------------------------------------------------------------- */

/* The kind of a file from its first bytes. */
static qtk_stats_kind sniff(const uint8_t *b, size_t n)
{
	if (n >= 4 && !memcmp(b, QTK_GGUF_MAGIC, 4))
		return QTK_STATS_IMATRIX;
	if (n >= 9 && b[8] == '{' && !b[7] && !b[6] && !b[5] && !b[4])
		return QTK_STATS_QTK; /* a safetensors header length, then JSON */
	return QTK_STATS_DAT;
}

qtk_err qtk_stats_open_mem(const void *data, size_t size, const char *name, qtk_stats **out,
                           qtk_stats_kind *kind, qtk_status *st)
{
	qtk_stats_kind k = sniff(data, size);
	qtk_stats *s;
	qtk_err rc;

	*out = NULL;
	QTK_TRY(qtk_stats_new(&s, st));
	rc = k == QTK_STATS_IMATRIX ? stats_read_imatrix(data, size, name, s, st)
	     : k == QTK_STATS_QTK ? stats_read_st(data, size, name, s, st)
	     : stats_read_dat(data, size, name, s, st);
	if (!rc && !s->n)
		rc = qtk_fail(st, QTK_E_FORMAT, "%s: no weight has statistics", name);
	if (rc) {
		qtk_stats_free(s);
		return rc;
	}
	if (kind)
		*kind = k;
	*out = s;
	return QTK_OK;
}

/* The whole file is mapped; every value read is copied, so the mapping
 * goes when the set is made. */
qtk_err qtk_stats_open(const char *path, qtk_stats **out, qtk_stats_kind *kind,
                       qtk_status *st)
{
	static const uint8_t none[1];
	qtk_map m;
	qtk_err rc;

	*out = NULL;
	QTK_TRY(qtk_map_open(&m, path, st));
	if (m.size > SIZE_MAX)
		rc = qtk_fail(st, QTK_E_OVERFLOW, "%s: too large to map", path);
	else
		rc = qtk_stats_open_mem(m.data ? m.data : none, (size_t)m.size, path, out, kind, st);
	qtk_map_close(&m);
	return rc;
}

qtk_err qtk_stats_write(const qtk_stats *s, const char *path, qtk_stats_kind kind,
                        const qtk_write_opts *opts, qtk_status *st)
{
	if (!s->n)
		return qtk_fail(st, QTK_E_ARG, "%s: no statistics to write", path);
	for (size_t i = 0; i < s->n; i++)
		QTK_TRY(stats_check_entry(s->e[i], path, st));
	switch (kind) {
	case QTK_STATS_QTK: return stats_write_st(s, path, opts, st);
	case QTK_STATS_IMATRIX: return stats_write_imatrix(s, path, opts, st);
	case QTK_STATS_DAT: return stats_write_dat(s, path, opts, st);
	}
	return qtk_fail(st, QTK_E_ARG, "%s: unknown statistics kind %d", path, (int)kind);
}
