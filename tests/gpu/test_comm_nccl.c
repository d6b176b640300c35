/* The NCCL communicator on real GPUs: every call with one rank on one GPU (NCCL cannot put two ranks
 * on one device), and with one rank per GPU (a thread each) when several GPUs exist: alltoallv with
 * uneven and zero counts, asynchronous alltoallv in flight, allgather, broadcast from every root,
 * send/recv pairs, barrier, bit-exact against layouts computed here; host buffers refused with a clear
 * error that leaves the group usable; then an abort asked from another thread fails the waits of
 * requests still out (their results void, the freed NCCL communicator never queried) and later calls.
 * Exits 77 (skipped) in builds without NCCL or on machines without a CUDA device. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "tests/unit/comm_test.h"
#include "tests/unit/test.h"
#include "comm/comm.h"

#ifdef PD_HAVE_NCCL
#include <cuda_runtime_api.h>

#define MAXR A2A_MAX_RANKS

static size_t cnt(int from, int to) { return (size_t)((from + 2 * to) % 3) * 1237 + (from == to ? 5 : 0); }

static uint8_t id[PD_COMM_NCCL_ID_BYTES];
static int nranks;

/* Copies host bytes to a new device buffer (at least one byte, so sizes of zero still get a pointer). */
static void *dev_from(const void *h, size_t n) {
    void *d = NULL;
    if (cudaMalloc(&d, n ? n : 1) != cudaSuccess) return NULL;
    if (n) cudaMemcpy(d, h, n, cudaMemcpyHostToDevice);
    return d;
}

static void *abort_thread(void *arg) {
    pd_comm_abort(arg, "gpu test abort");
    return NULL;
}

