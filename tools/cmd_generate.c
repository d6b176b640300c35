/* pipedit generate: text to video in one process (pd_pipeline_generate). Every argument is checked
 * before the model is loaded, and the request against the model before any compute starts. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "engine/backend.h"
#include "base/clock.h"
#include "models/model_dir.h"
#include "models/pipeline.h"
#include "models/wan/pipesp_plan.h"
#include "workers/sp_group.h"
#include "tools/cli_opt.h"
#include "tools/commands.h"
#include "tools/device_opt.h"
#include "tools/aco_launch.h"
#include "tools/sp_launch.h"

static void pd_generate_usage(FILE *f) {
    fprintf(f,
            "usage: pipedit generate --prompt TEXT --out OUT.mp4 [--model DIR] [--negative-prompt TEXT]\n"
            "                        [--size WxH] [--frames N] [--steps N] [--guidance G] [--shift S]\n"
            "                        [--sampler unipc|euler|dpm++] [--seed S] [--noise philox|torch-cpu]\n"
            "                        [--init-latent IN.safetensors] [--save-latent OUT.safetensors]\n"
            "                        [--fps N] [--threads N]\n"
            "                        [--thumbnail OUT.png] [--device cpu|cuda|cuda:N]\n"
            "                        [--sp N [--pipesp-chunk G] [--cfg-parallel]] [--aco]\n"
            "Generates a video from a text prompt and writes it as an H.264 MP4.\n"
            "  --model DIR        a Wan2.1 model folder (diffusers layout); default: the embedded tiny model\n"
            "  --prompt TEXT      what to show (required)\n"
            "  --negative-prompt  what to steer away from (with guidance > 1)\n"
            "  --size WxH         pixels, multiples of 16 in 16..4096 (default: the model's, tiny 128x96)\n"
            "  --frames N         4k+1 frames, 1..1024 (default: the model's, tiny 9)\n"
            "  --steps N          sampler steps, 1..1000 (default: the model's, tiny 8)\n"
            "  --guidance G       classifier-free guidance scale, 0..50; <= 1 turns it off (default 5)\n"
            "  --shift S          flow shift, (0, 100] (default 5)\n"
            "  --sampler NAME     unipc (default), euler or dpm++ (the official Wan2.1 solvers are unipc\n"
            "                     and dpm++; models/sampler/sampler.h says how they match)\n"
            "  --seed S           random seed, 0..2^64-1 (default: a random one, printed)\n"
            "  --noise NAME       the starting noise's generator: philox (default) or torch-cpu, bit-exact\n"
            "                     torch.randn(shape, generator=torch.Generator(\"cpu\").manual_seed(S))\n"
            "                     (torch uses the low 32 bits of S)\n"
            "  --init-latent FILE start from tensor \"latent\" (16, T, H/8, W/8) of a safetensors file\n"
            "                     instead of noise (its shape must match --size and --frames)\n"
            "  --save-latent FILE also write the final latent (before decoding) as a safetensors file\n"
            "                     (tensor \"latent\"; `pipedit decode --latent` reads it)\n"
            "  --fps N            output frame rate, 1..120 (default 16)\n"
            "  --threads N        CPU threads, 1..1024 (default: all cores); results do not depend on it\n"
            "  --thumbnail PNG    also write the first frame as a PNG\n"
            "  --device SPEC      cpu (default), cuda (GPU 0) or cuda:N: where the text encoder, the DiT\n"
            "                     and the VAE run; cuda needs a build with PIPEDIT_CUDA and a visible GPU\n"
            "                     (--sp runs on the CPU only for now: GPU ranks, rank r on cuda:r over\n"
            "                     the NCCL communicator, are not wired into this command yet)\n"
            "  --sp N             run the DiT with sequence parallelism over N local worker processes\n"
            "                     (1..64); every rank runs the sampler loop, rank 0 decodes and writes\n"
            "  --pipesp-chunk G   heads per PipeSP chunk: 0 = measured (default), 1 = the paper's PipeSP\n"
            "  --cfg-parallel     with an even --sp N and guidance > 1: conditional and unconditional\n"
            "                     evaluations on the two halves of the ranks\n"
            "  --aco              Aco: a helper process (per rank with --sp) computes some heads of every\n"
            "                     self-attention, a share measured at run time; the video is the same bytes\n"
            "  --out OUT.mp4      the video to write (written atomically)\n");
}

#define PD_GEN_ERR(...)                                                                            \
    do {                                                                                           \
        fprintf(stderr, "pipedit generate: " __VA_ARGS__);                                         \
        fputc('\n', stderr);                                                                       \
    } while (0)

static int pd_parse_float(const char *opt, const char *v, float *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || fabs(x) > 1e30) {
        PD_GEN_ERR("%s must be a number, got \"%s\"", opt, v);
        return -1;
    }
    *out = (float)x;
    return 0;
}

static int pd_parse_size(const char *v, int *w, int *h) {
    char *x = strchr(v, 'x');
    if (!x) x = strchr(v, 'X');
    char wbuf[32];
    size_t wl = x ? (size_t)(x - v) : 0;
    if (!x || wl == 0 || wl >= sizeof wbuf) {
        PD_GEN_ERR("--size must look like 832x480 (width x height), got \"%s\"", v);
        return -1;
    }
    memcpy(wbuf, v, wl);
    wbuf[wl] = 0;
    if (!pd_cli_opt_int("pipedit generate", "--size width", wbuf, 0, INT_MAX, w) ||
        !pd_cli_opt_int("pipedit generate", "--size height", x + 1, 0, INT_MAX, h))
        return -1;
    return 0;
}

/* The folder of path must exist and be writable: found now rather than after the whole compute. */
static int pd_check_out_dir(const char *opt, const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!*path || (slash && !slash[1])) {
        PD_GEN_ERR("%s needs a file name, got \"%s\"", opt, path);
        return -1;
    }
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (access(dir, W_OK | X_OK)) {
        PD_GEN_ERR("%s: cannot write into folder %s: %s", opt, dir, strerror(errno));
        return -1;
    }
    return 0;
}

