/* formats: crash-safe output files and read-only mappings (see fileio.h).
 * Temporary names are ".<name>.qtk-tmp-<pid>-XXXXXX" so a later run can tell
 * a live writer's file from one left by a killed process. */
#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
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

/* ---- direct I/O of an output's sized part -------------------------------
 *
 * Buffered writes copy every byte into fresh page-cache pages that the
 * kernel writes back later. For large outputs that costs more CPU than the
 * conversion itself: converting a 2.4 GB bf16 checkpoint to int8 (1.27 GB
 * written) spent 1.4-1.9 s of system time buffered against 0.32-0.35 s
 * with O_DIRECT, 1.24-1.58 s against 1.08 s of wall time (2-core VM; a dd
 * of 285 MB with fsync ran at 0.3-0.56 GB/s buffered, 1.9-2.5 GB/s
 * direct). For a 273 MB output the two were even, so direct I/O starts at
 * qtk_dio_min_size (1 GiB; QTK_DIRECT_IO=1 for any size, =0 never). Once a
 * writer has sized such a file (qtk_out_truncate), the whole DIO_ALIGN
 * blocks of [0, size) go to the disk directly:
 * - the full blocks a write covers are copied into DIO_CHUNK bounce
 *   buffers and queued (at most DIO_QMAX) for one writer thread, which
 *   writes them in queue order while the converting threads go on;
 * - the partial blocks at a write's ends are merged in memory (a table of
 *   pending blocks with a byte mask) and queued once their last byte
 *   arrives; neighbouring items complete each other's edge blocks;
 * - blocks never completed (alignment padding nobody writes) are queued at
 *   commit, or earlier when more than qtk_dio_pending_limit are held. A
 *   block written before (on_disk) is read back and merged first, after
 *   the queue drains, so a byte always ends as its last write and an
 *   unwritten byte as zero (the file is new and sized: zeros).
 * Writes past the aligned part (the last partial block, metadata a writer
 * appends at commit) stay buffered; the queue drains before the fsync at
 * commit, which covers both. A write error is kept and returned by the
 * next write or the commit. A filesystem that refuses O_DIRECT (the probe
 * write of a zero block fails) keeps the buffered path. */

#define DIO_ALIGN 4096u
#define DIO_CHUNK (512u << 10)
#define DIO_FREE_MAX 64
#define DIO_QMAX 8 /* writes queued for the writer thread (bounce: 4 MB) */

size_t qtk_dio_pending_limit = 1024;
uint64_t qtk_dio_min_size = (uint64_t)1 << 30;

typedef struct {
	uint64_t blk;
	uint32_t filled;                 /* distinct bytes present */
	uint64_t mask[DIO_ALIGN / 64];   /* which bytes */
	uint8_t *data;                   /* DIO_ALIGN bytes, aligned; zero where absent */
} dio_block;

typedef struct {
	void *buf;
	size_t len;
	uint64_t off;
} dio_job;

/* Everything below is guarded by lock, but on_disk (atomic bits). */
struct qtk_dio {
	int fd;              /* the O_DIRECT descriptor (read-write: merges read) */
	uint64_t end;        /* direct part: [0, end), a multiple of DIO_ALIGN */
	pthread_mutex_t lock;
	pthread_cond_t more; /* a job was queued, or stop */
	pthread_cond_t less; /* a job finished */
	pthread_t writer;
	dio_job q[DIO_QMAX]; /* FIFO: the writer keeps the order of queueing */
	size_t qhead, qlen;
	int busy;            /* the writer is writing a job */
	int stop;
	int err;             /* first write error (sticky), or 0 */
	dio_block *pend;     /* pending blocks, in no particular order */
	size_t npend, cap;
	uint8_t *on_disk;    /* bit per block: written or queued */
	void *free_bufs[2][DIO_FREE_MAX]; /* [0] block, [1] bounce buffers */
	size_t nfree[2];
};

/* An aligned buffer of DIO_ALIGN or DIO_CHUNK bytes (lock held). */
static void *dio_buf_get(struct qtk_dio *d, size_t size)
{
	int big = size == DIO_CHUNK;
	void *p = NULL;

	if (d->nfree[big])
		return d->free_bufs[big][--d->nfree[big]];
	if (qtk_fault_check(QTK_FAULT_ALLOC) || posix_memalign(&p, DIO_ALIGN, size) != 0)
		return NULL;
	return p;
}

