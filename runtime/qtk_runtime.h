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
	void *ilv;                     /* the integer path's interleaved copy
	                                  (qtk_rt_interleave), or NULL */
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

/* Make t's row-interleaved copy for the integer path (docs/kernels.md,
 * "Interleaved weights"): int4, NF4 and int8 schemes with groups of 32 or
 * more, or whole rows. After it, qtk_rt_matmul on QTK_RT_INT8 reads only
 * the copy (the planes are not touched; QTK_RT_FLOAT and qtk_rt_row_f32
 * still read them), with its own order of operations: results differ from
 * the planes' integer kernels in the last bits, and are again the same on
 * every ISA, thread count and batch. Other layouts are left as they are
 * (QTK_OK, t->ilv stays NULL). pool (may be NULL) spreads the work.
 * QTK_E_NOMEM, QTK_E_OVERFLOW; the tensor's view is checked as by
 * qtk_rt_matmul. Tensors of qtk_rt_open's models are interleaved through
 * qtk_rt_model_interleave and freed by qtk_rt_close. */
QTK_API qtk_err qtk_rt_interleave(qtk_rt_tensor *t, qtk_rt_pool *pool, qtk_status *st);
/* Bytes of t's copy (0: none): what the integer path then reads. */
QTK_API uint64_t qtk_rt_interleaved_bytes(const qtk_rt_tensor *t);
/* Free t's copy (NULL and tensors without one are fine). */
QTK_API void qtk_rt_uninterleave(qtk_rt_tensor *t);
/* qtk_rt_interleave of m's tensor t (one of qtk_rt_get/find's). */
QTK_API qtk_err qtk_rt_model_interleave(qtk_rt_model *m, const qtk_rt_tensor *t,
                                        qtk_rt_pool *pool, qtk_status *st);

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


/* ===================================================================== */
/* Tokenizer (runtime/rt_tok*.c)                                          */
/* ===================================================================== */

/* A sentencepiece-style (SPM) vocabulary as LLaMA 1/2, Mistral and the
 * llama2.c models use, read from a sentencepiece tokenizer.model, a
 * llama2.c tokenizer.bin, a GGUF's tokenizer.ggml.* KVs (model "llama") or
 * a Hugging Face tokenizer.json of that kind (BPE with U+2581, merged by
 * rule rank as Hugging Face tokenizers does).
 * Encoding is llama.cpp's SPM tokenizer: ' ' becomes U+2581, a space is
 * put in front of the text, UTF-8 characters are merged pairwise by the
 * highest score of the merged piece (ties: leftmost), and characters no
 * piece covers become byte tokens <0xXX>. docs/model.md has the rules and
 * what is not supported. A qtk_tok is immutable after open: encode and
 * decode may run from several threads at once. */
typedef struct qtk_tok qtk_tok;

/* Token kinds: the values of sentencepiece and tokenizer.ggml.token_type. */
enum {
	QTK_TOK_NORMAL = 1, QTK_TOK_UNKNOWN = 2, QTK_TOK_CONTROL = 3,
	QTK_TOK_USER_DEFINED = 4, QTK_TOK_UNUSED = 5, QTK_TOK_BYTE = 6
};

/* qtk_tok_encode flags */
#define QTK_TOK_ADD_BOS 0x1u   /* put the BOS token first (if the vocabulary has one) */
#define QTK_TOK_ADD_EOS 0x2u   /* put the EOS token last (if the vocabulary has one) */
/* sentencepiece's remove_extra_whitespaces, when the tokenizer.model sets
 * it: drop leading and trailing ' ' and fold runs of ' ' into one before
 * encoding (sentencepiece does; llama.cpp does not, so the default not). */
#define QTK_TOK_SP_WHITESPACE 0x4u

/* Open PATH: a tokenizer.model, a tokenizer.bin, a .gguf or a
 * tokenizer.json, told by the name's extension, else by its first bytes. On failure *out is NULL and
 * st names the file and the problem. */
QTK_API qtk_err qtk_tok_open(const char *path, qtk_tok **out, qtk_status *st);
/* The vocabulary of an open GGUF (name is used in messages). The
 * tokenizer copies what it needs: f may be closed afterwards. */
QTK_API qtk_err qtk_tok_from_gguf(const qtk_gguf_file *f, const char *name, qtk_tok **out,
                                  qtk_status *st);
QTK_API void qtk_tok_close(qtk_tok *t); /* NULL is fine */

