/* tests: GGUF as the input of qtk convert — the llama.cpp stories260K GGUF
 * (v1, F32) to GGUF and .qtk, ggml block inputs (Q8_0, Q4_0, Q4_1) read
 * exactly, kept block tensors copied as they are, the source crc32 of the
 * whole file, unsupported input types refused by name. */
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "qtk_convert.h"
#include "qtk_runtime.h"
#include "test.h"
#include "test_conv_util.h"
#include "test_gguf_util.h"

#define SRC_GGUF "stories260K/source-tinyllamas-stories-260k-f32.gguf"

static int conv(const char *in, const char *out, qtk_out_format fmt, qtk_scheme_id s,
                uint32_t g, const char *keep, qtk_status *st)
{
	qtk_conv_opts o = { .input = in, .output = out, .format = fmt,
	                    .scale_dtype = QTK_DT_F16, .threads = 2, .force = 1 };
	return t_convert(&o, s, g, &(t_rules){ .keep = keep }, NULL, st);
}

/* Tensors of a (by name) equal to those of b: type, shape and bytes.
 * Returns how many matched; *missing counts a's tensors absent in b. */
static int same_tensors(const char *pa, const char *pb, int *missing)
{
	qtk_gguf_file *a = NULL, *b = NULL;
	qtk_status st;
	int n = 0;

	*missing = 0;
	if (qtk_gguf_open(pa, &a, &st) || qtk_gguf_open(pb, &b, &st)) {
		t_fail_at(__FILE__, __LINE__, "open: %s", st.msg);
		qtk_gguf_close(a);
		return -1;
	}
	for (size_t i = 0; i < qtk_gguf_count(a); i++) {
		const qtk_gguf_tensor *x = qtk_gguf_get(a, i), *y = qtk_gguf_find(b, x->name);
		if (!y) {
			(*missing)++;
			continue;
		}
		CHECK_MSG(x->type == y->type && x->nbytes == y->nbytes &&
		          !memcmp(x->ne, y->ne, sizeof x->ne) &&
		          !memcmp(x->data, y->data, (size_t)x->nbytes), "%s differs", x->name);
		n++;
	}
	qtk_gguf_close(a);
	qtk_gguf_close(b);
	return n;
}

/* The same weights through safetensors and through llama.cpp's GGUF give the
 * same Q8_0 / Q4_0 / F32 blocks (the GGUF has q/k already in ggml's layout;
 * the safetensors route un-permutes them). Only output.weight, untied in the
 * GGUF, has no counterpart. */
TEST(convert_gguf_input_equals_safetensors_route)
{
	static const qtk_scheme_id s[] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4, QTK_SCHEME_F32 };
	char in[4096], st_path[4096], gg_path[4096];
	qtk_status st;
	int missing;

	snprintf(in, sizeof in, "%s", t_data(SRC_GGUF));
	for (int k = 0; k < 3; k++) {
		snprintf(st_path, sizeof st_path, "%s", t_tmp("st.gguf"));
		snprintf(gg_path, sizeof gg_path, "%s", t_tmp("gg.gguf"));
		REQUIRE(conv(t_data("stories260K/model.safetensors"), st_path, QTK_OUT_GGUF, s[k], 32,
		             NULL, &st) == QTK_OK);
		CHECK_MSG(conv(in, gg_path, QTK_OUT_GGUF, s[k], 32, NULL, &st) == QTK_OK, "%s",
		          st.msg);
		CHECK_EQ(same_tensors(gg_path, st_path, &missing), 47);
		CHECK_EQ(missing, 1);
	}
}

/* KVs of the input are carried over (vocabulary included); file type and
 * quantization version are set for the new main scheme. */
