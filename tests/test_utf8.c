/* Unit tests of the UTF-8 decoder (common/utf8.c) against an independent
 * reference written the other way round (decode by bit masks, then reject
 * overlong forms, surrogates and code points past U+10FFFF by value): every
 * 1- to 3-byte input, and 4-byte inputs over the bytes at every range edge. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "common/utf8.h"

/* Length of the character at s (n bytes) or 0, with its code point. */
static int ref_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) return *cp = c, 1;
    if ((c & 0xE0) == 0xC0) len = 2, v = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) len = 3, v = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) len = 4, v = c & 0x07, min = 0x10000;
    else return 0;
    if (n < (size_t)len) return 0;
    for (int j = 1; j < len; j++) {
        if ((s[j] & 0xC0) != 0x80) return 0;
        v = v << 6 | (s[j] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    return *cp = v, len;
}

static long compare(const unsigned char *s, size_t n)
{
    uint32_t a = 0, b = 0;
    size_t bad;
    int got = utf8_decode(s, n, &a, &bad), want = ref_decode(s, n, &b);
    if (got != want || (got && a != b) || (!got && bad > n)) {
        printf("utf8_decode(%02x %02x %02x %02x, %zu) = %d cp %x bad %zu; reference %d cp %x\n", s[0],
               n > 1 ? s[1] : 0, n > 2 ? s[2] : 0, n > 3 ? s[3] : 0, n, got, a, bad, want, b);
        return 1;
    }
    return 0;
}

static void test_against_reference(void **state)
{
    (void)state;
    static const unsigned char edge[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0,
                                         0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF};
    long wrong = 0, tried = 0;
    unsigned char s[4];
    for (unsigned a = 0; a < 256; a++) {
        s[0] = (unsigned char)a;
        wrong += compare(s, 1), tried++;
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (unsigned char)b;
            wrong += compare(s, 2), tried++;
            for (unsigned c = 0; c < 256 && wrong < 10; c++) {
                s[2] = (unsigned char)c;
                wrong += compare(s, 3), tried++;
                for (size_t d = 0; a >= 0xF0 && d < sizeof edge; d++)
                    s[3] = edge[d], wrong += compare(s, 4), tried++;
            }
        }
    }
    printf("utf8_decode: %ld inputs, %ld differ from the reference (tolerance 0)\n", tried, wrong);
    assert_int_equal(wrong, 0);
}

/* Where a bad sequence goes wrong: the byte a message points at. */
static void test_bad_index(void **state)
{
    (void)state;
    static const struct { const char *s; size_t n, bad; } cases[] = {
        {"\x80", 1, 0},         /* a continuation byte cannot start */
        {"\xC1\xBF", 2, 0},     /* overlong lead */
        {"\xE0\x80\x80", 3, 1}, /* overlong: second byte below A0 */
        {"\xED\xA0\x80", 3, 1}, /* surrogate: second byte above 9F */
        {"\xF4\x90\x80\x80", 4, 1}, /* past U+10FFFF */
        {"\xE2\x82", 2, 2},     /* cut off by the end: bad == avail */
        {"\xF0\x9F\x98\x41", 4, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint32_t cp;
        size_t bad = 99;
        assert_int_equal(utf8_decode((const unsigned char *)cases[i].s, cases[i].n, &cp, &bad), 0);
        assert_int_equal(bad, cases[i].bad);
    }
    uint32_t cp;
    size_t bad;
    assert_int_equal(utf8_decode((const unsigned char *)"\xF0\x9F\x98\x80", 4, &cp, &bad), 4);
    assert_int_equal(cp, 0x1F600);
    assert_int_equal(utf8_decode((const unsigned char *)"", 1, &cp, &bad), 1); /* NUL is a character */
    assert_int_equal(cp, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_reference),
        cmocka_unit_test(test_bad_index),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
