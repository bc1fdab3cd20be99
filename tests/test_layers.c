/* test_layers: checks every kernel of worker/layers.c, and the adaptive
 * softmax of worker/adaptive.c, against an independent
 * double-precision reference: naive loop forwards (no BLAS) composed with a
 * fixed random linear loss, differentiated by central finite differences.
 * Every check prints its worst error and tolerance; any failure makes the
 * binary exit non-zero. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfg.h"
#include "worker/adaptive.h"
#include "worker/fastmath.h"
#include "worker/layers.h"
#include "worker/rgemm.h"

#define FWD_TOL 1e-5    /* float kernel vs double loops, scaled by max(1, |ref|) */
#define GRAD_TOL 1e-3   /* float analytic vs double FD, |a-n| / max(GRAD_FLOOR, |a|+|n|) */
#define GRAD_FLOOR 1e-3
#define FD_EPS 1e-6
#define ACC_TOL 1e-5    /* accumulation: float rounding of one extra add */
#define ALIAS_TOL 1e-6  /* in-place vs out-of-place softmax */

/* recurrent sizes: T time, B batch, Ein input, H hidden; H2 the upper stacked layer */
enum { SEQ_T = 5, SEQ_B = 3, SEQ_EIN = 4, SEQ_H = 6, SEQ_H2 = 5 };

/* ---------------------------------------------------------------- arena, RNG */

/* Everything a test allocates; freed by the teardown even when a check fails. */
#define ARENA_MAX 512
typedef struct {
    void *p[ARENA_MAX];
    int n;
} Arena;

static int arena_setup(void **state)
{
    Arena *a = calloc(1, sizeof *a);
    *state = a;
    return a ? 0 : -1;
}

/* 1: the recurrent layers under test get a pack buffer (worker/rgemm.h):
 * their time loops run the packed products (rgemm_set's kernel) instead
 * of OpenBLAS's */
static int g_pack;

static int arena_teardown(void **state)
{
    g_pack = 0;
    rgemm_set(RGEMM_OFF);
    Arena *a = *state;
    for (int i = 0; i < a->n; i++) {
        free(a->p[i]);
    }
    free(a);
    return 0;
}

static void *arena_alloc(Arena *a, size_t n, size_t size)
{
    assert_true(a->n < ARENA_MAX);
    void *p = calloc(n, size);
    assert_non_null(p);
    a->p[a->n++] = p;
    return p;
}

static float *arena_f(Arena *a, size_t n) { return arena_alloc(a, n, sizeof(float)); }
static double *arena_d(Arena *a, size_t n) { return arena_alloc(a, n, sizeof(double)); }

/* splitmix64 */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [lo, hi), 24 random bits */
static float rng_unif(uint64_t *s, float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(rng_next(s) >> 40) / 16777216.0);
}

static float *arena_rand(Arena *a, size_t n, uint64_t *s, float lo, float hi)
{
    float *p = arena_f(a, n);
    for (size_t i = 0; i < n; i++) {
        p[i] = rng_unif(s, lo, hi);
    }
    return p;
}

/* double copy of the same (float-representable) numbers */
static double *arena_dbl(Arena *a, const float *src, size_t n)
{
    double *p = arena_d(a, n);
    for (size_t i = 0; i < n; i++) {
        p[i] = src[i];
    }
    return p;
}

/* ---------------------------------------------------------------- checks */

/* running max of errors where NaN counts as infinitely bad (fmax would drop it) */
static double worse(double worst, double err)
{
    return isnan(err) ? INFINITY : fmax(worst, err);
}

/* forward: max |a - r| / max(1, max |r|) */
static void check_fwd(const char *what, const float *a, const double *r, size_t n)
{
    double err = 0.0, mag = 1.0;
    for (size_t i = 0; i < n; i++) {
        err = worse(err, fabs(a[i] - r[i]));
        mag = fmax(mag, fabs(r[i]));
    }
    err /= mag;
    printf("%-28s max abs err %.1e (scaled by max(1,|ref|); tol %.0e)\n", what, err, FWD_TOL);
    assert_true(err <= FWD_TOL);
}

typedef double (*LossFn)(void *ctx);

/* central FD in double of loss over every entry of p, vs the analytic a */
static void check_grad(const char *what, const float *a, double *p, size_t n,
                       LossFn loss, void *ctx)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double save = p[i], hp = save + FD_EPS, hm = save - FD_EPS;
        p[i] = hp;
        const double lp = loss(ctx);
        p[i] = hm;
        const double lm = loss(ctx);
        p[i] = save;
        const double num = (lp - lm) / (hp - hm);
        worst = worse(worst, fabs(a[i] - num) / fmax(GRAD_FLOOR, fabs(a[i]) + fabs(num)));
    }
    printf("%-28s max rel err %.1e (tol %.0e)\n", what, worst, GRAD_TOL);
    assert_true(worst <= GRAD_TOL);
}

/* max |a - b| / max(1, max |b|) <= tol; tol 0 means bitwise equal values */
static void check_same(const char *what, const float *a, const float *b, size_t n, double tol)
{
    double err = 0.0, mag = 1.0;
    for (size_t i = 0; i < n; i++) {
        err = worse(err, fabs((double)a[i] - b[i]));
        mag = fmax(mag, fabs(b[i]));
    }
    err /= mag;
    printf("%-28s max abs diff %.1e (tol %.0e)\n", what, err, tol);
    assert_true(err <= tol);
}

/* (g - g0) == 2 gz: two backward calls from a pre-filled g0 add twice what one adds to 0 */
static void check_accum(const char *what, const float *g, const float *g0, const float *gz,
                        size_t n)
{
    double err = 0.0, mag = 1.0;
    for (size_t i = 0; i < n; i++) {
        err = worse(err, fabs(((double)g[i] - g0[i]) - 2.0 * gz[i]));
        mag = fmax(mag, fmax(fabs(g0[i]), fabs(2.0 * gz[i])));
    }
    err /= mag;
    printf("%-28s max abs err %.1e (tol %.0e)\n", what, err, ACC_TOL);
    assert_true(err <= ACC_TOL);
}

/* NaN into outputs that must be overwritten and into scratch that must not be
 * read before it is written */
static void fill_nan(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = NAN;
    }
}

static const char *name2(char *buf, size_t cap, const char *a, const char *b)
{
    snprintf(buf, cap, "%s %s", a, b);
    return buf;
}

/* ---------------------------------------------------------------- naive double references */

/* y (N, O) = x (N, I) w (I, O) + b (O) */
static void ref_linear(double *y, const double *x, const double *w, const double *b,
                       int N, int I, int O)
{
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < O; o++) {
            double acc = b[o];
            for (int i = 0; i < I; i++) {
                acc += x[n * I + i] * w[i * O + o];
            }
            y[n * O + o] = acc;
        }
    }
}

