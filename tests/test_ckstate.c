/* Unit tests of common/ckstate.c: a complete checkpoint written by the real
 * writer passes; each crafted variant of tests/fuzz/fuzz_ckstate.h (one
 * field edited, checksums valid) is refused with one line naming the key or
 * tensor and its bound; the layout must be this config's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/ckstate.h"
#include "tests/fuzz/fuzz_ckstate.h"
#include "tests/testutil.h"

static TmpDir tmp;

static int setup(void **state)
{
    (void)state;
    return tmpdir_make(&tmp, "ckstate");
}

static int teardown(void **state)
{
    (void)state;
    tmpdir_remove(&tmp);
    return 0;
}

/* Variant v checked under c with W workers: 0, or -1 with err. */
static int check_variant(int v, const Config *c, int W, CkState *s, char *err, size_t errlen)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s.safetensors", tmp.dir, fzc_variants[v].name);
    if (fzc_write(path, v, err, errlen) != 0) fail_msg("fzc_write: %s", err);
    Ckpt k;
    if (ckpt_read(&k, path, err, errlen) != 0) fail_msg("ckpt_read (the checksums must be valid): %s", err);
    int rc = ckstate_check(&k, c, W, 0, s, err, errlen);
    ckpt_free(&k);
    return rc;
}

static void test_variants(void **state)
{
    (void)state;
    Config c;
    fzc_config(&c);
    char err[1024];
    CkState s;
    for (int v = 0; v < FZC_NVARIANTS; v++) {
        const char *want = fzc_variants[v].want;
        err[0] = '\0'; /* an accepted variant writes no message */
        int rc = check_variant(v, &c, 1, &s, err, sizeof err);
        printf("%-18s %s\n", fzc_variants[v].name, rc ? err : "accepted");
        if (!want && rc) fail_msg("%s: refused: %s", fzc_variants[v].name, err);
        if (want && !rc) fail_msg("%s: accepted, wanted '%s'", fzc_variants[v].name, want);
        if (want && !strstr(err, want)) fail_msg("%s: '%s' does not say '%s'", fzc_variants[v].name, err, want);
        if (rc) assert_null(strchr(err, '\n'));
    }
    assert_int_equal(check_variant(0, &c, 1, &s, err, sizeof err), 0);
    assert_int_equal(s.step, 14), assert_int_equal(s.epoch, 2), assert_true(s.lr_scale == 0.5);
    assert_true(s.sched[0] == 2.5 && s.sched[1] == 1.0);
}

/* The same file under configs it does not fit. */
static void test_layout(void **state)
{
    (void)state;
    Config c;
    char err[1024];
    CkState s;
    static const struct { const char *set, *want; int W; } cases[] = {
        {"train.optimizer=sgd", "tensor 'opt.m.head.weight' that this config does not use", 1},
        {"train.momentum=0.9", NULL, 1}, /* sgd with momentum: still an extra opt.v */
        {"model.hidden=5", "tensor 'param.head.weight': F32 [4, 16], this config needs F32 [5, 16]", 1},
        {"model.layers=2", "no tensor 'param.layers.1.wx'", 1},
        {"model.kind=gru", "needs F32 [4, 12]", 1},
        {"divergence.window=5", "'detect.state': 52 values, not a detector history of divergence.window 5", 1},
        {"data.batch_per_worker=1", NULL, 2},  /* 2 x 1: the same global batch */
        {"data.batch_per_worker=2", "global batch of 2 streams); this job has 2 x 2", 2},
        {"data.markov_order=1", "Markov context 17 out of range, must be < 16", 1},
        {"train.epochs=1", "__metadata__.epoch 2", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fzc_config(&c);
        if (cfg_set_arg(&c, cases[i].set, err, sizeof err) != CFG_OK) fail_msg("%s: %s", cases[i].set, err);
        if (!strcmp(cases[i].set, "train.momentum=0.9")) c.train_optimizer = OPT_SGD;
        int rc = check_variant(0, &c, cases[i].W, &s, err, sizeof err);
        const char *want = cases[i].want ? cases[i].want : "tensor 'opt.v.head.weight' that this config does not use";
        if (!strcmp(cases[i].set, "data.batch_per_worker=1")) {
            if (rc) fail_msg("%s: %s", cases[i].set, err);
            continue;
        }
        if (!rc || !strstr(err, want)) fail_msg("%s: rc %d '%s', wanted '%s'", cases[i].set, rc, err, want);
    }
    fzc_config(&c); /* clipd --check: W not known, any W of the same global batch */
    assert_int_equal(check_variant(0, &c, 0, &s, err, sizeof err), 0);
    c.data_batch_per_worker = 3;
    assert_int_equal(check_variant(0, &c, 0, &s, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layout, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