QTK_API size_t qtk_tok_count(const qtk_tok *t);
/* QTK_E_FORMAT naming the tokenizer file if it does not hold n_vocab tokens. */
QTK_API qtk_err qtk_tok_check_count(const qtk_tok *t, size_t n_vocab, qtk_status *st);
QTK_API int32_t qtk_tok_bos(const qtk_tok *t);   /* -1: none */
QTK_API int32_t qtk_tok_eos(const qtk_tok *t);   /* -1: none */
QTK_API int32_t qtk_tok_unk(const qtk_tok *t);   /* -1: none */
/* 1 if the vocabulary asks for BOS in front of a prompt (llama.cpp's
 * add_bos: tokenizer.ggml.add_bos_token, true for SPM by default). */
QTK_API int qtk_tok_wants_bos(const qtk_tok *t);
/* Piece i as stored (U+2581 for spaces; tokenizer.bin's ' ' are stored as
 * U+2581 too), its score and kind. NULL / 0 for an id out of range. */
QTK_API const char *qtk_tok_piece(const qtk_tok *t, int32_t id, size_t *len);
QTK_API float qtk_tok_score(const qtk_tok *t, int32_t id);
QTK_API int qtk_tok_type(const qtk_tok *t, int32_t id);
/* Id of the piece with exactly this text, -1 if none. */
QTK_API int32_t qtk_tok_find(const qtk_tok *t, const char *piece, size_t len);

/* Most tokens qtk_tok_encode can give for len bytes of text (any flags). */
QTK_API size_t qtk_tok_max_tokens(size_t len);
/* Tokenize text[0, len) (any bytes, not NUL-terminated) into ids[0, *n).
 * QTK_E_ARG if cap is too small (cap >= qtk_tok_max_tokens(len) always
 * suffices); QTK_E_UNSUPPORTED if a byte has neither a byte token nor an
 * <unk> to fall back to. O(len log len). */
QTK_API qtk_err qtk_tok_encode(const qtk_tok *t, const char *text, size_t len, unsigned flags,
                               int32_t *ids, size_t cap, size_t *n, qtk_status *st);

/* The bytes token id stands for when it follows token prev (-1: none), as
 * llama2.c prints a generated token: the piece with U+2581 as ' ', the raw
 * byte of a byte token, nothing for control, unknown and unused tokens;
 * when prev is BOS or -1 a leading space is dropped (the space encoding
 * put in front). Points into t; NULL (and *len 0) for an id out of range. */
QTK_API const char *qtk_tok_text(const qtk_tok *t, int32_t prev, int32_t id, size_t *len);
/* Decode ids into a NUL-terminated string (freed with qtk_free) as
 * sentencepiece does: qtk_tok_text of each token, with the leading space of
 * the first piece dropped when the vocabulary adds one in front. So
 * decode(encode(s)) == s, also for bytes that are not UTF-8. QTK_E_ARG for
 * an id out of range. */
QTK_API qtk_err qtk_tok_decode(const qtk_tok *t, const int32_t *ids, size_t n, char **text,
                               size_t *len, qtk_status *st);


/* ===================================================================== */
/* LLaMA-family language model (runtime/rt_lm*.c, docs/model.md)          */
/* ===================================================================== */

/* The decoder of LLaMA 1/2/3, Mistral and TinyLlama (and the llama2.c
 * models): token embedding, n_layer blocks of RMSNorm -> attention with
 * RoPE and GQA -> residual, RMSNorm -> SwiGLU MLP -> residual, a final
 * RMSNorm and the output head (or the embedding matrix, tied). */

/* RoPE pairing of a head's leading rope_dims dimensions. */
typedef enum {
	QTK_RT_ROPE_HALF = 0,        /* (i, i + rope_dims/2): Hugging Face's
	                                rotate_half on its permuted q/k rows */
	QTK_RT_ROPE_INTERLEAVED = 1  /* (2i, 2i+1): GGUF / Meta row order, as
	                                llama.cpp's LLaMA rope */
} qtk_rt_rope;

/* Tensor names a model file uses. */
typedef enum { QTK_RT_NAMES_HF = 0, QTK_RT_NAMES_GGUF = 1 } qtk_rt_names;

