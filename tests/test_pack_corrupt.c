/* tests: malformed .qtk files — every truncation, every byte flip of the
 * header, directory and string table, and the classes of bugs that broke
 * GGUF readers, each expecting its own error code. */
#include <stdlib.h>
#include <zlib.h>

#include "qtk_formats.h"
#include "test.h"
#include "test_pack_util.h"

/* header offsets (docs/format.md) */
enum { H_MAJOR = 8, H_BOM = 12, H_HSIZE = 16, H_RFLAGS = 20, H_RECSIZE = 28,
       H_COUNT = 32, H_STRSIZE = 64, H_DATA = 72, H_DATASIZE = 80, H_META = 88,
       H_FSIZE = 104, H_ALIGN = 112 };
enum { R_NAME_OFF = 0, R_NAME_LEN = 4, R_NDIM = 8, R_SCHEME = 9, R_SRC_DT = 10,
       R_GROUP = 16, R_SHAPE = 24, R_PLANES = 88 };

static uint8_t *sample_file(size_t *n)
{
	tp_sample s;
	qtk_status st;
	const char *path = t_tmp("c.qtk");

	tp_sample_init(&s);
	if (tp_write(&s, path, 64, 1, "{\"a\":1}", &st) != QTK_OK)
		return NULL;
	return t_read_file(path, n);
}

static qtk_err open_buf(const uint8_t *b, size_t n, unsigned flags, qtk_status *st)
{
	qtk_pack_file *f = NULL;
	qtk_err rc = qtk_pack_open_mem(b, n, "c.qtk", flags, &f, st);

	if (rc == QTK_OK && f == NULL)
		return QTK_E_MAX_;
	if (rc != QTK_OK && f != NULL)
		return QTK_E_MAX_;
	qtk_pack_close(f);
	return rc;
}

/* Find the record of the tensor named name. */
static size_t rec_of(const uint8_t *b, const char *name)
{
	uint64_t count = tp_get64(b + H_COUNT), str = tp_get64(b + 56);

	for (size_t i = 0; i < count; i++) {
		size_t r = tp_record(b, i);
		if (!strcmp((const char *)b + str + tp_get32(b + r), name))
			return r;
	}
	return 0;
}

static size_t plane_field(size_t rec, int p, int field_off)
{
	return rec + R_PLANES + 32 * (size_t)p + (size_t)field_off;
}

TEST(pack_truncated_at_every_length)
{
	size_t n;
	uint8_t *b = sample_file(&n);
	const char *path = t_tmp("t.qtk");

	REQUIRE(b);
	for (size_t len = 0; len < n; len++) {
		qtk_status st;
		qtk_pack_file *f = NULL;
		qtk_err rc;

		/* through a real file, so a mapping past EOF would SIGBUS */
		REQUIRE(t_write_file(path, b, len) == 0);
		rc = qtk_pack_open(path, 0, &f, &st);
		CHECK_MSG(rc == (len < 128 ? QTK_E_PK_TOO_SMALL : QTK_E_PK_FILE_SIZE),
		          "length %zu: %s (%s)", len, qtk_err_name(rc), st.msg);
		CHECK(f == NULL);
		CHECK(strstr(st.msg, "t.qtk") != NULL);
	}
	free(b);
}

TEST(pack_every_directory_byte_flip_is_caught)
{
	size_t n, end;
	uint8_t *b = sample_file(&n);

	REQUIRE(b);
	end = (size_t)(tp_get64(b + 56) + tp_get64(b + H_STRSIZE));
	for (size_t k = 0; k < end; k++) {
		static const uint8_t masks[3] = { 0x01, 0x80, 0xff };
		for (int m = 0; m < 3; m++) {
			qtk_status st;
			qtk_err rc;

			b[k] ^= masks[m];
			rc = open_buf(b, n, 0, &st);
			CHECK_MSG(rc != QTK_OK && rc != QTK_E_MAX_ && st.msg[0],
			          "flip 0x%02x at %zu: %s", masks[m], k, qtk_err_name(rc));
			b[k] ^= masks[m];
		}
	}
	CHECK_EQ(open_buf(b, n, QTK_PACK_OPEN_VERIFY, NULL), QTK_OK);
	free(b);
}

