/* mkseeds ckpt|proto OUTDIR: write small, valid seeds so no binary file
 * needs to be committed. ckpt (fuzz_ckpt): a checkpoint with F32/U64
 * tensors and metadata, and a final-weights file, by the real writer; and a
 * complete checkpoint of fzc_config with its crafted variants (valid
 * checksums, tests/fuzz/fuzz_ckstate.h), so fuzzing starts past the
 * checksums and inside ckstate_check.
 * proto (fuzz_proto): message sequences of whole jobs as workers send them
 * (tests/fuzz/fuzz_proto.h): a clean run, a run with a spike rolled back, a
 * non-finite step, a checkpoint and epoch events, an abort, a signal stop. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/ckdir.h"
#include "common/ckpt.h"
#include "common/proto.h"
#include "tests/fuzz/fuzz_ckstate.h"
#include "tests/fuzz/fuzz_proto.h"

static int seed_ckpt(const char *out)
{
    float w[12] = {0.5f, -1.0f, 2.0f, 0.25f, 3.0f, -0.125f, 1.5f, 0, 7, -7, 1e-3f, 42};
    uint64_t s[6] = {1, 2, 3, 4, 5, 6};
    CkTensor t[] = {{"param.head.weight", CK_F32, w, 2, {3, 4}},
                    {"data.streams", CK_U64, s, 2, {1, 6}}};
    CkMeta m[] = {{"step", "20"}, {"seq", "20"}, {"epoch", "2"}, {"world_size", "1"}};
    char err[512];
    if (ckdir_write(out, 20, t, 2, m, 4, 3, NULL, 0, err, sizeof err) != 0)
        return fprintf(stderr, "mkseeds: %s\n", err), 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/final.safetensors", out);
    CkTensor f[] = {{"param.head.weight", CK_F32, w, 2, {3, 4}}}; /* as worker/safetensors.c writes it */
    CkMeta fm[] = {{"format", "clipd-weights-1"}};
    if (ckpt_write_file(path, f, 1, fm, 1, err, sizeof err) != 0)
        return fprintf(stderr, "mkseeds: %s\n", err), 1;
    for (int v = 0; v < FZC_NVARIANTS; v++) {
        snprintf(path, sizeof path, "%s/state-%s.safetensors", out, fzc_variants[v].name);
        if (fzc_write(path, v, err, sizeof err) != 0) return fprintf(stderr, "mkseeds: %s\n", err), 1;
    }
    return 0;
}

/* ---- proto: one job's messages ---- */

typedef struct {
    FILE *f;
    ProtoLimits lim;
    int64_t step, seq;
} Job;

