/* tests: export through the pipeline. A .qtk is one more source: a tensor
 * of several million elements is split into row items across workers and
 * exported identically for -j1 and -j4 (carried over, and requantized from
 * the recorded source); every source (safetensors, GGUF, .qtk) goes to
 * every sink (.qtk, GGUF, MLX, memory), the .qtk's stored planes arriving
 * as they are; export's write, fsync and rename faults leave nothing, and
 * cancellation stops it. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "test.h"
#include "test_conv_util.h"
#include "test_mlx_util.h"

#define TPATH(var, rel)     \
	char var[1024];     \
	snprintf(var, sizeof var, "%s", t_tmp(rel))

#define BIG_ROWS 2048u
#define BIG_COLS 2048u  /* 4M elements: several work items */

static const char *stories(void)
{
	return t_data("stories260K/model.safetensors");
}

static qtk_err export_j(const char *in, const char *out, qtk_out_format fmt, int requant,
                        int threads, qtk_export_report **rep, qtk_status *st)
{
	qtk_export_opts o = { .input = in, .output = out, .format = fmt, .requantize = requant,
	                      .threads = threads, .force = 1 };
	qtk_export_report *r = NULL;
	qtk_err rc = qtk_export(&o, &r, st);

	if (rep)
		*rep = r;
	else
		qtk_export_report_free(r);
	return rc;
}

/* A checkpoint of one big weight 'w' and a small one 'v' (rows of 100). */
static void write_big(const char *path)
{
	float *w = malloc((size_t)BIG_ROWS * BIG_COLS * sizeof *w), v[64 * 100];
	qtk_st_desc d[2] = {
		{ .name = "w", .dtype = QTK_DT_F32, .ndim = 2, .shape = { BIG_ROWS, BIG_COLS } },
		{ .name = "v", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 64, 100 } },
	};
	const void *data[2] = { w, v };
	qtk_write_opts wo = { .force = 1 };
	uint64_t seed = 16;
	qtk_status st;

	REQUIRE(w);
	for (size_t i = 0; i < (size_t)BIG_ROWS * BIG_COLS; i++)
		w[i] = t_rand_normal(&seed);
	for (size_t i = 0; i < 64 * 100; i++)
		v[i] = t_rand_normal(&seed);
	REQUIRE(qtk_st_write(path, d, data, 2, NULL, &wo, &st) == QTK_OK);
	free(w);
}

/* The planes of every tensor of the .qtk at path equal those in memory. */
static int planes_equal_qtk(const char *path, const qtk_mem_model *m)
{
	qtk_pack_file *f;
	qtk_status st;
	int bad = 0;

	if (qtk_pack_open(path, 0, &f, &st) != QTK_OK)
		return 0;
	bad = qtk_pack_count(f) != m->n;
	for (size_t i = 0; !bad && i < m->n; i++) {
		const qtk_pack_tensor *t = qtk_pack_get(f, i);

		bad |= strcmp(t->name, m->t[i].name) != 0 ||
		       t->layout.scheme != m->t[i].layout.scheme;
		for (int p = 0; !bad && p < QTK_PLANE_DQ; p++) {
			void *buf = malloc(t->planes[p].size + 1);
			bad |= !buf || t->planes[p].size != m->t[i].sizes[p] ||
			       (t->planes[p].size &&
			        (qtk_pack_plane_read(f, t, p, buf, &st) != QTK_OK ||
			         memcmp(buf, m->t[i].planes[p], t->planes[p].size)));
			free(buf);
		}
		if (bad)
			t_fail_at(__FILE__, __LINE__, "tensor '%s' differs", t->name);
	}
	qtk_pack_close(f);
	return !bad;
}

/* qtk_convert of a .qtk into memory, items of chunk elements. */
static qtk_mem_model *qtk_to_memory(const char *q, int threads, uint64_t chunk,
                                    qtk_conv_report **rep)
{
	qtk_mem_model *m = NULL;
	qtk_conv_opts o = { .input = q, .format = QTK_OUT_MEMORY, .memory = &m,
	                    .threads = threads, .chunk_elems = chunk };
	qtk_conv_report *r = NULL;
	qtk_status st;

	CHECK_MSG(qtk_convert(&o, &r, &st) == QTK_OK, "%s", st.msg);
	if (rep)
		*rep = r;
	else
		qtk_conv_report_free(r);
	return m;
}

