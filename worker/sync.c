/* sync: bucketed fixed-order gradient reduction and the statistics
 * collective (sync.h). */
#include "worker/sync.h"

#include "worker/fastmath.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

void shard_range(size_t n, int W, int r, size_t *off, size_t *len)
{
    size_t base = n / (size_t)W, extra = n % (size_t)W, ur = (size_t)r;
    *len = base + (ur < extra ? 1 : 0);
    *off = ur * base + (ur < extra ? ur : extra);
}

static size_t overlap(size_t a, size_t b, size_t c, size_t d, size_t *start)
{
    size_t lo = a > c ? a : c, hi = b < d ? b : d;
    *start = lo;
    return hi > lo ? hi - lo : 0;
}

/* Replicated, W > 1: each all-gather group's range is split W ways for its
 * reduction (so a bucket's traffic goes both ways over a link); the
 * statistics are still those of each rank's shard (own_off..), taken after
 * the all-gather, so every split gives the same norm bits. Sharded: the
 * parts inside each rank's shard (its update needs them reduced there). */
static int interleaved(const Sync *s) { return s->W > 1 && !s->sharded; }

/* [*off, *off + *len): what rank r reduces of bucket b's group (the part of
 * its shard inside the group when not interleaved). */
static void group_part(const Sync *s, const Bucket *b, int r, size_t *off, size_t *len)
{
    if (interleaved(s)) {
        shard_range(b->ghi - b->glo, s->W, r, off, len);
        *off += b->glo;
    } else {
        size_t so, sl;
        shard_range(s->n, s->W, r, &so, &sl);
        *len = overlap(b->glo, b->ghi, so, so + sl, off);
    }
}

/* The all-gathers' groups: consecutive buckets of at least SYNC_GATHER_MIN
 * floats in all (one bucket each at the usual sizes), fixed at start-up so
 * that every rank starts the same all-gathers in the same order; the last
 * bucket of a group holds the group's counts and request. */
static void gather_groups(Sync *s)
{
    int first = 0;
    for (int k = 0; k < s->nb; k++) {
        if (k < s->nb - 1 && s->b[k].hi - s->b[first].lo < SYNC_GATHER_MIN) continue;
        for (int j = first; j <= k; j++) s->b[j].gend = k, s->b[j].glo = s->b[first].lo, s->b[j].ghi = s->b[k].hi;
        first = k + 1;
    }
}

/* Counts and offsets of bucket b (its range and group set): rank r gets the
 * part of [lo, hi) inside what it reduces of the group; I receive my part
 * from everyone, into the receive area at *roff (which moves past it). */
static int bucket_init(Sync *s, Bucket *b, size_t *roff)
{
    int W = s->W;
    size_t off, len, start;
    group_part(s, b, s->rank, &off, &len);
    b->len = overlap(b->lo, b->hi, off, off + len, &b->mine);
    if (!b->len) b->mine = off;
    b->roff = *roff;
    *roff += b->len;
    b->sc = calloc((size_t)W * 6, sizeof(int));
    if (!b->sc) return -1;
    b->sd = b->sc + W, b->rc = b->sc + 2 * W, b->rd = b->sc + 3 * W;
    b->gc = b->sc + 4 * W, b->gd = b->sc + 5 * W;
    for (int r = 0; r < W; r++) {
        group_part(s, b, r, &off, &len);
        b->sc[r] = (int)overlap(b->lo, b->hi, off, off + len, &start);
        b->sd[r] = b->sc[r] ? (int)start : 0;
        b->rc[r] = (int)b->len;
        b->rd[r] = r * (int)b->len;
        b->gc[r] = (int)len; /* (used by the group's last bucket) */
        b->gd[r] = len ? (int)off : 0;
    }
    b->req = b->greq = MPI_REQUEST_NULL;
    return 0;
}

static int sparse_init(Sync *s, size_t sp_off, int rows, int width)
{
    s->sp_off = sp_off, s->sp_rows = rows, s->sp_width = width;
    if (!rows) return 0;
    size_t words = ((size_t)rows + 63) / 64, cells = (size_t)rows * (size_t)width;
    s->sp_bits = calloc(2 * words, sizeof *s->sp_bits);
    s->sp_list = calloc((size_t)rows, sizeof *s->sp_list);
    s->sp_send = calloc(cells, sizeof *s->sp_send);
    s->sp_recv = calloc(cells * (size_t)s->W, sizeof *s->sp_recv);
    return s->sp_bits && s->sp_list && s->sp_send && s->sp_recv ? 0 : -1;
}

