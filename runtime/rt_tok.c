/* runtime: SPM encoding and decoding, as llama.cpp's llm_tokenizer_spm:
 * the text (with a space in front) has its spaces escaped to U+2581 and is
 * cut into UTF-8 characters; adjacent pairs whose concatenation is a piece
 * wait in a max-heap by that piece's score (ties: leftmost); the best pair
 * is merged and its new neighbours are queued, until no pair is a piece.
 * Symbols that are no piece become byte tokens. O(n log n), word by word
 * when no piece can span a word start. A tokenizer.json ranks pairs by
 * their merge rule instead (Hugging Face tokenizers' BPE). */
#include <string.h>

#include "tok_impl.h"

/* ---- accessors --------------------------------------------------------- */

size_t qtk_tok_count(const qtk_tok *t) { return t->n; }
int32_t qtk_tok_bos(const qtk_tok *t) { return t->bos; }
int32_t qtk_tok_eos(const qtk_tok *t) { return t->eos; }
int32_t qtk_tok_unk(const qtk_tok *t) { return t->unk; }
int qtk_tok_wants_bos(const qtk_tok *t) { return t->add_bos && t->bos >= 0; }

static int in_range(const qtk_tok *t, int32_t id)
{
	return id >= 0 && (size_t)id < t->n;
}

const char *qtk_tok_piece(const qtk_tok *t, int32_t id, size_t *len)
{
	*len = 0;
	if (!in_range(t, id))
		return NULL;
	*len = t->off[id + 1] - t->off[id];
	return t->text + t->off[id];
}

float qtk_tok_score(const qtk_tok *t, int32_t id)
{
	return in_range(t, id) ? t->score[id] : 0.0f;
}

int qtk_tok_type(const qtk_tok *t, int32_t id)
{
	return in_range(t, id) ? t->type[id] : 0;
}

qtk_err qtk_tok_check_count(const qtk_tok *t, size_t n_vocab, qtk_status *st)
{
	if (t->n != n_vocab)
		return qtk_fail(st, QTK_E_FORMAT, "%s: %zu tokens, the model has a vocabulary of %zu",
		                t->name, t->n, n_vocab);
	return QTK_OK;
}

/* ---- encoding ----------------------------------------------------------- */

typedef struct {
	int32_t prev, next;  /* neighbours in the chain, -1 at the ends */
	uint32_t off, n;     /* bytes [off, off+n) of the escaped text; n = 0: merged away */
	int32_t id;          /* piece id of those bytes, -1 if none */
} tok_sym;

/* A queued pair: symbol left and its right neighbour at the time. It is
 * stale once either changed: both only grow, so then left is empty, or
 * the two sizes no longer add up to size. */
typedef struct {
	uint64_t key;        /* score (order-preserving bits) << 32 | ~left */
	uint32_t size;       /* bytes of the merged piece */
	int32_t id;          /* the merged piece */
} tok_pair;

typedef struct {
	const qtk_tok *t;
	const char *buf;     /* escaped text */
	tok_sym *sym;
	tok_pair *heap;
	size_t nheap;
} tok_work;

/* llama.cpp's order as one unsigned key: higher score first, then the
 * leftmost pair. Float bits made order-preserving (scores are not NaN;
 * -0 counts as +0, as the float comparison has it). */
static uint64_t pair_key(float score, int32_t left)
{
	uint32_t u;

	if (score == 0.0f)
		score = 0.0f;
	memcpy(&u, &score, 4);
	u = (u & 0x80000000u) ? ~u : u | 0x80000000u;
	return (uint64_t)u << 32 | (uint32_t)~(uint32_t)left;
}

static int32_t pair_left(const tok_pair *p)
{
	return (int32_t)~(uint32_t)p->key;
}

static void sift_down(tok_pair *h, size_t n, size_t i)
{
	tok_pair x = h[i];

	for (;;) {
		size_t c = 4 * i + 1, end = c + 4 < n ? c + 4 : n, best = c;
		if (c >= n)
			break;
		for (size_t k = c + 1; k < end; k++)
			best = h[k].key > h[best].key ? k : best;
		if (h[best].key <= x.key)
			break;
		h[i] = h[best];
		i = best;
	}
	h[i] = x;
}

static void heap_push(tok_work *w, tok_pair p)
{
	size_t i = w->nheap++;

	while (i > 0 && p.key > w->heap[(i - 1) / 4].key) {
		w->heap[i] = w->heap[(i - 1) / 4];
		i = (i - 1) / 4;
	}
	w->heap[i] = p;
}