TEST(export_pipeline_huge_tensor_rows_split_same_for_any_j)
{
	TPATH(in, "big.safetensors");
	TPATH(q, "big.qtk");
	TPATH(q64, "big64.qtk");
	TPATH(g1, "j1.gguf");
	TPATH(g4, "j4.gguf");
	TPATH(m1, "j1.mlx");
	TPATH(m4, "j4.mlx");
	qtk_export_report *rep = NULL;
	qtk_conv_report *cr = NULL;
	qtk_mem_model *a, *b;
	qtk_status st;

	write_big(in);
	REQUIRE(mlx_test_convert(in, q, QTK_OUT_QTK, QTK_SCHEME_INT8, 32, NULL, QTK_DT_F16, &st)
	        == QTK_OK);
	/* carried over: Q8_0 blocks from the stored planes */
	CHECK_EQ(export_j(q, g1, QTK_OUT_GGUF, 1, 1, NULL, &st), QTK_OK);
	CHECK_EQ(export_j(q, g4, QTK_OUT_GGUF, 1, 4, &rep, &st), QTK_OK);
	REQUIRE(rep);
	CHECK_EQ(rep->threads, 4);
	CHECK_EQ(rep->exact, 1);          /* w */
	CHECK_EQ(rep->nrequantized, 1);   /* v: rows of 100 */
	qtk_export_report_free(rep);
	CHECK(t_same_file(g1, g4));
	CHECK_EQ(export_j(q, m1, QTK_OUT_MLX, 1, 1, NULL, &st), QTK_OK);
	CHECK_EQ(export_j(q, m4, QTK_OUT_MLX, 1, 4, NULL, &st), QTK_OK);
	CHECK_EQ(t_system("diff -r %s %s", m1, m4), 0);
	/* requantized from the recorded source: int4 g64 -> Q4_0 */
	REQUIRE(mlx_test_convert(in, q64, QTK_OUT_QTK, QTK_SCHEME_INT4, 64, NULL, QTK_DT_F16, &st)
	        == QTK_OK);
	CHECK_EQ(export_j(q64, g1, QTK_OUT_GGUF, 1, 1, NULL, &st), QTK_OK);
	CHECK_EQ(export_j(q64, g4, QTK_OUT_GGUF, 1, 4, &rep, &st), QTK_OK);
	CHECK(rep && rep->nrequantized == 2 && rep->exact == 0);
	qtk_export_report_free(rep);
	CHECK(t_same_file(g1, g4));
	/* small items (64 of them for 'w'): the same planes, the .qtk's */
	a = qtk_to_memory(q, 1, 1u << 16, NULL);
	b = qtk_to_memory(q, 4, 1u << 16, &cr);
	REQUIRE(a && b && cr);
	CHECK_EQ(cr->tensors[0].from, QTK_FROM_STORED);
	CHECK(planes_equal_qtk(q, a));
	CHECK(planes_equal_qtk(q, b));
	qtk_conv_report_free(cr);
	qtk_mem_model_free(a);
	qtk_mem_model_free(b);
}

/* Convert in to out (format fmt) with an int8 g32 recipe; a .qtk input
 * keeps its layouts and requantizes what the output cannot hold. */
static qtk_err conv_to(const char *in, const char *out, qtk_out_format fmt,
                       qtk_mem_model **mem, qtk_status *st)
{
	qtk_conv_opts o = { .input = in, .output = out, .format = fmt, .memory = mem,
	                    .scale_dtype = QTK_DT_F16, .threads = 2, .force = 1,
	                    .requantize = 1 };

	return t_convert(&o, QTK_SCHEME_INT8, 32, NULL, NULL, st);
}

