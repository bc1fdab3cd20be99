/* Unit tests of the divergence detector on synthetic, seeded series and on series cut
 * from real runs: each check fires where it should (from step 1 for the checks that need
 * no history) and nowhere else, a healthy epoch boundary (hidden state reset) is never a
 * spike, the event fields carry the numbers the check compared, clip events come on a
 * change only, and a saved and loaded detector continues bit-identically. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "worker/detect.h"

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

static const unsigned LS = 1u << EV_LOSS_SPIKE, GS = 1u << EV_GRAD_NORM_SPIKE;

/* A detector with the defaults, for a model of vocabulary V (0: not a token model) and a
 * clip threshold (0: none). */
static Detector *detector_for(double V, double max_norm)
{
    DetectParams p;
    detect_defaults(&p);
    p.ln_vocab = V > 0 ? log(V) : 0;
    p.clip_max_norm = max_norm;
    Detector *d = malloc(sizeof *d);
    assert_non_null(d);
    assert_int_equal(detect_init(d, &p), 0);
    return d;
}

static Detector *new_detector(void) { return detector_for(0, 0); }

static void drop(Detector *d)
{
    detect_free(d);
    free(d);
}

static int setup(void **state)
{
    noise_state = 12345;
    *state = new_detector();
    return 0;
}

static int teardown(void **state)
{
    drop(*state);
    return 0;
}

/* ---- names, defaults, parameters ---- */

static void test_names_and_params(void **state)
{
    (void)state;
    const char *want[EV_COUNT] = { "nonfinite_loss", "nonfinite_grad", "loss_spike", "grad_norm_spike",
                                   "clip_saturation", "clip_inactive", "replica_drift", "val_loss_rise" };
    for (int k = 0; k < EV_COUNT; k++) {
        assert_string_equal(event_kind_name(k), want[k]);
        assert_int_equal(event_kind_from_name(want[k]), k);
    }
    assert_null(event_kind_name(-1));
    assert_null(event_kind_name(EV_COUNT));
    assert_int_equal(event_kind_from_name("loss"), -1);
    assert_int_equal(event_kind_from_name(NULL), -1);
    const char *checks[CHK_COUNT] = { NULL, "nonfinite", "uniform", "initial", "recent", "clip_limit",
                                      "window", "epoch", "checksum", "rise" };
    for (int c = 1; c < CHK_COUNT; c++) assert_string_equal(event_check_name(c), checks[c]);
    assert_null(event_check_name(CHK_NONE));
    assert_null(event_check_name(CHK_COUNT));

    DetectParams p;
    detect_defaults(&p);
    assert_int_equal(p.window, 100);
    assert_int_equal(p.warmup, 8);
    assert_true(p.loss_z == 6 && p.loss_rel == 0.5 && p.norm_z == 6 && p.norm_rel == 4.0);
    assert_true(p.loss_uniform == 1.5 && p.loss_initial == 1.5 && p.norm_clip == 100);
    assert_true(p.reset_steps == 5 && p.reset_loss_rel == 1 && p.reset_norm_rel == 9);
    assert_true(p.sat_rate == 0.9 && p.val_patience == 3 && p.clip_events == CLIPEV_CHANGE);

    Detector d;
    p.window = 40;
    assert_int_equal(detect_init(&d, &p), 0);
    assert_int_equal(detect_state_len(&d), 32 + 5 * 40);
    detect_free(&d);
    detect_free(&d); /* idempotent on a freed detector */

    DetectParams bad[12];
    for (int i = 0; i < 12; i++) detect_defaults(&bad[i]);
    bad[0].window = 1;
    bad[1].warmup = 1;
    bad[2].loss_z = 0;
    bad[3].loss_rel = -0.1;
    bad[4].norm_z = NAN;
    bad[5].norm_rel = INFINITY;
    bad[6].sat_rate = 1.5;
    bad[7].val_patience = 0;
    bad[8].warmup = 101;          /* more than the window holds */
    bad[9].loss_uniform = -1;
    bad[10].clip_events = 3;
    bad[11].reset_steps = -1;
    for (int i = 0; i < 12; i++) {
        assert_int_equal(detect_init(&d, &bad[i]), -1);
        detect_free(&d);
    }
    assert_int_equal(detect_init(&d, NULL), -1);
}

/* ---- checks that need no history: from step 1 ---- */

/* lr x1000 from step 1 on the default config (the real run of issue 13: vocabulary 16, clip
 * 0.25): the loss of step 2 is 26,416 against a uniform guess of 2.77. */
