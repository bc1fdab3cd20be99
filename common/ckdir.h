/* ckdir: the checkpoint policy, above the file format of common/ckpt.h:
 * names (DIR/step-%08lld.safetensors), keeping the newest K, deleting the
 * temporaries a crash left, and finding the newest valid checkpoint for
 * `--resume latest`. Both roles use it: worker 0 writes, the coordinator
 * resumes. */
#ifndef CLIPD_CKDIR_H
#define CLIPD_CKDIR_H

#include <stddef.h>

#include "common/ckpt.h"

/* Write DIR/step-%08lld.safetensors atomically with ckpt_write_file (temporary
 * file in DIR, write, fsync, rename, fsync of DIR), creating DIR if needed.
 * Adds the metadata "format" = CK_FORMAT (and ckpt_write_file "checksum" and
 * "header_checksum"); the caller may not pass those keys. Then deletes
 * step-*.safetensors files beyond the newest `keep` by step number (never
 * the one just written) and this run's temporary files of checkpoints left by a crash.
 * path_out (may be NULL) gets the final path. Returns 0, or -1 with err.
 * On success err is "" or, if an old file could not be deleted, a warning. */
int ckdir_write(const char *dir, long long step, const CkTensor *t, int nt, const CkMeta *meta,
                int nmeta, int keep, char *path_out, size_t path_len, char *err, size_t errlen);

/* Final names of checkpoints, as an fnmatch(3) pattern. Their temporaries
 * are named by fs_tmp_path: `.NAME.tmp.clipd-RUN.PID` beside NAME. */
#define CKDIR_STEP_GLOB "step-*.safetensors"

/* The newest valid checkpoint in dir by the step number in its name. Each
 * newer file that fails ckpt_read adds a line "skipping DIR/step-...: why"
 * to notes (which always ends up a string). Returns 0 with path, or -1
 * with err ("no valid checkpoint in DIR: ..." saying how many were invalid). */
int ckdir_latest(const char *dir, char *path, size_t path_len, char *notes, size_t notes_len,
                 char *err, size_t errlen);

/* DIR/step-%08lld.safetensors */
void ckdir_path(char *out, size_t len, const char *dir, long long step);

#endif
