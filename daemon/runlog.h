/* runlog: the run's machine-readable output in run.dir, as JSON lines, one
 * object per line, flushed per line: steps.jsonl, epochs.jsonl,
 * events.jsonl. Non-finite numbers are written as null. */
#ifndef CLIPD_RUNLOG_H
#define CLIPD_RUNLOG_H

#include <stddef.h>
#include <stdio.h>

#include "common/proto.h"
#include "daemon/stats.h"

typedef struct {
    char dir[CFG_STR_MAX];
    FILE *steps, *epochs, *events;
} RunLog;

/* mkdir -p dir, then create (truncate) the three files. */
int runlog_open(RunLog *l, const char *dir, char *err, size_t errlen);
void runlog_close(RunLog *l);
/* step_ms: the slowest worker's step time. */
int runlog_step(RunLog *l, const StepRecord *r, double step_ms);
int runlog_epoch(RunLog *l, const EpochSummary *e);
/* A non-finite step: kind nonfinite_loss or nonfinite_grad, action skip. */
int runlog_nonfinite(RunLog *l, const StepRecord *r, long nonfinite_so_far);
/* Workers disagreeing on what must be identical. */
int runlog_drift(RunLog *l, int64_t step, int epoch, const char *what, int wrank);
/* JSON number: %.17g, or null when not finite. */
const char *json_num(char *buf, size_t len, double x);

#endif
