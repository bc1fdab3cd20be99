/* sched: learning-rate schedules and early stopping (see sched.h). */
#include "worker/sched.h"

#include <math.h>

void sched_init(SchedState *s)
{
    s->best_val = INFINITY;
    s->plateau_scale = 1.0;
    s->bad_epochs = 0;
    s->since_best = 0;
}

double sched_lr(const Config *c, const SchedState *s, int64_t step, int epoch)
{
    double lr = c->train_lr;
    switch (c->train_lr_schedule) {
    case SCHED_STEP: {
        int k = epoch - c->train_lr_decay_start + 1;
        return k > 0 ? lr * pow(c->train_lr_decay, k) : lr;
    }
    case SCHED_COSINE: {
        double total = (double)c->train_epochs * c->train_steps_per_epoch;
        double warm = c->train_warmup_steps, t = (double)step;
        if (t <= warm) return lr * t / warm;
        double span = total - warm, x = span > 0 ? (t - warm) / span : 1.0;
        if (x > 1) x = 1;
        return c->train_lr_min + 0.5 * (lr - c->train_lr_min) * (1.0 + cos(3.14159265358979323846 * x));
    }
    case SCHED_PLATEAU:
        return lr * s->plateau_scale;
    default:
        return lr;
    }
}

int sched_epoch_end(const Config *c, SchedState *s, double val_loss)
{
    if (!isfinite(val_loss)) return 0;
    if (val_loss < s->best_val) {
        s->best_val = val_loss;
        s->bad_epochs = 0;
        s->since_best = 0;
        return 0;
    }
    s->since_best += 1;
    s->bad_epochs += 1;
    if (c->train_lr_schedule == SCHED_PLATEAU && s->bad_epochs >= c->train_plateau_patience) {
        s->plateau_scale *= c->train_lr_decay;
        s->bad_epochs = 0;
    }
    return c->train_early_stop > 0 && s->since_best >= c->train_early_stop;
}
