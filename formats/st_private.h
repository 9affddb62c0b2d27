/* formats (private): safetensors internals shared with tests and fuzzers. */
#ifndef QTK_ST_PRIVATE_H
#define QTK_ST_PRIVATE_H
#include <stddef.h>
#include "qtk_formats.h"

/* Parse a single safetensors file held in memory (borrowed: data must
 * outlive *out). name is used in messages. Same checks as qtk_st_open. */
qtk_err qtk_st_open_mem(const void *data, size_t size, const char *name,
                        qtk_st_file **out, qtk_status *st);
#endif
