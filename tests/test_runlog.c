/* Unit tests of the run logs (daemon/runlog.c) when the disk fills: a file
 * size limit (RLIMIT_FSIZE, the same short write then error a full disk
 * gives) makes lines fail part way; every line left in the file must be
 * whole, and writing must go on once there is room again. Also json_escape. */
#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/testutil.h"

#include "daemon/runlog.h"

typedef struct {
    TmpDir t;
    RunLog log;
} Fx;

static int setup(void **state)
{
    Fx *f = calloc(1, sizeof *f);
    if (!f) return -1;
    if (tmpdir_make(&f->t, "runlog") != 0) return free(f), -1;
    char err[512];
    if (runlog_open(&f->log, f->t.dir, NULL, err, sizeof err) != 0) return printf("%s\n", err), free(f), -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fx *f = *state;
    runlog_close(&f->log);
    tmpdir_remove(&f->t);
    free(f);
    return 0;
}

static long file_size(const Fx *f, const char *name)
{
    char p[128];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", f->t.dir, name);
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

/* The seq of every line of steps.jsonl, each checked to be one whole JSON
 * object ending in a newline; returns the count. */
static int whole_lines(const Fx *f, long long *seq, int max)
{
    char p[128], *line = NULL;
    size_t cap = 0;
    int n = 0;
    snprintf(p, sizeof p, "%s/steps.jsonl", f->t.dir);
    FILE *fp = fopen(p, "r");
    assert_non_null(fp);
    while (getline(&line, &cap, fp) > 0) {
        assert_non_null(strchr(line, '\n'));
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!o) printf("not a whole line: %s", line);
        assert_non_null(o);
        assert_true(n < max);
        seq[n++] = json_integer_value(json_object_get(o, "seq"));
        json_decref(o);
    }
    free(line);
    fclose(fp);
    return n;
}

static int step(Fx *f, long long seq)
{
    StepRecord r;
    memset(&r, 0, sizeof r);
    r.step = r.seq = seq, r.epoch = 1, r.loss = 2.5, r.grad_norm = 0.125, r.clip_coef = 1, r.lr = 1e-3;
    return runlog_step(&f->log, &r, 1.0);
}

static void test_full_disk_keeps_lines_whole(void **state)
{
    Fx *f = *state;
    struct rlimit old, lim;
    signal(SIGXFSZ, SIG_IGN); /* the write fails with EFBIG instead */
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    for (long long s = 1; s <= 10; s++) assert_int_equal(step(f, s), 0);
    long full = file_size(f, "steps.jsonl") + 300; /* room for a line and a bit */
    lim = old;
    lim.rlim_cur = (rlim_t)full;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int failed = 0, lost = 0;
    for (long long s = 11; s <= 30; s++) {
        int rc = step(f, s);
        if (rc != 0) {
            assert_int_equal(errno, EFBIG);
            lost++;
        }
        failed |= rc != 0;
        assert_true(file_size(f, "steps.jsonl") <= full);
    }
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0); /* room again */
    assert_true(failed);
    for (long long s = 31; s <= 35; s++) assert_int_equal(step(f, s), 0);
    long long seq[64];
    int n = whole_lines(f, seq, 64);
    printf("35 lines written, %d lost while the file could not grow, %d in the file, all whole\n", lost, n);
    assert_int_equal(n, 35 - lost);
    for (int i = 1; i < n; i++) assert_true(seq[i] > seq[i - 1]);
    assert_int_equal(seq[n - 1], 35);
    signal(SIGXFSZ, SIG_DFL);
}

/* A log that cannot be opened again (SIGHUP into a removed directory) fails
 * each line with an error, and works again after a reopen that succeeds. */
static void test_reopen_failure_then_recovery(void **state)
{
    Fx *f = *state;
    char err[512], moved[80];
    assert_int_equal(step(f, 1), 0);
    snprintf(moved, sizeof moved, "%s.moved", f->t.dir);
    assert_int_equal(rename(f->t.dir, moved), 0);
    assert_int_equal(runlog_reopen(&f->log, err, sizeof err), -1);
    assert_non_null(strstr(err, "run.dir: cannot open"));
    assert_int_equal(step(f, 2), -1);
    assert_int_equal(rename(moved, f->t.dir), 0);
    assert_int_equal(runlog_reopen(&f->log, err, sizeof err), 0);
    assert_int_equal(step(f, 3), 0);
    long long seq[8];
    assert_int_equal(whole_lines(f, seq, 8), 2);
    assert_true(seq[0] == 1 && seq[1] == 3);
}

/* config.yaml that cannot be written: one line naming the key, the file and why. */
static void test_config_write_error(void **state)
{
    (void)state;
    RunLog l;
    Config c;
    char err[512];
    memset(&l, 0, sizeof l);
    cfg_defaults(&c);
    snprintf(l.dir, sizeof l.dir, "/nonexistent-clipd-test/run");
    assert_int_equal(runlog_config(&l, &c, err, sizeof err), -1);
    printf("%s\n", err);
    assert_string_equal(err, "run.dir: cannot write /nonexistent-clipd-test/run/config.yaml: No such file or directory");
}

static void test_json_escape(void **state)
{
    (void)state;
    char b[64];
    assert_string_equal(json_escape(b, sizeof b, "a\"b\\c\nd\x01"), "a\\\"b\\\\c\\u000ad\\u0001");
    assert_true(strlen(json_escape(b, 12, "abcdefghijkl")) < 12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_full_disk_keeps_lines_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_failure_then_recovery, setup, teardown),
        cmocka_unit_test(test_config_write_error),
        cmocka_unit_test(test_json_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
