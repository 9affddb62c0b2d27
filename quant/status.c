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

#define E(name, value) [name] = #name,
static const char *const err_names[QTK_E_MAX_ + 1] = { QTK_ERRORS(E) };
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
