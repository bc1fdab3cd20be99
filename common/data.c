/* data: built-in sources (seeded Markov chain, adding problem), real text
 * through common/text.c, and the per-worker stream batcher. See data.h for
 * the layout contract. */
#include "common/data.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int markov_init(Markov *m, int V, int order, int branch, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    m->V = V, m->order = order, m->branch = branch;
    uint64_t nctx = 1;
    for (int i = 0; i < order; i++) nctx *= (uint64_t)V;
    if (branch < 1 || branch > V || nctx > (1u << 24)) return -1;
    m->nctx = (uint32_t)nctx;
    m->succ = malloc(nctx * (size_t)branch * sizeof *m->succ);
    m->cum = malloc(nctx * (size_t)branch * sizeof *m->cum);
    m->row_entropy = malloc(nctx * sizeof *m->row_entropy);
    int *perm = malloc((size_t)V * sizeof *perm);
    double *w = malloc((size_t)branch * sizeof *w); /* (branch) row weights */
    if (!m->succ || !m->cum || !m->row_entropy || !perm || !w) {
        free(perm), free(w);
        markov_free(m);
        return -1;
    }
    Rng r;
    rng_init(&r, seed);
    for (uint32_t c = 0; c < m->nctx; c++) {
        /* distinct successors: a partial Fisher-Yates shuffle */
        for (int i = 0; i < V; i++) perm[i] = i;
        double total = 0;
        for (int j = 0; j < branch; j++) {
            int k = j + (int)rng_below(&r, (uint32_t)(V - j));
            int t = perm[j]; perm[j] = perm[k]; perm[k] = t;
            m->succ[(size_t)c * branch + j] = perm[j];
            w[j] = -log(1.0 - rng_uniform(&r)); /* Dirichlet(1) weights */
            total += w[j];
        }
        double acc = 0, h = 0;
        for (int j = 0; j < branch; j++) {
            double p = w[j] / total;
            acc += p;
            m->cum[(size_t)c * branch + j] = acc;
            if (p > 0) h -= p * log(p);
        }
        m->cum[(size_t)c * branch + branch - 1] = 1.0;
        m->row_entropy[c] = h;
    }
    free(perm), free(w);
    return 0;
}

void markov_free(Markov *m)
{
    free(m->succ);
    free(m->cum);
    free(m->row_entropy);
    m->succ = NULL, m->cum = NULL, m->row_entropy = NULL;
}

double markov_entropy_rate(const Markov *m, long n)
{
    size_t nc = m->nctx;
    double *p = malloc(nc * sizeof *p), *q = malloc(nc * sizeof *q);
    if (!p || !q) {
        free(p), free(q);
        return NAN;
    }
    for (size_t c = 0; c < nc; c++) p[c] = 1.0 / (double)nc;
    double sum = 0;
    for (long i = 0; i < n; i++) {
        double h = 0;
        for (size_t c = 0; c < nc; c++) h += p[c] * m->row_entropy[c];
        sum += h;
        memset(q, 0, nc * sizeof *q);
        for (size_t c = 0; c < nc; c++) {
            if (p[c] == 0) continue;
            double prev = 0;
            for (int j = 0; j < m->branch; j++) {
                double pj = m->cum[c * m->branch + j] - prev;
                prev = m->cum[c * m->branch + j];
                size_t next = (c * (size_t)m->V + (size_t)m->succ[c * m->branch + j]) % nc;
                q[next] += p[c] * pj;
            }
        }
        double *t = p, change = 0;
        p = q; q = t;
        for (size_t c = 0; c < nc; c++) change += fabs(p[c] - q[c]);
        if (change < 1e-13) { /* stationary: the remaining positions add the same h */
            double hs = 0;
            for (size_t c = 0; c < nc; c++) hs += p[c] * m->row_entropy[c];
            sum += hs * (double)(n - 1 - i);
            break;
        }
    }
    free(p), free(q);
    return sum / (double)n;
}