TEST(export_pipeline_every_source_to_every_sink)
{
	static const qtk_out_format sinks[] = { QTK_OUT_QTK, QTK_OUT_GGUF, QTK_OUT_MLX,
	                                        QTK_OUT_MEMORY };
	static const char *const names[] = { "out.qtk", "out.gguf", "out.mlx", NULL };
	char srcs[3][512], ref_gguf[512];
	qtk_status st;

	snprintf(srcs[0], sizeof srcs[0], "%s", stories());
	snprintf(srcs[1], sizeof srcs[1], "%s", t_tmp("in.gguf"));
	snprintf(srcs[2], sizeof srcs[2], "%s", t_tmp("in.qtk"));
	snprintf(ref_gguf, sizeof ref_gguf, "%s", t_tmp("ref.gguf"));
	REQUIRE(mlx_test_convert(stories(), srcs[1], QTK_OUT_GGUF, QTK_SCHEME_F16, 32, NULL,
	                         QTK_DT_F16, &st) == QTK_OK);
	REQUIRE(conv_to(stories(), srcs[2], QTK_OUT_QTK, NULL, &st) == QTK_OK);
	REQUIRE(conv_to(stories(), ref_gguf, QTK_OUT_GGUF, NULL, &st) == QTK_OK);
	for (int s = 0; s < 3; s++)
		for (int k = 0; k < 4; k++) {
			qtk_mem_model *m = NULL;
			char out[512];
			qtk_err rc;

			snprintf(out, sizeof out, "%s", names[k] ? t_tmp(names[k]) : "");
			rc = conv_to(srcs[s], names[k] ? out : NULL, sinks[k], &m, &st);
			CHECK_MSG(rc == QTK_OK, "source %d sink %d: %s", s, k, st.msg);
			if (rc)
				continue;
			if (sinks[k] == QTK_OUT_MEMORY)
				CHECK(m && m->n > 0 && m->metadata_json);
			else
				CHECK(t_exists(out));
			if (s == 2 && sinks[k] == QTK_OUT_QTK) { /* planes as stored */
				qtk_mem_model *x = qtk_to_memory(out, 2, 0, NULL);
				CHECK(x && planes_equal_qtk(srcs[2], x));
				qtk_mem_model_free(x);
			}
			if (s == 2 && sinks[k] == QTK_OUT_GGUF) /* = convert's GGUF */
				CHECK(t_same_file(out, ref_gguf));
			if (s == 2 && sinks[k] == QTK_OUT_MLX) {
				mlx_cmp c = mlx_compare_qtk(out, srcs[2]);
				CHECK(c.bad == 0 && c.quantized > 0);
			}
			if (s == 2 && sinks[k] == QTK_OUT_MEMORY)
				CHECK(planes_equal_qtk(srcs[2], m));
			qtk_mem_model_free(m);
		}
	/* the .qtk written from a .qtk records the checkpoint: it exports
	 * with --requantize as the first does */
	CHECK_EQ(export_j(t_tmp("out.qtk"), t_tmp("again.gguf"), QTK_OUT_GGUF, 1, 2, NULL, &st),
	         QTK_OK);
	CHECK(t_same_file(t_tmp("again.gguf"), ref_gguf));
}

/* Every write, fsync and rename of an export failed in turn: the output
 * is not there, no temporary is left. */
static void export_sweep(const char *q, qtk_out_format fmt, qtk_fault_kind kind, int err)
{
	const char *out = t_tmp(fmt == QTK_OUT_GGUF ? "f.gguf" : "f.mlx");
	int before = t_dir_entries(t_tmpdir()), done = 0;

	for (uint64_t nth = 1; nth < 10000 && !done; nth++) {
		qtk_status st;
		qtk_err rc;

		qtk_fault_arm(kind, nth, err);
		rc = export_j(q, out, fmt, 1, 2, NULL, &st);
		done = !qtk_fault_fired(kind);
		qtk_fault_arm(kind, 0, 0);
		if (done) {
			CHECK_MSG(rc == QTK_OK, "kind %d: %s", kind, st.msg);
			break;
		}
		if (rc == QTK_OK) { /* absorbed after the rename: complete */
			CHECK_EQ(t_system("rm -rf %s", out), 0);
			continue;
		}
		CHECK_MSG(!t_exists(out), "kind %d n %llu left the output", kind,
		          (unsigned long long)nth);
		CHECK_MSG(t_dir_entries(t_tmpdir()) == before, "kind %d n %llu: %d entries, %d "
		          "before", kind, (unsigned long long)nth, t_dir_entries(t_tmpdir()), before);
	}
	CHECK(done);
	CHECK_EQ(t_system("rm -rf %s", out), 0);
}

