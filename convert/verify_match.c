/* convert: the file `qtk verify --against` checks (a .qtk file, its crc32s
 * verified first, or a GGUF file) seen one tensor at a time, and each of
 * its tensors matched with its source tensor: the same name, or the names
 * qtk's GGUF output gives (LLaMA's blk.N.* with q/k rows in ggml's order,
 * a DiT's without "model.diffusion_model."), in either direction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "verify_impl.h"

static const char dit_prefix[] = QTK_DIT_PREFIX;

/* ---- FILE ---------------------------------------------------------------- */

static int has_gguf_magic(const char *path)
{
	unsigned char m[4];
	qtk_status tmp;
	int fd, yes;

	if (qtk_fmt_open_input(path, &fd, NULL, &tmp) != QTK_OK)
		return 0; /* the .qtk reader then says why */
	yes = read(fd, m, 4) == 4 && !memcmp(m, QTK_GGUF_MAGIC, 4);
	close(fd);
	return yes;
}

qtk_err vf_open(vf_file *f, const char *path, qtk_status *st)
{
	memset(f, 0, sizeof *f);
	f->path = path;
	if (has_gguf_magic(path)) {
		QTK_TRY(qtk_gguf_open(path, &f->gg, st));
		f->n = qtk_gguf_count(f->gg);
		return QTK_OK;
	}
	QTK_TRY(qtk_pack_open(path, 0, &f->pk, st));
	f->n = qtk_pack_count(f->pk);
	return qtk_pack_verify(f->pk, st); /* the integrity check comes first */
}

void vf_close(vf_file *f)
{
	qtk_pack_close(f->pk);
	qtk_gguf_close(f->gg);
	memset(f, 0, sizeof *f);
}

/* The qtk layout of a GGUF tensor type (the exact correspondence of
 * formats' block packers); t->skip for types that are not compared. */
static void gguf_layout(const qtk_gguf_tensor *g, vf_tensor *t)
{
	qtk_q_layout *L = &t->L;

	if (!qtk_ggml_layout(g->type, L)) {
		snprintf(t->skip_buf, sizeof t->skip_buf, "ggml type %s: qtk reads no such blocks",
		         qtk_ggml_type_name(g->type) ? qtk_ggml_type_name(g->type) : "?");
		t->skip = t->skip_buf;
	} else if (L->scheme == QTK_SCHEME_RAW && !qtk_dtype_is_float(L->dtype)) {
		t->skip = "integer tensor";
	}
}

static void describe(const vf_file *f, size_t i, vf_tensor *t)
{
	memset(t, 0, sizeof *t);
	if (f->gg) {
		const qtk_gguf_tensor *g = qtk_gguf_get(f->gg, i);
		t->name = g->name;
		t->ndim = g->ndim;
		memcpy(t->shape, g->shape, sizeof t->shape);
		t->rows = g->rows;
		t->cols = g->cols;
		gguf_layout(g, t);
		return;
	}
	const qtk_pack_tensor *p = qtk_pack_get(f->pk, i);
	t->name = p->name;
	t->ndim = p->ndim;
	memcpy(t->shape, p->shape, sizeof t->shape);
	t->rows = p->rows;
	t->cols = p->cols;
	t->L = p->layout;
	if (p->layout.scheme == QTK_SCHEME_RAW && !qtk_dtype_is_float(p->layout.dtype))
		t->skip = "integer tensor";
}

/* A 64-byte aligned buffer of size bytes in *owned. */
static void *own(void **owned, uint64_t size)
{
	uint8_t *raw;

	if (size > SIZE_MAX - 64 || !(raw = qtk_malloc((size_t)size + 64)))
		return NULL;
	*owned = raw;
	return raw + (64 - (uintptr_t)raw % 64) % 64;
}

