/* ckstate: checking a checkpoint's training state against the config, the
 * job and its own invariants before anything uses it (see ckstate.h). */
#include "common/log.h"
#include "common/ckstate.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/data.h"
#include "common/detstate.h"

#define STREAM_WORDS 6                       /* data.streams columns: RNG (4), cursor, last token */
#define MAX_COUNT (INT64_C(1) << 53)         /* counters: exact as doubles, far from overflowing */
#define MAX_RANKS (1 << 24)                  /* world_size, batch_per_worker */
#define CARRIED_H_MAX 1.001f                 /* |h| <= 1 (tanh-bounded), plus fm_tanhf's 3e-7 error */


/* Each member's C type matches its row's type. */
#define CKM_C_INT int64_t
#define CKM_C_HEX double
#define CKM_C_HEX4 double *
#define CKM_C_HASH uint64_t
#define CKM_C_STR const char *
#define CKM_TYPECHECK(key, type, flags) \
    _Static_assert(_Generic(((CkState *)0)->key, CKM_C_##type: 1, default: 0), \
                   "CkState." #key ": its C type is not " #type);
CKSTATE_META(CKM_TYPECHECK)

enum { CKM_INT, CKM_HEX, CKM_HEX4, CKM_HASH, CKM_STR };
typedef struct {
    const char *key;
    int type, flags;
    size_t off;
} CkMetaField;
#define CKM_ROW(key, type, flags) {#key, CKM_##type, flags, offsetof(CkState, key)},
static const CkMetaField ck_fields[CKSTATE_NMETA] = {CKSTATE_META(CKM_ROW)};

int ckstate_meta(const CkState *s, CkStateMeta *out)
{
    for (int i = 0; i < CKSTATE_NMETA; i++) {
        const CkMetaField *f = &ck_fields[i];
        const char *p = (const char *)s + f->off;
        char *v = out->v[i];
        size_t n = sizeof out->v[i];
        const double *d = (const double *)(const void *)p;
        out->meta[i] = (CkMeta){f->key, v};
        switch (f->type) {
        case CKM_INT: snprintf(v, n, "%" PRId64, *(const int64_t *)(const void *)p); break;
        case CKM_HEX: snprintf(v, n, "%a", d[0]); break;
        case CKM_HEX4: snprintf(v, n, "%a,%a,%a,%a", d[0], d[1], d[2], d[3]); break;
        case CKM_HASH: snprintf(v, n, "%016llx", (unsigned long long)*(const uint64_t *)(const void *)p); break;
        default: out->meta[i].value = *(const char *const *)(const void *)p; break;
        }
    }
    return CKSTATE_NMETA;
}

/* n comma-separated doubles, the whole string. */
static int meta_doubles(const Ckpt *k, const char *key, double *out, int n, char *err, size_t errlen)
{
    const char *p = ckpt_meta(k, key);
    for (int i = 0; p && i < n; i++) {
        char *end;
        out[i] = strtod(p, &end);
        p = end == p || (i + 1 < n ? *end != ',' : *end != 0) ? NULL : end + 1;
    }
    return p ? 0 : log_errf(err, errlen, "%s: __metadata__.%s: missing or malformed (%d numbers)", k->path, key, n);
}

/* The keys the table reads back, by name, into s (unchecked): the integers
 * (ints 1), or the doubles (ints 0). */
static int read_meta(const Ckpt *k, CkState *s, int ints, char *err, size_t errlen)
{
    for (int i = 0; i < CKSTATE_NMETA; i++) {
        const CkMetaField *f = &ck_fields[i];
        char *p = (char *)s + f->off;
        if (!f->flags || (f->flags == CKM_OPT && !ckpt_meta(k, f->key)) || (f->type == CKM_INT) != ints) continue;
        int rc = f->type == CKM_INT ? ckpt_meta_i64(k, f->key, (int64_t *)(void *)p, err, errlen)
                                    : meta_doubles(k, f->key, (double *)(void *)p, f->type == CKM_HEX4 ? 4 : 1,
                                                   err, errlen);
        if (rc) return -1;
    }
    return 0;
}

/* The integer counters, each in its range and consistent with the others. */
static int check_counters(const Ckpt *k, const Config *c, int W, const CkState *s, char *err, size_t errlen)
{
    int64_t step = s->step, seq = s->seq, ep = s->epoch, es = s->epoch_step, done = s->epoch_done;
    int64_t seq0 = s->epoch_seq0, ws = s->world_size, bpw = s->batch_per_worker;
    int64_t opt_t = s->opt_t, rb = s->rollbacks, nf = s->nonfinite;
    const char *what = seq < 0 || seq >= MAX_COUNT ? "seq"
                     : step < 0 || step > seq ? "step"
                     : seq0 < 0 || seq0 > seq ? "epoch_seq0"
                     : done != 0 && done != 1 ? "epoch_done"
                     : opt_t < 0 || opt_t > seq ? "opt_t"
                     : rb < 0 || rb > INT32_MAX ? "rollbacks"
                     : nf < 0 || nf > seq ? "nonfinite"
                     : es < 0 || es > step ? "epoch_step" : NULL;
    if (what)
        return log_errf(err, errlen, "%s: __metadata__.%s out of range (step %lld, seq %lld, epoch_seq0 %lld, "
                   "epoch_step %lld, epoch_done %lld, opt_t %lld, rollbacks %lld, nonfinite %lld)", k->path,
                   what, (long long)step, (long long)seq, (long long)seq0, (long long)es, (long long)done,
                   (long long)opt_t, (long long)rb, (long long)nf);
    if (ep < 1 || ep > c->train_epochs || es > c->train_steps_per_epoch)
        return log_errf(err, errlen, "%s: __metadata__.epoch %lld, epoch_step %lld: not a position of train.epochs "
                   "%d x train.steps_per_epoch %d (epoch in [1, %d], epoch_step in [0, %d])", k->path,
                   (long long)ep, (long long)es, c->train_epochs, c->train_steps_per_epoch,
                   c->train_epochs, c->train_steps_per_epoch);
    int64_t B = c->data_batch_per_worker;
    if (ws < 1 || ws > MAX_RANKS || bpw < 1 || bpw > MAX_RANKS ||
        (W > 0 ? ws * bpw != (int64_t)W * B : (ws * bpw) % B != 0))
        return log_errf(err, errlen, "%s: written by %lld workers x data.batch_per_worker %lld (__metadata__."
                   "world_size, batch_per_worker: a global batch of %lld streams); this job has %d x %lld: "
                   "resume with the same global batch (on W workers: data.batch_per_worker = %lld / W)",
                   k->path, (long long)ws, (long long)bpw, (long long)(ws * bpw), W, (long long)B,
                   (long long)(ws * bpw));
    return 0;
}

static int is_count(double x, double max) { return x >= 0 && x <= max && x == floor(x); }

/* lr_scale (a product of rollback factors in (0, 1]) and the schedule state. */
static int check_scales(const Ckpt *k, const CkState *s, char *err, size_t errlen)
{
    if (!(s->lr_scale > 0 && s->lr_scale <= 1))
        return log_errf(err, errlen, "%s: __metadata__.lr_scale %g out of range (0, 1]: a product of "
                   "divergence.rollback_lr_factor", k->path, s->lr_scale);
    double best = s->sched[0], scale = s->sched[1];
    const char *what = !(best >= 0) ? "best validation loss (>= 0 or inf)"
                     : !(scale > 0 && scale <= 1) ? "plateau scale (in (0, 1])"
                     : !is_count(s->sched[2], s->epoch) ? "epochs without improvement (0..epoch)"
                     : !is_count(s->sched[3], s->epoch) ? "epochs since the best (0..epoch)" : NULL;
    if (what) return log_errf(err, errlen, "%s: __metadata__.sched: %s out of range", k->path, what);
    return 0;
}

/* A checkpoint of another seq_len resumes only where the position does not
 * depend on it: at the end of an epoch's steps (the next epoch restarts every
 * stream and the carried state). Mid-epoch, the cursors count steps of the
 * old length. Checkpoints older than the key: taken as of this seq_len. */
static int check_seq_len(const Ckpt *k, const Config *c, const CkState *s, char *err, size_t errlen)
{
    int64_t T = s->seq_len;
    if (T == -1 || T == c->data_seq_len || s->epoch_done || s->epoch_step == c->train_steps_per_epoch) return 0;
    return log_errf(err, errlen, "%s: __metadata__.seq_len %lld, the config's data.seq_len is %d: a checkpoint "
               "inside an epoch resumes only with the same data.seq_len (another one is taken at an "
               "epoch's end)", k->path, (long long)T, c->data_seq_len);
}

typedef struct {
    char name[CK_NAME_MAX];
    int dtype, ndim;
    long shape[2];
} Want;

/* Every tensor a worker reads, in the order it reads them. Returns the count. */
static int wanted(const Config *c, int W, Want *w, int max)
{
    char names[64][32];
    int np = cfg_tensor_names(c, names, 64), n = 0;
    int adam = c->train_optimizer != OPT_SGD, need_m = adam || c->train_momentum > 0;
    long WB = (long)W * c->data_batch_per_worker;
    static const char *const prefix[] = {"param.", "opt.m.", "opt.v."};
    for (int p = 0; p < 3; p++) {
        if ((p == 1 && !need_m) || (p == 2 && !adam)) continue;
        for (int i = 0; i < np && i < 64 && n < max; i++, n++) {
            snprintf(w[n].name, sizeof w[n].name, "%s%.31s", prefix[p], names[i]);
            w[n].dtype = CK_F32;
            w[n].ndim = cfg_tensor_shape(c, i, w[n].shape);
        }
    }
    if (n + 2 + 2 * c->model_layers > max) return -1;
    w[n++] = (Want){"data.streams", CK_U64, 2, {WB, STREAM_WORDS}};
    for (int l = 0; l < c->model_layers; l++)
        for (int kc = 0; kc < (c->model_kind == MODEL_LSTM ? 2 : 1); kc++, n++) {
            snprintf(w[n].name, sizeof w[n].name, "state.%s.%d", kc ? "c" : "h", l);
            w[n].dtype = CK_F32, w[n].ndim = 2, w[n].shape[0] = WB, w[n].shape[1] = c->model_hidden;
        }
    w[n++] = (Want){"detect.state", CK_U64, 1, {0, 1}}; /* length: the detector's, checked on load */
    return n;
}

static const char *shape_str(char *buf, size_t len, int ndim, const long *shape)
{
    if (ndim == 1) snprintf(buf, len, "[%ld]", shape[0]);
    else snprintf(buf, len, "[%ld, %ld]", shape[0], shape[1]);
    return buf;
}

/* The file holds exactly the wanted tensors, with their dtypes and shapes:
 * another optimizer, model or global batch is named here. */
static int check_layout(const Ckpt *k, const Want *w, int n, char *err, size_t errlen)
{
    char a[48], b[48];
    for (int i = 0; i < n; i++) {
        const CkEntry *e = ckpt_find(k, w[i].name);
        if (!e)
            return log_errf(err, errlen, "%s: no tensor '%s': written for another model or optimizer "
                       "(model.*, train.optimizer, train.momentum)", k->path, w[i].name);
        int any_len = !strcmp(w[i].name, "detect.state");
        if (e->dtype != w[i].dtype || e->ndim != w[i].ndim ||
            (!any_len && (e->shape[0] != w[i].shape[0] || e->shape[1] != w[i].shape[1])))
            return log_errf(err, errlen, "%s: tensor '%s': %s %s, this config needs %s %s", k->path, w[i].name,
                       ckpt_dtype_name(e->dtype), shape_str(a, sizeof a, e->ndim, e->shape),
                       ckpt_dtype_name(w[i].dtype), any_len ? "[n]" : shape_str(b, sizeof b, w[i].ndim, w[i].shape));
    }
    for (int j = 0; j < k->n && k->n != n; j++) {
        int known = 0;
        for (int i = 0; i < n && !known; i++) known = !strcmp(k->e[j].name, w[i].name);
        if (!known)
            return log_errf(err, errlen, "%s: tensor '%s' that this config does not use: written for another "
                       "model or optimizer (model.*, train.optimizer, train.momentum)", k->path, k->e[j].name);
    }
    return 0;
}

/* F32 values: finite, and within [lo, hi]. */
static int check_floats(const Ckpt *k, const char *name, float lo, float hi, const char *bound, char *err,
                        size_t errlen)
{
    const CkEntry *e = ckpt_find(k, name);
    const unsigned char *p = ckpt_data(k, e);
    for (size_t i = 0; i < e->nbytes / 4; i++) {
        float x;
        memcpy(&x, p + 4 * i, 4);
        if (!(x >= lo && x <= hi))
            return log_errf(err, errlen, "%s: tensor '%s': element %zu is %g, must be %s", k->path, name, i,
                       (double)x, bound);
    }
    return 0;
}

static int check_values(const Ckpt *k, const Want *w, int n, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        const char *nm = w[i].name;
        int rc = 0;
        if (!strncmp(nm, "opt.v.", 6))
            rc = check_floats(k, nm, 0, FLT_MAX, "finite and >= 0 (a second moment)", err, errlen);
        else if (!strncmp(nm, "state.h.", 8))
            rc = check_floats(k, nm, -CARRIED_H_MAX, CARRIED_H_MAX, "in [-1, 1] (a tanh-bounded hidden state)",
                              err, errlen);
        else if (w[i].dtype == CK_F32)
            rc = check_floats(k, nm, -FLT_MAX, FLT_MAX, "finite", err, errlen);
        if (rc) return -1;
    }
    return 0;
}

/* Each stream's row: RNG state (not all zero where it is used), the cursor
 * (markov: a context < V^order; text: an offset, a multiple of seq_len, at
 * most the stream's length), the last token (< V). */
static int check_streams(const Ckpt *k, const Config *c, uint64_t stream_len, char *err, size_t errlen)
{
    const CkEntry *e = ckpt_find(k, "data.streams");
    const unsigned char *p = ckpt_data(k, e);
    uint64_t nctx = 1, V = (uint64_t)c->model_vocab, T = (uint64_t)c->data_seq_len;
    for (int i = 0; c->data_source == DATA_MARKOV && i < c->data_markov_order; i++) nctx *= V;
    for (long r = 0; r < e->shape[0]; r++) {
        uint64_t o[STREAM_WORDS];
        memcpy(o, p + (size_t)r * sizeof o, sizeof o);
        const char *what = NULL;
        char bound[96];
        if (c->data_source != DATA_TEXT && !(o[0] | o[1] | o[2] | o[3])) {
            what = "RNG state", snprintf(bound, sizeof bound, "not all zero");
        } else if (c->data_source == DATA_MARKOV && o[4] >= nctx) {
            what = "Markov context", snprintf(bound, sizeof bound, "< %" PRIu64 " (model.vocab^data.markov_order)", nctx);
        } else if (c->data_source == DATA_ADDING && o[4] != 0) {
            what = "cursor", snprintf(bound, sizeof bound, "0 (the adding problem has none)");
        } else if (c->data_source == DATA_TEXT && (o[4] % T || (stream_len && o[4] > stream_len) || o[4] >= MAX_COUNT)) {
            what = "text offset", snprintf(bound, sizeof bound, "a multiple of data.seq_len %d, at most %" PRIu64,
                                           c->data_seq_len, stream_len ? stream_len : (uint64_t)MAX_COUNT);
        } else if (o[5] >= V) {
            what = "last token", snprintf(bound, sizeof bound, "< model.vocab %d", c->model_vocab);
        }
        if (what)
            return log_errf(err, errlen, "%s: tensor 'data.streams': stream %ld: %s %" PRIu64 " out of range, must be %s",
                       k->path, r, what, what[0] == 'l' ? o[5] : what[0] == 'R' ? 0 : o[4], bound);
    }
    return 0;
}

/* The detector's history is one of a detector of this divergence.window. */
static int check_detector(const Ckpt *k, const Config *c, char *err, size_t errlen)
{
    const CkEntry *e = ckpt_find(k, "detect.state");
    size_t len = detstate_len(c->divergence_window), n = (size_t)e->shape[0];
    double *v = n == len ? malloc(len * sizeof *v) : NULL;
    int rc = v ? 0 : -1;
    if (v) memcpy(v, ckpt_data(k, e), len * sizeof *v); /* U64 bits of doubles */
    if (!rc && !detstate_ok(v, len, c->divergence_window)) rc = -1;
    free(v);
    if (rc)
        return log_errf(err, errlen, "%s: tensor 'detect.state': %zu values, not a detector history of "
                   "divergence.window %d (that is %zu values, counts within the window)", k->path, n,
                   c->divergence_window, len);
    return 0;
}

int ckstate_check(const Ckpt *k, const Config *c, int W, uint64_t stream_len, CkState *s, char *err,
                  size_t errlen)
{
    enum { MAX_WANT = 3 * 64 + 2 + 2 * 16 + 1 };
    Want *w = malloc(MAX_WANT * sizeof *w);
    if (!w) return log_errf(err, errlen, "%s: out of memory", k->path);
    memset(s, 0, sizeof *s);
    s->seq_len = -1;
    int rc = read_meta(k, s, 1, err, errlen);
    if (!rc) rc = check_counters(k, c, W, s, err, errlen);
    int n = rc ? 0 : wanted(c, W > 0 ? W : s->world_size * s->batch_per_worker / c->data_batch_per_worker,
                            w, MAX_WANT);
    if (!rc && n < 0) rc = log_errf(err, errlen, "%s: the model has too many tensors", k->path);
    if (!rc) rc = check_layout(k, w, n, err, errlen);
    if (!rc) rc = read_meta(k, s, 0, err, errlen);
    if (!rc) rc = check_scales(k, s, err, errlen);
    if (!rc) rc = check_seq_len(k, c, s, err, errlen);
    if (!rc) rc = check_values(k, w, n, err, errlen);
    if (!rc) rc = check_streams(k, c, stream_len, err, errlen);
    if (!rc) rc = check_detector(k, c, err, errlen);
    free(w);
    return rc;
}
