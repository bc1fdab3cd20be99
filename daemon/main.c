/* clipd: the coordinator daemon (world rank 0). It loads and validates the
 * config (and the checkpoint to resume from), sends it to the workers,
 * schedules epochs, receives one record per step per worker, writes steps,
 * epochs and events as JSON lines, turns signals into checkpoint/stop
 * requests, and prints a summary. It never joins a gradient collective, and
 * waits for messages without spinning a core. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/cfg.h"
#include "common/ckdir.h"
#include "common/ckpt.h"
#include "common/data.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/proto.h"
#include "common/proto_mpi.h"
#include "common/rng.h"
#include "common/text.h"
#include "daemon/metrics.h"
#include "daemon/resume.h"
#include "daemon/runlog.h"
#include "daemon/stats.h"

#define MAX_SETS 256

typedef struct {
    const char *config_path, *resume;
    const char *sets[MAX_SETS];
    int nsets, check;
    const char *eval;   /* --eval WEIGHTS: evaluate instead of training */
    int split;          /* --split: TEXT_VALID or TEXT_TEST (default test) */
    int workers; /* --check --workers W: the worker count to check for */
    int answered; /* --help or --version printed: nothing more to do (exit 0) */
} Args;

typedef struct {
    Config cfg;
    int W;
    RunLog log;
    EpochStats st;
    StepRecord *recs;        /* (W) this step's record from each worker */
    int64_t next_step;       /* step number the next record must carry */
    long nonfinite, drift, write_errors, events, rollbacks, checkpoints, ckpt_failures;
    unsigned failed_logs;    /* bit per log file that failed a write (said once each) */
    long event_count[EV_COUNT];
    int64_t last_ckpt_step;
    EpochLine *epochs;       /* (train_epochs) */
    int epochs_done;
    double t0_ms, cpu0;      /* wall clock and own cpu time at the start */
    char names[PROTO_MAX_TENSORS][32];
    int ntensors;
    Proto proto;             /* messages to and from the workers; proto.lim: what each is checked against */
    Resume res;              /* where a resumed run starts */
    int stop_sent, stopped, aborted, early_stop;
    int64_t steps_seen;      /* step records received in this session */
    Metrics *metrics;        /* NULL when metrics.listen is off */
    unsigned char *clip_ring;/* (divergence.window) clipped flags of recent steps */
    int clip_n, clip_pos, clip_sum;
    /* watchdog: how long the coordinator has waited for the step (or epoch
     * record) it waits for, and whether that wait was already warned about */
    int64_t last_seq;        /* seq of the last complete step */
    int cur_epoch;
    double wait_t0;
    int stall_warned;
    int finishing;           /* STOP sent: signals are no longer turned into requests */
    long stalls, stragglers;
    double prior_seconds;    /* wall time of the run's earlier sessions (sessions.jsonl) */
    int test_at_end;         /* text with a test split long enough: evaluated after the final weights */
    double test_loss;        /* its result (NAN: none) */
    int64_t test_tokens, test_step;
    int test_best;           /* of best.safetensors (else the final weights) */
    int prior_sessions;
    int *slow_run;           /* (W) steps in a row each worker was a straggler */
    double *others;          /* (W) scratch: the workers' compute times, sorted */
} Coord;

static pid_t launcher_pid; /* mpirun, or the orted that started this rank */

static volatile sig_atomic_t sig_stop, sig_ckpt, sig_hup;

static void on_signal(int s)
{
    if (s == SIGUSR2) sig_ckpt = 1;
    else if (s == SIGHUP) sig_hup = 1;
    else sig_stop = 1; /* SIGUSR1, SIGTERM, SIGINT: checkpoint and stop */
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaction(sigs[i], &sa, NULL);
    /* stderr is a pipe to mpirun: once mpirun is gone a write must fail
     * (EPIPE, ignored), not kill the coordinator between a step's lines */
    signal(SIGPIPE, SIG_IGN);
}

/* mpirun (or the orted that started this rank) died, e.g. SIGKILL: its
 * pipes are gone and MPI calls may never return. Called between steps, so
 * every log holds whole lines and whole steps: stop here, exit 1. */
static void check_launcher(void)
{
    if (!launcher_pid || getppid() == launcher_pid) return; /* 0: not started by main() (fuzz_proto) */
    LOG(LOG_ERROR, "mpirun is gone (parent process %d exited): stopping; the last checkpoint "
                   "stays (continue with --resume latest)", (int)launcher_pid);
    _exit(1);
}

/* A fatal error of the coordinator after MPI_Init: one line saying why,
 * then MPI_Abort ends every rank (exit 1); the last checkpoint stays. */
static void coord_fatal(Coord *co, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void coord_fatal(Coord *co, const char *fmt, ...)
{
    va_list ap;
    if (co) metrics_state(co->metrics, "aborted");
    va_start(ap, fmt);
    proto_abort_v(fmt, ap);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) * 1e-6;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mpirun -np 1 clipd CONFIG [--set section.key=value ...] [--resume PATH|latest]\n"
            "              : -np W clipd-worker\n"
            "       clipd --check CONFIG [--set section.key=value ...] [--resume PATH|latest] [--workers W]\n"
            "Trains a recurrent network data-parallel on W workers with exact global-norm\n"
            "clipping; this process is the coordinator (world rank 0).\n"
            "  --eval WEIGHTS   (in a job) evaluate a checkpoint or weights file on the workers instead of\n"
            "                   training: loss and perplexity over a whole split, printed and appended\n"
            "                   to RUN_DIR/eval.jsonl as JSON\n"
            "  --split S        with --eval: test (default; data.path/test.txt) or valid\n"
            "  --check          validate CONFIG (and overrides) without MPI, print the effective config;\n"
            "                   runs every check a start runs (resume point, directories, data,\n"
            "                   memory) and writes nothing\n"
            "  --workers W      with --check: the worker count to check for (default: the\n"
            "                   checkpoint's, else 1)\n"
            "  --set k=v        override one config key, e.g. --set train.epochs=2\n"
            "  --resume PATH    continue from a checkpoint file; `latest`: the newest valid one\n"
            "                   in checkpoint.dir (RUN_DIR/checkpoints)\n"
            "  --help, --version\n"
            "Signals: USR1, TERM, INT: checkpoint at the next step and stop (exit 0);\n"
            "USR2: checkpoint at the next step and go on; HUP: reopen the log files.\n"
            "Exit codes: 0 success, 2 bad input (config, command line, checkpoint), 1 anything else.\n"
            "\nEvery config key, with its default (a config may set any of them; --set any):\n\n");
    Config d;
    cfg_defaults(&d);
    cfg_print(&d, f);
}

/* The options, in getopt_long's table: a value is a separate word or, for
 * any that takes one, after '='; options and CONFIG may come in any order,
 * and are taken left to right, so the first mistake is the one reported. */
enum { OPT_HELP = 'h', OPT_VERSION = 256, OPT_CHECK, OPT_EVAL, OPT_SPLIT, OPT_WORKERS, OPT_SET, OPT_RESUME };
static const struct option long_opts[] = {
    {"help", no_argument, NULL, OPT_HELP},          {"version", no_argument, NULL, OPT_VERSION},
    {"check", no_argument, NULL, OPT_CHECK},        {"eval", required_argument, NULL, OPT_EVAL},
    {"split", required_argument, NULL, OPT_SPLIT},  {"workers", required_argument, NULL, OPT_WORKERS},
    {"set", required_argument, NULL, OPT_SET},      {"resume", required_argument, NULL, OPT_RESUME},
    {NULL, 0, NULL, 0}};

/* One option with its value v (NULL for none). 0, or -1 with err filled. */
static int take_option(Args *a, int o, const char *v, char *err, size_t errlen)
{
    char *end = NULL;
    long w;
    switch (o) {
    case OPT_HELP: return usage(stdout), a->answered = 1, 0;
    case OPT_VERSION: return printf("clipd %s\n", CLIPD_VERSION), a->answered = 1, 0;
    case OPT_CHECK: a->check = 1; return 0;
    case OPT_EVAL: a->eval = v; return 0;
    case OPT_SPLIT:
        if (strcmp(v, "test") && strcmp(v, "valid"))
            return snprintf(err, errlen, "command line: --split %s: expected test or valid", v), -1;
        a->split = v[0] == 't' ? TEXT_TEST : TEXT_VALID;
        return 0;
    case OPT_WORKERS:
        w = strtol(v, &end, 10);
        if (*end || end == v || w < 1 || w > 1 << 20)
            return snprintf(err, errlen, "command line: --workers needs a count in [1, %d]", 1 << 20), -1;
        a->workers = (int)w;
        return 0;
    case OPT_SET:
        if (a->nsets == MAX_SETS) return snprintf(err, errlen, "command line: more than %d --set", MAX_SETS), -1;
        a->sets[a->nsets++] = v;
        return 0;
    case OPT_RESUME: a->resume = v; return 0;
    }
    return 0;
}

