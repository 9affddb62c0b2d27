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
/* Model families (formats/model.c)                                       */
/* ===================================================================== */

#define QTK_FAMILY_PATTERNS 4
/* Diffusion checkpoints may prefix every name with this (ComfyUI). */
#define QTK_DIT_PREFIX "model.diffusion_model."

/* One row of the model-family table: the only list of families in qtk. */
typedef struct {
	const char *name;             /* "flux"; also its preset's name */
	/* detected when a tensor name matches every detect pattern (fnmatch),
	 * or, when detect_any is set, any one of those */
	const char *detect[QTK_FAMILY_PATTERNS];
	const char *detect_any[QTK_FAMILY_PATTERNS];
	const char *const *keep;      /* its preset: kept at source precision
	                                 (NULL-terminated), or NULL: no preset */
	int dit;                      /* diffusion transformer: names may carry
	                                 QTK_DIT_PREFIX, GGUF drops it */
	const char *gguf_arch;        /* general.architecture; NULL: config.json's
	                                 model_type when there is one */
	int llama_hparams;            /* GGUF: llama.* KVs from config.json, rows
	                                 un-permuted, the sentencepiece vocabulary */
	uint32_t gguf_name_max;       /* longest GGUF tensor name its readers take */
	const char *gguf_reader;      /* the reader that limits it, for messages */
} qtk_model_family;

QTK_API size_t qtk_model_family_count(void);
/* Row i (table order), NULL past the end. */
QTK_API const qtk_model_family *qtk_model_family_at(size_t i);
/* The family named name[0..len) (not NUL-terminated), or NULL. */
QTK_API const qtk_model_family *qtk_model_family_find(const char *name, size_t len);
/* The first family, in table order, that n tensor names match; NULL if
 * none. */
QTK_API const qtk_model_family *qtk_model_detect(const char *const *names, size_t n);

/* The config.json keys qtk reads (Hugging Face names). */
#define QTK_MODEL_KEYS(X) \
	X(MODEL_TYPE, "model_type") \
	X(HIDDEN_SIZE, "hidden_size") \
	X(NUM_HIDDEN_LAYERS, "num_hidden_layers") \
	X(NUM_ATTENTION_HEADS, "num_attention_heads") \
	X(NUM_KEY_VALUE_HEADS, "num_key_value_heads") \
	X(INTERMEDIATE_SIZE, "intermediate_size") \
	X(MAX_POSITION_EMBEDDINGS, "max_position_embeddings") \
	X(VOCAB_SIZE, "vocab_size") \
	X(HEAD_DIM, "head_dim") \
	X(RMS_NORM_EPS, "rms_norm_eps") \
	X(ROPE_THETA, "rope_theta") \
	X(ROPE_SCALING, "rope_scaling") \
	X(TIE_WORD_EMBEDDINGS, "tie_word_embeddings") \
	X(HIDDEN_ACT, "hidden_act") \
	X(ATTENTION_BIAS, "attention_bias") \
	X(MLP_BIAS, "mlp_bias") \
	X(SLIDING_WINDOW, "sliding_window") \
	X(PARTIAL_ROTARY_FACTOR, "partial_rotary_factor")

enum {
#define X(id, name) QTK_MK_##id,
	QTK_MODEL_KEYS(X)
#undef X
	QTK_MK_COUNT
};

/* One value as the file has it; consumers apply their own rules. */
typedef enum {
	QTK_MV_ABSENT = 0, QTK_MV_NULL, QTK_MV_INT, QTK_MV_REAL, QTK_MV_TRUE,
	QTK_MV_FALSE, QTK_MV_STRING, QTK_MV_OTHER /* object or array */
} qtk_model_vkind;

typedef struct {
	qtk_model_vkind kind;
	int64_t i;             /* INT */
	double d;              /* INT and REAL */
	const char *s;         /* STRING: the first 127 bytes, NUL-terminated */
	size_t len;            /* STRING: its full length */
} qtk_model_val;

/* A model's config, parsed once (formats/model.c). */
typedef struct {
	int present;           /* a config was there (the member, for metadata) */
	int is_object;         /* and it is a JSON object (else every key ABSENT) */
	char where[512];       /* the file, for messages */
	qtk_model_val v[QTK_MK_COUNT];
	char str[QTK_MK_COUNT][128];
} qtk_model_desc;

/* "hidden_size" for QTK_MK_HIDDEN_SIZE; NULL if unknown. */
QTK_API const char *qtk_model_key_name(int key);
/* Parse a config from text[0..len): the whole document, or its member
 * (a .qtk file's metadata "config"; absent: present = 0). QTK_E_FORMAT
 * "WHERE: reason (line N)" when it is not JSON, QTK_E_NOMEM. */
QTK_API qtk_err qtk_model_desc_parse(const char *text, size_t len, const char *member,
                                     const char *where, qtk_model_desc *d, qtk_status *st);
/* The same from a file (QTK_E_NOT_FOUND when there is none). */
QTK_API qtk_err qtk_model_desc_read(const char *path, qtk_model_desc *d, qtk_status *st);

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
/* Install a SIGBUS handler for the process (the library never installs
 * one itself): a read of a mapped input past its end, after another
 * program truncated or rewrote the file, then prints "qtk: FILE: the file
 * shrank while qtk was reading it (... byte N)", removes the temporaries
 * and _exit(exit_status)s; a SIGBUS anywhere else keeps its default
 * action. 0, or -1 if sigaction failed. */
