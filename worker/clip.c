/* clip: coefficient formulas (see clip.h). */
#include "worker/clip.h"

#include <math.h>

#include "common/cfg.h"
#include "worker/sync.h"

double clip_norm_from_sumsq(double sumsq) { return sqrt(sumsq); }

double clip_coef(double norm, double max_norm)
{
    if (!isfinite(norm)) return NAN;
    return max_norm / fmax(norm, max_norm);
}

void clip_apply(float *g, size_t n, float coef, float clip_value)
{
    for (size_t i = 0; i < n; i++) {
        float x = g[i] * coef;
        if (clip_value > 0) x = fminf(fmaxf(x, -clip_value), clip_value);
        g[i] = x;
    }
}

ClipResult clip_decide(const ParamView *views, int nviews, const double *stats, int mode,
                       double max_norm, double clip_value)
{
    (void)views;
    ClipResult r = {1.0, 0};
    if (mode == CLIP_GLOBAL_NORM) {
        double norm = clip_norm_from_sumsq(stats[ST_SUMSQ]);
        r.coef = clip_coef(norm, max_norm);
        r.clipped = norm > max_norm;
    } else if (mode == CLIP_PER_TENSOR) {
        for (int v = 0; v < nviews; v++) {
            double coef = clip_coef(clip_norm_from_sumsq(stats[ST_TENSOR0 + v]), max_norm);
            if (coef < 1.0) r.clipped = 1;
            if (coef < r.coef) r.coef = coef;
        }
    } else if (mode == CLIP_VALUE) {
        r.clipped = stats[ST_MAXABS] > clip_value;
    }
    return r;
}

/* clip_apply_update's pass over [lo, hi), without optim_begin. */
static void apply_range(Optim *o, float *params, const float *grads, const ParamView *views,
                        int nviews, size_t lo, size_t hi, const double *stats, int mode,
                        double max_norm, double clip_value, double lr, const ClipResult *d)
{
    if (mode == CLIP_GLOBAL_NORM) {
        optim_update(o, params, grads, lo, hi - lo, (float)d->coef, 0, lr);
    } else if (mode == CLIP_PER_TENSOR) {
        for (int v = 0; v < nviews; v++) {
            size_t a = views[v].off > lo ? views[v].off : lo;
            size_t b = views[v].off + views[v].n < hi ? views[v].off + views[v].n : hi;
            if (b <= a) continue;
            double coef = clip_coef(clip_norm_from_sumsq(stats[ST_TENSOR0 + v]), max_norm);
            optim_update(o, params, grads, a, b - a, (float)coef, 0, lr);
        }
    } else if (mode == CLIP_VALUE) {
        optim_update(o, params, grads, lo, hi - lo, 1.0f, (float)clip_value, lr);
    } else {
        optim_update(o, params, grads, lo, hi - lo, 1.0f, 0, lr);
    }
}

void clip_apply_update(Optim *o, float *params, const float *grads, const ParamView *views,
                       int nviews, size_t lo, size_t hi, const double *stats, int mode,
                       double max_norm, double clip_value, double lr, const ClipResult *d)
{
    optim_begin(o);
    apply_range(o, params, grads, views, nviews, lo, hi, stats, mode, max_norm, clip_value, lr, d);
}

void clip_apply_update_rows(Optim *o, float *params, const float *grads, const ParamView *views,
                            int nviews, size_t lo, size_t hi, const int *rows, int nrows,
                            size_t width, const double *stats, int mode, double max_norm,
                            double clip_value, double lr, const ClipResult *d)
{
    optim_begin(o);
    apply_range(o, params, grads, views, nviews, lo, hi, stats, mode, max_norm, clip_value, lr, d);
    for (int j = 0, k; j < nrows; j = k) { /* runs of consecutive rows, one range each */
        for (k = j + 1; k < nrows && rows[k] == rows[k - 1] + 1; k++) {}
        size_t a = hi + (size_t)rows[j] * width, b = hi + ((size_t)rows[k - 1] + 1) * width;
        apply_range(o, params, grads, views, nviews, a, b, stats, mode, max_norm, clip_value, lr, d);
    }
}
