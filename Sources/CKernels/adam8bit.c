#include "kb_adam8bit.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Codes must equal bitsandbytes' (and the Swift reference's) bit for bit: every
   multiply and add rounds on its own unless the reference fuses it. */
#pragma clang fp contract(off)

/* Swift.max(acc, x) with x = |value|: a NaN value leaves acc as it is. */
static inline float max_keeping(float acc, float x) { return x >= acc ? x : acc; }

/* One value's code: clamp(x / absmax) to [-1, 1], then bitsandbytes' 65536 bins. */
static inline uint8_t code_of(float x, float inverse, const uint8_t *table) {
    float v = x * inverse;
    v = -1.0f >= v ? -1.0f : v; /* Swift.max(v, -1): NaN stays */
    v = 1.0f < v ? 1.0f : v;    /* Swift.min(v, 1) */
    float t = v + 1.0f;
    t = t * 0.5f;
    t = t * 65535.0f;
    t = t + 0.5f;
    return table[t == t ? (int)t : 0]; /* NaN (a broken gradient) gets code 0 */
}

/* One element of the Adam step; d1, d2 are the dequantized moments. */
static inline void adam_one(const kb_adam8bit_hparams *h, float *p, float g, float d1, float d2, float *m,
                            float *v) {
    float mi = fmaf(h->one_minus_beta1, g, d1 * h->beta1);
    float vi = fmaf(h->one_minus_beta2 * g, g, d2 * h->beta2);
    float denom = sqrtf(vi) / h->correction2 + h->eps;
    float pi = *p;
    if (h->has_decay) pi = pi * h->decay;
    *p = pi + (h->neg_step * mi) / denom;
    *m = mi;
    *v = vi;
}

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

int kb_adam8bit_best_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return KB_ADAM8BIT_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return KB_ADAM8BIT_AVX2;
    return 0;
}

/* ---- AVX2 + FMA: 8 lanes, a scalar tail for short blocks ---- */

static inline __m256 abs8(__m256 x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }

/* Lane maximum of NaN-free accumulators. */
static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

static float absmax_avx2(const float *x, size_t count) {
    __m256 acc = _mm256_setzero_ps();
    size_t j = 0;
    /* max_ps returns its second operand when the first is NaN: NaN values are skipped. */
    for (; j + 8 <= count; j += 8) acc = _mm256_max_ps(abs8(_mm256_loadu_ps(x + j)), acc);
    float r = hmax8(acc);
    for (; j < count; j++) r = max_keeping(r, fabsf(x[j]));
    return r;
}

/* Writes the codes of one block whose absmax is known; returns that absmax. */
static float codes_avx2(const float *x, size_t count, float absmax, uint8_t *codes, const uint8_t *table) {
    if (absmax == 0) {
        memset(codes, 0, count);
        return 0;
    }
    const float inverse = 1 / absmax;
    const __m256 inv = _mm256_set1_ps(inverse), one = _mm256_set1_ps(1), minus1 = _mm256_set1_ps(-1),
                 half = _mm256_set1_ps(0.5f), bins = _mm256_set1_ps(65535);
    const __m256i low = _mm256_set1_epi32(0xff);
    size_t j = 0;
    for (; j + 8 <= count; j += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j), inv);
        /* Operand order as code_of: a NaN passes through both clamps. */
        v = _mm256_min_ps(one, _mm256_max_ps(minus1, v));
        __m256 t = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_add_ps(v, one), half), bins), half);
        t = _mm256_and_ps(t, _mm256_cmp_ps(t, t, _CMP_ORD_Q));
        __m256i c = _mm256_i32gather_epi32((const int *)table, _mm256_cvttps_epi32(t), 1);
        c = _mm256_and_si256(c, low);
        __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
        _mm_storel_epi64((__m128i *)(codes + j), _mm_packus_epi16(w, w));
    }
    for (; j < count; j++) codes[j] = code_of(x[j], inverse, table);
    return absmax;
}

