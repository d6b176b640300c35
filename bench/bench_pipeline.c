/* DeDiVAE throughput on the CPU: jobs per minute for a burst of queued requests through the scheduler
 * and real worker processes (`pipedit worker`, found next to this program) on the embedded tiny model.
 *   pipelined: N = 2 workers, 1 denoise + 1 decode, C/2 threads each (decode of job k overlaps denoise
 *              of job k + 1);
 *   single:    N = 1 worker doing every stage with C threads (the baseline: the same C cores).
 * C defaults to 2. Both schedulers are started (and warmed up) before any timing; rounds alternate
 * pipelined / single so drift on a shared machine hits both alike; each figure is the median over rounds.
 * A round submits `jobs` requests at once and ends when the last completes (wall time from the first
 * submit to the last completion event). Request: 128x96, 9 frames, 12 UniPC steps, guidance 5 — on the
 * tiny model its decode (VAE + MP4) takes about as long as its denoise on one thread.
 *
 *   bench_pipeline [--threads C] [--runs R] [--jobs J] [--results DIR]
 *                  [--model DIR] [--size WxH] [--frames F] [--steps S] [--guidance G]
 *
 * The last five replace the tiny model and the request above (bench/bench_plan_validate.c runs an
 * attention-heavy model so).
 */
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/common/bench.h"
#include "models/model_dir.h"
#include "scheduler/scheduler.h"

enum { MAX_JOBS = 32, MAX_RUNS = 32 };

typedef struct tracker {
    pthread_mutex_t mu;
    int done, failed;
    double last_t;
    char error[512];
} tracker;

static void on_event(void *ud, const pd_job_event *ev) {
    tracker *t = ud;
    if (ev->kind != PD_JOB_EVENT_COMPLETED && ev->kind != PD_JOB_EVENT_FAILED) return;
    pthread_mutex_lock(&t->mu);
    if (ev->kind == PD_JOB_EVENT_COMPLETED) t->done++;
    else {
        t->failed++;
        snprintf(t->error, sizeof t->error, "%s: %s: %s", ev->job_id, ev->error_code, ev->error_message);
    }
    if (ev->t > t->last_t) t->last_t = ev->t;
    pthread_mutex_unlock(&t->mu);
}

