/* steptime: per-step phase timers of a worker, and their median breakdown
 * (see steptime.h). Nothing here allocates after steptime_init. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "worker/steptime.h"

int steptime_init(StepTimes *s, int cap)
{
    memset(s, 0, sizeof *s);
    if (cap < 1) cap = 1;
    s->row = calloc((size_t)cap, sizeof *s->row);
    if (!s->row) return -1;
    s->cap = cap;
    return 0;
}

void steptime_free(StepTimes *s)
{
    free(s->row);
    memset(s, 0, sizeof *s);
}

void steptime_begin(StepTimes *s)
{
    memset(s->cur, 0, sizeof s->cur);
    s->mark = log_clock_ms();
}

void steptime_mark(StepTimes *s, Phase p)
{
    double now = log_clock_ms();
    s->cur[p] += now - s->mark;
    s->mark = now;
}

void steptime_end(StepTimes *s)
{
    steptime_mark(s, PH_OTHER);
    memcpy(s->row[s->n % s->cap], s->cur, sizeof s->cur);
    s->n++;
}

static double row_total(const double *r)
{
    double t = 0;
    for (int p = 0; p < PH_COUNT; p++) t += r[p];
    return t;
}

static int by_total(const void *a, const void *b)
{
    double x = row_total(*(const double *const *)a), y = row_total(*(const double *const *)b);
    return (x > y) - (x < y);
}

int steptime_median(const StepTimes *s, long warm, double *out, double *total)
{
    long first = s->n > s->cap ? s->n - s->cap : 0;
    if (warm > first) first = warm;
    long k = s->n - first;
    memset(out, 0, PH_COUNT * sizeof *out);
    *total = 0;
    if (k <= 0) return 0;
    const double **rows = malloc((size_t)k * sizeof *rows); /* at the end only, not per step */
    if (!rows) return 0;
    for (long i = 0; i < k; i++) rows[i] = s->row[(first + i) % s->cap];
    qsort(rows, (size_t)k, sizeof *rows, by_total);
    long lo = k * 2 / 5, hi = k * 3 / 5;
    if (hi <= lo) lo = (k - 1) / 2, hi = lo + 1;
    for (long i = lo; i < hi; i++)
        for (int p = 0; p < PH_COUNT; p++) out[p] += rows[i][p] / (double)(hi - lo);
    *total = row_total(out);
    free(rows);
    return (int)(hi - lo);
}

void steptime_format(const StepTimes *s, long warm, char *buf, size_t len)
{
    double ph[PH_COUNT], total;
    int n = steptime_median(s, warm, ph, &total);
    snprintf(buf, len, "step breakdown (mean of the %d steps around the median, after %ld warm-up): "
             "step %.4f ms = compute %.4f + sync wait %.4f + stats %.4f + update %.4f + record %.4f "
             "+ other %.4f", n, warm, total, ph[PH_COMPUTE], ph[PH_SYNC], ph[PH_STATS], ph[PH_UPDATE],
             ph[PH_RECORD], ph[PH_OTHER]);
}
