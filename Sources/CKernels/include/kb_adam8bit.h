#ifndef KB_ADAM8BIT_H
#define KB_ADAM8BIT_H
#include <stddef.h>
#include <stdint.h>

/* bitsandbytes-style 8-bit Adam and blockwise quantization (blocks of 256 values),
   vectorised. Results are bit-identical to the scalar Swift code in
   KoalaTraining/Adam8bit.swift and BlockwiseQuantization.swift: the same float
   operations in the same order, fused multiply-adds only where that code has them.

   `table` is the 65536-bin code table of BlockwiseQuantizer followed by at least 3
   readable bytes (the AVX2 gather loads 4 bytes at each index). */

#define KB_ADAM8BIT_BLOCK 256

/* Instruction sets with a kernel. */
enum { KB_ADAM8BIT_AVX2 = 1, KB_ADAM8BIT_AVX512 = 2 };

/* The best level this CPU runs (0: none, use the Swift code). */
int kb_adam8bit_best_level(void);

/* One step's constants, in float32 as the Swift code rounds them. */
typedef struct {
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float correction2; /* sqrt(1 - beta2^t) */
    float neg_step;    /* -lr / (1 - beta1^t) */
    float eps;
    float decay;       /* 1 - lr * weight_decay, applied when has_decay */
    int has_decay;
} kb_adam8bit_hparams;

/* Blocks [block_lo, block_hi) of a tensor of n values (its last block may be short):
   dequantize both moments, update them and p, requantize with fresh absmax. */
void kb_adam8bit_update(int level, const kb_adam8bit_hparams *h, size_t n, size_t block_lo, size_t block_hi,
                        float *p, const float *g, uint8_t *state1, uint8_t *state2, float *absmax1,
                        float *absmax2, const float *code1, const float *code2, const uint8_t *table1,
                        const uint8_t *table2);

/* Blocks [block_lo, block_hi) of n values of x in blocks of block_size: codes and absmax. */
void kb_quantize_blockwise(int level, const float *x, size_t n, size_t block_size, size_t block_lo,
                           size_t block_hi, uint8_t *codes, float *absmax, const uint8_t *table);

#endif
