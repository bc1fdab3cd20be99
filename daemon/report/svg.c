/* svg: `--svg FILE`, the run drawn as one self-contained SVG on a shared
 * step axis (see report.h): loss, pre-clip norm against the threshold, clip
 * rate, the tensors' shares, events, epochs, sessions and rollback bands.
 * Text from the files is XML-escaped and kept valid UTF-8. */
#include "daemon/report/internal.h"
#include "daemon/stats.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Okabe-Ito: distinguishable with the common colour-vision deficiencies. */
#define C_BLUE "#0072B2"
#define C_SKY "#56B4E9"
#define C_GREEN "#009E73"
#define C_ORANGE "#E69F00"
#define C_VERMILLION "#D55E00"
#define C_PURPLE "#CC79A7"
#define C_GREY "#6b6b6b"

typedef struct {
    double x, y, w, h;  /* plot area, px */
    double y0, y1;      /* data range of y; log10 of it on a log axis */
    bool log;
} Panel;

typedef struct {
    FILE *f;
    const Report *r;
    const RepSummary *s;
    double x0, x1;     /* the seq axis */
    double top, bot;   /* first panel's top, last panel's bottom, px */
    double *x, *y;     /* (nst) seq, and a scratch series */
    double *ox, *oy;   /* (2 * SVG_COLS + 2) decimated points */
    int clip_id;
    double band[SVG_BANDS][2]; /* seq range of each band of steps re-run after a rollback */
    long nbands, bands_total;  /* drawn, found */
} Svg;

static double sx(const Svg *v, double seq) { return SVG_ML + (seq - v->x0) / (v->x1 - v->x0) * SVG_COLS; }

/* The y of a value in a panel; far off-scale values (the panel clips them)
 * are held 1e6 px off it, so no coordinate is infinite or NaN. */
static double py(const Panel *p, double y)
{
    double t = p->log ? log10(y > 0 ? y : pow(10, p->y0)) : y;
    double v = p->y + p->h - (t - p->y0) / (p->y1 - p->y0) * p->h;
    return isnan(v) ? p->y + p->h : fmax(p->y - 1e6, fmin(v, p->y + p->h + 1e6));
}

/* s as XML character data: markup escaped, control characters dropped, and
 * what XML may not hold (bytes that are not UTF-8, U+FFFE, U+FFFF) as U+FFFD. */
static void xml_text(FILE *f, const char *s)
{
    unsigned cp;
    while (*s) {
        int k = rep_utf8_seq(s, &cp);
        if (k == 0 || cp == 0xfffe || cp == 0xffff) fputs("\xef\xbf\xbd", f);
        else if (cp == '<') fputs("&lt;", f);
        else if (cp == '>') fputs("&gt;", f);
        else if (cp == '&') fputs("&amp;", f);
        else if (cp == '"') fputs("&quot;", f);
        else if (cp >= 0x20 || cp == '\t') fwrite(s, 1, (size_t)k, f);
        s += k ? k : 1;
    }
}

/* %g, with exponents as 1e4 and 1e-5 rather than 1e+04 and 1e-05. */
const char *rep_tick_label(char *buf, size_t len, double v, bool pct)
{
    if (pct) snprintf(buf, len, "%g%%", 100 * v);
    else snprintf(buf, len, "%g", v);
    char *e = strchr(buf, 'e');
    if (e) {
        char *p = e + 1;
        bool neg = *p == '-';
        if (*p == '+' || *p == '-') p++;
        while (*p == '0' && p[1]) p++;
        memmove(e + 1 + neg, p, strlen(p) + 1);
    }
    return buf;
}

typedef enum { LG_LINE, LG_DOT, LG_RING, LG_AREA, LG_CROSS } LgKind;
typedef struct {
    LgKind k;
    const char *color, *dash;
    double width;
    const char *label;
} LgItem;

/* Legend items in one row ending at x = right, baseline y. */
static void svg_legend(FILE *f, double right, double y, const LgItem *it, int n)
{
    double w = 0;
    for (int i = 0; i < n; i++) w += 30 + 6.9 * (double)strlen(it[i].label) + 16;
    double x = right - w + 16;
    for (int i = 0; i < n; i++) {
        const LgItem *g = &it[i];
        double cy = y - 4.5;
        if (g->k == LG_LINE)
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"%.1f\"%s%s%s/>\n",
                    x, cy, x + 24, cy, g->color, g->width, g->dash ? " stroke-dasharray=\"" : "",
                    g->dash ? g->dash : "", g->dash ? "\"" : "");
        else if (g->k == LG_DOT)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\" stroke=\"white\"/>\n", x + 12, cy, g->color);
        else if (g->k == LG_RING)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"/>\n", x + 12, cy, g->color);
        else if (g->k == LG_AREA)
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"24\" height=\"11\" fill=\"%s\" fill-opacity=\"%.2f\"/>\n",
                    x, cy - 5.5, g->color, g->width);
        else
            fprintf(f, "<path d=\"M%.1f %.1fl8 8m0 -8l-8 8\" stroke=\"%s\" stroke-width=\"2\"/>\n", x + 8, cy - 4, g->color);
        fprintf(f, "<text class=\"lg\" x=\"%.1f\" y=\"%.1f\">", x + 30, y);
        xml_text(f, g->label);
        fprintf(f, "</text>\n");
        x += 30 + 6.9 * (double)strlen(g->label) + 16;
    }
}

