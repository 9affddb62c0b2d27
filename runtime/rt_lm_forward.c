/* runtime: the forward pass of a LLaMA-family decoder, laid out as
 * llama2.c's run.c: embedding, then per block RMSNorm -> q/k/v -> RoPE ->
 * causal attention over the KV cache (GQA) -> output projection ->
 * residual, RMSNorm -> SwiGLU MLP -> residual; final RMSNorm and the output
 * head. A step runs up to n_batch tokens at once, so every matrix product
 * is one qtk_rt_matmul over the step's tokens (prompt processing as
 * matrix-matrix products, generation as matrix-vector products). */
#include <math.h>
#include <string.h>

#include "lm_impl.h"

/* ===================================================================== */
/* The context: KV cache and activation buffers                          */
/* ===================================================================== */

struct qtk_rt_lm_ctx {
	const qtk_rt_lm *lm;
	qtk_rt_pool *pool;
	int own_pool;
	qtk_rt_path path;
	uint32_t n_ctx, n_batch;
	qtk_rt_lm_hook hook;
	void *hook_user;
	unsigned threads;
	/* the KV cache: positions 0 .. n_ctx-1 of one sequence */
	uint32_t n_ctx8;    /* n_ctx rounded up to 8 */
	float *key_cache;   /* (n_layer, n_head_kv, n_ctx8 / 8, head_dim, 8) after
	                       RoPE: blocks of 8 positions, each d's 8 side by
	                       side, so a head's scores read one contiguous run */
	float *value_cache; /* (n_layer, n_head_kv, n_ctx8, head_dim): a head's
	                       values contiguous, position after position */
	/* one step of up to n_batch tokens (row b: the step's token b) */
	float *x;           /* (n_batch, n_embd) the residual stream */
	float *xb;          /* (n_batch, n_embd) normed input; output of wo / w_down */
	float *q;           /* (n_batch, n_head * head_dim) queries, after RoPE */
	float *k;           /* (n_batch, n_head_kv * head_dim) keys, before the cache */
	float *v;           /* (n_batch, n_head_kv * head_dim) values, before the cache */
	float *att_out;     /* (n_batch, n_head * head_dim) attention output, heads side by side */
	float *hb;          /* (n_batch, n_ff) gate; then silu(gate) * up */
	float *hb2;         /* (n_batch, n_ff) up */
	float *rope_cos;    /* (n_batch, rope_dims / 2) cos(position * inv_freq[i]) */
	float *rope_sin;    /* (n_batch, rope_dims / 2) */
	double *inv_freq;   /* (rope_dims / 2) theta^(-2i / rope_dims) */
	float *att;         /* (threads, n_ctx8) attention weights, a row per thread */
};

/* n1 * n2 * n3 floats, or 0 on overflow. */
static size_t floats(size_t n1, size_t n2, size_t n3)
{
	size_t n;

	if (__builtin_mul_overflow(n1, n2, &n) || __builtin_mul_overflow(n, n3, &n) ||
	    __builtin_mul_overflow(n, sizeof(float), &n))
		return 0;
	return n;
}

static qtk_err alloc_buffers(qtk_rt_lm_ctx *c, qtk_status *st)
{
	const qtk_rt_lm_desc *d = &c->lm->d;
	size_t kv = (size_t)d->n_head_kv * d->head_dim, qd = (size_t)d->n_head * d->head_dim;
	size_t nb = c->n_batch, cache = floats(d->n_layer, c->n_ctx8, kv);
	struct { void **p; size_t bytes; } buf[] = {
		{ (void **)&c->key_cache, cache },
		{ (void **)&c->value_cache, cache },
		{ (void **)&c->k, floats(nb, kv, 1) },
		{ (void **)&c->v, floats(nb, kv, 1) },
		{ (void **)&c->x, floats(nb, d->n_embd, 1) },
		{ (void **)&c->xb, floats(nb, d->n_embd, 1) },
		{ (void **)&c->q, floats(nb, qd, 1) },
		{ (void **)&c->att_out, floats(nb, qd, 1) },
		{ (void **)&c->hb, floats(nb, d->n_ff, 1) },
		{ (void **)&c->hb2, floats(nb, d->n_ff, 1) },
		{ (void **)&c->rope_cos, floats(nb, d->rope_dims / 2, 1) },
		{ (void **)&c->rope_sin, floats(nb, d->rope_dims / 2, 1) },
		{ (void **)&c->inv_freq, floats(d->rope_dims / 2, 2, 1) },
		{ (void **)&c->att, floats(c->threads, c->n_ctx8, 1) },
	};

	for (size_t i = 0; i < sizeof buf / sizeof *buf; i++) {
		if (!buf[i].bytes)
			return qtk_fail(st, QTK_E_OVERFLOW, "%s: a context of %u positions is too large",
			                c->lm->path, c->n_ctx);
		/* zeros: the attention reads whole vectors of 8 positions */
		if (!(*buf[i].p = qtk_calloc(1, buf[i].bytes)))
			return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory for a context of %u positions "
			                "(%zu bytes)", c->lm->path, c->n_ctx, buf[i].bytes);
	}
	for (uint32_t i = 0; i < d->rope_dims / 2; i++)
		c->inv_freq[i] = pow((double)d->rope_theta, -2.0 * i / d->rope_dims);
	return QTK_OK;
}

