/* tests: `qtk verify FILE --against SOURCE` (qtk_verify_against and the
 * CLI): stories260K in every scheme passes against its source; tampered
 * codes or a changed source fail naming the tensor; a GGUF Q4_0 gives the
 * numbers of the .qtk with the same codes (LLaMA names and q/k rows);
 * reproducible inputs, independent of -j; shape mismatches; JSON keys;
 * inputs drawn from a llama.cpp imatrix GGUF. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>

#include "qtk_convert.h"
#include "test.h"
#include "test_conv_util.h"

static const char *bin(void)
{
	const char *b = getenv("QTK_BIN");
	if (!b || !*b)
		SKIP("QTK_BIN not set (run through make test)");
	return b;
}

static int contains(const char *path, const char *needle)
{
	char *s = t_read_file(path, NULL);
	int yes = s && strstr(s, needle);
	free(s);
	return yes;
}

/* Paths that stay valid through a test (t_tmp's ring has 8 slots). */
static const char *vt_tmp(const char *rel)
{
	static char pool[64][4200];
	static unsigned i;
	char *out = pool[i++ % 64];

	snprintf(out, sizeof pool[0], "%s", t_tmp(rel));
	return out;
}

static const char *stories(void)
{
	return "tests/data/stories260K/model.safetensors"; /* tests run from the root */
}

/* Convert src into out with scheme/group (format qtk or gguf). */
static int conv(const char *src, const char *out, qtk_scheme_id s, uint32_t g,
                qtk_out_format fmt, uint32_t qflags)
{
	qtk_conv_opts o = { .input = src, .output = out, .format = fmt, .threads = 2,
	                    .qflags = qflags, .scale_dtype = QTK_DT_F16 };
	qtk_status st;
	int rc = t_convert(&o, s, g, NULL, NULL, &st);

	if (rc)
		fprintf(stderr, "convert %s: %s\n", out, st.msg);
	return rc;
}

static qtk_err verify(const char *file, const char *src, const char *inputs, int threads,
                      uint64_t seed, uint32_t batch, qtk_verify_report **rep, qtk_status *st)
{
	qtk_verify_opts o = { .file = file, .source = src, .inputs = inputs, .threads = threads,
	                      .seed = seed, .batch = batch };
	return qtk_verify_against(&o, rep, st);
}

static const qtk_verify_tensor *by_source(const qtk_verify_report *r, const char *name)
{
	for (size_t i = 0; i < r->n; i++)
		if (!strcmp(r->t[i].source_name, name))
			return &r->t[i];
	return NULL;
}

static int close_to(double a, double b, double rel)
{
	return a == b || fabs(a - b) <= rel * fabs(a);
}

/* The same up to the order rows were summed in (q/k rows in another order). */
static int close_metrics(const qtk_verify_tensor *a, const qtk_verify_tensor *b)
{
	return close_to(a->w.rmse, b->w.rmse, 1e-6) && a->w.max_abs == b->w.max_abs &&
	       close_to(a->w.cosine, b->w.cosine, 1e-6) &&
	       close_to(a->out.rel_fro, b->out.rel_fro, 1e-6) &&
	       close_to(a->out.cosine, b->out.cosine, 1e-6) &&
	       close_to(a->out_row_max, b->out_row_max, 1e-5);
}

static int same_metrics(const qtk_verify_tensor *a, const qtk_verify_tensor *b)
{
	return !memcmp(&a->w, &b->w, sizeof a->w) && !memcmp(&a->out, &b->out, sizeof a->out) &&
	       !memcmp(&a->out_row_max, &b->out_row_max, sizeof a->out_row_max);
}

/* ---- every scheme passes against its source ------------------------------ */

