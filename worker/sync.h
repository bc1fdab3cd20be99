/* sync: gradient averaging and the global-norm collective, in the workers'
 * own communicator (the coordinator is never in it).
 *
 * Gradients: a fixed-order reduce-scatter (each rank owns one shard of the
 * flat buffer, receives every rank's piece of it and adds them in rank order
 * 0..W-1) followed by an all-gather of the reduced shards. Every rank ends
 * with the same bits whatever MPI's own reduction algorithms would do.
 *
 * Statistics: each rank fills a few doubles (loss sum, loss terms,
 * non-finite flag, max |g|, requests from the coordinator (worker 0 only),
 * sum of squares of the gradient it owns, overall
 * and per tensor); one all-gather brings every rank's vector to every rank,
 * and each combines them in rank order, so all ranks get identical sums. */
#ifndef CLIPD_SYNC_H
#define CLIPD_SYNC_H

#include <mpi.h>
#include <stddef.h>

#include "worker/model.h"

enum { ST_LOSS = 0, ST_TERMS, ST_NONFINITE, ST_MAXABS, ST_REQ, ST_SUMSQ, ST_TENSOR0 };

typedef struct {
    MPI_Comm comm;
    int rank, W;
    size_t n;
    size_t own_off, own_len;  /* this rank's shard of the flat buffer */
    int *counts, *displs;     /* (W) shard sizes and offsets, in floats */
    int *rcounts, *rdispls;   /* (W) pieces of my shard received from each rank */
    float *recv;              /* (W, own_len) every rank's piece of my shard */
    int nstats;               /* ST_TENSOR0 + number of tensors */
    double *all;              /* (W, nstats) gathered statistics */
} Sync;

/* The one function that splits a flat range of n over W ranks: the first
 * n % W ranks get one more element. */
void shard_range(size_t n, int W, int r, size_t *off, size_t *len);

int sync_init(Sync *s, MPI_Comm comm, size_t n, int ntensors);
void sync_free(Sync *s);
/* grads (n): in, this rank's scaled local gradient; out, the sum over ranks
 * (the averaged gradient), identical on every rank. Also fills the owned
 * part's statistics into stats (ST_NONFINITE, ST_MAXABS, ST_SUMSQ,
 * ST_TENSOR0..) using the model's views. */
int sync_grads(Sync *s, float *grads, const Model *m, double *stats);
/* local (nstats) -> global (nstats), identical bits on every rank. */
int sync_stats(Sync *s, const double *local, double *global);

#endif
