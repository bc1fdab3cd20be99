/* runlog: JSON-lines writers for steps, epochs and events (see runlog.h). */
#include "daemon/runlog.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fsutil.h"

const char *json_num(char *buf, size_t len, double x)
{
    if (!isfinite(x)) snprintf(buf, len, "null");
    else snprintf(buf, len, "%.17g", x);
    return buf;
}

const char *json_escape(char *buf, size_t len, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < len; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') buf[n++] = '\\', buf[n++] = (char)ch;
        else if (ch < 0x20) n += (size_t)snprintf(buf + n, len - n, "\\u%04x", ch);
        else buf[n++] = (char)ch;
    }
    if (len) buf[n < len ? n : len - 1] = 0;
    return buf;
}

/* Whether a line stays when its log is cut back: a whole line that reads as
 * its record (schema; NULL: tensors.jsonl, any JSON object) with the integer
 * `key` in [0, max]; with drop_epoch_end, not an epoch-end event at exactly
 * max (the resumed run logs it again). */
static int keep_line(const char *line, const RecSchema *schema, const char *key, int64_t max,
                     int drop_epoch_end)
{
    union { StepLine s; EpochLine e; EventLine v; } rec;
    char err[256];
    json_t *o = json_loads(line, 0, NULL), *v = json_object_get(o, key), *at = json_object_get(o, "at");
    int keep = json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= max &&
               (!schema || rec_parse(schema, &rec, o, err, sizeof err) == 0);
    if (keep && drop_epoch_end && json_integer_value(v) == max && json_is_string(at) &&
        !strcmp(json_string_value(at), "epoch_end"))
        keep = 0;
    json_decref(o);
    return keep;
}

/* Keep the lines keep_line keeps. The result is written to a temporary
 * file, fsynced and renamed over the old. */
static int cut_file(const char *path, const RecSchema *schema, const char *key, int64_t max,
                    int drop_epoch_end, char *err, size_t errlen)
{
    int ifd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), ofd = -1;
    FILE *in = ifd >= 0 ? fdopen(ifd, "r") : NULL;
    if (!in) return errno == ENOENT ? 0 : (snprintf(err, errlen, "run.dir: cannot read '%s': %s%s", path,
                                                     strerror(errno), errno == ELOOP ? " (a symlink: refused)" : ""), -1);
    char tmp[CFG_STR_MAX + 128];
    if (fs_tmp_path(tmp, sizeof tmp, path) == 0)
        ofd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    FILE *out = ofd >= 0 ? fdopen(ofd, "w") : NULL;
    if (!out) {
        if (ofd >= 0) close(ofd);
        fclose(in);
        snprintf(err, errlen, "run.dir: cannot cut '%s' back to the checkpoint: cannot create '%s': %s",
                 path, tmp, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, in) > 0) {
        if (!strchr(line, '\n')) break; /* a torn last line from a crash */
        if (keep_line(line, schema, key, max, drop_epoch_end)) fputs(line, out);
    }
    free(line);
    fclose(in);
    int bad = fflush(out) != 0 || fsync(fileno(out)) != 0;
    bad |= fclose(out) != 0;
    if (bad || rename(tmp, path) != 0 || fs_fsync_parent(path) != 0) {
        snprintf(err, errlen, "run.dir: cannot cut '%s' back to the checkpoint: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

#define LINE_MAX_BYTES (64 * 1024) /* the longest line: an event with every tensor's norm */

static const char *const log_names[LOG_FILES] = {"steps.jsonl", "epochs.jsonl", "events.jsonl",
                                                 "tensors.jsonl", "sessions.jsonl"};

static void close_all(RunLog *l)
{
    for (int i = 0; i < LOG_FILES; i++) {
        if (l->fd[i] >= 0) close(l->fd[i]);
        l->fd[i] = -1;
    }
}

static int open_all(RunLog *l, int truncate, char *err, size_t errlen)
{
    for (int i = 0; i < LOG_FILES; i++) {
        char path[CFG_STR_MAX + 32];
        snprintf(path, sizeof path, "%s/%s", l->dir, log_names[i]);
        /* O_NOFOLLOW: a symlink planted as a log never redirects the writes */
        l->fd[i] = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | (truncate ? O_TRUNC : 0), 0644);
        l->torn[i] = 0;
        if (l->fd[i] < 0) {
            snprintf(err, errlen, "run.dir: cannot open '%s': %s%s", path, strerror(errno),
                     errno == ELOOP ? " (a symlink: refused)" : "");
            close_all(l);
            return -1;
        }
    }
    return 0;
}

int runlog_check(const char *dir, char *err, size_t errlen)
{
    for (int i = 0; i <= LOG_FILES; i++) {
        char path[CFG_STR_MAX + 32];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, i < LOG_FILES ? log_names[i] : "config.yaml");
        if (lstat(path, &st) != 0 || S_ISREG(st.st_mode)) continue;
        snprintf(err, errlen, "run.dir: '%s' is %s, not a file clipd wrote: refused (remove it)", path,
                 S_ISLNK(st.st_mode) ? "a symbolic link" : "not a regular file");
        return -1;
    }
    return 0;
}

