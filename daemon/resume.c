/* resume: finding, checking and replaying a checkpoint's position for the
 * coordinator (see resume.h). JSON lines are read back with jansson. */
#include "daemon/resume.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ckdir.h"
#include "common/ckpt.h"
#include "common/ckstate.h"
#include "common/text.h"
#include "common/log.h"

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

static void last_seq(const void *rec, json_t *o, void *ctx)
{
    const StepLine *l = rec;
    (void)o;
    if (l->r.seq >= 1) *(int64_t *)ctx = l->r.seq;
}

/* The seq of the last complete step line of steps.jsonl, or -1 without one. */
static int64_t logged_seq(const Config *c)
{
    char path[CFG_STR_MAX + 32];
    StepLine l;
    int64_t last = -1;
    snprintf(path, sizeof path, "%s/steps.jsonl", c->run_dir);
    rec_each_line(path, &rec_step, &l, last_seq, &last);
    return last;
}

/* log.tensor_norms_every of the job that wrote the logs (RUN_DIR/config.yaml;
 * this start may change it), or this config's when that cannot be read. */
static int logged_every(const Config *c)
{
    char path[CFG_STR_MAX + 32], err[256];
    snprintf(path, sizeof path, "%s/config.yaml", c->run_dir);
    Config *old = malloc(sizeof *old);
    int every = c->log_tensor_norms_every;
    if (old) cfg_defaults(old);
    if (old && cfg_load_file(old, path, err, sizeof err) == CFG_OK) every = old->log_tensor_norms_every;
    free(old);
    return every;
}

typedef struct {
    int64_t want;
    int found;
} TensorSeek;

static void tensor_seek(const void *rec, json_t *o, void *ctx)
{
    const TensorLine *l = rec;
    TensorSeek *t = ctx;
    (void)o;
    if (l->seq == t->want) t->found = 1;
}

/* 1 when tensors.jsonl holds every line its cadence asks for up to seq
 * (the last is enough: lines are appended in order), or the cadence asks
 * none. A job killed between the lines of a step could leave it out, and a
 * resume from that step would keep the hole for good. */
static int tensors_complete(const Config *c, int every, int64_t seq)
{
    if (every <= 0 || seq < every) return 1;
    TensorSeek t = {seq / every * every, 0};
    char path[CFG_STR_MAX + 32];
    TensorLine l;
    snprintf(path, sizeof path, "%s/tensors.jsonl", c->run_dir);
    rec_each_line(path, &rec_tensor, &l, tensor_seek, &t);
    return t.found;
}

/* Whether the logs are complete up to a checkpoint at seq: its step is in
 * steps.jsonl (a step's line there is written after its other lines) and
 * tensors.jsonl has the lines of its cadence (every: logged_every). Fills why when not. A run
 * dir without logs (a checkpoint taken elsewhere) has nothing to check. */
static int logs_reach(const Config *c, int64_t seq, int64_t logged, int every, char *why, size_t len)
{
    if (logged < 0) return 1;
    if (seq > logged) {
        snprintf(why, len, "it is at step %lld of the run, the logs end at %lld (the job ended "
                 "before logging it)", (long long)seq, (long long)logged);
        return 0;
    }
    if (!tensors_complete(c, every, seq)) {
        snprintf(why, len, "tensors.jsonl misses the line of step %lld of the run "
                 "(log.tensor_norms_every %d): the job ended between the lines of a step",
                 (long long)(seq / every * every), every);
        return 0;
    }
    return 1;
}

static int cmp_desc(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x < y) - (x > y);
}

/* `--resume latest`: the newest checkpoint that reads back intact and that
 * the logs reach whole (logs_reach). A job killed right after worker 0 wrote
 * a checkpoint may not have logged that step; resuming from it would leave a
 * hole in the logs, so the one before is taken (saying why). */
