/* mpi_sync: the gradient sync and norm collective under a real mpirun with
 * W ranks, against an independent float64 recomputation.
 *   mpirun -np W build/tests/mpi_sync N [BUCKET]
 * Each rank fills a gradient of N floats from (rank, seed); after sync_grads
 * every rank must hold identical bits equal to the rank-order float sum, and
 * the global norm from sync_stats must match a float64 (long double)
 * recomputation of the norm of that sum, on every rank bit for bit. Sizes
 * that do not divide by W, and N < W (ranks owning nothing), are covered by
 * the callers. BUCKET (floats, default 0: one bucket) cuts the reduction into
 * buckets, started as the "backward" marks prefixes of the buffer final
 * (in 5 uneven steps, with progress calls between): the bits must not
 * depend on it. Before the last mark, the buckets started so far must be
 * reduced, and those of complete all-gather groups (one bucket each from
 * SYNC_GATHER_MIN floats up) all-gathered, by sync_progress alone (the
 * per-bucket pipeline), every rank holding their rank-order sums before
 * sync_grads is called. sync_grads_stats (the folded collective) must give the
 * same gradient and statistics bits as sync_grads + sync_stats. BUCKET "shm":
 * the gradient lives in the shared window (sync_shared_grads; every rank of
 * one mpirun is on this node, so W > 1 must get it) and is reduced through
 * it, with the same checks. "repro" and "shmrepro": the same with
 * sync.reproducible's one micro-batch a rank (statistics over the whole
 * gradient, in flat order), as messages and through the window. As
 * messages, each all-gather group (one bucket at the usual sizes) must be
 * reduced a 1/W part by every rank (within one float), its buckets' pieces
 * adding up to those parts: the traffic of every bucket goes both ways over
 * a link, not to one owner. Prints the worst errors; exits non-zero on any
 * failure. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/hash.h"
#include "worker/sync.h"

/* "rows", "shmrows": [rows_off, n) is a matrix of rows of ROW_W floats of
 * which each rank writes a pseudo-random fifth (the rest stays 0), as the
 * embedding's gradient is. */
#define ROW_W 7
static size_t rows_off = SIZE_MAX;

static int flagged(int rank, size_t row) { return rng_derive(7, (uint64_t)rank, row) % 5 == 0; }

static float value(int rank, size_t i)
{
    if (i >= rows_off && !flagged(rank, (i - rows_off) / ROW_W)) return 0.0f;
    Rng r;
    rng_init(&r, rng_derive(42, (uint64_t)rank, i));
    double u = rng_uniform(&r) * 2 - 1;
    return (float)(u * (i % 7 == 0 ? 1e3 : 1.0)); /* mixed magnitudes */
}

/* The pipeline: with the last mark not yet reached, sync_progress alone
 * must reduce every started bucket and complete its all-gather (spun for at
 * most 60 s, a guard against a hang, not a timing). Returns how many buckets
 * hold the rank-order sum over all of [lo, hi) on this rank; -2 if they did
 * not all land. */
