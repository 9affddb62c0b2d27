/* formats: the model-family table. One row per family qtk knows: how to
 * detect it from tensor names, the tensors its preset keeps at source
 * precision, its GGUF architecture and the longest tensor name its GGUF
 * readers take. Detection, presets, the GGUF planner and `inspect` read
 * this table; no other file lists families. */
#include <fnmatch.h>
#include <string.h>

#include "qtk_formats.h"

/* Diffusion transformers: the tensors ComfyUI-GGUF's convert.py
 * (ModelFlux / ModelWan / ModelLTXV "keys_hiprec") and stable-diffusion.cpp
 * keep at high precision. Checkpoints may carry the QTK_DIT_PREFIX, which
 * '*' in front absorbs. */
static const char *const flux_keep[] = {
	"*img_in.*", "*txt_in.*", "*time_in.*", "*vector_in.*", "*guidance_in.*",
	"*final_layer.*", NULL,
};
static const char *const wan_keep[] = {
	"*patch_embedding.*", "*text_embedding.*", "*time_embedding.*", "*time_projection.*",
	"head.*", "*.head.*", "*modulation*", NULL,
};
static const char *const ltxv_keep[] = {
	"*adaln_single.*", "*caption_projection.*", "*patchify_proj.*", "proj_out.*",
	"model.diffusion_model.proj_out.*", "*scale_shift_table", NULL,
};

/* ggml's reader takes names of at most GGML_MAX_NAME - 1 = 63 bytes;
 * stable-diffusion.cpp builds ggml with 128 and ComfyUI-GGUF's converter
 * allows 127, so DiT names may be that long. Detection runs in table
 * order; the DiT rows' conditions exclude each other. */
#define DIT .dit = 1, .gguf_name_max = 127, .gguf_reader = "stable-diffusion.cpp"
#define LM .gguf_name_max = 63, .gguf_reader = "ggml"

static const qtk_model_family families[] = {
	{ .name = "flux", DIT, .gguf_arch = "flux", .keep = flux_keep,
	  .detect = { "*double_blocks.0.img_attn.*", "*single_blocks.0.*" } },
	{ .name = "wan", DIT, .gguf_arch = "wan", .keep = wan_keep,
	  .detect = { "*blocks.0.self_attn.q.*", "*patch_embedding.*" } },
	{ .name = "ltxv", DIT, .gguf_arch = "ltxv", .keep = ltxv_keep,
	  .detect = { "*transformer_blocks.0.attn1.to_q.*", "*adaln_single.*" } },
	/* HF names, or a GGUF's: either one says llama */
	{ .name = "llama", LM, .gguf_arch = "llama", .llama_hparams = 1,
	  .detect_any = { "model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight" } },
	{ .name = "gpt2", LM, .detect = { "*h.0.attn.c_attn.weight" } },
};
#define NFAMILIES (sizeof families / sizeof families[0])

size_t qtk_model_family_count(void)
{
	return NFAMILIES;
}

const qtk_model_family *qtk_model_family_at(size_t i)
{
	return i < NFAMILIES ? &families[i] : NULL;
}

const qtk_model_family *qtk_model_family_find(const char *name, size_t len)
{
	for (size_t i = 0; name && i < NFAMILIES; i++)
		if (strlen(families[i].name) == len && !memcmp(families[i].name, name, len))
			return &families[i];
	return NULL;
}

static int has_name(const char *const *names, size_t n, const char *pattern)
{
	for (size_t i = 0; i < n; i++)
		if (fnmatch(pattern, names[i], 0) == 0)
			return 1;
	return 0;
}

static int matches(const qtk_model_family *f, const char *const *names, size_t n)
{
	int any = 0;

	for (int k = 0; k < QTK_FAMILY_PATTERNS && f->detect_any[k]; k++)
		any |= has_name(names, n, f->detect_any[k]);
	if (f->detect_any[0])
		return any;
	for (int k = 0; k < QTK_FAMILY_PATTERNS && f->detect[k]; k++)
		if (!has_name(names, n, f->detect[k]))
			return 0;
	return f->detect[0] != NULL;
}

const qtk_model_family *qtk_model_detect(const char *const *names, size_t n)
{
	for (size_t i = 0; i < NFAMILIES; i++)
		if (matches(&families[i], names, n))
			return &families[i];
	return NULL;
}