static int latest_logged(Resume *r, const Config *c, char *err, size_t errlen)
{
    char dir[CFG_STR_MAX + 16];
    cfg_checkpoint_dir(c, dir, sizeof dir);
    DIR *d = opendir(dir);
    if (!d) return snprintf(err, errlen, "--resume latest: %s: %s", dir, strerror(errno)), -1;
    long long steps[4096];
    int n = 0, bad = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096) {
        long long step;
        char tail[32];
        if (sscanf(e->d_name, "step-%lld.safetensor%31s", &step, tail) == 2 && !strcmp(tail, "s"))
            steps[n++] = step;
    }
    closedir(d);
    qsort(steps, (size_t)n, sizeof *steps, cmp_desc);
    int64_t logged = logged_seq(c);
    int every = logged_every(c); /* read once, not per checkpoint tried */
    for (int i = 0; i < n; i++) {
        char why[1024];
        Ckpt k;
        int64_t seq = -1;
        ckdir_path(r->path, sizeof r->path, dir, steps[i]);
        if (ckpt_read(&k, r->path, why, sizeof why) != 0) {
            fprintf(stderr, "clipd: --resume latest: skipping %s\n", why);
            bad++;
            continue;
        }
        int rc = ckpt_meta_i64(&k, "seq", &seq, why, sizeof why);
        ckpt_free(&k);
        if (rc == 0 && !logs_reach(c, seq, logged, every, why, sizeof why)) {
            fprintf(stderr, "clipd: --resume latest: skipping %s: %s\n", r->path, why);
            continue;
        }
        if (rc == 0) return 0;
        fprintf(stderr, "clipd: --resume latest: skipping %s\n", why);
        bad++;
    }
    snprintf(err, errlen, "--resume latest: no usable checkpoint in %s (%d found, %d invalid)", dir, n, bad);
    return -1;
}

/* Text: tokens per stream of the train split for a global batch of S
 * streams (the files as the last start left them), or 0 when not known. */
static uint64_t text_train_stream_len(const Config *c, int64_t S)
{
    TokenSeq t;
    char why[512];
    if (c->data_source != DATA_TEXT || S <= 0 || text_open(&t, c, TEXT_TRAIN, why, sizeof why) != 0) return 0;
    uint64_t L = text_stream_len(t.n, (uint64_t)S);
    text_close(&t);
    return L;
}

int resume_find(Resume *r, const Config *c, const char *arg, int W, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    if (!strcmp(arg, "latest")) {
        if (latest_logged(r, c, err, errlen) != 0) return -1;
    } else {
        snprintf(r->path, sizeof r->path, "%s", arg);
    }
    Ckpt k;
    if (ckpt_read(&k, r->path, err, errlen) != 0) return -1;
    /* Every key and tensor the workers will read, before anything in the
     * run changes: a checkpoint that would fail (or crash) a worker is
     * refused here, with the newer checkpoints and the logs as they were. */
    int64_t ws = 0, bpw = 0; /* --check (W unknown): the checkpoint's global batch */
    if (W <= 0 && (ckpt_meta_i64(&k, "world_size", &ws, err, errlen) || ckpt_meta_i64(&k, "batch_per_worker", &bpw, err, errlen) ||
                   ws < 1 || ws > (1 << 24) || bpw < 1 || bpw > (1 << 24)))
        ws = bpw = 0;
    uint64_t L = text_train_stream_len(c, W > 0 ? (int64_t)W * c->data_batch_per_worker : ws * bpw);
    CkState s;
    int rc = ckstate_check(&k, c, W, L, &s, err, errlen); /* the same global batch, any W */
    if (!rc && W > 0 && s.world_size != W)
        fprintf(stderr, "clipd: %s was written by %d workers x %d; resuming on %d x %d "
                "(same global batch: same data order and schedule, sums in another order)\n",
                r->path, (int)s.world_size, (int)s.batch_per_worker, W, c->data_batch_per_worker);
    char why[512];
    if (!rc && strcmp(arg, "latest") && !logs_reach(c, s.seq, logged_seq(c), logged_every(c), why, sizeof why)) {
        snprintf(err, errlen, "--resume %s: %s: take an older checkpoint, or --resume latest",
                 r->path, why);
        rc = -1;
    }
    const char *hash = ckpt_meta(&k, "config_hash");
    char mine[32];
    snprintf(mine, sizeof mine, "%016llx", (unsigned long long)cfg_hash(c));
    if (!rc && (!hash || strcmp(hash, mine)))
        fprintf(stderr, "clipd: note: %s was written with another config (hash %s, now %s): "
                "resuming with the new settings\n", r->path, hash ? hash : "none", mine);
    ckpt_free(&k);
    if (rc) return -1;
    r->step = s.step, r->seq = s.seq, r->epoch = (int)s.epoch, r->epoch_step = (int)s.epoch_step;
    r->epoch_done = (int)s.epoch_done, r->epoch_seq0 = s.epoch_seq0;
    r->global_batch = (int64_t)s.world_size * s.batch_per_worker;
    fprintf(stderr, "clipd: resuming from %s (epoch %d, step %lld)\n", r->path, r->epoch,
            (long long)r->step);
    return 0;
}

