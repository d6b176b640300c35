/* Shared by the request fuzz targets: an accepted create request must hold only values inside the
 * one validation's bounds (pd_gen_params_check, what the workers apply) and the limits below; a refused
 * one a 4xx status and a message. Aborts otherwise, which libFuzzer reports as a crash. */
#ifndef PD_FUZZ_REQUEST_CHECK_H
#define PD_FUZZ_REQUEST_CHECK_H

#include <stdlib.h>
#include <string.h>

#include "daemon/api.h"

static const pd_api_limits pd_fuzz_limits = {
    .model_name = "tiny", .max_prompt_bytes = 256, .max_width = 1280, .max_height = 1280, .max_frames = 129,
    .max_steps = 100, .max_seconds = 20, .default_width = 128, .default_height = 96, .default_frames = 9,
    .default_steps = 8, .default_fps = 16, .default_guidance = 5, .default_shift = 5,
};

/* rc, req and err as pd_api_parse_create left them; frees req when it was accepted. */
static inline void pd_fuzz_check_request(int rc, pd_job_request *req, const pd_api_error *err) {
    if (rc == 0) {
        const pd_gen_params *p = &req->p;
        if (pd_gen_params_check(p, NULL) != PD_OK || strlen(p->prompt) > 256 || p->width > 1280 || p->height > 1280 ||
            p->frames > 129 || p->steps > 100)
            abort();
        json_t *e = pd_api_error_json(err); /* never read uninitialised fields when formatting */
        json_decref(e);
        pd_job_request_free(req);
    } else {
        if (rc < 400 || rc > 499 || rc != err->http_status || !err->message[0]) abort();
        json_t *e = pd_api_error_json(err);
        if (!e) abort();
        json_decref(e);
    }
}

#endif
