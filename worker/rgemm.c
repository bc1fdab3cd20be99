/* rgemm: packed recurrent products (see rgemm.h). */
#include "worker/rgemm.h"

#include <assert.h>
#include <cblas.h>
#include <string.h>
#include <strings.h>

#include "common/cfg.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* The kernels' tiles: MR rows x NR columns of C, K in blocks of KC (the
 * block of a B panel, KC x NR floats = 24 KiB, stays in L1). */
typedef void (*Kernel)(int kc, const float *const *a, const float *bp, float *c, int ldc);
typedef struct {
    int mr, nr, kc;
    Kernel kernel;
} Shape;

static int active = RGEMM_OFF;

char *openblas_get_corename(void);

const char *rgemm_blas_core(void)
{
    const char *s = openblas_get_corename();
    return s ? s : "?";
}

const char *rgemm_name(int isa)
{
    return isa == RGEMM_AVX512 ? "AVX-512" : isa == RGEMM_AVX2 ? "AVX2" : "off";
}

static int cpu_has(int isa)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (isa == RGEMM_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == RGEMM_AVX512) return __builtin_cpu_supports("avx512f");
#endif
    return isa == RGEMM_OFF;
}

int rgemm_set(int isa)
{
    if (!cpu_has(isa)) return 0;
    active = isa;
    return 1;
}

int rgemm_active(void) { return active; }

int rgemm_setup(void)
{
    static const struct {
        const char *core;
        int isa;
    } cores[] = {{"Haswell", RGEMM_AVX2},        {"Zen", RGEMM_AVX2},          {"SkylakeX", RGEMM_AVX512},
                 {"Cooperlake", RGEMM_AVX512}, {"SapphireRapids", RGEMM_AVX512}};
    const char *core = rgemm_blas_core();
    int isa = RGEMM_OFF;
    for (size_t i = 0; i < sizeof cores / sizeof *cores; i++) /* (builds without DYNAMIC_ARCH: "HASWELL") */
        if (!strcasecmp(core, cores[i].core)) isa = cores[i].isa;
    if (openblas_get_num_threads() != 1 || !rgemm_set(isa)) active = RGEMM_OFF;
    return active;
}

#if defined(__x86_64__)
/* c (4 rows of 24, stride ldc) += a (4 rows from a[0..3], kc along each) bp (kc x 24) */
__attribute__((target("avx2,fma"))) static void kernel_avx2(int kc, const float *const *a,
                                                            const float *bp, float *c, int ldc)
{
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
    float *c0 = c, *c1 = c + ldc, *c2 = c + 2 * (size_t)ldc, *c3 = c + 3 * (size_t)ldc;
    __m256 s00 = _mm256_loadu_ps(c0), s01 = _mm256_loadu_ps(c0 + 8), s02 = _mm256_loadu_ps(c0 + 16);
    __m256 s10 = _mm256_loadu_ps(c1), s11 = _mm256_loadu_ps(c1 + 8), s12 = _mm256_loadu_ps(c1 + 16);
    __m256 s20 = _mm256_loadu_ps(c2), s21 = _mm256_loadu_ps(c2 + 8), s22 = _mm256_loadu_ps(c2 + 16);
    __m256 s30 = _mm256_loadu_ps(c3), s31 = _mm256_loadu_ps(c3 + 8), s32 = _mm256_loadu_ps(c3 + 16);
    for (int k = 0; k < kc; k++, bp += 24) {
        __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8), b2 = _mm256_loadu_ps(bp + 16);
        __m256 x = _mm256_broadcast_ss(a0 + k);
        s00 = _mm256_fmadd_ps(x, b0, s00), s01 = _mm256_fmadd_ps(x, b1, s01), s02 = _mm256_fmadd_ps(x, b2, s02);
        x = _mm256_broadcast_ss(a1 + k);
        s10 = _mm256_fmadd_ps(x, b0, s10), s11 = _mm256_fmadd_ps(x, b1, s11), s12 = _mm256_fmadd_ps(x, b2, s12);
        x = _mm256_broadcast_ss(a2 + k);
        s20 = _mm256_fmadd_ps(x, b0, s20), s21 = _mm256_fmadd_ps(x, b1, s21), s22 = _mm256_fmadd_ps(x, b2, s22);
        x = _mm256_broadcast_ss(a3 + k);
        s30 = _mm256_fmadd_ps(x, b0, s30), s31 = _mm256_fmadd_ps(x, b1, s31), s32 = _mm256_fmadd_ps(x, b2, s32);
    }
    _mm256_storeu_ps(c0, s00), _mm256_storeu_ps(c0 + 8, s01), _mm256_storeu_ps(c0 + 16, s02);
    _mm256_storeu_ps(c1, s10), _mm256_storeu_ps(c1 + 8, s11), _mm256_storeu_ps(c1 + 16, s12);
    _mm256_storeu_ps(c2, s20), _mm256_storeu_ps(c2 + 8, s21), _mm256_storeu_ps(c2 + 16, s22);
    _mm256_storeu_ps(c3, s30), _mm256_storeu_ps(c3 + 8, s31), _mm256_storeu_ps(c3 + 16, s32);
}

