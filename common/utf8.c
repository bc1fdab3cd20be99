/* utf8: the decoder (see utf8.h). The lead byte fixes the length and the
 * range of the second byte, which rules out overlong forms, surrogates and
 * code points past U+10FFFF without decoding first. */
#include "common/utf8.h"

int utf8_decode(const unsigned char *p, size_t avail, uint32_t *cp, size_t *bad)
{
    unsigned c = p[0], lo = 0x80, hi = 0xBF;
    int k;
    *bad = 0;
    if (c < 0x80) return *cp = c, 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) k = 2;
    else if (c < 0xF0) k = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c < 0xF5) k = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return 0;
    uint32_t v = c & (0x7Fu >> k);
    for (int j = 1; j < k; j++) {
        if ((size_t)j >= avail) return *bad = (size_t)j, 0;
        if (p[j] < (j == 1 ? lo : 0x80) || p[j] > (j == 1 ? hi : 0xBF)) return *bad = (size_t)j, 0;
        v = v << 6 | (p[j] & 0x3Fu);
    }
    *cp = v;
    return k;
}
