/* tests: safetensors writer — round trips for every dtype, streaming puts
 * from threads, refusal rules, and atomicity under injected faults. */
#include <errno.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "../formats/qtk_formats.h"
#include "test.h"

TEST(st_write_roundtrip_every_dtype)
{
	qtk_st_desc d[QTK_DT_COUNT + 2];
	void *data[QTK_DT_COUNT + 2];
	char names[QTK_DT_COUNT][16];
	uint64_t seed = 7;
	size_t n = 0;
	for (int dt = 0; dt < QTK_DT_COUNT; dt++, n++) {
		snprintf(names[dt], sizeof names[dt], "t.%s", qtk_dtype_name((qtk_dtype)dt));
		d[n] = (qtk_st_desc){ .name = names[dt], .dtype = (qtk_dtype)dt, .ndim = 2,
		                      .shape = { 3, 5 } };
		size_t nb = 15 * qtk_dtype_size((qtk_dtype)dt);
		uint8_t *b = malloc(nb);
		for (size_t i = 0; i < nb; i++)
			b[i] = (uint8_t)t_rand_u64(&seed);
		data[n] = b;
	}
	static const float scalar = 2.5f;
	d[n] = (qtk_st_desc){ .name = "scalar", .dtype = QTK_DT_F32, .ndim = 0 };
	data[n++] = (void *)(uintptr_t)&scalar;
	d[n] = (qtk_st_desc){ .name = "empty", .dtype = QTK_DT_BF16, .ndim = 3, .shape = { 4, 0, 2 } };
	data[n++] = NULL;
	const char *meta[] = { "format", "pt", "note", "h\xc3\xa9llo \"q\"", NULL };
	const char *p = t_tmp("rt.safetensors");
	qtk_status st;
	REQUIRE(qtk_st_write(p, d, (const void *const *)data, n, meta, NULL, &st) == QTK_OK);
	size_t fl;
	uint8_t *raw = t_read_file(p, &fl);
	REQUIRE(raw);
	uint64_t hl = 0;
	for (int i = 7; i >= 0; i--)
		hl = (hl << 8) | raw[i];
	CHECK_EQ((8 + hl) % 8, 0);     /* data section aligned */
	CHECK(raw[8 + hl - 1] == '}' || raw[8 + hl - 1] == ' ');
	free(raw);
	qtk_st_file *f;
	REQUIRE(qtk_st_open(p, &f, &st) == QTK_OK);
	REQUIRE(qtk_st_count(f) == n);
	CHECK_STR(qtk_st_meta_get(f, "note"), "h\xc3\xa9llo \"q\"");
	CHECK_STR(qtk_st_meta_key(f, 0), "format");
	for (size_t i = 0; i < n; i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i); /* order given == data order */
		CHECK_STR(t->name, d[i].name);
		CHECK_EQ(t->dtype, d[i].dtype);
		CHECK_EQ(t->ndim, d[i].ndim);
		CHECK(!memcmp(t->shape, d[i].shape, d[i].ndim * sizeof t->shape[0]));
		CHECK(t->nbytes == 0 || !memcmp(t->data, data[i], (size_t)t->nbytes));
	}
	float v;
	CHECK_EQ(qtk_st_read_f32(qtk_st_find(f, "scalar"), 0, 1, &v, &st), QTK_OK);
	CHECK(v == 2.5f);
	qtk_st_close(f);
	for (int dt = 0; dt < QTK_DT_COUNT; dt++)
		free(data[dt]);
}

