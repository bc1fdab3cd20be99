/* text: checks real text data, builds or reuses the word vocabulary, writes
 * the token ids of each split, and maps a split for the batcher. Files are
 * memory-mapped, never copied; see text.h for the layout contract. */
#include "common/text.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/hash.h"
#include "common/utf8.h"

#define PATH_LEN 4096
#define VOCAB_FILE "vocab.txt"

static const char *const tokens_file[3] = {"tokens-train.u32", "tokens-valid.u32", "tokens-test.u32"};
static const char *const split_names[3] = {"train", "valid", "test"};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- files ---- */

/* A read-only mapping of a whole file; p is NULL when the file is empty. */
typedef struct {
    const uint8_t *p; /* (n) file bytes */
    size_t n;
    unsigned mode;    /* the file's permission bits: files derived from it get no more */
} Map;

/* `what` names the config key the file comes from, for the message. */
static int map_open(Map *m, const char *path, const char *what, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    const char *why;
    int fd = fs_open_regular(path, 0, &why); /* a FIFO must not hang the start */
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) != 0) why = strerror(errno), close(fd), fd = -1;
    if (fd < 0) return fail(err, errlen, "%s: cannot read '%s': %s", what, path, why);
    m->mode = (unsigned)st.st_mode & 0777;
    if (st.st_size > 0) {
        void *b = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (b == MAP_FAILED) {
            int e = errno;
            close(fd);
            return fail(err, errlen, "%s: cannot map '%s': %s", what, path, strerror(e));
        }
        m->p = b, m->n = (size_t)st.st_size;
    }
    close(fd);
    return 0;
}

static void map_close(Map *m)
{
    if (m->p) munmap((void *)m->p, m->n);
    memset(m, 0, sizeof *m);
}

/* The files of data.path: one file cut by fraction, or train.txt + valid.txt. */
typedef struct {
    int one_file;
    int has_test;           /* a directory with test.txt */
    char path[3][PATH_LEN]; /* train, valid (the same file when one_file), test */
} Source;

static int source_resolve(Source *s, const Config *c, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (!c->data_path[0]) return fail(err, errlen, "data.path: required when data.source is text");
    struct stat st;
    if (stat(c->data_path, &st) != 0)
        return fail(err, errlen, "data.path: cannot read '%s': %s", c->data_path, strerror(errno));
    s->one_file = !S_ISDIR(st.st_mode);
    for (int k = 0; k < 2; k++) {
        int len = s->one_file ? snprintf(s->path[k], PATH_LEN, "%s", c->data_path)
                              : snprintf(s->path[k], PATH_LEN, "%s/%s.txt", c->data_path, split_names[k]);
        if (len >= PATH_LEN) return fail(err, errlen, "data.path: path too long");
    }
    if (!s->one_file && snprintf(s->path[TEXT_TEST], PATH_LEN, "%s/test.txt", c->data_path) < PATH_LEN)
        s->has_test = stat(s->path[TEXT_TEST], &st) == 0;
    return 0;
}

/* Tokens of a one-file source held out for validation: the tail. */
static size_t valid_tail(size_t n, double fraction) { return (size_t)((double)n * fraction); }

/* "data/train.txt", or "the train split of data/all.txt". */
static const char *split_desc(const Source *s, int split, char *buf, size_t len)
{
    if (s->one_file) snprintf(buf, len, "the %s split of %s", split_names[split], s->path[split]);
    else snprintf(buf, len, "%s", s->path[split]);
    return buf;
}

/* ---- UTF-8 ---- */

/* 1-based line and column (in characters) of byte i, whose prefix is valid. */
static void utf8_where(const uint8_t *p, size_t i, size_t *line, size_t *col)
{
    size_t ls = 0;
    *line = 1;
    for (size_t k = 0; k < i; k++)
        if (p[k] == '\n') (*line)++, ls = k + 1;
    *col = 1;
    for (size_t k = ls; k < i; k++) *col += (p[k] & 0xC0) != 0x80;
}