static atomic_int pd_generate_cancel;
static void pd_on_sigint(int sig) { atomic_store(&pd_generate_cancel, 1); }

typedef struct pd_progress_state {
    int tty;
    pd_stage last_stage;
    int open_line;       /* a tty line without its newline */
    double stage_start;  /* when last_stage began (monotonic seconds) */
    double last_call;    /* the previous report, or the start: where a new stage begins */
} pd_progress_state;

static void pd_progress(void *ud, pd_stage stage, int step, int total) {
    pd_progress_state *ps = ud;
    double now = pd_now_s();
    if (stage != ps->last_stage) ps->stage_start = ps->last_call;
    ps->last_call = now;
    if (ps->tty) {
        if (ps->open_line && stage != ps->last_stage) fputc('\n', stderr);
        enum { W = 30 };
        int fill = total > 0 ? (int)((int64_t)W * step / total) : W;
        char bar[W + 1];
        for (int i = 0; i < W; i++) bar[i] = i < fill ? '#' : '.';
        bar[W] = 0;
        double el = now - ps->stage_start;
        fprintf(stderr, "\r%-8s [%s] %d/%d  %.1fs", pd_stage_name(stage), bar, step, total, el);
        if (step > 0 && step < total) fprintf(stderr, ", ~%.0fs left ", el / step * (total - step));
        else fprintf(stderr, "%12s", "");
        ps->open_line = 1;
        if (step >= total) {
            fputc('\n', stderr);
            ps->open_line = 0;
        }
    } else {
        fprintf(stderr, "%s %d/%d\n", pd_stage_name(stage), step, total);
    }
    ps->last_stage = stage;
    fflush(stderr);
}

