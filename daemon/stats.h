/* stats: per-epoch statistics of the step records the coordinator receives:
 * mean train loss, clip rate, skipped steps, pre-clip norm percentiles and
 * throughput. */
#ifndef CLIPD_STATS_H
#define CLIPD_STATS_H

#include <stdint.h>

#define STATS_MAX_NORMS (1 << 20)

typedef struct {
    int epoch;
    long steps, clipped, skipped, finite_steps;
    double loss_sum;      /* over finite steps */
    double norm_max;      /* exact, over finite steps */
    int64_t tokens;
    double *norms;        /* (cap) pre-clip norms of finite steps, every stride-th:
                             p50 and p90 are sampled past STATS_MAX_NORMS steps */
    long nnorms, cap, stride;
    double t_start_ms, t_end_ms;
} EpochStats;

typedef struct {
    int epoch;
    long steps, clipped, skipped;
    double train_loss, clip_rate, norm_p50, norm_p90, norm_max, tokens_per_s, seconds;
} EpochSummary;

int stats_init(EpochStats *s, long steps_per_epoch);
void stats_free(EpochStats *s);
void stats_begin(EpochStats *s, int epoch, double now_ms);
void stats_add(EpochStats *s, double loss, double norm, int clipped, int skipped, int64_t tokens);
void stats_end(EpochStats *s, double now_ms, EpochSummary *out);
/* Nearest-rank percentile (q in [0, 1]) of v[0..n), sorting v in place. */
double stats_percentile(double *v, long n, double q);

#endif
