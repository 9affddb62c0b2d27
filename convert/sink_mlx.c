/* convert: MLX output — what MLX holds of each tensor and how: a
 * quantized P.weight becomes MLX affine P.weight (U32) / P.scales /
 * P.biases (formats/mlx_pack.c), others stay float; and config.json's
 * "quantization" entries. The directory itself (shards, index, config,
 * tokenizer copies) is formats' MLX directory writer (formats/mlx_dir.c). */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv_impl.h"

typedef struct {
	src *s;                   /* the source: its config, tokenizer files */
	qtk_scheme_id main_scheme;/* the recipe's main scheme and group: the */
	uint32_t main_group;      /*   "quantization" entry when a tensor uses it */
	int exact;                /* a .qtk source: refuse instead of changing a layout */
} mlx_cfg;

typedef struct {
	char *name;
	qtk_dtype dtype;
	uint32_t ndim;
	uint64_t shape[QTK_MAX_DIMS];
	uint64_t bytes;
} mlx_out;

typedef struct {
	const char *name;       /* the source tensor's name (borrowed) */
	qtk_dtype src_dtype;
	uint32_t ndim;
	uint64_t cols, nelem;
	int quant;              /* 1: weight / scales / biases */
	int kept;               /* float output of a quantizable-shaped weight */
	unsigned bits, group;
	qtk_dtype sdt;          /* dtype of scales and biases */
	size_t out0, nout;      /* entries in mlx_sink.out */
} mlx_tensor;

typedef struct {
	mlx_cfg c;
	size_t n;
	mlx_tensor *t;          /* [n] */
	mlx_out *out;           /* the directory's tensors, in file order */
	size_t nout, cap;
	qtk_mlx_dir *dir;       /* open: the directory being written */
} mlx_sink;

/* ---- planning ----------------------------------------------------------- */

