#ifndef KOALABOOTH_CKERNELS_H
#define KOALABOOTH_CKERNELS_H
#include <stddef.h>

/// Vectorised elementwise kernels over contiguous float buffers.
/// y[i] = exp(x[i]); x and y may alias.
void kb_exp(const float *x, float *y, size_t n);

#endif
