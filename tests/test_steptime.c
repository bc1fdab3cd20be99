/* Unit tests of the worker's step timers (worker/steptime.c): the median
 * breakdown picks the middle fifth of the steps by total time, averages
 * them phase by phase, skips warm-up steps and keeps only the last cap. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "worker/steptime.h"

/* Step i of a made-up run: compute i ms, sync wait 1 ms, the rest 0. */
static void fill(StepTimes *s, int nsteps)
{
    for (int i = 0; i < nsteps; i++) {
        memset(s->cur, 0, sizeof s->cur);
        s->cur[PH_COMPUTE] = i, s->cur[PH_SYNC] = 1;
        memcpy(s->row[s->n % s->cap], s->cur, sizeof s->cur);
        s->n++;
    }
}

static void test_median_band(void **state)
{
    (void)state;
    StepTimes s;
    assert_int_equal(steptime_init(&s, 100), 0);
    fill(&s, 10); /* totals 1..10: middle fifth = sorted [4, 6) = steps 4, 5 */
    double ph[PH_COUNT], total;
    assert_int_equal(steptime_median(&s, 0, ph, &total), 2);
    printf("median band: compute %g (want 4.5), sync %g (want 1), total %g (want 5.5)\n",
           ph[PH_COMPUTE], ph[PH_SYNC], total);
    assert_true(fabs(ph[PH_COMPUTE] - 4.5) < 1e-12 && fabs(ph[PH_SYNC] - 1) < 1e-12);
    assert_true(fabs(total - 5.5) < 1e-12 && ph[PH_RECORD] == 0);
    /* warm-up 9: only step 9 left */
    assert_int_equal(steptime_median(&s, 9, ph, &total), 1);
    assert_true(fabs(ph[PH_COMPUTE] - 9) < 1e-12);
    assert_int_equal(steptime_median(&s, 10, ph, &total), 0);
    steptime_free(&s);
}

static void test_ring_keeps_last(void **state)
{
    (void)state;
    StepTimes s;
    assert_int_equal(steptime_init(&s, 4), 0);
    fill(&s, 20); /* steps 16..19 kept: middle of 4 = sorted [1, 2) = step 17 */
    double ph[PH_COUNT], total;
    assert_int_equal(steptime_median(&s, 0, ph, &total), 1);
    assert_true(fabs(ph[PH_COMPUTE] - 17) < 1e-12);
    steptime_free(&s);
}

static void test_real_clock(void **state)
{
    (void)state;
    StepTimes s;
    assert_int_equal(steptime_init(&s, 8), 0);
    steptime_begin(&s);
    steptime_mark(&s, PH_COMPUTE);
    steptime_mark(&s, PH_SYNC);
    steptime_end(&s);
    assert_int_equal(s.n, 1);
    for (int p = 0; p < PH_COUNT; p++) assert_true(s.row[0][p] >= 0 && isfinite(s.row[0][p]));
    char line[512];
    steptime_format(&s, 0, line, sizeof line);
    assert_non_null(strstr(line, "mean of the 1 steps"));
    assert_non_null(strstr(line, "+ record "));
    steptime_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_median_band),
        cmocka_unit_test(test_ring_keeps_last),
        cmocka_unit_test(test_real_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
