/* Unit tests of checkpoints (common/ckpt.c) and st_write: round trips,
 * atomic writing, keep-K, stale temporary files, a crash at each point of a
 * write (in a child process that kills itself), and a verifying reader that
 * rejects every truncation, every single-bit flip and each kind of malformed
 * header with a message naming the file and the fault. Each test works in
 * its own mkdtemp directory, removed in teardown. */
#include <dirent.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/testutil.h"

#include "common/ckdir.h"
#include "common/ckpt.h"
#include "common/fsutil.h"
#include "common/hash.h"
#include "worker/safetensors.h"

typedef TmpDir Fx; /* path: x.safetensors in dir, a scratch file */

static int setup(void **state)
{
    if (tmpdir_setup(state) != 0) return -1;
    tmpdir_path(*state, "x.safetensors");
    return 0;
}

/* ---- helpers --------------------------------------------------------- */

static unsigned char *slurp(const char *path, size_t *n)
{
    unsigned char *b = (unsigned char *)file_slurp(path, n);
    assert_non_null(b);
    return b;
}

static void spit(const char *path, const void *b, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static uint64_t le64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

/* The sample: F32 (3, 3), U64 (3) at an offset that is not 8-aligned, I32 (5). */
static float s_w[9] = {1.5f, -2.25f, 3, 4, 5, 6, 7, 8, -0.0f};
static uint64_t s_rng[3] = {0x0123456789abcdefULL, 0, UINT64_MAX};
static int32_t s_cur[5] = {-1, 0, 1, INT32_MAX, INT32_MIN};

static const CkTensor s_tensors[] = {
    {"param.w", CK_F32, s_w, 2, {3, 3}},
    {"rng.state", CK_U64, s_rng, 1, {3, 0}},
    {"data.cursor", CK_I32, s_cur, 1, {5, 0}},
};
static const CkMeta s_meta[] = {
    {"step", "100"},
    {"note", "quote \" backslash \\ newline \n tab \t slash / unicode \xc3\xa9"},
    {"we\"ird\\key", "v"},
};

static void write_sample(const Fx *f, long long step, int keep, char *path, size_t len)
{
    char err[512];
    int rc = ckdir_write(f->dir, step, s_tensors, 3, s_meta, 3, keep, path, len, err, sizeof err);
    if (rc) printf("ckdir_write: %s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(err, "");
}

/* Writes the sample checkpoint and returns its bytes; *hdr_end = 8 + N. */
static unsigned char *sample_bytes(const Fx *f, size_t *n, size_t *hdr_end)
{
    char path[512];
    write_sample(f, 1, 1, path, sizeof path);
    unsigned char *b = slurp(path, n);
    *hdr_end = 8 + (size_t)le64(b);
    return b;
}

/* ckpt_read must fail on path with a message naming the file and containing needle. */
static void expect_reject(const char *path, const char *needle)
{
    Ckpt c;
    char err[1024] = "";
    int rc = ckpt_read(&c, path, err, sizeof err);
    if (rc == 0 || !strstr(err, needle) || strncmp(err, path, strlen(path)) != 0)
        printf("expected rejection containing '%s', got rc %d: %s\n", needle, rc, err);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, needle));
    assert_memory_equal(err, path, strlen(path));
    assert_null(c.buf); /* emptied on failure */
    ckpt_free(&c);
}

/* Writes 8-byte length, json padded with spaces to a multiple of 8, data. */
static void craft(const char *path, const char *json, const void *data, size_t dlen)
{
    size_t n = strlen(json), padded = (n + 7) / 8 * 8;
    unsigned char *b = calloc(8 + padded + dlen + 1, 1);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(b + 8, json, n);
    memset(b + 8 + n, ' ', padded - n);
    if (dlen) memcpy(b + 8 + padded, data, dlen);
    spit(path, b, 8 + padded + dlen);
    free(b);
}

static int count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d)))
        if (!strncmp(de->d_name, prefix, strlen(prefix))) n++;
    closedir(d);
    return n;
}

/* ---- tests ----------------------------------------------------------- */

