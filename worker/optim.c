/* optim: fused clip + optimizer update kernels (see optim.h). */
#include "worker/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfg.h"
#include "worker/fastmath.h"

int optim_init(Optim *o, int kind, double momentum, double beta1, double beta2, double eps,
               size_t n)
{
    memset(o, 0, sizeof *o);
    o->kind = kind, o->momentum = momentum, o->beta1 = beta1, o->beta2 = beta2, o->eps = eps;
    o->n = n;
    int adam = kind == OPT_ADAM || kind == OPT_ADAMW;
    int need_m = adam || momentum > 0, need_v = adam;
    if (need_m && !(o->m = calloc(n ? n : 1, sizeof(float)))) return -1;
    if (need_v && !(o->v = calloc(n ? n : 1, sizeof(float)))) {
        optim_free(o);
        return -1;
    }
    return 0;
}

void optim_free(Optim *o)
{
    free(o->m), free(o->v);
    o->m = o->v = NULL;
}

void optim_begin(Optim *o) { o->t++; }

/* g * coef, clamped to [-cv, cv] when cv > 0 (NaN stays NaN). */
static inline float clipped(float g, float coef, float cv)
{
    float x = g * coef;
    if (cv > 0) x = x > cv ? cv : x < -cv ? -cv : x;
    return x;
}

/* The kernels: one loop each with no call or branch left inside, so they
 * vectorise (built for AVX-512, AVX2 and the baseline, as fastmath.h says). */
VEC_CLONES
static void sgd_plain(float *restrict p, const float *restrict g, size_t len, float coef, float cv,
                      float flr, float wd)
{
    for (size_t i = 0; i < len; i++) p[i] -= flr * (clipped(g[i], coef, cv) + wd * p[i]);
}

VEC_CLONES
static void sgd_momentum(float *restrict p, float *restrict m, const float *restrict g, size_t len,
                         float coef, float cv, float flr, float wd, float mu)
{
    for (size_t i = 0; i < len; i++) {
        m[i] = mu * m[i] + clipped(g[i], coef, cv) + wd * p[i];
        p[i] -= flr * m[i];
    }
}

VEC_CLONES
static void adam(float *restrict p, float *restrict m, float *restrict v, const float *restrict g,
                 size_t len, float coef, float cv, float wd, float keep, float b1, float b2,
                 float c1, float c2, float step, float rbc2, float eps)
{
    for (size_t i = 0; i < len; i++) {
        float x = clipped(g[i], coef, cv) + wd * p[i];
        p[i] *= keep;
        m[i] = b1 * m[i] + c1 * x;
        v[i] = b2 * v[i] + c2 * x * x;
        p[i] -= step * m[i] / (sqrtf(v[i]) * rbc2 + eps);
    }
}

void optim_update(Optim *o, float *p, const float *g, size_t off, size_t len, float coef,
                  float clip_value, double lr)
{
    p += off, g += off;
    float wd = o->kind == OPT_ADAMW ? 0.0f : (float)o->weight_decay; /* coupled L2 */
    if (o->kind == OPT_SGD) {
        if (!o->m) sgd_plain(p, g, len, coef, clip_value, (float)lr, wd);
        else sgd_momentum(p, o->m + (off - o->base), g, len, coef, clip_value, (float)lr, wd,
                          (float)o->momentum);
        return;
    }
    /* Adam (Kingma and Ba 2015) with bias correction folded into the step.
     * 1 - beta is taken in double, then rounded: 1.0f - 0.999f would be the
     * difference of the rounded beta, 1.3e-5 relative off the textbook's. */
    double bc1 = 1.0 - pow(o->beta1, (double)o->t), bc2 = 1.0 - pow(o->beta2, (double)o->t);
    float keep = o->kind == OPT_ADAMW ? (float)(1.0 - lr * o->weight_decay) : 1.0f; /* decoupled */
    adam(p, o->m + (off - o->base), o->v + (off - o->base), g, len, coef, clip_value, wd, keep,
         (float)o->beta1, (float)o->beta2, (float)(1.0 - o->beta1), (float)(1.0 - o->beta2),
         (float)(lr / bc1), (float)(1.0 / sqrt(bc2)), (float)o->eps);
}
