/* Unit tests of the divergence detector on synthetic, seeded series: each event kind
 * fires where it should and nowhere else, info carries the right numbers (checked
 * against a naive chronological recomputation), and a saved and loaded detector
 * continues bit-identically. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/detect.h"

/* ---- deterministic noise (splitmix64; no dependency on other modules) ---- */

static uint64_t noise_state;

static double unif(void)
{
    uint64_t x = (noise_state += 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return (double)(x >> 11) * 0x1.0p-53;
}

static double gauss(void) /* Irwin-Hall: mean 0, std 1, bounded by 6 */
{
    double s = 0;
    for (int i = 0; i < 12; i++) s += unif();
    return s - 6.0;
}

static double clean_loss(int t) { return 3.0 - 0.0002 * t + 0.02 * gauss(); }
static double clean_norm(void) { return 1.5 * exp(0.05 * gauss()); }

/* ---- a naive reference of the rolling history: last `w` accepted values, in order ---- */

typedef struct { double v[4096]; int n; } Hist;

static void hist_add(Hist *h, double x) { h->v[h->n++] = x; }

static void hist_stats(const Hist *h, int w, double *mean, double *std)
{
    int lo = h->n > w ? h->n - w : 0, k = h->n - lo;
    long double s = 0, q = 0;
    for (int i = lo; i < h->n; i++) s += h->v[i];
    long double m = s / k;
    for (int i = lo; i < h->n; i++) q += (h->v[i] - m) * (h->v[i] - m);
    *mean = (double)m;
    *std = sqrtl(q / k);
}

static double rel_err(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-300); }

static Detector *new_detector(void)
{
    DetectParams p;
    detect_defaults(&p);
    Detector *d = malloc(sizeof *d);
    assert_non_null(d);
    assert_int_equal(detect_init(d, &p), 0);
    return d;
}

static int setup(void **state)
{
    noise_state = 12345;
    *state = new_detector();
    return 0;
}

static int teardown(void **state)
{
    detect_free(*state);
    free(*state);
    return 0;
}

/* ---- names, defaults, parameters ---- */

static void test_names_and_params(void **state)
{
    (void)state;
    const char *want[EV_COUNT] = { "nonfinite_loss", "nonfinite_grad", "loss_spike", "grad_norm_spike",
                                   "clip_saturation", "clip_inactive", "replica_drift", "val_loss_rise" };
    for (int k = 0; k < EV_COUNT; k++) {
        assert_string_equal(detect_kind_name(k), want[k]);
        assert_int_equal(detect_kind_from_name(want[k]), k);
    }
    assert_null(detect_kind_name(-1));
    assert_null(detect_kind_name(EV_COUNT));
    assert_int_equal(detect_kind_from_name("loss"), -1);
    assert_int_equal(detect_kind_from_name(NULL), -1);

    DetectParams p;
    detect_defaults(&p);
    assert_int_equal(p.window, 100);
    assert_int_equal(p.warmup, 100);
    assert_true(p.loss_z == 6 && p.loss_rel == 0.1 && p.norm_z == 6 && p.norm_rel == 1.0);
    assert_true(p.sat_rate == 0.9 && p.val_patience == 3);

    Detector d;
    p.warmup = 0; /* means: = window */
    p.window = 40;
    assert_int_equal(detect_init(&d, &p), 0);
    assert_int_equal(d.p.warmup, 40);
    assert_int_equal(detect_state_len(&d), 22 + 3 * 40);
    detect_free(&d);
    detect_free(&d); /* idempotent on a freed detector */

    DetectParams bad[8];
    for (int i = 0; i < 8; i++) detect_defaults(&bad[i]);
    bad[0].window = 1;
    bad[1].warmup = 1;
    bad[2].loss_z = 0;
    bad[3].loss_rel = -0.1;
    bad[4].norm_z = NAN;
    bad[5].norm_rel = INFINITY;
    bad[6].sat_rate = 1.5;
    bad[7].val_patience = 0;
    for (int i = 0; i < 8; i++) {
        assert_int_equal(detect_init(&d, &bad[i]), -1);
        detect_free(&d);
    }
    assert_int_equal(detect_init(&d, NULL), -1);
}

/* ---- a clean run fires nothing ---- */