void qtk_rt_lm_ctx_free(qtk_rt_lm_ctx *c)
{
	if (!c)
		return;
	qtk_free(c->key_cache);
	qtk_free(c->value_cache);
	qtk_free(c->x);
	qtk_free(c->xb);
	qtk_free(c->q);
	qtk_free(c->k);
	qtk_free(c->v);
	qtk_free(c->att_out);
	qtk_free(c->hb);
	qtk_free(c->hb2);
	qtk_free(c->rope_cos);
	qtk_free(c->rope_sin);
	qtk_free(c->inv_freq);
	qtk_free(c->att);
	if (c->own_pool)
		qtk_rt_pool_free(c->pool);
	qtk_free(c);
}

qtk_err qtk_rt_lm_ctx_new(const qtk_rt_lm *lm, const qtk_rt_lm_opts *o, qtk_rt_lm_ctx **out,
                          qtk_status *st)
{
	static const qtk_rt_lm_opts defaults = { 0 };
	qtk_rt_lm_ctx *c;
	qtk_err rc;

	if (!lm || !out)
		return qtk_fail(st, QTK_E_ARG, "qtk_rt_lm_ctx_new: NULL argument");
	*out = NULL;
	o = o ? o : &defaults;
	if (o->path != QTK_RT_FLOAT && o->path != QTK_RT_INT8)
		return qtk_fail(st, QTK_E_ARG, "%s: unknown activation path %d", lm->path, (int)o->path);
	if (!(c = qtk_calloc(1, sizeof *c)))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", lm->path);
	c->lm = lm;
	c->path = o->path;
	c->hook = o->hook;
	c->hook_user = o->hook_user;
	c->n_ctx = o->n_ctx ? o->n_ctx : lm->d.n_ctx;
	c->n_ctx8 = c->n_ctx > UINT32_MAX - 7 ? 0 : (c->n_ctx + 7) / 8 * 8;
	if (lm->d.window && c->n_ctx > lm->d.window) {
		uint32_t n_ctx = c->n_ctx; /* read before c is freed */
		qtk_free(c);
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: a context of %u positions: the model's "
		                "attention window is %u (sliding windows are not supported)", lm->path,
		                n_ctx, lm->d.window);
	}
	c->n_batch = o->n_batch ? o->n_batch : (c->n_ctx < 512 ? c->n_ctx : 512);
	c->pool = o->pool;
	rc = QTK_OK;
	if (!c->pool) {
		rc = qtk_rt_pool_create(o->threads, &c->pool, st);
		c->own_pool = rc == QTK_OK;
	}
	if (!rc) {
		c->threads = qtk_rt_pool_threads(c->pool);
		rc = alloc_buffers(c, st);
	}
	if (rc) {
		qtk_rt_lm_ctx_free(c);
		return rc;
	}
	*out = c;
	return QTK_OK;
}

uint32_t qtk_rt_lm_ctx_size(const qtk_rt_lm_ctx *c)
{
	return c ? c->n_ctx : 0;
}

const qtk_rt_lm *qtk_rt_lm_ctx_model(const qtk_rt_lm_ctx *c)
{
	return c ? c->lm : NULL;
}

/* ===================================================================== */
/* Building blocks                                                        */
/* ===================================================================== */

/* out[b] = x[b] / rms(x[b]) * w for rows b of (n, dim); the sum of squares
 * in double, as ggml's rms_norm. */