QTK_API int qtk_fmt_catch_sigbus(int exit_status);
/* 1 if both paths exist and are the same file (device and inode). */
QTK_API int qtk_fmt_same_file(const char *a, const char *b);

/* Inputs. Every file qtk reads is opened here: stat'ed first, opened with
 * O_NONBLOCK (a FIFO cannot block the open) and fstat'ed; anything but a
 * regular file is refused naming its type ("PATH: is a FIFO, not a regular
 * file"). QTK_E_NOT_FOUND when PATH does not exist. */
QTK_API qtk_err qtk_fmt_open_input(const char *path, int *fd, uint64_t *size,
                                   qtk_status *st);
/* Read exactly len bytes at off of fd (the input PATH, for messages):
 * EINTR retried; a failed read is QTK_E_IO "PATH: read failed at byte
 * OFF: reason", and a file that ends before off + len (it shrank since it
 * was opened) QTK_E_IO "PATH: ends before byte END (changed while being
 * read?)". */
QTK_API qtk_err qtk_fmt_pread(int fd, void *buf, size_t len, uint64_t off, const char *path,
                              qtk_status *st);
/* The same check without opening (for optional files beside an input). */
QTK_API qtk_err qtk_fmt_check_input(const char *path, qtk_status *st);
/* The whole file, NUL-terminated, in a buffer the caller frees with
 * qtk_free; *len (may be NULL) gets its length. */
QTK_API qtk_err qtk_fmt_read_input(const char *path, char **data, size_t *len,
                                   qtk_status *st);

/* jansson allocates through qtk_malloc, so the fault sweeps reach JSON.
 * jansson 2.14 does not survive a refused allocation everywhere (its parser
 * overruns a token buffer it could not grow; json_dumps drops an object key
 * it could not write and returns the rest), so every stretch of jansson
 * calls (a parse, building a document, json_dumps) is guarded:
 *     unsigned m = qtk_json_begin();
 *     ... jansson calls ...
 *     if (qtk_json_end(m)) -> QTK_E_NOMEM, whatever the calls returned
 * Inside a guard a refused allocation is counted (on this thread) and the
 * memory served anyway; qtk_json_end says whether any was refused. */
QTK_API unsigned qtk_json_begin(void);
QTK_API int qtk_json_end(unsigned mark);

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
	const char *file_;      /* private: that file's path, for messages */
} qtk_st_tensor;

/* One safetensors file, or a sharded set presented as one namespace. */
typedef struct qtk_st_file qtk_st_file;

/* Open PATH: a .safetensors file, a *.safetensors.index.json, or a
 * directory (the file qtk_st_resolve picks in it). Costs O(header).
 * On failure *out is NULL and st names file, tensor and problem. */
QTK_API qtk_err qtk_st_open(const char *path, qtk_st_file **out, qtk_status *st);
/* The file qtk_st_open reads for PATH: PATH itself, or in a directory the
 * file a Hugging Face loader reads there: model.safetensors, else
 * model.safetensors.index.json, else diffusion_pytorch_model.safetensors
 * .index.json, else diffusion_pytorch_model.safetensors, else the only
 * *.safetensors.index.json, else the only .safetensors file (several:
 * QTK_E_ARG naming them; none: QTK_E_NOT_FOUND). *out is the path (a
 * directory's joined to the file's name); the caller frees it with qtk_free. */
QTK_API qtk_err qtk_st_resolve(const char *path, char **out, qtk_status *st);
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
/* The open descriptor of shard i (the file its mapping was made from,
 * valid until qtk_st_close), for pread of tensor bytes; -1 if none. */
QTK_API int qtk_st_shard_fd(const qtk_st_file *f, size_t i);
/* The directory the checkpoint lives in (for config.json and friends). */
QTK_API const char *qtk_st_dir(const qtk_st_file *f);
/* The file opened (the index of a set): PATH, or the one picked in it. */
QTK_API const char *qtk_st_path(const qtk_st_file *f);

/* Convert elements [elem0, elem0+n) of a floating tensor to f32. A finite
 * F64 value beyond f32's range is refused (QTK_E_UNSUPPORTED naming file,
 * tensor, element and value), never made Inf. */
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

/* ---- atomic output directories (formats/fileio.c) --------------------- */

/* A directory output (MLX's model directory) built under a temporary name
 * in PATH's parent (".qtk-tmp-PID-XXXXXX", those of dead processes removed
 * first) and moved into place at commit. What may be at PATH: nothing, an
 * empty directory (used with or without force), or, with opts->force, a
 * directory KIND says is a previous output of its kind (atomically
 * exchanged, then removed). Anything else is refused even with force: a
 * symbolic link, a file of any type, a non-empty directory KIND does not
 * accept (naming the first foreign entry), a PATH that holds one of
 * opts->inputs (QTK_E_SAME_FILE); an existing previous output without force
 * is QTK_E_EXISTS. PATH is looked at again right before the move, and the
 * old directory once more after the exchange (swapped back if it changed).
 * Files go into qtk_outdir_tmp(d), each written atomically by its own
 * writer. */
typedef struct {
	const char *name;  /* "MLX", for messages */
	/* QTK_OK if the non-empty directory DIR holds only what an output of
	 * this kind holds; else a failure naming the first foreign entry */
	qtk_err (*check)(const char *dir, qtk_status *st);
} qtk_outdir_kind;
typedef struct qtk_outdir qtk_outdir;
QTK_API qtk_err qtk_outdir_open(qtk_outdir **out, const char *path,
                                const qtk_write_opts *opts, const qtk_outdir_kind *kind,
                                qtk_status *st);
