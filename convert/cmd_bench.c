/* convert: `qtk bench` — the runtime kernels against OpenBLAS on the same
 * weights in f32, and against a read-bandwidth probe, all in one run:
 * GEMV (one vector) with the weights cold (caches flushed before each
 * call, as in a forward pass over a model larger than the caches) and hot
 * (back to back), and GEMM of a batch of vectors. */
#include <cblas.h>
#include <getopt.h>
#include <immintrin.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static void bench_usage(FILE *f)
{
	fprintf(f,
"Usage: qtk bench [FILE.qtk|FILE.gguf] [OPTIONS]\n\n"
"Time the runtime's matrix products against OpenBLAS sgemv/sgemm on the same\n"
"weights in f32 and against this machine's read bandwidth, in one run. With\n"
"FILE: one tensor of each (scheme, group, shape) in it; without: random\n"
"N(0, 0.02) weights of each quantized scheme at the given shapes.\n\n"
"  -s, --shape MxK        matrix shape (repeatable; default 4096x4096,\n"
"                         4096x14336 and 14336x4096)\n"
"  -S, --scheme LIST      schemes to generate, comma-separated (default: every\n"
"                         quantized scheme)\n"
"  -g, --group N          group size of generated weights (default 32)\n"
"  -b, --batch N          vectors of the GEMM (default 64; 0: no GEMM)\n"
"  -p, --path P           activation path: int8 (default), float or both\n"
"  -l, --layout L         weights of the int8 path: both (default), planes (as\n"
"                         stored) or interleaved (the copy qtk run multiplies;\n"
"                         path 'int8-ilv', GB/s of the copy's bytes)\n"
"  -j, --threads N        threads of qtk's pool and of OpenBLAS (default: all cores)\n"
"  -r, --reps N           timed repeats (default 10; GEMM: half), median reported\n"
"      --blas-as-is       keep OpenBLAS's own kernel choice (see below)\n"
"      --json             print the results as JSON on stdout\n"
"  -h, --help             show this help\n\n"
"OpenBLAS 0.3.21 (Debian 12) does not recognize recent x86 CPUs and falls\n"
"back to its SSE3 kernels; unless --blas-as-is or OPENBLAS_CORETYPE is set,\n"
"qtk then runs itself again with OPENBLAS_CORETYPE=SkylakeX (AVX-512) or\n"
"Haswell (AVX2, also under QTK_ISA=avx2), so the baseline is OpenBLAS at its\n"
"best on this machine (run, eval, verify and calibrate do the same).\n\n"
"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

enum { OPT_JSON = 256, OPT_BLAS_AS_IS };

static const struct option long_opts[] = {
	{ "shape", required_argument, NULL, 's' },
	{ "scheme", required_argument, NULL, 'S' },
	{ "group", required_argument, NULL, 'g' },
	{ "batch", required_argument, NULL, 'b' },
	{ "path", required_argument, NULL, 'p' },
	{ "layout", required_argument, NULL, 'l' },
	{ "threads", required_argument, NULL, 'j' },
	{ "reps", required_argument, NULL, 'r' },
	{ "blas-as-is", no_argument, NULL, OPT_BLAS_AS_IS },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

#define MAX_SHAPES 16

typedef struct {
	uint64_t shape[MAX_SHAPES][2];
	int nshapes;
	int schemes[QTK_SCHEME_COUNT];
	int nschemes;
	uint32_t group;
	size_t batch;
	int paths; /* bit 0: float, bit 1: int8 */
	int layouts; /* int8 path: bit 0: the planes, bit 1: the interleaved copy */
	unsigned threads;
	int reps;
	int json;
	const char *file;
} bench_opts;

/* What one run shares: the pool, the flush buffer, the results. */
typedef struct {
	const bench_opts *o;
	qtk_rt_pool *pool;
	uint8_t *flush;     /* 2x the last-level cache (or more): read to evict */
	size_t flush_len;
	uint8_t *hotbuf;    /* for the hot probe */
	size_t hot_len;
	double read_gbps;   /* cold probe */
	json_t *results;
	int header_done;
} bench_run;

typedef struct {
	double med, min, max;
	double bw; /* cold: GB/s of the flushes before the timed calls (median) */
} stats;

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* ---- reading memory ------------------------------------------------ */

typedef struct {
	const uint8_t *p;
	size_t len;
	size_t nchunks;        /* the pieces threads take in turn (PIECE each) */
	size_t next;           /* the next piece (atomic) */
	uint64_t sink[64];
} read_ctx;

static uint64_t read_plain(const uint8_t *p, size_t n)
{
	uint64_t s = 0, v;

	for (size_t i = 0; i + 8 <= n; i += 8) {
		memcpy(&v, p + i, 8);
		s ^= v;
	}
	return s;
}

/* The fastest plain read we know: four streams at once (at p + j * q,
 * n bytes each), each prefetched 1 KiB ahead (a single stream without
 * prefetch reaches about two thirds of this on the machine of
 * docs/bench.md). */
__attribute__((target("avx2"))) static uint64_t read4_avx2(const uint8_t *p, size_t q, size_t n)
{
	__m256i a = _mm256_setzero_si256(), b = a;
	size_t m = n / 64 * 64;

	for (size_t i = 0; i < m; i += 64)
		for (size_t k = 0; k < 4; k++) {
			const uint8_t *r = p + k * q + i;
			_mm_prefetch((const char *)(r + 1024), _MM_HINT_T0);
			a = _mm256_xor_si256(a, _mm256_load_si256((const __m256i *)(const void *)r));
			b = _mm256_xor_si256(b, _mm256_load_si256((const __m256i *)(const void *)(r + 32)));
		}
	a = _mm256_xor_si256(a, b);
	return (uint64_t)_mm256_extract_epi64(a, 0) ^ (uint64_t)_mm256_extract_epi64(a, 3);
}

/* The buffer is four quarters read side by side (four streams far apart:
 * the fastest plain read here, read4_avx2); a piece is the next 1 MiB of
 * each quarter, and each thread takes the next piece until none is left,
 * so the threads end within a piece of each other. (A fixed half each
 * ended up to milliseconds apart as the machine's bandwidth shifted
 * between them, and the pool's worker had gone to sleep by the time the
 * next timed call came: the call then paid the wake-up.) */
#define PIECE (1u << 20)

static void read_range(void *ctx, size_t b, size_t e, unsigned t)
{
	read_ctx *c = ctx;
	size_t q = c->len / 4 / 64 * 64, k;

	(void)b;
	(void)e;
	while ((k = __atomic_fetch_add(&c->next, 1, __ATOMIC_RELAXED)) < c->nchunks) {
		size_t lo = k * PIECE, n = q - lo < PIECE ? q - lo : PIECE;
		if (qtk_isa_active() >= QTK_ISA_AVX2)
			c->sink[t % 64] ^= read4_avx2(c->p + lo, q, n);
		else
			for (int j = 0; j < 4; j++)
				c->sink[t % 64] ^= read_plain(c->p + j * q + lo, n);
	}
}

static void read_all(bench_run *R, const uint8_t *p, size_t len)
{
	read_ctx c = { p, len, 0, 0, { 0 } };
	size_t q = len / 4 / 64 * 64;

	c.nchunks = (q + PIECE - 1) / PIECE;
	qtk_rt_pool_run(R->pool, qtk_rt_pool_threads(R->pool), read_range, &c);
	c.sink[0] ^= read_plain(p + 4 * q, len - 4 * q);
	__asm__ volatile("" : : "r"(c.sink[0]) : "memory");
}

static void flush_caches(bench_run *R)
{
	read_all(R, R->flush, R->flush_len);
}

/* The last-level cache in bytes (0 if unknown). */
static size_t llc_bytes(void)
{
	long v = sysconf(_SC_LEVEL3_CACHE_SIZE);

	if (v <= 0)
		v = sysconf(_SC_LEVEL2_CACHE_SIZE);
	return v > 0 ? (size_t)v : 0;
}

/* ---- timing ---------------------------------------------------------- */

typedef void (*op_fn)(void *ctx);

/* reps timed calls after warm ones; cold: caches flushed (untimed) first. */
static stats time_op(bench_run *R, op_fn fn, void *ctx, int warm, int reps, int cold)
{
	double t[64], f[64];
	stats s;

	reps = reps < 1 ? 1 : reps > 64 ? 64 : reps;
	for (int i = 0; i < warm + reps; i++) {
		double t0 = now_s();
		/* the flush is a read of the whole flush buffer by the same
		 * threads: timed, it is the bandwidth bound of these very seconds
		 * (on a shared machine the bound drifts by 2x within a minute) */
		if (cold)
			flush_caches(R);
		if (i >= warm)
			f[i - warm] = now_s() - t0;
		t0 = now_s();
		fn(ctx);
		if (i >= warm)
			t[i - warm] = now_s() - t0;
	}
	qsort(t, (size_t)reps, sizeof *t, cmp_d);
	qsort(f, (size_t)reps, sizeof *f, cmp_d);
	s.min = t[0];
	s.max = t[reps - 1];
	s.med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
	s.bw = 0;
	if (cold) {
		double fm = reps % 2 ? f[reps / 2] : 0.5 * (f[reps / 2 - 1] + f[reps / 2]);
		s.bw = fm > 0 ? (double)R->flush_len / fm / 1e9 : 0;
	}
	return s;
}

static void probe_op(void *ctx)
{
	bench_run *R = ctx;
	read_all(R, R->hotbuf, R->hot_len);
}

static void probe_cold(void *ctx)
{
	bench_run *R = ctx;
	read_all(R, R->flush, R->flush_len);
}

/* Read bandwidth from memory: the flush buffer, which no cache holds. */
static void probe_memory(bench_run *R)
{
	stats s = time_op(R, probe_cold, R, 1, 5, 0);
	R->read_gbps = (double)R->flush_len / s.med / 1e9;
}

/* Read bandwidth of n bytes read again and again (the caches' bound). */
static double probe_hot(bench_run *R, size_t n)
{
	size_t len = n < R->hot_len ? n : R->hot_len;
	size_t keep = R->hot_len;
	stats s;

	R->hot_len = len;
	s = time_op(R, probe_op, R, 2, 9, 0);
	R->hot_len = keep;
	return (double)len / s.med / 1e9;
}

/* ---- the products ------------------------------------------------------ */

typedef struct {
	qtk_rt_pool *pool;
	const qtk_rt_tensor *t;
	qtk_rt_path path;
	const float *w;  /* f32 weights [rows][cols] for OpenBLAS */
	const float *x;
	float *y;
	size_t batch, rows, cols;
	qtk_err rc;
	qtk_status st;
} prod_ctx;

static void op_qtk(void *ctx)
{
	prod_ctx *c = ctx;
	qtk_err rc = qtk_rt_matmul(c->pool, c->t, c->path, c->x, c->batch, c->y, &c->st);

	if (rc)
		c->rc = rc;
}

static void op_blas(void *ctx)
{
	prod_ctx *c = ctx;

	if (c->batch == 1)
		cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)c->rows, (blasint)c->cols, 1.0f, c->w,
		            (blasint)c->cols, c->x, 1, 0.0f, c->y, 1);
	else
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)c->batch,
		            (blasint)c->rows, (blasint)c->cols, 1.0f, c->x, (blasint)c->cols, c->w,
		            (blasint)c->cols, 0.0f, c->y, (blasint)c->rows);
}

