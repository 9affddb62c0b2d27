/* runtime: perplexity and, against a reference model, the KL divergence
 * of the next-token distributions, top-1 agreement and logit error — the
 * figures llama-perplexity (--kl-divergence) prints, by its rules: the text
 * tokenized once, consecutive windows each run as a new sequence with BOS
 * in its first position; every position after the first scored, or (half)
 * the second half of each window. Sums are in double, in position order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lm_impl.h"

typedef struct {
	double nll, nll2;              /* model: sum of NLL, of NLL^2 */
	double rnll, rnll2, cross;     /* reference: the same; sum NLL * ref NLL */
	double kld, kld2;              /* sum of KL(ref || model), of its square */
	double dp, dp2, dp4;           /* p(token) - p_ref(token): sums of ^1, ^2, ^4 */
	double dl2;                    /* sum of squared logit differences */
	uint64_t same_top, count;
	double *klds;                  /* (scored) every position's KL divergence */
} sums;

/* log(sum(exp(l))) and the index of the first largest logit. */
static double log_sum_exp(const float *l, size_t n, size_t *imax)
{
	double s = 0;
	float mx = l[0];
	size_t im = 0;

	for (size_t i = 1; i < n; i++)
		if (l[i] > mx) {
			mx = l[i];
			im = i;
		}
	for (size_t i = 0; i < n; i++)
		s += exp((double)l[i] - (double)mx);
	*imax = im;
	return (double)mx + log(s);
}

/* One scored position: logits l (model) and r (reference, or NULL), the
 * token that came next. */
static void score(sums *S, const float *l, const float *r, size_t V, int32_t next)
{
	size_t im, rim;
	double lse = log_sum_exp(l, V, &im), nll = lse - (double)l[next];

	S->nll += nll;
	S->nll2 += nll * nll;
	if (r) {
		double rlse = log_sum_exp(r, V, &rim), rnll = rlse - (double)r[next], kld = 0, dp;
		for (size_t i = 0; i < V; i++) {
			double lr = (double)r[i] - rlse, lm = (double)l[i] - lse, d = (double)l[i] - (double)r[i];
			kld += exp(lr) * (lr - lm);
			S->dl2 += d * d;
		}
		S->rnll += rnll;
		S->rnll2 += rnll * rnll;
		S->cross += nll * rnll;
		S->kld += kld;
		S->kld2 += kld * kld;
		S->klds[S->count] = kld;
		dp = exp(-nll) - exp(-rnll);
		S->dp += dp;
		S->dp2 += dp * dp;
		S->dp4 += dp * dp * dp * dp;
		S->same_top += im == rim;
	}
	S->count++;
}

/* Mean of count values from their sum and sum of squares, and the
 * standard error of that mean (llama-perplexity's mean_and_uncertainty). */