static int setup(Sync *s, MPI_Comm comm, size_t n, int ntensors, size_t bucket, size_t sp_off,
                 int rows, int width, int sharded)
{
    memset(s, 0, sizeof *s);
    s->comm = comm, s->n = n, s->sharded = sharded;
    if (sp_off + (size_t)rows * (size_t)width != n) return -1;
    MPI_Comm_rank(comm, &s->rank);
    MPI_Comm_size(comm, &s->W);
    if (n > (size_t)INT32_MAX) return -1; /* MPI counts and offsets are ints */
    shard_range(n, s->W, s->rank, &s->own_off, &s->own_len);
    size_t nd = sp_off; /* the buckets' range [0, nd) */
    if (bucket == 0 || bucket > nd) bucket = nd ? nd : 1;
    s->nb = nd ? (int)((nd + bucket - 1) / bucket) : 0;
    s->nstats = ST_TENSOR0 + ntensors;
    s->counts = calloc((size_t)s->W, sizeof *s->counts);
    s->displs = calloc((size_t)s->W, sizeof *s->displs);
    s->b = calloc((size_t)(s->nb ? s->nb : 1), sizeof *s->b);
    s->all = calloc((size_t)s->W * (size_t)s->nstats, sizeof *s->all);
    s->acc = calloc(4 * (size_t)(ntensors > 0 ? ntensors : 1), sizeof *s->acc);
    if (!s->counts || !s->displs || !s->b || !s->all || !s->acc ||
        sparse_init(s, sp_off, rows, width) != 0 || MPI_Comm_dup(comm, &s->gcomm) != MPI_SUCCESS)
        goto fail;
    s->has_gcomm = 1;
    for (int r = 0; r < s->W; r++) {
        size_t off, len;
        shard_range(n, s->W, r, &off, &len);
        s->counts[r] = (int)len, s->displs[r] = (int)off;
    }
    for (int k = 0; k < s->nb; k++)
        s->b[k].lo = (size_t)k * bucket, s->b[k].hi = s->b[k].lo + bucket < nd ? s->b[k].lo + bucket : nd;
    gather_groups(s);
    s->nrecv = 0;
    for (int k = 0; k < s->nb; k++)
        if (bucket_init(s, &s->b[k], &s->nrecv) != 0) goto fail;
    s->recv = calloc((size_t)s->W * (s->nrecv ? s->nrecv : 1), sizeof *s->recv);
    if (!s->recv) goto fail;
    for (int k = 0; k < s->nb; k++) s->b[k].recv = s->recv + (size_t)s->W * s->b[k].roff;
    return 0;
fail:
    sync_free(s);
    return -1;
}

int sync_init(Sync *s, MPI_Comm comm, size_t n, int ntensors, size_t bucket, int sharded)
{
    return setup(s, comm, n, ntensors, bucket, n, 0, 0, sharded);
}

int sync_init_sparse(Sync *s, MPI_Comm comm, size_t n, int ntensors, size_t bucket, size_t sp_off,
                     int rows, int width)
{
    return setup(s, comm, n, ntensors, bucket, sp_off, rows, width, 0);
}

void sync_free(Sync *s)
{
    for (int k = 0; s->b && k < s->nb; k++) free(s->b[k].sc);
    free(s->counts), free(s->displs), free(s->recv), free(s->b), free(s->all), free(s->acc);
    free(s->sp_bits), free(s->sp_list), free(s->sp_send);
    free(s->sp_recv);
    free(s->pack);
    if (s->has_gcomm) MPI_Comm_free(&s->gcomm);
    if (s->shm) MPI_Win_unlock_all(s->win), MPI_Win_free(&s->win);
    free(s->peer), free(s->tmp), free(s->sp_flags);
    memset(s, 0, sizeof *s);
}

/* Bytes free where Open MPI puts shared windows' backing files (its
 * osc_sm_backing_directory, /dev/shm unless set): a window larger than that
 * would make MPI_Win_allocate_shared hang in Open MPI 4.1, not fail. */
static double shm_free_bytes(const char **dir)
{
    const char *d = getenv("OMPI_MCA_osc_sm_backing_directory");
    struct statvfs v;
    *dir = d && *d ? d : "/dev/shm";
    return statvfs(*dir, &v) == 0 ? (double)v.f_bavail * (double)v.f_frsize : 0;
}

/* sync_shared_grads' answer when there is no window: messages, dense (the
 * rows of sync_shared_rows are for the window only). */
