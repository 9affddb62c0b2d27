/* tests: the model description. config.json is parsed once into
 * qtk_model_desc (formats/model.c): every key as the file has it; the GGUF
 * planner and the runtime judge it by their own rules. The GGUF export of
 * a .qtk whose source directory is gone takes the config from the
 * metadata without a temporary file, and allocation faults reach the
 * parse. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qtk_convert.h"
#include "test.h"
#include "test_mlx_util.h"

static const char cfg_text[] =
	"{\"model_type\": \"llama\", \"hidden_size\": 64, \"rms_norm_eps\": 1e-5,\n"
	" \"rope_theta\": 10000, \"rope_scaling\": null, \"tie_word_embeddings\": true,\n"
	" \"attention_bias\": false, \"sliding_window\": {\"x\": 1}}";

TEST(model_desc_every_key_as_written)
{
	qtk_model_desc *d = calloc(1, sizeof *d);
	qtk_status st;

	REQUIRE(d);
	REQUIRE(qtk_model_desc_parse(cfg_text, sizeof cfg_text - 1, NULL, "c.json", d, &st) ==
	        QTK_OK);
	CHECK(d->present && d->is_object);
	CHECK_STR(d->where, "c.json");
	CHECK_EQ(d->v[QTK_MK_MODEL_TYPE].kind, QTK_MV_STRING);
	CHECK_STR(d->v[QTK_MK_MODEL_TYPE].s, "llama");
	CHECK_EQ(d->v[QTK_MK_MODEL_TYPE].len, 5);
	CHECK_EQ(d->v[QTK_MK_HIDDEN_SIZE].kind, QTK_MV_INT);
	CHECK_EQ(d->v[QTK_MK_HIDDEN_SIZE].i, 64);
	CHECK_EQ(d->v[QTK_MK_RMS_NORM_EPS].kind, QTK_MV_REAL);
	CHECK(d->v[QTK_MK_RMS_NORM_EPS].d == 1e-5);
	CHECK_EQ(d->v[QTK_MK_ROPE_THETA].kind, QTK_MV_INT);
	CHECK(d->v[QTK_MK_ROPE_THETA].d == 10000.0);
	CHECK_EQ(d->v[QTK_MK_ROPE_SCALING].kind, QTK_MV_NULL);
	CHECK_EQ(d->v[QTK_MK_TIE_WORD_EMBEDDINGS].kind, QTK_MV_TRUE);
	CHECK_EQ(d->v[QTK_MK_ATTENTION_BIAS].kind, QTK_MV_FALSE);
	CHECK_EQ(d->v[QTK_MK_SLIDING_WINDOW].kind, QTK_MV_OTHER);
	CHECK_EQ(d->v[QTK_MK_VOCAB_SIZE].kind, QTK_MV_ABSENT);
	for (int k = 0; k < QTK_MK_COUNT; k++)
		CHECK(qtk_model_key_name(k) != NULL);
	CHECK(qtk_model_key_name(QTK_MK_COUNT) == NULL);

	/* a member of a larger document (a .qtk file's metadata) */
	REQUIRE(qtk_model_desc_parse("{\"config\": {\"hidden_size\": 8}}", 30, "config", "m", d,
	                             &st) == QTK_OK);
	CHECK(d->present && d->is_object && d->v[QTK_MK_HIDDEN_SIZE].i == 8);
	REQUIRE(qtk_model_desc_parse("{\"other\": 1}", 12, "config", "m", d, &st) == QTK_OK);
	CHECK(!d->present);
	REQUIRE(qtk_model_desc_parse("[1]", 3, NULL, "m", d, &st) == QTK_OK);
	CHECK(d->present && !d->is_object && d->v[QTK_MK_HIDDEN_SIZE].kind == QTK_MV_ABSENT);
	/* not JSON: the file and line named */
	CHECK_EQ(qtk_model_desc_parse("{\n\"a\": ", 7, NULL, "bad.json", d, &st), QTK_E_FORMAT);
	CHECK_MSG(strstr(st.msg, "bad.json: ") && strstr(st.msg, "(line 2)"), "%s", st.msg);
	CHECK_EQ(qtk_model_desc_read(t_tmp("none.json"), d, &st), QTK_E_NOT_FOUND);
	free(d);
}

/* Every allocation of a parse fails in turn: QTK_E_NOMEM each time, then
 * the undisturbed result. */
