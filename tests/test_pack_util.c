/* tests: helpers for the packed-format tests (see test_pack_util.h). */
#include <stdlib.h>
#include <zlib.h>

#include "test.h"
#include "test_pack_util.h"

uint64_t tp_get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

uint32_t tp_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void tp_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void tp_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void add(tp_sample *s, const char *name, qtk_scheme_id sc, uint32_t group,
                qtk_dtype scale_dt, uint32_t flags, qtk_dtype src, uint32_t ndim,
                const uint64_t *shape)
{
	qtk_pack_desc *d = &s->d[s->n];

	snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
	memset(d, 0, sizeof *d);
	d->name = s->names[s->n];
	d->ndim = ndim;
	memcpy(d->shape, shape, ndim * sizeof *shape);
	d->src_dtype = src;
	d->layout.scheme = sc;
	d->layout.group = group;
	d->layout.scale_dtype = scale_dt;
	d->layout.flags = flags;
	d->layout.dtype = src;
	s->n++;
}

void tp_sample_init(tp_sample *s)
{
	static const uint64_t m[2] = { 3, 80 }, dq[2] = { 4, 64 }, v[1] = { 7 },
		t3[3] = { 2, 3, 16 }, e[2] = { 0, 5 };

	memset(s, 0, sizeof *s);
	/* every row of the scheme table, last-dim 80 so the last group is short */
	for (int sc = QTK_SCHEME_COUNT - 1; sc >= 0; sc--) {
		const qtk_q_scheme *q = qtk_q_scheme_get((qtk_scheme_id)sc);
		char name[48];

		snprintf(name, sizeof name, "model.%s.weight", q->name);
		add(s, name, (qtk_scheme_id)sc, q->quantized ? 32 : 0,
		    q->quantized ? QTK_DT_F16 : QTK_DT_F32, 0,
		    sc == QTK_SCHEME_RAW ? QTK_DT_I32 : QTK_DT_F32, 2, m);
	}
	add(s, "nf4.double_quant", QTK_SCHEME_NF4, 16, QTK_DT_F16, QTK_QF_DOUBLE_QUANT,
	    QTK_DT_BF16, 2, dq);
	add(s, "affine.f32_scales", QTK_SCHEME_INT4_AFFINE, 64, QTK_DT_F32, 0, QTK_DT_F16, 2, m);
	add(s, "int8.row_bf16", QTK_SCHEME_INT8, QTK_GROUP_ROW, QTK_DT_BF16, 0, QTK_DT_F32, 2, m);
	add(s, "a.scalar", QTK_SCHEME_F32, 0, QTK_DT_F32, 0, QTK_DT_F32, 0, m);
	add(s, "b.vector", QTK_SCHEME_F16, 0, QTK_DT_F32, 0, QTK_DT_F16, 1, v);
	add(s, "c.3d", QTK_SCHEME_INT8, 16, QTK_DT_F16, 0, QTK_DT_F32, 3, t3);
	add(s, "d.empty", QTK_SCHEME_F32, 0, QTK_DT_F32, 0, QTK_DT_F32, 2, e);
}

void tp_plane_bytes(const tp_sample *s, size_t i, int p, uint8_t *dst, uint64_t size)
{
	qtk_pack_tensor t;
	qtk_dtype dt;
	uint64_t r = 0x1234 + i * 977 + (uint64_t)p * 131;

	memset(&t, 0, sizeof t);
	t.layout = s->d[i].layout;
	dt = qtk_pack_plane_dtype(&t, p);
	for (uint64_t k = 0; k < size; k++)
		dst[k] = (uint8_t)t_rand_u64(&r);
	if (p == QTK_PLANE_CODES || dt == QTK_DT_U8)
		return;
	/* finite scales: clear the top exponent bit of each element */
	for (uint64_t k = 0; k + qtk_dtype_size(dt) <= size; k += qtk_dtype_size(dt)) {
		if (dt == QTK_DT_F32)
			dst[k + 3] &= 0x3f;
		else if (dt == QTK_DT_F16)
			dst[k + 1] &= 0x3b;
		else
			dst[k + 1] &= 0x3f;
	}
}

qtk_err tp_write(const tp_sample *s, const char *path, uint32_t align, int force,
                 const char *meta, qtk_status *st)
{
	qtk_write_opts o = { .force = force };
	qtk_pack_writer *w;
	qtk_err rc;

	rc = qtk_pack_writer_open_aligned(&w, path, s->d, s->n, align, &o, st);
	if (rc)
		return rc;
	/* tensors backwards, each plane in 3 chunks written last-first */
	for (size_t i = s->n; i-- > 0;) {
		uint64_t rows, cols, sizes[QTK_PLANE_MAX];

		rows = 1;
		for (uint32_t d = 0; d + 1 < s->d[i].ndim; d++)
			rows *= s->d[i].shape[d];
		cols = s->d[i].ndim ? s->d[i].shape[s->d[i].ndim - 1] : 1;
		qtk_q_plane_sizes(&s->d[i].layout, rows, cols, sizes);
		for (int p = 0; p < QTK_PLANE_MAX; p++) {
			uint8_t *b = malloc(sizes[p] + 1);
			uint64_t c = sizes[p] / 3;

			tp_plane_bytes(s, i, p, b, sizes[p]);
			rc = qtk_pack_writer_put(w, i, p, 2 * c, b + 2 * c, sizes[p] - 2 * c, st);
			if (!rc)
				rc = qtk_pack_writer_put(w, i, p, c, b + c, c, st);
			if (!rc)
				rc = qtk_pack_writer_put(w, i, p, 0, b, c, st);
			free(b);
			if (rc) {
				qtk_pack_writer_abort(w);
				return rc;
			}
		}
	}
	return qtk_pack_writer_commit(w, meta, st);
}

size_t tp_record(const uint8_t *buf, size_t i)
{
	return (size_t)tp_get64(buf + 40) + i * tp_get32(buf + 28);
}

void tp_fix_crcs(uint8_t *buf, size_t size)
{
	uint64_t dir = tp_get64(buf + 40), str = tp_get64(buf + 56), strsize = tp_get64(buf + 64);

	if (dir < size && str < size && strsize <= size && str + strsize <= size && dir <= str + strsize)
		tp_put32(buf + 116, (uint32_t)crc32(0, buf + dir, (uInt)(str + strsize - dir)));
	tp_put32(buf + 124, (uint32_t)crc32(0, buf, 124));
}
