/* mkseeds OUTDIR: write small, valid checkpoint seeds for fuzz_ckpt with the
 * real writer (a checkpoint with F32/U64 tensors and metadata, and a
 * final-weights file), so no binary file needs to be committed. */
#include <stdint.h>
#include <stdio.h>

#include "common/ckpt.h"
#include "common/safetensors.h"

int main(int argc, char **argv)
{
    if (argc != 2) return fprintf(stderr, "usage: mkseeds OUTDIR\n"), 2;
    float w[12] = {0.5f, -1.0f, 2.0f, 0.25f, 3.0f, -0.125f, 1.5f, 0, 7, -7, 1e-3f, 42};
    uint64_t s[6] = {1, 2, 3, 4, 5, 6};
    CkTensor t[] = {{"param.head.weight", CK_F32, w, 2, {3, 4}},
                    {"data.streams", CK_U64, s, 2, {1, 6}}};
    CkMeta m[] = {{"step", "20"}, {"seq", "20"}, {"epoch", "2"}, {"world_size", "1"}};
    char err[512];
    if (ckpt_write(argv[1], 20, t, 2, m, 4, 3, NULL, 0, err, sizeof err) != 0)
        return fprintf(stderr, "mkseeds: %s\n", err), 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/final.safetensors", argv[1]);
    StTensor f[] = {{"param.head.weight", w, 2, {3, 4}}};
    StMeta fm[] = {{"format", "clipd-weights-1"}};
    if (st_write(path, f, 1, fm, 1, err, sizeof err) != 0)
        return fprintf(stderr, "mkseeds: %s\n", err), 1;
    return 0;
}
