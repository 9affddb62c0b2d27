/* tests: qtk convert — failure safety (NaN input, I/O faults, interruption,
 * existing output, output == input), determinism across thread counts, and
 * the command line. Round-trip accuracy lives in test_convert_e2e.c. */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conv_impl.h"
#include "gen.h"
#include "qtk_convert.h"
#include "qtk_runtime.h"
#include "test.h"

static const char *qtk_bin(void)
{
	const char *b = getenv("QTK_BIN");
	return b && *b ? b : "build/qtk";
}

/* A small float checkpoint: a few 2-D weights and a norm; optionally a NaN
 * at weight 'w1' row 3 col 70. */
static void write_ckpt(const char *path, int with_nan)
{
	qtk_st_desc d[3] = {
		{ .name = "w0", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 64, 256 } },
		{ .name = "w1", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 96, 128 } },
		{ .name = "norm", .dtype = QTK_DT_F32, .ndim = 1, .shape = { 256 } },
	};
	float *a = malloc(64 * 256 * 4), *b = malloc(96 * 128 * 4), *c = malloc(256 * 4);
	const void *data[3] = { a, b, c };
	uint64_t s = 7;
	qtk_status st;

	gen_normal(a, 64 * 256, 0.02f, &s);
	gen_normal(b, 96 * 128, 0.02f, &s);
	for (int i = 0; i < 256; i++)
		c[i] = 1.0f + 0.01f * (float)i;
	if (with_nan)
		b[3 * 128 + 70] = NAN;
	qtk_write_opts wo = { .force = 1 };
	if (qtk_st_write(path, d, data, 3, NULL, &wo, &st) != QTK_OK)
		t_fail_at(__FILE__, __LINE__, "writing %s: %s", path, st.msg);
	free(a);
	free(b);
	free(c);
}

static qtk_recipe *recipe(qtk_scheme_id s, uint32_t g)
{
	qtk_recipe *r = NULL;
	qtk_status st;
	qtk_recipe_new(&r, s, g, &st);
	return r;
}

TEST(convert_nan_weight_leaves_nothing)
{
	const char *in = t_tmp("nan.safetensors"), *out = t_tmp("out.qtk");
	qtk_recipe *r = recipe(QTK_SCHEME_INT4, 32);
	qtk_conv_opts o = { .input = in, .output = out, .recipe = r, .scale_dtype = QTK_DT_F16,
	                    .threads = 2 };
	qtk_conv_report *rep = NULL;
	qtk_status st;

	write_ckpt(in, 1);
	CHECK_EQ(qtk_convert(&o, &rep, &st), QTK_E_Q_NONFINITE);
	CHECK(rep == NULL);
	CHECK_MSG(strstr(st.msg, "w1") && strstr(st.msg, "row 3"), "message: %s", st.msg);
	CHECK_MSG(!strncmp(st.msg, in, strlen(in)), "the file first: %s", st.msg); /* issue 15 */
	CHECK(!t_exists(out));
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1); /* only the input */
	qtk_recipe_free(r);
}

TEST(convert_io_faults_leave_nothing)
{
	const char *in = t_tmp("in.safetensors"), *out = t_tmp("out.qtk");
	qtk_recipe *r = recipe(QTK_SCHEME_INT8, 64);
	qtk_conv_opts o = { .input = in, .output = out, .recipe = r, .scale_dtype = QTK_DT_F16,
	                    .threads = 2, .chunk_elems = 2048 };
	static const qtk_fault_kind kinds[] = { QTK_FAULT_WRITE, QTK_FAULT_FSYNC,
	                                        QTK_FAULT_RENAME, QTK_FAULT_OPEN,
	                                        QTK_FAULT_ALLOC, QTK_FAULT_READ };
	qtk_status st;
	int successes = 0;

	write_ckpt(in, 0);
	for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
		for (uint64_t n = 1; n < 2000; n++) {
			qtk_conv_report *rep = NULL;
			qtk_err rc;

			qtk_fault_arm(kinds[k], n, 28 /* ENOSPC */);
			rc = qtk_convert(&o, &rep, &st);
			qtk_fault_arm(kinds[k], 0, 0);
			if (rc == QTK_OK) {
				CHECK(t_exists(out));
				unlink(out);
				qtk_conv_report_free(rep);
				successes++;
				break;
			}
			CHECK_MSG(!t_exists(out), "fault %d at call %llu left %s", (int)kinds[k],
			          (unsigned long long)n, out);
			if (kinds[k] == QTK_FAULT_READ) /* a source read: named, with the reason */
				CHECK_MSG(rc == QTK_E_IO && strstr(st.msg, in) &&
				          strstr(st.msg, "read failed at byte") &&
				          strstr(st.msg, strerror(28)), "%s", st.msg);
			CHECK_MSG(t_dir_entries(t_tmpdir()) == 1, "fault %d at call %llu left a temporary",
			          (int)kinds[k], (unsigned long long)n);
		}
	}
	CHECK_EQ(successes, 6);
	qtk_recipe_free(r);
}

