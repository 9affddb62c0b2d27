/* tests (private): see test_hostile_util.h. */
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "test_gguf_util.h"
#include "test_hostile_util.h"
#include "test_pack_util.h"

/* ---- per-case time limit ------------------------------------------- */

static char hs_now[512];

static void on_alarm(int sig)
{
	static const char pre[] = "    HANG: case did not finish in time: ";
	size_t n = strnlen(hs_now, sizeof hs_now);

	(void)sig;
	if (write(1, pre, sizeof pre - 1) < 0 || write(1, hs_now, n) < 0 || write(1, "\n", 1) < 0)
		_exit(3);
	_exit(3);
}

void hs_guard_init(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
}

void hs_case(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(hs_now, sizeof hs_now, fmt, ap);
	va_end(ap);
	alarm(HS_CASE_SECONDS);
}

void hs_case_done(void)
{
	alarm(0);
}

static char hs_dir[256];

const char *hs_scratch(void)
{
	struct stat sb;

	if (hs_dir[0])
		return hs_dir;
	snprintf(hs_dir, sizeof hs_dir, "/dev/shm/qtk-hostile-XXXXXX");
	if (stat("/dev/shm", &sb) != 0 || !S_ISDIR(sb.st_mode) || !mkdtemp(hs_dir))
		snprintf(hs_dir, sizeof hs_dir, "%.200s/scratch", t_tmpdir());
	if (t_system("mkdir -p '%s'", hs_dir) != 0)
		t_fail_at(__FILE__, __LINE__, "cannot make %s", hs_dir);
	return hs_dir;
}

void hs_scratch_done(void)
{
	if (hs_dir[0] && !strncmp(hs_dir, "/dev/shm/", 9))
		t_system("rm -rf '%s'", hs_dir);
	hs_dir[0] = 0;
}

/* ---- mutations -------------------------------------------------------- */

int hs_mutate(const uint8_t *src, size_t n, hs_mut m, uint8_t *dst, size_t *len)
{
	uint8_t v;

	if (m.kind == HS_TRUNC) {
		memcpy(dst, src, m.at);
		*len = m.at;
		return m.at != n;
	}
	v = m.kind == HS_SET00 ? 0x00 : m.kind == HS_SETFF ? 0xff
	  : m.kind == HS_XOR01 ? src[m.at] ^ 0x01 : src[m.at] ^ 0x80;
	memcpy(dst, src, n);
	dst[m.at] = v;
	*len = n;
	return v != src[m.at];
}

const char *hs_mut_str(hs_mut m)
{
	static char buf[4][48];
	static int i;
	static const char *const what[] = { "", "0x00", "0xff", "x^0x01", "x^0x80" };
	char *b = buf[i++ & 3];

	if (m.kind == HS_TRUNC)
		snprintf(b, sizeof buf[0], "cut at %zu", m.at);
	else
		snprintf(b, sizeof buf[0], "byte %zu = %s", m.at, what[m.kind]);
	return b;
}

size_t hs_mut_count(size_t n)
{
	return n * HS_KINDS;
}

hs_mut hs_mut_get(size_t n, size_t k)
{
	hs_mut m;

	if (k < n) {
		m.at = k;
		m.kind = HS_TRUNC;
	} else {
		m.at = (k - n) / (HS_KINDS - 1);
		m.kind = 1 + (int)((k - n) % (HS_KINDS - 1));
	}
	return m;
}

/* ---- samples ------------------------------------------------------------ */

/* Deterministic bytes of a dtype with finite float values. */
static void fill(qtk_dtype dt, uint8_t *p, size_t nbytes, uint64_t seed)
{
	uint64_t s = seed;

	for (size_t k = 0; k < nbytes; k++)
		p[k] = (uint8_t)t_rand_u64(&s);
	for (size_t k = 0; k < nbytes; k++) {
		size_t es = qtk_dtype_size(dt);
		if (dt == QTK_DT_BOOL)
			p[k] &= 1;
		else if (k % es == es - 1 && (dt == QTK_DT_F32 || dt == QTK_DT_F64 || dt == QTK_DT_BF16))
			p[k] &= 0xbf; /* clear the exponent's top bit: small finite values */
		else if (k % es == es - 1 && dt == QTK_DT_F16)
			p[k] &= 0xbb;
		else if (dt == QTK_DT_F8_E4M3)
			p[k] &= 0xbf;
	}
}

