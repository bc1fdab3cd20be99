/* hooks: the debug.* test hooks of a worker's step (see hooks.h). */
#include "worker/hooks.h"

#include <math.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "common/ckpt.h"
#include "common/rng.h"

int hooks_gradient_due(const Worker *w, int64_t step)
{
    const Config *c = &w->cfg;
    return !w->rollbacks && (step == c->debug_nan_step || step == c->debug_spike_step ||
                             step == c->debug_noise_step);
}

/* debug.nan_tensor's first element, or the last element of the flat buffer. */
static size_t nan_index(const Model *m, const char *tensor)
{
    for (int v = 0; tensor[0] && v < m->nviews; v++)
        if (!strcmp(m->views[v].name, tensor)) return m->views[v].off;
    return m->nparams - 1;
}

void hooks_batch(Worker *w, int64_t step)
{
    const Config *c = &w->cfg;
    Batcher *d = &w->data;
    if (w->rollbacks || step != c->debug_noise_step) return;
    Rng r;
    rng_init(&r, rng_derive((uint64_t)c->run_seed, 0x4015Eu, (uint64_t)step));
    for (int i = 0; i < d->T * w->W * d->B; i++) { /* every worker draws the global batch, keeps its part */
        int t = i / (w->W * d->B), j = i % (w->W * d->B) - w->rank * d->B;
        uint64_t a = rng_next(&r), b = rng_next(&r);
        if (j < 0 || j >= d->B) continue;
        if (d->inputs) d->inputs[t * d->B + j] = (int)(a % (uint64_t)c->model_vocab);
        if (d->targets) d->targets[t * d->B + j] = (int)(b % (uint64_t)c->model_vocab);
        if (d->features) d->features[2 * (t * d->B + j)] = (float)(a >> 40) / 16777216.0f;
        if (d->ytarget && t == 0) d->ytarget[j] = (float)(b >> 40) / 8388608.0f;
    }
}

/* debug.nan_step, debug.spike_step. Reproducible: into the micro-batch
 * gradients (the NaN into the last of all), so any worker count sees the
 * same fault. */
static void fault_gradient(Worker *w, int64_t step)
{
    const Config *c = &w->cfg;
    Model *m = &w->model;
    if (!hooks_gradient_due(w, step)) return;
    float **g = w->repro.n ? w->repro.slot : &m->grads;
    int ng = w->repro.n ? w->repro.n : 1;
    if (step == c->debug_nan_step && w->rank == w->W - 1) g[ng - 1][nan_index(m, c->debug_nan_tensor)] = NAN;
    for (int j = 0; step == c->debug_spike_step && j < ng; j++)
        for (size_t i = 0; i < m->nparams; i++) g[j][i] *= (float)c->debug_spike_scale;
    if (m->emb_rows) memset(m->emb_rows, 1, (size_t)m->V); /* a sparse sync sends every row */
}

void hooks_gradient(Worker *w, int64_t step)
{
    fault_gradient(w, step);
    if (w->cfg.debug_slow_ms > 0 && w->rank == w->cfg.debug_slow_worker) { /* a straggler */
        double ms = w->cfg.debug_slow_ms;
        struct timespec nap = {(time_t)(ms / 1e3), (long)(fmod(ms, 1e3) * 1e6)};
        nanosleep(&nap, NULL);
    }
}

double hooks_lr(const Worker *w, int64_t step)
{
    const Config *c = &w->cfg;
    double f = 1;
    if (w->rollbacks) return f;
    int64_t s0 = c->debug_lr_spike_step, len = c->debug_lr_spike_len;
    if (s0 > 0 && step >= s0 && (len == 0 || step < s0 + len)) f *= c->debug_lr_spike_scale;
    if (c->debug_lr_ramp_step > 0 && step >= c->debug_lr_ramp_step)
        f *= pow(c->debug_lr_ramp_rate, (double)(step - c->debug_lr_ramp_step + 1));
    return f;
}

void hooks_params(Worker *w)
{
    if (w->step == w->cfg.debug_drift_step && w->rank == w->W - 1 && !w->rollbacks)
        w->model.params[0] += 1e-3f; /* this replica now differs */
}

int hooks_ckpt_crash(const Worker *w)
{
    static const int at[] = {[CRASH_DURING_WRITE] = CK_CRASH_DURING_WRITE,
                             [CRASH_BEFORE_RENAME] = CK_CRASH_BEFORE_RENAME,
                             [CRASH_AFTER_RENAME] = CK_CRASH_AFTER_RENAME};
    const Config *c = &w->cfg;
    if (!c->debug_ckpt_crash_step || w->step != c->debug_ckpt_crash_step || w->rollbacks) return CK_CRASH_NONE;
    return at[c->debug_ckpt_crash_at];
}

void hooks_end(const Worker *w)
{
    if (w->cfg.debug_stop_at_end && w->rank == w->W - 1) raise(SIGSTOP);
}
