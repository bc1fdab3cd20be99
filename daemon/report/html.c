/* report_html: `clipd-report --html FILE RUN_DIR [RUN_DIR ...]`: one
 * self-contained HTML page (inline SVG and CSS, no script, nothing fetched)
 * with the runs overlaid, one colour each: train loss with the validation
 * loss, validation perplexity, pre-clip norm against each run's threshold,
 * clip rate, learning rate, throughput over wall-clock time and per-tensor
 * shares of the squared norm; events marked with their steps, resumes as
 * dashed lines. Panels sit at fixed places (HTML_PANEL_Y) so a browser's
 * screenshot can be checked pixel by pixel. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/report/report.h"

#define HTML_W 1100          /* page width, px */
#define HTML_PW 960          /* plot width */
#define HTML_PH 200          /* plot height */
#define HTML_ML 90           /* left margin of a plot inside its panel */
#define HTML_PANEL_H 270     /* a panel: title, plot, x axis */
#define HTML_TOP 200         /* the first panel's top: title and legend (up to 8 runs) above */
#define HTML_RUNS 8
#define HTML_PTS 1500        /* points drawn per series at most */

static const char *const run_color[HTML_RUNS] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                                 "#E69F00", "#56B4E9", "#000000", "#999999"};

typedef struct {
    const double *x, *y; /* (n) */
    long n;
    const char *color;
    int dots;            /* 1: points, not a line */
    const char *dash;    /* NULL: solid */
} Series;

typedef struct {
    double x0, x1, y0, y1;
    int logy;
    double top;          /* the panel's top on the page */
} Frame;

static double fx(const Frame *f, double x) { return HTML_ML + (x - f->x0) / (f->x1 - f->x0) * HTML_PW; }
static double fy(const Frame *f, double y)
{
    double v = f->logy ? log10(y) : y;
    return f->top + 40 + HTML_PH - (v - f->y0) / (f->y1 - f->y0) * HTML_PH;
}

static void xml_str(FILE *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", o);
        else if (*s == '>') fputs("&gt;", o);
        else if (*s == '&') fputs("&amp;", o);
        else if (*s == '"') fputs("&quot;", o);
        else fputc(*s, o);
    }
}

/* Bounds over the finite points (log: positive ones, as log10). */
static int bounds(const Series *s, int ns, int logy, Frame *f)
{
    f->x0 = f->y0 = INFINITY, f->x1 = f->y1 = -INFINITY;
    for (int k = 0; k < ns; k++)
        for (long i = 0; i < s[k].n; i++) {
            double x = s[k].x[i], y = s[k].y[i];
            if (!isfinite(x) || !isfinite(y) || (logy && y <= 0)) continue;
            double v = logy ? log10(y) : y;
            f->x0 = fmin(f->x0, x), f->x1 = fmax(f->x1, x), f->y0 = fmin(f->y0, v), f->y1 = fmax(f->y1, v);
        }
    if (!isfinite(f->x0)) return -1;
    if (f->x1 <= f->x0) f->x1 = f->x0 + 1;
    double pad = (f->y1 - f->y0) * 0.05;
    if (pad <= 0) pad = logy ? 0.5 : fabs(f->y0) * 0.1 + 0.1;
    f->y0 -= pad, f->y1 += pad;
    if (!logy && f->y0 < 0 && f->y0 + pad >= 0) f->y0 = 0; /* rates, losses: from 0 when close */
    f->logy = logy;
    return 0;
}

static void axes(FILE *o, const Frame *f, const char *xlabel, const char *ylabel)
{
    double t[40];
    int nt = f->logy ? rep_log_ticks(t, 40, f->y0, f->y1) : rep_ticks(t, 40, f->y0, f->y1, 5);
    double top = f->top + 40;
    fprintf(o, "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%d\" fill=\"#fff\" stroke=\"#888\"/>\n", HTML_ML, top,
            HTML_PW, HTML_PH);
    for (int i = 0; i < nt; i++) {
        double y = fy(f, t[i]);
        if (y < top - 0.5 || y > top + HTML_PH + 0.5) continue;
        fprintf(o, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n",
                HTML_ML, y, HTML_ML + HTML_PW, y, HTML_ML - 6, y + 4, t[i]);
    }
    nt = rep_ticks(t, 40, f->x0, f->x1, 8);
    for (int i = 0; i < nt; i++)
        fprintf(o, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.6g</text>\n", fx(f, t[i]), top + HTML_PH + 16,
                t[i]);
    fprintf(o, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", HTML_ML + HTML_PW / 2.0,
            top + HTML_PH + 32, xlabel);
    fprintf(o, "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
            top + HTML_PH / 2.0, ylabel);
}