static uint8_t *write_st(const char *path, const qtk_st_desc *d, size_t nd,
                         const char *const *meta, size_t *n)
{
	const void *data[16];
	uint8_t *bufs[16];
	qtk_write_opts wo = { .force = 1 };
	qtk_status st;
	uint8_t *out = NULL;

	for (size_t i = 0; i < nd; i++) {
		uint64_t ne = 1;
		for (uint32_t k = 0; k < d[i].ndim; k++)
			ne *= d[i].shape[k];
		bufs[i] = malloc(ne * qtk_dtype_size(d[i].dtype) + 1);
		fill(d[i].dtype, bufs[i], ne * qtk_dtype_size(d[i].dtype), 100 + i);
		data[i] = bufs[i];
	}
	if (qtk_st_write(path, d, data, nd, meta, &wo, &st) == QTK_OK)
		out = t_read_file(path, n);
	else
		t_fail_at(__FILE__, __LINE__, "writing %s: %s", path, st.msg);
	for (size_t i = 0; i < nd; i++)
		free(bufs[i]);
	return out;
}

uint8_t *hs_st_sample(size_t *n)
{
	static const qtk_st_desc d[] = {
		{ .name = "model.w.f16", .dtype = QTK_DT_F16, .ndim = 2, .shape = { 32, 64 } },
		{ .name = "model.w.f32", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 4, 8 } },
		{ .name = "norm.bf16", .dtype = QTK_DT_BF16, .ndim = 1, .shape = { 16 } },
		{ .name = "x.f64", .dtype = QTK_DT_F64, .ndim = 1, .shape = { 2 } },
		{ .name = "x.f8", .dtype = QTK_DT_F8_E4M3, .ndim = 2, .shape = { 2, 2 } },
		{ .name = "ids.i32", .dtype = QTK_DT_I32, .ndim = 1, .shape = { 3 } },
		{ .name = "mask.u8", .dtype = QTK_DT_U8, .ndim = 1, .shape = { 5 } },
		{ .name = "flag.bool", .dtype = QTK_DT_BOOL, .ndim = 1, .shape = { 3 } },
		{ .name = "scalar", .dtype = QTK_DT_F32, .ndim = 0 },
		{ .name = "empty", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 0, 4 } },
	};
	static const char *const meta[] = { "format", "pt", "note", "h\xc3\xa9llo \xe2\x9c\x93",
	                                    NULL };

	return write_st(t_tmp("hs-sample.safetensors"), d, sizeof d / sizeof d[0], meta, n);
}

int hs_st_sharded(const char *dir)
{
	static const qtk_st_desc s1[] = {
		{ .name = "a.w", .dtype = QTK_DT_F16, .ndim = 2, .shape = { 8, 256 } },
		{ .name = "a.b", .dtype = QTK_DT_BF16, .ndim = 1, .shape = { 4 } },
	};
	static const qtk_st_desc s2[] = {
		{ .name = "b.w", .dtype = QTK_DT_F32, .ndim = 2, .shape = { 2, 8 } },
		{ .name = "b.i", .dtype = QTK_DT_I32, .ndim = 1, .shape = { 2 } },
	};
	static const char index[] =
		"{\"metadata\": {\"total_size\": 4184},\n"
		" \"weight_map\": {\"a.w\": \"s1.safetensors\", \"a.b\": \"s1.safetensors\",\n"
		"                \"b.w\": \"s2.safetensors\", \"b.i\": \"s2.safetensors\"}}\n";
	static const char *const meta[] = { "format", "pt", NULL };
	char p[3][4200];
	size_t n;
	uint8_t *a, *b;

	snprintf(p[0], sizeof p[0], "%s/s1.safetensors", dir);
	snprintf(p[1], sizeof p[1], "%s/s2.safetensors", dir);
	snprintf(p[2], sizeof p[2], "%s/m.safetensors.index.json", dir);
	a = write_st(p[0], s1, 2, meta, &n);
	b = write_st(p[1], s2, 2, NULL, &n);
	free(a);
	free(b);
	return !a || !b || t_write_file(p[2], index, sizeof index - 1);
}

