#!/usr/bin/env python3
"""Write a Hugging Face tokenizer.json for a sentencepiece BPE model the way
transformers' LlamaConverter does (SentencePieceExtractor merges: every split
of every piece whose halves are pieces, ordered by the merged piece's score,
highest first; legacy normalizer Prepend + Replace, or with --metaspace the
non-legacy Metaspace pre-tokenizer). Needs only the sentencepiece module.

    python3 tests/tools/spm_to_tokenizer_json.py tokenizer.model > tokenizer.json
"""
import json
import sys

import sentencepiece as spm


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    metaspace = "--metaspace" in sys.argv
    sp = spm.SentencePieceProcessor(model_file=args[0])
    n = sp.get_piece_size()
    pieces = [sp.id_to_piece(i) for i in range(n)]
    pieces[0], pieces[1], pieces[2] = "<unk>", "<s>", "</s>"
    ids = {p: i for i, p in enumerate(pieces)}
    scores = {p: sp.get_score(i) for i, p in enumerate(pieces)}
    merges = []
    for piece, score in scores.items():
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in ids and piece[k:] in ids]
        merges += sorted(local, key=lambda m: (ids[m[0]], ids[m[1]]))
    merges.sort(key=lambda m: m[2], reverse=True)
    special = lambda i: {"id": i, "content": pieces[i], "single_word": False, "lstrip": False,
                         "rstrip": False, "normalized": False, "special": True}
    if metaspace:
        normalizer = None
        pre = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
               "split": False}
    else:
        normalizer = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        pre = None
    out = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(0), special(1), special(2)],
        "normalizer": normalizer, "pre_tokenizer": pre,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1],
                                                                  "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": ids, "merges": [a + " " + b for a, b, _ in merges]},
    }
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
