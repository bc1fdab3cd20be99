/* rng: small, fast, seedable generators. splitmix64 derives independent
 * seeds from (seed, stream ids); xoshiro256** draws the numbers. The same
 * seed gives the same sequence on every rank and every run. */
#ifndef CLIPD_RNG_H
#define CLIPD_RNG_H

#include <stdint.h>

typedef struct { uint64_t s[4]; } Rng;

uint64_t rng_mix(uint64_t x);                 /* splitmix64 finaliser */
uint64_t rng_derive(uint64_t seed, uint64_t a, uint64_t b); /* seed for a sub-stream */
void rng_init(Rng *r, uint64_t seed);
uint64_t rng_next(Rng *r);
double rng_uniform(Rng *r);                   /* [0, 1) with 53 bits */
uint32_t rng_below(Rng *r, uint32_t n);       /* uniform in [0, n), unbiased */

#endif
