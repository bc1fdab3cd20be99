/* Unit tests of the coordinator's HTTP endpoint (daemon/metrics.c), served
 * for real by libmicrohttpd on 127.0.0.1 (a free port) and fetched by a
 * plain HTTP/1.0 socket client: the Prometheus exposition format (HELP and
 * TYPE before each family's samples, sample syntax, _total counters,
 * cumulative histogram buckets ending in +Inf = _count), the values after
 * known step records, events and checkpoints, /status JSON, /healthz 200,
 * 503 when aborted or stalled, 404 for other paths, 405 for POST, bad and
 * "off" addresses, and updates from several threads under the mutex while
 * a client scrapes: every scrape consistent, the final counts exact. */
#include <arpa/inet.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/events.h"
#include "daemon/metrics.h"

typedef struct {
    Config c;
    Metrics *m;
    int port;
} Fx;

static int setup(void **state)
{
    Fx *f = calloc(1, sizeof *f);
    if (!f) return -1;
    cfg_defaults(&f->c);
    snprintf(f->c.metrics_listen, sizeof f->c.metrics_listen, "127.0.0.1:0");
    snprintf(f->c.run_name, sizeof f->c.run_name, "metrics-test");
    f->c.clip_max_norm = 2.0;
    f->c.metrics_stall_seconds = 3600;
    char err[256];
    f->m = metrics_start(&f->c, 2, NULL, 0, &f->port, err, sizeof err);
    if (!f->m) return printf("metrics_start: %s\n", err), free(f), -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fx *f = *state;
    metrics_stop(f->m);
    free(f);
    return 0;
}

/* ---- a plain HTTP client ---- */

typedef struct {
    int code;
    char type[128]; /* Content-Type */
    char *body;     /* NUL-terminated */
    long length;    /* Content-Length, -1 if none */
} Reply;

/* METHOD PATH over HTTP/1.0 to 127.0.0.1:port; fails the test if the
 * server does not answer with a whole response. */
static Reply fetch(int port, const char *method, const char *path)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) fail_msg("connect to port %d failed", port);
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", method, path);
    assert_int_equal(write(s, req, (size_t)n), n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    ssize_t r;
    while ((r = read(s, buf + len, cap - 1 - len)) > 0) {
        len += (size_t)r;
        if (len == cap - 1) buf = realloc(buf, cap *= 2), assert_non_null(buf);
    }
    close(s);
    buf[len] = 0;
    Reply rep = {0};
    if (sscanf(buf, "HTTP/1.%*d %d", &rep.code) != 1) fail_msg("no status line in: %.80s", buf);
    char *end = strstr(buf, "\r\n\r\n");
    if (!end) fail_msg("no end of headers in: %.200s", buf);
    *end = 0;
    const char *ct = strstr(buf, "\r\nContent-Type: ");
    if (ct) sscanf(ct + 16, "%127[^\r\n]", rep.type);
    const char *cl = strstr(buf, "\r\nContent-Length: ");
    rep.body = strdup(end + 4);
    assert_non_null(rep.body);
    rep.length = cl ? (long)strtoul(cl + 18, NULL, 10) : -1;
    if (strcmp(method, "HEAD") && rep.length != (long)strlen(rep.body)) /* whole */
        fail_msg("%s %s: Content-Length %ld, body %zu bytes", method, path, rep.length, strlen(rep.body));
    free(buf);
    return rep;
}

/* The value of the sample line starting "NAME " (NAME with its labels). */
static double sample(const char *body, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, name, n) && p[n] == ' ') return strtod(p + n + 1, NULL);
    fail_msg("no sample '%s' in /metrics", name);
    return NAN;
}

static int name_char(int ch, int first)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == ':' ||
           (!first && ch >= '0' && ch <= '9');
}

/* The text exposition format 0.0.4 as clipd writes it (Prometheus also
 * takes TYPE before HELP): each family's HELP then TYPE, once, before its
 * samples, and no family twice; a sample
 * is NAME[{k="v",...}] VALUE with a float VALUE (or NaN, +Inf, -Inf); a
 * counter's name ends in _total; a histogram has cumulative _bucket lines
 * ending in le="+Inf", whose value is _count's, and a _sum. Returns the
 * number of families. */