int runlog_open(RunLog *l, const char *dir, const LogKeep *keep, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    for (int i = 0; i < LOG_FILES; i++) l->fd[i] = -1;
    snprintf(l->dir, sizeof l->dir, "%s", dir);
    if (!(l->line = malloc(LINE_MAX_BYTES))) return snprintf(err, errlen, "out of memory"), -1;
    l->cap = LINE_MAX_BYTES;
    if (fs_mkdir_p(dir, "run.dir", err, errlen) != 0) return runlog_close(l), -1;
    if (!keep) return open_all(l, 1, err, errlen) ? (runlog_close(l), -1) : 0;
    const char *keys[] = {"seq", "epoch", "seq", "seq"};
    const RecSchema *schemas[] = {&rec_step, &rec_epoch, &rec_event, NULL};
    int64_t max[] = {keep->seq, keep->epochs, keep->seq, keep->seq};
    for (int i = 0; i < LOG_SESSIONS; i++) { /* sessions.jsonl keeps its whole history */
        char path[CFG_STR_MAX + 32];
        snprintf(path, sizeof path, "%s/%s", dir, log_names[i]);
        if (cut_file(path, schemas[i], keys[i], max[i], i == LOG_EVENTS && keep->drop_epoch_end, err, errlen))
            return runlog_close(l), -1;
    }
    return open_all(l, 0, err, errlen) ? (runlog_close(l), -1) : 0;
}

int runlog_reopen(RunLog *l, char *err, size_t errlen)
{
    close_all(l);
    return open_all(l, 0, err, errlen);
}

void runlog_close(RunLog *l)
{
    close_all(l);
    free(l->line);
    l->line = NULL;
    l->cap = 0;
}

/* ---- one line: formatted into l->line, then written whole ---- */

static void put(RunLog *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(RunLog *l, const char *fmt, ...)
{
    if (l->len >= l->cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(l->line + l->len, l->cap - l->len, fmt, ap);
    va_end(ap);
    l->len = n < 0 ? l->cap : l->len + (size_t)n; /* >= cap: cut, not written */
}

double runlog_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000000) / 1e3;
}

/* The record's last field, the wall clock (Unix seconds, milliseconds), and its end. */
static void put_end(RunLog *l)
{
    put(l, ",\"time\":%.3f}\n", runlog_now());
}

/* Append the formatted line to file i with one write; if only part of it
 * reached the file, cut the file back to where the line began. */
static int put_line(RunLog *l, int i)
{
    int fd = l->fd[i];
    size_t n = l->len, done = 0;
    l->len = 0;
    if (fd < 0 || !l->line) return errno = EBADF, -1;
    if (n >= l->cap) return errno = EOVERFLOW, -1;
    if (l->torn[i]) { /* an old partial line is still there: end it first */
        if (write(fd, "\n", 1) != 1) return -1;
        l->torn[i] = 0;
    }
    off_t start = lseek(fd, 0, SEEK_END); /* O_APPEND: where this line begins */
    while (done < n) {
        ssize_t w = write(fd, l->line + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            if (done && (start < 0 || ftruncate(fd, start) != 0)) l->torn[i] = 1;
            errno = e;
            return -1;
        }
        done += (size_t)w;
    }
    return 0;
}

