/* runlog: JSON-lines writers for steps, epochs and events (see runlog.h). */
#include "daemon/runlog.h"

#include "common/fsutil.h"

#include <errno.h>
#include <math.h>
#include <string.h>

const char *json_num(char *buf, size_t len, double x)
{
    if (!isfinite(x)) snprintf(buf, len, "null");
    else snprintf(buf, len, "%.17g", x);
    return buf;
}

static FILE *open_log(const char *dir, const char *name, char *err, size_t errlen)
{
    char path[CFG_STR_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "run.dir: cannot create '%s': %s", path, strerror(errno));
        return NULL;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    return f;
}

int runlog_open(RunLog *l, const char *dir, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    snprintf(l->dir, sizeof l->dir, "%s", dir);
    if (fs_mkdir_p(dir, err, errlen) != 0) return -1;
    if (!(l->steps = open_log(dir, "steps.jsonl", err, errlen)) ||
        !(l->epochs = open_log(dir, "epochs.jsonl", err, errlen)) ||
        !(l->events = open_log(dir, "events.jsonl", err, errlen))) {
        runlog_close(l);
        return -1;
    }
    return 0;
}

void runlog_close(RunLog *l)
{
    if (l->steps) fclose(l->steps);
    if (l->epochs) fclose(l->epochs);
    if (l->events) fclose(l->events);
    l->steps = l->epochs = l->events = NULL;
}

static int line_done(FILE *f) { return fflush(f) == 0 && !ferror(f) ? 0 : -1; }

int runlog_step(RunLog *l, const StepRecord *r, double step_ms)
{
    char a[32], b[32], c[32], d[32];
    fprintf(l->steps,
            "{\"step\":%lld,\"epoch\":%d,\"loss\":%s,\"grad_norm\":%s,\"clip_coef\":%s,"
            "\"clipped\":%s,\"lr\":%s,\"tokens\":%lld,\"step_ms\":%.3f,\"skipped\":%s}\n",
            (long long)r->step, r->epoch, json_num(a, 32, r->loss), json_num(b, 32, r->grad_norm),
            json_num(c, 32, r->clip_coef), r->clipped ? "true" : "false",
            json_num(d, 32, r->lr), (long long)r->tokens, step_ms,
            r->skipped ? "true" : "false");
    return line_done(l->steps);
}

int runlog_epoch(RunLog *l, const EpochSummary *e)
{
    char a[32], b[32], c[32], d[32], f[32], g[32];
    fprintf(l->epochs,
            "{\"epoch\":%d,\"steps\":%ld,\"train_loss\":%s,\"clip_rate\":%s,\"clipped_steps\":%ld,"
            "\"skipped_steps\":%ld,\"grad_norm_p50\":%s,\"grad_norm_p90\":%s,"
            "\"grad_norm_max\":%s,\"tokens_per_s\":%s,\"seconds\":%.3f}\n",
            e->epoch, e->steps, json_num(a, 32, e->train_loss), json_num(b, 32, e->clip_rate),
            e->clipped, e->skipped, json_num(c, 32, e->norm_p50), json_num(d, 32, e->norm_p90),
            json_num(f, 32, e->norm_max), json_num(g, 32, e->tokens_per_s), e->seconds);
    return line_done(l->epochs);
}

int runlog_nonfinite(RunLog *l, const StepRecord *r, long so_far)
{
    char a[32], b[32];
    fprintf(l->events,
            "{\"step\":%lld,\"epoch\":%d,\"kind\":\"%s\",\"loss\":%s,\"grad_norm\":%s,"
            "\"action\":\"skip\",\"nonfinite_steps\":%ld}\n",
            (long long)r->step, r->epoch, (r->nonfinite & 1) ? "nonfinite_loss" : "nonfinite_grad",
            json_num(a, 32, r->loss), json_num(b, 32, r->grad_norm), so_far);
    return line_done(l->events);
}

int runlog_drift(RunLog *l, int64_t step, int epoch, const char *what, int wrank)
{
    fprintf(l->events,
            "{\"step\":%lld,\"epoch\":%d,\"kind\":\"replica_drift\",\"what\":\"%s\","
            "\"worker\":%d,\"action\":\"log\"}\n",
            (long long)step, epoch, what, wrank);
    return line_done(l->events);
}
