/* quant: error metrics of a quantized tensor, accumulated chunk by chunk.
 * Exact arithmetic (so every build and ISA gives the same bits): elements
 * are taken in blocks of 256 from the start of each qtk_q_acc_add call;
 * within a block, element i goes to float lane i % 8 of four sums
 * (d*d, w*w, h*h, w*h with d = w - h in float); lanes fold as
 * (l + l+4), (l + l+2), (l + l+1) and the block's float total is added to
 * the double accumulator. max_abs is max |(double)w - (double)h|. Results
 * therefore depend on how a tensor is cut into calls (fixed by the caller's
 * row chunking), never on threads, since qtk_q_acc_merge combines in order. */
#include <math.h>
#include <string.h>

#include "qtk_quant.h"

static float fold8(float l[8])
{
	for (int i = 0; i < 4; i++)
		l[i] += l[i + 4];
	l[0] += l[2];
	l[1] += l[3];
	return l[0] + l[1];
}

void qtk_q_acc_add(qtk_q_acc *a, const float *w, const float *w_hat, size_t n)
{
	for (size_t b0 = 0; b0 < n; b0 += 256) {
		size_t m = n - b0 < 256 ? n - b0 : 256;
		float se[8] = { 0 }, sw[8] = { 0 }, sh[8] = { 0 }, sd[8] = { 0 };
		double mx = a->max_abs;
		for (size_t i = 0; i < m; i++) {
			float x = w[b0 + i], h = w_hat[b0 + i], d = x - h, t;
			double ad = fabs((double)x - (double)h);
			t = d * d;
			se[i & 7] += t;
			t = x * x;
			sw[i & 7] += t;
			t = h * h;
			sh[i & 7] += t;
			t = x * h;
			sd[i & 7] += t;
			mx = ad > mx ? ad : mx;
		}
		a->sse += (double)fold8(se);
		a->ssw += (double)fold8(sw);
		a->sshat += (double)fold8(sh);
		a->dot += (double)fold8(sd);
		a->max_abs = mx;
	}
	a->n += n;
}

void qtk_q_acc_merge(qtk_q_acc *into, const qtk_q_acc *from)
{
	into->sse += from->sse;
	into->ssw += from->ssw;
	into->sshat += from->sshat;
	into->dot += from->dot;
	into->max_abs = from->max_abs > into->max_abs ? from->max_abs : into->max_abs;
	into->n += from->n;
}

/* rmse = sqrt(sse/n); rel_fro = sqrt(sse/ssw) (0 if both are 0, +Inf if
 * only ssw is); snr_db = 10 log10(ssw/sse) (+Inf when sse = 0); cosine =
 * dot / sqrt(ssw * sshat) (1 when both are 0, 0 when one is). */
void qtk_q_metrics_from(const qtk_q_acc *a, qtk_q_metrics *m)
{
	memset(m, 0, sizeof *m);
	m->n = a->n;
	m->max_abs = a->max_abs;
	m->rmse = a->n ? sqrt(a->sse / (double)a->n) : 0;
	if (a->ssw > 0)
		m->rel_fro = sqrt(a->sse / a->ssw);
	else
		m->rel_fro = a->sse > 0 ? (double)INFINITY : 0;
	m->snr_db = a->sse > 0 ? 10.0 * log10(a->ssw / a->sse) : (double)INFINITY;
	if (a->ssw > 0 && a->sshat > 0)
		m->cosine = a->dot / sqrt(a->ssw * a->sshat);
	else
		m->cosine = a->ssw == 0 && a->sshat == 0 ? 1.0 : 0.0;
}
