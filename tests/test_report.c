/* Unit tests of clipd-report (daemon/report.c, included so its static
 * functions are reachable and no other object depends on it): the summary of
 * a hand-made run directory (tests/data/report/run) against numbers worked
 * out by hand, errors naming file and line, a crashed run's partial line, and
 * the numeric helpers (smoothing, window rate, decimation, ticks) against
 * naive references. Run from the repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#define main report_main
#include "daemon/report.c"
#undef main

#define DATA "tests/data/report/"

static double worst_err(double worst, double a, double b)
{
    if (isnan(a) && isnan(b)) return worst;
    double e = fabs(a - b);
    return isnan(e) ? INFINITY : fmax(worst, e);
}

/* ---- a run directory: every number of the summary, worked out by hand ---- */

static int load_run(void **state)
{
    static Report r;
    char err[512] = "";
    int rc = rep_load(&r, DATA "run/", NAN, err, sizeof err);
    if (rc) fprintf(stderr, "rep_load: %s\n", err);
    *state = &r;
    return rc;
}

static int free_run(void **state)
{
    rep_free(*state);
    return 0;
}

static void test_run_logs(void **state)
{
    const Report *r = *state;
    assert_string_equal(r->dir, DATA "run"); /* trailing slash dropped */
    assert_string_equal(r->name, "fixture");
    assert_int_equal(r->nst, 10);
    assert_int_equal(r->nep, 2);
    assert_int_equal(r->nev, 2);
    assert_int_equal(r->st[5].step, 5); /* the re-run after the rollback */
    assert_int_equal(r->st[5].seq, 6);
    assert_true(isnan(r->st[6].loss) && isnan(r->st[6].norm) && r->st[6].skipped);
    assert_int_equal(r->ep[0].end_seq, 4);
    assert_int_equal(r->ep[1].end_seq, 9);
    assert_true(r->max_norm == 0.5); /* clip:, not model: */
    assert_string_equal(r->max_norm_src, "config.yaml");
    assert_int_equal(r->nnotes, 0);
    assert_false(r->finished);
    /* the spike's largest tensor: 80^2 / (80^2 + 60^2) */
    assert_string_equal(r->ev[0].top, "layers.0.wh");
    assert_int_equal(r->ev[0].rollback_to, 4);
    assert_true(fabs(r->ev[0].top_share - 0.64) < 1e-12);
    assert_int_equal(r->ev[1].rollback_to, -1);
    assert_true(isnan(r->ev[1].top_share));
}

static void test_run_summary(void **state)
{
    const Report *r = *state;
    RepSummary s;
    rep_summarise(r, &s);
    assert_int_equal(s.distinct, 9);
    assert_int_equal(s.rollbacks, 1);
    assert_int_equal(s.clipped, 4);
    assert_int_equal(s.skipped, 2);
    assert_int_equal(s.nonfinite, 1);
    assert_int_equal(s.finite_norms, 9);
    /* sorted finite norms 0.3 0.4 0.45 0.5 0.55 0.6 0.7 0.8 100, nearest rank */
    double worst = 0;
    worst = worst_err(worst, s.p50, 0.55);
    worst = worst_err(worst, s.p90, 100);
    worst = worst_err(worst, s.p99, 100);
    worst = worst_err(worst, s.pmax, 100);
    worst = worst_err(worst, s.clip_rate, 0.4);
    worst = worst_err(worst, s.final_val, 1.55);
    worst = worst_err(worst, s.best_val, 1.55);
    worst = worst_err(worst, s.tok_s, 1000); /* lower median of 1000, 3000 */
    worst = worst_err(worst, s.step_ms, 5);
    printf("summary: worst error %.3g (tolerance 1e-12)\n", worst);
    assert_true(worst <= 1e-12);
    assert_int_equal(s.final_epoch, 2);
    assert_int_equal(s.best_epoch, 2);
    assert_true(s.has_cur); /* epoch 3 has a step but no epochs.jsonl line */
    assert_int_equal(s.cur.epoch, 3);
    assert_int_equal(s.cur.steps, 1);
    assert_int_equal(s.cur.clipped, 1);
}

static void test_run_tensors(void **state)
{
    const Report *r = *state;
    RepSummary s;
    rep_summarise(r, &s);
    /* rows: (.36, .64), (1, 0), (.36, .64); the row with a null norm is left out */
    assert_int_equal(s.tsamples, 3);
    assert_int_equal(s.ntop, 2);
    assert_string_equal(r->t.names[s.top[0].idx], "head.weight");
    double worst = 0;
    worst = worst_err(worst, s.top[0].share, (0.36 + 1 + 0.36) / 3);
    worst = worst_err(worst, s.top[1].share, (0.64 + 0 + 0.64) / 3);
    worst = worst_err(worst, s.top[0].early, 0.36);
    worst = worst_err(worst, s.top[0].late, 0.36);
    worst = worst_err(worst, s.top[1].max_norm, 0.8);
    printf("tensor shares: worst error %.3g (tolerance 1e-12)\n", worst);
    assert_true(worst <= 1e-12);
}

