/* runtime: a Hugging Face tokenizer.json of the sentencepiece kind (as
 * transformers converts LLaMA 2, Mistral, TinyLlama): a BPE model over
 * U+2581-escaped text, with the normalizer Prepend("▁") + Replace(" ",
 * "▁") or the Metaspace pre-tokenizer, byte fallback and a merges list.
 * Byte-level BPE (GPT-2, LLaMA 3, Qwen2), WordPiece and Unigram are
 * refused by name. */
#include <errno.h>
#include <jansson.h>
#include <string.h>
#include <unistd.h>

#include "tok_impl.h"

#define META "\xe2\x96\x81" /* U+2581 */

/* ---- the merge table ----------------------------------------------------- */

static size_t merge_slot(const qtk_tok *t, uint64_t key)
{
	size_t mask = t->mslots - 1, h = (size_t)((key * 0x9e3779b97f4a7c15ull) >> 17) & mask;

	while (t->mkey[h] && t->mkey[h] != key)
		h = (h + 1) & mask;
	return h;
}

int64_t tok_merge_find(const qtk_tok *t, int32_t a, int32_t b, int32_t *merged)
{
	size_t h = merge_slot(t, ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1);

	if (!t->mkey[h])
		return -1;
	*merged = t->mnew[h];
	return t->mrank[h];
}

/* ---- reading the JSON ---------------------------------------------------- */