TEST(verify_against_stories_schemes_pass)
{
	static const struct { qtk_scheme_id s; uint32_t g, flags; } cases[] = {
		{ QTK_SCHEME_INT8, 64, 0 }, { QTK_SCHEME_INT4, 64, 0 }, { QTK_SCHEME_NF4, 64, 0 },
		{ QTK_SCHEME_F16, 0, 0 }, { QTK_SCHEME_INT4_AFFINE, 32, 0 },
		{ QTK_SCHEME_INT8_AFFINE, 128, 0 }, { QTK_SCHEME_BF16, 0, 0 },
		{ QTK_SCHEME_NF4, 64, QTK_QF_DOUBLE_QUANT }, { QTK_SCHEME_INT4, QTK_GROUP_ROW, 0 },
	};

	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		const char *out = vt_tmp("s.qtk");
		qtk_verify_report *r;
		qtk_status st;
		size_t nq = 0;

		remove(out);
		REQUIRE(conv(stories(), out, cases[c].s, cases[c].g, QTK_OUT_QTK, cases[c].flags) == 0);
		REQUIRE(verify(out, stories(), NULL, 2, 0, 0, &r, &st) == QTK_OK);
		CHECK_EQ(r->n, 47);
		CHECK_EQ(r->nfailed, 0);
		CHECK_EQ(r->nskipped, 0);
		CHECK_EQ(r->source_unused, 0);
		for (size_t i = 0; i < r->n; i++) {
			const qtk_verify_tensor *t = &r->t[i];
			CHECK(t->pass && !t->problem);
			CHECK(t->out.rel_fro <= qtk_verify_default_limit(t->layout.scheme));
			CHECK_STR(t->name, t->source_name);
			if (t->layout.scheme == QTK_SCHEME_RAW) {
				CHECK(t->w.max_abs == 0 && t->out.rel_fro == 0);
				continue;
			}
			nq++;
			CHECK_EQ(t->layout.scheme, cases[c].s);
			/* X ~ N(0, 1): the output error is the weight error, about */
			CHECK_MSG(t->out.rel_fro > 0.5 * t->w.rel_fro && t->out.rel_fro < 2 * t->w.rel_fro,
			          "%s: out %g, weights %g", t->name, t->out.rel_fro, t->w.rel_fro);
			CHECK(t->out.cosine > 0.99 && t->w.cosine > 0.99);
		}
		CHECK_EQ(nq, 36);
		qtk_verify_report_free(r);
	}
}

TEST(verify_against_cli_pass_and_table)
{
	const char *q = bin(), *f = vt_tmp("i4.qtk");

	REQUIRE(conv(stories(), f, QTK_SCHEME_INT4, 64, QTK_OUT_QTK, 0) == 0);
	CHECK_EQ(t_system("%s verify %s --against %s --top 5 > %s 2> %s", q, f, stories(),
	                  vt_tmp("o.txt"), vt_tmp("e.txt")), 0);
	CHECK(contains(vt_tmp("o.txt"), "out_rel_err"));
	CHECK(contains(vt_tmp("o.txt"), "(42 more, better; --all lists every tensor)"));
	CHECK(contains(vt_tmp("o.txt"), ": OK"));
	CHECK_EQ(t_system("%s verify %s --against %s --all -j 1 --path int8 > %s", q, f, stories(),
	                  vt_tmp("o.txt")), 0);
	CHECK(contains(vt_tmp("o.txt"), "model.norm.weight"));
	CHECK(contains(vt_tmp("o.txt"), "int8 path"));
	/* a tighter limit makes the same file fail, naming tensors */
	CHECK_EQ(t_system("%s verify %s --against %s --max-out-err int4=0.05 -q > %s 2> %s", q, f,
	                  stories(), vt_tmp("o.txt"), vt_tmp("e.txt")), 1);
	CHECK(contains(vt_tmp("e.txt"), "36 of 47 tensors fail"));
	CHECK(contains(vt_tmp("e.txt"), "'model.layers.0.self_attn.q_proj.weight' (out_rel_err"));
	CHECK_EQ(t_system("%s verify %s --against %s --max-out-err 1 -q", q, f, stories()), 0);
	/* the command line */
	CHECK_EQ(t_system("%s verify %s --against %s --max-out-err int4=-1 2>/dev/null", q, f,
	                  stories()), 2);
	CHECK_EQ(t_system("%s verify %s --against %s --max-out-err q9=0.1 2>/dev/null", q, f,
	                  stories()), 2);
	CHECK_EQ(t_system("%s verify %s --against %s --max-out-err 0x1 2>/dev/null", q, f,
	                  stories()), 2);
	CHECK_EQ(t_system("%s verify %s --against %s --batch 0 2>/dev/null", q, f, stories()), 2);
	CHECK_EQ(t_system("%s verify %s --against %s --path int4 2>/dev/null", q, f, stories()), 2);
	CHECK_EQ(t_system("%s verify %s --against 2>/dev/null", q, f), 2);
	CHECK_EQ(t_system("%s verify --against %s 2>/dev/null", q, stories()), 2);
	CHECK_EQ(t_system("%s verify %s --against %s --help | grep -q 'Exit status'", q, f,
	                  stories()), 0);
}

/* ---- broken files fail ----------------------------------------------------- */

/* Rewrite the .qtk in as out, consistently (fresh crc32s), with the codes
 * of tensor victim negated (int8 codes: w_hat becomes -w_hat). */
