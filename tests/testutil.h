/* testutil: helpers shared by the unit tests (header-only, static): a test's
 * own temporary directory (made, filled, removed with everything in it). */
#ifndef CLIPD_TESTUTIL_H
#define CLIPD_TESTUTIL_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Remove a test's temporary directory tree (never follows symlinks). */
static inline void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char sub[4096];
            if (snprintf(sub, sizeof sub, "%s/%s", path, de->d_name) < (int)sizeof sub) rm_rf(sub);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

char *mkdtemp(char *tmpl);

/* A test's temporary directory and a scratch path inside it. */
typedef struct {
    char dir[64];   /* /tmp/clipd-NAME-XXXXXX */
    char path[128]; /* the last tmpdir_path */
} TmpDir;

/* Make /tmp/clipd-NAME-XXXXXX: 0, or -1 (errno set). */
static inline int tmpdir_make(TmpDir *t, const char *name)
{
    t->path[0] = 0;
    snprintf(t->dir, sizeof t->dir, "/tmp/clipd-%s-XXXXXX", name);
    return mkdtemp(t->dir) ? 0 : -1;
}

/* DIR/FILE, kept in t->path (and returned). */
static inline const char *tmpdir_path(TmpDir *t, const char *file)
{
    snprintf(t->path, sizeof t->path, "%s/%s", t->dir, file);
    return t->path;
}

/* Write n bytes to DIR/FILE: its path, or NULL if it could not be written. */
static inline const char *tmpdir_write(TmpDir *t, const char *file, const void *data, size_t n)
{
    FILE *f = fopen(tmpdir_path(t, file), "wb");
    if (!f) return NULL;
    int ok = fwrite(data, 1, n, f) == n;
    if (fclose(f) != 0) ok = 0;
    return ok ? t->path : NULL;
}

static inline void tmpdir_remove(TmpDir *t) { rm_rf(t->dir); }

/* The whole of a file, NUL-terminated, to free; *n (if n) its size. NULL
 * if it cannot be read. */
static inline char *file_slurp(const char *path, size_t *n)
{
    if (n) *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = NULL;
    size_t cap = 0, len = 0, got;
    do {
        if (len + 65536 + 1 > cap) {
            char *nb = realloc(b, cap = 2 * cap + 65536 + 1);
            if (!nb) return free(b), fclose(f), NULL;
            b = nb;
        }
        got = fread(b + len, 1, 65536, f);
        len += got;
    } while (got > 0);
    int bad = ferror(f);
    fclose(f);
    if (bad) return free(b), NULL;
    b[len] = 0;
    if (n) *n = len;
    return b;
}

/* cmocka group or test setup/teardown: *state is a TmpDir (/tmp/clipd-unit-XXXXXX). */
static inline int tmpdir_setup(void **state)
{
    TmpDir *t = calloc(1, sizeof *t);
    if (!t || tmpdir_make(t, "unit") != 0) return free(t), -1;
    *state = t;
    return 0;
}

static inline int tmpdir_teardown(void **state)
{
    TmpDir *t = *state;
    tmpdir_remove(t);
    free(t);
    return 0;
}

#endif
