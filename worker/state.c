/* state: a worker's training position: in-memory snapshots for rollbacks,
 * checkpoints on disk (gathered to worker 0, written by common/ckpt), and
 * resuming from them. A checkpoint holds parameters, optimizer moments, the
 * data cursors and carried hidden state of every stream, the detector and
 * schedule state, and the counters, so a resumed run continues bit for bit. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ckdir.h"
#include "common/ckpt.h"
#include "common/ckstate.h"
#include "common/fsutil.h"
#include "common/hash.h"
#include "common/log.h"
#include "worker/hooks.h"
#include "worker/worker.h"

static size_t hidden_len(const Worker *w) { return (size_t)w->model.B * (size_t)w->model.H; }

/* Can any event of this config be answered with a rollback? Only then is a
 * copy of the parameters and optimizer state kept in memory. */
static int can_roll_back(const Config *c)
{
    for (int k = 0; k < EV_COUNT; k++)
        if (cfg_event_action(c, k) == ACT_ROLLBACK) return 1;
    return 0;
}

int state_init(Worker *w)
{
    Snapshot *s = &w->snap;
    size_t n = w->model.nparams, B = (size_t)w->model.B, L = (size_t)w->model.L;
    fs_set_run_tag(w->cfg.run_name); /* the temporaries of its checkpoint writes */
    if (can_roll_back(&w->cfg)) {
        s->params = malloc(n * sizeof(float));
        s->m = w->opt.m ? malloc(w->opt.n * sizeof(float)) : NULL;
        s->v = w->opt.v ? malloc(w->opt.n * sizeof(float)) : NULL;
        if (!s->params || (w->opt.m && !s->m) || (w->opt.v && !s->v)) return -1;
    }
    s->streams = calloc(B * STREAM_WORDS, sizeof(uint64_t));
    s->hidden = calloc(L * 2 * hidden_len(w), sizeof(float));
    StateBufs *b = &w->bufs;
    b->det_state = calloc(detect_state_len(&w->det) + 1, sizeof(double));
    b->held_hidden = calloc(L * 2 * hidden_len(w), sizeof(float));
    if (!s->streams || !s->hidden || !b->det_state || !b->held_hidden) return -1;
    if (w->rank == 0) {
        b->all_streams = calloc((size_t)w->W * B * STREAM_WORDS, sizeof(uint64_t));
        b->all_hidden = calloc(L * 2 * (size_t)w->W * hidden_len(w), sizeof(float));
        if (!b->all_streams || !b->all_hidden) return -1;
        if (w->sync.sharded && w->opt.m && !(b->all_m = malloc(n * sizeof(float)))) return -1;
        if (w->sync.sharded && w->opt.v && !(b->all_v = malloc(n * sizeof(float)))) return -1;
    }
    return 0;
}

void state_free(Worker *w)
{
    Snapshot *s = &w->snap;
    free(s->params), free(s->m), free(s->v), free(s->streams), free(s->hidden);
    StateBufs *b = &w->bufs;
    free(b->all_streams), free(b->all_hidden), free(b->all_m), free(b->all_v);
    free(b->det_state), free(b->held_hidden);
    memset(s, 0, sizeof *s);
    memset(b, 0, sizeof *b);
}

static void pack_streams(const Worker *w, uint64_t *out)
{
    const Batcher *d = &w->data;
    for (int b = 0; b < d->B; b++) {
        uint64_t *o = out + (size_t)b * STREAM_WORDS;
        memcpy(o, d->rng[b].s, 4 * sizeof(uint64_t));
        o[4] = d->source == DATA_TEXT ? d->pos[b] : d->ctx[b]; /* text: the stream's offset */
        o[5] = (uint64_t)(int64_t)d->last[b];
    }
}

static void unpack_streams(Worker *w, const uint64_t *in)
{
    Batcher *d = &w->data;
    for (int b = 0; b < d->B; b++) {
        const uint64_t *o = in + (size_t)b * STREAM_WORDS;
        memcpy(d->rng[b].s, o, 4 * sizeof(uint64_t));
        if (d->source == DATA_TEXT) d->pos[b] = o[4];
        else d->ctx[b] = (uint32_t)o[4];
        d->last[b] = (int)(int64_t)o[5];
    }
}

/* The carried state of layer l: h[T] (and c[T]) of this worker's streams. */
static float *carried(const Worker *w, int l, int which)
{
    const Layer *y = &w->model.layer[l];
    float *base = which == 0 ? y->h : y->c;
    return base ? base + (size_t)w->model.T * hidden_len(w) : NULL;
}