TEST(pack_plane_and_metadata_flips_found_by_verify)
{
	size_t n;
	uint8_t *b = sample_file(&n);
	uint64_t data, dsize, meta, count;
	qtk_status st;

	REQUIRE(b);
	data = tp_get64(b + H_DATA);
	dsize = tp_get64(b + H_DATASIZE);
	meta = tp_get64(b + H_META);
	count = tp_get64(b + H_COUNT);
	/* every byte inside a plane: open is fine, verify names the tensor */
	for (size_t i = 0; i < count; i++) {
		size_t r = tp_record(b, i);
		for (int p = 0; p < 4; p++) {
			uint64_t off = tp_get64(b + plane_field(r, p, 0)), size = tp_get64(b + plane_field(r, p, 8));
			for (uint64_t k = off; k < off + size; k++) {
				qtk_pack_file *f;
				b[k] ^= 0x10;
				REQUIRE(qtk_pack_open_mem(b, n, "c.qtk", 0, &f, &st) == QTK_OK);
				CHECK_EQ(qtk_pack_verify(f, &st), QTK_E_CHECKSUM);
				CHECK(strstr(st.msg, (const char *)b + tp_get64(b + 56) + tp_get32(b + r)) != NULL);
				CHECK_EQ(open_buf(b, n, QTK_PACK_OPEN_VERIFY, NULL), QTK_E_CHECKSUM);
				qtk_pack_close(f);
				b[k] ^= 0x10;
			}
		}
	}
	(void)data;
	(void)dsize;
	/* metadata bytes are covered by their own crc at open */
	for (uint64_t k = meta; k < n; k++) {
		b[k] ^= 0x20;
		CHECK_EQ(open_buf(b, n, 0, &st), QTK_E_PK_META);
		b[k] ^= 0x20;
	}
	free(b);
}

/* Patch one field, fix the checksums, expect a code. */
#define EXPECT_PATCH(code, stmt)                                            \
	do {                                                                 \
		uint8_t *c_ = malloc(n);                                     \
		qtk_status st_;                                              \
		qtk_err rc_;                                                 \
		memcpy(c_, orig, n);                                         \
		b = c_;                                                      \
		stmt;                                                        \
		tp_fix_crcs(b, n);                                           \
		b = orig;                                                    \
		rc_ = open_buf(c_, n, QTK_PACK_OPEN_VERIFY, &st_);           \
		CHECK_MSG(rc_ == (code), "%s: got %s (%s)", #stmt,           \
		          qtk_err_name(rc_), rc_ ? st_.msg : "");            \
		free(c_);                                                    \
	} while (0)