uint8_t *hs_gguf_sample(const char *path, size_t *n)
{
	static const struct { const char *name; uint32_t type, nd; uint64_t ne0, ne1; } T[] = {
		{ "blk.0.w_f16", QTK_GGML_F16, 2, 64, 32 }, { "blk.0.w_f32", QTK_GGML_F32, 2, 16, 8 },
		{ "blk.0.w_q8_0", QTK_GGML_Q8_0, 2, 64, 4 }, { "blk.0.w_q4_0", QTK_GGML_Q4_0, 2, 64, 2 },
		{ "blk.0.w_q4_1", QTK_GGML_Q4_1, 2, 32, 2 }, { "norm_bf16", QTK_GGML_BF16, 1, 32, 1 },
		{ "ids_i8", QTK_GGML_I8, 1, 16, 1 }, { "ids_i32", QTK_GGML_I32, 1, 4, 1 },
	};
	enum { NT = sizeof T / sizeof T[0] };
	static const char *const strs[] = { "<s>", "h\xc3\xa9llo", "", "\xe2\x9c\x93 ok" };
	uint8_t u8 = 200, b1 = 1, bools[4] = { 1, 0, 0, 1 };
	int8_t i8 = -5;
	uint16_t u16 = 65000;
	int16_t i16 = -300;
	int32_t i32 = -70000, ai32[3] = { -1, 0, 7 };
	uint64_t u64 = 1ull << 40, au64[2] = { 3, UINT64_MAX };
	int64_t i64 = -(1ll << 40);
	float f32 = 1.5f, af32[3] = { 0.25f, -2.0f, 1e-3f };
	double f64 = -0.125;
	qtk_gguf_kvs *kvs = qtk_gguf_kvs_new();
	qtk_gguf_desc d[NT];
	qtk_gguf_writer *w = NULL;
	qtk_write_opts wo = { .force = 1 };
	qtk_status st;
	qtk_gguf_file *tg = NULL;
	tg_file g;
	qtk_err rc;
	uint8_t *out = NULL;

	tg_build(&g, 3); /* for its nested array */
	rc = qtk_gguf_open_mem(g.buf, g.len, "tg", &tg, &st);
	if (!rc) rc = qtk_gguf_kvs_add_str(kvs, "general.architecture", "hostile", 7, &st);
	if (!rc) rc = qtk_gguf_kvs_add_u32(kvs, "general.alignment", 32, &st);
	if (!rc) rc = qtk_gguf_kvs_add(kvs, "t.u8", QTK_GGUF_U8, &u8, &st);
	if (!rc) rc = qtk_gguf_kvs_add(kvs, "t.i8", QTK_GGUF_I8, &i8, &st);
	if (!rc) rc = qtk_gguf_kvs_add(kvs, "t.u16", QTK_GGUF_U16, &u16, &st);
	if (!rc) rc = qtk_gguf_kvs_add(kvs, "t.i16", QTK_GGUF_I16, &i16, &st);
	if (!rc) rc = qtk_gguf_kvs_add(kvs, "t.i32", QTK_GGUF_I32, &i32, &st);
	if (!rc) rc = qtk_gguf_kvs_add(kvs, "t.f32", QTK_GGUF_F32, &f32, &st);
	if (!rc) rc = qtk_gguf_kvs_add(kvs, "t.bool", QTK_GGUF_BOOL, &b1, &st);
	if (!rc) rc = qtk_gguf_kvs_add(kvs, "t.u64", QTK_GGUF_U64, &u64, &st);
	if (!rc) rc = qtk_gguf_kvs_add(kvs, "t.i64", QTK_GGUF_I64, &i64, &st);
	if (!rc) rc = qtk_gguf_kvs_add(kvs, "t.f64", QTK_GGUF_F64, &f64, &st);
	if (!rc) rc = qtk_gguf_kvs_add_arr(kvs, "t.arr_i32", QTK_GGUF_I32, ai32, 3, &st);
	if (!rc) rc = qtk_gguf_kvs_add_arr(kvs, "t.arr_f32", QTK_GGUF_F32, af32, 3, &st);
	if (!rc) rc = qtk_gguf_kvs_add_arr(kvs, "t.arr_u64", QTK_GGUF_U64, au64, 2, &st);
	if (!rc) rc = qtk_gguf_kvs_add_arr(kvs, "t.arr_bool", QTK_GGUF_BOOL, bools, 4, &st);
	if (!rc) rc = qtk_gguf_kvs_add_arr_str(kvs, "tokenizer.ggml.tokens", strs, NULL, 4, &st);
	if (!rc) rc = qtk_gguf_kvs_add_kv(kvs, qtk_gguf_kv_find(tg, "t.nested"), &st);
	for (int i = 0; i < NT; i++)
		d[i] = (qtk_gguf_desc){ .name = T[i].name, .type = T[i].type, .n_dims = T[i].nd,
		                        .ne = { T[i].ne0, T[i].ne1, 1, 1 } };
	if (!rc)
		rc = qtk_gguf_writer_open(&w, path, kvs, d, NT, &wo, &st);
	for (int i = 0; !rc && i < NT; i++) {
		uint64_t nb = qtk_gguf_writer_tensor_bytes(w, i);
		uint32_t bb = qtk_ggml_block_bytes(T[i].type), blck = qtk_ggml_block_elems(T[i].type);
		uint8_t *p = malloc(nb);

		fill(T[i].type == QTK_GGML_F16 ? QTK_DT_F16 : T[i].type == QTK_GGML_BF16 ? QTK_DT_BF16
		     : T[i].type == QTK_GGML_F32 ? QTK_DT_F32 : QTK_DT_U8, p, nb, 200 + (uint64_t)i);
		if (blck == 32) /* finite f16 block scales (and Q4_1 mins) */
			for (uint64_t b = 0; b < nb / bb; b++) {
				p[b * bb + 1] &= 0x3b;
				if (T[i].type == QTK_GGML_Q4_1)
					p[b * bb + 3] &= 0x3b;
			}
		rc = qtk_gguf_writer_put(w, (size_t)i, 0, p, nb, &st);
		free(p);
	}
	if (!rc) {
		rc = qtk_gguf_writer_commit(w, &st);
		w = NULL;
	}
	qtk_gguf_writer_abort(w);
	if (!rc)
		out = t_read_file(path, n);
	else
		t_fail_at(__FILE__, __LINE__, "GGUF sample: %s", st.msg);
	qtk_gguf_kvs_free(kvs);
	qtk_gguf_close(tg);
	tg_free(&g);
	return out;
}

