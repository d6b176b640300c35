/* The scheduler with real worker processes, real sockets and real shared memory, but synthetic stages:
 * this program re-executes itself as `worker` with a pd_worker_stages table whose stages sleep a set
 * time per step (PD_FAKE_STEP_MS per denoise step, PD_FAKE_FRAME_MS per decoded latent frame) and
 * pass data that the test can check: the context is derived from the prompt, the latent from the
 * context and the seed, and the "video" file holds the latent's sum, so a completed job proves that
 * every tensor crossed shared memory intact (the split rules themselves: tests/unit/test_plan_online.c).
 * What is checked:
 *  - N = 2: 4 jobs complete, outputs correct, decode of job k overlaps denoise of job k + 1;
 *  - N = 1: one worker runs everything and jobs do not overlap;
 *  - a SIGKILLed worker fails its job with "worker_died", comes back, and the next job completes;
 *  - a stopped (silent) worker is declared dead after worker_timeout_s;
 *  - a worker stuck inside a step (alive, heartbeating, no progress) is killed after stall_timeout_s,
 *    its job failed with "worker_stuck", and it is restarted; a slow worker that keeps advancing
 *    (steps, or only the counter its heartbeats carry) is left alone however long its job takes;
 *  - a full queue gives PD_ERR_BUSY, queue positions, duplicate ids, cancel of a queued job;
 *  - cancel of a running job ends it as "cancelled" within a step;
 *  - a running job past its deadline fails with "deadline_exceeded" within a step;
 *  - admission by cost refuses what cannot finish within max_job_seconds or fit the memory limit,
 *    and queued jobs get completion estimates in queue order;
 *  - a request the worker rejects fails with its code; drain; the split re-plans from measured times
 *    (the live plan without a model: the fake model folder has no configs), and with a model (the
 *    tiny preset's configs) from the model corrected by the warm-up times;
 *  - a worker sending garbage, a wrong protocol version or an oversized frame is dropped and restarted
 *    (the scheduler never becomes ready on it and does not crash). */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "models/model_dir.h"
#include "models/presets.h"
#include "scheduler/scheduler.h"
#include "scheduler/split.h"
#include "tests/unit/sched_events.h"
#include "tests/unit/test.h"
#include "workers/worker.h"

/* ---- the synthetic stages (run in the worker processes) ---- */

static int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    return v ? atoi(v) : dflt;
}

/* The value every element of a prompt's context row r, column c holds. */
static float fake_ctx_value(const char *prompt, int r, int c) {
    unsigned h = 0;
    for (const char *p = prompt; *p; p++) h = h * 31u + (unsigned char)*p;
    return (float)(h % 1000u) * 0.01f + (float)r + 0.125f * (float)c;
}
static int fake_ctx_rows(const char *prompt) { return 1 + (int)(strlen(prompt) % 5); }

static double tensor_sum(const pd_tensor *t) {
    double s = 0;
    const float *d = t->data;
    for (int64_t i = 0; i < pd_tensor_numel(t); i++) s += d[i];
    return s;
}

static void fake_latent_shape(void *self, const pd_gen_params *p, int64_t shape[4]) {
    shape[0] = 16;
    shape[1] = (p->frames - 1) / 4 + 1;
    shape[2] = p->height / 8;
    shape[3] = p->width / 8;
}

static pd_status fake_load(void *self, const char *model_dir, const char *device, int threads, unsigned parts) {
    /* Tell the test which process holds which parts, so it can kill or stop one. */
    const char *dir = getenv("PD_FAKE_PID_DIR");
    if (dir) {
        char path[512], tmp[520];
        snprintf(path, sizeof path, "%s/%s.pid", dir, parts == PD_PART_VAE ? "decode" : "denoise");
        snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
        FILE *f = fopen(tmp, "w");
        if (f) {
            fprintf(f, "%d\n", (int)getpid());
            fclose(f);
            rename(tmp, path);
        }
    }
    return PD_OK;
}

static pd_status fake_validate(void *self, const pd_gen_params *p) {
    if (p->width > 4096) return pd_error_set(PD_ERR_INVALID, "width %d is over the model's limit of 4096", p->width);
    return PD_OK;
}

static pd_status fake_encode(void *self, const char *prompt, pd_tensor *out) {
    int64_t shape[2] = {fake_ctx_rows(prompt), 8}; // (L, text_dim)
    PD_TRY(pd_tensor_alloc(out, PD_DTYPE_F32, 2, shape));
    float *d = out->data;
    for (int r = 0; r < shape[0]; r++)
        for (int c = 0; c < 8; c++) d[r * 8 + c] = fake_ctx_value(prompt, r, c);
    return PD_OK;
}

/* Prompts that start with "stall" hang in step 3 for good (a wedged kernel: the heartbeat thread runs
 * on, cancel is ignored); with "substep" every step takes 4 x PD_FAKE_STEP_MS and reports its progress
 * in 20 slices through pd_worker_note_progress only (like one DiT evaluation after another). */
static pd_status fake_denoise(void *self, const pd_gen_params *p, const pd_tensor *cond, const pd_tensor *uncond,
                              pd_tensor *latent, pd_progress_fn progress, void *ud, const atomic_int *cancel) {
    int ms = env_int("PD_FAKE_STEP_MS", 10);
    const bool stall = !strncmp(p->prompt, "stall", 5), substep = !strncmp(p->prompt, "substep", 7);
    for (int s = 1; s <= p->steps; s++) {
        PD_TRY(pd_stop_check(cancel, "before step %d", s));
        while (stall && s == 3) sleep_ms(100);
        if (substep) {
            for (int k = 0; k < 20; k++) {
                sleep_ms(ms / 5);
                pd_worker_note_progress(ud);
            }
        } else {
            sleep_ms(ms);
        }
        progress(ud, PD_STAGE_DENOISE, s, p->steps);
    }
    int64_t shape[4];
    fake_latent_shape(self, p, shape);
    PD_TRY(pd_tensor_alloc(latent, PD_DTYPE_F32, 4, shape));
    float v = (float)(p->seed % 100) + (float)tensor_sum(cond) + (uncond ? 2.0f * (float)tensor_sum(uncond) : 0.0f);
    float *d = latent->data;
    for (int64_t i = 0; i < pd_tensor_numel(latent); i++) d[i] = v;
    return PD_OK;
}