static int check_exposition(const char *body)
{
    char fam[128] = "", type[16] = "", seen[4096] = " ";
    double last_bucket = -1, inf_bucket = -1;
    int families = 0, line = 0;
    for (const char *p = body; *p; line++) {
        const char *e = strchr(p, '\n');
        if (!e) fail_msg("line %d: no newline at the end", line + 1);
        char l[512];
        snprintf(l, sizeof l, "%.*s", (int)(e - p), p);
        p = e + 1;
        char name[128], what[16];
        if (!strncmp(l, "# HELP ", 7)) {
            if (sscanf(l + 7, "%127s", name) != 1 || strlen(l) <= 8 + strlen(name)) fail_msg("line %d: '%s': HELP without text", line + 1, l);
            char key[132];
            snprintf(key, sizeof key, " %s ", name);
            if (strstr(seen, key)) fail_msg("line %d: family %s twice", line + 1, name);
            if (strlen(seen) + strlen(key) >= sizeof seen) fail_msg("too many families");
            strcat(seen, name), strcat(seen, " ");
            snprintf(fam, sizeof fam, "%s", name), type[0] = 0, families++;
            last_bucket = inf_bucket = -1;
            continue;
        }
        if (!strncmp(l, "# TYPE ", 7)) {
            if (sscanf(l + 7, "%127s %15s", name, what) != 2 || strcmp(name, fam) || type[0])
                fail_msg("line %d: '%s': TYPE not right after the HELP of %s", line + 1, l, fam);
            if (strcmp(what, "counter") && strcmp(what, "gauge") && strcmp(what, "histogram"))
                fail_msg("line %d: type %s", line + 1, what);
            if (!strcmp(what, "counter") && strlen(fam) < 6) fail_msg("counter %s", fam);
            if (!strcmp(what, "counter") && strcmp(fam + strlen(fam) - 6, "_total"))
                fail_msg("line %d: counter %s does not end in _total", line + 1, fam);
            snprintf(type, sizeof type, "%s", what);
            continue;
        }
        if (l[0] == '#') fail_msg("line %d: '%s': a comment that is neither HELP nor TYPE", line + 1, l);
        if (!type[0]) fail_msg("line %d: '%s': a sample before its family's HELP and TYPE", line + 1, l);
        /* NAME */
        size_t i = 0;
        while (name_char((unsigned char)l[i], i == 0)) i++;
        if (i == 0) fail_msg("line %d: '%s': no metric name", line + 1, l);
        snprintf(name, sizeof name, "%.*s", (int)i, l);
        int hist = !strcmp(type, "histogram");
        size_t fl = strlen(fam);
        if (hist ? strncmp(name, fam, fl) ||
                       (strcmp(name + fl, "_bucket") && strcmp(name + fl, "_sum") && strcmp(name + fl, "_count"))
                 : strcmp(name, fam))
            fail_msg("line %d: sample %s in family %s", line + 1, name, fam);
        /* {k="v",...} */
        char le[32] = "";
        if (l[i] == '{') {
            for (i++;;) {
                size_t k0 = i;
                while (name_char((unsigned char)l[i], i == k0)) i++;
                if (i == k0 || l[i] != '=' || l[i + 1] != '"') fail_msg("line %d: '%s': bad label", line + 1, l);
                int is_le = i - k0 == 2 && !strncmp(l + k0, "le", 2);
                size_t v0 = i += 2;
                while (l[i] && l[i] != '"') i += l[i] == '\\' ? 2 : 1;
                if (!l[i]) fail_msg("line %d: '%s': unterminated label value", line + 1, l);
                if (is_le) snprintf(le, sizeof le, "%.*s", (int)(i - v0), l + v0);
                i++;
                if (l[i] == ',') { i++; continue; }
                if (l[i] == '}') { i++; break; }
                fail_msg("line %d: '%s': bad label list", line + 1, l);
            }
        }
        if (l[i] != ' ') fail_msg("line %d: '%s': no space before the value", line + 1, l);
        const char *v = l + i + 1;
        char *vend;
        double x = strtod(v, &vend);
        if (vend == v || *vend) fail_msg("line %d: '%s': value is not a float", line + 1, l);
        if (hist && !strcmp(name + fl, "_bucket")) {
            if (!le[0]) fail_msg("line %d: bucket without le", line + 1);
            if (x < last_bucket) fail_msg("line %d: bucket counts not cumulative", line + 1);
            last_bucket = x;
            if (!strcmp(le, "+Inf")) inf_bucket = x;
        }
        if (hist && !strcmp(name + fl, "_count") && x != inf_bucket)
            fail_msg("line %d: %s_count %g, le=\"+Inf\" bucket %g", line + 1, fam, x, inf_bucket);
    }
    return families;
}

