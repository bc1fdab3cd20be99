/* test_cfg: the config table, the strict YAML loader, --set overrides,
 * cross-field validation, printing (round trip) and hashing. Every error case
 * asserts the exact line:col and the key named in the message. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/cfg.h"
#include "tests/testutil.h"

/* ---- helpers ---- */

static int load(Config *c, const char *yaml, char *err, size_t errlen)
{
    return cfg_load_string(c, yaml, strlen(yaml), "t.yaml", err, errlen);
}

static void assert_one_line(const char *err)
{
    if (strchr(err, '\n')) fail_msg("message spans lines: '%s'", err);
    if (err[0] == '\0') fail_msg("empty message");
}

static void assert_has(const char *err, const char *const *want)
{
    for (; *want; want++)
        if (!strstr(err, *want)) fail_msg("'%s' not in message '%s'", *want, err);
}

/* yaml must fail, leave the config untouched, and say every string in want. */
static void load_err_(const char *yaml, const char *const *want)
{
    Config c, before;
    char err[512];
    cfg_defaults(&c);
    before = c;
    int rc = load(&c, yaml, err, sizeof err);
    if (rc != CFG_ERR) fail_msg("accepted: %s", yaml);
    if (memcmp(&c, &before, sizeof c) != 0) fail_msg("config changed by a failed load: %s", yaml);
    assert_one_line(err);
    assert_has(err, want);
}
#define LOAD_ERR(yaml, ...) load_err_((yaml), (const char *const[]){__VA_ARGS__, NULL})

static void set_err_(const char *arg, const char *const *want)
{
    Config c, before;
    char err[512];
    cfg_defaults(&c);
    before = c;
    if (cfg_set_arg(&c, arg, err, sizeof err) != CFG_ERR) fail_msg("accepted --set %s", arg);
    if (memcmp(&c, &before, sizeof c) != 0) fail_msg("config changed by a failed --set %s", arg);
    assert_one_line(err);
    assert_has(err, want);
}
#define SET_ERR(arg, ...) set_err_((arg), (const char *const[]){__VA_ARGS__, NULL})

static void set_ok(Config *c, const char *arg)
{
    char err[512];
    if (cfg_set_arg(c, arg, err, sizeof err) != CFG_OK) fail_msg("--set %s: %s", arg, err);
    assert_string_equal(err, "");
}

/* c must fail cfg_validate with every string in want. */
static void validate_err_(const Config *c, const char *const *want)
{
    char err[512];
    if (cfg_validate(c, err, sizeof err) != CFG_ERR) fail_msg("validate accepted the config");
    assert_one_line(err);
    assert_has(err, want);
}
#define VALIDATE_ERR(c, ...) validate_err_((c), (const char *const[]){__VA_ARGS__, NULL})

static void validate_ok(const Config *c)
{
    char err[512];
    if (cfg_validate(c, err, sizeof err) != CFG_OK) fail_msg("validate: %s", err);
}

