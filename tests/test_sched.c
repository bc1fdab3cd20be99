/* Unit tests of the learning-rate schedules and early stopping against
 * values worked out by hand. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "worker/sched.h"

#define NEAR(a, b) assert_true(fabs((a) - (b)) <= 1e-12 * fmax(1.0, fabs(b)))

static Config base(int kind)
{
    Config c;
    cfg_defaults(&c);
    c.train_lr = 1.0;
    c.train_lr_schedule = kind;
    c.train_epochs = 4;
    c.train_steps_per_epoch = 100;
    return c;
}

static void test_constant_and_step(void **state)
{
    (void)state;
    SchedState s;
    sched_init(&s);
    Config c = base(SCHED_CONSTANT);
    c.train_lr_decay = 0.5, c.train_lr_decay_start = 3;
    NEAR(sched_lr(&c, &s, 250, 3), 1.0); /* constant ignores the decay */
    c.train_lr_schedule = SCHED_STEP;    /* Zaremba: x0.5 from epoch 3 on */
    NEAR(sched_lr(&c, &s, 1, 1), 1.0);
    NEAR(sched_lr(&c, &s, 150, 2), 1.0);
    NEAR(sched_lr(&c, &s, 250, 3), 0.5);
    NEAR(sched_lr(&c, &s, 350, 4), 0.25);
}

static void test_cosine(void **state)
{
    (void)state;
    SchedState s;
    sched_init(&s);
    Config c = base(SCHED_COSINE);
    c.train_warmup_steps = 100, c.train_lr_min = 0.1; /* 400 steps in all */
    NEAR(sched_lr(&c, &s, 50, 1), 0.5);    /* half way through the warm-up */
    NEAR(sched_lr(&c, &s, 100, 1), 1.0);   /* peak */
    NEAR(sched_lr(&c, &s, 250, 3), 0.55);  /* half way down: 0.1 + 0.45 * (1 + cos(pi/2)) */
    NEAR(sched_lr(&c, &s, 400, 4), 0.1);   /* the floor at the last step */
    assert_true(sched_lr(&c, &s, 200, 2) > sched_lr(&c, &s, 300, 3));
}

static void test_plateau_and_early_stop(void **state)
{
    (void)state;
    SchedState s;
    sched_init(&s);
    Config c = base(SCHED_PLATEAU);
    c.train_lr_decay = 0.1, c.train_plateau_patience = 2, c.train_early_stop = 3;
    assert_int_equal(sched_epoch_end(&c, &s, 2.0), 0);
    assert_int_equal(sched_epoch_end(&c, &s, 1.5), 0); /* better */
    NEAR(sched_lr(&c, &s, 1, 3), 1.0);
    assert_int_equal(sched_epoch_end(&c, &s, 1.6), 0); /* worse: 1 */
    NEAR(sched_lr(&c, &s, 1, 4), 1.0);
    assert_int_equal(sched_epoch_end(&c, &s, 1.5), 0); /* equal is not better: 2 -> decay */
    NEAR(sched_lr(&c, &s, 1, 5), 0.1);
    assert_int_equal(sched_epoch_end(&c, &s, NAN), 0);  /* no validation: nothing changes */
    assert_int_equal(sched_epoch_end(&c, &s, 1.7), 1);  /* 3 epochs without a better loss: stop */
    sched_init(&s);
    c.train_early_stop = 0;
    for (int i = 0; i < 10; i++) assert_int_equal(sched_epoch_end(&c, &s, 5.0 + i), 0); /* off */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constant_and_step),
        cmocka_unit_test(test_cosine),
        cmocka_unit_test(test_plateau_and_early_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