/* 0 (a->answered: --help or --version printed, stop there), or -1 with err
 * filled: a bad command line. */
static int parse_args(Args *a, int argc, char **argv, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    a->split = TEXT_TEST;
    opterr = 0; /* the messages are ours */
    optind = 0; /* start over (glibc: also forgets a previous parse) */
    while (!a->answered) {
        int at = optind < 1 ? 1 : optind;
        if (at < argc && !strcmp(argv[at], "--")) /* no end-of-options mark: CONFIG may come anywhere */
            return snprintf(err, errlen, "command line: unknown option '--' (see --help)"), -1;
        int o = getopt_long(argc, argv, "+:h", long_opts, NULL);
        if (o == -1 && optind >= argc) break;
        if (o == -1) { /* '+': stops at a word that is no option: CONFIG */
            const char *s = argv[optind++];
            if (a->config_path)
                return snprintf(err, errlen, "command line: unexpected argument '%s' after config '%s'", s,
                                a->config_path), -1;
            a->config_path = s;
        } else if (o == ':' && !strcmp(argv[at], "--workers")) {
            return snprintf(err, errlen, "command line: --workers needs a count in [1, %d]", 1 << 20), -1;
        } else if (o == ':') {
            return snprintf(err, errlen, "command line: %s needs a value", argv[at]), -1;
        } else if (o == '?') {
            return snprintf(err, errlen, "command line: unknown option '%s' (see --help)", argv[at]), -1;
        } else {
            if (take_option(a, o, optarg, err, errlen)) return -1;
        }
    }
    if (!a->answered && !a->config_path)
        return snprintf(err, errlen, "command line: missing CONFIG (see --help)"), -1;
    return 0;
}

static int load_config(Config *c, const Args *a, char *note, size_t notelen, char *err, size_t errlen)
{
    cfg_defaults(c);
    if (cfg_load_file(c, a->config_path, err, errlen) != CFG_OK) return -1;
    for (int i = 0; i < a->nsets; i++)
        if (cfg_set_arg(c, a->sets[i], err, errlen) != CFG_OK) return -1;
    cfg_resolve(c, note, notelen);
    if (cfg_validate(c, err, errlen) != CFG_OK) return -1;
    return 0;
}

/* A log line could not be written (disk full, read-only file system): say
 * so once per file, as an error and an event (unless events.jsonl is the
 * file), count every lost line, keep training, and make the exit code 1.
 * The training state does not depend on the logs. */
static void write_failed(Coord *co, const char *file)
{
    static const char *const files[] = {"steps.jsonl", "epochs.jsonl", "events.jsonl", "tensors.jsonl",
                                        "sessions.jsonl"};
    int e = errno;
    unsigned bit = 1u << 5;
    for (unsigned i = 0; i < 5; i++)
        if (!strcmp(file, files[i])) bit = 1u << i;
    co->write_errors++;
    metrics_write_error(co->metrics);
    if (co->failed_logs & bit) return;
    co->failed_logs |= bit;
    LOG(LOG_ERROR, "cannot write %s/%s: %s; training goes on, the exit code will be 1",
        co->cfg.run_dir, file, strerror(e));
    if (bit == 1u << 2) return; /* no event about events.jsonl in events.jsonl */
    const StepRecord *r = &co->recs[0];
    double none[4] = {NAN, NAN, NAN, NAN};
    char extra[512], why[256];
    snprintf(extra, sizeof extra, "\"file\":\"%s\",\"error\":\"%s\"", file,
             json_escape(why, sizeof why, strerror(e)));
    if (runlog_event(&co->log, r->seq, r->step, r->epoch, "log_write_failed", none, "continue", -1,
                     NULL, NULL, 0, extra) != 0)
        write_failed(co, "events.jsonl");
}

/* Worker 0 could not write a checkpoint (or, at = "end", the final
 * checkpoint or weights): an error, an event with its message, a counter,
 * and by checkpoint.on_failure either the run goes on or (the workers set
 * STEP_ABORT) it stops with the last good checkpoint intact. Exit code 1. */
static void checkpoint_failed(Coord *co, int64_t seq, int64_t step, int epoch, const char *error,
                              const char *at)
{
    int stop = co->cfg.checkpoint_on_failure == CKFAIL_ABORT && !at;
    double none[4] = {NAN, NAN, NAN, NAN};
    char extra[PROTO_ERR_MAX * 2 + 64], why[PROTO_ERR_MAX * 2];
    co->ckpt_failures++;
    metrics_checkpoint_failed(co->metrics);
    snprintf(extra, sizeof extra, "\"error\":\"%s\"%s%s%s", json_escape(why, sizeof why, error),
             at ? ",\"at\":\"" : "", at ? at : "", at ? "\"" : "");
    if (runlog_event(&co->log, seq, step, epoch, "checkpoint_failed", none,
                     at ? "log" : stop ? "abort" : "continue", -1, NULL, NULL, 0, extra) != 0)
        write_failed(co, "events.jsonl");
    if (at)
        LOG(LOG_ERROR, "at the %s: the final checkpoint or weights could not be written: %s; "
                       "the exit code will be 1", at, error);
    else if (stop)
        LOG(LOG_ERROR, "step %lld: checkpoint failed: %s; checkpoint.on_failure is abort: stopping "
                       "(the last good checkpoint stays; free space, then --resume latest)",
            (long long)step, error);
    else
        LOG(LOG_ERROR, "step %lld: checkpoint failed: %s; checkpoint.on_failure is continue: "
                       "training goes on, the exit code will be 1", (long long)step, error);
}

/* RUN_DIR/metrics.addr: HOST:PORT of the endpoint (the port may be one the
 * system chose), for scrapers and scripts; written whole (temporary file,
 * rename), removed when the endpoint stops. */
static void write_metrics_addr(const Config *c, const char *host, int port)
{
    char path[CFG_STR_MAX + 32], tmp[CFG_STR_MAX + 64];
    snprintf(path, sizeof path, "%s/metrics.addr", c->run_dir);
    FILE *f = fs_tmp_path(tmp, sizeof tmp, path) ? NULL : fopen(tmp, "w");
    int bad = !f || fprintf(f, "%s:%d\n", host, port) < 0;
    if (f) bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        LOG(LOG_WARN, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
    }
}

/* Signals become requests to worker 0, which folds them into a step. */
static void handle_signals(Coord *co)
{
    if (sig_hup) {
        char err[512];
        sig_hup = 0;
        if (runlog_reopen(&co->log, err, sizeof err) != 0) LOG(LOG_ERROR, "SIGHUP: %s", err);
        else LOG(LOG_INFO, "SIGHUP: log files reopened");
    }
    ReqMsg q = {0, 0};
    if (sig_ckpt) q.type |= REQ_CHECKPOINT, sig_ckpt = 0;
    if (sig_stop && !co->stop_sent) {
        q.type |= REQ_STOP;
        co->stop_sent = 1;
        LOG(LOG_INFO, "signal: checkpoint at the next step and stop");
    }
    if (q.type && proto_send_req(&co->proto, &q) != 0) coord_fatal(co, "cannot send a request to worker 0");
}

/* The workers (0-based, from `from` on) with no message of tag queued:
 * whose record the coordinator still waits for. As a JSON array in buf. */
static void missing_ranks(Coord *co, int from, int tag, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    int to = tag == TAG_EPOCH ? from + 1 : co->W; /* worker 0 alone sends epoch records */
    for (int w = from; w < to && n + 16 < len; w++) {
        int flag = proto_poll(&co->proto, w, tag);
        if (!flag) n += (size_t)snprintf(buf + n, len - n, "%s%d", n > 1 ? "," : "", w);
    }
    snprintf(buf + n, len - n, "]");
}

/* Watchdog: the step (or epoch record) waited for is late. After
 * watchdog.warn_seconds one stall event (action log) and a warning; after
 * watchdog.seconds a stall event (action abort), one error line, and the job
 * ends with exit 1 (the last checkpoint stays). */