/* The record's fields by its table (daemon/records.h), appended to the line. */
static void put_record(RunLog *l, const RecSchema *s, const void *rec)
{
    if (l->len >= l->cap) return;
    l->len += rec_format(s, rec, l->line + l->len, l->cap - l->len); /* >= cap: cut, not written */
}

int runlog_step(RunLog *l, const StepRecord *r, double step_ms)
{
    StepLine sl = {.r = *r};
    sl.r.step_ms = step_ms;
    sl.time = runlog_now();
    put_record(l, &rec_step, &sl);
    put(l, "}\n");
    return put_line(l, LOG_STEPS);
}

int runlog_epoch(RunLog *l, const EpochLine *e)
{
    EpochLine el = *e;
    el.time = runlog_now();
    put_record(l, &rec_epoch, &el);
    put(l, "}\n");
    return put_line(l, LOG_EPOCHS);
}

int runlog_event(RunLog *l, int64_t seq, int64_t step, int epoch, const char *kind,
                 const double info[4], const char *action, int64_t rollback_to,
                 const char *const *tensors, const float *norms, int n, const char *extra)
{
    /* extra: more "key":value pairs, e.g. "at":"epoch_end" */
    EventLine ev = {seq, step, epoch, kind, info[0], info[1], info[2], info[3], action,
                    rollback_to};
    char a[32];
    put_record(l, &rec_event, &ev);
    if (extra) put(l, ",%s", extra);
    if (tensors && n > 0) {
        put(l, ",\"tensor_norms\":[");
        for (int k = 0; k < n; k++)
            put(l, "%s{\"tensor\":\"%s\",\"norm\":%s}", k ? "," : "", tensors[k], json_num(a, 32, norms[k]));
        put(l, "]");
    }
    put_end(l);
    return put_line(l, LOG_EVENTS);
}

int runlog_session(RunLog *l, const SessionLine *s)
{
    SessionLine sl = *s;
    if (!isfinite(sl.time)) sl.time = runlog_now();
    put_record(l, &rec_session, &sl);
    put(l, "}\n");
    return put_line(l, LOG_SESSIONS);
}

int runlog_tensors(RunLog *l, const StepRecord *r, char names[][32], int n)
{
    char a[32];
    TensorLine tl = {r->seq, r->step, r->epoch};
    put_record(l, &rec_tensor, &tl);
    put(l, ",\"norms\":{");
    for (int k = 0; k < n && k < r->ntensors; k++)
        put(l, "%s\"%s\":%s", k ? "," : "", names[k], json_num(a, 32, r->tensor_norm[k]));
    put(l, "}");
    put_end(l);
    return put_line(l, LOG_TENSORS);
}

int runlog_eval(const char *dir, const char *json)
{
    char path[CFG_STR_MAX + 32], line[2048];
    int n = snprintf(line, sizeof line, "{%s,\"time\":%.3f}\n", json, runlog_now());
    if (n < 0 || (size_t)n >= sizeof line) return errno = EOVERFLOW, -1;
    fputs(line, stdout);
    fflush(stdout);
    snprintf(path, sizeof path, "%s/eval.jsonl", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return -1;
    ssize_t w = write(fd, line, (size_t)n);
    int e = errno;
    close(fd);
    return w == n ? 0 : (errno = w < 0 ? e : ENOSPC, -1);
}

/* Written to a temporary and renamed into place: a symlink planted as
 * config.yaml is replaced, never followed. */
int runlog_config(const RunLog *l, const Config *c, char *err, size_t errlen)
{
    char path[CFG_STR_MAX + 32], tmp[CFG_STR_MAX + 128];
    snprintf(path, sizeof path, "%s/config.yaml", l->dir);
    if (fs_tmp_path(tmp, sizeof tmp, path) != 0)
        return snprintf(err, errlen, "run.dir: cannot write %s: path too long", path), -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        snprintf(err, errlen, "run.dir: cannot write %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd), unlink(tmp);
        return -1;
    }
    cfg_print(c, f);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errlen, "run.dir: cannot write %s: %s", path, strerror(errno));
        return unlink(tmp), -1;
    }
    return 0;
}