static void test_round_trip(void **state)
{
    Fx *f = *state;
    char path[512], want[512], err[512];
    write_sample(f, 100, 3, path, sizeof path);
    ckdir_path(want, sizeof want, f->dir, 100);
    assert_string_equal(path, want);
    assert_non_null(strstr(path, "/step-00000100.safetensors"));

    Ckpt c;
    int rc = ckpt_read(&c, path, err, sizeof err);
    if (rc) printf("%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(c.n, 3);
    for (int i = 0; i < 3; i++) { /* file order is the order written */
        const CkEntry *e = ckpt_find(&c, s_tensors[i].name);
        assert_ptr_equal(e, &c.e[i]);
        assert_int_equal(e->dtype, s_tensors[i].dtype);
        assert_int_equal(e->ndim, s_tensors[i].ndim);
        assert_int_equal(e->shape[0], s_tensors[i].shape[0]);
    }
    const CkEntry *w = ckpt_find(&c, "param.w");
    assert_int_equal(w->shape[1], 3);
    assert_int_equal(w->nbytes, sizeof s_w);
    assert_memory_equal(ckpt_data(&c, w), s_w, sizeof s_w); /* -0.0f and all bits kept */
    float fw[9];
    uint64_t rng[3];
    int32_t cur[5];
    assert_int_equal(ckpt_get(&c, "param.w", CK_F32, fw, 9, err, sizeof err), 0);
    assert_int_equal(ckpt_get(&c, "rng.state", CK_U64, rng, 3, err, sizeof err), 0);
    assert_int_equal(ckpt_get(&c, "data.cursor", CK_I32, cur, 5, err, sizeof err), 0);
    assert_memory_equal(fw, s_w, sizeof s_w);
    assert_memory_equal(rng, s_rng, sizeof s_rng);
    assert_memory_equal(cur, s_cur, sizeof s_cur);
    for (int i = 0; i < 3; i++) assert_string_equal(ckpt_meta(&c, s_meta[i].key), s_meta[i].value);
    assert_string_equal(ckpt_meta(&c, "format"), CK_FORMAT);
    assert_int_equal(strlen(ckpt_meta(&c, "checksum")), 16);
    assert_null(ckpt_meta(&c, "absent"));
    assert_null(ckpt_find(&c, "absent"));

    /* ckpt_get says what is wrong */
    assert_int_equal(ckpt_get(&c, "param.w", CK_U64, rng, 3, err, sizeof err), -1);
    assert_non_null(strstr(err, "is F32, expected U64"));
    assert_int_equal(ckpt_get(&c, "param.w", CK_F32, fw, 8, err, sizeof err), -1);
    assert_non_null(strstr(err, "has 9 elements, expected 8"));
    assert_int_equal(ckpt_get(&c, "nope", CK_F32, fw, 9, err, sizeof err), -1);
    assert_non_null(strstr(err, "'nope' is missing"));
    assert_memory_equal(err, path, strlen(path));
    ckpt_free(&c);
    ckpt_free(&c); /* harmless twice */
}

/* Empty tensors and no tensors at all are valid files. */
static void test_round_trip_empty(void **state)
{
    Fx *f = *state;
    char err[512];
    CkTensor t[] = {{"a", CK_F32, NULL, 2, {0, 4}}, {"b", CK_I32, s_cur, 1, {1, 0}}, {"c", CK_U64, NULL, 1, {0, 0}}};
    assert_int_equal(ckpt_write_file(f->path, t, 3, NULL, 0, err, sizeof err), 0);
    Ckpt c;
    assert_int_equal(ckpt_read(&c, f->path, err, sizeof err), 0);
    assert_int_equal(c.n, 3);
    assert_int_equal(ckpt_find(&c, "a")->nbytes, 0);
    assert_int_equal(ckpt_find(&c, "a")->shape[1], 4);
    assert_int_equal(*(const int32_t *)ckpt_data(&c, ckpt_find(&c, "b")), s_cur[0]);
    ckpt_free(&c);
    assert_int_equal(ckpt_write_file(f->path, NULL, 0, NULL, 0, err, sizeof err), 0);
    assert_int_equal(ckpt_read(&c, f->path, err, sizeof err), 0);
    assert_int_equal(c.n, 0);
    ckpt_free(&c);
}

static void test_atomic_no_temp_left(void **state)
{
    Fx *f = *state;
    char path[512], err[512];
    write_sample(f, 7, 1, path, sizeof path);
    assert_int_equal(count_entries(f->dir, "."), 2); /* "." and ".." only: no temporary file */
    assert_int_equal(count_entries(f->dir, "step-"), 1);
    /* st_write (final.safetensors) goes through the same writer */
    float w[6] = {1, 2, 3, 4, 5, 6};
    StTensor t[] = {{"head.weight", w, 2, {2, 3}}};
    StMeta m[] = {{"format", "clipd-weights-1"}, {"step", "7"}};
    char fin[512];
    snprintf(fin, sizeof fin, "%s/final.safetensors", f->dir);
    assert_int_equal(st_write(fin, t, 1, m, 2, err, sizeof err), 0);
    assert_int_equal(count_entries(f->dir, "."), 2);
    Ckpt c;
    assert_int_equal(ckpt_read(&c, fin, err, sizeof err), 0);
    assert_string_equal(ckpt_meta(&c, "format"), "clipd-weights-1");
    assert_int_equal(ckpt_find(&c, "head.weight")->dtype, CK_F32);
    assert_memory_equal(ckpt_data(&c, ckpt_find(&c, "head.weight")), w, sizeof w);
    ckpt_free(&c);
}

static void test_keep_two_of_five(void **state)
{
    Fx *f = *state;
    char path[512], want[512];
    for (int s = 1; s <= 5; s++) write_sample(f, s * 10, 2, path, sizeof path);
    assert_int_equal(count_entries(f->dir, "step-"), 2);
    for (int s = 1; s <= 5; s++) {
        ckdir_path(want, sizeof want, f->dir, s * 10);
        assert_int_equal(access(want, F_OK) == 0, s >= 4);
    }
    /* Never the file just written, even when newer ones exist (resume from an older one). */
    write_sample(f, 5, 1, path, sizeof path);
    assert_int_equal(access(path, F_OK), 0);
    ckdir_path(want, sizeof want, f->dir, 50);
    assert_int_equal(access(want, F_OK), 0);
    assert_int_equal(count_entries(f->dir, "step-"), 2);
}

static void test_stale_temps_removed(void **state)
{
    Fx *f = *state;
    const char *stale[] = {".step-00000003.safetensors.tmp.clipd-default.12345",
                           ".step-00000004.safetensors.tmp.clipd-default.1"};
    const char *theirs[] = {".step-00000009.tmp", ".step-00000003.safetensors.tmp.12345",
                            ".step-00000003.safetensors.tmp.clipd-other.5"};
    char p[512], path[512];
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", f->dir, i < 2 ? stale[i] : theirs[i - 2]);
        spit(p, "torn", 4);
    }
    snprintf(p, sizeof p, "%s/notes.txt", f->dir); /* not ours: left alone */
    spit(p, "x", 1);
    write_sample(f, 10, 2, path, sizeof path);
    /* only this run's own temporaries go; names clipd's writer never makes stay */
    assert_int_equal(count_entries(f->dir, ".step-"), 3);
    assert_int_equal(count_entries(f->dir, ".step-00000003.safetensors.tmp.clipd-default"), 0);
    assert_int_equal(access(p, F_OK), 0);
    assert_int_equal(count_entries(f->dir, "step-"), 1);
}