static void series(FILE *o, const Frame *f, const Series *s)
{
    long stride = s->n > HTML_PTS ? (s->n + HTML_PTS - 1) / HTML_PTS : 1;
    if (s->dots) {
        for (long i = 0; i < s->n; i++)
            if (isfinite(s->x[i]) && isfinite(s->y[i]) && (!f->logy || s->y[i] > 0))
                fprintf(o, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", fx(f, s->x[i]), fy(f, s->y[i]),
                        s->color);
        return;
    }
    fprintf(o, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s%s%s points=\"", s->color,
            s->dash ? " stroke-dasharray=\"" : "", s->dash ? s->dash : "", s->dash ? "\"" : "");
    for (long i = 0; i < s->n; i += stride)
        if (isfinite(s->x[i]) && isfinite(s->y[i]) && (!f->logy || s->y[i] > 0))
            fprintf(o, "%.1f,%.1f ", fx(f, s->x[i]), fy(f, s->y[i]));
    fputs("\"/>\n", o);
}

typedef struct {
    const Report *r;
    int idx;
    double *step, *loss, *norm, *rate, *lr, *wall, *tps, *ve_x, *ve_y, *ppl, *thr_x, *thr_y;
    long nve;
    int token; /* a token model: nats/token and perplexity (else adding: squared error) */
} Run;

static int run_init(Run *u, const Report *r, int idx)
{
    long n = r->nst;
    memset(u, 0, sizeof *u);
    u->r = r, u->idx = idx;
    double **bufs[] = {&u->step, &u->loss, &u->norm, &u->rate, &u->lr, &u->wall, &u->tps};
    for (size_t k = 0; k < sizeof bufs / sizeof *bufs; k++)
        if (!(*bufs[k] = calloc((size_t)n + 1, sizeof(double)))) return -1;
    u->ve_x = calloc((size_t)r->nep + 1, sizeof(double)), u->ve_y = calloc((size_t)r->nep + 1, sizeof(double));
    u->ppl = calloc((size_t)r->nep + 1, sizeof(double));
    u->thr_x = calloc(2, sizeof(double)), u->thr_y = calloc(2, sizeof(double));
    bool *clipped = calloc((size_t)n + 1, sizeof *clipped);
    if (!u->ve_x || !u->ve_y || !u->ppl || !u->thr_x || !u->thr_y || !clipped) return free(clipped), -1;
    u->token = !r->squared_error;
    double t0 = NAN;
    for (long i = 0; i < n; i++) {
        const RepStep *s = &r->st[i];
        u->step[i] = (double)s->step, u->loss[i] = s->loss, u->norm[i] = s->norm, u->lr[i] = s->lr;
        clipped[i] = s->clipped;
        if (isfinite(s->time) && !isfinite(t0)) t0 = s->time;
        u->wall[i] = isfinite(s->time) ? (s->time - t0) / 60 : NAN;
        u->tps[i] = s->step_ms > 0 ? (double)s->tokens / s->step_ms * 1e3 : NAN;
    }
    long w = n / 50 > 10 ? n / 50 : 10;
    rep_window_rate(u->rate, clipped, n, w);
    free(clipped);
    for (long e = 0; e < r->nep; e++) { /* validation at the step that ends the epoch */
        double x = NAN;
        for (long i = 0; i < n; i++)
            if (r->st[i].epoch == r->ep[e].epoch) x = (double)r->st[i].step;
        u->ve_x[u->nve] = x, u->ve_y[u->nve] = r->ep[e].val_loss, u->ppl[u->nve] = exp(r->ep[e].val_loss);
        u->nve++;
    }
    u->thr_x[0] = n ? u->step[0] : 0, u->thr_x[1] = n ? u->step[n - 1] : 1;
    u->thr_y[0] = u->thr_y[1] = r->max_norm;
    return 0;
}

static void run_free(Run *u)
{
    double *b[] = {u->step, u->loss, u->norm, u->rate, u->lr, u->wall, u->tps, u->ve_x, u->ve_y, u->ppl, u->thr_x, u->thr_y};
    for (size_t k = 0; k < sizeof b / sizeof *b; k++) free(b[k]);
}

