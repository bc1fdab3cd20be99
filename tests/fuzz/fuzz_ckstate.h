/* fuzz_ckstate: a small but complete checkpoint of one config, written by
 * the real writer (ckpt_write_file, both checksums valid), and crafted
 * variants of it as an attacker with an editor would make them (one field
 * changed, checksums recomputed). mkseeds writes them all as fuzz_ckpt seeds
 * so fuzzing starts past the checksums, fuzz_ckpt runs ckstate_check with
 * fzc_config, and tests/test_ckstate.c checks each variant's message. */
#ifndef CLIPD_FUZZ_CKSTATE_H
#define CLIPD_FUZZ_CKSTATE_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/cfg.h"
#include "common/ckpt.h"
#include "worker/detect.h"

/* LSTM, V 16, E 4, H 4, 1 layer, markov order 2 (256 contexts), Adam, one
 * worker x 2 streams, divergence.window 4. */
static inline void fzc_config(Config *c)
{
    cfg_defaults(c);
    c->model_kind = MODEL_LSTM, c->model_vocab = 16, c->model_embed = 4, c->model_hidden = 4;
    c->model_layers = 1, c->data_source = DATA_MARKOV, c->data_markov_order = 2, c->data_markov_branch = 3;
    c->data_seq_len = 5, c->data_batch_per_worker = 2, c->train_epochs = 3, c->train_steps_per_epoch = 10;
    c->train_optimizer = OPT_ADAM, c->divergence_window = 4, c->divergence_warmup = 2;
}

/* A variant: the valid state with one edit; want: what ckstate_check says
 * (NULL: accepted). */
typedef struct {
    const char *name, *meta_key, *meta_value; /* a __metadata__ edit */
    const char *tensor;                       /* or a tensor element edit */
    int index;
    double value;
    const char *want;
} FzcVariant;

static const FzcVariant fzc_variants[] = {
    {"valid", NULL, NULL, NULL, 0, 0, NULL},
    {"last-token-vocab", NULL, NULL, "data.streams", 5, 16, "stream 0: last token 16 out of range"},
    {"last-token-1e9", NULL, NULL, "data.streams", 11, 1e9, "stream 1: last token 1000000000"},
    {"context-max", NULL, NULL, "data.streams", 4, 4294967295.0, "Markov context 4294967295 out of range, must be < 256"},
    {"context-300", NULL, NULL, "data.streams", 10, 300, "stream 1: Markov context 300"},
    {"rng-zero", NULL, NULL, "data.streams", -4, 0, "stream 0: RNG state"},
    {"lr-scale-1e30", "lr_scale", "0x1.93e5939a08ceap+99", NULL, 0, 0, "__metadata__.lr_scale 1e+30"},
    {"lr-scale-nan", "lr_scale", "nan", NULL, 0, 0, "__metadata__.lr_scale nan"},
    {"adam-v-negative", NULL, NULL, "opt.v.head.weight", 3, -1, "'opt.v.head.weight': element 3 is -1, must be finite and >= 0"},
    {"param-nan", NULL, NULL, "param.layers.0.wh", 7, NAN, "'param.layers.0.wh': element 7 is nan, must be finite"},
    {"param-inf", NULL, NULL, "param.embed.weight", 0, -INFINITY, "'param.embed.weight': element 0 is -inf"},
    {"cell-inf", NULL, NULL, "state.c.0", 2, INFINITY, "'state.c.0': element 2 is inf, must be finite"},
    {"hidden-2", NULL, NULL, "state.h.0", 0, 2, "'state.h.0': element 0 is 2, must be in [-1, 1]"},
    {"epoch-step-2e32", "epoch_step", "4294967297", NULL, 0, 0, "__metadata__.epoch_step out of range"},
    {"epoch-2e31", "epoch", "2147483648", NULL, 0, 0, "__metadata__.epoch 2147483648"},
    {"seq-2e53", "seq", "9007199254740992", NULL, 0, 0, "__metadata__.seq out of range"},
    {"sched-scale-5", "sched", "inf,5,0,0", NULL, 0, 0, "__metadata__.sched: plateau scale"},
    {"world-size-0", "world_size", "0", NULL, 0, 0, "written by 0 workers"},
    {"seq-len-other", "seq_len", "7", NULL, 0, 0, "__metadata__.seq_len 7, the config's data.seq_len is 5"},
    {"detector-broken", NULL, NULL, "detect.state", 0, 1, "'detect.state': 52 values, not a detector history"},
};
#define FZC_NVARIANTS ((int)(sizeof fzc_variants / sizeof *fzc_variants))

