/* rgemm: the recurrent products of the time loops, C (M, N) += A (M, K) B,
 * with B (the recurrent weights) packed once per pass and kept across the
 * T steps that reuse it. OpenBLAS packs B again on every call: for a
 * 32-stream step of a 512-unit LSTM that is 4 MiB copied per 67 MFLOP,
 * and its small-M kernels ran at 0.75-0.8 of its large-product peak.
 *
 * The kernel is 4 rows x 24 columns of AVX2 FMA accumulators over k in
 * order, K blocked by 256 (the partial sums stored and reloaded: the same
 * chain of FMAs). So every element of C is one chain over k, whatever M,
 * N or where in C it lies: a row's bits do not depend on the row count
 * (sync.reproducible's stacked micro-batches). */
#ifndef CLIPD_RGEMM_H
#define CLIPD_RGEMM_H

#include <stddef.h>

/* 1: the packed products are worth using here: the CPU has AVX2 and FMA,
 * OpenBLAS's kernels are AVX2 ones (core Haswell or Zen: with AVX-512
 * kernels its own small products are as fast) and it runs 1 thread (the
 * packed products are single-threaded). */
int rgemm_usable(void);
/* 1: the CPU can run the kernel at all (tests) */
int rgemm_cpu(void);
/* The OpenBLAS core name, for the worker's log */
const char *rgemm_blas_core(void);

/* Floats rgemm_pack writes for B (K, N): K rows of N padded to the panel width */
size_t rgemm_pack_floats(int K, int N);
/* Pack B (K, N) into bp: b is (K, N) with row stride ldb, or with trans b
 * is (N, K) and B its transpose. */
void rgemm_pack(float *bp, const float *b, int K, int N, int ldb, int trans);
/* C (M, N, row stride ldc) += A (M, K, row stride lda) B, B packed by rgemm_pack */
void rgemm(float *c, int ldc, const float *a, int lda, const float *bp, int M, int N, int K);

#endif
