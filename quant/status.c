/* quant: status codes, the allocation hook and fault injection.
 * Every part of qtk reports errors through qtk_status and allocates through
 * qtk_malloc, so tests can name errors and fail the Nth allocation. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qtk_quant.h"

qtk_err qtk_fail(qtk_status *st, qtk_err code, const char *fmt, ...)
{
	if (st) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(st->msg, sizeof st->msg, fmt, ap);
		va_end(ap);
		st->code = code;
	}
	return code;
}

void qtk_status_prefix(qtk_status *st, const char *prefix)
{
	char tmp[sizeof st->msg];
	size_t n;

	if (!st || !prefix)
		return;
	n = strlen(prefix);
	if (n > sizeof tmp - 3)
		n = sizeof tmp - 3;
	memcpy(tmp, prefix, n);
	memcpy(tmp + n, ": ", 2);
	/* the old message goes after the prefix, cut to fit */
	size_t m = strnlen(st->msg, sizeof st->msg - 1);
	if (m > sizeof tmp - n - 3)
		m = sizeof tmp - n - 3;
	memcpy(tmp + n + 2, st->msg, m);
	tmp[n + 2 + m] = '\0';
	memcpy(st->msg, tmp, sizeof tmp);
}

void qtk_status_clear(qtk_status *st)
{
	if (st) {
		st->code = QTK_OK;
		st->msg[0] = '\0';
	}
}

#define E(x) [x] = #x
static const char *const err_names[QTK_E_MAX_ + 1] = {
	E(QTK_OK), E(QTK_E_NOMEM), E(QTK_E_IO), E(QTK_E_FORMAT),
	E(QTK_E_OVERFLOW), E(QTK_E_UNSUPPORTED), E(QTK_E_ARG), E(QTK_E_EXISTS),
	E(QTK_E_SAME_FILE), E(QTK_E_NOT_FOUND), E(QTK_E_INTERRUPTED),
	E(QTK_E_CHECKSUM),
	E(QTK_E_ST_TOO_SMALL), E(QTK_E_ST_HEADER_LEN), E(QTK_E_ST_UTF8),
	E(QTK_E_ST_JSON), E(QTK_E_ST_NOT_OBJECT), E(QTK_E_ST_METADATA),
	E(QTK_E_ST_DTYPE), E(QTK_E_ST_SHAPE), E(QTK_E_ST_SHAPE_OVERFLOW),
	E(QTK_E_ST_OFFSETS), E(QTK_E_ST_SIZE_MISMATCH), E(QTK_E_ST_OUT_OF_BOUNDS),
	E(QTK_E_ST_OVERLAP), E(QTK_E_ST_GAP), E(QTK_E_ST_TRAILING),
	E(QTK_E_ST_DUPLICATE), E(QTK_E_ST_NAME), E(QTK_E_ST_KEYS),
	E(QTK_E_ST_INDEX), E(QTK_E_ST_SHARD_MISSING), E(QTK_E_ST_SHARD_TENSOR),
	E(QTK_E_ST_FIRST_OFFSET),
	E(QTK_E_PK_TOO_SMALL), E(QTK_E_PK_MAGIC), E(QTK_E_PK_VERSION),
	E(QTK_E_PK_BYTE_ORDER), E(QTK_E_PK_HEADER), E(QTK_E_PK_HEADER_CRC),
	E(QTK_E_PK_FILE_SIZE), E(QTK_E_PK_SECTION), E(QTK_E_PK_COUNT),
	E(QTK_E_PK_DIR_CRC), E(QTK_E_PK_NAME), E(QTK_E_PK_DUPLICATE),
	E(QTK_E_PK_INDEX), E(QTK_E_PK_NDIM), E(QTK_E_PK_SHAPE),
	E(QTK_E_PK_SCHEME), E(QTK_E_PK_LAYOUT), E(QTK_E_PK_PLANE_SIZE),
	E(QTK_E_PK_ALIGN), E(QTK_E_PK_BOUNDS), E(QTK_E_PK_OVERLAP),
	E(QTK_E_PK_PLANE_FLAGS), E(QTK_E_PK_META), E(QTK_E_PK_SCALES),
	E(QTK_E_PK_ZSTD), E(QTK_E_PK_INCOMPLETE), E(QTK_E_PK_PADDING),
	E(QTK_E_GG_TOO_SMALL), E(QTK_E_GG_MAGIC), E(QTK_E_GG_VERSION),
	E(QTK_E_GG_COUNT), E(QTK_E_GG_STRING), E(QTK_E_GG_KV_TYPE),
	E(QTK_E_GG_DUP_KEY), E(QTK_E_GG_ARRAY), E(QTK_E_GG_NDIM),
	E(QTK_E_GG_DIM), E(QTK_E_GG_SHAPE), E(QTK_E_GG_TYPE),
	E(QTK_E_GG_BLOCK), E(QTK_E_GG_ALIGNMENT), E(QTK_E_GG_MISALIGNED),
	E(QTK_E_GG_BOUNDS), E(QTK_E_GG_OVERLAP), E(QTK_E_GG_DUP_TENSOR),
	E(QTK_E_GG_NAME), E(QTK_E_GG_KV_MISMATCH), E(QTK_E_GG_INCOMPLETE),
	E(QTK_E_GG_LAYOUT), E(QTK_E_GG_TOKENIZER), E(QTK_E_GG_CONFIG),
	E(QTK_E_GG_BOOL),
	E(QTK_E_Q_NONFINITE), E(QTK_E_Q_SCALE_RANGE),
};
#undef E