uint8_t *hs_qtk_sample(const char *path, int zstd, size_t *n)
{
	tp_sample s;
	qtk_status st;
	char plain[4200];
	qtk_write_opts wo = { .force = 1 };

	snprintf(plain, sizeof plain, "%s.plain", path);
	tp_sample_init(&s);
	if (tp_write(&s, zstd ? plain : path, 64, 1,
	             "{\"qtk_version\":\"0.1.0\",\"note\":\"h\\u00e9llo\"}", &st) != QTK_OK ||
	    (zstd && qtk_pack_transcode(plain, path, 1, 3, 1, &wo, &st) != QTK_OK)) {
		t_fail_at(__FILE__, __LINE__, "qtk sample: %s", st.msg);
		return NULL;
	}
	if (zstd)
		unlink(plain);
	return t_read_file(path, n);
}

/* ---- GGUF validator ------------------------------------------------------ */

/* ggml's type table (block elements, block bytes) from the GGUF spec and
 * ggml.c; retired ids 4, 5, 31-33, 36-38 are absent (0). */
static const struct { uint32_t blck, bytes; } gv_types[40] = {
	[0] = { 1, 4 }, [1] = { 1, 2 }, [2] = { 32, 18 }, [3] = { 32, 20 }, [6] = { 32, 22 },
	[7] = { 32, 24 }, [8] = { 32, 34 }, [9] = { 32, 36 }, [10] = { 256, 84 },
	[11] = { 256, 110 }, [12] = { 256, 144 }, [13] = { 256, 176 }, [14] = { 256, 210 },
	[15] = { 256, 292 }, [16] = { 256, 66 }, [17] = { 256, 74 }, [18] = { 256, 98 },
	[19] = { 256, 50 }, [20] = { 32, 18 }, [21] = { 256, 110 }, [22] = { 256, 82 },
	[23] = { 256, 136 }, [24] = { 1, 1 }, [25] = { 1, 2 }, [26] = { 1, 4 }, [27] = { 1, 8 },
	[28] = { 1, 8 }, [29] = { 256, 56 }, [30] = { 1, 2 }, [34] = { 256, 54 },
	[35] = { 256, 66 }, [39] = { 32, 17 },
};

