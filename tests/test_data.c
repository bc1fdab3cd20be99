/* Unit tests of the built-in data sources: the Markov chain's entropy rate
 * against an empirical estimate, the stream layout's independence from the
 * worker split, and the adding problem's targets. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/data.h"
#include "daemon/stats.h"

static Config small_cfg(int source)
{
    Config c;
    memset(&c, 0, sizeof c);
    c.run_seed = 7;
    c.model_vocab = 8;
    c.data_source = source;
    c.data_seq_len = 6;
    c.data_markov_order = 2;
    c.data_markov_branch = 3;
    return c;
}

/* Empirical cross-entropy of a long sample under the true chain equals the
 * computed entropy rate (law of large numbers). */
static void test_entropy_rate(void **state)
{
    (void)state;
    Markov m;
    assert_int_equal(markov_init(&m, 8, 2, 3, 99), 0);
    long n = 400000;
    double h = markov_entropy_rate(&m, 2000);
    Rng r;
    rng_init(&r, 5);
    uint32_t ctx = 0;
    double nll = 0;
    for (long i = 0; i < n; i++) {
        uint32_t before = ctx;
        int s = markov_next(&m, &ctx, &r);
        double prev = 0, p = 0;
        for (int j = 0; j < m.branch; j++) {
            double pj = m.cum[before * 3 + j] - prev;
            prev = m.cum[before * 3 + j];
            if (m.succ[before * 3 + j] == s) p = pj;
        }
        assert_true(p > 0);
        nll -= log(p);
    }
    nll /= (double)n;
    printf("entropy rate %.4f vs empirical %.4f: diff %.2g (tol 0.02)\n", h, nll, fabs(h - nll));
    assert_true(fabs(h - nll) < 0.02);
    assert_true(h > 0 && h < log(3.0) + 1e-12); /* at most log(branch) */
    markov_free(&m);
}

/* Streams depend only on their global index: 1 worker with 4 streams sees
 * what 2 workers with 2 streams each see. */
static void test_layout_independent_of_split(void **state)
{
    (void)state;
    Config c = small_cfg(DATA_MARKOV);
    Batcher all, lo, hi;
    assert_int_equal(batcher_init(&all, &c, 0, 4), 0);
    assert_int_equal(batcher_init(&lo, &c, 0, 2), 0);
    assert_int_equal(batcher_init(&hi, &c, 2, 2), 0);
    batcher_epoch(&all, 123), batcher_epoch(&lo, 123), batcher_epoch(&hi, 123);
    for (int step = 0; step < 3; step++) {
        batcher_next(&all), batcher_next(&lo), batcher_next(&hi);
        for (int t = 0; t < c.data_seq_len; t++)
            for (int b = 0; b < 4; b++) {
                const Batcher *part = b < 2 ? &lo : &hi;
                assert_int_equal(all.inputs[t * 4 + b], part->inputs[t * 2 + b % 2]);
                assert_int_equal(all.targets[t * 4 + b], part->targets[t * 2 + b % 2]);
            }
        /* next step's first input continues the stream */
        for (int b = 0; b < 4; b++)
            assert_int_equal(all.last[b], all.targets[(c.data_seq_len - 1) * 4 + b]);
    }
    /* a different epoch seed gives different data */
    int same = 1;
    int first[24];
    memcpy(first, all.inputs, sizeof first);
    batcher_epoch(&all, 124), batcher_next(&all);
    for (int i = 0; i < 24; i++) same &= first[i] == all.inputs[i];
    assert_false(same);
    batcher_free(&all), batcher_free(&lo), batcher_free(&hi);
}

static void test_adding_targets(void **state)
{
    (void)state;
    Config c = small_cfg(DATA_ADDING);
    c.data_seq_len = 10;
    Batcher b;
    assert_int_equal(batcher_init(&b, &c, 0, 5), 0);
    batcher_epoch(&b, 1);
    batcher_next(&b);
    for (int s = 0; s < 5; s++) {
        double sum = 0;
        int marks = 0, first_half = 0;
        for (int t = 0; t < 10; t++) {
            const float *f = b.features + (t * 5 + s) * 2;
            assert_true(f[0] >= 0 && f[0] < 1);
            if (f[1] == 1.0f) sum += f[0], marks++, first_half += t < 5;
        }
        assert_int_equal(marks, 2);
        assert_int_equal(first_half, 1);
        assert_true(fabs(sum - b.ytarget[s]) < 1e-6);
    }
    batcher_free(&b);
}

static void test_percentile(void **state)
{
    (void)state;
    double v[5] = {5, 1, 4, 2, 3};
    assert_true(stats_percentile(v, 5, 0.5) == 3);
    assert_true(stats_percentile(v, 5, 0.9) == 5);
    assert_true(stats_percentile(v, 5, 1.0) == 5);
    assert_true(stats_percentile(v, 5, 0.0) == 1);
    assert_true(isnan(stats_percentile(v, 0, 0.5)));
    EpochStats s;
    EpochSummary e;
    assert_int_equal(stats_init(&s, 4), 0);
    stats_begin(&s, 1, 0);
    stats_add(&s, 2.0, 1.0, 0, 0, 10);
    stats_add(&s, 4.0, 3.0, 1, 0, 10);
    stats_add(&s, NAN, NAN, 0, 1, 10);  /* skipped: not in loss or norms */
    stats_add(&s, 3.0, 2.0, 1, 0, 10);
    stats_end(&s, 2000, &e);
    assert_true(e.clip_rate == 0.5);
    assert_true(e.train_loss == 3.0);
    assert_true(e.norm_max == 3.0 && e.norm_p50 == 2.0);
    assert_int_equal(e.skipped, 1);
    assert_true(fabs(e.tokens_per_s - 20.0) < 1e-12);
    stats_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entropy_rate),
        cmocka_unit_test(test_layout_independent_of_split),
        cmocka_unit_test(test_adding_targets),
        cmocka_unit_test(test_percentile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