int markov_next(const Markov *m, uint32_t *ctx, Rng *r)
{
    double u = rng_uniform(r);
    const double *cum = m->cum + (size_t)*ctx * m->branch;
    int j = 0;
    while (j < m->branch - 1 && u >= cum[j]) j++;
    int s = m->succ[(size_t)*ctx * m->branch + j];
    *ctx = (uint32_t)(((uint64_t)*ctx * (uint64_t)m->V + (uint64_t)s) % m->nctx);
    return s;
}

uint64_t data_chain_seed(const Config *c) { return rng_derive((uint64_t)c->run_seed, 0xC4A1u, 0); }

uint64_t data_epoch_seed(const Config *c, int epoch)
{
    return rng_derive((uint64_t)c->run_seed, 0xE90Cu, (uint64_t)epoch);
}

/* Text: map the split and check the layout fits it. */
static int text_init(Batcher *bt, const Config *c, int W, int split)
{
    uint64_t S = (uint64_t)W * (uint64_t)bt->B;
    if (W < 1 || bt->first_stream < 0 || (uint64_t)bt->first_stream + (uint64_t)bt->B > S) {
        snprintf(bt->err, sizeof bt->err, "data: streams [%d, %d) are not among the %" PRIu64
                 " streams of %d workers", bt->first_stream, bt->first_stream + bt->B, S, W);
        return -1;
    }
    if (text_open(&bt->text, c, split, bt->err, sizeof bt->err) != 0) return -1;
    bt->stream_len = text_stream_len(bt->text.n, S);
    if (bt->stream_len < (uint64_t)bt->T) {
        snprintf(bt->err, sizeof bt->err, "data: the %s split has %zu tokens, %" PRIu64 " per stream "
                 "for %" PRIu64 " streams, fewer than data.seq_len %d (did the data change since "
                 "the coordinator checked it?)", split == TEXT_VALID ? "valid" : "train",
                 bt->text.n, bt->stream_len, S, bt->T);
        return -1;
    }
    bt->pos = calloc((size_t)bt->B, sizeof *bt->pos);
    if (!bt->pos) {
        snprintf(bt->err, sizeof bt->err, "out of memory allocating data");
        return -1;
    }
    return 0;
}

int batcher_init(Batcher *bt, const Config *c, int first_stream, int B)
{
    if (c->data_source == DATA_TEXT) {
        memset(bt, 0, sizeof *bt);
        snprintf(bt->err, sizeof bt->err, "data: text needs batcher_init_split (the worker count)");
        return -1;
    }
    return batcher_init_split(bt, c, first_stream, B, 1, TEXT_TRAIN);
}

int batcher_init_split(Batcher *bt, const Config *c, int first_stream, int B, int W, int split)
{
    memset(bt, 0, sizeof *bt);
    bt->source = c->data_source, bt->T = c->data_seq_len, bt->B = B;
    bt->first_stream = first_stream;
    size_t TB = (size_t)bt->T * (size_t)B;
    snprintf(bt->err, sizeof bt->err, "out of memory allocating data");
    bt->rng = calloc((size_t)B, sizeof *bt->rng);
    bt->ctx = calloc((size_t)B, sizeof *bt->ctx);
    bt->last = calloc((size_t)B, sizeof *bt->last);
    if (!bt->rng || !bt->ctx || !bt->last) goto fail;
    if (bt->source == DATA_TEXT) {
        bt->inputs = calloc(TB, sizeof *bt->inputs);
        bt->targets = calloc(TB, sizeof *bt->targets);
        if (!bt->inputs || !bt->targets || text_init(bt, c, W, split) != 0) goto fail;
    } else if (bt->source == DATA_MARKOV) {
        if (markov_init(&bt->chain, c->model_vocab, c->data_markov_order, c->data_markov_branch,
                        data_chain_seed(c)) != 0)
            goto fail;
        bt->inputs = calloc(TB, sizeof *bt->inputs);
        bt->targets = calloc(TB, sizeof *bt->targets);
        if (!bt->inputs || !bt->targets) goto fail;
    } else {
        bt->features = calloc(TB * 2, sizeof *bt->features);
        bt->ytarget = calloc((size_t)B, sizeof *bt->ytarget);
        if (!bt->features || !bt->ytarget) goto fail;
    }
    bt->err[0] = 0;
    return 0;
fail:;
    char why[sizeof bt->err];
    memcpy(why, bt->err, sizeof why);
    batcher_free(bt);
    memcpy(bt->err, why, sizeof why);
    return -1;
}

