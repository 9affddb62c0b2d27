/* formats: crash-safe output files, checked inputs and read-only mappings
 * (see fileio.h). Temporary names are ".qtk-tmp-<pid>-XXXXXX" in the
 * target's directory: a fixed length (any legal target name works), and the
 * pid lets a later run tell a live writer's file from a killed one's. */
#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "fileio.h"

/* ---- jansson's allocator ------------------------------------------------ */

/* jansson allocates through qtk_malloc/qtk_free, so the allocation fault
 * sweeps reach every JSON path (safetensors headers, config.json, recipes,
 * metadata). jansson's allocator is process-wide; it is set before main()
 * from this file, which every part that reads or writes a file links. Text
 * from json_dumps is freed with free() or qtk_free() alike (both free).
 *
 * jansson 2.14 does not survive every refused allocation: when its lexer
 * cannot save a byte of a token it later reads and writes past the token's
 * buffer (valgrind: "Invalid write ... 0 bytes after a block"), and
 * json_dumps ignores a failure to write an object key and returns the rest
 * (a safetensors header with a key missing). So inside a guard
 * (qtk_json_begin/end) a refusal is counted and the memory served anyway,
 * and the caller reports QTK_E_NOMEM from the count. */
static __thread unsigned json_refused; /* refusals on this thread */
static __thread int json_guarded;      /* guard depth on this thread */

static void *json_alloc(size_t n)
{
	void *p = qtk_malloc(n);

	if (!p) {
		json_refused++;
		if (json_guarded)
			p = malloc(n ? n : 1); /* real exhaustion: NULL, as before */
	}
	return p;
}

__attribute__((constructor)) static void json_alloc_init(void)
{
	json_set_alloc_funcs(json_alloc, qtk_free);
}

unsigned qtk_json_begin(void)
{
	json_guarded++;
	return json_refused;
}

int qtk_json_end(unsigned mark)
{
	json_guarded--;
	return json_refused != mark;
}

/* ---- registry of live temporaries, for signal handlers ---------------- */

#define MAX_TEMPS 64
static char temp_paths[MAX_TEMPS][PATH_MAX];
static volatile sig_atomic_t temp_used[MAX_TEMPS];
static volatile sig_atomic_t temp_isdir[MAX_TEMPS];

static int registry_put(const char *tmp, int isdir)
{
	for (int i = 0; i < MAX_TEMPS; i++) {
		if (__sync_bool_compare_and_swap(&temp_used[i], 0, 2)) {
			snprintf(temp_paths[i], PATH_MAX, "%s", tmp);
			temp_isdir[i] = isdir;
			__sync_synchronize();
			temp_used[i] = 1;
			return i;
		}
	}
	return -1; /* cleanup then relies on the stale-temp sweep */
}

static void registry_del(int slot)
{
	if (slot >= 0)
		temp_used[slot] = 0;
}

void qtk_fmt_remove_temps(void)
{
	/* the files first: a temporary directory goes once they are gone */
	for (int i = 0; i < MAX_TEMPS; i++)
		if (temp_used[i] == 1 && !temp_isdir[i])
			unlink(temp_paths[i]);
	for (int i = 0; i < MAX_TEMPS; i++)
		if (temp_used[i] == 1 && temp_isdir[i])
			rmdir(temp_paths[i]);
}

/* ---- registry of live mappings, for the SIGBUS handler ------------------
 * A mapped file that shrinks under qtk (truncated or rewritten in place by
 * another program) turns a read past its new end into SIGBUS. The handler
 * that qtk_fmt_catch_sigbus installs finds the mapping the faulting address
 * lies in, names its file, removes the temporaries and exits; a fault
 * elsewhere keeps the default action (a bug: a core dump, not a message). */

#define MAX_MAPS 1024
static struct {
	volatile uintptr_t base, size;
	const char *volatile path;
} maps[MAX_MAPS];
static volatile sig_atomic_t map_used[MAX_MAPS];
static volatile int sigbus_status = -1;
static volatile sig_atomic_t sigbus_taken;

static int map_add(const void *base, uint64_t size, const char *path)
{
	for (int i = 0; i < MAX_MAPS; i++) {
		if (__sync_bool_compare_and_swap(&map_used[i], 0, 2)) {
			maps[i].base = (uintptr_t)base;
			maps[i].size = (uintptr_t)size;
			maps[i].path = path;
			__sync_synchronize();
			map_used[i] = 1;
			return i;
		}
	}
	return -1; /* a fault in it is then a plain SIGBUS */
}

