/* runtime: the integer path on row-interleaved weights (rt_ilv in
 * rt_private.h, docs/kernels.md "Interleaved weights"): making the copy,
 * the scalar reference that defines the result, and the driver.
 *
 * The result, per row r and vector b, over the blocks k < nb of 32
 * positions (elements 32k..32k+31, in order):
 *   p   = sum over the block of v(code) * q      (exact integer)
 *   acc = fmaf((float) p, ws * d_k, acc)          (acc starts at 0)
 * with ws the row's scale of the block's group (NF4: absmax / 127), d_k
 * the activation block's scale (rt_act, order 0) and ws * d_k one f32
 * multiply; y = acc. The SIMD kernels keep 16 (AVX-512) or 8 (AVX2) rows
 * in a vector's lanes and do the same f32 steps per lane, so they give
 * these bytes. */
#include <math.h>
#include <string.h>

#include "rt_private.h"

/* ---- the copy ----------------------------------------------------------- */

static int ilv_kind(const qtk_rt_tensor *t, int *gshift)
{
	const qtk_q_layout *L = &t->layout;
	int kind = rt_kind_of(qtk_q_scheme_get(L->scheme));

	if (kind != RK_S4 && kind != RK_S8 && kind != RK_L4)
		return -1;
	if (L->group == QTK_GROUP_ROW) {
		*gshift = -1;
		return kind;
	}
	if (L->group < RT_BLK || (L->group & (L->group - 1)))
		return -1;
	*gshift = __builtin_ctz(L->group);
	return kind;
}

static unsigned code_of(const rt_job *J, const uint8_t *row, size_t e)
{
	if (e >= J->cols)
		return 0;
	return RK_BITS(J->kind) == 8 ? row[e] : (row[e >> 1] >> ((e & 1) * 4)) & 15;
}

/* Block k of a row whose 32 positions lie inside it, into lane l of blk
 * (the common case, without per-element checks). */
static void put_block(const rt_ilv *I, const uint8_t *row, size_t k, unsigned l, uint8_t *blk)
{
	if (I->bb == 512) {
		for (unsigned j = 0; j < 8; j++)
			memcpy(blk + 64 * j + 4 * l, row + k * RT_BLK + 4 * j, 4);
		return;
	}
	const uint8_t *src = row + k * RT_BLK / 2; /* element 2i low, 2i+1 high */
	for (unsigned h = 0; h < 4; h++)
		for (unsigned t = 0; t < 4; t++) {
			unsigned p = 4 * h + t, q = p + 16;
			unsigned lo = (src[p >> 1] >> ((p & 1) * 4)) & 15;
			unsigned hi = (src[q >> 1] >> ((q & 1) * 4)) & 15;
			blk[64 * h + 4 * l + t] = (uint8_t)(lo | hi << 4);
		}
}

/* Row r of the weight into its lane of group r / RT_IR. */
static void put_row(const rt_job *J, rt_ilv *I, size_t r, float *ws)
{
	const uint8_t *row = J->codes + r * J->cb;
	size_t g = r / RT_IR, l = r % RT_IR, kfull = J->cols / RT_BLK;

	for (size_t k = 0; k < I->nb; k++) {
		uint8_t *blk = I->codes + (g * I->nb + k) * I->bb;
		if (k < kfull) {
			put_block(I, row, k, (unsigned)l, blk);
			continue;
		}
		for (unsigned p = 0; p < RT_BLK; p++) {
			unsigned c = code_of(J, row, k * RT_BLK + p);
			if (I->bb == 512)
				blk[64 * (p / 4) + 4 * l + p % 4] = (uint8_t)c;
			else
				blk[64 * ((p % 16) / 4) + 4 * l + p % 4] |= (uint8_t)(c << (p / 16 * 4));
		}
	}
	if (I->sh) { /* the F16 bits as stored */
		for (size_t s = 0; s < I->gpr; s++)
			memcpy((uint16_t *)I->scales + (g * I->gpr + s) * RT_IR + l,
			       J->scales + 2 * (r * J->gpr + s), 2);
		return;
	}
	rt_row_scales_ref(J, r, ws, NULL);
	for (size_t s = 0; s < I->gpr; s++)
		((float *)I->scales)[(g * I->gpr + s) * RT_IR + l] = ws[s];
}

typedef struct {
	const rt_job *J;
	rt_ilv *I;
	int err;
} fill_ctx;

/* Groups [g0, g1): their rows, with a thread's scratch for the scales. */
static void fill_groups(void *ctx, size_t g0, size_t g1, unsigned t)
{
	fill_ctx *c = ctx;
	float *ws = qtk_malloc((c->J->gpr + RT_SPAD) * sizeof(float));

	(void)t;
	if (!ws) {
		__atomic_store_n(&c->err, 1, __ATOMIC_RELAXED);
		return;
	}
	for (size_t r = g0 * RT_IR; r < g1 * RT_IR && r < c->I->rows; r++)
		put_row(c->J, c->I, r, ws);
	qtk_free(ws);
}

