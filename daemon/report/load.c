/* report: the clipd-report tool (see report.h). Reading a run directory into
 * a Report, a summary of it, and three outputs: text, JSON (jansson) and SVG.
 * Exit 0 on success or an empty run, 2 when the input is not a readable run
 * (one line naming the file and line), 1 when the SVG or standard output
 * cannot be written. The files may be hostile: text from them is escaped and
 * kept valid UTF-8, numbers are range-checked, and the work and the output
 * stay linear in the input (lines up to 1 MiB, 256 tensor names). */
#include "daemon/report/report.h"
#include "daemon/stats.h"

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

#define REP_LIST_CAP 8    /* steps listed per event kind in the text */
#define REP_EPOCH_ROWS 20 /* epoch table rows before the middle is elided */
#define REP_LINE_MAX (1L << 20)      /* bytes in one line of a .jsonl file */
#define REP_SEQ_MAX (INT64_C(1) << 53) /* seq and step numbers: exact as doubles on the step axis */
#define REP_EPOCH_MAX 10000000       /* epoch numbers (a table is indexed by them) */
#define REP_TENSOR_NAMES 256         /* distinct tensor names in tensors.jsonl */

/* ------------------------------------------------------------------ reading */

typedef struct {
    const char *path;
    long line;
    char *err;
    size_t errlen;
} Where;

static void rep_note(Report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rep_note(Report *r, const char *fmt, ...)
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
 * not start one (a stray or truncated byte, an overlong form, a surrogate, past
 * U+10FFFF); *cp the code point. */
static int utf8_seq(const char *s, unsigned *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    unsigned c = u[0];
    int n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n == 0) return 0;
    if (n > 1) c &= 0x3f >> (n - 1);
    for (int i = 1; i < n; i++) {
        if ((u[i] & 0xc0) != 0x80) return 0;
        c = c << 6 | (u[i] & 0x3f);
    }
    if ((n == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) || (n == 4 && (c < 0x10000 || c > 0x10ffff)))
        return 0;
    *cp = c;
    return n;
}

/* dst = src, cut to at most len - 1 bytes, never inside a UTF-8 sequence. */
static void copy_str(char *dst, size_t len, const char *src)
{
    size_t n = 0;
    unsigned cp;
    while (src[n]) {
        int k = utf8_seq(src + n, &cp);
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

/* An integer in [lo, hi]; a missing key leaves *out, or is an error when need. */
static int get_int(json_t *o, const char *key, bool need, int64_t lo, int64_t hi, int64_t *out,
                   const Where *w)
{
    json_t *v = json_object_get(o, key);
    if (!v) return need ? field_err(w, key, "missing") : 0;
    if (!json_is_integer(v)) return field_err(w, key, "expected an integer");
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        char what[96];
        snprintf(what, sizeof what, "%lld out of range [%lld, %lld]", (long long)x, (long long)lo,
                 (long long)hi);
        return field_err(w, key, what);
    }
    *out = (int64_t)x;
    return 0;
}

static int get_bool(json_t *o, const char *key, bool *out, const Where *w)
{
    json_t *v = json_object_get(o, key);
    *out = false;
    if (!v) return 0;
    if (!json_is_boolean(v)) return field_err(w, key, "expected true or false");
    *out = json_is_true(v);
    return 0;
}

static int get_str(json_t *o, const char *key, bool need, char *out, size_t len, const Where *w)
{
    json_t *v = json_object_get(o, key);
    if (!v) return need ? field_err(w, key, "missing") : 0;
    if (!json_is_string(v)) return field_err(w, key, "expected a string");
    copy_str(out, len, json_string_value(v));
    return 0;
}

static int oom(const Where *w)
{
    snprintf(w->err, w->errlen, "%s:%ld: out of memory", w->path, w->line);
    return -1;
}

static int on_step(Report *r, json_t *o, const Where *w)
{
    RepStep s = {.seq = r->nst ? r->st[r->nst - 1].seq + 1 : 1, .time = NAN};
    int64_t ep = 0;
    if (get_int(o, "step", true, 0, REP_SEQ_MAX, &s.step, w) ||
        get_int(o, "epoch", true, 0, REP_EPOCH_MAX, &ep, w) ||
        get_int(o, "seq", false, 1, REP_SEQ_MAX, &s.seq, w) ||
        get_int(o, "tokens", false, 0, INT64_MAX, &s.tokens, w) ||
        get_num(o, "loss", true, &s.loss, w) || get_num(o, "grad_norm", true, &s.norm, w) ||
        get_num(o, "clip_coef", false, &s.coef, w) || get_num(o, "lr", false, &s.lr, w) ||
        get_num(o, "step_ms", false, &s.step_ms, w) || get_bool(o, "clipped", &s.clipped, w) ||
        get_bool(o, "skipped", &s.skipped, w) || get_num(o, "time", false, &s.time, w))
        return -1;
    s.epoch = (int)ep;
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

static int on_epoch(Report *r, json_t *o, const Where *w)
{
    RepEpoch e = {0};
    int64_t ep = 0;
    if (get_int(o, "epoch", true, 0, REP_EPOCH_MAX, &ep, w) ||
        get_int(o, "steps", false, 0, INT64_MAX, &e.steps, w) ||
        get_int(o, "clipped_steps", false, 0, INT64_MAX, &e.clipped, w) ||
        get_int(o, "skipped_steps", false, 0, INT64_MAX, &e.skipped, w) ||
        get_num(o, "train_loss", false, &e.train_loss, w) ||
        get_num(o, "clip_rate", true, &e.clip_rate, w) ||
        get_num(o, "grad_norm_p50", false, &e.p50, w) ||
        get_num(o, "grad_norm_p90", false, &e.p90, w) ||
        get_num(o, "grad_norm_max", false, &e.max, w) ||
        get_num(o, "val_loss", false, &e.val_loss, w) || get_num(o, "lr", false, &e.lr, w) ||
        get_num(o, "tokens_per_s", false, &e.tokens_per_s, w) ||
        get_num(o, "seconds", false, &e.seconds, w) ||
        get_str(o, "clip_state", false, e.clip_state, sizeof e.clip_state, w))
        return -1;
    e.epoch = (int)ep;
    RepEpoch *p = rep_grow(r->ep, &r->capep, r->nep + 1, sizeof *p);
    if (!p) return oom(w);
    r->ep = p;
    r->ep[r->nep++] = e;
    return 0;
}

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
            copy_str(e->top, sizeof e->top, name);
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
    else if (k == r->nkinds) copy_str(r->kinds[r->nkinds++], sizeof r->kinds[0], kind);
    r->kind_count[k]++;
    return k;
}

static int on_event(Report *r, json_t *o, const Where *w)
{
    RepEvent e = {.rollback_to = -1, .top_norm = NAN, .top_share = NAN};
    int64_t ep = 0;
    if (get_int(o, "seq", true, 0, REP_SEQ_MAX, &e.seq, w) ||
        get_int(o, "step", true, 0, REP_SEQ_MAX, &e.step, w) ||
        get_int(o, "epoch", false, 0, REP_EPOCH_MAX, &ep, w) ||
        get_str(o, "kind", true, e.kind, sizeof e.kind, w) ||
        get_str(o, "action", false, e.action, sizeof e.action, w) ||
        get_num(o, "value", false, &e.value, w) || get_num(o, "threshold", false, &e.threshold, w) ||
        get_int(o, "rollback_to", false, 0, REP_SEQ_MAX, &e.rollback_to, w))
        return -1;
    e.epoch = (int)ep;
    e.kind_idx = event_kind(r, e.kind);
    json_t *tn = json_object_get(o, "tensor_norms");
    if (tn && event_tensors(&e, tn, w)) return -1;
    RepEvent *p = rep_grow(r->ev, &r->capev, r->nev + 1, sizeof *p);
    if (!p) return oom(w);
    r->ev = p;
    r->ev[r->nev++] = e;
    return 0;
}

static int on_session(Report *r, json_t *o, const Where *w)
{
    RepSession s = {.time = NAN};
    if (get_str(o, "kind", true, s.kind, sizeof s.kind, w) || get_int(o, "seq", true, 0, REP_SEQ_MAX, &s.seq, w) ||
        get_int(o, "step", true, 0, REP_SEQ_MAX, &s.step, w) || get_str(o, "how", false, s.how, sizeof s.how, w) ||
        get_num(o, "time", false, &s.time, w))
        return -1;
    if (r->nses == REP_SESSIONS) return r->more_ses++, 0;
    RepSession *p = rep_grow(r->ses, &r->capses, r->nses + 1, sizeof *p);
    if (!p) return oom(w);
    r->ses = p;
    r->ses[r->nses++] = s;
    return 0;
}

/* The index of a tensor name in the table, added when new; -1 out of memory,
 * -2 past REP_TENSOR_NAMES names. Rows name their tensors in the same order,
 * so the name at a row's position hint is looked at first. */
static int tensor_index(RepTensors *t, const char *name, long hint)
{
    char key[REP_NAME_MAX];
    copy_str(key, sizeof key, name); /* as stored: a longer name is cut */
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

static int on_tensors(Report *r, json_t *o, const Where *w)
{
    RepTensors *t = &r->t;
    RepTRow row = {.first = t->nent};
    json_t *norms = json_object_get(o, "norms");
    if (get_int(o, "seq", true, 0, REP_SEQ_MAX, &row.seq, w) ||
        get_int(o, "step", false, 0, REP_SEQ_MAX, &row.step, w))
        return -1;
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

/* RUN_DIR/name line by line: 1 when the file is absent, 0 when read, -1 on
 * an unreadable file or a malformed line, with err filled. */
static int read_jsonl(Report *r, const char *name, RepLineFn fn, char *err, size_t errlen)
{
    char path[REP_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", r->dir, name);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return 1;
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

int rep_yaml_scan(const char *path, const char *section, const char *key, char *out, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[2048];
    size_t sl = strlen(section), kl = strlen(key);
    bool in = false;
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        size_t ll = strlen(line);
        if (ll == sizeof line - 1 && line[ll - 1] != '\n') { /* a longer line: its rest is no line */
            int c;
            while ((c = getc(f)) != EOF && c != '\n') {}
        }
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] != ' ' && line[0] != '#' && line[0] != '\0')
            in = strncmp(line, section, sl) == 0 && line[sl] == ':';
        const char *p = line + strspn(line, " ");
        if (!in || p == line || strncmp(p, key, kl) != 0 || p[kl] != ':') continue;
        p += kl + 1;
        p += strspn(p, " \t");
        size_t n;
        if (*p == '"' || *p == '\'') {
            const char *q = strchr(p + 1, *p);
            n = q ? (size_t)(q - p - 1) : strlen(p + 1);
            p++;
        } else {
            const char *hash = strstr(p, " #");
            n = hash ? (size_t)(hash - p) : strlen(p);
            while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
        }
        snprintf(out, len, "%.*s", (int)n, p);
        found = 1;
    }
    fclose(f);
    return found;
}

static int cmp_double(const void *a, const void *b)
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
        qsort(v, (size_t)n, sizeof *v, cmp_double);
        if (v[n - 1] - v[0] <= 1e-4 * v[n / 2]) c = v[n / 2];
    }
    free(v);
    return c;
}

