/* formats: the file formats qtk reads and writes: safetensors (single and
 * sharded), the qtk packed format, and the GGUF / MLX exports.
 * Readers map files and validate every byte they use before using it. */
#ifndef QTK_FORMATS_H
#define QTK_FORMATS_H

#include <stddef.h>
#include <stdint.h>

#include "qtk_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QTK_MAX_DIMS 8

/* ===================================================================== */
/* Writing files safely                                                   */
/* ===================================================================== */

/* Options every writer takes. */
typedef struct {
	int force;                  /* replace an existing output */
	const char *const *inputs;  /* files read by this run: never overwritten */
	size_t ninputs;
} qtk_write_opts;

/* Remove the temporary files of writers still in progress.
 * Async-signal-safe: for SIGINT/SIGTERM handlers. */
QTK_API void qtk_fmt_remove_temps(void);
/* 1 if both paths exist and are the same file (device and inode). */
QTK_API int qtk_fmt_same_file(const char *a, const char *b);

/* ===================================================================== */
/* safetensors                                                            */
/* ===================================================================== */

#define QTK_ST_MAX_HEADER (100u * 1000u * 1000u) /* 100 MB, as the reference */

typedef struct {
	const char *name;
	qtk_dtype dtype;
	uint32_t ndim;
	uint64_t shape[QTK_MAX_DIMS];
	uint64_t nelem;         /* product of shape (1 for rank 0) */
	const void *data;       /* zero-copy view into the mapping */
	uint64_t nbytes;
	uint32_t shard;         /* which file of a sharded set holds it */
	uint64_t file_offset;   /* absolute offset of data in that file */
} qtk_st_tensor;

/* One safetensors file, or a sharded set presented as one namespace. */
typedef struct qtk_st_file qtk_st_file;

/* Open PATH: a .safetensors file, a *.safetensors.index.json, or a
 * directory (its index, or its single .safetensors file). Costs O(header).
 * On failure *out is NULL and st names file, tensor and problem. */
QTK_API qtk_err qtk_st_open(const char *path, qtk_st_file **out, qtk_status *st);
QTK_API void qtk_st_close(qtk_st_file *f); /* NULL is fine */

/* Tensors in the order of their data (shard order, then offset). */
QTK_API size_t qtk_st_count(const qtk_st_file *f);
QTK_API const qtk_st_tensor *qtk_st_get(const qtk_st_file *f, size_t i);
QTK_API const qtk_st_tensor *qtk_st_find(const qtk_st_file *f, const char *name);

/* __metadata__ pairs (of the first shard for a set). */
QTK_API size_t qtk_st_meta_count(const qtk_st_file *f);
QTK_API const char *qtk_st_meta_key(const qtk_st_file *f, size_t i);
QTK_API const char *qtk_st_meta_get(const qtk_st_file *f, const char *key);

/* Files behind the namespace (1 for a single file). */
QTK_API size_t qtk_st_shard_count(const qtk_st_file *f);
QTK_API const char *qtk_st_shard_path(const qtk_st_file *f, size_t i);
QTK_API uint64_t qtk_st_shard_size(const qtk_st_file *f, size_t i);
/* The directory the checkpoint lives in (for config.json and friends). */
QTK_API const char *qtk_st_dir(const qtk_st_file *f);

/* Convert elements [elem0, elem0+n) of a floating tensor to f32. */
QTK_API qtk_err qtk_st_read_f32(const qtk_st_tensor *t, uint64_t elem0,
                                uint64_t n, float *dst, qtk_status *st);

/* Writing. The layout is computed from the descriptions first, so tensor
 * data can be written in any order, from several threads. */
typedef struct {
	const char *name;
	qtk_dtype dtype;
	uint32_t ndim;
	uint64_t shape[QTK_MAX_DIMS];
} qtk_st_desc;

typedef struct qtk_st_writer qtk_st_writer;

/* meta: NULL or key, value, key, value, ..., NULL. */
QTK_API qtk_err qtk_st_writer_open(qtk_st_writer **out, const char *path,
                                   const qtk_st_desc *descs, size_t n,
                                   const char *const *meta,
                                   const qtk_write_opts *opts, qtk_status *st);
