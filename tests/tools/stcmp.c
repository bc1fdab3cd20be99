/* stcmp: compare the tensors of two safetensors files written by clipd.
 *   stcmp A B TOL   exit 0 when the JSON headers match and every float differs
 *                   by at most TOL * max(1, max |value|) per tensor-file;
 *                   prints the worst absolute and relative difference.
 * An independent reader for the tests: it parses only the 8-byte length. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) free(b), b = NULL;
    if (b) b[len] = 0; /* the header is searched as a string */
    fclose(f);
    *n = (size_t)len;
    return b;
}

static uint64_t hdr_len(const unsigned char *b)
{
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = (h << 8) | b[i];
    return h;
}

int main(int argc, char **argv)
{
    if (argc != 4) return fprintf(stderr, "usage: stcmp A B TOL\n"), 2;
    size_t na, nb;
    unsigned char *a = slurp(argv[1], &na), *b = slurp(argv[2], &nb);
    if (!a || !b || na < 8 || nb < 8) return fprintf(stderr, "stcmp: cannot read inputs\n"), 2;
    uint64_t ha = hdr_len(a), hb = hdr_len(b);
    if (ha + 8 > na || hb + 8 > nb) return fprintf(stderr, "stcmp: bad header length\n"), 2;
    /* Compare the tensor table: the header from the first tensor on (metadata may differ). */
    const char *ta = strstr((const char *)a + 8, "},\""), *tb = strstr((const char *)b + 8, "},\"");
    if (!ta || !tb || na - 8 - ha != nb - 8 - hb ||
        strncmp(ta, tb, (size_t)((const char *)a + 8 + ha - ta)) != 0)
        return fprintf(stderr, "stcmp: tensor tables differ\n"), 1;
    size_t n = (na - 8 - ha) / 4;
    const float *fa = (const float *)(a + 8 + ha), *fb = (const float *)(b + 8 + hb);
    double maxabs = 0, maxval = 0;
    size_t worst = 0;
    size_t nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(fa[i]) || !isfinite(fb[i])) {
            if (nonfinite++ == 0) worst = i;
            continue;
        }
        double d = fabs((double)fa[i] - (double)fb[i]);
        if (d > maxabs) maxabs = d, worst = i;
        if (fabs(fa[i]) > maxval) maxval = fabs(fa[i]);
    }
    if (nonfinite) {
        printf("stcmp: %zu non-finite values, first at %zu\n", nonfinite, worst);
        return 1;
    }
    double tol = atof(argv[3]), rel = maxabs / fmax(1.0, maxval);
    printf("stcmp: %zu floats, max abs diff %.3g at %zu, relative to max |w| %.3g: %.3g (tol %.3g)\n",
           n, maxabs, worst, maxval, rel, tol);
    free(a), free(b);
    return rel <= tol ? 0 : 1;
}
