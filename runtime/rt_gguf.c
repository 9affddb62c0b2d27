/* runtime: a GGUF file as a runtime model. F32 / F16 / BF16 tensors (and
 * plain integer ones) are viewed in the mapping; Q8_0, Q4_0 and Q4_1 blocks
 * are repacked at load, exactly, into qtk planes the model owns (the
 * lossless unpackers of formats/gguf_blocks.c), so the kernels read
 * llama.cpp's own files. The layout of each ggml type comes from formats'
 * ggml type table (qtk_ggml_layout), which finds quant's row by its code
 * properties, not by name. */
#include <stdio.h>
#include <string.h>

#include "rt_private.h"

int rt_is_gguf(const char *path)
{
	char magic[4];
	FILE *fp = fopen(path, "rb");
	int yes;

	if (!fp)
		return 0;
	yes = fread(magic, 1, 4, fp) == 4 && !memcmp(magic, QTK_GGUF_MAGIC, 4);
	fclose(fp);
	return yes;
}

/* A 64-byte aligned buffer owned by the model, as plane p of tensor i. */
static void *own_plane(qtk_rt_model *m, size_t i, int p, uint64_t size)
{
	uint8_t *raw, *al;

	if (size > SIZE_MAX - 64 || !(raw = qtk_malloc((size_t)size + 64)))
		return NULL;
	m->owned[i * QTK_PLANE_MAX + (size_t)p] = raw;
	al = raw + (64 - (uintptr_t)raw % 64) % 64;
	m->t[i].planes[p].data = al;
	return al;
}

static qtk_err load_tensor(qtk_rt_model *m, size_t i, const char *path, qtk_status *st)
{
	const qtk_gguf_tensor *gt = qtk_gguf_get(m->g, i);
	qtk_rt_tensor *t = &m->t[i];
	const qtk_q_scheme *sc;
	uint64_t sz[QTK_PLANE_MAX];
	qtk_q_planes pl = { { NULL } };
	qtk_err rc;

	if (!qtk_ggml_layout(gt->type, &t->layout))
		return qtk_fail(st, QTK_E_UNSUPPORTED,
		                "%s: tensor '%s': ggml type %s is not one the runtime reads "
		                "(F32, F16, BF16, Q8_0, Q4_0, Q4_1)", path, gt->name,
		                qtk_ggml_type_name(gt->type) ? qtk_ggml_type_name(gt->type) : "?");
	sc = qtk_q_scheme_get(t->layout.scheme);
	t->name = gt->name;
	t->ndim = gt->ndim;
	memcpy(t->shape, gt->shape, sizeof t->shape);
	t->scheme = t->layout.scheme;
	t->group = t->layout.group;
	t->rows = gt->rows;
	t->cols = gt->cols;
	t->src_dtype = sc->quantized ? QTK_DT_F32 : t->layout.dtype;
	if (qtk_q_plane_sizes(&t->layout, t->rows, t->cols, sz) != QTK_OK)
		return qtk_fail(st, QTK_E_OVERFLOW, "%s: tensor '%s': plane sizes overflow", path,
		                gt->name);
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		t->planes[p].size = sz[p];
		t->planes[p].dtype = p == QTK_PLANE_CODES
			? (sc->quantized ? QTK_DT_U8 : t->layout.dtype) : t->layout.scale_dtype;
	}
	t->zero_copy = !sc->quantized;
	if (!sc->quantized) { /* the bytes as they are */
		if (sz[QTK_PLANE_CODES] != gt->nbytes)
			return qtk_fail(st, QTK_E_FORMAT, "%s: tensor '%s': %llu bytes, the shape needs %llu",
			                path, gt->name, (unsigned long long)gt->nbytes,
			                (unsigned long long)sz[QTK_PLANE_CODES]);
		t->planes[QTK_PLANE_CODES].data = gt->data;
		return QTK_OK;
	}
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		if (sz[p] && !(pl.p[p] = own_plane(m, i, p, sz[p])))
			return qtk_fail(st, QTK_E_NOMEM, "%s: tensor '%s': out of memory for %llu bytes",
			                path, gt->name, (unsigned long long)sz[p]);
	rc = qtk_ggml_unpack_rows(gt->type, gt->data, (size_t)t->rows, (size_t)t->cols, &pl, st);
	if (rc) {
		char pre[512];
		snprintf(pre, sizeof pre, "%s: tensor '%s'", path, gt->name);
		qtk_status_prefix(st, pre);
	}
	return rc;
}

qtk_err rt_open_gguf(const char *path, qtk_rt_model **out, qtk_status *st)
{
	qtk_rt_model *m = qtk_calloc(1, sizeof *m);
	qtk_err rc;

	if (!m)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	rc = qtk_gguf_open(path, &m->g, st);
	if (!rc) {
		m->n = qtk_gguf_count(m->g);
		m->t = qtk_calloc(m->n ? m->n : 1, sizeof *m->t);
		m->owned = qtk_calloc(m->n ? m->n * QTK_PLANE_MAX : 1, sizeof *m->owned);
		if (!m->t || !m->owned)
			rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	for (size_t i = 0; !rc && i < m->n; i++)
		rc = load_tensor(m, i, path, st);
	if (rc) {
		qtk_rt_close(m);
		return rc;
	}
	*out = m;
	return QTK_OK;
}
