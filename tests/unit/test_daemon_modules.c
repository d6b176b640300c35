/* The daemon's server-free modules: request parsing (api), job ids (jobs), the journal's replay and
 * compaction (and a failed append), cancel and delete against a journal without a scheduler, the
 * config table and its cross-checks, the API key comparison, and the connection guard's deadlines
 * and eviction. Expected values come from DESIGN.md
 * section 7 and the documented rules in daemon/api.h, not from running the code. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/api.h"
#include "daemon/config.h"
#include "daemon/conn_guard.h"
#include "daemon/daemon.h"
#include "daemon/http.h"
#include "daemon/jobs.h"
#include "daemon/journal.h"
#include "tests/unit/test.h"

static const pd_api_limits lim = {
    .model_name = "tiny", .max_prompt_bytes = 64, .max_width = 1280, .max_height = 720, .max_frames = 129,
    .max_steps = 100, .max_seconds = 8, .default_width = 128, .default_height = 96, .default_frames = 9,
    .default_steps = 8, .default_fps = 16, .default_guidance = 5, .default_shift = 5,
};

static int parse(const char *ct, const char *body, pd_job_request *r, pd_api_error *e) {
    return pd_api_parse_create(&lim, ct, body, strlen(body), r, e);
}

static void test_seconds_to_frames(void) {
    /* frames = 4 * round(seconds * fps / 4) + 1 */
    static const struct { const char *body; int frames; const char *seconds; } cases[] = {
        {"{\"prompt\":\"a\",\"seconds\":\"4\"}", 65, "4"},
        {"{\"prompt\":\"a\",\"seconds\":4}", 65, "4"},
        {"{\"prompt\":\"a\",\"seconds\":\"1\"}", 17, "1"},
        {"{\"prompt\":\"a\",\"seconds\":0.5}", 9, "0.5"},
        {"{\"prompt\":\"a\",\"seconds\":\"2\",\"fps\":24}", 49, "2"},
        {"{\"prompt\":\"a\",\"seconds\":\"0.1\"}", 1, "0.1"},
        {"{\"prompt\":\"a\"}", 9, "0.5625"},           /* the default 9 frames at 16 fps */
        {"{\"prompt\":\"a\",\"num_frames\":33}", 33, "2.0625"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pd_job_request r;
        pd_api_error e;
        int rc = parse("application/json", cases[i].body, &r, &e);
        PD_CHECK_MSG(rc == 0, "%s: %s", cases[i].body, e.message);
        if (rc) continue;
        PD_CHECK_MSG(r.p.frames == cases[i].frames, "%s: %d frames, want %d", cases[i].body, r.p.frames, cases[i].frames);
        PD_CHECK_MSG(!strcmp(r.seconds, cases[i].seconds), "%s: seconds '%s', want '%s'", cases[i].body, r.seconds, cases[i].seconds);
        pd_job_request_free(&r);
    }
}

static void test_fields_and_defaults(void) {
    pd_job_request r;
    pd_api_error e;
    int rc = parse(NULL, "{\"prompt\":\"a cat\",\"model\":\"tiny\",\"size\":\"832x480\",\"seed\":9007199254740993,"
                         "\"negative_prompt\":\"blur\",\"num_inference_steps\":30,\"guidance_scale\":6.5,\"flow_shift\":8,"
                         "\"sampler\":\"euler\",\"noise\":\"torch-cpu\",\"output_format\":\"mp4\",\"width\":null}", &r, &e);
    PD_CHECK_MSG(rc == 0, "%s", e.message);
    if (rc) return;
    PD_CHECK(r.p.width == 832 && r.p.height == 480 && r.p.steps == 30 && r.p.sampler == PD_SAMPLER_EULER);
    PD_CHECK(r.seed_given && r.p.seed == 9007199254740993ull && r.p.noise == PD_NOISE_TORCH_CPU);
    PD_CHECK(fabsf(r.p.guidance - 6.5f) < 1e-6f && fabsf(r.p.shift - 8.0f) < 1e-6f && r.p.fps == 16);
    PD_CHECK(!strcmp(r.p.prompt, "a cat") && !strcmp(r.p.negative_prompt, "blur") && !strcmp(r.model, "tiny"));
    pd_job_request_free(&r);
    rc = parse("application/json", "{\"prompt\":\"x\"}", &r, &e);
    PD_CHECK(rc == 0 && !r.seed_given && r.p.width == 128 && r.p.height == 96 && r.p.steps == 8 && r.p.negative_prompt == NULL &&
             r.p.sampler == PD_SAMPLER_UNIPC && r.p.noise == PD_NOISE_PHILOX);
    if (rc == 0) pd_job_request_free(&r);
}

