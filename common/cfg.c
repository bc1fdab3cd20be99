/* cfg: the run configuration. One static table of keys (section, key, type,
 * field, bounds, default text, doc) drives everything: defaults are parsed
 * from their text by the same setter that takes YAML values and --set
 * overrides, and validation and printing walk the same table. The loader is a
 * strict libyaml event loop (Suricata style): it owns at most one event at a
 * time and deletes it on every path, and reports `path:line+1:col+1:`. */
#include "common/cfg.h"
#include "common/events.h"
#include "common/fsutil.h"
#include "common/hash.h"
#include "common/utf8.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <unistd.h>
#include <yaml.h>

#define CFG_FILE_MAX (1u << 20) /* bytes; a config is a few hundred */
#define MSG_SHOW_MAX 48         /* bytes of offending text quoted in a message */

typedef enum { T_INT, T_DOUBLE, T_STRING, T_ENUM } KeyType;

enum {
    F_MIN_OPEN = 1u << 0,  /* DOUBLE: value must be > dmin, not >= */
    F_MAX_OPEN = 1u << 1,  /* DOUBLE: value must be < dmax, not <= */
    F_NAME_CHARS = 1u << 2, /* STRING: only [A-Za-z0-9._-] */
    F_NO_HASH = 1u << 3,    /* cannot change a number the run computes: left out of cfg_hash */
    F_AUTO = 1u << 4,       /* INT (train.steps_per_epoch only): also "auto": train_steps_auto, value 100 */
    F_HASH_SET = 1u << 5    /* in cfg_hash only when not at its default (a key added later: the
                             * configs that leave it alone keep their hash) */
};

typedef struct {
    const char *section, *key;
    KeyType type;
    size_t off, size;         /* the field in Config */
    int64_t imin, imax;       /* INT: value; STRING: length in bytes; ENUM: 0..n-1 */
    double dmin, dmax;        /* DOUBLE, open or closed per flags */
    unsigned flags;
    const char *const *names; /* ENUM: names indexed by the enum value */
    const char *def;          /* default as text, parsed by key_set */
    const char *doc;
} CfgKey;

static const char *const model_names[] = {[MODEL_RNN] = "rnn", [MODEL_LSTM] = "lstm",
                                          [MODEL_GRU] = "gru"};
static const char *const source_names[] = {[DATA_MARKOV] = "markov", [DATA_ADDING] = "adding",
                                           [DATA_TEXT] = "text"};
static const char *const tok_names[] = {[TOK_BYTES] = "bytes", [TOK_WORDS] = "words"};
static const char *const opt_names[] = {[OPT_SGD] = "sgd", [OPT_ADAM] = "adam", [OPT_ADAMW] = "adamw"};
static const char *const clip_names[] = {[CLIP_GLOBAL_NORM] = "global_norm",
                                         [CLIP_PER_TENSOR] = "per_tensor",
                                         [CLIP_VALUE] = "value", [CLIP_NONE] = "none"};
static const char *const sched_names[] = {[SCHED_CONSTANT] = "constant", [SCHED_STEP] = "step",
                                          [SCHED_COSINE] = "cosine", [SCHED_PLATEAU] = "plateau"};
static const char *const sync_names[] = {[SYNC_REPLICATED] = "replicated",
                                         [SYNC_SHARDED] = "sharded"};
static const char *const act_names[] = {[ACT_INHERIT] = "inherit", [ACT_LOG] = "log",
                                        [ACT_SKIP] = "skip", [ACT_ROLLBACK] = "rollback",
                                        [ACT_ABORT] = "abort"};
static const char *const clipev_names[] = {[CLIPEV_CHANGE] = "change", [CLIPEV_ALWAYS] = "always",
                                           [CLIPEV_OFF] = "off"};
static const char *const ckfail_names[] = {[CKFAIL_ABORT] = "abort", [CKFAIL_CONTINUE] = "continue"};
static const char *const bool_names[] = {"false", "true"};
static const char *const auto_names[] = {"off", "auto"};
static const char *const emb_update_names[] = {[EMB_DENSE] = "dense", [EMB_LAZY] = "lazy"};
static const char *const repro_names[] = {[REPRO_FALSE] = "false", [REPRO_TRUE] = "true",
                                          [REPRO_AUTO] = "auto"};