typedef struct {
	const uint8_t *b;
	uint64_t n, pos;
	unsigned wide;
	char *why;
	size_t wn;
	uint32_t align;
} gv;

static int gv_bad(gv *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int gv_bad(gv *g, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(g->why, g->wn, fmt, ap);
	va_end(ap);
	return 0;
}

static int gv_take(gv *g, uint64_t k, uint64_t *v)
{
	if (g->n - g->pos < k)
		return 0;
	*v = 0;
	for (uint64_t i = k; i-- > 0;)
		*v = *v << 8 | g->b[g->pos + i];
	g->pos += k;
	return 1;
}

static int gv_str(gv *g, uint64_t *len, const uint8_t **s)
{
	if (!gv_take(g, g->wide, len) || *len > g->n - g->pos)
		return 0;
	*s = g->b + g->pos;
	g->pos += *len;
	return 1;
}

static int gv_value(gv *g, uint32_t t, int depth)
{
	static const uint8_t size[13] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
	uint64_t v, len, count;
	const uint8_t *s;

	if (t > 12)
		return gv_bad(g, "value type %u", t);
	if (t == 8)
		return gv_str(g, &len, &s) ? 1 : gv_bad(g, "string past the end");
	if (t == 9) {
		if (depth >= 8)
			return gv_bad(g, "arrays nested deeper than 8");
		if (!gv_take(g, 4, &v) || !gv_take(g, g->wide, &count))
			return gv_bad(g, "array header past the end");
		if (v > 12)
			return gv_bad(g, "array element type %llu", (unsigned long long)v);
		/* every element takes at least one byte: a longer count cannot fit */
		if (count > g->n - g->pos)
			return gv_bad(g, "array count %llu past the end", (unsigned long long)count);
		for (uint64_t i = 0; i < count; i++)
			if (!gv_value(g, (uint32_t)v, depth + 1))
				return 0;
		return 1;
	}
	if (!gv_take(g, size[t], &v))
		return gv_bad(g, "scalar past the end");
	if (t == 7 && v > 1)
		return gv_bad(g, "bool value %llu", (unsigned long long)v);
	return 1;
}

typedef struct {
	const uint8_t *name;
	uint64_t len, off, nbytes;
} gv_tensor;

static int gv_cmp_off(const void *a, const void *b)
{
	uint64_t x = ((const gv_tensor *)a)->off, y = ((const gv_tensor *)b)->off;
	return x < y ? -1 : x > y;
}

static int gv_same(const uint8_t *a, uint64_t la, const uint8_t *b, uint64_t lb)
{
	return la == lb && !memcmp(a, b, (size_t)la);
}

static int gv_kvs(gv *g, uint64_t nkv)
{
	const uint8_t *keys[64];
	uint64_t klen[64];

	if (nkv > 64)
		return gv_bad(g, "sample validator: %llu KVs", (unsigned long long)nkv);
	for (uint64_t i = 0; i < nkv; i++) {
		uint64_t t, start, v;

		if (!gv_str(g, &klen[i], &keys[i]))
			return gv_bad(g, "key %llu past the end", (unsigned long long)i);
		if (klen[i] == 0 || klen[i] > 65535)
			return gv_bad(g, "key length %llu", (unsigned long long)klen[i]);
		for (uint64_t k = 0; k < klen[i]; k++)
			if (keys[i][k] < 0x20 || keys[i][k] > 0x7e)
				return gv_bad(g, "key byte 0x%02x", keys[i][k]);
		for (uint64_t j = 0; j < i; j++)
			if (gv_same(keys[i], klen[i], keys[j], klen[j]))
				return gv_bad(g, "duplicate key");
		if (!gv_take(g, 4, &t))
			return gv_bad(g, "type past the end");
		start = g->pos;
		if (!gv_value(g, (uint32_t)t, 0))
			return 0;
		if (gv_same(keys[i], klen[i], (const uint8_t *)"general.alignment", 17)) {
			if (t != 4)
				return gv_bad(g, "general.alignment of type %llu", (unsigned long long)t);
			v = (uint64_t)g->b[start] | (uint64_t)g->b[start + 1] << 8 |
			    (uint64_t)g->b[start + 2] << 16 | (uint64_t)g->b[start + 3] << 24;
			if (v == 0 || (v & (v - 1)))
				return gv_bad(g, "alignment %llu", (unsigned long long)v);
			g->align = (uint32_t)v;
		}
	}
	return 1;
}

static int gv_infos(gv *g, gv_tensor *t, uint64_t nt)
{
	for (uint64_t i = 0; i < nt; i++) {
		uint64_t nd, type, ne, nel = 1, ne0 = 0, rows;

		if (!gv_str(g, &t[i].len, &t[i].name) || !t[i].len ||
		    memchr(t[i].name, 0, (size_t)t[i].len))
			return gv_bad(g, "tensor name %llu", (unsigned long long)i);
		for (uint64_t j = 0; j < i; j++)
			if (gv_same(t[i].name, t[i].len, t[j].name, t[j].len))
				return gv_bad(g, "duplicate tensor name");
		if (!gv_take(g, 4, &nd) || nd < 1 || nd > 4)
			return gv_bad(g, "n_dims");
		for (uint64_t d = 0; d < nd; d++) {
			if (!gv_take(g, g->wide, &ne) || ne == 0 || ne > (uint64_t)INT64_MAX)
				return gv_bad(g, "dim %llu", (unsigned long long)d);
			if (d == 0)
				ne0 = ne;
			if (__builtin_mul_overflow(nel, ne, &nel) || nel > (uint64_t)INT64_MAX)
				return gv_bad(g, "element count overflows");
		}
		if (!gv_take(g, 4, &type) || type >= 40 || !gv_types[type].blck)
			return gv_bad(g, "ggml type");
		if (ne0 % gv_types[type].blck)
			return gv_bad(g, "ne0 not a block multiple");
		rows = nel / ne0;
		if (__builtin_mul_overflow(ne0 / gv_types[type].blck, (uint64_t)gv_types[type].bytes,
		                           &t[i].nbytes) ||
		    __builtin_mul_overflow(t[i].nbytes, rows, &t[i].nbytes))
			return gv_bad(g, "byte size overflows");
		if (!gv_take(g, 8, &t[i].off))
			return gv_bad(g, "offset past the end");
	}
	return 1;
}

int hs_gguf_valid(const uint8_t *b, size_t n, char *why, size_t wn)
{
	gv g = { .b = b, .n = n, .why = why, .wn = wn, .align = 32 };
	uint64_t ver, nt, nkv, data, end;
	gv_tensor t[64];

	if (n < 8 || memcmp(b, "GGUF", 4))
		return gv_bad(&g, "magic");
	g.pos = 4;
	gv_take(&g, 4, &ver);
	if (ver < 1 || ver > 3)
		return gv_bad(&g, "version");
	g.wide = ver == 1 ? 4 : 8;
	if (!gv_take(&g, g.wide, &nt) || !gv_take(&g, g.wide, &nkv))
		return gv_bad(&g, "counts past the end");
	if (nt > 64)
		return gv_bad(&g, "%llu tensors", (unsigned long long)nt);
	if (!gv_kvs(&g, nkv) || !gv_infos(&g, t, nt))
		return 0;
	data = (g.pos + g.align - 1) / g.align * g.align;
	if (nt && data > n)
		return gv_bad(&g, "data section past the end");
	for (uint64_t i = 0; i < nt; i++)
		if (t[i].off % g.align || __builtin_add_overflow(t[i].off, t[i].nbytes, &end) ||
		    end > n - data)
			return gv_bad(&g, "tensor %llu data misaligned or past the end",
			              (unsigned long long)i);
	qsort(t, (size_t)nt, sizeof t[0], gv_cmp_off);
	for (uint64_t i = 1; i < nt; i++)
		if (t[i - 1].off + t[i - 1].nbytes > t[i].off)
			return gv_bad(&g, "tensors overlap");
	return 1;
}

/* ---- safetensors validator ------------------------------------------------ */

/* Strict UTF-8 (RFC 3629): a table-free decoder of this file's own. */
static int sv_utf8(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint32_t c = s[i], cp;
		size_t len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
		           : c >= 0xf0 && c <= 0xf4 ? 4 : 0;

		if (!len || n - i < len)
			return 0;
		cp = len == 1 ? c : c & (0x7f >> len);
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += len;
	}
	return 1;
}

