/* repro: micro-batches of fixed shape for sync.reproducible (see repro.h). */
#include "worker/repro.h"

#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

static void split_free(Repro *r)
{
    ModelSplit *s = &r->split;
    free(s->ga), free(s->gu), free(s->gx), free(s->gh), free(s->gtok);
    memset(s, 0, sizeof *s);
}

/* The stacked path's gather buffers: T*mb rows as wide as any of the model's. */
static int split_alloc(Repro *r, const Model *m)
{
    ModelSplit *s = &r->split;
    size_t rows = (size_t)m->T * (size_t)r->mb, GH = (size_t)m->G * (size_t)m->H;
    size_t wa = GH > (size_t)m->O ? GH : (size_t)m->O, wx = (size_t)m->H;
    if ((size_t)m->E > wx) wx = (size_t)m->E;
    if ((size_t)m->Ein0 > wx) wx = (size_t)m->Ein0;
    s->mb = r->mb, s->n = r->n, s->slot = r->slot, s->loss = r->loss;
    s->ga = malloc(rows * wa * sizeof(float));
    s->gu = m->kind == MODEL_GRU ? malloc(rows * GH * sizeof(float)) : NULL;
    s->gx = malloc(rows * wx * sizeof(float));
    s->gh = malloc(rows * (size_t)m->H * sizeof(float));
    s->gtok = malloc(rows * sizeof(int));
    return s->ga && s->gx && s->gh && s->gtok && (s->gu || m->kind != MODEL_GRU) ? 0 : -1;
}

static size_t repro_probe(Repro *r, Model *m, uint64_t seed);

int repro_init(Repro *r, Model *m, const Config *c)
{
    memset(r, 0, sizeof *r);
    int B = m->B, T = m->T;
    r->mb = c->data_micro_batch > 0 ? c->data_micro_batch : B;
    if (B % r->mb) return -1; /* cfg_validate refuses it */
    r->n = B / r->mb;
    r->slot = calloc((size_t)r->n, sizeof *r->slot);
    r->loss = calloc((size_t)r->n, sizeof *r->loss);
    if (!r->slot || !r->loss) goto fail;
    if (r->n == 1) {
        r->slot[0] = m->grads;
        return 0;
    }
    size_t mbT = (size_t)r->mb * (size_t)T;
    r->slots = calloc((size_t)r->n * m->nparams, sizeof(float));
    r->inputs = calloc(mbT, sizeof(int));
    r->targets = calloc(mbT, sizeof(int));
    r->features = calloc(2 * mbT, sizeof(float));
    r->ytarget = calloc((size_t)r->mb, sizeof(float));
    if (!r->slots || !r->inputs || !r->targets || !r->features || !r->ytarget) goto fail;
    for (int j = 0; j < r->n; j++) r->slot[j] = r->slots + (size_t)j * m->nparams;
    if (model_init(&r->micro, c, r->mb) != 0) goto fail;
    model_bind(&r->micro, m->params, r->slot[0]);
    if (split_alloc(r, m) != 0) goto fail;
    r->model = m;
    r->differ = repro_probe(r, m, rng_derive((uint64_t)c->run_seed, 0x9B0Eu, 0));
    if (r->differ == (size_t)-1) goto fail;
    r->stacked = r->differ == 0;
    if (r->stacked) {
        model_free(&r->micro); /* borrowed buffers stay */
        m->split = &r->split;
    } else {
        split_free(r);
    }
    return 0;
fail:
    repro_free(r);
    return -1;
}

void repro_free(Repro *r)
{
    if (r->model) r->model->split = NULL;
    if (r->n > 1 && r->micro.B) model_free(&r->micro);
    split_free(r);
    free(r->slot), free(r->slots), free(r->loss);
    free(r->inputs), free(r->targets), free(r->features), free(r->ytarget);
    memset(r, 0, sizeof *r);
}