static void copy_hidden(Worker *w, float *buf, int to_buf)
{
    size_t hl = hidden_len(w);
    for (int l = 0; l < w->model.L; l++)
        for (int k = 0; k < 2; k++) {
            float *live = carried(w, l, k), *saved = buf + ((size_t)l * 2 + (size_t)k) * hl;
            if (!live) continue;
            if (to_buf) memcpy(saved, live, hl * sizeof(float));
            else memcpy(live, saved, hl * sizeof(float));
        }
}

void state_hold_hidden(Worker *w, int hold) { copy_hidden(w, w->bufs.held_hidden, hold); }

void state_snapshot(Worker *w)
{
    Snapshot *s = &w->snap;
    size_t bytes = w->opt.n * sizeof(float);
    if (s->params) memcpy(s->params, w->model.params, w->model.nparams * sizeof(float));
    if (s->m) memcpy(s->m, w->opt.m, bytes);
    if (s->v) memcpy(s->v, w->opt.v, bytes);
    s->opt_t = w->opt.t;
    s->step = w->step;
    s->epoch_step = w->epoch_step;
    pack_streams(w, s->streams);
    copy_hidden(w, s->hidden, 1);
}

/* Here, not in main.c, so that every object that calls it (and the unit
 * tests linking them) has it: one log line, then MPI_Abort (exit 1). */
void worker_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    proto_abort_v(fmt, ap);
}

void state_restore(Worker *w)
{
    Snapshot *s = &w->snap;
    size_t bytes = w->opt.n * sizeof(float);
    if (!s->params) { /* unreachable: can_roll_back said no action is rollback */
        worker_fatal("rollback without a snapshot");
    }
    memcpy(w->model.params, s->params, w->model.nparams * sizeof(float));
    if (s->m) memcpy(w->opt.m, s->m, bytes);
    if (s->v) memcpy(w->opt.v, s->v, bytes);
    w->opt.t = s->opt_t;
    w->step = s->step;
    w->epoch_step = s->epoch_step;
    unpack_streams(w, s->streams);
    copy_hidden(w, s->hidden, 0);
}

uint64_t state_hash(const Worker *w)
{
    uint64_t h = hash_words(w->model.params, w->model.nparams * sizeof(float), FNV1A64_INIT);
    if (w->sync.sharded) return h; /* each worker holds different optimizer state */
    if (w->opt.m) h = hash_words(w->opt.m, w->opt.n * sizeof(float), h);
    if (w->opt.v) h = hash_words(w->opt.v, w->opt.n * sizeof(float), h);
    return h;
}

/* Sharded: worker 0 gathers the shards of a moment buffer into all (its
 * buffer from state_init); replicated: the buffer itself. */
static const float *gather_moment(const Worker *w, const float *mine, float *all)
{
    if (!mine || !w->sync.sharded) return mine;
    MPI_Gatherv(mine, (int)w->sync.own_len, MPI_FLOAT, all, w->sync.counts, w->sync.displs,
                MPI_FLOAT, 0, w->comm);
    return all;
}

/* Gather every worker's streams and carried state (just snapshotted) into
 * worker 0's buffers. */
static void gather_position(Worker *w)
{
    int B = w->model.B;
    const uint64_t *mine = w->snap.streams;
    const float *hid = w->snap.hidden;
    MPI_Gather(mine, B * STREAM_WORDS, MPI_UINT64_T, w->bufs.all_streams, B * STREAM_WORDS,
               MPI_UINT64_T, 0, w->comm);
    size_t hl = hidden_len(w);
    for (int k = 0; k < w->model.L * 2; k++)
        MPI_Gather(hid + (size_t)k * hl, (int)hl, MPI_FLOAT,
                   w->bufs.all_hidden ? w->bufs.all_hidden + (size_t)k * hl * (size_t)w->W : NULL, (int)hl,
                   MPI_FLOAT, 0, w->comm);
}

typedef struct {
    CkTensor t[4 * MODEL_MAX_VIEWS + 2 * MODEL_MAX_LAYERS + 4];
    char names[4 * MODEL_MAX_VIEWS + 2 * MODEL_MAX_LAYERS + 4][64];
    int n;
} TensorList;

static void add_tensor(TensorList *tl, const char *prefix, const char *name, int dtype,
                       const void *data, int ndim, long r, long c)
{
    snprintf(tl->names[tl->n], sizeof tl->names[0], "%s%s", prefix, name);
    tl->t[tl->n] = (CkTensor){tl->names[tl->n], dtype, data, ndim, {r, ndim == 2 ? c : 1}};
    tl->n++;
}

