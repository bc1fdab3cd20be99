/* ckpt: the checkpoint file format: the atomic safetensors writer (under
 * ckdir's step files and worker/safetensors' weights) and the verifying
 * reader (see ckpt.h and docs/CHECKPOINTS.md). Every length and offset from a file is checked before
 * it is used, so a crafted file cannot make the reader leave its buffer. */
#include "common/ckpt.h"

#include "common/fsutil.h"
#include "common/hash.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors are little-endian: a big-endian host needs byte swapping here"
#endif

#define HCK_KEY "\"header_checksum\":\"" /* as jansson's compact output writes it */
#define HCK_ZERO "0000000000000000"

static const char *const dtype_names[] = {"F32", "U64", "I32"};
static const size_t dtype_sizes[] = {4, 8, 4};

const char *ckpt_dtype_name(int dtype)
{
    return dtype >= 0 && dtype <= CK_I32 ? dtype_names[dtype] : NULL;
}

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Bytes of a tensor with this (known) dtype and non-negative dims; -1 when
 * the product does not fit in size_t. */
static int tensor_bytes(int dtype, int ndim, const long long *dims, size_t *out)
{
    size_t n = dtype_sizes[dtype];
    for (int i = 0; i < ndim; i++) {
        unsigned long long d = (unsigned long long)dims[i];
        if (d > SIZE_MAX || (d && n > SIZE_MAX / d)) return -1;
        n *= (size_t)d;
    }
    *out = n;
    return 0;
}

static void hex16(char out[17], unsigned long long h)
{
    snprintf(out, 17, "%016llx", h);
}

/* ---- writer ---------------------------------------------------------- */

/* Checks every tensor a caller passes, and that all fit in CK_MAX_FILE. */
static int check_tensors(const char *path, const CkTensor *t, int nt, char *err, size_t errlen)
{
    if (nt < 0 || nt > CK_MAX_TENSORS || (nt && !t))
        return fail(err, errlen, "%s: %d tensors (0 to %d)", path, nt, CK_MAX_TENSORS);
    size_t sum = 0;
    for (int i = 0; i < nt; i++) {
        const CkTensor *x = &t[i];
        const char *nm = x->name ? x->name : "";
        long long dims[2] = {x->shape[0], x->ndim == 2 ? x->shape[1] : 1};
        size_t nb = 0;
        if (!*nm || !strcmp(nm, "__metadata__"))
            return fail(err, errlen, "%s: tensor %d: name '%s' is empty or reserved", path, i, nm);
        if (strlen(nm) >= CK_NAME_MAX)
            return fail(err, errlen, "%s: tensor %d: name '%.40s...' is longer than %d bytes", path, i, nm,
                        CK_NAME_MAX - 1);
        if (!ckpt_dtype_name(x->dtype))
            return fail(err, errlen, "%s: tensor '%s': unknown dtype %d", path, nm, x->dtype);
        if (x->ndim != 1 && x->ndim != 2)
            return fail(err, errlen, "%s: tensor '%s': %d dimensions, expected 1 or 2", path, nm, x->ndim);
        if (dims[0] < 0 || dims[1] < 0 || tensor_bytes(x->dtype, x->ndim, dims, &nb) ||
            nb > CK_MAX_FILE - sum)
            return fail(err, errlen, "%s: tensor '%s': shape [%lld, %lld] is negative or too large",
                        path, nm, dims[0], dims[1]);
        if (nb && !x->data) return fail(err, errlen, "%s: tensor '%s': no data", path, nm);
        sum += nb;
    }
    return 0;
}

static size_t ck_tensor_bytes(const CkTensor *x)
{
    long long dims[2] = {x->shape[0], x->shape[1]};
    size_t nb = 0;
    tensor_bytes(x->dtype, x->ndim, dims, &nb); /* checked by check_tensors */
    return nb;
}

/* {"__metadata__": {...}, name: {dtype, shape, data_offsets}, ...} with the
 * header checksum still "0000000000000000"; NULL with err on failure. */