/* A process killed (SIGKILL) at each point of a checkpoint write, as by
 * debug.ckpt_crash_at: before the rename there is a temporary file and no
 * checkpoint of that step, after it the complete file; the checkpoint before
 * stays valid and is what latest returns until the new one is complete; the
 * temporary file is what fs_remove_stale (run at a job's start) deletes. */
static void test_crash_points(void **state)
{
    Fx *f = *state;
    const int points[] = {CK_CRASH_DURING_WRITE, CK_CRASH_BEFORE_RENAME, CK_CRASH_AFTER_RENAME};
    const char *const tmp_pattern[] = {CKDIR_STEP_GLOB};
    char prev[512], next[512], got[512], err[512], notes[1024];
    for (int i = 0; i < 3; i++) {
        rm_rf(f->dir);
        assert_int_equal(mkdir(f->dir, 0755), 0);
        write_sample(f, 10, 3, prev, sizeof prev);
        fflush(stdout);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            ckpt_test_crash(points[i]);
            ckdir_write(f->dir, 20, s_tensors, 3, s_meta, 3, 3, NULL, 0, err, sizeof err);
            _exit(3); /* not reached: the hook kills the process */
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        ckdir_path(next, sizeof next, f->dir, 20);
        int renamed = points[i] == CK_CRASH_AFTER_RENAME;
        assert_int_equal(access(next, F_OK) == 0, renamed);
        assert_int_equal(count_entries(f->dir, ".step-00000020.safetensors.tmp."), !renamed);
        Ckpt c;
        assert_int_equal(ckpt_read(&c, prev, err, sizeof err), 0);
        ckpt_free(&c);
        assert_int_equal(ckdir_latest(f->dir, got, sizeof got, notes, sizeof notes, err, sizeof err), 0);
        assert_string_equal(got, renamed ? next : prev);
        assert_string_equal(notes, "");
        assert_int_equal(fs_remove_stale(f->dir, tmp_pattern, 1, notes, sizeof notes, NULL, 0), !renamed);
        assert_int_equal(count_entries(f->dir, "."), 2); /* "." and "..": nothing hidden left */
        assert_true(renamed ? !notes[0] : !strncmp(notes, "removed ", 8));
    }
}

