#include "daemon/api.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_PARTS 32

int pd_api_error_set(pd_api_error *e, int http_status, const char *param, const char *code, const char *fmt, ...) {
    memset(e, 0, sizeof *e);
    e->http_status = http_status;
    const char *type = "invalid_request_error";
    if (http_status == 401) type = "authentication_error";
    else if (http_status == 429) type = "rate_limit_error";
    else if (http_status >= 500) type = "server_error";
    snprintf(e->type, sizeof e->type, "%s", type);
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    /* Messages may quote client bytes (a JSON parser's "near '...'"): keep them printable ASCII so the
     * envelope is always valid JSON. */
    for (char *c = e->message; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) *c = '?';
    for (char *c = e->param; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) *c = '?';
    return http_status;
}

json_t *pd_api_error_json(const pd_api_error *e) {
    return json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", e->message, "type", e->type, "param",
                     e->param[0] ? json_string(e->param) : json_null(), "code",
                     e->code[0] ? json_string(e->code) : json_null());
}

char *pd_api_dump(json_t *v) {
    if (!v) return NULL;
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(v);
    return s;
}

/* ---- multipart/form-data -> a JSON object of the same fields ---- */

static const char *ci_find(const char *s, const char *needle) {
    size_t n = strlen(needle);
    for (; *s; s++)
        if (!strncasecmp(s, needle, n)) return s;
    return NULL;
}

/* Copies the boundary parameter of a multipart content type into out (RFC 2046: 1-70 chars). */
static int boundary_of(const char *ct, char *out, size_t cap, pd_api_error *err) {
    const char *b = ci_find(ct, "boundary=");
    if (!b) return pd_api_error_set(err, 400, NULL, "invalid_multipart", "multipart/form-data needs a boundary parameter");
    b += 9;
    size_t n = 0;
    if (*b == '"') {
        b++;
        while (b[n] && b[n] != '"') n++;
    } else {
        while (b[n] && b[n] != ';' && !isspace((unsigned char)b[n])) n++;
    }
    if (n == 0 || n > 70 || n >= cap) return pd_api_error_set(err, 400, NULL, "invalid_multipart", "the multipart boundary must be 1 to 70 characters");
    memcpy(out, b, n);
    out[n] = 0;
    return 0;
}

/* Fields whose form text becomes a JSON number (seconds is accepted as text anyway). */
static json_t *form_value(const char *name, const char *v, size_t n) {
    static const char *const ints[] = {"seed", "num_inference_steps", "num_frames", "fps", "width", "height"};
    static const char *const reals[] = {"guidance_scale", "flow_shift"};
    json_t *s = json_stringn(v, n); /* NULL when not UTF-8 */
    if (!s || n == 0 || n > 40) return s;
    char buf[48];
    memcpy(buf, v, n);
    buf[n] = 0;
    char *end;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (strcmp(name, ints[i])) continue;
        errno = 0;
        long long x = strtoll(buf, &end, 10);
        if (*end || errno || isspace((unsigned char)buf[0])) return s;
        json_decref(s);
        return json_integer(x);
    }
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++) {
        if (strcmp(name, reals[i])) continue;
        errno = 0;
        double x = strtod(buf, &end);
        if (*end || errno || isspace((unsigned char)buf[0]) || !isfinite(x)) return s;
        json_decref(s);
        return json_real(x);
    }
    return s;
}

