/* cfg: the run configuration. One table of keys (section.key, type, bounds,
 * default, doc) drives the libyaml loader, `--set section.key=value`
 * overrides, validation and printing of the effective config. Errors fill a
 * caller-owned buffer as `file:line:col: key: what was expected`. */
#ifndef CLIPD_CFG_H
#define CLIPD_CFG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/events.h" /* Action, the event kinds and their action keys */

enum { CFG_OK = 0, CFG_ERR = -1 }; /* the error convention (docs/ARCHITECTURE.md): 0, or -1 with err; main picks the exit code */

typedef enum { MODEL_RNN = 0, MODEL_LSTM = 1, MODEL_GRU = 2 } ModelKind;
typedef enum { DATA_MARKOV = 0, DATA_ADDING = 1, DATA_TEXT = 2 } DataSource;
typedef enum { TOK_BYTES = 0, TOK_WORDS = 1 } Tokenizer;
typedef enum { SOFTMAX_FULL = 0, SOFTMAX_ADAPTIVE = 1 } SoftmaxKind;
typedef enum { OPT_SGD = 0, OPT_ADAM = 1, OPT_ADAMW = 2 } OptKind;
typedef enum { EMB_DENSE = 0, EMB_LAZY = 1 } EmbUpdate;
typedef enum { CLIP_GLOBAL_NORM = 0, CLIP_PER_TENSOR = 1, CLIP_VALUE = 2, CLIP_NONE = 3 } ClipMode;
typedef enum { SYNC_REPLICATED = 0, SYNC_SHARDED = 1 } SyncMode;
/* sync.reproducible; auto becomes false or true in cfg_resolve */
typedef enum { REPRO_FALSE = 0, REPRO_TRUE = 1, REPRO_AUTO = 2 } ReproMode;
typedef enum { SCHED_CONSTANT = 0, SCHED_STEP = 1, SCHED_COSINE = 2, SCHED_PLATEAU = 3 } LrSchedule;
/* checkpoint.on_failure: what a checkpoint that cannot be written does to the run. */
typedef enum { CKFAIL_ABORT = 0, CKFAIL_CONTINUE = 1 } CkptFailPolicy;
/* debug.ckpt_crash_at: where the checkpoint writer kills its process (test hook). */
typedef enum { CRASH_DURING_WRITE = 0, CRASH_BEFORE_RENAME = 1, CRASH_AFTER_RENAME = 2 } CkptCrashAt;

#define CFG_STR_MAX 256
#define CFG_MAX_CLUSTERS 4   /* model.softmax adaptive: tail clusters (cutoffs) at most */

