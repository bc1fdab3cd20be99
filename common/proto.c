/* proto: helpers of the coordinator-worker protocol (see proto.h): the
 * launch check, and the coordinator's decoders that validate every message
 * a worker sends before any field is used. */
#include "common/proto.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int proto_launched_by_mpi(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK") ||
           getenv("PMI_SIZE");
}

void proto_limits(ProtoLimits *lim, const Config *c, int W)
{
    char names[PROTO_MAX_TENSORS][32];
    lim->W = W;
    lim->ntensors = cfg_tensor_names(c, names, PROTO_MAX_TENSORS);
    lim->epochs = c->train_epochs;
    lim->step_tokens = (int64_t)c->data_seq_len * c->data_batch_per_worker * W * c->train_accumulate;
}

/* Each check fills err and returns -1 from the decoder when it fails. */
#define BAD(...) return snprintf(err, errlen, __VA_ARGS__), -1
#define STEP_FLAGS (STEP_EPOCH_LAST | STEP_STOPPING | STEP_ABORT | STEP_CHECKPOINT | STEP_CKPT_FAILED)

static int check_size(const char *what, size_t len, size_t want, char *err, size_t errlen)
{
    if (len != want) BAD("%s: %zu bytes, expected %zu", what, len, want);
    return 0;
}

/* Integers, bits and the step's position. */
static int check_step_ints(const StepRecord *r, const ProtoLimits *lim, char *err, size_t errlen)
{
    if (r->wrank < 0 || r->wrank >= lim->W) BAD("step record: wrank %d, expected 0..%d", r->wrank, lim->W - 1);
    if (r->step < 1) BAD("step record: step %lld, expected >= 1", (long long)r->step);
    if (r->seq < 1) BAD("step record: seq %lld, expected >= 1", (long long)r->seq);
    if (r->epoch < 1 || r->epoch > lim->epochs)
        BAD("step record: epoch %d, expected 1..%d", r->epoch, lim->epochs);
    if (r->ntensors != lim->ntensors || r->ntensors < 0 || r->ntensors > PROTO_MAX_TENSORS)
        BAD("step record: ntensors %d, expected %d", r->ntensors, lim->ntensors);
    if ((r->clipped | r->skipped) & ~1)
        BAD("step record: clipped %d, skipped %d, expected 0 or 1", r->clipped, r->skipped);
    if (r->nonfinite & ~3) BAD("step record: nonfinite %d, expected 0..3", r->nonfinite);
    if (r->tokens != lim->step_tokens)
        BAD("step record: tokens %lld, expected %lld", (long long)r->tokens, (long long)lim->step_tokens);
    if (r->events & ~event_mask(EVS_STEP)) BAD("step record: events 0x%x has bits of no step event", r->events);
    if (r->action < ACT_LOG || r->action > ACT_ABORT) BAD("step record: action %d, expected %d..%d", r->action, ACT_LOG, ACT_ABORT);
    for (int k = 0; k < EV_COUNT; k++)
        if ((r->events & (1u << k)) && !event_check_name(r->check[k]))
            BAD("step record: check %d of event %s, expected 1..%d", r->check[k], event_kind_name(k), CHK_COUNT - 1);
    if (r->flags & ~STEP_FLAGS) BAD("step record: flags 0x%x has unknown bits", (unsigned)r->flags);
    if ((r->flags & STEP_CHECKPOINT) && (r->flags & STEP_CKPT_FAILED))
        BAD("step record: flags 0x%x: checkpoint both written and failed", (unsigned)r->flags);
    /* A step aborts for a divergence (action abort) or because its
     * checkpoint failed under checkpoint.on_failure: abort. */
    if ((r->action == ACT_ABORT && !(r->flags & STEP_ABORT)) ||
        ((r->flags & STEP_ABORT) && r->action != ACT_ABORT && !(r->flags & STEP_CKPT_FAILED)))
        BAD("step record: flags 0x%x and action %d disagree on abort", (unsigned)r->flags, r->action);
    if (r->rollbacks < 0) BAD("step record: rollbacks %d, expected >= 0", r->rollbacks);
    if (r->rollback_to < 0 || (r->action == ACT_ROLLBACK && r->rollback_to >= r->step))
        BAD("step record: rollback_to %lld, expected 0..%lld", (long long)r->rollback_to,
            (long long)(r->action == ACT_ROLLBACK ? r->step - 1 : INT64_MAX));
    return 0;
}

static int finite_nonneg(double x) { return isfinite(x) && x >= 0; }

