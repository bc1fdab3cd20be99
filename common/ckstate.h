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

/* Counters and schedule state of __metadata__, as a resumed run takes them. */
typedef struct {
    int64_t step, seq, epoch_seq0, opt_t, nonfinite;
    int epoch, epoch_step, epoch_done, rollbacks, world_size, batch_per_worker;
    double lr_scale;
    double sched[4]; /* SchedState: best_val, plateau_scale, bad_epochs, since_best */
} CkState;

/* W: this job's workers (its global batch is W x data.batch_per_worker); 0
 * when not known (clipd --check): any W whose global batch equals the
 * checkpoint's. stream_len: text, tokens per stream of the train split (L of
 * common/text.h), 0 when not known. Returns 0 with *s filled, or -1 with one
 * line "PATH: KEY or TENSOR: what, the bound". */
int ckstate_check(const Ckpt *k, const Config *c, int W, uint64_t stream_len, CkState *s,
                  char *err, size_t errlen);

#endif