/* Run name, clip mode and threshold: --max-norm, else config.yaml, else
 * inferred from the clipped steps. */
static void rep_config(Report *r, double max_norm)
{
    char path[REP_PATH_MAX + 32], val[256];
    snprintf(path, sizeof path, "%s/config.yaml", r->dir);
    const char *base = strrchr(r->dir, '/');
    copy_str(r->name, sizeof r->name, base && base[1] ? base + 1 : r->dir);
    r->max_norm = NAN;
    snprintf(r->clip_mode, sizeof r->clip_mode, "global_norm");
    int have_cfg = rep_yaml_scan(path, "run", "name", val, sizeof val);
    if (have_cfg == 1 && val[0]) copy_str(r->name, sizeof r->name, val);
    if (have_cfg >= 0 && rep_yaml_scan(path, "clip", "mode", val, sizeof val) == 1)
        copy_str(r->clip_mode, sizeof r->clip_mode, val);
    r->squared_error = have_cfg >= 0 && rep_yaml_scan(path, "data", "source", val, sizeof val) == 1 &&
                       !strcmp(val, "adding");
    if (isfinite(max_norm)) {
        r->max_norm = max_norm;
        snprintf(r->max_norm_src, sizeof r->max_norm_src, "--max-norm");
    } else if (have_cfg >= 0 && rep_yaml_scan(path, "clip", "max_norm", val, sizeof val) == 1) {
        char *end;
        errno = 0;
        double x = strtod(val, &end);
        if (end == val || *end || errno || !(x > 0) || !isfinite(x))
            rep_note(r, "%s: clip.max_norm: \"%s\" is not a positive number; ignored", path, val);
        else if (strcmp(r->clip_mode, "global_norm") == 0 || strcmp(r->clip_mode, "per_tensor") == 0)
            r->max_norm = x, snprintf(r->max_norm_src, sizeof r->max_norm_src, "config.yaml");
    } else if (have_cfg < 0) {
        r->max_norm = infer_max_norm(r);
        if (isfinite(r->max_norm))
            snprintf(r->max_norm_src, sizeof r->max_norm_src, "clip_coef x grad_norm");
    }
}