static uint64_t weight_bytes(const qtk_rt_tensor *t)
{
	uint64_t n = 0;

	if (t->ilv)
		return qtk_rt_interleaved_bytes(t);
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		n += t->planes[p].size;
	return n;
}

static void label(const qtk_rt_tensor *t, char *buf, size_t n)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(t->scheme);

	if (!s->quantized)
		snprintf(buf, n, "%s", s->name);
	else if (t->group == QTK_GROUP_ROW)
		snprintf(buf, n, "%s row %s%s", s->name, qtk_dtype_name(t->layout.scale_dtype),
		         (t->layout.flags & QTK_QF_DOUBLE_QUANT) ? " dq" : "");
	else
		snprintf(buf, n, "%s g%u %s%s", s->name, t->group, qtk_dtype_name(t->layout.scale_dtype),
		         (t->layout.flags & QTK_QF_DOUBLE_QUANT) ? " dq" : "");
}

static void print_header(bench_run *R)
{
	if (R->o->json || R->header_done)
		return;
	printf("%-22s %-11s %-5s %-8s %4s %8s %6s %7s %8s %6s %9s %8s\n", "scheme", "shape", "op",
	       "path", "cache", "ms", "spread", "GB/s", "GFLOP/s", "of bw", "blas ms", "speed-up");
	R->header_done = 1;
}

