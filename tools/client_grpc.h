/* `pipedit client --grpc HOST:PORT ...`: the client's actions over the gRPC API (proto/pipedit/v1)
 * instead of HTTP, with the same output: JSON on stdout (the messages in the REST field names),
 * progress on stderr, errors as "pipedit client: <STATUS>: <message>" on stderr. Built only with gRPC. */
#ifndef PD_TOOLS_CLIENT_GRPC_H
#define PD_TOOLS_CLIENT_GRPC_H

#include <jansson.h>

/* Runs action (create, get, list, cancel, delete, wait, download, models) against target. create_req
 * is the create request as REST JSON (create only; borrowed); argv[from..] hold the action's other
 * arguments as for HTTP. Returns the exit status: 0, 1 (failed), 2 (usage). */
int pd_client_grpc(const char *target, const char *api_key, const char *action, json_t *create_req, int argc, char **argv, int from);

#endif