static int parse_multipart(const char *ct, const char *body, size_t len, json_t **out, pd_api_error *err) {
    char bnd[80], delim[84];
    int rc = boundary_of(ct, bnd, sizeof bnd, err);
    if (rc) return rc;
    size_t dl = (size_t)snprintf(delim, sizeof delim, "--%s", bnd);
    const char *end = body + len;
    const char *p = memmem(body, len, delim, dl);
    if (!p || (p != body && (p < body + 2 || memcmp(p - 2, "\r\n", 2))))
        return pd_api_error_set(err, 400, NULL, "invalid_multipart", "the multipart body does not start with its boundary");
    json_t *obj = json_object();
    if (!obj) return pd_api_error_set(err, 503, NULL, "out_of_memory", "out of memory");
    int parts = 0;
    for (;;) {
        p += dl;
        if (end - p >= 2 && !memcmp(p, "--", 2)) break; /* closing delimiter */
        if (end - p < 2 || memcmp(p, "\r\n", 2)) goto bad;
        p += 2;
        const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hend) goto bad;
        /* Content runs to the next CRLF + delimiter. */
        const char *content = hend + 4;
        const char *q = content;
        const char *next = NULL;
        while ((q = memmem(q, (size_t)(end - q), delim, dl))) {
            if (q - 2 >= content && !memcmp(q - 2, "\r\n", 2)) {
                next = q;
                break;
            }
            q++;
        }
        if (!next) goto bad;
        size_t clen = (size_t)(next - 2 - content);
        if (++parts > MAX_PARTS) {
            json_decref(obj);
            return pd_api_error_set(err, 400, NULL, "invalid_multipart", "more than %d multipart fields", MAX_PARTS);
        }
        /* Headers: find Content-Disposition's name (and refuse file uploads). */
        char name[64] = "";
        bool is_file = false;
        const char *h = p;
        while (h < hend) {
            const char *eol = memmem(h, (size_t)(hend + 2 - h), "\r\n", 2);
            if (!eol) eol = hend;
            size_t hl = (size_t)(eol - h);
            if (hl > 20 && !strncasecmp(h, "content-disposition:", 20)) {
                char line[512];
                if (hl >= sizeof line) goto bad;
                memcpy(line, h, hl);
                line[hl] = 0;
                const char *nm = ci_find(line, "; name=\"");
                if (!nm) nm = ci_find(line, ";name=\"");
                if (nm) {
                    nm = strchr(nm, '"') + 1;
                    const char *ne = strchr(nm, '"');
                    if (!ne || (size_t)(ne - nm) >= sizeof name || ne == nm) goto bad;
                    memcpy(name, nm, (size_t)(ne - nm));
                    name[ne - nm] = 0;
                }
                if (ci_find(line, "filename=")) is_file = true;
            }
            h = eol + 2;
        }
        if (!name[0]) goto bad;
        for (const char *ch = name; *ch; ch++)
            if ((unsigned char)*ch < 0x21 || (unsigned char)*ch > 0x7e) {
                json_decref(obj);
                return pd_api_error_set(err, 400, NULL, "invalid_multipart", "multipart field names must be printable ASCII");
            }
        if (is_file) {
            json_decref(obj);
            return pd_api_error_set(err, 400, name, "unsupported_parameter", "file uploads ('%s') are not supported", name);
        }
        if (json_object_get(obj, name)) {
            json_decref(obj);
            return pd_api_error_set(err, 400, name, "duplicate_parameter", "field '%s' appears twice", name);
        }
        json_t *v = form_value(name, content, clen);
        if (!v) {
            json_decref(obj);
            return pd_api_error_set(err, 400, name, "invalid_value", "field '%s' is not valid UTF-8", name);
        }
        json_object_set_new(obj, name, v);
        p = next;
    }
    *out = obj;
    return 0;
bad:
    json_decref(obj);
    return pd_api_error_set(err, 400, NULL, "invalid_multipart", "malformed multipart/form-data body");
}

/* ---- field validation ---- */

/* Reads an integer field into *v (untouched when absent). Returns 0 or the error status. */
static int get_int(json_t *root, const char *key, long long lo, long long hi, long long *v, bool *given, pd_api_error *err) {
    json_t *x = json_object_get(root, key);
    if (given) *given = false;
    if (!x || json_is_null(x)) return 0;
    if (!json_is_integer(x)) return pd_api_error_set(err, 400, key, "invalid_type", "'%s' must be an integer", key);
    long long n = json_integer_value(x);
    if (n < lo || n > hi) return pd_api_error_set(err, 400, key, "out_of_range", "'%s' must be between %lld and %lld, got %lld", key, lo, hi, n);
    *v = n;
    if (given) *given = true;
    return 0;
}

/* A double as a float, out-of-range values as infinities (a plain cast of those is undefined). */
static float to_float(double v) { return v > FLT_MAX ? INFINITY : v < -FLT_MAX ? -INFINITY : (float)v; }

/* Reads a number field into *v (untouched when absent); its bounds are the one validation's. */
static int get_real(json_t *root, const char *key, double *v, pd_api_error *err) {
    json_t *x = json_object_get(root, key);
    if (!x || json_is_null(x)) return 0;
    if (!json_is_number(x)) return pd_api_error_set(err, 400, key, "invalid_type", "'%s' must be a number", key);
    *v = json_number_value(x);
    return 0;
}

