/* convert: `qtk convert` — option parsing, progress bar, signals, report. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static volatile int interrupted;

static void on_signal(int sig)
{
	/* remove temporaries now: a second signal would kill us outright */
	qtk_fmt_remove_temps();
	interrupted = sig;
}

/* "auto, none, mixed, flux, ..." from the preset table (its families are
 * the model-family table's rows that have one); with dflt, auto is marked
 * the default. */
static const char *preset_list(int dflt)
{
	static char buf[512];
	const char *const *p = qtk_recipe_presets();
	size_t k = (size_t)snprintf(buf, sizeof buf, dflt ? "auto (default)" : "auto");

	for (; *p && k < sizeof buf; p++)
		k += (size_t)snprintf(buf + k, sizeof buf - k, ", %s", *p);
	return buf;
}

static void convert_usage(FILE *f)
{
	fprintf(f,
"Usage: qtk convert INPUT -o OUTPUT --scheme SCHEME [OPTIONS]\n\n"
"Convert a checkpoint (a .safetensors file, a *.safetensors.index.json, a\n"
"model directory, or a GGUF file) into a packed .qtk file, a GGUF file\n"
"or an MLX directory, streaming with bounded memory. In a directory qtk\n"
"reads what Hugging Face loaders read: model.safetensors, else its index,\n"
"else diffusion_pytorch_model.safetensors.index.json, else that file, else\n"
"the only index or .safetensors file; it says which on stderr.\n\n"
"  -o, --output PATH        output file, or directory for mlx (required\n"
"                           unless --dry-run)\n"
"  -F, --format FMT         qtk (default), gguf (Q8_0/Q4_0/Q4_1: int8, int4,\n"
"                           int4-affine at group 32; f16/bf16/f32) or mlx (a\n"
"                           directory: int4/int8 sym or affine at group\n"
"                           32/64/128 as MLX affine weight/scales/biases)\n"
"  -s, --scheme SCHEME      int8, int4, int4-affine, int8-affine, nf4, f16, bf16, f32\n"
"  -g, --group N            group size: 32, 64, 128 (default 64) or 'row'\n"
"      --scale-dtype T      f16 (default), bf16 or f32 for scales and biases\n"
"                           (given: a scale it cannot hold fails; the default\n"
"                           goes f32 for that tensor, with a note)\n"
"      --double-quant       nf4: 8-bit group scales in blocks of 256 (bitsandbytes)\n"
"      --affine-rule R      int4/int8-affine parameters: ggml (Q4_1: min and\n"
"                           range) or mlx (mx.quantize's); default mlx for\n"
"                           --format mlx, ggml otherwise\n"
"  -r, --recipe FILE        JSON rules (docs/recipes.md)\n");
	fprintf(f, "  -p, --preset NAME        %s\n", preset_list(1));
	fprintf(f,
"  -k, --keep PATTERN       keep matching tensors at source precision\n"
"      --set PATTERN=SCHEME[:GROUP]  store matching tensors with SCHEME\n"
"      --search             data-free scale search instead of round-to-nearest\n"
"      --calib STATS        activation statistics (qtk calibrate, llama.cpp\n"
"                           imatrix GGUF or .dat, or one importance vector\n"
"                           per weight): calibrated search (docs/calibration.md)\n"
"      --calib-mode M       weighted (default: channels weighted by mean x^2)\n"
"                           or gptq (needs X^T X: qtk calibrate --xtx)\n"
"      --act-order          gptq: columns by decreasing Hessian diagonal\n"
"                           (the default; --no-act-order: in file order)\n"
"      --static-groups      gptq: group scales from the original weights\n"
"                           (act-order implies it)\n"
"      --damp X             gptq: damping, a fraction of mean(diag H) (0.01)\n"
"      --refit N            gptq: after the sweep, refit each row's group\n"
"                           scales to GPTQ's objective with the codes fixed,\n"
"                           N conjugate-gradient steps (default 4; 0: off)\n"
"  -j, --threads N          worker threads (default: all cores)\n"
"      --chunk N            elements per work item (default 1048576)\n"
"  -n, --dry-run            print the plan; write nothing\n"
"      --json               print the summary (or plan) as JSON on stdout\n"
"  -f, --force              replace an existing output (a regular file, or a\n"
"                           previous MLX output; never a FIFO, device, link)\n"
"  -v, --verbose            one line per tensor on stderr\n"
"  -q, --quiet              no progress bar and no summary\n"
"  -h, --help               show this help\n\n"
"Rules apply in this order, first match wins: --set and --keep (in the order\n"
"given), the recipe file, the preset; then the defaults (integer, 1-D and\n"
"<= 1024-element tensors and rows shorter than 32 are kept).\n"
"A finite value a type you chose cannot hold (f16/bf16: beyond 65504 or\n"
"3.39e38) fails naming file, tensor and position; where qtk chose the type\n"
"(GGUF's f16 fallback, default f16 scales) the tensor goes f32, with a note.\n"
"Exit status: 0 success, 1 failure, 2 usage error, 130 interrupted.\n");
}

