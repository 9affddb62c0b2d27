/* convert (private): the input side of the pipeline — one view of the
 * tensors of a checkpoint, whatever its file format. */
#ifndef QTK_CONV_IMPL_H
#define QTK_CONV_IMPL_H

#include "qtk_convert.h"

typedef struct {
	const char *name;
	qtk_dtype dtype;
	uint32_t ndim;
	uint64_t shape[QTK_MAX_DIMS];
	uint64_t nelem, nbytes;
	const uint8_t *data;      /* raw bytes in the mapping */
	uint32_t file;            /* index into src.files */
	uint64_t file_offset;
	const void *handle;       /* the format reader's own tensor record */
} src_tensor;

typedef struct {
	const char *path;         /* as opened */
	uint64_t size;
	uint64_t data_start;      /* bytes before the first tensor (header) */
	const uint8_t *base;      /* mapping of the file's start, if known */
} src_file;

typedef struct {
	const char *format;       /* "safetensors" */
	size_t n;
	src_tensor *t;
	size_t nfiles;
	src_file *files;
	const char *dir;          /* directory of the checkpoint */
	qtk_st_file *st;
} src;

qtk_err src_open(src **out, const char *path, qtk_status *st);
void src_close(src *s);
/* Elements [elem0, elem0 + n) of a floating tensor as f32. */
qtk_err src_read_f32(const src *s, const src_tensor *t, uint64_t elem0,
                     uint64_t n, float *dst, qtk_status *st);
/* Tell the kernel the bytes [off, off+len) of t are consumed: drops them
 * from this process's resident set (they stay in the page cache). */
void src_release(const src_tensor *t, uint64_t off, uint64_t len);

#endif
