/* metrics: Prometheus, status and health over HTTP (see metrics.h). */
#include "daemon/metrics.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "common/events.h"
#include "common/log.h"

#define NBUCKETS 12
#define WORKER_GAUGES 256 /* workers shown one by one; the max covers them all */
static const double bucket_factor[NBUCKETS] = {0.125, 0.25, 0.5, 0.75, 0.9, 1.0,
                                               1.1, 1.5, 2.0, 4.0, 16.0, 256.0};

typedef struct {
    int64_t steps, clipped, skipped, rollbacks, checkpoints, tokens, events[EV_COUNT];
    int64_t checkpoint_failures, write_errors;
    int64_t watchdog[2];    /* stall, straggler events */
    int64_t step, seq, last_ckpt_step, last_event_step;
    int epoch, last_event_kind;
    char last_event_action[16], state[16];
    double loss, grad_norm, clip_coef, lr, clip_rate, tokens_per_s, val_loss;
    double last_step_time;  /* CLOCK_MONOTONIC seconds of the last step record */
    uint64_t hist[NBUCKETS + 1]; /* pre-clip norm histogram, last = +Inf */
    double hist_sum;
    int64_t hist_count;
    double worker_ms[3][WORKER_GAUGES]; /* step, compute, sync per worker (the first ones) */
    double worker_max_ms;   /* slowest worker's step time, over all workers */
} Snap;

struct Metrics {
    struct MHD_Daemon *d;
    int open;               /* connections open now (the server thread's count) */
    double bound[NBUCKETS]; /* histogram upper bounds, exactly as printed */
    pthread_mutex_t mu;
    Snap s;
    int W;
    double max_norm, stall, t0_mono, t0_wall;
    char run[64], hash[24];
};

static double mono_s(void) { return log_clock_ms() / 1e3; }

/* Growable text buffer for one response. */
typedef struct { char *p; size_t n, cap; } Buf;

static void put(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(Buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (w < 0) return;
        if ((size_t)w < b->cap - b->n) {
            b->n += (size_t)w;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)w;
        char *p = realloc(b->p, cap);
        if (!p) return;
        b->p = p, b->cap = cap;
    }
}

static const char *num(char *buf, double x)
{
    if (isnan(x)) return "NaN";
    if (isinf(x)) return x > 0 ? "+Inf" : "-Inf";
    snprintf(buf, 32, "%.17g", x);
    return buf;
}

static void metric(Buf *b, const char *name, const char *type, const char *help, double v)
{
    char t[32];
    put(b, "# HELP %s %s\n# TYPE %s %s\n%s %s\n", name, help, name, type, name, num(t, v));
}

static void prom_counters(Buf *b, const Metrics *m, const Snap *s)
{
    metric(b, "clipd_steps_total", "counter", "Training steps executed (rolled back ones included).", (double)s->steps);
    metric(b, "clipd_clipped_steps_total", "counter", "Steps whose gradient clipping changed.", (double)s->clipped);
    metric(b, "clipd_skipped_steps_total", "counter", "Steps whose update was not applied.", (double)s->skipped);
    metric(b, "clipd_rollbacks_total", "counter", "Rollbacks to a checkpoint.", (double)s->rollbacks);
    metric(b, "clipd_checkpoints_total", "counter", "Checkpoints written.", (double)s->checkpoints);
    metric(b, "clipd_checkpoint_failures_total", "counter",
           "Checkpoints (or final weights) that could not be written.", (double)s->checkpoint_failures);
    metric(b, "clipd_log_write_errors_total", "counter", "Log lines that could not be written.",
           (double)s->write_errors);
    metric(b, "clipd_tokens_total", "counter", "Tokens processed by all workers.", (double)s->tokens);
    put(b, "# HELP clipd_divergence_events_total Divergence events by kind.\n"
           "# TYPE clipd_divergence_events_total counter\n");
    for (int k = 0; k < EV_COUNT; k++)
        put(b, "clipd_divergence_events_total{kind=\"%s\"} %lld\n", event_kind_name(k),
            (long long)s->events[k]);
    put(b, "# HELP clipd_watchdog_events_total Steps that stalled and workers that straggled.\n"
           "# TYPE clipd_watchdog_events_total counter\n"
           "clipd_watchdog_events_total{kind=\"stall\"} %lld\n"
           "clipd_watchdog_events_total{kind=\"straggler\"} %lld\n",
        (long long)s->watchdog[0], (long long)s->watchdog[1]);
    (void)m;
}

