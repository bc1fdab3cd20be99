/* layers: forward and backward kernels of the worker's model (embedding,
 * linear, tanh RNN, LSTM, GRU, softmax cross-entropy) over raw float pointers.
 * Matrix products are OpenBLAS cblas_sgemm calls (row-major); the rest is
 * one fused loop per step. No kernel allocates: scratch comes from the caller.
 * Sizes: N rows, I/O linear in/out, V vocab, E embedding, T time, B batch,
 * Ein recurrent input, H hidden, G gates per unit (1 RNN, 4 LSTM, 3 GRU). */
#include "worker/layers.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include <cblas.h>

#include "worker/fastmath.h"
#include "worker/rgemm.h"
/* OpenBLAS's config header pulls in <complex.h>, whose macro I (the imaginary
 * unit) would clash with the linear layer's input size I. */
#undef I

/* ---------------------------------------------------------------- helpers */

static void progress(const LayerProgress *pg)
{
    if (pg && pg->fn) pg->fn(pg->ctx);
}

/* db (C) += sum over the R rows of a (R, C) */
static void col_sum_add(float *db, const float *a, int R, int C)
{
    for (int r = 0; r < R; r++) {
        const float *ar = a + (size_t)r * C; // (C)
        for (int j = 0; j < C; j++) {
            db[j] += ar[j];
        }
    }
}


/* ---------------------------------------------------------------- embedding */

void embedding_forward(float *out, const int *tok, const float *w, int N, int E)
{
    for (int n = 0; n < N; n++) {
        assert(tok[n] >= 0);
        memcpy(out + (size_t)n * E, w + (size_t)tok[n] * E, (size_t)E * sizeof(float));
    }
}

void embedding_backward(float *dw, const float *dout, const int *tok, int N, int E)
{
    for (int n = 0; n < N; n++) {
        assert(tok[n] >= 0);
        float *dwr = dw + (size_t)tok[n] * E;        // (E)
        const float *dor = dout + (size_t)n * E;     // (E)
        for (int e = 0; e < E; e++) {
            dwr[e] += dor[e];
        }
    }
}

/* ---------------------------------------------------------------- linear */

/* The head with its weight stored (I, O) (wt 0) or transposed, (O, I) (wt 1). */
static void linear_fwd(float *y, const float *x, const float *w, const float *b, int N, int I, int O,
                       int wt)
{
    // every row of y (N, O) starts as the bias, then y += x (N, I) w (I, O) (or wt^T)
    for (int n = 0; n < N; n++) {
        memcpy(y + (size_t)n * O, b, (size_t)O * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, wt ? CblasTrans : CblasNoTrans, N, O, I,
                1.0f, x, I, w, wt ? I : O, 1.0f, y, O);
}

static void linear_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                       const float *w, int N, int I, int O, int wt)
{
    // dw and db NULL: the caller reduces them itself (micro-batch slots, worker/model.c)
    if (dw && wt) // dwt (O, I) += dy^T (O, N) x (N, I)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, N, 1.0f, dy, O, x, I, 1.0f, dw, I);
    else if (dw)  // dw (I, O) += x^T (I, N) dy (N, O)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, I, O, N, 1.0f, x, I, dy, O, 1.0f, dw, O);
    if (db) col_sum_add(db, dy, N, O);
    if (dx) {
        // dx (N, I) = dy (N, O) w^T (O, I) (or wt)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, wt ? CblasNoTrans : CblasTrans, N, I, O,
                    1.0f, dy, O, w, wt ? I : O, 0.0f, dx, I);
    }
}

void linear_forward(float *y, const float *x, const float *w, const float *b, int N, int I, int O)
{
    linear_fwd(y, x, w, b, N, I, O, 0);
}

void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int N, int I, int O)
{
    linear_bwd(dx, dw, db, dy, x, w, N, I, O, 0);
}

void linear_forward_t(float *y, const float *x, const float *wt, const float *b, int N, int I, int O)
{
    linear_fwd(y, x, wt, b, N, I, O, 1);
}

