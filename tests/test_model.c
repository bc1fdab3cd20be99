/* Whole-model wiring check: the flat-buffer model's gradient (embedding ->
 * stacked RNN/LSTM -> head -> loss) against central differences of its own
 * loss along a random unit direction inside each tensor. The per-layer
 * kernels are checked in double in test_layers.c; this catches a view, a
 * buffer or a layer wired to the wrong place. Also checks the flat layout:
 * views tile the buffer exactly, head first and embedding last, and every
 * tensor pointer sits at its view with the shape its kernel assumes. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cblas.h>

#include "common/data.h"
#include "common/rng.h"
#include "worker/model.h"

typedef struct {
    Config c;
    Model m;
    Batcher d;
} Fixture;

static double loss_at(Fixture *f, float scale)
{
    model_reset_state(&f->m);
    model_zero_grad(&f->m);
    return model_step(&f->m, f->d.inputs, f->d.targets, f->d.features, f->d.ytarget, scale);
}

static void check_model_p(int kind, int source, int layers, double dropout);
static void check_model(int kind, int source, int layers) { check_model_p(kind, source, layers, 0); }
static int tie_next; /* the next check_model_p ties the head to the embedding (E = H = 6) */
static int adaptive_next; /* the next check_model_p has an adaptive softmax (cutoffs 3,5: V 7 = 3 + 2 + 2) */

/* The layout (cfg_layout, which the model's views copy) against what the
 * kernels assume: each tensor pointer sits at its view with the shape its
 * kernel uses, and the parameter count matches the closed form
 * V*E + sum over layers (Ein + H + 1)*G*H + H*O (untied) + O, plus with the
 * adaptive softmax sum over clusters d_k*(H + n_k) + n_k. */
static void check_wiring(const Model *m)
{
    const int GH = m->G * m->H;
    assert_int_equal(m->G, m->kind == MODEL_LSTM ? 4 : m->kind == MODEL_GRU ? 3 : 1);
    size_t want = (m->emb ? (size_t)m->V * m->E : 0) + (m->tied ? 0 : (size_t)m->H * m->O) + (size_t)m->O;
    for (int l = 0; l < m->L; l++) want += (size_t)(m->layer[l].Ein + m->H + 1) * (size_t)GH;
    const Adaptive *a = &m->ada;
    for (int k = 0; m->adaptive && k < a->K; k++)
        want += (size_t)a->dim[k] * (size_t)(m->H + a->cut[k + 1] - a->cut[k]) + (size_t)(a->cut[k + 1] - a->cut[k]);
    assert_int_equal(m->nparams, want);
    for (int v = 0; v < m->nviews; v++) {
        const ParamView *pv = &m->views[v];
        const float *at = m->params, *dat = m->grads;
        at += pv->off, dat += pv->off;
        int l = -1, rows, cols;
        char part[8] = "";
        if (sscanf(pv->name, "layers.%d.%7s", &l, part) == 2) {
            const Layer *y = &m->layer[l];
            int k = !strcmp(part, "wx") ? 0 : !strcmp(part, "wh") ? 1 : 2;
            const float *p[3] = {y->wx, y->wh, y->b}, *d[3] = {y->dwx, y->dwh, y->db};
            assert_ptr_equal(p[k], at), assert_ptr_equal(d[k], dat);
            rows = k == 0 ? y->Ein : k == 1 ? m->H : GH, cols = k == 2 ? 1 : GH;
        } else if (sscanf(pv->name, "tail.%d.%7s", &l, part) == 2) {
            assert_true(m->adaptive && l < a->K);
            int k = !strcmp(part, "proj") ? 0 : !strcmp(part, "weight") ? 1 : 2, n = a->cut[l + 1] - a->cut[l];
            const float *p[3] = {a->proj[l], a->tw[l], a->tb[l]}, *d[3] = {a->dproj[l], a->dtw[l], a->dtb[l]};
            assert_ptr_equal(p[k], at), assert_ptr_equal(d[k], dat);
            rows = k == 0 ? m->H : k == 1 ? a->dim[l] : n, cols = k == 0 ? a->dim[l] : k == 1 ? n : 1;
        } else if (!strcmp(pv->name, "embed.weight")) {
            assert_ptr_equal(m->emb, at), assert_ptr_equal(m->demb, dat);
            rows = m->V, cols = m->E;
        } else if (!strcmp(pv->name, "head.weight")) {
            assert_ptr_equal(m->hw, at), assert_ptr_equal(m->dhw, dat);
            rows = m->H, cols = m->O;
        } else {
            assert_string_equal(pv->name, "head.bias");
            assert_ptr_equal(m->hb, at), assert_ptr_equal(m->dhb, dat);
            rows = m->O, cols = 1;
        }
        assert_int_equal(pv->rows, rows);
        assert_int_equal(pv->cols, cols);
        assert_int_equal(pv->n, (size_t)rows * (size_t)cols);
    }
}

