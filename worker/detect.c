/* detect: the divergence detector (see detect.h). Medians are recomputed exactly from the
 * rings every step (a sort of at most `window` doubles): no running sums to drift, and the
 * same bits on every rank and after a checkpoint round trip. */
#include "worker/detect.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/detstate.h"

#define DETECT_MAX_WINDOW (1 << 24)
#define DETECT_SHORT 15                   /* the short baseline: median of the last 15 accepted values */
#define MAD_TO_SIGMA 1.482602218505602    /* 1 / Phi^-1(3/4): MAD of a normal -> its std */
#define SPIKE_MASK ((1u << EV_NONFINITE_LOSS) | (1u << EV_NONFINITE_GRAD) | \
                    (1u << EV_LOSS_SPIKE) | (1u << EV_GRAD_NORM_SPIKE))

void detect_defaults(DetectParams *p)
{
    p->window = 100;
    p->warmup = 8;
    p->loss_z = 6.0;
    p->loss_rel = 0.5;
    p->norm_z = 6.0;
    p->norm_rel = 4.0;
    p->loss_uniform = 1.5;
    p->loss_initial = 1.5;
    p->norm_clip = 100.0;
    p->reset_steps = 5;
    p->reset_loss_rel = 1.0;
    p->reset_norm_rel = 9.0;
    p->ln_vocab = 0;
    p->clip_max_norm = 0;
    p->sat_rate = 0.9;
    p->clip_events = CLIPEV_CHANGE;
    p->val_patience = 3;
    p->val_rel = 0.01;
}

static int nonneg(double x) { return isfinite(x) && x >= 0; }

static int params_ok(const DetectParams *p)
{
    return p->window >= 2 && p->window <= DETECT_MAX_WINDOW && p->warmup >= 2 &&
           p->warmup <= p->window && isfinite(p->loss_z) && p->loss_z > 0 && nonneg(p->loss_rel) &&
           isfinite(p->norm_z) && p->norm_z > 0 && nonneg(p->norm_rel) && nonneg(p->loss_uniform) &&
           nonneg(p->loss_initial) && nonneg(p->norm_clip) && p->reset_steps >= 0 &&
           nonneg(p->reset_loss_rel) && nonneg(p->reset_norm_rel) && nonneg(p->ln_vocab) &&
           nonneg(p->clip_max_norm) && isfinite(p->sat_rate) && p->sat_rate >= 0 &&
           p->sat_rate <= 1 && p->clip_events >= CLIPEV_CHANGE && p->clip_events <= CLIPEV_OFF &&
           p->val_patience >= 1 && nonneg(p->val_rel);
}

int detect_init(Detector *d, const DetectParams *p)
{
    memset(d, 0, sizeof *d);
    if (!p) return -1;
    d->p = *p;
    if (!params_ok(&d->p)) return -1;
    size_t w = (size_t)d->p.window;
    d->loss.val.v = calloc(w, sizeof(double));
    d->loss.diff.v = calloc(w, sizeof(double));
    d->lnorm.val.v = calloc(w, sizeof(double));
    d->lnorm.diff.v = calloc(w, sizeof(double));
    d->scratch = calloc(w, sizeof(double));
    d->clip = calloc(w, 1);
    if (!d->loss.val.v || !d->loss.diff.v || !d->lnorm.val.v || !d->lnorm.diff.v || !d->scratch ||
        !d->clip) {
        detect_free(d);
        return -1;
    }
    d->loss.prev = d->lnorm.prev = NAN;
    d->first_loss = NAN;
    d->val_prev = NAN;
    d->val_base = NAN;
    return 0;
}

void detect_free(Detector *d)
{
    free(d->loss.val.v);
    free(d->loss.diff.v);
    free(d->lnorm.val.v);
    free(d->lnorm.diff.v);
    free(d->scratch);
    free(d->clip);
    memset(d, 0, sizeof *d);
}

/* The k-th smallest of a[0, n) (0-based), a partly reordered: every a[i]
 * for i < k is then <= it (Hoare's selection: O(n), where a sort was
 * O(n log n) through a comparison callback, five times a step). */