TEST(convert_gguf_input_keeps_kvs)
{
	char out[4096];
	qtk_gguf_file *f = NULL;
	qtk_status st;
	uint64_t v = 0, len = 0;
	const char *s;
	const qtk_gguf_kv *kv;

	snprintf(out, sizeof out, "%s", t_tmp("q4.gguf"));
	REQUIRE(conv(t_data(SRC_GGUF), out, QTK_OUT_GGUF, QTK_SCHEME_INT4, 32, NULL, &st) ==
	        QTK_OK);
	REQUIRE(qtk_gguf_open(out, &f, &st) == QTK_OK);
	CHECK_EQ(qtk_gguf_version(f), 3);
	CHECK_EQ(qtk_gguf_get_uint(f, "general.file_type", &v, &st), QTK_OK);
	CHECK_EQ(v, 2);
	CHECK_EQ(qtk_gguf_get_uint(f, "llama.block_count", &v, &st), QTK_OK);
	CHECK_EQ(v, 5);
	CHECK_EQ(qtk_gguf_get_str(f, "general.architecture", &s, &len, &st), QTK_OK);
	CHECK(len == 5 && !memcmp(s, "llama", 5));
	kv = qtk_gguf_kv_find(f, "tokenizer.ggml.scores");
	CHECK(kv && kv->count == 512);
	/* one general.file_type only */
	v = 0;
	for (size_t i = 0; i < qtk_gguf_kv_count(f); i++)
		v += !strcmp(qtk_gguf_kv_get(f, i)->key, "general.file_type");
	CHECK_EQ(v, 1);
	CHECK_EQ(qtk_gguf_find(f, "blk.0.attn_q.weight")->type, QTK_GGML_Q4_0);
	CHECK_EQ(qtk_gguf_find(f, "blk.0.ffn_down.weight")->type, QTK_GGML_F16); /* 172 % 32 */
	qtk_gguf_close(f);
}

static uint32_t file_crc(const char *path)
{
	uLong crc = crc32(0, NULL, 0);
	unsigned char buf[65536];
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return 0;
	while ((n = read(fd, buf, sizeof buf)) > 0)
		crc = crc32(crc, buf, (uInt)n);
	close(fd);
	return (uint32_t)crc;
}

/* To .qtk: values equal the GGUF's (lossless f32 here), names and shapes
 * kept, and the metadata's source crc32 is the crc32 of the whole file
 * (header, alignment padding and tensors). */
TEST(convert_gguf_input_to_qtk)
{
	char out[4096], in[4096], want[32];
	qtk_gguf_file *g = NULL;
	qtk_rt_model *m = NULL;
	qtk_status st;

	snprintf(in, sizeof in, "%s", t_data(SRC_GGUF));
	snprintf(out, sizeof out, "%s", t_tmp("s.qtk"));
	REQUIRE(conv(in, out, QTK_OUT_QTK, QTK_SCHEME_F32, 32, NULL, &st) == QTK_OK);
	REQUIRE(qtk_gguf_open(in, &g, &st) == QTK_OK);
	if (qtk_rt_open(out, 0, &m, &st) != QTK_OK) {
		t_fail_at(__FILE__, __LINE__, "%s", st.msg);
		qtk_gguf_close(g);
		return;
	}
	CHECK_EQ(qtk_rt_count(m), qtk_gguf_count(g));
	for (size_t i = 0; i < qtk_gguf_count(g); i++) {
		const qtk_gguf_tensor *x = qtk_gguf_get(g, i);
		const qtk_rt_tensor *y = qtk_rt_find(m, x->name);
		if (!y) {
			t_fail_at(__FILE__, __LINE__, "no %s", x->name);
			continue;
		}
		CHECK_EQ(y->ndim, x->ndim);
		CHECK(!memcmp(y->shape, x->shape, x->ndim * sizeof *x->shape));
		CHECK_MSG(y->planes[QTK_PLANE_CODES].size == x->nbytes &&
		          !memcmp(y->planes[QTK_PLANE_CODES].data, x->data, x->nbytes),
		          "%s differs", x->name);
	}
	snprintf(want, sizeof want, "\"crc32\":\"%08x\"", file_crc(in));
	CHECK_MSG(strstr(qtk_rt_metadata(m), want) != NULL, "no %s in the metadata", want);
	CHECK(strstr(qtk_rt_metadata(m), "\"format\":\"gguf\"") != NULL);
	qtk_rt_close(m);
	qtk_gguf_close(g);
}