static double now_real(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct setup {
    const char *name;
    int n_devices, n_decode, threads;
    pd_scheduler *s;
    tracker t;
    double jpm[MAX_RUNS];
} setup;

static pd_status start(setup *su, const char *exe, const char *model, const char *dir) {
    char run[600];
    snprintf(run, sizeof run, "%s/run-%s", dir, su->name);
    pd_scheduler_config cfg = {.model_dir = model, .worker_exe = exe, .run_dir = run, .n_devices = su->n_devices,
                               .n_decode = su->n_decode, .threads_per_worker = su->threads, .queue_capacity = MAX_JOBS,
                               .worker_timeout_s = 60};
    pthread_mutex_init(&su->t.mu, NULL);
    return pd_scheduler_create(&cfg, on_event, &su->t, &su->s);
}

static pd_status wait_ready(setup *su) {
    pd_scheduler_stats st;
    for (int i = 0; i < 6000; i++) {
        pd_scheduler_stats_get(su->s, &st);
        if (st.ready) return PD_OK;
        usleep(20000);
    }
    return pd_error_set(PD_ERR_TIMEOUT, "%s: workers not ready after 120 s", su->name);
}

/* One burst of jobs; returns jobs per minute in *jpm. */
static pd_status round_run(setup *su, int round, int jobs, const pd_gen_params *p, const char *dir, double *jpm) {
    pthread_mutex_lock(&su->t.mu);
    su->t.done = su->t.failed = 0;
    su->t.last_t = 0;
    pthread_mutex_unlock(&su->t.mu);
    double t0 = now_real();
    for (int j = 0; j < jobs; j++) {
        char id[64], mp4[700];
        snprintf(id, sizeof id, "%s-%d-%d", su->name, round, j);
        snprintf(mp4, sizeof mp4, "%s/%s.mp4", dir, id);
        PD_TRY(pd_scheduler_submit(su->s, id, p, mp4, NULL));
    }
    for (;;) {
        pthread_mutex_lock(&su->t.mu);
        int finished = su->t.done + su->t.failed, failed = su->t.failed;
        double last = su->t.last_t;
        char error[sizeof su->t.error];
        memcpy(error, su->t.error, sizeof error);
        pthread_mutex_unlock(&su->t.mu);
        if (failed) return pd_error_set(PD_ERR_DEVICE, "%s: a job failed: %s", su->name, error);
        if (finished == jobs) {
            *jpm = jobs / (last - t0) * 60.0;
            return PD_OK;
        }
        usleep(5000);
    }
}

static int usage(void) {
    fprintf(stderr, "usage: bench_pipeline [--threads C (even, >= 2)] [--runs R] [--jobs J] [--results DIR]\n"
                    "                      [--model DIR] [--size WxH] [--frames F] [--steps S] [--guidance G]\n");
    return 2;
}

int main(int argc, char **argv) {
    int cores = 2, runs = 3, jobs = 4, width = 128, height = 96, frames = 9, steps = 12;
    double guidance = 5.0;
    const char *results = NULL, *model_opt = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) return usage();
        if (!strcmp(argv[i], "--threads")) cores = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs")) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--jobs")) jobs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--results")) results = argv[++i];
        else if (!strcmp(argv[i], "--model")) model_opt = argv[++i];
        else if (!strcmp(argv[i], "--size")) {
            if (sscanf(argv[++i], "%dx%d", &width, &height) != 2) return usage();
        } else if (!strcmp(argv[i], "--frames")) frames = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--guidance")) guidance = atof(argv[++i]);
        else return usage();
    }
    if (cores < 2 || cores % 2 || runs < 1 || runs > MAX_RUNS || jobs < 1 || jobs > MAX_JOBS || width < 16 ||
        height < 16 || frames < 1 || steps < 1 || steps > 1000 || !(guidance >= 1.0 && guidance <= 50.0))
        return usage();
    setenv("PIPEDIT_LOG", "warn", 0);
    pd_log_set_level(PD_LOG_WARN);

    char self[1024], exe[1100], model[1024], dir[] = "/tmp/pd-bench-pipeline-XXXXXX";
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = 0;
    snprintf(exe, sizeof exe, "%s/pipedit", dirname(self));
    if (access(exe, X_OK) != 0) {
        fprintf(stderr, "bench_pipeline: %s is not built\n", exe);
        return 77;
    }
    if (model_opt) snprintf(model, sizeof model, "%s", model_opt);
    if ((!model_opt && pd_model_dir_default(model, sizeof model)) || !mkdtemp(dir)) {
        fprintf(stderr, "bench_pipeline: %s\n", pd_error_msg());
        return 1;
    }
    pd_gen_params p = {.prompt = "a red fox running through fresh snow at dawn", .negative_prompt = "", .seed = 1234,
                       .width = width, .height = height, .frames = frames, .steps = steps,
                       .guidance = (float)guidance, .shift = 5.0f,
                       .sampler = PD_SAMPLER_UNIPC, .fps = 16};
    double load0[1] = {0}, load1[1] = {0};
    getloadavg(load0, 1); /* a shared machine: record how busy it was */
    setup su[2] = {{.name = "pipelined", .n_devices = 2, .n_decode = 1, .threads = cores / 2},
                   {.name = "single", .n_devices = 1, .n_decode = 0, .threads = cores}};
    pd_status st = PD_OK;
    for (int k = 0; k < 2 && !st; k++) st = start(&su[k], exe, model, dir);
    for (int k = 0; k < 2 && !st; k++) st = wait_ready(&su[k]);
    double warm; /* one untimed round each: first-use costs (page cache, allocator) out of the figures */
    for (int k = 0; k < 2 && !st; k++) st = round_run(&su[k], -1, 2, &p, dir, &warm);
    for (int r = 0; r < runs && !st; r++)
        for (int k = 0; k < 2 && !st; k++) {
            st = round_run(&su[k], r, jobs, &p, dir, &su[k].jpm[r]);
            if (!st) printf("round %d %-9s %.2f jobs/min\n", r, su[k].name, su[k].jpm[r]);
        }
    getloadavg(load1, 1);
    pd_scheduler_stats stats[2];
    for (int k = 0; k < 2; k++)
        if (su[k].s) pd_scheduler_stats_get(su[k].s, &stats[k]);
    for (int k = 0; k < 2; k++) pd_scheduler_destroy(su[k].s);
    pd_bench_rmtree(dir);
    if (st) {
        fprintf(stderr, "bench_pipeline: %s\n", pd_error_msg());
        return 1;
    }

    double pipelined = pd_bench_median(su[0].jpm, runs), single = pd_bench_median(su[1].jpm, runs);
    printf("pipelined (1 denoise + 1 decode worker, %d thread%s each): %.2f jobs/min\n", cores / 2, cores > 2 ? "s" : "",
           pipelined);
    printf("single (1 worker, %d threads): %.2f jobs/min\n", cores, single);
    printf("ratio pipelined / single: %.3f (load average %.1f at the start, %.1f at the end)\n", pipelined / single,
           load0[0], load1[0]);
    const char *stage_names[PD_STAGE_COUNT] = {"text", "denoise", "decode", "encode"};
    for (int k = 0; k < 2; k++)
        printf("%-9s stage means: text %.3f s, denoise %.3f s, decode+encode %.3f s\n", su[k].name,
               stats[k].stage_seconds_mean[PD_STAGE_TEXT], stats[k].stage_seconds_mean[PD_STAGE_DENOISE],
               stats[k].stage_seconds_mean[PD_STAGE_DECODE]);

    pd_bench_result *res = pd_bench_result_create("bench_pipeline");
    if (!res) return 1;
    char shape[64];
    snprintf(shape, sizeof shape, "%dx%d, %d frames", width, height, frames);
    pd_bench_result_config_str(res, "model", model_opt ? model_opt : "tiny");
    pd_bench_result_config_str(res, "backend", "cpu");
    pd_bench_result_config_str(res, "shape", shape);
    pd_bench_result_config_int(res, "steps", p.steps);
    pd_bench_result_config_str(res, "sampler", "unipc");
    pd_bench_result_config_num(res, "guidance", p.guidance);
    pd_bench_result_config_int(res, "jobs_per_round", jobs);
    pd_bench_result_config_int(res, "rounds", runs);
    pd_bench_result_config_int(res, "cores_used", cores);
    pd_bench_result_config_num(res, "loadavg_1min_start", load0[0]);
    pd_bench_result_config_num(res, "loadavg_1min_end", load1[0]);
    pd_bench_result_config_str(res, "pipelined", "2 workers: 1 denoise (text + DiT) + 1 decode (VAE), cores/2 threads each");
    pd_bench_result_config_str(res, "single", "1 worker, all stages, cores threads");
    pd_bench_result_figure(res, "jobs_per_min_pipelined", pipelined, "jobs/min");
    pd_bench_result_figure(res, "jobs_per_min_single", single, "jobs/min");
    pd_bench_result_figure(res, "ratio_pipelined_over_single", pipelined / single, "x");
    for (int k = 0; k < 2; k++)
        for (int s = 0; s < PD_STAGE_ENCODE; s++) {
            char name[64];
            snprintf(name, sizeof name, "%s_stage_%s_mean", su[k].name, stage_names[s]);
            pd_bench_result_figure(res, name, stats[k].stage_seconds_mean[s] * 1e3, "ms");
        }
    const char *path = pd_bench_result_write(res, results);
    if (!path) {
        fprintf(stderr, "bench_pipeline: %s\n", pd_error_msg());
        pd_bench_result_free(res);
        return 1;
    }
    printf("wrote %s\n", path);
    pd_bench_result_free(res);
    return 0;
}