static void test_clean_series_silent(void **state)
{
    Detector *d = *state;
    double max_zl = 0, max_zn = 0;
    int events = 0;
    for (int t = 0; t < 2000; t++) {
        double lm, ls, nm, ns;
        int n;
        detect_stats(d, EV_LOSS_SPIKE, &lm, &ls, &n);
        detect_stats(d, EV_GRAD_NORM_SPIKE, &nm, &ns, &n);
        double loss = clean_loss(t), norm = clean_norm();
        int clipped = unif() < 0.3;
        if (n >= 100) {
            max_zl = fmax(max_zl, (loss - lm) / ls);
            max_zn = fmax(max_zn, (log(norm) - nm) / ns);
        }
        EventInfo info[EV_COUNT];
        events += detect_step(d, loss, norm, clipped, info) != 0;
        if (t % 200 == 199) /* clipping active and some clipped; validation keeps falling */
            events += detect_epoch_end(d, 1, 2.0 - t * 1e-4, info) != 0;
    }
    printf("clean series, 2000 steps: %d events; max z loss %.2f, max z log norm %.2f (threshold 6)\n",
           events, max_zl, max_zn);
    assert_int_equal(events, 0);
    assert_true(max_zl > 2 && max_zl < 6);
    assert_true(max_zn > 2 && max_zn < 6);
}

/* A flat loss with tiny noise: a 5% bump is a huge z-score but under loss_rel, so silent. */
static void test_rel_margin_on_flat_series(void **state)
{
    Detector *d = *state;
    EventInfo info[EV_COUNT];
    for (int t = 0; t < 200; t++)
        assert_int_equal(detect_step(d, 2.0 + 1e-6 * gauss(), 1.0 + 1e-6 * gauss(), 0, info), 0);
    double lm, ls;
    int n;
    detect_stats(d, EV_LOSS_SPIKE, &lm, &ls, &n);
    printf("flat series: 5%% bump is z = %.0f but under the 10%% margin, 1.9x norm under the 2x margin\n",
           (2.1 - lm) / ls);
    assert_int_equal(detect_step(d, 2.1, 1.0, 0, info), 0);
    assert_int_equal(detect_step(d, 2.0, 1.9, 0, info), 0);
    assert_int_equal(detect_step(d, 2.3, 2.5, 0, info), (1u << EV_LOSS_SPIKE) | (1u << EV_GRAD_NORM_SPIKE));
}

/* ---- loss spikes ---- */

/* Feeds clean steps t0..t1-1 into d and the reference; every step must be silent. */
static void feed_clean(Detector *d, Hist *hl, Hist *hn, int t0, int t1)
{
    EventInfo info[EV_COUNT];
    for (int t = t0; t < t1; t++) {
        double loss = clean_loss(t), norm = clean_norm();
        assert_int_equal(detect_step(d, loss, norm, 0, info), 0);
        if (hl) hist_add(hl, loss);
        if (hn) hist_add(hn, log(norm));
    }
}

static void check_loss_spike_info(const EventInfo *e, const Hist *h, double loss, const char *what)
{
    double m, s;
    hist_stats(h, 100, &m, &s);
    double thr = fmax(m + 6 * s, m * 1.1);
    double err = fmax(fmax(rel_err(e->mean, m), rel_err(e->std, s)), rel_err(e->threshold, thr));
    printf("%s: value %.4f mean %.6f std %.6f threshold %.6f; worst rel err vs naive %.2g (tol 1e-12)\n",
           what, e->value, e->mean, e->std, e->threshold, err);
    assert_true(e->value == loss);
    assert_true(err < 1e-12);
    assert_true(e->value > e->threshold);
}

static void test_loss_spike_fires_at_step(void **state)
{
    Detector *d = *state;
    static Hist hl;
    hl.n = 0;
    EventInfo info[EV_COUNT];
    feed_clean(d, &hl, NULL, 0, 300);
    double m, s;
    hist_stats(&hl, 100, &m, &s);
    double spike = 3 * m;
    memset(info, 0, sizeof info);
    assert_int_equal(detect_step(d, spike, clean_norm(), 0, info), 1u << EV_LOSS_SPIKE);
    check_loss_spike_info(&info[EV_LOSS_SPIKE], &hl, spike, "loss spike at step 300");
    /* the baseline is not raised: a second spike 5 steps later fires against the same history */
    feed_clean(d, &hl, NULL, 301, 305);
    double before = info[EV_LOSS_SPIKE].mean;
    hist_stats(&hl, 100, &m, &s);
    spike = 3 * m;
    assert_int_equal(detect_step(d, spike, clean_norm(), 0, info), 1u << EV_LOSS_SPIKE);
    check_loss_spike_info(&info[EV_LOSS_SPIKE], &hl, spike, "second spike at step 305");
    printf("baseline mean moved %.2g between the spikes (a spike inside would move it ~0.06)\n",
           info[EV_LOSS_SPIKE].mean - before);
    assert_true(fabs(info[EV_LOSS_SPIKE].mean - before) < 0.01);
    feed_clean(d, &hl, NULL, 306, 600); /* and after it the run is quiet again */
}