/* One line / JSON object for a measurement. */
static void report(bench_run *R, const qtk_rt_tensor *t, const char *op, const char *pname,
                   const char *cache, size_t batch, stats q, stats b, double bound_gbps)
{
	char lab[64], shape[32];
	double bytes = (double)weight_bytes(t), flops = 2.0 * (double)t->rows * (double)t->cols * (double)batch;
	double gbps = bytes / q.med / 1e9, spread = (q.max - q.min) / q.med;

	label(t, lab, sizeof lab);
	snprintf(shape, sizeof shape, "%llux%llu", (unsigned long long)t->rows,
	         (unsigned long long)t->cols);
	if (R->o->json) {
		json_t *e = json_object();
		json_object_set_new(e, "tensor", json_string(t->name ? t->name : ""));
		json_object_set_new(e, "scheme", json_string(qtk_q_scheme_get(t->scheme)->name));
		json_object_set_new(e, "group", json_integer(t->group));
		json_object_set_new(e, "scale_dtype", json_string(qtk_dtype_name(t->layout.scale_dtype)));
		json_object_set_new(e, "rows", json_integer((json_int_t)t->rows));
		json_object_set_new(e, "cols", json_integer((json_int_t)t->cols));
		json_object_set_new(e, "op", json_string(op));
		json_object_set_new(e, "path", json_string(pname));
		json_object_set_new(e, "cache", json_string(cache));
		json_object_set_new(e, "batch", json_integer((json_int_t)batch));
		json_object_set_new(e, "ms", json_real(q.med * 1e3));
		json_object_set_new(e, "ms_min", json_real(q.min * 1e3));
		json_object_set_new(e, "ms_max", json_real(q.max * 1e3));
		json_object_set_new(e, "spread", json_real(spread));
		json_object_set_new(e, "weight_bytes", json_integer((json_int_t)bytes));
		json_object_set_new(e, "gbps", json_real(gbps));
		json_object_set_new(e, "gflops", json_real(flops / q.med / 1e9));
		if (bound_gbps > 0) {
			json_object_set_new(e, "bandwidth_gbps", json_real(bound_gbps));
			json_object_set_new(e, "fraction_of_bandwidth", json_real(gbps / bound_gbps));
		}
		json_object_set_new(e, "blas_ms", json_real(b.med * 1e3));
		json_object_set_new(e, "blas_gbps",
		                    json_real((double)t->rows * (double)t->cols * 4.0 / b.med / 1e9));
		json_object_set_new(e, "speedup", json_real(b.med / q.med));
		json_array_append_new(R->results, e);
		return;
	}
	print_header(R);
	char frac[16] = "";
	if (bound_gbps > 0)
		snprintf(frac, sizeof frac, "%.2f", gbps / bound_gbps);
	printf("%-22s %-11s %-5s %-8s %4s %8.3f %5.0f%% %7.1f %8.1f %6s %9.3f %7.2fx\n", lab, shape,
	       op, pname, cache, q.med * 1e3, spread * 100, gbps, flops / q.med / 1e9, frac,
	       b.med * 1e3, b.med / q.med);
	fflush(stdout);
}