static void map_del(int slot)
{
	if (slot >= 0) {
		map_used[slot] = 0;
		__sync_synchronize();
	}
}

static void put_str(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	while (n) {
		ssize_t w = write(2, s, n);
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

static void put_u64(uint64_t v)
{
	char b[24];
	int i = (int)sizeof b - 1;

	b[i] = 0;
	do
		b[--i] = (char)('0' + v % 10);
	while (v /= 10);
	put_str(b + i);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr;

	(void)uc;
	for (int i = 0; i < MAX_MAPS; i++) {
		if (map_used[i] != 1 || a < maps[i].base || a - maps[i].base >= maps[i].size)
			continue;
		/* one message: other threads faulting meanwhile wait for the exit */
		if (!__sync_bool_compare_and_swap(&sigbus_taken, 0, 1))
			for (;;)
				pause();
		put_str("qtk: ");
		put_str(maps[i].path ? maps[i].path : "?");
		put_str(": the file shrank while qtk was reading it (truncated or rewritten by "
		        "another program: no data at byte ");
		put_u64((uint64_t)(a - maps[i].base));
		put_str("); no output written\n");
		qtk_fmt_remove_temps();
		_exit(sigbus_status);
	}
	/* not a mapping of ours: the default action, delivered on return (a
	 * fault also recurs at the same instruction) */
	signal(sig, SIG_DFL);
	raise(sig);
}

int qtk_fmt_catch_sigbus(int exit_status)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	sigbus_status = exit_status;
	return sigaction(SIGBUS, &sa, NULL) ? -1 : 0;
}

/* ---- helpers ------------------------------------------------------------ */

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *d;

	if (!slash)
		return qtk_strdup(".");
	if (slash == path)
		return qtk_strdup("/");
	d = qtk_malloc((size_t)(slash - path) + 1);
	if (d) {
		memcpy(d, path, (size_t)(slash - path));
		d[slash - path] = '\0';
	}
	return d;
}

static const char *base_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

int qtk_fmt_same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	if (stat(a, &sa) != 0 || stat(b, &sb) != 0)
		return 0;
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb, (void)flag, (void)f;
	remove(p);
	return 0;
}

/* Remove a file, or a directory and all it holds. */
static void rm_tree(const char *p)
{
	if (p)
		nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#define TMP_PREFIX ".qtk-tmp-"

/* The pid in a temporary's name: ".qtk-tmp-<pid>-XXXXXX", or the
 * ".<target>.qtk-tmp-<pid>-XXXXXX" of older versions; 0 for other names. */
static long temp_pid(const char *name)
{
	const char *p = name, *q = NULL;
	char *end;
	long pid;

	if (name[0] != '.')
		return 0;
	while ((p = strstr(p, TMP_PREFIX)) != NULL)
		q = p++;
	if (!q)
		return 0;
	q += sizeof TMP_PREFIX - 1;
	if (*q < '1' || *q > '9')
		return 0;
	pid = strtol(q, &end, 10);
	return *end == '-' && strlen(end + 1) == 6 ? pid : 0;
}

/* Remove the temporaries (files and directories) of dead processes in dir. */
static void sweep_stale(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		char full[PATH_MAX];
		long pid = temp_pid(e->d_name);

		if (pid <= 0 || kill((pid_t)pid, 0) == 0 || errno == EPERM)
			continue; /* not a temporary, or a live writer owns it */
		if ((size_t)snprintf(full, sizeof full, "%s/%s", dir, e->d_name) < sizeof full)
			rm_tree(full);
	}
	closedir(d);
}

/* "DIR/.qtk-tmp-<pid>-XXXXXX", a mkstemp/mkdtemp template (NULL: out of
 * memory). Its length does not depend on the target's name. */
static char *temp_template(const char *dir)
{
	size_t n = strlen(dir) + sizeof TMP_PREFIX + 32;
	char *t = qtk_malloc(n);

	if (t)
		snprintf(t, n, "%s/" TMP_PREFIX "%ld-XXXXXX", dir, (long)getpid());
	return t;
}

static qtk_err io_fail(qtk_status *st, const char *path, const char *what, int err)
{
	return qtk_fail(st, QTK_E_IO, "%s: %s: %s", path, what, strerror(err));
}

/* ---- what is at a path ------------------------------------------------- */

