/* tests: activation statistics files (formats/stats*.c) — qtk's own
 * safetensors form, llama.cpp's imatrix GGUF and legacy .dat: round trips,
 * lookups under HF and GGUF names, merging, and hostile inputs (truncated,
 * garbage, wrong shapes, bad values), each refused with a named error;
 * allocation and write failures leave nothing behind. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "qtk_formats.h"
#include "test.h"

/* A small set: two LLaMA weights in HF spelling (one with X^T X), one
 * weight whose name has no GGUF form. Values from the seeded stream. */
static qtk_stats *sample(int xtx)
{
	static const char *const names[] = { "model.layers.0.self_attn.q_proj.weight",
	                                     "model.layers.0.mlp.down_proj.weight",
	                                     "blocks.3.attn.qkv.weight" };
	static const uint64_t cols[] = { 8, 12, 5 };
	uint64_t seed = 42;
	qtk_stats *s;
	qtk_status st;

	if (qtk_stats_new(&s, &st))
		return NULL;
	for (int w = 0; w < 3; w++) {
		qtk_stats_entry *e;
		size_t n = 40 + 10 * (size_t)w;
		unsigned fl = QTK_STATS_SUM | (xtx && w == 0 ? QTK_STATS_XTX : 0);
		if (qtk_stats_add(s, names[w], cols[w], fl, &e, &st)) {
			qtk_stats_free(s);
			return NULL;
		}
		e->count = n;
		for (size_t t = 0; t < n; t++) {
			float x[16];
			for (uint64_t j = 0; j < cols[w]; j++) {
				x[j] = t_rand_normal(&seed) * (float)(j + 1);
				e->sum[j] += (double)x[j];
				e->sum2[j] += (double)x[j] * (double)x[j];
			}
			for (uint64_t i = 0; e->xtx && i < cols[w]; i++)
				for (uint64_t j = 0; j < cols[w]; j++)
					e->xtx[i * cols[w] + j] += (double)x[i] * (double)x[j];
		}
	}
	qtk_stats_info_of(s)->chunks = 3;
	qtk_stats_info_of(s)->chunk_size = 16;
	qtk_stats_add_dataset(s, "calib.txt", &st);
	return s;
}

static int close_rel(double a, double b, double tol)
{
	return fabs(a - b) <= tol * fmax(fabs(a), fabs(b)) + 1e-300;
}

TEST(stats_qtk_round_trip_exact)
{
	qtk_stats *s = sample(1), *r;
	qtk_stats_kind k;
	qtk_status st;
	const char *p = t_tmp("s.stats");

	REQUIRE(s);
	REQUIRE(qtk_stats_write(s, p, QTK_STATS_QTK, NULL, &st) == QTK_OK);
	REQUIRE(qtk_stats_open(p, &r, &k, &st) == QTK_OK);
	CHECK_EQ(k, QTK_STATS_QTK);
	CHECK_EQ(qtk_stats_count(r), 3);
	for (size_t i = 0; i < 3; i++) {
		const qtk_stats_entry *a = qtk_stats_get(s, i), *b = qtk_stats_get(r, i);
		CHECK_STR(a->name, b->name);
		CHECK_EQ(a->count, b->count);
		CHECK_EQ(a->cols, b->cols);
		CHECK(!memcmp(a->sum2, b->sum2, a->cols * 8) && !memcmp(a->sum, b->sum, a->cols * 8));
		CHECK((a->xtx == NULL) == (b->xtx == NULL));
		if (a->xtx && b->xtx)
			CHECK(!memcmp(a->xtx, b->xtx, a->cols * a->cols * 8));
	}
	CHECK_EQ(qtk_stats_info_of(r)->chunks, 3);
	CHECK_EQ(qtk_stats_info_of(r)->chunk_size, 16);
	CHECK_EQ(qtk_stats_info_of(r)->counts_chunks, 0);
	CHECK_EQ(qtk_stats_dataset_count(r), 1);
	CHECK_STR(qtk_stats_dataset(r, 0), "calib.txt");
	/* either spelling finds a weight */
	CHECK(qtk_stats_find(r, "blk.0.attn_q.weight") == qtk_stats_find(r,
	      "model.layers.0.self_attn.q_proj.weight") && qtk_stats_find(r, "blk.0.attn_q.weight"));
	CHECK(qtk_stats_find(r, "blocks.3.attn.qkv.weight") != NULL);
	CHECK(qtk_stats_find(r, "blk.1.attn_q.weight") == NULL);
	qtk_stats_free(r);
	qtk_stats_free(s);
}