/* sum over rows of -log softmax(logits)[target]; probs (N, V) filled */
static double ref_ce(double *probs, const double *logits, const int *tgt, int N, int V)
{
    double loss = 0.0;
    for (int n = 0; n < N; n++) {
        const double *l = logits + n * V;
        double mx = l[0], sum = 0.0;
        for (int v = 1; v < V; v++) {
            mx = fmax(mx, l[v]);
        }
        for (int v = 0; v < V; v++) {
            sum += exp(l[v] - mx);
        }
        for (int v = 0; v < V; v++) {
            probs[n * V + v] = exp(l[v] - mx) / sum;
        }
        loss += log(sum) - (l[tgt[n]] - mx);
    }
    return loss;
}

/* One recurrent layer in double; G = 1 (tanh RNN), 4 (LSTM, gates i,f,g,o)
 * or 3 (GRU, gates r,z,n). */
typedef struct {
    int T, B, Ein, H, G;
    double *x;      // (T, B, Ein)
    double *wx;     // (Ein, G*H)
    double *wh;     // (H, G*H)
    double *b;      // (G*H)
    double *h;      // (T+1, B, H), h[0] given
    double *c;      // (T+1, B, H), c[0] given (LSTM)
    double *gates;  // (T, B, G*H), post-activation (LSTM, GRU)
    double *un;     // (T, B, H), u_n = (h[t] wh)_n (GRU)
} RefSeq;

/* input side: b[col] + x[t,n,:] . wx[:,col] */
static double ref_proj_x(const RefSeq *r, int t, int n, int col)
{
    const int GH = r->G * r->H;
    const double *xt = r->x + ((size_t)t * r->B + n) * r->Ein; // (Ein)
    double a = r->b[col];
    for (int k = 0; k < r->Ein; k++) {
        a += xt[k] * r->wx[k * GH + col];
    }
    return a;
}

/* recurrent side: h[t,n,:] . wh[:,col] */
static double ref_proj_h(const RefSeq *r, int t, int n, int col)
{
    const int GH = r->G * r->H;
    const double *ht = r->h + ((size_t)t * r->B + n) * r->H; // (H)
    double u = 0.0;
    for (int k = 0; k < r->H; k++) {
        u += ht[k] * r->wh[k * GH + col];
    }
    return u;
}

static double ref_preact(const RefSeq *r, int t, int n, int col)
{
    return ref_proj_x(r, t, n, col) + ref_proj_h(r, t, n, col);
}

static double sigmoid(double a) { return 1.0 / (1.0 + exp(-a)); }

static void ref_lstm_unit(RefSeq *r, int t, int n, int j)
{
    const int H = r->H;
    const size_t prev = ((size_t)t * r->B + n) * H + j, next = prev + (size_t)r->B * H;
    const double i = sigmoid(ref_preact(r, t, n, j));
    const double f = sigmoid(ref_preact(r, t, n, H + j));
    const double g = tanh(ref_preact(r, t, n, 2 * H + j));
    const double o = sigmoid(ref_preact(r, t, n, 3 * H + j));
    r->c[next] = f * r->c[prev] + i * g;
    r->h[next] = o * tanh(r->c[next]);
    double *gt = r->gates + ((size_t)t * r->B + n) * 4 * H; // (4H)
    gt[j] = i;
    gt[H + j] = f;
    gt[2 * H + j] = g;
    gt[3 * H + j] = o;
}

/* r = sig(a_r + u_r); z = sig(a_z + u_z); n = tanh(a_n + r u_n); h' = (1-z) n + z h */
static void ref_gru_unit(RefSeq *r, int t, int n, int j)
{
    const int H = r->H;
    const size_t prev = ((size_t)t * r->B + n) * H + j, next = prev + (size_t)r->B * H;
    const double rr = sigmoid(ref_preact(r, t, n, j));
    const double z = sigmoid(ref_preact(r, t, n, H + j));
    const double un = ref_proj_h(r, t, n, 2 * H + j);
    const double nn = tanh(ref_proj_x(r, t, n, 2 * H + j) + rr * un);
    r->h[next] = (1.0 - z) * nn + z * r->h[prev];
    r->un[prev] = un;
    double *gt = r->gates + ((size_t)t * r->B + n) * 3 * H; // (3H)
    gt[j] = rr;
    gt[H + j] = z;
    gt[2 * H + j] = nn;
}

static void ref_seq_forward(RefSeq *r)
{
    const size_t BH = (size_t)r->B * r->H;
    for (int t = 0; t < r->T; t++) {
        for (int n = 0; n < r->B; n++) {
            for (int j = 0; j < r->H; j++) {
                if (r->G == 1) {
                    r->h[(t + 1) * BH + (size_t)n * r->H + j] = tanh(ref_preact(r, t, n, j));
                } else if (r->G == 4) {
                    ref_lstm_unit(r, t, n, j);
                } else {
                    ref_gru_unit(r, t, n, j);
                }
            }
        }
    }
}

/* L = sum R * top.h[1..T], top = hi if stacked (hi.x aliases lo.h[1..T]) */
typedef struct {
    RefSeq *lo, *hi;
    const double *R; // (T, B, H of top)
} SeqLoss;

static double seq_loss(void *ctx)
{
    SeqLoss *l = ctx;
    ref_seq_forward(l->lo);
    const RefSeq *top = l->lo;
    if (l->hi) {
        ref_seq_forward(l->hi);
        top = l->hi;
    }
    const size_t BH = (size_t)top->B * top->H, n = (size_t)top->T * BH;
    double loss = 0.0;
    for (size_t i = 0; i < n; i++) {
        loss += l->R[i] * top->h[BH + i];
    }
    return loss;
}

/* ---------------------------------------------------------------- layer under test */

/* Float kernel buffers and the double reference over the same numbers.
 * Weight gradients are one flat buffer with views, as in the model. */
typedef struct {
    int T, B, Ein, H, G;
    float *x;       // (T, B, Ein)
    float *wx;      // (Ein, G*H)
    float *wh;      // (H, G*H)
    float *b;       // (G*H)
    float *h, *c;   // (T+1, B, H) each
    float *gates;   // (T, B, G*H)
    float *un;      // (T, B, H), GRU
    float *grad;    // (ngrad): dwx | dwh | db
    float *dwx;     // (Ein, G*H)
    float *dwh;     // (H, G*H)
    float *db;      // (G*H)
    float *dx;      // (T, B, Ein)
    float *dh;      // (T, B, H)
    float *dgates;  // (T, B, G*H)
    float *dc;      // (B, H), LSTM
    float *du;      // (T, B, G*H), GRU
    float *wpack;   // wh packed (g_pack), or NULL
    size_t nwx, nwh, nb, ngrad;
    RefSeq ref;
} Layer;

