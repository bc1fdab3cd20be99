/* test_records: the record tables of daemon/records.h and the checkpoint
 * counters of common/ckstate.h. The writers give the exact bytes the logs
 * and checkpoints have always had (literal lines below); the strict reader
 * names the field it refuses; the lenient one reads what it can of a damaged
 * line and leaves out a torn last line. */
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

#include "common/ckstate.h"
#include "daemon/records.h"

static void test_step_line_bytes(void **state)
{
    (void)state;
    StepLine l;
    memset(&l, 0, sizeof l);
    l.r.step = 12, l.r.epoch = 2, l.r.loss = 2.5, l.r.grad_norm = NAN, l.r.clip_coef = 0.1;
    l.r.clipped = 1, l.r.lr = 0.01, l.r.tokens = 4096, l.r.step_ms = 3.25, l.r.skipped = 0, l.r.seq = 14;
    l.time = 1700000000.125;
    char buf[1024];
    size_t n = rec_format(&rec_step, &l, buf, sizeof buf);
    assert_int_equal(n, strlen(buf));
    assert_string_equal(buf, "{\"step\":12,\"epoch\":2,\"loss\":2.5,\"grad_norm\":null,"
                             "\"clip_coef\":0.10000000000000001,\"clipped\":true,\"lr\":0.01,\"tokens\":4096,"
                             "\"step_ms\":3.250,\"skipped\":false,\"seq\":14,\"time\":1700000000.125");
    /* a buffer too small: cut, and the length wanted says so */
    char small[16];
    assert_true(rec_format(&rec_step, &l, small, sizeof small) >= sizeof small);
}

static void test_event_and_epoch_bytes(void **state)
{
    (void)state;
    EventLine e = {7, 6, 1, "loss_spike", 9.5, 2, 0.25, 4, "rollback", 3};
    char buf[1024];
    rec_format(&rec_event, &e, buf, sizeof buf);
    assert_string_equal(buf, "{\"seq\":7,\"step\":6,\"epoch\":1,\"kind\":\"loss_spike\",\"value\":9.5,"
                             "\"baseline\":2,\"spread\":0.25,\"threshold\":4,\"action\":\"rollback\","
                             "\"rollback_to\":3");
    e.rollback_to = -1; /* none: not written */
    rec_format(&rec_event, &e, buf, sizeof buf);
    assert_null(strstr(buf, "rollback_to"));
    EpochLine p;
    memset(&p, 0, sizeof p);
    rec_clear(&rec_epoch, &p);
    p.epoch = 1, p.s.steps = 10, p.s.clip_rate = 0.5, p.s.seconds = 1.5, p.time = 2;
    rec_format(&rec_epoch, &p, buf, sizeof buf);
    assert_string_equal(buf, "{\"epoch\":1,\"steps\":10,\"train_loss\":null,\"clip_rate\":0.5,\"clipped_steps\":0,"
                             "\"skipped_steps\":0,\"grad_norm_p50\":null,\"grad_norm_p90\":null,"
                             "\"grad_norm_max\":null,\"val_loss\":null,\"val_ppl\":null,\"val_tokens\":0,"
                             "\"lr\":null,\"tokens_per_s\":null,\"seconds\":1.500,\"time\":2.000");
    p.clip_state = "active";
    rec_format(&rec_epoch, &p, buf, sizeof buf);
    assert_non_null(strstr(buf, ",\"seconds\":1.500,\"clip_state\":\"active\",\"time\":2.000"));
}

