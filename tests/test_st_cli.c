/* tests: `qtk inspect` on safetensors — text, --json, exit codes. */
#include <stdlib.h>

#include "test.h"

static const char *bin(void)
{
	const char *b = getenv("QTK_BIN");
	return b ? b : "build/qtk";
}

TEST(st_cli_inspect)
{
	if (!t_exists(bin()))
		SKIP("%s not built", bin());
	const char *out = t_tmp("out.txt"), *err = t_tmp("err.txt");
	CHECK_EQ(t_system("%s inspect tests/data/stories260K/model.bf16.safetensors > %s", bin(), out), 0);
	size_t n;
	char *s = t_read_file(out, &n);
	REQUIRE(s);
	CHECK(strstr(s, "47 tensors, 260032 elements, 520064 bytes") != NULL);
	CHECK(strstr(s, "model.embed_tokens.weight") != NULL);
	free(s);
	CHECK_EQ(t_system("%s inspect --json tests/data/stories260K/reference_logits.safetensors > %s",
	                  bin(), out), 0);
	s = t_read_file(out, &n);
	REQUIRE(s);
	CHECK(strstr(s, "\"tensor_count\": 2") != NULL);
	CHECK(strstr(s, "\"ppl\": \"3.7395578081734975\"") != NULL);
	CHECK(strstr(s, "\"name\": \"logits\"") != NULL);
	free(s);
	CHECK_EQ(t_system("%s inspect --help > %s", bin(), out), 0);
	CHECK_EQ(t_system("%s inspect 2> %s", bin(), err), 2);
	CHECK_EQ(t_system("%s inspect --bogus x 2> %s", bin(), err), 2);
	t_write_file(t_tmp("bad.safetensors"), "\x02\0\0\0\0\0\0\0[]", 10);
	CHECK_EQ(t_system("%s inspect %s > %s 2> %s", bin(), t_tmp("bad.safetensors"), out, err), 1);
	s = t_read_file(err, &n);
	REQUIRE(s);
	CHECK(strstr(s, "bad.safetensors") != NULL);
	free(s);
	s = t_read_file(out, &n);
	CHECK(s && n == 0); /* nothing on stdout on failure */
	free(s);
}