static int write_tampered(const char *in, const char *out, const char *victim)
{
	qtk_pack_file *f;
	qtk_pack_writer *w;
	qtk_pack_desc *d;
	qtk_status st;
	size_t n;
	int rc = -1;

	if (qtk_pack_open(in, 0, &f, &st) != QTK_OK)
		return -1;
	n = qtk_pack_count(f);
	d = calloc(n, sizeof *d);
	for (size_t i = 0; d && i < n; i++) {
		const qtk_pack_tensor *t = qtk_pack_get(f, i);
		d[i] = (qtk_pack_desc){ .name = t->name, .ndim = t->ndim, .src_dtype = t->src_dtype,
		                        .layout = t->layout };
		memcpy(d[i].shape, t->shape, sizeof t->shape);
	}
	if (d && qtk_pack_writer_open(&w, out, d, n, NULL, &st) == QTK_OK) {
		rc = 0;
		for (size_t i = 0; !rc && i < n; i++) {
			const qtk_pack_tensor *t = qtk_pack_get(f, i);
			for (int p = 0; !rc && p < QTK_PLANE_MAX; p++) {
				uint8_t *b;
				if (!t->planes[p].size)
					continue;
				b = malloc(t->planes[p].size);
				memcpy(b, t->planes[p].data, t->planes[p].size);
				if (p == QTK_PLANE_CODES && !strcmp(t->name, victim))
					for (uint64_t k = 0; k < t->planes[p].size; k++)
						b[k] = (uint8_t)-(int8_t)b[k];
				rc = qtk_pack_writer_put(w, i, p, 0, b, t->planes[p].size, &st);
				free(b);
			}
		}
		if (rc)
			qtk_pack_writer_abort(w);
		else
			rc = qtk_pack_writer_commit(w, qtk_pack_metadata(f, NULL), &st);
	}
	free(d);
	qtk_pack_close(f);
	return rc;
}

TEST(verify_against_tampered_codes_fail)
{
	const char *q = bin(), *good = vt_tmp("i8.qtk"), *bad = vt_tmp("bad.qtk");
	const char *victim = "model.layers.2.mlp.up_proj.weight";
	const qtk_verify_tensor *v;
	qtk_verify_report *r;
	qtk_status st;

	REQUIRE(conv(stories(), good, QTK_SCHEME_INT8, 64, QTK_OUT_QTK, 0) == 0);
	REQUIRE(write_tampered(good, bad, victim) == 0);
	/* intact as a file: every crc32 matches */
	CHECK_EQ(t_system("%s verify -q %s", q, bad), 0);
	REQUIRE(verify(bad, stories(), NULL, 2, 0, 0, &r, &st) == QTK_OK);
	CHECK_EQ(r->nfailed, 1);
	for (size_t i = 0; i < r->n; i++)
		CHECK(r->t[i].pass == !!strcmp(r->t[i].name, victim));
	v = by_source(r, victim);
	REQUIRE(v);
	CHECK(fabs(v->out.rel_fro - 2.0) < 1e-3); /* |W + W_hat| / |W| */
	CHECK(v->w.cosine < -0.99);
	qtk_verify_report_free(r);
	CHECK_EQ(t_system("%s verify %s --against %s > %s 2> %s", q, bad, stories(), vt_tmp("o.txt"),
	                  vt_tmp("e.txt")), 1);
	CHECK(contains(vt_tmp("e.txt"), "1 of 47 tensors fail"));
	CHECK(contains(vt_tmp("e.txt"), victim));
	CHECK(contains(vt_tmp("o.txt"), "FAIL"));
}

/* A copy of the stories checkpoint with tensor victim times k. */
static int write_changed_source(const char *out, const char *victim, float k)
{
	qtk_st_file *f;
	qtk_st_desc *d;
	const void **data;
	float *v = NULL;
	qtk_status st;
	size_t n;
	int rc;

	if (qtk_st_open(stories(), &f, &st) != QTK_OK)
		return -1;
	n = qtk_st_count(f);
	d = calloc(n, sizeof *d);
	data = calloc(n, sizeof *data);
	for (size_t i = 0; i < n; i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i);
		d[i] = (qtk_st_desc){ .name = t->name, .dtype = t->dtype, .ndim = t->ndim };
		memcpy(d[i].shape, t->shape, sizeof t->shape);
		data[i] = t->data;
		if (!strcmp(t->name, victim)) {
			v = malloc(t->nbytes);
			memcpy(v, t->data, t->nbytes);
			for (uint64_t e = 0; e < t->nelem; e++)
				v[e] *= k;
			data[i] = v;
		}
	}
	rc = qtk_st_write(out, d, data, n, NULL, NULL, &st);
	free(v);
	free(d);
	free(data);
	qtk_st_close(f);
	return rc;
}

