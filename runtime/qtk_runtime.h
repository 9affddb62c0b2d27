/* runtime: loading packed .qtk files by mmap, quantized kernels, parity
 * checks against the float original, and benchmarks. */
#ifndef QTK_RUNTIME_H
#define QTK_RUNTIME_H

#include "qtk_formats.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ===================================================================== */
/* Loading a .qtk file                                                    */
/* ===================================================================== */

#define QTK_RT_VERIFY 0x1u   /* at load: every crc32 and NaN/Inf scale (O(bytes)) */
#define QTK_RT_PREFETCH 0x2u /* at load: madvise(WILLNEED) the whole file */

/* A borrowed, read-only view of one plane: into the mapping (zero copy)
 * for plain planes, or into memory the model owns for zstd planes, which
 * are decompressed (and crc-checked) at load. 64-byte aligned. */
typedef struct {
	const void *data;      /* NULL when size is 0 */
	uint64_t size;         /* bytes */
	qtk_dtype dtype;       /* element type (U8 for packed 4-bit codes) */
} qtk_rt_plane;

typedef struct {
	const char *name;
	uint32_t ndim;
	uint64_t shape[QTK_MAX_DIMS];
	qtk_dtype src_dtype;           /* dtype in the source checkpoint */
	qtk_scheme_id scheme;          /* = layout.scheme */
	uint32_t group;                /* = layout.group (QTK_GROUP_ROW: whole row) */
	qtk_q_layout layout;
	uint64_t rows, cols;           /* [prod(shape[:-1])][shape[-1]] */
	qtk_rt_plane planes[QTK_PLANE_MAX]; /* indexed by QTK_PLANE_* */
	int zero_copy;                 /* 1: all planes point into the mapping */
} qtk_rt_tensor;

typedef struct qtk_rt_model qtk_rt_model;

/* Map and validate PATH (see qtk_pack_open); decompress zstd planes.
 * On failure *out is NULL and st names file, tensor and problem. */
QTK_API qtk_err qtk_rt_open(const char *path, unsigned flags, qtk_rt_model **out,
                            qtk_status *st);
QTK_API void qtk_rt_close(qtk_rt_model *m); /* NULL is fine */

/* Tensors in file order; views valid until close. */
QTK_API size_t qtk_rt_count(const qtk_rt_model *m);
QTK_API const qtk_rt_tensor *qtk_rt_get(const qtk_rt_model *m, size_t i);
/* O(log n) by name; NULL if absent. */
QTK_API const qtk_rt_tensor *qtk_rt_find(const qtk_rt_model *m, const char *name);
/* The metadata JSON object text. */
QTK_API const char *qtk_rt_metadata(const qtk_rt_model *m);
/* Hint that t will be read soon (madvise WILLNEED over its pages); a
 * no-op for decompressed tensors. Returns 0 or an errno value. */
QTK_API int qtk_rt_prefetch(const qtk_rt_model *m, const qtk_rt_tensor *t);
/* Check every crc32 and scale now; names the first bad tensor. */
QTK_API qtk_err qtk_rt_verify(const qtk_rt_model *m, qtk_status *st);
/* The underlying packed file (for the formats-level API). */
QTK_API const qtk_pack_file *qtk_rt_file(const qtk_rt_model *m);

#ifdef __cplusplus
}
#endif
#endif /* QTK_RUNTIME_H */