const char *qtk_err_name(qtk_err code)
{
	if ((unsigned)code > QTK_E_MAX_ || !err_names[code])
		return "QTK_E_UNKNOWN";
	return err_names[code];
}

/* ---- fault injection -------------------------------------------------- */

static struct {
	uint64_t remaining; /* calls left before the fault fires; 0 = disarmed */
	int err;
	int fired;
} faults[QTK_FAULT_KINDS];

void qtk_fault_arm(qtk_fault_kind kind, uint64_t n, int err)
{
	if ((unsigned)kind >= QTK_FAULT_KINDS)
		return;
	__atomic_store_n(&faults[kind].fired, 0, __ATOMIC_SEQ_CST);
	faults[kind].err = err;
	__atomic_store_n(&faults[kind].remaining, n, __ATOMIC_SEQ_CST);
}

int qtk_fault_check(qtk_fault_kind kind)
{
	uint64_t left = __atomic_load_n(&faults[kind].remaining, __ATOMIC_RELAXED);

	/* fast path: disarmed */
	while (left != 0) {
		if (__atomic_compare_exchange_n(&faults[kind].remaining, &left,
		                                left - 1, 0, __ATOMIC_SEQ_CST,
		                                __ATOMIC_RELAXED)) {
			if (left != 1)
				return 0;
			__atomic_store_n(&faults[kind].fired, 1, __ATOMIC_SEQ_CST);
			return faults[kind].err ? faults[kind].err : 1;
		}
	}
	return 0;
}

int qtk_fault_fired(qtk_fault_kind kind)
{
	if ((unsigned)kind >= QTK_FAULT_KINDS)
		return 0;
	return __atomic_load_n(&faults[kind].fired, __ATOMIC_SEQ_CST);
}

/* ---- allocation -------------------------------------------------------- */

void *qtk_malloc(size_t n)
{
	if (qtk_fault_check(QTK_FAULT_ALLOC))
		return NULL;
	return malloc(n ? n : 1);
}

void *qtk_calloc(size_t count, size_t size)
{
	if (qtk_fault_check(QTK_FAULT_ALLOC))
		return NULL;
	if (count == 0 || size == 0)
		count = size = 1;
	return calloc(count, size);
}

void *qtk_realloc(void *p, size_t n)
{
	if (qtk_fault_check(QTK_FAULT_ALLOC))
		return NULL;
	return realloc(p, n ? n : 1);
}

void qtk_free(void *p)
{
	free(p);
}

char *qtk_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = qtk_malloc(n);

	if (d)
		memcpy(d, s, n);
	return d;
}