static const char *jstr(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static qtk_err unsupported(const char *path, const char *what, const char *name,
                           qtk_status *st)
{
	return qtk_fail(st, QTK_E_UNSUPPORTED, "%s: %s '%s' is not supported (SPM-style BPE only)",
	                path, what, name ? name : "?");
}

/* Normalizer: none, or Sequence[Prepend("▁")?, Replace(" " -> "▁")]. */
static qtk_err read_normalizer(json_t *nz, const char *path, qtk_tok *t, int *escapes,
                               qtk_status *st)
{
	json_t *list = json_object_get(nz, "normalizers"), *x;
	size_t i;

	*escapes = 0;
	if (!nz || json_is_null(nz))
		return QTK_OK;
	if (!jstr(nz, "type") || strcmp(jstr(nz, "type"), "Sequence") || !json_is_array(list))
		return unsupported(path, "normalizer", jstr(nz, "type"), st);
	t->add_space = 0;
	json_array_foreach(list, i, x) {
		const char *type = jstr(x, "type"), *pre = jstr(x, "prepend"), *to = jstr(x, "content");
		const char *from = jstr(json_object_get(x, "pattern"), "String");
		if (type && !strcmp(type, "Prepend") && pre && !strcmp(pre, META) && i == 0)
			t->add_space = 1;
		else if (type && !strcmp(type, "Replace") && from && !strcmp(from, " ") && to &&
		         !strcmp(to, META))
			*escapes = 1;
		else
			return unsupported(path, "normalizer", type, st);
	}
	return QTK_OK;
}

/* Pre-tokenizer: none, or Metaspace("▁", prepend_scheme, split). */
static qtk_err read_pretok(json_t *pt, const char *path, qtk_tok *t, int *escapes,
                           qtk_status *st)
{
	const char *type = jstr(pt, "type"), *rep = jstr(pt, "replacement"),
	           *scheme = jstr(pt, "prepend_scheme");
	json_t *aps = json_object_get(pt, "add_prefix_space");

	if (!pt || json_is_null(pt))
		return QTK_OK;
	if (!type || strcmp(type, "Metaspace") || !rep || strcmp(rep, META))
		return unsupported(path, "pre_tokenizer", type, st);
	*escapes = 1;
	t->space_unless_one = 1;
	t->split_words = json_is_true(json_object_get(pt, "split"));
	if (scheme) {
		if (strcmp(scheme, "first") && strcmp(scheme, "always") && strcmp(scheme, "never"))
			return unsupported(path, "Metaspace prepend_scheme", scheme, st);
		t->add_space = strcmp(scheme, "never") != 0;
		t->space_first_only = !strcmp(scheme, "first");
	} else
		t->add_space = !aps || json_is_true(aps); /* older files: add_prefix_space */
	return QTK_OK;
}

/* The model's options that change the result must be off. */
static qtk_err read_model_opts(json_t *model, const char *path, qtk_tok *t, qtk_status *st)
{
	const char *type = jstr(model, "type");
	json_t *d = json_object_get(model, "dropout");

	if (!type || strcmp(type, "BPE"))
		return unsupported(path, "model type", type, st);
	if (jstr(model, "continuing_subword_prefix") || jstr(model, "end_of_word_suffix"))
		return unsupported(path, "BPE option", "continuing_subword_prefix/end_of_word_suffix",
		                   st);
	if (json_is_true(json_object_get(model, "ignore_merges")))
		return unsupported(path, "BPE option", "ignore_merges", st);
	if (d && !json_is_null(d) && json_number_value(d) != 0.0)
		return unsupported(path, "BPE option", "dropout", st);
	if (!json_is_object(json_object_get(model, "vocab")) ||
	    !json_is_array(json_object_get(model, "merges")))
		return qtk_fail(st, QTK_E_FORMAT, "%s: model.vocab is not an object or model.merges "
		                "not an array", path);
	t->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
	t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
	return QTK_OK;
}

/* Pieces by id: model.vocab, then added_tokens (special ones become
 * control tokens, others user-defined). */
typedef struct {
	const char **piece;  /* [n] NULL: a gap */
	size_t *len;
	uint8_t *type;
	size_t n;
} json_vocab;

static qtk_err vocab_put(json_vocab *v, const char *path, json_int_t id, const char *s,
                         size_t len, int type, qtk_status *st)
{
	if (id < 0 || (size_t)id >= v->n)
		return qtk_fail(st, QTK_E_FORMAT, "%s: token '%.*s' has id %lld outside 0..%zu", path,
		                (int)(len < 64 ? len : 64), s, (long long)id, v->n - 1);
	if (v->piece[id] && (v->len[id] != len || memcmp(v->piece[id], s, len)))
		return qtk_fail(st, QTK_E_FORMAT, "%s: id %lld is both '%.*s' and '%.*s'", path,
		                (long long)id, (int)(v->len[id] < 64 ? v->len[id] : 64), v->piece[id],
		                (int)(len < 64 ? len : 64), s);
	v->piece[id] = s;
	v->len[id] = len;
	if (type)
		v->type[id] = (uint8_t)type;
	return QTK_OK;
}

static qtk_err read_vocab(json_t *root, json_t *model, const char *path, json_vocab *v,
                          qtk_status *st)
{
	json_t *vocab = json_object_get(model, "vocab"), *added = json_object_get(root, "added_tokens");
	json_t *x;
	const char *key;
	size_t i;
	json_int_t max = -1;

	json_object_foreach(vocab, key, x) {
		if (!json_is_integer(x) || json_integer_value(x) < 0 ||
		    json_integer_value(x) >= TOK_MAX_TOKENS)
			return qtk_fail(st, QTK_E_FORMAT, "%s: vocab entry '%.64s' has no id below %u", path,
			                key, TOK_MAX_TOKENS);
		max = json_integer_value(x) > max ? json_integer_value(x) : max;
	}
	json_array_foreach(added, i, x) {
		json_int_t id = json_integer_value(json_object_get(x, "id"));
		if (!json_is_string(json_object_get(x, "content")) || id < 0 || id >= TOK_MAX_TOKENS)
			return qtk_fail(st, QTK_E_FORMAT, "%s: added_tokens[%zu] lacks content or id", path, i);
		max = id > max ? id : max;
	}
	v->n = (size_t)(max + 1);
	v->piece = qtk_calloc(v->n ? v->n : 1, sizeof *v->piece);
	v->len = qtk_calloc(v->n ? v->n : 1, sizeof *v->len);
	v->type = qtk_calloc(v->n ? v->n : 1, sizeof *v->type);
	if (!v->piece || !v->len || !v->type)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	json_object_foreach(vocab, key, x)
		QTK_TRY(vocab_put(v, path, json_integer_value(x), key, strlen(key), 0, st));
	json_array_foreach(added, i, x) {
		json_t *c = json_object_get(x, "content");
		QTK_TRY(vocab_put(v, path, json_integer_value(json_object_get(x, "id")),
		                  json_string_value(c), json_string_length(c),
		                  json_is_true(json_object_get(x, "special")) ? QTK_TOK_CONTROL
		                                                               : QTK_TOK_USER_DEFINED,
		                  st));
	}
	return QTK_OK;
}

static qtk_err build_vocab(const json_vocab *v, const char *path, const char *unk,
                           qtk_tok **out, qtk_status *st)
{
	uint64_t bytes = 0;
	qtk_tok *t;
	qtk_err rc = QTK_OK;

	for (size_t i = 0; i < v->n; i++)
		bytes += v->len[i];
	QTK_TRY(tok_new(path, v->n, bytes, &t, st));
	for (size_t i = 0; i < v->n && !rc; i++) {
		int type = v->type[i] ? v->type[i] : v->piece[i] ? QTK_TOK_NORMAL : QTK_TOK_UNUSED;
		const char *p = v->piece[i] ? v->piece[i] : "";
		if (type == QTK_TOK_NORMAL && v->len[i] == 6 && !memcmp(p, "<0x", 3) && p[5] == '>')
			type = QTK_TOK_BYTE;
		if (unk && !strcmp(p, unk) && v->piece[i])
			type = QTK_TOK_UNKNOWN;
		rc = tok_set(t, i, p, v->len[i], 0.0f, type, 0, st);
	}
	if (rc) {
		qtk_tok_close(t);
		return rc;
	}
	*out = t;
	return QTK_OK;
}

/* One merge rule: "a b" (older files) or ["a", "b"]. */
static qtk_err merge_ids(const qtk_tok *t, json_t *m, size_t i, int32_t id[3], qtk_status *st)
{
	const char *a, *b, *sp;
	size_t la, lb;
	char buf[512];

	if (json_is_string(m) && (sp = strchr(a = json_string_value(m), ' '))) {
		la = (size_t)(sp - a);
		b = sp + 1;
		lb = strlen(b);
	} else if (json_is_array(m) && json_array_size(m) == 2 &&
	           json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
		a = json_string_value(json_array_get(m, 0));
		b = json_string_value(json_array_get(m, 1));
		la = json_string_length(json_array_get(m, 0));
		lb = json_string_length(json_array_get(m, 1));
	} else
		return qtk_fail(st, QTK_E_FORMAT, "%s: merges[%zu] is not \"a b\" or [a, b]", t->name, i);
	id[0] = qtk_tok_find(t, a, la);
	id[1] = qtk_tok_find(t, b, lb);
	id[2] = -1;
	if (la + lb <= sizeof buf) {
		memcpy(buf, a, la);
		memcpy(buf + la, b, lb);
		id[2] = qtk_tok_find(t, buf, la + lb);
	}
	if (id[0] < 0 || id[1] < 0 || id[2] < 0)
		return qtk_fail(st, QTK_E_FORMAT, "%s: merges[%zu] '%.*s' + '%.*s': %s is not in the vocab",
		                t->name, i, (int)(la < 64 ? la : 64), a, (int)(lb < 64 ? lb : 64), b,
		                id[0] < 0 ? "the left part" : id[1] < 0 ? "the right part" : "the merge");
	return QTK_OK;
}

/* The merge table; a later duplicate rule wins (as a Rust HashMap built
 * from the list does). Scores become -rank of the first rule making a piece. */
static qtk_err read_merges(qtk_tok *t, json_t *merges, qtk_status *st)
{
	size_t n = json_array_size(merges), i;
	json_t *m;

	if (n >= UINT32_MAX / 2)
		return qtk_fail(st, QTK_E_FORMAT, "%s: %zu merges", t->name, n);
	t->mslots = 16;
	while (t->mslots < 2 * n)
		t->mslots *= 2;
	t->mkey = qtk_calloc(t->mslots, sizeof *t->mkey);
	t->mrank = qtk_malloc(t->mslots * sizeof *t->mrank);
	t->mnew = qtk_malloc(t->mslots * sizeof *t->mnew);
	if (!t->mkey || !t->mrank || !t->mnew)
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory for %zu merges", t->name, n);
	for (i = 0; i < t->n; i++)
		t->score[i] = 0.0f;
	json_array_foreach(merges, i, m) {
		int32_t id[3] = { -1, -1, -1 };
		size_t h;
		QTK_TRY(merge_ids(t, m, i, id, st));
		h = merge_slot(t, ((uint64_t)(uint32_t)id[0] << 32 | (uint32_t)id[1]) + 1);
		t->mkey[h] = ((uint64_t)(uint32_t)id[0] << 32 | (uint32_t)id[1]) + 1;
		t->mrank[h] = (uint32_t)i;
		t->mnew[h] = id[2];
		if (t->score[id[2]] == 0.0f)
			t->score[id[2]] = -(float)(i + 1);
	}
	t->ranked = 1;
	return QTK_OK;
}

static qtk_err json_parse(json_t *root, const char *path, qtk_tok **out, qtk_status *st)
{
	json_t *model = json_object_get(root, "model"), *pt = json_object_get(root, "pre_tokenizer");
	json_t *dec = json_object_get(root, "decoder");
	json_vocab v = { 0 };
	qtk_tok probe = { 0 }, *t = NULL;
	int esc_n = 0, esc_p = 0;
	qtk_err rc;

	/* byte-level BPE says so in its pre-tokenizer or decoder */
	if ((jstr(pt, "type") && !strcmp(jstr(pt, "type"), "ByteLevel")) ||
	    (jstr(dec, "type") && !strcmp(jstr(dec, "type"), "ByteLevel")))
		return unsupported(path, "byte-level BPE (GPT-2 style)", "ByteLevel", st);
	probe.add_space = 1;
	QTK_TRY(read_model_opts(model, path, &probe, st));
	QTK_TRY(read_normalizer(json_object_get(root, "normalizer"), path, &probe, &esc_n, st));
	QTK_TRY(read_pretok(pt, path, &probe, &esc_p, st));
	if (!esc_n == !esc_p)
		return unsupported(path, "space handling", esc_n ? "Replace and Metaspace" :
		                   "no U+2581 escaping", st);
	rc = read_vocab(root, model, path, &v, st);
	if (!rc)
		rc = build_vocab(&v, path, jstr(model, "unk_token"), &t, st);
	qtk_free(v.piece);
	qtk_free(v.len);
	qtk_free(v.type);
	if (rc)
		return rc;
	t->add_space = probe.add_space;
	t->space_first_only = probe.space_first_only;
	t->space_unless_one = probe.space_unless_one;
	t->split_words = probe.split_words;
	t->byte_fallback = probe.byte_fallback;
	t->fuse_unk = probe.fuse_unk;
	rc = tok_finish(t, st);
	if (!rc) {
		t->bos = qtk_tok_find(t, "<s>", 3);
		t->eos = qtk_tok_find(t, "</s>", 4);
		t->unk = jstr(model, "unk_token") ? qtk_tok_find(t, jstr(model, "unk_token"),
		                                                  strlen(jstr(model, "unk_token")))
		                                  : -1;
		rc = read_merges(t, json_object_get(model, "merges"), st);
	}
	if (rc) {
		qtk_tok_close(t);
		return rc;
	}
	*out = t;
	return QTK_OK;
}

qtk_err tok_load_json(const char *path, qtk_tok **out, qtk_status *st)
{
	json_error_t e;
	json_t *root;
	qtk_err rc;
	unsigned jm;

	*out = NULL;
	if (access(path, R_OK))
		return qtk_fail(st, errno == ENOENT ? QTK_E_NOT_FOUND : QTK_E_IO, "%s: cannot open: %s",
		                path, strerror(errno));
	jm = qtk_json_begin();
	root = json_load_file(path, 0, &e);
	if (qtk_json_end(jm)) {
		json_decref(root);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	if (!root)
		return qtk_fail(st, QTK_E_FORMAT, "%s: %s (line %d)", path, e.text, e.line);
	rc = json_is_object(root) ? json_parse(root, path, out, st)
	                          : qtk_fail(st, QTK_E_FORMAT, "%s: not a JSON object", path);
	json_decref(root);
	return rc;
}