static qtk_err gguf_planes(const vf_file *f, size_t i, const vf_tensor *t,
                           const void *pl[QTK_PLANE_MAX], void *owned[QTK_PLANE_MAX],
                           qtk_status *st)
{
	const qtk_gguf_tensor *g = qtk_gguf_get(f->gg, i);
	uint64_t sz[QTK_PLANE_MAX];
	void *p[QTK_PLANE_MAX] = { NULL };
	size_t r = (size_t)t->rows, c = (size_t)t->cols;
	qtk_err rc;

	if (qtk_q_plane_sizes(&t->L, t->rows, t->cols, sz) != QTK_OK)
		return qtk_fail(st, QTK_E_OVERFLOW, "%s: tensor '%s': size overflows", f->path,
		                t->name);
	if (!qtk_q_scheme_get(t->L.scheme)->quantized) {
		pl[QTK_PLANE_CODES] = g->data; /* F32 / F16 / BF16 / F64: the bytes as they are */
		return QTK_OK;
	}
	for (int k = 0; k < QTK_PLANE_MAX; k++)
		if (sz[k] && !(p[k] = own(&owned[k], sz[k])))
			return qtk_fail(st, QTK_E_NOMEM, "%s: tensor '%s': out of memory for %llu bytes",
			                f->path, t->name, (unsigned long long)sz[k]);
	if (g->type == QTK_GGML_Q8_0)
		rc = qtk_gguf_unpack_q8_0(g->data, r, c, p[0], p[1], st);
	else if (g->type == QTK_GGML_Q4_0)
		rc = qtk_gguf_unpack_q4_0(g->data, r, c, p[0], p[1], st);
	else
		rc = qtk_gguf_unpack_q4_1(g->data, r, c, p[0], p[1], p[2], st);
	if (rc) {
		char pre[512];
		snprintf(pre, sizeof pre, "%s: tensor '%s'", f->path, t->name);
		qtk_status_prefix(st, pre);
		return rc;
	}
	for (int k = 0; k < QTK_PLANE_MAX; k++)
		pl[k] = p[k];
	return QTK_OK;
}

qtk_err vf_planes(const vf_file *f, size_t i, const vf_tensor *t,
                  const void *pl[QTK_PLANE_MAX], void *owned[QTK_PLANE_MAX], qtk_status *st)
{
	const qtk_pack_tensor *p;

	for (int k = 0; k < QTK_PLANE_MAX; k++) {
		pl[k] = NULL;
		owned[k] = NULL;
	}
	if (f->gg)
		return gguf_planes(f, i, t, pl, owned, st);
	p = qtk_pack_get(f->pk, i);
	for (int k = 0; k < QTK_PLANE_MAX; k++) {
		void *buf;
		if (!p->planes[k].size)
			continue;
		if (!(p->planes[k].flags & QTK_PACK_PF_ZSTD)) {
			pl[k] = p->planes[k].data;
			continue;
		}
		if (!(buf = own(&owned[k], p->planes[k].size)))
			return qtk_fail(st, QTK_E_NOMEM, "%s: tensor '%s': out of memory for %llu bytes",
			                f->path, t->name, (unsigned long long)p->planes[k].size);
		QTK_TRY(qtk_pack_plane_read(f->pk, p, k, buf, st));
		pl[k] = buf;
	}
	return QTK_OK;
}

/* ---- q/k row order ------------------------------------------------------- */

uint64_t vf_src_row(const vf_tensor *t, uint64_t r)
{
	uint64_t hd, h, q;

	switch (t->rows_order) {
	case VF_ROWS_GGUF_FROM_HF:
		return qtk_gguf_llama_qk_src_row(r, t->rows, t->n_head);
	case VF_ROWS_HF_FROM_GGUF:
		/* the inverse: HF row h*hd + s*hd/2 + p is ggml row h*hd + 2p + s */
		hd = t->rows / t->n_head;
		h = r / hd;
		q = r % hd;
		return h * hd + 2 * (q % (hd / 2)) + q / (hd / 2);
	default:
		return r;
	}
}

/* Head counts (q, k) of a LLaMA model: FILE's or SOURCE's GGUF KVs, the
 * source directory's config.json, or the config recorded in a .qtk. */
static int heads_gguf(const qtk_gguf_file *g, uint64_t h[2])
{
	if (!g || qtk_gguf_get_uint(g, "llama.attention.head_count", &h[0], NULL) != QTK_OK)
		return 0;
	if (qtk_gguf_get_uint(g, "llama.attention.head_count_kv", &h[1], NULL) != QTK_OK)
		h[1] = h[0];
	return h[0] > 0 && h[1] > 0;
}

static int heads_desc(const qtk_model_desc *d, uint64_t h[2])
{
	const qtk_model_val *a = &d->v[QTK_MK_NUM_ATTENTION_HEADS];
	const qtk_model_val *k = &d->v[QTK_MK_NUM_KEY_VALUE_HEADS];

	if (a->kind != QTK_MV_INT || a->i <= 0)
		return 0;
	h[0] = (uint64_t)a->i;
	h[1] = k->kind == QTK_MV_INT && k->i > 0 ? (uint64_t)k->i : h[0];
	return 1;
}