static void check_model_p(int kind, int source, int layers, double dropout)
{
    Fixture f;
    memset(&f, 0, sizeof f);
    cfg_defaults(&f.c);
    f.c.model_kind = kind, f.c.data_source = source, f.c.model_layers = layers;
    f.c.model_vocab = 7, f.c.model_embed = 5, f.c.model_hidden = 6, f.c.data_seq_len = 5;
    f.c.data_markov_order = 1, f.c.data_markov_branch = 3;
    f.c.model_dropout = dropout;
    if (tie_next) f.c.model_tie_embeddings = 1, f.c.model_embed = f.c.model_hidden;
    tie_next = 0;
    if (adaptive_next) {
        f.c.model_softmax = SOFTMAX_ADAPTIVE, f.c.model_softmax_div = 2;
        snprintf(f.c.model_softmax_cutoffs, sizeof f.c.model_softmax_cutoffs, "3,5");
    }
    adaptive_next = 0;
    assert_int_equal(model_init(&f.m, &f.c, 3), 0);
    f.m.first_stream = 0, f.m.drop_seed = 5, f.m.drop_step = 1; /* the same masks on every call */
    model_init_params(&f.m, 11, 0.5);
    assert_int_equal(batcher_init(&f.d, &f.c, 0, 3), 0);
    batcher_epoch(&f.d, 5);
    batcher_next(&f.d);
    /* views tile [0, nparams) with no gap or overlap, head first */
    size_t off = 0;
    for (int v = 0; v < f.m.nviews; v++) {
        assert_int_equal(f.m.views[v].off, off);
        off += f.m.views[v].n;
    }
    assert_int_equal(off, f.m.nparams);
    assert_string_equal(f.m.views[0].name, f.m.tied ? "head.bias" : "head.weight");
    if (f.m.adaptive) assert_string_equal(f.m.views[2].name, "tail.0.proj"), assert_int_equal(f.m.O, 3 + 2);
    if (f.m.tied) assert_ptr_equal(f.m.hw, f.m.emb), assert_ptr_equal(f.m.dhw, f.m.demb);
    char names[MODEL_MAX_VIEWS][32]; /* the coordinator's copy of the layout */
    assert_int_equal(cfg_tensor_names(&f.c, names, MODEL_MAX_VIEWS), f.m.nviews);
    for (int v = 0; v < f.m.nviews; v++) {
        long shape[2];
        assert_string_equal(names[v], f.m.views[v].name);
        assert_int_equal(cfg_tensor_shape(&f.c, v, shape), f.m.views[v].ndim);
        assert_int_equal(shape[0], f.m.views[v].rows);
        assert_int_equal(shape[1], f.m.views[v].ndim == 2 ? f.m.views[v].cols : 1);
    }
    long none[2];
    assert_int_equal(cfg_tensor_shape(&f.c, f.m.nviews, none), 0);
    check_wiring(&f.m);
    /* the coordinator's memory estimate (which counts the packed weights' buffer wherever it is used) */
    assert_int_equal(cfg_model_floats(&f.c, f.m.B), f.m.nfloats + (f.m.wpack ? 0 : cfg_pack_floats(&f.c)));
    float scale = (float)(1.0 / (double)model_terms(&f.m));
    double base = loss_at(&f, scale) * scale;
    assert_true(isfinite(base));
    float *g = malloc(f.m.nparams * sizeof *g), *p0 = malloc(f.m.nparams * sizeof *p0);
    memcpy(g, f.m.grads, f.m.nparams * sizeof *g);
    memcpy(p0, f.m.params, f.m.nparams * sizeof *p0);
    Rng r;
    rng_init(&r, 99);
    double worst = 0, eps = 1e-2;
    for (int v = 0; v < f.m.nviews; v++) {
        const ParamView *pv = &f.m.views[v];
        double *dir = malloc(pv->n * sizeof *dir), nrm = 0, gd = 0;
        for (size_t i = 0; i < pv->n; i++) dir[i] = rng_uniform(&r) - 0.5, nrm += dir[i] * dir[i];
        for (size_t i = 0; i < pv->n; i++) dir[i] /= sqrt(nrm), gd += dir[i] * g[pv->off + i];
        double fp, fm;
        for (size_t i = 0; i < pv->n; i++) f.m.params[pv->off + i] = (float)(p0[pv->off + i] + eps * dir[i]);
        fp = loss_at(&f, scale) * scale;
        for (size_t i = 0; i < pv->n; i++) f.m.params[pv->off + i] = (float)(p0[pv->off + i] - eps * dir[i]);
        fm = loss_at(&f, scale) * scale;
        memcpy(f.m.params, p0, f.m.nparams * sizeof *p0);
        double fd = (fp - fm) / (2 * eps), err = fabs(fd - gd) / fmax(1e-3, fabs(fd) + fabs(gd));
        if (err > worst) worst = err;
        if (err > 2e-2) printf("  %s: analytic %.6g vs central difference %.6g\n", pv->name, gd, fd);
        free(dir);
    }
    printf("model kind=%d source=%d layers=%d dropout=%.1f tied=%d adaptive=%d: worst directional rel err %.2g "
           "(tol 2e-2)\n", kind, source, layers, dropout, f.m.tied, f.m.adaptive, worst);
    assert_true(worst <= 2e-2);
    free(g), free(p0);
    batcher_free(&f.d);
    model_free(&f.m);
}

