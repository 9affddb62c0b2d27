/* tests: formats' MLX directory writer on its own — shards and index,
 * config.json as given, tokenizer copies, a previous output replaced only
 * with force, and write faults that leave nothing. */
#include <errno.h>
#include <stdlib.h>

#include "qtk_formats.h"
#include "test.h"

static qtk_err write_dir(const char *path, int force, const char *copy_from, qtk_status *st)
{
	static const float a[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	static const uint16_t b[4] = { 1, 2, 3, 4 };
	qtk_st_desc d[2] = {
		{ .name = "a.weight", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 2, 4 } },
		{ .name = "b", .dtype = QTK_DT_F16, .ndim = 1, .shape = { 4 } },
	};
	qtk_write_opts wo = { .force = force };
	qtk_mlx_dir *m;

	QTK_TRY(qtk_mlx_dir_open(&m, path, d, 2, &wo, st));
	if (qtk_mlx_dir_put(m, 0, 0, a, 16, st) || qtk_mlx_dir_put(m, 0, 16, a + 4, 16, st) ||
	    qtk_mlx_dir_put(m, 1, 0, b, 8, st)) {
		qtk_mlx_dir_abort(m);
		return st->code;
	}
	return qtk_mlx_dir_commit(m, "{\"model_type\": \"x\"}", 19, copy_from, st);
}

TEST(mlx_dir_shards_index_config_copies)
{
	char src[512], out[512];
	qtk_st_file *f;
	qtk_status st;
	char *text;

	snprintf(src, sizeof src, "%s", t_tmp("src"));
	snprintf(out, sizeof out, "%s", t_tmp("out"));
	REQUIRE(t_system("mkdir -p %s && printf tok > %s/tokenizer.json", src, src) == 0);
	CHECK_EQ(write_dir(out, 0, src, &st), QTK_OK);
	text = t_read_file(t_tmp("out/config.json"), NULL);
	CHECK(text && !strcmp(text, "{\"model_type\": \"x\"}"));
	free(text);
	text = t_read_file(t_tmp("out/tokenizer.json"), NULL);
	CHECK(text && !strcmp(text, "tok"));
	free(text);
	CHECK(!t_exists(t_tmp("out/model.safetensors.index.json")));
	REQUIRE(qtk_st_open(t_tmp("out/model.safetensors"), &f, &st) == QTK_OK);
	CHECK(qtk_st_count(f) == 2 && !strcmp(qtk_st_meta_get(f, "format"), "mlx"));
	qtk_st_close(f);
	/* there: refused without force, replaced with it (a previous output) */
	CHECK_EQ(write_dir(out, 0, NULL, &st), QTK_E_EXISTS);
	/* one tensor per shard */
	setenv("QTK_MLX_SHARD_BYTES", "16", 1);
	CHECK_EQ(write_dir(out, 1, NULL, &st), QTK_OK);
	unsetenv("QTK_MLX_SHARD_BYTES");
	CHECK(t_exists(t_tmp("out/model-00001-of-00002.safetensors")));
	CHECK(t_exists(t_tmp("out/model-00002-of-00002.safetensors")));
	CHECK(!t_exists(t_tmp("out/model.safetensors")));
	CHECK(!t_exists(t_tmp("out/tokenizer.json")));
	text = t_read_file(t_tmp("out/model.safetensors.index.json"), NULL);
	CHECK(text && strstr(text, "\"total_size\": 40") &&
	      strstr(text, "\"b\": \"model-00002-of-00002.safetensors\""));
	free(text);
	/* a checkpoint directory is not replaced */
	CHECK_EQ(write_dir(src, 1, NULL, &st), QTK_E_ARG);
	CHECK_MSG(strstr(st.msg, "not a previous MLX output"), "%s", st.msg);
}

TEST(mlx_dir_write_faults_leave_nothing)
{
	char out[512];
	int fired = 1;

	snprintf(out, sizeof out, "%s", t_tmp("out"));

	for (uint64_t n = 1; fired && n < 100; n++) {
		static const qtk_fault_kind kinds[] = { QTK_FAULT_WRITE, QTK_FAULT_FSYNC,
		                                        QTK_FAULT_RENAME, QTK_FAULT_OPEN };
		fired = 0;
		for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
			qtk_status st;
			qtk_err rc;

			qtk_fault_arm(kinds[k], n, ENOSPC);
			rc = write_dir(out, 0, NULL, &st);
			if (qtk_fault_fired(kinds[k])) {
				fired = 1;
				CHECK_MSG(rc == QTK_E_IO && !t_exists(out) &&
				          t_dir_entries(t_tmpdir()) == 0, "fault %zu/%llu: %s", k,
				          (unsigned long long)n, st.msg);
				/* a file of the directory is named as it would be */
				CHECK_MSG(!strstr(st.msg, ".qtk-tmp-") || strstr(st.msg, "safetensors"),
				          "%s", st.msg);
			} else {
				CHECK_EQ(rc, QTK_OK);
				CHECK_EQ(t_system("rm -rf %s", out), 0);
			}
			qtk_fault_arm(kinds[k], 0, 0);
		}
	}
	CHECK(!fired);
}
