/* test_events: the event-kind table of common/events.h and what it drives:
 * names both ways, the scope masks the protocol checks, the config keys
 * (one per EVCFG row, with its default) and cfg_event_action's inherit and
 * minimum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/cfg.h"
#include "common/events.h"
#include "common/log.h"

static void test_names_round_trip(void **state)
{
    (void)state;
    for (int k = 0; k < EV_COUNT; k++) {
        assert_non_null(event_kind_name(k));
        assert_int_equal(event_kind_from_name(event_kind_name(k)), k);
        for (int j = 0; j < k; j++) assert_string_not_equal(event_kind_name(j), event_kind_name(k));
    }
    assert_null(event_kind_name(EV_COUNT));
    assert_null(event_kind_name(-1));
    assert_int_equal(event_kind_from_name("no_such_kind"), -1);
    assert_int_equal(event_kind_from_name(NULL), -1);
    assert_string_equal(event_kind_name(EV_NONFINITE_LOSS), "nonfinite_loss");
    assert_string_equal(event_kind_name(EV_VAL_LOSS_RISE), "val_loss_rise");
    assert_null(event_check_name(CHK_NONE));
    assert_string_equal(event_check_name(CHK_RISE), "rise");
    assert_null(event_check_name(CHK_COUNT));
}

/* Every kind is of exactly one scope; the epoch ones are those the worker checks at an epoch's end. */
static void test_scope_masks(void **state)
{
    (void)state;
    unsigned s = event_mask(EVS_STEP), e = event_mask(EVS_EPOCH);
    assert_int_equal(s & e, 0);
    assert_int_equal(s | e, (1u << EV_COUNT) - 1);
    assert_int_equal(e, (1u << EV_CLIP_INACTIVE) | (1u << EV_VAL_LOSS_RISE));
    assert_int_equal(event_kinds[EV_CLIP_INACTIVE].log_level, LOG_INFO);
    assert_int_equal(event_kinds[EV_LOSS_SPIKE].log_level, LOG_WARN);
    assert_true(event_kinds[EV_NONFINITE_GRAD].tensor_norms);
    assert_false(event_kinds[EV_NONFINITE_LOSS].tensor_norms);
}

static int set(Config *c, const char *arg)
{
    char err[512];
    int rc = cfg_set_arg(c, arg, err, sizeof err);
    if (rc) print_message("%s: %s\n", arg, err);
    return rc;
}

/* The keys the table makes, their defaults, inherit and the minimum action. */
static void test_config_keys(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    assert_int_equal(cfg_event_action(&c, EV_NONFINITE_LOSS), ACT_SKIP);
    assert_int_equal(cfg_event_action(&c, EV_REPLICA_DRIFT), ACT_ABORT);
    assert_int_equal(cfg_event_action(&c, EV_LOSS_SPIKE), ACT_LOG); /* inherit: divergence.action log */
    assert_int_equal(cfg_event_action(&c, EV_CLIP_INACTIVE), ACT_LOG); /* no key */
    assert_int_equal(cfg_event_action(&c, EV_COUNT), ACT_LOG);
    assert_int_equal(set(&c, "divergence.action=rollback"), 0);
    assert_int_equal(cfg_event_action(&c, EV_LOSS_SPIKE), ACT_ROLLBACK);
    assert_int_equal(cfg_event_action(&c, EV_GRAD_NORM_SPIKE), ACT_ROLLBACK);
    assert_int_equal(cfg_event_action(&c, EV_CLIP_INACTIVE), ACT_LOG);
    /* nonfinite_loss and nonfinite_grad share one key; log is raised to their minimum, skip */
    assert_int_equal(set(&c, "divergence.nonfinite.action=log"), 0);
    assert_int_equal(cfg_event_action(&c, EV_NONFINITE_LOSS), ACT_SKIP);
    assert_int_equal(cfg_event_action(&c, EV_NONFINITE_GRAD), ACT_SKIP);
    assert_int_equal(set(&c, "divergence.nonfinite.action=abort"), 0);
    assert_int_equal(cfg_event_action(&c, EV_NONFINITE_GRAD), ACT_ABORT);
    assert_int_not_equal(set(&c, "divergence.clip_inactive.action=log"), 0);
    assert_int_not_equal(set(&c, "divergence.nonfinite_grad.action=log"), 0);
}

/* An epoch-scope kind's key takes no skip or rollback. */
static void test_epoch_key_refuses_skip(void **state)
{
    (void)state;
    Config c;
    char err[512];
    cfg_defaults(&c);
    assert_int_equal(set(&c, "divergence.val_loss_rise.action=rollback"), 0);
    assert_int_not_equal(cfg_validate(&c, err, sizeof err), 0);
    assert_non_null(strstr(err, "divergence.val_loss_rise.action: expected inherit, log or abort"));
    assert_int_equal(set(&c, "divergence.val_loss_rise.action=abort"), 0);
    assert_int_equal(cfg_validate(&c, err, sizeof err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_scope_masks),
        cmocka_unit_test(test_config_keys),
        cmocka_unit_test(test_epoch_key_refuses_skip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