static void test_lr_x1000_at_step_1(void **state)
{
    (void)state;
    Detector *d = detector_for(16, 0.25);
    EventInfo info[EV_COUNT];
    assert_int_equal(detect_step(d, 2.772637076509656, 0.058352023097404532, 0, info), 0);
    memset(info, 0, sizeof info);
    unsigned m = detect_step(d, 26415.98861756417, 8.9131816275133904, 1, info);
    EventInfo *e = &info[EV_LOSS_SPIKE];
    printf("lr x1000 at step 1: step 2 fires 0x%x: loss %.1f > %.3f (%s, baseline ln 16 = %.4f)\n", m,
           e->value, e->threshold, event_check_name(e->check), e->baseline);
    assert_int_equal(m, LS);
    assert_int_equal(e->check, CHK_UNIFORM);
    assert_true(e->baseline == log(16.0) && e->threshold == 1.5 * log(16.0) && e->spread == 0);
    /* it stays diverged: every step fires, none enters the history */
    assert_int_equal(detect_step(d, 36673.690095901489, 6.8798142761980339, 1, info) & LS, LS);
    int n;
    detect_stats(d, EV_LOSS_SPIKE, NULL, NULL, &n);
    assert_int_equal(n, 1);
    drop(d);
}

static void test_uniform_and_initial(void **state)
{
    (void)state;
    EventInfo info[EV_COUNT];
    /* an exploding init: the very first loss is far worse than a uniform guess */
    Detector *d = detector_for(16, 0);
    assert_int_equal(detect_step(d, 45.0, 3.0, 0, info), LS);
    assert_int_equal(info[EV_LOSS_SPIKE].check, CHK_UNIFORM);
    drop(d);
    /* a model without a vocabulary (the adding problem): 1.5 x the first loss from step 2 */
    d = detector_for(0, 0);
    assert_int_equal(detect_step(d, 1.2, 0.5, 0, info), 0);
    assert_int_equal(detect_step(d, 1.7, 0.5, 0, info), 0); /* 1.42x */
    memset(info, 0, sizeof info);
    assert_int_equal(detect_step(d, 1.9, 0.5, 0, info), LS);
    assert_int_equal(info[EV_LOSS_SPIKE].check, CHK_INITIAL);
    assert_true(info[EV_LOSS_SPIKE].baseline == 1.2 && fabs(info[EV_LOSS_SPIKE].threshold - 1.8) < 1e-15);
    drop(d);
    /* no anchors: 0 turns them off */
    DetectParams p;
    detect_defaults(&p);
    p.ln_vocab = log(16.0);
    p.loss_uniform = 0;
    p.loss_initial = 0;
    Detector e;
    assert_int_equal(detect_init(&e, &p), 0);
    assert_int_equal(detect_step(&e, 45.0, 1, 0, info), 0);
    assert_int_equal(detect_step(&e, 450.0, 1, 0, info), 0); /* the recent check waits for 8 steps */
    detect_free(&e);
    printf("uniform fires at step 1, initial from step 2, both off with 0\n");
}

static void test_clip_limit(void **state)
{
    (void)state;
    EventInfo info[EV_COUNT];
    Detector *d = detector_for(16, 0.25);
    assert_int_equal(detect_step(d, 2.7, 24.0, 1, info), 0); /* 96 x max_norm */
    memset(info, 0, sizeof info);
    assert_int_equal(detect_step(d, 2.7, 26.0, 1, info), GS);
    EventInfo *e = &info[EV_GRAD_NORM_SPIKE];
    printf("clip_limit: norm %.1f > %.1f = 100 x max_norm %.2f at step 2\n", e->value, e->threshold, e->baseline);
    assert_true(e->check == CHK_CLIP_LIMIT && e->baseline == 0.25 && e->threshold == 25.0 && e->value == 26.0);
    drop(d);
}

/* ---- the recent checks ---- */

/* Feeds steps [t0, t1) of a clean series; returns the events. */
static unsigned feed_clean(Detector *d, int t0, int t1)
{
    EventInfo info[EV_COUNT];
    unsigned all = 0;
    for (int t = t0; t < t1; t++) all |= detect_step(d, clean_loss(t), clean_norm(), 0, info);
    return all;
}

