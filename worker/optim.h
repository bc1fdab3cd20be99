/* optim: SGD (with optional momentum, PyTorch convention), Adam and AdamW over
 * flat ranges of parameters. Each update reads the raw averaged gradient
 * and applies the clip coefficient (and clamp, for clip-by-value) in the
 * same pass, so clipping adds no pass over memory. The moment buffers are
 * flat and parallel to the parameters. */
#ifndef CLIPD_OPTIM_H
#define CLIPD_OPTIM_H

#include <stddef.h>

typedef struct {
    int kind;            /* OptKind */
    double momentum, beta1, beta2, eps;
    double weight_decay;  /* SGD, Adam: coupled L2 (added to the clipped gradient);
                             AdamW: decoupled (Loshchilov and Hutter 2019) */
    long t;              /* updates applied so far */
    size_t n;            /* moments held: the whole buffer, or (sharded) one shard */
    size_t base;         /* flat index of m[0], v[0]: 0, or the shard's offset */
    float *m;            /* (n) momentum / Adam first moment */
    float *v;            /* (n) Adam second moment */
} Optim;

int optim_init(Optim *o, int kind, double momentum, double beta1, double beta2, double eps,
               size_t n);
void optim_free(Optim *o);
/* Start an update: advances t (Adam's bias correction). */
void optim_begin(Optim *o);
/* Update p[off, off+len) (inside [base, base+n)) from g with g' = clamp(g * coef, +-clip_value)
 * (clip_value <= 0: no clamp), at learning rate lr. */
void optim_update(Optim *o, float *p, const float *g, size_t off, size_t len, float coef,
                  float clip_value, double lr);

#endif
