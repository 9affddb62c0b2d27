/* runtime: loading packed .qtk files by mmap (and GGUF files, repacked),
 * the matrix kernels that compute straight from the packed planes, and the
 * thread pool they run on. */
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
 * are decompressed (and crc-checked) at load. 64-byte aligned, except
 * GGUF tensors viewed in place (the file's alignment, 32 by default). */
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
 * PATH may also be a GGUF file (recognized by its magic): tensors of type
 * F32, F16 and BF16 are viewed in place (schemes f32/f16/bf16); Q8_0, Q4_0
 * and Q4_1 are repacked at load, exactly, into qtk planes the model owns
 * (int8, int4 and int4-affine, group 32, F16 scales); any other type fails
 * with QTK_E_UNSUPPORTED naming the tensor. QTK_RT_VERIFY is ignored for
 * GGUF (the format has no checksums).
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
/* The underlying packed file (for the formats-level API); NULL for GGUF. */
QTK_API const qtk_pack_file *qtk_rt_file(const qtk_rt_model *m);
/* The underlying GGUF file (its KVs: hyper-parameters, vocabulary); NULL
 * for a .qtk file. */
QTK_API const qtk_gguf_file *qtk_rt_gguf(const qtk_rt_model *m);

/* A qtk_rt_tensor is also the weight view the kernels read, wherever its
 * planes are: in a .qtk mapping, repacked from a GGUF file, or in memory.
 * qtk_rt_tensor_init makes a view of planes in memory (e.g. just quantized
 * with qtk_q_quantize_rows): it checks the layout and that every plane the
 * layout has is given, sets each plane's size from qtk_q_plane_sizes, and
 * sets ndim 2, shape {rows, cols}, zero_copy 0. The planes are borrowed
 * (64-byte alignment is not required) and must outlive the view. */
QTK_API qtk_err qtk_rt_tensor_init(qtk_rt_tensor *t, const char *name,
                                   const qtk_q_layout *L, uint64_t rows, uint64_t cols,
                                   const void *const planes[QTK_PLANE_MAX],
                                   qtk_status *st);

/* ===================================================================== */
/* Thread pool                                                            */
/* ===================================================================== */

/* A persistent set of threads (the caller's thread is one of them), made
 * once and passed to every kernel call: a forward pass makes thousands of
 * calls, and no call creates a thread. A pool runs one job at a time (calls
 * from several threads are serialized). It also keeps each thread's
 * scratch buffers between calls. Creating a pool sets OpenBLAS to one
 * thread (process-wide): qtk splits the rows of the float products itself,
 * so the two thread sets do not compete for the cores. */
typedef struct qtk_rt_pool qtk_rt_pool;

/* nthreads = 0: the number of online CPUs. */
QTK_API qtk_err qtk_rt_pool_create(unsigned nthreads, qtk_rt_pool **out,
                                   qtk_status *st);
QTK_API void qtk_rt_pool_free(qtk_rt_pool *p); /* NULL is fine */
/* Threads of the pool (1 for NULL). */
QTK_API unsigned qtk_rt_pool_threads(const qtk_rt_pool *p);

/* fn(ctx, begin, end, thread) over [0, n) split into one contiguous range
 * per thread (thread t gets [n*t/T, n*(t+1)/T), empty ranges skipped),
 * the caller's thread taking range 0; returns when all are done. p = NULL
 * runs fn(ctx, 0, n, 0) on the caller's thread. */
typedef void (*qtk_rt_range_fn)(void *ctx, size_t begin, size_t end, unsigned thread);
QTK_API void qtk_rt_pool_run(qtk_rt_pool *p, size_t n, qtk_rt_range_fn fn, void *ctx);

/* ===================================================================== */
/* Matrix products from packed planes                                     */
/* ===================================================================== */

/* Y = X W^T for a weight W [rows][cols] (as qtk stores it) and a batch of
 * input vectors:
 *   x  [batch][cols]  row-major: input vector b at x + b*cols
 *   y  [batch][rows]  row-major: y[b*rows + r] = dot(W row r, x row b)
 * batch = 1 is a matrix-vector product (GEMV); any batch >= 1 works (the
 * kernels tile 4 rows x up to 4 vectors). y must not overlap x.
 *
 * Quantized weights run qtk's kernels straight from the planes (no matrix
 * is dequantized; at most a few rows of a thread's range are decoded into
 * its scratch buffer), by one of two activation paths (docs/kernels.md):
 *   QTK_RT_FLOAT  x stays f32; each weight is dequantized exactly as
 *                 qtk_q_dequantize_rows gives it and multiply-added into
 *                 16 f32 lanes in a fixed order, folded by a fixed tree.
 *                 The parity reference.
 *   QTK_RT_INT8   x is quantized per block of 32 to int8 with an f32 scale
 *                 (as llama.cpp's Q8_0 activations); integer dot products
 *                 (AVX2 maddubs, AVX-VNNI / AVX-512 VNNI dpbusd); NF4
 *                 through a 16-entry int8 table round(127 * level). Faster;
 *                 its extra error is bounded in docs/kernels.md.
 * Both paths give the same bytes on every ISA (scalar reference, AVX2,
 * AVX-512, with or without VNNI) and for every thread count, and column b
 * of a batch equals the batch-1 product of x row b.
 *
 * Float weights (f32, f16, bf16 schemes, and raw F32/F16/BF16 storage)
 * run OpenBLAS sgemv / sgemm (path ignored) on fixed chunks of rows,
 * F16/BF16 rows widened to f32 per call into a thread's scratch buffer
 * (never the whole matrix): results do not depend on the thread count; they
 * are OpenBLAS's sums, not qtk's lane order.
 *
 * pool may be NULL (one thread, created and freed by the call: pass a
 * pool when calling often). Errors: QTK_E_ARG (NULL pointers, batch 0,
 * plane sizes that do not fit the layout), QTK_E_UNSUPPORTED (a layout no
 * kernel reads), QTK_E_NOMEM; y is then unspecified. */
typedef enum { QTK_RT_FLOAT = 0, QTK_RT_INT8 = 1 } qtk_rt_path;

QTK_API qtk_err qtk_rt_matmul(qtk_rt_pool *pool, const qtk_rt_tensor *w,
                              qtk_rt_path path, const float *x, size_t batch,
                              float *y, qtk_status *st);

/* Row `row` of w as f32 values (cols of them), exactly as
 * qtk_q_dequantize_rows gives them (NF4 double quant included; float
 * storage widened): an embedding lookup. QTK_E_ARG for a row out of range,
 * QTK_E_UNSUPPORTED for storage that is not a number the kernels read. */
QTK_API qtk_err qtk_rt_row_f32(const qtk_rt_tensor *w, uint64_t row, float *out,
                               qtk_status *st);

/* 1 if qtk_rt_matmul has a kernel for this layout (its scheme row's
 * code_bits and mode, or float storage), else 0. */
QTK_API int qtk_rt_supported(const qtk_q_layout *L);

/* Tests and benchmarks: allow (1, the default unless $QTK_VNNI=0) or forbid
 * (0) the VNNI dot-product instructions in the integer kernels, so the
 * maddubs variants can be run on a VNNI machine; same results either way.
 * Returns the previous setting. */
QTK_API int qtk_rt_allow_vnni(int allow);
/* The same for GFNI (unpacking 4-bit codes on AVX-512 VNNI machines;
 * $QTK_GFNI=0 forbids it). */
QTK_API int qtk_rt_allow_gfni(int allow);
/* The variant qtk_rt_matmul picks now: "scalar", "avx2", "avx2-vnni",
 * "avx512", "avx512-vnni", "avx512-vnni-gfni". */
QTK_API const char *qtk_rt_variant(void);

#ifdef __cplusplus
}
#endif
#endif /* QTK_RUNTIME_H */
