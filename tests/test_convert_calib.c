/* tests: `qtk convert --calib` on stories260K — the layer-output error on
 * held-out activations orders GPTQ < weighted < round-to-nearest (GPTQ at
 * most 0.7x), every quantized weight is calibrated and says how, imatrix
 * input works, and bad statistics or options are refused by name. */
#include <math.h>
#include <stdlib.h>

#include <string.h>
#include <unistd.h>

#include "qtk_formats.h"
#include "qtk_runtime.h"
#include "test.h"

#define REQUIRE_MSG(c, ...)                                                \
	do {                                                               \
		if (!(c)) {                                                \
			t_fail_at(__FILE__, __LINE__, __VA_ARGS__);        \
			return;                                            \
		}                                                          \
	} while (0)
#define REQUIRE_EQ(a, b) REQUIRE((a) == (b))

static const char *bin(void)
{
	const char *b = getenv("QTK_BIN");
	return b ? b : "build/qtk";
}

#define S260 "tests/data/stories260K/"
#define MODEL S260 "model.safetensors"
#define TEXT S260 "tinystories.txt"

/* sum over the held-out statistics' weights of sum_r d_r^T X^T X d_r,
 * d_r = W_r - What_r: the summed squared layer-output error on those
 * inputs. */
static double output_error(const char *qtk_path, const qtk_stats *ho)
{
	qtk_st_file *sf;
	qtk_rt_model *m;
	qtk_status st;
	double total = 0;
	size_t used = 0;

	if (qtk_st_open(MODEL, &sf, &st) != QTK_OK) {
		t_fail_at(__FILE__, __LINE__, "%s", st.msg);
		return -1;
	}
	if (qtk_rt_open(qtk_path, 0, &m, &st) != QTK_OK) {
		t_fail_at(__FILE__, __LINE__, "%s", st.msg);
		qtk_st_close(sf);
		return -1;
	}
	for (size_t i = 0; i < qtk_stats_count(ho) && total >= 0; i++) {
		const qtk_stats_entry *e = qtk_stats_get(ho, i);
		const qtk_st_tensor *t = qtk_st_find(sf, e->name);
		const qtk_rt_tensor *q = qtk_rt_find(m, e->name);
		size_t cols = (size_t)e->cols;
		float *w = malloc(cols * sizeof *w), *wh = malloc(cols * sizeof *wh);
		double *d = malloc(cols * sizeof *d);

		if (!t || !q || !w || !wh || !d || !e->xtx || q->cols != cols) {
			t_fail_at(__FILE__, __LINE__, "weight '%s' not comparable", e->name);
			total = -1;
		}
		if (total >= 0 && qtk_q_scheme_get(q->scheme)->quantized)
			used++;
		for (uint64_t r = 0; total >= 0 && r < q->rows; r++) {
			if (qtk_st_read_f32(t, r * cols, cols, w, &st) != QTK_OK ||
			    qtk_rt_row_f32(q, r, wh, &st) != QTK_OK) {
				t_fail_at(__FILE__, __LINE__, "%s", st.msg);
				total = -1;
				break;
			}
			for (size_t j = 0; j < cols; j++)
				d[j] = (double)w[j] - (double)wh[j];
			for (size_t j = 0; j < cols; j++) {
				double sum = 0;
				for (size_t k = 0; k < cols; k++)
					sum += e->xtx[j * cols + k] * d[k];
				total += d[j] * sum;
			}
		}
		free(w);
		free(wh);
		free(d);
	}
	CHECK(total < 0 || used == 36); /* 5 layers x 7 weights + the tied matrix */
	qtk_rt_close(m);
	qtk_st_close(sf);
	return total;
}

