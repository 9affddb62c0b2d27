/* convert: `qtk verify FILE --against SOURCE` — the command line of
 * qtk_verify_against: options, the worst-first table or the JSON report,
 * and the exit status a release pipeline can gate on. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define DEFAULT_TOP 20

/* The default limits from quant's table, schemes of one limit together:
 * " raw/f32 1e-05, f16 0.001, ..." wrapped before 72 columns. */
static void limits_usage(FILE *f)
{
	char item[128];
	size_t col = 35, len;
	int first = 1;

	for (int i = 0; i < QTK_SCHEME_COUNT; i++) {
		double lim = qtk_q_scheme_get((qtk_scheme_id)i)->verify_limit;
		int seen = 0;

		for (int k = 0; k < i && !seen; k++)
			seen = qtk_q_scheme_get((qtk_scheme_id)k)->verify_limit == lim;
		if (seen)
			continue;
		item[0] = '\0';
		for (int k = i; k < QTK_SCHEME_COUNT; k++) {
			const qtk_q_scheme *s = qtk_q_scheme_get((qtk_scheme_id)k);
			len = strlen(item);
			if (s->verify_limit == lim)
				snprintf(item + len, sizeof item - len, "%s%s", len ? "/" : "", s->name);
		}
		len = strlen(item);
		snprintf(item + len, sizeof item - len, " %g", lim);
		len = strlen(item);
		if (!first)
			col += (size_t)fprintf(f, ",");
		if (col + 1 + len > 72) {
			fprintf(f, "\n");
			col = 0;
		}
		col += (size_t)fprintf(f, "%s%s", col ? " " : "", item);
		first = 0;
	}
	fprintf(f, ".\n");
}

void cli_verify_against_usage(FILE *f)
{
	fprintf(f, "Usage: qtk verify FILE --against SOURCE [OPTIONS]\n\n"
	           "Check FILE (.qtk or GGUF) as plain verify does, then compare every tensor\n"
	           "with its tensor in SOURCE (the safetensors file, index, directory or GGUF\n"
	           "it was made from): the weight error and the layer-output error\n"
	           "|W.X - W_hat.X| / |W.X| on a batch of input vectors X, W.X in f32 by\n"
	           "OpenBLAS on the source weights, W_hat.X by qtk's kernels on FILE's planes.\n"
	           "A tensor fails when its output error exceeds its scheme's limit.\n\n"
	           "  --against SOURCE        the source checkpoint (required)\n"
	           "  --inputs random|STATS   X drawn from N(0,1) per channel (default), or\n"
	           "                          with the per-channel mean and variance of an\n"
	           "                          activation statistics file (llama.cpp imatrix GGUF)\n"
	           "  --batch N               input vectors per tensor, 1-4096 (default 64)\n"
	           "  --seed N                seed of the draw of X (default 0)\n"
	           "  --path float|int8       activation path of the products (default float)\n"
	           "  --max-out-err [SCHEME=]X  limit on the output error, for one scheme or\n"
	           "                          (without SCHEME=) for all; repeatable\n"
	           "  --top N                 table rows, worst first (default %d)\n"
	           "  --all                   every tensor in the table\n"
	           "  --json                  the report as JSON on stdout (every tensor)\n"
	           "  -j, --threads N         threads (default: all cores)\n"
	           "  -q, --quiet             no table or summary (failures still on stderr)\n"
	           "  -h, --help              show this help\n\n"
	           "Default limits on the output error:", DEFAULT_TOP);
	limits_usage(f);
	fprintf(f, "Exit status: 0 every tensor within its limit, 1 a tensor fails or the\n"
	           "check could not run (the message names the tensor), 2 bad command line.\n");
}

/* ---- options ------------------------------------------------------------- */

typedef struct {
	qtk_verify_opts o;
	double limits[QTK_SCHEME_COUNT];
	int json, quiet, all;
	uint64_t top;
} va_args;

static int opt_limit(va_args *a, const char *v)
{
	const char *eq = strchr(v, '=');
	char name[32];
	double d;
	int id;

	if (cli_decimal(eq ? eq + 1 : v, &d))
		return cli_usage_error("verify", "--max-out-err: '%s' is not [SCHEME=]X with X a "
		                       "number >= 0", v);
	if (!eq) {
		for (int s = 0; s < QTK_SCHEME_COUNT; s++)
			a->limits[s] = d;
		return 0;
	}
	if ((size_t)(eq - v) >= sizeof name)
		return cli_usage_error("verify", "--max-out-err: unknown scheme in '%s'", v);
	memcpy(name, v, (size_t)(eq - v));
	name[eq - v] = 0;
	if ((id = qtk_q_scheme_from_name(name)) < 0)
		return cli_usage_error("verify", "--max-out-err: unknown scheme '%s' (int8, int4, "
		                       "int4-affine, int8-affine, nf4, f16, bf16, f32, raw)", name);
	a->limits[id] = d;
	return 0;
}

