/* quant: run-time choice of the SIMD level (scalar, AVX2, AVX-512).
 * Decided once from the CPU, capped by $QTK_ISA; tests force each level. */
#include <cpuid.h>
#include <stdlib.h>
#include <string.h>

#include "qtk_quant.h"

static int isa_level = -1; /* -1: not decided yet */

enum { B_AVX2 = 1, B_AVX512 = 2, B_FEAT = 4 }; /* features: their bits << 2 */

/* CPUID and XGETBV directly: clang 14's __builtin_cpu_supports lacks "f16c",
 * and the OS must have enabled the wide register state too. */
static unsigned read_cpu_bits(void)
{
	unsigned a, b, c, d, xcr0_lo = 0, xcr0_hi = 0, out = 0;
	int osxsave, avx, fma, f16c;

	if (!__get_cpuid(1, &a, &b, &c, &d))
		return 0;
	osxsave = (c >> 27) & 1;
	avx = (c >> 28) & 1;
	fma = (c >> 12) & 1;
	f16c = (c >> 29) & 1;
	if (!osxsave || !avx)
		return 0;
	__asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
	if ((xcr0_lo & 0x6) != 0x6 || !__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return 0;
	if (((b >> 5) & 1) && fma && f16c)
		out |= B_AVX2;
	/* AVX-512 F, DQ, BW, VL and the opmask/ZMM state enabled by the OS */
	if ((out & B_AVX2) && ((b >> 16) & 1) && ((b >> 17) & 1) &&
	    ((b >> 30) & 1) && ((b >> 31) & 1) && (xcr0_lo & 0xe0) == 0xe0)
		out |= B_AVX512;
	if ((c >> 10) & 1)
		out |= B_FEAT * QTK_CPU_VPCLMULQDQ;
	if ((c >> 11) & 1)
		out |= B_FEAT * QTK_CPU_AVX512VNNI;
	if ((c >> 8) & 1)
		out |= B_FEAT * QTK_CPU_GFNI;
	if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 4) & 1))
		out |= B_FEAT * QTK_CPU_AVXVNNI;
	return out;
}

/* read once; a race stores the same bits */
static unsigned cpu_bits(void)
{
	static int bits = -1;
	int v = __atomic_load_n(&bits, __ATOMIC_RELAXED);

	if (v < 0) {
		v = (int)read_cpu_bits();
		__atomic_store_n(&bits, v, __ATOMIC_RELAXED);
	}
	return (unsigned)v;
}

int qtk_isa_supported(qtk_isa isa)
{
	switch (isa) {
	case QTK_ISA_SCALAR:
		return 1;
	case QTK_ISA_AVX2:
		return (cpu_bits() & B_AVX2) != 0;
	case QTK_ISA_AVX512:
		return (cpu_bits() & B_AVX512) != 0;
	}
	return 0;
}

int qtk_cpu_has(qtk_cpu_feature f)
{
	return (cpu_bits() & (B_FEAT * (unsigned)f)) != 0;
}

static qtk_isa best_isa(void)
{
	if (qtk_isa_supported(QTK_ISA_AVX512))
		return QTK_ISA_AVX512;
	if (qtk_isa_supported(QTK_ISA_AVX2))
		return QTK_ISA_AVX2;
	return QTK_ISA_SCALAR;
}

static qtk_isa cap(qtk_isa want)
{
	while (want > QTK_ISA_SCALAR && !qtk_isa_supported(want))
		want = (qtk_isa)(want - 1);
	return want;
}

qtk_isa qtk_isa_active(void)
{
	int lvl = __atomic_load_n(&isa_level, __ATOMIC_RELAXED);

	if (lvl < 0) {
		/* an unknown value is ignored here; the qtk command refuses it */
		int want = qtk_isa_from_name(getenv("QTK_ISA"));

		lvl = (int)(want < 0 ? best_isa() : cap((qtk_isa)want));
		__atomic_store_n(&isa_level, lvl, __ATOMIC_RELAXED);
	}
	return (qtk_isa)lvl;
}

qtk_isa qtk_isa_force(qtk_isa isa)
{
	qtk_isa got = cap(isa);

	__atomic_store_n(&isa_level, (int)got, __ATOMIC_RELAXED);
	return got;
}

int qtk_isa_from_name(const char *name)
{
	for (int i = QTK_ISA_SCALAR; name && i <= QTK_ISA_AVX512; i++)
		if (!strcmp(name, qtk_isa_name((qtk_isa)i)))
			return i;
	return -1;
}

const char *qtk_isa_name(qtk_isa isa)
{
	static const char *const names[] = { "scalar", "avx2", "avx512" };

	return (unsigned)isa <= QTK_ISA_AVX512 ? names[isa] : "?";
}
