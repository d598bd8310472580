#include "kb_math.h"
#include <math.h>
#include <string.h>

/* Polynomial coefficients below were fitted for this file (near-minimax, Lawson
   reweighted least squares against 40-digit references); each core stays below
   1e-8 relative error in exact arithmetic, so float rounding dominates (~2 ulp). */

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

typedef __m256 v8;

static inline v8 set1(float c) { return _mm256_set1_ps(c); }

/* c[0]·x^(n-1) + … + c[n-1] by Horner's rule, one fma a step. */
static inline v8 horner8(v8 x, const float *c, int n) {
    v8 p = set1(c[0]);
    for (int i = 1; i < n; i++) p = _mm256_fmadd_ps(p, x, set1(c[i]));
    return p;
}

/* exp(x) for every lane. x = n·ln2 + r with |r| <= ln2/2, exp(r) by polynomial,
   2^n applied as two halves so results that land in the subnormal range (x down to
   about -104) round once instead of flushing to zero. */
static inline v8 exp8(v8 x) {
    const v8 hi = set1(88.72283935546875f), lo = set1(-103.972084f);
    v8 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    v8 n = _mm256_round_ps(_mm256_mul_ps(xc, set1(1.44269504088896341f)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* ln2 split so that n·ln2_hi is exact enough inside the fma. */
    v8 r = _mm256_fnmadd_ps(n, set1(0.693145751953125f), xc);
    r = _mm256_fnmadd_ps(n, set1(1.428606820309417232e-06f), r);
    static const float c[] = {1.985812734792904e-4f, 1.3934486462307601e-3f, 8.333361814771293e-3f,
                              4.1666457457367426e-2f, 1.6666666524200283e-1f, 5.000000014192005e-1f};
    v8 p = _mm256_fmadd_ps(horner8(r, c, 6), _mm256_mul_ps(r, r), _mm256_add_ps(r, set1(1.0f)));
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i h = _mm256_srai_epi32(ni, 1);
    __m256i l = _mm256_sub_epi32(ni, h);
    const __m256i bias = _mm256_set1_epi32(127);
    v8 sh = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
    v8 sl = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(l, bias), 23));
    v8 y = _mm256_mul_ps(_mm256_mul_ps(p, sh), sl);
    y = _mm256_blendv_ps(y, set1(INFINITY), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

static inline v8 abs8(v8 x) { return _mm256_andnot_ps(set1(-0.0f), x); }
static inline v8 sign8(v8 x) { return _mm256_and_ps(set1(-0.0f), x); }
static inline v8 keep_nan(v8 y, v8 x) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); }

static inline v8 sigmoid8(v8 x) {
    v8 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(set1(1.0f), _mm256_add_ps(set1(1.0f), e));
}

/* Small |x|: odd polynomial (1 - 2/(e^2x+1) cancels there). Large |x|: via exp,
   clamped at 10 where tanh is 1 in float. */
static inline v8 tanh8(v8 x) {
    static const float c[] = {2.2928301758122485e-3f, -8.344029210936438e-3f, 2.1768947406650807e-2f,
                              -5.395926361688779e-2f, 1.333330357683564e-1f, -3.333333317229831e-1f};
    v8 a = abs8(x), a2 = _mm256_mul_ps(a, a);
    v8 p = horner8(a2, c, 6);
    v8 small = _mm256_fmadd_ps(_mm256_mul_ps(p, a2), a, a);
    v8 e = exp8(_mm256_add_ps(_mm256_min_ps(a, set1(10.0f)), _mm256_min_ps(a, set1(10.0f))));
    v8 large = _mm256_sub_ps(set1(1.0f), _mm256_div_ps(set1(2.0f), _mm256_add_ps(e, set1(1.0f))));
    v8 y = _mm256_blendv_ps(large, small, _mm256_cmp_ps(a, set1(0.625f), _CMP_LT_OQ));
    return keep_nan(_mm256_or_ps(y, sign8(x)), x);
}

/* |x| < 1: x·P(x²). 1 <= |x| <= 4: 1 - exp(-f(|x|)) with f ≈ -log(erfc) by polynomial
   (erfc's relative error is f's absolute error, so the tail keeps full accuracy).
   |x| > 4: erf is ±1 in float. */
static inline v8 erf8(v8 x) {
    static const float cp[] = {7.853860999945672e-5f, -8.010193518248332e-4f, 5.1883276735557315e-3f,
                               -2.6853811928875093e-2f, 1.128358514845961e-1f, -3.7612625824219204e-1f,
                               1.12837916572671f};
    static const float cf[] = {-1.5998158593433232e-6f, 4.5298024241413604e-5f, -5.902025830009094e-4f,
                               4.727685072199315e-3f, -2.632751326479527e-2f, 1.099097106271675e-1f,
                               6.320134619673509e-1f, 1.1301197040161841f, -2.9102243894010225e-4f};
    v8 a = abs8(x), a2 = _mm256_mul_ps(a, a);
    v8 small = _mm256_mul_ps(horner8(a2, cp, 7), a);
    v8 f = horner8(_mm256_min_ps(a, set1(4.0f)), cf, 9);
    v8 large = _mm256_sub_ps(set1(1.0f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), f)));
    v8 y = _mm256_blendv_ps(large, small, _mm256_cmp_ps(a, set1(1.0f), _CMP_LT_OQ));
    return keep_nan(_mm256_or_ps(y, sign8(x)), x);
}

/* Full vectors directly; the ragged tail through a zero-padded scratch vector. */
#define KB_MAP(name, fn)                                                   \
    void name(const float *x, float *y, size_t n) {                        \
        size_t i = 0;                                                      \
        for (; i + 16 <= n; i += 16) {                                     \
            v8 a = fn(_mm256_loadu_ps(x + i));                             \
            v8 b = fn(_mm256_loadu_ps(x + i + 8));                         \
            _mm256_storeu_ps(y + i, a);                                    \
            _mm256_storeu_ps(y + i + 8, b);                                \
        }                                                                  \
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, fn(_mm256_loadu_ps(x + i))); \
        if (i < n) {                                                       \
            float buf[8] = {0};                                            \
            memcpy(buf, x + i, (n - i) * sizeof(float));                   \
            _mm256_storeu_ps(buf, fn(_mm256_loadu_ps(buf)));               \
            memcpy(y + i, buf, (n - i) * sizeof(float));                   \
        }                                                                  \
    }

KB_MAP(kb_exp, exp8)
KB_MAP(kb_tanh, tanh8)
KB_MAP(kb_erf, erf8)
KB_MAP(kb_sigmoid, sigmoid8)

#else
/* Portable fallback (no AVX2/FMA): libm. */
void kb_exp(const float *x, float *y, size_t n) { for (size_t i = 0; i < n; i++) y[i] = expf(x[i]); }
void kb_tanh(const float *x, float *y, size_t n) { for (size_t i = 0; i < n; i++) y[i] = tanhf(x[i]); }
void kb_erf(const float *x, float *y, size_t n) { for (size_t i = 0; i < n; i++) y[i] = erff(x[i]); }
void kb_sigmoid(const float *x, float *y, size_t n) { for (size_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i])); }
#endif
