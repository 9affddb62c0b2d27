/* runtime (private): the LLaMA-family model as rt_lm_desc.c (the
 * description), rt_lm_load.c (the weights) and rt_lm_forward.c (the
 * forward) share it. */
#ifndef QTK_LM_IMPL_H
#define QTK_LM_IMPL_H

#include "qtk_runtime.h"

/* One decoder block. Linear weights are views the kernels read
 * ([rows][cols], y = x W^T); norms are f32 copies. */
typedef struct {
	const qtk_rt_tensor *wq;     /* (n_head * head_dim, n_embd) */
	const qtk_rt_tensor *wk;     /* (n_head_kv * head_dim, n_embd) */
	const qtk_rt_tensor *wv;     /* (n_head_kv * head_dim, n_embd) */
	const qtk_rt_tensor *wo;     /* (n_embd, n_head * head_dim) */
	const qtk_rt_tensor *w_gate; /* (n_ff, n_embd) */
	const qtk_rt_tensor *w_up;   /* (n_ff, n_embd) */
	const qtk_rt_tensor *w_down; /* (n_embd, n_ff) */
	float *attn_norm;            /* (n_embd) */
	float *ffn_norm;             /* (n_embd) */
} lm_layer;

struct qtk_rt_lm {
	qtk_rt_lm_desc d;
	char *path;                  /* as given */
	char *dir;                   /* the directory the model file is in */
	qtk_rt_model *rt;            /* .qtk or GGUF; NULL for safetensors */
	qtk_st_file *st;             /* safetensors; NULL otherwise */
	qtk_rt_tensor *views;        /* safetensors: views made so far */
	size_t nviews, cap_views;
	void **owned;                /* buffers the model frees */
	size_t nowned, cap_owned;
	lm_layer *layers;            /* (n_layer) */
	const qtk_rt_tensor *embd;   /* (n_vocab, n_embd) */
	const qtk_rt_tensor *head;   /* (n_vocab, n_embd); = embd when tied */
	float *out_norm;             /* (n_embd) */
	/* embedding rows are looked up with this layout and these scales: the
	 * tensor's own, or for NF4 double quantization F32 scales rebuilt
	 * once at load */
	qtk_q_layout embd_layout;
	const void *embd_scales;
	char *src_path;              /* .qtk: the source checkpoint it records */
	int src_gguf;                /* 1 if that source is a GGUF file */
	const char *scheme;          /* qtk_rt_lm_scheme */
	uint64_t params, bytes;
};

/* Descriptions (rt_lm_desc.c). `where` names the file in messages. */
qtk_err lm_desc_gguf(const qtk_gguf_file *g, const char *where, qtk_rt_lm_desc *d,
                     qtk_status *st);
/* A Hugging Face config.json file. */
qtk_err lm_desc_config_file(const char *path, qtk_rt_lm_desc *d, qtk_status *st);
/* A .qtk file's metadata JSON: its "config" object if there is one (1 in
 * *have), and the recorded source (*src_path: the first file's path,
 * freed with qtk_free; *src_gguf). */
qtk_err lm_desc_qtk_meta(const char *meta, const char *where, qtk_rt_lm_desc *d, int *have,
                         char **src_path, int *src_gguf, qtk_status *st);
/* Check the numbers of a description (after n_vocab is known). */
qtk_err lm_desc_check(const qtk_rt_lm_desc *d, const char *where, qtk_status *st);

/* Rows [row0, row0 + n) of t as f32 into out [n][t->cols] (any storage;
 * scales given separately for double-quantized NF4, else NULL). */
void lm_rows_f32(const qtk_rt_tensor *t, const qtk_q_layout *L, const void *scales,
                 uint64_t row0, size_t n, float *out);

#endif