static void test_rejections(void) {
    static const struct { const char *body; const char *param; } cases[] = {
        {"{\"prompt\":\"a\"", ""},
        {"{}", "prompt"},
        {"{\"prompt\":\"\"}", "prompt"},
        {"{\"prompt\":\"0123456789012345678901234567890123456789012345678901234567890123456789\"}", "prompt"},
        {"{\"prompt\":\"a\",\"model\":\"sora-2\"}", "model"},
        {"{\"prompt\":\"a\",\"size\":\"720x1280\"}", "height"},
        {"{\"prompt\":\"a\",\"size\":\"127x96\"}", "width"},
        {"{\"prompt\":\"a\",\"size\":\"128 x 96\"}", "size"},
        {"{\"prompt\":\"a\",\"size\":\"-128x96\"}", "size"},
        {"{\"prompt\":\"a\",\"num_frames\":8}", "num_frames"},
        {"{\"prompt\":\"a\",\"num_frames\":133}", "num_frames"},
        {"{\"prompt\":\"a\",\"seconds\":\"9\"}", "seconds"},
        {"{\"prompt\":\"a\",\"seconds\":\" 4\"}", "seconds"},
        {"{\"prompt\":\"a\",\"seconds\":[4]}", "seconds"},
        {"{\"prompt\":\"a\",\"num_inference_steps\":-1}", "num_inference_steps"},
        {"{\"prompt\":\"a\",\"num_inference_steps\":101}", "num_inference_steps"},
        {"{\"prompt\":\"a\",\"guidance_scale\":1e999}", ""},
        {"{\"prompt\":\"a\",\"flow_shift\":-1}", "flow_shift"},
        {"{\"prompt\":\"a\",\"extra\":1}", "extra"},
        /* bounds from the one validation (pd_gen_params_check), named by the request's field */
        {"{\"prompt\":\"a\",\"guidance_scale\":75}", "guidance_scale"}, /* was accepted up to 100, then failed in the worker */
        {"{\"prompt\":\"a\",\"guidance_scale\":50.5}", "guidance_scale"},
        {"{\"prompt\":\"a\",\"guidance_scale\":-0.5}", "guidance_scale"},
        {"{\"prompt\":\"a\",\"guidance_scale\":1e300}", "guidance_scale"}, /* beyond a float */
        {"{\"prompt\":\"a\",\"flow_shift\":-1e300}", "flow_shift"},
        {"{\"prompt\":\"a\",\"flow_shift\":100.5}", "flow_shift"},
        {"{\"prompt\":\"a\",\"num_frames\":0}", "num_frames"},
        {"{\"prompt\":\"a\",\"num_inference_steps\":0}", "num_inference_steps"},
        {"{\"prompt\":\"a\",\"num_inference_steps\":3000000000}", "num_inference_steps"},
        {"{\"prompt\":\"a\",\"fps\":121}", "fps"},
        {"{\"prompt\":\"a\",\"fps\":0,\"seconds\":2}", "fps"},
        {"{\"prompt\":\"a\",\"width\":0}", "width"},
        {"{\"prompt\":\" \\n\"}", "prompt"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pd_job_request r;
        pd_api_error e;
        int rc = parse("application/json", cases[i].body, &r, &e);
        PD_CHECK_MSG(rc == 400 && e.http_status == 400, "%s: rc %d", cases[i].body, rc);
        PD_CHECK_MSG(!strcmp(e.param, cases[i].param), "%s: param '%s', want '%s'", cases[i].body, e.param, cases[i].param);
        PD_CHECK(e.message[0] && !strcmp(e.type, "invalid_request_error"));
        PD_CHECK(r.prompt == NULL); /* nothing to free on failure */
    }
}

/* The edges of every bound are accepted: the API adds nothing to the one validation but the
 * server's own limits. */
static void test_bounds_accepted(void) {
    static const char *const bodies[] = {
        "{\"prompt\":\"a\",\"guidance_scale\":50,\"flow_shift\":100,\"fps\":120,\"num_inference_steps\":100}",
        "{\"prompt\":\"a\",\"guidance_scale\":0,\"flow_shift\":0.001,\"fps\":1,\"num_inference_steps\":1,\"num_frames\":1}",
        "{\"prompt\":\"a\",\"size\":\"1280x720\",\"num_frames\":129}",
        "{\"prompt\":\"a\",\"width\":16,\"height\":16}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        pd_job_request r;
        pd_api_error e;
        int rc = parse("application/json", bodies[i], &r, &e);
        PD_CHECK_MSG(rc == 0, "%s: %d %s", bodies[i], rc, e.message);
        if (rc == 0) {
            PD_CHECK_OK(pd_gen_params_check(&r.p, NULL));
            pd_job_request_free(&r);
        }
    }
}

static void test_multipart(void) {
    const char *body = "preamble\r\n--b0undary\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na dog\r\non a beach\r\n"
                       "--b0undary\r\nContent-Disposition: form-data; name=\"seconds\"\r\n\r\n1\r\n"
                       "--b0undary\r\ncontent-disposition: form-data; name=\"seed\"\r\nContent-Type: text/plain\r\n\r\n12\r\n"
                       "--b0undary\r\nContent-Disposition: form-data; name=\"guidance_scale\"\r\n\r\n2.5\r\n--b0undary--\r\n";
    pd_job_request r;
    pd_api_error e;
    int rc = parse("multipart/form-data; charset=utf-8; boundary=\"b0undary\"", body, &r, &e);
    PD_CHECK_MSG(rc == 0, "%s", e.message);
    if (rc == 0) {
        PD_CHECK(!strcmp(r.p.prompt, "a dog\r\non a beach"));
        PD_CHECK(r.p.frames == 17 && r.seed_given && r.p.seed == 12 && fabsf(r.p.guidance - 2.5f) < 1e-6f);
        pd_job_request_free(&r);
    }
    rc = parse("multipart/form-data; boundary=b0undary",
               "--b0undary\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na\r\n--b0undary\r\n"
               "Content-Disposition: form-data; name=\"num_frames\"\r\n\r\n5x\r\n--b0undary--",
               &r, &e);
    PD_CHECK(rc == 400 && !strcmp(e.param, "num_frames"));
    rc = parse("multipart/form-data", "--x\r\n", &r, &e);
    PD_CHECK(rc == 400 && !strcmp(e.code, "invalid_multipart"));
    rc = parse("multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nno end", &r, &e);
    PD_CHECK(rc == 400);
}

static void test_error_envelope(void) {
    pd_api_error e;
    PD_CHECK(pd_api_error_set(&e, 429, NULL, "queue_full", "full: %d", 3) == 429);
    char *s = pd_api_dump(pd_api_error_json(&e));
    PD_CHECK_MSG(s && !strcmp(s, "{\"error\":{\"message\":\"full: 3\",\"type\":\"rate_limit_error\",\"param\":null,\"code\":\"queue_full\"}}"),
                 "%s", s ? s : "(null)");
    free(s);
}

static void test_job_ids(void) {
    char id[PD_JOB_ID_LEN + 1], id2[PD_JOB_ID_LEN + 1];
    PD_CHECK_OK(pd_job_id_new(id));
    PD_CHECK_OK(pd_job_id_new(id2));
    PD_CHECK(strlen(id) == 38 && !strncmp(id, "video_", 6) && pd_job_id_valid(id) && strcmp(id, id2));
    PD_CHECK(pd_job_id_valid("video_0123456789abcdef0123456789abcdef"));
    static const char *const bad[] = {"", "video_", "video_0123456789abcdef0123456789abcde", "video_0123456789abcdef0123456789abcdef0",
                                      "video_0123456789ABCDEF0123456789abcdef", "video_../../../../etc/passwd/0123456789ab",
                                      "Video_0123456789abcdef0123456789abcdef", "video_0123456789abcdef0123456789abcde/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) PD_CHECK_MSG(!pd_job_id_valid(bad[i]), "'%s' accepted", bad[i]);
}

static pd_job_request small_request(const char *prompt) {
    pd_job_request r = {0};
    r.prompt = strdup(prompt);
    r.p.prompt = r.prompt;
    r.p.width = 32, r.p.height = 32, r.p.frames = 5, r.p.steps = 2, r.p.fps = 16, r.p.guidance = 5, r.p.shift = 5, r.p.seed = 77;
    snprintf(r.model, sizeof r.model, "tiny");
    snprintf(r.seconds, sizeof r.seconds, "0.3125");
    return r;
}

static void test_journal_replay(void) {
    char dir[] = "/tmp/pd_journal_XXXXXX";
    PD_CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/journal.jsonl", dir);
    pd_jobs t;
    pd_jobs_init(&t);
    pd_journal *jn;
    PD_CHECK_OK(pd_journal_open(path, &jn));
    const char *ids[4] = {"video_00000000000000000000000000000001", "video_00000000000000000000000000000002",
                          "video_00000000000000000000000000000003", "video_00000000000000000000000000000004"};
    for (int i = 0; i < 4; i++) {
        pd_job_request r = small_request(i == 1 ? "quote \" and \xc3\xa9" : "p");
        pd_job *j;
        PD_CHECK_OK(pd_jobs_add(&t, ids[i], 0, &r, &j));
        j->created_at = 1000 + i;
        if (i == 0) j->req.p.noise = PD_NOISE_TORCH_CPU;
        PD_CHECK_OK(pd_journal_append(jn, pd_journal_rec_job(j), i == 0));
    }
    PD_CHECK_OK(pd_journal_append(jn, pd_journal_rec_start(ids[0], 1010), false));
    PD_CHECK_OK(pd_journal_append(jn, pd_journal_rec_complete(ids[0], 1020, 2020), true));
    PD_CHECK_OK(pd_journal_append(jn, pd_journal_rec_start(ids[1], 1030), false));
    PD_CHECK_OK(pd_journal_append(jn, pd_journal_rec_fail(ids[2], 1040, 2040, "cancelled", "by request"), false));
    PD_CHECK_OK(pd_journal_append(jn, pd_journal_rec_delete(ids[3]), false));
    pd_journal_close(jn);
    /* A write torn by a crash. */
    FILE *f = fopen(path, "a");
    fputs("{\"op\":\"complete\",\"id\":\"video_000", f);
    fclose(f);

    pd_jobs back;
    pd_jobs_init(&back);
    size_t n, bad;
    PD_CHECK_OK(pd_journal_replay(path, &back, &n, &bad));
    PD_CHECK_MSG(n == 9 && bad == 1, "%zu records, %zu bad", n, bad);
    PD_CHECK(back.n == 3 && back.next_seq == 5); /* seq 4 was used, then deleted */
    pd_job *a = pd_jobs_find(&back, ids[0]), *b = pd_jobs_find(&back, ids[1]), *c = pd_jobs_find(&back, ids[2]);
    PD_CHECK(a && a->status == PD_JOB_COMPLETED && a->progress == 100 && a->completed_at == 1020 && a->expires_at == 2020);
    PD_CHECK(b && b->status == PD_JOB_IN_PROGRESS && b->started_at == 1030 && !strcmp(b->req.prompt, "quote \" and \xc3\xa9"));
    PD_CHECK(c && c->status == PD_JOB_FAILED && !strcmp(c->error_code, "cancelled") && !strcmp(c->error_message, "by request"));
    PD_CHECK(pd_jobs_find(&back, ids[3]) == NULL);
    PD_CHECK(a && a->req.p.width == 32 && a->req.p.frames == 5 && a->req.p.seed == 77 && a->seq == 1 && a->created_at == 1000);
    PD_CHECK(a && a->req.p.noise == PD_NOISE_TORCH_CPU && b && b->req.p.noise == PD_NOISE_PHILOX);

    /* Compaction keeps exactly the same table, one line per job. */
    PD_CHECK_OK(pd_journal_compact(path, &back));
    pd_jobs again;
    pd_jobs_init(&again);
    PD_CHECK_OK(pd_journal_replay(path, &again, &n, &bad));
    PD_CHECK(n == 3 && bad == 0 && again.n == 3);
    for (size_t i = 0; i < again.n && i < back.n; i++) {
        PD_CHECK(!strcmp(again.v[i]->id, back.v[i]->id) && again.v[i]->status == back.v[i]->status && again.v[i]->seq == back.v[i]->seq);
        PD_CHECK(again.v[i]->expires_at == back.v[i]->expires_at && !strcmp(again.v[i]->req.prompt, back.v[i]->req.prompt));
    }
    pd_jobs_free(&t);
    pd_jobs_free(&back);
    pd_jobs_free(&again);
    unlink(path);
    rmdir(dir);
}

/* Reads a whole file into a malloc'ed buffer; *n receives its length. NULL when unreadable. */
static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0;
    *n = 0;
    for (;;) {
        if (*n + 4096 > cap) {
            char *nb = realloc(buf, cap = 2 * cap + 4096);
            if (!nb) break;
            buf = nb;
        }
        size_t r = fread(buf + *n, 1, cap - *n, f);
        *n += r;
        if (r == 0) break;
    }
    fclose(f);
    return buf;
}

/* issue 13 item 2: an append that fails part-way (here the file size limit, as a full disk would) must
 * leave the journal byte for byte as it was, so the next record is not glued onto a torn one. */
static void test_journal_failed_append(void) {
    char dir[256], path[300];
    if (!pd_test_scratch_dir(dir, sizeof dir, "pd_journal_torn")) {
        PD_CHECK(0);
        return;
    }
    snprintf(path, sizeof path, "%s/journal.jsonl", dir);
    pd_jobs t;
    pd_jobs_init(&t);
    const char *ids[3] = {"video_0000000000000000000000000000000a", "video_0000000000000000000000000000000b",
                          "video_0000000000000000000000000000000c"};
    pd_job *j[3] = {0};
    for (int i = 0; i < 3; i++) {
        pd_job_request r = small_request("p");
        PD_CHECK_OK(pd_jobs_add(&t, ids[i], 0, &r, &j[i]));
    }
    pd_journal *jn;
    PD_CHECK_OK(pd_journal_open(path, &jn));
    PD_CHECK_OK(pd_journal_append(jn, pd_journal_rec_job(j[0]), true));
    size_t n0, n1;
    char *before = slurp(path, &n0);

    /* Room for 10 more bytes: the record's write is cut short, then refused (EFBIG, SIGXFSZ ignored). */
    struct rlimit old, fsize;
    getrlimit(RLIMIT_FSIZE, &old);
    fsize = old;
    fsize.rlim_cur = (rlim_t)n0 + 10;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    PD_CHECK(setrlimit(RLIMIT_FSIZE, &fsize) == 0);
    PD_CHECK_ERR(pd_journal_append(jn, pd_journal_rec_job(j[1]), true), PD_ERR_IO);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);

    char *after = slurp(path, &n1);
    PD_CHECK_MSG(before && after && n1 == n0 && !memcmp(before, after, n0), "journal changed by a failed append: %zu -> %zu bytes", n0, n1);
    PD_CHECK_OK(pd_journal_append(jn, pd_journal_rec_job(j[2]), true));
    pd_journal_close(jn);

    pd_jobs back;
    pd_jobs_init(&back);
    size_t n, bad;
    PD_CHECK_OK(pd_journal_replay(path, &back, &n, &bad));
    PD_CHECK_MSG(n == 2 && bad == 0 && back.n == 2, "%zu records, %zu bad, %zu jobs", n, bad, back.n);
    PD_CHECK(pd_jobs_find(&back, ids[0]) && pd_jobs_find(&back, ids[2]) && !pd_jobs_find(&back, ids[1]));
    free(before);
    free(after);
    pd_jobs_free(&t);
    pd_jobs_free(&back);
    pd_test_rmtree(dir);
}

