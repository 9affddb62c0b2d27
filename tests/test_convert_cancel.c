/* tests: a cancelled conversion (the flag SIGINT/SIGTERM set, seen by the
 * workers between items, after the output was opened) leaves
 * the output path as it was, for every output format: nothing when there
 * was nothing, the old file or directory byte for byte under --force, and
 * no temporary file or directory beside it. */
#include <stdlib.h>
#include <sys/stat.h>

#include "qtk_convert.h"
#include "test.h"
#include "test_conv_util.h"

static volatile int cancel_flag;

static void cancel_now(void *ctx, size_t done, size_t total, uint64_t b, uint64_t bt,
                       const char *name)
{
	(void)ctx; (void)done; (void)total; (void)b; (void)bt; (void)name;
	cancel_flag = 1;
}

static int convert(const char *out, qtk_out_format fmt, int cancel, qtk_status *st)
{
	qtk_conv_opts o = { .input = t_data("stories260K/model.safetensors"), .output = out,
	                    .format = fmt, .scale_dtype = QTK_DT_F16, .threads = 1,
	                    .chunk_elems = 512, .force = 1 };

	if (cancel) {
		/* raised before the first item (as a signal at any moment would be
		 * seen by the next item): deterministic however fast the run is */
		cancel_flag = 1;
		o.cancel = &cancel_flag;
		o.progress = cancel_now;
	}
	return t_convert(&o, QTK_SCHEME_INT4, 32, NULL, NULL, st);
}

TEST(convert_cancel_every_format_leaves_the_old_output)
{
	static const struct { qtk_out_format fmt; const char *name, *file; } f[] = {
		{ QTK_OUT_QTK, "o.qtk", NULL },
		{ QTK_OUT_GGUF, "o.gguf", NULL },
		{ QTK_OUT_MLX, "o.mlx", "model.safetensors" },
	};
	for (size_t k = 0; k < 3; k++) {
		char out[4096], probe[4200];
		void *before, *after;
		size_t nb = 0, na = 0;
		qtk_status st;

		snprintf(out, sizeof out, "%s", t_tmp(f[k].name));
		/* nothing there: nothing after */
		CHECK_MSG(convert(out, f[k].fmt, 1, &st) == QTK_E_INTERRUPTED, "%s: %s", f[k].name,
		          st.msg);
		CHECK_MSG(!t_exists(out), "%s: output left behind", f[k].name);
		CHECK_EQ(t_dir_entries(t_tmpdir()), 0);
		/* an old output: the same bytes after a cancelled --force run */
		REQUIRE(convert(out, f[k].fmt, 0, &st) == QTK_OK);
		snprintf(probe, sizeof probe, "%s%s%s", out, f[k].file ? "/" : "",
		         f[k].file ? f[k].file : "");
		before = t_read_file(probe, &nb);
		REQUIRE(before);
		CHECK_EQ(convert(out, f[k].fmt, 1, &st), QTK_E_INTERRUPTED);
		after = t_read_file(probe, &na);
		CHECK_MSG(after && na == nb && !memcmp(before, after, nb), "%s: old output changed",
		          f[k].name);
		CHECK_EQ(t_dir_entries(t_tmpdir()), 1); /* the old output only */
		free(before);
		free(after);
		t_system("rm -rf %s", out);
	}
}
