/* load: a run directory into a Report (see report.h). One reader per file
 * over one line loop: load_steps, load_epochs, load_events, load_sessions,
 * load_tensors, each record's fields taken by step_fields, epoch_fields, ...;
 * config.yaml through common/cfg (rep_config). Input may be hostile: numbers
 * range-checked, names kept valid UTF-8, lines <= 1 MiB, 256 tensor names. */
#include "daemon/report/internal.h"
#include "common/cfg.h"
#include "common/utf8.h"
#include "daemon/records.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <jansson.h>

typedef struct {
    const char *path;
    long line;
    char *err;
    size_t errlen;
} Where;

void rep_note(Report *r, const char *fmt, ...)
{
    if (r->nnotes >= REP_NOTE_MAX) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->notes[r->nnotes++], sizeof r->notes[0], fmt, ap);
    va_end(ap);
}

/* Room for need elements in *p (cap of them), doubling; NULL when out of memory. */
static void *rep_grow(void *p, long *cap, long need, size_t size)
{
    if (need <= *cap) return p;
    long c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(p, (size_t)c * size);
    if (q) *cap = c;
    return q;
}

/* The length (1 to 4) of the well-formed UTF-8 sequence at s, 0 when s does
 * not start one; *cp the code point. The NUL that ends s stops the decoder
 * as any byte that continues no sequence does, so it reads no further. */
int rep_utf8_seq(const char *s, unsigned *cp)
{
    uint32_t c;
    size_t bad;
    int n = utf8_decode((const unsigned char *)s, 4, &c, &bad);
    if (n) *cp = c;
    return n;
}

/* dst = src, cut to at most len - 1 bytes, never inside a UTF-8 sequence. */
void rep_copy_str(char *dst, size_t len, const char *src)
{
    size_t n = 0;
    unsigned cp;
    while (src[n]) {
        int k = rep_utf8_seq(src + n, &cp);
        if (k == 0) k = 1; /* not UTF-8 (config.yaml is read raw): one byte, replaced on output */
        if (n + (size_t)k > len - 1) break;
        n += (size_t)k;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int field_err(const Where *w, const char *key, const char *what)
{
    snprintf(w->err, w->errlen, "%s:%ld: %s: %s", w->path, w->line, key, what);
    return -1;
}

/* A number or null (NAN); a missing key is NAN, or an error when need. */
static int get_num(json_t *o, const char *key, bool need, double *out, const Where *w)
{
    json_t *v = json_object_get(o, key);
    *out = NAN;
    if (!v) return need ? field_err(w, key, "missing") : 0;
    if (json_is_null(v)) return 0;
    if (!json_is_number(v)) return field_err(w, key, "expected a number or null");
    *out = json_number_value(v);
    return 0;
}

static int get_str(json_t *o, const char *key, bool need, char *out, size_t len, const Where *w)
{
    json_t *v = json_object_get(o, key);
    if (!v) return need ? field_err(w, key, "missing") : 0;
    if (!json_is_string(v)) return field_err(w, key, "expected a string");
    rep_copy_str(out, len, json_string_value(v));
    return 0;
}

static int oom(const Where *w)
{
    snprintf(w->err, w->errlen, "%s:%ld: out of memory", w->path, w->line);
    return -1;
}

/* ---- the line loop every file goes through ---- */

typedef int (*RepLineFn)(Report *r, json_t *o, const Where *w);

/* The next line of f into *buf, NUL-terminated, without its newline (*whole:
 * it had one), *len bytes: 1, or 0 at the end of the file, -1 when the line is
 * longer than REP_LINE_MAX bytes, -2 out of memory. */
static int read_line(FILE *f, char **buf, size_t *cap, size_t *len, bool *whole)
{
    size_t n = 0;
    int c;
    *whole = false;
    while ((c = getc_unlocked(f)) != EOF) {
        if (c == '\n') {
            *whole = true;
            break;
        }
        if (n >= (size_t)REP_LINE_MAX) return -1;
        if (n + 2 > *cap) {
            size_t nc = *cap ? 2 * *cap : 4096;
            char *p = realloc(*buf, nc);
            if (!p) return -2;
            *buf = p, *cap = nc;
        }
        (*buf)[n++] = (char)c;
    }
    if (n == 0 && !*whole) return 0;
    if (!*buf) { /* an empty line: still a string */
        if (!(*buf = malloc(*cap = 4096))) return -2;
    }
    (*buf)[n] = '\0';
    *len = n;
    return 1;
}

/* One JSON object per line through fn. A last line without its newline that
 * does not parse is being written, or was cut by a crash: skipped, noted. */
static int read_lines(Report *r, FILE *f, const char *name, RepLineFn fn, Where *w)
{
    char *buf = NULL;
    size_t cap = 0, len;
    bool whole;
    int rc = 0, got;
    while (rc == 0 && (got = read_line(f, &buf, &cap, &len, &whole)) != 0) {
        w->line++;
        if (got == -1) {
            snprintf(w->err, w->errlen, "%s:%ld: line longer than %ld bytes", w->path, w->line, REP_LINE_MAX);
            rc = -1;
            break;
        }
        if (got == -2) {
            rc = oom(w);
            break;
        }
        if (strspn(buf, " \t\r") == len) continue;
        json_error_t je;
        json_t *o = json_loadb(buf, (size_t)len, 0, &je);
        if (!o && !whole) {
            rep_note(r, "ignored a partial last line in %s (line %ld)", name, w->line);
            break;
        }
        if (!o) {
            snprintf(w->err, w->errlen, "%s:%ld:%d: invalid JSON: %s", w->path, w->line, je.column,
                     je.text);
            rc = -1;
        } else if (!json_is_object(o)) {
            snprintf(w->err, w->errlen, "%s:%ld: expected one JSON object per line", w->path, w->line);
            rc = -1;
        } else {
            rc = fn(r, o, w);
        }
        json_decref(o);
    }
    free(buf);
    return rc;
}

/* RUN_DIR/name line by line; *found false when the file is absent (not an
 * error). 0, or -1 on an unreadable file or a malformed line, with err filled. */
static int read_jsonl(Report *r, const char *name, RepLineFn fn, bool *found, char *err, size_t errlen)
{
    char path[REP_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", r->dir, name);
    FILE *f = fopen(path, "r");
    *found = f != NULL;
    if (!f) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    Where w = {path, 0, err, errlen};
    errno = 0;
    int rc = read_lines(r, f, name, fn, &w);
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno ? errno : EIO));
        rc = -1;
    }
    fclose(f);
    return rc;
}