TEST(stats_imatrix_round_trip)
{
	qtk_stats *s = sample(1), *r;
	qtk_stats_kind k;
	qtk_status st;
	const char *p = t_tmp("s.imatrix.gguf");
	qtk_gguf_file *g;

	REQUIRE(s);
	REQUIRE(qtk_stats_write(s, p, QTK_STATS_IMATRIX, NULL, &st) == QTK_OK);
	/* what llama-quantize asks for: the type and the three imatrix KVs,
	 * GGUF names */
	REQUIRE(qtk_gguf_open(p, &g, &st) == QTK_OK);
	CHECK(qtk_gguf_kv_find(g, "general.type") && qtk_gguf_kv_find(g, "imatrix.datasets") &&
	      qtk_gguf_kv_find(g, "imatrix.chunk_count") && qtk_gguf_kv_find(g, "imatrix.chunk_size"));
	CHECK(qtk_gguf_find(g, "blk.0.ffn_down.weight.in_sum2") != NULL);
	CHECK(qtk_gguf_find(g, "blk.0.attn_q.weight.counts") != NULL);
	CHECK(qtk_gguf_find(g, "blocks.3.attn.qkv.weight.in_sum2") != NULL);
	qtk_gguf_close(g);
	REQUIRE(qtk_stats_open(p, &r, &k, &st) == QTK_OK);
	CHECK_EQ(k, QTK_STATS_IMATRIX);
	CHECK_EQ(qtk_stats_count(r), 3);
	for (size_t i = 0; i < 3; i++) {
		const qtk_stats_entry *a = qtk_stats_get(s, i), *b = qtk_stats_find(r, a->name);
		REQUIRE(b);
		CHECK_STR(b->name, a->key); /* recorded in GGUF spelling */
		CHECK_EQ(a->count, b->count);
		CHECK(b->sum == NULL && b->xtx == NULL);
		for (uint64_t j = 0; j < a->cols; j++)
			CHECK_MSG(b->sum2[j] == (double)(float)a->sum2[j], "%s[%llu]", a->name,
			          (unsigned long long)j);
	}
	CHECK_EQ(qtk_stats_info_of(r)->chunks, 3);
	CHECK_EQ(qtk_stats_info_of(r)->chunk_size, 16);
	CHECK_STR(qtk_stats_dataset(r, 0), "calib.txt");
	qtk_stats_free(r);
	qtk_stats_free(s);
}

TEST(stats_dat_round_trip)
{
	qtk_stats *s = sample(0), *r, *m;
	qtk_status st;
	qtk_stats_kind k;
	const char *p = t_tmp("s.dat");

	REQUIRE(s);
	REQUIRE(qtk_stats_write(s, p, QTK_STATS_DAT, NULL, &st) == QTK_OK);
	REQUIRE(qtk_stats_open(p, &r, &k, &st) == QTK_OK);
	CHECK_EQ(k, QTK_STATS_DAT);
	CHECK_EQ(qtk_stats_info_of(r)->counts_chunks, 1);
	CHECK_EQ(qtk_stats_info_of(r)->chunks, 3);
	CHECK_STR(qtk_stats_dataset(r, 0), "calib.txt");
	for (size_t i = 0; i < 3; i++) {
		const qtk_stats_entry *a = qtk_stats_get(s, i), *b = qtk_stats_find(r, a->name);
		REQUIRE(b);
		/* the count is the chunks, tokens / 16 rounded up, as llama-imatrix;
		 * the mean of x^2 survives to F32 rounding */
		CHECK_EQ(b->count, (a->count + 15) / 16);
		for (uint64_t j = 0; j < a->cols; j++)
			CHECK(close_rel(b->sum2[j] / (double)b->count, a->sum2[j] / (double)a->count,
			                2e-7));
	}
	/* chunk counts do not mix with token counts; .dat with .dat does */
	REQUIRE(qtk_stats_new(&m, &st) == QTK_OK);
	CHECK_EQ(qtk_stats_merge(m, s, &st), QTK_OK);
	CHECK_EQ(qtk_stats_merge(m, r, &st), QTK_E_ARG);
	CHECK(strstr(st.msg, ".dat") != NULL);
	qtk_stats_free(m);
	REQUIRE(qtk_stats_new(&m, &st) == QTK_OK);
	CHECK_EQ(qtk_stats_merge(m, r, &st), QTK_OK);
	CHECK_EQ(qtk_stats_merge(m, r, &st), QTK_OK);
	CHECK_EQ(qtk_stats_get(m, 0)->count, 2 * qtk_stats_get(r, 0)->count);
	qtk_stats_free(m);
	qtk_stats_free(r);
	qtk_stats_free(s);
}