static int load_logs(Report *r, char *err, size_t errlen)
{
    int rc = read_jsonl(r, "steps.jsonl", on_step, err, errlen);
    if (rc == 1) {
        snprintf(err, errlen, "%s/steps.jsonl: no such file: %s is not a clipd run directory",
                 r->dir, r->dir);
        return -1;
    }
    if (rc) return -1;
    if ((rc = read_jsonl(r, "epochs.jsonl", on_epoch, err, errlen)) < 0) return -1;
    r->has_epochs = rc == 0;
    if ((rc = read_jsonl(r, "events.jsonl", on_event, err, errlen)) < 0) return -1;
    r->has_events = rc == 0;
    if ((rc = read_jsonl(r, "tensors.jsonl", on_tensors, err, errlen)) < 0) return -1;
    r->has_tensors = rc == 0 && r->t.nrows > 0;
    if (read_jsonl(r, "sessions.jsonl", on_session, err, errlen) < 0) return -1;
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
    rep_config(r, max_norm);
    return 0;
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

/* ---------------------------------------------------------------- numerics */

void rep_smooth(double *out, const double *y, long n, long w)
{
    long h = w / 2;
    double sum = 0;
    long cnt = 0, lo = 0, hi = 0; /* the window is y[lo, hi) */
    for (long i = 0; i < n; i++) {
        long a = i - h > 0 ? i - h : 0, b = i + h + 1 < n ? i + h + 1 : n;
        for (; hi < b; hi++)
            if (isfinite(y[hi])) sum += y[hi], cnt++;
        for (; lo < a; lo++)
            if (isfinite(y[lo])) sum -= y[lo], cnt--;
        out[i] = cnt ? sum / (double)cnt : NAN;
        if (cnt == 0) sum = 0; /* no drift carried across a gap */
    }
}

void rep_window_rate(double *out, const bool *flag, long n, long w)
{
    long set = 0;
    for (long i = 0; i < n; i++) {
        set += flag[i];
        if (i >= w) set -= flag[i - w];
        long k = i + 1 < w ? i + 1 : w;
        out[i] = (double)set / (double)k;
    }
}

/* The pixel column of x on [x0, x1] in cols columns, clamped; 0 for NAN. */
static int column(double x, double x0, double x1, int cols)
{
    double c = floor((x - x0) / (x1 - x0) * cols);
    return !(c >= 0) ? 0 : c >= cols ? cols - 1 : (int)c;
}

long rep_decimate(double *ox, double *oy, const double *x, const double *y, long n,
                  double x0, double x1, int cols)
{
    long m = 0, i = 0;
    while (i < n) {
        if (!isfinite(y[i])) {
            i++;
            continue;
        }
        int c = column(x[i], x0, x1, cols);
        long lo = i, hi = i, j = i + 1;
        for (; j < n && column(x[j], x0, x1, cols) == c; j++) {
            if (!isfinite(y[j])) continue;
            if (y[j] < y[lo]) lo = j;
            if (y[j] > y[hi]) hi = j;
        }
        long a = lo < hi ? lo : hi, b = lo < hi ? hi : lo;
        ox[m] = x[a], oy[m++] = y[a];
        if (b != a) ox[m] = x[b], oy[m++] = y[b];
        i = j;
    }
    return m;
}

int rep_ticks(double *t, int max, double lo, double hi, int target)
{
    if (!(hi > lo) || !isfinite(lo) || !isfinite(hi) || target < 1) return 0;
    double raw = (hi - lo) / target, mag = pow(10, floor(log10(raw))), step = 10 * mag;
    static const double mult[] = {1, 2, 2.5, 5};
    for (int i = 0; i < 4; i++)
        if (mult[i] * mag >= raw) {
            step = mult[i] * mag;
            break;
        }
    int n = 0;
    for (double k = ceil(lo / step - 1e-9); n < max && k * step <= hi + 1e-9 * step && k + 1 != k; k++)
        t[n++] = fabs(k * step) < 1e-12 * step ? 0 : k * step;
    return n;
}

int rep_log_ticks(double *t, int max, double lo, double hi)
{
    static const double m9[] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, m3[] = {1, 2, 5};
    const double *m = hi - lo < 1.2 ? m9 : m3;
    int nm = hi - lo < 1.2 ? 9 : hi - lo < 2.5 ? 3 : 1, n = 0;
    double every = fmax(1, ceil((hi - lo) / 8)); /* decades between ticks on a wide axis */
    for (double d = floor(lo / every) * every; d <= ceil(hi) && n < max; d += every)
        for (int k = 0; k < nm && n < max; k++) {
            double v = m[k] * pow(10, d);
            if (log10(v) >= lo - 1e-9 && log10(v) <= hi + 1e-9) t[n++] = v;
        }
    return n;
}

/* ----------------------------------------------------------------- summary */

/* Validation losses, and the epoch still in progress: the last step's epoch
 * when epochs.jsonl has no line for it yet. */
static void summarise_epochs(const Report *r, RepSummary *s)
{
    int laste = 0;
    for (long i = 0; i < r->nep; i++) {
        if (isfinite(r->ep[i].val_loss)) {
            s->final_epoch = r->ep[i].epoch, s->final_val = r->ep[i].val_loss;
            if (!s->best_epoch || r->ep[i].val_loss < s->best_val)
                s->best_epoch = r->ep[i].epoch, s->best_val = r->ep[i].val_loss;
        }
        laste = r->ep[i].epoch;
    }
    int64_t after = r->nep ? r->ep[r->nep - 1].end_seq : 0;
    int cur = r->nst ? r->st[r->nst - 1].epoch : 0;
    RepEpoch *c = &s->cur;
    *c = (RepEpoch){.train_loss = NAN, .val_loss = NAN, .p50 = NAN, .p90 = NAN, .max = NAN,
                    .lr = NAN, .tokens_per_s = NAN, .seconds = NAN};
    double loss = 0;
    long nloss = 0;
    for (long i = 0; i < r->nst; i++) {
        const RepStep *p = &r->st[i];
        if (p->seq <= after || p->epoch != cur || (r->nep && cur <= laste)) continue;
        c->epoch = p->epoch, c->steps++, c->clipped += p->clipped, c->skipped += p->skipped;
        c->end_seq = p->seq;
        if (isfinite(p->loss)) loss += p->loss, nloss++;
    }
    s->has_cur = c->steps > 0;
    c->clip_rate = c->steps ? (double)c->clipped / (double)c->steps : NAN;
    c->train_loss = nloss ? loss / (double)nloss : NAN;
}

/* Executed and distinct steps, norm percentiles (nearest rank, as epochs.jsonl),
 * rollbacks (a step number not after the one before), throughput. */
static void summarise_steps(const Report *r, RepSummary *s)
{
    size_t n = (size_t)(r->nst > r->nep ? r->nst : r->nep) + 1;
    double *v = malloc(n * sizeof *v), *u = malloc(n * sizeof *u);
    if (!v || !u) goto done;
    long nv = 0, nu = 0;
    s->first_step = r->nst ? r->st[0].step : 0;
    for (long i = 0; i < r->nst; i++) {
        const RepStep *p = &r->st[i];
        s->clipped += p->clipped, s->skipped += p->skipped;
        if (isfinite(p->norm) && isfinite(p->loss)) v[nv++] = p->norm;
        else s->nonfinite++;
        if (i > 0 && p->step <= r->st[i - 1].step) s->rollbacks++;
        if (p->step < s->first_step) s->first_step = p->step;
        if (p->step > s->last_step) s->last_step = p->step;
        u[i] = (double)p->step;
    }
    s->finite_norms = nv;
    s->p50 = stats_percentile(v, nv, 0.5), s->p90 = stats_percentile(v, nv, 0.9);
    s->p99 = stats_percentile(v, nv, 0.99), s->pmax = nv ? v[nv - 1] : NAN;
    qsort(u, (size_t)r->nst, sizeof *u, cmp_double);
    for (long i = 0; i < r->nst; i++) s->distinct += i == 0 || u[i] != u[i - 1];
    s->clip_rate = r->nst ? (double)s->clipped / (double)r->nst : NAN;
    for (long i = 0; i < r->nep; i++)
        if (isfinite(r->ep[i].tokens_per_s)) u[nu++] = r->ep[i].tokens_per_s;
    s->tok_src = "epochs.jsonl";
    if (nu == 0) {
        s->tok_src = "steps.jsonl";
        for (long i = 0; i < r->nst; i++)
            if (isfinite(r->st[i].step_ms) && r->st[i].step_ms > 0)
                u[nu++] = (double)r->st[i].tokens / r->st[i].step_ms * 1e3;
    }
    s->tok_s = stats_percentile(u, nu, 0.5);
    nv = 0;
    for (long i = 0; i < r->nst; i++)
        if (isfinite(r->st[i].step_ms) && r->st[i].step_ms > 0) v[nv++] = r->st[i].step_ms;
    s->step_ms = stats_percentile(v, nv, 0.5);
done:
    free(v);
    free(u);
}

static int cmp_share(const void *a, const void *b)
{
    double x = ((const RepShare *)a)->share, y = ((const RepShare *)b)->share;
    return (x < y) - (x > y);
}

/* Each tensor's share of the squared global norm per row, averaged over the
 * rows whose norms are all finite, and over their first and last quarter. */
static void summarise_tensors(const Report *r, RepSummary *s)
{
    const RepTensors *t = &r->t;
    if (!r->has_tensors || t->nnames == 0) return;
    RepShare *sh = calloc((size_t)t->nnames, sizeof *sh);
    long *q = calloc((size_t)t->nrows, sizeof *q), nq = 0; /* the rows used */
    if (!sh || !q) goto done;
    for (long i = 0; i < t->nrows; i++)
        if (isfinite(t->rows[i].sumsq) && t->rows[i].sumsq > 0) q[nq++] = i;
    long quarter = nq / 4 ? nq / 4 : 1;
    for (long k = 0; k < nq; k++) {
        const RepTRow *row = &t->rows[q[k]];
        for (long e = row->first; e < row->first + row->n; e++) {
            RepShare *x = &sh[t->ent[e].idx];
            double f = t->ent[e].sq / row->sumsq;
            x->share += f;
            if (k < quarter) x->early += f;
            if (k >= nq - quarter) x->late += f;
            if (!(sqrt(t->ent[e].sq) <= x->max_norm)) x->max_norm = sqrt(t->ent[e].sq);
        }
    }
    for (int i = 0; i < t->nnames; i++) {
        sh[i].idx = i;
        sh[i].share = nq ? sh[i].share / (double)nq : NAN;
        sh[i].early = nq ? sh[i].early / (double)quarter : NAN;
        sh[i].late = nq ? sh[i].late / (double)quarter : NAN;
    }
    qsort(sh, (size_t)t->nnames, sizeof *sh, cmp_share);
    s->tsamples = nq;
    s->ntop = nq == 0 ? 0 : t->nnames < REP_TOP ? t->nnames : REP_TOP;
    memcpy(s->top, sh, (size_t)s->ntop * sizeof *sh);
done:
    free(sh);
    free(q);
}

void rep_summarise(const Report *r, RepSummary *s)
{
    memset(s, 0, sizeof *s);
    s->p50 = s->p90 = s->p99 = s->pmax = s->tok_s = s->step_ms = NAN;
    s->final_val = s->best_val = NAN;
    summarise_steps(r, s);
    summarise_epochs(r, s);
    summarise_tensors(r, s);
}

/* -------------------------------------------------------------------- text */

/* "-" for NAN, else the number in fmt, in a field of width w. */
static const char *fnum(char *buf, size_t len, const char *fmt, double x)
{
    if (isfinite(x)) snprintf(buf, len, fmt, x);
    else snprintf(buf, len, "-");
    return buf;
}

static void text_epoch_row(const RepEpoch *e, bool in_progress)
{
    char a[32], b[32], c[32], d[32], f[32], g[32];
    printf("  %5d %6lld %10s %9s %9s %-9s %7lld %7lld %9s %9s %9s%s\n", e->epoch, (long long)e->steps,
           fnum(a, 32, "%.4f", e->train_loss), fnum(b, 32, "%.4f", e->val_loss),
           fnum(c, 32, "%.3f", e->clip_rate), e->clip_state[0] ? e->clip_state : "-",
           (long long)e->clipped, (long long)e->skipped,
           fnum(d, 32, "%.4g", e->p50), fnum(f, 32, "%.4g", e->p90),
           fnum(g, 32, "%.0f", e->tokens_per_s), in_progress ? "  (in progress)" : "");
}

static void text_epochs(const Report *r, const RepSummary *s)
{
    if (!r->nep && !s->has_cur) return;
    printf("  %5s %6s %10s %9s %9s %-9s %7s %7s %9s %9s %9s\n", "epoch", "steps", "train_loss",
           "val_loss", "clip_rate", "clipping", "clipped", "skipped", "norm_p50", "norm_p90", "tokens/s");
    long head = r->nep > REP_EPOCH_ROWS ? 5 : r->nep;
    for (long i = 0; i < head; i++) text_epoch_row(&r->ep[i], false);
    if (head < r->nep) {
        long tail = REP_EPOCH_ROWS - 6;
        printf("  %5s (%ld epochs not shown; --json lists all)\n", "...", r->nep - head - tail);
        for (long i = r->nep - tail; i < r->nep; i++) text_epoch_row(&r->ep[i], false);
    }
    if (s->has_cur) text_epoch_row(&s->cur, true);
}

/* One line per event kind: count, then its steps (capped), with the seq
 * where it differs from the step and the action when it is not "log". */
/* Starts, resumes, crashes and ends, then rollbacks: where the run's
 * timeline broke, with their steps. */
static void text_sessions(const Report *r)
{
    long rb = 0;
    for (long j = 0; j < r->nev; j++) rb += r->ev[j].rollback_to >= 0;
    if (!r->nses && !rb) return;
    printf("sessions   ");
    for (long i = 0; i < r->nses; i++) {
        const RepSession *s = &r->ses[i];
        printf("%s%s at step %lld", i ? ", " : "", s->kind, (long long)s->step);
        if (s->how[0]) printf(" (%s)", s->how);
    }
    if (r->more_ses) printf(", ... (%ld more)", r->more_ses);
    for (long j = 0, shown = 0; j < r->nev && shown < REP_LIST_CAP; j++)
        if (r->ev[j].rollback_to >= 0)
            printf("%srollback at step %lld to %lld", r->nses || shown ? ", " : "", (long long)r->ev[j].step,
                   (long long)r->ev[j].rollback_to), shown++;
    printf("\n");
}

static void text_events(const Report *r)
{
    printf("events     %ld%s\n", r->nev, r->has_events ? "" : " (no events.jsonl)");
    for (int k = 0; k < r->nkinds; k++) {
        long count = r->kind_count[k], shown = 0;
        printf("  %-16s %4ld  %s", r->kinds[k], count, count == 1 ? "step " : "steps ");
        for (long j = 0; j < r->nev && shown < REP_LIST_CAP; j++) {
            const RepEvent *e = &r->ev[j];
            if (e->kind_idx != k) continue;
            char seq[32] = "", act[48] = "";
            if (e->seq != e->step) snprintf(seq, sizeof seq, "seq %lld", (long long)e->seq);
            if (e->rollback_to >= 0) snprintf(act, sizeof act, "rollback to %lld", (long long)e->rollback_to);
            else if (e->action[0] && strcmp(e->action, "log") != 0) snprintf(act, sizeof act, "%s", e->action);
            printf("%s%lld", shown++ ? ", " : "", (long long)e->step);
            if (seq[0] || act[0]) printf(" (%s%s%s)", seq, seq[0] && act[0] ? ", " : "", act);
        }
        printf("%s\n", count > shown ? ", ..." : "");
    }
}

static void text_tensors(const Report *r, const RepSummary *s)
{
    if (!r->has_tensors) {
        printf("tensors    no tensors.jsonl (log.tensor_norms_every 0, or an older run)\n");
    } else {
        printf("tensors    share of the squared pre-clip norm, mean over %ld samples (first quarter, last quarter)%s\n",
               s->tsamples, s->tsamples ? ":" : ": none with every norm finite");
        for (int i = 0; i < s->ntop; i++)
            printf("  %-16s %5.1f%%  (%5.1f%%, %5.1f%%)  max norm %.4g\n",
                   r->t.names[s->top[i].idx], 100 * s->top[i].share, 100 * s->top[i].early,
                   100 * s->top[i].late, s->top[i].max_norm);
    }
    long shown = 0, with = 0;
    for (long i = 0; i < r->nev; i++) with += r->ev[i].top[0] != 0;
    for (long i = 0; i < r->nev && shown < REP_LIST_CAP; i++) {
        const RepEvent *e = &r->ev[i];
        if (!e->top[0]) continue;
        if (!shown++) printf("  at events (the tensor holding a non-finite norm, else the largest, and its share of the squared norm):\n");
        if (!isfinite(e->top_norm)) printf("    step %lld %s: %s not finite\n", (long long)e->step, e->kind, e->top);
        else printf("    step %lld %s: %s %.4g (%.0f%%)\n", (long long)e->step, e->kind, e->top, e->top_norm,
                    100 * e->top_share);
    }
    if (with > shown) printf("    ... %ld more\n", with - shown);
}

void rep_print_text(const Report *r, const RepSummary *s)
{
    char a[32], b[32], c[32], d[32];
    printf("clipd report: %s (run \"%s\", %s)\n", r->dir, r->name,
           r->finished ? "finished" : "no final.safetensors: running, stopped or crashed");
    printf("steps      %ld executed, %ld distinct (%lld..%lld), %ld rollback%s, %ld skipped, %ld non-finite\n",
           r->nst, s->distinct, (long long)s->first_step, (long long)s->last_step, s->rollbacks,
           s->rollbacks == 1 ? "" : "s", s->skipped, s->nonfinite);
    printf("epochs     %ld complete", r->nep);
    if (s->final_epoch)
        printf("; validation loss final %.4f (epoch %d), best %.4f (epoch %d)", s->final_val,
               s->final_epoch, s->best_val, s->best_epoch);
    printf("\n");
    printf("clipping   %s, max_norm %s%s%s%s; clip rate %s over all steps\n", r->clip_mode,
           fnum(a, 32, "%g", r->max_norm), r->max_norm_src[0] ? " (" : "", r->max_norm_src,
           r->max_norm_src[0] ? ")" : "", fnum(b, 32, "%.3f", s->clip_rate));
    text_epochs(r, s);
    printf("pre-clip   global norm over %ld finite steps (skipped ones too): p50 %s  p90 %s  p99 %s  max %s\n",
           s->finite_norms, fnum(a, 32, "%.4g", s->p50), fnum(b, 32, "%.4g", s->p90),
           fnum(c, 32, "%.4g", s->p99), fnum(d, 32, "%.4g", s->pmax));
    text_sessions(r);
    text_events(r);
    printf("throughput median %s tokens/s (%s), median step %s ms (slowest worker)\n",
           fnum(a, 32, "%.0f", s->tok_s), s->tok_src, fnum(b, 32, "%.1f", s->step_ms));
    text_tensors(r, s);
    for (int i = 0; i < r->nnotes; i++) printf("note: %s\n", r->notes[i]);
}

/* -------------------------------------------------------------------- JSON */

/* Each helper counts a failure (out of memory, a key jansson refuses) in *bad
 * and never touches a value it handed over: jansson owns it either way. */
static void jset(json_t *o, const char *key, json_t *v, int *bad)
{
    if (json_object_set_new(o, key, v) != 0) ++*bad;
}

static void jpush(json_t *a, json_t *v, int *bad)
{
    if (json_array_append_new(a, v) != 0) ++*bad;
}

static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }
static json_t *jint(int64_t x) { return json_integer((json_int_t)x); }