/* ---- steps.jsonl: load_steps ---- */

/* One line's fields through its record table (daemon/records.h) into rec,
 * an error as "PATH:LINE: KEY: what". */
static int record_fields(const RecSchema *schema, void *rec, json_t *o, const Where *w)
{
    char why[256];
    if (rec_parse(schema, rec, o, why, sizeof why) == 0) return 0;
    snprintf(w->err, w->errlen, "%s:%ld: %s", w->path, w->line, why);
    return -1;
}

/* The fields of one steps.jsonl line into *s (its defaults set by the caller). */
static int step_fields(json_t *o, RepStep *s, const Where *w)
{
    StepLine l;
    rec_clear(&rec_step, &l);
    l.r.seq = s->seq, l.r.tokens = s->tokens, l.time = s->time;
    if (record_fields(&rec_step, &l, o, w)) return -1;
    s->step = l.r.step, s->epoch = l.r.epoch, s->seq = l.r.seq, s->tokens = l.r.tokens;
    s->loss = l.r.loss, s->norm = l.r.grad_norm, s->coef = l.r.clip_coef, s->lr = l.r.lr;
    s->step_ms = l.r.step_ms, s->clipped = l.r.clipped, s->skipped = l.r.skipped, s->time = l.time;
    return 0;
}

/* A line of steps.jsonl appended: seq (one past the last when absent) grows. */
static int step_line(Report *r, json_t *o, const Where *w)
{
    RepStep s = {.seq = r->nst ? r->st[r->nst - 1].seq + 1 : 1, .time = NAN};
    if (step_fields(o, &s, w)) return -1;
    if (r->nst && s.seq <= r->st[r->nst - 1].seq) {
        char what[96];
        snprintf(what, sizeof what, "%lld does not follow %lld (seq never repeats)",
                 (long long)s.seq, (long long)r->st[r->nst - 1].seq);
        return field_err(w, "seq", what);
    }
    if (s.seq > REP_SEQ_MAX) return field_err(w, "seq", "missing, and the one before is the largest allowed");
    RepStep *p = rep_grow(r->st, &r->capst, r->nst + 1, sizeof *p);
    if (!p) return oom(w);
    r->st = p;
    r->st[r->nst++] = s;
    return 0;
}

