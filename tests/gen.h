/* tests: generated checkpoints — stand-ins of real diffusion transformers
 * (from the tensor lists in tests/data/dit/) and large LLaMA-shaped
 * checkpoints for benchmarks. Values are deterministic pseudo-random. */
#ifndef QTK_TEST_GEN_H
#define QTK_TEST_GEN_H

#include <stdint.h>

#include "qtk_formats.h"

/* Write a stand-in of the checkpoint listed in spec (a DiT fixture JSON) at
 * scale S (every dim d > 16 not in keep_dims becomes d / S), in the spec's
 * dtype or `dtype` if >= 0. Values N(0, 0.02), a few input columns of each
 * 2-D weight x20, norm scales ~1. Returns the number of tensors or -1. */
long gen_dit_standin(const char *spec, unsigned scale, int dtype,
                     const char *out, uint64_t seed, qtk_status *st);

/* Write a LLaMA-shaped checkpoint of about target_bytes: layers of
 * attention (dim x dim) and MLP (ffn x dim) matrices plus norms, in dtype. */
long gen_llama_like(const char *out, qtk_dtype dtype, uint64_t dim, uint64_t ffn,
                    uint64_t target_bytes, uint64_t seed, qtk_status *st);

/* A LLaMA model in dir: model.safetensors (embeddings, layers, norms,
 * lm_head; HF names) and config.json. */
long gen_llama_model(const char *dir, qtk_dtype dtype, uint64_t dim, uint64_t ffn,
                     uint64_t layers, uint64_t vocab, uint64_t heads, uint64_t seed,
                     qtk_status *st);
/* Fill n values ~ N(0, sigma), fast (Irwin-Hall of 4 uniforms). */
void gen_normal(float *x, uint64_t n, float sigma, uint64_t *state);

#endif