#define EQ_I(f) \
    if (a->f != b->f) fail_msg("%s: " #f " %lld != %lld", what, (long long)a->f, (long long)b->f)
#define EQ_D(f) \
    if (!(a->f == b->f)) fail_msg("%s: " #f " %.17g != %.17g", what, a->f, b->f)
#define EQ_S(f) \
    if (strcmp(a->f, b->f) != 0) fail_msg("%s: " #f " '%s' != '%s'", what, a->f, b->f)

/* Field by field; padding bytes are not compared. */
static void assert_cfg_equal(const Config *a, const Config *b, const char *what)
{
    EQ_S(run_name); EQ_S(run_dir); EQ_I(run_seed);
    EQ_I(model_kind); EQ_I(model_vocab); EQ_I(model_embed); EQ_I(model_hidden);
    EQ_I(model_layers); EQ_D(model_init_scale);
    EQ_I(data_source); EQ_I(data_seq_len); EQ_I(data_batch_per_worker);
    EQ_I(data_markov_order); EQ_I(data_markov_branch);
    EQ_I(train_epochs); EQ_I(train_steps_per_epoch); EQ_I(train_optimizer);
    EQ_D(train_lr); EQ_D(train_momentum); EQ_D(train_beta1); EQ_D(train_beta2);
    EQ_D(train_eps); EQ_D(train_lr_decay); EQ_I(train_lr_decay_start);
    EQ_I(clip_mode); EQ_D(clip_max_norm); EQ_D(clip_clip_value);
    EQ_I(worker_threads);
}

/* Every field of a differs from b: a config built to exercise them all. */
#define NE_I(f) if (a->f == b->f) fail_msg(#f " not exercised")
#define NE_S(f) if (strcmp(a->f, b->f) == 0) fail_msg(#f " not exercised")
static void assert_all_differ(const Config *a, const Config *b)
{
    NE_S(run_name); NE_S(run_dir); NE_I(run_seed);
    NE_I(model_kind); NE_I(model_vocab); NE_I(model_embed); NE_I(model_hidden);
    NE_I(model_layers); NE_I(model_init_scale);
    NE_I(data_source); NE_I(data_seq_len); NE_I(data_batch_per_worker);
    NE_I(data_markov_order); NE_I(data_markov_branch);
    NE_I(train_epochs); NE_I(train_steps_per_epoch); NE_I(train_optimizer);
    NE_I(train_lr); NE_I(train_momentum); NE_I(train_beta1); NE_I(train_beta2);
    NE_I(train_eps); NE_I(train_lr_decay); NE_I(train_lr_decay_start);
    NE_I(clip_mode); NE_I(clip_max_norm); NE_I(clip_clip_value);
    NE_I(worker_threads);
}

/* cfg_print into a malloc'd string. */
static char *print_to_string(const Config *c, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    assert_non_null(f);
    cfg_print(c, f);
    assert_int_equal(fclose(f), 0);
    if (len) *len = n;
    return buf;
}

/* Non-default values for every key, including awkward strings and doubles
 * that only survive printing if it is exact. */
static const char *const all_keys_set[] = {
    "run.name=exp-1.a_B",
    "run.dir=/tmp/with space/\"q\"/back\\slash/\xc3\xa9" "#: x=y",
    "run.seed=4611686018427387904",
    "run.overwrite=true",
    "model.kind=rnn",
    "model.vocab=1000",
    "model.embed=7",
    "model.hidden=9",
    "model.layers=3",
    "model.init_scale=0.30000000000000004",
    "model.softmax=adaptive",
    "model.softmax_cutoffs=3, 70",
    "model.softmax_div=2",
    "data.source=adding",
    "data.seq_len=50",
    "data.batch_per_worker=5",
    "data.markov_order=3",
    "data.markov_branch=4",
    "train.epochs=7",
    "train.steps_per_epoch=1000000000",
    "train.optimizer=sgd",
    "train.lr=1e-300",
    "train.momentum=0.99999999999999989",
    "train.beta1=0.1",
    "train.beta2=0.12345678901234568",
    "train.eps=1e-30",
    "train.lr_decay=0.5",
    "train.lr_decay_start=3",
    "train.embedding_update=lazy",
    "clip.mode=per_tensor",
    "clip.max_norm=1e30",
    "clip.clip_value=3.14159",
    "worker.threads=256",
    "worker.packed_recurrent=off",
    "watchdog.seconds=10.5",
    "watchdog.warn_seconds=2.25",
    "watchdog.straggler_factor=1.5",
    "watchdog.straggler_window=0",
    "debug.slow_ms=0.5",
    "debug.slow_worker=3",
    "checkpoint.on_failure=continue",
    "debug.ckpt_crash_step=7",
    "debug.ckpt_crash_at=after_rename",
};

static void set_all_keys(Config *c)
{
    cfg_defaults(c);
    for (size_t i = 0; i < sizeof all_keys_set / sizeof all_keys_set[0]; i++) set_ok(c, all_keys_set[i]);
}

/* ---- defaults, names ---- */

static void test_defaults_valid(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    validate_ok(&c);
    assert_string_equal(c.run_name, "default");
    assert_string_equal(c.run_dir, "runs/default");
    assert_int_equal(c.run_seed, 1);
    assert_int_equal(c.model_kind, MODEL_LSTM);
    assert_int_equal(c.model_vocab, 16);
    assert_int_equal(c.model_embed, 32);
    assert_int_equal(c.model_hidden, 128);
    assert_int_equal(c.model_layers, 2);
    assert_true(c.model_init_scale == 0.1);
    assert_int_equal(c.data_source, DATA_MARKOV);
    assert_int_equal(c.data_seq_len, 32);
    assert_int_equal(c.data_batch_per_worker, 16);
    assert_int_equal(c.data_markov_order, 2);
    assert_int_equal(c.data_markov_branch, 3);
    assert_int_equal(c.train_epochs, 8);
    assert_int_equal(c.train_steps_per_epoch, 100); /* auto: 100 until resolved at start */
    assert_int_equal(c.train_steps_auto, 1);
    assert_int_equal(c.checkpoint_keep_best, 0);
    assert_int_equal(c.train_optimizer, OPT_ADAM);
    assert_true(c.train_lr == 0.003);
    assert_true(c.train_momentum == 0.0);
    assert_true(c.train_beta1 == 0.9);
    assert_true(c.train_beta2 == 0.999);
    assert_true(c.train_eps == 1e-8);
    assert_true(c.train_lr_decay == 1.0);
    assert_int_equal(c.train_lr_decay_start, 1);
    assert_int_equal(c.clip_mode, CLIP_GLOBAL_NORM);
    assert_true(c.clip_max_norm == 1.0);
    assert_true(c.clip_clip_value == 1.0);
    assert_int_equal(c.worker_threads, 1);
    assert_int_equal(c.checkpoint_on_failure, CKFAIL_ABORT);
    assert_int_equal(c.debug_ckpt_crash_step, 0);
    assert_int_equal(c.debug_ckpt_crash_at, CRASH_BEFORE_RENAME);
}

static void test_defaults_bytes_deterministic(void **state)
{
    (void)state;
    Config a, b;
    memset(&a, 0x5A, sizeof a);
    memset(&b, 0xA5, sizeof b);
    cfg_defaults(&a);
    cfg_defaults(&b);
    assert_memory_equal(&a, &b, sizeof a); /* padding too: it is broadcast as bytes */
}

static void test_enum_names(void **state)
{
    (void)state;
    assert_string_equal(cfg_model_name(MODEL_RNN), "rnn");
    assert_string_equal(cfg_model_name(MODEL_LSTM), "lstm");
    assert_string_equal(cfg_source_name(DATA_MARKOV), "markov");
    assert_string_equal(cfg_source_name(DATA_ADDING), "adding");
    assert_string_equal(cfg_opt_name(OPT_SGD), "sgd");
    assert_string_equal(cfg_opt_name(OPT_ADAM), "adam");
    assert_string_equal(cfg_clip_name(CLIP_GLOBAL_NORM), "global_norm");
    assert_string_equal(cfg_clip_name(CLIP_PER_TENSOR), "per_tensor");
    assert_string_equal(cfg_clip_name(CLIP_VALUE), "value");
    assert_string_equal(cfg_clip_name(CLIP_NONE), "none");
    assert_string_equal(cfg_model_name(3), "?");
    assert_string_equal(cfg_clip_name(-1), "?");
}

/* ---- good input ---- */

static void test_good_yaml_loads(void **state)
{
    (void)state;
    const char *yaml =
        "# a training run\n"
        "run:\n"
        "  name: 'exp.7'\n"
        "  dir: \"out/exp 7\"   # quoted, with a space\n"
        "  seed: 42\n"
        "model:\n"
        "  kind: rnn\n"
        "  hidden: 256\n"
        "  layers: 16\n"
        "  init_scale: 10\n"
        "data: {source: \"adding\", seq_len: 2}\n"
        "\"train\":\n"
        "  optimizer: sgd\n"
        "  lr: 1e-2\n"
        "  momentum: 0\n"
        "  eps: 1\n"
        "clip:\n"
        "  mode: none\n"
        "worker:\n"
        "  threads: 8\n";
    Config c, d;
    char err[256];
    cfg_defaults(&c);
    cfg_defaults(&d);
    int rc = load(&c, yaml, err, sizeof err);
    if (rc != CFG_OK) fail_msg("%s", err);
    assert_string_equal(c.run_name, "exp.7");
    assert_string_equal(c.run_dir, "out/exp 7");
    assert_int_equal(c.run_seed, 42);
    assert_int_equal(c.model_kind, MODEL_RNN);
    assert_int_equal(c.model_hidden, 256);
    assert_int_equal(c.model_layers, 16);
    assert_true(c.model_init_scale == 10.0); /* closed upper bound */
    assert_int_equal(c.data_source, DATA_ADDING);
    assert_int_equal(c.data_seq_len, 2);
    assert_int_equal(c.train_optimizer, OPT_SGD);
    assert_true(c.train_lr == 0.01);
    assert_true(c.train_momentum == 0.0); /* closed lower bound */
    assert_true(c.train_eps == 1.0);
    assert_int_equal(c.clip_mode, CLIP_NONE);
    assert_int_equal(c.worker_threads, 8);
    /* untouched keys keep their previous values */
    assert_int_equal(c.model_vocab, d.model_vocab);
    assert_true(c.train_beta2 == d.train_beta2);
    validate_ok(&c);
}

static void test_crlf_and_plain_string_number(void **state)
{
    (void)state;
    Config c;
    char err[256];
    cfg_defaults(&c);
    int rc = load(&c, "run:\r\n  name: 123\r\nmodel:\r\n  hidden: 7 # note\r\n", err, sizeof err);
    if (rc != CFG_OK) fail_msg("%s", err);
    assert_string_equal(c.run_name, "123"); /* a string key takes a plain number as text */
    assert_int_equal(c.model_hidden, 7);
}

static void test_empty_inputs_are_defaults(void **state)
{
    (void)state;
    const char *cases[] = {"", "# only\n# comments\n", "---\n", "---\n...\n", "\n\n",
                           "model:\n  # hidden: 4\n", "{}\n", "model: {}\n"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Config c, d;
        char err[256];
        cfg_defaults(&c);
        set_ok(&c, "model.hidden=77"); /* loading overrides nothing: stays */
        d = c;
        if (load(&c, cases[i], err, sizeof err) != CFG_OK) fail_msg("case %zu: %s", i, err);
        assert_cfg_equal(&c, &d, cases[i]);
        assert_int_equal(c.model_hidden, 77);
    }
}

static void test_bounds_accepted(void **state)
{
    (void)state;
    Config c;
    char err[256];
    cfg_defaults(&c);
    int rc = load(&c,
                  "run:\n  seed: 4611686018427387904\n  name: "
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
                  "model:\n  layers: 1\n  vocab: 2\n  init_scale: 1e-300\n"
                  "train:\n  lr: 1000\n  beta2: 0.99999999999999989\n",
                  err, sizeof err);
    if (rc != CFG_OK) fail_msg("%s", err);
    assert_int_equal(c.run_seed, INT64_C(1) << 62);
    assert_int_equal(strlen(c.run_name), 63);
    assert_int_equal(c.model_layers, 1);
    assert_true(c.train_lr == 1000.0);
    assert_true(c.train_beta2 < 1.0);
}

/* ---- malformed and misshapen YAML ---- */

static void test_err_malformed_yaml(void **state)
{
    (void)state;
    LOAD_ERR("run:\n  name: \"abc\n", "t.yaml:3:1: ", "malformed YAML", "quoted scalar at 2:9");
    LOAD_ERR("model:\n  hidden: 4\n layers: 2\n", "t.yaml:3:2: ", "malformed YAML",
             "did not find expected key");
    LOAD_ERR("model:\n  hidden: 4\n  layers 2\n", "t.yaml:4:1: ", "malformed YAML", "expected ':'");
    LOAD_ERR("model:\n\tlayers: 2\n", "t.yaml:2:1: ", "malformed YAML");
    LOAD_ERR("run:\n  name: \"x\xff\"\n", "t.yaml:2:11: ", "malformed YAML", "UTF-8");
}

static void test_err_shape(void **state)
{
    (void)state;
    LOAD_ERR("- a\n- b\n", "t.yaml:1:1: ", "expected a mapping of sections", "got a sequence");
    LOAD_ERR("hello\n", "t.yaml:1:1: ", "expected a mapping of sections", "got a scalar 'hello'");
    LOAD_ERR("model: 5\n", "t.yaml:1:8: model: expected a mapping of key: value, got a scalar '5'");
    LOAD_ERR("model:\n  - hidden\n", "t.yaml:2:3: model: expected a mapping", "got a sequence");
    LOAD_ERR("? [a]\n: 1\n", "t.yaml:1:3: expected a section name, got a sequence");
    LOAD_ERR("model:\n  ? {a: 1}\n  : 1\n", "t.yaml:2:5: model: expected a key name, got a mapping");
    LOAD_ERR("model:\n  hidden: 4\n---\nmodel:\n  hidden: 5\n", "t.yaml:3:1: ", "one YAML document");
}

static void test_err_value_not_scalar(void **state)
{
    (void)state;
    LOAD_ERR("model:\n  hidden: [1, 2]\n",
             "t.yaml:2:11: model.hidden: expected an integer in [1, 65536], got a sequence");
    LOAD_ERR("model:\n  hidden:\n    a: 1\n", "t.yaml:3:5: model.hidden: ", "got a mapping");
    LOAD_ERR("model: {hidden: 4, layers: [[[[[[[[1]]]]]]]]}\n", "t.yaml:1:28: model.layers: ",
             "got a sequence");
    /* a million levels: refused at the first event past depth 2, no recursion */
    size_t n = 1000000;
    char *deep = malloc(17 + n + 2);
    assert_non_null(deep);
    memcpy(deep, "model:\n  hidden: ", 17);
    memset(deep + 17, '[', n);
    strcpy(deep + 17 + n, "1");
    LOAD_ERR(deep, "t.yaml:2:11: model.hidden: ", "got a sequence");
    free(deep);
}

static void test_err_anchor_alias_tag(void **state)
{
    (void)state;
    LOAD_ERR("model:\n  hidden: *v\n", "t.yaml:2:11: model.hidden: aliases are not supported: *v");
    LOAD_ERR("model:\n  vocab: &v 64\n  hidden: *v\n", "t.yaml:2:10: model.vocab: ",
             "anchors are not supported: &v");
    LOAD_ERR("model: &m\n  hidden: 4\n", "t.yaml:1:8: model: anchors are not supported: &m");
    LOAD_ERR("*top\n", "t.yaml:1:1: aliases are not supported: *top");
    LOAD_ERR("model:\n  hidden: !!int 4\n", "t.yaml:2:11: model.hidden: tags are not supported");
}

/* ---- names ---- */

static void test_err_unknown_section(void **state)
{
    (void)state;
    LOAD_ERR("model:\n  hidden: 4\nmodle:\n  hidden: 4\n", "t.yaml:3:1: unknown section 'modle'",
             "run, model, data, train, clip, divergence, checkpoint, log, metrics, watchdog, worker, sync, debug");
}

static void test_err_unknown_key(void **state)
{
    (void)state;
    LOAD_ERR("model:\n  vocab: 64\n  hiden: 4\n", "t.yaml:3:3: unknown key 'model.hiden'",
             "kind, vocab, embed, hidden, layers, init_scale");
    LOAD_ERR("train:\n  hidden: 4\n", "t.yaml:2:3: unknown key 'train.hidden'"); /* wrong section */
}

static void test_err_duplicates(void **state)
{
    (void)state;
    LOAD_ERR("model:\n  hidden: 4\n  hidden: 5\n", "t.yaml:3:3: model.hidden: duplicate key",
             "line 2");
    LOAD_ERR("model:\n  hidden: 4\ntrain:\n  lr: 0.1\nmodel:\n  layers: 1\n",
             "t.yaml:5:1: duplicate section 'model'", "line 1");
}

/* ---- values ---- */

static void test_err_wrong_type_int(void **state)
{
    (void)state;
    LOAD_ERR("model:\n  vocab: 64\n  hidden: abc\n",
             "t.yaml:3:11: model.hidden: expected an integer in [1, 65536], got 'abc'");
    LOAD_ERR("model:\n  layers: 3.5\n", "t.yaml:2:11: model.layers: ", "got '3.5'");
    LOAD_ERR("model:\n  layers: 1e1\n", "t.yaml:2:11: model.layers: ", "got '1e1'");
    LOAD_ERR("model:\n  layers: 0x4\n", "t.yaml:2:11: model.layers: ", "got '0x4'");
    LOAD_ERR("model:\n  layers: true\n", "t.yaml:2:11: model.layers: ", "got 'true'");
}

static void test_err_wrong_type_double(void **state)
{
    (void)state;
    LOAD_ERR("train:\n  lr: fast\n", "t.yaml:2:7: train.lr: expected a number in (0, 1000], got 'fast'");
    LOAD_ERR("train:\n  lr: .inf\n", "t.yaml:2:7: train.lr: ", "got '.inf'");
    LOAD_ERR("train:\n  lr: -inf\n", "t.yaml:2:7: train.lr: ", "got '-inf'");
    LOAD_ERR("train:\n  lr: nan\n", "t.yaml:2:7: train.lr: ", "got 'nan'");
    LOAD_ERR("train:\n  lr: 0x1p-3\n", "t.yaml:2:7: train.lr: ", "got '0x1p-3'");
    LOAD_ERR("train:\n  lr: 1e999\n", "t.yaml:2:7: train.lr: ", "got '1e999' (out of double range)");
    LOAD_ERR("train:\n  lr: 0.1.2\n", "t.yaml:2:7: train.lr: ", "got '0.1.2'");
}

static void test_err_quoted_number(void **state)
{
    (void)state;
    LOAD_ERR("model:\n  embed: '32'\n",
             "t.yaml:2:10: model.embed: expected an integer in [1, 65536], got a string '32'");
    LOAD_ERR("train:\n  lr: \"0.1\"\n", "t.yaml:2:7: train.lr: ", "got a string '0.1'");
    LOAD_ERR("model:\n  embed: |\n    32\n", "t.yaml:2:10: model.embed: ", "got a string");
}

static void test_err_enum(void **state)
{
    (void)state;
    LOAD_ERR("model:\n  kind: transformer\n", "t.yaml:2:9: model.kind: expected one of rnn, lstm, gru, got 'transformer'");
    LOAD_ERR("model:\n  kind: LSTM\n", "t.yaml:2:9: model.kind: ", "got 'LSTM'");
    LOAD_ERR("clip:\n  mode: 0\n", "t.yaml:2:9: clip.mode: expected one of global_norm, per_tensor, value, none");
}

static void test_err_out_of_range(void **state)
{
    (void)state;
    Config c;
    char err[256];
    cfg_defaults(&c);
    assert_int_equal(load(&c, "model:\n  layers: 40\n", err, sizeof err), CFG_ERR);
    assert_string_equal(err, "t.yaml:2:11: model.layers: expected an integer in [1, 16], got '40'");
    LOAD_ERR("model:\n  layers: 0\n", "t.yaml:2:11: model.layers: expected an integer in [1, 16], got '0'");
    LOAD_ERR("model:\n  layers: -3\n", "t.yaml:2:11: model.layers: ", "got '-3'");
    LOAD_ERR("model:\n  init_scale: 0\n",
             "t.yaml:2:15: model.init_scale: expected a number in (0, 10], got '0'");
    LOAD_ERR("model:\n  init_scale: 10.000000000000002\n", "t.yaml:2:15: model.init_scale: ");
    LOAD_ERR("train:\n  momentum: 1\n", "t.yaml:2:13: train.momentum: expected a number in [0, 1), got '1'");
    LOAD_ERR("train:\n  momentum: -0.5\n", "t.yaml:2:13: train.momentum: ");
    LOAD_ERR("train:\n  eps: 1e-400\n", "t.yaml:2:8: train.eps: ", "got '1e-400' (out of double range)");
    LOAD_ERR("train:\n  eps: 1e-310\n", "t.yaml:2:8: train.eps: ", "(out of double range)"); /* subnormal */
    LOAD_ERR("clip:\n  max_norm: 1e31\n", "t.yaml:2:13: clip.max_norm: expected a number in [1e-30, 1e+30]");
    LOAD_ERR("run:\n  seed: 4611686018427387905\n",
             "t.yaml:2:9: run.seed: expected an integer in [0, 4611686018427387904]");
    LOAD_ERR("run:\n  seed: -1\n", "t.yaml:2:9: run.seed: ", "got '-1'");
    LOAD_ERR("run:\n  seed: 99999999999999999999\n", "t.yaml:2:9: run.seed: "); /* ERANGE */
    LOAD_ERR("model:\n  vocab: 99999999999\n", "t.yaml:2:10: model.vocab: ");   /* > INT_MAX */
}

static void test_err_strings(void **state)
{
    (void)state;
    LOAD_ERR("run:\n  name: a b\n",
             "t.yaml:2:9: run.name: expected 1 to 63 characters of [A-Za-z0-9._-], got 'a b'");
    LOAD_ERR("run:\n  name: \"\"\n", "t.yaml:2:9: run.name: ", "got ''");
    LOAD_ERR("run:\n  name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", /* 64 */
             "t.yaml:2:9: run.name: ", "got 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'");
    LOAD_ERR("run:\n  dir: \"a\\x85b\"\n", "t.yaml:2:8: run.dir: ", "'a\\xC2\\x85b'"); /* NEL, a line break */
    LOAD_ERR("run:\n  dir: \"a\\u2028b\"\n", "t.yaml:2:8: run.dir: ");                 /* LINE SEPARATOR */
    LOAD_ERR("run:\n  dir: \"a\\x9Fb\"\n", "t.yaml:2:8: run.dir: ");                   /* C1 control */
    SET_ERR("run.dir=a\xc0\xaf" "b", "run.dir: ", "'a\\xC0\\xAFb'");                     /* overlong '/' */
    SET_ERR("run.dir=a\xe0\x83\xa9", "run.dir: ", "'a\\xE0\\x83\\xA9'");                 /* overlong U+00E9 */
    SET_ERR("run.dir=a\xed\xa0\x80", "run.dir: ");                                 /* surrogate */
    LOAD_ERR("run:\n  dir: \"a\\0b\"\n", "t.yaml:2:8: run.dir: ", "NUL", "'a\\x00b'");
    LOAD_ERR("run:\n  dir: \"a\\nb\"\n", "t.yaml:2:8: run.dir: expected 1 to 255 bytes of printable UTF-8",
             "'a\\x0Ab'");
}

/* train.steps_per_epoch: a count or auto (0 inside, printed back as auto). */
static void test_steps_auto(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    set_ok(&c, "train.steps_per_epoch=7");
    assert_int_equal(c.train_steps_per_epoch, 7);
    assert_int_equal(c.train_steps_auto, 0);
    set_ok(&c, "train.steps_per_epoch=auto");
    assert_int_equal(c.train_steps_per_epoch, 100);
    assert_int_equal(c.train_steps_auto, 1);
    validate_ok(&c);
    char buf[1 << 16] = "";
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    cfg_print(&c, f);
    fclose(f);
    assert_non_null(strstr(buf, "  steps_per_epoch: auto"));
    set_ok(&c, "train.steps_per_epoch=100");
    memset(buf, 0, sizeof buf);
    f = fmemopen(buf, sizeof buf - 1, "w");
    cfg_print(&c, f);
    fclose(f);
    assert_non_null(strstr(buf, "  steps_per_epoch: 100 "));
    SET_ERR("train.steps_per_epoch=0", "train.steps_per_epoch: expected an integer in [1, 1000000000] or auto",
            "got '0'");
    SET_ERR("train.steps_per_epoch=autox", "train.steps_per_epoch: ", "or auto");
    LOAD_ERR("train:\n  steps_per_epoch: \"auto\"\n", "t.yaml:2:20: train.steps_per_epoch: ");
    SET_ERR("checkpoint.keep_best=yes", "checkpoint.keep_best: expected one of false, true");
}

static void test_err_missing_value(void **state)
{
    (void)state;
    const char *missing[] = {"model:\n  hidden:\n  layers: 2\n", "model:\n  hidden: ~\n",
                             "model:\n  hidden: null\n", "model:\n  hidden: NULL\n"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        LOAD_ERR(missing[i], "t.yaml:2:", "model.hidden: missing value (expected an integer in [1, 65536])");
        Config c;
        char err[256];
        cfg_defaults(&c);
        load(&c, missing[i], err, sizeof err);
        if (strstr(err, "got")) fail_msg("missing reported as malformed: %s", err);
    }
    LOAD_ERR("model:\n  hidden:\n  layers: 2\n", "t.yaml:2:10: model.hidden: missing value");
    LOAD_ERR("model:\n  hidden: ~\n", "t.yaml:2:11: model.hidden: missing value");
    LOAD_ERR("run:\n  name:\n", "t.yaml:2:8: run.name: missing value");
    LOAD_ERR("model:\n  kind: null\n", "t.yaml:2:9: model.kind: missing value (expected one of rnn, lstm, gru)");
}

static void test_failed_load_is_atomic(void **state)
{
    (void)state;
    Config c;
    char err[256];
    cfg_defaults(&c);
    assert_int_equal(load(&c, "model:\n  hidden: 7\n  layers: 40\n", err, sizeof err), CFG_ERR);
    assert_int_equal(c.model_hidden, 128); /* the good key before the bad one is not applied */
    assert_non_null(strstr(err, ":3:11: model.layers"));
}

static void test_error_truncation(void **state)
{
    (void)state;
    Config c;
    char full[256], small[16];
    cfg_defaults(&c);
    assert_int_equal(load(&c, "model:\n  layers: 40\n", full, sizeof full), CFG_ERR);
    memset(small, 'Z', sizeof small);
    assert_int_equal(load(&c, "model:\n  layers: 40\n", small, sizeof small), CFG_ERR);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, full, sizeof small - 1);
    assert_int_equal(load(&c, "model:\n  layers: 40\n", NULL, 0), CFG_ERR);
    assert_int_equal(cfg_set_arg(&c, "model.layers=40", NULL, 0), CFG_ERR);
    char one[1] = {'Z'};
    assert_int_equal(cfg_set_arg(&c, "model.layers=40", one, sizeof one), CFG_ERR);
    assert_int_equal(one[0], '\0');
}

/* ---- files ---- */

static void test_file_good(void **state)
{
    TmpDir *t = *state;
    const char *yaml = "model:\n  kind: rnn\n  layers: 3\ntrain:\n  lr: 0.25\n";
    assert_non_null(tmpdir_write(t, "good.yaml", yaml, strlen(yaml)));
    Config c;
    char err[256];
    cfg_defaults(&c);
    if (cfg_load_file(&c, t->path, err, sizeof err) != CFG_OK) fail_msg("%s", err);
    assert_int_equal(c.model_kind, MODEL_RNN);
    assert_int_equal(c.model_layers, 3);
    assert_true(c.train_lr == 0.25);
}

static void test_file_bad_names_path_line_col(void **state)
{
    TmpDir *t = *state;
    const char *yaml = "# header\nmodel:\n  layers: 2\n  hidden: fast\n";
    assert_non_null(tmpdir_write(t, "bad.yaml", yaml, strlen(yaml)));
    Config c;
    char err[512], want[256];
    cfg_defaults(&c);
    assert_int_equal(cfg_load_file(&c, t->path, err, sizeof err), CFG_ERR);
    snprintf(want, sizeof want, "%s:4:11: model.hidden: expected an integer in [1, 65536], got 'fast'", t->path);
    assert_string_equal(err, want);
}

static void test_file_missing(void **state)
{
    TmpDir *t = *state;
    Config c;
    char err[512], path[160];
    cfg_defaults(&c);
    snprintf(path, sizeof path, "%s/nope.yaml", t->dir);
    assert_int_equal(cfg_load_file(&c, path, err, sizeof err), CFG_ERR);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, strerror(ENOENT)));
    assert_one_line(err);
    /* a directory opens on Linux but does not read */
    assert_int_equal(cfg_load_file(&c, t->dir, err, sizeof err), CFG_ERR);
    assert_non_null(strstr(err, t->dir));
}