/* issue 13 item 3: a cancel or delete the journal cannot record is refused (503) and changes nothing;
 * one it records survives a crash (the daemon closed without a shutdown, then opened again). Runs the
 * daemon's operations without a scheduler, on a journal written by hand. */
static void test_daemon_cancel_delete_durable(void) {
    char dir[256], path[300];
    if (!pd_test_scratch_dir(dir, sizeof dir, "pd_daemon_durable")) {
        PD_CHECK(0);
        return;
    }
    snprintf(path, sizeof path, "%s/journal.jsonl", dir);
    const char *ids[2] = {"video_000000000000000000000000000000d1", "video_000000000000000000000000000000d2"};
    pd_jobs t;
    pd_jobs_init(&t);
    pd_journal *jn;
    PD_CHECK_OK(pd_journal_open(path, &jn));
    for (int i = 0; i < 2; i++) {
        pd_job_request r = small_request("p");
        pd_job *j;
        PD_CHECK_OK(pd_jobs_add(&t, ids[i], 0, &r, &j));
        PD_CHECK_OK(pd_journal_append(jn, pd_journal_rec_job(j), true));
    }
    pd_journal_close(jn);
    pd_jobs_free(&t);

    pd_config cfg;
    pd_config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    static pd_daemon d;
    PD_CHECK_OK(pd_daemon_open(&d, &cfg));
    json_t *out = NULL;
    pd_api_error e;
    struct stat sb;
    stat(path, &sb);
    struct rlimit old, fsize;
    getrlimit(RLIMIT_FSIZE, &old);
    fsize = old;
    fsize.rlim_cur = (rlim_t)sb.st_size; /* the journal cannot grow */
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    PD_CHECK(setrlimit(RLIMIT_FSIZE, &fsize) == 0);
    int del = pd_daemon_delete_video(&d, ids[0], &out, &e);
    json_decref(out), out = NULL;
    int can = pd_daemon_cancel_video(&d, ids[1], &out, &e);
    json_decref(out), out = NULL;
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    PD_CHECK_MSG(del == 503 && can == 503, "delete %d, cancel %d with a journal that cannot grow", del, can);
    for (int i = 0; i < 2; i++) {
        PD_CHECK(pd_daemon_get_video(&d, ids[i], &out, &e) == 200 && !strcmp(json_string_value(json_object_get(out, "status")), "queued"));
        json_decref(out), out = NULL;
    }

    PD_CHECK(pd_daemon_delete_video(&d, ids[0], &out, &e) == 200);
    json_decref(out), out = NULL;
    PD_CHECK(pd_daemon_cancel_video(&d, ids[1], &out, &e) == 200);
    json_t *err = json_object_get(out, "error");
    PD_CHECK_MSG(!strcmp(json_string_value(json_object_get(out, "status")), "failed") && json_is_object(err) &&
                     !strcmp(json_string_value(json_object_get(err, "code")), "cancelled"),
                 "the cancel's answer is not failed/cancelled");
    json_decref(out), out = NULL;
    pd_daemon_close(&d); /* no shutdown: what a crash leaves */

    PD_CHECK_OK(pd_daemon_open(&d, &cfg));
    PD_CHECK(pd_daemon_get_video(&d, ids[0], &out, &e) == 404);
    json_decref(out), out = NULL;
    PD_CHECK(pd_daemon_get_video(&d, ids[1], &out, &e) == 200);
    err = json_object_get(out, "error");
    PD_CHECK_MSG(!strcmp(json_string_value(json_object_get(out, "status")), "failed") && json_is_object(err) &&
                     !strcmp(json_string_value(json_object_get(err, "code")), "cancelled"),
                 "the cancelled job came back as %s", json_string_value(json_object_get(out, "status")));
    json_decref(out);
    pd_daemon_close(&d);
    pd_test_rmtree(dir);
}