static json_t *header_json(const char *path, const CkTensor *t, int nt, const CkMeta *meta,
                           int nmeta, const char *sum, char *err, size_t errlen)
{
    json_t *root = json_object(), *md = json_object();
    if (!root || !md || json_object_set_new(root, "__metadata__", md)) goto oom;
    for (int i = 0; i < nmeta; i++) {
        const char *k = meta[i].key, *v = meta[i].value;
        const char *why = !k || !v ? "is NULL"
                          : !strcmp(k, "checksum") || !strcmp(k, "header_checksum") ? "is reserved (the writer sets it)"
                          : json_object_get(md, k) ? "is repeated" : NULL;
        if (why) {
            fail(err, errlen, "%s: metadata '%s' %s", path, k ? k : "(NULL)", why);
            goto bad;
        }
        if (json_object_set_new(md, k, json_string(v))) {
            fail(err, errlen, "%s: metadata '%s': key or value is not valid UTF-8", path, k);
            goto bad;
        }
    }
    if (json_object_set_new(md, "checksum", json_string(sum)) ||
        json_object_set_new(md, "header_checksum", json_string(HCK_ZERO)))
        goto oom;
    size_t off = 0;
    for (int i = 0; i < nt; i++) {
        size_t nb = ck_tensor_bytes(&t[i]);
        json_t *shape = t[i].ndim == 2 ? json_pack("[I,I]", (json_int_t)t[i].shape[0], (json_int_t)t[i].shape[1])
                                       : json_pack("[I]", (json_int_t)t[i].shape[0]);
        json_t *e = json_pack("{s:s,s:o,s:[I,I]}", "dtype", dtype_names[t[i].dtype], "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + nb));
        if (!e) goto oom;
        if (json_object_get(root, t[i].name)) {
            json_decref(e);
            fail(err, errlen, "%s: tensor '%s' is repeated", path, t[i].name);
            goto bad;
        }
        if (json_object_set_new(root, t[i].name, e)) { /* set_new drops e on failure */
            fail(err, errlen, "%s: tensor '%s': name is not valid UTF-8", path, t[i].name);
            goto bad;
        }
        off += nb;
    }
    return root;
oom:
    fail(err, errlen, "%s: out of memory building the header", path);
bad:
    json_decref(root);
    return NULL;
}

/* The header text: compact JSON (metadata first), padded with spaces to a
 * multiple of 8 bytes, header checksum filled in. */
static char *header_text(const char *path, const CkTensor *t, int nt, const CkMeta *meta, int nmeta,
                         const char *sum, size_t *len, char *err, size_t errlen)
{
    json_t *root = header_json(path, t, nt, meta, nmeta, sum, err, errlen);
    if (!root) return NULL;
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    size_t n = s ? strlen(s) : 0, padded = (n + 7) / 8 * 8;
    char *p = s ? realloc(s, padded + 1) : NULL;
    if (!p) {
        free(s);
        fail(err, errlen, "%s: out of memory writing the header", path);
        return NULL;
    }
    memset(p + n, ' ', padded - n);
    p[padded] = 0;
    /* The first match is the metadata key: an unescaped quote starts or ends a
     * string, so this text elsewhere would be a key with a string value. */
    char *at = strstr(p, HCK_KEY);
    assert(at);
    char hex[17];
    hex16(hex, fnv1a64(p, padded, FNV1A64_INIT));
    memcpy(at + strlen(HCK_KEY), hex, 16);
    *len = padded;
    return p;
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

/* Test hook (debug.ckpt_crash_*): the point at which the next write kills
 * its own process, as a power cut or the OOM killer would. */
static int crash_point = CK_CRASH_NONE;

void ckpt_test_crash(int point) { crash_point = point; }

static void crash_if(int point)
{
    if (crash_point == point) raise(SIGKILL);
}

/* Temporary file `.NAME.tmp.clipd-RUN.PID` beside path (fs_tmp_path): write,
 * fsync, rename, fsync dir. A symlink planted at the temporary's name is
 * not followed. */
static int write_atomic(const char *path, const char *hdr, size_t hlen, const CkTensor *t, int nt,
                        char *err, size_t errlen)
{
    char tmp[4096];
    if (fs_tmp_path(tmp, sizeof tmp, path) != 0) return fail(err, errlen, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return fail(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    int bad = write_all(fd, len8, 8) || write_all(fd, hdr, hlen);
    crash_if(CK_CRASH_DURING_WRITE); /* header on disk, tensors not */
    for (int i = 0; i < nt && !bad; i++) bad = write_all(fd, t[i].data, ck_tensor_bytes(&t[i]));
    if (bad || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return fail(err, errlen, "%s: cannot write: %s", tmp, strerror(e));
    }
    if (close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return fail(err, errlen, "%s: cannot close: %s", tmp, strerror(e));
    }
    crash_if(CK_CRASH_BEFORE_RENAME);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return fail(err, errlen, "%s: cannot rename into place: %s", tmp, strerror(e));
    }
    crash_if(CK_CRASH_AFTER_RENAME);
    if (fs_fsync_parent(path) != 0)
        return fail(err, errlen, "%s: fsync of its directory failed: %s", path, strerror(errno));
    return 0;
}

int ckpt_write_file(const char *path, const CkTensor *t, int nt, const CkMeta *meta, int nmeta,
                    char *err, size_t errlen)
{
    size_t hlen;
    if (nmeta < 0 || (nmeta && !meta)) return fail(err, errlen, "%s: %d metadata entries", path, nmeta);
    if (check_tensors(path, t, nt, err, errlen)) return -1;
    unsigned long long h = FNV1A64_INIT;
    for (int i = 0; i < nt; i++) h = fnv1a64(t[i].data, ck_tensor_bytes(&t[i]), h);
    char sum[17];
    hex16(sum, h);
    char *hdr = header_text(path, t, nt, meta, nmeta, sum, &hlen, err, errlen);
    if (!hdr) return -1;
    int rc = write_atomic(path, hdr, hlen, t, nt, err, errlen);
    free(hdr);
    return rc;
}

/* ---- reader ---------------------------------------------------------- */

static int read_whole(Ckpt *c, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block us */
    if (fd < 0) return fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (unsigned long long)st.st_size > CK_MAX_FILE) {
        close(fd);
        return fail(err, errlen, "%s: not a regular file of at most %llu bytes", path, CK_MAX_FILE);
    }
    size_t len = (size_t)st.st_size, got = 0;
    c->buf = malloc(len ? len : 1);
    if (!c->buf) {
        close(fd);
        return fail(err, errlen, "%s: out of memory reading %zu bytes", path, len);
    }
    while (got < len) {
        ssize_t r = read(fd, c->buf + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return fail(err, errlen, "%s: read error: %s", path, strerror(e));
        }
        if (r == 0) break; /* shrank since fstat: check what is there */
        got += (size_t)r;
    }
    close(fd);
    c->len = got;
    return 0;
}

static int is_count(const json_t *x, long long max)
{
    return json_is_integer(x) && json_integer_value(x) >= 0 && json_integer_value(x) <= max;
}

static void shape_str(char *out, size_t len, const CkEntry *e)
{
    if (e->ndim == 2) snprintf(out, len, "[%ld, %ld]", e->shape[0], e->shape[1]);
    else snprintf(out, len, "[%ld]", e->shape[0]);
}

/* One tensor entry: {"dtype": ..., "shape": [..], "data_offsets": [b, e]}. */
static int parse_entry(CkEntry *e, const char *name, const json_t *v, const char *path, char *err,
                       size_t errlen)
{
    size_t nlen = strlen(name);
    if (nlen >= CK_NAME_MAX)
        return fail(err, errlen, "%s: tensor '%.40s...': name longer than %d bytes", path, name, CK_NAME_MAX - 1);
    memcpy(e->name, name, nlen + 1);
    const json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
                 *of = json_object_get(v, "data_offsets");
    if (!json_is_object(v) || json_object_size(v) != 3 || !dt || !sh || !of)
        return fail(err, errlen, "%s: tensor '%s': expected exactly dtype, shape and data_offsets", path, name);
    const char *ds = json_string_value(dt);
    e->dtype = -1;
    for (int d = 0; d <= CK_I32 && ds; d++)
        if (!strcmp(ds, dtype_names[d])) e->dtype = d;
    if (e->dtype < 0)
        return fail(err, errlen, "%s: tensor '%s': unknown dtype '%s' (clipd reads F32, U64, I32)", path,
                    name, ds ? ds : "(not a string)");
    size_t nd = json_array_size(sh);
    long long dims[2] = {1, 1};
    for (size_t i = 0; i < nd && i < 2; i++) dims[i] = json_integer_value(json_array_get(sh, i));
    if (nd < 1 || nd > 2 || !is_count(json_array_get(sh, 0), LONG_MAX) ||
        (nd == 2 && !is_count(json_array_get(sh, 1), LONG_MAX)))
        return fail(err, errlen, "%s: tensor '%s': shape must be 1 or 2 non-negative integers", path, name);
    e->ndim = (int)nd;
    e->shape[0] = (long)dims[0], e->shape[1] = (long)dims[1];
    char shp[64];
    shape_str(shp, sizeof shp, e);
    if (tensor_bytes(e->dtype, e->ndim, dims, &e->nbytes))
        return fail(err, errlen, "%s: tensor '%s': shape %s of %s overflows the byte count", path, name, shp, ds);
    const json_t *b = json_array_get(of, 0), *en = json_array_get(of, 1);
    if (json_array_size(of) != 2 || !is_count(b, LLONG_MAX) || !is_count(en, LLONG_MAX))
        return fail(err, errlen, "%s: tensor '%s': data_offsets must be [begin, end], non-negative integers",
                    path, name);
    long long lb = json_integer_value(b), le = json_integer_value(en);
    if (le < lb || (unsigned long long)(le - lb) != e->nbytes)
        return fail(err, errlen, "%s: tensor '%s': data_offsets [%lld, %lld] do not fit shape %s of %s (%zu bytes)",
                    path, name, lb, le, shp, ds, e->nbytes);
    e->off = (size_t)lb;
    return 0;
}

static int by_offset(const void *a, const void *b)
{
    const CkEntry *x = a, *y = b;
    if (x->off != y->off) return x->off < y->off ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Header length, JSON, metadata strings, every entry. */
static int parse_header(Ckpt *c, const char *path, char *err, size_t errlen)
{
    if (c->len < 8)
        return fail(err, errlen, "%s: truncated: %zu bytes, less than the 8-byte header length", path, c->len);
    unsigned long long n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | c->buf[i];
    if (n > CK_MAX_HEADER)
        return fail(err, errlen, "%s: header length %llu is over the %llu-byte limit (not a checkpoint, or corrupt)",
                    path, n, CK_MAX_HEADER);
    if (n > c->len - 8)
        return fail(err, errlen, "%s: truncated: header length says %llu bytes, file has %zu after it", path, n,
                    c->len - 8);
    c->data_off = 8 + (size_t)n;
    json_error_t je;
    json_t *root = json_loadb((const char *)c->buf + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root) return fail(err, errlen, "%s: header is not valid JSON: %s at header byte %d", path, je.text, je.position);
    c->hdr = root;
    if (!json_is_object(root)) return fail(err, errlen, "%s: header is not a JSON object", path);
    if (json_object_size(root) > CK_MAX_TENSORS + 1)
        return fail(err, errlen, "%s: %zu header entries, more than %d tensors", path, json_object_size(root), CK_MAX_TENSORS);
    c->e = calloc(json_object_size(root) + 1, sizeof *c->e);
    if (!c->e) return fail(err, errlen, "%s: out of memory", path);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") != 0) {
            if (parse_entry(&c->e[c->n], key, v, path, err, errlen)) return -1;
            c->n++;
            continue;
        }
        const char *mk;
        json_t *mv;
        if (!json_is_object(v)) return fail(err, errlen, "%s: __metadata__ is not an object", path);
        json_object_foreach(v, mk, mv) {
            if (!json_is_string(mv)) return fail(err, errlen, "%s: __metadata__ '%s' is not a string", path, mk);
        }
    }
    return 0;
}

/* Offsets contiguous from 0 and ending exactly at the end of the file. */
static int check_layout(Ckpt *c, const char *path, char *err, size_t errlen)
{
    if (c->n > 1) qsort(c->e, (size_t)c->n, sizeof *c->e, by_offset);
    size_t want = 0, have = c->len - c->data_off;
    for (int i = 0; i < c->n; i++) {
        if (c->e[i].off != want)
            return fail(err, errlen, "%s: tensor '%s': data_offsets begin at %zu, expected %zu (offsets must be "
                        "contiguous from 0)", path, c->e[i].name, c->e[i].off, want);
        want += c->e[i].nbytes; /* no overflow: it equals that entry's end, a json_int_t */
    }
    if (want > have)
        return fail(err, errlen, "%s: truncated: header says %zu data bytes, file has %zu", path, want, have);
    if (want < have)
        return fail(err, errlen, "%s: %zu stray bytes after the last tensor: header says %zu data bytes, file has %zu",
                    path, have - want, want, have);
    return 0;
}

static int is_hex16(const char *s)
{
    if (strlen(s) != 16) return 0;
    for (int i = 0; i < 16; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

/* Both checksums: the header's (its own digits read as '0') and the data's. */
static int check_sums(const Ckpt *c, const char *path, char *err, size_t errlen)
{
    const char *ds = ckpt_meta(c, "checksum"), *hs = ckpt_meta(c, "header_checksum");
    if (!ds || !hs || !is_hex16(ds) || !is_hex16(hs))
        return fail(err, errlen, "%s: __metadata__ lacks checksum or header_checksum as 16 lowercase hex digits "
                    "(not written by clipd, or edited)", path);
    const unsigned char *h = c->buf + 8;
    size_t n = c->data_off - 8, kl = strlen(HCK_KEY), at = 0;
    while (at + kl <= n && memcmp(h + at, HCK_KEY, kl) != 0) at++;
    if (at + kl + 17 > n || memcmp(h + at + kl, hs, 16) != 0 || h[at + kl + 16] != '"')
        return fail(err, errlen, "%s: header_checksum is not where clipd writes it (header edited or corrupt)", path);
    unsigned long long x = fnv1a64(h, at + kl, FNV1A64_INIT);
    x = fnv1a64(HCK_ZERO, 16, x);
    x = fnv1a64(h + at + kl + 16, n - at - kl - 16, x);
    char got[17];
    hex16(got, x);
    if (strcmp(got, hs) != 0)
        return fail(err, errlen, "%s: header checksum mismatch (bit flip or edited header): header says %s, "
                    "header hashes to %s", path, hs, got);
    hex16(got, fnv1a64(c->buf + c->data_off, c->len - c->data_off, FNV1A64_INIT));
    if (strcmp(got, ds) != 0)
        return fail(err, errlen, "%s: checksum mismatch (bit flip or torn write): header says %s, data hashes to %s",
                    path, ds, got);
    return 0;
}

int ckpt_read(Ckpt *c, const char *path, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    if (read_whole(c, path, err, errlen) || parse_header(c, path, err, errlen) ||
        check_layout(c, path, err, errlen) || check_sums(c, path, err, errlen))
        goto bad;
    if (!(c->path = strdup(path))) {
        fail(err, errlen, "%s: out of memory", path);
        goto bad;
    }
    return 0;
bad:
    ckpt_free(c);
    return -1;
}

const CkEntry *ckpt_find(const Ckpt *c, const char *name)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].name, name)) return &c->e[i];
    return NULL;
}