static void test_file_too_large(void **state)
{
    TmpDir *t = *state;
    size_t n = (1u << 20) + 2;
    char *text = malloc(n);
    assert_non_null(text);
    memset(text, '#', n);
    text[n - 1] = '\n';
    assert_non_null(tmpdir_write(t, "big.yaml", text, n));
    free(text);
    Config c;
    char err[512];
    cfg_defaults(&c);
    assert_int_equal(cfg_load_file(&c, t->path, err, sizeof err), CFG_ERR);
    assert_non_null(strstr(err, t->path));
    assert_non_null(strstr(err, "larger than"));
}

/* ---- --set ---- */

static void test_set_good(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    set_ok(&c, "model.layers=4");
    set_ok(&c, "train.lr=0.5");
    set_ok(&c, "model.kind=rnn");
    set_ok(&c, "run.dir=~"); /* raw, so not a YAML null */
    assert_string_equal(c.run_dir, "~");
    set_ok(&c, "run.dir=a b=c"); /* raw: spaces and later '=' belong to the value */
    assert_string_equal(c.run_dir, "a b=c");
    assert_int_equal(c.model_layers, 4);
    assert_true(c.train_lr == 0.5);
    assert_int_equal(c.model_kind, MODEL_RNN);
}

static void test_set_bad(void **state)
{
    (void)state;
    Config c;
    char err[256];
    cfg_defaults(&c);
    assert_int_equal(cfg_set_arg(&c, "model.layers=40", err, sizeof err), CFG_ERR);
    assert_string_equal(err, "--set model.layers=40: model.layers: expected an integer in [1, 16], got '40'");
    SET_ERR("model.layers", "--set model.layers: expected section.key=value");
    SET_ERR("layers=4", "--set layers=4: expected section.key=value");
    SET_ERR("model.hiden=4", "--set model.hiden=4: unknown key 'model.hiden'", "hidden");
    SET_ERR("modle.hidden=4", "--set modle.hidden=4: unknown section 'modle'", "model");
    SET_ERR("model.layers=abc", "--set model.layers=abc: model.layers: ", "got 'abc'");
    SET_ERR("model.layers=0", "--set model.layers=0: model.layers: ", "got '0'");
    SET_ERR("model.layers= 4", "model.layers: ", "got ' 4'");
    SET_ERR("model.layers=", "--set model.layers=: model.layers: missing value");
    SET_ERR("model.kind=transformer", "model.kind: expected one of rnn, lstm, gru, got 'transformer'");
    SET_ERR("model.init_scale=0", "model.init_scale: expected a number in (0, 10], got '0'");
    SET_ERR("run.name=a/b", "run.name: ", "got 'a/b'");
    SET_ERR("=4", "--set =4: expected section.key=value");
    SET_ERR("", "--set : expected section.key=value");
}

