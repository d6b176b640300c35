/* pipedit calibrate: measures a cost-model profile (plan/cost.h) of this machine with short
 * microbenchmarks through the real backend (GEMM, attention, copy, conv3d) and, on the CPU, the
 * shared-memory communicator between two processes (all-to-all and point to point). */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/process.h"
#include "comm/comm.h"
#include "engine/backend.h"
#include "media/image_writer.h"
#include "media/video_writer.h"
#include "plan/cost.h"
#include "tools/cli_opt.h"
#include "tools/commands.h"
#include "tools/device_opt.h"

static void pd_cal_usage(FILE *f) {
    fprintf(f, "usage: pipedit calibrate --out PROFILE.json [--device cpu|cuda|cuda:N] [--threads N]\n"
               "                         [--mem-gib G] [--name NAME]\n"
               "Measures a cost-model profile for `pipedit plan --device PROFILE.json` (a few seconds):\n"
               "GEMM (f32 and bf16 weights), attention, device copy, SiLU and conv3d through the backend, and on\n"
               "the CPU the shared-memory communicator between two processes, the MP4 and PNG writer and\n"
               "first-touch page faults. Medians of 5 rounds.\n"
               "  --out FILE   where the profile goes (written atomically)\n"
               PD_DEVICE_OPT_USAGE
               "  --threads N  CPU threads (default: all cores)\n"
               "  --mem-gib G  device memory in GiB (default: physical memory on the CPU; required on CUDA)\n"
               "  --name NAME  the profile's name (default: the device spec)\n"
               "On CUDA the links are not measured (one process, one GPU): the profile keeps NVLink's\n"
               "published figures and says so in its source.\n");
}

typedef pd_status (*pd_cal_fn)(pd_backend *be, void *ctx);

static int pd_cal_cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pd_cal_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof v[0], pd_cal_cmpd);
    return v[n / 2];
}

/* Seconds per call: the median of PD_CAL_SAMPLES samples after one warm-up call, each sample
 * enough calls back to back (synchronised) to last PD_CAL_SAMPLE_S, so a few milliseconds of
 * another process's time on a shared machine move one sample by a few percent, not by half. */
#define PD_CAL_SAMPLES 3
#define PD_CAL_SAMPLE_S 0.1
/* Every compute figure is the median over PD_CAL_ROUNDS rounds of all the microbenchmarks, so a
 * burst of someone else's work on a shared machine (seconds long) slows one round, not one figure. */
#define PD_CAL_ROUNDS 5
static pd_status pd_cal_time(pd_backend *be, pd_cal_fn fn, void *ctx, double *out) {
    double t0 = pd_now_s();
    PD_TRY(fn(be, ctx));
    PD_TRY(pd_backend_synchronize(be));
    const double once = pd_now_s() - t0;
    const int calls = once >= PD_CAL_SAMPLE_S ? 1 : (int)(PD_CAL_SAMPLE_S / (once > 1e-6 ? once : 1e-6)) + 1;
    double t[PD_CAL_SAMPLES];
    for (int i = 0; i < PD_CAL_SAMPLES; i++) {
        t0 = pd_now_s();
        for (int k = 0; k < calls; k++) PD_TRY(fn(be, ctx));
        PD_TRY(pd_backend_synchronize(be));
        t[i] = (pd_now_s() - t0) / calls;
    }
    *out = pd_cal_median(t, PD_CAL_SAMPLES);
    return PD_OK;
}

/* A backend tensor of the shape filled with 0.25 (f32; a bf16 one stays zero). A weight (host not
 * NULL) is imported from *host, which the caller frees after the weight (the CPU backend's weight is
 * a view of it). */
static pd_status pd_cal_tensor(pd_backend *be, pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape,
                               pd_tensor *host) {
    pd_tensor tmp, *h = host ? host : &tmp;
    PD_TRY(pd_tensor_alloc(h, dt, ndim, shape));
    if (dt == PD_DTYPE_F32) {
        float *p = h->data;
        for (int64_t i = 0; i < pd_tensor_numel(h); i++) p[i] = 0.25f;
    }
    pd_status st;
    if (host) st = pd_backend_import_weight(be, out, h);
    else if ((st = pd_backend_tensor_alloc(be, out, dt, ndim, shape)) == PD_OK) st = pd_backend_upload(be, out, h);
    if (!host) pd_tensor_free(h);
    return st;
}

