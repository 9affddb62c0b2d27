/* tests/bench: the packed format.
 *  pack_open    open + validate + view every tensor of a generated >= 1 GB,
 *               1,024-tensor file; verify throughput next to a plain read.
 *  pack_gemv    the layout experiment: int4 GEMV 4096x4096 over separate
 *               planes (codes | scales) vs interleaved blocks (scale next to
 *               its codes), g32 / g64, scalar and AVX2.
 *  pack_zstd    zstd transport form on real checkpoints: 16-bit tensors with
 *               and without byte-plane split, and 4-bit codes. The safetensors
 *               reader is another part's work; a minimal parse lives here. */
#include <fcntl.h>
#include <immintrin.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "bench.h"
#include "qtk_runtime.h"

/* ---- pack_open ---------------------------------------------------------- */

#define BIG_TENSORS 1024
#define BIG_ROWS 1024
#define BIG_COLS 1024

static void big_descs(qtk_pack_desc *d, char (*names)[64])
{
	for (int i = 0; i < BIG_TENSORS; i++) {
		snprintf(names[i], 64, "model.layers.%d.mlp.w%d.weight", i / 8, i % 8);
		memset(&d[i], 0, sizeof d[i]);
		d[i].name = names[i];
		d[i].ndim = 2;
		d[i].shape[0] = BIG_ROWS;
		d[i].shape[1] = BIG_COLS;
		d[i].src_dtype = QTK_DT_BF16;
		d[i].layout.scheme = QTK_SCHEME_INT8;
		d[i].layout.group = 64;
		d[i].layout.scale_dtype = QTK_DT_F16;
		d[i].layout.dtype = QTK_DT_BF16;
	}
}

static int make_big(const char *path)
{
	static char names[BIG_TENSORS][64];
	static qtk_pack_desc d[BIG_TENSORS];
	qtk_pack_writer *w;
	qtk_status st;
	qtk_write_opts o = { .force = 1 };
	uint8_t *buf = malloc(BIG_ROWS * BIG_COLS);

	big_descs(d, names);
	for (size_t k = 0; k < BIG_ROWS * BIG_COLS; k++)
		buf[k] = (uint8_t)(k * 2654435761u >> 24);
	if (qtk_pack_writer_open(&w, path, d, BIG_TENSORS, &o, &st)) {
		printf("  cannot write %s: %s\n", path, st.msg);
		free(buf);
		return -1;
	}
	for (size_t i = 0; i < BIG_TENSORS; i++) {
		uint64_t scales = BIG_ROWS * (BIG_COLS / 64) * 2;
		for (size_t k = 0; k < scales; k += 2) { /* finite f16 scales */
			buf[k] = 0x00;
			buf[k + 1] = 0x20;
		}
		qtk_pack_writer_put(w, i, QTK_PLANE_SCALES, 0, buf, scales, NULL);
		for (size_t k = 0; k < scales; k++)
			buf[k] = (uint8_t)(k * 2654435761u >> 24);
		qtk_pack_writer_put(w, i, QTK_PLANE_CODES, 0, buf, BIG_ROWS * BIG_COLS, NULL);
	}
	free(buf);
	if (qtk_pack_writer_commit(w, "{\"bench\":true}", &st)) {
		printf("  cannot write %s: %s\n", path, st.msg);
		return -1;
	}
	return 0;
}

static void open_views(void *arg)
{
	qtk_rt_model *m;
	qtk_status st;
	uint64_t sum = 0;

	if (qtk_rt_open(arg, 0, &m, &st)) {
		printf("  %s\n", st.msg);
		return;
	}
	for (size_t i = 0; i < qtk_rt_count(m); i++) {
		const qtk_rt_tensor *t = qtk_rt_get(m, i);
		for (int p = 0; p < QTK_PLANE_MAX; p++)
			sum += t->planes[p].size + (uintptr_t)t->planes[p].data;
	}
	/* and a lookup by name of every tensor */
	for (size_t i = 0; i < qtk_rt_count(m); i++)
		sum += qtk_rt_find(m, qtk_rt_get(m, i)->name) != NULL;
	qtk_rt_close(m);
	if (sum == 42)
		puts("");
}