/* ---- validation ---- */

static void test_validate_markov(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    set_ok(&c, "model.vocab=8");
    set_ok(&c, "data.markov_branch=9");
    VALIDATE_ERR(&c, "config: data.markov_branch (9) must be <= model.vocab (8)");
    set_ok(&c, "data.markov_branch=8");
    validate_ok(&c);
    set_ok(&c, "data.source=adding"); /* the chain is not built: no constraint */
    set_ok(&c, "data.markov_branch=9");
    validate_ok(&c);

    cfg_defaults(&c);
    set_ok(&c, "model.vocab=256");
    set_ok(&c, "data.markov_order=3"); /* 256^3 = 2^24: the limit itself */
    validate_ok(&c);
    set_ok(&c, "data.markov_branch=5"); /* 2^24 contexts x 5 successors: table too big */
    VALIDATE_ERR(&c, "data.markov_branch (83886080) must be <= 67108864");
    set_ok(&c, "data.markov_branch=3");
    set_ok(&c, "model.vocab=257");
    VALIDATE_ERR(&c, "config: model.vocab^data.markov_order (257^3) must be <= 16777216");
    set_ok(&c, "model.vocab=1000000");
    set_ok(&c, "data.markov_order=4"); /* 10^24 overflows uint64 if computed naively */
    VALIDATE_ERR(&c, "model.vocab^data.markov_order (1000000^4)");
}