typedef struct {
	uint32_t n_embd;     /* hidden size */
	uint32_t n_layer;
	uint32_t n_head;     /* query heads */
	uint32_t n_head_kv;  /* key/value heads (GQA: n_head is a multiple) */
	uint32_t head_dim;   /* per head, for q, k and v */
	uint32_t n_ff;       /* SwiGLU inner size */
	uint32_t n_vocab;
	uint32_t n_ctx;      /* context length the model was trained for */
	uint32_t rope_dims;  /* leading dimensions of each head RoPE rotates */
	float rms_eps;       /* RMSNorm epsilon */
	float rope_theta;    /* RoPE base frequency */
	uint32_t window;     /* sliding-window attention span (Mistral); 0: none.
	                        Contexts longer than it are refused (not applied) */
	int tied;            /* the output head is the token embedding */
	qtk_rt_rope rope;    /* follows the names: HF -> HALF, GGUF -> INTERLEAVED */
	qtk_rt_names names;
} qtk_rt_lm_desc;

typedef struct qtk_rt_lm qtk_rt_lm;

/* Open a model: a .qtk file, a GGUF file (F32/F16/BF16/Q8_0/Q4_0/Q4_1
 * tensors), or a safetensors checkpoint (a file, a *.safetensors.index.json
 * or a directory) with its config.json. The description comes from the GGUF
 * llama.* KVs, the config.json beside the checkpoint, or the config a .qtk
 * file's metadata carries (for a .qtk made from a GGUF: the KVs of the
 * source GGUF its metadata records). Safetensors F32/F16/BF16 weights are
 * read in place (other float dtypes are widened to f32 at load). Every
 * weight is checked against the description (shape; a scheme the kernels
 * read). Errors name the file, the tensor or key, and the problem;
 * architectures other than LLaMA's (biases, other activations, rope
 * scaling) are QTK_E_UNSUPPORTED. On failure *out is NULL. */
QTK_API qtk_err qtk_rt_lm_open(const char *path, qtk_rt_lm **out, qtk_status *st);
QTK_API void qtk_rt_lm_close(qtk_rt_lm *lm); /* NULL is fine */
QTK_API const qtk_rt_lm_desc *qtk_rt_lm_describe(const qtk_rt_lm *lm);
/* Storage of the model's linear weights: "f32", "int4", ... or "mixed". */
QTK_API const char *qtk_rt_lm_scheme(const qtk_rt_lm *lm);
/* Parameters (elements of every weight the forward reads, the embedding
 * once when tied) and bytes of their storage. */
QTK_API uint64_t qtk_rt_lm_params(const qtk_rt_lm *lm, uint64_t *bytes);

/* The model's tokenizer: path if given (qtk_tok_open); else a GGUF's own
 * vocabulary; else tokenizer.model, tokenizer.json or tokenizer.bin (in
 * that order) beside the model, then (.qtk) beside the source checkpoint
 * its metadata records, or that source GGUF's vocabulary. QTK_E_NOT_FOUND
 * says where it looked. Fails if the vocabulary has more tokens than the
 * model's embedding has rows. */
QTK_API qtk_err qtk_rt_lm_tokenizer(const qtk_rt_lm *lm, const char *path, qtk_tok **out,
                                    qtk_status *st);

/* A running context: the KV cache (f32) and the activation buffers for
 * up to n_batch tokens per step. Many contexts may share one model. */
typedef struct qtk_rt_lm_ctx qtk_rt_lm_ctx;

/* Called with the input of every matrix product, before it runs:
 * weight is the tensor's name in the model file (the output head's input,
 * the final norm's output, comes under the embedding's name when the head
 * is tied), x [n][cols] row-major, one row per token of the step. The
 * three products that read one input (q, k, v; gate, up) are called one
 * after the other with the same x pointer. x is valid during the call. */
typedef void (*qtk_rt_lm_hook)(void *user, const char *weight, const float *x, size_t n,
                               size_t cols);

typedef struct {
	uint32_t n_ctx;        /* positions the cache holds (0: the model's n_ctx) */
	uint32_t n_batch;      /* tokens per step (0: min(512, n_ctx)) */
	qtk_rt_path path;      /* activation path of quantized weights */
	qtk_rt_pool *pool;     /* borrowed; NULL: the context makes one of
	                          `threads` threads (0: all online CPUs) */
	unsigned threads;
	qtk_rt_lm_hook hook;   /* NULL: none */
	void *hook_user;
} qtk_rt_lm_opts;

QTK_API qtk_err qtk_rt_lm_ctx_new(const qtk_rt_lm *lm, const qtk_rt_lm_opts *o,
                                  qtk_rt_lm_ctx **out, qtk_status *st);