TEST(pack_rejects_gguf_class_malformations)
{
	size_t n, r0, r1, rq, rdq;
	uint8_t *orig = sample_file(&n), *b = orig;
	uint64_t str;

	REQUIRE(b);
	str = tp_get64(b + 56);
	r0 = rec_of(b, "model.f32.weight");
	r1 = rec_of(b, "model.int8.weight");
	rq = rec_of(b, "model.int4-affine.weight");
	rdq = rec_of(b, "nf4.double_quant");
	REQUIRE(r0 && r1 && rq && rdq);
	CHECK_EQ(open_buf(b, n, QTK_PACK_OPEN_VERIFY, NULL), QTK_OK);

	/* header */
	EXPECT_PATCH(QTK_E_PK_MAGIC, b[0] = 'X');
	EXPECT_PATCH(QTK_E_PK_VERSION, tp_put32(b + H_MAJOR, 2));
	EXPECT_PATCH(QTK_E_PK_VERSION, tp_put32(b + H_RFLAGS, 0x100));
	EXPECT_PATCH(QTK_E_PK_BYTE_ORDER, tp_put32(b + H_BOM, 0x0D0C0B0A));
	EXPECT_PATCH(QTK_E_PK_HEADER, tp_put32(b + H_RECSIZE, 8));
	EXPECT_PATCH(QTK_E_PK_HEADER, tp_put32(b + H_ALIGN, 96));
	EXPECT_PATCH(QTK_E_PK_HEADER, tp_put32(b + H_HSIZE, 0));
	EXPECT_PATCH(QTK_E_PK_FILE_SIZE, tp_put64(b + H_FSIZE, n + 1));
	/* counts of 2^64-1, and counts whose product with the record size wraps */
	EXPECT_PATCH(QTK_E_PK_COUNT, tp_put64(b + H_COUNT, UINT64_MAX));
	EXPECT_PATCH(QTK_E_PK_COUNT, tp_put64(b + H_COUNT, UINT64_MAX / 224 + 2));
	EXPECT_PATCH(QTK_E_PK_COUNT, tp_put64(b + H_COUNT, (1ull << 62)));
	EXPECT_PATCH(QTK_E_PK_SECTION, tp_put64(b + H_COUNT, tp_get64(b + H_COUNT) - 1));
	/* section sizes that wrap or reach past the end */
	EXPECT_PATCH(QTK_E_PK_SECTION, tp_put64(b + H_STRSIZE, UINT64_MAX - 100));
	EXPECT_PATCH(QTK_E_PK_SECTION, tp_put64(b + H_DATASIZE, UINT64_MAX));
	EXPECT_PATCH(QTK_E_PK_SECTION, tp_put64(b + H_DATA, tp_get64(b + H_DATA) + 8));
	EXPECT_PATCH(QTK_E_PK_SECTION, tp_put64(b + H_META, 0));
	EXPECT_PATCH(QTK_E_PK_META, (tp_put64(b + H_META, n), tp_put64(b + 96, 0)));
	EXPECT_PATCH(QTK_E_PK_META, b[n - 1] = 'x');
	/* strings: past the end, wrapping, unterminated, empty */
	EXPECT_PATCH(QTK_E_PK_NAME, tp_put32(b + r0 + R_NAME_LEN, 0xffffffffu));
	EXPECT_PATCH(QTK_E_PK_NAME, tp_put32(b + r0 + R_NAME_OFF, 0xffffffffu));
	EXPECT_PATCH(QTK_E_PK_NAME, tp_put32(b + r0 + R_NAME_LEN, 0));
	EXPECT_PATCH(QTK_E_PK_NAME, tp_put32(b + r0 + R_NAME_LEN, tp_get32(b + r0 + R_NAME_LEN) + 1));
	EXPECT_PATCH(QTK_E_PK_NAME, b[str + tp_get32(b + r0) + 2] = 0);
	/* dims */
	EXPECT_PATCH(QTK_E_PK_NDIM, b[r0 + R_NDIM] = 9);
	EXPECT_PATCH(QTK_E_PK_NDIM, b[r0 + R_NDIM] = 255);
	EXPECT_PATCH(QTK_E_PK_SHAPE, tp_put64(b + r0 + R_SHAPE, (uint64_t)-3));
	EXPECT_PATCH(QTK_E_PK_SHAPE, (tp_put64(b + r0 + R_SHAPE, 1ull << 32), tp_put64(b + r0 + R_SHAPE + 8, 1ull << 32)));
	EXPECT_PATCH(QTK_E_PK_PLANE_SIZE, tp_put64(b + r0 + R_SHAPE, 4));
	/* scheme, layout */
	EXPECT_PATCH(QTK_E_PK_SCHEME, b[r1 + R_SCHEME] = 200);
	EXPECT_PATCH(QTK_E_PK_SCHEME, b[r1 + R_SCHEME] = QTK_SCHEME_COUNT);
	EXPECT_PATCH(QTK_E_PK_LAYOUT, tp_put32(b + r1 + R_GROUP, 17));
	EXPECT_PATCH(QTK_E_PK_LAYOUT, tp_put32(b + r1 + R_GROUP, 8192));
	EXPECT_PATCH(QTK_E_PK_LAYOUT, b[r1 + R_SRC_DT] = 99);
	EXPECT_PATCH(QTK_E_PK_PLANE_SIZE, tp_put32(b + r1 + R_GROUP, 16));
	/* planes: misaligned, overlapping, out of bounds, wrapping, flags */
	EXPECT_PATCH(QTK_E_PK_ALIGN, tp_put64(b + plane_field(r1, 1, 0), tp_get64(b + plane_field(r1, 1, 0)) + 8));
	EXPECT_PATCH(QTK_E_PK_ALIGN, tp_put64(b + plane_field(r1, 1, 0), tp_get64(b + plane_field(r1, 1, 0)) + 1));
	EXPECT_PATCH(QTK_E_PK_OVERLAP, tp_put64(b + plane_field(r1, 1, 0), tp_get64(b + plane_field(r1, 0, 0))));
	EXPECT_PATCH(QTK_E_PK_OVERLAP, tp_put64(b + plane_field(r1, 0, 0), tp_get64(b + plane_field(r0, 0, 0))));
	EXPECT_PATCH(QTK_E_PK_BOUNDS, tp_put64(b + plane_field(r1, 1, 0), 0));
	EXPECT_PATCH(QTK_E_PK_BOUNDS, tp_put64(b + plane_field(r1, 1, 0), UINT64_MAX - 63));
	EXPECT_PATCH(QTK_E_PK_BOUNDS, tp_put64(b + plane_field(r1, 1, 0), (n + 63) & ~(size_t)63));
	EXPECT_PATCH(QTK_E_PK_PLANE_FLAGS, tp_put32(b + plane_field(r1, 0, 28), 0x80));
	EXPECT_PATCH(QTK_E_PK_PLANE_FLAGS, tp_put32(b + plane_field(r1, 0, 28), QTK_PACK_PF_BYTESPLIT));
	EXPECT_PATCH(QTK_E_PK_PLANE_FLAGS, tp_put32(b + plane_field(r1, 0, 28), QTK_PACK_PF_ZSTD));
	EXPECT_PATCH(QTK_E_PK_PLANE_FLAGS, tp_put64(b + plane_field(r1, 0, 16), 1));
	EXPECT_PATCH(QTK_E_PK_PLANE_FLAGS, tp_put64(b + plane_field(r1, 2, 0), 64));
	/* compressed flag with a frame that is not zstd: found by verify */
	EXPECT_PATCH(QTK_E_PK_ZSTD, (tp_put32(b + plane_field(r1, 0, 28), QTK_PACK_PF_ZSTD),
	                             tp_put32(b + H_RFLAGS, 1)));
	/* names: duplicates and a broken index */
	{
		uint64_t idx = tp_get64(b + 48);
		size_t a = tp_record(b, tp_get32(b + idx)), c = tp_record(b, tp_get32(b + idx + 4));
		EXPECT_PATCH(QTK_E_PK_DUPLICATE, (tp_put32(b + c, tp_get32(b + a)),
		                                  tp_put32(b + c + 4, tp_get32(b + a + 4))));
		EXPECT_PATCH(QTK_E_PK_INDEX, tp_put32(b + idx + 4, tp_get32(b + idx)));
		EXPECT_PATCH(QTK_E_PK_INDEX, tp_put32(b + idx, 0xffffffffu));
		EXPECT_PATCH(QTK_E_PK_INDEX, (tp_put32(b + idx, tp_get32(b + idx + 4)),
		                              tp_put32(b + idx + 4, tp_get32(b + idx))));
	}
	/* a header field changed without fixing the header crc */
	b[H_DATA + 7] ^= 1;
	CHECK_EQ(open_buf(b, n, 0, NULL), QTK_E_PK_HEADER_CRC);
	free(orig);
}

