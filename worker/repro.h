/* repro: sync.reproducible, the same bits for any worker count at the same
 * global batch. A worker's B streams are cut into B / mb micro-batches of
 * data.micro_batch (mb) streams; each runs forward and backward on its own,
 * with the same matrix shapes on whatever worker it lands, into its own
 * gradient buffer (a slot) and its own loss sum. sync then adds the slots of
 * all workers in global micro-batch order (sync_set_reproducible), and
 * sync_stats the loss sums likewise, so no sum depends on the split. With
 * mb == B the worker's model and gradient buffer are the one slot. */
#ifndef CLIPD_REPRO_H
#define CLIPD_REPRO_H

#include "common/cfg.h"
#include "common/data.h"
#include "worker/model.h"

typedef struct {
    int mb, n;              /* streams per micro-batch; micro-batches per worker (B / mb) */
    Model micro;            /* batch mb, parameters bound to the worker's (n > 1 only) */
    float **slot;           /* (n) each micro-batch's gradient; slot[0] is the model's when n == 1 */
    float *slots;           /* (n, nparams) n > 1 */
    int *inputs, *targets;  /* (T, mb) the micro-batch's tokens */
    float *features;        /* (T, mb, 2) adding */
    float *ytarget;         /* (mb) adding */
    double *loss;           /* (n) each micro-batch's loss sum since repro_clear */
} Repro;

/* For the worker's model m (batch B) under config c; -1 without memory. */
int repro_init(Repro *r, Model *m, const Config *c);
void repro_free(Repro *r);
/* Zero every slot (the start of a step's gradient) and the loss sums. */
void repro_zero(Repro *r, const Model *m);
/* Zero the loss sums only (validation). */
void repro_clear(Repro *r);
/* The batch in d through every micro-batch in order, each with m's carried
 * hidden state of its streams, dropout step and, for the last, m's sync
 * hooks: train 1, forward and backward (gradients scaled by `scale` added
 * into its slot); train 0, forward only. Losses add into r->loss. */
void repro_run(Repro *r, Model *m, const Batcher *d, float scale, int train);

#endif