/* sessions.jsonl: the lines a start, resume, end and crash have always had. */
static void test_session_line_bytes(void **state)
{
    (void)state;
    char buf[512];
    SessionLine start = {"start", 0, 0, 1, 2, NULL, NULL, 1700000000.5};
    rec_format(&rec_session, &start, buf, sizeof buf);
    assert_string_equal(buf, "{\"kind\":\"start\",\"seq\":0,\"step\":0,\"epoch\":1,\"workers\":2,"
                             "\"time\":1700000000.500");
    SessionLine resume = {"resume", 200, 190, 2, 3, "/tmp/run/checkpoints/step-00000190.safetensors", NULL, 2};
    rec_format(&rec_session, &resume, buf, sizeof buf);
    assert_string_equal(buf, "{\"kind\":\"resume\",\"seq\":200,\"step\":190,\"epoch\":2,\"workers\":3,"
                             "\"from\":\"/tmp/run/checkpoints/step-00000190.safetensors\",\"time\":2.000");
    SessionLine end = {"end", 300, 290, 3, -1, NULL, "early_stop", 3.25};
    rec_format(&rec_session, &end, buf, sizeof buf);
    assert_string_equal(buf, "{\"kind\":\"end\",\"seq\":300,\"step\":290,\"epoch\":3,\"how\":\"early_stop\","
                             "\"time\":3.250");
    SessionLine crash = {"crash", 216, 216, 2, -1, NULL, NULL, 4};
    rec_format(&rec_session, &crash, buf, sizeof buf);
    assert_string_equal(buf, "{\"kind\":\"crash\",\"seq\":216,\"step\":216,\"epoch\":2,\"time\":4.000");
}

/* A resume line written, then read back strictly: every field as written. */
static void test_session_round_trip(void **state)
{
    (void)state;
    SessionLine a = {"resume", 9007199254740992, 12, 10000000, 64, "/r/ck.safetensors", "done", 0.125}, b;
    char buf[512], err[256];
    rec_format(&rec_session, &a, buf, sizeof buf);
    strcat(buf, "}");
    json_t *o = json_loads(buf, 0, NULL);
    assert_non_null(o);
    rec_clear(&rec_session, &b);
    assert_int_equal(rec_parse(&rec_session, &b, o, err, sizeof err), 0);
    assert_string_equal(b.kind, "resume");
    assert_int_equal(b.seq, 9007199254740992);
    assert_int_equal(b.step, 12);
    assert_int_equal(b.epoch, 10000000);
    assert_int_equal(b.workers, 64);
    assert_string_equal(b.from, "/r/ck.safetensors");
    assert_string_equal(b.how, "done");
    assert_true(b.time == 0.125);
    json_decref(o);
}

/* tensors.jsonl: the fixed fields runlog_tensors writes before "norms", read back. */
static void test_tensor_line(void **state)
{
    (void)state;
    TensorLine a = {40, 38, 2}, b;
    char buf[256], err[256];
    rec_format(&rec_tensor, &a, buf, sizeof buf);
    assert_string_equal(buf, "{\"seq\":40,\"step\":38,\"epoch\":2");
    strcat(buf, ",\"norms\":{\"embed\":1.5},\"time\":1.000}");
    json_t *o = json_loads(buf, 0, NULL);
    assert_non_null(o);
    rec_clear(&rec_tensor, &b);
    assert_int_equal(rec_parse(&rec_tensor, &b, o, err, sizeof err), 0);
    json_decref(o);
    assert_int_equal(b.seq, 40);
    assert_int_equal(b.step, 38);
    assert_int_equal(b.epoch, 2);
}

/* What the writer writes, the reader reads back bit for bit. */
static void test_round_trip(void **state)
{
    (void)state;
    StepLine a, b;
    memset(&a, 0, sizeof a);
    a.r.step = 5, a.r.epoch = 1, a.r.loss = 1.0 / 3, a.r.grad_norm = 1e-300, a.r.clip_coef = NAN;
    a.r.clipped = 0, a.r.lr = 3e-4, a.r.tokens = 1 << 20, a.r.step_ms = 1.5, a.r.skipped = 1, a.r.seq = 9;
    a.time = 1.25;
    char buf[1024], err[256];
    rec_format(&rec_step, &a, buf, sizeof buf);
    strcat(buf, "}");
    json_t *o = json_loads(buf, 0, NULL);
    assert_non_null(o);
    rec_clear(&rec_step, &b);
    assert_int_equal(rec_parse(&rec_step, &b, o, err, sizeof err), 0);
    json_decref(o);
    assert_int_equal(b.r.step, 5);
    assert_memory_equal(&b.r.loss, &a.r.loss, sizeof(double));
    assert_memory_equal(&b.r.grad_norm, &a.r.grad_norm, sizeof(double));
    assert_true(isnan(b.r.clip_coef));
    assert_int_equal(b.r.skipped, 1);
    assert_int_equal(b.r.clipped, 0);
    assert_int_equal(b.r.tokens, 1 << 20);
    assert_int_equal(b.r.seq, 9);
    assert_true(b.time == 1.25);
}