static void test_loss_spike_in_warmup_silent(void **state)
{
    Detector *d = *state;
    EventInfo info[EV_COUNT];
    feed_clean(d, NULL, NULL, 0, 50);
    assert_int_equal(detect_step(d, 9.0, clean_norm(), 0, info), 0); /* step 50 < warm-up 100 */
    feed_clean(d, NULL, NULL, 51, 99);
    assert_int_equal(detect_step(d, 9.0, 20.0, 0, info), 0);          /* step 99: 99 in history */
    int n;
    detect_stats(d, EV_LOSS_SPIKE, NULL, NULL, &n);
    printf("spikes at steps 50 and 99 during warm-up: silent, history holds %d values\n", n);
    assert_int_equal(n, 100);
    /* now warm: even with both in the baseline, a 5x spike fires */
    assert_int_equal(detect_step(d, 15.0, clean_norm(), 0, info), 1u << EV_LOSS_SPIKE);
}

/* ---- grad-norm spikes, on the log ---- */

static void test_grad_norm_spike(void **state)
{
    Detector *d = *state;
    static Hist hn;
    hn.n = 0;
    EventInfo info[EV_COUNT];
    feed_clean(d, NULL, &hn, 0, 300);
    double m, s;
    hist_stats(&hn, 100, &m, &s);
    double norm = 3 * exp(m);
    memset(info, 0, sizeof info);
    assert_int_equal(detect_step(d, clean_loss(300), norm, 1, info), 1u << EV_GRAD_NORM_SPIKE);
    const EventInfo *e = &info[EV_GRAD_NORM_SPIKE];
    double thr = exp(fmax(m + 6 * s, m + log(2.0)));
    double err = fmax(fmax(rel_err(e->mean, exp(m)), rel_err(e->std, s)), rel_err(e->threshold, thr));
    printf("norm spike 3x: value %.4f geo-mean %.4f log-std %.4f threshold %.4f; worst rel err %.2g (tol 1e-12)\n",
           e->value, e->mean, e->std, e->threshold, err);
    assert_true(e->value == norm && err < 1e-12 && e->value > e->threshold);
    /* a second one 5 steps later still fires; 1.8x does not (under the 2x margin) */
    feed_clean(d, NULL, &hn, 301, 305);
    assert_int_equal(detect_step(d, clean_loss(305), 3 * exp(m), 1, info), 1u << EV_GRAD_NORM_SPIKE);
    feed_clean(d, NULL, &hn, 306, 310);
    hist_stats(&hn, 100, &m, &s);
    printf("1.8x norm: z %.1f but under the 2x margin\n", log(1.8) / s);
    assert_int_equal(detect_step(d, clean_loss(310), 1.8 * exp(m), 0, info), 0);
}

static void test_gradual_norm_rise_silent(void **state)
{
    Detector *d = *state;
    EventInfo info[EV_COUNT];
    double max_z = 0;
    int events = 0;
    for (int t = 0; t < 1200; t++) {
        double ramp = t < 100 ? 0 : t >= 1100 ? 1 : (t - 100) / 1000.0; /* 10x over 1000 steps */
        double norm = clean_norm() * pow(10.0, ramp), nm, ns;
        int n;
        detect_stats(d, EV_GRAD_NORM_SPIKE, &nm, &ns, &n);
        if (n >= 100) max_z = fmax(max_z, (log(norm) - nm) / ns);
        events += detect_step(d, clean_loss(t), norm, 0, info) != 0;
    }
    printf("gradual 10x norm rise over 1000 steps: %d events, max z %.2f (threshold 6)\n", events, max_z);
    assert_int_equal(events, 0);
    assert_true(max_z < 6);
}

/* ---- non-finite values ---- */