static int utf8_report(const uint8_t *p, size_t i, size_t bad, int cut, const char *name, char *err,
                       size_t errlen)
{
    size_t line, col;
    utf8_where(p, i, &line, &col);
    if (p[i] == 0) return fail(err, errlen, "%s:%zu:%zu: not text (NUL byte): a binary file?", name, line, col);
    if (cut) {
        int k = p[i] < 0xE0 ? 2 : p[i] < 0xF0 ? 3 : 4;
        return fail(err, errlen, "%s:%zu:%zu: not UTF-8 text (byte 0x%02x starts a %d-byte character "
                                 "cut off by the end of the file)", name, line, col, p[i], k);
    }
    if (bad == 0) return fail(err, errlen, "%s:%zu:%zu: not UTF-8 text (byte 0x%02x)", name, line, col, p[i]);
    char seq[32] = "";
    for (size_t j = 0; j <= bad; j++)
        snprintf(seq + strlen(seq), sizeof seq - strlen(seq), " 0x%02x", p[i + j]);
    return fail(err, errlen, "%s:%zu:%zu: not UTF-8 text (bytes%s)", name, line, col, seq);
}

/* Valid UTF-8 with no NUL byte; else file:line:col of the first bad byte. */
static int utf8_check(const uint8_t *p, size_t n, const char *name, char *err, size_t errlen)
{
    const uint64_t ones = UINT64_C(0x0101010101010101), highs = UINT64_C(0x8080808080808080);
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) { /* eight ASCII bytes, none of them NUL, at once */
            uint64_t v;
            memcpy(&v, p + i, 8);
            if (((v | ((v - ones) & ~v)) & highs) == 0) {
                i += 8;
                continue;
            }
        }
        uint32_t cp;
        size_t bad = 0;
        int k = p[i] ? utf8_decode(p + i, n - i, &cp, &bad) : 0; /* NUL: not text */
        if (k == 0) return utf8_report(p, i, bad, i + bad >= n, name, err, errlen);
        i += (size_t)k;
    }
    return 0;
}

/* ---- words ---- */

