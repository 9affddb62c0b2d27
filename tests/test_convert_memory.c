/* tests: the in-memory sink and every source x sink pair. QTK_OUT_MEMORY
 * hands the caller the planes a .qtk file of the same run stores, byte for
 * byte; every source (safetensors file, directory, sharded index, GGUF)
 * converts to every sink (.qtk, GGUF, MLX, memory) through the same
 * pipeline; allocation faults fail cleanly with nothing left. */
#include <stdlib.h>
#include <sys/stat.h>

#include "qtk_convert.h"
#include "test.h"
#include "test_hostile_util.h"

static qtk_err conv(const char *in, const char *out, qtk_out_format fmt, const char *scheme,
                    uint32_t group, uint32_t qflags, qtk_mem_model **mem, qtk_status *st)
{
	qtk_recipe *r = NULL;
	qtk_conv_report *rep = NULL;
	qtk_err rc = qtk_recipe_new(&r, (qtk_scheme_id)qtk_q_scheme_from_name(scheme), group, st);

	if (!rc) {
		qtk_conv_opts o = { .input = in, .output = out, .format = fmt, .recipe = r,
		                    .scale_dtype = QTK_DT_F16, .qflags = qflags, .threads = 3,
		                    .force = 1, .memory = mem, .chunk_elems = 4096 };
		rc = qtk_convert(&o, &rep, st);
	}
	qtk_conv_report_free(rep);
	qtk_recipe_free(r);
	return rc;
}

/* The memory model against the .qtk file: names, layouts, shapes and every
 * plane's bytes. */
static void same_as_file(const qtk_mem_model *m, const char *qtk, const char *what)
{
	qtk_pack_file *f = NULL;
	qtk_status st;

	REQUIRE(qtk_pack_open(qtk, 0, &f, &st) == QTK_OK);
	CHECK_EQ(m->n, qtk_pack_count(f));
	CHECK(m->metadata_json != NULL);
	for (size_t i = 0; i < m->n && i < qtk_pack_count(f); i++) {
		const qtk_pack_tensor *t = qtk_pack_get(f, i);
		const qtk_mem_tensor *x = &m->t[i];

		CHECK_STR(x->name, t->name);
		CHECK_MSG(!memcmp(&x->layout, &t->layout, sizeof x->layout) && x->rows == t->rows &&
		          x->cols == t->cols && x->ndim == t->ndim, "%s: %s: layout or shape",
		          what, t->name);
		for (int p = 0; p < QTK_PLANE_MAX; p++) {
			void *buf = malloc(t->planes[p].size ? t->planes[p].size : 1);
			REQUIRE(buf);
			CHECK_EQ(x->sizes[p], t->planes[p].size);
			if (t->planes[p].size && x->sizes[p] == t->planes[p].size &&
			    qtk_pack_plane_read(f, t, p, buf, &st) == QTK_OK)
				CHECK_MSG(!memcmp(buf, x->planes[p], (size_t)x->sizes[p]),
				          "%s: %s: plane %d differs", what, t->name, p);
			free(buf);
		}
	}
	qtk_pack_close(f);
}

TEST(memory_sink_equals_qtk_file_every_scheme)
{
	const char *in = t_data("stories260K/model.safetensors");
	char q[512];

	snprintf(q, sizeof q, "%s", t_tmp("m.qtk"));
	for (int i = 0; i < QTK_SCHEME_COUNT; i++) {
		const qtk_q_scheme *s = qtk_q_scheme_get((qtk_scheme_id)i);
		for (int dq = 0; dq <= (int)s->double_quant; dq++) {
			qtk_mem_model *m = NULL;
			qtk_status st;
			uint32_t fl = dq ? QTK_QF_DOUBLE_QUANT : 0;

			if (!s->quantize)
				continue;
			REQUIRE(conv(in, q, QTK_OUT_QTK, s->name, 32, fl, NULL, &st) == QTK_OK);
			CHECK_MSG(conv(in, NULL, QTK_OUT_MEMORY, s->name, 32, fl, &m, &st) == QTK_OK,
			          "%s: %s", s->name, st.msg);
			REQUIRE(m);
			same_as_file(m, q, s->name);
			qtk_mem_model_free(m);
		}
	}
}