static float *no_window(Sync *s)
{
    if (s->sp_window) s->sp_off = s->n, s->sp_rows = s->sp_width = s->sp_window = 0;
    return NULL;
}

float *sync_shared_grads(Sync *s, int nmicro, char *why, size_t len)
{
    *why = 0;
    if (s->W < 2 || s->sharded || (s->sp_rows && !s->sp_window) || nmicro > 1) return no_window(s);
    MPI_Comm node;
    int here = 0;
    if (MPI_Comm_split_type(s->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS)
        return no_window(s);
    MPI_Comm_size(node, &here);
    MPI_Comm_free(&node);
    if (here != s->W) return no_window(s); /* the same answer on every rank */
    /* Every rank's buffer on its own pages, and room to spare. */
    const char *dir;
    size_t extra = s->sp_window ? ((size_t)s->sp_rows + sizeof(float) - 1) / sizeof(float) : 0; /* the flags */
    double need = (double)s->W * ((double)(s->n + extra) * sizeof(float) + 65536) + 4194304, have = shm_free_bytes(&dir);
    int room = have >= need, all = 0;
    MPI_Allreduce(&room, &all, 1, MPI_INT, MPI_MIN, s->comm);
    if (!all) {
        snprintf(why, len, "%s has %.0f MiB free, the gradients' window needs %.0f MiB", dir, have / 1048576,
                 need / 1048576);
        return no_window(s);
    }
    /* Every step below is agreed by all ranks (a collective each), so all
     * take the same branch; a window that cannot be had falls back to
     * messages on every rank rather than aborting the job. */
    s->peer = calloc((size_t)s->W, sizeof *s->peer);
    s->tmp = calloc(SYNC_SHM_CHUNK, sizeof *s->tmp);
    int ok = s->peer && s->tmp;
    if (s->sp_window) {
        s->sp_flags = calloc((size_t)s->W, sizeof *s->sp_flags);
        s->sp_list = calloc((size_t)s->sp_rows, sizeof *s->sp_list);
        ok = ok && s->sp_flags && s->sp_list;
    }
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, s->comm);
    int made = 0;
    float *mine = NULL;
    if (all) {
        MPI_Errhandler eh;
        MPI_Comm_get_errhandler(s->comm, &eh);
        MPI_Comm_set_errhandler(s->comm, MPI_ERRORS_RETURN);
        MPI_Info info;
        MPI_Info_create(&info);
        MPI_Info_set(info, "alloc_shared_noncontig", "true");
        made = MPI_Win_allocate_shared((MPI_Aint)((s->n + extra ? s->n + extra : 1) * sizeof(float)),
                                       sizeof(float), info, s->comm, &mine, &s->win) == MPI_SUCCESS;
        MPI_Info_free(&info);
        ok = made;
        for (int r = 0; ok && r < s->W; r++) {
            MPI_Aint size;
            int unit;
            ok = MPI_Win_shared_query(s->win, r, &size, &unit, &s->peer[r]) == MPI_SUCCESS && s->peer[r];
        }
        int mine2[2] = {ok, made}, every[2] = {0, 0}; /* usable, made: on every rank? */
        MPI_Allreduce(mine2, every, 2, MPI_INT, MPI_MIN, s->comm);
        all = every[0];
        if (!all && every[1]) MPI_Win_free(&s->win); /* made everywhere: freed everywhere */
        /* (made on some ranks only: left as it is, freeing it is collective) */
        MPI_Comm_set_errhandler(s->comm, eh);
        MPI_Errhandler_free(&eh);
        if (!all) snprintf(why, len, "MPI_Win_allocate_shared of %zu bytes a worker failed", (s->n + extra) * sizeof(float));
    }
    if (!all) {
        free(s->peer), free(s->tmp), free(s->sp_flags), free(s->sp_list);
        s->peer = NULL, s->tmp = NULL, s->sp_flags = NULL, s->sp_list = NULL;
        if (!*why) snprintf(why, len, "out of memory");
        return no_window(s);
    }
    MPI_Win_lock_all(MPI_MODE_NOCHECK, s->win); /* one passive epoch: loads and stores, fenced by shm_fence */
    memset(mine, 0, (s->n + extra) * sizeof *mine);
    for (int r = 0; s->sp_window && r < s->W; r++) s->sp_flags[r] = (unsigned char *)(s->peer[r] + s->n);
    free(s->recv); /* the messages' receive areas: not used from here on */
    s->recv = NULL;
    for (int k = 0; k < s->nb; k++) s->b[k].recv = NULL;
    s->shm = 1;
    return mine;
}