static void test_validate_activation_size(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    set_ok(&c, "data.seq_len=100000");
    set_ok(&c, "data.batch_per_worker=30000");
    VALIDATE_ERR(&c, "data.seq_len * data.batch_per_worker * the widest layer (1536000000000)");
    set_ok(&c, "data.batch_per_worker=4");
    validate_ok(&c);
}

static void test_validate_adding(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    set_ok(&c, "data.source=adding");
    set_ok(&c, "data.seq_len=1");
    VALIDATE_ERR(&c, "config: data.seq_len (1) must be >= 2 when data.source is adding");
    set_ok(&c, "data.seq_len=2");
    validate_ok(&c);
}

static void test_validate_watchdog(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    set_ok(&c, "watchdog.seconds=10");
    set_ok(&c, "watchdog.warn_seconds=11");
    VALIDATE_ERR(&c, "config: watchdog.warn_seconds: 11 is more than watchdog.seconds 10");
    set_ok(&c, "watchdog.warn_seconds=10");
    validate_ok(&c);
    set_ok(&c, "watchdog.seconds=0"); /* off: no bound on the warning */
    validate_ok(&c);
}

static void test_validate_param_count(void **state)
{
    (void)state;
    /* rnn, markov, V=2, E=1, L=1: params = 2 + (H+2)H + 2H + 2 = (H+2)^2 */
    Config c;
    cfg_defaults(&c);
    set_ok(&c, "model.kind=rnn");
    set_ok(&c, "model.vocab=2");
    set_ok(&c, "model.embed=1");
    set_ok(&c, "model.layers=1");
    set_ok(&c, "data.markov_branch=2");
    set_ok(&c, "model.hidden=46338"); /* 46340^2 = 2147395600 < 2^31 */
    validate_ok(&c);
    set_ok(&c, "model.hidden=46339"); /* 46341^2 = 2147488281 >= 2^31 */
    VALIDATE_ERR(&c, "config: the model has 2147488281 parameters, must be < 2147483648", "model.hidden");
    cfg_defaults(&c);
    set_ok(&c, "model.hidden=65536");
    set_ok(&c, "model.layers=16");
    VALIDATE_ERR(&c, "parameters");
    set_ok(&c, "data.source=adding"); /* still far too big without the embedding */
    VALIDATE_ERR(&c, "parameters");
}

