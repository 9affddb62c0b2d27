/* quant: group-wise quantization schemes, calibration and error metrics.
 * Pure compute: buffers in, buffers out; no file I/O.
 * Also the base layer of qtk: status codes, dtypes and their conversion,
 * CPU feature dispatch and the allocation/fault hooks every part uses. */
#ifndef QTK_QUANT_H
#define QTK_QUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QTK_API __attribute__((visibility("default")))
#define QTK_VERSION "0.1.0"

/* ===================================================================== */
/* Status codes                                                           */
/* ===================================================================== */

/* The list of codes, X(NAME, VALUE): the enum below and qtk_err_name are
 * both made from it, so a code cannot lack its name. Values are pinned
 * (they are printed and tested): append, never renumber.
 * Ranges: 1-19 generic, 20-69 safetensors, 70-119 packed format,
 * 120-169 GGUF, 170-189 quant, 190-209 convert. */
#define QTK_ERRORS(X) \
	X(QTK_OK, 0) \
	/* generic */ \
	X(QTK_E_NOMEM, 1)       /* allocation failed */ \
	X(QTK_E_IO, 2)          /* read/write/open/mmap/fsync/rename failed */ \
	X(QTK_E_FORMAT, 3)      /* malformed input, no finer code applies */ \
	X(QTK_E_OVERFLOW, 4)    /* a size or offset computation overflows */ \
	X(QTK_E_UNSUPPORTED, 5) /* valid input qtk cannot handle */ \
	X(QTK_E_ARG, 6)         /* bad argument from the caller or user */ \
	X(QTK_E_EXISTS, 7)      /* output exists (and no --force) */ \
	X(QTK_E_SAME_FILE, 8)   /* output path is also an input */ \
	X(QTK_E_NOT_FOUND, 9)   /* no such tensor / file */ \
	X(QTK_E_INTERRUPTED, 10) /* SIGINT/SIGTERM */ \
	X(QTK_E_CHECKSUM, 11)   /* stored crc32 does not match */ \
	\
	/* safetensors (formats/st_*.c) */ \
	X(QTK_E_ST_TOO_SMALL, 20)     /* file shorter than the 8-byte length */ \
	X(QTK_E_ST_HEADER_LEN, 21)    /* header length 0, > 100 MB or past EOF */ \
	X(QTK_E_ST_UTF8, 22)          /* header is not valid UTF-8 */ \
	X(QTK_E_ST_JSON, 23)          /* header is not valid JSON */ \
	X(QTK_E_ST_NOT_OBJECT, 24)    /* header (or a tensor entry) not an object */ \
	X(QTK_E_ST_METADATA, 25)      /* __metadata__ not a string->string map */ \
	X(QTK_E_ST_DTYPE, 26)         /* unknown or missing dtype */ \
	X(QTK_E_ST_SHAPE, 27)         /* shape not an array of non-negative ints */ \
	X(QTK_E_ST_SHAPE_OVERFLOW, 28) /* product of dims (x elsize) overflows */ \
	X(QTK_E_ST_OFFSETS, 29)       /* data_offsets malformed or end < start */ \
	X(QTK_E_ST_SIZE_MISMATCH, 30) /* shape x elsize != byte range */ \
	X(QTK_E_ST_OUT_OF_BOUNDS, 31) /* range past the end of the data section */ \
	X(QTK_E_ST_OVERLAP, 32)       /* two tensors share bytes */ \
	X(QTK_E_ST_GAP, 33)           /* bytes not covered by any tensor */ \
	X(QTK_E_ST_TRAILING, 34)      /* bytes after the last tensor */ \
	X(QTK_E_ST_DUPLICATE, 35)     /* a name appears twice */ \
	X(QTK_E_ST_NAME, 36)          /* empty name, NUL in name, '__metadata__' */ \
	X(QTK_E_ST_KEYS, 37)          /* missing or unknown key in a tensor entry */ \
	X(QTK_E_ST_INDEX, 38)         /* sharded index malformed */ \
	X(QTK_E_ST_SHARD_MISSING, 39) /* index names a shard that does not exist */ \
	X(QTK_E_ST_SHARD_TENSOR, 40)  /* index/shard tensor sets disagree */ \
	X(QTK_E_ST_FIRST_OFFSET, 41)  /* first tensor does not start at 0 */ \
	\
	/* packed format (formats/pack_*.c): 70-119 */ \
	X(QTK_E_PK_TOO_SMALL, 70)      /* file shorter than the 128-byte header */ \
	X(QTK_E_PK_MAGIC, 71)          /* not a .qtk file (bad magic) */ \
	X(QTK_E_PK_VERSION, 72)        /* major version or required flags this reader lacks */ \
	X(QTK_E_PK_BYTE_ORDER, 73)     /* byte order mark is not little-endian */ \
	X(QTK_E_PK_HEADER, 74)         /* header size, record size or alignment field invalid */ \
	X(QTK_E_PK_HEADER_CRC, 75)     /* header crc32 does not match */ \
	X(QTK_E_PK_FILE_SIZE, 76)      /* file size differs from the header (truncated?) */ \
	X(QTK_E_PK_SECTION, 77)        /* a section is out of bounds, misplaced or overlaps */ \
	X(QTK_E_PK_COUNT, 78)          /* tensor count too large for the directory / wraps */ \
	X(QTK_E_PK_DIR_CRC, 79)        /* directory + index + string table crc32 mismatch */ \
	X(QTK_E_PK_NAME, 80)           /* name out of the string table, unterminated, empty */ \
	X(QTK_E_PK_DUPLICATE, 81)      /* two tensors share a name */ \
	X(QTK_E_PK_INDEX, 82)          /* name index is not a sorted permutation */ \
	X(QTK_E_PK_NDIM, 83)           /* more than 8 dimensions */ \
	X(QTK_E_PK_SHAPE, 84)          /* a dim >= 2^63 or the element count overflows */ \
	X(QTK_E_PK_SCHEME, 85)         /* unknown scheme id */ \
	X(QTK_E_PK_LAYOUT, 86)         /* group / scale dtype / flags / dtype invalid for shape */ \
	X(QTK_E_PK_PLANE_SIZE, 87)     /* plane size differs from the scheme's table */ \
	X(QTK_E_PK_ALIGN, 88)          /* plane not 64-aligned or tensor not tensor_align-aligned */ \
	X(QTK_E_PK_BOUNDS, 89)         /* plane range outside the data section */ \
	X(QTK_E_PK_OVERLAP, 90)        /* planes overlap or are out of file order */ \
	X(QTK_E_PK_PLANE_FLAGS, 91)    /* unknown plane flags or stored size inconsistent */ \
	X(QTK_E_PK_META, 92)           /* metadata not NUL-terminated, crc mismatch or not a JSON object */ \
	X(QTK_E_PK_SCALES, 93)         /* a stored scale / bias is NaN or Inf */ \
	X(QTK_E_PK_ZSTD, 94)           /* compressed plane is not one valid zstd frame of the plane size */ \
	X(QTK_E_PK_INCOMPLETE, 95)     /* writer: plane bytes not written exactly once */ \
	X(QTK_E_PK_PADDING, 96)        /* a padding byte (between sections or planes) is not zero */ \
	/* GGUF (formats/gguf_*.c): 120-169 */ \
	X(QTK_E_GG_TOO_SMALL, 120)      /* file shorter than the fixed GGUF header */ \
	X(QTK_E_GG_MAGIC, 121)          /* not a GGUF file (bad magic) */ \
	X(QTK_E_GG_VERSION, 122)        /* GGUF version other than 1, 2, 3 */ \
	X(QTK_E_GG_COUNT, 123)          /* tensor/KV/array count larger than the bytes left, or wraps */ \
	X(QTK_E_GG_STRING, 124)         /* string length past the end of the file, or wraps */ \
	X(QTK_E_GG_KV_TYPE, 125)        /* unknown KV value type (or array element type) */ \
	X(QTK_E_GG_DUP_KEY, 126)        /* a KV key appears twice */ \
	X(QTK_E_GG_ARRAY, 127)          /* arrays nested deeper than 8 levels */ \
	X(QTK_E_GG_NDIM, 128)           /* tensor with 0 or more than 4 dims */ \
	X(QTK_E_GG_DIM, 129)            /* a dim is zero or negative (>= 2^63) */ \
	X(QTK_E_GG_SHAPE, 130)          /* element count or byte size of a tensor wraps */ \
	X(QTK_E_GG_TYPE, 131)           /* unknown or retired ggml type */ \
	X(QTK_E_GG_BLOCK, 132)          /* ne[0] not a multiple of the type's block size */ \
	X(QTK_E_GG_ALIGNMENT, 133)      /* general.alignment not a u32 power of two <= 64 KiB */ \
	X(QTK_E_GG_MISALIGNED, 134)     /* tensor offset not a multiple of the alignment */ \
	X(QTK_E_GG_BOUNDS, 135)         /* tensor data past the end of the file */ \
	X(QTK_E_GG_OVERLAP, 136)        /* two tensors share bytes */ \
	X(QTK_E_GG_DUP_TENSOR, 137)     /* a tensor name appears twice */ \
	X(QTK_E_GG_NAME, 138)           /* empty key/name, a NUL in it, a key not printable ASCII or > 65535 bytes */ \
	X(QTK_E_GG_KV_MISMATCH, 139)    /* a KV has another type than the caller asked for */ \
	X(QTK_E_GG_INCOMPLETE, 140)     /* writer: tensor bytes not written exactly once */ \
	X(QTK_E_GG_LAYOUT, 141)         /* writer/packer: shape, type or layout the target cannot hold */ \
	X(QTK_E_GG_TOKENIZER, 142)      /* tokenizer.model is not a valid sentencepiece model */ \
	X(QTK_E_GG_CONFIG, 143)         /* config.json lacks or has a bad hyper-parameter */ \
	X(QTK_E_GG_BOOL, 144)           /* a bool KV (or bool array element) other than 0 or 1 */ \
	\
	/* quant (quant/): 170-189 */ \
	X(QTK_E_Q_NONFINITE, 170)     /* NaN or Inf in the input */ \
	X(QTK_E_Q_SCALE_RANGE, 171)   /* a scale is not finite in its dtype */ \
	X(QTK_E_Q_VALUE_RANGE, 172)   /* a finite value overflows the float type it is \
	                                 stored in (F16/BF16 float store) */ \
	X(QTK_E_Q_HESSIAN, 173)       /* GPTQ: the Hessian is not symmetric positive \
	                                 definite, even after damping */ \
	\
	/* convert (convert/): 190-209 */ \
	/* end of QTK_ERRORS */