/* The runtime's open, then every byte of every plane read once (as the
 * first forward pass does): page faults of the mapping included. */
static void open_touch(void *arg)
{
	qtk_rt_model *m;
	qtk_status st;
	uint64_t x = 0;

	if (qtk_rt_open(arg, 0, &m, &st)) {
		printf("  %s\n", st.msg);
		return;
	}
	for (size_t i = 0; i < qtk_rt_count(m); i++) {
		const qtk_rt_tensor *t = qtk_rt_get(m, i);
		for (int p = 0; p < QTK_PLANE_MAX; p++) {
			const uint8_t *d = t->planes[p].data;
			uint64_t n = t->planes[p].size, w;
			for (uint64_t o = 0; o + 8 <= n; o += 8) {
				memcpy(&w, d + o, 8);
				x ^= w;
			}
		}
	}
	qtk_rt_close(m);
	if (x == 42)
		puts("");
}

static void verify_file(void *arg)
{
	qtk_pack_file *f;
	qtk_status st;

	if (qtk_pack_open(arg, 0, &f, &st) || qtk_pack_verify(f, &st))
		printf("  verify: %s\n", st.msg);
	qtk_pack_close(f);
}

static void plain_read(void *arg)
{
	static uint8_t buf[1 << 20];
	int fd = open(arg, O_RDONLY);
	uint64_t x = 0;
	ssize_t r;

	while ((r = read(fd, buf, sizeof buf)) > 0)
		x += buf[0];
	close(fd);
	if (x == 1)
		puts("");
}

BENCH(pack_open)
{
	char path[4096];
	struct stat sb;
	qtk_pack_file *f = NULL;
	double t, gb;

	snprintf(path, sizeof path, "%s/qtk-bench-pack-1g.qtk", b_dir());
	if (qtk_pack_open(path, 0, &f, NULL) != QTK_OK || qtk_pack_count(f) != BIG_TENSORS) {
		t = b_now();
		if (make_big(path))
			return;
		printf("  generated %s in %.1f s\n", path, b_now() - t);
	}
	qtk_pack_close(f);
	stat(path, &sb);
	gb = (double)sb.st_size / 1e9;
	printf("  file: %d tensors, %.3f GB\n", BIG_TENSORS, gb);
	plain_read(path); /* warm the page cache */
	t = b_best(20, open_views, path);
	printf("  open + validate + view + find every tensor: %.3f ms (best of 20)\n", t * 1e3);
	t = b_best(3, plain_read, path);
	printf("  plain read() of the file (warm cache):      %.2f GB/s\n", gb / t);
	{
		double tt = b_best(3, open_touch, path);
		printf("  qtk_rt_open + read every plane once:        %.2f GB/s (%.2fx the read's time)\n",
		       gb / tt, tt / t);
	}
	t = b_best(3, verify_file, path);
	printf("  qtk_pack_verify (crc32 + scale scan):       %.2f GB/s\n", gb / t);
}

/* ---- pack_gemv ---------------------------------------------------------- */

#define GN 4096
#define GK 4096

static float h2f(uint16_t h)
{
	return qtk_f16_to_f32(h);
}

/* y[r] = sum_g scale[r][g] * sum_{j in g} (q[r][j] - 8) * x[j] */
static void gemv_planes_ref(const uint8_t *codes, const uint16_t *scales, int g,
                            const float *x, float *y)
{
	for (int r = 0; r < GN; r++) {
		float acc = 0;
		for (int b = 0; b < GK / g; b++) {
			const uint8_t *q = codes + (size_t)r * GK / 2 + (size_t)b * g / 2;
			float s = 0;
			for (int j = 0; j < g / 2; j++)
				s += (float)((q[j] & 15) - 8) * x[b * g + 2 * j] +
				     (float)((q[j] >> 4) - 8) * x[b * g + 2 * j + 1];
			acc += h2f(scales[(size_t)r * (GK / g) + (size_t)b]) * s;
		}
		y[r] = acc;
	}
}