static void prom_gauges(Buf *b, const Metrics *m, const Snap *s)
{
    metric(b, "clipd_loss", "gauge", "Mean training loss of the last step (nats per token).", s->loss);
    metric(b, "clipd_grad_norm", "gauge", "Global L2 norm of the last step's gradient, before clipping.", s->grad_norm);
    metric(b, "clipd_clip_coefficient", "gauge", "Clip coefficient applied at the last step.", s->clip_coef);
    metric(b, "clipd_clip_threshold", "gauge", "clip.max_norm.", m->max_norm);
    metric(b, "clipd_learning_rate", "gauge", "Learning rate of the last step.", s->lr);
    metric(b, "clipd_epoch", "gauge", "Current epoch (1-based).", s->epoch);
    metric(b, "clipd_step", "gauge", "Current step.", (double)s->step);
    metric(b, "clipd_tokens_per_second", "gauge", "Throughput of the last step.", s->tokens_per_s);
    metric(b, "clipd_clip_rate", "gauge", "Fraction of clipped steps over the detector window.", s->clip_rate);
    metric(b, "clipd_validation_loss", "gauge", "Validation loss at the last epoch's end.", s->val_loss);
    metric(b, "clipd_workers", "gauge", "Worker processes.", m->W);
    metric(b, "clipd_start_time_seconds", "gauge", "Unix time the coordinator started.", m->t0_wall);
    put(b, "# HELP clipd_info Run identity.\n# TYPE clipd_info gauge\n"
           "clipd_info{run=\"%s\",config_hash=\"%s\"} 1\n", m->run, m->hash);
    const char *what[3] = {"step", "compute", "sync"};
    for (int k = 0; k < 3; k++) {
        put(b, "# HELP clipd_worker_%s_seconds Each worker's %s time in the last step.\n"
               "# TYPE clipd_worker_%s_seconds gauge\n", what[k], what[k], what[k]);
        for (int w = 0; w < m->W && w < WORKER_GAUGES; w++)
            put(b, "clipd_worker_%s_seconds{worker=\"%d\"} %.6f\n", what[k], w, s->worker_ms[k][w] / 1e3);
    }
    metric(b, "clipd_worker_step_seconds_max", "gauge", "The slowest worker's time in the last step.",
           s->worker_max_ms / 1e3);
}

static void prom_histogram(Buf *b, const Metrics *m, const Snap *s)
{
    char t[32];
    put(b, "# HELP clipd_grad_norm_preclip Global gradient norm before clipping, buckets around clip.max_norm.\n"
           "# TYPE clipd_grad_norm_preclip histogram\n");
    uint64_t acc = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        acc += s->hist[i];
        snprintf(t, sizeof t, "%.6g", m->bound[i]);
        put(b, "clipd_grad_norm_preclip_bucket{le=\"%s\"} %llu\n", t,
            (unsigned long long)acc);
    }
    acc += s->hist[NBUCKETS];
    put(b, "clipd_grad_norm_preclip_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)acc);
    put(b, "clipd_grad_norm_preclip_sum %s\nclipd_grad_norm_preclip_count %lld\n", num(t, s->hist_sum),
        (long long)s->hist_count);
}