typedef struct pd_cal_ops {
    pd_tensor x, w, y, q, k, v, o, a, b, cx, cw, cy;
    pd_tensor wh, cwh; /* host copies of the weights */
    int pad[6];
} pd_cal_ops;

static pd_status pd_cal_gemm(pd_backend *be, void *c) {
    pd_cal_ops *o = c;
    return pd_op_linear(be, &o->y, &o->x, &o->w, NULL);
}
static pd_status pd_cal_attn(pd_backend *be, void *c) {
    pd_cal_ops *o = c;
    return pd_op_attention(be, &o->o, &o->q, &o->k, &o->v, NULL, 0.125f);
}
static pd_status pd_cal_copy(pd_backend *be, void *c) {
    pd_cal_ops *o = c;
    return pd_op_copy(be, &o->b, &o->a);
}
static pd_status pd_cal_silu(pd_backend *be, void *c) {
    pd_cal_ops *o = c;
    return pd_op_silu(be, &o->b, &o->a);
}
static pd_status pd_cal_conv(pd_backend *be, void *c) {
    pd_cal_ops *o = c;
    return pd_op_conv3d(be, &o->cy, &o->cx, &o->cw, NULL, o->pad);
}

/* The FLOP rate of a k3 conv3d ch -> ch producing `frames` output frames of fh x fw (padded in
 * height and width, frames + 2 input frames). */
static pd_status pd_cal_conv_rate(pd_backend *be, int64_t ch, int64_t frames, int64_t fh, int64_t fw, double *rate) {
    pd_cal_ops o = {.pad = {0, 0, 1, 1, 1, 1}};
    int64_t xs[4] = {ch, frames + 2, fh, fw}, ws[5] = {ch, ch, 3, 3, 3}, ys[4] = {ch, frames, fh, fw};
    double t = 0;
    pd_status st = pd_cal_tensor(be, &o.cx, PD_DTYPE_F32, 4, xs, NULL);
    if (st == PD_OK) st = pd_cal_tensor(be, &o.cw, PD_DTYPE_F32, 5, ws, &o.cwh);
    if (st == PD_OK) st = pd_cal_tensor(be, &o.cy, PD_DTYPE_F32, 4, ys, NULL);
    if (st == PD_OK) st = pd_cal_time(be, pd_cal_conv, &o, &t);
    pd_backend_tensor_free(be, &o.cx), pd_backend_tensor_free(be, &o.cy), pd_backend_tensor_free(be, &o.cw);
    pd_tensor_free(&o.cwh);
    *rate = 2.0 * 27 * ch * ch * frames * fh * fw / t;
    return st;
}

/* Compute figures. GPU shapes are section 9's (8192^3 GEMM, 32760 x 12 x 128 attention, conv3d
 * 96->96 over 4 frames of 480x832); CPU shapes are small enough for seconds on two cores. */