static pd_status fake_decode(void *self, const pd_tensor *latent, const pd_gen_params *p, const char *mp4, const char *thumb,
                             pd_progress_fn progress, void *ud, const atomic_int *cancel) {
    int ms = env_int("PD_FAKE_FRAME_MS", 10);
    int t = (int)latent->shape[1];
    for (int f = 1; f <= t; f++) {
        PD_TRY(pd_stop_check(cancel, "before frame %d", f));
        sleep_ms(ms);
        progress(ud, PD_STAGE_DECODE, f, t);
    }
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.part", mp4);
    FILE *fp = fopen(tmp, "w");
    if (!fp) return pd_error_set(PD_ERR_IO, "open %s", tmp);
    fprintf(fp, "%.3f %lld %d\n", tensor_sum(latent), (long long)pd_tensor_numel(latent), p->fps);
    fclose(fp);
    rename(tmp, mp4);
    if (thumb) {
        fp = fopen(thumb, "w");
        if (fp) fclose(fp);
    }
    return PD_OK;
}

static void fake_unload(void *self) {}

static const pd_worker_stages fake_stages = {
    .load = fake_load,
    .validate = fake_validate,
    .encode_text = fake_encode,
    .denoise = fake_denoise,
    .decode = fake_decode,
    .latent_shape = fake_latent_shape,
    .unload = fake_unload,
};

/* A worker that breaks the protocol (PD_FAKE_MODE): "garbage" sends random bytes after connecting,
 * "version" a HELLO of a future protocol version, "oversize" a frame length over the limit. Each run
 * appends its pid to $PD_FAKE_PID_DIR/bad.pids so the test can count restarts. */
static int bad_worker(int argc, char **argv, const char *mode) {
    const char *path = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--socket")) path = argv[i + 1];
    char pids[512];
    snprintf(pids, sizeof pids, "%s/bad.pids", getenv("PD_FAKE_PID_DIR"));
    FILE *f = fopen(pids, "a");
    if (f) {
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path ? path : "");
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) return 1;
    static uint8_t buf[4 + PD_PROTO_MAX_FRAME];
    size_t n = 0;
    if (!strcmp(mode, "garbage")) {
        srand((unsigned)getpid());
        n = 256;
        for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)rand();
        buf[0] = 40, buf[1] = buf[2] = buf[3] = 0; /* a plausible length, then junk */
    } else if (!strcmp(mode, "version")) {
        pd_msg m;
        pd_msg_init(&m, PD_MSG_HELLO);
        m.version = PD_PROTO_VERSION + 1;
        m.pid = (int32_t)getpid();
        pd_proto_encode(&m, buf, sizeof buf, &n);
    } else {
        buf[0] = buf[1] = buf[2] = 0xff, buf[3] = 0x7f;
        n = 4;
    }
    if (write(fd, buf, n) != (ssize_t)n) return 1;
    char c;
    while (read(fd, &c, 1) > 0) {} /* until the scheduler drops us */
    return 3;
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    int n = 0;
    for (int c; f && (c = fgetc(f)) != EOF;) n += c == '\n';
    if (f) fclose(f);
    return n;
}

/* ---- fixtures ---- */

static char exe[1024];
static char tmpdir[256];

/* A scheduler over n fake workers, ready; extra (may be NULL) sets the model folder (the live plan's
 * model; the fake stages load nothing), the stall limit, the cost model and the job limits. */
static pd_scheduler *start_with(int n, int n_decode, int capacity, double timeout_s, const pd_scheduler_config *extra) {
    char run[300];
    snprintf(run, sizeof run, "%s/run", tmpdir);
    pd_scheduler_config cfg = {.model_dir = tmpdir, .worker_exe = exe, .run_dir = run, .n_devices = n,
                               .n_decode = n_decode, .threads_per_worker = 1, .queue_capacity = capacity,
                               .worker_timeout_s = timeout_s};
    if (extra) {
        if (extra->model_dir) cfg.model_dir = extra->model_dir;
        cfg.stall_timeout_s = extra->stall_timeout_s;
        cfg.cost_model = extra->cost_model;
        cfg.max_job_seconds = extra->max_job_seconds;
        cfg.job_memory_bytes = extra->job_memory_bytes;
    }
    pd_scheduler *s = NULL;
    reset_events();
    PD_CHECK_OK(pd_scheduler_create(&cfg, on_event, NULL, &s));
    if (s) PD_CHECK_MSG(wait_ready(s, 30), "workers never became ready");
    return s;
}

static pd_scheduler *start(int n, int n_decode, int capacity, double timeout_s) {
    return start_with(n, n_decode, capacity, timeout_s, NULL);
}

/* stall_s 0: the scheduler's default stall limit. */
static pd_scheduler *start_stall(int n, int n_decode, int capacity, double timeout_s, double stall_s) {
    return start_with(n, n_decode, capacity, timeout_s, &(pd_scheduler_config){.stall_timeout_s = stall_s});
}

static pd_gen_params params(const char *prompt, int steps, int frames) {
    return (pd_gen_params){.prompt = prompt, .negative_prompt = "ugly", .seed = 42, .width = 64, .height = 48,
                           .frames = frames, .steps = steps, .guidance = 5.0f, .shift = 5.0f,
                           .sampler = PD_SAMPLER_EULER, .fps = 16};
}

static void out_path(char *buf, size_t n, const char *id, const char *ext) {
    snprintf(buf, n, "%s/%s.%s", tmpdir, id, ext);
}

static pd_status submit(pd_scheduler *s, const char *id, const pd_gen_params *p) {
    char mp4[512], png[512];
    out_path(mp4, sizeof mp4, id, "mp4");
    out_path(png, sizeof png, id, "png");
    return pd_scheduler_submit(s, id, p, mp4, png);
}

/* What the synthetic pipeline must have written for p, computed here from the definitions above. */
static double expected_sum(const pd_gen_params *p) {
    double cs = 0, us = 0;
    for (int r = 0; r < fake_ctx_rows(p->prompt); r++)
        for (int c = 0; c < 8; c++) cs += fake_ctx_value(p->prompt, r, c);
    for (int r = 0; r < fake_ctx_rows(p->negative_prompt); r++)
        for (int c = 0; c < 8; c++) us += fake_ctx_value(p->negative_prompt, r, c);
    float v = (float)(p->seed % 100) + (float)cs + 2.0f * (float)us;
    double numel = 16.0 * ((p->frames - 1) / 4 + 1) * (p->height / 8) * (p->width / 8);
    return v * numel;
}

