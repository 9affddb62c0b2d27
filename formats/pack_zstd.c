/* formats: reading plane bytes (plain or zstd), checksum / scale
 * verification, and the zstd transport form (qtk pack / unpack). */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <zstd.h>

#include "pack_impl.h"

/* zstd cannot expand more than one 128 KiB block per 4-byte RLE block;
 * a frame claiming more than this ratio is malformed, and refusing it
 * bounds what a hostile file can make us allocate. */
#define PK_ZSTD_MAX_RATIO 32768u

static void unsplit16(const uint8_t *src, uint8_t *dst, uint64_t n)
{
	uint64_t h = n / 2;

	for (uint64_t k = 0; k < h; k++) {
		dst[2 * k] = src[k];
		dst[2 * k + 1] = src[h + k];
	}
}

static void split16(const uint8_t *src, uint8_t *dst, uint64_t n)
{
	uint64_t h = n / 2;

	for (uint64_t k = 0; k < h; k++) {
		dst[k] = src[2 * k];
		dst[h + k] = src[2 * k + 1];
	}
}

static qtk_err decompress(const qtk_pack_file *f, const qtk_pack_tensor *t, int p,
                          void *dst, qtk_status *st)
{
	const qtk_pack_plane *pl = &t->planes[p];
	unsigned long long csize = ZSTD_getFrameContentSize(pl->data, (size_t)pl->stored_size);
	uint8_t *tmp = NULL, *out = dst;
	size_t r;

	if (pl->size / PK_ZSTD_MAX_RATIO > pl->stored_size || csize != pl->size ||
	    ZSTD_findFrameCompressedSize(pl->data, (size_t)pl->stored_size) != pl->stored_size)
		return qtk_fail(st, QTK_E_PK_ZSTD, "%s: tensor '%s': plane %d is not one zstd frame of %llu bytes",
		                pk_file_name(f), t->name, p, (unsigned long long)pl->size);
	/* the frame header descriptor's unused bit (0x10), which a decoder
	 * "shall not interpret": libzstd never sets it, and refusing it
	 * leaves no bit of a frame header unchecked (docs/format.md) */
	if (((const uint8_t *)pl->data)[4] & 0x10)
		return qtk_fail(st, QTK_E_PK_ZSTD, "%s: tensor '%s': plane %d: zstd frame header sets the unused bit",
		                pk_file_name(f), t->name, p);
	if (pl->flags & QTK_PACK_PF_BYTESPLIT) {
		tmp = qtk_malloc((size_t)pl->size);
		if (!tmp)
			return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", pk_file_name(f));
		out = tmp;
	}
	r = ZSTD_decompress(out, (size_t)pl->size, pl->data, (size_t)pl->stored_size);
	if (ZSTD_isError(r) || r != pl->size) {
		qtk_free(tmp);
		return qtk_fail(st, QTK_E_PK_ZSTD, "%s: tensor '%s': plane %d: zstd: %s",
		                pk_file_name(f), t->name, p,
		                ZSTD_isError(r) ? ZSTD_getErrorName(r) : "short frame");
	}
	if (tmp) {
		unsplit16(tmp, dst, pl->size);
		qtk_free(tmp);
	}
	return QTK_OK;
}

qtk_err qtk_pack_plane_read(const qtk_pack_file *f, const qtk_pack_tensor *t, int p,
                            void *dst, qtk_status *st)
{
	const qtk_pack_plane *pl;

	if (!f || !t || p < 0 || p >= QTK_PLANE_MAX || (!dst && t->planes[p].size))
		return qtk_fail(st, QTK_E_ARG, "pack: bad plane_read arguments");
	pl = &t->planes[p];
	if (pl->size == 0)
		return QTK_OK;
	if (pl->flags & QTK_PACK_PF_ZSTD)
		QTK_TRY(decompress(f, t, p, dst, st));
	else
		memcpy(dst, pl->data, (size_t)pl->size);
	if (pk_crc32(0, dst, pl->size) != pl->crc32)
		return qtk_fail(st, QTK_E_CHECKSUM, "%s: tensor '%s': plane %d: crc32 mismatch",
		                pk_file_name(f), t->name, p);
	return QTK_OK;
}