static const struct { const char *name; unsigned size; } sv_dtypes[] = {
	{ "BOOL", 1 }, { "U8", 1 }, { "I8", 1 }, { "U16", 2 }, { "I16", 2 }, { "U32", 4 },
	{ "I32", 4 }, { "U64", 8 }, { "I64", 8 }, { "F8_E4M3", 1 }, { "F8_E5M2", 1 },
	{ "F16", 2 }, { "BF16", 2 }, { "F32", 4 }, { "F64", 8 },
};

typedef struct {
	const char *name;
	unsigned dt;
	uint64_t a, b, shape[8];
	size_t rank;
} sv_tensor;

static int sv_cmp(const void *x, const void *y)
{
	const sv_tensor *a = x, *b = y;
	return a->a < b->a ? -1 : a->a > b->a ? 1 : a->b < b->b ? -1 : a->b > b->b;
}

static int sv_int(json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return 0;
	*out = (uint64_t)json_integer_value(v);
	return 1;
}

/* One tensor entry; 0 with why on a violation. */
static int sv_entry(const char *k, json_t *e, sv_tensor *t, char *why, size_t wn)
{
	json_t *dt = json_object_get(e, "dtype"), *sh = json_object_get(e, "shape"),
	       *of = json_object_get(e, "data_offsets");
	uint64_t nel = 1, bytes;
	size_t d;

	if (!*k || !json_is_object(e) || json_object_size(e) != 3 || !json_is_string(dt) ||
	    !json_is_array(sh) || !json_is_array(of) || json_array_size(of) != 2 ||
	    json_array_size(sh) > 8) {
		snprintf(why, wn, "entry '%s' malformed", k);
		return 0;
	}
	for (d = 0; d < sizeof sv_dtypes / sizeof sv_dtypes[0]; d++)
		if (!strcmp(json_string_value(dt), sv_dtypes[d].name))
			break;
	t->name = k;
	t->dt = (unsigned)d;
	t->rank = json_array_size(sh);
	for (size_t i = 0; i < t->rank; i++)
		if (!sv_int(json_array_get(sh, i), &t->shape[i]) ||
		    __builtin_mul_overflow(nel, t->shape[i], &nel)) {
			snprintf(why, wn, "'%s': shape", k);
			return 0;
		}
	if (d == sizeof sv_dtypes / sizeof sv_dtypes[0] ||
	    __builtin_mul_overflow(nel, (uint64_t)sv_dtypes[d].size, &bytes) ||
	    !sv_int(json_array_get(of, 0), &t->a) || !sv_int(json_array_get(of, 1), &t->b) ||
	    t->b < t->a || t->b - t->a != bytes) {
		snprintf(why, wn, "'%s': dtype, offsets or size", k);
		return 0;
	}
	return 1;
}

