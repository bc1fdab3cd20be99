/* sched: learning-rate schedules and early stopping, computed the same way
 * on every worker from the config, the step, the epoch and the validation
 * losses seen so far (all identical on every rank), so no message is needed.
 *   constant: lr
 *   step:     lr * lr_decay^max(0, epoch - lr_decay_start + 1) (Zaremba et al. 2014)
 *   cosine:   linear warm-up over warmup_steps, then cosine from lr to lr_min
 *             over the remaining steps of the run
 *   plateau:  lr times lr_decay each time plateau_patience epochs pass
 *             without a better validation loss */
#ifndef CLIPD_SCHED_H
#define CLIPD_SCHED_H

#include <stdint.h>

#include "common/cfg.h"

typedef struct {
    double best_val;      /* best validation loss so far (INFINITY before any) */
    double plateau_scale; /* product of plateau decays */
    double bad_epochs;    /* epochs since the last improvement, for plateau */
    double since_best;    /* epochs since the best, for early stopping */
} SchedState;

#define SCHED_STATE_LEN 4 /* doubles, for checkpoints */

void sched_init(SchedState *s);
/* Learning rate of a step (1-based global step) in an epoch (1-based). */
double sched_lr(const Config *c, const SchedState *s, int64_t step, int epoch);
/* After an epoch's validation (NAN when there is none). Returns 1 when
 * early stopping says stop. */
int sched_epoch_end(const Config *c, SchedState *s, double val_loss);

#endif