/* fs_remove_stale deletes regular files that clipd's temporary naming with
 * this run's tag proves it wrote (.FINAL.tmp.clipd-RUN.PID, FINAL matching a
 * pattern), nothing else. */
static void test_remove_stale_only_matches(void **state)
{
    Fx *f = *state;
    const char *const pats[] = {"final.safetensors", "*.jsonl"};
    fs_set_run_tag("r1");
    const char *names[] = {".final.safetensors.tmp.clipd-r1.77", ".steps.jsonl.tmp.clipd-r1.9", "steps.jsonl",
                           "step-00000001.safetensors", ".step-x.tmpfile", ".final.safetensors.tmp.77",
                           "steps.jsonl.cut.9", ".steps.jsonl.tmp.clipd-r2.9", ".steps.jsonl.tmp.clipd-r1.",
                           ".steps.jsonl.tmp.clipd-r1.9x", ".x.tmp.clipd-r1.3", "a.jsonl.tmp.clipd-r1.3"};
    const int n = (int)(sizeof names / sizeof *names);
    char p[512], notes[2048];
    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s/%s", f->dir, names[i]);
        spit(p, "x", 1);
    }
    snprintf(p, sizeof p, "%s/.d.jsonl.tmp.clipd-r1.5", f->dir); /* a directory is never removed */
    assert_int_equal(mkdir(p, 0755), 0);
    assert_int_equal(fs_remove_stale(f->dir, pats, 2, notes, sizeof notes, NULL, 0), 2);
    assert_int_equal(access(p, F_OK), 0);
    fs_set_run_tag("default");
    for (int i = 0; i < n; i++) {
        char line[600];
        snprintf(p, sizeof p, "%s/%s", f->dir, names[i]);
        snprintf(line, sizeof line, "removed %s\n", p);
        assert_int_equal(access(p, F_OK) == 0, i >= 2);
        assert_int_equal(strstr(notes, line) != NULL, i < 2);
    }
    snprintf(p, sizeof p, "%s/none", f->dir);
    assert_int_equal(fs_remove_stale(p, pats, 2, notes, sizeof notes, NULL, 0), 0); /* no such dir */
}

/* fsutil's errors name the config key the caller gives, never another. */
static void test_fs_errors_name_key(void **state)
{
    Fx *f = *state;
    const char *const pats[] = {"*.jsonl"};
    char file[512], p[600], err[1024], notes[64];
    snprintf(file, sizeof file, "%s/file", f->dir);
    spit(file, "x", 1);
    snprintf(p, sizeof p, "%s/sub", file);
    assert_int_equal(fs_mkdir_p(p, "checkpoint.dir", err, sizeof err), -1);
    printf("%s\n", err);
    assert_int_equal(strncmp(err, "checkpoint.dir: cannot create '", 31), 0);
    assert_null(strstr(err, "run.dir"));
    assert_int_equal(fs_mkdir_p(file, "run.dir", err, sizeof err), -1);
    assert_int_equal(strncmp(err, "run.dir: '", 10), 0);
    assert_non_null(strstr(err, "is not a directory"));
    snprintf(p, sizeof p, "%s/none", f->dir);
    assert_int_equal(fs_probe_writable(p, "checkpoint.dir", err, sizeof err), -1);
    assert_int_equal(strncmp(err, "checkpoint.dir: cannot write in '", 33), 0);
    assert_int_equal(fs_remove_stale(file, pats, 1, notes, sizeof notes, err, sizeof err), 0); /* not a dir */
}

