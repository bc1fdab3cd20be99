/* model: flat parameter/gradient buffers, named views, and the forward and
 * backward pass of embedding -> L recurrent layers -> linear head. */
#include "worker/model.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "worker/layers.h"
#include "worker/rgemm.h"

/* The views of cfg_layout's tensors (the one layout, which the
 * coordinator names tensors by), in its order: head first, top layer
 * down, embedding last. */
static void model_layout(Model *m, const Config *c)
{
    CfgLayout lo;
    cfg_layout(c, &lo);
    for (int i = 0; i < lo.n; i++) {
        const CfgTensor *t = &lo.t[i];
        ParamView *v = &m->views[i];
        snprintf(v->name, sizeof v->name, "%s", t->name);
        v->off = (size_t)t->off, v->n = (size_t)t->n;
        v->rows = (int)t->shape[0], v->cols = (int)t->shape[1], v->ndim = t->ndim;
    }
    m->nviews = lo.n, m->nparams = (size_t)lo.nparams, m->G = lo.gates;
}

/* Offset of the view named by the format (it exists: cfg_layout made it). */
static size_t view_off(const Model *m, const char *fmt, int l)
{
    char name[32];
    snprintf(name, sizeof name, fmt, l);
    for (int i = 0; i < m->nviews; i++)
        if (!strcmp(m->views[i].name, name)) return m->views[i].off;
    assert(!"a tensor the model uses is missing from cfg_layout");
    return 0;
}

/* Point the named tensors into the parameter and gradient buffers. */
static void model_point(Model *m)
{
    size_t o = view_off(m, "head.bias", 0);
    m->hb = m->params + o, m->dhb = m->grads + o;
    for (int k = 0; m->adaptive && k < m->ada.K; k++) {
        Adaptive *a = &m->ada;
        o = view_off(m, "tail.%d.proj", k), a->proj[k] = m->params + o, a->dproj[k] = m->grads + o;
        o = view_off(m, "tail.%d.weight", k), a->tw[k] = m->params + o, a->dtw[k] = m->grads + o;
        o = view_off(m, "tail.%d.bias", k), a->tb[k] = m->params + o, a->dtb[k] = m->grads + o;
    }
    for (int l = 0; l < m->L; l++) {
        Layer *y = &m->layer[l];
        o = view_off(m, "layers.%d.wx", l), y->wx = m->params + o, y->dwx = m->grads + o;
        o = view_off(m, "layers.%d.wh", l), y->wh = m->params + o, y->dwh = m->grads + o;
        o = view_off(m, "layers.%d.bias", l), y->b = m->params + o, y->db = m->grads + o;
    }
    if (m->source != DATA_ADDING) {
        o = view_off(m, "embed.weight", 0);
        m->emb = m->params + o, m->demb = m->grads + o;
    }
    if (m->tied) m->hw = m->emb, m->dhw = m->demb;
    else o = view_off(m, "head.weight", 0), m->hw = m->params + o, m->dhw = m->grads + o;
}

void model_bind(Model *m, float *params, float *grads)
{
    if (params) {
        if (!(m->borrowed & 1)) free(m->params);
        m->params = params, m->borrowed |= 1;
    }
    if (grads) {
        if (!(m->borrowed & 2)) free(m->grads);
        m->grads = grads, m->borrowed |= 2;
    }
    model_point(m);
}

/* Every buffer of the model, counted in m->nfloats. */
static float *falloc(Model *m, size_t n)
{
    m->nfloats += n;
    return calloc(n ? n : 1, sizeof(float));
}