/* Plain old data: the coordinator broadcasts it to the workers as bytes. */
typedef struct {
    /* run */
    char run_name[64];
    char run_dir[CFG_STR_MAX];
    int64_t run_seed;
    int run_overwrite;       /* 1: a fresh start may replace the run (logs, checkpoints) in run.dir */
    /* model */
    int model_kind;          /* ModelKind */
    int model_vocab;         /* V */
    int model_embed;         /* E */
    int model_hidden;        /* H */
    int model_layers;        /* L */
    double model_init_scale; /* weights ~ U(-s, s) */
    double model_dropout;    /* dropout on the non-recurrent connections (Zaremba et al. 2014) */
    int model_tie_embeddings; /* 1: the head's weight is the embedding matrix (Press and Wolf 2017) */
    int model_softmax;       /* SoftmaxKind: full, or adaptive (Grave et al. 2017) */
    char model_softmax_cutoffs[64]; /* adaptive: ascending word ids "c0,c1,..." starting the tail clusters */
    int model_softmax_div;   /* adaptive: tail cluster k projects H to H / div^(k+1) (at least 1) */
    /* data */
    int data_source;         /* DataSource */
    int data_seq_len;        /* T, unroll length of truncated BPTT */
    int data_batch_per_worker; /* B */
    int data_micro_batch;    /* sync.reproducible: streams per micro-batch (divides B); 0: B */
    int data_markov_order;   /* context length of the synthetic chain */
    int data_markov_branch;  /* successors per context */
    int data_valid_batches;  /* held-out global batches evaluated at each epoch end */
    char data_path[CFG_STR_MAX]; /* text: a file, or a directory with train/valid/test files */
    int data_tokenizer;      /* Tokenizer */
    int data_min_count;      /* words: rarer words become <unk> */
    double data_valid_fraction; /* text from one file: the tail fraction held out */
    /* train */
    int train_epochs;
    int train_steps_per_epoch; /* with train_steps_auto: 100 until the coordinator resolves it */
    int train_steps_auto;      /* steps_per_epoch: auto (text: one pass over the train split), not yet resolved */
    int train_optimizer;     /* OptKind */
    double train_lr;
    double train_momentum;
    double train_beta1;
    double train_beta2;
    double train_eps;
    double train_lr_decay;   /* lr multiplier per epoch, from epoch lr_decay_start on */
    double train_weight_decay; /* adamw: decoupled weight decay */
    int train_accumulate;    /* micro-batches per optimizer step (clip once on their sum) */
    int train_embedding_update; /* EmbUpdate: lazy: only the embedding rows synced this step (sync.sparse_embedding) */
    int train_lr_decay_start;/* first epoch (1-based) whose lr is decayed */
    int train_lr_schedule;   /* LrSchedule */
    int train_warmup_steps;  /* cosine: linear warm-up steps */
    double train_lr_min;     /* cosine: final lr */
    int train_plateau_patience; /* plateau: epochs without a better val loss before decaying */
    int train_early_stop;    /* stop after this many epochs without a better val loss; 0 off */
    /* clip */
    int clip_mode;           /* ClipMode */
    double clip_max_norm;
    double clip_clip_value;
    /* divergence */
    int divergence_action;   /* Action (not INHERIT) for kinds set to inherit */
    /* divergence_KEY_action: Action of each key of common/events.h's table */
#define EVCFG(key, def, doc) int divergence_##key##_action;
#define EVCFG_SHARED(key)
#define EVCFG_NONE
    EVENT_KINDS(EVENT_CONFIG)
#undef EVCFG
#undef EVCFG_SHARED
#undef EVCFG_NONE
    int divergence_window, divergence_warmup;
    double divergence_loss_zscore, divergence_loss_rel, divergence_norm_zscore,
        divergence_norm_rel, divergence_clip_saturation;
    int divergence_val_patience;
    double divergence_loss_uniform, divergence_loss_initial, divergence_norm_clip;
    int divergence_reset_steps;
    double divergence_reset_loss_rel, divergence_reset_norm_rel;
    int divergence_clip_events;  /* ClipEvents of common/events.h */
    double divergence_val_rel;
    double divergence_rollback_lr_factor;
    int divergence_rollback_skip_batches, divergence_max_rollbacks, divergence_drift_check_every;
    /* checkpoint */
    int checkpoint_every_steps; /* 0: only when stopping or asked by a signal */
    int checkpoint_keep;
    int checkpoint_keep_best; /* keep RUN_DIR/best.safetensors, the best val loss so far */
    char checkpoint_dir[CFG_STR_MAX]; /* empty: RUN_DIR/checkpoints */
    int checkpoint_on_failure;  /* CkptFailPolicy */
    /* log */
    int log_tensor_norms_every; /* steps between tensors.jsonl lines; 0 off */
    /* metrics */
    char metrics_listen[64];    /* HOST:PORT of the HTTP endpoint, or "off" */
    double metrics_stall_seconds; /* /healthz says 503 after this long without a step */
    /* watchdog: the coordinator's view of steps that do not arrive */
    double watchdog_seconds;      /* a step not complete after this long ends the job (exit 1); 0 off */
    double watchdog_warn_seconds; /* ...and after this long is a stall warning; 0: seconds / 4 */
    double watchdog_straggler_factor; /* a worker's compute time above this x the others' median... */
    int watchdog_straggler_window;    /* ...for this many steps in a row is a straggler event; 0 off */
    /* worker */
    int worker_threads;      /* BLAS threads per worker */
    int worker_packed_recurrent; /* 1 (auto): the time loops' products with wh packed where worker/rgemm.c
                              * has a kernel matching OpenBLAS's; 0 (off): OpenBLAS's */
    /* sync */
    int sync_mode;           /* SyncMode */
    int sync_reproducible;   /* ReproMode; 1: the same bits for any worker count (micro-batches,
                                ordered sums); never auto after cfg_resolve */
    int sync_bucket_kb;      /* gradient bucket size; 0: one collective after backward */
    int sync_shared_memory;  /* 1 (auto): all workers on one node sync through one shared buffer
                                (worker/sync.h sync_shared_grads); 0: MPI messages always */
    int sync_sparse_embedding; /* 1: the embedding gradient is synced as the rows of the batch's tokens */
    /* debug: test hooks that inject faults; each fires only before the first rollback */
    int64_t debug_nan_step;      /* a NaN in one worker's gradient at this step */
    int64_t debug_spike_step;    /* every worker's gradient times debug.spike_scale */
    double debug_spike_scale;
    int64_t debug_lr_spike_step; /* the update of this step uses lr * debug.lr_spike_scale */
    double debug_lr_spike_scale;
    int64_t debug_lr_spike_len;  /* steps the lr spike lasts; 0: to the end of the run */
    int64_t debug_lr_ramp_step;  /* from this step the lr is multiplied by debug.lr_ramp_rate per step */
    double debug_lr_ramp_rate;
    int64_t debug_noise_step;    /* the batch of this step is uniform random tokens (features) */
    char debug_nan_tensor[32];   /* debug.nan_step: the tensor that gets the NaN ("": the last) */
    int64_t debug_drift_step;    /* the last worker's weights drift from the others' after this step */
    int64_t debug_ckpt_crash_step; /* worker 0 kills itself (SIGKILL) writing this step's checkpoint */
    int debug_ckpt_crash_at;     /* CkptCrashAt: where in the write */
    double debug_slow_ms;        /* worker debug.slow_worker sleeps this long in every step's compute */
    int debug_slow_worker;
    int debug_stop_at_end;       /* 1: the last worker SIGSTOPs itself before MPI_Finalize */
} Config;