static void rmsnorm(float *out, const float *x, const float *w, size_t n, size_t dim,
                    float eps)
{
	for (size_t b = 0; b < n; b++) {
		const float *xr = x + b * dim;
		float *o = out + b * dim;
		double ss = 0;
		for (size_t i = 0; i < dim; i++)
			ss += (double)xr[i] * (double)xr[i];
		float scale = (float)(1.0 / sqrt(ss / (double)dim + (double)eps));
		for (size_t i = 0; i < dim; i++)
			o[i] = (xr[i] * scale) * w[i];
	}
}

/* y (n, w->rows) = x (n, w->cols) W^T, after showing x to the hook. */
static qtk_err linear(qtk_rt_lm_ctx *c, const qtk_rt_tensor *w, const float *x, size_t n,
                      float *y, qtk_status *st)
{
	if (c->hook)
		c->hook(c->hook_user, w->name, x, n, (size_t)w->cols);
	return qtk_rt_matmul(c->pool, w, c->path, x, n, y, st);
}

/* cos / sin of each token's position times each RoPE frequency, in double. */
static void rope_tables(qtk_rt_lm_ctx *c, size_t n, size_t pos)
{
	size_t half = c->lm->d.rope_dims / 2;

	for (size_t b = 0; b < n; b++)
		for (size_t i = 0; i < half; i++) {
			double a = (double)(pos + b) * c->inv_freq[i];
			c->rope_cos[b * half + i] = (float)cos(a);
			c->rope_sin[b * half + i] = (float)sin(a);
		}
}

/* Rotate the leading rope_dims dimensions of each head of v (n, heads *
 * head_dim) by its token's angles: pairs (2i, 2i+1) for GGUF's row order,
 * (i, i + rope_dims/2) for Hugging Face's (rotate_half). */
static void rope(const qtk_rt_lm_ctx *c, float *v, size_t n, size_t heads)
{
	const qtk_rt_lm_desc *d = &c->lm->d;
	size_t half = d->rope_dims / 2, hd = d->head_dim;
	int inter = d->rope == QTK_RT_ROPE_INTERLEAVED;

	for (size_t b = 0; b < n; b++) {
		const float *cs = c->rope_cos + b * half, *sn = c->rope_sin + b * half;
		for (size_t h = 0; h < heads; h++) {
			float *r = v + (b * heads + h) * hd;
			for (size_t i = 0; i < half; i++) {
				float *p0 = inter ? r + 2 * i : r + i;
				float *p1 = inter ? r + 2 * i + 1 : r + i + half;
				float a = *p0, e = *p1;
				*p0 = a * cs[i] - e * sn[i];
				*p1 = a * sn[i] + e * cs[i];
			}
		}
	}
}

/* ===================================================================== */
/* Attention                                                              */
/* ===================================================================== */

typedef struct {
	qtk_rt_lm_ctx *c;
	size_t layer, pos;
} att_job;

/* 8 floats; GCC lowers their element-wise operations to the target's
 * vectors (SSE pairs, AVX2), each lane computed as the scalar code would. */
typedef float v8f __attribute__((vector_size(32)));

/* a[s0 .. s0 + 8n) = scale * q . k over n blocks of 8 positions, one
 * chain per block, each summing over d in order. */
static inline __attribute__((always_inline)) void score_chains(const int n, const float *kt,
                                                               const float *q, size_t hd,
                                                               size_t s0, float scale, float *a)
{
	v8f acc[8] = { { 0 } };

	for (size_t k = 0; k < hd; k++)
#pragma GCC unroll 8
		for (int j = 0; j < n; j++) {
			v8f kv;
			memcpy(&kv, kt + (s0 + 8 * (size_t)j) * hd + 8 * k, sizeof kv);
			acc[j] += q[k] * kv;
		}
	for (int j = 0; j < n; j++) {
		acc[j] *= scale;
		memcpy(a + s0 + 8 * (size_t)j, &acc[j], sizeof acc[j]);
	}
}

/* Heads [b0, e) of the step, item = token * n_head + head: the softmax of
 * q . k over positions 0 .. the token's position (causal), then the sum of
 * v weighted by it. Each score is a sum over d in order, each output
 * element a sum over positions in order, computed by one thread: the
 * result depends neither on the thread count nor on the ISA. */
