/* tests: the zstd transport form (pack / unpack round trip, byte-plane
 * split) and the runtime loader over both forms. */
#include <stdlib.h>
#include <unistd.h>

#include "qtk_runtime.h"
#include "test.h"
#include "test_conv_util.h"
#include "test_pack_util.h"

TEST(pack_zstd_pack_unpack_is_lossless)
{
	tp_sample s;
	qtk_status st;
	char orig[4200];

	snprintf(orig, sizeof orig, "%s", t_tmp("o.qtk"));
	tp_sample_init(&s);
	REQUIRE(tp_write(&s, orig, 4096, 0, "{\"k\":[1,2]}", &st) == QTK_OK);
	for (int split = 0; split < 2; split++) {
		qtk_pack_file *f;
		int zplanes = 0, splitplanes = 0;

		REQUIRE(qtk_pack_transcode(orig, t_tmp("z.qtk"), 1, 3, split, &(qtk_write_opts){ .force = 1 },
		                           &st) == QTK_OK);
		REQUIRE(qtk_pack_open(t_tmp("z.qtk"), QTK_PACK_OPEN_VERIFY, &f, &st) == QTK_OK);
		for (size_t i = 0; i < qtk_pack_count(f); i++)
			for (int p = 0; p < QTK_PLANE_MAX; p++) {
				const qtk_pack_plane *pl = &qtk_pack_get(f, i)->planes[p];
				zplanes += (pl->flags & QTK_PACK_PF_ZSTD) != 0;
				splitplanes += (pl->flags & QTK_PACK_PF_BYTESPLIT) != 0;
				CHECK(!pl->size || pl->flags & QTK_PACK_PF_ZSTD);
			}
		CHECK(zplanes > 10);
		CHECK(split ? splitplanes >= 5 : splitplanes == 0);
		CHECK_STR(qtk_pack_metadata(f, NULL), "{\"k\":[1,2]}");
		qtk_pack_close(f);
		REQUIRE(qtk_pack_transcode(t_tmp("z.qtk"), t_tmp("u.qtk"), 0, 0, 0,
		                           &(qtk_write_opts){ .force = 1 }, &st) == QTK_OK);
		CHECK_MSG(t_same_file(orig, t_tmp("u.qtk")), "split %d: unpacked file differs", split);
	}
	/* compressed frames corrupted inside: verify reports crc or zstd error */
	{
		size_t n;
		uint8_t *b = t_read_file(t_tmp("z.qtk"), &n);
		qtk_pack_file *f;
		uint64_t data = tp_get64(b + 72);

		REQUIRE(b);
		b[data + 20] ^= 0x55;
		REQUIRE(qtk_pack_open_mem(b, n, "z", 0, &f, &st) == QTK_OK);
		qtk_err rc = qtk_pack_verify(f, &st);
		CHECK_MSG(rc == QTK_E_CHECKSUM || rc == QTK_E_PK_ZSTD, "%s", qtk_err_name(rc));
		qtk_pack_close(f);
		free(b);
	}
	CHECK_EQ(qtk_pack_transcode(t_tmp("missing.qtk"), t_tmp("m2.qtk"), 1, 3, 1, NULL, &st),
	         QTK_E_NOT_FOUND);
	CHECK(!t_exists(t_tmp("m2.qtk")));
}

static void check_model(const tp_sample *s, const qtk_rt_model *m, int zero_copy)
{
	REQUIRE(qtk_rt_count(m) == s->n);
	for (size_t i = 0; i < s->n; i++) {
		const qtk_rt_tensor *t = qtk_rt_find(m, s->d[i].name);

		REQUIRE(t && t == qtk_rt_get(m, i));
		CHECK_EQ(t->scheme, s->d[i].layout.scheme);
		CHECK_EQ(t->group, s->d[i].layout.group);
		CHECK_EQ(t->ndim, s->d[i].ndim);
		CHECK_EQ(qtk_rt_prefetch(m, t), 0);
		for (int p = 0; p < QTK_PLANE_MAX; p++) {
			uint8_t *want;

			if (!t->planes[p].size) {
				CHECK(t->planes[p].data == NULL);
				continue;
			}
			CHECK((uintptr_t)t->planes[p].data % 64 == 0);
			want = malloc(t->planes[p].size);
			tp_plane_bytes(s, i, p, want, t->planes[p].size);
			CHECK_MSG(!memcmp(want, t->planes[p].data, t->planes[p].size), "%s plane %d",
			          t->name, p);
			free(want);
		}
		if (t->planes[0].size)
			CHECK_EQ(t->zero_copy, zero_copy);
	}
	CHECK(qtk_rt_find(m, "absent") == NULL);
}