static const char *const softmax_names[] = {[SOFTMAX_FULL] = "full", [SOFTMAX_ADAPTIVE] = "adaptive"};
static const char *const crash_names[] = {[CRASH_DURING_WRITE] = "during_write",
                                          [CRASH_BEFORE_RENAME] = "before_rename",
                                          [CRASH_AFTER_RENAME] = "after_rename"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
/* section.key lives in Config as section_key */
#define FLD(s, k) offsetof(Config, s##_##k), sizeof(((Config *)0)->s##_##k)
#define KINT(s, k, lo, hi, def, doc) \
    {#s, #k, T_INT, FLD(s, k), lo, hi, 0, 0, 0, NULL, def, doc}
#define KDBL(s, k, lo, hi, fl, def, doc) \
    {#s, #k, T_DOUBLE, FLD(s, k), 0, 0, lo, hi, fl, NULL, def, doc}
#define KSTR(s, k, lo, hi, fl, def, doc) \
    {#s, #k, T_STRING, FLD(s, k), lo, hi, 0, 0, fl, NULL, def, doc}
#define KINTN(s, k, lo, hi, def, doc) /* an INT left out of cfg_hash */ \
    {#s, #k, T_INT, FLD(s, k), lo, hi, 0, 0, F_NO_HASH, NULL, def, doc}
#define KENUMH(s, k, nm, def, doc) /* an ENUM left out of cfg_hash */ \
    {#s, #k, T_ENUM, FLD(s, k), 0, (int64_t)NELEM(nm) - 1, 0, 0, F_NO_HASH, nm, def, doc}
#define KENUMN(s, k, name, nm, def, doc) \
    {#s, name, T_ENUM, FLD(s, k), 0, (int64_t)NELEM(nm) - 1, 0, 0, 0, nm, def, doc}
#define KENUM(s, k, nm, def, doc) \
    {#s, #k, T_ENUM, FLD(s, k), 0, (int64_t)NELEM(nm) - 1, 0, 0, 0, nm, def, doc}

/* Keys of one section are contiguous; sections print in this order. */
static const CfgKey cfg_keys[] = {
    KSTR(run, name, 1, 63, F_NAME_CHARS | F_NO_HASH, "default", "run name, used in logs"),
    KSTR(run, dir, 1, 255, F_NO_HASH, "runs/default", "output directory of the run"),
    KINT(run, seed, 0, INT64_C(1) << 62, "1", "master seed of data and init"),
    KENUMH(run, overwrite, bool_names, "false", "a fresh start may replace a run in run.dir"),
    KENUM(model, kind, model_names, "lstm", "recurrent cell"),
    KINT(model, vocab, 2, 1000000, "16", "V, number of symbols"),
    KINT(model, embed, 1, 65536, "32", "E, embedding width"),
    KINT(model, hidden, 1, 65536, "128", "H, hidden state width"),
    KINT(model, layers, 1, CFG_MAX_LAYERS, "2", "L, stacked recurrent layers"),
    KDBL(model, init_scale, 0, 10, F_MIN_OPEN, "0.1", "weights ~ U(-s, s)"),
    KDBL(model, dropout, 0, 1, F_MAX_OPEN, "0", "dropout between layers, token models"),
    KENUM(model, tie_embeddings, bool_names, "false", "head weight = embedding matrix (embed = hidden)"),
    {"model", "softmax", T_ENUM, FLD(model, softmax), 0, (int64_t)NELEM(softmax_names) - 1, 0, 0, F_HASH_SET,
     softmax_names, "full", "full, or adaptive (Grave et al. 2017): words text only"},
    KSTR(model, softmax_cutoffs, 1, 63, F_HASH_SET, "2000,10000", "adaptive: ascending word ids starting tail clusters"),
    {"model", "softmax_div", T_INT, FLD(model, softmax_div), 1, 1024, 0, 0, F_HASH_SET, NULL, "4",
     "adaptive: tail k projects H to H/div^(k+1)"},
    KENUM(data, source, source_names, "markov", "synthetic task"),
    KINT(data, seq_len, 1, 100000, "32", "T, unroll length of truncated BPTT"),
    KINT(data, batch_per_worker, 1, 1000000, "16", "B, streams per worker"),
    KINT(data, micro_batch, 0, 1000000, "0", "reproducible: streams per micro-batch; 0: B"),
    KINT(data, markov_order, 1, 4, "2", "context length of the chain"),
    KINT(data, markov_branch, 1, 1000000, "3", "successors per context"),
    KINT(data, valid_batches, 0, 1000000, "8", "held-out batches per evaluation, 0 off"),
    KSTR(data, path, 0, 255, 0, "", "text: a file, or a dir of train/valid/test"),
    KENUM(data, tokenizer, tok_names, "bytes", "text: bytes or words"),
    KINT(data, min_count, 1, 1000000000, "1", "words: rarer words become <unk>"),
    KDBL(data, valid_fraction, 0, 0.5, F_MAX_OPEN, "0.1", "text in one file: held-out tail"),
    KINT(train, epochs, 1, 1000000, "8", "number of epochs"),
    {"train", "steps_per_epoch", T_INT, FLD(train, steps_per_epoch), 1, 1000000000, 0, 0, F_AUTO, NULL,
     "auto", "optimizer steps per epoch; auto: one pass over text, else 100"},
    KENUM(train, optimizer, opt_names, "adam", "update rule"),
    KDBL(train, lr, 0, 1000, F_MIN_OPEN, "0.003", "learning rate"),
    KDBL(train, momentum, 0, 1, F_MAX_OPEN, "0", "sgd momentum"),
    KDBL(train, beta1, 0, 1, F_MAX_OPEN, "0.9", "adam first-moment decay"),
    KDBL(train, beta2, 0, 1, F_MAX_OPEN, "0.999", "adam second-moment decay"),
    KDBL(train, eps, 1e-30, 1, 0, "1e-8", "adam denominator epsilon"),
    KDBL(train, lr_decay, 0, 1, F_MIN_OPEN, "1", "lr multiplier per decayed epoch"),
    KINT(train, lr_decay_start, 1, 1000000, "1", "first decayed epoch (1-based)"),
    KDBL(train, weight_decay, 0, 10, 0, "0", "adamw: decoupled weight decay"),
    KINT(train, accumulate, 1, 1000000, "1", "micro-batches per optimizer step"),
    {"train", "embedding_update", T_ENUM, FLD(train, embedding_update), 0, (int64_t)NELEM(emb_update_names) - 1,
     0, 0, F_HASH_SET, emb_update_names, "dense", "lazy: only the embedding rows synced this step"},
    KENUM(train, lr_schedule, sched_names, "constant", "learning-rate schedule"),
    KINT(train, warmup_steps, 0, 1000000000, "0", "cosine: linear warm-up steps"),
    KDBL(train, lr_min, 0, 1000, 0, "0", "cosine: final learning rate"),
    KINT(train, plateau_patience, 1, 1000000, "1", "plateau: epochs without gain"),
    KINT(train, early_stop, 0, 1000000, "0", "epochs without gain to stop, 0 off"),
    KENUM(clip, mode, clip_names, "global_norm", "gradient clipping rule"),
    KDBL(clip, max_norm, 1e-30, 1e30, 0, "1", "norm threshold of norm modes"),
    KDBL(clip, clip_value, 1e-30, 1e30, 0, "1", "threshold of mode value"),
    KENUM(divergence, action, act_names, "log", "action of kinds set to inherit"),
#define EVCFG(key, def, doc) KENUMN(divergence, key##_action, #key ".action", act_names, def, doc),
#define EVCFG_SHARED(key)
#define EVCFG_NONE
    EVENT_KINDS(EVENT_CONFIG)
#undef EVCFG
#undef EVCFG_SHARED
#undef EVCFG_NONE
    KINT(divergence, window, 2, 100000, "100", "steps of rolling history"),
    KINT(divergence, warmup, 2, 100000, "8", "accepted steps before the recent checks"),
    KDBL(divergence, loss_zscore, 0, 1e6, F_MIN_OPEN, "6", "loss_spike: robust z over the noise"),
    KDBL(divergence, loss_rel, 0, 1e6, 0, "0.5", "loss_spike: min rise over the baseline"),
    KDBL(divergence, norm_zscore, 0, 1e6, F_MIN_OPEN, "6", "grad_norm_spike: robust z of log norm"),
    KDBL(divergence, norm_rel, 0, 1e6, 0, "4", "grad_norm_spike: min rise over baseline"),
    KDBL(divergence, loss_uniform, 0, 1e6, 0, "1.5", "loss_spike: loss > k ln(vocab); 0 off"),
    KDBL(divergence, loss_initial, 0, 1e6, 0, "1.5", "loss_spike: loss > k first loss; 0 off"),
    KDBL(divergence, norm_clip, 0, 1e30, 0, "100", "grad_norm_spike: norm > k max_norm; 0 off"),
    KINT(divergence, reset_steps, 0, 1000000, "5", "steps after a hidden-state reset"),
    KDBL(divergence, reset_loss_rel, 0, 1e6, 0, "1", "loss_rel in those steps"),
    KDBL(divergence, reset_norm_rel, 0, 1e6, 0, "9", "norm_rel in those steps"),
    KDBL(divergence, clip_saturation, 0, 1, F_MIN_OPEN, "0.9", "clip rate that saturates"),
    KENUM(divergence, clip_events, clipev_names, "change", "clip_inactive/saturation events"),
    KINT(divergence, val_patience, 1, 1000000, "3", "val_loss_rise: epochs in a row"),
    KDBL(divergence, val_rel, 0, 1e6, 0, "0.01", "val_loss_rise: min rise over the last"),
    KDBL(divergence, rollback_lr_factor, 0, 1, F_MIN_OPEN, "0.5", "lr multiplier per rollback"),
    KINT(divergence, rollback_skip_batches, 0, 1000000000, "20", "batches skipped on rollback"),
    KINT(divergence, max_rollbacks, 0, 1000000, "3", "rollbacks before abort"),
    KINT(divergence, drift_check_every, 0, 1000000000, "50", "replica checksum every N steps"),
    KINT(checkpoint, every_steps, 0, 1000000000, "100", "steps between checkpoints, 0 off"),
    KINTN(checkpoint, keep, 1, 1000000, "3", "newest checkpoints kept"),
    KENUMH(checkpoint, keep_best, bool_names, "false", "keep best.safetensors: the best val loss"),
    KSTR(checkpoint, dir, 0, 255, F_NO_HASH, "", "empty: RUN_DIR/checkpoints"),
    KENUMH(checkpoint, on_failure, ckfail_names, "abort", "a failed write: abort or continue"),
    KINTN(log, tensor_norms_every, 0, 1000000000, "10", "steps between tensors.jsonl lines"),
    KSTR(metrics, listen, 1, 63, F_NO_HASH, "127.0.0.1:0", "HTTP endpoint HOST:PORT (0: a free port), or off"),
    KDBL(metrics, stall_seconds, 0, 1e9, F_MIN_OPEN | F_NO_HASH, "60", "/healthz 503 after this long idle"),
    KDBL(watchdog, seconds, 0, 1e9, F_NO_HASH, "300", "a step not done after this long: exit 1; 0 off"),
    KDBL(watchdog, warn_seconds, 0, 1e9, F_NO_HASH, "0", "...a stall warning after this long; 0: 1/4"),
    KDBL(watchdog, straggler_factor, 1, 1e6, F_MIN_OPEN | F_NO_HASH, "3", "straggler: compute > this x median"),
    KINTN(watchdog, straggler_window, 0, 1000000000, "100", "...for this many steps; 0 off"),
    KINT(worker, threads, 1, 256, "1", "BLAS threads per worker"),
    {"worker", "packed_recurrent", T_ENUM, FLD(worker, packed_recurrent), 0, (int64_t)NELEM(auto_names) - 1, 0, 0,
     F_HASH_SET, auto_names, "auto", "time loops' products with wh packed (worker/rgemm.c); off: OpenBLAS's"},
    KENUM(sync, mode, sync_names, "replicated", "optimizer state: replicated or sharded (ZeRO-1)"),
    KENUM(sync, reproducible, repro_names, "auto", "same bits for any worker count; auto: where cheap"),
    KINTN(sync, bucket_kb, 0, 1048576, "1024", "gradient bucket KiB, started during backward; 0 one"),
    KENUM(sync, sparse_embedding, bool_names, "false", "embedding gradient synced as the batch's rows"),
    KENUMH(sync, shared_memory, auto_names, "auto", "auto: workers on one node add each other's gradients in place"),
    KINT(debug, nan_step, 0, INT64_C(1) << 62, "0", "test hook: NaN gradient at step"),
    KINT(debug, spike_step, 0, INT64_C(1) << 62, "0", "test hook: gradient spike at step"),
    KDBL(debug, spike_scale, 0, 1e30, F_MIN_OPEN, "10000", "test hook: spike factor"),
    KINT(debug, lr_spike_step, 0, INT64_C(1) << 62, "0", "test hook: lr spike at step"),
    KDBL(debug, lr_spike_scale, 0, 1e30, F_MIN_OPEN, "1000", "test hook: lr factor"),
    KINT(debug, lr_spike_len, 0, INT64_C(1) << 62, "1", "test hook: lr spike steps, 0 for good"),
    KINT(debug, lr_ramp_step, 0, INT64_C(1) << 62, "0", "test hook: lr ramp from step"),
    KDBL(debug, lr_ramp_rate, 1, 10, 0, "1.2", "test hook: lr factor per ramp step"),
    KINT(debug, noise_step, 0, INT64_C(1) << 62, "0", "test hook: random batch at step"),
    KSTR(debug, nan_tensor, 0, 31, F_NAME_CHARS, "", "test hook: tensor of the NaN, \"\": last"),
    KINT(debug, drift_step, 0, INT64_C(1) << 62, "0", "test hook: a replica drifts at step"),
    KINTN(debug, ckpt_crash_step, 0, INT64_C(1) << 62, "0", "test hook: SIGKILL in this checkpoint"),
    KENUMH(debug, ckpt_crash_at, crash_names, "before_rename", "test hook: where in the write"),
    KDBL(debug, slow_ms, 0, 1e6, F_NO_HASH, "0", "test hook: a worker sleeps this long per step"),
    KINTN(debug, slow_worker, 0, 1000000, "0", "test hook: the worker that sleeps"),
    KENUMH(debug, stop_at_end, bool_names, "false", "test hook: the last worker stops before MPI_Finalize"),
};
#define NKEYS NELEM(cfg_keys)

/* ---- messages: append-only, truncating, always NUL-terminated ---- */

typedef struct { char *s; size_t cap, len; } Msg;

static Msg msg_init(char *s, size_t cap)
{
    Msg m = {s, s ? cap : 0, 0};
    if (m.cap) s[0] = '\0';
    return m;
}

static void msg_vadd(Msg *m, const char *fmt, va_list ap)
{
    if (m->len + 1 >= m->cap) return;
    int n = vsnprintf(m->s + m->len, m->cap - m->len, fmt, ap);
    if (n < 0) { m->s[m->len] = '\0'; return; }
    m->len += (size_t)n;
    if (m->len >= m->cap) m->len = m->cap - 1;
}

static void msg_add(Msg *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msg_add(Msg *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    msg_vadd(m, fmt, ap);
    va_end(ap);
}

/* Offending text, one line: printable ASCII as is, other bytes as \xNN,
 * at most MSG_SHOW_MAX bytes then "...". */
static void msg_raw(Msg *m, const char *v, size_t n)
{
    for (size_t i = 0; i < n && i < MSG_SHOW_MAX; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch >= 0x20 && ch < 0x7f) msg_add(m, "%c", ch);
        else msg_add(m, "\\x%02X", ch);
    }
    if (n > MSG_SHOW_MAX) msg_add(m, "...");
}

static void msg_text(Msg *m, const char *v, size_t n)
{
    msg_add(m, "'");
    msg_raw(m, v, n);
    msg_add(m, "'");
}

/* ---- the table ---- */

static void *fld(Config *c, const CfgKey *k) { return (char *)c + k->off; }
static const void *cfld(const Config *c, const CfgKey *k) { return (const char *)c + k->off; }

static int64_t get_int(const Config *c, const CfgKey *k)
{
    if (k->size == sizeof(int64_t)) return *(const int64_t *)cfld(c, k);
    return *(const int *)cfld(c, k);
}

static bool is_first_of_section(size_t i)
{
    return i == 0 || strcmp(cfg_keys[i].section, cfg_keys[i - 1].section) != 0;
}

static void msg_sections(Msg *m)
{
    const char *sep = "";
    for (size_t i = 0; i < NKEYS; i++)
        if (is_first_of_section(i)) msg_add(m, "%s%s", sep, cfg_keys[i].section), sep = ", ";
}

static void msg_section_keys(Msg *m, const char *section)
{
    const char *sep = "";
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(cfg_keys[i].section, section)) msg_add(m, "%s%s", sep, cfg_keys[i].key), sep = ", ";
}

static bool text_eq(const char *name, const char *v, size_t n)
{
    return strlen(name) == n && memcmp(name, v, n) == 0;
}

/* Index of the first key of the section named v[0..n), or -1. */
static int section_find(const char *v, size_t n)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (is_first_of_section(i) && text_eq(cfg_keys[i].section, v, n)) return (int)i;
    return -1;
}

/* Index of key v[0..n) in the section whose first key is sec, or -1. */
static int key_find(int sec, const char *v, size_t n)
{
    for (size_t i = (size_t)sec; i < NKEYS && !strcmp(cfg_keys[i].section, cfg_keys[sec].section); i++)
        if (text_eq(cfg_keys[i].key, v, n)) return (int)i;
    return -1;
}

static void msg_unknown_key(Msg *m, int sec, const char *v, size_t n)
{
    const char *s = cfg_keys[sec].section;
    msg_add(m, "unknown key '%s.", s);
    msg_raw(m, v, n);
    msg_add(m, "' (%s has: ", s);
    msg_section_keys(m, s);
    msg_add(m, ")");
}

static void msg_unknown_section(Msg *m, const char *v, size_t n)
{
    msg_add(m, "unknown section ");
    msg_text(m, v, n);
    msg_add(m, " (sections: ");
    msg_sections(m);
    msg_add(m, ")");
}

/* What a key accepts, e.g. "an integer in [1, 16]". */
static void msg_expect(Msg *m, const CfgKey *k)
{
    switch (k->type) {
    case T_INT:
        msg_add(m, "an integer in [%" PRId64 ", %" PRId64 "]%s", k->imin, k->imax,
                (k->flags & F_AUTO) ? " or auto" : "");
        break;
    case T_DOUBLE:
        msg_add(m, "a number in %c%g, %g%c", (k->flags & F_MIN_OPEN) ? '(' : '[', k->dmin,
                k->dmax, (k->flags & F_MAX_OPEN) ? ')' : ']');
        break;
    case T_ENUM:
        msg_add(m, "one of ");
        for (int64_t i = 0; i <= k->imax; i++) msg_add(m, "%s%s", i ? ", " : "", k->names[i]);
        break;
    case T_STRING:
        if (k->flags & F_NAME_CHARS)
            msg_add(m, "%" PRId64 " to %" PRId64 " characters of [A-Za-z0-9._-]", k->imin, k->imax);
        else
            msg_add(m, "%" PRId64 " to %" PRId64 " bytes of printable UTF-8", k->imin, k->imax);
        break;
    }
}

/* ---- values: parse, check, store ---- */

/* Where a value's text came from. RAW: defaults and --set, taken as is.
 * PLAIN: a plain YAML scalar (empty, ~ and null mean "no value").
 * QUOTED: a quoted or block YAML scalar, always a string. */
typedef enum { V_RAW, V_PLAIN, V_QUOTED } ValKind;

static bool is_missing(const char *v, size_t n, ValKind vk)
{
    if (vk == V_QUOTED) return false;
    if (n == 0) return true;
    return vk == V_PLAIN && (!strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
                             !strcmp(v, "NULL"));
}

/* Decimal only: no leading space, no 0x, no exponent; the whole text. */
static bool parse_i64(const char *v, int64_t *out)
{
    if (!((v[0] >= '0' && v[0] <= '9') || v[0] == '-' || v[0] == '+')) return false;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end != '\0' || errno == ERANGE) return false;
    *out = (int64_t)x;
    return true;
}

/* Decimal or exponent form; no inf, nan or hex. Returns 0, or 1 if the text
 * is not a number, or 2 if it over- or underflows a normal double (ERANGE). */
static int parse_double(const char *v, double *out)
{
    if (!((v[0] >= '0' && v[0] <= '9') || v[0] == '-' || v[0] == '+' || v[0] == '.')) return 1;
    for (const char *p = v; *p; p++)
        if (*p == 'x' || *p == 'X') return 1;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end != '\0' || !isfinite(x)) return errno == ERANGE ? 2 : 1;
    if (errno == ERANGE) return 2;
    *out = x;
    return 0;
}

static bool int_ok(const CfgKey *k, int64_t x) { return x >= k->imin && x <= k->imax; }

static bool double_ok(const CfgKey *k, double x)
{
    if (!isfinite(x)) return false;
    if ((k->flags & F_MIN_OPEN) ? !(x > k->dmin) : !(x >= k->dmin)) return false;
    if ((k->flags & F_MAX_OPEN) ? !(x < k->dmax) : !(x <= k->dmax)) return false;
    return true;
}

/* Printable UTF-8 that a YAML double-quoted scalar carries unchanged: no
 * C0/C1 controls, DEL, line separators (U+0085, U+2028, U+2029),
 * surrogates, overlong forms or non-characters U+FFFE/U+FFFF. */
static bool utf8_printable(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t bad;
        int len = utf8_decode(s + i, n - i, &cp, &bad);
        if (len == 0 || cp < 0x20 || (cp >= 0x7f && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 ||
            cp == 0xFFFE || cp == 0xFFFF)
            return false;
        i += (size_t)len;
    }
    return true;
}

static bool string_ok(const CfgKey *k, const char *v, size_t n)
{
    if ((int64_t)n < k->imin || (int64_t)n > k->imax || n >= k->size) return false;
    if (!(k->flags & F_NAME_CHARS)) return utf8_printable((const unsigned char *)v, n);
    for (size_t i = 0; i < n; i++) {
        char ch = v[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '.' || ch == '_' || ch == '-';
        if (!ok) return false;
    }
    return true;
}

static int enum_find(const CfgKey *k, const char *v, size_t n)
{
    for (int64_t i = 0; i <= k->imax; i++)
        if (text_eq(k->names[i], v, n)) return (int)i;
    return -1;
}

/* "section.key: expected WHAT, got HOW'text'" */
static int value_error(Msg *m, const CfgKey *k, const char *how, const char *v, size_t n)
{
    msg_add(m, "%s.%s: expected ", k->section, k->key);
    msg_expect(m, k);
    msg_add(m, ", got %s", how);
    msg_text(m, v, n);
    return CFG_ERR;
}

/* Parse v[0..n) (NUL-terminated at n) for key k and store it in c. On error
 * c is untouched and m gets "section.key: ...". */
static int key_set(Config *c, const CfgKey *k, const char *v, size_t n, ValKind vk, Msg *m)
{
    bool may_be_empty = k->type == T_STRING && k->imin == 0 && n == 0;
    if (is_missing(v, n, vk) && !may_be_empty) {
        msg_add(m, "%s.%s: missing value (expected ", k->section, k->key);
        msg_expect(m, k);
        msg_add(m, ")");
        return CFG_ERR;
    }
    if (memchr(v, '\0', n)) return value_error(m, k, "text with a NUL byte ", v, n);
    bool number = k->type == T_INT || k->type == T_DOUBLE;
    if (number && vk == V_QUOTED) return value_error(m, k, "a string ", v, n);
    switch (k->type) {
    case T_INT: {
        int64_t x;
        int aut = (k->flags & F_AUTO) && vk != V_QUOTED && n == 4 && !memcmp(v, "auto", 4);
        if (aut) x = 100;
        else if (!parse_i64(v, &x) || !int_ok(k, x)) return value_error(m, k, "", v, n);
        if (k->flags & F_AUTO) c->train_steps_auto = aut;
        if (k->size == sizeof(int64_t)) *(int64_t *)fld(c, k) = x;
        else *(int *)fld(c, k) = (int)x;
        return CFG_OK;
    }
    case T_DOUBLE: {
        double x = 0;
        int bad = parse_double(v, &x);
        if (!bad && double_ok(k, x)) {
            *(double *)fld(c, k) = x;
            return CFG_OK;
        }
        value_error(m, k, "", v, n);
        if (bad == 2) msg_add(m, " (out of double range)");
        return CFG_ERR;
    }
    case T_ENUM: {
        int e = enum_find(k, v, n);
        if (e < 0) return value_error(m, k, "", v, n);
        *(int *)fld(c, k) = e;
        return CFG_OK;
    }
    case T_STRING:
        if (!string_ok(k, v, n)) return value_error(m, k, "", v, n);
        memcpy(fld(c, k), v, n);
        ((char *)fld(c, k))[n] = '\0';
        return CFG_OK;
    }
    return CFG_ERR;
}

/* Is the value already in c acceptable for k (bounds, enum, string)? */
static bool key_ok(const Config *c, const CfgKey *k)
{
    switch (k->type) {
    case T_INT:
    case T_ENUM:
        return int_ok(k, get_int(c, k));
    case T_DOUBLE:
        return double_ok(k, *(const double *)cfld(c, k));
    case T_STRING: {
        const char *s = cfld(c, k);
        return memchr(s, '\0', k->size) && string_ok(k, s, strlen(s));
    }
    }
    return false;
}

/* ---- formatting ---- */

/* Shortest %.Ng that reads back to exactly x (at most %.17g); plain
 * digits rather than an exponent where that is no longer (60, not 6e+01). */
static void fmt_double(char *buf, size_t n, double x)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, x);
        if (strtod(buf, NULL) != x) continue;
        char plain[64];
        snprintf(plain, sizeof plain, "%.*f", 0, x);
        if (strchr(buf, 'e') && strlen(plain) <= strlen(buf) && strtod(plain, NULL) == x &&
            strlen(plain) < n)
            memcpy(buf, plain, strlen(plain) + 1);
        return;
    }
}

/* A key's value as YAML text: strings double-quoted and escaped. */
static void msg_value(Msg *m, const Config *c, const CfgKey *k)
{
    char num[40];
    switch (k->type) {
    case T_INT:
        if ((k->flags & F_AUTO) && c->train_steps_auto) msg_add(m, "auto");
        else msg_add(m, "%" PRId64, get_int(c, k));
        break;
    case T_DOUBLE:
        fmt_double(num, sizeof num, *(const double *)cfld(c, k));
        msg_add(m, "%s", num);
        break;
    case T_ENUM: {
        int64_t e = get_int(c, k);
        if (int_ok(k, e)) msg_add(m, "%s", k->names[e]);
        else msg_add(m, "%" PRId64, e); /* invalid: visible, and fails to load */
        break;
    }
    case T_STRING: {
        const char *s = cfld(c, k);
        size_t n = strnlen(s, k->size);
        msg_add(m, "\"");
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)s[i];
            if (ch == '"' || ch == '\\') msg_add(m, "\\%c", ch);
            else if (ch < 0x20 || ch == 0x7f) msg_add(m, "\\x%02X", ch);
            else msg_add(m, "%c", ch);
        }
        msg_add(m, "\"");
        break;
    }
    }
}