/* Tensor starts must honour tensor_align, not just the 64-byte plane rule. */
TEST(pack_rejects_tensor_start_off_page)
{
	tp_sample s;
	qtk_status st;
	size_t n, r;
	uint8_t *b;

	tp_sample_init(&s);
	REQUIRE(tp_write(&s, t_tmp("p.qtk"), 4096, 0, NULL, &st) == QTK_OK);
	b = t_read_file(t_tmp("p.qtk"), &n);
	REQUIRE(b);
	r = rec_of(b, "model.int8.weight");
	REQUIRE(r);
	tp_put64(b + plane_field(r, 0, 0), tp_get64(b + plane_field(r, 0, 0)) + 64);
	tp_fix_crcs(b, n);
	CHECK_EQ(open_buf(b, n, 0, &st), QTK_E_PK_ALIGN);
	CHECK(strstr(st.msg, "4096-byte aligned") != NULL);
	free(b);
}

/* A NaN or Inf stored scale (with a matching crc) passes open, fails verify. */
TEST(pack_nonfinite_scales_found_by_verify)
{
	size_t n;
	uint8_t *b = sample_file(&n);
	static const struct { const char *name; int plane; int esize; uint32_t bits; } cases[] = {
		{ "model.int8.weight", 1, 2, 0x7c00 },          /* f16 +Inf */
		{ "model.nf4.weight", 1, 2, 0xfe01 },           /* f16 NaN */
		{ "model.int4-affine.weight", 2, 2, 0x7c00 },   /* bias Inf */
		{ "affine.f32_scales", 1, 4, 0x7fc00000 },      /* f32 NaN */
		{ "int8.row_bf16", 1, 2, 0xff80 },              /* bf16 -Inf */
		{ "nf4.double_quant", 3, 4, 0x7f800000 },       /* dq Inf */
	};

	REQUIRE(b);
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		uint8_t *m = malloc(n);
		size_t r;
		uint64_t off, size;
		qtk_pack_file *f;
		qtk_status st;

		memcpy(m, b, n);
		r = rec_of(m, cases[c].name);
		REQUIRE(r);
		off = tp_get64(m + plane_field(r, cases[c].plane, 0));
		size = tp_get64(m + plane_field(r, cases[c].plane, 8));
		REQUIRE(size >= 2 * (uint64_t)cases[c].esize);
		if (cases[c].esize == 2) {
			m[off + 2] = (uint8_t)cases[c].bits;
			m[off + 3] = (uint8_t)(cases[c].bits >> 8);
		} else {
			tp_put32(m + off + 4, cases[c].bits);
		}
		tp_put32(m + plane_field(r, cases[c].plane, 24), (uint32_t)crc32(0, m + off, (uInt)size));
		tp_fix_crcs(m, n);
		REQUIRE(qtk_pack_open_mem(m, n, "c.qtk", 0, &f, &st) == QTK_OK);
		CHECK_MSG(qtk_pack_verify(f, &st) == QTK_E_PK_SCALES, "%s", cases[c].name);
		CHECK(strstr(st.msg, cases[c].name) && strstr(st.msg, "element 1"));
		qtk_pack_close(f);
		CHECK_EQ(open_buf(m, n, QTK_PACK_OPEN_VERIFY, NULL), QTK_E_PK_SCALES);
		free(m);
	}
	free(b);
}

