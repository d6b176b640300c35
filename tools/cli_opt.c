#include "tools/cli_opt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

bool pd_cli_opt_int(const char *cmd, const char *opt, const char *v, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < lo || n > hi) {
        fprintf(stderr, "%s: %s must be an integer in %ld..%ld, got \"%s\"\n", cmd, opt, lo, hi, v);
        return false;
    }
    *out = (int)n;
    return true;
}
