/* runtime: a GGUF file as a runtime model. F32 / F16 / BF16 tensors (and
 * plain integer ones) are viewed in the mapping; Q8_0, Q4_0 and Q4_1 blocks
 * are repacked at load, exactly, into qtk planes the model owns (the
 * lossless unpackers of formats/gguf_blocks.c), so the kernels read
 * llama.cpp's own files. The scheme of each block type is found in quant's
 * table by its properties (code bits, mode, offset), not by name. */
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

/* The quantized scheme row with these properties (-1 if none). */
static int find_scheme(unsigned bits, qtk_q_mode mode, unsigned offset)
{
	for (int id = 0; id < QTK_SCHEME_COUNT; id++) {
		const qtk_q_scheme *s = qtk_q_scheme_get((qtk_scheme_id)id);
		if (s->quantized && s->code_bits == bits && s->mode == mode &&
		    (mode != QTK_QMODE_SYM || (bits == 8 ? s->code_signed : s->code_offset == offset)))
			return id;
	}
	return -1;
}

/* The unquantized scheme for dtype dt: its float storage row, else the
 * raw row (-1 if none). */
static int find_unquantized(qtk_dtype dt)
{
	int raw = -1;

	for (int id = 0; id < QTK_SCHEME_COUNT; id++) {
		const qtk_q_scheme *s = qtk_q_scheme_get((qtk_scheme_id)id);
		if (s->mode == QTK_QMODE_FLOAT && s->store_dtype == dt)
			return id;
		if (s->mode == QTK_QMODE_RAW)
			raw = id;
	}
	return raw;
}

/* The qtk layout of a ggml type; 0 when the runtime cannot hold it. */
static int layout_of(uint32_t type, qtk_q_layout *L)
{
	int id = -1;

	memset(L, 0, sizeof *L);
	L->scale_dtype = QTK_DT_F16;
	L->group = QTK_GGUF_QK;
	switch (type) {
	case QTK_GGML_Q8_0: id = find_scheme(8, QTK_QMODE_SYM, 0); break;
	case QTK_GGML_Q4_0: id = find_scheme(4, QTK_QMODE_SYM, 8); break;
	case QTK_GGML_Q4_1: id = find_scheme(4, QTK_QMODE_AFFINE, 0); break;
	default:
		L->group = 0;
		switch (type) {
		case QTK_GGML_F32: L->dtype = QTK_DT_F32; break;
		case QTK_GGML_F16: L->dtype = QTK_DT_F16; break;
		case QTK_GGML_BF16: L->dtype = QTK_DT_BF16; break;
		case QTK_GGML_F64: L->dtype = QTK_DT_F64; break;
		case QTK_GGML_I8: L->dtype = QTK_DT_I8; break;
		case QTK_GGML_I16: L->dtype = QTK_DT_I16; break;
		case QTK_GGML_I32: L->dtype = QTK_DT_I32; break;
		case QTK_GGML_I64: L->dtype = QTK_DT_I64; break;
		default: return 0;
		}
		id = find_unquantized(L->dtype);
		break;
	}
	if (id < 0)
		return 0;
	L->scheme = (qtk_scheme_id)id;
	return 1;
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
	void *pl[QTK_PLANE_MAX] = { NULL };
	qtk_err rc;

	if (!layout_of(gt->type, &t->layout))
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
		if (sz[p] && !(pl[p] = own_plane(m, i, p, sz[p])))
			return qtk_fail(st, QTK_E_NOMEM, "%s: tensor '%s': out of memory for %llu bytes",
			                path, gt->name, (unsigned long long)sz[p]);
	switch (gt->type) {
	case QTK_GGML_Q8_0:
		rc = qtk_gguf_unpack_q8_0(gt->data, (size_t)t->rows, (size_t)t->cols, pl[0], pl[1], st);
		break;
	case QTK_GGML_Q4_0:
		rc = qtk_gguf_unpack_q4_0(gt->data, (size_t)t->rows, (size_t)t->cols, pl[0], pl[1], st);
		break;
	default:
		rc = qtk_gguf_unpack_q4_1(gt->data, (size_t)t->rows, (size_t)t->cols, pl[0], pl[1],
		                          pl[2], st);
		break;
	}
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