/* Write variant v of the checkpoint to path. Returns 0 or -1 with err. */
static inline int fzc_write(const char *path, int v, char *err, size_t errlen)
{
    enum { P = 4 * 16 + 16 + 4 * 16 + 4 * 16 + 16 + 16 * 4, HN = 2 * 4, WIN = 4 };
    /* params: head.weight (4,16), head.bias (16), layers.0.wx (4,16), wh (4,16), bias (16), embed (16,4) */
    static float p[P], m[P], vv[P], h[HN], cst[HN];
    static uint64_t streams[2 * 6];
    static double det[64];
    for (int i = 0; i < P; i++) p[i] = 0.01f * (float)((i * 37) % 101 - 50), m[i] = p[i] * 0.1f, vv[i] = 1e-4f * (float)(i % 7);
    for (int i = 0; i < HN; i++) h[i] = 0.1f * (float)(i - 4), cst[i] = 0.5f * (float)(i - 3);
    for (int s = 0; s < 2; s++) {
        uint64_t *o = streams + 6 * s;
        o[0] = 0x9e3779b97f4a7c15ULL + (uint64_t)s, o[1] = 1, o[2] = 2, o[3] = 3, o[4] = 17u + 3u * (uint64_t)s, o[5] = 5u + (uint64_t)s;
    }
    DetectParams dp;
    Detector d;
    detect_defaults(&dp);
    dp.window = WIN, dp.warmup = 2;
    if (detect_init(&d, &dp) != 0) return snprintf(err, errlen, "detect_init"), -1;
    detect_step(&d, 2.5, 0.5, 1, NULL);
    detect_step(&d, 2.4, 0.4, 0, NULL);
    detect_save(&d, det);
    size_t dl = detect_state_len(&d);
    detect_free(&d);
    static const char *const views[] = {"head.weight", "head.bias", "layers.0.wx", "layers.0.wh", "layers.0.bias", "embed.weight"};
    static const long shape[6][3] = {{2, 4, 16}, {1, 16, 1}, {2, 4, 16}, {2, 4, 16}, {1, 16, 1}, {2, 16, 4}};
    CkTensor t[32];
    char names[32][48];
    int n = 0;
    const float *bufs[3] = {p, m, vv};
    static const char *const pre[3] = {"param.", "opt.m.", "opt.v."};
    for (int b = 0; b < 3; b++)
        for (int k = 0, off = 0; k < 6; off += (int)(shape[k][1] * shape[k][2]), k++, n++) {
            snprintf(names[n], sizeof names[n], "%s%s", pre[b], views[k]);
            t[n] = (CkTensor){names[n], CK_F32, bufs[b] + off, (int)shape[k][0], {shape[k][1], shape[k][2]}};
        }
    t[n++] = (CkTensor){"data.streams", CK_U64, streams, 2, {2, 6}};
    t[n++] = (CkTensor){"state.h.0", CK_F32, h, 2, {2, 4}};
    t[n++] = (CkTensor){"state.c.0", CK_F32, cst, 2, {2, 4}};
    t[n++] = (CkTensor){"detect.state", CK_U64, det, 1, {(long)dl, 1}};
    CkMeta meta[] = {{"format", CK_FORMAT}, {"step", "14"}, {"seq", "15"}, {"epoch", "2"}, {"epoch_step", "4"},
                     {"epoch_seq0", "11"}, {"world_size", "1"}, {"batch_per_worker", "2"}, {"opt_t", "13"},
                     {"lr_scale", "0x1p-1"}, {"rollbacks", "1"}, {"nonfinite", "0"}, {"sched", "0x1.4p+1,0x1p+0,0x0p+0,0x0p+0"},
                     {"epoch_done", "0"}, {"seq_len", "5"}, {"run", "fuzz"}};
    const FzcVariant *e = &fzc_variants[v];
    for (size_t i = 0; e->meta_key && i < sizeof meta / sizeof *meta; i++)
        if (!strcmp(meta[i].key, e->meta_key)) meta[i].value = e->meta_value;
    for (int i = 0; e->tensor && i < n; i++) {
        if (strcmp(t[i].name, e->tensor)) continue;
        if (e->index < 0) /* the first -index words of a U64 tensor */
            for (int w = 0; w < -e->index; w++) ((uint64_t *)(uintptr_t)t[i].data)[w] = (uint64_t)e->value;
        else if (t[i].dtype == CK_F32) ((float *)(uintptr_t)t[i].data)[e->index] = (float)e->value;
        else if (!strcmp(e->tensor, "detect.state")) ((double *)(uintptr_t)t[i].data)[e->index] = e->value;
        else ((uint64_t *)(uintptr_t)t[i].data)[e->index] = (uint64_t)e->value;
    }
    return ckpt_write_file(path, t, n, meta, (int)(sizeof meta / sizeof *meta), err, errlen);
}

#endif
