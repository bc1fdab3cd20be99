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
 * every divergence.drift_check_every steps, and at the end): four lanes of
 * 8-byte words, each x = (x ^ w) * K (one to one in x and in w), then
 * FNV-1a over the lanes, the length and the tail: any change confined to
 * one 8-byte word changes it, as FNV's would, at memory speed rather than
 * a byte a cycle. Continues from h like fnv1a64, but is not FNV's value and
 * not stored anywhere: only compared between workers of one run. */
unsigned long long hash_words(const void *p, size_t n, unsigned long long h);

#endif