/* Index of the first NaN/Inf element of a float plane, or -1. */
static int64_t first_nonfinite(qtk_dtype dt, const uint8_t *b, uint64_t n)
{
	size_t es = qtk_dtype_size(dt);

	if (dt != QTK_DT_F32 && dt != QTK_DT_F16 && dt != QTK_DT_BF16)
		return -1; /* integer planes (double-quant codes) cannot be NaN */
	for (uint64_t k = 0; es && k + es <= n; k += es) {
		uint32_t v = es == 4 ? pk_get32(b + k) : pk_get16(b + k);
		int bad = dt == QTK_DT_F32 ? (v & 0x7f800000u) == 0x7f800000u
		        : dt == QTK_DT_F16 ? (v & 0x7c00u) == 0x7c00u
		        : dt == QTK_DT_BF16 ? (v & 0x7f80u) == 0x7f80u : 0;
		if (bad)
			return (int64_t)(k / es);
	}
	return -1;
}

/* Files with PK_OF_STORED_CRC: the crc32 of tensor i's stored bytes (its
 * planes in plane order) must match its record. A zstd frame decodes the
 * same with some bits changed (the frame header's unused bit, bits inside
 * compressed blocks), which the decompressed bytes' crc cannot see. */
static qtk_err check_stored_crc(const qtk_pack_file *f, size_t i, const qtk_pack_tensor *t,
                                qtk_status *st)
{
	const uint8_t *d = qtk_pack_file_data(f);
	const uint8_t *r = d + pk_get64(d + H_DIR) + (uint64_t)i * pk_get32(d + H_RECSIZE);
	uint32_t crc = 0;

	if (!(pk_get32(d + H_OFLAGS) & PK_OF_STORED_CRC))
		return QTK_OK;
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		if (t->planes[p].stored_size)
			crc = pk_crc32(crc, t->planes[p].data, t->planes[p].stored_size);
	if (crc != pk_get32(r + R_STORED_CRC))
		return qtk_fail(st, QTK_E_CHECKSUM, "%s: tensor '%s': crc32 of the stored bytes mismatch",
		                pk_file_name(f), t->name);
	return QTK_OK;
}

qtk_err qtk_pack_verify_tensor(const qtk_pack_file *f, size_t i, qtk_status *st)
{
	const qtk_pack_tensor *t = qtk_pack_get(f, i);

	uint64_t pad;

	if (!t)
		return qtk_fail(st, QTK_E_ARG, "pack: no tensor %zu", i);
	QTK_TRY(check_stored_crc(f, i, t, st));
	pad = pk_pad_from(f, i);
	for (int p = 0; p < QTK_PLANE_MAX; p++) {
		const qtk_pack_plane *pl = &t->planes[p];
		const uint8_t *buf = pl->data;
		uint8_t *tmp = NULL;
		qtk_dtype dt = qtk_pack_plane_dtype(t, p);
		int64_t bad;
		char where[128];

		if (pl->size == 0)
			continue;
		/* the padding before each plane (open checked its range) */
		snprintf(where, sizeof where, "before tensor '%.64s' plane %d (%s)", t->name, p,
		         pk_plane_names[p]);
		QTK_TRY(pk_check_zero(f, pad, pl->offset, where, st));
		pad = pl->offset + pl->stored_size;
		if (pl->flags & QTK_PACK_PF_ZSTD) {
			qtk_err rc;

			if (pl->size / PK_ZSTD_MAX_RATIO > pl->stored_size)
				return qtk_fail(st, QTK_E_PK_ZSTD, "%s: tensor '%s': plane %d claims an impossible compression ratio",
				                pk_file_name(f), t->name, p);
			tmp = qtk_malloc((size_t)pl->size);
			if (!tmp)
				return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", pk_file_name(f));
			rc = qtk_pack_plane_read(f, t, p, tmp, st);
			if (rc) {
				qtk_free(tmp);
				return rc;
			}
			buf = tmp;
		} else if (pk_crc32(0, buf, pl->size) != pl->crc32) {
			return qtk_fail(st, QTK_E_CHECKSUM, "%s: tensor '%s': plane %d: crc32 mismatch",
			                pk_file_name(f), t->name, p);
		}
		bad = p == QTK_PLANE_CODES ? -1 : first_nonfinite(dt, buf, pl->size);
		qtk_free(tmp);
		if (bad >= 0)
			return qtk_fail(st, QTK_E_PK_SCALES, "%s: tensor '%s': plane %d element %lld is NaN or Inf",
			                pk_file_name(f), t->name, p, (long long)bad);
	}
	return QTK_OK;
}