/* RUN_DIR/steps.jsonl into r->st: it must be there (it makes a run directory). */
static int load_steps(Report *r, char *err, size_t errlen)
{
    bool found;
    if (read_jsonl(r, "steps.jsonl", step_line, &found, err, errlen)) return -1;
    if (!found)
        return snprintf(err, errlen, "%s/steps.jsonl: no such file: %s is not a clipd run directory", r->dir,
                        r->dir), -1;
    return 0;
}

/* ---- epochs.jsonl: load_epochs ---- */

/* The fields of one epochs.jsonl line into *e (zeroed by the caller). */
static int epoch_fields(json_t *o, RepEpoch *e, const Where *w)
{
    EpochLine l;
    rec_clear(&rec_epoch, &l);
    if (record_fields(&rec_epoch, &l, o, w)) return -1;
    e->epoch = l.epoch, e->steps = l.s.steps, e->clipped = l.s.clipped, e->skipped = l.s.skipped;
    e->train_loss = l.s.train_loss, e->clip_rate = l.s.clip_rate, e->p50 = l.s.norm_p50;
    e->p90 = l.s.norm_p90, e->max = l.s.norm_max, e->val_loss = l.val_loss, e->lr = l.lr;
    e->tokens_per_s = l.s.tokens_per_s, e->seconds = l.s.seconds;
    if (l.clip_state) rep_copy_str(e->clip_state, sizeof e->clip_state, l.clip_state);
    return 0;
}

static int epoch_line(Report *r, json_t *o, const Where *w)
{
    RepEpoch e = {0};
    if (epoch_fields(o, &e, w)) return -1;
    RepEpoch *p = rep_grow(r->ep, &r->capep, r->nep + 1, sizeof *p);
    if (!p) return oom(w);
    r->ep = p;
    r->ep[r->nep++] = e;
    return 0;
}

/* RUN_DIR/epochs.jsonl into r->ep; absent: noted, has_epochs false. */
static int load_epochs(Report *r, char *err, size_t errlen)
{
    return read_jsonl(r, "epochs.jsonl", epoch_line, &r->has_epochs, err, errlen);
}

/* ---- events.jsonl: load_events ---- */

/* tensor_norms of an event: the largest and its share of the squared sum. */
static int event_tensors(RepEvent *e, json_t *a, const Where *w)
{
    if (!json_is_array(a)) return field_err(w, "tensor_norms", "expected an array");
    double sum = 0;
    size_t i;
    json_t *t;
    json_array_foreach(a, i, t) {
        char name[REP_NAME_MAX] = "";
        double norm;
        if (!json_is_object(t)) return field_err(w, "tensor_norms", "expected {tensor, norm} objects");
        if (get_str(t, "tensor", true, name, sizeof name, w) || get_num(t, "norm", true, &norm, w))
            return -1;
        sum += norm * norm;
        /* The first tensor whose norm is not finite holds the NaN or Inf: it is the
         * culprit, however large the finite ones; else the largest finite norm. */
        bool bad = !isfinite(norm), had_bad = e->top[0] && !isfinite(e->top_norm);
        if (!had_bad && (bad || !(norm <= e->top_norm))) {
            e->top_norm = norm;
            rep_copy_str(e->top, sizeof e->top, name);
        }
    }
    if (e->top[0] && !isfinite(e->top_norm)) e->top_share = 1; /* all of a non-finite norm */
    else if (e->top[0]) e->top_share = isfinite(sum) && sum > 0 ? e->top_norm * e->top_norm / sum : NAN;
    return 0;
}