#define MAX_SESSIONS 4096

typedef struct {
    int64_t start_seq[MAX_SESSIONS]; /* the seq each start or resume continued after */
    double start_time[MAX_SESSIONS], end_time[MAX_SESSIONS]; /* NAN: not known */
    int n;
} Sessions;

static void session_line(const void *rec, json_t *o, void *ctx)
{
    const SessionLine *l = rec;
    Sessions *s = ctx;
    (void)o;
    if (!l->kind) return;
    if ((!strcmp(l->kind, "start") || !strcmp(l->kind, "resume")) && s->n < MAX_SESSIONS) {
        s->start_seq[s->n] = l->seq;
        s->start_time[s->n] = l->time, s->end_time[s->n] = NAN;
        s->n++;
    } else if ((!strcmp(l->kind, "end") || !strcmp(l->kind, "crash")) && s->n > 0) {
        s->end_time[s->n - 1] = l->time;
    }
}

/* RUN_DIR/sessions.jsonl, each line leniently through its table to fn. */
static void each_session(const Config *c, void (*fn)(const void *rec, json_t *o, void *ctx), void *ctx)
{
    char path[CFG_STR_MAX + 32];
    SessionLine l;
    snprintf(path, sizeof path, "%s/sessions.jsonl", c->run_dir);
    rec_each_line(path, &rec_session, &l, fn, ctx);
}

typedef struct {
    const Resume *r;
    EpochStats *st;
    const Sessions *ses;
    double prior_ms, last_t; /* the epoch's time before this start; the last step's time */
} Replay;

/* A step of the current epoch: its statistics, and its time: since the step
 * before, or (the first of the epoch or of a session, or no time logged) its
 * own step_ms, so that a gap between sessions is not counted. */
static void replay_step(const void *rec, json_t *o, void *ctx)
{
    const StepLine *l = rec;
    Replay *p = ctx;
    int64_t seq = l->r.seq;
    (void)o;
    if (seq <= p->r->epoch_seq0) return;
    stats_add(p->st, l->r.loss, l->r.grad_norm, l->r.clipped, l->r.skipped, l->r.tokens);
    double t = l->time, ms = l->r.step_ms;
    int first = !isfinite(p->last_t) || !isfinite(t);
    for (int i = 0; i < p->ses->n && !first; i++) first = p->ses->start_seq[i] == seq - 1;
    p->prior_ms += first ? (isfinite(ms) ? ms : 0) : (t - p->last_t) * 1e3;
    p->last_t = t;
}

typedef struct {
    EpochLine *epochs;
    int n, max;
} EpochsKept;

static void replay_epoch(const void *rec, json_t *o, void *ctx)
{
    EpochsKept *k = ctx;
    (void)o;
    if (k->n >= k->max) return;
    EpochLine *l = &k->epochs[k->n];
    *l = *(const EpochLine *)rec;
    l->epoch = ++k->n;
    l->clip_state = NULL; /* points into the parsed line; written only by runlog_epoch */
}

/* Feed the kept steps.jsonl lines of the current epoch back into st (and the
 * time they took, without the gaps between sessions), and the kept
 * epochs.jsonl lines into epochs[]. */
static void replay_logs(const Resume *r, const Config *c, EpochStats *st, EpochLine *epochs,
                        int nepochs, double now_ms)
{
    static Sessions ses;
    memset(&ses, 0, sizeof ses);
    each_session(c, session_line, &ses);
    Replay p = {r, st, &ses, 0, NAN};
    char path[CFG_STR_MAX + 32];
    StepLine sl;
    snprintf(path, sizeof path, "%s/steps.jsonl", c->run_dir);
    rec_each_line(path, &rec_step, &sl, replay_step, &p);
    st->t_start_ms = now_ms - p.prior_ms;
    EpochLine el;
    EpochsKept k = {epochs, 0, nepochs};
    snprintf(path, sizeof path, "%s/epochs.jsonl", c->run_dir);
    rec_each_line(path, &rec_epoch, &el, replay_epoch, &k);
}

