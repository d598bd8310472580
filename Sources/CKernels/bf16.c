#include "kb_bf16.h"
#include <immintrin.h>
#include <string.h>

/* Scalar reference (also the tails of the vector loops). */
static inline uint32_t round_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if (f != f) return (u | 0x400000u) & 0xFFFF0000u; /* NaN: keep it, quiet */
    return (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
}

/* AVX2: 8 lanes of the same rounding. */
static inline __m256i round_bits8(__m256 x) {
    __m256i u = _mm256_castps_si256(x);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x400000)), nan);
    return _mm256_and_si256(r, _mm256_set1_epi32((int)0xFFFF0000u));
}

/* The C kernels are built with -mavx2 (every kernel of this target assumes it, as
   CPUFeatures' `generic` level notes); the scalar loops are chosen at run time where
   the CPU lacks AVX2 all the same, so these conversions never fault. */
static int has_avx2(void) {
    static int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx2") ? 1 : 0;
    return cached;
}

void kb_f32_to_bf16(const float *x, uint16_t *y, size_t n) {
    size_t i = 0;
    if (has_avx2()) {
        for (; i + 16 <= n; i += 16) {
            __m256i a = _mm256_srli_epi32(round_bits8(_mm256_loadu_ps(x + i)), 16);
            __m256i b = _mm256_srli_epi32(round_bits8(_mm256_loadu_ps(x + i + 8)), 16);
            /* packus works per 128-bit lane: a0 b0 a1 b1 -> reorder to a0 a1 b0 b1. */
            __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
            _mm256_storeu_si256((__m256i *)(y + i), p);
        }
    }
    for (; i < n; i++) y[i] = (uint16_t)(round_bits(x[i]) >> 16);
}

void kb_bf16_to_f32(const uint16_t *x, float *y, size_t n) {
    size_t i = 0;
    if (has_avx2()) {
        for (; i + 8 <= n; i += 8) {
            __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i)));
            _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
        }
    }
    for (; i < n; i++) {
        uint32_t u = (uint32_t)x[i] << 16;
        memcpy(y + i, &u, 4);
    }
}

void kb_round_bf16(const float *x, float *y, size_t n) {
    size_t i = 0;
    if (has_avx2()) {
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_castsi256_ps(round_bits8(_mm256_loadu_ps(x + i))));
    }
    for (; i < n; i++) {
        uint32_t u = round_bits(x[i]);
        memcpy(y + i, &u, 4);
    }
}