/* Every rank's stores to its buffer are done and seen by every other rank. */
static int shm_fence(Sync *s)
{
    MPI_Win_sync(s->win);
    int rc = MPI_Barrier(s->comm);
    MPI_Win_sync(s->win);
    return rc == MPI_SUCCESS ? 0 : -1;
}

int sync_set_reproducible(Sync *s, int nmicro, float **slot)
{
    size_t M = (size_t)s->W * (size_t)nmicro;
    if (nmicro < 1 || (s->shm && nmicro > 1) || (size_t)nmicro * (s->n ? s->n : 1) > (size_t)INT32_MAX) return -1;
    s->nmicro = nmicro, s->slot = slot;
    s->loss0 = s->nstats;
    s->nstats += (int)M;
    float *recv = s->shm ? NULL : calloc(M * (s->nrecv ? s->nrecv : 1), sizeof *recv);
    double *all = calloc((size_t)s->W * (size_t)s->nstats, sizeof *all);
    if ((!recv && !s->shm) || !all) return free(recv), free(all), -1;
    free(s->recv), free(s->all);
    s->recv = recv, s->all = all;
    if (s->shm) return 0; /* no messages: the buckets' counts are not used */
    if (s->W > 1 && nmicro > 1 && !(s->pack = calloc((size_t)nmicro * s->n, sizeof *s->pack)))
        return -1; /* one micro-batch: its slot is already laid out as the pack would be */
    for (int k = 0; k < s->nb; k++) { /* nmicro pieces to each rank, from the pack area */
        Bucket *b = &s->b[k];
        b->recv = s->recv + M * b->roff;
        for (int r = 0; r < s->W; r++) {
            b->sc[r] *= nmicro, b->sd[r] *= nmicro;
            b->rc[r] = nmicro * (int)b->len, b->rd[r] = r * nmicro * (int)b->len;
        }
    }
    return 0;
}

void sync_micro_losses(const Sync *s, double *stats, const double *loss)
{
    for (int i = 0; i < s->W * s->nmicro; i++) stats[s->loss0 + i] = 0;
    for (int j = 0; j < s->nmicro; j++) stats[s->loss0 + s->rank * s->nmicro + j] = loss[j];
}

/* Reproducible: bucket b's piece for rank r of every micro-batch, side by
 * side (micro-batch order) where the all-to-all sends them from. */
static void bucket_pack(Sync *s, const Bucket *b)
{
    for (int r = 0; r < s->W; r++) {
        size_t len = (size_t)(b->sc[r] / s->nmicro), at = (size_t)(b->sd[r] / s->nmicro);
        for (int j = 0; len && j < s->nmicro; j++)
            memcpy(s->pack + (size_t)b->sd[r] + (size_t)j * len, s->slot[j] + at, len * sizeof(float));
    }
}

void sync_begin(Sync *s, float *grads, const Model *m)
{
    s->grads = grads, s->model = m;
    s->nstarted = s->nred = s->ngath = s->failed = 0;
    memset(s->acc, 0, 4 * (size_t)m->nviews * sizeof *s->acc);
    s->maxabs = 0;
}

void sync_ready(Sync *s, size_t upto)
{
    if (!s->grads || s->shm) return;
    while (s->nstarted < s->nb && s->b[s->nstarted].hi <= upto) {
        Bucket *b = &s->b[s->nstarted++];
        if (s->W > 1 && s->nmicro > 1) bucket_pack(s, b);
        const float *send = s->nmicro > 1 ? s->pack : s->nmicro ? s->slot[0] : s->grads;
        if (s->W > 1)
            MPI_Ialltoallv(send, b->sc, b->sd, MPI_FLOAT, b->recv, b->rc,
                           b->rd, MPI_FLOAT, s->comm, &b->req);
    }
}

/* Adds the squares of x[0, n), whose flat index starts at `at`, into four
 * double accumulators chosen by flat index mod 4 (independent chains; every
 * element lands in the same chain in the same order however the buffer is
 * cut into buckets), and tracks the max |x| (NaN is left to the sums). */