static void parse_err(const RecSchema *s, const char *line, const char *want)
{
    union { StepLine st; EpochLine ep; EventLine ev; SessionLine se; TensorLine te; } rec;
    char err[256] = "";
    json_t *o = json_loads(line, 0, NULL);
    assert_non_null(o);
    rec_clear(s, &rec);
    int rc = rec_parse(s, &rec, o, err, sizeof err);
    json_decref(o);
    if (rc == 0 || strcmp(err, want)) fail_msg("%s: rc %d, '%s', expected '%s'", line, rc, err, want);
}

static void test_strict_errors(void **state)
{
    (void)state;
    parse_err(&rec_step, "{\"step\":1,\"epoch\":1,\"grad_norm\":1}", "loss: missing");
    parse_err(&rec_step, "{\"step\":1,\"epoch\":1,\"loss\":\"x\",\"grad_norm\":1}", "loss: expected a number or null");
    parse_err(&rec_step, "{\"step\":1,\"epoch\":1,\"loss\":1,\"grad_norm\":1,\"clipped\":1}",
              "clipped: expected true or false");
    parse_err(&rec_step, "{\"step\":1.5,\"epoch\":1,\"loss\":1,\"grad_norm\":1}", "step: expected an integer");
    parse_err(&rec_step, "{\"step\":1,\"epoch\":10000001,\"loss\":1,\"grad_norm\":1}",
              "epoch: 10000001 out of range [0, 10000000]");
    parse_err(&rec_step, "{\"step\":1,\"epoch\":1,\"loss\":1,\"grad_norm\":1,\"seq\":0}", "seq: 0 out of range [1, 9007199254740992]");
    parse_err(&rec_epoch, "{\"epoch\":1}", "clip_rate: missing");
    parse_err(&rec_epoch, "{\"epoch\":1,\"clip_rate\":0,\"clip_state\":3}", "clip_state: expected a string");
    parse_err(&rec_event, "{\"seq\":1,\"step\":1}", "kind: missing");
    parse_err(&rec_session, "{\"seq\":0,\"step\":0}", "kind: missing");
    parse_err(&rec_session, "{\"kind\":\"end\",\"step\":0}", "seq: missing");
    parse_err(&rec_session, "{\"kind\":\"end\",\"seq\":0}", "step: missing");
    parse_err(&rec_session, "{\"kind\":1,\"seq\":0,\"step\":0}", "kind: expected a string");
    parse_err(&rec_session, "{\"kind\":\"end\",\"seq\":-1,\"step\":0}", "seq: -1 out of range [0, 9007199254740992]");
    parse_err(&rec_session, "{\"kind\":\"start\",\"seq\":0,\"step\":0,\"workers\":-2}",
              "workers: -2 out of range [0, 2147483647]");
    parse_err(&rec_session, "{\"kind\":\"end\",\"seq\":0,\"step\":0,\"how\":true}", "how: expected a string");
    parse_err(&rec_session, "{\"kind\":\"end\",\"seq\":0,\"step\":0,\"time\":\"now\"}",
              "time: expected a number or null");
    parse_err(&rec_tensor, "{\"step\":1,\"norms\":{}}", "seq: missing");
    parse_err(&rec_tensor, "{\"seq\":\"1\",\"norms\":{}}", "seq: expected an integer");
    parse_err(&rec_tensor, "{\"seq\":1,\"step\":-3,\"norms\":{}}", "step: -3 out of range [0, 9007199254740992]");
}