/* blocks: [f16 scale][g/2 code bytes], padded to 2 + g/2 bytes each */
static void gemv_blocks_ref(const uint8_t *blocks, int g, const float *x, float *y)
{
	size_t bs = 2 + (size_t)g / 2;

	for (int r = 0; r < GN; r++) {
		float acc = 0;
		for (int b = 0; b < GK / g; b++) {
			const uint8_t *blk = blocks + ((size_t)r * (GK / g) + (size_t)b) * bs;
			const uint8_t *q = blk + 2;
			float s = 0;
			for (int j = 0; j < g / 2; j++)
				s += (float)((q[j] & 15) - 8) * x[b * g + 2 * j] +
				     (float)((q[j] >> 4) - 8) * x[b * g + 2 * j + 1];
			acc += h2f((uint16_t)(blk[0] | blk[1] << 8)) * s;
		}
		y[r] = acc;
	}
}

/* 32 codes (16 bytes) against x[32] -> 8 partial sums */
__attribute__((target("avx2,fma"))) static inline __m256 dot32_avx2(const uint8_t *q,
                                                                  const float *x, __m256 s)
{
	__m128i b = _mm_loadu_si128((const __m128i *)q);
	__m128i lo = _mm_and_si128(b, _mm_set1_epi8(15));
	__m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(15));
	__m128i e0 = _mm_sub_epi8(_mm_unpacklo_epi8(lo, hi), _mm_set1_epi8(8));
	__m128i e1 = _mm_sub_epi8(_mm_unpackhi_epi8(lo, hi), _mm_set1_epi8(8));

	s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(e0)), _mm256_loadu_ps(x), s);
	s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(e0, 8))),
	                    _mm256_loadu_ps(x + 8), s);
	s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(e1)), _mm256_loadu_ps(x + 16), s);
	s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(e1, 8))),
	                    _mm256_loadu_ps(x + 24), s);
	return s;
}

__attribute__((target("avx2,fma"))) static float hsum(__m256 v)
{
	__m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	a = _mm_add_ps(a, _mm_movehl_ps(a, a));
	a = _mm_add_ss(a, _mm_shuffle_ps(a, a, 1));
	return _mm_cvtss_f32(a);
}

__attribute__((target("avx2,fma"))) static void gemv_planes_avx2(const uint8_t *codes,
        const uint16_t *scales, int g, const float *x, float *y)
{
	for (int r = 0; r < GN; r++) {
		__m256 acc = _mm256_setzero_ps();
		const uint8_t *q = codes + (size_t)r * GK / 2;
		const uint16_t *sc = scales + (size_t)r * (GK / g);
		for (int b = 0; b < GK / g; b++) {
			__m256 s = _mm256_setzero_ps();
			for (int j = 0; j < g; j += 32)
				s = dot32_avx2(q + (b * g + j) / 2, x + b * g + j, s);
			acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(sc[b])), s, acc);
		}
		y[r] = hsum(acc);
	}
}

__attribute__((target("avx2,fma"))) static void gemv_blocks_avx2(const uint8_t *blocks, int g,
        const float *x, float *y)
{
	size_t bs = 2 + (size_t)g / 2;

	for (int r = 0; r < GN; r++) {
		__m256 acc = _mm256_setzero_ps();
		for (int b = 0; b < GK / g; b++) {
			const uint8_t *blk = blocks + ((size_t)r * (GK / g) + (size_t)b) * bs;
			__m256 s = _mm256_setzero_ps();
			for (int j = 0; j < g; j += 32)
				s = dot32_avx2(blk + 2 + j / 2, x + b * g + j, s);
			acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f((uint16_t)(blk[0] | blk[1] << 8))), s, acc);
		}
		y[r] = hsum(acc);
	}
}

typedef struct {
	const uint8_t *codes, *blocks;
	const uint16_t *scales;
	int g, avx2;
	const float *x;
	float *y;
} gemv_arg;

static void run_planes(void *a)
{
	gemv_arg *p = a;
	if (p->avx2)
		gemv_planes_avx2(p->codes, p->scales, p->g, p->x, p->y);
	else
		gemv_planes_ref(p->codes, p->scales, p->g, p->x, p->y);
}