/* Events as ticks along the top of a step panel, each with its step in a
 * tooltip; resumes as dashed lines across it. */
static void marks(FILE *o, const Frame *f, const Run *u, int nrun)
{
    const Report *r = u->r;
    double y = f->top + 40 + 4 + 6 * (u->idx % 4);
    for (long j = 0; j < r->nev; j++) {
        double x = fx(f, (double)r->ev[j].step);
        if (x < HTML_ML || x > HTML_ML + HTML_PW) continue;
        fprintf(o, "<path d=\"M%.1f %.1f l-4 -7 h8 z\" fill=\"%s\"><title>", x, y + 6, run_color[u->idx]);
        xml_str(o, r->ev[j].kind);
        fprintf(o, " at step %lld%s</title></path>\n", (long long)r->ev[j].step, nrun > 1 ? "" : "");
    }
    for (long i = 0; i < r->nses; i++) {
        if (strcmp(r->ses[i].kind, "resume")) continue;
        double x = fx(f, (double)r->ses[i].step + 0.5);
        int crash = i > 0 && !strcmp(r->ses[i - 1].kind, "crash");
        fprintf(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-dasharray=\"6 3\">"
                   "<title>%s at step %lld</title></line>\n", x, f->top + 40, x, f->top + 40 + HTML_PH,
                run_color[u->idx], crash ? "crash, resume" : "resume", (long long)r->ses[i].step);
    }
}

typedef enum { P_LOSS, P_PPL, P_NORM, P_CLIP, P_LR, P_TPS, P_COUNT } PanelKind;

static void panel(FILE *o, Run *u, int n, PanelKind k, int idx)
{
    Series s[HTML_RUNS * 2];
    int ns = 0, logy = k == P_NORM || k == P_LR;
    for (int i = 0; i < n; i++) {
        Run *q = &u[i];
        long m = q->r->nst;
        const char *c = run_color[i];
        if (k == P_LOSS) {
            s[ns++] = (Series){q->step, q->loss, m, c, 0, NULL};
            s[ns++] = (Series){q->ve_x, q->ve_y, q->nve, c, 1, NULL};
        } else if (k == P_PPL && q->token) {
            s[ns++] = (Series){q->ve_x, q->ppl, q->nve, c, 1, NULL};
        } else if (k == P_NORM) {
            s[ns++] = (Series){q->step, q->norm, m, c, 0, NULL};
            if (isfinite(q->r->max_norm)) s[ns++] = (Series){q->thr_x, q->thr_y, 2, c, 0, "8 4"};
        } else if (k == P_CLIP) {
            s[ns++] = (Series){q->step, q->rate, m, c, 0, NULL};
        } else if (k == P_LR) {
            s[ns++] = (Series){q->step, q->lr, m, c, 0, NULL};
        } else if (k == P_TPS) {
            s[ns++] = (Series){q->wall, q->tps, m, c, 0, NULL};
        }
    }
    int tok = 1, sq = 0;
    for (int i = 0; i < n; i++) tok &= u[i].token, sq |= !u[i].token;
    static const char *const titles[P_COUNT] = {
        "Loss: train (lines) and validation (dots, at each epoch's end)", "Validation perplexity (exp of the validation loss)",
        "Pre-clip global gradient norm (log scale); dashed: the clip threshold", "Clip rate (fraction of steps clipped, moving window)",
        "Learning rate (log scale): rollbacks and plateau decays show as drops", "Throughput over wall-clock time"};
    const char *yl[P_COUNT] = {tok ? "nats / token" : sq && n == 1 ? "squared error" : "loss (nats/token; adding: squared error)",
                               "perplexity", "L2 norm", "clip rate", "learning rate", "tokens / s"};
    Frame f;
    f.top = HTML_TOP + idx * HTML_PANEL_H;
    fprintf(o, "<g class=\"panel\" id=\"p%d\">\n<text class=\"t\" x=\"%d\" y=\"%.1f\">%s</text>\n", idx, HTML_ML,
            f.top + 28, titles[k]);
    if (bounds(s, ns, logy, &f) != 0) {
        fprintf(o, "<text x=\"%d\" y=\"%.1f\">no data%s</text>\n</g>\n", HTML_ML, f.top + 60,
                k == P_PPL ? " (no token model with a validation loss)" : k == P_TPS ? " (no time in steps.jsonl)" : "");
        return;
    }
    axes(o, &f, k == P_TPS ? "minutes since the run's first step" : "step", yl[k]);
    for (int i = 0; i < ns; i++) series(o, &f, &s[i]);
    if (k != P_TPS && k != P_PPL)
        for (int i = 0; i < n; i++) marks(o, &f, &u[i], n);
    fputs("</g>\n", o);
}