/* om, ov: whole moment buffers (or NULL). */
static void list_tensors(const Worker *w, TensorList *tl, const float *om, const float *ov)
{
    const Model *m = &w->model;
    tl->n = 0;
    for (int v = 0; v < m->nviews; v++) {
        const ParamView *pv = &m->views[v];
        add_tensor(tl, "param.", pv->name, CK_F32, m->params + pv->off, pv->ndim, pv->rows, pv->cols);
        if (om) add_tensor(tl, "opt.m.", pv->name, CK_F32, om + pv->off, pv->ndim, pv->rows, pv->cols);
        if (ov) add_tensor(tl, "opt.v.", pv->name, CK_F32, ov + pv->off, pv->ndim, pv->rows, pv->cols);
    }
    long WB = (long)w->W * m->B;
    add_tensor(tl, "", "data.streams", CK_U64, w->bufs.all_streams, 2, WB, STREAM_WORDS);
    size_t hl = hidden_len(w) * (size_t)w->W;
    char name[32];
    for (int l = 0; l < m->L; l++)
        for (int k = 0; k < (m->kind == MODEL_LSTM ? 2 : 1); k++) {
            snprintf(name, sizeof name, "state.%s.%d", k ? "c" : "h", l);
            add_tensor(tl, "", name, CK_F32, w->bufs.all_hidden + ((size_t)l * 2 + (size_t)k) * hl, 2, WB, m->H);
        }
    add_tensor(tl, "", "detect.state", CK_U64, w->bufs.det_state, 1, (long)detect_state_len(&w->det), 1);
}

int state_checkpoint(Worker *w, char *err, size_t errlen)
{
    /* The position written is also the one a rollback goes back to. */
    state_snapshot(w);
    gather_position(w);
    const float *om = gather_moment(w, w->opt.m, w->bufs.all_m);
    const float *ov = gather_moment(w, w->opt.v, w->bufs.all_v);
    int rc = 0;
    char msg[512] = "";
    if (w->rank == 0) {
        detect_save(&w->det, w->bufs.det_state);
        TensorList tl;
        list_tensors(w, &tl, om, ov);
        char dir[CFG_STR_MAX + 16];
        CkStateMeta meta;
        CkState s = {.step = w->step, .seq = w->seq, .epoch = w->epoch, .epoch_step = w->epoch_step,
                     .epoch_seq0 = w->epoch_seq0, .world_size = w->W, .batch_per_worker = w->model.B,
                     .opt_t = w->opt.t, .lr_scale = w->lr_scale, .rollbacks = w->rollbacks,
                     .nonfinite = w->nonfinite, .config_hash = cfg_hash(&w->cfg),
                     .sched = {w->sched.best_val, w->sched.plateau_scale, w->sched.bad_epochs,
                               w->sched.since_best},
                     .state_hash = state_hash(w), .epoch_done = w->epoch_done, .run = w->cfg.run_name,
                     .seq_len = w->model.T};
        int nmeta = ckstate_meta(&s, &meta);
        cfg_checkpoint_dir(&w->cfg, dir, sizeof dir);
        ckpt_test_crash(hooks_ckpt_crash(w));
        rc = ckdir_write(dir, (long long)w->step, tl.t, tl.n, meta.meta, nmeta,
                        w->cfg.checkpoint_keep, NULL, 0, msg, sizeof msg);
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, w->comm);
    if (rc != 0) {
        MPI_Bcast(msg, sizeof msg, MPI_CHAR, 0, w->comm);
        snprintf(err, errlen, "%s", msg);
        return -1;
    }
    return 0;
}

/* Counters and schedule state, from __metadata__ as ckstate_check read
 * and checked them. */
static int resume_meta(Worker *w, const Ckpt *c, const CkState *s, char *err, size_t errlen)
{
    /* The streams are global: another W at the same global batch takes its
     * own rows of them (resume_position); sharded state re-shards there too. */
    if ((int64_t)s->world_size * s->batch_per_worker != (int64_t)w->W * w->model.B) {
        snprintf(err, errlen, "%s: written by %d workers x batch %d; this job has %d x %d "
                 "(resume with the same global batch W x data.batch_per_worker)", c->path,
                 (int)s->world_size, (int)s->batch_per_worker, w->W, w->model.B);
        return -1;
    }
    w->step = s->step, w->seq = s->seq, w->epoch = (int)s->epoch, w->epoch_step = (int)s->epoch_step;
    w->epoch_seq0 = s->epoch_seq0, w->opt.t = (long)s->opt_t, w->rollbacks = (int)s->rollbacks;
    w->nonfinite = s->nonfinite, w->epoch_done = (int)s->epoch_done, w->lr_scale = s->lr_scale;
    w->sched = (SchedState){s->sched[0], s->sched[1], s->sched[2], s->sched[3]};
    return 0;
}

