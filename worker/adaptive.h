/* adaptive: the adaptive softmax (Grave et al. 2017, "Efficient softmax
 * approximation for GPUs") over word ids ordered by frequency. The head is a
 * softmax over the shortlist [0, S) and one entry per tail cluster; tail
 * cluster k is a softmax over the words [cut[k], cut[k+1]) after a
 * projection of the input to dim[k] < H units:
 *   log p(w) = log head(w)                                w < S
 *   log p(w) = log head(S + k) + log tail_k(w - cut[k])   cut[k] <= w < cut[k+1]
 * a normalised distribution over all V words, so the loss is an exact
 * log-likelihood. Training and evaluation compute a tail only for the rows
 * whose target falls in it: the cost of the V-wide softmax goes to the head
 * (S + K wide) plus the rare rows' tails. Sizes: N rows, H input, V vocab,
 * S = cut[0] shortlist, K clusters, O = S + K head outputs, n_k = cut[k+1] -
 * cut[k] words and d_k = dim[k] projection of cluster k. */
#ifndef CLIPD_ADAPTIVE_H
#define CLIPD_ADAPTIVE_H

#include "common/cfg.h"

#define ADAPTIVE_MAX CFG_MAX_CLUSTERS

typedef struct {
    int H, K, O;
    int cut[ADAPTIVE_MAX + 1];   /* cut[0] = S, cut[K] = V */
    int dim[ADAPTIVE_MAX];       /* d_k */
    /* Parameters and gradients (views of the model's flat buffers; the head's
     * are the model's hw, hb, dhw, dhb). */
    float *proj[ADAPTIVE_MAX], *dproj[ADAPTIVE_MAX]; /* (H, d_k) */
    float *tw[ADAPTIVE_MAX], *dtw[ADAPTIVE_MAX];     /* (d_k, n_k) */
    float *tb[ADAPTIVE_MAX], *dtb[ADAPTIVE_MAX];     /* (n_k) */
    /* Scratch for N rows, from the caller (adaptive_scratch floats). The
     * rows of cluster k are rows[first[k] .. first[k] + nrows[k]), in
     * ascending order; its blocks of z and tp start at zoff[k] and poff[k]. */
    int *htgt;                   /* (N) head target: w, or S + k */
    int *rows, *ltgt;            /* (N) tail rows by cluster, their targets - cut[k] */
    float *xg, *dxg;             /* (N, H) the tail rows' inputs, their gradients */
    float *z, *dz;               /* (sum r_k d_k <= N d_0) projected inputs, their gradients */
    float *tp;                   /* (sum r_k n_k <= N max n_k) tail logits, then probabilities */
    int nrows[ADAPTIVE_MAX], first[ADAPTIVE_MAX];
    size_t zoff[ADAPTIVE_MAX], poff[ADAPTIVE_MAX];
} Adaptive;

/* Sizes from cfg_adaptive. Returns K (>= 1), or -1 (the config has no adaptive softmax). */
int adaptive_setup(Adaptive *a, const Config *c);
/* Floats of scratch adaptive_forward needs for N rows (ints counted as floats). */
size_t adaptive_scratch(const Adaptive *a, int N);
/* Point the scratch pointers into buf (adaptive_scratch(a, N) floats). */
void adaptive_bind_scratch(Adaptive *a, float *buf, int N);
/* head (N, O): the head's logits x hw + hb, left as its probabilities.
 * Returns the sum over rows of -log p(target), accumulated in double. */
double adaptive_forward(Adaptive *a, float *head /* (N, O) */, const float *x /* (N, H) */,
                        const int *targets /* (N) */, const float *hw /* (H, O) */,
                        const float *hb /* (O) */, int N);
/* After adaptive_forward on the same rows: dx = d(scale * loss)/dx
 * (overwritten); the gradients of hw, hb and every tail are ADDED. head is
 * used as scratch. */
void adaptive_backward(Adaptive *a, float *dx /* (N, H) */, float *dhw /* (H, O) */,
                       float *dhb /* (O) */, float *head /* (N, O) */, const float *x /* (N, H) */,
                       const float *hw /* (H, O) */, float scale, int N);
/* Matrix-product flops of the last forward and backward's tails (6 per
 * multiply-add, as model_flops counts). */
double adaptive_tail_flops(const Adaptive *a);

#endif
