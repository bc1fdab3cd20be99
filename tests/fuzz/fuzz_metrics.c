/* fuzz_metrics: the metrics endpoint (daemon/metrics.c) as a client on the
 * network sees it: the real libmicrohttpd server with clipd's handler,
 * started once on 127.0.0.1:0 with a snapshot holding every kind of value
 * (NaN and infinite gauges, events, a checkpoint, histogram counts). Each
 * input is written raw to a fresh TCP connection, the write side is shut,
 * and the reply is read to the end. Oracles, beyond ASan and UBSan in
 * clipd's handler (libmicrohttpd itself is not instrumented, so its parsing
 * gives no coverage feedback; tests/fuzz/fuzz_metrics.dict seeds HTTP words):
 * the server closes every connection within 3 s, a reply starts with
 * "HTTP/1.", and every 256 inputs a well-formed scrape still gets a full
 * 200 exposition. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/metrics.h"

static Metrics *server;
static int port;

/* A snapshot with something in every field, non-finite numbers included. */
static void fill_snapshot(Metrics *m, int W)
{
    StepRecord r[3];
    memset(r, 0, sizeof r);
    for (int s = 1; s <= 5; s++) {
        for (int w = 0; w < W; w++) {
            r[w].step = s, r[w].seq = s, r[w].epoch = 1, r[w].wrank = w, r[w].tokens = 96;
            r[w].loss = s == 3 ? NAN : 2.0 / s, r[w].grad_norm = s == 3 ? INFINITY : 0.1 * s;
            r[w].clip_coef = s == 3 ? NAN : 1.0, r[w].lr = 1e-3, r[w].clipped = s > 2;
            r[w].skipped = s == 3, r[w].step_ms = 1.5 + w, r[w].compute_ms = 1, r[w].sync_ms = 0.5;
            r[w].action = s == 4 ? ACT_ROLLBACK : ACT_LOG;
        }
        metrics_step(m, r, W, 0.5);
    }
    metrics_event(m, EV_NONFINITE_LOSS, 3, "skip");
    metrics_event(m, EV_GRAD_NORM_SPIKE, 4, "rollback");
    metrics_checkpoint(m, 4);
    metrics_epoch(m, 1, 1.75, 1e4);
    metrics_state(m, "training");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    Config c;
    char names[PROTO_MAX_TENSORS][32], err[512];
    cfg_defaults(&c);
    snprintf(c.metrics_listen, sizeof c.metrics_listen, "127.0.0.1:0");
    int n = cfg_tensor_names(&c, names, PROTO_MAX_TENSORS);
    if (!(server = metrics_start(&c, 3, names, n, &port, err, sizeof err))) {
        fprintf(stderr, "fuzz_metrics: %s\n", err);
        abort();
    }
    fill_snapshot(server, 3);
    return 0;
}

/* Send req (n bytes) on a new connection, shut the write side, read the
 * reply (its first cap-1 bytes into out, NUL-terminated) until the server
 * closes, or until it sends nothing for idle_ms: libmicrohttpd 0.9.75 keeps
 * a connection whose client half-closed inside a request open until its
 * 5 s timeout, so an incomplete request ends by that wait, and the
 * connection is reset (freeing its slot). Returns the reply's length; with
 * must_close, aborts when the server has not closed within 3 s. */
static size_t exchange(const void *req, size_t n, char *out, size_t cap, int idle_ms, int must_close)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {3, 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) ||
        connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("fuzz_metrics: connect");
        abort(); /* the server is gone */
    }
    const char *p = req;
    while (n) { /* the server may answer and close early (431, 400): then stop writing */
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        p += w, n -= (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    size_t got = 0;
    int closed = 0;
    double t0 = log_clock_ms();
    for (;;) {
        struct pollfd pf = {fd, POLLIN, 0};
        int left = (int)(3000 - (log_clock_ms() - t0));
        int pr = poll(&pf, 1, must_close ? (left > 0 ? left : 0) : idle_ms);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) break; /* quiet: the server waits for the rest of a request */
        char buf[4096];
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { /* EOF, or reset after an error reply */
            closed = 1;
            break;
        }
        if (got < cap - 1) memcpy(out + got, buf, (size_t)r < cap - 1 - got ? (size_t)r : cap - 1 - got);
        got += (size_t)r;
    }
    out[got < cap - 1 ? got : cap - 1] = 0;
    if (must_close && !closed) {
        fprintf(stderr, "fuzz_metrics: the server did not close within 3 s (%zu bytes of reply)\n", got);
        abort();
    }
    struct linger lg = {1, 0}; /* reset, so the server drops the connection now */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    return got;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned long runs;
    char reply[65536];
    size_t n = exchange(data, size, reply, sizeof reply, 25, 0);
    if (n && strncmp(reply, "HTTP/1.", n < 7 ? n : 7) != 0) {
        fprintf(stderr, "fuzz_metrics: reply does not start with HTTP/1.: '%.80s'\n", reply);
        abort();
    }
    if (++runs % 64 == 0) { /* still serving, and serving the whole exposition */
        static const char scrape[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        n = exchange(scrape, sizeof scrape - 1, reply, sizeof reply, 0, 1);
        if (strncmp(reply, "HTTP/1.1 200", 12) || !strstr(reply, "clipd_grad_norm_preclip_count 4")) {
            fprintf(stderr, "fuzz_metrics: a good scrape got %zu bytes: '%.200s'\n", n, reply);
            abort();
        }
    }
    return 0;
}