typedef struct {
    const char *kind, *color, *dash;
} KindStyle;

static KindStyle kind_style(const char *kind)
{
    static const KindStyle tab[] = {
        {"nonfinite_loss", C_VERMILLION, NULL}, {"nonfinite_grad", C_VERMILLION, NULL},
        {"grad_norm_spike", C_ORANGE, NULL},    {"loss_spike", C_PURPLE, NULL},
        {"clip_saturation", "#404040", "3 3"},  {"clip_inactive", "#9a9a9a", "3 3"},
        {"replica_drift", "#000000", "9 3"},    {"val_loss_rise", C_PURPLE, "9 3"},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(tab[i].kind, kind) == 0) return tab[i];
    return (KindStyle){kind, "#777777", "1 3"};
}

/* False when an earlier event of the same kind falls in the same pixel column. */
static bool event_first_in_column(const Svg *v, long i)
{
    const RepEvent *ev = v->r->ev;
    double x = sx(v, (double)ev[i].seq);
    for (long j = i - 1; j >= 0 && sx(v, (double)ev[j].seq) > x - 1; j--)
        if (ev[j].kind_idx == ev[i].kind_idx) return false;
    return true;
}

/* The steps re-run after each rollback: from the first step whose number is
 * not after the one before, to where the run is back at that number. A
 * rollback inside such a range re-runs steps within it, so the ranges found in
 * one pass, each scanned once, cover every rollback's; the first SVG_BANDS are
 * kept. */
static void svg_find_bands(Svg *v)
{
    const Report *r = v->r;
    for (long i = 1; i < r->nst; i++) {
        if (r->st[i].step > r->st[i - 1].step) continue;
        long j = i;
        while (j + 1 < r->nst && r->st[j].step < r->st[i - 1].step) j++;
        if (v->nbands < SVG_BANDS) {
            v->band[v->nbands][0] = (double)r->st[i].seq;
            v->band[v->nbands++][1] = (double)r->st[j].seq;
        }
        v->bands_total++;
        i = j; /* the next rollback is after j */
    }
}

/* Behind a panel's data: the rollback bands, and each event as a line in its
 * kind's style. */
static void svg_marks(Svg *v, const Panel *p)
{
    const Report *r = v->r;
    for (long k = 0; k < v->nbands; k++) {
        double a = sx(v, v->band[k][0] - 0.5), b = sx(v, v->band[k][1] + 0.5);
        fprintf(v->f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#000\" fill-opacity=\"0.08\"/>\n",
                a, p->y, fmax(b - a, 1), p->h);
    }
    for (long i = 0; i < r->nev; i++) {
        const RepEvent *e = &r->ev[i];
        if (r->kind_count[e->kind_idx] > SVG_EVENT_LINES || !event_first_in_column(v, i)) continue;
        KindStyle ks = kind_style(e->kind);
        double x = sx(v, (double)e->seq);
        fprintf(v->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.8\"%s%s%s/>\n",
                x, p->y, x, p->y + p->h, ks.color, ks.dash ? " stroke-dasharray=\"" : "", ks.dash ? ks.dash : "",
                ks.dash ? "\"" : "");
    }
}

/* Background, grid, y ticks, x grid, marks, title and y label of a panel; then
 * opens a group clipped to the plot area (svg_panel_end closes it). */