/* A finished item kept back while another worker puts (pipe_work.c's
 * put_item), here forced for every item: the same bytes in every sink, and
 * write faults on the late puts still leave nothing behind. */
TEST(convert_deferred_puts_same_bytes)
{
	const char *in = t_tmp("in.safetensors"), *a = t_tmp("a.out"), *b = t_tmp("b.out");
	static const qtk_out_format fmts[] = { QTK_OUT_QTK, QTK_OUT_GGUF, QTK_OUT_MLX };
	qtk_recipe *r = recipe(QTK_SCHEME_INT4, 32);
	qtk_status st;

	write_ckpt(in, 0);
	for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
		qtk_conv_opts o = { .input = in, .recipe = r, .format = fmts[f],
		                    .scale_dtype = QTK_DT_F16, .threads = 3, .chunk_elems = 1024,
		                    .force = 1 };
		qtk_conv_report *rep = NULL;
		size_t na, nb;

		o.output = a;
		conv_defer_puts(0);
		CHECK_MSG(qtk_convert(&o, &rep, &st) == QTK_OK, "%s", st.msg);
		qtk_conv_report_free(rep);
		o.output = b;
		conv_defer_puts(1);
		CHECK_MSG(qtk_convert(&o, &rep, &st) == QTK_OK, "%s", st.msg);
		qtk_conv_report_free(rep);
		if (fmts[f] == QTK_OUT_MLX) { /* a directory: its weights */
			char pa[4096], pb[4096];
			snprintf(pa, sizeof pa, "%s/model.safetensors", a);
			snprintf(pb, sizeof pb, "%s/model.safetensors", b);
			char *x = t_read_file(pa, &na), *y = t_read_file(pb, &nb);
			CHECK_MSG(x && y && na == nb && !memcmp(x, y, na), "format %d differs", (int)f);
			free(x);
			free(y);
		} else {
			char *x = t_read_file(a, &na), *y = t_read_file(b, &nb);
			CHECK_MSG(x && y && na == nb && !memcmp(x, y, na), "format %d differs", (int)f);
			free(x);
			free(y);
		}
		t_system("rm -rf %s %s", a, b);
	}
	/* a write fault at any put, the late ones included */
	{
		qtk_conv_opts o = { .input = in, .output = a, .recipe = r,
		                    .scale_dtype = QTK_DT_F16, .threads = 2, .chunk_elems = 1024 };
		int ok = 0;
		for (uint64_t n = 1; n < 200 && !ok; n++) {
			qtk_conv_report *rep = NULL;
			qtk_fault_arm(QTK_FAULT_WRITE, n, 28 /* ENOSPC */);
			qtk_err rc = qtk_convert(&o, &rep, &st);
			qtk_fault_arm(QTK_FAULT_WRITE, 0, 0);
			if (rc == QTK_OK) {
				ok = 1;
				qtk_conv_report_free(rep);
				unlink(a);
				break;
			}
			CHECK_MSG(rc == QTK_E_IO && !t_exists(a), "write fault %llu: %s",
			          (unsigned long long)n, st.msg);
			CHECK_MSG(t_dir_entries(t_tmpdir()) == 1, "write fault %llu left a temporary",
			          (unsigned long long)n);
		}
		CHECK(ok);
	}
	conv_defer_puts(0);
	qtk_recipe_free(r);
}