static pd_status pd_cal_compute(pd_backend *be, bool gpu, pd_plan_profile *p) {
    pd_cal_ops o = {.pad = {0, 0, 1, 1, 1, 1}};
    const int64_t G = gpu ? 8192 : 768, N = gpu ? 32760 : 2048, H = gpu ? 12 : 4, D = gpu ? 128 : 64;
    const int64_t ch = 96, fh = gpu ? 480 : 48, fw = gpu ? 832 : 64;
    double t;
    for (int bf = 0; bf <= 1; bf++) {
        int64_t xs[2] = {G, G};
        PD_TRY(pd_cal_tensor(be, &o.x, PD_DTYPE_F32, 2, xs, NULL));
        PD_TRY(pd_cal_tensor(be, &o.w, bf ? PD_DTYPE_BF16 : PD_DTYPE_F32, 2, xs, &o.wh));
        PD_TRY(pd_cal_tensor(be, &o.y, PD_DTYPE_F32, 2, xs, NULL));
        PD_TRY(pd_cal_time(be, pd_cal_gemm, &o, &t));
        *(bf ? &p->gemm_bf16 : &p->gemm_f32) = 2.0 * G * G * G / t;
        pd_backend_tensor_free(be, &o.x), pd_backend_tensor_free(be, &o.y), pd_backend_tensor_free(be, &o.w);
        pd_tensor_free(&o.wh);
    }
    int64_t qs[4] = {1, N, H, D};
    PD_TRY(pd_cal_tensor(be, &o.q, PD_DTYPE_F32, 4, qs, NULL));
    PD_TRY(pd_cal_tensor(be, &o.k, PD_DTYPE_F32, 4, qs, NULL));
    PD_TRY(pd_cal_tensor(be, &o.v, PD_DTYPE_F32, 4, qs, NULL));
    PD_TRY(pd_cal_tensor(be, &o.o, PD_DTYPE_F32, 4, qs, NULL));
    PD_TRY(pd_cal_time(be, pd_cal_attn, &o, &t));
    p->attn = 4.0 * N * N * H * D / t;
    int64_t n1[1] = {gpu ? (int64_t)1 << 28 : (int64_t)1 << 24};
    PD_TRY(pd_cal_tensor(be, &o.a, PD_DTYPE_F32, 1, n1, NULL));
    PD_TRY(pd_cal_tensor(be, &o.b, PD_DTYPE_F32, 1, n1, NULL));
    PD_TRY(pd_cal_time(be, pd_cal_copy, &o, &t));
    p->mem_bw = 2.0 * 4.0 * n1[0] / t;
    PD_TRY(pd_cal_time(be, pd_cal_silu, &o, &t));
    p->silu = n1[0] / t;
    pd_tensor *all[] = {&o.q, &o.k, &o.v, &o.o, &o.a, &o.b};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pd_backend_tensor_free(be, all[i]);
    if (gpu) return pd_cal_conv_rate(be, ch, 4, fh, fw, &p->conv);
    /* The CPU's conv rate depends on the width (plan/cost.h, conv_by_cout): one output frame of a
     * streaming chunk (3 input frames through the causal k3 kernel) at the VAE's widths. The frame,
     * 256 x 256, is as large as the VAE's (its inputs outgrow the L2 cache as the VAE's do) and splits
     * into enough row tasks for the threads (at 96 x 128 the direct path, cout <= 8, made 3 tasks
     * for 2 threads). */
    static const int widths[] = {8, 16, 32, 64, 96};
    p->conv_n = 0;
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++, p->conv_n++) {
        p->conv_cout[i] = widths[i];
        PD_TRY(pd_cal_conv_rate(be, widths[i], 1, 256, 256, &p->conv_rate[i]));
    }
    p->conv = p->conv_rate[p->conv_n - 1];
    return PD_OK;
}

/* ---- the decode stage around the VAE (CPU) ---- */

/* The media writer as a worker's decode stage runs it (models/pipeline_media.c): an MP4 of the first
 * `frames` of frame[] (side x side) through x264 on one thread, and frame[0] as the PNG thumbnail, in
 * a fresh folder under /tmp. Seconds from open to the closed files. */
static pd_status pd_cal_clip(const char *dir, const pd_tensor *frame, int frames, double *out) {
    char mp4[4096], png[4096];
    snprintf(mp4, sizeof mp4, "%s/clip.mp4", dir);
    snprintf(png, sizeof png, "%s/thumb.png", dir);
    const int side = (int)frame[0].shape[1];
    const double t0 = pd_now_s();
    pd_video_writer *vw = NULL;
    PD_TRY(pd_video_writer_open(mp4, side, side, 16, 1, &vw));
    pd_status st = PD_OK;
    for (int i = 0; i < frames && st == PD_OK; i++) st = pd_video_writer_add_frame(vw, &frame[i]);
    if (st == PD_OK) st = pd_image_write_png(png, &frame[0]);
    if (st != PD_OK) pd_video_writer_abort(vw);
    else st = pd_video_writer_close(vw);
    *out = pd_now_s() - t0;
    unlink(mp4), unlink(png);
    return st;
}

/* The profile's encode_first_px and encode_px (plan/cost.h): the medians of 3 clips of 1 and of 5
 * frames at 512 x 512 (the CPU benchmarks' sizes). The frames are noise in [-1, 1], each its own
 * (what a VAE with random weights emits; a real video's frames compress with less work, so this
 * prices the worst case of x264's CRF mode). */
