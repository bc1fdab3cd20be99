/* clipd-worker: one data-parallel training process. It receives the config
 * from the coordinator (world rank 0), trains on its slice of every global
 * batch, synchronises gradients and the global norm with the other workers
 * in their own communicator, applies clipping inside the optimizer's pass,
 * runs the divergence detector (identically on every worker) and acts on it,
 * writes checkpoints, and reports one StepRecord per step to the coordinator. */
#include <getopt.h>
#include <math.h>
#include <mpi.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "common/ckpt.h"
#include "common/fsutil.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/proto.h"
#include "common/proto_mpi.h"
#include "common/rng.h"
#include "common/text.h"
#include "worker/clip.h"
#include "worker/hooks.h"
#include "worker/rgemm.h"
#include "worker/safetensors.h"
#include "worker/steptime.h"
#include "worker/worker.h"

/* A memory-mapped data file that shrinks (truncated, rewritten in place)
 * under a running job raises SIGBUS on the next page read. Say which file
 * in one line (write(2): async-signal-safe), then let the signal kill the
 * worker as it would have: mpirun ends the job; no checkpoint is touched. */
static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    static char msg[4096 + 256];
    const char *path = text_map_path(si->si_addr), *parts[] = {
        "clipd-worker: bus error reading ", path ? path : "memory (not a data file)",
        path ? ": the file shrank or was rewritten under the running job (data files must not "
               "change while it runs); the job ends, checkpoints are intact\n"
             : "\n"};
    size_t n = 0;
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        for (const char *p = parts[i]; *p && n + 1 < sizeof msg; p++) msg[n++] = *p;
    ssize_t w = write(STDERR_FILENO, msg, n);
    (void)w, (void)sig; /* SA_RESETHAND: the faulting read runs again and the default action ends us */
}

static void catch_sigbus(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

/* mpirun (or the orted that started this worker) died, e.g. SIGKILL: the
 * job cannot end normally (a collective may wait forever for a rank that is
 * gone). A thread sees the parent change within 0.1 s and ends the worker;
 * a checkpoint being written stays a temporary file, removed at the next
 * start, so nothing that `--resume latest` takes is touched. */
static pid_t launcher_pid;

static void *watch_launcher(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec nap = {0, 100000000};
        nanosleep(&nap, NULL);
        if (getppid() != launcher_pid) {
            LOG(LOG_ERROR, "mpirun is gone (parent process %d exited): stopping", (int)launcher_pid);
            _exit(1);
        }
    }
    return NULL;
}

