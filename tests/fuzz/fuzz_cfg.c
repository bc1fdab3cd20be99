/* fuzz_cfg: the YAML config loader and `--set` overrides on untrusted bytes.
 * Input: YAML text, then optionally a NUL and up to 8 NUL-separated
 * `section.key=value` strings for cfg_set_arg. When everything loaded, the
 * config is validated and printed to /dev/null. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfg.h"

static FILE *devnull;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!devnull && !(devnull = fopen("/dev/null", "w"))) abort();
    const uint8_t *nul = memchr(data, 0, size);
    size_t ylen = nul ? (size_t)(nul - data) : size;
    Config c;
    char err[1024];
    cfg_defaults(&c);
    /* A copy of exactly ylen bytes so ASan catches any read past len. */
    char *yaml = malloc(ylen ? ylen : 1);
    if (!yaml) return 0;
    memcpy(yaml, data, ylen);
    int ok = cfg_load_string(&c, yaml, ylen, "fuzz.yaml", err, sizeof err) == 0;
    free(yaml);
    if (nul) {
        size_t rest = size - ylen - 1;
        char *args = malloc(rest + 1); /* NUL-terminated pieces */
        if (!args) return 0;
        memcpy(args, nul + 1, rest);
        args[rest] = 0;
        char *p = args, *end = args + rest;
        for (int i = 0; i < 8 && p <= end; i++) {
            if (cfg_set_arg(&c, p, err, sizeof err) != 0) ok = 0;
            p += strlen(p) + 1;
        }
        free(args);
    }
    if (ok && cfg_validate(&c, err, sizeof err) == 0) {
        cfg_print(&c, devnull);
        (void)cfg_hash(&c);
        (void)cfg_param_count(&c);
        char names[64][32];
        (void)cfg_tensor_names(&c, names, 64);
    }
    return 0;
}