/* Sources: a file, a directory, a sharded index, a GGUF; every one into
 * .qtk, GGUF, MLX and memory. Memory equals the .qtk of the same source. */
TEST(every_source_into_every_sink)
{
	static const qtk_out_format sinks[] = { QTK_OUT_QTK, QTK_OUT_GGUF, QTK_OUT_MLX,
	                                        QTK_OUT_MEMORY };
	const char *shard = t_tmp("shard");
	char gguf[512], srcs[4][600], q[512], out[512];
	qtk_status st;

	REQUIRE(mkdir(shard, 0755) == 0 && hs_st_sharded(shard) == 0);
	snprintf(gguf, sizeof gguf, "%s", t_tmp("src.gguf"));
	REQUIRE(conv(t_data("stories260K/model.safetensors"), gguf, QTK_OUT_GGUF, "f16", 0, 0,
	             NULL, &st) == QTK_OK);
	snprintf(srcs[0], sizeof srcs[0], "%s", t_data("stories260K/model.safetensors"));
	snprintf(srcs[1], sizeof srcs[1], "%s", t_data("stories260K"));
	snprintf(srcs[2], sizeof srcs[2], "%s/m.safetensors.index.json", shard);
	snprintf(srcs[3], sizeof srcs[3], "%s", gguf);
	snprintf(q, sizeof q, "%s", t_tmp("ref.qtk"));
	for (int s = 0; s < 4; s++) {
		qtk_mem_model *m = NULL;

		REQUIRE(conv(srcs[s], q, QTK_OUT_QTK, "int8", 32, 0, NULL, &st) == QTK_OK);
		for (size_t k = 0; k < sizeof sinks / sizeof *sinks; k++) {
			snprintf(out, sizeof out, "%s", t_tmp(k == 2 ? "o-mlx" : "o.out"));
			CHECK_MSG(conv(srcs[s], sinks[k] == QTK_OUT_MEMORY ? NULL : out, sinks[k], "int8",
			               32, 0, sinks[k] == QTK_OUT_MEMORY ? &m : NULL, &st) == QTK_OK,
			          "source %d sink %zu: %s", s, k, st.msg);
			if (sinks[k] != QTK_OUT_MEMORY)
				CHECK(t_exists(out));
		}
		REQUIRE(m);
		same_as_file(m, q, srcs[s]);
		qtk_mem_model_free(m);
	}
}

/* Every allocation of a memory conversion fails in turn: QTK_E_NOMEM and
 * no model; then the model of an undisturbed run. */
TEST(memory_sink_alloc_faults)
{
	const char *shard = t_tmp("shard");
	char in[600], q[512];
	size_t failures = 0;
	int done = 0;
	qtk_status st;
	qtk_mem_model *m = NULL;

	REQUIRE(mkdir(shard, 0755) == 0 && hs_st_sharded(shard) == 0);
	snprintf(in, sizeof in, "%s/m.safetensors.index.json", shard);
	snprintf(q, sizeof q, "%s", t_tmp("ref.qtk"));
	REQUIRE(conv(in, q, QTK_OUT_QTK, "int4", 32, 0, NULL, &st) == QTK_OK);
	for (uint64_t nth = 1; nth < 100000 && !done; nth++) {
		qtk_err rc;

		m = NULL;
		qtk_fault_arm(QTK_FAULT_ALLOC, nth, 0);
		rc = conv(in, NULL, QTK_OUT_MEMORY, "int4", 32, 0, &m, &st);
		done = !qtk_fault_fired(QTK_FAULT_ALLOC);
		qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
		if (done)
			break;
		CHECK_MSG(rc == QTK_E_NOMEM && m == NULL, "allocation %llu: %s: %s",
		          (unsigned long long)nth, qtk_err_name(rc), st.msg);
		failures++;
		if (t_failed())
			return;
	}
	CHECK(done && failures > 20);
	REQUIRE(m);
	same_as_file(m, q, "after the faults");
	qtk_mem_model_free(m);
	printf("    %zu allocations failed in turn\n", failures);
}
