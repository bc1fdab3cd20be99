/* repro: sync.reproducible, the same bits for any worker count at the same
 * global batch. A worker's B streams are cut into B / mb micro-batches of
 * data.micro_batch (mb) streams; each has its own gradient buffer (a slot)
 * and its own loss sum, computed with the same matrix shapes on whatever
 * worker it lands. sync then adds the slots of all workers in global
 * micro-batch order (sync_set_reproducible), and sync_stats the loss sums
 * likewise, so no sum depends on the split. With mb == B the worker's model
 * and gradient buffer are the one slot.
 * Two paths, chosen at init by a probe on random data:
 *  - stacked (fast): the worker's model runs all B streams at once and
 *    reduces over rows by micro-batch (Model.split: each weight gradient
 *    from a gathered copy of the micro-batch's T*mb rows). Exact only where
 *    every row of a product has the same bits in a B-row product as in an
 *    mb-row one, which depends on OpenBLAS's kernel (on Haswell-class
 *    kernels: mb and B multiples of 12), hence the probe;
 *  - one by one (otherwise): each micro-batch through its own model of
 *    batch mb, sharing the parameters. */
#ifndef CLIPD_REPRO_H
#define CLIPD_REPRO_H

#include "common/cfg.h"
#include "common/data.h"
#include "worker/model.h"

typedef struct {
    int mb, n;              /* streams per micro-batch; micro-batches per worker (B / mb) */
    int stacked;            /* 1: the stacked path (n > 1 and the probe found no difference) */
    size_t differ;          /* the probe's count of values that differed (n > 1) */
    Model *model;           /* the worker's model (its split points at ours when stacked) */
    ModelSplit split;       /* stacked: the model's reductions by micro-batch */
    Model micro;            /* one by one: batch mb, parameters bound to the worker's */
    float **slot;           /* (n) each micro-batch's gradient; slot[0] is the model's when n == 1 */
    float *slots;           /* (n, nparams) n > 1 */
    int *inputs, *targets;  /* (T, mb) the micro-batch's tokens */
    float *features;        /* (T, mb, 2) adding */
    float *ytarget;         /* (mb) adding */
    double *loss;           /* (n) each micro-batch's loss sum since repro_clear */
} Repro;

/* For the worker's model m (batch B, parameters and carried state already
 * in place: the probe puts them back) under config c; -1 without memory. */
int repro_init(Repro *r, Model *m, const Config *c);
void repro_free(Repro *r);
/* Zero every slot (the start of a step's gradient) and the loss sums. */
void repro_zero(Repro *r, const Model *m);
/* Zero the loss sums only (validation). */
void repro_clear(Repro *r);
/* The batch in d through every micro-batch, each with m's carried hidden
 * state of its streams, m's dropout step and m's sync hooks (one by one: on
 * the last micro-batch): train 1, forward and backward (gradients scaled by
 * `scale` added into its slot); train 0, forward only. Losses add into
 * r->loss. Either path gives the same bits. */
void repro_run(Repro *r, Model *m, const Batcher *d, float scale, int train);

#endif