static double kth_smallest(double *a, int n, int k)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        double p = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] < p) i++;
            while (p < a[j]) j--;
            if (i <= j) {
                double t = a[i];
                a[i++] = a[j], a[j--] = t;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break; /* a[j + 1, i) all equal p, k among them */
    }
    return a[k];
}

/* Median of the newest k values of r (k <= r->n), through scratch; 0 when k == 0. */
static double ring_median(const DetectRing *r, int window, int k, double *scratch)
{
    if (k <= 0) return 0;
    for (int i = 0; i < k; i++) scratch[i] = r->v[(r->pos - 1 - i + window) % window];
    double hi = kth_smallest(scratch, k, k / 2);
    if (k % 2) return hi;
    double lo = scratch[0]; /* the largest of the k / 2 below */
    for (int i = 1; i < k / 2; i++) lo = scratch[i] > lo ? scratch[i] : lo;
    return 0.5 * (lo + hi);
}

static void ring_push(DetectRing *r, int window, double x)
{
    r->v[r->pos] = x;
    r->pos = (r->pos + 1) % window;
    if (r->n < window) r->n++;
    r->seen++;
}

/* Robust baseline and noise (the std of a normal whose successive differences have this
 * median absolute value). The loss's baseline is the smaller of the short and the
 * whole-window median (a healthy loss does not creep up; a diverging one is measured from
 * where it started); the log norm's is the short median (a healthy norm may grow). */
static void series_stats(const Detector *d, const DetectSeries *s, double *base, double *noise)
{
    int w = d->p.window, n = s->val.n;
    double *tmp = d->scratch;
    double recent = ring_median(&s->val, w, n < DETECT_SHORT ? n : DETECT_SHORT, tmp);
    *base = s == &d->loss ? fmin(ring_median(&s->val, w, n, tmp), recent) : recent;
    *noise = MAD_TO_SIGMA * ring_median(&s->diff, w, s->diff.n, tmp) / sqrt(2.0);
}

static void series_accept(DetectSeries *s, int window, double x)
{
    if (!isnan(s->prev)) ring_push(&s->diff, window, fabs(x - s->prev));
    ring_push(&s->val, window, x);
    s->prev = x;
}

static unsigned report(EventInfo *info, int kind, int check, double value, double base,
                       double spread, double thr)
{
    if (info) info[kind] = (EventInfo){value, base, spread, thr, check};
    return 1u << kind;
}

int detect_stats(const Detector *d, int kind, double *baseline, double *spread, int *n)
{
    const DetectSeries *s = kind == EV_LOSS_SPIKE ? &d->loss : kind == EV_GRAD_NORM_SPIKE ? &d->lnorm : NULL;
    double b, sp;
    if (!s) return -1;
    series_stats(d, s, &b, &sp);
    if (baseline) *baseline = b;
    if (spread) *spread = sp;
    if (n) *n = s->val.n;
    return 0;
}

/* loss_spike: uniform, initial, recent, the first that fires. */
static unsigned check_loss(const Detector *d, double loss, int in_reset, EventInfo *info)
{
    const DetectParams *p = &d->p;
    double thr;
    if (p->loss_uniform > 0 && p->ln_vocab > 0 && loss > (thr = p->loss_uniform * p->ln_vocab))
        return report(info, EV_LOSS_SPIKE, CHK_UNIFORM, loss, p->ln_vocab, 0, thr);
    if (p->loss_initial > 0 && d->first_loss > 0 && loss > (thr = p->loss_initial * d->first_loss))
        return report(info, EV_LOSS_SPIKE, CHK_INITIAL, loss, d->first_loss, 0, thr);
    if (d->loss.val.n < p->warmup) return 0;
    double b, s, rel = in_reset ? p->reset_loss_rel : p->loss_rel;
    series_stats(d, &d->loss, &b, &s);
    thr = b + fmax(p->loss_z * s, rel * fabs(b));
    return loss > thr ? report(info, EV_LOSS_SPIKE, CHK_RECENT, loss, b, s, thr) : 0;
}