static void layer_alloc(Arena *a, Layer *L, uint64_t *s)
{
    const size_t GH = (size_t)L->G * L->H, BH = (size_t)L->B * L->H;
    const size_t TB = (size_t)L->T * L->B;
    L->nwx = (size_t)L->Ein * GH;
    L->nwh = (size_t)L->H * GH;
    L->nb = GH;
    L->ngrad = L->nwx + L->nwh + L->nb;
    L->wx = arena_rand(a, L->nwx, s, -0.5f, 0.5f);
    L->wh = arena_rand(a, L->nwh, s, -0.5f, 0.5f);
    L->b = arena_rand(a, L->nb, s, -0.5f, 0.5f);
    L->h = arena_f(a, (L->T + 1) * BH);
    L->c = arena_f(a, (L->T + 1) * BH);
    for (size_t i = 0; i < BH; i++) {       // nonzero carried state h[0], c[0]
        L->h[i] = rng_unif(s, -0.5f, 0.5f);
        L->c[i] = rng_unif(s, -0.5f, 0.5f);
    }
    L->gates = arena_f(a, TB * GH);
    L->un = arena_f(a, TB * L->H);
    L->grad = arena_f(a, L->ngrad);
    L->dwx = L->grad;
    L->dwh = L->dwx + L->nwx;
    L->db = L->dwh + L->nwh;
    L->dx = arena_f(a, TB * L->Ein);
    L->dh = arena_f(a, TB * L->H);
    L->dgates = arena_f(a, TB * GH);
    L->dc = arena_f(a, BH);
    L->du = arena_f(a, TB * GH);
    L->wpack = g_pack ? arena_f(a, cfg_pack_wh_floats((uint64_t)L->H, GH)) : NULL;
}

/* x and xref NULL: own random input; else the layer reads the given buffers */
static void layer_new(Arena *a, Layer *L, int T, int B, int Ein, int H, int G, uint64_t *s,
                      float *x, double *xref)
{
    *L = (Layer){.T = T, .B = B, .Ein = Ein, .H = H, .G = G};
    layer_alloc(a, L, s);
    const size_t TB = (size_t)T * B, BH = (size_t)B * H;
    L->x = x ? x : arena_rand(a, TB * Ein, s, -1.0f, 1.0f);
    RefSeq *r = &L->ref;
    *r = (RefSeq){.T = T, .B = B, .Ein = Ein, .H = H, .G = G};
    r->x = xref ? xref : arena_dbl(a, L->x, TB * Ein);
    r->wx = arena_dbl(a, L->wx, L->nwx);
    r->wh = arena_dbl(a, L->wh, L->nwh);
    r->b = arena_dbl(a, L->b, L->nb);
    r->h = arena_d(a, (T + 1) * BH);
    r->c = arena_d(a, (T + 1) * BH);
    r->gates = arena_d(a, TB * G * H);
    r->un = arena_d(a, TB * H);
    for (size_t i = 0; i < BH; i++) {
        r->h[i] = L->h[i];
        r->c[i] = L->c[i];
    }
}

static void layer_forward(Layer *L)
{
    if (L->G == 1) {
        rnn_forward(L->h, L->wpack, L->x, L->wx, L->wh, L->b, L->T, L->B, L->Ein, L->H);
    } else if (L->G == 4) {
        lstm_forward(L->h, L->c, L->gates, L->wpack, L->x, L->wx, L->wh, L->b,
                     L->T, L->B, L->Ein, L->H);
    } else {
        gru_forward(L->h, L->gates, L->un, L->wpack, L->x, L->wx, L->wh, L->b,
                    L->T, L->B, L->Ein, L->H);
    }
}

/* backward with L->dh as the incoming gradient (used as scratch) */
static void layer_backward(Layer *L, float *dx)
{
    if (L->G == 1) {
        rnn_backward(dx, L->dwx, L->dwh, L->db, L->dh, L->wpack, L->x, L->h, L->wx, L->wh,
                     L->T, L->B, L->Ein, L->H, NULL);
    } else if (L->G == 4) {
        lstm_backward(dx, L->dwx, L->dwh, L->db, L->dh, L->dgates, L->dc, L->wpack, L->x, L->h, L->c,
                      L->gates, L->wx, L->wh, L->T, L->B, L->Ein, L->H, NULL);
    } else {
        gru_backward(dx, L->dwx, L->dwh, L->db, L->dh, L->dgates, L->du, L->wpack, L->x, L->h,
                     L->gates, L->un, L->wx, L->wh, L->T, L->B, L->Ein, L->H, NULL);
    }
}

/* scratch and dx (if any) start as NaN */
static void layer_fill_scratch(Layer *L, float *dx)
{
    const size_t TB = (size_t)L->T * L->B;
    fill_nan(L->dgates, TB * L->G * L->H);
    fill_nan(L->du, TB * L->G * L->H);
    fill_nan(L->dc, (size_t)L->B * L->H);
    if (dx) {
        fill_nan(dx, TB * L->Ein);
    }
}

/* dh = R (fresh copy, the kernel scribbles on it), then backward from NaN scratch */
static void layer_backward_from(Layer *L, const float *R, float *dx)
{
    memcpy(L->dh, R, (size_t)L->T * L->B * L->H * sizeof(float));
    layer_fill_scratch(L, dx);
    layer_backward(L, dx);
}

static void check_layer_grads(const char *name, Layer *L, SeqLoss *ctx, int with_dx)
{
    char buf[64];
    check_grad(name2(buf, sizeof buf, name, "dwx"), L->dwx, L->ref.wx, L->nwx, seq_loss, ctx);
    check_grad(name2(buf, sizeof buf, name, "dwh"), L->dwh, L->ref.wh, L->nwh, seq_loss, ctx);
    check_grad(name2(buf, sizeof buf, name, "db"), L->db, L->ref.b, L->nb, seq_loss, ctx);
    if (with_dx) {
        const size_t nx = (size_t)L->T * L->B * L->Ein;
        check_grad(name2(buf, sizeof buf, name, "dx"), L->dx, L->ref.x, nx, seq_loss, ctx);
    }
}

/* ---------------------------------------------------------------- tests: linear, embedding */

static double lin_R_loss(const double *y, const double *R, size_t n)
{
    double loss = 0.0;
    for (size_t i = 0; i < n; i++) {
        loss += R[i] * y[i];
    }
    return loss;
}

typedef struct {
    double *x, *w, *b, *y; // (N, I), (I, O), (O), (N, O)
    const double *R;       // (N, O)
    int N, I, O;
} LinLoss;

static double linear_loss(void *ctx)
{
    LinLoss *l = ctx;
    ref_linear(l->y, l->x, l->w, l->b, l->N, l->I, l->O);
    return lin_R_loss(l->y, l->R, (size_t)l->N * l->O);
}

/* The transposed-weight head (tied embeddings): ctx.w holds wt (O, I); the
 * loss transposes it into w (I, O) for the plain double reference. */
typedef struct {
    LinLoss l;
    double *wt; // (O, I)
} LinLossT;

static double linear_t_loss(void *ctx)
{
    LinLossT *t = ctx;
    for (int o = 0; o < t->l.O; o++)
        for (int i = 0; i < t->l.I; i++) t->l.w[i * t->l.O + o] = t->wt[o * t->l.I + i];
    return linear_loss(&t->l);
}

