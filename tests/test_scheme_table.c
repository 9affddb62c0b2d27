/* tests: the scheme table and the ggml type table are the only lists of
 * schemes. Every test here loops over the rows, so a new row is tested by
 * what exists; one test fails when a scheme is named outside quant/. */
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>

#include "gen.h"
#include "qtk_formats.h"
#include "qtk_quant.h"
#include "test.h"

/* QTK_SCHEME_ names other parts may use: the table size, and RAW, the
 * id of "no scheme" (source bytes as they are, no codes, no kernel). */
static int allowed(const char *name)
{
	return !strcmp(name, "QTK_SCHEME_COUNT") || !strcmp(name, "QTK_SCHEME_RAW");
}

/* Count QTK_SCHEME_<NAME> tokens in path that allowed() refuses (failing
 * the test at each when report is set); *all counts every token. */
static int scan_file(const char *path, int *all, int report)
{
	FILE *f = fopen(path, "r");
	char line[4096], name[64];
	int bad = 0, ln = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof line, f)) {
		ln++;
		for (char *p = line; (p = strstr(p, "QTK_SCHEME_")) != NULL;) {
			size_t n = 0;
			while ((isalnum((unsigned char)p[n]) || p[n] == '_') && n < sizeof name - 1) {
				name[n] = p[n];
				n++;
			}
			name[n] = '\0';
			p += n;
			(*all)++;
			if (!allowed(name)) {
				bad++;
				if (report)
					t_fail_at(path, ln, "names scheme %s: read quant's table instead",
					          name);
			}
		}
	}
	fclose(f);
	return bad;
}

static int scan_dir(const char *dir, int *files, int *all)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[512];
	int bad = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		if (n < 3 || (strcmp(e->d_name + n - 2, ".c") && strcmp(e->d_name + n - 2, ".h")))
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		(*files)++;
		bad += scan_file(path, all, 1);
	}
	closedir(d);
	return bad;
}

TEST(scheme_ids_named_only_in_quant)
{
	static const char *const parts[] = { "convert", "formats", "runtime" };
	int files = 0, all = 0, qall = 0;

	for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
		scan_dir(parts[i], &files, &all);
	/* the scanner works: it finds the sources and quant's own names */
	CHECK_MSG(files > 40, "found %d source files: run from the repository root", files);
	CHECK_MSG(all > 0, "no QTK_SCHEME_ token at all outside quant/: the scan is broken");
	/* the scanner sees names: quant's table names every row but RAW */
	CHECK(scan_file("quant/scheme.c", &qall, 0) >= QTK_SCHEME_COUNT - 1);
}

TEST(scheme_table_rows_are_consistent)
{
	int defaults = 0;

	for (int i = 0; i < QTK_SCHEME_COUNT; i++) {
		const qtk_q_scheme *s = qtk_q_scheme_get((qtk_scheme_id)i);
		qtk_q_layout L = { .scheme = (qtk_scheme_id)i, .scale_dtype = QTK_DT_F16,
		                   .dtype = QTK_DT_F32 };
		qtk_status st;

		REQUIRE(s && s->name);
		CHECK_EQ(qtk_q_scheme_from_name(s->name), i);
		defaults += s->is_default;
		CHECK_MSG(s->verify_limit > 0 && s->verify_limit < 1, "%s: verify limit %g", s->name,
		          s->verify_limit);
		REQUIRE(qtk_q_scheme_get(s->wider) && qtk_q_scheme_get(s->requant_sym) &&
		        qtk_q_scheme_get(s->requant_affine));
		if (!s->quantized) {
			CHECK_MSG((int)s->wider == i && (int)s->requant_sym == i &&
			          (int)s->requant_affine == i, "%s: unquantized rows map to themselves",
			          s->name);
			if (s->float_store)
				CHECK_EQ(qtk_q_scheme_float(s->store_dtype), i);
			continue;
		}
		/* every quantized row has a kernel: a valid layout at group 32 */
		L.group = 32;
		CHECK_MSG(qtk_q_layout_check(&L, 4, 64, &st) == QTK_OK, "%s: %s", s->name, st.msg);
		CHECK_EQ(qtk_q_scheme_find(s->code_bits, s->mode, s->code_signed, s->code_offset), i);
		/* wider is wider: more bits (or a float store) */
		CHECK_MSG(qtk_q_scheme_get(s->wider)->code_bits > s->code_bits, "%s: wider %s",
		          s->name, qtk_q_scheme_get(s->wider)->name);
		/* requantize targets: the same bits, on a symmetric / affine grid */
		const qtk_q_scheme *rs = qtk_q_scheme_get(s->requant_sym);
		const qtk_q_scheme *ra = qtk_q_scheme_get(s->requant_affine);
		CHECK_MSG(rs->code_bits == s->code_bits && rs->mode == QTK_QMODE_SYM, "%s -> %s",
		          s->name, rs->name);
		CHECK_MSG(ra->code_bits == s->code_bits && ra->mode == QTK_QMODE_AFFINE, "%s -> %s",
		          s->name, ra->name);
		/* double quant where the row says so, refused elsewhere */
		L.flags = QTK_QF_DOUBLE_QUANT;
		CHECK_EQ(qtk_q_layout_check(&L, 4, 64, &st) == QTK_OK, s->double_quant != 0);
		L.flags = QTK_QF_MLX_AFFINE;
		CHECK_EQ(qtk_q_layout_check(&L, 4, 64, &st) == QTK_OK, s->has_bias != 0);
	}
	CHECK_EQ(defaults, 1);
	CHECK(qtk_q_scheme_get(qtk_q_scheme_default())->is_default);
}