static int is_blank(uint8_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

enum { TOK_END = 0, TOK_WORD = 1, TOK_EOS = 2 };

/* The next token of p[0, n) from *i: a word (*w, *wl) or a newline. */
static int next_token(const uint8_t *p, size_t n, size_t *i, const uint8_t **w, size_t *wl)
{
    size_t k = *i;
    while (k < n && is_blank(p[k])) k++;
    if (k == n) return *i = k, TOK_END;
    if (p[k] == '\n') return *i = k + 1, TOK_EOS;
    size_t s = k;
    while (k < n && !is_blank(p[k]) && p[k] != '\n') k++;
    *w = p + s, *wl = k - s, *i = k;
    return TOK_WORD;
}

static size_t count_tokens(const Map *m)
{
    size_t i = 0, n = 0, wl;
    const uint8_t *w;
    while (next_token(m->p, m->n, &i, &w, &wl) != TOK_END) n++;
    return n;
}

/* Special ids: a literal "<unk>" or "<eos>" in the text is that id. */
static int special_id(const uint8_t *w, size_t len)
{
    if (len == 5 && !memcmp(w, "<unk>", 5)) return 0;
    if (len == 5 && !memcmp(w, "<eos>", 5)) return 1;
    return -1;
}

/* Open-addressing hash of words (slices of a mapping, never copied). */
typedef struct {
    const uint8_t *w; /* (len) the word's bytes; NULL: free slot */
    size_t len;
    uint64_t count;   /* occurrences in the train split */
    uint32_t id;      /* vocabulary id; 0 (<unk>) when not kept */
} Entry;

typedef struct {
    Entry *e; /* (cap) */
    size_t cap, n;
} Table;

static Entry *table_slot(const Table *t, const uint8_t *w, size_t len)
{
    size_t i = (size_t)fnv1a64(w, len, FNV1A64_INIT) & (t->cap - 1);
    while (t->e[i].w && (t->e[i].len != len || memcmp(t->e[i].w, w, len)))
        i = (i + 1) & (t->cap - 1);
    return &t->e[i];
}

static Entry *table_get(const Table *t, const uint8_t *w, size_t len)
{
    if (!t->cap) return NULL;
    Entry *e = table_slot(t, w, len);
    return e->w ? e : NULL;
}

/* The entry of w, inserted with count 0 if new (*added = 1); NULL: no memory. */
static Entry *table_put(Table *t, const uint8_t *w, size_t len, int *added)
{
    if ((t->n + 1) * 2 > t->cap) {
        Table g = {calloc(t->cap ? t->cap * 2 : 1024, sizeof(Entry)), t->cap ? t->cap * 2 : 1024, t->n};
        if (!g.e) return NULL;
        for (size_t i = 0; i < t->cap; i++)
            if (t->e[i].w) *table_slot(&g, t->e[i].w, t->e[i].len) = t->e[i];
        free(t->e);
        *t = g;
    }
    Entry *e = table_slot(t, w, len);
    *added = !e->w;
    if (!e->w) e->w = w, e->len = len, t->n++;
    return e;
}

static void table_free(Table *t)
{
    free(t->e);
    memset(t, 0, sizeof *t);
}

/* Count the words among the first `limit` tokens of m. */
static int count_words(Table *t, const Map *m, size_t limit, char *err, size_t errlen)
{
    size_t i = 0, wl;
    const uint8_t *w;
    int kind, added;
    for (size_t k = 0; k < limit && (kind = next_token(m->p, m->n, &i, &w, &wl)) != TOK_END; k++) {
        if (kind != TOK_WORD || special_id(w, wl) >= 0) continue;
        Entry *e = table_put(t, w, wl, &added);
        if (!e) return fail(err, errlen, "out of memory counting words");
        e->count++;
    }
    return 0;
}

/* Count descending, then byte order (a prefix first). */
static int entry_cmp(const void *a, const void *b)
{
    const Entry *x = *(const Entry *const *)a, *y = *(const Entry *const *)b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    int d = memcmp(x->w, y->w, x->len < y->len ? x->len : y->len);
    if (d) return d;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* The vocabulary from counted train words: fills (*kept)[0..*nkept) in id
 * order from id 2, sets every entry's id, adds <unk> and <eos>. */
static int vocab_build(Table *t, int min_count, Entry ***kept, size_t *nkept, char *err, size_t errlen)
{
    Entry **k = malloc((t->n ? t->n : 1) * sizeof *k);
    if (!k) return fail(err, errlen, "out of memory building the vocabulary");
    size_t n = 0;
    for (size_t i = 0; i < t->cap; i++)
        if (t->e[i].w && t->e[i].count >= (uint64_t)min_count) k[n++] = &t->e[i];
    qsort(k, n, sizeof *k, entry_cmp);
    for (size_t i = 0; i < n; i++) k[i]->id = (uint32_t)(i + 2);
    *kept = k, *nkept = n;
    return 0;
}

/* Add <unk> and <eos> (ids 0, 1) for looking tokens up. Keeps entry pointers
 * valid only if no growth happens: call after vocab_build's pointers are used. */
static int vocab_add_specials(Table *t, char *err, size_t errlen)
{
    static const uint8_t unk[] = "<unk>", eos[] = "<eos>";
    int added;
    Entry *u = table_put(t, unk, 5, &added), *e = u ? table_put(t, eos, 5, &added) : NULL;
    if (!e) return fail(err, errlen, "out of memory building the vocabulary");
    table_get(t, unk, 5)->id = 0, e->id = 1;
    return 0;
}

/* "raise model.vocab to N or data.min_count to M (N' words)". */
static int vocab_too_big(const Config *c, const char *desc, Entry **kept, size_t nkept, char *err,
                         size_t errlen)
{
    size_t V = (size_t)c->model_vocab, fit = 0;
    uint64_t m = kept[V - 2]->count + 1; /* the smallest cut that drops kept[V-2] and later */
    while (fit < nkept && kept[fit]->count >= m) fit++;
    return fail(err, errlen, "model.vocab %d is too small for the vocabulary of %s: %zu words "
                             "(<unk>, <eos> and %zu seen at least data.min_count %d times); raise "
                             "model.vocab to %zu, or data.min_count to %" PRIu64 " (%zu words)",
                c->model_vocab, desc, nkept + 2, nkept, c->data_min_count, nkept + 2, m, fit + 2);
}

/* Temporary file, renamed over its final name once complete and synced. */
typedef struct {
    FILE *f;
    char tmp[PATH_LEN + 128], path[PATH_LEN];
} Out;

/* mode: the permission bits of the data it derives from (private data
 * stays private), narrowed further by the umask. */
static int out_open(Out *o, const char *dir, const char *name, unsigned mode, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    if (snprintf(o->path, sizeof o->path, "%s/%s", dir, name) >= (int)sizeof o->path)
        return fail(err, errlen, "run.dir: path too long");
    if (fs_tmp_path(o->tmp, sizeof o->tmp, o->path) != 0) return fail(err, errlen, "run.dir: path too long");
    mode_t um = umask(0);
    umask(um);
    int fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, (mode_t)(mode & 0666));
    if (fd >= 0 && fchmod(fd, (mode_t)(mode & 0666) & ~um) != 0) close(fd), fd = -1;
    o->f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!o->f) {
        int e = errno;
        if (fd >= 0) close(fd);
        return fail(err, errlen, "run.dir: cannot write '%s': %s", o->tmp, strerror(e));
    }
    setvbuf(o->f, NULL, _IOFBF, 1 << 20);
    return 0;
}