/* ---- YAML loader ---- */

typedef struct {
    yaml_parser_t parser;
    yaml_event_t ev;   /* the one live event, owned here */
    bool have_ev;
    const char *name;  /* path, for messages */
    const char *buf;   /* the input, to place reader errors */
    size_t len;
    Config *c;
    Msg *m;
    size_t key_line[NKEYS]; /* line where each key was set, 0: not yet */
    size_t sec_line[NKEYS]; /* same per section, at its first key's index */
    bool skip_unknown;      /* cfg_load_file_lenient: unknown sections and keys are skipped */
    int nskipped;
    Msg *skipped;           /* the first skipped: `path:line:col: section.key` */
} Loader;

static int ld_parse_error(Loader *ld);

/* Delete the current event, then parse the next one into ld->ev. */
static int ld_next(Loader *ld)
{
    if (ld->have_ev) {
        yaml_event_delete(&ld->ev);
        ld->have_ev = false;
    }
    if (!yaml_parser_parse(&ld->parser, &ld->ev)) return ld_parse_error(ld);
    ld->have_ev = true;
    return CFG_OK;
}

static void ld_at(Loader *ld, yaml_mark_t mark)
{
    msg_add(ld->m, "%s:%zu:%zu: ", ld->name, mark.line + 1, mark.column + 1);
}