static void start_launcher_watch(void)
{
    pthread_t t;
    launcher_pid = getppid();
    if (pthread_create(&t, NULL, watch_launcher, NULL) == 0) pthread_detach(t);
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
    if (w->cfg.sync_reproducible == REPRO_TRUE && want > 1) { /* a product's bits depend on OpenBLAS's thread split */
        if (lrank == 0)
            LOG(LOG_WARN, "sync.reproducible: 1 BLAS thread per worker, not worker.threads %d "
                          "(OpenBLAS splits a product differently with more threads, which "
                          "changes its bits)", want);
        return 1;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int fit = cores > 0 ? (int)(cores / local) : want;
    if (fit < 1) fit = 1;
    if (want <= fit) return want;
    if (lrank == 0)
        LOG(LOG_WARN, "worker.threads %d x %d workers on this node > %ld cores: using %d BLAS "
                      "thread%s each", want, local, cores, fit, fit > 1 ? "s" : "");
    return fit;
}

static void detector_setup(Worker *w)
{
    const Config *c = &w->cfg;
    DetectParams p;
    detect_defaults(&p);
    p.window = c->divergence_window;
    p.warmup = c->divergence_warmup;
    p.loss_z = c->divergence_loss_zscore;
    p.loss_rel = c->divergence_loss_rel;
    p.norm_z = c->divergence_norm_zscore;
    p.norm_rel = c->divergence_norm_rel;
    p.loss_uniform = c->divergence_loss_uniform;
    p.loss_initial = c->divergence_loss_initial;
    p.norm_clip = c->divergence_norm_clip;
    p.reset_steps = c->divergence_reset_steps;
    p.reset_loss_rel = c->divergence_reset_loss_rel;
    p.reset_norm_rel = c->divergence_reset_norm_rel;
    p.ln_vocab = c->data_source == DATA_ADDING ? 0 : log((double)c->model_vocab);
    p.clip_max_norm = c->clip_mode == CLIP_GLOBAL_NORM || c->clip_mode == CLIP_PER_TENSOR ? c->clip_max_norm : 0;
    p.sat_rate = c->divergence_clip_saturation;
    p.clip_events = c->divergence_clip_events;
    p.val_patience = c->divergence_val_patience;
    p.val_rel = c->divergence_val_rel;
    if (detect_init(&w->det, &p) != 0) worker_fatal("cannot set up the divergence detector");
}

/* Which path sync.reproducible's micro-batches take (repro_init's probe), in
 * one line from worker 0. */
static void repro_report(const Worker *w)
{
    const Repro *r = &w->repro;
    int stacked = r->stacked, all = 0;
    MPI_Allreduce(&stacked, &all, 1, MPI_INT, MPI_SUM, w->comm);
    if (w->rank != 0) return;
    if (all == w->W)
        LOG(LOG_INFO, "sync.reproducible: %d micro-batches of %d streams per worker, stacked into "
                      "one batch of %d (probed: each row of this OpenBLAS's products has the same "
                      "bits either way)", r->n, r->mb, w->model.B);
    else
        LOG(LOG_INFO, "sync.reproducible: micro-batches of %d streams run one by one (slower) on %d "
                      "of %d workers: stacked into one batch of %d they would not give the same "
                      "bits (probe on worker 0: %zu of %zu values differ; on Haswell-class "
                      "OpenBLAS kernels data.micro_batch and the batch per worker must be "
                      "multiples of 12)", r->mb, w->W - all, w->W, w->model.B, r->differ,
            (size_t)r->n * (w->model.nparams + 1));
}

static void worker_setup(Worker *w)
{
    const Config *c = &w->cfg;
    openblas_set_num_threads(blas_threads(w));
    int B = c->data_batch_per_worker;
    char err[512];
    if (w->rank == 0 && (fs_mkdir_p(c->run_dir, "run.dir", err, sizeof err) != 0 ||
                         fs_probe_writable(c->run_dir, "run.dir", err, sizeof err) != 0))
        worker_fatal("worker 0 writes checkpoints and the final weights, but %s (on several "
                     "nodes, run.dir must be on a shared file system)", err);
    if (model_init(&w->model, c, B) != 0) worker_fatal("out of memory allocating the model");
    if (w->model.nviews > PROTO_MAX_TENSORS) worker_fatal("too many tensors (%d)", w->model.nviews);
    model_init_params(&w->model, (uint64_t)c->run_seed, c->model_init_scale);
    w->model.first_stream = w->rank * B;
    w->model.drop_seed = rng_derive((uint64_t)c->run_seed, 0xD409u, 0);
    if (batcher_init_split(&w->data, c, w->rank * B, B, w->W, TEXT_TRAIN) != 0)
        worker_fatal("cannot set up the training data: %s", w->data.err);
    if (batcher_init_split(&w->valid, c, w->rank * B, B, w->W,
                           c->data_valid_batches > 0 ? TEXT_VALID : TEXT_TRAIN) != 0)
        worker_fatal("cannot set up the validation data: %s", w->valid.err);
    size_t bucket = (size_t)c->sync_bucket_kb * 1024 / sizeof(float);
    Model *m = &w->model;
    int sparse = c->sync_sparse_embedding && m->emb; /* the embedding is the last view */
    if ((sparse ? sync_init_sparse(&w->sync, w->comm, m->nparams, m->nviews, bucket,
                                   (size_t)(m->emb - m->params), m->V, m->E)
                : sync_init(&w->sync, w->comm, m->nparams, m->nviews, bucket,
                            c->sync_mode == SYNC_SHARDED)) != 0)
        worker_fatal("cannot set up gradient sync for %zu parameters", w->model.nparams);
    if (c->sync_shared_memory) { /* auto: every worker on this node, replicated, dense */
        char why[256];
        int nmicro = c->sync_reproducible == REPRO_TRUE ? B / cfg_micro_batch(c) : 0;
        if (m->emb && !m->tied) /* only the rows of this step's tokens are non-zero */
            sync_shared_rows(&w->sync, (size_t)(m->emb - m->params), m->V, m->E);
        float *g = sync_shared_grads(&w->sync, nmicro, why, sizeof why);
        if (g) model_bind(m, NULL, g);
        else if (*why && w->rank == 0)
            LOG(LOG_WARN, "sync.shared_memory auto: every worker is on one node, but %s: gradients go "
                "as messages (slower; give the directory room, or set sync.shared_memory: off to "
                "silence this)", why);
    }
    if (c->sync_reproducible == REPRO_TRUE && (repro_init(&w->repro, &w->model, c) != 0 ||
                                 sync_set_reproducible(&w->sync, w->repro.n, w->repro.slot) != 0))
        worker_fatal("cannot set up sync.reproducible: %d micro-batches of %d streams, %zu "
                     "parameters", B / cfg_micro_batch(c), cfg_micro_batch(c), w->model.nparams);
    if (w->repro.n > 1) repro_report(w);
    /* Sharded: optimizer state for this worker's shard only; the update
     * covers [opt.base, opt.base + opt.n). */
    if (optim_init(&w->opt, c->train_optimizer, c->train_momentum, c->train_beta1,
                   c->train_beta2, c->train_eps,
                   w->sync.sharded ? w->sync.own_len : w->model.nparams) != 0)
        worker_fatal("out of memory allocating optimizer state");
    w->opt.base = w->sync.sharded ? w->sync.own_off : 0;
    w->opt.weight_decay = c->train_weight_decay;
    w->model.hook_ctx = &w->sync;
    w->local = calloc((size_t)w->sync.nstats, sizeof(double));
    w->global = calloc((size_t)w->sync.nstats, sizeof(double));
    if (!w->local || !w->global) worker_fatal("out of memory");
    detector_setup(w);
    sched_init(&w->sched);
    w->lr_scale = 1.0;
    if (state_init(w) != 0) worker_fatal("out of memory allocating snapshots");
    if (steptime_init(&w->times, 4096) != 0) worker_fatal("out of memory");
    char how[96], rec[64];
    if (w->sync.shm)
        snprintf(how, sizeof how, "through shared memory (one node)%s",
                 w->sync.sp_window ? ", embedding rows only where touched" : "");
    else snprintf(how, sizeof how, "in %d bucket%s", w->sync.nb, w->sync.nb == 1 ? "" : "s");
    if (w->model.wpack) snprintf(rec, sizeof rec, "with wh packed (%s kernel)", rgemm_name(rgemm_active()));
    else snprintf(rec, sizeof rec, "by OpenBLAS");
    if (w->rank == 0)
        LOG(LOG_INFO, "%d workers, %zu parameters in %d tensors, %d BLAS threads each (OpenBLAS core %s), "
            "recurrent products %s, sync %s %s", w->W, w->model.nparams, w->model.nviews,
            openblas_get_num_threads(), rgemm_blas_core(), rec, w->sync.sharded ? "sharded" : "replicated", how);
}

/* The action for the events of a step: the most severe of each kind's (each at
 * least its kind's minimum: a non-finite update never reaches the weights). */
static int resolve_action(const Config *c, unsigned events)
{
    int act = ACT_LOG;
    for (int k = 0; k < EV_COUNT; k++) {
        if (!(events & (1u << k))) continue;
        int a = cfg_event_action(c, k);
        if (a > act) act = a;
    }
    return act;
}

/* Worker 0 folds any request from the coordinator into this step's statistics. */
static void poll_requests(Worker *w)
{
    if (w->rank == 0) w->pending_req |= proto_poll_req(&w->proto);
}

static void hook_ready(void *ctx, size_t upto) { sync_ready(ctx, upto); }
static void hook_progress(void *ctx) { sync_progress(ctx); }

/* Forward, backward, gradient sync and the statistics collective. The last
 * micro-batch's backward starts the sync of each bucket as it completes
 * (not when a test hook will still change the gradient after backward). */
static void compute_step(Worker *w, StepRecord *r)
{
    Model *m = &w->model;
    Batcher *d = &w->data;
    double t0 = log_clock_ms();
    poll_requests(w);
    const int *rows;
    size_t roff, rwidth;
    int nrows = sync_rows(&w->sync, &rows, &roff, &rwidth); /* the rows the last sync made non-zero; others: 0 */
    if (w->repro.n > 1) repro_zero(&w->repro, m);
    else {
        if (w->repro.n) repro_clear(&w->repro); /* its one slot is m's gradient */
        if (nrows >= 0) model_zero_grad_rows(m, rows, nrows);
        else model_zero_grad(m);
    }
    /* train.accumulate micro-batches add into one gradient, clipped once. */
    int K = w->cfg.train_accumulate;
    long terms = model_terms(m) * K;
    float scale = (float)(1.0 / ((double)terms * w->W));
    double loss = 0;
    int hooked = hooks_gradient_due(w, w->step + 1);
    for (int k = 0; k < K; k++) {
        batcher_next(d);
        if (k == K - 1) hooks_batch(w, w->step + 1);
        m->drop_step = (w->seq + 1) * K + k; /* dropout masks: fresh per micro-batch, reproducible */
        int overlap = k == K - 1 && !hooked;
        if (overlap) sync_begin(&w->sync, m->grads, m);
        m->grad_ready = overlap ? hook_ready : NULL;
        m->progress = overlap ? hook_progress : NULL;
        if (w->repro.n) repro_run(&w->repro, m, d, scale, 1);
        else loss += model_step(m, d->inputs, d->targets, d->features, d->ytarget, scale);
    }
    hooks_gradient(w, w->step + 1);
    double t1 = log_clock_ms();
    steptime_mark(&w->times, PH_COMPUTE);
    w->local[ST_LOSS] = loss;
    if (w->repro.n) sync_micro_losses(&w->sync, w->local, w->repro.loss);
    w->local[ST_TERMS] = (double)terms;
    w->local[ST_REQ] = w->pending_req;
    w->pending_req = 0;
    /* The statistics ride along with the gradients' all-gather (stats phase: 0). */
    if (sync_grads_stats(&w->sync, m->grads, m, w->local, w->global) != 0)
        worker_fatal("gradient sync failed");
    steptime_mark(&w->times, PH_SYNC);
    r->compute_ms = t1 - t0;
    r->sync_ms = log_clock_ms() - t1;
    r->loss = w->global[ST_LOSS] / w->global[ST_TERMS];
    r->grad_norm = clip_norm_from_sumsq(w->global[ST_SUMSQ]);
    r->max_abs = w->global[ST_MAXABS];
    r->nonfinite = (isfinite(r->loss) ? 0 : 1) |
                   (w->global[ST_NONFINITE] != 0 || !isfinite(r->grad_norm) ? 2 : 0);
    r->ntensors = m->nviews;
    for (int v = 0; v < m->nviews; v++) r->tensor_norm[v] = (float)sqrt(w->global[ST_TENSOR0 + v]);
    r->tokens = (int64_t)m->T * m->B * w->W * K;
}

static void record_events(StepRecord *r, unsigned events, const EventInfo *info)
{
    r->events |= events;
    for (int k = 0; k < EV_COUNT; k++)
        if (events & (1u << k)) {
            r->info[k][0] = info[k].value, r->info[k][1] = info[k].baseline;
            r->info[k][2] = info[k].spread, r->info[k][3] = info[k].threshold;
            r->check[k] = info[k].check;
        }
}

/* Go back to the snapshot (the last checkpoint, or the epoch's start), lower
 * the learning rate and skip batches: PaLM's recipe for a loss spike. */
static void rollback(Worker *w, StepRecord *r)
{
    const Config *c = &w->cfg;
    state_restore(w);
    w->rollbacks++;
    w->lr_scale *= c->divergence_rollback_lr_factor;
    for (int i = 0; i < c->divergence_rollback_skip_batches; i++) batcher_next(&w->data);
    if (c->divergence_rollback_skip_batches > 0) model_reset_state(&w->model); /* state no longer matches the data */
    detect_reset(&w->det);
    r->rollback_to = w->step;
    r->rollbacks = w->rollbacks;
    if (w->rank == 0)
        LOG(LOG_WARN, "step %lld: rolled back to step %lld, lr x%.3g, %d batches skipped",
            (long long)r->step, (long long)w->step, w->lr_scale, c->divergence_rollback_skip_batches);
}

/* Every K steps the replicas compare a hash of their parameters and
 * optimizer state; all get the same gathered list, so all decide alike. */
static unsigned drift_check(Worker *w, EventInfo *info)
{
    int K = w->cfg.divergence_drift_check_every;
    if (K <= 0 || w->step % K != 0) return 0;
    uint64_t h = state_hash(w), *all = (uint64_t *)w->sync.all; /* W <= nstats doubles */
    MPI_Allgather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, w->comm);
    for (int r = 1; r < w->W; r++)
        if (all[r] != all[0]) {
            info[EV_REPLICA_DRIFT] = (EventInfo){(double)r, 0, 0, 0, CHK_CHECKSUM};
            return 1u << EV_REPLICA_DRIFT;
        }
    return 0;
}

