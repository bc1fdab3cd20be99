/* stats: epoch accumulators and percentiles (see stats.h). */
#include "daemon/stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int stats_init(EpochStats *s, long steps_per_epoch)
{
    memset(s, 0, sizeof *s);
    s->cap = steps_per_epoch < STATS_MAX_NORMS ? steps_per_epoch : STATS_MAX_NORMS;
    s->stride = (steps_per_epoch + s->cap - 1) / s->cap;
    s->norms = calloc((size_t)s->cap, sizeof *s->norms);
    return s->norms ? 0 : -1;
}

void stats_free(EpochStats *s)
{
    free(s->norms);
    s->norms = NULL;
}

void stats_begin(EpochStats *s, int epoch, double now_ms)
{
    s->epoch = epoch;
    s->steps = s->clipped = s->skipped = s->finite_steps = 0;
    s->loss_sum = 0;
    s->norm_max = NAN;
    s->tokens = 0;
    s->nnorms = 0;
    s->t_start_ms = now_ms;
}

void stats_add(EpochStats *s, double loss, double norm, int clipped, int skipped, int64_t tokens)
{
    if (!skipped && isfinite(loss) && isfinite(norm)) {
        if (s->finite_steps % s->stride == 0 && s->nnorms < s->cap) s->norms[s->nnorms++] = norm;
        s->finite_steps++;
        s->loss_sum += loss;
        if (!(norm <= s->norm_max)) s->norm_max = norm; /* first one replaces NaN */
    }
    s->steps++;
    s->clipped += clipped != 0;
    s->skipped += skipped != 0;
    s->tokens += tokens;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double stats_percentile(double *v, long n, double q)
{
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    long k = (long)ceil(q * (double)n);
    if (k < 1) k = 1;
    return v[k - 1];
}

void stats_end(EpochStats *s, double now_ms, EpochSummary *o)
{
    s->t_end_ms = now_ms;
    memset(o, 0, sizeof *o);
    o->epoch = s->epoch;
    o->steps = s->steps, o->clipped = s->clipped, o->skipped = s->skipped;
    o->train_loss = s->finite_steps ? s->loss_sum / (double)s->finite_steps : NAN;
    o->clip_rate = s->steps ? (double)s->clipped / (double)s->steps : 0;
    o->norm_p50 = stats_percentile(s->norms, s->nnorms, 0.5);
    o->norm_p90 = stats_percentile(s->norms, s->nnorms, 0.9);
    o->norm_max = s->norm_max;
    o->seconds = (s->t_end_ms - s->t_start_ms) / 1e3;
    o->tokens_per_s = o->seconds > 0 ? (double)s->tokens / o->seconds : 0;
}
