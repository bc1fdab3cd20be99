/* repro: micro-batches of fixed shape for sync.reproducible (see repro.h). */
#include "worker/repro.h"

#include <stdlib.h>
#include <string.h>

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
    return 0;
fail:
    repro_free(r);
    return -1;
}

void repro_free(Repro *r)
{
    if (r->n > 1 && r->micro.B) model_free(&r->micro);
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

void repro_run(Repro *r, Model *m, const Batcher *d, float scale, int train)
{
    if (r->n == 1) { /* the model is the micro-batch */
        r->loss[0] += train ? model_step(m, d->inputs, d->targets, d->features, d->ytarget, scale)
                            : model_eval(m, d->inputs, d->targets, d->features, d->ytarget);
        return;
    }
    Model *u = &r->micro;
    u->drop_seed = m->drop_seed, u->drop_step = m->drop_step;
    for (int j = 0; j < r->n; j++) {
        int last = j == r->n - 1;
        model_bind(u, m->params, r->slot[j]);
        u->first_stream = m->first_stream + j * r->mb;
        u->grad_ready = last ? m->grad_ready : NULL;
        u->progress = last ? m->progress : NULL;
        u->hook_ctx = m->hook_ctx;
        slice_batch(r, d, j);
        carry_state(m, u, j, 1);
        const int *in = d->inputs ? r->inputs : NULL, *tg = d->targets ? r->targets : NULL;
        const float *ft = d->features ? r->features : NULL, *yt = d->ytarget ? r->ytarget : NULL;
        r->loss[j] += train ? model_step(u, in, tg, ft, yt, scale) : model_eval(u, in, tg, ft, yt);
        carry_state(m, u, j, 0);
    }
}