static double mean_err(double sum, double sum2, uint64_t count, double *err)
{
	double f = sum / (double)count, df = sum2 / (double)count - f * f;

	*err = df > 0 && count > 10 ? sqrt(df / (double)(count - 1)) : 0;
	return f;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Linear between sorted values, as llama-perplexity's percentile. */
static double percentile(const double *v, size_t n, double f)
{
	double p = f * (double)(n - 1), frac;
	size_t ip = (size_t)p;

	frac = p - (double)ip;
	return (1 - frac) * v[ip] + frac * v[ip + 1 < n ? ip + 1 : n - 1];
}

static void finish(sums *S, int have_ref, qtk_rt_eval_result *r)
{
	uint64_t n = S->count;
	double e, re, cov, mse, mse_err;

	r->scored = n;
	r->nll = mean_err(S->nll, S->nll2, n, &e);
	r->ppl = exp(r->nll);
	/* llama-perplexity's plain figure: no minimum count */
	e = S->nll2 / (double)n - r->nll * r->nll;
	r->ppl_err = e > 0 && n > 1 ? r->ppl * sqrt(e / (double)(n - 1)) : 0;
	if (!have_ref)
		return;
	mean_err(S->nll, S->nll2, n, &e);
	r->ref_ppl = exp(mean_err(S->rnll, S->rnll2, n, &re));
	r->ref_ppl_err = r->ref_ppl * re;
	cov = n >= 10 ? (S->cross / (double)n - (S->nll / (double)n) * (S->rnll / (double)n)) /
	                (double)(n - 1) : 0;
	r->ln_ratio = r->nll - log(r->ref_ppl);
	r->ln_ratio_err = sqrt(fmax(0, e * e + re * re - 2 * cov));
	r->kld_mean = mean_err(S->kld, S->kld2, n, &r->kld_err);
	qsort(S->klds, n, sizeof *S->klds, by_value);
	r->kld_max = S->klds[n - 1];
	r->kld_p99 = percentile(S->klds, n, 0.99);
	r->kld_median = n % 2 ? S->klds[n / 2] : 0.5 * (S->klds[n / 2] + S->klds[n / 2 - 1]);
	r->top1 = (double)S->same_top / (double)n;
	r->top1_err = n > 1 ? sqrt(r->top1 * (1 - r->top1) / (double)(n - 1)) : 0;
	mse = mean_err(S->dp2, S->dp4, n, &mse_err);
	r->dp_rms = sqrt(mse);
	r->dp_rms_err = mse > 0 ? 0.5 / r->dp_rms * mse_err : 0;
	r->logit_rms = 0; /* set by the caller, which knows the vocabulary */
}

static qtk_err check_args(qtk_rt_lm_ctx *m, qtk_rt_lm_ctx *ref, const int32_t *ids, size_t n,
                          const qtk_rt_eval_opts *o, qtk_rt_eval_result *r, qtk_status *st)
{
	const qtk_rt_lm *lm;

	if (!m || !o || !r || (n && !ids))
		return qtk_fail(st, QTK_E_ARG, "qtk_rt_eval: NULL argument");
	lm = qtk_rt_lm_ctx_model(m);
	if (o->ctx < 2)
		return qtk_fail(st, QTK_E_ARG, "evaluation windows of %u tokens (2 at least)", o->ctx);
	if (o->ctx > qtk_rt_lm_ctx_size(m) || (ref && o->ctx > qtk_rt_lm_ctx_size(ref)))
		return qtk_fail(st, QTK_E_ARG, "windows of %u tokens do not fit a context of %u",
		                o->ctx, ref && qtk_rt_lm_ctx_size(ref) < qtk_rt_lm_ctx_size(m)
		                ? qtk_rt_lm_ctx_size(ref) : qtk_rt_lm_ctx_size(m));
	if (ref && qtk_rt_lm_describe(qtk_rt_lm_ctx_model(ref))->n_vocab != lm->d.n_vocab)
		return qtk_fail(st, QTK_E_ARG, "the reference has a vocabulary of %u, the model %u",
		                qtk_rt_lm_describe(qtk_rt_lm_ctx_model(ref))->n_vocab, lm->d.n_vocab);
	if (o->half ? n < o->ctx : n < 2)
		return qtk_fail(st, QTK_E_ARG, "the text has %zu tokens: %s", n,
		                o->half ? "fewer than one window" : "nothing to predict");
	return QTK_OK;
}

qtk_err qtk_rt_eval(qtk_rt_lm_ctx *m, qtk_rt_lm_ctx *ref, const int32_t *ids, size_t n,
                    const qtk_rt_eval_opts *o, qtk_rt_eval_result *r, qtk_status *st)
{
	size_t V, ctx, first, nw, scored = 0;
	int32_t *tok = NULL;
	float *lg = NULL, *rl = NULL;
	sums S;
	qtk_err rc = QTK_OK;

	QTK_TRY(check_args(m, ref, ids, n, o, r, st));
	memset(r, 0, sizeof *r);
	memset(&S, 0, sizeof S);
	V = qtk_rt_lm_describe(qtk_rt_lm_ctx_model(m))->n_vocab;
	ctx = o->ctx;
	first = o->half ? ctx / 2 : 0;
	nw = n / ctx + (!o->half && n % ctx >= 2);
	for (size_t w = 0; w < nw; w++) {
		size_t len = n - w * ctx < ctx ? n - w * ctx : ctx;
		scored += len - 1 - first;
	}
	tok = qtk_malloc(ctx * sizeof *tok);
	lg = qtk_malloc((ctx - first) * V * sizeof *lg);
	rl = ref ? qtk_malloc((ctx - first) * V * sizeof *rl) : NULL;
	S.klds = ref ? qtk_malloc((scored ? scored : 1) * sizeof *S.klds) : NULL;
	if (!tok || !lg || (ref && (!rl || !S.klds))) {
		rc = qtk_fail(st, QTK_E_NOMEM, "out of memory for %zu logits", (ctx - first) * V);
		goto out;
	}
	for (size_t w = 0; w < nw && !rc; w++) {
		size_t len = n - w * ctx < ctx ? n - w * ctx : ctx;

		memcpy(tok, ids + w * ctx, len * sizeof *tok);
		if (o->bos >= 0)
			tok[0] = o->bos;
		rc = qtk_rt_lm_forward(m, tok, len, 0, lg, len - first, st);
		if (!rc && ref)
			rc = qtk_rt_lm_forward(ref, tok, len, 0, rl, len - first, st);
		for (size_t i = first; !rc && i + 1 < len; i++)
			score(&S, lg + (i - first) * V, ref ? rl + (i - first) * V : NULL, V, tok[i + 1]);
		if (!rc && o->progress)
			o->progress(o->user, w + 1, nw);
	}
	if (!rc) {
		r->windows = nw;
		finish(&S, ref != NULL, r);
		if (ref)
			r->logit_rms = sqrt(S.dl2 / ((double)S.count * (double)V));
	}
out:
	qtk_free(tok);
	qtk_free(lg);
	qtk_free(rl);
	qtk_free(S.klds);
	return rc;
}