static void dio_buf_put(struct qtk_dio *d, void *p, size_t size)
{
	int big = size == DIO_CHUNK;

	if (d->nfree[big] < DIO_FREE_MAX)
		d->free_bufs[big][d->nfree[big]++] = p;
	else
		free(p);
}

static int dio_on_disk(const struct qtk_dio *d, uint64_t blk)
{
	return __atomic_load_n(&d->on_disk[blk / 8], __ATOMIC_ACQUIRE) >> (blk % 8) & 1;
}

static void dio_mark(struct qtk_dio *d, uint64_t blk0, uint64_t nblk)
{
	for (uint64_t b = blk0; b < blk0 + nblk; b++)
		__atomic_fetch_or(&d->on_disk[b / 8], (uint8_t)(1u << (b % 8)), __ATOMIC_RELEASE);
}

/* pwrite all of p (aligned) at off on the direct descriptor. */
static int dio_pwrite(struct qtk_dio *d, const void *p, size_t n, uint64_t off)
{
	const uint8_t *b = p;

	while (n > 0) {
		int err = qtk_fault_check(QTK_FAULT_WRITE);
		ssize_t w;

		if (err)
			return err;
		w = pwrite(d->fd, b, n, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return errno;
		if (w == 0 || (size_t)w % DIO_ALIGN) /* O_DIRECT writes whole blocks or fails */
			return w == 0 ? ENOSPC : EIO;
		b += w;
		off += (uint64_t)w;
		n -= (size_t)w;
	}
	return 0;
}

/* The writer thread: queued jobs in order; after an error it only frees. */
static void *dio_writer(void *arg)
{
	struct qtk_dio *d = arg;

	pthread_mutex_lock(&d->lock);
	for (;;) {
		dio_job j;
		int err = 0;

		while (d->qlen == 0 && !d->stop)
			pthread_cond_wait(&d->more, &d->lock);
		if (d->qlen == 0)
			break;
		j = d->q[d->qhead];
		d->qhead = (d->qhead + 1) % DIO_QMAX;
		d->qlen--;
		d->busy = 1;
		if (!d->err) {
			pthread_mutex_unlock(&d->lock);
			err = dio_pwrite(d, j.buf, j.len, j.off);
			pthread_mutex_lock(&d->lock);
		}
		if (err && !d->err)
			d->err = err;
		dio_buf_put(d, j.buf, j.len == DIO_ALIGN ? DIO_ALIGN : DIO_CHUNK);
		d->busy = 0;
		pthread_cond_broadcast(&d->less);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

/* Queue buf (a dio buffer, handed over) for [off, off + len) (lock held;
 * waits while the queue is full). The blocks count as on disk from now. */
static int dio_submit(struct qtk_dio *d, void *buf, size_t len, uint64_t off)
{
	while (d->qlen == DIO_QMAX && !d->err)
		pthread_cond_wait(&d->less, &d->lock);
	if (d->err) {
		dio_buf_put(d, buf, len == DIO_ALIGN ? DIO_ALIGN : DIO_CHUNK);
		return d->err;
	}
	d->q[(d->qhead + d->qlen) % DIO_QMAX] = (dio_job){ buf, len, off };
	d->qlen++;
	dio_mark(d, off / DIO_ALIGN, len / DIO_ALIGN);
	pthread_cond_signal(&d->more);
	return 0;
}

/* Wait until every queued write is done (lock held). */
static int dio_drain(struct qtk_dio *d)
{
	while (d->qlen || d->busy)
		pthread_cond_wait(&d->less, &d->lock);
	return d->err;
}

/* Queue e's block, merged with what is on disk if the block was written
 * before and e lacks some bytes (lock held; e's buffer is handed over). */
static int dio_flush_block(struct qtk_dio *d, dio_block *e)
{
	uint64_t off = e->blk * DIO_ALIGN;
	int err;

	if (e->filled < DIO_ALIGN && dio_on_disk(d, e->blk)) {
		uint8_t *old;
		ssize_t r;

		if ((err = dio_drain(d)))
			goto fail;
		if (!(old = dio_buf_get(d, DIO_ALIGN))) {
			err = ENOMEM;
			goto fail;
		}
		do
			r = pread(d->fd, old, DIO_ALIGN, (off_t)off);
		while (r < 0 && errno == EINTR);
		err = r < 0 ? errno : r != (ssize_t)DIO_ALIGN ? EIO : 0;
		if (!err)
			for (size_t i = 0; i < DIO_ALIGN; i++)
				if (!(e->mask[i / 64] >> (i % 64) & 1))
					e->data[i] = old[i];
		dio_buf_put(d, old, DIO_ALIGN);
		if (err)
			goto fail;
	}
	return dio_submit(d, e->data, DIO_ALIGN, off);
fail:
	dio_buf_put(d, e->data, DIO_ALIGN);
	return err;
}

/* Bytes [boff, boff + n) of block blk from p, into its pending entry; a
 * block that becomes whole is queued. When the table is full the entry in
 * slot 0 (an old one: removals move the last entry into the gap) is
 * queued first. Lock held. */
static int dio_partial(struct qtk_dio *d, uint64_t blk, size_t boff, const uint8_t *p,
                       size_t n)
{
	dio_block *e = NULL, done;
	int err;

	for (size_t i = d->npend; i-- > 0;)
		if (d->pend[i].blk == blk) {
			e = &d->pend[i];
			break;
		}
	if (!e) {
		uint8_t *fresh;

		if (d->npend >= qtk_dio_pending_limit && d->npend > 0) {
			done = d->pend[0];
			d->pend[0] = d->pend[--d->npend];
			if ((err = dio_flush_block(d, &done)))
				return err;
		}
		if (d->npend == d->cap) {
			size_t nc = d->cap ? d->cap * 2 : 16;
			dio_block *np = qtk_fault_check(QTK_FAULT_ALLOC) ? NULL
			                : realloc(d->pend, nc * sizeof *np);
			if (!np)
				return ENOMEM;
			d->pend = np;
			d->cap = nc;
		}
		if (!(fresh = dio_buf_get(d, DIO_ALIGN)))
			return ENOMEM;
		memset(fresh, 0, DIO_ALIGN);
		e = &d->pend[d->npend++];
		memset(e, 0, sizeof *e);
		e->blk = blk;
		e->data = fresh;
	}
	memcpy(e->data + boff, p, n);
	for (size_t i = boff; i < boff + n; i++) {
		uint64_t bit = (uint64_t)1 << (i % 64);
		if (!(e->mask[i / 64] & bit)) {
			e->mask[i / 64] |= bit;
			e->filled++;
		}
	}
	if (e->filled < DIO_ALIGN)
		return 0;
	done = *e;
	*e = d->pend[--d->npend];
	return dio_flush_block(d, &done);
}

/* [off, off + n) inside the direct part: edges through the table, whole
 * blocks copied into bounce buffers and queued. 0 or an errno. */
static int dio_write(struct qtk_dio *d, const uint8_t *p, size_t n, uint64_t off)
{
	int err = 0;

	pthread_mutex_lock(&d->lock);
	if ((err = d->err))
		goto out;
	if (off % DIO_ALIGN) { /* head */
		size_t bo = (size_t)(off % DIO_ALIGN), k = DIO_ALIGN - bo < n ? DIO_ALIGN - bo : n;
		if ((err = dio_partial(d, off / DIO_ALIGN, bo, p, k)))
			goto out;
		p += k;
		off += k;
		n -= k;
	}
	while (n >= DIO_ALIGN) { /* whole blocks, a bounce buffer at a time */
		size_t k = n - n % DIO_ALIGN < DIO_CHUNK ? n - n % DIO_ALIGN : DIO_CHUNK;
		uint64_t blk0 = off / DIO_ALIGN, nblk = k / DIO_ALIGN;
		int pending = 0;
		uint8_t *bb;

		for (size_t i = 0; i < d->npend && !pending; i++)
			pending = d->pend[i].blk >= blk0 && d->pend[i].blk < blk0 + nblk;
		if (pending) { /* older partial bytes there: merge block by block */
			for (uint64_t b = 0; b < nblk; b++)
				if ((err = dio_partial(d, blk0 + b, 0, p + b * DIO_ALIGN, DIO_ALIGN)))
					goto out;
		} else {
			if (!(bb = dio_buf_get(d, DIO_CHUNK))) {
				err = ENOMEM;
				goto out;
			}
			pthread_mutex_unlock(&d->lock); /* copy while others go on */
			memcpy(bb, p, k);
			pthread_mutex_lock(&d->lock);
			if ((err = dio_submit(d, bb, k, off)))
				goto out;
		}
		p += k;
		off += k;
		n -= k;
	}
	if (n > 0) /* tail */
		err = dio_partial(d, off / DIO_ALIGN, 0, p, n);
out:
	pthread_mutex_unlock(&d->lock);
	return err;
}

/* Stop the writer (after the queue, or at once with an error set) and
 * free everything. */
static void dio_free(struct qtk_dio *d, int cancel)
{
	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	if (cancel && !d->err)
		d->err = ECANCELED;
	d->stop = 1;
	pthread_cond_broadcast(&d->more);
	pthread_mutex_unlock(&d->lock);
	pthread_join(d->writer, NULL);
	for (size_t i = 0; i < d->npend; i++)
		free(d->pend[i].data);
	for (int k = 0; k < 2; k++)
		for (size_t i = 0; i < d->nfree[k]; i++)
			free(d->free_bufs[k][i]);
	free(d->pend);
	free(d->on_disk);
	close(d->fd);
	pthread_cond_destroy(&d->more);
	pthread_cond_destroy(&d->less);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

/* Commit: queue every pending block, wait for the queue. 0 or an errno. */
static int dio_finish(struct qtk_dio *d)
{
	int err = 0;

	pthread_mutex_lock(&d->lock);
	while (!err && d->npend > 0) {
		dio_block e = d->pend[--d->npend];
		err = dio_flush_block(d, &e);
	}
	if (!err)
		err = dio_drain(d);
	pthread_mutex_unlock(&d->lock);
	return err;
}

/* Direct I/O for [0, size) of o's temporary, if the filesystem takes it:
 * a second descriptor with O_DIRECT, probed by writing block 0 (zeros, as
 * it already is), and a writer thread. Any failure leaves o buffered. */
static void dio_start(qtk_outfile *o, uint64_t size)
{
	const char *env = getenv("QTK_DIRECT_IO");
	struct qtk_dio *d;
	uint64_t nblk = size / DIO_ALIGN;
	void *zero = NULL;
	int fd = -1, ok;

	if ((env && strcmp(env, "0") == 0) || nblk == 0 || o->dio || !o->tmp ||
	    (size < qtk_dio_min_size && !(env && strcmp(env, "1") == 0)))
		return;
#ifdef O_DIRECT
	fd = open(o->tmp, O_RDWR | O_DIRECT | O_CLOEXEC);
#endif
	if (fd < 0)
		return;
	ok = posix_memalign(&zero, DIO_ALIGN, DIO_ALIGN) == 0;
	if (ok) {
		memset(zero, 0, DIO_ALIGN);
		ok = pwrite(fd, zero, DIO_ALIGN, 0) == (ssize_t)DIO_ALIGN;
		free(zero);
	}
	d = ok ? calloc(1, sizeof *d) : NULL;
	if (d)
		d->on_disk = calloc((size_t)(nblk / 8 + 1), 1);
	if (!d || !d->on_disk) {
		if (d)
			free(d);
		close(fd);
		return;
	}
	d->fd = fd;
	d->end = nblk * DIO_ALIGN;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->more, NULL);
	pthread_cond_init(&d->less, NULL);
	if (pthread_create(&d->writer, NULL, dio_writer, d) != 0) {
		pthread_cond_destroy(&d->more);
		pthread_cond_destroy(&d->less);
		pthread_mutex_destroy(&d->lock);
		free(d->on_disk);
		free(d);
		close(fd);
		return;
	}
	o->dio = d;
}

int qtk_out_is_direct(const qtk_outfile *o)
{
	return o->dio != NULL;
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

	if (o->dio && off < o->dio->end && n > 0) {
		size_t k = o->dio->end - off < n ? (size_t)(o->dio->end - off) : n;
		int err = dio_write(o->dio, p, k, off);

		if (err)
			return io_fail(st, o->path, "write failed", err);
		p += k;
		off += k;
		n -= k;
	}
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
	dio_start(o, size);
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
	int err;
	qtk_err rc;

	if (o->dio) { /* the blocks still held in memory, then the direct fd goes */
		err = dio_finish(o->dio);
		dio_free(o->dio, 0);
		o->dio = NULL;
		if (err) {
			rc = io_fail(st, o->path, "write failed", err);
			qtk_out_abort(o);
			return rc;
		}
	}
	err = qtk_fault_check(QTK_FAULT_FSYNC);

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
	dio_free(o->dio, 1);
	o->dio = NULL;
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