static pd_status pd_cal_encode(pd_plan_profile *p) {
    enum { SIDE = 512, MORE = 4, N = 3 };
    char dir[] = "/tmp/pipedit-calibrate-XXXXXX";
    if (!mkdtemp(dir)) return pd_error_set(PD_ERR_IO, "calibrate: cannot make a folder under /tmp");
    pd_tensor frame[1 + MORE] = {{0}};
    const int64_t shape[3] = {3, SIDE, SIDE};
    pd_status st = PD_OK;
    uint32_t x = 12345;
    for (int k = 0; k <= MORE && st == PD_OK; k++) {
        if ((st = pd_tensor_alloc(&frame[k], PD_DTYPE_F32, 3, shape)) != PD_OK) break;
        float *f = frame[k].data;
        for (int64_t i = 0; i < pd_tensor_numel(&frame[k]); i++) {
            x = x * 1664525u + 1013904223u;
            f[i] = (float)(x >> 8) / (float)(1u << 23) - 1.0f;
        }
    }
    double one[N], five[N];
    for (int i = 0; i < N && st == PD_OK; i++) {
        st = pd_cal_clip(dir, frame, 1, &one[i]);
        if (st == PD_OK) st = pd_cal_clip(dir, frame, 1 + MORE, &five[i]);
    }
    for (int k = 0; k <= MORE; k++) pd_tensor_free(&frame[k]);
    rmdir(dir);
    if (st != PD_OK) return st;
    qsort(one, N, sizeof one[0], pd_cal_cmpd), qsort(five, N, sizeof five[0], pd_cal_cmpd);
    const double px = (double)SIDE * SIDE, more_s = five[N / 2] - one[N / 2];
    p->encode_first_px = px / one[N / 2];
    p->encode_px = more_s > 0 ? MORE * px / more_s : p->encode_first_px;
    return PD_OK;
}

/* The profile's fault_bw: bytes per second of first touch. 64 MiB blocks (above glibc's largest mmap
 * threshold, so each comes freshly mapped from the kernel, as the decoder's large activations do)
 * allocated, written and freed, less the time of writing the same bytes into a block already
 * touched. Medians of 5. */
static pd_status pd_cal_fault(pd_plan_profile *p) {
    enum { N = 5 };
    const size_t n = (size_t)64 << 20;
    unsigned char *warm = aligned_alloc(64, n);
    if (!warm) return pd_error_set(PD_ERR_NOMEM, "calibrate: %zu bytes", n);
    memset(warm, 1, n);
    double tw[N], tf[N];
    for (int i = 0; i < N; i++) {
        double t0 = pd_now_s();
        memset(warm, 2 + i, n);
        __asm__ volatile("" : : "r"(warm) : "memory"); /* the writes happen */
        tw[i] = pd_now_s() - t0;
        t0 = pd_now_s();
        unsigned char *fresh = aligned_alloc(64, n);
        if (!fresh) {
            free(warm);
            return pd_error_set(PD_ERR_NOMEM, "calibrate: %zu bytes", n);
        }
        memset(fresh, 2 + i, n);
        __asm__ volatile("" : : "r"(fresh) : "memory");
        free(fresh);
        tf[i] = pd_now_s() - t0;
    }
    free(warm);
    qsort(tw, N, sizeof tw[0], pd_cal_cmpd), qsort(tf, N, sizeof tf[0], pd_cal_cmpd);
    const double extra = tf[N / 2] - tw[N / 2];
    p->fault_bw = (double)n / (extra > 0 ? extra : tf[N / 2]);
    return PD_OK;
}

/* The communicator sequence both ranks run: for each size, 1 + 9 all-to-alls of `size` bytes to each
 * rank, then 1 + 9 round trips of `size` bytes (0 sends, 1 answers); the medians go to the
 * pd_cal_comm_times at ctx. */
#define PD_CAL_REPS 9
#define PD_CAL_NSIZES 3
static const size_t pd_cal_sizes[PD_CAL_NSIZES] = {64, 1u << 20, 16u << 20};

typedef struct pd_cal_comm_times {
    double a2a[PD_CAL_NSIZES], rtt[PD_CAL_NSIZES];
} pd_cal_comm_times;

