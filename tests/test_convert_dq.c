/* tests: qtk convert --double-quant (NF4 group absmax in 8 bits, blocks of
 * 256): the streamed result equals the in-memory reference (quantize every
 * row with f32 scales, one qtk_q_double_quant over the tensor) plane for
 * plane, for any chunking and thread count; the reported metrics are those
 * of the double-dequantized weights. */
#include <math.h>
#include <stdlib.h>

#include "qtk_convert.h"
#include "qtk_runtime.h"
#include "test.h"
#include "test_conv_util.h"

static int conv_dq(const char *in, const char *out, int threads, uint64_t chunk,
                   int search, qtk_conv_report **rep, qtk_status *st)
{
	qtk_conv_opts o = { .input = in, .output = out, .scale_dtype = QTK_DT_F16,
	                    .threads = threads, .chunk_elems = chunk, .search = search,
	                    .qflags = QTK_QF_DOUBLE_QUANT, .force = 1 };
	return t_convert(&o, QTK_SCHEME_NF4, 64, NULL, rep, st);
}

/* Planes of tensor t equal the in-memory reference; returns 1 if so. */
static int matches_reference(const qtk_st_tensor *src, const qtk_rt_tensor *t, int search,
                             const qtk_conv_tensor *ct)
{
	qtk_q_layout q = t->layout;
	uint64_t gpr, ng, sizes[QTK_PLANE_MAX];
	float *x, *absmax, *y;
	uint8_t *codes, *c8, *dq;
	qtk_q_planes d;
	qtk_q_cplanes c;
	qtk_q_opts o = { .search = search, .tensor = t->name };
	qtk_q_acc acc = { 0 };
	qtk_q_metrics m;
	qtk_status st;
	int ok = 1;

	q.flags &= ~QTK_QF_DOUBLE_QUANT;
	q.scale_dtype = QTK_DT_F32;
	gpr = qtk_q_groups_per_row(&q, t->cols);
	ng = t->rows * gpr;
	qtk_q_plane_sizes(&t->layout, t->rows, t->cols, sizes);
	x = malloc(t->rows * t->cols * 4);
	y = malloc(t->rows * t->cols * 4);
	absmax = malloc(ng * 4);
	codes = malloc(sizes[QTK_PLANE_CODES] + 1);
	c8 = malloc(ng);
	dq = malloc(sizes[QTK_PLANE_DQ]);
	if (!x || !y || !absmax || !codes || !c8 || !dq)
		ok = 0;
	if (ok && qtk_st_read_f32(src, 0, t->rows * t->cols, x, &st) != QTK_OK)
		ok = 0;
	memset(&d, 0, sizeof d);
	d.p[QTK_PLANE_CODES] = codes;
	d.p[QTK_PLANE_SCALES] = absmax;
	if (ok && qtk_q_quantize_rows(&q, x, t->rows, t->cols, &d, &o, &st) != QTK_OK)
		ok = 0;
	if (ok && qtk_q_double_quant(absmax, ng, c8, dq, &st) != QTK_OK)
		ok = 0;
	if (ok) {
		CHECK_MSG(t->planes[QTK_PLANE_CODES].size == sizes[QTK_PLANE_CODES] &&
		          !memcmp(t->planes[QTK_PLANE_CODES].data, codes, sizes[QTK_PLANE_CODES]),
		          "%s: codes differ", t->name);
		CHECK_MSG(t->planes[QTK_PLANE_SCALES].size == ng &&
		          !memcmp(t->planes[QTK_PLANE_SCALES].data, c8, ng), "%s: scales differ",
		          t->name);
		CHECK_MSG(t->planes[QTK_PLANE_DQ].size == sizes[QTK_PLANE_DQ] &&
		          !memcmp(t->planes[QTK_PLANE_DQ].data, dq, sizes[QTK_PLANE_DQ]),
		          "%s: DQ plane differs", t->name);
		/* metrics of the double-dequantized weights */
		qtk_q_double_dequant(c8, ng, dq, absmax);
		memset(&c, 0, sizeof c);
		c.p[QTK_PLANE_CODES] = codes;
		c.p[QTK_PLANE_SCALES] = absmax;
		qtk_q_dequantize_rows(&q, &c, t->rows, t->cols, y);
		qtk_q_acc_add(&acc, x, y, t->rows * t->cols);
		qtk_q_metrics_from(&acc, &m);
		CHECK_MSG(ct->has_metrics && fabs(ct->m.rel_fro - m.rel_fro) <= 1e-6 * m.rel_fro &&
		          ct->m.max_abs == m.max_abs, "%s: metrics %g vs %g", t->name,
		          ct->has_metrics ? ct->m.rel_fro : -1.0, m.rel_fro);
		/* NF4 error bound (half the widest code gap of the absmax) holds
		 * with the 8-bit absmax error added */
		CHECK_MSG(m.rel_fro < 0.15, "%s: rel_fro %g", t->name, m.rel_fro);
	}
	free(x);
	free(y);
	free(absmax);
	free(codes);
	free(c8);
	free(dq);
	return ok;
}

static void check_file(const char *in, const char *out, int search, const qtk_conv_report *rep)
{
	qtk_st_file *s = NULL;
	qtk_rt_model *m = NULL;
	qtk_status st;
	int ndq = 0;

	REQUIRE(qtk_st_open(in, &s, &st) == QTK_OK);
	if (qtk_rt_open(out, 0, &m, &st) != QTK_OK) {
		t_fail_at(__FILE__, __LINE__, "%s", st.msg);
		qtk_st_close(s);
		return;
	}
	for (size_t i = 0; i < qtk_rt_count(m); i++) {
		const qtk_rt_tensor *t = qtk_rt_get(m, i);
		const qtk_conv_tensor *ct = NULL;
		if (!(t->layout.flags & QTK_QF_DOUBLE_QUANT))
			continue;
		for (size_t k = 0; k < rep->ntensors; k++)
			if (!strcmp(rep->tensors[k].name, t->name))
				ct = &rep->tensors[k];
		REQUIRE(ct);
		CHECK_MSG(matches_reference(qtk_st_find(s, t->name), t, search, ct), "%s", t->name);
		ndq++;
	}
	CHECK_EQ(ndq, 36); /* every 2-D weight of stories260K */
	qtk_rt_close(m);
	qtk_st_close(s);
}

TEST(convert_double_quant_equals_in_memory)
{
	char in[4096], a[4096], b[4096];
	qtk_conv_report *rep = NULL;
	qtk_status st;
	void *x, *y;
	size_t nx = 0, ny = 0;

	snprintf(in, sizeof in, "%s", t_data("stories260K/model.safetensors"));
	snprintf(a, sizeof a, "%s", t_tmp("a.qtk"));
	snprintf(b, sizeof b, "%s", t_tmp("b.qtk"));
	for (int search = 0; search <= 1; search++) {
		/* one item per tensor vs many small items on 2 threads */
		REQUIRE(conv_dq(in, a, 1, 1u << 20, search, &rep, &st) == QTK_OK);
		check_file(in, a, search, rep);
		qtk_conv_report_free(rep);
		rep = NULL;
		CHECK_MSG(conv_dq(in, b, 2, 256, search, &rep, &st) == QTK_OK, "%s", st.msg);
		qtk_conv_report_free(rep);
		x = t_read_file(a, &nx);
		y = t_read_file(b, &ny);
		REQUIRE(x && y);
		CHECK_MSG(nx == ny && !memcmp(x, y, nx), "chunking/threads change the file");
		free(x);
		free(y);
	}
}
