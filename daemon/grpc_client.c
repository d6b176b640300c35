#include "daemon/grpc_client.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "daemon/pb_json.h"

struct pd_grpc_client {
    grpc_channel *ch;
    grpc_completion_queue *cq; /* pluck */
    grpc_metadata md[1];
    size_t n_md;
};

struct pd_grpc_stream {
    pd_grpc_client *c;
    grpc_call *call;
    grpc_metadata_array initial, trailing;
    grpc_status_code status;
    grpc_slice details;
    bool done;       /* the status op completed */
    int status_tag;  /* tags: addresses of these two */
    int msg_tag;
};

const char *pd_grpc_code_name(int code) {
    static const char *const names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                                        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                                        "UNAUTHENTICATED"};
    return code >= 0 && code < (int)(sizeof names / sizeof names[0]) ? names[code] : "?";
}

pd_status pd_grpc_client_open(const char *target, const char *api_key, pd_grpc_client **out) {
    if (!target || !*target) return pd_error_set(PD_ERR_INVALID, "gRPC target is empty (want HOST:PORT)");
    pd_grpc_client *c = calloc(1, sizeof *c);
    if (!c) return pd_error_set(PD_ERR_NOMEM, "out of memory");
    grpc_init();
    /* Each client its own connection, like one connection of an HTTP load generator. */
    grpc_arg args[] = {{.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1},
                       {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = 4 << 20}};
    grpc_channel_args ca = {sizeof args / sizeof args[0], args};
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    c->ch = grpc_channel_create(target, cr, &ca);
    grpc_channel_credentials_release(cr);
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (api_key && *api_key) {
        char bearer[300];
        snprintf(bearer, sizeof bearer, "Bearer %s", api_key);
        c->md[0].key = grpc_slice_from_static_string("authorization");
        c->md[0].value = grpc_slice_from_copied_string(bearer);
        c->n_md = 1;
    }
    *out = c;
    return PD_OK;
}

void pd_grpc_client_close(pd_grpc_client *c) {
    if (!c) return;
    grpc_channel_destroy(c->ch);
    grpc_completion_queue_shutdown(c->cq);
    while (grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(c->cq);
    if (c->n_md) grpc_slice_unref(c->md[0].value);
    free(c);
    grpc_shutdown();
}

static gpr_timespec deadline_of(double timeout_s) {
    if (timeout_s <= 0) return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_micros((int64_t)(timeout_s * 1e6), GPR_TIMESPAN));
}

static void copy_slice(char *dst, size_t cap, grpc_slice s) {
    size_t n = GRPC_SLICE_LENGTH(s) < cap - 1 ? GRPC_SLICE_LENGTH(s) : cap - 1;
    memcpy(dst, GRPC_SLICE_START_PTR(s), n);
    dst[n] = 0;
}

static void fill_result(pd_grpc_result *r, grpc_status_code st, grpc_slice details, const grpc_metadata_array *trailing) {
    memset(r, 0, sizeof *r);
    r->code = (int)st;
    copy_slice(r->details, sizeof r->details, details);
    for (size_t i = 0; i < trailing->count; i++) {
        if (!grpc_slice_str_cmp(trailing->metadata[i].key, "pipedit-error-code"))
            copy_slice(r->error_code, sizeof r->error_code, trailing->metadata[i].value);
        else if (!grpc_slice_str_cmp(trailing->metadata[i].key, "pipedit-error-param"))
            copy_slice(r->error_param, sizeof r->error_param, trailing->metadata[i].value);
    }
}

static grpc_call *new_call(pd_grpc_client *c, const char *method, double timeout_s) {
    return grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, grpc_slice_from_static_string(method), NULL,
                                    deadline_of(timeout_s), NULL);
}