void linear_backward_t(float *dx, float *dwt, float *db, const float *dy, const float *x,
                       const float *wt, int N, int I, int O)
{
    linear_bwd(dx, dwt, db, dy, x, wt, N, I, O, 1);
}

/* ---------------------------------------------------------------- recurrent steps
 * Shared by the RNN (G = 1), the LSTM (G = 4) and the GRU (G = 3); GH = G*H. */

/* pre (T*B, GH) = x (T*B, Ein) wx (Ein, GH): the input projection of all steps */
static void seq_input_proj(float *pre, const float *x, const float *wx, int TB, int Ein, int GH)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, TB, GH, Ein,
                1.0f, x, Ein, wx, GH, 0.0f, pre, GH);
}

/* The time loops' products with wh: packed into wpack once per pass and
 * multiplied by rgemm when wpack is given, OpenBLAS otherwise. */
static void pack_forward(float *wpack, const float *wh, int H, int GH)
{
    if (wpack) rgemm_pack(wpack, wh, H, GH, GH, 0);
}

static void pack_backward(float *wpack, const float *wh, int H, int GH)
{
    if (wpack) rgemm_pack(wpack, wh, GH, H, GH, 1); /* wh^T (GH, H) */
}

/* pre_t (B, GH) += h_t (B, H) wh (H, GH): one step's recurrent term */
static void step_recurrent_add(float *pre_t, const float *h_t, const float *wh,
                               const float *wpack, int B, int H, int GH)
{
    if (wpack) rgemm(pre_t, GH, h_t, H, wpack, B, GH, H);
    else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, GH, H,
                     1.0f, h_t, H, wh, GH, 1.0f, pre_t, GH);
}

/* dh_prev (B, H) += da_t (B, GH) wh^T (GH, H): gradient into the step's input state */
static void step_dh_prev_add(float *dh_prev, const float *da_t, const float *wh,
                             const float *wpack, int B, int H, int GH)
{
    if (wpack) rgemm(dh_prev, H, da_t, GH, wpack, B, H, GH);
    else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, H, GH,
                     1.0f, da_t, GH, wh, GH, 1.0f, dh_prev, H);
}

/* dwh (H, GH) += h[0..T-1]^T (H, T*B) du (T*B, GH): after the time loop, from
 * the gradients w.r.t. the recurrent terms */
static void seq_dwh_add(float *dwh, const float *du, const float *h, int TB, int H, int GH)
{
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, GH, TB,
                1.0f, h, H, du, GH, 1.0f, dwh, GH);
}

/* After the time loop, from the pre-activation gradients da (T*B, GH) and
 * the recurrent terms' du (da but for the GRU): dwx += x^T da; db += sum da;
 * dx = da wx^T (if dx); dwh += h[0..T-1]^T du. dwx NULL: dx only. */
static void seq_weight_grads(float *dx /* (T*B, Ein) */, float *dwx /* (Ein, GH) */,
                             float *dwh /* (H, GH) */, float *db /* (GH) */,
                             const float *da /* (T*B, GH) */, const float *du /* (T*B, GH) */,
                             const float *x /* (T*B, Ein) */,
                             const float *h /* (T*B, H): h[0..T-1] */,
                             const float *wx /* (Ein, GH) */, int TB, int Ein, int H, int GH)
{
    linear_backward(dx, dwx, dwx ? db : NULL, da, x, wx, TB, Ein, GH);
    if (dwx) seq_dwh_add(dwh, du, h, TB, H, GH);
}

void recurrent_weight_grads(float *dwx, float *dwh, float *db, const float *da, const float *du,
                            const float *x, const float *h, int TB, int Ein, int H, int GH)
{
    seq_weight_grads(NULL, dwx, dwh, db, da, du, x, h, NULL, TB, Ein, H, GH);
}

/* ---------------------------------------------------------------- RNN */

/* a (B, H): pre-activation without bias, overwritten with tanh(a + b) */
VEC_CLONES
static void rnn_step_activate(float *a, const float *b /* (H) */, int B, int H)
{
    for (int n = 0; n < B; n++) {
        float *an = a + (size_t)n * H; // (H)
        for (int j = 0; j < H; j++) {
            an[j] = fm_tanhf(an[j] + b[j]);
        }
    }
}

