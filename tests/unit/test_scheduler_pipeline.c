/* The scheduler with the real worker binary (`pipedit worker`, found next to this program) on the
 * embedded tiny model: 4 jobs through 1 denoise + 1 decode worker complete with MP4s and show decode of
 * job k overlapping denoise of job k + 1; a SIGKILLed worker fails its job with "worker_died", comes back
 * and the next job completes; a full queue returns PD_ERR_BUSY; a running job cancelled mid-denoise ends
 * as "cancelled" within a step. Skipped (77) when the pipedit binary is not built. */
#include <dirent.h>
#include <libgen.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "models/model_dir.h"
#include "scheduler/scheduler.h"
#include "tests/unit/sched_events.h"
#include "tests/unit/test.h"

static char exe[1024], model[1024], tmpdir[256];

static pd_scheduler *start(int n, int capacity) {
    char run[300];
    snprintf(run, sizeof run, "%s/run", tmpdir);
    pd_scheduler_config cfg = {.model_dir = model, .worker_exe = exe, .run_dir = run, .n_devices = n,
                               .threads_per_worker = 1, .queue_capacity = capacity, .worker_timeout_s = 30};
    pd_scheduler *s = NULL;
    PD_CHECK_OK(pd_scheduler_create(&cfg, on_event, NULL, &s));
    if (s) PD_CHECK_MSG(wait_ready(s, 120), "workers never became ready");
    return s;
}

/* Small enough for a sanitizer build; decode is still a real share of the time on the tiny model. */
static pd_gen_params params(const char *prompt, int steps) {
    return (pd_gen_params){.prompt = prompt, .negative_prompt = "", .seed = 7, .width = 32, .height = 32,
                           .frames = 5, .steps = steps, .guidance = 5.0f, .shift = 5.0f,
                           .sampler = PD_SAMPLER_EULER, .fps = 16};
}

static pd_status submit(pd_scheduler *s, const char *id, const pd_gen_params *p) {
    char mp4[512], png[512];
    snprintf(mp4, sizeof mp4, "%s/%s.mp4", tmpdir, id);
    snprintf(png, sizeof png, "%s/%s.png", tmpdir, id);
    return pd_scheduler_submit(s, id, p, mp4, png);
}

/* An MP4 starts with an ftyp box; the PNG with its signature. */
static bool outputs_ok(const char *id) {
    char path[512];
    unsigned char b[8] = {0};
    snprintf(path, sizeof path, "%s/%s.mp4", tmpdir, id);
    FILE *f = fopen(path, "rb");
    bool ok = f && fread(b, 1, 8, f) == 8 && !memcmp(b + 4, "ftyp", 4);
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/%s.png", tmpdir, id);
    f = fopen(path, "rb");
    ok = ok && f && fread(b, 1, 8, f) == 8 && !memcmp(b, "\x89PNG", 4);
    if (f) fclose(f);
    return ok;
}

/* The pid of our child worker whose command line names role, or 0. */
static int worker_pid(const char *role) {
    DIR *d = opendir("/proc");
    int found = 0;
    for (struct dirent *de; d && !found && (de = readdir(d));) {
        int pid = atoi(de->d_name);
        if (pid <= 0) continue;
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        FILE *f = fopen(path, "r");
        int ppid = 0;
        if (f) {
            if (fscanf(f, "%*d (%*[^)]) %*c %d", &ppid) != 1) ppid = 0;
            fclose(f);
        }
        if (ppid != getpid()) continue;
        snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
        f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f) fclose(f);
        buf[n] = 0;
        for (size_t i = 0; i + 1 < n; i++)
            if (!buf[i]) buf[i] = ' ';
        if (strstr(buf, " worker ") && strstr(buf, role)) found = pid;
    }
    if (d) closedir(d);
    return found;
}

