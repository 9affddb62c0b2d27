/* tests: GGUF files through the runtime. Q8_0 / Q4_0 / Q4_1 blocks are
 * repacked at load into exactly the planes of the .qtk they were exported
 * from, so every kernel gives the same bytes on both; llama.cpp's own F32
 * file loads in place; other block types are refused by name. */
#include <math.h>
#include <stdlib.h>

#include "qtk_convert.h"
#include "qtk_runtime.h"
#include "test.h"
#include "test_conv_util.h"

static void rand_x(float *x, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		x[i] = t_rand_normal(&seed);
}

/* stories260K as a .qtk of scheme s (group 32) and its exact GGUF export. */
static int make_pair(qtk_scheme_id s, const char *qtk, const char *gguf)
{
	qtk_conv_opts o = { .input = t_data("stories260K/model.safetensors"), .output = qtk,
	                    .format = QTK_OUT_QTK, .scale_dtype = QTK_DT_F16, .threads = 2,
	                    .force = 1 };
	/* requantize: ffn_down's rows of 172 go to F16 (32 does not divide them) */
	qtk_export_opts e = { .input = qtk, .output = gguf, .format = QTK_OUT_GGUF, .threads = 2,
	                      .requantize = 1, .force = 1 };
	qtk_export_report *rep = NULL;
	qtk_status st;

	if (t_convert(&o, s, 32, NULL, NULL, &st) != QTK_OK ||
	    qtk_export(&e, &rep, &st) != QTK_OK) {
		printf("    %s\n", st.msg);
		return -1;
	}
	qtk_export_report_free(rep);
	return 0;
}

TEST(rt_gguf_blocks_run_like_the_qtk_of_the_same_codes)
{
	static const struct { qtk_scheme_id s; const char *type; } cases[] = {
		{ QTK_SCHEME_INT4, "Q4_0" }, { QTK_SCHEME_INT8, "Q8_0" },
		{ QTK_SCHEME_INT4_AFFINE, "Q4_1" },
	};
	qtk_rt_pool *pool;
	qtk_status st;

	REQUIRE(qtk_rt_pool_create(2, &pool, &st) == QTK_OK);
	for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
		qtk_rt_model *mq = NULL, *mg = NULL;
		int compared = 0;

		REQUIRE(make_pair(cases[c].s, t_tmp("m.qtk"), t_tmp("m.gguf")) == 0);
		REQUIRE(qtk_rt_open(t_tmp("m.qtk"), QTK_RT_VERIFY, &mq, &st) == QTK_OK);
		REQUIRE(qtk_rt_open(t_tmp("m.gguf"), QTK_RT_VERIFY, &mg, &st) == QTK_OK);
		CHECK(qtk_rt_gguf(mg) != NULL && qtk_rt_file(mg) == NULL);
		CHECK(qtk_rt_gguf(mq) == NULL && qtk_rt_metadata(mg) == NULL);
		CHECK_EQ(qtk_rt_verify(mg, &st), QTK_OK);
		for (size_t i = 0; i < qtk_rt_count(mq); i++) {
			const qtk_rt_tensor *a = qtk_rt_get(mq, i), *b;
			char gname[128];
			int qk;
			if (a->scheme != cases[c].s ||
			    qtk_gguf_llama_name(a->name, gname, sizeof gname, &qk) != QTK_OK || qk)
				continue; /* q/k rows are reordered in GGUF */
			b = qtk_rt_find(mg, gname);
			REQUIRE(b != NULL);
			if (qtk_q_scheme_get(b->scheme)->float_store) {
				/* requantized: rows not a multiple of 32 */
				CHECK(a->cols % 32 != 0 && b->zero_copy);
				continue;
			}
			CHECK_EQ(b->scheme, a->scheme);
			CHECK_EQ(b->group, 32);
			CHECK_EQ(b->rows, a->rows);
			CHECK_EQ(b->cols, a->cols);
			CHECK(!b->zero_copy);
			for (int p = 0; p < QTK_PLANE_MAX; p++) {
				CHECK_EQ(b->planes[p].size, a->planes[p].size);
				CHECK(b->planes[p].size == 0 ||
				      !memcmp(a->planes[p].data, b->planes[p].data, b->planes[p].size));
				CHECK((uintptr_t)b->planes[p].data % 64 == 0);
			}
			for (size_t batch = 1; batch <= 5; batch += 4)
				for (int path = 0; path < 2; path++) {
					float *x = malloc(batch * a->cols * sizeof(float));
					float *ya = malloc(batch * a->rows * sizeof(float));
					float *yb = malloc(batch * a->rows * sizeof(float));
					rand_x(x, batch * a->cols, i + batch);
					REQUIRE(qtk_rt_matmul(pool, a, (qtk_rt_path)path, x, batch, ya, &st) == QTK_OK);
					REQUIRE(qtk_rt_matmul(pool, b, (qtk_rt_path)path, x, batch, yb, &st) == QTK_OK);
					CHECK_MSG(!memcmp(ya, yb, batch * a->rows * sizeof(float)),
					          "%s %s: GGUF and .qtk products differ", cases[c].type, gname);
					free(x);
					free(ya);
					free(yb);
				}
			compared++;
		}
		printf("    %s: %d tensors compared\n", cases[c].type, compared);
		CHECK(compared >= 8);
		qtk_rt_close(mq);
		qtk_rt_close(mg);
	}
	qtk_rt_pool_free(pool);
}