/* grad_norm_spike: clip_limit, then recent (above the clip threshold only). */
static unsigned check_norm(const Detector *d, double norm, int in_reset, EventInfo *info)
{
    const DetectParams *p = &d->p;
    double thr, cap = p->clip_max_norm;
    if (p->norm_clip > 0 && cap > 0 && norm > (thr = p->norm_clip * cap))
        return report(info, EV_GRAD_NORM_SPIKE, CHK_CLIP_LIMIT, norm, cap, 0, thr);
    if (d->lnorm.val.n < p->warmup || (cap > 0 && !(norm > cap))) return 0;
    double b, s, rel = in_reset ? p->reset_norm_rel : p->norm_rel;
    series_stats(d, &d->lnorm, &b, &s);
    thr = b + fmax(p->norm_z * s, log1p(rel));
    return log(norm) > thr ? report(info, EV_GRAD_NORM_SPIKE, CHK_RECENT, norm, exp(b), s, exp(thr)) : 0;
}

/* Non-finite and spike tests; the histories take the step only if none fired. */
static unsigned step_values(Detector *d, double loss, double norm, EventInfo *info)
{
    unsigned fired = 0;
    int loss_ok = isfinite(loss), norm_ok = isfinite(norm), norm_pos = norm_ok && norm > 0;
    int in_reset = d->since_reset < d->p.reset_steps;
    if (!loss_ok) {
        double b, s;
        series_stats(d, &d->loss, &b, &s);
        fired |= report(info, EV_NONFINITE_LOSS, CHK_NONFINITE, loss, b, s, NAN);
    }
    if (!norm_ok) {
        double b, s;
        series_stats(d, &d->lnorm, &b, &s);
        fired |= report(info, EV_NONFINITE_GRAD, CHK_NONFINITE, norm, d->lnorm.val.n ? exp(b) : 0, s, NAN);
    }
    if (loss_ok) fired |= check_loss(d, loss, in_reset, info);
    if (norm_pos) fired |= check_norm(d, norm, in_reset, info);
    if (!(fired & SPIKE_MASK)) {
        series_accept(&d->loss, d->p.window, loss);
        if (norm_pos) series_accept(&d->lnorm, d->p.window, log(norm));
    }
    if (loss_ok && isnan(d->first_loss)) d->first_loss = loss;
    d->since_reset++;
    return fired;
}

/* The clip-rate window, the epoch's and the run's clip counts, and clip_saturation. */
static unsigned step_clip(Detector *d, int clipped, EventInfo *info)
{
    int w = d->p.window, c = clipped != 0;
    if (d->clip_n == w) d->clip_count -= d->clip[d->clip_pos];
    else d->clip_n++;
    d->clip[d->clip_pos] = (unsigned char)c;
    d->clip_count += c;
    d->clip_pos = (d->clip_pos + 1) % w;
    d->epoch_steps++;
    d->epoch_clipped += c;
    d->total_steps++;
    d->total_clipped += c;
    if (d->sat_cooldown > 0) d->sat_cooldown--;
    double rate = (double)d->clip_count / w;
    int above = d->clip_n == w && rate > d->p.sat_rate, was = d->saturated, fire;
    d->saturated = above;
    if (d->p.clip_events == CLIPEV_ALWAYS) fire = above && d->sat_cooldown == 0;
    else fire = d->p.clip_events == CLIPEV_CHANGE && above && !was;
    if (!fire) return 0;
    d->sat_cooldown = w;
    double run = (double)d->total_clipped / (double)d->total_steps;
    return report(info, EV_CLIP_SATURATION, CHK_WINDOW, rate, run, 0, d->p.sat_rate);
}

unsigned detect_step(Detector *d, double loss, double grad_norm, int clipped, EventInfo info[EV_COUNT])
{
    unsigned fired = step_values(d, loss, grad_norm, info);
    return fired | step_clip(d, clipped, info);
}

void detect_reset(Detector *d)
{
    d->since_reset = 0;
    d->loss.prev = NAN; /* the reset's jump is not noise */
    d->lnorm.prev = NAN;
}

