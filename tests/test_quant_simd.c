/* tests: SIMD quantize/dequantize/dot against the scalar reference (every
 * scheme x group x scale dtype x search x importance, random and adversarial
 * rows), the dot-product definition, search never worse than RTN, and the
 * MLX affine rule (QTK_QF_MLX_AFFINE) with hand-computed vectors. */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "qtk_quant.h"
#include "test.h"

enum { R = 6, C = 263 }; /* 263: odd, short last group for every group size */

static uint32_t seed = 777;
static float urand(void) /* [-1, 1) */
{
	seed = seed * 1664525u + 1013904223u;
	return (float)(seed >> 8) / 8388608.0f - 1.0f;
}

/* Row r of kind k: random, .5 ties, NF4 midpoints, outlier, subnormal,
 * mixed signed zeros, tiny normal, constant. */
static void fill(float *x, int kind)
{
	for (int r = 0; r < R; r++) {
		float *row = x + r * C;
		for (int i = 0; i < C; i++) {
			float u = urand();
			switch ((kind + r) % 8) {
			case 0: row[i] = u * 0.05f; break;
			case 1: row[i] = (float)((int)(u * 127.0f)) + 0.5f; break; /* int8 ties */
			case 2: row[i] = qtk_q_nf4_value((unsigned)i & 15) * 0.5f +
			                 qtk_q_nf4_value(((unsigned)i + 1) & 15) * 0.5f; break;
			case 3: row[i] = i % 37 == 5 ? 1e4f * u : u * 1e-2f; break;
			case 4: row[i] = u * 1e-39f; break; /* subnormal only */
			case 5: row[i] = i % 3 == 0 ? -0.0f : i % 3 == 1 ? 0.0f : fabsf(u); break;
			case 6: row[i] = u * 1e-30f; break; /* tiny but normal */
			default: row[i] = i % 64 < 40 ? 0.375f : u; break; /* constant runs */
			}
		}
	}
}

typedef struct {
	uint8_t c[R * C], s[R * C * 4], b[R * C * 4];
} planes;

static qtk_err quant_at(qtk_isa isa, const qtk_q_layout *L, const float *x,
                        const qtk_q_opts *o, planes *P, qtk_status *st)
{
	qtk_q_planes pp = { { P->c, P->s, P->b, NULL } };
	qtk_isa_force(isa);
	memset(P, 0xA5, sizeof *P);
	return qtk_q_quantize_rows(L, x, R, C, &pp, o, st);
}

static int cmp_planes(const qtk_q_layout *L, const planes *a, const planes *b)
{
	uint64_t sz[QTK_PLANE_MAX];
	if (qtk_q_plane_sizes(L, R, C, sz) != QTK_OK)
		return 0;
	return !memcmp(a->c, b->c, sz[0]) && !memcmp(a->s, b->s, sz[1]) &&
	       !memcmp(a->b, b->b, sz[2]);
}