static bool output_ok(const char *id, const pd_gen_params *p) {
    char mp4[512];
    out_path(mp4, sizeof mp4, id, "mp4");
    FILE *f = fopen(mp4, "r");
    if (!f) return false;
    double sum = 0;
    long long numel = 0;
    int fps = 0;
    int k = fscanf(f, "%lf %lld %d", &sum, &numel, &fps);
    fclose(f);
    double want = expected_sum(p);
    return k == 3 && fps == p->fps && fabs(sum - want) <= 1e-4 * fabs(want) + 1e-3;
}

static int read_pid(const char *role) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.pid", tmpdir, role);
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (f) {
        if (fscanf(f, "%d", &pid) != 1) pid = 0;
        fclose(f);
    }
    return pid;
}

/* ---- tests ---- */

/* Aco: helpers in slot order, one per rank; the modes. */
static void test_aco_rules(void) {
    /* Two SP ranks (slots 0, 1), one solo denoise worker (2), two decode workers (3, 4). */
    bool den[5] = {true, true, true, false, false}, dec[5] = {false, false, false, true, true};
    int h[5];
    pd_split_aco_helpers(5, den, dec, h);
    PD_CHECK(h[0] == 3 && h[1] == 4 && h[2] == -1 && h[3] == -1 && h[4] == -1);
    /* Decode slots before denoise ones; more helpers than ranks; a slot doing both takes no part. */
    bool den2[4] = {false, true, false, true}, dec2[4] = {true, false, true, false};
    pd_split_aco_helpers(4, den2, dec2, h);
    PD_CHECK(h[1] == 0 && h[3] == 2 && h[0] == -1 && h[2] == -1);
    bool all[1] = {true};
    pd_split_aco_helpers(1, all, all, h);
    PD_CHECK(h[0] == -1);
    bool den3[3] = {true, false, false}, dec3[3] = {false, true, true};
    pd_split_aco_helpers(3, den3, dec3, h);
    PD_CHECK(h[0] == 1 && h[1] == -1 && h[2] == -1); /* one helper per rank at most */
    /* Modes. */
    pd_aco_mode m;
    PD_CHECK_OK(pd_aco_mode_parse("off", &m));
    PD_CHECK(m == PD_ACO_OFF && !strcmp(pd_aco_mode_name(m), "off"));
    PD_CHECK_ERR(pd_aco_mode_parse("On", &m), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_aco_mode_parse(NULL, &m), PD_ERR_INVALID);
}

static void test_config_errors(void) {
    pd_scheduler *s = NULL;
    pd_scheduler_config cfg = {.model_dir = tmpdir, .worker_exe = exe, .run_dir = tmpdir, .n_devices = 2,
                               .queue_capacity = 4};
    cfg.n_devices = 0;
    PD_CHECK_ERR(pd_scheduler_create(&cfg, on_event, NULL, &s), PD_ERR_INVALID);
    cfg.n_devices = 2;
    cfg.n_decode = 2;
    PD_CHECK_ERR(pd_scheduler_create(&cfg, on_event, NULL, &s), PD_ERR_INVALID);
    cfg.n_decode = 0;
    cfg.queue_capacity = 0;
    PD_CHECK_ERR(pd_scheduler_create(&cfg, on_event, NULL, &s), PD_ERR_INVALID);
    cfg.queue_capacity = 4;
    cfg.stall_timeout_s = -1;
    PD_CHECK_ERR(pd_scheduler_create(&cfg, on_event, NULL, &s), PD_ERR_INVALID);
    cfg.stall_timeout_s = 0;
    cfg.worker_exe = "/nonexistent/pipedit";
    PD_CHECK_ERR(pd_scheduler_create(&cfg, on_event, NULL, &s), PD_ERR_IO);
    PD_CHECK(s == NULL);
}