void batcher_free(Batcher *bt)
{
    markov_free(&bt->chain);
    text_close(&bt->text);
    free(bt->rng), free(bt->ctx), free(bt->last), free(bt->pos);
    free(bt->inputs), free(bt->targets), free(bt->features), free(bt->ytarget);
    memset(bt, 0, sizeof *bt);
}

void batcher_epoch(Batcher *bt, uint64_t epoch_seed)
{
    if (bt->source == DATA_TEXT) {
        memset(bt->pos, 0, (size_t)bt->B * sizeof *bt->pos);
        return;
    }
    for (int b = 0; b < bt->B; b++) {
        uint64_t j = (uint64_t)(bt->first_stream + b);
        rng_init(&bt->rng[b], rng_derive(epoch_seed, j, 0x5354u));
        if (bt->source != DATA_MARKOV) continue;
        bt->ctx[b] = (uint32_t)(rng_next(&bt->rng[b]) % bt->chain.nctx);
        bt->last[b] = markov_next(&bt->chain, &bt->ctx[b], &bt->rng[b]);
    }
}

/* Adding problem: values U(0,1); one marker in the first half, one in the
 * second; the target is the sum of the two marked values. */
static void adding_next(Batcher *bt)
{
    int T = bt->T, B = bt->B, half = T / 2;
    for (int b = 0; b < B; b++) {
        Rng *r = &bt->rng[b];
        int m1 = (int)rng_below(r, (uint32_t)half);
        int m2 = half + (int)rng_below(r, (uint32_t)(T - half));
        double sum = 0;
        for (int t = 0; t < T; t++) {
            float *f = bt->features + ((size_t)t * B + b) * 2;
            f[0] = (float)rng_uniform(r);
            f[1] = (t == m1 || t == m2) ? 1.0f : 0.0f;
            if (f[1] != 0.0f) sum += f[0];
        }
        bt->ytarget[b] = (float)sum;
    }
}

void batcher_shift(Batcher *bt, uint64_t epoch_seed)
{
    if (bt->source != DATA_TEXT) return;
    bt->shift = epoch_seed && bt->text.n ? rng_derive(epoch_seed, 0x5A1F7u, 0) % bt->text.n : 0;
}

/* Text: T more tokens of each stream; stream j starts at token shift + j*L,
 * the split read as a ring of N tokens (shift 0: never wraps). */
static void text_next(Batcher *bt)
{
    int T = bt->T, B = bt->B;
    uint64_t L = bt->stream_len, N = bt->text.n;
    for (int b = 0; b < B; b++) {
        if (bt->pos[b] + (uint64_t)T > L) bt->pos[b] = 0; /* only after skipped batches */
        size_t at = (size_t)((bt->shift + (uint64_t)(bt->first_stream + b) * L + bt->pos[b]) % N);
        int cur = text_token(&bt->text, at);
        for (int t = 0; t < T; t++) {
            size_t i = at + (size_t)t + 1;
            int next = text_token(&bt->text, i < N ? i : i - N);
            bt->inputs[(size_t)t * B + b] = cur;
            bt->targets[(size_t)t * B + b] = next;
            cur = next;
        }
        bt->last[b] = cur;
        bt->pos[b] += (uint64_t)T;
    }
}

void batcher_next(Batcher *bt)
{
    if (bt->source == DATA_TEXT) {
        text_next(bt);
        return;
    }
    if (bt->source != DATA_MARKOV) {
        adding_next(bt);
        return;
    }
    int T = bt->T, B = bt->B;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            int next = markov_next(&bt->chain, &bt->ctx[b], &bt->rng[b]);
            bt->inputs[(size_t)t * B + b] = bt->last[b];
            bt->targets[(size_t)t * B + b] = next;
            bt->last[b] = next;
        }
    }
}