int model_init(Model *m, const Config *c, int B)
{
    memset(m, 0, sizeof *m);
    m->kind = c->model_kind, m->source = c->data_source;
    m->L = c->model_layers, m->V = c->model_vocab, m->E = c->model_embed, m->H = c->model_hidden;
    m->T = c->data_seq_len, m->B = B;
    m->Ein0 = m->source != DATA_ADDING ? m->E : 2;
    m->O = m->source != DATA_ADDING ? m->V : 1;
    m->carry = m->source != DATA_ADDING;
    m->tied = cfg_tied(c);
    m->adaptive = m->source != DATA_ADDING && adaptive_setup(&m->ada, c) > 0;
    if (m->adaptive) m->O = m->ada.O;
    for (int l = 0; l < m->L; l++) m->layer[l].Ein = l == 0 ? m->Ein0 : m->H;
    model_layout(m, c);
    m->params = falloc(m, m->nparams);
    m->grads = falloc(m, m->nparams);
    if (!m->params || !m->grads) goto fail;
    model_point(m);
    size_t TB = (size_t)m->T * (size_t)B, H = (size_t)m->H;
    for (int l = 0; l < m->L; l++) {
        Layer *y = &m->layer[l];
        if (!(y->h = falloc(m, (TB + (size_t)B) * H))) goto fail;
        if (m->kind == MODEL_LSTM) {
            y->c = falloc(m, (TB + (size_t)B) * H);
            y->gates = falloc(m, TB * (size_t)m->G * H);
            if (!y->c || !y->gates) goto fail;
        }
        if (m->kind == MODEL_GRU) {
            y->gates = falloc(m, TB * (size_t)m->G * H);
            y->un = falloc(m, TB * H);
            if (!y->gates || !y->un) goto fail;
        }
    }
    size_t wide = (size_t)(m->E > m->H ? m->E : m->H);
    if (m->Ein0 > (int)wide) wide = (size_t)m->Ein0;
    m->x0 = falloc(m, TB * (size_t)m->Ein0);
    m->out = falloc(m, (m->source != DATA_ADDING ? TB : (size_t)B) * (size_t)m->O);
    m->dA = falloc(m, TB * wide);
    m->dB = falloc(m, TB * wide);
    m->dgates = falloc(m, m->kind != MODEL_RNN ? TB * (size_t)m->G * H : 0);
    m->du = falloc(m, m->kind == MODEL_GRU ? TB * (size_t)m->G * H : 0);
    m->dc = falloc(m, (size_t)B * H);
    if (!m->x0 || !m->out || !m->dA || !m->dB || !m->dgates || !m->du || !m->dc) goto fail;
    if (cfg_pack_floats(c) && rgemm_setup() && !(m->wpack = falloc(m, cfg_pack_floats(c)))) goto fail;
    if (m->emb && !(m->emb_rows = calloc((size_t)m->V, 1))) goto fail;
    if (m->adaptive) {
        if (!(m->ada_buf = falloc(m, adaptive_scratch(&m->ada, (int)TB)))) goto fail;
        adaptive_bind_scratch(&m->ada, m->ada_buf, (int)TB);
    }
    m->dropout = m->source != DATA_ADDING ? (float)c->model_dropout : 0.0f;
    for (int k = 0; m->dropout > 0 && k <= m->L; k++) {
        size_t width = (size_t)(k == 0 ? m->Ein0 : m->H);
        if (!(m->din[k] = falloc(m, TB * width)) || !(m->mask[k] = falloc(m, TB * width))) goto fail;
    }
    return 0;
fail:
    model_free(m);
    return -1;
}

void model_free(Model *m)
{
    for (int l = 0; l < MODEL_MAX_LAYERS; l++) {
        free(m->layer[l].h), free(m->layer[l].c), free(m->layer[l].gates), free(m->layer[l].un);
    }
    if (!(m->borrowed & 1)) free(m->params);
    if (!(m->borrowed & 2)) free(m->grads);
    free(m->x0), free(m->out);
    free(m->dA), free(m->dB), free(m->dgates), free(m->du), free(m->dc), free(m->emb_rows);
    free(m->wpack);
    free(m->ada_buf);
    for (int k = 0; k <= MODEL_MAX_LAYERS; k++) free(m->din[k]), free(m->mask[k]);
    memset(m, 0, sizeof *m);
}

void model_init_params(Model *m, uint64_t seed, double scale)
{
    Rng r;
    rng_init(&r, rng_derive(seed, 0x1417u, 0));
    for (size_t i = 0; i < m->nparams; i++)
        m->params[i] = (float)((2.0 * rng_uniform(&r) - 1.0) * scale);
    for (int l = 0; l < m->L; l++) {
        Layer *y = &m->layer[l];
        for (int j = 0; j < m->G * m->H; j++) y->b[j] = 0.0f;
        if (m->kind == MODEL_LSTM)
            for (int j = m->H; j < 2 * m->H; j++) y->b[j] = 1.0f; /* forget gate */
    }
    for (int j = 0; j < m->O; j++) m->hb[j] = 0.0f;
    for (int k = 0; m->adaptive && k < m->ada.K; k++)
        memset(m->ada.tb[k], 0, (size_t)(m->ada.cut[k + 1] - m->ada.cut[k]) * sizeof(float));
}

