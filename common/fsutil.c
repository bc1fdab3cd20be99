/* fsutil: mkdir -p, writability probe, directory fsync, stale temporary
 * files (see fsutil.h). */
#include "common/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

int fs_mkdir_p(const char *dir, const char *key, char *err, size_t errlen)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return snprintf(err, errlen, "%s: path too long", key), -1;
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char c = *p;
        *p = 0;
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return snprintf(err, errlen, "%s: cannot create '%s': %s", key, path, strerror(errno)), -1;
        *p = c;
        if (!c) break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return snprintf(err, errlen, "%s: '%s' is not a directory", key, dir), -1;
    return 0;
}

int fs_check_dir(const char *dir, const char *key, char *err, size_t errlen)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return snprintf(err, errlen, "%s: path too long", key), -1;
    struct stat st;
    while (stat(path, &st) != 0) {
        char *slash = strrchr(path, '/');
        if (errno != ENOENT || !slash || slash == path) {
            if (errno == ENOENT) snprintf(path, sizeof path, "%s", slash == path ? "/" : ".");
            else return snprintf(err, errlen, "%s: cannot create '%s': %s", key, dir, strerror(errno)), -1;
            continue;
        }
        *slash = 0; /* the parent would be created */
    }
    if (!S_ISDIR(st.st_mode)) return snprintf(err, errlen, "%s: '%s' is not a directory", key, path), -1;
    if (access(path, W_OK | X_OK) != 0)
        return snprintf(err, errlen, "%s: cannot write in '%s': %s", key, path, strerror(errno)), -1;
    return 0;
}

int fs_probe_writable(const char *dir, const char *key, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/.clipd-probe.%ld", dir, (long)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) return snprintf(err, errlen, "%s: cannot write in '%s': %s", key, dir, strerror(errno)), -1;
    close(fd);
    unlink(path);
    return 0;
}

int fs_open_regular(const char *path, int allow_null, const char **why)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        *why = strerror(errno);
        if (fd >= 0) close(fd);
        return -1;
    }
    int null_dev = S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3);
    *why = S_ISDIR(st.st_mode) ? "a directory, expected a file"
         : !S_ISREG(st.st_mode) && !(allow_null && null_dev) ? "not a regular file" : NULL;
    if (*why || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
        if (!*why) *why = strerror(errno);
        close(fd);
        errno = EINVAL;
        return -1;
    }
    return fd;
}

int fs_fsync_parent(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return -1;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    free(copy);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static void add_note(char *notes, size_t cap, const char *what, const char *path, const char *why)
{
    size_t n = notes && cap ? strlen(notes) : cap;
    if (n + 1 < cap) snprintf(notes + n, cap - n, "%s %s%s%s\n", what, path, why ? ": " : "", why ? why : "");
}

static char run_tag[64] = "default";

void fs_set_run_tag(const char *run_name)
{
    snprintf(run_tag, sizeof run_tag, "%s", run_name);
}

int fs_tmp_path(char *out, size_t len, const char *path)
{
    const char *slash = strrchr(path, '/');
    int dl = slash ? (int)(slash - path) + 1 : 0;
    int w = snprintf(out, len, "%.*s.%s.tmp.clipd-%s.%ld", dl, path, path + dl, run_tag, (long)getpid());
    return w < 0 || (size_t)w >= len ? -1 : 0;
}

int fs_is_own_tmp(const char *name, const char *const *finals, int nfinals)
{
    char mid[96], final[256];
    size_t n = strlen(name), d = 0;
    while (d < n && d < 12 && name[n - 1 - d] >= '0' && name[n - 1 - d] <= '9') d++;
    int ml = snprintf(mid, sizeof mid, ".tmp.clipd-%s.", run_tag);
    if (name[0] != '.' || d == 0 || d >= 12 || ml < 0 || (size_t)ml >= sizeof mid || n < 2 + (size_t)ml + d)
        return 0;
    size_t fl = n - d - (size_t)ml - 1; /* FINAL, between the dot and mid */
    if (fl >= sizeof final || strncmp(name + 1 + fl, mid, (size_t)ml) != 0) return 0;
    memcpy(final, name + 1, fl);
    final[fl] = 0;
    for (int i = 0; i < nfinals; i++)
        if (fnmatch(finals[i], final, 0) == 0) return 1;
    return 0;
}

int fs_remove_stale(const char *dir, const char *const *finals, int nfinals, char *notes,
                    size_t notes_len, char *err, size_t errlen)
{
    if (notes && notes_len) notes[0] = 0;
    DIR *d = opendir(dir);
    if (!d && (errno == ENOENT || errno == ENOTDIR)) return 0;
    if (!d) return snprintf(err, errlen, "cannot list %s for stale temporary files: %s", dir, strerror(errno)), -1;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char path[4096 + 256];
        struct stat st;
        if (!fs_is_own_tmp(de->d_name, finals, nfinals) ||
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= (int)sizeof path ||
            lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (unlink(path) == 0) removed++, add_note(notes, notes_len, "removed", path, NULL);
        else if (errno != ENOENT) add_note(notes, notes_len, "cannot remove", path, strerror(errno));
    }
    closedir(d);
    return removed;
}