/* sync.sparse_embedding with plain SGD and no weight decay: the update of
 * an embedding row with a zero gradient is p - lr * 0 = p, so only the
 * synced rows need the pass (momentum, Adam and weight decay move every
 * row: they keep the dense update, unless train.embedding_update is lazy,
 * which updates the synced rows only, moments included: other numbers). */
/* With the gradient's rows known (sync_rows), the update may leave the rows
 * nobody touched alone: plain SGD (their parameters would not move) or the
 * lazy update (their moments too). */
static int rows_update(const Config *c)
{
    return (c->train_optimizer == OPT_SGD && c->train_momentum == 0 && c->train_weight_decay == 0) ||
           c->train_embedding_update == EMB_LAZY;
}

/* Decide and apply: detector, action, update (or skip/rollback/abort). */
static void decide_step(Worker *w, StepRecord *r)
{
    const Config *c = &w->cfg;
    Model *m = &w->model;
    EventInfo info[EV_COUNT];
    int64_t step = w->step + 1;
    ClipResult cd = clip_decide(m->views, m->nviews, w->global, c->clip_mode, c->clip_max_norm,
                                c->clip_clip_value);
    unsigned ev = detect_step(&w->det, r->loss, r->grad_norm, cd.clipped && !r->nonfinite, info);
    record_events(r, ev, info);
    int act = resolve_action(c, ev);
    if (act == ACT_ROLLBACK && w->rollbacks >= c->divergence_max_rollbacks) act = ACT_ABORT;
    r->lr = sched_lr(c, &w->sched, step, w->epoch) * w->lr_scale;
    double lr = r->lr;
    lr *= hooks_lr(w, step);
    r->clip_coef = NAN;
    if (act == ACT_LOG) {
        /* The parameters the optimizer holds state for: all (replicated), or
         * the worker's shard, then gathered (sharded). */
        const int *rows;
        size_t roff, rwidth;
        int nrows = sync_rows(&w->sync, &rows, &roff, &rwidth);
        if (nrows >= 0 && rows_update(c)) /* rows nobody touched: left as they are (lazy: moments too) */
            clip_apply_update_rows(&w->opt, m->params, m->grads, m->views, m->nviews, 0, roff, rows,
                                   nrows, rwidth, w->global, c->clip_mode, c->clip_max_norm,
                                   c->clip_clip_value, lr, &cd);
        else
            clip_apply_update(&w->opt, m->params, m->grads, m->views, m->nviews, w->opt.base,
                              w->opt.base + w->opt.n, w->global, c->clip_mode, c->clip_max_norm,
                              c->clip_clip_value, lr, &cd);
        if (w->sync.sharded && sync_params(&w->sync, m->params) != 0)
            worker_fatal("parameter all-gather failed");
        r->clip_coef = cd.coef;
        r->clipped = cd.clipped;
    } else {
        r->skipped = 1;
    }
    if (r->nonfinite) w->nonfinite++;
    if (act != ACT_ROLLBACK && act != ACT_ABORT) {
        w->step++, w->epoch_step++;
        hooks_params(w);
        unsigned dv = drift_check(w, info);
        if (dv) {
            record_events(r, dv, info);
            int da = resolve_action(c, dv);
            if (da == ACT_ROLLBACK && w->rollbacks >= c->divergence_max_rollbacks) da = ACT_ABORT;
            if (da > act) act = da;
        }
    }
    r->action = act;
    r->rollbacks = w->rollbacks;
    if (act == ACT_ROLLBACK) rollback(w, r);
    if (act == ACT_ABORT) r->flags |= STEP_ABORT;
}

