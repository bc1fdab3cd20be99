/* detect: the divergence detector. Fed once per optimizer step with the global
 * mean loss, the global pre-clip gradient norm and whether the step clipped, and
 * once per epoch end. Pure and deterministic: every rank feeds it the same bits
 * and so takes the same decision without a message. Allocation-free after init;
 * its whole state round-trips through an array of doubles for checkpoints. */
#ifndef CLIPD_DETECT_H
#define CLIPD_DETECT_H

#include <stddef.h>
#include <stdint.h>

typedef enum { EV_NONFINITE_LOSS = 0, EV_NONFINITE_GRAD, EV_LOSS_SPIKE, EV_GRAD_NORM_SPIKE,
               EV_CLIP_SATURATION, EV_CLIP_INACTIVE, EV_REPLICA_DRIFT, EV_VAL_LOSS_RISE,
               EV_COUNT } EventKind;

/* "nonfinite_loss", "nonfinite_grad", "loss_spike", "grad_norm_spike", "clip_saturation",
 * "clip_inactive", "replica_drift", "val_loss_rise"; NULL for an out-of-range kind. */
const char *detect_kind_name(int kind);
int detect_kind_from_name(const char *name); /* -1 if unknown (or NULL) */

/* Defaults, and why. The spike tests follow llm.c's OutlierDetector (z-score of the loss
 * and grad norm over a rolling window of 128 steps): a window of 100 steps, no firing
 * until the window is full, and z > 6, far outside the noise of a healthy run (a clean
 * series rarely passes z = 4) but met by a real spike. The relative margins stop a flat,
 * almost noiseless series from firing on a tiny wiggle. The norm is tested on its log,
 * since it is multiplicative and heavy-tailed; a 2x jump is the minimum. A step that fired
 * stays out of the baseline, so a spike is not absorbed and the action (PaLM: roll back
 * to a checkpoint before the spike and skip the batches around it) sees the next one too. */
typedef struct {
    int window;          /* steps of rolling history for the spike statistics and the clip rate (default 100) */
    int warmup;          /* finite steps that must be in the history before a spike can fire (default = window; 0 means = window) */
    double loss_z;       /* loss_spike: z-score of the loss against the rolling mean/std (default 6) */
    double loss_rel;     /* ...and loss > mean + loss_rel * |mean| (default 0.1): no firing when the std is tiny */
    double norm_z;       /* grad_norm_spike: z-score of log(norm) against rolling mean/std of log(norm) (default 6) */
    double norm_rel;     /* ...and log(norm) > mean + log(1 + norm_rel), i.e. norm > exp(mean) * (1 + norm_rel) (default 1.0: at least 2x) */
    double sat_rate;     /* clip_saturation: fraction of clipped steps over the last `window` steps above this (default 0.9);
                          * needs a full window; after firing, not again until `window` more steps */
    int val_patience;    /* val_loss_rise: validation loss rose this many epochs in a row (default 3) */
} DetectParams;
void detect_defaults(DetectParams *p);

/* What fired, its baseline, the threshold it crossed (value > threshold unless noted):
 *   nonfinite_*      value = the NaN/Inf; mean, std = that series' rolling statistics
 *                    (0 while empty); threshold = NAN (none: the caller logs null).
 *   loss_spike       value = loss; mean, std = rolling mean and population std of the loss;
 *                    threshold = max(mean + loss_z * std, mean + loss_rel * |mean|).
 *   grad_norm_spike  in norm units: value = norm; mean = exp(mean of log norm) (geometric
 *                    mean); std = std of log norm; threshold = exp(max(mean + norm_z * std,
 *                    mean + log(1 + norm_rel))) on the log scale.
 *   clip_saturation  value = clip rate over the window; mean = clip rate of the whole run;
 *                    std = 0; threshold = sat_rate.
 *   clip_inactive    value = clip rate of the epoch (0); mean = clip rate of the whole run;
 *                    std = 0; threshold = 0 (fires when value <= threshold).
 *   val_loss_rise    value = this epoch's validation loss; mean = the validation loss before
 *                    the run of rises began; std = 0; threshold = the previous epoch's. */
typedef struct { double value, mean, std, threshold; } EventInfo;

/* One rolling history of at most `window` values, filled in order then overwritten. */
typedef struct {
    double *v;           /* (window) */
    int n;               /* values held, <= window */
    int pos;             /* next slot to write */
    int64_t seen;        /* values ever added (for the warm-up) */
} DetectRing;

typedef struct {
    DetectParams p;      /* warmup resolved (never 0) */
    DetectRing loss;     /* loss of steps that fired nothing */
    DetectRing lnorm;    /* log(norm) of steps that fired nothing and had norm > 0 */
    unsigned char *clip; /* (window) 0/1 per step, every step */
    int clip_n, clip_pos, clip_count;
    int sat_cooldown;    /* steps before clip_saturation may fire again */
    int64_t epoch_steps, epoch_clipped;
    int64_t total_steps, total_clipped;
    double val_prev;     /* previous epoch's validation loss, NAN before the first */
    double val_base;     /* validation loss before the current run of rises */
    int val_run;         /* rises in a row so far */
} Detector;

int detect_init(Detector *d, const DetectParams *p);  /* 0, or -1 (no memory / bad params) */
void detect_free(Detector *d);

/* One step. Returns a bitmask (1u << kind) of the kinds that fired; info[kind] filled for
 * each (info may be NULL; other entries are left alone). Non-finite loss -> EV_NONFINITE_LOSS;
 * non-finite norm -> EV_NONFINITE_GRAD. A step that fired nonfinite_* or a spike is added to
 * neither spike history (one spike does not raise the baseline, and an immediate second spike
 * is still seen); a norm <= 0 is not added to the log-norm history nor tested. Every step is
 * counted in the clip-rate window and in the epoch's and run's clip counts. */
unsigned detect_step(Detector *d, double loss, double grad_norm, int clipped, EventInfo info[EV_COUNT]);

/* End of an epoch: clip_inactive fires when clip_active != 0, the epoch had steps and none of
 * them clipped (counted by the detector since the last epoch end); val_loss_rise fires when
 * val_loss rose strictly over the previous epoch's val_patience epochs in a row, then the
 * count starts again (so a run that keeps rising fires every val_patience epochs); a fall or
 * a tie resets it. A non-finite val_loss (NAN: no validation) is ignored and never fires. */
unsigned detect_epoch_end(Detector *d, int clip_active, double val_loss, EventInfo info[EV_COUNT]);

/* Rolling statistics of the loss (kind EV_LOSS_SPIKE) or the log norm (EV_GRAD_NORM_SPIKE)
 * as the next step will see them; n = values held. Returns -1 for any other kind. */
int detect_stats(const Detector *d, int kind, double *mean, double *std, int *n);

/* The whole state as doubles (for bit-identical checkpoints): size, save, load. The
 * thresholds are not saved (they come from the config); the window must match. */
size_t detect_state_len(const Detector *d);
void detect_save(const Detector *d, double *out);  /* out: (detect_state_len) */
int detect_load(Detector *d, const double *in, size_t len); /* -1 if len or contents are inconsistent; d unchanged then */

#endif
