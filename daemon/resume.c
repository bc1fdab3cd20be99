/* resume: finding, checking and replaying a checkpoint's position for the
 * coordinator (see resume.h). JSON lines are read back with jansson. */
#include "daemon/resume.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ckpt.h"
#include "common/log.h"

#include <dirent.h>
#include <errno.h>

/* The checkpoint's parameters must be this config's model. */
static int check_model(const Ckpt *k, const Config *c, char *err, size_t errlen)
{
    char names[PROTO_MAX_TENSORS][32], full[64];
    _Static_assert(sizeof full > sizeof names[0] + 6, "param.NAME fits");
    int n = cfg_tensor_names(c, names, PROTO_MAX_TENSORS);
    uint64_t total = 0;
    for (int i = 0; i < n && i < PROTO_MAX_TENSORS; i++) {
        memcpy(full, "param.", 6);
        memcpy(full + 6, names[i], sizeof names[i]);
        const CkEntry *e = ckpt_find(k, full);
        if (!e) {
            snprintf(err, errlen, "%s: no tensor '%s': written for another model", k->path, full);
            return -1;
        }
        total += e->nbytes / 4;
    }
    if (total != cfg_param_count(c)) {
        snprintf(err, errlen, "%s: %" PRIu64 " parameters, the config's model has %" PRIu64
                 " (model.* settings differ)", k->path, total, cfg_param_count(c));
        return -1;
    }
    return 0;
}

/* The seq of the last complete line of steps.jsonl, or -1 without one. */
static int64_t logged_seq(const Config *c)
{
    char path[CFG_STR_MAX + 32], *line = NULL;
    size_t cap = 0;
    int64_t last = -1;
    snprintf(path, sizeof path, "%s/steps.jsonl", c->run_dir);
    FILE *f = fopen(path, "r");
    while (f && getline(&line, &cap, f) > 0) {
        const char *p = strstr(line, "\"seq\":");
        if (strchr(line, '\n') && p) last = strtoll(p + 6, NULL, 10);
    }
    if (f) fclose(f);
    free(line);
    return last;
}

static int cmp_desc(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x < y) - (x > y);
}

/* `--resume latest`: the newest checkpoint that reads back intact and that
 * the logs reach. A job killed right after worker 0 wrote a checkpoint may
 * not have logged that step; resuming from it would leave a hole in
 * steps.jsonl, so the one before is taken (saying why). */
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
    for (int i = 0; i < n; i++) {
        char why[1024];
        Ckpt k;
        int64_t seq = -1;
        ckpt_path(r->path, sizeof r->path, dir, steps[i]);
        if (ckpt_read(&k, r->path, why, sizeof why) != 0) {
            fprintf(stderr, "clipd: --resume latest: skipping %s\n", why);
            bad++;
            continue;
        }
        int rc = ckpt_meta_i64(&k, "seq", &seq, why, sizeof why);
        ckpt_free(&k);
        if (rc == 0 && logged >= 0 && seq > logged) {
            fprintf(stderr, "clipd: --resume latest: skipping %s: it is at step %lld of the run, "
                    "the logs end at %lld (the job ended before logging it)\n", r->path,
                    (long long)seq, (long long)logged);
            continue;
        }
        if (rc == 0) return 0;
        fprintf(stderr, "clipd: --resume latest: skipping %s\n", why);
        bad++;
    }
    snprintf(err, errlen, "--resume latest: no usable checkpoint in %s (%d found, %d invalid)", dir, n, bad);
    return -1;
}

/* Counters are below 2^53: exact in the doubles the logs are read back as,
 * and far from overflowing when the run goes on. */
#define RESUME_MAX_COUNT (INT64_C(1) << 53)

/* The counters the coordinator and the workers take from __metadata__
 * (keys of resume_find) must describe a position a run can be at:
 * 0 <= epoch_seq0 <= seq, 0 <= step <= seq, seq < 2^53, epoch_done 0 or 1,
 * opt_t, nonfinite in [0, seq], rollbacks in [0, INT32_MAX]. */