/* One step; returns the flags that end the epoch loop early. */
static int train_step(Worker *w, StepRecord *r)
{
    double t0 = log_clock_ms();
    steptime_begin(&w->times);
    memset(r, 0, sizeof *r);
    r->wrank = w->rank;
    r->epoch = w->epoch;
    compute_step(w, r);
    r->seq = ++w->seq;
    r->step = w->step + 1;
    decide_step(w, r);
    steptime_mark(&w->times, PH_UPDATE);
    int req = (int)w->global[ST_REQ];
    int due = w->cfg.checkpoint_every_steps > 0 && r->action != ACT_ROLLBACK &&
              w->step % w->cfg.checkpoint_every_steps == 0;
    if (!(r->flags & STEP_ABORT) && (due || req)) {
        char err[512];
        if (state_checkpoint(w, err, sizeof err) == 0) {
            r->flags |= STEP_CHECKPOINT;
        } else {
            /* Every worker has worker 0's message and the same policy. */
            int stop = w->cfg.checkpoint_on_failure == CKFAIL_ABORT;
            r->flags |= STEP_CKPT_FAILED | (stop ? STEP_ABORT : 0);
            snprintf(r->ckpt_error, sizeof r->ckpt_error, "%s", err);
            if (w->rank == 0)
                LOG(LOG_ERROR, "checkpoint at step %lld failed: %s (checkpoint.on_failure: %s)",
                    (long long)w->step, err, stop ? "abort" : "continue");
        }
    }
    if (req & REQ_STOP) r->flags |= STEP_STOPPING;
    if (w->epoch_step == w->cfg.train_steps_per_epoch) r->flags |= STEP_EPOCH_LAST;
    r->step_ms = log_clock_ms() - t0;
    return r->flags & (STEP_STOPPING | STEP_ABORT);
}