VEC_CLONES
static void sumsq_acc(const float *x, size_t at, size_t n, double a[4], float *maxabs)
{
    float mx = *maxabs;
    size_t i = 0;
    for (; i < n && ((at + i) & 3); i++) {
        float v = fabsf(x[i]);
        a[(at + i) & 3] += (double)v * v;
        mx = v > mx ? v : mx;
    }
    double a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    float m0 = mx, m1 = mx, m2 = mx, m3 = mx;
    for (; i + 4 <= n; i += 4) {
        float f0 = fabsf(x[i]), f1 = fabsf(x[i + 1]), f2 = fabsf(x[i + 2]), f3 = fabsf(x[i + 3]);
        double v0 = f0, v1 = f1, v2 = f2, v3 = f3;
        a0 += v0 * v0, a1 += v1 * v1, a2 += v2 * v2, a3 += v3 * v3;
        m0 = f0 > m0 ? f0 : m0, m1 = f1 > m1 ? f1 : m1, m2 = f2 > m2 ? f2 : m2, m3 = f3 > m3 ? f3 : m3;
    }
    a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3;
    m0 = m1 > m0 ? m1 : m0, m2 = m3 > m2 ? m3 : m2, mx = m2 > m0 ? m2 : m0;
    for (; i < n; i++) {
        float v = fabsf(x[i]);
        a[(at + i) & 3] += (double)v * v;
        mx = v > mx ? v : mx;
    }
    *maxabs = mx;
}

/* The statistics of grads[at, at + len) into s->acc, view by view. */
static void range_stats(Sync *s, const float *grads, const Model *m, size_t at, size_t len)
{
    for (int v = 0; v < m->nviews; v++) {
        size_t start, cnt = overlap(m->views[v].off, m->views[v].off + m->views[v].n, at, at + len, &start);
        if (cnt) sumsq_acc(grads + start, start, cnt, s->acc + 4 * (size_t)v, &s->maxabs);
    }
}

/* Bucket b has landed: add the pieces in rank order into my part of grads
 * and add its squares, view by view, into s->acc. */
static void bucket_reduce(Sync *s, const Bucket *b, float *grads, const Model *m)
{
    size_t len = b->len;
    float *own = grads + b->mine;
    if (s->nmicro) { /* W * nmicro pieces in global micro-batch order; statistics come later */
        int P = s->W * s->nmicro;
        for (int p = 0; len && p < P; p++) {
            const float *piece = s->W > 1 ? b->recv + (size_t)p * len : s->slot[p] + b->mine;
            if (p == 0 && piece != own) memcpy(own, piece, len * sizeof(float));
            for (size_t i = 0; p > 0 && i < len; i++) own[i] += piece[i];
        }
        return;
    }
    if (s->W > 1 && len) {
        memcpy(own, b->recv, len * sizeof(float));
        for (int r = 1; r < s->W; r++) {
            const float *piece = b->recv + (size_t)r * len;
            for (size_t i = 0; i < len; i++) own[i] += piece[i];
        }
    }
    if (!interleaved(s)) range_stats(s, grads, m, b->mine, len);
}

/* Replicated, and reproducible (whose statistics cover the whole gradient):
 * every bucket is all-gathered once reduced. */
static int gathers(const Sync *s) { return s->W > 1 && (!s->sharded || s->nmicro); }

/* Reproducible: the statistics of the whole of bucket b (all-gathered), view
 * by view; buckets come in order, so each view's chains see its elements in
 * flat index order, as one pass over the view would. */
static void bucket_stats_all(Sync *s, const Bucket *b)
{
    range_stats(s, s->grads, s->model, b->lo, b->hi - b->lo);
}

/* Interleaved: the statistics of the part of bucket b (all-gathered) inside
 * my shard, as bucket_reduce takes them of my part when not interleaved. */
static void bucket_stats_own(Sync *s, const Bucket *b)
{
    size_t start, len = overlap(b->lo, b->hi, s->own_off, s->own_off + s->own_len, &start);
    if (len) range_stats(s, s->grads, s->model, start, len);
}

/* The next bucket in order (s->nred) has landed: reduce it and start its
 * all-gather (on gcomm, in bucket order on every rank). */
static int bucket_land(Sync *s)
{
    int k = s->nred++;
    Bucket *b = &s->b[k];
    bucket_reduce(s, b, s->grads, s->model);
    if (!gathers(s)) {
        if (s->nmicro) bucket_stats_all(s, b);
        s->ngath = s->nred;
        return 0;
    }
    if (b->gend != k) return 0; /* its group's last bucket starts the all-gather */
    return MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, s->grads, b->gc, b->gd, MPI_FLOAT, s->gcomm,
                           &b->greq) == MPI_SUCCESS ? 0 : -1;
}

/* The all-gathers of the reduced buckets that have completed, in order
 * (reproducible: their statistics then); wait: block until all are in. */
