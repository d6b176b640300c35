/* The HTTP API's data edge: turning a POST /v1/videos body into a validated pd_job_request, and jobs
 * into the JSON clients read (the OpenAI Video object and the OpenAI error envelope).
 *
 * Nothing here touches the network or the daemon's state, so the fuzz target and unit tests call
 * the parser directly.
 *
 * Request fields (JSON body, or multipart/form-data with one text part per field): prompt
 * (required), model (must be the served model's name), seconds ("4" or 4), size ("WxH"), and the
 * extensions negative_prompt, seed (0..2^63-1; absent = random), num_inference_steps, guidance_scale
 * (<= 1 turns classifier-free guidance off), flow_shift, num_frames, fps, width, height, sampler
 * ("unipc", "euler" or "dpm++"), noise ("philox" or "torch-cpu"), output_format ("mp4"). Null means
 * absent. Unknown fields are errors.
 * Bounds: the parser checks types and this server's own limits (pd_api_limits: max_prompt_bytes,
 *   max_width/height/frames/steps, max_seconds); every other bound is pd_gen_params_check's
 *   (models/pipeline.h), the one validation the workers and `pipedit generate` apply too, whose
 *   failing field becomes the error's param.
 * Frames from seconds: frames = 4 * round(seconds * fps / 4) + 1, fps being the request's fps or the
 *   model's (4 s at 16 fps -> 65 frames); give seconds or num_frames, not both. size and
 *   width/height may both be given only when they agree. */
#ifndef PD_DAEMON_API_H
#define PD_DAEMON_API_H

#include <stddef.h>

#include <jansson.h>

#include "daemon/jobs.h"

/* What a request is checked against and what fills the fields it leaves out. */
typedef struct pd_api_limits {
    const char *model_name;
    int max_prompt_bytes;
    int max_width, max_height, max_frames, max_steps;
    double max_seconds;
    int default_width, default_height, default_frames, default_steps, default_fps;
    float default_guidance, default_shift;
} pd_api_limits;

/* An error as the API reports it: HTTP status plus the OpenAI envelope fields. */
typedef struct pd_api_error {
    int http_status;  /* 400, 401, 404, 413, 429, 503, ... */
    char type[40];    /* "invalid_request_error", "authentication_error", ... */
    char param[64];   /* offending field, "" = null */
    char code[48];    /* stable machine-readable code, "" = null */
    char message[384];
} pd_api_error;

/* Fills e (printf-style message) and returns e->http_status. type is derived from the status. */
int pd_api_error_set(pd_api_error *e, int http_status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* {"error":{"message","type","param","code"}}; a new reference (NULL only when out of memory). */
json_t *pd_api_error_json(const pd_api_error *e);

/* Parses and validates a create request. content_type may be NULL (JSON is assumed); a multipart
 * body needs its boundary parameter. On success fills out (free with pd_job_request_free) and
 * returns 0; otherwise fills err and returns its HTTP status (400, or 413 for too-long fields), and
 * out holds nothing to free. The seed is left to the caller when out->seed_given is false. */
int pd_api_parse_create(const pd_api_limits *lim, const char *content_type, const char *body, size_t len,
                        pd_job_request *out, pd_api_error *err);

/* The same validation for a request whose fields are already a JSON object (the gRPC front end
 * builds one from its message). root stays the caller's; results as pd_api_parse_create. */
int pd_api_parse_create_object(const pd_api_limits *lim, json_t *root, pd_job_request *out, pd_api_error *err);

/* Checks list paging arguments: limit 1..100, order NULL/"asc"/"desc", after NULL/""/a video id.
 * Returns 0, or fills err (400 naming the argument) and returns 400. */
int pd_api_check_list(long limit, const char *order, const char *after, pd_api_error *err);

/* The Video object for job j. queue_position < 0 leaves it null. A new reference (NULL: no memory). */
json_t *pd_api_video_json(const pd_job *j, int queue_position);

/* Serialises v compactly into a malloc'ed string and drops the reference to v; NULL when out of
 * memory. */
char *pd_api_dump(json_t *v);

#endif