/* The directory is created, parents included. */
static void test_creates_dir(void **state)
{
    Fx *f = *state;
    char dir[256], path[512], err[512];
    snprintf(dir, sizeof dir, "%s/run/checkpoints", f->dir);
    assert_int_equal(ckdir_write(dir, 1, s_tensors, 3, NULL, 0, 1, path, sizeof path, err, sizeof err), 0);
    assert_int_equal(access(path, F_OK), 0);
}

static void test_truncated_every_length(void **state)
{
    Fx *f = *state;
    size_t n, hdr_end;
    unsigned char *b = sample_bytes(f, &n, &hdr_end);
    for (size_t len = 0; len < n; len++) {
        spit(f->path, b, len);
        expect_reject(f->path, len < 8 ? "truncated: " : len < hdr_end ? "truncated: header length says"
                                                                       : "truncated: header says");
    }
    char err[1024];
    Ckpt c;
    spit(f->path, b, n - 4); /* the message in full, once */
    assert_int_equal(ckpt_read(&c, f->path, err, sizeof err), -1);
    printf("%zu truncations rejected, e.g. %s\n", n, err);
    free(b);
}

enum { BY_JSON, BY_LAYOUT, BY_HEADER_SUM, BY_DATA_SUM, BY_KINDS };

/* Flips each bit of the sample's header (length prefix included) or of its
 * data, one at a time: every flipped file must be rejected with a message
 * naming it. counts[BY_*] says which check caught them; returns the flips. */
static size_t flip_every_bit(const Fx *f, int in_header, int counts[BY_KINDS])
{
    char err[1024];
    size_t n, hdr_end;
    unsigned char *b = sample_bytes(f, &n, &hdr_end);
    size_t from = in_header ? 0 : hdr_end, to = in_header ? hdr_end : n;
    memset(counts, 0, BY_KINDS * sizeof *counts);
    for (size_t i = from; i < to; i++)
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (unsigned char)(1u << bit);
            spit(f->path, b, n);
            Ckpt c;
            int rc = ckpt_read(&c, f->path, err, sizeof err);
            if (rc == 0) printf("flip of bit %d at byte %zu passed\n", bit, i);
            assert_int_equal(rc, -1);
            assert_memory_equal(err, f->path, strlen(f->path));
            counts[strstr(err, "not valid JSON") ? BY_JSON
                   : strstr(err, "header checksum mismatch (bit flip or edited header)") ? BY_HEADER_SUM
                   : strstr(err, "checksum mismatch (bit flip or torn write): header says ") ? BY_DATA_SUM
                   : BY_LAYOUT]++;
            b[i] ^= (unsigned char)(1u << bit);
        }
    free(b);
    return (to - from) * 8;
}

static void test_data_bitflips(void **state)
{
    int by[BY_KINDS];
    size_t n = flip_every_bit(*state, 0, by);
    printf("%zu data bit flips rejected, %d by the data checksum\n", n, by[BY_DATA_SUM]);
    assert_int_equal(by[BY_DATA_SUM], n);
}

static void test_header_bitflips(void **state)
{
    int by[BY_KINDS];
    size_t n = flip_every_bit(*state, 1, by);
    printf("%zu header bit flips rejected: %d as invalid JSON, %d by a layout or metadata check, %d by the header "
           "checksum, %d by the data checksum\n", n, by[BY_JSON], by[BY_LAYOUT], by[BY_HEADER_SUM],
           by[BY_DATA_SUM]);
    assert_true(by[BY_JSON] > 0 && by[BY_LAYOUT] > 0 && by[BY_HEADER_SUM] > 0);
}

static void test_header_length_too_large(void **state)
{
    Fx *f = *state;
    size_t n, hdr_end;
    unsigned char *b = sample_bytes(f, &n, &hdr_end);
    uint64_t lens[] = {n - 7, n, (1ull << 40), UINT64_MAX};
    const char *msg[] = {"truncated: header length says", "truncated: header length says",
                         "over the 104857600-byte limit", "over the 104857600-byte limit"};
    for (int k = 0; k < 4; k++) {
        for (int i = 0; i < 8; i++) b[i] = (unsigned char)(lens[k] >> (8 * i));
        spit(f->path, b, n);
        expect_reject(f->path, msg[k]);
    }
    free(b);
}

