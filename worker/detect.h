/* detect: the divergence detector. Fed once per optimizer step with the global
 * mean loss, the global pre-clip gradient norm and whether the step clipped, told
 * when the hidden state is reset (an epoch's start, a rollback), and fed once per
 * epoch end. Pure and deterministic: every rank feeds it the same bits and so takes
 * the same decision without a message. Allocation-free after init; its whole state
 * round-trips through an array of doubles for checkpoints. */
#ifndef CLIPD_DETECT_H
#define CLIPD_DETECT_H

#include <stddef.h>
#include <stdint.h>

#include "common/events.h"

/* Defaults, and why. Checks that need no history work from step 1 (a wrong learning rate,
 * a bad init or a broken batch shows in the first steps): non-finite values; a loss far
 * worse than a uniform guess (token models) or than the run's first loss; a pre-clip norm
 * far above the clip threshold. The recent checks compare with robust statistics of the
 * accepted history (median, and the noise from the median of successive differences, which
 * a trend does not inflate), from `warmup` steps on. The loss's baseline is the smaller of
 * the median of the last 15 accepted values (tracks a falling loss) and of the whole window
 * (does not follow a slow rise: a divergence that creeps up is still measured against
 * where it started); the log norm's is the median of the last 15 (a healthy norm may grow
 * for hundreds of steps). A step that fired stays out of the history. After a hidden-state
 * reset (an epoch's start, a rollback) the first `reset_steps` steps are naturally worse
 * (no context): there the relative margins are reset_loss_rel and reset_norm_rel, and the
 * reset's jump never enters the noise estimate. grad_norm_spike needs the norm above
 * clip.max_norm too (clip modes global_norm and per_tensor): a norm the clip leaves alone
 * is not a spike. */
typedef struct {
    int window;          /* steps of rolling history for the recent checks and the clip rate (default 100) */
    int warmup;          /* accepted steps in the history before the recent checks look (default 8) */
    double loss_z;       /* recent loss: loss > baseline + max(loss_z * noise, loss_rel * |baseline|) (default 6) */
    double loss_rel;     /* (default 0.5) */
    double norm_z;       /* recent norm, on log(norm): log norm > baseline + max(norm_z * noise, log(1 + norm_rel)) (default 6) */
    double norm_rel;     /* (default 4: at least 5x) */
    double loss_uniform; /* loss > loss_uniform * ln_vocab from step 1; 0 off (default 1.5) */
    double loss_initial; /* loss > loss_initial * the first finite loss, from step 2; 0 off (default 1.5) */
    double norm_clip;    /* norm > norm_clip * clip_max_norm from step 1; 0 off (default 100) */
    int reset_steps;     /* steps after a hidden-state reset with the reset margins (default 5) */
    double reset_loss_rel, reset_norm_rel; /* the relative margins there (defaults 1 and 9) */
    double ln_vocab;     /* ln(V) of a token model, 0 for others (from the config) */
    double clip_max_norm;/* the norm threshold of clip modes global_norm and per_tensor, 0 for others */
    double sat_rate;     /* clip_saturation: fraction of clipped steps over the last `window` steps above
                          * this (default 0.9); needs a full window */
    int clip_events;     /* ClipEvents (default CLIPEV_CHANGE) */
    int val_patience;    /* val_loss_rise: validation loss rose this many epochs in a row (default 3) */
    double val_rel;      /* ...each time by more than val_rel x the previous epoch's: not noise (default 0.01) */
} DetectParams;
void detect_defaults(DetectParams *p);

/* What fired: one meaning per field for every kind. `value` is what was measured, in its
 * own units; `threshold` is the line it crossed (value > threshold unless noted); `baseline`
 * is what it was compared with and `spread` the noise scale of that baseline (0 where none).
 *   nonfinite_loss   value = the loss (NaN/Inf); baseline = the recent loss baseline; spread =
 *                    its noise; threshold = NAN (none).
 *   nonfinite_grad   value = the pre-clip norm (NaN/Inf); baseline, spread as grad_norm_spike's;
 *                    threshold = NAN.
 *   loss_spike       value = the loss. uniform: baseline = ln(vocab), spread = 0, threshold =
 *                    loss_uniform * baseline. initial: baseline = the first finite loss, spread
 *                    = 0, threshold = loss_initial * baseline. recent: baseline = the robust
 *                    recent loss, spread = its noise (a standard deviation), threshold as above.
 *   grad_norm_spike  in norm units: value = the norm. clip_limit: baseline = clip.max_norm,
 *                    spread = 0, threshold = norm_clip * baseline. recent: baseline =
 *                    exp(robust recent log norm), spread = the noise of log norm (a factor
 *                    exp(spread) per standard deviation), threshold = exp(the log threshold).
 *   clip_saturation  value = the clip rate over the window; baseline = the run's clip rate;
 *                    spread = 0; threshold = sat_rate.
 *   clip_inactive    value = the epoch's clip rate (0); baseline = the run's clip rate;
 *                    spread = 0; threshold = 0 (fires when value <= threshold).
 *   val_loss_rise    value = this epoch's validation loss; baseline = the validation loss
 *                    before the run of rises began; spread = 0; threshold = the previous
 *                    epoch's. */