static void adam_block_avx2(const kb_adam8bit_hparams *h, size_t count, float *p, const float *g, uint8_t *s1,
                            uint8_t *s2, float *a1, float *a2, const float *code1, const float *code2,
                            const uint8_t *t1, const uint8_t *t2) {
    float m[KB_ADAM8BIT_BLOCK] __attribute__((aligned(32))), v[KB_ADAM8BIT_BLOCK] __attribute__((aligned(32)));
    const float scale1 = *a1, scale2 = *a2;
    const __m256 sc1 = _mm256_set1_ps(scale1), sc2 = _mm256_set1_ps(scale2), b1 = _mm256_set1_ps(h->beta1),
                 c1 = _mm256_set1_ps(h->one_minus_beta1), b2 = _mm256_set1_ps(h->beta2),
                 c2 = _mm256_set1_ps(h->one_minus_beta2), corr2 = _mm256_set1_ps(h->correction2),
                 eps = _mm256_set1_ps(h->eps), decay = _mm256_set1_ps(h->decay),
                 negStep = _mm256_set1_ps(h->neg_step);
    __m256 acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 8 <= count; j += 8) {
        __m256i q1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(s1 + j)));
        __m256i q2 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(s2 + j)));
        __m256 d1 = _mm256_mul_ps(_mm256_i32gather_ps(code1, q1, 4), sc1);
        __m256 d2 = _mm256_mul_ps(_mm256_i32gather_ps(code2, q2, 4), sc2);
        __m256 gi = _mm256_loadu_ps(g + j);
        __m256 mi = _mm256_fmadd_ps(c1, gi, _mm256_mul_ps(d1, b1));
        __m256 vi = _mm256_fmadd_ps(_mm256_mul_ps(c2, gi), gi, _mm256_mul_ps(d2, b2));
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), corr2), eps);
        __m256 pi = _mm256_loadu_ps(p + j);
        if (h->has_decay) pi = _mm256_mul_ps(pi, decay);
        _mm256_storeu_ps(p + j, _mm256_add_ps(pi, _mm256_div_ps(_mm256_mul_ps(negStep, mi), denom)));
        _mm256_store_ps(m + j, mi);
        _mm256_store_ps(v + j, vi);
        acc1 = _mm256_max_ps(abs8(mi), acc1);
        acc2 = _mm256_max_ps(abs8(vi), acc2);
    }
    float max1 = hmax8(acc1), max2 = hmax8(acc2);
    for (; j < count; j++) {
        adam_one(h, p + j, g[j], code1[s1[j]] * scale1, code2[s2[j]] * scale2, m + j, v + j);
        max1 = max_keeping(max1, fabsf(m[j]));
        max2 = max_keeping(max2, fabsf(v[j]));
    }
    *a1 = codes_avx2(m, count, max1, s1, t1);
    *a2 = codes_avx2(v, count, max2, s2, t2);
}

/* ---- AVX-512F/BW/VL: 16 lanes, short blocks by mask ---- */

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

AVX512 static inline __mmask16 lanes(size_t j, size_t count) {
    return count - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (count - j)) - 1);
}

AVX512 static inline __m512 abs16(__m512 x) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
}

AVX512 static float absmax_avx512(const float *x, size_t count) {
    __m512 acc = _mm512_setzero_ps();
    for (size_t j = 0; j < count; j += 16) {
        __mmask16 k = lanes(j, count);
        acc = _mm512_mask_max_ps(acc, k, abs16(_mm512_maskz_loadu_ps(k, x + j)), acc);
    }
    return _mm512_reduce_max_ps(acc);
}

AVX512 static float codes_avx512(const float *x, size_t count, float absmax, uint8_t *codes,
                                 const uint8_t *table) {
    if (absmax == 0) {
        memset(codes, 0, count);
        return 0;
    }
    const __m512 inv = _mm512_set1_ps(1 / absmax), one = _mm512_set1_ps(1), minus1 = _mm512_set1_ps(-1),
                 half = _mm512_set1_ps(0.5f), bins = _mm512_set1_ps(65535);
    for (size_t j = 0; j < count; j += 16) {
        __mmask16 k = lanes(j, count);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + j), inv);
        v = _mm512_min_ps(one, _mm512_max_ps(minus1, v));
        __m512 t = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_add_ps(v, one), half), bins), half);
        __m512i idx = _mm512_maskz_cvttps_epi32(_mm512_cmp_ps_mask(t, t, _CMP_ORD_Q), t);
        __m512i c = _mm512_i32gather_epi32(idx, (const void *)table, 1);
        _mm_mask_storeu_epi8(codes + j, k, _mm512_cvtepi32_epi8(c));
    }
    return absmax;
}

