/* convert: statistics for `qtk convert --calib` (see calib.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "calib.h"
#include "qtk_runtime.h"

struct calib {
	char *path;
	calib_mode mode;
	qtk_gptq_opts go;
	qtk_stats *s;        /* statistics, or NULL for the importance form */
	qtk_st_file *imp;    /* the older importance form: NAME -> [cols] */
	int vocab;           /* statistics of the vocabulary alone */
};

int calib_is_vocab(const calib *c)
{
	return c->vocab;
}

double calib_damp(const calib *c)
{
	return c->mode == CALIB_GPTQ ? c->go.damp : 0.0;
}

const char *calib_path(const calib *c)
{
	return c->path;
}

calib_mode calib_mode_of(const calib *c)
{
	return c->mode;
}

void calib_close(calib *c)
{
	if (!c)
		return;
	qtk_stats_free(c->s);
	qtk_st_close(c->imp);
	qtk_free(c->path);
	qtk_free(c);
}

qtk_err calib_open(const char *path, calib_mode mode, const qtk_gptq_opts *go, int damp_set,
                   calib **out, qtk_status *st)
{
	calib *c = qtk_calloc(1, sizeof *c);
	qtk_st_file *f = NULL;
	qtk_err rc;

	*out = NULL;
	if (!c || !(c->path = qtk_strdup(path))) {
		qtk_free(c);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	c->mode = mode;
	if (go)
		c->go = *go;
	else
		qtk_gptq_opts_init(&c->go);
	/* a safetensors file without qtk.stats is the importance form */
	if (qtk_st_open(path, &f, NULL) == QTK_OK && !qtk_st_meta_get(f, "qtk.stats")) {
		c->imp = f;
		if (mode == CALIB_GPTQ) {
			calib_close(c);
			return qtk_fail(st, QTK_E_ARG, "%s: an importance file (one vector per "
			                "tensor) has no X^T X: --calib-mode gptq needs statistics "
			                "from `qtk calibrate --xtx`", path);
		}
		*out = c;
		return QTK_OK;
	}
	qtk_st_close(f);
	/* GPTQ's products run one OpenBLAS thread in each pipeline worker
	 * (workers split the rows): OpenBLAS's threaded results depend on how
	 * many threads it uses, and the file must not depend on -j */
	if (mode == CALIB_GPTQ)
		openblas_set_num_threads(1);
	rc = qtk_stats_open(path, &c->s, NULL, st);
	if (rc) {
		calib_close(c);
		return rc;
	}
	c->vocab = qtk_stats_dataset_count(c->s) > 0;
	for (size_t i = 0; i < qtk_stats_dataset_count(c->s); i++)
		c->vocab &= !strcmp(qtk_stats_dataset(c->s, i), CALIB_VOCAB_DATASET);
	if (c->vocab && mode == CALIB_GPTQ && !damp_set)
		c->go.damp = CALIB_VOCAB_DAMP;
	*out = c;
	return QTK_OK;
}

int calib_check(const calib *c, const char *name, uint64_t cols, qtk_status *st)
{
	uint64_t have;

	if (c->imp) {
		const qtk_st_tensor *t = qtk_st_find(c->imp, name);
		if (!t)
			return 0;
		if (!qtk_dtype_is_float(t->dtype)) {
			qtk_fail(st, QTK_E_ARG, "%s: tensor '%s': importance must be a float vector "
			         "of %llu elements", c->path, name, (unsigned long long)cols);
			return -1;
		}
		have = t->nelem;
	} else {
		const qtk_stats_entry *e = qtk_stats_find(c->s, name);
		if (!e)
			return 0;
		have = e->cols;
	}
	if (have != cols) {
		qtk_fail(st, QTK_E_ARG, "%s: statistics of '%s' are for %llu input channels; the "
		         "tensor has %llu columns", c->path, name, (unsigned long long)have,
		         (unsigned long long)cols);
		return -1;
	}
	return 1;
}

/* Is this the token embedding (GGUF key token_embd.weight)? With
 * statistics it is also the tied output head. */
static int is_embedding(const qtk_stats_entry *e)
{
	return !strcmp(e->key, "token_embd.weight");
}

/* The weight of the lookup use against the head's (mean 1), and GPTQ's
 * damping for the tied matrix: the damping is the lookup use's own term
 * (an error in a looked-up row costs the same in every channel), so it is
 * larger than a linear weight's. Measured on stories260K (held-out KL
 * divergence in llama.cpp, docs/calibration.md), the whole model under
 * GPTQ with the tied matrix weighted: lookup term 0: 0.0762, 0.3: 0.0757,
 * 3: 0.0784, 1000 (uniform): 0.0825; the tied matrix alone at int4 g32
 * (lookup 0.3): weighted 0.0185, GPTQ with damping 0.01: 0.0177, 0.1:
 * 0.0165, 0.5: 0.0168. */
#define TIED_LOOKUP 0.3
#define TIED_DAMP 0.1

/* The tied matrix: each row is looked up (an error in channel j reaches
 * every layer through the residual stream, evenly as far as we know) and
 * multiplies the head's input (mean x_j^2 says how much channel j
 * counts): the head's term normalized to mean 1, plus TIED_LOOKUP. */
static void tied_importance(const qtk_stats_entry *e, float *imp)
{
	double m = 0;

	for (uint64_t j = 0; j < e->cols; j++)
		m += e->sum2[j];
	m /= (double)e->cols;
	for (uint64_t j = 0; j < e->cols; j++)
		imp[j] = (float)((m > 0 ? e->sum2[j] / m : 1.0) + TIED_LOOKUP);
}

void calib_tensor_free(calib_tensor *t)
{
	qtk_free(t->importance);
	qtk_gptq_free(t->f);
	memset(t, 0, sizeof *t);
}

/* H = 2 X^T X / N ([cols][cols], double). */
static double *hessian(const qtk_stats_entry *e)
{
	size_t n = (size_t)e->cols;
	double *h = qtk_malloc(n * n * sizeof *h), k;

	if (!h)
		return NULL;
	k = e->count ? 2.0 / (double)e->count : 0.0;
	for (size_t i = 0; i < n * n; i++)
		h[i] = e->xtx[i] * k;
	return h;
}

qtk_err calib_tensor_make(const calib *c, const char *name, uint64_t cols, calib_tensor *t,
                          qtk_status *st)
{
	const qtk_stats_entry *e = NULL;
	const qtk_st_tensor *it = NULL;

	memset(t, 0, sizeof *t);
	if (c->imp)
		it = qtk_st_find(c->imp, name);
	else
		e = qtk_stats_find(c->s, name);
	if (!it && !e)
		return QTK_OK;
	t->importance = qtk_malloc((size_t)cols * sizeof(float));
	if (!t->importance)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	if (it) {
		qtk_err rc = qtk_st_read_f32(it, 0, cols, t->importance, st);
		if (rc)
			calib_tensor_free(t);
		return rc;
	}
	if (is_embedding(e))
		tied_importance(e, t->importance);
	else
		for (uint64_t j = 0; j < cols; j++)
			t->importance[j] = (float)(e->count ? e->sum2[j] / (double)e->count : 0.0);
	if (c->mode == CALIB_GPTQ) {
		double *h;
		qtk_err rc;

		if (!e->xtx) {
			calib_tensor_free(t);
			return qtk_fail(st, QTK_E_ARG, "%s: weight '%s' has no X^T X, which "
			                "--calib-mode gptq needs (record it with `qtk calibrate "
			                "--xtx`)", c->path, name);
		}
		if (!(h = hessian(e))) {
			calib_tensor_free(t);
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		}
		qtk_gptq_opts go = c->go;
		if (is_embedding(e) && go.damp < TIED_DAMP)
			go.damp = TIED_DAMP;
		rc = qtk_gptq_prepare(h, (size_t)cols, &go, qtk_rt_gemm_blas(), &t->f, st);
		qtk_free(h);
		if (rc) {
			char pre[600];
			snprintf(pre, sizeof pre, "%s: weight '%s'", c->path, name);
			qtk_status_prefix(st, pre);
			calib_tensor_free(t);
			return rc;
		}
	}
	return QTK_OK;
}

qtk_err calib_quantize_acc(const calib_tensor *t, const qtk_q_layout *L, float *w,
                           float *orig, size_t rows, size_t cols, const qtk_q_planes *dst,
                           const qtk_q_opts *opts, qtk_q_acc *acc, qtk_status *st)
{
	qtk_q_opts o = *opts;

	o.importance = t->importance;
	if (!t->f)
		return qtk_q_quantize_rows_acc(L, w, rows, cols, dst, &o, acc, st);
	memcpy(orig, w, rows * cols * sizeof *w);
	QTK_TRY(qtk_gptq_quantize(t->f, qtk_rt_gemm_blas(), L, w, rows, cols, dst, &o, st));
	for (size_t r = 0; r < rows; r++)
		qtk_q_acc_add(acc, orig + r * cols, w + r * cols, cols);
	return QTK_OK;
}