static void test_lstm_markov(void **s) { (void)s; check_model(MODEL_LSTM, DATA_MARKOV, 2); }
static void test_rnn_markov(void **s) { (void)s; check_model(MODEL_RNN, DATA_MARKOV, 3); }
static void test_rnn_adding(void **s) { (void)s; check_model(MODEL_RNN, DATA_ADDING, 1); }
static void test_lstm_adding(void **s) { (void)s; check_model(MODEL_LSTM, DATA_ADDING, 2); }
static void test_gru_markov(void **s) { (void)s; check_model(MODEL_GRU, DATA_MARKOV, 2); }
static void test_gru_adding(void **s) { (void)s; check_model(MODEL_GRU, DATA_ADDING, 1); }
static void test_lstm_dropout(void **s) { (void)s; check_model_p(MODEL_LSTM, DATA_MARKOV, 2, 0.3); }
static void test_lstm_tied(void **s) { (void)s; tie_next = 1; check_model_p(MODEL_LSTM, DATA_MARKOV, 2, 0.3); }
static void test_gru_tied(void **s) { (void)s; tie_next = 1; check_model(MODEL_GRU, DATA_MARKOV, 1); }
/* The adaptive softmax in the model: tail views after the head, wired to the
 * gradient (every view is perturbed, tails included), with dropout before it. */
static void test_lstm_adaptive(void **s)
{
    (void)s;
    adaptive_next = 1;
    check_model_p(MODEL_LSTM, DATA_MARKOV, 2, 0.3);
    adaptive_next = 1;
    check_model(MODEL_RNN, DATA_MARKOV, 1);
}

/* Dropout is on in training only, and its masks depend on the global stream,
 * not on which worker holds it: streams 2..3 of a 4-stream batch see the
 * masks a worker holding streams 2..3 sees. */
