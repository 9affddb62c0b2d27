/* runtime (private): what the matmul driver, the kernel variants (scalar
 * reference, AVX2, AVX-512), the activation preparation and the thread pool
 * share. The arithmetic every variant meets is written out in
 * docs/kernels.md and in rt_kern_ref.c. */
#ifndef QTK_RT_PRIVATE_H
#define QTK_RT_PRIVATE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "qtk_runtime.h"

#define RT_BLK 32   /* elements per activation block */
#define RT_SPAD 16  /* zero scales kept after a row's last group */
#define RT_TR 4     /* rows per kernel tile */
#define RT_TC 4     /* input vectors per kernel tile (batch > 1) */

typedef struct { uint8_t b[32]; } rt_b32; /* 32 bytes, for asm operands */

/* Kernel kinds: one per (code_bits, mode) of quant's scheme table. */
typedef enum {
	RK_S8, /* 8-bit symmetric, two's complement codes:  v = (int8)c */
	RK_A8, /* 8-bit affine:  v = c, w = scale*v + bias */
	RK_S4, /* 4-bit symmetric:  v = c - off */
	RK_A4, /* 4-bit affine */
	RK_L4, /* 4-bit lookup:  v = levels[c] */
	RK_COUNT
} rt_kind;

#define RK_BITS(k) ((k) <= RK_A8 ? 8 : 4)
#define RK_AFFINE(k) ((k) == RK_A8 || (k) == RK_A4)

/* Activations prepared for one product (rt_act.c). Positions: the kernels
 * see a vector as blocks of 32 positions, in pairs. Order 0 (8-bit codes):
 * position p of block k is element 32k + p. Order 1 (4-bit codes): block
 * 2m holds the even elements of 64m..64m+63 and block 2m+1 the odd ones,
 * the order in which a pair's 32 code bytes unpack (all low nibbles, then
 * all high nibbles) without a shuffle. Lane j of a block is positions
 * 4j..4j+3 (one group: groups are 16 elements or more and aligned). The
 * activation scale is per block of 32 positions. Elements past cols are 0;
 * blocks nb..nbp-1 (at most one) are all zero. */
typedef struct {
	size_t batch, cols;
	size_t nb;    /* blocks of 32 per vector */
	size_t nbp;   /* nb rounded up to even */
	int order;
	int path;     /* QTK_RT_FLOAT or QTK_RT_INT8 */
	int8_t *q;    /* INT8: [batch][nbp*32] int8 codes, position order */
	int32_t *s;   /* INT8: [batch][nbp*8] corr * (sum of q over each lane):
	                 the correction the SIMD kernels add to their integer sums */
	int corr;
	float *d;     /* INT8: [batch][nbp*8] the block's scale, once per lane */
	float *xs;    /* INT8: [batch][nbp*8] f32 sum of x over each lane */
	float *xf;    /* FLOAT: [batch][nbp*32] x in position order */
	int32_t *sb;  /* INT8: [batch][nbp] the sum of s over each block (the
	                 interleaved kernels' correction, rt_ilv.c) */
	void *mem;    /* storage of the arrays above (grow-only) */
	size_t cap;
} rt_act;

/* One product as the kernels see it. */
typedef struct {
	const uint8_t *codes;  /* [rows][cb] */
	size_t cb;             /* code bytes per row */
	const uint8_t *scales; /* [rows][gpr] in sdt; U8 codes when dq */
	const uint8_t *biases; /* affine: [rows][gpr] in sdt */
	const uint8_t *dq;     /* double quant: f32 offset, f32 per 256 groups */
	qtk_dtype sdt;
	size_t rows, cols;
	size_t gl, gpr;        /* group length (cols for a whole row), groups per row */
	int gshift;            /* log2(gl); -1 for QTK_GROUP_ROW */
	rt_kind kind;
	int off;               /* RK_S4: code offset */
	int8_t lut_s[16];      /* RK_L4, INT8 path: round(127 * level) */
	uint8_t lut_u[16];     /* lut_s + 128 */
	float lut_f[16];       /* RK_L4, FLOAT path: the levels */
	int path;
	int vnni;              /* use dpbusd */
	int gfni;              /* AVX-512 VNNI: unpack 4-bit codes with gf2p8affineqb */
	/* lane l of a block pair (8 * (k % 2) + j) reads group base + gidx[l],
	 * base = rt_group(rt_elem(order, k, 0)) of the pair's first block */
	int32_t gidx[16];
	int gperm;             /* some gidx is not 0 */
	/* FLOAT path: positions 16i..16i+15 of a pair read base + fidx[i][t];
	 * funi[i]: their common offset, or -1 */
	int32_t fidx[4][16];
	int funi[4];
	const rt_act *act;
	float *y;              /* [batch][rows] */
	size_t tile_cols;      /* vectors per cache chunk of a GEMM */
	int err;               /* set (atomically) when scratch runs out */
} rt_job;