static int ld_fail(Loader *ld, yaml_mark_t mark, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ld_fail(Loader *ld, yaml_mark_t mark, const char *fmt, ...)
{
    va_list ap;
    ld_at(ld, mark);
    va_start(ap, fmt);
    msg_vadd(ld->m, fmt, ap);
    va_end(ap);
    return CFG_ERR;
}

static int ld_parse_error(Loader *ld)
{
    const yaml_parser_t *p = &ld->parser;
    const char *problem = p->problem ? p->problem : "unknown error";
    if (p->error == YAML_MEMORY_ERROR) {
        msg_add(ld->m, "%s: out of memory while parsing YAML", ld->name);
        return CFG_ERR;
    }
    if (p->error == YAML_READER_ERROR) { /* placed by byte offset, not mark */
        yaml_mark_t mk = {0, 0, 0};
        for (size_t i = 0; i < p->problem_offset && i < ld->len; i++) {
            if (ld->buf[i] == '\n') mk.line++, mk.column = 0;
            else mk.column++;
        }
        ld_fail(ld, mk, "malformed YAML: %s", problem);
        if (p->problem_value != -1) msg_add(ld->m, " (#%X)", (unsigned)p->problem_value);
        return CFG_ERR;
    }
    ld_fail(ld, p->problem_mark, "malformed YAML: %s", problem);
    if (p->context)
        msg_add(ld->m, " (%s at %zu:%zu)", p->context, p->context_mark.line + 1,
                p->context_mark.column + 1);
    return CFG_ERR;
}

/* "a sequence", "a scalar 'text'", ...: what was found instead. */
static void msg_what(Msg *m, const yaml_event_t *e)
{
    switch (e->type) {
    case YAML_SCALAR_EVENT:
        msg_add(m, "a scalar ");
        msg_text(m, (const char *)e->data.scalar.value, e->data.scalar.length);
        break;
    case YAML_SEQUENCE_START_EVENT: msg_add(m, "a sequence"); break;
    case YAML_MAPPING_START_EVENT: msg_add(m, "a mapping"); break;
    case YAML_ALIAS_EVENT: msg_add(m, "an alias"); break;
    default: msg_add(m, "YAML event %d", (int)e->type); break;
    }
}

static bool ev_is_null(const yaml_event_t *e)
{
    return e->type == YAML_SCALAR_EVENT && e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           is_missing((const char *)e->data.scalar.value, e->data.scalar.length, V_PLAIN);
}

/* Anchors, aliases and tags are refused on every node; `ctx` ("model",
 * "model.hidden" or NULL) names where. */
static int ld_check_node(Loader *ld, const char *ctx)
{
    const yaml_event_t *e = &ld->ev;
    const yaml_char_t *name = NULL;
    const char *what = NULL;
    switch (e->type) {
    case YAML_ALIAS_EVENT:
        name = e->data.alias.anchor, what = "aliases are not supported: *";
        break;
    case YAML_SCALAR_EVENT:
        if ((name = e->data.scalar.anchor)) what = "anchors are not supported: &";
        else if ((name = e->data.scalar.tag)) what = "tags are not supported: ";
        break;
    case YAML_SEQUENCE_START_EVENT:
        if ((name = e->data.sequence_start.anchor)) what = "anchors are not supported: &";
        else if ((name = e->data.sequence_start.tag)) what = "tags are not supported: ";
        break;
    case YAML_MAPPING_START_EVENT:
        if ((name = e->data.mapping_start.anchor)) what = "anchors are not supported: &";
        else if ((name = e->data.mapping_start.tag)) what = "tags are not supported: ";
        break;
    default:
        break;
    }
    if (!what) return CFG_OK;
    ld_at(ld, e->start_mark);
    if (ctx) msg_add(ld->m, "%s: ", ctx);
    msg_add(ld->m, "%s", what);
    msg_raw(ld->m, (const char *)name, strlen((const char *)name));
    return CFG_ERR;
}

static int ld_value(Loader *ld, const CfgKey *k)
{
    char ctx[80];
    snprintf(ctx, sizeof ctx, "%s.%s", k->section, k->key);
    if (ld_next(ld) || ld_check_node(ld, ctx)) return CFG_ERR;
    const yaml_event_t *e = &ld->ev;
    if (e->type != YAML_SCALAR_EVENT) {
        ld_fail(ld, e->start_mark, "%s: expected ", ctx);
        msg_expect(ld->m, k);
        msg_add(ld->m, ", got ");
        msg_what(ld->m, e);
        return CFG_ERR;
    }
    char buf[512];
    Msg vm = msg_init(buf, sizeof buf);
    ValKind vk = e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? V_PLAIN : V_QUOTED;
    if (key_set(ld->c, k, (const char *)e->data.scalar.value, e->data.scalar.length, vk, &vm))
        return ld_fail(ld, e->start_mark, "%s", buf);
    return CFG_OK;
}

#define LD_SKIP_DEPTH 64 /* nesting of a skipped value; a config has 2 */

/* An unknown section or key (sec < 0: a section) under skip_unknown: counted,
 * the first named, and its value (a scalar or a whole mapping or sequence)
 * parsed and dropped. */
static int ld_skip(Loader *ld, int sec)
{
    const yaml_event_t *e = &ld->ev;
    if (ld->nskipped++ == 0) {
        msg_add(ld->skipped, "%s:%zu:%zu: %s%s", ld->name, e->start_mark.line + 1, e->start_mark.column + 1,
                sec >= 0 ? cfg_keys[sec].section : "", sec >= 0 ? "." : "");
        msg_raw(ld->skipped, (const char *)e->data.scalar.value, e->data.scalar.length);
    }
    int depth = 0;
    do {
        if (ld_next(ld)) return CFG_ERR;
        if (e->type == YAML_MAPPING_START_EVENT || e->type == YAML_SEQUENCE_START_EVENT) depth++;
        else if (e->type == YAML_MAPPING_END_EVENT || e->type == YAML_SEQUENCE_END_EVENT) depth--;
        if (depth > LD_SKIP_DEPTH) return ld_fail(ld, e->start_mark, "nested deeper than %d", LD_SKIP_DEPTH);
    } while (depth > 0);
    return CFG_OK;
}

/* The keys of one section, up to and including its MAPPING_END. */
static int ld_keys(Loader *ld, int sec)
{
    const char *s = cfg_keys[sec].section;
    for (;;) {
        if (ld_next(ld)) return CFG_ERR;
        const yaml_event_t *e = &ld->ev;
        if (e->type == YAML_MAPPING_END_EVENT) return CFG_OK;
        if (ld_check_node(ld, s)) return CFG_ERR;
        if (e->type != YAML_SCALAR_EVENT) {
            ld_fail(ld, e->start_mark, "%s: expected a key name, got ", s);
            msg_what(ld->m, e);
            return CFG_ERR;
        }
        int i = key_find(sec, (const char *)e->data.scalar.value, e->data.scalar.length);
        if (i < 0 && ld->skip_unknown) {
            if (ld_skip(ld, sec)) return CFG_ERR;
            continue;
        }
        if (i < 0) {
            ld_at(ld, e->start_mark);
            msg_unknown_key(ld->m, sec, (const char *)e->data.scalar.value, e->data.scalar.length);
            return CFG_ERR;
        }
        if (ld->key_line[i])
            return ld_fail(ld, e->start_mark, "%s.%s: duplicate key (first set at line %zu)", s,
                           cfg_keys[i].key, ld->key_line[i]);
        ld->key_line[i] = e->start_mark.line + 1;
        if (ld_value(ld, &cfg_keys[i])) return CFG_ERR;
    }
}

/* The top-level mapping's contents, up to and including its MAPPING_END. */
static int ld_sections(Loader *ld)
{
    for (;;) {
        if (ld_next(ld)) return CFG_ERR;
        const yaml_event_t *e = &ld->ev;
        if (e->type == YAML_MAPPING_END_EVENT) return CFG_OK;
        if (ld_check_node(ld, NULL)) return CFG_ERR;
        if (e->type != YAML_SCALAR_EVENT) {
            ld_fail(ld, e->start_mark, "expected a section name, got ");
            msg_what(ld->m, e);
            return CFG_ERR;
        }
        int sec = section_find((const char *)e->data.scalar.value, e->data.scalar.length);
        if (sec < 0 && ld->skip_unknown) {
            if (ld_skip(ld, -1)) return CFG_ERR;
            continue;
        }
        if (sec < 0) {
            ld_at(ld, e->start_mark);
            msg_unknown_section(ld->m, (const char *)e->data.scalar.value, e->data.scalar.length);
            return CFG_ERR;
        }
        const char *s = cfg_keys[sec].section;
        if (ld->sec_line[sec])
            return ld_fail(ld, e->start_mark, "duplicate section '%s' (first at line %zu)", s,
                           ld->sec_line[sec]);
        ld->sec_line[sec] = e->start_mark.line + 1;
        if (ld_next(ld) || ld_check_node(ld, s)) return CFG_ERR;
        if (e->type == YAML_MAPPING_START_EVENT) {
            if (ld_keys(ld, sec)) return CFG_ERR;
        } else if (!ev_is_null(e)) { /* `model:` with every key commented out is fine */
            ld_fail(ld, e->start_mark, "%s: expected a mapping of key: value, got ", s);
            msg_what(ld->m, e);
            return CFG_ERR;
        }
    }
}

/* One document: a mapping of sections (or nothing). The grammar fixes the
 * depth at two (section, key); any deeper node is refused at its first
 * event, so nesting never grows past that. */
static int ld_document(Loader *ld)
{
    if (ld_next(ld) || ld_check_node(ld, NULL)) return CFG_ERR;
    const yaml_event_t *e = &ld->ev;
    if (e->type == YAML_MAPPING_START_EVENT) {
        if (ld_sections(ld)) return CFG_ERR;
    } else if (!ev_is_null(e)) {
        ld_fail(ld, e->start_mark, "expected a mapping of sections (");
        msg_sections(ld->m);
        msg_add(ld->m, ") at the top level, got ");
        msg_what(ld->m, e);
        return CFG_ERR;
    }
    if (ld_next(ld)) return CFG_ERR;
    if (e->type != YAML_DOCUMENT_END_EVENT)
        return ld_fail(ld, e->start_mark, "expected the end of the document");
    return CFG_OK;
}

static int ld_stream(Loader *ld)
{
    if (ld_next(ld)) return CFG_ERR; /* STREAM_START */
    if (ld_next(ld)) return CFG_ERR;
    const yaml_event_t *e = &ld->ev;
    if (e->type == YAML_STREAM_END_EVENT) return CFG_OK; /* empty, or only comments */
    if (e->type != YAML_DOCUMENT_START_EVENT)
        return ld_fail(ld, e->start_mark, "expected a YAML document");
    if (ld_document(ld) || ld_next(ld)) return CFG_ERR;
    if (e->type == YAML_DOCUMENT_START_EVENT)
        return ld_fail(ld, e->start_mark, "expected one YAML document, found a second");
    if (e->type != YAML_STREAM_END_EVENT)
        return ld_fail(ld, e->start_mark, "expected the end of the input");
    return CFG_OK;
}

/* ---- public ---- */

void cfg_defaults(Config *c)
{
    memset(c, 0, sizeof *c); /* padding too: Config is broadcast as bytes */
    for (size_t i = 0; i < NKEYS; i++) {
        const CfgKey *k = &cfg_keys[i];
        char buf[256];
        Msg m = msg_init(buf, sizeof buf);
        if (key_set(c, k, k->def, strlen(k->def), V_RAW, &m) != CFG_OK) {
            fprintf(stderr, "cfg: built-in default is invalid: %s\n", buf);
            abort();
        }
    }
}

/* cfg_load_string; with skipped non-NULL, unknown sections and keys are skipped into it. */
static int load_string(Config *c, const char *yaml, size_t len, const char *name, Msg *skipped,
                       int *nskipped, char *err, size_t errlen)
{
    Msg m = msg_init(err, errlen);
    Config tmp = *c; /* applied only if the whole input is good */
    Loader *ld = calloc(1, sizeof *ld);
    if (!ld || !yaml_parser_initialize(&ld->parser)) {
        msg_add(&m, "%s: out of memory", name ? name : "<string>");
        free(ld);
        return CFG_ERR;
    }
    ld->name = name ? name : "<string>";
    ld->buf = yaml ? yaml : "";
    ld->len = yaml ? len : 0;
    ld->c = &tmp;
    ld->m = &m;
    ld->skip_unknown = skipped != NULL;
    ld->skipped = skipped;
    yaml_parser_set_input_string(&ld->parser, (const unsigned char *)ld->buf, ld->len);
    int rc = ld_stream(ld);
    if (ld->have_ev) yaml_event_delete(&ld->ev);
    yaml_parser_delete(&ld->parser);
    if (nskipped) *nskipped = ld->nskipped;
    free(ld);
    if (rc == CFG_OK) *c = tmp;
    return rc;
}

int cfg_load_string(Config *c, const char *yaml, size_t len, const char *name, char *err, size_t errlen)
{
    return load_string(c, yaml, len, name, NULL, NULL, err, errlen);
}

/* Whole file into a malloc'd buffer, at most CFG_FILE_MAX bytes. */
static int read_file(const char *path, char **out, size_t *outlen, Msg *m)
{
    const char *why;
    int fd = fs_open_regular(path, 1, &why); /* a FIFO must not hang --check */
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        int type = fd < 0 && errno == EINVAL; /* not a regular file */
        if (fd >= 0) why = strerror(errno), close(fd);
        msg_add(m, "%s: %s%s", path, type ? "" : "cannot open: ", why);
        return CFG_ERR;
    }
    size_t cap = 0, n = 0;
    char *buf = NULL;
    for (;;) {
        if (n == cap) {
            if (cap > CFG_FILE_MAX) {
                msg_add(m, "%s: larger than %u bytes, not a config", path, CFG_FILE_MAX);
                goto fail;
            }
            cap = cap ? 2 * cap : 4096;
            char *nb = realloc(buf, cap + 1);
            if (!nb) { msg_add(m, "%s: out of memory", path); goto fail; }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) { msg_add(m, "%s: cannot read: %s", path, strerror(errno)); goto fail; }
            break;
        }
    }
    if (n > CFG_FILE_MAX) {
        msg_add(m, "%s: larger than %u bytes, not a config", path, CFG_FILE_MAX);
        goto fail;
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf, *outlen = n;
    return CFG_OK;
fail:
    fclose(f);
    free(buf);
    return CFG_ERR;
}