/* Reads a string field; *v stays NULL when absent. max_bytes bounds the length. */
static int get_str(json_t *root, const char *key, size_t max_bytes, const char **v, pd_api_error *err) {
    json_t *x = json_object_get(root, key);
    *v = NULL;
    if (!x || json_is_null(x)) return 0;
    if (!json_is_string(x)) return pd_api_error_set(err, 400, key, "invalid_type", "'%s' must be a string", key);
    if (json_string_length(x) != strlen(json_string_value(x)))
        return pd_api_error_set(err, 400, key, "invalid_value", "'%s' must not contain NUL characters", key);
    if (json_string_length(x) > max_bytes)
        return pd_api_error_set(err, 400, key, "string_too_long", "'%s' is %zu bytes; the limit is %zu", key, json_string_length(x), max_bytes);
    *v = json_string_value(x);
    return 0;
}

static int parse_size(const char *s, long long *w, long long *h) {
    char *end;
    if (!isdigit((unsigned char)s[0])) return -1;
    errno = 0;
    long long a = strtoll(s, &end, 10);
    if (errno || (*end != 'x' && *end != 'X') || !isdigit((unsigned char)end[1])) return -1;
    long long b = strtoll(end + 1, &end, 10);
    if (errno || *end) return -1;
    *w = a;
    *h = b;
    return 0;
}

/* The server's own ceiling on a field the one validation also bounds. */
static int check_max(const char *key, long long v, int max, pd_api_error *err) {
    if (v > max) return pd_api_error_set(err, 400, key, "out_of_range", "'%s' is %lld; this server's limit is %d", key, v, max);
    return 0;
}

