/* Shared by the communicator tests (tests/unit/test_comm.c over shared memory, tests/gpu/test_comm_nccl.c
 * over NCCL): the payload pattern, alltoallv layouts with guard gaps, and a pairwise asynchronous
 * exchange. Every check failure counts in the calling process (tests/unit/test.h). */
#ifndef PD_TESTS_COMM_TEST_H
#define PD_TESTS_COMM_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/test.h"
#include "comm/comm.h"

/* The payload byte i from rank `from` to rank `to` in call `tag`. */
static inline uint8_t val(int from, int to, size_t i, int tag) {
    return (uint8_t)(from * 31 + to * 17 + (int)(i * 7) + tag * 13 + 1);
}

#define A2A_GUARD 16   /* 0xEE bytes before each receive region and after the last */
#define A2A_MAX_RANKS 8

/* One rank's alltoallv: send regions in reverse peer order (offsets matter), receive regions in peer
 * order with A2A_GUARD guard bytes before each one and after the last. */
typedef struct a2a {
    size_t sb[A2A_MAX_RANKS], so[A2A_MAX_RANKS], rb[A2A_MAX_RANKS], ro[A2A_MAX_RANKS], send_total, recv_total;
    uint8_t *send, *recv;
} a2a;

/* Lays out rank's call `tag` in a group of n with count(from, to) bytes per pair: the send buffer
 * holds val(rank, peer, i, tag), the receive buffer 0xEE everywhere. Free with a2a_free. */
static inline void a2a_init(a2a *a, int rank, int n, int tag, size_t (*count)(int, int)) {
    PD_ASSERT(n <= A2A_MAX_RANKS);
    memset(a, 0, sizeof *a);
    for (int p = n - 1; p >= 0; p--) {
        a->sb[p] = count(rank, p);
        a->so[p] = a->send_total;
        a->send_total += a->sb[p];
    }
    for (int p = 0; p < n; p++) {
        a->rb[p] = count(p, rank);
        a->ro[p] = a->recv_total + A2A_GUARD;
        a->recv_total += a->rb[p] + A2A_GUARD;
    }
    a->recv_total += A2A_GUARD;
    a->send = malloc(a->send_total + 1);
    a->recv = malloc(a->recv_total);
    PD_ASSERT(a->send && a->recv);
    for (int p = 0; p < n; p++)
        for (size_t i = 0; i < a->sb[p]; i++) a->send[a->so[p] + i] = val(rank, p, i, tag);
    memset(a->recv, 0xEE, a->recv_total);
}

/* How many bytes of a->recv are wrong after the call: each peer's payload, the 0xEE guard before each
 * region and, with `tail`, the guard after the last region. */
static inline int a2a_check(const a2a *a, int rank, int n, int tag, bool tail) {
    int bad = 0;
    size_t pos = 0;
    for (int p = 0; p < n; p++) {
        for (; pos < a->ro[p]; pos++) bad += a->recv[pos] != 0xEE;
        for (size_t i = 0; i < a->rb[p]; i++, pos++) bad += a->recv[pos] != val(p, rank, i, tag);
    }
    if (tail)
        for (; pos < a->recv_total; pos++) bad += a->recv[pos] != 0xEE;
    return bad;
}

static inline void a2a_free(a2a *a) {
    free(a->send);
    free(a->recv);
}

/* Ranks rank and peer swap m bytes asynchronously: the even rank posts its send first, the odd one its
 * receive, then both wait for both requests. */
static inline void exchange_async(pd_comm *c, int rank, int peer, const void *send, void *recv, size_t m) {
    pd_comm_req *r1 = NULL, *r2 = NULL;
    if (rank % 2 == 0) {
        PD_CHECK_OK(pd_comm_send_async(c, send, m, peer, &r1));
        PD_CHECK_OK(pd_comm_recv_async(c, recv, m, peer, &r2));
    } else {
        PD_CHECK_OK(pd_comm_recv_async(c, recv, m, peer, &r1));
        PD_CHECK_OK(pd_comm_send_async(c, send, m, peer, &r2));
    }
    if (r1) PD_CHECK_OK(pd_comm_wait(c, r1));
    if (r2) PD_CHECK_OK(pd_comm_wait(c, r2));
}

#endif
