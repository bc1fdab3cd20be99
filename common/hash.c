/* hash: FNV-1a 64 (see hash.h). */
#include "common/hash.h"

#include <string.h>

unsigned long long fnv1a64(const void *p, size_t n, unsigned long long h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

unsigned long long hash_words(const void *p, size_t n, unsigned long long h)
{
    const unsigned char *b = p;
    const unsigned long long K = 0x9e3779b97f4a7c15ULL; /* odd: x -> (x ^ w) * K is one to one */
    unsigned long long x[4] = {h, h ^ 0x5851f42d4c957f2dULL, h ^ 0x14057b7ef767814fULL, ~h};
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        unsigned long long w[4];
        memcpy(w, b + i, sizeof w);
        x[0] = (x[0] ^ w[0]) * K, x[1] = (x[1] ^ w[1]) * K;
        x[2] = (x[2] ^ w[2]) * K, x[3] = (x[3] ^ w[3]) * K;
    }
    return fnv1a64(b + i, n - i, fnv1a64(x, sizeof x, FNV1A64_INIT ^ (unsigned long long)n));
}