QTK_API const char *qtk_outdir_tmp(const qtk_outdir *d);
QTK_API const char *qtk_outdir_path(const qtk_outdir *d); /* PATH, no trailing '/' */
/* fsync the temporary directory, move it into place, fsync the parent.
 * Frees d either way; on failure the temporary is removed and PATH is as
 * it was. */
QTK_API qtk_err qtk_outdir_commit(qtk_outdir *d, qtk_status *st);
/* Remove the temporary directory and free d. NULL is fine. */
QTK_API void qtk_outdir_abort(qtk_outdir *d);

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

#define QTK_PACK_MAGIC "QTKPACK\0" /* the first 8 bytes of every .qtk file */
#define QTK_GGUF_MAGIC "GGUF"       /* the first 4 bytes of a GGUF file */
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
/* Check every plane of tensor i: crc32, zstd frames, NaN/Inf scales, and
 * that the padding before each plane is zero (QTK_E_PK_PADDING). */
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

/* KV value types (on disk). */
typedef enum {
	QTK_GGUF_U8 = 0, QTK_GGUF_I8 = 1, QTK_GGUF_U16 = 2, QTK_GGUF_I16 = 3,
	QTK_GGUF_U32 = 4, QTK_GGUF_I32 = 5, QTK_GGUF_F32 = 6, QTK_GGUF_BOOL = 7,
	QTK_GGUF_STRING = 8, QTK_GGUF_ARRAY = 9, QTK_GGUF_U64 = 10,
	QTK_GGUF_I64 = 11, QTK_GGUF_F64 = 12, QTK_GGUF_VTYPE_COUNT
} qtk_gguf_vtype;

/* ggml tensor types (on-disk values; gaps are retired types). */
enum {
	QTK_GGML_F32 = 0, QTK_GGML_F16 = 1, QTK_GGML_Q4_0 = 2, QTK_GGML_Q4_1 = 3,
	QTK_GGML_Q5_0 = 6, QTK_GGML_Q5_1 = 7, QTK_GGML_Q8_0 = 8, QTK_GGML_Q8_1 = 9,
	QTK_GGML_I8 = 24, QTK_GGML_I16 = 25, QTK_GGML_I32 = 26, QTK_GGML_I64 = 27,
	QTK_GGML_F64 = 28, QTK_GGML_BF16 = 30, QTK_GGML_TYPE_COUNT = 40
};

#define QTK_GGUF_MAX_DIMS 4      /* ggml's GGML_MAX_DIMS: what qtk writes */
#define QTK_GGUF_READ_MAX_DIMS QTK_MAX_DIMS /* what qtk reads: gguf-py writes
                                           any rank (ComfyUI-GGUF's 5-D Wan
                                           patch_embedding.weight) */
#define QTK_GGUF_DEFAULT_ALIGN 32u
/* The largest general.alignment qtk reads or writes: 64 KiB, the largest
 * page size of common platforms (arm64 and ppc64le 64K-page kernels);
 * aligning a mapped tensor beyond its page buys nothing, llama.cpp and
 * gguf-py write 32, and an unbounded value lets a 64-byte file ask for a
 * 2 GiB output (the header alone is padded to it). */
#define QTK_GGUF_MAX_ALIGN 65536u
#define QTK_GGUF_QK 32u  /* elements per Q8_0 / Q4_0 / Q4_1 block */

/* One row of the ggml type table (formats/gguf_types.c): ggml's
 * type_traits plus what qtk holds of the type. The only list of ggml
 * types in qtk; it names no scheme (it finds the quant row by the code
 * properties below). */
typedef struct {
	const char *name;       /* "Q4_0"; NULL: retired or unknown slot */
	uint32_t blck, bytes;   /* elements and bytes per block */
	uint8_t plain;          /* one element per block, of dtype */
	qtk_dtype dtype;        /* plain types: the element dtype */
	/* Block types qtk holds exactly (groups of blck, F16 scales): the
	 * code properties of the quant scheme row that stores the same codes
	 * (qtk_q_scheme_find); code_bits 0: none does. */
	uint8_t code_bits;
	qtk_q_mode mode;
	uint8_t code_signed, code_offset;
	int16_t file_type;      /* LLAMA_FTYPE of a file mostly of it; -1: none */
	void (*deq)(const uint8_t *block, float *y); /* one block to f32 */
	/* qtk planes <-> nrows * cols/blck blocks (below) */
	qtk_err (*pack)(const qtk_q_cplanes *p, size_t nrows, size_t cols, void *dst,
	                qtk_status *st);
	qtk_err (*unpack)(const void *src, size_t nrows, size_t cols, const qtk_q_planes *p,
	                  qtk_status *st);
} qtk_ggml_type_info;

/* The table row of a ggml type; NULL for an unknown or retired id. */
QTK_API const qtk_ggml_type_info *qtk_ggml_type_get(uint32_t type);
/* "Q4_0"; NULL for an unknown or retired type. */
QTK_API const char *qtk_ggml_type_name(uint32_t type);
/* Elements per block and bytes per block; 0 if unknown. */
QTK_API uint32_t qtk_ggml_block_elems(uint32_t type);
QTK_API uint32_t qtk_ggml_block_bytes(uint32_t type);
/* The qtk layout that holds a ggml type exactly: plain types the float
 * row storing their dtype, else raw bytes (F64, I*), with .dtype set;
 * block types their scheme row, group blck, F16 scales. 0 (L zeroed but
 * for F16 scales) when qtk has no layout for the type. */
