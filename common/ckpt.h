/* ckpt: the checkpoint file format: the safetensors layout (8-byte
 * little-endian header length N, N bytes of JSON header padded with spaces,
 * raw little-endian tensor bytes), written atomically, verified by checksums
 * on load. docs/CHECKPOINTS.md describes the file for users; this is the one
 * safetensors writer. Which files a run keeps and resumes from is ckdir's
 * (common/ckdir.h), above this. */
#ifndef CLIPD_CKPT_H
#define CLIPD_CKPT_H

#include <stddef.h>
#include <stdint.h>

enum { CK_F32 = 0, CK_U64 = 1, CK_I32 = 2 };

#define CK_NAME_MAX 96                        /* tensor names are shorter than this */
#define CK_MAX_TENSORS 100000                 /* tensors in one file */
#define CK_MAX_HEADER (100ull << 20)          /* bytes of JSON header */
#define CK_MAX_FILE (64ull << 30)             /* bytes in one file */
#define CK_FORMAT "clipd-ckpt-1"              /* __metadata__.format of a checkpoint (ckdir_write) */

typedef struct {
    const char *name;
    int dtype;        /* CK_F32, CK_U64 or CK_I32 */
    const void *data; /* shape[0] * shape[1] elements, little-endian */
    int ndim;         /* 1 or 2 */
    long shape[2];
} CkTensor;

typedef struct {
    const char *key, *value; /* any UTF-8; escaped when written */
} CkMeta;

/* Write any safetensors file atomically (a temporary beside it, named by
 * fs_tmp_path: `.NAME.tmp.clipd-RUN.PID`; one left behind means its writer
 * died before renaming it into place). Tensors are stored in the order given, contiguously. Adds metadata
 * "checksum" = FNV-1a 64 of all tensor bytes and "header_checksum" = FNV-1a
 * 64 of the padded header with its own 16 digits read as '0' (both 16
 * lowercase hex digits), so a bit flip anywhere is found by ckpt_read. */
int ckpt_write_file(const char *path, const CkTensor *t, int nt, const CkMeta *meta, int nmeta,
                    char *err, size_t errlen);

typedef struct {
    char name[CK_NAME_MAX];
    int dtype, ndim;
    long shape[2];      /* shape[1] == 1 when ndim == 1 */
    size_t off, nbytes; /* off is relative to the tensor data, i.e. 8 + N into the file */
} CkEntry;

typedef struct {
    unsigned char *buf; /* the whole file */
    size_t len;
    size_t data_off; /* 8 + N */
    CkEntry *e;      /* in file order */
    int n;
    void *hdr;  /* the parsed header (json_t), owns the metadata strings */
    char *path; /* for messages */
} Ckpt;

/* Read and verify a checkpoint (or any file written by ckpt_write_file):
 * layout, header, every tensor entry, and both checksums. Any failure: -1
 * with one line naming the file and what is wrong; c is then empty (ckpt_free
 * is harmless). On success the caller calls ckpt_free. */
int ckpt_read(Ckpt *c, const char *path, char *err, size_t errlen);
const CkEntry *ckpt_find(const Ckpt *c, const char *name);
/* Points into the file buffer: aligned only as the offsets happen to be
 * (a U64 tensor after an odd-length F32 one is not), so read it with memcpy
 * or use ckpt_get. */
const void *ckpt_data(const Ckpt *c, const CkEntry *e);
/* Copy tensor `name` into dst, checking that it exists, has this dtype and
 * exactly `count` elements. Returns 0, or -1 with "PATH: tensor 'x': ...". */
int ckpt_get(const Ckpt *c, const char *name, int dtype, void *dst, size_t count, char *err,
             size_t errlen);
const char *ckpt_meta(const Ckpt *c, const char *key); /* NULL if absent */
/* An integer in __metadata__; -1 with "PATH: __metadata__.KEY: ..." if absent or malformed. */
int ckpt_meta_i64(const Ckpt *c, const char *key, int64_t *out, char *err, size_t errlen);
void ckpt_free(Ckpt *c);

/* Test hook: the next write kills its own process with SIGKILL at this point
 * (CK_CRASH_NONE: never). Set by a worker for debug.ckpt_crash_step. */
enum { CK_CRASH_NONE = 0, CK_CRASH_DURING_WRITE, CK_CRASH_BEFORE_RENAME, CK_CRASH_AFTER_RENAME };
void ckpt_test_crash(int point);

const char *ckpt_dtype_name(int dtype); /* "F32", "U64", "I32", or NULL */

#endif