static void test_pipelined_overlap(void) {
    setenv("PD_FAKE_STEP_MS", "40", 1);
    setenv("PD_FAKE_FRAME_MS", "40", 1); /* 5 steps and 5 latent frames: denoise ~ decode ~ 0.2 s */
    pd_scheduler *s = start(2, 0, 8, 10);
    if (!s) return;
    pd_scheduler_stats st;
    pd_scheduler_stats_get(s, &st);
    PD_CHECK(st.ready && st.workers_up == 2 && st.workers_total == 2 && st.n_denoise == 1 && st.n_decode == 1);
    const char *ids[4] = {"job-a", "job-b", "job-c", "job-d"};
    const char *prompts[4] = {"a red fox", "a blue whale in the sea", "", "x"};
    pd_gen_params p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = params(prompts[i], 5, 17);
        PD_CHECK_OK(submit(s, ids[i], &p[i]));
    }
    for (int i = 0; i < 4; i++) {
        PD_CHECK_MSG(wait_final(ids[i], 30), "%s did not finish", ids[i]);
        const rec *c = find_ev(ids[i], PD_JOB_EVENT_COMPLETED, -1, 0);
        PD_CHECK_MSG(c != NULL, "%s did not complete", ids[i]);
        PD_CHECK_MSG(output_ok(ids[i], &p[i]), "%s: output does not hold the expected latent sum", ids[i]);
        char png[512];
        out_path(png, sizeof png, ids[i], "png");
        PD_CHECK(access(png, F_OK) == 0);
        /* Stage order and progress: started, text, denoise (0..90), decode (90..), completed at 100. */
        const rec *e0 = find_ev(ids[i], PD_JOB_EVENT_STARTED, -1, 0);
        const rec *et = find_ev(ids[i], PD_JOB_EVENT_STAGE, PD_STAGE_TEXT, 0);
        const rec *en = find_ev(ids[i], PD_JOB_EVENT_STAGE, PD_STAGE_DENOISE, 0);
        const rec *ed = find_ev(ids[i], PD_JOB_EVENT_STAGE, PD_STAGE_DECODE, 0);
        const rec *p5 = find_ev(ids[i], PD_JOB_EVENT_PROGRESS, PD_STAGE_DENOISE, 5);
        const rec *d5 = find_ev(ids[i], PD_JOB_EVENT_PROGRESS, PD_STAGE_DECODE, 5);
        PD_CHECK(e0 && et && en && ed && p5 && d5 && c);
        if (e0 && et && en && ed && p5 && d5 && c) {
            PD_CHECK(e0->t <= et->t && et->t <= en->t && en->t <= p5->t && p5->t <= ed->t && ed->t <= d5->t && d5->t <= c->t);
            PD_CHECK(p5->progress == 90 && p5->total == 5 && d5->progress == 99 && c->progress == 100);
            const rec *p2 = find_ev(ids[i], PD_JOB_EVENT_PROGRESS, PD_STAGE_DENOISE, 2);
            PD_CHECK(p2 && p2->progress == 36);
        }
    }
    /* DeDiVAE: decode of job k runs while job k + 1 denoises. */
    for (int k = 0; k + 1 < 4; k++) {
        const rec *dec0 = find_ev(ids[k], PD_JOB_EVENT_STAGE, PD_STAGE_DECODE, 0);
        const rec *dec1 = find_ev(ids[k], PD_JOB_EVENT_COMPLETED, -1, 0);
        const rec *den0 = find_ev(ids[k + 1], PD_JOB_EVENT_STAGE, PD_STAGE_DENOISE, 0);
        const rec *den1 = find_ev(ids[k + 1], PD_JOB_EVENT_PROGRESS, PD_STAGE_DENOISE, 5);
        PD_CHECK(dec0 && dec1 && den0 && den1);
        if (dec0 && dec1 && den0 && den1) {
            double overlap = fmin(dec1->t, den1->t) - fmax(dec0->t, den0->t);
            PD_CHECK_MSG(overlap > 0.05, "decode of job %d and denoise of job %d overlap %.3f s", k, k + 1, overlap);
        }
    }
    pd_scheduler_stats_get(s, &st);
    PD_CHECK(st.queued == 0 && st.running == 0);
    /* Live times replaced the warm-up ones: a denoise of 5 x 40 ms, a decode of 5 x 40 ms. */
    PD_CHECK_MSG(st.stage_seconds_mean[PD_STAGE_DENOISE] > 0.19 && st.stage_seconds_mean[PD_STAGE_DENOISE] < 1.0,
                 "denoise %.3f s", st.stage_seconds_mean[PD_STAGE_DENOISE]);
    PD_CHECK_MSG(st.stage_seconds_mean[PD_STAGE_DECODE] > 0.19 && st.stage_seconds_mean[PD_STAGE_DECODE] < 1.0,
                 "decode %.3f s", st.stage_seconds_mean[PD_STAGE_DECODE]);
    pd_scheduler_destroy(s);
    /* Every job's shared memory is gone. */
    char shm_prefix[64];
    snprintf(shm_prefix, sizeof shm_prefix, "pd-%d-", (int)getpid());
    DIR *d = opendir("/dev/shm");
    int left = 0;
    for (struct dirent *de; d && (de = readdir(d));) left += !strncmp(de->d_name, shm_prefix, strlen(shm_prefix));
    if (d) closedir(d);
    PD_CHECK_MSG(left == 0, "%d shared-memory segments left", left);
}

static void test_single_worker_baseline(void) {
    setenv("PD_FAKE_STEP_MS", "20", 1);
    setenv("PD_FAKE_FRAME_MS", "20", 1);
    pd_scheduler *s = start(1, 0, 8, 10);
    if (!s) return;
    pd_scheduler_stats st;
    pd_scheduler_stats_get(s, &st);
    PD_CHECK(st.ready && st.workers_total == 1 && st.n_denoise == 1 && st.n_decode == 1);
    const char *ids[3] = {"one-a", "one-b", "one-c"};
    pd_gen_params p = params("single", 3, 9);
    for (int i = 0; i < 3; i++) PD_CHECK_OK(submit(s, ids[i], &p));
    for (int i = 0; i < 3; i++) {
        PD_CHECK(wait_final(ids[i], 30));
        PD_CHECK(find_ev(ids[i], PD_JOB_EVENT_COMPLETED, -1, 0) != NULL);
        PD_CHECK(output_ok(ids[i], &p));
    }
    /* One worker: each job finishes before the next one starts. */
    for (int k = 0; k + 1 < 3; k++) {
        const rec *c = find_ev(ids[k], PD_JOB_EVENT_COMPLETED, -1, 0);
        const rec *n = find_ev(ids[k + 1], PD_JOB_EVENT_STAGE, PD_STAGE_TEXT, 0);
        PD_CHECK(c && n && c->t <= n->t);
    }
    pd_scheduler_destroy(s);
}

static void test_worker_killed(void) {
    setenv("PD_FAKE_STEP_MS", "50", 1);
    setenv("PD_FAKE_FRAME_MS", "10", 1);
    setenv("PD_FAKE_PID_DIR", tmpdir, 1);
    pd_scheduler *s = start(2, 0, 8, 10);
    if (!s) return;
    int pid = read_pid("denoise");
    PD_CHECK(pid > 0);
    pd_gen_params p = params("doomed", 40, 5);
    PD_CHECK_OK(submit(s, "kill-1", &p));
    double end = pd_now_s() + 20;
    while (!find_ev("kill-1", PD_JOB_EVENT_PROGRESS, PD_STAGE_DENOISE, 2) && pd_now_s() < end) sleep_ms(5);
    PD_CHECK(pid > 0 && kill(pid, SIGKILL) == 0);
    PD_CHECK(wait_final("kill-1", 10));
    const rec *f = find_ev("kill-1", PD_JOB_EVENT_FAILED, -1, 0);
    PD_CHECK(f && !strcmp(f->code, "worker_died"));
    if (f) {
        PD_CHECK_MSG(strstr(f->msg, "denoise") && strstr(f->msg, "signal 9"), "message: %s", f->msg);
        printf("     worker_died message: %s\n", f->msg);
    }
    /* It comes back (a new process) and the next job completes. */
    PD_CHECK(wait_ready(s, 30));
    PD_CHECK(read_pid("denoise") != pid);
    pd_gen_params q = params("survivor", 3, 5);
    PD_CHECK_OK(submit(s, "kill-2", &q));
    PD_CHECK(wait_final("kill-2", 30));
    PD_CHECK(find_ev("kill-2", PD_JOB_EVENT_COMPLETED, -1, 0) != NULL);
    PD_CHECK(output_ok("kill-2", &q));
    /* The decode worker dying mid-decode fails that job the same way. */
    setenv("PD_FAKE_FRAME_MS", "300", 1); /* only new processes see it: restart the decoder first */
    int dpid = read_pid("decode");
    kill(dpid, SIGKILL);
    end = pd_now_s() + 30;
    while ((read_pid("decode") == dpid || !wait_ready(s, 0.05)) && pd_now_s() < end) sleep_ms(10);
    dpid = read_pid("decode");
    PD_CHECK_OK(submit(s, "kill-3", &q));
    end = pd_now_s() + 20;
    while (!find_ev("kill-3", PD_JOB_EVENT_PROGRESS, PD_STAGE_DECODE, 1) && pd_now_s() < end) sleep_ms(5);
    PD_CHECK(dpid > 0 && kill(dpid, SIGKILL) == 0);
    PD_CHECK(wait_final("kill-3", 10));
    f = find_ev("kill-3", PD_JOB_EVENT_FAILED, -1, 0);
    PD_CHECK(f && !strcmp(f->code, "worker_died") && strstr(f->msg, "decode"));
    unsetenv("PD_FAKE_PID_DIR");
    pd_scheduler_destroy(s);
}