/* s, with each byte that is not part of well-formed UTF-8 (a run directory
 * path, or a name from config.yaml) as U+FFFD; NULL out of memory. */
static char *utf8_clean(const char *s)
{
    size_t n = strlen(s), o = 0;
    char *out = malloc(3 * n + 1);
    unsigned cp;
    for (size_t i = 0; out && i < n;) {
        int k = utf8_seq(s + i, &cp);
        if (k == 0) memcpy(out + o, "\xef\xbf\xbd", 3), o += 3, i++;
        else memcpy(out + o, s + i, (size_t)k), o += (size_t)k, i += (size_t)k;
    }
    if (out) out[o] = '\0';
    return out;
}

static json_t *jstr(const char *s)
{
    json_t *v = json_string(s);
    if (v) return v;
    char *c = utf8_clean(s);
    v = c ? json_string(c) : NULL;
    free(c);
    return v;
}

static json_t *json_epoch(const RepEpoch *e, int *bad)
{
    json_t *o = json_object();
    jset(o, "epoch", jint(e->epoch), bad);
    jset(o, "steps", jint(e->steps), bad);
    jset(o, "train_loss", jnum(e->train_loss), bad);
    jset(o, "val_loss", jnum(e->val_loss), bad);
    jset(o, "clip_rate", jnum(e->clip_rate), bad);
    jset(o, "clip_state", e->clip_state[0] ? jstr(e->clip_state) : json_null(), bad);
    jset(o, "clipped_steps", jint(e->clipped), bad);
    jset(o, "skipped_steps", jint(e->skipped), bad);
    jset(o, "grad_norm_p50", jnum(e->p50), bad);
    jset(o, "grad_norm_p90", jnum(e->p90), bad);
    jset(o, "grad_norm_max", jnum(e->max), bad);
    jset(o, "lr", jnum(e->lr), bad);
    jset(o, "tokens_per_s", jnum(e->tokens_per_s), bad);
    jset(o, "end_seq", jint(e->end_seq), bad);
    return o;
}

static json_t *json_event(const RepEvent *e, int *bad)
{
    json_t *o = json_object();
    jset(o, "seq", jint(e->seq), bad);
    jset(o, "step", jint(e->step), bad);
    jset(o, "epoch", jint(e->epoch), bad);
    jset(o, "kind", jstr(e->kind), bad);
    jset(o, "action", jstr(e->action), bad);
    jset(o, "value", jnum(e->value), bad);
    jset(o, "threshold", jnum(e->threshold), bad);
    if (e->rollback_to >= 0) jset(o, "rollback_to", jint(e->rollback_to), bad);
    if (e->top[0]) {
        jset(o, "top_tensor", jstr(e->top), bad);
        jset(o, "top_tensor_norm", jnum(e->top_norm), bad);
        jset(o, "top_tensor_share", jnum(e->top_share), bad);
    }
    return o;
}

/* events: the list, and by kind {count, steps}. */
static void json_events(json_t *root, const Report *r, int *bad)
{
    json_t *list = json_array(), *by = json_object();
    for (long i = 0; i < r->nev; i++) {
        const RepEvent *e = &r->ev[i];
        jpush(list, json_event(e, bad), bad);
        json_t *k = json_object_get(by, e->kind);
        if (!k) {
            k = json_object();
            jset(k, "count", json_integer(0), bad);
            jset(k, "steps", json_array(), bad);
            if (json_object_set_new(by, e->kind, k) != 0) { /* k is gone */
                ++*bad;
                continue;
            }
        }
        json_t *count = json_object_get(k, "count"), *steps = json_object_get(k, "steps");
        if (!count || !steps || json_integer_set(count, json_integer_value(count) + 1)) ++*bad;
        jpush(steps, jint(e->step), bad);
    }
    jset(root, "events_total", jint(r->nev), bad);
    jset(root, "events_by_kind", by, bad);
    jset(root, "events", list, bad);
}

static json_t *json_tensors(const Report *r, const RepSummary *s, int *bad)
{
    if (!r->has_tensors) return json_null();
    json_t *o = json_object(), *top = json_array();
    jset(o, "samples", jint(s->tsamples), bad);
    jset(o, "rows", jint(r->t.nrows), bad);
    for (int i = 0; i < s->ntop; i++) {
        json_t *t = json_object();
        jset(t, "tensor", jstr(r->t.names[s->top[i].idx]), bad);
        jset(t, "share", jnum(s->top[i].share), bad);
        jset(t, "share_first_quarter", jnum(s->top[i].early), bad);
        jset(t, "share_last_quarter", jnum(s->top[i].late), bad);
        jset(t, "max_norm", jnum(s->top[i].max_norm), bad);
        jpush(top, t, bad);
    }
    jset(o, "top", top, bad);
    return o;
}

static void json_steps(json_t *root, const Report *r, const RepSummary *s, int *bad)
{
    jset(root, "steps_executed", jint(r->nst), bad);
    jset(root, "steps_distinct", jint(s->distinct), bad);
    jset(root, "first_step", jint(s->first_step), bad);
    jset(root, "last_step", jint(s->last_step), bad);
    jset(root, "clipped_steps", jint(s->clipped), bad);
    jset(root, "skipped_steps", jint(s->skipped), bad);
    jset(root, "nonfinite_steps", jint(s->nonfinite), bad);
    jset(root, "rollbacks", jint(s->rollbacks), bad);
    jset(root, "clip_rate", jnum(s->clip_rate), bad);
    jset(root, "clip_mode", jstr(r->clip_mode), bad);
    jset(root, "max_norm", jnum(r->max_norm), bad);
    jset(root, "max_norm_source", r->max_norm_src[0] ? jstr(r->max_norm_src) : json_null(), bad);
    json_t *g = json_object();
    jset(g, "n", jint(s->finite_norms), bad);
    jset(g, "p50", jnum(s->p50), bad);
    jset(g, "p90", jnum(s->p90), bad);
    jset(g, "p99", jnum(s->p99), bad);
    jset(g, "max", jnum(s->pmax), bad);
    jset(root, "grad_norm", g, bad);
}

/* The summary as one JSON object on stdout: 0, or -1 when it could not be
 * built whole (out of memory) or written. */
int rep_print_json(const Report *r, const RepSummary *s)
{
    int bad = 0;
    json_t *root = json_object(), *eps = json_array(), *notes = json_array();
    jset(root, "run_dir", jstr(r->dir), &bad);
    jset(root, "run_name", jstr(r->name), &bad);
    jset(root, "finished", json_boolean(r->finished), &bad);
    json_steps(root, r, s, &bad);
    for (long i = 0; i < r->nep; i++) jpush(eps, json_epoch(&r->ep[i], &bad), &bad);
    jset(root, "epochs", eps, &bad);
    jset(root, "epoch_in_progress", s->has_cur ? json_epoch(&s->cur, &bad) : json_null(), &bad);
    jset(root, "val_loss_final", jnum(s->final_val), &bad);
    jset(root, "val_loss_final_epoch", s->final_epoch ? jint(s->final_epoch) : json_null(), &bad);
    jset(root, "val_loss_best", jnum(s->best_val), &bad);
    jset(root, "val_loss_best_epoch", s->best_epoch ? jint(s->best_epoch) : json_null(), &bad);
    json_events(root, r, &bad);
    json_t *ses = json_array();
    for (long i = 0; i < r->nses; i++) {
        json_t *o = json_object();
        jset(o, "kind", jstr(r->ses[i].kind), &bad);
        jset(o, "step", jint(r->ses[i].step), &bad);
        jset(o, "seq", jint(r->ses[i].seq), &bad);
        jset(o, "time", jnum(r->ses[i].time), &bad);
        if (r->ses[i].how[0]) jset(o, "how", jstr(r->ses[i].how), &bad);
        jpush(ses, o, &bad);
    }
    jset(root, "sessions", ses, &bad);
    json_t *tp = json_object();
    jset(tp, "tokens_per_s_median", jnum(s->tok_s), &bad);
    jset(tp, "source", jstr(s->tok_src ? s->tok_src : "steps.jsonl"), &bad);
    jset(tp, "step_ms_median", jnum(s->step_ms), &bad);
    jset(root, "throughput", tp, &bad);
    jset(root, "tensors", json_tensors(r, s, &bad), &bad);
    for (int i = 0; i < r->nnotes; i++) jpush(notes, jstr(r->notes[i]), &bad);
    jset(root, "notes", notes, &bad);
    int rc = -1;
    if (bad == 0 && root) {
        rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
        if (putchar('\n') == EOF) rc = -1;
    }
    json_decref(root);
    return rc;
}

