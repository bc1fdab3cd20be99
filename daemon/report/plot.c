/* plot: the numerics under the SVG and HTML plots (see report.h): smoothing,
 * windowed rates, decimation to pixel columns, axis ticks. */
#include "daemon/report/internal.h"

#include <math.h>
#include <stdbool.h>

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

int rep_column(double x, double x0, double x1, int cols)
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
        int c = rep_column(x[i], x0, x1, cols);
        long lo = i, hi = i, j = i + 1;
        for (; j < n && rep_column(x[j], x0, x1, cols) == c; j++) {
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

