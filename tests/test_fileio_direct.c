/* tests: the output files' direct-I/O path (formats/fileio.c). A file is
 * written as many pieces at random offsets and lengths, in shuffled order,
 * from four threads, with gaps nobody writes, pieces written twice (the
 * second must win) and writes past the aligned part; after commit it must
 * equal the expected bytes, direct or buffered, with the pending-block
 * table large or forced to write blocks early (and merge them back). Write
 * faults must fail the commit and leave no file. */
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "test.h"

enum { NPIECE = 600, NTHREAD = 4 };

typedef struct {
	uint64_t off;
	size_t len;
	const uint8_t *src;
} piece;

typedef struct {
	qtk_outfile *o;
	piece *p;
	size_t n;
	int fail;
} worker_arg;

static uint32_t rng = 7;
static uint32_t rnd(void)
{
	rng = rng * 1664525u + 1013904223u;
	return rng >> 8;
}

static void *worker(void *a_)
{
	worker_arg *a = a_;
	qtk_status st;

	for (size_t i = 0; i < a->n; i++)
		if (qtk_out_pwrite(a->o, a->p[i].src, a->p[i].len, a->p[i].off, &st) != QTK_OK)
			a->fail = 1;
	return NULL;
}

/* Write size bytes as described above; return the commit's result and
 * fill want with what the file must hold. */
static qtk_err write_file(const char *path, uint64_t size, size_t tail, uint8_t *want,
                          int *direct)
{
	qtk_outfile o;
	qtk_status st;
	qtk_write_opts wo = { .force = 1 };
	uint8_t *src = malloc(size + tail), *again = malloc(size);
	piece *p = malloc(NPIECE * sizeof *p);
	uint64_t *cut = malloc((NPIECE + 1) * sizeof *cut);
	worker_arg wa[NTHREAD];
	pthread_t th[NTHREAD];
	qtk_err rc;
	size_t np = 0;

	for (uint64_t i = 0; i < size + tail; i++)
		src[i] = (uint8_t)(rnd() | 1); /* never 0: a lost byte shows */
	for (uint64_t i = 0; i < size; i++)
		again[i] = (uint8_t)(rnd() | 1);
	/* cut [0, size) at sorted random points into pieces; every 9th is a gap */
	cut[0] = 0;
	for (size_t i = 1; i < NPIECE; i++)
		cut[i] = rnd() % size;
	cut[NPIECE] = size;
	for (size_t i = 1; i < NPIECE; i++) /* insertion sort, small n */
		for (size_t j = i; j > 0 && cut[j - 1] > cut[j]; j--) {
			uint64_t t = cut[j];
			cut[j] = cut[j - 1];
			cut[j - 1] = t;
		}
	memset(want, 0, size + tail);
	for (size_t i = 0; i < NPIECE; i++) {
		if (cut[i + 1] == cut[i] || i % 9 == 4)
			continue; /* gap: stays zero */
		p[np++] = (piece){ cut[i], (size_t)(cut[i + 1] - cut[i]), src + cut[i] };
		memcpy(want + cut[i], src + cut[i], (size_t)(cut[i + 1] - cut[i]));
	}
	for (size_t i = np; i-- > 1;) { /* shuffle */
		size_t j = rnd() % (i + 1);
		piece t = p[i];
		p[i] = p[j];
		p[j] = t;
	}
	if (qtk_out_open(&o, path, &wo, &st) != QTK_OK) {
		free(src);
		free(again);
		free(p);
		free(cut);
		return st.code;
	}
	if (qtk_out_truncate(&o, size, &st) != QTK_OK) {
		qtk_out_abort(&o);
		free(src);
		free(again);
		free(p);
		free(cut);
		return st.code;
	}
	*direct = qtk_out_is_direct(&o);
	for (int t = 0; t < NTHREAD; t++) {
		wa[t] = (worker_arg){ &o, p + np * (size_t)t / NTHREAD,
		                      np * (size_t)(t + 1) / NTHREAD - np * (size_t)t / NTHREAD, 0 };
		pthread_create(&th[t], NULL, worker, &wa[t]);
	}
	for (int t = 0; t < NTHREAD; t++)
		pthread_join(th[t], NULL);
	rc = QTK_OK;
	for (int t = 0; t < NTHREAD; t++)
		if (wa[t].fail)
			rc = QTK_E_IO;
	/* after the parallel part: rewrite some ranges (they must win), some
	 * crossing block edges, one whole aligned run, and append past size */
	for (int k = 0; k < 40 && rc == QTK_OK; k++) {
		uint64_t off = k == 0 && size > 8192 ? 8192 : rnd() % size;
		size_t len = k == 0 ? 3 * 4096 : 1 + rnd() % 9000;
		if (off + len > size)
			len = (size_t)(size - off);
		if (qtk_out_pwrite(&o, again + off, len, off, &st) != QTK_OK)
			rc = st.code;
		memcpy(want + off, again + off, len);
	}
	if (rc == QTK_OK && tail) {
		if (qtk_out_pwrite(&o, src + size, tail, size, &st) != QTK_OK)
			rc = st.code;
		memcpy(want + size, src + size, tail);
	}
	if (rc == QTK_OK)
		rc = qtk_out_commit(&o, &st);
	else
		qtk_out_abort(&o);
	free(src);
	free(again);
	free(p);
	free(cut);
	return rc;
}

