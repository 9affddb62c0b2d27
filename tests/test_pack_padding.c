/* tests: every byte of a .qtk file is covered by a checksum or a rule —
 * padding must be zero (open checks the gaps around the directory and the
 * metadata, verify the gaps between planes) and the error names the offset
 * of the first nonzero byte and the gap; a flip of any byte of a small file
 * is refused by open + verify. */
#include <stdlib.h>

#include "qtk_convert.h"
#include "qtk_formats.h"
#include "test.h"
#include "test_conv_util.h"
#include "test_pack_util.h"

enum { H_COUNT = 32, H_HSIZE = 16, H_STRTAB = 56, H_STRSIZE = 64, H_META = 88, R_PLANES = 88 };

static uint8_t *sample(uint32_t align, size_t *n)
{
	tp_sample s;
	qtk_status st;
	const char *path = t_tmp("pad.qtk");

	tp_sample_init(&s);
	if (tp_write(&s, path, align, 1, "{\"a\":1}", &st) != QTK_OK)
		return NULL;
	return t_read_file(path, n);
}

/* cover[k] = 1 for bytes with a meaning (header, directory, index, strings,
 * stored plane bytes, metadata); what is left is padding. */
static uint8_t *coverage(const uint8_t *b, size_t n)
{
	uint8_t *c = calloc(n, 1);
	uint64_t count = tp_get64(b + H_COUNT);

	if (!c)
		return NULL;
	memset(c, 1, (size_t)(tp_get64(b + H_STRTAB) + tp_get64(b + H_STRSIZE)));
	memset(c + tp_get64(b + H_META), 1, n - (size_t)tp_get64(b + H_META));
	for (size_t i = 0; i < count; i++)
		for (int p = 0; p < 4; p++) {
			size_t q = tp_record(b, i) + R_PLANES + 32 * (size_t)p;
			memset(c + tp_get64(b + q), 1, (size_t)tp_get64(b + q + 16));
		}
	return c;
}

/* open + verify of b[0, n): the code, with st filled. */
static qtk_err open_verify(const uint8_t *b, size_t n, qtk_status *st)
{
	qtk_pack_file *f = NULL;
	qtk_err rc = qtk_pack_open_mem(b, n, "pad.qtk", 0, &f, st);

	if (rc == QTK_OK)
		rc = qtk_pack_verify(f, st);
	qtk_pack_close(f);
	return rc;
}

/* Each padding byte made nonzero, one at a time: refused with
 * QTK_E_PK_PADDING naming its offset, by open+verify and by the
 * QTK_PACK_OPEN_VERIFY flag alike. */
static void flip_every_padding_byte(uint32_t align, size_t stride)
{
	size_t n, npad = 0, tried = 0;
	uint8_t *b = sample(align, &n), *c;

	REQUIRE(b);
	c = coverage(b, n);
	REQUIRE(c);
	for (size_t k = 0; k < n; k++) {
		qtk_status st;
		qtk_pack_file *f = NULL;
		char want[64];
		qtk_err rc;

		if (c[k])
			continue;
		/* every byte for a small file; for a large one every stride-th
		 * and both ends of each gap */
		if (npad++ % stride && c[k - 1] == 0 && k + 1 < n && c[k + 1] == 0)
			continue;
		tried++;
		b[k] = 0x5a;
		rc = open_verify(b, n, &st);
		snprintf(want, sizeof want, "byte 0x5a at offset %zu ", k);
		CHECK_MSG(rc == QTK_E_PK_PADDING && strstr(st.msg, want) && strstr(st.msg, "pad.qtk"),
		          "align %u, padding byte %zu: %s (%s)", align, k, qtk_err_name(rc), st.msg);
		rc = qtk_pack_open_mem(b, n, "pad.qtk", QTK_PACK_OPEN_VERIFY, &f, &st);
		CHECK_MSG(rc == QTK_E_PK_PADDING && !f, "align %u, byte %zu: %s", align, k,
		          qtk_err_name(rc));
		qtk_pack_close(f);
		b[k] = 0;
	}
	CHECK_MSG(npad > (align > 64 ? 4096u : 100u), "only %zu padding bytes", npad);
	CHECK(tried > 0);
	CHECK_EQ(open_verify(b, n, NULL), QTK_OK);
	free(c);
	free(b);
}

