/* hash: FNV-1a 64, the one byte hash of the tree (and hash_words, its fast
 * word-wise form for the replica checks): checkpoint checksums,
 * the config hash, weight hashes compared across workers, the vocabulary's
 * hash table. Not cryptographic: it finds accidents (bit flips, torn
 * writes, replicas drifting apart), not attacks. */
#ifndef CLIPD_HASH_H
#define CLIPD_HASH_H

#include <stddef.h>

#define FNV1A64_INIT 0xcbf29ce484222325ULL

/* FNV-1a 64 over n bytes at p, continuing from h (FNV1A64_INIT to start). */
unsigned long long fnv1a64(const void *p, size_t n, unsigned long long h);

/* The replicas' hash (weights and optimizer state compared across workers
 * every divergence.drift_check_every steps and at the end; also written as
 * a checkpoint's state_hash, which nothing checks): four lanes of 8-byte
 * words, each step x = rotl((x ^ w) * K, 31), one to one in x and in w, so
 * a change confined to one word always changes its lane; the lanes, the
 * length and the zero-padded tail are then folded word by word by the same
 * step. At memory speed rather than FNV's byte a cycle. Continues from h;
 * not FNV's value. */
unsigned long long hash_words(const void *p, size_t n, unsigned long long h);

#endif