/* Sources are read through a per-thread stage that keeps bytes beyond the
 * piece asked for: a second source opened on the same thread after the
 * first is closed (likely the same descriptor number; the same tensor
 * names and offsets) must not be served the first one's bytes. */
TEST(convert_staged_reads_follow_the_source)
{
	const char *a = t_tmp("a.safetensors"), *b = t_tmp("b.safetensors");
	float *x = malloc(64 * 256 * sizeof *x);
	qtk_status st;
	src *s;

	REQUIRE(x);
	write_ckpt(a, 0);
	write_ckpt(b, 0);
	{ /* b: other values in w0, same layout */
		qtk_st_file *f;
		float v = 0.5f;
		REQUIRE(qtk_st_open(b, &f, &st) == QTK_OK);
		uint64_t off = qtk_st_get(f, 0)->file_offset;
		REQUIRE(!strcmp(qtk_st_get(f, 0)->name, "w0"));
		qtk_st_close(f);
		FILE *fp = fopen(b, "r+b");
		REQUIRE(fp && fseek(fp, (long)off, SEEK_SET) == 0);
		for (int i = 0; i < 64; i++)
			REQUIRE(fwrite(&v, 4, 1, fp) == 1);
		fclose(fp);
	}
	for (int k = 0; k < 2; k++) {
		REQUIRE(src_open(&s, k ? b : a, &st) == QTK_OK);
		REQUIRE(s->t[0].staged && !strcmp(s->t[0].name, "w0"));
		/* the whole tensor ahead, then one piece of it from the stage */
		CHECK_EQ(src_read_f32_at(s, &s->t[0], 0, 16, 64 * 256, x, NULL, &st), QTK_OK);
		CHECK_EQ(src_read_f32_at(s, &s->t[0], 16, 64 * 256 - 16, 0, x + 16, NULL, &st),
		         QTK_OK);
		CHECK_MSG(k ? x[0] == 0.5f && x[63] == 0.5f && x[64] != 0.5f : x[0] != 0.5f,
		          "source %d: %g %g %g", k, (double)x[0], (double)x[63], (double)x[64]);
		/* raw bytes: the file's, in stage-sized runs */
		for (uint64_t o = 0; o < s->t[0].nbytes;) {
			const uint8_t *rb;
			size_t n;
			REQUIRE(src_read_raw(s, &s->t[0], o, s->t[0].nbytes, &rb, &n, &st) == QTK_OK);
			REQUIRE(n > 0 && o + n <= s->t[0].nbytes);
			CHECK(!memcmp(rb, s->t[0].data + o, n));
			o += n;
		}
		/* against the mapping */
		for (int i = 0; i < 64 * 256; i++)
			if (memcmp(&x[i], s->t[0].data + 4 * i, 4)) {
				CHECK_MSG(0, "source %d: element %d differs from the file", k, i);
				break;
			}
		src_close(s);
	}
	free(x);
}

/* A source that shrinks while it is read (another program rewriting it):
 * the staged read says so, naming the file; the mapping would have died
 * of SIGBUS on the missing pages. */
TEST(convert_staged_read_of_a_shrunk_source)
{
	const char *a = t_tmp("a.safetensors");
	float *x = malloc(64 * 256 * sizeof *x);
	qtk_status st;
	src *s;

	REQUIRE(x);
	write_ckpt(a, 0);
	REQUIRE(src_open(&s, a, &st) == QTK_OK);
	REQUIRE(s->t[0].staged);
	REQUIRE(truncate(a, (off_t)(s->t[0].file_offset + 1000)) == 0);
	CHECK_EQ(src_read_f32_at(s, &s->t[0], 0, 64 * 256, 0, x, NULL, &st), QTK_E_IO);
	CHECK_MSG(strstr(st.msg, a) && strstr(st.msg, "changed while being read"), "%s", st.msg);
	/* raw copies (kept tensors) read the same way */
	for (size_t i = 0; i < s->n; i++) {
		const uint8_t *b;
		size_t n;
		REQUIRE(s->t[i].preadable);
		CHECK_EQ(src_read_raw(s, &s->t[i], 0, s->t[i].nbytes, &b, &n, &st), QTK_E_IO);
		CHECK_MSG(strstr(st.msg, a), "%s", st.msg);
	}
	src_close(s);
	free(x);
}