static int file_equals(const char *path, const uint8_t *want, uint64_t n)
{
	FILE *f = fopen(path, "rb");
	uint8_t *got = malloc(n + 1);
	size_t r = f ? fread(got, 1, n + 1, f) : 0;
	int ok = f && r == n && memcmp(got, want, n) == 0;

	if (f)
		fclose(f);
	free(got);
	return ok;
}

TEST(fileio_direct_matches_buffered)
{
	static const uint64_t sizes[] = { 3u << 20, (3u << 20) + 1234, 5000 };
	size_t limit0 = qtk_dio_pending_limit;
	uint64_t min0 = qtk_dio_min_size;
	int saw_direct = 0;

	qtk_dio_min_size = 0;
	for (int mode = 0; mode < 3; mode++) /* direct, direct + tiny table, buffered */
		for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
			const char *path = t_tmp("dio.bin");
			uint64_t size = sizes[k];
			size_t tail = k == 1 ? 777 : 0;
			uint8_t *want = malloc(size + tail);
			int direct = 0;

			qtk_dio_pending_limit = mode == 1 ? 3 : limit0;
			if (mode == 2)
				setenv("QTK_DIRECT_IO", "0", 1);
			else
				setenv("QTK_DIRECT_IO", "1", 1);
			CHECK_EQ(write_file(path, size, tail, want, &direct), QTK_OK);
			unsetenv("QTK_DIRECT_IO");
			CHECK_MSG(file_equals(path, want, size + tail), "mode %d size %llu differs",
			          mode, (unsigned long long)size);
			if (mode == 2)
				CHECK(!direct);
			saw_direct |= direct;
			free(want);
			remove(path);
		}
	qtk_dio_pending_limit = limit0;
	qtk_dio_min_size = min0;
	if (!saw_direct)
		SKIP("this filesystem refuses O_DIRECT: only the buffered path ran");
}

TEST(fileio_direct_below_min_size_is_buffered)
{
	qtk_outfile o;
	qtk_status st;
	qtk_write_opts wo = { .force = 1 };

	const char *env = getenv("QTK_DIRECT_IO");
	char saved[16] = "";

	if (env)
		snprintf(saved, sizeof saved, "%s", env);
	unsetenv("QTK_DIRECT_IO"); /* the default rule */
	REQUIRE(qtk_out_open(&o, t_tmp("dio_small.bin"), &wo, &st) == QTK_OK);
	REQUIRE(qtk_out_truncate(&o, 1u << 20, &st) == QTK_OK);
	CHECK(!qtk_out_is_direct(&o)); /* 1 MB < qtk_dio_min_size (1 GiB) */
	qtk_out_abort(&o);
	if (env)
		setenv("QTK_DIRECT_IO", saved, 1);
}

TEST(fileio_direct_write_faults_fail_cleanly)
{
	uint64_t min0 = qtk_dio_min_size;
	size_t limit0 = qtk_dio_pending_limit;
	const char *path = t_tmp("dio_fault.bin");
	uint64_t size = 1u << 20;
	uint8_t *want = malloc(size);
	int fired_any = 0, direct = 0;
	struct stat sb;

	qtk_dio_min_size = 0;
	qtk_dio_pending_limit = 4; /* early writes and merges too */
	for (uint64_t n = 1; n < 400; n += 7) {
		qtk_err rc;

		remove(path);
		qtk_fault_arm(QTK_FAULT_WRITE, n, EIO);
		rc = write_file(path, size, 0, want, &direct);
		if (!qtk_fault_fired(QTK_FAULT_WRITE)) {
			qtk_fault_arm(QTK_FAULT_WRITE, 0, 0);
			CHECK_EQ(rc, QTK_OK);
			CHECK(file_equals(path, want, size));
			break;
		}
		fired_any = 1;
		qtk_fault_arm(QTK_FAULT_WRITE, 0, 0);
		CHECK_MSG(rc != QTK_OK, "fault at write %llu not reported", (unsigned long long)n);
		CHECK_MSG(stat(path, &sb) != 0, "fault at write %llu left a file",
		          (unsigned long long)n);
	}
	CHECK(fired_any);
	qtk_dio_min_size = min0;
	qtk_dio_pending_limit = limit0;
	free(want);
	remove(path);
	if (!direct)
		SKIP("this filesystem refuses O_DIRECT: faults checked on the buffered path");
}
