/* libFuzzer target: the create-request parser (daemon/api.h) on arbitrary bodies.
 * The first input byte picks the content type: even = application/json, odd = multipart/form-data
 * with boundary "XyZ"; the rest is the body. Checks that every input is either accepted with fields
 * inside the one validation's bounds (pd_gen_params_check, what the workers apply) and the limits
 * below, or refused with a 4xx status and a non-empty message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    static const pd_api_limits lim = {
        .model_name = "tiny", .max_prompt_bytes = 256, .max_width = 1280, .max_height = 1280, .max_frames = 129,
        .max_steps = 100, .max_seconds = 20, .default_width = 128, .default_height = 96, .default_frames = 9,
        .default_steps = 8, .default_fps = 16, .default_guidance = 5, .default_shift = 5,
    };
    const char *ct = data[0] & 1 ? "multipart/form-data; boundary=XyZ" : "application/json";
    pd_job_request req;
    pd_api_error err;
    int rc = pd_api_parse_create(&lim, ct, (const char *)data + 1, size - 1, &req, &err);
    if (rc == 0) {
        const pd_gen_params *p = &req.p;
        if (pd_gen_params_check(p, NULL) != PD_OK || strlen(p->prompt) > 256 || p->width > 1280 || p->height > 1280 ||
            p->frames > 129 || p->steps > 100)
            abort();
        json_t *e = pd_api_error_json(&err); /* never read uninitialised fields when formatting */
        json_decref(e);
        pd_job_request_free(&req);
    } else {
        if (rc < 400 || rc > 499 || rc != err.http_status || !err.message[0]) abort();
        json_t *e = pd_api_error_json(&err);
        if (!e) abort();
        json_decref(e);
    }
    return 0;
}
