/* Unit tests of a worker's training position (worker/state.c): a snapshot
 * restores every byte of the position it took (and nothing else); the
 * training streams' hidden state held aside comes back; a checkpoint
 * written and resumed gives the same position and, written again, the same
 * file bytes; a resume into another W at the same global batch takes its
 * own rows of the streams and carried state; a corrupted, truncated or
 * foreign checkpoint is refused with a message naming the file; a write
 * that cannot happen says why on every rank.
 * The workers are real: model, data, optimizer, detector, MPI. Run alone
 * (make unit: a singleton MPI_Init, W = 1) or under mpirun -np 2 (t_10:
 * the checkpoint gathers real ranks' streams and carried state). A
 * position comes from real steps: forward, backward, an Adam update. */
#include <math.h>
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "common/ckdir.h"
#include "common/ckpt.h"
#include "common/log.h"
#include "common/text.h"
#include "tests/testutil.h"
#include "worker/worker.h"

static int wrank, wsize; /* this process among the test's ranks */

/* ---- a worker, set up as clipd-worker does, without the coordinator ---- */

static void config(Config *c, const char *run_dir, int rollback)
{
    cfg_defaults(c);
    c->model_kind = MODEL_LSTM, c->model_layers = 2;
    c->model_vocab = 7, c->model_embed = 5, c->model_hidden = 6;
    c->data_seq_len = 5, c->data_batch_per_worker = 4;
    c->data_markov_order = 1, c->data_markov_branch = 3;
    c->train_optimizer = OPT_ADAM;
    c->divergence_window = 8, c->divergence_warmup = 4;
    if (rollback) c->divergence_action = ACT_ROLLBACK;
    snprintf(c->run_name, sizeof c->run_name, "state-test");
    snprintf(c->run_dir, sizeof c->run_dir, "%s", run_dir);
}

/* Worker `rank` of W on comm, batch c->data_batch_per_worker. */
static void worker_up(Worker *w, const Config *c, MPI_Comm comm, int W, int rank)
{
    memset(w, 0, sizeof *w);
    w->cfg = *c, w->comm = comm, w->W = W, w->rank = rank;
    int B = c->data_batch_per_worker;
    assert_int_equal(model_init(&w->model, c, B), 0);
    model_init_params(&w->model, (uint64_t)c->run_seed, c->model_init_scale);
    w->model.first_stream = rank * B;
    assert_int_equal(batcher_init_split(&w->data, c, rank * B, B, W, TEXT_TRAIN), 0);
    batcher_epoch(&w->data, data_epoch_seed(c, 1));
    assert_int_equal(sync_init(&w->sync, comm, w->model.nparams, w->model.nviews, 0,
                               c->sync_mode == SYNC_SHARDED), 0);
    assert_int_equal(optim_init(&w->opt, c->train_optimizer, c->train_momentum, c->train_beta1,
                                c->train_beta2, c->train_eps, w->model.nparams), 0);
    DetectParams p;
    detect_defaults(&p);
    p.window = c->divergence_window, p.warmup = c->divergence_warmup;
    assert_int_equal(detect_init(&w->det, &p), 0);
    sched_init(&w->sched);
    w->lr_scale = 1.0, w->epoch = 1;
    assert_int_equal(state_init(w), 0);
}

static void worker_down(Worker *w)
{
    state_free(w), detect_free(&w->det), optim_free(&w->opt), sync_free(&w->sync);
    batcher_free(&w->data), model_free(&w->model);
}

/* n real steps: a batch, forward and backward, the gradient averaged over
 * the ranks of comm, an Adam update, the detector fed the global loss. The
 * replicas stay identical as in a job; streams and carried state are each
 * rank's own. */
static void worker_train(Worker *w, int n)
{
    Model *m = &w->model;
    for (int s = 0; s < n; s++) {
        batcher_next(&w->data);
        model_zero_grad(m);
        m->drop_step = w->seq;
        double loss = model_step(m, w->data.inputs, w->data.targets, w->data.features,
                                 w->data.ytarget, (float)(1.0 / ((double)model_terms(m) * w->W)));
        MPI_Allreduce(MPI_IN_PLACE, m->grads, (int)m->nparams, MPI_FLOAT, MPI_SUM, w->comm);
        MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, w->comm);
        optim_begin(&w->opt);
        optim_update(&w->opt, m->params, m->grads, 0, m->nparams, 1.0f, 0, 0.01);
        detect_step(&w->det, loss / ((double)model_terms(m) * w->W), 1.0 + 0.01 * s, s % 2, NULL);
        w->step++, w->seq++, w->epoch_step++;
    }
}

