/* The control protocol: every message kind survives encode -> frame reader -> decode with every field
 * intact; truncated, oversized, garbage and out-of-range input is rejected with PD_ERR_FORMAT; frames
 * split at any byte boundary reassemble; a socketpair carries messages both ways. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/proto.h"
#include "tests/unit/test.h"

static uint8_t frame[4 + PD_PROTO_MAX_FRAME];

/* A message of each kind with every field it carries set to a distinct value. */
static void sample(pd_msg *m, pd_msg_kind kind) {
    pd_msg_init(m, kind);
    switch (kind) {
    case PD_MSG_HELLO:
        m->pid = 4242;
        m->role = PD_ROLE_DECODE;
        m->heartbeat_ms = 250;
        break;
    case PD_MSG_READY:
        for (int i = 0; i < PD_STAGE_COUNT; i++) m->stage_seconds[i] = 0.125 * (i + 1) + 1e-9;
        m->aco_capable = 1;
        break;
    case PD_MSG_ASSIGN:
        snprintf(m->job_id, sizeof m->job_id, "video_0123456789abcdef");
        m->stage = PD_STAGE_DENOISE;
        snprintf(m->prompt, sizeof m->prompt, "a cat \xc3\xa9 on a \"skateboard\"\n");
        snprintf(m->negative_prompt, sizeof m->negative_prompt, "blurry");
        m->seed = 0xfedcba9876543210ull;
        m->width = 832;
        m->height = 480;
        m->frames = 81;
        m->steps = 50;
        m->fps = 16;
        m->guidance = 5.5f;
        m->shift = -0.0f;
        m->sampler = PD_SAMPLER_EULER;
        m->noise = PD_NOISE_TORCH_CPU;
        snprintf(m->shm_cond, sizeof m->shm_cond, "/pd-1-2-cond");
        snprintf(m->shm_uncond, sizeof m->shm_uncond, "/pd-1-2-uncond");
        snprintf(m->shm_latent, sizeof m->shm_latent, "/pd-1-2-latent");
        snprintf(m->mp4_path, sizeof m->mp4_path, "/var/lib/pipedit/videos/x.mp4");
        snprintf(m->thumb_path, sizeof m->thumb_path, "/var/lib/pipedit/videos/x.png");
        m->group_gen = 7;
        m->rank = 1;
        m->deadline = 1795000000.25;
        break;
    case PD_MSG_GROUP:
        m->group_gen = 9;
        m->rank = 2;
        m->ranks = 4;
        m->chunk_heads = 1;
        m->cfg_parallel = 1;
        m->comm_timeout_s = 30.5;
        snprintf(m->comm_name, sizeof m->comm_name, "pdg-123-0-9");
        m->comm_nccl = 1;
        for (size_t i = 0; i < sizeof m->nccl_ids; i++) m->nccl_ids[i / PD_PROTO_NCCL_ID_BYTES][i % PD_PROTO_NCCL_ID_BYTES] = (uint8_t)(i * 7 + 1);
        break;
    case PD_MSG_JOINED:
        m->group_gen = 9;
        break;
    case PD_MSG_PROGRESS:
        snprintf(m->job_id, sizeof m->job_id, "j1");
        m->stage = PD_STAGE_DECODE;
        m->step = 7;
        m->total = 21;
        break;
    case PD_MSG_DONE:
        snprintf(m->job_id, sizeof m->job_id, "j2");
        m->stage = PD_STAGE_TEXT;
        m->seconds = 3.75;
        m->aco = (pd_msg_aco){.calls = 60, .lends = 50, .declined = 3, .heads_total = 480, .heads_lent = 200,
                              .wait_s = 0.25, .backoff_s = 0.5, .failed = 1};
        break;
    case PD_MSG_ACO:
        snprintf(m->job_id, sizeof m->job_id, "j5");
        m->aco_seq = 12;
        m->aco_serve = 1;
        m->aco_share = -2;
        m->comm_timeout_s = 7.5;
        snprintf(m->comm_name, sizeof m->comm_name, "pda-1-0-12");
        m->comm_nccl = 1;
        for (size_t i = 0; i < sizeof m->nccl_ids[0]; i++) m->nccl_ids[0][i] = (uint8_t)(i * 5 + 3);
        break;
    case PD_MSG_ACO_DONE:
        m->aco_seq = 12;
        m->aco = (pd_msg_aco){.lends = 40, .declined = 2, .heads_lent = 160, .wait_s = 1.5, .lend_max_s = 0.125};
        snprintf(m->code, sizeof m->code, "timeout");
        snprintf(m->message, sizeof m->message, "the lender went silent");
        break;
    case PD_MSG_ERROR:
        snprintf(m->job_id, sizeof m->job_id, "j3");
        m->stage = PD_STAGE_DENOISE;
        snprintf(m->code, sizeof m->code, "cancelled");
        snprintf(m->message, sizeof m->message, "stopped at step 3 of 50");
        break;
    case PD_MSG_CANCEL:
        snprintf(m->job_id, sizeof m->job_id, "j4");
        break;
    case PD_MSG_HEARTBEAT:
        m->ticks = 0x0123456789abcdefull;
        break;
    default: break;
    }
}