static void *rank_main(void *arg) {
    int rank = (int)(intptr_t)arg, n = nranks;
    cudaSetDevice(rank);
    pd_comm *c = NULL;
    PD_CHECK_OK(pd_comm_nccl_create(id, rank, n, rank, 20.0, &c));
    if (!c) return NULL;
    PD_CHECK(!strcmp(pd_comm_backend(c), "nccl") && pd_comm_rank(c) == rank && pd_comm_size(c) == n);
    cudaStream_t compute;
    cudaStreamCreate(&compute);
    pd_comm_set_stream(c, compute);

    /* alltoallv, three in flight: sends in reverse peer order, receives in order with 16-byte gaps
     * (tests/unit/comm_test.h; the guard after the last region is not checked here) */
    enum { K = 3 };
    a2a q[K];
    void *ds[K], *dr[K];
    pd_comm_req *req[K] = {0};
    for (int k = 0; k < K; k++) {
        a2a_init(&q[k], rank, n, k, cnt);
        ds[k] = dev_from(q[k].send, q[k].send_total);
        dr[k] = dev_from(q[k].recv, q[k].recv_total);
        PD_CHECK_OK(pd_comm_alltoallv_async(c, ds[k], q[k].sb, q[k].so, dr[k], q[k].rb, q[k].ro, &req[k]));
    }
    for (int k = 0; k < K; k++) {
        if (req[k]) PD_CHECK_OK(pd_comm_wait(c, req[k]));
        cudaMemcpy(q[k].recv, dr[k], q[k].recv_total, cudaMemcpyDeviceToHost);
        int bad = a2a_check(&q[k], rank, n, k, false);
        PD_CHECK_MSG(bad == 0, "rank %d: alltoallv %d: %d bytes wrong", rank, k, bad);
        cudaFree(ds[k]);
        cudaFree(dr[k]);
        a2a_free(&q[k]);
    }

    /* allgather and broadcast from every root */
    enum { G = 4096 };
    uint8_t g[G], *all = malloc((size_t)n * G);
    for (size_t i = 0; i < G; i++) g[i] = val(rank, 9, i, 5);
    void *dg = dev_from(g, G), *dall = NULL;
    cudaMalloc(&dall, (size_t)n * G);
    PD_CHECK_OK(pd_comm_allgather(c, dg, dall, G));
    cudaMemcpy(all, dall, (size_t)n * G, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int p = 0; p < n; p++)
        for (size_t i = 0; i < G; i++) bad += all[(size_t)p * G + i] != val(p, 9, i, 5);
    PD_CHECK_MSG(bad == 0, "rank %d: allgather", rank);
    for (int root = 0; root < n; root++) {
        for (size_t i = 0; i < G; i++) g[i] = rank == root ? val(root, 7, i, 1) : 0;
        cudaMemcpy(dg, g, G, cudaMemcpyHostToDevice);
        PD_CHECK_OK(pd_comm_broadcast(c, dg, G, root));
        cudaMemcpy(g, dg, G, cudaMemcpyDeviceToHost);
        bad = 0;
        for (size_t i = 0; i < G; i++) bad += g[i] != val(root, 7, i, 1);
        PD_CHECK_MSG(bad == 0, "rank %d: broadcast from %d", rank, root);
    }

    /* send/recv pairs (r, r^1) */
    int peer = rank ^ 1;
    if (peer < n) {
        for (size_t i = 0; i < G; i++) g[i] = val(rank, peer, i, 3);
        cudaMemcpy(dg, g, G, cudaMemcpyHostToDevice);
        exchange_async(c, rank, peer, dg, dall, G);
        cudaMemcpy(g, dall, G, cudaMemcpyDeviceToHost);
        bad = 0;
        for (size_t i = 0; i < G; i++) bad += g[i] != val(peer, rank, i, 3);
        PD_CHECK_MSG(bad == 0, "rank %d: recv from %d", rank, peer);
    }
    PD_CHECK_ERR(pd_comm_send(c, dg, G, rank), PD_ERR_INVALID); /* to itself */
    /* host memory (stack, malloc) is refused before anything begins; the group stays usable */
    PD_CHECK_ERR(pd_comm_allgather(c, g, dall, G), PD_ERR_INVALID);
    PD_CHECK_MSG(strstr(pd_error_msg(), "host memory"), "rank %d: %s", rank, pd_error_msg());
    PD_CHECK_ERR(pd_comm_allgather(c, dg, all, G), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_broadcast(c, g, G, 0), PD_ERR_INVALID);
    PD_CHECK_OK(pd_comm_barrier(c));
    cudaFree(dg);
    cudaFree(dall);
    free(all);

    /* two self-transfers in flight, then an abort asked from another thread: both waits fail with its
     * reason, and so does every later call */
    PD_CHECK_OK(pd_comm_barrier(c));
    size_t asb[MAXR] = {0}, aso[MAXR] = {0};
    asb[rank] = G;
    void *da = dev_from(g, G), *db = NULL;
    cudaMalloc(&db, G);
    pd_comm_req *ar[2] = {0};
    for (int k = 0; k < 2; k++) PD_CHECK_OK(pd_comm_alltoallv_async(c, da, asb, aso, db, asb, aso, &ar[k]));
    pthread_t th;
    PD_CHECK(pthread_create(&th, NULL, abort_thread, c) == 0);
    pthread_join(th, NULL);
    for (int k = 0; k < 2; k++) {
        if (!ar[k]) continue;
        PD_CHECK_ERR(pd_comm_wait(c, ar[k]), PD_ERR_DEVICE);
        PD_CHECK_MSG(strstr(pd_error_msg(), "gpu test abort"), "rank %d wait %d: %s", rank, k, pd_error_msg());
    }
    PD_CHECK_ERR(pd_comm_barrier(c), PD_ERR_DEVICE);
    PD_CHECK(strstr(pd_error_msg(), "gpu test abort"));
    cudaFree(da);
    cudaFree(db);
    pd_comm_destroy(c);
    cudaStreamDestroy(compute);
    return NULL;
}

static void run_group(int n) {
    nranks = n;
    PD_CHECK_OK(pd_comm_nccl_unique_id(id));
    pthread_t th[MAXR];
    for (int r = 0; r < n; r++) pthread_create(&th[r], NULL, rank_main, (void *)(intptr_t)r);
    for (int r = 0; r < n; r++) pthread_join(th[r], NULL);
}

static int gpus;
static void test_one_rank(void) { run_group(1); }
static void test_one_rank_per_gpu(void) { run_group(gpus < MAXR ? gpus : MAXR); }
#endif

int main(void) {
#ifndef PD_HAVE_NCCL
    printf("skip: this build has no NCCL backend\n");
    return 77;
#else
    cudaError_t e = cudaGetDeviceCount(&gpus);
    if (e != cudaSuccess || gpus < 1) {
        printf("skip: no CUDA device (%s)\n", e == cudaSuccess ? "0 devices" : cudaGetErrorString(e));
        return 77;
    }
    PD_RUN(test_one_rank);
    if (gpus > 1) PD_RUN(test_one_rank_per_gpu);
    else printf("skip test_one_rank_per_gpu: one GPU\n");
    return pd_test_summary();
#endif
}