static int check_counters(const char *path, const int64_t *v, char *err, size_t errlen)
{
    int64_t step = v[0], seq = v[1], done = v[4], seq0 = v[5], opt_t = v[8], rb = v[9], nf = v[10];
    const char *what = seq < 0 || seq >= RESUME_MAX_COUNT ? "seq"
                     : step < 0 || step > seq ? "step"
                     : seq0 < 0 || seq0 > seq ? "epoch_seq0"
                     : done != 0 && done != 1 ? "epoch_done"
                     : opt_t < 0 || opt_t > seq ? "opt_t"
                     : rb < 0 || rb > INT32_MAX ? "rollbacks"
                     : nf < 0 || nf > seq ? "nonfinite" : NULL;
    if (!what) return 0;
    snprintf(err, errlen, "%s: __metadata__.%s out of range (step %lld, seq %lld, epoch_seq0 %lld, "
             "epoch_done %lld, opt_t %lld, rollbacks %lld, nonfinite %lld)", path, what,
             (long long)step, (long long)seq, (long long)seq0, (long long)done, (long long)opt_t,
             (long long)rb, (long long)nf);
    return -1;
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
    int64_t v[11];
    const char *keys[] = {"step", "seq", "epoch", "epoch_step", "epoch_done", "epoch_seq0",
                          "world_size", "batch_per_worker", "opt_t", "rollbacks", "nonfinite"};
    int rc = 0;
    for (int i = 0; i < 11 && !rc; i++) rc = ckpt_meta_i64(&k, keys[i], &v[i], err, errlen);
    if (!rc) rc = check_counters(r->path, v, err, errlen);
    /* Elastic: the streams are global, so any W x data.batch_per_worker with
     * the same product (the global batch) takes its slice of them. */
    if (!rc && (v[6] < 1 || v[7] < 1 || v[6] > INT32_MAX || v[7] > INT32_MAX ||
                v[6] * v[7] != (int64_t)W * c->data_batch_per_worker)) {
        snprintf(err, errlen, "%s: written by %lld workers x data.batch_per_worker %lld = global "
                 "batch %lld; this job has %d x %d = %lld: resume with the same global batch "
                 "(another worker count W needs data.batch_per_worker = %lld / W)", r->path,
                 (long long)v[6], (long long)v[7], (long long)(v[6] * v[7]), W,
                 c->data_batch_per_worker, (long long)W * c->data_batch_per_worker,
                 (long long)(v[6] * v[7]));
        rc = -1;
    }
    if (!rc && v[6] != W)
        fprintf(stderr, "clipd: %s was written by %lld workers x %lld; resuming on %d x %d "
                "(same global batch: same data order and schedule, sums in another order)\n",
                r->path, (long long)v[6], (long long)v[7], W, c->data_batch_per_worker);
    if (!rc && (v[2] < 1 || v[3] < 0)) {
        snprintf(err, errlen, "%s: epoch %lld, step %lld of the epoch: not a training position",
                 r->path, (long long)v[2], (long long)v[3]);
        rc = -1;
    }
    if (!rc && (v[3] > c->train_steps_per_epoch || v[2] > c->train_epochs)) {
        snprintf(err, errlen, "%s: at epoch %lld step %lld of the epoch, beyond train.epochs %d x "
                 "train.steps_per_epoch %d", r->path, (long long)v[2], (long long)v[3],
                 c->train_epochs, c->train_steps_per_epoch);
        rc = -1;
    }
    if (!rc) rc = check_model(&k, c, err, errlen);
    const char *hash = ckpt_meta(&k, "config_hash");
    char mine[32];
    snprintf(mine, sizeof mine, "%016llx", (unsigned long long)cfg_hash(c));
    if (!rc && (!hash || strcmp(hash, mine)))
        fprintf(stderr, "clipd: note: %s was written with another config (hash %s, now %s): "
                "resuming with the new settings\n", r->path, hash ? hash : "none", mine);
    ckpt_free(&k);
    if (rc) return -1;
    r->step = v[0], r->seq = v[1], r->epoch = (int)v[2], r->epoch_step = (int)v[3];
    r->epoch_done = (int)v[4], r->epoch_seq0 = v[5];
    fprintf(stderr, "clipd: resuming from %s (epoch %d, step %lld)\n", r->path, r->epoch,
            (long long)r->step);
    return 0;
}

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* A count from a log line: a whole number in [0, 2^53), else 0 (a damaged
 * or edited line must not reach a float-to-integer conversion out of range). */
static int64_t count(json_t *o, const char *key)
{
    double x = num(o, key);
    return x >= 0 && x < (double)RESUME_MAX_COUNT ? (int64_t)x : 0;
}

/* Feed the kept steps.jsonl lines of the current epoch back into st, and
 * the kept epochs.jsonl lines into epochs[]. */
static void replay_logs(const Resume *r, const Config *c, EpochStats *st, EpochLine *epochs,
                        int nepochs)
{
    char path[CFG_STR_MAX + 32], *line = NULL;
    size_t cap = 0;
    snprintf(path, sizeof path, "%s/steps.jsonl", c->run_dir);
    FILE *f = fopen(path, "r");
    while (f && getline(&line, &cap, f) > 0) {
        json_t *o = json_loads(line, 0, NULL);
        if (o && num(o, "seq") > (double)r->epoch_seq0)
            stats_add(st, num(o, "loss"), num(o, "grad_norm"),
                      json_is_true(json_object_get(o, "clipped")),
                      json_is_true(json_object_get(o, "skipped")), count(o, "tokens"));
        json_decref(o);
    }
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/epochs.jsonl", c->run_dir);
    f = fopen(path, "r");
    for (int e = 0; f && e < nepochs && getline(&line, &cap, f) > 0; e++) {
        json_t *o = json_loads(line, 0, NULL);
        EpochLine *l = &epochs[e];
        l->epoch = e + 1;
        l->s.train_loss = num(o, "train_loss"), l->s.clip_rate = num(o, "clip_rate");
        l->s.norm_p50 = num(o, "grad_norm_p50"), l->s.norm_max = num(o, "grad_norm_max");
        l->s.tokens_per_s = num(o, "tokens_per_s"), l->val_loss = num(o, "val_loss");
        json_decref(o);
    }
    if (f) fclose(f);
    free(line);
}

int resume_coordinator(const Resume *r, const Config *c, EpochStats *st, EpochLine *epochs,
                       int *epochs_done, int64_t *next_step, int *resumed, double now_ms)
{
    *next_step = r->step + 1;
    *epochs_done = r->epoch_done ? r->epoch : r->epoch - 1;
    int at_end = r->epoch_step == c->train_steps_per_epoch;
    stats_begin(st, r->epoch, now_ms);
    replay_logs(r, c, st, epochs, *epochs_done);
    if (at_end && r->epoch_done) {
        *resumed = 0;
        return r->epoch + 1;
    }
    *resumed = at_end ? -1 : 1;
    return at_end ? r->epoch + 1 : r->epoch;
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