/* The rows [r0, r1) of every vector. scratch: rt_scratch_bytes(J). */
typedef void (*rt_rows_fn)(const rt_job *J, size_t r0, size_t r1, void *scratch);
size_t rt_scratch_bytes(const rt_job *J);

void rt_rows_scalar(const rt_job *J, size_t r0, size_t r1, void *scratch);
void rt_rows_avx2(const rt_job *J, size_t r0, size_t r1, void *scratch);
void rt_rows_avx512(const rt_job *J, size_t r0, size_t r1, void *scratch);

/* Row r's group scales (and biases) as f32 into ws[gpr + RT_SPAD] (wb),
 * the padding zero. INT8 path with RK_L4: the scale divided by 127. */
void rt_row_scales_ref(const rt_job *J, size_t r, float *ws, float *wb);

/* Sum of 16 lanes in a fixed tree: l[i] += l[i + k] for k = 8, 4, 2, 1. */
static inline float rt_fold16(float *l)
{
	for (int k = 8; k; k >>= 1)
		for (int i = 0; i < k; i++)
			l[i] = l[i] + l[i + k];
	return l[0];
}

/* Element of position p (0..31) of block k. */
static inline size_t rt_elem(int order, size_t k, unsigned p)
{
	if (!order)
		return k * RT_BLK + p;
	return (k >> 1) * 2 * RT_BLK + 2 * (size_t)p + (k & 1);
}

/* Group of element e. Past cols: the last partial group, or the padding
 * index gpr whose scale is 0; for QTK_GROUP_ROW always group 0. */
static inline size_t rt_group(const rt_job *J, size_t e)
{
	return J->gshift < 0 ? 0 : e >> J->gshift;
}

/* The kernel kind of a scheme row, or -1. */
int rt_kind_of(const qtk_q_scheme *s);
/* w's planes fit its layout (QTK_E_ARG naming the tensor otherwise). */
qtk_err rt_check_view(const qtk_rt_tensor *w, qtk_status *st);
/* The job of a product of w on path (checked view, kind from the table). */
void rt_build_job(rt_job *J, const qtk_rt_tensor *w, int kind, qtk_rt_path path);
/* What the SIMD kernels add per unit of a lane's sum of q (rt_act.corr). */
int rt_corr_of(const rt_job *J);

/* ---- interleaved weights (rt_ilv.c, docs/kernels.md) ----------------- */

#define RT_IR 16 /* rows interleaved together: the lanes of a vector */

/* The integer path's copy of a weight: rows in groups of RT_IR, each
 * block of 32 positions (elements 32k..32k+31, in order) of a group's rows
 * stored together so that a vector's lanes are rows. Block k of group g
 * at codes + (g * nb + k) * bb:
 *   4-bit: 4 chunks of 64 bytes; chunk h byte 4r+t holds row r's codes of
 *          positions 4h+t (low nibble) and 16+4h+t (high nibble);
 *   8-bit: 8 chunks of 64 bytes; chunk j byte 4r+t is position 4j+t.
 * So chunk byte 4r..4r+3 is a lane: 4 positions of row r. Scales as f32
 * (NF4: absmax / 127, double quant applied), or as F16 (sh) when the file
 * has F16 scales for int4 / int8, at element (g * gpr + s) * 16 + r for
 * scale group s; block k reads group (32k) >> gshift. Rows past
 * `rows` (the last group) have zero codes and scales. */