TEST(verify_against_changed_source_fails)
{
	const char *q = bin(), *f = vt_tmp("i4.qtk"), *src = vt_tmp("changed.safetensors");
	const char *victim = "model.layers.1.self_attn.v_proj.weight";

	REQUIRE(conv(stories(), f, QTK_SCHEME_INT4, 32, QTK_OUT_QTK, 0) == 0);
	REQUIRE(write_changed_source(src, victim, 1.5f) == 0);
	CHECK_EQ(t_system("%s verify %s --against %s -q 2> %s", q, f, src, vt_tmp("e.txt")), 1);
	CHECK(contains(vt_tmp("e.txt"), "1 of 47 tensors fail"));
	CHECK(contains(vt_tmp("e.txt"), victim));
}

/* ---- GGUF ------------------------------------------------------------------ */

TEST(verify_against_gguf_q4_0_matches_qtk)
{
	const char *gg = vt_tmp("q40.gguf"), *pk = vt_tmp("i4.qtk");
	const char *f32gguf = "tests/data/stories260K/source-tinyllamas-stories-260k-f32.gguf";
	qtk_verify_report *a, *b, *c, *d;
	qtk_status st;
	size_t nqk = 0, nq = 0, nf16 = 0;

	REQUIRE(conv(stories(), gg, QTK_SCHEME_INT4, 32, QTK_OUT_GGUF, 0) == 0);
	REQUIRE(conv(stories(), pk, QTK_SCHEME_INT4, 32, QTK_OUT_QTK, 0) == 0);
	REQUIRE(verify(pk, stories(), NULL, 2, 0, 0, &a, &st) == QTK_OK);
	REQUIRE(verify(gg, stories(), NULL, 2, 0, 0, &b, &st) == QTK_OK);
	/* and both against llama.cpp's F32 GGUF (ggml row order, GGUF names) */
	REQUIRE(verify(gg, f32gguf, NULL, 2, 0, 0, &c, &st) == QTK_OK);
	REQUIRE(verify(pk, f32gguf, NULL, 2, 0, 0, &d, &st) == QTK_OK);
	CHECK_EQ(a->n, 47);
	CHECK_EQ(b->n, 47);
	CHECK_EQ(b->nfailed, 0);
	CHECK_EQ(c->source_unused, 1); /* its output.weight: stories ties it to the embedding */
	for (size_t i = 0; i < a->n; i++) {
		const qtk_verify_tensor *x = &a->t[i], *y = by_source(b, x->name);
		char gname[128];
		int qk;
		REQUIRE(y);
		if (qtk_gguf_llama_name(x->name, gname, sizeof gname, &qk) != QTK_OK)
			continue;
		CHECK_STR(y->name, gname);
		CHECK_EQ(y->qk_rows, qk != 0);
		nqk += qk != 0;
		if (x->layout.scheme == QTK_SCHEME_INT4 && x->cols % 32) {
			/* 172 columns: GGUF stores F16, as llama.cpp does */
			CHECK_EQ(y->layout.scheme, QTK_SCHEME_F16);
			CHECK(y->pass && y->out.rel_fro < 1e-3);
			nf16++;
		} else if (x->layout.scheme == QTK_SCHEME_INT4) {
			nq++;
			CHECK_EQ(y->layout.scheme, QTK_SCHEME_INT4);
			CHECK_EQ(y->layout.group, 32);
			/* bit for bit, but for the order q/k rows are summed in */
			CHECK_MSG(qk ? close_metrics(x, y) : same_metrics(x, y),
			          "%s: qtk %.17g, GGUF %.17g", x->name, x->out.rel_fro, y->out.rel_fro);
		} else {
			/* norms: F32 in GGUF, raw F32 in the .qtk: both exact */
			CHECK(y->w.max_abs == 0 && x->w.max_abs == 0);
		}
		const qtk_verify_tensor *z = by_source(c, gname), *u = by_source(d, gname);
		REQUIRE(z && u);
		CHECK(!z->qk_rows && u->qk_rows == (qk != 0));
		CHECK(same_metrics(y, z));
		CHECK(qk ? close_metrics(x, u) : same_metrics(x, u));
	}
	CHECK_EQ(nqk, 10);
	CHECK_EQ(nq, 31);
	CHECK_EQ(nf16, 5);
	qtk_verify_report_free(a);
	qtk_verify_report_free(b);
	qtk_verify_report_free(c);
	qtk_verify_report_free(d);
}