/* Let OpenBLAS's threads stop spinning (they wait for work some 0.1 s
 * after a call) before qtk's pool is timed again. */
static void blas_settle(void)
{
	struct timespec ts = { 0, 300 * 1000 * 1000 };

	nanosleep(&ts, NULL);
}

/* Everything measured on one weight: GEMV cold and hot, GEMM. w: its f32
 * values for OpenBLAS. */
static int bench_weight(bench_run *R, const qtk_rt_tensor *t, const float *w)
{
	const bench_opts *o = R->o;
	size_t B = o->batch ? o->batch : 1;
	float *x = malloc(B * t->cols * sizeof(float)), *y = malloc(B * t->rows * sizeof(float));
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	prod_ctx c;
	int quant = qtk_q_scheme_get(t->scheme)->quantized;

	if (!x || !y) {
		free(x);
		free(y);
		fprintf(stderr, "qtk: bench: out of memory\n");
		return -1;
	}
	for (size_t i = 0; i < B * t->cols; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		x[i] = (float)((double)(seed >> 11) * 0x1p-53 * 2.0 - 1.0);
	}
	memset(&c, 0, sizeof c);
	c.pool = R->pool;
	c.t = t;
	c.w = w;
	c.x = x;
	c.y = y;
	c.rows = (size_t)t->rows;
	c.cols = (size_t)t->cols;
	double hot_bw = probe_hot(R, (size_t)weight_bytes(t));
	/* the BLAS figures of a weight once (float weights: both paths are BLAS) */
	stats b[3];
	int have_blas = 0;
	/* float, int8 on the planes, int8 on the interleaved copy */
	static const char *const vname[3] = { "float", "int8", "int8-ilv" };
	qtk_rt_tensor u = *t;
	for (int v = 0; v < 3; v++) {
		stats q[3];
		if (quant ? !(o->paths & (v ? 2 : 1)) : v != 1)
			continue;
		if (quant && v && !(o->layouts & v))
			continue;
		if (v == 2) {
			qtk_err e = qtk_rt_interleave(&u, R->pool, &c.st);
			if (e) {
				c.rc = e;
				break;
			}
			if (!u.ilv)
				continue; /* a layout without a copy */
		}
		c.t = v == 2 ? &u : t;
		c.path = v ? QTK_RT_INT8 : QTK_RT_FLOAT;
		/* qtk first: OpenBLAS's threads spin for a while after each of its
		 * calls and would take a core from the pool */
		c.batch = 1;
		q[0] = time_op(R, op_qtk, &c, 2, o->reps, 1);
		q[1] = time_op(R, op_qtk, &c, 2, o->reps, 0);
		if (o->batch) {
			c.batch = o->batch;
			q[2] = time_op(R, op_qtk, &c, 1, (o->reps + 1) / 2, 0);
		}
		if (!have_blas) {
			openblas_set_num_threads((int)o->threads);
			c.batch = 1;
			b[0] = time_op(R, op_blas, &c, 2, o->reps, 1);
			b[1] = time_op(R, op_blas, &c, 2, o->reps, 0);
			if (o->batch) {
				c.batch = o->batch;
				b[2] = time_op(R, op_blas, &c, 1, (o->reps + 1) / 2, 0);
			}
			openblas_set_num_threads(1);
			blas_settle();
			have_blas = 1;
		}
		const char *pn = quant ? vname[v] : "blas";
		report(R, c.t, "gemv", pn, "cold", 1, q[0], b[0], q[0].bw);
		report(R, c.t, "gemv", pn, "hot", 1, q[1], b[1], hot_bw);
		if (o->batch)
			report(R, c.t, "gemm", pn, "hot", o->batch, q[2], b[2], 0);
	}
	qtk_rt_uninterleave(&u);
	free(x);
	free(y);
	if (c.rc) {
		fprintf(stderr, "qtk: %s\n", c.st.msg);
		return -1;
	}
	return 0;
}