int cfg_load_file(Config *c, const char *path, char *err, size_t errlen)
{
    Msg m = msg_init(err, errlen);
    char *buf = NULL;
    size_t n = 0;
    if (!path) {
        msg_add(&m, "(null): no config path");
        return CFG_ERR;
    }
    if (read_file(path, &buf, &n, &m)) return CFG_ERR;
    int rc = cfg_load_string(c, buf, n, path, err, errlen);
    free(buf);
    return rc;
}

int cfg_load_file_lenient(Config *c, const char *path, int *nskipped, char *skipped, size_t skippedlen,
                          char *err, size_t errlen)
{
    Msg m = msg_init(err, errlen), sk = msg_init(skipped, skippedlen);
    char *buf = NULL;
    size_t n = 0;
    *nskipped = 0;
    if (read_file(path, &buf, &n, &m)) return CFG_ERR;
    int rc = load_string(c, buf, n, path, &sk, nskipped, err, errlen);
    free(buf);
    return rc;
}

int cfg_set_arg(Config *c, const char *arg, char *err, size_t errlen)
{
    Msg m = msg_init(err, errlen);
    if (!arg) arg = "";
    const char *eq = strchr(arg, '=');
    const char *dot = eq ? memchr(arg, '.', (size_t)(eq - arg)) : NULL;
    msg_add(&m, "--set ");
    msg_raw(&m, arg, strlen(arg));
    msg_add(&m, ": ");
    if (!eq || !dot) {
        msg_add(&m, "expected section.key=value");
        return CFG_ERR;
    }
    int sec = section_find(arg, (size_t)(dot - arg));
    if (sec < 0) {
        msg_unknown_section(&m, arg, (size_t)(dot - arg));
        return CFG_ERR;
    }
    int i = key_find(sec, dot + 1, (size_t)(eq - dot - 1));
    if (i < 0) {
        msg_unknown_key(&m, sec, dot + 1, (size_t)(eq - dot - 1));
        return CFG_ERR;
    }
    if (key_set(c, &cfg_keys[i], eq + 1, strlen(eq + 1), V_RAW, &m)) return CFG_ERR;
    if (m.cap) err[0] = '\0';
    return CFG_OK;
}