static void test_nonfinite(void **state)
{
    Detector *d = *state;
    EventInfo info[EV_COUNT];
    feed_clean(d, NULL, NULL, 0, 200);
    double lm0, ls0, nm0, ns0;
    int ln0, nn0;
    detect_stats(d, EV_LOSS_SPIKE, &lm0, &ls0, &ln0);
    detect_stats(d, EV_GRAD_NORM_SPIKE, &nm0, &ns0, &nn0);
    const unsigned L = 1u << EV_NONFINITE_LOSS, G = 1u << EV_NONFINITE_GRAD;
    double bad[3] = { NAN, INFINITY, -INFINITY };
    for (int i = 0; i < 3; i++) {
        memset(info, 0, sizeof info);
        assert_int_equal(detect_step(d, bad[i], 1.5, 0, info), L);
        assert_true(memcmp(&info[EV_NONFINITE_LOSS].value, &bad[i], sizeof(double)) == 0);
        assert_true(info[EV_NONFINITE_LOSS].mean == lm0 && isnan(info[EV_NONFINITE_LOSS].threshold));
        assert_int_equal(detect_step(d, 3.0, bad[i], 1, info), G);
        assert_true(memcmp(&info[EV_NONFINITE_GRAD].value, &bad[i], sizeof(double)) == 0);
        assert_true(info[EV_NONFINITE_GRAD].mean == exp(nm0));
        assert_int_equal(detect_step(d, bad[i], bad[i], 1, info), L | G);
    }
    double lm, ls, nm, ns;
    int ln, nn;
    detect_stats(d, EV_LOSS_SPIKE, &lm, &ls, &ln);
    detect_stats(d, EV_GRAD_NORM_SPIKE, &nm, &ns, &nn);
    printf("after 9 non-finite steps: loss mean %.6f std %.6f (n %d), log-norm mean %.6f std %.6f (n %d)\n",
           lm, ls, ln, nm, ns, nn);
    assert_true(isfinite(lm) && isfinite(ls) && isfinite(nm) && isfinite(ns));
    assert_true(lm == lm0 && ls == ls0 && nm == nm0 && ns == ns0 && ln == ln0 && nn == nn0);
    assert_int_equal(d->total_steps, 209); /* counted for the clip rate all the same */
    assert_int_equal(d->total_clipped, 6);
    /* a zero norm is neither an event nor put into the log history */
    assert_int_equal(detect_step(d, 3.0, 0.0, 0, info), 0);
    detect_stats(d, EV_GRAD_NORM_SPIKE, &nm, &ns, &nn);
    assert_true(nm == nm0 && ns == ns0);
    feed_clean(d, NULL, NULL, 210, 400);
    assert_int_equal(detect_step(d, 10.0, clean_norm(), 0, info), 1u << EV_LOSS_SPIKE);
}

/* ---- clip saturation, against a naive recount ---- */

/* Runs `steps` steps with clipped = pattern(t) and returns the steps that fired, checking each
 * against the naive rule: full window, more than 90% clipped, at least 100 steps since the last. */
static int run_clip(Detector *d, int steps, int (*pattern)(int), int *fires, int max_fires)
{
    static unsigned char flags[5000];
    EventInfo info[EV_COUNT];
    int nf = 0, last = -1000000;
    for (int t = 0; t < steps; t++) {
        flags[t] = (unsigned char)pattern(t);
        int count = 0;
        for (int i = t - 99; i <= t; i++) count += i >= 0 && flags[i];
        int want = t >= 99 && count > 90 && t - last >= 100;
        unsigned m = detect_step(d, 3.0 + 1e-3 * gauss(), 1.0 + 1e-3 * gauss(), flags[t], info);
        assert_int_equal(m & ~(1u << EV_CLIP_SATURATION), 0);
        assert_int_equal(!!m, want);
        if (!m) continue;
        assert_true(info[EV_CLIP_SATURATION].value == count / 100.0);
        assert_true(info[EV_CLIP_SATURATION].threshold == 0.9);
        last = t;
        if (nf < max_fires) fires[nf] = t;
        nf++;
    }
    return nf;
}

static int pat_85(int t) { return t % 20 < 17; }
static int pat_90(int t) { return t % 10 < 9; }
static int pat_95(int t) { return t % 20 < 19; }
static int pat_burst(int t) { return t < 500 ? t % 10 == 0 : t < 800 ? 1 : t % 3 == 0; }
static int pat_random(int t) { return unif() < (t < 1500 ? 0.5 + t / 3000.0 : 0.97); }

