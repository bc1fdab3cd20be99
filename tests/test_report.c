/* Unit tests of clipd-report (daemon/report/, linked as objects; the limits
 * from its internal.h): the summary of a hand-made run directory
 * (tests/data/report/run) against numbers worked out by hand, errors naming
 * file and line, a crashed run's partial line, and the numeric helpers
 * (smoothing, window rate, decimation, ticks) against naive references. Run
 * from the repository root. */
#include <ctype.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>

#include "daemon/report/internal.h"
#include "tests/testutil.h"

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

/* ---- hostile run directories, made in a temporary directory ---- */

#define STEP1 "{\"seq\":1,\"step\":1,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n"

/* A temporary directory and the run directory in it: the temporary one
 * itself, or (tmp_run_named) a subdirectory of it with a given name. */
typedef struct {
    TmpDir t;
    char dir[64];
} TmpRun;

/* name, text pairs (NULL-terminated) as files in dir. */
static void write_files(const char *dir, const char *const *files)
{
    for (; files[0]; files += 2) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, files[0]);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        assert_int_equal(fputs(files[1], f) >= 0, 1);
        assert_int_equal(fclose(f), 0);
    }
}

/* A run directory holding the files. */
static void tmp_run(TmpRun *r, const char *const *files)
{
    assert_int_equal(tmpdir_make(&r->t, "report-run"), 0);
    snprintf(r->dir, sizeof r->dir, "%s", r->t.dir);
    write_files(r->dir, files);
}

static void tmp_run_rm(TmpRun *r) { tmpdir_remove(&r->t); }

/* tmp_run, the run directory named name inside the temporary one. */
static void tmp_run_named(TmpRun *r, const char *name, const char *const *files)
{
    assert_int_equal(tmpdir_make(&r->t, "report-run"), 0);
    assert_true(snprintf(r->dir, sizeof r->dir, "%s/%s", r->t.dir, name) < (int)sizeof r->dir);
    assert_int_equal(mkdir(r->dir, 0700), 0);
    write_files(r->dir, files);
}

/* The optional files: absent is no error (has_* false, a note), present is
 * read (has_* true), one that cannot be read (here a directory) is an error
 * naming it; an event with seq -1 is refused (every event carries its step's seq). */
static void test_optional_files(void **state)
{
    (void)state;
    Report r;
    TmpRun t;
    char err[512] = "", path[160];
    const char *only_steps[] = {"steps.jsonl", STEP1, NULL};
    tmp_run(&t, only_steps);
    if (rep_load(&r, t.dir, NAN, err, sizeof err)) fail_msg("rep_load: %s", err);
    assert_false(r.has_epochs);
    assert_false(r.has_events);
    assert_false(r.has_tensors);
    assert_int_equal(r.nses, 0);
    rep_free(&r);
    const char *ev[] = {"events.jsonl",
                        "{\"seq\":1,\"step\":1,\"epoch\":1,\"kind\":\"replica_drift\",\"action\":\"log\"}\n",
                        "sessions.jsonl", "{\"kind\":\"start\",\"seq\":0,\"step\":0}\n", NULL};
    write_files(t.dir, ev);
    assert_int_equal(rep_load(&r, t.dir, NAN, err, sizeof err), 0);
    assert_true(r.has_events);
    assert_int_equal(r.nev, 1);
    assert_int_equal(r.nses, 1);
    rep_free(&r);
    const char *ev_neg[] = {"events.jsonl",
                            "{\"seq\":-1,\"step\":1,\"epoch\":1,\"kind\":\"replica_drift\",\"action\":\"log\"}\n",
                            NULL};
    write_files(t.dir, ev_neg);
    assert_int_equal(rep_load(&r, t.dir, NAN, err, sizeof err), -1);
    assert_non_null(strstr(err, "events.jsonl:1: seq:"));
    rep_free(&r); /* after a failed load too (report.h) */
    snprintf(path, sizeof path, "%s/tensors.jsonl", t.dir);
    assert_int_equal(mkdir(path, 0700), 0);
    remove(strcat(strcpy(path, t.dir), "/events.jsonl"));
    err[0] = '\0';
    assert_int_equal(rep_load(&r, t.dir, NAN, err, sizeof err), -1);
    snprintf(path, sizeof path, "%s/tensors.jsonl: cannot read", t.dir);
    if (!strstr(err, path)) fprintf(stderr, "error \"%s\" lacks \"%s\"\n", err, path);
    assert_non_null(strstr(err, path));
    rep_free(&r);
    snprintf(path, sizeof path, "%s/tensors.jsonl", t.dir);
    assert_int_equal(rmdir(path), 0);
    tmp_run_rm(&t);
}