TEST(st_write_refusals)
{
	qtk_status st;
	const char *p = t_tmp("x.safetensors");
	float a = 1;
	const void *data[] = { &a, &a };
	qtk_st_desc d[2] = { { .name = "a", .dtype = QTK_DT_F32, .ndim = 1, .shape = { 1 } },
	                     { .name = "a", .dtype = QTK_DT_F32, .ndim = 1, .shape = { 1 } } };
	CHECK_EQ(qtk_st_write(p, d, data, 2, NULL, NULL, &st), QTK_E_ST_DUPLICATE);
	CHECK(!t_exists(p));
	d[1].name = "";
	CHECK_EQ(qtk_st_write(p, d, data, 2, NULL, NULL, &st), QTK_E_ARG);
	d[1].name = "__metadata__";
	CHECK_EQ(qtk_st_write(p, d, data, 2, NULL, NULL, &st), QTK_E_ARG);
	d[1].name = "b";
	d[1].ndim = 9;
	CHECK_EQ(qtk_st_write(p, d, data, 2, NULL, NULL, &st), QTK_E_ARG);
	d[1].ndim = 2;
	d[1].shape[0] = d[1].shape[1] = 1ull << 32;
	CHECK_EQ(qtk_st_write(p, d, data, 2, NULL, NULL, &st), QTK_E_OVERFLOW);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 0);
	d[1].ndim = 1;
	d[1].shape[0] = 1;
	REQUIRE(qtk_st_write(p, d, data, 2, NULL, NULL, &st) == QTK_OK);
	CHECK_EQ(qtk_st_write(p, d, data, 1, NULL, NULL, &st), QTK_E_EXISTS);
	qtk_write_opts o = { .force = 1 };
	CHECK_EQ(qtk_st_write(p, d, data, 1, NULL, &o, &st), QTK_OK);
	const char *in[] = { p };
	o.inputs = in;
	o.ninputs = 1;
	CHECK_EQ(qtk_st_write(p, d, data, 1, NULL, &o, &st), QTK_E_SAME_FILE);
	qtk_st_file *f;
	REQUIRE(qtk_st_open(p, &f, &st) == QTK_OK);
	CHECK_EQ(qtk_st_count(f), 1);
	qtk_st_close(f);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
}

typedef struct {
	qtk_st_writer *w;
	int part;
	const uint8_t *src;
} put_job;

/* Each of two threads writes every other 1 KiB chunk, back to front. */
static void *put_thread(void *arg)
{
	put_job *j = arg;
	for (int c = 63; c >= 0; c--)
		if (c % 2 == j->part)
			qtk_st_writer_put(j->w, 1, (uint64_t)c * 1024, j->src + c * 1024, 1024, NULL);
	return NULL;
}

TEST(st_writer_streaming_threads)
{
	qtk_status st;
	qtk_st_desc d[2] = { { .name = "small", .dtype = QTK_DT_U8, .ndim = 1, .shape = { 3 } },
	                     { .name = "big", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 128, 128 } } };
	uint8_t *src = malloc(65536);
	uint64_t seed = 1;
	for (size_t i = 0; i < 65536; i++)
		src[i] = (uint8_t)t_rand_u64(&seed);
	const char *p = t_tmp("s.safetensors");
	qtk_st_writer *w;
	REQUIRE(qtk_st_writer_open(&w, p, d, 2, NULL, NULL, &st) == QTK_OK);
	put_job j[2] = { { w, 0, src }, { w, 1, src } };
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, put_thread, &j[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	CHECK_EQ(qtk_st_writer_put(w, 0, 2, "xyz", 2, &st), QTK_E_ARG); /* past the end */
	CHECK_EQ(qtk_st_writer_put(w, 2, 0, "x", 1, &st), QTK_E_ARG);   /* no such tensor */
	CHECK_EQ(qtk_st_writer_put(w, 0, 0, "abc", 3, &st), QTK_OK);
	CHECK(!t_exists(p)); /* nothing visible before commit */
	REQUIRE(qtk_st_writer_commit(w, &st) == QTK_OK);
	qtk_st_file *f;
	REQUIRE(qtk_st_open(p, &f, &st) == QTK_OK);
	CHECK(!memcmp(qtk_st_find(f, "big")->data, src, 65536));
	CHECK(!memcmp(qtk_st_find(f, "small")->data, "abc", 3));
	qtk_st_close(f);
	free(src);
}

TEST(st_writer_incomplete_commit_fails)
{
	qtk_status st;
	qtk_st_desc d = { .name = "t", .dtype = QTK_DT_F16, .ndim = 1, .shape = { 4 } };
	const char *p = t_tmp("inc.safetensors");
	qtk_st_writer *w;
	REQUIRE(qtk_st_writer_open(&w, p, &d, 1, NULL, NULL, &st) == QTK_OK);
	CHECK_EQ(qtk_st_writer_put(w, 0, 0, "12345", 5, &st), QTK_OK);
	CHECK_EQ(qtk_st_writer_commit(w, &st), QTK_E_ARG);
	CHECK(strstr(st.msg, "5 of 8") != NULL);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 0);
	REQUIRE(qtk_st_writer_open(&w, p, &d, 1, NULL, NULL, &st) == QTK_OK);
	qtk_st_writer_abort(w);
	qtk_st_writer_abort(NULL);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 0);
}