/* Parameters of the model worker/model.c builds: embedding (markov only),
 * per layer wx (Ein, G*H), wh (H, G*H), b (G*H), then the head (H, O), (O),
 * and with the adaptive softmax per tail cluster proj (H, d), weight (d, n), bias (n). */
int cfg_tied(const Config *c) { return c->model_tie_embeddings && c->data_source != DATA_ADDING; }

int cfg_micro_batch(const Config *c)
{
    return c->data_micro_batch > 0 ? c->data_micro_batch : c->data_batch_per_worker;
}

/* model.softmax_cutoffs into cut[0..K) (K returned), or -1 with *why set.
 * vocab > 0: each cutoff must also be below it. */
static int parse_cutoffs(const char *s, int vocab, int cut[CFG_MAX_CLUSTERS], const char **why)
{
    int K = 0;
    for (const char *p = s;;) {
        while (*p == ' ') p++;
        if (*p < '0' || *p > '9') return *why = "word ids (digits) separated by commas", -1;
        if (K == CFG_MAX_CLUSTERS) return *why = "at most 4 cutoffs (tail clusters)", -1;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || v < 1 || v > 1000000) return *why = "each cutoff in [1, 1000000]", -1;
        if (K && v <= cut[K - 1]) return *why = "cutoffs strictly ascending", -1;
        if (vocab > 0 && v >= vocab) return *why = "each cutoff below model.vocab", -1;
        cut[K++] = (int)v;
        while (*end == ' ') end++;
        if (!*end) return K;
        if (*end != ',') return *why = "word ids (digits) separated by commas", -1;
        p = end + 1;
    }
}

int cfg_adaptive(const Config *c, int cut[CFG_MAX_CLUSTERS + 1], int dim[CFG_MAX_CLUSTERS])
{
    int cc[CFG_MAX_CLUSTERS + 1], dd[CFG_MAX_CLUSTERS];
    const char *why;
    if (c->model_softmax != SOFTMAX_ADAPTIVE || c->data_source == DATA_ADDING) return 0;
    int K = parse_cutoffs(c->model_softmax_cutoffs, c->model_vocab, cc, &why);
    if (K < 0) return -1;
    cc[K] = c->model_vocab;
    long w = c->model_hidden;
    for (int k = 0; k < K; k++) w /= c->model_softmax_div, dd[k] = w > 0 ? (int)w : 1;
    if (cut) memcpy(cut, cc, (size_t)(K + 1) * sizeof *cut);
    if (dim) memcpy(dim, dd, (size_t)K * sizeof *dim);
    return K;
}

/* The tail clusters cfg_layout lays out: cfg_adaptive's, none when the
 * cutoffs are bad or the tensors would not fit (cfg_validate refuses both). */
static int layout_clusters(const Config *c, int cut[CFG_MAX_CLUSTERS + 1], int dim[CFG_MAX_CLUSTERS])
{
    int K = cfg_adaptive(c, cut, dim);
    return K < 0 || 3 + 3 * K + 3 * c->model_layers > CFG_MAX_TENSORS ? 0 : K;
}

int cfg_gates(int kind) { return kind == MODEL_LSTM ? 4 : kind == MODEL_GRU ? 3 : 1; }

