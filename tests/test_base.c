/* tests: the base layer — status codes, fault injection, ISA choice and the
 * scalar dtype conversions (checked against independent arithmetic). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "qtk_quant.h"
#include "test.h"

TEST(base_status_and_names)
{
	qtk_status st;

	CHECK_EQ(qtk_fail(&st, QTK_E_ST_OVERLAP, "f: tensor '%s': overlap", "w"),
	         QTK_E_ST_OVERLAP);
	CHECK_EQ(st.code, QTK_E_ST_OVERLAP);
	CHECK_STR(st.msg, "f: tensor 'w': overlap");
	qtk_status_prefix(&st, "x.st");
	CHECK_STR(st.msg, "x.st: f: tensor 'w': overlap");
	CHECK_STR(qtk_err_name(QTK_E_ST_OVERLAP), "QTK_E_ST_OVERLAP");
	CHECK_STR(qtk_err_name((qtk_err)250), "QTK_E_UNKNOWN");
	CHECK_EQ(qtk_fail(NULL, QTK_E_IO, "no status"), QTK_E_IO);
}

/* Every code of the list has its own name, and no value outside the list
 * has one: the enum and qtk_err_name come from the same X-macro. */
TEST(base_error_names_complete)
{
	static const struct { qtk_err code; const char *name; } list[] = {
#define E(name, value) { name, #name },
		QTK_ERRORS(E)
#undef E
	};
	size_t n = sizeof list / sizeof list[0], named = 0;

	CHECK(n > 80);
	for (size_t i = 0; i < n; i++) {
		CHECK_STR(qtk_err_name(list[i].code), list[i].name);
		for (size_t k = 0; k < i; k++)
			CHECK_MSG(list[k].code != list[i].code, "%s and %s share value %d",
			          list[k].name, list[i].name, (int)list[i].code);
	}
	for (int v = 0; v <= QTK_E_MAX_; v++)
		named += strcmp(qtk_err_name((qtk_err)v), "QTK_E_UNKNOWN") != 0;
	CHECK_EQ(named, n);
	/* values are pinned on disk and in scripts */
	CHECK_EQ(QTK_E_ST_OVERLAP, 32);
	CHECK_EQ(QTK_E_PK_PADDING, 96);
	CHECK_EQ(QTK_E_GG_BOOL, 144);
	CHECK_EQ(QTK_E_Q_VALUE_RANGE, 172);
}

TEST(base_fault_injection_counts)
{
	void *p[3];

	qtk_fault_arm(QTK_FAULT_ALLOC, 3, 0);
	p[0] = qtk_malloc(8);
	p[1] = qtk_malloc(8);
	CHECK(!qtk_fault_fired(QTK_FAULT_ALLOC));
	p[2] = qtk_malloc(8);
	CHECK(p[0] && p[1] && !p[2]);
	CHECK(qtk_fault_fired(QTK_FAULT_ALLOC));
	/* fires once, then disarmed */
	void *q = qtk_malloc(8);
	CHECK(q != NULL);
	qtk_fault_arm(QTK_FAULT_WRITE, 1, 28 /* ENOSPC */);
	CHECK_EQ(qtk_fault_check(QTK_FAULT_WRITE), 28);
	CHECK_EQ(qtk_fault_check(QTK_FAULT_WRITE), 0);
	qtk_free(p[0]);
	qtk_free(p[1]);
	qtk_free(q);
	qtk_free(NULL);
}

TEST(base_isa_force_and_cap)
{
	qtk_isa best = qtk_isa_active();

	CHECK(qtk_isa_supported(best));
	CHECK_EQ(qtk_isa_force(QTK_ISA_SCALAR), QTK_ISA_SCALAR);
	CHECK_EQ(qtk_isa_active(), QTK_ISA_SCALAR);
	CHECK(qtk_isa_supported(qtk_isa_force(QTK_ISA_AVX512)));
	CHECK_STR(qtk_isa_name(QTK_ISA_AVX2), "avx2");
}

/* The features beyond the level agree with the kernel's own list of CPU
 * flags (when the AVX state is on: without it qtk reports none). */
