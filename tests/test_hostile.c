/* tests: the hostile-input sweep through the library readers. For a small
 * valid file of each format qtk reads (test_hostile_util.c), every
 * truncation and four byte values at every offset (0x00, 0xff, x^0x01,
 * x^0x80), each case under its own time limit:
 *  - safetensors (one file, and a sharded set with its index) and GGUF:
 *    open, read every tensor and KV the way convert does; an accepted file
 *    must pass an independent validator written from the spec, and the
 *    reader must report exactly what the header says; a file that
 *    validator accepts must open (no wrong rejects either);
 *  - .qtk, plain and zstd transport form: every change must be refused by
 *    open + verify (every byte is covered by a crc32, the structure or
 *    zero padding); padding bytes are a test of their own.
 * No crash (the runner forks each test: a signal fails it), no hang. */
#include <stdlib.h>
#include <unistd.h>

#include "qtk_runtime.h"
#include "test.h"
#include "test_gguf_util.h"
#include "test_hostile_util.h"
#include "../formats/st_private.h"

int fuzz_gguf_one(const uint8_t *data, size_t size);

/* Up to this many mismatches are printed per test. */
#define HS_SHOW 12

/* Read every tensor of an open safetensors file as convert would. */
static void st_consume(const qtk_st_file *f)
{
	float buf[2048];
	qtk_status st;

	for (size_t i = 0; i < qtk_st_count(f); i++) {
		const qtk_st_tensor *t = qtk_st_get(f, i);

		if (qtk_st_find(f, t->name) != t)
			t_fail_at(__FILE__, __LINE__, "find('%s') is not the tensor", t->name);
		for (uint64_t e = 0; qtk_dtype_is_float(t->dtype) && e < t->nelem; e += 2048) {
			uint64_t k = t->nelem - e < 2048 ? t->nelem - e : 2048;
			qtk_err rc = qtk_st_read_f32(t, e, k, buf, &st);
			/* a finite F64 beyond f32's range is refused, not made Inf:
			 * the one legal refusal of a valid file's data */
			if (rc == QTK_E_UNSUPPORTED && t->dtype == QTK_DT_F64 &&
			    strstr(st.msg, "beyond f32's range"))
				break;
			if (rc != QTK_OK)
				t_fail_at(__FILE__, __LINE__, "'%s': read: %s", t->name, st.msg);
		}
	}
	for (size_t i = 0; i < qtk_st_meta_count(f); i++)
		(void)qtk_st_meta_get(f, qtk_st_meta_key(f, i));
}

TEST(hostile_st_every_byte)
{
	size_t n, len, cases = 0, accepted = 0, shown = 0;
	uint8_t *b = hs_st_sample(&n), *m;

	REQUIRE(b);
	m = malloc(n);
	hs_guard_init();
	for (size_t k = 0; k < hs_mut_count(n); k++) {
		hs_mut mu = hs_mut_get(n, k);
		qtk_st_file *f = NULL;
		qtk_status st;
		char why[160];
		int valid, ok;

		if (!hs_mutate(b, n, mu, m, &len))
			continue;
		cases++;
		hs_case("safetensors %s", hs_mut_str(mu));
		ok = qtk_st_open_mem(m, len, "h.safetensors", &f, &st) == QTK_OK;
		valid = hs_st_valid(m, len, why, sizeof why);
		if (ok) {
			accepted++;
			st_consume(f);
			if (!hs_st_same(f, m, len, why, sizeof why) && shown++ < HS_SHOW)
				t_fail_at(__FILE__, __LINE__, "%s: accepted, but %s", hs_mut_str(mu), why);
		} else if (valid && shown++ < HS_SHOW) {
			t_fail_at(__FILE__, __LINE__, "%s: a valid file refused: %s", hs_mut_str(mu),
			          st.msg);
		}
		qtk_st_close(f);
		hs_case_done();
	}
	printf("    %zu bytes, %zu cases, %zu accepted (all valid)\n", n, cases, accepted);
	CHECK_EQ(shown, 0);
	free(m);
	free(b);
}

/* The sharded set goes through files on disk (the index names them): every
 * byte of the index and of both shards' headers, every 16th data byte, and
 * every truncation of each file. */
