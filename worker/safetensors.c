/* safetensors: st_write as F32 tensors through the one writer in
 * common/ckpt.c (see safetensors.h). */
#include "worker/safetensors.h"

#include "common/ckpt.h"

#include <stdio.h>
#include <stdlib.h>

int st_write(const char *path, const StTensor *t, int nt, const StMeta *meta, int nmeta,
             char *err, size_t errlen)
{
    if (nt < 0 || nt > CK_MAX_TENSORS || nmeta < 0 || nmeta > CK_MAX_TENSORS || (nt && !t) ||
        (nmeta && !meta)) {
        snprintf(err, errlen, "%s: %d tensors, %d metadata entries", path, nt, nmeta);
        return -1;
    }
    CkTensor *ct = malloc((size_t)(nt ? nt : 1) * sizeof *ct);
    CkMeta *cm = malloc((size_t)(nmeta ? nmeta : 1) * sizeof *cm);
    int rc = -1;
    if (!ct || !cm) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    for (int i = 0; i < nt; i++)
        ct[i] = (CkTensor){t[i].name, CK_F32, t[i].data, t[i].ndim, {t[i].shape[0], t[i].shape[1]}};
    for (int i = 0; i < nmeta; i++) cm[i] = (CkMeta){meta[i].key, meta[i].value};
    rc = ckpt_write_file(path, ct, nt, cm, nmeta, err, errlen);
out:
    free(ct);
    free(cm);
    return rc;
}
