/* tests/bench: RMSE of searched vs RTN quantization for each 4-bit scheme on
 * every real checkpoint in ../shared/ckpts (group 32, f16 scales; a tensor
 * whose scales do not fit f16 is redone with f32 scales and counted). Every
 * float tensor of rank >= 2 is quantized as [prod(dims[:-1])][dims[-1]]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "qtk_formats.h"
#include "qtk_quant.h"


static const char *const ckpts[] = {
	"../shared/ckpts/stories260K/model.safetensors",
	"../shared/ckpts/capp-gpt2/model.safetensors",
	"../shared/ckpts/human-models/blazepose-heavy.safetensors",
};

/* Quantize + dequantize one tensor; adds to acc. Returns 1 if f32 scales were
 * needed, -1 on error. */
static int one(const qtk_q_layout *L0, int search, const float *x, size_t rows,
               size_t cols, float *y, uint8_t *buf[3], qtk_q_acc *acc)
{
	qtk_q_layout L = *L0;
	qtk_q_planes P = { { buf[0], buf[1], buf[2], NULL } };
	qtk_q_cplanes C = { { buf[0], buf[1], buf[2], NULL } };
	qtk_q_opts o = { .tensor = "t", .search = search };
	qtk_status st;
	int fb = 0;
	qtk_err e = qtk_q_quantize_rows(&L, x, rows, cols, &P, &o, &st);
	if (e == QTK_E_Q_SCALE_RANGE) {
		L.scale_dtype = QTK_DT_F32;
		fb = 1;
		e = qtk_q_quantize_rows(&L, x, rows, cols, &P, &o, &st);
	}
	if (e != QTK_OK) {
		fprintf(stderr, "quality: %s\n", st.msg);
		return -1;
	}
	qtk_q_dequantize_rows(&L, &C, rows, cols, y);
	qtk_q_acc_add(acc, x, y, rows * cols);
	return fb;
}

BENCH(quality)
{
	static const qtk_scheme_id ids[] = { QTK_SCHEME_INT4, QTK_SCHEME_INT4_AFFINE,
		QTK_SCHEME_NF4 };
	printf("quality: 4-bit, group 32, f16 scales; RMSE over all rank>=2 float tensors\n");
	printf("%-28s %-12s %12s %12s %9s %6s %6s\n", "checkpoint", "scheme", "RMSE RTN",
	       "RMSE search", "change", "f32fb", "time");
	for (size_t c = 0; c < sizeof ckpts / sizeof ckpts[0]; c++) {
		qtk_st_file *f = NULL;
		qtk_status st;
		if (qtk_st_open(ckpts[c], &f, &st) != QTK_OK) {
			printf("%-28s skipped: %s\n", ckpts[c] + 16, st.msg);
			continue;
		}
		for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
			qtk_q_layout L = { .scheme = ids[k], .group = 32,
				.scale_dtype = QTK_DT_F16, .dtype = QTK_DT_F32 };
			qtk_q_acc ar = { 0 }, as = { 0 };
			int fb = 0, bad = 0;
			double t0 = b_now();
			for (size_t i = 0; i < qtk_st_count(f) && !bad; i++) {
				const qtk_st_tensor *t = qtk_st_get(f, i);
				if (t->ndim < 2 || !qtk_dtype_is_float(t->dtype) || !t->nelem)
					continue;
				size_t cols = t->shape[t->ndim - 1], rows = t->nelem / cols;
				uint64_t sz[QTK_PLANE_MAX];
				L.scale_dtype = QTK_DT_F32; /* largest planes */
				qtk_q_plane_sizes(&L, rows, cols, sz);
				L.scale_dtype = QTK_DT_F16;
				float *x = qtk_malloc(t->nelem * 4), *y = qtk_malloc(t->nelem * 4);
				uint8_t *buf[3] = { qtk_malloc(sz[0] + 1), qtk_malloc(sz[1] + 1),
				                    qtk_malloc(sz[2] + 1) };
				if (!x || !y || !buf[0] || !buf[1] || !buf[2] ||
				    qtk_st_read_f32(t, 0, t->nelem, x, &st) != QTK_OK) {
					bad = 1;
				} else {
					int a = one(&L, 0, x, rows, cols, y, buf, &ar);
					int b = one(&L, 1, x, rows, cols, y, buf, &as);
					if (a < 0 || b < 0)
						bad = 1;
					fb += a > 0;
				}
				qtk_free(x);
				qtk_free(y);
				for (int p = 0; p < 3; p++)
					qtk_free(buf[p]);
			}
			qtk_q_metrics mr, ms;
			qtk_q_metrics_from(&ar, &mr);
			qtk_q_metrics_from(&as, &ms);
			if (bad)
				printf("%-28s %-12s failed\n", ckpts[c] + 16, qtk_q_scheme_get(ids[k])->name);
			else
				printf("%-28s %-12s %12.6g %12.6g %8.2f%% %6d %5.1fs\n", ckpts[c] + 16,
				       qtk_q_scheme_get(ids[k])->name, mr.rmse, ms.rmse,
				       100.0 * (ms.rmse - mr.rmse) / mr.rmse, fb, b_now() - t0);
		}
		qtk_st_close(f);
	}
}