/* ---- weights -------------------------------------------------------------- */

/* f32 values of a stored tensor (what OpenBLAS multiplies). */
static float *f32_of(const qtk_rt_tensor *t)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(t->scheme);
	size_t n = (size_t)(t->rows * t->cols);
	float *w = malloc(n * sizeof(float)), *absmax = NULL;
	qtk_q_layout L = t->layout;
	qtk_q_cplanes cp;

	if (!w)
		return NULL;
	if (!s->quantized) {
		if (qtk_to_f32(t->planes[0].dtype, t->planes[0].data, w, n) != QTK_OK) {
			free(w);
			return NULL;
		}
		return w;
	}
	for (int p = 0; p < QTK_PLANE_MAX; p++)
		cp.p[p] = t->planes[p].data;
	if (L.flags & QTK_QF_DOUBLE_QUANT) { /* absmax values, then the F32-scale layout */
		uint64_t ng = t->rows * qtk_q_groups_per_row(&L, t->cols);
		absmax = malloc((size_t)ng * sizeof(float));
		if (!absmax) {
			free(w);
			return NULL;
		}
		qtk_q_double_dequant(t->planes[QTK_PLANE_SCALES].data, ng, t->planes[QTK_PLANE_DQ].data,
		                     absmax);
		L.flags &= ~QTK_QF_DOUBLE_QUANT;
		L.scale_dtype = QTK_DT_F32;
		cp.p[QTK_PLANE_SCALES] = absmax;
	}
	qtk_q_dequantize_rows(&L, &cp, n / t->cols, (size_t)t->cols, w);
	free(absmax);
	return w;
}

