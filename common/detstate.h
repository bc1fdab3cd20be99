/* detstate: the detector's history as a checkpoint holds it (tensor
 * detect.state, doubles stored as U64 bits): its length for a window and
 * its invariants. Both roles use it: worker/detect.c saves and loads it,
 * the coordinator checks a checkpoint's before a resume (common/ckstate.c).
 *   [0] magic [1] window [2..13] n, pos, seen of the rings loss, loss diffs, log norm,
 *   log norm diffs [14] loss prev [15] log norm prev [16] first loss [17] steps since
 *   reset [18..21] clip n, pos, count, sat_cooldown [22] saturated [23] inactive [24..27]
 *   epoch steps, clipped, total steps, clipped [28] val_prev [29] val_base [30] val_run
 *   [31] 0, then the four rings (window each) in that order and the clip flags (window). */
#ifndef CLIPD_DETSTATE_H
#define CLIPD_DETSTATE_H

#include <stddef.h>

#define DETSTATE_MAGIC 1145394226.0 /* "DET2" as an integer */
#define DETSTATE_HEADER 32          /* doubles before the five rings */

/* Doubles of the state of a detector of this window. */
size_t detstate_len(int window);
/* 1 when in (len doubles) is a consistent state of a detector of this window. */
int detstate_ok(const double *in, size_t len, int window);

#endif