static int gathered(Sync *s, int wait)
{
    int rc = 0;
    while (s->ngath < s->nred && s->b[s->ngath].gend < s->nred) { /* its group started */
        int e = s->b[s->ngath].gend, done = 1;
        if (wait) rc |= MPI_Wait(&s->b[e].greq, MPI_STATUS_IGNORE) != MPI_SUCCESS;
        else MPI_Test(&s->b[e].greq, &done, MPI_STATUS_IGNORE);
        if (!done) break;
        for (; s->ngath <= e; s->ngath++) {
            if (s->nmicro) bucket_stats_all(s, &s->b[s->ngath]);
            else if (interleaved(s)) bucket_stats_own(s, &s->b[s->ngath]);
        }
    }
    return rc ? -1 : 0;
}

/* One MPI_Test moves every pending request along (MPI's progress engine),
 * so only the oldest of each kind is tested: a call costs O(1), not O(nb). */
void sync_progress(Sync *s)
{
    if (s->W == 1 || !s->grads || s->shm) return;
    int done = 1;
    while (done && s->nred < s->nstarted) {
        MPI_Test(&s->b[s->nred].req, &done, MPI_STATUS_IGNORE);
        if (done && bucket_land(s) != 0) { /* sync_grads reports it */
            s->failed = 1;
            return;
        }
    }
    gathered(s, 0);
}

/* The flagged rows of [sp_off, n): or the flags together, all-gather the
 * rows, add them in rank order (as bucket_reduce does) and add the squares
 * of those inside my shard to the view holding them, in flat index order. */
static int sparse_reduce(Sync *s, float *grads, const Model *m)
{
    if (!s->sp_rows || s->sp_window) return 0;
    size_t words = ((size_t)s->sp_rows + 63) / 64, E = (size_t)s->sp_width;
    uint64_t *mine = s->sp_bits, *all = s->sp_bits + words;
    memset(mine, 0, words * sizeof *mine);
    for (int i = 0; i < s->sp_rows; i++)
        if (m->emb_rows[i]) mine[i / 64] |= UINT64_C(1) << (i % 64);
    if (s->W == 1) memcpy(all, mine, words * sizeof *all);
    else if (MPI_Allreduce(mine, all, (int)words, MPI_UINT64_T, MPI_BOR, s->comm) != MPI_SUCCESS)
        return -1;
    int nr = 0;
    for (int i = 0; i < s->sp_rows; i++)
        if (all[i / 64] >> (i % 64) & 1) s->sp_list[nr++] = i;
    float *base = grads + s->sp_off;
    if (s->W > 1 && nr) {
        for (int j = 0; j < nr; j++) memcpy(s->sp_send + j * E, base + s->sp_list[j] * E, E * sizeof(float));
        int cnt = nr * (int)E;
        if (MPI_Allgather(s->sp_send, cnt, MPI_FLOAT, s->sp_recv, cnt, MPI_FLOAT, s->comm) != MPI_SUCCESS)
            return -1;
        for (int j = 0; j < nr; j++) {
            float *row = base + s->sp_list[j] * E;
            memcpy(row, s->sp_recv + j * E, E * sizeof(float));
            for (int r = 1; r < s->W; r++) {
                const float *piece = s->sp_recv + ((size_t)r * nr + j) * E;
                for (size_t i = 0; i < E; i++) row[i] += piece[i];
            }
        }
    }
    int v = 0;
    while (v < m->nviews && !(m->views[v].off <= s->sp_off && s->sp_off < m->views[v].off + m->views[v].n)) v++;
    if (v == m->nviews) return -1;
    for (int j = 0; j < nr; j++) {
        size_t lo = s->sp_off + (size_t)s->sp_list[j] * E, start;
        size_t cnt = overlap(lo, lo + E, s->own_off, s->own_off + s->own_len, &start);
        if (cnt) sumsq_acc(grads + start, start, cnt, s->acc + 4 * (size_t)v, &s->maxabs);
    }
    s->sp_nr = nr;
    s->sp_steps++, s->sp_rows_sum += nr;
    return 0;
}

void sync_sparse_bytes(const Sync *s, double *sparse, double *dense)
{
    double W = s->W, rowb = (double)s->sp_width * sizeof(float);
    double rows = s->sp_steps ? s->sp_rows_sum / (double)s->sp_steps : 0;
    *sparse = (W - 1) * rows * rowb + (W > 1 ? ((s->sp_rows + 63) / 64) * 8.0 : 0);
    *dense = 2 * (W - 1) / W * (double)s->sp_rows * rowb;
}

