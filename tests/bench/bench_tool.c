/* bench_tool: the numbers tests/bench/bench.sh needs besides the runs.
 *   bench_tool peak THREADS      cblas_sgemm peak GFLOP/s with THREADS OpenBLAS
 *                                threads: the best of square products of
 *                                1024, 1536 and 2048, each repeated for about
 *                                a second, best repetition counted.
 *   bench_tool model CONFIG W [--set k=v ...]
 *                                prints JSON: flops per optimizer step summed
 *                                over W workers (model_flops x accumulate x W),
 *                                tokens per step, parameters, and the analytic
 *                                minimum memory of one rank in bytes
 *                                (parameters, gradients, optimizer state, the
 *                                model's activations; sharded: the optimizer
 *                                state of one shard).
 *   bench_tool step CONFIG STEPS THREADS
 *                                median ms of model_step alone (forward and
 *                                backward of one worker's batch, no MPI, no
 *                                optimizer): the compute floor of a step.
 *   bench_tool repro CONFIG STEPS B MB
 *                                sync.reproducible's compute cost alone, with
 *                                1 thread and a batch of B: model_step and
 *                                repro_run with micro-batches of MB (the
 *                                path the probe picks) on the same batches,
 *                                alternating, so that load from elsewhere
 *                                hits both alike; prints JSON: each one's
 *                                median ms, the path, and their ratio. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "common/cfg.h"
#include "common/data.h"
#include "worker/model.h"
#include "worker/repro.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int peak(int threads)
{
    openblas_set_num_threads(threads);
    const int sizes[] = {1024, 1536, 2048};
    double best = 0;
    for (int s = 0; s < 3; s++) {
        int n = sizes[s];
        float *a = malloc((size_t)n * n * sizeof *a), *b = malloc((size_t)n * n * sizeof *b),
              *c = calloc((size_t)n * n, sizeof *c);
        if (!a || !b || !c) return fprintf(stderr, "bench_tool: out of memory\n"), 1;
        for (size_t i = 0; i < (size_t)n * n; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
        double t_end = now() + 1.0;
        do {
            double t0 = now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            double g = 2.0 * n * n * (double)n / (now() - t0) / 1e9;
            if (g > best) best = g;
        } while (now() < t_end);
        free(a), free(b), free(c);
    }
    printf("%.2f\n", best);
    return 0;
}

static int model(int argc, char **argv)
{
    Config c;
    char err[1024];
    cfg_defaults(&c);
    if (cfg_load_file(&c, argv[0], err, sizeof err) != 0) return fprintf(stderr, "%s\n", err), 2;
    int W = atoi(argv[1]);
    for (int i = 2; i < argc; i++) {
        const char *kv = argv[i];
        if (!strcmp(kv, "--set") && i + 1 < argc) kv = argv[++i];
        if (cfg_set_arg(&c, kv, err, sizeof err) != 0) return fprintf(stderr, "%s\n", err), 2;
    }
    if (W < 1 || cfg_validate(&c, err, sizeof err) != 0) return fprintf(stderr, "%s\n", err), 2;
    Model m;
    openblas_set_num_threads(1); /* as the bench's workers run: the packed weights' buffer counts */
    if (model_init(&m, &c, c.data_batch_per_worker) != 0) return fprintf(stderr, "out of memory\n"), 1;
    double flops = model_flops(&m) * c.train_accumulate * W;
    double tokens = (double)m.T * m.B * W * c.train_accumulate;
    double P = (double)m.nparams;
    double moments = c.train_optimizer == OPT_SGD ? (c.train_momentum > 0 ? 1 : 0) : 2;
    double shard = c.sync_mode == SYNC_SHARDED ? 1.0 / W : 1.0;
    /* model_init's buffers (parameters, gradients, activations) and the
     * optimizer state. */
    double bytes = 4 * ((double)m.nfloats + moments * P * shard);
    printf("{\"flops_per_step\":%.0f,\"tokens_per_step\":%.0f,\"params\":%.0f,"
           "\"min_bytes_per_rank\":%.0f}\n", flops, tokens, P, bytes);
    model_free(&m);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int step(const char *path, int steps, int threads)
{
    Config c;
    char err[1024];
    cfg_defaults(&c);
    if (cfg_load_file(&c, path, err, sizeof err) != 0 || cfg_validate(&c, err, sizeof err) != 0)
        return fprintf(stderr, "%s\n", err), 2;
    openblas_set_num_threads(threads);
    Model m;
    Batcher d;
    if (model_init(&m, &c, c.data_batch_per_worker) != 0 ||
        batcher_init(&d, &c, 0, c.data_batch_per_worker) != 0)
        return fprintf(stderr, "cannot set up the model or data\n"), 1;
    model_init_params(&m, 1, c.model_init_scale);
    batcher_epoch(&d, 1);
    double *ms = calloc((size_t)steps, sizeof *ms);
    if (!ms) return 1;
    for (int i = 0; i < steps; i++) {
        batcher_next(&d);
        model_zero_grad(&m);
        double t0 = now();
        model_step(&m, d.inputs, d.targets, d.features, d.ytarget, 1e-3f);
        ms[i] = (now() - t0) * 1e3;
    }
    qsort(ms, (size_t)steps, sizeof *ms, cmp_double);
    printf("%.4f\n", ms[steps / 2]);
    free(ms);
    batcher_free(&d);
    model_free(&m);
    return 0;
}

