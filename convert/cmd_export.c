/* convert: `qtk export` — a .qtk file repacked as GGUF or MLX. */
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static volatile int interrupted;

static void on_signal(int sig)
{
	qtk_fmt_remove_temps();
	interrupted = sig;
}

static void export_usage(FILE *f)
{
	fprintf(f,
"Usage: qtk export MODEL.qtk --to gguf|mlx -o OUTPUT [OPTIONS]\n\n"
"Repack a .qtk file as GGUF (a file) or MLX (a directory) without the source\n"
"checkpoint. Stored codes are carried over exactly wherever the target holds\n"
"them: int8 g32 -> Q8_0, int4 g32 -> Q4_0, int4-affine g32 -> Q4_1, floats as\n"
"they are; MLX: int4/int8 symmetric or affine at group 32/64/128. Anything\n"
"else is refused, naming the tensor, unless --requantize is given.\n\n"
"  -t, --to FMT             gguf or mlx (required)\n"
"  -o, --output PATH        the GGUF file or MLX directory (required)\n"
"  -R, --requantize         requantize what the target cannot hold exactly\n"
"                           from the source checkpoint recorded in the .qtk\n"
"                           (its size and crc32 must match)\n"
"  -j, --threads N          worker threads (default: all cores)\n"
"      --json               print the report as JSON on stdout\n"
"  -f, --force              replace an existing output (a regular file, or a\n"
"                           previous MLX output; never a FIFO, device, link)\n"
"  -v, --verbose            one line per tensor as it is done\n"
"  -q, --quiet              no progress bar and no report\n"
"  -h, --help               show this help\n\n"
"Exit status: 0 success, 1 failure, 2 usage error, 130 interrupted.\n");
}

enum { OPT_JSON = 256 };

static const struct option long_opts[] = {
	{ "to", required_argument, NULL, 't' },
	{ "output", required_argument, NULL, 'o' },
	{ "requantize", no_argument, NULL, 'R' },
	{ "threads", required_argument, NULL, 'j' },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "force", no_argument, NULL, 'f' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static void print_report(const qtk_export_report *r, const qtk_export_opts *o, int json)
{
	if (json) {
		json_t *root = json_object(), *arr = json_array();

		json_object_set_new(root, "input", json_string(o->input));
		json_object_set_new(root, "output", json_string(o->output));
		json_object_set_new(root, "format", json_string(o->format == QTK_OUT_GGUF ? "gguf" : "mlx"));
		json_object_set_new(root, "tensors", json_integer((json_int_t)r->ntensors));
		json_object_set_new(root, "exact", json_integer((json_int_t)r->exact));
		json_object_set_new(root, "widened", json_integer((json_int_t)r->widened));
		for (size_t i = 0; i < r->nrequantized; i++) {
			json_t *e = json_object();
			json_object_set_new(e, "name", json_string(r->requantized[i]));
			json_object_set_new(e, "reason", json_string(r->reasons[i]));
			json_object_set_new(e, "flushed", json_integer((json_int_t)r->flushed[i]));
			if (r->notes[i])
				json_object_set_new(e, "fallback", json_string(r->notes[i]));
			json_array_append_new(arr, e);
		}
		json_object_set_new(root, "requantized", arr);
		json_object_set_new(root, "seconds", json_real(r->seconds));
		json_object_set_new(root, "threads", json_integer(r->threads));
		json_dumpf(root, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(root);
		return;
	}
	printf("wrote %s: %zu tensors, %zu carried over exactly, %zu widened to a float type, "
	       "%zu requantized (%.2f s)\n", o->output, r->ntensors, r->exact, r->widened,
	       r->nrequantized, r->seconds);
	for (size_t i = 0; i < r->nrequantized; i++)
		printf("  requantized %s: %s\n", r->requantized[i], r->reasons[i]);
}

/* Fallbacks to F32 and flushed values, on stderr whatever -q says. */
static void print_value_notes(const qtk_export_report *r, const char *out)
{
	for (size_t i = 0; i < r->nrequantized; i++) {
		if (r->notes[i])
			fprintf(stderr, "qtk: note: %s: tensor '%s': %s\n", out, r->requantized[i],
			        r->notes[i]);
		if (r->flushed[i])
			fprintf(stderr, "qtk: note: %s: tensor '%s': %llu nonzero values stored as "
			        "zero (below the smallest value their type holds)\n", out,
			        r->requantized[i], (unsigned long long)r->flushed[i]);
	}
}

int cmd_export(int argc, char **argv)
{
	qtk_export_opts o;
	qtk_export_report *rep = NULL;
	qtk_status st;
	struct sigaction sa, old_int, old_term;
	cli_progress ps;
	int ch, json = 0, quiet = 0, verbose = 0, to = 0, urc;
	uint64_t v;
	qtk_err rc;

	memset(&o, 0, sizeof o);
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":t:o:Rj:fvqh", long_opts, NULL)) != -1) {
		switch (ch) {
		case 't':
			if (!strcmp(optarg, "gguf"))
				o.format = QTK_OUT_GGUF;
			else if (!strcmp(optarg, "mlx"))
				o.format = QTK_OUT_MLX;
			else
				return cli_usage_error("export", "unknown target '%s' (gguf, mlx)", optarg);
			to = 1;
			break;
		case 'o': o.output = optarg; break;
		case 'R': o.requantize = 1; break;
		case 'j':
			if ((urc = cli_uint("export", "--threads", optarg, 1, 1024, &v)) != 0)
				return urc;
			o.threads = (int)v;
			break;
		case OPT_JSON: json = 1; break;
		case 'f': o.force = 1; break;
		case 'v': verbose = 1; break;
		case 'q': quiet = 1; break;
		case 'h': export_usage(stdout); return QTK_EXIT_OK;
		case ':': return cli_usage_error("export", "option '%s' needs an argument", argv[optind - 1]);
		default: return cli_usage_error("export", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error("export", optind >= argc ? "missing MODEL.qtk" : "more than one input");
	if (!to)
		return cli_usage_error("export", "missing --to gguf|mlx");
	if (!o.output)
		return cli_usage_error("export", "missing -o OUTPUT");
	o.input = argv[optind];
	o.cancel = &interrupted;
	if (cli_progress_init(&ps, !quiet, verbose)) {
		o.progress = cli_on_progress;
		o.progress_ctx = &ps;
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	qtk_status_clear(&st);
	rc = qtk_export(&o, &rep, &st);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	if (rc) {
		if (rc == QTK_E_INTERRUPTED || interrupted) {
			fprintf(stderr, "\nqtk: interrupted; %s left as it was\n", o.output);
			return QTK_EXIT_INTERRUPTED;
		}
		return cli_report(&st);
	}
	print_value_notes(rep, o.output);
	if (!quiet)
		print_report(rep, &o, json);
	qtk_export_report_free(rep);
	return QTK_EXIT_OK;
}
