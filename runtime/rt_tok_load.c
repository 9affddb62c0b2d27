/* runtime: loading a tokenizer — a sentencepiece tokenizer.model (through
 * formats' qtk_spm_read), a llama2.c tokenizer.bin, or a GGUF's
 * tokenizer.ggml.* KVs (tokenizer.json: rt_tok_json.c) — into one
 * vocabulary (tok_impl.h). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tok_impl.h"

/* ---- the vocabulary ---------------------------------------------------- */

uint64_t tok_hash(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
	return h;
}

void qtk_tok_close(qtk_tok *t)
{
	if (!t)
		return;
	qtk_free(t->name);
	qtk_free(t->text);
	qtk_free(t->off);
	qtk_free(t->score);
	qtk_free(t->type);
	qtk_free(t->dec);
	qtk_free(t->dec_off);
	qtk_free(t->slot);
	qtk_free(t->ud);
	qtk_free(t->mkey);
	qtk_free(t->mrank);
	qtk_free(t->mnew);
	qtk_free(t);
}

qtk_err tok_new(const char *name, size_t n, uint64_t text_bytes, qtk_tok **out, qtk_status *st)
{
	qtk_tok *t;

	*out = NULL;
	if (n == 0)
		return qtk_fail(st, QTK_E_FORMAT, "%s: the vocabulary has no tokens", name);
	if (n > TOK_MAX_TOKENS)
		return qtk_fail(st, QTK_E_FORMAT, "%s: %zu tokens, more than the %u qtk takes", name,
		                n, TOK_MAX_TOKENS);
	if (text_bytes > TOK_MAX_TEXT)
		return qtk_fail(st, QTK_E_FORMAT, "%s: %llu bytes of token text, more than %u", name,
		                (unsigned long long)text_bytes, TOK_MAX_TEXT);
	if (!(t = qtk_calloc(1, sizeof *t)))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", name);
	t->n = n;
	t->bos = t->eos = t->unk = -1;
	t->add_bos = t->add_space = 1;
	t->byte_fallback = 1;
	t->nslot = 16;
	while (t->nslot < 2 * n)
		t->nslot *= 2;
	t->name = qtk_strdup(name);
	t->text = qtk_malloc((size_t)text_bytes + 1);
	t->off = qtk_calloc(n + 1, sizeof *t->off);
	t->score = qtk_calloc(n, sizeof *t->score);
	t->type = qtk_calloc(n, sizeof *t->type);
	t->dec = qtk_malloc((size_t)text_bytes + 1);
	t->dec_off = qtk_calloc(n + 1, sizeof *t->dec_off);
	t->slot = qtk_malloc(t->nslot * sizeof *t->slot);
	if (!t->name || !t->text || !t->off || !t->score || !t->type || !t->dec || !t->dec_off ||
	    !t->slot) {
		qtk_tok_close(t);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory for %zu tokens", name, n);
	}
	t->fill = 0;
	*out = t;
	return QTK_OK;
}

qtk_err tok_set(qtk_tok *t, size_t i, const char *s, size_t len, float score, int type,
                int spaces_are_meta, qtk_status *st)
{
	if (isnan(score))
		return qtk_fail(st, QTK_E_FORMAT, "%s: token %zu has a NaN score", t->name, i);
	for (size_t k = 0; k < len; k++) {
		if (spaces_are_meta && s[k] == ' ') {
			memcpy(t->text + t->fill, "\xe2\x96\x81", 3);
			t->fill += 3;
		} else
			t->text[t->fill++] = s[k];
	}
	t->off[i + 1] = (uint32_t)t->fill;
	t->score[i] = score;
	t->type[i] = (uint8_t)(type >= QTK_TOK_NORMAL && type <= QTK_TOK_BYTE ? type : 0);
	return QTK_OK;
}

/* Slot of piece s: the slot holding its id, or the empty slot where it goes. */
static size_t tok_slot(const qtk_tok *t, const char *s, size_t len)
{
	size_t mask = t->nslot - 1, h = (size_t)tok_hash(s, len) & mask;

	for (;;) {
		int32_t id = t->slot[h];
		if (id < 0 || (t->off[id + 1] - t->off[id] == len &&
		               !memcmp(t->text + t->off[id], s, len)))
			return h;
		h = (h + 1) & mask;
	}
}

