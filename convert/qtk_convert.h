/* convert: the conversion pipeline behind `qtk convert` and `qtk export`:
 * checkpoint in, packed (or GGUF / MLX) file out, streaming with bounded
 * memory across threads. The `qtk` command line lives beside it. */
#ifndef QTK_CONVERT_H
#define QTK_CONVERT_H

#include "qtk_runtime.h" /* qtk_rt_path: the activation path of verify --against */

#ifdef __cplusplus
extern "C" {
#endif

/* ===================================================================== */
/* Recipes: which tensor is stored how                                    */
/* ===================================================================== */

typedef enum {
	QTK_ACT_KEEP = 0,   /* source precision, bytes as they are */
	QTK_ACT_STORE = 1,  /* the rule's scheme (and group) */
	QTK_ACT_WIDER = 2,  /* one step wider than the main scheme */
} qtk_rule_action;

#define QTK_RULE_MAIN_GROUP UINT32_MAX /* rule uses the main --group */

/* One rule; the first rule that matches a tensor decides. */
typedef struct {
	const char *pattern;    /* glob on the tensor name ('*' crosses dots) */
	int ndim;               /* -1 any, else the exact rank */
	uint64_t min_elems;     /* match only if nelem >= min_elems */
	uint64_t max_elems;     /* ... and nelem <= max_elems */
	qtk_rule_action action;
	qtk_scheme_id scheme;   /* for QTK_ACT_STORE */
	uint32_t group;         /* for QTK_ACT_STORE, or QTK_RULE_MAIN_GROUP */
	const char *origin;     /* where it came from: "--set", "preset flux" */
} qtk_rule;

typedef struct qtk_recipe qtk_recipe;

/* The main scheme and group apply to every tensor no rule claims. */
QTK_API qtk_err qtk_recipe_new(qtk_recipe **out, qtk_scheme_id scheme,
                               uint32_t group, qtk_status *st);
QTK_API void qtk_recipe_free(qtk_recipe *r);
/* Append a rule (copied). */
QTK_API qtk_err qtk_recipe_add(qtk_recipe *r, const qtk_rule *rule, qtk_status *st);
/* "--set PATTERN=SCHEME[:GROUP]" / "--keep PATTERN". */
QTK_API qtk_err qtk_recipe_add_set(qtk_recipe *r, const char *spec, qtk_status *st);
QTK_API qtk_err qtk_recipe_add_keep(qtk_recipe *r, const char *pattern, qtk_status *st);
/* Rules of a JSON recipe file (docs/recipes.md). A "scheme"/"group" at the
 * top level replaces the main ones unless *_from_cli says they were given. */
QTK_API qtk_err qtk_recipe_load(qtk_recipe *r, const char *path, int scheme_from_cli,
                                int group_from_cli, qtk_status *st);
/* Rules of a preset ("mixed", "flux", "wan", "ltxv", "none"). */
QTK_API qtk_err qtk_recipe_add_preset(qtk_recipe *r, const char *name, qtk_status *st);
/* The main scheme and group (after a recipe file may have set them). */
QTK_API qtk_scheme_id qtk_recipe_main_scheme(const qtk_recipe *r);
QTK_API uint32_t qtk_recipe_main_group(const qtk_recipe *r);
/* Names of the shipped presets, NULL-terminated. */
QTK_API const char *const *qtk_recipe_presets(void);
/* Model family from tensor names: "flux", "wan", "ltxv", "llama", "gpt2"
 * or NULL. names: n tensor names. */
QTK_API const char *qtk_detect_model(const char *const *names, size_t n);
/* The same for a checkpoint on disk (safetensors file, index or directory,
 * or GGUF, whose general.architecture is used when it names a known family).
 * *model is NULL when nothing is recognised. */
QTK_API qtk_err qtk_detect_model_path(const char *input, const char **model,
                                      qtk_status *st);
/* The recipe as JSON text (for the output's metadata); caller frees.
 * NULL: out of memory. */
QTK_API char *qtk_recipe_json(const qtk_recipe *r);

/* The decision for one tensor. */
typedef struct {
	qtk_q_layout layout;
	const char *origin;     /* the rule that decided, or "default: ..." */
	int wider;              /* a "wider" rule: its float type is qtk's pick,
	                           widened to F32 when a value does not fit */
} qtk_decision;

/* Decide how a tensor of this name/dtype/shape is stored. Integer and BOOL
 * tensors are always kept; the defaults keep 1-D tensors, tensors of at
 * most 1024 elements and rows shorter than 32. */
QTK_API qtk_err qtk_recipe_decide(const qtk_recipe *r, const char *name,
                                  qtk_dtype dtype, uint32_t ndim,
                                  const uint64_t *shape, qtk_decision *d,
                                  qtk_status *st);

/* ===================================================================== */
/* Conversion                                                             */
/* ===================================================================== */

/* QTK_OUT_MEMORY: no file; the quantized tensors go to the caller
 * (qtk_conv_opts.memory) for the runtime, parity checks, calibration. */
typedef enum {
	QTK_OUT_QTK = 0, QTK_OUT_GGUF = 1, QTK_OUT_MLX = 2, QTK_OUT_MEMORY = 3
} qtk_out_format;

/* One converted tensor held in memory: its planes as a .qtk file stores
 * them (quant/qtk_quant.h; raw layouts: the source bytes in CODES). */
typedef struct {
	char *name;
	uint32_t ndim;
	uint64_t shape[QTK_MAX_DIMS];
	qtk_dtype src_dtype;
	qtk_q_layout layout;
	uint64_t rows, cols;           /* the 2-D view the layout applies to */
	void *planes[QTK_PLANE_MAX];   /* NULL where the size is 0 */
	uint64_t sizes[QTK_PLANE_MAX];
} qtk_mem_tensor;

typedef struct {
	size_t n;
	qtk_mem_tensor *t;
	char *metadata_json;           /* what a .qtk file would record */
} qtk_mem_model;

QTK_API void qtk_mem_model_free(qtk_mem_model *m); /* NULL is fine */

typedef struct {
	const char *input;          /* .safetensors, index.json or directory;
	                               GGUF; .qtk (see requantize) */
	const char *output;
	qtk_out_format format;
	const qtk_recipe *recipe;
	qtk_dtype scale_dtype;      /* F16 default */
	int scale_dtype_set;        /* 1: the user chose scale_dtype, so a scale or
	                               bias it cannot hold fails the conversion;
	                               0: qtk's default, widened to F32 for that
	                               tensor (reported) */
	uint32_t qflags;            /* QTK_QF_DOUBLE_QUANT */
	int affine_rule;            /* int4/int8-affine parameters: 0 = MLX's rule
	                               for --format mlx, ggml's Q4_1 rule otherwise;
	                               1 = ggml's; 2 = MLX's (QTK_QF_MLX_AFFINE) */
	int search;                 /* data-free scale search */
	const char *calib;          /* statistics file (docs/calibration.md) or NULL */
	int calib_gptq;             /* --calib-mode gptq (else weighted) */
	qtk_gptq_opts gptq;         /* its options (qtk_gptq_opts_init) */
	int gptq_damp_set;          /* 0: gptq.damp is the default, which
	                               statistics of the vocabulary alone
	                               (`qtk calibrate --vocab`) replace by 1
	                               (docs/calibration.md) */
	int threads;                /* 0 = all cores */
	uint64_t chunk_elems;       /* 0 = default (1M elements) */
	int dry_run;
	int force;
	/* progress callback (tensors done, total, source bytes done, total) */
	void (*progress)(void *ctx, size_t done, size_t total, uint64_t bytes_done,
	                 uint64_t bytes_total, const char *tensor);
	void *progress_ctx;
	const volatile int *cancel; /* set non-zero to stop (signal handlers) */
	qtk_mem_model **memory;     /* QTK_OUT_MEMORY: gets the tensors */
	/* A .qtk input keeps its stored layouts (the recipe and the options
	 * above that choose layouts do not apply; recipe may be NULL): a
	 * stored tensor the output holds goes over as it is, else its values
	 * in F32 where that is exact, else with requantize it is quantized
	 * again from the source checkpoint its metadata records; without,
	 * the conversion is refused naming the tensor. */
	int requantize;
} qtk_conv_opts;

/* A .qtk input: where a tensor's output came from. */
typedef enum {
	QTK_FROM_SOURCE = 0,        /* a checkpoint's values (not a .qtk input) */
	QTK_FROM_STORED = 1,        /* the stored planes (or bytes), carried over */
	QTK_FROM_DEQUANT = 2,       /* the stored values, in a wider float (exact) */
	QTK_FROM_REQUANT = 3,       /* requantized from the recorded source */
} qtk_conv_from;

/* What happened to one tensor. */
typedef struct {
	char *name;
	qtk_dtype src_dtype;
	uint32_t ndim;
	uint64_t shape[QTK_MAX_DIMS];
	qtk_q_layout layout;
	const char *origin;
	uint64_t src_bytes, out_bytes;
	int has_metrics;
	qtk_q_metrics m;
	uint64_t flushed;           /* nonzero values stored as zero (qtk_q_opts) */
	const char *calib;          /* with --calib, for quantized weights: "gptq",
	                               "weighted", or "none" (no statistics: the
	                               data-free search); else NULL */
	qtk_conv_from from;         /* a .qtk input: where the output came from */
	char *requant_why;          /* QTK_FROM_REQUANT: why the output could not
	                               hold the stored layout; else NULL */
	char *fallback;             /* NULL, or why a narrow type qtk had chosen
	                               (GGUF's F16 for rows the block does not
	                               divide, default F16 scales, MLX scales in
	                               the model dtype, a "wider" F16) was widened
	                               to F32 for this tensor */
} qtk_conv_tensor;

typedef struct {
	size_t ntensors;
	qtk_conv_tensor *tensors;   /* in output order */
	uint64_t src_bytes, out_bytes;
	uint64_t nparams;
	double seconds;
	int threads;
	const char *model;          /* detected family or NULL */
	char *metadata_json;        /* what was stored in the output */
	char *resolved;             /* the file read: the input, or the file
	                               picked in an input directory */
	double calib_damp;          /* --calib-mode gptq: the damping used, else 0 */
	int calib_vocab;            /* the statistics are of the vocabulary alone */
} qtk_conv_report;

/* Run (or with dry_run, only plan) a conversion. *rep is filled on success
 * and on a dry run; free with qtk_conv_report_free. On failure the output
 * path is as it was. */
QTK_API qtk_err qtk_convert(const qtk_conv_opts *o, qtk_conv_report **rep,
                            qtk_status *st);
QTK_API void qtk_conv_report_free(qtk_conv_report *rep);

/* ===================================================================== */
/* Export: a .qtk file repacked as GGUF or MLX (qtk_convert of a .qtk)   */
/* ===================================================================== */

typedef struct {
	const char *input;          /* the .qtk file */
	const char *output;         /* GGUF file or MLX directory */
	qtk_out_format format;      /* QTK_OUT_GGUF or QTK_OUT_MLX */
	int requantize;             /* requantize what the target cannot hold
	                               exactly, from the recorded source */
	int threads;                /* 0 = all cores */
	int force;
	const volatile int *cancel;
	/* progress, as qtk_conv_opts.progress (NULL: none) */
	void (*progress)(void *ctx, size_t done, size_t total, uint64_t bytes_done,
	                 uint64_t bytes_total, const char *tensor);
	void *progress_ctx;
} qtk_export_opts;

typedef struct {
	size_t ntensors;
	size_t exact;               /* stored codes / bytes carried over */
	size_t widened;             /* stored values written in a wider float */
	size_t nrequantized;
	char **requantized;         /* [nrequantized] tensor names */
	char **reasons;             /* [nrequantized] why */
	char **notes;               /* [nrequantized] NULL, or why a value that did
	                               not fit the requantized layout's F16/BF16
	                               sent it to F32 (GGUF: the tensor; MLX:
	                               scales and biases) */
	uint64_t *flushed;          /* [nrequantized] nonzero values stored as zero */
	double seconds;
	int threads;
} qtk_export_report;

/* Repack; on failure the output path is as it was and *rep is NULL. */
QTK_API qtk_err qtk_export(const qtk_export_opts *o, qtk_export_report **rep,
                           qtk_status *st);
QTK_API void qtk_export_report_free(qtk_export_report *rep);

/* ===================================================================== */
/* Verify against the source: weight and layer-output error per tensor    */
/* ===================================================================== */

#define QTK_VERIFY_BATCH 64u   /* input vectors per tensor by default */

typedef struct {
	const char *file;           /* .qtk or GGUF file to check */
	const char *source;         /* the checkpoint it was made from: safetensors
	                               (file, index, directory) or GGUF */
	const char *inputs;         /* activation statistics file (llama.cpp
	                               imatrix GGUF), or NULL: X ~ N(0, 1) */
	uint32_t batch;             /* input vectors; 0 = QTK_VERIFY_BATCH */
	uint64_t seed;              /* of the input draw */
	qtk_rt_path path;           /* activation path of the products */
	int threads;                /* 0 = all cores */
	/* [QTK_SCHEME_COUNT] limits on out_rel_err by scheme (NaN: the
	 * default), or NULL for the defaults */
	const double *max_out_err;
} qtk_verify_opts;

/* One tensor of FILE, compared with its source tensor. */
typedef struct {
	char *name;                 /* in FILE */
	char *source_name;          /* in SOURCE */
	qtk_q_layout layout;        /* how FILE stores it */
	uint64_t rows, cols;        /* the 2-D view [prod(shape[:-1])][shape[-1]] */
	int qk_rows;                /* rows matched through LLaMA's q/k order */
	int from_stats;             /* X drawn from the statistics (else N(0, 1)) */
	qtk_q_metrics w;            /* weights: W_hat against W */
	qtk_q_metrics out;          /* outputs: W_hat X against W X (rel_fro is
	                               out_rel_err = |WX - W_hat X| / |WX|) */
	double out_row_max;         /* worst row's |y_r - y_hat_r| / |y_r| */
	double limit;               /* the limit on out.rel_fro */
	int pass;
	char *problem;              /* a failure besides the limit (a NaN or Inf),
	                               else NULL */
} qtk_verify_tensor;

typedef struct {
	size_t n;
	qtk_verify_tensor *t;       /* FILE order */
	size_t nskipped;            /* tensors not compared (integer tensors) */
	char **skipped;             /* [nskipped] names */
	char **skip_reasons;        /* [nskipped] */
	size_t nfailed;
	size_t source_unused;       /* SOURCE tensors FILE has no counterpart of */
	char *source_unused_first;  /* the first of them, or NULL */
	uint32_t batch;
	int threads;
	double seconds;
} qtk_verify_report;

/* The default limit on out_rel_err for a scheme (docs/cli.md says how the
 * values were chosen). */
QTK_API double qtk_verify_default_limit(qtk_scheme_id s);
/* Check FILE's integrity (every crc32 of a .qtk), match every tensor with
 * its source tensor (same name; LLaMA's GGUF names and q/k row order; a
 * DiT prefix), then measure each: *rep is filled on success, also when
 * tensors fail their limits (see nfailed). Errors: a tensor missing from
 * SOURCE or of another shape, unreadable inputs. */
QTK_API qtk_err qtk_verify_against(const qtk_verify_opts *o, qtk_verify_report **rep,
                                   qtk_status *st);
QTK_API void qtk_verify_report_free(qtk_verify_report *rep); /* NULL is fine */

#ifdef __cplusplus
}
#endif
#endif /* QTK_CONVERT_H */