/* Statistics from the first 4096 tokens; held out: the next 4096. */
TEST(convert_calib_output_error_gptq_weighted_rtn)
{
	const char *cal = t_tmp("cal.stats"), *ho = t_tmp("ho.stats");
	const char *rtn = t_tmp("rtn.qtk"), *wq = t_tmp("w.qtk"), *gq = t_tmp("g.qtk");
	const char *js = t_tmp("g.json");
	qtk_stats *h = NULL;
	qtk_status st;
	double er, ew, eg;
	size_t n;
	char *text;

	REQUIRE_EQ(t_system("%s calibrate " MODEL " --text " TEXT " --tokens 4096 --ctx 256 "
	                    "--xtx -q -o %s", bin(), cal), 0);
	REQUIRE_EQ(t_system("%s calibrate " MODEL " --text " TEXT " --skip 4096 --tokens 4096 "
	                    "--ctx 256 --xtx -q -o %s", bin(), ho), 0);
	REQUIRE_EQ(t_system("%s convert " MODEL " -s int4 -g 32 -q -f -o %s", bin(), rtn), 0);
	REQUIRE_EQ(t_system("%s convert " MODEL " -s int4 -g 32 -q -f --calib %s -o %s "
	                    "2>/dev/null", bin(), cal, wq), 0);
	REQUIRE_EQ(t_system("%s convert " MODEL " -s int4 -g 32 -f --calib %s --calib-mode gptq "
	                    "--json -o %s > %s 2>/dev/null", bin(), cal, gq, js), 0);
	/* every quantized weight says it was calibrated by GPTQ */
	text = t_read_file(js, &n);
	REQUIRE(text);
	CHECK(strstr(text, "\"calib\": \"gptq\""));
	CHECK(!strstr(text, "\"calib\": \"none\""));
	free(text);
	/* the same bytes whatever the thread count */
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -g 32 -q -f --calib %s --calib-mode gptq "
	                  "-j 1 -o %s.1 2>/dev/null && cmp -s %s %s.1", bin(), cal, gq, gq, gq), 0);
	REQUIRE_MSG(qtk_stats_open(ho, &h, NULL, &st) == QTK_OK, "%s", st.msg);
	er = output_error(rtn, h);
	ew = output_error(wq, h);
	eg = output_error(gq, h);
	printf("    held-out output error: rtn %.4g, weighted %.4g (%.3fx), gptq %.4g (%.3fx)\n",
	       er, ew, ew / er, eg, eg / er);
	CHECK(er > 0 && ew > 0 && eg > 0);
	CHECK(eg <= 0.7 * er);
	CHECK(ew < er);
	CHECK(eg < ew);
	qtk_stats_free(h);
}

/* Without a text: statistics from the vocabulary (qtk calibrate --vocab,
 * each token alone), GPTQ at damping 1 (calibration.md). Every weight is
 * covered, every token counted once, and the held-out output error falls
 * well below round-to-nearest's, though above text-calibrated GPTQ's. */