/* --------------------------------------------------------------------- SVG */

#define SVG_W 1200
#define SVG_ML 86             /* left margin: y tick labels and axis label */
#define SVG_MR 28
#define SVG_COLS (SVG_W - SVG_ML - SVG_MR) /* plot width, one decimation column per px */
#define SVG_FONT "DejaVu Sans, Helvetica, Arial, sans-serif"
#define SVG_EVENT_LINES 30 /* a kind with more events is drawn as ticks above the panels */
#define SVG_BANDS 200      /* rollback bands drawn; the legend says when there are more */

/* Okabe-Ito: distinguishable with the common colour-vision deficiencies. */
#define C_BLUE "#0072B2"
#define C_SKY "#56B4E9"
#define C_GREEN "#009E73"
#define C_ORANGE "#E69F00"
#define C_VERMILLION "#D55E00"
#define C_PURPLE "#CC79A7"
#define C_GREY "#6b6b6b"

typedef struct {
    double x, y, w, h;  /* plot area, px */
    double y0, y1;      /* data range of y; log10 of it on a log axis */
    bool log;
} Panel;

typedef struct {
    FILE *f;
    const Report *r;
    const RepSummary *s;
    double x0, x1;     /* the seq axis */
    double top, bot;   /* first panel's top, last panel's bottom, px */
    double *x, *y;     /* (nst) seq, and a scratch series */
    double *ox, *oy;   /* (2 * SVG_COLS + 2) decimated points */
    int clip_id;
    double band[SVG_BANDS][2]; /* seq range of each band of steps re-run after a rollback */
    long nbands, bands_total;  /* drawn, found */
} Svg;

static double sx(const Svg *v, double seq) { return SVG_ML + (seq - v->x0) / (v->x1 - v->x0) * SVG_COLS; }

/* The y of a value in a panel; far off-scale values (the panel clips them)
 * are held 1e6 px off it, so no coordinate is infinite or NaN. */
static double py(const Panel *p, double y)
{
    double t = p->log ? log10(y > 0 ? y : pow(10, p->y0)) : y;
    double v = p->y + p->h - (t - p->y0) / (p->y1 - p->y0) * p->h;
    return isnan(v) ? p->y + p->h : fmax(p->y - 1e6, fmin(v, p->y + p->h + 1e6));
}

/* s as XML character data: markup escaped, control characters dropped, and
 * what XML may not hold (bytes that are not UTF-8, U+FFFE, U+FFFF) as U+FFFD. */
static void xml_text(FILE *f, const char *s)
{
    unsigned cp;
    while (*s) {
        int k = utf8_seq(s, &cp);
        if (k == 0 || cp == 0xfffe || cp == 0xffff) fputs("\xef\xbf\xbd", f);
        else if (cp == '<') fputs("&lt;", f);
        else if (cp == '>') fputs("&gt;", f);
        else if (cp == '&') fputs("&amp;", f);
        else if (cp == '"') fputs("&quot;", f);
        else if (cp >= 0x20 || cp == '\t') fwrite(s, 1, (size_t)k, f);
        s += k ? k : 1;
    }
}

/* %g, with exponents as 1e4 and 1e-5 rather than 1e+04 and 1e-05. */
static const char *tick_label(char *buf, size_t len, double v, bool pct)
{
    if (pct) snprintf(buf, len, "%g%%", 100 * v);
    else snprintf(buf, len, "%g", v);
    char *e = strchr(buf, 'e');
    if (e) {
        char *p = e + 1;
        bool neg = *p == '-';
        if (*p == '+' || *p == '-') p++;
        while (*p == '0' && p[1]) p++;
        memmove(e + 1 + neg, p, strlen(p) + 1);
    }
    return buf;
}

typedef enum { LG_LINE, LG_DOT, LG_RING, LG_AREA, LG_CROSS } LgKind;
typedef struct {
    LgKind k;
    const char *color, *dash;
    double width;
    const char *label;
} LgItem;

/* Legend items in one row ending at x = right, baseline y. */
static void svg_legend(FILE *f, double right, double y, const LgItem *it, int n)
{
    double w = 0;
    for (int i = 0; i < n; i++) w += 30 + 6.9 * (double)strlen(it[i].label) + 16;
    double x = right - w + 16;
    for (int i = 0; i < n; i++) {
        const LgItem *g = &it[i];
        double cy = y - 4.5;
        if (g->k == LG_LINE)
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"%.1f\"%s%s%s/>\n",
                    x, cy, x + 24, cy, g->color, g->width, g->dash ? " stroke-dasharray=\"" : "",
                    g->dash ? g->dash : "", g->dash ? "\"" : "");
        else if (g->k == LG_DOT)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\" stroke=\"white\"/>\n", x + 12, cy, g->color);
        else if (g->k == LG_RING)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"/>\n", x + 12, cy, g->color);
        else if (g->k == LG_AREA)
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"24\" height=\"11\" fill=\"%s\" fill-opacity=\"%.2f\"/>\n",
                    x, cy - 5.5, g->color, g->width);
        else
            fprintf(f, "<path d=\"M%.1f %.1fl8 8m0 -8l-8 8\" stroke=\"%s\" stroke-width=\"2\"/>\n", x + 8, cy - 4, g->color);
        fprintf(f, "<text class=\"lg\" x=\"%.1f\" y=\"%.1f\">", x + 30, y);
        xml_text(f, g->label);
        fprintf(f, "</text>\n");
        x += 30 + 6.9 * (double)strlen(g->label) + 16;
    }
}

typedef struct {
    const char *kind, *color, *dash;
} KindStyle;

static KindStyle kind_style(const char *kind)
{
    static const KindStyle tab[] = {
        {"nonfinite_loss", C_VERMILLION, NULL}, {"nonfinite_grad", C_VERMILLION, NULL},
        {"grad_norm_spike", C_ORANGE, NULL},    {"loss_spike", C_PURPLE, NULL},
        {"clip_saturation", "#404040", "3 3"},  {"clip_inactive", "#9a9a9a", "3 3"},
        {"replica_drift", "#000000", "9 3"},    {"val_loss_rise", C_PURPLE, "9 3"},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(tab[i].kind, kind) == 0) return tab[i];
    return (KindStyle){kind, "#777777", "1 3"};
}

/* False when an earlier event of the same kind falls in the same pixel column. */
static bool event_first_in_column(const Svg *v, long i)
{
    const RepEvent *ev = v->r->ev;
    double x = sx(v, (double)ev[i].seq);
    for (long j = i - 1; j >= 0 && sx(v, (double)ev[j].seq) > x - 1; j--)
        if (ev[j].kind_idx == ev[i].kind_idx) return false;
    return true;
}

/* The steps re-run after each rollback: from the first step whose number is
 * not after the one before, to where the run is back at that number. A
 * rollback inside such a range re-runs steps within it, so the ranges found in
 * one pass, each scanned once, cover every rollback's; the first SVG_BANDS are
 * kept. */
static void svg_find_bands(Svg *v)
{
    const Report *r = v->r;
    for (long i = 1; i < r->nst; i++) {
        if (r->st[i].step > r->st[i - 1].step) continue;
        long j = i;
        while (j + 1 < r->nst && r->st[j].step < r->st[i - 1].step) j++;
        if (v->nbands < SVG_BANDS) {
            v->band[v->nbands][0] = (double)r->st[i].seq;
            v->band[v->nbands++][1] = (double)r->st[j].seq;
        }
        v->bands_total++;
        i = j; /* the next rollback is after j */
    }
}

/* Behind a panel's data: the rollback bands, and each event as a line in its
 * kind's style. */
static void svg_marks(Svg *v, const Panel *p)
{
    const Report *r = v->r;
    for (long k = 0; k < v->nbands; k++) {
        double a = sx(v, v->band[k][0] - 0.5), b = sx(v, v->band[k][1] + 0.5);
        fprintf(v->f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#000\" fill-opacity=\"0.08\"/>\n",
                a, p->y, fmax(b - a, 1), p->h);
    }
    for (long i = 0; i < r->nev; i++) {
        const RepEvent *e = &r->ev[i];
        if (r->kind_count[e->kind_idx] > SVG_EVENT_LINES || !event_first_in_column(v, i)) continue;
        KindStyle ks = kind_style(e->kind);
        double x = sx(v, (double)e->seq);
        fprintf(v->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.8\"%s%s%s/>\n",
                x, p->y, x, p->y + p->h, ks.color, ks.dash ? " stroke-dasharray=\"" : "", ks.dash ? ks.dash : "",
                ks.dash ? "\"" : "");
    }
}

/* Background, grid, y ticks, x grid, marks, title and y label of a panel; then
 * opens a group clipped to the plot area (svg_panel_end closes it). */
static void svg_panel(Svg *v, const Panel *p, const char *title, const char *ylabel, bool pct)
{
    FILE *f = v->f;
    double t[64], xt[64];
    char b[32];
    int n = p->log ? rep_log_ticks(t, 64, p->y0, p->y1) : rep_ticks(t, 64, p->y0, p->y1, 5);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#fafafa\"/>\n",
            p->x, p->y, p->w, p->h);
    double labelled = 1e9; /* y of the last labelled tick: labels stay 15 px apart */
    for (int i = 0; i < n; i++) {
        double y = py(p, t[i]);
        fprintf(f, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", p->x, y, p->x + p->w, y);
        if (fabs(labelled - y) < 15) continue;
        fprintf(f, "<text class=\"tk\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", p->x - 7, y + 4,
                tick_label(b, sizeof b, t[i], pct));
        labelled = y;
    }
    int nx = rep_ticks(xt, 64, v->x0, v->x1, 10);
    for (int i = 0; i < nx; i++)
        fprintf(f, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", sx(v, xt[i]), p->y,
                sx(v, xt[i]), p->y + p->h);
    svg_marks(v, p);
    fprintf(f, "<text class=\"pt\" x=\"%.1f\" y=\"%.1f\">%s</text>\n", p->x, p->y - 9, title);
    fprintf(f, "<text class=\"yl\" text-anchor=\"middle\" transform=\"translate(%d %.1f) rotate(-90)\">%s</text>\n",
            22, p->y + p->h / 2, ylabel);
    int id = v->clip_id++;
    fprintf(f, "<clipPath id=\"c%d\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></clipPath>\n",
            id, p->x, p->y, p->w, p->h);
    fprintf(f, "<g clip-path=\"url(#c%d)\">\n", id);
}