static void svg_panel(Svg *v, const Panel *p, const char *title, const char *ylabel, bool pct)
{
    FILE *f = v->f;
    double t[64], xt[64];
    char b[32];
    int n = p->log ? rep_log_ticks(t, 64, p->y0, p->y1) : rep_ticks(t, 64, p->y0, p->y1, 5);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#fafafa\"/>\n",
            p->x, p->y, p->w, p->h);
    double labelled = 1e9; /* y of the last labelled tick: labels stay 15 px apart */
    for (int i = 0; i < n; i++) {
        double y = py(p, t[i]);
        fprintf(f, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", p->x, y, p->x + p->w, y);
        if (fabs(labelled - y) < 15) continue;
        fprintf(f, "<text class=\"tk\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", p->x - 7, y + 4,
                rep_tick_label(b, sizeof b, t[i], pct));
        labelled = y;
    }
    int nx = rep_ticks(xt, 64, v->x0, v->x1, 10);
    for (int i = 0; i < nx; i++)
        fprintf(f, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", sx(v, xt[i]), p->y,
                sx(v, xt[i]), p->y + p->h);
    svg_marks(v, p);
    fprintf(f, "<text class=\"pt\" x=\"%.1f\" y=\"%.1f\">%s</text>\n", p->x, p->y - 9, title);
    fprintf(f, "<text class=\"yl\" text-anchor=\"middle\" transform=\"translate(%d %.1f) rotate(-90)\">%s</text>\n",
            22, p->y + p->h / 2, ylabel);
    int id = v->clip_id++;
    fprintf(f, "<clipPath id=\"c%d\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></clipPath>\n",
            id, p->x, p->y, p->w, p->h);
    fprintf(f, "<g clip-path=\"url(#c%d)\">\n", id);
}

static void svg_panel_end(Svg *v, const Panel *p)
{
    fprintf(v->f, "</g>\n<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#888\"/>\n",
            p->x, p->y, p->w, p->h);
}

/* The series y (one value per step) as one path, at most two points a pixel. */
static void svg_series(Svg *v, const Panel *p, const double *y, const char *attrs)
{
    long m = rep_decimate(v->ox, v->oy, v->x, y, v->r->nst, v->x0, v->x1, SVG_COLS);
    fprintf(v->f, "<path fill=\"none\" stroke-linejoin=\"round\" %s d=\"", attrs);
    for (long i = 0; i < m; i++)
        fprintf(v->f, "%s%.1f %.1f", i ? "L" : "M", sx(v, v->ox[i]), py(p, v->oy[i]));
    fprintf(v->f, "\"/>\n");
}

static long smooth_window(long n)
{
    long w = n / 60;
    return (w < 5 ? 5 : w) | 1;
}

/* Loss: per step (thin), smoothed, validation per epoch (points). */
static void svg_loss(Svg *v, Panel *p)
{
    const Report *r = v->r;
    long n = r->nst, w = smooth_window(n), nq = 0;
    double lo = INFINITY, hi = -INFINITY;
    double *raw = calloc((size_t)n, sizeof *raw), *sm = calloc((size_t)n, sizeof *sm);
    if (!raw || !sm) goto done;
    for (long i = 0; i < n; i++) {
        raw[i] = r->st[i].loss;
        if (isfinite(raw[i])) v->y[nq++] = raw[i], lo = fmin(lo, raw[i]);
    }
    rep_smooth(sm, raw, n, w);
    hi = stats_percentile(v->y, nq, 0.995);
    for (long i = 0; i < n; i++)
        if (isfinite(sm[i])) hi = fmax(hi, sm[i]);
    for (long i = 0; i < r->nep; i++)
        if (isfinite(r->ep[i].val_loss) && r->ep[i].end_seq)
            lo = fmin(lo, r->ep[i].val_loss), hi = fmax(hi, r->ep[i].val_loss);
    if (!(hi > lo)) hi = lo + 1, lo -= 1;
    if (!isfinite(lo)) lo = 0, hi = 1;
    lo = fmax(lo, -1e300), hi = fmin(hi, 1e300); /* hi - lo stays finite */
    p->y0 = lo - 0.05 * (hi - lo), p->y1 = hi + 0.05 * (hi - lo);
    svg_panel(v, p, "Loss", r->squared_error ? "loss (squared error)" : "loss (nats/token)", false);
    svg_series(v, p, raw, "stroke=\"" C_SKY "\" stroke-width=\"0.9\" stroke-opacity=\"0.75\"");
    svg_series(v, p, sm, "stroke=\"" C_BLUE "\" stroke-width=\"2.2\"");
    fprintf(v->f, "<path fill=\"none\" stroke=\"" C_GREEN "\" stroke-width=\"1.3\" stroke-dasharray=\"2 3\" d=\"");
    for (long i = 0, k = 0; i < r->nep; i++)
        if (isfinite(r->ep[i].val_loss) && r->ep[i].end_seq)
            fprintf(v->f, "%s%.1f %.1f", k++ ? "L" : "M", sx(v, (double)r->ep[i].end_seq), py(p, r->ep[i].val_loss));
    fprintf(v->f, "\"/>\n");
    svg_panel_end(v, p);
    for (long i = 0; i < r->nep; i++)
        if (isfinite(r->ep[i].val_loss) && r->ep[i].end_seq)
            fprintf(v->f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"" C_GREEN "\" stroke=\"white\" stroke-width=\"1.2\"/>\n",
                    sx(v, (double)r->ep[i].end_seq), py(p, r->ep[i].val_loss));
    char sl[64];
    snprintf(sl, sizeof sl, "train, smoothed over %ld steps", w);
    LgItem it[] = {{LG_LINE, C_SKY, NULL, 1.2, "train, per step"},
                   {LG_LINE, C_BLUE, NULL, 2.5, sl},
                   {LG_DOT, C_GREEN, NULL, 0, "validation, end of epoch"}};
    svg_legend(v->f, p->x + p->w, p->y - 9, it, 3);
done:
    free(raw);
    free(sm);
}