/* linear_forward/_backward (wt 0) or their transposed-weight forms (wt 1)
 * against the double reference, gradients by central differences. */
static void check_linear(Arena *a, int wt)
{
    uint64_t s = 1 + 6 * (uint64_t)wt;
    enum { N = 5, I = 4, O = 6 };
    float *x = arena_rand(a, N * I, &s, -1, 1), *w = arena_rand(a, I * O, &s, -0.5f, 0.5f);
    float *b = arena_rand(a, O, &s, -0.5f, 0.5f), *R = arena_rand(a, N * O, &s, -1, 1);
    float *y = arena_f(a, N * O), *dx = arena_f(a, N * I);
    float *dw = arena_f(a, I * O), *db = arena_f(a, O);
    LinLossT ctx = {{arena_dbl(a, x, N * I), arena_dbl(a, w, I * O), arena_dbl(a, b, O), arena_d(a, N * O),
                     arena_dbl(a, R, N * O), N, I, O}, arena_dbl(a, w, O * I)};
    double *wp = wt ? ctx.wt : ctx.l.w; /* w read as (O, I) when transposed */
    LossFn loss = wt ? linear_t_loss : linear_loss;
    void *lc = wt ? (void *)&ctx : (void *)&ctx.l;

    (wt ? linear_forward_t : linear_forward)(y, x, w, b, N, I, O);
    loss(lc);
    check_fwd(wt ? "linear_t y" : "linear y", y, ctx.l.y, N * O);
    fill_nan(dx, N * I); // must be overwritten
    (wt ? linear_backward_t : linear_backward)(dx, dw, db, R, x, w, N, I, O);
    check_grad(wt ? "linear_t dwt" : "linear dw", dw, wp, I * O, loss, lc);
    check_grad(wt ? "linear_t db" : "linear db", db, ctx.l.b, O, loss, lc);
    check_grad(wt ? "linear_t dx" : "linear dx", dx, ctx.l.x, N * I, loss, lc);
}

static void test_linear(void **state) { check_linear(*state, 0); }
static void test_linear_t(void **state) { check_linear(*state, 1); }

typedef struct {
    double *w;       // (V, E)
    const int *tok;  // (N)
    const double *R; // (N, E)
    int N, E;
} EmbLoss;

static double embedding_loss(void *ctx)
{
    EmbLoss *l = ctx;
    double loss = 0.0;
    for (int n = 0; n < l->N; n++) {
        for (int e = 0; e < l->E; e++) {
            loss += l->R[n * l->E + e] * l->w[l->tok[n] * l->E + e];
        }
    }
    return loss;
}

static void test_embedding(void **state)
{
    Arena *a = *state;
    uint64_t s = 2;
    enum { V = 6, E = 4, N = 7 };
    static const int tok[N] = {2, 0, 2, 5, 2, 0, 3}; // repeats; rows 1 and 4 unused
    float *w = arena_rand(a, V * E, &s, -0.5f, 0.5f), *R = arena_rand(a, N * E, &s, -1, 1);
    float *out = arena_f(a, N * E), *dw = arena_f(a, V * E);
    double *wd = arena_dbl(a, w, V * E), *out_ref = arena_d(a, N * E);
    EmbLoss ctx = {wd, tok, arena_dbl(a, R, N * E), N, E};

    embedding_forward(out, tok, w, N, E);
    for (int n = 0; n < N; n++) {
        for (int e = 0; e < E; e++) {
            out_ref[n * E + e] = wd[tok[n] * E + e];
        }
    }
    check_fwd("embedding out", out, out_ref, N * E);
    embedding_backward(dw, R, tok, N, E);
    check_grad("embedding dw (repeats)", dw, wd, V * E, embedding_loss, &ctx);
}

/* ---------------------------------------------------------------- tests: softmax CE */

typedef struct {
    double *logits, *probs; // (N, V) each
    const int *tgt;         // (N)
    int N, V;
    double scale;
} CeLoss;

static double ce_loss(void *ctx)
{
    CeLoss *l = ctx;
    return l->scale * ref_ce(l->probs, l->logits, l->tgt, l->N, l->V);
}

static void test_softmax_ce(void **state)
{
    Arena *a = *state;
    uint64_t s = 3;
    enum { N = 4, V = 7 };
    static const int tgt[N] = {0, 6, 3, 3};
    float *logits = arena_rand(a, N * V, &s, -3, 3);
    for (int v = 0; v < V; v++) {  // rows that overflow / underflow expf without the max shift
        logits[1 * V + v] += 200.0f;
        logits[2 * V + v] -= 200.0f;
    }
    float *probs = arena_f(a, N * V), *dl = arena_f(a, N * V), *inplace = arena_f(a, N * V);
    CeLoss ctx = {arena_dbl(a, logits, N * V), arena_d(a, N * V), tgt, N, V, 1.0 / N};

    const double loss = softmax_ce_forward(probs, logits, tgt, N, V);
    const double loss_ref = ref_ce(ctx.probs, ctx.logits, tgt, N, V);
    const double lerr = fabs(loss - loss_ref) / fmax(1.0, fabs(loss_ref));
    printf("%-28s rel err %.1e (tol %.0e)\n", "softmax_ce loss", lerr, FWD_TOL);
    assert_true(isfinite(loss) && lerr <= FWD_TOL);
    check_fwd("softmax_ce probs", probs, ctx.probs, N * V);

    softmax_ce_backward(dl, probs, tgt, (float)ctx.scale, N, V);
    check_grad("softmax_ce dlogits", dl, ctx.logits, N * V, ce_loss, &ctx);

    memcpy(inplace, logits, N * V * sizeof(float)); // probs aliases logits, dlogits aliases probs
    const float loss_in = (float)softmax_ce_forward(inplace, inplace, tgt, N, V), lf = (float)loss;
    check_same("softmax_ce in-place probs", inplace, probs, N * V, ALIAS_TOL);
    check_same("softmax_ce in-place loss", &loss_in, &lf, 1, ALIAS_TOL);
    softmax_ce_backward(inplace, inplace, tgt, (float)ctx.scale, N, V);
    check_same("softmax_ce in-place dlogits", inplace, dl, N * V, ALIAS_TOL);
}

/* ---------------------------------------------------------------- tests: RNN, LSTM, GRU */

/* forward vs reference, backward vs FD, for one layer fed by random x */
static void check_layer(const char *name, Arena *a, Layer *L, uint64_t *s)
{
    char buf[64];
    const size_t BH = (size_t)L->B * L->H, n = (size_t)L->T * BH;
    float *R = arena_rand(a, n, s, -1, 1);
    SeqLoss ctx = {&L->ref, NULL, arena_dbl(a, R, n)};

    layer_forward(L);
    seq_loss(&ctx);
    check_fwd(name2(buf, sizeof buf, name, "h"), L->h, L->ref.h, n + BH);
    if (L->G == 4) {
        check_fwd(name2(buf, sizeof buf, name, "c"), L->c, L->ref.c, n + BH);
    }
    if (L->G > 1) {
        check_fwd(name2(buf, sizeof buf, name, "gates"), L->gates, L->ref.gates,
                  (size_t)L->G * n);
    }
    if (L->G == 3) {
        check_fwd(name2(buf, sizeof buf, name, "un"), L->un, L->ref.un, n);
    }
    layer_backward_from(L, R, L->dx);
    check_layer_grads(name, L, &ctx, 1);
}