/* llama.cpp's F32 file: every tensor viewed in place, products as BLAS's. */
TEST(rt_gguf_llama_cpp_f32_file)
{
	qtk_rt_model *m = NULL;
	qtk_status st;
	const qtk_rt_tensor *t;
	float x[64], y[512];

	REQUIRE(qtk_rt_open(t_data("stories260K/source-tinyllamas-stories-260k-f32.gguf"), 0, &m,
	                    &st) == QTK_OK);
	REQUIRE(qtk_rt_count(m) > 10);
	for (size_t i = 0; i < qtk_rt_count(m); i++) {
		t = qtk_rt_get(m, i);
		CHECK(t->zero_copy);
		CHECK_STR(qtk_q_scheme_get(t->scheme)->name, "f32");
		CHECK_EQ(t->planes[QTK_PLANE_CODES].size, t->rows * t->cols * 4);
	}
	t = qtk_rt_find(m, "blk.0.ffn_gate.weight");
	REQUIRE(t != NULL && t->cols == 64 && t->rows <= 512);
	rand_x(x, 64, 1);
	REQUIRE(qtk_rt_matmul(NULL, t, QTK_RT_INT8, x, 1, y, &st) == QTK_OK);
	for (size_t r = 0; r < t->rows; r++) {
		const float *w = (const float *)t->planes[QTK_PLANE_CODES].data + r * 64;
		double e = 0, mag = 0;
		for (size_t c = 0; c < 64; c++) {
			e += (double)w[c] * (double)x[c];
			mag += fabs((double)w[c] * (double)x[c]);
		}
		CHECK(fabs((double)y[r] - e) <= 64 * 0x1p-24 * mag);
	}
	CHECK(qtk_rt_find(m, "no.such.tensor") == NULL);
	qtk_rt_close(m);
}

/* A block type the runtime does not read: refused, naming tensor and type. */
TEST(rt_gguf_unsupported_type_is_named)
{
	qtk_gguf_desc d = { "w.q5", QTK_GGML_Q5_0, 2, { 32, 2, 1, 1 } };
	qtk_gguf_writer *w = NULL;
	qtk_write_opts wo = { .force = 1 };
	qtk_rt_model *m = NULL;
	uint8_t blk[2 * 22];
	qtk_status st;

	memset(blk, 0, sizeof blk);
	REQUIRE(qtk_gguf_writer_open(&w, t_tmp("q5.gguf"), NULL, &d, 1, &wo, &st) == QTK_OK);
	REQUIRE(qtk_gguf_writer_tensor_bytes(w, 0) == sizeof blk);
	REQUIRE(qtk_gguf_writer_put(w, 0, 0, blk, sizeof blk, &st) == QTK_OK);
	REQUIRE(qtk_gguf_writer_commit(w, &st) == QTK_OK);
	CHECK_EQ(qtk_rt_open(t_tmp("q5.gguf"), 0, &m, &st), QTK_E_UNSUPPORTED);
	CHECK(m == NULL);
	CHECK(strstr(st.msg, "'w.q5'") && strstr(st.msg, "Q5_0"));
	/* not a GGUF nor a .qtk */
	REQUIRE(t_write_file(t_tmp("junk"), "GGU", 3) == 0);
	CHECK(qtk_rt_open(t_tmp("junk"), 0, &m, &st) != QTK_OK);
	CHECK(m == NULL);
}