TEST(convert_calib_vocab_without_text)
{
	const char *voc = t_tmp("voc.stats"), *ho = t_tmp("vho.stats"), *rtn = t_tmp("vr.qtk");
	const char *vq = t_tmp("v.qtk"), *err = t_tmp("v.err");
	qtk_stats *s = NULL;
	qtk_status st;
	size_t n;
	char *text;

	REQUIRE_EQ(t_system("%s calibrate " MODEL " --vocab --xtx -q -o %s", bin(), voc), 0);
	REQUIRE_MSG(qtk_stats_open(voc, &s, NULL, &st) == QTK_OK, "%s", st.msg);
	CHECK_EQ(qtk_stats_count(s), 36);
	for (size_t i = 0; i < qtk_stats_count(s); i++) {
		const qtk_stats_entry *e = qtk_stats_get(s, i);
		CHECK_MSG(e->count == 512 && e->xtx, "%s: %llu tokens", e->name,
		          (unsigned long long)e->count);
	}
	CHECK(qtk_stats_dataset_count(s) == 1 && !strcmp(qtk_stats_dataset(s, 0), "qtk calibrate --vocab"));
	qtk_stats_free(s);
	REQUIRE_EQ(t_system("%s calibrate " MODEL " --text " TEXT " --skip 4096 --tokens 4096 "
	                    "--ctx 256 --xtx -q -o %s", bin(), ho), 0);
	REQUIRE_EQ(t_system("%s convert " MODEL " -s int4 -g 32 -q -f -o %s", bin(), rtn), 0);
	/* their damping is 1 unless --damp says otherwise */
	REQUIRE_EQ(t_system("%s convert " MODEL " -s int4 -g 32 -q -f --calib %s --calib-mode gptq "
	                    "-o %s 2>%s", bin(), voc, vq, err), 0);
	text = t_read_file(err, &n);
	REQUIRE(text);
	CHECK(strstr(text, "calibrated 36 of 36 quantized weights"));
	CHECK(strstr(text, "statistics of the vocabulary alone: GPTQ damping 1 (their default"));
	free(text);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -g 32 -q -f --calib %s --calib-mode gptq "
	                  "--damp 1 -o %s.d1 2>/dev/null && cmp -s %s %s.d1", bin(), voc, vq, vq,
	                  vq), 0);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -g 32 -q -f --calib %s --calib-mode gptq "
	                  "--damp 0.01 -o %s.d0 2>%s && cmp -s %s %s.d0", bin(), voc, vq, err, vq,
	                  vq), 1);
	text = t_read_file(err, &n);
	REQUIRE(text);
	CHECK(strstr(text, "GPTQ damping 0.01\n"));
	free(text);
	/* the weighted search is told where they help */
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -g 32 -q -f --calib %s -o %s.w 2>%s", bin(),
	                  voc, vq, err), 0);
	text = t_read_file(err, &n);
	REQUIRE(text);
	CHECK(strstr(text, "--calib-mode gptq uses them"));
	free(text);
	REQUIRE_MSG(qtk_stats_open(ho, &s, NULL, &st) == QTK_OK, "%s", st.msg);
	double er = output_error(rtn, s), ev = output_error(vq, s);
	printf("    held-out output error: rtn %.4g, gptq from the vocabulary %.4g (%.3fx)\n", er,
	       ev, ev / er);
	CHECK(er > 0 && ev > 0 && ev < 0.9 * er);
	qtk_stats_free(s);
	/* --vocab runs no text */
	CHECK_EQ(t_system("%s calibrate " MODEL " --vocab --text " TEXT " -q -o %s 2>/dev/null",
	                  bin(), voc), 2);
	CHECK_EQ(t_system("%s calibrate " MODEL " --vocab --ctx 64 -q -f -o %s 2>/dev/null", bin(),
	                  voc), 2);
	CHECK_EQ(t_system("%s calibrate --merge %s --vocab -q -f -o %s 2>/dev/null", bin(), ho, voc),
	         2);
}

/* Without a text, the other way: sequences the model writes itself
 * (qtk calibrate --generate), the same for a seed at any thread count;
 * GPTQ from them lowers the held-out output error as a text does. */
