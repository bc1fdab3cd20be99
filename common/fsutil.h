/* fsutil: small file-system helpers shared by the coordinator and workers:
 * mkdir -p, a writability probe, and fsync of a directory. */
#ifndef CLIPD_FSUTIL_H
#define CLIPD_FSUTIL_H

#include <stddef.h>

/* Create dir and its parents. Errors: `run.dir: cannot create 'PATH': why`. */
int fs_mkdir_p(const char *dir, char *err, size_t errlen);
/* Create and remove a file in dir, to fail early rather than at the end. */
int fs_probe_writable(const char *dir, char *err, size_t errlen);
/* fsync the directory holding path (after a rename into it). */
int fs_fsync_parent(const char *path);

#endif
