/* formats: the ggml type table. One row per ggml type id (ggml's
 * type_traits: name, block size, block bytes; retired ids keep their empty
 * slot), plus what qtk knows of the type: the dtype of a plain type, the
 * code properties of the quant scheme row a block type holds exactly, the
 * LLAMA_FTYPE of a file mostly of it, and its block functions. Everything
 * that maps between ggml types and qtk layouts reads this table; no code
 * outside quant/ names a scheme. */
#include "gguf_impl.h"

static qtk_err pack_q8_0(const qtk_q_cplanes *p, size_t nrows, size_t cols, void *dst,
                         qtk_status *st)
{
	return qtk_gguf_pack_q8_0(p->p[QTK_PLANE_CODES], p->p[QTK_PLANE_SCALES], nrows, cols,
	                          dst, st);
}

static qtk_err pack_q4_0(const qtk_q_cplanes *p, size_t nrows, size_t cols, void *dst,
                         qtk_status *st)
{
	return qtk_gguf_pack_q4_0(p->p[QTK_PLANE_CODES], p->p[QTK_PLANE_SCALES], nrows, cols,
	                          dst, st);
}

static qtk_err pack_q4_1(const qtk_q_cplanes *p, size_t nrows, size_t cols, void *dst,
                         qtk_status *st)
{
	return qtk_gguf_pack_q4_1(p->p[QTK_PLANE_CODES], p->p[QTK_PLANE_SCALES],
	                          p->p[QTK_PLANE_BIASES], nrows, cols, dst, st);
}

static qtk_err unpack_q8_0(const void *src, size_t nrows, size_t cols, const qtk_q_planes *p,
                           qtk_status *st)
{
	return qtk_gguf_unpack_q8_0(src, nrows, cols, p->p[QTK_PLANE_CODES],
	                            p->p[QTK_PLANE_SCALES], st);
}

static qtk_err unpack_q4_0(const void *src, size_t nrows, size_t cols, const qtk_q_planes *p,
                           qtk_status *st)
{
	return qtk_gguf_unpack_q4_0(src, nrows, cols, p->p[QTK_PLANE_CODES],
	                            p->p[QTK_PLANE_SCALES], st);
}

static qtk_err unpack_q4_1(const void *src, size_t nrows, size_t cols, const qtk_q_planes *p,
                           qtk_status *st)
{
	return qtk_gguf_unpack_q4_1(src, nrows, cols, p->p[QTK_PLANE_CODES],
	                            p->p[QTK_PLANE_SCALES], p->p[QTK_PLANE_BIASES], st);
}

#define PLAIN(dt) .blck = 1, .plain = 1, .dtype = dt
#define BLOCK32(b, m, sg, off) .blck = 32, .code_bits = b, .mode = m, .code_signed = sg, \
	.code_offset = off

static const qtk_ggml_type_info types[QTK_GGML_TYPE_COUNT] = {
	[QTK_GGML_F32] = { "F32", PLAIN(QTK_DT_F32), .bytes = 4, .file_type = 0 },
	[QTK_GGML_F16] = { "F16", PLAIN(QTK_DT_F16), .bytes = 2, .file_type = 1 },
	/* x = d * ((q & 15) - 8): qtk's stored q + 8 */
	[QTK_GGML_Q4_0] = { "Q4_0", BLOCK32(4, QTK_QMODE_SYM, 0, 8), .bytes = 18,
		.file_type = 2, .deq = qtk_gg_deq_q4_0, .pack = pack_q4_0, .unpack = unpack_q4_0 },
	/* x = d * q + m: qtk's w = scale * q + bias */
	[QTK_GGML_Q4_1] = { "Q4_1", BLOCK32(4, QTK_QMODE_AFFINE, 0, 0), .bytes = 20,
		.file_type = 3, .deq = qtk_gg_deq_q4_1, .pack = pack_q4_1, .unpack = unpack_q4_1 },
	[6] = { "Q5_0", .blck = 32, .bytes = 22, .file_type = -1 },
	[7] = { "Q5_1", .blck = 32, .bytes = 24, .file_type = -1 },
	/* x = d * (int8)q */
	[QTK_GGML_Q8_0] = { "Q8_0", BLOCK32(8, QTK_QMODE_SYM, 1, 0), .bytes = 34,
		.file_type = 7, .deq = qtk_gg_deq_q8_0, .pack = pack_q8_0, .unpack = unpack_q8_0 },
	/* Q8_1 carries a precomputed sum: an activation type, not stored */
	[QTK_GGML_Q8_1] = { "Q8_1", .blck = 32, .bytes = 36, .file_type = -1 },
	[10] = { "Q2_K", .blck = 256, .bytes = 84, .file_type = -1 },
	[11] = { "Q3_K", .blck = 256, .bytes = 110, .file_type = -1 },
	[12] = { "Q4_K", .blck = 256, .bytes = 144, .file_type = -1 },
	[13] = { "Q5_K", .blck = 256, .bytes = 176, .file_type = -1 },
	[14] = { "Q6_K", .blck = 256, .bytes = 210, .file_type = -1 },
	[15] = { "Q8_K", .blck = 256, .bytes = 292, .file_type = -1 },
	[16] = { "IQ2_XXS", .blck = 256, .bytes = 66, .file_type = -1 },
	[17] = { "IQ2_XS", .blck = 256, .bytes = 74, .file_type = -1 },
	[18] = { "IQ3_XXS", .blck = 256, .bytes = 98, .file_type = -1 },
	[19] = { "IQ1_S", .blck = 256, .bytes = 50, .file_type = -1 },
	[20] = { "IQ4_NL", .blck = 32, .bytes = 18, .file_type = -1 },
	[21] = { "IQ3_S", .blck = 256, .bytes = 110, .file_type = -1 },
	[22] = { "IQ2_S", .blck = 256, .bytes = 82, .file_type = -1 },
	[23] = { "IQ4_XS", .blck = 256, .bytes = 136, .file_type = -1 },
	[QTK_GGML_I8] = { "I8", PLAIN(QTK_DT_I8), .bytes = 1, .file_type = -1 },
	[QTK_GGML_I16] = { "I16", PLAIN(QTK_DT_I16), .bytes = 2, .file_type = -1 },
	[QTK_GGML_I32] = { "I32", PLAIN(QTK_DT_I32), .bytes = 4, .file_type = -1 },
	[QTK_GGML_I64] = { "I64", PLAIN(QTK_DT_I64), .bytes = 8, .file_type = -1 },
	[QTK_GGML_F64] = { "F64", PLAIN(QTK_DT_F64), .bytes = 8, .file_type = -1 },
	[29] = { "IQ1_M", .blck = 256, .bytes = 56, .file_type = -1 },
	[QTK_GGML_BF16] = { "BF16", PLAIN(QTK_DT_BF16), .bytes = 2, .file_type = 32 },
	[34] = { "TQ1_0", .blck = 256, .bytes = 54, .file_type = -1 },
	[35] = { "TQ2_0", .blck = 256, .bytes = 66, .file_type = -1 },
	[39] = { "MXFP4", .blck = 32, .bytes = 17, .file_type = -1 },
};