/* Fill every field with its documented default. */
void cfg_defaults(Config *c);
/* Load a YAML file over the current values (call cfg_defaults first).
 * Returns CFG_OK or CFG_ERR with `path:line:col: key: message` in err. */
int cfg_load_file(Config *c, const char *path, char *err, size_t errlen);
/* cfg_load_file for a config.yaml another clipd version may have written
 * (clipd-report reading a run directory): sections and keys this version does
 * not know are skipped, not errors; *nskipped counts them and skipped names the
 * first as `path:line:col: section.key`. Missing keys keep their values (the
 * defaults); any other error as cfg_load_file. */
int cfg_load_file_lenient(Config *c, const char *path, int *nskipped, char *skipped, size_t skippedlen,
                          char *err, size_t errlen);
/* Same, from a string in memory; `name` stands in for the path in errors. */
int cfg_load_string(Config *c, const char *yaml, size_t len, const char *name, char *err, size_t errlen);
/* Apply one `section.key=value` override with the same validation.
 * Errors read `--set ARG: section.key: message`. */
int cfg_set_arg(Config *c, const char *arg, char *err, size_t errlen);
/* Cross-field checks after all overrides; errors name the fields. */
int cfg_validate(const Config *c, char *err, size_t errlen);
/* Settles the keys whose value is auto (after loading, before cfg_validate):
 * sync.reproducible auto is true unless worker.threads > 1, sync.mode
 * sharded or sync.sparse_embedding (each of which it would slow, see
 * README). Writes one line saying what was chosen and why into note (empty
 * when nothing was auto). */
void cfg_resolve(Config *c, char *note, size_t notelen);
/* metrics.listen, the one parser of it: "off" returns 1; IPv4:PORT (a dotted
 * quad as inet_pton takes it, then 1 to 5 decimal digits <= 65535: no sign,
 * blank or other base) returns 0 with the host as written, the address in
 * network byte order and the port (any pointer may be NULL); anything else -1. */
#define CFG_HOST_LEN 16 /* a dotted quad and its NUL */
int cfg_parse_listen(const char *s, char host[CFG_HOST_LEN], uint32_t *ip_be, int *port);
/* Print the effective config as YAML (loadable again by cfg_load_file). */
void cfg_print(const Config *c, FILE *f);
/* FNV-1a 64 of the printed effective config: identifies a run's settings. */
uint64_t cfg_hash(const Config *c);
/* Names for enum values, for logs. */
const char *cfg_model_name(int kind);
const char *cfg_source_name(int src);
const char *cfg_opt_name(int opt);
const char *cfg_clip_name(int mode);
const char *cfg_action_name(int act);
const char *cfg_schedule_name(int s);
/* Number of parameters of the model the config describes. */
uint64_t cfg_param_count(const Config *c);
/* 1 when the head shares the embedding matrix (model.tie_embeddings, token models). */
int cfg_tied(const Config *c);
/* Streams per sync.reproducible micro-batch: data.micro_batch, or all of
 * data.batch_per_worker when it is 0. */
