/* internal: what the files of clipd-report share beyond report.h (limits of
 * the input, the SVG geometry, small string helpers); the tests use the
 * limits too. Not for use outside daemon/report/ and tests/test_report.c. */
#ifndef CLIPD_REPORT_INTERNAL_H
#define CLIPD_REPORT_INTERNAL_H

#include "daemon/report/report.h"

#include <stdbool.h>
#include <stddef.h>

#define REP_LINE_MAX (1L << 20)      /* bytes in one line of a .jsonl file */
#define REP_SEQ_MAX (INT64_C(1) << 53) /* seq and step numbers: exact as doubles on the step axis */
#define REP_EPOCH_MAX 10000000       /* epoch numbers (a table is indexed by them) */
#define REP_TENSOR_NAMES 256         /* distinct tensor names in tensors.jsonl */

#define SVG_W 1200
#define SVG_ML 86             /* left margin: y tick labels and axis label */
#define SVG_MR 28
#define SVG_COLS (SVG_W - SVG_ML - SVG_MR) /* plot width, one decimation column per px */
#define SVG_FONT "DejaVu Sans, Helvetica, Arial, sans-serif"
#define SVG_EVENT_LINES 30 /* a kind with more events is drawn as ticks above the panels */
#define SVG_BANDS 200      /* rollback bands drawn; the legend says when there are more */

/* A note printed under the summary (at most REP_NOTE_MAX kept). */
void rep_note(Report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The length (1 to 4) of the well-formed UTF-8 sequence at s, 0 when s does
 * not start one (a stray or truncated byte, an overlong form, a surrogate, past
 * U+10FFFF); *cp the code point. */
int rep_utf8_seq(const char *s, unsigned *cp);
/* dst = src, cut to at most len - 1 bytes, never inside a UTF-8 sequence. */
void rep_copy_str(char *dst, size_t len, const char *src);
/* qsort order of doubles, ascending. */
int rep_cmp_double(const void *a, const void *b);
/* The pixel column of x on [x0, x1] in cols columns, clamped; 0 for NAN (plot.c). */
int rep_column(double x, double x0, double x1, int cols);
/* An axis tick's label: %g with exponents as 1e4 and 1e-5, or a percentage (svg.c). */
const char *rep_tick_label(char *buf, size_t len, double v, bool pct);

#endif