static void test_silent_worker_timeout(void) {
    setenv("PD_FAKE_STEP_MS", "50", 1);
    setenv("PD_FAKE_FRAME_MS", "10", 1);
    setenv("PD_FAKE_PID_DIR", tmpdir, 1);
    pd_scheduler *s = start(2, 0, 8, 1.0);
    if (!s) return;
    int pid = read_pid("denoise");
    pd_gen_params p = params("frozen", 100, 5);
    PD_CHECK_OK(submit(s, "stop-1", &p));
    double end = pd_now_s() + 20;
    while (!find_ev("stop-1", PD_JOB_EVENT_PROGRESS, PD_STAGE_DENOISE, 1) && pd_now_s() < end) sleep_ms(5);
    double t0 = pd_now_s();
    PD_CHECK(pid > 0 && kill(pid, SIGSTOP) == 0);
    PD_CHECK(wait_final("stop-1", 10));
    double waited = pd_now_s() - t0;
    const rec *f = find_ev("stop-1", PD_JOB_EVENT_FAILED, -1, 0);
    PD_CHECK(f && !strcmp(f->code, "worker_died") && strstr(f->msg, "silent"));
    PD_CHECK_MSG(waited > 0.8 && waited < 5.0, "declared dead after %.2f s with a 1 s timeout", waited);
    PD_CHECK(wait_ready(s, 30));
    unsetenv("PD_FAKE_PID_DIR");
    pd_scheduler_destroy(s);
}

static void test_stuck_worker_restarted(void) {
    setenv("PD_FAKE_STEP_MS", "50", 1);
    setenv("PD_FAKE_FRAME_MS", "10", 1);
    setenv("PD_FAKE_PID_DIR", tmpdir, 1);
    pd_scheduler *s = start_stall(2, 0, 8, 10, 1.0); /* silent after 10 s, stuck after 1 s */
    if (!s) return;
    int pid = read_pid("denoise");
    pd_gen_params p = params("stall in step 3", 10, 5);
    PD_CHECK_OK(submit(s, "stuck-1", &p));
    double end = pd_now_s() + 20;
    while (!find_ev("stuck-1", PD_JOB_EVENT_PROGRESS, PD_STAGE_DENOISE, 2) && pd_now_s() < end) sleep_ms(5);
    double t0 = pd_now_s();
    PD_CHECK(wait_final("stuck-1", 10));
    double waited = pd_now_s() - t0;
    const rec *f = find_ev("stuck-1", PD_JOB_EVENT_FAILED, -1, 0);
    PD_CHECK_MSG(f && !strcmp(f->code, "worker_stuck"), "code %s", f ? f->code : "(none)");
    if (f) {
        PD_CHECK_MSG(strstr(f->msg, "denoise") && strstr(f->msg, "no progress"), "message: %s", f->msg);
        printf("     worker_stuck message: %s\n", f->msg);
    }
    PD_CHECK_MSG(waited > 0.8 && waited < 5.0, "declared stuck after %.2f s with a 1 s stall limit", waited);
    PD_CHECK(find_ev("stuck-1", PD_JOB_EVENT_PROGRESS, PD_STAGE_DENOISE, 3) == NULL);
    /* The stuck process is gone (killed and reaped), a new one serves the next job. */
    PD_CHECK(pid > 0 && kill(pid, 0) != 0);
    PD_CHECK(wait_ready(s, 30));
    PD_CHECK(read_pid("denoise") != pid);
    pd_gen_params q = params("after the stall", 3, 5);
    PD_CHECK_OK(submit(s, "stuck-2", &q));
    PD_CHECK(wait_final("stuck-2", 30));
    PD_CHECK(find_ev("stuck-2", PD_JOB_EVENT_COMPLETED, -1, 0) != NULL);
    PD_CHECK(output_ok("stuck-2", &q));
    unsetenv("PD_FAKE_PID_DIR");
    pd_scheduler_destroy(s);
}

static void test_slow_worker_left_alone(void) {
    /* A 1 s stall limit; jobs that take several times as long but keep advancing. */
    setenv("PD_FAKE_STEP_MS", "400", 1);
    setenv("PD_FAKE_FRAME_MS", "10", 1);
    pd_scheduler *s = start_stall(2, 0, 8, 10, 1.0);
    if (!s) return;
    pd_gen_params p = params("slow steps", 6, 5);  /* 6 x 0.4 s, a PROGRESS every 0.4 s */
    PD_CHECK_OK(submit(s, "slow-1", &p));
    pd_gen_params q = params("substeps", 2, 5);    /* 2 x 1.6 s, progress only through the heartbeats */
    PD_CHECK_OK(submit(s, "slow-2", &q));
    PD_CHECK(wait_final("slow-1", 30) && wait_final("slow-2", 30));
    const rec *f = find_ev("slow-1", PD_JOB_EVENT_FAILED, -1, 0);
    PD_CHECK_MSG(!f, "slow-1 failed: %s: %s", f->code, f->msg);
    f = find_ev("slow-2", PD_JOB_EVENT_FAILED, -1, 0);
    PD_CHECK_MSG(!f, "slow-2 failed: %s: %s", f->code, f->msg);
    PD_CHECK(output_ok("slow-1", &p) && output_ok("slow-2", &q));
    pd_scheduler_destroy(s);
}

