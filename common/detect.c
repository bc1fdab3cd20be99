/* detect: the divergence detector (see detect.h). Rolling statistics are recomputed
 * exactly by a two-pass loop in double over at most `window` values every step, in ring
 * storage order: no running sums to drift, and the same bits on every rank and after a
 * checkpoint round trip. */
#include "common/detect.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DETECT_STD_FLOOR 1e-12            /* keeps the z-score finite on a flat series */
#define DETECT_MAX_WINDOW (1 << 24)
#define DETECT_MAGIC 1145394225.0         /* "DET1" as an integer */
#define DETECT_HEADER 22                  /* doubles before the three rings */
#define SPIKE_MASK ((1u << EV_NONFINITE_LOSS) | (1u << EV_NONFINITE_GRAD) | \
                    (1u << EV_LOSS_SPIKE) | (1u << EV_GRAD_NORM_SPIKE))

static const char *const kind_names[EV_COUNT] = {
    "nonfinite_loss", "nonfinite_grad", "loss_spike", "grad_norm_spike",
    "clip_saturation", "clip_inactive", "replica_drift", "val_loss_rise",
};

const char *detect_kind_name(int kind)
{
    return (kind >= 0 && kind < EV_COUNT) ? kind_names[kind] : NULL;
}

int detect_kind_from_name(const char *name)
{
    if (!name) return -1;
    for (int k = 0; k < EV_COUNT; k++)
        if (strcmp(name, kind_names[k]) == 0) return k;
    return -1;
}

void detect_defaults(DetectParams *p)
{
    p->window = 100;
    p->warmup = 100;
    p->loss_z = 6.0;
    p->loss_rel = 0.1;
    p->norm_z = 6.0;
    p->norm_rel = 1.0;
    p->sat_rate = 0.9;
    p->val_patience = 3;
}

static int params_ok(const DetectParams *p)
{
    return p->window >= 2 && p->window <= DETECT_MAX_WINDOW && p->warmup >= 2 &&
           isfinite(p->loss_z) && p->loss_z > 0 && isfinite(p->loss_rel) && p->loss_rel >= 0 &&
           isfinite(p->norm_z) && p->norm_z > 0 && isfinite(p->norm_rel) && p->norm_rel >= 0 &&
           isfinite(p->sat_rate) && p->sat_rate >= 0 && p->sat_rate <= 1 && p->val_patience >= 1;
}

int detect_init(Detector *d, const DetectParams *p)
{
    memset(d, 0, sizeof *d);
    if (!p) return -1;
    d->p = *p;
    if (d->p.warmup == 0) d->p.warmup = d->p.window;
    if (!params_ok(&d->p)) return -1;
    size_t w = (size_t)d->p.window;
    d->loss.v = calloc(w, sizeof(double));
    d->lnorm.v = calloc(w, sizeof(double));
    d->clip = calloc(w, 1);
    if (!d->loss.v || !d->lnorm.v || !d->clip) {
        detect_free(d);
        return -1;
    }
    d->val_prev = NAN;
    d->val_base = NAN;
    return 0;
}

void detect_free(Detector *d)
{
    free(d->loss.v);
    free(d->lnorm.v);
    free(d->clip);
    memset(d, 0, sizeof *d);
}

/* Mean and population std of the values held (0, 0 when empty). */
static void ring_stats(const DetectRing *r, double *mean, double *std)
{
    double sum = 0, sq = 0;
    if (r->n == 0) {
        *mean = 0;
        *std = 0;
        return;
    }
    for (int i = 0; i < r->n; i++) sum += r->v[i];
    double m = sum / r->n;
    for (int i = 0; i < r->n; i++) sq += (r->v[i] - m) * (r->v[i] - m);
    *mean = m;
    *std = sqrt(sq / r->n);
}

static void ring_push(DetectRing *r, int window, double x)
{
    r->v[r->pos] = x;
    r->pos = (r->pos + 1) % window;
    if (r->n < window) r->n++;
    r->seen++;
}

static unsigned report(EventInfo *info, int kind, double value, double mean, double std, double thr)
{
    if (info) info[kind] = (EventInfo){ value, mean, std, thr };
    return 1u << kind;
}

