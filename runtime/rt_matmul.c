/* runtime: qtk_rt_matmul — checks the weight view, finds the kernel kind
 * from quant's scheme table (code_bits, mode), prepares the activations,
 * and runs the chosen variant over contiguous row ranges of the pool. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt_private.h"

qtk_err rt_blas_matmul(qtk_rt_pool *pool, const qtk_rt_tensor *w, qtk_dtype dt,
                       const float *x, size_t batch, float *y, qtk_status *st);

/* ---- kernel kinds from the scheme table ------------------------------ */

/* The kind that reads this scheme row, or -1. Only properties of the row
 * are used, so a new row with known properties finds its kernel. */
int rt_kind_of(const qtk_q_scheme *s)
{
	if (!s || !s->quantized)
		return -1;
	switch (s->mode) {
	case QTK_QMODE_SYM:
		if (s->code_bits == 8 && s->code_signed && !s->code_offset)
			return RK_S8;
		if (s->code_bits == 4 && !s->code_signed && s->code_offset < 16)
			return RK_S4;
		return -1;
	case QTK_QMODE_AFFINE:
		return s->code_bits == 8 ? RK_A8 : s->code_bits == 4 ? RK_A4 : -1;
	case QTK_QMODE_LOOKUP:
		return s->code_bits == 4 && s->levels ? RK_L4 : -1;
	default:
		return -1;
	}
}

/* Float storage the BLAS path reads, or -1. */
static int float_dtype(const qtk_q_layout *L)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);
	qtk_dtype dt;

	if (!s)
		return -1;
	if (s->mode == QTK_QMODE_FLOAT)
		dt = s->store_dtype;
	else if (s->mode == QTK_QMODE_RAW)
		dt = L->dtype;
	else
		return -1;
	return dt == QTK_DT_F32 || dt == QTK_DT_F16 || dt == QTK_DT_BF16 ? (int)dt : -1;
}

int qtk_rt_supported(const qtk_q_layout *L)
{
	if (!L || qtk_q_layout_check(L, 1, 1, NULL) != QTK_OK)
		return 0;
	return float_dtype(L) >= 0 || rt_kind_of(qtk_q_scheme_get(L->scheme)) >= 0;
}

/* ---- variant choice ---------------------------------------------------- */

/* What the tests and QTK_VNNI=0 / QTK_GFNI=0 allow; -1: not read yet. */
static int allow_vnni = -1, allow_gfni = -1;

static int allowed(int *flag, const char *env)
{
	int v = __atomic_load_n(flag, __ATOMIC_RELAXED);

	if (v < 0) {
		const char *e = getenv(env);
		v = !(e && !strcmp(e, "0"));
		__atomic_store_n(flag, v, __ATOMIC_RELAXED);
	}
	return v;
}

int rt_use_vnni(qtk_isa isa)
{
	if (!allowed(&allow_vnni, "QTK_VNNI"))
		return 0;
	return isa == QTK_ISA_AVX512 ? qtk_cpu_has(QTK_CPU_AVX512VNNI)
	                             : isa == QTK_ISA_AVX2 && qtk_cpu_has(QTK_CPU_AVXVNNI);
}

/* GFNI unpacks 4-bit codes in one instruction; used with AVX-512 VNNI. */
static int use_gfni(qtk_isa isa)
{
	return rt_use_vnni(isa) && isa == QTK_ISA_AVX512 && allowed(&allow_gfni, "QTK_GFNI") &&
	       qtk_cpu_has(QTK_CPU_GFNI);
}

int qtk_rt_allow_vnni(int allow)
{
	int old = allowed(&allow_vnni, "QTK_VNNI");

	__atomic_store_n(&allow_vnni, allow ? 1 : 0, __ATOMIC_RELAXED);
	return old;
}

int qtk_rt_allow_gfni(int allow)
{
	int old = allowed(&allow_gfni, "QTK_GFNI");

	__atomic_store_n(&allow_gfni, allow ? 1 : 0, __ATOMIC_RELAXED);
	return old;
}

const char *qtk_rt_variant(void)
{
	qtk_isa isa = qtk_isa_active();

	if (isa == QTK_ISA_AVX512)
		return use_gfni(isa) ? "avx512-vnni-gfni" : rt_use_vnni(isa) ? "avx512-vnni" : "avx512";
	if (isa == QTK_ISA_AVX2)
		return rt_use_vnni(isa) ? "avx2-vnni" : "avx2";
	return "scalar";
}

/* ---- checks ------------------------------------------------------------ */

static const char *tname(const qtk_rt_tensor *w)
{
	return w->name ? w->name : "?";
}

