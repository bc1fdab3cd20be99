/* summary: what the text, JSON and SVG outputs print, computed once from a
 * Report (see report.h): steps, norms and percentiles, epochs and validation
 * losses, throughput, the tensors' shares of the squared norm. */
#include "daemon/report/internal.h"
#include "daemon/stats.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    qsort(u, (size_t)r->nst, sizeof *u, rep_cmp_double);
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

