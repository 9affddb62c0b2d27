/* convert: the progress bar of `qtk convert` and `qtk export` (stderr, a
 * terminal only; -v: one line per tensor) and byte counts for humans. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

void cli_human_bytes(double b, char *buf, size_t n)
{
	const char *u[] = { "B", "KB", "MB", "GB", "TB" };
	int i = 0;

	while (b >= 1000 && i < 4) {
		b /= 1000;
		i++;
	}
	snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int cli_progress_init(cli_progress *p, int bar, int verbose)
{
	memset(p, 0, sizeof *p);
	p->tty = bar && isatty(2);
	p->verbose = verbose;
	p->t0 = mono();
	p->last_done = (size_t)-1;
	return p->tty || p->verbose;
}

void cli_on_progress(void *ctx, size_t done, size_t total, uint64_t bytes,
                     uint64_t bytes_total, const char *tensor)
{
	cli_progress *p = ctx;
	double t = mono(), el = t - p->t0, rate = el > 0 ? (double)bytes / el : 0;
	char b1[32], b2[32], b3[32];

	if (p->verbose && done != p->last_done) {
		fprintf(stderr, "[%zu/%zu] %s\n", done, total, tensor);
		p->last_done = done;
	}
	if (!p->tty || (t - p->last < 0.2 && done < total))
		return;
	p->last = t;
	cli_human_bytes((double)bytes, b1, sizeof b1);
	cli_human_bytes((double)bytes_total, b2, sizeof b2);
	cli_human_bytes(rate, b3, sizeof b3);
	{
		int width = 24, fill = bytes_total ? (int)((double)width * (double)bytes /
		                                           (double)bytes_total) : width;
		double eta = rate > 0 ? (double)(bytes_total - bytes) / rate : 0;
		char bar[32];

		for (int i = 0; i < width; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[width] = 0;
		fprintf(stderr, "\r[%s] %zu/%zu tensors  %s/%s  %s/s  ETA %.0fs   ",
		        bar, done, total, b1, b2, b3, eta);
		if (done >= total)
			fputc('\n', stderr);
	}
}
