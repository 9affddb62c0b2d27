/* formats: what a checkpoint is. The model-family table: one row per
 * family qtk knows: how to
 * detect it from tensor names, the tensors its preset keeps at source
 * precision, its GGUF architecture and the longest tensor name its GGUF
 * readers take. Detection, presets, the GGUF planner and `inspect` read
 * this table; no other file lists families. And the model description:
 * a config.json parsed once into a neutral struct (each key qtk reads, as
 * the file has it), which the GGUF planner and the runtime judge by their
 * own rules. */
#include <fnmatch.h>
#include <jansson.h>
#include <stdio.h>
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

/* ---- the model description (config.json) ------------------------------ */

static const char *const key_names[QTK_MK_COUNT] = {
#define X(id, name) [QTK_MK_##id] = name,
	QTK_MODEL_KEYS(X)
#undef X
};

const char *qtk_model_key_name(int key)
{
	return key >= 0 && key < QTK_MK_COUNT ? key_names[key] : NULL;
}

static void take(qtk_model_desc *d, int k, json_t *v)
{
	qtk_model_val *x = &d->v[k];

	memset(x, 0, sizeof *x);
	if (!v) {
		x->kind = QTK_MV_ABSENT;
	} else if (json_is_null(v)) {
		x->kind = QTK_MV_NULL;
	} else if (json_is_integer(v)) {
		x->kind = QTK_MV_INT;
		x->i = json_integer_value(v);
		x->d = (double)x->i;
	} else if (json_is_real(v)) {
		x->kind = QTK_MV_REAL;
		x->d = json_real_value(v);
	} else if (json_is_boolean(v)) {
		x->kind = json_is_true(v) ? QTK_MV_TRUE : QTK_MV_FALSE;
	} else if (json_is_string(v)) {
		x->kind = QTK_MV_STRING;
		x->len = json_string_length(v);
		/* longer strings keep their length: no name qtk compares is that long */
		snprintf(d->str[k], sizeof d->str[k], "%s", json_string_value(v));
		x->s = d->str[k];
	} else {
		x->kind = QTK_MV_OTHER; /* an object or array */
	}
}

static void fill(qtk_model_desc *d, json_t *c)
{
	d->present = c != NULL;
	d->is_object = json_is_object(c);
	for (int k = 0; k < QTK_MK_COUNT; k++)
		take(d, k, d->is_object ? json_object_get(c, key_names[k]) : NULL);
	/* string pointers into d: valid while d is */
}

qtk_err qtk_model_desc_parse(const char *text, size_t len, const char *member,
                             const char *where, qtk_model_desc *d, qtk_status *st)
{
	json_error_t e;
	json_t *root;
	unsigned jm;
	qtk_err rc = QTK_OK;

	memset(d, 0, sizeof *d);
	snprintf(d->where, sizeof d->where, "%s", where);
	jm = qtk_json_begin();
	root = json_loadb(text, len, 0, &e);
	if (root && member)
		fill(d, json_object_get(root, member));
	else if (root)
		fill(d, root);
	json_decref(root);
	if (qtk_json_end(jm))
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", where);
	else if (!root)
		rc = qtk_fail(st, QTK_E_FORMAT, "%s: %s (line %d)", where, e.text, e.line);
	if (rc)
		memset(d->v, 0, sizeof d->v);
	return rc;
}

qtk_err qtk_model_desc_read(const char *path, qtk_model_desc *d, qtk_status *st)
{
	char *text;
	size_t len;
	qtk_err rc;

	memset(d, 0, sizeof *d);
	QTK_TRY(qtk_fmt_read_input(path, &text, &len, st));
	rc = qtk_model_desc_parse(text, len, NULL, path, d, st);
	qtk_free(text);
	return rc;
}
