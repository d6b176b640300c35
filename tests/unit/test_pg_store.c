/* The shared job store (daemon/pg_store.h) against a real PostgreSQL server, whose URL comes in
 * PIPEDIT_PG_URL (tests/unit/pg_run.sh starts one): migrations run twice and concurrently, the
 * queue bound, take order, SKIP LOCKED exclusivity, fenced writes, lease expiry, cancel, expiry
 * once, notifications. */
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "daemon/daemon.h"
#include "daemon/pg_store.h"
#include "test.h"

static const char *url;

/* A plain connection for what the test checks behind the store's back. */
static PGconn *raw(void) {
    PGconn *c = PQconnectdb(url);
    PD_ASSERT(PQstatus(c) == CONNECTION_OK);
    return c;
}

/* The first value of sql's first row, as an integer (-1 when none). */
static long long q1(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    long long v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 ? atoll(PQgetvalue(r, 0, 0)) : -1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) fprintf(stderr, "  sql: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return v;
}

static void wipe(void) {
    PGconn *c = raw();
    PQclear(PQexec(c, "DELETE FROM pipedit_jobs"));
    PQfinish(c);
}

static pd_pg_store *open_as(const char *holder, double lease_s) {
    pd_pg_store *s = NULL;
    pd_status st = pd_pg_store_open(url, holder, lease_s, &s);
    PD_CHECK_MSG(st == PD_OK, "%s", pd_error_msg());
    PD_ASSERT(s);
    return s;
}

/* A queued job with a fresh id and a small request; *id receives the id. */
static void fill_job(pd_job *jp) {
    pd_job j;
    memset(&j, 0, sizeof j);
    PD_CHECK_OK(pd_job_id_new(j.id));
    j.req.prompt = "a red fox";
    j.req.p.width = 64;
    j.req.p.height = 48;
    j.req.p.frames = 5;
    j.req.p.steps = 2;
    j.req.p.fps = 16;
    j.req.p.guidance = 5;
    j.req.p.shift = 3;
    j.req.p.seed = 42;
    snprintf(j.req.model, sizeof j.req.model, "tiny");
    snprintf(j.req.seconds, sizeof j.req.seconds, "1");
    j.created_at = pd_daemon_now();
    *jp = j;
}

static pd_status create(pd_pg_store *s, int capacity, char *id, int *pos) {
    pd_job j;
    fill_job(&j);
    strcpy(id, j.id);
    int p;
    pd_status st = pd_pg_store_create(s, &j, capacity, &p);
    if (pos) *pos = p;
    return st;
}

typedef struct opener {
    pd_pg_store *s;
    pd_status st;
    char holder[16];
} opener;

static void *open_thread(void *arg) {
    opener *o = arg;
    o->st = pd_pg_store_open(url, o->holder, 5, &o->s);
    return NULL;
}