TEST(hostile_st_sharded)
{
	static const char *const names[] = { "s1.safetensors", "s2.safetensors",
	                                     "m.safetensors.index.json" };
	char dir[300];
	size_t cases = 0, accepted = 0, shown = 0;

	snprintf(dir, sizeof dir, "%s/set", hs_scratch());
	REQUIRE(t_system("mkdir -p '%s'", dir) == 0);
	REQUIRE(hs_st_sharded(dir) == 0);
	hs_guard_init();
	for (int fi = 0; fi < 3; fi++) {
		char path[4200];
		size_t n, len;
		uint8_t *b, *m;
		uint64_t data0 = 0;

		snprintf(path, sizeof path, "%s/%s", dir, names[fi]);
		b = t_read_file(path, &n);
		REQUIRE(b);
		m = malloc(n);
		if (fi < 2)
			for (int i = 7; i >= 0; i--)
				data0 = data0 << 8 | b[i];
		for (size_t k = 0; k < hs_mut_count(n); k++) {
			hs_mut mu = hs_mut_get(n, k);
			qtk_st_file *f = NULL;
			qtk_status st;

			if (fi < 2 && mu.kind != HS_TRUNC && mu.at >= 8 + data0 && mu.at % 16)
				continue;
			if (!hs_mutate(b, n, mu, m, &len))
				continue;
			cases++;
			REQUIRE(t_write_file(path, m, len) == 0);
			hs_case("%s: %s", names[fi], hs_mut_str(mu));
			if (qtk_st_open(dir, &f, &st) == QTK_OK) {
				accepted++;
				st_consume(f);
				/* a shard that opens is a valid file by itself */
				if (fi < 2 && !hs_st_valid(m, len, st.msg, sizeof st.msg) && shown++ < HS_SHOW)
					t_fail_at(__FILE__, __LINE__, "%s %s: accepted, but %s", names[fi],
					          hs_mut_str(mu), st.msg);
				if (qtk_st_count(f) != 4 && shown++ < HS_SHOW)
					t_fail_at(__FILE__, __LINE__, "%s %s: accepted with %zu tensors",
					          names[fi], hs_mut_str(mu), qtk_st_count(f));
			} else if (strstr(st.msg, names[fi]) == NULL && shown++ < HS_SHOW) {
				t_fail_at(__FILE__, __LINE__, "%s %s: message does not name the file: %s",
				          names[fi], hs_mut_str(mu), st.msg);
			}
			qtk_st_close(f);
			hs_case_done();
		}
		REQUIRE(t_write_file(path, b, n) == 0);
		free(m);
		free(b);
	}
	printf("    %zu cases, %zu accepted\n", cases, accepted);
	CHECK_EQ(shown, 0);
	hs_scratch_done();
}

/* One GGUF sample through every mutation. */
static void gguf_sweep(const char *name, const uint8_t *b, size_t n)
{
	size_t len, cases = 0, accepted = 0, shown = 0;
	uint8_t *m = malloc(n);

	for (size_t k = 0; k < hs_mut_count(n); k++) {
		hs_mut mu = hs_mut_get(n, k);
		qtk_gguf_file *f = NULL;
		qtk_status st;
		char why[160];
		int valid, ok;

		if (!hs_mutate(b, n, mu, m, &len))
			continue;
		cases++;
		hs_case("%s %s", name, hs_mut_str(mu));
		ok = qtk_gguf_open_mem(m, len, name, &f, &st) == QTK_OK;
		valid = hs_gguf_valid(m, len, why, sizeof why);
		if (ok && !valid && shown++ < HS_SHOW)
			t_fail_at(__FILE__, __LINE__, "%s %s: accepted, but %s", name, hs_mut_str(mu), why);
		if (!ok && valid && shown++ < HS_SHOW)
			t_fail_at(__FILE__, __LINE__, "%s %s: a valid file refused: %s", name,
			          hs_mut_str(mu), st.msg);
		accepted += ok;
		qtk_gguf_close(f);
		/* every KV through every getter, every tensor read */
		fuzz_gguf_one(m, len);
		hs_case_done();
	}
	printf("    %s: %zu bytes, %zu cases, %zu accepted (all valid)\n", name, n, cases, accepted);
	CHECK_EQ(shown, 0);
	free(m);
}

/* The v3 file qtk's writer makes, and the hand-built v1, v2, v3 files of
 * the malformed-GGUF suite (v1: 32-bit counts and lengths). */
TEST(hostile_gguf_every_byte)
{
	size_t n = 0;
	uint8_t *b = hs_gguf_sample(t_tmp("h.gguf"), &n);
	size_t size = n;

	REQUIRE(b);
	hs_guard_init();
	gguf_sweep("writer-v3.gguf", b, size);
	free(b);
	for (unsigned v = 1; v <= 3; v++) {
		tg_file g;
		char name[32];

		tg_build(&g, v);
		snprintf(name, sizeof name, "built-v%u.gguf", v);
		gguf_sweep(name, g.buf, g.len);
		tg_free(&g);
	}
}