int resume_coordinator(const Resume *r, const Config *c, EpochStats *st, EpochLine *epochs,
                       int *epochs_done, int64_t *next_step, int *resumed, double now_ms)
{
    *next_step = r->step + 1;
    *epochs_done = r->epoch_done ? r->epoch : r->epoch - 1;
    int at_end = r->epoch_step == c->train_steps_per_epoch;
    stats_begin(st, r->epoch, now_ms);
    replay_logs(r, c, st, epochs, *epochs_done, now_ms);
    if (at_end && r->epoch_done) {
        *resumed = 0;
        return r->epoch + 1;
    }
    *resumed = at_end ? -1 : 1;
    return at_end ? r->epoch + 1 : r->epoch;
}

static void totals_event(const void *rec, json_t *o, void *ctx)
{
    const EventLine *e = rec;
    ResumeTotals *t = ctx;
    (void)o;
    if (!e->kind) return;
    if (e->action && !strcmp(e->action, "rollback")) t->rollbacks++;
    if (!strcmp(e->kind, "checkpoint_failed")) t->ckpt_failures++;
    if (!strcmp(e->kind, "stall")) t->stalls++;
    if (!strcmp(e->kind, "straggler")) t->stragglers++;
    int k = event_kind_from_name(e->kind);
    if (k >= 0) t->events++, t->event_count[k]++;
}

static void totals_step(const void *rec, json_t *o, void *ctx)
{
    const StepLine *l = rec;
    ResumeTotals *t = ctx;
    (void)o;
    t->nonfinite += isnan(l->r.loss) || isnan(l->r.grad_norm); /* null in the log */
}

void resume_totals(const Config *c, ResumeTotals *t)
{
    static Sessions ses;
    memset(t, 0, sizeof *t);
    memset(&ses, 0, sizeof ses);
    char path[CFG_STR_MAX + 32];
    EventLine ev;
    StepLine sl;
    snprintf(path, sizeof path, "%s/events.jsonl", c->run_dir);
    rec_each_line(path, &rec_event, &ev, totals_event, t);
    snprintf(path, sizeof path, "%s/steps.jsonl", c->run_dir);
    rec_each_line(path, &rec_step, &sl, totals_step, t);
    each_session(c, session_line, &ses);
    for (int i = 0; i < ses.n; i++)
        if (isfinite(ses.end_time[i]) && isfinite(ses.start_time[i]))
            t->seconds += ses.end_time[i] - ses.start_time[i], t->sessions++;
}

typedef struct {
    char *out;
    size_t len, n;
} Marks;

static void mark_line(const void *rec, json_t *o, void *ctx)
{
    const SessionLine *l = rec;
    Marks *m = ctx;
    (void)o;
    if (!l->kind || m->n + 1 >= m->len) return;
    int w = snprintf(m->out + m->n, m->len - m->n, "%s%s at step %lld", m->n ? ", " : "", l->kind,
                     (long long)l->step);
    m->n = w < 0 ? m->len : m->n + (size_t)w >= m->len ? m->len - 1 : m->n + (size_t)w;
}

static void rollback_mark(const void *rec, json_t *o, void *ctx)
{
    const EventLine *e = rec;
    (void)o;
    if (!e->action || strcmp(e->action, "rollback")) return;
    Marks *m = ctx;
    if (m->n + 1 >= m->len) return;
    int w = snprintf(m->out + m->n, m->len - m->n, "%srollback at step %lld to %lld", m->n ? ", " : "",
                     (long long)e->step, (long long)e->rollback_to);
    m->n = w < 0 ? m->len : m->n + (size_t)w >= m->len ? m->len - 1 : m->n + (size_t)w;
}

void resume_session_marks(const Config *c, char *out, size_t len)
{
    Marks m = {out, len, 0};
    if (len) out[0] = 0;
    each_session(c, mark_line, &m);
    char path[CFG_STR_MAX + 32];
    EventLine ev;
    snprintf(path, sizeof path, "%s/events.jsonl", c->run_dir);
    rec_each_line(path, &rec_event, &ev, rollback_mark, &m);
    if (len && !out[0]) snprintf(out, len, "none logged");
}

static void last_step(const void *rec, json_t *o, void *ctx)
{
    const StepLine *l = rec;
    SessionTail *t = ctx;
    (void)o;
    t->seq = l->r.seq, t->step = l->r.step, t->epoch = l->r.epoch, t->time = l->time;
}