static inline __attribute__((always_inline)) void attend_body(void *ctx, size_t b0, size_t e,
                                                              unsigned t)
{
	const att_job *J = ctx;
	const qtk_rt_lm_ctx *c = J->c;
	const qtk_rt_lm_desc *d = &c->lm->d;
	size_t hd = d->head_dim, kvd = (size_t)d->n_head_kv * hd, qd = (size_t)d->n_head * hd;
	size_t group = d->n_head / d->n_head_kv, ld = c->n_ctx8;
	const float *kc = c->key_cache + J->layer * kvd * ld;
	const float *vc = c->value_cache + J->layer * kvd * ld;
	float *a = c->att + (size_t)t * ld;
	float scale = (float)(1.0 / sqrt((double)hd));

	for (size_t it = b0; it < e; it++) {
		size_t b = it / d->n_head, h = it % d->n_head, kvh = h / group;
		size_t np = J->pos + b + 1; /* positions this token sees */
		const float *q = c->q + b * qd + h * hd, *kt = kc + kvh * hd * ld;
		const float *vh = vc + kvh * ld * hd;
		float *out = c->att_out + b * qd + h * hd;
		float mx = -INFINITY;
		double sum = 0;
		size_t i = 0;

		/* scores of 8 positions at a time: a[s] = scale * sum_d q[d] k[d][s];
		 * 64, then 32 at a time first (eight or four independent chains,
		 * each in the order of d, so the same sums: one chain alone
		 * waits on its adds) */
		size_t s0 = 0;
		for (; s0 + 64 <= np; s0 += 64)
			score_chains(8, kt, q, hd, s0, scale, a);
		for (; s0 + 32 <= np; s0 += 32)
			score_chains(4, kt, q, hd, s0, scale, a);
		for (size_t s = s0; s < np; s += 8) {
			v8f acc = { 0 };
			for (size_t k = 0; k < hd; k++) {
				v8f kv;
				memcpy(&kv, kt + s * hd + 8 * k, sizeof kv);
				acc += q[k] * kv;
			}
			acc *= scale;
			memcpy(a + s, &acc, sizeof acc);
		}
		/* softmax: the max (any order gives the same), exp, sums in 4
		 * double chains folded in a fixed order, one reciprocal */
		{
			float m4[4] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY };
			double s4[4] = { 0 };
			float inv;
			size_t s = 0;
			for (; s + 4 <= np; s += 4)
				for (int j = 0; j < 4; j++)
					m4[j] = a[s + j] > m4[j] ? a[s + j] : m4[j];
			for (; s < np; s++)
				m4[0] = a[s] > m4[0] ? a[s] : m4[0];
			mx = fmaxf(fmaxf(m4[0], m4[1]), fmaxf(m4[2], m4[3]));
			for (s = 0; s + 4 <= np; s += 4)
				for (int j = 0; j < 4; j++) {
					a[s + j] = expf(a[s + j] - mx);
					s4[j] += (double)a[s + j];
				}
			for (; s < np; s++) {
				a[s] = expf(a[s] - mx);
				s4[0] += (double)a[s];
			}
			sum = (s4[0] + s4[1]) + (s4[2] + s4[3]);
			inv = (float)(1.0 / sum);
			for (s = 0; s < np; s++)
				a[s] *= inv;
		}
		/* out = sum_s w[s] v[s], 8 elements of the head at a time; 64 at
		 * a time first (eight independent chains, each over s in order:
		 * the same sums, with v read along its rows) */
		for (; i + 64 <= hd; i += 64) {
			v8f o[8] = { { 0 } };
			for (size_t s = 0; s < np; s++) {
				const float *vp = vh + s * hd + i;
#pragma GCC unroll 8
				for (int j = 0; j < 8; j++) {
					v8f vv;
					memcpy(&vv, vp + 8 * j, sizeof vv);
					o[j] += a[s] * vv;
				}
			}
			memcpy(out + i, o, sizeof o);
		}
		for (; i + 8 <= hd; i += 8) {
			v8f o = { 0 };
			for (size_t s = 0; s < np; s++) {
				v8f vv;
				memcpy(&vv, vh + s * hd + i, sizeof vv);
				o += a[s] * vv;
			}
			memcpy(out + i, &o, sizeof o);
		}
		for (; i < hd; i++) {
			float o = 0;
			for (size_t s = 0; s < np; s++)
				o += a[s] * vh[s * hd + i];
			out[i] = o;
		}
	}
}

static void attend_ref(void *ctx, size_t b0, size_t e, unsigned t)
{
	attend_body(ctx, b0, e, t);
}

__attribute__((target("avx2"))) static void attend_avx2(void *ctx, size_t b0, size_t e,
                                                        unsigned t)
{
	attend_body(ctx, b0, e, t);
}

