/* records: the lines of steps.jsonl, epochs.jsonl, events.jsonl,
 * sessions.jsonl and tensors.jsonl, one table per record. A row names the JSON key, the C member it holds, its
 * type, whether a reader needs it (older logs lack the others) and the
 * bounds of an integer. Each table drives the record's one writer
 * (rec_format: the exact bytes runlog appends) and its one validating
 * reader (rec_parse, rec_each_line), used by runlog (cutting back on a
 * resume), resume (replaying the kept lines) and clipd-report. A type that
 * does not match its member's C type is a compile error. Adding a field to a
 * log is one row here (the member already in StepRecord or EpochLine). */
#ifndef CLIPD_RECORDS_H
#define CLIPD_RECORDS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/proto.h"
#include "daemon/stats.h"

/* How a value is written and read.
 *   I32, I64, LONG  integers (%d, %lld, %ld), read in [lo, hi]
 *   NUM             %.17g, null when not finite (read: a number or null, NAN)
 *   MS              %.3f (times and durations; read: a number or null)
 *   BOOL            true/false (an int32 member)
 *   STR             "%s" as given, not escaped: names clipd chose (a const char *
 *                   member; read: points into the parsed JSON, valid while it lives) */
typedef enum { RF_I32, RF_I64, RF_LONG, RF_NUM, RF_MS, RF_BOOL, RF_STR } RecType;

enum {
    REC_NEED = 1, /* a line without it is refused */
    REC_IFSET = 2 /* written only when set: an integer >= 0, a string not NULL */
};

#define REC_COUNT_MAX (INT64_C(1) << 53) /* seq, step: exact as doubles */
#define REC_EPOCH_MAX 10000000

typedef struct {
    const char *key;
    RecType type;
    size_t off;
    int flags;       /* REC_* */
    int64_t lo, hi;  /* integers */
} RecField;

typedef struct {
    const char *file; /* "steps.jsonl" */
    const RecField *f;
    int n;
} RecSchema;

/* ---- steps.jsonl: a StepRecord as the coordinator logs it ---- */
typedef struct {
    StepRecord r;  /* r.step_ms: the slowest worker's */
    double time;   /* when it was written, Unix seconds */
} StepLine;

/* X(key, member, type, flags, lo, hi), in the order written */
#define STEP_LINE(X) \
    X(step, r.step, I64, REC_NEED, 0, REC_COUNT_MAX) \
    X(epoch, r.epoch, I32, REC_NEED, 0, REC_EPOCH_MAX) \
    X(loss, r.loss, NUM, REC_NEED, 0, 0) \
    X(grad_norm, r.grad_norm, NUM, REC_NEED, 0, 0) \
    X(clip_coef, r.clip_coef, NUM, 0, 0, 0) \
    X(clipped, r.clipped, BOOL, 0, 0, 0) \
    X(lr, r.lr, NUM, 0, 0, 0) \
    X(tokens, r.tokens, I64, 0, 0, INT64_MAX) \
    X(step_ms, r.step_ms, MS, 0, 0, 0) \
    X(skipped, r.skipped, BOOL, 0, 0, 0) \
    X(seq, r.seq, I64, 0, 1, REC_COUNT_MAX) \
    X(time, time, MS, 0, 0, 0)

/* ---- epochs.jsonl ---- */
typedef struct {
    int epoch;
    EpochSummary s;
    double val_loss, val_ppl, lr;
    int64_t val_tokens;
    const char *clip_state; /* "off", "inactive", "active", "saturated" (NULL: not written) */
    double time;
} EpochLine;

#define EPOCH_LINE(X) \
    X(epoch, epoch, I32, REC_NEED, 0, REC_EPOCH_MAX) \
    X(steps, s.steps, LONG, 0, 0, INT64_MAX) \
    X(train_loss, s.train_loss, NUM, 0, 0, 0) \
    X(clip_rate, s.clip_rate, NUM, REC_NEED, 0, 0) \
    X(clipped_steps, s.clipped, LONG, 0, 0, INT64_MAX) \
    X(skipped_steps, s.skipped, LONG, 0, 0, INT64_MAX) \
    X(grad_norm_p50, s.norm_p50, NUM, 0, 0, 0) \
    X(grad_norm_p90, s.norm_p90, NUM, 0, 0, 0) \
    X(grad_norm_max, s.norm_max, NUM, 0, 0, 0) \
    X(val_loss, val_loss, NUM, 0, 0, 0) \
    X(val_ppl, val_ppl, NUM, 0, 0, 0) \
    X(val_tokens, val_tokens, I64, 0, 0, INT64_MAX) \
    X(lr, lr, NUM, 0, 0, 0) \
    X(tokens_per_s, s.tokens_per_s, NUM, 0, 0, 0) \
    X(seconds, s.seconds, MS, 0, 0, 0) \
    X(clip_state, clip_state, STR, REC_IFSET, 0, 0) \
    X(time, time, MS, 0, 0, 0)

