/* optim: fused clip + optimizer update kernels (see optim.h). */
#include "worker/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfg.h"

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

static inline float clipped(float g, float coef, float cv)
{
    float x = g * coef;
    if (cv > 0) x = fminf(fmaxf(x, -cv), cv);
    return x;
}

void optim_update(Optim *o, float *p, const float *g, size_t off, size_t len, float coef,
                  float clip_value, double lr)
{
    p += off, g += off;
    float wd = o->kind == OPT_ADAMW ? 0.0f : (float)o->weight_decay; /* coupled L2 */
    if (o->kind == OPT_SGD) {
        float flr = (float)lr;
        if (!o->m) {
            for (size_t i = 0; i < len; i++) p[i] -= flr * (clipped(g[i], coef, clip_value) + wd * p[i]);
            return;
        }
        float mu = (float)o->momentum, *m = o->m + (off - o->base);
        for (size_t i = 0; i < len; i++) {
            m[i] = mu * m[i] + clipped(g[i], coef, clip_value) + wd * p[i];
            p[i] -= flr * m[i];
        }
        return;
    }
    /* Adam (Kingma and Ba 2015) with bias correction folded into the step. */
    float *m = o->m + (off - o->base), *v = o->v + (off - o->base);
    float b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
    double bc1 = 1.0 - pow(o->beta1, (double)o->t), bc2 = 1.0 - pow(o->beta2, (double)o->t);
    float step = (float)(lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2));
    float keep = o->kind == OPT_ADAMW ? (float)(1.0 - lr * o->weight_decay) : 1.0f; /* decoupled */
    for (size_t i = 0; i < len; i++) {
        float x = clipped(g[i], coef, clip_value) + wd * p[i];
        p[i] *= keep;
        m[i] = b1 * m[i] + (1.0f - b1) * x;
        v[i] = b2 * v[i] + (1.0f - b2) * x * x;
        p[i] -= step * m[i] / (sqrtf(v[i]) * rbc2 + eps);
    }
}