/* One rank of a --sp run (a child process). */
typedef struct pd_gen_sp_job {
    const char *model_dir, *out, *thumb, *save_latent;
    pd_gen_params p;
    int ranks, threads, chunk;
    bool cfg_parallel, aco;
    char name[64]; /* the SP group's base name, filled by pd_sp_launch */
} pd_gen_sp_job;

/* With --aco: starts this process's helper for pl's DiT (pd_aco_local_stop ends it). */
static pd_status pd_gen_aco_start(bool aco, pd_pipeline *pl, pd_backend *be, int threads, pd_aco_local *a) {
    memset(a, 0, sizeof *a);
    return aco ? pd_aco_local_start(pd_pipeline_dit(pl), be, threads, -1, 120.0, a) : PD_OK;
}

static int pd_gen_rank_main(void *ud, int rank) {
    const pd_gen_sp_job *job = ud;
    pd_backend *be = NULL;
    pd_pipeline *pl = NULL;
    pd_sp_group *g = NULL;
    pd_tensor latent = {0};
    /* rank 0 decodes; the others need the text encoder and the DiT only */
    pd_status st = pd_backend_cpu_create(job->threads, &be);
    if (st == PD_OK) st = pd_pipeline_load(job->model_dir, be, rank ? PD_PART_TEXT | PD_PART_DIT : PD_PART_ALL, &pl);
    const pd_sp_group_spec spec = {.name = job->name, .rank = rank, .ranks = job->ranks, .cfg_parallel = job->cfg_parallel,
                                   .chunk_heads = job->chunk, .timeout_s = 120.0, .be = be};
    if (st == PD_OK) st = pd_sp_group_join(pd_pipeline_dit(pl), &spec, &g);
    if (st == PD_OK) pd_sp_launch_fault_point(rank);
    if (st == PD_OK) pd_pipeline_set_dit_forward(pl, pd_sp_group_forward, g);
    pd_aco_local aco = {0};
    if (st == PD_OK) st = pd_gen_aco_start(job->aco, pl, be, job->threads, &aco);
    if (st == PD_OK && rank == 0) {
        pd_progress_state ps = {.tty = isatty(STDERR_FILENO), .last_stage = PD_STAGE_COUNT, .last_call = pd_now_s()};
        pd_gen_timings t;
        st = pd_pipeline_generate(pl, &job->p, job->out, job->thumb, job->save_latent, pd_progress, &ps, NULL, &t);
        if (ps.open_line) fputc('\n', stderr);
        if (st == PD_OK)
            printf("denoise %.3f s (%.3f s/step) over %d ranks%s; wrote %s\n", t.seconds[PD_STAGE_DENOISE],
                   t.denoise_step_seconds, job->ranks, job->cfg_parallel ? " (CFG parallel)" : "", job->out);
    } else if (st == PD_OK) {
        st = pd_pipeline_text_denoise(pl, &job->p, &latent, NULL, NULL, NULL, NULL);
    }
    if (st != PD_OK) PD_GEN_ERR("rank %d: %s", rank, pd_error_msg());
    if (aco.lender) pd_aco_local_stop(&aco, NULL);
    pd_tensor_free(&latent);
    pd_sp_group_leave(g);
    pd_pipeline_free(pl);
    pd_backend_free(be);
    return st == PD_OK ? 0 : 1;
}