static pd_msg a, b;

static void test_round_trip_every_kind(void) {
    for (int k = PD_MSG_HELLO; k < PD_MSG_KIND_END; k++) {
        sample(&a, (pd_msg_kind)k);
        size_t n = 0;
        PD_CHECK_OK(pd_proto_encode(&a, frame, sizeof frame, &n));
        PD_CHECK(n >= 5);
        uint32_t len = (uint32_t)frame[0] | (uint32_t)frame[1] << 8 | (uint32_t)frame[2] << 16 | (uint32_t)frame[3] << 24;
        PD_CHECK_MSG(len + 4 == n, "kind %d: prefix %u, frame %zu", k, len, n);
        PD_CHECK(frame[4] == k);
        memset(&b, 0xa5, sizeof b);
        PD_CHECK_OK(pd_proto_decode(frame + 4, n - 4, &b));
        /* Every field, unused ones included (they must decode as zero): compare the whole struct. */
        PD_CHECK_MSG(!memcmp(&a, &b, sizeof a), "kind %d differs after a round trip", k);
    }
    /* Spot checks that do not rely on memcmp. */
    sample(&a, PD_MSG_ASSIGN);
    size_t n;
    PD_CHECK_OK(pd_proto_encode(&a, frame, sizeof frame, &n));
    PD_CHECK_OK(pd_proto_decode(frame + 4, n - 4, &b));
    PD_CHECK(b.seed == 0xfedcba9876543210ull && b.guidance == 5.5f && b.frames == 81 && b.deadline == 1795000000.25);
    PD_CHECK(!strcmp(b.prompt, a.prompt) && !strcmp(b.thumb_path, "/var/lib/pipedit/videos/x.png"));
    pd_gen_params p = pd_msg_params(&b);
    PD_CHECK(p.sampler == PD_SAMPLER_EULER && p.width == 832 && !strcmp(p.negative_prompt, "blurry"));
    PD_CHECK(p.noise == PD_NOISE_TORCH_CPU && p.init_latent == NULL);
}

static void test_params_bounds(void) {
    pd_msg_init(&a, PD_MSG_ASSIGN);
    char *big = malloc(PD_PROTO_TEXT_MAX + 1);
    memset(big, 'x', PD_PROTO_TEXT_MAX);
    big[PD_PROTO_TEXT_MAX] = 0;
    pd_gen_params p = {.prompt = big, .width = 64, .height = 64, .frames = 5, .steps = 1, .fps = 16};
    PD_CHECK_ERR(pd_msg_set_params(&a, &p), PD_ERR_INVALID);
    big[PD_PROTO_TEXT_MAX - 1] = 0; /* exactly the largest that fits */
    PD_CHECK_OK(pd_msg_set_params(&a, &p));
    size_t n;
    PD_CHECK_OK(pd_proto_encode(&a, frame, sizeof frame, &n));
    PD_CHECK_OK(pd_proto_decode(frame + 4, n - 4, &b));
    PD_CHECK(strlen(b.prompt) == PD_PROTO_TEXT_MAX - 1);
    free(big);
}