/* An output in memory (tmpfs) is not fallocate'd (formats/fileio.c's
 * qtk_out_reserve): one larger than the free space there is still refused
 * before anything is written, naming the file and both sizes. */
TEST(st_writer_tmpfs_free_space_checked)
{
	struct statfs fs;
	char dir[] = "/dev/shm/qtk-test-XXXXXX", path[64];
	/* 2^40 bytes: more than any test machine's memory */
	qtk_st_desc d = { .name = "t", .dtype = QTK_DT_U8, .ndim = 2,
	                  .shape = { 1u << 20, 1u << 20 } };
	qtk_st_writer *w = NULL;
	qtk_status st;

	if (statfs("/dev/shm", &fs) != 0 || fs.f_type != TMPFS_MAGIC || !mkdtemp(dir))
		SKIP("/dev/shm is not a tmpfs here");
	snprintf(path, sizeof path, "%s/big.safetensors", dir);
	CHECK_EQ(qtk_st_writer_open(&w, path, &d, 1, NULL, NULL, &st), QTK_E_IO);
	CHECK_MSG(w == NULL && strstr(st.msg, path) && strstr(st.msg, "cannot reserve space") &&
	          strstr(st.msg, "1099511627" /* 1099511627776 + the header */), "%s", st.msg);
	if (w) /* the check failed: nothing left behind either way */
		qtk_st_writer_abort(w);
	CHECK(t_dir_entries(dir) == 0);
	rmdir(dir);
}

/* Fail the Nth ALLOC/WRITE/FSYNC/RENAME/OPEN until the write succeeds: each
 * failure leaves the old output as it was and no temporary behind. */
TEST(st_write_atomic_under_faults)
{
	static const qtk_fault_kind kinds[] = { QTK_FAULT_ALLOC, QTK_FAULT_WRITE, QTK_FAULT_FSYNC,
	                                        QTK_FAULT_RENAME, QTK_FAULT_OPEN };
	qtk_status st;
	float a[4] = { 1, 2, 3, 4 }, b[4] = { 5, 6, 7, 8 };
	qtk_st_desc d[2] = { { .name = "a", .dtype = QTK_DT_F32, .ndim = 1, .shape = { 4 } },
	                     { .name = "b", .dtype = QTK_DT_F32, .ndim = 1, .shape = { 4 } } };
	const void *data[] = { a, b };
	const char *meta[] = { "k", "v", NULL };
	const char *p = t_tmp("atomic.safetensors");
	REQUIRE(t_write_file(p, "old", 3) == 0);
	qtk_write_opts o = { .force = 1 };
	for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
		int done = 0, failures = 0;
		for (uint64_t n = 1; n < 10000 && !done; n++) {
			qtk_fault_arm(kinds[k], n, ENOSPC);
			qtk_err rc = qtk_st_write(p, d, data, 2, meta, &o, &st);
			int fired = qtk_fault_fired(kinds[k]);
			qtk_fault_arm(kinds[k], 0, 0);
			if (!fired) {
				CHECK_EQ(rc, QTK_OK);
				done = 1;
				break;
			}
			if (rc == QTK_OK) { /* a tolerated failure (e.g. best-effort cleanup) */
				qtk_st_file *g = NULL;
				CHECK_MSG(qtk_st_open(p, &g, &st) == QTK_OK, "kind %zu n=%llu: %s", k,
				          (unsigned long long)n, st.msg);
				qtk_st_close(g);
				REQUIRE(t_write_file(p, "old", 3) == 0);
				continue;
			}
			failures++;
			size_t len;
			char *c = t_read_file(p, &len);
			CHECK_MSG(c && len == 3 && !memcmp(c, "old", 3), "kind %zu n=%llu: output changed",
			          k, (unsigned long long)n);
			free(c);
			CHECK_MSG(t_dir_entries(t_tmpdir()) == 1, "kind %zu n=%llu: temporary left", k,
			          (unsigned long long)n);
		}
		CHECK_MSG(done && failures > 0, "kind %zu: done=%d failures=%d", k, done, failures);
		qtk_st_file *f;
		REQUIRE(qtk_st_open(p, &f, &st) == QTK_OK);
		CHECK_EQ(qtk_st_count(f), 2);
		qtk_st_close(f);
		REQUIRE(t_write_file(p, "old", 3) == 0);
	}
}
