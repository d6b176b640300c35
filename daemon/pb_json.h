/* Protobuf messages (protobuf-c) <-> the JSON objects of the HTTP API, by field name, through
 * protobuf-c's reflection, and <-> gRPC byte buffers. The gRPC API's fields carry the REST names (proto/pipedit/v1/video.proto),
 * so one conversion serves every message: the gRPC server turns requests into the JSON the daemon's
 * operations validate and answers into messages; the gRPC client prints answers as JSON.
 *
 * Presence: a one-field oneof (the wire form of proto3 `optional`) is present when chosen; a plain
 * proto3 scalar when it is not zero or empty. Enums are written as their value names and read from
 * a name ending in "_" + the upper-cased text ("in_progress" -> VIDEO_STATUS_IN_PROGRESS). */
#ifndef PD_DAEMON_PB_JSON_H
#define PD_DAEMON_PB_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <grpc/byte_buffer.h>
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

/* Allocations that live as long as a message built by pd_pb_from_json. Zero-initialise. */
typedef struct pd_pb_pool {
    void **p;
    size_t n, cap;
} pd_pb_pool;

/* bytes of zeroed memory owned by pl; NULL when out of memory. */
void *pd_pb_pool_alloc(pd_pb_pool *pl, size_t bytes);
/* Frees everything pl owns. */
void pd_pb_pool_free(pd_pb_pool *pl);

/* The present fields of m as a JSON object (strings, integers, doubles, bools, enums, messages and
 * repeated messages; bytes are left out). A string that is not UTF-8, or a double JSON cannot hold
 * (NaN, infinity), names its field in *bad and answers NULL; NULL with *bad untouched means out of
 * memory. A new reference. */
json_t *pd_pb_to_json(const ProtobufCMessage *m, const char **bad);

/* Initialises m as a desc message and fills it from the JSON object o: fields o lacks, holds as null
 * or with another JSON type stay unset. Strings point into o, which must outlive m; sub-messages
 * and arrays come from pl. False when out of memory. */
bool pd_pb_from_json(const ProtobufCMessageDescriptor *desc, json_t *o, ProtobufCMessage *m, pd_pb_pool *pl);

/* A message serialised into a new gRPC byte buffer (the caller destroys it), and back: the message of
 * type desc in bb (free it with protobuf_c_message_free_unpacked; NULL when bb cannot be read or is not
 * such a message). For the gRPC server and client alike. */
grpc_byte_buffer *pd_pb_pack(const ProtobufCMessage *m);
ProtobufCMessage *pd_pb_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc);

#endif