static void watchdog(Coord *co, int from, int tag)
{
    const Config *c = &co->cfg;
    double waited = (log_clock_ms() - co->wait_t0) / 1e3;
    double warn = c->watchdog_warn_seconds > 0 ? c->watchdog_warn_seconds : c->watchdog_seconds / 4;
    int end = c->watchdog_seconds > 0 && waited >= c->watchdog_seconds;
    if (!end && (co->stall_warned || warn <= 0 || waited < warn)) return;
    char ranks[4096], extra[4200];
    missing_ranks(co, from, tag, ranks, sizeof ranks);
    int64_t step = tag == TAG_STEP ? co->next_step : co->next_step - 1;
    int64_t seq = tag == TAG_STEP ? co->last_seq + 1 : co->last_seq;
    double info[4] = {waited, NAN, NAN, end ? c->watchdog_seconds : warn};
    snprintf(extra, sizeof extra, "\"ranks\":%s,\"waiting_for\":\"%s\"", ranks,
             tag == TAG_STEP ? "step" : tag == TAG_EPOCH ? "epoch_end" : "end");
    if (runlog_event(&co->log, seq, step, co->cur_epoch, "stall", info, end ? "abort" : "log", -1,
                     NULL, NULL, 0, extra) != 0)
        write_failed(co, "events.jsonl");
    co->stall_warned = 1;
    co->stalls++;
    metrics_watchdog(co->metrics, 0);
    const char *what = tag == TAG_STEP ? "step" : tag == TAG_EPOCH ? "the end of the epoch after step"
                     : "the end of the run after step";
    if (!end) {
        LOG(LOG_WARN, "%s %lld: no record from worker(s) %s for %.1f s (watchdog.warn_seconds %g); "
                      "the job ends after watchdog.seconds %g", what, (long long)step, ranks, waited,
            warn, c->watchdog_seconds);
        return;
    }
    coord_fatal(co, "%s %lld: no record from worker(s) %s for %.1f s (watchdog.seconds %g): ending "
                    "the job, exit 1; the last checkpoint stays (continue with --resume latest)",
                what, (long long)step, ranks, waited, c->watchdog_seconds);
}

/* Wait for worker w's next message with tag without burning a core: poll,
 * then sleep, the nap growing from 50 us to 2 ms while nothing arrives. A
 * vanished mpirun is checked between polls; watched: signals and the
 * watchdog too (clipd --eval waits unwatched). */
static void wait_message(Coord *co, int w, int tag, int watched)
{
    long nap_ns = 50000;
    double last = log_clock_ms();
    for (;;) {
        /* A gap far longer than a nap: this process did not run (the whole
         * job suspended: scontrol suspend, gang scheduling, a paused VM).
         * The watchdog does not count that time against the workers. */
        double now = log_clock_ms();
        if (watched && now - last > 1000) co->wait_t0 += now - last;
        last = now;
        check_launcher();
        if (watched && !co->finishing) handle_signals(co);
        if (watched) watchdog(co, w, tag);
        if (proto_poll(&co->proto, w, tag)) return;
        struct timespec nap = {0, nap_ns};
        nanosleep(&nap, NULL);
        if (nap_ns < 2000000) nap_ns *= 2;
    }
}

/* A message that breaks the protocol ends the job with one line saying why. */
static void protocol_error(Coord *co, int w, const char *what) __attribute__((noreturn));
static void protocol_error(Coord *co, int w, const char *what)
{
    coord_fatal(co, "protocol error: worker %d: %s", w, what);
}

/* Every worker must report the same record but for its rank and timings. */
static int same_record(const StepRecord *a, const StepRecord *b)
{
    StepRecord x = *a, y = *b;
    x.wrank = y.wrank = 0;
    x.step_ms = y.step_ms = x.compute_ms = y.compute_ms = x.sync_ms = y.sync_ms = 0;
    return memcmp(&x, &y, sizeof x) == 0;
}

/* a goes before b: a non-finite norm (the tensor holding the NaN or Inf) first, then larger. */
static int norm_before(float a, float b)
{
    int abad = !isfinite(a), bbad = !isfinite(b);
    return abad != bbad ? abad : a > b;
}

/* Tensors by pre-clip norm, non-finite first, then largest first: which layer exploded. */
static int sort_tensors(const Coord *co, const StepRecord *r, const char **names, float *norms)
{
    int n = r->ntensors < co->ntensors ? r->ntensors : co->ntensors;
    for (int i = 0; i < n; i++) names[i] = co->names[i], norms[i] = r->tensor_norm[i];
    for (int i = 1; i < n; i++) /* insertion sort, stable: a few dozen tensors */
        for (int j = i; j > 0 && norm_before(norms[j], norms[j - 1]); j--) {
            float t = norms[j]; norms[j] = norms[j - 1]; norms[j - 1] = t;
            const char *s = names[j]; names[j] = names[j - 1]; names[j - 1] = s;
        }
    return n;
}

static void log_events(Coord *co, int64_t seq, int64_t step, int epoch, uint32_t events,
                       const double (*info)[4], const int32_t *check, int action,
                       int64_t rollback_to, const StepRecord *r)
{
    for (int k = 0; k < EV_COUNT; k++) {
        if (!(events & (1u << k))) continue;
        char extra[96]; /* which check fired (if any); no record: an epoch's end */
        const char *chk = event_check_name(check[k]);
        snprintf(extra, sizeof extra, "%s%s%s%s%s", chk ? "\"check\":\"" : "", chk ? chk : "",
                 chk ? "\"" : "", chk && !r ? "," : "", r ? "" : "\"at\":\"epoch_end\"");
        const char *names[PROTO_MAX_TENSORS];
        float norms[PROTO_MAX_TENSORS];
        int n = r && event_kinds[k].tensor_norms ? sort_tensors(co, r, names, norms) : 0;
        if (runlog_event(&co->log, seq, step, epoch, event_kind_name(k), info[k],
                         cfg_action_name(action), action == ACT_ROLLBACK ? rollback_to : -1,
                         names, norms, n, extra[0] ? extra : NULL) != 0)
            write_failed(co, "events.jsonl");
        co->events++;
        co->event_count[k]++;
        metrics_event(co->metrics, k, step, cfg_action_name(action));
        LOG(event_kinds[k].log_level, "step %lld: %s (value %.4g, threshold %.4g): %s",
            (long long)step, event_kind_name(k), info[k][0], info[k][3], cfg_action_name(action));
    }
}

/* Stragglers: a worker whose compute time (forward, backward: its own work,
 * not the waiting in collectives that every step time includes) stays above
 * watchdog.straggler_factor x the median of the other workers' for
 * watchdog.straggler_window steps in a row is one straggler event, and again
 * only after it once kept up. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The k-th smallest of sorted s[0..n] without its element p. */
static double sorted_without(const double *s, int p, int k) { return s[k < p ? k : k + 1]; }

static void find_stragglers(Coord *co)
{
    const Config *c = &co->cfg;
    int W = co->W, win = c->watchdog_straggler_window, n = W - 1;
    if (win <= 0 || W < 2) return;
    const StepRecord *r0 = &co->recs[0];
    double *s = co->others; /* every worker's compute time, sorted once per step */
    for (int o = 0; o < W; o++) s[o] = co->recs[o].compute_ms;
    qsort(s, (size_t)W, sizeof *s, cmp_double);
    for (int w = 0; w < W; w++) {
        double mine = co->recs[w].compute_ms;
        int p = 0; /* mine in s: the others are s without it */
        while (p < W && s[p] != mine) p++;
        double med = p == W ? NAN
                   : n % 2 ? sorted_without(s, p, n / 2)
                           : 0.5 * (sorted_without(s, p, n / 2 - 1) + sorted_without(s, p, n / 2));
        double limit = c->watchdog_straggler_factor * med;
        if (!(mine > limit)) {
            co->slow_run[w] = 0;
            continue;
        }
        if (++co->slow_run[w] != win) continue;
        char extra[64];
        double info[4] = {mine, med, NAN, limit};
        snprintf(extra, sizeof extra, "\"ranks\":[%d],\"window\":%d", w, win);
        if (runlog_event(&co->log, r0->seq, r0->step, r0->epoch, "straggler", info, "log", -1, NULL,
                         NULL, 0, extra) != 0)
            write_failed(co, "events.jsonl");
        co->stragglers++;
        metrics_watchdog(co->metrics, 1);
        LOG(LOG_WARN, "step %lld: worker %d is a straggler: compute %.3g ms per step, more than %g x "
                      "the others' median %.3g ms for %d steps in a row", (long long)r0->step, w, mine,
            c->watchdog_straggler_factor, med, win);
    }
}