static void test_run_svg(void **state)
{
    const Report *r = *state;
    RepSummary s;
    char path[] = "/tmp/clipd-test-report-XXXXXX", err[256] = "";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    rep_summarise(r, &s);
    assert_int_equal(rep_write_svg(r, &s, path, err, sizeof err), 0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(path);
    assert_non_null(strstr(buf, "<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_non_null(strstr(buf, "clip threshold 0.5"));
    assert_non_null(strstr(buf, "stroke-dasharray=\"8 5\"")); /* the threshold line */
    assert_non_null(strstr(buf, "grad_norm_spike @5"));
    assert_non_null(strstr(buf, "layers.0.wh"));
    assert_non_null(strstr(buf, "</svg>\n"));
    assert_int_equal(rep_write_svg(r, &s, "/nonexistent-dir/x.svg", err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent-dir/x.svg: cannot write"));
}

/* ---- what is wrong with a directory that is not a (whole) run ---- */

static void expect_error(const char *dir, const char *want)
{
    Report r;
    char err[1024] = "";
    assert_int_equal(rep_load(&r, dir, NAN, err, sizeof err), -1);
    if (!strstr(err, want)) fprintf(stderr, "error \"%s\" lacks \"%s\"\n", err, want);
    assert_non_null(strstr(err, want));
    rep_free(&r);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error(DATA "notrun", DATA "notrun/steps.jsonl: no such file");
    expect_error(DATA "missing", DATA "missing: No such file or directory");
    expect_error(DATA "run/steps.jsonl", "not a directory");
    expect_error(DATA "bad_middle", DATA "bad_middle/steps.jsonl:3:");
    expect_error(DATA "bad_middle", "invalid JSON");
    expect_error(DATA "bad_field", DATA "bad_field/steps.jsonl:2: loss: expected a number or null");
    expect_error(DATA "bad_seq", DATA "bad_seq/steps.jsonl:4: seq: 2 does not follow 3");
}

static void test_partial_and_empty(void **state)
{
    (void)state;
    Report r;
    RepSummary s;
    char err[512] = "";
    assert_int_equal(rep_load(&r, DATA "partial", NAN, err, sizeof err), 0);
    assert_int_equal(r.nst, 6); /* line 7 was cut mid-way */
    assert_true(r.nnotes >= 1);
    assert_non_null(strstr(r.notes[0], "ignored a partial last line in steps.jsonl"));
    /* no config.yaml: the threshold is coef x norm of the clipped steps */
    assert_true(fabs(r.max_norm - 0.5) < 1e-12);
    rep_summarise(&r, &s);
    assert_true(s.has_cur);
    assert_int_equal(s.cur.epoch, 2);
    rep_free(&r);
    assert_int_equal(rep_load(&r, DATA "empty", 0.25, err, sizeof err), 0);
    assert_int_equal(r.nst, 0);
    assert_true(r.max_norm == 0.25);
    assert_string_equal(r.max_norm_src, "--max-norm");
    rep_summarise(&r, &s);
    assert_int_equal(s.distinct, 0);
    rep_free(&r);
}

static void test_yaml_scan(void **state)
{
    (void)state;
    char v[64];
    const char *cfg = DATA "run/config.yaml";
    assert_int_equal(rep_yaml_scan(cfg, "run", "name", v, sizeof v), 1);
    assert_string_equal(v, "fixture");
    assert_int_equal(rep_yaml_scan(cfg, "clip", "max_norm", v, sizeof v), 1);
    assert_string_equal(v, "0.5");
    assert_int_equal(rep_yaml_scan(cfg, "model", "max_norm", v, sizeof v), 1);
    assert_string_equal(v, "7");
    assert_int_equal(rep_yaml_scan(cfg, "clip", "max", v, sizeof v), 0);
    assert_int_equal(rep_yaml_scan(cfg, "run", "max_norm", v, sizeof v), 0);
    assert_int_equal(rep_yaml_scan(DATA "nope.yaml", "clip", "max_norm", v, sizeof v), -1);
}

/* ---- numeric helpers against naive references ---- */

static uint64_t rng_state = 12345;

static double unif(void)
{
    uint64_t x = (rng_state += 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return (double)((x ^ (x >> 31)) >> 11) * 0x1.0p-53;
}

static void test_smooth(void **state)
{
    (void)state;
    enum { N = 500 };
    double y[N], out[N], worst = 0;
    for (int i = 0; i < N; i++) y[i] = unif() < 0.05 ? NAN : 3 * unif() - 1;
    for (int k = 0; k < 20; k++) y[200 + k] = NAN; /* a gap longer than the window */
    long ws[] = {1, 5, 15, 51};
    for (size_t t = 0; t < 4; t++) {
        long w = ws[t];
        rep_smooth(out, y, N, w);
        for (long i = 0; i < N; i++) {
            double s = 0;
            long c = 0;
            for (long j = i - w / 2; j <= i + w / 2; j++)
                if (j >= 0 && j < N && isfinite(y[j])) s += y[j], c++;
            worst = worst_err(worst, out[i], c ? s / (double)c : NAN);
        }
    }
    printf("rep_smooth: worst error %.3g (tolerance 1e-12)\n", worst);
    assert_true(worst <= 1e-12);
}

static void test_window_rate(void **state)
{
    (void)state;
    enum { N = 300 };
    bool f[N];
    double out[N], worst = 0;
    for (int i = 0; i < N; i++) f[i] = unif() < 0.4;
    long w = 50;
    rep_window_rate(out, f, N, w);
    for (long i = 0; i < N; i++) {
        long lo = i - w + 1 > 0 ? i - w + 1 : 0, c = 0;
        for (long j = lo; j <= i; j++) c += f[j];
        worst = worst_err(worst, out[i], (double)c / (double)(i - lo + 1));
    }
    printf("rep_window_rate: worst error %.3g (tolerance 0)\n", worst);
    assert_true(worst == 0);
}

static void test_decimate(void **state)
{
    (void)state;
    enum { N = 20000, COLS = 300 };
    static double x[N], y[N], ox[2 * COLS], oy[2 * COLS];
    for (int i = 0; i < N; i++) x[i] = i + 1, y[i] = unif() < 0.01 ? NAN : exp(4 * unif());
    long m = rep_decimate(ox, oy, x, y, N, 0, N, COLS);
    assert_true(m <= 2 * COLS);
    /* every column keeps its smallest and largest finite y, in order */
    for (int c = 0; c < COLS; c++) {
        double lo = INFINITY, hi = -INFINITY, got_lo = INFINITY, got_hi = -INFINITY;
        for (int i = 0; i < N; i++)
            if (column(x[i], 0, N, COLS) == c && isfinite(y[i])) lo = fmin(lo, y[i]), hi = fmax(hi, y[i]);
        for (long k = 0; k < m; k++)
            if (column(ox[k], 0, N, COLS) == c) got_lo = fmin(got_lo, oy[k]), got_hi = fmax(got_hi, oy[k]);
        assert_true(lo == got_lo && hi == got_hi);
    }
    for (long k = 1; k < m; k++) assert_true(ox[k] > ox[k - 1]);
    /* few points: all kept */
    double sx[3] = {1, 2, 3}, sy[3] = {5, NAN, 7};
    assert_int_equal(rep_decimate(ox, oy, sx, sy, 3, 0, 3, 1000), 2);
}

static void test_ticks(void **state)
{
    (void)state;
    double t[64];
    int n = rep_ticks(t, 64, 0, 1, 5);
    assert_int_equal(n, 6);
    assert_true(t[0] == 0 && fabs(t[5] - 1) < 1e-12);
    n = rep_ticks(t, 64, 0, 850, 10);
    assert_int_equal(n, 9); /* 0, 100, ..., 800 */
    assert_true(t[8] == 800);
    n = rep_ticks(t, 64, 2.63, 2.86, 5);
    assert_true(n >= 3 && t[0] >= 2.63 && t[n - 1] <= 2.86);
    n = rep_log_ticks(t, 64, -1.2, 3.5); /* decades only: 0.1 .. 1000 */
    assert_int_equal(n, 5);
    assert_true(fabs(t[0] - 0.1) < 1e-15 && fabs(t[4] - 1000) < 1e-9);
    n = rep_log_ticks(t, 64, log10(0.07), log10(0.4)); /* under a decade: 1..9 */
    assert_int_equal(n, 7); /* 0.07, 0.08, 0.09, 0.1, 0.2, 0.3, 0.4 */
    char b[32];
    assert_string_equal(tick_label(b, sizeof b, 1e4, false), "10000");
    assert_string_equal(tick_label(b, sizeof b, 1e6, false), "1e6");
    assert_string_equal(tick_label(b, sizeof b, 1e-5, false), "1e-5");
    assert_string_equal(tick_label(b, sizeof b, 0.25, true), "25%");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_run_logs, load_run, free_run),
        cmocka_unit_test_setup_teardown(test_run_summary, load_run, free_run),
        cmocka_unit_test_setup_teardown(test_run_tensors, load_run, free_run),
        cmocka_unit_test_setup_teardown(test_run_svg, load_run, free_run),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_partial_and_empty),
        cmocka_unit_test(test_yaml_scan),
        cmocka_unit_test(test_smooth),
        cmocka_unit_test(test_window_rate),
        cmocka_unit_test(test_decimate),
        cmocka_unit_test(test_ticks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