static pd_status pd_cal_comm_run(pd_comm *c, void *ctx) {
    double *a2a = ((pd_cal_comm_times *)ctx)->a2a, *rtt = ((pd_cal_comm_times *)ctx)->rtt;
    const int me = pd_comm_rank(c);
    char *buf = malloc(4 * pd_cal_sizes[PD_CAL_NSIZES - 1]);
    if (!buf) return pd_error_set(PD_ERR_NOMEM, "calibration buffers");
    memset(buf, 1, 4 * pd_cal_sizes[PD_CAL_NSIZES - 1]);
    pd_status st = PD_OK;
    for (int s = 0; s < PD_CAL_NSIZES && st == PD_OK; s++) {
        const size_t n = pd_cal_sizes[s];
        size_t bytes[2] = {n, n}, off[2] = {0, n}, roff[2] = {2 * n, 3 * n};
        double t[PD_CAL_REPS + 1];
        for (int i = 0; i <= PD_CAL_REPS && st == PD_OK; i++) {
            double t0 = pd_now_s();
            st = pd_comm_alltoallv(c, buf, bytes, off, buf, bytes, roff);
            t[i] = pd_now_s() - t0;
        }
        a2a[s] = pd_cal_median(t + 1, PD_CAL_REPS);
        for (int i = 0; i <= PD_CAL_REPS && st == PD_OK; i++) {
            double t0 = pd_now_s();
            if (me == 0) {
                if ((st = pd_comm_send(c, buf, n, 1)) == PD_OK) st = pd_comm_recv(c, buf + 2 * n, n, 1);
            } else {
                if ((st = pd_comm_recv(c, buf + 2 * n, n, 0)) == PD_OK) st = pd_comm_send(c, buf, n, 0);
            }
            t[i] = pd_now_s() - t0;
        }
        rtt[s] = pd_cal_median(t + 1, PD_CAL_REPS);
    }
    free(buf);
    return st;
}

#define PD_CAL_MAX_RANKS 32 /* ranks of a calibration group */

/* Runs run(c, ctx) on `ranks` ranks of a shared-memory communicator: rank 0 in this process, the
 * others in forked children (each with its own copy of *ctx, so only rank 0's results stay here).
 * Every child is waited for; a failure anywhere is an error naming `what`. */
static pd_status pd_cal_group(const char *what, int ranks, pd_status (*run)(pd_comm *c, void *ctx), void *ctx) {
    char name[64];
    snprintf(name, sizeof name, "calib-%d", (int)getpid());
    const pid_t parent = getpid();
    pid_t pids[PD_CAL_MAX_RANKS];
    int started = 0;
    pd_status st = ranks >= 2 && ranks <= PD_CAL_MAX_RANKS ? PD_OK : pd_error_set(PD_ERR_INVALID, "%s: %d ranks", what, ranks);
    for (int r = 1; r < ranks && st == PD_OK; r++) {
        pid_t pid = fork();
        if (pid < 0) {
            st = pd_error_set(PD_ERR_IO, "%s: fork for rank %d failed", what, r);
            break;
        }
        if (pid == 0) {
            pd_process_die_with_parent(parent);
            pd_comm *c = NULL;
            int rc = pd_comm_shm_create(name, r, ranks, 30.0, &c) == PD_OK && run(c, ctx) == PD_OK ? 0 : 1;
            pd_comm_destroy(c);
            _exit(rc);
        }
        pids[started++] = pid;
    }
    if (st == PD_OK) {
        pd_comm *c = NULL;
        st = pd_comm_shm_create(name, 0, ranks, 30.0, &c);
        if (st == PD_OK) st = run(c, ctx);
        pd_comm_destroy(c);
    }
    bool children_ok = true;
    for (int i = 0; i < started; i++) {
        int ws = 0;
        if (st != PD_OK) kill(pids[i], SIGKILL);
        waitpid(pids[i], &ws, 0);
        children_ok &= WIFEXITED(ws) && WEXITSTATUS(ws) == 0;
    }
    if (st == PD_OK && !children_ok) st = pd_error_set(PD_ERR_DEVICE, "%s: a rank in another process failed", what);
    return st;
}