/* The sizes of the copy's arrays; QTK_E_OVERFLOW. */
static qtk_err ilv_sizes(const rt_ilv *I, size_t *ncodes, size_t *nscales)
{
	size_t n;

	if (__builtin_mul_overflow(I->ngr, I->nb, &n) || __builtin_mul_overflow(n, I->bb, ncodes) ||
	    __builtin_mul_overflow(I->ngr, I->gpr, &n) ||
	    __builtin_mul_overflow(n, RT_IR * (size_t)(I->sh ? 2 : 4), nscales) ||
	    *ncodes > SIZE_MAX - *nscales - 128)
		return QTK_E_OVERFLOW;
	return QTK_OK;
}

static qtk_err ilv_alloc(rt_ilv *I, const qtk_rt_tensor *t, qtk_status *st)
{
	size_t nc, ns;
	uint8_t *m;

	if (ilv_sizes(I, &nc, &ns))
		return qtk_fail(st, QTK_E_OVERFLOW, "tensor '%s': interleaved copy too large",
		                t->name ? t->name : "?");
	I->mem = qtk_calloc(1, nc + ns + 128);
	if (!I->mem)
		return qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory for its interleaved copy",
		                t->name ? t->name : "?");
	m = (uint8_t *)I->mem + (64 - (uintptr_t)I->mem % 64) % 64;
	I->codes = m;
	I->scales = m + (nc + 63) / 64 * 64;
	return QTK_OK;
}

qtk_err qtk_rt_interleave(qtk_rt_tensor *t, qtk_rt_pool *pool, qtk_status *st)
{
	rt_ilv *I;
	rt_job J;
	fill_ctx c;
	int kind, gshift = -1;
	qtk_err rc;

	if (!t)
		return qtk_fail(st, QTK_E_ARG, "interleave: NULL tensor");
	QTK_TRY(rt_check_view(t, st));
	if (t->ilv || (kind = ilv_kind(t, &gshift)) < 0)
		return QTK_OK;
	if (!(I = qtk_calloc(1, sizeof *I)))
		return qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory", t->name ? t->name : "?");
	rt_build_job(&J, t, kind, QTK_RT_INT8);
	I->kind = (rt_kind)kind;
	I->rows = J.rows;
	I->cols = J.cols;
	I->ngr = (J.rows + RT_IR - 1) / RT_IR;
	I->nb = (J.cols + RT_BLK - 1) / RT_BLK;
	I->gpr = J.gpr;
	I->gshift = gshift;
	I->bb = RK_BITS(kind) == 8 ? 512 : 256;
	I->off = J.off;
	I->sh = kind != RK_L4 && !J.dq && J.sdt == QTK_DT_F16;
	memcpy(I->lut_s, J.lut_s, sizeof I->lut_s);
	memcpy(I->lut_u, J.lut_u, sizeof I->lut_u);
	if ((rc = ilv_alloc(I, t, st))) {
		qtk_free(I);
		return rc;
	}
	memset(&c, 0, sizeof c);
	c.J = &J;
	c.I = I;
	qtk_rt_pool_run(pool, I->ngr, fill_groups, &c);
	if (c.err) {
		qtk_free(I->mem);
		qtk_free(I);
		return qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory",
		                t->name ? t->name : "?");
	}
	t->ilv = I;
	return QTK_OK;
}

uint64_t qtk_rt_interleaved_bytes(const qtk_rt_tensor *t)
{
	const rt_ilv *I = t ? t->ilv : NULL;
	size_t nc, ns;

	if (!I || ilv_sizes(I, &nc, &ns))
		return 0;
	return (uint64_t)nc + ns;
}

void qtk_rt_uninterleave(qtk_rt_tensor *t)
{
	rt_ilv *I = t ? t->ilv : NULL;

	if (!I)
		return;
	qtk_free(I->mem);
	qtk_free(I);
	t->ilv = NULL;
}

qtk_err qtk_rt_model_interleave(qtk_rt_model *m, const qtk_rt_tensor *t, qtk_rt_pool *pool,
                                qtk_status *st)
{
	if (!m || !t || t < m->t || t >= m->t + m->n)
		return qtk_fail(st, QTK_E_ARG, "interleave: not a tensor of this model");
	/* the model owns its views: this is the one place they change */
	QTK_TRY(qtk_rt_interleave(&m->t[t - m->t], pool, st));
	if (t->ilv)
		rt_release_pages(t);
	return QTK_OK;
}

/* ---- the reference ------------------------------------------------------ */

static int ival(const rt_ilv *I, unsigned c)
{
	switch (I->kind) {
	case RK_S8: return (int8_t)c;
	case RK_S4: return (int)c - I->off;
	default: return I->lut_s[c & 15];
	}
}