TEST(quant_simd_quantize_bit_identical_every_isa)
{
	static const struct { qtk_scheme_id s; uint32_t f; } sch[] = {
		{ QTK_SCHEME_INT8, 0 }, { QTK_SCHEME_INT4, 0 }, { QTK_SCHEME_INT4_AFFINE, 0 },
		{ QTK_SCHEME_NF4, 0 }, { QTK_SCHEME_INT8_AFFINE, 0 },
		{ QTK_SCHEME_INT4_AFFINE, QTK_QF_MLX_AFFINE }, { QTK_SCHEME_INT8_AFFINE, QTK_QF_MLX_AFFINE },
	};
	static const uint32_t groups[] = { 16, 32, 64, 128, QTK_GROUP_ROW };
	static const qtk_dtype sdt[] = { QTK_DT_F16, QTK_DT_F32, QTK_DT_BF16 };
	static float x[R * C], imp[C], y0[R * C], y1[R * C];
	static planes p0, p1;
	qtk_isa best = qtk_isa_active();
	int tested = 0;

	if (!qtk_isa_supported(QTK_ISA_AVX2))
		SKIP("CPU has no AVX2: nothing to compare with scalar");
	if (!qtk_isa_supported(QTK_ISA_AVX512))
		fprintf(stderr, "  (CPU has no AVX-512: comparing AVX2 only)\n");
	for (int i = 0; i < C; i++)
		imp[i] = 0.25f + fabsf(urand());
	for (int kind = 0; kind < 8; kind++) {
		fill(x, kind);
		for (size_t k = 0; k < sizeof sch / sizeof sch[0]; k++)
			for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
				for (size_t d = 0; d < 3; d++)
					for (int mode = 0; mode < 4; mode++) {
		qtk_q_layout L = { sch[k].s, groups[g], sdt[d], sch[k].f, QTK_DT_F32 };
		qtk_q_opts o = { .search = mode & 1, .importance = mode & 2 ? imp : NULL,
		                 .tensor = "w" };
		qtk_status st0, st1;
		qtk_err e0 = quant_at(QTK_ISA_SCALAR, &L, x, &o, &p0, &st0);
		qtk_q_cplanes cp = { { p0.c, p0.s, p0.b, NULL } };
		const qtk_q_scheme *sc = qtk_q_scheme_get(L.scheme);
		float dot0 = 0;
		if (e0 == QTK_OK) {
			qtk_q_dequantize_rows(&L, &cp, R, C, y0);
			dot0 = sc->dot(&L, &cp, C, x + C);
		}
		for (int isa = QTK_ISA_AVX2; isa <= QTK_ISA_AVX512; isa++) {
			if (!qtk_isa_supported((qtk_isa)isa))
				continue;
			qtk_err e1 = quant_at((qtk_isa)isa, &L, x, &o, &p1, &st1);
			tested++;
			CHECK_MSG(e0 == e1 && (e0 != QTK_OK || cmp_planes(&L, &p0, &p1)) &&
			          (e0 == QTK_OK || !strcmp(st0.msg, st1.msg)),
			          "%s flags %u g%u %s search %d imp %d kind %d isa %s: differs (%d/%d)",
			          sc->name, L.flags, L.group, qtk_dtype_name(L.scale_dtype), mode & 1,
			          mode >> 1, kind, qtk_isa_name((qtk_isa)isa), e0, e1);
			if (e0 != QTK_OK)
				continue;
			qtk_q_dequantize_rows(&L, &cp, R, C, y1);
			CHECK_MSG(!memcmp(y0, y1, sizeof y0), "%s g%u isa %s: dequantize differs",
			          sc->name, L.group, qtk_isa_name((qtk_isa)isa));
			float dot1 = sc->dot(&L, &cp, C, x + C);
			CHECK_MSG(!memcmp(&dot0, &dot1, 4), "%s g%u isa %s: dot %g vs %g",
			          sc->name, L.group, qtk_isa_name((qtk_isa)isa), (double)dot0,
			          (double)dot1);
		}
					}
	}
	qtk_isa_force(best);
	CHECK(tested > 1000);
}

/* The code rules where they turn: a group whose first elements make the
 * reciprocal scale exactly 1 (int8: 127, int4: -8, nf4: 1; affine: 0 and
 * the top level, bias 0), then values on and one ulp either side of every
 * rounding point (int8: k + 1/2 and 1/2 - 2^-25; int4: k - 1/2; nf4: the
 * midpoints; affine: k + 1/2, 1/2 - 2^-25 and 1/2 - 2^-24), in both signs
 * where the scheme has them. Every ISA, f16 scales (the fused row kernels)
 * and f32 (the group path), groups of 16 to 128 and the whole row, RTN and
 * search: the scalar bytes. */
