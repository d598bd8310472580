#ifndef KB_BF16_H
#define KB_BF16_H
#include <stddef.h>
#include <stdint.h>

/* bfloat16 conversions for KoalaBooth's bf16 precision mode (KoalaTensor/Precision.swift).
   float -> bf16 rounds to nearest, ties to even, as PyTorch's `.to(torch.bfloat16)`;
   NaN stays a (quiet) NaN. Input and output may alias where the types have the same size. */
void kb_f32_to_bf16(const float *x, uint16_t *y, size_t n);
void kb_bf16_to_f32(const uint16_t *x, float *y, size_t n);
/* y = float(bf16(x)): the value autocast would feed a bf16 GEMM, kept in float32. */
void kb_round_bf16(const float *x, float *y, size_t n);

#endif