QTK_API int qtk_ggml_layout(uint32_t type, qtk_q_layout *L);
/* The plain ggml type of elements of dt; -1 if none. */
QTK_API int qtk_ggml_type_of_dtype(qtk_dtype dt);
/* The ggml type that holds scheme id (float rows: their stored dtype;
 * quantized rows: the block type of the same codes), whatever the group
 * and row length; -1 if none. */
QTK_API int qtk_ggml_type_of_scheme(qtk_scheme_id id);
/* general.file_type (llama.cpp's LLAMA_FTYPE) of a file whose main scheme
 * is id; 0 (all F32) when no ggml type holds it. */
QTK_API uint32_t qtk_ggml_file_type(qtk_scheme_id id);
/* qtk planes of nrows rows <-> the type's blocks, through its row of the
 * table; QTK_E_UNSUPPORTED for types without block functions. */
QTK_API qtk_err qtk_ggml_pack_rows(uint32_t type, const qtk_q_cplanes *p, size_t nrows,
                                   size_t cols, void *dst, qtk_status *st);
QTK_API qtk_err qtk_ggml_unpack_rows(uint32_t type, const void *src, size_t nrows,
                                     size_t cols, const qtk_q_planes *p, qtk_status *st);
/* "u32", "string", "array"; NULL if unknown. */
QTK_API const char *qtk_gguf_vtype_name(uint32_t vtype);

/* One key/value pair. Scalars: data points at the value in the file.
 * Strings: data at the bytes (not NUL-terminated), count = length.
 * Arrays: arr_type, count elements, data at the first one. */
typedef struct {
	const char *key;        /* NUL-terminated copy */
	uint32_t type;          /* qtk_gguf_vtype */
	uint32_t arr_type;      /* arrays: element type */
	uint64_t count;         /* arrays: elements; strings: bytes; else 1 */
	const uint8_t *data;    /* in the mapping */
	uint64_t size;          /* bytes of the whole value in the file */
	const uint64_t *str_off_; /* private: string arrays' element offsets */
	uint32_t len_bytes_;    /* private: 4 (v1) or 8: width of string lengths */
} qtk_gguf_kv;

typedef struct {
	const char *name;       /* NUL-terminated copy */
	uint32_t type;          /* ggml type */
	uint32_t n_dims;        /* 1..QTK_GGUF_READ_MAX_DIMS */
	uint64_t ne[QTK_GGUF_READ_MAX_DIMS]; /* ne[0] innermost; unused dims 1 */
	uint32_t ndim;          /* = n_dims; shape in safetensors order: */
	uint64_t shape[QTK_MAX_DIMS];   /* shape[ndim-1] = ne[0] */
	uint64_t nelem;
	uint64_t rows, cols;    /* 2-D view: cols = ne[0] */
	uint64_t offset;        /* relative to the data section */
	uint64_t file_offset;   /* absolute */
	const void *data;       /* in the mapping */
	uint64_t nbytes;
	const char *file_;      /* private: the file's name, for messages */
} qtk_gguf_tensor;

typedef struct qtk_gguf_file qtk_gguf_file;

/* Map and validate PATH (GGUF v1, v2, v3): header, every KV (arrays of
 * arrays too), every tensor info, alignment, bounds, overlaps, duplicates.
 * O(metadata); tensor bytes are not read. On failure *out is NULL and st
 * names file, key/tensor and problem (QTK_E_GG_* codes). */
QTK_API qtk_err qtk_gguf_open(const char *path, qtk_gguf_file **out, qtk_status *st);
/* The same over a caller's buffer (must outlive the file). */
QTK_API qtk_err qtk_gguf_open_mem(const void *data, size_t size, const char *name,
                                  qtk_gguf_file **out, qtk_status *st);
QTK_API void qtk_gguf_close(qtk_gguf_file *f); /* NULL is fine */

QTK_API uint32_t qtk_gguf_version(const qtk_gguf_file *f);
QTK_API uint32_t qtk_gguf_alignment(const qtk_gguf_file *f);
QTK_API uint64_t qtk_gguf_data_offset(const qtk_gguf_file *f);
QTK_API uint64_t qtk_gguf_file_size(const qtk_gguf_file *f);
/* The open descriptor the mapping was made from (valid until
 * qtk_gguf_close), for pread of tensor bytes; -1 if none. */
QTK_API int qtk_gguf_fd(const qtk_gguf_file *f);

/* KVs in file order. */
QTK_API size_t qtk_gguf_kv_count(const qtk_gguf_file *f);
QTK_API const qtk_gguf_kv *qtk_gguf_kv_get(const qtk_gguf_file *f, size_t i);
QTK_API const qtk_gguf_kv *qtk_gguf_kv_find(const qtk_gguf_file *f, const char *key);

/* Typed getters: QTK_E_NOT_FOUND if the key is absent, QTK_E_GG_KV_MISMATCH
 * if its type does not convert exactly (get_uint takes any integer type
 * holding a non-negative value; get_int any integer up to INT64_MAX; get_f64
 * F32/F64). key may be NULL when kv is given directly. */
QTK_API qtk_err qtk_gguf_get_uint(const qtk_gguf_file *f, const char *key,
                                  uint64_t *out, qtk_status *st);
QTK_API qtk_err qtk_gguf_get_int(const qtk_gguf_file *f, const char *key,
                                 int64_t *out, qtk_status *st);
QTK_API qtk_err qtk_gguf_get_f64(const qtk_gguf_file *f, const char *key,
                                 double *out, qtk_status *st);
QTK_API qtk_err qtk_gguf_get_bool(const qtk_gguf_file *f, const char *key,
                                  int *out, qtk_status *st);