static qtk_err mlx_begin(mlx_sink **out, const mlx_cfg *c, size_t n, qtk_status *st)
{
	mlx_sink *m = qtk_calloc(1, sizeof *m);

	*out = NULL;
	if (!m)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	m->c = *c;
	m->n = n;
	m->t = qtk_calloc(n ? n : 1, sizeof *m->t);
	if (!m->t) {
		qtk_free(m);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	*out = m;
	return QTK_OK;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

static qtk_err add_out(mlx_sink *m, const char *name, const char *suffix, qtk_dtype dt,
                       uint32_t ndim, const uint64_t *shape, uint64_t last, qtk_status *st)
{
	mlx_out *o;
	size_t len = strlen(name) + (suffix ? strlen(suffix) : 0) + 1;
	uint64_t ne = qtk_dtype_size(dt);

	if (m->nout == m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 64;
		mlx_out *p = qtk_realloc(m->out, cap * sizeof *p);
		if (!p)
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		m->out = p;
		m->cap = cap;
	}
	o = &m->out[m->nout];
	memset(o, 0, sizeof *o);
	o->name = qtk_malloc(len);
	if (!o->name)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	snprintf(o->name, len, "%s%s", name, suffix ? suffix : "");
	o->dtype = dt;
	o->ndim = ndim;
	memcpy(o->shape, shape, ndim * sizeof *shape);
	if (ndim)
		o->shape[ndim - 1] = last;
	for (uint32_t k = 0; k < ndim; k++)
		if (__builtin_mul_overflow(ne, o->shape[k], &ne)) {
			qtk_free(o->name);
			return qtk_fail(st, QTK_E_OVERFLOW, "tensor '%s': MLX size overflows", name);
		}
	o->bytes = ne;
	m->nout++;
	return QTK_OK;
}

/* The float dtype of the model for this weight: its own when F16/BF16/F32. */
static qtk_dtype model_dtype(qtk_dtype dt)
{
	return dt == QTK_DT_F16 || dt == QTK_DT_BF16 ? dt : QTK_DT_F32;
}

/* Why layout L cannot be stored as MLX affine for t (NULL: it can). A row
 * the group does not divide is reported through *undivided. */
static const char *why_not(const src_tensor *t, const qtk_q_layout *L, uint64_t cols,
                           int *undivided, char *buf, size_t n)
{
	unsigned bits, off;
	qtk_status tmp;

	*undivided = 0;
	if (t->ndim < 2) {
		*undivided = 1;
		return "MLX quantizes tensors of 2 or more dims only";
	}
	/* a form MLX holds for rows of one group: only the row length fails */
	if (qtk_mlx_form(L, L->group, &bits, &off, &tmp) == QTK_OK && cols % L->group) {
		*undivided = 1;
		return "the group does not divide its rows";
	}
	if (qtk_mlx_form(L, cols, &bits, &off, &tmp) == QTK_OK)
		return NULL;
	snprintf(buf, n, "%s", tmp.msg);
	return buf;
}

/* Plan tensor i (call in order). Quantized layouts MLX holds become
 * weight/scales/biases (convert: scales in the model's dtype when that is
 * F16/BF16); rows the group does not divide fall back to source precision
 * (convert); anything else (nf4, row groups, other groups) is refused
 * naming the tensor. */
static qtk_err plan_outs(mlx_sink *m, size_t i, const src_tensor *t, qtk_q_layout *L,
                         qtk_status *st)
{
	mlx_tensor *mt = &m->t[i];
	const qtk_q_scheme *sc = qtk_q_scheme_get(L->scheme);
	uint64_t cols = t->ndim ? t->shape[t->ndim - 1] : 1;
	char buf[320];

	mt->name = t->name;
	mt->src_dtype = t->dtype;
	mt->ndim = t->ndim;
	mt->cols = cols;
	mt->nelem = t->nelem;
	mt->out0 = m->nout;
	mt->sdt = model_dtype(t->dtype);
	if (sc->quantized) {
		int undivided;
		const char *why = why_not(t, L, cols, &undivided, buf, sizeof buf);

		if (why && (m->c.exact || !undivided))
			return qtk_fail(st, QTK_E_UNSUPPORTED, "tensor '%s': MLX cannot hold %s/g%u: %s%s",
			                t->name, sc->name, L->group, why, m->c.exact ? "" :
			                " (keep it in float with --keep, or use int4/int8 at group 32/64/128)");
		if (why) {
			/* rows the group does not divide stay at source precision */
			L->scheme = QTK_SCHEME_RAW;
			L->dtype = t->dtype;
			L->group = 0;
			L->flags = 0;
			sc = qtk_q_scheme_get(L->scheme);
		}
	}
	if (sc->quantized) {
		unsigned off;

		qtk_mlx_form(L, cols, &mt->bits, &off, st); /* checked by why_not */
		mt->quant = 1;
		mt->group = L->group;
		if (!m->c.exact && mt->sdt != QTK_DT_F32)
			L->scale_dtype = mt->sdt; /* scales exact in the model's dtype */
		mt->nout = 3;
		QTK_TRY(add_out(m, t->name, NULL, QTK_DT_U32, t->ndim, t->shape,
		                cols * mt->bits / 32, st));
		{
			/* P.weight -> P.scales; another name N -> N.scales */
			size_t plen = strlen(t->name) - (ends_with(t->name, ".weight") ? 7 : 0);
			char *prefix = qtk_malloc(plen + 1);
			qtk_err rc;

			if (!prefix)
				return qtk_fail(st, QTK_E_NOMEM, "out of memory");
			memcpy(prefix, t->name, plen);
			prefix[plen] = 0;
			rc = add_out(m, prefix, ".scales", mt->sdt, t->ndim, t->shape,
			             cols / L->group, st);
			if (!rc)
				rc = add_out(m, prefix, ".biases", mt->sdt, t->ndim, t->shape,
				             cols / L->group, st);
			qtk_free(prefix);
			return rc;
		}
	}
	mt->nout = 1;
	mt->kept = t->ndim == 2 && ends_with(t->name, ".weight") && qtk_dtype_is_float(t->dtype);
	return add_out(m, t->name, NULL, L->scheme == QTK_SCHEME_RAW ? L->dtype : sc->store_dtype,
	               t->ndim, t->shape, cols, st);
}

static qtk_err mlx_plan_tensor(mlx_sink *m, size_t i, const src_tensor *t, qtk_q_layout *L,
                               qtk_status *st)
{
	size_t out0 = m->nout;
	qtk_err rc = plan_outs(m, i, t, L, st);

	/* a failure (out of memory half way) leaves no outputs of tensor i
	 * behind, so that it can be planned again */
	for (; rc && m->nout > out0; m->nout--)
		qtk_free(m->out[m->nout - 1].name);
	return rc;
}

/* Write tensor i's scales/biases in dt instead of the model dtype. */
static qtk_err mlx_set_scale_dtype(mlx_sink *m, size_t i, qtk_dtype dt, qtk_status *st)
{
	mlx_tensor *mt = &m->t[i];

	if (!mt->quant)
		return qtk_fail(st, QTK_E_ARG, "tensor '%s' is not quantized", mt->name);
	mt->sdt = dt;
	for (size_t k = 1; k < 3; k++) {
		mlx_out *o = &m->out[mt->out0 + k];
		o->bytes = o->bytes / qtk_dtype_size(o->dtype) * qtk_dtype_size(dt);
		o->dtype = dt;
	}
	return QTK_OK;
}

static qtk_dtype mlx_model_dtype(const mlx_sink *m, size_t i)
{
	return model_dtype(m->t[i].src_dtype);
}

static uint64_t mlx_tensor_bytes(const mlx_sink *m, size_t i)
{
	uint64_t b = 0;

	for (size_t k = 0; k < m->t[i].nout; k++)
		b += m->out[m->t[i].out0 + k].bytes;
	return b;
}

/* Open the directory with the planned tensors. */
static qtk_err mlx_open(mlx_sink *m, const char *path, const qtk_write_opts *wo,
                        qtk_status *st)
{
	qtk_st_desc *d = qtk_calloc(m->nout ? m->nout : 1, sizeof *d);
	qtk_err rc;

	if (!d)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	for (size_t k = 0; k < m->nout; k++) {
		d[k].name = m->out[k].name;
		d[k].dtype = m->out[k].dtype;
		d[k].ndim = m->out[k].ndim;
		memcpy(d[k].shape, m->out[k].shape, sizeof d[k].shape);
	}
	rc = qtk_mlx_dir_open(&m->dir, path, d, m->nout, wo, st);
	qtk_free(d);
	return rc;
}

/* ---- writing ------------------------------------------------------------ */

/* Bytes [off, off+len) of a tensor written as one float/raw tensor. */
static qtk_err mlx_put_raw(mlx_sink *m, size_t i, uint64_t off, const void *buf, size_t len,
                           qtk_status *st)
{
	return qtk_mlx_dir_put(m->dir, m->t[i].out0, off, buf, len, st);
}

static qtk_err put_out(mlx_sink *m, size_t k, uint64_t off, const void *buf, size_t len,
                       qtk_status *st)
{
	return qtk_mlx_dir_put(m->dir, k, off, buf, len, st);
}

/* MLX scales (biases: 1) of nrows rows of gpr groups into out in dt, row
 * by row so that a value dt cannot hold is named by its row (*bad). */
static qtk_err mlx_params(const qtk_q_layout *L, const qtk_q_cplanes *p, int biases,
                          size_t nrows, size_t gpr, qtk_dtype dt, uint8_t *out, size_t *bad,
                          qtk_status *st)
{
	size_t in = gpr * qtk_dtype_size(L->scale_dtype), ob = gpr * qtk_dtype_size(dt);

	for (size_t r = 0; r < nrows; r++) {
		const uint8_t *sc = (const uint8_t *)p->p[QTK_PLANE_SCALES] + r * in;
		const uint8_t *bi = p->p[QTK_PLANE_BIASES] ?
		                    (const uint8_t *)p->p[QTK_PLANE_BIASES] + r * in : NULL;
		qtk_err rc = biases ? qtk_mlx_biases(L, sc, bi, gpr, dt, out + r * ob, st)
		                    : qtk_mlx_scales(L, sc, gpr, dt, out + r * ob, st);
		if (rc) {
			*bad = r;
			return rc;
		}
	}
	return QTK_OK;
}

/* nrows rows of qtk planes starting at element elem0 (a row start). */
static qtk_err mlx_put_rows(mlx_sink *m, size_t i, const qtk_q_layout *L,
                            const qtk_q_cplanes *p, uint64_t elem0, size_t nrows, size_t cols,
                            qtk_status *st)
{
	const mlx_tensor *mt = &m->t[i];
	const qtk_q_scheme *sc = qtk_q_scheme_get(L->scheme);
	size_t words, gpr, ssz = qtk_dtype_size(mt->sdt);
	uint64_t row0 = cols ? elem0 / cols : 0;
	uint32_t *w = NULL;
	uint8_t *s = NULL;
	size_t bad = nrows;
	qtk_err rc;

	if (!mt->quant) {
		size_t es = qtk_dtype_size(sc->store_dtype);
		return mlx_put_raw(m, i, elem0 * es, p->p[QTK_PLANE_CODES], nrows * cols * es, st);
	}
	words = cols * mt->bits / 32;
	gpr = cols / mt->group;
	w = qtk_malloc(nrows * words * 4 + 1);
	s = qtk_malloc(nrows * gpr * ssz + 1);
	if (!w || !s) {
		rc = qtk_fail(st, QTK_E_NOMEM, "out of memory");
		goto out;
	}
	rc = qtk_mlx_pack_codes(L, p->p[QTK_PLANE_CODES], nrows, cols, w, st);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	for (size_t k = 0; k < nrows * words; k++)
		w[k] = __builtin_bswap32(w[k]);
#endif
	if (!rc)
		rc = put_out(m, mt->out0, row0 * words * 4, w, nrows * words * 4, st);
	if (!rc)
		rc = mlx_params(L, p, 0, nrows, gpr, mt->sdt, s, &bad, st);
	if (!rc)
		rc = put_out(m, mt->out0 + 1, row0 * gpr * ssz, s, nrows * gpr * ssz, st);
	if (!rc)
		rc = mlx_params(L, p, 1, nrows, gpr, mt->sdt, s, &bad, st);
	if (!rc)
		rc = put_out(m, mt->out0 + 2, row0 * gpr * ssz, s, nrows * gpr * ssz, st);
out:
	if (rc && rc != QTK_E_NOMEM) {
		char pre[200];
		if (bad < nrows)
			snprintf(pre, sizeof pre, "tensor '%s': row %llu", mt->name,
			         (unsigned long long)(row0 + bad));
		else
			snprintf(pre, sizeof pre, "tensor '%s': rows from %llu", mt->name,
			         (unsigned long long)row0);
		qtk_status_prefix(st, pre);
	}
	qtk_free(w);
	qtk_free(s);
	return rc;
}

/* ---- commit ------------------------------------------------------------- */

/* The main (bits, group): the recipe's when some tensor uses it, else the
 * one covering most elements. 0 bits: nothing is quantized. */
static void main_form(const mlx_sink *m, unsigned *bits, unsigned *group)
{
	uint64_t best = 0;
	unsigned rb = 0, rg = 0, off;
	qtk_q_layout L = { .scheme = m->c.main_scheme, .group = m->c.main_group };
	qtk_status tmp;

	*bits = *group = 0;
	if (qtk_mlx_form(&L, L.group ? L.group : 1, &rb, &off, &tmp) == QTK_OK)
		rg = L.group;
	for (size_t i = 0; i < m->n; i++) {
		uint64_t sum = 0;
		const mlx_tensor *a = &m->t[i];

		if (!a->quant)
			continue;
		if (a->bits == rb && a->group == rg) {
			*bits = rb;
			*group = rg;
			return;
		}
		for (size_t k = 0; k < m->n; k++)
			if (m->t[k].quant && m->t[k].bits == a->bits && m->t[k].group == a->group)
				sum += m->t[k].nelem;
		if (sum > best) {
			best = sum;
			*bits = a->bits;
			*group = a->group;
		}
	}
}

/* config.json: the source's with the "quantization" entries (the main
 * form, then each module whose form differs or that stayed float), as
 * mlx-lm writes it (4-space indent, sorted keys). */
static qtk_err config_text(const mlx_sink *m, char **text, qtk_status *st)
{
	json_t *cfg, *q;
	unsigned bits, group;

	QTK_TRY(src_config_object(m->c.s, &cfg, st));
	if (!cfg && !(cfg = json_object())) /* none: an empty object */
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	main_form(m, &bits, &group);
	if (bits) {
		q = json_object();
		json_object_set_new(q, "group_size", json_integer(group));
		json_object_set_new(q, "bits", json_integer(bits));
		json_object_set_new(q, "mode", json_string("affine"));
		for (size_t i = 0; i < m->n; i++) {
			const mlx_tensor *t = &m->t[i];
			size_t plen = strlen(t->name) - (ends_with(t->name, ".weight") ? 7 : 0);
			char *key;

			if (!(t->quant && (t->bits != bits || t->group != group)) &&
			    !(t->kept && t->cols % group == 0))
				continue;
			key = qtk_malloc(plen + 1);
			if (!key) {
				json_decref(q);
				json_decref(cfg);
				return qtk_fail(st, QTK_E_NOMEM, "out of memory");
			}
			memcpy(key, t->name, plen);
			key[plen] = 0;
			if (t->quant) {
				json_t *e = json_object();
				json_object_set_new(e, "group_size", json_integer(t->group));
				json_object_set_new(e, "bits", json_integer(t->bits));
				json_object_set_new(q, key, e);
			} else {
				json_object_set_new(q, key, json_false());
			}
			qtk_free(key);
		}
		json_object_set_new(cfg, "quantization_config", json_deep_copy(q));
		json_object_set_new(cfg, "quantization", q);
	}
	*text = json_dumps(cfg, JSON_INDENT(4) | JSON_SORT_KEYS);
	json_decref(cfg);
	return *text ? QTK_OK : qtk_fail(st, QTK_E_NOMEM, "out of memory");
}

static void sink_free(mlx_sink *m)
{
	qtk_mlx_dir_abort(m->dir);
	for (size_t i = 0; i < m->nout; i++)
		qtk_free(m->out[i].name);
	qtk_free(m->out);
	qtk_free(m->t);
	qtk_free(m);
}

/* config.json, then the directory made whole (shards, index, tokenizer
 * copies) and moved into place. Frees m either way. */
static qtk_err mlx_commit(mlx_sink *m, qtk_status *st)
{
	char *cfg = NULL;
	unsigned jm = qtk_json_begin(); /* a jansson guard (qtk_formats.h) */
	qtk_err rc = config_text(m, &cfg, st);

	if (qtk_json_end(jm) && !rc)
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory writing config.json",
		              qtk_mlx_dir_path(m->dir));
	if (!rc) {
		rc = qtk_mlx_dir_commit(m->dir, cfg, strlen(cfg), m->c.s->dir, st);
		m->dir = NULL; /* freed by the commit */
	}
	free(cfg);
	sink_free(m);
	return rc;
}

static void mlx_abort(mlx_sink *m)
{
	if (m)
		sink_free(m);
}

/* ---- the pipeline's sink ------------------------------------------------ */

static qtk_err x_plan(void *ctx, size_t i, const src_tensor *t, qtk_q_layout *L,
                      int *auto_store, int *auto_scales, int scale_dtype_set, qtk_status *st)
{
	mlx_sink *m = ctx;

	(void)auto_store;
	QTK_TRY(mlx_plan_tensor(m, i, t, L, st));
	/* scales in the model's dtype (F16/BF16) are qtk's pick */
	*auto_scales = qtk_q_scheme_get(L->scheme)->quantized &&
	               (!scale_dtype_set || mlx_model_dtype(m, i) != QTK_DT_F32);
	return QTK_OK;
}

static qtk_err x_scales_f32(void *ctx, size_t i, qtk_status *st)
{
	return mlx_set_scale_dtype(ctx, i, QTK_DT_F32, st);
}

static uint64_t x_out_bytes(void *ctx, size_t i, uint64_t rows, uint64_t cols)
{
	(void)rows;
	(void)cols;
	return mlx_tensor_bytes(ctx, i);
}

static qtk_err x_open(void *ctx, const char *path, const qtk_pack_desc *d, size_t n,
                      const qtk_write_opts *wo, qtk_status *st)
{
	(void)d;
	(void)n; /* planned tensor by tensor already */
	return mlx_open(ctx, path, wo, st);
}

static qtk_err x_put_bytes(void *ctx, size_t i, uint64_t off, const void *buf, size_t len,
                           qtk_status *st)
{
	return mlx_put_raw(ctx, i, off, buf, len, st);
}

static qtk_err x_put_rows(void *ctx, size_t i, const qtk_q_layout *L, const qtk_q_cplanes *p,
                          uint64_t elem0, size_t nrows, size_t cols, int flat,
                          sink_scratch *sc, qtk_status *st)
{
	(void)flat; /* elem0 says where either way */
	(void)sc;
	return mlx_put_rows(ctx, i, L, p, elem0, nrows, cols, st);
}

static qtk_err x_commit(void *ctx, const char *meta, qtk_status *st)
{
	(void)meta; /* MLX has no place for it */
	return mlx_commit(ctx, st);
}

static void x_abort(void *ctx)
{
	mlx_abort(ctx);
}

/* A stored layout (a .qtk source) MLX cannot hold: the same bits on MLX's
 * affine grid at group 32/64/128 (64 for others), scales in the model's
 * F16/BF16 else F16 (F32 when a value needs it), from the recorded
 * source; rows the group does not divide, or 1-D: source precision. */
static qtk_err x_requant(void *ctx, size_t i, const src_tensor *t, const char *plan_msg,
                         int requantize, int widen, qtk_q_layout *L, char *why, size_t nwhy,
                         qtk_status *st)
{
	mlx_sink *m = ctx;
	const qtk_q_layout *S = t->stored;
	unsigned bits, off;
	qtk_status tmp;
	qtk_err rc;

	/* plan changes no stored layout (exact): plan_msg says why not */
	snprintf(why, nwhy, "%s", conv_reason(plan_msg ? plan_msg : "?"));
	if (!requantize)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "%s (use --requantize)", plan_msg ? plan_msg : why);
	*L = *S;
	L->flags = 0;
	L->scale_dtype = QTK_DT_F16;
	if (L->group != 32 && L->group != 64 && L->group != 128)
		L->group = 64;
	if (qtk_mlx_form(L, L->group, &bits, &off, &tmp) != QTK_OK)
		L->scheme = qtk_q_scheme_get(S->scheme)->requant_affine;
	if (qtk_q_scheme_get(L->scheme)->has_bias)
		L->flags = QTK_QF_MLX_AFFINE;
	if (t->dtype == QTK_DT_F16 || t->dtype == QTK_DT_BF16)
		L->scale_dtype = t->dtype;
	if ((rc = mlx_plan_tensor(m, i, t, L, &tmp)) != QTK_OK) {
		if (rc == QTK_E_NOMEM || rc == QTK_E_OVERFLOW) {
			*st = tmp;
			return rc;
		}
		memset(L, 0, sizeof *L);
		L->scheme = QTK_SCHEME_RAW;
		L->dtype = t->dtype;
		QTK_TRY(mlx_plan_tensor(m, i, t, L, st));
	}
	if (widen && qtk_q_scheme_get(L->scheme)->quantized) {
		L->scale_dtype = QTK_DT_F32;
		QTK_TRY(mlx_set_scale_dtype(m, i, QTK_DT_F32, st));
	}
	return QTK_OK;
}