static void put_msg(Job *j, const void *p, size_t n)
{
    unsigned char len[2] = {(unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
    fwrite(len, 1, 2, j->f);
    fwrite(p, 1, n, j->f);
}

/* One step from every worker; tweak (may be NULL) edits the record. */
static void put_step(Job *j, int epoch, int flags, void (*tweak)(StepRecord *, Job *))
{
    StepRecord r;
    memset(&r, 0, sizeof r);
    r.step = ++j->step, r.seq = ++j->seq, r.epoch = epoch;
    r.loss = 2.0 - 0.1 * (double)r.seq, r.grad_norm = 0.1 + 0.05 * (double)(r.seq % 4);
    r.clipped = r.grad_norm > 0.15, r.clip_coef = r.clipped ? 0.15 / r.grad_norm : 1.0;
    r.max_abs = 0.05, r.lr = 0.01, r.ntensors = j->lim.ntensors, r.tokens = j->lim.step_tokens;
    r.action = ACT_LOG, r.flags = flags;
    for (int k = 0; k < r.ntensors; k++) r.tensor_norm[k] = 0.01f * (float)(k + 1);
    if (tweak) tweak(&r, j);
    for (int w = 0; w < j->lim.W; w++) {
        r.wrank = w, r.step_ms = 2.0 + w, r.compute_ms = 1.5, r.sync_ms = 0.5;
        put_msg(j, &r, sizeof r);
    }
}

static void put_epoch(Job *j, int epoch, unsigned events, int flags)
{
    EpochRecord e;
    memset(&e, 0, sizeof e);
    e.epoch = epoch, e.flags = flags, e.val_loss = 1.9, e.val_tokens = 64, e.lr = 0.01;
    e.events = events, e.action = flags & EPOCH_ABORT ? ACT_ABORT : ACT_LOG;
    for (int k = 0; k < EV_COUNT; k++)
        if (events & (1u << k)) e.info[k][0] = 0, e.info[k][1] = 0.5, e.info[k][3] = 0, e.check[k] = k == EV_VAL_LOSS_RISE ? CHK_RISE : CHK_EPOCH;
    e.step = j->step, e.seq = j->seq;
    put_msg(j, &e, sizeof e);
}

static void put_done(Job *j)
{
    for (int w = 0; w < j->lim.W; w++) {
        DoneMsg d = {0, w, j->step, 0xfeedULL};
        put_msg(j, &d, sizeof d);
    }
}

static void spike_rollback(StepRecord *r, Job *j)
{
    r->grad_norm = 40, r->clip_coef = NAN, r->clipped = 0, r->skipped = 1;
    r->events = 1u << EV_GRAD_NORM_SPIKE, r->action = ACT_ROLLBACK, r->rollbacks = 1;
    r->info[EV_GRAD_NORM_SPIKE][0] = 40, r->info[EV_GRAD_NORM_SPIKE][1] = 0.2;
    r->info[EV_GRAD_NORM_SPIKE][2] = 0.1, r->info[EV_GRAD_NORM_SPIKE][3] = 0.5;
    r->check[EV_GRAD_NORM_SPIKE] = CHK_RECENT;
    r->tensor_norm[0] = 39;
    r->rollback_to = r->step - 1;
    j->step = r->rollback_to;
}

static void nonfinite(StepRecord *r, Job *j)
{
    (void)j;
    r->loss = NAN, r->grad_norm = INFINITY, r->nonfinite = 3, r->skipped = 1, r->clipped = 0;
    r->clip_coef = NAN, r->action = ACT_SKIP, r->tensor_norm[1] = INFINITY;
    r->events = 1u << EV_NONFINITE_LOSS | 1u << EV_NONFINITE_GRAD;
    r->info[EV_NONFINITE_LOSS][0] = NAN, r->info[EV_NONFINITE_LOSS][3] = NAN;
    r->info[EV_NONFINITE_GRAD][0] = INFINITY, r->info[EV_NONFINITE_GRAD][3] = NAN;
    r->check[EV_NONFINITE_LOSS] = r->check[EV_NONFINITE_GRAD] = CHK_NONFINITE;
}

static void abort_step(StepRecord *r, Job *j)
{
    (void)j;
    r->events = 1u << EV_REPLICA_DRIFT, r->action = ACT_ABORT, r->flags |= STEP_ABORT;
    r->info[EV_REPLICA_DRIFT][0] = 1, r->check[EV_REPLICA_DRIFT] = CHK_CHECKSUM;
}

static int open_job(Job *j, const char *out, const char *name, int W, unsigned variant)
{
    char path[4096], dir[] = "/nonexistent";
    Config c;
    snprintf(path, sizeof path, "%s/%s", out, name);
    if (!(j->f = fopen(path, "wb"))) return perror(path), -1;
    fzp_config(&c, variant, dir);
    proto_limits(&j->lim, &c, W);
    j->step = j->seq = 0;
    unsigned char hdr[2] = {(unsigned char)(W - 1), (unsigned char)variant};
    fwrite(hdr, 1, 2, j->f);
    return 0;
}

static int seed_proto(const char *out)
{
    Job j;
    /* clean: 2 workers, 2 epochs, then done */
    if (open_job(&j, out, "clean.seed", 2, FZP_METRICS)) return 1;
    for (int e = 1; e <= 2; e++) {
        for (int s = 1; s <= FZP_STEPS; s++) put_step(&j, e, s == FZP_STEPS ? STEP_EPOCH_LAST : 0, NULL);
        put_epoch(&j, e, e == 2 ? 1u << EV_VAL_LOSS_RISE : 0, 0);
    }
    put_done(&j);
    fclose(j.f);
    /* 1 worker: a spike rolled back, a non-finite step, a checkpoint, clip_inactive */
    if (open_job(&j, out, "rollback.seed", 1, FZP_ADDING | FZP_ONE_EPOCH | FZP_TENSORS_2)) return 1;
    put_step(&j, 1, STEP_CHECKPOINT, NULL);
    put_step(&j, 1, 0, spike_rollback);
    put_step(&j, 1, 0, nonfinite);
    put_step(&j, 1, STEP_EPOCH_LAST, NULL);
    put_epoch(&j, 1, 1u << EV_CLIP_INACTIVE, EPOCH_EARLY_STOP);
    put_done(&j);
    fclose(j.f);
    /* 3 workers: an abort at step 2 */
    if (open_job(&j, out, "abort.seed", 3, FZP_METRICS)) return 1;
    put_step(&j, 1, 0, NULL);
    put_step(&j, 1, 0, abort_step);
    put_done(&j);
    fclose(j.f);
    /* 2 workers: stopped by a signal at step 2 with a checkpoint */
    if (open_job(&j, out, "stop.seed", 2, 0)) return 1;
    put_step(&j, 1, 0, NULL);
    put_step(&j, 1, STEP_STOPPING | STEP_CHECKPOINT, NULL);
    put_done(&j);
    fclose(j.f);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) return fprintf(stderr, "usage: mkseeds ckpt|proto OUTDIR\n"), 2;
    if (!strcmp(argv[1], "ckpt")) return seed_ckpt(argv[2]);
    if (!strcmp(argv[1], "proto")) return seed_proto(argv[2]);
    return fprintf(stderr, "mkseeds: unknown kind '%s'\n", argv[1]), 2;
}