static void out_abort(Out *o)
{
    if (o->f) fclose(o->f), unlink(o->tmp);
    o->f = NULL;
}

static int out_commit(Out *o, char *err, size_t errlen)
{
    FILE *f = o->f;
    o->f = NULL;
    int bad = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) bad = 1, e = errno;
    if (!bad && rename(o->tmp, o->path) != 0) bad = 1, e = errno;
    if (bad) {
        unlink(o->tmp);
        return fail(err, errlen, "run.dir: cannot write '%s': %s", o->path, strerror(e));
    }
    fs_fsync_parent(o->path);
    return 0;
}

static int vocab_write(const Config *c, Entry **kept, size_t nkept, unsigned mode, char *err,
                       size_t errlen)
{
    Out o;
    if (out_open(&o, c->run_dir, VOCAB_FILE, mode, err, errlen) != 0) return -1;
    fputs("<unk>\n<eos>\n", o.f);
    for (size_t i = 0; i < nkept; i++) fwrite(kept[i]->w, 1, kept[i]->len, o.f), fputc('\n', o.f);
    return out_commit(&o, err, errlen);
}

/* Read a previous run's vocab.txt into t (words point into *m). */
static int vocab_load(Table *t, Map *m, const char *path, const Config *c, char *err, size_t errlen)
{
    if (map_open(m, path, "run.dir", err, errlen) != 0) return -1;
    if (utf8_check(m->p, m->n, path, err, errlen) != 0) return -1;
    size_t i = 0, id = 0;
    while (i < m->n) {
        const uint8_t *nl = memchr(m->p + i, '\n', m->n - i), *w = m->p + i;
        size_t len = nl ? (size_t)(nl - w) : m->n - i, line = id + 1;
        const char *why = !nl ? "the last line has no newline" : len == 0 ? "an empty line" : NULL;
        for (size_t k = 0; !why && k < len; k++)
            if (is_blank(w[k])) why = "a word with a blank in it";
        if (!why && special_id(w, len) != (id < 2 ? (int)id : -1))
            why = id < 2 ? "lines 1 and 2 must be <unk> and <eos>" : "<unk> or <eos> past line 2";
        int added = 0;
        Entry *e = why ? NULL : table_put(t, w, len, &added);
        if (!why && !e) return fail(err, errlen, "out of memory reading '%s'", path);
        if (!why && !added) why = "a word seen twice";
        if (why)
            return fail(err, errlen, "run.dir: %s:%zu: not a vocabulary file (%s); it comes from an "
                                     "earlier run in this run.dir: remove it, or use another run.dir",
                        path, line, why);
        e->id = (uint32_t)id++;
        i += len + 1;
    }
    if (id < 2)
        return fail(err, errlen, "run.dir: %s: not a vocabulary file (fewer than 2 lines)", path);
    if (id > (size_t)c->model_vocab)
        return fail(err, errlen, "model.vocab %d is too small for the vocabulary this run reuses: "
                                 "%s has %zu words", c->model_vocab, path, id);
    return 0;
}

/* Ids of m's tokens, little-endian uint32: the first `cut` to out[0], the
 * rest to out[1]. */