/* What a file that is not the expected kind is, for messages. */
static const char *type_phrase(mode_t m)
{
	return S_ISREG(m) ? "is a regular file" : S_ISDIR(m) ? "is a directory" :
	       S_ISFIFO(m) ? "is a FIFO" : S_ISSOCK(m) ? "is a socket" :
	       S_ISCHR(m) ? "is a character device" : S_ISBLK(m) ? "is a block device" :
	       S_ISLNK(m) ? "is a symbolic link" : "is not a regular file";
}

/* An output path holding something --force must not replace. */
static qtk_err refuse_node(qtk_status *st, const char *path, mode_t m, const char *wanted)
{
	if (S_ISLNK(m))
		return qtk_fail(st, QTK_E_ARG, "%s: output is a symbolic link; qtk neither writes "
		                "through nor replaces one (name the file itself)", path);
	return qtk_fail(st, QTK_E_ARG, "%s: output %s; not replaced, even with --force (%s)",
	                path, type_phrase(m), wanted);
}

/* lstat an output path into *sb, or set *absent when nothing is there;
 * anything else (a name too long, a missing directory ...) fails. */
static qtk_err out_lstat(const char *path, struct stat *sb, int *absent, qtk_status *st)
{
	*absent = 0;
	if (lstat(path, sb) == 0)
		return QTK_OK;
	if (errno == ENOENT) {
		*absent = 1;
		return QTK_OK;
	}
	return qtk_fail(st, QTK_E_IO, "%s: %s", path, strerror(errno));
}

/* ---- output ------------------------------------------------------------- */

static const char file_wanted[] = "only a regular file is replaced";