static char *slurp(const char *path)
{
    char *buf = file_slurp(path, NULL);
    assert_non_null(buf);
    return buf;
}

/* The SVG of a loaded run, as a string to free. */
static char *svg_string(const Report *r, const char *dir)
{
    RepSummary s;
    char path[128], err[512] = "";
    snprintf(path, sizeof path, "%s/out.svg", dir);
    rep_summarise(r, &s);
    int rc = rep_write_svg(r, &s, path, err, sizeof err);
    if (rc) fprintf(stderr, "rep_write_svg: %s\n", err);
    assert_int_equal(rc, 0);
    return slurp(path);
}

/* The --json summary of a loaded run, parsed. */
static json_t *json_of(const Report *r, const char *dir)
{
    RepSummary s;
    char path[128];
    snprintf(path, sizeof path, "%s/out.json", dir);
    rep_summarise(r, &s);
    fflush(stdout);
    int saved = dup(1), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 1);
    close(fd);
    int rc = rep_print_json(r, &s);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    assert_int_equal(rc, 0);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o) fprintf(stderr, "%s:%d: %s\n", path, je.line, je.text);
    assert_non_null(o);
    return o;
}

static long count_of(const char *s, const char *pat)
{
    long n = 0;
    for (const char *p = s; (p = strstr(p, pat)); p += strlen(pat)) n++;
    return n;
}

/* Every & starts an entity and every < a tag: text from the files was escaped. */
static void assert_xml_escaped(const char *svg)
{
    for (const char *p = svg; *p; p++) {
        if (*p == '&')
            assert_true(strncmp(p, "&amp;", 5) == 0 || strncmp(p, "&lt;", 4) == 0 ||
                        strncmp(p, "&gt;", 4) == 0 || strncmp(p, "&quot;", 6) == 0);
        if (*p == '<')
            assert_true(p[1] == '/' || p[1] == '?' || p[1] == '!' || (p[1] >= 'a' && p[1] <= 'z'));
    }
}

/* Lines of steps.jsonl: step(i) at seq i + 1, i < n; skipped when asked. */
static char *steps_text(long n, long (*step)(long), bool skipped)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    for (long i = 0; i < n; i++)
        fprintf(f, "{\"seq\":%ld,\"step\":%ld,\"epoch\":1,\"loss\":%g,\"grad_norm\":%g,\"skipped\":%s}\n", i + 1,
                step(i), 1 + 0.5 * (double)(i % 7), i % 2 ? 0.5 : 50.0, skipped ? "true" : "false");
    fclose(f);
    return buf;
}

static long step_up(long i) { return i + 1; }

#define KIND30 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" /* 30 bytes: with "\u00e9", one past kind[32] */
#define B62 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define C62 "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

/* 1: a kind or tensor name cut to its buffer stays valid UTF-8, so --json
 * keeps it (it used to leave half a character, and json_events used the
 * by-kind object after jansson refused it); bytes of the run directory's
 * name that are not UTF-8 come out as U+FFFD. */
static void test_utf8_names(void **state)
{
    (void)state;
    char b[8];
    rep_copy_str(b, 4, "a\xc3\xa9\xe2\x82\xac"); /* a, e acute (2 bytes), euro (3 bytes) */
    assert_string_equal(b, "a\xc3\xa9");
    rep_copy_str(b, 3, "a\xe2\x82\xac");
    assert_string_equal(b, "a");
    TmpRun t;
    const char *files[] = {
        "steps.jsonl", "{\"seq\":1,\"step\":1,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n"
                       "{\"seq\":2,\"step\":2,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n",
        "events.jsonl", "{\"seq\":1,\"step\":1,\"kind\":\"" KIND30 "\\u00e9\",\"tensor_norms\":"
                        "[{\"tensor\":\"" B62 "\\u00e9\",\"norm\":3}]}\n"
                        "{\"seq\":2,\"step\":2,\"kind\":\"" KIND30 "\\u00e9\"}\n",
        "tensors.jsonl", "{\"seq\":1,\"norms\":{\"" C62 "\\u20ac\":1,\"d\":2}}\n",
        NULL};
    tmp_run_named(&t, "x\xff<y>", files);
    Report r;
    char err[512] = "";
    assert_int_equal(rep_load(&r, t.dir, NAN, err, sizeof err), 0);
    assert_string_equal(r.ev[0].kind, KIND30);
    assert_string_equal(r.ev[0].top, B62);
    assert_string_equal(r.t.names[0], C62);
    json_t *o = json_of(&r, t.dir);
    json_t *k = json_object_get(json_object_get(o, "events_by_kind"), KIND30);
    assert_non_null(k);
    assert_int_equal(json_integer_value(json_object_get(k, "count")), 2);
    assert_int_equal(json_array_size(json_object_get(k, "steps")), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(o, "events"), 0), "top_tensor")), B62);
    assert_string_equal(json_string_value(json_object_get(o, "run_name")), "x\xef\xbf\xbd<y>");
    json_decref(o);
    char *svg = svg_string(&r, t.dir);
    assert_non_null(strstr(svg, "x\xef\xbf\xbd&lt;y&gt;"));
    assert_xml_escaped(svg);
    free(svg);
    rep_free(&r);
    tmp_run_rm(&t);
}