int detect_stats(const Detector *d, int kind, double *mean, double *std, int *n)
{
    const DetectRing *r = kind == EV_LOSS_SPIKE ? &d->loss : kind == EV_GRAD_NORM_SPIKE ? &d->lnorm : NULL;
    double m, s;
    if (!r) return -1;
    ring_stats(r, &m, &s);
    if (mean) *mean = m;
    if (std) *std = s;
    if (n) *n = r->n;
    return 0;
}

/* Non-finite and spike tests; the histories take the step only if none fired. */
static unsigned step_values(Detector *d, double loss, double norm, EventInfo *info)
{
    const DetectParams *p = &d->p;
    unsigned fired = 0;
    double lm, ls, nm, ns;
    ring_stats(&d->loss, &lm, &ls);
    ring_stats(&d->lnorm, &nm, &ns);
    double gm = d->lnorm.n ? exp(nm) : 0; /* geometric mean of the norm */
    int loss_ok = isfinite(loss), norm_ok = isfinite(norm), norm_pos = norm_ok && norm > 0;
    double lnorm = norm_pos ? log(norm) : 0;

    if (!loss_ok) fired |= report(info, EV_NONFINITE_LOSS, loss, lm, ls, NAN);
    if (!norm_ok) fired |= report(info, EV_NONFINITE_GRAD, norm, gm, ns, NAN);
    if (loss_ok && d->loss.seen >= p->warmup) {
        double thr = fmax(lm + p->loss_z * fmax(ls, DETECT_STD_FLOOR), lm + p->loss_rel * fabs(lm));
        if (loss > thr) fired |= report(info, EV_LOSS_SPIKE, loss, lm, ls, thr);
    }
    if (norm_pos && d->lnorm.seen >= p->warmup) {
        double thr = fmax(nm + p->norm_z * fmax(ns, DETECT_STD_FLOOR), nm + log1p(p->norm_rel));
        if (lnorm > thr) fired |= report(info, EV_GRAD_NORM_SPIKE, norm, gm, ns, exp(thr));
    }
    if (!(fired & SPIKE_MASK)) {
        ring_push(&d->loss, p->window, loss);
        if (norm_pos) ring_push(&d->lnorm, p->window, lnorm);
    }
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
    if (d->clip_n < w || d->sat_cooldown > 0 || !(rate > d->p.sat_rate)) return 0;
    d->sat_cooldown = w;
    double run = (double)d->total_clipped / (double)d->total_steps;
    return report(info, EV_CLIP_SATURATION, rate, run, 0, d->p.sat_rate);
}

unsigned detect_step(Detector *d, double loss, double grad_norm, int clipped, EventInfo info[EV_COUNT])
{
    unsigned fired = step_values(d, loss, grad_norm, info);
    return fired | step_clip(d, clipped, info);
}

unsigned detect_epoch_end(Detector *d, int clip_active, double val_loss, EventInfo info[EV_COUNT])
{
    unsigned fired = 0;
    if (clip_active && d->epoch_steps > 0 && d->epoch_clipped == 0) {
        double run = (double)d->total_clipped / (double)d->total_steps;
        fired |= report(info, EV_CLIP_INACTIVE, 0.0, run, 0, 0);
    }
    d->epoch_steps = 0;
    d->epoch_clipped = 0;
    if (!isfinite(val_loss)) return fired;
    if (isfinite(d->val_prev) && val_loss > d->val_prev) {
        if (d->val_run == 0) d->val_base = d->val_prev;
        d->val_run++;
    } else {
        d->val_run = 0;
    }
    if (d->val_run >= d->p.val_patience) {
        fired |= report(info, EV_VAL_LOSS_RISE, val_loss, d->val_base, 0, d->val_prev);
        d->val_run = 0;
    }
    d->val_prev = val_loss;
    return fired;
}

/* ---- state as doubles ----
 * [0] magic [1] window [2..4] loss n, pos, seen [5..7] lnorm n, pos, seen
 * [8..11] clip n, pos, count, sat_cooldown [12..15] epoch steps, clipped, total steps, clipped
 * [16] val_prev [17] val_base [18] val_run [19..21] reserved (0)
 * then loss (window), lnorm (window), clip flags (window). */

size_t detect_state_len(const Detector *d)
{
    return DETECT_HEADER + 3 * (size_t)d->p.window;
}

