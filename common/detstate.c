/* detstate: the detector's checkpointed history, its length and invariants
 * (see detstate.h). */
#include "common/detstate.h"

#include <math.h>

size_t detstate_len(int window)
{
    return DETSTATE_HEADER + 5 * (size_t)window;
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

int detstate_ok(const double *in, size_t len, int w)
{
    const double big = 9007199254740992.0; /* 2^53 */
    if (!in || w < 1 || len != detstate_len(w)) return 0;
    const double *rings = in + DETSTATE_HEADER, *clip = rings + 4 * (size_t)w;
    if (in[0] != DETSTATE_MAGIC || in[1] != w) return 0;
    for (int i = 0; i < 4; i++)
        if (!ring_header_ok(in + 2 + 3 * i, w)) return 0;
    for (int i = 14; i <= 16; i++)
        if (isinf(in[i])) return 0;
    if (!is_count(in[17], big)) return 0;
    if (!is_count(in[18], w) || !is_count(in[19], w - 1) || !is_count(in[20], in[18]) || !is_count(in[21], w))
        return 0;
    if (in[18] < w && in[19] != in[18]) return 0;
    if (!is_count(in[22], 1) || !is_count(in[23], 1)) return 0;
    if (!is_count(in[24], big) || !is_count(in[25], in[24]) || !is_count(in[26], big) ||
        !is_count(in[27], in[26]))
        return 0;
    if (isinf(in[28]) || isinf(in[29]) || !is_count(in[30], 2147483647.0) || in[31] != 0) return 0;
    for (size_t i = 0; i < 4 * (size_t)w; i++) {
        if (!isfinite(rings[i])) return 0;
        if ((i / (size_t)w) % 2 == 1 && rings[i] < 0) return 0; /* differences are absolute */
    }
    int count = 0;
    for (int i = 0; i < w; i++) {
        if (clip[i] != 0 && clip[i] != 1) return 0;
        if (i < (int)in[18]) count += clip[i] == 1;
        else if (clip[i] != 0) return 0;
    }
    return count == (int)in[20];
}