enum { OPT_SET = 256, OPT_SEARCH, OPT_CALIB, OPT_JSON, OPT_CHUNK, OPT_SCALE,
       OPT_DQ, OPT_AFFINE_RULE, OPT_CALIB_MODE, OPT_ACT_ORDER, OPT_STATIC_GROUPS, OPT_DAMP,
       OPT_REFIT, OPT_NO_ACT_ORDER };

static const struct option long_opts[] = {
	{ "output", required_argument, NULL, 'o' },
	{ "format", required_argument, NULL, 'F' },
	{ "scheme", required_argument, NULL, 's' },
	{ "group", required_argument, NULL, 'g' },
	{ "recipe", required_argument, NULL, 'r' },
	{ "preset", required_argument, NULL, 'p' },
	{ "keep", required_argument, NULL, 'k' },
	{ "set", required_argument, NULL, OPT_SET },
	{ "search", no_argument, NULL, OPT_SEARCH },
	{ "calib", required_argument, NULL, OPT_CALIB },
	{ "calib-mode", required_argument, NULL, OPT_CALIB_MODE },
	{ "act-order", no_argument, NULL, OPT_ACT_ORDER },
	{ "no-act-order", no_argument, NULL, OPT_NO_ACT_ORDER },
	{ "static-groups", no_argument, NULL, OPT_STATIC_GROUPS },
	{ "damp", required_argument, NULL, OPT_DAMP },
	{ "refit", required_argument, NULL, OPT_REFIT },
	{ "threads", required_argument, NULL, 'j' },
	{ "chunk", required_argument, NULL, OPT_CHUNK },
	{ "scale-dtype", required_argument, NULL, OPT_SCALE },
	{ "double-quant", no_argument, NULL, OPT_DQ },
	{ "affine-rule", required_argument, NULL, OPT_AFFINE_RULE },
	{ "dry-run", no_argument, NULL, 'n' },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "force", no_argument, NULL, 'f' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static const char *layout_name(const qtk_q_layout *L, char *buf, size_t n)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);

	if (L->scheme == QTK_SCHEME_RAW)
		snprintf(buf, n, "keep %s", qtk_dtype_name(L->dtype));
	else if (s->quantized && L->group == QTK_GROUP_ROW)
		snprintf(buf, n, "%s/row%s", s->name, L->flags & QTK_QF_DOUBLE_QUANT ? "+dq" : "");
	else if (s->quantized)
		snprintf(buf, n, "%s/g%u%s", s->name, L->group,
		         L->flags & QTK_QF_DOUBLE_QUANT ? "+dq" : "");
	else
		snprintf(buf, n, "%s", s->name);
	return buf;
}

static void shape_str(const qtk_conv_tensor *t, char *buf, size_t n)
{
	size_t k = 0;

	k += (size_t)snprintf(buf + k, n - k, "[");
	for (uint32_t d = 0; d < t->ndim && k < n; d++)
		k += (size_t)snprintf(buf + k, n - k, d ? ", %llu" : "%llu",
		                      (unsigned long long)t->shape[d]);
	if (k < n)
		snprintf(buf + k, n - k, "]");
}