TEST(convert_calib_generate_without_text)
{
	const char *g = t_tmp("gen.stats"), *g2 = t_tmp("gen2.stats"), *g3 = t_tmp("gen3.stats");
	const char *ho = t_tmp("gho.stats"), *rtn = t_tmp("gr.qtk"), *gq = t_tmp("g.qtk");
	qtk_stats *s = NULL;
	qtk_status st;
	uint64_t count = 0;

	REQUIRE_EQ(t_system("%s calibrate " MODEL " --generate 40 --ctx 128 --xtx -j 1 -q -o %s",
	                    bin(), g), 0);
	CHECK_EQ(t_system("%s calibrate " MODEL " --generate 40 --ctx 128 --xtx -j 2 -q -o %s && "
	                  "cmp -s %s %s", bin(), g2, g, g2), 0);
	CHECK_EQ(t_system("%s calibrate " MODEL " --generate 40 --ctx 128 --seed 7 --xtx -j 1 -q "
	                  "-o %s && cmp -s %s %s", bin(), g3, g, g3), 1);
	REQUIRE_MSG(qtk_stats_open(g, &s, NULL, &st) == QTK_OK, "%s", st.msg);
	CHECK_EQ(qtk_stats_count(s), 36);
	for (size_t i = 0; i < qtk_stats_count(s); i++)
		count = qtk_stats_get(s, i)->count > count ? qtk_stats_get(s, i)->count : count;
	CHECK_MSG(count > 40 * 16 && count <= 40 * 128, "%llu tokens", (unsigned long long)count);
	CHECK(qtk_stats_dataset_count(s) == 1 &&
	      !strcmp(qtk_stats_dataset(s, 0), "generated: 40 sequences, seed 1"));
	qtk_stats_free(s);
	REQUIRE_EQ(t_system("%s calibrate " MODEL " --text " TEXT " --skip 4096 --tokens 4096 "
	                    "--ctx 256 --xtx -q -o %s", bin(), ho), 0);
	REQUIRE_EQ(t_system("%s convert " MODEL " -s int4 -g 32 -q -f -o %s", bin(), rtn), 0);
	REQUIRE_EQ(t_system("%s convert " MODEL " -s int4 -g 32 -q -f --calib %s --calib-mode gptq "
	                    "-o %s 2>/dev/null", bin(), g, gq), 0);
	REQUIRE_MSG(qtk_stats_open(ho, &s, NULL, &st) == QTK_OK, "%s", st.msg);
	double er = output_error(rtn, s), eg = output_error(gq, s);
	printf("    held-out output error: rtn %.4g, gptq from the model's own text %.4g (%.3fx)\n",
	       er, eg, eg / er);
	CHECK(er > 0 && eg > 0 && eg < 0.8 * er);
	qtk_stats_free(s);
	/* refusals */
	CHECK_EQ(t_system("%s calibrate " MODEL " --generate 0 -q -f -o %s 2>/dev/null", bin(), g), 2);
	CHECK_EQ(t_system("%s calibrate " MODEL " --generate 2 --text " TEXT " -q -f -o %s "
	                  "2>/dev/null", bin(), g), 2);
	CHECK_EQ(t_system("%s calibrate " MODEL " --generate 2 --vocab -q -f -o %s 2>/dev/null",
	                  bin(), g), 2);
	CHECK_EQ(t_system("%s calibrate " MODEL " --text " TEXT " --seed 3 -q -f -o %s 2>/dev/null",
	                  bin(), g), 2);
}

/* A statistics file of llama.cpp's imatrix kind drives the weighted mode. */
TEST(convert_calib_from_imatrix)
{
	const char *im = t_tmp("cal.imatrix.gguf"), *out = t_tmp("im.qtk"), *err = t_tmp("im.err");
	size_t n;
	char *text;

	REQUIRE_EQ(t_system("%s calibrate " MODEL " --text " TEXT " --tokens 1024 -q -o %s",
	                    bin(), im), 0);
	REQUIRE_EQ(t_system("%s convert " MODEL " -s nf4 -g 64 -q -f --calib %s -o %s 2>%s",
	                    bin(), im, out, err), 0);
	text = t_read_file(err, &n);
	REQUIRE(text);
	CHECK(strstr(text, "calibrated 36 of 36 quantized weights"));
	free(text);
	/* gptq needs X^T X, which an imatrix does not hold */
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --calib-mode gptq "
	                  "-o %s 2>%s", bin(), im, out, err), 1);
	text = t_read_file(err, &n);
	REQUIRE(text);
	CHECK(strstr(text, "has no X^T X"));
	free(text);
}