static void test_queue_full_and_cancel_queued(void) {
    setenv("PD_FAKE_STEP_MS", "50", 1);
    setenv("PD_FAKE_FRAME_MS", "10", 1);
    pd_scheduler *s = start(1, 0, 2, 10);
    if (!s) return;
    pd_gen_params p = params("long", 200, 5);
    PD_CHECK_OK(submit(s, "q-run", &p));
    double end = pd_now_s() + 10;
    while (!find_ev("q-run", PD_JOB_EVENT_STARTED, -1, 0) && pd_now_s() < end) sleep_ms(5);
    PD_CHECK_OK(submit(s, "q-1", &p));
    PD_CHECK_OK(submit(s, "q-2", &p));
    PD_CHECK_ERR(submit(s, "q-3", &p), PD_ERR_BUSY);
    PD_CHECK_ERR(submit(s, "q-1", &p), PD_ERR_INVALID);  /* duplicate id */
    PD_CHECK(pd_scheduler_queue_position(s, "q-1") == 0);
    PD_CHECK(pd_scheduler_queue_position(s, "q-2") == 1);
    PD_CHECK(pd_scheduler_queue_position(s, "q-run") == -1);
    PD_CHECK(pd_scheduler_queue_position(s, "nope") == -1);
    pd_scheduler_stats st;
    pd_scheduler_stats_get(s, &st);
    PD_CHECK(st.queued == 2 && st.running == 1);
    /* Cancel of a queued job: gone from the queue at once, failed as cancelled. */
    PD_CHECK_OK(pd_scheduler_cancel(s, "q-1"));
    PD_CHECK(pd_scheduler_queue_position(s, "q-1") == -1);
    PD_CHECK(pd_scheduler_queue_position(s, "q-2") == 0);
    PD_CHECK(wait_final("q-1", 2));
    const rec *f = find_ev("q-1", PD_JOB_EVENT_FAILED, -1, 0);
    PD_CHECK(f && !strcmp(f->code, "cancelled"));
    PD_CHECK(find_ev("q-1", PD_JOB_EVENT_STARTED, -1, 0) == NULL);
    PD_CHECK_OK(submit(s, "q-3", &p)); /* room again */
    PD_CHECK_ERR(pd_scheduler_cancel(s, "nope"), PD_ERR_NOT_FOUND);
    PD_CHECK_ERR(pd_scheduler_submit(s, "", &p, "/tmp/x.mp4", NULL), PD_ERR_INVALID);
    pd_scheduler_destroy(s); /* live jobs are dropped without further events */
}