/* String bytes (not NUL-terminated) and length. */
QTK_API qtk_err qtk_gguf_get_str(const qtk_gguf_file *f, const char *key,
                                 const char **s, uint64_t *len, qtk_status *st);
/* Element i of an array KV: a string, or a number converted to double /
 * int64 (integers, F32/F64, BOOL). Return QTK_E_ARG if the element is not
 * of that kind or i is out of range. */
QTK_API qtk_err qtk_gguf_arr_str(const qtk_gguf_kv *kv, uint64_t i,
                                 const char **s, uint64_t *len);
QTK_API qtk_err qtk_gguf_arr_f64(const qtk_gguf_kv *kv, uint64_t i, double *out);
QTK_API qtk_err qtk_gguf_arr_int(const qtk_gguf_kv *kv, uint64_t i, int64_t *out);

/* Tensors in info order. */
QTK_API size_t qtk_gguf_count(const qtk_gguf_file *f);
QTK_API const qtk_gguf_tensor *qtk_gguf_get(const qtk_gguf_file *f, size_t i);
QTK_API const qtk_gguf_tensor *qtk_gguf_find(const qtk_gguf_file *f, const char *name);

/* Dequantize elements [elem0, elem0+n) (flat, ne[0] innermost) to f32,
 * exactly as ggml does: F32, F16, BF16, Q8_0, Q4_0, Q4_1; F64 rounded to
 * nearest (a finite value beyond f32's range: QTK_E_UNSUPPORTED). Other
 * types: QTK_E_UNSUPPORTED naming the type. Messages name file and tensor. */
QTK_API qtk_err qtk_gguf_read_f32(const qtk_gguf_tensor *t, uint64_t elem0,
                                  uint64_t n, float *dst, qtk_status *st);

/* ---- writing (GGUF v3) ------------------------------------------------ */

/* KVs to write, collected (and serialized) before the writer opens. Keys
 * must be unique (QTK_E_GG_DUP_KEY). general.alignment, if added, must be a
 * u32 power of two and sets the data alignment (else 32). */
typedef struct qtk_gguf_kvs qtk_gguf_kvs;
QTK_API qtk_gguf_kvs *qtk_gguf_kvs_new(void);     /* NULL: out of memory */
QTK_API void qtk_gguf_kvs_free(qtk_gguf_kvs *k);  /* NULL is fine */
QTK_API size_t qtk_gguf_kvs_count(const qtk_gguf_kvs *k);
/* A scalar of type (U8..I64, F32, F64, BOOL) read from *value (host order). */
QTK_API qtk_err qtk_gguf_kvs_add(qtk_gguf_kvs *k, const char *key, uint32_t type,
                                 const void *value, qtk_status *st);
QTK_API qtk_err qtk_gguf_kvs_add_u32(qtk_gguf_kvs *k, const char *key, uint32_t v, qtk_status *st);
QTK_API qtk_err qtk_gguf_kvs_add_i32(qtk_gguf_kvs *k, const char *key, int32_t v, qtk_status *st);
QTK_API qtk_err qtk_gguf_kvs_add_f32(qtk_gguf_kvs *k, const char *key, float v, qtk_status *st);
QTK_API qtk_err qtk_gguf_kvs_add_bool(qtk_gguf_kvs *k, const char *key, int v, qtk_status *st);
QTK_API qtk_err qtk_gguf_kvs_add_str(qtk_gguf_kvs *k, const char *key, const char *s,
                                     size_t len, qtk_status *st);
/* An array of n scalars of elem_type (host order, packed). */
QTK_API qtk_err qtk_gguf_kvs_add_arr(qtk_gguf_kvs *k, const char *key, uint32_t elem_type,
                                     const void *elems, size_t n, qtk_status *st);
/* An array of n strings (lens NULL: NUL-terminated). */
QTK_API qtk_err qtk_gguf_kvs_add_arr_str(qtk_gguf_kvs *k, const char *key,
                                         const char *const *strs, const size_t *lens,
                                         size_t n, qtk_status *st);

/* Copy a KV read by qtk_gguf_open (any version; nested arrays too),
 * re-encoded for v3. */
QTK_API qtk_err qtk_gguf_kvs_add_kv(qtk_gguf_kvs *k, const qtk_gguf_kv *kv, qtk_status *st);

/* One tensor to write: ne[0] innermost (= the last safetensors dim). */
typedef struct {
	const char *name;
	uint32_t type;          /* ggml type */
	uint32_t n_dims;        /* 1..4 */
	uint64_t ne[QTK_GGUF_MAX_DIMS];
} qtk_gguf_desc;

typedef struct qtk_gguf_writer qtk_gguf_writer;

/* Lay out the file (header, KVs, infos, data in the order given, each at a
 * multiple of the alignment), create the temporary output and write all
 * but the tensor bytes. kvs may be NULL; it is not kept. */
QTK_API qtk_err qtk_gguf_writer_open(qtk_gguf_writer **out, const char *path,
                                     const qtk_gguf_kvs *kvs, const qtk_gguf_desc *descs,
                                     size_t n, const qtk_write_opts *opts, qtk_status *st);
/* Bytes of tensor i's data, and its absolute offset in the file. */
QTK_API uint64_t qtk_gguf_writer_tensor_bytes(const qtk_gguf_writer *w, size_t i);
QTK_API uint64_t qtk_gguf_writer_tensor_offset(const qtk_gguf_writer *w, size_t i);
/* Write len bytes at byte off of tensor i's data. Thread-safe, any order;
 * each byte must be written exactly once. */