/* Pre-clip global norm on a log axis, its geometric moving mean, the clip
 * threshold, skipped steps (rings) and non-finite steps (crosses on top). */
static void svg_norm(Svg *v, Panel *p)
{
    const Report *r = v->r;
    long n = r->nst, w = smooth_window(n);
    double lo = INFINITY, hi = -INFINITY, thr = r->max_norm;
    double *lg = calloc((size_t)n, sizeof *lg), *sm = calloc((size_t)n, sizeof *sm);
    if (!lg || !sm) goto done;
    for (long i = 0; i < n; i++) {
        double x = r->st[i].norm;
        lg[i] = isfinite(x) && x > 0 ? log10(x) : NAN;
        if (isfinite(lg[i])) lo = fmin(lo, lg[i]), hi = fmax(hi, lg[i]);
        if (r->st[i].skipped) lg[i] = NAN; /* not applied: marked, not averaged in */
    }
    if (isfinite(thr) && thr > 0) lo = fmin(lo, log10(thr)), hi = fmax(hi, log10(thr));
    if (!isfinite(lo)) lo = -1, hi = 1;
    double pad = fmax(0.06 * (hi - lo), 0.15);
    p->y0 = lo - pad, p->y1 = hi + pad, p->log = true;
    rep_smooth(sm, lg, n, w);
    for (long i = 0; i < n; i++) sm[i] = pow(10, sm[i]), v->y[i] = r->st[i].norm;
    svg_panel(v, p, "Pre-clip global gradient norm", "L2 norm (log scale)", false);
    svg_series(v, p, v->y, "stroke=\"" C_SKY "\" stroke-width=\"0.9\" stroke-opacity=\"0.8\"");
    svg_series(v, p, sm, "stroke=\"" C_BLUE "\" stroke-width=\"2.2\"");
    if (isfinite(thr) && thr > 0)
        fprintf(v->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"" C_VERMILLION
                      "\" stroke-width=\"2\" stroke-dasharray=\"8 5\"/>\n",
                p->x, py(p, thr), p->x + p->w, py(p, thr));
    /* a cross per pixel column; up to 4 rings per column, 2 px apart at least */
    int cross_col = -1, ring_col = -1, nring = 0;
    double ring_y[4];
    for (long i = 0; i < n; i++) {
        const RepStep *s = &r->st[i];
        double x = sx(v, (double)s->seq);
        int c = rep_column((double)s->seq, v->x0, v->x1, SVG_COLS);
        if (!isfinite(s->norm) || !isfinite(s->loss)) {
            if (c == cross_col) continue;
            cross_col = c;
            fprintf(v->f, "<path d=\"M%.1f %.1fl8 8m0 -8l-8 8\" stroke=\"" C_VERMILLION "\" stroke-width=\"2\"/>\n",
                    x - 4, p->y + 4);
        } else if (s->skipped) {
            double y = py(p, s->norm);
            if (c != ring_col) ring_col = c, nring = 0;
            bool near = nring == 4;
            for (int k = 0; k < nring && !near; k++) near = fabs(y - ring_y[k]) < 2;
            if (near) continue;
            ring_y[nring++] = y;
            fprintf(v->f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"none\" stroke=\"" C_VERMILLION
                          "\" stroke-width=\"1.6\"/>\n", x, y);
        }
    }
    svg_panel_end(v, p);
    char tl[64], sl[64];
    snprintf(tl, sizeof tl, "clip threshold %g", thr);
    snprintf(sl, sizeof sl, "geometric mean over %ld steps", w);
    LgItem it[5] = {{LG_LINE, C_SKY, NULL, 1.2, "per step"}, {LG_LINE, C_BLUE, NULL, 2.5, sl}};
    int k = 2;
    if (isfinite(thr) && thr > 0) it[k++] = (LgItem){LG_LINE, C_VERMILLION, "8 5", 2, tl};
    if (v->s->skipped > v->s->nonfinite) it[k++] = (LgItem){LG_RING, C_VERMILLION, NULL, 0, "skipped"};
    if (v->s->nonfinite) it[k++] = (LgItem){LG_CROSS, C_VERMILLION, NULL, 0, "non-finite"};
    svg_legend(v->f, p->x + p->w, p->y - 9, it, k);
done:
    free(lg);
    free(sm);
}