static void test_dropout_masks(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    c.model_vocab = 7, c.model_embed = 4, c.model_hidden = 5, c.data_seq_len = 3;
    c.data_markov_order = 1, c.data_markov_branch = 2, c.model_dropout = 0.5;
    Model all, part;
    Batcher d;
    assert_int_equal(model_init(&all, &c, 4), 0);
    assert_int_equal(model_init(&part, &c, 2), 0);
    model_init_params(&all, 1, 0.5), model_init_params(&part, 1, 0.5);
    all.drop_seed = part.drop_seed = 9, all.drop_step = part.drop_step = 3;
    all.first_stream = 0, part.first_stream = 2;
    assert_int_equal(batcher_init(&d, &c, 0, 4), 0);
    batcher_epoch(&d, 1), batcher_next(&d);
    int in2[6], tg2[6]; /* streams 2, 3 of the (T, 4) batch */
    for (int t = 0; t < 3; t++)
        for (int b = 0; b < 2; b++) in2[t * 2 + b] = d.inputs[t * 4 + 2 + b], tg2[t * 2 + b] = d.targets[t * 4 + 2 + b];
    model_step(&all, d.inputs, d.targets, NULL, NULL, 1.0f);
    model_step(&part, in2, tg2, NULL, NULL, 1.0f);
    int zeros = 0;
    for (int t = 0; t < 3; t++)
        for (int b = 0; b < 2; b++)
            for (int i = 0; i < 4; i++) {
                float a = all.mask[0][(t * 4 + 2 + b) * 4 + i], p = part.mask[0][(t * 2 + b) * 4 + i];
                assert_true(a == p);
                zeros += a == 0;
            }
    assert_true(zeros > 0 && zeros < 24); /* some dropped, not all */
    model_reset_state(&all);
    double e1 = model_eval(&all, d.inputs, d.targets, NULL, NULL);
    all.drop_step = 4; /* other masks would change a training loss, not an evaluation */
    model_reset_state(&all);
    double e2 = model_eval(&all, d.inputs, d.targets, NULL, NULL);
    assert_true(e1 == e2);
    batcher_free(&d), model_free(&all), model_free(&part);
}

/* The hidden state carries across steps within an epoch and resets between. */
static void test_state_carry(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    c.model_vocab = 7, c.model_embed = 4, c.model_hidden = 5, c.data_seq_len = 3;
    c.data_markov_order = 1, c.data_markov_branch = 2;
    Model m;
    Batcher d;
    assert_int_equal(model_init(&m, &c, 2), 0);
    model_init_params(&m, 1, 0.5);
    assert_int_equal(batcher_init(&d, &c, 0, 2), 0);
    batcher_epoch(&d, 1);
    batcher_next(&d);
    double a = model_step(&m, d.inputs, d.targets, NULL, NULL, 1.0f);
    double b = model_step(&m, d.inputs, d.targets, NULL, NULL, 1.0f); /* same batch, carried state */
    model_reset_state(&m);
    double a2 = model_step(&m, d.inputs, d.targets, NULL, NULL, 1.0f);
    assert_true(a != b);   /* the carried state changed the outcome */
    assert_true(a == a2);  /* reset restores the zero state exactly */
    batcher_free(&d);
    model_free(&m);
}

/* Every sgemm the model issues goes through this wrapper (linked with
 * -Wl,--wrap=cblas_sgemm), which counts 2*M*N*K: model_flops must agree. */
static double sgemm_flops;
void __real_cblas_sgemm(enum CBLAS_ORDER o, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,
                        blasint M, blasint N, blasint K, float alpha, const float *A, blasint lda,
                        const float *B, blasint ldb, float beta, float *C, blasint ldc);
void __wrap_cblas_sgemm(enum CBLAS_ORDER o, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,
                        blasint M, blasint N, blasint K, float alpha, const float *A, blasint lda,
                        const float *B, blasint ldb, float beta, float *C, blasint ldc);
