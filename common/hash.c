/* hash: FNV-1a 64 (see hash.h). */
#include "common/hash.h"

#include <string.h>

unsigned long long fnv1a64(const void *p, size_t n, unsigned long long h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static unsigned long long rotl(unsigned long long x, int r) { return x << r | x >> (64 - r); }

/* One lane step: one to one in x (for a fixed w) and in w (for a fixed x);
 * the rotation brings the high bits' differences back to the bottom, where
 * the next multiply spreads them (without it, a flip of bit 63 alone would
 * pass through unchanged, and two of them would cancel). */
static unsigned long long lane(unsigned long long x, unsigned long long w)
{
    return rotl((x ^ w) * 0x9e3779b97f4a7c15ULL, 31);
}

unsigned long long hash_words(const void *p, size_t n, unsigned long long h)
{
    const unsigned char *b = p;
    unsigned long long x[4] = {h, h ^ 0x5851f42d4c957f2dULL, h ^ 0x14057b7ef767814fULL, ~h};
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        unsigned long long w[4];
        memcpy(w, b + i, sizeof w);
        x[0] = lane(x[0], w[0]), x[1] = lane(x[1], w[1]);
        x[2] = lane(x[2], w[2]), x[3] = lane(x[3], w[3]);
    }
    for (int k = 0; i < n; i += 8, k++) { /* the tail, zero-padded words, lane by lane */
        unsigned long long w = 0;
        memcpy(&w, b + i, n - i < 8 ? n - i : 8);
        x[k] = lane(x[k], w);
    }
    unsigned long long r = lane((unsigned long long)n, h); /* then the lanes, word by word */
    for (int k = 0; k < 4; k++) r = lane(r, x[k]);
    return r;
}