static void tokens_write(const Table *t, const Map *m, size_t cut, Out *out[2])
{
    enum { CHUNK = 16384 };
    uint8_t buf[CHUNK * 4]; /* (CHUNK, 4) little-endian ids */
    size_t i = 0, k = 0, nb = 0, wl;
    const uint8_t *w;
    int kind;
    Out *o = out[0];
    while ((kind = next_token(m->p, m->n, &i, &w, &wl)) != TOK_END) {
        if (k++ == cut) {
            if (nb) fwrite(buf, 4, nb, o->f), nb = 0;
            o = out[1];
        }
        uint32_t id = 1;
        if (kind == TOK_WORD) {
            const Entry *e = table_get(t, w, wl);
            id = e ? e->id : 0;
        }
        uint8_t *p = buf + nb * 4;
        p[0] = (uint8_t)id, p[1] = (uint8_t)(id >> 8), p[2] = (uint8_t)(id >> 16), p[3] = (uint8_t)(id >> 24);
        if (++nb == CHUNK) fwrite(buf, 4, nb, o->f), nb = 0;
    }
    if (nb) fwrite(buf, 4, nb, o->f); /* write errors surface in out_commit */
}

/* ---- checks ---- */

/* A split must be non-empty and give the layout enough tokens per stream. */
static int check_split(const Config *c, int W, const Source *s, int split, size_t n, size_t total,
                       char *err, size_t errlen)
{
    char d[PATH_LEN + 64];
    split_desc(s, split, d, sizeof d);
    if (n == 0 && s->one_file)
        return fail(err, errlen, "data.path: empty %s split: data.valid_fraction %g of the %zu tokens "
                                 "of %s is %zu tokens", split_names[split], c->data_valid_fraction,
                    total, s->path[0], valid_tail(total, c->data_valid_fraction));
    if (n == 0) return fail(err, errlen, "data.path: empty %s split: %s has no tokens", split_names[split], d);
    uint64_t S = (uint64_t)W * (uint64_t)c->data_batch_per_worker, L = text_stream_len(n, S);
    uint64_t T = (uint64_t)c->data_seq_len;
    uint64_t steps = split == TEXT_TRAIN ? (uint64_t)c->train_steps_per_epoch : (uint64_t)c->data_valid_batches;
    const char *key = split == TEXT_TRAIN ? "train.steps_per_epoch" : "data.valid_batches";
    char streams[96];
    snprintf(streams, sizeof streams, "%d worker%s x %d stream%s", W, W == 1 ? "" : "s",
             c->data_batch_per_worker, c->data_batch_per_worker == 1 ? "" : "s");
    if (L < T)
        return fail(err, errlen, "data.seq_len %d is longer than a stream of the %s split: %s has %zu "
                                 "tokens, %" PRIu64 " per stream with %s",
                    c->data_seq_len, split_names[split], d, n, L, streams);
    if (steps * T > L)
        return fail(err, errlen, "%s %" PRIu64 " x data.seq_len %d needs %" PRIu64 " tokens per stream, "
                                 "%s gives %" PRIu64 " with %s (at most %" PRIu64 " fit)",
                    key, steps, c->data_seq_len, steps * T, d, L, streams, L / T);
    return 0;
}

static int check_splits(const Config *c, int W, const Source *s, const size_t n[2], size_t total,
                        char *err, size_t errlen)
{
    if (check_split(c, W, s, TEXT_TRAIN, n[0], total, err, errlen) != 0) return -1;
    if (c->data_valid_batches > 0 && check_split(c, W, s, TEXT_VALID, n[1], total, err, errlen) != 0)
        return -1;
    return 0;
}

/* ---- prepare ---- */

/* The test split's ids, RUN_DIR/tokens-test.u32, with the train vocabulary. */
static int test_tokens_write(const Config *c, const Source *s, const Table *t, unsigned mode, char *err,
                             size_t errlen)
{
    Map f;
    Out out = {0}, *dst[2] = {&out, &out};
    if (map_open(&f, s->path[TEXT_TEST], "data.path", err, errlen) != 0) return -1;
    int rc = utf8_check(f.p, f.n, s->path[TEXT_TEST], err, errlen);
    if (!rc) rc = out_open(&out, c->run_dir, tokens_file[TEXT_TEST], mode, err, errlen);
    if (!rc) tokens_write(t, &f, SIZE_MAX, dst), rc = out_commit(&out, err, errlen);
    out_abort(&out);
    map_close(&f);
    return rc;
}