static size_t boundary_row(qtk_scheme_id s, float *x, size_t n)
{
	float pts[64], top = s == QTK_SCHEME_INT8_AFFINE ? 255.0f : 15.0f;
	size_t np = 0, k = 0;
	int affine = s == QTK_SCHEME_INT4_AFFINE || s == QTK_SCHEME_INT8_AFFINE;

	if (s == QTK_SCHEME_INT8 || affine) {
		static const float t[] = { 0.5f, 1.5f, 2.5f, 7.5f, 14.5f, 63.5f, 64.5f, 125.5f, 126.5f,
		                           127.0f, 254.5f };
		for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
			if (t[i] <= (affine ? top : 127.0f))
				pts[np++] = t[i];
		pts[np++] = 0x1.fffffep-2f; /* 1/2 - 2^-25 */
		pts[np++] = 0x1.fffffcp-2f;
	} else if (s == QTK_SCHEME_INT4) {
		for (int i = -7; i <= 8; i++)
			pts[np++] = (float)i - 0.5f;
	} else {
		/* the midpoints: the last value of each code (bisection) */
		for (unsigned i = 0; i < 15; i++) {
			float a = qtk_q_nf4_value(i), b = qtk_q_nf4_value(i + 1), m;
			while ((m = 0.5f * (a + b)) != a && m != b)
				*(qtk_q_nf4_code(m) == i ? &a : &b) = m;
			pts[np++] = a;
		}
	}
	if (affine) {
		x[k++] = 0.0f;
		x[k++] = top;
	} else {
		x[k++] = s == QTK_SCHEME_INT8 ? 127.0f : s == QTK_SCHEME_INT4 ? -8.0f : 1.0f;
	}
	for (size_t i = 0; k < n; i++) {
		float v = pts[(i / 6) % np];
		switch (i % 6) {
		case 1: v = nextafterf(v, 0.0f); break;
		case 2: v = nextafterf(v, INFINITY); break;
		case 3: v = -v; break;
		case 4: v = -nextafterf(v, 0.0f); break;
		case 5: v = -nextafterf(v, INFINITY); break;
		default: break;
		}
		/* stay inside the range the first elements set */
		if (affine)
			x[k++] = v >= 0.0f && v <= top ? v : 0.5f * top;
		else
			x[k++] = fabsf(v) <= fabsf(x[0]) ? v : x[0] * 0.5f;
	}
	return k;
}

TEST(quant_simd_code_boundaries_every_isa)
{
	static const struct { qtk_scheme_id s; uint32_t f; } sch[] = {
		{ QTK_SCHEME_INT8, 0 }, { QTK_SCHEME_INT4, 0 }, { QTK_SCHEME_NF4, 0 },
		{ QTK_SCHEME_INT4_AFFINE, 0 }, { QTK_SCHEME_INT8_AFFINE, 0 },
		{ QTK_SCHEME_INT4_AFFINE, QTK_QF_MLX_AFFINE }, { QTK_SCHEME_INT8_AFFINE, QTK_QF_MLX_AFFINE },
	};
	static const uint32_t groups[] = { 16, 32, 64, 128, QTK_GROUP_ROW };
	enum { N = 256 };
	static float x[N];
	static planes p0, p1;
	qtk_isa best = qtk_isa_active();
	int tested = 0;

	for (size_t k = 0; k < sizeof sch / sizeof sch[0]; k++) {
		qtk_q_layout L0 = { sch[k].s, 16, QTK_DT_F16, sch[k].f, QTK_DT_F32 };
		for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
			for (int f32 = 0; f32 < 2; f32++)
				for (int srch = 0; srch < 2; srch++) {
					qtk_q_layout L = L0;
					qtk_q_planes pp0 = { { p0.c, p0.s, p0.b, NULL } };
					qtk_q_planes pp1 = { { p1.c, p1.s, p1.b, NULL } };
					qtk_q_opts o = { .tensor = "w", .search = srch };
					uint64_t sz[QTK_PLANE_MAX];
					qtk_status st;
					L.group = groups[g];
					L.scale_dtype = f32 ? QTK_DT_F32 : QTK_DT_F16;
					/* the first group of every size starts with the setter */
					for (size_t at = 0; at < N; at += 128)
						boundary_row(sch[k].s, x + at, 128);
					REQUIRE(qtk_q_plane_sizes(&L, 1, N, sz) == QTK_OK);
					qtk_isa_force(QTK_ISA_SCALAR);
					REQUIRE(qtk_q_quantize_rows(&L, x, 1, N, &pp0, &o, &st) == QTK_OK);
					for (int isa = QTK_ISA_AVX2; isa <= QTK_ISA_AVX512; isa++) {
						if (!qtk_isa_supported((qtk_isa)isa))
							continue;
						qtk_isa_force((qtk_isa)isa);
						memset(&p1, 0xA5, sizeof p1);
						REQUIRE(qtk_q_quantize_rows(&L, x, 1, N, &pp1, &o, &st) == QTK_OK);
						CHECK_MSG(!memcmp(p0.c, p1.c, sz[0]) && !memcmp(p0.s, p1.s, sz[1]) &&
						          !memcmp(p0.b, p1.b, sz[2]),
						          "%s flags %u g%u %s search %d %s: codes differ",
						          qtk_q_scheme_get(sch[k].s)->name, L.flags, L.group,
						          qtk_dtype_name(L.scale_dtype), srch,
						          qtk_isa_name((qtk_isa)isa));
						tested++;
					}
				}
	}
	qtk_isa_force(best);
	if (!tested)
		SKIP("CPU has no AVX2: nothing to compare with scalar");
}