int cfg_micro_batch(const Config *c);
/* model.softmax adaptive (token models): the head covers the shortlist
 * [0, cut[0]) and one entry per tail cluster; cluster k holds the words
 * [cut[k], cut[k+1]) (cut[K] = model.vocab) behind a projection of width
 * dim[k]. Returns K >= 1, 0 for the full softmax (or the adding problem),
 * -1 when model.softmax_cutoffs is malformed or out of range. Either array
 * may be NULL. */
int cfg_adaptive(const Config *c, int cut[CFG_MAX_CLUSTERS + 1], int dim[CFG_MAX_CLUSTERS]);
/* The action of one divergence event kind (EV_* of common/events.h): its
 * key's, inherit resolved to divergence.action, at least the kind's minimum. */
int cfg_event_action(const Config *c, int kind);
/* The model's layout, computed only here: its tensors in the order of the
 * flat parameter buffer (head.weight unless tied, head.bias, with the
 * adaptive softmax tail.k.proj (H, d_k), .weight (d_k, n_k), .bias (n_k) for
 * each cluster k, layers.L-1 down
 * to layers.0 each wx (Ein, G*H), wh (H, G*H), bias (G*H), then
 * embed.weight (V, E) for token models), with their shapes and offsets.
 * worker/model.c lays its views out from it; the coordinator names tensors
 * by it. */
#define CFG_MAX_LAYERS 16                         /* model.layers' bound */
#define CFG_MAX_TENSORS (3 + 3 * CFG_MAX_LAYERS)  /* 51 */
typedef struct {
    char name[32];
    int ndim;        /* 1 or 2 */
    long shape[2];   /* shape[1] == 1 when ndim == 1 */
    uint64_t off, n; /* in floats: offset into the flat buffer, size */
} CfgTensor;
typedef struct {
    CfgTensor t[CFG_MAX_TENSORS];
    int n;            /* tensors */
    int gates;        /* G: 1 rnn, 3 gru (r, z, n), 4 lstm (i, f, g, o) */
    uint64_t nparams; /* floats in the flat buffer */
} CfgLayout;
void cfg_layout(const Config *c, CfgLayout *lo);
/* Gates per unit of a recurrent layer of this model.kind (MODEL_*). */
int cfg_gates(int kind);
/* Names of cfg_layout's tensors, in order. Returns the count; fills at most max. */
int cfg_tensor_names(const Config *c, char names[][32], int max);
/* Shape of tensor i of cfg_layout: returns ndim (1 or 2) with
 * shape[0] (and shape[1], 1 for 1-D), or 0 past the last tensor. */
int cfg_tensor_shape(const Config *c, int i, long shape[2]);
/* The recurrent weights (H, G*H) are packed for worker/rgemm.c's products
 * when they have at least CFG_PACK_MIN floats (below that OpenBLAS's own
 * packing costs little), in panels of up to CFG_PACK_NR columns (the
 * AVX-512 kernel's; the AVX2 one's are 24). */
#define CFG_PACK_MIN 65536
#define CFG_PACK_NR 48
/* Floats of a buffer that holds wh (H, GH) packed either way, for forward
 * (K = H rows of GH) or backward (wh^T: GH rows of H), each row padded to
 * CFG_PACK_NR; a B (K, N) for rgemm_pack fits in cfg_pack_wh_floats(K, N). */
uint64_t cfg_pack_wh_floats(uint64_t H, uint64_t GH);
/* The model's: cfg_pack_wh_floats of its wh, 0 when it is not packed (too
 * small, or worker.packed_recurrent off). */
uint64_t cfg_pack_floats(const Config *c);
/* Floats of the model's buffers for B streams: parameters, gradients and
 * activations, what worker/model.c's model_init allocates (Model.nfloats;
 * tests/test_model.c checks they agree), with the packed weights'
 * buffer (cfg_pack_floats) counted whether or not this machine packs. */
uint64_t cfg_model_floats(const Config *c, int B);
/* Bytes one of W workers needs at least: the model's buffers, optimizer
 * moments (its shard when sharded), the gradient shard, the rollback copy
 * when any action is rollback, worker 0's gather of the carried state (and,
 * sharded, of the optimizer moments, for checkpoints); with
 * sync.reproducible true and B / data.micro_batch = n > 1, the n gradient
 * slots, their pieces and the micro-batch model. */
uint64_t cfg_worker_bytes(const Config *c, int W);
/* Checkpoint directory: checkpoint.dir, or RUN_DIR/checkpoints. */
void cfg_checkpoint_dir(const Config *c, char *out, size_t len);

#endif
