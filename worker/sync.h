/* sync: gradient averaging and the global-norm collective, in the workers'
 * own communicator (the coordinator is never in it).
 *
 * Gradients: a fixed-order reduce-scatter (each rank owns one contiguous
 * shard of the flat buffer, receives every rank's piece of it and adds them
 * in rank order 0..W-1), then, replicated, an all-gather of the reduced
 * shards. Every rank ends with the same bits whatever MPI's own reduction
 * algorithms would do.
 *
 * Buckets: the flat buffer is cut into buckets of sync.bucket_kb. Backward
 * completes gradients from offset 0 upwards (head first), and says so with
 * sync_ready(upto); each bucket below `upto` starts at once as a
 * non-blocking all-to-all of its pieces, and sync_progress() (called from
 * the backward time loops) moves them along. Buckets are reduced in order
 * as they land (in sync_progress during backward, the rest in sync_grads):
 * the owner adds the pieces in rank order and, replicated, starts that
 * bucket's all-gather at once, so over a slow link only the last buckets'
 * traffic is left after backward. Replicated, every rank reduces a 1/W part
 * of each bucket (of each all-gather group: SYNC_GATHER_MIN), not the part
 * inside its shard: with contiguous shards each bucket went to one owner,
 * so over a link the buckets of a step's end (all in the last rank's shard)
 * went one way, then came back, half the link idle (W1 across 2 nodes at
 * 1 Gbit/s: 590-620 ms a step, now 524-534). The sums of squares are still
 * those of each rank's shard, taken as the shard's buckets come back from
 * the all-gather (sharded: of its reduced part). Neither who adds a piece,
 * nor the order of any sum depend on the bucket size or on when a bucket
 * lands: every bucket size gives the same bits, gradient and norm.
 *
 * Sharded (ZeRO-1): no all-gather of gradients; each rank updates only the
 * parameters of its shard, with optimizer state for those only, then
 * sync_params all-gathers the parameters.
 *
 * Shared memory (sync_shared_grads): when every rank is on one node, the
 * gradient buffers live in one node-wide MPI window, and after backward each
 * rank adds the others' pieces of its shard straight from their buffers
 * (same order, same bits), then copies the other shards from their owners:
 * no message copies, no buckets (over shared memory the bucket traffic
 * competes with backward for the same cores and memory).
 *
 * Statistics: each rank fills a few doubles (loss sum, loss terms,
 * non-finite flag, max |g|, requests from the coordinator (worker 0 only),
 * sum of squares of the gradient it owns, overall and per tensor); one
 * all-gather brings every rank's vector to every rank, and each combines
 * them in rank order, so all ranks get identical sums. A training step
 * folds it into the gradients' all-gather (sync_grads_stats) where the
 * sums are known before that all-gather ends: through shared memory, and
 * sharded; replicated as messages it follows the all-gather. */
#ifndef CLIPD_SYNC_H
#define CLIPD_SYNC_H

#include <mpi.h>
#include <stddef.h>

#include "worker/model.h"

/* Floats at least in one all-gather of buckets (sync.c gather_groups). */
#define SYNC_GATHER_MIN 16384

enum { ST_LOSS = 0, ST_TERMS, ST_NONFINITE, ST_MAXABS, ST_REQ, ST_SUMSQ, ST_TENSOR0 };

typedef struct {
    size_t lo, hi;            /* [lo, hi) of the flat buffer */
    size_t glo, ghi;          /* its all-gather group's range */
    size_t mine, len;         /* my part of it: [mine, mine + len) */
    size_t roff;              /* where my part's pieces go in the receive area (x W pieces) */
    int *sc, *sd, *rc, *rd;   /* (W) send counts/offsets (into grads), receive counts/offsets */
    int *gc, *gd;             /* (W) every rank's part of its group's range: the group's all-gather */
    int gend;                 /* the last bucket of its all-gather group */
    float *recv;              /* (W, len) every rank's piece of my part */
    MPI_Request req, greq;    /* its reduce-scatter, its all-gather */
} Bucket;