static bool run_batch(pd_grpc_client *c, grpc_call *call, const grpc_op *ops, size_t n, void *tag) {
    if (grpc_call_start_batch(call, ops, n, tag, NULL) != GRPC_CALL_OK) return false;
    grpc_event ev = grpc_completion_queue_pluck(c->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE;
}

/* The first four ops of every call: send the metadata (the key), the request and the close, receive the
 * server's initial metadata into initial. */
static void request_ops(pd_grpc_client *c, grpc_byte_buffer *send, grpc_metadata_array *initial, grpc_op ops[4]) {
    memset(ops, 0, 4 * sizeof *ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = c->n_md;
    ops[0].data.send_initial_metadata.metadata = c->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = initial;
}

pd_status pd_grpc_client_unary(pd_grpc_client *c, const char *method, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp_desc, double timeout_s, ProtobufCMessage **resp,
                               pd_grpc_result *r) {
    *resp = NULL;
    grpc_call *call = new_call(c, method, timeout_s);
    grpc_byte_buffer *send = pd_pb_pack(req), *recv = NULL;
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_status_code st = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    request_ops(c, send, &initial, ops);
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.status = &st;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    pd_status ret = PD_OK;
    if (!run_batch(c, call, ops, 6, &ops[0])) ret = pd_error_set(PD_ERR_IO, "gRPC %s: the call could not be made", method);
    if (ret == PD_OK) {
        fill_result(r, st, details, &trailing);
        if (st == GRPC_STATUS_OK) {
            *resp = recv ? pd_pb_unpack(recv, resp_desc) : NULL;
            if (!*resp) ret = pd_error_set(PD_ERR_FORMAT, "gRPC %s: the answer is not a valid %s", method, resp_desc->name);
        }
    }
    if (recv) grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(call);
    return ret;
}

pd_status pd_grpc_stream_open(pd_grpc_client *c, const char *method, const ProtobufCMessage *req, double timeout_s,
                              pd_grpc_stream **out) {
    pd_grpc_stream *s = calloc(1, sizeof *s);
    if (!s) return pd_error_set(PD_ERR_NOMEM, "out of memory");
    s->c = c;
    s->call = new_call(c, method, timeout_s);
    s->details = grpc_empty_slice();
    grpc_metadata_array_init(&s->initial);
    grpc_metadata_array_init(&s->trailing);
    grpc_byte_buffer *send = pd_pb_pack(req);
    grpc_op ops[4];
    request_ops(c, send, &s->initial, ops);
    bool ok = run_batch(c, s->call, ops, 4, &s->msg_tag);
    grpc_byte_buffer_destroy(send);
    /* The status arrives whenever the stream ends; its op stays outstanding until then. */
    grpc_op st;
    memset(&st, 0, sizeof st);
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.status = &s->status;
    st.data.recv_status_on_client.status_details = &s->details;
    st.data.recv_status_on_client.trailing_metadata = &s->trailing;
    if (grpc_call_start_batch(s->call, &st, 1, &s->status_tag, NULL) != GRPC_CALL_OK) {
        s->done = true; /* nothing outstanding to wait for */
        ok = false;
    }
    if (!ok) {
        pd_grpc_stream_close(s);
        return pd_error_set(PD_ERR_IO, "gRPC %s: the call could not be made", method);
    }
    *out = s;
    return PD_OK;
}

static void wait_status(pd_grpc_stream *s) {
    if (s->done) return;
    grpc_completion_queue_pluck(s->c->cq, &s->status_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    s->done = true;
}

int pd_grpc_stream_next(pd_grpc_stream *s, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg, pd_grpc_result *r) {
    *msg = NULL;
    grpc_byte_buffer *recv = NULL;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &recv;
    if (!s->done && run_batch(s->c, s->call, &op, 1, &s->msg_tag) && recv) {
        *msg = pd_pb_unpack(recv, desc);
        grpc_byte_buffer_destroy(recv);
        return *msg ? 1 : -1;
    }
    wait_status(s);
    fill_result(r, s->status, s->details, &s->trailing);
    return 0;
}

void pd_grpc_stream_close(pd_grpc_stream *s) {
    if (!s) return;
    if (!s->done) grpc_call_cancel(s->call, NULL);
    wait_status(s);
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->initial);
    grpc_metadata_array_destroy(&s->trailing);
    grpc_call_unref(s->call);
    free(s);
}