int pd_cmd_generate(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *thumb = NULL, *prompt = NULL, *neg = NULL, *sampler = NULL;
    const char *noise = NULL, *init_latent = NULL, *save_latent = NULL;
    const char *device = "cpu";
    int width = 0, height = 0, frames = 0, steps = 0, fps = 0, threads = 0, sp_ranks = 0, chunk = 0;
    bool cfg_parallel = false, aco = false;
    float guidance = NAN, shift = NAN;
    uint64_t seed = 0;
    int seed_given = 0, size_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            pd_generate_usage(stdout);
            return 0;
        }
        if (strncmp(a, "--", 2)) {
            PD_GEN_ERR("unexpected argument \"%s\" (options start with --; quote the prompt)", a);
            return 2;
        }
        if (!strcmp(a, "--cfg-parallel") || !strcmp(a, "--aco")) {
            if (a[2] == 'c') cfg_parallel = true;
            else aco = true;
            continue;
        }
        if (i + 1 >= argc) {
            PD_GEN_ERR("%s needs a value", a);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--negative-prompt")) neg = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--thumbnail")) thumb = v;
        else if (!strcmp(a, "--sampler")) sampler = v;
        else if (!strcmp(a, "--noise")) noise = v;
        else if (!strcmp(a, "--init-latent")) init_latent = v;
        else if (!strcmp(a, "--save-latent")) save_latent = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--size")) bad = pd_parse_size(v, &width, &height), size_given = 1;
        else if (!strcmp(a, "--frames")) bad = !pd_cli_opt_int("pipedit generate", a, v, 1, PD_GEN_MAX_FRAMES, &frames);
        else if (!strcmp(a, "--steps")) bad = !pd_cli_opt_int("pipedit generate", a, v, 1, PD_GEN_MAX_STEPS, &steps);
        else if (!strcmp(a, "--fps")) bad = !pd_cli_opt_int("pipedit generate", a, v, 1, PD_GEN_MAX_FPS, &fps);
        else if (!strcmp(a, "--threads")) bad = !pd_cli_opt_int("pipedit generate", a, v, 1, 1024, &threads);
        else if (!strcmp(a, "--sp")) bad = !pd_cli_opt_int("pipedit generate", a, v, 1, 64, &sp_ranks);
        else if (!strcmp(a, "--pipesp-chunk")) bad = !pd_cli_opt_int("pipedit generate", a, v, 0, PD_SP_MAX_CHUNK, &chunk);
        else if (!strcmp(a, "--guidance")) bad = pd_parse_float(a, v, &guidance);
        else if (!strcmp(a, "--shift")) bad = pd_parse_float(a, v, &shift);
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-' || v[0] == '+') {
                PD_GEN_ERR("--seed must be an integer in 0..18446744073709551615, got \"%s\"", v);
                return 2;
            }
            seed = s;
            seed_given = 1;
        } else {
            PD_GEN_ERR("unknown option %s", a);
            pd_generate_usage(stderr);
            return 2;
        }
        if (bad) return 2;
    }
    if (!prompt) {
        PD_GEN_ERR("--prompt TEXT is required");
        pd_generate_usage(stderr);
        return 2;
    }
    if (!out) {
        PD_GEN_ERR("--out OUT.mp4 is required");
        pd_generate_usage(stderr);
        return 2;
    }

    if (!pd_device_opt_check("pipedit generate", device, sp_ranks)) return 2;

    /* The request: the defaults of the embedded model for now, the loaded model's later. */
    pd_gen_params p;
    pd_pipeline_default_params(NULL, &p);
    pd_sampler_kind sk = PD_SAMPLER_UNIPC;
    if (sampler && pd_sampler_kind_parse(sampler, &sk) != PD_OK) {
        PD_GEN_ERR("--sampler must be unipc, euler or dpm++, got \"%s\"", sampler);
        return 2;
    }
    pd_noise_kind nk = PD_NOISE_PHILOX;
    if (noise && pd_noise_kind_parse(noise, &nk) != PD_OK) {
        PD_GEN_ERR("--noise must be philox or torch-cpu, got \"%s\"", noise);
        return 2;
    }