static void print_plan(const qtk_conv_report *rep)
{
	char lay[48], sh[96], b1[32], b2[32];

	printf("%-48s %-18s %-14s %10s %10s  %s\n", "tensor", "shape", "storage",
	       "bytes", "out", "rule");
	for (size_t i = 0; i < rep->ntensors; i++) {
		const qtk_conv_tensor *t = &rep->tensors[i];
		shape_str(t, sh, sizeof sh);
		cli_human_bytes((double)t->src_bytes, b1, sizeof b1);
		cli_human_bytes((double)t->out_bytes, b2, sizeof b2);
		printf("%-48s %-18s %-14s %10s %10s  %s\n", t->name, sh,
		       layout_name(&t->layout, lay, sizeof lay), b1, b2, t->origin);
	}
}

static int by_error(const void *a, const void *b)
{
	const qtk_conv_tensor *x = *(const qtk_conv_tensor *const *)a;
	const qtk_conv_tensor *y = *(const qtk_conv_tensor *const *)b;
	double ex = x->has_metrics ? x->m.rel_fro : -1, ey = y->has_metrics ? y->m.rel_fro : -1;

	return ex < ey ? 1 : ex > ey ? -1 : strcmp(x->name, y->name);
}

static void print_totals(const qtk_conv_report *rep, int dry)
{
	char b1[32], b2[32], lay[48];
	/* tensors and bytes by storage */
	struct { char name[48]; size_t n; uint64_t in, out; } by[32];
	size_t nby = 0;

	for (size_t i = 0; i < rep->ntensors; i++) {
		const qtk_conv_tensor *t = &rep->tensors[i];
		size_t k;

		layout_name(&t->layout, lay, sizeof lay);
		if (!strncmp(lay, "keep", 4))
			snprintf(lay, sizeof lay, "keep");
		for (k = 0; k < nby && strcmp(by[k].name, lay); k++)
			;
		if (k == nby && nby < 32) {
			snprintf(by[nby].name, sizeof by[nby].name, "%s", lay);
			by[nby].n = 0;
			by[nby].in = by[nby].out = 0;
			nby++;
		}
		if (k < 32) {
			by[k].n++;
			by[k].in += t->src_bytes;
			by[k].out += t->out_bytes;
		}
	}
	printf("\n%-16s %8s %12s %12s\n", "storage", "tensors", "source", dry ? "planned" : "written");
	for (size_t k = 0; k < nby; k++) {
		cli_human_bytes((double)by[k].in, b1, sizeof b1);
		cli_human_bytes((double)by[k].out, b2, sizeof b2);
		printf("%-16s %8zu %12s %12s\n", by[k].name, by[k].n, b1, b2);
	}
	cli_human_bytes((double)rep->src_bytes, b1, sizeof b1);
	cli_human_bytes((double)rep->out_bytes, b2, sizeof b2);
	printf("%-16s %8zu %12s %12s   %.3f bits/weight over %llu parameters\n", "total",
	       rep->ntensors, b1, b2,
	       rep->nparams ? 8.0 * (double)rep->out_bytes / (double)rep->nparams : 0.0,
	       (unsigned long long)rep->nparams);
	if (rep->model)
		printf("model: %s\n", rep->model);
}

static void print_summary(const qtk_conv_report *rep, const char *out)
{
	const qtk_conv_tensor **sorted = calloc(rep->ntensors ? rep->ntensors : 1, sizeof *sorted);
	char b1[32], lay[48];
	size_t shown = 0;

	print_totals(rep, 0);
	cli_human_bytes(rep->seconds > 0 ? (double)rep->src_bytes / rep->seconds : 0, b1, sizeof b1);
	printf("wrote %s in %.2f s (%s/s of source, %d threads)\n", out, rep->seconds, b1,
	       rep->threads);
	if (!sorted)
		return;
	for (size_t i = 0; i < rep->ntensors; i++)
		sorted[i] = &rep->tensors[i];
	qsort(sorted, rep->ntensors, sizeof *sorted, by_error);
	printf("\nworst tensors (relative Frobenius error):\n");
	printf("%-48s %-14s %10s %10s %10s %8s %9s\n", "tensor", "storage", "rel_fro",
	       "rmse", "max_abs", "snr_db", "cosine");
	for (size_t i = 0; i < rep->ntensors && shown < 10; i++) {
		const qtk_conv_tensor *t = sorted[i];
		if (!t->has_metrics)
			continue;
		printf("%-48s %-14s %10.3e %10.3e %10.3e %8.2f %9.6f\n", t->name,
		       layout_name(&t->layout, lay, sizeof lay), t->m.rel_fro, t->m.rmse,
		       t->m.max_abs, t->m.snr_db, t->m.cosine);
		shown++;
	}
	if (!shown)
		printf("  (none: every tensor was kept exactly)\n");
	free(sorted);
}

