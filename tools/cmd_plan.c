/* pipedit plan: the best deployment of N GPUs for a model and a request shape, from the cost model
 * (plan/deploy.h), with the alternatives it considered. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/deploy.h"
#include "tools/cli_opt.h"
#include "tools/commands.h"

#define GIB 1073741824.0

static void pd_plan_usage(FILE *f) {
    fprintf(f, "usage: pipedit plan --model NAME|DIR --gpus N --device h100|h200|l4|PROFILE.json\n"
               "                    [--size WxH] [--frames F] [--steps S] [--no-cfg] [--rate R]\n"
               "                    [--requests K] [--top N] [--json]\n"
               "Predicts, from the cost model, how each deployment of N GPUs serves a stream of requests\n"
               "and recommends the best: denoise/decode split (DeDiVAE), SP degree, PipeSP chunk, CFG\n"
               "parallelism, Aco, and replicas. Nothing runs on a device.\n"
               "  --model NAME|DIR  wan2.1-t2v-1.3b, wan2.1-t2v-14b, or a model folder (its config.json files)\n"
               "  --gpus N          GPUs to deploy on (1..64)\n"
               "  --device D        a built-in profile (h100, h200: measured, DESIGN.md section 9; l4:\n"
               "                    published specifications) or a profile JSON (pipedit calibrate's format)\n"
               "  --size WxH        frame size (default: the model's, e.g. 1280x720 for the 14B)\n"
               "  --frames F        frames, 1 + 4k (default 81)\n"
               "  --steps S         denoising steps (default 50)\n"
               "  --no-cfg          one DiT evaluation per step (guidance 1) instead of the CFG pair\n"
               "  --rate R          requests per second arriving evenly: the lowest p99 latency wins;\n"
               "                    without it, --requests arrive at once and the highest throughput wins\n"
               "  --requests K      requests in the simulated stream (default 10 per GPU back to back, 1000 at a rate)\n"
               "  --top N           alternatives listed (default 12; --json lists all)\n"
               "  --json            machine-readable output\n"
               "Exit status: 0 a recommendation, 1 nothing fits in memory (or an error), 2 usage.\n");
}

static bool pd_plan_parse_size(const char *v, int *w, int *h) {
    char *end = NULL;
    long a = strtol(v, &end, 10);
    if (end == v || *end != 'x') return false;
    const char *s = end + 1;
    long b = strtol(s, &end, 10);
    if (end == s || *end || a < 1 || b < 1 || a > 8192 || b > 8192) return false;
    *w = (int)a, *h = (int)b;
    return true;
}

static json_t *pd_plan_eval_json(const pd_plan_eval *e) {
    char desc[160];
    pd_plan_describe(e, desc, sizeof desc);
    json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:i, s:b, s:s, s:i, s:i, s:i, s:b, s:f, s:f, s:f, s:f, s:f, s:f, s:f, "
                          "s:f, s:f, s:f, s:f, s:b}",
                          "deployment", desc, "replicas", e->d.replicas, "denoise_gpus", e->d.den, "decode_gpus",
                          e->d.dec, "sp", e->sp, "cfg_parallel", e->d.cfg_parallel, "attention",
                          e->sp < 2 ? "single" : (e->step.g == e->step.heads_per_rank ? "ulysses" : "pipesp"),
                          "pipesp_g", e->step.g, "heads_per_rank", e->step.heads_per_rank, "aco_share",
                          e->d.aco ? e->step_aco.aco_share : 0, "aco", e->d.aco, "step_s", e->step.step_s,
                          "step_aco_s", e->step_aco.step_s, "latency_alone_s", e->alone_s, "p50_s", e->stream.p50_s,
                          "p99_s", e->stream.p99_s, "throughput_rps", e->stream.throughput, "util_denoise",
                          e->stream.util_denoise, "util_decode", e->stream.util_decode, "mem_denoise_bytes",
                          e->mem_den, "mem_decode_bytes", e->mem_dec, "score", e->score, "fits", e->fits);
    if (o && !e->fits) json_object_set_new(o, "why_not", json_string(e->why_not));
    return o;
}

/* The one-SP-group baseline: every GPU denoises, the group decodes after denoising, Ulysses. */
static bool pd_plan_is_baseline(const pd_plan_eval *e, int gpus) {
    return e->d.replicas == 1 && e->d.den == gpus && e->d.dec == 0 && !e->d.cfg_parallel && e->d.g == 0;
}