/* ggml block inputs made by qtk from stories260K (Q8_0, Q4_0, Q4_1):
 * kept with --keep, the GGUF output copies every block tensor byte for
 * byte; kept in .qtk they become their exact F32 values; requantized they
 * are read as ggml dequantizes them. */
TEST(convert_gguf_block_inputs)
{
	static const qtk_scheme_id s[] = { QTK_SCHEME_INT8, QTK_SCHEME_INT4,
		QTK_SCHEME_INT4_AFFINE };
	static const uint32_t ty[] = { QTK_GGML_Q8_0, QTK_GGML_Q4_0, QTK_GGML_Q4_1 };
	char in[4096], out[4096], out2[4096];
	qtk_status st;
	int missing;

	for (int k = 0; k < 3; k++) {
		qtk_gguf_file *a = NULL;
		qtk_rt_model *m = NULL;
		qtk_conv_report *rep = NULL;
		int blocks = 0;

		snprintf(in, sizeof in, "%s", t_tmp("in.gguf"));
		snprintf(out, sizeof out, "%s", t_tmp("kept.gguf"));
		snprintf(out2, sizeof out2, "%s", t_tmp("kept.qtk"));
		REQUIRE(conv(t_data("stories260K/model.safetensors"), in, QTK_OUT_GGUF, s[k], 32,
		             NULL, &st) == QTK_OK);
		REQUIRE(conv(in, out, QTK_OUT_GGUF, QTK_SCHEME_INT8, 32, "*", &st) == QTK_OK);
		CHECK_EQ(same_tensors(in, out, &missing), 47);
		CHECK_EQ(missing, 0);
		REQUIRE(conv(in, out2, QTK_OUT_QTK, QTK_SCHEME_INT8, 32, "*", &st) == QTK_OK);
		REQUIRE(qtk_gguf_open(in, &a, &st) == QTK_OK);
		if (qtk_rt_open(out2, 0, &m, &st) != QTK_OK) {
			t_fail_at(__FILE__, __LINE__, "%s", st.msg);
			qtk_gguf_close(a);
			return;
		}
		for (size_t i = 0; i < qtk_gguf_count(a); i++) {
			const qtk_gguf_tensor *x = qtk_gguf_get(a, i);
			const qtk_rt_tensor *y = qtk_rt_find(m, x->name);
			float *u = malloc(x->nelem * 4);

			REQUIRE(y && u);
			if (x->type == ty[k]) {
				blocks++;
				CHECK_EQ(y->scheme, QTK_SCHEME_F32);
			}
			CHECK_EQ(qtk_gguf_read_f32(x, 0, x->nelem, u, &st), QTK_OK);
			if (y->scheme == QTK_SCHEME_F32)
				CHECK_MSG(y->planes[QTK_PLANE_CODES].size == x->nelem * 4 &&
				          !memcmp(u, y->planes[QTK_PLANE_CODES].data, x->nelem * 4),
				          "%s: values differ", x->name);
			free(u);
		}
		CHECK_MSG(blocks >= 30, "%d %s tensors", blocks, qtk_ggml_type_name(ty[k]));
		qtk_rt_close(m);

		/* requantized to int8: close to ggml's values */
		{
			qtk_conv_opts o = { .input = in, .output = out2, .format = QTK_OUT_QTK,
			                    .scale_dtype = QTK_DT_F16, .threads = 1, .force = 1 };
			CHECK_MSG(t_convert(&o, QTK_SCHEME_INT8, 32, NULL, &rep, &st) == QTK_OK, "%s",
			          st.msg);
			for (size_t i = 0; rep && i < rep->ntensors; i++) {
				const qtk_conv_tensor *t = &rep->tensors[i];
				const qtk_gguf_tensor *x = qtk_gguf_find(a, t->name);
				if (!x || x->type != ty[k])
					continue;
				CHECK_EQ(t->layout.scheme, QTK_SCHEME_INT8);
				CHECK_MSG(t->has_metrics && t->m.rel_fro < 0.01, "%s: rel_fro %g",
				          t->name, t->m.rel_fro);
			}
			qtk_conv_report_free(rep);
		}
		qtk_gguf_close(a);
	}
}