/* Parse and check b into t[] (up to 64); returns the count or -1. */
static long sv_parse(const uint8_t *b, size_t n, sv_tensor *t, json_t **rootp, char *why,
                     size_t wn)
{
	uint64_t hl = 0, end = 0, dsize;
	json_t *root, *v;
	const char *k;
	long nt = 0;

	*rootp = NULL;
	if (n < 8)
		return snprintf(why, wn, "short"), -1;
	for (int i = 7; i >= 0; i--)
		hl = hl << 8 | b[i];
	if (hl == 0 || hl > 100000000u || hl > n - 8)
		return snprintf(why, wn, "header length"), -1;
	if (!sv_utf8(b + 8, (size_t)hl))
		return snprintf(why, wn, "UTF-8"), -1;
	root = json_loadb((const char *)b + 8, (size_t)hl, JSON_REJECT_DUPLICATES, NULL);
	*rootp = root;
	if (!json_is_object(root))
		return snprintf(why, wn, "JSON object"), -1;
	json_object_foreach(root, k, v) {
		if (!strcmp(k, "__metadata__")) {
			const char *mk;
			json_t *mv;

			if (!json_is_object(v))
				return snprintf(why, wn, "metadata"), -1;
			json_object_foreach(v, mk, mv)
				if (!json_is_string(mv))
					return snprintf(why, wn, "metadata value"), -1;
			continue;
		}
		if (nt == 64)
			return snprintf(why, wn, "too many tensors"), -1;
		if (!sv_entry(k, v, &t[nt], why, wn))
			return -1;
		nt++;
	}
	dsize = n - 8 - hl;
	qsort(t, (size_t)nt, sizeof *t, sv_cmp);
	for (long i = 0; i < nt; i++) {
		if (t[i].a != end)
			return snprintf(why, wn, "'%s' at %llu, not %llu", t[i].name,
			                (unsigned long long)t[i].a, (unsigned long long)end), -1;
		end = t[i].b;
	}
	if (end != dsize)
		return snprintf(why, wn, "data ends at %llu, file at %llu", (unsigned long long)end,
		                (unsigned long long)dsize), -1;
	return nt;
}

