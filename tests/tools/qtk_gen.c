/* tests/tools: qtk_gen — write generated checkpoints for benchmarks.
 *   qtk_gen dit SPEC.json SCALE OUT.safetensors [DTYPE]
 *   qtk_gen llama OUT.safetensors BYTES [DTYPE [DIM FFN]] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../gen.h"

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
	} else {
		fprintf(stderr, "usage: qtk_gen dit SPEC.json SCALE OUT [DTYPE]\n"
		                "       qtk_gen llama OUT BYTES [DTYPE [DIM FFN]]\n");
		return 2;
	}
	if (n < 0) {
		fprintf(stderr, "qtk_gen: %s\n", st.msg);
		return 1;
	}
	printf("wrote %ld tensors\n", n);
	return 0;
}