qtk_err qtk_out_open(qtk_outfile *o, const char *path,
                     const qtk_write_opts *opts, qtk_status *st)
{
	char *dir = NULL;
	int err, absent;
	struct stat sb;

	memset(o, 0, sizeof *o);
	o->fd = -1;
	o->slot = -1;
	o->force = opts && opts->force;
	if (!path || !*path || base_of(path)[0] == '\0')
		return qtk_fail(st, QTK_E_ARG, "output path '%s' is not a file name",
		                path ? path : "");
	for (size_t i = 0; opts && i < opts->ninputs; i++)
		if (qtk_fmt_same_file(path, opts->inputs[i]))
			return qtk_fail(st, QTK_E_SAME_FILE,
			                "%s: output is also an input of this run; refusing to overwrite it",
			                path);
	/* lstat: a link is not followed, and a FIFO, socket or device is
	 * refused before anything is created (checked again at commit) */
	QTK_TRY(out_lstat(path, &sb, &absent, st));
	if (!absent && !S_ISREG(sb.st_mode))
		return refuse_node(st, path, sb.st_mode, file_wanted);
	if (!absent && !o->force)
		return qtk_fail(st, QTK_E_EXISTS,
		                "%s: output exists (use --force to replace it)", path);
	dir = dir_of(path);
	if (!dir)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	sweep_stale(dir);
	o->tmp = temp_template(dir);
	o->path = qtk_strdup(path);
	qtk_free(dir);
	if (!o->tmp || !o->path) {
		qtk_out_abort(o);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	err = qtk_fault_check(QTK_FAULT_OPEN);
	if (err) {
		qtk_out_abort(o);
		return io_fail(st, path, "cannot create temporary file", err);
	}
	o->fd = mkstemp(o->tmp);
	if (o->fd < 0) {
		err = errno;
		qtk_free(o->tmp);
		o->tmp = NULL;
		qtk_out_abort(o);
		return io_fail(st, path, "cannot create temporary file", err);
	}
	o->slot = registry_put(o->tmp, 0);
	fchmod(o->fd, 0644);
	return QTK_OK;
}

qtk_err qtk_out_pwrite(qtk_outfile *o, const void *buf, size_t n, uint64_t off,
                       qtk_status *st)
{
	const uint8_t *p = buf;

	while (n > 0) {
		int err = qtk_fault_check(QTK_FAULT_WRITE);
		ssize_t w;

		if (err)
			return io_fail(st, o->path, "write failed", err);
		w = pwrite(o->fd, p, n > (1u << 30) ? (1u << 30) : n, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return io_fail(st, o->path, "write failed", errno);
		}
		if (w == 0)
			return io_fail(st, o->path, "write failed", ENOSPC);
		p += w;
		off += (uint64_t)w;
		n -= (size_t)w;
		/* Start writeback every 64 MB, so the fsync at commit finds little
		 * left to write (it overlaps the conversion instead of following
		 * it). Only a hint: errors surface at fsync. */
		if (__atomic_add_fetch(&o->dirty, (uint64_t)w, __ATOMIC_RELAXED) >= (64u << 20) &&
		    __atomic_exchange_n(&o->dirty, 0, __ATOMIC_RELAXED) >= (64u << 20))
			sync_file_range(o->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	}
	return QTK_OK;
}

qtk_err qtk_out_truncate(qtk_outfile *o, uint64_t size, qtk_status *st)
{
	if (size > (uint64_t)INT64_MAX)
		return qtk_fail(st, QTK_E_OVERFLOW, "%s: output size overflows", o->path);
	if (ftruncate(o->fd, (off_t)size) != 0)
		return io_fail(st, o->path, "cannot size output", errno);
	return qtk_out_reserve(o, size, st);
}

qtk_err qtk_out_reserve(qtk_outfile *o, uint64_t size, qtk_status *st)
{
	struct statfs fs;

	if (size == 0)
		return QTK_OK;
	if (size > (uint64_t)INT64_MAX)
		return qtk_fail(st, QTK_E_OVERFLOW, "%s: output size overflows", o->path);
	/* In memory (tmpfs, ramfs) fallocate clears every page of the output
	 * up front, on one thread, before a byte is written (a third of a
	 * 2.4 GB int4 conversion's CPU time at AVX2); the workers' writes
	 * allocate the pages anyway. Only the free space is checked there. */
	if (fstatfs(o->fd, &fs) == 0 &&
	    (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC)) {
		if (fs.f_blocks > 0 && (uint64_t)fs.f_bavail * (uint64_t)fs.f_bsize < size)
			return qtk_fail(st, QTK_E_IO, "%s: cannot reserve space for the output: %llu "
			                "bytes needed, %llu free: %s", o->path, (unsigned long long)size,
			                (unsigned long long)fs.f_bavail * (unsigned long long)fs.f_bsize,
			                strerror(ENOSPC));
		return QTK_OK;
	}
	/* Allocate the blocks up front: a full disk fails here, not after a
	 * long conversion, and parallel pwrites into allocated blocks run at
	 * memory speed instead of allocating (ext4: about 15x slower). No
	 * emulation: filesystems without fallocate just stay sparse. */
	if (fallocate(o->fd, 0, 0, (off_t)size) != 0 && errno != EOPNOTSUPP && errno != ENOSYS &&
	    errno != EINVAL)
		return io_fail(st, o->path, "cannot reserve space for the output", errno);
	return QTK_OK;
}

static int fsync_dir_path(const char *p)
{
	int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return errno;
	if (fsync(fd) != 0 && errno != EINVAL)
		rc = errno;
	close(fd);
	return rc;
}

/* fsync the directory holding path. */
static int fsync_dir(const char *path)
{
	char *dir = dir_of(path);
	int rc;

	if (!dir)
		return ENOMEM;
	rc = fsync_dir_path(dir);
	qtk_free(dir);
	return rc;
}

static qtk_err appeared(qtk_status *st, const char *path)
{
	return qtk_fail(st, QTK_E_EXISTS, "%s: output appeared while writing; not replaced", path);
}

/* Replace what is at o->path, a regular file when last looked at, by an
 * exchange, and look at what came out: anything else that got there
 * meanwhile is swapped back and refused. 1: retry (the path emptied). */
static qtk_err exchange_file(qtk_outfile *o, int *retry, qtk_status *st)
{
	struct stat sb;
	int err;

	if (renameat2(AT_FDCWD, o->tmp, AT_FDCWD, o->path, RENAME_EXCHANGE) != 0) {
		err = errno;
		if (err == ENOENT) {
			*retry = 1;
			return QTK_OK;
		}
		if (err != EINVAL && err != ENOSYS)
			return io_fail(st, o->path, "cannot move output into place", err);
		/* no exchange on this filesystem: a plain rename */
		if (rename(o->tmp, o->path) != 0)
			return io_fail(st, o->path, "cannot move output into place", errno);
		return QTK_OK;
	}
	/* o->tmp now names the old output */
	if (lstat(o->tmp, &sb) == 0 && !S_ISREG(sb.st_mode)) {
		if (renameat2(AT_FDCWD, o->tmp, AT_FDCWD, o->path, RENAME_EXCHANGE) == 0)
			return refuse_node(st, o->path, sb.st_mode, file_wanted);
		err = errno;
		/* keep it: never unlink what is not ours */
		registry_del(o->slot);
		o->slot = -1;
		qtk_fail(st, QTK_E_IO, "%s: while writing, the output was replaced by one that "
		         "%s, which could not be put back (%s): it is now %s", o->path,
		         type_phrase(sb.st_mode), strerror(err), o->tmp);
		qtk_free(o->tmp);
		o->tmp = NULL;
		return QTK_E_IO;
	}
	unlink(o->tmp);
	return QTK_OK;
}

/* Move the finished temporary to o->path. Without force: link, which never
 * replaces. With force: the path is looked at again (it may have changed
 * since the open) and only a regular file is replaced. */
static qtk_err place_file(qtk_outfile *o, qtk_status *st)
{
	for (int tries = 0; tries < 3; tries++) {
		struct stat sb;
		int absent, retry = 0, err;

		if (!o->force) {
			if (link(o->tmp, o->path) != 0) {
				err = errno;
				return err == EEXIST ? appeared(st, o->path)
				                     : io_fail(st, o->path, "cannot move output into place", err);
			}
			unlink(o->tmp);
			return QTK_OK;
		}
		QTK_TRY(out_lstat(o->path, &sb, &absent, st));
		if (!absent && !S_ISREG(sb.st_mode))
			return refuse_node(st, o->path, sb.st_mode, file_wanted);
		if (!absent) {
			QTK_TRY(exchange_file(o, &retry, st));
			if (!retry)
				return QTK_OK;
			continue;
		}
		if (renameat2(AT_FDCWD, o->tmp, AT_FDCWD, o->path, RENAME_NOREPLACE) == 0)
			return QTK_OK;
		err = errno;
		if (err == EEXIST)
			continue; /* something appeared: look at it */
		if (err == EINVAL || err == ENOSYS) /* no renameat2 flags here */
			err = rename(o->tmp, o->path) == 0 ? 0 : errno;
		return err ? io_fail(st, o->path, "cannot move output into place", err) : QTK_OK;
	}
	return appeared(st, o->path);
}

qtk_err qtk_out_commit(qtk_outfile *o, qtk_status *st)
{
	int err = qtk_fault_check(QTK_FAULT_FSYNC);
	qtk_err rc;

	if (err || fsync(o->fd) != 0) {
		rc = io_fail(st, o->path, "fsync failed", err ? err : errno);
		qtk_out_abort(o);
		return rc;
	}
	if (close(o->fd) != 0) {
		o->fd = -1;
		rc = io_fail(st, o->path, "close failed", errno);
		qtk_out_abort(o);
		return rc;
	}
	o->fd = -1;
	err = qtk_fault_check(QTK_FAULT_RENAME);
	rc = err ? io_fail(st, o->path, "cannot move output into place", err) : place_file(o, st);
	if (rc) {
		qtk_out_abort(o);
		return rc;
	}
	registry_del(o->slot);
	o->slot = -1;
	qtk_free(o->tmp);
	o->tmp = NULL;
	err = fsync_dir(o->path);
	qtk_free(o->path);
	o->path = NULL;
	/* The file is complete and in place; a failed directory fsync only
	 * weakens durability, so it is not reported as a failure. */
	(void)err;
	return QTK_OK;
}

void qtk_out_abort(qtk_outfile *o)
{
	if (o->fd >= 0)
		close(o->fd);
	o->fd = -1;
	if (o->tmp) {
		unlink(o->tmp);
		registry_del(o->slot);
		o->slot = -1;
	}
	qtk_free(o->tmp);
	qtk_free(o->path);
	o->tmp = o->path = NULL;
}

/* ---- inputs ------------------------------------------------------------- */

static qtk_err not_regular(qtk_status *st, const char *path, mode_t m)
{
	return qtk_fail(st, QTK_E_IO, "%s: %s, not a regular file", path, type_phrase(m));
}

qtk_err qtk_fmt_check_input(const char *path, qtk_status *st)
{
	struct stat sb;

	if (stat(path, &sb) != 0)
		return qtk_fail(st, errno == ENOENT ? QTK_E_NOT_FOUND : QTK_E_IO,
		                "%s: cannot open: %s", path, strerror(errno));
	return S_ISREG(sb.st_mode) ? QTK_OK : not_regular(st, path, sb.st_mode);
}

qtk_err qtk_fmt_open_input(const char *path, int *fd, uint64_t *size, qtk_status *st)
{
	struct stat sb;
	int f, fl;

	*fd = -1;
	/* stat first: opening a device can do something by itself */
	QTK_TRY(qtk_fmt_check_input(path, st));
	/* O_NONBLOCK: a FIFO put there since cannot block the open */
	f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (f < 0)
		return qtk_fail(st, errno == ENOENT ? QTK_E_NOT_FOUND : QTK_E_IO,
		                "%s: cannot open: %s", path, strerror(errno));
	if (fstat(f, &sb) != 0) {
		int err = errno;
		close(f);
		return qtk_fail(st, QTK_E_IO, "%s: cannot open: %s", path, strerror(err));
	}
	if (!S_ISREG(sb.st_mode)) {
		close(f);
		return not_regular(st, path, sb.st_mode);
	}
	fl = fcntl(f, F_GETFL);
	if (fl >= 0)
		fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
	*fd = f;
	if (size)
		*size = (uint64_t)sb.st_size;
	return QTK_OK;
}

qtk_err qtk_fmt_pread(int fd, void *buf, size_t len, uint64_t off, const char *path,
                      qtk_status *st)
{
	uint8_t *p = buf;
	uint64_t end;

	if (__builtin_add_overflow(off, (uint64_t)len, &end) || end > (uint64_t)INT64_MAX)
		return qtk_fail(st, QTK_E_OVERFLOW, "%s: read past the largest file offset", path);
	while (len > 0) {
		int err = qtk_fault_check(QTK_FAULT_READ);
		ssize_t r;

		if (err)
			return qtk_fail(st, QTK_E_IO, "%s: read failed at byte %llu: %s", path,
			                (unsigned long long)off, strerror(err));
		r = pread(fd, p, len > (1u << 30) ? (1u << 30) : len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return qtk_fail(st, QTK_E_IO, "%s: read failed at byte %llu: %s", path,
			                (unsigned long long)off, strerror(errno));
		if (r == 0)
			return qtk_fail(st, QTK_E_IO, "%s: ends before byte %llu (changed while being "
			                "read?)", path, (unsigned long long)end);
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return QTK_OK;
}

qtk_err qtk_fmt_read_input(const char *path, char **out, size_t *len, qtk_status *st)
{
	uint64_t size;
	size_t got = 0;
	char *buf;
	int fd;

	*out = NULL;
	if (len)
		*len = 0;
	QTK_TRY(qtk_fmt_open_input(path, &fd, &size, st));
	buf = size < SIZE_MAX ? qtk_malloc((size_t)size + 1) : NULL;
	if (!buf) {
		close(fd);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	while (got < size) {
		ssize_t r = read(fd, buf + got, (size_t)size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int err = errno;
			close(fd);
			qtk_free(buf);
			return qtk_fail(st, QTK_E_IO, "%s: read failed: %s", path, strerror(err));
		}
		if (r == 0)
			break; /* shrank meanwhile: what is there */
		got += (size_t)r;
	}
	close(fd);
	buf[got] = 0;
	*out = buf;
	if (len)
		*len = got;
	return QTK_OK;
}

qtk_err qtk_map_open(qtk_map *m, const char *path, qtk_status *st)
{
	void *p;

	memset(m, 0, sizeof *m);
	QTK_TRY(qtk_fmt_open_input(path, &m->fd, &m->size, st));
	m->path = qtk_strdup(path);
	if (!m->path) {
		qtk_map_close(m);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	if (m->size > 0) {
		p = mmap(NULL, (size_t)m->size, PROT_READ, MAP_SHARED, m->fd, 0);
		if (p == MAP_FAILED) {
			int err = errno;
			qtk_map_close(m);
			return qtk_fail(st, QTK_E_IO, "%s: cannot map: %s", path, strerror(err));
		}
		m->data = p;
		m->slot = map_add(p, m->size, m->path);
	}
	return QTK_OK;
}

void qtk_map_close(qtk_map *m)
{
	if (m->data) {
		map_del(m->slot);
		munmap((void *)(uintptr_t)m->data, (size_t)m->size);
	}
	if (m->fd >= 0)
		close(m->fd);
	qtk_free(m->path);
	memset(m, 0, sizeof *m);
	m->fd = -1;
	m->slot = -1;
}

/* ---- atomic output directories ------------------------------------------ */

struct qtk_outdir {
	char *path;     /* the target, without trailing slashes */
	char *tmp;      /* the directory being built beside it; NULL once moved */
	int force;
	const qtk_outdir_kind *kind; /* may be NULL: only an empty directory is replaced */
	int slot;       /* tmp in the signal handlers' registry; -1: none */
};

/* What may be at an output directory's path. */
enum { DIR_ABSENT, DIR_EMPTY, DIR_OURS };

static const char *last_part(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

/* A target directory that holds (or is) one of the inputs is refused. */
static qtk_err dir_holds_input(const char *path, const qtk_write_opts *wo, qtk_status *st)
{
	char out[PATH_MAX], in[PATH_MAX];
	size_t n;

	if (!wo || !realpath(path, out))
		return QTK_OK;
	n = strlen(out);
	for (size_t i = 0; i < wo->ninputs; i++) {
		if (!realpath(wo->inputs[i], in))
			continue;
		if (!strncmp(in, out, n) && (in[n] == '/' || in[n] == 0))
			return qtk_fail(st, QTK_E_SAME_FILE,
			                "%s: output directory holds an input of this run (%s); "
			                "refusing to replace it", path, wo->inputs[i]);
	}
	return QTK_OK;
}

/* 1 if the directory at p has no entry, 0 if it has one, -1 (errno) if it
 * cannot be read. */
static int dir_is_empty(const char *p)
{
	DIR *d = opendir(p);
	struct dirent *e;
	int empty = 1;

	if (!d)
		return -1;
	while (empty && (e = readdir(d)) != NULL)
		empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
	closedir(d);
	return empty;
}

/* What is at p (the target, or the old output after an exchange): nothing,
 * an empty directory, or one d->kind accepts; anything else fails. */
static qtk_err dir_classify(const qtk_outdir *d, const char *p, int *what, qtk_status *st)
{
	char wanted[96];
	struct stat sb;
	int absent, empty;

	QTK_TRY(out_lstat(p, &sb, &absent, st));
	*what = DIR_ABSENT;
	if (absent)
		return QTK_OK;
	snprintf(wanted, sizeof wanted, "only an empty directory%s%s%s is replaced",
	         d->kind ? " or a previous " : "", d->kind ? d->kind->name : "",
	         d->kind ? " output" : "");
	if (!S_ISDIR(sb.st_mode))
		return refuse_node(st, p, sb.st_mode, wanted);
	empty = dir_is_empty(p);
	if (empty < 0)
		return qtk_fail(st, QTK_E_IO, "%s: cannot read directory: %s", p, strerror(errno));
	*what = empty ? DIR_EMPTY : DIR_OURS;
	if (!empty && !d->kind)
		return qtk_fail(st, QTK_E_ARG, "%s: output directory is not empty; not replaced, "
		                "even with --force (%s)", p, wanted);
	return empty ? QTK_OK : d->kind->check(p, st);
}

void qtk_outdir_abort(qtk_outdir *d)
{
	if (!d)
		return;
	registry_del(d->slot);
	rm_tree(d->tmp);
	qtk_free(d->tmp);
	qtk_free(d->path);
	qtk_free(d);
}

qtk_err qtk_outdir_open(qtk_outdir **out, const char *path, const qtk_write_opts *opts,
                        const qtk_outdir_kind *kind, qtk_status *st)
{
	qtk_outdir *d = qtk_calloc(1, sizeof *d);
	size_t len = strlen(path);
	int what;
	char *dir;
	qtk_err rc;

	*out = NULL;
	if (!d)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	d->slot = -1;
	d->force = opts && opts->force;
	d->kind = kind;
	while (len > 1 && path[len - 1] == '/')
		len--;
	d->path = qtk_malloc(len + 1);
	if (!d->path) {
		qtk_outdir_abort(d);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	memcpy(d->path, path, len);
	d->path[len] = 0;
	if (!*d->path || !strcmp(last_part(d->path), ".") || !strcmp(last_part(d->path), "..")) {
		qtk_outdir_abort(d);
		return qtk_fail(st, QTK_E_ARG, "output '%s' is not a directory name", path);
	}
	if ((rc = dir_holds_input(d->path, opts, st)) != QTK_OK ||
	    (rc = dir_classify(d, d->path, &what, st)) != QTK_OK) {
		qtk_outdir_abort(d);
		return rc;
	}
	if (what == DIR_OURS && !d->force) {
		rc = qtk_fail(st, QTK_E_EXISTS, "%s: output exists (use --force to replace it)",
		              d->path);
		qtk_outdir_abort(d);
		return rc;
	}
	dir = dir_of(d->path);
	if (!dir) {
		qtk_outdir_abort(d);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	sweep_stale(dir);
	d->tmp = temp_template(dir);
	qtk_free(dir);
	if (!d->tmp) {
		qtk_outdir_abort(d);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	if (qtk_fault_check(QTK_FAULT_OPEN) || !mkdtemp(d->tmp)) {
		int err = errno;
		rc = qtk_fail(st, QTK_E_IO, "%s: cannot create temporary directory: %s", d->path,
		              strerror(err));
		qtk_free(d->tmp);
		d->tmp = NULL;
		qtk_outdir_abort(d);
		return rc;
	}
	chmod(d->tmp, 0755);
	d->slot = registry_put(d->tmp, 1);
	*out = d;
	return QTK_OK;
}

const char *qtk_outdir_tmp(const qtk_outdir *d)
{
	return d->tmp;
}

const char *qtk_outdir_path(const qtk_outdir *d)
{
	return d->path;
}

/* Exchange d->tmp with the previous output at d->path, then look at the old
 * one (now at d->tmp): if something foreign got into it meanwhile, swap
 * back and refuse. 1 in *retry: the path emptied, look again. */
static qtk_err dir_exchange(qtk_outdir *d, int *retry, qtk_status *st)
{
	qtk_status tmp;
	int what, err;

	if (renameat2(AT_FDCWD, d->tmp, AT_FDCWD, d->path, RENAME_EXCHANGE) != 0) {
		err = errno;
		if (err == ENOENT) {
			*retry = 1;
			return QTK_OK;
		}
		if (err != EINVAL && err != ENOSYS)
			return qtk_fail(st, QTK_E_IO, "%s: cannot move output into place: %s",
			                d->path, strerror(err));
		/* no exchange on this filesystem: remove the old output (just
		 * checked), then rename */
		rm_tree(d->path);
		if (rename(d->tmp, d->path) != 0)
			return qtk_fail(st, QTK_E_IO, "%s: cannot move output into place: %s",
			                d->path, strerror(errno));
		qtk_free(d->tmp);
		d->tmp = NULL;
		return QTK_OK;
	}
	if (dir_classify(d, d->tmp, &what, &tmp) != QTK_OK) {
		if (renameat2(AT_FDCWD, d->tmp, AT_FDCWD, d->path, RENAME_EXCHANGE) == 0)
			return qtk_fail(st, QTK_E_ARG, "%s: the old output changed while writing; "
			                "not replaced", d->path);
		err = errno;
		qtk_fail(st, QTK_E_IO, "%s: the old output changed while writing and could not be "
		         "put back (%s): it is now %s", d->path, strerror(err), d->tmp);
		qtk_free(d->tmp); /* never remove what is not ours */
		d->tmp = NULL;
		return QTK_E_IO;
	}
	rm_tree(d->tmp); /* the temporary name now holds the old output */
	qtk_free(d->tmp);
	d->tmp = NULL;
	return QTK_OK;
}

/* Move d->tmp to d->path after looking at what is there now. A plain rename
 * replaces nothing but an empty directory (a non-empty one is ENOTEMPTY, a
 * file ENOTDIR), so only a previous output needs the exchange. */
static qtk_err dir_place(qtk_outdir *d, qtk_status *st)
{
	for (int tries = 0; tries < 3; tries++) {
		int what, retry = 0, err;

		QTK_TRY(dir_classify(d, d->path, &what, st));
		if (what == DIR_OURS && !d->force)
			return appeared(st, d->path);
		if (what == DIR_OURS) {
			QTK_TRY(dir_exchange(d, &retry, st));
			if (!retry)
				return QTK_OK;
			continue;
		}
		if (rename(d->tmp, d->path) == 0) {
			qtk_free(d->tmp);
			d->tmp = NULL;
			return QTK_OK;
		}
		err = errno;
		if (err != ENOTEMPTY && err != EEXIST && err != ENOTDIR && err != EISDIR)
			return qtk_fail(st, QTK_E_IO, "%s: cannot move output into place: %s", d->path,
			                strerror(err));
		/* something got there meanwhile: look at it */
	}
	return appeared(st, d->path);
}

qtk_err qtk_outdir_commit(qtk_outdir *d, qtk_status *st)
{
	qtk_err rc;
	int err;

	/* from here d->tmp may name the previous output (the exchange) */
	registry_del(d->slot);
	d->slot = -1;
	if ((err = fsync_dir_path(d->tmp)) != 0) {
		rc = qtk_fail(st, QTK_E_IO, "%s: fsync failed: %s", d->path, strerror(err));
		qtk_outdir_abort(d);
		return rc;
	}
	err = qtk_fault_check(QTK_FAULT_RENAME);
	rc = err ? qtk_fail(st, QTK_E_IO, "%s: cannot move output into place: %s", d->path,
	                    strerror(err))
	         : dir_place(d, st);
	if (rc == QTK_OK)
		fsync_dir(d->path);
	qtk_outdir_abort(d);
	return rc;
}