static pd_status pd_cal_comm(pd_plan_profile *p) {
    pd_cal_comm_times t = {0};
    PD_TRY(pd_cal_group("the communicator's calibration", 2, pd_cal_comm_run, &t));
    const double *a2a = t.a2a, *rtt = t.rtt;
    /* All-to-all over 2 ranks: each sends 2n, of which n leaves: t = latency + n / bw; one way of a
     * round trip: t = latency + n / bw. The latency is the smallest size's time, the bandwidth the
     * slope between the two larger sizes (wake-up jitter on a busy machine cancels out of it). */
    const double dn = (double)(pd_cal_sizes[2] - pd_cal_sizes[1]);
    const double da = a2a[2] - a2a[1], dr = (rtt[2] - rtt[1]) / 2;
    if (!(da > 0 && dr > 0))
        return pd_error_set(PD_ERR_DEVICE, "communicator timings too noisy to fit (all-to-all %.3g/%.3g s, round trip "
                            "%.3g/%.3g s at 1 and 16 MiB): run again on a quieter machine", a2a[1], a2a[2], rtt[1], rtt[2]);
    p->a2a.latency = a2a[0];
    p->a2a.bw = dn / da;
    p->p2p.latency = rtt[0] / 2;
    p->p2p.bw = dn / dr;
    return PD_OK;
}

/* The profile's crowd_wait: what a collective costs beyond its transfer when a group's ranks
 * outnumber the cores (SP 4 on 2 cores). 2 x cores single-threaded ranks each run a piece of a rank's
 * work (linears of (256, 512) x (512, 512)^T through a one-thread CPU backend, about
 * PD_CAL_CROWD_PIECE_S alone), then meet in an all-to-all of PD_CAL_CROWD_MSG bytes to every peer (a
 * query chunk's size at a thousand tokens), PD_CAL_CROWD_ROUNDS times. A round's fair time is every
 * rank's piece spread over the cores plus the all-to-all as the model prices it for a rank of that
 * share; crowd_wait is the mean round beyond it (the peers a collective waits for, woken, queue for a
 * core behind ranks already computing their next piece). The mean, not the median: a forward pays
 * every round's wait, and they come in bursts. */
#define PD_CAL_CROWD_PIECE_S 0.005
#define PD_CAL_CROWD_ROUNDS 60
#define PD_CAL_CROWD_MSG ((size_t)128 << 10)

/* A rank's piece of work: its own one-thread CPU backend and a linear's tensors. */
typedef struct pd_cal_piece {
    pd_backend *be;
    pd_cal_ops o;
} pd_cal_piece;

static void pd_cal_piece_free(pd_cal_piece *pc) {
    if (!pc->be) return;
    pd_backend_tensor_free(pc->be, &pc->o.x), pd_backend_tensor_free(pc->be, &pc->o.y);
    pd_backend_tensor_free(pc->be, &pc->o.w);
    pd_tensor_free(&pc->o.wh);
    pd_backend_free(pc->be);
    pc->be = NULL;
}

static pd_status pd_cal_piece_init(pd_cal_piece *pc) {
    memset(pc, 0, sizeof *pc);
    const int64_t xs[2] = {256, 512}, ws[2] = {512, 512};
    pd_status st = pd_backend_cpu_create(1, &pc->be);
    if (st == PD_OK) st = pd_cal_tensor(pc->be, &pc->o.x, PD_DTYPE_F32, 2, xs, NULL);
    if (st == PD_OK) st = pd_cal_tensor(pc->be, &pc->o.y, PD_DTYPE_F32, 2, xs, NULL);
    if (st == PD_OK) st = pd_cal_tensor(pc->be, &pc->o.w, PD_DTYPE_F32, 2, ws, &pc->o.wh);
    if (st != PD_OK) pd_cal_piece_free(pc);
    return st;
}

static pd_status pd_cal_piece_run(pd_cal_piece *pc, int linears) {
    for (int i = 0; i < linears; i++) PD_TRY(pd_cal_gemm(pc->be, &pc->o));
    return PD_OK;
}

typedef struct pd_cal_crowd_ctx {
    int linears;    /* the piece */
    double round_s; /* out: the mean round */
} pd_cal_crowd_ctx;

