/* model: the recurrent language model (or adding-problem regressor) with all
 * parameters in one flat float buffer, gradients in another, and a table of
 * named views into both. Activations are allocated once at init; the step
 * loop allocates nothing. Tensors are laid out head first (with the
 * adaptive softmax: its tail clusters after the head), then the
 * recurrent layers from the top down, then the embedding: the order backward
 * completes them in. */
#ifndef CLIPD_MODEL_H
#define CLIPD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "common/cfg.h"
#include "worker/adaptive.h"

#define MODEL_MAX_LAYERS CFG_MAX_LAYERS
#define MODEL_MAX_VIEWS CFG_MAX_TENSORS

typedef struct {
    char name[32];
    size_t off;   /* offset into the flat buffers, in floats */
    size_t n;     /* number of floats */
    int rows, cols; /* 2-D shape (cols = 1 with rows = n for vectors: see ndim) */
    int ndim;
} ParamView;

typedef struct {
    float *wx, *wh, *b;       /* (Ein, G*H), (H, G*H), (G*H) */
    float *dwx, *dwh, *db;    /* same shapes, in the gradient buffer */
    float *h;                 /* (T+1, B, H); h[0] is the carried state */
    float *c;                 /* (T+1, B, H); LSTM only */
    float *gates;             /* (T, B, G*H); LSTM (4H: i,f,g,o) and GRU (3H: r,z,n) */
    float *un;                /* (T, B, H); GRU: the recurrent n projection */
    int Ein;
} Layer;

/* sync.reproducible with the micro-batches stacked into the model's one
 * batch (worker/repro.c): the B streams are n micro-batches of mb. Forward
 * and activation gradients run over all B rows at once; every reduction over
 * rows goes by micro-batch instead: backward adds the weight gradients over
 * micro-batch j's rows into slot[j] (laid out as grads), each from a gathered
 * copy of its rows in order (t, b), so with the shapes and order a model of
 * batch mb uses, and forward adds j's loss sum into loss[j]. */
typedef struct {
    int mb, n;
    float **slot;             /* (n) */
    double *loss;             /* (n) */
    float *ga, *gu, *gx, *gh; /* (T*mb, width) gathered rows: da or dy, GRU du, inputs, h */
    int *gtok;                /* (T*mb) gathered tokens */
} ModelSplit;

typedef struct {
    int kind, source, L, V, E, H, G, T, B, Ein0, O; /* O: outputs of the head (V, S + K adaptive, or 1) */
    size_t nparams;
    size_t nfloats;           /* floats model_init allocated: params, grads, activations */
    float *params;            /* (nparams) */
    float *grads;             /* (nparams) */
    ParamView views[MODEL_MAX_VIEWS];
    int nviews;
    float *emb, *demb;        /* (V, E); markov only */
    unsigned char *emb_rows;  /* (V) 1: row of demb written since the last zero_grad (markov only) */
    float *hw, *hb, *dhw, *dhb; /* head (H, O), (O) */
    Layer layer[MODEL_MAX_LAYERS];
    float *x0;                /* (T, B, E) embedded inputs (markov) */
    float *out;               /* (T*B, O) logits then probs (markov) or (B, O) */
    float *dA, *dB;           /* (T, B, max(E, H)) ping-pong activation grads */
    float *dgates;            /* (T, B, G*H) LSTM and GRU scratch */
    float *du;                /* (T, B, 3H) GRU scratch */
    float *dc;                /* (B, H) LSTM scratch */
    float *wpack;             /* a layer's wh packed for rgemm (cfg_pack_floats), NULL: OpenBLAS */
    int carry;                /* 1: h[0] of the next step is h[T] of this one */
    int tied;                 /* 1: hw/dhw are emb/demb, (V, E) = (O, H), used transposed */
    int adaptive;             /* 1: model.softmax adaptive: the head (H, S + K) and ada's tails */
    Adaptive ada;             /* its sizes, tail views and scratch (ada_buf) */
    float *ada_buf;
    /* Dropout on the non-recurrent connections (embedding -> layer 0, layer
     * l-1 -> l, top -> head), token models only, training only. The mask
     * of an element depends on (drop_seed, site, drop_step, global stream,
     * t, unit), so it does not depend on how streams are spread over workers. */
    float dropout;
    int training;             /* set by model_step, cleared by model_eval */
    uint64_t drop_seed;
    int64_t drop_step;        /* set by the caller before each model_step */
    int first_stream;         /* global index of this worker's first stream */
    /* Gradient readiness, for a sync that overlaps backward: grad_ready is
     * called with `upto` each time grads[0, upto) are final (after the head,
     * after each layer, after the embedding); progress is called once per
     * time step of backward. Both may be NULL. */
    void (*grad_ready)(void *ctx, size_t upto);
    void (*progress)(void *ctx);
    void *hook_ctx;
    int borrowed;             /* 1: params, 2: grads belong to someone else (model_bind) */
    const ModelSplit *split;  /* NULL, or the micro-batches model_step reduces by (repro) */
    float *din[MODEL_MAX_LAYERS + 1]; /* (T, B, Ein) dropped layer inputs; [L]: head input */
    float *mask[MODEL_MAX_LAYERS + 1];/* same shapes: 0 or 1/(1-p) */
} Model;

