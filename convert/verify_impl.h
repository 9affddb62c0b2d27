/* convert (private): the inputs of `qtk verify --against` — activation
 * statistics per weight (what the layer inputs X are drawn from) and the
 * reproducible draw itself. Readers of statistics files fill an act_stats
 * set through act_stats_add; verify only asks for one weight's moments. */
#ifndef QTK_VERIFY_IMPL_H
#define QTK_VERIFY_IMPL_H

#include "qtk_convert.h"

/* The inputs of one linear weight, per input channel (= weight column). */
typedef struct {
	char *name;          /* the weight's name, as the statistics file has it */
	uint64_t n;          /* channels */
	double *sum;         /* [n] sum of x, or NULL when the file has none (mean 0) */
	double *sum2;        /* [n] sum of x^2 */
	double count;        /* input vectors (tokens) summed; > 0 */
} act_stats_entry;

typedef struct act_stats act_stats;

/* An empty set (name: the file, for messages). */
qtk_err act_stats_new(const char *name, act_stats **out, qtk_status *st);
/* Open a statistics file: today llama.cpp's imatrix GGUF (told by the GGUF
 * magic); on failure *out is NULL and st names the file and problem. */
qtk_err act_stats_open(const char *path, act_stats **out, qtk_status *st);
void act_stats_close(act_stats *s); /* NULL is fine */
/* Add one weight's sums (copied). sum may be NULL. QTK_E_FORMAT for a
 * negative, NaN or infinite value, a count <= 0 or a name given twice. */
qtk_err act_stats_add(act_stats *s, const char *name, uint64_t n, const double *sum,
                      const double *sum2, double count, qtk_status *st);
size_t act_stats_count(const act_stats *s);
const char *act_stats_name(const act_stats *s);
/* The entry of a weight; NULL if the file has none. */
const act_stats_entry *act_stats_find(const act_stats *s, const char *name);

/* The llama.cpp imatrix GGUF reader (verify_imatrix.c): every pair
 * NAME.in_sum2 (F32 [nmat][n], sums of x^2) and NAME.counts (F32 [nmat][1],
 * tokens) becomes entry NAME, experts pooled. */
qtk_err act_stats_read_imatrix(act_stats *s, const char *path, qtk_status *st);

/* ---- FILE and its match in SOURCE (verify_match.c) --------------------- */

#include "conv_impl.h"

/* The file checked: a .qtk (crc32s verified at open) or a GGUF. */
typedef struct {
	const char *path;
	qtk_pack_file *pk;
	qtk_gguf_file *gg;
	size_t n;
} vf_file;

/* Row order of a LLaMA q/k projection between FILE and SOURCE. */
enum { VF_ROWS_SAME = 0, VF_ROWS_GGUF_FROM_HF = 1, VF_ROWS_HF_FROM_GGUF = 2 };

/* One tensor of FILE and where its reference is. */
typedef struct {
	const char *name;
	uint32_t ndim;
	uint64_t shape[QTK_MAX_DIMS];
	uint64_t rows, cols;
	qtk_q_layout L;          /* as stored (GGUF blocks as their qtk layout) */
	const char *skip;        /* why it is not compared, or NULL */
	char skip_buf[96];
	const src_tensor *s;     /* the source tensor */
	int rows_order;          /* VF_ROWS_* */
	uint32_t n_head;         /* heads, when rows_order is not SAME */
} vf_tensor;

qtk_err vf_open(vf_file *f, const char *path, qtk_status *st);
void vf_close(vf_file *f);
/* Describe every tensor of f and find its source tensor in s; a tensor
 * missing from s, a shape mismatch (naming both), an integer source for a
 * float tensor, or q/k rows without a head count are errors. *unused gets
 * the number of source tensors nothing matched, *first_unused the first. */
qtk_err vf_match_all(const vf_file *f, src *s, vf_tensor *t, size_t *unused,
                     const char **first_unused, qtk_status *st);
/* The planes of tensor i: views into the file, or (zstd planes, GGUF
 * blocks) buffers in owned[] the caller frees with qtk_free. */
qtk_err vf_planes(const vf_file *f, size_t i, const vf_tensor *t,
                  const void *pl[QTK_PLANE_MAX], void *owned[QTK_PLANE_MAX], qtk_status *st);
/* The source row of FILE row r of t. */
uint64_t vf_src_row(const vf_tensor *t, uint64_t r);

/* Inputs X [batch][cols], row-major (input vector b at x + b*cols):
 *   x[b][j] = mean_j + std_j * z_(b*cols + j)
 * z_k the k-th standard normal of the seeded stream (splitmix64, two
 * uniforms per Box-Muller draw, the cosine branch), mean_j = sum_j/count
 * and std_j = sqrt(max(0, sum2_j/count - mean_j^2)) from e, or 0 and 1
 * when e is NULL. The numbers depend only on seed, batch, cols and e. */
void verify_draw_inputs(uint64_t seed, const act_stats_entry *e, size_t batch, size_t cols,
                        float *x);

#endif