/* Why the best wins, in one paragraph. */
static void pd_plan_why(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r,
                        const pd_plan_eval *e, int n, int gpus, const pd_plan_goal *goal, char *buf, size_t cap) {
    const pd_plan_eval *b = &e[0], *base = NULL, *next = NULL;
    for (int i = 0; i < n; i++)
        if (pd_plan_is_baseline(&e[i], gpus)) base = &e[i];
    if (n > 1 && e[1].fits) next = &e[1];
    size_t k = 0;
#define PD_WHY(...) k += (size_t)snprintf(buf + k, k < cap ? cap - k : 0, __VA_ARGS__)
    char d[160];
    const pd_plan_eval *top = b; /* the best score, which a tie may have passed over for a faster lone request */
    for (int i = 0; i < n; i++)
        if (e[i].fits && e[i].score < top->score) top = &e[i];
    const char *what = goal->rate > 0 ? "p99 latency" : "throughput";
    if (goal->rate > 0) PD_WHY("p99 latency %.1f s at %.4g requests/s", b->stream.p99_s, goal->rate);
    else PD_WHY("throughput %.4g requests/hour over %d back-to-back requests", b->stream.throughput * 3600, goal->requests);
    if (top == b) PD_WHY(", the best %s of all %d deployments", what, n);
    else {
        pd_plan_describe(top, d, sizeof d);
        PD_WHY(", within %.0f%% of the best %s (%s: %.4g), and the shortest latency of a lone request among those "
               "(%.1f s against %.1f s)", 100 * PD_PLAN_TIE, what, d,
               goal->rate > 0 ? top->stream.p99_s : top->stream.throughput * 3600, b->alone_s, top->alone_s);
    }
    if (next && !next->tied_best) {
        pd_plan_describe(next, d, sizeof d);
        if (goal->rate > 0) PD_WHY("; the runner-up %s has p99 %.1f s", d, next->stream.p99_s);
        else PD_WHY("; %.1f%% above the runner-up %s", 100 * (b->stream.throughput / next->stream.throughput - 1), d);
    }
    if (base && base != b && goal->rate > 0)
        PD_WHY("; all %d GPUs in one SP group decoding after denoising: p99 %.1f s (latency alone %.1f s vs %.1f s)", gpus,
               base->stream.p99_s, base->alone_s, b->alone_s);
    else if (base && base != b)
        PD_WHY("; %.2fx the throughput of all %d GPUs in one SP group decoding after denoising (latency alone %.1f s vs %.1f s)",
               b->stream.throughput / base->stream.throughput, gpus, b->alone_s, base->alone_s);
    if (b->d.replicas > 1) PD_WHY(". %d independent replicas: no communication between them", b->d.replicas);
    if (b->d.dec > 0)
        PD_WHY(". DeDiVAE: each %.1f s decode overlaps the next request's denoising (decoders busy %.0f%%)",
               b->stages.decode_s, 100 * b->stream.util_decode);
    if (b->sp > 1) {
        pd_plan_step uly;
        pd_plan_sp s = {.degree = b->sp, .cfg_parallel = b->d.cfg_parallel, .g = 0};
        if (pd_plan_dit_step(p, m, r, &s, &uly) == PD_OK && b->step.g != b->step.heads_per_rank)
            PD_WHY(". PipeSP g=%d of %d head slots leaves %.2f ms of all-to-all per block exposed against %.2f ms with Ulysses",
                   b->step.g, b->step.heads_per_rank, 1e3 * b->step.comm_exposed_s, 1e3 * uly.comm_exposed_s);
        else PD_WHY(". Ulysses over %d ranks: %.2f ms of all-to-all per block of %.1f ms", b->sp, 1e3 * b->step.comm_exposed_s,
                    1e3 * b->step.block_s);
    }
    if (b->d.cfg_parallel) PD_WHY(". CFG parallelism: the two halves of the CFG pair on two SP groups of %d", b->sp);
    if (b->d.aco)
        PD_WHY(". Aco lends %d of %d heads per attention call while the decoders are idle (%lld of %lld steps; %.2f s per "
               "step instead of %.2f s)",
               b->step_aco.aco_share, b->step_aco.g, (long long)b->stream.aco_steps, (long long)b->stream.steps,
               b->step_aco.step_s, b->step.step_s);
    PD_WHY(".");
#undef PD_WHY
}

