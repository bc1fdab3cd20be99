/* Unit tests of the coordinator's message decoders (common/proto.c): a
 * record as a worker sends it passes, at any alignment; each field broken in
 * turn is refused with one line naming that field; sizes other than the
 * struct's are refused before a byte is read. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/proto.h"

static ProtoLimits lim = {2, 12, 3, 64};

/* A record as worker 1 sends it at step 5 of epoch 2: clipped, no event. */
static StepRecord good_step(void)
{
    StepRecord r;
    memset(&r, 0, sizeof r);
    r.step = 5, r.seq = 5, r.epoch = 2, r.wrank = 1;
    r.loss = 2.5, r.grad_norm = 0.3, r.clip_coef = 0.5, r.max_abs = 0.1, r.lr = 0.01;
    r.clipped = 1, r.ntensors = 12, r.tokens = 64;
    r.step_ms = 3, r.compute_ms = 2, r.sync_ms = 1;
    r.action = ACT_LOG;
    for (int k = 0; k < 12; k++) r.tensor_norm[k] = 0.1f * (float)k;
    return r;
}

static void expect_step_error(const StepRecord *r, const char *needle)
{
    StepRecord out;
    char err[256] = "";
    assert_int_equal(proto_decode_step(&out, r, sizeof *r, &lim, err, sizeof err), -1);
    if (!strstr(err, needle)) fail_msg("error '%s' does not name '%s'", err, needle);
    assert_null(strchr(err, '\n'));
}

static void test_step_good(void **state)
{
    (void)state;
    StepRecord r = good_step(), out;
    char err[256] = "", buf[sizeof r + 1];
    assert_int_equal(proto_decode_step(&out, &r, sizeof r, &lim, err, sizeof err), 0);
    assert_memory_equal(&out, &r, sizeof r);
    memcpy(buf + 1, &r, sizeof r); /* as MPI may hand it over: any alignment */
    assert_int_equal(proto_decode_step(&out, buf + 1, sizeof r, &lim, err, sizeof err), 0);
    /* the special values a real run sends: a skipped non-finite step, a rollback, an abort */
    r.loss = NAN, r.grad_norm = INFINITY, r.nonfinite = 3, r.skipped = 1, r.clipped = 0;
    r.clip_coef = NAN, r.tensor_norm[3] = NAN, r.action = ACT_SKIP;
    r.events = 1u << EV_NONFINITE_LOSS | 1u << EV_NONFINITE_GRAD;
    assert_int_equal(proto_decode_step(&out, &r, sizeof r, &lim, err, sizeof err), -1); /* no check named */
    printf("an event without its check: %s\n", err);
    assert_non_null(strstr(err, "check"));
    r.check[EV_NONFINITE_LOSS] = r.check[EV_NONFINITE_GRAD] = CHK_NONFINITE;
    assert_int_equal(proto_decode_step(&out, &r, sizeof r, &lim, err, sizeof err), 0);
    r.action = ACT_ROLLBACK, r.rollback_to = 4, r.rollbacks = 1;
    assert_int_equal(proto_decode_step(&out, &r, sizeof r, &lim, err, sizeof err), 0);
    r.action = ACT_ABORT, r.flags = STEP_ABORT, r.rollback_to = 0;
    assert_int_equal(proto_decode_step(&out, &r, sizeof r, &lim, err, sizeof err), 0);
    /* a checkpoint that failed under checkpoint.on_failure: abort (action log) */
    r = good_step();
    r.flags = STEP_ABORT | STEP_CKPT_FAILED;
    assert_int_equal(proto_decode_step(&out, &r, sizeof r, &lim, err, sizeof err), 0);
}

static void test_step_sizes(void **state)
{
    (void)state;
    StepRecord r = good_step(), out;
    char err[256];
    assert_int_equal(proto_decode_step(&out, &r, sizeof r - 1, &lim, err, sizeof err), -1);
    assert_non_null(strstr(err, "bytes, expected"));
    assert_int_equal(proto_decode_step(&out, &r, 0, &lim, err, sizeof err), -1);
    assert_int_equal(proto_decode_step(&out, NULL, 0, &lim, err, sizeof err), -1);
}

/* Each broken field, and the word its error must contain. */
static void test_step_fields(void **state)
{
    (void)state;
    StepRecord r;
#define BREAK(stmt, word) do { r = good_step(); stmt; expect_step_error(&r, word); } while (0)
    BREAK(r.wrank = 2, "wrank");
    BREAK(r.wrank = -1, "wrank");
    BREAK(r.step = 0, "step");
    BREAK(r.seq = -7, "seq");
    BREAK(r.epoch = 4, "epoch");
    BREAK(r.epoch = 0, "epoch");
    BREAK(r.ntensors = 51, "ntensors");
    BREAK(r.ntensors = -1, "ntensors");
    BREAK(r.clipped = 2, "clipped");
    BREAK(r.skipped = -1, "skipped");
    BREAK(r.nonfinite = 4, "nonfinite");
    BREAK(r.tokens = INT64_MAX, "tokens");
    BREAK(r.events = 1u << EV_CLIP_INACTIVE, "events");
    BREAK(r.events = 1u << EV_COUNT, "events");
    BREAK(r.action = ACT_INHERIT, "action");
    BREAK(r.action = 99, "action");
    BREAK(r.flags = 32, "flags");
    BREAK(r.flags = STEP_CHECKPOINT | STEP_CKPT_FAILED, "flags");
    BREAK(r.flags = STEP_ABORT, "abort");
    BREAK(r.action = ACT_ABORT, "abort");
    BREAK(r.rollbacks = -1, "rollbacks");
    BREAK(r.rollback_to = -1, "rollback_to");
    BREAK((r.action = ACT_ROLLBACK, r.rollback_to = 5), "rollback_to");
    BREAK((r.action = ACT_ROLLBACK, r.rollback_to = INT64_MAX), "rollback_to");
    BREAK(r.loss = NAN, "loss");
    BREAK(r.nonfinite = 1, "loss");
    BREAK(r.grad_norm = INFINITY, "grad_norm");
    BREAK(r.loss = -1, "loss");
    BREAK(r.max_abs = -1, "max_abs");
    BREAK(r.clip_coef = NAN, "clip_coef");
    BREAK(r.clip_coef = 1.5, "clip_coef");
    BREAK(r.lr = INFINITY, "lr");
    BREAK(r.lr = -1e-3, "lr");
    BREAK(r.step_ms = NAN, "step_ms");
    BREAK(r.sync_ms = -1, "sync_ms");
    BREAK(r.tensor_norm[11] = -0.5f, "tensor_norm[11]");
#undef BREAK
}