static tok_pair heap_pop(tok_work *w)
{
	tok_pair top = w->heap[0];

	w->heap[0] = w->heap[--w->nheap];
	if (w->nheap)
		sift_down(w->heap, w->nheap, 0);
	return top;
}

/* tokenizer.json: the pair if a merge rule joins the two pieces (and,
 * with Metaspace split, the right one does not open a word). Lower rank
 * first, then leftmost, as Hugging Face tokenizers' BPE. */
static int make_ranked_pair(const tok_work *w, const tok_sym *l, int32_t left, tok_pair *p)
{
	const tok_sym *r = &w->sym[l->next];
	int64_t rank;

	if (l->id < 0 || r->id < 0 ||
	    (w->t->split_words && r->n >= 3 && !memcmp(w->buf + r->off, "\xe2\x96\x81", 3)))
		return 0;
	rank = tok_merge_find(w->t, l->id, r->id, &p->id);
	if (rank < 0)
		return 0;
	p->size = l->n + r->n;
	p->key = (uint64_t)(UINT32_MAX - (uint32_t)rank) << 32 | (uint32_t)~(uint32_t)left;
	return 1;
}

/* The pair (left, its right neighbour) if their concatenation is a piece. */
static int make_pair(const tok_work *w, int32_t left, tok_pair *p)
{
	const tok_sym *l;

	if (left < 0 || (l = &w->sym[left])->next < 0)
		return 0;
	if (w->t->ranked)
		return make_ranked_pair(w, l, left, p);
	p->size = l->n + w->sym[l->next].n;
	p->id = qtk_tok_find(w->t, w->buf + l->off, p->size);
	if (p->id < 0)
		return 0;
	p->key = pair_key(w->t->score[p->id], left);
	return 1;
}

static void try_pair(tok_work *w, int32_t left)
{
	tok_pair p;

	if (make_pair(w, left, &p))
		heap_push(w, p);
}

static void merge_all(tok_work *w)
{
	while (w->nheap) {
		tok_pair p = heap_pop(w);
		int32_t left = pair_left(&p);
		tok_sym *l = &w->sym[left], *r;

		if (!l->n || l->next < 0 || l->n + w->sym[l->next].n != p.size)
			continue; /* stale: one side was merged since */
		r = &w->sym[l->next];
		l->n += r->n;
		l->id = p.id;
		r->n = 0;
		l->next = r->next;
		if (r->next >= 0)
			w->sym[r->next].prev = left;
		try_pair(w, l->prev);
		try_pair(w, left);
	}
}

/* llama.cpp's unicode_len_utf8: the length the first byte announces,
 * continuation bytes are not checked (stray bytes end up as byte tokens). */
static uint32_t utf8_len(uint8_t c)
{
	static const uint8_t len[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };

	return len[c >> 4];
}

/* sentencepiece's remove_extra_whitespaces: text without leading and
 * trailing ' ', runs of ' ' folded into one. Returns its length. */
static size_t fold_spaces(const char *text, size_t len, char *out)
{
	size_t o = 0, i = 0, end = len;

	while (i < end && text[i] == ' ')
		i++;
	while (end > i && text[end - 1] == ' ')
		end--;
	for (; i < end; i++)
		if (text[i] != ' ' || (o && out[o - 1] != ' '))
			out[o++] = text[i];
	return o;
}

/* Escaped text: ' ' in front if asked, then text with ' ' as U+2581.
 * Returns its length (0 for empty text: no space in front then). */
static size_t escape(const char *text, size_t len, int prefix, char *out)
{
	size_t o = 0;

	if (!len)
		return 0;
	if (prefix) {
		memcpy(out, "\xe2\x96\x81", 3);
		o = 3;
	}
	for (size_t i = 0; i < len; i++) {
		if (text[i] != ' ')
			out[o++] = text[i];
		else {
			memcpy(out + o, "\xe2\x96\x81", 3);
			o += 3;
		}
	}
	return o;
}

static qtk_err emit(const qtk_tok *t, int32_t id, int32_t *ids, size_t cap, size_t *n,
                    qtk_status *st)
{
	if (*n >= cap)
		return qtk_fail(st, QTK_E_ARG, "%s: more than the %zu tokens the buffer holds", t->name,
		                cap);
	ids[(*n)++] = id;
	return QTK_OK;
}