/* RUN_DIR/<name>: the parameters as `param.<name>` tensors, with metadata. */
static int write_params(Worker *w, const char *name, const StMeta *extra, int nextra, char *err, size_t errlen)
{
    Model *m = &w->model;
    StTensor t[MODEL_MAX_VIEWS];
    char names[MODEL_MAX_VIEWS][48];
    for (int v = 0; v < m->nviews; v++) {
        ParamView *pv = &m->views[v];
        snprintf(names[v], sizeof names[v], "param.%s", pv->name);
        t[v] = (StTensor){names[v], m->params + pv->off, pv->ndim, {pv->rows, pv->cols}};
    }
    char path[CFG_STR_MAX + 64], step[32], hash[32];
    snprintf(path, sizeof path, "%s/%s", w->cfg.run_dir, name);
    snprintf(step, sizeof step, "%lld", (long long)w->step);
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)cfg_hash(&w->cfg));
    StMeta meta[8] = {{"format", "clipd-weights-1"}, {"step", step}, {"config_hash", hash}};
    for (int i = 0; i < nextra && i < 5; i++) meta[3 + i] = extra[i];
    return st_write(path, t, m->nviews, meta, 3 + (nextra < 5 ? nextra : 5), err, errlen);
}

/* checkpoint.keep_best: worker 0 writes RUN_DIR/best.safetensors when this
 * epoch's validation loss is the lowest yet (every worker tracks it alike);
 * never rotated out. A failed write is logged; training goes on. */
static void keep_best(Worker *w, double val_loss)
{
    if (!w->cfg.checkpoint_keep_best || !isfinite(val_loss) || val_loss >= w->best_val) return;
    w->best_val = val_loss;
    if (w->rank != 0) return;
    char ep[32], vl[40], err[512];
    snprintf(ep, sizeof ep, "%d", w->epoch);
    snprintf(vl, sizeof vl, "%.17g", val_loss);
    StMeta extra[] = {{"epoch", ep}, {"val_loss", vl}};
    if (write_params(w, "best.safetensors", extra, 2, err, sizeof err) != 0)
        LOG(LOG_ERROR, "checkpoint.keep_best: cannot write best.safetensors: %s", err);
    else
        LOG(LOG_INFO, "epoch %d: best validation loss so far (%.4f): best.safetensors", w->epoch, val_loss);
}

/* A resumed run continues from the best its earlier sessions kept. */
static void best_resume(Worker *w)
{
    char path[CFG_STR_MAX + 32], err[512];
    Ckpt k;
    snprintf(path, sizeof path, "%s/best.safetensors", w->cfg.run_dir);
    if (!w->cfg.checkpoint_keep_best || access(path, F_OK) != 0 || ckpt_read(&k, path, err, sizeof err) != 0) return;
    const char *v = ckpt_meta(&k, "val_loss");
    char *end = NULL;
    double x = v ? strtod(v, &end) : NAN;
    if (end && !*end && isfinite(x)) w->best_val = x;
    ckpt_free(&k);
}