QTK_API qtk_err qtk_gguf_writer_put(qtk_gguf_writer *w, size_t i, uint64_t off,
                                    const void *buf, size_t len, qtk_status *st);
/* Check every tensor got all its bytes (QTK_E_GG_INCOMPLETE), fsync,
 * rename. Frees w either way; on failure the output path is as it was. */
QTK_API qtk_err qtk_gguf_writer_commit(qtk_gguf_writer *w, qtk_status *st);
/* Remove the temporary and free w. NULL is fine. */
QTK_API void qtk_gguf_writer_abort(qtk_gguf_writer *w);

/* ---- LLaMA-family export helpers (formats/gguf_llama.c) -------------- */

/* GGUF name of an HF LlamaForCausalLM tensor: model.embed_tokens.weight ->
 * token_embd.weight, model.layers.N.self_attn.q_proj.weight ->
 * blk.N.attn_q.weight (k/v/o: attn_k/attn_v/attn_output), mlp.gate/up/
 * down_proj -> ffn_gate/ffn_up/ffn_down, input_layernorm -> attn_norm,
 * post_attention_layernorm -> ffn_norm, model.norm -> output_norm,
 * lm_head -> output. *qk = 1 for q_proj, 2 for k_proj (rows to
 * un-permute), else 0. QTK_E_NOT_FOUND for other names, QTK_E_ARG if out
 * is too small. */
QTK_API qtk_err qtk_gguf_llama_name(const char *hf, char *out, size_t n, int *qk);
/* HF permutes q/k rows per head for rotate-half RoPE; ggml wants the
 * original interleaved order. Row `row` of the ggml tensor is row
 * qtk_gguf_llama_qk_src_row(row, rows, n_head) of the HF one (q: n_head,
 * k: n_head_kv). Works on whole rows, so on quantized rows too. */
QTK_API uint64_t qtk_gguf_llama_qk_src_row(uint64_t row, uint64_t rows, uint32_t n_head);
QTK_API qtk_err qtk_gguf_llama_unpermute(const void *src, void *dst, uint64_t rows,
                                         uint64_t row_bytes, uint32_t n_head, qtk_status *st);

typedef struct {
	uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx, n_vocab, head_dim;
	float rms_eps, rope_theta;
	int tied;               /* tie_word_embeddings: no output.weight */
} qtk_gguf_llama_hparams;

/* Read config.json; add general.architecture = "llama" and the llama.*
 * hyper-parameter KVs to k (if k is not NULL). QTK_E_GG_CONFIG names a
 * missing or bad key; rope_scaling -> QTK_E_UNSUPPORTED. */
QTK_API qtk_err qtk_gguf_llama_config(const char *config_path, qtk_gguf_kvs *k,
                                      qtk_gguf_llama_hparams *hp, qtk_status *st);
/* The same from a parsed config (messages name d->where). */
QTK_API qtk_err qtk_gguf_llama_desc(const qtk_model_desc *d, qtk_gguf_kvs *k,
                                    qtk_gguf_llama_hparams *hp, qtk_status *st);

/* A sentencepiece tokenizer.model (protobuf), pieces pointing into the
 * mapped file. types: 1 normal, 2 unknown, 3 control, 4 user-defined,
 * 5 unused, 6 byte (the values tokenizer.ggml.token_type uses). */
typedef struct {
	size_t n;
	const char **pieces;    /* not NUL-terminated: lens[i] bytes */
	size_t *lens;
	float *scores;
	int32_t *types;
	int32_t unk_id, bos_id, eos_id, pad_id; /* -1: none */
	void *map_;             /* private */
	/* trainer_spec (defaults when absent, as sentencepiece) */
	int32_t model_type;     /* 1 unigram (default), 2 BPE, 3 word, 4 char */
	int byte_fallback;      /* 0 */
	int ws_as_suffix;       /* treat_whitespace_as_suffix: 0 */
	/* normalizer_spec */
	int add_dummy_prefix;   /* 1 */
	int remove_extra_ws;    /* remove_extra_whitespaces: 1 */
	int escape_ws;          /* escape_whitespaces: 1 */
	int has_charsmap;       /* a non-empty precompiled_charsmap (e.g. nmt_nfkc) */
} qtk_spm_vocab;

QTK_API qtk_err qtk_spm_read(const char *path, qtk_spm_vocab **out, qtk_status *st);
QTK_API void qtk_spm_free(qtk_spm_vocab *v); /* NULL is fine */
/* tokenizer.ggml.model = "llama", tokens, scores, token_type and the
 * bos/eos/unknown(/padding) ids. */
QTK_API qtk_err qtk_gguf_spm_kvs(const qtk_spm_vocab *v, qtk_gguf_kvs *k, qtk_status *st);

/* ---- qtk planes <-> ggml blocks (pure, lossless) ----------------------
 * Planes follow quant/qtk_quant.h: codes row-major, one f16 scale (and
 * bias) per 32-element group. INT8 g32 <-> Q8_0 (d = scale), INT4 g32
 * (stored q+8) <-> Q4_0 (ggml also stores q+8: x = d*(q-8)), INT4_AFFINE
 * g32 <-> Q4_1 (d = scale, m = bias: ggml x = d*q + m is qtk w = scale*q +
 * bias). cols must be a multiple of 32 (else QTK_E_GG_LAYOUT). dst holds
 * nrows * cols/32 blocks of qtk_ggml_block_bytes(type). */
/* The GGUF type that holds layout L exactly for rows of cols elements, or
 * QTK_E_GG_LAYOUT with the reason (NF4, group != 32, f32 scales, ...). */