/* Write len bytes of tensor i's data at byte off within that tensor. */
QTK_API qtk_err qtk_st_writer_put(qtk_st_writer *w, size_t i, uint64_t off,
                                  const void *buf, size_t len, qtk_status *st);
/* Check every byte was written, fsync, rename. Frees w either way. */
QTK_API qtk_err qtk_st_writer_commit(qtk_st_writer *w, qtk_status *st);
/* Remove the temporary file and free w. NULL is fine. */
QTK_API void qtk_st_writer_abort(qtk_st_writer *w);

/* One-shot: write n tensors whose data are in memory (data[i]). */
QTK_API qtk_err qtk_st_write(const char *path, const qtk_st_desc *descs,
                             const void *const *data, size_t n,
                             const char *const *meta,
                             const qtk_write_opts *opts, qtk_status *st);

/* ===================================================================== */
/* qtk packed format (docs/format.md)                                     */
/* ===================================================================== */

/* What one tensor of a .qtk file is: name, shape, source dtype and how it
 * is stored (the layout's scheme, group, scale dtype and flags). */
typedef struct {
	const char *name;
	uint32_t ndim;                 /* 0..QTK_MAX_DIMS */
	uint64_t shape[QTK_MAX_DIMS];
	qtk_dtype src_dtype;           /* dtype in the source checkpoint */
	qtk_q_layout layout;
} qtk_pack_desc;

typedef struct qtk_pack_writer qtk_pack_writer;

/* Lay out every tensor and plane up front (in the order given) and create
 * the temporary output. After this, plane bytes can be written in any order
 * from any number of threads. */
QTK_API qtk_err qtk_pack_writer_open(qtk_pack_writer **out, const char *path,
                                     const qtk_pack_desc *descs, size_t n,
                                     const qtk_write_opts *opts, qtk_status *st);
/* Total size of the output file's data (for progress and --dry-run). */
QTK_API uint64_t qtk_pack_writer_size(const qtk_pack_writer *w);
/* Write len bytes at byte off of plane `plane` of tensor i. Thread-safe;
 * each byte of each plane must be written exactly once (the crc32 of the
 * plane is combined from the chunks' crcs at commit). */
QTK_API qtk_err qtk_pack_writer_put(qtk_pack_writer *w, size_t i, int plane,
                                    uint64_t off, const void *buf, size_t len,
                                    qtk_status *st);
/* Check every plane byte was written, write directory, metadata (a JSON
 * object text, may be NULL) and header, fsync, rename. Frees w either way;
 * on failure the output path is as it was. */
QTK_API qtk_err qtk_pack_writer_commit(qtk_pack_writer *w, const char *metadata_json,
                                       qtk_status *st);
/* Remove the temporary file and free w. NULL is fine. */
QTK_API void qtk_pack_writer_abort(qtk_pack_writer *w);

/* Like qtk_pack_writer_open with tensor starts aligned to tensor_align (a
 * power of two >= 64; qtk_pack_writer_open uses 4096). Small alignments
 * make small test and fuzz files. */
QTK_API qtk_err qtk_pack_writer_open_aligned(qtk_pack_writer **out, const char *path,
                                             const qtk_pack_desc *descs, size_t n,
                                             uint32_t tensor_align,
                                             const qtk_write_opts *opts, qtk_status *st);

/* ---- reading ---------------------------------------------------------- */

#define QTK_PACK_VERSION_MAJOR 1
#define QTK_PACK_VERSION_MINOR 0

/* Plane flags (on disk). */
#define QTK_PACK_PF_ZSTD 0x1u      /* stored as one zstd frame */
#define QTK_PACK_PF_BYTESPLIT 0x2u /* 16-bit elements: low bytes, then high
                                      bytes, before compression (zstd only) */

/* Open flags. */
#define QTK_PACK_OPEN_VERIFY 0x1u  /* at open: check every plane's crc32 and
                                      every scale/bias for NaN/Inf (O(bytes)) */

