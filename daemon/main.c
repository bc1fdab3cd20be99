/* clipd: the coordinator daemon (world rank 0). It loads and validates the
 * config, sends it to the workers, schedules epochs, receives one record per
 * step per worker, writes steps/epochs/events JSON lines and prints a
 * summary. It never joins a gradient collective, and waits for messages
 * without spinning a core (non-blocking probe and a short sleep). */
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common/cfg.h"
#include "common/data.h"
#include "common/log.h"
#include "common/proto.h"
#include "common/rng.h"
#include "daemon/runlog.h"
#include "daemon/stats.h"

#define MAX_SETS 256

typedef struct {
    const char *config_path;
    const char *sets[MAX_SETS];
    int nsets, check;
} Args;

typedef struct {
    Config cfg;
    int W;
    RunLog log;
    EpochStats st;
    StepRecord *recs;        /* (W) this step's record from each worker */
    int64_t next_step;       /* next step to be written */
    long nonfinite, drift, write_errors;
    EpochSummary *epochs;    /* (train_epochs) */
    double t0_ms, cpu0;      /* wall clock and own cpu time at the first epoch */
} Coord;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
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
            "usage: mpirun -np 1 clipd CONFIG [--set section.key=value ...] : -np W clipd-worker\n"
            "       clipd --check CONFIG [--set section.key=value ...]\n"
            "Trains a recurrent network data-parallel on W workers with exact global-norm\n"
            "clipping; this process is the coordinator (world rank 0).\n"
            "  --check    validate CONFIG (and overrides) without MPI, print the effective config\n"
            "  --set k=v  override one config key, e.g. --set train.epochs=2\n"
            "  --help     this text\n  --version  print the version\n"
            "Exit codes: 0 success, 2 bad input (config, command line), 1 anything else.\n");
}

/* Returns -1 to go on, or an exit code. */
static int parse_args(Args *a, int argc, char **argv, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) return usage(stdout), 0;
        if (!strcmp(s, "--version")) return printf("clipd %s\n", CLIPD_VERSION), 0;
        if (!strcmp(s, "--check")) {
            a->check = 1;
        } else if (!strcmp(s, "--set") || !strncmp(s, "--set=", 6)) {
            const char *v = s[5] == '=' ? s + 6 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) return snprintf(err, errlen, "command line: --set needs section.key=value"), 2;
            if (a->nsets == MAX_SETS) return snprintf(err, errlen, "command line: more than %d --set", MAX_SETS), 2;
            a->sets[a->nsets++] = v;
        } else if (s[0] == '-' && s[1]) {
            return snprintf(err, errlen, "command line: unknown option '%s' (see --help)", s), 2;
        } else if (a->config_path) {
            return snprintf(err, errlen, "command line: unexpected argument '%s' after config '%s'", s, a->config_path), 2;
        } else {
            a->config_path = s;
        }
    }
    if (!a->config_path) return snprintf(err, errlen, "command line: missing CONFIG (see --help)"), 2;
    return -1;
}

static int load_config(Config *c, const Args *a, char *err, size_t errlen)
{
    cfg_defaults(c);
    if (cfg_load_file(c, a->config_path, err, errlen) != CFG_OK) return 2;
    for (int i = 0; i < a->nsets; i++)
        if (cfg_set_arg(c, a->sets[i], err, errlen) != CFG_OK) return 2;
    if (cfg_validate(c, err, errlen) != CFG_OK) return 2;
    return 0;
}

/* Wait for any message without burning a core: probe, then sleep, the nap
 * growing from 50 us to 2 ms while nothing arrives. Records are only
 * reported, never waited on by the workers, so the latency costs nothing. */
static void wait_message(int src, int tag, MPI_Status *st)
{
    int flag = 0;
    long nap_ns = 50000;
    for (;;) {
        MPI_Iprobe(src, tag, MPI_COMM_WORLD, &flag, st);
        if (flag) return;
        struct timespec nap = {0, nap_ns};
        nanosleep(&nap, NULL);
        if (nap_ns < 2000000) nap_ns *= 2;
    }
}

/* A write to run.dir failed (disk full, file removed): say so once, keep
 * training, and make the exit code 1. */
static void write_failed(Coord *co, const char *file)
{
    if (co->write_errors++ == 0)
        LOG(LOG_ERROR, "cannot write %s/%s: %s; training goes on, the exit code will be 1",
            co->cfg.run_dir, file, strerror(errno));
}

/* Every worker must report the same record but for its rank and timings. */
static int same_record(const StepRecord *a, const StepRecord *b)
{
    StepRecord x = *a, y = *b;
    x.wrank = y.wrank = 0;
    x.step_ms = y.step_ms = x.compute_ms = y.compute_ms = x.sync_ms = y.sync_ms = 0;
    return memcmp(&x, &y, sizeof x) == 0;
}

/* One record from each worker for step next_step, taken source by source:
 * MPI keeps each sender's messages in order, so no reordering across
 * workers can confuse the steps. Worker 0's record is the one logged. */
