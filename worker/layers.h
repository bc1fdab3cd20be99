/* layers: the model's kernels over raw float pointers (llm.c style).
 * Sequences are time-major: x is (T, B, Ein), so each time step is one
 * contiguous (B, Ein) block and a GEMM over all T steps is one call.
 * Kernels take outputs first, then const inputs, then sizes.
 * Backward passes ADD into weight gradients (dw*, db); activation gradients
 * (dx, dh_in) are OVERWRITTEN. Truncated BPTT: no gradient flows into the
 * carried initial state h[0], c[0]. */
#ifndef CLIPD_LAYERS_H
#define CLIPD_LAYERS_H

/* What the backward time loops call once per step, fn(ctx), so a caller can
 * keep non-blocking communication moving during backward (the pointer or fn
 * NULL: nothing). */
typedef struct {
    void (*fn)(void *ctx);
    void *ctx;
} LayerProgress;

/* out[n,:] = w[tok[n],:] */
void embedding_forward(float *out /* (N, E) */, const int *tok /* (N) */,
                       const float *w /* (V, E) */, int N, int E);
/* dw[tok[n],:] += dout[n,:] */
void embedding_backward(float *dw /* (V, E) */, const float *dout /* (N, E) */,
                        const int *tok /* (N) */, int N, int E);

/* y = x w + b */
void linear_forward(float *y /* (N, O) */, const float *x /* (N, I) */,
                    const float *w /* (I, O) */, const float *b /* (O) */, int N, int I, int O);
/* dw += x^T dy; db += sum_n dy; dx = dy w^T (dx may be NULL; dw and db
 * NULL: dx only) */
void linear_backward(float *dx /* (N, I) */, float *dw /* (I, O) */, float *db /* (O) */,
                     const float *dy /* (N, O) */, const float *x /* (N, I) */,
                     const float *w /* (I, O) */, int N, int I, int O);
/* The same with the weight stored transposed, wt (O, I) (tied embeddings:
 * the head is the (V, E) embedding matrix): y = x wt^T + b; dwt += dy^T x;
 * db += sum_n dy; dx = dy wt (dx may be NULL) */
void linear_forward_t(float *y /* (N, O) */, const float *x /* (N, I) */,
                      const float *wt /* (O, I) */, const float *b /* (O) */, int N, int I, int O);
void linear_backward_t(float *dx /* (N, I) */, float *dwt /* (O, I) */, float *db /* (O) */,
                       const float *dy /* (N, O) */, const float *x /* (N, I) */,
                       const float *wt /* (O, I) */, int N, int I, int O);

/* The weight gradients of a recurrent layer over TB rows, from the
 * pre-activation gradients da (T*B, GH) and the recurrent terms' du (da, but
 * the GRU's du) that its backward leaves in its scratch: dwx += x^T da,
 * db += sum da, dwh += h[0..T-1]^T du, in the order and shapes the layer's
 * own backward uses (which skips them when given dwx, dwh, db NULL). */
void recurrent_weight_grads(float *dwx /* (Ein, GH) */, float *dwh /* (H, GH) */,
                            float *db /* (GH) */, const float *da /* (TB, GH) */,
                            const float *du /* (TB, GH) */, const float *x /* (TB, Ein) */,
                            const float *h /* (TB, H) */, int TB, int Ein, int H, int GH);

/* The recurrent layers take wpack, scratch for wh packed once per pass
 * (worker/rgemm.h; cfg_pack_wh_floats(H, G*H): the larger of (H, G*H) and
 * (G*H, H)): the time loop's products then go through rgemm. NULL: they
 * are OpenBLAS calls.
 *
 * Vanilla tanh RNN: h[t+1] = tanh(x[t] wx + h[t] wh + b), h[0] given.
 * h is (T+1, B, H). */
void rnn_forward(float *h /* (T+1, B, H) */, float *wpack, const float *x /* (T, B, Ein) */,
                 const float *wx /* (Ein, H) */, const float *wh /* (H, H) */,
                 const float *b /* (H) */, int T, int B, int Ein, int H);
/* dh: gradient of the loss w.r.t. h[1..T], (T, B, H); it is used as scratch
 * and left modified. dx may be NULL (first layer fed by raw inputs). */