/* A moment buffer: whole, or (sharded) this worker's shard of it, read
 * through a whole-size scratch buffer. */
static int resume_moment(Worker *w, const Ckpt *c, const char *prefix, float *mine, char *err,
                         size_t errlen)
{
    const Model *m = &w->model;
    float *all = w->sync.sharded ? malloc(m->nparams * sizeof(float)) : mine;
    if (!all) return snprintf(err, errlen, "%s: out of memory", c->path), -1;
    char name[96];
    int rc = 0;
    for (int v = 0; v < m->nviews && !rc; v++) {
        snprintf(name, sizeof name, "%s%s", prefix, m->views[v].name);
        rc = ckpt_get(c, name, CK_F32, all + m->views[v].off, m->views[v].n, err, errlen);
    }
    if (all != mine) {
        if (!rc) memcpy(mine, all + w->sync.own_off, w->sync.own_len * sizeof(float));
        free(all);
    }
    return rc;
}

/* Parameters and optimizer moments, tensor by tensor, shapes checked. A
 * checkpoint of either sync mode resumes in either. */
static int resume_tensors(Worker *w, const Ckpt *c, char *err, size_t errlen)
{
    const Model *m = &w->model;
    char name[96];
    for (int v = 0; v < m->nviews; v++) {
        const ParamView *pv = &m->views[v];
        snprintf(name, sizeof name, "param.%s", pv->name);
        if (ckpt_get(c, name, CK_F32, m->params + pv->off, pv->n, err, errlen)) return -1;
    }
    if (w->opt.m && resume_moment(w, c, "opt.m.", w->opt.m, err, errlen)) return -1;
    if (w->opt.v && resume_moment(w, c, "opt.v.", w->opt.v, err, errlen)) return -1;
    return 0;
}

/* This worker's rows of the streams and the carried state. */
static int resume_position(Worker *w, const Ckpt *c, char *err, size_t errlen)
{
    size_t B = (size_t)w->model.B, hl = hidden_len(w), WB = (size_t)w->W * B;
    uint64_t *streams = malloc(WB * STREAM_WORDS * sizeof *streams);
    float *hid = malloc(WB * (size_t)w->model.H * sizeof *hid);
    double *det = malloc((detect_state_len(&w->det) + 1) * sizeof *det);
    int rc = -1;
    if (!streams || !hid || !det) {
        snprintf(err, errlen, "%s: out of memory", c->path);
        goto out;
    }
    if (ckpt_get(c, "data.streams", CK_U64, streams, WB * STREAM_WORDS, err, errlen)) goto out;
    unpack_streams(w, streams + (size_t)w->rank * B * STREAM_WORDS);
    char name[32];
    for (int l = 0; l < w->model.L; l++)
        for (int k = 0; k < (w->model.kind == MODEL_LSTM ? 2 : 1); k++) {
            snprintf(name, sizeof name, "state.%s.%d", k ? "c" : "h", l);
            if (ckpt_get(c, name, CK_F32, hid, WB * (size_t)w->model.H, err, errlen)) goto out;
            memcpy(carried(w, l, k), hid + (size_t)w->rank * hl, hl * sizeof(float));
        }
    size_t dl = detect_state_len(&w->det);
    if (ckpt_get(c, "detect.state", CK_U64, det, dl, err, errlen)) goto out;
    if (detect_load(&w->det, det, dl) != 0) {
        snprintf(err, errlen, "%s: detect.state: inconsistent (another divergence.window?)", c->path);
        goto out;
    }
    rc = 0;
out:
    free(streams), free(hid), free(det);
    return rc;
}

int state_resume(Worker *w, const char *path, char *err, size_t errlen)
{
    Ckpt c;
    CkState s;
    if (ckpt_read(&c, path, err, errlen) != 0) return -1;
    /* The coordinator checked the file before the start; checked again here,
     * against this worker's own view (its data's stream length), before any
     * of it is unpacked: a file swapped in between fails cleanly. */
    uint64_t L = w->data.source == DATA_TEXT ? w->data.stream_len : 0;
    int rc = ckstate_check(&c, &w->cfg, w->W, L, &s, err, errlen);
    if (!rc) rc = resume_meta(w, &c, &s, err, errlen);
    if (!rc) rc = resume_tensors(w, &c, err, errlen);
    if (!rc) rc = resume_position(w, &c, err, errlen);
    ckpt_free(&c);
    if (!rc) state_snapshot(w);
    return rc;
}