/* c (8 rows of 48) += a (8 rows) bp (kc x 48): 24 of the 32 zmm registers accumulate */
__attribute__((target("avx512f"))) static void kernel_avx512(int kc, const float *const *a,
                                                             const float *bp, float *c, int ldc)
{
    __m512 s[8][3];
    for (int r = 0; r < 8; r++)
        for (int q = 0; q < 3; q++) s[r][q] = _mm512_loadu_ps(c + (size_t)r * ldc + 16 * q);
    for (int k = 0; k < kc; k++, bp += 48) {
        __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16), b2 = _mm512_loadu_ps(bp + 32);
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            __m512 x = _mm512_set1_ps(a[r][k]);
            s[r][0] = _mm512_fmadd_ps(x, b0, s[r][0]);
            s[r][1] = _mm512_fmadd_ps(x, b1, s[r][1]);
            s[r][2] = _mm512_fmadd_ps(x, b2, s[r][2]);
        }
    }
    for (int r = 0; r < 8; r++)
        for (int q = 0; q < 3; q++) _mm512_storeu_ps(c + (size_t)r * ldc + 16 * q, s[r][q]);
}

/* The active kernel's shape: pack and multiply under the same one (a model
 * packs and multiplies within one pass; every model_init of a process
 * makes the same choice). */
static Shape shape(void)
{
    assert(active != RGEMM_OFF);
    if (active == RGEMM_AVX512) return (Shape){8, 48, 128, kernel_avx512};
    return (Shape){4, 24, 256, kernel_avx2};
}
#else
static Shape shape(void) { return (Shape){4, 24, 256, NULL}; } /* never run: rgemm_set fails */
#endif

/* Panel j holds columns [j*nr, j*nr + nr) of B, K rows of nr, zero past N. */
void rgemm_pack(float *bp, const float *b, int K, int N, int ldb, int trans)
{
    const int NR = shape().nr, np = (N + NR - 1) / NR;
    for (int j = 0; j < np; j++) {
        float *p = bp + (size_t)j * K * NR;
        int nr = N - j * NR < NR ? N - j * NR : NR;
        if (trans) { /* column c of the panel is row j*NR + c of b; by 64 k at a time (in L1) */
            for (int k0 = 0; k0 < K; k0 += 64) {
                int k1 = K - k0 < 64 ? K : k0 + 64;
                for (int c = 0; c < NR; c++) {
                    const float *row = b + (size_t)(j * NR + (c < nr ? c : 0)) * ldb;
                    for (int k = k0; k < k1; k++) p[(size_t)k * NR + c] = c < nr ? row[k] : 0.0f;
                }
            }
        } else {
            for (int k = 0; k < K; k++) {
                float *dst = p + (size_t)k * NR;
                memcpy(dst, b + (size_t)k * ldb + (size_t)j * NR, (size_t)nr * sizeof(float));
                if (nr < NR) memset(dst + nr, 0, (size_t)(NR - nr) * sizeof(float));
            }
        }
    }
}

/* K in blocks; within one, panel by panel (kept in L1) over all row
 * blocks. A tile cut by M or N goes through a full-size copy: the missing
 * rows read the block's first row and are dropped. */
void rgemm(float *c, int ldc, const float *a, int lda, const float *bp, int M, int N, int K)
{
    const Shape s = shape();
    const int MR = s.mr, NR = s.nr, np = (N + NR - 1) / NR, mp = (M + MR - 1) / MR;
    float tmp[8 * CFG_PACK_NR]; /* the largest tile */
    const float *ar[8];
    _Static_assert(CFG_PACK_NR == 48, "CFG_PACK_NR is the AVX-512 kernel's panel, the widest");
    for (int k0 = 0; k0 < K; k0 += s.kc) {
        int kc = K - k0 < s.kc ? K - k0 : s.kc;
        for (int j = 0; j < np; j++) {
            const float *b = bp + (size_t)j * K * NR + (size_t)k0 * NR;
            int nr = N - j * NR < NR ? N - j * NR : NR;
            for (int i = 0; i < mp; i++) {
                int mr = M - i * MR < MR ? M - i * MR : MR;
                for (int r = 0; r < MR; r++) ar[r] = a + (size_t)(i * MR + (r < mr ? r : 0)) * lda + k0;
                float *ct = c + (size_t)i * MR * ldc + (size_t)j * NR;
                if (mr == MR && nr == NR) {
                    s.kernel(kc, ar, b, ct, ldc);
                    continue;
                }
                memset(tmp, 0, (size_t)MR * NR * sizeof *tmp);
                for (int r = 0; r < mr; r++) memcpy(tmp + r * NR, ct + (size_t)r * ldc, (size_t)nr * sizeof(float));
                s.kernel(kc, ar, b, tmp, NR);
                for (int r = 0; r < mr; r++) memcpy(ct + (size_t)r * ldc, tmp + r * NR, (size_t)nr * sizeof(float));
            }
        }
    }
}