/* 2: tensors.jsonl rows must come in increasing seq (tensor_buckets wrote past
 * its columns on rows that went back and forth); the buckets stay in bounds. */
static void test_tensors_seq(void **state)
{
    (void)state;
    TmpRun t;
    const char *files[] = {
        "steps.jsonl", "{\"seq\":1,\"step\":1,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n",
        "tensors.jsonl", "{\"seq\":2,\"norms\":{\"a\":1}}\n{\"seq\":4,\"norms\":{\"a\":1}}\n"
                         "{\"seq\":3,\"norms\":{\"a\":1}}\n",
        NULL};
    tmp_run(&t, files);
    char want[128];
    snprintf(want, sizeof want, "%s/tensors.jsonl:3: seq: 3 does not follow 4", t.dir);
    expect_error(t.dir, want);
    tmp_run_rm(&t);
    /* in memory, rows out of order: at most SVG_COLS / 2 buckets (ASan checks) */
    enum { N = 3000 };
    char *steps = steps_text(N, step_up, false), *tens = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&tens, &len);
    for (long i = 0; i < N; i++) fprintf(f, "{\"seq\":%ld,\"norms\":{\"a\":%ld,\"b\":1}}\n", i + 1, i % 5);
    fclose(f);
    const char *files2[] = {"steps.jsonl", steps, "tensors.jsonl", tens, NULL};
    tmp_run(&t, files2);
    free(steps), free(tens);
    Report r;
    char err[512] = "";
    assert_int_equal(rep_load(&r, t.dir, NAN, err, sizeof err), 0);
    assert_int_equal(r.t.nrows, N);
    for (long i = 0; i < N; i++) r.t.rows[i].seq = i % 2 ? 1 : N;
    char *svg = svg_string(&r, t.dir);
    assert_non_null(strstr(svg, "by tensor</text>"));
    free(svg);
    rep_free(&r);
    tmp_run_rm(&t);
}

/* 3: kinds, tensor names and the run name reach the SVG escaped. */
static void test_svg_escaped(void **state)
{
    (void)state;
    TmpRun t;
    const char *files[] = {
        "steps.jsonl", "{\"seq\":1,\"step\":1,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n"
                       "{\"seq\":2,\"step\":2,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n"
                       "{\"seq\":3,\"step\":1,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n",
        "events.jsonl", "{\"seq\":2,\"step\":2,\"kind\":\"a&b<i>\",\"rollback_to\":0,"
                        "\"tensor_norms\":[{\"tensor\":\"w<&>\\\"\",\"norm\":3}]}\n"
                        "{\"seq\":3,\"step\":1,\"kind\":\"\\\"q'\\u0007\\uffff\"}\n",
        "tensors.jsonl", "{\"seq\":1,\"norms\":{\"t<1>&\":1,\"u\\\"\":2}}\n",
        NULL};
    tmp_run_named(&t, "r&d <x>", files);
    Report r;
    char err[512] = "";
    assert_int_equal(rep_load(&r, t.dir, NAN, err, sizeof err), 0);
    char *svg = svg_string(&r, t.dir);
    assert_non_null(strstr(svg, ">a&amp;b&lt;i&gt; @2 \xe2\x86\x92 rollback to 0</text>"));
    assert_non_null(strstr(svg, ">a&amp;b&lt;i&gt; (1)</text>")); /* the legend */
    assert_non_null(strstr(svg, ">&quot;q'\xef\xbf\xbd @1</text>"));
    assert_non_null(strstr(svg, ">t&lt;1&gt;&amp;</text>"));
    assert_non_null(strstr(svg, ">u&quot;</text>"));
    assert_non_null(strstr(svg, "r&amp;d &lt;x&gt;"));
    assert_null(strstr(svg, "a&b"));
    assert_xml_escaped(svg);
    free(svg);
    rep_free(&r);
    tmp_run_rm(&t);
}