const qtk_ggml_type_info *qtk_ggml_type_get(uint32_t type)
{
	return type < QTK_GGML_TYPE_COUNT && types[type].name ? &types[type] : NULL;
}

const char *qtk_ggml_type_name(uint32_t type)
{
	return type < QTK_GGML_TYPE_COUNT ? types[type].name : NULL;
}

uint32_t qtk_ggml_block_elems(uint32_t type)
{
	return type < QTK_GGML_TYPE_COUNT ? types[type].blck : 0;
}

uint32_t qtk_ggml_block_bytes(uint32_t type)
{
	return type < QTK_GGML_TYPE_COUNT ? types[type].bytes : 0;
}

/* The scheme row holding a block type's codes; -1 if none. */
static int block_scheme(const qtk_ggml_type_info *t)
{
	if (!t->code_bits)
		return -1;
	return qtk_q_scheme_find(t->code_bits, t->mode, t->code_signed, t->code_offset);
}

int qtk_ggml_layout(uint32_t type, qtk_q_layout *L)
{
	const qtk_ggml_type_info *t = qtk_ggml_type_get(type);
	int id;

	memset(L, 0, sizeof *L);
	L->scale_dtype = QTK_DT_F16;
	if (!t)
		return 0;
	if (t->plain) {
		/* a float row stores it, else its bytes as they are (F64, I*) */
		id = qtk_q_scheme_float(t->dtype);
		L->scheme = id >= 0 ? (qtk_scheme_id)id : QTK_SCHEME_RAW;
		L->dtype = t->dtype;
		return 1;
	}
	if ((id = block_scheme(t)) < 0)
		return 0;
	L->scheme = (qtk_scheme_id)id;
	L->group = t->blck;
	return 1;
}

int qtk_ggml_type_of_dtype(qtk_dtype dt)
{
	for (uint32_t i = 0; i < QTK_GGML_TYPE_COUNT; i++)
		if (types[i].name && types[i].plain && types[i].dtype == dt)
			return (int)i;
	return -1;
}

int qtk_ggml_type_of_scheme(qtk_scheme_id id)
{
	const qtk_q_scheme *s = qtk_q_scheme_get(id);

	if (!s)
		return -1;
	if (s->float_store)
		return qtk_ggml_type_of_dtype(s->store_dtype);
	for (uint32_t i = 0; s->quantized && i < QTK_GGML_TYPE_COUNT; i++)
		if (types[i].name && block_scheme(&types[i]) == (int)id)
			return (int)i;
	return -1;
}

uint32_t qtk_ggml_file_type(qtk_scheme_id id)
{
	int t = qtk_ggml_type_of_scheme(id);

	/* LLAMA_FTYPE_ALL_F32 when no type holds the main scheme */
	return t >= 0 && types[t].file_type >= 0 ? (uint32_t)types[t].file_type : 0;
}

qtk_err qtk_ggml_pack_rows(uint32_t type, const qtk_q_cplanes *p, size_t nrows, size_t cols,
                           void *dst, qtk_status *st)
{
	const qtk_ggml_type_info *t = qtk_ggml_type_get(type);

	if (!t || !t->pack)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "no block packer for ggml type %u", type);
	return t->pack(p, nrows, cols, dst, st);
}

qtk_err qtk_ggml_unpack_rows(uint32_t type, const void *src, size_t nrows, size_t cols,
                             const qtk_q_planes *p, qtk_status *st)
{
	const qtk_ggml_type_info *t = qtk_ggml_type_get(type);

	if (!t || !t->unpack)
		return qtk_fail(st, QTK_E_UNSUPPORTED, "no block unpacker for ggml type %s",
		                qtk_ggml_type_name(type) ? qtk_ggml_type_name(type) : "?");
	return t->unpack(src, nrows, cols, p, st);
}