#define PD_APPLY(p)                                                                                \
    do {                                                                                           \
        (p).prompt = prompt;                                                                       \
        if (neg) (p).negative_prompt = neg;                                                        \
        if (size_given) (p).width = width, (p).height = height;                                         \
        if (frames) (p).frames = frames;                                                           \
        if (steps) (p).steps = steps;                                                              \
        if (fps) (p).fps = fps;                                                                    \
        if (!isnan(guidance)) (p).guidance = guidance;                                             \
        if (!isnan(shift)) (p).shift = shift;                                                      \
        if (sampler) (p).sampler = sk;                                                             \
        if (noise) (p).noise = nk;                                                                 \
    } while (0)
    PD_APPLY(p);
    /* The one validation every front end shares; its field names are the HTTP API's, so say the flag. */
    static const char *const flag_of[] = {[PD_GEN_FIELD_PROMPT] = "--prompt", [PD_GEN_FIELD_NEGATIVE_PROMPT] = "--negative-prompt",
                                          [PD_GEN_FIELD_WIDTH] = "--size", [PD_GEN_FIELD_HEIGHT] = "--size",
                                          [PD_GEN_FIELD_FRAMES] = "--frames", [PD_GEN_FIELD_STEPS] = "--steps",
                                          [PD_GEN_FIELD_GUIDANCE] = "--guidance", [PD_GEN_FIELD_SHIFT] = "--shift",
                                          [PD_GEN_FIELD_SAMPLER] = "--sampler", [PD_GEN_FIELD_FPS] = "--fps"};
    pd_gen_field bad_field;
    if (pd_gen_params_check(&p, &bad_field) != PD_OK) {
        PD_GEN_ERR("%s: %s", flag_of[bad_field] ? flag_of[bad_field] : "request", pd_error_msg());
        return 2;
    }
    if (pd_check_out_dir("--out", out) || (thumb && pd_check_out_dir("--thumbnail", thumb)) ||
        (save_latent && pd_check_out_dir("--save-latent", save_latent)))
        return 2;
    pd_tensor init = {0}; /* --init-latent, checked against the request with it */
    if (init_latent && pd_pipeline_load_latent(init_latent, &init) != PD_OK) {
        PD_GEN_ERR("--init-latent %s", pd_error_msg());
        return 2;
    }
    if (init_latent) p.init_latent = &init;
    if (pd_pipeline_validate(NULL, &p) != PD_OK) {
        PD_GEN_ERR("%s", pd_error_msg());
        pd_tensor_free(&init);
        return 2;
    }

    if (!seed_given) {
        if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
            PD_GEN_ERR("no random seed available (%s); pass --seed", strerror(errno));
            pd_tensor_free(&init);
            return 1;
        }
        seed &= ((uint64_t)1 << 53) - 1; /* exact in a JSON number, so it can be replayed from any client */
    }

    char model_dir[4096];
    if (model) {
        snprintf(model_dir, sizeof model_dir, "%s", model);
    } else if (pd_model_dir_default(model_dir, sizeof model_dir) != PD_OK) {
        PD_GEN_ERR("embedded model: %s", pd_error_msg());
        pd_tensor_free(&init);
        return 1;
    }

    pd_backend *be = NULL;
    pd_pipeline *pl = NULL;
    int rc = 1;
    /* With --sp the ranks run in child processes; this one only checks the request (one thread, so
     * no thread pool is forked). */
    if (aco && strcmp(device, "cpu")) {
        PD_GEN_ERR("--aco runs on the CPU only (its helper is a CPU process)");
        pd_tensor_free(&init);
        return 2;
    }
    const int own_threads = threads ? threads : aco ? pd_backend_cpu_share(2) : 0; /* the helper gets as many */
    if (pd_device_opt_create("pipedit generate", device, sp_ranks ? 1 : own_threads, &be) != PD_OK) goto done;
    if (pd_pipeline_load(model_dir, be, PD_PART_ALL, &pl) != PD_OK) {
        PD_GEN_ERR("cannot load the model: %s", pd_error_msg());
        goto done;
    }
    pd_pipeline_default_params(pl, &p);
    PD_APPLY(p);