static void pd_plan_row(const pd_plan_eval *e, int rank, int gpus) {
    char d[160];
    pd_plan_describe(e, d, sizeof d);
    printf("%4d  %-52s %9.1f %9.1f %9.1f %9.2f %8.1f %8.1f  %s%s\n", rank, d, e->alone_s, e->stream.p50_s,
           e->stream.p99_s, e->stream.throughput * 3600, e->mem_den / GIB, e->mem_dec / GIB, e->fits ? "yes" : "NO",
           pd_plan_is_baseline(e, gpus) ? "  (baseline)" : "");
}

int pd_cmd_plan(int argc, char **argv) {
    const char *model = NULL, *device = NULL, *size = NULL;
    int gpus = 0, frames = 81, steps = 50, requests = 0, top = 12;
    double rate = 0;
    bool json = false, cfg = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            pd_plan_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (!strcmp(a, "--no-cfg")) {
            cfg = false;
            continue;
        }
        static const char *const with_value[] = {"--model", "--device", "--size", "--gpus", "--frames",
                                                 "--steps", "--requests", "--top", "--rate"};
        bool known = false;
        for (size_t j = 0; j < sizeof with_value / sizeof with_value[0]; j++) known |= !strcmp(a, with_value[j]);
        if (!known) {
            fprintf(stderr, "pipedit plan: unknown option %s\n", a);
            pd_plan_usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "pipedit plan: %s needs a value\n", a);
            pd_plan_usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--size")) size = v;
        else if (!strcmp(a, "--gpus")) {
            if (!pd_cli_opt_int("pipedit plan", a, v, 1, 64, &gpus)) return 2;
        } else if (!strcmp(a, "--frames")) {
            if (!pd_cli_opt_int("pipedit plan", a, v, 1, 4097, &frames)) return 2;
        } else if (!strcmp(a, "--steps")) {
            if (!pd_cli_opt_int("pipedit plan", a, v, 1, 10000, &steps)) return 2;
        } else if (!strcmp(a, "--requests")) {
            if (!pd_cli_opt_int("pipedit plan", a, v, 1, 100000, &requests)) return 2;
        } else if (!strcmp(a, "--top")) {
            if (!pd_cli_opt_int("pipedit plan", a, v, 1, 100000, &top)) return 2;
        } else { /* --rate */
            char *end = NULL;
            rate = strtod(v, &end);
            if (end == v || *end || !isfinite(rate) || rate <= 0 || rate > 1e6) {
                fprintf(stderr, "pipedit plan: --rate must be a number of requests per second in (0, 1e6], got \"%s\"\n", v);
                return 2;
            }
        }
    }
    if (!model || !device || !gpus) {
        fprintf(stderr, "pipedit plan: --model, --gpus and --device are required\n");
        pd_plan_usage(stderr);
        return 2;
    }
    pd_plan_model m;
    if (pd_plan_model_get(model, &m) != PD_OK) {
        fprintf(stderr, "pipedit plan: %s\n", pd_error_msg());
        return 2;
    }
    pd_plan_profile prof;
    const pd_plan_profile *bp = pd_plan_profile_builtin(device);
    if (bp) prof = *bp;
    else if (strchr(device, '/') || strstr(device, ".json")) {
        if (pd_plan_profile_load(device, &prof) != PD_OK) {
            fprintf(stderr, "pipedit plan: --device: %s\n", pd_error_msg());
            return 2;
        }
    } else {
        fprintf(stderr, "pipedit plan: --device must be h100, h200, l4 or a profile .json file, got \"%s\"\n", device);
        return 2;
    }
    const pd_model_preset *pre = pd_model_preset_find(m.name);
    pd_plan_request r = {.width = pre ? pre->default_width : 832, .height = pre ? pre->default_height : 480,
                         .frames = frames, .steps = steps, .cfg = cfg};
    if (size && !pd_plan_parse_size(size, &r.width, &r.height)) {
        fprintf(stderr, "pipedit plan: --size must be WxH (e.g. 1280x720), got \"%s\"\n", size);
        return 2;
    }
    int64_t tokens = 0;
    if (pd_plan_request_check(&m, &r, &tokens) != PD_OK) {
        fprintf(stderr, "pipedit plan: %s\n", pd_error_msg());
        return 2;
    }
    /* Back to back, 10 requests per GPU: every replica count gets whole rounds. */
    pd_plan_goal goal = {.rate = rate, .requests = requests ? requests : (rate > 0 ? 1000 : 10 * gpus)};
    pd_plan_eval *e = NULL;
    int n = 0;
    if (pd_plan_search(&prof, &m, &r, gpus, &goal, &e, &n) != PD_OK) {
        fprintf(stderr, "pipedit plan: %s\n", pd_error_msg());
        return 1;
    }
    PD_ASSERT(n > 0);
    const bool fits = e[0].fits;
    int n_fit = 0;
    for (int i = 0; i < n; i++) n_fit += e[i].fits;
    char why[2048] = "";
    if (fits) pd_plan_why(&prof, &m, &r, e, n, gpus, &goal, why, sizeof why);
    else
        snprintf(why, sizeof why, "no deployment of %d x %s fits %s at %dx%dx%d; the one needing least memory: %s", gpus, prof.name,
                 m.name, r.width, r.height, r.frames, e[0].why_not);
    pd_plan_vae vae;
    pd_plan_vae_decode(&prof, &m, &r, &vae);
    const double text_s = pd_plan_text_seconds(&prof, &m, &r);

    if (json) {
        json_t *alts = json_array();
        for (int i = 0; i < n; i++) json_array_append_new(alts, pd_plan_eval_json(&e[i]));
        json_t *root = json_pack(
            "{s:s, s:{s:s, s:s}, s:i, s:{s:i, s:i, s:i, s:i, s:b, s:I}, s:{s:f, s:i, s:s}, s:{s:f, s:f, s:f}, s:b, "
            "s:o, s:s, s:i, s:i, s:o}",
            "model", m.name, "profile", "name", prof.name, "source", prof.source, "gpus", gpus, "request", "width",
            r.width, "height", r.height, "frames", r.frames, "steps", r.steps, "cfg", r.cfg, "tokens", (json_int_t)tokens,
            "goal", "rate", rate, "requests", goal.requests, "objective", rate > 0 ? "p99_latency" : "throughput",
            "stages", "text_s", text_s, "decode_s", vae.seconds, "vae_peak_bytes", vae.peak_bytes, "fits", fits, "best",
            fits ? pd_plan_eval_json(&e[0]) : json_null(), "why", why, "considered", n, "fitting", n_fit,
            "alternatives", alts);
        char *s = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
        if (!s) {
            fprintf(stderr, "pipedit plan: out of memory writing JSON\n");
            json_decref(root);
            free(e);
            return 1;
        }
        puts(s);
        free(s);
        json_decref(root);
        free(e);
        return fits ? 0 : 1;
    }

    printf("pipedit plan: %s at %dx%dx%d (%lld tokens), %d steps%s, on %d x %s\n", m.name, r.width, r.height, r.frames,
           (long long)tokens, r.steps, r.cfg ? " with CFG" : "", gpus, prof.name);
    printf("profile: %s\n", prof.source);
    if (rate > 0) printf("goal: %d requests arriving at %.4g/s; the lowest p99 latency wins\n", goal.requests, rate);
    else printf("goal: %d requests back to back; the highest throughput wins\n", goal.requests);
    printf("per request: text encoding %.2f s, VAE decode %.2f s on one GPU (streaming peak %.1f GiB)\n", text_s,
           vae.seconds, vae.peak_bytes / GIB);
    if (fits) {
        char d[160];
        pd_plan_describe(&e[0], d, sizeof d);
        printf("\nbest: %s\n", d);
        printf("  latency alone %.1f s, p50 %.1f s, p99 %.1f s, %.2f requests/hour; per GPU %.1f GiB denoise, %.1f GiB decode\n",
               e[0].alone_s, e[0].stream.p50_s, e[0].stream.p99_s, e[0].stream.throughput * 3600, e[0].mem_den / GIB,
               e[0].mem_dec / GIB);
        printf("  why: %s\n", why);
    } else {
        printf("\nDOES NOT FIT: %s\n", why);
    }
    printf("\n%d deployments considered, %d fit in memory (latency and p50/p99 in seconds, GiB per GPU):\n", n, n_fit);
    printf("%4s  %-52s %9s %9s %9s %9s %8s %8s  %s\n", "rank", "deployment", "alone", "p50", "p99", "req/hour",
           "den GiB", "dec GiB", "fits");
    bool base_shown = false;
    for (int i = 0; i < n && i < top; i++) {
        pd_plan_row(&e[i], i + 1, gpus);
        base_shown |= pd_plan_is_baseline(&e[i], gpus);
    }
    for (int i = top; i < n && !base_shown; i++)
        if (pd_plan_is_baseline(&e[i], gpus)) {
            printf("%4s\n", "...");
            pd_plan_row(&e[i], i + 1, gpus);
        }
    free(e);
    return fits ? 0 : 1;
}
