/* Unit tests of real text data (common/text.c) and the text batcher
 * (common/data.c): exact byte and word ids, vocabulary order and reuse, the
 * stream layout by hand-computed positions and its independence from the
 * worker split, splits by fraction and by directory, and every input error
 * with its message. Texts are generated in each test's mkdtemp directory. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/testutil.h"

#include "common/data.h"
#include "common/text.h"

typedef struct {
    TmpDir t;
    char run[96];  /* dir/run: run.dir */
    Config c;
} Fx;

static int setup(void **state)
{
    Fx *f = calloc(1, sizeof *f);
    if (!f) return -1;
    if (tmpdir_make(&f->t, "text") != 0) return free(f), -1;
    snprintf(f->run, sizeof f->run, "%s/run", f->t.dir);
    if (mkdir(f->run, 0755) != 0) return free(f), -1;
    Config *c = &f->c;
    cfg_defaults(c);
    c->data_source = DATA_TEXT;
    snprintf(c->run_dir, sizeof c->run_dir, "%s", f->run);
    c->model_vocab = 256;
    c->data_seq_len = 2;
    c->data_batch_per_worker = 1;
    c->train_steps_per_epoch = 1;
    c->data_valid_batches = 0;
    c->data_min_count = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fx *f = *state;
    tmpdir_remove(&f->t);
    free(f);
    return 0;
}

/* Write dir/name (n bytes of s) and return its path (f->t.path). */
static const char *put(Fx *f, const char *name, const char *s, size_t n)
{
    const char *path = tmpdir_write(&f->t, name, s, n);
    assert_non_null(path);
    return path;
}

static const char *puts0(Fx *f, const char *name, const char *s) { return put(f, name, s, strlen(s)); }

static void use_path(Fx *f, const char *name)
{
    snprintf(f->c.data_path, sizeof f->c.data_path, "%s/%s", f->t.dir, name);
}

static void prepare_ok(Fx *f, int W)
{
    char err[1024] = "";
    int rc = text_prepare(&f->c, W, err, sizeof err);
    if (rc != 0) printf("unexpected error: %s\n", err);
    assert_int_equal(rc, 0);
}

/* text_prepare fails with exit code 2 and every piece in its message. */
static void prepare_fails(Fx *f, int W, ...)
{
    char err[1024] = "";
    assert_int_equal(text_prepare(&f->c, W, err, sizeof err), CFG_ERR);
    printf("  error: %s\n", err);
    va_list ap;
    va_start(ap, W);
    for (const char *piece; (piece = va_arg(ap, const char *));) {
        if (!strstr(err, piece)) printf("  missing: '%s'\n", piece);
        assert_non_null(strstr(err, piece));
    }
    va_end(ap);
}

/* The split's ids as the batcher sees them. */
static size_t split_ids(Fx *f, int split, int *ids, size_t max)
{
    TokenSeq s;
    char err[512];
    int rc = text_open(&s, &f->c, split, err, sizeof err);
    if (rc) printf("text_open: %s\n", err);
    assert_int_equal(rc, 0);
    assert_true(s.n <= max);
    for (size_t i = 0; i < s.n; i++) ids[i] = text_token(&s, i);
    size_t n = s.n;
    text_close(&s);
    return n;
}

static void expect_ids(Fx *f, int split, const int *want, size_t n)
{
    int got[4096];
    size_t m = split_ids(f, split, got, 4096);
    printf("  %s split: %zu ids:", split ? "valid" : "train", m);
    for (size_t i = 0; i < m && i < 24; i++) printf(" %d", got[i]);
    printf("%s\n", m > 24 ? " ..." : "");
    assert_int_equal(m, n);
    for (size_t i = 0; i < n; i++) assert_int_equal(got[i], want[i]);
}