QTK_API void qtk_rt_lm_ctx_free(qtk_rt_lm_ctx *c); /* NULL is fine */
QTK_API uint32_t qtk_rt_lm_ctx_size(const qtk_rt_lm_ctx *c); /* n_ctx */
QTK_API const qtk_rt_lm *qtk_rt_lm_ctx_model(const qtk_rt_lm_ctx *c);

/* Run tokens[0, n) at positions pos .. pos+n-1: the cache must hold
 * positions 0 .. pos-1 of the same sequence (pos = 0 starts a new one),
 * and pos + n <= n_ctx. The logits of the last n_logits tokens (0 <=
 * n_logits <= n) go to logits [n_logits][n_vocab]. Steps of n_batch tokens
 * (prompt processing as matrix-matrix products); n = 1 is one generation
 * step. The result does not depend on the thread count. QTK_E_ARG for a
 * token id outside the vocabulary (naming it) or a position past n_ctx. */
QTK_API qtk_err qtk_rt_lm_forward(qtk_rt_lm_ctx *c, const int32_t *tokens, size_t n,
                                  size_t pos, float *logits, size_t n_logits,
                                  qtk_status *st);

/* Each of tokens[0, n) as a sequence of its own, alone at position 0 (its
 * attention is its own value vector), run n_batch at a time as matrix
 * products; the cache is not touched. logits: NULL, or [n][n_vocab]. The
 * hook sees each product's inputs, one row per token. For statistics of
 * the model alone (qtk calibrate --vocab). */
QTK_API qtk_err qtk_rt_lm_forward_each(qtk_rt_lm_ctx *c, const int32_t *tokens, size_t n,
                                       float *logits, qtk_status *st);

/* ---- evaluation (runtime/rt_eval.c) ----------------------------------- */

typedef struct {
	uint32_t ctx;      /* window length in tokens (>= 2) */
	int half;          /* 0: score every position after the first of each
	                      window (the last, shorter window too);
	                      1: llama-perplexity: whole windows only, the
	                      second half of each scored */
	int32_t bos;       /* put in each window's first position (-1: leave) */
	/* called after each window (may be NULL) */
	void (*progress)(void *user, size_t window, size_t windows);
	void *user;
} qtk_rt_eval_opts;

typedef struct {
	uint64_t windows, scored;  /* windows run, positions scored */
	/* the model: perplexity exp(mean NLL), ± as llama-perplexity prints it
	 * (ppl * standard error of the mean NLL) */
	double ppl, ppl_err, nll;
	/* against a reference (zero without one): its perplexity; KL
	 * divergence KL(ref || model) per position: mean ± standard error,
	 * median, 99th percentile (linear between sorted values, as
	 * llama-perplexity), maximum; top-1: fraction of positions whose most
	 * likely token is the same (±); RMS of the change in the probability
	 * of the actual next token (±); RMS of the logit differences over all
	 * positions and the whole vocabulary; ln(ppl / ref_ppl) ± */
	double ref_ppl, ref_ppl_err;
	double kld_mean, kld_err, kld_median, kld_p99, kld_max;
	double top1, top1_err;
	double dp_rms, dp_rms_err;
	double logit_rms;
	double ln_ratio, ln_ratio_err;
} qtk_rt_eval_result;

/* Perplexity of model over ids[0, n) (the text tokenized once, BOS first
 * if the vocabulary wants one) in consecutive windows of o->ctx tokens,
 * each a new sequence; with ref (another context over a model of the same
 * vocabulary size), the KL divergence and the rest of the result. Both
 * contexts need n_ctx >= o->ctx. QTK_E_ARG when the text has fewer tokens
 * than one window needs (2 for all, ctx for half). */
QTK_API qtk_err qtk_rt_eval(qtk_rt_lm_ctx *model, qtk_rt_lm_ctx *ref, const int32_t *ids,
                            size_t n, const qtk_rt_eval_opts *o, qtk_rt_eval_result *r,
                            qtk_status *st);

/* sgemm and dgemm through OpenBLAS, for qtk_gptq_prepare and
 * qtk_gptq_quantize (threads: as OpenBLAS is set; the caller decides). */
QTK_API const qtk_gemm *qtk_rt_gemm_blas(void);

#ifdef __cplusplus
}
#endif
#endif /* QTK_RUNTIME_H */