/* ---- a position, copied out of a worker to compare with later ---- */

typedef struct {
    float *params, *m, *v, *hidden; /* (n) (n) (n) (L, 2, B, H) */
    uint64_t streams[64 * STREAM_WORDS];
    double det[256];
    size_t n, nh, ndet;
    long opt_t;
    int64_t step, seq;
    int epoch, epoch_step;
} Pos;

static float *carried(const Worker *w, int l, int k)
{
    const Layer *y = &w->model.layer[l];
    float *base = k ? y->c : y->h;
    return base ? base + (size_t)w->model.T * w->model.B * w->model.H : NULL;
}

static void pos_take(Pos *p, const Worker *w)
{
    const Model *m = &w->model;
    size_t hl = (size_t)m->B * m->H;
    p->n = m->nparams, p->nh = (size_t)m->L * 2 * hl, p->ndet = detect_state_len(&w->det);
    assert_true(p->ndet <= 256 && (size_t)m->B * STREAM_WORDS <= 64 * STREAM_WORDS);
    p->params = malloc(p->n * sizeof(float)), p->m = malloc(p->n * sizeof(float));
    p->v = malloc(p->n * sizeof(float)), p->hidden = calloc(p->nh, sizeof(float));
    assert_true(p->params && p->m && p->v && p->hidden);
    memcpy(p->params, m->params, p->n * sizeof(float));
    memcpy(p->m, w->opt.m, p->n * sizeof(float));
    memcpy(p->v, w->opt.v, p->n * sizeof(float));
    for (int l = 0; l < m->L; l++)
        for (int k = 0; k < 2; k++)
            if (carried(w, l, k)) memcpy(p->hidden + ((size_t)l * 2 + k) * hl, carried(w, l, k), hl * sizeof(float));
    for (int b = 0; b < m->B; b++) {
        uint64_t *o = p->streams + (size_t)b * STREAM_WORDS;
        memcpy(o, w->data.rng[b].s, 4 * sizeof(uint64_t));
        o[4] = w->data.ctx[b], o[5] = (uint64_t)(int64_t)w->data.last[b];
    }
    detect_save(&w->det, p->det);
    p->opt_t = w->opt.t, p->step = w->step, p->seq = w->seq;
    p->epoch = w->epoch, p->epoch_step = w->epoch_step;
}

static void pos_free(Pos *p) { free(p->params), free(p->m), free(p->v), free(p->hidden); }

/* The worker holds exactly position p: every byte. what: for the message. */
static void pos_expect(const Worker *w, const Pos *p, const char *what)
{
    Pos now;
    pos_take(&now, w);
    int bad = memcmp(now.params, p->params, p->n * sizeof(float)) ? 1
            : memcmp(now.m, p->m, p->n * sizeof(float)) ? 2
            : memcmp(now.v, p->v, p->n * sizeof(float)) ? 3
            : memcmp(now.hidden, p->hidden, p->nh * sizeof(float)) ? 4
            : memcmp(now.streams, p->streams, (size_t)w->model.B * STREAM_WORDS * sizeof(uint64_t)) ? 5
            : memcmp(now.det, p->det, p->ndet * sizeof(double)) ? 6
            : now.opt_t != p->opt_t || now.step != p->step || now.epoch_step != p->epoch_step ? 7 : 0;
    static const char *part[] = {"", "parameters", "Adam m", "Adam v", "carried hidden state",
                                 "data streams", "detector state", "counters"};
    pos_free(&now);
    if (bad) fail_msg("%s: %s differ", what, part[bad]);
}

/* Scribble over everything a position holds. */
static void scramble(Worker *w)
{
    Model *m = &w->model;
    for (size_t i = 0; i < m->nparams; i++) m->params[i] += 1.0f, w->opt.m[i] = 7, w->opt.v[i] = 9;
    for (int l = 0; l < m->L; l++)
        for (int k = 0; k < 2; k++)
            if (carried(w, l, k))
                for (size_t i = 0; i < (size_t)m->B * m->H; i++) carried(w, l, k)[i] = -3;
    batcher_next(&w->data);
    w->opt.t += 5, w->step += 5, w->epoch_step += 5;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    unsigned char *b = (unsigned char *)file_slurp(path, n);
    if (!b) fail_msg("cannot read %s", path);
    return b;
}

/* Every test's run dir (made by rank 0, known to all) and, for the
 * checkpoint tests (setup_written), the checkpoint written at step 4 and
 * this rank's position in it. */
typedef struct {
    TmpDir t;
    Config c;
    char path[512];
    Pos p;
    int written;
} Fx;

