/* hash: FNV-1a 64 (see hash.h). */
#include "common/hash.h"

unsigned long long fnv1a64(const void *p, size_t n, unsigned long long h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}