/* 50 steps, more on a long run (n / 200), fewer on a short one (n / 4). */
static long rate_window(long n)
{
    long w = n / 4;
    return n >= 10000 ? n / 200 : n >= 200 ? 50 : w < 5 ? 5 : w;
}

/* Clip rate over a trailing window of steps, and each epoch's from epochs.jsonl. */
static void svg_clip(Svg *v, Panel *p)
{
    const Report *r = v->r;
    long n = r->nst, w = rate_window(n);
    bool *flag = malloc((size_t)n * sizeof *flag);
    if (!flag) return;
    for (long i = 0; i < n; i++) flag[i] = r->st[i].clipped;
    rep_window_rate(v->y, flag, n, w);
    free(flag);
    p->y0 = 0, p->y1 = 1;
    svg_panel(v, p, "Clip rate", "fraction of steps clipped", false);
    long m = rep_decimate(v->ox, v->oy, v->x, v->y, n, v->x0, v->x1, SVG_COLS);
    fprintf(v->f, "<path fill=\"" C_GREEN "\" fill-opacity=\"0.18\" stroke=\"" C_GREEN "\" stroke-width=\"1.8\" d=\"");
    for (long i = 0; i < m; i++)
        fprintf(v->f, "%s%.1f %.1f", i ? "L" : "M", sx(v, v->ox[i]), py(p, v->oy[i]));
    if (m) fprintf(v->f, "L%.1f %.1fL%.1f %.1fZ", sx(v, v->ox[m - 1]), py(p, 0), sx(v, v->ox[0]), py(p, 0));
    fprintf(v->f, "\"/>\n<path fill=\"none\" stroke=\"#000\" stroke-width=\"1.6\" stroke-dasharray=\"5 3\" d=\"");
    double start = v->x0;
    for (long i = 0, k = 0; i < r->nep; i++) {
        const RepEpoch *e = &r->ep[i];
        if (!e->end_seq || !isfinite(e->clip_rate)) continue;
        fprintf(v->f, "%s%.1f %.1fH%.1f", k++ ? "L" : "M", sx(v, start), py(p, e->clip_rate),
                sx(v, (double)e->end_seq));
        start = (double)e->end_seq;
    }
    fprintf(v->f, "\"/>\n");
    svg_panel_end(v, p);
    char wl[64];
    snprintf(wl, sizeof wl, "clipped, last %ld steps", w);
    LgItem it[] = {{LG_AREA, C_GREEN, NULL, 0.5, wl}, {LG_LINE, "#000", "5 3", 1.6, "per epoch (epochs.jsonl)"}};
    svg_legend(v->f, p->x + p->w, p->y - 9, it, 2);
}

/* Rows of tensors.jsonl in at most `cols` buckets: mean seq and mean share
 * of each top tensor (then all others) per bucket, into x and sh (cols x (k + 1)). */
static long tensor_buckets(const Svg *v, const int *layer, int k, double *x, double *sh, long cols)
{
    const RepTensors *t = &v->r->t;
    long nb = 0, cnt = 0;
    int last = -1;
    for (long i = 0; i < t->nrows; i++) {
        const RepTRow *row = &t->rows[i];
        if (!(isfinite(row->sumsq) && row->sumsq > 0)) continue;
        int c = rep_column((double)row->seq, v->x0, v->x1, (int)cols);
        if (c != last && nb < cols) { /* seq ascends, so columns do: nb stays <= cols */
            if (cnt) x[nb - 1] /= (double)cnt;
            for (int j = 0; cnt && j <= k; j++) sh[(nb - 1) * (k + 1) + j] /= (double)cnt;
            last = c, cnt = 0, x[nb] = 0;
            for (int j = 0; j <= k; j++) sh[nb * (k + 1) + j] = 0;
            nb++;
        }
        cnt++;
        x[nb - 1] += (double)row->seq;
        for (long e = row->first; e < row->first + row->n; e++) {
            int l = layer[t->ent[e].idx];
            sh[(nb - 1) * (k + 1) + (l < 0 ? k : l)] += t->ent[e].sq / row->sumsq;
        }
    }
    if (cnt) x[nb - 1] /= (double)cnt;
    for (int j = 0; cnt && j <= k; j++) sh[(nb - 1) * (k + 1) + j] /= (double)cnt;
    return nb;
}

