/* formats (private): the on-disk layout of the qtk packed format
 * (docs/format.md) and the writer internals shared by pack_write.c and
 * pack_zstd.c. All multi-byte fields are little-endian. */
#ifndef QTK_PACK_IMPL_H
#define QTK_PACK_IMPL_H

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "fileio.h"
#include "qtk_formats.h"

#define PK_MAGIC QTK_PACK_MAGIC
#define PK_BOM 0x0A0B0C0Du
#define PK_HEADER_SIZE 128u
#define PK_RECORD_SIZE 224u        /* v1.0 record; readers accept larger */
#define PK_PLANE_ALIGN 64u
#define PK_DEFAULT_ALIGN 4096u
#define PK_RF_COMPRESSED 0x1u      /* required flag: some plane is zstd */
#define PK_RF_KNOWN PK_RF_COMPRESSED
#define PK_OF_STORED_CRC 0x1u      /* optional flag: records hold stored_crc32 */

/* header field offsets */
enum {
	H_MAGIC = 0, H_MAJOR = 8, H_MINOR = 10, H_BOM = 12, H_HSIZE = 16,
	H_RFLAGS = 20, H_OFLAGS = 24, H_RECSIZE = 28, H_COUNT = 32,
	H_DIR = 40, H_INDEX = 48, H_STRTAB = 56, H_STRSIZE = 64,
	H_DATA = 72, H_DATASIZE = 80, H_META = 88, H_METASIZE = 96,
	H_FSIZE = 104, H_ALIGN = 112, H_DIRCRC = 116, H_METACRC = 120,
	H_HCRC = 124
};
/* record field offsets */
enum {
	R_NAME_OFF = 0, R_NAME_LEN = 4, R_NDIM = 8, R_SCHEME = 9, R_SRC_DT = 10,
	R_SCALE_DT = 11, R_DTYPE = 12, R_GROUP = 16, R_QFLAGS = 20, R_SHAPE = 24,
	R_PLANES = 88, R_PLANE_SIZE = 32, R_STORED_CRC = 216,
	P_OFFSET = 0, P_SIZE = 8, P_STORED = 16, P_CRC = 24, P_FLAGS = 28
};
_Static_assert(H_HCRC + 4 == PK_HEADER_SIZE, "header layout");
_Static_assert(R_PLANES + QTK_PLANE_MAX * R_PLANE_SIZE + 8 == PK_RECORD_SIZE,
               "record layout");

static inline void pk_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void pk_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void pk_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t pk_get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t pk_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t pk_get64(const uint8_t *p)
{
	return (uint64_t)pk_get32(p) | (uint64_t)pk_get32(p + 4) << 32;
}

/* crc32 over any length (zlib takes uInt lengths). */
uint32_t pk_crc32(uint32_t crc, const void *buf, uint64_t n);

/* ---- writer internals ---------------------------------------------- */

typedef struct {
	uint64_t off, len;
	uint32_t crc;
} pk_chunk;

typedef struct {
	uint64_t offset, size, stored;
	uint32_t crc, flags;
	pk_chunk *chunks;     /* put() records, under the writer's lock */
	size_t nchunks, cap;
} pk_wplane;

typedef struct {
	qtk_pack_desc d;       /* d.name points into names */
	uint64_t rows, cols;
	uint32_t name_off, name_len;
	pk_wplane p[QTK_PLANE_MAX];
	uint32_t stored_crc;   /* zstd form: crc32 of the stored bytes, planes in order */
} pk_wtensor;

struct qtk_pack_writer {
	qtk_outfile out;
	pthread_mutex_t lock;
	int lock_init;
	pk_wtensor *t;
	size_t n;
	char *strtab;          /* names, each NUL-terminated */
	uint64_t strtab_size;
	uint32_t *index;       /* tensor numbers sorted by name */
	uint32_t align;
	uint64_t data_offset;  /* first byte of the data section */
	uint64_t data_end;     /* end of the last plane */
	int failed;            /* a put failed: commit refuses */
};

/* Validate descs, copy names, sort the index, create the temporary file.
 * Plane sizes are filled; offsets are not (see pk_layout_fixed). */
qtk_err pk_writer_create(qtk_pack_writer **out, const char *path,
                         const qtk_pack_desc *descs, size_t n, uint32_t align,
                         const qtk_write_opts *opts, qtk_status *st);
/* Place a plane of stored bytes at the next free aligned offset. */
uint64_t pk_place(qtk_pack_writer *w, size_t i, int p, uint64_t stored);
/* Write directory, index, strings, metadata and header; fsync; rename.
 * Frees w either way. Plane crcs/stored sizes must be final. */
qtk_err pk_writer_finish(qtk_pack_writer *w, const char *meta, qtk_status *st);
/* Free w without touching files beyond removing the temporary. */
void pk_writer_free(qtk_pack_writer *w);

/* rows = prod(shape[:-1]), cols = shape[-1] (1 x 1 for rank 0). Returns
 * QTK_E_PK_NDIM, QTK_E_PK_SHAPE (a dim >= 2^63 or the product overflows). */
qtk_err pk_shape_2d(uint32_t ndim, const uint64_t *shape, uint64_t *rows,
                    uint64_t *cols);

/* The file's name for messages (pack_read.c). */
const char *pk_file_name(const qtk_pack_file *f);
/* Where the padding before tensor i's first plane starts (pack_read.c). */
uint64_t pk_pad_from(const qtk_pack_file *f, size_t i);
/* QTK_E_PK_PADDING naming the offset of the first nonzero byte of the
 * file's [a, b) and `where` that gap is, if there is one. */
qtk_err pk_check_zero(const qtk_pack_file *f, uint64_t a, uint64_t b, const char *where,
                      qtk_status *st);
/* "codes", "scales", "biases", "dq" */
extern const char *const pk_plane_names[QTK_PLANE_MAX];

/* Elements of 2 bytes in this plane? (byte-plane split applies) */
int pk_plane_is16(const qtk_q_layout *L, int p);

#endif