static void test_cancel_running(void) {
    setenv("PD_FAKE_STEP_MS", "100", 1);
    setenv("PD_FAKE_FRAME_MS", "10", 1);
    pd_scheduler *s = start(2, 0, 8, 10);
    if (!s) return;
    pd_gen_params p = params("to cancel", 50, 5);
    PD_CHECK_OK(submit(s, "c-1", &p));
    double end = pd_now_s() + 20;
    while (!find_ev("c-1", PD_JOB_EVENT_PROGRESS, PD_STAGE_DENOISE, 3) && pd_now_s() < end) sleep_ms(2);
    double t0 = pd_now_s();
    PD_CHECK_OK(pd_scheduler_cancel(s, "c-1"));
    PD_CHECK(wait_final("c-1", 5));
    double took = pd_now_s() - t0;
    const rec *f = find_ev("c-1", PD_JOB_EVENT_FAILED, -1, 0);
    PD_CHECK(f && !strcmp(f->code, "cancelled"));
    PD_CHECK_MSG(took < 1.0, "cancel took %.3f s with 0.1 s steps", took);
    /* At most the step in flight finished after the cancel. */
    int last = 0;
    pthread_mutex_lock(&ev_mu);
    for (int i = 0; i < n_evs; i++)
        if (!strcmp(evs[i].id, "c-1") && evs[i].kind == PD_JOB_EVENT_PROGRESS && evs[i].step > last) last = evs[i].step;
    pthread_mutex_unlock(&ev_mu);
    PD_CHECK_MSG(last <= 5, "ran to step %d", last);
    /* The worker is free again. */
    pd_gen_params q = params("after cancel", 2, 5);
    PD_CHECK_OK(submit(s, "c-2", &q));
    PD_CHECK(wait_final("c-2", 20));
    PD_CHECK(find_ev("c-2", PD_JOB_EVENT_COMPLETED, -1, 0) != NULL);
    pd_scheduler_destroy(s);
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A running job past its deadline (start + max_job_seconds, carried to the worker in the ASSIGN) stops
 * within a step and fails with "deadline_exceeded"; the worker then serves the next job. */
static void test_deadline_running(void) {
    setenv("PD_FAKE_STEP_MS", "100", 1);
    setenv("PD_FAKE_FRAME_MS", "10", 1);
    pd_scheduler *s = start_with(2, 0, 8, 10, &(pd_scheduler_config){.max_job_seconds = 1.0});
    if (!s) return;
    pd_gen_params p = params("too long", 50, 5); /* 5 s of denoising */
    PD_CHECK_OK(submit(s, "dl-1", &p));
    PD_CHECK(wait_final("dl-1", 10));
    const rec *st = find_ev("dl-1", PD_JOB_EVENT_STARTED, -1, 0), *f = find_ev("dl-1", PD_JOB_EVENT_FAILED, -1, 0);
    PD_CHECK_MSG(f && !strcmp(f->code, "deadline_exceeded") && strstr(f->msg, "deadline exceeded") &&
                     strstr(f->msg, "max_job_seconds = 1 s"), "%s: %s",
                 f ? f->code : "-", f ? f->msg : "no failure");
    if (st && f) PD_CHECK_MSG(f->t - st->t > 0.9 && f->t - st->t < 1.6, "failed %.3f s after the start", f->t - st->t);
    pd_gen_params q = params("in time", 2, 5);
    PD_CHECK_OK(submit(s, "dl-2", &q));
    PD_CHECK(wait_final("dl-2", 20));
    PD_CHECK(find_ev("dl-2", PD_JOB_EVENT_COMPLETED, -1, 0) != NULL);
    pd_scheduler_destroy(s);
}

/* Admission by cost: with rates from the warm-up, a request whose estimate exceeds max_job_seconds or
 * the memory limit is refused with the estimate and the limit in the message (and nothing queued); a
 * small one passes; queued jobs get completion times that grow along the queue. */
static void test_admission_and_completion_estimates(void) {
    setenv("PD_FAKE_STEP_MS", "20", 1);
    setenv("PD_FAKE_FRAME_MS", "10", 1);
    const pd_model_preset *pre = pd_model_preset_default();
    const pd_estimate_model cost = {.dit = pre->dit, .vae_base_dim = pre->vae.base_dim};
    pd_scheduler *s = start_with(1, 0, 8, 10, &(pd_scheduler_config){.cost_model = &cost, .max_job_seconds = 60});
    if (!s) return;
    pd_gen_params big = params("too big", 100, 129), small = params("small", 4, 5);
    big.width = big.height = 1280;
    pd_estimate e;
    PD_CHECK_ERR(pd_scheduler_admit(s, &big, &e), PD_ERR_INVALID);
    char want[64];
    snprintf(want, sizeof want, "is %.0f s", e.seconds);
    PD_CHECK_MSG(e.seconds > 60 && strstr(pd_error_msg(), want) && strstr(pd_error_msg(), "max_job_seconds = 60 s"),
                 "estimate %g s: %s", e.seconds, pd_error_msg());
    pd_scheduler_stats st;
    pd_scheduler_stats_get(s, &st);
    PD_CHECK(st.queued == 0 && st.running == 0);
    PD_CHECK_OK(pd_scheduler_admit(s, &small, &e));
    PD_CHECK_MSG(e.seconds > 0 && e.seconds < 60 && e.bytes > 0, "small: %g s, %g bytes", e.seconds, e.bytes);
    /* completion estimates: later in the queue, later done; all in the future, none absurd */
    pd_gen_params slow = params("slow", 40, 5);
    PD_CHECK_OK(submit(s, "e-1", &slow));
    PD_CHECK_OK(submit(s, "e-2", &slow));
    PD_CHECK_OK(submit(s, "e-3", &small));
    const double now = wall_now(), t1 = pd_scheduler_estimated_completion(s, "e-1");
    const double t2 = pd_scheduler_estimated_completion(s, "e-2"), t3 = pd_scheduler_estimated_completion(s, "e-3");
    PD_CHECK_MSG(t1 > now && t2 > t1 && t3 > t2 && t3 < now + 60, "now %.2f: %.2f %.2f %.2f", now, t1, t2, t3);
    PD_CHECK(pd_scheduler_estimated_completion(s, "nope") == 0);
    PD_CHECK(wait_final("e-3", 30));
    PD_CHECK(pd_scheduler_estimated_completion(s, "e-3") == 0);
    pd_scheduler_destroy(s);
    /* the memory limit */
    s = start_with(1, 0, 8, 10, &(pd_scheduler_config){.cost_model = &cost, .job_memory_bytes = 16 << 20});
    if (!s) return;
    big = params("wide", 1, 5);
    big.width = big.height = 1024;
    PD_CHECK_ERR(pd_scheduler_admit(s, &big, &e), PD_ERR_INVALID);
    PD_CHECK_MSG(e.bytes > (16 << 20) && strstr(pd_error_msg(), "activation memory") && strstr(pd_error_msg(), "job_memory_bytes"),
                 "%s", pd_error_msg());
    PD_CHECK_OK(pd_scheduler_admit(s, &small, &e));
    pd_scheduler_destroy(s);
}

static void test_rejected_request_and_drain(void) {
    setenv("PD_FAKE_STEP_MS", "10", 1);
    setenv("PD_FAKE_FRAME_MS", "10", 1);
    pd_scheduler *s = start(2, 0, 8, 10);
    if (!s) return;
    pd_gen_params bad = params("too wide", 2, 5);
    bad.width = 8192;
    PD_CHECK_OK(submit(s, "bad-1", &bad));
    PD_CHECK(wait_final("bad-1", 10));
    const rec *f = find_ev("bad-1", PD_JOB_EVENT_FAILED, -1, 0);
    PD_CHECK(f && !strcmp(f->code, "invalid") && strstr(f->msg, "width"));
    pd_gen_params p = params("drained", 3, 5);
    PD_CHECK_OK(submit(s, "d-1", &p));
    PD_CHECK_OK(submit(s, "d-2", &p));
    PD_CHECK_OK(pd_scheduler_drain(s, 20));
    PD_CHECK(find_ev("d-1", PD_JOB_EVENT_COMPLETED, -1, 0) && find_ev("d-2", PD_JOB_EVENT_COMPLETED, -1, 0));
    PD_CHECK_ERR(submit(s, "d-3", &p), PD_ERR_CANCELLED);
    pd_scheduler_destroy(s);
}

/* The scheduler's stats once its 3 workers are up and ready with 2 of them decoding, or after 30 s. */
/* Waits (30 s at most) until the scheduler runs n_decode decode workers of its 3, all up. */
static pd_scheduler_stats wait_for_split(pd_scheduler *s, int n_decode) {
    pd_scheduler_stats st = {0};
    double end = pd_now_s() + 30;
    while (pd_now_s() < end) {
        pd_scheduler_stats_get(s, &st);
        if (st.n_decode == n_decode && st.ready && st.workers_up == 3) break;
        sleep_ms(20);
    }
    return st;
}

static void test_replan_from_timings(void) {
    /* Decode far slower than denoise: with 3 workers the rule wants 2 decoders (0.9 * 3 = 2.7 -> 2). */
    setenv("PD_FAKE_STEP_MS", "5", 1);
    setenv("PD_FAKE_FRAME_MS", "150", 1);
    pd_scheduler *s = start(3, 0, 8, 10);
    if (!s) return;
    pd_gen_params p = params("slow decode", 2, 5);
    PD_CHECK_OK(submit(s, "r-1", &p));
    PD_CHECK(wait_final("r-1", 30));
    pd_scheduler_stats st = wait_for_split(s, 2);
    PD_CHECK_MSG(st.n_decode == 2 && st.n_denoise == 1, "split %d+%d", st.n_denoise, st.n_decode);
    PD_CHECK_OK(submit(s, "r-2", &p));
    PD_CHECK(wait_final("r-2", 30));
    PD_CHECK(find_ev("r-2", PD_JOB_EVENT_COMPLETED, -1, 0) != NULL);
    pd_scheduler_destroy(s);
    /* Pinned: the same timings leave the split alone. */
    s = start(3, 1, 8, 10);
    if (!s) return;
    PD_CHECK_OK(submit(s, "r-3", &p));
    PD_CHECK(wait_final("r-3", 30));
    sleep_ms(300);
    pd_scheduler_stats_get(s, &st);
    PD_CHECK(st.n_decode == 1 && st.n_denoise == 2);
    pd_scheduler_destroy(s);
}

/* The live plan with a model (the tiny preset's configs, the CPU reference profile): it is made at
 * start from the model, the workers' warm-up times correct it (decode far slower than the model says:
 * the fake decode sleeps 150 ms a latent frame) and the split moves to 1 + 2 through a revision; the
 * stats carry the plan, its predictions and the measured times. */
/* The plan over a real model folder starts from the CPU reference profile and follows the measured
 * stage times: decode far slower than denoise ends at 1 + 2, denoise far slower at 2 + 1. Both start
 * from the same first plan (same profile, model and typical request), so at least one of them had to
 * revise it. */
static void test_plan_from_model(void) {
    char model[300];
    snprintf(model, sizeof model, "%s/model", tmpdir);
    PD_CHECK_OK(pd_model_dir_write(model, pd_model_preset_default(), 1, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32));
    const struct {
        const char *step_ms, *frame_ms;
        int n_decode;
    } cases[2] = {{"5", "150", 2}, {"150", "1", 1}};
    unsigned most_revisions = 0;
    for (int k = 0; k < 2; k++) {
        setenv("PD_FAKE_STEP_MS", cases[k].step_ms, 1);
        setenv("PD_FAKE_FRAME_MS", cases[k].frame_ms, 1);
        pd_scheduler *s = start_with(3, 0, 8, 10, &(pd_scheduler_config){.model_dir = model});
        if (!s) return;
        pd_scheduler_stats st = wait_for_split(s, cases[k].n_decode);
        const pd_scheduler_plan_stats *pl = &st.plan;
        PD_CHECK_MSG(st.n_decode == cases[k].n_decode && pl->plan.decode_workers == cases[k].n_decode &&
                         pl->plan.denoise_workers == 3 - cases[k].n_decode,
                     "step %s ms, frame %s ms: split %d+%d, plan %d+%d", cases[k].step_ms, cases[k].frame_ms, st.n_denoise,
                     st.n_decode, pl->plan.denoise_workers, pl->plan.decode_workers);
        PD_CHECK_MSG(pl->have_model && !strcmp(pl->profile, "cpu-reference"), "%s", pl->profile);
        PD_CHECK(pl->measured_s[PD_PLAN_DECODE] > 0 && pl->plan.predicted_s[PD_PLAN_DECODE] > 0);
        if (cases[k].n_decode == 2) PD_CHECK(pl->measured_s[PD_PLAN_DECODE] > 5 * pl->measured_s[PD_PLAN_DENOISE]);
        else PD_CHECK(pl->measured_s[PD_PLAN_DENOISE] > 5 * pl->measured_s[PD_PLAN_DECODE]);
        if (pl->plan.revision > most_revisions) most_revisions = pl->plan.revision;
        pd_gen_params p = params("planned", 2, 5);
        char id[16];
        snprintf(id, sizeof id, "m-%d", k);
        PD_CHECK_OK(submit(s, id, &p));
        PD_CHECK(wait_final(id, 30) && find_ev(id, PD_JOB_EVENT_COMPLETED, -1, 0) != NULL);
        pd_scheduler_destroy(s);
    }
    PD_CHECK_MSG(most_revisions >= 2, "neither case revised the first plan (%u)", most_revisions);
}

static void test_protocol_errors_drop_the_worker(void) {
    const char *modes[3] = {"garbage", "version", "oversize"};
    setenv("PD_FAKE_PID_DIR", tmpdir, 1);
    for (int k = 0; k < 3; k++) {
        char pids[512], run[300];
        snprintf(pids, sizeof pids, "%s/bad.pids", tmpdir);
        unlink(pids);
        setenv("PD_FAKE_MODE", modes[k], 1);
        snprintf(run, sizeof run, "%s/run", tmpdir);
        pd_scheduler_config cfg = {.model_dir = tmpdir, .worker_exe = exe, .run_dir = run, .n_devices = 1,
                                   .queue_capacity = 4, .worker_timeout_s = 10};
        pd_scheduler *s = NULL;
        PD_CHECK_OK(pd_scheduler_create(&cfg, on_event, NULL, &s));
        if (!s) continue;
        /* Dropped at once and restarted (after a short backoff); never ready, never a crash. */
        double end = pd_now_s() + 10;
        while (count_lines(pids) < 2 && pd_now_s() < end) sleep_ms(20);
        pd_scheduler_stats st;
        pd_scheduler_stats_get(s, &st);
        PD_CHECK_MSG(count_lines(pids) >= 2, "%s: the worker was started %d times", modes[k], count_lines(pids));
        PD_CHECK(!st.ready && st.workers_up == 0);
        pd_gen_params p = params("never runs", 1, 5);
        PD_CHECK_OK(submit(s, "never", &p)); /* admitted, waits for a healthy worker */
        pd_scheduler_stats_get(s, &st);
        PD_CHECK(st.queued == 1);
        pd_scheduler_destroy(s);
        unsetenv("PD_FAKE_MODE"); /* the restarts read it too: only now is it safe to drop */
    }
    unsetenv("PD_FAKE_PID_DIR");
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "worker")) {
        const char *mode = getenv("PD_FAKE_MODE");
        if (mode) return bad_worker(argc - 1, argv + 1, mode);
        return pd_worker_main(argc - 1, argv + 1, &fake_stages);
    }
    signal(SIGPIPE, SIG_IGN);
    setenv("PIPEDIT_LOG", "warn", 0); /* the workers' start-up lines are noise here */
    pd_log_set_level(PD_LOG_WARN);
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 1;
    exe[n] = 0;
    if (!pd_test_scratch_dir(tmpdir, sizeof tmpdir, "test_scheduler")) return 1;
    PD_RUN(test_aco_rules);
    PD_RUN(test_config_errors);
    PD_RUN(test_pipelined_overlap);
    PD_RUN(test_single_worker_baseline);
    PD_RUN(test_worker_killed);
    PD_RUN(test_silent_worker_timeout);
    PD_RUN(test_stuck_worker_restarted);
    PD_RUN(test_slow_worker_left_alone);
    PD_RUN(test_queue_full_and_cancel_queued);
    PD_RUN(test_cancel_running);
    PD_RUN(test_deadline_running);
    PD_RUN(test_admission_and_completion_estimates);
    PD_RUN(test_rejected_request_and_drain);
    PD_RUN(test_replan_from_timings);
    PD_RUN(test_plan_from_model);
    PD_RUN(test_protocol_errors_drop_the_worker);
    pd_test_rmtree(tmpdir);
    return pd_test_summary();
}