static void test_config(void) {
    pd_config c;
    pd_config_defaults(&c);
    PD_CHECK(c.port == 8000 && c.body_limit == 1048576 && !strcmp(c.data_dir, "./data") && c.n_api_keys == 0);
    char path[] = "/tmp/pd_config_XXXXXX";
    int fd = mkstemp(path);
    PD_CHECK(fd >= 0);
    const char *json = "{\"_comment\":\"x\",\"port\":9001,\"api_keys\":[\"key-aaaaaaaa\",\"key-bbbbbbbb\"],\"drain_timeout_s\":2.5}";
    PD_CHECK(write(fd, json, strlen(json)) == (ssize_t)strlen(json));
    close(fd);
    PD_CHECK_OK(pd_config_load_file(&c, path));
    PD_CHECK(c.port == 9001 && c.n_api_keys == 2 && c.drain_timeout_s == 2.5);
    setenv("PIPEDIT_PORT", "9002", 1);
    PD_CHECK_OK(pd_config_load_env(&c));
    unsetenv("PIPEDIT_PORT");
    PD_CHECK(c.port == 9002);
    char *argv[] = {"pipeditd", "--port=9003", "--data-dir", "/srv/x", "--model", "/m", "--config", path};
    PD_CHECK_OK(pd_config_load_args(&c, 8, argv));
    PD_CHECK(c.port == 9003 && !strcmp(c.data_dir, "/srv/x") && !strcmp(c.model_dir, "/m"));
    PD_CHECK_ERR(pd_config_set(&c, "port", "70000"), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_config_set(&c, "port", "80.5"), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_config_set(&c, "nonsense", "1"), PD_ERR_NOT_FOUND);
    PD_CHECK_ERR(pd_config_set(&c, "api_keys", "short"), PD_ERR_INVALID);
    PD_CHECK(c.port == 9003);
    FILE *f = fopen(path, "w");
    fputs("{\"prot\": 1}", f);
    fclose(f);
    PD_CHECK_ERR(pd_config_load_file(&c, path), PD_ERR_INVALID);
    unlink(path);
}