/* Which tensors dominate the global norm over time: stacked shares. */
static void svg_tensors(Svg *v, Panel *p)
{
    static const char *col[REP_TOP + 1] = {C_BLUE, C_ORANGE, C_GREEN, C_PURPLE, C_SKY, "#bdbdbd"};
    const Report *r = v->r;
    int k = v->s->ntop, *layer = malloc((size_t)r->t.nnames * sizeof *layer);
    long cols = SVG_COLS / 2, nb;
    double *x = malloc((size_t)cols * sizeof *x), *sh = malloc((size_t)cols * (REP_TOP + 1) * sizeof *sh);
    if (!layer || !x || !sh) goto done;
    for (int i = 0; i < r->t.nnames; i++) layer[i] = -1;
    for (int j = 0; j < k; j++) layer[v->s->top[j].idx] = j;
    nb = tensor_buckets(v, layer, k, x, sh, cols);
    p->y0 = 0, p->y1 = 1;
    svg_panel(v, p, "Share of the squared global norm, by tensor", "share of norm\xc2\xb2", true);
    int bands = k + (r->t.nnames > k);
    for (int j = 0; j < bands; j++) { /* band j: between the sums of bands < j and <= j */
        fprintf(v->f, "<path fill=\"%s\" fill-opacity=\"0.85\" stroke=\"white\" stroke-width=\"0.4\" d=\"", col[j == k ? REP_TOP : j]);
        for (long b = 0; b < nb; b++) {
            double c = 0;
            for (int i = 0; i <= j; i++) c += sh[b * (k + 1) + i];
            fprintf(v->f, "%s%.1f %.1f", b ? "L" : "M", sx(v, x[b]), py(p, fmin(c, 1)));
        }
        for (long b = nb - 1; b >= 0; b--) {
            double c = 0;
            for (int i = 0; i < j; i++) c += sh[b * (k + 1) + i];
            fprintf(v->f, "L%.1f %.1f", sx(v, x[b]), py(p, fmin(c, 1)));
        }
        fprintf(v->f, "Z\"/>\n");
    }
    svg_panel_end(v, p);
    LgItem it[REP_TOP + 1];
    for (int j = 0; j < k; j++) it[j] = (LgItem){LG_AREA, col[j], NULL, 0.85, r->t.names[v->s->top[j].idx]};
    it[k] = (LgItem){LG_AREA, col[REP_TOP], NULL, 0.85, "others"};
    svg_legend(v->f, p->x + p->w, p->y - 9, it, bands);
done:
    free(layer);
    free(x);
    free(sh);
}

/* Above the panels, at `strip`: a triangle per event and, where one of three
 * label rows has room, a label joined to it; a kind with many events gets a
 * tick each instead. */
static void svg_events(Svg *v, double strip)
{
    const Report *r = v->r;
    double row_end[3] = {-1e9, -1e9, -1e9}, row_y[3] = {strip - 44, strip - 29, strip - 14};
    for (long i = 0; i < r->nev; i++) {
        const RepEvent *e = &r->ev[i];
        KindStyle ks = kind_style(e->kind);
        double x = sx(v, (double)e->seq);
        if (!event_first_in_column(v, i)) continue;
        if (r->kind_count[e->kind_idx] > SVG_EVENT_LINES) {
            fprintf(v->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.2\"/>\n",
                    x, strip - 9, x, strip, ks.color);
            continue;
        }
        fprintf(v->f, "<path d=\"M%.1f %.1fl-5 -8h10z\" fill=\"%s\"/>\n", x, strip, ks.color);
        char label[128];
        if (e->rollback_to >= 0)
            snprintf(label, sizeof label, "%s @%lld \xe2\x86\x92 rollback to %lld", e->kind, (long long)e->step,
                     (long long)e->rollback_to);
        else
            snprintf(label, sizeof label, "%s @%lld", e->kind, (long long)e->step);
        double w = 6.4 * (double)strlen(label), lx = x + 5;
        if (lx + w > SVG_W - SVG_MR) lx = x - 5 - w;
        for (int k = 0; k < 3; k++) {
            if (fmin(lx, x) < row_end[k] + 10) continue;
            fprintf(v->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.2\"%s%s%s/>\n",
                    x, row_y[k] - 10, x, strip - 8, ks.color, ks.dash ? " stroke-dasharray=\"" : "",
                    ks.dash ? ks.dash : "", ks.dash ? "\"" : "");
            fprintf(v->f, "<text class=\"ev\" x=\"%.1f\" y=\"%.1f\">", lx + (lx > x ? 2 : -2), row_y[k]);
            xml_text(v->f, label);
            fprintf(v->f, "</text>\n");
            row_end[k] = fmax(lx + w, x);
            break;
        }
    }
}