#undef PD_APPLY
    p.seed = seed;
    if (init_latent) p.init_latent = &init;
    if (pd_pipeline_validate(pl, &p) != PD_OK) {
        PD_GEN_ERR("%s", pd_error_msg());
        rc = 2;
        goto done;
    }
    if (cfg_parallel && (sp_ranks < 2 || sp_ranks % 2 || p.guidance <= 1.0f)) {
        PD_GEN_ERR("--cfg-parallel needs an even --sp N >= 2 and guidance > 1");
        rc = 2;
        goto done;
    }
    if (sp_ranks) {
        pd_pipeline_free(pl);
        pl = NULL;
        pd_backend_free(be);
        be = NULL;
        pd_gen_sp_job job = {.model_dir = model_dir, .out = out, .thumb = thumb, .save_latent = save_latent, .p = p,
                             .ranks = sp_ranks,
                             .threads = threads ? threads : pd_backend_cpu_share(aco ? 2 * sp_ranks : sp_ranks),
                             .chunk = chunk, .cfg_parallel = cfg_parallel, .aco = aco};
        printf("seed %" PRIu64 "\n", seed);
        rc = pd_sp_launch("pipedit generate", sp_ranks, pd_gen_rank_main, &job, job.name);
        goto done;
    }
    /* Ctrl-C cancels before the next DiT block; installed before anything is printed, so a
     * caller that waits for output and then interrupts always gets the clean path. */
    struct sigaction sa = {0}, old_sa;
    sa.sa_handler = pd_on_sigint;
    sigemptyset(&sa.sa_mask);
    atomic_store(&pd_generate_cancel, 0);
    sigaction(SIGINT, &sa, &old_sa);
    printf("seed %" PRIu64 "\n", seed);
    printf("%s: %dx%d, %d frames at %d fps, %d %s steps, guidance %g, shift %g, %s, ", model ? model : "embedded tiny model",
           p.width, p.height, p.frames, p.fps, p.steps, pd_sampler_kind_name(p.sampler), p.guidance, p.shift,
           init_latent ? "initial latent from --init-latent" : pd_noise_kind_name(p.noise));
    if (pd_backend_device(be) == PD_DEVICE_CPU) printf("%d threads\n", pd_backend_threads(be));
    else printf("on %s\n", pd_backend_name(be));
    fflush(stdout);

    pd_progress_state ps = {.tty = isatty(STDERR_FILENO), .last_stage = PD_STAGE_COUNT, .last_call = pd_now_s()};
    pd_gen_timings t;
    pd_aco_local aco_run;
    pd_status st = pd_gen_aco_start(aco, pl, be, own_threads, &aco_run);
    if (st == PD_OK) st = pd_pipeline_generate(pl, &p, out, thumb, save_latent, pd_progress, &ps, &pd_generate_cancel, &t);
    pd_aco_stats as = {0};
    if (aco_run.lender) pd_aco_local_stop(&aco_run, &as);
    sigaction(SIGINT, &old_sa, NULL);
    if (ps.open_line) fputc('\n', stderr);
    if (st != PD_OK) {
        PD_GEN_ERR("%s", st == PD_ERR_CANCELLED ? "cancelled" : pd_error_msg());
        goto done;
    }
    double total = 0;
    printf("stage      seconds\n");
    for (int s = 0; s < PD_STAGE_COUNT; s++) {
        total += t.seconds[s];
        printf("%-9s %8.3f", pd_stage_name((pd_stage)s), t.seconds[s]);
        if (s == PD_STAGE_DENOISE) printf("  (%.3f s/step)", t.denoise_step_seconds);
        printf("\n");
    }
    printf("%-9s %8.3f\n", "total", total);
    if (aco)
        printf("aco: %llu of %llu self-attention heads lent%s%s\n", (unsigned long long)as.heads_lent,
               (unsigned long long)as.heads_total, as.failed ? "; the helper failed: " : "", as.failed ? as.error : "");
    printf("wrote %s%s%s%s%s\n", out, thumb ? " and " : "", thumb ? thumb : "", save_latent ? " and " : "",
           save_latent ? save_latent : "");
    rc = 0;
done:
    pd_pipeline_free(pl);
    pd_backend_free(be);
    pd_tensor_free(&init);
    return rc;
}