/* model.softmax adaptive: word text only, cutoffs ascending below the
 * vocabulary, no tied head, tensors within the record's table. */
/* sync.reproducible auto (the default) settles to true or false in
 * cfg_resolve, by worker.threads, sync.mode and sync.sparse_embedding, with a
 * line that says which and why; true and false are left as they are. */
/* The memory estimate counts sync.reproducible's micro-batches: a replay of
 * 4 micro-batches a worker holds 4 gradient slots, their pieces packed (W >
 * 1) and received (3 more shards' worth), at least 11 x the parameters more
 * than one micro-batch; not when reproducible is off. */
static void test_worker_bytes_micro(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    set_ok(&c, "sync.reproducible=true");
    uint64_t P = cfg_param_count(&c), one = cfg_worker_bytes(&c, 2);
    set_ok(&c, "data.micro_batch=4"); /* the default 16 streams: 4 micro-batches */
    uint64_t four = cfg_worker_bytes(&c, 2);
    assert_true(four >= one + 4 * 11 * P);
    assert_true(four < one + 4 * 13 * P + 4 * cfg_model_floats(&c, 4));
    assert_true(cfg_worker_bytes(&c, 1) < four); /* one worker: no pack */
    set_ok(&c, "sync.reproducible=false");
    assert_int_equal(cfg_worker_bytes(&c, 2), one);
}

static void test_resolve_reproducible(void **state)
{
    (void)state;
    Config c;
    char note[256];
    cfg_defaults(&c);
    assert_int_equal(c.sync_reproducible, REPRO_AUTO);
    cfg_resolve(&c, note, sizeof note);
    assert_int_equal(c.sync_reproducible, REPRO_TRUE);
    assert_non_null(strstr(note, "sync.reproducible auto: true, one micro-batch of 16 streams per worker"));
    assert_non_null(strstr(note, "data.micro_batch: 16"));
    cfg_resolve(&c, note, sizeof note); /* settled: nothing left to say */
    assert_int_equal(c.sync_reproducible, REPRO_TRUE);
    assert_string_equal(note, "");
    static const struct {
        const char *set, *why;
    } off[] = {{"worker.threads=2", "for worker.threads > 1"},
               {"sync.mode=sharded", "for sync.mode sharded"},
               {"sync.sparse_embedding=true", "for sync.sparse_embedding"}};
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) {
        cfg_defaults(&c);
        set_ok(&c, off[i].set);
        cfg_resolve(&c, note, sizeof note);
        assert_int_equal(c.sync_reproducible, REPRO_FALSE);
        assert_non_null(strstr(note, "sync.reproducible auto: false"));
        assert_non_null(strstr(note, off[i].why));
        validate_ok(&c);
    }
    cfg_defaults(&c);
    set_ok(&c, "data.micro_batch=4");
    cfg_resolve(&c, note, sizeof note);
    assert_int_equal(c.sync_reproducible, REPRO_TRUE);
    assert_non_null(strstr(note, "micro-batches of 4 streams"));
    set_ok(&c, "data.micro_batch=5"); /* on, so a micro-batch must divide B */
    VALIDATE_ERR(&c, "data.micro_batch (5) must divide data.batch_per_worker (16) when sync.reproducible "
                     "is true (as auto is unless");
    cfg_defaults(&c); /* explicit values stay, and say nothing */
    set_ok(&c, "sync.reproducible=false");
    cfg_resolve(&c, note, sizeof note);
    assert_int_equal(c.sync_reproducible, REPRO_FALSE);
    assert_string_equal(note, "");
    set_ok(&c, "sync.reproducible=true"), set_ok(&c, "worker.threads=2");
    cfg_resolve(&c, note, sizeof note);
    assert_int_equal(c.sync_reproducible, REPRO_TRUE);
    set_ok(&c, "sync.sparse_embedding=true"); /* asked for both: refused */
    VALIDATE_ERR(&c, "sync.sparse_embedding: true with sync.reproducible");
}