/* An output in memory (tmpfs: no fallocate, only a free-space check) is
 * the same file as on the disk. */
TEST(convert_output_in_memory_same_bytes)
{
	const char *in = t_tmp("in.safetensors"), *disk = t_tmp("disk.qtk");
	char shm[64];
	qtk_recipe *r = recipe(QTK_SCHEME_INT4, 32);
	qtk_status st;
	void *a, *b;
	size_t na = 0, nb = 0;

	if (access("/dev/shm", W_OK) != 0)
		SKIP("/dev/shm is not writable here");
	snprintf(shm, sizeof shm, "/dev/shm/qtk-test-%d.qtk", (int)getpid());
	write_ckpt(in, 0);
	for (int k = 0; k < 2; k++) {
		qtk_conv_opts o = { .input = in, .output = k ? shm : disk, .recipe = r,
		                    .scale_dtype = QTK_DT_F16, .threads = 2, .force = 1 };
		qtk_conv_report *rep = NULL;
		CHECK_MSG(qtk_convert(&o, &rep, &st) == QTK_OK, "%s", st.msg);
		qtk_conv_report_free(rep);
	}
	a = t_read_file(disk, &na);
	b = t_read_file(shm, &nb);
	unlink(shm);
	CHECK(a && b && na == nb && !memcmp(a, b, na));
	free(a);
	free(b);
	qtk_recipe_free(r);
}

TEST(convert_byte_identical_across_threads)
{
	const char *in = t_tmp("in.safetensors");
	qtk_recipe *r = recipe(QTK_SCHEME_NF4, 32);
	qtk_status st;
	void *a, *b;
	size_t na = 0, nb = 0;

	write_ckpt(in, 0);
	for (int j = 1; j <= 3; j++) {
		qtk_conv_opts o = { .input = in, .output = t_tmp(j == 1 ? "j1.qtk" : "jn.qtk"),
		                    .recipe = r, .scale_dtype = QTK_DT_F16, .threads = j,
		                    .chunk_elems = 1024, .search = 1, .force = 1 };
		qtk_conv_report *rep = NULL;
		REQUIRE(qtk_convert(&o, &rep, &st) == QTK_OK);
		qtk_conv_report_free(rep);
		if (j == 1)
			continue;
		a = t_read_file(t_tmp("j1.qtk"), &na);
		b = t_read_file(t_tmp("jn.qtk"), &nb);
		REQUIRE(a && b);
		CHECK_EQ(na, nb);
		CHECK_MSG(na == nb && memcmp(a, b, na) == 0, "-j 1 and -j %d differ", j);
		free(a);
		free(b);
	}
	qtk_recipe_free(r);
}

static volatile int cancel_flag;

static void cancel_on_first(void *ctx, size_t done, size_t total, uint64_t b, uint64_t bt,
                            const char *name)
{
	(void)ctx; (void)done; (void)total; (void)b; (void)bt; (void)name;
	cancel_flag = 1;
}

TEST(convert_cancel_leaves_nothing)
{
	const char *in = t_tmp("in.safetensors"), *out = t_tmp("out.qtk");
	qtk_recipe *r = recipe(QTK_SCHEME_INT4, 32);
	qtk_conv_opts o = { .input = in, .output = out, .recipe = r, .scale_dtype = QTK_DT_F16,
	                    .threads = 1, .chunk_elems = 1024, .cancel = &cancel_flag,
	                    .progress = cancel_on_first };
	qtk_conv_report *rep = NULL;
	qtk_status st;

	write_ckpt(in, 0);
	/* raised before the run: the workers see it at their first item, however
	 * fast the machine (set from the progress callback instead, a small job
	 * could finish before the first callback) */
	cancel_flag = 1;
	CHECK_EQ(qtk_convert(&o, &rep, &st), QTK_E_INTERRUPTED);
	CHECK(!t_exists(out));
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
	qtk_recipe_free(r);
}