static void test_truncated_rejected(void) {
    for (int k = PD_MSG_HELLO; k < PD_MSG_KIND_END; k++) {
        sample(&a, (pd_msg_kind)k);
        size_t n;
        PD_CHECK_OK(pd_proto_encode(&a, frame, sizeof frame, &n));
        size_t payload = n - 4;
        /* Every shorter prefix of a payload with fields is malformed. */
        for (size_t cut = 0; cut < payload; cut++) {
            pd_status st = pd_proto_decode(frame + 4, cut, &b);
            PD_CHECK_MSG(st == PD_ERR_FORMAT, "kind %d cut at %zu: %s", k, cut, pd_status_name(st));
        }
        /* One extra byte is trailing garbage. */
        frame[n] = 0;
        PD_CHECK_ERR(pd_proto_decode(frame + 4, payload + 1, &b), PD_ERR_FORMAT);
    }
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Encodes message a into frame (which must succeed) and checks its payload decodes to PD_ERR_FORMAT. */
#define CHECK_REJECTED()                                                                           \
    do {                                                                                           \
        PD_CHECK_OK(pd_proto_encode(&a, frame, sizeof frame, &n));                                 \
        PD_CHECK_ERR(pd_proto_decode(frame + 4, n - 4, &b), PD_ERR_FORMAT);                        \
    } while (0)

static void test_bad_fields_rejected(void) {
    size_t n;
    /* A string length running past the frame. */
    sample(&a, PD_MSG_CANCEL);
    PD_CHECK_OK(pd_proto_encode(&a, frame, sizeof frame, &n));
    put32(frame + 5, 0xffffffffu);
    PD_CHECK_ERR(pd_proto_decode(frame + 4, n - 4, &b), PD_ERR_FORMAT);
    /* A string longer than its field even if the frame had the bytes. */
    static uint8_t p[8 + PD_PROTO_ID_MAX + 8];
    p[0] = PD_MSG_CANCEL;
    put32(p + 1, PD_PROTO_ID_MAX);
    memset(p + 5, 'a', PD_PROTO_ID_MAX);
    PD_CHECK_ERR(pd_proto_decode(p, 5 + PD_PROTO_ID_MAX, &b), PD_ERR_FORMAT);
    put32(p + 1, PD_PROTO_ID_MAX - 1); /* the largest that fits */
    PD_CHECK_OK(pd_proto_decode(p, 5 + PD_PROTO_ID_MAX - 1, &b));
    PD_CHECK(strlen(b.job_id) == PD_PROTO_ID_MAX - 1);
    /* An embedded NUL. */
    put32(p + 1, 3);
    memcpy(p + 5, "a\0b", 3);
    PD_CHECK_ERR(pd_proto_decode(p, 8, &b), PD_ERR_FORMAT);
    /* Unknown kinds. */
    uint8_t k0 = 0, k99 = 99;
    PD_CHECK_ERR(pd_proto_decode(&k0, 1, &b), PD_ERR_FORMAT);
    PD_CHECK_ERR(pd_proto_decode(&k99, 1, &b), PD_ERR_FORMAT);
    /* Out-of-range enumerations. */
    sample(&a, PD_MSG_PROGRESS);
    a.stage = PD_STAGE_COUNT;
    CHECK_REJECTED();
    sample(&a, PD_MSG_HELLO);
    a.role = -1;
    CHECK_REJECTED();
    sample(&a, PD_MSG_ASSIGN);
    a.sampler = 7;
    CHECK_REJECTED();
    sample(&a, PD_MSG_ASSIGN);
    a.noise = 2;
    CHECK_REJECTED();
    /* Group fields out of range: rank past the group, bad flags, no name, no timeout. */
    for (int bad = 0; bad < 7; bad++) {
        sample(&a, PD_MSG_GROUP);
        if (bad == 0) a.rank = 4;
        if (bad == 1) a.ranks = PD_PROTO_MAX_RANKS + 1;
        if (bad == 2) a.cfg_parallel = 2;
        if (bad == 3) a.comm_name[0] = 0;
        if (bad == 4) a.comm_timeout_s = 0;
        if (bad == 5) a.chunk_heads = -1;
        if (bad == 6) a.comm_nccl = 2;
        PD_CHECK_OK(pd_proto_encode(&a, frame, sizeof frame, &n));
        PD_CHECK_MSG(pd_proto_decode(frame + 4, n - 4, &b) == PD_ERR_FORMAT, "group case %d accepted", bad);
    }
    sample(&a, PD_MSG_ASSIGN);
    a.rank = -1;
    CHECK_REJECTED();
    /* A deadline that is not a time: negative, NaN. */
    sample(&a, PD_MSG_ASSIGN);
    a.deadline = -1;
    CHECK_REJECTED();
    a.deadline = NAN;
    CHECK_REJECTED();
    /* Aco pair fields out of range: side, share, backend flag, timeout, no name. */
    for (int bad = 0; bad < 5; bad++) {
        sample(&a, PD_MSG_ACO);
        if (bad == 0) a.aco_serve = 2;
        if (bad == 1) a.aco_share = -3;
        if (bad == 2) a.comm_nccl = -1;
        if (bad == 3) a.comm_timeout_s = 1e9;
        if (bad == 4) a.comm_name[0] = 0;
        PD_CHECK_OK(pd_proto_encode(&a, frame, sizeof frame, &n));
        PD_CHECK_MSG(pd_proto_decode(frame + 4, n - 4, &b) == PD_ERR_FORMAT, "aco case %d accepted", bad);
    }
    /* Encoding an unknown kind is the caller's error. */
    pd_msg_init(&a, PD_MSG_KIND_END);
    PD_CHECK_ERR(pd_proto_encode(&a, frame, sizeof frame, &n), PD_ERR_INVALID);
}

static pd_proto_reader rd;

static void test_reader_lengths(void) {
    bool got;
    uint8_t hdr[4];
    /* Zero and oversized length prefixes are protocol errors before any payload is read. */
    pd_proto_reader_reset(&rd);
    put32(hdr, 0);
    PD_CHECK_OK(pd_proto_reader_feed(&rd, hdr, 4));
    PD_CHECK_ERR(pd_proto_reader_next(&rd, &b, &got), PD_ERR_FORMAT);
    pd_proto_reader_reset(&rd);
    put32(hdr, PD_PROTO_MAX_FRAME + 1);
    PD_CHECK_OK(pd_proto_reader_feed(&rd, hdr, 4));
    PD_CHECK_ERR(pd_proto_reader_next(&rd, &b, &got), PD_ERR_FORMAT);
    /* Garbage: a plausible length followed by random bytes is rejected, never read past. */
    srand(7);
    int rejected = 0;
    for (int t = 0; t < 2000; t++) {
        pd_proto_reader_reset(&rd);
        uint8_t junk[64];
        size_t len = 1 + (size_t)(rand() % 60);
        for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)rand();
        junk[0] = (uint8_t)(1 + rand() % (PD_MSG_KIND_END + 1));
        put32(hdr, (uint32_t)len);
        pd_proto_reader_feed(&rd, hdr, 4);
        pd_proto_reader_feed(&rd, junk, len);
        pd_status st = pd_proto_reader_next(&rd, &b, &got);
        PD_CHECK(st == PD_OK || st == PD_ERR_FORMAT);
        rejected += st == PD_ERR_FORMAT;
    }
    PD_CHECK(rejected > 1500); /* nearly all random payloads are malformed */
}

