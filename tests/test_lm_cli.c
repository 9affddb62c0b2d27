/* tests: `qtk run` and `qtk eval` on stories260K: greedy generation from
 * BOS, perplexity in text and JSON, against a reference, usage errors. */
#include <stdlib.h>

#include "test.h"

static const char *bin(void)
{
	const char *b = getenv("QTK_BIN");
	return b ? b : "build/qtk";
}

#define S260 "tests/data/stories260K/"

TEST(lm_cli_run_greedy_from_bos)
{
	const char *out = t_tmp("out.txt"), *err = t_tmp("err.txt");
	char *text, *msg;
	size_t n;

	CHECK_EQ(t_system("%s run " S260 "model.safetensors -n 40 -j 2 > %s 2> %s", bin(), out, err), 0);
	text = t_read_file(out, &n);
	msg = t_read_file(err, &n);
	REQUIRE(text && msg);
	CHECK_MSG(!strncmp(text, "Once upon a time, there was a little girl named Lily", 52),
	          "got: %s", text);
	CHECK(strstr(msg, "prompt: 1 tokens") && strstr(msg, "generation: 40 tokens") &&
	      strstr(msg, "tokens/s"));
	free(text);
	free(msg);
	/* a prompt, the GGUF's own vocabulary, sampling with a seed repeats */
	CHECK_EQ(t_system("%s run " S260 "source-tinyllamas-stories-260k-f32.gguf -p 'Once upon a time, "
	                  "there was a dog' -n 20 --temp 0.8 --seed 7 > %s 2>/dev/null", bin(), out), 0);
	CHECK_EQ(t_system("%s run " S260 "source-tinyllamas-stories-260k-f32.gguf -p 'Once upon a time, "
	                  "there was a dog' -n 20 --temp 0.8 --seed 7 -j 1 > %s.2 2>/dev/null", bin(), out), 0);
	CHECK_EQ(t_system("cmp -s %s %s.2", out, out), 0);
	text = t_read_file(out, &n);
	REQUIRE(text);
	CHECK(!strncmp(text, "Once upon a time, there was a dog", 33));
	free(text);
}

TEST(lm_cli_eval)
{
	const char *out = t_tmp("out.json");
	char *j;
	size_t n;

	CHECK_EQ(t_system("%s eval " S260 "model.safetensors --text " S260 "tinystories.txt --tokens 256 "
	                  "--ctx 256 --json -j 2 > %s", bin(), out), 0);
	j = t_read_file(out, &n);
	REQUIRE(j);
	CHECK_MSG(strstr(j, "\"perplexity\": 3.739") || strstr(j, "\"perplexity\":3.739"), "%s", j);
	CHECK(strstr(j, "\"scored\": 255") || strstr(j, "\"scored\":255"));
	free(j);
	/* against itself: zero divergence, full agreement */
	CHECK_EQ(t_system("%s eval " S260 "model.safetensors --text " S260 "tinystories.txt --tokens 600 "
	                  "--ctx 128 --score half --against " S260 "source-tinyllamas-stories-260k-f32.gguf "
	                  "> %s", bin(), out), 0);
	j = t_read_file(out, &n);
	REQUIRE(j);
	CHECK_MSG(strstr(j, "4 windows of 128, 252 positions scored") && strstr(j, "100.000 ± 0.000 %") &&
	          strstr(j, "mean 0.0000"), "%s", j);
	free(j);
}

TEST(lm_cli_usage)
{
	const char *err = t_tmp("err.txt");

	CHECK_EQ(t_system("%s run --help > /dev/null", bin()), 0);
	CHECK_EQ(t_system("%s eval --help > /dev/null", bin()), 0);
	CHECK_EQ(t_system("%s run 2> %s", bin(), err), 2);
	CHECK_EQ(t_system("%s run " S260 "model.safetensors --temp -1 2> %s", bin(), err), 2);
	CHECK_EQ(t_system("%s run " S260 "model.safetensors --path int4 2> %s", bin(), err), 2);
	CHECK_EQ(t_system("%s eval " S260 "model.safetensors 2> %s", bin(), err), 2);
	CHECK_EQ(t_system("%s eval " S260 "model.safetensors --text x --score some 2> %s", bin(), err), 2);
	CHECK_EQ(t_system("%s eval " S260 "model.safetensors --text x --ctx 1 2> %s", bin(), err), 2);
	/* failures */
	CHECK_EQ(t_system("%s eval " S260 "model.safetensors --text %s 2> %s", bin(),
	                  t_tmp("none.txt"), err), 1);
	CHECK_EQ(t_system("%s run " S260 "model.safetensors -c 600 -p hello --tokenizer %s 2> %s",
	                  bin(), t_tmp("none.model"), err), 1);
	REQUIRE(t_write_file(t_tmp("short.txt"), "Once upon a time", 16) == 0);
	CHECK_EQ(t_system("%s eval " S260 "model.safetensors --text %s --score half 2> %s", bin(),
	                  t_tmp("short.txt"), err), 1); /* fewer tokens than one window */
	CHECK_EQ(t_system("grep -q 'fewer than one window' %s", err), 0);
}