static void test_rnn(void **state)
{
    uint64_t s = 4;
    Layer L;
    layer_new(*state, &L, SEQ_T, SEQ_B, SEQ_EIN, SEQ_H, 1, &s, NULL, NULL);
    check_layer("rnn", *state, &L, &s);
}

static void test_lstm(void **state)
{
    uint64_t s = 5;
    Layer L;
    layer_new(*state, &L, SEQ_T, SEQ_B, SEQ_EIN, SEQ_H, 4, &s, NULL, NULL);
    check_layer("lstm", *state, &L, &s);
}

static void test_gru(void **state)
{
    uint64_t s = 10;
    Layer L;
    layer_new(*state, &L, SEQ_T, SEQ_B, SEQ_EIN, SEQ_H, 3, &s, NULL, NULL);
    check_layer("gru", *state, &L, &s);
}

/* Two layers of G gates; the upper one reads the lower one's h[1..T], and its
 * dx is the lower one's dh. FD runs through both layers. */
static void check_stacked(const char *name, Arena *a, int G, uint64_t *s)
{
    char buf[64], up[32], low[32];
    Layer lo, hi;
    layer_new(a, &lo, SEQ_T, SEQ_B, SEQ_EIN, SEQ_H, G, s, NULL, NULL);
    const size_t BH = (size_t)SEQ_B * SEQ_H, n = (size_t)SEQ_T * SEQ_B * SEQ_H2;
    layer_new(a, &hi, SEQ_T, SEQ_B, SEQ_H, SEQ_H2, G, s, lo.h + BH, lo.ref.h + BH);
    float *R = arena_rand(a, n, s, -1, 1);
    SeqLoss ctx = {&lo.ref, &hi.ref, arena_dbl(a, R, n)};
    name2(up, sizeof up, name, "stack upper");
    name2(low, sizeof low, name, "stack lower");

    layer_forward(&lo);
    layer_forward(&hi);
    seq_loss(&ctx);
    check_fwd(name2(buf, sizeof buf, up, "h"), hi.h, hi.ref.h, n + (size_t)SEQ_B * SEQ_H2);
    fill_nan(lo.dh, (size_t)SEQ_T * BH);
    layer_backward_from(&hi, R, lo.dh); // upper dx overwrites lower dh
    layer_fill_scratch(&lo, lo.dx);
    layer_backward(&lo, lo.dx);
    check_layer_grads(up, &hi, &ctx, 0);
    check_layer_grads(low, &lo, &ctx, 1);
}

static void test_lstm_stacked(void **state)
{
    uint64_t s = 6;
    check_stacked("lstm", *state, 4, &s);
}

static void test_gru_stacked(void **state)
{
    uint64_t s = 11;
    check_stacked("gru", *state, 3, &s);
}

/* The recurrent-layer tests again through the packed products, with each
 * kernel this CPU can run */
static void packed_run(void **state, int isa, void (*test)(void **))
{
    if (!rgemm_set(isa)) skip();
    g_pack = 1;
    test(state);
}
#define PACKED(test)                                                                               \
    static void test##_avx2(void **state) { packed_run(state, RGEMM_AVX2, test); }                 \
    static void test##_avx512(void **state) { packed_run(state, RGEMM_AVX512, test); }
PACKED(test_rnn)
PACKED(test_lstm)
PACKED(test_gru)
PACKED(test_lstm_stacked)
PACKED(test_gru_stacked)

/* rgemm against a double reference and bit for bit against one fmaf chain
 * over k per element, with each kernel this CPU can run: C
 * (M, N) += A B, B packed as is or transposed, strides wider than the rows
 * (the gaps must stay as they were), K across the kernels' blocks (128,
 * 256); each row's bits computed with other row counts (alone, and in a
 * block starting at row 1) are the same; and the kernels give the same
 * bits (one FMA chain over k per element in both). */
static void test_rgemm(void **state)
{
    Arena *a = *state;
    const int isas[] = {RGEMM_AVX2, RGEMM_AVX512};
    const int shapes[][3] = {{1, 1, 1}, {3, 7, 5}, {4, 24, 256}, {5, 25, 257}, {8, 48, 129}, {13, 70, 600},
                             {20, 800, 200}, {20, 200, 800}, {33, 97, 513}};
    int ran = 0;
    for (size_t q = 0; q < sizeof shapes / sizeof shapes[0]; q++) {
        for (int trans = 0; trans < 2; trans++) {
            uint64_t s = 21 + 2 * q + (uint64_t)trans;
            const int M = shapes[q][0], N = shapes[q][1], K = shapes[q][2];
            const int lda = K + 3, ldc = N + 5, ldb = (trans ? K : N) + 2;
            float *A = arena_rand(a, (size_t)M * lda, &s, -1, 1);
            float *Bm = arena_rand(a, (size_t)(trans ? N : K) * ldb, &s, -1, 1);
            float *C0 = arena_rand(a, (size_t)M * ldc, &s, -1, 1), *C1 = arena_f(a, (size_t)ldc);
            float *bp = arena_f(a, cfg_pack_wh_floats((uint64_t)K, (uint64_t)N)), *first = NULL;
            for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
                if (!rgemm_set(isas[k])) continue;
                ran |= 1 << k;
                float *C = arena_f(a, (size_t)M * ldc);
                rgemm_pack(bp, Bm, K, N, ldb, trans);
                memcpy(C, C0, (size_t)M * ldc * sizeof(float));
                rgemm(C, ldc, A, lda, bp, M, N, K);
                for (int i = 0; i < M; i++) {
                    for (int j = 0; j < ldc; j++) {
                        const size_t o = (size_t)i * ldc + (size_t)j;
                        if (j >= N) { /* past N: untouched */
                            assert_true(C[o] == C0[o]);
                            continue;
                        }
                        double ref = C0[o], mag = fabs(C0[o]);
                        float chain = C0[o]; /* the claim: one FMA chain over k in order */
                        for (int k2 = 0; k2 < K; k2++) {
                            float b = trans ? Bm[(size_t)j * ldb + k2] : Bm[(size_t)k2 * ldb + j];
                            ref += (double)A[(size_t)i * lda + k2] * b;
                            mag += fabs((double)A[(size_t)i * lda + k2] * b);
                            chain = fmaf(A[(size_t)i * lda + k2], b, chain);
                        }
                        if (memcmp(&chain, &C[o], sizeof chain)) {
                            fail_msg("rgemm %s M=%d N=%d K=%d trans=%d: C[%d][%d] = %.9g, the FMA chain %.9g",
                                     rgemm_name(isas[k]), M, N, K, trans, i, j, C[o], chain);
                        }
                        if (fabs(C[o] - ref) > (K + 2) * 6e-8 * mag) {
                            fail_msg("rgemm %s M=%d N=%d K=%d trans=%d: C[%d][%d] = %.9g, double %.9g",
                                     rgemm_name(isas[k]), M, N, K, trans, i, j, C[o], ref);
                        }
                    }
                }
                for (int i = 0; i < M; i++) { /* row i alone */
                    memcpy(C1, C0 + (size_t)i * ldc, (size_t)ldc * sizeof(float));
                    rgemm(C1, ldc, A + (size_t)i * lda, lda, bp, 1, N, K);
                    assert_memory_equal(C1, C + (size_t)i * ldc, (size_t)N * sizeof(float));
                }
                if (M > 2) { /* rows 1..M-1, a block that starts off the row grid */
                    float *C2 = arena_f(a, (size_t)M * ldc);
                    memcpy(C2, C0 + ldc, (size_t)(M - 1) * ldc * sizeof(float));
                    rgemm(C2, ldc, A + lda, lda, bp, M - 1, N, K);
                    assert_memory_equal(C2, C + ldc, (size_t)(M - 1) * ldc * sizeof(float));
                }
                if (first) assert_memory_equal(C, first, (size_t)M * ldc * sizeof(float)); /* AVX2 == AVX-512 */
                first = C;
            }
        }
    }
    printf("rgemm kernels run here:%s%s\n", ran & 1 ? " AVX2" : "", ran & 2 ? " AVX-512" : "");
    if (!ran) skip();
}