/* 4: seq and step numbers past 2^53 are refused (every x was NaN, and NaN
 * was cast to int); up to 2^53 they plot, as do losses, norms and clip rates
 * near the largest doubles, without a NaN or infinite coordinate. */
static void test_seq_range(void **state)
{
    (void)state;
    assert_int_equal(rep_column(NAN, 0, 1, 10), 0);
    assert_int_equal(rep_column(INFINITY, 0, 1, 10), 9);
    assert_int_equal(rep_column(-INFINITY, 0, 1, 10), 0);
    char *steps = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&steps, &len);
    for (int64_t i = 9; i >= 0; i--)
        fprintf(f, "{\"seq\":%lld,\"step\":%lld,\"epoch\":1,\"loss\":%g,\"grad_norm\":%g}\n",
                (long long)(REP_SEQ_MAX - i), (long long)(REP_SEQ_MAX - i),
                i == 3 ? 1e308 : i == 4 ? -1e308 : 2.0 + (double)i, i == 5 ? 1e308 : i == 6 ? 1e-308 : 1.0);
    fclose(f);
    TmpRun t;
    const char *files[] = {"steps.jsonl", steps, "events.jsonl",
                           "{\"seq\":9007199254740990,\"step\":9007199254740990,\"kind\":\"loss_spike\"}\n",
                           "tensors.jsonl", "{\"seq\":9007199254740991,\"norms\":{\"a\":1}}\n",
                           "epochs.jsonl", "{\"epoch\":1,\"clip_rate\":1e308,\"val_loss\":-1e308}\n", NULL};
    tmp_run(&t, files);
    free(steps);
    Report r;
    char err[512] = "";
    assert_int_equal(rep_load(&r, t.dir, NAN, err, sizeof err), 0);
    char *svg = svg_string(&r, t.dir);
    for (char *p = svg; *p; p++) *p = (char)tolower((unsigned char)*p);
    assert_null(strstr(svg, "nan"));
    assert_null(strstr(svg, "inf"));
    free(svg);
    rep_free(&r);
    tmp_run_rm(&t);
    const char *over[][2] = {
        {"steps.jsonl", "{\"seq\":9007199254740993,\"step\":1,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n"},
        {"steps.jsonl", "{\"seq\":1,\"step\":9007199254740993,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n"},
        {"events.jsonl", "{\"seq\":1,\"step\":1,\"kind\":\"x\",\"rollback_to\":9007199254740993}\n"},
        {"tensors.jsonl", "{\"seq\":9007199254740993,\"norms\":{\"a\":1}}\n"},
    };
    const char *key[] = {"seq", "step", "rollback_to", "seq"};
    for (int k = 0; k < 4; k++) {
        const char *fs[] = {"steps.jsonl", "{\"seq\":1,\"step\":1,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n",
                            over[k][0], over[k][1], NULL};
        tmp_run(&t, fs);
        char want[160];
        snprintf(want, sizeof want, "%s/%s:1: %s: 9007199254740993 out of range", t.dir, over[k][0], key[k]);
        expect_error(t.dir, want);
        tmp_run_rm(&t);
    }
    /* the step after 2^53 without a seq of its own */
    const char *fs[] = {"steps.jsonl", "{\"seq\":9007199254740992,\"step\":1,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n"
                                       "{\"step\":2,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n", NULL};
    tmp_run(&t, fs);
    char want[160];
    snprintf(want, sizeof want, "%s/steps.jsonl:2: seq:", t.dir);
    expect_error(t.dir, want);
    tmp_run_rm(&t);
}

static long step_down(long i) { return 100000 - i; }
static long step_zigzag(long i) { return 1 + i % 2; }

/* 5: work and output linear in the input. Steps numbered downwards used to
 * take O(n^2) and a rect per step for the rollback bands; alternating steps
 * give a band each, of which SVG_BANDS are drawn and the legend says so. */
