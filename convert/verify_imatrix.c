/* convert: llama.cpp's imatrix GGUF as activation statistics for
 * `qtk verify --against --inputs`. The file (llama-imatrix, GGUF output,
 * tools/imatrix/imatrix.cpp) holds per weight NAME two F32 tensors:
 * NAME.in_sum2 [nmat][n] — the sum of x_j^2 over the input vectors of
 * the weight (one row per expert of a 3-D MoE weight, else one) — and
 * NAME.counts [nmat][1] — how many vectors were summed. general.type, when
 * present, is "imatrix". It has no sum of x: the mean is taken as 0. */
#include <math.h>
#include <string.h>

#include "verify_impl.h"

static const char sfx_sum2[] = ".in_sum2", sfx_counts[] = ".counts";

static int ends_with(const char *s, const char *sfx)
{
	size_t a = strlen(s), b = strlen(sfx);

	return a > b && !strcmp(s + a - b, sfx);
}

/* All elements of t as doubles (dst[t->nelem]). */
static qtk_err read_all(const qtk_gguf_tensor *t, double *dst, float *tmp, qtk_status *st)
{
	QTK_TRY(qtk_gguf_read_f32(t, 0, t->nelem, tmp, st));
	for (uint64_t i = 0; i < t->nelem; i++)
		dst[i] = (double)tmp[i];
	return QTK_OK;
}

/* Entry for the pair (s2, cn); a weight no vector reached is left out. */
static qtk_err add_pair(act_stats *s, const char *path, const char *name,
                        const qtk_gguf_tensor *s2, const qtk_gguf_tensor *cn, qtk_status *st)
{
	uint64_t n = s2->cols, nmat = s2->rows;
	double *v = NULL, *c = NULL, *pooled = NULL, count = 0;
	float *tmp = NULL;
	qtk_err rc = QTK_OK;

	if (s2->ndim > 2 || cn->nelem != nmat)
		return qtk_fail(st, QTK_E_FORMAT, "%s: imatrix: '%s' has %llu rows but '%s' %llu "
		                "counts (expected [experts][channels] and [experts][1])", path,
		                s2->name, (unsigned long long)nmat, cn->name,
		                (unsigned long long)cn->nelem);
	if (s2->nelem > SIZE_MAX / sizeof(double))
		return qtk_fail(st, QTK_E_OVERFLOW, "%s: '%s' is too large", path, s2->name);
	v = qtk_malloc((size_t)s2->nelem * sizeof *v);
	c = qtk_malloc((size_t)nmat * sizeof *c);
	pooled = qtk_calloc((size_t)n, sizeof *pooled);
	tmp = qtk_malloc((size_t)s2->nelem * sizeof *tmp);
	if (!v || !c || !pooled || !tmp) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
		goto out;
	}
	rc = read_all(s2, v, tmp, st);
	if (!rc)
		rc = read_all(cn, c, tmp, st);
	for (uint64_t e = 0; !rc && e < nmat; e++) {
		if (!isfinite(c[e]) || c[e] < 0) {
			rc = qtk_fail(st, QTK_E_FORMAT, "%s: '%s': count %g of expert %llu", path,
			              cn->name, c[e], (unsigned long long)e);
			break;
		}
		count += c[e];
		for (uint64_t j = 0; j < n; j++)
			pooled[j] += v[e * n + j]; /* act_stats_add checks each sum */
	}
	if (!rc && count > 0)
		rc = act_stats_add(s, name, n, NULL, pooled, count, st);
out:
	qtk_free(v);
	qtk_free(c);
	qtk_free(pooled);
	qtk_free(tmp);
	return rc;
}

qtk_err act_stats_read_imatrix(act_stats *s, const char *path, qtk_status *st)
{
	qtk_gguf_file *g;
	const char *type;
	uint64_t len;
	char name[512];
	qtk_err rc = QTK_OK;

	QTK_TRY(qtk_gguf_open(path, &g, st));
	if (qtk_gguf_get_str(g, "general.type", &type, &len, NULL) == QTK_OK &&
	    !(len == 7 && !memcmp(type, "imatrix", 7)))
		rc = qtk_fail(st, QTK_E_FORMAT, "%s: general.type is '%.*s', not 'imatrix'", path,
		              (int)(len < 64 ? len : 64), type);
	for (size_t i = 0; !rc && i < qtk_gguf_count(g); i++) {
		const qtk_gguf_tensor *t = qtk_gguf_get(g, i), *o;
		const char *sfx = ends_with(t->name, sfx_sum2) ? sfx_sum2
		                : ends_with(t->name, sfx_counts) ? sfx_counts : NULL;
		size_t base;

		if (!sfx)
			continue; /* other tensors: not statistics (llama.cpp ignores them too) */
		base = strlen(t->name) - strlen(sfx);
		if (base + sizeof sfx_sum2 > sizeof name) {
			rc = qtk_fail(st, QTK_E_FORMAT, "%s: tensor name '%.64s...' is too long", path,
			              t->name);
			break;
		}
		memcpy(name, t->name, base);
		strcpy(name + base, sfx == sfx_sum2 ? sfx_counts : sfx_sum2);
		o = qtk_gguf_find(g, name);
		name[base] = 0;
		if (!o)
			rc = qtk_fail(st, QTK_E_FORMAT, "%s: imatrix: '%s' has no '%s%s' beside it", path,
			              t->name, name, sfx == sfx_sum2 ? sfx_counts : sfx_sum2);
		else if (sfx == sfx_sum2)
			rc = add_pair(s, path, name, t, o, st);
	}
	qtk_gguf_close(g);
	return rc;
}