/* The symbols left after merging: their piece, else byte tokens. */
static qtk_err emit_symbols(const tok_work *w, int32_t *ids, size_t cap, size_t *n,
                            qtk_status *st)
{
	const qtk_tok *t = w->t;

	for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
		const tok_sym *s = &w->sym[i];
		if (s->id >= 0) {
			QTK_TRY(emit(t, s->id, ids, cap, n, st));
			continue;
		}
		if (t->ranked) { /* tokenizer.json: byte fallback was done up front */
			if (t->unk < 0)
				return qtk_fail(st, QTK_E_UNSUPPORTED,
				                "%s: a character has no token and the vocabulary no <unk>",
				                t->name);
			if (!(t->fuse_unk && s->prev >= 0 && w->sym[s->prev].id < 0))
				QTK_TRY(emit(t, t->unk, ids, cap, n, st));
			continue;
		}
		for (uint32_t k = 0; k < s->n; k++) {
			int32_t b = t->byte_id[(uint8_t)w->buf[s->off + k]];
			if (b < 0 && t->unk < 0)
				return qtk_fail(st, QTK_E_UNSUPPORTED,
				                "%s: byte 0x%02X has no token and the vocabulary no <unk>",
				                t->name, (uint8_t)w->buf[s->off + k]);
			if (b < 0) { /* no byte fallback: one <unk> per character */
				QTK_TRY(emit(t, t->unk, ids, cap, n, st));
				break;
			}
			QTK_TRY(emit(t, b, ids, cap, n, st));
		}
	}
	return QTK_OK;
}

size_t qtk_tok_max_tokens(size_t len)
{
	/* each escaped byte gives at most one token; escaping triples spaces;
	 * the space in front, BOS and EOS */
	return len > (SIZE_MAX - 5) / 3 ? SIZE_MAX : 3 * len + 5;
}

static int is_meta(const tok_work *w, size_t i)
{
	return w->sym[i].n == 3 && !memcmp(w->buf + w->sym[i].off, "\xe2\x96\x81", 3);
}

/* Where the word from symbol a ends: before the next U+2581 that follows
 * another character. When no piece has a U+2581 past its start other than
 * runs of U+2581 alone (t->word_local), no piece can span that point, so
 * no pair across it ever queues and each word merges on its own, in the
 * same order as in one heap for the whole text, but in a heap that stays
 * in cache (LLaMA 2 vocabulary, tinystories.txt: 135 ms -> 17 ms). */
static size_t word_end(const tok_work *w, size_t a, size_t nsym)
{
	size_t b = a + 1;

	while (b < nsym && !(is_meta(w, b) && !is_meta(w, b - 1)))
		b++;
	return b;
}

/* Merge symbols [a, b) as a chain of their own, then link it to b. */
static void merge_range(tok_work *w, size_t a, size_t b, size_t nsym)
{
	int32_t last = (int32_t)a;

	for (size_t i = a; i < b; i++) {
		w->sym[i].prev = i > a ? (int32_t)i - 1 : -1;
		w->sym[i].next = i + 1 < b ? (int32_t)i + 1 : -1;
	}
	w->nheap = 0;
	for (size_t i = a; i + 1 < b; i++) /* queue every pair, then heapify: O(n) */
		w->nheap += make_pair(w, (int32_t)i, &w->heap[w->nheap]);
	for (size_t i = w->nheap / 4 + 1; i-- > 0;)
		sift_down(w->heap, w->nheap, i);
	merge_all(w);
	while (w->sym[last].next >= 0) /* symbol a is never merged away */
		last = w->sym[last].next;
	if (b < nsym) {
		w->sym[last].next = (int32_t)b;
		w->sym[b].prev = last;
	}
}

/* The symbol(s) of one character at buf[off, off+len): the character, or
 * for tokenizer.json a byte token per byte when the character is no piece
 * (Hugging Face's BPE falls back before merging; llama.cpp after).
 * Returns the new symbol count. */
static size_t add_symbols(const qtk_tok *t, const char *buf, uint32_t off, uint32_t len,
                          tok_sym *sym, size_t nsym)
{
	int32_t id = qtk_tok_find(t, buf + off, len);
	int bytes = id < 0 && t->ranked && t->byte_fallback;

	for (uint32_t k = 0; bytes && k < len; k++)
		bytes = t->byte_id[(uint8_t)buf[off + k]] >= 0;
	if (!bytes) {
		sym[nsym++] = (tok_sym){ .off = off, .n = len, .id = id };
		return nsym;
	}
	for (uint32_t k = 0; k < len; k++)
		sym[nsym++] = (tok_sym){ .off = off + k, .n = 1,
		                         .id = t->byte_id[(uint8_t)buf[off + k]] };
	return nsym;
}

