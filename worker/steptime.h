/* steptime: the worker's own timers of where each training step goes
 * (compute, sync wait, stats, update, record, other), kept for the last
 * `cap` steps in a buffer allocated once, and summarised at the end as the
 * mean breakdown of the steps around the median (make bench prints it). */
#ifndef CLIPD_STEPTIME_H
#define CLIPD_STEPTIME_H

#include <stddef.h>

typedef enum { PH_COMPUTE, PH_SYNC, PH_STATS, PH_UPDATE, PH_RECORD, PH_OTHER, PH_COUNT } Phase;

typedef struct {
    double (*row)[PH_COUNT]; /* (cap, PH_COUNT) ms per phase of the last cap steps */
    int cap;
    long n;                  /* steps ended so far */
    double mark;             /* log_clock_ms of the last mark */
    double cur[PH_COUNT];    /* the step in progress */
} StepTimes;

int steptime_init(StepTimes *s, int cap);
void steptime_free(StepTimes *s);
/* A step starts now. */
void steptime_begin(StepTimes *s);
/* The time since the last mark (or begin) was spent in phase p. */
void steptime_mark(StepTimes *s, Phase p);
/* The step ends: keep its row (the time since the last mark is PH_OTHER). */
void steptime_end(StepTimes *s);
/* Over the kept steps after the first `warm` steps: the steps whose total
 * lies in the middle fifth by total time (at least one), averaged phase by
 * phase into out (PH_COUNT) and their mean total into *total. Returns the
 * number of steps averaged (0: none kept). */
int steptime_median(const StepTimes *s, long warm, double *out, double *total);
/* One line: "N steps: step T ms = compute a + sync wait b + ...". */
void steptime_format(const StepTimes *s, long warm, char *buf, size_t len);

#endif