AVX512 static void adam_block_avx512(const kb_adam8bit_hparams *h, size_t count, float *p, const float *g,
                                     uint8_t *s1, uint8_t *s2, float *a1, float *a2, const float *code1,
                                     const float *code2, const uint8_t *t1, const uint8_t *t2) {
    float m[KB_ADAM8BIT_BLOCK] __attribute__((aligned(64))), v[KB_ADAM8BIT_BLOCK] __attribute__((aligned(64)));
    const __m512 sc1 = _mm512_set1_ps(*a1), sc2 = _mm512_set1_ps(*a2), b1 = _mm512_set1_ps(h->beta1),
                 c1 = _mm512_set1_ps(h->one_minus_beta1), b2 = _mm512_set1_ps(h->beta2),
                 c2 = _mm512_set1_ps(h->one_minus_beta2), corr2 = _mm512_set1_ps(h->correction2),
                 eps = _mm512_set1_ps(h->eps), decay = _mm512_set1_ps(h->decay),
                 negStep = _mm512_set1_ps(h->neg_step);
    __m512 acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps();
    for (size_t j = 0; j < count; j += 16) {
        __mmask16 k = lanes(j, count);
        __m512i q1 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, s1 + j));
        __m512i q2 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, s2 + j));
        __m512 d1 = _mm512_mul_ps(_mm512_i32gather_ps(q1, code1, 4), sc1);
        __m512 d2 = _mm512_mul_ps(_mm512_i32gather_ps(q2, code2, 4), sc2);
        __m512 gi = _mm512_maskz_loadu_ps(k, g + j);
        __m512 mi = _mm512_fmadd_ps(c1, gi, _mm512_mul_ps(d1, b1));
        __m512 vi = _mm512_fmadd_ps(_mm512_mul_ps(c2, gi), gi, _mm512_mul_ps(d2, b2));
        __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), corr2), eps);
        __m512 pi = _mm512_maskz_loadu_ps(k, p + j);
        if (h->has_decay) pi = _mm512_mul_ps(pi, decay);
        _mm512_mask_storeu_ps(p + j, k, _mm512_add_ps(pi, _mm512_div_ps(_mm512_mul_ps(negStep, mi), denom)));
        _mm512_store_ps(m + j, mi);
        _mm512_store_ps(v + j, vi);
        /* Lanes past the block's end hold values of code 0: kept out of the absmax. */
        acc1 = _mm512_mask_max_ps(acc1, k, abs16(mi), acc1);
        acc2 = _mm512_mask_max_ps(acc2, k, abs16(vi), acc2);
    }
    *a1 = codes_avx512(m, count, _mm512_reduce_max_ps(acc1), s1, t1);
    *a2 = codes_avx512(v, count, _mm512_reduce_max_ps(acc2), s2, t2);
}

void kb_adam8bit_update(int level, const kb_adam8bit_hparams *h, size_t n, size_t block_lo, size_t block_hi,
                        float *p, const float *g, uint8_t *state1, uint8_t *state2, float *absmax1,
                        float *absmax2, const float *code1, const float *code2, const uint8_t *table1,
                        const uint8_t *table2) {
    const size_t bs = KB_ADAM8BIT_BLOCK;
    for (size_t b = block_lo; b < block_hi; b++) {
        size_t lo = b * bs, count = n - lo < bs ? n - lo : bs;
        if (level == KB_ADAM8BIT_AVX512)
            adam_block_avx512(h, count, p + lo, g + lo, state1 + lo, state2 + lo, absmax1 + b, absmax2 + b, code1,
                              code2, table1, table2);
        else
            adam_block_avx2(h, count, p + lo, g + lo, state1 + lo, state2 + lo, absmax1 + b, absmax2 + b, code1,
                            code2, table1, table2);
    }
}

void kb_quantize_blockwise(int level, const float *x, size_t n, size_t block_size, size_t block_lo,
                           size_t block_hi, uint8_t *codes, float *absmax, const uint8_t *table) {
    for (size_t b = block_lo; b < block_hi; b++) {
        size_t lo = b * block_size, count = n - lo < block_size ? n - lo : block_size;
        if (level == KB_ADAM8BIT_AVX512)
            absmax[b] = codes_avx512(x + lo, count, absmax_avx512(x + lo, count), codes + lo, table);
        else
            absmax[b] = codes_avx2(x + lo, count, absmax_avx2(x + lo, count), codes + lo, table);
    }
}

#else

/* Built without AVX2: no kernel, the Swift code runs (these are never called). */
int kb_adam8bit_best_level(void) { return 0; }

void kb_adam8bit_update(int level, const kb_adam8bit_hparams *h, size_t n, size_t block_lo, size_t block_hi,
                        float *p, const float *g, uint8_t *state1, uint8_t *state2, float *absmax1,
                        float *absmax2, const float *code1, const float *code2, const uint8_t *table1,
                        const uint8_t *table2) {
    abort();
}

void kb_quantize_blockwise(int level, const float *x, size_t n, size_t block_size, size_t block_lo,
                           size_t block_hi, uint8_t *codes, float *absmax, const uint8_t *table) {
    abort();
}

#endif