static void test_hostile_sizes(void **state)
{
    (void)state;
    TmpRun t;
    Report r;
    char err[512] = "";
    char *steps = steps_text(100000, step_down, true);
    const char *files[] = {"steps.jsonl", steps, NULL};
    tmp_run(&t, files);
    free(steps);
    assert_int_equal(rep_load(&r, t.dir, NAN, err, sizeof err), 0);
    char *svg = svg_string(&r, t.dir);
    assert_int_equal(count_of(svg, "fill-opacity=\"0.08\""), 3); /* one band, in each of 3 panels */
    assert_true(count_of(svg, "<circle") <= 4 * SVG_COLS);      /* skipped-step rings: a few per pixel */
    assert_true(strlen(svg) < 1000000);
    printf("100000 steps numbered downwards, all skipped: an SVG of %zu bytes\n", strlen(svg));
    free(svg);
    rep_free(&r);
    tmp_run_rm(&t);

    steps = steps_text(20000, step_zigzag, false);
    const char *files2[] = {"steps.jsonl", steps, NULL};
    tmp_run(&t, files2);
    free(steps);
    assert_int_equal(rep_load(&r, t.dir, NAN, err, sizeof err), 0);
    svg = svg_string(&r, t.dir);
    assert_int_equal(count_of(svg, "fill-opacity=\"0.08\""), 3 * SVG_BANDS);
    assert_non_null(strstr(svg, "steps re-run after a rollback (first 200 of 9999 ranges drawn)"));
    free(svg);
    rep_free(&r);
    tmp_run_rm(&t);

    /* tensor names: at most REP_TENSOR_NAMES */
    for (int names = REP_TENSOR_NAMES; names <= REP_TENSOR_NAMES + 1; names++) {
        char *tens = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&tens, &len);
        for (int row = 0; row < 2; row++) {
            fprintf(f, "{\"seq\":%d,\"norms\":{", row + 1);
            for (int i = 0; i < names; i++) fprintf(f, "%s\"t%d\":1", i ? "," : "", (i * 7 + row) % names);
            fprintf(f, "}}\n");
        }
        fclose(f);
        const char *fs[] = {"steps.jsonl", "{\"seq\":1,\"step\":1,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n",
                            "tensors.jsonl", tens, NULL};
        tmp_run(&t, fs);
        free(tens);
        if (names == REP_TENSOR_NAMES) {
            assert_int_equal(rep_load(&r, t.dir, NAN, err, sizeof err), 0);
            assert_int_equal(r.t.nnames, REP_TENSOR_NAMES);
            assert_int_equal(r.t.nent, 2 * REP_TENSOR_NAMES);
            rep_free(&r);
        } else {
            char want[160];
            snprintf(want, sizeof want, "%s/tensors.jsonl:1: norms: more than 256 distinct tensor names", t.dir);
            expect_error(t.dir, want);
        }
        tmp_run_rm(&t);
    }
}

/* Lines over 1 MiB and absurd epoch numbers. */
static void test_input_limits(void **state)
{
    (void)state;
    TmpRun t;
    size_t n = REP_LINE_MAX + 100;
    char *steps = malloc(n + 200);
    assert_non_null(steps);
    int k = snprintf(steps, 200, "{\"seq\":1,\"step\":1,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n{\"pad\":\"");
    memset(steps + k, 'x', n);
    strcpy(steps + k + n, "\"}\n");
    const char *files[] = {"steps.jsonl", steps, NULL};
    tmp_run(&t, files);
    free(steps);
    char want[160];
    snprintf(want, sizeof want, "%s/steps.jsonl:2: line longer than 1048576 bytes", t.dir);
    expect_error(t.dir, want);
    tmp_run_rm(&t);

    const char *files2[] = {"steps.jsonl", "{\"seq\":1,\"step\":1,\"epoch\":1,\"loss\":2,\"grad_norm\":1}\n",
                            "epochs.jsonl", "{\"epoch\":10000001,\"clip_rate\":0}\n", NULL};
    tmp_run(&t, files2);
    snprintf(want, sizeof want, "%s/epochs.jsonl:1: epoch: 10000001 out of range", t.dir);
    expect_error(t.dir, want);
    tmp_run_rm(&t);

}

/* config.yaml through the project's loader: the fixture's values; keys and
 * sections another clipd version wrote are skipped with one note naming the
 * first; a config.yaml of an older version lacking keys takes the defaults;
 * a bad value or bytes that are not UTF-8 are an error naming file, line and
 * column; clip mode value has no norm threshold. */