TEST(stats_merge_adds_and_drops_what_one_side_lacks)
{
	qtk_stats *a = sample(1), *b = sample(0), *m;
	qtk_status st;
	qtk_stats_entry *e, *x;

	REQUIRE(a && b && qtk_stats_new(&m, &st) == QTK_OK);
	REQUIRE(qtk_stats_merge(m, a, &st) == QTK_OK);
	REQUIRE(qtk_stats_merge(m, b, &st) == QTK_OK);
	e = qtk_stats_find(m, "blk.0.attn_q.weight");
	x = qtk_stats_find(a, "blk.0.attn_q.weight");
	REQUIRE(e && x);
	CHECK_EQ(e->count, 2 * x->count);
	CHECK(e->sum2[3] == 2 * x->sum2[3] && e->sum[3] == 2 * x->sum[3]);
	CHECK(e->xtx == NULL); /* b has none */
	CHECK_EQ(qtk_stats_info_of(m)->chunks, 6);
	CHECK_EQ(qtk_stats_dataset_count(m), 2);
	/* a weight of other width under the same name (GGUF spelling here) */
	qtk_stats_free(b);
	REQUIRE(qtk_stats_new(&b, &st) == QTK_OK);
	REQUIRE(qtk_stats_add(b, "blk.0.attn_q.weight", 9, 0, &e, &st) == QTK_OK);
	e->count = 1;
	CHECK_EQ(qtk_stats_merge(m, b, &st), QTK_E_ARG);
	CHECK(strstr(st.msg, "blk.0.attn_q.weight") && strstr(st.msg, "9"));
	/* the same weight twice in one set, in both spellings */
	CHECK_EQ(qtk_stats_add(b, "model.layers.0.self_attn.q_proj.weight", 9, 0, &e, &st),
	         QTK_E_ARG);
	qtk_stats_free(m);
	qtk_stats_free(a);
	qtk_stats_free(b);
}

/* ---- hostile files ------------------------------------------------------ */

static void expect_fail(const char *path, qtk_err code, const char *needle)
{
	qtk_stats *s = (qtk_stats *)1;
	qtk_status st;
	qtk_err rc = qtk_stats_open(path, &s, NULL, &st);

	CHECK_MSG(rc != QTK_OK && s == NULL, "%s opened", path);
	if (code)
		CHECK_MSG(rc == code, "%s: %s (%s)", path, qtk_err_name(rc), st.msg);
	CHECK_MSG(!needle || strstr(st.msg, needle), "%s: '%s' lacks '%s'", path, st.msg, needle);
}

/* A qtk statistics file of the tensors given (F64 unless I64 'count'). */
static void write_st(const char *path, const char *const *names, const uint64_t *len,
                     const double *const *vals, size_t n, int xtx_rows)
{
	qtk_st_desc d[8];
	const void *data[8];
	qtk_status st;

	for (size_t i = 0; i < n; i++) {
		int cnt = strstr(names[i], ".count") != NULL, x = strstr(names[i], ".xtx") != NULL;
		d[i] = (qtk_st_desc){ names[i], cnt ? QTK_DT_I64 : QTK_DT_F64, x ? 2 : 1,
		                      { x ? (uint64_t)xtx_rows : len[i], len[i] } };
		data[i] = vals[i];
	}
	CHECK_EQ(qtk_st_write(path, d, data, n, NULL, &(qtk_write_opts){ .force = 1 }, &st), QTK_OK);
}