void sync_overlap_counts(const Sync *s, double *reduced, double *gathered)
{
    double n = s->ov_steps ? (double)s->ov_steps : 1;
    *reduced = s->ov_red / n, *gathered = s->ov_gath / n;
}

/* Shared memory: once every rank's gradient is final, my shard is the sum of
 * every rank's piece in rank order (bucket_reduce's sums, so its bits),
 * written in place: the others only read their own shards of my buffer.
 * Once every shard is summed, the others' shards are copied from their
 * owners. The statistics: my shard's, chunk by chunk as it is summed;
 * reproducible, the whole gradient's in flat order as it is copied in. The
 * caller must not change grads before every rank has copied (a collective
 * that needs every rank, as the statistics all-gather, or a barrier). */
/* Floats of the chunk at c of a range of len. */
static size_t shm_chunk(size_t len, size_t c) { return len - c < SYNC_SHM_CHUNK ? len - c : SYNC_SHM_CHUNK; }

/* The shared-memory reduction's two passes over [at, at + len), in chunks:
 * the rank-order sum of the shards into grads, with its statistics
 * (shm_add; r unused), then rank r's reduced part copied (shm_copy; none of
 * mine), and, reproducible (statistics over all of it), its statistics. */
typedef void (*ShmOp)(Sync *s, float *grads, const Model *m, int r, size_t at, size_t len);

static void shm_add(Sync *s, float *grads, const Model *m, int r, size_t at, size_t len)
{
    (void)r;
    float *t = s->tmp;
    for (size_t c = 0; c < len; c += SYNC_SHM_CHUNK) {
        size_t a = at + c, k = shm_chunk(len, c);
        memcpy(t, s->peer[0] + a, k * sizeof *t);
        for (int q = 1; q < s->W; q++) {
            const float *piece = s->peer[q] + a;
            for (size_t i = 0; i < k; i++) t[i] += piece[i];
        }
        memcpy(grads + a, t, k * sizeof *t);
        if (!s->nmicro) range_stats(s, grads, m, a, k);
    }
}

static void shm_copy(Sync *s, float *grads, const Model *m, int r, size_t at, size_t len)
{
    for (size_t c = 0; c < len; c += SYNC_SHM_CHUNK) {
        size_t a = at + c, k = shm_chunk(len, c);
        if (r != s->rank) memcpy(grads + a, s->peer[r] + a, k * sizeof *grads);
        if (s->nmicro) range_stats(s, grads, m, a, k);
    }
}

/* op over [off, off + len) but, inside the window's rows [sp_off, n), only
 * the flagged rows' parts (the others are +0 on every rank: adding, copying
 * or counting them changes no bit). */
static void shm_ranges(Sync *s, float *grads, const Model *m, int r, size_t off, size_t len, ShmOp op)
{
    size_t end = off + len, cut = s->sp_off < off ? off : s->sp_off < end ? s->sp_off : end;
    if (cut > off) op(s, grads, m, r, off, cut - off);
    size_t E = (size_t)s->sp_width;
    for (int j = 0; cut < end && j < s->sp_nr; j++) {
        size_t lo = s->sp_off + (size_t)s->sp_list[j] * E, start, k = overlap(lo, lo + E, cut, end, &start);
        if (k) op(s, grads, m, r, start, k);
    }
}

static int shm_reduce(Sync *s, float *grads, const Model *m)
{
    if (grads != s->peer[s->rank]) return -1;
    if (s->sp_window) memcpy(s->sp_flags[s->rank], m->emb_rows, (size_t)s->sp_rows);
    if (shm_fence(s) != 0) return -1;
    s->sp_nr = 0;
    for (int i = 0; i < s->sp_rows; i++) { /* the same list on every rank */
        int any = 0;
        for (int r = 0; r < s->W; r++) any |= s->sp_flags[r][i];
        if (any) s->sp_list[s->sp_nr++] = i;
    }
    shm_ranges(s, grads, m, s->rank, s->own_off, s->own_len, shm_add);
    if (shm_fence(s) != 0) return -1;
    for (int r = 0; r < s->W; r++) {
        if (r == s->rank && !s->nmicro) continue; /* mine, its statistics taken */
        shm_ranges(s, grads, m, r, (size_t)s->displs[r], (size_t)s->counts[r], shm_copy);
    }
    return 0;
}

void sync_shared_rows(Sync *s, size_t off, int rows, int width)
{
    if (s->shm || s->sp_rows || off + (size_t)rows * (size_t)width != s->n) return;
    s->sp_off = off, s->sp_rows = rows, s->sp_width = width, s->sp_window = 1;
}