static StepRecord record(int64_t step, double norm, int clipped, int wrank, double ms)
{
    StepRecord r;
    memset(&r, 0, sizeof r);
    r.step = step, r.seq = step, r.epoch = 1, r.wrank = wrank;
    r.loss = 2.5, r.grad_norm = norm, r.clip_coef = clipped ? 2.0 / norm : 1.0, r.lr = 0.003;
    r.clipped = clipped, r.tokens = 100, r.step_ms = ms, r.compute_ms = ms / 2, r.sync_ms = ms / 4;
    r.action = ACT_LOG;
    return r;
}

/* ---- tests ---- */

static void test_fresh(void **state)
{
    Fx *f = *state;
    assert_true(f->port > 0 && f->port < 65536);
    Reply r = fetch(f->port, "GET", "/metrics");
    assert_int_equal(r.code, 200);
    assert_string_equal(r.type, "text/plain; version=0.0.4; charset=utf-8");
    int fams = check_exposition(r.body);
    printf("fresh /metrics: %zu bytes, %d families\n", strlen(r.body), fams);
    assert_true(fams >= 20);
    assert_true(sample(r.body, "clipd_steps_total") == 0);
    assert_true(isnan(sample(r.body, "clipd_loss")));
    assert_true(sample(r.body, "clipd_workers") == 2);
    assert_true(sample(r.body, "clipd_clip_threshold") == 2.0);
    assert_true(sample(r.body, "clipd_grad_norm_preclip_count") == 0);
    assert_non_null(strstr(r.body, "\nclipd_info{run=\"metrics-test\",config_hash=\""));
    free(r.body);
}

/* Two steps of 2 workers, an event, a checkpoint, a stall and a straggler:
 * every counter and gauge says so. */
static void test_values(void **state)
{
    Fx *f = *state;
    StepRecord recs[2] = {record(1, 1.0, 0, 0, 10), record(1, 1.0, 0, 1, 30)};
    metrics_step(f->m, recs, 2, 0.0);
    recs[0] = record(2, 3.0, 1, 0, 20), recs[1] = record(2, 3.0, 1, 1, 40);
    recs[0].action = ACT_ROLLBACK;
    metrics_step(f->m, recs, 2, 0.5);
    metrics_event(f->m, EV_GRAD_NORM_SPIKE, 2, "rollback");
    metrics_event(f->m, EV_COUNT, 2, "log"); /* not a kind: ignored */
    metrics_checkpoint(f->m, 2);
    metrics_watchdog(f->m, 0), metrics_watchdog(f->m, 1), metrics_watchdog(f->m, 1);
    metrics_checkpoint_failed(f->m);
    metrics_write_error(f->m);
    metrics_epoch(f->m, 1, 2.25, 0);
    Reply r = fetch(f->port, "GET", "/metrics");
    assert_int_equal(r.code, 200);
    check_exposition(r.body);
    struct { const char *name; double want; } want[] = {
        {"clipd_steps_total", 2}, {"clipd_clipped_steps_total", 1}, {"clipd_skipped_steps_total", 0},
        {"clipd_rollbacks_total", 1}, {"clipd_checkpoints_total", 1}, {"clipd_tokens_total", 200},
        {"clipd_checkpoint_failures_total", 1}, {"clipd_log_write_errors_total", 1},
        {"clipd_divergence_events_total{kind=\"grad_norm_spike\"}", 1},
        {"clipd_divergence_events_total{kind=\"loss_spike\"}", 0},
        {"clipd_watchdog_events_total{kind=\"stall\"}", 1},
        {"clipd_watchdog_events_total{kind=\"straggler\"}", 2},
        {"clipd_loss", 2.5}, {"clipd_grad_norm", 3.0}, {"clipd_clip_coefficient", 2.0 / 3.0},
        {"clipd_learning_rate", 0.003}, {"clipd_step", 2}, {"clipd_epoch", 1}, {"clipd_clip_rate", 0.5},
        {"clipd_validation_loss", 2.25}, {"clipd_tokens_per_second", 5000},
        {"clipd_worker_step_seconds{worker=\"1\"}", 0.04}, {"clipd_worker_compute_seconds{worker=\"0\"}", 0.01},
        {"clipd_worker_sync_seconds{worker=\"1\"}", 0.01}, {"clipd_worker_step_seconds_max", 0.04},
        /* norms 1 and 3 around max_norm 2: buckets at 0.25 ... 512 */
        {"clipd_grad_norm_preclip_bucket{le=\"0.5\"}", 0}, {"clipd_grad_norm_preclip_bucket{le=\"1\"}", 1},
        {"clipd_grad_norm_preclip_bucket{le=\"2.2\"}", 1}, {"clipd_grad_norm_preclip_bucket{le=\"3\"}", 2},
        {"clipd_grad_norm_preclip_bucket{le=\"+Inf\"}", 2}, {"clipd_grad_norm_preclip_sum", 4},
        {"clipd_grad_norm_preclip_count", 2},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        double got = sample(r.body, want[i].name);
        if (fabs(got - want[i].want) > 1e-12 * fabs(want[i].want))
            fail_msg("%s = %.17g, wanted %.17g", want[i].name, got, want[i].want);
    }
    free(r.body);
    /* /status: the same, as JSON */
    r = fetch(f->port, "GET", "/status");
    assert_int_equal(r.code, 200);
    assert_string_equal(r.type, "application/json");
    json_error_t je;
    json_t *j = json_loads(r.body, 0, &je);
    if (!j) fail_msg("/status is not JSON: %s: %s", je.text, r.body);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "training");
    assert_int_equal(json_integer_value(json_object_get(j, "step")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "world_size")), 2);
    assert_string_equal(json_string_value(json_object_get(j, "run")), "metrics-test");
    json_t *ev = json_object_get(j, "last_event");
    assert_string_equal(json_string_value(json_object_get(ev, "kind")), "grad_norm_spike");
    assert_string_equal(json_string_value(json_object_get(ev, "action")), "rollback");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "last_checkpoint"), "step")), 2);
    json_decref(j);
    free(r.body);
}

