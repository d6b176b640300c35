/* The pipedit CLI's subcommands. Each takes (argc, argv) with argv[0] the command name and returns
 * the process exit status: 0 success, 1 failure (message on stderr), 2 usage error. */
#ifndef PD_TOOLS_COMMANDS_H
#define PD_TOOLS_COMMANDS_H

typedef struct pd_command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} pd_command;

#define PD_COMMAND(name, fn, help) int fn(int argc, char **argv);
#include "tools/command_list.h"
#undef PD_COMMAND

#endif