void model_reset_state(Model *m)
{
    size_t n = (size_t)m->B * (size_t)m->H;
    for (int l = 0; l < m->L; l++) {
        Layer *y = &m->layer[l];
        size_t last = (size_t)m->T * n;
        memset(y->h + last, 0, n * sizeof(float));
        if (y->c) memset(y->c + last, 0, n * sizeof(float));
    }
}

void model_zero_grad(Model *m)
{
    memset(m->grads, 0, m->nparams * sizeof(float));
    if (m->emb_rows) memset(m->emb_rows, 0, (size_t)m->V);
}

void model_zero_grad_rows(Model *m, const int *rows, int nrows)
{
    size_t E = (size_t)m->E;
    assert(m->demb && !m->tied && m->demb + (size_t)m->V * E == m->grads + m->nparams);
    memset(m->grads, 0, (size_t)(m->demb - m->grads) * sizeof(float));
    for (int j = 0; j < nrows; j++) memset(m->demb + (size_t)rows[j] * E, 0, E * sizeof(float));
    memset(m->emb_rows, 0, (size_t)m->V);
}

long model_terms(const Model *m) { return m->source != DATA_ADDING ? (long)m->T * m->B : m->B; }

double model_flops(const Model *m)
{
    double T = m->T, B = m->B, TB = T * B, H = m->H, GH = (double)m->G * m->H, f = 0;
    for (int l = 0; l < m->L; l++) {
        double Ein = m->layer[l].Ein;
        int has_dx = !(l == 0 && m->source == DATA_ADDING);
        f += 2 * TB * Ein * GH + 2 * TB * H * GH;                          /* forward */
        f += 2 * TB * Ein * GH * (1 + has_dx) + 2 * TB * H * GH + 2 * (T - 1) * B * H * GH;
    }
    double N = m->source != DATA_ADDING ? TB : B;
    return f + 6 * N * H * m->O + (m->adaptive ? adaptive_tail_flops(&m->ada) : 0);
}

/* h[0] <- h[T] (carried state) or 0. */
static void model_start_state(Model *m)
{
    size_t n = (size_t)m->B * (size_t)m->H, last = (size_t)m->T * n;
    for (int l = 0; l < m->L; l++) {
        Layer *y = &m->layer[l];
        if (m->carry) {
            memcpy(y->h, y->h + last, n * sizeof(float));
            if (y->c) memcpy(y->c, y->c + last, n * sizeof(float));
        } else {
            memset(y->h, 0, n * sizeof(float));
            if (y->c) memset(y->c, 0, n * sizeof(float));
        }
    }
}

static int dropping(const Model *m) { return m->dropout > 0 && m->training; }

/* The output feeding site k (0: embeddings; l: layer l-1's h[1..T]; L: the
 * top layer's, for the head), before dropout. (T, B, width) */
static const float *site_source(const Model *m, int k)
{
    return k == 0 ? m->x0 : m->layer[k - 1].h + (size_t)m->B * m->H;
}

/* din[k] = source * mask, with a fresh mask for this step. */
static void dropout_forward(Model *m, int k)
{
    int width = k == 0 ? m->Ein0 : m->H;
    const float *src = site_source(m, k);
    float keep = 1.0f / (1.0f - m->dropout), *mk = m->mask[k], *out = m->din[k];
    double p = m->dropout;
    for (int b = 0; b < m->B; b++) {
        uint64_t key = rng_derive(m->drop_seed ^ ((uint64_t)k << 56), (uint64_t)m->drop_step,
                                  (uint64_t)(m->first_stream + b));
        for (int t = 0; t < m->T; t++) {
            size_t row = ((size_t)t * m->B + b) * (size_t)width;
            for (int i = 0; i < width; i++) {
                uint64_t r = rng_mix(key + (uint64_t)t * (uint64_t)width + (uint64_t)i);
                mk[row + i] = (double)(r >> 11) * 0x1.0p-53 < p ? 0.0f : keep;
                out[row + i] = src[row + i] * mk[row + i];
            }
        }
    }
}