qtk_err rt_check_view(const qtk_rt_tensor *w, qtk_status *st)
{
	uint64_t sz[QTK_PLANE_MAX];
	qtk_err rc;

	rc = qtk_q_layout_check(&w->layout, w->rows, w->cols, st);
	if (rc) {
		qtk_status_prefix(st, tname(w));
		return rc;
	}
	if (w->rows == 0 || w->cols == 0)
		return qtk_fail(st, QTK_E_ARG, "tensor '%s': empty matrix [%llu][%llu]", tname(w),
		                (unsigned long long)w->rows, (unsigned long long)w->cols);
	if (qtk_q_plane_sizes(&w->layout, w->rows, w->cols, sz) != QTK_OK)
		return qtk_fail(st, QTK_E_OVERFLOW, "tensor '%s': plane sizes overflow", tname(w));
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		if (w->planes[p].size != sz[p])
			return qtk_fail(st, QTK_E_ARG,
			                "tensor '%s': plane %d has %llu bytes, the layout needs %llu",
			                tname(w), p, (unsigned long long)w->planes[p].size,
			                (unsigned long long)sz[p]);
		if (sz[p] && !w->planes[p].data)
			return qtk_fail(st, QTK_E_ARG, "tensor '%s': plane %d has no data", tname(w), p);
	}
	return QTK_OK;
}

qtk_err qtk_rt_tensor_init(qtk_rt_tensor *t, const char *name, const qtk_q_layout *L,
                           uint64_t rows, uint64_t cols,
                           const void *const planes[QTK_PLANE_MAX], qtk_status *st)
{
	const qtk_q_scheme *sc;
	uint64_t sz[QTK_PLANE_MAX];

	if (!t || !L || !planes)
		return qtk_fail(st, QTK_E_ARG, "tensor '%s': NULL argument", name ? name : "?");
	memset(t, 0, sizeof *t);
	QTK_TRY(qtk_q_layout_check(L, rows, cols, st));
	if (qtk_q_plane_sizes(L, rows, cols, sz) != QTK_OK)
		return qtk_fail(st, QTK_E_OVERFLOW, "tensor '%s': plane sizes overflow",
		                name ? name : "?");
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		if (sz[p] && !planes[p])
			return qtk_fail(st, QTK_E_ARG, "tensor '%s': plane %d missing",
			                name ? name : "?", p);
	sc = qtk_q_scheme_get(L->scheme);
	t->name = name;
	t->ndim = 2;
	t->shape[0] = rows;
	t->shape[1] = cols;
	t->src_dtype = QTK_DT_F32;
	t->layout = *L;
	t->scheme = L->scheme;
	t->group = L->group;
	t->rows = rows;
	t->cols = cols;
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		t->planes[p].size = sz[p];
		t->planes[p].data = sz[p] ? planes[p] : NULL;
	}
	t->planes[QTK_PLANE_CODES].dtype = sc->float_store ? sc->store_dtype
	                                 : sc->quantized ? QTK_DT_U8 : L->dtype;
	t->planes[QTK_PLANE_SCALES].dtype = (L->flags & QTK_QF_DOUBLE_QUANT) ? QTK_DT_U8
	                                                                     : L->scale_dtype;
	t->planes[QTK_PLANE_BIASES].dtype = L->scale_dtype;
	t->planes[QTK_PLANE_DQ].dtype = QTK_DT_F32;
	return QTK_OK;
}

/* ---- the job ----------------------------------------------------------- */

void rt_build_job(rt_job *J, const qtk_rt_tensor *w, int kind, qtk_rt_path path)
{
	const qtk_q_layout *L = &w->layout;
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);

	memset(J, 0, sizeof *J);
	J->codes = w->planes[QTK_PLANE_CODES].data;
	J->cb = (size_t)qtk_q_row_bytes(L, w->cols, QTK_PLANE_CODES);
	J->scales = w->planes[QTK_PLANE_SCALES].data;
	J->biases = w->planes[QTK_PLANE_BIASES].data;
	J->dq = (L->flags & QTK_QF_DOUBLE_QUANT) ? w->planes[QTK_PLANE_DQ].data : NULL;
	J->sdt = L->scale_dtype;
	J->rows = (size_t)w->rows;
	J->cols = (size_t)w->cols;
	J->gl = L->group == QTK_GROUP_ROW ? J->cols : L->group;
	J->gpr = (size_t)qtk_q_groups_per_row(L, w->cols);
	J->gshift = L->group == QTK_GROUP_ROW ? -1 : __builtin_ctz(L->group);
	J->kind = (rt_kind)kind;
	J->off = s->code_offset;
	J->path = path;
	/* lane group offsets within a pair (the same for every pair: groups
	 * of 16 and 32 repeat every 64 elements, larger ones cover a pair) */
	int order = RK_BITS(kind) == 4;
	size_t g00 = rt_group(J, rt_elem(order, 0, 0));
	for (unsigned l = 0; l < 16; l++) {
		J->gidx[l] = (int32_t)(rt_group(J, rt_elem(order, l / 8, 4 * (l % 8))) - g00);
		J->gperm |= J->gidx[l] != 0;
	}
	for (unsigned i = 0; i < 4; i++) {
		J->funi[i] = -2;
		for (unsigned t = 0; t < 16; t++) {
			int32_t o = (int32_t)(rt_group(J, rt_elem(order, i / 2, 16 * (i % 2) + t)) - g00);
			J->fidx[i][t] = o;
			J->funi[i] = J->funi[i] == -2 || J->funi[i] == o ? o : -1;
		}
	}
	if (kind == RK_L4)
		for (int i = 0; i < 16; i++) {
			float v = rintf(127.0f * s->levels[i]);
			J->lut_s[i] = (int8_t)v;
			J->lut_u[i] = (uint8_t)(J->lut_s[i] + 128);
			J->lut_f[i] = s->levels[i];
		}
}