static int setup(void **state)
{
    Fx *f = calloc(1, sizeof *f);
    if (!f) return -1;
    int rc = wrank == 0 ? tmpdir_make(&f->t, "state") : 0;
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(f->t.dir, sizeof f->t.dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    *state = f;
    return rc;
}

static void write_checkpoint(Fx *f);

static int setup_written(void **state)
{
    if (setup(state) != 0) return -1;
    write_checkpoint(*state);
    return 0;
}

static int teardown(void **state)
{
    Fx *f = *state;
    MPI_Barrier(MPI_COMM_WORLD);
    if (wrank == 0) tmpdir_remove(&f->t);
    if (f->written) pos_free(&f->p);
    free(f);
    return 0;
}

/* ---- snapshots ---- */

/* A rollback restores the snapshot's parameters, moments, counters, streams
 * and carried state bit for bit; seq (steps executed) stays as it is. */
static void test_snapshot_restore(void **state)
{
    TmpDir *t = &((Fx *)*state)->t;
    Config c;
    config(&c, t->dir, 1);
    Worker w;
    worker_up(&w, &c, MPI_COMM_SELF, 1, 0);
    assert_non_null(w.snap.params); /* a rollback is configured: parameters are kept */
    worker_train(&w, 3);
    state_snapshot(&w);
    Pos p;
    pos_take(&p, &w);
    worker_train(&w, 2); /* the detector moves on: a rollback does not take it back */
    p.ndet = 0;
    scramble(&w);
    int64_t seq = w.seq;
    state_restore(&w);
    pos_expect(&w, &p, "restored snapshot");
    assert_int_equal(w.seq, seq);
    assert_int_equal(w.step, 3);
    pos_free(&p);
    worker_down(&w);
}

/* Without a rollback action no parameter copy is kept; the snapshot still
 * has the position's counters and streams. */
static void test_snapshot_without_rollback(void **state)
{
    TmpDir *t = &((Fx *)*state)->t;
    Config c;
    config(&c, t->dir, 0);
    Worker w;
    worker_up(&w, &c, MPI_COMM_SELF, 1, 0);
    assert_null(w.snap.params), assert_null(w.snap.m), assert_null(w.snap.v);
    worker_train(&w, 2);
    state_snapshot(&w);
    assert_int_equal(w.snap.step, 2);
    assert_int_equal(w.snap.epoch_step, 2);
    assert_memory_equal(w.snap.streams, w.data.rng[0].s, 4 * sizeof(uint64_t));
    worker_down(&w);
}

/* Validation runs its own streams through the model: the training streams'
 * carried state is held aside and comes back unchanged. */
static void test_hold_hidden(void **state)
{
    TmpDir *t = &((Fx *)*state)->t;
    Config c;
    config(&c, t->dir, 0);
    Worker w;
    worker_up(&w, &c, MPI_COMM_SELF, 1, 0);
    worker_train(&w, 2);
    Pos p;
    pos_take(&p, &w);
    state_hold_hidden(&w, 1);
    scramble(&w);
    state_hold_hidden(&w, 0);
    Pos now;
    pos_take(&now, &w);
    assert_memory_equal(now.hidden, p.hidden, p.nh * sizeof(float));
    assert_memory_not_equal(now.params, p.params, p.n * sizeof(float)); /* only the hidden state */
    pos_free(&now), pos_free(&p);
    worker_down(&w);
}

/* ---- checkpoints ---- */

static void ck_path(const Worker *w, char *out, size_t len)
{
    char dir[CFG_STR_MAX + 16];
    cfg_checkpoint_dir(&w->cfg, dir, sizeof dir);
    ckdir_path(out, len, dir, (long long)w->step);
}

/* Checkpoint at step 4 of a worker on all ranks: f->path, and f->p this
 * rank's position. */
static void write_checkpoint(Fx *f)
{
    config(&f->c, f->t.dir, 1);
    Worker w;
    worker_up(&w, &f->c, MPI_COMM_WORLD, wsize, wrank);
    worker_train(&w, 4);
    char err[512] = "";
    if (state_checkpoint(&w, err, sizeof err) != 0) fail_msg("state_checkpoint: %s", err);
    pos_take(&f->p, &w);
    f->written = 1;
    /* the checkpoint is also where a rollback goes back to */
    scramble(&w);
    state_restore(&w);
    pos_expect(&w, &f->p, "restored after a checkpoint");
    ck_path(&w, f->path, sizeof f->path);
    worker_down(&w);
}

/* Written, read back: the tensors hold the worker's bytes, the metadata
 * its counters; resumed by a fresh worker (other initial weights): the same
 * position on every rank; written again from there: the same file bytes. */
static void test_checkpoint_round_trip(void **state)
{
    Fx *f = *state;
    TmpDir *t = &f->t;
    Config c = f->c;
    const char *path = f->path;
    char err[512] = "";
    Pos p = f->p;
    Ckpt k;
    if (ckpt_read(&k, path, err, sizeof err) != 0) fail_msg("%s", err);
    const CkEntry *e = ckpt_find(&k, "param.head.weight");
    assert_non_null(e);
    assert_memory_equal(ckpt_data(&k, e), p.params, e->nbytes); /* head.weight is the first view */
    assert_string_equal(ckpt_meta(&k, "step"), "4");
    assert_string_equal(ckpt_meta(&k, "seq"), "4");
    assert_string_equal(ckpt_meta(&k, "opt_t"), "4");
    char ws[16];
    snprintf(ws, sizeof ws, "%d", wsize);
    assert_string_equal(ckpt_meta(&k, "world_size"), ws);
    assert_string_equal(ckpt_meta(&k, "run"), "state-test");
    e = ckpt_find(&k, "data.streams");
    assert_non_null(e);
    assert_int_equal(e->shape[0], (long)wsize * c.data_batch_per_worker);
    ckpt_free(&k);

    Worker w;
    worker_up(&w, &c, MPI_COMM_WORLD, wsize, wrank);
    model_init_params(&w.model, 99, 0.1); /* other weights: all of them must come from the file */
    assert_memory_not_equal(w.model.params, p.params, p.n * sizeof(float));
    if (state_resume(&w, path, err, sizeof err) != 0) fail_msg("state_resume: %s", err);
    pos_expect(&w, &p, "resumed checkpoint");
    assert_int_equal(w.seq, 4);
    assert_int_equal(w.epoch, 1);
    /* written again into another directory: the same bytes */
    char again[512];
    snprintf(w.cfg.checkpoint_dir, sizeof w.cfg.checkpoint_dir, "%s/again", t->dir);
    if (state_checkpoint(&w, err, sizeof err) != 0) fail_msg("state_checkpoint: %s", err);
    ck_path(&w, again, sizeof again);
    if (wrank == 0) {
        size_t n1, n2;
        unsigned char *a = slurp(path, &n1), *b = slurp(again, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(a, b, n1);
        free(a), free(b);
    }
    worker_down(&w);
}

/* Resume into W' workers at the same global batch (W x 4 = W' x B'): each
 * takes its own rows of the streams and carried state. The W' workers are
 * each set up alone (rank r of W', MPI_COMM_SELF) and checked against the
 * rows the W writers held (gathered to rank 0). */
static void test_resume_other_w(void **state)
{
    Fx *f = *state;
    Config c = f->c;
    const char *path = f->path;
    char err[512] = "";
    Pos p = f->p;
    int Bw = c.data_batch_per_worker, WB = wsize * Bw;
    size_t H = (size_t)c.model_hidden, L = (size_t)c.model_layers;
    /* every writer's streams and carried state, in global stream order */
    uint64_t *streams = malloc((size_t)WB * STREAM_WORDS * sizeof *streams);
    float *hid = malloc(L * 2 * (size_t)WB * H * sizeof *hid);
    assert_true(streams && hid);
    MPI_Allgather(p.streams, Bw * STREAM_WORDS, MPI_UINT64_T, streams, Bw * STREAM_WORDS,
                  MPI_UINT64_T, MPI_COMM_WORLD);
    for (size_t k = 0; k < L * 2; k++)
        MPI_Allgather(p.hidden + k * (size_t)Bw * H, Bw * (int)H, MPI_FLOAT,
                      hid + k * (size_t)WB * H, Bw * (int)H, MPI_FLOAT, MPI_COMM_WORLD);
    if (wrank == 0) {
        /* W' in {1, 2 W}: one worker with every stream, or 2W with half each */
        int Ws[2] = {1, 2 * wsize};
        for (int i = 0; i < 2; i++) {
            int W2 = Ws[i], B2 = WB / W2;
            Config c2 = c;
            c2.data_batch_per_worker = B2;
            for (int r = 0; r < W2; r++) {
                Worker w;
                worker_up(&w, &c2, MPI_COMM_SELF, W2, r);
                if (state_resume(&w, path, err, sizeof err) != 0)
                    fail_msg("resume as worker %d of %d: %s", r, W2, err);
                assert_memory_equal(w.model.params, p.params, p.n * sizeof(float));
                Pos q;
                pos_take(&q, &w);
                assert_memory_equal(q.streams, streams + (size_t)r * B2 * STREAM_WORDS,
                                    (size_t)B2 * STREAM_WORDS * sizeof(uint64_t));
                for (size_t k = 0; k < L * 2; k++)
                    assert_memory_equal(q.hidden + k * (size_t)B2 * H, hid + k * (size_t)WB * H + (size_t)r * B2 * H,
                                        (size_t)B2 * H * sizeof(float));
                assert_int_equal(w.step, 4);
                pos_free(&q);
                worker_down(&w);
            }
        }
        /* another global batch: refused, naming the file and both batches */
        Config c3 = c;
        c3.data_batch_per_worker = Bw + 1;
        Worker w;
        worker_up(&w, &c3, MPI_COMM_SELF, 1, 0);
        assert_int_equal(state_resume(&w, path, err, sizeof err), -1);
        printf("another global batch: %s\n", err);
        assert_non_null(strstr(err, path));
        assert_non_null(strstr(err, "batch"));
        worker_down(&w);
    }
    free(streams), free(hid);
}

/* A checkpoint damaged on disk (a flipped bit in the tensors, a cut-off
 * tail) or of another model is refused by state_resume with one message
 * naming the file; nothing of a damaged file reaches the worker. */
static void test_resume_refuses_bad_file(void **state)
{
    Fx *f = *state;
    TmpDir *t = &f->t;
    Config c = f->c;
    const char *path = f->path;
    char err[512];
    if (wrank == 0) {
        size_t n;
        unsigned char *good = slurp(path, &n);
        struct { const char *what; size_t len; size_t flip; } bad[] = {
            {"a flipped bit in the tensor data", n, n - 9},
            {"a flipped bit in the header", n, 20},
            {"the last 100 bytes cut off", n - 100, 0},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            unsigned char *b = malloc(n);
            memcpy(b, good, n);
            if (bad[i].flip) b[bad[i].flip] ^= 0x10;
            assert_non_null(tmpdir_write(t, "bad.safetensors", b, bad[i].len));
            Worker w;
            worker_up(&w, &c, MPI_COMM_SELF, wsize, 0);
            Pos before;
            pos_take(&before, &w);
            err[0] = 0;
            assert_int_equal(state_resume(&w, t->path, err, sizeof err), -1);
            printf("%s: %s\n", bad[i].what, err);
            assert_non_null(strstr(err, t->path));
            assert_null(strchr(err, '\n'));
            pos_expect(&w, &before, "a worker after a refused resume"); /* nothing taken from the file */
            pos_free(&before);
            worker_down(&w);
            free(b);
        }
        free(good);
        /* a good file of another model (hidden 7, not 6) */
        Config c2 = c;
        c2.model_hidden = 7;
        Worker w;
        worker_up(&w, &c2, MPI_COMM_SELF, wsize, 0);
        assert_int_equal(state_resume(&w, path, err, sizeof err), -1);
        printf("another model: %s\n", err);
        assert_non_null(strstr(err, path));
        worker_down(&w);
    }
}

/* A checkpoint that cannot be written (checkpoint.dir is a file) fails on
 * every rank with worker 0's message naming the path; nothing is left in
 * the run dir. */
static void test_checkpoint_write_fails(void **state)
{
    TmpDir *t = &((Fx *)*state)->t;
    Config c;
    config(&c, t->dir, 0);
    if (wrank == 0) assert_non_null(tmpdir_write(t, "not-a-dir", "x", 1));
    snprintf(c.checkpoint_dir, sizeof c.checkpoint_dir, "%s/not-a-dir", t->dir);
    Worker w;
    worker_up(&w, &c, MPI_COMM_WORLD, wsize, wrank);
    worker_train(&w, 1);
    char err[512] = "";
    assert_int_equal(state_checkpoint(&w, err, sizeof err), -1);
    printf("rank %d: %s\n", wrank, err);
    assert_non_null(strstr(err, c.checkpoint_dir));
    struct stat st;
    assert_int_equal(stat(c.checkpoint_dir, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    worker_down(&w);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
    MPI_Comm_size(MPI_COMM_WORLD, &wsize);
    log_set_role("worker", wrank);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_snapshot_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_without_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hold_hidden, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_round_trip, setup_written, teardown),
        cmocka_unit_test_setup_teardown(test_resume_other_w, setup_written, teardown),
        cmocka_unit_test_setup_teardown(test_resume_refuses_bad_file, setup_written, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_write_fails, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any ? 1 : 0;
}