QTK_API qtk_err qtk_gguf_type_for_layout(const qtk_q_layout *L, uint64_t cols,
                                         uint32_t *type, qtk_status *st);
QTK_API qtk_err qtk_gguf_pack_q8_0(const int8_t *codes, const uint16_t *scales,
                                   size_t nrows, size_t cols, void *dst, qtk_status *st);
QTK_API qtk_err qtk_gguf_unpack_q8_0(const void *src, size_t nrows, size_t cols,
                                     int8_t *codes, uint16_t *scales, qtk_status *st);
QTK_API qtk_err qtk_gguf_pack_q4_0(const uint8_t *codes, const uint16_t *scales,
                                   size_t nrows, size_t cols, void *dst, qtk_status *st);
QTK_API qtk_err qtk_gguf_unpack_q4_0(const void *src, size_t nrows, size_t cols,
                                     uint8_t *codes, uint16_t *scales, qtk_status *st);
QTK_API qtk_err qtk_gguf_pack_q4_1(const uint8_t *codes, const uint16_t *scales,
                                   const uint16_t *biases, size_t nrows, size_t cols,
                                   void *dst, qtk_status *st);
QTK_API qtk_err qtk_gguf_unpack_q4_1(const void *src, size_t nrows, size_t cols,
                                     uint8_t *codes, uint16_t *scales, uint16_t *biases,
                                     qtk_status *st);

/* ===================================================================== */
/* Activation statistics (formats/stats*.c, docs/calibration.md)          */
/* ===================================================================== */

/* Per linear weight, the statistics of its input vectors x (one per
 * token): the token count, per input channel (= weight column) the sums
 * of x_j^2 and of x_j, and optionally the full X^T X. Sums are raw (not
 * means) in double, so merging two sets is adding them. */
typedef enum {
	QTK_STATS_QTK = 0,     /* qtk's own: safetensors, F64 sums */
	QTK_STATS_IMATRIX = 1, /* llama.cpp's imatrix GGUF (F32 sum x^2, counts) */
	QTK_STATS_DAT = 2,     /* llama.cpp's legacy imatrix .dat */
} qtk_stats_kind;

typedef struct {
	char *name;        /* as recorded: the model file's spelling (HF or GGUF) */
	char *key;         /* GGUF spelling (LLaMA names mapped as the GGUF sink
	                      maps them; other names as they are): lookups and
	                      imatrix output use it */
	uint64_t cols;     /* input channels */
	uint64_t count;    /* input vectors summed (tokens; chunks for a .dat) */
	double *sum2;      /* [cols] sum of x_j^2 */
	double *sum;       /* [cols] sum of x_j; NULL when the source has none */
	double *xtx;       /* [cols][cols] sum of x x^T, full and symmetric,
	                      row-major; NULL when not recorded */
} qtk_stats_entry;

typedef struct qtk_stats qtk_stats;

#define QTK_STATS_SUM 0x1u /* qtk_stats_add: keep sum x */
#define QTK_STATS_XTX 0x2u /* qtk_stats_add: keep X^T X */

QTK_API qtk_err qtk_stats_new(qtk_stats **out, qtk_status *st);
QTK_API void qtk_stats_free(qtk_stats *s); /* NULL is fine */
/* A zeroed entry for weight `name` with cols channels (what flags ask for
 * allocated); QTK_E_ARG if a weight of the same key is there already. */
QTK_API qtk_err qtk_stats_add(qtk_stats *s, const char *name, uint64_t cols, unsigned flags,
                              qtk_stats_entry **e, qtk_status *st);
/* Entries in key order. */
QTK_API size_t qtk_stats_count(const qtk_stats *s);
QTK_API qtk_stats_entry *qtk_stats_get(const qtk_stats *s, size_t i);
/* The entry of a weight named in HF or GGUF spelling; NULL if none. */
QTK_API qtk_stats_entry *qtk_stats_find(const qtk_stats *s, const char *name);

/* What the set was made from (written into qtk and imatrix files). */
typedef struct {
	uint64_t chunks;      /* windows of text run */
	uint32_t chunk_size;  /* tokens per window (0: unknown or mixed) */
	int counts_chunks;    /* counts are chunks, not tokens (from a .dat) */
} qtk_stats_info;
QTK_API qtk_stats_info *qtk_stats_info_of(qtk_stats *s);
/* Text files the statistics come from (llama.cpp's imatrix.datasets). */
QTK_API qtk_err qtk_stats_add_dataset(qtk_stats *s, const char *name, qtk_status *st);
QTK_API size_t qtk_stats_dataset_count(const qtk_stats *s);
QTK_API const char *qtk_stats_dataset(const qtk_stats *s, size_t i);

/* Add src into dst, weighted by token counts (sums add): a weight only in
 * src is copied; in both, cols must agree (QTK_E_ARG naming the weight),
 * and sum x / X^T X are kept only if both have them. Sets whose counts are
 * chunks (.dat) and sets whose counts are tokens do not mix (QTK_E_ARG). */
QTK_API qtk_err qtk_stats_merge(qtk_stats *dst, const qtk_stats *src, qtk_status *st);

/* Open a statistics file of any kind, told by its content (GGUF magic:
 * imatrix; a safetensors header: qtk; else a legacy .dat). Every value is
 * validated (finite, sums of squares >= 0, shapes, counts, X^T X
 * symmetric); on failure *out is NULL and st names file, weight and
 * problem. *kind (may be NULL) gets what was read. */