typedef struct { double value, baseline, spread, threshold; int check; } EventInfo;

/* One rolling history of at most `window` values, filled in order then overwritten. */
typedef struct {
    double *v;           /* (window) */
    int n;               /* values held, <= window */
    int pos;             /* next slot to write */
    int64_t seen;        /* values ever added */
} DetectRing;

/* One series (loss, or log norm): accepted values and their successive differences. */
typedef struct {
    DetectRing val;      /* accepted values */
    DetectRing diff;     /* |x - previous accepted x|, not across a reset */
    double prev;         /* the last accepted value, NAN after a reset or before the first */
} DetectSeries;

typedef struct {
    DetectParams p;
    DetectSeries loss, lnorm;
    double *scratch;     /* (window) for medians */
    double first_loss;   /* the first finite loss of the run, NAN before */
    int64_t since_reset; /* steps since the last hidden-state reset */
    unsigned char *clip; /* (window) 0/1 per step, every step */
    int clip_n, clip_pos, clip_count;
    int sat_cooldown;    /* CLIPEV_ALWAYS: steps before clip_saturation may fire again */
    int saturated;       /* the window's rate is above sat_rate (CLIPEV_CHANGE fires on 0 -> 1) */
    int inactive;        /* the last epoch had no clipped step (CLIPEV_CHANGE fires on 0 -> 1) */
    int64_t epoch_steps, epoch_clipped;
    int64_t total_steps, total_clipped;
    double val_prev;     /* previous epoch's validation loss, NAN before the first */
    double val_base;     /* validation loss before the current run of rises */
    int val_run;         /* rises in a row so far */
} Detector;

int detect_init(Detector *d, const DetectParams *p);  /* 0, or -1 (no memory / bad params) */
void detect_free(Detector *d);

/* One step. Returns a bitmask (1u << kind) of the kinds that fired; info[kind] filled for
 * each (info may be NULL; other entries are left alone). A kind's first check that fires
 * names it: loss_spike tries uniform, initial, recent; grad_norm_spike clip_limit, recent.
 * A step that fired nonfinite_* or a spike is added to neither history (one spike does not
 * raise the baseline, and an immediate second spike is still seen); a norm <= 0 is not added
 * to the log-norm history nor tested. Every step is counted in the clip-rate window and in
 * the epoch's and run's clip counts. */
unsigned detect_step(Detector *d, double loss, double grad_norm, int clipped, EventInfo info[EV_COUNT]);

/* The hidden state was reset before the next step (an epoch's start, a rollback). */
void detect_reset(Detector *d);

/* End of an epoch: clip_inactive fires when clip_active != 0, the epoch had steps and none of
 * them clipped (counted by the detector since the last epoch end) and, with CLIPEV_CHANGE,
 * the previous epoch clipped (or this is the first); val_loss_rise fires when val_loss rose
 * by more than val_rel x the previous epoch's val_patience epochs in a row, then the count
 * starts again; a fall, a tie or a smaller rise resets it. A non-finite val_loss (NAN: no validation) is ignored. */
unsigned detect_epoch_end(Detector *d, int clip_active, double val_loss, EventInfo info[EV_COUNT]);

/* Robust recent baseline and noise of the loss (kind EV_LOSS_SPIKE) or the log norm
 * (EV_GRAD_NORM_SPIKE) as the next step will see them; n = values held. -1 for other kinds. */
int detect_stats(const Detector *d, int kind, double *baseline, double *spread, int *n);

/* The whole state as doubles (for bit-identical checkpoints): size, save, load. The
 * thresholds are not saved (they come from the config); the window must match. */
size_t detect_state_len(const Detector *d);
void detect_save(const Detector *d, double *out);  /* out: (detect_state_len) */
int detect_load(Detector *d, const double *in, size_t len); /* -1 if len or contents are inconsistent; d unchanged then */

#endif