/* NaN / Inf give the same error and message at every ISA, wherever they are. */
TEST(quant_simd_nonfinite_same_error)
{
	static float x[R * C];
	static planes p0, p1;
	qtk_isa best = qtk_isa_active();
	fill(x, 0);
	for (int pos = 0; pos < 40; pos++) {
		size_t at = (size_t)(pos * 97) % (R * C);
		float keep = x[at];
		x[at] = pos & 1 ? NAN : -INFINITY;
		for (int s = QTK_SCHEME_INT8; s < QTK_SCHEME_COUNT; s++) {
			qtk_q_layout L = { (qtk_scheme_id)s, 32, QTK_DT_F16, 0, QTK_DT_F32 };
			qtk_q_opts o = { .tensor = "w", .row0 = 3 };
			qtk_status st0, st1;
			CHECK_EQ(quant_at(QTK_ISA_SCALAR, &L, x, &o, &p0, &st0), QTK_E_Q_NONFINITE);
			for (int isa = QTK_ISA_AVX2; isa <= QTK_ISA_AVX512; isa++) {
				if (!qtk_isa_supported((qtk_isa)isa))
					continue;
				CHECK_EQ(quant_at((qtk_isa)isa, &L, x, &o, &p1, &st1), QTK_E_Q_NONFINITE);
				CHECK_MSG(!strcmp(st0.msg, st1.msg), "'%s' vs '%s'", st0.msg, st1.msg);
			}
		}
		x[at] = keep;
	}
	qtk_isa_force(best);
}

/* The dot hook as docs/quantization.md defines it, written out again here:
 * per group 16 f32 lanes (element j of the group in lane j % 16) of
 * value*x and of x, folded l[i] += l[i+k] for k = 8,4,2,1, group value
 * S*d (+ b*X) in f32, groups summed in double. */
static float dot_def(const qtk_q_layout *L, const float *w_codes_val, const float *d,
                     const float *b, size_t cols, const float *x)
{
	size_t gl = L->group == QTK_GROUP_ROW ? cols : L->group;
	double acc = 0;
	for (size_t g = 0; g * gl < cols; g++) {
		float s[16] = { 0 }, sx[16] = { 0 };
		size_t n = cols - g * gl < gl ? cols - g * gl : gl;
		for (size_t j = 0; j < n; j++) {
			float v = w_codes_val[g * gl + j] * x[g * gl + j];
			s[j % 16] += v;
			sx[j % 16] += x[g * gl + j];
		}
		for (int k = 8; k; k /= 2)
			for (int i = 0; i < k; i++) {
				s[i] += s[i + k];
				sx[i] += sx[i + k];
			}
		float t = s[0] * d[g];
		if (b) {
			float u = b[g] * sx[0];
			t = t + u;
		}
		acc += (double)t;
	}
	return (float)acc;
}

