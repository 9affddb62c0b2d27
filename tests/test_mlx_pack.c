/* tests: MLX packing. Codes go into U32 rows with element i at bits
 * [bits*i, bits*(i+1)) of the row's little-endian bit stream; a separate
 * bit-by-bit reader and the formula w = scales*q + biases (MLX's
 * dequantization, written here independently) must give back qtk's own
 * dequantized values bit for bit for int4, int8, int4-affine and
 * int8-affine, and the error of an RTN-quantized tensor stays within the
 * scheme's bound. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qtk_formats.h"
#include "test.h"

/* Bit k of the row's little-endian stream. */
static unsigned stream_bit(const uint32_t *w, uint64_t k)
{
	return (w[k / 32] >> (k % 32)) & 1u;
}

static unsigned mlx_code(const uint32_t *row, size_t i, unsigned bits)
{
	unsigned q = 0;
	for (unsigned b = 0; b < bits; b++)
		q |= stream_bit(row, (uint64_t)i * bits + b) << b;
	return q;
}

TEST(mlx_pack_bits_layout)
{
	uint8_t q[64], back[64];
	uint32_t w[16];
	qtk_status st;
	uint64_t rs = 3;

	for (int i = 0; i < 8; i++)
		q[i] = (uint8_t)i;
	CHECK_EQ(qtk_mlx_pack_bits(q, 8, 4, w, &st), QTK_OK);
	CHECK_EQ(w[0], 0x76543210u);
	for (unsigned bits = 1; bits <= 8; bits++) {
		size_t cols = 64; /* 64 * bits is a multiple of 32 for every width */
		for (size_t i = 0; i < cols; i++)
			q[i] = (uint8_t)(t_rand_u64(&rs) & ((1u << bits) - 1));
		CHECK_EQ(qtk_mlx_pack_bits(q, cols, bits, w, &st), QTK_OK);
		for (size_t i = 0; i < cols; i++)
			CHECK_MSG(mlx_code(w, i, bits) == q[i], "bits %u element %zu", bits, i);
		CHECK_EQ(qtk_mlx_unpack_bits(w, cols, bits, back, &st), QTK_OK);
		CHECK(!memcmp(back, q, cols));
	}
	CHECK_EQ(qtk_mlx_pack_bits(q, 12, 3, w, &st), QTK_E_GG_LAYOUT);
}

/* Random qtk planes for one scheme: rows x cols, group g, f16 scales. */
static void make_planes(qtk_scheme_id s, size_t rows, size_t cols, size_t g, uint8_t *codes,
                        uint16_t *scales, uint16_t *biases, uint64_t *rs)
{
	size_t row_bytes = s == QTK_SCHEME_INT4 || s == QTK_SCHEME_INT4_AFFINE ? cols / 2 : cols;
	for (size_t i = 0; i < rows * row_bytes; i++) {
		codes[i] = (uint8_t)t_rand_u64(rs);
		if (s == QTK_SCHEME_INT8 && codes[i] == 0x80)
			codes[i] = 0x81; /* q in [-127, 127] */
	}
	for (size_t i = 0; i < rows * cols / g; i++) {
		float sc = (float)(t_rand_u64(rs) % 20000 + 1) * 1e-6f;
		float bi = ((float)(t_rand_u64(rs) % 20001) - 10000.0f) * 1e-5f;
		scales[i] = qtk_f32_to_f16(sc);
		biases[i] = qtk_f32_to_f16(bi);
	}
}

/* qtk's dequantization from the plane convention (quant/qtk_quant.h). */
static float qtk_w(qtk_scheme_id s, const uint8_t *codes, const uint16_t *sc, const uint16_t *bi,
                   size_t cols, size_t g, size_t r, size_t c)
{
	size_t gi = (r * cols + c) / g;
	float scale = qtk_f16_to_f32(sc[gi]);
	switch (s) {
	case QTK_SCHEME_INT4:
		return scale * (float)((int)((codes[(r * cols + c) / 2] >> (4 * (c & 1))) & 15) - 8);
	case QTK_SCHEME_INT4_AFFINE:
		return scale * (float)((codes[(r * cols + c) / 2] >> (4 * (c & 1))) & 15) +
		       qtk_f16_to_f32(bi[gi]);
	case QTK_SCHEME_INT8:
		return scale * (float)(int8_t)codes[r * cols + c];
	default:
		return scale * (float)codes[r * cols + c] + qtk_f16_to_f32(bi[gi]);
	}
}