void repro_zero(Repro *r, const Model *m)
{
    for (int j = 0; j < r->n; j++) memset(r->slot[j], 0, m->nparams * sizeof(float));
    repro_clear(r);
}

void repro_clear(Repro *r) { memset(r->loss, 0, (size_t)r->n * sizeof *r->loss); }

/* Micro-batch j's carried state in and out of m's (B streams, h[T] and c[T]). */
static void carry_state(Model *m, Model *u, int j, int in)
{
    size_t per = (size_t)u->B * (size_t)m->H, at = (size_t)j * per;
    for (int l = 0; l < m->L; l++) {
        float *big[2] = {m->layer[l].h, m->layer[l].c}, *small[2] = {u->layer[l].h, u->layer[l].c};
        for (int k = 0; k < 2; k++) {
            if (!big[k]) continue;
            float *a = big[k] + (size_t)m->T * m->B * m->H + at, *b = small[k] + (size_t)m->T * per;
            if (in) memcpy(b, a, per * sizeof(float));
            else memcpy(a, b, per * sizeof(float));
        }
    }
}

/* Micro-batch j's streams of the batch in d, time-major (T, mb). */
static void slice_batch(Repro *r, const Batcher *d, int j)
{
    int mb = r->mb, B = d->B, s0 = j * mb;
    for (int t = 0; t < d->T; t++)
        for (int b = 0; b < mb; b++) {
            size_t to = (size_t)t * mb + b, from = (size_t)t * B + s0 + b;
            if (d->inputs) r->inputs[to] = d->inputs[from];
            if (d->targets) r->targets[to] = d->targets[from];
            if (d->features) r->features[2 * to] = d->features[2 * from],
                             r->features[2 * to + 1] = d->features[2 * from + 1];
        }
    for (int b = 0; d->ytarget && b < mb; b++) r->ytarget[b] = d->ytarget[s0 + b];
}

/* Micro-batch j of the batch in d through the micro-batch model alone, with
 * its streams' carried state in m, its gradient added into g; its loss sum. */
static double run_one(Repro *r, Model *m, const Batcher *d, int j, float *g, float scale, int train)
{
    Model *u = &r->micro;
    int last = j == r->n - 1;
    u->drop_seed = m->drop_seed, u->drop_step = m->drop_step;
    model_bind(u, m->params, g);
    u->first_stream = m->first_stream + j * r->mb;
    u->grad_ready = last ? m->grad_ready : NULL;
    u->progress = last ? m->progress : NULL;
    u->hook_ctx = m->hook_ctx;
    slice_batch(r, d, j);
    carry_state(m, u, j, 1);
    const int *in = d->inputs ? r->inputs : NULL, *tg = d->targets ? r->targets : NULL;
    const float *ft = d->features ? r->features : NULL, *yt = d->ytarget ? r->ytarget : NULL;
    double loss = train ? model_step(u, in, tg, ft, yt, scale) : model_eval(u, in, tg, ft, yt);
    carry_state(m, u, j, 0);
    return loss;
}

void repro_run(Repro *r, Model *m, const Batcher *d, float scale, int train)
{
    if (r->n == 1 || r->stacked) { /* the model is the micro-batch, or stacks them (m->split) */
        double loss = train ? model_step(m, d->inputs, d->targets, d->features, d->ytarget, scale)
                            : model_eval(m, d->inputs, d->targets, d->features, d->ytarget);
        if (r->n == 1) r->loss[0] += loss;
        return;
    }
    for (int j = 0; j < r->n; j++) r->loss[j] += run_one(r, m, d, j, r->slot[j], scale, train);
}

/* The carried state h[T], c[T] of every layer into (save 1) or out of buf. */
static void keep_state(Model *m, float *buf, int save)
{
    size_t n = (size_t)m->B * (size_t)m->H, last = (size_t)m->T * n;
    for (int l = 0; l < m->L; l++) {
        float *p[2] = {m->layer[l].h + last, m->layer[l].c ? m->layer[l].c + last : NULL};
        for (int k = 0; k < 2; k++, buf += n) {
            if (!p[k]) continue;
            if (save) memcpy(buf, p[k], n * sizeof(float));
            else memcpy(p[k], buf, n * sizeof(float));
        }
    }
}