/* Agreement: every worker must report worker 0's record but for its rank
 * and timings; else a replica_drift event (the step goes on). */
static void check_agreement(Coord *co, int w)
{
    const StepRecord *r = &co->recs[w];
    if (w == 0 || same_record(&co->recs[0], r)) return;
    double info[4] = {(double)w, 0, 0, 0};
    co->drift++;
    metrics_event(co->metrics, EV_REPLICA_DRIFT, r->step, "log");
    LOG(LOG_ERROR, "step %lld: worker %d disagrees with worker 0", (long long)r->step, w);
    if (runlog_event(&co->log, r->seq, r->step, r->epoch, "replica_drift", info, "log",
                     -1, NULL, NULL, 0, "\"what\":\"step_record\"") != 0)
        write_failed(co, "events.jsonl");
}

/* Receive: one record from each worker for the next step, taken source by
 * source (MPI keeps each sender's messages in order), each the step and
 * rank expected and checked against worker 0's. Returns the slowest step time. */
static double receive_records(Coord *co)
{
    double slowest = 0;
    co->wait_t0 = log_clock_ms();
    co->stall_warned = 0;
    for (int w = 0; w < co->W; w++) {
        StepRecord *r = &co->recs[w];
        char err[256];
        wait_message(co, w, TAG_STEP, 1);
        if (proto_recv_step(&co->proto, w, r, err, sizeof err) != 0) protocol_error(co, w, err);
        if (r->step != co->next_step || r->wrank != w) {
            snprintf(err, sizeof err, "step %lld as worker %d, expected step %lld as worker %d",
                     (long long)r->step, r->wrank, (long long)co->next_step, w);
            protocol_error(co, w, err);
        }
        if (r->step_ms > slowest) slowest = r->step_ms;
        check_agreement(co, w);
    }
    if (co->stall_warned)
        LOG(LOG_INFO, "step %lld: every record arrived after %.1f s: the stall healed", (long long)co->recs[0].step,
            (log_clock_ms() - co->wait_t0) / 1e3);
    return slowest;
}

/* Log lines: worker 0's events, tensor norms, a failed checkpoint, then the
 * step's line in steps.jsonl, last: a step is in the logs whole once it is
 * there (a job killed between the lines of a step leaves the others to be
 * cut on resume). */
static void log_step(Coord *co, const StepRecord *r, double slowest)
{
    log_events(co, r->seq, r->step, r->epoch, r->events, (const double (*)[4])r->info, r->check,
               r->action, r->rollback_to, r);
    int every = co->cfg.log_tensor_norms_every;
    if (every > 0 && r->seq % every == 0 && runlog_tensors(&co->log, r, co->names, co->ntensors) != 0)
        write_failed(co, "tensors.jsonl");
    if (r->flags & STEP_CKPT_FAILED) checkpoint_failed(co, r->seq, r->step, r->epoch, r->ckpt_error, NULL);
    if (runlog_step(&co->log, r, slowest) != 0) write_failed(co, "steps.jsonl");
}

/* The clip rate /metrics serves: the logged steps' clipped flags over the
 * last divergence.window steps. (The detector's window, on the workers and
 * not sent, cannot stand in: it counts the clip decision of skipped steps
 * too and divides by the whole window before it is full.) */
static double clip_window_add(Coord *co, int clipped)
{
    int win = co->cfg.divergence_window;
    if (co->clip_n == win) co->clip_sum -= co->clip_ring[co->clip_pos];
    else co->clip_n++;
    co->clip_ring[co->clip_pos] = clipped != 0;
    co->clip_sum += clipped != 0;
    co->clip_pos = (co->clip_pos + 1) % win;
    return (double)co->clip_sum / co->clip_n;
}

/* Statistics: the run's counters, the epoch's statistics, the metrics snapshot. */
static void count_step(Coord *co, const StepRecord *r)
{
    co->last_seq = r->seq;
    co->cur_epoch = r->epoch;
    co->nonfinite += r->nonfinite != 0;
    metrics_step(co->metrics, co->recs, co->W, clip_window_add(co, r->clipped));
    if (r->flags & STEP_CHECKPOINT) metrics_checkpoint(co->metrics, r->step);
    co->steps_seen++;
    stats_add(&co->st, r->loss, r->grad_norm, r->clipped, r->skipped, r->tokens);
    if (r->flags & STEP_CHECKPOINT) co->checkpoints++, co->last_ckpt_step = r->step;
}

/* Rollbacks: the step the workers send next. */
static void follow_step(Coord *co, const StepRecord *r)
{
    if (r->action == ACT_ROLLBACK) {
        co->rollbacks++;
        co->next_step = r->rollback_to + 1;
    } else if (!(r->flags & STEP_ABORT) || r->action != ACT_ABORT) {
        co->next_step = r->step + 1; /* applied (an abort for a failed checkpoint comes after it) */
    }
}

/* One step: receive and check every worker's record, stragglers, worker
 * 0's log lines, statistics, the next step. Returns the step's flags. */
static int receive_step(Coord *co)
{
    double slowest = receive_records(co);
    const StepRecord *r = &co->recs[0];
    find_stragglers(co);
    log_step(co, r, slowest);
    count_step(co, r);
    follow_step(co, r);
    return r->flags;
}

/* The epoch's clipping in one word: clip mode none, no step clipped, more than
 * divergence.clip_saturation of the steps clipped, or in between. */
static const char *clip_state(const Config *c, const EpochSummary *s)
{
    if (c->clip_mode == CLIP_NONE) return "off";
    if (s->clipped == 0) return "inactive";
    return s->clip_rate > c->divergence_clip_saturation ? "saturated" : "active";
}

/* The epoch record from worker 0 and the epochs.jsonl line. */
static int receive_epoch(Coord *co, int epoch)
{
    EpochRecord e;
    char err[256];
    co->wait_t0 = log_clock_ms();
    co->stall_warned = 0;
    co->cur_epoch = epoch;
    wait_message(co, 0, TAG_EPOCH, 1);
    if (proto_recv_epoch(&co->proto, 0, &e, err, sizeof err) != 0) protocol_error(co, 0, err);
    if (e.epoch != epoch) {
        snprintf(err, sizeof err, "epoch record %d, expected %d", e.epoch, epoch);
        protocol_error(co, 0, err);
    }
    EpochLine *l = &co->epochs[epoch - 1];
    l->epoch = epoch;
    stats_end(&co->st, log_clock_ms(), &l->s);
    l->val_loss = e.val_loss;
    l->val_ppl = co->cfg.data_source != DATA_ADDING ? exp(e.val_loss) : NAN;
    l->val_tokens = e.val_tokens;
    l->lr = e.lr;
    l->clip_state = clip_state(&co->cfg, &l->s);
    if (runlog_epoch(&co->log, l) != 0) write_failed(co, "epochs.jsonl");
    log_events(co, e.seq, e.step, epoch, e.events, (const double (*)[4])e.info, e.check, e.action,
               -1, NULL);
    co->epochs_done = epoch;
    metrics_epoch(co->metrics, epoch, l->val_loss, l->s.tokens_per_s);
    LOG(LOG_INFO, "epoch %d/%d: train loss %.4f, val loss %.4f, clip rate %.3f, grad norm p50 %.3g max %.3g, %.0f tokens/s",
        epoch, co->cfg.train_epochs, l->s.train_loss, l->val_loss, l->s.clip_rate, l->s.norm_p50,
        l->s.norm_max, l->s.tokens_per_s);
    return e.flags;
}

static void send_ctrl(Coord *co, const CtrlMsg *m)
{
    if (proto_send_ctrl(&co->proto, m) != 0) coord_fatal(co, "cannot send a control message to the workers");
}

/* One epoch; returns 0 to go on with the next one. */
static int run_epoch(Coord *co, int epoch, int resumed)
{
    const Config *c = &co->cfg;
    CtrlMsg m = {CTRL_EPOCH, epoch, data_epoch_seed(c, epoch), 0, 0};
    if (!resumed) stats_begin(&co->st, epoch, log_clock_ms());
    send_ctrl(co, &m);
    for (;;) {
        int flags = receive_step(co);
        if (flags & STEP_ABORT) return co->aborted = 1;
        if (flags & STEP_STOPPING) return co->stopped = 1;
        if (flags & STEP_EPOCH_LAST) break;
    }
    int ef = receive_epoch(co, epoch);
    if (ef & EPOCH_ABORT) return co->aborted = 1;
    if (ef & EPOCH_EARLY_STOP) {
        LOG(LOG_INFO, "early stop: no better validation loss for %d epochs", c->train_early_stop);
        return co->early_stop = 1;
    }
    return 0;
}

