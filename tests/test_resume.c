/* Unit tests of the coordinator's resume checks (daemon/resume.c) on
 * crafted checkpoints: the counters a resumed run takes from __metadata__
 * must describe a position a run can be at, else one line names the key
 * (before, a step of 2^63-1 reached the coordinator's next_step = step + 1, a
 * signed overflow). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/ckdir.h"
#include "common/ckpt.h"
#include "daemon/resume.h"
#include "tests/testutil.h"

typedef struct {
    TmpDir t;
    Config c;
} Fix;

static int setup(void **state)
{
    Fix *f = calloc(1, sizeof *f);
    if (!f) return -1;
    if (tmpdir_make(&f->t, "resume") != 0) return free(f), -1;
    cfg_defaults(&f->c);
    snprintf(f->c.run_dir, sizeof f->c.run_dir, "%s", f->t.dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fix *f = *state;
    tmpdir_remove(&f->t);
    free(f);
    return 0;
}

/* Write a checkpoint whose metadata is a good position but for key=value
 * and key2=value2 (NULL: all good); resume_find for 2 workers must give
 * want (0 or -1). Returns err. */
static const char *try_resume2(Fix *f, const char *key, const char *value, const char *key2,
                               const char *value2, int want)
{
    static char err[1024];
    const char *keys[] = {"step", "seq", "epoch", "epoch_step", "epoch_done", "epoch_seq0",
                          "world_size", "batch_per_worker", "opt_t", "rollbacks", "nonfinite"};
    const char *vals[] = {"30", "35", "2", "10", "0", "25", "2", "4", "28", "1", "2"};
    CkMeta m[11];
    char b[4];
    snprintf(b, sizeof b, "%d", f->c.data_batch_per_worker);
    vals[7] = b;
    for (int i = 0; i < 11; i++)
        m[i] = (CkMeta){keys[i], key && !strcmp(key, keys[i])     ? value
                                 : key2 && !strcmp(key2, keys[i]) ? value2 : vals[i]};
    float w[4] = {1, 2, 3, 4};
    CkTensor t[] = {{"param.head.weight", CK_F32, w, 2, {2, 2}}};
    char path[512];
    if (ckdir_write(f->t.dir, 30, t, 1, m, 11, 3, path, sizeof path, err, sizeof err) != 0)
        fail_msg("ckdir_write: %s", err);
    Resume r;
    err[0] = 0;
    int rc = resume_find(&r, &f->c, path, 2, err, sizeof err);
    if (rc != want) fail_msg("%s=%s: resume_find %d, wanted %d (%s)", key ? key : "-", value ? value : "", rc, want, err);
    return err;
}

static const char *try_resume(Fix *f, const char *key, const char *value, int want)
{
    return try_resume2(f, key, value, NULL, NULL, want);
}

static void expect_key(Fix *f, const char *key, const char *value)
{
    const char *err = try_resume(f, key, value, -1);
    char want[64];
    snprintf(want, sizeof want, "__metadata__.%s out of range", key);
    if (!strstr(err, want)) fail_msg("%s=%s: '%s' does not say '%s'", key, value, err, want);
    assert_null(strchr(err, '\n'));
}

static void test_counters(void **state)
{
    Fix *f = *state;
    /* A good position gets past the counters to the model check (this
     * one-tensor file is no model of the config: a head of another shape). */
    const char *err = try_resume(f, NULL, NULL, -1);
    assert_non_null(strstr(err, "tensor 'param.head.weight': F32 [2, 2], this config needs F32"));
    expect_key(f, "step", "9223372036854775807");
    expect_key(f, "seq", "9223372036854775807");
    expect_key(f, "seq", "9007199254740992"); /* 2^53 */
    expect_key(f, "seq", "-1");
    expect_key(f, "step", "-5");
    expect_key(f, "step", "36"); /* > seq */
    expect_key(f, "epoch_seq0", "36");
    expect_key(f, "epoch_seq0", "-1");
    expect_key(f, "epoch_done", "2");
    expect_key(f, "opt_t", "-1");
    expect_key(f, "opt_t", "9223372036854775807");
    expect_key(f, "rollbacks", "2147483648");
    expect_key(f, "rollbacks", "-1");
    expect_key(f, "nonfinite", "-3");
    expect_key(f, "epoch_step", "31"); /* > step */
}

/* Elastic resume: another worker count at the same global batch gets past
 * the check (to the layout check: this one-tensor file is no model); any
 * other product, or counts out of range, is refused naming the global batch. */