TEST(convert_cli_refusals)
{
	char in[4096], out[4096]; /* t_tmp returns a ring of buffers: copy */
	const char *q = qtk_bin();

	snprintf(in, sizeof in, "%s", t_tmp("in.safetensors"));
	snprintf(out, sizeof out, "%s", t_tmp("out.qtk"));

	write_ckpt(in, 0);
	CHECK_EQ(t_system("%s convert --help > /dev/null", q), 0);
	CHECK_EQ(t_system("%s convert %s 2>/dev/null", q, in), 2);                 /* no -o */
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int3 2>/dev/null", q, in, out), 2);
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int4 --group 48 2>/dev/null", q, in, out), 2);
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int4 --bogus 2>/dev/null", q, in, out), 2);
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int4-affine --affine-rule q4 2>%s", q, in,
	                  out, t_tmp("err")), 2);
	{
		char *err = t_read_file(t_tmp("err"), NULL);
		CHECK(err && strstr(err, "unknown affine rule 'q4'"));
		free(err);
	}
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int4 -q", q, in, out), 0);
	CHECK(t_exists(out));
	/* existing output: refused without --force, replaced with it */
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int8 -q 2>%s", q, in, out, t_tmp("err")), 1);
	{
		char *err = t_read_file(t_tmp("err"), NULL);
		CHECK(err && strstr(err, "exists") && strstr(err, "--force"));
		free(err);
	}
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int8 -q --force", q, in, out), 0);
	/* the output may not be the input */
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int8 -q --force 2>/dev/null", q, in, in), 1);
	CHECK(t_exists(in));
	/* double quantization of a scheme GGUF cannot hold: refused, nothing written */
	CHECK_EQ(t_system("%s convert %s -o %s -F gguf --scheme nf4 --double-quant -q 2>%s", q, in,
	                  t_tmp("o3.qtk"), t_tmp("err")), 1);
	{
		char *err = t_read_file(t_tmp("err"), NULL);
		CHECK(err && strstr(err, "GGUF cannot hold"));
		free(err);
	}
	CHECK(!t_exists(t_tmp("o3.qtk")));
	unlink(t_tmp("err"));
	/* missing input */
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int8 -q 2>/dev/null", q,
	                  t_tmp("none.safetensors"), t_tmp("o2.qtk")), 1);
	CHECK(!t_exists(t_tmp("o2.qtk")));
	unlink(out);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
}

TEST(convert_cli_dry_run_and_json)
{
	const char *in = t_tmp("in.safetensors"), *out = t_tmp("out.qtk");
	const char *q = qtk_bin();
	char *text;

	write_ckpt(in, 0);
	CHECK_EQ(t_system("%s convert %s --dry-run --scheme int4 --group 32 --keep w1 > %s", q, in,
	                  t_tmp("plan.txt")), 0);
	text = t_read_file(t_tmp("plan.txt"), NULL);
	REQUIRE(text);
	CHECK(strstr(text, "w0") && strstr(text, "int4/g32") && strstr(text, "--keep"));
	CHECK(strstr(text, "bits/weight"));
	CHECK(strstr(text, "default: 1-D, kept"));
	free(text);
	CHECK(!t_exists(out));
	CHECK_EQ(t_system("%s convert %s -o %s --scheme nf4 --json > %s", q, in, out,
	                  t_tmp("r.json")), 0);
	text = t_read_file(t_tmp("r.json"), NULL);
	REQUIRE(text);
	CHECK(strstr(text, "\"bits_per_weight\"") && strstr(text, "\"rel_fro\""));
	CHECK(strstr(text, "\"peak_rss_bytes\""));
	free(text);
	/* inspect summarizes the metadata convert wrote */
	CHECK_EQ(t_system("%s inspect %s > %s", q, out, t_tmp("i.txt")), 0);
	text = t_read_file(t_tmp("i.txt"), NULL);
	REQUIRE(text);
	CHECK_MSG(strstr(text, "  source: safetensors in.safetensors (") &&
	          strstr(text, "crc32 ") && strstr(text, "  recipe: scheme nf4") &&
	          strstr(text, "  error statistics: ") && strstr(text, "worst relative error"),
	          "inspect: %s", text);
	free(text);
}

