/* tests: the packed format — round trip of every scheme row, alignment,
 * lookup, metadata, writer contract violations. */
#include <stdlib.h>
#include <zlib.h>

#include "qtk_formats.h"
#include "test.h"
#include "test_pack_util.h"

#define META "{\"qtk_version\":\"0.1.0\",\"recipe\":{\"scheme\":\"int4\"}}"

static void check_against_sample(const tp_sample *s, const qtk_pack_file *f, uint32_t align)
{
	REQUIRE(qtk_pack_count(f) == s->n);
	for (size_t i = 0; i < s->n; i++) {
		const qtk_pack_tensor *t = qtk_pack_get(f, i);
		int first = 1;

		CHECK_STR(t->name, s->d[i].name);
		CHECK(qtk_pack_find(f, s->d[i].name) == t);
		CHECK_EQ(qtk_pack_index_of(f, t), i);
		CHECK_EQ(t->ndim, s->d[i].ndim);
		CHECK(!memcmp(t->shape, s->d[i].shape, sizeof t->shape));
		CHECK_EQ(t->src_dtype, s->d[i].src_dtype);
		CHECK(!memcmp(&t->layout, &s->d[i].layout, sizeof t->layout));
		for (int p = 0; p < QTK_PLANE_MAX; p++) {
			const qtk_pack_plane *pl = &t->planes[p];
			uint64_t rows = t->rows, cols = t->cols, sizes[QTK_PLANE_MAX];
			uint8_t *want, *got;

			qtk_q_plane_sizes(&t->layout, rows, cols, sizes);
			CHECK_EQ(pl->size, sizes[p]);
			if (!pl->size)
				continue;
			/* every plane 64-aligned, every tensor start on align */
			CHECK_MSG(pl->offset % 64 == 0, "%s plane %d at %llu", t->name, p,
			          (unsigned long long)pl->offset);
			if (first)
				CHECK_MSG(pl->offset % align == 0, "%s starts at %llu", t->name,
				          (unsigned long long)pl->offset);
			first = 0;
			want = malloc(pl->size);
			got = malloc(pl->size);
			tp_plane_bytes(s, i, p, want, pl->size);
			CHECK_EQ(qtk_pack_plane_read(f, t, p, got, NULL), QTK_OK);
			CHECK_MSG(!memcmp(got, want, pl->size), "%s plane %d differs", t->name, p);
			CHECK_EQ(pl->crc32, (uint32_t)crc32(0, want, (uInt)pl->size));
			if (!(pl->flags & QTK_PACK_PF_ZSTD))
				CHECK(!memcmp(pl->data, want, pl->size));
			free(want);
			free(got);
		}
	}
}

TEST(pack_roundtrip_every_scheme)
{
	tp_sample s;
	qtk_status st;
	qtk_pack_file *f;
	size_t len;
	const char *path = t_tmp("rt.qtk");

	tp_sample_init(&s);
	REQUIRE(tp_write(&s, path, 4096, 0, META, &st) == QTK_OK);
	REQUIRE(qtk_pack_open(path, QTK_PACK_OPEN_VERIFY, &f, &st) == QTK_OK);
	check_against_sample(&s, f, 4096);
	CHECK_STR(qtk_pack_metadata(f, &len), META);
	CHECK_EQ(len, strlen(META));
	CHECK(qtk_pack_find(f, "nope") == NULL);
	CHECK(qtk_pack_find(f, "") == NULL);
	CHECK_EQ(qtk_pack_verify(f, &st), QTK_OK);
	CHECK_EQ(qtk_pack_version_minor(f), QTK_PACK_VERSION_MINOR);
	qtk_pack_close(f);
	qtk_pack_close(NULL);
	/* only the output in the directory: no temporary left behind */
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
}

TEST(pack_roundtrip_small_alignment_and_default_meta)
{
	tp_sample s;
	qtk_status st;
	qtk_pack_file *f;
	const char *path = t_tmp("a64.qtk");

	tp_sample_init(&s);
	REQUIRE(tp_write(&s, path, 64, 0, NULL, &st) == QTK_OK);
	REQUIRE(qtk_pack_open(path, 0, &f, &st) == QTK_OK);
	check_against_sample(&s, f, 64);
	CHECK_STR(qtk_pack_metadata(f, NULL), "{}");
	qtk_pack_close(f);
}

