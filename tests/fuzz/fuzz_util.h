/* fuzz_util: helpers shared by the libFuzzer harnesses in tests/fuzz/: a
 * temporary directory per input under /tmp, whole-buffer file writes, and a
 * recursive remove that never follows symlinks out of that directory. */
#ifndef CLIPD_FUZZ_UTIL_H
#define CLIPD_FUZZ_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *mkdtemp(char *tmpl); /* POSIX 2008; glibc hides it without _DEFAULT_SOURCE */

/* Make a fresh directory /tmp/clipd-fuzz-XXXXXX into out; aborts on failure
 * (a harness that cannot make a temp dir finds nothing). */
static inline void fz_mkdtemp(char *out, size_t len)
{
    snprintf(out, len, "/tmp/clipd-fuzz-XXXXXX");
    if (!mkdtemp(out)) {
        perror("mkdtemp");
        abort();
    }
}

/* Write n bytes to dir/name; returns 0 or -1. */
static inline int fz_write(const char *dir, const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    const char *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            close(fd);
            return -1;
        }
        b += w, n -= (size_t)w;
    }
    return close(fd);
}

/* Remove dirfd/name and everything under it (no symlink is followed). */
static inline void fz_rm_at(int dirfd, const char *name)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)))
                if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) fz_rm_at(fd, e->d_name);
            closedir(d);
        } else if (fd >= 0) close(fd);
        unlinkat(dirfd, name, AT_REMOVEDIR);
    } else unlinkat(dirfd, name, 0);
}

static inline void fz_rm_rf(const char *path)
{
    if (strncmp(path, "/tmp/clipd-fuzz-", 16) != 0) abort(); /* never anything else */
    fz_rm_at(AT_FDCWD, path);
}

#endif