/* Crafted headers, each wrong in one way. 16 data bytes follow each. */
static const struct {
    const char *what, *json, *needle;
} bad_headers[] = {
    {"not JSON", "hello, world", "header is not valid JSON"},
    {"unterminated", "{\"a\": {\"dtype\": \"F32\"", "header is not valid JSON"},
    {"not an object", "[1, 2]", "header is not a JSON object"},
    {"duplicate key", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,16]}}", "not valid JSON"},
    {"offsets not contiguous", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
     "tensor 'b': data_offsets begin at 12, expected 8 (offsets must be contiguous from 0)"},
    {"overlapping", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", "contiguous"},
    {"not from 0", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[4,16]}}",
     "begin at 4, expected 0"},
    {"shape/offset mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}",
     "tensor 'a': data_offsets [0, 16] do not fit shape [3] of F32 (12 bytes)"},
    {"end before begin", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,0]}}", "do not fit"},
    {"unknown dtype", "{\"a\":{\"dtype\":\"F16\",\"shape\":[8],\"data_offsets\":[0,16]}}",
     "tensor 'a': unknown dtype 'F16'"},
    {"dtype not a string", "{\"a\":{\"dtype\":4,\"shape\":[4],\"data_offsets\":[0,16]}}", "unknown dtype"},
    {"huge shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,8],\"data_offsets\":[0,16]}}",
     "shape [4611686018427387904, 8] of F32 overflows"},
    {"huge 1-d shape", "{\"a\":{\"dtype\":\"U64\",\"shape\":[9223372036854775807],\"data_offsets\":[0,16]}}",
     "overflows"},
    {"shape too big for JSON ints", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e30],\"data_offsets\":[0,16]}}",
     "shape must be 1 or 2 non-negative integers"},
    {"negative shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", "non-negative"},
    {"three dims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,2,2],\"data_offsets\":[0,16]}}", "1 or 2"},
    {"no dims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,16]}}", "1 or 2"},
    {"negative offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[-16,0]}}", "non-negative"},
    {"one offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16]}}", "[begin, end]"},
    {"extra key", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16],\"x\":1}}",
     "expected exactly dtype, shape and data_offsets"},
    {"entry not an object", "{\"a\":[1]}", "expected exactly"},
    {"long name", "{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":"
                  "{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", "name longer than 95 bytes"},
    {"data short", "{\"a\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,20]}}",
     "truncated: header says 20 data bytes, file has 16"},
    {"stray bytes", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}",
     "4 stray bytes after the last tensor"},
    {"metadata not an object", "{\"__metadata__\":[],\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
     "__metadata__ is not an object"},
    {"metadata not strings", "{\"__metadata__\":{\"checksum\":5},\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
     "__metadata__ 'checksum' is not a string"},
    {"no metadata (a plain safetensors file)", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
     "lacks checksum"},
    {"checksum uppercase", "{\"__metadata__\":{\"checksum\":\"ABCDEF0123456789\",\"header_checksum\":\"0123456789abcdef\"},"
                           "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", "lacks checksum"},
    {"header_checksum elsewhere", "{\"__metadata__\" : {\"checksum\" : \"0123456789abcdef\", \"header_checksum\" : "
                                  "\"0123456789abcdef\"},\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
     "header_checksum is not where clipd writes it"},
    {"header checksum wrong", "{\"__metadata__\":{\"checksum\":\"0123456789abcdef\",\"header_checksum\":\"0123456789abcdef\"},"
                              "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
     "header checksum mismatch"},
};

static void test_bad_headers(void **state)
{
    Fx *f = *state;
    unsigned char data[16] = {0};
    for (size_t i = 0; i < sizeof bad_headers / sizeof *bad_headers; i++) {
        printf("bad header: %s\n", bad_headers[i].what);
        craft(f->path, bad_headers[i].json, data, sizeof data);
        expect_reject(f->path, bad_headers[i].needle);
    }
    /* and a file that is not regular */
    expect_reject(f->dir, "not a regular file");
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none.safetensors", f->dir);
    expect_reject(missing, "cannot open: No such file");
}

/* What docs/CHECKPOINTS.md tells a NumPy user, done by hand: N from the first
 * 8 bytes, the JSON header, offsets relative to 8 + N, both checksums. */
