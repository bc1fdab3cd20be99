/* runlog: the run's machine-readable output in run.dir, as JSON lines, one
 * object per line, each written whole with one write(2): steps.jsonl,
 * epochs.jsonl, events.jsonl, tensors.jsonl, and sessions.jsonl (each
 * start, resume, end and detected crash: never cut back on a resume). Non-finite numbers are written
 * as null. A line the disk takes only in part (full, read-only) is cut off
 * again, so the files never hold a torn line; later lines are written when
 * there is room again. On resume the files are cut back to what the
 * checkpoint covers, then appended to. */
#ifndef CLIPD_RUNLOG_H
#define CLIPD_RUNLOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/proto.h"
#include "daemon/records.h" /* the lines' fields: StepLine, EpochLine, EventLine */
#include "daemon/stats.h"

enum { LOG_STEPS, LOG_EPOCHS, LOG_EVENTS, LOG_TENSORS, LOG_SESSIONS, LOG_FILES };

typedef struct {
    char dir[CFG_STR_MAX];
    int fd[LOG_FILES];    /* O_APPEND descriptors, -1 when closed */
    int torn[LOG_FILES];  /* a partial line could not be cut off: begin the next one on a new line */
    char *line;           /* (cap) the line being formatted, allocated by runlog_open */
    size_t len, cap;
} RunLog;

/* What a resumed run keeps of the old files. */
typedef struct {
    int64_t seq;        /* steps, events, tensors: lines with "seq" <= this */
    int64_t epochs;     /* epochs.jsonl: lines with "epoch" <= this */
    int drop_epoch_end; /* also drop epoch-end events at seq (the epoch's end is redone) */
} LogKeep;


/* mkdir -p dir, then create (truncate) the four files, or with keep, cut
 * them back and append. */
int runlog_open(RunLog *l, const char *dir, const LogKeep *keep, char *err, size_t errlen);
/* Before anything changes: each log in dir, and config.yaml, is absent or a
 * regular file (a symlink or FIFO planted there is refused, never followed
 * or waited on). Returns 0, or -1 with `run.dir: 'PATH': why`. */
int runlog_check(const char *dir, char *err, size_t errlen);
/* SIGHUP: close and reopen for appending (after logrotate moved them). */
int runlog_reopen(RunLog *l, char *err, size_t errlen);
void runlog_close(RunLog *l); /* also frees the line buffer */
/* Each JSON-line writer returns 0, or -1 with errno when the line was not
 * written (the one exception to the error convention, docs/ARCHITECTURE.md:
 * a lost line is counted and said once per file by the coordinator).
 * Every line ends with "time": the wall clock when it was written, Unix
 * seconds with milliseconds. */
double runlog_now(void); /* that clock */
/* step_ms: the slowest worker's step time. The fields written: STEP_LINE
 * and EPOCH_LINE of daemon/records.h. */
int runlog_step(RunLog *l, const StepRecord *r, double step_ms);
int runlog_epoch(RunLog *l, const EpochLine *e);
/* One event: info = value, baseline, spread, threshold (worker/detect.h, EventInfo).
 * tensors/norms (n of them, largest first) may be NULL. */
int runlog_event(RunLog *l, int64_t seq, int64_t step, int epoch, const char *kind,
                 const double info[4], const char *action, int64_t rollback_to,
                 const char *const *tensors, const float *norms, int n, const char *extra);
/* A line of sessions.jsonl (SESSION_LINE of daemon/records.h); time NAN:
 * now (a crash gives the last logged step's). */
int runlog_session(RunLog *l, const SessionLine *s);
/* Per-tensor pre-clip norms of a step, in model order (tensors.jsonl). */
int runlog_tensors(RunLog *l, const StepRecord *r, char names[][32], int n);
/* One evaluation (clipd --eval, the test split at a run's end) as a JSON
 * object with its fields in json (no braces): printed to stdout and appended,
 * with "time", to RUN_DIR/eval.jsonl (one write; a symlink is refused).
 * Returns 0, or -1 with errno when the file was not written. */
int runlog_eval(const char *dir, const char *json);
/* The effective config, as YAML, in RUN_DIR/config.yaml. Returns 0, or -1
 * with `run.dir: cannot write PATH: why` in err. */
int runlog_config(const RunLog *l, const Config *c, char *err, size_t errlen);
/* s as the body of a JSON string (quotes, backslashes and control bytes
 * escaped), cut to fit len. */
const char *json_escape(char *buf, size_t len, const char *s);
/* JSON number: %.17g, or null when not finite. */
const char *json_num(char *buf, size_t len, double x);

#endif