TEST(pack_bad_metadata_json_found_by_verify)
{
	tp_sample s;
	qtk_status st;
	size_t n;
	uint8_t *b;
	uint64_t meta;

	tp_sample_init(&s);
	REQUIRE(tp_write(&s, t_tmp("m.qtk"), 64, 0, "{\"a\":1}", &st) == QTK_OK);
	b = t_read_file(t_tmp("m.qtk"), &n);
	REQUIRE(b);
	meta = tp_get64(b + H_META);
	b[meta] = '[';
	b[meta + 6] = ']';
	tp_put32(b + 120, (uint32_t)crc32(0, b + meta, (uInt)(n - meta)));
	tp_fix_crcs(b, n);
	CHECK_EQ(open_buf(b, n, 0, &st), QTK_OK);
	CHECK_EQ(open_buf(b, n, QTK_PACK_OPEN_VERIFY, &st), QTK_E_PK_META);
	free(b);
}

TEST(pack_open_errors_for_missing_and_odd_paths)
{
	qtk_pack_file *f = (qtk_pack_file *)1;
	qtk_status st;

	CHECK_EQ(qtk_pack_open(t_tmp("none.qtk"), 0, &f, &st), QTK_E_NOT_FOUND);
	CHECK(f == NULL);
	CHECK_EQ(qtk_pack_open(t_tmpdir(), 0, &f, &st), QTK_E_IO);
	CHECK_EQ(qtk_pack_open_mem(NULL, 0, NULL, 0, &f, &st), QTK_E_PK_TOO_SMALL);
	CHECK_EQ(qtk_pack_open_mem(NULL, 5, NULL, 0, &f, &st), QTK_E_ARG);
}