TEST(pack_runtime_loads_plain_and_zstd)
{
	tp_sample s;
	qtk_status st;
	qtk_rt_model *m;
	const qtk_rt_tensor *t;

	tp_sample_init(&s);
	REQUIRE(tp_write(&s, t_tmp("p.qtk"), 4096, 0, "{}", &st) == QTK_OK);
	REQUIRE(qtk_rt_open(t_tmp("p.qtk"), QTK_RT_VERIFY | QTK_RT_PREFETCH, &m, &st) == QTK_OK);
	check_model(&s, m, 1);
	t = qtk_rt_find(m, "model.nf4.weight");
	REQUIRE(t);
	CHECK_EQ(t->planes[QTK_PLANE_CODES].dtype, QTK_DT_U8);
	CHECK_EQ(t->planes[QTK_PLANE_SCALES].dtype, QTK_DT_F16);
	CHECK_EQ(t->rows, 3);
	CHECK_EQ(t->cols, 80);
	CHECK_EQ(qtk_rt_find(m, "model.bf16.weight")->planes[0].dtype, QTK_DT_BF16);
	CHECK_EQ(qtk_rt_find(m, "nf4.double_quant")->planes[QTK_PLANE_DQ].dtype, QTK_DT_F32);
	CHECK_EQ(qtk_rt_verify(m, &st), QTK_OK);
	CHECK_STR(qtk_rt_metadata(m), "{}");
	qtk_rt_close(m);
	REQUIRE(qtk_pack_transcode(t_tmp("p.qtk"), t_tmp("z.qtk"), 1, 1, 1, NULL, &st) == QTK_OK);
	REQUIRE(qtk_rt_open(t_tmp("z.qtk"), 0, &m, &st) == QTK_OK);
	check_model(&s, m, 0);
	qtk_rt_close(m);
	qtk_rt_close(NULL);
	m = (qtk_rt_model *)1;
	CHECK_EQ(qtk_rt_open(t_tmp("none"), 0, &m, &st), QTK_E_NOT_FOUND);
	CHECK(m == NULL);
}

/* Loading under allocation failure: clean error, no leak (ASan). */
TEST(pack_runtime_alloc_faults)
{
	tp_sample s;
	qtk_status st;

	tp_sample_init(&s);
	REQUIRE(tp_write(&s, t_tmp("p.qtk"), 4096, 0, "{}", &st) == QTK_OK);
	REQUIRE(qtk_pack_transcode(t_tmp("p.qtk"), t_tmp("z.qtk"), 1, 1, 1, NULL, &st) == QTK_OK);
	for (uint64_t nth = 1;; nth++) {
		qtk_rt_model *m = NULL;
		qtk_err rc;

		qtk_fault_arm(QTK_FAULT_ALLOC, nth, 0);
		rc = qtk_rt_open(t_tmp("z.qtk"), 0, &m, &st);
		if (!qtk_fault_fired(QTK_FAULT_ALLOC)) {
			CHECK_EQ(rc, QTK_OK);
			qtk_rt_close(m);
			break;
		}
		CHECK_EQ(rc, QTK_E_NOMEM);
		CHECK(m == NULL);
	}
	qtk_fault_arm(QTK_FAULT_ALLOC, 0, 0);
}

/* pack / unpack under failing allocations and writes: clean error, output
 * path untouched, no temporary left. */
TEST(pack_transcode_fault_sweep)
{
	tp_sample s;
	qtk_status st;
	char in[4200], out[4200];
	static const qtk_fault_kind kinds[] = { QTK_FAULT_ALLOC, QTK_FAULT_WRITE, QTK_FAULT_FSYNC,
	                                        QTK_FAULT_RENAME, QTK_FAULT_OPEN };

	snprintf(in, sizeof in, "%s", t_tmp("in.qtk"));
	snprintf(out, sizeof out, "%s", t_tmp("out.qtk"));
	tp_sample_init(&s);
	REQUIRE(tp_write(&s, in, 4096, 0, "{}", &st) == QTK_OK);
	for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
		for (int compress = 0; compress < 2; compress++) {
			uint64_t nth;
			for (nth = 1; nth < 10000; nth++) {
				qtk_err rc;

				unlink(out);
				qtk_fault_arm(kinds[k], nth, 28 /* ENOSPC */);
				rc = qtk_pack_transcode(in, out, compress, 1, 1, NULL, &st);
				if (!qtk_fault_fired(kinds[k]) || rc == QTK_OK) {
					qtk_fault_arm(kinds[k], 0, 0);
					CHECK_EQ(rc, QTK_OK);
					break;
				}
				qtk_fault_arm(kinds[k], 0, 0);
				CHECK_MSG(!t_exists(out), "kind %d n %llu: output left", kinds[k],
				          (unsigned long long)nth);
				CHECK_MSG(t_dir_entries(t_tmpdir()) == 1, "kind %d n %llu: temporary left",
				          kinds[k], (unsigned long long)nth);
			}
			CHECK(nth > 1);
		}
	}
}