/* Worker 0's EpochRecord carrying an evaluation (clipd --eval, the test
 * split at the end): val_loss, val_tokens, step of the weights. */
static EpochRecord receive_eval(Coord *co)
{
    EpochRecord e;
    char err[256];
    wait_message(co, 0, TAG_EPOCH, 0);
    if (proto_recv_epoch(&co->proto, 0, &e, err, sizeof err) != 0) protocol_error(co, 0, err);
    return e;
}

/* The JSON fields of an evaluation; perplexity exp(loss) for token models. */
static void eval_fields(const Config *c, int W, char *out, size_t len, const char *at, const char *weights,
                        int split, const EpochRecord *e)
{
    char a[32], b[32], w[PROTO_PATH_MAX * 2];
    int tok = c->data_source != DATA_ADDING;
    snprintf(out, len, "\"at\":\"%s\",\"weights\":\"%s\",\"step\":%lld,\"split\":\"%s\",\"loss\":%s,"
             "\"ppl\":%s,\"tokens\":%lld,\"loss_unit\":\"%s\",\"workers\":%d", at,
             json_escape(w, sizeof w, weights), (long long)e->step,
             c->data_source != DATA_TEXT ? "held_out" : split == TEXT_TEST ? "test" : "valid",
             json_num(a, sizeof a, e->val_loss), json_num(b, sizeof b, tok ? exp(e->val_loss) : NAN),
             (long long)e->val_tokens, tok ? "nats/token" : "squared_error", W);
}

/* The test split at the end of a run: into eval.jsonl and the summary. */
static void test_result(Coord *co)
{
    EpochRecord e = receive_eval(co);
    char json[1024], path[CFG_STR_MAX + 32];
    co->test_best = e.seq == 1;
    snprintf(path, sizeof path, "%s/%s.safetensors", co->cfg.run_dir, co->test_best ? "best" : "final");
    co->test_loss = e.val_loss, co->test_tokens = e.val_tokens, co->test_step = e.step;
    eval_fields(&co->cfg, co->W, json, sizeof json, "end", path, TEXT_TEST, &e);
    if (runlog_eval(co->cfg.run_dir, json) != 0) write_failed(co, "eval.jsonl");
}

/* STOP, then one DoneMsg per worker once the files are on disk; every
 * worker must end with the same parameters after the same steps. */
static int finish(Coord *co, int final, int checkpoint)
{
    CtrlMsg m = {CTRL_STOP, 0, 0, final, checkpoint};
    send_ctrl(co, &m);
    if (final && co->test_at_end) test_result(co);
    co->finishing = 1; /* the watchdog still times the final checkpoint and weights */
    co->wait_t0 = log_clock_ms();
    co->stall_warned = 0;
    static DoneMsg first, d; /* large: they carry an error text */
    int bad = 0;
    for (int w = 0; w < co->W; w++) {
        char err[256];
        wait_message(co, w, TAG_DONE, 1);
        if (proto_recv_done(&co->proto, w, &d, err, sizeof err) != 0) protocol_error(co, w, err);
        if (d.wrank != w) {
            snprintf(err, sizeof err, "done message as worker %d", d.wrank);
            protocol_error(co, w, err);
        }
        if (w == 0) first = d;
        if (d.status != 0) bad = 1, checkpoint = 0;
        if (w == 0 && d.status != 0)
            checkpoint_failed(co, co->recs[0].seq, d.steps, co->epochs_done, d.error, "end");
        if (!co->aborted && (d.param_hash != first.param_hash || d.steps != first.steps)) {
            double info[4] = {(double)w, 0, 0, 0};
            co->drift++;
            metrics_event(co->metrics, EV_REPLICA_DRIFT, d.steps, "log");
            LOG(LOG_ERROR, "worker %d ends with other parameters or steps than worker 0", w);
            /* seq of the last step logged, like every event (clipd-report needs seq >= 0) */
            if (runlog_event(&co->log, co->last_seq, d.steps, co->epochs_done, "replica_drift", info, "log",
                             -1, NULL, NULL, 0, "\"what\":\"final_params\"") != 0)
                write_failed(co, "events.jsonl");
        }
    }
    if (checkpoint) co->checkpoints++, co->last_ckpt_step = first.steps;
    return bad || co->drift || co->write_errors || co->ckpt_failures;
}

static void print_floor(const Config *c, double last)
{
    if (c->data_source == DATA_TEXT) {
        printf("final train loss %.4f nats/token (perplexity %.2f)\n", last, exp(last));
        return;
    }
    if (c->data_source == DATA_ADDING) {
        printf("final train loss %.4f (mean squared error; predicting 1 scores about 0.167)\n", last);
        return;
    }
    Markov mk;
    /* Positions of an epoch's stream, capped so the sum costs at most about
     * 2e8 operations (a huge chain gives an early-time estimate). */
    double n = (double)c->train_steps_per_epoch * c->data_seq_len;
    if (n > 20000) n = 20000;
    if (markov_init(&mk, c->model_vocab, c->data_markov_order, c->data_markov_branch, data_chain_seed(c)) != 0)
        return;
    double work = (double)mk.nctx * mk.branch;
    if (n * work > 2e8) n = fmax(1.0, floor(2e8 / work));
    double h = markov_entropy_rate(&mk, (long)n);
    printf("final train loss %.4f nats/token; source entropy %.4f (the floor), gap %.4f; uniform guess %.4f\n",
           last, h, last - h, log((double)c->model_vocab));
    markov_free(&mk);
}

static void print_summary(Coord *co, double seconds)
{
    const Config *c = &co->cfg;
    const char *how = co->aborted ? "aborted" : co->stopped ? "stopped by a signal"
                    : co->early_stop ? "stopped early" : "done";
    printf("\nclipd: run '%s' %s: %d of %d epochs, step %lld, %d workers, %.1f s", c->run_name,
           how, co->epochs_done, c->train_epochs, (long long)(co->next_step - 1), co->W, seconds);
    if (co->prior_sessions) printf(" (%.1f s over %d sessions)", seconds + co->prior_seconds, co->prior_sessions + 1);
    char marks[1024];
    resume_session_marks(c, marks, sizeof marks);
    printf("\nsessions: %s\n", marks);
    char ck[CFG_STR_MAX + 16];
    cfg_checkpoint_dir(c, ck, sizeof ck);
    printf("logs: %s/steps.jsonl %s/epochs.jsonl %s/events.jsonl\n", c->run_dir, c->run_dir, c->run_dir);
    if (co->checkpoints) printf("checkpoints: %s (last at step %lld)\n", ck, (long long)co->last_ckpt_step);
    if (!co->aborted && !co->stopped) printf("weights: %s/final.safetensors\n", c->run_dir);
    printf("%6s %11s %10s %10s %10s %10s %10s %12s\n", "epoch", "train_loss", "val_loss", "val_ppl",
           "clip_rate", "norm_p50", "norm_max", "tokens/s");
    for (int e = 0; e < co->epochs_done; e++) {
        EpochLine *l = &co->epochs[e];
        printf("%6d %11.4f %10.4f %10.2f %10.3f %10.4g %10.4g %12.0f\n", l->epoch, l->s.train_loss,
               l->val_loss, l->val_ppl, l->s.clip_rate, l->s.norm_p50, l->s.norm_max, l->s.tokens_per_s);
    }
    if (co->epochs_done) print_floor(c, co->epochs[co->epochs_done - 1].s.train_loss);
    if (co->test_tokens > 0)
        printf("test loss %.4f nats/token, perplexity %.2f, over %lld tokens of the test split; weights: %s "
               "(step %lld)\n", co->test_loss, exp(co->test_loss), (long long)co->test_tokens,
               co->test_best ? "best.safetensors" : "final.safetensors", (long long)co->test_step);
    printf("events %ld:", co->events + co->stalls + co->stragglers);
    for (int k = 0; k < EV_COUNT; k++)
        if (co->event_count[k]) printf(" %s %ld", event_kind_name(k), co->event_count[k]);
    if (co->stalls) printf(" stall %ld", co->stalls);
    if (co->stragglers) printf(" straggler %ld", co->stragglers);
    double cpu = cpu_seconds() - co->cpu0;
    printf("\nnon-finite steps %ld, rollbacks %ld, replica mismatches %ld, log write errors %ld, "
           "checkpoint failures %ld; coordinator cpu %.2f s over %.2f s\n",
           co->nonfinite, co->rollbacks, co->drift, co->write_errors, co->ckpt_failures, cpu, seconds);
    fflush(stdout);
}