unsigned detect_epoch_end(Detector *d, int clip_active, double val_loss, EventInfo info[EV_COUNT])
{
    unsigned fired = 0;
    int none = clip_active && d->epoch_steps > 0 && d->epoch_clipped == 0, was = d->inactive;
    d->inactive = none;
    if (none && (d->p.clip_events == CLIPEV_ALWAYS || (d->p.clip_events == CLIPEV_CHANGE && !was))) {
        double run = (double)d->total_clipped / (double)d->total_steps;
        fired |= report(info, EV_CLIP_INACTIVE, CHK_EPOCH, 0.0, run, 0, 0);
    }
    d->epoch_steps = 0;
    d->epoch_clipped = 0;
    if (!isfinite(val_loss)) return fired;
    if (isfinite(d->val_prev) && val_loss > d->val_prev + d->p.val_rel * fabs(d->val_prev)) {
        if (d->val_run == 0) d->val_base = d->val_prev;
        d->val_run++;
    } else {
        d->val_run = 0;
    }
    if (d->val_run >= d->p.val_patience) {
        fired |= report(info, EV_VAL_LOSS_RISE, CHK_RISE, val_loss, d->val_base, 0, d->val_prev);
        d->val_run = 0;
    }
    d->val_prev = val_loss;
    return fired;
}

/* ---- state as doubles (layout: common/detstate.h) ---- */

static DetectRing *ring_at(Detector *d, int i)
{
    DetectRing *r[4] = {&d->loss.val, &d->loss.diff, &d->lnorm.val, &d->lnorm.diff};
    return r[i];
}

size_t detect_state_len(const Detector *d)
{
    return detstate_len(d->p.window);
}

void detect_save(const Detector *d, double *out)
{
    size_t w = (size_t)d->p.window;
    Detector *m = (Detector *)d; /* ring_at only reads here */
    double h[DETSTATE_HEADER] = {DETSTATE_MAGIC, d->p.window};
    for (int i = 0; i < 4; i++) {
        const DetectRing *r = ring_at(m, i);
        h[2 + 3 * i] = r->n, h[3 + 3 * i] = r->pos, h[4 + 3 * i] = (double)r->seen;
    }
    double rest[] = {d->loss.prev, d->lnorm.prev, d->first_loss, (double)d->since_reset,
                     d->clip_n, d->clip_pos, d->clip_count, d->sat_cooldown, d->saturated,
                     d->inactive, (double)d->epoch_steps, (double)d->epoch_clipped,
                     (double)d->total_steps, (double)d->total_clipped, d->val_prev, d->val_base,
                     d->val_run, 0};
    memcpy(h + 14, rest, sizeof rest);
    memcpy(out, h, sizeof h);
    for (int i = 0; i < 4; i++) memcpy(out + DETSTATE_HEADER + i * w, ring_at(m, i)->v, w * sizeof(double));
    for (size_t i = 0; i < w; i++) out[DETSTATE_HEADER + 4 * w + i] = d->clip[i];
}

int detect_load(Detector *d, const double *in, size_t len)
{
    int w = d->p.window;
    if (!detstate_ok(in, len, w)) return -1;
    for (int i = 0; i < 4; i++) {
        DetectRing *r = ring_at(d, i);
        r->n = (int)in[2 + 3 * i];
        r->pos = (int)in[3 + 3 * i];
        r->seen = (int64_t)in[4 + 3 * i];
        memcpy(r->v, in + DETSTATE_HEADER + (size_t)i * w, (size_t)w * sizeof(double));
    }
    d->loss.prev = in[14];
    d->lnorm.prev = in[15];
    d->first_loss = in[16];
    d->since_reset = (int64_t)in[17];
    d->clip_n = (int)in[18];
    d->clip_pos = (int)in[19];
    d->clip_count = (int)in[20];
    d->sat_cooldown = (int)in[21];
    d->saturated = (int)in[22];
    d->inactive = (int)in[23];
    d->epoch_steps = (int64_t)in[24];
    d->epoch_clipped = (int64_t)in[25];
    d->total_steps = (int64_t)in[26];
    d->total_clipped = (int64_t)in[27];
    d->val_prev = in[28];
    d->val_base = in[29];
    d->val_run = (int)in[30];
    for (int i = 0; i < w; i++) d->clip[i] = (unsigned char)in[DETSTATE_HEADER + 4 * (size_t)w + i];
    return 0;
}
