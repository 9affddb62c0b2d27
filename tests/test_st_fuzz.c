/* tests: every seed (and past crash) of the safetensors fuzz target runs
 * through fuzz_st_one in the normal suite, so regressions show up without
 * clang or libFuzzer. */
#include <dirent.h>
#include <stdlib.h>

#include "test.h"

int fuzz_st_one(const uint8_t *data, size_t size);

TEST(st_fuzz_seeds_regression)
{
	const char *dir = "tests/fuzz/seeds/st";
	DIR *d = opendir(dir);
	REQUIRE(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char p[512];
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		size_t len;
		uint8_t *b = t_read_file(p, &len);
		CHECK_MSG(b != NULL, "cannot read %s", p);
		if (b)
			CHECK_EQ(fuzz_st_one(b, len), 0);
		free(b);
		n++;
	}
	closedir(d);
	CHECK_MSG(n >= 10, "only %d seeds in %s", n, dir);
}