/* Statistics that do not fit, cover nothing, or come with bad options. */
TEST(convert_calib_refusals)
{
	const char *bad = t_tmp("bad.stats"), *one = t_tmp("one.stats"), *out = t_tmp("r.qtk");
	const char *err = t_tmp("r.err");
	qtk_stats *s;
	qtk_stats_entry *e;
	qtk_status st;
	size_t n;
	char *text;

	/* q_proj has 64 columns; these statistics have 32 */
	REQUIRE(qtk_stats_new(&s, &st) == QTK_OK);
	REQUIRE(qtk_stats_add(s, "model.layers.0.self_attn.q_proj.weight", 32, 0, &e, &st) ==
	        QTK_OK);
	e->count = 10;
	for (int j = 0; j < 32; j++)
		e->sum2[j] = 1.0;
	REQUIRE_MSG(qtk_stats_write(s, bad, QTK_STATS_QTK, NULL, &st) == QTK_OK, "%s", st.msg);
	qtk_stats_free(s);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s -o %s 2>%s", bin(), bad,
	                  out, err), 1);
	text = t_read_file(err, &n);
	REQUIRE(text);
	CHECK(strstr(text, "q_proj.weight") && strstr(text, "32 input channels") &&
	      strstr(text, "64 columns"));
	free(text);
	CHECK(access(out, F_OK) != 0);

	/* one weight covered: the rest get the data-free search, and are named */
	REQUIRE(qtk_stats_new(&s, &st) == QTK_OK);
	REQUIRE(qtk_stats_add(s, "model.layers.0.self_attn.q_proj.weight", 64, 0, &e, &st) ==
	        QTK_OK);
	e->count = 10;
	for (int j = 0; j < 64; j++)
		e->sum2[j] = 1.0 + j;
	REQUIRE(qtk_stats_write(s, one, QTK_STATS_QTK, NULL, &st) == QTK_OK);
	qtk_stats_free(s);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s -o %s 2>%s", bin(), one,
	                  out, err), 0);
	text = t_read_file(err, &n);
	REQUIRE(text);
	CHECK(strstr(text, "calibrated 1 of 36 quantized weights"));
	CHECK(strstr(text, "no statistics for 'model.layers.0.self_attn.k_proj.weight'"));
	free(text);
	/* ... and they do get it without --search: their planes are those of
	 * a --search conversion, not round-to-nearest's */
	{
		const char *srch = t_tmp("r_search.qtk"), *rtn = t_tmp("r_rtn.qtk");
		qtk_rt_model *mc = NULL, *ms = NULL, *mr = NULL;
		REQUIRE_EQ(t_system("%s convert " MODEL " -s int4 -q -f --search -o %s", bin(), srch), 0);
		REQUIRE_EQ(t_system("%s convert " MODEL " -s int4 -q -f -o %s", bin(), rtn), 0);
		REQUIRE(qtk_rt_open(out, 0, &mc, &st) == QTK_OK && qtk_rt_open(srch, 0, &ms, &st) ==
		        QTK_OK && qtk_rt_open(rtn, 0, &mr, &st) == QTK_OK);
		size_t same_search = 0, same_rtn = 0, uncovered = 0;
		for (size_t i = 0; i < qtk_rt_count(mc); i++) {
			const qtk_rt_tensor *c = qtk_rt_get(mc, i);
			const qtk_rt_tensor *a = qtk_rt_find(ms, c->name), *r = qtk_rt_find(mr, c->name);
			REQUIRE(a && r);
			if (!qtk_q_scheme_get(c->scheme)->quantized ||
			    !strcmp(c->name, "model.layers.0.self_attn.q_proj.weight"))
				continue;
			uncovered++;
			int eq_s = 1, eq_r = 1;
			for (int p = 0; p < QTK_PLANE_MAX; p++) {
				eq_s &= c->planes[p].size == a->planes[p].size &&
				        (!c->planes[p].size ||
				         !memcmp(c->planes[p].data, a->planes[p].data, c->planes[p].size));
				eq_r &= c->planes[p].size == r->planes[p].size &&
				        (!c->planes[p].size ||
				         !memcmp(c->planes[p].data, r->planes[p].data, c->planes[p].size));
			}
			same_search += eq_s;
			same_rtn += eq_r;
		}
		CHECK_EQ(uncovered, 35);
		CHECK_EQ(same_search, 35);
		CHECK_MSG(same_rtn < 5, "%zu of 35 uncovered weights as round-to-nearest", same_rtn);
		qtk_rt_close(mc);
		qtk_rt_close(ms);
		qtk_rt_close(mr);
	}

	/* kept tensors take no statistics, even under gptq (they are not
	 * quantized): no error */
	CHECK_EQ(t_system("%s calibrate " MODEL " --text " TEXT " --tokens 512 --xtx -q -f -o %s",
	                  bin(), one), 0);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --calib-mode gptq "
	                  "--keep 'model.layers.0.*' -o %s 2>%s", bin(), one, out, err), 0);
	text = t_read_file(err, &n);
	REQUIRE(text);
	CHECK(strstr(text, "calibrated 29 of 29 quantized weights"));
	free(text);

	/* options */
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib-mode gptq -o %s 2>/dev/null",
	                  bin(), out), 2);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --act-order -o %s "
	                  "2>/dev/null", bin(), one, out), 2);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --calib-mode gptq "
	                  "--damp 0 -o %s 2>/dev/null", bin(), one, out), 2);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --calib-mode gptq "
	                  "--damp ' 0.1' -o %s 2>/dev/null", bin(), one, out), 2);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --calib-mode exact "
	                  "-o %s 2>/dev/null", bin(), one, out), 2);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --calib-mode gptq "
	                  "--damp 0.05 --act-order -o %s 2>/dev/null", bin(), one, out), 0);
	/* --refit: 0 to 64 conjugate-gradient steps, gptq only; the default
	 * refits (its file differs from --refit 0's, in scales only) */
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --calib-mode gptq "
	                  "--refit 65 -o %s 2>/dev/null", bin(), one, out), 2);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --calib-mode gptq "
	                  "--refit -1 -o %s 2>/dev/null", bin(), one, out), 2);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --refit 2 -o %s "
	                  "2>/dev/null", bin(), one, out), 2);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --no-act-order -o %s "
	                  "2>/dev/null", bin(), one, out), 2);
	CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --calib-mode gptq "
	                  "--no-act-order --refit 1 -o %s 2>/dev/null", bin(), one, out), 0);
	{
		char r0[4096];
		snprintf(r0, sizeof r0, "%s.r0", out);
		CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --calib-mode gptq "
		                  "--refit 0 -o %s 2>/dev/null", bin(), one, r0), 0);
		CHECK_EQ(t_system("%s convert " MODEL " -s int4 -q -f --calib %s --calib-mode gptq "
		                  "-o %s 2>/dev/null", bin(), one, out), 0);
		qtk_pack_file *a, *b;
		size_t moved = 0;
		REQUIRE(qtk_pack_open(r0, 0, &a, &st) == QTK_OK);
		REQUIRE(qtk_pack_open(out, 0, &b, &st) == QTK_OK);
		REQUIRE(qtk_pack_count(a) == qtk_pack_count(b));
		for (size_t i = 0; i < qtk_pack_count(a); i++) {
			const qtk_pack_tensor *ta = qtk_pack_get(a, i), *tb = qtk_pack_get(b, i);
			CHECK(ta->planes[QTK_PLANE_CODES].crc32 == tb->planes[QTK_PLANE_CODES].crc32);
			moved += ta->planes[QTK_PLANE_SCALES].crc32 != tb->planes[QTK_PLANE_SCALES].crc32;
		}
		CHECK_MSG(moved >= 29, "the refit moved the scales of %zu tensors", moved);
		qtk_pack_close(a);
		qtk_pack_close(b);
		unlink(r0);
	}
	/* NF4 with double quantization: the weighted search, and said so */
	CHECK_EQ(t_system("%s convert " MODEL " -s nf4 -g 64 --double-quant -q -f --calib %s "
	                  "--calib-mode gptq --json -o %s > %s.json 2>/dev/null", bin(), one, out,
	                  out), 0);
	{
		char js[4096];
		snprintf(js, sizeof js, "%s.json", out);
		text = t_read_file(js, &n);
		REQUIRE(text);
		CHECK(strstr(text, "\"calib\": \"weighted\""));
		CHECK(!strstr(text, "\"calib\": \"gptq\""));
		free(text);
	}
}