/* One rank's rounds: a piece, then an all-to-all of PD_CAL_CROWD_MSG bytes to every rank. */
static pd_status pd_cal_crowd_run(pd_comm *c, void *ctx) {
    pd_cal_crowd_ctx *x = ctx;
    const int ranks = pd_comm_size(c);
    const size_t m = PD_CAL_CROWD_MSG;
    size_t bytes[PD_CAL_MAX_RANKS], off[PD_CAL_MAX_RANKS], roff[PD_CAL_MAX_RANKS];
    for (int r = 0; r < ranks; r++) bytes[r] = m, off[r] = (size_t)r * m, roff[r] = (size_t)(ranks + r) * m;
    char *buf = calloc(2 * (size_t)ranks, m);
    pd_cal_piece pc;
    pd_status st = buf ? pd_cal_piece_init(&pc) : pd_error_set(PD_ERR_NOMEM, "calibrate: %zu bytes", 2 * ranks * m);
    if (st != PD_OK) {
        free(buf);
        return st;
    }
    st = pd_comm_alltoallv(c, buf, bytes, off, buf, bytes, roff); /* everyone is up */
    double t0 = 0;
    for (int i = 0; i <= PD_CAL_CROWD_ROUNDS && st == PD_OK; i++) {
        if (i == 1) t0 = pd_now_s(); /* round 0 warms up */
        st = pd_cal_piece_run(&pc, x->linears);
        if (st == PD_OK) st = pd_comm_alltoallv(c, buf, bytes, off, buf, bytes, roff);
    }
    if (st == PD_OK) x->round_s = (pd_now_s() - t0) / PD_CAL_CROWD_ROUNDS;
    pd_cal_piece_free(&pc);
    free(buf);
    return st;
}

static pd_status pd_cal_crowd(pd_plan_profile *p) {
    const int cores = p->cores > 0 ? p->cores : 1;
    const int ranks = 2 * cores <= PD_CAL_MAX_RANKS ? 2 * cores : PD_CAL_MAX_RANKS;
    /* The piece alone, on an idle core: linears for PD_CAL_CROWD_PIECE_S, then the median of 5. */
    pd_cal_piece pc;
    PD_TRY(pd_cal_piece_init(&pc));
    pd_cal_crowd_ctx x = {.linears = 1};
    double alone[5], t0 = pd_now_s();
    pd_status st = pd_cal_piece_run(&pc, 4);
    const double one = (pd_now_s() - t0) / 4;
    x.linears = one > 0 ? (int)(PD_CAL_CROWD_PIECE_S / one + 0.5) : 1;
    if (x.linears < 1) x.linears = 1;
    for (int i = 0; i < 5 && st == PD_OK; i++) {
        t0 = pd_now_s();
        st = pd_cal_piece_run(&pc, x.linears);
        alone[i] = pd_now_s() - t0;
    }
    pd_cal_piece_free(&pc);
    PD_TRY(st);
    const double piece = pd_cal_median(alone, 5);
    PD_TRY(pd_cal_group("the crowded group", ranks, pd_cal_crowd_run, &x));
    /* the all-to-all as the model prices it for a single-threaded rank among `ranks` */
    pd_plan_profile rank;
    pd_plan_profile_share(p, pd_plan_cpu_share(cores, 1, ranks), &rank);
    const double xfer = pd_plan_a2a_s(&rank.a2a, ranks, (double)PD_CAL_CROWD_MSG * ranks);
    const double fair = piece * ranks / cores + xfer, wait = x.round_s - fair;
    p->crowd_wait = wait > 0 ? wait : 0;
    return PD_OK;
}

/* Each compute figure of *out (the rest kept) as the median of its n rounds' values. */
static void pd_cal_median_profile(const pd_plan_profile *r, int n, pd_plan_profile *out) {
    double v[PD_CAL_ROUNDS];
#define PD_CAL_MED(field)                               \
    do {                                                \
        for (int i = 0; i < n; i++) v[i] = r[i].field;  \
        out->field = pd_cal_median(v, n);               \
    } while (0)
    PD_CAL_MED(gemm_f32);
    PD_CAL_MED(gemm_bf16);
    PD_CAL_MED(attn);
    PD_CAL_MED(mem_bw);
    PD_CAL_MED(conv);
    PD_CAL_MED(silu);
    out->conv_n = r[0].conv_n;
    for (int k = 0; k < out->conv_n; k++) {
        out->conv_cout[k] = r[0].conv_cout[k];
        PD_CAL_MED(conv_rate[k]);
    }
#undef PD_CAL_MED
}