TEST(pack_every_padding_byte_must_be_zero)
{
	flip_every_padding_byte(64, 1);
	flip_every_padding_byte(4096, 61);
}

/* Which gap a message names. */
TEST(pack_padding_error_names_the_gap)
{
	size_t n, r0, r1;
	uint8_t *b = sample(4096, &n);
	uint64_t str_end, data, p0, p1;
	qtk_status st;

	REQUIRE(b);
	str_end = tp_get64(b + H_STRTAB) + tp_get64(b + H_STRSIZE);
	data = tp_get64(b + 72);
	REQUIRE(data > str_end);
	b[str_end] = 1;
	CHECK_EQ(open_verify(b, n, &st), QTK_E_PK_PADDING);
	CHECK_MSG(strstr(st.msg, "between the string table and the data section"), "%s", st.msg);
	b[str_end] = 0;
	/* after the first tensor's last plane: before the second's first plane */
	r0 = tp_record(b, 0);
	r1 = tp_record(b, 1);
	p0 = tp_get64(b + r0 + R_PLANES) + tp_get64(b + r0 + R_PLANES + 16);
	p1 = tp_get64(b + r1 + R_PLANES);
	for (int p = 1; p < 4; p++)
		if (tp_get64(b + r0 + R_PLANES + 32 * p + 8))
			p0 = tp_get64(b + r0 + R_PLANES + 32 * p) +
			     tp_get64(b + r0 + R_PLANES + 32 * p + 16);
	REQUIRE(p1 > p0);
	b[p1 - 1] = 0x80;
	{
		qtk_pack_file *f = NULL;
		char want[160];

		/* open does not read between planes: verify does */
		REQUIRE(qtk_pack_open_mem(b, n, "pad.qtk", 0, &f, &st) == QTK_OK);
		CHECK_EQ(qtk_pack_verify(f, &st), QTK_E_PK_PADDING);
		snprintf(want, sizeof want, "offset %llu is not zero: it is padding [%llu, %llu) before tensor '%s' plane 0 (codes)",
		         (unsigned long long)(p1 - 1), (unsigned long long)p0,
		         (unsigned long long)p1, qtk_pack_get(f, 1)->name);
		CHECK_MSG(strstr(st.msg, want), "%s\nwanted %s", st.msg, want);
		CHECK_EQ(qtk_pack_verify_tensor(f, 0, &st), QTK_OK);
		CHECK_EQ(qtk_pack_verify_tensor(f, 1, &st), QTK_E_PK_PADDING);
		qtk_pack_close(f);
	}
	free(b);
}

/* Every byte of a small file, flipped three ways one at a time, is refused
 * by open + verify: with the padding rule no byte is left unchecked. */
TEST(pack_every_byte_flip_is_refused)
{
	static const uint8_t masks[3] = { 0x01, 0x80, 0xff };
	size_t n, passed = 0;
	uint8_t *b = sample(64, &n);

	REQUIRE(b);
	CHECK_EQ(open_verify(b, n, NULL), QTK_OK);
	for (size_t k = 0; k < n; k++)
		for (int m = 0; m < 3; m++) {
			qtk_status st;
			qtk_err rc;

			b[k] ^= masks[m];
			rc = open_verify(b, n, &st);
			if (rc == QTK_OK && passed++ < 10)
				t_fail_at(__FILE__, __LINE__, "flip 0x%02x at %zu of %zu accepted", masks[m],
				          k, n);
			b[k] ^= masks[m];
		}
	CHECK_EQ(passed, 0);
	free(b);
}

static const char *bin(void)
{
	const char *b = getenv("QTK_BIN");
	if (!b || !*b)
		SKIP("QTK_BIN not set (run through make test)");
	return b;
}