static int parse(va_args *a, int argc, char **argv)
{
	uint64_t v;
	int rc;

	memset(a, 0, sizeof *a);
	for (int s = 0; s < QTK_SCHEME_COUNT; s++)
		a->limits[s] = NAN;
	a->o.max_out_err = a->limits;
	a->top = DEFAULT_TOP;
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		int takes = !strcmp(o, "--against") || !strcmp(o, "--inputs") ||
		            !strcmp(o, "--batch") || !strcmp(o, "--seed") || !strcmp(o, "--path") ||
		            !strcmp(o, "--max-out-err") || !strcmp(o, "--top") ||
		            !strcmp(o, "-j") || !strcmp(o, "--threads");

		if (takes && !val)
			return cli_usage_error("verify", "%s needs a value", o);
		if (takes)
			i++;
		if (!strcmp(o, "--against")) {
			a->o.source = val;
		} else if (!strcmp(o, "--inputs")) {
			a->o.inputs = strcmp(val, "random") ? val : NULL;
		} else if (!strcmp(o, "--batch")) {
			if ((rc = cli_uint("verify", "--batch", val, 1, 4096, &v)))
				return rc;
			a->o.batch = (uint32_t)v;
		} else if (!strcmp(o, "--seed")) {
			if ((rc = cli_uint("verify", "--seed", val, 0, UINT64_MAX, &a->o.seed)))
				return rc;
		} else if (!strcmp(o, "--path")) {
			if (cli_parse_path(val, &a->o.path))
				return cli_usage_error("verify", "--path: '%s' is not float or int8", val);
		} else if (!strcmp(o, "--max-out-err")) {
			if ((rc = opt_limit(a, val)))
				return rc;
		} else if (!strcmp(o, "--top")) {
			if ((rc = cli_uint("verify", "--top", val, 1, UINT32_MAX, &a->top)))
				return rc;
		} else if (!strcmp(o, "-j") || !strcmp(o, "--threads")) {
			if ((rc = cli_uint("verify", o, val, 1, 1024, &v)))
				return rc;
			a->o.threads = (int)v;
		} else if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
			cli_verify_against_usage(stdout);
			return -1;
		} else if (!strcmp(o, "--all")) {
			a->all = 1;
		} else if (!strcmp(o, "--json")) {
			a->json = 1;
		} else if (!strcmp(o, "-q") || !strcmp(o, "--quiet")) {
			a->quiet = 1;
		} else if (o[0] == '-' && o[1]) {
			return cli_usage_error("verify", "unknown option '%s'", o);
		} else if (a->o.file) {
			return cli_usage_error("verify", "one file at a time");
		} else {
			a->o.file = o;
		}
	}
	if (!a->o.file)
		return cli_usage_error("verify", "missing FILE");
	if (!a->o.source)
		return cli_usage_error("verify", "--against needs SOURCE");
	return 0;
}

/* ---- output --------------------------------------------------------------- */

static const char *layout_str(const qtk_q_layout *L, char *b, size_t n)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(L->scheme);

	if (L->scheme == QTK_SCHEME_RAW)
		snprintf(b, n, "raw %s", qtk_dtype_name(L->dtype) ? qtk_dtype_name(L->dtype) : "?");
	else if (!s->quantized)
		snprintf(b, n, "%s", s->name);
	else if (L->group == QTK_GROUP_ROW)
		snprintf(b, n, "%s/row%s", s->name, L->flags & QTK_QF_DOUBLE_QUANT ? "+dq" : "");
	else
		snprintf(b, n, "%s/g%u%s", s->name, L->group,
		         L->flags & QTK_QF_DOUBLE_QUANT ? "+dq" : "");
	return b;
}

/* How far over its limit (failing tensors first). */
static double badness(const qtk_verify_tensor *t)
{
	if (t->problem || isnan(t->out.rel_fro))
		return (double)INFINITY;
	if (t->limit > 0)
		return t->out.rel_fro / t->limit;
	return t->out.rel_fro > 0 ? (double)INFINITY : 0.0;
}