typedef struct {
    MPI_Comm comm;
    int rank, W, sharded;
    size_t n;
    size_t own_off, own_len;  /* this rank's shard of the flat buffer */
    int *counts, *displs;     /* (W) shard sizes and offsets, in floats */
    float *recv;              /* (W, nrecv) every rank's piece of my parts, bucket by bucket */
    size_t nrecv;             /* floats of my parts of all buckets */
    Bucket *b;
    int nb, nstarted;         /* buckets; buckets started this step */
    int nred, ngath;          /* buckets reduced (all-gather started); all-gathered, in order */
    int failed;               /* an all-gather failed to start in sync_progress: sync_grads says so */
    MPI_Comm gcomm;           /* the buckets' all-gathers (a duplicate of comm: they start as
                                 reductions land, an order that differs between ranks) */
    int has_gcomm;
    float *grads;             /* the buffer of the step in flight (sync_begin) */
    const Model *model;       /* its views (sync_begin) */
    long ov_steps;            /* steps synced; buckets reduced, and all-gathered, before sync_grads */
    double ov_red, ov_gath;
    int nstats;               /* ST_TENSOR0 + number of tensors */
    double *all;              /* (W, nstats) gathered statistics */
    double *acc;              /* (ntensors, 4) sums of squares of my shard, as buckets land */
    float maxabs;
    /* Rows: [sp_off, n) is a (rows, width) matrix (the embedding's
     * gradient) of which only the rows flagged by the model are non-zero
     * anywhere. As messages (sync_init_sparse, sync.sparse_embedding) the
     * buckets stop at sp_off and the flagged rows go by themselves; through
     * shared memory (sync_shared_rows: sp_window) each rank's flags follow
     * its gradient in the window, and the reduction, the copies and the
     * statistics skip the rows nobody flagged (+0 on every rank: the same
     * bits). */
    size_t sp_off;            /* n when there are none */
    int sp_rows, sp_width;
    int sp_window;            /* 1: the rows are the shared window's, not messages */
    int *sp_list;             /* (rows) the flagged rows of this step, ascending */
    int sp_nr;                /* how many */
    uint64_t *sp_bits;        /* messages: (2, words) my flagged rows, then everyone's (bitwise or) */
    float *sp_send, *sp_recv; /* messages: (rows, width), (W, rows, width) packed rows */
    unsigned char **sp_flags; /* window: (W) every rank's flags, in the window */
    long sp_steps;            /* steps synced, and their rows (for the bytes saved) */
    double sp_rows_sum;
    /* sync.reproducible (sync_set_reproducible): each rank sends every
     * micro-batch's piece, and the owner adds the W * nmicro pieces in global
     * micro-batch order; each bucket is then all-gathered (sharded too) and
     * its statistics taken over all of it as it arrives, in bucket order,
     * the same on every rank. */
    int nmicro;               /* micro-batches per rank; 0: off */
    float **slot;             /* (nmicro) their gradients */
    float *pack;              /* (nmicro, n) W > 1: the pieces of each bucket by destination */
    int loss0;                /* stats index of micro-batch 0's loss sum (W * nmicro of them) */
    int shm;                  /* 1: gradients in the shared window (sync_shared_grads) */
    MPI_Win win;
    float **peer;             /* (W) every rank's gradient buffer, mapped here */
    float *tmp;               /* (SYNC_SHM_CHUNK) a chunk's running sum */
} Sync;

/* Floats a chunk of the shared-memory reduction: summed, then its squares
 * taken, while it is in cache. */
#define SYNC_SHM_CHUNK 8192

/* The one function that splits a flat range of n over W ranks: the first
 * n % W ranks get one more element. */
void shard_range(size_t n, int W, int r, size_t *off, size_t *len);

/* bucket: floats per bucket, 0 for one bucket of everything. */
int sync_init(Sync *s, MPI_Comm comm, size_t n, int ntensors, size_t bucket, int sharded);
/* sync_init, with [sp_off, sp_off + rows * width) = [sp_off, n) synced as
 * rows (sync.sparse_embedding): each step the ranks or together which rows
 * the model flagged (Model.emb_rows), all-gather those rows and add them in
 * rank order, so gradient and statistics have the same bits as the dense
 * sync (rows nobody flagged are zero on every rank). Replicated only. */
int sync_init_sparse(Sync *s, MPI_Comm comm, size_t n, int ntensors, size_t bucket, size_t sp_off,
                     int rows, int width);