TEST(base_cpu_features_match_proc_cpuinfo)
{
	static const struct { qtk_cpu_feature f; const char *flag; } feats[] = {
		{ QTK_CPU_VPCLMULQDQ, " vpclmulqdq" }, { QTK_CPU_AVXVNNI, " avx_vnni" },
		{ QTK_CPU_AVX512VNNI, " avx512_vnni" }, { QTK_CPU_GFNI, " gfni" },
	};
	static char info[1 << 16];
	FILE *f = fopen("/proc/cpuinfo", "r"); /* its size reads as 0: no t_read_file */
	size_t n = f ? fread(info, 1, sizeof info - 1, f) : 0;
	char *line, *end;

	if (f)
		fclose(f);
	info[n] = 0;
	if (!(line = strstr(info, "\nflags")))
		SKIP("no flags line in /proc/cpuinfo");
	end = strchr(line + 1, '\n');
	if (end)
		*end = ' '; /* each flag ends with a space now */
	for (size_t i = 0; i < sizeof feats / sizeof feats[0]; i++) {
		char want[32];
		snprintf(want, sizeof want, "%s ", feats[i].flag);
		int has = strstr(line, want) != NULL && qtk_isa_supported(QTK_ISA_AVX2);
		CHECK_MSG(qtk_cpu_has(feats[i].f) == has, "%s: qtk %d, /proc/cpuinfo %d",
		          feats[i].flag + 1, qtk_cpu_has(feats[i].f), has);
	}
}

TEST(base_dtype_table)
{
	CHECK_EQ(qtk_dtype_size(QTK_DT_BF16), 2);
	CHECK_EQ(qtk_dtype_size(QTK_DT_F8_E5M2), 1);
	CHECK_EQ(qtk_dtype_size((qtk_dtype)99), 0);
	CHECK_EQ(qtk_dtype_from_name("F8_E4M3"), QTK_DT_F8_E4M3);
	CHECK_EQ(qtk_dtype_from_name("bf16"), -1); /* case-sensitive */
	CHECK_EQ(qtk_dtype_from_name("BOOL"), QTK_DT_BOOL);
	for (int i = 0; i < QTK_DT_COUNT; i++)
		CHECK_EQ(qtk_dtype_from_name(qtk_dtype_name((qtk_dtype)i)), i);
	CHECK(qtk_dtype_is_float(QTK_DT_F64) && !qtk_dtype_is_float(QTK_DT_U8));
}

/* IEEE half by its definition, in double. */
static double half_value(uint16_t h)
{
	int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
	double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
	return s ? -v : v;
}