/* k and v (n, n_head_kv * head_dim) of positions pos.. into the caches'
 * layouts (key: blocks of 8 positions; value: head by head). */
static void store_kv(qtk_rt_lm_ctx *c, size_t l, size_t n, size_t pos)
{
	const qtk_rt_lm_desc *d = &c->lm->d;
	size_t hd = d->head_dim, kvd = (size_t)d->n_head_kv * hd, ld = c->n_ctx8;
	float *kc = c->key_cache + l * kvd * ld, *vc = c->value_cache + l * kvd * ld;

	for (size_t b = 0; b < n; b++) {
		size_t p = pos + b;
		for (size_t j = 0; j < kvd; j++) {
			size_t kvh = j / hd, e = j % hd;
			kc[kvh * hd * ld + (p & ~(size_t)7) * hd + 8 * e + (p & 7)] = c->k[b * kvd + j];
			vc[(kvh * ld + p) * hd + e] = c->v[b * kvd + j];
		}
	}
}

/* Each token of the step alone at position 0 (qtk_rt_lm_forward_each):
 * its one score's softmax is 1, so each head's output is its own value
 * vector (the kv head of its group). */
static void attend_self(qtk_rt_lm_ctx *c, size_t n)
{
	const qtk_rt_lm_desc *d = &c->lm->d;
	size_t hd = d->head_dim, kvd = (size_t)d->n_head_kv * hd, qd = (size_t)d->n_head * hd;
	size_t grp = d->n_head / d->n_head_kv;

	for (size_t b = 0; b < n; b++)
		for (size_t h = 0; h < d->n_head; h++)
			memcpy(c->att_out + b * qd + h * hd, c->v + b * kvd + (h / grp) * hd,
			       hd * sizeof(float));
}

/* One attention block over the step's n tokens at positions pos..pos+n-1
 * (each: every token alone at position 0):
 * x += wo(attention(rope(wq(xb)), rope(wk(xb)), wv(xb))), xb = rmsnorm(x). */
static qtk_err attention_block(qtk_rt_lm_ctx *c, size_t l, size_t n, size_t pos, int each,
                               qtk_status *st)
{
	const qtk_rt_lm_desc *d = &c->lm->d;
	const lm_layer *L = &c->lm->layers[l];
	att_job J = { c, l, pos };

	rmsnorm(c->xb, c->x, L->attn_norm, n, d->n_embd, d->rms_eps);
	QTK_TRY(linear(c, L->wq, c->xb, n, c->q, st));
	QTK_TRY(linear(c, L->wk, c->xb, n, c->k, st));
	QTK_TRY(linear(c, L->wv, c->xb, n, c->v, st));
	if (each) {
		attend_self(c, n);
	} else {
		rope(c, c->q, n, d->n_head);
		rope(c, c->k, n, d->n_head_kv);
		store_kv(c, l, n, pos);
		qtk_rt_pool_run(c->pool, n * d->n_head,
		                qtk_isa_active() >= QTK_ISA_AVX2 ? attend_avx2 : attend_ref, &J);
	}
	QTK_TRY(linear(c, L->wo, c->att_out, n, c->xb, st));
	for (size_t i = 0; i < n * d->n_embd; i++)
		c->x[i] += c->xb[i];
	return QTK_OK;
}

/* ===================================================================== */
/* Feed-forward (SwiGLU)                                                  */
/* ===================================================================== */

/* x += w_down(silu(w_gate(xb)) * w_up(xb)), xb = rmsnorm(x). */
static qtk_err ffn_block(qtk_rt_lm_ctx *c, size_t l, size_t n, qtk_status *st)
{
	const qtk_rt_lm_desc *d = &c->lm->d;
	const lm_layer *L = &c->lm->layers[l];

	rmsnorm(c->xb, c->x, L->ffn_norm, n, d->n_embd, d->rms_eps);
	QTK_TRY(linear(c, L->w_gate, c->xb, n, c->hb, st));
	QTK_TRY(linear(c, L->w_up, c->xb, n, c->hb2, st));
	for (size_t i = 0; i < n * d->n_ff; i++) {
		float g = c->hb[i];
		c->hb[i] = g / (1.0f + expf(-g)) * c->hb2[i];
	}
	QTK_TRY(linear(c, L->w_down, c->hb, n, c->xb, st));
	for (size_t i = 0; i < n * d->n_embd; i++)
		c->x[i] += c->xb[i];
	return QTK_OK;
}

/* ===================================================================== */
/* The forward                                                            */
/* ===================================================================== */