TEST(mlx_dequant_equals_qtk_exactly)
{
	static const qtk_scheme_id schemes[] = { QTK_SCHEME_INT4, QTK_SCHEME_INT4_AFFINE,
		QTK_SCHEME_INT8, QTK_SCHEME_INT8_AFFINE };
	static const uint32_t groups[] = { 32, 64, 128 };
	enum { ROWS = 3, COLS = 256 };
	uint64_t rs = 99;

	for (size_t si = 0; si < 4; si++)
		for (size_t gi = 0; gi < 3; gi++) {
			qtk_scheme_id s = schemes[si];
			uint32_t g = groups[gi];
			qtk_q_layout L = { .scheme = s, .group = g, .scale_dtype = QTK_DT_F16 };
			uint8_t codes[ROWS * COLS], back[ROWS * COLS];
			uint16_t sc[ROWS * COLS / 32], bi[ROWS * COLS / 32];
			uint16_t msc[ROWS * COLS / 32], mbi[ROWS * COLS / 32];
			uint32_t w[ROWS * COLS / 4];
			unsigned bits, off;
			size_t ng = ROWS * COLS / g, words;
			qtk_status st;
			int bad = 0;

			make_planes(s, ROWS, COLS, g, codes, sc, bi, &rs);
			REQUIRE(qtk_mlx_form(&L, COLS, &bits, &off, &st) == QTK_OK);
			words = COLS * bits / 32;
			REQUIRE(qtk_mlx_pack_codes(&L, codes, ROWS, COLS, w, &st) == QTK_OK);
			REQUIRE(qtk_mlx_scales(&L, sc, ng, QTK_DT_F16, msc, &st) == QTK_OK);
			REQUIRE(qtk_mlx_biases(&L, sc, bi, ng, QTK_DT_F16, mbi, &st) == QTK_OK);
			for (size_t r = 0; r < ROWS; r++)
				for (size_t c = 0; c < COLS; c++) {
					size_t gg = (r * COLS + c) / g;
					unsigned q = mlx_code(w + r * words, c, bits);
					float mw = qtk_f16_to_f32(msc[gg]) * (float)q + qtk_f16_to_f32(mbi[gg]);
					float qw = qtk_w(s, codes, sc, bi, COLS, g, r, c);
					bad += memcmp(&mw, &qw, 4) != 0 && !(mw == 0 && qw == 0);
				}
			CHECK_MSG(bad == 0, "scheme %d g%u: %d values differ", s, g, bad);
			REQUIRE(qtk_mlx_unpack_codes(&L, w, ROWS, COLS, back, &st) == QTK_OK);
			CHECK(!memcmp(back, codes, ROWS * COLS * bits / 8));
		}
}

/* RTN int4 symmetric (ggml's rule) at group 64, exported to MLX: the error
 * of every weight stays within half a step (or the clamp at +7) plus the
 * f16 rounding of d. */