/* The mean of the workers' loss sums over nb global batches, in the
 * fixed-order statistics collective (micro: sync.reproducible's loss per
 * micro-batch, added in global order; else NULL: one sum per worker, which
 * under sync.reproducible goes into the worker's first micro-batch slot);
 * *tokens: the targets counted. */
static double reduce_loss(Worker *w, double sum, const double *micro, long nb, int64_t *tokens)
{
    memset(w->local, 0, (size_t)w->sync.nstats * sizeof(double));
    w->local[ST_LOSS] = sum;
    if (micro) sync_micro_losses(&w->sync, w->local, micro);
    else if (w->sync.nmicro) /* reproducible, one sum per worker: the loss is the sum of the slots */
        w->local[w->sync.loss0 + w->rank * w->sync.nmicro] = sum;
    w->local[ST_TERMS] = (double)model_terms(&w->model) * (double)nb;
    if (sync_stats(&w->sync, w->local, w->global) != 0) worker_fatal("evaluation collective failed");
    *tokens = (int64_t)model_terms(&w->model) * w->W * nb;
    return w->global[ST_TERMS] > 0 ? w->global[ST_LOSS] / w->global[ST_TERMS] : NAN;
}

/* Mean loss over data.valid_batches held-out global batches (the same
 * streams every epoch), forward only, in fixed-order collectives. */
static double validate(Worker *w, int64_t *tokens)
{
    int nb = w->cfg.data_valid_batches;
    *tokens = 0;
    if (nb <= 0) return NAN;
    Batcher *v = &w->valid;
    batcher_epoch(v, rng_derive((uint64_t)w->cfg.run_seed, 0x7A11Du, 0));
    state_hold_hidden(w, 1); /* checkpoints carry the training state, not validation's */
    model_reset_state(&w->model);
    if (w->repro.n) repro_clear(&w->repro);
    double sum = 0;
    for (int i = 0; i < nb; i++) {
        batcher_next(v);
        if (w->repro.n) repro_run(&w->repro, &w->model, v, 0, 0);
        else sum += model_eval(&w->model, v->inputs, v->targets, v->features, v->ytarget);
    }
    state_hold_hidden(w, 0);
    double loss = reduce_loss(w, sum, w->repro.n ? w->repro.loss : NULL, nb, tokens);
    *tokens = (int64_t)w->model.T * w->model.B * w->W * nb;
    return loss;
}

/* Mean loss over a whole split (text: every stream's floor(L / T) steps
 * from offset 0, the hidden state carried, forward only, no dropout);
 * markov and adding: data.valid_batches held-out batches. */
static double eval_split(Worker *w, int split, int64_t *tokens)
{
    const Config *c = &w->cfg;
    int B = c->data_batch_per_worker;
    if (c->data_source != DATA_TEXT) return validate(w, tokens);
    Batcher b;
    if (batcher_init_split(&b, c, w->rank * B, B, w->W, split) != 0)
        worker_fatal("cannot set up the evaluation data: %s", b.err);
    batcher_epoch(&b, 0);
    model_reset_state(&w->model);
    long steps = (long)(b.stream_len / (uint64_t)b.T);
    double sum = 0;
    for (long i = 0; i < steps; i++) {
        batcher_next(&b);
        sum += model_eval(&w->model, b.inputs, b.targets, NULL, NULL);
    }
    batcher_free(&b);
    return reduce_loss(w, sum, NULL, steps, tokens);
}

/* The parameters of a checkpoint or weights file (`param.<name>` tensors). */
static int load_params(Worker *w, const char *path, int64_t *step, char *err, size_t errlen)
{
    Ckpt k;
    Model *m = &w->model;
    if (ckpt_read(&k, path, err, errlen) != 0) return -1;
    int rc = 0;
    for (int v = 0; v < m->nviews && !rc; v++) {
        char name[64];
        snprintf(name, sizeof name, "param.%s", m->views[v].name);
        rc = ckpt_get(&k, name, CK_F32, m->params + m->views[v].off, m->views[v].n, err, errlen);
    }
    const char *s = ckpt_meta(&k, "step");
    *step = s ? strtoll(s, NULL, 10) : 0;
    ckpt_free(&k);
    return rc;
}

/* clipd --eval, or the test split at the end: evaluate the weights of path
 * (NULL: the parameters as they are), and worker 0 sends the result as an
 * EpochRecord (val_loss, val_tokens, step: of the weights). */
static void eval_send(Worker *w, const char *path, int split, int epoch)
{
    char err[1024];
    int64_t step = w->step;
    if (path && load_params(w, path, &step, err, sizeof err) != 0) worker_fatal("cannot evaluate: %s", err);
    EpochRecord e;
    memset(&e, 0, sizeof e);
    e.epoch = epoch;
    e.action = ACT_LOG;
    e.step = step < 0 ? 0 : step;
    e.val_loss = eval_split(w, split, &e.val_tokens);
    e.seq = path != NULL; /* an evaluation's record: 1 when the weights came from a file */
    if (w->rank == 0 && proto_send_epoch(&w->proto, &e) != 0) worker_fatal("epoch record send failed");
}

