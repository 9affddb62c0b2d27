/* convert (private): `qtk convert --calib STATS [--calib-mode M]` — what the
 * pipeline asks of a statistics file, tensor by tensor (docs/calibration.md).
 *
 * A statistics file (qtk's, llama.cpp's imatrix GGUF or legacy .dat, or the
 * older importance form: one float vector per tensor name) gives each
 * linear weight it covers:
 *  - weighted: the importance of each input channel, mean x_j^2 (the
 *    diagonal of X^T X / N), for qtk's search;
 *  - gptq: the same importance, and a factored Hessian 2 X^T X / N (needs
 *    X^T X: `qtk calibrate --xtx`); the rows are then quantized by GPTQ.
 * The tied embedding/output matrix (its statistics are the output head's
 * inputs) is a lookup table as well: its importance adds a uniform term
 * for the lookup use to the head's, and under GPTQ its damping is at least
 * 0.1 (calib.c). */
#ifndef QTK_CONVERT_CALIB_H
#define QTK_CONVERT_CALIB_H

#include "qtk_formats.h"
#include "qtk_quant.h"

typedef enum { CALIB_WEIGHTED = 0, CALIB_GPTQ = 1 } calib_mode;

typedef struct calib calib;

/* One tensor's calibration, made before its first rows are quantized and
 * freed after its last. Both members NULL: no statistics (data-free). */
typedef struct {
	float *importance;   /* [cols] */
	qtk_gptq *f;         /* GPTQ factor, or NULL (weighted) */
} calib_tensor;

/* Open path; mode and, for gptq, its options (damp_set: go->damp was
 * chosen, else statistics of the vocabulary alone get CALIB_VOCAB_DAMP). */
qtk_err calib_open(const char *path, calib_mode mode, const qtk_gptq_opts *go, int damp_set,
                   calib **out, qtk_status *st);
/* Statistics of the vocabulary alone (`qtk calibrate --vocab`): each token
 * by itself at position 0, a coarse picture of real inputs, so GPTQ leans
 * on its prior (stories260K: damping 0.01 0.1155, 0.3 0.0904, 1 0.0866, 2
 * 0.0879 mean KLD on the calibration text; docs/calibration.md). */
#define CALIB_VOCAB_DAMP 1.0
/* The dataset name such statistics carry (not a file name one would have) */
#define CALIB_VOCAB_DATASET "qtk calibrate --vocab"
/* Are the statistics of the vocabulary alone? The damping GPTQ uses. */
int calib_is_vocab(const calib *c);
double calib_damp(const calib *c);
void calib_close(calib *c); /* NULL is fine */
const char *calib_path(const calib *c);
calib_mode calib_mode_of(const calib *c);

/* Does the file hold statistics for weight `name` of cols columns? 1 yes,
 * 0 no; QTK_E_ARG naming both when their width is not cols (returned as
 * -1 with st set). */
int calib_check(const calib *c, const char *name, uint64_t cols, qtk_status *st);

/* The calibration of weight `name` (checked by calib_check): none when the
 * file has no statistics for it; GPTQ's factorization errors name the
 * tensor. */
qtk_err calib_tensor_make(const calib *c, const char *name, uint64_t cols, calib_tensor *t,
                          qtk_status *st);
void calib_tensor_free(calib_tensor *t);

/* Quantize rows [0, rows) of w ([rows][cols], f32, overwritten) into dst
 * with t's method, adding each row's error sums to acc (as
 * qtk_q_quantize_rows_acc does); orig: rows*cols floats of scratch. */
qtk_err calib_quantize_acc(const calib_tensor *t, const qtk_q_layout *L, float *w,
                           float *orig, size_t rows, size_t cols, const qtk_q_planes *dst,
                           const qtk_q_opts *opts, qtk_q_acc *acc, qtk_status *st);

#endif