TEST(verify_against_gguf_needs_head_count)
{
	const char *gg = vt_tmp("q80.gguf"), *dir = vt_tmp("nocfg"), *src = vt_tmp("nocfg/m.safetensors");
	qtk_verify_report *r;
	qtk_status st;

	REQUIRE(conv(stories(), gg, QTK_SCHEME_INT8, 32, QTK_OUT_GGUF, 0) == 0);
	/* the GGUF has llama.attention.head_count: a source without config.json works */
	REQUIRE(t_system("mkdir -p %s && cp %s %s", dir, stories(), src) == 0);
	REQUIRE(verify(gg, src, NULL, 1, 0, 0, &r, &st) == QTK_OK);
	CHECK_EQ(r->nfailed, 0);
	qtk_verify_report_free(r);
}

/* ---- reproducible inputs --------------------------------------------------- */

TEST(verify_against_reproducible_any_threads)
{
	const char *f = vt_tmp("nf4.qtk");
	qtk_verify_report *a, *b, *c, *d;
	qtk_status st;

	REQUIRE(conv(stories(), f, QTK_SCHEME_NF4, 64, QTK_OUT_QTK, QTK_QF_DOUBLE_QUANT) == 0);
	REQUIRE(verify(f, stories(), NULL, 1, 0, 0, &a, &st) == QTK_OK);
	REQUIRE(verify(f, stories(), NULL, 2, 0, 0, &b, &st) == QTK_OK);
	REQUIRE(verify(f, stories(), NULL, 3, 0, 0, &c, &st) == QTK_OK);
	REQUIRE(verify(f, stories(), NULL, 2, 7, 0, &d, &st) == QTK_OK);
	CHECK_EQ(a->threads, 1);
	CHECK_EQ(c->threads, 3);
	REQUIRE(a->n == b->n && a->n == c->n && a->n == d->n);
	for (size_t i = 0; i < a->n; i++) {
		CHECK(same_metrics(&a->t[i], &b->t[i]));
		CHECK(same_metrics(&a->t[i], &c->t[i]));
		/* another seed: other inputs, the same weights */
		CHECK(!memcmp(&a->t[i].w, &d->t[i].w, sizeof a->t[i].w));
		if (a->t[i].layout.scheme == QTK_SCHEME_NF4) {
			CHECK(a->t[i].out.rel_fro != d->t[i].out.rel_fro);
			CHECK(fabs(a->t[i].out.rel_fro / d->t[i].out.rel_fro - 1) < 0.3);
		}
	}
	qtk_verify_report_free(a);
	qtk_verify_report_free(b);
	qtk_verify_report_free(c);
	qtk_verify_report_free(d);
}

/* ---- synthetic checkpoints ------------------------------------------------- */

/* An F32 tensor of normal values (element 7 set to k unless k is 1), and
 * an I32 one when with_int. */
