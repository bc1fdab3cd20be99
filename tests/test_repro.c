/* sync.reproducible's micro-batches (worker/repro.c) against an independent
 * reference: every micro-batch of a worker of B streams, run by repro_run
 * (sliced inputs, carried state swapped in and out, dropout keyed by the
 * global stream), gives bit for bit the gradient, loss and carried state of a
 * separate model of batch mb fed only those streams by its own batcher.
 * Also measures whether this OpenBLAS's sgemm rows depend on the number of
 * rows (printed; the design does not rely on it: shapes are fixed). */
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
#include "worker/model.h"
#include "worker/repro.h"

enum { B = 4, MB = 2, NM = B / MB, STEPS = 3 };

static void check_repro(int kind, int source, double dropout)
{
    Config c;
    cfg_defaults(&c);
    c.model_kind = kind, c.data_source = source, c.model_layers = 2;
    c.model_vocab = 7, c.model_embed = 5, c.model_hidden = 6, c.data_seq_len = 5;
    c.data_markov_order = 1, c.data_markov_branch = 3, c.model_dropout = dropout;
    c.data_micro_batch = MB, c.sync_reproducible = 1;
    Model m, ref[NM];
    Batcher d, rd[NM];
    Repro r;
    assert_int_equal(model_init(&m, &c, B), 0);
    model_init_params(&m, 11, 0.5);
    m.first_stream = 8, m.drop_seed = 5; /* this worker owns streams 8..11 */
    assert_int_equal(batcher_init(&d, &c, 8, B), 0);
    batcher_epoch(&d, 3);
    assert_int_equal(repro_init(&r, &m, &c), 0);
    assert_int_equal(r.n, NM);
    for (int j = 0; j < NM; j++) {
        assert_int_equal(model_init(&ref[j], &c, MB), 0);
        memcpy(ref[j].params, m.params, m.nparams * sizeof(float));
        ref[j].first_stream = 8 + j * MB, ref[j].drop_seed = 5;
        assert_int_equal(batcher_init(&rd[j], &c, 8 + j * MB, MB), 0);
        batcher_epoch(&rd[j], 3);
    }
    size_t bad = 0;
    for (int s = 1; s <= STEPS; s++) {
        batcher_next(&d);
        m.drop_step = s;
        repro_zero(&r, &m);
        repro_run(&r, &m, &d, 0.01f, 1);
        for (int j = 0; j < NM; j++) {
            batcher_next(&rd[j]);
            ref[j].drop_step = s;
            model_zero_grad(&ref[j]);
            double loss = model_step(&ref[j], rd[j].inputs, rd[j].targets, rd[j].features,
                                     rd[j].ytarget, 0.01f);
            if (loss != r.loss[j]) bad++;
            if (memcmp(ref[j].grads, r.slot[j], m.nparams * sizeof(float))) bad++;
            for (int l = 0; l < m.L; l++) { /* the carried state of its streams in m's */
                size_t per = (size_t)MB * m.H, at = (size_t)m.T * B * m.H + (size_t)j * per;
                if (memcmp(ref[j].layer[l].h + (size_t)m.T * per, m.layer[l].h + at, per * sizeof(float)))
                    bad++;
            }
        }
    }
    printf("repro kind %d source %d dropout %.1f: %d steps x %d micro-batches, %zu differences "
           "from separate models (tol 0)\n", kind, source, dropout, STEPS, NM, bad);
    assert_int_equal(bad, 0);
    for (int j = 0; j < NM; j++) model_free(&ref[j]), batcher_free(&rd[j]);
    repro_free(&r), batcher_free(&d), model_free(&m);
}

static void test_lstm(void **s) { (void)s; check_repro(MODEL_LSTM, DATA_MARKOV, 0); }
static void test_gru_dropout(void **s) { (void)s; check_repro(MODEL_GRU, DATA_MARKOV, 0.3); }
static void test_rnn_adding(void **s) { (void)s; check_repro(MODEL_RNN, DATA_ADDING, 0); }

/* One micro-batch (mb == B): the worker's own model and gradient are the slot. */
static void test_one_micro_batch(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    c.model_hidden = 6, c.data_seq_len = 4, c.sync_reproducible = 1, c.data_micro_batch = 0;
    Model m;
    Repro r;
    assert_int_equal(model_init(&m, &c, 3), 0);
    assert_int_equal(repro_init(&r, &m, &c), 0);
    assert_int_equal(r.n, 1);
    assert_ptr_equal(r.slot[0], m.grads);
    repro_free(&r), model_free(&m);
}

/* Measured, not asserted: does row i of A*B depend on how many rows A has? */
static void test_sgemm_rows(void **state)
{
    (void)state;
    enum { M = 64, K = 200, N = 512, ROW = 37 };
    float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * K * N);
    float *c1 = malloc(sizeof(float) * M * N), *c2 = malloc(sizeof(float) * N);
    assert_non_null(a), assert_non_null(b), assert_non_null(c1), assert_non_null(c2);
    for (int i = 0; i < M * K; i++) a[i] = sinf((float)i * 0.37f);
    for (int i = 0; i < K * N; i++) b[i] = cosf((float)i * 0.11f);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, a, K, b, N, 0, c1, N);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 1, N, K, 1, a + ROW * K, K, b, N, 0, c2, N);
    int differ = 0;
    for (int j = 0; j < N; j++) differ += c1[ROW * N + j] != c2[j];
    printf("OpenBLAS sgemm: row %d of a %dx%d product vs the same row alone: %d of %d values "
           "differ (%s)\n", ROW, M, K, differ, N,
           differ ? "rows depend on the batch size: fixed micro-batch shapes are needed"
                  : "rows do not depend on it here");
    free(a), free(b), free(c1), free(c2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lstm),
        cmocka_unit_test(test_gru_dropout),
        cmocka_unit_test(test_rnn_adding),
        cmocka_unit_test(test_one_micro_batch),
        cmocka_unit_test(test_sgemm_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