static void expect_vocab(const Fx *f, const char *want)
{
    char path[256];
    size_t n;
    snprintf(path, sizeof path, "%s/vocab.txt", f->run);
    char *got = file_slurp(path, &n);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

/* ---- tokenization ---- */

static void test_bytes_ids(void **state)
{
    Fx *f = *state;
    const char *s = "h\xc3\xa9llo\nab\tc"; /* 11 bytes, é is 2 */
    puts0(f, "all.txt", s);
    use_path(f, "all.txt");
    f->c.data_valid_fraction = 0.3; /* floor(11 * 0.3) = 3 bytes held out */
    prepare_ok(f, 1);
    int train[8], valid[3];
    for (int i = 0; i < 8; i++) train[i] = (uint8_t)s[i];
    for (int i = 0; i < 3; i++) valid[i] = (uint8_t)s[8 + i];
    expect_ids(f, TEXT_TRAIN, train, 8);
    expect_ids(f, TEXT_VALID, valid, 3);
    assert_int_equal(train[1], 0xc3);
    /* bytes writes nothing to run.dir */
    char path[256];
    snprintf(path, sizeof path, "%s/vocab.txt", f->run);
    assert_int_equal(access(path, F_OK), -1);
}

static void test_words_ids(void **state)
{
    Fx *f = *state;
    f->c.data_tokenizer = TOK_WORDS;
    mkdir(strcat(strcpy(f->c.data_path, f->t.dir), "/d"), 0755);
    puts0(f, "d/train.txt", "the cat sat\nthe dog  sat\n\tthe cat ran\r\n");
    puts0(f, "d/valid.txt", "the bird sat\n<unk> cat <eos>");
    f->c.model_vocab = 7;
    prepare_ok(f, 1);
    /* the 3, cat 2, sat 2, dog 1, ran 1; ties by byte order */
    expect_vocab(f, "<unk>\n<eos>\nthe\ncat\nsat\ndog\nran\n");
    int train[] = {2, 3, 4, 1, 2, 5, 4, 1, 2, 3, 6, 1};
    int valid[] = {2, 0, 4, 1, 0, 3, 1};
    expect_ids(f, TEXT_TRAIN, train, 12);
    expect_ids(f, TEXT_VALID, valid, 7);
}

static void test_words_min_count(void **state)
{
    Fx *f = *state;
    f->c.data_tokenizer = TOK_WORDS;
    mkdir(strcat(strcpy(f->c.data_path, f->t.dir), "/d"), 0755);
    puts0(f, "d/train.txt", "the cat sat\nthe dog sat\nthe cat ran\n");
    puts0(f, "d/valid.txt", "dog cat\n");
    f->c.model_vocab = 5;
    f->c.data_min_count = 2;
    prepare_ok(f, 1);
    expect_vocab(f, "<unk>\n<eos>\nthe\ncat\nsat\n");
    int train[] = {2, 3, 4, 1, 2, 0, 4, 1, 2, 3, 0, 1};
    int valid[] = {0, 3, 1};
    expect_ids(f, TEXT_TRAIN, train, 12);
    expect_ids(f, TEXT_VALID, valid, 3);
}

/* Count descending; equal counts in byte order (Z < ab < abc < z < é, a
 * prefix first); a literal <unk> is not a word of its own. */
static void test_vocab_order(void **state)
{
    Fx *f = *state;
    f->c.data_tokenizer = TOK_WORDS;
    puts0(f, "all.txt", "abc ab \xc3\xa9t\xc3\xa9 z b b <unk> <unk> <unk> Z\n");
    use_path(f, "all.txt");
    f->c.data_valid_fraction = 0;
    f->c.model_vocab = 100;
    prepare_ok(f, 1);
    expect_vocab(f, "<unk>\n<eos>\nb\nZ\nab\nabc\nz\n\xc3\xa9t\xc3\xa9\n");
    int train[] = {5, 4, 7, 6, 2, 2, 0, 0, 0, 3, 1};
    expect_ids(f, TEXT_TRAIN, train, 11);
    /* no tokens file or vocab temp file left behind */
    DIR *d = opendir(f->run);
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') files++, assert_null(strstr(de->d_name, ".tmp"));
    closedir(d);
    assert_int_equal(files, 3);
}

/* A resumed run reuses vocab.txt, so ids never change. */
static void test_vocab_reuse(void **state)
{
    Fx *f = *state;
    f->c.data_tokenizer = TOK_WORDS;
    mkdir(strcat(strcpy(f->c.data_path, f->t.dir), "/d"), 0755);
    puts0(f, "d/train.txt", "a a a b b c\n");
    puts0(f, "d/valid.txt", "c b a\n");
    f->c.model_vocab = 5;
    prepare_ok(f, 1);
    expect_vocab(f, "<unk>\n<eos>\na\nb\nc\n");
    /* new counts would order c, b, a and add d */
    puts0(f, "d/train.txt", "c c c b b a d d d d\n");
    prepare_ok(f, 1);
    expect_vocab(f, "<unk>\n<eos>\na\nb\nc\n");
    int train[] = {4, 4, 4, 3, 3, 2, 0, 0, 0, 0, 1};
    int valid[] = {4, 3, 2, 1};
    expect_ids(f, TEXT_TRAIN, train, 11);
    expect_ids(f, TEXT_VALID, valid, 4);
    /* a smaller model.vocab than the reused vocabulary */
    f->c.model_vocab = 4;
    prepare_fails(f, 1, "model.vocab 4 is too small", "vocab.txt has 5 words", NULL);
    f->c.model_vocab = 5;
    /* not a vocabulary file */
    struct { const char *text, *why; } bad[] = {
        {"<unk>\n<eos>\na\nb\na\n", "vocab.txt:5: not a vocabulary file (a word seen twice)"},
        {"<eos>\n<unk>\na\n", "vocab.txt:1: not a vocabulary file (lines 1 and 2 must be <unk> and <eos>)"},
        {"<unk>\n<eos>\na\n\nb\n", "vocab.txt:4: not a vocabulary file (an empty line)"},
        {"<unk>\n<eos>\na b\n", "vocab.txt:3: not a vocabulary file (a word with a blank in it)"},
        {"<unk>\n<eos>\na", "vocab.txt:3: not a vocabulary file (the last line has no newline)"},
        {"<unk>\n", "vocab.txt: not a vocabulary file (fewer than 2 lines)"},
        {"<unk>\n<eos>\n\xff\n", "vocab.txt:3:1: not UTF-8 text (byte 0xff)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        puts0(f, "run/vocab.txt", bad[i].text);
        prepare_fails(f, 1, bad[i].why, NULL);
    }
}

/* ---- layout ---- */

/* Bytes 33 + i (all distinct, printable), so an id names its position. */
static void layout_text(Fx *f, size_t n)
{
    char s[100];
    assert_true(n <= sizeof s);
    for (size_t i = 0; i < n; i++) s[i] = (char)(33 + i);
    put(f, "all.txt", s, n);
    use_path(f, "all.txt");
    f->c.data_valid_fraction = 0;
}

static void test_layout(void **state)
{
    Fx *f = *state;
    layout_text(f, 90); /* 4 streams of L = 89/4 = 22 */
    Config *c = &f->c;
    c->data_seq_len = 5;
    c->data_batch_per_worker = 2;
    c->train_steps_per_epoch = 4; /* 20 <= 22 */
    prepare_ok(f, 2);
    Batcher all, lo, hi;
    assert_int_equal(batcher_init_split(&all, c, 0, 4, 1, TEXT_TRAIN), 0);
    assert_int_equal(batcher_init_split(&lo, c, 0, 2, 2, TEXT_TRAIN), 0);
    assert_int_equal(batcher_init_split(&hi, c, 2, 2, 2, TEXT_TRAIN), 0);
    assert_int_equal(all.stream_len, 22);
    int worst = 0;
    for (int epoch = 0; epoch < 2; epoch++) {
        batcher_epoch(&all, 11 + (uint64_t)epoch), batcher_epoch(&lo, 5), batcher_epoch(&hi, 9);
        for (int step = 0; step < 5; step++) { /* step 4 wraps: 20 + 5 > 22 */
            batcher_next(&all), batcher_next(&lo), batcher_next(&hi);
            int at = step < 4 ? step * 5 : 0;
            for (int t = 0; t < 5; t++)
                for (int j = 0; j < 4; j++) {
                    const Batcher *part = j < 2 ? &lo : &hi;
                    int want = 33 + j * 22 + at + t, in = all.inputs[t * 4 + j];
                    if (abs(in - want) > worst) worst = abs(in - want);
                    assert_int_equal(in, want);
                    assert_int_equal(all.targets[t * 4 + j], want + 1);
                    assert_int_equal(part->inputs[t * 2 + j % 2], want);
                    assert_int_equal(part->targets[t * 2 + j % 2], want + 1);
                }
            if (epoch == 0 && step < 2) {
                printf("  step %d stream inputs (position = id - 33):", step);
                for (int j = 0; j < 4; j++) printf(" [%d..%d]", all.inputs[j] - 33, all.inputs[16 + j] - 33);
                printf("\n");
            }
        }
    }
    printf("  layout: worst |id - hand-computed id| %d (tol 0); last target read %d of 0..89\n",
           worst, 3 * 22 + 19 + 1);
    batcher_free(&all), batcher_free(&lo), batcher_free(&hi);
    /* text needs the worker count */
    assert_int_equal(batcher_init(&all, c, 0, 4), -1);
    printf("  batcher_init on text: %s\n", all.err);
    assert_non_null(strstr(all.err, "batcher_init_split"));
    assert_int_equal(batcher_init_split(&all, c, 3, 2, 2, TEXT_TRAIN), -1);
    printf("  streams out of range: %s\n", all.err);
}

/* Epochs after the first: every stream shifted by the same seeded offset,
 * the split read as a ring; the worker split still does not matter, and
 * over a few epochs every token is a target (none left out for good). */
static void test_layout_shift(void **state)
{
    Fx *f = *state;
    layout_text(f, 90); /* 4 streams of L = 22; 4 steps of 5 read 20 of them */
    Config *c = &f->c;
    c->data_seq_len = 5;
    c->data_batch_per_worker = 2;
    c->train_steps_per_epoch = 4;
    prepare_ok(f, 2);
    Batcher all, lo, hi;
    assert_int_equal(batcher_init_split(&all, c, 0, 4, 1, TEXT_TRAIN), 0);
    assert_int_equal(batcher_init_split(&lo, c, 0, 2, 2, TEXT_TRAIN), 0);
    assert_int_equal(batcher_init_split(&hi, c, 2, 2, 2, TEXT_TRAIN), 0);
    int seen[90] = {0}, epochs = 0, covered = 0, wraps = 0;
    for (int epoch = 1; epoch <= 40 && covered < 90; epoch++, epochs++) {
        uint64_t seed = data_epoch_seed(c, epoch);
        batcher_epoch(&all, seed), batcher_epoch(&lo, seed), batcher_epoch(&hi, seed);
        batcher_shift(&all, epoch > 1 ? seed : 0), batcher_shift(&lo, epoch > 1 ? seed : 0);
        batcher_shift(&hi, epoch > 1 ? seed : 0);
        uint64_t sh = all.shift;
        assert_true(sh < 90);
        assert_true(epoch > 1 || sh == 0);
        assert_int_equal(lo.shift, sh), assert_int_equal(hi.shift, sh);
        for (int step = 0; step < 4; step++) {
            batcher_next(&all), batcher_next(&lo), batcher_next(&hi);
            for (int t = 0; t < 5; t++)
                for (int j = 0; j < 4; j++) {
                    const Batcher *part = j < 2 ? &lo : &hi;
                    uint64_t q = sh + (uint64_t)j * 22 + (uint64_t)step * 5 + (uint64_t)t;
                    int want = 33 + (int)(q % 90), next = 33 + (int)((q + 1) % 90);
                    wraps += q + 1 >= 90;
                    assert_int_equal(all.inputs[t * 4 + j], want);
                    assert_int_equal(all.targets[t * 4 + j], next);
                    assert_int_equal(part->inputs[t * 2 + j % 2], want);
                    assert_int_equal(part->targets[t * 2 + j % 2], next);
                    covered += !seen[next - 33];
                    seen[next - 33] = 1;
                }
        }
    }
    printf("  shifted epochs: every one of 90 tokens a target after %d epochs (80 a pass), %d reads wrapped\n",
           epochs, wraps);
    assert_int_equal(covered, 90);
    assert_true(wraps > 0);
    batcher_free(&all), batcher_free(&lo), batcher_free(&hi);
}

/* Word ids through the u32 files: the same layout, width 4. */
static void test_layout_words(void **state)
{
    Fx *f = *state;
    f->c.data_tokenizer = TOK_WORDS;
    char s[512] = "";
    for (int i = 0; i < 41; i++) sprintf(s + strlen(s), "w%02d ", i); /* ids 2 + i by byte order */
    puts0(f, "all.txt", s);
    use_path(f, "all.txt");
    Config *c = &f->c;
    c->data_valid_fraction = 0;
    c->model_vocab = 43;
    c->data_seq_len = 3;
    c->data_batch_per_worker = 2;
    c->train_steps_per_epoch = 3; /* L = 40/4 = 10 */
    prepare_ok(f, 2);
    Batcher b;
    assert_int_equal(batcher_init_split(&b, c, 2, 2, 2, TEXT_TRAIN), 0);
    batcher_epoch(&b, 0);
    for (int step = 0; step < 3; step++) {
        batcher_next(&b);
        for (int t = 0; t < 3; t++)
            for (int k = 0; k < 2; k++) {
                int want = 2 + (2 + k) * 10 + step * 3 + t;
                assert_int_equal(b.inputs[t * 2 + k], want);
                assert_int_equal(b.targets[t * 2 + k], want + 1);
            }
    }
    printf("  words: worker 1's streams 2, 3 step 3 inputs t=0: %d %d (want 28 38)\n", b.inputs[0], b.inputs[1]);
    batcher_free(&b);
}

/* ---- splits ---- */

static void test_split_fraction_words(void **state)
{
    Fx *f = *state;
    f->c.data_tokenizer = TOK_WORDS;
    puts0(f, "all.txt", "a b a b\na c\nz z z z\n");
    use_path(f, "all.txt");
    f->c.data_valid_fraction = 0.4; /* 13 tokens: 5 valid, 8 train */
    f->c.model_vocab = 5;
    prepare_ok(f, 1);
    expect_vocab(f, "<unk>\n<eos>\na\nb\nc\n"); /* z is only in the valid split */
    int train[] = {2, 3, 2, 3, 1, 2, 4, 1};
    int valid[] = {0, 0, 0, 0, 1};
    expect_ids(f, TEXT_TRAIN, train, 8);
    expect_ids(f, TEXT_VALID, valid, 5);
}

static void test_split_dir(void **state)
{
    Fx *f = *state;
    mkdir(strcat(strcpy(f->c.data_path, f->t.dir), "/d"), 0755);
    puts0(f, "d/train.txt", "abcdef");
    puts0(f, "d/valid.txt", "xyz");
    puts0(f, "d/test.txt", "\xff not read");
    f->c.data_valid_fraction = 0.4; /* ignored for a directory */
    prepare_ok(f, 1);
    int train[] = {'a', 'b', 'c', 'd', 'e', 'f'}, valid[] = {'x', 'y', 'z'};
    expect_ids(f, TEXT_TRAIN, train, 6);
    expect_ids(f, TEXT_VALID, valid, 3);
    /* valid batches: L = 2 for 1 stream, so 1 batch of 2 fits and 2 do not */
    f->c.data_valid_batches = 1;
    prepare_ok(f, 1);
    Batcher v;
    assert_int_equal(batcher_init_split(&v, &f->c, 0, 1, 1, TEXT_VALID), 0);
    batcher_epoch(&v, 0), batcher_next(&v);
    assert_int_equal(v.inputs[0], 'x'), assert_int_equal(v.inputs[1], 'y');
    assert_int_equal(v.targets[0], 'y'), assert_int_equal(v.targets[1], 'z');
    batcher_free(&v);
    f->c.data_valid_batches = 2;
    prepare_fails(f, 1, "data.valid_batches 2 x data.seq_len 2 needs 4 tokens per stream, ",
                  "/d/valid.txt gives 2 with 1 worker x 1 stream (at most 1 fit)", NULL);
}

/* ---- errors ---- */

static void test_err_utf8(void **state)
{
    Fx *f = *state;
    use_path(f, "x.txt");
#define TXT(s) s, sizeof s - 1 /* with any NUL bytes in it */
    struct { const char *text; size_t n; const char *want; } bad[] = {
        {TXT("ok\nline two\n\xc3\xa9t\xc3\xa9\xff tail\n"), "x.txt:3:4: not UTF-8 text (byte 0xff)"},
        {TXT("a long ascii line of text\nand a NUL \0 here\n"), "x.txt:2:11: not text (NUL byte)"},
        {TXT("\0"), "x.txt:1:1: not text (NUL byte)"},
        {TXT("ends in a cut char \xe2\x82"),
         "x.txt:1:20: not UTF-8 text (byte 0xe2 starts a 3-byte character cut off by the end of the file)"},
        {TXT("\n\n\xf0\x9f\x98"), "x.txt:3:1: not UTF-8 text (byte 0xf0 starts a 4-byte character cut off"},
        {TXT("bad continuation \xe2\x28\xa1"), "x.txt:1:18: not UTF-8 text (bytes 0xe2 0x28)"},
        {TXT("overlong \xc0\xaf"), "x.txt:1:10: not UTF-8 text (byte 0xc0)"},
        {TXT("surrogate \xed\xa0\x80"), "x.txt:1:11: not UTF-8 text (bytes 0xed 0xa0)"},
        {TXT("too big \xf4\x90\x80\x80"), "x.txt:1:9: not UTF-8 text (bytes 0xf4 0x90)"},
        {TXT("lone continuation \x80"), "x.txt:1:19: not UTF-8 text (byte 0x80)"},
    };
#undef TXT
    for (int tok = 0; tok < 2; tok++) {
        f->c.data_tokenizer = tok;
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
            put(f, "x.txt", bad[i].text, bad[i].n);
            prepare_fails(f, 1, bad[i].want, NULL);
        }
    }
    /* every valid form passes, in the 8-byte ASCII path and out of it */
    puts0(f, "x.txt", "\x7f \xc2\x80 \xdf\xbf \xe0\xa0\x80 \xed\x9f\xbf \xef\xbf\xbf \xf0\x90\x80\x80 "
                      "\xf4\x8f\xbf\xbf plain ascii text\n");
    f->c.data_tokenizer = TOK_BYTES;
    prepare_ok(f, 1);
}

static void test_err_empty(void **state)
{
    Fx *f = *state;
    mkdir(strcat(strcpy(f->c.data_path, f->t.dir), "/d"), 0755);
    puts0(f, "d/train.txt", "");
    puts0(f, "d/valid.txt", "some text");
    prepare_fails(f, 1, "data.path: empty train split: ", "/d/train.txt has no tokens", NULL);
    f->c.data_tokenizer = TOK_WORDS;
    puts0(f, "d/train.txt", "  \t \r ");
    prepare_fails(f, 1, "data.path: empty train split: ", "/d/train.txt has no tokens", NULL);
    /* an empty valid split is an error only when validation runs */
    puts0(f, "d/train.txt", "a b c d\n");
    puts0(f, "d/valid.txt", "");
    f->c.model_vocab = 6;
    prepare_ok(f, 1);
    f->c.data_valid_batches = 1;
    prepare_fails(f, 1, "data.path: empty valid split: ", "/d/valid.txt has no tokens", NULL);
    /* by fraction */
    f->c.data_tokenizer = TOK_BYTES;
    f->c.model_vocab = 256;
    puts0(f, "all.txt", "0123456789");
    use_path(f, "all.txt");
    f->c.data_valid_fraction = 0.05;
    prepare_fails(f, 1, "data.path: empty valid split: data.valid_fraction 0.05 of the 10 tokens of ",
                  "/all.txt is 0 tokens", NULL);
}

static void test_err_vocab_too_big(void **state)
{
    Fx *f = *state;
    /* a x4, b x3, c x2, d e f x1: 8 ids with <unk> and <eos> */
    puts0(f, "all.txt", "a a a a b b b c c d e f\n");
    use_path(f, "all.txt");
    f->c.data_valid_fraction = 0;
    f->c.data_tokenizer = TOK_WORDS;
    f->c.model_vocab = 5;
    prepare_fails(f, 1, "model.vocab 5 is too small for the vocabulary of the train split of ",
                  "8 words (<unk>, <eos> and 6 seen at least data.min_count 1 times)",
                  "raise model.vocab to 8, or data.min_count to 2 (5 words)", NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/vocab.txt", f->run);
    assert_int_equal(access(path, F_OK), -1); /* nothing written */
    f->c.data_min_count = 2;
    prepare_ok(f, 1);
    expect_vocab(f, "<unk>\n<eos>\na\nb\nc\n");
}

static void test_err_layout(void **state)
{
    Fx *f = *state;
    mkdir(strcat(strcpy(f->c.data_path, f->t.dir), "/d"), 0755);
    char big[2000];
    memset(big, 'x', sizeof big);
    put(f, "d/train.txt", big, 1201); /* 1200 / 4 streams = 300 per stream */
    puts0(f, "d/valid.txt", "valid");
    Config *c = &f->c;
    c->data_batch_per_worker = 2;
    c->data_seq_len = 35;
    c->train_steps_per_epoch = 500;
    prepare_fails(f, 2, "train.steps_per_epoch 500 x data.seq_len 35 needs 17500 tokens per stream, ",
                  "/d/train.txt gives 300 with 2 workers x 2 streams (at most 8 fit)", NULL);
    c->train_steps_per_epoch = 8;
    prepare_ok(f, 2);
    c->data_seq_len = 301;
    c->train_steps_per_epoch = 1;
    prepare_fails(f, 2, "data.seq_len 301 is longer than a stream of the train split: ",
                  "/d/train.txt has 1201 tokens, 300 per stream with 2 workers x 2 streams", NULL);
    c->data_seq_len = 300;
    prepare_ok(f, 2);
    c->data_valid_batches = 1;
    prepare_fails(f, 2, "data.seq_len 300 is longer than a stream of the valid split: ",
                  "/d/valid.txt has 5 tokens, 1 per stream with 2 workers x 2 streams", NULL);
    /* by fraction: the split is named */
    c->data_valid_batches = 0;
    put(f, "all.txt", big, 1001);
    use_path(f, "all.txt");
    c->data_valid_fraction = 0.2; /* 200 valid, 801 train: L = 200 */
    prepare_fails(f, 2, "data.seq_len 300 is longer than a stream of the train split: the train "
                  "split of ", "/all.txt has 801 tokens, 200 per stream", NULL);
}

static void test_err_files(void **state)
{
    Fx *f = *state;
    use_path(f, "missing.txt");
    prepare_fails(f, 1, "data.path: cannot read '", "/missing.txt': No such file or directory", NULL);
    mkdir(strcat(strcpy(f->c.data_path, f->t.dir), "/d"), 0755);
    puts0(f, "d/train.txt", "text");
    prepare_fails(f, 1, "data.path: cannot read '", "/d/valid.txt': No such file or directory", NULL);
    mkdir(strcat(strcpy(f->c.data_path, f->t.dir), "/d/valid.txt"), 0755);
    strcat(strcpy(f->c.data_path, f->t.dir), "/d");
    prepare_fails(f, 1, "/d/valid.txt': a directory, expected a file", NULL);
    if (geteuid() != 0) { /* root reads anything */
        rmdir(strcat(strcpy(f->c.data_path, f->t.dir), "/d/valid.txt"));
        const char *p = puts0(f, "d/valid.txt", "text");
        chmod(p, 0);
        strcat(strcpy(f->c.data_path, f->t.dir), "/d");
        prepare_fails(f, 1, "/d/valid.txt': Permission denied", NULL);
    }
    f->c.data_path[0] = 0;
    prepare_fails(f, 1, "data.path: required when data.source is text", NULL);
    /* bytes needs an id per byte value */
    use_path(f, "d/train.txt");
    f->c.model_vocab = 255;
    prepare_fails(f, 1, "model.vocab 255 must be >= 256 when data.tokenizer is bytes", NULL);
    /* a worker whose words files are gone */
    f->c.data_tokenizer = TOK_WORDS;
    TokenSeq s;
    char err[512];
    assert_int_equal(text_open(&s, &f->c, TEXT_VALID, err, sizeof err), -1);
    printf("  text_open: %s\n", err);
    assert_non_null(strstr(err, "tokens-valid.u32': No such file or directory"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bytes_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_words_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_words_min_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vocab_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vocab_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layout_words, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layout_shift, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_fraction_words, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_err_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_err_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_err_vocab_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_err_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_err_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