static void svg_panel_end(Svg *v, const Panel *p)
{
    fprintf(v->f, "</g>\n<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#888\"/>\n",
            p->x, p->y, p->w, p->h);
}

/* The series y (one value per step) as one path, at most two points a pixel. */
static void svg_series(Svg *v, const Panel *p, const double *y, const char *attrs)
{
    long m = rep_decimate(v->ox, v->oy, v->x, y, v->r->nst, v->x0, v->x1, SVG_COLS);
    fprintf(v->f, "<path fill=\"none\" stroke-linejoin=\"round\" %s d=\"", attrs);
    for (long i = 0; i < m; i++)
        fprintf(v->f, "%s%.1f %.1f", i ? "L" : "M", sx(v, v->ox[i]), py(p, v->oy[i]));
    fprintf(v->f, "\"/>\n");
}

static long smooth_window(long n)
{
    long w = n / 60;
    return (w < 5 ? 5 : w) | 1;
}

/* Loss: per step (thin), smoothed, validation per epoch (points). */
static void svg_loss(Svg *v, Panel *p)
{
    const Report *r = v->r;
    long n = r->nst, w = smooth_window(n), nq = 0;
    double lo = INFINITY, hi = -INFINITY;
    double *raw = calloc((size_t)n, sizeof *raw), *sm = calloc((size_t)n, sizeof *sm);
    if (!raw || !sm) goto done;
    for (long i = 0; i < n; i++) {
        raw[i] = r->st[i].loss;
        if (isfinite(raw[i])) v->y[nq++] = raw[i], lo = fmin(lo, raw[i]);
    }
    rep_smooth(sm, raw, n, w);
    hi = stats_percentile(v->y, nq, 0.995);
    for (long i = 0; i < n; i++)
        if (isfinite(sm[i])) hi = fmax(hi, sm[i]);
    for (long i = 0; i < r->nep; i++)
        if (isfinite(r->ep[i].val_loss) && r->ep[i].end_seq)
            lo = fmin(lo, r->ep[i].val_loss), hi = fmax(hi, r->ep[i].val_loss);
    if (!(hi > lo)) hi = lo + 1, lo -= 1;
    if (!isfinite(lo)) lo = 0, hi = 1;
    lo = fmax(lo, -1e300), hi = fmin(hi, 1e300); /* hi - lo stays finite */
    p->y0 = lo - 0.05 * (hi - lo), p->y1 = hi + 0.05 * (hi - lo);
    svg_panel(v, p, "Loss", r->squared_error ? "loss (squared error)" : "loss (nats/token)", false);
    svg_series(v, p, raw, "stroke=\"" C_SKY "\" stroke-width=\"0.9\" stroke-opacity=\"0.75\"");
    svg_series(v, p, sm, "stroke=\"" C_BLUE "\" stroke-width=\"2.2\"");
    fprintf(v->f, "<path fill=\"none\" stroke=\"" C_GREEN "\" stroke-width=\"1.3\" stroke-dasharray=\"2 3\" d=\"");
    for (long i = 0, k = 0; i < r->nep; i++)
        if (isfinite(r->ep[i].val_loss) && r->ep[i].end_seq)
            fprintf(v->f, "%s%.1f %.1f", k++ ? "L" : "M", sx(v, (double)r->ep[i].end_seq), py(p, r->ep[i].val_loss));
    fprintf(v->f, "\"/>\n");
    svg_panel_end(v, p);
    for (long i = 0; i < r->nep; i++)
        if (isfinite(r->ep[i].val_loss) && r->ep[i].end_seq)
            fprintf(v->f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"" C_GREEN "\" stroke=\"white\" stroke-width=\"1.2\"/>\n",
                    sx(v, (double)r->ep[i].end_seq), py(p, r->ep[i].val_loss));
    char sl[64];
    snprintf(sl, sizeof sl, "train, smoothed over %ld steps", w);
    LgItem it[] = {{LG_LINE, C_SKY, NULL, 1.2, "train, per step"},
                   {LG_LINE, C_BLUE, NULL, 2.5, sl},
                   {LG_DOT, C_GREEN, NULL, 0, "validation, end of epoch"}};
    svg_legend(v->f, p->x + p->w, p->y - 9, it, 3);
done:
    free(raw);
    free(sm);
}

/* Pre-clip global norm on a log axis, its geometric moving mean, the clip
 * threshold, skipped steps (rings) and non-finite steps (crosses on top). */
static void svg_norm(Svg *v, Panel *p)
{
    const Report *r = v->r;
    long n = r->nst, w = smooth_window(n);
    double lo = INFINITY, hi = -INFINITY, thr = r->max_norm;
    double *lg = calloc((size_t)n, sizeof *lg), *sm = calloc((size_t)n, sizeof *sm);
    if (!lg || !sm) goto done;
    for (long i = 0; i < n; i++) {
        double x = r->st[i].norm;
        lg[i] = isfinite(x) && x > 0 ? log10(x) : NAN;
        if (isfinite(lg[i])) lo = fmin(lo, lg[i]), hi = fmax(hi, lg[i]);
        if (r->st[i].skipped) lg[i] = NAN; /* not applied: marked, not averaged in */
    }
    if (isfinite(thr) && thr > 0) lo = fmin(lo, log10(thr)), hi = fmax(hi, log10(thr));
    if (!isfinite(lo)) lo = -1, hi = 1;
    double pad = fmax(0.06 * (hi - lo), 0.15);
    p->y0 = lo - pad, p->y1 = hi + pad, p->log = true;
    rep_smooth(sm, lg, n, w);
    for (long i = 0; i < n; i++) sm[i] = pow(10, sm[i]), v->y[i] = r->st[i].norm;
    svg_panel(v, p, "Pre-clip global gradient norm", "L2 norm (log scale)", false);
    svg_series(v, p, v->y, "stroke=\"" C_SKY "\" stroke-width=\"0.9\" stroke-opacity=\"0.8\"");
    svg_series(v, p, sm, "stroke=\"" C_BLUE "\" stroke-width=\"2.2\"");
    if (isfinite(thr) && thr > 0)
        fprintf(v->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"" C_VERMILLION
                      "\" stroke-width=\"2\" stroke-dasharray=\"8 5\"/>\n",
                p->x, py(p, thr), p->x + p->w, py(p, thr));
    /* a cross per pixel column; up to 4 rings per column, 2 px apart at least */
    int cross_col = -1, ring_col = -1, nring = 0;
    double ring_y[4];
    for (long i = 0; i < n; i++) {
        const RepStep *s = &r->st[i];
        double x = sx(v, (double)s->seq);
        int c = column((double)s->seq, v->x0, v->x1, SVG_COLS);
        if (!isfinite(s->norm) || !isfinite(s->loss)) {
            if (c == cross_col) continue;
            cross_col = c;
            fprintf(v->f, "<path d=\"M%.1f %.1fl8 8m0 -8l-8 8\" stroke=\"" C_VERMILLION "\" stroke-width=\"2\"/>\n",
                    x - 4, p->y + 4);
        } else if (s->skipped) {
            double y = py(p, s->norm);
            if (c != ring_col) ring_col = c, nring = 0;
            bool near = nring == 4;
            for (int k = 0; k < nring && !near; k++) near = fabs(y - ring_y[k]) < 2;
            if (near) continue;
            ring_y[nring++] = y;
            fprintf(v->f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"none\" stroke=\"" C_VERMILLION
                          "\" stroke-width=\"1.6\"/>\n", x, y);
        }
    }
    svg_panel_end(v, p);
    char tl[64], sl[64];
    snprintf(tl, sizeof tl, "clip threshold %g", thr);
    snprintf(sl, sizeof sl, "geometric mean over %ld steps", w);
    LgItem it[5] = {{LG_LINE, C_SKY, NULL, 1.2, "per step"}, {LG_LINE, C_BLUE, NULL, 2.5, sl}};
    int k = 2;
    if (isfinite(thr) && thr > 0) it[k++] = (LgItem){LG_LINE, C_VERMILLION, "8 5", 2, tl};
    if (v->s->skipped > v->s->nonfinite) it[k++] = (LgItem){LG_RING, C_VERMILLION, NULL, 0, "skipped"};
    if (v->s->nonfinite) it[k++] = (LgItem){LG_CROSS, C_VERMILLION, NULL, 0, "non-finite"};
    svg_legend(v->f, p->x + p->w, p->y - 9, it, k);
done:
    free(lg);
    free(sm);
}

/* 50 steps, more on a long run (n / 200), fewer on a short one (n / 4). */
static long rate_window(long n)
{
    long w = n / 4;
    return n >= 10000 ? n / 200 : n >= 200 ? 50 : w < 5 ? 5 : w;
}

/* Clip rate over a trailing window of steps, and each epoch's from epochs.jsonl. */
static void svg_clip(Svg *v, Panel *p)
{
    const Report *r = v->r;
    long n = r->nst, w = rate_window(n);
    bool *flag = malloc((size_t)n * sizeof *flag);
    if (!flag) return;
    for (long i = 0; i < n; i++) flag[i] = r->st[i].clipped;
    rep_window_rate(v->y, flag, n, w);
    free(flag);
    p->y0 = 0, p->y1 = 1;
    svg_panel(v, p, "Clip rate", "fraction of steps clipped", false);
    long m = rep_decimate(v->ox, v->oy, v->x, v->y, n, v->x0, v->x1, SVG_COLS);
    fprintf(v->f, "<path fill=\"" C_GREEN "\" fill-opacity=\"0.18\" stroke=\"" C_GREEN "\" stroke-width=\"1.8\" d=\"");
    for (long i = 0; i < m; i++)
        fprintf(v->f, "%s%.1f %.1f", i ? "L" : "M", sx(v, v->ox[i]), py(p, v->oy[i]));
    if (m) fprintf(v->f, "L%.1f %.1fL%.1f %.1fZ", sx(v, v->ox[m - 1]), py(p, 0), sx(v, v->ox[0]), py(p, 0));
    fprintf(v->f, "\"/>\n<path fill=\"none\" stroke=\"#000\" stroke-width=\"1.6\" stroke-dasharray=\"5 3\" d=\"");
    double start = v->x0;
    for (long i = 0, k = 0; i < r->nep; i++) {
        const RepEpoch *e = &r->ep[i];
        if (!e->end_seq || !isfinite(e->clip_rate)) continue;
        fprintf(v->f, "%s%.1f %.1fH%.1f", k++ ? "L" : "M", sx(v, start), py(p, e->clip_rate),
                sx(v, (double)e->end_seq));
        start = (double)e->end_seq;
    }
    fprintf(v->f, "\"/>\n");
    svg_panel_end(v, p);
    char wl[64];
    snprintf(wl, sizeof wl, "clipped, last %ld steps", w);
    LgItem it[] = {{LG_AREA, C_GREEN, NULL, 0.5, wl}, {LG_LINE, "#000", "5 3", 1.6, "per epoch (epochs.jsonl)"}};
    svg_legend(v->f, p->x + p->w, p->y - 9, it, 2);
}

