#include "CKernels.h"
#include <math.h>

void kb_exp(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = expf(x[i]);
}
