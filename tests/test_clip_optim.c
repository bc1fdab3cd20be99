/* Unit tests of the clip formulas (tf.clip_by_global_norm, clip_by_norm,
 * clip_by_value) and of the fused clip + optimizer updates against values
 * computed by hand. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "common/cfg.h"
#include "worker/clip.h"
#include "worker/optim.h"

#define NEAR(a, b, tol) assert_true(fabs((double)(a) - (double)(b)) <= (tol))

static void test_coef_formula(void **state)
{
    (void)state;
    NEAR(clip_coef(10.0, 5.0), 0.5, 1e-15);
    assert_true(clip_coef(5.0, 5.0) == 1.0);        /* exactly at the threshold: untouched */
    assert_true(clip_coef(nextafter(5.0, 6.0), 5.0) < 1.0);
    assert_true(clip_coef(0.0, 5.0) == 1.0);        /* zero gradient */
    assert_true(clip_coef(4.999, 5.0) == 1.0);
    assert_true(isnan(clip_coef(INFINITY, 5.0)));   /* non-finite: skip, never scale */
    assert_true(isnan(clip_coef(NAN, 5.0)));
}

/* Two tensors [3,4] and [0,12]: global norm 13. */
static void test_global_and_per_tensor(void **state)
{
    (void)state;
    float g[4] = {3, 4, 0, 12};
    double norm = clip_norm_from_sumsq(9.0 + 16.0 + 144.0);
    NEAR(norm, 13.0, 1e-15);
    clip_apply(g, 4, (float)clip_coef(norm, 6.5), 0);
    NEAR(g[0], 1.5, 1e-7); NEAR(g[1], 2.0, 1e-7); NEAR(g[2], 0.0, 0); NEAR(g[3], 6.0, 1e-6);
    /* direction kept: ratios unchanged */
    NEAR(g[1] / g[0], 4.0 / 3.0, 1e-6);
    float h[4] = {3, 4, 0, 12};
    clip_apply(h, 2, (float)clip_coef(5.0, 6.5), 0);       /* tensor 1 under the limit */
    clip_apply(h + 2, 2, (float)clip_coef(12.0, 6.5), 0);  /* tensor 2 over it */
    NEAR(h[0], 3.0, 0); NEAR(h[1], 4.0, 0); NEAR(h[3], 6.5, 1e-6);
}

static void test_value_clip(void **state)
{
    (void)state;
    float g[5] = {-3.0f, -0.5f, 0.0f, 0.25f, 7.0f};
    clip_apply(g, 5, 1.0f, 1.0f);
    NEAR(g[0], -1.0, 0); NEAR(g[1], -0.5, 0); NEAR(g[2], 0.0, 0); NEAR(g[3], 0.25, 0); NEAR(g[4], 1.0, 0);
}

static void test_sgd(void **state)
{
    (void)state;
    Optim o;
    float p[3] = {1, 1, 1}, g[3] = {0.5f, 0.5f, 4.0f};
    assert_int_equal(optim_init(&o, OPT_SGD, 0, 0.9, 0.999, 1e-8, 3), 0);
    optim_begin(&o);
    optim_update(&o, p, g, 0, 1, 1.0f, 0, 0.1);   /* 1 - 0.1*0.5 */
    optim_update(&o, p, g, 1, 1, 0.5f, 0, 0.1);   /* coefficient applied in the pass: 1 - 0.1*0.25 */
    optim_update(&o, p, g, 2, 1, 1.0f, 0.2f, 0.1);/* clamped to 0.2: 1 - 0.02 */
    NEAR(p[0], 0.95, 1e-7); NEAR(p[1], 0.975, 1e-7); NEAR(p[2], 0.98, 1e-7);
    optim_free(&o);
}

static void test_momentum(void **state)
{
    (void)state;
    Optim o;
    float p[1] = {1}, g[1] = {0.5f};
    assert_int_equal(optim_init(&o, OPT_SGD, 0.9, 0.9, 0.999, 1e-8, 1), 0);
    optim_begin(&o);
    optim_update(&o, p, g, 0, 1, 1.0f, 0, 0.1);  /* m = 0.5, p = 0.95 */
    NEAR(p[0], 0.95, 1e-7);
    optim_begin(&o);
    optim_update(&o, p, g, 0, 1, 1.0f, 0, 0.1);  /* m = 0.9*0.5 + 0.5 = 0.95, p = 0.855 */
    NEAR(p[0], 0.855, 1e-6);
    optim_free(&o);
}

/* Adam lr 0.1, betas 0.9/0.999: step 1 with g=0.5 moves by lr (m_hat/sqrt(v_hat) = 1);
 * step 2 with g=-0.5: m = 0.045-0.05 = -0.005, v = 0.00024975+0.00025 = 0.00049975,
 * m_hat = -0.005/0.19 = -0.0263158, v_hat = 0.00049975/0.001999 = 0.25,
 * p = 0.9 + 0.1*0.0263158/0.5 = 0.9052632. */
static void test_adam(void **state)
{
    (void)state;
    Optim o;
    float p[1] = {1}, g[1] = {0.5f};
    assert_int_equal(optim_init(&o, OPT_ADAM, 0, 0.9, 0.999, 1e-8, 1), 0);
    optim_begin(&o);
    optim_update(&o, p, g, 0, 1, 1.0f, 0, 0.1);
    NEAR(p[0], 0.9, 1e-6);
    g[0] = -0.5f;
    optim_begin(&o);
    optim_update(&o, p, g, 0, 1, 1.0f, 0, 0.1);
    NEAR(p[0], 0.9052632, 2e-6);
    optim_free(&o);
}

/* Fused clip inside the update equals clipping first, then updating. */
static void test_fused_equals_separate(void **state)
{
    (void)state;
    enum { N = 64 };
    float p1[N], p2[N], g[N], gc[N];
    for (int i = 0; i < N; i++) p1[i] = p2[i] = 0.01f * (float)i, g[i] = gc[i] = sinf((float)i) * 3.0f;
    Optim a, b;
    assert_int_equal(optim_init(&a, OPT_ADAM, 0, 0.9, 0.999, 1e-8, N), 0);
    assert_int_equal(optim_init(&b, OPT_ADAM, 0, 0.9, 0.999, 1e-8, N), 0);
    float coef = 0.37f;
    optim_begin(&a), optim_begin(&b);
    optim_update(&a, p1, g, 0, N, coef, 0, 0.01);
    clip_apply(gc, N, coef, 0);
    optim_update(&b, p2, gc, 0, N, 1.0f, 0, 0.01);
    double worst = 0;
    for (int i = 0; i < N; i++) worst = fmax(worst, fabs((double)p1[i] - p2[i]));
    printf("fused vs separate clip+adam: max abs diff %.3g (tol 0)\n", worst);
    assert_true(worst == 0);
    optim_free(&a), optim_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coef_formula),   cmocka_unit_test(test_global_and_per_tensor),
        cmocka_unit_test(test_value_clip),     cmocka_unit_test(test_sgd),
        cmocka_unit_test(test_momentum),       cmocka_unit_test(test_adam),
        cmocka_unit_test(test_fused_equals_separate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