int32_t qtk_tok_find(const qtk_tok *t, const char *piece, size_t len)
{
	if (!len || len > t->max_len)
		return -1;
	return t->slot[tok_slot(t, piece, len)];
}

/* "<0xXX>" (upper- or lowercase hex): the byte, else -1. */
static int byte_piece(const char *s, size_t len)
{
	unsigned v = 0;

	if (len != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
		return -1;
	for (int k = 3; k < 5; k++) {
		char c = s[k];
		v = v * 16 + (unsigned)(c >= '0' && c <= '9' ? c - '0'
		                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
		                        : c >= 'a' && c <= 'f' ? c - 'a' + 10 : 99);
	}
	return v < 256 ? (int)v : -1;
}

/* The bytes token i stands for (llama.cpp's token_to_piece without
 * specials): normal pieces with U+2581 as ' ', user-defined as they are,
 * byte tokens their byte, everything else nothing. */
static void tok_decoded(qtk_tok *t, size_t i, size_t *fill)
{
	const char *s = t->text + t->off[i];
	size_t len = t->off[i + 1] - t->off[i];
	int b = byte_piece(s, len);

	if (t->type[i] == QTK_TOK_BYTE && b >= 0)
		t->dec[(*fill)++] = (char)b;
	else if (t->type[i] == QTK_TOK_USER_DEFINED) {
		memcpy(t->dec + *fill, s, len);
		*fill += len;
	} else if (t->type[i] == QTK_TOK_NORMAL || t->type[i] == QTK_TOK_BYTE) {
		for (size_t k = 0; k < len; k++) {
			if (k + 3 <= len && !memcmp(s + k, "\xe2\x96\x81", 3)) {
				t->dec[(*fill)++] = ' ';
				k += 2;
			} else
				t->dec[(*fill)++] = s[k];
		}
	}
	t->dec_off[i + 1] = (uint32_t)*fill;
}

/* 1 if no piece holds U+2581 after its start, unless it is U+2581s only
 * (LLaMA's and tok512's whitespace pieces): see word_end in rt_tok.c. */
static int words_are_local(const qtk_tok *t)
{
	for (size_t i = 0; i < t->n; i++) {
		const char *p = t->text + t->off[i];
		size_t len = t->off[i + 1] - t->off[i];
		int all = len % 3 == 0;

		for (size_t k = 0; all && k < len; k += 3)
			all = !memcmp(p + k, "\xe2\x96\x81", 3);
		if (!all && len > 3 && memmem(p + 1, len - 1, "\xe2\x96\x81", 3))
			return 0;
	}
	return 1;
}

typedef struct {
	uint32_t len;
	int32_t id;
} ud_key;

static int ud_cmp(const void *a, const void *b)
{
	const ud_key *x = a, *y = b;

	return x->len != y->len ? (x->len > y->len ? -1 : 1) : (x->id > y->id) - (x->id < y->id);
}

/* The user-defined pieces, longest first, as llama.cpp partitions by them. */
static qtk_err ud_list(qtk_tok *t, qtk_status *st)
{
	ud_key *k;

	for (size_t i = 0; i < t->n; i++)
		t->nud += t->type[i] == QTK_TOK_USER_DEFINED && t->off[i + 1] > t->off[i];
	if (!t->nud)
		return QTK_OK;
	t->ud = qtk_malloc(t->nud * sizeof *t->ud);
	k = qtk_malloc(t->nud * sizeof *k);
	if (!t->ud || !k) {
		qtk_free(k);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", t->name);
	}
	t->nud = 0;
	for (size_t i = 0; i < t->n; i++)
		if (t->type[i] == QTK_TOK_USER_DEFINED && t->off[i + 1] > t->off[i])
			k[t->nud++] = (ud_key){ t->off[i + 1] - t->off[i], (int32_t)i };
	qsort(k, t->nud, sizeof *k, ud_cmp);
	for (size_t i = 0; i < t->nud; i++)
		t->ud[i] = k[i].id;
	qtk_free(k);
	return QTK_OK;
}

qtk_err tok_finish(qtk_tok *t, qtk_status *st)
{
	size_t fill = 0;
	char hex[7];

	memset(t->slot, 0xff, t->nslot * sizeof *t->slot);
	for (size_t i = 0; i < t->n; i++) {
		const char *s = t->text + t->off[i];
		size_t len = t->off[i + 1] - t->off[i], h;

		if (len > t->max_len)
			t->max_len = len;
		tok_decoded(t, i, &fill);
		if (!len)
			continue; /* never matched (llama.cpp renames it "[EMPTY_i]") */
		h = tok_slot(t, s, len);
		if (t->slot[h] >= 0)
			return qtk_fail(st, QTK_E_FORMAT, "%s: tokens %d and %zu are both '%.*s'",
			                t->name, t->slot[h], i, (int)(len < 64 ? len : 64), s);
		t->slot[h] = (int32_t)i;
	}
	/* llama.cpp's byte_to_token: "<0xXX>", else the one-byte piece */
	for (int b = 0; b < 256; b++) {
		snprintf(hex, sizeof hex, "<0x%02X>", b);
		t->byte_id[b] = qtk_tok_find(t, hex, 6);
		if (t->byte_id[b] < 0) {
			char c = (char)b;
			t->byte_id[b] = qtk_tok_find(t, &c, 1);
		}
	}
	t->word_local = words_are_local(t);
	QTK_TRY(ud_list(t, st));
	if (t->unk >= 0 && (size_t)t->unk >= t->n)
		t->unk = -1;
	if ((t->bos >= 0 && (size_t)t->bos >= t->n) || (t->eos >= 0 && (size_t)t->eos >= t->n))
		return qtk_fail(st, QTK_E_FORMAT, "%s: BOS id %d or EOS id %d is not below the %zu tokens",
		                t->name, t->bos, t->eos, t->n);
	return QTK_OK;
}

/* ---- sentencepiece tokenizer.model ------------------------------------- */

static qtk_err load_spm(const char *path, qtk_tok **out, qtk_status *st)
{
	qtk_spm_vocab *v;
	qtk_tok *t = NULL;
	uint64_t bytes = 0;
	qtk_err rc;

	QTK_TRY(qtk_spm_read(path, &v, st));
	if (v->model_type != 2)
		rc = qtk_fail(st, QTK_E_UNSUPPORTED,
		              "%s: a sentencepiece %s model: qtk encodes BPE models only", path,
		              v->model_type == 1 ? "unigram" : v->model_type == 3 ? "word"
		              : v->model_type == 4 ? "char" : "unknown-type");
	else if (v->ws_as_suffix || !v->escape_ws)
		rc = qtk_fail(st, QTK_E_UNSUPPORTED, "%s: %s is not supported", path,
		              v->ws_as_suffix ? "treat_whitespace_as_suffix"
		                              : "escape_whitespaces = false");
	else {
		for (size_t i = 0; i < v->n; i++)
			bytes += v->lens[i];
		rc = tok_new(path, v->n, bytes, &t, st);
	}
	for (size_t i = 0; !rc && i < v->n; i++)
		rc = tok_set(t, i, v->pieces[i], v->lens[i], v->scores[i], v->types[i], 0, st);
	if (!rc) {
		t->bos = v->bos_id;
		t->eos = v->eos_id;
		t->unk = v->unk_id;
		t->add_space = v->add_dummy_prefix;
		t->remove_extra_ws = v->remove_extra_ws;
		rc = tok_finish(t, st);
	}
	qtk_spm_free(v);
	if (rc) {
		qtk_tok_close(t);
		return rc;
	}
	*out = t;
	return QTK_OK;
}

/* ---- GGUF tokenizer.ggml.* --------------------------------------------- */

static qtk_err gg_array(const qtk_gguf_file *f, const char *name, const char *key,
                        const uint32_t *types, int ntypes, uint64_t min,
                        const qtk_gguf_kv **out, qtk_status *st)
{
	const qtk_gguf_kv *kv = qtk_gguf_kv_find(f, key);
	int ok = 0;

	*out = NULL;
	if (!kv)
		return QTK_OK;
	for (int k = 0; k < ntypes; k++)
		ok |= kv->type == QTK_GGUF_ARRAY && kv->arr_type == types[k];
	if (!ok) {
		const char *got = qtk_gguf_vtype_name(kv->type == QTK_GGUF_ARRAY ? kv->arr_type : kv->type);
		return qtk_fail(st, QTK_E_GG_KV_MISMATCH, "%s: KV '%s' is %s%s, expected an array of %s",
		                name, key, kv->type == QTK_GGUF_ARRAY ? "an array of " : "",
		                got ? got : "?", qtk_gguf_vtype_name(types[0]));
	}
	if (kv->count < min)
		return qtk_fail(st, QTK_E_FORMAT, "%s: KV '%s' has %llu entries for %llu tokens", name,
		                key, (unsigned long long)kv->count, (unsigned long long)min);
	*out = kv;
	return QTK_OK;
}

/* An optional id KV: absent or past the vocabulary keeps the default in
 * *id (llama.cpp warns "bad special token" and does the same). */
static qtk_err gg_id(const qtk_gguf_file *f, const char *key, size_t n, int32_t *id,
                     qtk_status *st)
{
	uint64_t v;
	qtk_err rc = qtk_gguf_get_uint(f, key, &v, st);

	if (rc == QTK_E_NOT_FOUND)
		return QTK_OK;
	if (rc)
		return rc;
	if (v < n)
		*id = (int32_t)v;
	return QTK_OK;
}

static qtk_err gg_flag(const qtk_gguf_file *f, const char *key, int *flag, qtk_status *st)
{
	qtk_err rc = qtk_gguf_get_bool(f, key, flag, st);

	return rc == QTK_E_NOT_FOUND ? QTK_OK : rc;
}

static qtk_err gg_model(const qtk_gguf_file *f, const char *name, qtk_status *st)
{
	const char *s;
	uint64_t len;
	qtk_err rc = qtk_gguf_get_str(f, "tokenizer.ggml.model", &s, &len, st);

	if (rc == QTK_E_NOT_FOUND)
		return qtk_fail(st, QTK_E_NOT_FOUND, "%s: no vocabulary (no tokenizer.ggml.model)", name);
	if (rc)
		return rc;
	if (len != 5 || memcmp(s, "llama", 5))
		return qtk_fail(st, QTK_E_UNSUPPORTED,
		                "%s: tokenizer.ggml.model '%.*s': qtk reads SPM vocabularies ('llama') only",
		                name, (int)(len < 32 ? len : 32), s);
	return QTK_OK;
}

static qtk_err gg_fill(qtk_tok *t, const qtk_gguf_kv *tokens, const qtk_gguf_kv *scores,
                       const qtk_gguf_kv *types, qtk_status *st)
{
	for (size_t i = 0; i < t->n; i++) {
		const char *s;
		uint64_t len;
		double sc = 0;
		int64_t ty = QTK_TOK_NORMAL;

		qtk_gguf_arr_str(tokens, i, &s, &len);
		if (scores)
			qtk_gguf_arr_f64(scores, i, &sc);
		if (types)
			qtk_gguf_arr_int(types, i, &ty);
		else if (byte_piece(s, (size_t)len) >= 0)
			ty = QTK_TOK_BYTE; /* no token_type: decode <0xXX> as bytes anyway */
		QTK_TRY(tok_set(t, i, s, (size_t)len, (float)sc, ty >= 0 && ty <= 6 ? (int)ty : 0, 0, st));
	}
	return QTK_OK;
}

qtk_err qtk_tok_from_gguf(const qtk_gguf_file *f, const char *name, qtk_tok **out,
                          qtk_status *st)
{
	static const uint32_t str_t[] = { QTK_GGUF_STRING }, f32_t[] = { QTK_GGUF_F32 },
	                      int_t[] = { QTK_GGUF_I32, QTK_GGUF_U32 };
	const qtk_gguf_kv *tokens, *scores, *types;
	qtk_tok *t;
	uint64_t bytes = 0, len;
	const char *s;
	qtk_err rc;

	*out = NULL;
	QTK_TRY(gg_model(f, name, st));
	QTK_TRY(gg_array(f, name, "tokenizer.ggml.tokens", str_t, 1, 0, &tokens, st));
	if (!tokens)
		return qtk_fail(st, QTK_E_FORMAT, "%s: no tokenizer.ggml.tokens", name);
	QTK_TRY(gg_array(f, name, "tokenizer.ggml.scores", f32_t, 1, tokens->count, &scores, st));
	QTK_TRY(gg_array(f, name, "tokenizer.ggml.token_type", int_t, 2, tokens->count, &types, st));
	for (uint64_t i = 0; i < tokens->count && bytes <= TOK_MAX_TEXT; i++) {
		qtk_gguf_arr_str(tokens, i, &s, &len);
		bytes += len;
	}
	if (tokens->count > TOK_MAX_TOKENS)
		return qtk_fail(st, QTK_E_FORMAT, "%s: %llu tokens, more than the %u qtk takes", name,
		                (unsigned long long)tokens->count, TOK_MAX_TOKENS);
	QTK_TRY(tok_new(name, (size_t)tokens->count, bytes, &t, st));
	/* llama.cpp's SPM defaults: BOS 1, EOS 2, UNK 0, add BOS and a space */
	t->bos = 1;
	t->eos = 2;
	t->unk = 0;
	rc = gg_fill(t, tokens, scores, types, st);
	if (!rc)
		rc = gg_id(f, "tokenizer.ggml.bos_token_id", t->n, &t->bos, st);
	if (!rc)
		rc = gg_id(f, "tokenizer.ggml.eos_token_id", t->n, &t->eos, st);
	if (!rc)
		rc = gg_id(f, "tokenizer.ggml.unknown_token_id", t->n, &t->unk, st);
	if (!rc)
		rc = gg_flag(f, "tokenizer.ggml.add_bos_token", &t->add_bos, st);
	if (!rc)
		rc = gg_flag(f, "tokenizer.ggml.add_space_prefix", &t->add_space, st);
	if (!rc)
		rc = gg_flag(f, "tokenizer.ggml.remove_extra_whitespaces", &t->remove_extra_ws, st);
	if (!rc)
		rc = tok_finish(t, st);
	if (rc) {
		qtk_tok_close(t);
		return rc;
	}
	*out = t;
	return QTK_OK;
}

static qtk_err load_gguf(const char *path, qtk_tok **out, qtk_status *st)
{
	qtk_gguf_file *f;
	qtk_err rc;

	QTK_TRY(qtk_gguf_open(path, &f, st));
	rc = qtk_tok_from_gguf(f, path, out, st);
	qtk_gguf_close(f);
	return rc;
}

/* ---- llama2.c tokenizer.bin --------------------------------------------- */

/* i32 max_token_length, then per token: f32 score, i32 len, len bytes
 * (spaces as ' ', BOS/EOS as "\n<s>\n" / "\n</s>\n"), to the end of the
 * file. llama2.c takes the count from the model; here it is what the file
 * holds (qtk_tok_check_count compares). */
static qtk_err bin_scan(const uint8_t *p, size_t size, const char *path, size_t *n,
                        uint64_t *bytes, qtk_status *st)
{
	int32_t max, len;
	size_t at = 4;

	*n = 0;
	*bytes = 0;
	if (size < 4)
		return qtk_fail(st, QTK_E_FORMAT, "%s: %zu bytes, too short for a tokenizer.bin", path,
		                size);
	memcpy(&max, p, 4);
	if (max <= 0)
		return qtk_fail(st, QTK_E_FORMAT, "%s: max_token_length %d is not positive", path, max);
	while (at < size) {
		if (size - at < 8)
			return qtk_fail(st, QTK_E_FORMAT,
			                "%s: token %zu: truncated (%zu bytes left, its header needs 8)",
			                path, *n, size - at);
		memcpy(&len, p + at + 4, 4);
		if (len < 0 || len > max)
			return qtk_fail(st, QTK_E_FORMAT,
			                "%s: token %zu: length %d is outside 0..max_token_length %d", path,
			                *n, len, max);
		if ((size_t)len > size - at - 8)
			return qtk_fail(st, QTK_E_FORMAT,
			                "%s: token %zu: length %d runs past the end of the file (%zu bytes left)",
			                path, *n, len, size - at - 8);
		for (int32_t k = 0; k < len; k++)
			*bytes += p[at + 8 + (size_t)k] == ' ' ? 3 : 1;
		at += 8 + (size_t)len;
		++*n;
	}
	return QTK_OK;
}

static qtk_err bin_parse(const uint8_t *p, size_t size, const char *path, qtk_tok **out,
                         qtk_status *st)
{
	size_t n, at = 4;
	uint64_t bytes;
	qtk_tok *t;
	qtk_err rc = QTK_OK;

	QTK_TRY(bin_scan(p, size, path, &n, &bytes, st));
	QTK_TRY(tok_new(path, n, bytes, &t, st));
	for (size_t i = 0; i < n && !rc; i++) {
		float score;
		int32_t len;
		const char *s = (const char *)p + at + 8;
		int type = QTK_TOK_NORMAL;

		memcpy(&score, p + at, 4);
		memcpy(&len, p + at + 4, 4);
		at += 8 + (size_t)len;
		if (i == 0 && len == 5 && !memcmp(s, "<unk>", 5))
			type = QTK_TOK_UNKNOWN;
		else if (i == 1 || i == 2) /* llama2.c's fixed BOS = 1, EOS = 2 */
			type = QTK_TOK_CONTROL;
		else if (byte_piece(s, (size_t)len) >= 0)
			type = QTK_TOK_BYTE;
		rc = tok_set(t, i, s, (size_t)len, score, type, 1, st);
	}
	if (!rc) {
		t->unk = t->type[0] == QTK_TOK_UNKNOWN ? 0 : -1;
		t->bos = n > 1 ? 1 : -1;
		t->eos = n > 2 ? 2 : -1;
		rc = tok_finish(t, st);
	}
	if (rc) {
		qtk_tok_close(t);
		return rc;
	}
	*out = t;
	return QTK_OK;
}

/* The whole file into memory (tokenizer files are small: checked below). */
static qtk_err read_all(const char *path, uint8_t **buf, size_t *size, qtk_status *st)
{
	struct stat sb;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	*buf = NULL;
	if (fd < 0)
		return qtk_fail(st, errno == ENOENT ? QTK_E_NOT_FOUND : QTK_E_IO, "%s: cannot open: %s",
		                path, strerror(errno));
	if (fstat(fd, &sb) || !S_ISREG(sb.st_mode) || sb.st_size > (off_t)TOK_MAX_TEXT * 2) {
		close(fd);
		return qtk_fail(st, QTK_E_IO, "%s: not a regular file of at most %u bytes", path,
		                TOK_MAX_TEXT * 2);
	}
	if (!(*buf = qtk_malloc((size_t)sb.st_size + 1))) {
		close(fd);
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", path);
	}
	while (got < (size_t)sb.st_size) {
		ssize_t r = read(fd, *buf + got, (size_t)sb.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? errno : 0;
			close(fd);
			qtk_free(*buf);
			*buf = NULL;
			return qtk_fail(st, QTK_E_IO, "%s: read failed: %s", path,
			                e ? strerror(e) : "file shrank");
		}
		got += (size_t)r;
	}
	close(fd);
	*size = got;
	return QTK_OK;
}

static qtk_err load_bin(const char *path, qtk_tok **out, qtk_status *st)
{
	uint8_t *buf;
	size_t size = 0;
	qtk_err rc;

	QTK_TRY(read_all(path, &buf, &size, st));
	rc = bin_parse(buf, size, path, out, st);
	qtk_free(buf);
	return rc;
}

/* ---- open by name or content ------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && !strcmp(s + a - b, suffix);
}

/* 'g' GGUF, 's' sentencepiece, 'b' tokenizer.bin, 'j' JSON, 0 unreadable
 * (errno tells why). */
static int sniff(const char *path)
{
	uint8_t b[4] = { 0 };
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t r;

	if (fd < 0)
		return 0;
	r = read(fd, b, 4);
	close(fd);
	if (r == 4 && !memcmp(b, "GGUF", 4))
		return 'g';
	if (r >= 1 && b[0] == '{')
		return 'j';
	/* a ModelProto opens with field 1 (0x0a) and the first piece's length;
	 * a tokenizer.bin with a little-endian max_token_length below 2^16 */
	if (r == 4 && b[0] == 0x0a && b[1] != 0 && (b[2] != 0 || b[3] != 0))
		return 's';
	return 'b';
}

qtk_err qtk_tok_open(const char *path, qtk_tok **out, qtk_status *st)
{
	int kind;

	if (!out)
		return qtk_fail(st, QTK_E_ARG, "no output pointer");
	*out = NULL;
	if (!path)
		return qtk_fail(st, QTK_E_ARG, "no tokenizer path");
	kind = ends_with(path, ".gguf") ? 'g' : ends_with(path, ".model") ? 's'
	       : ends_with(path, ".bin") ? 'b' : ends_with(path, ".json") ? 'j' : sniff(path);
	switch (kind) {
	case 'g':
		return load_gguf(path, out, st);
	case 's':
		return load_spm(path, out, st);
	case 'b':
		return load_bin(path, out, st);
	case 'j':
		return tok_load_json(path, out, st);
	}
	return qtk_fail(st, errno == ENOENT ? QTK_E_NOT_FOUND : QTK_E_IO, "%s: cannot open: %s",
	                path, strerror(errno));
}