static void test_validate_softmax(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    set_ok(&c, "model.softmax_cutoffs=x");
    VALIDATE_ERR(&c, "config: model.softmax_cutoffs: expected word ids (digits) separated by commas", "got 'x'");
    cfg_defaults(&c);
    set_ok(&c, "model.softmax=adaptive");
    VALIDATE_ERR(&c, "config: model.softmax: adaptive needs data.source text with data.tokenizer words",
                 "got data.source markov");
    set_ok(&c, "data.source=text"), set_ok(&c, "data.path=/x");
    VALIDATE_ERR(&c, "got data.source text with bytes");
    set_ok(&c, "data.tokenizer=words"), set_ok(&c, "model.vocab=1000");
    VALIDATE_ERR(&c, "model.softmax_cutoffs: expected each cutoff below model.vocab", "got '2000,10000' (model.vocab 1000)");
    set_ok(&c, "model.softmax_cutoffs=500, 200");
    VALIDATE_ERR(&c, "model.softmax_cutoffs: expected cutoffs strictly ascending");
    set_ok(&c, "model.softmax_cutoffs=1,2,3,4,5");
    VALIDATE_ERR(&c, "model.softmax_cutoffs: expected at most 4 cutoffs");
    set_ok(&c, "model.softmax_cutoffs=0,5");
    VALIDATE_ERR(&c, "model.softmax_cutoffs: expected each cutoff in [1, 1000000]");
    set_ok(&c, "model.softmax_cutoffs=100,");
    VALIDATE_ERR(&c, "model.softmax_cutoffs: expected word ids");
    set_ok(&c, "model.softmax_cutoffs=100, 400"), set_ok(&c, "model.hidden=64"), set_ok(&c, "model.softmax_div=4");
    validate_ok(&c);
    int cut[CFG_MAX_CLUSTERS + 1], dim[CFG_MAX_CLUSTERS];
    assert_int_equal(cfg_adaptive(&c, cut, dim), 2);
    assert_int_equal(cut[0], 100), assert_int_equal(cut[1], 400), assert_int_equal(cut[2], 1000);
    assert_int_equal(dim[0], 16), assert_int_equal(dim[1], 4);
    set_ok(&c, "model.softmax_div=1000"); /* widths floor at 1 */
    assert_int_equal(cfg_adaptive(&c, cut, dim), 2);
    assert_int_equal(dim[0], 1), assert_int_equal(dim[1], 1);
    set_ok(&c, "model.tie_embeddings=true"), set_ok(&c, "model.embed=64");
    VALIDATE_ERR(&c, "model.softmax: adaptive with model.tie_embeddings");
    set_ok(&c, "model.tie_embeddings=false"), set_ok(&c, "model.layers=16");
    set_ok(&c, "model.softmax_cutoffs=100,200,300,400");
    VALIDATE_ERR(&c, "model.softmax_cutoffs: 4 tail clusters with 16 layers make 63 tensors, at most 51");
    set_ok(&c, "model.softmax=full"); /* the full softmax ignores cutoffs that fit no vocabulary */
    set_ok(&c, "model.vocab=50");
    validate_ok(&c);
    assert_int_equal(cfg_adaptive(&c, cut, dim), 0);
}

/* train.embedding_update: lazy needs the sparse embedding sync (replicated)
 * and no weight decay; dense (the default) needs nothing and keeps the hash. */
static void test_validate_embedding_update(void **state)
{
    (void)state;
    Config c, d;
    cfg_defaults(&c);
    cfg_defaults(&d);
    set_ok(&c, "train.embedding_update=dense");
    assert_true(cfg_hash(&c) == cfg_hash(&d));
    validate_ok(&c);
    set_ok(&c, "train.embedding_update=lazy");
    VALIDATE_ERR(&c, "config: train.embedding_update: lazy needs sync.sparse_embedding: true");
    set_ok(&c, "sync.mode=sharded");
    VALIDATE_ERR(&c, "config: train.embedding_update: lazy needs sync.mode replicated");
    set_ok(&c, "sync.mode=replicated"), set_ok(&c, "sync.sparse_embedding=true");
    validate_ok(&c);
    assert_true(cfg_hash(&c) != cfg_hash(&d));
    set_ok(&c, "train.optimizer=adamw"), set_ok(&c, "train.weight_decay=0.01");
    VALIDATE_ERR(&c, "config: train.embedding_update: lazy with train.weight_decay 0.01", "train.embedding_update dense");
    set_ok(&c, "train.optimizer=sgd"), set_ok(&c, "train.momentum=0.9");
    VALIDATE_ERR(&c, "lazy with train.weight_decay 0.01");
    set_ok(&c, "train.weight_decay=0"); /* lazy momentum: the rows' velocities only */
    validate_ok(&c);
}

static void test_validate_fields(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    c.model_layers = 40; /* a Config built in code or received as bytes */
    VALIDATE_ERR(&c, "config: model.layers: expected an integer in [1, 16], got 40");
    cfg_defaults(&c);
    c.model_kind = 7;
    VALIDATE_ERR(&c, "config: model.kind: expected one of rnn, lstm, gru, got 7");
    cfg_defaults(&c);
    c.train_lr = INFINITY;
    VALIDATE_ERR(&c, "config: train.lr: expected a number in (0, 1000], got inf");
    c.train_lr = NAN;
    VALIDATE_ERR(&c, "config: train.lr: expected a number in (0, 1000], got nan");
    cfg_defaults(&c);
    memset(c.run_name, 'a', sizeof c.run_name); /* no terminator */
    VALIDATE_ERR(&c, "config: run.name: ");
}

/* metrics.listen is parsed strictly, by one parser (cfg_parse_listen) that
 * the validation and the endpoint share: no sign, blank or empty port. */
static void test_validate_listen_strict(void **state)
{
    (void)state;
    static const char *const bad[] = {"127.0.0.1:+80", "127.0.0.1: 80", "127.0.0.1:-0", "127.0.0.1:",
                                      "127.0.0.1:80 ", "127.0.0.1:0x50", "127.0.0.1:65536",
                                      "127.0.0.1:000080", ":80", "127.0.0.1", " 127.0.0.1:80",
                                      "localhost:80", "127.0.0.1:80:80", "OFF"};
    Config c;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cfg_defaults(&c);
        snprintf(c.metrics_listen, sizeof c.metrics_listen, "%s", bad[i]);
        VALIDATE_ERR(&c, "metrics.listen: expected IPv4:PORT");
    }
    static const char *const good[] = {"127.0.0.1:0", "127.0.0.1:80", "0.0.0.0:65535", "off", "10.1.2.3:09464"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        char err[256] = "";
        cfg_defaults(&c);
        snprintf(c.metrics_listen, sizeof c.metrics_listen, "%s", good[i]);
        if (cfg_validate(&c, err, sizeof err) != CFG_OK) fail_msg("%s: %s", good[i], err);
    }
}

/* ---- print, round trip, hash ---- */

static void test_print_shape(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    char *text = print_to_string(&c, NULL);
    const char *want[] = {"\nrun:\n  name: \"default\"", "\nmodel:\n  kind: lstm", "\ndata:\n",
                          "\ntrain:\n", "\nclip:\n  mode: global_norm", "\nworker:\n  threads: 1",
                          "\n  lr: 0.003 ", "\n  eps: 1e-08 ", "\n  layers: 2 ", "\n  seed: 1 "};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text, want[i])) fail_msg("'%s' not in:\n%s", want[i], text);
    free(text);
}

static void roundtrip(const Config *c, const char *what)
{
    size_t n;
    char *text = print_to_string(c, &n);
    Config d;
    char err[512];
    cfg_defaults(&d);
    int rc = cfg_load_string(&d, text, n, "printed", err, sizeof err);
    if (rc != CFG_OK) fail_msg("%s: printed config does not load: %s\n%s", what, err, text);
    assert_cfg_equal(&d, c, what);
    assert_true(cfg_hash(&d) == cfg_hash(c));
    free(text);
}

static void test_roundtrip(void **state)
{
    (void)state;
    Config c, d;
    cfg_defaults(&c);
    roundtrip(&c, "defaults");
    set_all_keys(&c);
    cfg_defaults(&d);
    assert_all_differ(&c, &d);
    roundtrip(&c, "every key set");
}