/* Settings the scheduler would refuse are refused when the config is checked, naming them. */
static void test_config_check(void) {
    static const struct { const char *key, *value, *word; } bad[] = {
        {"decode_workers", "2", "n_decode"},   /* with the default 2 workers: none would denoise */
        {"sp_degree", "2", "sp_degree"},       /* a group of 2 and a decoder need 3 workers */
        {"cfg_parallel", "1", "cfg_parallel"}, /* needs an even sp_degree >= 2 */
        {"device", "tpu", "device"},
        {"body_timeout_s", "5", "body_timeout_s"}, /* below the 20 s header deadline */
    };
    pd_config c;
    pd_config_defaults(&c);
    PD_CHECK_OK(pd_config_check(&c));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pd_config_defaults(&c);
        PD_CHECK_OK(pd_config_set(&c, bad[i].key, bad[i].value));
        PD_CHECK_ERR(pd_config_check(&c), PD_ERR_INVALID);
        PD_CHECK_MSG(strstr(pd_error_msg(), bad[i].word), "%s=%s: '%s'", bad[i].key, bad[i].value, pd_error_msg());
    }
    /* The table's ranges are the scheduler's. */
    pd_config_defaults(&c);
    char v[32];
    snprintf(v, sizeof v, "%d", PD_SCHED_MAX_DEVICES + 1);
    PD_CHECK_ERR(pd_config_set(&c, "workers", v), PD_ERR_INVALID);
    snprintf(v, sizeof v, "%d", PD_SCHED_MAX_QUEUE + 1);
    PD_CHECK_ERR(pd_config_set(&c, "queue_capacity", v), PD_ERR_INVALID);
    snprintf(v, sizeof v, "%d", PD_SCHED_MAX_QUEUE);
    PD_CHECK_OK(pd_config_set(&c, "queue_capacity", v));
    PD_CHECK_OK(pd_config_check(&c));
    /* More CPU workers than cores: allowed, with a warning. */
    pd_config_defaults(&c);
    snprintf(v, sizeof v, "%ld", sysconf(_SC_NPROCESSORS_ONLN) + 1);
    PD_CHECK_OK(pd_config_set(&c, "workers", v));
    char path[] = "/tmp/pd_log_XXXXXX"; /* the log goes to stderr: catch it there */
    int fd = mkstemp(path);
    PD_CHECK(fd >= 0);
    if (fd < 0) return;
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    PD_CHECK_OK(pd_config_check(&c));
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char text[512] = "";
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    text[n > 0 ? n : 0] = 0;
    PD_CHECK_MSG(strstr(text, "WARN") && strstr(text, "cores"), "log: '%s'", text);
    close(fd);
    unlink(path);
}