/* write 0: every check, nothing written (clipd --check). */
static int prepare_words(const Config *c, int W, const Source *s, Map f[2], int write, char *err, size_t errlen)
{
    int nf = s->one_file ? 1 : 2;
    size_t n[2], total = 0;
    unsigned mode = f[0].mode & (nf == 2 ? f[1].mode : 0777); /* of the derived files */
    if (s->one_file) {
        total = count_tokens(&f[0]);
        n[1] = valid_tail(total, c->data_valid_fraction), n[0] = total - n[1];
    } else {
        n[0] = count_tokens(&f[0]), n[1] = count_tokens(&f[1]);
    }
    if (check_splits(c, W, s, n, total, err, errlen) != 0) return -1;
    if (write && fs_mkdir_p(c->run_dir, "run.dir", err, errlen) != 0) return -1;
    char vpath[PATH_LEN + 16], d[PATH_LEN + 64];
    snprintf(vpath, sizeof vpath, "%s/%s", c->run_dir, VOCAB_FILE);
    Table t = {0};
    Map vm = {0};
    Entry **kept = NULL;
    size_t nkept = 0;
    Out out[2] = {{0}, {0}}, *o[2] = {&out[0], &out[1]};
    int rc = -1, reuse = access(vpath, F_OK) == 0;
    if (reuse) {
        if (vocab_load(&t, &vm, vpath, c, err, errlen) != 0) goto done;
        if (!write) {
            rc = 0;
            goto done;
        }
    } else {
        if (count_words(&t, &f[0], n[0], err, errlen) != 0 ||
            vocab_build(&t, c->data_min_count, &kept, &nkept, err, errlen) != 0)
            goto done;
        if (nkept + 2 > (size_t)c->model_vocab) {
            vocab_too_big(c, split_desc(s, TEXT_TRAIN, d, sizeof d), kept, nkept, err, errlen);
            goto done;
        }
        if (!write) {
            rc = 0;
            goto done;
        }
        if (vocab_write(c, kept, nkept, mode, err, errlen) != 0) goto done;
        free(kept), kept = NULL; /* entry pointers die when specials grow the table */
        if (vocab_add_specials(&t, err, errlen) != 0) goto done;
    }
    if (out_open(o[0], c->run_dir, tokens_file[0], mode, err, errlen) != 0 ||
        out_open(o[1], c->run_dir, tokens_file[1], mode, err, errlen) != 0)
        goto done;
    for (int k = 0; k < nf; k++) {
        Out *dst[2] = {o[k], o[1]};
        tokens_write(&t, &f[k], nf == 1 ? n[0] : SIZE_MAX, dst);
    }
    if (out_commit(o[0], err, errlen) != 0 || out_commit(o[1], err, errlen) != 0) goto done;
    if (s->has_test && test_tokens_write(c, s, &t, mode, err, errlen) != 0) goto done;
    rc = 0;
done:
    out_abort(o[0]), out_abort(o[1]);
    free(kept);
    table_free(&t);
    map_close(&vm);
    return rc;
}

static int prepare(const Config *c, int W, int write, char *err, size_t errlen)
{
    if (c->data_tokenizer == TOK_BYTES && c->model_vocab < 256)
        return fail(err, errlen, "model.vocab %d must be >= 256 when data.tokenizer is bytes "
                                 "(one id per byte value)", c->model_vocab), CFG_ERR;
    Source s;
    if (source_resolve(&s, c, err, errlen) != 0) return CFG_ERR;
    int nf = s.one_file ? 1 : 2, rc = -1;
    Map f[2] = {{0}, {0}};
    for (int k = 0; k < nf; k++)
        if (map_open(&f[k], s.path[k], "data.path", err, errlen) != 0 ||
            utf8_check(f[k].p, f[k].n, s.path[k], err, errlen) != 0)
            goto done;
    if (c->data_tokenizer == TOK_WORDS) {
        rc = prepare_words(c, W, &s, f, write, err, errlen);
    } else {
        size_t n[2] = {f[0].n, nf == 2 ? f[1].n : 0};
        if (s.one_file) n[1] = valid_tail(f[0].n, c->data_valid_fraction), n[0] = f[0].n - n[1];
        rc = check_splits(c, W, &s, n, f[0].n, err, errlen);
    }
done:
    map_close(&f[0]), map_close(&f[1]);
    return rc == 0 ? 0 : CFG_ERR;
}