/* A resumed run's summary counts what the kept logs already hold. */
static void replay_totals(Coord *co)
{
    ResumeTotals t;
    resume_totals(&co->cfg, &t);
    co->events = t.events, co->rollbacks = t.rollbacks, co->nonfinite = t.nonfinite;
    co->ckpt_failures = t.ckpt_failures, co->stalls = t.stalls, co->stragglers = t.stragglers;
    for (int k = 0; k < EV_COUNT; k++) co->event_count[k] = t.event_count[k];
    co->prior_seconds = t.seconds, co->prior_sessions = t.sessions;
}

static int coordinate(Coord *co)
{
    const Config *c = &co->cfg;
    co->t0_ms = log_clock_ms();
    co->cpu0 = cpu_seconds();
    co->epochs = calloc((size_t)c->train_epochs, sizeof *co->epochs);
    co->recs = calloc((size_t)co->W, sizeof *co->recs);
    if (!co->epochs || !co->recs || stats_init(&co->st, c->train_steps_per_epoch) != 0)
        coord_fatal(co, "out of memory");
    co->ntensors = cfg_tensor_names(c, co->names, PROTO_MAX_TENSORS);
    proto_limits(&co->proto.lim, c, co->W);
    co->clip_ring = calloc((size_t)c->divergence_window, 1);
    co->slow_run = calloc((size_t)co->W, sizeof *co->slow_run);
    co->others = calloc((size_t)co->W, sizeof *co->others);
    if (!co->clip_ring || !co->slow_run || !co->others) coord_fatal(co, "out of memory");
    char err[512];
    int port = 0;
    co->metrics = metrics_start(c, co->W, co->names, co->ntensors, &port, err, sizeof err);
    if (co->metrics) {
        char host[CFG_HOST_LEN];
        cfg_parse_listen(c->metrics_listen, host, NULL, NULL); /* metrics_start took it */
        int loopback = !strncmp(host, "127.", 4);
        LOG(loopback ? LOG_INFO : LOG_WARN, "metrics: http://%s:%d/metrics%s", host, port,
            loopback ? "" : " (not loopback: reachable from other hosts)");
        write_metrics_addr(c, host, port);
    } else if (err[0]) {
        LOG(LOG_WARN, "%s: training without the metrics endpoint", err);
    }
    int epoch = 1, resumed = 0;
    co->next_step = 1;
    if (co->res.path[0]) epoch = resume_coordinator(&co->res, c, &co->st,
                                                     co->epochs, &co->epochs_done, &co->next_step,
                                                     &resumed, log_clock_ms());
    co->last_seq = co->res.path[0] ? co->res.seq : 0;
    if (co->res.path[0]) replay_totals(co);
    co->cur_epoch = epoch;
    LOG(LOG_INFO, "run '%s': %d workers, logs in %s%s", c->run_name, co->W, c->run_dir,
        co->res.path[0] ? " (resumed)" : "");
    if (resumed < 0) { /* resumed at an epoch's end: its record comes first */
        int ef = receive_epoch(co, epoch - 1);
        if (ef & EPOCH_ABORT) co->aborted = 1;
        if (ef & EPOCH_EARLY_STOP) co->early_stop = 1;
        resumed = 0;
    }
    for (; epoch <= c->train_epochs && !co->aborted && !co->stopped && !co->early_stop; epoch++) {
        if (sig_stop) { /* between epochs: the STOP below checkpoints */
            co->stopped = 1;
            break;
        }
        run_epoch(co, epoch, resumed);
        resumed = 0;
    }
    int done = !co->aborted && !co->stopped;
    /* A checkpoint at the end, unless the stopping step wrote one, the run
     * aborted, or no step ran at all in this session. */
    int wrote_in_step = co->stopped && (co->recs[0].flags & STEP_CHECKPOINT);
    int ckpt = !co->aborted && !wrote_in_step && co->steps_seen > 0;
    metrics_state(co->metrics, co->aborted ? "aborted" : co->stopped ? "stopped" : "finishing");
    int bad = finish(co, done, ckpt);
    SessionLine end = {"end", co->last_seq, co->next_step - 1, co->epochs_done, -1, NULL,
                       co->aborted ? "aborted" : co->stopped ? "stopped" : co->early_stop ? "early_stop" : "done", NAN};
    if (runlog_session(&co->log, &end) != 0)
        write_failed(co, "sessions.jsonl");
    if (co->metrics) {
        char addr[CFG_STR_MAX + 32];
        snprintf(addr, sizeof addr, "%s/metrics.addr", c->run_dir);
        unlink(addr);
    }
    metrics_stop(co->metrics);
    print_summary(co, (log_clock_ms() - co->t0_ms) / 1e3);
    stats_free(&co->st);
    free(co->epochs), free(co->recs), free(co->clip_ring), free(co->slow_run), free(co->others);
    runlog_close(&co->log);
    return co->aborted || bad ? 1 : 0;
}

/* Join the job only to tell the workers to exit with rc (help, version,
 * check, or bad input), so no rank waits forever. */
static int release_workers(int rc)
{
    static ConfigMsg msg;
    static Proto p;
    char err[256];
    MPI_Init(NULL, NULL);
    if (proto_open(&p, err, sizeof err) != 0) coord_fatal(NULL, "%s", err);
    MPI_Comm none;
    MPI_Comm_split(MPI_COMM_WORLD, MPI_UNDEFINED, 0, &none);
    msg.go = 0;
    msg.status = rc;
    if (proto_bcast_config(&p, &msg) != 0) coord_fatal(NULL, "start-up broadcast failed");
    proto_close(&p);
    MPI_Finalize();
    return rc;
}

/* Temporary files of writers that a crash killed before their rename (a
 * checkpoint, final.safetensors, a token file, a log being cut back): no
 * process writes in the run yet, so any there is stale. Only names that
 * clipd's own naming with this run's name proves it wrote
 * (`.NAME.tmp.clipd-RUN.PID`, fs_tmp_path) are deleted. Never read: the
 * readers only take complete, renamed files. */
static void remove_stale(const Config *c)
{
    static const char *const in_run[] = {CKDIR_STEP_GLOB, "final.safetensors", "tokens-*.u32", "vocab.txt",
                                         "*.jsonl", "config.yaml", "metrics.addr"};
    static const char *const in_ckpt[] = {CKDIR_STEP_GLOB};
    char dir[CFG_STR_MAX + 16], notes[4096], err[CFG_STR_MAX + 128];
    for (int k = 0; k < 2; k++) {
        if (k == 0) snprintf(dir, sizeof dir, "%s", c->run_dir);
        else cfg_checkpoint_dir(c, dir, sizeof dir);
        if (fs_remove_stale(dir, k ? in_ckpt : in_run, k ? 1 : (int)(sizeof in_run / sizeof *in_run), notes,
                            sizeof notes, err, sizeof err) < 0)
            LOG(LOG_WARN, "%s", err);
        for (char *line = strtok(notes, "\n"); line; line = strtok(NULL, "\n"))
            LOG(LOG_WARN, "%s (a temporary file left by an interrupted write)", line);
    }
}

/* Bytes this machine can still give: MemAvailable, or what the cgroup's
 * limit leaves if that is less (cgroup v2, then v1). 0 when unknown. */