/* A future minor version: a longer header, longer records with unknown
 * fields, an unknown optional flag. A 1.0 reader must read it unchanged. */
TEST(pack_reads_future_minor_version)
{
	tp_sample s;
	qtk_status st;
	size_t n, count, oldstr, strsize, newdir = 136, rec = 232, newidx, newstr;
	uint8_t *b, *m;
	qtk_pack_file *f;

	tp_sample_init(&s);
	s.n = 10; /* leaves room in the padding before the data for the growth */
	REQUIRE(tp_write(&s, t_tmp("p.qtk"), 4096, 0, "{\"a\":1}", &st) == QTK_OK);
	b = t_read_file(t_tmp("p.qtk"), &n);
	REQUIRE(b);
	count = (size_t)tp_get64(b + H_COUNT);
	oldstr = (size_t)tp_get64(b + 56);
	strsize = (size_t)tp_get64(b + H_STRSIZE);
	newidx = newdir + rec * count;
	newstr = newidx + 4 * count;
	REQUIRE(newstr + strsize <= tp_get64(b + H_DATA));
	m = calloc(1, n);
	memcpy(m, b, n);
	memset(m + 128, 0, (size_t)tp_get64(b + H_DATA) - 128);
	memset(m + 128, 0xEE, 8);                      /* unknown header field */
	tp_put32(m + 8, 1 | (1u << 16));               /* version 1.1 */
	tp_put32(m + H_HSIZE, (uint32_t)newdir);
	tp_put32(m + 24, 0x80000000u);                 /* unknown optional flag */
	tp_put32(m + H_RECSIZE, (uint32_t)rec);
	tp_put64(m + 40, newdir);
	tp_put64(m + 48, newidx);
	tp_put64(m + 56, newstr);
	for (size_t i = 0; i < count; i++) {
		memcpy(m + newdir + i * rec, b + tp_record(b, i), 224);
		memset(m + newdir + i * rec + 224, 0xAB, 8); /* unknown record field */
	}
	memcpy(m + newidx, b + tp_get64(b + 48), 4 * count);
	memcpy(m + newstr, b + oldstr, strsize);
	tp_fix_crcs(m, n);
	REQUIRE(qtk_pack_open_mem(m, n, "future.qtk", QTK_PACK_OPEN_VERIFY, &f, &st) == QTK_OK);
	CHECK_EQ(qtk_pack_version_minor(f), 1);
	CHECK_EQ(qtk_pack_count(f), s.n);
	for (size_t i = 0; i < s.n; i++) {
		const qtk_pack_tensor *t = qtk_pack_find(f, s.d[i].name);
		CHECK(t && t == qtk_pack_get(f, i) && t->ndim == s.d[i].ndim &&
		      t->layout.scheme == s.d[i].layout.scheme);
	}
	qtk_pack_close(f);
	free(m);
	free(b);
}