/* ---- events.jsonl: the fields every event has; a kind adds its own after
 * them ("check", "at", "tensor_norms", ...: runlog_event's extra), and
 * readers take those by name. ---- */
typedef struct {
    int64_t seq, step;
    int32_t epoch;
    const char *kind;
    double value, baseline, spread, threshold; /* EventInfo of worker/detect.h */
    const char *action;
    int64_t rollback_to; /* -1: none */
} EventLine;

#define EVENT_LINE(X) \
    X(seq, seq, I64, REC_NEED, 0, REC_COUNT_MAX) \
    X(step, step, I64, REC_NEED, 0, REC_COUNT_MAX) \
    X(epoch, epoch, I32, 0, 0, REC_EPOCH_MAX) \
    X(kind, kind, STR, REC_NEED, 0, 0) \
    X(value, value, NUM, 0, 0, 0) \
    X(baseline, baseline, NUM, 0, 0, 0) \
    X(spread, spread, NUM, 0, 0, 0) \
    X(threshold, threshold, NUM, 0, 0, 0) \
    X(action, action, STR, 0, 0, 0) \
    X(rollback_to, rollback_to, I64, REC_IFSET, 0, REC_COUNT_MAX)

/* ---- sessions.jsonl: a start, resume, end or crash of the job ---- */
typedef struct {
    const char *kind;    /* "start", "resume", "end", "crash" */
    int64_t seq, step;   /* where it starts from or ended at */
    int32_t epoch;
    int32_t workers;     /* a start's or resume's W (-1: not written) */
    const char *from;    /* a resume's checkpoint, JSON-escaped by the writer (NULL: not written) */
    const char *how;     /* an end's done, stopped, aborted, early_stop (NULL: not written) */
    double time;
} SessionLine;

#define SESSION_LINE(X) \
    X(kind, kind, STR, REC_NEED, 0, 0) \
    X(seq, seq, I64, REC_NEED, 0, REC_COUNT_MAX) \
    X(step, step, I64, REC_NEED, 0, REC_COUNT_MAX) \
    X(epoch, epoch, I32, 0, 0, REC_EPOCH_MAX) \
    X(workers, workers, I32, REC_IFSET, 0, INT32_MAX) \
    X(from, from, STR, REC_IFSET, 0, 0) \
    X(how, how, STR, REC_IFSET, 0, 0) \
    X(time, time, MS, 0, 0, 0)

/* ---- tensors.jsonl: the fixed fields; the writer appends "norms", an
 * object keyed by tensor name (no row can name it), and the time. ---- */
typedef struct {
    int64_t seq, step;
    int32_t epoch;
} TensorLine;

#define TENSOR_LINE(X) \
    X(seq, seq, I64, REC_NEED, 0, REC_COUNT_MAX) \
    X(step, step, I64, 0, 0, REC_COUNT_MAX) \
    X(epoch, epoch, I32, 0, 0, REC_EPOCH_MAX)

extern const RecSchema rec_step, rec_epoch, rec_event, rec_session, rec_tensor;

/* The line's fields as the table lists them, from "{" on, without the
 * closing brace: the caller appends its own fields, then "}\n". Returns the
 * length rec_format wanted (>= len: cut). */
size_t rec_format(const RecSchema *s, const void *rec, char *buf, size_t len);
/* Every member the table lists set to its missing value: numbers NAN, integers
 * 0, booleans false, strings NULL (then the caller sets its own defaults). */
void rec_clear(const RecSchema *s, void *rec);
/* The fields of o into rec, each checked: a needed key missing, a value of the
 * wrong JSON type, an integer out of its bounds fail with "KEY: what" in err.
 * A missing key that is not needed leaves its member as it was. Keys not in
 * the table are left to the caller. Returns 0 or -1. */
int rec_parse(const RecSchema *s, void *rec, json_t *o, char *err, size_t errlen);
/* Each whole line of path that is a JSON object, read leniently into rec (a
 * field missing or that does not read keeps its rec_clear value, the others
 * still read: what a resume can use of a damaged or hand-edited line), to fn
 * with the object (for the caller's own keys; neither may be kept past the
 * call). A torn last line from a crash and lines that are not JSON objects
 * are left out; a missing file has no lines. */
void rec_each_line(const char *path, const RecSchema *s, void *rec,
                   void (*fn)(const void *rec, json_t *o, void *ctx), void *ctx);

#endif