static void test_reader_split_frames(void) {
    /* Three messages back to back, fed one byte at a time: each appears exactly when complete. */
    static uint8_t stream[3 * 1024];
    size_t total = 0, ends[3];
    pd_msg_kind kinds[3] = {PD_MSG_PROGRESS, PD_MSG_HEARTBEAT, PD_MSG_DONE};
    for (int i = 0; i < 3; i++) {
        sample(&a, kinds[i]);
        size_t n;
        PD_CHECK_OK(pd_proto_encode(&a, stream + total, sizeof stream - total, &n));
        total += n;
        ends[i] = total;
    }
    pd_proto_reader_reset(&rd);
    int seen = 0;
    for (size_t i = 0; i < total; i++) {
        PD_CHECK_OK(pd_proto_reader_feed(&rd, stream + i, 1));
        bool got;
        PD_CHECK_OK(pd_proto_reader_next(&rd, &b, &got));
        if (got) {
            PD_CHECK_MSG(seen < 3 && i + 1 == ends[seen], "message %d complete at byte %zu", seen, i + 1);
            PD_CHECK(b.kind == kinds[seen]);
            seen++;
        }
    }
    PD_CHECK(seen == 3);
    PD_CHECK(rd.len == 0);
}

static pd_proto_reader rd2;

static void test_socketpair(void) {
    int sv[2];
    PD_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    sample(&a, PD_MSG_ASSIGN);
    PD_CHECK_OK(pd_proto_send(sv[0], &a));
    sample(&a, PD_MSG_ERROR);
    PD_CHECK_OK(pd_proto_send(sv[0], &a));
    pd_proto_reader_reset(&rd2);
    PD_CHECK_OK(pd_proto_recv(sv[1], &rd2, &b, 1000));
    PD_CHECK(b.kind == PD_MSG_ASSIGN && b.seed == 0xfedcba9876543210ull);
    PD_CHECK_OK(pd_proto_recv(sv[1], &rd2, &b, 1000));
    PD_CHECK(b.kind == PD_MSG_ERROR && !strcmp(b.code, "cancelled"));
    PD_CHECK_ERR(pd_proto_recv(sv[1], &rd2, &b, 20), PD_ERR_TIMEOUT);
    close(sv[0]);
    PD_CHECK_ERR(pd_proto_recv(sv[1], &rd2, &b, 1000), PD_ERR_IO);
    /* Writing to a closed peer is an error, not SIGPIPE. */
    PD_CHECK_ERR(pd_proto_send(sv[1], &a), PD_ERR_IO);
    close(sv[1]);
}

static void test_roles(void) {
    pd_worker_role r;
    for (int i = 0; i < PD_ROLE_COUNT; i++) {
        PD_CHECK_OK(pd_worker_role_parse(pd_worker_role_name((pd_worker_role)i), &r));
        PD_CHECK((int)r == i);
    }
    PD_CHECK_ERR(pd_worker_role_parse("vae", &r), PD_ERR_INVALID);
}

int main(void) {
    PD_RUN(test_round_trip_every_kind);
    PD_RUN(test_params_bounds);
    PD_RUN(test_truncated_rejected);
    PD_RUN(test_bad_fields_rejected);
    PD_RUN(test_reader_lengths);
    PD_RUN(test_reader_split_frames);
    PD_RUN(test_socketpair);
    PD_RUN(test_roles);
    return pd_test_summary();
}
