/* Unit tests of the clip formulas (tf.clip_by_global_norm, clip_by_norm,
 * clip_by_value) and of the fused clip + optimizer updates against values
 * computed by hand. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "common/cfg.h"
#include "worker/clip.h"
#include "worker/optim.h"
#include "worker/sync.h"

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

/* Adam's first update against the textbook in float64 (PyTorch's
 * formula): 1 - beta1 and 1 - beta2 are taken in double, so the float result
 * is within float rounding (tol 5e-7 relative). With 1.0f - 0.999f it was
 * 6e-6 relative off (the rounded beta2's complement), which this catches. */
static void test_adam_first_update_exact(void **state)
{
    (void)state;
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8, lr = 1.0;
    const float gs[] = {0.5f, -3.0f, 1e-3f, 7.25f};
    double worst = 0;
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) {
        Optim o;
        float p[1] = {0}, g[1] = {gs[i]};
        assert_int_equal(optim_init(&o, OPT_ADAM, 0, b1, b2, eps, 1), 0);
        optim_begin(&o);
        optim_update(&o, p, g, 0, 1, 1.0f, 0, lr);
        double m = (1 - b1) * g[0], v = (1 - b2) * (double)g[0] * g[0];
        double want = -lr * (m / (1 - b1)) / (sqrt(v / (1 - b2)) + eps);
        double rel = fabs((p[0] - want) / want);
        if (rel > worst) worst = rel;
        optim_free(&o);
    }
    printf("adam first update: worst rel err vs float64 textbook %.2g (tol 5e-7)\n", worst);
    assert_true(worst <= 5e-7);
}

/* AdamW, lr 0.1, weight decay 0.5, g = 0.5 from p = 1: p is first scaled by
 * 1 - 0.1*0.5 = 0.95, then Adam's first step moves it by lr: 0.85. Adam with
 * coupled L2 0.5: g' = 0.5 + 0.5*1 = 1, the first step still moves by lr: 0.9;
 * SGD with L2 0.5, lr 0.1: 1 - 0.1*(0.5 + 0.5) = 0.9. */