QTK_API qtk_err qtk_stats_open(const char *path, qtk_stats **out, qtk_stats_kind *kind,
                               qtk_status *st);
/* The same over a caller's buffer (copied from; name used in messages). */
QTK_API qtk_err qtk_stats_open_mem(const void *data, size_t size, const char *name,
                                   qtk_stats **out, qtk_stats_kind *kind, qtk_status *st);
/* Write s as kind (temporary name, fsync, rename). imatrix and .dat hold
 * only sum x^2 and counts, under the GGUF keys; a sum x^2 beyond F32's
 * range is an error, never Inf. */
QTK_API qtk_err qtk_stats_write(const qtk_stats *s, const char *path, qtk_stats_kind kind,
                                const qtk_write_opts *opts, qtk_status *st);

/* ===================================================================== */
/* MLX (formats/mlx_pack.c)                                               */
/* ===================================================================== */

/* MLX quantized linear: weight U32 [out, in*bits/32], element i of a row at
 * bits [bits*i, bits*(i+1)) of the row's little-endian bit stream; scales
 * and biases [out, in/group]; w = scales*q + biases, q unsigned. */

/* Pack cols unsigned codes (one per byte, low `bits` bits used; bits 1..8)
 * into cols*bits/32 words, and back. QTK_E_GG_LAYOUT if cols*bits is not a
 * multiple of 32. */
QTK_API qtk_err qtk_mlx_pack_bits(const uint8_t *q, size_t cols, unsigned bits,
                                  uint32_t *out, qtk_status *st);
QTK_API qtk_err qtk_mlx_unpack_bits(const uint32_t *in, size_t cols, unsigned bits,
                                    uint8_t *q, qtk_status *st);
/* The MLX affine form of a qtk layout: bits, and the offset added to the
 * signed code (int4: 8, int8: 128, affine: 0) so that bias = -offset*scale.
 * QTK_E_GG_LAYOUT with the reason for NF4, groups other than 32/64/128,
 * double quant, rows the group does not divide. */
QTK_API qtk_err qtk_mlx_form(const qtk_q_layout *L, uint64_t cols, unsigned *bits,
                             unsigned *offset, qtk_status *st);
/* qtk code plane rows (quant/qtk_quant.h convention) <-> MLX words
 * (nrows * cols*bits/32 values, host order; write little-endian). */
QTK_API qtk_err qtk_mlx_pack_codes(const qtk_q_layout *L, const void *codes, size_t nrows,
                                   size_t cols, uint32_t *out, qtk_status *st);
QTK_API qtk_err qtk_mlx_unpack_codes(const qtk_q_layout *L, const uint32_t *in, size_t nrows,
                                     size_t cols, void *codes, qtk_status *st);
/* MLX scales (the qtk scales, stored as F16, BF16 or F32, converted) and
 * biases for n groups in out_dtype (F16/BF16/F32): -offset*scale for
 * symmetric schemes (biases unused, may be NULL), the stored bias for
 * affine ones. QTK_E_Q_SCALE_RANGE if a finite value overflows out_dtype
 * (e.g. -128*scale beyond F16), QTK_E_GG_LAYOUT if one is not exact there
 * (an f16 scale that does not fit BF16). Never writes Inf for a finite
 * value. */
QTK_API qtk_err qtk_mlx_scales(const qtk_q_layout *L, const void *scales, size_t n,
                               qtk_dtype out_dtype, void *out, qtk_status *st);
QTK_API qtk_err qtk_mlx_biases(const qtk_q_layout *L, const void *scales, const void *biases,
                               size_t n, qtk_dtype out_dtype, void *out, qtk_status *st);

/* The MLX model directory (formats/mlx_dir.c), as mlx-lm writes one:
 * model.safetensors, or model-0000N-of-0000M.safetensors shards of at most
 * 5 GiB ($QTK_MLX_SHARD_BYTES overrides; whole tensors, greedily in order,
 * as mlx-lm's make_shards) plus model.safetensors.index.json; every shard
 * has the metadata {"format": "mlx"}. Built under a temporary name beside
 * PATH (qtk_outdir: a previous MLX output is replaced only with force) and
 * moved into place at commit; every file is fsync'd. */
typedef struct qtk_mlx_dir qtk_mlx_dir;
/* t: the n tensors in file order (copied). */
QTK_API qtk_err qtk_mlx_dir_open(qtk_mlx_dir **out, const char *path, const qtk_st_desc *t,
                                 size_t n, const qtk_write_opts *opts, qtk_status *st);
QTK_API const char *qtk_mlx_dir_path(const qtk_mlx_dir *d); /* PATH */
/* Bytes [off, off+len) of tensor i; disjoint ranges from any thread. */
QTK_API qtk_err qtk_mlx_dir_put(qtk_mlx_dir *d, size_t i, uint64_t off, const void *buf,
                                size_t len, qtk_status *st);
/* Finish the shards, write the index (several shards), config.json (the
 * len bytes of config_json) and copies of the tokenizer files of
 * copy_from (tokenizer.json, tokenizer_config.json, tokenizer.model,
 * special_tokens_map.json, generation_config.json: those present; NULL:
 * none), then move the directory into place. Frees d either way; on
 * failure PATH is as it was. */
QTK_API qtk_err qtk_mlx_dir_commit(qtk_mlx_dir *d, const char *config_json, size_t len,
                                   const char *copy_from, qtk_status *st);
QTK_API void qtk_mlx_dir_abort(qtk_mlx_dir *d); /* NULL is fine */

#ifdef __cplusplus
}
#endif
#endif /* QTK_FORMATS_H */