/* Alternating bands, one per epoch, with its number, in a strip at y. */
static void svg_epochs(Svg *v, double y)
{
    const Report *r = v->r;
    double a = v->x0;
    long n = r->nep + (v->s->has_cur ? 1 : 0);
    for (long i = 0; i < n; i++) {
        const RepEpoch *e = i < r->nep ? &r->ep[i] : &v->s->cur;
        if (!e->end_seq || (double)e->end_seq <= a) continue;
        double x = sx(v, a), w = sx(v, (double)e->end_seq) - x;
        fprintf(v->f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"15\" fill=\"%s\"/>\n", x, y, w,
                i % 2 ? "#f0f0f0" : "#e2e2e2");
        char t[48];
        if (w > 80) snprintf(t, sizeof t, "epoch %d%s", e->epoch, i >= r->nep ? " (running)" : "");
        else if (w > 16) snprintf(t, sizeof t, "%d", e->epoch);
        else t[0] = '\0';
        if (t[0]) fprintf(v->f, "<text class=\"ep\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                          x + w / 2, y + 11.5, t);
        a = (double)e->end_seq;
    }
}

/* Each resume as a dashed line across the panels at the step it continued
 * from, labelled (after a crash: "crash, resume"; a crashed timeline's
 * steps were cut from the logs, so it has no place of its own). */
static void svg_sessions(Svg *v)
{
    const Report *r = v->r;
    for (long i = 0; i < r->nses; i++) {
        const RepSession *s = &r->ses[i];
        if (strcmp(s->kind, "resume") || (double)s->seq < v->x0 || (double)s->seq > v->x1) continue;
        int crash = i > 0 && !strcmp(r->ses[i - 1].kind, "crash");
        double x = sx(v, (double)s->seq + 0.5);
        fprintf(v->f, "<line class=\"resume\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                      "stroke-width=\"1.5\" stroke-dasharray=\"6 3\"/>\n", x, v->top, x, v->bot, C_PURPLE);
        fprintf(v->f, "<text class=\"ep\" x=\"%.1f\" y=\"%.1f\" fill=\"%s\">%s at step %lld</text>\n", x + 3,
                v->top + 11, C_PURPLE, crash ? "crash, resume" : "resume", (long long)s->step);
    }
}

static void svg_head(Svg *v, double height)
{
    fprintf(v->f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%.0f\" viewBox=\"0 0 %d %.0f\">\n"
            "<style>\n"
            "text{font-family:" SVG_FONT ";fill:#222}\n"
            ".title{font-size:21px;font-weight:bold}\n.sub{font-size:13px;fill:#555}\n"
            ".pt{font-size:14.5px;font-weight:bold}\n.lg{font-size:12.5px}\n.tk{font-size:12px;fill:#555}\n"
            ".yl{font-size:13px;fill:#333}\n.xl{font-size:13.5px}\n.ep{font-size:11.5px;fill:#444}\n"
            ".ev{font-size:11.5px;fill:#222}\n.grid{stroke:#e4e4e4;stroke-width:1}\n"
            "</style>\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            SVG_W, height, SVG_W, height);
}

static void svg_title(Svg *v)
{
    const Report *r = v->r;
    const RepSummary *s = v->s;
    FILE *f = v->f;
    fprintf(f, "<title>clipd run ");
    xml_text(f, r->name);
    fprintf(f, "</title>\n<text class=\"title\" x=\"%d\" y=\"30\">clipd run \xe2\x80\x9c", SVG_ML);
    xml_text(f, r->name);
    fprintf(f, "\xe2\x80\x9d</text>\n<text class=\"sub\" x=\"%d\" y=\"50\">", SVG_ML);
    xml_text(f, r->dir);
    fprintf(f, " \xc2\xb7 %ld steps executed (%ld distinct) \xc2\xb7 %ld epochs", r->nst, s->distinct, r->nep);
    if (s->final_epoch) fprintf(f, " \xc2\xb7 final validation loss %.4f", s->final_val);
    fprintf(f, " \xc2\xb7 clip rate %.2f \xc2\xb7 %ld event%s \xc2\xb7 %ld rollback%s%s</text>\n", s->clip_rate,
            r->nev, r->nev == 1 ? "" : "s", s->rollbacks, s->rollbacks == 1 ? "" : "s",
            r->finished ? "" : " \xc2\xb7 unfinished");
}

/* The legend of event kinds (with counts) and of rollback bands. */
static void svg_event_legend(Svg *v, double y)
{
    const Report *r = v->r;
    LgItem it[10];
    char lab[10][80];
    int n = 0;
    for (int k = 0; k < r->nkinds && n < 9; k++) {
        KindStyle ks = kind_style(r->kinds[k]);
        snprintf(lab[n], sizeof lab[n], "%s (%ld%s)", r->kinds[k], r->kind_count[k],
                 r->kind_count[k] > SVG_EVENT_LINES ? ", ticks above" : "");
        it[n] = (LgItem){LG_LINE, ks.color, ks.dash, 2, lab[n]};
        n++;
    }
    char bl[96] = "steps re-run after a rollback";
    if (v->bands_total > v->nbands)
        snprintf(bl, sizeof bl, "steps re-run after a rollback (first %ld of %ld ranges drawn)", v->nbands,
                 v->bands_total);
    if (v->bands_total) it[n++] = (LgItem){LG_AREA, "#000", NULL, 0.12, bl};
    if (n == 0) it[n++] = (LgItem){LG_LINE, "#bbb", "1 3", 1, "no divergence events"};
    fprintf(v->f, "<text class=\"lg\" x=\"%d\" y=\"%.1f\" font-weight=\"bold\">Events</text>\n", SVG_ML, y);
    svg_legend(v->f, SVG_W - SVG_MR, y, it, n);
}

static void svg_xaxis(Svg *v)
{
    double xt[64];
    char b[32];
    int nx = rep_ticks(xt, 64, v->x0, v->x1, 10);
    for (int i = 0; i < nx; i++) {
        fprintf(v->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\"/>\n", sx(v, xt[i]),
                v->bot, sx(v, xt[i]), v->bot + 5);
        fprintf(v->f, "<text class=\"tk\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", sx(v, xt[i]),
                v->bot + 19, rep_tick_label(b, sizeof b, xt[i], false));
    }
    fprintf(v->f, "<text class=\"xl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step (executed steps in order: "
                  "steps re-run after a rollback count again)</text>\n",
            SVG_ML + SVG_COLS / 2.0, v->bot + 42);
}

static void svg_draw(Svg *v)
{
    const Report *r = v->r;
    Panel ps[4];
    static const double hs[4] = {230, 230, 140, 170};
    int np = r->has_tensors && v->s->ntop ? 4 : 3;
    double y = v->r->nev ? 176 : 132;
    for (int i = 0; i < np; i++) {
        ps[i] = (Panel){.x = SVG_ML, .y = y + 30, .w = SVG_COLS, .h = hs[i]};
        y = ps[i].y + ps[i].h + 12;
    }
    v->top = ps[0].y, v->bot = ps[np - 1].y + ps[np - 1].h;
    svg_head(v, v->bot + 62);
    svg_title(v);
    svg_event_legend(v, 78);
    svg_epochs(v, 90);
    svg_loss(v, &ps[0]);
    svg_norm(v, &ps[1]);
    svg_clip(v, &ps[2]);
    if (np == 4) svg_tensors(v, &ps[3]);
    svg_events(v, ps[0].y - 28);
    svg_sessions(v);
    svg_xaxis(v);
    fprintf(v->f, "</svg>\n");
}

int rep_write_svg(const Report *r, const RepSummary *s, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        return -1;
    }
    size_t n = (size_t)(r->nst ? r->nst : 1);
    Svg v = {.f = f, .r = r, .s = s, .x = malloc(n * sizeof(double)), .y = malloc(n * sizeof(double)),
             .ox = malloc((2 * SVG_COLS + 2) * sizeof(double)), .oy = malloc((2 * SVG_COLS + 2) * sizeof(double))};
    int rc = 0;
    if (!v.x || !v.y || !v.ox || !v.oy) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = -1;
    } else if (r->nst == 0) {
        svg_head(&v, 120);
        svg_title(&v);
        fprintf(f, "<text class=\"pt\" x=\"%d\" y=\"90\">No steps yet.</text>\n</svg>\n", SVG_ML);
    } else {
        for (long i = 0; i < r->nst; i++) v.x[i] = (double)r->st[i].seq;
        v.x0 = r->st[0].seq > 1 ? (double)r->st[0].seq - 1 : 0;
        v.x1 = fmax((double)r->st[r->nst - 1].seq, v.x0 + 1);
        svg_find_bands(&v);
        svg_draw(&v);
    }
    if ((ferror(f) | fclose(f)) && rc == 0) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        rc = -1;
    }
    free(v.x), free(v.y), free(v.ox), free(v.oy);
    return rc;
}