/* Tensors are handed out in order from a shared counter; the failure with
 * the lowest tensor index wins, so the report does not depend on the
 * thread count or timing. */
typedef struct {
	const qtk_pack_file *f;
	pthread_mutex_t lock;
	size_t next, bad;        /* next tensor to take; lowest failing index */
	qtk_status st;           /* status of tensor `bad` */
} verify_job;

static void *verify_worker(void *arg)
{
	verify_job *j = arg;

	for (;;) {
		qtk_status st;
		size_t i;

		int stop;

		pthread_mutex_lock(&j->lock);
		i = j->next++;
		stop = i >= qtk_pack_count(j->f) || i > j->bad;
		pthread_mutex_unlock(&j->lock);
		if (stop)
			return NULL;
		qtk_status_clear(&st);
		if (qtk_pack_verify_tensor(j->f, i, &st) != QTK_OK) {
			pthread_mutex_lock(&j->lock);
			if (i < j->bad) {
				j->bad = i;
				j->st = st;
			}
			pthread_mutex_unlock(&j->lock);
		}
	}
}

static size_t verify_threads(const qtk_pack_file *f)
{
	uint64_t bytes = 0;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	for (size_t i = 0; i < qtk_pack_count(f); i++)
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			bytes += qtk_pack_get(f, i)->planes[p].size;
	/* threads pay off from a few MB on */
	if (cpus < 2 || bytes < (8u << 20) || qtk_pack_count(f) < 2)
		return 1;
	return cpus > 8 ? 8 : (size_t)cpus;
}

qtk_err qtk_pack_verify(const qtk_pack_file *f, qtk_status *st)
{
	pthread_t th[8];
	verify_job j;
	size_t nt, started = 0;
	size_t len;
	const char *meta;
	json_error_t e;
	json_t *js;
	unsigned jm;

	if (!f)
		return qtk_fail(st, QTK_E_ARG, "pack: no file");
	memset(&j, 0, sizeof j);
	j.f = f;
	j.bad = SIZE_MAX;
	nt = verify_threads(f);
	if (pthread_mutex_init(&j.lock, NULL) != 0)
		nt = 0;
	for (size_t t = 1; t < nt; t++)
		if (pthread_create(&th[started], NULL, verify_worker, &j) == 0)
			started++;
	if (nt)
		verify_worker(&j); /* this thread works too */
	for (size_t t = 0; t < started; t++)
		pthread_join(th[t], NULL);
	if (nt)
		pthread_mutex_destroy(&j.lock);
	else
		for (size_t i = 0; i < qtk_pack_count(f) && j.bad == SIZE_MAX; i++)
			if (qtk_pack_verify_tensor(f, i, &j.st) != QTK_OK)
				j.bad = i;
	if (j.bad != SIZE_MAX) {
		if (st)
			*st = j.st;
		return j.st.code;
	}
	meta = qtk_pack_metadata(f, &len);
	jm = qtk_json_begin();
	js = json_loadb(meta, len, 0, &e);
	if (qtk_json_end(jm)) {
		json_decref(js);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory checking the metadata",
		                pk_file_name(f));
	}
	if (!js || !json_is_object(js)) {
		json_decref(js);
		return qtk_fail(st, QTK_E_PK_META, "%s: metadata is not a JSON object", pk_file_name(f));
	}
	json_decref(js);
	return QTK_OK;
}

/* ---- transport form ---------------------------------------------------- */