/* `qtk verify` and `qtk export` refuse a nonzero padding byte between two
 * tensors' planes, naming its offset. */
TEST(pack_cli_verify_and_export_report_padding)
{
	const char *q = bin();
	qtk_conv_opts o = { .output = NULL, .format = QTK_OUT_QTK, .scale_dtype = QTK_DT_F16,
	                    .threads = 1, .force = 1 };
	char in[4200], out[4200], want[64];
	qtk_status st;
	uint8_t *b, *c;
	size_t n, k;

	snprintf(in, sizeof in, "%s", t_data("stories260K/model.safetensors"));
	snprintf(out, sizeof out, "%s", t_tmp("m.qtk"));
	o.input = in;
	o.output = out;
	REQUIRE(t_convert(&o, QTK_SCHEME_INT8, 32, NULL, NULL, &st) == QTK_OK);
	CHECK_EQ(t_system("%s verify -q %s", q, out), 0);
	b = t_read_file(out, &n);
	REQUIRE(b);
	c = coverage(b, n);
	REQUIRE(c);
	/* the last padding byte before the metadata's start... of the data:
	 * some gap between planes */
	for (k = (size_t)tp_get64(b + H_META); k > 0 && c[k - 1]; k--)
		;
	REQUIRE(k > tp_get64(b + 72));
	b[k - 1] = 7;
	REQUIRE(t_write_file(out, b, n) == 0);
	snprintf(want, sizeof want, "offset %zu is not zero", k - 1);
	CHECK_EQ(t_system("%s verify %s 2> %s", q, out, t_tmp("v.txt")), 1);
	{
		char *e = t_read_file(t_tmp("v.txt"), NULL);
		CHECK_MSG(e && strstr(e, want) && strstr(e, "padding"), "%s", e ? e : "");
		free(e);
	}
	CHECK_EQ(t_system("%s export %s --to gguf -o %s 2> %s", q, out, t_tmp("x.gguf"),
	                  t_tmp("x.txt")), 1);
	{
		char *e = t_read_file(t_tmp("x.txt"), NULL);
		CHECK_MSG(e && strstr(e, want), "%s", e ? e : "");
		free(e);
	}
	CHECK(!t_exists(t_tmp("x.gguf")));
	free(c);
	free(b);
}

/* The zstd transport form: each byte flipped by 0x10 (the frame header's
 * unused bit, which libzstd ignores) and every bit of each frame's first 8
 * bytes (magic, descriptor, content size) are refused as well. */
TEST(pack_zstd_form_byte_flips_are_refused)
{
	size_t n, passed = 0;
	uint8_t *b = sample(64, &n), *c;
	qtk_status st;

	REQUIRE(b);
	free(b);
	REQUIRE(qtk_pack_transcode(t_tmp("pad.qtk"), t_tmp("z.qtk"), 1, 9, 1, NULL, &st) == QTK_OK);
	b = t_read_file(t_tmp("z.qtk"), &n);
	REQUIRE(b);
	CHECK_EQ(open_verify(b, n, NULL), QTK_OK);
	c = calloc(n, 1);
	REQUIRE(c);
	/* c[k]: k is among the first 8 bytes of a frame */
	for (size_t i = 0; i < tp_get64(b + H_COUNT); i++)
		for (int p = 0; p < 4; p++) {
			size_t q = tp_record(b, i) + R_PLANES + 32 * (size_t)p;
			if (tp_get64(b + q + 16))
				memset(c + tp_get64(b + q), 1, 8);
		}
	for (size_t k = 0; k < n; k++)
		for (int bit = 0; bit < 8; bit++) {
			uint8_t m = (uint8_t)(1u << bit);

			if (m != 0x10 && !c[k])
				continue;
			b[k] ^= m;
			if (open_verify(b, n, &st) == QTK_OK && passed++ < 10)
				t_fail_at(__FILE__, __LINE__, "flip 0x%02x at %zu of %zu accepted", m, k, n);
			b[k] ^= m;
		}
	CHECK_EQ(passed, 0);
	free(c);
	free(b);
}
