/* A small client of pipeditd's gRPC API on the gRPC C core library, for `pipedit client --grpc` and
 * the gRPC benchmark's load generator. One client is one channel (its own TCP connection) and one
 * completion queue; use a client from one thread at a time. Messages are protobuf-c messages of
 * proto/pipedit/v1/video.proto (daemon/pb_json.h converts them to and from the REST JSON).
 *
 * Calls answer PD_OK once the call has ended, whatever its status: the status is in the
 * pd_grpc_result (code 0 = OK), with the daemon's error code and field from the trailing metadata.
 * They answer an error status only when the call could not be made at all (out of memory, a message
 * that cannot be decoded: PD_ERR_FORMAT). */
#ifndef PD_DAEMON_GRPC_CLIENT_H
#define PD_DAEMON_GRPC_CLIENT_H

#include <protobuf-c/protobuf-c.h>

#include "base/status.h"

typedef struct pd_grpc_client pd_grpc_client;
typedef struct pd_grpc_stream pd_grpc_stream;

typedef struct pd_grpc_result {
    int code;              /* grpc_status_code: 0 OK, 3 INVALID_ARGUMENT, 5 NOT_FOUND, ... */
    char details[512];     /* the status message */
    char error_code[48];   /* trailing "pipedit-error-code", "" when absent */
    char error_param[64];  /* trailing "pipedit-error-param", "" when absent */
} pd_grpc_result;

/* Connects lazily to target ("host:port"); api_key (NULL = none) goes as "authorization: Bearer
 * <key>" on every call. PD_ERR_NOMEM, PD_ERR_INVALID for an empty target. */
pd_status pd_grpc_client_open(const char *target, const char *api_key, pd_grpc_client **out);
void pd_grpc_client_close(pd_grpc_client *c);

/* The name of a status code ("NOT_FOUND"). */
const char *pd_grpc_code_name(int code);

/* One unary call of method ("/pipedit.v1.VideoService/GetVideo"), timeout_s <= 0 = none. On OK,
 * *resp receives the answer decoded as resp_desc (free it with protobuf_c_message_free_unpacked(*resp,
 * NULL)); otherwise *resp is NULL. */
pd_status pd_grpc_client_unary(pd_grpc_client *c, const char *method, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp_desc, double timeout_s, ProtobufCMessage **resp,
                               pd_grpc_result *r);

/* Starts a server-streaming call: sends req and half-closes. */
pd_status pd_grpc_stream_open(pd_grpc_client *c, const char *method, const ProtobufCMessage *req, double timeout_s,
                              pd_grpc_stream **out);
/* The next message, decoded as desc, in *msg (free as above): answers 1; at the end of the stream
 * answers 0 with the final status in *r; -1 when a message cannot be decoded. */
int pd_grpc_stream_next(pd_grpc_stream *s, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg, pd_grpc_result *r);
/* Ends the stream: cancels it if the server has not finished it, and frees it. */
void pd_grpc_stream_close(pd_grpc_stream *s);

#endif