static int repro(const char *path, int steps, int B, int mb)
{
    Config c;
    char err[1024];
    cfg_defaults(&c);
    if (cfg_load_file(&c, path, err, sizeof err) != 0) return fprintf(stderr, "%s\n", err), 2;
    c.data_batch_per_worker = B, c.data_micro_batch = mb, c.sync_reproducible = 1;
    if (cfg_validate(&c, err, sizeof err) != 0) return fprintf(stderr, "%s\n", err), 2;
    openblas_set_num_threads(1);
    Model m[2];
    Batcher d;
    Repro r;
    if (model_init(&m[0], &c, B) != 0 || model_init(&m[1], &c, B) != 0 ||
        batcher_init(&d, &c, 0, B) != 0)
        return fprintf(stderr, "cannot set up the models or data\n"), 1;
    for (int k = 0; k < 2; k++) model_init_params(&m[k], 1, c.model_init_scale);
    if (repro_init(&r, &m[1], &c) != 0) return fprintf(stderr, "cannot set up repro\n"), 1;
    batcher_epoch(&d, 1);
    double *ms = calloc(2 * (size_t)steps, sizeof *ms);
    if (!ms) return 1;
    for (int i = 0; i < steps; i++) {
        batcher_next(&d);
        for (int o = 0; o < 2; o++) {
            int k = (i + o) % 2; /* alternate which goes first */
            double t0 = now();
            if (k == 0) {
                model_zero_grad(&m[0]);
                model_step(&m[0], d.inputs, d.targets, d.features, d.ytarget, 1e-3f);
            } else {
                repro_zero(&r, &m[1]);
                repro_run(&r, &m[1], &d, 1e-3f, 1);
            }
            ms[(size_t)k * steps + i] = (now() - t0) * 1e3;
        }
    }
    qsort(ms, (size_t)steps, sizeof *ms, cmp_double);
    qsort(ms + steps, (size_t)steps, sizeof *ms, cmp_double);
    double off = ms[steps / 2], on = ms[steps + steps / 2];
    printf("{\"step_ms_plain\":%.4f,\"step_ms_repro\":%.4f,\"path\":\"%s\",\"micro_batches\":%d,"
           "\"repro_vs_plain\":%.4f}\n", off, on,
           r.n == 1 ? "whole" : r.stacked ? "stacked" : "one by one", r.n, on / off);
    free(ms);
    repro_free(&r), batcher_free(&d), model_free(&m[0]), model_free(&m[1]);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "step")) return step(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc == 3 && !strcmp(argv[1], "peak")) return peak(atoi(argv[2]));
    if (argc == 6 && !strcmp(argv[1], "repro"))
        return repro(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    if (argc >= 4 && !strcmp(argv[1], "model")) return model(argc - 2, argv + 2);
    fprintf(stderr, "usage: bench_tool peak THREADS | bench_tool model CONFIG W [--set k=v ...] | "
                    "bench_tool step CONFIG STEPS THREADS | bench_tool repro CONFIG STEPS B MB\n");
    return 2;
}