static int write_synth(const char *path, const char *name, uint64_t rows, uint64_t cols,
                       float k, int with_int)
{
	qtk_st_desc d[2] = { { .name = name, .dtype = QTK_DT_F32, .ndim = 2,
	                       .shape = { rows, cols } },
	                     { .name = "ids", .dtype = QTK_DT_I32, .ndim = 1, .shape = { 8 } } };
	int32_t ids[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
	float *w = malloc(rows * cols * sizeof *w);
	const void *data[2] = { w, ids };
	uint64_t s = 42;
	qtk_status st;
	int rc;

	for (uint64_t i = 0; i < rows * cols; i++)
		w[i] = 0.02f * t_rand_normal(&s);
	if (k != 1)
		w[7] = k;
	rc = qtk_st_write(path, d, data, with_int ? 2 : 1, NULL, NULL, &st);
	free(w);
	return rc;
}

TEST(verify_against_shape_mismatch_names_both)
{
	const char *q = bin(), *a = vt_tmp("a.safetensors"), *b = vt_tmp("b.safetensors");
	const char *f = vt_tmp("a.qtk"), *c = vt_tmp("c.safetensors");
	qtk_verify_report *r;
	qtk_status st;

	REQUIRE(write_synth(a, "w", 64, 64, 1, 0) == 0);
	REQUIRE(write_synth(b, "w", 64, 32, 1, 0) == 0);
	REQUIRE(write_synth(c, "v", 64, 64, 1, 0) == 0);
	REQUIRE(conv(a, f, QTK_SCHEME_INT8, 32, QTK_OUT_QTK, 0) == 0);
	CHECK_EQ(verify(f, b, NULL, 1, 0, 0, &r, &st), QTK_E_ARG);
	CHECK(!r);
	CHECK_MSG(strstr(st.msg, "tensor 'w' is [64, 64] but") &&
	          strstr(st.msg, "b.safetensors: tensor 'w' is [64, 32]"), "%s", st.msg);
	CHECK_EQ(verify(f, c, NULL, 1, 0, 0, &r, &st), QTK_E_NOT_FOUND);
	CHECK_MSG(strstr(st.msg, "tensor 'w' has no counterpart in"), "%s", st.msg);
	CHECK_EQ(t_system("%s verify %s --against %s 2> %s", q, f, b, vt_tmp("e.txt")), 1);
	CHECK(contains(vt_tmp("e.txt"), "[64, 32]"));
	/* FILE's integrity comes first */
	CHECK_EQ(verify(vt_tmp("none.qtk"), a, NULL, 1, 0, 0, &r, &st), QTK_E_NOT_FOUND);
}

TEST(verify_against_blocks_and_skips)
{
	/* 1000 rows with 4096 vectors: blocks of 256 rows (the double-quant
	 * plane copied from each block's first 256 groups), chunks of 64 */
	static const struct { qtk_scheme_id s; uint32_t g, f; } cases[] = {
		{ QTK_SCHEME_NF4, 32, QTK_QF_DOUBLE_QUANT }, { QTK_SCHEME_INT4, 64, 0 },
		{ QTK_SCHEME_F32, 0, 0 },
	};
	const char *a = vt_tmp("a.safetensors"), *f = vt_tmp("a.qtk");
	qtk_verify_report *r, *r1;
	qtk_status st;

	REQUIRE(write_synth(a, "w", 1000, 64, 1, 1) == 0);
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		remove(f);
		REQUIRE(conv(a, f, cases[c].s, cases[c].g, QTK_OUT_QTK, cases[c].f) == 0);
		REQUIRE(verify(f, a, NULL, 2, 0, 4096, &r, &st) == QTK_OK);
		REQUIRE(verify(f, a, NULL, 1, 0, 4096, &r1, &st) == QTK_OK);
		CHECK_EQ(r->batch, 4096);
		CHECK_EQ(r->n, 1);
		CHECK_EQ(r->nskipped, 1);
		CHECK_STR(r->skipped[0], "ids");
		CHECK_STR(r->skip_reasons[0], "integer tensor");
		CHECK(r->t[0].pass);
		CHECK(same_metrics(&r->t[0], &r1->t[0]));
		if (cases[c].s == QTK_SCHEME_F32)
			CHECK(r->t[0].w.max_abs == 0 && r->t[0].out.rel_fro < 1e-6);
		else /* a wrong block view would be ~1.4 */
			CHECK(fabs(r->t[0].out.rel_fro / r->t[0].w.rel_fro - 1) < 0.1);
		qtk_verify_report_free(r);
		qtk_verify_report_free(r1);
	}
}

/* A GGUF of tensor "w" [rows][cols] in F16 from the F32 values of src. */
static int write_f16_gguf(const char *path, const char *src, uint64_t rows, uint64_t cols)
{
	qtk_gguf_desc d = { .name = "w", .type = QTK_GGML_F16, .n_dims = 2,
	                    .ne = { cols, rows, 1, 1 } };
	qtk_st_file *f;
	qtk_gguf_writer *w;
	qtk_status st;
	uint16_t *h = malloc(rows * cols * 2);
	int rc = -1;

	if (qtk_st_open(src, &f, &st) == QTK_OK) {
		const float *v = qtk_st_find(f, "w")->data;
		for (uint64_t i = 0; i < rows * cols; i++)
			h[i] = qtk_f32_to_f16(v[i]);
		if (qtk_gguf_writer_open(&w, path, NULL, &d, 1, NULL, &st) == QTK_OK) {
			rc = qtk_gguf_writer_put(w, 0, 0, h, rows * cols * 2, &st);
			if (rc)
				qtk_gguf_writer_abort(w);
			else
				rc = qtk_gguf_writer_commit(w, &st);
		}
		qtk_st_close(f);
	}
	free(h);
	return rc;
}