static void test_migration_concurrent_and_twice(void) {
    opener o[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        memset(&o[i], 0, sizeof o[i]);
        snprintf(o[i].holder, sizeof o[i].holder, "m%d", i);
        pthread_create(&t[i], NULL, open_thread, &o[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++) {
        PD_CHECK_MSG(o[i].st == PD_OK, "%d", i);
        PD_CHECK(o[i].s && pd_pg_store_ping(o[i].s) == PD_OK);
        pd_pg_store_close(o[i].s);
    }
    pd_pg_store *again = open_as("m9", 5); /* a second start changes nothing */
    PD_CHECK_OK(pd_pg_store_ping(again));
    pd_pg_store_close(again);
    PGconn *c = raw();
    PD_CHECK(q1(c, "SELECT version FROM pipedit_schema_version") == PD_PG_SCHEMA_VERSION);
    PD_CHECK(q1(c, "SELECT count(*) FROM pipedit_schema_version") == 1);
    PQfinish(c);
}

static void test_capacity_and_take_order(void) {
    wipe();
    pd_pg_store *a = open_as("a", 5), *b = open_as("b", 5);
    char ids[3][PD_JOB_ID_LEN + 1], extra[PD_JOB_ID_LEN + 1];
    for (int i = 0; i < 3; i++) {
        int pos = -1;
        PD_CHECK_OK(create(i % 2 ? b : a, 3, ids[i], &pos));
        PD_CHECK_MSG(pos == i, "position %d, want %d", pos, i);
    }
    PD_CHECK_ERR(create(b, 3, extra, NULL), PD_ERR_BUSY); /* global bound: a's jobs count for b */
    pd_pg_job g;
    PD_CHECK_ERR(pd_pg_store_get(a, extra, &g), PD_ERR_NOT_FOUND);
    PD_CHECK_OK(pd_pg_store_get(b, ids[2], &g));
    PD_CHECK(g.queue_position == 2 && g.job.status == PD_JOB_QUEUED && !strcmp(g.job.req.prompt, "a red fox") && g.job.req.p.frames == 5);
    pd_pg_job_free(&g);
    /* Takes come in creation order whoever takes. */
    for (int i = 0; i < 3; i++) {
        pd_pg_job t;
        PD_CHECK_OK(pd_pg_store_take(i % 2 ? a : b, pd_daemon_now(), &t));
        PD_CHECK_MSG(!strcmp(t.job.id, ids[i]), "take %d got %s", i, t.job.id);
        PD_CHECK(t.fence == 1 && t.job.status == PD_JOB_IN_PROGRESS && !strcmp(t.holder, i % 2 ? "a" : "b"));
        pd_pg_job_free(&t);
    }
    pd_pg_job none;
    PD_CHECK_ERR(pd_pg_store_take(a, pd_daemon_now(), &none), PD_ERR_NOT_FOUND);
    PD_CHECK_OK(create(a, 3, extra, NULL)); /* taken jobs no longer count against the bound */
    /* List: pagination as the local table does it. */
    pd_pg_job l[4];
    int n;
    bool more;
    PD_CHECK_OK(pd_pg_store_list(a, NULL, 2, true, l, &n, &more));
    PD_CHECK(n == 2 && more && !strcmp(l[0].job.id, ids[0]) && !strcmp(l[1].job.id, ids[1]));
    for (int i = 0; i < n; i++) pd_pg_job_free(&l[i]);
    PD_CHECK_OK(pd_pg_store_list(a, ids[1], 4, true, l, &n, &more));
    PD_CHECK(n == 2 && !more && !strcmp(l[0].job.id, ids[2]) && !strcmp(l[1].job.id, extra));
    for (int i = 0; i < n; i++) pd_pg_job_free(&l[i]);
    PD_CHECK_OK(pd_pg_store_list(a, ids[1], 4, false, l, &n, &more));
    PD_CHECK(n == 1 && !more && !strcmp(l[0].job.id, ids[0]));
    for (int i = 0; i < n; i++) pd_pg_job_free(&l[i]);
    PD_CHECK_ERR(pd_pg_store_list(a, "video_00000000000000000000000000000000", 4, true, l, &n, &more), PD_ERR_NOT_FOUND);
    pd_pg_store_close(a);
    pd_pg_store_close(b);
}

static void test_skip_locked(void) {
    wipe();
    pd_pg_store *a = open_as("a", 5);
    char first[PD_JOB_ID_LEN + 1], second[PD_JOB_ID_LEN + 1];
    PD_CHECK_OK(create(a, 10, first, NULL));
    PD_CHECK_OK(create(a, 10, second, NULL));
    /* Another transaction holds the oldest queued row: a take skips it instead of waiting. */
    PGconn *c = raw();
    PQclear(PQexec(c, "BEGIN"));
    PD_CHECK(q1(c, "SELECT seq FROM pipedit_jobs WHERE status = 'queued' ORDER BY seq LIMIT 1 FOR UPDATE") > 0);
    pd_pg_job t;
    PD_CHECK_OK(pd_pg_store_take(a, pd_daemon_now(), &t));
    PD_CHECK_MSG(!strcmp(t.job.id, second), "took %s", t.job.id);
    pd_pg_job_free(&t);
    PQclear(PQexec(c, "COMMIT"));
    PQfinish(c);
    pd_pg_store_close(a);
}

typedef struct taker {
    pd_pg_store *s;
    int n;
    char got[64][PD_JOB_ID_LEN + 1];
} taker;

static void *take_thread(void *arg) {
    taker *k = arg;
    pd_pg_job t;
    while (k->n < 64 && pd_pg_store_take(k->s, pd_daemon_now(), &t) == PD_OK) {
        strcpy(k->got[k->n++], t.job.id);
        pd_pg_job_free(&t);
    }
    return NULL;
}

static void test_concurrent_takes_exclusive(void) {
    wipe();
    pd_pg_store *a = open_as("a", 5), *b = open_as("b", 5);
    enum { N = 40 };
    char ids[N][PD_JOB_ID_LEN + 1];
    for (int i = 0; i < N; i++) PD_CHECK_OK(create(a, 100, ids[i], NULL));
    taker k[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        memset(&k[i], 0, sizeof k[i]);
        k[i].s = i % 2 ? b : a;
        pthread_create(&t[i], NULL, take_thread, &k[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    int total = 0;
    for (int i = 0; i < 4; i++) total += k[i].n;
    PD_CHECK_MSG(total == N, "%d taken, want %d", total, N);
    for (int i = 0; i < N; i++) {
        int seen = 0;
        for (int w = 0; w < 4; w++)
            for (int j = 0; j < k[w].n; j++) seen += !strcmp(k[w].got[j], ids[i]);
        PD_CHECK_MSG(seen == 1, "%s taken %d times", ids[i], seen);
    }
    PGconn *c = raw();
    PD_CHECK(q1(c, "SELECT count(*) FROM pipedit_jobs WHERE fence <> 1") == 0);
    PQfinish(c);
    pd_pg_store_close(a);
    pd_pg_store_close(b);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_fenced_writes_and_lease_expiry(void) {
    wipe();
    pd_pg_store *a = open_as("a", 0.5), *b = open_as("b", 0.5);
    char id[PD_JOB_ID_LEN + 1];
    PD_CHECK_OK(create(a, 10, id, NULL));
    pd_pg_job t;
    PD_CHECK_OK(pd_pg_store_take(a, pd_daemon_now(), &t));
    int64_t fa = t.fence;
    pd_pg_job_free(&t);
    PD_CHECK_OK(pd_pg_store_progress(a, id, fa, 40, PD_STAGE_DENOISE, 1, 2));
    PD_CHECK_ERR(pd_pg_store_progress(b, id, fa, 50, PD_STAGE_DENOISE, 2, 2), PD_ERR_CANCELLED); /* not b's */
    PD_CHECK_ERR(pd_pg_store_progress(a, id, fa + 1, 50, PD_STAGE_DENOISE, 2, 2), PD_ERR_CANCELLED); /* wrong fence */
    /* Renewal keeps it; without renewal it expires and goes back to the queue. */
    char held[4][PD_JOB_ID_LEN + 1];
    int n;
    sleep_ms(300);
    PD_CHECK_OK(pd_pg_store_renew(a, (const char(*)[PD_JOB_ID_LEN + 1])&id, 1, held, &n));
    PD_CHECK(n == 1 && !strcmp(held[0], id));
    sleep_ms(300);
    PD_CHECK_OK(pd_pg_store_requeue_expired(b, &n));
    PD_CHECK_MSG(n == 0, "requeued %d though renewed", n);
    sleep_ms(700);
    PD_CHECK_OK(pd_pg_store_requeue_expired(b, &n));
    PD_CHECK(n == 1);
    PD_CHECK_OK(pd_pg_store_get(b, id, &t));
    PD_CHECK(t.job.status == PD_JOB_QUEUED && t.job.progress == 0 && t.holder[0] == 0 && t.fence == fa && t.queue_position == 0);
    pd_pg_job_free(&t);
    PD_CHECK_OK(pd_pg_store_renew(a, (const char(*)[PD_JOB_ID_LEN + 1])&id, 1, held, &n));
    PD_CHECK(n == 0); /* a learns it lost the job */
    PD_CHECK_OK(pd_pg_store_take(b, pd_daemon_now(), &t));
    int64_t fb = t.fence;
    PD_CHECK(fb == fa + 1 && !strcmp(t.job.id, id));
    pd_pg_job_free(&t);
    /* The stale holder's result is refused; the new holder's lands once. */
    double now = pd_daemon_now();
    PD_CHECK_ERR(pd_pg_store_complete(a, id, fa, now, now + 60), PD_ERR_CANCELLED);
    PD_CHECK_OK(pd_pg_store_complete(b, id, fb, now, now + 60));
    /* The same result again (its first reply lost with the connection): accepted, nothing changes. */
    PD_CHECK_OK(pd_pg_store_complete(b, id, fb, now + 5, now + 65));
    PD_CHECK_ERR(pd_pg_store_fail(b, id, fb, now, now + 60, "x", "y"), PD_ERR_CANCELLED);
    PD_CHECK_OK(pd_pg_store_get(a, id, &t));
    PD_CHECK(t.job.status == PD_JOB_COMPLETED && t.job.progress == 100 && t.completions == 1 && t.progress_writes == 1 &&
             fabs(t.job.completed_at - now) < 1e-3 && t.fence == fb);
    pd_pg_job_free(&t);
    pd_pg_store_close(a);
    pd_pg_store_close(b);
}

/* A create whose reply was lost after it committed is retried by run() on a fresh connection: the
 * retry meets the stored row (primary key), or the queue bound the job itself fills. */
static void test_create_retried_after_commit(void) {
    wipe();
    pd_pg_store *a = open_as("a", 5);
    char first[PD_JOB_ID_LEN + 1];
    PD_CHECK_OK(create(a, 2, first, NULL));
    pd_job j;
    fill_job(&j);
    int pos = -1, again = -1;
    PD_CHECK_OK(pd_pg_store_create(a, &j, 2, &pos));
    PD_CHECK(pos == 1);
    PD_CHECK_OK(pd_pg_store_create(a, &j, 2, &again)); /* the queue is full now: with this very job */
    PD_CHECK_MSG(again == 1, "position %d", again);
    PD_CHECK_OK(pd_pg_store_create(a, &j, 3, &again)); /* room left: the primary key refuses the insert */
    PD_CHECK_MSG(again == 1, "position %d", again);
    char other[PD_JOB_ID_LEN + 1];
    PD_CHECK_ERR(create(a, 2, other, NULL), PD_ERR_BUSY); /* a new job still meets the bound */
    PGconn *c = raw();
    PD_CHECK(q1(c, "SELECT count(*) FROM pipedit_jobs") == 2);
    PQfinish(c);
    pd_pg_store_close(a);
}

static void test_live(void) {
    wipe();
    pd_pg_store *a = open_as("a", 5);
    char ids[4][PD_JOB_ID_LEN + 1];
    for (int i = 0; i < 4; i++) PD_CHECK_OK(create(a, 10, ids[i], NULL));
    pd_pg_job t, live[8];
    PD_CHECK_OK(pd_pg_store_take(a, pd_daemon_now(), &t)); /* ids[0] runs */
    pd_pg_job_free(&t);
    double now = pd_daemon_now();
    PD_CHECK_OK(pd_pg_store_cancel(a, ids[2], now, now + 60, &t, NULL)); /* finished: not live */
    pd_pg_job_free(&t);
    int n = 0;
    PD_CHECK_OK(pd_pg_store_live(a, 8, live, &n));
    PD_CHECK_MSG(n == 3, "%d live", n);
    PD_CHECK(n == 3 && !strcmp(live[0].job.id, ids[0]) && live[0].job.status == PD_JOB_IN_PROGRESS && live[0].queue_position == -1);
    PD_CHECK(n == 3 && !strcmp(live[1].job.id, ids[1]) && live[1].queue_position == 0 && !strcmp(live[1].job.req.prompt, "a red fox"));
    PD_CHECK(n == 3 && !strcmp(live[2].job.id, ids[3]) && live[2].queue_position == 1);
    for (int i = 0; i < n; i++) pd_pg_job_free(&live[i]);
    PD_CHECK_OK(pd_pg_store_live(a, 2, live, &n)); /* capped */
    PD_CHECK(n == 2 && !strcmp(live[1].job.id, ids[1]));
    for (int i = 0; i < n; i++) pd_pg_job_free(&live[i]);
    pd_pg_store_close(a);
}

static void test_cancel_and_release(void) {
    wipe();
    pd_pg_store *a = open_as("a", 5), *b = open_as("b", 5);
    char q[PD_JOB_ID_LEN + 1], r[PD_JOB_ID_LEN + 1], x[PD_JOB_ID_LEN + 1];
    PD_CHECK_OK(create(a, 10, r, NULL));
    PD_CHECK_OK(create(a, 10, q, NULL));
    PD_CHECK_OK(create(a, 10, x, NULL));
    pd_pg_job t;
    PD_CHECK_OK(pd_pg_store_take(a, pd_daemon_now(), &t));
    int64_t f = t.fence;
    pd_pg_job_free(&t);
    double now = pd_daemon_now();
    bool did = false;
    PD_CHECK_OK(pd_pg_store_cancel(b, r, now, now + 60, &t, &did)); /* running elsewhere: failed at once, holder fenced off */
    PD_CHECK(did && t.job.status == PD_JOB_FAILED && !strcmp(t.job.error_code, "cancelled"));
    pd_pg_job_free(&t);
    PD_CHECK_ERR(pd_pg_store_complete(a, r, f, now, now + 60), PD_ERR_CANCELLED);
    PD_CHECK_OK(pd_pg_store_cancel(b, q, now, now + 60, &t, NULL)); /* queued: never taken */
    PD_CHECK(t.job.status == PD_JOB_FAILED);
    pd_pg_job_free(&t);
    PD_CHECK_OK(pd_pg_store_cancel(a, q, now, now + 60, &t, &did)); /* finished already: nothing changes */
    PD_CHECK(!did && t.job.status == PD_JOB_FAILED);
    pd_pg_job_free(&t);
    PD_CHECK_OK(pd_pg_store_take(b, pd_daemon_now(), &t));
    PD_CHECK(!strcmp(t.job.id, x));
    PD_CHECK_OK(pd_pg_store_release(b, x, t.fence));
    pd_pg_job_free(&t);
    PD_CHECK_OK(pd_pg_store_get(a, x, &t));
    PD_CHECK(t.job.status == PD_JOB_QUEUED && t.queue_position == 0);
    pd_pg_job_free(&t);
    bool live = false;
    PD_CHECK_OK(pd_pg_store_delete(a, x, &live));
    PD_CHECK(live);
    PD_CHECK_ERR(pd_pg_store_delete(b, x, &live), PD_ERR_NOT_FOUND);
    PD_CHECK_ERR(pd_pg_store_cancel(b, x, now, now + 60, &t, NULL), PD_ERR_NOT_FOUND);
    pd_pg_store_close(a);
    pd_pg_store_close(b);
}

typedef struct expirer {
    pd_pg_store *s;
    int n;
    char ids[16][PD_JOB_ID_LEN + 1];
} expirer;

static void *expire_thread(void *arg) {
    expirer *e = arg;
    pd_pg_store_expire(e->s, pd_daemon_now(), e->ids, 16, &e->n);
    return NULL;
}

static void test_expiry_once(void) {
    wipe();
    pd_pg_store *a = open_as("a", 5), *b = open_as("b", 5);
    char ids[6][PD_JOB_ID_LEN + 1];
    for (int i = 0; i < 6; i++) {
        PD_CHECK_OK(create(a, 10, ids[i], NULL));
        pd_pg_job t;
        PD_CHECK_OK(pd_pg_store_take(a, pd_daemon_now(), &t));
        double now = pd_daemon_now();
        PD_CHECK_OK(pd_pg_store_complete(a, t.job.id, t.fence, now, i < 4 ? now - 1 : now + 3600));
        pd_pg_job_free(&t);
    }
    expirer e[2] = {{.s = a}, {.s = b}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, expire_thread, &e[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    PD_CHECK_MSG(e[0].n + e[1].n == 4, "%d + %d expired, want 4 in all", e[0].n, e[1].n);
    for (int i = 0; i < 4; i++) {
        int seen = 0;
        for (int w = 0; w < 2; w++)
            for (int j = 0; j < e[w].n; j++) seen += !strcmp(e[w].ids[j], ids[i]);
        PD_CHECK_MSG(seen == 1, "%s expired %d times", ids[i], seen);
    }
    PGconn *c = raw();
    PD_CHECK(q1(c, "SELECT count(*) FROM pipedit_jobs") == 2);
    PQfinish(c);
    pd_pg_store_close(a);
    pd_pg_store_close(b);
}

typedef struct heard {
    int reconnects, n;
    int64_t fence;
    char last[PD_JOB_ID_LEN + 1], status[16], holder[16];
} heard;

static void on_notify(void *ud, const char *id, const char *status, int64_t fence, const char *holder) {
    heard *h = ud;
    if (!id) {
        h->reconnects++;
        return;
    }
    h->n++;
    snprintf(h->last, sizeof h->last, "%s", id);
    snprintf(h->status, sizeof h->status, "%s", status);
    snprintf(h->holder, sizeof h->holder, "%s", holder);
    h->fence = fence;
}

static void test_notifications(void) {
    wipe();
    pd_pg_store *a = open_as("a", 5), *b = open_as("b", 5);
    heard h = {0};
    PD_CHECK_OK(pd_pg_store_listen(b, 0.05, on_notify, &h));
    PD_CHECK(h.reconnects == 1);
    char id[PD_JOB_ID_LEN + 1];
    PD_CHECK_OK(create(a, 10, id, NULL));
    for (int i = 0; i < 20 && h.n == 0; i++) PD_CHECK_OK(pd_pg_store_listen(b, 0.1, on_notify, &h));
    PD_CHECK(h.n == 1 && !strcmp(h.last, id) && !strcmp(h.status, "queued") && !h.holder[0] && h.fence == 0);
    pd_pg_job t;
    PD_CHECK_OK(pd_pg_store_take(a, pd_daemon_now(), &t));
    char held[2][PD_JOB_ID_LEN + 1];
    int n;
    PD_CHECK_OK(pd_pg_store_renew(a, (const char(*)[PD_JOB_ID_LEN + 1])&id, 1, held, &n)); /* renewals notify nobody */
    PD_CHECK_OK(pd_pg_store_progress(a, id, t.fence, 10, 1, 1, 4));
    for (int i = 0; i < 20 && h.n < 3; i++) PD_CHECK_OK(pd_pg_store_listen(b, 0.1, on_notify, &h));
    PD_CHECK_MSG(h.n == 3 && !strcmp(h.status, "in_progress") && !strcmp(h.holder, "a") && h.fence == 1, "%d notifications", h.n);
    pd_pg_job_free(&t);
    pd_pg_store_stats ss;
    pd_pg_store_stats_get(b, &ss);
    PD_CHECK(ss.up && ss.notifications == 3 && ss.queries > 0);
    pd_pg_store_close(a);
    pd_pg_store_close(b);
}

static void test_dropped_connections(void) {
    wipe();
    pd_pg_store *a = open_as("a", 5);
    char id[PD_JOB_ID_LEN + 1];
    PD_CHECK_OK(create(a, 10, id, NULL));
    pd_pg_job t;
    PD_CHECK_OK(pd_pg_store_get(a, id, &t));
    pd_pg_job_free(&t);
    /* The server drops every connection of the store (as a restart does): the next read and create
     * reconnect and succeed instead of failing once per pooled connection. */
    PGconn *c = raw();
    PD_CHECK(q1(c, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pipeditd'") >= 1);
    PQfinish(c);
    for (int i = 0; i < 3; i++) {
        PD_CHECK_OK(pd_pg_store_get(a, id, &t));
        pd_pg_job_free(&t);
    }
    char id2[PD_JOB_ID_LEN + 1];
    PD_CHECK_OK(create(a, 10, id2, NULL));
    pd_pg_store_stats ss;
    pd_pg_store_stats_get(a, &ss);
    PD_CHECK(ss.up);
    pd_pg_store_close(a);
}

static void test_bad_settings(void) {
    pd_pg_store *s = NULL;
    PD_CHECK_ERR(pd_pg_store_open("mysql://x", "a", 5, &s), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_pg_store_open(url, "", 5, &s), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_pg_store_open(url, "has space", 5, &s), PD_ERR_INVALID);
    PD_CHECK(!s);
    PD_CHECK(pd_pg_url_valid("postgresql://u@127.0.0.1:5/db") && !pd_pg_url_valid("postgres://u@h/db?bogus_option=1"));
}

static void test_unreachable(void) {
    /* A port nothing listens on: open succeeds (the store retries later), calls fail at once. */
    pd_pg_store *s = NULL;
    PD_CHECK_OK(pd_pg_store_open("postgres://pipedit@127.0.0.1:1/pipedit", "a", 5, &s));
    pd_pg_job t;
    PD_CHECK_ERR(pd_pg_store_take(s, pd_daemon_now(), &t), PD_ERR_IO);
    pd_pg_store_stats ss;
    pd_pg_store_stats_get(s, &ss);
    PD_CHECK(!ss.up);
    pd_pg_store_close(s);
}

int main(void) {
    url = getenv("PIPEDIT_PG_URL");
    if (!url || !*url) {
        printf("SKIP: PIPEDIT_PG_URL is not set (tests/unit/pg_run.sh starts a server and sets it)\n");
        return 77;
    }
    PD_RUN(test_migration_concurrent_and_twice);
    PD_RUN(test_capacity_and_take_order);
    PD_RUN(test_skip_locked);
    PD_RUN(test_concurrent_takes_exclusive);
    PD_RUN(test_fenced_writes_and_lease_expiry);
    PD_RUN(test_create_retried_after_commit);
    PD_RUN(test_live);
    PD_RUN(test_cancel_and_release);
    PD_RUN(test_expiry_once);
    PD_RUN(test_notifications);
    PD_RUN(test_dropped_connections);
    PD_RUN(test_bad_settings);
    PD_RUN(test_unreachable);
    return pd_test_summary();
}