static void layout_add(CfgLayout *lo, const char *name, int ndim, long rows, long cols)
{
    assert(lo->n < CFG_MAX_TENSORS);
    CfgTensor *t = &lo->t[lo->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim, t->shape[0] = rows, t->shape[1] = cols;
    t->off = lo->nparams;
    t->n = (uint64_t)rows * (uint64_t)cols;
    lo->nparams += t->n;
}

void cfg_layout(const Config *c, CfgLayout *lo)
{
    long V = c->model_vocab, E = c->model_embed, H = c->model_hidden;
    int L = c->model_layers < CFG_MAX_LAYERS ? c->model_layers : CFG_MAX_LAYERS; /* loaded: 1..16 */
    int markov = c->data_source != DATA_ADDING; /* token input and softmax output */
    int cut[CFG_MAX_CLUSTERS + 1], dim[CFG_MAX_CLUSTERS], K = layout_clusters(c, cut, dim);
    long O = markov ? (K ? cut[0] + K : V) : 1, in = markov ? E : 2, GH = (long)cfg_gates(c->model_kind) * H;
    char name[32];
    lo->n = 0, lo->nparams = 0, lo->gates = cfg_gates(c->model_kind);
    if (!cfg_tied(c)) layout_add(lo, "head.weight", 2, H, O);
    layout_add(lo, "head.bias", 1, O, 1);
    for (int k = 0; k < K; k++) { /* adaptive softmax: tail cluster k */
        long n = cut[k + 1] - cut[k];
        snprintf(name, sizeof name, "tail.%d.proj", k);
        layout_add(lo, name, 2, H, dim[k]);
        snprintf(name, sizeof name, "tail.%d.weight", k);
        layout_add(lo, name, 2, dim[k], n);
        snprintf(name, sizeof name, "tail.%d.bias", k);
        layout_add(lo, name, 1, n, 1);
    }
    for (int l = L - 1; l >= 0; l--) {
        snprintf(name, sizeof name, "layers.%d.wx", l);
        layout_add(lo, name, 2, l ? H : in, GH);
        snprintf(name, sizeof name, "layers.%d.wh", l);
        layout_add(lo, name, 2, H, GH);
        snprintf(name, sizeof name, "layers.%d.bias", l);
        layout_add(lo, name, 1, GH, 1);
    }
    if (markov) layout_add(lo, "embed.weight", 2, V, E);
}

uint64_t cfg_param_count(const Config *c)
{
    CfgLayout lo;
    cfg_layout(c, &lo);
    return lo.nparams;
}

static int validate_fail(Msg *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int validate_fail(Msg *m, const char *fmt, ...)
{
    va_list ap;
    msg_add(m, "config: ");
    va_start(ap, fmt);
    msg_vadd(m, fmt, ap);
    va_end(ap);
    return CFG_ERR;
}

static int cutoffs_fail(const Config *c, Msg *m, const char *why)
{
    return validate_fail(m, "model.softmax_cutoffs: expected %s (e.g. 2000,10000), got '%s' (model.vocab %d)",
                         why, c->model_softmax_cutoffs, c->model_vocab);
}

/* model.softmax and its cutoffs: the cutoffs' syntax always, the rest when adaptive. */
static int validate_softmax(const Config *c, Msg *m)
{
    int cut[CFG_MAX_CLUSTERS], K;
    const char *why;
    if (parse_cutoffs(c->model_softmax_cutoffs, 0, cut, &why) < 0) return cutoffs_fail(c, m, why);
    if (c->model_softmax != SOFTMAX_ADAPTIVE) return CFG_OK;
    if (c->data_source != DATA_TEXT || c->data_tokenizer != TOK_WORDS)
        return validate_fail(m, "model.softmax: adaptive needs data.source text with data.tokenizer "
                                "words (word ids ordered by frequency), got data.source %s%s",
                             source_names[c->data_source], c->data_source == DATA_TEXT ? " with bytes" : "");
    if (c->model_tie_embeddings)
        return validate_fail(m, "model.softmax: adaptive with model.tie_embeddings: the adaptive head "
                                "has no (V, H) weight to tie; set model.tie_embeddings false or "
                                "model.softmax full");
    if ((K = parse_cutoffs(c->model_softmax_cutoffs, c->model_vocab, cut, &why)) < 0)
        return cutoffs_fail(c, m, why);
    int ntensors = 2 + 3 * K + 3 * c->model_layers + 1;
    if (ntensors > CFG_MAX_TENSORS)
        return validate_fail(m, "model.softmax_cutoffs: %d tail clusters with %d layers make %d tensors, "
                                "at most %d", K, c->model_layers, ntensors, CFG_MAX_TENSORS);
    return CFG_OK;
}

/* train.embedding_update: lazy updates only the embedding rows the sparse
 * sync sent, so it needs that sync (replicated), and no weight decay (which
 * would then shrink a row only in the steps whose tokens touch it). */
static int validate_embedding_update(const Config *c, Msg *m)
{
    if (c->train_embedding_update != EMB_LAZY) return CFG_OK;
    if (c->sync_mode == SYNC_SHARDED)
        return validate_fail(m, "train.embedding_update: lazy needs sync.mode replicated (it updates "
                                "the rows of sync.sparse_embedding, which is replicated only)");
    if (!c->sync_sparse_embedding)
        return validate_fail(m, "train.embedding_update: lazy needs sync.sparse_embedding: true (it "
                                "updates the embedding rows that sync sends)");
    if (c->train_weight_decay > 0)
        return validate_fail(m, "train.embedding_update: lazy with train.weight_decay %g: the decay "
                                "would shrink an embedding row only in the steps that touch it; set "
                                "train.weight_decay 0 or train.embedding_update dense",
                             c->train_weight_decay);
    return CFG_OK;
}

int cfg_parse_listen(const char *s, char host[CFG_HOST_LEN], uint32_t *ip_be, int *port)
{
    if (!strcmp(s, "off")) return 1;
    const char *colon = strrchr(s, ':');
    size_t hl = colon ? (size_t)(colon - s) : 0, nd = colon ? strlen(colon + 1) : 0;
    char h[64];
    struct in_addr ip;
    if (!colon || hl == 0 || hl >= sizeof h || nd < 1 || nd > 5 ||
        strspn(colon + 1, "0123456789") != nd) /* digits only: no sign, blank or 0x */
        return -1;
    memcpy(h, s, hl);
    h[hl] = 0;
    long p = strtol(colon + 1, NULL, 10);
    if (p > 65535 || inet_pton(AF_INET, h, &ip) != 1) return -1;
    if (host) inet_ntop(AF_INET, &ip, host, CFG_HOST_LEN); /* as written: inet_pton takes no other form */
    if (ip_be) *ip_be = ip.s_addr;
    if (port) *port = (int)p;
    return 0;
}

int cfg_validate(const Config *c, char *err, size_t errlen)
{
    Msg m = msg_init(err, errlen);
    for (size_t i = 0; i < NKEYS; i++) { /* a Config may come from bytes or code */
        const CfgKey *k = &cfg_keys[i];
        if (key_ok(c, k)) continue;
        msg_add(&m, "config: %s.%s: expected ", k->section, k->key);
        msg_expect(&m, k);
        msg_add(&m, ", got ");
        msg_value(&m, c, k);
        return CFG_ERR;
    }
    if (cfg_parse_listen(c->metrics_listen, NULL, NULL, NULL) < 0)
        return validate_fail(&m, "metrics.listen: expected IPv4:PORT (e.g. 127.0.0.1:9464) "
                                 "or off, got '%s'", c->metrics_listen);
    if (c->watchdog_seconds > 0 && c->watchdog_warn_seconds > c->watchdog_seconds)
        return validate_fail(&m, "watchdog.warn_seconds: %g is more than watchdog.seconds %g",
                             c->watchdog_warn_seconds, c->watchdog_seconds);
    /* Accepted names whose implementation has not landed yet (issue 6). */
    if (c->data_source == DATA_TEXT && !c->data_path[0])
        return validate_fail(&m, "data.path: missing: data.source text needs a file or a "
                                 "directory with train.txt and valid.txt");
    /* An epoch-end kind's own key: an epoch's end has no update to skip or roll back. */
#define EVCFG(key, def, doc) \
    if (c->divergence_##key##_action == ACT_SKIP || c->divergence_##key##_action == ACT_ROLLBACK) \
        return validate_fail(&m, "divergence." #key ".action: expected inherit, log or abort " \
                                 "(an epoch's end has no update to skip or roll back)");
#define EVCFG_SHARED(key)
#define EVCFG_NONE
#define EPOCH_KEY(id, name, scope, min_action, norms, level, config) if (scope == EVS_EPOCH) { config }
    EVENT_KINDS(EPOCH_KEY)
#undef EPOCH_KEY
#undef EVCFG
#undef EVCFG_SHARED
#undef EVCFG_NONE
    if (c->debug_nan_tensor[0]) {
        CfgLayout lo;
        cfg_layout(c, &lo);
        int found = 0;
        for (int i = 0; i < lo.n; i++) found |= !strcmp(lo.t[i].name, c->debug_nan_tensor);
        if (!found)
            return validate_fail(&m, "debug.nan_tensor: no tensor '%s' in this model (names as in "
                                     "tensors.jsonl)", c->debug_nan_tensor);
    }
    if (c->model_tie_embeddings && (c->data_source == DATA_ADDING || c->model_embed != c->model_hidden))
        return validate_fail(&m, "model.tie_embeddings: true needs a model with an embedding (data.source "
                                 "markov or text) and model.embed == model.hidden (%d != %d)",
                             c->model_embed, c->model_hidden);
    if (validate_softmax(c, &m) != CFG_OK) return CFG_ERR;
    if (validate_embedding_update(c, &m) != CFG_OK) return CFG_ERR;
    if (c->sync_sparse_embedding && c->model_tie_embeddings)
        return validate_fail(&m, "sync.sparse_embedding: true with model.tie_embeddings: the tied head "
                                 "writes every row of the embedding gradient; set one of them false");
    if (c->sync_sparse_embedding && c->sync_reproducible == REPRO_TRUE)
        return validate_fail(&m, "sync.sparse_embedding: true with sync.reproducible (which syncs "
                                 "every micro-batch's whole gradient); set one of them false");
    if (c->sync_sparse_embedding && (c->data_source == DATA_ADDING || c->sync_mode == SYNC_SHARDED))
        return validate_fail(&m, "sync.sparse_embedding: true needs a model with an embedding (data.source "
                                 "markov or text) and sync.mode replicated");
    if (c->divergence_warmup > c->divergence_window)
        return validate_fail(&m, "divergence.warmup (%d) must be <= divergence.window (%d)",
                             c->divergence_warmup, c->divergence_window);
    if (c->divergence_action == ACT_INHERIT)
        return validate_fail(&m, "divergence.action: expected one of log, skip, rollback, "
                                 "abort (inherit is for the per-kind actions)");
    if (c->data_source == DATA_MARKOV) {
        if (c->data_markov_branch > c->model_vocab)
            return validate_fail(&m, "data.markov_branch (%d) must be <= model.vocab (%d) "
                                     "when data.source is markov",
                                 c->data_markov_branch, c->model_vocab);
        uint64_t nctx = 1; /* V^order, stopping early: 1000000^4 overflows */
        for (int i = 0; i < c->data_markov_order && nctx <= (1u << 24); i++)
            nctx *= (uint64_t)c->model_vocab;
        if (nctx > (1u << 24))
            return validate_fail(&m, "model.vocab^data.markov_order (%d^%d) must be <= 16777216 "
                                     "(2^24), the size of the chain's context table",
                                 c->model_vocab, c->data_markov_order);
        if (nctx * (uint64_t)c->data_markov_branch > (UINT64_C(1) << 26))
            return validate_fail(&m, "model.vocab^data.markov_order * data.markov_branch "
                                     "(%" PRIu64 ") must be <= 67108864 (2^26), the chain's "
                                     "transition table", nctx * (uint64_t)c->data_markov_branch);
    } else if (c->data_source == DATA_ADDING && c->data_seq_len < 2) {
        return validate_fail(&m, "data.seq_len (%d) must be >= 2 when data.source is adding",
                             c->data_seq_len);
    }
    if (c->sync_reproducible == REPRO_TRUE && c->data_micro_batch > 0 &&
        c->data_batch_per_worker % c->data_micro_batch != 0)
        return validate_fail(&m, "data.micro_batch (%d) must divide data.batch_per_worker (%d) "
                                 "when sync.reproducible is true (as auto is unless worker.threads "
                                 "> 1, sync.mode sharded or sync.sparse_embedding): every worker "
                                 "cuts its streams into whole micro-batches", c->data_micro_batch,
                             c->data_batch_per_worker);
    uint64_t G = c->model_kind == MODEL_LSTM ? 4 : c->model_kind == MODEL_GRU ? 3 : 1;
    uint64_t wide = G * (uint64_t)c->model_hidden;
    if ((uint64_t)c->model_vocab > wide) wide = (uint64_t)c->model_vocab;
    if ((uint64_t)c->model_embed > wide) wide = (uint64_t)c->model_embed;
    uint64_t act = (uint64_t)c->data_seq_len * (uint64_t)c->data_batch_per_worker * wide;
    if (act > (uint64_t)INT32_MAX)
        return validate_fail(&m, "data.seq_len * data.batch_per_worker * the widest layer "
                                 "(%" PRIu64 ") must be < 2147483648 (2^31), the largest "
                                 "activation matrix: reduce data.seq_len or "
                                 "data.batch_per_worker", act);
    uint64_t np = cfg_param_count(c);
    if (np >= (UINT64_C(1) << 31))
        return validate_fail(&m, "the model has %" PRIu64 " parameters, must be < 2147483648 "
                                 "(2^31): reduce model.hidden, model.layers, model.embed or "
                                 "model.vocab", np);
    return CFG_OK;
}

/* Output for cfg_print (to a FILE) or cfg_hash (FNV-1a 64 of the bytes). */
typedef struct { FILE *f; uint64_t h; } Sink;

static void sink_write(Sink *s, const char *p, size_t n)
{
    if (s->f) {
        fwrite(p, 1, n, s->f);
        return;
    }
    s->h = fnv1a64(p, n, s->h);
}

/* Key k of c holds its default value. */
static bool key_at_default(const Config *c, const CfgKey *k)
{
    Config d = *c;
    char buf[256];
    Msg m = msg_init(buf, sizeof buf);
    if (key_set(&d, k, k->def, strlen(k->def), V_RAW, &m) != CFG_OK) return false;
    if (k->type == T_STRING) return !strncmp(cfld(c, k), cfld(&d, k), k->size);
    return !memcmp(cfld(c, k), cfld(&d, k), k->size);
}

/* Section by section, every key. Docs go in comments, which cfg_hash leaves
 * out so that rewording a doc does not change a run's identity; it also
 * leaves out the keys flagged F_NO_HASH (where output goes, logging,
 * metrics, watchdog, checkpoint retention, bucket size, crash hooks): two
 * runs that compute the same numbers have the same hash; and F_HASH_SET
 * keys at their default, so a key added later keeps the hashes of the
 * runs that do not use it. */
static void cfg_write(const Config *c, Sink *s, bool docs)
{
    char line[1536]; /* "  key: " + a 255-byte string escaped (<= 4x) + doc */
    if (docs) sink_write(s, "# clipd effective config\n", 25);
    for (size_t i = 0; i < NKEYS; i++) {
        const CfgKey *k = &cfg_keys[i];
        Msg m = msg_init(line, sizeof line);
        if (is_first_of_section(i)) msg_add(&m, "%s:\n", k->section);
        if (!docs && ((k->flags & F_NO_HASH) || ((k->flags & F_HASH_SET) && key_at_default(c, k)))) {
            sink_write(s, line, m.len);
            continue;
        }
        size_t start = m.len;
        msg_add(&m, "  %s: ", k->key);
        msg_value(&m, c, k);
        size_t w = m.len - start;
        if (docs) msg_add(&m, "%*s# %s", (int)(w < 32 ? 32 - w : 1), "", k->doc);
        msg_add(&m, "\n");
        sink_write(s, line, m.len);
    }
}

void cfg_print(const Config *c, FILE *f)
{
    Sink s = {f, 0};
    cfg_write(c, &s, true);
}

void cfg_resolve(Config *c, char *note, size_t notelen)
{
    if (notelen) note[0] = 0;
    if (c->sync_reproducible != REPRO_AUTO) return;
    const char *why = c->worker_threads > 1 ? "worker.threads > 1 (it would use 1 BLAS thread per worker)"
                      : c->sync_mode == SYNC_SHARDED ? "sync.mode sharded (it would all-gather the gradient)"
                      : c->sync_sparse_embedding ? "sync.sparse_embedding (it syncs whole gradients)"
                      : NULL;
    c->sync_reproducible = why ? REPRO_FALSE : REPRO_TRUE;
    if (why)
        snprintf(note, notelen, "sync.reproducible auto: false, for %s", why);
    else if (c->data_micro_batch > 0)
        snprintf(note, notelen, "sync.reproducible auto: true, micro-batches of %d streams",
                 c->data_micro_batch);
    else
        snprintf(note, notelen, "sync.reproducible auto: true, one micro-batch of %d streams per worker "
                 "(a replay on fewer workers at the same global batch sets data.micro_batch: %d)",
                 c->data_batch_per_worker, c->data_batch_per_worker);
}

uint64_t cfg_hash(const Config *c)
{
    Sink s = {NULL, FNV1A64_INIT};
    cfg_write(c, &s, false);
    return s.h;
}

static const char *enum_name(const char *const *names, size_t n, int v)
{
    return v >= 0 && (size_t)v < n ? names[v] : "?";
}

const char *cfg_model_name(int kind) { return enum_name(model_names, NELEM(model_names), kind); }
const char *cfg_source_name(int src) { return enum_name(source_names, NELEM(source_names), src); }
const char *cfg_opt_name(int opt) { return enum_name(opt_names, NELEM(opt_names), opt); }
const char *cfg_clip_name(int mode) { return enum_name(clip_names, NELEM(clip_names), mode); }
const char *cfg_action_name(int act) { return enum_name(act_names, NELEM(act_names), act); }
const char *cfg_schedule_name(int s) { return enum_name(sched_names, NELEM(sched_names), s); }

void cfg_checkpoint_dir(const Config *c, char *out, size_t len)
{
    if (c->checkpoint_dir[0]) snprintf(out, len, "%s", c->checkpoint_dir);
    else snprintf(out, len, "%s/checkpoints", c->run_dir);
}

int cfg_tensor_names(const Config *c, char names[][32], int max)
{
    CfgLayout lo;
    cfg_layout(c, &lo);
    for (int i = 0; i < lo.n && i < max; i++) snprintf(names[i], 32, "%s", lo.t[i].name);
    return lo.n;
}

int cfg_event_action(const Config *c, int kind)
{
    int a = ACT_LOG;
    switch (kind) {
#define EVCFG(key, def, doc) a = c->divergence_##key##_action;
#define EVCFG_SHARED(key) a = c->divergence_##key##_action;
#define EVCFG_NONE
#define KIND_ACTION(id, name, scope, min_action, norms, level, config) case EV_##id: config break;
    EVENT_KINDS(KIND_ACTION)
#undef KIND_ACTION
#undef EVCFG
#undef EVCFG_SHARED
#undef EVCFG_NONE
    default: return ACT_LOG;
    }
    if (a == ACT_INHERIT) a = c->divergence_action;
    return a < event_kinds[kind].min_action ? event_kinds[kind].min_action : a;
}

int cfg_tensor_shape(const Config *c, int i, long shape[2])
{
    CfgLayout lo;
    cfg_layout(c, &lo);
    if (i < 0 || i >= lo.n) return shape[1] = 1, 0;
    shape[0] = lo.t[i].shape[0], shape[1] = lo.t[i].shape[1];
    return lo.t[i].ndim;
}

uint64_t cfg_pack_wh_floats(uint64_t H, uint64_t GH)
{
    const uint64_t nr = CFG_PACK_NR, fwd = H * ((GH + nr - 1) / nr * nr), bwd = GH * ((H + nr - 1) / nr * nr);
    return fwd > bwd ? fwd : bwd;
}

uint64_t cfg_pack_floats(const Config *c)
{
    uint64_t H = (uint64_t)c->model_hidden, GH = (uint64_t)cfg_gates(c->model_kind) * H;
    return c->worker_packed_recurrent && H * GH >= CFG_PACK_MIN ? cfg_pack_wh_floats(H, GH) : 0;
}

uint64_t cfg_model_floats(const Config *c, int B)
{
    uint64_t T = (uint64_t)c->data_seq_len, H = (uint64_t)c->model_hidden, TB = T * (uint64_t)B;
    uint64_t E = (uint64_t)c->model_embed, L = (uint64_t)c->model_layers;
    int markov = c->data_source != DATA_ADDING, lstm = c->model_kind == MODEL_LSTM, gru = c->model_kind == MODEL_GRU;
    uint64_t G = (uint64_t)cfg_gates(c->model_kind), in = markov ? E : 2;
    CfgLayout lo;
    cfg_layout(c, &lo);
    uint64_t O = (uint64_t)lo.t[cfg_tied(c) ? 0 : 1].shape[0]; /* head.bias: the head's outputs */
    uint64_t wide = E > H ? E : H;
    if (in > wide) wide = in;
    uint64_t per_layer = (TB + (uint64_t)B) * H * (lstm ? 2 : 1) + (lstm || gru ? TB * G * H : 0) + (gru ? TB * H : 0);
    uint64_t n = 2 * cfg_param_count(c) + L * per_layer + TB * in + (markov ? TB : (uint64_t)B) * O + 2 * TB * wide +
                 (c->model_kind != MODEL_RNN ? TB * G * H : 0) + (gru ? TB * G * H : 0) + (uint64_t)B * H;
    if (markov && c->model_dropout > 0) n += 2 * TB * (in + L * H);
    int cut[CFG_MAX_CLUSTERS + 1], dim[CFG_MAX_CLUSTERS], K = layout_clusters(c, cut, dim), wmax = 0;
    for (int k = 0; k < K; k++) wmax = cut[k + 1] - cut[k] > wmax ? cut[k + 1] - cut[k] : wmax;
    if (K > 0) n += TB * (3 + 2 * H + 2 * (uint64_t)dim[0] + (uint64_t)wmax); /* adaptive_scratch */
    return n + cfg_pack_floats(c);
}

uint64_t cfg_worker_bytes(const Config *c, int W)
{
    uint64_t P = cfg_param_count(c), B = (uint64_t)c->data_batch_per_worker, H = (uint64_t)c->model_hidden;
    int adam = c->train_optimizer != OPT_SGD, moments = adam ? 2 : c->train_momentum > 0 ? 1 : 0;
    uint64_t own = c->sync_mode == SYNC_SHARDED && W > 0 ? (P + (uint64_t)W - 1) / (uint64_t)W : P;
    int rollback = 0;
    for (int k = 0; k < EV_COUNT; k++) rollback |= cfg_event_action(c, k) == ACT_ROLLBACK;
    uint64_t floats = cfg_model_floats(c, (int)B) + (uint64_t)moments * own + /* sync: a shard per rank */ P +
                      (rollback ? P * (uint64_t)(1 + moments) : 0) +
                      2 * (uint64_t)c->model_layers * (uint64_t)(W > 0 ? W : 1) * B * H + /* worker 0's gather */
                      (own < P ? (uint64_t)moments * P : 0); /* and, sharded, its whole moments */
    /* sync.reproducible with n > 1 micro-batches a worker (worker/repro.c,
     * sync_set_reproducible): n gradient slots, with W > 1 the pack of their
     * pieces, every rank's n pieces of the shard (n x the shard above), and
     * a micro-batch model's activations (it borrows the parameters and the
     * first slot). */
    uint64_t mb = (uint64_t)cfg_micro_batch(c), n = B % mb == 0 ? B / mb : 1;
    if (c->sync_reproducible == REPRO_TRUE && n > 1)
        floats += n * P + (W > 1 ? n * P : 0) + (n - 1) * P + (cfg_model_floats(c, (int)mb) - 2 * P);
    return 4 * floats;
}