TEST(verify_against_nonfinite_weight_fails)
{
	const char *q = bin(), *a = vt_tmp("a.safetensors"), *g = vt_tmp("a.gguf");
	qtk_verify_report *r;
	qtk_status st;

	/* element 7 at 1e5: beyond f16's 65504, so the F16 GGUF holds Inf
	 * (qtk's convert refuses such a value; other writers may not) */
	REQUIRE(write_synth(a, "w", 64, 64, 1e5f, 0) == 0);
	REQUIRE(write_f16_gguf(g, a, 64, 64) == 0);
	REQUIRE(verify(g, a, NULL, 1, 0, 0, &r, &st) == QTK_OK);
	CHECK_EQ(r->nfailed, 1);
	CHECK_EQ(r->t[0].layout.scheme, QTK_SCHEME_F16);
	CHECK_MSG(r->t[0].problem && strstr(r->t[0].problem, "row 0 holds a NaN or Inf"), "%s",
	          r->t[0].problem ? r->t[0].problem : "(none)");
	qtk_verify_report_free(r);
	CHECK_EQ(t_system("%s verify %s --against %s --json > %s 2> %s", q, g, a,
	                  vt_tmp("o.json"), vt_tmp("e.txt")), 1);
	CHECK(contains(vt_tmp("o.json"), "\"out_rel_err\": null"));
	CHECK(contains(vt_tmp("e.txt"), "'w' (row 0 holds a NaN or Inf where the source is finite)"));
}

/* ---- JSON ------------------------------------------------------------------ */

TEST(verify_against_json_keys)
{
	static const char *const keys[] = {
		"name", "source_name", "scheme", "layout", "rows", "cols", "inputs", "rmse",
		"max_abs", "rel_err", "snr_db", "cosine", "out_rel_err", "out_cosine", "out_snr_db",
		"out_row_max_err", "max_out_err", "pass", "problem", "qk_rows",
	};
	const char *q = bin(), *f = vt_tmp("i8.qtk");
	json_t *root, *ts;
	json_error_t e;
	size_t nq = 0;

	REQUIRE(conv(stories(), f, QTK_SCHEME_INT8, 32, QTK_OUT_QTK, 0) == 0);
	REQUIRE(t_system("%s verify %s --against %s --json > %s", q, f, stories(),
	                 vt_tmp("o.json")) == 0);
	root = json_load_file(vt_tmp("o.json"), 0, &e);
	REQUIRE(root);
	CHECK(json_is_true(json_object_get(root, "pass")));
	CHECK_EQ(json_integer_value(json_object_get(root, "failed")), 0);
	CHECK_EQ(json_integer_value(json_object_get(root, "batch")), 64);
	CHECK_STR(json_string_value(json_object_get(root, "inputs")), "random");
	ts = json_object_get(root, "tensors");
	CHECK_EQ(json_array_size(ts), 47);
	for (size_t i = 0; i < json_array_size(ts); i++) {
		json_t *t = json_array_get(ts, i);
		for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
			CHECK_MSG(json_object_get(t, keys[k]), "tensor %zu: no '%s'", i, keys[k]);
		if (strcmp(json_string_value(json_object_get(t, "scheme")), "int8"))
			continue;
		nq++;
		CHECK(json_real_value(json_object_get(t, "out_rel_err")) > 0);
		CHECK(json_real_value(json_object_get(t, "out_rel_err")) < 0.02);
		CHECK(json_real_value(json_object_get(t, "snr_db")) > 30);
		CHECK(json_is_true(json_object_get(t, "pass")));
	}
	CHECK_EQ(nq, 36);
	json_decref(root);
}

/* ---- inputs from an imatrix ------------------------------------------------ */

/* llama.cpp's imatrix GGUF for the stories linear weights (GGUF names):
 * channel j has mean square ms(j) = 1 + 15 * (j % 8 == 0), count 100
 * (cols_off: declare that many channels more, for the mismatch test). */
static int write_imatrix(const char *path, const char *type, int drop_counts,
                         uint64_t cols_off)
{
	qtk_st_file *f;
	qtk_gguf_kvs *k = qtk_gguf_kvs_new();
	qtk_gguf_desc d[128];
	char names[128][128];
	float *vals[128];
	qtk_gguf_writer *w;
	qtk_status st;
	size_t n = 0;
	int rc = -1;

	if (qtk_st_open(stories(), &f, &st) != QTK_OK)
		return -1;
	qtk_gguf_kvs_add_str(k, "general.type", type, strlen(type), &st);
	for (size_t i = 0; i < qtk_st_count(f); i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i);
		char g[96];
		int qk;
		uint64_t cols = t->shape[t->ndim - 1] + cols_off;
		if (t->ndim != 2 || qtk_gguf_llama_name(t->name, g, sizeof g, &qk) != QTK_OK ||
		    !strcmp(g, "token_embd.weight"))
			continue;
		snprintf(names[n], sizeof names[n], "%s.in_sum2", g);
		d[n] = (qtk_gguf_desc){ .name = names[n], .type = QTK_GGML_F32, .n_dims = 2,
		                        .ne = { cols, 1, 1, 1 } };
		vals[n] = malloc(cols * sizeof(float));
		for (uint64_t j = 0; j < cols; j++)
			vals[n][j] = 100.0f * (1.0f + 15.0f * (j % 8 == 0));
		n++;
		if (drop_counts)
			continue;
		snprintf(names[n], sizeof names[n], "%s.counts", g);
		d[n] = (qtk_gguf_desc){ .name = names[n], .type = QTK_GGML_F32, .n_dims = 2,
		                        .ne = { 1, 1, 1, 1 } };
		vals[n] = malloc(sizeof(float));
		vals[n][0] = 100.0f;
		n++;
	}
	if (qtk_gguf_writer_open(&w, path, k, d, n, NULL, &st) == QTK_OK) {
		rc = 0;
		for (size_t i = 0; !rc && i < n; i++)
			rc = qtk_gguf_writer_put(w, i, 0, vals[i], qtk_gguf_writer_tensor_bytes(w, i), &st);
		if (rc)
			qtk_gguf_writer_abort(w);
		else
			rc = qtk_gguf_writer_commit(w, &st);
	}
	for (size_t i = 0; i < n; i++)
		free(vals[i]);
	qtk_gguf_kvs_free(k);
	qtk_st_close(f);
	return rc;
}