TEST(stats_qtk_malformed)
{
	const char *p = t_tmp("bad.stats");
	double s2[4] = { 1, 2, 3, 4 }, sm[5] = { 0 }, nan_s2[4] = { 1, 2, NAN, 4 };
	double big[4] = { 100, 0, 0, 0 }, xtx[16] = { 0 };
	int64_t one = 1, neg = -3;
	const double *v_cnt = (const double *)&one, *v_neg = (const double *)&neg;

	{ /* a sum of another width */
		const char *n[] = { "w.sum2", "w.count", "w.sum" };
		const double *v[] = { s2, v_cnt, sm };
		write_st(p, n, (uint64_t[]){ 4, 1, 5 }, v, 3, 0);
		expect_fail(p, QTK_E_FORMAT, "'w.sum'");
	}
	{ /* NaN */
		const char *n[] = { "w.sum2", "w.count" };
		const double *v[] = { nan_s2, v_cnt };
		write_st(p, n, (uint64_t[]){ 4, 1 }, v, 2, 0);
		expect_fail(p, QTK_E_FORMAT, "channel 2");
	}
	{ /* a negative count */
		const char *n[] = { "w.sum2", "w.count" };
		const double *v[] = { s2, v_neg };
		write_st(p, n, (uint64_t[]){ 4, 1 }, v, 2, 0);
		expect_fail(p, QTK_E_FORMAT, "token count -3");
	}
	{ /* no count */
		const char *n[] = { "w.sum2" };
		const double *v[] = { s2 };
		write_st(p, n, (uint64_t[]){ 4 }, v, 1, 0);
		expect_fail(p, QTK_E_FORMAT, "'w.count'");
	}
	{ /* a sum the sums of squares cannot allow (|sum x| > sqrt(n sum x^2)) */
		const char *n[] = { "w.sum2", "w.count", "w.sum" };
		const double *v[] = { s2, v_cnt, big };
		write_st(p, n, (uint64_t[]){ 4, 1, 4 }, v, 3, 0);
		expect_fail(p, QTK_E_FORMAT, "channel 0");
	}
	{ /* a tensor of no weight, an unknown tensor */
		const char *n[] = { "w.sum2", "w.count", "v.sum" };
		const double *v[] = { s2, v_cnt, s2 };
		write_st(p, n, (uint64_t[]){ 4, 1, 4 }, v, 3, 0);
		expect_fail(p, QTK_E_FORMAT, "'v.sum'");
		n[2] = "junk";
		write_st(p, n, (uint64_t[]){ 4, 1, 4 }, v, 3, 0);
		expect_fail(p, QTK_E_FORMAT, "'junk'");
	}
	{ /* one weight under both spellings */
		const char *n[] = { "blk.0.attn_q.weight.sum2", "blk.0.attn_q.weight.count",
		                    "model.layers.0.self_attn.q_proj.weight.sum2",
		                    "model.layers.0.self_attn.q_proj.weight.count" };
		const double *v[] = { s2, v_cnt, s2, v_cnt };
		write_st(p, n, (uint64_t[]){ 4, 1, 4, 1 }, v, 4, 0);
		expect_fail(p, QTK_E_FORMAT, "twice");
		expect_fail(p, 0, "bad.stats: ");
	}
	{ /* X^T X: diagonal not the sums of squares, then not symmetric */
		const char *n[] = { "w.sum2", "w.count", "w.xtx" };
		const double *v[] = { s2, v_cnt, xtx };
		write_st(p, n, (uint64_t[]){ 4, 1, 4 }, v, 3, 4);
		expect_fail(p, QTK_E_FORMAT, "X^T X[0][0]");
		for (int i = 0; i < 4; i++)
			xtx[i * 5] = s2[i];
		xtx[1] = 0.5;
		write_st(p, n, (uint64_t[]){ 4, 1, 4 }, v, 3, 4);
		expect_fail(p, QTK_E_FORMAT, "symmetric");
		write_st(p, n, (uint64_t[]){ 4, 1, 4 }, v, 3, 3);
		expect_fail(p, QTK_E_FORMAT, "'w.xtx'");
	}
}

/* Every prefix of a valid file is refused (or, for a .dat, read as what it
 * holds when it ends where the optional trailer may), and garbage too. */