static void receive_step(Coord *co)
{
    double slowest = 0;
    for (int w = 0; w < co->W; w++) {
        MPI_Status st;
        StepRecord *r = &co->recs[w];
        wait_message(w + 1, TAG_STEP, &st);
        MPI_Recv(r, sizeof *r, MPI_BYTE, w + 1, TAG_STEP, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (r->step != co->next_step || r->wrank != w) {
            LOG(LOG_ERROR, "protocol error: worker %d sent step %lld as worker %d, expected step %lld",
                w, (long long)r->step, r->wrank, (long long)co->next_step);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (r->step_ms > slowest) slowest = r->step_ms;
        if (w > 0 && !same_record(&co->recs[0], r)) {
            co->drift++;
            LOG(LOG_ERROR, "step %lld: worker %d disagrees with worker 0", (long long)r->step, w);
            if (runlog_drift(&co->log, r->step, r->epoch, "step_record", w) != 0)
                write_failed(co, "events.jsonl");
        }
    }
    const StepRecord *r = &co->recs[0];
    if (runlog_step(&co->log, r, slowest) != 0) write_failed(co, "steps.jsonl");
    if (r->nonfinite) {
        co->nonfinite++;
        if (runlog_nonfinite(&co->log, r, co->nonfinite) != 0) write_failed(co, "events.jsonl");
        LOG(LOG_WARN, "step %lld: non-finite %s, update skipped", (long long)r->step,
            (r->nonfinite & 1) ? "loss" : "gradient");
    }
    stats_add(&co->st, r->loss, r->grad_norm, r->clipped, r->skipped, r->tokens);
    co->next_step++;
}

static void send_ctrl(Coord *co, const CtrlMsg *m)
{
    for (int r = 1; r <= co->W; r++) MPI_Send(m, sizeof *m, MPI_BYTE, r, TAG_CTRL, MPI_COMM_WORLD);
}

static double epoch_lr(const Config *c, int epoch)
{
    int k = epoch - c->train_lr_decay_start + 1;
    return k > 0 ? c->train_lr * pow(c->train_lr_decay, k) : c->train_lr;
}

static void run_epoch(Coord *co, int epoch)
{
    const Config *c = &co->cfg;
    CtrlMsg m = {CTRL_EPOCH, epoch, rng_derive((uint64_t)c->run_seed, 0xE90Cu, (uint64_t)epoch),
                 co->next_step, epoch_lr(c, epoch)};
    stats_begin(&co->st, epoch, now_ms());
    send_ctrl(co, &m);
    int64_t end = co->next_step + c->train_steps_per_epoch;
    while (co->next_step < end) receive_step(co);
    EpochSummary *e = &co->epochs[epoch - 1];
    stats_end(&co->st, now_ms(), e);
    if (runlog_epoch(&co->log, e) != 0) write_failed(co, "epochs.jsonl");
    LOG(LOG_INFO, "epoch %d/%d: train loss %.4f, clip rate %.3f, grad norm p50 %.3g max %.3g, %.0f tokens/s",
        epoch, c->train_epochs, e->train_loss, e->clip_rate, e->norm_p50, e->norm_max, e->tokens_per_s);
}

/* STOP, then one DoneMsg per worker once the final weights are on disk;
 * every worker must end with the same parameters after the same steps. */
static int finish(Coord *co)
{
    CtrlMsg m = {CTRL_STOP, 0, 0, co->next_step, 0};
    send_ctrl(co, &m);
    DoneMsg first = {0};
    int bad = 0;
    for (int w = 0; w < co->W; w++) {
        MPI_Status st;
        DoneMsg d;
        wait_message(w + 1, TAG_DONE, &st);
        MPI_Recv(&d, sizeof d, MPI_BYTE, w + 1, TAG_DONE, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (w == 0) first = d;
        if (d.status != 0) bad = 1;
        if (d.param_hash != first.param_hash || d.steps != co->next_step - 1) {
            co->drift++;
            LOG(LOG_ERROR, "worker %d ends with other parameters or steps than worker 0", w);
            if (runlog_drift(&co->log, co->next_step - 1, co->cfg.train_epochs, "final_params", w) != 0)
                write_failed(co, "events.jsonl");
        }
    }
    return bad || co->drift || co->write_errors;
}

static void print_summary(Coord *co, double seconds)
{
    const Config *c = &co->cfg;
    printf("\nclipd: run '%s' done: %d epochs, %lld steps, %d workers, %.1f s\n", c->run_name,
           c->train_epochs, (long long)(co->next_step - 1), co->W, seconds);
    printf("logs: %s/steps.jsonl %s/epochs.jsonl %s/events.jsonl\nweights: %s/final.safetensors\n",
           c->run_dir, c->run_dir, c->run_dir, c->run_dir);
    printf("%6s %11s %10s %10s %10s %12s\n", "epoch", "train_loss", "clip_rate", "norm_p50", "norm_max", "tokens/s");
    for (int e = 0; e < c->train_epochs; e++) {
        EpochSummary *s = &co->epochs[e];
        printf("%6d %11.4f %10.3f %10.4g %10.4g %12.0f\n", s->epoch, s->train_loss, s->clip_rate,
               s->norm_p50, s->norm_max, s->tokens_per_s);
    }
    double last = co->epochs[c->train_epochs - 1].train_loss;
    if (c->data_source == DATA_MARKOV) {
        Markov mk;
        /* Positions of an epoch's stream, capped so the sum costs at most
         * about 2e8 operations (a huge chain gives an early-time estimate). */
        double n = (double)c->train_steps_per_epoch * c->data_seq_len;
        if (n > 20000) n = 20000;
        if (markov_init(&mk, c->model_vocab, c->data_markov_order, c->data_markov_branch, data_chain_seed(c)) == 0) {
            double work = (double)mk.nctx * mk.branch;
            if (n * work > 2e8) n = fmax(1.0, floor(2e8 / work));
            double h = markov_entropy_rate(&mk, (long)n);
            printf("final train loss %.4f nats/token; source entropy %.4f (the floor), gap %.4f; uniform guess %.4f\n",
                   last, h, last - h, log((double)c->model_vocab));
            markov_free(&mk);
        }
    } else {
        printf("final train loss %.4f (mean squared error; predicting 1 scores about 0.167)\n", last);
    }
    double cpu = cpu_seconds() - co->cpu0;
    printf("non-finite steps %ld, replica mismatches %ld, log write errors %ld; "
           "coordinator cpu %.2f s over %.2f s\n",
           co->nonfinite, co->drift, co->write_errors, cpu, seconds);
    fflush(stdout);
}

static int coordinate(Coord *co)
{
    co->t0_ms = now_ms();
    co->cpu0 = cpu_seconds();
    co->next_step = 1;
    co->epochs = calloc((size_t)co->cfg.train_epochs, sizeof *co->epochs);
    co->recs = calloc((size_t)co->W, sizeof *co->recs);
    if (!co->epochs || !co->recs || stats_init(&co->st, co->cfg.train_steps_per_epoch) != 0) {
        LOG(LOG_ERROR, "out of memory");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    LOG(LOG_INFO, "run '%s': %d workers, logs in %s", co->cfg.run_name, co->W, co->cfg.run_dir);
    for (int e = 1; e <= co->cfg.train_epochs; e++) run_epoch(co, e);
    int bad = finish(co);
    print_summary(co, (now_ms() - co->t0_ms) / 1e3);
    stats_free(&co->st);
    free(co->epochs), free(co->recs);
    runlog_close(&co->log);
    return bad ? 1 : 0;
}

/* Join the job only to tell the workers to exit with rc (help, version,
 * check, or bad input), so no rank waits forever. */
static int release_workers(int rc)
{
    static ConfigMsg msg;
    MPI_Init(NULL, NULL);
    MPI_Comm none;
    MPI_Comm_split(MPI_COMM_WORLD, MPI_UNDEFINED, 0, &none);
    msg.go = 0;
    msg.status = rc;
    MPI_Bcast(&msg, sizeof msg, MPI_BYTE, 0, MPI_COMM_WORLD);
    MPI_Finalize();
    return rc;
}

int main(int argc, char **argv)
{
    static Coord co;
    static ConfigMsg msg;
    char err[1024] = "";
    Args a;
    int rc = parse_args(&a, argc, argv, err, sizeof err);
    int train = rc < 0 && !a.check;
    if (rc < 0) {
        rc = load_config(&co.cfg, &a, err, sizeof err);
        if (rc == 0 && a.check) cfg_print(&co.cfg, stdout);
    }
    if (!train) {
        if (rc) fprintf(stderr, "clipd: %s\n", err);
        fflush(stdout);
        return proto_launched_by_mpi() ? release_workers(rc) : rc;
    }
    MPI_Init(&argc, &argv);
    int wrank, wsize;
    MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
    MPI_Comm_size(MPI_COMM_WORLD, &wsize);
    log_set_role("clipd", 0);
    if (wrank != 0) {
        fprintf(stderr, "clipd: the coordinator must be world rank 0 and alone: launch "
                        "mpirun -np 1 clipd CONFIG : -np W clipd-worker\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (rc == 0 && wsize < 2) {
        snprintf(err, sizeof err, "no workers: launch mpirun -np 1 clipd CONFIG : -np W clipd-worker");
        rc = 2;
    }
    if (rc == 0 && runlog_open(&co.log, co.cfg.run_dir, err, sizeof err) != 0) rc = 2;
    MPI_Comm none;
    MPI_Comm_split(MPI_COMM_WORLD, MPI_UNDEFINED, 0, &none); /* workers split off their own */
    msg.go = rc == 0;
    msg.status = rc;
    msg.cfg = co.cfg;
    MPI_Bcast(&msg, sizeof msg, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rc) {
        fprintf(stderr, "clipd: %s\n", err);
        MPI_Finalize();
        return rc;
    }
    co.W = wsize - 1;
    rc = coordinate(&co);
    MPI_Finalize();
    return rc;
}
