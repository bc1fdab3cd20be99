/* text: the one-screen summary of a run on stdout (see report.h). */
#include "daemon/report/internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REP_LIST_CAP 8    /* steps listed per event kind in the text */
#define REP_EPOCH_ROWS 20 /* epoch table rows before the middle is elided */

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