/* Every stored scale and bias exact in the model's dtype (F16/BF16)? */
static qtk_err x_check_scales(void *ctx, size_t i, const qtk_q_layout *L,
                              const qtk_q_cplanes *p, uint64_t rows, uint64_t cols, int *ok,
                              qtk_status *st)
{
	mlx_sink *m = ctx;
	qtk_dtype md = m->t[i].sdt;
	uint64_t n = rows * qtk_q_groups_per_row(L, cols);
	void *buf;
	qtk_status tmp;

	*ok = 1;
	if (md == QTK_DT_F32)
		return QTK_OK;
	if (n > SIZE_MAX / 4 - 1 || !(buf = qtk_malloc((size_t)n * 4 + 4)))
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	*ok = qtk_mlx_scales(L, p->p[QTK_PLANE_SCALES], (size_t)n, md, buf, &tmp) == QTK_OK &&
	      qtk_mlx_biases(L, p->p[QTK_PLANE_SCALES], p->p[QTK_PLANE_BIASES], (size_t)n, md,
	                     buf, &tmp) == QTK_OK;
	qtk_free(buf);
	return QTK_OK;
}

static const sink_ops mlx_ops = {
	.plan = x_plan, .scales_f32 = x_scales_f32, .out_bytes = x_out_bytes, .mlx_affine = 1,
	.open = x_open, .put_bytes = x_put_bytes, .put_rows = x_put_rows,
	.commit = x_commit, .abort = x_abort, .checks_values = 1, .requant = x_requant,
	.check_scales = x_check_scales,
};

qtk_err sink_mlx_new(sink *k, const sink_args *a, qtk_status *st)
{
	uint32_t g = a->main_group;
	mlx_cfg mc = { .s = a->s, .main_scheme = a->main_scheme, .main_group = g == QTK_GROUP_ROW ? 0 : g,
	               .exact = a->exact };
	mlx_sink *m = NULL;

	qtk_err rc = mlx_begin(&m, &mc, a->s->n, st);

	if (rc) {
		mlx_abort(m); /* whatever it made */
		return rc;
	}
	k->ops = &mlx_ops;
	k->ctx = m;
	return QTK_OK;
}
