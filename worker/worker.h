/* worker: the state of one training process, shared by the training loop
 * (main.c) and its checkpoint/rollback code (state.c). */
#ifndef CLIPD_WORKER_H
#define CLIPD_WORKER_H

#include <mpi.h>
#include <stdint.h>

#include "common/cfg.h"
#include "common/data.h"
#include "common/proto_mpi.h"
#include "worker/detect.h"
#include "worker/sched.h"
#include "worker/model.h"
#include "worker/optim.h"
#include "worker/steptime.h"
#include "worker/repro.h"
#include "worker/sync.h"

#define STREAM_WORDS 6 /* per stream: rng state (4), markov context, last token */

/* A training position in memory: what a rollback restores. */
typedef struct {
    float *params, *m, *v;   /* (n) copies; m, v NULL when the optimizer has none */
    long opt_t;
    int64_t step;
    int epoch_step;
    uint64_t *streams;       /* (B, STREAM_WORDS) this worker's streams */
    float *hidden;           /* (L, 2, B, H) carried h and c of this worker's streams */
} Snapshot;

/* What checkpoints and validation work in, allocated once by state_init
 * (worker 0's gather buffers on worker 0 only; NULL elsewhere). */
typedef struct {
    uint64_t *all_streams;   /* worker 0: (W*B, STREAM_WORDS) every worker's streams */
    float *all_hidden;       /* worker 0: (L, 2, W*B, H) every worker's carried state */
    float *all_m, *all_v;    /* worker 0, sharded: (nparams) the gathered moments */
    double *det_state;       /* (detect_state_len) the detector, for the checkpoint */
    float *held_hidden;      /* (L, 2, B, H) the training state while validation runs */
} StateBufs;

typedef struct {
    Config cfg;
    MPI_Comm comm;          /* the workers' communicator */
    Proto proto;            /* messages to and from the coordinator (common/proto_mpi.h) */
    int rank, W;            /* rank among the workers, number of workers */
    Model model;
    Batcher data, valid;    /* training streams; held-out streams */
    Optim opt;
    Sync sync;
    Repro repro;            /* sync.reproducible: micro-batches (repro.n == 0: off) */
    Detector det;
    SchedState sched;
    Snapshot snap;
    StateBufs bufs;         /* state.c's checkpoint and validation buffers */
    StepTimes times;        /* where each step goes (make bench's breakdown) */
    double *local, *global; /* (nstats) statistics before and after the collective */
    /* position: saved in checkpoints */
    int64_t step;           /* steps whose outcome stands (restored by a rollback) */
    int64_t seq;            /* steps executed, rolled back or not */
    int epoch, epoch_step;  /* current epoch (1-based) and its steps done */
    int epoch_done;         /* the epoch's end (validation, schedule) has been applied */
    int64_t epoch_seq0;     /* seq at the start of the epoch */
    double lr_scale;        /* product of rollback lr factors */
    double best_val;        /* checkpoint.keep_best: val loss of best.safetensors, INFINITY before one */
    int test_at_end;        /* ConfigMsg.test_at_end: evaluate the test split after the final weights */
    int rollbacks;
    int64_t nonfinite;
    int pending_req;        /* worker 0: REQ_* bits received, not yet folded in */
} Worker;

/* Fatal error after MPI_Init: log why and take every rank down (state.c). */
void worker_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

int state_init(Worker *w);
void state_free(Worker *w);
/* Copy the current position into the snapshot / back from it. */
void state_snapshot(Worker *w);
void state_restore(Worker *w);
/* hold 1: put the training streams' carried hidden state aside (validation
 * runs its own streams through the model); hold 0: bring it back. */
void state_hold_hidden(Worker *w, int hold);
/* Collective over the workers: gather streams and hidden state to worker 0,
 * which writes the checkpoint of the current position. Returns 0, or -1 on
 * every rank with the reason in err (worker 0's error). */
int state_checkpoint(Worker *w, char *err, size_t errlen);
/* Every worker loads its part of a verified checkpoint. */
int state_resume(Worker *w, const char *path, char *err, size_t errlen);
/* FNV-1a 64 over parameters and optimizer state (sharded: parameters only,
 * the state differs by design): replicas must agree. */
uint64_t state_hash(const Worker *w);

#endif
