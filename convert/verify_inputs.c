/* convert: the inputs of `qtk verify --against` — a set of activation
 * statistics (per weight, per input channel: sum of x, sum of x^2, token
 * count), opened from a statistics file, and the reproducible draw of the
 * input vectors X from them (or from N(0, 1) without statistics). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "verify_impl.h"

struct act_stats {
	char *name;               /* the file, for messages */
	act_stats_entry *e;       /* [n], sorted by name once opened */
	size_t n, cap;
	int sorted;
};

qtk_err act_stats_new(const char *name, act_stats **out, qtk_status *st)
{
	act_stats *s = qtk_calloc(1, sizeof *s);

	*out = NULL;
	if (!s || !(s->name = qtk_strdup(name ? name : ""))) {
		qtk_free(s);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	s->sorted = 1;
	*out = s;
	return QTK_OK;
}

void act_stats_close(act_stats *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++) {
		qtk_free(s->e[i].name);
		qtk_free(s->e[i].sum);
		qtk_free(s->e[i].sum2);
	}
	qtk_free(s->e);
	qtk_free(s->name);
	qtk_free(s);
}

size_t act_stats_count(const act_stats *s)
{
	return s ? s->n : 0;
}

const char *act_stats_name(const act_stats *s)
{
	return s ? s->name : "";
}

static qtk_err bad_value(const act_stats *s, const char *name, const char *what,
                         uint64_t j, double v, qtk_status *st)
{
	return qtk_fail(st, QTK_E_FORMAT, "%s: weight '%s': %s of channel %llu is %g "
	                "(must be finite and not negative)", s->name, name, what,
	                (unsigned long long)j, v);
}

static double *copy_doubles(const double *v, uint64_t n)
{
	double *d = qtk_malloc((size_t)n * sizeof *d);

	if (d)
		memcpy(d, v, (size_t)n * sizeof *d);
	return d;
}

qtk_err act_stats_add(act_stats *s, const char *name, uint64_t n, const double *sum,
                      const double *sum2, double count, qtk_status *st)
{
	act_stats_entry *e;

	if (!isfinite(count) || count <= 0)
		return qtk_fail(st, QTK_E_FORMAT, "%s: weight '%s': token count %g (must be > 0)",
		                s->name, name, count);
	if (n == 0 || n > SIZE_MAX / sizeof(double))
		return qtk_fail(st, QTK_E_FORMAT, "%s: weight '%s': %llu channels", s->name, name,
		                (unsigned long long)n);
	for (uint64_t j = 0; j < n; j++) {
		if (!isfinite(sum2[j]) || sum2[j] < 0)
			return bad_value(s, name, "the sum of squares", j, sum2[j], st);
		if (sum && !isfinite(sum[j]))
			return qtk_fail(st, QTK_E_FORMAT, "%s: weight '%s': the sum of channel %llu "
			                "is %g", s->name, name, (unsigned long long)j, sum[j]);
	}
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		act_stats_entry *ne = qtk_realloc(s->e, cap * sizeof *ne);
		if (!ne)
			return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", s->name);
		s->e = ne;
		s->cap = cap;
	}
	e = &s->e[s->n];
	memset(e, 0, sizeof *e);
	e->n = n;
	e->count = count;
	e->name = qtk_strdup(name);
	e->sum2 = copy_doubles(sum2, n);
	e->sum = sum ? copy_doubles(sum, n) : NULL;
	if (!e->name || !e->sum2 || (sum && !e->sum)) {
		qtk_free(e->name);
		qtk_free(e->sum2);
		qtk_free(e->sum);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", s->name);
	}
	s->n++;
	s->sorted = s->n == 1;
	return QTK_OK;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const act_stats_entry *)a)->name, ((const act_stats_entry *)b)->name);
}

/* Sort the entries by name; a name given twice is an error. */
static qtk_err finish(act_stats *s, qtk_status *st)
{
	if (s->n > 1)
		qsort(s->e, s->n, sizeof *s->e, by_name);
	for (size_t i = 1; i < s->n; i++)
		if (!strcmp(s->e[i - 1].name, s->e[i].name))
			return qtk_fail(st, QTK_E_FORMAT, "%s: weight '%s' has two entries", s->name,
			                s->e[i].name);
	s->sorted = 1;
	return QTK_OK;
}

const act_stats_entry *act_stats_find(const act_stats *s, const char *name)
{
	size_t lo = 0, hi;

	if (!s || !name)
		return NULL;
	if (!s->sorted) {
		for (size_t i = 0; i < s->n; i++)
			if (!strcmp(s->e[i].name, name))
				return &s->e[i];
		return NULL;
	}
	hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s->e[mid].name, name);
		if (c == 0)
			return &s->e[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

qtk_err act_stats_open(const char *path, act_stats **out, qtk_status *st)
{
	unsigned char magic[4];
	act_stats *s;
	qtk_err rc;
	int fd;

	*out = NULL;
	QTK_TRY(qtk_fmt_open_input(path, &fd, NULL, st));
	rc = read(fd, magic, 4) == 4 && !memcmp(magic, QTK_GGUF_MAGIC, 4) ? QTK_OK
	     : qtk_fail(st, QTK_E_UNSUPPORTED, "%s: not an activation statistics file qtk "
	                "reads (a llama.cpp imatrix GGUF; the legacy imatrix .dat is not read)",
	                path);
	close(fd);
	QTK_TRY(rc);
	QTK_TRY(act_stats_new(path, &s, st));
	rc = act_stats_read_imatrix(s, path, st);
	if (!rc)
		rc = finish(s, st);
	if (!rc && s->n == 0)
		rc = qtk_fail(st, QTK_E_FORMAT, "%s: no weight has statistics", path);
	if (rc) {
		act_stats_close(s);
		return rc;
	}
	*out = s;
	return QTK_OK;
}

/* ---- the draw ---------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double std_normal(uint64_t *s)
{
	/* Box-Muller on u1 in (0, 1] (log stays finite) and u2 in [0, 1) */
	double u1 = ((double)(splitmix64(s) >> 11) + 1.0) * 0x1p-53;
	double u2 = (double)(splitmix64(s) >> 11) * 0x1p-53;

	return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void moments(const act_stats_entry *e, size_t j, double *mean, double *sd)
{
	double m = e->sum ? e->sum[j] / e->count : 0.0;
	double v = e->sum2[j] / e->count - m * m;

	*mean = m;
	*sd = v > 0 ? sqrt(v) : 0.0;
}

void verify_draw_inputs(uint64_t seed, const act_stats_entry *e, size_t batch, size_t cols,
                        float *x)
{
	uint64_t s = seed;

	for (size_t b = 0; b < batch; b++)
		for (size_t j = 0; j < cols; j++) {
			double z = std_normal(&s), m = 0.0, sd = 1.0;
			if (e)
				moments(e, j, &m, &sd);
			x[b * cols + j] = (float)(m + sd * z);
		}
}
