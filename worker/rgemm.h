/* rgemm: the recurrent products of the time loops, C (M, N) += A (M, K) B,
 * with B (the recurrent weights) packed once per pass and kept across the
 * T steps that reuse it. OpenBLAS packs B again on every call: for a
 * 32-stream step of a 512-unit LSTM that is 4 MiB copied per 67 MFLOP,
 * and its small-M kernels run at 0.75-0.8 of its large-product peak with
 * AVX2 kernels, about half with AVX-512 ones.
 *
 * Two kernels, one per vector width, chosen to match the kernels OpenBLAS
 * itself runs (so a user's OPENBLAS_CORETYPE choice holds): 4 rows x 24
 * columns of AVX2 FMA accumulators, or 8 x 48 of AVX-512 ones. In both
 * every element of C is one chain of FMAs over k in order (K blocked, the
 * partial sums stored and reloaded: the same chain), whatever M, N, where
 * in C it lies, or which kernel: a row's bits do not depend on the row
 * count (sync.reproducible's stacked micro-batches), and both kernels give
 * the same bits. */
#ifndef CLIPD_RGEMM_H
#define CLIPD_RGEMM_H

#include <stddef.h>

enum { RGEMM_OFF, RGEMM_AVX2, RGEMM_AVX512 };

/* Choose the kernel for this process and return it: AVX2 where OpenBLAS
 * runs AVX2 kernels (core Haswell or Zen), AVX-512 where it runs AVX-512
 * ones (SkylakeX, Cooperlake, SapphireRapids), each only if the CPU has
 * it, and only on 1 OpenBLAS thread (the packed products are
 * single-threaded); RGEMM_OFF otherwise. rgemm_pack and rgemm use it. */
int rgemm_setup(void);
/* Use kernel isa (tests); 0 where this CPU cannot run it. */
int rgemm_set(int isa);
int rgemm_active(void);
const char *rgemm_name(int isa);
/* The OpenBLAS core name, for the worker's log */
const char *rgemm_blas_core(void);

/* Pack B (K, N) into bp (cfg_pack_wh_floats(K, N) floats) for the active kernel: b is (K, N) with row stride
 * ldb, or with trans b is (N, K) and B its transpose. */
void rgemm_pack(float *bp, const float *b, int K, int N, int ldb, int trans);
/* C (M, N, row stride ldc) += A (M, K, row stride lda) B, B packed by
 * rgemm_pack under the same active kernel */
void rgemm(float *c, int ldc, const float *a, int lda, const float *bp, int M, int N, int K);

#endif