static void config_case(const char *yaml, Report *r, TmpRun *t)
{
    const char *files[] = {"steps.jsonl", STEP1, "config.yaml", yaml, NULL};
    tmp_run(t, files);
    char err[512] = "";
    int rc = rep_load(r, t->dir, NAN, err, sizeof err);
    if (rc) fprintf(stderr, "rep_load: %s\n", err);
    assert_int_equal(rc, 0);
}

static void test_config(void **state)
{
    (void)state;
    Report r;
    TmpRun t;
    char want[256];
    config_case("run:\n  name: newer\n  future_key: [1, {a: 2}]\nfuture:\n  x:\n    y: 1\n"
                "clip:\n  mode: per_tensor\n  max_norm: 2.5\n", &r, &t);
    assert_string_equal(r.name, "newer");
    assert_string_equal(r.clip_mode, "per_tensor");
    assert_true(r.max_norm == 2.5);
    assert_string_equal(r.max_norm_src, "config.yaml");
    assert_int_equal(r.nnotes, 3); /* no epochs.jsonl, no events.jsonl, then config.yaml */
    snprintf(want, sizeof want, "%s/config.yaml:3:3: run.future_key: 2 keys unknown to this clipd-report skipped", t.dir);
    if (!strstr(r.notes[2], want)) fprintf(stderr, "note \"%s\" lacks \"%s\"\n", r.notes[2], want);
    assert_non_null(strstr(r.notes[2], want));
    rep_free(&r);
    tmp_run_rm(&t);

    /* an older config.yaml: no clip section, so clip.max_norm's default */
    config_case("run:\n  name: older\ndata:\n  source: adding\n", &r, &t);
    assert_string_equal(r.name, "older");
    assert_string_equal(r.clip_mode, "global_norm");
    assert_true(r.squared_error);
    assert_true(r.max_norm == 1);
    assert_int_equal(r.nnotes, 2);
    rep_free(&r);
    tmp_run_rm(&t);

    config_case("clip:\n  mode: value\n  max_norm: 3\n", &r, &t);
    assert_string_equal(r.name, "default");
    assert_true(isnan(r.max_norm));
    assert_string_equal(r.max_norm_src, "");
    rep_free(&r);
    tmp_run_rm(&t);

    const char *bad[][2] = {
        {"clip:\n  max_norm: -1\n", "/config.yaml:2:13: clip.max_norm:"},
        {"clip:\n  max_norm: [1\n", "/config.yaml:"},
        {"run:\n  name: x\xff\n", "/config.yaml:2:"},
        {"run:\n  name: \"r&d\"\n", "/config.yaml:2:9: run.name:"},
        {"run:\n  name: a\n  name: b\n", "duplicate key"},
        {"x:\n  y: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
         "nested deeper than 64"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *files[] = {"steps.jsonl", STEP1, "config.yaml", bad[i][0], NULL};
        tmp_run(&t, files);
        snprintf(want, sizeof want, "%s", bad[i][1]);
        if (want[0] == '/') snprintf(want, sizeof want, "%s%s", t.dir, bad[i][1]);
        expect_error(t.dir, want);
        tmp_run_rm(&t);
    }
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
            if (rep_column(x[i], 0, N, COLS) == c && isfinite(y[i])) lo = fmin(lo, y[i]), hi = fmax(hi, y[i]);
        for (long k = 0; k < m; k++)
            if (rep_column(ox[k], 0, N, COLS) == c) got_lo = fmin(got_lo, oy[k]), got_hi = fmax(got_hi, oy[k]);
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
    assert_string_equal(rep_tick_label(b, sizeof b, 1e4, false), "10000");
    assert_string_equal(rep_tick_label(b, sizeof b, 1e6, false), "1e6");
    assert_string_equal(rep_tick_label(b, sizeof b, 1e-5, false), "1e-5");
    assert_string_equal(rep_tick_label(b, sizeof b, 0.25, true), "25%");
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
        cmocka_unit_test(test_optional_files),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_utf8_names),
        cmocka_unit_test(test_tensors_seq),
        cmocka_unit_test(test_svg_escaped),
        cmocka_unit_test(test_seq_range),
        cmocka_unit_test(test_hostile_sizes),
        cmocka_unit_test(test_input_limits),
        cmocka_unit_test(test_smooth),
        cmocka_unit_test(test_window_rate),
        cmocka_unit_test(test_decimate),
        cmocka_unit_test(test_ticks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
