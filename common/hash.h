/* hash: FNV-1a 64, the one byte hash of the tree: checkpoint checksums,
 * the config hash, weight hashes compared across workers, the vocabulary's
 * hash table. Not cryptographic: it finds accidents (bit flips, torn
 * writes, replicas drifting apart), not attacks. */
#ifndef CLIPD_HASH_H
#define CLIPD_HASH_H

#include <stddef.h>

#define FNV1A64_INIT 0xcbf29ce484222325ULL

/* FNV-1a 64 over n bytes at p, continuing from h (FNV1A64_INIT to start). */
unsigned long long fnv1a64(const void *p, size_t n, unsigned long long h);

#endif
