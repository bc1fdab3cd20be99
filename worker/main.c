/* clipd-worker: one data-parallel training process. It receives the config
 * from the coordinator (world rank 0), trains on its slice of every global
 * batch, synchronises gradients and the global norm with the other workers
 * in their own communicator, applies clipping inside the optimizer's pass,
 * and reports one StepRecord per step to the coordinator. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "common/data.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/proto.h"
#include "common/safetensors.h"
#include "worker/clip.h"
#include "worker/model.h"
#include "worker/optim.h"
#include "worker/sync.h"

typedef struct {
    Config cfg;
    MPI_Comm comm;          /* the workers' communicator */
    int rank, W;            /* rank among the workers, number of workers */
    Model model;
    Batcher data;
    Optim opt;
    Sync sync;
    double *local, *global; /* (nstats) statistics before and after the collective */
    int64_t step;           /* global steps done */
    int64_t inject_nan_step;/* fault injection for tests: CLIPD_INJECT_NAN_STEP */
} Worker;

#define FATAL(...) \
    do { LOG(LOG_ERROR, __VA_ARGS__); MPI_Abort(MPI_COMM_WORLD, 1); exit(1); } while (0)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mpirun -np 1 clipd CONFIG [--set key=value ...] : -np W clipd-worker\n"
               "clipd-worker takes no config of its own: the coordinator (world rank 0) sends it.\n"
               "  --help     this text\n  --version  print the version\n");
}

/* worker.threads, lowered if the workers on this node times their threads
 * would exceed the node's cores (oversubscribed BLAS threads thrash). */
static int blas_threads(const Worker *w)
{
    MPI_Comm node;
    int local, lrank, want = w->cfg.worker_threads;
    MPI_Comm_split_type(w->comm, MPI_COMM_TYPE_SHARED, w->rank, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &local);
    MPI_Comm_rank(node, &lrank);
    MPI_Comm_free(&node);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int fit = cores > 0 ? (int)(cores / local) : want;
    if (fit < 1) fit = 1;
    if (want <= fit) return want;
    if (lrank == 0)
        LOG(LOG_WARN, "worker.threads %d x %d workers on this node > %ld cores: using %d BLAS "
                      "thread%s each", want, local, cores, fit, fit > 1 ? "s" : "");
    return fit;
}

static void worker_setup(Worker *w)
{
    const Config *c = &w->cfg;
    openblas_set_num_threads(blas_threads(w));
    int B = c->data_batch_per_worker;
    char err[512];
    if (w->rank == 0 && (fs_mkdir_p(c->run_dir, err, sizeof err) != 0 ||
                         fs_probe_writable(c->run_dir, err, sizeof err) != 0))
        FATAL("worker 0 writes the final weights, but %s (on several nodes, run.dir must be "
              "on a shared file system)", err);
    if (model_init(&w->model, c, B) != 0) FATAL("out of memory allocating the model");
    if (w->model.nviews > PROTO_MAX_TENSORS) FATAL("too many tensors (%d)", w->model.nviews);
    model_init_params(&w->model, (uint64_t)c->run_seed, c->model_init_scale);
    if (batcher_init(&w->data, c, w->rank * B, B) != 0) FATAL("out of memory allocating data");
    if (optim_init(&w->opt, c->train_optimizer, c->train_momentum, c->train_beta1,
                   c->train_beta2, c->train_eps, w->model.nparams) != 0)
        FATAL("out of memory allocating optimizer state");
    if (sync_init(&w->sync, w->comm, w->model.nparams, w->model.nviews) != 0)
        FATAL("cannot set up gradient sync for %zu parameters", w->model.nparams);
    w->local = calloc((size_t)w->sync.nstats, sizeof(double));
    w->global = calloc((size_t)w->sync.nstats, sizeof(double));
    if (!w->local || !w->global) FATAL("out of memory");
    const char *inj = getenv("CLIPD_INJECT_NAN_STEP"); /* tests: a NaN gradient at that step */
    w->inject_nan_step = inj ? atoll(inj) : 0;
    if (w->rank == 0)
        LOG(LOG_INFO, "%d workers, %zu parameters in %d tensors, %d BLAS threads each", w->W,
            w->model.nparams, w->model.nviews, openblas_get_num_threads());
}