/* open + verify + every plane read; 1 if all of it succeeds. only >= 0:
 * verify and read that tensor alone (see qtk_sweep). */
static int qtk_accepts(const uint8_t *b, size_t n, long only, qtk_status *st)
{
	qtk_pack_file *f;
	int ok;

	if (qtk_pack_open_mem(b, n, "h.qtk", 0, &f, st) != QTK_OK)
		return 0;
	ok = (only < 0 ? qtk_pack_verify(f, st) : qtk_pack_verify_tensor(f, (size_t)only, st)) ==
	     QTK_OK;
	for (size_t i = 0; i < qtk_pack_count(f); i++) {
		const qtk_pack_tensor *t = qtk_pack_get(f, i);

		for (int p = 0; p < QTK_PLANE_MAX && (only < 0 || (size_t)only == i); p++) {
			uint8_t *buf = malloc(t->planes[p].size + 1);
			int r = qtk_pack_plane_read(f, t, p, buf, st) == QTK_OK;

			if (ok && !r)
				t_fail_at(__FILE__, __LINE__, "verified, but plane read failed: %s", st->msg);
			free(buf);
		}
	}
	qtk_pack_close(f);
	return ok;
}

/* padding: 0 = every byte but padding, 1 = padding bytes only.
 * In the zstd form a byte inside a plane is checked by verifying and
 * reading that plane's tensor only: the directory is intact, so every other
 * tensor is the valid file's bytes (a full verify decompresses all 30
 * frames and made the sweep 50x slower). Every other byte gets the full
 * open + verify. */
static void qtk_sweep(int zstd, int padding)
{
	const char *path = t_tmp(zstd ? "hz.qtk" : "h.qtk");
	size_t n, len, cases = 0, shown = 0, rt = 0;
	uint8_t *b = hs_qtk_sample(path, zstd, &n), *m;
	char rtp[300];

	snprintf(rtp, sizeof rtp, "%s/rt.qtk", hs_scratch());
	REQUIRE(b);
	m = malloc(n);
	hs_guard_init();
	for (size_t k = 0; k < hs_mut_count(n); k++) {
		hs_mut mu = hs_mut_get(n, k);
		qtk_status st;

		if (mu.kind != HS_TRUNC && hs_qtk_is_padding(b, n, mu.at) != padding)
			continue;
		/* padding: one of 0xff, x^0x01, x^0x80 per byte, in turn (a full verify
		 * of the zstd form per case is slow) */
		if (padding && (mu.kind == HS_TRUNC || mu.kind != HS_SETFF + (int)(mu.at % 3)))
			continue;
		if (!hs_mutate(b, n, mu, m, &len))
			continue;
		cases++;
		hs_case("%s %s", path, hs_mut_str(mu));
		if (qtk_accepts(m, len, zstd && mu.kind != HS_TRUNC ? hs_qtk_tensor_at(b, n, mu.at) : -1,
		                &st) && shown++ < HS_SHOW)
			t_fail_at(__FILE__, __LINE__, "%s%s: %s accepted by open + verify",
			          zstd ? "zstd form, " : "", padding ? "padding" : "", hs_mut_str(mu));
		/* the runtime loader (decompresses zstd planes) on a sample */
		if (k % 29 == 0) {
			qtk_rt_model *md;
			REQUIRE(t_write_file(rtp, m, len) == 0);
			if (qtk_rt_open(rtp, QTK_RT_VERIFY, &md, &st) == QTK_OK &&
			    shown++ < HS_SHOW)
				t_fail_at(__FILE__, __LINE__, "%s: loaded by qtk_rt_open", hs_mut_str(mu));
			qtk_rt_close(md);
			rt++;
		}
		hs_case_done();
	}
	printf("    %zu bytes, %zu cases (%zu also through qtk_rt_open), %zu accepted\n", n, cases,
	       rt, shown);
	CHECK_EQ(shown, 0);
	free(m);
	free(b);
	hs_scratch_done();
}

TEST(hostile_qtk_every_byte)
{
	qtk_sweep(0, 0);
}

TEST(hostile_qtk_zstd_every_byte)
{
	qtk_sweep(1, 0);
}

/* Zero padding (before the data, between planes, before the metadata) is
 * part of the format: a non-zero byte there must be refused too. Every
 * padding byte, with one of 0xff, x^0x01, x^0x80 (0x00 changes nothing). */
TEST(hostile_qtk_padding_bytes)
{
	qtk_sweep(0, 1);
	qtk_sweep(1, 1);
}