static int bench_file(bench_run *R, qtk_rt_model *m)
{
	size_t done = 0;
	int rc = 0;

	for (size_t i = 0; i < qtk_rt_count(m) && done < 16 && !rc; i++) {
		const qtk_rt_tensor *t = qtk_rt_get(m, i);
		int seen = 0;
		float *w;

		if (t->ndim < 2 || !qtk_rt_supported(&t->layout) || t->rows < 64 || t->cols < 64)
			continue;
		for (size_t j = 0; j < i && !seen; j++) {
			const qtk_rt_tensor *u = qtk_rt_get(m, j);
			seen = u->ndim >= 2 && u->rows == t->rows && u->cols == t->cols &&
			       !memcmp(&u->layout, &t->layout, sizeof u->layout);
		}
		if (seen)
			continue;
		if (!(w = f32_of(t))) {
			fprintf(stderr, "qtk: bench: %s: out of memory\n", t->name);
			rc = -1;
			break;
		}
		rc = bench_weight(R, t, w);
		free(w);
		done++;
	}
	if (!rc && !done)
		fprintf(stderr, "qtk: bench: %s has no matrix the runtime multiplies\n", R->o->file);
	return rc ? QTK_EXIT_FAIL : QTK_EXIT_OK;
}

static int bench_generated(bench_run *R)
{
	const bench_opts *o = R->o;

	for (int si = 0; si < o->nshapes; si++) {
		size_t M = (size_t)o->shape[si][0], K = (size_t)o->shape[si][1];
		float *w = malloc(M * K * sizeof(float));
		uint64_t seed = 42 + (uint64_t)si;

		if (!w) {
			fprintf(stderr, "qtk: bench: out of memory for %zux%zu\n", M, K);
			return QTK_EXIT_FAIL;
		}
		for (size_t i = 0; i < M * K; i++) { /* N(0, 0.02), Irwin-Hall */
			double a = 0;
			for (int k = 0; k < 4; k++) {
				seed = seed * 6364136223846793005ull + 1442695040888963407ull;
				a += (double)(seed >> 11) * 0x1p-53;
			}
			w[i] = (float)((a - 2.0) * 0.02 * 1.7320508);
		}
		for (int k = 0; k < o->nschemes; k++) {
			qtk_q_layout L = { (qtk_scheme_id)o->schemes[k], o->group, QTK_DT_F16, 0,
			                   QTK_DT_F32 };
			uint64_t sz[QTK_PLANE_MAX];
			void *pl[QTK_PLANE_MAX] = { NULL };
			qtk_rt_tensor t;
			qtk_status st;
			char name[64];
			int rc = 0;

			if (qtk_q_plane_sizes(&L, M, K, sz) != QTK_OK)
				continue;
			for (int p = 0; p < QTK_PLANE_MAX && !rc; p++)
				if (sz[p] && !(pl[p] = aligned_alloc(64, (size_t)(sz[p] + 63) / 64 * 64)))
					rc = -1;
			qtk_q_planes qp = { { pl[0], pl[1], pl[2], pl[3] } };
			snprintf(name, sizeof name, "generated.%s", qtk_q_scheme_get(L.scheme)->name);
			if (!rc && (qtk_q_quantize_rows(&L, w, M, K, &qp, NULL, &st) != QTK_OK ||
			            qtk_rt_tensor_init(&t, name, &L, M, K, (const void *const *)pl, &st) !=
			                    QTK_OK)) {
				fprintf(stderr, "qtk: %s\n", st.msg);
				rc = -1;
			}
			if (!rc) {
				float *wq = f32_of(&t); /* OpenBLAS gets the same (dequantized) weights */
				rc = wq ? bench_weight(R, &t, wq) : -1;
				free(wq);
			}
			for (int p = 0; p < QTK_PLANE_MAX; p++)
				free(pl[p]);
			if (rc) {
				free(w);
				return QTK_EXIT_FAIL;
			}
		}
		free(w);
	}
	return QTK_EXIT_OK;
}

/* ---- options, OpenBLAS's kernel, main ----------------------------------- */

