/* fuzz_text: text_prepare (UTF-8 checks, word vocabulary, token files,
 * layout checks) and text_open on untrusted text. Input: one flag byte, one
 * size byte, then the text.
 *   flags bit 0: words (else bytes)
 *   flags bit 1: data.path is a directory; the text splits at its first NUL
 *                into train.txt and valid.txt
 *   flags bit 2: (words) a RUN_DIR/vocab.txt to reuse: the part after the
 *                last NUL of the text
 *   flags bit 3: data.valid_batches = 0 (an empty valid split is allowed)
 *   size byte: seq_len, batch, min_count, workers and vocab in a few bits each.
 * A fresh /tmp directory per input, removed before returning. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfg.h"
#include "common/text.h"
#include "tests/fuzz/fuzz_util.h"

static volatile unsigned sink; /* keeps the token reads */

static void touch_split(const Config *c, int split)
{
    TokenSeq s;
    char err[1024];
    if (text_open(&s, c, split, err, sizeof err) != 0) return;
    unsigned sum = 0;
    for (size_t i = 0; i < s.n; i++) {
        int t = text_token(&s, i);
        if (t < 0 || t >= c->model_vocab) abort(); /* a token id the model cannot embed */
        sum += (unsigned)t;
    }
    sink = sum;
    text_close(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    unsigned flags = data[0], sz = data[1];
    const uint8_t *txt = data + 2;
    size_t n = size - 2;
    char dir[64], run[96], src[96], err[1024];
    fz_mkdtemp(dir, sizeof dir);
    snprintf(run, sizeof run, "%s/run", dir);
    Config c;
    cfg_defaults(&c);
    c.data_source = DATA_TEXT;
    c.data_tokenizer = flags & 1 ? TOK_WORDS : TOK_BYTES;
    c.data_seq_len = 1 + (sz & 3);
    c.data_batch_per_worker = 1 + (sz >> 2 & 1);
    c.data_min_count = 1 + (sz >> 3 & 1);
    c.model_vocab = c.data_tokenizer == TOK_BYTES ? 256 : 2 + (int)(sz >> 4 & 7) * 4;
    c.train_steps_per_epoch = 1;
    c.data_valid_batches = flags & 8 ? 0 : 1;
    c.data_valid_fraction = 0.25;
    int W = 1 + (sz >> 7);
    snprintf(c.run_dir, sizeof c.run_dir, "%s", run);
    const uint8_t *nul = memchr(txt, 0, n);
    size_t tlen = n;
    if ((flags & 4) && c.data_tokenizer == TOK_WORDS) {
        const uint8_t *last = NULL;
        for (size_t i = n; i-- > 0;)
            if (!txt[i]) {
                last = txt + i;
                break;
            }
        if (last) {
            if (mkdir(run, 0700)) goto out;
            if (fz_write(run, "vocab.txt", last + 1, n - (size_t)(last - txt) - 1)) goto out;
            tlen = (size_t)(last - txt);
            nul = memchr(txt, 0, tlen);
        }
    }
    if (flags & 2) {
        snprintf(src, sizeof src, "%s/data", dir);
        if (mkdir(src, 0700)) goto out;
        size_t a = nul ? (size_t)(nul - txt) : tlen;
        if (fz_write(src, "train.txt", txt, a)) goto out;
        if (fz_write(src, "valid.txt", txt + (nul ? a + 1 : a), nul ? tlen - a - 1 : 0)) goto out;
    } else {
        snprintf(src, sizeof src, "%s/input.txt", dir);
        if (fz_write(dir, "input.txt", txt, tlen)) goto out;
    }
    snprintf(c.data_path, sizeof c.data_path, "%s", src);
    if (text_prepare(&c, W, err, sizeof err) == 0) {
        touch_split(&c, TEXT_TRAIN);
        touch_split(&c, TEXT_VALID);
        /* A second prepare reuses vocab.txt and must agree with itself. */
        if (text_prepare(&c, W, err, sizeof err) != 0) {
            fprintf(stderr, "second text_prepare failed: %s\n", err);
            abort();
        }
    }
out:
    fz_rm_rf(dir);
    return 0;
}
