/* The communicator over shared memory, with real rank processes (fork): every collective bit-exact
 * against layouts computed here for 1-4 ranks (uneven and zero counts, messages larger than a ring,
 * several asynchronous calls in flight), and the failure paths: a rank that never joins, a rank
 * killed mid-collective (then the same name reused over its stale segment), an abort from another
 * thread, a mismatched send/recv, and argument errors. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "tests/unit/comm_test.h"
#include "tests/unit/test.h"
#include "comm/comm.h"

typedef void (*rank_fn)(int rank, int n, const char *name);

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void group_name(char *out, size_t n, const char *what) {
    int k = snprintf(out, n, "t%d-%s", (int)getpid(), what);
    PD_ASSERT(k > 0 && (size_t)k < n);
}

/* Forks n rank processes running fn; codes[r] gets the exit code (128 + signal when killed). A rank
 * exits 1 when one of its checks failed; alarm() turns a hang into a failure. */
static void run_ranks(int n, const char *name, rank_fn fn, int *codes) {
    pid_t pids[8];
    fflush(stdout);
    fflush(stderr);
    for (int r = 0; r < n; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            alarm(25);
            int before = pd_test_failed_checks;
            fn(r, n, name);
            fflush(stderr);
            _exit(pd_test_failed_checks != before ? 1 : 0);
        }
    }
    for (int r = 0; r < n; r++) {
        int st = 0;
        waitpid(pids[r], &st, 0);
        codes[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
}

static void expect_all_ok(int n, const int *codes) {
    for (int r = 0; r < n; r++) PD_CHECK_MSG(codes[r] == 0, "rank %d exited with %d", r, codes[r]);
}

/* Runs fn on n ranks of a fresh group named after label; every rank must pass its checks. */
static void run_all_ok(int n, const char *label, rank_fn fn) {
    char name[64];
    int codes[8];
    PD_ASSERT(n <= 8);
    group_name(name, sizeof name, label);
    run_ranks(n, name, fn, codes);
    expect_all_ok(n, codes);
}

/* Uneven per-pair counts, zero for a third of the pairs. */
static size_t cnt(int from, int to) { return (size_t)((from + 2 * to) % 3) * 1237; }

static size_t cnt_big(int from, int to) { return from == to ? 4096 : ((size_t)3 << 20) + (size_t)(from * 4 + to) * 4099; }

static size_t cnt_huge(int from, int to) { return from == to ? 0 : (size_t)16 << 20; }

/* ---- every call, bit-exact, for 1-4 ranks ---- */

static void collectives_rank(int rank, int n, const char *name) {
    pd_comm *c = NULL;
    PD_CHECK_OK(pd_comm_shm_create(name, rank, n, 2.0, &c));
    if (!c) return;
    PD_CHECK(pd_comm_rank(c) == rank && pd_comm_size(c) == n && !strcmp(pd_comm_backend(c), "shm"));

    /* alltoallv, uneven counts including zero */
    a2a a;
    a2a_init(&a, rank, n, 0, cnt);
    PD_CHECK_OK(pd_comm_alltoallv(c, a.send, a.sb, a.so, a.recv, a.rb, a.ro));
    PD_CHECK_MSG(a2a_check(&a, rank, n, 0, true) == 0, "rank %d: alltoallv layout", rank);
    a2a_free(&a);

    /* several asynchronous alltoallv in flight; the last rank starts late, so the calls must return
     * before the data moved, and complete in order while this thread computes */
    enum { K = 4 };
    a2a q[K];
    pd_comm_req *req[K] = {0};
    for (int k = 0; k < K; k++) a2a_init(&q[k], rank, n, k + 1, cnt);
    if (rank == n - 1 && n > 1) sleep_s(0.3);
    double t0 = pd_now_s();
    for (int k = 0; k < K; k++) PD_CHECK_OK(pd_comm_alltoallv_async(c, q[k].send, q[k].sb, q[k].so, q[k].recv, q[k].rb, q[k].ro, &req[k]));
    double issue = pd_now_s() - t0;
    if (rank == 0 && n > 1) PD_CHECK_MSG(issue < 0.15, "async issue took %.3f s: not asynchronous", issue);
    volatile double acc = 0;
    for (int i = 0; i < 2000000; i++) acc += (double)i * 1e-9; /* the caller's compute */
    PD_CHECK(acc > 0);
    for (int k = 0; k < K; k++) {
        if (req[k]) PD_CHECK_OK(pd_comm_wait(c, req[k]));
        PD_CHECK_MSG(a2a_check(&q[k], rank, n, k + 1, true) == 0, "rank %d: async alltoallv %d", rank, k);
        a2a_free(&q[k]);
    }

    /* allgather */
    enum { G = 1000 };
    uint8_t gs[G], *gr = malloc((size_t)n * G);
    for (size_t i = 0; i < G; i++) gs[i] = val(rank, 9, i, 5);
    PD_CHECK_OK(pd_comm_allgather(c, gs, gr, G));
    int bad = 0;
    for (int p = 0; p < n; p++)
        for (size_t i = 0; i < G; i++) bad += gr[(size_t)p * G + i] != val(p, 9, i, 5);
    PD_CHECK_MSG(bad == 0, "rank %d: allgather", rank);
    free(gr);

    /* broadcast from each root, small and larger than a ring */
    const size_t bsz[2] = {3000, (size_t)8 << 20};
    uint8_t *bb = malloc(bsz[1]);
    for (int s = 0; s < 2; s++)
        for (int root = 0; root < n; root++) {
            for (size_t i = 0; i < bsz[s]; i++) bb[i] = rank == root ? val(root, 7, i, s) : 0;
            PD_CHECK_OK(pd_comm_broadcast(c, bb, bsz[s], root));
            bad = 0;
            for (size_t i = 0; i < bsz[s]; i++) bad += bb[i] != val(root, 7, i, s);
            PD_CHECK_MSG(bad == 0, "rank %d: broadcast %zu bytes from %d", rank, bsz[s], root);
        }

    /* send/recv pairs (r, r^1): 8 MiB each way, then the same asynchronously */
    int peer = rank ^ 1;
    if (peer < n) {
        size_t m = (size_t)8 << 20;
        uint8_t *sb = malloc(m), *rb = malloc(m);
        for (size_t i = 0; i < m; i++) sb[i] = val(rank, peer, i, 3);
        for (int async = 0; async < 2; async++) {
            memset(rb, 0, m);
            if (!async && rank % 2 == 0) {
                PD_CHECK_OK(pd_comm_send(c, sb, m, peer));
                PD_CHECK_OK(pd_comm_recv(c, rb, m, peer));
            } else if (!async) {
                PD_CHECK_OK(pd_comm_recv(c, rb, m, peer));
                PD_CHECK_OK(pd_comm_send(c, sb, m, peer));
            } else {
                exchange_async(c, rank, peer, sb, rb, m);
            }
            bad = 0;
            for (size_t i = 0; i < m; i++) bad += rb[i] != val(peer, rank, i, 3);
            PD_CHECK_MSG(bad == 0, "rank %d: %s recv from %d", rank, async ? "async" : "sync", peer);
        }
        free(sb);
        free(rb);
    }

    /* large alltoallv: 3+ MiB per pair, over the 1 MiB ring */
    a2a_init(&a, rank, n, 6, cnt_big);
    PD_CHECK_OK(pd_comm_alltoallv(c, a.send, a.sb, a.so, a.recv, a.rb, a.ro));
    PD_CHECK_MSG(a2a_check(&a, rank, n, 6, true) == 0, "rank %d: large alltoallv", rank);
    a2a_free(&a);

    /* barrier: rank r arrives at base + r * 40 ms (base from rank 0; the monotonic clock is the same in
     * every process); nobody may leave before the last arrived */
    double base = pd_now_s() + 0.05;
    PD_CHECK_OK(pd_comm_broadcast(c, &base, sizeof base, 0));
    double arrive = base + 0.04 * rank - pd_now_s();
    if (arrive > 0) sleep_s(arrive);
    PD_CHECK_OK(pd_comm_barrier(c));
    double left = pd_now_s() - base;
    PD_CHECK_MSG(left >= 0.04 * (n - 1), "rank %d left the barrier %.3f s after the base", rank, left);
    pd_comm_destroy(c);
}

static void test_collectives(void) {
    for (int n = 1; n <= 4; n++) {
        char label[64];
        snprintf(label, sizeof label, "coll%d", n);
        int before = pd_test_failed_checks;
        run_all_ok(n, label, collectives_rank);
        if (pd_test_failed_checks != before) fprintf(stderr, "  (with %d ranks)\n", n);
    }
}

/* ---- a rank that never joins ---- */

static int absent_rank;

static void absent_rank_fn(int rank, int n, const char *name) {
    if (rank == absent_rank) return;
    pd_comm *c = NULL;
    double t0 = pd_now_s();
    pd_status st = pd_comm_shm_create(name, rank, n, 0.5, &c);
    double dt = pd_now_s() - t0;
    PD_CHECK_ERR(st, PD_ERR_TIMEOUT);
    char want[32];
    snprintf(want, sizeof want, "rank %d", absent_rank);
    PD_CHECK_MSG(strstr(pd_error_msg(), want) && strstr(pd_error_msg(), "timed out after 0.5 s"), "message: %s",
                 pd_error_msg());
    PD_CHECK_MSG(dt >= 0.4 && dt < 1.5, "gave up after %.3f s (timeout 0.5 s)", dt);
    PD_CHECK(c == NULL);
    if (rank == 1) fprintf(stderr, "  (expected) %s\n", pd_error_msg());
}

static void test_never_joins(void) {
    absent_rank = 2;
    run_all_ok(3, "absent2", absent_rank_fn);
    absent_rank = 0;
    run_all_ok(3, "absent0", absent_rank_fn);
}

/* ---- a rank killed mid-collective; then the name is reused ---- */

static int victim;

static void die_by_sigkill(int sig) { raise(SIGKILL); }

static void killed_rank_fn(int rank, int n, const char *name) {
    pd_comm *c = NULL;
    PD_CHECK_OK(pd_comm_shm_create(name, rank, n, 1.0, &c));
    if (!c) return;
    PD_CHECK_OK(pd_comm_barrier(c));
    a2a a;
    a2a_init(&a, rank, n, 2, cnt_huge);
    if (rank == victim) {
        /* Die inside the collective, deterministically: the send data is copied into a mapping with
         * an unreadable page halfway through each peer's 16 MiB, and the fault there kills this
         * process with SIGKILL while its communication thread is moving that data. */
        size_t pg = (size_t)sysconf(_SC_PAGESIZE), len = (a.send_total + pg - 1) / pg * pg;
        uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        PD_CHECK(m != MAP_FAILED);
        if (m == MAP_FAILED) return;
        memcpy(m, a.send, a.send_total);
        for (int p = 0; p < n; p++)
            if (p != rank) mprotect(m + (a.so[p] + a.sb[p] / 2) / pg * pg, pg, PROT_NONE);
        signal(SIGSEGV, die_by_sigkill);
        signal(SIGBUS, die_by_sigkill);
        sleep_s(0.2); /* the peers are inside the alltoallv by now */
        pd_comm_req *r = NULL;
        pd_comm_alltoallv_async(c, m, a.sb, a.so, a.recv, a.rb, a.ro, &r);
        sleep_s(20); /* the communication thread's fault ends this process */
        return;
    }
    double t0 = pd_now_s();
    pd_status st = pd_comm_alltoallv(c, a.send, a.sb, a.so, a.recv, a.rb, a.ro);
    double dt = pd_now_s() - t0;
    PD_CHECK_ERR(st, PD_ERR_DEVICE);
    char want[48];
    snprintf(want, sizeof want, "rank %d (pid ", victim);
    PD_CHECK_MSG(strstr(pd_error_msg(), want) && strstr(pd_error_msg(), "died") && strstr(pd_error_msg(), "alltoallv"),
                 "message: %s", pd_error_msg());
    PD_CHECK_MSG(dt < 1.0 + 1.0, "noticed after %.3f s (timeout 1 s)", dt);
    if (rank == (victim + 1) % n) fprintf(stderr, "  (expected) %s\n", pd_error_msg());
    /* The group is poisoned: later calls fail at once. */
    t0 = pd_now_s();
    PD_CHECK_ERR(pd_comm_barrier(c), PD_ERR_DEVICE);
    PD_CHECK(pd_now_s() - t0 < 0.1);
    a2a_free(&a);
    pd_comm_destroy(c);
}

/* Rank 0 comes late, so the others first find the dead group's segment. */
static void reuse_rank_fn(int rank, int n, const char *name) {
    if (rank == 0) sleep_s(0.3);
    pd_comm *c = NULL;
    PD_CHECK_OK(pd_comm_shm_create(name, rank, n, 2.0, &c));
    if (!c) return;
    a2a a;
    a2a_init(&a, rank, n, 4, cnt);
    PD_CHECK_OK(pd_comm_alltoallv(c, a.send, a.sb, a.so, a.recv, a.rb, a.ro));
    PD_CHECK_MSG(a2a_check(&a, rank, n, 4, true) == 0, "rank %d: alltoallv after reuse", rank);
    a2a_free(&a);
    PD_CHECK_OK(pd_comm_barrier(c));
    pd_comm_destroy(c);
}

static void test_killed_rank(void) {
    char name[64];
    int codes[3];
    for (int v = 2; v >= 0; v -= 2) { /* rank 2, then rank 0 (whose segment stays behind) */
        char label[32];
        snprintf(label, sizeof label, "kill%d", v);
        group_name(name, sizeof name, label);
        victim = v;
        run_ranks(3, name, killed_rank_fn, codes);
        for (int r = 0; r < 3; r++)
            PD_CHECK_MSG(codes[r] == (r == v ? 128 + SIGKILL : 0), "rank %d exited with %d", r, codes[r]);
        run_ranks(3, name, reuse_rank_fn, codes);
        expect_all_ok(3, codes);
    }
}

/* ---- abort from another thread wakes every rank ---- */

static void *abort_later(void *arg) {
    sleep_s(0.1);
    pd_comm_abort(arg, "test abort");
    return NULL;
}

static void abort_rank_fn(int rank, int n, const char *name) {
    pd_comm *c = NULL;
    PD_CHECK_OK(pd_comm_shm_create(name, rank, n, 5.0, &c));
    if (!c) return;
    PD_CHECK_OK(pd_comm_barrier(c));
    pthread_t th;
    if (rank == 1) pthread_create(&th, NULL, abort_later, c);
    uint8_t buf[64];
    double t0 = pd_now_s();
    /* Nobody sends: every rank waits until the abort. */
    PD_CHECK_ERR(pd_comm_recv(c, buf, sizeof buf, rank == 1 ? 0 : 1), PD_ERR_DEVICE);
    double dt = pd_now_s() - t0;
    PD_CHECK_MSG(strstr(pd_error_msg(), "test abort"), "message: %s", pd_error_msg());
    PD_CHECK_MSG(dt < 1.0, "woke after %.3f s (timeout 5 s)", dt);
    if (rank == 2) fprintf(stderr, "  (expected) %s\n", pd_error_msg());
    PD_CHECK_ERR(pd_comm_barrier(c), PD_ERR_DEVICE);
    if (rank == 1) pthread_join(th, NULL);
    pd_comm_destroy(c);
}

static void test_abort(void) {
    run_all_ok(3, "abort", abort_rank_fn);
}

/* ---- a send and recv of different sizes are reported, not silently desynchronised ---- */

static void mismatch_rank_fn(int rank, int n, const char *name) {
    pd_comm *c = NULL;
    PD_CHECK_OK(pd_comm_shm_create(name, rank, n, 1.0, &c));
    if (!c) return;
    uint8_t buf[100] = {0};
    if (rank == 0) {
        PD_CHECK_OK(pd_comm_send(c, buf, 100, 1)); /* fits the ring: completes */
    } else {
        PD_CHECK_ERR(pd_comm_recv(c, buf, 96, 0), PD_ERR_DEVICE);
        PD_CHECK_MSG(strstr(pd_error_msg(), "rank 0 sends 100 bytes, this rank expects 96"), "message: %s", pd_error_msg());
    }
    PD_CHECK_ERR(pd_comm_barrier(c), PD_ERR_DEVICE);
    pd_comm_destroy(c);
}

static void test_mismatch(void) {
    run_all_ok(2, "mismatch", mismatch_rank_fn);
}

/* ---- a message sent just before its sender leaves is still delivered ---- */

static void leave_rank_fn(int rank, int n, const char *name) {
    pd_comm *c = NULL;
    PD_CHECK_OK(pd_comm_shm_create(name, rank, n, 1.0, &c));
    if (!c) return;
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = rank == 0 ? val(0, 1, i, 8) : 0;
    if (rank == 0) {
        PD_CHECK_OK(pd_comm_send(c, buf, sizeof buf, 1));
    } else {
        sleep_s(0.2); /* rank 0 has left by now */
        PD_CHECK_OK(pd_comm_recv(c, buf, sizeof buf, 0));
        int bad = 0;
        for (size_t i = 0; i < sizeof buf; i++) bad += buf[i] != val(0, 1, i, 8);
        PD_CHECK(bad == 0);
        /* ...but waiting for more from it fails at once, naming it. */
        double t0 = pd_now_s();
        PD_CHECK_ERR(pd_comm_recv(c, buf, sizeof buf, 0), PD_ERR_DEVICE);
        PD_CHECK_MSG(strstr(pd_error_msg(), "rank 0 (pid") && strstr(pd_error_msg(), "left the group"), "message: %s",
                     pd_error_msg());
        PD_CHECK(pd_now_s() - t0 < 0.5);
    }
    pd_comm_destroy(c);
}

static void test_send_then_leave(void) {
    run_all_ok(2, "leave", leave_rank_fn);
}

/* ---- argument checks (one process, a group of one) ---- */

static void test_arguments(void) {
    pd_comm *c = NULL;
    char name[64], longname[80];
    memset(longname, 'a', 65);
    longname[65] = 0;
    PD_CHECK_ERR(pd_comm_shm_create("", 0, 1, 1.0, &c), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_shm_create("a/b", 0, 1, 1.0, &c), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_shm_create(longname, 0, 1, 1.0, &c), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_shm_create("x", 1, 1, 1.0, &c), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_shm_create("x", 0, 0, 1.0, &c), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_shm_create("x", 0, PD_COMM_MAX_RANKS + 1, 1.0, &c), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_shm_create("x", 0, 1, 0.0, &c), PD_ERR_INVALID);
    longname[64] = 0; /* 64 bytes is allowed */
    PD_CHECK_OK(pd_comm_shm_create(longname, 0, 1, 1.0, &c));
    pd_comm_destroy(c);
    c = NULL;
    group_name(name, sizeof name, "args");
    PD_CHECK_OK(pd_comm_shm_create(name, 0, 1, 1.0, &c));
    if (!c) return;
    uint8_t b[8] = {1, 2, 3, 4, 5, 6, 7, 8}, r[8] = {0};
    size_t sb[1] = {8}, so[1] = {0}, rb[1] = {4}, ro[1] = {0};
    pd_comm_req *req = NULL;
    PD_CHECK_ERR(pd_comm_send(c, b, 8, 0), PD_ERR_INVALID); /* to itself */
    PD_CHECK_ERR(pd_comm_recv(c, r, 8, 5), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_broadcast(c, b, 8, -1), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_broadcast(c, NULL, 8, 0), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_allgather(c, b, NULL, 8), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_alltoallv(c, b, NULL, so, r, rb, ro), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_alltoallv(c, b, sb, so, r, rb, ro), PD_ERR_INVALID); /* 8 to itself, expects 4 */
    PD_CHECK_ERR(pd_comm_alltoallv_async(c, b, sb, so, r, sb, ro, NULL), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_wait(c, NULL), PD_ERR_INVALID);
    /* Bad arguments do not poison the group; a group of one still works. */
    PD_CHECK_OK(pd_comm_alltoallv_async(c, b, sb, so, r, sb, ro, &req));
    if (req) PD_CHECK_OK(pd_comm_wait(c, req));
    PD_CHECK(!memcmp(b, r, 8));
    memset(r, 0, 8);
    PD_CHECK_OK(pd_comm_allgather(c, b, r, 8));
    PD_CHECK(!memcmp(b, r, 8));
    PD_CHECK_OK(pd_comm_broadcast(c, b, 8, 0));
    PD_CHECK_OK(pd_comm_barrier(c));
    pd_comm_set_stream(c, NULL); /* no-op on shm */
    /* After an abort, every call fails at once with the reason. */
    pd_comm_abort(c, "by test");
    PD_CHECK_ERR(pd_comm_barrier(c), PD_ERR_DEVICE);
    PD_CHECK(strstr(pd_error_msg(), "by test"));
    pd_comm_destroy(c);
#ifndef PD_HAVE_NCCL
    uint8_t id[PD_COMM_NCCL_ID_BYTES];
    PD_CHECK_ERR(pd_comm_nccl_unique_id(id), PD_ERR_UNSUPPORTED);
    PD_CHECK_ERR(pd_comm_nccl_create(id, 0, 1, 0, 1.0, &c), PD_ERR_UNSUPPORTED);
    PD_CHECK(strstr(pd_error_msg(), "NCCL"));
#endif
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    PD_RUN(test_arguments);
    PD_RUN(test_collectives);
    PD_RUN(test_never_joins);
    PD_RUN(test_killed_rank);
    PD_RUN(test_abort);
    PD_RUN(test_mismatch);
    PD_RUN(test_send_then_leave);
    return pd_test_summary();
}