/* Each pattern on a fresh detector (the naive recount starts from an empty window). */
static int run_clip_fresh(int steps, int (*pattern)(int), int *fires, int max_fires)
{
    Detector *d = new_detector();
    int n = run_clip(d, steps, pattern, fires, max_fires);
    detect_free(d);
    free(d);
    return n;
}

static void test_clip_saturation(void **state)
{
    (void)state;
    int fires[64] = { 0 };
    assert_int_equal(run_clip_fresh(1000, pat_85, fires, 64), 0);
    assert_int_equal(run_clip_fresh(1000, pat_90, fires, 64), 0); /* exactly 90% is not above */
    int n = run_clip_fresh(1000, pat_95, fires, 64);
    printf("clip 85%%: 0 events; 90%%: 0; 95%%: %d events, first at step %d of the 95%% run\n", n,
           n ? fires[0] : -1);
    assert_int_equal(fires[0], 99); /* the first full window */
    assert_int_equal(n, 10);        /* then once per window, never twice within one */
    for (int i = 1; i < n; i++) assert_int_equal(fires[i] - fires[i - 1], 100);
}

static void test_clip_saturation_burst(void **state)
{
    (void)state;
    int fires[64] = { 0 };
    int n = run_clip_fresh(1000, pat_burst, fires, 64);
    printf("burst of clipping from step 500: %d events at %d, %d, %d (naive recount agrees)\n", n,
           fires[0], fires[1], fires[2]);
    assert_int_equal(n, 3);
    assert_int_equal(fires[0], 589); /* 91 of the last 100: 90 of the burst + step 490 */
    assert_int_equal(fires[1], 689);
    assert_int_equal(fires[2], 789);
    n = run_clip_fresh(3000, pat_random, fires, 64);
    printf("random clipping, rate rising to 97%%: %d events (naive recount agrees)\n", n);
    assert_true(n >= 10);
}

/* ---- epoch end: clip_inactive ---- */

static void test_clip_inactive(void **state)
{
    Detector *d = *state;
    EventInfo info[EV_COUNT];
    const unsigned I = 1u << EV_CLIP_INACTIVE;
    for (int t = 0; t < 50; t++) detect_step(d, 3, 1, t == 10, info);
    assert_int_equal(detect_epoch_end(d, 1, NAN, info), 0); /* one step clipped */
    for (int t = 0; t < 50; t++) detect_step(d, 3, 1, 0, info);
    memset(info, 0, sizeof info);
    assert_int_equal(detect_epoch_end(d, 1, NAN, info), I); /* the count was reset */
    printf("clip_inactive: value %.2f, run clip rate %.3f, threshold %.2f\n", info[EV_CLIP_INACTIVE].value,
           info[EV_CLIP_INACTIVE].mean, info[EV_CLIP_INACTIVE].threshold);
    assert_true(info[EV_CLIP_INACTIVE].value == 0 && info[EV_CLIP_INACTIVE].mean == 0.01);
    for (int t = 0; t < 50; t++) detect_step(d, 3, 1, 0, info);
    assert_int_equal(detect_epoch_end(d, 0, NAN, info), 0); /* clipping not active */
    assert_int_equal(detect_epoch_end(d, 1, NAN, info), 0); /* an epoch without steps */
    for (int t = 0; t < 50; t++) detect_step(d, 3, 1, t == 49, info);
    assert_int_equal(detect_epoch_end(d, 1, NAN, info), 0); /* the last step clipped */
}

/* ---- epoch end: val_loss_rise ---- */

static unsigned val_seq(Detector *d, const double *v, int n, int *fired_at)
{
    EventInfo info[EV_COUNT];
    unsigned all = 0;
    *fired_at = -1;
    for (int i = 0; i < n; i++) {
        unsigned m = detect_epoch_end(d, 0, v[i], info);
        assert_int_equal(m & ~(1u << EV_VAL_LOSS_RISE), 0);
        if (m && *fired_at < 0) *fired_at = i;
        all |= m;
    }
    return all;
}

