/* convert (private): the pipeline's shared state. pipeline.c runs a
 * conversion (passes, sink, commit); pipe_plan.c plans every tensor into
 * work items; pipe_work.c runs the workers over them; pipe_report.c makes
 * the report and the metadata. None of them asks which sink it has. */
#ifndef QTK_PIPE_IMPL_H
#define QTK_PIPE_IMPL_H

#include <pthread.h>

#include "calib.h"
#include "conv_impl.h"

#define DEFAULT_CHUNK_ELEMS (1u << 20)
#define SUB_ELEMS 16384u        /* f32 values processed in cache at a time */

/* How a tensor's items run: source bytes copied (RAW), f32 runs of a flat
 * float store (ELEM), rows quantized (ROWS), stored planes copied (PASS). */
enum { MODE_RAW, MODE_ELEM, MODE_ROWS, MODE_PASS };

typedef struct {
	size_t tensor;
	uint64_t start, count;  /* bytes (RAW), elements (ELEM) or rows (ROWS) */
} work_item;

typedef struct {
	const src_tensor *t;    /* the tensor, as the output names and shapes it */
	const src *vs;          /* where its values or bytes are read: the */
	const src_tensor *vt;   /*   source's t, or the recorded checkpoint's */
	qtk_decision d;
	uint64_t rows, cols;
	int mode;
	size_t item0, nitems;
	uint64_t out_bytes;
	/* --calib: made by the first item of the tensor, freed by its last
	 * (a GPTQ factor is cols^2 floats); under job.calib_lock */
	calib_tensor ct;
	int ct_made, has_stats;
	const char *calib_used; /* "gptq" or "weighted" once made */
	size_t ct_left;         /* items not finished, in this pass */
	uint64_t total, per;    /* units to cover (bytes, elements or rows by
	                           mode) and units per work item */
	/* NF4 double quantization: items quantize with f32 scales into absmax
	 * (allocated by the first item, under job.lock); the item that brings
	 * remaining to 0 double-quantizes them and computes the metrics */
	float *absmax;          /* [rows * groups per row] */
	size_t remaining;       /* atomic: items not finished */
	/* the narrow types qtk chose itself (not the user): a value they
	 * cannot hold widens them to F32 (job.widen) instead of failing */
	int auto_store;         /* an F16/BF16 float store */
	int auto_scales;        /* the scale dtype (F16/BF16) */
	int gathered;           /* the sink writes rows out of source order */
	uint64_t flushed;       /* atomic: nonzero values stored as zero */
	qtk_conv_from from;     /* a .qtk source: stored, dequantized, requantized */
	char why[320];          /* QTK_FROM_REQUANT: why */
} plan_tensor;

/* job.widen bits: what a second pass stores wider: F32, or for a float
 * store of a BF16 source its own BF16 bytes (they hold every value) */
enum { W_STORE = 1, W_SCALES = 2 };

typedef struct {
	const qtk_conv_opts *o;
	src *s;
	plan_tensor *pt;
	size_t n;
	work_item *items;
	size_t nitems;
	uint64_t chunk;
	qtk_q_acc *acc;         /* [nitems] */
	uint32_t *crc;          /* [nitems] crc32 of each item's source bytes */
	int want_crc;           /* the sink records the source crc32s */
	int search;             /* the data-free search (a .qtk: as recorded) */
	sink out;               /* where tensors go: made by each pass, planned,
	                           opened, then committed or aborted */
	size_t next;            /* atomic: next item to take */
	size_t items_done;      /* atomic */
	uint64_t bytes_done;    /* atomic: source bytes */
	int failed;             /* atomic */
	int putting;            /* atomic: workers inside the sink's put_rows */
	calib *cal;             /* --calib statistics, or NULL */
	pthread_mutex_t calib_lock;
	pthread_mutex_t lock;   /* guards err and live */
	pthread_cond_t idle;    /* signalled by each worker as it ends */
	int live;               /* workers not yet ended */
	qtk_status err;
	/* Fallbacks: a tensor whose narrow type was qtk's own choice and met a
	 * value it cannot hold is marked here (under lock) and the run goes on
	 * without writing; then the output is dropped and everything planned
	 * and written again with the marked tensors in F32. Both survive the
	 * re-plan; redo is reset by it. */
	uint8_t *widen;         /* [n] W_* */
	char **widen_why;       /* [n] the first value error of a marked tensor */
	int redo;               /* atomic: some tensor was marked in this pass */
} job;

/* ---- pipe_plan.c ---- */
/* Plan every tensor of j->s for the sink j->out: layouts, sizes, items. */
qtk_err pipe_plan(job *j, qtk_status *st);
/* Undo pipe_plan, for the end or a second pass (the marks in j->widen
 * stay). */
void pipe_plan_free(job *j);

/* ---- pipe_work.c ---- */
/* Run every work item on nthreads workers, reporting progress. */
qtk_err pipe_run_workers(job *j, int nthreads, qtk_status *st);
/* Source bytes item it covers. */
uint64_t pipe_item_src_bytes(const job *j, const work_item *it);

/* ---- pipe_report.c ---- */
qtk_err pipe_make_report(job *j, qtk_conv_report **out, qtk_status *st);
/* The metadata stored in the output (rep->metadata_json). */
qtk_err pipe_build_metadata(const job *j, qtk_conv_report *rep, qtk_status *st);

#endif
