/* sync: fixed-order gradient reduction and statistics collective (sync.h). */
#include "worker/sync.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void shard_range(size_t n, int W, int r, size_t *off, size_t *len)
{
    size_t base = n / (size_t)W, extra = n % (size_t)W, ur = (size_t)r;
    *len = base + (ur < extra ? 1 : 0);
    *off = ur * base + (ur < extra ? ur : extra);
}

int sync_init(Sync *s, MPI_Comm comm, size_t n, int ntensors)
{
    memset(s, 0, sizeof *s);
    s->comm = comm, s->n = n;
    MPI_Comm_rank(comm, &s->rank);
    MPI_Comm_size(comm, &s->W);
    if (n / (size_t)s->W + 1 > (size_t)INT32_MAX) return -1;
    shard_range(n, s->W, s->rank, &s->own_off, &s->own_len);
    s->counts = calloc((size_t)s->W, sizeof *s->counts);
    s->displs = calloc((size_t)s->W, sizeof *s->displs);
    s->rcounts = calloc((size_t)s->W, sizeof *s->rcounts);
    s->rdispls = calloc((size_t)s->W, sizeof *s->rdispls);
    s->recv = calloc((size_t)s->W * (s->own_len ? s->own_len : 1), sizeof *s->recv);
    s->nstats = ST_TENSOR0 + ntensors;
    s->all = calloc((size_t)s->W * (size_t)s->nstats, sizeof *s->all);
    if (!s->counts || !s->displs || !s->rcounts || !s->rdispls || !s->recv || !s->all) {
        sync_free(s);
        return -1;
    }
    for (int r = 0; r < s->W; r++) {
        size_t off, len;
        shard_range(n, s->W, r, &off, &len);
        s->counts[r] = (int)len, s->displs[r] = (int)off;
        s->rcounts[r] = (int)s->own_len, s->rdispls[r] = r * (int)s->own_len;
    }
    return 0;
}

void sync_free(Sync *s)
{
    free(s->counts), free(s->displs), free(s->rcounts), free(s->rdispls);
    free(s->recv), free(s->all);
    s->counts = s->displs = s->rcounts = s->rdispls = NULL, s->recv = NULL, s->all = NULL;
}

/* Sum of squares, max |g| and a non-finite flag over my shard, overall and
 * per tensor view (views clipped to the shard). */
static void shard_stats(const Sync *s, const float *g, const Model *m, double *st)
{
    size_t lo = s->own_off, hi = s->own_off + s->own_len;
    double total = 0, maxabs = 0;
    for (int v = 0; v < m->nviews; v++) {
        size_t a = m->views[v].off, b = a + m->views[v].n;
        if (a < lo) a = lo;
        if (b > hi) b = hi;
        double sq = 0;
        for (size_t i = a; i < b; i++) {
            double x = (double)g[i];
            sq += x * x;
            if (fabs(x) > maxabs) maxabs = fabs(x);
        }
        st[ST_TENSOR0 + v] = sq;
        total += sq;
    }
    st[ST_SUMSQ] = total;
    st[ST_MAXABS] = maxabs;
    st[ST_NONFINITE] = isfinite(total) ? 0.0 : 1.0;
}

int sync_grads(Sync *s, float *grads, const Model *m, double *stats)
{
    size_t len = s->own_len;
    if (s->W > 1) {
        /* Each rank sends piece r of its gradient to rank r. */
        if (MPI_Alltoallv(grads, s->counts, s->displs, MPI_FLOAT, s->recv, s->rcounts,
                          s->rdispls, MPI_FLOAT, s->comm) != MPI_SUCCESS)
            return -1;
        float *own = grads + s->own_off;
        memcpy(own, s->recv, len * sizeof(float));
        for (int r = 1; r < s->W; r++) {
            const float *piece = s->recv + (size_t)r * len;
            for (size_t i = 0; i < len; i++) own[i] += piece[i];
        }
    }
    shard_stats(s, grads, m, stats);
    if (s->W > 1 && MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, grads, s->counts, s->displs,
                                   MPI_FLOAT, s->comm) != MPI_SUCCESS)
        return -1;
    return 0;
}

int sync_stats(Sync *s, const double *local, double *global)
{
    int k = s->nstats;
    if (MPI_Allgather(local, k, MPI_DOUBLE, s->all, k, MPI_DOUBLE, s->comm) != MPI_SUCCESS)
        return -1;
    memcpy(global, s->all, (size_t)k * sizeof *global);
    for (int r = 1; r < s->W; r++) {
        const double *x = s->all + (size_t)r * k;
        for (int j = 0; j < k; j++) {
            if (j == ST_NONFINITE || j == ST_MAXABS || j == ST_REQ)
                global[j] = fmax(global[j], x[j]);
            else
                global[j] += x[j];
        }
    }
    return 0;
}
