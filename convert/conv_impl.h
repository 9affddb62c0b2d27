/* convert (private): the two sides of the pipeline — sources (one view of
 * the tensors of a checkpoint, whatever its file format) and sinks (where
 * converted tensors go: .qtk, GGUF, MLX, memory). */
#ifndef QTK_CONV_IMPL_H
#define QTK_CONV_IMPL_H

#include <string.h>

#include "qtk_convert.h"

/* The float-storage scheme of dt: quant's row that stores dt, else the
 * one that stores F32 (F8 and the like widen to it exactly). */
static inline qtk_scheme_id conv_float_scheme(qtk_dtype dt)
{
	int id = qtk_q_scheme_float(dt);

	return (qtk_scheme_id)(id >= 0 ? id : qtk_q_scheme_float(QTK_DT_F32));
}

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
	uint32_t gtype;           /* GGUF source: its ggml type */
	uint32_t blk_elems;       /* GGUF block types (Q8_0, Q4_0, Q4_1): elements */
	uint32_t blk_bytes;       /* and bytes per block; 0 for element types */
	const qtk_q_layout *stored; /* .qtk source: how it is stored, else NULL */
	uint8_t rows_only;        /* reads f32 in whole rows only (stored codes) */
	uint8_t keep_pages;       /* data is no mapping of source bytes to drop */
	uint8_t staged;           /* its values read with pread through a stage */
	uint8_t preadable;        /* its bytes can be (src_read_raw) */
} src_tensor;

typedef struct {
	const char *path;         /* as opened */
	uint64_t size;
	uint64_t data_start;      /* bytes before the first tensor (header) */
	const uint8_t *base;      /* mapping of the file's start, if known */
	int fd;                   /* the reader's descriptor of it, or -1 */
} src_file;

typedef struct {
	const char *format;       /* "safetensors", "gguf" or "qtk" */
	const char *path;         /* the file read: the input, or the file
	                             picked in an input directory */
	size_t n;
	src_tensor *t;
	size_t nfiles;
	src_file *files;
	const char *dir;          /* directory of the checkpoint */
	qtk_st_file *st;          /* safetensors input, or */
	qtk_gguf_file *gg;        /* GGUF input */
	qtk_model_desc *desc;     /* config.json, parsed once (src_model_desc) */
	int desc_done;
	/* the config's text, read once (src_model_desc, src_config_object) */
	int cfg_done;
	qtk_err cfg_rc;           /* of reading it (QTK_E_NOT_FOUND: none) */
	qtk_status cfg_st;
	char *cfg_text;
	size_t cfg_len;
	char cfg_where[4200];     /* the file, or "X.qtk: metadata config" */
	/* ---- a .qtk input (source_qtk.c): tensors carry stored layouts ---- */
	struct src_qtk *qtk;      /* its state, or NULL */
	const char *config_json;  /* the recorded config, when dir has no
	                             config.json (desc and MLX config from it) */
	const char *recorded;     /* the .qtk's metadata (JSON), or NULL */
	int has_main;             /* the recorded recipe's main scheme and */
	qtk_scheme_id main_scheme;/*   group (0: none) replace the run's */
	uint32_t main_group;
	int search;               /* the recorded --search (requantizing) */
	uint64_t serial;          /* this source among those opened (staged reads) */
} src;

qtk_err src_open(src **out, const char *path, qtk_status *st);
/* The files qtk may read beside a checkpoint in dir (config.json, tokenizer
 * files): each that exists must be a regular file. Checked when the input is
 * opened, so that a FIFO there fails at once, not when it is read. */
qtk_err src_check_side_files(const char *dir, qtk_status *st);
void src_close(src *s);

/* .qtk input (source_qtk.c). */
int src_is_qtk(const char *path);
qtk_err src_open_qtk(src *s, const char *path, qtk_status *st);
/* path as a .qtk whatever it holds (formats' reader says what is wrong). */
qtk_err src_open_qtk_file(src **out, const char *path, qtk_status *st);
void src_qtk_close(struct src_qtk *q); /* NULL is fine */
qtk_err src_qtk_read_f32(const src_tensor *t, uint64_t elem0, uint64_t n, float *dst,
                         qtk_status *st);
