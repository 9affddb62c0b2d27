/* runtime (private): the tokenizer's vocabulary — pieces in one buffer, a
 * hash from piece text to id, the byte-token table and each token's
 * decoded bytes. Built by the loaders in rt_tok_load.c through tok_new /
 * tok_set / tok_finish; used by encode and decode in rt_tok.c. */
#ifndef QTK_TOK_IMPL_H
#define QTK_TOK_IMPL_H

#include "qtk_runtime.h"

#define TOK_MAX_TOKENS (1u << 24)    /* 16M pieces: far above any real vocabulary */
#define TOK_MAX_TEXT (1u << 30)      /* bytes of all pieces together */

struct qtk_tok {
	char *name;          /* file name, for messages */
	size_t n;            /* pieces */
	char *text;          /* [off[n]] all pieces, U+2581 for spaces */
	uint32_t *off;       /* [n+1] piece i is text[off[i], off[i+1]) */
	float *score;        /* [n] */
	uint8_t *type;       /* [n] QTK_TOK_* */
	char *dec;           /* [dec_off[n]] decoded bytes of each token */
	uint32_t *dec_off;   /* [n+1] */
	int32_t *slot;       /* [nslot] open-addressing hash of piece -> id, -1 empty */
	size_t nslot;        /* power of two, >= 2n */
	size_t max_len;      /* longest piece in bytes */
	int32_t byte_id[256]; /* token for each byte (<0xXX>, else the 1-byte piece), -1 none */
	int32_t *ud;         /* [nud] user-defined pieces, longest first (ties: lower id) */
	size_t nud;
	int32_t bos, eos, unk; /* -1: none */
	int add_bos;         /* prompts start with BOS */
	int add_space;       /* put ' ' in front of the text (add_dummy_prefix) */
	int remove_extra_ws; /* sentencepiece's remove_extra_whitespaces */
	size_t fill;         /* builder: bytes of text used so far */
	/* tokenizer.json BPE: pairs merge by the rank of their merge rule
	 * (lowest first, then leftmost) instead of by the merged piece's score */
	int ranked;          /* 1: use the merge table below */
	uint64_t *mkey;      /* [mslots] (left id << 32 | right id) + 1; 0: empty slot */
	uint32_t *mrank;     /* [mslots] position in the merges list */
	int32_t *mnew;       /* [mslots] the merged piece */
	size_t mslots;       /* power of two */
	int space_first_only; /* Metaspace "first": a space only in front of the whole text */
	int space_unless_one; /* Metaspace: no space in front of text that opens with one */
	int split_words;     /* Metaspace split: nothing merges across a U+2581 */
	int fuse_unk;        /* unknown characters in a row give one <unk> */
	int byte_fallback;   /* unknown characters give byte tokens (else <unk>) */
	int word_local;      /* no piece has U+2581 past its start unless all U+2581:
	                      * words (cut before a U+2581 after another character)
	                      * can be merged one at a time */
};

/* A tokenizer for n pieces of text_bytes bytes in all (both checked
 * against the limits above), named name. */
qtk_err tok_new(const char *name, size_t n, uint64_t text_bytes, qtk_tok **out, qtk_status *st);
/* Piece i (in order i = 0, 1, ...): its bytes, score and kind. A ' ' in
 * the text is stored as U+2581 when spaces_are_meta (tokenizer.bin). */
qtk_err tok_set(qtk_tok *t, size_t i, const char *s, size_t len, float score, int type,
                int spaces_are_meta, qtk_status *st);
/* After the last tok_set: check (no NaN score, no duplicate piece, ids in
 * range), build the hash, byte table and decoded texts. */
qtk_err tok_finish(qtk_tok *t, qtk_status *st);
/* FNV-1a, the hash of the piece table. */
uint64_t tok_hash(const char *s, size_t len);
/* Merge rule for the pair (a, b): its rank and the merged piece, or -1. */
int64_t tok_merge_find(const qtk_tok *t, int32_t a, int32_t b, int32_t *merged);
/* A tokenizer.json (rt_tok_json.c). */
qtk_err tok_load_json(const char *path, qtk_tok **out, qtk_status *st);

#endif
