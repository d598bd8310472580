#ifndef KB_MATH_H
#define KB_MATH_H
#include <stddef.h>

/* Vectorised transcendental functions over contiguous float buffers.
   Input and output may alias (in-place is allowed). */
void kb_exp(const float *x, float *y, size_t n);
void kb_tanh(const float *x, float *y, size_t n);
void kb_erf(const float *x, float *y, size_t n);
/* y = 1 / (1 + exp(-x)) */
void kb_sigmoid(const float *x, float *y, size_t n);

#endif
