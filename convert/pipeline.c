/* convert: the streaming conversion pipeline (qtk_convert; qtk_export is
 * the same with a .qtk source). Open the source, then per pass: make the
 * sink, plan every tensor (pipe_plan.c), open the output, run the workers
 * over fixed work items (pipe_work.c); a second pass when values asked for
 * wider types. Then the report and metadata (pipe_report.c) and the commit.
 * Work items do not depend on the thread count, and per-item error sums
 * merge in item order, so the output is byte-identical for any -j. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pipe_impl.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}


/* Drop whatever output is open, whichever the sink: its temporary goes,
 * the output path stays as it was. Every failure after the open ends here
 * (job_free), and a second pass starts here. */
static void sinks_abort(job *j)
{
	if (j->out.ops)
		j->out.ops->abort(j->out.ctx);
	memset(&j->out, 0, sizeof j->out);
}

static void job_free(job *j)
{
	sinks_abort(j);
	pipe_plan_free(j);
	for (size_t i = 0; j->widen_why && j->s && i < j->s->n; i++)
		qtk_free(j->widen_why[i]);
	qtk_free(j->widen_why);
	qtk_free(j->widen);
	src_close(j->s);
	calib_close(j->cal);
	pthread_mutex_destroy(&j->calib_lock);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->idle);
}

/* The sink of this run's format, new for each pass (sink_new picks it). */
static qtk_err sinks_begin(job *j, qtk_status *st)
{
	sink_args a = { .s = j->s, .exact = j->s->qtk != NULL, .memory = j->o->memory };

	if (j->s->has_main) { /* a .qtk: its recorded recipe's */
		a.main_scheme = j->s->main_scheme;
		a.main_group = j->s->main_group;
	} else {
		a.main_scheme = qtk_recipe_main_scheme(j->o->recipe);
		a.main_group = qtk_recipe_main_group(j->o->recipe);
	}
	return sink_new(&j->out, j->o->format, &a, st);
}


/* Open the output and run the workers; on success j->out is left open for
 * the commit, on failure (or when j->redo asks for a second pass) it is
 * aborted. */
static qtk_err write_output(job *j, int nthreads, qtk_status *st)
{
	const qtk_conv_opts *o = j->o;
	const char *inputs[64];
	qtk_write_opts wo = { .force = o->force, .inputs = inputs };
	qtk_pack_desc *descs = qtk_calloc(j->n ? j->n : 1, sizeof *descs);
	const src *og = src_origin(j->s); /* a .qtk's checkpoint, if requantizing */
	qtk_err rc;

	if (!descs)
		return qtk_fail(st, QTK_E_NOMEM, "out of memory");

	for (size_t f = 0; f < j->s->nfiles && wo.ninputs < 62; f++)
		inputs[wo.ninputs++] = j->s->files[f].path;
	for (size_t f = 0; og && f < og->nfiles && wo.ninputs < 62; f++)
		inputs[wo.ninputs++] = og->files[f].path;
	if (o->calib)
		inputs[wo.ninputs++] = o->calib;
	for (size_t i = 0; i < j->n; i++) {
		descs[i].name = j->pt[i].t->name;
		descs[i].ndim = j->pt[i].t->ndim;
		memcpy(descs[i].shape, j->pt[i].t->shape, sizeof descs[i].shape);
		descs[i].src_dtype = j->pt[i].t->dtype;
		descs[i].layout = j->pt[i].d.layout;
	}
	rc = j->out.ops->open(j->out.ctx, o->output, descs, j->n, &wo, st);
	qtk_free(descs);
	if (rc)
		return rc;
	rc = pipe_run_workers(j, nthreads, st);
	if (rc || j->redo) /* failed, or to be written again with fallbacks */
		sinks_abort(j);
	return rc;
}

