/* cli: the command line of clipd-report (see report.h): the options, the
 * summary as text or --json, --svg, --html. Exit 0 on success or an empty run,
 * 2 when the input is not a readable run (one line naming the file and line),
 * 1 when a written file or standard output cannot be written. */
#include "daemon/report/internal.h"

#include <errno.h>
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

static int parse_args(int argc, char **argv, const char **dir, const char **svg, bool *json, double *max_norm)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return usage(stdout), 1;
        if (strcmp(a, "--json") == 0) *json = true;
        else if (strcmp(a, "--svg") == 0 && i + 1 < argc) *svg = argv[++i];
        else if (strcmp(a, "--max-norm") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            *max_norm = strtod(argv[++i], &end);
            if (end == argv[i] || *end || errno || !(*max_norm > 0) || !isfinite(*max_norm)) {
                fprintf(stderr, "clipd-report: --max-norm: expected a positive number, got \"%s\"\n", argv[i]);
                return -1;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "clipd-report: %s: unknown option or missing value\n", a);
            return usage(stderr), -1;
        } else if (*dir) {
            fprintf(stderr, "clipd-report: %s: one RUN_DIR only (already %s)\n", a, *dir);
            return -1;
        } else *dir = a;
    }
    if (!*dir) return usage(stderr), -1;
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
    const char *dir = NULL, *svg = NULL;
    bool json = false;
    double max_norm = NAN;
    int rc = parse_args(argc, argv, &dir, &svg, &json, &max_norm);
    if (rc > 0) return stdout_ok() ? 0 : 1;
    if (rc) return 2;
    static Report r;
    RepSummary s;
    char err[REP_PATH_MAX + 512];
    if (rep_load(&r, dir, max_norm, err, sizeof err)) {
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