/* End of an epoch: validation, epoch-level events, schedule, early stop. */
static int epoch_end(Worker *w)
{
    EpochRecord e;
    EventInfo info[EV_COUNT];
    memset(&e, 0, sizeof e);
    e.epoch = w->epoch;
    e.val_loss = validate(w, &e.val_tokens);
    keep_best(w, e.val_loss);
    int clip_on = w->cfg.clip_mode != CLIP_NONE;
    e.events = detect_epoch_end(&w->det, clip_on, e.val_loss, info);
    for (int k = 0; k < EV_COUNT; k++)
        if (e.events & (1u << k)) {
            e.info[k][0] = info[k].value, e.info[k][1] = info[k].baseline;
            e.info[k][2] = info[k].spread, e.info[k][3] = info[k].threshold;
            e.check[k] = info[k].check;
        }
    e.action = resolve_action(&w->cfg, e.events);
    if (e.action != ACT_ABORT) e.action = ACT_LOG; /* nothing to skip or roll back at an epoch's end */
    if (e.action == ACT_ABORT) e.flags |= EPOCH_ABORT;
    e.lr = sched_lr(&w->cfg, &w->sched, w->step, w->epoch) * w->lr_scale;
    if (sched_epoch_end(&w->cfg, &w->sched, e.val_loss)) e.flags |= EPOCH_EARLY_STOP;
    e.step = w->step, e.seq = w->seq;
    w->epoch_done = 1;
    if (w->rank == 0 && proto_send_epoch(&w->proto, &e) != 0) worker_fatal("epoch record send failed");
    return e.flags & EPOCH_ABORT;
}

static void start_epoch(Worker *w, const CtrlMsg *ctl)
{
    if (ctl->epoch == w->epoch && !w->epoch_done) return; /* resumed inside this epoch */
    w->epoch = ctl->epoch;
    w->epoch_step = 0;
    w->epoch_done = 0;
    w->epoch_seq0 = w->seq;
    batcher_epoch(&w->data, ctl->seed);
    batcher_shift(&w->data, ctl->epoch > 1 ? ctl->seed : 0); /* text: no tail left out for good */
    model_reset_state(&w->model);
    detect_reset(&w->det); /* the first steps of an epoch start from a zero hidden state */
    state_snapshot(w); /* a rollback never crosses an epoch boundary */
}

static int write_weights(Worker *w, char *err, size_t errlen)
{
    if (write_params(w, "final.safetensors", NULL, 0, err, errlen) != 0) {
        LOG(LOG_ERROR, "cannot write the final weights: %s", err);
        return -1;
    }
    return 0;
}

/* Step records go to the coordinator without waiting for it (it naps up
 * to 2 ms between polls): a ring of PROTO_STEP_RING records in flight
 * (proto_step_slot), each slot waited for before it is filled again; MPI
 * keeps one sender's messages in order. The sends are synchronous, so the
 * workers run at most PROTO_STEP_RING steps ahead of the coordinator, as its
 * stop and checkpoint requests and its logs expect. */
/* Epochs until the coordinator says stop; returns the STOP message. */
static CtrlMsg worker_loop(Worker *w)
{
    for (;;) {
        CtrlMsg ctl;
        if (proto_recv_ctrl(&w->proto, &ctl) != 0) worker_fatal("control message receive failed");
        if (ctl.type == CTRL_STOP) {
            if (proto_flush_steps(&w->proto) != 0) worker_fatal("step record send failed");
            return ctl;
        }
        if (ctl.type != CTRL_EPOCH) worker_fatal("protocol error: control type %d", ctl.type);
        start_epoch(w, &ctl);
        int stop = 0;
        while (!stop && w->epoch_step < w->cfg.train_steps_per_epoch) {
            int64_t seq = w->seq; /* train_step counts it */
            StepRecord *r = proto_step_slot(&w->proto, seq);
            if (!r) worker_fatal("step record send failed");
            stop = train_step(w, r);
            if (proto_send_step(&w->proto, seq) != 0) worker_fatal("step record send failed");
            steptime_mark(&w->times, PH_RECORD);
            steptime_end(&w->times);
        }
        if (!stop) epoch_end(w);
    }
}