static void collect(const void *rec, json_t *o, void *ctx)
{
    const StepLine *l = rec;
    int64_t *got = ctx;
    (void)o;
    got[got[0] + 1] = l->r.tokens;
    got[0]++;
}

/* Lenient: a field that does not read keeps its cleared value; not JSON and a torn last line are left out. */
static void test_lenient_lines(void **state)
{
    (void)state;
    char path[] = "/tmp/clipd-records-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("{\"step\":1,\"epoch\":1,\"loss\":1,\"grad_norm\":1,\"tokens\":64}\n"
          "{\"seq\":2,\"tokens\":1e300}\n"
          "not json\n"
          "{\"step\":3,\"epoch\":1,\"loss\":1,\"grad_norm\":1,\"tokens\":32}\n"
          "{\"step\":4,\"epoch\":1,\"loss\":1,\"grad_norm\":1,\"tokens\":16", f);
    fclose(f);
    int64_t got[8] = {0};
    StepLine l;
    rec_each_line(path, &rec_step, &l, collect, got);
    unlink(path);
    assert_int_equal(got[0], 3);
    assert_int_equal(got[1], 64);
    assert_int_equal(got[2], 0);
    assert_int_equal(got[3], 32);
    rec_each_line("/nonexistent/steps.jsonl", &rec_step, &l, collect, got);
    assert_int_equal(got[0], 3);
}

/* The checkpoint's counters: the keys, order and formats worker 0 has always written. */
static void test_ckstate_meta(void **state)
{
    (void)state;
    CkState s = {.step = 40, .seq = 42, .epoch = 2, .epoch_step = 20, .epoch_seq0 = 22, .world_size = 2,
                 .batch_per_worker = 4, .opt_t = 40, .lr_scale = 0.5, .rollbacks = 1, .nonfinite = 0,
                 .config_hash = 0xabcdefULL, .sched = {INFINITY, 0.3 * 0.3, 0, 1}, .state_hash = 1,
                 .epoch_done = 0, .run = "demo", .seq_len = 32};
    CkStateMeta m;
    int n = ckstate_meta(&s, &m);
    static const char *const want[][2] = {
        {"step", "40"}, {"seq", "42"}, {"epoch", "2"}, {"epoch_step", "20"}, {"epoch_seq0", "22"},
        {"world_size", "2"}, {"batch_per_worker", "4"}, {"opt_t", "40"}, {"lr_scale", "0x1p-1"},
        {"rollbacks", "1"}, {"nonfinite", "0"}, {"config_hash", "0000000000abcdef"},
        {"sched", "inf,0x1.70a3d70a3d70ap-4,0x0p+0,0x1p+0"}, {"state_hash", "0000000000000001"},
        {"epoch_done", "0"}, {"run", "demo"}, {"seq_len", "32"}};
    assert_int_equal(n, (int)(sizeof want / sizeof *want));
    for (int i = 0; i < n; i++) {
        assert_string_equal(m.meta[i].key, want[i][0]);
        assert_string_equal(m.meta[i].value, want[i][1]);
    }
    /* four long %a doubles (55 bytes) are written whole: a 48-byte buffer once cut them */
    s.sched[0] = 1.0 / 3;
    ckstate_meta(&s, &m);
    assert_string_equal(m.meta[12].value, "0x1.5555555555555p-2,0x1.70a3d70a3d70ap-4,0x0p+0,0x1p+0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_line_bytes),   cmocka_unit_test(test_event_and_epoch_bytes),
        cmocka_unit_test(test_session_line_bytes), cmocka_unit_test(test_session_round_trip),
        cmocka_unit_test(test_tensor_line),
        cmocka_unit_test(test_round_trip),        cmocka_unit_test(test_strict_errors),
        cmocka_unit_test(test_lenient_lines),     cmocka_unit_test(test_ckstate_meta),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