/* ---------------------------------------------------------------- tests: accumulation, dx NULL */

static void check_layer_accum(const char *name, Arena *a, Layer *L, uint64_t *s)
{
    char buf[64];
    const size_t n = (size_t)L->T * L->B * L->H;
    float *R = arena_rand(a, n, s, -1, 1), *gz = arena_f(a, L->ngrad);
    float *g0 = arena_rand(a, L->ngrad, s, -1, 1), *gdx = arena_f(a, L->ngrad);
    layer_forward(L);

    memset(L->grad, 0, L->ngrad * sizeof(float)); // one call from zero
    layer_backward_from(L, R, L->dx);
    memcpy(gz, L->grad, L->ngrad * sizeof(float));
    memcpy(L->grad, g0, L->ngrad * sizeof(float)); // two calls from g0
    layer_backward_from(L, R, L->dx);
    layer_backward_from(L, R, L->dx);
    check_accum(name2(buf, sizeof buf, name, "dwx accumulates"), L->dwx, g0, gz, L->nwx);
    check_accum(name2(buf, sizeof buf, name, "dwh accumulates"), L->dwh,
                g0 + L->nwx, gz + L->nwx, L->nwh);
    check_accum(name2(buf, sizeof buf, name, "db accumulates"), L->db,
                g0 + L->nwx + L->nwh, gz + L->nwx + L->nwh, L->nb);

    memset(L->grad, 0, L->ngrad * sizeof(float)); // dx = NULL: same weight gradients
    layer_backward_from(L, R, L->dx);
    memcpy(gdx, L->grad, L->ngrad * sizeof(float));
    memset(L->grad, 0, L->ngrad * sizeof(float));
    layer_backward_from(L, R, NULL);
    check_same(name2(buf, sizeof buf, name, "grads with dx=NULL"), L->grad, gdx, L->ngrad, 0.0);
}

static void test_recurrent_accum_and_null_dx(void **state);
PACKED(test_recurrent_accum_and_null_dx)


static void test_recurrent_accum_and_null_dx(void **state)
{
    uint64_t s = 7;
    Layer rnn, lstm;
    layer_new(*state, &rnn, SEQ_T, SEQ_B, SEQ_EIN, SEQ_H, 1, &s, NULL, NULL);
    layer_new(*state, &lstm, SEQ_T, SEQ_B, SEQ_EIN, SEQ_H, 4, &s, NULL, NULL);
    check_layer_accum("rnn", *state, &rnn, &s);
    check_layer_accum("lstm", *state, &lstm, &s);
    Layer gru;
    layer_new(*state, &gru, SEQ_T, SEQ_B, SEQ_EIN, SEQ_H, 3, &s, NULL, NULL);
    check_layer_accum("gru", *state, &gru, &s);
}

/* Weights NULL: the backward computes dx alone, with the same bits, and
 * adds nothing; recurrent_weight_grads over the scratch it left (the RNN's
 * dh, the LSTM's dgates, the GRU's dgates and du) then gives the weight
 * gradients' bits (sync.reproducible's micro-batch sums, worker/model.c). */
static void check_layer_split(const char *name, Arena *a, Layer *L, uint64_t *s)
{
    char buf[64];
    const size_t n = (size_t)L->T * L->B * L->H, nx = (size_t)L->T * L->B * L->Ein;
    float *R = arena_rand(a, n, s, -1, 1), *g = arena_f(a, L->ngrad), *dx = arena_f(a, nx);
    layer_forward(L);
    memset(L->grad, 0, L->ngrad * sizeof(float));
    layer_backward_from(L, R, L->dx);
    memcpy(g, L->grad, L->ngrad * sizeof(float));
    memcpy(dx, L->dx, nx * sizeof(float));
    memset(L->grad, 0, L->ngrad * sizeof(float));
    float *dwx = L->dwx, *dwh = L->dwh, *db = L->db;
    L->dwx = L->dwh = L->db = NULL;
    layer_backward_from(L, R, L->dx);
    L->dwx = dwx, L->dwh = dwh, L->db = db;
    check_same(name2(buf, sizeof buf, name, "dx, weights NULL"), L->dx, dx, nx, 0.0);
    size_t touched = 0;
    for (size_t i = 0; i < L->ngrad; i++) touched += L->grad[i] != 0.0f;
    printf("%-28s %zu gradient values written (tol 0)\n", name2(buf, sizeof buf, name, "weights NULL"), touched);
    assert_int_equal(touched, 0);
    const float *da = L->G == 1 ? L->dh : L->dgates, *du = L->G == 3 ? L->du : da;
    recurrent_weight_grads(L->dwx, L->dwh, L->db, da, du, L->x, L->h, L->T * L->B, L->Ein, L->H,
                           L->G * L->H);
    check_same(name2(buf, sizeof buf, name, "recurrent_weight_grads"), L->grad, g, L->ngrad, 0.0);
}

static void test_recurrent_weight_grads(void **state)
{
    uint64_t s = 12;
    for (int G = 1; G <= 4; G++) {
        if (G == 2) continue;
        Layer L;
        layer_new(*state, &L, SEQ_T, SEQ_B, SEQ_EIN, SEQ_H, G, &s, NULL, NULL);
        check_layer_split(G == 1 ? "rnn" : G == 3 ? "gru" : "lstm", *state, &L, &s);
    }
}

