/* rgemm: packed recurrent products (see rgemm.h). */
#include "worker/rgemm.h"

#include <cblas.h>
#include <string.h>

#include "common/cfg.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum { MR = 4, NR = CFG_PACK_NR, KC = 256 };

char *openblas_get_corename(void);

const char *rgemm_blas_core(void)
{
    const char *s = openblas_get_corename();
    return s ? s : "?";
}

int rgemm_cpu(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int rgemm_usable(void)
{
    const char *core = rgemm_blas_core();
    return rgemm_cpu() && openblas_get_num_threads() == 1 &&
           (!strcmp(core, "Haswell") || !strcmp(core, "Zen"));
}

size_t rgemm_pack_floats(int K, int N)
{
    return (size_t)K * (size_t)((N + NR - 1) / NR) * NR;
}

/* Panel j holds columns [j*NR, j*NR + NR) of B, K rows of NR, zero past N. */
void rgemm_pack(float *bp, const float *b, int K, int N, int ldb, int trans)
{
    int np = (N + NR - 1) / NR;
    for (int j = 0; j < np; j++) {
        float *p = bp + (size_t)j * K * NR;
        int nr = N - j * NR < NR ? N - j * NR : NR;
        if (trans) { /* column c of the panel is row j*NR + c of b; by 64 k at a time (in L1) */
            for (int k0 = 0; k0 < K; k0 += 64) {
                int k1 = K - k0 < 64 ? K : k0 + 64;
                for (int c = 0; c < NR; c++) {
                    const float *row = b + (size_t)(j * NR + c) * ldb;
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

#if defined(__x86_64__)
/* c (4 rows of 24, stride ldc) += a (4 rows from a[0..3], kc along each) bp (kc x 24) */
__attribute__((target("avx2,fma"))) static void kernel(int kc, const float *const a[MR],
                                                       const float *bp, float *c, int ldc)
{
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
    float *c0 = c, *c1 = c + ldc, *c2 = c + 2 * (size_t)ldc, *c3 = c + 3 * (size_t)ldc;
    __m256 s00 = _mm256_loadu_ps(c0), s01 = _mm256_loadu_ps(c0 + 8), s02 = _mm256_loadu_ps(c0 + 16);
    __m256 s10 = _mm256_loadu_ps(c1), s11 = _mm256_loadu_ps(c1 + 8), s12 = _mm256_loadu_ps(c1 + 16);
    __m256 s20 = _mm256_loadu_ps(c2), s21 = _mm256_loadu_ps(c2 + 8), s22 = _mm256_loadu_ps(c2 + 16);
    __m256 s30 = _mm256_loadu_ps(c3), s31 = _mm256_loadu_ps(c3 + 8), s32 = _mm256_loadu_ps(c3 + 16);
    for (int k = 0; k < kc; k++, bp += NR) {
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

/* K in blocks of KC; within one, panel by panel (kept in L1) over all row
 * blocks. A tile cut by M or N goes through a full-size copy: the missing
 * rows read row 0 of the block and are dropped. */
void rgemm(float *c, int ldc, const float *a, int lda, const float *bp, int M, int N, int K)
{
    int np = (N + NR - 1) / NR, mp = (M + MR - 1) / MR;
    float tmp[MR * NR];
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = K - k0 < KC ? K - k0 : KC;
        for (int j = 0; j < np; j++) {
            const float *b = bp + (size_t)j * K * NR + (size_t)k0 * NR;
            int nr = N - j * NR < NR ? N - j * NR : NR;
            for (int i = 0; i < mp; i++) {
                int mr = M - i * MR < MR ? M - i * MR : MR;
                const float *ar[MR];
                for (int r = 0; r < MR; r++) ar[r] = a + (size_t)(i * MR + (r < mr ? r : 0)) * lda + k0;
                float *ct = c + (size_t)i * MR * ldc + (size_t)j * NR;
                if (mr == MR && nr == NR) {
                    kernel(kc, ar, b, ct, ldc);
                    continue;
                }
                memset(tmp, 0, sizeof tmp);
                for (int r = 0; r < mr; r++) memcpy(tmp + r * NR, ct + (size_t)r * ldc, (size_t)nr * sizeof(float));
                kernel(kc, ar, b, tmp, NR);
                for (int r = 0; r < mr; r++) memcpy(ct + (size_t)r * ldc, tmp + r * NR, (size_t)nr * sizeof(float));
            }
        }
    }
}
#else
void rgemm(float *c, int ldc, const float *a, int lda, const float *bp, int M, int N, int K)
{
    (void)c, (void)ldc, (void)a, (void)lda, (void)bp, (void)M, (void)N, (void)K; /* rgemm_cpu() is 0 */
}
#endif