static const char *const unhashed_keys[] = {
    "run.name", "run.dir", "run.overwrite", "checkpoint.keep", "checkpoint.keep_best", "checkpoint.dir",
    "checkpoint.on_failure", "log.tensor_norms_every", "metrics.listen", "metrics.stall_seconds",
    "watchdog.seconds", "watchdog.warn_seconds", "watchdog.straggler_factor",
    "watchdog.straggler_window", "sync.bucket_kb", "debug.ckpt_crash_step", "debug.ckpt_crash_at",
    "debug.slow_ms", "debug.slow_worker", "debug.stop_at_end", "sync.shared_memory",
};

/* Keys added after runs existed: hashed only when not at their default, so
 * the configs that leave them alone keep their hashes. The lines of their
 * defaults as printed (docs cut): */
static const char *const default_unhashed_lines[] = {
    "  softmax: full", "  softmax_cutoffs: \"2000,10000\"", "  softmax_div: 4", "  embedding_update: dense",
    "  packed_recurrent: auto",
};

/* Is "section.key" (or "section.key=value") one of unhashed_keys? */
static int unhashed(const char *key)
{
    size_t n = strcspn(key, "=");
    for (size_t i = 0; i < sizeof unhashed_keys / sizeof unhashed_keys[0]; i++)
        if (strlen(unhashed_keys[i]) == n && !strncmp(unhashed_keys[i], key, n)) return 1;
    return 0;
}

static void test_hash(void **state)
{
    (void)state;
    Config a, b;
    cfg_defaults(&a);
    cfg_defaults(&b);
    uint64_t h0 = cfg_hash(&a);
    assert_true(h0 == cfg_hash(&a));
    assert_true(h0 == cfg_hash(&b));
    set_ok(&b, "train.lr=0.0030000000000000005"); /* one ulp away */
    assert_true(cfg_hash(&b) != h0);
    set_ok(&b, "train.lr=3e-3");
    assert_true(cfg_hash(&b) == h0);
    set_ok(&b, "run.name=other");
    set_ok(&b, "run.dir=/elsewhere");
    set_ok(&b, "metrics.listen=off");
    assert_true(cfg_hash(&b) == h0); /* two identical trainings in two places */
    /* every key that can change a number moves the hash; the others do not */
    for (size_t i = 0; i < sizeof all_keys_set / sizeof all_keys_set[0]; i++) {
        cfg_defaults(&b);
        set_ok(&b, all_keys_set[i]);
        if (!unhashed(all_keys_set[i]) && cfg_hash(&b) == h0)
            fail_msg("hash ignores %s", all_keys_set[i]);
        if (unhashed(all_keys_set[i]) && cfg_hash(&b) != h0)
            fail_msg("hash covers %s, which changes no number", all_keys_set[i]);
    }
}

/* The contract cfg_hash keeps: FNV-1a 64 of the printed config with the
 * comments left out (so rewording a doc does not change a run's identity)
 * and the lines of the keys below left out (they change no number the run
 * computes: where output goes, logging, metrics, the watchdog, checkpoint
 * retention, the bucket size, crash and straggler hooks; README "Config").
 * Built here independently from cfg_print's output. */
static uint64_t fnv1a64(const char *p, size_t n)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * UINT64_C(1099511628211);
    return h;
}

static uint64_t hash_of_printed(const Config *c)
{
    char *text = print_to_string(c, NULL);
    size_t cap = strlen(text) + 1, n = 0;
    char *bare = malloc(cap);
    assert_non_null(bare);
    char section[64] = "", key[160];
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        if (line[0] != ' ') snprintf(section, sizeof section, "%.*s", (int)strcspn(line, ":"), line);
        snprintf(key, sizeof key, "%s.%.*s", section, (int)strcspn(line + 2, ":"), line + 2);
        if (line[0] == ' ' && unhashed(key)) continue;
        char *doc = NULL;
        for (char *p = strstr(line, " # "); p; p = strstr(p + 1, " # ")) doc = p; /* the last one */
        size_t len = doc ? (size_t)(doc - line) : strlen(line);
        while (len && line[len - 1] == ' ') len--;
        int at_default = 0;
        for (size_t i = 0; i < sizeof default_unhashed_lines / sizeof default_unhashed_lines[0]; i++)
            at_default |= strlen(default_unhashed_lines[i]) == len && !strncmp(line, default_unhashed_lines[i], len);
        if (at_default) continue;
        memcpy(bare + n, line, len);
        n += len;
        bare[n++] = '\n';
    }
    uint64_t h = fnv1a64(bare, n);
    free(bare);
    free(text);
    return h;
}

static void test_hash_is_fnv_of_printed(void **state)
{
    (void)state;
    Config c;
    cfg_defaults(&c);
    assert_true(cfg_hash(&c) == hash_of_printed(&c));
    set_all_keys(&c);
    assert_true(cfg_hash(&c) == hash_of_printed(&c));
    /* a key at its default given explicitly: the same hash as left out */
    Config d;
    cfg_defaults(&d);
    set_ok(&d, "model.softmax=full");
    set_ok(&d, "model.softmax_div=4");
    cfg_defaults(&c);
    assert_true(cfg_hash(&c) == cfg_hash(&d));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_valid),
        cmocka_unit_test(test_steps_auto),
        cmocka_unit_test(test_defaults_bytes_deterministic),
        cmocka_unit_test(test_enum_names),
        cmocka_unit_test(test_good_yaml_loads),
        cmocka_unit_test(test_crlf_and_plain_string_number),
        cmocka_unit_test(test_empty_inputs_are_defaults),
        cmocka_unit_test(test_bounds_accepted),
        cmocka_unit_test(test_err_malformed_yaml),
        cmocka_unit_test(test_err_shape),
        cmocka_unit_test(test_err_value_not_scalar),
        cmocka_unit_test(test_err_anchor_alias_tag),
        cmocka_unit_test(test_err_unknown_section),
        cmocka_unit_test(test_err_unknown_key),
        cmocka_unit_test(test_err_duplicates),
        cmocka_unit_test(test_err_wrong_type_int),
        cmocka_unit_test(test_err_wrong_type_double),
        cmocka_unit_test(test_err_quoted_number),
        cmocka_unit_test(test_err_enum),
        cmocka_unit_test(test_err_out_of_range),
        cmocka_unit_test(test_err_strings),
        cmocka_unit_test(test_err_missing_value),
        cmocka_unit_test(test_failed_load_is_atomic),
        cmocka_unit_test(test_error_truncation),
        cmocka_unit_test_setup_teardown(test_file_good, tmpdir_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_file_bad_names_path_line_col, tmpdir_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_file_missing, tmpdir_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_file_too_large, tmpdir_setup, tmpdir_teardown),
        cmocka_unit_test(test_set_good),
        cmocka_unit_test(test_set_bad),
        cmocka_unit_test(test_validate_markov),
        cmocka_unit_test(test_validate_activation_size),
        cmocka_unit_test(test_validate_adding),
        cmocka_unit_test(test_validate_watchdog),
        cmocka_unit_test(test_validate_param_count),
        cmocka_unit_test(test_validate_softmax), cmocka_unit_test(test_validate_embedding_update),
        cmocka_unit_test(test_resolve_reproducible),
        cmocka_unit_test(test_worker_bytes_micro),
        cmocka_unit_test(test_validate_fields),
        cmocka_unit_test(test_validate_listen_strict),
        cmocka_unit_test(test_print_shape),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_hash_is_fnv_of_printed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}