/* The gradient w.r.t. din[k] (in g) becomes the gradient w.r.t. its source. */
static void dropout_backward(const Model *m, int k, float *g)
{
    size_t n = (size_t)m->T * m->B * (size_t)(k == 0 ? m->Ein0 : m->H);
    for (size_t i = 0; i < n; i++) g[i] *= m->mask[k][i];
}

/* What site k feeds forward: the dropped copy while training with dropout. */
static const float *site_input(const Model *m, int k)
{
    return dropping(m) ? m->din[k] : site_source(m, k);
}

static void layers_forward(Model *m)
{
    for (int l = 0; l < m->L; l++) {
        Layer *y = &m->layer[l];
        if (dropping(m)) dropout_forward(m, l);
        const float *x = site_input(m, l); /* (T, B, Ein) */
        if (m->kind == MODEL_LSTM)
            lstm_forward(y->h, y->c, y->gates, m->wpack, x, y->wx, y->wh, y->b, m->T, m->B, y->Ein, m->H);
        else if (m->kind == MODEL_GRU)
            gru_forward(y->h, y->gates, y->un, m->wpack, x, y->wx, y->wh, y->b, m->T, m->B, y->Ein, m->H);
        else
            rnn_forward(y->h, m->wpack, x, y->wx, y->wh, y->b, m->T, m->B, y->Ein, m->H);
    }
}

/* dh (T, B, H) holds the gradient w.r.t. the top layer's outputs. Returns
 * the buffer holding the gradient w.r.t. x0 (T, B, Ein0). */
static void grads_ready(const Model *m, const float *end)
{
    if (m->grad_ready) m->grad_ready(m->hook_ctx, (size_t)(end - m->grads));
}

/* ---------------------------------------------------------------- reductions by micro-batch
 * (m->split, sync.reproducible stacked: see ModelSplit in model.h) */

/* The pointer p into m->grads, moved into micro-batch j's slot. */
static float *slot_at(const Model *m, int j, const float *p)
{
    return m->split->slot[j] + (p - m->grads);
}

/* dst (steps*mb, width) = micro-batch j's rows of src (steps*B, width), in order (t, b). */
static void gather_rows(float *dst, const float *src, const Model *m, int j, int steps, int width)
{
    size_t mbw = (size_t)m->split->mb * (size_t)width;
    for (int t = 0; t < steps; t++)
        memcpy(dst + (size_t)t * mbw, src + (size_t)t * m->B * width + (size_t)j * mbw,
               mbw * sizeof(float));
}

/* The head's weight gradients, dy = m->out (steps*B, O) and x (steps*B, H). */
static void split_head_grads(const Model *m, const float *x, int steps)
{
    const ModelSplit *s = m->split;
    for (int j = 0; j < s->n; j++) {
        gather_rows(s->ga, m->out, m, j, steps, m->O);
        gather_rows(s->gx, x, m, j, steps, m->H);
        float *dw = slot_at(m, j, m->dhw), *db = slot_at(m, j, m->dhb);
        if (m->tied)
            linear_backward_t(NULL, dw, db, s->ga, s->gx, m->hw, steps * s->mb, m->H, m->O);
        else
            linear_backward(NULL, dw, db, s->ga, s->gx, m->hw, steps * s->mb, m->H, m->O);
    }
}

/* Layer l's weight gradients from da and du (T*B, GH) its backward left, x its input. */
static void split_layer_grads(const Model *m, int l, const float *da, const float *du,
                              const float *x)
{
    const ModelSplit *s = m->split;
    const Layer *y = &m->layer[l];
    int GH = m->G * m->H;
    for (int j = 0; j < s->n; j++) {
        gather_rows(s->ga, da, m, j, m->T, GH);
        if (du != da) gather_rows(s->gu, du, m, j, m->T, GH);
        gather_rows(s->gx, x, m, j, m->T, y->Ein);
        gather_rows(s->gh, y->h, m, j, m->T, m->H); /* h[0..T-1] */
        recurrent_weight_grads(slot_at(m, j, y->dwx), slot_at(m, j, y->dwh), slot_at(m, j, y->db),
                               s->ga, du != da ? s->gu : s->ga, s->gx, s->gh, m->T * s->mb,
                               y->Ein, m->H, GH);
    }
}

