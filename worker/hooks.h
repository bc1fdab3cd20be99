/* hooks: the test hooks (debug.* config keys) that inject faults into a
 * worker's step, all in one place: a NaN or a spike in the gradient, a batch
 * of random tokens, an lr spike or ramp, a replica that drifts, a straggler,
 * a crash inside a checkpoint write. Each fires only before the first
 * rollback (debug.slow_ms: every step). With every debug.* key at its
 * default each call does nothing. */
#ifndef CLIPD_HOOKS_H
#define CLIPD_HOOKS_H

#include <stdint.h>

#include "worker/worker.h"

/* 1 when a hook will change step's gradient after backward (the gradient
 * sync then waits for it instead of starting during backward). */
int hooks_gradient_due(const Worker *w, int64_t step);
/* debug.noise_step: the batch just drawn becomes uniform random tokens
 * (adding: random features and targets), the same on every worker count. */
void hooks_batch(Worker *w, int64_t step);
/* After backward: debug.nan_step, debug.spike_step into the gradient;
 * debug.slow_ms: worker debug.slow_worker sleeps (counted as compute). */
void hooks_gradient(Worker *w, int64_t step);
/* debug.lr_spike_*, debug.lr_ramp_*: the factor on step's lr. */
double hooks_lr(const Worker *w, int64_t step);
/* After the update: debug.drift_step moves the last worker's parameters. */
void hooks_params(Worker *w);
/* debug.ckpt_crash_step: where this step's checkpoint write kills worker 0
 * (CK_CRASH_*, common/ckpt.h). */
int hooks_ckpt_crash(const Worker *w);
/* debug.stop_at_end: the last worker stops itself (SIGSTOP) after the run,
 * before MPI_Finalize, as a node that hangs at the very end would. */
void hooks_end(const Worker *w);

#endif