TEST(quant_simd_dot_definition_and_accuracy)
{
	static float x[R * C], y[R * C], v[C];
	static planes P;
	qtk_isa best = qtk_isa_active();
	fill(x, 0);
	for (int s = QTK_SCHEME_INT8; s < QTK_SCHEME_COUNT; s++)
		for (int gi = 0; gi < 2; gi++) {
			qtk_q_layout L = { (qtk_scheme_id)s, gi ? QTK_GROUP_ROW : 32, QTK_DT_F32, 0,
			                   QTK_DT_F32 };
			const qtk_q_scheme *sc = qtk_q_scheme_get(L.scheme);
			qtk_q_opts o = { .tensor = "w" };
			qtk_status st;
			REQUIRE(quant_at(QTK_ISA_SCALAR, &L, x, &o, &P, &st) == QTK_OK);
			qtk_q_cplanes cp = { { P.c, P.s, P.b, NULL } };
			qtk_q_dequantize_rows(&L, &cp, R, C, y);
			/* code values from the dequantized row 0: v = (w - b) / d is
			 * exact only in special cases, so recover them from the codes */
			for (int i = 0; i < C; i++) {
				unsigned c = sc->code_bits == 8 ? P.c[i] : (P.c[i / 2] >> (4 * (i & 1))) & 15;
				v[i] = s == QTK_SCHEME_INT8 ? (float)(int8_t)c
				       : s == QTK_SCHEME_INT4 ? (float)((int)c - 8)
				       : s == QTK_SCHEME_NF4 ? qtk_q_nf4_value(c) : (float)c;
			}
			static float d[C], bb[C]; /* the planes are not 4-aligned */
			memcpy(d, P.s, sizeof d);
			memcpy(bb, P.b, sizeof bb);
			const float *b = sc->has_bias ? bb : NULL;
			float want = dot_def(&L, v, d, b, C, x + C);
			double ref = 0, mag = 0;
			for (int i = 0; i < C; i++) {
				ref += (double)y[i] * (double)x[C + i];
				mag += fabs((double)y[i] * (double)x[C + i]);
			}
			for (int isa = QTK_ISA_SCALAR; isa <= QTK_ISA_AVX512; isa++) {
				if (!qtk_isa_supported((qtk_isa)isa))
					continue;
				qtk_isa_force((qtk_isa)isa);
				float got = sc->dot(&L, &cp, C, x + C);
				CHECK_MSG(!memcmp(&got, &want, 4), "%s g%u %s: dot %.9g, definition %.9g",
				          sc->name, L.group, qtk_isa_name((qtk_isa)isa), (double)got,
				          (double)want);
				CHECK_MSG(fabs((double)got - ref) <= 1e-5 * mag + 1e-30,
				          "%s: dot %g vs double %g", sc->name, (double)got, ref);
			}
		}
	qtk_isa_force(best);
}

/* Search keeps RTN unless a candidate is better, with the stored scales:
 * the searched tensor's error is never above RTN's. */
TEST(quant_simd_search_never_worse_than_rtn)
{
	static float x[R * C], y[R * C];
	static planes P;
	fill(x, 0);
	for (int s = QTK_SCHEME_INT8; s < QTK_SCHEME_COUNT; s++)
		for (int f = 0; f < 2; f++)
			for (int dt = 0; dt < 2; dt++) {
				qtk_q_layout L = { (qtk_scheme_id)s, 32, dt ? QTK_DT_BF16 : QTK_DT_F16,
				                   f ? QTK_QF_MLX_AFFINE : 0, QTK_DT_F32 };
				if (f && !qtk_q_scheme_get(L.scheme)->has_bias)
					continue;
				double e[2];
				for (int srch = 0; srch < 2; srch++) {
					qtk_q_opts o = { .tensor = "w", .search = srch };
					qtk_status st;
					REQUIRE(quant_at(qtk_isa_active(), &L, x, &o, &P, &st) == QTK_OK);
					qtk_q_cplanes cp = { { P.c, P.s, P.b, NULL } };
					qtk_q_dequantize_rows(&L, &cp, R, C, y);
					e[srch] = 0;
					for (int i = 0; i < R * C; i++)
						e[srch] += ((double)x[i] - (double)y[i]) *
						           ((double)x[i] - (double)y[i]);
				}
				/* 4-bit: clipping pays on these rows; 8-bit: at least as good */
				int strict = qtk_q_scheme_get(L.scheme)->code_bits == 4;
				CHECK_MSG(e[1] <= e[0] * (1 + 1e-6) && (!strict || e[1] < e[0]),
				          "%s mlx %d %s: search %g vs RTN %g", qtk_q_scheme_get(L.scheme)->name,
				          f, dt ? "bf16" : "f16", e[1], e[0]);
			}
}