/* --calib: the quantized weights the statistics did not cover (they got
 * the data-free search), on stderr whatever -q says. */
static void print_calib_notes(const qtk_conv_report *rep, const char *calib, int damp_set)
{
	size_t none = 0, cal = 0;

	for (size_t i = 0; i < rep->ntensors; i++) {
		const qtk_conv_tensor *t = &rep->tensors[i];
		if (!t->calib)
			continue;
		if (strcmp(t->calib, "none")) {
			cal++;
			continue;
		}
		if (none < 10)
			fprintf(stderr, "qtk: note: %s has no statistics for '%s': data-free search\n",
			        calib, t->name);
		none++;
	}
	if (none > 10)
		fprintf(stderr, "qtk: note: ... and %zu more without statistics\n", none - 10);
	fprintf(stderr, "qtk: calibrated %zu of %zu quantized weights from %s\n", cal, cal + none,
	        calib);
	if (rep->calib_vocab && rep->calib_damp > 0)
		fprintf(stderr, "qtk: note: %s holds statistics of the vocabulary alone: GPTQ "
		        "damping %g%s\n", calib, rep->calib_damp,
		        damp_set ? "" : " (their default; --damp to change)");
	else if (rep->calib_vocab)
		fprintf(stderr, "qtk: note: %s holds statistics of the vocabulary alone: the "
		        "weighted search gains little from them; --calib-mode gptq uses them "
		        "(docs/calibration.md)\n", calib);
}

/* What happened to values, on stderr whatever -q says: tensors widened to
 * F32 because a narrow type qtk had chosen cannot hold a value, and
 * nonzero values stored as zero. */
static void print_value_notes(const qtk_conv_report *rep, const char *out)
{
	uint64_t total = 0;
	size_t tensors = 0;

	for (size_t i = 0; i < rep->ntensors; i++) {
		const qtk_conv_tensor *t = &rep->tensors[i];
		if (t->fallback)
			fprintf(stderr, "qtk: note: %s: tensor '%s': %s\n", out, t->name, t->fallback);
		if (t->flushed) {
			if (tensors < 10)
				fprintf(stderr, "qtk: note: %s: tensor '%s': %llu nonzero values stored "
				        "as zero (below the smallest value their type holds)\n", out,
				        t->name, (unsigned long long)t->flushed);
			total += t->flushed;
			tensors++;
		}
	}
	if (tensors > 10)
		fprintf(stderr, "qtk: note: %s: %llu nonzero values stored as zero in %zu tensors "
		        "(--json lists them all)\n", out, (unsigned long long)total, tensors);
}