void rnn_backward(float *dx /* (T, B, Ein) */, float *dwx /* (Ein, H) */,
                  float *dwh /* (H, H) */, float *db /* (H) */,
                  float *dh /* (T, B, H), in/scratch */, float *wpack, const float *x /* (T, B, Ein) */,
                  const float *h /* (T+1, B, H) */, const float *wx /* (Ein, H) */,
                  const float *wh /* (H, H) */, int T, int B, int Ein, int H,
                  const LayerProgress *pg);

/* LSTM, gates in the order i, f, g, o along the 4H axis:
 *   a = x[t] wx + h[t] wh + b; i,f,o = sigmoid(a_i,a_f,a_o); g = tanh(a_g)
 *   c[t+1] = f*c[t] + i*g; h[t+1] = o*tanh(c[t+1])
 * gates stores the post-activation i,f,g,o for backward. h[0], c[0] given. */
void lstm_forward(float *h /* (T+1, B, H) */, float *c /* (T+1, B, H) */,
                  float *gates /* (T, B, 4H) */, float *wpack, const float *x /* (T, B, Ein) */,
                  const float *wx /* (Ein, 4H) */, const float *wh /* (H, 4H) */,
                  const float *b /* (4H) */, int T, int B, int Ein, int H);
/* dh as in rnn_backward (in/scratch). dgates (T, B, 4H) and dc (B, H) are
 * scratch. dx may be NULL. */
void lstm_backward(float *dx /* (T, B, Ein) */, float *dwx /* (Ein, 4H) */,
                   float *dwh /* (H, 4H) */, float *db /* (4H) */,
                   float *dh /* (T, B, H), in/scratch */, float *dgates /* (T, B, 4H) */,
                   float *dc /* (B, H) */, float *wpack, const float *x /* (T, B, Ein) */,
                   const float *h /* (T+1, B, H) */, const float *c /* (T+1, B, H) */,
                   const float *gates /* (T, B, 4H) */, const float *wx /* (Ein, 4H) */,
                   const float *wh /* (H, 4H) */, int T, int B, int Ein, int H,
                   const LayerProgress *pg);

/* GRU, gates in the order r, z, n along the 3H axis. One bias, on the input
 * side only (no recurrent bias; the reset gate scales the whole recurrent
 * projection u_n, as in PyTorch's GRU with b_hn = 0):
 *   a = x[t] wx + b; u = h[t] wh
 *   r = sigmoid(a_r + u_r); z = sigmoid(a_z + u_z); n = tanh(a_n + r*u_n)
 *   h[t+1] = (1 - z)*n + z*h[t]
 * gates stores the post-activation r,z,n and un stores u_n for backward.
 * h[0] given. */
void gru_forward(float *h /* (T+1, B, H) */, float *gates /* (T, B, 3H) */,
                 float *un /* (T, B, H) */, float *wpack, const float *x /* (T, B, Ein) */,
                 const float *wx /* (Ein, 3H) */, const float *wh /* (H, 3H) */,
                 const float *b /* (3H) */, int T, int B, int Ein, int H);
/* dh as in rnn_backward (in/scratch). dgates (gradient w.r.t. a) and du
 * (w.r.t. u) are scratch. dx may be NULL. */
void gru_backward(float *dx /* (T, B, Ein) */, float *dwx /* (Ein, 3H) */,
                  float *dwh /* (H, 3H) */, float *db /* (3H) */,
                  float *dh /* (T, B, H), in/scratch */, float *dgates /* (T, B, 3H) */,
                  float *du /* (T, B, 3H) */, float *wpack, const float *x /* (T, B, Ein) */,
                  const float *h /* (T+1, B, H) */, const float *gates /* (T, B, 3H) */,
                  const float *un /* (T, B, H) */, const float *wx /* (Ein, 3H) */,
                  const float *wh /* (H, 3H) */, int T, int B, int Ein, int H,
                  const LayerProgress *pg);

/* Softmax cross-entropy. probs gets softmax(logits) (may alias logits).
 * Returns the SUM over rows of -log p[target], accumulated in double. */
double softmax_ce_forward(float *probs /* (N, V) */, const float *logits /* (N, V) */,
                          const int *targets /* (N) */, int N, int V);
/* dlogits = (probs - onehot(target)) * scale (may alias probs). */
void softmax_ce_backward(float *dlogits /* (N, V) */, const float *probs /* (N, V) */,
                         const int *targets /* (N) */, float scale, int N, int V);

#endif