typedef enum {
#define QTK_ERR_ENUM_(name, value) name = value,
	QTK_ERRORS(QTK_ERR_ENUM_)
#undef QTK_ERR_ENUM_
	QTK_E_MAX_ = 255
} qtk_err;

/* A status carries the code and a message naming file, tensor and problem:
 * "m.safetensors: tensor 'w1': range ends at 900, file has 512 bytes". */
typedef struct {
	qtk_err code;
	char msg[320];
} qtk_status;

/* Fill *st (may be NULL) from a printf format and return code. */
QTK_API qtk_err qtk_fail(qtk_status *st, qtk_err code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prefix st->msg with "prefix: " (e.g. a file name added by a caller). */
QTK_API void qtk_status_prefix(qtk_status *st, const char *prefix);
/* Reset to QTK_OK with an empty message. */
QTK_API void qtk_status_clear(qtk_status *st);
/* Stable symbolic name of a code, e.g. "QTK_E_ST_OVERLAP". */
QTK_API const char *qtk_err_name(qtk_err code);

/* Parse s as a number in [lo, hi]: decimal digits only (no sign, space,
 * prefix or trailing characters). QTK_E_ARG otherwise, the message naming
 * `what` (an option or variable name) and the value; *out is set only on
 * success. */
QTK_API qtk_err qtk_parse_u64(const char *what, const char *s, uint64_t lo, uint64_t hi,
                              uint64_t *out, qtk_status *st);

/* The only macro that returns: forwards a non-OK code. */
#define QTK_TRY(e) do { qtk_err rc_ = (e); if (rc_ != QTK_OK) return rc_; } while (0)

/* ===================================================================== */
/* Allocation and fault injection                                         */
/* ===================================================================== */

/* Every allocation in qtk goes through these, so tests can fail the Nth. */
QTK_API void *qtk_malloc(size_t n);
QTK_API void *qtk_calloc(size_t count, size_t size);
QTK_API void *qtk_realloc(void *p, size_t n);
QTK_API void qtk_free(void *p);                /* NULL is fine */
QTK_API char *qtk_strdup(const char *s);

typedef enum {
	QTK_FAULT_ALLOC = 0,
	QTK_FAULT_WRITE = 1,  /* write/pwrite in formats' file helpers */
	QTK_FAULT_FSYNC = 2,
	QTK_FAULT_RENAME = 3,
	QTK_FAULT_OPEN = 4,   /* creating the temporary output */
	QTK_FAULT_READ = 5,   /* pread of an input (qtk_fmt_pread) */
	QTK_FAULT_KINDS = 6
} qtk_fault_kind;

/* Testing hook: make the nth call (1-based, counted from now) of this kind
 * fail with err (an errno value; ignored for ALLOC). n = 0 disarms. The
 * counter is process-wide and atomic. */
QTK_API void qtk_fault_arm(qtk_fault_kind kind, uint64_t n, int err);
/* Called by the wrappers: 0, or the errno to fail with. */
QTK_API int qtk_fault_check(qtk_fault_kind kind);
/* 1 if an armed fault of this kind has fired since it was armed. */
QTK_API int qtk_fault_fired(qtk_fault_kind kind);

/* ===================================================================== */
/* CPU feature dispatch                                                   */
/* ===================================================================== */

typedef enum { QTK_ISA_SCALAR = 0, QTK_ISA_AVX2 = 1, QTK_ISA_AVX512 = 2 } qtk_isa;

/* Best ISA this CPU supports, capped by $QTK_ISA=scalar|avx2|avx512.
 * Decided once; kernels call this (cheap) to pick their variant. */
QTK_API qtk_isa qtk_isa_active(void);
/* Tests: force a level (capped at what the CPU supports); returns the
 * level in force. */
QTK_API qtk_isa qtk_isa_force(qtk_isa isa);
QTK_API int qtk_isa_supported(qtk_isa isa);
/* Features beyond the level, which some kernels use where the CPU has
 * them (whatever $QTK_ISA says: callers check the level too). Like the
 * level, read from CPUID once (it traps under a hypervisor). */
typedef enum {
	QTK_CPU_VPCLMULQDQ = 1, /* carry-less multiply on 256/512-bit registers */
	QTK_CPU_AVXVNNI = 2,    /* VEX-encoded vpdpbusd */
	QTK_CPU_AVX512VNNI = 4,
	QTK_CPU_GFNI = 8
} qtk_cpu_feature;
QTK_API int qtk_cpu_has(qtk_cpu_feature f);
QTK_API const char *qtk_isa_name(qtk_isa isa);
/* The ISA named "scalar", "avx2" or "avx512" ($QTK_ISA's values); -1 for
 * anything else. */
QTK_API int qtk_isa_from_name(const char *name);

/* crc32 as zlib computes it (crc32(crc, buf, n)), folded with PCLMULQDQ
 * when the CPU runs the AVX2 kernels. crc: 0 to start, or the value of the
 * bytes before. */
QTK_API uint32_t qtk_crc32(uint32_t crc, const void *buf, uint64_t n);
/* Whether qtk_crc32 folds 256 (AVX-512) or 128 (AVX2) bytes a step with
 * VPCLMULQDQ where the CPU has it, else 64 with PCLMULQDQ: on = 1 or 0
 * sets it (testing hook: the 64-byte path of CPUs without VPCLMULQDQ),
 * -1 only asks. Returns 1 if the wide fold is in effect at the active
 * ISA. Every setting gives the same crc. */
QTK_API int qtk_crc32_wide(int on);

/* ===================================================================== */
/* Element types                                                          */
/* ===================================================================== */

/* On-disk values (packed format): append only. */
typedef enum {
	QTK_DT_F32 = 0,
	QTK_DT_F16 = 1,
	QTK_DT_BF16 = 2,
	QTK_DT_F64 = 3,
	QTK_DT_F8_E4M3 = 4,
	QTK_DT_F8_E5M2 = 5,
	QTK_DT_I64 = 6,
	QTK_DT_I32 = 7,
	QTK_DT_I16 = 8,
	QTK_DT_I8 = 9,
	QTK_DT_U64 = 10,
	QTK_DT_U32 = 11,
	QTK_DT_U16 = 12,
	QTK_DT_U8 = 13,
	QTK_DT_BOOL = 14,
	QTK_DT_COUNT
} qtk_dtype;

QTK_API size_t qtk_dtype_size(qtk_dtype dt);          /* 0 if invalid */
QTK_API const char *qtk_dtype_name(qtk_dtype dt);     /* "BF16"; NULL if invalid */
/* Exact, case-sensitive safetensors spelling; -1 if unknown. */
QTK_API int qtk_dtype_from_name(const char *name);
QTK_API int qtk_dtype_is_float(qtk_dtype dt);

/* Scalar reference conversions (exact; NaN/Inf preserved; f32->f16/bf16
 * round to nearest even, NaN stays NaN with its sign). */
QTK_API float qtk_f16_to_f32(uint16_t h);
QTK_API uint16_t qtk_f32_to_f16(float f);
QTK_API float qtk_bf16_to_f32(uint16_t b);
QTK_API uint16_t qtk_f32_to_bf16(float f);
QTK_API float qtk_e4m3_to_f32(uint8_t v);   /* OCP FP8 E4M3 (fn: no Inf) */
QTK_API float qtk_e5m2_to_f32(uint8_t v);   /* OCP FP8 E5M2 */

/* Convert n elements of a floating dtype to f32 (F64 rounds to nearest).
 * SIMD where it pays; bit-identical to the scalar path. Returns
 * QTK_E_ARG for a non-float dtype. */
QTK_API qtk_err qtk_to_f32(qtk_dtype dt, const void *src, float *dst, size_t n);
/* Convert n f32 values to F32/F16/BF16 (round to nearest even; a finite
 * value beyond the range becomes Inf: see qtk_from_f32_checked). */
QTK_API qtk_err qtk_from_f32(qtk_dtype dt, const float *src, void *dst, size_t n);
/* qtk_from_f32 (every value converted, the same bits on every ISA), and
 * what the narrowing did to finite values: *first_ovf (if not NULL) = the
 * index of the first finite value stored as Inf (F16: |x| >= 65520; BF16:
 * |x| >= 3.3961775e38), n if none; *flushed (if not NULL) += the number of
 * nonzero values stored as zero (F16: |x| <= 2^-25; BF16: f32 subnormals
 * <= 2^-134). F32 never overflows or flushes. The checks run inside the
 * SIMD loops (a few compares per vector). */
QTK_API qtk_err qtk_from_f32_checked(qtk_dtype dt, const float *src, void *dst, size_t n,
                                     size_t *first_ovf, uint64_t *flushed);

/* ===================================================================== */
/* Storage schemes                                                        */
/* ===================================================================== */

/* On-disk ids (packed format): append only, never renumber. */
typedef enum {
	QTK_SCHEME_RAW = 0,         /* source bytes as they are (layout.dtype) */
	QTK_SCHEME_F32 = 1,         /* float storage, one plane */
	QTK_SCHEME_F16 = 2,
	QTK_SCHEME_BF16 = 3,
	QTK_SCHEME_INT8 = 4,        /* symmetric, q in [-127, 127] (ggml Q8_0) */
	QTK_SCHEME_INT4 = 5,        /* symmetric, q in [-8, 7] (ggml Q4_0 rule) */
	QTK_SCHEME_INT4_AFFINE = 6, /* w = scale*q + bias, q in [0, 15] */
	QTK_SCHEME_NF4 = 7,         /* NormalFloat4 code, absmax per group */
	QTK_SCHEME_INT8_AFFINE = 8, /* w = scale*q + bias, q in [0, 255] */
	QTK_SCHEME_COUNT
} qtk_scheme_id;

/* Code storage (on disk; exporters rely on it):
 *  - 8-bit: one byte per element; INT8 two's complement q in [-127, 127],
 *    INT8_AFFINE unsigned q in [0, 255].
 *  - 4-bit: two elements per byte, element 2i in the low nibble of byte i
 *    and 2i+1 in the high nibble; each row starts on a byte (an odd row
 *    length leaves the last high nibble 0). INT4 stores q + 8 (q in [-8, 7]),
 *    INT4_AFFINE stores q in [0, 15], NF4 the index into its 16-value code.
 *  - Scales and biases: one per group, row-major [rows][groups_per_row].
 *  - Everything little-endian. */

/* Planes of a stored tensor; on-disk values. */
enum {
	QTK_PLANE_CODES = 0,  /* packed codes [rows][row_bytes]; data for float/raw */
	QTK_PLANE_SCALES = 1, /* [rows][groups_per_row] in scale_dtype (U8 codes
	                         when double-quantized) */
	QTK_PLANE_BIASES = 2, /* [rows][groups_per_row] in scale_dtype (affine) */
	QTK_PLANE_DQ = 3,     /* double quant: per 256 groups, tensor-level */
	QTK_PLANE_MAX = 4
};

#define QTK_GROUP_ROW 0u            /* group = the whole row */
#define QTK_QF_DOUBLE_QUANT 0x1u    /* NF4: 8-bit group absmax, blocks of 256 */
/* INT4_AFFINE / INT8_AFFINE: MLX affine_quantize parameters instead of the
 * ggml Q4_1 rule (the scale may be negative; w = scale*q + bias as always).
 * See docs/quantization.md. */
#define QTK_QF_MLX_AFFINE 0x2u

/* How one 2-D tensor [rows][cols] is stored. An N-D tensor is
 * [prod(dims[0..n-2])][dims[n-1]]: groups run along the last dimension. */
typedef struct {
	qtk_scheme_id scheme;
	uint32_t group;         /* elements per group, or QTK_GROUP_ROW */
	qtk_dtype scale_dtype;  /* F16 (default) or F32 */
	uint32_t flags;         /* QTK_QF_* */
	qtk_dtype dtype;        /* RAW: the stored element type */
} qtk_q_layout;

/* Plane pointers for a run of consecutive rows (each already offset to the
 * first row of the run, via qtk_q_row_bytes). DQ is not row-addressable. */
typedef struct { void *p[QTK_PLANE_MAX]; } qtk_q_planes;
typedef struct { const void *p[QTK_PLANE_MAX]; } qtk_q_cplanes;

/* Options for one quantize call. */
typedef struct {
	int search;                /* data-free scale search instead of RTN */
	const float *importance;   /* [cols] per-input-channel weights, or NULL */
	const char *tensor;        /* for error messages; may be NULL */
	uint64_t row0;             /* index of the first row, for messages */
	/* Float stores called on a flat run of elements (nrows = 1, cols =
	 * the run): row_len != 0 says so, and messages name row and column
	 * from elem0 + i (elem0: the tensor index of src[0]) instead of row0. */
	uint64_t elem0, row_len;
	/* NULL, or += the nonzero finite inputs stored as zero: F16/BF16 float
	 * stores that flush (qtk_from_f32_checked), and the nonzero elements of
	 * zero groups (all subnormal, or a scale that rounds to 0 in the scale
	 * dtype or whose inverse overflows; affine: the elements that differ
	 * from the bias of a group whose scale became 0). */
	uint64_t *flushed;
} qtk_q_opts;

/* Per-chunk error accumulators (double). Chunks combine in chunk order, so
 * results do not depend on the thread count. */
typedef struct {
	double sse;       /* sum (w - w_hat)^2 */
	double ssw;       /* sum w^2 */
	double sshat;     /* sum w_hat^2 */
	double dot;       /* sum w * w_hat */
	double max_abs;   /* max |w - w_hat| */
	uint64_t n;
} qtk_q_acc;

typedef struct {
	double rmse, max_abs, rel_fro, snr_db, cosine;
	uint64_t n;
} qtk_q_metrics;

/* What a stored code stands for: the runtime picks its kernels by
 * (code_bits, mode) and reads code_signed, code_offset and levels from the
 * table, never the scheme id. */
typedef enum {
	QTK_QMODE_RAW = 0,    /* source bytes as they are (layout.dtype) */
	QTK_QMODE_FLOAT = 1,  /* plain float storage in store_dtype */
	QTK_QMODE_SYM = 2,    /* w = scale * v, v = (code_signed ? (intN)code
	                         : code - code_offset) */
	QTK_QMODE_AFFINE = 3, /* w = scale * code + bias, code unsigned */
	QTK_QMODE_LOOKUP = 4  /* w = scale * levels[code] */
} qtk_q_mode;

/* One row of the scheme table; the only list of schemes in qtk. */
typedef struct qtk_q_scheme {
	const char *name;       /* CLI / file spelling, e.g. "int4-affine" */
	uint8_t code_bits;      /* bits per stored element (32/16/8/4) */
	uint8_t quantized;      /* has a SCALES plane */
	uint8_t has_bias;       /* has a BIASES plane */
	uint8_t float_store;    /* F32/F16/BF16: plain float storage */
	qtk_dtype store_dtype;  /* float schemes: the stored dtype */
	qtk_q_mode mode;        /* how codes become values (above) */
	uint8_t code_signed;    /* SYM: codes are two's complement */
	uint8_t code_offset;    /* SYM, unsigned codes: v = code - code_offset */
	const float *levels;    /* LOOKUP: [1 << code_bits] values, ascending */
	uint8_t double_quant;   /* takes QTK_QF_DOUBLE_QUANT */
	uint8_t is_default;     /* the main scheme when none is given (one row) */
	/* The recipe's "wider" action: one step wider than this main scheme
	 * (4-bit -> int8, 8-bit -> f16; unquantized rows: themselves). */
	qtk_scheme_id wider;
	/* --requantize targets when a sink cannot hold this scheme: the
	 * uniform scheme of the same bits on a symmetric grid (ggml blocks)
	 * and on an affine one (MLX); the scheme itself where it is one. */
	qtk_scheme_id requant_sym, requant_affine;
	/* verify's default limit on a layer's relative output error
	 * (docs/cli.md, "How the limits were chosen"). */
	double verify_limit;
	/* Quantize nrows rows of f32 into planes; rejects NaN/Inf (naming
	 * tensor, row and group), scales and biases that do not fit
	 * scale_dtype (QTK_E_Q_SCALE_RANGE) and, for F16/BF16 float stores,
	 * finite values their type cannot hold (QTK_E_Q_VALUE_RANGE, naming
	 * row, column and value). */
	qtk_err (*quantize)(const qtk_q_layout *L, const float *src, size_t nrows,
	                    size_t cols, const qtk_q_planes *dst,
	                    const qtk_q_opts *opts, qtk_status *st);
	/* Reconstruct f32 rows. */
	void (*dequantize)(const qtk_q_layout *L, const qtk_q_cplanes *src,
	                   size_t nrows, size_t cols, float *dst);
	/* Dot of one stored row with an f32 vector x[cols]. */
	float (*dot)(const qtk_q_layout *L, const qtk_q_cplanes *row, size_t cols,
	             const float *x);
} qtk_q_scheme;

/* NULL if id is not a known scheme. */
QTK_API const qtk_q_scheme *qtk_q_scheme_get(qtk_scheme_id id);
/* Scheme id from its name ("int8", "int4", "int4-affine", "nf4", "f16" ...);
 * -1 if unknown. */
QTK_API int qtk_q_scheme_from_name(const char *name);
/* The scheme flagged is_default (the main scheme when none is given). */
QTK_API qtk_scheme_id qtk_q_scheme_default(void);
/* The float-storage scheme whose stored dtype is dt (F32, F16, BF16); -1
 * if no row stores dt. */
QTK_API int qtk_q_scheme_float(qtk_dtype dt);
/* The quantized scheme row with these code properties (code bits, mode,
 * and for SYM: signed codes or the code offset); -1 if none. Lets other
 * parts map foreign types (ggml blocks) onto rows by what they store. */
QTK_API int qtk_q_scheme_find(unsigned code_bits, qtk_q_mode mode, int code_signed,
                              unsigned code_offset);
/* Is this layout valid for a [rows][cols] tensor? (group value, scale
 * dtype, flags, dtype.) Message names the problem. */
QTK_API qtk_err qtk_q_layout_check(const qtk_q_layout *L, uint64_t rows,
                                   uint64_t cols, qtk_status *st);
/* Byte size of every plane (0 for planes the scheme does not have);
 * QTK_E_OVERFLOW on overflow. */
QTK_API qtk_err qtk_q_plane_sizes(const qtk_q_layout *L, uint64_t rows,
                                  uint64_t cols, uint64_t sizes[QTK_PLANE_MAX]);
/* Groups in one row of cols elements (the last one may be shorter). */
QTK_API uint64_t qtk_q_groups_per_row(const qtk_q_layout *L, uint64_t cols);
/* Bytes one row occupies in a row-addressable plane (0 otherwise). */
QTK_API uint64_t qtk_q_row_bytes(const qtk_q_layout *L, uint64_t cols, int plane);
/* Bits per weight including scales/biases/double-quant for this shape. */
QTK_API double qtk_q_bits_per_weight(const qtk_q_layout *L, uint64_t rows,
                                     uint64_t cols);

/* Convenience wrappers that dispatch through the table. */
QTK_API qtk_err qtk_q_quantize_rows(const qtk_q_layout *L, const float *src,
                                    size_t nrows, size_t cols,
                                    const qtk_q_planes *dst,
                                    const qtk_q_opts *opts, qtk_status *st);
/* qtk_q_quantize_rows, and each row's error statistics added to acc: the
 * sums of dequantizing the row and calling qtk_q_acc_add on it, row by row
 * (fused into the quantize kernels where the ISA has them, so the bits do
 * not depend on the ISA). */
QTK_API qtk_err qtk_q_quantize_rows_acc(const qtk_q_layout *L, const float *src,
                                        size_t nrows, size_t cols,
                                        const qtk_q_planes *dst,
                                        const qtk_q_opts *opts, qtk_q_acc *acc,
                                        qtk_status *st);
QTK_API void qtk_q_dequantize_rows(const qtk_q_layout *L,
                                   const qtk_q_cplanes *src, size_t nrows,
                                   size_t cols, float *dst);

/* NF4 (bitsandbytes): the value of code 0..15, and the code of x in
 * [-1, 1] by the bitsandbytes decision tree (x on a midpoint takes the
 * lower code). */
QTK_API float qtk_q_nf4_value(unsigned code);
QTK_API unsigned qtk_q_nf4_code(float x);

/* NF4 double quantization (QTK_QF_DOUBLE_QUANT), a tensor-level pass:
 * quantize every chunk of rows with a layout that has no DOUBLE_QUANT flag
 * and scale_dtype F32 (its SCALES plane then holds the f32 group absmax
 * values, [rows][groups_per_row]), then call qtk_q_double_quant once on all
 * ngroups = rows * groups_per_row values: it writes the u8 SCALES plane of
 * the double-quantized layout (codes[ngroups]) and its DQ plane (sized by
 * qtk_q_plane_sizes). The CODES plane is the same in both layouts.
 * qtk_q_double_dequant rebuilds the f32 absmax values; dequantize with the
 * F32-scale layout and those values. See docs/quantization.md. */
QTK_API qtk_err qtk_q_double_quant(const float *absmax, uint64_t ngroups,
                                   uint8_t *codes, void *dq, qtk_status *st);
QTK_API void qtk_q_double_dequant(const uint8_t *codes, uint64_t ngroups,
                                  const void *dq, float *absmax);

/* Error metrics. */
QTK_API void qtk_q_acc_add(qtk_q_acc *a, const float *w, const float *w_hat,
                           size_t n);
QTK_API void qtk_q_acc_merge(qtk_q_acc *into, const qtk_q_acc *from);
QTK_API void qtk_q_metrics_from(const qtk_q_acc *a, qtk_q_metrics *m);

/* ===================================================================== */
/* GPTQ (Frantar et al. 2022, the reference gptq.py)                      */
/* ===================================================================== */

/* Dense products, row-major: C[m][n] = alpha * op(A)[m][k] * op(B)[k][n] +
 * beta * C, op(X) = X^T when its flag is set; lda, ldb, ldc are the row
 * strides of A, B, C as stored (cblas_?gemm with CblasRowMajor has this
 * meaning). quant links no BLAS: a caller that has one passes it here;
 * NULL members (or a NULL table) use qtk_gemm_ref's plain loops. */
typedef struct {
	void (*sgemm)(void *ctx, int ta, int tb, size_t m, size_t n, size_t k, float alpha,
	              const float *a, size_t lda, const float *b, size_t ldb, float beta,
	              float *c, size_t ldc);
	void (*dgemm)(void *ctx, int ta, int tb, size_t m, size_t n, size_t k, double alpha,
	              const double *a, size_t lda, const double *b, size_t ldb, double beta,
	              double *c, size_t ldc);
	void *ctx;
} qtk_gemm;

/* The plain C loops (ctx unused). */
QTK_API void qtk_sgemm_ref(void *ctx, int ta, int tb, size_t m, size_t n, size_t k,
                           float alpha, const float *a, size_t lda, const float *b,
                           size_t ldb, float beta, float *c, size_t ldc);
QTK_API void qtk_dgemm_ref(void *ctx, int ta, int tb, size_t m, size_t n, size_t k,
                           double alpha, const double *a, size_t lda, const double *b,
                           size_t ldb, double beta, double *c, size_t ldc);

typedef struct {
	double damp;        /* lambda = damp * mean(diag H) is added to the
	                       diagonal (0.01: gptq.py's percdamp) */
	int act_order;      /* columns by decreasing diag H (implies static
	                       groups); the stored column order stays the original */
	int static_groups;  /* every group's scale from the original weights,
	                       before the sweep; else each group's when the
	                       sweep reaches it, from the error-updated weights */
	int keep_dead;      /* dead columns (diag H = 0): 0 sets their weights
	                       to 0 as gptq.py does; 1 keeps them (quantized as
	                       round-to-nearest would) */
	uint32_t block;     /* columns per lazy batch (0: 128) */
	uint32_t refit;     /* after the sweep, refit each row's group scales
	                       (and biases) to the same objective with the
	                       codes fixed: this many conjugate-gradient
	                       iterations (0: none). Keeps an f32 copy of H
	                       (4 cols^2 bytes) with the factor. */
} qtk_gptq_opts;

/* The refit `qtk convert --calib-mode gptq` asks for unless told: on
 * stories260K (held-out KL divergence, docs/calibration.md) it takes
 * GPTQ with act-order from 0.0716 to 0.0689; rows of two groups converge
 * in two steps, and 4 leaves little on rows of hundreds of groups. */
#define QTK_GPTQ_REFIT_DEFAULT 4

/* The defaults above (damp 0.01, block 128, the rest 0). */
QTK_API void qtk_gptq_opts_init(qtk_gptq_opts *o);

/* A factored Hessian: the upper Cholesky factor U of (H + lambda I)^-1
 * (U^T U, columns in act order when asked), as f32. One per distinct
 * layer input: q, k and v projections share theirs. */
typedef struct qtk_gptq qtk_gptq;

/* Factor h ([cols][cols], symmetric, the layer input's 2 X^T X / N in
 * double: sums over many tokens of nearly collinear activations lose too
 * much in f32, and the factorization of an ill-conditioned matrix more).
 * The factorization runs in double (g->dgemm for the O(cols^3) work); h is
 * not modified. QTK_E_Q_NONFINITE for NaN/Inf in h, QTK_E_ARG for a
 * negative diagonal entry, QTK_E_Q_HESSIAN when H + lambda I is not
 * positive definite (raise damp). Memory: 8 cols^2 bytes while factoring,
 * 4 cols^2 bytes (of the same block) after. */
QTK_API qtk_err qtk_gptq_prepare(const double *h, size_t cols, const qtk_gptq_opts *o,
                                 const qtk_gemm *g, qtk_gptq **out, qtk_status *st);
QTK_API void qtk_gptq_free(qtk_gptq *f);  /* NULL is fine */

/* GPTQ of rows [0, rows) of w ([rows][cols], the cols of f) into planes
 * of layout L (an integer scheme: int8, int4, int4-affine, nf4,
 * int8-affine, every group size and the MLX affine rule; not double
 * quantization, which is a pass over F32 scales as for
 * qtk_q_quantize_rows). Rows are independent: a caller may split a tensor
 * into runs of rows (opts->row0 for messages) and quantize them with one
 * f. Each group's scale comes from qtk's rule on the weights it covers
 * (the search when opts->search, each column weighted by what its error
 * costs GPTQ's objective, 1 / U[i][i]^2; opts->importance is not used);
 * codes are those of the scheme for the error-updated weight. On return w holds the dequantized result (what
 * qtk_q_dequantize_rows gives for dst), in the original column order.
 * The heavy work is g->sgemm: W[:, j2:] -= Err * U[j1:j2, j2:] per block.
 * Extra memory: rows * block floats. f is only read: threads may quantize
 * runs of rows with one f at once. On failure (the messages of
 * qtk_q_quantize_rows, naming tensor, row and group) w and dst hold
 * partial results. */
QTK_API qtk_err qtk_gptq_quantize(const qtk_gptq *f, const qtk_gemm *g,
                                  const qtk_q_layout *L, float *w, size_t rows,
                                  size_t cols, const qtk_q_planes *dst,
                                  const qtk_q_opts *opts, qtk_status *st);

#ifdef __cplusplus
}
#endif
#endif /* QTK_QUANT_H */
