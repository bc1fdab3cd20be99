/* text: real text as training data (data.source: text). The coordinator runs
 * text_prepare once before any worker starts: it checks the files (readable,
 * UTF-8, no NUL, splits big enough for the layout) and, for words, builds or
 * reuses RUN_DIR/vocab.txt and writes the token ids of each split, so workers
 * only memory-map token sequences (text_open) and never tokenize. */
#ifndef CLIPD_TEXT_H
#define CLIPD_TEXT_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cfg.h"

enum { TEXT_TRAIN = 0, TEXT_VALID = 1, TEXT_TEST = 2 };

/* Where the text comes from. data.path is either
 *  - a file: its tokens are cut by data.valid_fraction, the last
 *    floor(N * valid_fraction) tokens are the valid split, the rest train;
 *  - a directory holding train.txt and valid.txt, and optionally test.txt
 *    (the test split: clipd --eval, and the end-of-run test evaluation).
 * bytes: one token per byte, id = byte value (model.vocab >= 256).
 * words: tokens are runs of bytes other than ASCII space, \t, \r, \v, \f and
 * \n; every \n is also the token "<eos>". Ids: 0 "<unk>", 1 "<eos>", then
 * the train split's words seen at least data.min_count times, by count
 * descending, ties by byte order; other words are <unk>. A literal "<unk>"
 * or "<eos>" in the text is that id. Files written to RUN_DIR:
 *   vocab.txt          one word per line in id order (reused if present)
 *   tokens-train.u32   (N_train) little-endian uint32 ids
 *   tokens-valid.u32   (N_valid) little-endian uint32 ids
 *   tokens-test.u32    (N_test) the same, when there is a test.txt
 *
 * Layout (stateful truncated BPTT): a split of N tokens is cut into S = W*B
 * streams of L = (N-1)/S tokens; stream j's inputs are tokens j*L + t and its
 * targets tokens j*L + t + 1, for t in [0, L). Worker r owns streams
 * [r*B, (r+1)*B). Training epochs after the first shift every stream by the
 * same seeded offset in [0, N), reading the split as a ring (the last token's
 * target is the first), so the tail a whole number of steps leaves out
 * differs from epoch to epoch; validation and test always start at 0. */

/* Check the data and write the words files. Returns 0, or -1 (CFG_ERR) with a
 * message naming the file (file:line:col, col counting characters, for the
 * first byte that is not UTF-8 text or is NUL) or the config fields at
 * fault. W is the number of workers. An empty valid split, or one too short
 * for data.valid_batches, is an error only when data.valid_batches > 0. */
int text_prepare(const Config *c, int W, char *err, size_t errlen);
/* The same checks, writing nothing (clipd --check). */
int text_check(const Config *c, int W, char *err, size_t errlen);

/* One split's tokens, memory-mapped read-only; pages are read on first touch,
 * so a worker reads only the pages of its own streams. */
typedef struct {
    const uint8_t *base; /* (n * width) the split's first token, inside the map */
    size_t n;            /* tokens in the split */
    int width;           /* bytes per token: 1 (bytes) or 4 (words, little-endian uint32) */
    void *map;           /* the whole mapping, NULL if n == 0 */
    size_t maplen;
} TokenSeq;

/* Tokens of a split (TEXT_TEST: 0 when there is no test.txt), counted from
 * data.path without writing anything (train.steps_per_epoch: auto). Returns
 * 0, or -1 with a message naming the file. */
int text_split_tokens(const Config *c, int split, size_t *n, char *err, size_t errlen);
/* Map a split (TEXT_TRAIN, TEXT_VALID or TEXT_TEST) as text_prepare left it. Returns 0,
 * or -1 with a message naming the file. */
int text_open(TokenSeq *s, const Config *c, int split, char *err, size_t errlen);
void text_close(TokenSeq *s);
/* The file mapped at addr by text_open, or NULL: a worker's SIGBUS handler
 * names the data file that shrank under the running job. Safe to call in a
 * signal handler. */
const char *text_map_path(const void *addr);

static inline int text_token(const TokenSeq *s, size_t i)
{
    assert(i < s->n);
    const uint8_t *p = s->base + i * (size_t)s->width;
    if (s->width == 1) return p[0];
    return (int)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

/* L: tokens per stream of a split of n tokens cut into `streams` streams. */
static inline uint64_t text_stream_len(size_t n, uint64_t streams)
{
    return n >= 1 && streams ? (uint64_t)(n - 1) / streams : 0;
}

#endif