qtk_err conv_run(const qtk_conv_opts *o, const conv_hooks *h, qtk_conv_report **out,
                 qtk_status *st)
{
	int qtk_only = h && h->qtk_only;
	job j;
	qtk_conv_report *rep = NULL;
	double t0 = now_s();
	int nthreads = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
	qtk_err rc;

	*out = NULL;
	memset(&j, 0, sizeof j);
	pthread_mutex_init(&j.lock, NULL);
	pthread_mutex_init(&j.calib_lock, NULL);
	pthread_cond_init(&j.idle, NULL);
	j.o = o;
	j.chunk = o->chunk_elems ? o->chunk_elems : DEFAULT_CHUNK_ELEMS;
	if (nthreads < 1)
		nthreads = 1;
	if (!o->input || (!o->recipe && !qtk_only && !src_is_qtk(o->input)) ||
	    (!o->output && !o->dry_run && sink_needs_path(o->format))) {
		pthread_mutex_destroy(&j.lock);
		pthread_mutex_destroy(&j.calib_lock);
		pthread_cond_destroy(&j.idle);
		return qtk_fail(st, QTK_E_ARG, "convert: input, output and recipe are required");
	}
	rc = qtk_only ? src_open_qtk_file(&j.s, o->input, st) : src_open(&j.s, o->input, st);
	if (!rc && o->calib && j.s->qtk)
		rc = qtk_fail(st, QTK_E_ARG, "%s: a .qtk input keeps its stored layouts: "
		              "statistics (--calib) do not apply", o->input);
	if (!rc && o->calib)
		rc = calib_open(o->calib, o->calib_gptq ? CALIB_GPTQ : CALIB_WEIGHTED, &o->gptq,
		                o->gptq_damp_set, &j.cal, st);
	if (rc)
		goto out;
	j.widen = qtk_calloc(j.s->n ? j.s->n : 1, 1);
	j.widen_why = qtk_calloc(j.s->n ? j.s->n : 1, sizeof *j.widen_why);
	if (!j.widen || !j.widen_why) {
		rc = qtk_fail(st, QTK_E_NOMEM, "out of memory");
		goto out;
	}
	/* At most two passes: the second when the first marked tensors whose
	 * narrow type (qtk's own choice) cannot hold a value; they go in F32
	 * and cannot be marked again. */
	for (int pass = 0;; pass++) {
		rc = sinks_begin(&j, st);
		if (rc) {
			if (j.s->qtk) /* as its plan's errors */
				qtk_status_prefix(st, o->input);
			goto out;
		}
		rc = pipe_plan(&j, st);
		if (rc) {
			qtk_status_prefix(st, o->input);
			goto out;
		}
		if (o->dry_run) {
			rc = pipe_make_report(&j, &rep, st);
			goto out;
		}
		rc = write_output(&j, nthreads, st);
		if (rc)
			goto out;
		if (!j.redo)
			break;
		if (pass) { /* cannot happen: a marked tensor is F32 now */
			rc = qtk_fail(st, QTK_E_FORMAT, "%s: a value range fallback did not settle",
			              o->input);
			goto out;
		}
		pipe_plan_free(&j);
	}
	rc = pipe_make_report(&j, &rep, st);
	if (rc)
		goto out; /* job_free aborts the output */
	rep->threads = nthreads;
	rc = pipe_build_metadata(&j, rep, st);
	if (!rc && h && h->before_commit)
		rc = h->before_commit(h->ctx, rep, st);
	if (rc)
		goto out;
	rc = j.out.ops->commit(j.out.ctx, rep->metadata_json, st);
	memset(&j.out, 0, sizeof j.out); /* committed or dropped, either way */
out:
	if (rc == QTK_OK && rep)
		rep->seconds = now_s() - t0;
	if (rc) {
		qtk_conv_report_free(rep);
		rep = NULL;
	}
	job_free(&j);
	*out = rep;
	return rc;
}

qtk_err qtk_convert(const qtk_conv_opts *o, qtk_conv_report **out, qtk_status *st)
{
	return conv_run(o, NULL, out, st);
}