static void test_linear_accum_and_null_dx(void **state)
{
    Arena *a = *state;
    uint64_t s = 8;
    enum { N = 5, I = 4, O = 3, NG = I * O + O };
    float *x = arena_rand(a, N * I, &s, -1, 1), *w = arena_rand(a, I * O, &s, -0.5f, 0.5f);
    float *dy = arena_rand(a, N * O, &s, -1, 1), *dx = arena_f(a, N * I);
    float *g0 = arena_rand(a, NG, &s, -1, 1), *g = arena_f(a, NG); // dw | db
    float *gz = arena_f(a, NG), *gnull = arena_f(a, NG);

    linear_backward(dx, gz, gz + I * O, dy, x, w, N, I, O);
    memcpy(g, g0, NG * sizeof(float));
    linear_backward(dx, g, g + I * O, dy, x, w, N, I, O);
    linear_backward(dx, g, g + I * O, dy, x, w, N, I, O);
    check_accum("linear dw accumulates", g, g0, gz, I * O);
    check_accum("linear db accumulates", g + I * O, g0 + I * O, gz + I * O, O);
    linear_backward(NULL, gnull, gnull + I * O, dy, x, w, N, I, O);
    check_same("linear grads with dx=NULL", gnull, gz, NG, 0.0);
    float *dx2 = arena_f(a, N * I); // dw and db NULL: dx alone, the same bits
    linear_backward(dx2, NULL, NULL, dy, x, w, N, I, O);
    check_same("linear dx with dw=NULL", dx2, dx, N * I, 0.0);
}

static void test_embedding_accum(void **state)
{
    Arena *a = *state;
    uint64_t s = 9;
    enum { N = 5, E = 3, V = 6 };
    static const int tok[N] = {1, 1, 4, 0, 1};
    float *dout = arena_rand(a, N * E, &s, -1, 1), *gz = arena_f(a, V * E);
    float *g0 = arena_rand(a, V * E, &s, -1, 1), *g = arena_f(a, V * E);

    embedding_backward(gz, dout, tok, N, E);
    memcpy(g, g0, V * E * sizeof(float));
    embedding_backward(g, dout, tok, N, E);
    embedding_backward(g, dout, tok, N, E);
    check_accum("embedding dw accumulates", g, g0, gz, V * E);
}

/* ---------------------------------------------------------------- tests: adaptive softmax */

/* Sizes: H 6, V 11, cutoffs 4,7 (shortlist [0, 4), clusters [4, 7) and
 * [7, 11)), div 2 (projections 3 and 1): head outputs O = 4 + 2. */
enum { AS_N = 7, AS_H = 6, AS_V = 11, AS_K = 2, AS_O = 6 };
static const int as_cut[AS_K + 1] = {4, 7, 11}, as_dim[AS_K] = {3, 1};

typedef struct {
    double *x, *hw, *hb;                       // (N, H), (H, O), (O)
    double *proj[AS_K], *tw[AS_K], *tb[AS_K];  // (H, d), (d, n), (n)
    const int *tgt;
    int N;
    double scale;
} AdaLoss;

/* lp (V): log p(w) of every word for input row x (H), in double. */
static void ref_adaptive_logp(double *lp, const AdaLoss *l, const double *x)
{
    double hl[AS_O], hp[AS_O], z[AS_H], tl[AS_V], tp[AS_V];
    int zero = 0;
    ref_linear(hl, x, l->hw, l->hb, 1, AS_H, AS_O);
    ref_ce(hp, hl, &zero, 1, AS_O);
    for (int w = 0; w < as_cut[0]; w++) lp[w] = log(hp[w]);
    for (int k = 0; k < AS_K; k++) {
        int d = as_dim[k], n = as_cut[k + 1] - as_cut[k];
        double nob[AS_H] = {0};
        ref_linear(z, x, l->proj[k], nob, 1, AS_H, d);
        ref_linear(tl, z, l->tw[k], l->tb[k], 1, d, n);
        ref_ce(tp, tl, &zero, 1, n);
        for (int j = 0; j < n; j++) lp[as_cut[k] + j] = log(hp[as_cut[0] + k]) + log(tp[j]);
    }
}

static double adaptive_loss(void *ctx)
{
    AdaLoss *l = ctx;
    double loss = 0, lp[AS_V];
    for (int n = 0; n < l->N; n++) {
        ref_adaptive_logp(lp, l, l->x + n * AS_H);
        loss -= lp[l->tgt[n]];
    }
    return l->scale * loss;
}

/* adaptive_forward/_backward against the double reference: the loss, the
 * reference's distribution normalised, every gradient by central
 * differences; tgt2 leaves cluster 1 without rows (its gradients stay 0). */
