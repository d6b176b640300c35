#include <stdio.h>

#include "tools/commands.h"

int pd_cmd_dit(int argc, char **argv) {
    fprintf(stderr, "pipedit dit: not built yet\n");
    return 1;
}
