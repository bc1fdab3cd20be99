/* fuzz_ckpt: the checkpoint reader (safetensors length, JSON header, entries,
 * offsets, sizes, checksums) and the checks of its contents before a resume
 * (ckstate_check, under fzc_config with 1 worker and with W unknown) on
 * untrusted bytes. Each input is read twice:
 * as is, and with both checksums recomputed where clipd writes them, so the
 * fuzzer also reaches the accessors behind a passing checksum. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ckpt.h"
#include "common/ckstate.h"
#include "common/hash.h"
#include "tests/fuzz/fuzz_ckstate.h"
#include "tests/fuzz/fuzz_util.h"

static char dir[64], path[128];

static void cleanup(void)
{
    fz_rm_rf(dir);
}

static void exercise(const Ckpt *c)
{
    static const char *const names[] = {"param.head.weight", "param.layers.0.wx", "data.streams",
                                        "opt.m.head.bias", ""};
    static const char *const keys[] = {"step", "seq", "epoch", "world_size", "batch_per_worker", "opt_t"};
    char err[512];
    float f[256];
    uint64_t u[64];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const CkEntry *e = ckpt_find(c, names[i]);
        if (e && e->nbytes) {
            volatile unsigned char sink = ((const unsigned char *)ckpt_data(c, e))[e->nbytes - 1];
            (void)sink;
        }
        (void)ckpt_get(c, names[i], CK_F32, f, e && e->nbytes / 4 <= 256 ? e->nbytes / 4 : 256, err, sizeof err);
        (void)ckpt_get(c, names[i], CK_U64, u, 64, err, sizeof err);
    }
    /* Every entry through ckpt_get with its own size: touches all data bytes. */
    for (int i = 0; i < c->n; i++) {
        const CkEntry *e = &c->e[i];
        size_t sz = e->dtype == CK_U64 ? 8 : 4;
        void *dst = malloc(e->nbytes ? e->nbytes : 1);
        if (!dst) continue;
        (void)ckpt_get(c, e->name, e->dtype, dst, e->nbytes / sz, err, sizeof err);
        free(dst);
    }
    int64_t v;
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) (void)ckpt_meta_i64(c, keys[i], &v, err, sizeof err);
    static Config cfg;
    static int have_cfg;
    if (!have_cfg) fzc_config(&cfg), have_cfg = 1;
    CkState s;
    (void)ckstate_check(c, &cfg, 1, 0, &s, err, sizeof err);
    (void)ckstate_check(c, &cfg, 0, 100, &s, err, sizeof err);
}

static void read_one(const uint8_t *p, size_t n)
{
    char err[1024];
    Ckpt c;
    if (fz_write(dir, "in.safetensors", p, n) != 0) abort();
    if (ckpt_read(&c, path, err, sizeof err) == 0) exercise(&c);
    ckpt_free(&c);
    ckpt_free(&c); /* documented harmless */
}

/* Find needle in p[0, n); -1 if absent. */
static long find(const uint8_t *p, size_t n, const char *needle, size_t from)
{
    size_t k = strlen(needle);
    for (size_t i = from; i + k <= n; i++)
        if (!memcmp(p + i, needle, k)) return (long)i;
    return -1;
}

/* Recompute "checksum" and "header_checksum" in place, as ckpt_write_file does. */
static int fix_sums(uint8_t *p, size_t size)
{
    static const char hk[] = "\"header_checksum\":\"", dk[] = "\"checksum\":\"";
    if (size < 8) return -1;
    unsigned long long n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | p[i];
    if (n > size - 8) return -1;
    uint8_t *h = p + 8;
    long at = find(h, n, hk, 0), d = -1;
    for (long from = 0; (d = find(h, n, dk, (size_t)from)) >= 0; from = d + 1)
        if (d < 7 || memcmp(h + d - 7, "header_", 7) != 0) break;
    if (at < 0 || (size_t)at + strlen(hk) + 16 > n) return -1;
    char hex[17];
    if (d >= 0 && (size_t)d + strlen(dk) + 16 <= n) {
        snprintf(hex, sizeof hex, "%016llx", fnv1a64(h + n, size - 8 - n, FNV1A64_INIT));
        memcpy(h + d + strlen(dk), hex, 16);
    }
    uint8_t *slot = h + at + strlen(hk);
    memcpy(slot, "0000000000000000", 16);
    snprintf(hex, sizeof hex, "%016llx", fnv1a64(h, n, FNV1A64_INIT));
    memcpy(slot, hex, 16);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        fz_mkdtemp(dir, sizeof dir);
        snprintf(path, sizeof path, "%s/in.safetensors", dir);
        atexit(cleanup);
    }
    read_one(data, size);
    uint8_t *fixed = malloc(size ? size : 1);
    if (!fixed) return 0;
    memcpy(fixed, data, size);
    if (fix_sums(fixed, size) == 0) read_one(fixed, size);
    free(fixed);
    return 0;
}