/* Numbers: non-finite only where flagged, never negative. */
static int check_step_numbers(const StepRecord *r, char *err, size_t errlen)
{
    if ((isfinite(r->loss) ? 0 : 1) != (r->nonfinite & 1))
        BAD("step record: loss %g with nonfinite %d", r->loss, r->nonfinite);
    if (!isfinite(r->grad_norm) && !(r->nonfinite & 2))
        BAD("step record: grad_norm %g with nonfinite %d", r->grad_norm, r->nonfinite);
    if (r->loss < 0 || r->grad_norm < 0 || r->max_abs < 0)
        BAD("step record: loss %g, grad_norm %g, max_abs %g: expected >= 0", r->loss, r->grad_norm, r->max_abs);
    if (isnan(r->clip_coef) ? !r->skipped : !(r->clip_coef >= 0 && r->clip_coef <= 1))
        BAD("step record: clip_coef %g (skipped %d), expected 0..1, or NaN when skipped", r->clip_coef, r->skipped);
    if (!finite_nonneg(r->lr)) BAD("step record: lr %g, expected finite >= 0", r->lr);
    if (!finite_nonneg(r->step_ms) || !finite_nonneg(r->compute_ms) || !finite_nonneg(r->sync_ms))
        BAD("step record: step_ms %g, compute_ms %g, sync_ms %g: expected finite >= 0", r->step_ms,
            r->compute_ms, r->sync_ms);
    for (int k = 0; k < r->ntensors; k++)
        if (r->tensor_norm[k] < 0) BAD("step record: tensor_norm[%d] %g, expected >= 0", k, (double)r->tensor_norm[k]);
    return 0;
}

int proto_decode_step(StepRecord *out, const void *buf, size_t len, const ProtoLimits *lim,
                      char *err, size_t errlen)
{
    if (check_size("step record", len, sizeof *out, err, errlen)) return -1;
    memcpy(out, buf, sizeof *out);
    if (check_step_ints(out, lim, err, errlen)) return -1;
    return check_step_numbers(out, err, errlen);
}

int proto_decode_epoch(EpochRecord *out, const void *buf, size_t len, const ProtoLimits *lim,
                       char *err, size_t errlen)
{
    if (check_size("epoch record", len, sizeof *out, err, errlen)) return -1;
    memcpy(out, buf, sizeof *out);
    const EpochRecord *e = out;
    if (e->epoch < 1 || e->epoch > lim->epochs) BAD("epoch record: epoch %d, expected 1..%d", e->epoch, lim->epochs);
    if (e->flags & ~(EPOCH_EARLY_STOP | EPOCH_ABORT)) BAD("epoch record: flags 0x%x has unknown bits", (unsigned)e->flags);
    if (e->action != ACT_LOG && e->action != ACT_ABORT)
        BAD("epoch record: action %d, expected %d (log) or %d (abort)", e->action, ACT_LOG, ACT_ABORT);
    if (!(e->flags & EPOCH_ABORT) != (e->action != ACT_ABORT))
        BAD("epoch record: flags 0x%x and action %d disagree on abort", (unsigned)e->flags, e->action);
    if (e->events & ~event_mask(EVS_EPOCH)) BAD("epoch record: events 0x%x has bits of no epoch event", e->events);
    for (int k = 0; k < EV_COUNT; k++)
        if ((e->events & (1u << k)) && !event_check_name(e->check[k]))
            BAD("epoch record: check %d of event %s, expected 1..%d", e->check[k], event_kind_name(k), CHK_COUNT - 1);
    if (e->val_loss < 0) BAD("epoch record: val_loss %g, expected >= 0 or NaN", e->val_loss);
    if (!finite_nonneg(e->lr)) BAD("epoch record: lr %g, expected finite >= 0", e->lr);
    if (e->val_tokens < 0 || e->step < 0 || e->seq < 0)
        BAD("epoch record: val_tokens %lld, step %lld, seq %lld: expected >= 0", (long long)e->val_tokens,
            (long long)e->step, (long long)e->seq);
    return 0;
}

int proto_decode_done(DoneMsg *out, const void *buf, size_t len, const ProtoLimits *lim,
                      char *err, size_t errlen)
{
    if (check_size("done message", len, sizeof *out, err, errlen)) return -1;
    memcpy(out, buf, sizeof *out);
    if (out->status != 0 && out->status != 1) BAD("done message: status %d, expected 0 or 1", out->status);
    if (out->wrank < 0 || out->wrank >= lim->W) BAD("done message: wrank %d, expected 0..%d", out->wrank, lim->W - 1);
    if (out->steps < 0) BAD("done message: steps %lld, expected >= 0", (long long)out->steps);
    return 0;
}
