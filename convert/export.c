/* convert: `qtk export` — a .qtk file repacked as GGUF or MLX, which is a
 * conversion from a .qtk source (source_qtk.c): stored codes go over
 * unchanged wherever the target holds them exactly (the sinks decide, as
 * for convert), a tensor the target cannot hold is refused, or with
 * --requantize quantized again from the source checkpoint recorded in the
 * metadata. This file maps the options and the report. */
#include <string.h>

#include "conv_impl.h"

void qtk_export_report_free(qtk_export_report *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nrequantized; i++) {
		qtk_free(r->requantized[i]);
		qtk_free(r->reasons[i]);
		if (r->notes)
			qtk_free(r->notes[i]);
	}
	qtk_free(r->notes);
	qtk_free(r->requantized);
	qtk_free(r->reasons);
	qtk_free(r->flushed);
	qtk_free(r);
}

/* The export report of a conversion's: counts, and the requantized
 * tensors with why, their value notes and flushed values. */
static qtk_err export_report(void *ctx, const qtk_conv_report *c, qtk_status *st)
{
	qtk_export_report **out = ctx;
	qtk_export_report *r = qtk_calloc(1, sizeof *r);
	size_t n = c->ntensors ? c->ntensors : 1;

	if (!r)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");
	r->ntensors = c->ntensors;
	r->seconds = c->seconds;
	r->threads = c->threads;
	r->requantized = qtk_calloc(n, sizeof *r->requantized);
	r->reasons = qtk_calloc(n, sizeof *r->reasons);
	r->flushed = qtk_calloc(n, sizeof *r->flushed);
	r->notes = qtk_calloc(n, sizeof *r->notes);
	if (!r->requantized || !r->reasons || !r->flushed || !r->notes)
		goto nomem;
	for (size_t i = 0; i < c->ntensors; i++) {
		const qtk_conv_tensor *t = &c->tensors[i];
		size_t k = r->nrequantized;

		r->exact += t->from == QTK_FROM_STORED;
		r->widened += t->from == QTK_FROM_DEQUANT;
		if (t->from != QTK_FROM_REQUANT)
			continue;
		r->nrequantized++;
		r->flushed[k] = t->flushed;
		r->requantized[k] = qtk_strdup(t->name);
		r->reasons[k] = qtk_strdup(t->requant_why ? t->requant_why : "");
		r->notes[k] = t->fallback ? qtk_strdup(t->fallback) : NULL;
		if (!r->requantized[k] || !r->reasons[k] || (t->fallback && !r->notes[k]))
			goto nomem;
	}
	*out = r;
	return QTK_OK;
nomem:
	qtk_export_report_free(r);
	return qtk_fail(st, QTK_E_NOMEM, "out of memory");
}

qtk_err qtk_export(const qtk_export_opts *o, qtk_export_report **out, qtk_status *st)
{
	qtk_conv_opts co;
	qtk_conv_report *rep = NULL;
	/* the report is made before the output is committed: a failure
	 * there leaves no output */
	conv_hooks h = { .qtk_only = 1, .before_commit = export_report, .ctx = out };
	qtk_err rc;

	*out = NULL;
	if (!o->input || !o->output)
		return qtk_fail(st, QTK_E_ARG, "export: input and output are required");
	if (o->format != QTK_OUT_GGUF && o->format != QTK_OUT_MLX)
		return qtk_fail(st, QTK_E_ARG, "export: the target is gguf or mlx");
	memset(&co, 0, sizeof co);
	co.input = o->input;
	co.output = o->output;
	co.format = o->format;
	co.requantize = o->requantize;
	co.threads = o->threads;
	co.force = o->force;
	co.cancel = o->cancel;
	co.progress = o->progress;
	co.progress_ctx = o->progress_ctx;
	co.scale_dtype = QTK_DT_F16;
	rc = conv_run(&co, &h, &rep, st);
	if (rc) {
		qtk_export_report_free(*out);
		*out = NULL;
	} else {
		(*out)->seconds = rep->seconds;
	}
	qtk_conv_report_free(rep);
	return rc;
}
