/* tests: allocation faults on the JSON-heavy paths. jansson allocates
 * through qtk_malloc (formats/fileio.c), so failing the Nth allocation for
 * every N reaches the recipe file's parse, the safetensors header, the
 * config.json read for GGUF and MLX, the .qtk metadata built and checked,
 * and the MLX config.json written. Each failure must be QTK_E_NOMEM with no
 * output and no temporary left (make check: no leak); the run after the
 * last N must give the bytes of an undisturbed run. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gen.h"
#include "qtk_convert.h"
#include "test.h"

static const char recipe_text[] =
	"{\"scheme\": \"int4\", \"group\": 32, \"description\": \"json faults\",\n"
	" \"rules\": [{\"match\": \"*.v_proj.weight\", \"wider\": true},\n"
	"           {\"match\": \"*.down_proj.weight\", \"scheme\": \"int8\"},\n"
	"           {\"match\": \"lm_head.weight\", \"keep\": true}],\n"
	" \"preset\": \"mixed\"}\n";

/* One conversion of dir to out in format fmt with the recipe file; the
 * recipe is loaded inside, so its parse is swept too. */
static qtk_err run(const char *dir, const char *rfile, const char *out, qtk_out_format fmt,
                   qtk_status *st)
{
	qtk_recipe *r = NULL;
	qtk_conv_report *rep = NULL;
	qtk_err rc = qtk_recipe_new(&r, (qtk_scheme_id)qtk_q_scheme_from_name("int8"), 32, st);

	if (!rc)
		rc = qtk_recipe_load(r, rfile, 0, 0, st);
	if (!rc) {
		qtk_conv_opts o = { .input = dir, .output = out, .format = fmt, .recipe = r,
		                    .scale_dtype = QTK_DT_F16, .threads = 2, .force = 1 };
		rc = qtk_convert(&o, &rep, st);
	}
	qtk_conv_report_free(rep);
	qtk_recipe_free(r);
	return rc;
}

/* The output's bytes (a file, or an MLX directory's config.json and
 * model.safetensors one after the other). */
static void *output_bytes(const char *out, qtk_out_format fmt, size_t *n)
{
	char p[600];
	size_t a = 0, b = 0;
	void *x, *y;
	char *both;

	if (fmt != QTK_OUT_MLX)
		return t_read_file(out, n);
	snprintf(p, sizeof p, "%s/config.json", out);
	x = t_read_file(p, &a);
	snprintf(p, sizeof p, "%s/model.safetensors", out);
	y = t_read_file(p, &b);
	both = x && y ? malloc(a + b) : NULL;
	if (both) {
		memcpy(both, x, a);
		memcpy(both + a, y, b);
		*n = a + b;
	}
	free(x);
	free(y);
	return both;
}

static void sweep(qtk_out_format fmt, const char *name)
{
	const char *dir = t_tmp("model"), *rfile = t_tmp("recipe.json");
	const char *ref = t_tmp(fmt == QTK_OUT_MLX ? "ref-mlx" : "ref.out");
	const char *out = t_tmp(fmt == QTK_OUT_MLX ? "out-mlx" : "out.out");
	qtk_status st;
	size_t nref = 0, nout = 0, failures = 0;
	int done = 0, entries;
	void *want, *got;

	if (!t_exists(dir)) {
		REQUIRE(mkdir(dir, 0755) == 0);
		REQUIRE(gen_llama_model(dir, QTK_DT_F32, 64, 96, 1, 64, 4, 7, &st) > 0);
		REQUIRE(t_write_file(rfile, recipe_text, sizeof recipe_text - 1) == 0);
	}
	CHECK_MSG(run(dir, rfile, ref, fmt, &st) == QTK_OK, "%s: %s", name, st.msg);
	want = output_bytes(ref, fmt, &nref);
	REQUIRE(want);
	entries = t_dir_entries(t_tmpdir());
	for (uint64_t nth = 1; nth < 100000 && !done; nth++) {
		qtk_err rc;

		qtk_fault_arm(QTK_FAULT_ALLOC, nth, 0);
		rc = run(dir, rfile, out, fmt, &st);
		done = !qtk_fault_fired(QTK_FAULT_ALLOC);
		qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
		if (done) {
			CHECK_MSG(rc == QTK_OK, "%s: %s", name, st.msg);
			break;
		}
		if (rc == QTK_OK) {
			/* only a failure after the rename is absorbed (the parent
			 * directory's fsync is best effort): the output is complete */
			got = output_bytes(out, fmt, &nout);
			CHECK_MSG(got && nout == nref && !memcmp(got, want, nref),
			          "%s: allocation %llu: absorbed, but the output differs", name,
			          (unsigned long long)nth);
			free(got);
			CHECK(t_system("rm -rf '%s'", out) == 0);
			continue;
		}
		CHECK_MSG(rc == QTK_E_NOMEM, "%s: allocation %llu: got %s: %s", name,
		          (unsigned long long)nth, qtk_err_name(rc), st.msg);
		CHECK_MSG(!t_exists(out), "%s: allocation %llu left %s", name,
		          (unsigned long long)nth, out);
		CHECK_MSG(t_dir_entries(t_tmpdir()) == entries, "%s: allocation %llu left a "
		          "temporary", name, (unsigned long long)nth);
		failures++;
		if (t_failed())
			break;
	}
	CHECK(done && failures > 100);
	got = output_bytes(out, fmt, &nout);
	CHECK_MSG(got && nout == nref && !memcmp(got, want, nref), "%s: output differs", name);
	printf("    %s: %zu allocations failed in turn\n", name, failures);
	free(want);
	free(got);
}

TEST(json_alloc_faults_qtk_metadata)
{
	sweep(QTK_OUT_QTK, "qtk");
}

TEST(json_alloc_faults_gguf_config)
{
	sweep(QTK_OUT_GGUF, "gguf");
}

TEST(json_alloc_faults_mlx_config)
{
	sweep(QTK_OUT_MLX, "mlx");
}
