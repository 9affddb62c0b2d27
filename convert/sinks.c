/* convert: which sink writes which output format — one table, the only
 * place in the pipeline that asks. A new sink is a row here and its own
 * convert/sink_*.c. */
#include "conv_impl.h"

typedef struct {
	qtk_err (*make)(sink *k, const sink_args *a, qtk_status *st);
	int path;               /* writes to an output path */
} sink_row;

static const sink_row sinks[] = {
	[QTK_OUT_QTK] = { sink_qtk_new, 1 },
	[QTK_OUT_GGUF] = { sink_gguf_new, 1 },
	[QTK_OUT_MLX] = { sink_mlx_new, 1 },
	[QTK_OUT_MEMORY] = { sink_mem_new, 0 },
};

/* A value outside the enum has always meant .qtk. */
static const sink_row *row(qtk_out_format f)
{
	if ((unsigned)f >= sizeof sinks / sizeof *sinks || !sinks[f].make)
		f = QTK_OUT_QTK;
	return &sinks[f];
}

qtk_err sink_new(sink *k, qtk_out_format f, const sink_args *a, qtk_status *st)
{
	return row(f)->make(k, a, st);
}

int sink_needs_path(qtk_out_format f)
{
	return row(f)->path;
}