static void test_adaptive(void **state)
{
    Arena *ar = *state;
    uint64_t s = 17;
    static const int tgt1[AS_N] = {0, 5, 9, 3, 6, 10, 4}, tgt2[AS_N] = {1, 4, 2, 6, 0, 3, 5};
    Config c;
    cfg_defaults(&c);
    c.model_softmax = SOFTMAX_ADAPTIVE, c.data_source = DATA_TEXT, c.data_tokenizer = TOK_WORDS;
    c.model_vocab = AS_V, c.model_hidden = AS_H, c.model_softmax_div = 2;
    snprintf(c.model_softmax_cutoffs, sizeof c.model_softmax_cutoffs, "4,7");
    Adaptive a;
    assert_int_equal(adaptive_setup(&a, &c), AS_K);
    assert_int_equal(a.O, AS_O);
    for (int k = 0; k < AS_K; k++) assert_int_equal(a.dim[k], as_dim[k]), assert_int_equal(a.cut[k + 1], as_cut[k + 1]);
    adaptive_bind_scratch(&a, arena_f(ar, adaptive_scratch(&a, AS_N)), AS_N);
    float *x = arena_rand(ar, AS_N * AS_H, &s, -1, 1), *hw = arena_rand(ar, AS_H * AS_O, &s, -1, 1);
    float *hb = arena_rand(ar, AS_O, &s, -0.5f, 0.5f), *head = arena_f(ar, AS_N * AS_O);
    float *dx = arena_f(ar, AS_N * AS_H), *dhw = arena_f(ar, AS_H * AS_O), *dhb = arena_f(ar, AS_O);
    AdaLoss l = {arena_dbl(ar, x, AS_N * AS_H), arena_dbl(ar, hw, AS_H * AS_O), arena_dbl(ar, hb, AS_O),
                 {0}, {0}, {0}, tgt1, AS_N, 1.0 / AS_N};
    for (int k = 0; k < AS_K; k++) {
        int d = as_dim[k], n = as_cut[k + 1] - as_cut[k];
        a.proj[k] = arena_rand(ar, AS_H * d, &s, -1, 1), a.dproj[k] = arena_f(ar, AS_H * d);
        a.tw[k] = arena_rand(ar, d * n, &s, -1, 1), a.dtw[k] = arena_f(ar, d * n);
        a.tb[k] = arena_rand(ar, n, &s, -0.5f, 0.5f), a.dtb[k] = arena_f(ar, n);
        l.proj[k] = arena_dbl(ar, a.proj[k], AS_H * d), l.tw[k] = arena_dbl(ar, a.tw[k], d * n);
        l.tb[k] = arena_dbl(ar, a.tb[k], n);
    }
    double worst = 0, lp[AS_V];
    for (int n = 0; n < AS_N; n++) { /* the reference is a distribution over all V words */
        double sum = 0;
        ref_adaptive_logp(lp, &l, l.x + n * AS_H);
        for (int w = 0; w < AS_V; w++) sum += exp(lp[w]);
        worst = fmax(worst, fabs(sum - 1));
    }
    printf("%-28s max |sum_w p(w) - 1| %.1e (tol 1e-12)\n", "adaptive reference", worst);
    assert_true(worst <= 1e-12);
    for (int pass = 0; pass < 2; pass++) {
        l.tgt = pass ? tgt2 : tgt1;
        memset(dhw, 0, AS_H * AS_O * sizeof(float)), memset(dhb, 0, AS_O * sizeof(float));
        for (int k = 0; k < AS_K; k++) {
            int d = as_dim[k], n = as_cut[k + 1] - as_cut[k];
            memset(a.dproj[k], 0, AS_H * d * sizeof(float)), memset(a.dtw[k], 0, d * n * sizeof(float));
            memset(a.dtb[k], 0, n * sizeof(float));
        }
        double loss = adaptive_forward(&a, head, x, l.tgt, hw, hb, AS_N) * l.scale, ref = adaptive_loss(&l);
        double lerr = fabs(loss - ref) / fmax(1.0, fabs(ref));
        printf("%-28s rel err %.1e (tol %.0e)\n", pass ? "adaptive loss (no tail 1)" : "adaptive loss", lerr, FWD_TOL);
        assert_true(isfinite(loss) && lerr <= FWD_TOL);
        fill_nan(dx, AS_N * AS_H); // must be overwritten
        adaptive_backward(&a, dx, dhw, dhb, head, x, hw, (float)l.scale, AS_N);
        check_grad("adaptive dx", dx, l.x, AS_N * AS_H, adaptive_loss, &l);
        check_grad("adaptive head dw", dhw, l.hw, AS_H * AS_O, adaptive_loss, &l);
        check_grad("adaptive head db", dhb, l.hb, AS_O, adaptive_loss, &l);
        for (int k = 0; k < AS_K; k++) {
            int d = as_dim[k], n = as_cut[k + 1] - as_cut[k];
            char what[48];
            snprintf(what, sizeof what, "adaptive tail.%d dproj", k);
            check_grad(what, a.dproj[k], l.proj[k], AS_H * d, adaptive_loss, &l);
            snprintf(what, sizeof what, "adaptive tail.%d dw", k);
            check_grad(what, a.dtw[k], l.tw[k], d * n, adaptive_loss, &l);
            snprintf(what, sizeof what, "adaptive tail.%d db", k);
            check_grad(what, a.dtb[k], l.tb[k], n, adaptive_loss, &l);
        }
        assert_int_equal(a.nrows[1], pass ? 0 : 2);
        for (int j = 0; pass && j < AS_H * as_dim[1]; j++) assert_true(a.dproj[1][j] == 0.0f);
    }
    /* What the kernel computes is itself normalised: exp(-loss) over every
     * target of one row sums to 1. */
    worst = 0;
    for (int n = 0; n < AS_N; n++) {
        double sum = 0;
        for (int w = 0; w < AS_V; w++) sum += exp(-adaptive_forward(&a, head, x + n * AS_H, &w, hw, hb, 1));
        worst = fmax(worst, fabs(sum - 1));
    }
    printf("%-28s max |sum_w p(w) - 1| %.1e (tol 1e-5)\n", "adaptive_forward", worst);
    assert_true(worst <= 1e-5);
}

/* fastmath against double libm on a dense grid over [-20, 20] (every
 * 2^-12, plus tiny and huge values), and the special values: NaN stays
 * NaN (divergence detection depends on it), +-inf give the limits. */
static void test_fastmath(void **state)
{
    (void)state;
    double we = 0, wt = 0, ws = 0, wr = 0;
    for (int k = -20 * 4096; k <= 20 * 4096; k++) {
        float xs[3] = {(float)k / 4096.0f, (float)k * 1e-9f, (float)k * 1e-3f};
        for (int q = 0; q < 3; q++) {
            float x = xs[q];
            double e = exp((double)x), t = tanh((double)x), sg = 1.0 / (1.0 + exp(-(double)x));
            we = fmax(we, fabs(fm_expf(x) - e) / e);
            wt = fmax(wt, fabs(fm_tanhf(x) - t));
            if (x != 0 && fabs(x) < 0.25) wr = fmax(wr, fabs(fm_tanhf(x) - t) / fabs(t));
            ws = fmax(ws, fabs(fm_sigmoidf(x) - sg));
        }
    }
    printf("fastmath vs double over [-20, 20]: exp rel err %.2g (tol 5e-7), tanh abs err %.2g "
           "(tol 3e-7), below 0.25 rel err %.2g (tol 3e-7), sigmoid abs err %.2g (tol 3e-7)\n",
           we, wt, wr, ws);
    assert_true(we <= 5e-7 && wt <= 3e-7 && wr <= 3e-7 && ws <= 3e-7);
    assert_true(isnan(fm_expf(NAN)) && isnan(fm_tanhf(NAN)) && isnan(fm_sigmoidf(NAN)));
    assert_true(fm_tanhf(INFINITY) == 1.0f && fm_tanhf(-INFINITY) == -1.0f);
    assert_true(fm_tanhf(30.0f) == 1.0f && fm_tanhf(-30.0f) == -1.0f && fm_tanhf(0.0f) == 0.0f);
    assert_true(fm_sigmoidf(INFINITY) == 1.0f && fm_sigmoidf(-INFINITY) < 1e-37f);
    assert_true(fm_expf(-INFINITY) < 1e-37f && fm_expf(100.0f) > 1e38f && isfinite(fm_expf(100.0f)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fastmath),
        cmocka_unit_test_setup_teardown(test_linear_t, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_linear, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_embedding, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_softmax_ce, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_adaptive, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_rnn, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_lstm, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_lstm_stacked, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_gru, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_gru_stacked, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_recurrent_accum_and_null_dx, arena_setup,
                                        arena_teardown),
        cmocka_unit_test_setup_teardown(test_recurrent_weight_grads, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_linear_accum_and_null_dx, arena_setup,
                                        arena_teardown),
        cmocka_unit_test_setup_teardown(test_embedding_accum, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_rgemm, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_rnn_avx2, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_rnn_avx512, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_lstm_avx2, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_lstm_avx512, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_lstm_stacked_avx2, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_lstm_stacked_avx512, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_gru_avx2, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_gru_avx512, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_gru_stacked_avx2, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_gru_stacked_avx512, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_recurrent_accum_and_null_dx_avx2, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_recurrent_accum_and_null_dx_avx512, arena_setup, arena_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) == 0 ? 0 : 1;
}