static int find_heads(const vf_file *f, src *s, uint64_t h[2])
{
	const qtk_model_desc *d;
	qtk_model_desc *m;
	const char *meta;
	size_t len;
	qtk_status tmp;
	int ok = 0;

	if (heads_gguf(f->gg, h) || heads_gguf(s->gg, h))
		return 1;
	/* the source's config (a config that is not JSON says nothing here) */
	if (src_model_desc(s, &d, &tmp) == QTK_OK && heads_desc(d, h))
		return 1;
	if (!f->pk || !(meta = qtk_pack_metadata(f->pk, &len)) || !(m = qtk_calloc(1, sizeof *m)))
		return 0;
	ok = qtk_model_desc_parse(meta, len, "config", "metadata", m, &tmp) == QTK_OK &&
	     heads_desc(m, h);
	qtk_free(m);
	return ok;
}

/* ---- names ---------------------------------------------------------------- */

typedef struct {
	char *key;
	size_t i;       /* source tensor */
	int qk;         /* LLaMA q (1) / k (2) */
} name_key;

typedef struct {
	name_key *exact, *llama, *dit; /* source names; their GGUF and DiT forms */
	size_t nexact, nllama, ndit;
} name_index;

static int by_key(const void *a, const void *b)
{
	return strcmp(((const name_key *)a)->key, ((const name_key *)b)->key);
}

static const name_key *lookup(const name_key *k, size_t n, const char *key)
{
	name_key probe = { .key = (char *)(uintptr_t)key };

	return n ? bsearch(&probe, k, n, sizeof *k, by_key) : NULL;
}

static void index_free(name_index *x)
{
	for (size_t i = 0; i < x->nllama; i++)
		qtk_free(x->llama[i].key);
	qtk_free(x->exact);
	qtk_free(x->llama);
	qtk_free(x->dit);
}

static qtk_err index_build(name_index *x, const src *s, qtk_status *st)
{
	size_t n = s->n ? s->n : 1;
	char buf[256];
	int qk;

	memset(x, 0, sizeof *x);
	x->exact = qtk_calloc(n, sizeof *x->exact);
	x->llama = qtk_calloc(n, sizeof *x->llama);
	x->dit = qtk_calloc(n, sizeof *x->dit);
	if (!x->exact || !x->llama || !x->dit)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	for (size_t i = 0; i < s->n; i++) {
		const char *nm = s->t[i].name;
		x->exact[x->nexact++] = (name_key){ (char *)(uintptr_t)nm, i, 0 };
		if (!strncmp(nm, dit_prefix, strlen(dit_prefix)))
			x->dit[x->ndit++] = (name_key){ (char *)(uintptr_t)(nm + strlen(dit_prefix)), i, 0 };
		if (qtk_gguf_llama_name(nm, buf, sizeof buf, &qk) != QTK_OK)
			continue;
		if (!(x->llama[x->nllama].key = qtk_strdup(buf)))
			return qtk_fail(st, QTK_E_NOMEM, "out of memory");
		x->llama[x->nllama].i = i;
		x->llama[x->nllama++].qk = qk;
	}
	qsort(x->exact, x->nexact, sizeof *x->exact, by_key);
	qsort(x->llama, x->nllama, sizeof *x->llama, by_key);
	qsort(x->dit, x->ndit, sizeof *x->dit, by_key);
	return QTK_OK;
}

/* The source tensor of FILE name nm: exact, FILE in GGUF names of an HF
 * source, FILE in HF names of a GGUF source, DiT prefix either way. */
static const name_key *match_name(const name_index *x, const char *nm, int *order, int *qk)
{
	const name_key *k;
	char buf[256];

	*order = VF_ROWS_SAME;
	*qk = 0;
	if ((k = lookup(x->exact, x->nexact, nm)))
		return k;
	if ((k = lookup(x->llama, x->nllama, nm))) {
		*order = k->qk ? VF_ROWS_GGUF_FROM_HF : VF_ROWS_SAME;
		*qk = k->qk;
		return k;
	}
	if ((k = lookup(x->dit, x->ndit, nm)))
		return k;
	if (qtk_gguf_llama_name(nm, buf, sizeof buf, qk) == QTK_OK &&
	    (k = lookup(x->exact, x->nexact, buf))) {
		*order = *qk ? VF_ROWS_HF_FROM_GGUF : VF_ROWS_SAME;
		return k;
	}
	*qk = 0;
	if ((size_t)snprintf(buf, sizeof buf, "%s%s", dit_prefix, nm) < sizeof buf)
		return lookup(x->exact, x->nexact, buf);
	return NULL;
}

