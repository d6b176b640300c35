#include <stdio.h>

#include "tools/commands.h"

int pd_cmd_mkmodel(int argc, char **argv) {
    fprintf(stderr, "pipedit mkmodel: not built yet\n");
    return 1;
}