SessionTail resume_last_session(const Config *c)
{
    static Sessions ses;
    SessionTail t = {0, -1, -1, 0, NAN};
    memset(&ses, 0, sizeof ses);
    each_session(c, session_line, &ses);
    t.open = ses.n > 0 && !isfinite(ses.end_time[ses.n - 1]);
    char path[CFG_STR_MAX + 32];
    StepLine sl;
    snprintf(path, sizeof path, "%s/steps.jsonl", c->run_dir);
    rec_each_line(path, &rec_step, &sl, last_step, &t);
    return t;
}

int resume_abandon_newer(const Resume *r, const Config *c, char *err, size_t errlen)
{
    char dir[CFG_STR_MAX + 16];
    cfg_checkpoint_dir(c, dir, sizeof dir);
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && !rc) {
        long long step;
        char tail[32];
        if (sscanf(e->d_name, "step-%lld.safetensor%31s", &step, tail) != 2 || strcmp(tail, "s") ||
            step <= r->step)
            continue;
        char from[CFG_STR_MAX + 300], to[CFG_STR_MAX + 320];
        snprintf(from, sizeof from, "%s/%s", dir, e->d_name);
        snprintf(to, sizeof to, "%s.abandoned", from);
        if (rename(from, to) != 0) {
            snprintf(err, errlen, "%s: cannot set aside: %s", from, strerror(errno));
            rc = -1;
        } else {
            fprintf(stderr, "clipd: set aside %s (newer than the resume point)\n", from);
        }
    }
    closedir(d);
    return rc;
}

/* The files that say run.dir holds a run: a log with a line, a checkpoint
 * (also one set aside), the final weights. The first found goes in what. */
static int holds_run(const Config *c, char *what, size_t len)
{
    static const char *const logs[] = {"steps.jsonl", "epochs.jsonl", "events.jsonl",
                                       "tensors.jsonl", "final.safetensors"};
    char path[CFG_STR_MAX + 320], dir[CFG_STR_MAX + 16];
    struct stat st;
    for (size_t i = 0; i < sizeof logs / sizeof *logs; i++) {
        snprintf(path, sizeof path, "%s/%s", c->run_dir, logs[i]);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
            return snprintf(what, len, "%s", path), 1;
    }
    cfg_checkpoint_dir(c, dir, sizeof dir);
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    while (d && !found && (e = readdir(d))) {
        long long step;
        char tail[32];
        if (sscanf(e->d_name, "step-%lld.safetensor%31s", &step, tail) == 2 &&
            (!strcmp(tail, "s") || !strcmp(tail, "s.abandoned")))
            found = 1, snprintf(what, len, "%s/%s", dir, e->d_name);
    }
    if (d) closedir(d);
    return found;
}

int resume_check_fresh(const Config *c, char *err, size_t errlen)
{
    char what[CFG_STR_MAX + 320];
    if (c->run_overwrite || !holds_run(c, what, sizeof what)) return 0;
    snprintf(err, errlen, "run.dir: %s holds a run (%s): continue it with --resume latest, or "
             "replace it with run.overwrite: true (--set run.overwrite=true)", c->run_dir, what);
    return -1;
}

int resume_clear_run(const Config *c, char *err, size_t errlen)
{
    char dir[CFG_STR_MAX + 16], path[CFG_STR_MAX + 320];
    static const char *const files[] = {"final.safetensors", "metrics.addr"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", c->run_dir, files[i]);
        if (unlink(path) != 0 && errno != ENOENT)
            return snprintf(err, errlen, "run.overwrite: cannot remove %s: %s", path, strerror(errno)), -1;
    }
    cfg_checkpoint_dir(c, dir, sizeof dir);
    DIR *d = opendir(dir);
    struct dirent *e;
    int rc = 0, n = 0;
    while (d && !rc && (e = readdir(d))) {
        long long step;
        char tail[32];
        if (sscanf(e->d_name, "step-%lld.safetensor%31s", &step, tail) != 2 ||
            (strcmp(tail, "s") && strcmp(tail, "s.abandoned")))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0)
            rc = -1, snprintf(err, errlen, "run.overwrite: cannot remove %s: %s", path, strerror(errno));
        else
            n++;
    }
    if (d) closedir(d);
    if (n) fprintf(stderr, "clipd: run.overwrite: removed %d checkpoint%s from %s\n", n, n > 1 ? "s" : "", dir);
    return rc;
}
