/* proto: the coordinator-worker protocol: the messages and their decoders
 * (no MPI here; sending and receiving: common/proto_mpi.h). Fixed-size
 * messages sent as MPI_BYTE on the protocol's own communicator, a dup of
 * MPI_COMM_WORLD (world rank 0 is the coordinator). Workers run their
 * collectives on their own communicator; these point-to-point messages are
 * the only traffic with the coordinator.
 *
 *   start:  coordinator --ConfigMsg (MPI_Bcast)--> all
 *   epoch:  coordinator --CtrlMsg{EPOCH}--> each worker; workers train the
 *           epoch's steps, each sending one StepRecord per step; worker 0
 *           then sends an EpochRecord (validation, epoch-level events)
 *   signal: coordinator --ReqMsg--> worker 0, which folds it into the next
 *           step's statistics collective, so every worker acts on it at the
 *           same step (checkpoint; or checkpoint and stop, STEP_STOPPING)
 *   end:    coordinator --CtrlMsg{STOP}--> each worker; each worker
 *           replies DoneMsg after the final weights are on disk
 * Divergence decisions (skip, rollback, abort) are taken by every worker
 * from the same numbers by the same detector, without waiting for the
 * coordinator; workers block for a CtrlMsg only at epoch boundaries. */
#ifndef CLIPD_PROTO_H
#define CLIPD_PROTO_H

#include <stdint.h>

#include "common/cfg.h"
#include "common/events.h"

#define PROTO_MAX_TENSORS 51
#define PROTO_PATH_MAX 4096
#define PROTO_ERR_MAX 512 /* bytes of an error message carried in a record */
enum { TAG_CTRL = 11, TAG_STEP = 12, TAG_DONE = 13, TAG_EPOCH = 14, TAG_REQ = 15 };
enum { CTRL_EPOCH = 1, CTRL_STOP = 2 };
enum { REQ_CHECKPOINT = 1, REQ_STOP = 2 }; /* bits: signals turned into requests */

typedef struct {
    int32_t go;       /* 1: train with cfg; 0: every rank exits with status */
    int32_t status;   /* exit code when go is 0 (2: bad input, already reported) */
    Config cfg;
    char resume[PROTO_PATH_MAX]; /* verified checkpoint to start from, or "" */
    char eval[PROTO_PATH_MAX];   /* clipd --eval: weights to evaluate instead of training, or "" */
    int32_t eval_split;          /* TEXT_VALID or TEXT_TEST (--eval; text only) */
    int32_t test_at_end;         /* after the final weights, evaluate the test split: worker 0 sends
                                    an EpochRecord (val_loss, val_tokens, step of the weights, seq 1:
                                    best.safetensors, 0: the final weights) before the DoneMsg */
} ConfigMsg;

typedef struct {
    int32_t type;     /* CTRL_EPOCH or CTRL_STOP */
    int32_t epoch;    /* 1-based */
    uint64_t seed;    /* data order seed of the epoch */
    int32_t final;    /* STOP: the run is complete, write final.safetensors */
    int32_t checkpoint; /* STOP: write a checkpoint first */
} CtrlMsg;

typedef struct {
    int32_t type;     /* REQ_* bits, from the coordinator to worker 0 only */
    int32_t pad;
} ReqMsg;

/* StepRecord.flags */
enum { STEP_EPOCH_LAST = 1, STEP_STOPPING = 2, STEP_ABORT = 4, STEP_CHECKPOINT = 8,
       STEP_CKPT_FAILED = 16 };

typedef struct {
    int64_t step;       /* global step, 1-based (repeats after a rollback) */
    int64_t seq;        /* steps executed so far, this one included: never repeats */
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
    uint32_t events;    /* bit k: event kind k (common/events.h) fired at this step */
    int32_t action;     /* Action taken for the events (ACT_LOG if none) */
    int32_t flags;      /* STEP_* */
    int32_t rollbacks;  /* rollbacks so far, this step's included */
    int64_t rollback_to;/* after a rollback: the step training continues from */
    double info[EV_COUNT][4];  /* per event kind: value, baseline, spread, threshold */
    int32_t check[EV_COUNT];   /* per event kind: the DetectCheck that fired */
    float tensor_norm[PROTO_MAX_TENSORS]; /* per-tensor pre-clip norms, model view order */
    char ckpt_error[PROTO_ERR_MAX]; /* STEP_CKPT_FAILED: why (worker 0's message, sent to all) */
} StepRecord;