static void test_global_batch(void **state)
{
    Fix *f = *state;
    int B = f->c.data_batch_per_worker; /* this job: 2 workers x B */
    char b2[16], bh[16];
    snprintf(b2, sizeof b2, "%d", 2 * B);
    snprintf(bh, sizeof bh, "%d", B / 2);
    const char *e1 = try_resume2(f, "world_size", "1", "batch_per_worker", b2, -1);
    if (!strstr(e1, "tensor 'param.")) fail_msg("1 x 2B: '%s'", e1);
    if (B % 2 == 0) {
        const char *e2 = try_resume2(f, "world_size", "4", "batch_per_worker", bh, -1);
        if (!strstr(e2, "tensor 'param.")) fail_msg("4 x B/2: '%s'", e2);
    }
    const char *bad[][2] = {{"3", NULL}, {"1", NULL}, {"0", NULL}, {"-2", NULL},
                            {"4294967296", "0"}, {"2147483648", "1"}, {"1", "-8"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *err = try_resume2(f, "world_size", bad[i][0], bad[i][1] ? "batch_per_worker" : NULL,
                                      bad[i][1], -1);
        if (!strstr(err, "resume with the same global batch"))
            fail_msg("world_size %s, batch %s: '%s'", bad[i][0], bad[i][1] ? bad[i][1] : "B", err);
    }
}

/* The kept log lines are read back as they are: a line with a missing or
 * absurd number (a hand-edited or damaged file) is counted without one. */
static void test_replay_hostile_lines(void **state)
{
    Fix *f = *state;
    char path[128];
    snprintf(path, sizeof path, "%s/steps.jsonl", f->t.dir);
    FILE *o = fopen(path, "w");
    assert_non_null(o);
    fputs("{\"seq\":26,\"loss\":2.5,\"grad_norm\":1,\"clipped\":true,\"skipped\":false,\"tokens\":1e300}\n"
          "{\"seq\":27,\"loss\":2.5,\"grad_norm\":1,\"clipped\":false,\"skipped\":false}\n"
          "{\"seq\":28,\"loss\":2.5,\"grad_norm\":1,\"tokens\":-1e30}\n"
          "{\"seq\":29,\"tokens\":64}\n"
          "not json\n", o);
    fclose(o);
    Resume r = {.step = 30, .seq = 29, .epoch_seq0 = 25, .epoch = 2, .epoch_step = 4};
    EpochStats st;
    EpochLine ep[4];
    int done, resumed;
    int64_t next;
    assert_int_equal(stats_init(&st, 100), 0);
    assert_int_equal(resume_coordinator(&r, &f->c, &st, ep, &done, &next, &resumed, 0), 2);
    assert_int_equal(next, 31);
    assert_int_equal(st.steps, 4);
    assert_int_equal(st.tokens, 64);
    stats_free(&st);
}

static void put_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
}

/* A fresh start into a run dir: empty files and files not clipd's are no
 * run; a log with a line, a checkpoint (also one set aside) or the final
 * weights are, unless run.overwrite; resume_clear_run removes only clipd's. */
static void test_fresh_start(void **state)
{
    Fix *f = *state;
    char err[1024], ck[512];
    assert_int_equal(resume_check_fresh(&f->c, err, sizeof err), 0);
    put_file(f->t.dir, "steps.jsonl", "");
    put_file(f->t.dir, "notes.txt", "mine\n");
    assert_int_equal(resume_check_fresh(&f->c, err, sizeof err), 0);
    snprintf(ck, sizeof ck, "%s/checkpoints", f->t.dir);
    assert_int_equal(mkdir(ck, 0755), 0);
    put_file(ck, "step-00000008.safetensors.abandoned", "x");
    assert_int_equal(resume_check_fresh(&f->c, err, sizeof err), -1);
    assert_non_null(strstr(err, "step-00000008.safetensors.abandoned"));
    assert_non_null(strstr(err, "--resume latest"));
    assert_non_null(strstr(err, "run.overwrite: true"));
    f->c.run_overwrite = 1;
    assert_int_equal(resume_check_fresh(&f->c, err, sizeof err), 0);
    put_file(ck, "step-00000010.safetensors", "x");
    put_file(ck, "other.safetensors", "x");
    put_file(f->t.dir, "final.safetensors", "x");
    assert_int_equal(resume_clear_run(&f->c, err, sizeof err), 0);
    f->c.run_overwrite = 0;
    assert_int_equal(resume_check_fresh(&f->c, err, sizeof err), 0); /* nothing of a run left */
    char path[600];
    snprintf(path, sizeof path, "%s/other.safetensors", ck);
    assert_int_equal(access(path, F_OK), 0); /* not a name clipd writes: kept */
    snprintf(path, sizeof path, "%s/notes.txt", f->t.dir);
    assert_int_equal(access(path, F_OK), 0);
    put_file(f->t.dir, "epochs.jsonl", "{}\n");
    assert_int_equal(resume_check_fresh(&f->c, err, sizeof err), -1);
    assert_non_null(strstr(err, "epochs.jsonl"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_global_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_hostile_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fresh_start, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