static void test_weight_decay(void **state)
{
    (void)state;
    Optim o;
    float p[1] = {1}, g[1] = {0.5f};
    assert_int_equal(optim_init(&o, OPT_ADAMW, 0, 0.9, 0.999, 1e-8, 1), 0);
    o.weight_decay = 0.5;
    optim_begin(&o);
    optim_update(&o, p, g, 0, 1, 1.0f, 0, 0.1);
    NEAR(p[0], 0.85, 1e-6);
    optim_free(&o);
    p[0] = 1;
    assert_int_equal(optim_init(&o, OPT_SGD, 0, 0.9, 0.999, 1e-8, 1), 0);
    o.weight_decay = 0.5;
    optim_begin(&o);
    optim_update(&o, p, g, 0, 1, 1.0f, 0, 0.1);
    NEAR(p[0], 0.9, 1e-6);
    optim_free(&o);
    /* AdamW second step, g = -0.5: p = 0.85*0.95 + 0.1*0.0263158/0.5 (as in test_adam) */
    p[0] = 1, g[0] = 0.5f;
    assert_int_equal(optim_init(&o, OPT_ADAMW, 0, 0.9, 0.999, 1e-8, 1), 0);
    o.weight_decay = 0.5;
    optim_begin(&o), optim_update(&o, p, g, 0, 1, 1.0f, 0, 0.1);
    g[0] = -0.5f;
    optim_begin(&o), optim_update(&o, p, g, 0, 1, 1.0f, 0, 0.1);
    NEAR(p[0], 0.85 * 0.95 + 0.0052632, 2e-6);
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

/* clip_decide + clip_apply_update (the training path) against a float64 reference of each TF
 * formula: two tensors, SGD with lr 1 from zero weights, so the new weights
 * are minus the clipped gradient. */
static void check_mode(int mode, double max_norm, double clip_value, int want_clipped)
{
    enum { N = 7 };
    const float g[N] = {3.0f, -4.0f, 0.5f, 12.0f, -0.25f, 2.0f, -1.0f};
    ParamView views[2] = {{"a", 0, 3, 3, 1, 1}, {"b", 3, 4, 4, 1, 1}};
    double stats[ST_TENSOR0 + 2] = {0}, ref[N];
    for (int v = 0; v < 2; v++)
        for (size_t i = views[v].off; i < views[v].off + views[v].n; i++) {
            stats[ST_TENSOR0 + v] += (double)g[i] * g[i];
            stats[ST_MAXABS] = fmax(stats[ST_MAXABS], fabs(g[i]));
        }
    stats[ST_SUMSQ] = stats[ST_TENSOR0] + stats[ST_TENSOR0 + 1];
    double gn = sqrt(stats[ST_SUMSQ]);
    for (int v = 0; v < 2; v++) {
        double tn = sqrt(stats[ST_TENSOR0 + v]);
        for (size_t i = views[v].off; i < views[v].off + views[v].n; i++) {
            double x = g[i];
            if (mode == CLIP_GLOBAL_NORM) x *= max_norm / fmax(gn, max_norm);
            if (mode == CLIP_PER_TENSOR) x *= max_norm / fmax(tn, max_norm);
            if (mode == CLIP_VALUE) x = fmin(fmax(x, -clip_value), clip_value);
            ref[i] = -x;
        }
    }
    float p[N] = {0};
    Optim o;
    assert_int_equal(optim_init(&o, OPT_SGD, 0, 0.9, 0.999, 1e-8, N), 0);
    ClipResult r = clip_decide(views, 2, stats, mode, max_norm, clip_value);
    clip_apply_update(&o, p, g, views, 2, 0, N, stats, mode, max_norm, clip_value, 1.0, &r);
    double worst = 0;
    for (int i = 0; i < N; i++) worst = fmax(worst, fabs(p[i] - ref[i]) / fmax(1.0, fabs(ref[i])));
    printf("clip_apply_update mode %s: max rel err vs float64 reference %.2g (tol 1e-6)\n",
           cfg_clip_name(mode), worst);
    assert_true(worst <= 1e-6);
    assert_int_equal(r.clipped, want_clipped);
    optim_free(&o);
}

static void test_clip_update_modes(void **state)
{
    (void)state;
    /* global norm sqrt(9+16+0.25+144+0.0625+4+1) = 13.21; tensor norms 5.02 and 12.20 */
    check_mode(CLIP_GLOBAL_NORM, 6.5, 0, 1);
    check_mode(CLIP_GLOBAL_NORM, 20.0, 0, 0);
    check_mode(CLIP_PER_TENSOR, 6.5, 0, 1);   /* only tensor b is scaled */
    check_mode(CLIP_PER_TENSOR, 13.0, 0, 0);  /* both under, though the global norm is over */
    check_mode(CLIP_VALUE, 0, 2.5, 1);
    check_mode(CLIP_VALUE, 0, 12.0, 0);
    check_mode(CLIP_NONE, 0, 0, 0);
}

/* Sharded (ZeRO-1) updates: three shards, each with optimizer state for its
 * range only (Optim.base), cutting through a tensor, give the same bits as
 * one update of everything, for every optimizer and clip mode, over steps. */
static void test_sharded_update(void **state)
{
    (void)state;
    enum { N = 11, S = 3 };
    ParamView views[2] = {{"a", 0, 4, 4, 1, 1}, {"b", 4, 7, 7, 1, 1}};
    const int opts[] = {OPT_SGD, OPT_SGD, OPT_ADAM, OPT_ADAMW};
    const double mom[] = {0, 0.9, 0, 0};
    const int modes[] = {CLIP_GLOBAL_NORM, CLIP_PER_TENSOR, CLIP_VALUE, CLIP_NONE};
    for (int oi = 0; oi < 4; oi++)
        for (int mi = 0; mi < 4; mi++) {
            float pf[N], ps[N], g[N];
            for (int i = 0; i < N; i++) pf[i] = ps[i] = 0.1f * (float)i;
            Optim full, sh[S];
            size_t off[S], len[S];
            assert_int_equal(optim_init(&full, opts[oi], mom[oi], 0.9, 0.999, 1e-8, N), 0);
            full.weight_decay = 0.01;
            for (int r = 0; r < S; r++) {
                shard_range(N, S, r, &off[r], &len[r]);
                assert_int_equal(optim_init(&sh[r], opts[oi], mom[oi], 0.9, 0.999, 1e-8, len[r]), 0);
                sh[r].base = off[r], sh[r].weight_decay = 0.01;
            }
            for (int step = 1; step <= 3; step++) {
                double stats[ST_TENSOR0 + 2] = {0};
                for (int i = 0; i < N; i++) g[i] = sinf((float)(i * step)) * 4.0f;
                for (int v = 0; v < 2; v++)
                    for (size_t i = views[v].off; i < views[v].off + views[v].n; i++) {
                        stats[ST_TENSOR0 + v] += (double)g[i] * g[i];
                        stats[ST_MAXABS] = fmax(stats[ST_MAXABS], fabs(g[i]));
                    }
                stats[ST_SUMSQ] = stats[ST_TENSOR0] + stats[ST_TENSOR0 + 1];
                ClipResult d = clip_decide(views, 2, stats, modes[mi], 3.0, 1.5);
                clip_apply_update(&full, pf, g, views, 2, 0, N, stats, modes[mi], 3.0, 1.5, 0.05, &d);
                for (int r = 0; r < S; r++)
                    clip_apply_update(&sh[r], ps, g, views, 2, off[r], off[r] + len[r], stats,
                                      modes[mi], 3.0, 1.5, 0.05, &d);
            }
            assert_memory_equal(pf, ps, sizeof pf);
            int moved = 0;
            for (int i = 0; i < N; i++) moved |= pf[i] != 0.1f * (float)i;
            assert_true(moved);
            optim_free(&full);
            for (int r = 0; r < S; r++) optim_free(&sh[r]);
        }
}

/* The lazy row update (clip_apply_update_rows; train.embedding_update:
 * lazy) against an independent float64 reference: a dense tensor "a" (5)
 * and an embedding "emb" (6 rows x 4) of which each step touches some rows
 * (rows 2 and 3 first at step 3, none at step 4). Touched rows and "a"
 * follow the textbook update with the clip of the step (Adam's bias
 * correction at the global step); untouched rows keep parameters and
 * moments bit for bit. Plain SGD gives the dense update's bits; Adam and
 * momentum do not (a row's moments stop moving when no token touches it). */
enum { LZ_A = 5, LZ_R = 6, LZ_E = 4, LZ_N = LZ_A + LZ_R * LZ_E, LZ_STEPS = 5 };

typedef struct {
    int kind;
    double mu, b1, b2, eps, lr;
    double p[LZ_N], m[LZ_N], v[LZ_N];
} LazyRef;

/* One reference step over the flat indices flagged in on[]. */
static void lazy_ref_step(LazyRef *r, const float *g, const int *on, double coef, double cv, int t)
{
    for (int i = 0; i < LZ_N; i++) {
        if (!on[i]) continue;
        double x = (double)g[i] * coef;
        if (cv > 0) x = fmin(fmax(x, -cv), cv);
        if (r->kind == OPT_ADAM) {
            r->m[i] = r->b1 * r->m[i] + (1 - r->b1) * x;
            r->v[i] = r->b2 * r->v[i] + (1 - r->b2) * x * x;
            double mh = r->m[i] / (1 - pow(r->b1, t)), vh = r->v[i] / (1 - pow(r->b2, t));
            r->p[i] -= r->lr * mh / (sqrt(vh) + r->eps);
        } else if (r->mu > 0) {
            r->m[i] = r->mu * r->m[i] + x;
            r->p[i] -= r->lr * r->m[i];
        } else {
            r->p[i] -= r->lr * x;
        }
    }
}

/* The coefficient and clamp the reference applies at index i. */
static void lazy_ref_clip(int mode, const double *stats, int i, double *coef, double *cv)
{
    double max_norm = 2.0, tn = sqrt(stats[ST_TENSOR0 + (i >= LZ_A)]);
    *coef = 1, *cv = 0;
    if (mode == CLIP_GLOBAL_NORM) *coef = max_norm / fmax(sqrt(stats[ST_SUMSQ]), max_norm);
    if (mode == CLIP_PER_TENSOR) *coef = max_norm / fmax(tn, max_norm);
    if (mode == CLIP_VALUE) *cv = 0.3;
}

static double lazy_run(int kind, double mu, int mode, int *differs_from_dense)
{
    static const int touched[LZ_STEPS][LZ_R] = {{1, 1}, {0, 1, 0, 0, 1}, {0, 0, 1, 1, 0, 1}, {0}, {1, 0, 0, 0, 0, 1}};
    ParamView views[2] = {{"a", 0, LZ_A, LZ_A, 1, 1}, {"emb", LZ_A, LZ_R * LZ_E, LZ_R, LZ_E, 2}};
    LazyRef ref = {kind, mu, 0.9, 0.999, 1e-8, 0.05, {0}, {0}, {0}};
    float p[LZ_N], pd[LZ_N], g[LZ_N];
    Optim o, od;
    assert_int_equal(optim_init(&o, kind, mu, 0.9, 0.999, 1e-8, LZ_N), 0);
    assert_int_equal(optim_init(&od, kind, mu, 0.9, 0.999, 1e-8, LZ_N), 0);
    for (int i = 0; i < LZ_N; i++) p[i] = pd[i] = 0.1f * (float)(i % 7) - 0.2f, ref.p[i] = p[i];
    double worst = 0;
    for (int s = 0; s < LZ_STEPS; s++) {
        int rows[LZ_R], nr = 0, on[LZ_N];
        double stats[ST_TENSOR0 + 2] = {0};
        for (int i = 0; i < LZ_N; i++) {
            int row = i < LZ_A ? -1 : (i - LZ_A) / LZ_E;
            on[i] = row < 0 || touched[s][row];
            g[i] = on[i] ? sinf((float)(3 * i + 7 * s + 1)) * 1.5f : 0.0f;
            stats[ST_TENSOR0 + (row >= 0)] += (double)g[i] * g[i];
            stats[ST_MAXABS] = fmax(stats[ST_MAXABS], fabs(g[i]));
        }
        for (int r = 0; r < LZ_R; r++)
            if (touched[s][r]) rows[nr++] = r;
        stats[ST_SUMSQ] = stats[ST_TENSOR0] + stats[ST_TENSOR0 + 1];
        float p0[LZ_N], m0[LZ_N], v0[LZ_N];
        memcpy(p0, p, sizeof p);
        if (o.m) memcpy(m0, o.m, sizeof m0);
        if (o.v) memcpy(v0, o.v, sizeof v0);
        ClipResult d = clip_decide(views, 2, stats, mode, 2.0, 0.3);
        clip_apply_update_rows(&o, p, g, views, 2, 0, LZ_A, rows, nr, LZ_E, stats, mode, 2.0, 0.3, 0.05, &d);
        clip_apply_update(&od, pd, g, views, 2, 0, LZ_N, stats, mode, 2.0, 0.3, 0.05, &d);
        for (int i = 0; i < LZ_N; i++) {
            double coef, cv;
            lazy_ref_clip(mode, stats, i, &coef, &cv);
            int one[LZ_N] = {0};
            one[i] = on[i];
            lazy_ref_step(&ref, g, one, coef, cv, s + 1);
            if (!on[i]) { /* untouched: parameter and moments bit for bit */
                assert_memory_equal(&p[i], &p0[i], sizeof(float));
                if (o.m) assert_memory_equal(&o.m[i], &m0[i], sizeof(float));
                if (o.v) assert_memory_equal(&o.v[i], &v0[i], sizeof(float));
            }
            double e = fabs(p[i] - ref.p[i]) / fmax(1.0, fabs(ref.p[i]));
            if (o.m) e = fmax(e, fabs(o.m[i] - ref.m[i]) / fmax(1.0, fabs(ref.m[i])));
            if (e > worst) worst = e;
        }
    }
    *differs_from_dense = memcmp(p, pd, sizeof p) != 0;
    optim_free(&o), optim_free(&od);
    return worst;
}

static void test_lazy_rows(void **state)
{
    (void)state;
    const int kinds[] = {OPT_ADAM, OPT_SGD, OPT_SGD};
    const double mus[] = {0, 0.9, 0}, tol = 2e-6;
    const int modes[] = {CLIP_GLOBAL_NORM, CLIP_PER_TENSOR, CLIP_VALUE, CLIP_NONE};
    double worst = 0;
    for (int k = 0; k < 3; k++)
        for (int mi = 0; mi < 4; mi++) {
            int differs;
            worst = fmax(worst, lazy_run(kinds[k], mus[k], modes[mi], &differs));
            /* plain SGD: the dense update's bits; Adam, momentum: a lazy update */
            assert_int_equal(differs, mus[k] > 0 || kinds[k] == OPT_ADAM);
        }
    printf("lazy row update vs float64 reference (adam, momentum, sgd x 4 clip modes, %d steps): "
           "worst relative error %.3g (tol %.0g); untouched rows bit for bit\n", LZ_STEPS, worst, tol);
    assert_true(worst <= tol);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sharded_update),
        cmocka_unit_test(test_coef_formula),   cmocka_unit_test(test_global_and_per_tensor),
        cmocka_unit_test(test_value_clip),     cmocka_unit_test(test_sgd),
        cmocka_unit_test(test_momentum),       cmocka_unit_test(test_adam),
        cmocka_unit_test(test_adam_first_update_exact),
        cmocka_unit_test(test_fused_equals_separate), cmocka_unit_test(test_clip_update_modes),
        cmocka_unit_test(test_weight_decay),   cmocka_unit_test(test_lazy_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
