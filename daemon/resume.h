/* resume: where a resumed run starts. The coordinator finds and verifies the
 * checkpoint (`--resume PATH|latest`), checks it fits this job, cuts the
 * logs back to it and rebuilds its epoch statistics from the kept lines. */
#ifndef CLIPD_RESUME_H
#define CLIPD_RESUME_H

#include <stddef.h>
#include <stdint.h>

#include "common/cfg.h"
#include "common/events.h"
#include "common/proto.h"
#include "daemon/runlog.h"
#include "daemon/stats.h"

typedef struct {
    char path[PROTO_PATH_MAX]; /* "" when not resuming */
    int64_t step, seq, epoch_seq0;
    int epoch, epoch_step, epoch_done;
    int64_t global_batch; /* streams: world_size x batch_per_worker it was written with */
} Resume;

/* arg: a checkpoint path, or `latest` (the newest valid one in the config's
 * checkpoint dir; skipped invalid ones are reported on stderr). Verifies
 * the file and everything in it the workers will read (common/ckstate.h)
 * against this config and W workers (0: not known, clipd --check). */
int resume_find(Resume *r, const Config *c, const char *arg, int W, char *err, size_t errlen);
/* A fresh start (no --resume) into a run.dir that holds a run (a log with a
 * line, a checkpoint, final weights) is refused unless run.overwrite: -1
 * with one line naming --resume latest and run.overwrite. */
int resume_check_fresh(const Config *c, char *err, size_t errlen);
/* run.overwrite on a fresh start: removes the old checkpoints (also those
 * set aside), final.safetensors and metrics.addr; the logs are truncated
 * when they are opened. Only clipd's own file names are touched. */
int resume_clear_run(const Config *c, char *err, size_t errlen);
/* Renames checkpoints newer than the resume point (a timeline this run
 * abandons) to step-*.safetensors.abandoned, so `latest` never picks them. */
/* What the kept logs of a resumed run already hold, for the summary. */
typedef struct {
    long events, event_count[EV_COUNT], rollbacks, nonfinite, ckpt_failures, stalls, stragglers;
    double seconds; /* the earlier sessions' wall time, from sessions.jsonl */
    int sessions;
} ResumeTotals;
void resume_totals(const Config *c, ResumeTotals *t);
/* The run's last session before this start: open (a start without an end:
 * the job crashed or was killed) and its last logged step and time. */
typedef struct {
    int open;
    int64_t seq, step;
    int epoch;
    double time;
} SessionTail;
SessionTail resume_last_session(const Config *c);
/* "start at step 0, crash at step 216, resume at step 200, end at step 800,
 * rollback at step 300 to 200": sessions.jsonl, then events.jsonl's rollbacks. */
void resume_session_marks(const Config *c, char *out, size_t len);
int resume_abandon_newer(const Resume *r, const Config *c, char *err, size_t errlen);
/* Restores the coordinator's view; returns the epoch to run next, with
 * *resumed 1 (that epoch continues mid-way), -1 (the end of the epoch
 * before it must be received first) or 0. */
int resume_coordinator(const Resume *r, const Config *c, EpochStats *st, EpochLine *epochs,
                       int *epochs_done, int64_t *next_step, int *resumed, double now_ms);

#endif