int model_init(Model *m, const Config *c, int B);
void model_free(Model *m);
/* Point m's parameter views into params and its gradient views into grads
 * (each nparams floats, laid out as m's views), which m does not own from
 * then on: a micro-batch model shares the worker's parameters and writes
 * each micro-batch's gradient into its own buffer; the worker's gradients
 * move into the shared-memory window (params NULL: kept). NULL: not moved. */
void model_bind(Model *m, float *params, float *grads);
/* Weights ~ U(-s, s), LSTM forget-gate bias 1; same seed, same weights. */
void model_init_params(Model *m, uint64_t seed, double scale);
/* Forget the carried hidden state (start of an epoch). */
void model_reset_state(Model *m);
void model_zero_grad(Model *m);
/* model_zero_grad when the embedding's gradient (the last view, untied) is
 * non-zero only in rows[0..nrows) (sync.sparse_embedding: the rows synced
 * last step, the only ones it writes): every other tensor and those rows
 * only, the same bits without a pass over the whole (V, E) gradient. */
void model_zero_grad_rows(Model *m, const int *rows, int nrows);
/* Forward and backward on one batch. Gradients are ADDED, scaled by
 * `scale` (1 / the global number of loss terms), so summing the workers'
 * gradients gives the gradient of the mean loss over the global batch.
 * Markov: tokens in/targets (T, B). Adding: features (T, B, 2), ytarget (B).
 * Returns the local SUM of loss terms, in double. */
double model_step(Model *m, const int *inputs, const int *targets, const float *features,
                  const float *ytarget, float scale);
/* Forward only (validation): the local SUM of loss terms; the hidden state
 * carries as in model_step. */
double model_eval(Model *m, const int *inputs, const int *targets, const float *features,
                  const float *ytarget);
/* Loss terms per step per worker: T*B for markov, B for adding. */
long model_terms(const Model *m);
/* Floating-point operations of one model_step on this worker, counted as
 * the matrix products it issues (2*M*N*K per sgemm; the elementwise work,
 * a few percent, is not counted). Per layer of input width Ein, hidden H,
 * GH = G*H (G = 1 rnn, 3 gru, 4 lstm), TB = T*B:
 *   forward   2*TB*Ein*GH (input projection) + 2*TB*H*GH (recurrent)
 *   backward  2*TB*Ein*GH (dwx) + 2*TB*Ein*GH (dx; not for the adding
 *             problem's first layer) + 2*TB*H*GH (dwh) + 2*(T-1)*B*H*GH (dh)
 * head (N rows: TB for token models, B for the adding problem; O outputs):
 *   2*N*H*O forward, 4*N*H*O backward; with the adaptive softmax O = S + K
 *   and each tail k adds 6*r_k*d_k*(H + n_k) for the r_k rows of the LAST
 *   step whose target it held (0 before any step). Tested against counted
 *   sgemm calls. */
double model_flops(const Model *m);

#endif