TEST(export_pipeline_faults_leave_nothing)
{
	static const qtk_fault_kind kinds[] = { QTK_FAULT_WRITE, QTK_FAULT_FSYNC,
	                                        QTK_FAULT_RENAME, QTK_FAULT_OPEN };
	TPATH(q, "m.qtk");
	qtk_status st;

	/* nf4 g64: MLX requantizes everything, GGUF too */
	REQUIRE(mlx_test_convert(stories(), q, QTK_OUT_QTK, QTK_SCHEME_NF4, 64, NULL, QTK_DT_F16,
	                         &st) == QTK_OK);
	for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
		export_sweep(q, QTK_OUT_GGUF, kinds[k], EIO);
		export_sweep(q, QTK_OUT_MLX, kinds[k], ENOSPC);
	}
}

static void count_progress(void *ctx, size_t done, size_t total, uint64_t bytes_done,
                           uint64_t bytes_total, const char *tensor)
{
	(void)done, (void)total, (void)bytes_done, (void)bytes_total, (void)tensor;
	++*(int *)ctx;
}

TEST(export_pipeline_progress_and_cancel)
{
	TPATH(q, "m.qtk");
	TPATH(out, "o.gguf");
	volatile int cancel = 1;
	int calls = 0;
	qtk_export_opts o = { .input = q, .output = out, .format = QTK_OUT_GGUF, .requantize = 1,
	                      .threads = 2, .progress = count_progress, .progress_ctx = &calls };
	qtk_export_report *rep = NULL;
	qtk_status st;

	REQUIRE(mlx_test_convert(stories(), q, QTK_OUT_QTK, QTK_SCHEME_INT8, 32, NULL, QTK_DT_F16,
	                         &st) == QTK_OK);
	CHECK_EQ(qtk_export(&o, &rep, &st), QTK_OK);
	CHECK(rep && calls > 0);
	qtk_export_report_free(rep);
	CHECK_EQ(unlink(out), 0);
	o.cancel = &cancel;
	CHECK_EQ(qtk_export(&o, &rep, &st), QTK_E_INTERRUPTED);
	CHECK(rep == NULL && !t_exists(out));
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1); /* m.qtk */
}

TEST(export_pipeline_cli)
{
	const char *qb = getenv("QTK_BIN");
	TPATH(q, "m.qtk");
	TPATH(out, "o.gguf");
	TPATH(err, "err.txt");
	char *msg;

	if (!qb)
		SKIP("QTK_BIN not set");
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int8 -q", qb, stories(), q), 0);
	/* -v: a line per tensor on stderr, the report on stdout */
	CHECK_EQ(t_system("%s export %s --to gguf -o %s -R -v -j 3 2>%s >/dev/null", qb, q, out,
	                  err), 0);
	msg = t_read_file(err, NULL);
	CHECK(msg && strstr(msg, "/47] ") && !strstr(msg, "tensors  "));
	free(msg);
	/* convert does not take a .qtk: its recipe would not apply */
	CHECK_EQ(t_system("%s convert %s -o %s.x --scheme int4 -q 2>%s", qb, q, out, err), 1);
	msg = t_read_file(err, NULL);
	CHECK(msg && strstr(msg, "qtk export") && strstr(msg, "m.qtk"));
	free(msg);
	CHECK(!t_exists(t_tmp("o.gguf.x")));
}

/* verify --against takes a .qtk source too (a .qtk source reads its stored
 * values): a file against itself has no weight error. */
TEST(export_pipeline_verify_against_a_qtk)
{
	TPATH(q, "m.qtk");
	qtk_verify_opts vo = { .file = q, .source = q, .threads = 2, .path = QTK_RT_FLOAT };
	qtk_verify_report *r = NULL;
	qtk_status st;

	REQUIRE(mlx_test_convert(stories(), q, QTK_OUT_QTK, QTK_SCHEME_INT4, 64, NULL, QTK_DT_F16,
	                         &st) == QTK_OK);
	CHECK_MSG(qtk_verify_against(&vo, &r, &st) == QTK_OK, "%s", st.msg);
	REQUIRE(r);
	CHECK(r->n > 0 && r->nfailed == 0);
	for (size_t i = 0; i < r->n; i++)
		CHECK_MSG(r->t[i].w.rmse == 0, "%s: rmse %g", r->t[i].name, r->t[i].w.rmse);
	qtk_verify_report_free(r);
}

