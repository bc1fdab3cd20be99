/* cli: the command line of clipd-report (see report.h): the options, the
 * summary as text or --json, --svg, --html. Exit 0 on success or an empty run,
 * 2 when the input is not a readable run (one line naming the file and line),
 * 1 when a written file or standard output cannot be written. */
#include "daemon/report/internal.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: clipd-report RUN_DIR [--json] [--svg FILE] [--max-norm X]\n"
               "       clipd-report --html FILE RUN_DIR [RUN_DIR ...]   (up to 8 runs overlaid)\n"
               "  Summarises a clipd run directory (steps, epochs, events, tensors .jsonl).\n"
               "  --json        the summary as one JSON object on stdout\n"
               "  --svg FILE    also draw the run as one self-contained SVG\n"
               "  --html FILE   draw the runs on one self-contained HTML page (no script, nothing fetched)\n"
               "  --max-norm X  the clip threshold (default: clip.max_norm of RUN_DIR/config.yaml)\n"
               "Exit 0 on success, 2 when RUN_DIR is not a readable run, 1 when FILE or stdout cannot be written.\n");
}

typedef struct {
    const char *dir, *svg;
    bool json;
    double max_norm;
    bool answered; /* --help: printed, nothing else to do */
    bool usage;    /* a usage error: print the usage after err */
} Args;

enum { OPT_JSON = 1, OPT_SVG, OPT_MAX_NORM };
static const struct option long_opts[] = {{"help", no_argument, NULL, 'h'},
                                          {"json", no_argument, NULL, OPT_JSON},
                                          {"svg", required_argument, NULL, OPT_SVG},
                                          {"max-norm", required_argument, NULL, OPT_MAX_NORM},
                                          {NULL, 0, NULL, 0}};

/* Only the exact spellings are options: no abbreviations, no --opt=value,
 * no bundled short options, no '--' end-of-options mark. */
static bool exact_option(const char *w)
{
    if (!strcmp(w, "-h")) return true;
    for (const struct option *o = long_opts; o->name; o++)
        if (w[0] == '-' && w[1] == '-' && !strcmp(w + 2, o->name)) return true;
    return false;
}

/* 0, or -1 with err filled (empty when only the usage is to be printed). */
static int parse_args(Args *a, int argc, char **argv, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    a->max_norm = NAN;
    err[0] = '\0';
    opterr = 0; /* the messages are ours */
    optind = 0; /* start over (glibc: also forgets a previous parse) */
    while (!a->answered) {
        int at = optind < 1 ? 1 : optind;
        if (at >= argc) break;
        const char *w = argv[at];
        if (w[0] == '-' && w[1] && !exact_option(w)) {
            a->usage = true;
            return snprintf(err, errlen, "%s: unknown option or missing value", w), -1;
        }
        int o = getopt_long(argc, argv, "+:h", long_opts, NULL);
        if (o == -1) { /* '+': stops at a word that is no option: RUN_DIR */
            const char *s = argv[optind++];
            if (a->dir) return snprintf(err, errlen, "%s: one RUN_DIR only (already %s)", s, a->dir), -1;
            a->dir = s;
        } else if (o == ':' || o == '?') {
            a->usage = true;
            return snprintf(err, errlen, "%s: unknown option or missing value", w), -1;
        } else if (o == 'h') {
            a->answered = true;
        } else if (o == OPT_JSON) {
            a->json = true;
        } else if (o == OPT_SVG) {
            a->svg = optarg;
        } else if (o == OPT_MAX_NORM) {
            char *end;
            errno = 0;
            a->max_norm = strtod(optarg, &end);
            if (end == optarg || *end || errno || !(a->max_norm > 0) || !isfinite(a->max_norm))
                return snprintf(err, errlen, "--max-norm: expected a positive number, got \"%s\"", optarg), -1;
        }
    }
    if (!a->answered && !a->dir) return a->usage = true, -1;
    return 0;
}

/* Everything printed reached stdout; else says why on stderr. */
static bool stdout_ok(void)
{
    errno = 0;
    if (fflush(stdout) == 0 && !ferror(stdout)) return true;
    fprintf(stderr, "clipd-report: writing standard output: %s\n", strerror(errno ? errno : EIO));
    return false;
}

/* --html FILE RUN_DIR [RUN_DIR ...] */
static int main_html(int argc, char **argv)
{
    const char *path = argc > 2 ? argv[2] : NULL;
    int n = argc - 3;
    if (!path || n < 1 || n > 8) {
        fprintf(stderr, "clipd-report: --html FILE RUN_DIR [RUN_DIR ...]: 1 to 8 run directories\n");
        return 2;
    }
    static Report runs[8];
    const Report *rp[8];
    char err[REP_PATH_MAX + 512];
    int rc = 0, loaded = 0;
    for (; loaded < n && !rc; loaded++) {
        if (argv[3 + loaded][0] == '-') {
            fprintf(stderr, "clipd-report: --html: %s: options go before --html\n", argv[3 + loaded]);
            rc = 2;
        } else if (rep_load(&runs[loaded], argv[3 + loaded], NAN, err, sizeof err)) {
            fprintf(stderr, "clipd-report: %s\n", err);
            rc = 2;
        }
        rp[loaded] = &runs[loaded];
    }
    if (!rc && rep_write_html(rp, n, path, err, sizeof err)) {
        fprintf(stderr, "clipd-report: %s\n", err);
        rc = 1;
    }
    if (!rc) printf("html: wrote %s (%d run%s)\n", path, n, n == 1 ? "" : "s");
    for (int i = 0; i < loaded; i++) rep_free(&runs[i]);
    if (!stdout_ok()) rc = 1;
    return rc;
}

int report_main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--html")) return main_html(argc, argv);
    Args a;
    char err[REP_PATH_MAX + 512];
    if (parse_args(&a, argc, argv, err, sizeof err)) { /* bad usage: exit 2 */
        if (err[0]) fprintf(stderr, "clipd-report: %s\n", err);
        if (a.usage) usage(stderr);
        return 2;
    }
    if (a.answered) return usage(stdout), stdout_ok() ? 0 : 1;
    const char *dir = a.dir, *svg = a.svg;
    bool json = a.json;
    int rc = 0;
    static Report r;
    RepSummary s;
    if (rep_load(&r, dir, a.max_norm, err, sizeof err)) {
        fprintf(stderr, "clipd-report: %s\n", err);
        rep_free(&r);
        return 2;
    }
    rep_summarise(&r, &s);
    if (svg && rep_write_svg(&r, &s, svg, err, sizeof err)) {
        fprintf(stderr, "clipd-report: %s\n", err);
        rc = 1;
    }
    if (r.nst == 0) rep_note(&r, "no steps yet: %s/steps.jsonl is empty", r.dir);
    if (json) {
        if (rep_print_json(&r, &s) && !ferror(stdout)) {
            fprintf(stderr, "clipd-report: out of memory building the JSON summary\n");
            rc = 1;
        }
    } else if (r.nst == 0) printf("clipd report: %s: no steps yet (steps.jsonl is empty)\n", r.dir);
    else rep_print_text(&r, &s);
    if (svg && rc == 0) fprintf(json ? stderr : stdout, "svg: wrote %s\n", svg);
    if (!stdout_ok()) rc = 1;
    rep_free(&r);
    return rc;
}