/* Per-tensor mean shares of the squared pre-clip norm, as bars, per run. */
static void shares(FILE *o, const Report *const *runs, int n, double top)
{
    fprintf(o, "<g class=\"panel\" id=\"p%d\">\n<text class=\"t\" x=\"%d\" y=\"%.1f\">Share of the squared pre-clip norm "
               "by tensor (mean over tensors.jsonl)</text>\n", P_COUNT, HTML_ML, top + 28);
    double y = top + 44;
    for (int i = 0; i < n; i++) {
        RepSummary s;
        rep_summarise(runs[i], &s);
        for (int k = 0; k < s.ntop; k++, y += 16) {
            double w = s.top[k].share * 600;
            fprintf(o, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">", HTML_ML + 150, y + 11);
            xml_str(o, runs[i]->t.names[s.top[k].idx]);
            fprintf(o, "</text><rect x=\"%d\" y=\"%.1f\" width=\"%.1f\" height=\"12\" fill=\"%s\"/>"
                       "<text x=\"%.1f\" y=\"%.1f\">%.1f%%</text>\n", HTML_ML + 156, y, w, run_color[i],
                    HTML_ML + 162 + w, y + 11, 100 * s.top[k].share);
        }
        y += 8;
    }
    fputs("</g>\n", o);
}

int rep_write_html(const Report *const *runs, int n, const char *path, char *err, size_t errlen)
{
    if (n < 1 || n > HTML_RUNS) return snprintf(err, errlen, "--html: 1 to %d runs, got %d", HTML_RUNS, n), -1;
    Run u[HTML_RUNS];
    int bad = 0, made = 0;
    for (; made < n && !bad; made++) bad = run_init(&u[made], runs[made], made);
    FILE *o = bad ? NULL : fopen(path, "w");
    if (!o) {
        if (!bad) snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        else snprintf(err, errlen, "out of memory drawing the page");
        for (int i = 0; i < made; i++) run_free(&u[i]);
        return -1;
    }
    long rows = 0;
    for (int i = 0; i < n; i++) rows += 5 + 1;
    double height = HTML_TOP + P_COUNT * HTML_PANEL_H + 60 + rows * 16;
    fprintf(o, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>clipd report</title>\n"
               "<style>body{margin:0;background:#fff;font:13px DejaVu Sans,Helvetica,Arial,sans-serif}"
               "svg text{font:12px DejaVu Sans,Helvetica,Arial,sans-serif;fill:#222}svg text.t{font-weight:bold;font-size:14px}"
               "</style></head><body>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%.0f\">\n"
               "<text class=\"t\" x=\"%d\" y=\"30\">clipd report: %d run%s</text>\n", HTML_W, height, HTML_ML, n,
            n == 1 ? "" : "s");
    for (int i = 0; i < n; i++) { /* the legend: one row per run */
        double y = 52 + 18 * i;
        fprintf(o, "<rect x=\"%d\" y=\"%.1f\" width=\"24\" height=\"10\" fill=\"%s\"/><text x=\"%d\" y=\"%.1f\">",
                HTML_ML, y, run_color[i], HTML_ML + 32, y + 10);
        xml_str(o, runs[i]->name);
        fputs(" (", o);
        xml_str(o, runs[i]->dir);
        fprintf(o, "): %ld steps, %ld epochs, %ld events, %ld sessions</text>\n", runs[i]->nst, runs[i]->nep,
                runs[i]->nev, runs[i]->nses);
    }
    for (int k = 0; k < P_COUNT; k++) panel(o, u, n, (PanelKind)k, k);
    shares(o, runs, n, HTML_TOP + P_COUNT * HTML_PANEL_H);
    fputs("</svg>\n</body></html>\n", o);
    for (int i = 0; i < n; i++) run_free(&u[i]);
    if (fclose(o) != 0) return snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno)), -1;
    return 0;
}