/* ------------------------------------------------------------------ */
/* MLX affine rule                                                     */
/* ------------------------------------------------------------------ */

static void mlx16(qtk_scheme_id s, const float *x, float *scale, float *bias, unsigned *q)
{
	qtk_q_layout L = { s, 16, QTK_DT_F32, QTK_QF_MLX_AFFINE, QTK_DT_F32 };
	uint8_t c[16];
	qtk_q_planes P = { { c, scale, bias, NULL } };
	qtk_q_opts o = { .tensor = "w" };
	qtk_status st;
	for (int isa = QTK_ISA_SCALAR; isa <= QTK_ISA_AVX512; isa++) {
		if (!qtk_isa_supported((qtk_isa)isa))
			continue;
		qtk_isa_force((qtk_isa)isa);
		memset(c, 0xEE, sizeof c);
		CHECK_EQ(qtk_q_quantize_rows(&L, x, 1, 16, &P, &o, &st), QTK_OK);
		for (int i = 0; i < 16; i++) {
			unsigned v = s == QTK_SCHEME_INT8_AFFINE ? c[i] : (c[i / 2] >> (4 * (i & 1))) & 15;
			CHECK_MSG(isa == QTK_ISA_SCALAR || v == q[i], "isa %d elem %d: %u vs %u",
			          isa, i, v, q[i]);
			q[i] = v;
		}
	}
}