/* The embedding's gradient from dx0 (T*B, E), the tokens inputs (T*B). */
static void split_embedding_grads(const Model *m, const float *dx0, const int *inputs)
{
    const ModelSplit *s = m->split;
    for (int j = 0; j < s->n; j++) {
        gather_rows(s->gx, dx0, m, j, m->T, m->E);
        for (int t = 0; t < m->T; t++)
            memcpy(s->gtok + (size_t)t * s->mb, inputs + (size_t)t * m->B + (size_t)j * s->mb,
                   (size_t)s->mb * sizeof(int));
        embedding_backward(slot_at(m, j, m->demb), s->gx, s->gtok, m->T * s->mb, m->E);
    }
}

/* softmax_ce_forward in place over m->out, each micro-batch's loss summed
 * over its rows in order (t, b) into its loss sum; returns their total. */
static double split_ce_forward(const Model *m, const int *targets)
{
    const ModelSplit *s = m->split;
    double total = 0;
    for (int j = 0; j < s->n; j++) {
        double sum = 0;
        for (int t = 0; t < m->T; t++)
            for (int b = 0; b < s->mb; b++) {
                size_t row = (size_t)t * m->B + (size_t)j * s->mb + (size_t)b;
                float *l = m->out + row * m->V;
                sum += softmax_ce_forward(l, l, targets + row, 1, m->V);
            }
        s->loss[j] += sum, total += sum;
    }
    return total;
}

static float *layers_backward(Model *m, float *dh)
{
    float *other = dh == m->dA ? m->dB : m->dA;
    const LayerProgress pg = {m->progress, m->hook_ctx};
    for (int l = m->L - 1; l >= 0; l--) {
        Layer *y = &m->layer[l];
        const float *x = site_input(m, l);
        float *dx = (l == 0 && m->source == DATA_ADDING) ? NULL : other;
        float *dwx = m->split ? NULL : y->dwx, *dwh = m->split ? NULL : y->dwh;
        float *db = m->split ? NULL : y->db; /* split: by micro-batch, below */
        if (m->kind == MODEL_LSTM)
            lstm_backward(dx, dwx, dwh, db, dh, m->dgates, m->dc, m->wpack, x, y->h, y->c,
                          y->gates, y->wx, y->wh, m->T, m->B, y->Ein, m->H, &pg);
        else if (m->kind == MODEL_GRU)
            gru_backward(dx, dwx, dwh, db, dh, m->dgates, m->du, m->wpack, x, y->h, y->gates,
                         y->un, y->wx, y->wh, m->T, m->B, y->Ein, m->H, &pg);
        else
            rnn_backward(dx, dwx, dwh, db, dh, m->wpack, x, y->h, y->wx, y->wh, m->T, m->B,
                         y->Ein, m->H, &pg);
        if (m->split) { /* the pre-activation gradients: the RNN's in dh, the others' in dgates */
            const float *da = m->kind == MODEL_RNN ? dh : m->dgates;
            split_layer_grads(m, l, da, m->kind == MODEL_GRU ? m->du : da, x);
        }
        grads_ready(m, y->db + (size_t)m->G * m->H); /* layer l's views end with its bias */
        if (dx && dropping(m)) dropout_backward(m, l, dx);
        other = dh;
        dh = dx;
    }
    return dh;
}

static double markov_forward(Model *m, const int *inputs, const int *targets)
{
    int N = m->T * m->B;
    embedding_forward(m->x0, inputs, m->emb, N, m->E);
    layers_forward(m);
    if (dropping(m)) dropout_forward(m, m->L);
    const float *top = site_input(m, m->L); /* (T*B, H) */
    if (m->adaptive) return adaptive_forward(&m->ada, m->out, top, targets, m->hw, m->hb, N);
    if (m->tied)
        linear_forward_t(m->out, top, m->hw, m->hb, N, m->H, m->V);
    else
        linear_forward(m->out, top, m->hw, m->hb, N, m->H, m->V);
    if (m->split) return split_ce_forward(m, targets);
    return softmax_ce_forward(m->out, m->out, targets, N, m->V);
}