static void test_val_loss_rise(void **state)
{
    (void)state;
    DetectParams p;
    detect_defaults(&p);
    Detector d;
    EventInfo info[EV_COUNT];
    int at;
    const unsigned V = 1u << EV_VAL_LOSS_RISE;

    const double rise[] = { 5.0, 4.0, 4.1, 4.2 };
    assert_int_equal(detect_init(&d, &p), 0);
    assert_int_equal(val_seq(&d, rise, 4, &at), 0); /* two rises */
    assert_int_equal(detect_epoch_end(&d, 0, 4.3, info), V); /* the third */
    printf("val_loss_rise: value %.2f, before the rises %.2f, previous %.2f\n", info[EV_VAL_LOSS_RISE].value,
           info[EV_VAL_LOSS_RISE].mean, info[EV_VAL_LOSS_RISE].threshold);
    assert_true(info[EV_VAL_LOSS_RISE].value == 4.3 && info[EV_VAL_LOSS_RISE].mean == 4.0 &&
                info[EV_VAL_LOSS_RISE].threshold == 4.2);
    const double more[] = { 4.4, 4.5, 4.6 }; /* still rising: fires again after 3 more */
    val_seq(&d, more, 3, &at);
    assert_int_equal(at, 2);
    detect_free(&d);

    const double fall[] = { 5.0, 5.1, 5.2, 5.0, 5.1, 5.2, 5.3 };
    assert_int_equal(detect_init(&d, &p), 0);
    val_seq(&d, fall, 7, &at);
    assert_int_equal(at, 6); /* the fall at index 3 reset the count */
    detect_free(&d);

    const double tie[] = { 5.0, 5.1, 5.1, 5.2, 5.3, 5.4 };
    assert_int_equal(detect_init(&d, &p), 0);
    val_seq(&d, tie, 6, &at);
    assert_int_equal(at, 5); /* a tie is not a rise */
    detect_free(&d);

    const double gap[] = { 5.0, 5.1, NAN, 5.2, 5.3 };
    assert_int_equal(detect_init(&d, &p), 0);
    val_seq(&d, gap, 5, &at);
    assert_int_equal(at, 4); /* a missing validation is skipped, not a reset */
    detect_free(&d);

    assert_int_equal(detect_init(&d, &p), 0);
    for (int i = 0; i < 20; i++) assert_int_equal(detect_epoch_end(&d, 0, NAN, info), 0);
    detect_free(&d);
    printf("val_loss_rise: fall and tie reset, NAN never fires\n");
}

/* ---- checkpoints ---- */

/* One step of a busy synthetic run: spikes, non-finite values, bursts of clipping, epochs. */
static unsigned busy_step(Detector *d, int t, EventInfo *info, unsigned *epoch_mask, EventInfo *einfo)
{
    double loss = clean_loss(t), norm = clean_norm();
    if (t % 97 == 50) loss *= 3;
    if (t % 131 == 7) norm *= 5;
    if (t % 211 == 3) loss = NAN;
    if (t % 307 == 11) norm = INFINITY;
    int phase = (t / 150) % 3; /* 20% clipped, 97% clipped, none */
    int clipped = unif() < (phase == 0 ? 0.2 : phase == 1 ? 0.97 : 0.0);
    unsigned m = detect_step(d, loss, norm, clipped, info);
    *epoch_mask = 0;
    if (t % 60 == 59) {
        int k = t / 60; /* falls, rises 4 epochs in a row (firing at the 3rd); every 7th has none */
        *epoch_mask = detect_epoch_end(d, 1, k % 7 == 6 ? NAN : 2.0 + 0.01 * ((k + 5) % 6), einfo);
    }
    return m;
}