/* A model directory holding other .safetensors files beside the weights
 * converts, reading the file a Hugging Face loader reads, and says which:
 * a line on stderr, "resolved" in --json, "read ..." in inspect. */
TEST(convert_cli_directory_says_which_file)
{
	const char *q = qtk_bin();
	char dir[512], want[1200], *text;

	snprintf(dir, sizeof dir, "%s", t_tmp("model"));
	t_system("mkdir -p '%s'", dir);
	write_ckpt(t_tmp("model/model.safetensors"), 0);
	write_ckpt(t_tmp("model/consolidated.safetensors"), 1); /* a NaN: must not be read */
	t_system("cp tests/data/stories260K/reference_logits.safetensors '%s'", dir);
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int8 --json > %s 2> %s", q, dir,
	                  t_tmp("out.qtk"), t_tmp("r.json"), t_tmp("err.txt")), 0);
	snprintf(want, sizeof want, "qtk: reading %s/model.safetensors (picked in directory %s)\n",
	         dir, dir);
	text = t_read_file(t_tmp("err.txt"), NULL);
	CHECK_MSG(text && strstr(text, want), "stderr: %s", text ? text : "(none)");
	free(text);
	snprintf(want, sizeof want, "\"resolved\": \"%s/model.safetensors\"", dir);
	text = t_read_file(t_tmp("r.json"), NULL);
	CHECK_MSG(text && strstr(text, want), "json: %s", text ? text : "(none)");
	free(text);
	/* --quiet: no line */
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int8 -q --force 2> %s", q, dir,
	                  t_tmp("out.qtk"), t_tmp("err.txt")), 0);
	text = t_read_file(t_tmp("err.txt"), NULL);
	CHECK(text && !*text);
	free(text);
	snprintf(want, sizeof want, "  read %s/model.safetensors (picked in the directory)", dir);
	CHECK_EQ(t_system("%s inspect %s > %s", q, dir, t_tmp("i.txt")), 0);
	text = t_read_file(t_tmp("i.txt"), NULL);
	CHECK_MSG(text && strstr(text, want), "inspect: %s", text ? text : "(none)");
	free(text);
	/* the stories260K directory (model.safetensors beside its f16/bf16
	 * variants and reference logits) was refused before */
	CHECK_EQ(t_system("%s convert tests/data/stories260K --dry-run --json --scheme int4 > %s "
	                  "2> %s", q, t_tmp("s.json"), t_tmp("err.txt")), 0);
	text = t_read_file(t_tmp("s.json"), NULL);
	CHECK(text && strstr(text, "\"resolved\": \"tests/data/stories260K/model.safetensors\""));
	free(text);
	/* two unnamed files: refused naming both, nothing written */
	t_system("rm -f '%s/model.safetensors' '%s/reference_logits.safetensors'", dir, dir);
	write_ckpt(t_tmp("model/other.safetensors"), 0);
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int8 2> %s", q, dir, t_tmp("out2.qtk"),
	                  t_tmp("err.txt")), 1);
	text = t_read_file(t_tmp("err.txt"), NULL);
	CHECK_MSG(text && strstr(text, "consolidated.safetensors, other.safetensors; name one"),
	          "stderr: %s", text ? text : "(none)");
	free(text);
	CHECK(!t_exists(t_tmp("out2.qtk")));
}

/* Start a deliberately slow conversion (tiny chunks, one thread, search)
 * in a child process; its stderr goes to /dev/null. */
static pid_t spawn_slow_convert(const char *in, const char *out)
{
	pid_t pid = fork();

	if (pid == 0) {
		if (!freopen("/dev/null", "w", stderr))
			_exit(126);
		execl(qtk_bin(), "qtk", "convert", in, "-o", out, "--scheme", "int4",
		      "--search", "-j", "1", "--chunk", "1024", "-q", "--force", (char *)NULL);
		_exit(127);
	}
	return pid;
}

