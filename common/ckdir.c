/* ckdir: the checkpoint policy over ckpt's file format: a run's checkpoints
 * are DIR/step-%08lld.safetensors, the newest `checkpoint.keep` of them
 * stay, temporary files a crash left are deleted, and `--resume latest`
 * finds the newest that ckpt_read verifies (see ckdir.h). */
#include "common/ckdir.h"

#include "common/fsutil.h"
#include "common/log.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ckdir_path(char *out, size_t len, const char *dir, long long step)
{
    snprintf(out, len, "%s/step-%08lld.safetensors", dir, step);
}

typedef struct {
    char name[256];
    long long step; /* -1 for a temporary file */
} DirEnt;

/* step-<digits>.safetensors -> 1 with *step; anything else -> 0 */
static int step_of(const char *name, long long *step)
{
    if (strncmp(name, "step-", 5) != 0) return 0;
    const char *p = name + 5, *q = p;
    while (*q >= '0' && *q <= '9') q++;
    if (q == p || q - p > 18 || strcmp(q, ".safetensors") != 0) return 0;
    *step = strtoll(p, NULL, 10);
    return 1;
}

static int newest_first(const void *a, const void *b)
{
    const DirEnt *x = a, *y = b;
    if (x->step != y->step) return x->step < y->step ? 1 : -1;
    return strcmp(x->name, y->name);
}

/* The checkpoints (newest first) and this run's temporary files of them (last)
 * in dir. -1 with errno if dir cannot be read. */
static int scan_dir(const char *dir, DirEnt **out, int *n)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    DirEnt *v = NULL;
    int cnt = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        long long step = -1;
        int tmp = fs_is_own_tmp(de->d_name, (const char *const[]){CKDIR_STEP_GLOB}, 1);
        if (!tmp && !step_of(de->d_name, &step)) continue;
        if (strlen(de->d_name) >= sizeof v->name) continue;
        if (cnt == cap) {
            DirEnt *nv = realloc(v, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *v);
            if (!nv) {
                free(v);
                closedir(d);
                errno = ENOMEM;
                return -1;
            }
            v = nv;
        }
        strcpy(v[cnt].name, de->d_name);
        v[cnt++].step = step;
    }
    closedir(d);
    if (cnt) qsort(v, (size_t)cnt, sizeof *v, newest_first);
    *out = v;
    *n = cnt;
    return 0;
}

/* Deletes temporary files and checkpoints beyond the newest `keep` (never
 * `written`). A file that cannot be deleted leaves a warning in err. */
static void ckdir_prune(const char *dir, long long written, int keep, char *err, size_t errlen)
{
    DirEnt *v;
    int n, rank = 0;
    if (scan_dir(dir, &v, &n) != 0) {
        log_errf(err, errlen, "%s: cannot list to delete old checkpoints: %s", dir, strerror(errno));
        return;
    }
    for (int i = 0; i < n; i++) {
        int is_step = v[i].step >= 0;
        if (is_step && (rank++ < keep || v[i].step == written)) continue;
        char p[4096 + 256];
        snprintf(p, sizeof p, "%s/%s", dir, v[i].name);
        if (unlink(p) != 0 && errno != ENOENT)
            log_errf(err, errlen, "%s: cannot delete old file: %s", p, strerror(errno));
    }
    free(v);
}

int ckdir_write(const char *dir, long long step, const CkTensor *t, int nt, const CkMeta *meta,
                int nmeta, int keep, char *path_out, size_t path_len, char *err, size_t errlen)
{
    char path[4096];
    if (err && errlen) err[0] = 0;
    if (keep < 1) return log_errf(err, errlen, "%s: checkpoint.keep is %d, must be at least 1", dir, keep);
    if (step < 0) return log_errf(err, errlen, "%s: checkpoint step %lld is negative", dir, step);
    if (nmeta < 0 || (nmeta && !meta)) return log_errf(err, errlen, "%s: %d metadata entries", dir, nmeta);
    if (strlen(dir) + 32 > sizeof path) return log_errf(err, errlen, "%s: directory name too long", dir);
    if (fs_mkdir_p(dir, "checkpoint.dir", err, errlen) != 0) return -1;
    ckdir_path(path, sizeof path, dir, step);
    CkMeta *all = malloc((size_t)(nmeta + 1) * sizeof *all);
    if (!all) return log_errf(err, errlen, "%s: out of memory", path);
    all[0] = (CkMeta){"format", CK_FORMAT};
    for (int i = 0; i < nmeta; i++) {
        if (meta[i].key && !strcmp(meta[i].key, "format")) {
            free(all);
            return log_errf(err, errlen, "%s: metadata 'format' is reserved (ckdir_write sets it)", path);
        }
        all[i + 1] = meta[i];
    }
    int rc = ckpt_write_file(path, t, nt, all, nmeta + 1, err, errlen);
    free(all);
    if (rc != 0) return -1;
    if (path_out && path_len) snprintf(path_out, path_len, "%s", path);
    ckdir_prune(dir, step, keep, err, errlen);
    return 0;
}

static void note(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(char *buf, size_t cap, const char *fmt, ...)
{
    size_t n = buf && cap ? strlen(buf) : cap;
    if (n + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, cap - n, fmt, ap);
    va_end(ap);
}

int ckdir_latest(const char *dir, char *path, size_t path_len, char *notes, size_t notes_len,
                 char *err, size_t errlen)
{
    DirEnt *v;
    int n, bad = 0, found = 0;
    if (notes && notes_len) notes[0] = 0;
    if (scan_dir(dir, &v, &n) != 0)
        return log_errf(err, errlen, "no valid checkpoint in %s: cannot read it: %s", dir, strerror(errno));
    for (int i = 0; i < n && !found && v[i].step >= 0; i++) {
        char p[4096 + 256], why[1024];
        Ckpt c;
        snprintf(p, sizeof p, "%s/%s", dir, v[i].name);
        if (ckpt_read(&c, p, why, sizeof why) != 0) {
            bad++;
            note(notes, notes_len, "skipping %s\n", why); /* why starts with the path */
            continue;
        }
        ckpt_free(&c);
        found = (size_t)snprintf(path, path_len, "%s", p) < path_len ? 1 : -1;
        if (found < 0) log_errf(err, errlen, "%s: path longer than %zu bytes", p, path_len);
    }
    free(v);
    if (found) return found > 0 ? 0 : -1;
    if (bad) return log_errf(err, errlen, "no valid checkpoint in %s: all %d step-*.safetensors files are invalid", dir, bad);
    return log_errf(err, errlen, "no valid checkpoint in %s: no step-*.safetensors files", dir);
}