TEST(pack_empty_file_has_no_tensors)
{
	qtk_pack_writer *w;
	qtk_pack_file *f;
	qtk_status st;

	REQUIRE(qtk_pack_writer_open(&w, t_tmp("e.qtk"), NULL, 0, NULL, &st) == QTK_OK);
	CHECK_EQ(qtk_pack_writer_size(w), 4096);
	REQUIRE(qtk_pack_writer_commit(w, "{}", &st) == QTK_OK);
	REQUIRE(qtk_pack_open(t_tmp("e.qtk"), QTK_PACK_OPEN_VERIFY, &f, &st) == QTK_OK);
	CHECK_EQ(qtk_pack_count(f), 0);
	CHECK(qtk_pack_find(f, "x") == NULL);
	qtk_pack_close(f);
}

/* Writer contract: each byte exactly once, in range; bad descriptions. */
TEST(pack_writer_rejects_misuse)
{
	qtk_pack_desc d[2];
	qtk_pack_writer *w;
	qtk_status st;
	uint8_t buf[64] = { 0 };
	const char *path = t_tmp("m.qtk");

	memset(d, 0, sizeof d);
	d[0].name = "w";
	d[0].ndim = 1;
	d[0].shape[0] = 64;
	d[0].src_dtype = QTK_DT_F32;
	d[0].layout.scheme = QTK_SCHEME_INT8;
	d[0].layout.group = 32;
	d[0].layout.scale_dtype = QTK_DT_F16;
	/* never written -> incomplete */
	REQUIRE(qtk_pack_writer_open(&w, path, d, 1, NULL, &st) == QTK_OK);
	CHECK_EQ(qtk_pack_writer_put(w, 0, 0, 0, buf, 64, &st), QTK_OK);
	CHECK_EQ(qtk_pack_writer_commit(w, NULL, &st), QTK_E_PK_INCOMPLETE);
	CHECK(strstr(st.msg, "'w' plane 1") != NULL);
	CHECK(!t_exists(path));
	/* written twice -> incomplete */
	REQUIRE(qtk_pack_writer_open(&w, path, d, 1, NULL, &st) == QTK_OK);
	CHECK_EQ(qtk_pack_writer_put(w, 0, 0, 0, buf, 64, &st), QTK_OK);
	CHECK_EQ(qtk_pack_writer_put(w, 0, 0, 10, buf, 4, &st), QTK_OK);
	CHECK_EQ(qtk_pack_writer_put(w, 0, 1, 0, buf, 4, &st), QTK_OK);
	CHECK_EQ(qtk_pack_writer_commit(w, NULL, &st), QTK_E_PK_INCOMPLETE);
	CHECK(strstr(st.msg, "written twice") != NULL);
	/* out of range, bad plane, bad tensor */
	REQUIRE(qtk_pack_writer_open(&w, path, d, 1, NULL, &st) == QTK_OK);
	CHECK_EQ(qtk_pack_writer_put(w, 0, 1, 1, buf, 4, &st), QTK_E_ARG);
	CHECK_EQ(qtk_pack_writer_put(w, 0, 2, 0, buf, 1, &st), QTK_E_ARG);
	CHECK_EQ(qtk_pack_writer_put(w, 1, 0, 0, buf, 1, &st), QTK_E_ARG);
	CHECK_EQ(qtk_pack_writer_put(w, 0, 7, 0, buf, 1, &st), QTK_E_ARG);
	CHECK_EQ(qtk_pack_writer_put(w, 0, 0, UINT64_MAX, buf, 2, &st), QTK_E_ARG);
	qtk_pack_writer_abort(w);
	qtk_pack_writer_abort(NULL);
	/* a failed put poisons the writer: commit refuses, nothing is left */
	REQUIRE(qtk_pack_writer_open(&w, path, d, 1, NULL, &st) == QTK_OK);
	qtk_fault_arm(QTK_FAULT_WRITE, 1, 5 /* EIO */);
	CHECK_EQ(qtk_pack_writer_put(w, 0, 0, 0, buf, 64, &st), QTK_E_IO);
	qtk_fault_arm(QTK_FAULT_WRITE, 0, 0);
	CHECK_EQ(qtk_pack_writer_put(w, 0, 0, 0, buf, 64, &st), QTK_OK);
	CHECK_EQ(qtk_pack_writer_put(w, 0, 1, 0, buf, 4, &st), QTK_OK);
	CHECK_EQ(qtk_pack_writer_commit(w, NULL, &st), QTK_E_IO);
	CHECK(strstr(st.msg, "earlier write failed") != NULL);
	CHECK(!t_exists(path));
	/* metadata must be a JSON object */
	REQUIRE(qtk_pack_writer_open(&w, path, d, 1, NULL, &st) == QTK_OK);
	CHECK_EQ(qtk_pack_writer_put(w, 0, 0, 0, buf, 64, &st), QTK_OK);
	CHECK_EQ(qtk_pack_writer_put(w, 0, 1, 0, buf, 4, &st), QTK_OK);
	CHECK_EQ(qtk_pack_writer_commit(w, "[1]", &st), QTK_E_ARG);
	CHECK(!t_exists(path));
	/* descriptions */
	d[1] = d[0];
	CHECK_EQ(qtk_pack_writer_open(&w, path, d, 2, NULL, &st), QTK_E_PK_DUPLICATE);
	CHECK(w == NULL);
	d[1].name = "";
	CHECK_EQ(qtk_pack_writer_open(&w, path, d, 2, NULL, &st), QTK_E_PK_NAME);
	d[1].name = "v";
	d[1].layout.group = 17;
	CHECK_EQ(qtk_pack_writer_open(&w, path, d, 2, NULL, &st), QTK_E_PK_LAYOUT);
	CHECK(strstr(st.msg, "group 17") != NULL);
	d[1].layout.group = 32;
	d[1].ndim = 9;
	CHECK_EQ(qtk_pack_writer_open(&w, path, d, 2, NULL, &st), QTK_E_PK_NDIM);
	d[1].ndim = 2;
	d[1].shape[0] = d[1].shape[1] = 1ull << 40;
	CHECK_EQ(qtk_pack_writer_open(&w, path, d, 2, NULL, &st), QTK_E_PK_SHAPE);
	d[1].shape[0] = 1;
	d[1].layout.scheme = (qtk_scheme_id)99;
	CHECK_EQ(qtk_pack_writer_open(&w, path, d, 2, NULL, &st), QTK_E_PK_SCHEME);
	CHECK_EQ(qtk_pack_writer_open_aligned(&w, path, d, 1, 100, NULL, &st), QTK_E_ARG);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 0);
}