/* One step: tokens tok[0, n) at positions pos.., the logits of tokens
 * lo..n-1 into logits (n - lo, n_vocab). */
static qtk_err step(qtk_rt_lm_ctx *c, const int32_t *tok, size_t n, size_t pos, size_t lo,
                    int each, float *logits, qtk_status *st)
{
	const qtk_rt_lm *lm = c->lm;
	const qtk_rt_lm_desc *d = &lm->d;
	size_t dim = d->n_embd, from;

	/* ---- token embedding: just the rows looked up, dequantized ---- */
	for (size_t b = 0; b < n; b++)
		lm_rows_f32(lm->embd, &lm->embd_layout, lm->embd_scales, (uint64_t)tok[b], 1,
		            c->x + b * dim);
	if (!each)
		rope_tables(c, n, pos);

	/* ---- the blocks ---- */
	for (size_t l = 0; l < d->n_layer; l++) {
		QTK_TRY(attention_block(c, l, n, pos, each, st));
		QTK_TRY(ffn_block(c, l, n, st));
	}

	/* ---- final norm and output head (rows that need logits; all rows
	 * when a hook watches the head's input) ---- */
	from = c->hook ? 0 : lo;
	if (from >= n)
		return QTK_OK;
	rmsnorm(c->xb + from * dim, c->x + from * dim, lm->out_norm, n - from, dim, d->rms_eps);
	if (c->hook)
		c->hook(c->hook_user, lm->head->name, c->xb, n, dim);
	if (lo >= n)
		return QTK_OK;
	return qtk_rt_matmul(c->pool, lm->head, c->path, c->xb + lo * dim, n - lo, logits, st);
}

qtk_err qtk_rt_lm_forward(qtk_rt_lm_ctx *c, const int32_t *tokens, size_t n, size_t pos,
                          float *logits, size_t n_logits, qtk_status *st)
{
	const qtk_rt_lm_desc *d;
	size_t end, first;

	if (!c || (n && !tokens) || (n_logits && !logits))
		return qtk_fail(st, QTK_E_ARG, "qtk_rt_lm_forward: NULL argument");
	d = &c->lm->d;
	if (n_logits > n)
		return qtk_fail(st, QTK_E_ARG, "%s: logits of %zu tokens asked from a step of %zu",
		                c->lm->path, n_logits, n);
	if (__builtin_add_overflow(pos, n, &end) || end > c->n_ctx)
		return qtk_fail(st, QTK_E_ARG, "%s: positions %zu..%zu are past the context of %u",
		                c->lm->path, pos, pos + n - 1, c->n_ctx);
	for (size_t i = 0; i < n; i++)
		if (tokens[i] < 0 || (uint32_t)tokens[i] >= d->n_vocab)
			return qtk_fail(st, QTK_E_ARG, "%s: token id %d (input %zu) is outside the "
			                "vocabulary of %u", c->lm->path, (int)tokens[i], i, d->n_vocab);
	first = n - n_logits;
	for (size_t s = 0; s < n; s += c->n_batch) {
		size_t m = n - s < c->n_batch ? n - s : c->n_batch;
		size_t lo = first > s ? (first - s < m ? first - s : m) : 0;

		QTK_TRY(step(c, tokens + s, m, pos + s, lo, 0, logits, st));
		logits += (m - lo) * d->n_vocab;
	}
	return QTK_OK;
}

qtk_err qtk_rt_lm_forward_each(qtk_rt_lm_ctx *c, const int32_t *tokens, size_t n,
                               float *logits, qtk_status *st)
{
	const qtk_rt_lm_desc *d;

	if (!c || (n && !tokens))
		return qtk_fail(st, QTK_E_ARG, "qtk_rt_lm_forward_each: NULL argument");
	d = &c->lm->d;
	for (size_t i = 0; i < n; i++)
		if (tokens[i] < 0 || (uint32_t)tokens[i] >= d->n_vocab)
			return qtk_fail(st, QTK_E_ARG, "%s: token id %d (input %zu) is outside the "
			                "vocabulary of %u", c->lm->path, (int)tokens[i], i, d->n_vocab);
	for (size_t s = 0; s < n; s += c->n_batch) {
		size_t m = n - s < c->n_batch ? n - s : c->n_batch;

		QTK_TRY(step(c, tokens + s, m, 0, logits ? 0 : m, 1, logits, st));
		if (logits)
			logits += m * d->n_vocab;
	}
	return QTK_OK;
}