TEST(stats_truncated_and_garbage)
{
	static const qtk_stats_kind kinds[] = { QTK_STATS_QTK, QTK_STATS_IMATRIX, QTK_STATS_DAT };
	qtk_stats *s = sample(1), *s0 = sample(0);
	const char *p = t_tmp("full"), *q = t_tmp("cut");
	uint64_t seed = 7;
	qtk_status st;

	REQUIRE(s && s0);
	for (int k = 0; k < 3; k++) {
		size_t n, ok = 0, whole = 0;
		unsigned char *b;
		qtk_gguf_file *g;
		REQUIRE(qtk_stats_write(k == 0 ? s : s0, p, kinds[k], &(qtk_write_opts){ .force = 1 },
		                        &st) == QTK_OK);
		REQUIRE((b = t_read_file(p, &n)) != NULL);
		/* a GGUF stays whole without the padding after its last tensor */
		if (kinds[k] == QTK_STATS_IMATRIX) {
			REQUIRE(qtk_gguf_open(p, &g, &st) == QTK_OK);
			for (size_t i = 0; i < qtk_gguf_count(g); i++) {
				const qtk_gguf_tensor *t = qtk_gguf_get(g, i);
				if (t->file_offset + t->nbytes > whole)
					whole = t->file_offset + t->nbytes;
			}
			qtk_gguf_close(g);
		}
		for (size_t len = 0; len < n; len++) {
			qtk_stats *r = NULL;
			if (len >= 300 && len + 64 < n && len % 13)
				continue; /* every length near the ends, a sample between */
			REQUIRE(t_write_file(q, b, len) == 0);
			if (qtk_stats_open(q, &r, NULL, &st) == QTK_OK) {
				ok++;
				qtk_stats_free(r);
			} else
				CHECK_MSG(strstr(st.msg, "cut") != NULL, "kind %d len %zu: '%s'", k, len,
				          st.msg);
		}
		/* a .dat is whole without its trailer, or without the dataset name */
		CHECK_EQ(ok, k == 2 ? 2 : k == 1 ? n - whole : 0);
		/* flipped bytes: refused or read, never a crash */
		for (int i = 0; i < 100; i++) {
			qtk_stats *r = NULL;
			unsigned char *c = malloc(n);
			memcpy(c, b, n);
			c[t_rand_u64(&seed) % n] ^= (unsigned char)(1 + t_rand_u64(&seed) % 255);
			REQUIRE(t_write_file(q, c, n) == 0);
			if (qtk_stats_open(q, &r, NULL, &st) == QTK_OK)
				qtk_stats_free(r);
			free(c);
		}
		free(b);
	}
	REQUIRE(t_write_file(q, "this is not a statistics file, just text\n", 41) == 0);
	expect_fail(q, QTK_E_FORMAT, "not a statistics file");
	REQUIRE(t_write_file(q, "", 0) == 0);
	expect_fail(q, 0, "cut");
	expect_fail(t_tmp("absent"), QTK_E_NOT_FOUND, "absent");
	/* a .dat claiming 2^31-1 values: refused before any allocation */
	REQUIRE(t_write_file(q, "\1\0\0\0\1\0\0\0w\1\0\0\0\377\377\377\177"
	                        "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 33) == 0);
	expect_fail(q, QTK_E_FORMAT, "2147483647 values");
	qtk_stats_free(s);
	qtk_stats_free(s0);
}

/* An imatrix GGUF with the tensors given (F32, [rows][cols]) and KVs. */
static void write_imatrix(const char *path, const char *type, const char *const *names,
                          const uint64_t (*ne)[2], const float *const *vals, size_t n)
{
	qtk_gguf_kvs *k = qtk_gguf_kvs_new();
	qtk_gguf_desc d[4];
	qtk_gguf_writer *w;
	qtk_status st;

	if (type)
		qtk_gguf_kvs_add_str(k, "general.type", type, strlen(type), &st);
	for (size_t i = 0; i < n; i++)
		d[i] = (qtk_gguf_desc){ names[i], QTK_GGML_F32, 2, { ne[i][0], ne[i][1], 1, 1 } };
	REQUIRE(qtk_gguf_writer_open(&w, path, k, d, n, &(qtk_write_opts){ .force = 1 }, &st) ==
	        QTK_OK);
	for (size_t i = 0; i < n; i++)
		qtk_gguf_writer_put(w, i, 0, vals[i], ne[i][0] * ne[i][1] * 4, &st);
	CHECK_EQ(qtk_gguf_writer_commit(w, &st), QTK_OK);
	qtk_gguf_kvs_free(k);
}

TEST(stats_imatrix_malformed)
{
	const char *p = t_tmp("bad.gguf");
	float s2[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, c1[2] = { 10, 10 }, half[1] = { 2.5f };
	float neg[4] = { 1, -2, 3, 4 }, zero[1] = { 0 };
	qtk_stats *s;
	qtk_status st;

	{
		const char *n[] = { "blk.0.attn_q.weight.in_sum2" };
		write_imatrix(p, "imatrix", n, (const uint64_t[][2]){ { 4, 1 } }, (const float *[]){ s2 }, 1);
		expect_fail(p, QTK_E_FORMAT, "no 'blk.0.attn_q.weight.counts'");
	}
	{
		const char *n[] = { "a.in_sum2", "a.counts" };
		write_imatrix(p, "imatrix", n, (const uint64_t[][2]){ { 4, 1 }, { 1, 1 } },
		              (const float *[]){ s2, half }, 2);
		expect_fail(p, QTK_E_FORMAT, "count 2.5");
		write_imatrix(p, "imatrix", n, (const uint64_t[][2]){ { 4, 1 }, { 1, 1 } },
		              (const float *[]){ neg, c1 }, 2);
		expect_fail(p, QTK_E_FORMAT, "channel 1");
		write_imatrix(p, "model", n, (const uint64_t[][2]){ { 4, 1 }, { 1, 1 } },
		              (const float *[]){ s2, c1 }, 2);
		expect_fail(p, QTK_E_FORMAT, "general.type is 'model'");
		/* per-expert rows: valid for llama.cpp, not held by qtk */
		write_imatrix(p, "imatrix", n, (const uint64_t[][2]){ { 4, 2 }, { 1, 2 } },
		              (const float *[]){ s2, c1 }, 2);
		expect_fail(p, QTK_E_UNSUPPORTED, "per-expert");
		write_imatrix(p, "imatrix", n, (const uint64_t[][2]){ { 4, 1 }, { 1, 2 } },
		              (const float *[]){ s2, c1 }, 2);
		expect_fail(p, QTK_E_FORMAT, "'a.counts'");
		/* a count of 0 (llama-imatrix writes entries no token reached):
		 * no statistics for that weight, and here none at all */
		write_imatrix(p, "imatrix", n, (const uint64_t[][2]){ { 4, 1 }, { 1, 1 } },
		              (const float *[]){ s2, zero }, 2);
		expect_fail(p, QTK_E_FORMAT, "no weight has statistics");
		/* no general.type (older files) is fine */
		write_imatrix(p, NULL, n, (const uint64_t[][2]){ { 4, 1 }, { 1, 1 } },
		              (const float *[]){ s2, c1 }, 2);
		CHECK_EQ(qtk_stats_open(p, &s, NULL, &st), QTK_OK);
		qtk_stats_free(s);
	}
	/* a model GGUF is not statistics */
	expect_fail(t_data("stories260K/source-tinyllamas-stories-260k-f32.gguf"), QTK_E_FORMAT,
	            "without imatrix statistics");
}

TEST(stats_write_refuses_what_the_target_cannot_hold)
{
	qtk_stats *s;
	qtk_stats_entry *e;
	qtk_status st;
	char name[80];

	REQUIRE(qtk_stats_new(&s, &st) == QTK_OK);
	CHECK_EQ(qtk_stats_write(s, t_tmp("empty.stats"), QTK_STATS_QTK, NULL, &st), QTK_E_ARG);
	memset(name, 'x', 60);
	strcpy(name + 60, ".weight");
	REQUIRE(qtk_stats_add(s, name, 2, 0, &e, &st) == QTK_OK);
	e->count = 1;
	e->sum2[0] = 1e300; /* fine in F64, not in F32 */
	CHECK_EQ(qtk_stats_write(s, t_tmp("a.gguf"), QTK_STATS_IMATRIX, NULL, &st), QTK_E_ARG);
	CHECK(strstr(st.msg, "63 bytes") != NULL);
	CHECK_EQ(qtk_stats_write(s, t_tmp("a.dat"), QTK_STATS_DAT, NULL, &st), QTK_E_Q_VALUE_RANGE);
	CHECK(strstr(st.msg, "does not fit F32") != NULL);
	CHECK_EQ(qtk_stats_write(s, t_tmp("a.stats"), QTK_STATS_QTK, NULL, &st), QTK_OK);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
	e->sum2[1] = -1;
	CHECK_EQ(qtk_stats_write(s, t_tmp("b.stats"), QTK_STATS_QTK, NULL, &st), QTK_E_FORMAT);
	qtk_stats_free(s);
}

/* The Nth allocation or write fails, for every N: each kind of file is
 * either written whole or not at all, and reading fails cleanly. */
TEST(stats_fault_sweep)
{
	static const qtk_stats_kind kinds[] = { QTK_STATS_QTK, QTK_STATS_IMATRIX, QTK_STATS_DAT };
	qtk_stats *s = sample(1), *s0 = sample(0);

	REQUIRE(s && s0);
	for (int k = 0; k < 3; k++)
		for (int fk = 0; fk < 2; fk++) {
			qtk_fault_kind kind = fk ? QTK_FAULT_WRITE : QTK_FAULT_ALLOC;
			int done = 0;
			for (uint64_t nth = 1; nth < 10000 && !done; nth++) {
				const char *p = t_tmp("out");
				qtk_status st;
				qtk_stats *r = NULL;
				qtk_err rc;
				unlink(p);
				qtk_fault_arm(kind, nth, EIO);
				rc = qtk_stats_write(k == 0 ? s : s0, p, kinds[k], NULL, &st);
				if (!rc)
					rc = qtk_stats_open(p, &r, NULL, &st);
				done = !qtk_fault_fired(kind);
				qtk_fault_arm(kind, 0, 0);
				qtk_stats_free(r);
				if (done)
					CHECK_MSG(rc == QTK_OK, "kind %d: %s", k, st.msg);
				else if (rc)
					CHECK_MSG(t_dir_entries(t_tmpdir()) <= 1 &&
					          (t_dir_entries(t_tmpdir()) == 0 || rc != QTK_E_NOMEM ||
					           t_exists(p)), "kind %d n %llu: %d files", k,
					          (unsigned long long)nth, t_dir_entries(t_tmpdir()));
			}
			CHECK(done);
		}
	qtk_stats_free(s);
	qtk_stats_free(s0);
}

/* The fuzz target's regression pass: every seed in tests/fuzz/seeds/stats/
 * (built_* are valid files of each kind; llama_imatrix_stories260k.gguf is
 * llama-imatrix's own output; crash_* once crashed and must be refused) through fuzz_stats_one, then deterministic
 * mutations of each: bit flips, truncations, 4- and 8-byte overwrites with
 * boundary values. A crash or sanitizer report fails the test. */
int fuzz_stats_one(const uint8_t *data, size_t size);

TEST(stats_fuzz_seeds_regression)
{
	/* valid files, then inputs that once crashed (refused) */
	static const char *const seeds[] = { "built_small.stats", "built_small.gguf",
	                                     "built_small.dat", "llama_imatrix_stories260k.gguf",
	                                     "crash_count_2e20.gguf" };
	static const uint64_t vals[] = { 0, 1, 3, 4, 8, 0x7f, 0xff, 0x7fffffff, 0xffffffffu,
	                                 0x3ff0000000000000ull, 0x7ff0000000000000ull,
	                                 0xfff8000000000000ull, UINT64_MAX, 1ull << 63 };
	uint64_t rs = 5;

	for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
		char path[256];
		size_t n;
		uint8_t *b, *m;
		qtk_stats *s;
		qtk_status st;

		snprintf(path, sizeof path, "tests/fuzz/seeds/stats/%s", seeds[i]);
		REQUIRE((b = t_read_file(path, &n)) != NULL && n > 0);
		if (strncmp(seeds[i], "crash_", 6))
			CHECK_MSG(qtk_stats_open_mem(b, n, path, &s, NULL, &st) == QTK_OK, "%s: %s", path,
			          st.msg);
		else
			CHECK_MSG(qtk_stats_open_mem(b, n, path, &s, NULL, &st) == QTK_E_FORMAT &&
			          strstr(st.msg, "2^53"), "%s: %s", path, st.msg);
		qtk_stats_free(s);
		CHECK_EQ(fuzz_stats_one(b, n), 0);
		m = malloc(n);
		REQUIRE(m);
		for (int k = 0; k < 3000; k++) {
			size_t at = (size_t)(t_rand_u64(&rs) % n), len = n;
			int kind = (int)(t_rand_u64(&rs) % 4);
			memcpy(m, b, n);
			if (kind == 0)
				m[at] ^= (uint8_t)(1u << (t_rand_u64(&rs) % 8));
			else if (kind == 1)
				len = at;
			else {
				uint64_t v = vals[t_rand_u64(&rs) % (sizeof vals / sizeof vals[0])];
				for (size_t j = 0; j < (kind == 2 ? 4u : 8u) && at + j < n; j++)
					m[at + j] = (uint8_t)(v >> (8 * j));
			}
			CHECK_EQ(fuzz_stats_one(m, len), 0);
		}
		free(m);
		free(b);
	}
}

/* What a PyTorch hook may write: F32 sums (read, widened), U64 counts;
 * what is refused: other dtypes, a count that is not one integer, a sum
 * of squares that is not [cols], an unknown format version. */
TEST(stats_qtk_dtypes_and_metadata)
{
	const char *p = t_tmp("d.stats");
	float s2f[3] = { 1.5f, 2.0f, 0.25f };
	double s2d[3] = { 1.5, 2.0, 0.25 }, cntd = 2;
	uint16_t s2h[3] = { 0x3e00, 0x4000, 0x3400 };
	int64_t cnt = 2;
	uint64_t cntu = 2;
	qtk_status st;
	qtk_stats *s;
	const char *meta_ok[] = { "qtk.stats", "1", "qtk.stats.counts", "chunks", NULL };
	const char *meta_v2[] = { "qtk.stats", "2", NULL };
	struct {
		qtk_dtype s2_dt, cnt_dt;
		uint32_t s2_ndim;
		const void *s2, *cnt;
		const char *const *meta;
		qtk_err want;
		const char *needle;
	} cases[] = {
		{ QTK_DT_F32, QTK_DT_U64, 1, s2f, &cntu, meta_ok, QTK_OK, NULL },
		{ QTK_DT_F16, QTK_DT_I64, 1, s2h, &cnt, NULL, QTK_E_FORMAT, "F16" },
		{ QTK_DT_F64, QTK_DT_F64, 1, s2d, &cntd, NULL, QTK_E_FORMAT, "must be I64 [1]" },
		{ QTK_DT_F64, QTK_DT_I64, 2, s2d, &cnt, NULL, QTK_E_FORMAT, "must be [cols]" },
		{ QTK_DT_F64, QTK_DT_I64, 1, s2d, &cnt, meta_v2, QTK_E_UNSUPPORTED, "version '2'" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		qtk_st_desc d[2] = {
			{ "w.sum2", cases[i].s2_dt, cases[i].s2_ndim, { cases[i].s2_ndim == 2 ? 1 : 3, 3 } },
			{ "w.count", cases[i].cnt_dt, 1, { 1 } },
		};
		const void *data[2] = { cases[i].s2, cases[i].cnt };
		qtk_err rc;
		REQUIRE(qtk_st_write(p, d, data, 2, cases[i].meta, &(qtk_write_opts){ .force = 1 },
		                     &st) == QTK_OK);
		rc = qtk_stats_open(p, &s, NULL, &st);
		CHECK_MSG(rc == cases[i].want && (!cases[i].needle || strstr(st.msg, cases[i].needle)),
		          "case %zu: %s %s", i, qtk_err_name(rc), rc ? st.msg : "");
		if (rc == QTK_OK) {
			const qtk_stats_entry *e = qtk_stats_find(s, "w");
			CHECK(e && e->count == 2 && e->sum2[0] == 1.5 && e->sum2[2] == 0.25);
			CHECK_EQ(qtk_stats_info_of(s)->counts_chunks, 1);
			/* chunk counts stay chunks through a .dat and back */
			CHECK_EQ(qtk_stats_write(s, t_tmp("d.dat"), QTK_STATS_DAT,
			                         &(qtk_write_opts){ .force = 1 }, &st), QTK_OK);
			qtk_stats_free(s);
			REQUIRE(qtk_stats_open(t_tmp("d.dat"), &s, NULL, &st) == QTK_OK);
			CHECK(qtk_stats_get(s, 0)->count == 2 && qtk_stats_get(s, 0)->sum2[1] == 2.0);
			/* no dataset: the imatrix KV is still there (llama-quantize wants it) */
			CHECK_EQ(qtk_stats_dataset_count(s), 0);
			CHECK_EQ(qtk_stats_write(s, t_tmp("d.gguf"), QTK_STATS_IMATRIX, NULL, &st), QTK_OK);
			qtk_stats_free(s);
			REQUIRE(qtk_stats_open(t_tmp("d.gguf"), &s, NULL, &st) == QTK_OK);
			CHECK_EQ(qtk_stats_dataset_count(s), 1);
			qtk_stats_free(s);
		}
	}
}