void detect_save(const Detector *d, double *out)
{
    size_t w = (size_t)d->p.window;
    double h[DETECT_HEADER] = {
        DETECT_MAGIC, d->p.window,
        d->loss.n, d->loss.pos, (double)d->loss.seen,
        d->lnorm.n, d->lnorm.pos, (double)d->lnorm.seen,
        d->clip_n, d->clip_pos, d->clip_count, d->sat_cooldown,
        (double)d->epoch_steps, (double)d->epoch_clipped,
        (double)d->total_steps, (double)d->total_clipped,
        d->val_prev, d->val_base, d->val_run, 0, 0, 0,
    };
    memcpy(out, h, sizeof h);
    memcpy(out + DETECT_HEADER, d->loss.v, w * sizeof(double));
    memcpy(out + DETECT_HEADER + w, d->lnorm.v, w * sizeof(double));
    for (size_t i = 0; i < w; i++) out[DETECT_HEADER + 2 * w + i] = d->clip[i];
}

/* An integer in [0, max], exactly. */
static int is_count(double x, double max)
{
    return x >= 0 && x <= max && x == floor(x);
}

/* A ring fills slots 0..n-1 in order, then wraps: pos == n until it is full. */
static int ring_header_ok(const double *h, int w)
{
    double n = h[0], pos = h[1], seen = h[2];
    if (!is_count(n, w) || !is_count(pos, w - 1) || !is_count(seen, 9007199254740992.0)) return 0;
    if (n < w) return pos == n && seen == n;
    return seen >= n;
}

static int state_ok(const double *in, int w)
{
    const double *loss = in + DETECT_HEADER, *lnorm = loss + w, *clip = lnorm + w;
    const double big = 9007199254740992.0; /* 2^53 */
    if (in[0] != DETECT_MAGIC || in[1] != w) return 0;
    if (!ring_header_ok(in + 2, w) || !ring_header_ok(in + 5, w)) return 0;
    if (!is_count(in[8], w) || !is_count(in[9], w - 1) || !is_count(in[10], in[8]) || !is_count(in[11], w))
        return 0;
    if (in[8] < w && in[9] != in[8]) return 0;
    if (!is_count(in[12], big) || !is_count(in[13], in[12]) || !is_count(in[14], big) ||
        !is_count(in[15], in[14]))
        return 0;
    if (isinf(in[16]) || isinf(in[17]) || !is_count(in[18], 2147483647.0)) return 0;
    if (in[19] != 0 || in[20] != 0 || in[21] != 0) return 0;
    int count = 0;
    for (int i = 0; i < w; i++) {
        if (!isfinite(loss[i]) || !isfinite(lnorm[i])) return 0;
        if (clip[i] != 0 && clip[i] != 1) return 0;
        if (i < (int)in[8]) count += clip[i] == 1;
        else if (clip[i] != 0) return 0;
    }
    return count == (int)in[10];
}

int detect_load(Detector *d, const double *in, size_t len)
{
    int w = d->p.window;
    if (!in || len != detect_state_len(d) || !state_ok(in, w)) return -1;
    d->loss.n = (int)in[2];
    d->loss.pos = (int)in[3];
    d->loss.seen = (int64_t)in[4];
    d->lnorm.n = (int)in[5];
    d->lnorm.pos = (int)in[6];
    d->lnorm.seen = (int64_t)in[7];
    d->clip_n = (int)in[8];
    d->clip_pos = (int)in[9];
    d->clip_count = (int)in[10];
    d->sat_cooldown = (int)in[11];
    d->epoch_steps = (int64_t)in[12];
    d->epoch_clipped = (int64_t)in[13];
    d->total_steps = (int64_t)in[14];
    d->total_clipped = (int64_t)in[15];
    d->val_prev = in[16];
    d->val_base = in[17];
    d->val_run = (int)in[18];
    memcpy(d->loss.v, in + DETECT_HEADER, (size_t)w * sizeof(double));
    memcpy(d->lnorm.v, in + DETECT_HEADER + w, (size_t)w * sizeof(double));
    for (int i = 0; i < w; i++) d->clip[i] = (unsigned char)in[DETECT_HEADER + 2 * w + i];
    return 0;
}
