/* tests: qtk convert --format gguf on stories260K against the llama.cpp
 * GGUF it came from: F32 export bit-identical (q/k rows un-permuted, names
 * mapped, output omitted because tied), Q8_0/Q4_0 export within the
 * scheme's bound with llama.cpp's type choices, KVs and vocabulary. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "qtk_convert.h"
#include "test.h"
#include "test_conv_util.h"

#define SRC_GGUF "stories260K/source-tinyllamas-stories-260k-f32.gguf"

static int convert_gguf(const char *out, qtk_scheme_id s, uint32_t g, qtk_status *st)
{
	qtk_conv_opts o = { .input = t_data("stories260K/model.safetensors"), .output = out,
	                    .format = QTK_OUT_GGUF, .scale_dtype = QTK_DT_F16, .threads = 2,
	                    .force = 1 };
	return t_convert(&o, s, g, NULL, NULL, st);
}

/* Every tensor of the reference: same name (output -> tied token_embd),
 * values within tol * absmax of the tensor; returns the count checked. */
static int compare(const char *path, double tol, int exact)
{
	qtk_gguf_file *a = NULL, *b = NULL;
	qtk_status st;
	int n = 0;

	if (qtk_gguf_open(t_data(SRC_GGUF), &a, &st) || qtk_gguf_open(path, &b, &st)) {
		t_fail_at(__FILE__, __LINE__, "open: %s", st.msg);
		qtk_gguf_close(a);
		return 0;
	}
	CHECK_EQ(qtk_gguf_count(b), qtk_gguf_count(a) - 1); /* no output.weight: tied */
	for (size_t i = 0; i < qtk_gguf_count(a); i++) {
		const qtk_gguf_tensor *x = qtk_gguf_get(a, i);
		const qtk_gguf_tensor *y = qtk_gguf_find(b, strcmp(x->name, "output.weight") ?
		                                            x->name : "token_embd.weight");
		float *u, *v;
		double amax = 0, worst = 0;

		if (!y) {
			t_fail_at(__FILE__, __LINE__, "%s: no tensor %s", path, x->name);
			continue;
		}
		CHECK_EQ(y->nelem, x->nelem);
		CHECK_EQ(y->cols, x->cols);
		if (exact) {
			CHECK_MSG(y->type == x->type && y->nbytes == x->nbytes &&
			          !memcmp(y->data, x->data, x->nbytes), "%s differs", x->name);
			n++;
			continue;
		}
		u = malloc(x->nelem * 4);
		v = malloc(x->nelem * 4);
		if (!u || !v) {
			t_fail_at(__FILE__, __LINE__, "out of memory");
			free(u);
			free(v);
			break;
		}
		CHECK_EQ(qtk_gguf_read_f32(x, 0, x->nelem, u, &st), QTK_OK);
		CHECK_EQ(qtk_gguf_read_f32(y, 0, y->nelem, v, &st), QTK_OK);
		for (uint64_t k = 0; k < x->nelem; k++) {
			amax = fmax(amax, fabs((double)u[k]));
			worst = fmax(worst, fabs((double)u[k] - (double)v[k]));
		}
		CHECK_MSG(worst <= tol * amax, "%s: max error %g > %g x absmax %g", x->name, worst,
		          tol, amax);
		free(u);
		free(v);
		n++;
	}
	qtk_gguf_close(a);
	qtk_gguf_close(b);
	return n;
}

TEST(convert_gguf_f32_equals_llama_cpp_original)
{
	qtk_status st;

	REQUIRE(convert_gguf(t_tmp("f32.gguf"), QTK_SCHEME_F32, 32, &st) == QTK_OK);
	CHECK_EQ(compare(t_tmp("f32.gguf"), 0, 1), 48);
}

