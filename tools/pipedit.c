/* pipedit: the command-line tool. Each subcommand lives in its own tools/cmd_<name>.c and is listed
 * in tools/commands.h. */
#include <stdio.h>
#include <string.h>

#include "tools/commands.h"

static const pd_command pd_commands[] = {
#define PD_COMMAND(name, fn, help) {name, fn, help},
#include "tools/command_list.h"
#undef PD_COMMAND
};

static void usage(FILE *f) {
    fprintf(f, "usage: pipedit <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof pd_commands / sizeof pd_commands[0]; i++)
        fprintf(f, "  %-12s %s\n", pd_commands[i].name, pd_commands[i].help);
    fprintf(f, "\n'pipedit <command> --help' describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof pd_commands / sizeof pd_commands[0]; i++)
        if (!strcmp(argv[1], pd_commands[i].name)) return pd_commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "pipedit: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