/* Code of row lane l, position p of a block of a group. */
static unsigned ilv_code(const rt_ilv *I, const uint8_t *blk, unsigned l, unsigned p)
{
	if (I->bb == 512)
		return blk[64 * (p / 4) + 4 * l + p % 4];
	return (blk[64 * ((p % 16) / 4) + 4 * l + p % 4] >> (p / 16 * 4)) & 15;
}

static float ilv_row(const rt_ilv *I, const rt_act *A, size_t g, unsigned l, size_t b)
{
	const int8_t *q = A->q + b * A->nbp * RT_BLK;
	const float *d = A->d + b * A->nbp * 8;
	size_t s0 = g * I->gpr * RT_IR;
	float acc = 0.0f;

	for (size_t k = 0; k < I->nb; k++) {
		const uint8_t *blk = I->codes + (g * I->nb + k) * I->bb;
		size_t s = I->gshift < 0 ? 0 : (k * RT_BLK) >> I->gshift;
		int32_t p = 0;
		for (unsigned t = 0; t < RT_BLK; t++)
			p += ival(I, ilv_code(I, blk, l, t)) * q[k * RT_BLK + t];
		size_t si = s0 + s * RT_IR + l;
		float ws = I->sh ? qtk_f16_to_f32(((const uint16_t *)I->scales)[si])
		                 : ((const float *)I->scales)[si];
		acc = fmaf((float)p, ws * d[k * 8], acc);
	}
	return acc;
}

void rt_ilv_scalar(const rt_ijob *J, size_t g0, size_t g1)
{
	const rt_ilv *I = J->L;

	for (size_t g = g0; g < g1; g++)
		for (unsigned l = 0; l < RT_IR && g * RT_IR + l < I->rows; l++)
			for (size_t b = 0; b < J->act->batch; b++)
				J->y[b * I->rows + g * RT_IR + l] = ilv_row(I, J->act, g, l, b);
}

/* ---- the driver --------------------------------------------------------- */

int rt_ilv_streams(size_t g0, size_t g1, int n, size_t step, size_t *gs)
{
	size_t len = g1 > g0 ? g1 - g0 : 0, h, r;

	if ((size_t)n > len)
		n = (int)len;
	if (n <= 0)
		return 0;
	h = len / (size_t)n;
	if (step < h) { /* n parts of h groups, one group of each per step */
		for (int j = 0; j < n; j++)
			gs[j] = g0 + (size_t)j * h + step;
		return n;
	}
	r = len - (size_t)n * h; /* the rest, fewer than n, side by side */
	if (step > h || r == 0)
		return 0;
	for (size_t j = 0; j < r; j++)
		gs[j] = g0 + (size_t)n * h + j;
	return (int)r;
}

int rt_ilv_corr(rt_kind kind, int vnni, int off)
{
	/* VNNI reads S8 as c + 128 and NF4 through the table + 128; both and
	 * maddubs read S4's codes unsigned */
	if (kind == RK_S4)
		return -off;
	return vnni ? -128 : 0;
}

typedef struct {
	const rt_ijob *J;
	rt_ilv_fn fn;
} ilv_run;

static void run_groups(void *ctx, size_t g0, size_t g1, unsigned t)
{
	const ilv_run *c = ctx;

	(void)t;
	c->fn(c->J, g0, g1);
}

qtk_err rt_ilv_matmul(qtk_rt_pool *pool, const qtk_rt_tensor *w, const float *x,
                      size_t batch, float *y, qtk_status *st)
{
	qtk_isa isa = qtk_isa_active();
	const rt_ilv *I = w->ilv;
	rt_ijob J;
	ilv_run c;

	J.L = I;
	J.y = y;
	J.vnni = isa == QTK_ISA_AVX512 && rt_use_vnni(isa);
	if (rt_act_prepare(rt_pool_act(pool), isa, pool, x, batch, I->cols, 0, QTK_RT_INT8,
	                   rt_ilv_corr(I->kind, J.vnni, I->off)))
		return qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory for %zu input vectors",
		                w->name ? w->name : "?", batch);
	J.act = rt_pool_act(pool);
	/* vectors per chunk: their int8 blocks fill about 256 KB */
	J.tile_cols = (1u << 18) / (J.act->nbp * RT_BLK + 1);
	J.tile_cols = J.tile_cols < 4 ? 4 : J.tile_cols - J.tile_cols % 4;
	c.J = &J;
	c.fn = isa == QTK_ISA_AVX512 ? rt_ilv_avx512 : isa == QTK_ISA_AVX2 ? rt_ilv_avx2
	                                                                   : rt_ilv_scalar;
	qtk_rt_pool_run(pool, I->ngr, run_groups, &c);
	return QTK_OK;
}
