/* fsutil: small file-system helpers shared by the coordinator and workers:
 * mkdir -p, a writability probe, fsync of a directory, and removing the
 * temporary files a crash left behind. */
#ifndef CLIPD_FSUTIL_H
#define CLIPD_FSUTIL_H

#include <stddef.h>

/* Create dir and its parents. Errors name the config key that gave dir
 * (`run.dir`, `checkpoint.dir`): `KEY: cannot create 'PATH': why`. */
int fs_mkdir_p(const char *dir, const char *key, char *err, size_t errlen);
/* Without creating anything (clipd --check): dir is a directory this
 * process may write in, or does not exist and its nearest existing ancestor
 * is one. Errors: `KEY: 'PATH' is not a directory` or `KEY: cannot write in
 * 'PATH': why`. */
int fs_check_dir(const char *dir, const char *key, char *err, size_t errlen);
/* Create and remove a file in dir, to fail early rather than at the end.
 * Errors: `KEY: cannot write in 'PATH': why`. */
int fs_probe_writable(const char *dir, const char *key, char *err, size_t errlen);
/* Open an input file read-only without ever blocking on it: O_NONBLOCK (a
 * FIFO nobody writes to would wait forever), then fstat of the open file (no
 * race with a rename). Anything but a regular file (a FIFO, socket, device,
 * directory) is refused: -1 with *why "not a regular file" or "a directory,
 * expected a file" (errno EINVAL), or the open error. With allow_null the
 * null device (/dev/null, an empty input) is taken too. The descriptor is
 * blocking again and close-on-exec. */
int fs_open_regular(const char *path, int allow_null, const char **why);
/* fsync the directory holding path (after a rename into it). */
int fs_fsync_parent(const char *path);
/* Temporary files of atomic writes carry the run's identity: for DIR/NAME,
 * DIR/.NAME.tmp.clipd-RUN.PID, RUN being run.name (set once per process by
 * fs_set_run_tag before any write; "default" until then). Only names of that
 * form, with this run's tag, are ever deleted as stale. */
void fs_set_run_tag(const char *run_name);
/* The temporary path for path, as above. -1 if it does not fit in len. */
int fs_tmp_path(char *out, size_t len, const char *path);
/* 1 if name (no directory) is `.FINAL.tmp.clipd-RUN.DIGITS` with this
 * process's tag and FINAL matching one of the fnmatch(3) patterns in finals. */
int fs_is_own_tmp(const char *name, const char *const *finals, int nfinals);
/* Delete the regular files in dir that fs_is_own_tmp says are temporaries
 * of this run's writers that died before renaming them into place. Call it
 * only while nothing writes in dir. Each file adds a line "removed PATH"
 * (or "cannot remove PATH: why") to notes, which always ends up a string.
 * Returns the number removed (0 when dir does not exist or is not a
 * directory), or -1 with `cannot list DIR for stale temporary files: why`
 * in err when dir cannot be read. */
int fs_remove_stale(const char *dir, const char *const *finals, int nfinals, char *notes,
                    size_t notes_len, char *err, size_t errlen);

#endif