/* Rows of tensors.jsonl in at most `cols` buckets: mean seq and mean share
 * of each top tensor (then all others) per bucket, into x and sh (cols x (k + 1)). */
static long tensor_buckets(const Svg *v, const int *layer, int k, double *x, double *sh, long cols)
{
    const RepTensors *t = &v->r->t;
    long nb = 0, cnt = 0;
    int last = -1;
    for (long i = 0; i < t->nrows; i++) {
        const RepTRow *row = &t->rows[i];
        if (!(isfinite(row->sumsq) && row->sumsq > 0)) continue;
        int c = column((double)row->seq, v->x0, v->x1, (int)cols);
        if (c != last && nb < cols) { /* seq ascends, so columns do: nb stays <= cols */
            if (cnt) x[nb - 1] /= (double)cnt;
            for (int j = 0; cnt && j <= k; j++) sh[(nb - 1) * (k + 1) + j] /= (double)cnt;
            last = c, cnt = 0, x[nb] = 0;
            for (int j = 0; j <= k; j++) sh[nb * (k + 1) + j] = 0;
            nb++;
        }
        cnt++;
        x[nb - 1] += (double)row->seq;
        for (long e = row->first; e < row->first + row->n; e++) {
            int l = layer[t->ent[e].idx];
            sh[(nb - 1) * (k + 1) + (l < 0 ? k : l)] += t->ent[e].sq / row->sumsq;
        }
    }
    if (cnt) x[nb - 1] /= (double)cnt;
    for (int j = 0; cnt && j <= k; j++) sh[(nb - 1) * (k + 1) + j] /= (double)cnt;
    return nb;
}

/* Which tensors dominate the global norm over time: stacked shares. */
static void svg_tensors(Svg *v, Panel *p)
{
    static const char *col[REP_TOP + 1] = {C_BLUE, C_ORANGE, C_GREEN, C_PURPLE, C_SKY, "#bdbdbd"};
    const Report *r = v->r;
    int k = v->s->ntop, *layer = malloc((size_t)r->t.nnames * sizeof *layer);
    long cols = SVG_COLS / 2, nb;
    double *x = malloc((size_t)cols * sizeof *x), *sh = malloc((size_t)cols * (REP_TOP + 1) * sizeof *sh);
    if (!layer || !x || !sh) goto done;
    for (int i = 0; i < r->t.nnames; i++) layer[i] = -1;
    for (int j = 0; j < k; j++) layer[v->s->top[j].idx] = j;
    nb = tensor_buckets(v, layer, k, x, sh, cols);
    p->y0 = 0, p->y1 = 1;
    svg_panel(v, p, "Share of the squared global norm, by tensor", "share of norm\xc2\xb2", true);
    int bands = k + (r->t.nnames > k);
    for (int j = 0; j < bands; j++) { /* band j: between the sums of bands < j and <= j */
        fprintf(v->f, "<path fill=\"%s\" fill-opacity=\"0.85\" stroke=\"white\" stroke-width=\"0.4\" d=\"", col[j == k ? REP_TOP : j]);
        for (long b = 0; b < nb; b++) {
            double c = 0;
            for (int i = 0; i <= j; i++) c += sh[b * (k + 1) + i];
            fprintf(v->f, "%s%.1f %.1f", b ? "L" : "M", sx(v, x[b]), py(p, fmin(c, 1)));
        }
        for (long b = nb - 1; b >= 0; b--) {
            double c = 0;
            for (int i = 0; i < j; i++) c += sh[b * (k + 1) + i];
            fprintf(v->f, "L%.1f %.1f", sx(v, x[b]), py(p, fmin(c, 1)));
        }
        fprintf(v->f, "Z\"/>\n");
    }
    svg_panel_end(v, p);
    LgItem it[REP_TOP + 1];
    for (int j = 0; j < k; j++) it[j] = (LgItem){LG_AREA, col[j], NULL, 0.85, r->t.names[v->s->top[j].idx]};
    it[k] = (LgItem){LG_AREA, col[REP_TOP], NULL, 0.85, "others"};
    svg_legend(v->f, p->x + p->w, p->y - 9, it, bands);
done:
    free(layer);
    free(x);
    free(sh);
}

/* Above the panels, at `strip`: a triangle per event and, where one of three
 * label rows has room, a label joined to it; a kind with many events gets a
 * tick each instead. */
static void svg_events(Svg *v, double strip)
{
    const Report *r = v->r;
    double row_end[3] = {-1e9, -1e9, -1e9}, row_y[3] = {strip - 44, strip - 29, strip - 14};
    for (long i = 0; i < r->nev; i++) {
        const RepEvent *e = &r->ev[i];
        KindStyle ks = kind_style(e->kind);
        double x = sx(v, (double)e->seq);
        if (!event_first_in_column(v, i)) continue;
        if (r->kind_count[e->kind_idx] > SVG_EVENT_LINES) {
            fprintf(v->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.2\"/>\n",
                    x, strip - 9, x, strip, ks.color);
            continue;
        }
        fprintf(v->f, "<path d=\"M%.1f %.1fl-5 -8h10z\" fill=\"%s\"/>\n", x, strip, ks.color);
        char label[128];
        if (e->rollback_to >= 0)
            snprintf(label, sizeof label, "%s @%lld \xe2\x86\x92 rollback to %lld", e->kind, (long long)e->step,
                     (long long)e->rollback_to);
        else
            snprintf(label, sizeof label, "%s @%lld", e->kind, (long long)e->step);
        double w = 6.4 * (double)strlen(label), lx = x + 5;
        if (lx + w > SVG_W - SVG_MR) lx = x - 5 - w;
        for (int k = 0; k < 3; k++) {
            if (fmin(lx, x) < row_end[k] + 10) continue;
            fprintf(v->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.2\"%s%s%s/>\n",
                    x, row_y[k] - 10, x, strip - 8, ks.color, ks.dash ? " stroke-dasharray=\"" : "",
                    ks.dash ? ks.dash : "", ks.dash ? "\"" : "");
            fprintf(v->f, "<text class=\"ev\" x=\"%.1f\" y=\"%.1f\">", lx + (lx > x ? 2 : -2), row_y[k]);
            xml_text(v->f, label);
            fprintf(v->f, "</text>\n");
            row_end[k] = fmax(lx + w, x);
            break;
        }
    }
}