/* ---- matching ------------------------------------------------------------- */

static void shape_str(char *b, size_t n, uint32_t ndim, const uint64_t *shape)
{
	size_t o = (size_t)snprintf(b, n, "[");

	for (uint32_t k = 0; k < ndim && o < n; k++)
		o += (size_t)snprintf(b + o, n - o, "%s%llu", k ? ", " : "",
		                      (unsigned long long)shape[k]);
	if (o < n)
		snprintf(b + o, n - o, "]");
}

static int same_shape(const vf_file *f, const vf_tensor *t, const src_tensor *s)
{
	uint64_t rows = 1, cols = s->ndim ? s->shape[s->ndim - 1] : 1;

	if (t->ndim == s->ndim && !memcmp(t->shape, s->shape, t->ndim * sizeof *t->shape))
		return 1;
	/* GGUF holds 1 to 4 dims: qtk writes a scalar as [1] and more dims as
	 * [rows][cols] (the real shape in comfy.gguf.orig_shape.NAME) */
	for (uint32_t k = 0; k + 1 < s->ndim; k++)
		rows *= s->shape[k];
	return f->gg && (s->ndim == 0 || s->ndim > QTK_GGUF_MAX_DIMS) && t->rows == rows &&
	       t->cols == cols;
}

static qtk_err match_one(const vf_file *f, src *s, const name_index *x, vf_tensor *t,
                         uint64_t heads[2], int *have_heads, qtk_status *st)
{
	char a[160], b[160];
	int qk;
	const name_key *k = match_name(x, t->name, &t->rows_order, &qk);

	if (!k)
		return qtk_fail(st, QTK_E_NOT_FOUND, "%s: tensor '%s' has no counterpart in %s",
		                f->path, t->name, s->files[0].path);
	t->s = &s->t[k->i];
	if (!same_shape(f, t, t->s)) {
		shape_str(a, sizeof a, t->ndim, t->shape);
		shape_str(b, sizeof b, t->s->ndim, t->s->shape);
		return qtk_fail(st, QTK_E_ARG, "%s: tensor '%s' is %s but %s: tensor '%s' is %s",
		                f->path, t->name, a, s->files[0].path, t->s->name, b);
	}
	if (t->skip)
		return QTK_OK;
	if (!qtk_dtype_is_float(t->s->dtype))
		return qtk_fail(st, QTK_E_ARG, "%s: tensor '%s' holds floats but %s: tensor '%s' is %s",
		                f->path, t->name, s->files[0].path, t->s->name,
		                qtk_dtype_name(t->s->dtype));
	if (t->rows_order == VF_ROWS_SAME)
		return QTK_OK;
	if (!*have_heads)
		*have_heads = find_heads(f, s, heads) ? 1 : -1;
	if (*have_heads < 0)
		return qtk_fail(st, QTK_E_NOT_FOUND, "%s: tensor '%s': its rows are in another q/k "
		                "order than '%s', and neither file nor a config.json gives the "
		                "head count", f->path, t->name, t->s->name);
	/* q: heads, k: KV heads */
	t->n_head = heads[qk == 2] <= UINT32_MAX ? (uint32_t)heads[qk == 2] : 0;
	if (!t->n_head || t->rows % t->n_head || (t->rows / t->n_head) % 2)
		return qtk_fail(st, QTK_E_ARG, "%s: tensor '%s': %llu rows do not split into %u "
		                "heads of even size", f->path, t->name,
		                (unsigned long long)t->rows, t->n_head);
	return QTK_OK;
}

qtk_err vf_match_all(const vf_file *f, src *s, vf_tensor *t, size_t *unused,
                     const char **first_unused, qtk_status *st)
{
	name_index x;
	uint64_t heads[2] = { 0, 0 };
	int have_heads = 0;
	uint8_t *used = qtk_calloc(s->n ? s->n : 1, 1);
	qtk_err rc = index_build(&x, s, st);

	if (!rc && !used)
		rc = qtk_fail(st, QTK_E_NOMEM, "out of memory");
	for (size_t i = 0; !rc && i < f->n; i++) {
		describe(f, i, &t[i]);
		rc = match_one(f, s, &x, &t[i], heads, &have_heads, st);
		if (!rc)
			used[t[i].s - s->t] = 1;
	}
	*unused = 0;
	*first_unused = NULL;
	for (size_t i = 0; !rc && i < s->n; i++)
		if (!used[i] && !(*unused)++)
			*first_unused = s->t[i].name;
	qtk_free(used);
	index_free(&x);
	return rc;
}