void __wrap_cblas_sgemm(enum CBLAS_ORDER o, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,
                        blasint M, blasint N, blasint K, float alpha, const float *A, blasint lda,
                        const float *B, blasint ldb, float beta, float *C, blasint ldc)
{
    sgemm_flops += 2.0 * M * N * K;
    __real_cblas_sgemm(o, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* The packed recurrent products in a model (worker/rgemm.c): a 2-layer LSTM
 * whose wh (128, 512) is packed on 1 BLAS thread where a kernel runs here.
 * The memory estimate counts the pack buffer exactly (and none when
 * worker.packed_recurrent is off); the loss and every gradient are
 * OpenBLAS's (off) to rounding. */
static void test_packed(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    c.model_kind = MODEL_LSTM, c.model_layers = 2, c.model_vocab = 11, c.model_embed = 8;
    c.model_hidden = 128, c.data_seq_len = 6, c.data_markov_order = 1, c.data_markov_branch = 3;
    openblas_set_num_threads(1);
    Model a, b;
    assert_int_equal(model_init(&a, &c, 5), 0);
    if (!a.wpack) { /* no kernel for this CPU and OpenBLAS */
        model_free(&a);
        skip();
    }
    assert_true(cfg_pack_floats(&c) > 0);
    assert_int_equal(cfg_model_floats(&c, 5), a.nfloats);
    Config off = c;
    off.worker_packed_recurrent = 0;
    assert_int_equal(model_init(&b, &off, 5), 0);
    assert_null(b.wpack);
    assert_int_equal(cfg_pack_floats(&off), 0);
    assert_int_equal(cfg_model_floats(&off, 5), b.nfloats);
    model_init_params(&a, 7, 0.2);
    model_init_params(&b, 7, 0.2);
    Batcher d;
    assert_int_equal(batcher_init(&d, &c, 0, 5), 0);
    batcher_epoch(&d, 1);
    for (int step = 0; step < 2; step++) { /* the second from the carried state */
        batcher_next(&d);
        model_zero_grad(&a), model_zero_grad(&b);
        double la = model_step(&a, d.inputs, d.targets, d.features, d.ytarget, 0.1f);
        double lb = model_step(&b, d.inputs, d.targets, d.features, d.ytarget, 0.1f);
        assert_true(fabs(la - lb) <= 1e-5 * fabs(lb));
        double gmax = 0, err = 0;
        for (size_t i = 0; i < a.nparams; i++) {
            gmax = fmax(gmax, fabs(b.grads[i]));
            err = fmax(err, fabs((double)a.grads[i] - b.grads[i]));
        }
        printf("packed vs OpenBLAS, step %d: loss %.9g vs %.9g; gradients' max abs difference %.2e of max %.2e\n",
               step, la, lb, err, gmax);
        assert_true(gmax > 0 && err <= 1e-4 * gmax);
    }
    batcher_free(&d);
    model_free(&a);
    model_free(&b);
}

static void test_flops(void **state)
{
    (void)state;
    const int kinds[] = {MODEL_RNN, MODEL_LSTM, MODEL_GRU};
    const int sources[] = {DATA_MARKOV, DATA_ADDING};
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < 2; s++)
            for (int L = 1; L <= 3; L += 2) {
                Config c;
                cfg_defaults(&c);
                c.model_kind = kinds[k], c.data_source = sources[s], c.model_layers = L;
                c.model_vocab = 9, c.model_embed = 4, c.model_hidden = 6, c.data_seq_len = 5;
                c.data_markov_order = 1, c.data_markov_branch = 2;
                if (L == 3) { /* adaptive: the tails count the rows of the step */
                    c.model_softmax = SOFTMAX_ADAPTIVE, c.model_softmax_div = 2;
                    snprintf(c.model_softmax_cutoffs, sizeof c.model_softmax_cutoffs, "2,6");
                }
                Model m;
                Batcher d;
                assert_int_equal(model_init(&m, &c, 3), 0);
                model_init_params(&m, 1, 0.5);
                assert_int_equal(batcher_init(&d, &c, 0, 3), 0);
                batcher_epoch(&d, 1);
                batcher_next(&d);
                sgemm_flops = 0;
                model_step(&m, d.inputs, d.targets, d.features, d.ytarget, 1.0f);
                assert_true(sgemm_flops > 0);
                assert_true(model_flops(&m) == sgemm_flops);
                batcher_free(&d);
                model_free(&m);
            }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lstm_markov), cmocka_unit_test(test_rnn_markov),
        cmocka_unit_test(test_rnn_adding),  cmocka_unit_test(test_lstm_adding),
        cmocka_unit_test(test_gru_markov),  cmocka_unit_test(test_gru_adding),
        cmocka_unit_test(test_lstm_dropout),
        cmocka_unit_test(test_lstm_tied),
        cmocka_unit_test(test_gru_tied), cmocka_unit_test(test_lstm_adaptive),
        cmocka_unit_test(test_dropout_masks),
        cmocka_unit_test(test_state_carry), cmocka_unit_test(test_flops),
        cmocka_unit_test(test_packed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