void rnn_forward(float *h, float *wpack, const float *x, const float *wx, const float *wh,
                 const float *b, int T, int B, int Ein, int H)
{
    const size_t BH = (size_t)B * H;
    pack_forward(wpack, wh, H, H);
    // h[1..T] (T*B, H) holds the input projections, finished one step at a time
    seq_input_proj(h + BH, x, wx, T * B, Ein, H);
    for (int t = 0; t < T; t++) {
        float *a = h + (size_t)(t + 1) * BH; // (B, H)
        step_recurrent_add(a, h + (size_t)t * BH, wh, wpack, B, H, H);
        rnn_step_activate(a, b, B, H);
    }
}

void rnn_backward(float *dx, float *dwx, float *dwh, float *db, float *dh, float *wpack,
                  const float *x, const float *h, const float *wx, const float *wh,
                  int T, int B, int Ein, int H, const LayerProgress *pg)
{
    const size_t BH = (size_t)B * H;
    pack_backward(wpack, wh, H, H);
    for (int t = T - 1; t >= 0; t--) {
        progress(pg);
        float *da = dh + (size_t)t * BH;                 // (B, H): dh[t] -> da in place
        const float *ht = h + (size_t)(t + 1) * BH;      // (B, H): output of step t
        for (size_t k = 0; k < BH; k++) {
            da[k] *= 1.0f - ht[k] * ht[k];
        }
        if (t > 0) {
            step_dh_prev_add(dh + (size_t)(t - 1) * BH, da, wh, wpack, B, H, H);
        }
    }
    seq_weight_grads(dx, dwx, dwh, db, dh, dh, x, h, wx, T * B, Ein, H, H);
}

/* ---------------------------------------------------------------- LSTM */

/* One row of one step's fused pass (the four gate blocks of g passed apart,
 * restrict, so that the loop vectorises): bias, gate nonlinearities
 * (written back as post-activation i,f,g,o), cell update and output. */
VEC_CLONES
static void lstm_row_forward(float *restrict gi, float *restrict gf, float *restrict gg,
                             float *restrict go, float *restrict cn, float *restrict hn,
                             const float *restrict cp, const float *restrict b, int H)
{
    for (int j = 0; j < H; j++) {
        const float i = fm_sigmoidf(gi[j] + b[j]);
        const float f = fm_sigmoidf(gf[j] + b[H + j]);
        const float g = fm_tanhf(gg[j] + b[2 * H + j]);
        const float o = fm_sigmoidf(go[j] + b[3 * H + j]);
        gi[j] = i, gf[j] = f, gg[j] = g, go[j] = o;
        cn[j] = f * cp[j] + i * g;
        hn[j] = o * fm_tanhf(cn[j]);
    }
}

static void lstm_step_forward(float *h_next /* (B, H) */, float *c_next /* (B, H) */,
                              float *g /* (B, 4H), in: pre-act without bias */,
                              const float *c_prev /* (B, H) */, const float *b /* (4H) */,
                              int B, int H)
{
    for (int n = 0; n < B; n++) {
        float *gn = g + (size_t)n * 4 * H; // (4H)
        lstm_row_forward(gn, gn + H, gn + 2 * H, gn + 3 * H, c_next + (size_t)n * H,
                         h_next + (size_t)n * H, c_prev + (size_t)n * H, b, H);
    }
}

/* One row of one step's gate gradients; dc carries dL/dc[t+1] in and
 * dL/dc[t] out. Gate blocks passed apart, restrict, as in the forward. */
VEC_CLONES
static void lstm_row_backward(float *restrict di, float *restrict df, float *restrict dgg,
                              float *restrict dout, float *restrict dc,
                              const float *restrict gi, const float *restrict gf,
                              const float *restrict gg, const float *restrict go,
                              const float *restrict dh, const float *restrict cp,
                              const float *restrict cn, int H)
{
    for (int j = 0; j < H; j++) {
        const float i = gi[j], f = gf[j], g = gg[j], o = go[j];
        const float tc = fm_tanhf(cn[j]);
        const float dct = dc[j] + dh[j] * o * (1.0f - tc * tc);
        di[j] = dct * g * i * (1.0f - i);
        df[j] = dct * cp[j] * f * (1.0f - f);
        dgg[j] = dct * i * (1.0f - g * g);
        dout[j] = dh[j] * tc * o * (1.0f - o);
        dc[j] = dct * f;
    }
}

