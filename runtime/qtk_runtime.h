/* runtime: loading packed .qtk files by mmap, quantized kernels, parity
 * checks against the float original, and benchmarks. */
#ifndef QTK_RUNTIME_H
#define QTK_RUNTIME_H

#include "qtk_formats.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif /* QTK_RUNTIME_H */
