/* metrics: the coordinator's live HTTP endpoint (libmicrohttpd, its own
 * thread). GET /metrics: Prometheus text exposition; GET /status: JSON;
 * GET /healthz: 200 while steps arrive, 503 once none came for
 * metrics.stall_seconds. The training loop only copies numbers into a
 * snapshot under a mutex; requests format from a copy of it, so a slow or
 * hostile client never holds the coordinator up. No request reads files. */
#ifndef CLIPD_METRICS_H
#define CLIPD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/cfg.h"
#include "common/proto.h"

typedef struct Metrics Metrics;

/* NULL with err set when the address is bad or cannot be bound; NULL with
 * err empty when metrics.listen is "off". *port gets the bound port. */
Metrics *metrics_start(const Config *c, int W, char names[][32], int ntensors, int *port,
                       char *err, size_t errlen);
void metrics_stop(Metrics *m);
/* recs: the W records of one step (worker 0's first). */
void metrics_step(Metrics *m, const StepRecord *recs, int W, double clip_rate_window);
void metrics_epoch(Metrics *m, int epoch, double val_loss, double tokens_per_s);
void metrics_event(Metrics *m, int kind, int64_t step, const char *action);
void metrics_checkpoint(Metrics *m, int64_t step);
void metrics_watchdog(Metrics *m, int straggler); /* a stall (0) or straggler (1) event */
void metrics_checkpoint_failed(Metrics *m); /* a checkpoint or the final weights not written */
void metrics_write_error(Metrics *m);       /* a log line not written */
void metrics_state(Metrics *m, const char *state); /* "training", "stopped", ... */

#endif