/* Every row that quantizes reproduces Gaussian weights within its verify
 * limit (a weight error far below the output-error limit it stands for). */
TEST(scheme_table_every_row_round_trips)
{
	enum { R = 8, C = 256 };
	static float x[R * C], y[R * C];
	static uint8_t planes[3][R * C * 4];
	uint64_t seed = 7;

	gen_normal(x, R * C, 0.02f, &seed);
	for (int i = 0; i < QTK_SCHEME_COUNT; i++) {
		const qtk_q_scheme *s = qtk_q_scheme_get((qtk_scheme_id)i);
		qtk_q_layout L = { .scheme = (qtk_scheme_id)i, .scale_dtype = QTK_DT_F16,
		                   .dtype = QTK_DT_F32, .group = s->quantized ? 32 : 0 };
		qtk_q_planes P = { { planes[0], planes[1], planes[2], NULL } };
		qtk_q_cplanes CP = { { planes[0], planes[1], planes[2], NULL } };
		qtk_q_acc acc = { 0 };
		qtk_q_metrics m;
		qtk_status st;

		if (!s->quantize)
			continue;
		REQUIRE(qtk_q_quantize_rows(&L, x, R, C, &P, NULL, &st) == QTK_OK);
		qtk_q_dequantize_rows(&L, &CP, R, C, y);
		qtk_q_acc_add(&acc, x, y, R * C);
		qtk_q_metrics_from(&acc, &m);
		CHECK_MSG(m.rel_fro <= s->verify_limit, "%s: rel error %g > %g", s->name, m.rel_fro,
		          s->verify_limit);
	}
}

/* Every ggml type qtk holds: its layout maps back to it, its blocks round
 * trip, and ggml's dequantization equals qtk's on the same planes. */