static json_t *report_json(const qtk_conv_report *rep, const char *in, const char *out,
                           int dry)
{
	json_t *root = json_object(), *arr = json_array();
	char lay[48];

	json_object_set_new(root, "input", json_string(in));
	json_object_set_new(root, "resolved", json_string(rep->resolved));
	json_object_set_new(root, "output", out ? json_string(out) : json_null());
	json_object_set_new(root, "dry_run", json_boolean(dry));
	json_object_set_new(root, "model", rep->model ? json_string(rep->model) : json_null());
	json_object_set_new(root, "tensors_total", json_integer((json_int_t)rep->ntensors));
	json_object_set_new(root, "parameters", json_integer((json_int_t)rep->nparams));
	json_object_set_new(root, "source_bytes", json_integer((json_int_t)rep->src_bytes));
	json_object_set_new(root, "output_bytes", json_integer((json_int_t)rep->out_bytes));
	json_object_set_new(root, "bits_per_weight", json_real(rep->nparams ?
	                    8.0 * (double)rep->out_bytes / (double)rep->nparams : 0.0));
	if (!dry) {
		struct rusage ru;

		getrusage(RUSAGE_SELF, &ru);
		json_object_set_new(root, "peak_rss_bytes", json_integer((json_int_t)ru.ru_maxrss * 1024));
		json_object_set_new(root, "seconds", json_real(rep->seconds));
		json_object_set_new(root, "threads", json_integer(rep->threads));
		json_object_set_new(root, "source_bytes_per_second", json_real(rep->seconds > 0 ?
		                    (double)rep->src_bytes / rep->seconds : 0.0));
	}
	for (size_t i = 0; i < rep->ntensors; i++) {
		const qtk_conv_tensor *t = &rep->tensors[i];
		json_t *o = json_object(), *sh = json_array();

		json_object_set_new(o, "name", json_string(t->name));
		json_object_set_new(o, "dtype", json_string(qtk_dtype_name(t->src_dtype)));
		for (uint32_t d = 0; d < t->ndim; d++)
			json_array_append_new(sh, json_integer((json_int_t)t->shape[d]));
		json_object_set_new(o, "shape", sh);
		json_object_set_new(o, "storage", json_string(layout_name(&t->layout, lay, sizeof lay)));
		json_object_set_new(o, "scheme", json_string(qtk_q_scheme_get(t->layout.scheme)->name));
		if (qtk_q_scheme_get(t->layout.scheme)->quantized)
			json_object_set_new(o, "group", t->layout.group == QTK_GROUP_ROW ?
			                    json_string("row") : json_integer(t->layout.group));
		json_object_set_new(o, "rule", json_string(t->origin));
		json_object_set_new(o, "source_bytes", json_integer((json_int_t)t->src_bytes));
		json_object_set_new(o, "output_bytes", json_integer((json_int_t)t->out_bytes));
		if (!dry)
			json_object_set_new(o, "flushed", json_integer((json_int_t)t->flushed));
		if (t->fallback)
			json_object_set_new(o, "fallback", json_string(t->fallback));
		if (t->calib && !dry)
			json_object_set_new(o, "calib", json_string(t->calib));
		if (t->has_metrics) {
			json_t *m = json_object();
			json_object_set_new(m, "rmse", json_real(t->m.rmse));
			json_object_set_new(m, "max_abs", json_real(t->m.max_abs));
			json_object_set_new(m, "rel_fro", json_real(t->m.rel_fro));
			json_object_set_new(m, "snr_db", json_real(isfinite(t->m.snr_db) ? t->m.snr_db : 999.0));
			json_object_set_new(m, "cosine", json_real(t->m.cosine));
			json_object_set_new(o, "error", m);
		}
		json_array_append_new(arr, o);
	}
	json_object_set_new(root, "tensors", arr);
	return root;
}

/* --group: a power of two from 16 to 4096, or "row". 0 or a usage error. */
static int parse_group(const char *s, uint32_t *g)
{
	uint64_t v;
	int rc;

	if (!strcmp(s, "row")) {
		*g = QTK_GROUP_ROW;
		return 0;
	}
	rc = cli_uint("convert", "--group", s, 16, 4096, &v);
	if (rc)
		return rc;
	if (v & (v - 1))
		return cli_usage_error("convert", "--group: %s is not a power of two (16 to 4096, or 'row')", s);
	*g = (uint32_t)v;
	return 0;
}

typedef struct {
	const char *input, *output, *recipe, *preset, *calib;
	const char *keep[256], *set[256];
	int nkeep, nset;
	int scheme, scheme_given, group_given, json, verbose, quiet;
	int gptq_given; /* an option only --calib-mode gptq takes */
	int mode_given;
	uint32_t group;
	qtk_conv_opts co;
} cli_opts;

/* The command line's rules, checked as the recipe will take them (scheme
 * names, groups legal for the scheme, patterns, the preset's name), so a
 * bad one is a usage error before any file is opened. The recipe itself
 * is built again in build_recipe, with the file's rules after these. */
