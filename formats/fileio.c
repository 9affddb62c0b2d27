/* formats: crash-safe output files and read-only mappings (see fileio.h).
 * Temporary names are ".<name>.qtk-tmp-<pid>-XXXXXX" so a later run can tell
 * a live writer's file from one left by a killed process. */
#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

/* ---- registry of live temporaries, for signal handlers ---------------- */

#define MAX_TEMPS 64
static char temp_paths[MAX_TEMPS][PATH_MAX];
static volatile sig_atomic_t temp_used[MAX_TEMPS];

static int registry_add(const char *tmp)
{
	for (int i = 0; i < MAX_TEMPS; i++) {
		if (__sync_bool_compare_and_swap(&temp_used[i], 0, 2)) {
			snprintf(temp_paths[i], PATH_MAX, "%s", tmp);
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
	for (int i = 0; i < MAX_TEMPS; i++)
		if (temp_used[i] == 1)
			unlink(temp_paths[i]);
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

/* Remove ".<base>.qtk-tmp-<pid>-*" files and directories whose pid is gone. */
static void sweep_stale(const char *dir, const char *base)
{
	char prefix[NAME_MAX + 32];
	size_t plen;
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	snprintf(prefix, sizeof prefix, ".%s.qtk-tmp-", base);
	plen = strlen(prefix);
	while ((e = readdir(d)) != NULL) {
		char full[PATH_MAX];
		long pid;

		if (strncmp(e->d_name, prefix, plen) != 0)
			continue;
		pid = strtol(e->d_name + plen, NULL, 10);
		if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
			continue; /* a live writer owns it */
		snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
		rm_tree(full);
	}
	closedir(d);
}

static qtk_err io_fail(qtk_status *st, const char *path, const char *what, int err)
{
	return qtk_fail(st, QTK_E_IO, "%s: %s: %s", path, what, strerror(err));
}

/* ---- output ------------------------------------------------------------- */

qtk_err qtk_out_open(qtk_outfile *o, const char *path,
                     const qtk_write_opts *opts, qtk_status *st)
{
	char *dir = NULL;
	size_t n;
	int err;
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
	if (stat(path, &sb) == 0) {
		if (!o->force)
			return qtk_fail(st, QTK_E_EXISTS,
			                "%s: output exists (use --force to replace it)", path);
		if (S_ISDIR(sb.st_mode))
			return qtk_fail(st, QTK_E_ARG, "%s: output is a directory", path);
	}
	dir = dir_of(path);
	if (!dir)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	sweep_stale(dir, base_of(path));
	n = strlen(dir) + strlen(base_of(path)) + 64;
	o->tmp = qtk_malloc(n);
	o->path = qtk_strdup(path);
	if (!o->tmp || !o->path) {
		qtk_free(dir);
		qtk_out_abort(o);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	snprintf(o->tmp, n, "%s/.%s.qtk-tmp-%ld-XXXXXX", dir, base_of(path),
	         (long)getpid());
	qtk_free(dir);
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
	o->slot = registry_add(o->tmp);
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
	/* Allocate the blocks up front: a full disk fails here, not after a
	 * long conversion, and parallel pwrites into allocated blocks run at
	 * memory speed instead of allocating (ext4: about 15x slower). No
	 * emulation: filesystems without fallocate just stay sparse. */
	if (size > 0 && fallocate(o->fd, 0, 0, (off_t)size) != 0 && errno != EOPNOTSUPP &&
	    errno != ENOSYS && errno != EINVAL)
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
	if (!err) {
		if (o->force) {
			if (rename(o->tmp, o->path) != 0)
				err = errno;
		} else if (link(o->tmp, o->path) != 0) {
			/* link refuses to replace a target that appeared meanwhile */
			err = errno;
		} else {
			unlink(o->tmp);
		}
	}
	if (err) {
		rc = err == EEXIST
		     ? qtk_fail(st, QTK_E_EXISTS, "%s: output appeared while writing; not replaced", o->path)
		     : io_fail(st, o->path, "cannot move output into place", err);
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

/* ---- input mapping ------------------------------------------------------ */

qtk_err qtk_map_open(qtk_map *m, const char *path, qtk_status *st)
{
	struct stat sb;
	void *p;

	memset(m, 0, sizeof *m);
	m->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (m->fd < 0)
		return qtk_fail(st, errno == ENOENT ? QTK_E_NOT_FOUND : QTK_E_IO,
		                "%s: cannot open: %s", path, strerror(errno));
	if (fstat(m->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		int err = errno;
		close(m->fd);
		m->fd = -1;
		return qtk_fail(st, QTK_E_IO, "%s: %s", path,
		                S_ISDIR(sb.st_mode) ? "is a directory" :
		                !S_ISREG(sb.st_mode) ? "not a regular file" : strerror(err));
	}
	m->size = (uint64_t)sb.st_size;
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
	}
	return QTK_OK;
}

void qtk_map_close(qtk_map *m)
{
	if (m->data)
		munmap((void *)(uintptr_t)m->data, (size_t)m->size);
	if (m->fd >= 0)
		close(m->fd);
	qtk_free(m->path);
	memset(m, 0, sizeof *m);
	m->fd = -1;
}

/* ---- atomic output directories ------------------------------------------ */

struct qtk_outdir {
	char *path;     /* the target, without trailing slashes */
	char *tmp;      /* the directory being built beside it; NULL once moved */
	int force;
};

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

void qtk_outdir_abort(qtk_outdir *d)
{
	if (!d)
		return;
	rm_tree(d->tmp);
	qtk_free(d->tmp);
	qtk_free(d->path);
	qtk_free(d);
}

qtk_err qtk_outdir_open(qtk_outdir **out, const char *path, const qtk_write_opts *opts,
                        qtk_status *st)
{
	qtk_outdir *d = qtk_calloc(1, sizeof *d);
	size_t len = strlen(path);
	struct stat sb;
	char *dir;
	qtk_err rc;

	*out = NULL;
	if (!d)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	d->force = opts && opts->force;
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
	if (stat(d->path, &sb) == 0 && !d->force) {
		rc = qtk_fail(st, QTK_E_EXISTS, "%s: output exists (use --force to replace it)",
		              d->path);
		qtk_outdir_abort(d);
		return rc;
	}
	if ((rc = dir_holds_input(d->path, opts, st)) != QTK_OK) {
		qtk_outdir_abort(d);
		return rc;
	}
	dir = dir_of(d->path);
	if (!dir) {
		qtk_outdir_abort(d);
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	}
	sweep_stale(dir, last_part(d->path));
	len = strlen(dir) + strlen(last_part(d->path)) + 64;
	d->tmp = qtk_malloc(len);
	if (d->tmp)
		snprintf(d->tmp, len, "%s/.%s.qtk-tmp-%ld-XXXXXX", dir, last_part(d->path),
		         (long)getpid());
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


qtk_err qtk_outdir_commit(qtk_outdir *d, qtk_status *st)
{
	struct stat sb;
	int exists, err;
	qtk_err rc = QTK_OK;

	if ((err = fsync_dir_path(d->tmp)) != 0) {
		rc = qtk_fail(st, QTK_E_IO, "%s: fsync failed: %s", d->path, strerror(err));
		qtk_outdir_abort(d);
		return rc;
	}
	/* no-replace, or an atomic swap with the old output (force), which is
	 * then removed under the temporary name */
	exists = lstat(d->path, &sb) == 0;
	err = qtk_fault_check(QTK_FAULT_RENAME);
	if (!err && exists && !d->force) {
		rc = qtk_fail(st, QTK_E_EXISTS, "%s: output appeared while writing; not replaced",
		              d->path);
		qtk_outdir_abort(d);
		return rc;
	}
	if (!err && renameat2(AT_FDCWD, d->tmp, AT_FDCWD, d->path,
	                      exists ? RENAME_EXCHANGE : RENAME_NOREPLACE) != 0) {
		err = errno;
		if (err == EINVAL || err == ENOSYS) { /* no renameat2 flags here */
			err = 0;
			if (exists)
				rm_tree(d->path);
			if (rename(d->tmp, d->path) != 0)
				err = errno;
			exists = 0;
		}
	}
	if (err) {
		rc = qtk_fail(st, err == EEXIST ? QTK_E_EXISTS : QTK_E_IO,
		              "%s: cannot move output into place: %s", d->path, strerror(err));
		qtk_outdir_abort(d);
		return rc;
	}
	if (exists)
		rm_tree(d->tmp); /* the temporary name now holds the old output */
	qtk_free(d->tmp);
	d->tmp = NULL;
	fsync_dir(d->path);
	qtk_outdir_abort(d);
	return QTK_OK;
}
