/* `pipedit worker`: one worker process of pipeditd's scheduler (see workers/worker.h). */
#include "tools/commands.h"
#include "workers/worker.h"

int pd_cmd_worker(int argc, char **argv) { return pd_worker_main(argc, argv, pd_worker_pipeline_stages()); }