static void status_json(Buf *b, const Metrics *m, const Snap *s)
{
    char t1[32], t2[32];
    /* as /healthz: no step for metrics.stall_seconds is "stalled", whatever the job thinks it does */
    double idle = mono_s() - s->last_step_time;
    const char *state = idle > m->stall && strcmp(s->state, "aborted") ? "stalled" : s->state;
    put(b, "{\"run\":\"%s\",\"config_hash\":\"%s\",\"state\":\"%s\",\"idle_s\":%.3f,\"step\":%lld,\"seq\":%lld,"
           "\"epoch\":%d,\"world_size\":%d,\"uptime_s\":%.3f,\"loss\":%s,\"grad_norm\":%s,",
        m->run, m->hash, state, idle, (long long)s->step, (long long)s->seq, s->epoch, m->W,
        mono_s() - m->t0_mono, isfinite(s->loss) ? num(t1, s->loss) : "null",
        isfinite(s->grad_norm) ? num(t2, s->grad_norm) : "null");
    if (s->last_event_kind >= 0)
        put(b, "\"last_event\":{\"kind\":\"%s\",\"step\":%lld,\"action\":\"%s\"},",
            event_kind_name(s->last_event_kind), (long long)s->last_event_step, s->last_event_action);
    else
        put(b, "\"last_event\":null,");
    if (s->checkpoints) put(b, "\"last_checkpoint\":{\"step\":%lld}}\n", (long long)s->last_ckpt_step);
    else put(b, "\"last_checkpoint\":null}\n");
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *type, Buf *b)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(b->n, b->p, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(b->p);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    (void)version, (void)upload, (void)con_cls;
    Metrics *m = cls;
    Buf b = {malloc(4096), 0, 4096};
    if (!b.p) return MHD_NO;
    if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        put(&b, "only GET\n");
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", &b);
    }
    if (*upload_size) *upload_size = 0; /* a GET with a body: ignore it */
    Snap s;
    pthread_mutex_lock(&m->mu);
    s = m->s;
    pthread_mutex_unlock(&m->mu);
    if (!strcmp(url, "/metrics")) {
        prom_counters(&b, m, &s);
        prom_gauges(&b, m, &s);
        prom_histogram(&b, m, &s);
        return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", &b);
    }
    if (!strcmp(url, "/status")) {
        status_json(&b, m, &s);
        return reply(c, MHD_HTTP_OK, "application/json", &b);
    }
    if (!strcmp(url, "/healthz")) {
        double idle = mono_s() - s.last_step_time;
        /* Healthy while steps (or epoch ends) keep coming, in every state
         * but aborted: a job stuck before its first step, or in shutdown,
         * is stalled too. */
        int ok = idle <= m->stall && strcmp(s.state, "aborted");
        if (ok) put(&b, "ok: %s, step %lld\n", s.state, (long long)s.step);
        else if (!strcmp(s.state, "aborted")) put(&b, "aborted at step %lld\n", (long long)s.step);
        else put(&b, "stalled: no step for %.0f s (%s)\n", idle, s.state);
        return reply(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", &b);
    }
    put(&b, "not found: /metrics, /status, /healthz\n");
    return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", &b);
}

static int parse_listen(const char *s, struct sockaddr_in *a, char *err, size_t errlen)
{
    uint32_t ip;
    int port;
    if (cfg_parse_listen(s, NULL, &ip, &port) != 0) {
        snprintf(err, errlen, "metrics.listen: expected HOST:PORT (IPv4) or off, got '%s'", s);
        return -1;
    }
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    a->sin_addr.s_addr = ip;
    return 0;
}

/* Connections come and go in the server's thread. Their memory (at most
 * the 16 kB limit each) goes back to the allocator on close; once none is
 * open, the allocator's free pages go back to the system (malloc_trim), so
 * a burst of slow clients does not leave the coordinator megabytes larger. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    Metrics *m = cls;
    (void)c, (void)socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) m->open++;
    else if (--m->open == 0) malloc_trim(0);
}

Metrics *metrics_start(const Config *c, int W, char names[][32], int ntensors, int *port,
                       char *err, size_t errlen)
{
    (void)names, (void)ntensors;
    err[0] = 0;
    if (!strcmp(c->metrics_listen, "off")) return NULL;
    struct sockaddr_in addr;
    if (parse_listen(c->metrics_listen, &addr, err, errlen)) return NULL;
    Metrics *m = calloc(1, sizeof *m);
    if (!m) return snprintf(err, errlen, "metrics: out of memory"), NULL;
    pthread_mutex_init(&m->mu, NULL);
    m->W = W, m->max_norm = c->clip_max_norm, m->stall = c->metrics_stall_seconds;
    m->t0_mono = mono_s(), m->t0_wall = (double)time(NULL);
    m->s.last_step_time = m->t0_mono, m->s.last_event_kind = -1;
    m->s.loss = m->s.grad_norm = m->s.clip_coef = m->s.lr = m->s.val_loss = NAN;
    snprintf(m->s.state, sizeof m->s.state, "starting");
    snprintf(m->run, sizeof m->run, "%s", c->run_name);
    snprintf(m->hash, sizeof m->hash, "%016llx", (unsigned long long)cfg_hash(c));
    for (int i = 0; i < NBUCKETS; i++) { /* bucket by the bounds as printed */
        char t[32];
        snprintf(t, sizeof t, "%.6g", bucket_factor[i] * m->max_norm);
        m->bound[i] = strtod(t, NULL);
    }
    /* One thread, epoll: thousands of idle or slow connections cost a file
     * descriptor and 16 kB each, and an idle one is dropped after 5 s. No
     * per-IP limit: on loopback every client shares one address. Without
     * SO_REUSEPORT, a port another job holds is an error, not a shared one. */
    m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL,
                            &handle, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)4096,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)5,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
                            MHD_OPTION_NOTIFY_CONNECTION, &on_connection, m, MHD_OPTION_END);
    if (!m->d) {
        snprintf(err, errlen, "metrics.listen: cannot serve on %s (in use or not this host's)", c->metrics_listen);
        pthread_mutex_destroy(&m->mu);
        free(m);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
    *port = info ? info->port : ntohs(addr.sin_port);
    return m;
}