int hs_st_valid(const uint8_t *b, size_t n, char *why, size_t wn)
{
	sv_tensor t[64];
	json_t *root;
	long nt = sv_parse(b, n, t, &root, why, wn);

	json_decref(root);
	return nt >= 0;
}

int hs_st_same(const qtk_st_file *f, const uint8_t *b, size_t n, char *why, size_t wn)
{
	sv_tensor t[64];
	json_t *root;
	long nt = sv_parse(b, n, t, &root, why, wn);
	uint64_t hl = 0;
	int ok = nt >= 0 && (size_t)nt == qtk_st_count(f);

	for (int i = 7; i >= 0 && n >= 8; i--)
		hl = hl << 8 | b[i];
	for (long i = 0; ok && i < nt; i++) {
		const qtk_st_tensor *q = qtk_st_find(f, t[i].name);

		ok = q && !strcmp(qtk_dtype_name(q->dtype), sv_dtypes[t[i].dt].name) &&
		     q->ndim == t[i].rank && q->file_offset == 8 + hl + t[i].a &&
		     q->nbytes == t[i].b - t[i].a && q->data == b + 8 + hl + t[i].a &&
		     !memcmp(q->shape, t[i].shape, t[i].rank * sizeof t[i].shape[0]);
		if (!ok)
			snprintf(why, wn, "tensor '%s' reported differently", t[i].name);
	}
	if (nt >= 0 && (size_t)nt != qtk_st_count(f))
		snprintf(why, wn, "%ld tensors in the header, %zu reported", nt, qtk_st_count(f));
	json_decref(root);
	return ok;
}

/* ---- .qtk layout ------------------------------------------------------------ */

long hs_qtk_tensor_at(const uint8_t *b, size_t n, size_t k)
{
	uint64_t count = tp_get64(b + 32);

	(void)n;
	for (uint64_t i = 0; i < count; i++) {
		size_t r = tp_record(b, (size_t)i);
		for (int p = 0; p < QTK_PLANE_MAX; p++) {
			uint64_t off = tp_get64(b + r + 88 + 32 * p), sz = tp_get64(b + r + 88 + 32 * p + 16);
			if (k >= off && k < off + sz)
				return (long)i;
		}
	}
	return -1;
}

int hs_qtk_is_padding(const uint8_t *b, size_t n, size_t k)
{
	uint64_t str = tp_get64(b + 56) + tp_get64(b + 64);
	uint64_t data = tp_get64(b + 72), meta = tp_get64(b + 88);

	if (k >= str && k < data)
		return 1;
	return k >= data && k < meta && hs_qtk_tensor_at(b, n, k) < 0;
}