/* Every allocation of an export that requantizes (MLX and GGUF, a small
 * model) failed in turn: QTK_E_NOMEM, no output, no temporary, no leak. */
TEST(export_pipeline_alloc_sweep)
{
	static const qtk_out_format fmts[] = { QTK_OUT_GGUF, QTK_OUT_MLX };
	TPATH(in, "small.safetensors");
	TPATH(q, "small.qtk");
	TPATH(out, "out");
	float w[64 * 128], v[16 * 100];
	qtk_st_desc d[2] = {
		{ .name = "w", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 64, 128 } },
		{ .name = "v", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 16, 100 } },
	};
	const void *data[2] = { w, v };
	qtk_write_opts wo = { .force = 1 };
	uint64_t seed = 7;
	qtk_status st;

	for (size_t i = 0; i < 64 * 128; i++)
		w[i] = t_rand_normal(&seed);
	for (size_t i = 0; i < 16 * 100; i++)
		v[i] = t_rand_normal(&seed);
	REQUIRE(qtk_st_write(in, d, data, 2, NULL, &wo, &st) == QTK_OK);
	REQUIRE(mlx_test_convert(in, q, QTK_OUT_QTK, QTK_SCHEME_NF4, 64, NULL, QTK_DT_F16, &st)
	        == QTK_OK);
	for (size_t f = 0; f < 2; f++) {
		int before = t_dir_entries(t_tmpdir()), done = 0;
		uint64_t nth;

		for (nth = 1; nth < 100000 && !done; nth++) {
			qtk_err rc;

			qtk_fault_arm(QTK_FAULT_ALLOC, nth, 0);
			rc = export_j(q, out, fmts[f], 1, 2, NULL, &st);
			done = !qtk_fault_fired(QTK_FAULT_ALLOC);
			qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
			if (done || rc == QTK_OK) { /* past the last, or absorbed after the rename */
				CHECK_MSG(rc == QTK_OK, "%s", st.msg);
				CHECK_EQ(t_system("rm -rf %s", out), 0);
				continue;
			}
			CHECK_MSG(rc == QTK_E_NOMEM, "format %zu allocation %llu: %s: %s", f,
			          (unsigned long long)nth, qtk_err_name(rc), st.msg);
			CHECK_MSG(t_dir_entries(t_tmpdir()) == before, "format %zu allocation %llu "
			          "left files", f, (unsigned long long)nth);
		}
		CHECK(done && nth > 10);
		printf("    %s: %llu allocations failed in turn\n", f ? "mlx" : "gguf",
		       (unsigned long long)(nth - 2));
	}
}

/* A 5-D tensor GGUF holds flat, with its shape in a KV, requantized from
 * the source: its KV is added once (export planned it twice and refused
 * the file: "KV ... added twice"). */
TEST(export_pipeline_5d_requantized_to_gguf)
{
	TPATH(in, "m5.safetensors");
	TPATH(q, "m5.qtk");
	TPATH(out, "m5.gguf");
	static float w[8 * 2 * 2 * 2 * 64];
	qtk_st_desc d = { .name = "patch_embedding.weight", .dtype = QTK_DT_F32, .ndim = 5,
	                  .shape = { 8, 2, 2, 2, 64 } };
	const void *data[1] = { w };
	qtk_write_opts wo = { .force = 1 };
	uint64_t seed = 5;
	qtk_gguf_file *g;
	qtk_status st;

	for (size_t i = 0; i < sizeof w / sizeof *w; i++)
		w[i] = t_rand_normal(&seed);
	REQUIRE(qtk_st_write(in, &d, data, 1, NULL, &wo, &st) == QTK_OK);
	REQUIRE(mlx_test_convert(in, q, QTK_OUT_QTK, QTK_SCHEME_NF4, 64, NULL, QTK_DT_F16, &st)
	        == QTK_OK);
	CHECK_MSG(export_j(q, out, QTK_OUT_GGUF, 1, 2, NULL, &st) == QTK_OK, "%s", st.msg);
	REQUIRE(qtk_gguf_open(out, &g, &st) == QTK_OK);
	CHECK(qtk_gguf_find(g, "patch_embedding.weight") &&
	      qtk_gguf_find(g, "patch_embedding.weight")->type == QTK_GGML_Q4_0);
	qtk_gguf_close(g);
}