static void test_clean_series_silent(void **state)
{
    Detector *d = *state;
    unsigned all = 0;
    for (int e = 0; e < 20; e++) {
        detect_reset(d);
        all |= feed_clean(d, e * 100, e * 100 + 100);
    }
    printf("2000 clean steps in 20 epochs: events 0x%x\n", all);
    assert_int_equal(all, 0);
}

static void test_recent_loss_spike(void **state)
{
    Detector *d = *state;
    EventInfo info[EV_COUNT];
    d->p.loss_initial = 0; /* the recent check alone */
    detect_reset(d);
    assert_int_equal(feed_clean(d, 0, 300), 0);
    double b, s;
    int n;
    detect_stats(d, EV_LOSS_SPIKE, &b, &s, &n);
    printf("after 300 clean steps: baseline %.4f, noise %.4f (the series' is 0.02), %d held\n", b, s, n);
    assert_int_equal(n, 100);
    assert_true(fabs(s - 0.02) < 0.006); /* the median of differences recovers the noise */
    assert_true(fabs(b - clean_loss(280) + 0.02 * 0) < 0.05);
    assert_int_equal(detect_step(d, 1.3 * b, clean_norm(), 0, info), 0); /* under 1.5x: accepted */
    detect_stats(d, EV_LOSS_SPIKE, &b, &s, &n);
    memset(info, 0, sizeof info);
    assert_int_equal(detect_step(d, 1.6 * b, clean_norm(), 0, info), LS);
    EventInfo *e = &info[EV_LOSS_SPIKE];
    assert_true(e->check == CHK_RECENT && e->baseline == b && e->spread == s);
    assert_true(e->threshold == b + fmax(6 * s, 0.5 * b));
    /* the spike stayed out: a second one is measured against the same baseline */
    assert_int_equal(detect_step(d, 1.6 * b, clean_norm(), 0, info), LS);
    assert_true(info[EV_LOSS_SPIKE].baseline == b);
    /* warm-up: the recent check needs 8 accepted steps */
    Detector *f = new_detector();
    for (int t = 0; t < 7; t++) assert_int_equal(detect_step(f, 1.0, 1.0, 0, info), 0);
    assert_int_equal(detect_step(f, 1.45, 1.0, 0, info), 0); /* 7 held; under the initial 1.5x */
    assert_int_equal(detect_step(f, 1.0, 1.0, 0, info), 0);
    assert_int_equal(detect_step(f, 1.0, 4.5, 0, info), 0);   /* 9 held: under 5x */
    assert_int_equal(detect_step(f, 1.0, 5.5, 0, info), GS);  /* the norm check looks */
    drop(f);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Reference median: a full sort of a copy. */
static double sorted_median(const double *v, int k)
{
    double t[256];
    memcpy(t, v, (size_t)k * sizeof *t);
    qsort(t, (size_t)k, sizeof *t, cmp_dbl);
    return k % 2 ? t[k / 2] : 0.5 * (t[k / 2 - 1] + t[k / 2]);
}

/* The baseline and noise are medians (taken by selection, not a sort): on a
 * loss of 7 levels (many ties), odd and even counts, before and after the
 * window (100) wraps, they equal a sorted reference's bit for bit. */
static void test_medians_match_sort(void **state)
{
    Detector *d = *state;
    EventInfo info[EV_COUNT];
    double hist[400], diffs[400];
    for (int t = 0; t < 250; t++) {
        hist[t] = 1.0 + 0.01 * (double)(((unsigned)t * 2654435761u >> 7) % 7);
        if (t) diffs[t - 1] = fabs(hist[t] - hist[t - 1]);
        assert_int_equal(detect_step(d, hist[t], 1.0, 0, info), 0);
        int n = t + 1 < 100 ? t + 1 : 100, nd = t < 100 ? t : 100, ns = n < 15 ? n : 15;
        double whole = sorted_median(hist + t + 1 - n, n), recent = sorted_median(hist + t + 1 - ns, ns);
        double noise = nd ? 1.482602218505602 * sorted_median(diffs + t - nd, nd) / sqrt(2.0) : 0;
        double b, sp;
        assert_int_equal(detect_stats(d, EV_LOSS_SPIKE, &b, &sp, NULL), 0);
        assert_memory_equal(&b, &(double){fmin(whole, recent)}, sizeof b);
        assert_memory_equal(&sp, &noise, sizeof sp);
    }
}

/* A loss that falls steeply: the short median follows it, so a doubling is caught. */
static void test_falling_loss_tracked(void **state)
{
    Detector *d = *state;
    EventInfo info[EV_COUNT];
    for (int t = 0; t < 100; t++)
        assert_int_equal(detect_step(d, 9.0 * exp(-t / 40.0) + 1.0 + 0.01 * gauss(), 1.0, 0, info), 0);
    double now = 9.0 * exp(-100 / 40.0) + 1.0, b;
    detect_stats(d, EV_LOSS_SPIKE, &b, NULL, NULL);
    printf("falling loss: now %.3f, baseline %.3f (the median of the last 15: 7 steps behind)\n", now, b);
    assert_true(b < now * 1.2);
    assert_int_equal(detect_step(d, 2 * now, 1.0, 0, info), LS);
}

/* A slow lr ramp: the loss creeps up 3% per step; the window's median does not follow, so it
 * fires at 1.5x of where it started, before the loss doubles. */
static void test_slow_ramp(void **state)
{
    Detector *d = *state;
    EventInfo info[EV_COUNT];
    assert_int_equal(feed_clean(d, 0, 200), 0);
    double start = clean_loss(200), loss = start;
    int fired = -1;
    for (int t = 0; t < 60 && fired < 0; t++) {
        loss *= 1.03;
        if (detect_step(d, loss, clean_norm(), 0, info) & LS) fired = t;
    }
    printf("slow ramp: fired after %d steps at %.2fx the start\n", fired, loss / start);
    assert_true(fired > 0 && loss / start < 2.0);
}

/* ---- hidden-state resets: a healthy epoch boundary is never a spike ---- */

/* The losses and pre-clip norms of steps 801..910 of configs/default.yaml (seed 1, 2
 * workers, 20 epochs, from steps.jsonl): the first step of epoch 10 is 901, the hidden state
 * is zero there and the loss 1.072 against about 0.89. The old detector fired loss_spike at
 * step 901 (and at 1001). */
static const double boundary_loss[] = {
    0.87742248494517, 0.9035653857377044, 0.9171669175814323, 0.9123156765503542,
    0.8917027768623593, 1.0720321600424698, 0.8949526288757346, 0.8938580156657474,
    0.8865965648546168, 0.8974742433096397, 0.9040817445383296, 0.8723051694111026,
    0.8888259130838185, 0.8602692797674927, 0.8730995870386811
};
static const double boundary_norm[] = {
    0.18268551911290576, 0.2001212993411459, 0.21432738794099584, 0.20183787647940585,
    0.1863861607668324, 0.20890092536034008, 0.20901474733713463, 0.1889115226784606,
    0.20770067768434966, 0.19525404113201966, 0.20635974118518263, 0.16815206172348734,
    0.1899746374099957, 0.18536956450065825, 0.20417171419953226
};
/* steps 801..895 */
static const double boundary_lead_loss[] = {
    0.9773823790206747, 0.9188084383918953, 0.9215379440568381, 0.9039869329695075,
    0.8687859031205106, 0.8969136304497219, 0.9050142377613022, 0.8953622710741123,
    0.9007886945407901, 0.9009519211876076, 0.8533250797388277, 0.8876439314386754,
    0.8861733421769808, 0.9056272186955403, 0.8851846274535484, 0.8812400730548513,
    0.9293894416710096, 0.8941968333564478, 0.8689660892415563, 0.9356870234959613,
    0.8592564247192753, 0.9280229744900662, 0.9108715845717261, 0.8716031446477441,
    0.8986363657314439, 0.9299461184976905, 0.8992440910960311, 0.9069007013406651,
    0.9279663426825036, 0.8732903193496063, 0.8495062044814237, 0.8843507880368011,
    0.9105126691469168, 0.9443027364373748, 0.8926408473855183, 0.8806851379747719,
    0.9085885903201535, 0.8753878342195187, 0.8868407035648643, 0.8981874461248591,
    0.9096494089662145, 0.887688317112689, 0.9042508098755583, 0.9081658581759007,
    0.8336880072632852, 0.8517427372058821, 0.910115266942409, 0.9059043599380121,
    0.893701053735865, 0.8678190882540104, 0.9036136201077842, 0.9328898081114203,
    0.9016313542727936, 0.9410144914975069, 0.8993825397685025, 0.9146663125499228,
    0.906177529546177, 0.8763462781272702, 0.9179807846627097, 0.8524327695679561,
    0.8934859570144649, 0.9003166590367155, 0.9106625656321914, 0.9236413211967387,
    0.8752708112534877, 0.877810375919392, 0.8900584007446016, 0.8653149597735734,
    0.8857867890590758, 0.9054063586494795, 0.8969676908830806, 0.8645190904958788,
    0.8692920999118718, 0.9430834419015395, 0.9027305369971697, 0.8558056945040533,
    0.9141477452215079, 0.8748616632031327, 0.9148263337554174, 0.8644926984961803,
    0.8818760448174745, 0.8908584834685747, 0.8696970100894652, 0.9120792898286013,
    0.8731388582975248, 0.8874063401825409, 0.880448499355289, 0.9074037771096448,
    0.8965565941629998, 0.8918434527423085, 0.8826132228871966, 0.9107524536775391,
    0.8902915973615313, 0.8602417512248258, 0.8534042741323958
};
static const double boundary_lead_norm[] = {
    0.1933721280873643, 0.2035585441698844, 0.18829423359596575, 0.18947736740105187,
    0.1774371652118644, 0.19713542538306938, 0.20552715482377007, 0.18280503208440277,
    0.19756616452282144, 0.20120451985933954, 0.1819422930314387, 0.18972378784932709,
    0.19632356881592625, 0.20220232996974516, 0.19119084527024816, 0.19877340610268351,
    0.20936114800808425, 0.19399224627504444, 0.19046689994520719, 0.1978011833510745,
    0.19217276937322642, 0.22446927152426854, 0.21830716867962105, 0.1932849513493012,
    0.19158067116864774, 0.1917332406583298, 0.19454151859018504, 0.1912288725223875,
    0.1909403544527917, 0.17819529159023376, 0.19173030390898982, 0.21001145690298384,
    0.19328873912712224, 0.2102117839524547, 0.20437924994636342, 0.19012136549645692,
    0.19841479066659853, 0.18037962685022943, 0.19608456402758417, 0.1976191189753784,
    0.19318161315963564, 0.19800367384005174, 0.2136380022846717, 0.18720380951095816,
    0.17716351888358936, 0.1990151530166741, 0.20817407855469508, 0.187540665969445,
    0.21269832474158362, 0.18983053271003542, 0.18856789849437433, 0.19679989695984346,
    0.1935262003864901, 0.21378549572432465, 0.19465351140598472, 0.1885950122645776,
    0.18795474356712996, 0.194190372177802, 0.1947535220391346, 0.17924591553343341,
    0.19876165316166367, 0.21051664142254267, 0.19131711503374157, 0.2074143790140806,
    0.20602116037098459, 0.2106804862671895, 0.1921187568609233, 0.18862999236240247,
    0.19102968614432456, 0.1974249228531955, 0.1886963454392516, 0.17056798746895774,
    0.17938139035159356, 0.21043100586828922, 0.19469134437374314, 0.1895545162376732,
    0.18578457528506453, 0.17352740602501632, 0.20836985001594377, 0.1845686790204907,
    0.1900338755292281, 0.1951953217615253, 0.1783607987774942, 0.20349195524870517,
    0.17479095983589898, 0.1933890579307447, 0.18643224102433129, 0.1734882555327175,
    0.19228008531069554, 0.18885327152201078, 0.18419201473530264, 0.18233100392705043,
    0.18283429480198796, 0.18922102003564273, 0.20643639455494733
};
#define NB (int)(sizeof boundary_loss / sizeof boundary_loss[0])
#define NLEAD (int)(sizeof boundary_lead_loss / sizeof boundary_lead_loss[0])

static void test_healthy_epoch_boundary(void **state)
{
    (void)state;
    Detector *d = detector_for(16, 0.25);
    EventInfo info[EV_COUNT];
    unsigned all = 0;
    detect_reset(d); /* step 801: the start of epoch 9 */
    for (int i = 0; i < NLEAD; i++) all |= detect_step(d, boundary_lead_loss[i], boundary_lead_norm[i], 0, info);
    for (int i = 0; i < NB; i++) {
        if (i == 5) detect_reset(d); /* step 901 */
        all |= detect_step(d, boundary_loss[i], boundary_norm[i], 0, info);
    }
    printf("default config, steps 801..910 around the start of epoch 10: events 0x%x\n", all & (LS | GS));
    assert_int_equal(all & (LS | GS), 0);
    drop(d);
    /* brown-word, the first step of epoch 2: norm 0.49 against about 0.2, clip 1.0 */
    d = detector_for(14115, 1.0);
    noise_state = 7;
    for (int t = 0; t < 300; t++)
        all |= detect_step(d, 5.5 + 0.05 * gauss(), 0.2 * exp(0.1 * gauss()), 0, info);
    detect_reset(d);
    assert_int_equal(detect_step(d, 6.1, 0.49, 0, info), 0);
    assert_int_equal(detect_step(d, 5.8, 0.3, 0, info), 0);
    drop(d);
    /* the same jumps without the reset are spikes: the reset is what tells them apart */
    d = detector_for(16, 0.25);
    for (int i = 0; i < NLEAD; i++) detect_step(d, boundary_lead_loss[i], boundary_lead_norm[i], 1, info);
    double b;
    detect_stats(d, EV_LOSS_SPIKE, &b, NULL, NULL);
    assert_int_equal(detect_step(d, 1.7 * b, 0.3, 1, info) & LS, LS);
    drop(d);
}

/* A fault right after a reset is still caught: 2x the baseline fires there too. */
static void test_fault_after_reset(void **state)
{
    Detector *d = *state;
    EventInfo info[EV_COUNT];
    d->p.loss_initial = 0; /* the recent check alone */
    assert_int_equal(feed_clean(d, 0, 200), 0);
    double b;
    detect_stats(d, EV_LOSS_SPIKE, &b, NULL, NULL);
    detect_reset(d);
    assert_int_equal(detect_step(d, 1.8 * b, clean_norm(), 0, info), 0); /* a reset may cost 2x */
    detect_stats(d, EV_LOSS_SPIKE, &b, NULL, NULL);
    memset(info, 0, sizeof info);
    assert_int_equal(detect_step(d, 2.1 * b, clean_norm(), 0, info), LS);
    assert_true(info[EV_LOSS_SPIKE].threshold == 2 * b);
    for (int i = 0; i < 4; i++) detect_step(d, b, clean_norm(), 0, info);
    assert_int_equal(detect_step(d, 1.6 * b, clean_norm(), 0, info), LS); /* 5 steps on: 1.5x again */
}

/* grad_norm_spike: a norm the clip leaves alone is never a spike. */
static void test_norm_gate(void **state)
{
    (void)state;
    Detector *d = detector_for(0, 1.0);
    EventInfo info[EV_COUNT];
    noise_state = 3;
    for (int t = 0; t < 200; t++) detect_step(d, 1.0, 0.05 * exp(0.05 * gauss()), 0, info);
    assert_int_equal(detect_step(d, 1.0, 0.9, 0, info), 0);   /* 18x, under the clip */
    memset(info, 0, sizeof info);
    assert_int_equal(detect_step(d, 1.0, 1.1, 1, info), GS);  /* over it */
    EventInfo *e = &info[EV_GRAD_NORM_SPIKE];
    printf("norm spike: %.2f > %.3f (baseline %.4f, log noise %.4f)\n", e->value, e->threshold, e->baseline, e->spread);
    assert_true(e->check == CHK_RECENT && e->value > e->threshold && e->baseline < 0.06);
    drop(d);
}

/* ---- non-finite values ---- */

static void test_nonfinite(void **state)
{
    Detector *d = *state;
    EventInfo info[EV_COUNT];
    assert_int_equal(feed_clean(d, 0, 200), 0);
    double lb0, ls0, nb0, ns0;
    int ln0, nn0;
    detect_stats(d, EV_LOSS_SPIKE, &lb0, &ls0, &ln0);
    detect_stats(d, EV_GRAD_NORM_SPIKE, &nb0, &ns0, &nn0);
    const unsigned L = 1u << EV_NONFINITE_LOSS, G = 1u << EV_NONFINITE_GRAD;
    double bad[3] = { NAN, INFINITY, -INFINITY };
    for (int i = 0; i < 3; i++) {
        memset(info, 0, sizeof info);
        assert_int_equal(detect_step(d, bad[i], 1.5, 0, info), L);
        assert_true(memcmp(&info[EV_NONFINITE_LOSS].value, &bad[i], sizeof(double)) == 0);
        assert_true(info[EV_NONFINITE_LOSS].baseline == lb0 && isnan(info[EV_NONFINITE_LOSS].threshold));
        assert_int_equal(info[EV_NONFINITE_LOSS].check, CHK_NONFINITE);
        assert_int_equal(detect_step(d, 3.0, bad[i], 1, info), G);
        assert_true(memcmp(&info[EV_NONFINITE_GRAD].value, &bad[i], sizeof(double)) == 0);
        assert_true(info[EV_NONFINITE_GRAD].baseline == exp(nb0));
        assert_int_equal(detect_step(d, bad[i], bad[i], 1, info), L | G);
    }
    double lb, ls, nb, ns;
    int ln, nn;
    detect_stats(d, EV_LOSS_SPIKE, &lb, &ls, &ln);
    detect_stats(d, EV_GRAD_NORM_SPIKE, &nb, &ns, &nn);
    assert_true(lb == lb0 && ls == ls0 && nb == nb0 && ns == ns0 && ln == ln0 && nn == nn0);
    assert_int_equal(d->total_steps, 209); /* counted for the clip rate all the same */
    assert_int_equal(d->total_clipped, 6);
    /* a zero norm is neither an event nor put into the log history */
    assert_int_equal(detect_step(d, 3.0, 0.0, 0, info), 0);
    detect_stats(d, EV_GRAD_NORM_SPIKE, &nb, &ns, &nn);
    assert_true(nb == nb0 && ns == ns0);
    /* a NaN at step 1: the first finite loss becomes the anchor */
    Detector *f = new_detector();
    assert_int_equal(detect_step(f, NAN, NAN, 0, info), L | G);
    assert_int_equal(detect_step(f, 2.0, 1.0, 0, info), 0);
    assert_int_equal(detect_step(f, 3.1, 1.0, 0, info), LS);
    drop(f);
}

/* ---- clip events: on a change of state ---- */

static int clip_run(int mode, int steps, int (*pattern)(int), int *fires, int max)
{
    DetectParams p;
    detect_defaults(&p);
    p.clip_events = mode;
    Detector d;
    assert_int_equal(detect_init(&d, &p), 0);
    EventInfo info[EV_COUNT];
    int nf = 0;
    for (int t = 0; t < steps; t++) {
        unsigned m = detect_step(&d, 3.0, 1.0, pattern(t), info);
        assert_int_equal(m & ~(1u << EV_CLIP_SATURATION), 0);
        if (!m) continue;
        assert_true(info[EV_CLIP_SATURATION].value > 0.9 && info[EV_CLIP_SATURATION].threshold == 0.9);
        assert_int_equal(info[EV_CLIP_SATURATION].check, CHK_WINDOW);
        if (nf < max) fires[nf] = t;
        nf++;
    }
    detect_free(&d);
    return nf;
}

static int pat_95(int t) { return t % 20 < 19; }
static int pat_90(int t) { return t % 10 < 9; }
/* saturated from 100 to 400, then 10% until 600, then saturated again */
static int pat_twice(int t) { return (t >= 100 && t < 400) || t >= 600 ? 1 : t % 10 == 0; }

static void test_clip_saturation(void **state)
{
    (void)state;
    int f[64] = { 0 };
    assert_int_equal(clip_run(CLIPEV_CHANGE, 1000, pat_90, f, 64), 0); /* exactly 90% is not above */
    assert_int_equal(clip_run(CLIPEV_CHANGE, 1000, pat_95, f, 64), 1);
    assert_int_equal(f[0], 99); /* the first full window, then never again while saturated */
    int n = clip_run(CLIPEV_CHANGE, 1000, pat_twice, f, 64);
    printf("clip_saturation (change): entered saturation at steps %d and %d\n", f[0], f[1]);
    assert_int_equal(n, 2);
    assert_int_equal(f[0], 189); /* 91 of the last 100: step 90 and 100..189 */
    assert_int_equal(f[1], 689);
    assert_int_equal(clip_run(CLIPEV_ALWAYS, 1000, pat_95, f, 64), 10); /* once per window */
    assert_int_equal(clip_run(CLIPEV_OFF, 1000, pat_95, f, 64), 0);
}

static void test_clip_inactive(void **state)
{
    (void)state;
    const unsigned I = 1u << EV_CLIP_INACTIVE;
    /* epochs: clipped, none, none, clipped, none */
    const int clips[] = { 1, 0, 0, 1, 0 };
    const unsigned want[3][5] = { { 0, I, 0, 0, I }, { 0, I, I, 0, I }, { 0, 0, 0, 0, 0 } };
    for (int mode = 0; mode < 3; mode++) {
        DetectParams p;
        detect_defaults(&p);
        p.clip_events = mode;
        Detector d;
        EventInfo info[EV_COUNT];
        assert_int_equal(detect_init(&d, &p), 0);
        for (int e = 0; e < 5; e++) {
            for (int t = 0; t < 50; t++) detect_step(&d, 3, 1, clips[e] && t == 10, info);
            memset(info, 0, sizeof info);
            assert_int_equal(detect_epoch_end(&d, 1, NAN, info), want[mode][e]);
            if (want[mode][e]) assert_true(info[EV_CLIP_INACTIVE].value == 0 && info[EV_CLIP_INACTIVE].check == CHK_EPOCH);
        }
        detect_free(&d);
    }
    /* never clipped at all: one event, at the first epoch (change mode) */
    Detector *d = new_detector();
    EventInfo info[EV_COUNT];
    for (int e = 0; e < 4; e++) {
        for (int t = 0; t < 50; t++) detect_step(d, 3, 1, 0, info);
        assert_int_equal(detect_epoch_end(d, 1, NAN, info), e == 0 ? I : 0);
    }
    assert_int_equal(detect_epoch_end(d, 0, NAN, info), 0); /* clipping not active */
    drop(d);
    printf("clip_inactive: on the epochs where clipping stopped (change), every such epoch (always), never (off)\n");
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
           info[EV_VAL_LOSS_RISE].baseline, info[EV_VAL_LOSS_RISE].threshold);
    assert_true(info[EV_VAL_LOSS_RISE].value == 4.3 && info[EV_VAL_LOSS_RISE].baseline == 4.0 &&
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

    const double small[] = { 5.0, 5.04, 5.1, 5.2, 5.3 }; /* 0.8%: noise, not a rise */
    assert_int_equal(detect_init(&d, &p), 0);
    val_seq(&d, small, 5, &at);
    assert_int_equal(at, 4);
    detect_free(&d);

    const double gap[] = { 5.0, 5.1, NAN, 5.2, 5.3 };
    assert_int_equal(detect_init(&d, &p), 0);
    val_seq(&d, gap, 5, &at);
    assert_int_equal(at, 4); /* a missing validation is skipped, not a reset */
    detect_free(&d);

    assert_int_equal(detect_init(&d, &p), 0);
    for (int i = 0; i < 20; i++) assert_int_equal(detect_epoch_end(&d, 0, NAN, info), 0);
    detect_free(&d);
    printf("val_loss_rise: fall, tie and a rise under 1%% reset, NAN never fires\n");
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
    if (t % 60 == 0) detect_reset(d); /* each epoch starts from a zero hidden state */
    unsigned m = detect_step(d, loss, norm, clipped, info);
    *epoch_mask = 0;
    if (t % 60 == 59) {
        int k = t / 60; /* falls, rises 4 epochs in a row (firing at the 3rd); every 7th has none */
        *epoch_mask = detect_epoch_end(d, 1, k % 7 == 6 ? NAN : 2.0 + 0.05 * ((k + 5) % 6), einfo);
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
        { 5, -1.0, "diff count negative" },
        { 16, INFINITY, "first loss infinite" },
        { 17, 0.5, "steps since reset not an integer" },
        { 18, 101.0, "clip count beyond the window" },
        { 20, 3.0, "clipped count disagrees with the flags" },
        { 22, 2.0, "saturated not 0/1" },
        { 25, 1e9, "epoch clipped above epoch steps" },
        { 28, INFINITY, "validation loss infinite" },
        { 32 + 5, NAN, "history value NaN" },
        { 32 + 150, -1.0, "a difference negative" },
        { 32 + 400 + 7, 0.5, "clip flag not 0/1" },
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
        cmocka_unit_test(test_lr_x1000_at_step_1),
        cmocka_unit_test(test_uniform_and_initial),
        cmocka_unit_test(test_clip_limit),
        cmocka_unit_test_setup_teardown(test_clean_series_silent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_medians_match_sort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recent_loss_spike, setup, teardown),
        cmocka_unit_test_setup_teardown(test_falling_loss_tracked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_ramp, setup, teardown),
        cmocka_unit_test(test_healthy_epoch_boundary),
        cmocka_unit_test_setup_teardown(test_fault_after_reset, setup, teardown),
        cmocka_unit_test(test_norm_gate),
        cmocka_unit_test_setup_teardown(test_nonfinite, setup, teardown),
        cmocka_unit_test(test_clip_saturation),
        cmocka_unit_test(test_clip_inactive),
        cmocka_unit_test(test_val_loss_rise),
        cmocka_unit_test_setup_teardown(test_save_load_bit_identical, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_rejects, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