/* The stored planes of a .qtk source's tensor ([QTK_PLANE_MAX], NULL where
 * empty), valid until the source is closed. */
const void *const *src_stored_planes(const src_tensor *t);
/* The tensor of the recorded source checkpoint that tensor i of the .qtk
 * source s was made from (--requantize). The checkpoint is opened on the
 * first call and checked (each file's size and crc32 as recorded); the
 * tensor must have the recorded dtype and element count. */
qtk_err src_origin_tensor(src *s, size_t i, const src **os, const src_tensor **ot,
                          qtk_status *st);
const src *src_origin(const src *s); /* the one opened, or NULL */
/* The model's config is read once, here, for every consumer: dir/config.json,
 * or a .qtk's recorded config when its directory has none. */
/* Its model description, parsed on the first call (present = 0 when there
 * is no config). QTK_E_FORMAT when it is not JSON, QTK_E_IO, QTK_E_NOMEM. */
qtk_err src_model_desc(src *s, const qtk_model_desc **d, qtk_status *st);
/* The config as a JSON object to copy (a new reference; *obj NULL when
 * there is none, it cannot be read, or it is not an object). Only
 * QTK_E_NOMEM fails. Call under a jansson guard (qtk_json_begin). */
struct json_t;
qtk_err src_config_object(src *s, struct json_t **obj, qtk_status *st);
/* Elements [elem0, elem0 + n) of a floating tensor as f32. */
qtk_err src_read_f32(const src *s, const src_tensor *t, uint64_t elem0,
                     uint64_t n, float *dst, qtk_status *st);
/* The same; *crc (when crc is not NULL) folds in the crc32 of their source
 * bytes, and the source may read ahead up to element upto (the rest of the
 * caller's extent; upto <= elem0 + n: no further than asked). */
qtk_err src_read_f32_at(const src *s, const src_tensor *t, uint64_t elem0, uint64_t n,
                        uint64_t upto, float *dst, uint32_t *crc, qtk_status *st);
/* Bytes of t from byte off, up to byte upto at most, through this
 * thread's read stage (t->preadable): *p points at them in the stage,
 * *len says how many (at least one; fewer than asked where the stage
 * ends; valid until this thread's next read). */
qtk_err src_read_raw(const src *s, const src_tensor *t, uint64_t off, uint64_t upto,
                     const uint8_t **p, size_t *len, qtk_status *st);
/* Tell the kernel the bytes [off, off+len) of t are consumed: drops them
 * from this process's resident set (they stay in the page cache). */
void src_release(const src_tensor *t, uint64_t off, uint64_t len);
/* The bytes [off, off+len) of t will be read now: map them in one call,
 * or (read with pread) start the whole range's readahead. */
void src_prefault(const src *s, const src_tensor *t, uint64_t off, uint64_t len);
/* Bytes of t's data holding elements [elem0, elem0 + n) (whole blocks for
 * block types: callers split those tensors on block boundaries). */
void src_span(const src_tensor *t, uint64_t elem0, uint64_t n, uint64_t *off,
              uint64_t *len);

/* ---- the pipeline (pipeline.c) ---------------------------------------- */

/* What qtk_export adds to a conversion. */
typedef struct {
	int qtk_only;           /* the input must be a .qtk */
	/* called with the report before the output is committed (seconds
	 * not yet set); a failure drops the output */
	qtk_err (*before_commit)(void *ctx, const qtk_conv_report *rep, qtk_status *st);
	void *ctx;
} conv_hooks;

/* Tests: 1 makes every worker keep a finished item back whenever it can
 * (pipe_work.c's put_item), 0 only when another is putting. */
void conv_defer_puts(int always);

/* qtk_convert, with hooks (NULL: none). */
qtk_err conv_run(const qtk_conv_opts *o, const conv_hooks *h, qtk_conv_report **rep,
                 qtk_status *st);

/* ---- sinks: where the pipeline's tensors go ---------------------------- */

/* A worker's scratch buffer a sink may grow (GGUF block packing). */
typedef struct {
	void *p;
	size_t cap;
} sink_scratch;