static int validate(const pd_api_limits *lim, json_t *root, pd_job_request *out, pd_api_error *err) {
    static const char *const known[] = {"prompt", "model", "seconds", "size", "negative_prompt", "seed",
                                        "num_inference_steps", "guidance_scale", "flow_shift", "num_frames",
                                        "fps", "width", "height", "sampler", "noise", "output_format"};
    if (!json_is_object(root)) return pd_api_error_set(err, 400, NULL, "invalid_json", "the request body must be a JSON object");
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) ok |= !strcmp(key, known[i]);
        if (!ok) {
            char shown[48];
            snprintf(shown, sizeof shown, "%s", key);
            for (char *c = shown; *c; c++)
                if ((unsigned char)*c < 32 || (unsigned char)*c > 126) *c = '?';
            return pd_api_error_set(err, 400, shown, "unknown_parameter", "unknown parameter '%s'", shown);
        }
    }
    /* Types and the server's own limits here; the request's bounds are pd_gen_params_check's. */
    int rc;
    const char *prompt, *neg, *model, *size, *sampler, *noise, *fmt;
    size_t maxp = (size_t)lim->max_prompt_bytes;
    if ((rc = get_str(root, "prompt", maxp, &prompt, err))) return rc;
    if (!prompt) return pd_api_error_set(err, 400, "prompt", "missing_required_parameter", "'prompt' is required");
    if ((rc = get_str(root, "negative_prompt", maxp, &neg, err))) return rc;
    if ((rc = get_str(root, "model", 256, &model, err))) return rc;
    if (model && strcmp(model, lim->model_name))
        return pd_api_error_set(err, 400, "model", "model_not_found", "model '%.100s' is not served here; this server serves '%s'", model,
                                lim->model_name);
    if ((rc = get_str(root, "sampler", 32, &sampler, err))) return rc;
    pd_sampler_kind sk = PD_SAMPLER_UNIPC;
    if (sampler && pd_sampler_kind_parse(sampler, &sk) != PD_OK)
        return pd_api_error_set(err, 400, "sampler", "invalid_value", "'sampler' must be \"unipc\", \"euler\" or \"dpm++\"");
    if ((rc = get_str(root, "noise", 32, &noise, err))) return rc;
    pd_noise_kind nk = PD_NOISE_PHILOX;
    if (noise && pd_noise_kind_parse(noise, &nk) != PD_OK)
        return pd_api_error_set(err, 400, "noise", "invalid_value", "'noise' must be \"philox\" or \"torch-cpu\"");
    if ((rc = get_str(root, "output_format", 32, &fmt, err))) return rc;
    if (fmt && strcmp(fmt, "mp4")) return pd_api_error_set(err, 400, "output_format", "invalid_value", "'output_format' must be \"mp4\"");

    long long w = lim->default_width, h = lim->default_height;
    if ((rc = get_str(root, "size", 32, &size, err))) return rc;
    if (size && parse_size(size, &w, &h))
        return pd_api_error_set(err, 400, "size", "invalid_value", "'size' must look like \"832x480\" (width x height)");
    long long wx = w, hx = h;
    bool wg, hg;
    if ((rc = get_int(root, "width", INT32_MIN, INT32_MAX, &wx, &wg, err))) return rc;
    if ((rc = get_int(root, "height", INT32_MIN, INT32_MAX, &hx, &hg, err))) return rc;
    if (size && ((wg && wx != w) || (hg && hx != h)))
        return pd_api_error_set(err, 400, "size", "invalid_value", "'size' disagrees with 'width'/'height'");
    w = wx;
    h = hx;
    if ((rc = check_max("width", w, lim->max_width, err)) || (rc = check_max("height", h, lim->max_height, err))) return rc;

    long long fps = lim->default_fps, frames = lim->default_frames, steps = lim->default_steps, seed = 0;
    bool frames_given, seed_given;
    if ((rc = get_int(root, "fps", INT32_MIN, INT32_MAX, &fps, NULL, err))) return rc;
    if ((rc = get_int(root, "num_frames", INT32_MIN, INT32_MAX, &frames, &frames_given, err))) return rc;
    if ((rc = check_max("num_frames", frames, lim->max_frames, err))) return rc;
    if ((rc = get_int(root, "num_inference_steps", INT32_MIN, INT32_MAX, &steps, NULL, err))) return rc;
    if ((rc = check_max("num_inference_steps", steps, lim->max_steps, err))) return rc;
    if ((rc = get_int(root, "seed", 0, INT64_MAX, &seed, &seed_given, err))) return rc;

    json_t *sec = json_object_get(root, "seconds");
    bool seconds_given = sec && !json_is_null(sec);
    char seconds[24] = "";
    if (seconds_given) {
        if (frames_given) return pd_api_error_set(err, 400, "seconds", "invalid_value", "give 'seconds' or 'num_frames', not both");
        double s;
        if (json_is_number(sec)) {
            s = json_number_value(sec);
        } else if (json_is_string(sec) && json_string_length(sec) > 0 && json_string_length(sec) < 24) {
            char *end;
            const char *t = json_string_value(sec);
            errno = 0;
            s = strtod(t, &end);
            if (*end || errno || isspace((unsigned char)t[0])) s = NAN;
        } else {
            return pd_api_error_set(err, 400, "seconds", "invalid_type", "'seconds' must be a number or a string such as \"4\"");
        }
        if (!isfinite(s) || s <= 0 || s > lim->max_seconds)
            return pd_api_error_set(err, 400, "seconds", "out_of_range", "'seconds' must be above 0 and at most %g", lim->max_seconds);
        if (fps >= 1) frames = 4 * llround(s * (double)fps / 4.0) + 1; /* else the validation below refuses fps */
        if (frames > lim->max_frames)
            return pd_api_error_set(err, 400, "seconds", "out_of_range", "%g seconds at %lld fps is %lld frames; the limit is %d", s, fps, frames,
                                    lim->max_frames);
        snprintf(seconds, sizeof seconds, "%g", s);
    } else if (fps >= 1) { /* else the validation below refuses fps */
        snprintf(seconds, sizeof seconds, "%g", (double)frames / (double)fps);
    }
    double guidance = lim->default_guidance, shift = lim->default_shift;
    if ((rc = get_real(root, "guidance_scale", &guidance, err))) return rc;
    if ((rc = get_real(root, "flow_shift", &shift, err))) return rc;

    /* Every field is now in range of its C type: the one validation decides the rest. */
    pd_gen_params p = {.prompt = prompt, .negative_prompt = neg, .seed = (uint64_t)seed, .width = (int)w, .height = (int)h,
                       .frames = (int)frames, .steps = (int)steps, .guidance = to_float(guidance), .shift = to_float(shift),
                       .sampler = sk, .noise = nk, .fps = (int)fps};
    pd_gen_field bad;
    if (pd_gen_params_check(&p, &bad) != PD_OK) {
        const char *param = bad == PD_GEN_FIELD_FRAMES && seconds_given ? "seconds" : pd_gen_field_name(bad);
        return pd_api_error_set(err, 400, param, "invalid_value", "%s", pd_error_msg());
    }

    memset(out, 0, sizeof *out);
    out->prompt = strdup(prompt);
    out->negative_prompt = neg ? strdup(neg) : NULL;
    if (!out->prompt || (neg && !out->negative_prompt)) {
        pd_job_request_free(out);
        return pd_api_error_set(err, 503, NULL, "out_of_memory", "out of memory");
    }
    out->p = p;
    out->p.prompt = out->prompt;
    out->p.negative_prompt = out->negative_prompt;
    out->seed_given = seed_given;
    snprintf(out->model, sizeof out->model, "%s", lim->model_name);
    snprintf(out->seconds, sizeof out->seconds, "%s", seconds);
    return 0;
}

