/* proto: the coordinator-worker protocol. Fixed-size messages sent as
 * MPI_BYTE on MPI_COMM_WORLD (world rank 0 is the coordinator). Workers run
 * their collectives on their own communicator; these point-to-point messages
 * are the only traffic with the coordinator.
 *
 *   start:  coordinator --ConfigMsg (MPI_Bcast)--> all
 *   epoch:  coordinator --CtrlMsg{EPOCH}--> each worker; workers train
 *           steps_per_epoch steps, each sending one StepRecord per step
 *   end:    coordinator --CtrlMsg{STOP}--> each worker; each worker
 *           replies DoneMsg after the final weights are on disk
 * Workers block for a CtrlMsg only at epoch boundaries, so what happens at
 * every step never depends on message timing. */
#ifndef CLIPD_PROTO_H
#define CLIPD_PROTO_H

#include <stdint.h>

#include "common/cfg.h"

#define PROTO_MAX_TENSORS 51
enum { TAG_CTRL = 11, TAG_STEP = 12, TAG_DONE = 13 };
enum { CTRL_EPOCH = 1, CTRL_STOP = 2 };

typedef struct {
    int32_t go;       /* 1: train with cfg; 0: every rank exits with status */
    int32_t status;   /* exit code when go is 0 (2: bad input, already reported) */
    Config cfg;
} ConfigMsg;

/* 1 when this process was started by mpirun/srun (then it must take part in
 * MPI_Init and the start-up broadcast even if it has nothing to do, or the
 * other ranks wait for it forever). */
int proto_launched_by_mpi(void);

typedef struct {
    int32_t type;     /* CTRL_EPOCH or CTRL_STOP */
    int32_t epoch;    /* 1-based */
    uint64_t seed;    /* data order seed of the epoch */
    int64_t first_step; /* global step number of the epoch's first step, 1-based */
    double lr;        /* learning rate for the epoch */
} CtrlMsg;

typedef struct {
    int64_t step;       /* global step, 1-based */
    int32_t epoch;
    int32_t wrank;      /* the sender's rank among the workers */
    double loss;        /* mean loss over the global batch */
    double grad_norm;   /* global L2 norm of the averaged gradient, before clipping */
    double clip_coef;   /* coefficient applied (global_norm; min over tensors for per_tensor) */
    double max_abs;     /* largest |g| (before clipping) */
    double lr;
    int32_t clipped;    /* 1 when clipping changed the gradient */
    int32_t skipped;    /* 1 when the update was not applied */
    int32_t nonfinite;  /* bit 0: loss not finite, bit 1: gradient not finite */
    int32_t ntensors;
    int64_t tokens;     /* tokens processed by the whole step (all workers) */
    double step_ms, compute_ms, sync_ms; /* this worker's timing */
    float tensor_norm[PROTO_MAX_TENSORS]; /* per-tensor pre-clip norms, model view order */
} StepRecord;

typedef struct {
    int32_t status;     /* 0 ok */
    int32_t wrank;
    int64_t steps;
    uint64_t param_hash; /* FNV-1a 64 of the final parameter bytes */
} DoneMsg;

#endif