/* The output side of a conversion, whatever the format: the pipeline
 * opens, puts and commits or aborts through these and never asks which
 * sink it has. Tensors are described as in a .qtk file (qtk_pack_desc,
 * the layouts the planners settled). */
typedef struct {
	/* ---- planning, tensor by tensor in order, every pass ---- */
	/* Change *L to what the sink holds, or refuse it naming the tensor.
	 * *auto_store / *auto_scales: the narrow float type / the scale dtype
	 * is qtk's pick (widened to F32 when a value does not fit); the sink
	 * may set or clear them. NULL: the sink holds every layout. */
	qtk_err (*plan)(void *ctx, size_t i, const src_tensor *t, qtk_q_layout *L,
	                int *auto_store, int *auto_scales, int scale_dtype_set, qtk_status *st);
	/* Tensor i's scales and biases go in F32 (a value fallback); NULL. */
	qtk_err (*scales_f32)(void *ctx, size_t i, qtk_status *st);
	/* Bytes tensor i takes in the output; NULL or 0: its planes' sizes. */
	uint64_t (*out_bytes)(void *ctx, size_t i, uint64_t rows, uint64_t cols);
	/* Output row r of tensor i is source row row_src(r) (GGUF's LLaMA q/k
	 * un-permutation) when gathered(i); NULL: rows in source order. */
	int (*gathered)(void *ctx, size_t i);
	uint64_t (*row_src)(void *ctx, size_t i, uint64_t r, uint64_t rows);
	int keeps_blocks;       /* holds kept ggml block tensors as they are;
	                           other sinks get their exact f32 values */
	int mlx_affine;         /* its affine layouts default to MLX's rule */
	int records_crc;        /* the metadata it keeps records the source's
	                           crc32s (GGUF and MLX have no place for them) */
	/* ---- writing ---- */
	qtk_err (*open)(void *ctx, const char *path, const qtk_pack_desc *d, size_t n,
	                const qtk_write_opts *wo, qtk_status *st);
	/* Bytes [off, off+len) of tensor i kept as they are (raw layouts). */
	qtk_err (*put_bytes)(void *ctx, size_t i, uint64_t off, const void *buf, size_t len,
	                     qtk_status *st);
	/* nrows rows of cols elements from element elem0 (a row start), or with
	 * flat set one run of cols elements of a float store at elem0. */
	qtk_err (*put_rows)(void *ctx, size_t i, const qtk_q_layout *L, const qtk_q_cplanes *p,
	                    uint64_t elem0, size_t nrows, size_t cols, int flat,
	                    sink_scratch *sc, qtk_status *st);
	/* Bytes [off, off+len) of one plane (the double-quantization pass);
	 * NULL for sinks whose planners refuse double quantization. */
	qtk_err (*put_plane)(void *ctx, size_t i, int plane, uint64_t off, const void *buf,
	                     size_t len, qtk_status *st);
	/* Make the output whole (metadata_json: the run's metadata) and give
	 * it up; on failure the output is as it was. */
	qtk_err (*commit)(void *ctx, const char *metadata_json, qtk_status *st);
	void (*abort)(void *ctx); /* drop what was put; NULL-state is fine */
	/* put_rows converts values (MLX scales): a value it cannot hold comes
	 * back as QTK_E_Q_SCALE_RANGE / QTK_E_GG_LAYOUT, and rows are put even
	 * on a pass whose output is dropped, to find them all */
	int checks_values;
	/* ---- a .qtk source: a stored layout plan did not keep ---- */
	/* Tensor i's stored layout (t->stored) was refused by plan (plan_msg,
	 * its message) or, plan_msg NULL, changed by it to *L, which does not
	 * hold the stored values exactly. Say why in why[nwhy]. Without
	 * requantize refuse, naming the tensor; with it, set and plan *L, the
	 * layout to requantize to from the recorded source: wider (F32) when
	 * widen says a first pass met a value its narrow types cannot hold.
	 * NULL: plan keeps every stored layout. */
	qtk_err (*requant)(void *ctx, size_t i, const src_tensor *t, const char *plan_msg,
	                   int requantize, int widen, qtk_q_layout *L, char *why, size_t nwhy,
	                   qtk_status *st);
	/* A stored layout it keeps but whose scales it converts (MLX: to the
	 * model's dtype): *ok = 0 when some value would not survive, so the
	 * planner asks for F32 scales (scales_f32) before writing instead of
	 * finding out in a first pass. NULL: nothing to check. */
	qtk_err (*check_scales)(void *ctx, size_t i, const qtk_q_layout *L,
	                        const qtk_q_cplanes *p, uint64_t rows, uint64_t cols, int *ok,
	                        qtk_status *st);
} sink_ops;