static void lstm_step_backward(float *dg /* (B, 4H) */, float *dc /* (B, H), in/out */,
                               const float *dh_t /* (B, H) */, const float *g /* (B, 4H) */,
                               const float *c_prev /* (B, H) */,
                               const float *c_next /* (B, H) */, int B, int H)
{
    for (int n = 0; n < B; n++) {
        float *dgn = dg + (size_t)n * 4 * H;             // (4H)
        const float *gn = g + (size_t)n * 4 * H;         // (4H)
        size_t r = (size_t)n * H;
        lstm_row_backward(dgn, dgn + H, dgn + 2 * H, dgn + 3 * H, dc + r, gn, gn + H, gn + 2 * H,
                          gn + 3 * H, dh_t + r, c_prev + r, c_next + r, H);
    }
}

void lstm_forward(float *h, float *c, float *gates, float *wpack, const float *x, const float *wx,
                  const float *wh, const float *b, int T, int B, int Ein, int H)
{
    const size_t BH = (size_t)B * H, BG = (size_t)B * 4 * H;
    pack_forward(wpack, wh, H, 4 * H);
    // gates (T*B, 4H) holds the input projections, activated in place per step
    seq_input_proj(gates, x, wx, T * B, Ein, 4 * H);
    for (int t = 0; t < T; t++) {
        float *gt = gates + (size_t)t * BG; // (B, 4H)
        step_recurrent_add(gt, h + (size_t)t * BH, wh, wpack, B, H, 4 * H);
        lstm_step_forward(h + (size_t)(t + 1) * BH, c + (size_t)(t + 1) * BH, gt,
                          c + (size_t)t * BH, b, B, H);
    }
}

void lstm_backward(float *dx, float *dwx, float *dwh, float *db, float *dh, float *dgates,
                   float *dc, float *wpack, const float *x, const float *h, const float *c,
                   const float *gates, const float *wx, const float *wh,
                   int T, int B, int Ein, int H, const LayerProgress *pg)
{
    const size_t BH = (size_t)B * H, BG = (size_t)B * 4 * H;
    pack_backward(wpack, wh, H, 4 * H);
    memset(dc, 0, BH * sizeof(float)); // nothing flows back from beyond the last step
    for (int t = T - 1; t >= 0; t--) {
        progress(pg);
        float *dgt = dgates + (size_t)t * BG; // (B, 4H)
        lstm_step_backward(dgt, dc, dh + (size_t)t * BH, gates + (size_t)t * BG,
                           c + (size_t)t * BH, c + (size_t)(t + 1) * BH, B, H);
        if (t > 0) {
            step_dh_prev_add(dh + (size_t)(t - 1) * BH, dgt, wh, wpack, B, H, 4 * H);
        }
    }
    seq_weight_grads(dx, dwx, dwh, db, dgates, dgates, x, h, wx, T * B, Ein, H, 4 * H);
}

/* ---------------------------------------------------------------- GRU */

/* Before the step's recurrent sgemm: move a_n (the n block of g, without bias)
 * out into un_t and zero the block, so that the one sgemm over all 3H columns
 * leaves a_r + u_r, a_z + u_z and exactly u_n (0 + u_n) in g. */
static void gru_step_split_n(float *un_t /* (B, H), out: a_n */,
                             float *g /* (B, 3H), in: input projection */, int B, int H)
{
    for (int n = 0; n < B; n++) {
        float *gn = g + (size_t)n * 3 * H + 2 * H;       // (H): the n block
        memcpy(un_t + (size_t)n * H, gn, (size_t)H * sizeof(float));
        memset(gn, 0, (size_t)H * sizeof(float));
    }
}