/* The merging itself, over buf[0, blen) (non-empty). */
static qtk_err encode_escaped(const qtk_tok *t, const char *buf, size_t blen, int32_t *ids,
                              size_t cap, size_t *n, qtk_status *st)
{
	tok_work w = { .t = t, .buf = buf };
	size_t nsym = 0;
	qtk_err rc;

	w.sym = qtk_malloc(blen * sizeof *w.sym);
	w.heap = qtk_malloc(3 * blen * sizeof *w.heap); /* nsym - 1 + 2 per merge */
	if (!w.sym || !w.heap) {
		rc = qtk_fail(st, QTK_E_NOMEM, "%s: out of memory encoding %zu bytes", t->name, blen);
		goto out;
	}
	for (size_t off = 0; off < blen;) {
		uint32_t len = utf8_len((uint8_t)buf[off]);
		if (len > blen - off)
			len = (uint32_t)(blen - off);
		nsym = add_symbols(t, buf, (uint32_t)off, len, w.sym, nsym);
		off += len;
	}
	for (size_t a = 0, b; a < nsym; a = b) {
		b = t->word_local ? word_end(&w, a, nsym) : nsym;
		merge_range(&w, a, b, nsym);
	}
	rc = emit_symbols(&w, ids, cap, n, st);
out:
	qtk_free(w.sym);
	qtk_free(w.heap);
	return rc;
}

/* A stretch of the text: raw bytes [off, off+len), or (id >= 0) the
 * user-defined piece found there. */
typedef struct {
	size_t off, len;
	int32_t id;
} tok_frag;

static qtk_err frag_add(tok_frag **f, size_t *n, size_t *cap, tok_frag x)
{
	if (*n == *cap) {
		size_t c = *cap * 2;
		tok_frag *p = qtk_realloc(*f, c * sizeof *p);
		if (!p)
			return QTK_E_NOMEM;
		*f = p;
		*cap = c;
	}
	(*f)[(*n)++] = x;
	return QTK_OK;
}

/* Split the raw stretches of *f at each occurrence of piece u, leftmost
 * first and not overlapping. */
static qtk_err split_at(const qtk_tok *t, const char *text, int32_t u, tok_frag **f, size_t *n,
                        size_t *cap)
{
	const char *piece = t->text + t->off[u];
	size_t plen = t->off[u + 1] - t->off[u], nn = 0, ncap = *n + 8;
	tok_frag *g = qtk_malloc(ncap * sizeof *g);
	qtk_err rc = g ? QTK_OK : QTK_E_NOMEM;

	for (size_t i = 0; i < *n && !rc; i++) {
		size_t pos = (*f)[i].off, end = pos + (*f)[i].len;
		const char *m;

		if ((*f)[i].id >= 0) {
			rc = frag_add(&g, &nn, &ncap, (*f)[i]);
			continue;
		}
		while (!rc && (m = memmem(text + pos, end - pos, piece, plen))) {
			size_t at = (size_t)(m - text);
			if (at > pos)
				rc = frag_add(&g, &nn, &ncap, (tok_frag){ pos, at - pos, -1 });
			if (!rc)
				rc = frag_add(&g, &nn, &ncap, (tok_frag){ at, plen, u });
			pos = at + plen;
		}
		if (!rc && pos < end)
			rc = frag_add(&g, &nn, &ncap, (tok_frag){ pos, end - pos, -1 });
	}
	qtk_free(*f);
	*f = g;
	*n = rc ? 0 : nn;
	*cap = ncap;
	return rc;
}

/* llama.cpp's tokenizer_st_partition without special parsing: user-defined
 * pieces are cut out of the text before anything else, longest first
 * (control and unknown pieces in the text stay text). */
static qtk_err partition(const qtk_tok *t, const char *text, size_t len, tok_frag **f,
                         size_t *n, qtk_status *st)
{
	size_t cap = 8;

	*n = 0;
	if (!(*f = qtk_malloc(cap * sizeof **f)))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", t->name);
	if (len)
		(*f)[(*n)++] = (tok_frag){ 0, len, -1 };
	for (size_t k = 0; k < t->nud && *n; k++)
		if (split_at(t, text, t->ud[k], f, n, &cap))
			return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", t->name);
	return QTK_OK;
}

/* Each stretch: a user-defined piece as it is, raw text escaped (with a
 * space in front when it opens the text or follows such a piece, as
 * llama.cpp does) and merged. buf holds 3 * len + 3 bytes. */
