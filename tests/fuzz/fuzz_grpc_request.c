/* libFuzzer target: the gRPC API's request edge on arbitrary bytes. The first byte picks a request
 * message of proto/pipedit/v1/video.proto; the rest is decoded as it (protobuf-c), turned into the
 * REST JSON (daemon/pb_json.h) and, for CreateVideoRequest, validated by the HTTP API's parser
 * (pd_api_parse_create_object) with the same checks as fuzz_request; every JSON produced must turn
 * back into a message that encodes and decodes again. */
#include <stdint.h>

#include "daemon/pb_json.h"
#include "pipedit/v1/video.pb-c.h"
#include "tests/fuzz/request_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const ProtobufCMessageDescriptor *const descs[] = {
        &pipedit__v1__create_video_request__descriptor, &pipedit__v1__list_videos_request__descriptor,
        &pipedit__v1__download_video_request__descriptor, &pipedit__v1__video__descriptor,
        &pipedit__v1__list_videos_response__descriptor,
    };
    if (size == 0) return 0;
    const ProtobufCMessageDescriptor *d = descs[data[0] % (sizeof descs / sizeof descs[0])];
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1);
    if (!m) return 0;
    const char *bad = NULL;
    json_t *o = pd_pb_to_json(m, &bad);
    if (o) {
        if (d == &pipedit__v1__create_video_request__descriptor) {
            pd_job_request req;
            pd_api_error err;
            int rc = pd_api_parse_create_object(&pd_fuzz_limits, o, &req, &err);
            pd_fuzz_check_request(rc, &req, &err);
        }
        pd_pb_pool pl = {0};
        ProtobufCMessage *back = pd_pb_pool_alloc(&pl, d->sizeof_message);
        if (!back || !pd_pb_from_json(d, o, back, &pl)) abort();
        size_t n = protobuf_c_message_get_packed_size(back);
        uint8_t *buf = malloc(n ? n : 1);
        if (!buf) abort();
        protobuf_c_message_pack(back, buf);
        ProtobufCMessage *again = protobuf_c_message_unpack(d, NULL, n, buf);
        if (!again) abort();
        protobuf_c_message_free_unpacked(again, NULL);
        free(buf);
        pd_pb_pool_free(&pl);
        json_decref(o);
    } else if (!bad) {
        abort(); /* out of memory is not expected here */
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