static void run_blocks(void *a)
{
	gemv_arg *p = a;
	if (p->avx2)
		gemv_blocks_avx2(p->blocks, p->g, p->x, p->y);
	else
		gemv_blocks_ref(p->blocks, p->g, p->x, p->y);
}

BENCH(pack_gemv)
{
	size_t ncodes = (size_t)GN * GK / 2;
	uint8_t *codes = malloc(ncodes), *blocks = malloc(ncodes + (size_t)GN * GK / 16 * 2);
	uint16_t *scales = malloc((size_t)GN * GK / 16 * 2);
	float *x = malloc(GK * sizeof *x), *y1 = malloc(GN * 4), *y2 = malloc(GN * 4);
	uint64_t s = 1;

	b_fill_normal(x, GK, 1.0f, 3);
	for (size_t k = 0; k < ncodes; k++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		codes[k] = (uint8_t)(s >> 56);
	}
	printf("  int4 GEMV %dx%d, f16 scales, 1 thread; GB/s = weight bytes / time\n", GN, GK);
	printf("  %-4s %-7s %-12s %10s %8s\n", "g", "isa", "layout", "ms", "GB/s");
	for (int g = 32; g <= 64; g *= 2) {
		size_t ng = (size_t)GN * GK / (size_t)g, bs = 2 + (size_t)g / 2;
		double bytes = (double)ncodes + (double)ng * 2;

		for (size_t b = 0; b < ng; b++) {
			uint16_t sc = qtk_f32_to_f16(0.01f + (float)(b % 7) * 0.001f);
			scales[b] = sc;
			blocks[b * bs] = (uint8_t)sc;
			blocks[b * bs + 1] = (uint8_t)(sc >> 8);
			memcpy(blocks + b * bs + 2, codes + b * (size_t)g / 2, (size_t)g / 2);
		}
		for (int avx2 = 0; avx2 < 2; avx2++) {
			gemv_arg a = { codes, blocks, scales, g, avx2, x, y1 };
			double tp, tb;

			if (avx2 && !qtk_isa_supported(QTK_ISA_AVX2))
				continue;
			tp = b_best(avx2 ? 10 : 3, run_planes, &a);
			a.y = y2;
			tb = b_best(avx2 ? 10 : 3, run_blocks, &a);
			printf("  %-4d %-7s %-12s %10.3f %8.2f\n", g, avx2 ? "avx2" : "scalar", "planes",
			       tp * 1e3, bytes / tp / 1e9);
			printf("  %-4d %-7s %-12s %10.3f %8.2f   identical results: %s\n", g,
			       avx2 ? "avx2" : "scalar", "interleaved", tb * 1e3, bytes / tb / 1e9,
			       memcmp(y1, y2, GN * 4) ? "NO" : "yes");
		}
	}
	free(codes);
	free(blocks);
	free(scales);
	free(x);
	free(y1);
	free(y2);
}

/* ---- pack_zstd ----------------------------------------------------------- */

/* Minimal safetensors walk: calls fn for each tensor (dtype name, bytes). */
typedef void (*st_fn)(const char *dtype, const uint8_t *data, size_t n, void *ctx);

static int st_walk(const char *path, st_fn fn, void *ctx)
{
	size_t n;
	uint8_t *b;
	uint64_t hlen = 0;
	json_t *h;
	const char *key;
	json_t *v;
	FILE *f = fopen(path, "rb");

	if (!f)
		return -1;
	fseek(f, 0, SEEK_END);
	n = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc(n);
	if (fread(b, 1, n, f) != n) {
		fclose(f);
		free(b);
		return -1;
	}
	fclose(f);
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | b[i];
	h = json_loadb((const char *)b + 8, (size_t)hlen, 0, NULL);
	json_object_foreach(h, key, v) {
		json_t *off = json_object_get(v, "data_offsets");
		size_t s0, s1;
		if (!strcmp(key, "__metadata__") || !off)
			continue;
		s0 = (size_t)json_integer_value(json_array_get(off, 0));
		s1 = (size_t)json_integer_value(json_array_get(off, 1));
		fn(json_string_value(json_object_get(v, "dtype")), b + 8 + hlen + s0, s1 - s0, ctx);
	}
	json_decref(h);
	free(b);
	return 0;
}

