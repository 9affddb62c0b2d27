/* formats (private): what the activation statistics readers and writers
 * (stats.c, stats_st.c, stats_imatrix.c) share. */
#ifndef QTK_STATS_IMPL_H
#define QTK_STATS_IMPL_H

#include "qtk_formats.h"

/* The longest weight name qtk keeps (GGUF names are at most 63 bytes). */
#define STATS_NAME_MAX 1024

/* Check e's values: count >= 1, sums finite, sums of squares >= 0,
 * X^T X finite and symmetric with the sums of squares on its diagonal up
 * to rounding. what names the file for messages. */
qtk_err stats_check_entry(const qtk_stats_entry *e, const char *what, qtk_status *st);

/* qtk_stats_add for a reader: a name given twice (or a bad one) is the
 * file's fault, QTK_E_FORMAT with path prefixed. */
qtk_err stats_add_read(qtk_stats *s, const char *path, const char *name, uint64_t cols,
                       unsigned flags, qtk_stats_entry **e, qtk_status *st);

/* The set's info, read-only (qtk_stats_info_of is the writable one). */
const qtk_stats_info *stats_info(const qtk_stats *s);

/* Readers of a file's bytes (path: its name, for messages). */
qtk_err stats_read_st(const uint8_t *data, size_t size, const char *path, qtk_stats *s,
                      qtk_status *st);
qtk_err stats_write_st(const qtk_stats *s, const char *path, const qtk_write_opts *opts,
                       qtk_status *st);
qtk_err stats_read_imatrix(const uint8_t *data, size_t size, const char *path, qtk_stats *s,
                           qtk_status *st);
qtk_err stats_write_imatrix(const qtk_stats *s, const char *path, const qtk_write_opts *opts,
                            qtk_status *st);
qtk_err stats_read_dat(const uint8_t *data, size_t size, const char *path, qtk_stats *s,
                       qtk_status *st);
qtk_err stats_write_dat(const qtk_stats *s, const char *path, const qtk_write_opts *opts,
                        qtk_status *st);

#endif
