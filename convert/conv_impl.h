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
	uint32_t gtype;           /* GGUF source: its ggml type */
	uint32_t blk_elems;       /* GGUF block types (Q8_0, Q4_0, Q4_1): elements */
	uint32_t blk_bytes;       /* and bytes per block; 0 for element types */
} src_tensor;

typedef struct {
	const char *path;         /* as opened */
	uint64_t size;
	uint64_t data_start;      /* bytes before the first tensor (header) */
	const uint8_t *base;      /* mapping of the file's start, if known */
} src_file;

typedef struct {
	const char *format;       /* "safetensors" or "gguf" */
	size_t n;
	src_tensor *t;
	size_t nfiles;
	src_file *files;
	const char *dir;          /* directory of the checkpoint */
	qtk_st_file *st;          /* safetensors input, or */
	qtk_gguf_file *gg;        /* GGUF input */
} src;

qtk_err src_open(src **out, const char *path, qtk_status *st);
void src_close(src *s);
/* Elements [elem0, elem0 + n) of a floating tensor as f32. */
qtk_err src_read_f32(const src *s, const src_tensor *t, uint64_t elem0,
                     uint64_t n, float *dst, qtk_status *st);
/* Tell the kernel the bytes [off, off+len) of t are consumed: drops them
 * from this process's resident set (they stay in the page cache). */
void src_release(const src_tensor *t, uint64_t off, uint64_t len);
/* Bytes of t's data holding elements [elem0, elem0 + n) (whole blocks for
 * block types: callers split those tensors on block boundaries). */
void src_span(const src_tensor *t, uint64_t elem0, uint64_t n, uint64_t *off,
              uint64_t *len);

/* ---- GGUF output (sink_gguf.c) ---------------------------------------- */

/* How one tensor goes into a GGUF file. */
typedef struct {
	char name[128];         /* GGUF tensor name */
	uint32_t type;          /* ggml type */
	int qk;                 /* LLaMA q (1) / k (2): rows are un-permuted */
	uint32_t n_head;        /* heads of that projection */
	int flat;               /* > 4 dims: stored as [rows][cols], the real
	                           shape in comfy.gguf.orig_shape.NAME */
} gguf_tensor_plan;

typedef struct {
	const char *model;      /* detected family or NULL */
	char arch[64];          /* GGUF input: its general.architecture */
	qtk_gguf_llama_hparams hp;
	int have_hp;
	qtk_gguf_kvs *kvs;
} gguf_plan;

/* Detect the model, gather KVs (architecture, llama.*, tokenizer, file
 * type) for a checkpoint in dir. */
qtk_err gguf_plan_begin(gguf_plan *g, const src *s, qtk_scheme_id main_scheme,
                        qtk_status *st);
void gguf_plan_end(gguf_plan *g);
/* Choose name and ggml type for tensor t; may change *L to what GGUF can
 * hold (F32 for 1-D and tiny tensors, F16 for rows the block does not
 * divide). Refuses layouts GGUF cannot hold, naming the tensor. */
qtk_err gguf_plan_tensor(gguf_plan *g, const src_tensor *t, qtk_q_layout *L,
                         gguf_tensor_plan *out, qtk_status *st);
/* Bytes of one row of cols elements of a ggml type. */
uint64_t gguf_row_bytes(uint32_t type, uint64_t cols);
/* Turn nrows quantized rows (qtk planes) into ggml blocks at dst. */
qtk_err gguf_pack_rows(uint32_t type, const qtk_q_cplanes *p, size_t nrows,
                       size_t cols, void *dst, qtk_status *st);

#endif