static uint64_t mem_available(void)
{
    unsigned long long kb = 0, lim = 0, cur = 0;
    char line[256];
    FILE *f = fopen("/proc/meminfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    if (f) fclose(f);
    uint64_t avail = (uint64_t)kb * 1024;
    static const char *const lims[][2] = {{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"},
                                          {"/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                           "/sys/fs/cgroup/memory/memory.usage_in_bytes"}};
    for (int i = 0; i < 2; i++) {
        FILE *a = fopen(lims[i][0], "r"), *b = fopen(lims[i][1], "r");
        int ok = a && b && fscanf(a, "%llu", &lim) == 1 && fscanf(b, "%llu", &cur) == 1;
        if (a) fclose(a);
        if (b) fclose(b);
        if (ok && lim > cur && (!avail || lim - cur < avail)) avail = lim - cur;
        if (ok) break;
    }
    return avail;
}

/* The workers that will share this machine must fit in its memory:
 * `local` of them (the launch: the ranks Open MPI put on this node but the
 * coordinator; --check: one, and the total for W is said). */
static int check_memory(const Config *c, int W, int local, int dry, char *err, size_t errlen)
{
    uint64_t need = cfg_worker_bytes(c, W), avail = mem_available();
    const double gib = 1024.0 * 1024.0 * 1024.0;
    if (dry) fprintf(stderr, "clipd: memory: about %.3g GiB per worker, %.3g GiB for %d on one machine; "
                             "%.3g GiB available here\n", (double)need / gib, (double)need * W / gib, W,
                     (double)avail / gib);
    if (!avail || !local || (double)need * local <= (double)avail) return 0;
    snprintf(err, errlen, "memory: %d worker%s x about %.3g GiB (model.*, data.batch_per_worker, "
             "data.seq_len, train.optimizer, data.micro_batch) need %.3g GiB, this machine has %.3g GiB available",
             local, local == 1 ? "" : "s", (double)need / gib, (double)need * local / gib, (double)avail / gib);
    return -1;
}

/* A run on text with a test split evaluates it at the end, if every stream
 * of W x data.batch_per_worker gets at least one step. */
static void test_split_check(Coord *co, int W)
{
    const Config *c = &co->cfg;
    size_t n = 0;
    char why[512];
    if (text_split_tokens(c, TEXT_TEST, &n, why, sizeof why) != 0 || n == 0) return;
    uint64_t L = text_stream_len(n, (uint64_t)W * (uint64_t)c->data_batch_per_worker);
    co->test_at_end = L >= (uint64_t)c->data_seq_len;
    if (!co->test_at_end)
        LOG(LOG_WARN, "the test split (%zu tokens) is too short for %d workers x %d streams of data.seq_len %d: "
                      "no test evaluation at the end", n, W, c->data_batch_per_worker, c->data_seq_len);
}

/* train.steps_per_epoch: auto: text: one pass over the train split (every
 * stream's L tokens in steps of data.seq_len x train.accumulate), written
 * into the config; markov and adding: 100, and the config keeps saying auto. */
static int resolve_steps(Config *c, int W, char *err, size_t errlen)
{
    size_t n = 0;
    if (c->data_source != DATA_TEXT) return 0; /* auto stays: 100 steps */
    c->train_steps_auto = 0;
    if (text_split_tokens(c, TEXT_TRAIN, &n, err, errlen) != 0) return -1;
    uint64_t L = text_stream_len(n, (uint64_t)W * (uint64_t)c->data_batch_per_worker);
    uint64_t steps = L / ((uint64_t)c->data_seq_len * (uint64_t)c->train_accumulate);
    if (steps < 1 || steps > 1000000000)
        return snprintf(err, errlen, "train.steps_per_epoch: auto: the train split (%zu tokens, %llu per stream "
                        "with %d workers x %d streams) gives %llu steps of data.seq_len %d x train.accumulate %d",
                        n, (unsigned long long)L, W, c->data_batch_per_worker, (unsigned long long)steps,
                        c->data_seq_len, c->train_accumulate), -1;
    c->train_steps_per_epoch = (int)steps;
    return 0;
}

/* Every check a start makes before it changes anything in the run, for the
 * launch and for --check alike (dry: creates nothing, not even run.dir): the
 * resume point (every key and tensor the workers will read), run.dir and
 * checkpoint.dir, the data, the memory of the workers on this machine. W:
 * the job's workers; --check: --workers, else the checkpoint's global batch
 * over data.batch_per_worker, else 1. */
static int preflight(Coord *co, const Args *a, int W, int dry, char *err, size_t errlen)
{
    Config *c = &co->cfg;
    int aut = c->train_steps_auto;
    if (!a->resume && resume_check_fresh(c, err, errlen) != 0) return -1;
    if (aut && resolve_steps(c, W > 0 ? W : 1, err, errlen) != 0) return -1;
    if (a->resume && resume_find(&co->res, c, a->resume, W, err, errlen) != 0) return -1;
    if (W <= 0) W = co->res.global_batch ? (int)(co->res.global_batch / c->data_batch_per_worker) : 1;
    if (aut && W != 1 && a->resume) { /* --check: the checkpoint's worker count, now known */
        if (resolve_steps(c, W, err, errlen) != 0 || resume_find(&co->res, c, a->resume, W, err, errlen) != 0)
            return -1;
    }
    const char *ls = getenv("OMPI_COMM_WORLD_LOCAL_SIZE"); /* ranks on this node, the coordinator's too */
    int local = dry ? 1 : ls ? atoi(ls) - 1 : W; /* 0: the workers are all on other nodes */
    if (local < 0 || local > W) local = W;
    if (check_memory(c, W, local, dry, err, errlen) != 0) return -1;
    char ck[CFG_STR_MAX + 16];
    cfg_checkpoint_dir(c, ck, sizeof ck);
    if (dry ? fs_check_dir(c->run_dir, "run.dir", err, errlen) != 0
            : fs_mkdir_p(c->run_dir, "run.dir", err, errlen) != 0 ||
              fs_probe_writable(c->run_dir, "run.dir", err, errlen) != 0)
        return -1;
    if (dry ? fs_check_dir(ck, "checkpoint.dir", err, errlen) != 0
            : fs_mkdir_p(ck, "checkpoint.dir", err, errlen) != 0 ||
              fs_probe_writable(ck, "checkpoint.dir", err, errlen) != 0)
        return -1;
    if (runlog_check(c->run_dir, err, errlen) != 0) return -1;
    if (c->data_source != DATA_TEXT) return 0;
    /* run.overwrite: the old run's vocabulary must not be reused; set aside
     * until the data checks pass, so that a start that fails keeps it */
    char vocab[CFG_STR_MAX + 32], aside[CFG_STR_MAX + 64];
    snprintf(vocab, sizeof vocab, "%s/vocab.txt", c->run_dir);
    int over = !dry && !a->resume && c->run_overwrite && fs_tmp_path(aside, sizeof aside, vocab) == 0 &&
               rename(vocab, aside) == 0;
    int bad = (dry ? text_check : text_prepare)(c, W, err, errlen) != 0;
    if (over && bad) rename(aside, vocab);
    else if (over) unlink(aside);
    if (!bad && !dry) test_split_check(co, W);
    return bad ? -1 : 0; /* every data problem is found before a worker trains */
}

/* clipd --eval: the weights file holds every parameter this config needs
 * (dtype, shape), the split exists and gives each stream a step. */
static int eval_checks(Coord *co, const Args *a, int wsize, char *err, size_t errlen)
{
    Config *c = &co->cfg;
    if (wsize < 2) return snprintf(err, errlen, "no workers: launch it with clipd-launch ... --eval WEIGHTS"), -1;
    co->W = wsize - 1;
    for (int i = 0; i < LOG_FILES; i++) co->log.fd[i] = -1; /* no run logs are written */
    if (c->train_steps_auto && resolve_steps(c, co->W, err, errlen) != 0) return -1;
    Ckpt k;
    if (ckpt_read(&k, a->eval, err, errlen) != 0) return -1;
    char names[64][32];
    int n = cfg_tensor_names(c, names, 64), bad = 0;
    for (int i = 0; i < n && i < 64 && !bad; i++) {
        char name[48];
        long shape[2] = {0, 1};
        int nd = cfg_tensor_shape(c, i, shape);
        snprintf(name, sizeof name, "param.%.31s", names[i]);
        const CkEntry *e = ckpt_find(&k, name);
        bad = !e || e->dtype != CK_F32 || e->ndim != nd || e->shape[0] != shape[0] || (nd == 2 && e->shape[1] != shape[1]);
        if (bad)
            snprintf(err, errlen, "--eval %s: tensor '%s' %s, model.* needs F32 [%ld%s%.0ld]", a->eval, name,
                     e ? "has another dtype or shape" : "missing", shape[0], nd == 2 ? ", " : "", nd == 2 ? shape[1] : 0);
    }
    ckpt_free(&k);
    if (bad) return -1;
    proto_limits(&co->proto.lim, c, co->W);
    if (c->data_source != DATA_TEXT) return 0; /* data.valid_batches held-out batches */
    size_t nt = 0;
    if (text_split_tokens(c, a->split, &nt, err, errlen) != 0) return -1;
    if (a->split == TEXT_TEST && nt == 0)
        return snprintf(err, errlen, "--split test: data.path '%s' has no test.txt", c->data_path), -1;
    if (fs_mkdir_p(c->run_dir, "run.dir", err, errlen) != 0 || text_prepare(c, co->W, err, errlen) != 0) return -1;
    uint64_t L = text_stream_len(nt, (uint64_t)co->W * (uint64_t)c->data_batch_per_worker);
    if (L < (uint64_t)c->data_seq_len)
        return snprintf(err, errlen, "--split %s: %zu tokens, %llu per stream for %d workers x %d streams, fewer "
                        "than data.seq_len %d", a->split == TEXT_TEST ? "test" : "valid", nt,
                        (unsigned long long)L, co->W, c->data_batch_per_worker, c->data_seq_len), -1;
    return 0;
}

/* clipd --eval: the workers evaluate; print and append the result. */
static int eval_run(Coord *co, const Args *a)
{
    co->recs = calloc((size_t)co->W, sizeof *co->recs);
    if (!co->recs) coord_fatal(co, "out of memory");
    EpochRecord e = receive_eval(co);
    char json[1024];
    eval_fields(&co->cfg, co->W, json, sizeof json, "eval", a->eval, a->split, &e);
    int rc = 0;
    if (runlog_eval(co->cfg.run_dir, json) != 0) {
        LOG(LOG_ERROR, "cannot append to %s/eval.jsonl: %s", co->cfg.run_dir, strerror(errno));
        rc = 1;
    }
    rc |= finish(co, 0, 0);
    free(co->recs);
    return rc ? 1 : 0;
}

/* sessions.jsonl: a crash of the session before (it has a start and no
 * end: logged at its last step), then this start or resume. */
static void log_session_start(Coord *co, const Args *a, const SessionTail *tail)
{
    char path[PROTO_PATH_MAX * 2];
    SessionLine crash = {"crash", tail->seq, tail->step, tail->epoch, -1, NULL, NULL, tail->time};
    if (tail->open && tail->seq >= 0 && runlog_session(&co->log, &crash) != 0)
        write_failed(co, "sessions.jsonl");
    SessionLine start = {"start", 0, 0, 1, co->W, NULL, NULL, NAN};
    if (a->resume)
        start = (SessionLine){"resume", co->res.seq, co->res.step, co->res.epoch, co->W,
                              json_escape(path, sizeof path, co->res.path), NULL, NAN};
    if (runlog_session(&co->log, &start) != 0)
        write_failed(co, "sessions.jsonl");
}

/* Checks that need the job (workers present, then preflight), then the
 * changes a start makes in the run. */
static int job_checks(Coord *co, const Args *a, int wsize, char *err, size_t errlen)
{
    if (wsize < 2) {
        snprintf(err, errlen, "no workers: launch mpirun -np 1 clipd CONFIG : -np W clipd-worker");
        return -1;
    }
    co->W = wsize - 1;
    /* Every directory and every input is checked before anything in the run
     * changes: a start that fails leaves the logs and checkpoints as they were. */
    if (preflight(co, a, co->W, 0, err, errlen) != 0) return -1;
    LogKeep keep, *kp = NULL;
    if (a->resume) {
        keep = (LogKeep){co->res.seq, co->res.epoch_done ? co->res.epoch : co->res.epoch - 1,
                         !co->res.epoch_done};
        kp = &keep;
    }
    if (a->resume && resume_abandon_newer(&co->res, &co->cfg, err, errlen) != 0) return -1;
    if (!a->resume && co->cfg.run_overwrite && resume_clear_run(&co->cfg, err, errlen) != 0) return -1;
    remove_stale(&co->cfg);
    char addr[CFG_STR_MAX + 32]; /* an earlier job's (aborted, or one with metrics off now) */
    snprintf(addr, sizeof addr, "%s/metrics.addr", co->cfg.run_dir);
    if (unlink(addr) != 0 && errno != ENOENT) LOG(LOG_WARN, "cannot remove %s: %s", addr, strerror(errno));
    SessionTail tail = {0, -1, -1, 0, NAN};
    if (a->resume) tail = resume_last_session(&co->cfg); /* before the logs are cut back */
    if (runlog_open(&co->log, co->cfg.run_dir, kp, err, errlen) != 0) return -1;
    if (runlog_config(&co->log, &co->cfg, err, errlen) != 0) return -1;
    log_session_start(co, a, &tail);
    return 0;
}

/* MPI_Finalize waits for every rank: a worker stopped or lost after its
 * last record would hold the job (and its allocation) for good, past every
 * watchdog. With watchdog.seconds set, an alarm ends the coordinator after
 * that long with one line and exit 1 (mpirun then ends the other ranks); the
 * run's logs, checkpoints and weights are complete by then. */
static char fin_line[256];
static size_t fin_len;
static volatile sig_atomic_t fin_done; /* MPI_Finalize returned: a late alarm is ignored */

static void on_finalize_alarm(int s)
{
    (void)s;
    if (fin_done) return;
    ssize_t n = write(STDERR_FILENO, fin_line, fin_len);
    (void)n;
    _exit(1);
}

static void finalize_watched(const Config *c)
{
    if (c->watchdog_seconds > 0) {
        double t = ceil(c->watchdog_seconds);
        int n = snprintf(fin_line, sizeof fin_line, "clipd[0] error: MPI_Finalize: not every worker "
                         "finished within watchdog.seconds %g after the job's end (a worker stopped "
                         "or lost?): exit 1; the logs, checkpoints and weights written are complete\n",
                         c->watchdog_seconds);
        fin_len = n > 0 && (size_t)n < sizeof fin_line ? (size_t)n : strlen(fin_line);
        signal(SIGALRM, on_finalize_alarm);
        alarm(t < 1 ? 1 : t > 1e6 ? 1000000 : (unsigned)t);
    }
    MPI_Finalize();
    fin_done = 1;
    alarm(0);
}

int main(int argc, char **argv)
{
    static Coord co;
    static ConfigMsg msg;
    char err[2048] = "", note[256] = "";
    Args a;
    install_signals(); /* a signal during start-up must not kill the coordinator */
    launcher_pid = getppid();
    int rc = parse_args(&a, argc, argv, err, sizeof err) != 0 ? 2 : 0; /* bad usage: exit 2 */
    int train = rc == 0 && !a.answered && !a.check;
    if (rc == 0 && !a.answered) {
        rc = load_config(&co.cfg, &a, note, sizeof note, err, sizeof err) != 0 ? 2 : 0; /* bad input: exit 2 */
        if (rc == 0 && a.check) rc = preflight(&co, &a, a.workers, 1, err, sizeof err) != 0 ? 2 : 0;
        if (rc == 0 && a.check) cfg_print(&co.cfg, stdout);
    }
    if (!train) {
        if (rc) fprintf(stderr, "clipd: %s\n", err);
        fflush(stdout);
        return proto_launched_by_mpi() ? release_workers(rc) : rc;
    }
    MPI_Init(&argc, &argv);
    if (proto_open(&co.proto, err, sizeof err) != 0) coord_fatal(NULL, "%s", err);
    int wrank = co.proto.rank, wsize = co.proto.size;
    log_set_role("clipd", 0);
    if (wrank != 0) { /* bad usage: exit 2, and the message in clipd's words */
        fprintf(stderr, "clipd: the coordinator must be world rank 0 and alone: launch "
                        "mpirun -np 1 clipd CONFIG : -np W clipd-worker\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (rc == 0 && note[0]) LOG(LOG_INFO, "%s", note);
    fs_set_run_tag(co.cfg.run_name); /* temporaries carry the run's name */
    if (rc == 0 && (a.eval ? eval_checks(&co, &a, wsize, err, sizeof err) : job_checks(&co, &a, wsize, err, sizeof err)) != 0)
        rc = 2; /* every check before a start is of the input */
    MPI_Comm none;
    MPI_Comm_split(MPI_COMM_WORLD, MPI_UNDEFINED, 0, &none); /* workers split off their own */
    msg.go = rc == 0;
    msg.status = rc;
    msg.cfg = co.cfg;
    snprintf(msg.resume, sizeof msg.resume, "%s", co.res.path);
    snprintf(msg.eval, sizeof msg.eval, "%s", a.eval ? a.eval : "");
    msg.eval_split = a.split;
    msg.test_at_end = co.test_at_end;
    if (proto_bcast_config(&co.proto, &msg) != 0) coord_fatal(&co, "start-up broadcast failed");
    if (rc) {
        fprintf(stderr, "clipd: %s\n", err);
        proto_close(&co.proto);
        finalize_watched(&co.cfg);
        return rc;
    }
    rc = a.eval ? eval_run(&co, &a) : coordinate(&co);
    proto_close(&co.proto);
    finalize_watched(&co.cfg);
    return rc;
}