TEST(quant_mlx_affine_golden)
{
	qtk_isa best = qtk_isa_active();
	float s, b;
	unsigned q[16];

	/* |min| > |max|: edge = min = -2, scale (3.75/15 = 0.25) positive,
	 * q0 = -8, scale = -2/-8, bias = -2; codes rint((x+2)/0.25) with ties
	 * to even (0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 8.5 -> 8, 14.5 -> 14) */
	const float a[16] = { -2, 1.75f, -1.875f, -1.625f, -1.375f, 0.125f, 1.625f, 0,
	                      1, -1, 0.5f, -0.5f, 1.5f, -1.5f, 0.25f, -0.25f };
	const unsigned qa[16] = { 0, 15, 0, 2, 2, 8, 14, 8, 12, 4, 10, 6, 14, 2, 9, 7 };
	mlx16(QTK_SCHEME_INT4_AFFINE, a, &s, &b, q);
	CHECK(s == 0.25f && b == -2.0f);
	for (int i = 0; i < 16; i++)
		CHECK_MSG(q[i] == qa[i], "a[%d]: code %u, want %u", i, q[i], qa[i]);

	/* |max| >= |min|: edge = max = 2, scale negated: -(3/15); q0 =
	 * rint(2 / -0.2) = -10, scale = 2 / -10 (negative), bias = 2;
	 * x = -1 -> rint(15) = 15, x = 2 -> 0, x = 0 -> 10 */
	float bx[16] = { 2, -1, 0, 1, -0.6f, 0.4f, 2, 2, 2, 2, 2, 2, 2, 2, 2, -1 };
	mlx16(QTK_SCHEME_INT4_AFFINE, bx, &s, &b, q);
	float want_s = 2.0f / rintf(2.0f / -(3.0f / 15.0f));
	CHECK(s == want_s && s < 0 && b == 2.0f);
	CHECK(q[0] == 0 && q[1] == 15 && q[2] == 10 && q[3] == 5 && q[4] == 13 && q[5] == 8);

	/* q0 = 0: range below 15e-7, so scale = -1e-7 (the floor, negated);
	 * edge = max = 3e-8, rint(3e-8 / -1e-7) = -0 -> bias 0; codes 0 */
	float cx[16] = { 3e-8f, -1e-8f, 0, 2e-8f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
	mlx16(QTK_SCHEME_INT4_AFFINE, cx, &s, &b, q);
	CHECK(s == -1e-7f && b == 0.0f);
	for (int i = 0; i < 16; i++)
		CHECK_EQ(q[i], 0u);

	/* all zero: the same rule, no special case (scale -1e-7, bias 0) */
	float zx[16] = { 0 };
	mlx16(QTK_SCHEME_INT4_AFFINE, zx, &s, &b, q);
	CHECK(s == -1e-7f && b == 0.0f && q[0] == 0 && q[15] == 0);

	/* 8-bit: edge = max = 1, scale -(2/255) = -0.00784313772, 1/scale =
	 * -127.499992, q0 = -127, scale = 1/-127, bias = 1; codes rint((x-1)/s):
	 * -1 -> 254, 0 -> 127, 0.5 -> rint(63.5) = 64, -0.5 -> rint(190.5) = 190 */
	float ex[16] = { -1, 1, 0, 0.5f, -0.5f, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 };
	mlx16(QTK_SCHEME_INT8_AFFINE, ex, &s, &b, q);
	CHECK(s == 1.0f / -127.0f && b == 1.0f);
	CHECK(q[0] == 254 && q[1] == 0 && q[2] == 127 && q[3] == 64 && q[4] == 190);
	qtk_isa_force(best);
}

TEST(quant_mlx_affine_layout_and_dequant)
{
	qtk_status st;
	qtk_q_layout L = { QTK_SCHEME_INT4_AFFINE, 32, QTK_DT_F16, QTK_QF_MLX_AFFINE, QTK_DT_F32 };
	CHECK_EQ(qtk_q_layout_check(&L, 4, 64, &st), QTK_OK);
	L.scheme = QTK_SCHEME_INT8_AFFINE;
	CHECK_EQ(qtk_q_layout_check(&L, 4, 64, &st), QTK_OK);
	qtk_scheme_id bad[] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4, QTK_SCHEME_NF4, QTK_SCHEME_F16 };
	for (size_t i = 0; i < 4; i++) {
		L.scheme = bad[i];
		L.group = bad[i] == QTK_SCHEME_F16 ? 0 : 32;
		CHECK_EQ(qtk_q_layout_check(&L, 4, 64, &st), QTK_E_ARG);
	}
	L.scheme = QTK_SCHEME_NF4;
	CHECK(strstr(st.msg, "MLX") != NULL || strstr(st.msg, "flags") != NULL);

	/* negative stored scale dequantizes as scale*q + bias */
	static float x[R * C], y[R * C];
	static planes P;
	fill(x, 0);
	L = (qtk_q_layout){ QTK_SCHEME_INT4_AFFINE, 32, QTK_DT_F32, QTK_QF_MLX_AFFINE, QTK_DT_F32 };
	qtk_q_opts o = { .tensor = "w" };
	REQUIRE(quant_at(qtk_isa_active(), &L, x, &o, &P, &st) == QTK_OK);
	qtk_q_cplanes cp = { { P.c, P.s, P.b, NULL } };
	qtk_q_dequantize_rows(&L, &cp, R, C, y);
	int neg = 0;
	float maxerr = 0;
	for (int i = 0; i < C; i++) {
		float sc, bi;
		memcpy(&sc, P.s + 4 * (i / 32), 4);
		memcpy(&bi, P.b + 4 * (i / 32), 4);
		neg += sc < 0;
		unsigned c = (P.c[i / 2] >> (4 * (i & 1))) & 15;
		CHECK(y[i] == (float)c * sc + bi);
		float e = fabsf(y[i] - x[i]);
		maxerr = e > maxerr ? e : maxerr;
		/* within one step: snapping the edge to a code can push the
		 * far end up to one step past the last code (then clipped) */
		CHECK_MSG(e <= fabsf(sc) * 1.001f + 1e-7f, "elem %d err %g step %g", i,
		          (double)e, (double)sc);
	}
	CHECK(neg > 0);
}
