/* Unit tests of FNV-1a 64 (common/hash.c) against the published test
 * vectors of the FNV reference (isthe.com/chongo/tech/comp/fnv), and the
 * chaining the checkpoint checksum relies on (tensor after tensor). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "common/hash.h"

static void test_vectors(void **state)
{
    (void)state;
    static const struct { const char *s; unsigned long long h; } v[] = {
        {"", 0xcbf29ce484222325ULL},
        {"a", 0xaf63dc4c8601ec8cULL},
        {"foobar", 0x85944171f73967e8ULL},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        assert_int_equal(fnv1a64(v[i].s, strlen(v[i].s), FNV1A64_INIT), v[i].h);
}

static void test_chaining(void **state)
{
    (void)state;
    const char *s = "checkpoint tensors";
    for (size_t cut = 0; cut <= strlen(s); cut++)
        assert_int_equal(fnv1a64(s + cut, strlen(s) - cut, fnv1a64(s, cut, FNV1A64_INIT)),
                         fnv1a64(s, strlen(s), FNV1A64_INIT));
}

/* hash_words: every single-bit flip anywhere in a buffer (the lanes' words
 * and the tail) changes the hash; so does the length, and the seed; equal
 * bytes at another address (unaligned) hash the same. */
static void test_words(void **state)
{
    (void)state;
    enum { N = 203 }; /* 6 blocks of 32 bytes and an 11-byte tail */
    unsigned char buf[N + 1], moved[N + 8];
    for (int i = 0; i < N + 1; i++) buf[i] = (unsigned char)(i * 37 + 11);
    unsigned long long h = hash_words(buf, N, FNV1A64_INIT);
    memcpy(moved + 3, buf, N);
    assert_int_equal(hash_words(moved + 3, N, FNV1A64_INIT), h);
    for (int i = 0; i < N; i++)
        for (int bit = 0; bit < 8; bit++) {
            buf[i] ^= (unsigned char)(1u << bit);
            assert_int_not_equal(hash_words(buf, N, FNV1A64_INIT), h);
            buf[i] ^= (unsigned char)(1u << bit);
        }
    assert_int_equal(hash_words(buf, N, FNV1A64_INIT), h);
    buf[N] = 0;
    assert_int_not_equal(hash_words(buf, N + 1, FNV1A64_INIT), h);
    assert_int_not_equal(hash_words(buf, N, FNV1A64_INIT + 1), h);
    assert_int_not_equal(hash_words(buf, N, FNV1A64_INIT), fnv1a64(buf, N, FNV1A64_INIT));
    /* Sign flips of two floats in the same lane, blocks apart (bit 63 of
     * their words): a multiply alone carries that difference unchanged, and
     * two of them would cancel. */
    float f[64];
    for (int i = 0; i < 64; i++) f[i] = (float)i + 0.5f;
    unsigned long long hf = hash_words(f, sizeof f, FNV1A64_INIT);
    for (int a = 0; a < 64; a++)
        for (int c = a + 1; c < 64; c++) {
            f[a] = -f[a], f[c] = -f[c];
            assert_int_not_equal(hash_words(f, sizeof f, FNV1A64_INIT), hf);
            f[a] = -f[a], f[c] = -f[c];
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_chaining),
        cmocka_unit_test(test_words),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