static void test_save_load_bit_identical(void **state)
{
    Detector *a = *state;
    EventInfo ia[EV_COUNT], ib[EV_COUNT], ea[EV_COUNT], eb[EV_COUNT];
    unsigned ema, emb, seen = 0;
    for (int t = 0; t < 250; t++) busy_step(a, t, ia, &ema, ea);
    size_t len = detect_state_len(a);
    double *buf = malloc(len * sizeof(double));
    assert_non_null(buf);
    detect_save(a, buf);
    Detector *b = new_detector();
    assert_int_equal(detect_load(b, buf, len), 0);
    uint64_t saved_noise = noise_state;
    int diffs = 0, events = 0;
    for (int t = 250; t < 750; t++) {
        memset(ia, 0, sizeof ia), memset(ib, 0, sizeof ib), memset(ea, 0, sizeof ea), memset(eb, 0, sizeof eb);
        noise_state = saved_noise;
        unsigned ma = busy_step(a, t, ia, &ema, ea);
        noise_state = saved_noise;
        unsigned mb = busy_step(b, t, ib, &emb, eb);
        saved_noise = noise_state;
        diffs += ma != mb || ema != emb || memcmp(ia, ib, sizeof ia) || memcmp(ea, eb, sizeof ea);
        events += __builtin_popcount(ma) + __builtin_popcount(ema);
        seen |= ma | ema;
    }
    double *buf2 = malloc(len * sizeof(double)), *buf3 = malloc(len * sizeof(double));
    assert_non_null(buf2);
    assert_non_null(buf3);
    detect_save(a, buf2);
    detect_save(b, buf3);
    printf("resumed detector over 500 steps: %d events, %d differing steps (kinds seen 0x%x); final states %s\n",
           events, diffs, seen, memcmp(buf2, buf3, len * sizeof(double)) ? "differ" : "identical");
    assert_int_equal(diffs, 0);
    assert_true(events >= 10);
    const unsigned want = (1u << EV_NONFINITE_LOSS) | (1u << EV_NONFINITE_GRAD) | (1u << EV_LOSS_SPIKE) |
                          (1u << EV_GRAD_NORM_SPIKE) | (1u << EV_CLIP_SATURATION) | (1u << EV_CLIP_INACTIVE) |
                          (1u << EV_VAL_LOSS_RISE);
    assert_int_equal(seen & want, want);
    assert_memory_equal(buf2, buf3, len * sizeof(double));
    free(buf);
    free(buf2);
    free(buf3);
    detect_free(b);
    free(b);
}

static void test_load_rejects(void **state)
{
    Detector *a = *state;
    EventInfo info[EV_COUNT];
    unsigned em;
    for (int t = 0; t < 150; t++) busy_step(a, t, info, &em, info);
    size_t len = detect_state_len(a);
    double *good = malloc(len * sizeof(double)), *bad = malloc((len + 1) * sizeof(double));
    double *before = malloc(len * sizeof(double)), *after = malloc(len * sizeof(double));
    assert_true(good && bad && before && after);
    detect_save(a, good);
    Detector *b = new_detector();
    for (int t = 0; t < 30; t++) detect_step(b, 1.0, 1.0, t % 2, info);
    detect_save(b, before);

    memcpy(bad, good, len * sizeof(double));
    assert_int_equal(detect_load(b, bad, len - 1), -1);
    assert_int_equal(detect_load(b, bad, len + 1), -1);
    assert_int_equal(detect_load(b, NULL, len), -1);
    struct { int at; double v; const char *what; } cases[] = {
        { 0, 0.0, "magic" },
        { 1, 50.0, "window" },
        { 2, 99.5, "loss count not an integer" },
        { 3, 100.0, "loss position out of range" },
        { 8, 101.0, "clip count beyond the window" },
        { 10, 3.0, "clipped count disagrees with the flags" },
        { 13, 1e9, "epoch clipped above epoch steps" },
        { 16, INFINITY, "validation loss infinite" },
        { 22 + 5, NAN, "history value NaN" },
        { 22 + 200 + 7, 0.5, "clip flag not 0/1" },
    };
    int n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++) {
        memcpy(bad, good, len * sizeof(double));
        bad[cases[i].at] = cases[i].v;
        if (detect_load(b, bad, len) != -1) printf("accepted a corrupt state: %s\n", cases[i].what);
        assert_int_equal(detect_load(b, bad, len), -1);
    }
    detect_save(b, after);
    assert_memory_equal(before, after, len * sizeof(double)); /* failed loads left b alone */

    DetectParams p;
    detect_defaults(&p);
    p.window = 50;
    Detector c;
    assert_int_equal(detect_init(&c, &p), 0);
    assert_int_equal(detect_load(&c, good, len), -1);                    /* other window */
    assert_int_equal(detect_load(&c, good, detect_state_len(&c)), -1);   /* length of c, contents of a */
    detect_free(&c);
    assert_int_equal(detect_load(b, good, len), 0);
    printf("detect_load: rejected 3 lengths, %d corrupt states and another window; accepted the good one\n", n);
    free(good), free(bad), free(before), free(after);
    detect_free(b);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_params),
        cmocka_unit_test_setup_teardown(test_clean_series_silent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rel_margin_on_flat_series, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loss_spike_fires_at_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loss_spike_in_warmup_silent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grad_norm_spike, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gradual_norm_rise_silent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nonfinite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clip_saturation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clip_saturation_burst, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clip_inactive, setup, teardown),
        cmocka_unit_test(test_val_loss_rise),
        cmocka_unit_test_setup_teardown(test_save_load_bit_identical, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_rejects, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