static int check_rules(const cli_opts *c)
{
	const char *const *p = qtk_recipe_presets();
	qtk_recipe *r;
	qtk_status st;
	qtk_err rc = QTK_OK;

	if (qtk_recipe_new(&r, c->scheme >= 0 ? (qtk_scheme_id)c->scheme : qtk_q_scheme_default(),
	                   c->group, &st))
		return cli_report(&st);
	for (int i = 0; i < c->nset && !rc; i++)
		rc = qtk_recipe_add_set(r, c->set[i], &st);
	for (int i = 0; i < c->nkeep && !rc; i++)
		rc = qtk_recipe_add_keep(r, c->keep[i], &st);
	qtk_recipe_free(r);
	if (rc)
		return rc == QTK_E_ARG ? cli_usage_error("convert", "%s", st.msg) : cli_report(&st);
	while (*p && strcmp(*p, c->preset))
		p++;
	if (!*p && strcmp(c->preset, "auto"))
		return cli_usage_error("convert", "--preset: unknown preset '%s' (%s)", c->preset,
		                       preset_list(0));
	return 0;
}

static int parse_args(int argc, char **argv, cli_opts *c)
{
	uint64_t v;
	int ch, rc;

	memset(c, 0, sizeof *c);
	c->scheme = -1;
	c->group = 64;
	c->preset = "auto";
	c->co.scale_dtype = QTK_DT_F16;
	qtk_gptq_opts_init(&c->co.gptq);
	/* qtk's GPTQ defaults: act-order (free at run time: the file keeps
	 * the original column order) and the scale refit, the best measured
	 * (docs/calibration.md) */
	c->co.gptq.act_order = 1;
	c->co.gptq.refit = QTK_GPTQ_REFIT_DEFAULT;
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":o:F:s:g:r:p:k:j:nfvqh", long_opts, NULL)) != -1) {
		switch (ch) {
		case 'o': c->output = optarg; break;
		case 'F':
			if (!strcmp(optarg, "qtk"))
				c->co.format = QTK_OUT_QTK;
			else if (!strcmp(optarg, "gguf"))
				c->co.format = QTK_OUT_GGUF;
			else if (!strcmp(optarg, "mlx"))
				c->co.format = QTK_OUT_MLX;
			else
				return cli_usage_error("convert", "unknown format '%s' (qtk, gguf, mlx)", optarg);
			break;
		case 's':
			c->scheme = qtk_q_scheme_from_name(optarg);
			if (c->scheme < 0 || c->scheme == QTK_SCHEME_RAW)
				return cli_usage_error("convert", "unknown scheme '%s'", optarg);
			c->scheme_given = 1;
			break;
		case 'g':
			if ((rc = parse_group(optarg, &c->group)) != 0)
				return rc;
			c->group_given = 1;
			break;
		case 'r': c->recipe = optarg; break;
		case 'p': c->preset = optarg; break;
		case 'k':
			if (c->nkeep == 256)
				return cli_usage_error("convert", "too many --keep");
			c->keep[c->nkeep++] = optarg;
			break;
		case OPT_SET:
			if (c->nset == 256)
				return cli_usage_error("convert", "too many --set");
			c->set[c->nset++] = optarg;
			break;
		case OPT_SEARCH: c->co.search = 1; break;
		case OPT_CALIB: c->calib = optarg; break;
		case OPT_CALIB_MODE:
			c->mode_given = 1;
			if (!strcmp(optarg, "gptq"))
				c->co.calib_gptq = 1;
			else if (!strcmp(optarg, "weighted"))
				c->co.calib_gptq = 0;
			else
				return cli_usage_error("convert", "--calib-mode '%s': expected weighted "
				                       "or gptq", optarg);
			break;
		case OPT_ACT_ORDER: c->co.gptq.act_order = 1; c->gptq_given = 1; break;
		case OPT_NO_ACT_ORDER: c->co.gptq.act_order = 0; c->gptq_given = 1; break;
		case OPT_STATIC_GROUPS: c->co.gptq.static_groups = 1; c->gptq_given = 1; break;
		case OPT_DAMP:
			c->co.gptq_damp_set = 1;
			if (cli_decimal(optarg, &c->co.gptq.damp) || !(c->co.gptq.damp > 0) ||
			    c->co.gptq.damp > 10)
				return cli_usage_error("convert", "--damp '%s': expected a number in "
				                       "(0, 10]", optarg);
			c->gptq_given = 1;
			break;
		case OPT_REFIT:
			if ((rc = cli_uint("convert", "--refit", optarg, 0, 64, &v)) != 0)
				return rc;
			c->co.gptq.refit = (uint32_t)v;
			c->gptq_given = 1;
			break;
		case 'j':
			if ((rc = cli_uint("convert", "--threads", optarg, 1, 1024, &v)) != 0)
				return rc;
			c->co.threads = (int)v;
			break;
		case OPT_CHUNK:
			if ((rc = cli_uint("convert", "--chunk", optarg, 1024, 1ull << 30, &v)) != 0)
				return rc;
			c->co.chunk_elems = v;
			break;
		case OPT_SCALE:
			if (!strcmp(optarg, "f16"))
				c->co.scale_dtype = QTK_DT_F16;
			else if (!strcmp(optarg, "bf16"))
				c->co.scale_dtype = QTK_DT_BF16;
			else if (!strcmp(optarg, "f32"))
				c->co.scale_dtype = QTK_DT_F32;
			else
				return cli_usage_error("convert", "bad scale dtype '%s'", optarg);
			c->co.scale_dtype_set = 1;
			break;
		case OPT_DQ: c->co.qflags |= QTK_QF_DOUBLE_QUANT; break;
		case OPT_AFFINE_RULE:
			if (!strcmp(optarg, "ggml"))
				c->co.affine_rule = 1;
			else if (!strcmp(optarg, "mlx"))
				c->co.affine_rule = 2;
			else
				return cli_usage_error("convert", "unknown affine rule '%s' (ggml, mlx)",
				                       optarg);
			break;
		case 'n': c->co.dry_run = 1; break;
		case OPT_JSON: c->json = 1; break;
		case 'f': c->co.force = 1; break;
		case 'v': c->verbose = 1; break;
		case 'q': c->quiet = 1; break;
		case 'h': convert_usage(stdout); return -1;
		case ':': return cli_usage_error("convert", "option '%s' needs an argument", argv[optind - 1]);
		default: return cli_usage_error("convert", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error("convert", optind >= argc ? "missing INPUT" : "more than one INPUT");
	c->input = argv[optind];
	if (!c->output && !c->co.dry_run)
		return cli_usage_error("convert", "missing -o OUTPUT");
	if (c->scheme < 0 && !c->recipe)
		return cli_usage_error("convert", "missing --scheme");
	if (!c->calib && c->mode_given)
		return cli_usage_error("convert", "--calib-mode needs --calib STATS");
	if (c->gptq_given && !c->co.calib_gptq)
		return cli_usage_error("convert", "--act-order, --no-act-order, --static-groups, "
		                       "--damp and --refit need --calib-mode gptq");
	return check_rules(c);
}

/* An input directory: say on stderr which file in it is read (the same
 * choice the source makes when it opens it; its errors are reported then). */
static void say_resolved(const char *input)
{
	struct stat sb;
	char *p = NULL;
	qtk_status tmp;

	if (stat(input, &sb) != 0 || !S_ISDIR(sb.st_mode))
		return;
	if (qtk_st_resolve(input, &p, &tmp) == QTK_OK)
		fprintf(stderr, "qtk: reading %s (picked in directory %s)\n", p, input);
	qtk_free(p);
}

/* Does path hold a .qtk file? Such an input keeps its stored layouts,
 * which convert's recipe options would silently not apply to: `qtk
 * export` repacks it (the library's qtk_convert takes it). */
static int is_qtk_file(const char *path)
{
	unsigned char m[8];
	qtk_status tmp;
	int fd, yes;

	if (qtk_fmt_open_input(path, &fd, NULL, &tmp) != QTK_OK)
		return 0;
	yes = read(fd, m, 8) == 8 && !memcmp(m, QTK_PACK_MAGIC, 8);
	close(fd);
	return yes;
}

/* Recipe: --set/--keep first, then the recipe file, then the preset. */
static qtk_err build_recipe(cli_opts *c, qtk_recipe **out, const char **preset_used,
                            qtk_status *st)
{
	qtk_recipe *r;
	qtk_err rc = QTK_OK;

	*preset_used = NULL;
	QTK_TRY(qtk_recipe_new(&r, c->scheme >= 0 ? (qtk_scheme_id)c->scheme : qtk_q_scheme_default(),
	                       c->group, st));
	for (int i = 0; i < c->nset && !rc; i++)
		rc = qtk_recipe_add_set(r, c->set[i], st);
	for (int i = 0; i < c->nkeep && !rc; i++)
		rc = qtk_recipe_add_keep(r, c->keep[i], st);
	if (!rc && c->recipe)
		rc = qtk_recipe_load(r, c->recipe, c->scheme_given, c->group_given, st);
	if (rc)
		goto fail;
	if (!strcmp(c->preset, "auto")) {
		/* detect the model from the source's tensor names */
		const char *m;

		rc = qtk_detect_model_path(c->input, &m, st);
		if (rc)
			goto fail;
		if (m && (!strcmp(m, "flux") || !strcmp(m, "wan") || !strcmp(m, "ltxv")))
			*preset_used = m;
	} else if (strcmp(c->preset, "none")) {
		*preset_used = c->preset;
	}
	if (*preset_used) {
		rc = qtk_recipe_add_preset(r, *preset_used, st);
		if (rc)
			goto fail;
	}
	*out = r;
	return QTK_OK;
fail:
	qtk_recipe_free(r);
	return rc;
}

int cmd_convert(int argc, char **argv)
{
	cli_opts c;
	qtk_recipe *recipe = NULL;
	qtk_conv_report *rep = NULL;
	qtk_status st;
	cli_progress ps;
	const char *preset_used;
	struct sigaction sa, old_int, old_term;
	int rc;

	rc = parse_args(argc, argv, &c);
	if (rc)
		return rc < 0 ? QTK_EXIT_OK : rc;
	qtk_status_clear(&st);
	if (is_qtk_file(c.input)) {
		fprintf(stderr, "qtk: %s: a .qtk file keeps its stored layouts: repack it with "
		        "`qtk export` (convert reads safetensors and GGUF checkpoints)\n", c.input);
		return QTK_EXIT_FAIL;
	}
	if (!c.quiet)
		say_resolved(c.input);
	if (build_recipe(&c, &recipe, &preset_used, &st))
		return cli_report(&st);
	c.co.input = c.input;
	c.co.output = c.output;
	c.co.recipe = recipe;
	c.co.calib = c.calib;
	c.co.cancel = &interrupted;
	if (cli_progress_init(&ps, !c.quiet && !c.co.dry_run, c.verbose)) {
		c.co.progress = cli_on_progress;
		c.co.progress_ctx = &ps;
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	if (qtk_convert(&c.co, &rep, &st) != QTK_OK) {
		qtk_recipe_free(recipe);
		if (st.code == QTK_E_INTERRUPTED || interrupted) {
			fprintf(stderr, "\nqtk: interrupted; %s left as it was\n", c.output);
			return QTK_EXIT_INTERRUPTED;
		}
		return cli_report(&st);
	}
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	if (!c.co.dry_run)
		print_value_notes(rep, c.output);
	if (!c.co.dry_run && c.calib)
		print_calib_notes(rep, c.calib, c.co.gptq_damp_set);
	if (c.json) {
		json_t *j = report_json(rep, c.input, c.output, c.co.dry_run);
		if (preset_used)
			json_object_set_new(j, "preset", json_string(preset_used));
		json_dumpf(j, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(j);
	} else if (!c.quiet) {
		if (preset_used)
			printf("preset: %s\n", preset_used);
		if (c.co.dry_run) {
			print_plan(rep);
			print_totals(rep, 1);
		} else {
			print_summary(rep, c.output);
		}
	}
	qtk_conv_report_free(rep);
	qtk_recipe_free(recipe);
	return QTK_EXIT_OK;
}