static int worst_first(const void *a, const void *b)
{
	const qtk_verify_tensor *x = *(const qtk_verify_tensor *const *)a;
	const qtk_verify_tensor *y = *(const qtk_verify_tensor *const *)b;
	double bx = badness(x), by = badness(y);

	if (x->pass != y->pass)
		return x->pass ? 1 : -1;
	if (bx != by)
		return bx > by ? -1 : 1;
	return strcmp(x->name, y->name);
}

static void print_table(const va_args *a, const qtk_verify_report *r)
{
	const qtk_verify_tensor **o = qtk_calloc(r->n ? r->n : 1, sizeof *o);
	size_t rows, w = 6;
	char lay[48];

	if (!o)
		return;
	for (size_t i = 0; i < r->n; i++) {
		o[i] = &r->t[i];
		w = strlen(r->t[i].name) > w ? strlen(r->t[i].name) : w;
	}
	w = w > 56 ? 56 : w;
	qsort(o, r->n, sizeof *o, worst_first);
	rows = a->all || a->top > r->n ? r->n : (size_t)a->top;
	printf("%-*s %-13s %10s %10s %7s %9s %11s %9s %8s %11s  %s\n", (int)w, "tensor", "scheme",
	       "rmse", "max_abs", "snr_db", "cosine", "out_rel_err", "out_cos", "out_snr",
	       "max_out_err", "");
	for (size_t i = 0; i < rows; i++) {
		const qtk_verify_tensor *t = o[i];
		printf("%-*s %-13s %10.3e %10.3e %7.2f %9.6f %11.3e %9.6f %8.2f %11.3g  %s%s%s\n",
		       (int)w, t->name, layout_str(&t->layout, lay, sizeof lay), t->w.rmse,
		       t->w.max_abs, t->w.snr_db, t->w.cosine, t->out.rel_fro, t->out.cosine,
		       t->out.snr_db, t->limit, t->pass ? "ok" : "FAIL",
		       t->problem ? ": " : "", t->problem ? t->problem : "");
	}
	if (rows < r->n)
		printf("(%zu more, better; --all lists every tensor)\n", r->n - rows);
	qtk_free(o);
}