static void test_health(void **state)
{
    Fx *f = *state;
    metrics_state(f->m, "training");
    Reply r = fetch(f->port, "GET", "/healthz");
    assert_int_equal(r.code, 200);
    assert_string_equal(r.body, "ok: training, step 0\n");
    free(r.body);
    metrics_state(f->m, "aborted");
    r = fetch(f->port, "GET", "/healthz");
    assert_int_equal(r.code, 503);
    assert_string_equal(r.body, "aborted at step 0\n");
    free(r.body);
    r = fetch(f->port, "GET", "/status");
    assert_non_null(strstr(r.body, "\"state\":\"aborted\""));
    free(r.body);
}

/* metrics.stall_seconds < 0: any idle time is a stall, no clock waited for. */
static void test_stalled(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    snprintf(c.metrics_listen, sizeof c.metrics_listen, "127.0.0.1:0");
    c.metrics_stall_seconds = -1;
    char err[256];
    int port;
    Metrics *m = metrics_start(&c, 1, NULL, 0, &port, err, sizeof err);
    assert_non_null(m);
    metrics_state(m, "training");
    Reply r = fetch(port, "GET", "/healthz");
    assert_int_equal(r.code, 503);
    assert_non_null(strstr(r.body, "stalled: no step for"));
    free(r.body);
    r = fetch(port, "GET", "/status");
    assert_non_null(strstr(r.body, "\"state\":\"stalled\""));
    free(r.body);
    metrics_stop(m);
}

static void test_other_paths(void **state)
{
    Fx *f = *state;
    const char *paths[] = {"/", "/metricsx", "/metrics/", "/nope", "/../etc/passwd"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        Reply r = fetch(f->port, "GET", paths[i]);
        if (r.code != 404) fail_msg("GET %s: %d, wanted 404", paths[i], r.code);
        assert_string_equal(r.body, "not found: /metrics, /status, /healthz\n");
        free(r.body);
    }
    Reply r = fetch(f->port, "POST", "/metrics");
    assert_int_equal(r.code, 405);
    assert_string_equal(r.body, "only GET\n");
    free(r.body);
    r = fetch(f->port, "GET", "/metrics");
    long len = r.length;
    free(r.body);
    r = fetch(f->port, "HEAD", "/metrics");
    assert_int_equal(r.code, 200);
    assert_string_equal(r.body, ""); /* headers only, with GET's length */
    assert_int_equal(r.length, len);
    free(r.body);
}

