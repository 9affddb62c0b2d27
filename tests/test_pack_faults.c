/* tests: the packed writer under failure — the Nth allocation, write,
 * fsync, rename or temp-file creation fails (for every N until the write
 * succeeds), and a writer killed with SIGKILL at random points. Each
 * failure must leave the output path as it was and no temporary file. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qtk_formats.h"
#include "test.h"
#include "test_pack_util.h"

static void sweep(qtk_fault_kind kind, int err, int with_old)
{
	tp_sample s;
	const char *path = t_tmp("out.qtk");
	int done = 0;

	tp_sample_init(&s);
	for (uint64_t nth = 1; nth < 100000 && !done; nth++) {
		qtk_status st;
		qtk_err rc;
		size_t n;
		char *now;

		if (with_old)
			REQUIRE(t_write_file(path, "old contents", 12) == 0);
		else
			unlink(path);
		qtk_fault_arm(kind, nth, err);
		rc = tp_write(&s, path, 64, with_old, "{}", &st);
		if (!qtk_fault_fired(kind)) {
			/* the sweep has passed the last call of this kind */
			qtk_fault_arm(kind, 0, 0);
			CHECK_MSG(rc == QTK_OK, "kind %d n %llu: %s", kind, (unsigned long long)nth, st.msg);
			CHECK(nth > 1);
			done = 1;
			break;
		}
		qtk_fault_arm(kind, 0, 0);
		if (rc == QTK_OK) {
			/* only a failure after the rename may be absorbed (fileio's
			 * directory fsync): the new file must then be complete */
			done = 1;
			break;
		}
		CHECK_MSG(t_dir_entries(t_tmpdir()) == with_old, "kind %d n %llu: %d files left",
		          kind, (unsigned long long)nth, t_dir_entries(t_tmpdir()));
		now = t_read_file(path, &n);
		if (with_old)
			CHECK_MSG(now && n == 12 && !memcmp(now, "old contents", 12),
			          "kind %d n %llu: old output changed", kind, (unsigned long long)nth);
		else
			CHECK(now == NULL);
		free(now);
		if (err && kind != QTK_FAULT_ALLOC)
			CHECK_MSG(strstr(st.msg, strerror(err)) != NULL, "message '%s'", st.msg);
	}
	CHECK(done);
	{
		qtk_pack_file *f;
		qtk_status st;
		CHECK_EQ(qtk_pack_open(path, QTK_PACK_OPEN_VERIFY, &f, &st), QTK_OK);
		qtk_pack_close(f);
	}
}

TEST(pack_fault_sweep_alloc)
{
	sweep(QTK_FAULT_ALLOC, 0, 1);
	sweep(QTK_FAULT_ALLOC, 0, 0);
}

TEST(pack_fault_sweep_write_enospc_eio)
{
	sweep(QTK_FAULT_WRITE, ENOSPC, 1);
	sweep(QTK_FAULT_WRITE, EIO, 0);
}

TEST(pack_fault_sweep_fsync_rename_open)
{
	sweep(QTK_FAULT_FSYNC, EIO, 1);
	sweep(QTK_FAULT_RENAME, EIO, 1);
	sweep(QTK_FAULT_RENAME, ENOSPC, 0);
	sweep(QTK_FAULT_OPEN, EACCES, 1);
}

/* Both versions are valid files told apart by their metadata. */
static int which_version(const char *path)
{
	qtk_pack_file *f;
	qtk_status st;
	int v = -1;

	if (qtk_pack_open(path, QTK_PACK_OPEN_VERIFY, &f, &st) != QTK_OK)
		return -2;
	v = strstr(qtk_pack_metadata(f, NULL), "\"v\":1") ? 1 : 2;
	qtk_pack_close(f);
	return v;
}

TEST(pack_writer_killed_leaves_old_file_or_nothing)
{
	tp_sample s;
	qtk_pack_desc big;
	const char *path = t_tmp("k.qtk");
	uint64_t seed = (uint64_t)time(NULL);
	int seen_old = 0, seen_none = 0;

	tp_sample_init(&s);
	/* a larger tensor so the kill often lands mid-write */
	memset(&big, 0, sizeof big);
	big.name = "zz.big";
	big.ndim = 2;
	big.shape[0] = 512;
	big.shape[1] = 1024;
	big.src_dtype = QTK_DT_F32;
	big.layout.scheme = QTK_SCHEME_F32;
	big.layout.dtype = QTK_DT_F32;
	s.d[s.n++] = big;
	for (int round = 0; round < 24; round++) {
		int have_old = round % 2, status, v;
		pid_t pid;

		unlink(path);
		if (have_old)
			REQUIRE(tp_write(&s, path, 4096, 1, "{\"v\":1}", NULL) == QTK_OK);
		pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0) {
			for (;;)
				tp_write(&s, path, 4096, 1, "{\"v\":2}", NULL);
		}
		usleep((useconds_t)(t_rand_u64(&seed) % 20000));
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		v = which_version(path);
		/* the child may have committed v2 before dying: also complete */
		if (have_old)
			CHECK_MSG(v == 1 || v == 2, "round %d: output is %d", round, v);
		else
			CHECK_MSG(v == -2 ? !t_exists(path) : v == 2, "round %d: output is %d", round, v);
		seen_old += have_old && v == 1;
		seen_none += !have_old && !t_exists(path);
	}
	/* the next writer sweeps the dead child's temporaries */
	REQUIRE(tp_write(&s, path, 64, 1, "{}", NULL) == QTK_OK);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
	printf("    killed mid-write: old kept %d, none left %d of 12 each\n", seen_old, seen_none);
}