TEST(convert_gguf_q8_0_and_q4_0)
{
	qtk_gguf_file *f = NULL;
	qtk_status st;
	uint64_t v = 0;
	const qtk_gguf_kv *kv;

	REQUIRE(convert_gguf(t_tmp("q8.gguf"), QTK_SCHEME_INT8, 32, &st) == QTK_OK);
	CHECK_EQ(compare(t_tmp("q8.gguf"), 1.0 / 100, 0), 48);
	REQUIRE(qtk_gguf_open(t_tmp("q8.gguf"), &f, &st) == QTK_OK);
	CHECK_EQ(qtk_gguf_find(f, "blk.0.attn_q.weight")->type, QTK_GGML_Q8_0);
	CHECK_EQ(qtk_gguf_find(f, "blk.0.ffn_down.weight")->type, QTK_GGML_F16); /* 172 % 32 */
	CHECK_EQ(qtk_gguf_find(f, "blk.0.attn_norm.weight")->type, QTK_GGML_F32);
	CHECK_EQ(qtk_gguf_get_uint(f, "llama.block_count", &v, &st), QTK_OK);
	CHECK_EQ(v, 5);
	CHECK_EQ(qtk_gguf_get_uint(f, "general.file_type", &v, &st), QTK_OK);
	CHECK_EQ(v, 7);
	CHECK_EQ(qtk_gguf_get_uint(f, "general.quantization_version", &v, &st), QTK_OK);
	CHECK_EQ(v, 2);
	kv = qtk_gguf_kv_find(f, "tokenizer.ggml.tokens");
	CHECK(kv && kv->count == 512);
	qtk_gguf_close(f);

	REQUIRE(convert_gguf(t_tmp("q4.gguf"), QTK_SCHEME_INT4, 32, &st) == QTK_OK);
	CHECK_EQ(compare(t_tmp("q4.gguf"), 1.0 / 7, 0), 48);
	REQUIRE(qtk_gguf_open(t_tmp("q4.gguf"), &f, &st) == QTK_OK);
	CHECK_EQ(qtk_gguf_find(f, "blk.3.attn_k.weight")->type, QTK_GGML_Q4_0);
	qtk_gguf_close(f);
}

TEST(convert_gguf_refuses_what_gguf_cannot_hold)
{
	qtk_status st;

	CHECK_EQ(convert_gguf(t_tmp("nf4.gguf"), QTK_SCHEME_NF4, 32, &st), QTK_E_UNSUPPORTED);
	CHECK_MSG(strstr(st.msg, "tensor '") != NULL, "message: %s", st.msg);
	CHECK_EQ(convert_gguf(t_tmp("g64.gguf"), QTK_SCHEME_INT4, 64, &st), QTK_E_UNSUPPORTED);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 0);
}

/* A model that is neither LLaMA nor a DiT: names kept, general.architecture
 * from its config.json's model_type; without a config.json, no
 * architecture (a plain container). */
TEST(convert_gguf_other_model_arch_from_config)
{
	char in[4096], out[4096];
	qtk_gguf_file *f = NULL;
	qtk_status st;
	const char *s, *gpt2 = t_shared("ckpts/capp-gpt2/model.safetensors");
	uint64_t len = 0;

	if (!gpt2)
		SKIP("../shared/ckpts/capp-gpt2 not present");
	snprintf(in, sizeof in, "%s", gpt2);
	snprintf(out, sizeof out, "%s", t_tmp("gpt2.gguf"));
	{
		qtk_conv_opts o = { .input = in, .output = out, .format = QTK_OUT_GGUF,
		                    .scale_dtype = QTK_DT_F16, .threads = 2, .force = 1 };
		CHECK_MSG(t_convert(&o, QTK_SCHEME_INT8, 32, NULL, NULL, &st) == QTK_OK, "%s",
		          st.msg);
	}
	REQUIRE(qtk_gguf_open(out, &f, &st) == QTK_OK);
	CHECK_EQ(qtk_gguf_get_str(f, "general.architecture", &s, &len, &st), QTK_OK);
	CHECK(len == 4 && !memcmp(s, "gpt2", 4));
	CHECK(qtk_gguf_find(f, "transformer.h.0.attn.c_attn.weight") != NULL ||
	      qtk_gguf_find(f, "h.0.attn.c_attn.weight") != NULL);
	qtk_gguf_close(f);
}

/* GGUF output of tensors that are not float weights: signed integers go as
 * GGUF I8..I64 byte for byte, F64 as F64, unsigned integers are refused by
 * name; a tensor name ggml cannot read (64 bytes or more) is refused by
 * name and length, and nothing is written. */