/* "MxK": two numbers of 1 to 2^20 (qtk_parse_u64: digits only) */
static int parse_shape(const char *s, uint64_t *m, uint64_t *k)
{
	const char *x = strpbrk(s, "xX");
	char first[32];

	if (!x || (size_t)(x - s) >= sizeof first)
		return -1;
	memcpy(first, s, (size_t)(x - s));
	first[x - s] = 0;
	return qtk_parse_u64("MxK", first, 1, 1u << 20, m, NULL) ||
	       qtk_parse_u64("MxK", x + 1, 1, 1u << 20, k, NULL) ? -1 : 0;
}

static int parse_schemes(bench_opts *o, const char *list)
{
	char buf[256], *save = NULL;

	snprintf(buf, sizeof buf, "%s", list);
	o->nschemes = 0;
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int id = qtk_q_scheme_from_name(tok);
		if (id < 0 || !qtk_q_scheme_get((qtk_scheme_id)id)->quantized ||
		    o->nschemes == QTK_SCHEME_COUNT)
			return -1;
		o->schemes[o->nschemes++] = id;
	}
	return o->nschemes ? 0 : -1;
}

static void cpu_model(char *buf, size_t n)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];

	snprintf(buf, n, "unknown CPU");
	while (f && fgets(line, sizeof line, f)) {
		char *c = strchr(line, ':');
		if (!strncmp(line, "model name", 10) && c) {
			snprintf(buf, n, "%s", c + 2);
			buf[strcspn(buf, "\n")] = 0;
			break;
		}
	}
	if (f)
		fclose(f);
}

