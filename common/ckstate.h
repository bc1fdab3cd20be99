/* ckstate: the training state a checkpoint holds, checked before any of it
 * is used. Every __metadata__ key and every tensor a resumed worker reads is
 * checked against the config and the job (names, dtypes, shapes, which
 * optimizer moments, the global batch, the detector's window, seq_len) and
 * against its own invariants (finite weights and carried state, Adam's second
 * moment >= 0, stream cursors inside the data, counters that fit). The
 * coordinator runs it before anything in the run changes; every worker runs
 * it again before unpacking (a defence: a file swapped in between). */
#ifndef CLIPD_CKSTATE_H
#define CLIPD_CKSTATE_H

#include <stddef.h>
#include <stdint.h>

#include "common/cfg.h"
#include "common/ckpt.h"

/* Counters and schedule state of __metadata__: what worker 0 writes and a
 * resumed run takes back, by name. Integers are kept as stored (int64) until
 * ckstate_check has checked their ranges. */
typedef struct {
    int64_t step, seq, epoch, epoch_step, epoch_seq0, world_size, batch_per_worker, opt_t;
    double lr_scale;
    int64_t rollbacks, nonfinite;
    uint64_t config_hash;
    double sched[4]; /* SchedState: best_val, plateau_scale, bad_epochs, since_best */
    uint64_t state_hash;
    int64_t epoch_done;
    const char *run;  /* run.name */
    int64_t seq_len;  /* data.seq_len; -1 read from checkpoints older than the key */
} CkState;

/* The __metadata__ keys of a CkState, one row each, in the order written:
 * X(key, type, flags). The key is the member's name.
 *   INT   a decimal integer (int64_t member)
 *   HEX   a double as %a (exact)
 *   HEX4  four doubles as %a,%a,%a,%a (double[4] member)
 *   HASH  a uint64 as %016llx (written; compared as text where it is used)
 *   STR   a string (const char *)
 * flags: CKM_NEED read back, and the checkpoint is refused without it;
 * CKM_OPT read back when present (older checkpoints lack it); 0 written only.
 * Adding a counter is one row here, its member above, and its bound in
 * ckstate.c's check_counters. */
enum { CKM_NEED = 1, CKM_OPT = 2 };
#define CKSTATE_META(X) \
    X(step, INT, CKM_NEED) \
    X(seq, INT, CKM_NEED) \
    X(epoch, INT, CKM_NEED) \
    X(epoch_step, INT, CKM_NEED) \
    X(epoch_seq0, INT, CKM_NEED) \
    X(world_size, INT, CKM_NEED) \
    X(batch_per_worker, INT, CKM_NEED) \
    X(opt_t, INT, CKM_NEED) \
    X(lr_scale, HEX, CKM_NEED) \
    X(rollbacks, INT, CKM_NEED) \
    X(nonfinite, INT, CKM_NEED) \
    X(config_hash, HASH, 0) \
    X(sched, HEX4, CKM_NEED) \
    X(state_hash, HASH, 0) \
    X(epoch_done, INT, CKM_NEED) \
    X(run, STR, 0) \
    X(seq_len, INT, CKM_OPT)

#define CKSTATE_COUNT_ROW(key, type, flags) +1
enum { CKSTATE_NMETA = 0 CKSTATE_META(CKSTATE_COUNT_ROW) };
#undef CKSTATE_COUNT_ROW

/* The formatted keys of one CkState, ready for ckpt_write. */
typedef struct {
    char v[CKSTATE_NMETA][128];
    CkMeta meta[CKSTATE_NMETA]; /* values point into v (or to s->run) */
} CkStateMeta;

/* s's keys, in the table's order, into out->meta; returns CKSTATE_NMETA. */
int ckstate_meta(const CkState *s, CkStateMeta *out);

/* W: this job's workers (its global batch is W x data.batch_per_worker); 0
 * when not known (clipd --check): any W whose global batch equals the
 * checkpoint's. stream_len: text, tokens per stream of the train split (L of
 * common/text.h), 0 when not known. Returns 0 with *s filled, or -1 with one
 * line "PATH: KEY or TENSOR: what, the bound". */
int ckstate_check(const Ckpt *k, const Config *c, int W, uint64_t stream_len, CkState *s,
                  char *err, size_t errlen);

#endif