/* Types qtk does not read (here Q5_0) are refused at open, by name. */
TEST(convert_gguf_input_unsupported_type)
{
	char in[4096];
	tg_file g;
	qtk_status st;
	int fd;

	tg_build(&g, 3);
	tg_put32(g.buf + g.t_type[3], 6); /* w.q8_0 -> Q5_0 (smaller: still in bounds) */
	snprintf(in, sizeof in, "%s", t_tmp("q5.gguf"));
	fd = open(in, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	REQUIRE(fd >= 0);
	REQUIRE(write(fd, g.buf, g.len) == (ssize_t)g.len);
	close(fd);
	tg_free(&g);
	CHECK_EQ(conv(in, t_tmp("q5.qtk"), QTK_OUT_QTK, QTK_SCHEME_INT8, 32, NULL, &st),
	         QTK_E_UNSUPPORTED);
	CHECK_MSG(strstr(st.msg, "w.q8_0") && strstr(st.msg, "Q5_0"), "message: %s", st.msg);
	CHECK(access(t_tmp("q5.qtk"), F_OK) != 0);
}

/* A v3 GGUF of two F64 tensors: "w.f64" 64 x 32 (2048 elements: quantized
 * by default) and "v.f64" of 8 (1-D: kept). Values are not f32-exact. If
 * big, w's element 5 is 1e300 (finite, beyond f32). */
static void f64_gguf(const char *path, int big)
{
	static const uint64_t ne_w[2] = { 64, 32 }, ne_v[1] = { 8 };
	tg_buf g = { 0 };

	tg_buf_header(&g, 2, 0);
	tg_buf_info(&g, "w.f64", 2, ne_w, QTK_GGML_F64, 0);
	tg_buf_info(&g, "v.f64", 1, ne_v, QTK_GGML_F64, 2048 * 8);
	tg_buf_pad(&g, 32);
	for (int i = 0; i < 2048 + 8; i++) {
		double x = big && i == 5 ? 1e300 : sin(i * 0.37) * 0.25 + 1e-10 * i;
		uint64_t u;
		memcpy(&u, &x, 8);
		tg_buf_u64(&g, u);
	}
	if (t_write_file(path, g.b, g.len) != 0)
		t_fail_at(__FILE__, __LINE__, "cannot write %s", path);
	free(g.b);
}

static double f64_of(const qtk_gguf_tensor *t, uint64_t i)
{
	double x;
	memcpy(&x, (const uint8_t *)t->data + 8 * i, 8);
	return x;
}

/* docs/cli.md: F64 GGUF tensors are read as they are — kept ones byte for
 * byte (.qtk raw F64, GGUF F64), quantized ones from their values rounded
 * to f32, tiny ones in GGUF output as F32. convert used to fail with
 * "cannot dequantize ggml type F64", naming no file. */
TEST(convert_gguf_f64_input)
{
	char in[4096], out[4096];
	qtk_gguf_file *src = NULL, *f = NULL;
	qtk_rt_model *m = NULL;
	const qtk_rt_tensor *y;
	const qtk_gguf_tensor *w, *v, *x;
	qtk_status st;

	snprintf(in, sizeof in, "%s", t_tmp("f64.gguf"));
	f64_gguf(in, 0);
	REQUIRE(qtk_gguf_open(in, &src, &st) == QTK_OK);
	w = qtk_gguf_find(src, "w.f64");
	v = qtk_gguf_find(src, "v.f64");
	REQUIRE(w && v);

	/* .qtk int8: w quantized from its values, v kept byte for byte */
	snprintf(out, sizeof out, "%s", t_tmp("f64.qtk"));
	CHECK_MSG(conv(in, out, QTK_OUT_QTK, QTK_SCHEME_INT8, 32, NULL, &st) == QTK_OK, "%s",
	          st.msg);
	if (qtk_rt_open(out, QTK_RT_VERIFY, &m, &st) == QTK_OK) {
		y = qtk_rt_find(m, "w.f64");
		CHECK(y && y->scheme == QTK_SCHEME_INT8 && y->src_dtype == QTK_DT_F64);
		y = qtk_rt_find(m, "v.f64");
		CHECK(y && y->scheme == QTK_SCHEME_RAW && y->planes[0].dtype == QTK_DT_F64 &&
		      y->planes[0].size == 64 && !memcmp(y->planes[0].data, v->data, 64));
		qtk_rt_close(m);
		m = NULL;
	} else {
		t_fail_at(__FILE__, __LINE__, "%s", st.msg);
	}
	/* .qtk, everything kept: w byte for byte too */
	CHECK_MSG(conv(in, out, QTK_OUT_QTK, QTK_SCHEME_INT8, 32, "*", &st) == QTK_OK, "%s",
	          st.msg);
	if (qtk_rt_open(out, 0, &m, &st) == QTK_OK) {
		y = qtk_rt_find(m, "w.f64");
		CHECK(y && y->scheme == QTK_SCHEME_RAW && y->planes[0].dtype == QTK_DT_F64 &&
		      y->planes[0].size == w->nbytes && !memcmp(y->planes[0].data, w->data, w->nbytes));
		qtk_rt_close(m);
	} else {
		t_fail_at(__FILE__, __LINE__, "%s", st.msg);
	}

	/* GGUF int8: w as Q8_0, v (1-D) in F32 = its values rounded */
	snprintf(out, sizeof out, "%s", t_tmp("f64.out.gguf"));
	CHECK_MSG(conv(in, out, QTK_OUT_GGUF, QTK_SCHEME_INT8, 32, NULL, &st) == QTK_OK, "%s",
	          st.msg);
	if (qtk_gguf_open(out, &f, &st) == QTK_OK) {
		x = qtk_gguf_find(f, "w.f64");
		CHECK(x && x->type == QTK_GGML_Q8_0);
		x = qtk_gguf_find(f, "v.f64");
		REQUIRE(x && x->type == QTK_GGML_F32);
		for (uint64_t i = 0; i < 8; i++) {
			float a;
			memcpy(&a, (const uint8_t *)x->data + 4 * i, 4);
			CHECK_MSG(a == (float)f64_of(v, i), "v.f64[%llu]", (unsigned long long)i);
		}
		qtk_gguf_close(f);
		f = NULL;
	} else {
		t_fail_at(__FILE__, __LINE__, "%s", st.msg);
	}
	/* GGUF, everything kept: w stays F64 byte for byte */
	CHECK_MSG(conv(in, out, QTK_OUT_GGUF, QTK_SCHEME_INT8, 32, "*", &st) == QTK_OK, "%s",
	          st.msg);
	if (qtk_gguf_open(out, &f, &st) == QTK_OK) {
		x = qtk_gguf_find(f, "w.f64");
		CHECK(x && x->type == QTK_GGML_F64 && x->nbytes == w->nbytes &&
		      !memcmp(x->data, w->data, w->nbytes));
		qtk_gguf_close(f);
	} else {
		t_fail_at(__FILE__, __LINE__, "%s", st.msg);
	}
	qtk_gguf_close(src);

	/* a finite F64 beyond f32's range is refused (not made Inf), naming
	 * file, tensor and element; no output */
	snprintf(in, sizeof in, "%s", t_tmp("big64.gguf"));
	f64_gguf(in, 1);
	snprintf(out, sizeof out, "%s", t_tmp("big64.gguf.out"));
	CHECK_EQ(conv(in, out, QTK_OUT_GGUF, QTK_SCHEME_INT8, 32, NULL, &st), QTK_E_UNSUPPORTED);
	CHECK_MSG(strstr(st.msg, "big64.gguf") && strstr(st.msg, "'w.f64'") &&
	          strstr(st.msg, "element 5"), "%s", st.msg);
	CHECK(access(out, F_OK) != 0);
}
