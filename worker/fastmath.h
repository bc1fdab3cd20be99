/* fastmath: exp, tanh and sigmoid in float for the recurrent kernels,
 * with only selects that compile to blends, so that the gate loops vectorise (libm's tanhf and expf are
 * calls that do not, and took a third of a small RNN's step).
 *
 * exp: k = round(x / ln 2) by the 1.5 * 2^23 trick, r = x - k ln 2 in two
 * parts (Cephes' split: k * 0.693359375 is exact), e^r by its Taylor
 * polynomial of degree 7 (|r| <= 0.35: truncation 5e-9), times 2^k built
 * in the exponent bits. x is clamped to [-87, 88] first (normal results).
 * tanh: the odd Taylor polynomial to x^9 below |x| = 0.25 (truncation
 * 1e-8), (1 - e)/(1 + e) with e = exp(-2|x|) above; sign copied.
 * Errors against double, measured in tests/test_layers.c over [-20, 20]:
 * within 5e-7 relative (exp) and 3e-7 absolute (tanh, sigmoid). NaN in, NaN
 * out, so divergence detection still sees it; +-inf give the limits. (A
 * select on x == x would not vectorise with GCC: NaN flows through the
 * arithmetic instead.) */
#ifndef CLIPD_FASTMATH_H
#define CLIPD_FASTMATH_H

/* Hot elementwise loops are built three times, for AVX-512, AVX2 and the
 * baseline, and the loader picks by CPU: the widest vectors there are, the
 * same bits either way (each lane does the same operations: no FMA, as in
 * ISO C mode GCC contracts nothing, and no reassociation). Checked: W1, W2,
 * LSTM 128 and GRU 160 runs gave byte-identical weights built with and
 * without the AVX-512 clones. */
#if defined(__x86_64__) && !defined(__clang__)
#define VEC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VEC_CLONES
#endif

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float fm_expf(float x)
{
    float c = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x; /* NaN passes through */
    float k = (c * 1.44269504f + 12582912.0f) - 12582912.0f;
    float r = c - k * 0.693359375f;
    r = r + k * 2.12194440e-4f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.6666667e-1f + r * (4.1666668e-2f +
              r * (8.3333338e-3f + r * (1.3888889e-3f + r * 1.9841270e-4f))))));
    float kc = k < 200.0f ? k : 0.0f; /* NaN (false) never reaches the integer conversion */
    int32_t bits = ((int32_t)kc + 127) * (1 << 23);
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s; /* NaN in r, so NaN out */
}

static inline float fm_tanhf(float x)
{
    float a = fabsf(x);
    float e = fm_expf(-2.0f * a);
    float big = (1.0f - e) / (1.0f + e);
    float a2 = a * a;
    float small = a + a * a2 * (-3.3333334e-1f + a2 * (1.3333334e-1f + a2 * (-5.3968254e-2f +
                  a2 * 2.1869488e-2f)));
    float y = a < 0.25f ? small : big;
    return copysignf(y, x);
}

static inline float fm_sigmoidf(float x) { return 1.0f / (1.0f + fm_expf(-x)); }

#endif