static void test_raw_layout_by_hand(void **state)
{
    Fx *f = *state;
    size_t n, hn;
    unsigned char *b = sample_bytes(f, &n, &hn);
    hn -= 8;
    assert_int_equal(hn % 8, 0);
    assert_int_equal(b[8], '{');
    json_error_t je;
    json_t *h = json_loadb((const char *)b + 8, hn, 0, &je);
    assert_non_null(h);
    json_t *md = json_object_get(h, "__metadata__");
    const char *k;
    json_t *v;
    int i = 0;
    json_object_foreach(h, k, v) if (i++ == 0) assert_string_equal(k, "__metadata__"); /* first */
    for (int t = 0; t < 3; t++) {
        json_t *e = json_object_get(h, s_tensors[t].name);
        size_t begin = (size_t)json_integer_value(json_array_get(json_object_get(e, "data_offsets"), 0));
        size_t end = (size_t)json_integer_value(json_array_get(json_object_get(e, "data_offsets"), 1));
        assert_string_equal(json_string_value(json_object_get(e, "dtype")), ckpt_dtype_name(s_tensors[t].dtype));
        assert_memory_equal(b + 8 + hn + begin, s_tensors[t].data, end - begin);
    }
    assert_int_equal(json_integer_value(json_array_get(json_object_get(json_object_get(h, "param.w"), "data_offsets"), 1)), 36);
    /* checksum: FNV-1a 64 of b[8+N:]; header_checksum: of the header with its 16 digits as '0' */
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", fnv1a64(b + 8 + hn, n - 8 - hn, FNV1A64_INIT));
    assert_string_equal(json_string_value(json_object_get(md, "checksum")), hex);
    unsigned char *hc = malloc(hn + 1);
    memcpy(hc, b + 8, hn);
    hc[hn] = 0;
    char *at = strstr((char *)hc, "\"header_checksum\":\"") + strlen("\"header_checksum\":\"");
    memset(at, '0', 16);
    snprintf(hex, sizeof hex, "%016llx", fnv1a64(hc, hn, FNV1A64_INIT));
    assert_string_equal(json_string_value(json_object_get(md, "header_checksum")), hex);
    assert_string_equal(json_string_value(json_object_get(md, "format")), "clipd-ckpt-1");
    free(hc);
    json_decref(h);
    free(b);
}

static void test_latest_skips_corrupt(void **state)
{
    Fx *f = *state;
    char path[512], p30[512], p20[512], got[512], notes[2048], err[512];
    for (int s = 10; s <= 30; s += 10) write_sample(f, s, 5, path, sizeof path);
    assert_int_equal(ckdir_latest(f->dir, got, sizeof got, notes, sizeof notes, err, sizeof err), 0);
    assert_string_equal(got, path);
    assert_string_equal(notes, "");
    ckdir_path(p30, sizeof p30, f->dir, 30);
    ckdir_path(p20, sizeof p20, f->dir, 20);
    size_t n;
    unsigned char *b = slurp(p30, &n);
    b[n - 1] ^= 0x10; /* a bit flip in the newest */
    spit(p30, b, n);
    spit(p20, b, n / 2); /* and a torn second newest */
    char ignored[512];
    snprintf(ignored, sizeof ignored, "%s/step-abc.safetensors", f->dir);
    spit(ignored, "x", 1);
    assert_int_equal(ckdir_latest(f->dir, got, sizeof got, notes, sizeof notes, err, sizeof err), 0);
    printf("notes:\n%s", notes);
    ckdir_path(path, sizeof path, f->dir, 10);
    assert_string_equal(got, path);
    char want[1024];
    snprintf(want, sizeof want, "skipping %s: checksum mismatch", p30);
    assert_memory_equal(notes, want, strlen(want));
    snprintf(want, sizeof want, "\nskipping %s: truncated", p20);
    assert_non_null(strstr(notes, want));
    free(b);
}

static void test_latest_none(void **state)
{
    Fx *f = *state;
    char got[512], notes[1024], err[512], p[512];
    assert_int_equal(ckdir_latest(f->dir, got, sizeof got, notes, sizeof notes, err, sizeof err), -1);
    printf("%s\n", err);
    assert_non_null(strstr(err, "no valid checkpoint in "));
    assert_non_null(strstr(err, "no step-*.safetensors files"));
    for (int s = 1; s <= 2; s++) {
        ckdir_path(p, sizeof p, f->dir, s);
        spit(p, "garbage", 7);
    }
    assert_int_equal(ckdir_latest(f->dir, got, sizeof got, notes, sizeof notes, err, sizeof err), -1);
    printf("%s\n%s", err, notes);
    assert_non_null(strstr(err, "all 2 step-*.safetensors files are invalid"));
    snprintf(p, sizeof p, "%s/missing", f->dir);
    assert_int_equal(ckdir_latest(p, got, sizeof got, notes, sizeof notes, err, sizeof err), -1);
    assert_non_null(strstr(err, "No such file"));
}

