/* quant: strict parsing of the numbers users type (options, environment
 * variables) and that files spell as text. One rule everywhere: decimal
 * digits only — no sign, no space, no "0x", nothing after — range-checked
 * against the caller's bounds, so "-18446744073709551552" is an error, not
 * the 64 strtoul makes of it. */
#include <stdio.h>

#include "qtk_quant.h"

qtk_err qtk_parse_u64(const char *what, const char *s, uint64_t lo, uint64_t hi,
                      uint64_t *out, qtk_status *st)
{
	uint64_t v = 0;
	int big = 0;

	if (!s || !*s)
		return qtk_fail(st, QTK_E_ARG, "%s: empty value, expected a number from %llu to %llu",
		                what, (unsigned long long)lo, (unsigned long long)hi);
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return qtk_fail(st, QTK_E_ARG,
			                "%s: '%.64s' is not a decimal number from %llu to %llu", what, s,
			                (unsigned long long)lo, (unsigned long long)hi);
		/* keep scanning after an overflow: junk later still says "not a number" */
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(*p - '0'), &v))
			big = 1;
	}
	if (big || v < lo || v > hi)
		return qtk_fail(st, QTK_E_ARG, "%s: %.64s is out of range (%llu to %llu)", what, s,
		                (unsigned long long)lo, (unsigned long long)hi);
	*out = v;
	return QTK_OK;
}