TEST(ggml_type_table_every_held_type)
{
	enum { R = 2, C = 64 };
	static float x[R * C], ours[R * C], theirs[R * C];
	static uint8_t planes[3][R * C * 4], back[3][R * C * 4], blocks[R * C * 4];
	uint64_t seed = 11;
	int held = 0;

	gen_normal(x, R * C, 1.0f, &seed);
	for (uint32_t ty = 0; ty < QTK_GGML_TYPE_COUNT; ty++) {
		const qtk_ggml_type_info *gt = qtk_ggml_type_get(ty);
		qtk_q_layout L;
		uint32_t again;
		qtk_status st;

		if (!gt)
			continue;
		CHECK_EQ(qtk_ggml_block_bytes(ty) != 0, 1);
		if (!qtk_ggml_layout(ty, &L))
			continue;
		held++;
		if (gt->plain) {
			CHECK_EQ(L.dtype, gt->dtype);
			CHECK_EQ(qtk_ggml_type_of_dtype(gt->dtype), (int)ty);
			continue;
		}
		REQUIRE(gt->pack && gt->unpack && gt->deq);
		CHECK_EQ(qtk_ggml_type_of_scheme(L.scheme), (int)ty);
		CHECK_EQ(qtk_gguf_type_for_layout(&L, C, &again, &st), QTK_OK);
		CHECK_EQ(again, ty);
		qtk_q_planes P = { { planes[0], planes[1], planes[2], NULL } };
		qtk_q_cplanes CP = { { planes[0], planes[1], planes[2], NULL } };
		qtk_q_planes B = { { back[0], back[1], back[2], NULL } };
		REQUIRE(qtk_q_quantize_rows(&L, x, R, C, &P, NULL, &st) == QTK_OK);
		REQUIRE(qtk_ggml_pack_rows(ty, &CP, R, C, blocks, &st) == QTK_OK);
		memset(back, 0, sizeof back);
		REQUIRE(qtk_ggml_unpack_rows(ty, blocks, R, C, &B, &st) == QTK_OK);
		for (int p = 0; p < 3; p++) {
			uint64_t n = R * qtk_q_row_bytes(&L, C, p);
			CHECK_MSG(!memcmp(planes[p], back[p], (size_t)n), "%s: plane %d", gt->name, p);
		}
		qtk_q_dequantize_rows(&L, &CP, R, C, ours);
		for (size_t b = 0; b < R * C / gt->blck; b++)
			gt->deq(blocks + b * gt->bytes, theirs + b * gt->blck);
		CHECK_MSG(!memcmp(ours, theirs, sizeof ours), "%s: ggml's values differ", gt->name);
	}
	CHECK_MSG(held >= 11, "%d ggml types held", held);
}

/* Every scheme row a ggml type holds, and the LLAMA_FTYPE llama.cpp
 * gives a file of it (llama.h: ALL_F32 0, MOSTLY_F16 1, Q4_0 2, Q4_1 3,
 * Q8_0 7, BF16 32); 0 when no type holds the main scheme. */
TEST(ggml_file_type_of_every_scheme)
{
	static const struct { const char *type; uint32_t ftype; } llama[] = {
		{ "F32", 0 }, { "F16", 1 }, { "Q4_0", 2 }, { "Q4_1", 3 }, { "Q8_0", 7 },
		{ "BF16", 32 },
	};

	for (int i = 0; i < QTK_SCHEME_COUNT; i++) {
		int ty = qtk_ggml_type_of_scheme((qtk_scheme_id)i);
		uint32_t want = 0;

		for (size_t k = 0; ty >= 0 && k < sizeof llama / sizeof *llama; k++)
			if (!strcmp(qtk_ggml_type_name((uint32_t)ty), llama[k].type))
				want = llama[k].ftype;
		CHECK_MSG(qtk_ggml_file_type((qtk_scheme_id)i) == want, "%s: file type %u, want %u",
		          qtk_q_scheme_get((qtk_scheme_id)i)->name,
		          qtk_ggml_file_type((qtk_scheme_id)i), want);
	}
}

/* Every uniform quantized row has an MLX form of its own bits whose codes
 * round trip; the others are refused with their name. */
TEST(mlx_form_of_every_scheme)
{
	enum { C = 128 };
	static uint8_t codes[C], back[C];
	uint32_t words[C];

	for (int i = 0; i < QTK_SCHEME_COUNT; i++) {
		const qtk_q_scheme *s = qtk_q_scheme_get((qtk_scheme_id)i);
		qtk_q_layout L = { .scheme = (qtk_scheme_id)i, .group = 64, .scale_dtype = QTK_DT_F16 };
		unsigned bits = 0, off = 0;
		qtk_status st;
		int uniform = s->quantized &&
		              (s->mode == QTK_QMODE_SYM || s->mode == QTK_QMODE_AFFINE);

		CHECK_EQ(qtk_mlx_form(&L, C, &bits, &off, &st) == QTK_OK, uniform);
		if (!uniform) {
			CHECK_MSG(strstr(st.msg, s->name), "%s: %s", s->name, st.msg);
			continue;
		}
		CHECK_EQ(bits, s->code_bits);
		for (size_t k = 0; k < C * bits / 8; k++)
			codes[k] = (uint8_t)(k * 37 + 11);
		REQUIRE(qtk_mlx_pack_codes(&L, codes, 1, C, words, &st) == QTK_OK);
		REQUIRE(qtk_mlx_unpack_codes(&L, words, 1, C, back, &st) == QTK_OK);
		CHECK(!memcmp(codes, back, C * bits / 8));
	}
}