static void test_pipelined_jobs(void) {
    pd_scheduler *s = start(2, 8);
    if (!s) return;
    /* Calibrate: one job gives this build's step and decode times; the burst then uses enough steps
     * that a denoise takes twice a decode, so decode never becomes the bottleneck and job k + 1
     * is denoising while job k decodes, however fast either stage is in this build. */
    pd_gen_params cal = params("calibration", 4);
    PD_CHECK_OK(submit(s, "cal", &cal));
    PD_CHECK(wait_final("cal", 240) && find_ev("cal", PD_JOB_EVENT_COMPLETED, -1, 0));
    pd_scheduler_stats st;
    pd_scheduler_stats_get(s, &st);
    double step_s = st.stage_seconds_mean[PD_STAGE_DENOISE] / 4, dec_s = st.stage_seconds_mean[PD_STAGE_DECODE];
    int steps = step_s > 0 ? (int)ceil(2.0 * dec_s / step_s) : 10;
    steps = steps < 4 ? 4 : steps > 80 ? 80 : steps;
    printf("     calibration: %.3f s per step, decode %.3f s -> %d steps\n", step_s, dec_s, steps);
    const char *ids[4] = {"p-0", "p-1", "p-2", "p-3"};
    const char *prompts[4] = {"a red fox in the snow", "waves on a beach", "a city at night", "a tree"};
    pd_gen_params p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = params(prompts[i], steps);
        PD_CHECK_OK(submit(s, ids[i], &p[i]));
    }
    for (int i = 0; i < 4; i++) {
        PD_CHECK_MSG(wait_final(ids[i], 240), "%s did not finish", ids[i]);
        const rec *f = find_ev(ids[i], PD_JOB_EVENT_FAILED, -1, 0);
        PD_CHECK_MSG(!f, "%s failed: %s: %s", ids[i], f ? f->code : "", f ? f->msg : "");
        PD_CHECK(find_ev(ids[i], PD_JOB_EVENT_COMPLETED, -1, 0) != NULL);
        PD_CHECK_MSG(outputs_ok(ids[i]), "%s: no MP4/PNG", ids[i]);
    }
    for (int k = 0; k + 1 < 4; k++) {
        const rec *dec0 = find_ev(ids[k], PD_JOB_EVENT_STAGE, PD_STAGE_DECODE, 0);
        const rec *dec1 = find_ev(ids[k], PD_JOB_EVENT_COMPLETED, -1, 0);
        const rec *den0 = find_ev(ids[k + 1], PD_JOB_EVENT_STAGE, PD_STAGE_DENOISE, 0);
        const rec *den1 = find_ev(ids[k + 1], PD_JOB_EVENT_PROGRESS, PD_STAGE_DENOISE, steps);
        PD_CHECK(dec0 && dec1 && den0 && den1);
        if (dec0 && dec1 && den0 && den1) {
            double overlap = fmin(dec1->t, den1->t) - fmax(dec0->t, den0->t);
            printf("     decode of %s [%.2f, %.2f] vs denoise of %s [%.2f, %.2f]: overlap %.2f s\n", ids[k],
                   dec0->t - dec0->t, dec1->t - dec0->t, ids[k + 1], den0->t - dec0->t, den1->t - dec0->t, overlap);
            PD_CHECK_MSG(overlap > 0, "decode of job %d does not overlap denoise of job %d", k, k + 1);
        }
    }
    pd_scheduler_stats_get(s, &st);
    PD_CHECK(st.stage_seconds_mean[PD_STAGE_DENOISE] > 0 && st.stage_seconds_mean[PD_STAGE_DECODE] > 0);
    printf("     stage means: text %.2f s, denoise %.2f s, decode %.2f s\n", st.stage_seconds_mean[PD_STAGE_TEXT],
           st.stage_seconds_mean[PD_STAGE_DENOISE], st.stage_seconds_mean[PD_STAGE_DECODE]);

    /* SIGKILL the denoise worker mid-denoise. */
    pd_gen_params longer = params("interrupted", 40);
    PD_CHECK_OK(submit(s, "k-1", &longer));
    for (double end = pd_now_s() + 120; !find_ev("k-1", PD_JOB_EVENT_PROGRESS, PD_STAGE_DENOISE, 1) && pd_now_s() < end;)
        sleep_ms(5);
    int pid = worker_pid("denoise");
    PD_CHECK(pid > 0 && kill(pid, SIGKILL) == 0);
    PD_CHECK(wait_final("k-1", 30));
    const rec *f = find_ev("k-1", PD_JOB_EVENT_FAILED, -1, 0);
    PD_CHECK(f && !strcmp(f->code, "worker_died"));
    if (f) printf("     %s\n", f->msg);
    PD_CHECK(wait_ready(s, 120));
    PD_CHECK(worker_pid("denoise") != pid);
    PD_CHECK_OK(submit(s, "k-2", &p[0]));
    PD_CHECK(wait_final("k-2", 240));
    PD_CHECK(find_ev("k-2", PD_JOB_EVENT_COMPLETED, -1, 0) != NULL && outputs_ok("k-2"));

    /* Cancel a running job after its second step: it ends within one more step. */
    PD_CHECK_OK(submit(s, "c-1", &longer));
    for (double end = pd_now_s() + 120; !find_ev("c-1", PD_JOB_EVENT_PROGRESS, PD_STAGE_DENOISE, 2) && pd_now_s() < end;)
        sleep_ms(2);
    PD_CHECK_OK(pd_scheduler_cancel(s, "c-1"));
    PD_CHECK(wait_final("c-1", 60));
    f = find_ev("c-1", PD_JOB_EVENT_FAILED, -1, 0);
    PD_CHECK(f && !strcmp(f->code, "cancelled"));
    int last = 0;
    pthread_mutex_lock(&ev_mu);
    for (int i = 0; i < n_evs; i++)
        if (!strcmp(evs[i].id, "c-1") && evs[i].kind == PD_JOB_EVENT_PROGRESS && evs[i].step > last) last = evs[i].step;
    pthread_mutex_unlock(&ev_mu);
    PD_CHECK_MSG(last <= 3, "cancelled after step 2 but ran to step %d", last);
    pd_scheduler_destroy(s);
}

static void test_queue_full(void) {
    pd_scheduler *s = start(1, 1);
    if (!s) return;
    pd_gen_params p = params("queue", 40);
    PD_CHECK_OK(submit(s, "f-0", &p));
    for (double end = pd_now_s() + 60; !find_ev("f-0", PD_JOB_EVENT_STARTED, -1, 0) && pd_now_s() < end;) sleep_ms(5);
    PD_CHECK_OK(submit(s, "f-1", &p));
    PD_CHECK_ERR(submit(s, "f-2", &p), PD_ERR_BUSY);
    pd_scheduler_destroy(s);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    setenv("PIPEDIT_LOG", "warn", 0);
    pd_log_set_level(PD_LOG_WARN);
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = 0;
    snprintf(exe, sizeof exe, "%s/pipedit", dirname(self));
    if (access(exe, X_OK) != 0) {
        printf("skip: %s is not built\n", exe);
        return 77;
    }
    if (pd_model_dir_default(model, sizeof model)) {
        printf("cannot prepare the tiny model: %s\n", pd_error_msg());
        return 1;
    }
    if (!pd_test_scratch_dir(tmpdir, sizeof tmpdir, "test_scheduler_pipeline")) return 1;
    PD_RUN(test_pipelined_jobs);
    PD_RUN(test_queue_full);
    pd_test_rmtree(tmpdir);
    return pd_test_summary();
}