/* Bytes this rank received per step for [sp_off, n), as rows (mean over the
 * steps so far) and as the dense reduce-scatter + all-gather would have. */
void sync_sparse_bytes(const Sync *s, double *sparse, double *dense);
/* Mean buckets per step reduced, and all-gathered, while backward ran (by
 * sync_progress, before sync_grads): how much the overlap hid. */
void sync_overlap_counts(const Sync *s, double *reduced, double *gathered);
void sync_free(Sync *s);
/* Collective, right after sync_init: if every rank of the communicator is on
 * one node and the sync is replicated, dense (no sparse rows) and at most
 * one micro-batch per rank, allocate the n-float gradient buffer in a shared
 * window and return it: the caller computes its gradients there (every
 * sync_grads call must pass it) and frees it only through sync_free.
 * Otherwise NULL (messages), with why (len bytes) saying why when it was
 * not the set-up: too little room where the window's file goes (checked
 * first: Open MPI 4.1 hangs on a window larger than /dev/shm's free space;
 * Docker gives containers 64 MiB), or an allocation that failed. */
float *sync_shared_grads(Sync *s, int nmicro, char *why, size_t len);
/* Before sync_shared_grads: [off, n) = (rows, width) is the embedding's
 * gradient, whose rows the model flags in Model.emb_rows as backward writes
 * them: through shared memory only the flagged rows are added, copied and
 * counted (the rest is zero everywhere), and sync_rows says which rows
 * the last sync made non-zero. Ignored where the sync goes as messages. */
void sync_shared_rows(Sync *s, size_t off, int rows, int width);
/* The rows of [*off, n), each *width floats (messages: sync_init_sparse;
 * shared memory: sync_shared_rows), the last sync made non-zero (the others
 * are zero on every rank), ascending: returns how many (*rows points to
 * them), or -1 when the gradient is dense. */
int sync_rows(const Sync *s, const int **rows, size_t *off, size_t *width);
/* A step's gradient (views of m) is being computed into grads: no bucket
 * started yet. */
void sync_begin(Sync *s, float *grads, const Model *m);
/* grads[0, upto) are final: start every bucket inside it. */
void sync_ready(Sync *s, size_t upto);
/* Let MPI move the started buckets along, and reduce (then start the
 * all-gather of) each bucket whose pieces have all landed, in bucket order
 * (cheap when nothing landed; call it often). */
void sync_progress(Sync *s);
/* Finish the step's reduction (starting what is left): grads (n) in, this
 * rank's scaled local gradient; out, the sum over ranks of its own shard,
 * and, replicated, of every shard, identical on every rank. Fills the owned
 * part's statistics into stats (ST_NONFINITE, ST_MAXABS, ST_SUMSQ,
 * ST_TENSOR0..) using the model's views. sync_begin is implied if the step
 * has not begun. */
int sync_grads(Sync *s, float *grads, const Model *m, double *stats);
/* sync.reproducible, right after sync_init: nmicro micro-batch gradients
 * per rank, in slot[0..nmicro); sync_grads reduces them into its grads
 * argument (slot[0] may be that buffer). Adds W * nmicro loss slots to the
 * statistics (nstats grows). Returns -1 without memory or past int counts. */
int sync_set_reproducible(Sync *s, int nmicro, float **slot);
/* Put this rank's micro-batch loss sums (nmicro) into their statistics slots. */
void sync_micro_losses(const Sync *s, double *stats, const double *loss);
/* Sharded: every rank's updated shard of params to every rank. */
int sync_params(Sync *s, float *params);
/* local (nstats) -> global (nstats), identical bits on every rank.
 * Reproducible: the norms are rank 0's (all equal), the loss is the sum of
 * the micro-batch slots in order. */
int sync_stats(Sync *s, const double *local, double *global);
/* sync_grads(grads, local) then sync_stats(local, global) with the same
 * bits, folded where the sums are known first (shared memory, sharded): the
 * statistics all-gather runs alongside the all-gather of the gradient
 * shards (both non-blocking, waited for together), so the statistics cost
 * no round trip of their own. The caller fills local's
 * ST_LOSS, ST_TERMS and ST_REQ first. */
int sync_grads_stats(Sync *s, float *grads, const Model *m, double *local, double *global);

#endif