/* x (n) = random values in [-0.5, 0.5) (x NULL: none). */
static void fill(float *x, size_t n, Rng *g)
{
    for (size_t i = 0; x && i < n; i++) x[i] = (float)(rng_uniform(g) - 0.5);
}

/* Count the 32-bit words of a (n) and b (n) that differ. */
static size_t words_differ(const void *a, const void *b, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp((const float *)a + i, (const float *)b + i, 4) != 0;
    return bad;
}

/* The stacked path against the one-by-one path on random parameters, carried
 * state and batch, so on every matrix product the model issues with its own
 * shapes and buffers: how many of the n gradients' values and loss sums
 * differ in any bit (0: stacking is exact here); (size_t)-1 without memory.
 * m's parameters and carried state are put back; the slots are zeroed. */
static size_t repro_probe(Repro *r, Model *m, uint64_t seed)
{
    size_t np = m->nparams, TB = (size_t)m->T * (size_t)m->B, nst = 2 * (size_t)m->L * m->B * m->H;
    int tokens = m->source != DATA_ADDING;
    Batcher d;
    memset(&d, 0, sizeof d);
    d.source = m->source, d.T = m->T, d.B = m->B, d.first_stream = m->first_stream;
    float *keep = malloc(np * sizeof(float)), *g = malloc(np * sizeof(float));
    float *st = malloc(nst * sizeof(float)), *st0 = malloc(nst * sizeof(float));
    d.inputs = tokens ? malloc(TB * sizeof(int)) : NULL;
    d.targets = tokens ? malloc(TB * sizeof(int)) : NULL;
    d.features = tokens ? NULL : malloc(2 * TB * sizeof(float));
    d.ytarget = tokens ? NULL : malloc((size_t)m->B * sizeof(float));
    size_t bad = (size_t)-1;
    if (!keep || !g || !st || !st0 || (tokens ? !d.inputs || !d.targets : !d.features || !d.ytarget))
        goto out;
    Rng rng;
    rng_init(&rng, seed);
    for (size_t i = 0; tokens && i < TB; i++)
        d.inputs[i] = (int)rng_below(&rng, (uint32_t)m->V), d.targets[i] = (int)rng_below(&rng, (uint32_t)m->V);
    fill(d.features, tokens ? 0 : 2 * TB, &rng), fill(d.ytarget, tokens ? 0 : (size_t)m->B, &rng);
    keep_state(m, st0, 1);
    memcpy(keep, m->params, np * sizeof(float));
    fill(m->params, np, &rng), fill(st, nst, &rng);
    keep_state(m, st, 0);
    float scale = 1.0f / (float)TB;
    /* stacked: every slot at once */
    const ModelSplit *was = m->split;
    m->split = &r->split;
    repro_zero(r, m);
    model_step(m, d.inputs, d.targets, d.features, d.ytarget, scale);
    m->split = NULL;
    /* one by one, from the same carried state */
    keep_state(m, st, 0);
    bad = 0;
    for (int j = 0; j < r->n; j++) {
        memset(g, 0, np * sizeof(float));
        double loss = run_one(r, m, &d, j, g, scale, 1);
        bad += words_differ(g, r->slot[j], np) + (memcmp(&loss, &r->loss[j], sizeof loss) != 0);
    }
    m->split = was;
    memcpy(m->params, keep, np * sizeof(float));
    keep_state(m, st0, 0);
    repro_zero(r, m);
out:
    free(keep), free(g), free(st), free(st0);
    free(d.inputs), free(d.targets), free(d.features), free(d.ytarget);
    return bad;
}