static EpochRecord good_epoch(void)
{
    EpochRecord e;
    memset(&e, 0, sizeof e);
    e.epoch = 3, e.val_loss = 2.1, e.val_tokens = 640, e.lr = 0.01, e.action = ACT_LOG;
    e.step = 45, e.seq = 47;
    return e;
}

static void expect_epoch_error(const EpochRecord *e, const char *needle)
{
    EpochRecord out;
    char err[256] = "";
    assert_int_equal(proto_decode_epoch(&out, e, sizeof *e, &lim, err, sizeof err), -1);
    if (!strstr(err, needle)) fail_msg("error '%s' does not name '%s'", err, needle);
}

static void test_epoch(void **state)
{
    (void)state;
    EpochRecord e = good_epoch(), out;
    char err[256];
    assert_int_equal(proto_decode_epoch(&out, &e, sizeof e, &lim, err, sizeof err), 0);
    e.val_loss = NAN, e.events = 1u << EV_CLIP_INACTIVE | 1u << EV_VAL_LOSS_RISE;
    e.flags = EPOCH_EARLY_STOP | EPOCH_ABORT, e.action = ACT_ABORT;
    e.check[EV_CLIP_INACTIVE] = CHK_EPOCH;
    assert_int_equal(proto_decode_epoch(&out, &e, sizeof e, &lim, err, sizeof err), -1); /* val_loss_rise: no check */
    e.check[EV_VAL_LOSS_RISE] = CHK_COUNT;
    assert_int_equal(proto_decode_epoch(&out, &e, sizeof e, &lim, err, sizeof err), -1); /* out of range */
    e.check[EV_VAL_LOSS_RISE] = CHK_RISE;
    assert_int_equal(proto_decode_epoch(&out, &e, sizeof e, &lim, err, sizeof err), 0);
    assert_int_equal(proto_decode_epoch(&out, &e, sizeof e + 8, &lim, err, sizeof err), -1);
#define BREAK(stmt, word) do { e = good_epoch(); stmt; expect_epoch_error(&e, word); } while (0)
    BREAK(e.epoch = 4, "epoch");
    BREAK(e.flags = 4, "flags");
    BREAK(e.flags = EPOCH_ABORT, "abort");
    BREAK(e.action = ACT_SKIP, "action");
    BREAK(e.events = 1u << EV_LOSS_SPIKE, "events");
    BREAK(e.val_loss = -INFINITY, "val_loss");
    BREAK(e.lr = NAN, "lr");
    BREAK(e.val_tokens = -1, "val_tokens");
    BREAK(e.seq = -1, "seq");
#undef BREAK
}

static void test_done(void **state)
{
    (void)state;
    DoneMsg d = {.status = 0, .wrank = 1, .steps = 30, .param_hash = 0x1234, .error = ""}, out;
    char err[256];
    assert_int_equal(proto_decode_done(&out, &d, sizeof d, &lim, err, sizeof err), 0);
    assert_memory_equal(&out, &d, sizeof d);
    assert_int_equal(proto_decode_done(&out, &d, 4, &lim, err, sizeof err), -1);
    d.status = 2;
    assert_int_equal(proto_decode_done(&out, &d, sizeof d, &lim, err, sizeof err), -1);
    assert_non_null(strstr(err, "status"));
    d.status = 1, d.wrank = 2;
    assert_int_equal(proto_decode_done(&out, &d, sizeof d, &lim, err, sizeof err), -1);
    assert_non_null(strstr(err, "wrank"));
    d.wrank = 0, d.steps = -1;
    assert_int_equal(proto_decode_done(&out, &d, sizeof d, &lim, err, sizeof err), -1);
    assert_non_null(strstr(err, "steps"));
}

/* The limits come from the config: tensors as cfg_tensor_names counts them,
 * tokens of the whole step. */
static void test_limits(void **state)
{
    (void)state;
    Config c;
    ProtoLimits l;
    char names[PROTO_MAX_TENSORS][32];
    cfg_defaults(&c);
    c.train_accumulate = 3;
    proto_limits(&l, &c, 4);
    assert_int_equal(l.W, 4);
    assert_int_equal(l.epochs, c.train_epochs);
    assert_int_equal(l.ntensors, cfg_tensor_names(&c, names, PROTO_MAX_TENSORS));
    assert_true(l.ntensors > 0);
    assert_int_equal(l.step_tokens, (int64_t)c.data_seq_len * c.data_batch_per_worker * 4 * 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_good),  cmocka_unit_test(test_step_sizes),
        cmocka_unit_test(test_step_fields), cmocka_unit_test(test_epoch),
        cmocka_unit_test(test_done),       cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