const void *ckpt_data(const Ckpt *c, const CkEntry *e)
{
    return c->buf + c->data_off + e->off;
}

int ckpt_get(const Ckpt *c, const char *name, int dtype, void *dst, size_t count, char *err, size_t errlen)
{
    const char *p = c->path ? c->path : "checkpoint", *want = ckpt_dtype_name(dtype);
    const CkEntry *e = ckpt_find(c, name);
    if (!e) return fail(err, errlen, "%s: tensor '%s' is missing", p, name);
    if (e->dtype != dtype)
        return fail(err, errlen, "%s: tensor '%s' is %s, expected %s", p, name, dtype_names[e->dtype],
                    want ? want : "an unknown dtype");
    size_t sz = dtype_sizes[dtype];
    if (count > SIZE_MAX / sz || e->nbytes != count * sz)
        return fail(err, errlen, "%s: tensor '%s' has %zu elements, expected %zu", p, name, e->nbytes / sz, count);
    if (e->nbytes) memcpy(dst, ckpt_data(c, e), e->nbytes);
    return 0;
}

const char *ckpt_meta(const Ckpt *c, const char *key)
{
    return json_string_value(json_object_get(json_object_get(c->hdr, "__metadata__"), key));
}

void ckpt_free(Ckpt *c)
{
    free(c->buf);
    free(c->e);
    free(c->path);
    json_decref(c->hdr);
    memset(c, 0, sizeof *c);
}

int ckpt_meta_i64(const Ckpt *c, const char *key, int64_t *out, char *err, size_t errlen)
{
    const char *s = ckpt_meta(c, key);
    char *end = NULL;
    errno = 0;
    if (s) *out = strtoll(s, &end, 10);
    if (!s || !*s || *end || errno == ERANGE) {
        snprintf(err, errlen, "%s: __metadata__.%s: missing or not an integer", c->path, key);
        return -1;
    }
    return 0;
}