TEST(pack_writer_refuses_existing_output)
{
	tp_sample s;
	qtk_status st;
	const char *path = t_tmp("x.qtk");

	tp_sample_init(&s);
	REQUIRE(t_write_file(path, "old", 3) == 0);
	CHECK_EQ(tp_write(&s, path, 64, 0, NULL, &st), QTK_E_EXISTS);
	CHECK_EQ(tp_write(&s, path, 64, 1, NULL, &st), QTK_OK);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
}

/* Two threads putting interleaved chunks of the same planes. */
typedef struct {
	qtk_pack_writer *w;
	const tp_sample *s;
	int part;
	qtk_err rc;
} put_job;

#include <pthread.h>
static void *put_half(void *arg)
{
	put_job *j = arg;

	for (size_t i = 0; i < j->s->n; i++) {
		uint64_t sizes[QTK_PLANE_MAX], rows = 1, cols;
		const qtk_pack_desc *d = &j->s->d[i];

		for (uint32_t k = 0; k + 1 < d->ndim; k++)
			rows *= d->shape[k];
		cols = d->ndim ? d->shape[d->ndim - 1] : 1;
		qtk_q_plane_sizes(&d->layout, rows, cols, sizes);
		for (int p = 0; p < QTK_PLANE_MAX; p++) {
			uint8_t *b = malloc(sizes[p] + 1);

			tp_plane_bytes(j->s, i, p, b, sizes[p]);
			for (uint64_t off = (uint64_t)j->part * 7; off < sizes[p]; off += 14) {
				size_t len = sizes[p] - off < 7 ? (size_t)(sizes[p] - off) : 7;
				if (qtk_pack_writer_put(j->w, i, p, off, b + off, len, NULL))
					j->rc = QTK_E_IO;
			}
			free(b);
		}
	}
	return NULL;
}

