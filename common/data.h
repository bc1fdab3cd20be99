/* data: the training data sources built into clipd, and the batch layout.
 * The global batch is W*B parallel streams; worker r owns streams
 * [r*B, (r+1)*B). Stream j of an epoch depends only on (epoch seed, j), so
 * what is learned does not depend on how streams are spread over workers.
 * Sources: `markov`, a seeded random Markov chain over V symbols whose
 * entropy rate is known (the floor of the loss), and `adding`, the adding
 * problem of Hochreiter and Schmidhuber 1997 as used by Pascanu et al. 2013,
 * and `text`, real text (common/text.h): stream j of a split is the slice
 * [j*L, j*L + L] of its tokens, moved by a seeded shift in epochs after the
 * first (batcher_shift). */
#ifndef CLIPD_DATA_H
#define CLIPD_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "common/cfg.h"
#include "common/rng.h"
#include "common/text.h"

/* Order-k chain: the next symbol depends on the last k symbols (a context
 * ctx in [0, V^k)); each context has `branch` distinct successors with
 * random probabilities. */
typedef struct {
    int V, order, branch;
    uint32_t nctx;       /* V^order */
    int32_t *succ;       /* (nctx, branch) successor symbols */
    double *cum;         /* (nctx, branch) cumulative probabilities */
    double *row_entropy; /* (nctx) entropy of each context's row, nats */
} Markov;

int markov_init(Markov *m, int V, int order, int branch, uint64_t seed);
void markov_free(Markov *m);
/* Expected loss floor, in nats per token, of a stream of n tokens started
 * from a uniformly random context: the mean over positions of the entropy
 * of the next symbol given the full past. */
double markov_entropy_rate(const Markov *m, long n);
/* Draw the successor of *ctx and advance *ctx. */
int markov_next(const Markov *m, uint32_t *ctx, Rng *r);

/* One worker's batches, one training step at a time. */
typedef struct {
    int source, T, B, first_stream;
    Markov chain;
    Rng *rng;           /* (B) one generator per owned stream */
    uint32_t *ctx;      /* (B) markov context of each stream */
    int *last;          /* (B) last emitted token: the next step's first input */
    int *inputs;        /* (T, B) markov input tokens, time-major */
    int *targets;       /* (T, B) markov next tokens */
    float *features;    /* (T, B, 2) adding: (value, marker) */
    float *ytarget;     /* (B) adding: sum of the two marked values */
    TokenSeq text;      /* text: the split's tokens, memory-mapped */
    uint64_t stream_len;/* text: L, tokens per stream of the W*B streams */
    uint64_t *pos;      /* (B) text: offset of the next input in each stream */
    uint64_t shift;     /* text: where stream 0 starts this epoch (batcher_shift), in [0, N) */
    char err[512];      /* why batcher_init or batcher_init_split failed */
} Batcher;

/* Streams [first_stream, first_stream + B) of markov or adding. Returns 0,
 * or -1 (no memory, or text: use batcher_init_split) with bt->err set. */
int batcher_init(Batcher *bt, const Config *c, int first_stream, int B);
/* Streams [first_stream, first_stream + B) of the W*B streams of a split
 * (TEXT_TRAIN or TEXT_VALID; markov and adding ignore W and split). For text,
 * text_prepare must have run. Returns 0, or -1 with bt->err set (no memory,
 * a data file that cannot be mapped, a split too short for seq_len). */
int batcher_init_split(Batcher *bt, const Config *c, int first_stream, int B, int W, int split);
void batcher_free(Batcher *bt);
/* Restart every stream for an epoch with its data seed (text: at offset 0). */
void batcher_epoch(Batcher *bt, uint64_t epoch_seed);
/* Text: shift every stream by an offset drawn from epoch_seed (0: none),
 * reading the split as a ring; markov and adding ignore it. Training calls it
 * each epoch after the first (and on a resume inside such an epoch). */
void batcher_shift(Batcher *bt, uint64_t epoch_seed);
/* Fill inputs/targets (or features/ytarget) for the next step. Text: advance
 * each stream by T; a stream with fewer than T inputs left (only after
 * skipped batches) starts over at its beginning. */
void batcher_next(Batcher *bt);
/* Seed of the chain's structure, fixed by the run seed. */
uint64_t data_chain_seed(const Config *c);
/* The data seed of a training epoch (1-based), sent with each epoch. */
uint64_t data_epoch_seed(const Config *c, int epoch);

#endif