/* The index of an event kind in r->kinds, counted; kinds past REP_KINDS share the last. */
static int event_kind(Report *r, const char *kind)
{
    int k = 0;
    while (k < r->nkinds && strcmp(r->kinds[k], kind) != 0) k++;
    if (k == REP_KINDS) k--;
    else if (k == r->nkinds) rep_copy_str(r->kinds[r->nkinds++], sizeof r->kinds[0], kind);
    r->kind_count[k]++;
    return k;
}

/* The fields of one events.jsonl line into *e (its defaults set by the
 * caller), tensor_norms reduced to the largest. */
static int event_fields(json_t *o, RepEvent *e, const Where *w)
{
    EventLine l;
    rec_clear(&rec_event, &l);
    l.rollback_to = e->rollback_to;
    if (record_fields(&rec_event, &l, o, w)) return -1;
    e->seq = l.seq, e->step = l.step, e->epoch = l.epoch, e->value = l.value;
    e->threshold = l.threshold, e->rollback_to = l.rollback_to;
    rep_copy_str(e->kind, sizeof e->kind, l.kind);
    if (l.action) rep_copy_str(e->action, sizeof e->action, l.action);
    json_t *tn = json_object_get(o, "tensor_norms");
    return tn ? event_tensors(e, tn, w) : 0;
}

static int event_line(Report *r, json_t *o, const Where *w)
{
    RepEvent e = {.rollback_to = -1, .top_norm = NAN, .top_share = NAN};
    if (event_fields(o, &e, w)) return -1;
    e.kind_idx = event_kind(r, e.kind);
    RepEvent *p = rep_grow(r->ev, &r->capev, r->nev + 1, sizeof *p);
    if (!p) return oom(w);
    r->ev = p;
    r->ev[r->nev++] = e;
    return 0;
}

/* RUN_DIR/events.jsonl into r->ev, kinds counted; absent: has_events false. */
static int load_events(Report *r, char *err, size_t errlen)
{
    return read_jsonl(r, "events.jsonl", event_line, &r->has_events, err, errlen);
}

/* ---- sessions.jsonl: load_sessions ---- */

/* The fields of one sessions.jsonl line into *s (time NAN by the caller). */
static int session_fields(json_t *o, RepSession *s, const Where *w)
{
    SessionLine l;
    rec_clear(&rec_session, &l);
    l.time = s->time;
    if (record_fields(&rec_session, &l, o, w)) return -1;
    rep_copy_str(s->kind, sizeof s->kind, l.kind);
    if (l.how) rep_copy_str(s->how, sizeof s->how, l.how);
    s->seq = l.seq, s->step = l.step, s->time = l.time;
    return 0;
}

static int session_line(Report *r, json_t *o, const Where *w)
{
    RepSession s = {.time = NAN};
    if (session_fields(o, &s, w)) return -1;
    if (r->nses == REP_SESSIONS) return r->more_ses++, 0;
    RepSession *p = rep_grow(r->ses, &r->capses, r->nses + 1, sizeof *p);
    if (!p) return oom(w);
    r->ses = p;
    r->ses[r->nses++] = s;
    return 0;
}

/* RUN_DIR/sessions.jsonl into r->ses (absent in runs before it existed). */
static int load_sessions(Report *r, char *err, size_t errlen)
{
    bool found;
    return read_jsonl(r, "sessions.jsonl", session_line, &found, err, errlen);
}

/* ---- tensors.jsonl: load_tensors ---- */

/* The index of a tensor name in the table, added when new; -1 out of memory,
 * -2 past REP_TENSOR_NAMES names. Rows name their tensors in the same order,
 * so the name at a row's position hint is looked at first. */
static int tensor_index(RepTensors *t, const char *name, long hint)
{
    char key[REP_NAME_MAX];
    rep_copy_str(key, sizeof key, name); /* as stored: a longer name is cut */
    if (hint < t->nnames && strcmp(t->names[hint], key) == 0) return (int)hint;
    for (int i = 0; i < t->nnames; i++)
        if (strcmp(t->names[i], key) == 0) return i;
    if (t->nnames >= REP_TENSOR_NAMES) return -2;
    long cap = t->capnames;
    char(*p)[REP_NAME_MAX] = rep_grow(t->names, &cap, t->nnames + 1, sizeof *p);
    if (!p) return -1;
    t->names = p, t->capnames = (int)cap;
    memcpy(t->names[t->nnames], key, sizeof key);
    return t->nnames++;
}