static int run(bench_opts *o)
{
	bench_run R;
	qtk_rt_model *m = NULL;
	qtk_status st;
	char cpu[256];
	size_t llc = llc_bytes();
	int rc;

	memset(&R, 0, sizeof R);
	R.o = o;
	if (o->file && qtk_rt_open(o->file, 0, &m, &st) != QTK_OK)
		return cli_report(&st);
	if (qtk_rt_pool_create(o->threads, &R.pool, &st) != QTK_OK) {
		qtk_rt_close(m);
		return cli_report(&st);
	}
	/* flush: twice the last-level cache, at least 512 MiB, at most 2 GiB;
	 * QTK_BENCH_PROBE_BYTES (checked by main) sets it, and caps the hot
	 * buffer, for tests: below the cache the figures mean nothing */
	R.flush_len = llc * 2 < (512u << 20) ? (512u << 20) : llc * 2 > (2048u << 20) ? (2048u << 20) : llc * 2;
	R.hot_len = 256u << 20;
	{
		const char *pb = getenv("QTK_BENCH_PROBE_BYTES");
		uint64_t v;
		if (pb && *pb && qtk_parse_u64("QTK_BENCH_PROBE_BYTES", pb, 1u << 20, 2048u << 20, &v,
		                               &st) == QTK_OK) {
			R.flush_len = (size_t)v;
			R.hot_len = R.hot_len < R.flush_len ? R.hot_len : R.flush_len;
		}
	}
	R.flush = aligned_alloc(64, R.flush_len);
	R.hotbuf = aligned_alloc(64, R.hot_len);
	R.results = json_array();
	if (!R.flush || !R.hotbuf || !R.results) {
		fprintf(stderr, "qtk: bench: out of memory for the probe buffers\n");
		rc = QTK_EXIT_FAIL;
		goto out;
	}
	memset(R.flush, 1, R.flush_len);
	memset(R.hotbuf, 2, R.hot_len);
	probe_memory(&R);
	cpu_model(cpu, sizeof cpu);
	if (!o->json) {
		printf("qtk bench: %s, %u threads, kernels %s, OpenBLAS %s\n", cpu, o->threads,
		       qtk_rt_variant(), openblas_get_corename());
		printf("read bandwidth from memory, %u threads: %.1f GB/s (%zu MiB buffer); \"of bw\" "
		       "is GB/s of weights over the reads of that buffer which flush the caches "
		       "before each cold call (their median: the bound of the same seconds) or over "
		       "reading as many bytes again and again (hot)\n", o->threads, R.read_gbps,
		       R.flush_len >> 20);
		printf("median of %d calls after 2 warm-ups (GEMM: %d after 1); cold: caches flushed "
		       "before each call; spread: (max - min) / median\n", o->reps, (o->reps + 1) / 2);
	}
	rc = m ? bench_file(&R, m) : bench_generated(&R);
	if (o->json && rc == QTK_EXIT_OK) {
		json_t *root = json_object();
		json_object_set_new(root, "cpu", json_string(cpu));
		json_object_set_new(root, "threads", json_integer(o->threads));
		json_object_set_new(root, "variant", json_string(qtk_rt_variant()));
		json_object_set_new(root, "openblas_core", json_string(openblas_get_corename()));
		json_object_set_new(root, "read_gbps", json_real(R.read_gbps));
		json_object_set_new(root, "read_buffer_bytes", json_integer((json_int_t)R.flush_len));
		json_object_set_new(root, "results", R.results);
		R.results = NULL;
		json_dumpf(root, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(root);
	}
out:
	json_decref(R.results);
	free(R.flush);
	free(R.hotbuf);
	qtk_rt_pool_free(R.pool);
	qtk_rt_close(m);
	return rc;
}

int cmd_bench(int argc, char **argv)
{
	bench_opts o;
	int c, rc, as_is = 0;
	uint64_t u;

	memset(&o, 0, sizeof o);
	o.group = 32;
	o.batch = 64;
	o.paths = 2;
	o.layouts = 3;
	o.reps = 10;
	{
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		o.threads = n > 0 ? (unsigned)n : 1;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, "s:S:g:b:p:l:j:r:h", long_opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (o.nshapes == MAX_SHAPES ||
			    parse_shape(optarg, &o.shape[o.nshapes][0], &o.shape[o.nshapes][1]))
				return cli_usage_error("bench", "bad --shape '%s' (MxK, e.g. 4096x14336)", optarg);
			o.nshapes++;
			break;
		case 'S':
			if (parse_schemes(&o, optarg))
				return cli_usage_error("bench", "bad --scheme '%s' (quantized schemes, comma-separated)", optarg);
			break;
		case 'g':
			if (!strcmp(optarg, "row"))
				u = 0;
			else if ((rc = cli_uint("bench", "--group", optarg, 16, 4096, &u)))
				return rc;
			else if (u & (u - 1))
				return cli_usage_error("bench", "--group: %s is not a power of two", optarg);
			o.group = (uint32_t)u;
			break;
		case 'b':
			if ((rc = cli_uint("bench", "--batch", optarg, 0, 4096, &u)))
				return rc;
			o.batch = (size_t)u;
			break;
		case 'p':
			if (!strcmp(optarg, "int8"))
				o.paths = 2;
			else if (!strcmp(optarg, "float"))
				o.paths = 1;
			else if (!strcmp(optarg, "both"))
				o.paths = 3;
			else
				return cli_usage_error("bench", "bad --path '%s' (int8, float or both)", optarg);
			break;
		case 'l':
			if (!strcmp(optarg, "both"))
				o.layouts = 3;
			else if (!strcmp(optarg, "planes"))
				o.layouts = 1;
			else if (!strcmp(optarg, "interleaved"))
				o.layouts = 2;
			else
				return cli_usage_error("bench", "bad --layout '%s' (both, planes or interleaved)", optarg);
			break;
		case 'j':
			if ((rc = cli_uint("bench", "--threads", optarg, 1, 1024, &u)))
				return rc;
			o.threads = (unsigned)u;
			break;
		case 'r':
			if ((rc = cli_uint("bench", "--reps", optarg, 1, 64, &u)))
				return rc;
			o.reps = (int)u;
			break;
		case OPT_BLAS_AS_IS:
			as_is = 1;
			break;
		case OPT_JSON:
			o.json = 1;
			break;
		case 'h':
			bench_usage(stdout);
			return QTK_EXIT_OK;
		default:
			return cli_usage_error("bench", "unknown option");
		}
	}
	if (optind < argc - 1)
		return cli_usage_error("bench", "one file at a time");
	if (optind < argc)
		o.file = argv[optind];
	if (!o.nshapes) {
		static const uint64_t def[3][2] = { { 4096, 4096 }, { 4096, 14336 }, { 14336, 4096 } };
		memcpy(o.shape, def, sizeof def);
		o.nshapes = 3;
	}
	if (!o.nschemes)
		for (int id = 0; id < QTK_SCHEME_COUNT; id++)
			if (qtk_q_scheme_get((qtk_scheme_id)id)->quantized)
				o.schemes[o.nschemes++] = id;
	(void)as_is; /* seen by main's fix_openblas */
	return run(&o);
}
