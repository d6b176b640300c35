/* Option values shared by the CLI commands (`pipedit dit`, `pipedit decode`, `pipedit generate`);
 * --device has its own module, tools/device_opt.h. */
#ifndef PD_TOOLS_CLI_OPT_H
#define PD_TOOLS_CLI_OPT_H

#include <stdbool.h>

/* Parses v, the value of option opt, as a decimal integer in lo..hi (lo <= hi, both within int) into
 * *out. Anything else (no digits, trailing characters, out of range or overflowing) prints
 * "<cmd>: <opt> must be an integer in <lo>..<hi>, got "<v>"" on stderr, leaves *out alone and
 * returns false. */
bool pd_cli_opt_int(const char *cmd, const char *opt, const char *v, long lo, long hi, int *out);

#endif