/* Re-encode one plane into w (logical bytes in buf). */
static qtk_err put_plane(qtk_pack_writer *w, size_t i, int p, const qtk_pack_plane *src,
                         const uint8_t *buf, int compress, int level, int bytesplit,
                         qtk_status *st)
{
	pk_wplane *pl = &w->t[i].p[p];
	const uint8_t *out = buf;
	uint8_t *split = NULL, *z = NULL;
	uint64_t stored = src->size;
	qtk_err rc;

	pl->flags = 0;
	if (compress) {
		size_t bound = ZSTD_compressBound((size_t)src->size), r;

		if (bytesplit && pk_plane_is16(&w->t[i].d.layout, p)) {
			split = qtk_malloc((size_t)src->size);
			if (!split)
				return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", w->out.path);
			split16(buf, split, src->size);
			buf = split;
			pl->flags |= QTK_PACK_PF_BYTESPLIT;
		}
		z = qtk_malloc(bound);
		if (!z) {
			qtk_free(split);
			return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", w->out.path);
		}
		r = ZSTD_compress(z, bound, buf, (size_t)src->size, level);
		qtk_free(split);
		if (ZSTD_isError(r)) {
			qtk_free(z);
			return qtk_fail(st, QTK_E_PK_ZSTD, "%s: zstd: %s", w->out.path, ZSTD_getErrorName(r));
		}
		out = z;
		stored = r;
		pl->flags |= QTK_PACK_PF_ZSTD;
		/* planes come here in plane order: one running crc per tensor */
		w->t[i].stored_crc = pk_crc32(w->t[i].stored_crc, z, stored);
	}
	pl->crc = src->crc32;
	rc = qtk_out_pwrite(&w->out, out, (size_t)stored, pk_place(w, i, p, stored), st);
	qtk_free(z);
	return rc;
}

static qtk_err transcode_all(qtk_pack_file *in, qtk_pack_writer *w, int compress,
                             int level, int bytesplit, qtk_status *st)
{
	for (size_t i = 0; i < qtk_pack_count(in); i++) {
		const qtk_pack_tensor *t = qtk_pack_get(in, i);

		for (int p = 0; p < QTK_PLANE_MAX; p++)
			w->t[i].p[p].stored = 0; /* placed one by one below */
		for (int p = 0; p < QTK_PLANE_MAX; p++) {
			const qtk_pack_plane *pl = &t->planes[p];
			uint8_t *buf;
			qtk_err rc;

			if (pl->size == 0)
				continue;
			buf = qtk_malloc((size_t)pl->size);
			if (!buf)
				return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", w->out.path);
			rc = qtk_pack_plane_read(in, t, p, buf, st);
			if (!rc)
				rc = put_plane(w, i, p, pl, buf, compress, level, bytesplit, st);
			qtk_free(buf);
			if (rc)
				return rc;
		}
	}
	return QTK_OK;
}

qtk_err qtk_pack_transcode(const char *in_path, const char *out_path, int compress,
                           int level, int bytesplit, const qtk_write_opts *opts,
                           qtk_status *st)
{
	qtk_pack_file *in;
	qtk_pack_writer *w;
	qtk_pack_desc *descs;
	qtk_err rc;
	size_t n;

	QTK_TRY(qtk_pack_open(in_path, 0, &in, st));
	n = qtk_pack_count(in);
	descs = qtk_calloc(n ? n : 1, sizeof *descs);
	if (!descs) {
		qtk_pack_close(in);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", in_path);
	}
	for (size_t i = 0; i < n; i++) {
		const qtk_pack_tensor *t = qtk_pack_get(in, i);
		descs[i].name = t->name;
		descs[i].ndim = t->ndim;
		memcpy(descs[i].shape, t->shape, sizeof t->shape);
		descs[i].src_dtype = t->src_dtype;
		descs[i].layout = t->layout;
	}
	/* the transport form needs no page alignment; 64 keeps planes aligned */
	rc = pk_writer_create(&w, out_path, descs, n,
	                      compress ? PK_PLANE_ALIGN : PK_DEFAULT_ALIGN, opts, st);
	qtk_free(descs);
	if (rc) {
		qtk_pack_close(in);
		return rc;
	}
	rc = transcode_all(in, w, compress, level, bytesplit, st);
	if (rc)
		pk_writer_free(w);
	else
		rc = pk_writer_finish(w, qtk_pack_metadata(in, NULL), st);
	qtk_pack_close(in);
	return rc;
}