static void test_write_rejects_bad_input(void **state)
{
    Fx *f = *state;
    char err[512], p[512];
    float w[4] = {0};
    CkTensor dup[] = {{"a", CK_F32, w, 1, {4, 0}}, {"a", CK_F32, w, 1, {4, 0}}};
    CkTensor longname[] = {{"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                            CK_F32, w, 1, {4, 0}}};
    CkTensor baddt[] = {{"a", 7, w, 1, {4, 0}}}, dims3[] = {{"a", CK_F32, w, 3, {4, 1}}};
    CkTensor neg[] = {{"a", CK_F32, w, 2, {4, -1}}}, huge[] = {{"a", CK_U64, w, 2, {1L << 40, 1L << 40}}};
    CkTensor nodata[] = {{"a", CK_F32, NULL, 1, {4, 0}}}, meta_name[] = {{"__metadata__", CK_F32, w, 1, {4, 0}}};
    CkMeta fmt[] = {{"format", "x"}}, sum[] = {{"checksum", "x"}}, twice[] = {{"k", "1"}, {"k", "2"}};
    CkMeta badutf[] = {{"k", "\xff\xfe"}};
    CkTensor badname[] = {{"\xc3", CK_F32, w, 1, {4, 0}}};
    struct {
        const CkTensor *t;
        int nt;
        const CkMeta *m;
        int nm, keep;
        const char *needle;
    } cases[] = {
        {dup, 2, NULL, 0, 1, "tensor 'a' is repeated"},
        {longname, 1, NULL, 0, 1, "is longer than 95 bytes"},
        {baddt, 1, NULL, 0, 1, "unknown dtype 7"},
        {dims3, 1, NULL, 0, 1, "3 dimensions"},
        {neg, 1, NULL, 0, 1, "negative or too large"},
        {huge, 1, NULL, 0, 1, "negative or too large"},
        {nodata, 1, NULL, 0, 1, "no data"},
        {meta_name, 1, NULL, 0, 1, "reserved"},
        {dup, 1, fmt, 1, 1, "'format' is reserved"},
        {dup, 1, sum, 1, 1, "metadata 'checksum' is reserved"},
        {dup, 1, twice, 2, 1, "metadata 'k' is repeated"},
        {badname, 1, NULL, 0, 1, "name is not valid UTF-8"},
        {dup, 1, badutf, 1, 1, "not valid UTF-8"},
        {dup, 1, NULL, 0, 0, "checkpoint.keep is 0"},
        {dup, -1, NULL, 0, 1, "-1 tensors"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = ckdir_write(f->dir, 1, cases[i].t, cases[i].nt, cases[i].m, cases[i].nm, cases[i].keep, NULL,
                            0, err, sizeof err);
        printf("bad input %zu: %s\n", i, err);
        assert_int_equal(rc, -1);
        assert_non_null(strstr(err, cases[i].needle));
        assert_int_equal(count_entries(f->dir, "."), 2); /* nothing written, no temporary left */
        assert_int_equal(count_entries(f->dir, "step-"), 0);
    }
    snprintf(p, sizeof p, "%s/file", f->dir); /* a directory that is a file */
    spit(p, "x", 1);
    assert_int_equal(ckdir_write(p, 1, dup, 1, NULL, 0, 1, NULL, 0, err, sizeof err), -1);
    printf("%s\n", err);
    assert_int_equal(strncmp(err, "checkpoint.dir: ", 16), 0);
    assert_null(strstr(err, "run.dir"));
    snprintf(p, sizeof p, "%s/nodir/x.safetensors", f->dir); /* the writer does not create dirs */
    assert_int_equal(ckpt_write_file(p, dup, 1, NULL, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_empty, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_atomic_no_temp_left, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_keep_two_of_five, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_stale_temps_removed, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_crash_points, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_remove_stale_only_matches, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_creates_dir, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_truncated_every_length, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_data_bitflips, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_header_bitflips, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_header_length_too_large, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_bad_headers, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_raw_layout_by_hand, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_latest_skips_corrupt, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_latest_none, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_write_rejects_bad_input, setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_fs_errors_name_key, setup, tmpdir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
