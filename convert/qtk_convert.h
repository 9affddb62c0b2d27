/* convert: the conversion pipeline behind `qtk convert` and `qtk export`:
 * checkpoint in, packed (or GGUF / MLX) file out, streaming with bounded
 * memory across threads. The `qtk` command line lives beside it. */
#ifndef QTK_CONVERT_H
#define QTK_CONVERT_H

#include "qtk_runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif /* QTK_CONVERT_H */