/* One row of one step's fused pass after the recurrent sgemm: bias, gates
 * (written back as post-activation r,z,n), state update; un swaps a_n for
 * u_n. Blocks passed apart, restrict, so that the loop vectorises. */
VEC_CLONES
static void gru_row_forward(float *restrict hn, float *restrict gr, float *restrict gz,
                            float *restrict gn, float *restrict un, const float *restrict hp,
                            const float *restrict b, int H)
{
    for (int j = 0; j < H; j++) {
        const float r = fm_sigmoidf(gr[j] + b[j]);
        const float z = fm_sigmoidf(gz[j] + b[H + j]);
        const float u = gn[j];
        const float nn = fm_tanhf(un[j] + b[2 * H + j] + r * u);
        gr[j] = r, gz[j] = z, gn[j] = nn;
        un[j] = u;
        hn[j] = (1.0f - z) * nn + z * hp[j];
    }
}

static void gru_step_forward(float *h_next /* (B, H) */,
                             float *g /* (B, 3H), in: a_r+u_r, a_z+u_z, u_n */,
                             float *un_t /* (B, H), in: a_n, out: u_n */,
                             const float *h_prev /* (B, H) */, const float *b /* (3H) */,
                             int B, int H)
{
    for (int n = 0; n < B; n++) {
        float *gn = g + (size_t)n * 3 * H; // (3H)
        size_t r = (size_t)n * H;
        gru_row_forward(h_next + r, gn, gn + H, gn + 2 * H, un_t + r, h_prev + r, b, H);
    }
}

/* One step's gradients w.r.t. a (dg) and u (du) from dh_t = dL/dh[t+1];
 * dh_prev (may be NULL at t = 0) gets the direct term dh_t * z added. */
static void gru_step_backward(float *dg /* (B, 3H) */, float *du /* (B, 3H) */,
                              float *dh_prev /* (B, H) */, const float *dh_t /* (B, H) */,
                              const float *g /* (B, 3H) */, const float *un_t /* (B, H) */,
                              const float *h_prev /* (B, H) */, int B, int H)
{
    for (int n = 0; n < B; n++) {
        float *dgn = dg + (size_t)n * 3 * H;             // (3H)
        float *dun = du + (size_t)n * 3 * H;             // (3H)
        const float *gn = g + (size_t)n * 3 * H;         // (3H)
        const float *dhn = dh_t + (size_t)n * H;         // (H)
        const float *un = un_t + (size_t)n * H;          // (H)
        const float *hp = h_prev + (size_t)n * H;        // (H)
        for (int j = 0; j < H; j++) {
            const float r = gn[j], z = gn[H + j], nn = gn[2 * H + j];
            const float dan = dhn[j] * (1.0f - z) * (1.0f - nn * nn);
            const float daz = dhn[j] * (hp[j] - nn) * z * (1.0f - z);
            const float dar = dan * un[j] * r * (1.0f - r);
            dgn[j] = dar;
            dgn[H + j] = daz;
            dgn[2 * H + j] = dan;
            dun[j] = dar;
            dun[H + j] = daz;
            dun[2 * H + j] = dan * r;
        }
        if (dh_prev) {
            float *dpn = dh_prev + (size_t)n * H;        // (H)
            for (int j = 0; j < H; j++) {
                dpn[j] += dhn[j] * gn[H + j];
            }
        }
    }
}

void gru_forward(float *h, float *gates, float *un, float *wpack, const float *x, const float *wx,
                 const float *wh, const float *b, int T, int B, int Ein, int H)
{
    const size_t BH = (size_t)B * H, BG = (size_t)B * 3 * H;
    pack_forward(wpack, wh, H, 3 * H);
    // gates (T*B, 3H) holds the input projections, activated in place per step
    seq_input_proj(gates, x, wx, T * B, Ein, 3 * H);
    for (int t = 0; t < T; t++) {
        float *gt = gates + (size_t)t * BG; // (B, 3H)
        float *ut = un + (size_t)t * BH;    // (B, H)
        gru_step_split_n(ut, gt, B, H);
        step_recurrent_add(gt, h + (size_t)t * BH, wh, wpack, B, H, 3 * H);
        gru_step_forward(h + (size_t)(t + 1) * BH, gt, ut, h + (size_t)t * BH, b, B, H);
    }
}