/* A socket pair per connection: the guard's "drop" is shutdown(2), which the peer sees as end of
 * file. */
typedef struct conn_pair {
    int fd[2];
    pd_conn_slot *slot;
} conn_pair;

static bool conn_dropped(const conn_pair *c) {
    char b;
    return recv(c->fd[1], &b, 1, MSG_DONTWAIT) == 0;
}

static void test_conn_guard(void) {
    pd_conn_guard *g = NULL;
    PD_CHECK_ERR(pd_conn_guard_create(4, 5, 2, 0, &g), PD_ERR_INVALID); /* body deadline below the header's */
    PD_CHECK_OK(pd_conn_guard_create(3, 2, 5, 0, &g));
    if (!g) return;
    conn_pair c[6];
    for (int i = 0; i < 6; i++) PD_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, c[i].fd) == 0);
    /* t=0: three connections fill the guard; a drop happens only past a deadline. */
    for (int i = 0; i < 3; i++) c[i].slot = pd_conn_guard_open(g, c[i].fd[0], 0.0 + 0.1 * i);
    pd_conn_guard_set_phase(g, c[0].slot, PD_CONN_BUSY, 0.5); /* c0 is being answered */
    pd_conn_guard_set_phase(g, c[1].slot, PD_CONN_BODY, 0.5); /* c1 sends its body */
    PD_CHECK(pd_conn_guard_sweep(g, 1.9) == 0);
    /* c2 still in HEADERS at 2.3 s: past its 2 s header deadline however it trickles. */
    PD_CHECK(pd_conn_guard_sweep(g, 2.3) == 1);
    PD_CHECK(conn_dropped(&c[2]) && !conn_dropped(&c[0]) && !conn_dropped(&c[1]));
    PD_CHECK(!pd_conn_guard_set_phase(g, c[2].slot, PD_CONN_BUSY, 2.4)); /* too late to be answered */
    pd_conn_guard_close(g, c[2].slot);
    /* c1 in BODY: its 5 s deadline counts from the request's start (0.1 s). */
    PD_CHECK(pd_conn_guard_sweep(g, 5.0) == 0);
    PD_CHECK(pd_conn_guard_sweep(g, 5.2) == 1 && conn_dropped(&c[1]));
    pd_conn_guard_close(g, c[1].slot);
    PD_CHECK(pd_conn_guard_sweep(g, 1000) == 0 && !conn_dropped(&c[0])); /* BUSY has no deadline */

    /* Keep-alive: back to HEADERS restarts the clock. */
    pd_conn_guard_set_phase(g, c[0].slot, PD_CONN_HEADERS, 1000);
    PD_CHECK(pd_conn_guard_sweep(g, 1001.9) == 0 && !conn_dropped(&c[0]));

    /* Headroom: over the limit of 3, the connection waiting longest in HEADERS makes room. */
    c[3].slot = pd_conn_guard_open(g, c[3].fd[0], 1001); /* HEADERS since 1001 */
    c[4].slot = pd_conn_guard_open(g, c[4].fd[0], 1001.5);
    pd_conn_guard_set_phase(g, c[4].slot, PD_CONN_BUSY, 1001.5);
    c[5].slot = pd_conn_guard_open(g, c[5].fd[0], 1001.6); /* a 4th: c0 (HEADERS since 1000) goes */
    PD_CHECK(conn_dropped(&c[0]) && !conn_dropped(&c[3]) && !conn_dropped(&c[4]) && !conn_dropped(&c[5]));
    pd_conn_guard_stats st;
    pd_conn_guard_stats_get(g, &st);
    PD_CHECK_MSG(st.open == 3 && st.accepted == 6 && st.expired == 2 && st.evicted == 1 && st.refused == 0,
                 "open %d accepted %llu expired %llu evicted %llu refused %llu", st.open, (unsigned long long)st.accepted,
                 (unsigned long long)st.expired, (unsigned long long)st.evicted, (unsigned long long)st.refused);
    /* Everyone else busy: the newcomer itself is refused. */
    pd_conn_guard_close(g, c[0].slot);
    pd_conn_guard_set_phase(g, c[3].slot, PD_CONN_BUSY, 1002);
    pd_conn_guard_set_phase(g, c[5].slot, PD_CONN_BUSY, 1002);
    int fd[2];
    PD_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fd) == 0);
    conn_pair late = {{fd[0], fd[1]}, NULL};
    late.slot = pd_conn_guard_open(g, late.fd[0], 1003);
    PD_CHECK(conn_dropped(&late) && !conn_dropped(&c[3]) && !conn_dropped(&c[5]));
    pd_conn_guard_stats_get(g, &st);
    PD_CHECK(st.refused == 1 && st.open == 3);
    pd_conn_guard_close(g, late.slot);
    close(late.fd[0]);
    close(late.fd[1]);
    pd_conn_guard_destroy(g); /* frees c3..c5's slots */
    for (int i = 0; i < 6; i++) close(c[i].fd[0]), close(c[i].fd[1]);
}