static void markov_backward(Model *m, const int *inputs, const int *targets, float scale)
{
    int N = m->T * m->B;
    const float *top = site_input(m, m->L);
    if (m->adaptive) { /* (not split: repro's probe finds the difference and runs micro-batches one by one) */
        adaptive_backward(&m->ada, m->dA, m->dhw, m->dhb, m->out, top, m->hw, scale, N);
        Adaptive *a = &m->ada; /* the last tail's bias ends the softmax's views */
        grads_ready(m, a->dtb[a->K - 1] + (a->cut[a->K] - a->cut[a->K - 1]));
    } else {
        softmax_ce_backward(m->out, m->out, targets, scale, N, m->V);
        float *dw = m->split ? NULL : m->dhw, *db = m->split ? NULL : m->dhb;
        if (m->tied) /* the embedding's gradient is final only after the embedding's backward */
            linear_backward_t(m->dA, dw, db, m->out, top, m->hw, N, m->H, m->V);
        else
            linear_backward(m->dA, dw, db, m->out, top, m->hw, N, m->H, m->V);
        if (m->split) split_head_grads(m, top, m->T);
        grads_ready(m, m->dhb + m->O);
    }
    if (dropping(m)) dropout_backward(m, m->L, m->dA);
    float *dx0 = layers_backward(m, m->dA);
    if (m->split) split_embedding_grads(m, dx0, inputs);
    else embedding_backward(m->demb, dx0, inputs, N, m->E);
    for (int i = 0; i < N; i++) m->emb_rows[inputs[i]] = 1; /* the rows a sparse sync sends */
    grads_ready(m, m->grads + m->nparams);
}

/* The adding problem's loss over sequences [b0, b0 + nb). */
static double adding_loss(const Model *m, const float *ytarget, int b0, int nb)
{
    double loss = 0;
    for (int b = b0; b < b0 + nb; b++) {
        double d = (double)m->out[b] - (double)ytarget[b];
        loss += d * d;
    }
    return loss;
}

/* Adding problem: regress the target from the top layer's last output,
 * loss (y - target)^2 per sequence. */
static double adding_forward(Model *m, const float *features, const float *ytarget)
{
    int T = m->T, B = m->B, H = m->H;
    memcpy(m->x0, features, (size_t)T * B * 2 * sizeof(float));
    layers_forward(m);
    const float *last = m->layer[m->L - 1].h + (size_t)T * B * H; /* (B, H) */
    linear_forward(m->out, last, m->hw, m->hb, B, H, 1);
    if (!m->split) return adding_loss(m, ytarget, 0, B);
    double total = 0;
    for (int j = 0; j < m->split->n; j++) { /* each micro-batch's sum */
        double sum = adding_loss(m, ytarget, j * m->split->mb, m->split->mb);
        m->split->loss[j] += sum, total += sum;
    }
    return total;
}

static void adding_backward(Model *m, const float *ytarget, float scale)
{
    int T = m->T, B = m->B, H = m->H;
    const float *last = m->layer[m->L - 1].h + (size_t)T * B * H;
    for (int b = 0; b < B; b++)
        m->out[b] = (float)(2.0 * ((double)m->out[b] - (double)ytarget[b])) * scale; /* dL/dy */
    memset(m->dA, 0, (size_t)(T - 1) * B * H * sizeof(float));
    float *dw = m->split ? NULL : m->dhw, *db = m->split ? NULL : m->dhb;
    linear_backward(m->dA + (size_t)(T - 1) * B * H, dw, db, m->out, last, m->hw, B, H, 1);
    if (m->split) split_head_grads(m, last, 1);
    grads_ready(m, m->dhb + m->O);
    layers_backward(m, m->dA);
}

double model_step(Model *m, const int *inputs, const int *targets, const float *features,
                  const float *ytarget, float scale)
{
    model_start_state(m);
    m->training = 1;
    if (m->source != DATA_ADDING) {
        double loss = markov_forward(m, inputs, targets);
        markov_backward(m, inputs, targets, scale);
        return loss;
    }
    double loss = adding_forward(m, features, ytarget);
    adding_backward(m, ytarget, scale);
    return loss;
}

double model_eval(Model *m, const int *inputs, const int *targets, const float *features,
                  const float *ytarget)
{
    model_start_state(m);
    m->training = 0;
    if (m->source != DATA_ADDING) return markov_forward(m, inputs, targets);
    return adding_forward(m, features, ytarget);
}
