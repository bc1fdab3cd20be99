/* events: the divergence event kinds, one table. Each row of EVENT_KINDS is
 * everything the code knows of a kind: its EV_ id, its name in events.jsonl
 * and on /metrics, when it is checked (every step, or at an epoch's end), the
 * mildest action it may take, whether its line lists the tensors' norms, the
 * level its log line has, and its divergence.*.action config key. Adding a
 * kind is one row here (and its test in worker/detect.c). Also here: the
 * actions, the names of the checks that fire, and ClipEvents: what both roles
 * use; the detector itself is worker/detect.h. */
#ifndef CLIPD_EVENTS_H
#define CLIPD_EVENTS_H

/* Divergence actions, mildest first; INHERIT: take divergence.action. */
typedef enum { ACT_INHERIT = 0, ACT_LOG = 1, ACT_SKIP = 2, ACT_ROLLBACK = 3, ACT_ABORT = 4 } Action;

/* When a kind is checked: in the step (StepRecord.events) or at an epoch's
 * end (EpochRecord.events; no update to skip or roll back: log or abort). */
typedef enum { EVS_STEP = 0, EVS_EPOCH = 1 } EventScope;

/* X(ID, name, scope, min_action, tensor_norms, log_level, config)
 * config is one of
 *   EVCFG(key, default, doc)  the kind's own key divergence.KEY.action
 *                             (Config.divergence_KEY_action), its default
 *   EVCFG_SHARED(key)         the key of a kind above
 *   EVCFG_NONE                no key: always logged
 * min_action: the action is at least this whatever the config says.
 * log_level: LOG_* of common/log.h. */
#define EVENT_KINDS(X) \
    X(NONFINITE_LOSS, "nonfinite_loss", EVS_STEP, ACT_SKIP, 0, LOG_WARN, \
      EVCFG(nonfinite, "skip", "nonfinite_loss/grad (at least skip)")) \
    X(NONFINITE_GRAD, "nonfinite_grad", EVS_STEP, ACT_SKIP, 1, LOG_WARN, EVCFG_SHARED(nonfinite)) \
    X(LOSS_SPIKE, "loss_spike", EVS_STEP, ACT_LOG, 1, LOG_WARN, \
      EVCFG(loss_spike, "inherit", "loss_spike action")) \
    X(GRAD_NORM_SPIKE, "grad_norm_spike", EVS_STEP, ACT_LOG, 1, LOG_WARN, \
      EVCFG(grad_norm_spike, "inherit", "grad_norm_spike action")) \
    X(CLIP_SATURATION, "clip_saturation", EVS_STEP, ACT_LOG, 0, LOG_WARN, \
      EVCFG(clip_saturation, "log", "clip_saturation action")) \
    X(CLIP_INACTIVE, "clip_inactive", EVS_EPOCH, ACT_LOG, 0, LOG_INFO, EVCFG_NONE) \
    X(REPLICA_DRIFT, "replica_drift", EVS_STEP, ACT_LOG, 0, LOG_WARN, \
      EVCFG(replica_drift, "abort", "replica_drift action")) \
    X(VAL_LOSS_RISE, "val_loss_rise", EVS_EPOCH, ACT_LOG, 0, LOG_WARN, \
      EVCFG(val_loss_rise, "log", "val_loss_rise action"))

/* The config column alone: define EVCFG, EVCFG_SHARED and EVCFG_NONE, then
 * expand EVENT_KINDS(EVENT_CONFIG). */
#define EVENT_CONFIG(id, name, scope, min_action, tensor_norms, log_level, config) config

#define EVENT_ID(id, name, scope, min_action, tensor_norms, log_level, config) EV_##id,
typedef enum { EVENT_KINDS(EVENT_ID) EV_COUNT } EventKind;
#undef EVENT_ID

typedef struct {
    const char *name;
    int scope;          /* EventScope */
    int min_action;     /* Action */
    int tensor_norms;   /* 1: the event's line lists the step's tensor norms, largest first */
    int log_level;      /* LOG_* */
} EventKindInfo;

extern const EventKindInfo event_kinds[EV_COUNT];

/* Which test of a kind fired (EventInfo.check, the event's "check" field). */
typedef enum {
    CHK_NONE = 0,
    CHK_NONFINITE,   /* the value is NaN or Inf */
    CHK_UNIFORM,     /* loss > loss_uniform x ln(vocab): far worse than a uniform guess */
    CHK_INITIAL,     /* loss > loss_initial x the run's first finite loss */
    CHK_RECENT,      /* loss or log norm above its robust recent baseline */
    CHK_CLIP_LIMIT,  /* pre-clip norm > norm_clip x clip.max_norm */
    CHK_WINDOW,      /* clip rate over the last `window` steps */
    CHK_EPOCH,       /* over the epoch just ended */
    CHK_CHECKSUM,    /* replicas' checksums */
    CHK_RISE,        /* validation loss rose val_patience epochs in a row */
    CHK_COUNT
} DetectCheck;

/* clip_inactive and clip_saturation events: on a change of state only, every time, never. */
typedef enum { CLIPEV_CHANGE = 0, CLIPEV_ALWAYS = 1, CLIPEV_OFF = 2 } ClipEvents;

/* The kind's name ("nonfinite_loss", ...); NULL for an out-of-range kind. */
const char *event_kind_name(int kind);
int event_kind_from_name(const char *name); /* -1 if unknown (or NULL) */
/* "nonfinite", "uniform", "initial", "recent", "clip_limit", "window", "epoch", "checksum",
 * "rise"; NULL for CHK_NONE or out of range. */
const char *event_check_name(int check);
/* Bits (1u << kind) of the kinds of one scope. */
unsigned event_mask(int scope);

#endif