static void test_api_keys(void) {
    pd_config c;
    pd_config_defaults(&c);
    PD_CHECK(pd_http_key_ok(&c, NULL)); /* no keys configured: open */
    PD_CHECK_OK(pd_config_set(&c, "api_keys", "first-key-123, second-key-456"));
    PD_CHECK(pd_http_key_ok(&c, "Bearer first-key-123") && pd_http_key_ok(&c, "Bearer second-key-456"));
    PD_CHECK(!pd_http_key_ok(&c, NULL) && !pd_http_key_ok(&c, "") && !pd_http_key_ok(&c, "Bearer "));
    PD_CHECK(!pd_http_key_ok(&c, "Bearer first-key-12") && !pd_http_key_ok(&c, "Bearer first-key-1234"));
    PD_CHECK(!pd_http_key_ok(&c, "bearer first-key-123") && !pd_http_key_ok(&c, "Basic first-key-123"));
    PD_CHECK(!pd_http_key_ok(&c, "Bearer second-key-457"));
}

int main(void) {
    PD_RUN(test_seconds_to_frames);
    PD_RUN(test_fields_and_defaults);
    PD_RUN(test_rejections);
    PD_RUN(test_bounds_accepted);
    PD_RUN(test_multipart);
    PD_RUN(test_error_envelope);
    PD_RUN(test_job_ids);
    PD_RUN(test_journal_replay);
    PD_RUN(test_journal_failed_append);
    PD_RUN(test_daemon_cancel_delete_durable);
    PD_RUN(test_config);
    PD_RUN(test_config_check);
    PD_RUN(test_conn_guard);
    PD_RUN(test_api_keys);
    return pd_test_summary();
}