static void worker_finish(Worker *w, const CtrlMsg *stop)
{
    static DoneMsg done;
    done.status = 0;
    if (stop->checkpoint && state_checkpoint(w, done.error, sizeof done.error) != 0) {
        if (w->rank == 0) LOG(LOG_ERROR, "final checkpoint failed: %s", done.error);
        done.status = 1;
    }
    char err[PROTO_ERR_MAX];
    if (stop->final && w->rank == 0 && write_weights(w, err, sizeof err) != 0) {
        if (!done.status) snprintf(done.error, sizeof done.error, "%s", err);
        done.status = 1;
    }
    if (stop->final && w->test_at_end) { /* the best weights if kept, else these final ones */
        char best[CFG_STR_MAX + 32];
        snprintf(best, sizeof best, "%s/best.safetensors", w->cfg.run_dir);
        eval_send(w, w->cfg.checkpoint_keep_best && isfinite(w->best_val) ? best : NULL, TEXT_TEST,
                  w->epoch < 1 ? 1 : w->epoch);
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) /* for make bench: memory against the analytic minimum */
        LOG(LOG_INFO, "peak RSS %ld KiB", ru.ru_maxrss);
    char line[512]; /* for make bench: where the median step goes, by this worker's timers */
    steptime_format(&w->times, w->times.n / 10, line, sizeof line);
    double red, gath; /* and what the overlap hid (timing-dependent, like the rest of the line) */
    sync_overlap_counts(&w->sync, &red, &gath);
    if (w->sync.shm)
        LOG(LOG_INFO, "%s; sync through shared memory after backward", line);
    else
        LOG(LOG_INFO, "%s; buckets reduced during backward %.1f of %d, all-gathered %.1f (mean a step)",
            line, red, w->sync.nb, gath);
    if (w->sync.sp_rows && !w->sync.sp_window) {
        double sparse, dense;
        sync_sparse_bytes(&w->sync, &sparse, &dense);
        LOG(LOG_INFO, "sparse embedding: %.1f of %d rows a step on average; received %.0f bytes a "
            "step for embed.weight instead of %.0f dense: %.0f saved", w->sync.sp_steps ?
            w->sync.sp_rows_sum / (double)w->sync.sp_steps : 0.0, w->sync.sp_rows, sparse, dense,
            dense - sparse);
    }
    MPI_Barrier(w->comm); /* the files are on disk before anyone says done */
    poll_requests(w);     /* drop requests that came too late to matter */
    done.wrank = w->rank;
    done.steps = w->step;
    done.param_hash = hash_words(w->model.params, w->model.nparams * sizeof(float), FNV1A64_INIT);
    if (proto_send_done(&w->proto, &done) != 0) worker_fatal("done message send failed");
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        /* Inside a job an argument is a mistake in the launch line; exiting
         * non-zero before MPI_Init makes mpirun end the whole job. */
        static const struct option opts[] = {
            {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
        opterr = 0; /* the message is ours */
        int o = proto_launched_by_mpi() ? '?' : getopt_long(argc, argv, "+h", opts, NULL);
        if (o == 'h') return usage(stdout), 0;
        if (o == 'V') return printf("clipd-worker %s\n", CLIPD_VERSION), 0;
        fprintf(stderr, "clipd-worker: unexpected argument '%s' (the config comes from the coordinator)\n", argv[1]);
        usage(stderr);
        return 2;
    }
    /* mpirun forwards SIGUSR1/2 to every rank; only the coordinator acts on them. */
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN); /* stderr is a pipe to mpirun: a write after it died fails, no more */
    start_launcher_watch();
    MPI_Init(&argc, &argv);
    static Worker w;
    static ConfigMsg msg;
    char err[1024];
    if (proto_open(&w.proto, err, sizeof err) != 0) worker_fatal("%s", err);
    int wrank = w.proto.rank;
    log_set_role("worker", wrank - 1);
    if (wrank == 0) {
        LOG(LOG_ERROR, "clipd-worker is world rank 0, where the coordinator belongs: launch "
                       "mpirun -np 1 clipd CONFIG : -np W clipd-worker");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    MPI_Comm_split(MPI_COMM_WORLD, 1, wrank, &w.comm);
    MPI_Comm_rank(w.comm, &w.rank);
    MPI_Comm_size(w.comm, &w.W);
    if (proto_bcast_config(&w.proto, &msg) != 0) worker_fatal("start-up broadcast failed");
    if (!msg.go) { /* the coordinator already said why */
        MPI_Comm_free(&w.comm);
        proto_close(&w.proto);
        MPI_Finalize();
        return msg.status;
    }
    w.cfg = msg.cfg;
    catch_sigbus(); /* after MPI_Init, whose handler prints a backtrace that names no file */
    worker_setup(&w);
    if (msg.resume[0] && state_resume(&w, msg.resume, err, sizeof err) != 0)
        worker_fatal("cannot resume: %s", err);
    if (msg.resume[0] && w.epoch > 1) batcher_shift(&w.data, data_epoch_seed(&w.cfg, w.epoch));
    w.best_val = INFINITY;
    w.test_at_end = msg.test_at_end;
    if (msg.resume[0]) best_resume(&w);
    if (msg.eval[0]) eval_send(&w, msg.eval, msg.eval_split, 1);
    /* Resumed from the last step of an epoch whose end was not yet applied:
     * apply it now, as the uninterrupted run did right after that step. */
    if (msg.resume[0] && w.epoch_step == w.cfg.train_steps_per_epoch && !w.epoch_done)
        epoch_end(&w);
    CtrlMsg stop = worker_loop(&w);
    worker_finish(&w, &stop);
    free(w.local), free(w.global);
    state_free(&w), detect_free(&w.det), steptime_free(&w.times);
    repro_free(&w.repro), sync_free(&w.sync), optim_free(&w.opt), batcher_free(&w.valid), batcher_free(&w.data);
    model_free(&w.model);
    MPI_Comm_free(&w.comm);
    proto_close(&w.proto);
    hooks_end(&w);
    MPI_Finalize();
    return 0;
}
