/* tests/tools: qtk_gen — write generated checkpoints for benchmarks.
 *   qtk_gen dit SPEC.json SCALE OUT.safetensors [DTYPE]
 *   qtk_gen llama OUT.safetensors BYTES [DTYPE [DIM FFN]]
 *   qtk_gen llama-model DIR DTYPE DIM FFN LAYERS VOCAB HEADS
 *   qtk_gen gguf-cmp A.gguf B.gguf   (tensors by name: type, shape, bytes)
 *   qtk_gen isa                      (the SIMD level qtk runs at here, after
 *                                     $QTK_ISA: scalar, avx2 or avx512) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../gen.h"

/* Compare the tensors of two GGUF files by name. Exit 0 when every tensor
 * of A is in B with the same type, shape and bytes (and B has no others). */
static int gguf_cmp(const char *a, const char *b)
{
	qtk_gguf_file *fa, *fb;
	qtk_status st;
	size_t same = 0, diff = 0;

	if (qtk_gguf_open(a, &fa, &st) || qtk_gguf_open(b, &fb, &st)) {
		fprintf(stderr, "qtk_gen: %s\n", st.msg);
		return 2;
	}
	for (size_t i = 0; i < qtk_gguf_count(fa); i++) {
		const qtk_gguf_tensor *x = qtk_gguf_get(fa, i);
		const qtk_gguf_tensor *y = qtk_gguf_find(fb, x->name);
		const char *why = NULL;

		if (!y)
			why = "missing in B";
		else if (x->type != y->type)
			why = "type differs";
		else if (x->nelem != y->nelem || memcmp(x->ne, y->ne, sizeof x->ne))
			why = "shape differs";
		else if (memcmp(x->data, y->data, (size_t)x->nbytes))
			why = "bytes differ";
		if (why) {
			printf("%-40s %s %s\n", x->name, qtk_ggml_type_name(x->type), why);
			diff++;
		} else {
			same++;
		}
	}
	if (qtk_gguf_count(fb) != qtk_gguf_count(fa)) {
		printf("tensor counts differ: %zu vs %zu\n", qtk_gguf_count(fa), qtk_gguf_count(fb));
		diff++;
	}
	printf("%zu tensors identical, %zu differ\n", same, diff);
	qtk_gguf_close(fa);
	qtk_gguf_close(fb);
	return diff ? 1 : 0;
}

int main(int argc, char **argv)
{
	qtk_status st;
	long n = -1;

	qtk_status_clear(&st);
	if (argc >= 5 && !strcmp(argv[1], "dit")) {
		int dt = argc > 5 ? qtk_dtype_from_name(argv[5]) : -1;
		n = gen_dit_standin(argv[2], (unsigned)atoi(argv[3]), dt, argv[4], 1, &st);
	} else if (argc >= 4 && !strcmp(argv[1], "llama")) {
		int dt = argc > 4 ? qtk_dtype_from_name(argv[4]) : QTK_DT_BF16;
		uint64_t dim = argc > 6 ? strtoull(argv[5], NULL, 10) : 4096;
		uint64_t ffn = argc > 6 ? strtoull(argv[6], NULL, 10) : 11008;
		if (dt < 0) {
			fprintf(stderr, "qtk_gen: bad dtype\n");
			return 2;
		}
		n = gen_llama_like(argv[2], (qtk_dtype)dt, dim, ffn,
		                   strtoull(argv[3], NULL, 10), 1, &st);
	} else if (argc == 9 && !strcmp(argv[1], "llama-model")) {
		int dt = qtk_dtype_from_name(argv[3]);
		if (dt < 0) {
			fprintf(stderr, "qtk_gen: bad dtype\n");
			return 2;
		}
		n = gen_llama_model(argv[2], (qtk_dtype)dt, strtoull(argv[4], NULL, 10),
		                    strtoull(argv[5], NULL, 10), strtoull(argv[6], NULL, 10),
		                    strtoull(argv[7], NULL, 10), strtoull(argv[8], NULL, 10), 1, &st);
	} else if (argc == 4 && !strcmp(argv[1], "gguf-cmp")) {
		return gguf_cmp(argv[2], argv[3]);
	} else if (argc == 2 && !strcmp(argv[1], "isa")) {
		printf("%s\n", qtk_isa_name(qtk_isa_active()));
		return 0;
	} else {
		fprintf(stderr, "usage: qtk_gen dit SPEC.json SCALE OUT [DTYPE]\n"
		                "       qtk_gen llama OUT BYTES [DTYPE [DIM FFN]]\n"
		                "       qtk_gen llama-model DIR DTYPE DIM FFN LAYERS VOCAB HEADS\n"
		                "       qtk_gen gguf-cmp A.gguf B.gguf\n"
		                "       qtk_gen isa\n");
		return 2;
	}
	if (n < 0) {
		fprintf(stderr, "qtk_gen: %s\n", st.msg);
		return 1;
	}
	printf("wrote %ld tensors\n", n);
	return 0;
}