void metrics_stop(Metrics *m)
{
    if (!m) return;
    MHD_stop_daemon(m->d);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void metrics_step(Metrics *m, const StepRecord *recs, int W, double clip_rate_window)
{
    if (!m) return;
    const StepRecord *r = &recs[0];
    pthread_mutex_lock(&m->mu);
    Snap *s = &m->s;
    s->steps++, s->clipped += r->clipped != 0, s->skipped += r->skipped != 0;
    s->tokens += r->tokens;
    s->step = r->step, s->seq = r->seq, s->epoch = r->epoch;
    s->loss = r->loss, s->grad_norm = r->grad_norm, s->clip_coef = r->clip_coef, s->lr = r->lr;
    s->clip_rate = clip_rate_window;
    s->tokens_per_s = r->step_ms > 0 ? (double)r->tokens / (r->step_ms / 1e3) : 0;
    s->rollbacks += r->action == ACT_ROLLBACK;
    s->last_step_time = mono_s();
    snprintf(s->state, sizeof s->state, "training");
    if (isfinite(r->grad_norm)) {
        int i = 0;
        while (i < NBUCKETS && r->grad_norm > m->bound[i]) i++;
        s->hist[i]++, s->hist_sum += r->grad_norm, s->hist_count++;
    }
    s->worker_max_ms = 0;
    for (int w = 0; w < W; w++) {
        if (recs[w].step_ms > s->worker_max_ms) s->worker_max_ms = recs[w].step_ms;
        if (w >= WORKER_GAUGES) continue;
        s->worker_ms[0][w] = recs[w].step_ms;
        s->worker_ms[1][w] = recs[w].compute_ms;
        s->worker_ms[2][w] = recs[w].sync_ms;
    }
    pthread_mutex_unlock(&m->mu);
}

void metrics_epoch(Metrics *m, int epoch, double val_loss, double tokens_per_s)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->s.epoch = epoch, m->s.val_loss = val_loss;
    m->s.last_step_time = mono_s(); /* validation took its time: that is progress */
    (void)tokens_per_s;
    pthread_mutex_unlock(&m->mu);
}

void metrics_watchdog(Metrics *m, int straggler)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->s.watchdog[straggler != 0]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_event(Metrics *m, int kind, int64_t step, const char *action)
{
    if (!m || kind < 0 || kind >= EV_COUNT) return;
    pthread_mutex_lock(&m->mu);
    m->s.events[kind]++;
    m->s.last_event_kind = kind, m->s.last_event_step = step;
    snprintf(m->s.last_event_action, sizeof m->s.last_event_action, "%s", action);
    pthread_mutex_unlock(&m->mu);
}

void metrics_checkpoint(Metrics *m, int64_t step)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->s.checkpoints++, m->s.last_ckpt_step = step;
    pthread_mutex_unlock(&m->mu);
}

void metrics_checkpoint_failed(Metrics *m)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->s.checkpoint_failures++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_write_error(Metrics *m)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->s.write_errors++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_state(Metrics *m, const char *state)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    snprintf(m->s.state, sizeof m->s.state, "%s", state);
    m->s.last_step_time = mono_s();
    pthread_mutex_unlock(&m->mu);
}