static void test_addresses(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    char err[256] = "x";
    int port = -1;
    snprintf(c.metrics_listen, sizeof c.metrics_listen, "off");
    assert_null(metrics_start(&c, 1, NULL, 0, &port, err, sizeof err));
    assert_string_equal(err, "");
    metrics_step(NULL, NULL, 0, 0); /* off: every update is a no-op */
    metrics_state(NULL, "training");
    const char *bad[] = {"localhost", "127.0.0.1", "127.0.0.1:99999", "1.2.3:80", "127.0.0.1:x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(c.metrics_listen, sizeof c.metrics_listen, "%s", bad[i]);
        assert_null(metrics_start(&c, 1, NULL, 0, &port, err, sizeof err));
        printf("%s: %s\n", bad[i], err);
        assert_non_null(strstr(err, "metrics.listen"));
        assert_non_null(strstr(err, bad[i]));
    }
    /* a port in use: another endpoint's */
    snprintf(c.metrics_listen, sizeof c.metrics_listen, "127.0.0.1:0");
    Metrics *m = metrics_start(&c, 1, NULL, 0, &port, err, sizeof err);
    assert_non_null(m);
    snprintf(c.metrics_listen, sizeof c.metrics_listen, "127.0.0.1:%d", port);
    assert_null(metrics_start(&c, 1, NULL, 0, &port, err, sizeof err));
    printf("in use: %s\n", err);
    assert_non_null(strstr(err, "cannot serve on 127.0.0.1:"));
    metrics_stop(m);
}

/* Several threads update while a client scrapes: each scrape is one
 * consistent snapshot (every step counted once in steps, tokens and the
 * histogram), and at the end nothing was lost. The threads update until the
 * client has scraped SCRAPES times, so the two interleave on any machine. */
#define UPDATERS 4
#define SCRAPES 50

typedef struct {
    Fx *f;
    atomic_int *stop;
    long steps; /* done by this thread */
} Updater;

static void *updater(void *arg)
{
    Updater *u = arg;
    for (long i = 0; !atomic_load(u->stop) || i < 10; i++) {
        StepRecord recs[2] = {record(i + 1, 0.5 + (double)(i % 7), 0, 0, 1), record(i + 1, 0.5, 0, 1, 1)};
        recs[0].clipped = recs[1].clipped = i % 2;
        metrics_step(u->f->m, recs, 2, 0.1);
        metrics_event(u->f->m, EV_LOSS_SPIKE, i, "log");
        u->steps = i + 1;
    }
    return NULL;
}

static void test_concurrent_updates(void **state)
{
    Fx *f = *state;
    pthread_t t[UPDATERS];
    atomic_int stop = 0;
    Updater u[UPDATERS];
    for (int i = 0; i < UPDATERS; i++) {
        u[i] = (Updater){f, &stop, 0};
        assert_int_equal(pthread_create(&t[i], NULL, updater, &u[i]), 0);
    }
    double last = -1;
    for (int k = 0; k < SCRAPES; k++) {
        Reply r = fetch(f->port, "GET", "/metrics");
        assert_int_equal(r.code, 200);
        check_exposition(r.body);
        double steps = sample(r.body, "clipd_steps_total");
        if (steps < last) fail_msg("steps went back from %g to %g", last, steps);
        last = steps;
        double tokens = sample(r.body, "clipd_tokens_total"), count = sample(r.body, "clipd_grad_norm_preclip_count");
        double events = sample(r.body, "clipd_divergence_events_total{kind=\"loss_spike\"}");
        if (tokens != 100 * steps || count != steps || events > steps || events < steps - UPDATERS)
            fail_msg("torn scrape: %g steps, %g tokens, %g in the histogram, %g events", steps, tokens, count, events);
        free(r.body);
    }
    atomic_store(&stop, 1);
    long total = 0, clipped = 0;
    for (int i = 0; i < UPDATERS; i++) {
        pthread_join(t[i], NULL);
        total += u[i].steps, clipped += u[i].steps / 2;
    }
    Reply r = fetch(f->port, "GET", "/metrics");
    printf("%d scrapes during %ld updates from %d threads (%g before the last scrape)\n", SCRAPES, total,
           UPDATERS, last);
    assert_true(last > 0); /* the threads ran until after the last scrape */
    assert_true(sample(r.body, "clipd_steps_total") == (double)total);
    assert_true(sample(r.body, "clipd_clipped_steps_total") == (double)clipped);
    assert_true(sample(r.body, "clipd_divergence_events_total{kind=\"loss_spike\"}") == (double)total);
    assert_true(sample(r.body, "clipd_grad_norm_preclip_bucket{le=\"+Inf\"}") == (double)total);
    free(r.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health, setup, teardown),
        cmocka_unit_test(test_stalled),
        cmocka_unit_test_setup_teardown(test_other_paths, setup, teardown),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test_setup_teardown(test_concurrent_updates, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