TEST(verify_against_imatrix_inputs)
{
	const char *q = bin(), *f = vt_tmp("i4.qtk"), *im = vt_tmp("imatrix.gguf");
	qtk_verify_report *a, *b, *c;
	qtk_status st;
	size_t nstats = 0;

	REQUIRE(conv(stories(), f, QTK_SCHEME_INT4, 32, QTK_OUT_QTK, 0) == 0);
	REQUIRE(write_imatrix(im, "imatrix", 0, 0) == 0);
	REQUIRE(verify(f, stories(), NULL, 2, 0, 0, &a, &st) == QTK_OK);
	REQUIRE(verify(f, stories(), im, 2, 0, 0, &b, &st) == QTK_OK);
	REQUIRE(verify(f, stories(), im, 1, 0, 0, &c, &st) == QTK_OK);
	REQUIRE(a->n == b->n && b->n == c->n);
	for (size_t i = 0; i < b->n; i++) {
		const qtk_verify_tensor *x = &a->t[i], *y = &b->t[i];
		int linear = strstr(y->name, "_proj.weight") != NULL;
		CHECK_EQ(y->from_stats, linear);
		CHECK(!x->from_stats);
		CHECK(same_metrics(y, &c->t[i]));
		CHECK(!memcmp(&x->w, &y->w, sizeof x->w));
		nstats += y->from_stats;
		if (linear) /* other inputs: other output errors */
			CHECK(x->out.rel_fro != y->out.rel_fro);
		else
			CHECK(same_metrics(x, y));
	}
	CHECK_EQ(nstats, 35);
	qtk_verify_report_free(a);
	qtk_verify_report_free(b);
	qtk_verify_report_free(c);
	CHECK_EQ(t_system("%s verify %s --against %s --inputs %s --json > %s", q, f, stories(), im,
	                  vt_tmp("o.json")), 0);
	CHECK(contains(vt_tmp("o.json"), "\"inputs\": \"stats\""));
	/* malformed statistics: each names the file and the problem */
	REQUIRE(write_imatrix(vt_tmp("nocounts.gguf"), "imatrix", 1, 0) == 0);
	CHECK_EQ(verify(f, stories(), vt_tmp("nocounts.gguf"), 1, 0, 0, &a, &st), QTK_E_FORMAT);
	CHECK_MSG(strstr(st.msg, "nocounts.gguf: imatrix: 'blk.") &&
	          strstr(st.msg, ".counts' beside it"), "%s", st.msg);
	REQUIRE(write_imatrix(vt_tmp("model.gguf"), "model", 0, 0) == 0);
	CHECK_EQ(verify(f, stories(), vt_tmp("model.gguf"), 1, 0, 0, &a, &st), QTK_E_FORMAT);
	CHECK_MSG(strstr(st.msg, "general.type is 'model'"), "%s", st.msg);
	REQUIRE(write_imatrix(vt_tmp("wide.gguf"), "imatrix", 0, 3) == 0);
	CHECK_EQ(verify(f, stories(), vt_tmp("wide.gguf"), 1, 0, 0, &a, &st), QTK_E_ARG);
	CHECK_MSG(strstr(st.msg, "wide.gguf: weight 'blk.") && strstr(st.msg, "input channels") &&
	          strstr(st.msg, "i4.qtk has"), "%s", st.msg);
	CHECK_EQ(verify(f, stories(), stories(), 1, 0, 0, &a, &st), QTK_E_UNSUPPORTED);
	CHECK_MSG(strstr(st.msg, "not an activation statistics file"), "%s", st.msg);
}
