/* report: `clipd-report RUN_DIR [--json] [--svg FILE] [--max-norm X]` reads a
 * run directory (steps, epochs, events, tensors and sessions .jsonl, config.yaml) and
 * prints a one-screen summary, the same summary as one JSON object, or the run
 * drawn as one self-contained SVG on a shared step axis. It only reads, so it
 * works on a run still being written and skips a crashed run's partial line. */
#ifndef CLIPD_REPORT_H
#define CLIPD_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REP_NAME_MAX 64
#define REP_PATH_MAX 4096
#define REP_NOTE_MAX 8
#define REP_TOP 5    /* tensors named in the summary and the SVG */
#define REP_KINDS 32 /* distinct event kinds told apart; more share the last */

/* One line of steps.jsonl; NAN where the log has null or no value. */
typedef struct {
    int64_t seq, step, tokens;
    int epoch;
    bool clipped, skipped;
    double loss, norm, coef, lr, step_ms, time; /* time: wall clock, Unix s (NAN: not logged) */
} RepStep;

/* One line of epochs.jsonl, and where its last step sits on the seq axis. */
typedef struct {
    int epoch;
    int64_t steps, clipped, skipped, end_seq; /* end_seq 0: no step of it seen */
    double train_loss, clip_rate, p50, p90, max, val_loss, lr, tokens_per_s, seconds;
    char clip_state[12];  /* off, inactive, active, saturated; "" when the line has none */
} RepEpoch;

/* One line of events.jsonl, with its largest per-tensor norm if it has them. */
typedef struct {
    int64_t seq, step, rollback_to; /* rollback_to -1: none */
    int epoch, kind_idx; /* kinds[kind_idx] of the Report */
    char kind[32], action[16], top[REP_NAME_MAX];
    double value, threshold, top_norm, top_share; /* top_share NAN: no tensor_norms */
} RepEvent;

/* One line of sessions.jsonl: a start, resume, end or crash of the job. */
typedef struct {
    char kind[12], how[16]; /* how: an end's done, stopped, aborted, early_stop */
    int64_t seq, step;
    double time;            /* NAN: not logged */
} RepSession;

#define REP_SESSIONS 1024 /* sessions listed; more are counted only */

/* tensors.jsonl: rows of (tensor index, squared norm) entries. */
typedef struct {
    int64_t seq, step;
    long first, n;   /* entries ent[first .. first + n) */
    double sumsq;    /* NAN when a norm of the row is null */
} RepTRow;

typedef struct {
    int idx;
    double sq;
} RepTEnt;

typedef struct {
    char (*names)[REP_NAME_MAX];
    int nnames, capnames;
    RepTRow *rows;
    long nrows, caprows;
    RepTEnt *ent;
    long nent, capent;
} RepTensors;

typedef struct {
    char dir[REP_PATH_MAX], name[REP_NAME_MAX], clip_mode[32], max_norm_src[32];
    bool squared_error; /* data.source adding: the loss is a squared error, not nats/token */
    RepStep *st;
    long nst, capst;
    RepEpoch *ep;
    long nep, capep;
    RepEvent *ev;
    long nev, capev;
    char kinds[REP_KINDS][32]; /* event kinds in order of first appearance */
    long kind_count[REP_KINDS];
    int nkinds;
    RepTensors t;
    RepSession *ses;  /* (nses) sessions.jsonl, absent in runs before it existed */
    long nses, capses, more_ses;
    bool has_epochs, has_events, has_tensors, finished;
    double max_norm; /* NAN: unknown */
    char notes[REP_NOTE_MAX][200];
    int nnotes;
} Report;

/* A tensor's share of the squared pre-clip global norm, averaged over the
 * rows of tensors.jsonl, and over their first and last quarter. */
typedef struct {
    int idx;
    double share, early, late, max_norm;
} RepShare;

/* Everything the three outputs print, computed once from a Report. */
typedef struct {
    long distinct, finite_norms, nonfinite, clipped, skipped, rollbacks;
    int64_t first_step, last_step;
    double p50, p90, p99, pmax, clip_rate;
    int final_epoch, best_epoch; /* 0: no validation loss yet */
    double final_val, best_val;
    double tok_s, step_ms; /* medians; NAN when unknown */
    const char *tok_src;
    bool has_cur;          /* an epoch with steps but no epochs.jsonl line yet */
    RepEpoch cur;
    long tsamples;         /* rows of tensors.jsonl with every norm finite */
    RepShare top[REP_TOP];
    int ntop;
} RepSummary;

/* Reads RUN_DIR; max_norm (NAN: none) overrides config.yaml. 0, or -1 with
 * err filled: `path:line:col: key: what is wrong`. rep_free after either. */
int rep_load(Report *r, const char *dir, double max_norm, char *err, size_t errlen);
void rep_free(Report *r);
void rep_summarise(const Report *r, RepSummary *s);
void rep_print_text(const Report *r, const RepSummary *s);
int rep_print_json(const Report *r, const RepSummary *s);
int rep_write_svg(const Report *r, const RepSummary *s, const char *path, char *err, size_t errlen);
/* daemon/report/html.c: runs[0..n) (n <= 8) overlaid on one self-contained page. */
int rep_write_html(const Report *const *runs, int n, const char *path, char *err, size_t errlen);

/* Pure helpers, unit-tested. */
/* Centred moving average of the finite y over w points (shorter at the
 * ends); NAN where a window holds no finite value. */
void rep_smooth(double *out, const double *y, long n, long w);
/* Fraction of the flags set among the last w (fewer at the start) up to each i. */
void rep_window_rate(double *out, const bool *flag, long n, long w);
/* At most two points per pixel column (the smallest and largest finite y, in
 * the order they came) of x-ascending points; ox, oy hold 2 * cols. */
long rep_decimate(double *ox, double *oy, const double *x, const double *y, long n,
                  double x0, double x1, int cols);
/* Tick values at 1, 2, 2.5 or 5 x 10^k inside [lo, hi], about target of them. */
int rep_ticks(double *t, int max, double lo, double hi, int target);
/* Ticks of a log axis over [10^lo, 10^hi]: decades, and 2 and 5 when few. */
int rep_log_ticks(double *t, int max, double lo, double hi);

/* The whole command line of clipd-report (daemon/report/cli.c): the exit code. */
int report_main(int argc, char **argv);

#endif