int pd_cmd_calibrate(int argc, char **argv) {
    const char *out = NULL, *device = "cpu", *name = NULL;
    int threads = 0, mem_gib = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            pd_cal_usage(stdout);
            return 0;
        }
        if (strcmp(a, "--out") && strcmp(a, "--device") && strcmp(a, "--threads") && strcmp(a, "--mem-gib") &&
            strcmp(a, "--name")) {
            fprintf(stderr, "pipedit calibrate: unknown option %s\n", a);
            pd_cal_usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "pipedit calibrate: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--name")) name = v;
        else if (!strcmp(a, "--threads")) {
            if (!pd_cli_opt_int("pipedit calibrate", a, v, 1, 1024, &threads)) return 2;
        } else if (!pd_cli_opt_int("pipedit calibrate", a, v, 1, 1 << 20, &mem_gib)) return 2;
    }
    if (!out) {
        fprintf(stderr, "pipedit calibrate: --out is required\n");
        pd_cal_usage(stderr);
        return 2;
    }
    const int dev = pd_backend_spec_device(device);
    if (dev == -2) {
        fprintf(stderr, "pipedit calibrate: --device must be cpu, cuda or cuda:N, got \"%s\"\n", device);
        return 2;
    }
    if (dev >= 0 && !mem_gib) {
        fprintf(stderr, "pipedit calibrate: --mem-gib is required with a CUDA device\n");
        return 2;
    }
    pd_plan_profile p = *pd_plan_profile_builtin("h100"); /* links on CUDA; every other field is set below */
    snprintf(p.name, sizeof p.name, "%s", name ? name : device);
    pd_backend *be = NULL;
    if (pd_device_opt_create("pipedit calibrate", device, threads, &be) != PD_OK) return 1;
    pd_status st = PD_OK;
    pd_plan_profile rounds[PD_CAL_ROUNDS];
    for (int i = 0; i < PD_CAL_ROUNDS && st == PD_OK; i++) {
        rounds[i] = p;
        st = pd_cal_compute(be, dev >= 0, &rounds[i]);
    }
    if (st == PD_OK) pd_cal_median_profile(rounds, PD_CAL_ROUNDS, &p);
    /* On the CPU the rates above are of every thread busy, one per core: processes on it share them. */
    p.cores = dev < 0 ? pd_backend_threads(be) : 0;
    pd_backend_free(be);
    if (st == PD_OK && dev < 0) {
        p.topology = PD_PLAN_SHM;
        st = pd_cal_comm(&p);
        if (st == PD_OK) st = pd_cal_crowd(&p);
        /* The decode stage's media writer and first touches run on the host: CPU profiles only (a GPU
         * profile leaves them 0, plan/cost.h). */
        if (st == PD_OK) st = pd_cal_encode(&p);
        if (st == PD_OK) st = pd_cal_fault(&p);
    }
    if (st != PD_OK) {
        fprintf(stderr, "pipedit calibrate: %s\n", pd_error_msg());
        return 1;
    }
    p.mem_bytes = mem_gib ? mem_gib * 1073741824.0 : (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    p.act_bytes = 4; /* the engine's activations are f32 */
    /* How many passes a block makes is a property of the backend's code, not a measurement: the CPU
     * backend's fused ops (PD_PLAN_CPU_PASSES), or eager per-op kernels on CUDA. */
    p.eltwise_passes = dev < 0 ? PD_PLAN_CPU_PASSES : PD_PLAN_EAGER_PASSES;
    p.gelu_fused = dev < 0;
    snprintf(p.source, sizeof p.source, "pipedit calibrate --device %s (measured%s; eltwise_passes: the %s count)",
             device, dev >= 0 ? "; links: NVLink's published figures, not measured" : "",
             dev >= 0 ? "eager" : "CPU backend's");
    if ((st = pd_plan_profile_save(out, &p)) != PD_OK) {
        fprintf(stderr, "pipedit calibrate: %s\n", pd_error_msg());
        return 1;
    }
    printf("pipedit calibrate: %s: GEMM f32 %.3g / bf16 %.3g FLOP/s, attention %.3g FLOP/s, copy %.3g B/s, SiLU %.3g "
           "elements/s, conv %.3g FLOP/s, all-to-all %.3g B/s + %.3g s (+ %.3g s crowded), p2p %.3g B/s + %.3g s, encode "
           "%.3g / %.3g px/s, first touch %.3g B/s\n",
           out, p.gemm_f32, p.gemm_bf16, p.attn, p.mem_bw, p.silu, p.conv, p.a2a.bw, p.a2a.latency, p.crowd_wait,
           p.p2p.bw, p.p2p.latency, p.encode_first_px, p.encode_px, p.fault_bw);
    return 0;
}