TEST(convert_cli_sigint_leaves_nothing)
{
	/* big enough that conversion takes a while with tiny chunks on 1 thread */
	const char *in = t_tmp("big.safetensors"), *out = t_tmp("out.qtk");
	qtk_status st;
	int interrupted = 0;

	REQUIRE(gen_llama_like(in, QTK_DT_BF16, 256, 512, 16u << 20, 3, &st) > 0);
	for (int delay_ms = 20; delay_ms <= 640 && !interrupted; delay_ms *= 2) {
		pid_t pid = spawn_slow_convert(in, out);
		int status;

		usleep((useconds_t)delay_ms * 1000);
		kill(pid, SIGINT);
		waitpid(pid, &status, 0);
		if (WIFSIGNALED(status)) {
			/* before the handler was installed: nothing was created yet */
			CHECK_EQ(WTERMSIG(status), SIGINT);
			CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
			continue;
		}
		if (WEXITSTATUS(status) == 130) {
			interrupted = 1;
			CHECK(!t_exists(out));
			CHECK_EQ(t_dir_entries(t_tmpdir()), 1);
		} else {
			CHECK_EQ(WEXITSTATUS(status), 0); /* finished before the signal */
			unlink(out);
		}
	}
	CHECK_MSG(interrupted, "conversion was never interrupted");
}

TEST(convert_sigkill_then_rerun_cleans_up)
{
	const char *in = t_tmp("big.safetensors"), *out = t_tmp("out.qtk");
	qtk_status st;
	int killed_mid = 0;

	REQUIRE(gen_llama_like(in, QTK_DT_BF16, 256, 512, 16u << 20, 3, &st) > 0);
	for (int delay_ms = 20; delay_ms <= 640 && !killed_mid; delay_ms *= 2) {
		pid_t pid = spawn_slow_convert(in, out);
		int status;

		usleep((useconds_t)delay_ms * 1000);
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		if (WIFSIGNALED(status)) {
			/* no half-written output; at most the temporary */
			CHECK(!t_exists(out));
			killed_mid = t_dir_entries(t_tmpdir()) == 2;
		}
		unlink(out);
	}
	REQUIRE(killed_mid);
	/* the next run removes the dead writer's temporary */
	CHECK_EQ(t_system("%s convert %s -o %s --scheme int8 -q", qtk_bin(), in, out), 0);
	CHECK_EQ(t_dir_entries(t_tmpdir()), 2);
}

TEST(convert_empty_tensors)
{
	/* zero-element tensors, even ones a rule quantizes, convert to empty planes */
	qtk_st_desc d[3] = {
		{ .name = "e0", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 4, 0 } },
		{ .name = "e1", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 0, 64 } },
		{ .name = "w", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 64, 64 } },
	};
	float *w = calloc(64 * 64, sizeof(float));
	const void *data[3] = { NULL, NULL, w };
	qtk_write_opts wo = { .force = 1 };
	qtk_recipe *r = recipe(QTK_SCHEME_INT4, 32);
	qtk_conv_opts o = { .input = t_tmp("e.safetensors"), .output = t_tmp("e.qtk"),
	                    .recipe = r, .scale_dtype = QTK_DT_F16, .threads = 2 };
	qtk_conv_report *rep = NULL;
	qtk_rt_model *m = NULL;
	qtk_status st;

	REQUIRE(w && r);
	REQUIRE(qtk_st_write(t_tmp("e.safetensors"), d, data, 3, NULL, &wo, &st) == QTK_OK);
	REQUIRE(qtk_recipe_add_set(r, "e*=int4", &st) == QTK_OK);
	CHECK_EQ(qtk_convert(&o, &rep, &st), QTK_OK);
	CHECK_EQ(qtk_rt_open(t_tmp("e.qtk"), QTK_RT_VERIFY, &m, &st), QTK_OK);
	CHECK(m && qtk_rt_count(m) == 3);
	CHECK(m && qtk_rt_find(m, "e0")->scheme == QTK_SCHEME_INT4);
	qtk_rt_close(m);
	qtk_conv_report_free(rep);
	qtk_recipe_free(r);
	free(w);
}