/* Alternating bands, one per epoch, with its number, in a strip at y. */
static void svg_epochs(Svg *v, double y)
{
    const Report *r = v->r;
    double a = v->x0;
    long n = r->nep + (v->s->has_cur ? 1 : 0);
    for (long i = 0; i < n; i++) {
        const RepEpoch *e = i < r->nep ? &r->ep[i] : &v->s->cur;
        if (!e->end_seq || (double)e->end_seq <= a) continue;
        double x = sx(v, a), w = sx(v, (double)e->end_seq) - x;
        fprintf(v->f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"15\" fill=\"%s\"/>\n", x, y, w,
                i % 2 ? "#f0f0f0" : "#e2e2e2");
        char t[48];
        if (w > 80) snprintf(t, sizeof t, "epoch %d%s", e->epoch, i >= r->nep ? " (running)" : "");
        else if (w > 16) snprintf(t, sizeof t, "%d", e->epoch);
        else t[0] = '\0';
        if (t[0]) fprintf(v->f, "<text class=\"ep\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                          x + w / 2, y + 11.5, t);
        a = (double)e->end_seq;
    }
}

/* Each resume as a dashed line across the panels at the step it continued
 * from, labelled (after a crash: "crash, resume"; a crashed timeline's
 * steps were cut from the logs, so it has no place of its own). */
static void svg_sessions(Svg *v)
{
    const Report *r = v->r;
    for (long i = 0; i < r->nses; i++) {
        const RepSession *s = &r->ses[i];
        if (strcmp(s->kind, "resume") || (double)s->seq < v->x0 || (double)s->seq > v->x1) continue;
        int crash = i > 0 && !strcmp(r->ses[i - 1].kind, "crash");
        double x = sx(v, (double)s->seq + 0.5);
        fprintf(v->f, "<line class=\"resume\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                      "stroke-width=\"1.5\" stroke-dasharray=\"6 3\"/>\n", x, v->top, x, v->bot, C_PURPLE);
        fprintf(v->f, "<text class=\"ep\" x=\"%.1f\" y=\"%.1f\" fill=\"%s\">%s at step %lld</text>\n", x + 3,
                v->top + 11, C_PURPLE, crash ? "crash, resume" : "resume", (long long)s->step);
    }
}

static void svg_head(Svg *v, double height)
{
    fprintf(v->f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%.0f\" viewBox=\"0 0 %d %.0f\">\n"
            "<style>\n"
            "text{font-family:" SVG_FONT ";fill:#222}\n"
            ".title{font-size:21px;font-weight:bold}\n.sub{font-size:13px;fill:#555}\n"
            ".pt{font-size:14.5px;font-weight:bold}\n.lg{font-size:12.5px}\n.tk{font-size:12px;fill:#555}\n"
            ".yl{font-size:13px;fill:#333}\n.xl{font-size:13.5px}\n.ep{font-size:11.5px;fill:#444}\n"
            ".ev{font-size:11.5px;fill:#222}\n.grid{stroke:#e4e4e4;stroke-width:1}\n"
            "</style>\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            SVG_W, height, SVG_W, height);
}

static void svg_title(Svg *v)
{
    const Report *r = v->r;
    const RepSummary *s = v->s;
    FILE *f = v->f;
    fprintf(f, "<title>clipd run ");
    xml_text(f, r->name);
    fprintf(f, "</title>\n<text class=\"title\" x=\"%d\" y=\"30\">clipd run \xe2\x80\x9c", SVG_ML);
    xml_text(f, r->name);
    fprintf(f, "\xe2\x80\x9d</text>\n<text class=\"sub\" x=\"%d\" y=\"50\">", SVG_ML);
    xml_text(f, r->dir);
    fprintf(f, " \xc2\xb7 %ld steps executed (%ld distinct) \xc2\xb7 %ld epochs", r->nst, s->distinct, r->nep);
    if (s->final_epoch) fprintf(f, " \xc2\xb7 final validation loss %.4f", s->final_val);
    fprintf(f, " \xc2\xb7 clip rate %.2f \xc2\xb7 %ld event%s \xc2\xb7 %ld rollback%s%s</text>\n", s->clip_rate,
            r->nev, r->nev == 1 ? "" : "s", s->rollbacks, s->rollbacks == 1 ? "" : "s",
            r->finished ? "" : " \xc2\xb7 unfinished");
}

/* The legend of event kinds (with counts) and of rollback bands. */
static void svg_event_legend(Svg *v, double y)
{
    const Report *r = v->r;
    LgItem it[10];
    char lab[10][80];
    int n = 0;
    for (int k = 0; k < r->nkinds && n < 9; k++) {
        KindStyle ks = kind_style(r->kinds[k]);
        snprintf(lab[n], sizeof lab[n], "%s (%ld%s)", r->kinds[k], r->kind_count[k],
                 r->kind_count[k] > SVG_EVENT_LINES ? ", ticks above" : "");
        it[n] = (LgItem){LG_LINE, ks.color, ks.dash, 2, lab[n]};
        n++;
    }
    char bl[96] = "steps re-run after a rollback";
    if (v->bands_total > v->nbands)
        snprintf(bl, sizeof bl, "steps re-run after a rollback (first %ld of %ld ranges drawn)", v->nbands,
                 v->bands_total);
    if (v->bands_total) it[n++] = (LgItem){LG_AREA, "#000", NULL, 0.12, bl};
    if (n == 0) it[n++] = (LgItem){LG_LINE, "#bbb", "1 3", 1, "no divergence events"};
    fprintf(v->f, "<text class=\"lg\" x=\"%d\" y=\"%.1f\" font-weight=\"bold\">Events</text>\n", SVG_ML, y);
    svg_legend(v->f, SVG_W - SVG_MR, y, it, n);
}

static void svg_xaxis(Svg *v)
{
    double xt[64];
    char b[32];
    int nx = rep_ticks(xt, 64, v->x0, v->x1, 10);
    for (int i = 0; i < nx; i++) {
        fprintf(v->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\"/>\n", sx(v, xt[i]),
                v->bot, sx(v, xt[i]), v->bot + 5);
        fprintf(v->f, "<text class=\"tk\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", sx(v, xt[i]),
                v->bot + 19, tick_label(b, sizeof b, xt[i], false));
    }
    fprintf(v->f, "<text class=\"xl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step (executed steps in order: "
                  "steps re-run after a rollback count again)</text>\n",
            SVG_ML + SVG_COLS / 2.0, v->bot + 42);
}

static void svg_draw(Svg *v)
{
    const Report *r = v->r;
    Panel ps[4];
    static const double hs[4] = {230, 230, 140, 170};
    int np = r->has_tensors && v->s->ntop ? 4 : 3;
    double y = v->r->nev ? 176 : 132;
    for (int i = 0; i < np; i++) {
        ps[i] = (Panel){.x = SVG_ML, .y = y + 30, .w = SVG_COLS, .h = hs[i]};
        y = ps[i].y + ps[i].h + 12;
    }
    v->top = ps[0].y, v->bot = ps[np - 1].y + ps[np - 1].h;
    svg_head(v, v->bot + 62);
    svg_title(v);
    svg_event_legend(v, 78);
    svg_epochs(v, 90);
    svg_loss(v, &ps[0]);
    svg_norm(v, &ps[1]);
    svg_clip(v, &ps[2]);
    if (np == 4) svg_tensors(v, &ps[3]);
    svg_events(v, ps[0].y - 28);
    svg_sessions(v);
    svg_xaxis(v);
    fprintf(v->f, "</svg>\n");
}

int rep_write_svg(const Report *r, const RepSummary *s, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        return -1;
    }
    size_t n = (size_t)(r->nst ? r->nst : 1);
    Svg v = {.f = f, .r = r, .s = s, .x = malloc(n * sizeof(double)), .y = malloc(n * sizeof(double)),
             .ox = malloc((2 * SVG_COLS + 2) * sizeof(double)), .oy = malloc((2 * SVG_COLS + 2) * sizeof(double))};
    int rc = 0;
    if (!v.x || !v.y || !v.ox || !v.oy) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = -1;
    } else if (r->nst == 0) {
        svg_head(&v, 120);
        svg_title(&v);
        fprintf(f, "<text class=\"pt\" x=\"%d\" y=\"90\">No steps yet.</text>\n</svg>\n", SVG_ML);
    } else {
        for (long i = 0; i < r->nst; i++) v.x[i] = (double)r->st[i].seq;
        v.x0 = r->st[0].seq > 1 ? (double)r->st[0].seq - 1 : 0;
        v.x1 = fmax((double)r->st[r->nst - 1].seq, v.x0 + 1);
        svg_find_bands(&v);
        svg_draw(&v);
    }
    if ((ferror(f) | fclose(f)) && rc == 0) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        rc = -1;
    }
    free(v.x), free(v.y), free(v.ox), free(v.oy);
    return rc;
}

/* -------------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f, "usage: clipd-report RUN_DIR [--json] [--svg FILE] [--max-norm X]\n"
               "       clipd-report --html FILE RUN_DIR [RUN_DIR ...]   (up to 8 runs overlaid)\n"
               "  Summarises a clipd run directory (steps, epochs, events, tensors .jsonl).\n"
               "  --json        the summary as one JSON object on stdout\n"
               "  --svg FILE    also draw the run as one self-contained SVG\n"
               "  --html FILE   draw the runs on one self-contained HTML page (no script, nothing fetched)\n"
               "  --max-norm X  the clip threshold (default: clip.max_norm of RUN_DIR/config.yaml)\n"
               "Exit 0 on success, 2 when RUN_DIR is not a readable run, 1 when FILE or stdout cannot be written.\n");
}

static int parse_args(int argc, char **argv, const char **dir, const char **svg, bool *json, double *max_norm)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return usage(stdout), 1;
        if (strcmp(a, "--json") == 0) *json = true;
        else if (strcmp(a, "--svg") == 0 && i + 1 < argc) *svg = argv[++i];
        else if (strcmp(a, "--max-norm") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            *max_norm = strtod(argv[++i], &end);
            if (end == argv[i] || *end || errno || !(*max_norm > 0) || !isfinite(*max_norm)) {
                fprintf(stderr, "clipd-report: --max-norm: expected a positive number, got \"%s\"\n", argv[i]);
                return -1;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "clipd-report: %s: unknown option or missing value\n", a);
            return usage(stderr), -1;
        } else if (*dir) {
            fprintf(stderr, "clipd-report: %s: one RUN_DIR only (already %s)\n", a, *dir);
            return -1;
        } else *dir = a;
    }
    if (!*dir) return usage(stderr), -1;
    return 0;
}

/* Everything printed reached stdout; else says why on stderr. */
static bool stdout_ok(void)
{
    errno = 0;
    if (fflush(stdout) == 0 && !ferror(stdout)) return true;
    fprintf(stderr, "clipd-report: writing standard output: %s\n", strerror(errno ? errno : EIO));
    return false;
}

/* --html FILE RUN_DIR [RUN_DIR ...] */
static int main_html(int argc, char **argv)
{
    const char *path = argc > 2 ? argv[2] : NULL;
    int n = argc - 3;
    if (!path || n < 1 || n > 8) {
        fprintf(stderr, "clipd-report: --html FILE RUN_DIR [RUN_DIR ...]: 1 to 8 run directories\n");
        return 2;
    }
    static Report runs[8];
    const Report *rp[8];
    char err[REP_PATH_MAX + 512];
    int rc = 0, loaded = 0;
    for (; loaded < n && !rc; loaded++) {
        if (argv[3 + loaded][0] == '-') {
            fprintf(stderr, "clipd-report: --html: %s: options go before --html\n", argv[3 + loaded]);
            rc = 2;
        } else if (rep_load(&runs[loaded], argv[3 + loaded], NAN, err, sizeof err)) {
            fprintf(stderr, "clipd-report: %s\n", err);
            rc = 2;
        }
        rp[loaded] = &runs[loaded];
    }
    if (!rc && rep_write_html(rp, n, path, err, sizeof err)) {
        fprintf(stderr, "clipd-report: %s\n", err);
        rc = 1;
    }
    if (!rc) printf("html: wrote %s (%d run%s)\n", path, n, n == 1 ? "" : "s");
    for (int i = 0; i < loaded; i++) rep_free(&runs[i]);
    if (!stdout_ok()) rc = 1;
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--html")) return main_html(argc, argv);
    const char *dir = NULL, *svg = NULL;
    bool json = false;
    double max_norm = NAN;
    int rc = parse_args(argc, argv, &dir, &svg, &json, &max_norm);
    if (rc > 0) return stdout_ok() ? 0 : 1;
    if (rc) return 2;
    static Report r;
    RepSummary s;
    char err[REP_PATH_MAX + 512];
    if (rep_load(&r, dir, max_norm, err, sizeof err)) {
        fprintf(stderr, "clipd-report: %s\n", err);
        rep_free(&r);
        return 2;
    }
    rep_summarise(&r, &s);
    if (svg && rep_write_svg(&r, &s, svg, err, sizeof err)) {
        fprintf(stderr, "clipd-report: %s\n", err);
        rc = 1;
    }
    if (r.nst == 0) rep_note(&r, "no steps yet: %s/steps.jsonl is empty", r.dir);
    if (json) {
        if (rep_print_json(&r, &s) && !ferror(stdout)) {
            fprintf(stderr, "clipd-report: out of memory building the JSON summary\n");
            rc = 1;
        }
    } else if (r.nst == 0) printf("clipd report: %s: no steps yet (steps.jsonl is empty)\n", r.dir);
    else rep_print_text(&r, &s);
    if (svg && rc == 0) fprintf(json ? stderr : stdout, "svg: wrote %s\n", svg);
    if (!stdout_ok()) rc = 1;
    rep_free(&r);
    return rc;
}