TEST(model_desc_alloc_faults)
{
	qtk_model_desc *d = calloc(1, sizeof *d);
	size_t failures = 0;
	int done = 0;
	qtk_status st;

	REQUIRE(d);
	for (uint64_t nth = 1; nth < 10000 && !done; nth++) {
		qtk_err rc;

		qtk_fault_arm(QTK_FAULT_ALLOC, nth, 0);
		rc = qtk_model_desc_parse(cfg_text, sizeof cfg_text - 1, NULL, "c.json", d, &st);
		done = !qtk_fault_fired(QTK_FAULT_ALLOC);
		qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
		if (!done) {
			CHECK_MSG(rc == QTK_E_NOMEM, "allocation %llu: %s", (unsigned long long)nth,
			          st.msg);
			failures++;
		} else {
			CHECK_EQ(rc, QTK_OK);
		}
	}
	CHECK(done && failures >= 3);
	CHECK_EQ(d->v[QTK_MK_HIDDEN_SIZE].i, 64);
	free(d);
}

/* The GGUF export of a LLaMA .qtk whose source directory has no
 * config.json: the metadata's config, the bytes of the GGUF convert
 * writes, and allocation faults fail cleanly. */
TEST(model_desc_export_gguf_from_metadata_config)
{
	const char *dir = t_tmp("src");
	char q[512], a[512], b[512], cfg[600], model[600];
	qtk_status st;
	size_t na, nb, failures = 0;
	void *x, *y;
	int done = 0;

	REQUIRE(mkdir(dir, 0755) == 0);
	REQUIRE(t_system("cp '%s' '%s' '%s' '%s'/", t_data("stories260K/model.safetensors"),
	                 t_data("stories260K/config.json"), t_data("stories260K/tokenizer.model"),
	                 dir) == 0);
	snprintf(q, sizeof q, "%s", t_tmp("m.qtk"));
	snprintf(a, sizeof a, "%s", t_tmp("convert.gguf"));
	snprintf(b, sizeof b, "%s", t_tmp("export.gguf"));
	snprintf(cfg, sizeof cfg, "%s/config.json", dir);
	snprintf(model, sizeof model, "%s/model.safetensors", dir);
	REQUIRE(mlx_test_convert(model, q, QTK_OUT_QTK, qtk_q_scheme_default(), 32, NULL,
	                         QTK_DT_F16, &st) == QTK_OK);
	REQUIRE(mlx_test_convert(model, a, QTK_OUT_GGUF, qtk_q_scheme_default(), 32, NULL,
	                         QTK_DT_F16, &st) == QTK_OK);
	REQUIRE(unlink(cfg) == 0);
	/* under make check (QTK_SANITIZED, ~10x slower): every allocation up to
	 * the 400th (the metadata's model description and the plan), then one
	 * in 8 (the pipeline's, which export_pipeline_alloc_sweep covers) */
	int san = getenv("QTK_SANITIZED") != NULL;
	for (uint64_t nth = 1; nth < 100000 && !done; nth += san && nth >= 400 ? 8 : 1) {
		qtk_export_opts o = { .input = q, .output = b, .format = QTK_OUT_GGUF, .requantize = 1,
		                      .threads = 2, .force = 1 };
		qtk_export_report *rep = NULL;
		qtk_err rc;

		qtk_fault_arm(QTK_FAULT_ALLOC, nth, 0);
		rc = qtk_export(&o, &rep, &st);
		done = !qtk_fault_fired(QTK_FAULT_ALLOC);
		qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
		qtk_export_report_free(rep);
		if (done) {
			CHECK_MSG(rc == QTK_OK, "%s", st.msg);
			break;
		}
		if (rc == QTK_OK) { /* absorbed after the rename: complete */
			unlink(b);
			continue;
		}
		CHECK_MSG(rc == QTK_E_NOMEM, "allocation %llu: %s: %s", (unsigned long long)nth,
		          qtk_err_name(rc), st.msg);
		CHECK_MSG(!t_exists(b), "allocation %llu left %s", (unsigned long long)nth, b);
		failures++;
		if (t_failed())
			break;
	}
	CHECK(done && failures > 50);
	x = t_read_file(a, &na);
	y = t_read_file(b, &nb);
	CHECK_MSG(x && y && na == nb && !memcmp(x, y, na), "export differs from convert");
	free(x);
	free(y);
	printf("    %zu allocations failed in turn\n", failures);
}