int text_prepare(const Config *c, int W, char *err, size_t errlen) { return prepare(c, W, 1, err, errlen); }

int text_check(const Config *c, int W, char *err, size_t errlen) { return prepare(c, W, 0, err, errlen); }

/* ---- workers ---- */

/* The files workers have mapped, for text_map_path (read in a signal
 * handler: plain static data, written only outside it). */
#define MAPS_MAX 8
static struct {
    const uint8_t *p;
    size_t n;
    char path[PATH_LEN + 32]; /* RUN_DIR/tokens-*.u32 or data.path */
} maps[MAPS_MAX];

static void maps_add(const void *p, size_t n, const char *path)
{
    for (int i = 0; i < MAPS_MAX; i++)
        if (!maps[i].p) {
            snprintf(maps[i].path, sizeof maps[i].path, "%s", path);
            maps[i].n = n;
            maps[i].p = p;
            return;
        }
}

const char *text_map_path(const void *addr)
{
    const uint8_t *a = addr;
    for (int i = 0; i < MAPS_MAX; i++)
        if (maps[i].p && a >= maps[i].p && a < maps[i].p + maps[i].n) return maps[i].path;
    return NULL;
}

int text_split_tokens(const Config *c, int split, size_t *n, char *err, size_t errlen)
{
    Source s;
    Map m;
    *n = 0;
    if (source_resolve(&s, c, err, errlen) != 0) return -1;
    if (split == TEXT_TEST && !s.has_test) return 0;
    if (map_open(&m, s.path[split], "data.path", err, errlen) != 0) return -1;
    size_t total = c->data_tokenizer == TOK_WORDS ? count_tokens(&m) : m.n;
    size_t tail = s.one_file ? valid_tail(total, c->data_valid_fraction) : 0;
    *n = s.one_file ? (split == TEXT_VALID ? tail : total - tail) : total;
    map_close(&m);
    return 0;
}

int text_open(TokenSeq *s, const Config *c, int split, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (split != TEXT_TRAIN && split != TEXT_VALID && split != TEXT_TEST)
        return fail(err, errlen, "text: no split %d", split);
    Map m;
    if (c->data_tokenizer == TOK_WORDS) {
        char path[PATH_LEN + 32];
        snprintf(path, sizeof path, "%s/%s", c->run_dir, tokens_file[split]);
        if (map_open(&m, path, "run.dir", err, errlen) != 0) return -1;
        if (m.n % 4) {
            map_close(&m);
            return fail(err, errlen, "run.dir: '%s' is not a token file (%zu bytes, not a multiple of 4)",
                        path, m.n);
        }
        s->width = 4, s->n = m.n / 4, s->base = m.p;
        maps_add(m.p, m.n, path);
    } else {
        Source src;
        if (source_resolve(&src, c, err, errlen) != 0) return -1;
        if (split == TEXT_TEST && !src.has_test)
            return fail(err, errlen, "data.path: '%s' has no test.txt", c->data_path);
        if (map_open(&m, src.path[split], "data.path", err, errlen) != 0) return -1;
        size_t tail = src.one_file ? valid_tail(m.n, c->data_valid_fraction) : 0;
        size_t first = src.one_file && split == TEXT_VALID ? m.n - tail : 0;
        s->width = 1, s->n = src.one_file ? (split == TEXT_VALID ? tail : m.n - tail) : m.n;
        s->base = m.p ? m.p + first : NULL;
        maps_add(m.p, m.n, src.path[split]);
    }
    s->map = (void *)m.p, s->maplen = m.n;
    return 0;
}

void text_close(TokenSeq *s)
{
    for (int i = 0; i < MAPS_MAX && s->map; i++)
        if (maps[i].p == s->map) maps[i].p = NULL;
    if (s->map) munmap(s->map, s->maplen);
    memset(s, 0, sizeof *s);
}
