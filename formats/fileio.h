/* formats (private): crash-safe output files and read-only mappings.
 * Every writer in formats/ goes through qtk_out_*: a temporary file in the
 * target's directory, fsync, rename (or link for no-replace), fsync of the
 * directory; any failure removes the temporary and leaves the target as it
 * was. Every reader maps its files through qtk_map_open, which refuses
 * anything but a regular file without blocking (qtk_fmt_open_input). */
#ifndef QTK_FILEIO_H
#define QTK_FILEIO_H

#include <stdint.h>
#include <stddef.h>

#include "qtk_formats.h"

typedef struct {
	char *path;     /* final path */
	char *tmp;      /* temporary path in the same directory */
	int fd;         /* -1 when closed */
	int force;      /* replace an existing target */
	int slot;       /* index in the signal-cleanup registry, -1 if none */
	uint64_t dirty; /* atomic: bytes written since writeback was last started */
} qtk_outfile;

/* Create the temporary file ".qtk-tmp-PID-XXXXXX" in path's directory.
 * Refuses (QTK_E_EXISTS) an existing target unless opts->force, and
 * (QTK_E_SAME_FILE) a target that is one of opts->inputs. A target that is
 * not a regular file (a symbolic link, directory, FIFO, socket or device) is
 * refused even with force, here and again at commit. Removes stale
 * temporaries of dead qtk processes. */
qtk_err qtk_out_open(qtk_outfile *o, const char *path,
                     const qtk_write_opts *opts, qtk_status *st);
/* Write all of buf at off (retries short writes; EINTR-safe). Thread-safe. */
qtk_err qtk_out_pwrite(qtk_outfile *o, const void *buf, size_t n, uint64_t off,
                       qtk_status *st);
/* Set the final size (sparse); used before parallel pwrite. */
qtk_err qtk_out_truncate(qtk_outfile *o, uint64_t size, qtk_status *st);
/* Reserve size bytes for the output now, so a full disk fails before the
 * work (fallocate; in memory, tmpfs and ramfs, only a check of the free
 * space: fallocate would clear every page up front). */
qtk_err qtk_out_reserve(qtk_outfile *o, uint64_t size, qtk_status *st);
/* fsync the file, move it into place, fsync the directory. With force an
 * existing target is exchanged, and swapped back if what came out is not a
 * regular file. On failure the temporary is removed and the target is
 * untouched. */
qtk_err qtk_out_commit(qtk_outfile *o, qtk_status *st);
/* Remove the temporary (no-op after commit). Safe to call twice. */
void qtk_out_abort(qtk_outfile *o);

/* A read-only mapping of a whole file. */
typedef struct {
	const uint8_t *data; /* NULL for an empty file */
	uint64_t size;
	int fd;
	char *path;
	int slot;            /* in the SIGBUS handler's registry; -1: none */
} qtk_map;

qtk_err qtk_map_open(qtk_map *m, const char *path, qtk_status *st);
void qtk_map_close(qtk_map *m);

#endif