/* A zstd frame decodes to the same bytes with some of its bits changed
 * (the frame header's unused bit; bits inside compressed blocks), so the
 * plane crc32 of the decompressed bytes cannot see them: files of the
 * transport form carry a crc32 of each tensor's stored bytes as well
 * (optional flag STORED_CRC). Every bit of the first 64 and last 16 bytes
 * of every frame, and of every 61st byte, of a real model's zstd form
 * (stories260K BF16 as int4 g32 with BF16 norms kept): verify refuses each
 * change. Without the stored crc, 425 of these changes verified. */
TEST(pack_zstd_every_stored_bit_is_covered)
{
	const char *plain = t_tmp("s.qtk"), *z = t_tmp("sz.qtk");
	qtk_conv_opts o = { .input = t_data("stories260K/model.bf16.safetensors"), .output = plain,
	                    .scale_dtype = QTK_DT_F16 };
	qtk_write_opts wo = { 0 };
	qtk_pack_file *f;
	qtk_status st;
	size_t n, cases = 0, accepted = 0;
	uint8_t *b, *m;

	REQUIRE(t_convert(&o, QTK_SCHEME_INT4, 32, NULL, NULL, &st) == QTK_OK);
	REQUIRE(qtk_pack_transcode(plain, z, 1, 9, 1, &wo, &st) == QTK_OK);
	b = t_read_file(z, &n);
	REQUIRE(b && qtk_pack_open_mem(b, n, "sz.qtk", QTK_PACK_OPEN_VERIFY, &f, &st) == QTK_OK);
	m = malloc(n);
	memcpy(m, b, n);
	for (size_t i = 0; i < qtk_pack_count(f); i++) {
		const qtk_pack_tensor *t = qtk_pack_get(f, i);

		for (int p = 0; p < QTK_PLANE_MAX; p++) {
			uint64_t off = t->planes[p].offset, ss = t->planes[p].stored_size;

			for (uint64_t k = 0; k < ss; k++) {
				if (k >= 64 && k + 16 < ss && k % 61)
					continue;
				for (int bit = 0; bit < 8; bit++) {
					qtk_pack_file *g;

					m[off + k] ^= (uint8_t)(1u << bit);
					cases++;
					if (qtk_pack_open_mem(m, n, "sz.qtk", 0, &g, &st) == QTK_OK &&
					    qtk_pack_verify_tensor(g, i, &st) == QTK_OK && accepted++ < 8)
						t_fail_at(__FILE__, __LINE__, "'%s' plane %d byte %llu bit %d: verified",
						          t->name, p, (unsigned long long)k, bit);
					qtk_pack_close(g);
					m[off + k] ^= (uint8_t)(1u << bit);
				}
			}
		}
	}
	printf("    %zu bit flips in %zu tensors' frames, %zu verified\n", cases, qtk_pack_count(f),
	       accepted);
	CHECK_EQ(accepted, 0);
	qtk_pack_close(f);
	free(m);
	free(b);
}

/* A transport-form file written before the stored crc (flag clear, record
 * bytes 216..219 zero) still opens and verifies; the plain form never has
 * the flag, so unpack gives back the original bytes. */
TEST(pack_zstd_without_stored_crc_still_reads)
{
	tp_sample s;
	qtk_status st;
	qtk_write_opts wo = { 0 };
	qtk_pack_file *f;
	size_t n;
	uint8_t *b;

	tp_sample_init(&s);
	REQUIRE(tp_write(&s, t_tmp("p.qtk"), 4096, 0, NULL, &st) == QTK_OK);
	REQUIRE(qtk_pack_transcode(t_tmp("p.qtk"), t_tmp("z.qtk"), 1, 3, 1, &wo, &st) == QTK_OK);
	b = t_read_file(t_tmp("z.qtk"), &n);
	REQUIRE(b);
	CHECK_EQ(tp_get32(b + 24), 1); /* STORED_CRC */
	tp_put32(b + 24, 0);
	for (size_t i = 0; i < s.n; i++)
		tp_put32(b + tp_record(b, i) + 216, 0);
	tp_fix_crcs(b, n);
	CHECK_EQ(qtk_pack_open_mem(b, n, "old.qtk", QTK_PACK_OPEN_VERIFY, &f, &st), QTK_OK);
	qtk_pack_close(f);
	free(b);
	b = t_read_file(t_tmp("p.qtk"), &n);
	REQUIRE(b);
	CHECK_EQ(tp_get32(b + 24), 0);
	free(b);
	REQUIRE(qtk_pack_transcode(t_tmp("z.qtk"), t_tmp("u.qtk"), 0, 0, 0, &wo, &st) == QTK_OK);
	CHECK(t_same_file(t_tmp("p.qtk"), t_tmp("u.qtk")));
}