int sync_rows(const Sync *s, const int **rows, size_t *off, size_t *width)
{
    if (!s->sp_rows) return -1; /* (the window's rows are dropped when there is no window) */
    *rows = s->sp_list, *off = s->sp_off, *width = (size_t)s->sp_width;
    return s->sp_nr;
}

/* sync_grads up to (not including) the all-gather of the shards. */
static int reduce_grads(Sync *s, float *grads, const Model *m, double *stats)
{
    if (s->grads != grads) sync_begin(s, grads, m);
    s->ov_steps++, s->ov_red += s->nred, s->ov_gath += s->ngath;
    int rc = s->failed ? -1 : 0;
    if (s->shm) {
        rc = shm_reduce(s, grads, m);
    } else {
        sync_ready(s, s->n);
        while (s->nred < s->nb) {
            Bucket *b = &s->b[s->nred];
            if (s->W > 1 && MPI_Wait(&b->req, MPI_STATUS_IGNORE) != MPI_SUCCESS) rc = -1;
            if (bucket_land(s) != 0) rc = -1;
        }
    }
    /* reproducible: the whole gradient on every rank, then its statistics
     * (sync.sparse_embedding is refused with it: the buckets cover it all) */
    if ((s->nmicro || interleaved(s)) && gathered(s, 1) != 0) rc = -1;
    s->grads = NULL;
    if (rc || sparse_reduce(s, grads, m) != 0) return -1;
    double total = 0;
    for (int v = 0; v < m->nviews; v++) {
        const double *a = s->acc + 4 * (size_t)v;
        stats[ST_TENSOR0 + v] = (a[0] + a[1]) + (a[2] + a[3]);
        total += stats[ST_TENSOR0 + v];
    }
    stats[ST_SUMSQ] = total;
    stats[ST_MAXABS] = (double)s->maxabs;
    stats[ST_NONFINITE] = isfinite(total) ? 0.0 : 1.0;
    return 0;
}

int sync_grads(Sync *s, float *grads, const Model *m, double *stats)
{
    if (reduce_grads(s, grads, m, stats) != 0) return -1;
    if (s->shm) return MPI_Barrier(s->comm) == MPI_SUCCESS ? 0 : -1; /* every rank has copied */
    return gathered(s, 1);
}

int sync_params(Sync *s, float *params)
{
    if (s->W == 1) return 0;
    return MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, params, s->counts, s->displs, MPI_FLOAT,
                          s->comm) == MPI_SUCCESS ? 0 : -1;
}

/* Every rank's statistics are in s->all: combine them in rank order. */
static void stats_combine(const Sync *s, double *global)
{
    int k = s->nstats;
    memcpy(global, s->all, (size_t)k * sizeof *global);
    for (int r = 1; r < s->W; r++) {
        const double *x = s->all + (size_t)r * k;
        for (int j = 0; j < k; j++) {
            if (j == ST_NONFINITE || j == ST_MAXABS || j == ST_REQ)
                global[j] = fmax(global[j], x[j]);
            else if (s->nmicro && (j == ST_SUMSQ || (j >= ST_TENSOR0 && j < s->loss0)))
                continue; /* taken over the whole gradient: rank 0's, equal on all */
            else
                global[j] += x[j]; /* loss slots: one rank's value plus zeros, exact */
        }
    }
    if (s->nmicro) {
        global[ST_LOSS] = 0;
        for (int i = 0; i < s->W * s->nmicro; i++) global[ST_LOSS] += global[s->loss0 + i];
    }
}

int sync_stats(Sync *s, const double *local, double *global)
{
    int k = s->nstats;
    if (MPI_Allgather(local, k, MPI_DOUBLE, s->all, k, MPI_DOUBLE, s->comm) != MPI_SUCCESS)
        return -1;
    stats_combine(s, global);
    return 0;
}

int sync_grads_stats(Sync *s, float *grads, const Model *m, double *local, double *global)
{
    if (reduce_grads(s, grads, m, local) != 0) return -1;
    MPI_Request rq = MPI_REQUEST_NULL;
    int k = s->nstats, rc = 0;
    rc |= MPI_Iallgather(local, k, MPI_DOUBLE, s->all, k, MPI_DOUBLE, s->comm, &rq) != MPI_SUCCESS;
    rc |= gathered(s, 1) != 0;
    rc |= MPI_Wait(&rq, MPI_STATUS_IGNORE) != MPI_SUCCESS;
    if (rc) return -1;
    stats_combine(s, global);
    return 0;
}
