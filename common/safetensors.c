/* safetensors: atomic writer of the safetensors layout (see safetensors.h). */
#include "common/safetensors.h"

#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

unsigned long long fnv1a64(const void *p, size_t n, unsigned long long h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

/* Bounded append: on overflow *n is set past cap and later appends do nothing. */
static void app(char *h, size_t *n, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void app(char *h, size_t *n, size_t cap, const char *fmt, ...)
{
    if (*n >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(h + *n, cap - *n, fmt, ap);
    va_end(ap);
    *n = w < 0 ? cap : *n + (size_t)w;
}

/* JSON header, padded with spaces to a multiple of 8 bytes as the format
 * allows. Names and metadata are clipd's own (no characters to escape). */
static char *st_header(const StTensor *t, int nt, const StMeta *meta, int nmeta, size_t *len)
{
    size_t cap = 256 + (size_t)nt * 160, n = 0;
    for (int i = 0; i < nt; i++) cap += strlen(t[i].name);
    for (int i = 0; i < nmeta; i++) cap += strlen(meta[i].key) + strlen(meta[i].value) + 8;
    char *h = malloc(cap);
    if (!h) return NULL;
    app(h, &n, cap, "{\"__metadata__\":{");
    for (int i = 0; i < nmeta; i++)
        app(h, &n, cap, "%s\"%s\":\"%s\"", i ? "," : "", meta[i].key, meta[i].value);
    app(h, &n, cap, "}");
    size_t off = 0;
    for (int i = 0; i < nt; i++) {
        size_t cnt = (size_t)t[i].shape[0] * (size_t)(t[i].ndim == 2 ? t[i].shape[1] : 1);
        app(h, &n, cap, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%ld", t[i].name, t[i].shape[0]);
        if (t[i].ndim == 2) app(h, &n, cap, ",%ld", t[i].shape[1]);
        app(h, &n, cap, "],\"data_offsets\":[%zu,%zu]}", off, off + cnt * 4);
        off += cnt * 4;
    }
    app(h, &n, cap, "}");
    while (n % 8 && n + 1 < cap) h[n++] = ' ';
    if (n + 1 >= cap || n % 8) { /* cannot happen with the cap above; never write a bad header */
        free(h);
        return NULL;
    }
    h[n] = 0;
    *len = n;
    return h;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        c += w, n -= (size_t)w;
    }
    return 0;
}

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors are little-endian: a big-endian host needs byte swapping here"
#endif

int st_write(const char *path, const StTensor *t, int nt, const StMeta *meta, int nmeta,
             char *err, size_t errlen)
{
    size_t hlen;
    char *h = st_header(t, nt, meta, nmeta, &hlen);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (!h) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        free(h);
        return -1;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    int bad = write_all(fd, len8, 8) || write_all(fd, h, hlen);
    for (int i = 0; i < nt && !bad; i++) {
        size_t cnt = (size_t)t[i].shape[0] * (size_t)(t[i].ndim == 2 ? t[i].shape[1] : 1);
        bad = write_all(fd, t[i].data, cnt * sizeof(float)); /* x86-64 and aarch64: little-endian */
    }
    free(h);
    if (bad || fsync(fd) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    if (close(fd) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0 || fs_fsync_parent(path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}