typedef struct {
	uint64_t offset;       /* absolute file offset of the stored bytes; 0 if none */
	uint64_t size;         /* bytes of the plane (uncompressed) */
	uint64_t stored_size;  /* bytes in the file (== size unless compressed) */
	uint32_t crc32;        /* zlib crc32 of the uncompressed plane bytes */
	uint32_t flags;        /* QTK_PACK_PF_* */
	const void *data;      /* stored bytes in the mapping; NULL if size 0 */
} qtk_pack_plane;

typedef struct {
	const char *name;              /* NUL-terminated, inside the mapping */
	uint32_t ndim;
	uint64_t shape[QTK_MAX_DIMS];
	qtk_dtype src_dtype;
	qtk_q_layout layout;
	uint64_t rows, cols;           /* the 2-D view: [prod(dims[:-1])][dims[-1]] */
	qtk_pack_plane planes[QTK_PLANE_MAX];
} qtk_pack_tensor;

typedef struct qtk_pack_file qtk_pack_file;

/* Map and validate PATH: header, directory, names, name index, every plane
 * range, alignment and size against the scheme table. O(tensors): plane
 * bytes are not read unless flags has QTK_PACK_OPEN_VERIFY. On failure *out
 * is NULL and st names file, tensor and problem (QTK_E_PK_* codes). */
QTK_API qtk_err qtk_pack_open(const char *path, unsigned flags, qtk_pack_file **out,
                              qtk_status *st);
/* The same over a caller's buffer (not copied; must outlive the file).
 * name is used in messages. For fuzzing and in-memory use. */
QTK_API qtk_err qtk_pack_open_mem(const void *data, size_t size, const char *name,
                                  unsigned flags, qtk_pack_file **out, qtk_status *st);
QTK_API void qtk_pack_close(qtk_pack_file *f); /* NULL is fine */

/* Tensors in directory (= data) order. */
QTK_API size_t qtk_pack_count(const qtk_pack_file *f);
QTK_API const qtk_pack_tensor *qtk_pack_get(const qtk_pack_file *f, size_t i);
/* Binary search in the file's name index; NULL if absent. */
QTK_API const qtk_pack_tensor *qtk_pack_find(const qtk_pack_file *f, const char *name);
/* Index of t in directory order. */
QTK_API size_t qtk_pack_index_of(const qtk_pack_file *f, const qtk_pack_tensor *t);
/* The metadata JSON object text (NUL-terminated); *len without the NUL. */
QTK_API const char *qtk_pack_metadata(const qtk_pack_file *f, size_t *len);
/* File size and the mapping (for prefetch hints). */
QTK_API uint64_t qtk_pack_file_size(const qtk_pack_file *f);
QTK_API const void *qtk_pack_file_data(const qtk_pack_file *f);
QTK_API uint32_t qtk_pack_version_minor(const qtk_pack_file *f);
/* Element dtype of a plane (U8 for packed codes and double-quant codes). */
QTK_API qtk_dtype qtk_pack_plane_dtype(const qtk_pack_tensor *t, int plane);

/* Copy (or decompress) plane p of t into dst[planes[p].size], checking the
 * size and the crc32. */
QTK_API qtk_err qtk_pack_plane_read(const qtk_pack_file *f, const qtk_pack_tensor *t,
                                    int p, void *dst, qtk_status *st);
/* Check every plane of tensor i: crc32, zstd frames, NaN/Inf scales. */
QTK_API qtk_err qtk_pack_verify_tensor(const qtk_pack_file *f, size_t i, qtk_status *st);
/* All tensors in order; stops at (and names) the first bad tensor. Also
 * checks the metadata is a JSON object. */
QTK_API qtk_err qtk_pack_verify(const qtk_pack_file *f, qtk_status *st);

/* Rewrite IN as OUT with every plane zstd-compressed (compress=1, at
 * level; bytesplit: split 16-bit planes first) or every plane stored plain
 * (compress=0). Directory, metadata and crcs carry over unchanged. */
QTK_API qtk_err qtk_pack_transcode(const char *in, const char *out, int compress,
                                   int level, int bytesplit,
                                   const qtk_write_opts *opts, qtk_status *st);

/* ===================================================================== */
/* GGUF                                                                   */
/* ===================================================================== */

#ifdef __cplusplus
}
#endif
#endif /* QTK_FORMATS_H */
