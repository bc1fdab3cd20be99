/* clip: coefficient formulas (see clip.h). */
#include "worker/clip.h"

#include <math.h>

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