qtk_err qtk_rt_row_f32(const qtk_rt_tensor *w, uint64_t row, float *out, qtk_status *st)
{
	const qtk_q_layout *L;
	qtk_q_cplanes cp;
	int fdt;

	if (!w || !out)
		return qtk_fail(st, QTK_E_ARG, "row_f32: NULL tensor or output");
	QTK_TRY(rt_check_view(w, st));
	if (row >= w->rows)
		return qtk_fail(st, QTK_E_ARG, "tensor '%s': row %llu of %llu", tname(w),
		                (unsigned long long)row, (unsigned long long)w->rows);
	L = &w->layout;
	fdt = float_dtype(L);
	if (fdt >= 0)
		return qtk_to_f32((qtk_dtype)fdt,
		                  (const uint8_t *)w->planes[QTK_PLANE_CODES].data +
		                          row * w->cols * qtk_dtype_size((qtk_dtype)fdt),
		                  out, (size_t)w->cols) == QTK_OK ? QTK_OK
		       : qtk_fail(st, QTK_E_UNSUPPORTED, "tensor '%s': cannot widen", tname(w));
	if (rt_kind_of(qtk_q_scheme_get(L->scheme)) < 0)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "tensor '%s': scheme %s holds no numbers",
		                tname(w), qtk_q_scheme_get(L->scheme)->name);
	for (int p = 0; p < QTK_PLANE_DQ; p++) {
		uint64_t rb = qtk_q_row_bytes(L, w->cols, p);
		cp.p[p] = rb ? (const uint8_t *)w->planes[p].data + row * rb : NULL;
	}
	cp.p[QTK_PLANE_DQ] = NULL;
	if (L->flags & QTK_QF_DOUBLE_QUANT) { /* the absmax values, then the F32-scale layout */
		rt_job J;
		size_t gpr = (size_t)qtk_q_groups_per_row(L, w->cols);
		float *ws = qtk_malloc((gpr + RT_SPAD) * sizeof(float));
		qtk_q_layout Lf = *L;
		if (!ws)
			return qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory", tname(w));
		rt_build_job(&J, w, rt_kind_of(qtk_q_scheme_get(L->scheme)), QTK_RT_FLOAT);
		rt_row_scales_ref(&J, (size_t)row, ws, NULL);
		Lf.flags &= ~QTK_QF_DOUBLE_QUANT;
		Lf.scale_dtype = QTK_DT_F32;
		cp.p[QTK_PLANE_SCALES] = ws;
		qtk_q_dequantize_rows(&Lf, &cp, 1, (size_t)w->cols, out);
		qtk_free(ws);
		return QTK_OK;
	}
	qtk_q_dequantize_rows(L, &cp, 1, (size_t)w->cols, out);
	return QTK_OK;
}

/* What the SIMD kernels add to their integer lane sums, per unit of the
 * lane sum of the activations: the offset of codes they read unsigned
 * (VNNI) or a sign flip of 8-bit affine codes (maddubs). */
int rt_corr_of(const rt_job *J)
{
	switch (J->kind) {
	case RK_S4: return -J->off;
	case RK_S8:
	case RK_L4: return J->vnni ? -128 : 0;
	case RK_A8: return J->vnni ? 0 : 128;
	default: return 0;
	}
}

size_t rt_scratch_bytes(const rt_job *J)
{
	size_t sc = 2 * RT_TR * (J->gpr + RT_SPAD) * sizeof(float);
	size_t dec = J->path == QTK_RT_FLOAT ? RT_TR * J->act->nbp * RT_BLK * sizeof(float) : 0;

	return sc + dec + 4 * 64;
}

