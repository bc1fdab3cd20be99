/* clip: the clipping formulas, as TensorFlow defines them.
 *   global_norm (tf.clip_by_global_norm): every gradient scaled by
 *       coef = max_norm / max(global_norm, max_norm)
 *   per_tensor (tf.clip_by_norm): each tensor by max_norm / max(its norm, max_norm)
 *   value (tf.clip_by_value): each element clamped to [-clip_value, clip_value]
 * The coefficient is applied inside the optimizer's pass (optim.c), so
 * clipping costs no extra pass over the gradient. */
#ifndef CLIPD_CLIP_H
#define CLIPD_CLIP_H

#include <stddef.h>

/* Coefficient for a norm; NaN when the norm is not finite (the step must be
 * skipped, not applied). A zero norm gives 1. */
double clip_coef(double norm, double max_norm);
/* Norm from a double sum of squares. */
double clip_norm_from_sumsq(double sumsq);
/* Reference: the same formulas applied in place on a plain array, for tests
 * and tools (the training path applies them inside the optimizer). */
void clip_apply(float *g, size_t n, float coef, float clip_value);


#include "worker/model.h"
#include "worker/optim.h"

typedef struct {
    double coef;   /* global_norm: the coefficient; per_tensor: the smallest; else 1 */
    int clipped;   /* 1 when clipping changed the gradient */
} ClipResult;

/* Whether and how much the clip of `mode` scales this step's gradient,
 * decided before the update (the detector counts clipped steps before the
 * update is decided). stats is the global statistics vector of sync_stats
 * (sums of squares overall and per view, max |g|); the caller has checked
 * that the norm is finite. */
ClipResult clip_decide(const ParamView *views, int nviews, const double *stats, int mode,
                       double max_norm, double clip_value);
/* One optimizer step with the clip of decision d applied inside the update
 * (no extra pass over the gradient; the training step decides once, for the
 * detector and for the update), over the parameters in [lo, hi) only (all of
 * them, or a shard). */
void clip_apply_update(Optim *o, float *params, const float *grads, const ParamView *views,
                       int nviews, size_t lo, size_t hi, const double *stats, int mode,
                       double max_norm, double clip_value, double lr, const ClipResult *d);
/* clip_apply_update over [lo, hi) and the rows rows[0..nrows) (ascending)
 * of the (., width) matrix that starts at hi (sync.sparse_embedding: the
 * rows synced this step). For an update that leaves a zero gradient's
 * parameter as it is (plain SGD, no weight decay) the same bits as the
 * dense update, without its pass over the untouched rows; for momentum and
 * Adam the lazy update (train.embedding_update: lazy): the other rows keep
 * their parameters and moments, Adam's bias correction is the global
 * step's (TensorFlow's LazyAdam). */
void clip_apply_update_rows(Optim *o, float *params, const float *grads, const ParamView *views,
                            int nviews, size_t lo, size_t hi, const int *rows, int nrows,
                            size_t width, const double *stats, int mode, double max_norm,
                            double clip_value, double lr, const ClipResult *d);
#endif