/* After each completed epoch, from worker 0 (all workers know the same). */
enum { EPOCH_EARLY_STOP = 1, EPOCH_ABORT = 2 };
typedef struct {
    int32_t epoch;
    int32_t flags;      /* EPOCH_* */
    double val_loss;    /* mean over data.valid_batches held-out batches, NAN if none */
    int64_t val_tokens;
    double lr;          /* learning rate at the epoch's last step */
    uint32_t events;    /* clip_inactive, val_loss_rise */
    int32_t action;
    int64_t step, seq;  /* position at the end of the epoch */
    double info[EV_COUNT][4];
    int32_t check[EV_COUNT];
} EpochRecord;

typedef struct {
    int32_t status;     /* 0 ok; 1: the checkpoint or weights asked for could not be written */
    int32_t wrank;
    int64_t steps;
    uint64_t param_hash; /* hash_words of the final parameter bytes (common/hash.h) */
    char error[PROTO_ERR_MAX]; /* status 1: why (worker 0 only) */
} DoneMsg;

/* What the coordinator expects of every message it receives: set once from
 * the config and the worker count (proto_limits), then each message is
 * decoded against it. */
typedef struct {
    int W;              /* workers: wrank in [0, W) */
    int ntensors;       /* the model's tensors (cfg_tensor_names) */
    int epochs;         /* train.epochs: epoch in [1, epochs] */
    int64_t step_tokens;/* tokens of one step: T * B * W * train.accumulate */
} ProtoLimits;

void proto_limits(ProtoLimits *lim, const Config *c, int W);

/* Decode a message of len bytes received as MPI_BYTE (buf needs no
 * alignment) into *out and validate every field the coordinator uses. A
 * StepRecord must have: the exact size; wrank in [0, W); step, seq >= 1;
 * epoch in [1, epochs]; ntensors = the model's; clipped, skipped 0 or 1;
 * nonfinite in [0, 3], bit 0 set iff the loss is not finite, bit 1 set if
 * the norm is not; loss, grad_norm, max_abs, tensor norms not negative (NaN
 * and +Inf allowed, flagged); clip_coef in [0, 1], or NaN when skipped; lr
 * finite >= 0; tokens = step_tokens; timings finite >= 0; only step-level
 * event bits, each with a check (DetectCheck) named; action in [ACT_LOG, ACT_ABORT]; only STEP_* flags, not both
 * CHECKPOINT and CKPT_FAILED, STEP_ABORT iff action is abort or CKPT_FAILED
 * is set (checkpoint.on_failure: abort); rollbacks >= 0;
 * rollback_to >= 0 and, for a rollback, < step. An EpochRecord: size; epoch
 * in [1, epochs]; only EPOCH_* flags, EPOCH_ABORT iff action is abort (the
 * only action but log); only clip_inactive and val_loss_rise events, each with
 * a check named; val_loss
 * not negative; lr finite >= 0; val_tokens, step, seq >= 0. A DoneMsg: size;
 * status 0 or 1; wrank in [0, W); steps >= 0. Returns 0, or -1 with one line
 * in err naming the message and the field; *out is then undefined. */
int proto_decode_step(StepRecord *out, const void *buf, size_t len, const ProtoLimits *lim,
                      char *err, size_t errlen);
int proto_decode_epoch(EpochRecord *out, const void *buf, size_t len, const ProtoLimits *lim,
                       char *err, size_t errlen);
int proto_decode_done(DoneMsg *out, const void *buf, size_t len, const ProtoLimits *lim,
                      char *err, size_t errlen);

/* 1 when this process was started by mpirun/srun (then it must take part in
 * MPI_Init and the start-up broadcast even if it has nothing to do, or the
 * other ranks wait for it forever). */
int proto_launched_by_mpi(void);

#endif