typedef struct {
	const rt_job *J;
	rt_rows_fn fn;
	qtk_rt_pool *pool;
	size_t unit;    /* rows per task */
	size_t scratch; /* bytes */
	int err;
} run_ctx;

static void run_rows(void *ctx, size_t b, size_t e, unsigned t)
{
	run_ctx *c = ctx;
	void *s = rt_pool_scratch(c->pool, t, c->scratch);
	size_t r0 = b * c->unit, r1 = e * c->unit;

	if (!s) {
		__atomic_store_n(&c->err, 1, __ATOMIC_RELAXED);
		return;
	}
	c->fn(c->J, r0, r1 < c->J->rows ? r1 : c->J->rows, s);
}

static qtk_err run_quant(qtk_rt_pool *pool, const qtk_rt_tensor *w, int kind,
                         qtk_rt_path path, const float *x, size_t batch, float *y,
                         qtk_status *st)
{
	qtk_isa isa = qtk_isa_active();
	rt_job J;
	run_ctx c;
	qtk_err rc;

	rt_build_job(&J, w, kind, path);
	J.vnni = rt_use_vnni(isa);
	J.gfni = use_gfni(isa);
	J.y = y;
	rc = rt_act_prepare(rt_pool_act(pool), isa, pool, x, batch, J.cols,
	                    RK_BITS(kind) == 4, path, rt_corr_of(&J));
	if (rc)
		return qtk_fail(st, rc, "tensor '%s': out of memory for %zu input vectors",
		                tname(w), batch);
	J.act = rt_pool_act(pool);
	/* enough vectors per GEMM chunk that their prepared blocks fill about
	 * 1 MB (L2), a multiple of the tile */
	J.tile_cols = (1u << 20) / (J.act->nbp * RT_BLK * 4 + 1);
	J.tile_cols = J.tile_cols < RT_TC ? RT_TC : J.tile_cols - J.tile_cols % RT_TC;
	memset(&c, 0, sizeof c);
	c.J = &J;
	c.fn = isa == QTK_ISA_AVX512 ? rt_rows_avx512
	     : isa == QTK_ISA_AVX2 ? rt_rows_avx2 : rt_rows_scalar;
	c.pool = pool;
	c.unit = 16;
	c.scratch = rt_scratch_bytes(&J);
	qtk_rt_pool_run(pool, (J.rows + c.unit - 1) / c.unit, run_rows, &c);
	if (c.err)
		return qtk_fail(st, QTK_E_NOMEM, "tensor '%s': out of memory for scratch buffers",
		                tname(w));
	return QTK_OK;
}

qtk_err qtk_rt_matmul(qtk_rt_pool *pool, const qtk_rt_tensor *w, qtk_rt_path path,
                      const float *x, size_t batch, float *y, qtk_status *st)
{
	qtk_rt_pool *own = NULL;
	size_t n;
	int kind, fdt;
	qtk_err rc;

	if (!w || !x || !y)
		return qtk_fail(st, QTK_E_ARG, "matmul: NULL weight, input or output");
	if (batch == 0)
		return qtk_fail(st, QTK_E_ARG, "tensor '%s': batch of 0 vectors", tname(w));
	if (path != QTK_RT_FLOAT && path != QTK_RT_INT8)
		return qtk_fail(st, QTK_E_ARG, "tensor '%s': unknown activation path %d", tname(w),
		                (int)path);
	QTK_TRY(rt_check_view(w, st));
	if (__builtin_mul_overflow((size_t)w->cols, batch, &n) ||
	    __builtin_mul_overflow(n, (size_t)64, &n) ||
	    __builtin_mul_overflow((size_t)w->rows, batch, &n))
		return qtk_fail(st, QTK_E_OVERFLOW, "tensor '%s': batch of %zu overflows", tname(w),
		                batch);
	fdt = float_dtype(&w->layout);
	kind = rt_kind_of(qtk_q_scheme_get(w->layout.scheme));
	if (fdt < 0 && kind < 0)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "tensor '%s': no kernel reads scheme %s",
		                tname(w), qtk_q_scheme_get(w->layout.scheme)->name);
	if (!pool) {
		QTK_TRY(qtk_rt_pool_create(1, &own, st));
		pool = own;
	}
	rt_pool_lock(pool);
	if (fdt >= 0)
		rc = rt_blas_matmul(pool, w, (qtk_dtype)fdt, x, batch, y, st);
	else if (path == QTK_RT_INT8 && w->ilv)
		rc = rt_ilv_matmul(pool, w, x, batch, y, st);
	else
		rc = run_quant(pool, w, kind, path, x, batch, y, st);
	rt_pool_unlock(pool);
	qtk_rt_pool_free(own);
	return rc;
}