static void train_step(Worker *w, const CtrlMsg *ctl, StepRecord *r)
{
    Model *m = &w->model;
    Batcher *d = &w->data;
    double t0 = now_ms();
    batcher_next(d);
    model_zero_grad(m);
    long terms = model_terms(m);
    float scale = (float)(1.0 / ((double)terms * w->W));
    double loss = model_step(m, d->inputs, d->targets, d->features, d->ytarget, scale);
    if (w->step + 1 == w->inject_nan_step && w->rank == w->W - 1) m->grads[m->nparams - 1] = NAN;
    double t1 = now_ms();
    if (sync_grads(&w->sync, m->grads, m, w->local) != 0) FATAL("gradient sync failed");
    w->local[ST_LOSS] = loss;
    w->local[ST_TERMS] = (double)terms;
    if (sync_stats(&w->sync, w->local, w->global) != 0) FATAL("statistics collective failed");
    double t2 = now_ms();
    memset(r, 0, sizeof *r);
    r->step = ++w->step;
    r->epoch = ctl->epoch;
    r->wrank = w->rank;
    r->loss = w->global[ST_LOSS] / w->global[ST_TERMS];
    r->grad_norm = clip_norm_from_sumsq(w->global[ST_SUMSQ]);
    r->max_abs = w->global[ST_MAXABS];
    r->lr = ctl->lr;
    r->nonfinite = (isfinite(r->loss) ? 0 : 1) |
                   (w->global[ST_NONFINITE] != 0 || !isfinite(r->grad_norm) ? 2 : 0);
    r->ntensors = m->nviews;
    for (int v = 0; v < m->nviews; v++) r->tensor_norm[v] = (float)sqrt(w->global[ST_TENSOR0 + v]);
    r->tokens = (int64_t)m->T * m->B * w->W;
    if (r->nonfinite) {
        r->skipped = 1; /* never poison the weights: every rank decides the same */
        r->clip_coef = NAN;
    } else {
        const Config *c = &w->cfg;
        ClipResult cr = clip_update(&w->opt, m->params, m->grads, m->views, m->nviews, m->nparams,
                                    w->global, c->clip_mode, c->clip_max_norm,
                                    c->clip_clip_value, ctl->lr);
        r->clip_coef = cr.coef;
        r->clipped = cr.clipped;
    }
    double t3 = now_ms();
    r->compute_ms = t1 - t0;
    r->sync_ms = t2 - t1;
    r->step_ms = t3 - t0;
}

static void write_weights(Worker *w)
{
    Model *m = &w->model;
    StTensor t[MODEL_MAX_VIEWS];
    for (int v = 0; v < m->nviews; v++) {
        ParamView *pv = &m->views[v];
        t[v] = (StTensor){pv->name, m->params + pv->off, pv->ndim, {pv->rows, pv->cols}};
    }
    char path[CFG_STR_MAX + 64], step[32], hash[32], err[512];
    snprintf(path, sizeof path, "%s/final.safetensors", w->cfg.run_dir);
    snprintf(step, sizeof step, "%lld", (long long)w->step);
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)cfg_hash(&w->cfg));
    StMeta meta[] = {{"format", "clipd-weights-1"}, {"step", step}, {"config_hash", hash}};
    if (st_write(path, t, m->nviews, meta, 3, err, sizeof err) != 0)
        FATAL("cannot write final weights: %s", err);
}

static void worker_loop(Worker *w)
{
    for (;;) {
        CtrlMsg ctl;
        MPI_Recv(&ctl, sizeof ctl, MPI_BYTE, 0, TAG_CTRL, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (ctl.type == CTRL_STOP) break;
        if (ctl.type != CTRL_EPOCH || ctl.first_step != w->step + 1)
            FATAL("protocol error: control %d for step %lld at step %lld", ctl.type,
                  (long long)ctl.first_step, (long long)w->step);
        batcher_epoch(&w->data, ctl.seed);
        model_reset_state(&w->model);
        for (int s = 0; s < w->cfg.train_steps_per_epoch; s++) {
            StepRecord r;
            train_step(w, &ctl, &r);
            MPI_Send(&r, sizeof r, MPI_BYTE, 0, TAG_STEP, MPI_COMM_WORLD);
        }
    }
    if (w->rank == 0) write_weights(w);
    MPI_Barrier(w->comm); /* the weights are on disk before anyone says done */
    DoneMsg done = {0, w->rank, w->step,
                    fnv1a64(w->model.params, w->model.nparams * sizeof(float), FNV1A64_INIT)};
    MPI_Send(&done, sizeof done, MPI_BYTE, 0, TAG_DONE, MPI_COMM_WORLD);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        /* Inside a job an argument is a mistake in the launch line; exiting
         * non-zero before MPI_Init makes mpirun end the whole job. */
        int in_job = proto_launched_by_mpi();
        if (!in_job && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
            return usage(stdout), 0;
        if (!in_job && !strcmp(argv[1], "--version"))
            return printf("clipd-worker %s\n", CLIPD_VERSION), 0;
        fprintf(stderr, "clipd-worker: unexpected argument '%s' (the config comes from the coordinator)\n", argv[1]);
        usage(stderr);
        return 2;
    }
    MPI_Init(&argc, &argv);
    int wrank;
    MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
    log_set_role("worker", wrank - 1);
    if (wrank == 0) {
        LOG(LOG_ERROR, "clipd-worker is world rank 0, where the coordinator belongs: launch "
                       "mpirun -np 1 clipd CONFIG : -np W clipd-worker");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    Worker w;
    memset(&w, 0, sizeof w);
    MPI_Comm_split(MPI_COMM_WORLD, 1, wrank, &w.comm);
    MPI_Comm_rank(w.comm, &w.rank);
    MPI_Comm_size(w.comm, &w.W);
    ConfigMsg msg;
    MPI_Bcast(&msg, sizeof msg, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (!msg.go) { /* the coordinator already said why */
        MPI_Comm_free(&w.comm);
        MPI_Finalize();
        return msg.status;
    }
    w.cfg = msg.cfg;
    worker_setup(&w);
    worker_loop(&w);
    free(w.local), free(w.global);
    sync_free(&w.sync), optim_free(&w.opt), batcher_free(&w.data), model_free(&w.model);
    MPI_Comm_free(&w.comm);
    MPI_Finalize();
    return 0;
}