TEST(pack_writer_parallel_puts_match_serial)
{
	tp_sample s;
	qtk_status st;
	qtk_pack_writer *w;
	pthread_t th[2];
	put_job j[2];
	size_t n1, n2;
	void *a, *b;

	tp_sample_init(&s);
	REQUIRE(tp_write(&s, t_tmp("serial.qtk"), 4096, 0, META, &st) == QTK_OK);
	REQUIRE(qtk_pack_writer_open(&w, t_tmp("par.qtk"), s.d, s.n, NULL, &st) == QTK_OK);
	for (int k = 0; k < 2; k++) {
		j[k] = (put_job){ .w = w, .s = &s, .part = k };
		pthread_create(&th[k], NULL, put_half, &j[k]);
	}
	for (int k = 0; k < 2; k++)
		pthread_join(th[k], NULL);
	CHECK(j[0].rc == QTK_OK && j[1].rc == QTK_OK);
	REQUIRE(qtk_pack_writer_commit(w, META, &st) == QTK_OK);
	a = t_read_file(t_tmp("serial.qtk"), &n1);
	b = t_read_file(t_tmp("par.qtk"), &n2);
	REQUIRE(a && b);
	CHECK_EQ(n1, n2);
	CHECK(n1 == n2 && !memcmp(a, b, n1));
	free(a);
	free(b);
}

/* verify runs threads on large files; the lowest bad tensor is reported
 * whatever the timing. */
TEST(pack_parallel_verify_reports_first_bad_tensor)
{
	enum { NT = 12, ROWS = 256, COLS = 1024 };
	qtk_pack_desc d[NT];
	char names[NT][16];
	qtk_pack_writer *w;
	qtk_pack_file *f;
	qtk_status st;
	float *buf = malloc(ROWS * COLS * sizeof *buf);
	uint8_t *b;
	size_t n;

	for (size_t k = 0; k < ROWS * COLS; k++)
		buf[k] = (float)k;
	memset(d, 0, sizeof d);
	for (int i = 0; i < NT; i++) {
		snprintf(names[i], sizeof names[i], "t%02d", i);
		d[i].name = names[i];
		d[i].ndim = 2;
		d[i].shape[0] = ROWS;
		d[i].shape[1] = COLS;
		d[i].src_dtype = d[i].layout.dtype = QTK_DT_F32;
		d[i].layout.scheme = QTK_SCHEME_F32;
	}
	REQUIRE(qtk_pack_writer_open(&w, t_tmp("big.qtk"), d, NT, NULL, &st) == QTK_OK);
	for (int i = 0; i < NT; i++)
		REQUIRE(qtk_pack_writer_put(w, (size_t)i, 0, 0, buf, ROWS * COLS * 4, &st) == QTK_OK);
	REQUIRE(qtk_pack_writer_commit(w, NULL, &st) == QTK_OK);
	free(buf);
	b = t_read_file(t_tmp("big.qtk"), &n);
	REQUIRE(b);
	REQUIRE(qtk_pack_open_mem(b, n, "big.qtk", 0, &f, &st) == QTK_OK);
	CHECK_EQ(qtk_pack_verify(f, &st), QTK_OK);
	/* corrupt the last byte of t09 and the first of t03, t10 */
	b[qtk_pack_get(f, 9)->planes[0].offset + ROWS * COLS * 4 - 1] ^= 1;
	b[qtk_pack_get(f, 10)->planes[0].offset] ^= 1;
	for (int round = 0; round < 5; round++) {
		CHECK_EQ(qtk_pack_verify(f, &st), QTK_E_CHECKSUM);
		CHECK(strstr(st.msg, "'t09'") != NULL);
	}
	b[qtk_pack_get(f, 3)->planes[0].offset] ^= 1;
	CHECK_EQ(qtk_pack_verify(f, &st), QTK_E_CHECKSUM);
	CHECK(strstr(st.msg, "'t03'") != NULL);
	qtk_pack_close(f);
	free(b);
}