int pd_api_parse_create(const pd_api_limits *lim, const char *content_type, const char *body, size_t len,
                        pd_job_request *out, pd_api_error *err) {
    memset(out, 0, sizeof *out);
    json_t *root = NULL;
    int rc;
    if (content_type && !strncasecmp(content_type, "multipart/form-data", 19)) {
        if ((rc = parse_multipart(content_type, body, len, &root, err))) return rc;
    } else {
        json_error_t jerr;
        root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
            return pd_api_error_set(err, 400, NULL, "invalid_json", "the body is not valid JSON (line %d, column %d): %s", jerr.line,
                                    jerr.column, jerr.text);
    }
    rc = validate(lim, root, out, err);
    json_decref(root);
    return rc;
}

int pd_api_parse_create_object(const pd_api_limits *lim, json_t *root, pd_job_request *out, pd_api_error *err) {
    memset(out, 0, sizeof *out);
    return validate(lim, root, out, err);
}

int pd_api_check_list(long limit, const char *order, const char *after, pd_api_error *err) {
    if (limit < 1 || limit > 100) return pd_api_error_set(err, 400, "limit", "invalid_value", "'limit' must be an integer from 1 to 100");
    if (order && strcmp(order, "asc") && strcmp(order, "desc"))
        return pd_api_error_set(err, 400, "order", "invalid_value", "'order' must be \"asc\" or \"desc\"");
    if (after && *after && !pd_job_id_valid(after)) return pd_api_error_set(err, 400, "after", "invalid_value", "'after' must be a video id");
    return 0;
}

json_t *pd_api_video_json(const pd_job *j, int queue_position) {
    const pd_gen_params *p = &j->req.p;
    char size[32];
    snprintf(size, sizeof size, "%dx%d", p->width, p->height);
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "object", json_string("video"));
    json_object_set_new(o, "model", json_string(j->req.model));
    json_object_set_new(o, "status", json_string(pd_job_status_name(j->status)));
    json_object_set_new(o, "progress", json_integer(j->progress));
    json_object_set_new(o, "created_at", json_integer((json_int_t)j->created_at));
    json_object_set_new(o, "completed_at", j->completed_at > 0 ? json_integer((json_int_t)j->completed_at) : json_null());
    json_object_set_new(o, "expires_at", j->expires_at > 0 ? json_integer((json_int_t)j->expires_at) : json_null());
    json_object_set_new(o, "error", j->status == PD_JOB_FAILED ? json_pack("{s:s, s:s}", "code", j->error_code, "message", j->error_message)
                                                              : json_null());
    json_object_set_new(o, "seconds", json_string(j->req.seconds));
    json_object_set_new(o, "size", json_string(size));
    json_object_set_new(o, "remixed_from_video_id", json_null());
    json_object_set_new(o, "prompt", json_string(j->req.prompt ? j->req.prompt : ""));
    json_object_set_new(o, "negative_prompt", j->req.negative_prompt ? json_string(j->req.negative_prompt) : json_null());
    json_object_set_new(o, "seed", json_integer((json_int_t)p->seed));
    json_object_set_new(o, "num_frames", json_integer(p->frames));
    json_object_set_new(o, "fps", json_integer(p->fps));
    json_object_set_new(o, "width", json_integer(p->width));
    json_object_set_new(o, "height", json_integer(p->height));
    json_object_set_new(o, "num_inference_steps", json_integer(p->steps));
    json_object_set_new(o, "guidance_scale", json_real(p->guidance));
    json_object_set_new(o, "flow_shift", json_real(p->shift));
    json_object_set_new(o, "sampler", json_string(pd_sampler_kind_name(p->sampler)));
    json_object_set_new(o, "noise", json_string(pd_noise_kind_name(p->noise)));
    json_object_set_new(o, "stage", j->status == PD_JOB_IN_PROGRESS && j->stage >= 0 ? json_string(pd_stage_name((pd_stage)j->stage)) : json_null());
    json_object_set_new(o, "queue_position", queue_position >= 0 ? json_integer(queue_position) : json_null());
    json_object_set_new(o, "estimated_completed_at", json_null()); /* set for live jobs by the daemon */
    return o;
}
