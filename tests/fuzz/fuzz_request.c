/* libFuzzer target: the create-request parser (daemon/api.h) on arbitrary bodies.
 * The first input byte picks the content type: even = application/json, odd = multipart/form-data
 * with boundary "XyZ"; the rest is the body. Checks that every input is either accepted with fields
 * inside the one validation's bounds (pd_gen_params_check, what the workers apply) and the limits of
 * request_check.h, or refused with a 4xx status and a non-empty message. */
#include <stdint.h>

#include "tests/fuzz/request_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const char *ct = data[0] & 1 ? "multipart/form-data; boundary=XyZ" : "application/json";
    pd_job_request req;
    pd_api_error err;
    int rc = pd_api_parse_create(&pd_fuzz_limits, ct, (const char *)data + 1, size - 1, &req, &err);
    pd_fuzz_check_request(rc, &req, &err);
    return 0;
}