/* A line of tensors.jsonl, {seq, step, norms: {tensor: norm}}: a row of
 * (tensor index, squared norm) entries; seq grows. */
static int tensors_line(Report *r, json_t *o, const Where *w)
{
    RepTensors *t = &r->t;
    RepTRow row = {.first = t->nent};
    json_t *norms = json_object_get(o, "norms");
    TensorLine l;
    rec_clear(&rec_tensor, &l);
    if (record_fields(&rec_tensor, &l, o, w)) return -1;
    row.seq = l.seq, row.step = l.step;
    if (t->nrows && row.seq <= t->rows[t->nrows - 1].seq) {
        char what[96];
        snprintf(what, sizeof what, "%lld does not follow %lld (seq never repeats)",
                 (long long)row.seq, (long long)t->rows[t->nrows - 1].seq);
        return field_err(w, "seq", what);
    }
    if (!norms) return field_err(w, "norms", "missing");
    if (!json_is_object(norms)) return field_err(w, "norms", "expected an object {tensor: norm}");
    const char *name;
    json_t *v;
    json_object_foreach(norms, name, v) {
        if (!json_is_number(v) && !json_is_null(v)) return field_err(w, name, "expected a number or null");
        double x = json_is_null(v) ? NAN : json_number_value(v);
        int idx = tensor_index(t, name, t->nent - row.first);
        if (idx == -2) {
            char what[64];
            snprintf(what, sizeof what, "more than %d distinct tensor names", REP_TENSOR_NAMES);
            return field_err(w, "norms", what);
        }
        RepTEnt *p = idx < 0 ? NULL : rep_grow(t->ent, &t->capent, t->nent + 1, sizeof *p);
        if (!p) return oom(w);
        t->ent = p;
        t->ent[t->nent++] = (RepTEnt){idx, x * x};
        row.sumsq += x * x;
    }
    row.n = t->nent - row.first;
    RepTRow *p = rep_grow(t->rows, &t->caprows, t->nrows + 1, sizeof *p);
    if (!p) return oom(w);
    t->rows = p;
    t->rows[t->nrows++] = row;
    return 0;
}

/* RUN_DIR/tensors.jsonl into r->t; has_tensors when it holds a row. */
static int load_tensors(Report *r, char *err, size_t errlen)
{
    bool found;
    int rc = read_jsonl(r, "tensors.jsonl", tensors_line, &found, err, errlen);
    r->has_tensors = rc == 0 && found && r->t.nrows > 0;
    return rc;
}

int rep_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The clip threshold c of clipped steps is coef x norm (coef = c / norm):
 * the median over them, when they agree to 1e-4. */
static double infer_max_norm(const Report *r)
{
    double *v = malloc((size_t)(r->nst ? r->nst : 1) * sizeof *v);
    long n = 0;
    for (long i = 0; v && i < r->nst; i++) {
        const RepStep *s = &r->st[i];
        if (s->clipped && isfinite(s->coef) && isfinite(s->norm) && s->coef > 0 && s->coef < 1)
            v[n++] = s->coef * s->norm;
    }
    double c = NAN;
    if (n > 0) {
        qsort(v, (size_t)n, sizeof *v, rep_cmp_double);
        if (v[n - 1] - v[0] <= 1e-4 * v[n / 2]) c = v[n / 2];
    }
    free(v);
    return c;
}

/* Run name, clip mode and threshold from RUN_DIR/config.yaml, read by the
 * project's loader (common/cfg.c) leniently: a config.yaml from another clipd
 * version may hold keys this one does not know (skipped, with a note) or lack
 * some (their defaults). No config.yaml: the name is the directory's, the
 * mode global_norm. 0, or -1 with err filled (`path:line:col: key: what`)
 * when the file is there but malformed. */