static json_t *jnum(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static json_t *tensor_json(const qtk_verify_tensor *t)
{
	json_t *o = json_object();
	const qtk_q_scheme *s = qtk_q_scheme_get(t->layout.scheme);
	char lay[48];

	json_object_set_new(o, "name", json_string(t->name));
	json_object_set_new(o, "source_name", json_string(t->source_name));
	json_object_set_new(o, "scheme", json_string(s->name));
	json_object_set_new(o, "layout", json_string(layout_str(&t->layout, lay, sizeof lay)));
	json_object_set_new(o, "rows", json_integer((json_int_t)t->rows));
	json_object_set_new(o, "cols", json_integer((json_int_t)t->cols));
	json_object_set_new(o, "qk_rows", json_boolean(t->qk_rows));
	json_object_set_new(o, "inputs", json_string(t->from_stats ? "stats" : "random"));
	json_object_set_new(o, "rmse", jnum(t->w.rmse));
	json_object_set_new(o, "max_abs", jnum(t->w.max_abs));
	json_object_set_new(o, "rel_err", jnum(t->w.rel_fro));
	json_object_set_new(o, "snr_db", jnum(t->w.snr_db));
	json_object_set_new(o, "cosine", jnum(t->w.cosine));
	json_object_set_new(o, "out_rel_err", jnum(t->out.rel_fro));
	json_object_set_new(o, "out_cosine", jnum(t->out.cosine));
	json_object_set_new(o, "out_snr_db", jnum(t->out.snr_db));
	json_object_set_new(o, "out_row_max_err", jnum(t->out_row_max));
	json_object_set_new(o, "max_out_err", jnum(t->limit));
	json_object_set_new(o, "pass", json_boolean(t->pass));
	json_object_set_new(o, "problem", t->problem ? json_string(t->problem) : json_null());
	return o;
}

static int print_json(const va_args *a, const qtk_verify_report *r)
{
	json_t *root = json_object(), *ts = json_array(), *sk = json_array();
	int rc;

	for (size_t i = 0; i < r->n; i++)
		json_array_append_new(ts, tensor_json(&r->t[i]));
	for (size_t i = 0; i < r->nskipped; i++) {
		json_t *o = json_object();
		json_object_set_new(o, "name", json_string(r->skipped[i]));
		json_object_set_new(o, "reason", json_string(r->skip_reasons[i]));
		json_array_append_new(sk, o);
	}
	json_object_set_new(root, "file", json_string(a->o.file));
	json_object_set_new(root, "source", json_string(a->o.source));
	json_object_set_new(root, "inputs", json_string(a->o.inputs ? a->o.inputs : "random"));
	json_object_set_new(root, "batch", json_integer(r->batch));
	json_object_set_new(root, "seed", json_integer((json_int_t)a->o.seed));
	json_object_set_new(root, "path", json_string(a->o.path == QTK_RT_INT8 ? "int8" : "float"));
	json_object_set_new(root, "threads", json_integer(r->threads));
	json_object_set_new(root, "tensors", ts);
	json_object_set_new(root, "skipped", sk);
	json_object_set_new(root, "source_unused", json_integer((json_int_t)r->source_unused));
	json_object_set_new(root, "failed", json_integer((json_int_t)r->nfailed));
	json_object_set_new(root, "pass", json_boolean(r->nfailed == 0));
	json_object_set_new(root, "seconds", jnum(r->seconds));
	rc = json_dumpf(root, stdout, JSON_INDENT(1)) ? -1 : 0;
	putchar('\n');
	json_decref(root);
	return rc;
}

/* Notes and failures on stderr. */
static void report_stderr(const va_args *a, const qtk_verify_report *r)
{
	size_t shown = 0;

	if (r->nskipped && !a->quiet) {
		fprintf(stderr, "qtk: note: %zu tensor%s not compared:", r->nskipped,
		        r->nskipped == 1 ? "" : "s");
		for (size_t i = 0; i < r->nskipped && i < 5; i++)
			fprintf(stderr, "%s '%s' (%s)", i ? "," : "", r->skipped[i], r->skip_reasons[i]);
		fprintf(stderr, "%s\n", r->nskipped > 5 ? ", ..." : "");
	}
	if (r->source_unused && !a->quiet)
		fprintf(stderr, "qtk: note: %zu tensor%s of %s %s no counterpart in %s (first: '%s')\n",
		        r->source_unused, r->source_unused == 1 ? "" : "s", a->o.source,
		        r->source_unused == 1 ? "has" : "have", a->o.file, r->source_unused_first);
	if (!r->nfailed)
		return;
	fprintf(stderr, "qtk: %s: %zu of %zu tensors fail against %s:", a->o.file, r->nfailed,
	        r->n, a->o.source);
	for (size_t i = 0; i < r->n; i++) {
		const qtk_verify_tensor *t = &r->t[i];
		if (t->pass)
			continue;
		if (shown++ == 20) {
			fprintf(stderr, " ...");
			break;
		}
		if (t->problem)
			fprintf(stderr, "%s '%s' (%s)", shown > 1 ? "," : "", t->name, t->problem);
		else
			fprintf(stderr, "%s '%s' (out_rel_err %.3g > %.3g)", shown > 1 ? "," : "",
			        t->name, t->out.rel_fro, t->limit);
	}
	fputc('\n', stderr);
}

static void print_summary(const va_args *a, const qtk_verify_report *r)
{
	printf("%s against %s: %zu tensors, inputs %s, %u vectors, seed %llu, %s path, "
	       "%d threads, %.2f s: %s\n", a->o.file, a->o.source, r->n,
	       a->o.inputs ? a->o.inputs : "N(0,1)", r->batch, (unsigned long long)a->o.seed,
	       a->o.path == QTK_RT_INT8 ? "int8" : "float", r->threads, r->seconds,
	       r->nfailed ? "FAIL" : "OK");
}

int cli_verify_against(int argc, char **argv)
{
	va_args a;
	qtk_verify_report *r;
	qtk_status st;
	int rc;

	if ((rc = parse(&a, argc, argv)))
		return rc < 0 ? QTK_EXIT_OK : rc;
	if (qtk_verify_against(&a.o, &r, &st) != QTK_OK)
		return cli_report(&st);
	if (a.json) {
		if (print_json(&a, r))
			fprintf(stderr, "qtk: writing the JSON report failed\n");
	} else if (!a.quiet) {
		print_table(&a, r);
		print_summary(&a, r);
	}
	report_stderr(&a, r);
	rc = r->nfailed ? QTK_EXIT_FAIL : QTK_EXIT_OK;
	qtk_verify_report_free(r);
	return rc;
}
