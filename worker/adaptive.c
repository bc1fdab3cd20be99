/* adaptive: forward and backward of the adaptive softmax (see adaptive.h):
 * the head and each tail are the linear and softmax cross-entropy kernels of
 * layers.c, the tails over the gathered rows whose target they hold. Rows
 * are taken in ascending order within each cluster, so the result depends
 * only on the batch, never on timing. */
#include "worker/adaptive.h"

#include <assert.h>
#include <string.h>

#include <cblas.h>
#undef I /* OpenBLAS's <complex.h>: layers.h names a size I */

#include "worker/layers.h"

int adaptive_setup(Adaptive *a, const Config *c)
{
    memset(a, 0, sizeof *a);
    int K = cfg_adaptive(c, a->cut, a->dim);
    if (K <= 0) return -1;
    a->H = c->model_hidden, a->K = K, a->O = a->cut[0] + K;
    return K;
}

static int widest_tail(const Adaptive *a)
{
    int w = 0;
    for (int k = 0; k < a->K; k++)
        if (a->cut[k + 1] - a->cut[k] > w) w = a->cut[k + 1] - a->cut[k];
    return w;
}

size_t adaptive_scratch(const Adaptive *a, int N)
{
    size_t n = (size_t)N;
    return n * (3 + 2 * (size_t)a->H + 2 * (size_t)a->dim[0] + (size_t)widest_tail(a));
}

void adaptive_bind_scratch(Adaptive *a, float *buf, int N)
{
    size_t n = (size_t)N;
    _Static_assert(sizeof(int) == sizeof(float), "ints share the float scratch");
    a->htgt = (int *)(void *)buf, a->rows = a->htgt + n, a->ltgt = a->rows + n;
    a->xg = buf + 3 * n, a->dxg = a->xg + n * (size_t)a->H;
    a->z = a->dxg + n * (size_t)a->H, a->dz = a->z + n * (size_t)a->dim[0];
    a->tp = a->dz + n * (size_t)a->dim[0];
}

/* Head targets, and the tail rows grouped by cluster with their offsets. */
static void adaptive_route(Adaptive *a, const int *targets, int N)
{
    int S = a->cut[0], K = a->K;
    memset(a->nrows, 0, sizeof a->nrows);
    for (int n = 0; n < N; n++) {
        int t = targets[n], k = 0;
        assert(t >= 0 && t < a->cut[K]);
        if (t < S) {
            a->htgt[n] = t;
            continue;
        }
        while (t >= a->cut[k + 1]) k++;
        a->htgt[n] = S + k;
        a->nrows[k]++;
    }
    int at = 0;
    size_t zo = 0, po = 0;
    for (int k = 0; k < K; k++) {
        a->first[k] = at, a->zoff[k] = zo, a->poff[k] = po;
        at += a->nrows[k];
        zo += (size_t)a->nrows[k] * (size_t)a->dim[k];
        po += (size_t)a->nrows[k] * (size_t)(a->cut[k + 1] - a->cut[k]);
    }
    int fill[ADAPTIVE_MAX];
    memcpy(fill, a->first, sizeof fill);
    for (int n = 0; n < N; n++) {
        if (a->htgt[n] < S) continue;
        int k = a->htgt[n] - S, j = fill[k]++;
        a->rows[j] = n, a->ltgt[j] = targets[n] - a->cut[k];
    }
}

/* Cluster k over its r gathered rows: z = xg proj; tp = z tw + tb; returns
 * the sum of -log tail_k(target). */
static double tail_forward(Adaptive *a, int k)
{
    int r = a->nrows[k], d = a->dim[k], nk = a->cut[k + 1] - a->cut[k], H = a->H;
    const float *xg = a->xg + (size_t)a->first[k] * H; // (r, H)
    float *z = a->z + a->zoff[k], *tp = a->tp + a->poff[k]; // (r, d), (r, nk)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, d, H, 1.0f, xg, H, a->proj[k], d,
                0.0f, z, d);
    linear_forward(tp, z, a->tw[k], a->tb[k], r, d, nk);
    return softmax_ce_forward(tp, tp, a->ltgt + a->first[k], r, nk);
}

double adaptive_forward(Adaptive *a, float *head, const float *x, const int *targets,
                        const float *hw, const float *hb, int N)
{
    int H = a->H;
    adaptive_route(a, targets, N);
    linear_forward(head, x, hw, hb, N, H, a->O);
    double loss = softmax_ce_forward(head, head, a->htgt, N, a->O);
    for (int j = 0; j < a->first[a->K - 1] + a->nrows[a->K - 1]; j++)
        memcpy(a->xg + (size_t)j * H, x + (size_t)a->rows[j] * H, (size_t)H * sizeof(float));
    for (int k = 0; k < a->K; k++)
        if (a->nrows[k] > 0) loss += tail_forward(a, k);
    return loss;
}

/* Cluster k: gradients of tw, tb, proj added; dxg of its rows overwritten. */
static void tail_backward(Adaptive *a, int k, float scale)
{
    int r = a->nrows[k], d = a->dim[k], nk = a->cut[k + 1] - a->cut[k], H = a->H;
    const float *xg = a->xg + (size_t)a->first[k] * H; // (r, H)
    float *dxg = a->dxg + (size_t)a->first[k] * H;     // (r, H)
    const float *z = a->z + a->zoff[k];                // (r, d)
    float *dz = a->dz + a->zoff[k], *tp = a->tp + a->poff[k]; // (r, d), (r, nk)
    softmax_ce_backward(tp, tp, a->ltgt + a->first[k], scale, r, nk);
    linear_backward(dz, a->dtw[k], a->dtb[k], tp, z, a->tw[k], r, d, nk);
    // dproj (H, d) += xg^T (H, r) dz (r, d); dxg (r, H) = dz (r, d) proj^T (d, H)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, d, r, 1.0f, xg, H, dz, d, 1.0f,
                a->dproj[k], d);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, H, d, 1.0f, dz, d, a->proj[k], d,
                0.0f, dxg, H);
}

void adaptive_backward(Adaptive *a, float *dx, float *dhw, float *dhb, float *head,
                       const float *x, const float *hw, float scale, int N)
{
    int H = a->H;
    softmax_ce_backward(head, head, a->htgt, scale, N, a->O);
    linear_backward(dx, dhw, dhb, head, x, hw, N, H, a->O);
    for (int k = 0; k < a->K; k++)
        if (a->nrows[k] > 0) tail_backward(a, k, scale);
    for (int j = 0; j < a->first[a->K - 1] + a->nrows[a->K - 1]; j++) { // each row in one cluster
        float *d = dx + (size_t)a->rows[j] * H;
        const float *g = a->dxg + (size_t)j * H;
        for (int i = 0; i < H; i++) d[i] += g[i];
    }
}

double adaptive_tail_flops(const Adaptive *a)
{
    double f = 0;
    for (int k = 0; k < a->K; k++)
        f += 6.0 * a->nrows[k] * a->dim[k] * ((double)a->H + (a->cut[k + 1] - a->cut[k]));
    return f;
}