void gru_backward(float *dx, float *dwx, float *dwh, float *db, float *dh, float *dgates,
                  float *du, float *wpack, const float *x, const float *h, const float *gates,
                  const float *un, const float *wx, const float *wh,
                  int T, int B, int Ein, int H, const LayerProgress *pg)
{
    const size_t BH = (size_t)B * H, BG = (size_t)B * 3 * H;
    pack_backward(wpack, wh, H, 3 * H);
    for (int t = T - 1; t >= 0; t--) {
        progress(pg);
        float *dgt = dgates + (size_t)t * BG; // (B, 3H)
        float *dut = du + (size_t)t * BG;     // (B, 3H)
        float *dh_prev = t > 0 ? dh + (size_t)(t - 1) * BH : NULL; // (B, H)
        gru_step_backward(dgt, dut, dh_prev, dh + (size_t)t * BH, gates + (size_t)t * BG,
                          un + (size_t)t * BH, h + (size_t)t * BH, B, H);
        if (dh_prev) {
            step_dh_prev_add(dh_prev, dut, wh, wpack, B, H, 3 * H);
        }
    }
    seq_weight_grads(dx, dwx, dwh, db, dgates, du, x, h, wx, T * B, Ein, H, 3 * H);
}

/* ---------------------------------------------------------------- softmax cross-entropy */

/* max of x[0, n), n >= 1, in 8 lanes (vectorises without -ffast-math). */
static float row_max(const float *x, int n)
{
    float m[8];
    for (int j = 0; j < 8; j++) m[j] = x[0];
    int v = 0;
    for (; v + 8 <= n; v += 8)
        for (int j = 0; j < 8; j++) m[j] = x[v + j] > m[j] ? x[v + j] : m[j];
    for (; v < n; v++) m[0] = x[v] > m[0] ? x[v] : m[0];
    for (int j = 1; j < 8; j++) m[0] = m[j] > m[0] ? m[j] : m[0];
    return m[0];
}

/* sum of x[0, n) in double, 4 interleaved partial sums in a fixed order */
static double row_sum(const float *x, int n)
{
    double a[4] = {0, 0, 0, 0};
    int v = 0;
    for (; v + 4 <= n; v += 4)
        for (int j = 0; j < 4; j++) a[j] += (double)x[v + j];
    for (; v < n; v++) a[0] += (double)x[v];
    return (a[0] + a[1]) + (a[2] + a[3]);
}

/* One row: p (V) = softmax(l (V)); returns -log p[tgt] in double. p may alias l. */
VEC_CLONES
static double softmax_ce_row(float *p, const float *l, int tgt, int V)
{
    assert(tgt >= 0 && tgt < V);
    const float maxv = row_max(l, V);
    const double zt = (double)(l[tgt] - maxv); // read before p (maybe l) is written
    for (int v = 0; v < V; v++) {
        p[v] = fm_expf(l[v] - maxv);
    }
    const double sum = row_sum(p, V);
    const float inv = (float)(1.0 / sum);
    for (int v = 0; v < V; v++) {
        p[v] *= inv;
    }
    return log(sum) - zt;
}

double softmax_ce_forward(float *probs, const float *logits, const int *targets, int N, int V)
{
    double loss = 0.0;
    for (int n = 0; n < N; n++) {
        loss += softmax_ce_row(probs + (size_t)n * V, logits + (size_t)n * V, targets[n], V);
    }
    return loss;
}

void softmax_ce_backward(float *dlogits, const float *probs, const int *targets, float scale,
                         int N, int V)
{
    for (int n = 0; n < N; n++) {
        assert(targets[n] >= 0 && targets[n] < V);
        const float *p = probs + (size_t)n * V;          // (V)
        float *d = dlogits + (size_t)n * V;              // (V), may alias p
        for (int v = 0; v < V; v++) {
            d[v] = (p[v] - (v == targets[n] ? 1.0f : 0.0f)) * scale;
        }
    }
}
