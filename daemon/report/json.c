/* json: the summary as one JSON object on stdout (`--json`), built with
 * jansson (see report.h); names that are not UTF-8 come out with U+FFFD. */
#include "daemon/report/internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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
        int k = rep_utf8_seq(s + i, &cp);
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