typedef struct {
	const sink_ops *ops;
	void *ctx;
} sink;

/* What a sink is made from: the opened source and the recipe's main
 * scheme and group (GGUF file type, MLX "quantization" entry). */
typedef struct {
	src *s;
	qtk_scheme_id main_scheme;
	uint32_t main_group;
	int exact;              /* the source holds stored layouts (a .qtk):
	                           refuse a layout rather than change it */
	qtk_mem_model **memory; /* the in-memory sink's place for the model */
} sink_args;

/* The sink of format f (sinks.c: one table; the only place that asks). */
qtk_err sink_new(sink *k, qtk_out_format f, const sink_args *a, qtk_status *st);
int sink_needs_path(qtk_out_format f); /* it writes to an output path */

/* A planner's message without its leading "tensor 'NAME': ". */
static inline const char *conv_reason(const char *msg)
{
	const char *p = !strncmp(msg, "tensor '", 8) ? strstr(msg, "': ") : NULL;
	return p ? p + 3 : msg;
}

/* .qtk file (sink_qtk.c). */
qtk_err sink_qtk_new(sink *k, const sink_args *a, qtk_status *st);
/* In memory (sink_mem.c): the tensors go to *out on commit. */
qtk_err sink_mem_new(sink *k, const sink_args *a, qtk_status *st);

/* ---- GGUF output (sink_gguf.c) ---------------------------------------- */

/* How one tensor goes into a GGUF file. */
typedef struct {
	char name[128];         /* GGUF tensor name */
	uint32_t type;          /* ggml type */
	int qk;                 /* LLaMA q (1) / k (2): rows are un-permuted */
	uint32_t n_head;        /* heads of that projection */
	int flat;               /* > 4 dims: stored as [rows][cols], the real
	                           shape in comfy.gguf.orig_shape.NAME */
	int fallback;           /* F16 chosen by the planner for rows the block
	                           does not divide (F32 when a value needs it) */
} gguf_tensor_plan;

typedef struct {
	const qtk_model_family *fam; /* detected family (GGUF input: of its
	                                architecture) or NULL */
	char arch[64];          /* GGUF input: its general.architecture */
	qtk_gguf_llama_hparams hp;
	int have_hp;
	qtk_gguf_kvs *kvs;
} gguf_plan;

/* Detect the model, gather KVs (architecture, llama.*, tokenizer, file
 * type) for a checkpoint in dir. */
qtk_err gguf_plan_begin(gguf_plan *g, src *s, qtk_scheme_id main_scheme,
                        qtk_status *st);
void gguf_plan_end(gguf_plan *g);
/* Choose name and ggml type for tensor t; may change *L to what GGUF can
 * hold (F32 for 1-D and tiny tensors, F16 for rows the block does not
 * divide: out->fallback, widened to F32 by the caller when a value does
 * not fit). Refuses layouts GGUF cannot hold, naming the tensor. */
qtk_err gguf_plan_tensor(gguf_plan *g, const src_tensor *t, qtk_q_layout *L,
                         gguf_tensor_plan *out, qtk_status *st);
/* Bytes of one row of cols elements of a ggml type. */
uint64_t gguf_row_bytes(uint32_t type, uint64_t cols);
/* The GGUF sink: plans names, types and KVs, packs blocks, writes. */
qtk_err sink_gguf_new(sink *k, const sink_args *a, qtk_status *st);

/* ---- MLX output (sink_mlx.c) ------------------------------------------ */

/* The MLX sink: plans weight/scales/biases and the config's
 * "quantization"; formats' MLX directory writer writes them. */
qtk_err sink_mlx_new(sink *k, const sink_args *a, qtk_status *st);

#endif
