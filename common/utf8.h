/* utf8: the one UTF-8 decoder of the tree (RFC 3629: no overlong forms,
 * no surrogates, nothing past U+10FFFF). The config's printable strings and
 * the text corpora's validation both read characters through it. */
#ifndef CLIPD_UTF8_H
#define CLIPD_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length (1 to 4) of the well-formed character at p (avail >= 1 bytes
 * left) with its code point in *cp (NUL is a character: 1, cp 0). 0 when
 * p does not start one; *bad is then the index of the offending byte: 0 the
 * lead byte, j >= 1 continuation byte j, and j == avail when the input ends
 * inside the character. */
int utf8_decode(const unsigned char *p, size_t avail, uint32_t *cp, size_t *bad);

#endif