TEST(base_f16_all_patterns)
{
	for (uint32_t h = 0; h < 65536; h++) {
		float f = qtk_f16_to_f32((uint16_t)h);
		int e = (h >> 10) & 31;

		if (e == 31) {
			if (h & 1023)
				CHECK_MSG(isnan(f), "0x%04x should be NaN", h);
			else
				CHECK_MSG(isinf(f) && (signbit(f) != 0) == (h >> 15),
				          "0x%04x should be Inf", h);
			continue;
		}
		CHECK_MSG((double)f == half_value((uint16_t)h) &&
		          (signbit(f) != 0) == (h >> 15), "f16 0x%04x -> %g", h, (double)f);
		/* every finite half round-trips exactly */
		CHECK_MSG(qtk_f32_to_f16(f) == h, "f16 0x%04x round trip gives 0x%04x",
		          h, qtk_f32_to_f16(f));
	}
	/* NaN stays NaN through f32 -> f16 */
	CHECK((qtk_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (qtk_f32_to_f16(NAN) & 0x3ff));
}

TEST(base_f32_to_f16_rounding)
{
	/* ties go to even; 65520 is the first value that rounds to Inf */
	CHECK_EQ(qtk_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);          /* tie -> even */
	CHECK_EQ(qtk_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);      /* tie -> even up */
	CHECK_EQ(qtk_f32_to_f16(65504.0f), 0x7bff);
	CHECK_EQ(qtk_f32_to_f16(65519.99f), 0x7bff);
	CHECK_EQ(qtk_f32_to_f16(65520.0f), 0x7c00);
	CHECK_EQ(qtk_f32_to_f16(-1e9f), 0xfc00);
	CHECK_EQ(qtk_f32_to_f16(0x1p-24f), 0x0001);                /* smallest subnormal */
	CHECK_EQ(qtk_f32_to_f16(0x1p-25f), 0x0000);                /* tie -> even (0) */
	CHECK_EQ(qtk_f32_to_f16(0x1.8p-24f), 0x0002);              /* 1.5 ulp: tie -> 2 */
	CHECK_EQ(qtk_f32_to_f16(-0.0f), 0x8000);
	/* random values against the nearest half found by search */
	uint64_t rs = 42;
	for (int i = 0; i < 200000; i++) {
		uint32_t u = (uint32_t)t_rand_u64(&rs);
		float f;
		memcpy(&f, &u, 4);
		if (isnan(f) || fabsf(f) >= 65520.0f)
			continue;
		uint16_t h = qtk_f32_to_f16(f);
		double err = fabs(half_value(h) - (double)f);
		double lo = fabs(half_value((uint16_t)(h - 1)) - (double)f);
		double hi = fabs(half_value((uint16_t)(h + 1)) - (double)f);
		if ((h & 0x7fff) == 0)
			lo = HUGE_VAL;
		if ((h & 0x7fff) == 0x7bff)
			hi = HUGE_VAL;
		CHECK_MSG(err <= lo && err <= hi, "f32 %a -> f16 0x%04x not nearest", (double)f, h);
		if (err == lo || err == hi)
			CHECK_MSG(err == 0 || (h & 1) == 0, "tie %a not to even", (double)f);
	}
}

TEST(base_bf16_all_patterns)
{
	for (uint32_t b = 0; b < 65536; b++) {
		float f = qtk_bf16_to_f32((uint16_t)b);
		uint32_t u;
		memcpy(&u, &f, 4);
		CHECK_MSG(u == b << 16, "bf16 0x%04x", b);
		if (!isnan(f))
			CHECK_MSG(qtk_f32_to_bf16(f) == b, "bf16 round trip 0x%04x", b);
		else
			CHECK(isnan(qtk_bf16_to_f32(qtk_f32_to_bf16(f))));
	}
	CHECK_EQ(qtk_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);           /* tie -> even */
	CHECK_EQ(qtk_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
	CHECK_EQ(qtk_f32_to_bf16(3.4e38f), 0x7f80);                   /* overflow -> Inf */
}

TEST(base_fp8_all_patterns)
{
	for (int v = 0; v < 256; v++) {
		int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
		float f = qtk_e4m3_to_f32((uint8_t)v);
		if (e == 15 && m == 7) {
			CHECK(isnan(f));
			continue;
		}
		double want = e == 0 ? ldexp(m, -9) : ldexp(8 + m, e - 10);
		CHECK_MSG((double)f == (s ? -want : want), "e4m3 0x%02x -> %g", v, (double)f);
	}
	CHECK_EQ((int)qtk_e4m3_to_f32(0x7e), 448); /* largest finite */
	for (int v = 0; v < 256; v++) {
		int s = v >> 7, e = (v >> 2) & 31, m = v & 3;
		float f = qtk_e5m2_to_f32((uint8_t)v);
		if (e == 31) {
			CHECK(m ? isnan(f) : isinf(f));
			continue;
		}
		double want = e == 0 ? ldexp(m, -16) : ldexp(4 + m, e - 17);
		CHECK_MSG((double)f == (s ? -want : want), "e5m2 0x%02x -> %g", v, (double)f);
	}
}

TEST(base_to_f32_rows)
{
	double d[4] = { 1.0 / 3.0, -0.0, HUGE_VAL, 1e300 };
	float out[4];

	CHECK_EQ(qtk_to_f32(QTK_DT_F64, d, out, 4), QTK_OK);
	CHECK(out[0] == (float)(1.0 / 3.0) && signbit(out[1]) && isinf(out[2]) && isinf(out[3]));
	CHECK_EQ(qtk_to_f32(QTK_DT_I32, d, out, 1), QTK_E_ARG);
	CHECK_EQ(qtk_from_f32(QTK_DT_U8, out, d, 1), QTK_E_ARG);
}