TEST(convert_gguf_integer_f64_and_long_names)
{
	char in[4096], out[4096], longname[80];
	int32_t i32[64];
	int64_t i64[4] = { -1, 2, -3, (int64_t)1 << 40 };
	double f64[40 * 40];
	float w[64 * 64];
	qtk_st_desc d[4] = {
		{ .name = "ints", .dtype = QTK_DT_I32, .ndim = 2, .shape = { 8, 8 } },
		{ .name = "big", .dtype = QTK_DT_I64, .ndim = 1, .shape = { 4 } },
		{ .name = "dbl", .dtype = QTK_DT_F64, .ndim = 2, .shape = { 40, 40 } },
		{ .name = "w", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 64, 64 } },
	};
	const void *data[4] = { i32, i64, f64, w };
	qtk_conv_opts o = { .input = in, .output = out, .format = QTK_OUT_GGUF,
	                    .scale_dtype = QTK_DT_F16, .threads = 1, .force = 1 };
	t_rules keep = { .keep = "dbl" }; /* kept: F64 as it is */
	qtk_gguf_file *f = NULL;
	qtk_status st;

	for (int i = 0; i < 64; i++)
		i32[i] = i * 1000 - 7;
	for (int i = 0; i < 40 * 40; i++)
		f64[i] = 1.0 / (i + 3);
	for (int i = 0; i < 64 * 64; i++)
		w[i] = (float)((i * 37) % 101 - 50) * 0.01f;
	snprintf(in, sizeof in, "%s", t_tmp("mixed.safetensors"));
	snprintf(out, sizeof out, "%s", t_tmp("mixed.gguf"));
	REQUIRE(qtk_st_write(in, d, data, 4, NULL, NULL, &st) == QTK_OK);
	CHECK_MSG(t_convert(&o, QTK_SCHEME_INT8, 32, &keep, NULL, &st) == QTK_OK, "%s", st.msg);
	REQUIRE(qtk_gguf_open(out, &f, &st) == QTK_OK);
	CHECK(qtk_gguf_find(f, "ints")->type == QTK_GGML_I32 &&
	      !memcmp(qtk_gguf_find(f, "ints")->data, i32, sizeof i32));
	CHECK(qtk_gguf_find(f, "big")->type == QTK_GGML_I64 &&
	      !memcmp(qtk_gguf_find(f, "big")->data, i64, sizeof i64));
	CHECK(qtk_gguf_find(f, "dbl")->type == QTK_GGML_F64 &&
	      !memcmp(qtk_gguf_find(f, "dbl")->data, f64, sizeof f64));
	CHECK_EQ(qtk_gguf_find(f, "w")->type, QTK_GGML_Q8_0);
	qtk_gguf_close(f);
	unlink(out);

	/* a 64-byte name: refused, nothing written */
	memset(longname, 'n', 64);
	longname[64] = 0;
	d[3].name = longname;
	REQUIRE(qtk_st_write(in, d, data, 4, NULL, &(qtk_write_opts){ .force = 1 }, &st) == QTK_OK);
	CHECK_EQ(t_convert(&o, QTK_SCHEME_INT8, 32, &keep, NULL, &st), QTK_E_UNSUPPORTED);
	CHECK_MSG(strstr(st.msg, longname) && strstr(st.msg, "64 bytes") &&
	          strstr(st.msg, "at most 63"), "message: %s", st.msg);
	CHECK(!t_exists(out));

	/* unsigned integers have no GGUF type */
	d[3].name = "w";
	d[0].dtype = QTK_DT_U32;
	REQUIRE(qtk_st_write(in, d, data, 4, NULL, &(qtk_write_opts){ .force = 1 }, &st) == QTK_OK);
	CHECK_EQ(t_convert(&o, QTK_SCHEME_INT8, 32, &keep, NULL, &st), QTK_E_UNSUPPORTED);
	CHECK_MSG(strstr(st.msg, "'ints'") && strstr(st.msg, "U32"), "message: %s", st.msg);
	CHECK(!t_exists(out));
}

/* A tensor of more than 4 dims goes to GGUF as [rows][cols] with its shape
 * in an INT32 array KV: a dim INT32 cannot hold is refused by name (here an
 * empty 5-D tensor, so the file stays tiny), and nothing is written. */
TEST(convert_gguf_5d_dim_beyond_int32)
{
	char in[4096], out[4096];
	float w[64 * 64] = { 0 };
	qtk_st_desc d[2] = {
		{ .name = "huge", .dtype = QTK_DT_F32, .ndim = 5,
		  .shape = { (uint64_t)INT32_MAX + 1, 0, 1, 2, 2 } },
		{ .name = "w", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 64, 64 } },
	};
	const void *data[2] = { NULL, w };
	qtk_conv_opts o = { .input = in, .output = out, .format = QTK_OUT_GGUF,
	                    .scale_dtype = QTK_DT_F16, .threads = 1, .force = 1 };
	qtk_status st;

	snprintf(in, sizeof in, "%s", t_tmp("5d.safetensors"));
	snprintf(out, sizeof out, "%s", t_tmp("5d.gguf"));
	REQUIRE(qtk_st_write(in, d, data, 2, NULL, NULL, &st) == QTK_OK);
	CHECK_EQ(t_convert(&o, QTK_SCHEME_INT8, 32, NULL, NULL, &st), QTK_E_UNSUPPORTED);
	CHECK_MSG(strstr(st.msg, "'huge'") && strstr(st.msg, "INT32"), "message: %s", st.msg);
	CHECK(!t_exists(out));
}
