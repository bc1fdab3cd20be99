/* fuzz_report: clipd-report (daemon/report/, all but its main.c) through
 * report_main on an untrusted run directory. Input
 * split at NUL bytes: steps.jsonl, events.jsonl, epochs.jsonl,
 * tensors.jsonl, config.yaml (a missing part: the file is absent). Runs
 * `clipd-report DIR --json --svg DIR/out.svg` and `clipd-report DIR`, stdout
 * to /dev/null. A fresh /tmp directory per input, removed before returning. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/report/report.h"
#include "tests/fuzz/fuzz_util.h"

static const char *const files[] = {"steps.jsonl", "events.jsonl", "epochs.jsonl", "tensors.jsonl",
                                    "config.yaml"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int once;
    if (!once) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd < 0 || dup2(fd, 1) < 0) abort();
        close(fd);
        once = 1;
    }
    char dir[64], svg[96];
    fz_mkdtemp(dir, sizeof dir);
    snprintf(svg, sizeof svg, "%s/out.svg", dir);
    const uint8_t *p = data, *end = data + size;
    for (size_t i = 0; i < sizeof files / sizeof *files && p <= end; i++) {
        const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
        size_t n = nul ? (size_t)(nul - p) : (size_t)(end - p);
        if (fz_write(dir, files[i], p, n)) abort();
        p += n + 1;
    }
    char a0[] = "clipd-report", a2[] = "--json", a3[] = "--svg";
    char *argv1[] = {a0, dir, a2, a3, svg, NULL};
    char *argv2[] = {a0, dir, NULL};
    int rc = report_main(5, argv1);
    if (rc < 0 || rc > 2) abort();
    rc = report_main(2, argv2);
    if (rc < 0 || rc > 2) abort();
    fflush(stdout);
    clearerr(stdout);
    fz_rm_rf(dir);
    return 0;
}