TEST(mlx_int4_rtn_error_within_bound)
{
	enum { ROWS = 4, COLS = 256, G = 64 };
	float x[ROWS * COLS];
	uint8_t codes[ROWS * COLS / 2];
	uint16_t sc[ROWS * COLS / G], mb[ROWS * COLS / G];
	float dexact[ROWS * COLS / G];
	uint32_t w[ROWS * COLS / 8];
	qtk_q_layout L = { .scheme = QTK_SCHEME_INT4, .group = G, .scale_dtype = QTK_DT_F16 };
	qtk_status st;
	uint64_t rs = 5;
	double worst = 0;

	for (size_t i = 0; i < ROWS * COLS; i++)
		x[i] = (float)((double)(t_rand_u64(&rs) % 2000001) / 1e6 - 1.0);
	memset(codes, 0, sizeof codes);
	for (size_t gi = 0; gi < ROWS * COLS / G; gi++) {
		float amax = 0, max = 0, d, id;
		for (size_t j = 0; j < G; j++)
			if (amax < fabsf(x[gi * G + j])) {
				amax = fabsf(x[gi * G + j]);
				max = x[gi * G + j];
			}
		d = max / -8;
		sc[gi] = qtk_f32_to_f16(d);
		dexact[gi] = d;
		d = qtk_f16_to_f32(sc[gi]);
		id = d != 0 ? 1.0f / d : 0.0f;
		for (size_t j = 0; j < G; j++) {
			size_t e = gi * G + j;
			int q = (int)roundf(x[e] * id);
			q = q < -8 ? -8 : q > 7 ? 7 : q;
			codes[e / 2] |= (uint8_t)((q + 8) << (4 * (e & 1)));
		}
	}
	REQUIRE(qtk_mlx_pack_codes(&L, codes, ROWS, COLS, w, &st) == QTK_OK);
	REQUIRE(qtk_mlx_biases(&L, sc, NULL, ROWS * COLS / G, QTK_DT_F16, mb, &st) == QTK_OK);
	for (size_t r = 0; r < ROWS; r++)
		for (size_t c = 0; c < COLS; c++) {
			size_t e = r * COLS + c, gi = e / G;
			float d = qtk_f16_to_f32(sc[gi]);
			float mw = d * (float)mlx_code(w + r * (COLS / 8), c, 4) + qtk_f16_to_f32(mb[gi]);
			double err = fabs((double)mw - (double)x[e]);
			/* half a step, or (ggml's rule: the extreme maps to -8, so
			 * the other sign clamps at 7) the distance beyond 7 steps */
			double step = fabs((double)d);
			double bound = fmax(0.5 * step, fabs((double)x[e]) - 7 * step) +
			               8 * fabs((double)d - (double)dexact[gi]) + 1e-7;
			worst = fmax(worst, err / fabs((double)d));
			CHECK_MSG(err <= bound, "element %zu: error %g > bound %g", e, err, bound);
		}
	CHECK(worst > 0.3); /* the check is not vacuous: errors near half a step occur */
}

TEST(mlx_refuses_inexact_forms)
{
	qtk_q_layout L = { .scheme = QTK_SCHEME_NF4, .group = 64, .scale_dtype = QTK_DT_F16 };
	qtk_status st;
	unsigned bits, off;
	uint16_t s, out;

	CHECK_EQ(qtk_mlx_form(&L, 128, &bits, &off, &st), QTK_E_GG_LAYOUT);
	CHECK(strstr(st.msg, "nf4") != NULL);
	L.scheme = QTK_SCHEME_INT4;
	L.group = 16;
	CHECK_EQ(qtk_mlx_form(&L, 128, &bits, &off, &st), QTK_E_GG_LAYOUT);
	L.group = 64;
	CHECK_EQ(qtk_mlx_form(&L, 96, &bits, &off, &st), QTK_E_GG_LAYOUT);
	L.group = QTK_GROUP_ROW;
	CHECK_EQ(qtk_mlx_form(&L, 128, &bits, &off, &st), QTK_E_GG_LAYOUT);
	L.group = 64;
	/* -8 * 10000 overflows f16: a range error (callers may widen to F32),
	 * never an Inf written */
	s = qtk_f32_to_f16(10000.0f);
	out = 0;
	CHECK_EQ(qtk_mlx_biases(&L, &s, NULL, 1, QTK_DT_F16, &out, &st), QTK_E_Q_SCALE_RANGE);
	CHECK_MSG(strstr(st.msg, "bias of group 0 (-80000) does not fit F16"), "%s", st.msg);
	CHECK_EQ(out, 0);
	{
		float f;
		CHECK_EQ(qtk_mlx_biases(&L, &s, NULL, 1, QTK_DT_F32, &f, &st), QTK_OK);
		CHECK(f == -80000.0f);
	}
	/* an f16 scale with 11 significant bits does not fit bf16 */
	s = 0x3c01;
	CHECK_EQ(qtk_mlx_scales(&L, &s, 1, QTK_DT_BF16, &out, &st), QTK_E_GG_LAYOUT);
	s = 0x3c00;
	CHECK_EQ(qtk_mlx_scales(&L, &s, 1, QTK_DT_BF16, &out, &st), QTK_OK);
	CHECK_EQ(out, 0x3f80);
}
