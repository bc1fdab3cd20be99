/* safetensors: the float32 weights writer the worker uses for
 * final.safetensors and best.safetensors. A thin wrapper over ckpt_write_file
 * (common/ckpt.c), which owns the layout: 8-byte little-endian header length,
 * JSON header, raw little-endian tensors, written atomically and with
 * checksums, so NumPy or PyTorch users read the weights without clipd. */
#ifndef CLIPD_SAFETENSORS_H
#define CLIPD_SAFETENSORS_H

#include <stddef.h>

typedef struct {
    const char *name;
    const float *data;
    int ndim;
    long shape[2];
} StTensor;

typedef struct {
    const char *key, *value; /* string metadata for __metadata__ */
} StMeta;

/* Returns 0, or -1 with the reason in err. The tensors are written in the
 * order given, contiguously, as F32; "checksum" and "header_checksum" are
 * added to the metadata (see ckpt.h). */
int st_write(const char *path, const StTensor *t, int nt, const StMeta *meta, int nmeta,
             char *err, size_t errlen);
#endif