typedef struct {
	double raw, plain, split, codes_raw, codes_z;
	int level;
} zstats;

static size_t zsize(const void *p, size_t n, int level)
{
	size_t cap = ZSTD_compressBound(n), r;
	void *z = malloc(cap);

	r = ZSTD_compress(z, cap, p, n, level);
	free(z);
	return ZSTD_isError(r) ? n : r;
}

static void on16(const char *dt, const uint8_t *d, size_t n, void *ctx)
{
	zstats *z = ctx;
	uint8_t *s;

	if (strcmp(dt, "F16") && strcmp(dt, "BF16"))
		return;
	s = malloc(n);
	for (size_t k = 0; k < n / 2; k++) {
		s[k] = d[2 * k];
		s[n / 2 + k] = d[2 * k + 1];
	}
	z->raw += (double)n;
	z->plain += (double)zsize(d, n, z->level);
	z->split += (double)zsize(s, n, z->level);
	free(s);
}

/* int4 symmetric RTN, g32, codes only: what a 4-bit code plane holds. */
static void on32(const char *dt, const uint8_t *d, size_t n, void *ctx)
{
	zstats *z = ctx;
	size_t ne = n / 4, ng = ne / 32;
	uint8_t *c;

	if (strcmp(dt, "F32") || ne < 64 || ne % 32)
		return;
	c = calloc(ne / 2, 1);
	for (size_t g = 0; g < ng; g++) {
		float amax = 0, w[32];
		memcpy(w, d + g * 128, 128);
		for (int j = 0; j < 32; j++)
			amax = fabsf(w[j]) > amax ? fabsf(w[j]) : amax;
		for (int j = 0; j < 32; j++) {
			int q = amax > 0 ? (int)lrintf(w[j] / amax * 7.0f) : 0;
			size_t e = g * 32 + (size_t)j;
			c[e / 2] |= (uint8_t)((q + 8) << (4 * (e & 1)));
		}
	}
	z->codes_raw += (double)(ne / 2);
	z->codes_z += (double)zsize(c, ne / 2, z->level);
	free(c);
}

BENCH(pack_zstd)
{
	static const char *files16[] = {
		"tests/data/stories260K/model.f16.safetensors",
		"tests/data/stories260K/model.bf16.safetensors",
		"../shared/ckpts/human-models/blazepose-heavy.safetensors",
	};
	static const char *files32[] = {
		"tests/data/stories260K/model.safetensors",
		"../shared/ckpts/capp-gpt2/model.safetensors",
	};

	printf("  zstd level 9; 'split' = byte-plane split of 16-bit data before zstd\n");
	printf("  %-58s %10s %10s %10s %7s\n", "16-bit tensors of", "bytes", "zstd", "split+zstd",
	       "win");
	for (size_t i = 0; i < sizeof files16 / sizeof files16[0]; i++) {
		zstats z = { .level = 9 };
		if (st_walk(files16[i], on16, &z)) {
			printf("  %-58s (absent)\n", files16[i]);
			continue;
		}
		printf("  %-58s %10.0f %9.3fx %9.3fx %6.1f%%\n", files16[i], z.raw, z.raw / z.plain,
		       z.raw / z.split, 100.0 * (z.plain - z.split) / z.plain);
	}
	printf("  %-58s %10s %10s\n", "4-bit codes (int4 RTN g32) of F32 tensors of", "bytes", "zstd");
	for (size_t i = 0; i < sizeof files32 / sizeof files32[0]; i++) {
		zstats z = { .level = 9 };
		if (st_walk(files32[i], on32, &z)) {
			printf("  %-58s (absent)\n", files32[i]);
			continue;
		}
		printf("  %-58s %10.0f %9.3fx\n", files32[i], z.codes_raw, z.codes_raw / z.codes_z);
	}
}