static int rep_config_load(Report *r, Config *c, bool *have, char *err, size_t errlen)
{
    char path[REP_PATH_MAX + 32], skipped[256];
    struct stat sb;
    int nskipped;
    snprintf(path, sizeof path, "%s/config.yaml", r->dir);
    cfg_defaults(c);
    *have = !(stat(path, &sb) != 0 && errno == ENOENT);
    if (!*have) return 0;
    if (cfg_load_file_lenient(c, path, &nskipped, skipped, sizeof skipped, err, errlen) != CFG_OK) return -1;
    if (nskipped)
        rep_note(r, "%s: %d key%s unknown to this clipd-report skipped (a config of another clipd version?)",
                 skipped, nskipped, nskipped == 1 ? "" : "s");
    return 0;
}

/* Threshold: --max-norm, else config.yaml's clip.max_norm in a norm mode,
 * else (no config.yaml) inferred from the clipped steps. */
static int rep_config(Report *r, double max_norm, char *err, size_t errlen)
{
    Config *c = malloc(sizeof *c);
    bool have;
    if (!c) {
        snprintf(err, errlen, "%s/config.yaml: out of memory", r->dir);
        return -1;
    }
    if (rep_config_load(r, c, &have, err, errlen)) {
        free(c);
        return -1;
    }
    const char *base = strrchr(r->dir, '/');
    rep_copy_str(r->name, sizeof r->name, have ? c->run_name : base && base[1] ? base + 1 : r->dir);
    snprintf(r->clip_mode, sizeof r->clip_mode, "%s", cfg_clip_name(c->clip_mode));
    r->squared_error = have && c->data_source == DATA_ADDING;
    r->max_norm = NAN;
    if (isfinite(max_norm)) {
        r->max_norm = max_norm;
        snprintf(r->max_norm_src, sizeof r->max_norm_src, "--max-norm");
    } else if (have && (c->clip_mode == CLIP_GLOBAL_NORM || c->clip_mode == CLIP_PER_TENSOR)) {
        r->max_norm = c->clip_max_norm;
        snprintf(r->max_norm_src, sizeof r->max_norm_src, "config.yaml");
    } else if (!have) {
        r->max_norm = infer_max_norm(r);
        if (isfinite(r->max_norm))
            snprintf(r->max_norm_src, sizeof r->max_norm_src, "clip_coef x grad_norm");
    }
    free(c);
    return 0;
}

/* The run's .jsonl files, one reader each. */
static int load_logs(Report *r, char *err, size_t errlen)
{
    if (load_steps(r, err, errlen) || load_epochs(r, err, errlen) || load_events(r, err, errlen) ||
        load_tensors(r, err, errlen) || load_sessions(r, err, errlen))
        return -1;
    if (!r->has_epochs) rep_note(r, "no epochs.jsonl");
    if (!r->has_events) rep_note(r, "no events.jsonl");
    return 0;
}

/* Where each epoch line's last step sits on the seq axis. */
static void link_epochs(Report *r)
{
    int maxe = 0;
    for (long i = 0; i < r->nep; i++)
        if (r->ep[i].epoch > maxe) maxe = r->ep[i].epoch;
    int64_t *last = calloc((size_t)maxe + 1, sizeof *last);
    if (!last) return;
    for (long i = 0; i < r->nst; i++)
        if (r->st[i].epoch <= maxe) last[r->st[i].epoch] = r->st[i].seq;
    for (long i = 0; i < r->nep; i++) r->ep[i].end_seq = last[r->ep[i].epoch];
    free(last);
}

int rep_load(Report *r, const char *dir, double max_norm, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    if (n >= sizeof r->dir) {
        snprintf(err, errlen, "%.64s...: path too long", dir);
        return -1;
    }
    snprintf(r->dir, sizeof r->dir, "%.*s", (int)n, dir);
    struct stat sb;
    if (stat(r->dir, &sb) != 0) {
        snprintf(err, errlen, "%s: %s", r->dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "%s: not a directory (expected a clipd run directory)", r->dir);
        return -1;
    }
    if (load_logs(r, err, errlen)) return -1;
    char path[REP_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/final.safetensors", r->dir);
    r->finished = stat(path, &sb) == 0;
    link_epochs(r);
    return rep_config(r, max_norm, err, errlen);
}

void rep_free(Report *r)
{
    free(r->st);
    free(r->ep);
    free(r->ev);
    free(r->ses);
    free(r->t.names);
    free(r->t.rows);
    free(r->t.ent);
    memset(r, 0, sizeof *r);
}