static qtk_err encode_frags(const qtk_tok *t, const char *text, const tok_frag *f, size_t nf,
                            char *buf, int32_t *ids, size_t cap, size_t *n, qtk_status *st)
{
	int after_special = 1;

	for (size_t i = 0; i < nf; i++) {
		const char *s = text + f[i].off;
		size_t blen;
		int space;

		if (f[i].id >= 0) {
			QTK_TRY(emit(t, f[i].id, ids, cap, n, st));
			after_special = 1;
			continue;
		}
		/* Metaspace: "first" only at the start, and not before a space */
		space = t->add_space && after_special && !(t->space_first_only && f[i].off) &&
		        !(t->space_unless_one &&
		          (*s == ' ' || (f[i].len >= 3 && !memcmp(s, "\xe2\x96\x81", 3))));
		blen = escape(s, f[i].len, space, buf);
		if (blen)
			QTK_TRY(encode_escaped(t, buf, blen, ids, cap, n, st));
		after_special = 0;
	}
	return QTK_OK;
}

qtk_err qtk_tok_encode(const qtk_tok *t, const char *text, size_t len, unsigned flags,
                       int32_t *ids, size_t cap, size_t *n, qtk_status *st)
{
	char *buf, *folded = NULL;
	tok_frag *f = NULL;
	size_t nf;
	qtk_err rc;

	*n = 0;
	if (len > INT32_MAX / 4)
		return qtk_fail(st, QTK_E_ARG, "%s: %zu bytes of text, at most %d at once", t->name, len,
		                INT32_MAX / 4);
	if ((flags & QTK_TOK_ADD_BOS) && t->bos >= 0)
		QTK_TRY(emit(t, t->bos, ids, cap, n, st));
	if (!(buf = qtk_malloc(3 * len + 4)))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory encoding %zu bytes", t->name, len);
	if ((flags & QTK_TOK_SP_WHITESPACE) && t->remove_extra_ws) {
		if (!(folded = qtk_malloc(len + 1))) {
			qtk_free(buf);
			return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory", t->name);
		}
		len = fold_spaces(text, len, folded);
		text = folded;
	}
	rc = partition(t, text, len, &f, &nf, st);
	if (!rc)
		rc = encode_frags(t, text, f, nf, buf, ids, cap, n, st);
	qtk_free(f);
	qtk_free(folded);
	qtk_free(buf);
	if (!rc && (flags & QTK_TOK_ADD_EOS) && t->eos >= 0)
		rc = emit(t, t->eos, ids, cap, n, st);
	return rc;
}

/* ---- decoding ------------------------------------------------------------ */

const char *qtk_tok_text(const qtk_tok *t, int32_t prev, int32_t id, size_t *len)
{
	const char *p;

	*len = 0;
	if (!in_range(t, id))
		return NULL;
	p = t->dec + t->dec_off[id];
	*len = t->dec_off[id + 1] - t->dec_off[id];
	if (t->add_space && (prev < 0 || prev == t->bos) && *len && *p == ' ' &&
	    t->type[id] == QTK_TOK_NORMAL) {
		p++;
		--*len;
	}
	return p;
}

/* U+2581 spelled by byte tokens is a space too: a stray UTF-8 lead byte
 * announces more bytes than follow it and takes (part of) an escaped space
 * into its symbol, which then falls back to bytes (llama.cpp does the
 * same). Pieces never leave U+2581 in the output. */
static size_t unescape_bytes(char *s, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		if (i + 3 <= n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
			s[o++] = ' ';
			i += 2;
		} else
			s[o++] = s[i];
	}
	return o;
}

qtk_err qtk_tok_decode(const qtk_tok *t, const int32_t *ids, size_t n, char **text, size_t *len,
                       qtk_status *st)
{
	size_t total = 0, o = 0;
	int first = 1; /* no bytes out yet: the space put in front comes next */
	char *out;

	*text = NULL;
	*len = 0;
	for (size_t i = 0; i < n; i++) {
		if (!in_range(t, ids[i]))
			return qtk_fail(st, QTK_E_ARG, "%s: token %zu: id %d is outside the %zu tokens",
			                t->name, i, ids[i], t->n);
		total += t->dec_off[ids[i] + 1] - t->dec_off[ids[i]];
	}
	if (!(out = qtk_malloc(total + 1)))
		return qtk_fail(st, QTK_E_NOMEM, "%s: out of memory decoding %zu tokens", t->name, n);
	for (size_t i = 0; i < n; i++) {
		size_t l = t->dec_off[ids[i] + 1] - t->dec_off[ids[i]];
		const char *p = t->dec + t->dec_off[ids[i]];
		if (first && l) {
			if (t->add_space && *p == ' ' && t->type[ids[i]] == QTK_TOK_NORMAL) {
				p++;
				l--;
			}
			first = 0;
		}
		memcpy(out + o, p, l);
		o += l;
	}
	o = unescape_bytes(out, o);
	out[o] = 0;
	*text = out;
	*len = o;
	return QTK_OK;
}