typedef struct {
	rt_kind kind;
	size_t rows, cols;
	size_t ngr;       /* row groups */
	size_t nb;        /* blocks of 32 positions per row */
	size_t gpr;       /* scale groups per row */
	int gshift;       /* log2 of the group length (>= 5); -1: whole row */
	size_t bb;        /* code bytes per block of a group: 256 or 512 */
	int off;          /* RK_S4: the code offset */
	int8_t lut_s[16]; /* RK_L4: round(127 * level) */
	uint8_t lut_u[16];/* lut_s + 128 */
	uint8_t *codes;   /* [ngr][nb][bb], 64-byte aligned */
	void *scales;     /* [ngr][gpr][RT_IR] f32, or f16 when sh; 64-byte aligned */
	int sh;           /* scales kept as the file's F16 (int4, int8): exact,
	                     2 bytes per group of a row instead of 4 */
	void *mem;
} rt_ilv;

/* One product on the interleaved copy. */
typedef struct {
	const rt_ilv *L;
	const rt_act *act; /* order 0, INT8, corr of rt_ilv_corr */
	float *y;          /* [batch][rows] */
	int vnni;
	size_t tile_cols;  /* vectors per cache chunk */
} rt_ijob;

/* Row groups [g0, g1) of every vector. */
typedef void (*rt_ilv_fn)(const rt_ijob *J, size_t g0, size_t g1);
void rt_ilv_scalar(const rt_ijob *J, size_t g0, size_t g1);
/* Row groups [g0, g1) as up to n streams through memory for one vector:
 * step 0, 1, ... of them into gs (n entries at most); returns how many, 0
 * after the last step. The range is cut into n equal parts read side by
 * side, one group of each per step; the remainder (fewer than n groups)
 * comes last, in one step. Every group exactly once. */
int rt_ilv_streams(size_t g0, size_t g1, int n, size_t step, size_t *gs);
void rt_ilv_avx2(const rt_ijob *J, size_t g0, size_t g1);
void rt_ilv_avx512(const rt_ijob *J, size_t g0, size_t g1);
/* The correction (rt_act.corr) the SIMD kernels of kind need. */
int rt_ilv_corr(rt_kind kind, int vnni, int off);
/* qtk_rt_matmul on QTK_RT_INT8 when w has a copy. */
qtk_err rt_ilv_matmul(qtk_rt_pool *pool, const qtk_rt_tensor *w, const float *x,
                      size_t batch, float *y, qtk_status *st);
int rt_use_vnni(qtk_isa isa);

/* ---- activations (rt_act.c) ---------------------------------------- */

/* Prepare x [batch][cols] for order and path into a (its arrays grow as
 * needed). QTK_E_NOMEM. The result is the same on every ISA. */
qtk_err rt_act_prepare(rt_act *a, qtk_isa isa, qtk_rt_pool *pool, const float *x,
                       size_t batch, size_t cols, int order, int path, int corr);
void rt_act_free(rt_act *a);

/* ---- models (rt_load.c, rt_gguf.c) ----------------------------------- */

struct qtk_rt_model {
	qtk_pack_file *f;     /* a .qtk file, or NULL */
	qtk_gguf_file *g;     /* a GGUF file, or NULL */
	qtk_rt_tensor *t;     /* [n] */
	void **owned;         /* [n * QTK_PLANE_MAX] buffers the model owns (or NULL) */
	size_t n;
};

/* Drop the process's pages of t's planes when they are a file mapping
 * (read back from the file if touched again): after the interleaved copy
 * the integer path does not read them. */
void rt_release_pages(const qtk_rt_tensor *t);
/* 1 if the file at path starts with the GGUF magic. */
int rt_is_gguf(const char *path);
/* qtk_rt_open of a GGUF file. */
qtk_err rt_open_gguf(const char *path, qtk_rt_model **out, qtk_status *st);

/* ---- thread pool (rt_pool.c) ----------------------------------------- */

/* Thread t's scratch of at least n bytes, 64-byte aligned, kept between
 * calls; NULL when out of memory. */
void *rt_pool_scratch(qtk_rt_pool *p, unsigned t, size_t n);
/* The pool's activation buffer. */
rt_act *rt_pool_act(qtk_rt_pool *p);
/* Held by a kernel call while it uses the pool's buffers. */
void rt_pool_lock(qtk_rt_pool *p);
void rt_pool_unlock(qtk_rt_pool *p);

#endif