static int gathered_early(Sync *s, const float *g, int W)
{
    int whole = 0; /* buckets of the all-gather groups inside the started ones */
    for (int k = 0; k < s->nstarted; k++)
        if (s->b[k].gend == k) whole = k + 1;
    double t0 = MPI_Wtime();
    for (;;) {
        sync_progress(s);
        if (s->nred == s->nstarted && s->ngath == whole) break;
        if (MPI_Wtime() - t0 > 60) return -2;
    }
    int ok = 0;
    for (int k = 0; k < whole; k++) {
        int same = 1;
        for (size_t i = s->b[k].lo; i < s->b[k].hi && same; i++) {
            float acc = value(0, i);
            for (int r = 1; r < W; r++) acc += value(r, i);
            same = memcmp(&acc, &g[i], sizeof acc) == 0;
        }
        ok += same;
    }
    return ok == whole ? ok : -2;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, W;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &W);
    size_t n = argc > 1 ? (size_t)atol(argv[1]) : 1000;
    /* Two fake tensors splitting the flat range, to exercise per-tensor sums. */
    Model m;
    memset(&m, 0, sizeof m);
    m.nviews = 2;
    m.views[0].off = 0, m.views[0].n = n / 3;
    m.views[1].off = n / 3, m.views[1].n = n - n / 3;
    Sync s;
    const char *mode = argc > 2 ? argv[2] : "0";
    int shm = !strcmp(mode, "shm") || !strcmp(mode, "shmrepro") || !strcmp(mode, "shmrows");
    int repro = !strcmp(mode, "repro") || !strcmp(mode, "shmrepro");
    int rows = !strcmp(mode, "rows") || !strcmp(mode, "shmrows");
    size_t bucket = shm || repro ? 0 : rows ? 4096 : (size_t)atol(mode);
    size_t nrows = rows ? n / 2 / ROW_W : 0;
    unsigned char *flags = calloc(nrows + 1, 1);
    if (rows) rows_off = n - nrows * ROW_W;
    for (size_t i = 0; i < nrows; i++) flags[i] = (unsigned char)flagged(rank, i);
    m.emb_rows = flags;
    if (sync_init(&s, MPI_COMM_WORLD, n, 2, bucket, 0) != 0) MPI_Abort(MPI_COMM_WORLD, 1);
    float *g = malloc(n * sizeof *g), *ref = malloc(n * sizeof *ref), *window = NULL;
    if (shm) {
        char why[256];
        if (rows) sync_shared_rows(&s, rows_off, (int)nrows, ROW_W);
        window = sync_shared_grads(&s, repro, why, sizeof why);
        if (W > 1 && !window) {
            fprintf(stderr, "mpi_sync: no shared window on one node (%s)\n", why);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (window) free(g), g = window;
    }
    float *slot[1] = {g}; /* sync.reproducible, one micro-batch a rank: the whole gradient's statistics */
    if (repro && sync_set_reproducible(&s, 1, slot) != 0) MPI_Abort(MPI_COMM_WORLD, 1);
    double *loc = calloc((size_t)s.nstats, sizeof *loc), *glob = calloc((size_t)s.nstats, sizeof *glob);
    for (size_t i = 0; i < n; i++) g[i] = -1e30f; /* not final yet: must never be sent */
    sync_begin(&s, g, &m);
    int early = -1; /* buckets gathered before sync_grads */
    size_t done = 0, marks[5] = {n / 7, n / 3, n / 3 + 1, (3 * n) / 4, n};
    for (int k = 0; k < 5; k++) {
        for (; done < marks[k]; done++) g[done] = value(rank, done);
        sync_ready(&s, done);
        for (int p = 0; p < 3; p++) sync_progress(&s);
        if (k == 3 && W > 1 && s.nstarted > 0) early = gathered_early(&s, g, W);
    }
    if (sync_grads(&s, g, &m, loc) != 0 || sync_stats(&s, loc, glob) != 0) MPI_Abort(MPI_COMM_WORLD, 1);
    /* Reference: float sum in rank order, norm in long double. */
    long double sq = 0, sq0 = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float acc = value(0, i);
        for (int r = 1; r < W; r++) acc += value(r, i);
        ref[i] = acc;
        if (memcmp(&acc, &g[i], sizeof acc) != 0) bad++;
        sq += (long double)acc * acc;
        if (i < n / 3) sq0 += (long double)acc * acc;
    }
    /* shmrows: the rows some rank wrote, and only those, are the sync's
     * list (sync_rows), ascending. */
    int rows_bad = 0;
    if (shm && rows && W > 1) {
        const int *list;
        size_t roff, rw;
        int nr = sync_rows(&s, &list, &roff, &rw), j = 0;
        rows_bad = nr < 0 || roff != rows_off || rw != ROW_W;
        for (size_t i = 0; !rows_bad && i < nrows; i++) {
            int any = 0;
            for (int r = 0; r < W; r++) any |= flagged(r, i);
            if (any) rows_bad |= j >= nr || list[j++] != (int)i;
        }
        rows_bad |= j != nr;
    }
    double norm = sqrt(glob[ST_SUMSQ]), refnorm = (double)sqrtl(sq);
    double relerr = fabs(norm - refnorm) / refnorm;
    double relerr0 = sq0 == 0 ? fabs(glob[ST_TENSOR0]) : fabs(glob[ST_TENSOR0] - (double)sq0) / (double)sq0;
    /* Every rank must hold the same bits for the gradient and the norm. */
    unsigned long long h[2] = {fnv1a64(g, n * sizeof *g, FNV1A64_INIT), 0};
    memcpy(&h[1], &norm, sizeof norm);
    unsigned long long *all = malloc((size_t)W * sizeof h);
    MPI_Gather(h, 2, MPI_UNSIGNED_LONG_LONG, all, 2, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    /* The folded collective (sync_grads_stats), on the same buffer (the
     * window must be), gives the same bits. */
    int fold_bad = 0;
    float *g1 = malloc(n * sizeof *g1);
    double *glob2 = calloc((size_t)s.nstats, sizeof *glob2);
    if (!g1 || !glob2) MPI_Abort(MPI_COMM_WORLD, 1);
    memcpy(g1, g, n * sizeof *g);
    for (size_t i = 0; i < n; i++) g[i] = value(rank, i);
    memset(loc, 0, (size_t)s.nstats * sizeof *loc);
    if (sync_grads_stats(&s, g, &m, loc, glob2) != 0) MPI_Abort(MPI_COMM_WORLD, 1);
    fold_bad = memcmp(g1, g, n * sizeof *g) != 0 || memcmp(glob2, glob, (size_t)s.nstats * sizeof *glob) != 0;
    free(g1), free(glob2);
    int unbalanced = 0; /* groups whose parts are not 1/W each, or not what their buckets send */
    for (int k = 0; !s.shm && W > 1 && k < s.nb; k++) {
        const Bucket *e = &s.b[s.b[k].gend];
        if (s.b[k].gend != k) continue;
        size_t glen = e->ghi - e->glo;
        for (int r = 0; r < W; r++) {
            long sent = 0;
            for (int j = k; j >= 0 && s.b[j].gend == k; j--) sent += s.b[j].sc[r];
            unbalanced += e->gc[r] < (long)(glen / (size_t)W) || e->gc[r] > (long)(glen / (size_t)W) + 1 ||
                          sent != e->gc[r];
        }
    }
    int fail = bad != 0 || fold_bad || !(relerr <= 1e-12) || !(relerr0 <= 1e-12) || early == -2 || unbalanced || rows_bad;
    if (rank == 0) {
        for (int r = 1; r < W; r++) fail |= all[2 * r] != all[0] || all[2 * r + 1] != all[1];
        printf("mpi_sync W=%d n=%zu %s=%zu (%d buckets): %d elements differ from the rank-order sum; norm %.17g vs "
               "float64 reference %.17g, rel err %.2g (tol 1e-12); tensor 0 rel err %.2g; "
               "ranks identical: %s; folded stats collective same bits: %s; groups not split 1/W a rank: %d; rows list wrong: %d; ", W, n,
               s.shm ? (repro ? "reproducible, shared memory, bucket" : "shared memory, bucket")
                     : repro ? "reproducible, bucket" : "bucket", bucket, s.nb, bad, norm,
               refnorm, relerr, relerr0, fail ? "no or FAILED" : "yes", fold_bad ? "NO" : "yes", unbalanced, rows_bad);
        if (early == -1) printf("no bucket started before the end\n");
        else if (early == -2) printf("buckets started before the end NOT all reduced and gathered by sync_progress\n");
        else printf("%d buckets reduced and all-gathered during \"backward\", holding the sums\n", early);
    }
    int anyfail = 0;
    MPI_Allreduce(&fail, &anyfail, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (g != window) free(g);
    free(ref), free(loc), free(glob), free(all), free(flags);
    sync_free(&s); /* the window too */
    MPI_Finalize();
    return anyfail ? 1 : 0;
}
