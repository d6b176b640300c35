#include "daemon/pg_store.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "base/clock.h"
#include "daemon/journal.h"

#define POOL_SIZE 4
#define BACKOFF_MIN_S 0.1
#define BACKOFF_MAX_S 5.0
/* Advisory lock keys (decimal: they are spliced into SQL): migrations, and the capacity check of creates. */
#define MIGRATE_LOCK_KEY 1885958245
#define CREATE_LOCK_KEY 1701079412
#define XSTR(x) #x
#define STR(x) XSTR(x)

/* ---- schema ---- */

/* Each step runs once, in order, under the migration lock; steps are never edited once released,
 * a change is a new step. Function bodies use $f$ quotes (the step itself sits inside $m$). */
static const char *const migrations[PD_PG_SCHEMA_VERSION] = {
    /* 1: jobs, the queue index, change notifications and the bounded create */
    "CREATE TABLE pipedit_jobs ("
    " id text PRIMARY KEY,"
    " seq bigserial NOT NULL UNIQUE,"
    " status text NOT NULL CHECK (status IN ('queued', 'in_progress', 'completed', 'failed')),"
    " progress int NOT NULL DEFAULT 0, stage int NOT NULL DEFAULT -1, step int NOT NULL DEFAULT 0, total int NOT NULL DEFAULT 0,"
    " created_at double precision NOT NULL, started_at double precision NOT NULL DEFAULT 0,"
    " completed_at double precision NOT NULL DEFAULT 0, expires_at double precision NOT NULL DEFAULT 0,"
    " error_code text NOT NULL DEFAULT '', error_message text NOT NULL DEFAULT '',"
    " request text NOT NULL,"
    " lease_holder text, lease_expires timestamptz,"
    " fence bigint NOT NULL DEFAULT 0, completions int NOT NULL DEFAULT 0, progress_writes int NOT NULL DEFAULT 0);"
    "CREATE INDEX pipedit_jobs_queued ON pipedit_jobs (seq) WHERE status = 'queued';"
    "CREATE INDEX pipedit_jobs_leases ON pipedit_jobs (lease_expires) WHERE status = 'in_progress';"
    "CREATE INDEX pipedit_jobs_expiry ON pipedit_jobs (expires_at) WHERE expires_at > 0;"
    "CREATE FUNCTION pipedit_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN"
    " IF TG_OP = 'DELETE' THEN"
    "  PERFORM pg_notify('pipedit_jobs', OLD.id || ' deleted ' || OLD.fence || ' ' || coalesce(OLD.lease_holder, ''));"
    "  RETURN OLD;"
    " END IF;"
    " PERFORM pg_notify('pipedit_jobs', NEW.id || ' ' || NEW.status || ' ' || NEW.fence || ' ' || coalesce(NEW.lease_holder, ''));"
    " RETURN NEW; END $f$;"
    "CREATE TRIGGER pipedit_jobs_notify_rows AFTER INSERT OR DELETE ON pipedit_jobs"
    " FOR EACH ROW EXECUTE FUNCTION pipedit_jobs_notify();"
    "CREATE TRIGGER pipedit_jobs_notify_changes AFTER UPDATE ON pipedit_jobs FOR EACH ROW"
    " WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.progress <> NEW.progress OR OLD.stage <> NEW.stage"
    "  OR OLD.step <> NEW.step OR OLD.lease_holder IS DISTINCT FROM NEW.lease_holder)"
    " EXECUTE FUNCTION pipedit_jobs_notify();"
    /* Each statement of a plpgsql function sees what committed before it began, so the count after
     * the lock includes every create that went before. */
    "CREATE FUNCTION pipedit_create_job(p_id text, p_created double precision, p_request text, p_capacity int)"
    " RETURNS bigint LANGUAGE plpgsql AS $f$ DECLARE n bigint; BEGIN"
    " PERFORM pg_advisory_xact_lock(" STR(CREATE_LOCK_KEY) ");"
    " SELECT count(*) INTO n FROM pipedit_jobs WHERE status = 'queued';"
    " IF n >= p_capacity THEN RETURN -1; END IF;"
    " INSERT INTO pipedit_jobs (id, status, created_at, request) VALUES (p_id, 'queued', p_created, p_request);"
    " RETURN n; END $f$;",
};

/* ---- statements ---- */

#define COLS_BUT_POSITION                                                                                                          \
    "j.id, j.seq, j.status, j.progress, j.stage, j.step, j.total, j.created_at, j.started_at, j.completed_at, j.expires_at, "     \
    "j.error_code, j.error_message, j.request, coalesce(j.lease_holder, ''), j.fence, j.completions, j.progress_writes, "
#define COLS                                                                                                                       \
    COLS_BUT_POSITION                                                                                                              \
    "CASE WHEN j.status = 'queued' THEN (SELECT count(*) FROM pipedit_jobs q WHERE q.status = 'queued' AND q.seq < j.seq) "       \
    "ELSE -1 END"
#define N_COLS 19
#define FENCED "WHERE id = $1 AND lease_holder = $2 AND fence = $3 AND status = 'in_progress'"

enum stmt {
    S_CREATE, S_GET, S_SEQ, S_LIST_ASC, S_LIST_DESC, S_QPOS, S_TAKE, S_PROGRESS, S_COMPLETE, S_FAIL, S_RELEASE,
    S_RENEW, S_REQUEUE, S_CANCEL, S_DELETE, S_EXPIRE, S_COUNTS, S_LIVE, S_COUNT
};

static const struct {
    const char *name, *sql;
    int n_params;
} stmts[S_COUNT] = {
    [S_CREATE] = {"pd_create", "SELECT pipedit_create_job($1, $2, $3, $4)", 4},
    [S_GET] = {"pd_get", "SELECT " COLS " FROM pipedit_jobs j WHERE j.id = $1", 1},
    [S_SEQ] = {"pd_seq", "SELECT seq FROM pipedit_jobs WHERE id = $1", 1},
    [S_LIST_ASC] = {"pd_list_asc", "SELECT " COLS " FROM pipedit_jobs j WHERE j.seq > $1 ORDER BY j.seq LIMIT $2", 2},
    [S_LIST_DESC] = {"pd_list_desc", "SELECT " COLS " FROM pipedit_jobs j WHERE j.seq < $1 ORDER BY j.seq DESC LIMIT $2", 2},
    [S_QPOS] = {"pd_qpos",
                "SELECT CASE WHEN j.status = 'queued' THEN (SELECT count(*) FROM pipedit_jobs q WHERE q.status = 'queued' AND q.seq < "
                "j.seq) ELSE -1 END FROM pipedit_jobs j WHERE j.id = $1",
                1},
    [S_TAKE] = {"pd_take",
                "UPDATE pipedit_jobs j SET status = 'in_progress', lease_holder = $1, lease_expires = clock_timestamp() + $2 * "
                "interval '1 second', fence = fence + 1, started_at = $3, progress = 0, stage = -1, step = 0, total = 0 "
                "WHERE j.status = 'queued' AND j.id = (SELECT id FROM pipedit_jobs WHERE status = 'queued' ORDER BY seq "
                "FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING " COLS,
                3},
    [S_PROGRESS] = {"pd_progress",
                    "UPDATE pipedit_jobs SET progress = $4, stage = $5, step = $6, total = $7, progress_writes = progress_writes + 1 " FENCED, 7},
    [S_COMPLETE] = {"pd_complete",
                    "UPDATE pipedit_jobs SET status = 'completed', progress = 100, stage = -1, completed_at = $4, expires_at = $5, "
                    "lease_expires = NULL, completions = completions + 1 " FENCED,
                    5},
    [S_FAIL] = {"pd_fail",
                "UPDATE pipedit_jobs SET status = 'failed', stage = -1, completed_at = $4, expires_at = $5, error_code = $6, "
                "error_message = $7, lease_expires = NULL " FENCED,
                7},
    [S_RELEASE] = {"pd_release",
                   "UPDATE pipedit_jobs SET status = 'queued', lease_holder = NULL, lease_expires = NULL, started_at = 0, progress = 0, "
                   "stage = -1, step = 0, total = 0 " FENCED,
                   3},
    [S_RENEW] = {"pd_renew",
                 "UPDATE pipedit_jobs SET lease_expires = clock_timestamp() + $2 * interval '1 second' "
                 "WHERE lease_holder = $1 AND status = 'in_progress' AND id = ANY($3::text[]) RETURNING id",
                 3},
    [S_REQUEUE] = {"pd_requeue",
                   "UPDATE pipedit_jobs SET status = 'queued', lease_holder = NULL, lease_expires = NULL, started_at = 0, progress = 0, "
                   "stage = -1, step = 0, total = 0 WHERE status = 'in_progress' AND lease_expires < clock_timestamp() RETURNING id",
                   0},
    [S_CANCEL] = {"pd_cancel",
                  "UPDATE pipedit_jobs SET status = 'failed', stage = -1, completed_at = $2, expires_at = $3, error_code = 'cancelled', "
                  "error_message = 'cancelled by request', lease_expires = NULL "
                  "WHERE id = $1 AND status IN ('queued', 'in_progress')",
                  3},
    [S_DELETE] = {"pd_delete", "DELETE FROM pipedit_jobs WHERE id = $1 RETURNING status", 1},
    [S_EXPIRE] = {"pd_expire",
                  "DELETE FROM pipedit_jobs WHERE id IN (SELECT id FROM pipedit_jobs WHERE status IN ('completed', 'failed') AND "
                  "expires_at > 0 AND expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id",
                  2},
    [S_COUNTS] = {"pd_counts", "SELECT status, count(*) FROM pipedit_jobs GROUP BY status", 0},
    /* Running jobs, then the queue in order; the queue position is the row's rank (no subquery per row). */
    [S_LIVE] = {"pd_live",
                "SELECT " COLS_BUT_POSITION "-1 FROM pipedit_jobs j WHERE j.status IN ('in_progress', 'queued') "
                "ORDER BY j.status = 'queued', j.seq LIMIT $1",
                1},
};

/* ---- connections ---- */

typedef struct slot {
    PGconn *conn; /* NULL or bad: connect on next use */
    bool busy;
} slot;

struct pd_pg_store {
    char *url;
    char holder[PD_PG_HOLDER_MAX];
    double lease_s;
    pthread_mutex_t mu;  /* slots, backoff, migrated */
    pthread_cond_t freed;
    slot slots[POOL_SIZE];
    double backoff_s, next_try; /* no connection attempt before next_try (monotonic seconds) */
    bool migrated;
    PGconn *listen;            /* pd_pg_store_listen's thread only */
    double listen_backoff_s, listen_next_try;
    atomic_uint_fast64_t queries, notifications;
    atomic_bool up;
};

/* The first line of libpq's message (they end with a newline and may run on). */
static const char *short_msg(const char *m, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", m && *m ? m : "no message");
    char *nl = strchr(buf, '\n');
    if (nl) *nl = 0;
    return buf;
}

bool pd_pg_url_valid(const char *url) {
    if (strncmp(url, "postgres://", 11) && strncmp(url, "postgresql://", 13)) return false;
    char *err = NULL;
    PQconninfoOption *o = PQconninfoParse(url, &err);
    PQfreemem(err);
    if (!o) return false;
    PQconninfoFree(o);
    return true;
}

static void quiet(void *arg, const char *message) {
    (void)arg;
    PD_DEBUG("pg_store", "%s", message); /* NOTICEs such as "relation ... already exists, skipping" */
}

static PGconn *connect_url(pd_pg_store *s) {
    /* Defaults first, so that the URL's own parameters override them: a dead server or network is
     * noticed within seconds (connect, keepalives, unacknowledged writes), never after TCP's hours. */
    const char *keys[] = {"connect_timeout", "application_name", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                          "tcp_user_timeout", "dbname", NULL};
    const char *vals[] = {"3", "pipeditd", "1", "5", "2", "3", "10000", s->url, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c) PQsetNoticeProcessor(c, quiet, NULL);
    return c;
}

static PGresult *counted_exec(pd_pg_store *s, PGconn *c, const char *sql) {
    atomic_fetch_add(&s->queries, 1);
    return PQexec(c, sql);
}

/* Creates or upgrades the schema on connection c. */
static pd_status migrate(pd_pg_store *s, PGconn *c) {
    char *sql = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&sql, &len);
    if (!f) return pd_error_set(PD_ERR_NOMEM, "out of memory migrating the job store");
    fprintf(f, "BEGIN; SELECT pg_advisory_xact_lock(%d);"
               "CREATE TABLE IF NOT EXISTS pipedit_schema_version (version int NOT NULL);"
               "INSERT INTO pipedit_schema_version SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM pipedit_schema_version);",
            MIGRATE_LOCK_KEY);
    for (int v = 1; v <= PD_PG_SCHEMA_VERSION; v++)
        fprintf(f, "DO $m$ BEGIN IF (SELECT version FROM pipedit_schema_version) < %d THEN %s "
                   "UPDATE pipedit_schema_version SET version = %d; END IF; END $m$;",
                v, migrations[v - 1], v);
    fprintf(f, "SELECT version FROM pipedit_schema_version;");
    fclose(f);
    if (!sql) return pd_error_set(PD_ERR_NOMEM, "out of memory migrating the job store");
    PGresult *r = counted_exec(s, c, sql);
    free(sql);
    char m[256];
    pd_status st = PD_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        st = pd_error_set(PD_ERR_IO, "the job store's schema could not be created: %s", short_msg(PQerrorMessage(c), m, sizeof m));
        PQclear(r);
        PQclear(counted_exec(s, c, "ROLLBACK"));
        return st;
    }
    int version = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    r = counted_exec(s, c, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        st = pd_error_set(PD_ERR_IO, "the job store's schema could not be committed: %s", short_msg(PQerrorMessage(c), m, sizeof m));
    PQclear(r);
    if (st == PD_OK && version > PD_PG_SCHEMA_VERSION)
        st = pd_error_set(PD_ERR_FORMAT, "the job store's schema is version %d; this pipeditd knows up to %d (upgrade it)", version,
                          PD_PG_SCHEMA_VERSION);
    return st;
}

static pd_status prepare_all(pd_pg_store *s, PGconn *c) {
    char m[256];
    for (int i = 0; i < S_COUNT; i++) {
        atomic_fetch_add(&s->queries, 1);
        PGresult *r = PQprepare(c, stmts[i].name, stmts[i].sql, stmts[i].n_params, NULL);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) return pd_error_set(PD_ERR_IO, "preparing %s: %s", stmts[i].name, short_msg(PQerrorMessage(c), m, sizeof m));
    }
    return PD_OK;
}

static void note_failure(pd_pg_store *s) {
    pthread_mutex_lock(&s->mu);
    s->backoff_s = s->backoff_s <= 0 ? BACKOFF_MIN_S : fmin(s->backoff_s * 2, BACKOFF_MAX_S);
    s->next_try = pd_now_s() + s->backoff_s;
    pthread_mutex_unlock(&s->mu);
    atomic_store(&s->up, false);
}

/* A connected slot's connection (PD_ERR_IO when the database cannot be reached); release it with
 * put_conn. force ignores the backoff and connects afresh. */
static pd_status get_conn(pd_pg_store *s, bool force, int *slot_out) {
    pthread_mutex_lock(&s->mu);
    int k = -1;
    for (;;) {
        for (int i = 0; i < POOL_SIZE && k < 0; i++)
            if (!s->slots[i].busy && s->slots[i].conn) k = i; /* prefer a connected one */
        for (int i = 0; i < POOL_SIZE && k < 0; i++)
            if (!s->slots[i].busy) k = i;
        if (k >= 0) break;
        pthread_cond_wait(&s->freed, &s->mu);
    }
    slot *sl = &s->slots[k];
    if (!force && sl->conn && PQstatus(sl->conn) == CONNECTION_OK) {
        sl->busy = true;
        pthread_mutex_unlock(&s->mu);
        *slot_out = k;
        return PD_OK;
    }
    if (!force && pd_now_s() < s->next_try) {
        pthread_mutex_unlock(&s->mu);
        return pd_error_set(PD_ERR_IO, "the job store is unreachable (retrying)");
    }
    sl->busy = true;
    pthread_mutex_unlock(&s->mu);
    if (sl->conn) PQfinish(sl->conn);
    sl->conn = connect_url(s);
    atomic_fetch_add(&s->queries, 1);
    char m[256];
    pd_status st = PD_OK;
    if (!sl->conn || PQstatus(sl->conn) != CONNECTION_OK) {
        st = pd_error_set(PD_ERR_IO, "the job store is unreachable: %s", short_msg(sl->conn ? PQerrorMessage(sl->conn) : "out of memory", m, sizeof m));
    } else {
        pthread_mutex_lock(&s->mu);
        bool need = !s->migrated;
        pthread_mutex_unlock(&s->mu);
        if (need) st = migrate(s, sl->conn);
        if (st == PD_OK) st = prepare_all(s, sl->conn);
        if (st == PD_OK && need) {
            pthread_mutex_lock(&s->mu);
            s->migrated = true;
            pthread_mutex_unlock(&s->mu);
        }
    }
    if (st) {
        pd_status keep = st;
        char msg[512];
        snprintf(msg, sizeof msg, "%s", pd_error_msg());
        if (sl->conn) PQfinish(sl->conn);
        sl->conn = NULL;
        if (keep != PD_ERR_FORMAT) note_failure(s);
        pthread_mutex_lock(&s->mu);
        sl->busy = false;
        pthread_cond_signal(&s->freed);
        pthread_mutex_unlock(&s->mu);
        return pd_error_set(keep, "%s", msg);
    }
    pthread_mutex_lock(&s->mu);
    s->backoff_s = 0;
    s->next_try = 0;
    pthread_mutex_unlock(&s->mu);
    atomic_store(&s->up, true);
    *slot_out = k;
    return PD_OK;
}

static void put_conn(pd_pg_store *s, int k) {
    pthread_mutex_lock(&s->mu);
    s->slots[k].busy = false;
    pthread_cond_signal(&s->freed);
    pthread_mutex_unlock(&s->mu);
}

/* Statements that may run again when the connection broke under them: reads, and creates (a create
 * that did commit is refused the second time by its primary key, never stored twice, and
 * pd_pg_store_create then finds it stored). Fenced writes are not retried: their outcome would be
 * misread (a result that is retried by its caller is recognised as its own: own_result). */
static bool retry_safe(enum stmt which) {
    return which == S_GET || which == S_SEQ || which == S_LIST_ASC || which == S_LIST_DESC || which == S_QPOS || which == S_COUNTS ||
           which == S_LIVE || which == S_CREATE;
}

/* Runs prepared statement `which` with text params; *res receives the result (PQclear it) when the
 * statement succeeded. A broken connection is dropped and the store marked down; a retry-safe
 * statement then gets one more try on a fresh connection (after a server restart every pooled
 * connection is broken, and the first request on each should not fail for it). */
static pd_status run(pd_pg_store *s, enum stmt which, const char *const *params, PGresult **res) {
    *res = NULL;
    for (int attempt = 0;; attempt++) {
        int k;
        PD_TRY(get_conn(s, attempt > 0, &k));
        PGconn *c = s->slots[k].conn;
        atomic_fetch_add(&s->queries, 1);
        PGresult *r = PQexecPrepared(c, stmts[which].name, stmts[which].n_params, params, NULL, NULL, 0);
        ExecStatusType es = PQresultStatus(r);
        if (es == PGRES_TUPLES_OK || es == PGRES_COMMAND_OK) {
            atomic_store(&s->up, true);
            put_conn(s, k);
            *res = r;
            return PD_OK;
        }
        char m[256];
        pd_status st = pd_error_set(PD_ERR_IO, "the job store failed (%s): %s", stmts[which].name, short_msg(PQerrorMessage(c), m, sizeof m));
        PQclear(r);
        bool broken = PQstatus(c) != CONNECTION_OK;
        if (broken) {
            PQfinish(c);
            s->slots[k].conn = NULL;
            note_failure(s);
        }
        put_conn(s, k);
        if (!broken || attempt > 0 || !retry_safe(which)) return st;
    }
}

/* ---- rows ---- */

void pd_pg_job_free(pd_pg_job *j) {
    pd_job_request_free(&j->job.req);
    memset(j, 0, sizeof *j);
}

static pd_status parse_row(PGresult *r, int row, pd_pg_job *out) {
    memset(out, 0, sizeof *out);
    pd_job *j = &out->job;
#define V(c) PQgetvalue(r, row, c)
    snprintf(j->id, sizeof j->id, "%s", V(0));
    j->seq = strtoull(V(1), NULL, 10);
    j->status = pd_journal_status_parse(V(2));
    j->progress = atoi(V(3));
    j->stage = atoi(V(4));
    j->step = atoi(V(5));
    j->total = atoi(V(6));
    j->created_at = strtod(V(7), NULL);
    j->started_at = strtod(V(8), NULL);
    j->completed_at = strtod(V(9), NULL);
    j->expires_at = strtod(V(10), NULL);
    snprintf(j->error_code, sizeof j->error_code, "%s", V(11));
    snprintf(j->error_message, sizeof j->error_message, "%s", V(12));
    json_t *rec = json_loads(V(13), 0, NULL);
    bool ok = rec && pd_journal_request_parse(rec, &j->req);
    json_decref(rec);
    snprintf(out->holder, sizeof out->holder, "%s", V(14));
    out->fence = strtoll(V(15), NULL, 10);
    out->completions = atoi(V(16));
    out->progress_writes = atoi(V(17));
    out->queue_position = atoi(V(18));
#undef V
    if (!ok) return pd_error_set(PD_ERR_FORMAT, "job %s in the store has a malformed request", j->id);
    return PD_OK;
}

/* ---- public ---- */

pd_status pd_pg_store_open(const char *url, const char *holder, double lease_s, pd_pg_store **out) {
    *out = NULL;
    if (!pd_pg_url_valid(url)) return pd_error_set(PD_ERR_INVALID, "store: not a postgres:// or postgresql:// URL that libpq can parse");
    if (!holder[0] || strlen(holder) >= PD_PG_HOLDER_MAX || strchr(holder, ' '))
        return pd_error_set(PD_ERR_INVALID, "replica_id must be 1 to %d characters without spaces", PD_PG_HOLDER_MAX - 1);
    if (!(lease_s > 0)) return pd_error_set(PD_ERR_INVALID, "store_lease_s must be positive");
    pd_pg_store *s = calloc(1, sizeof *s);
    if (!s || !(s->url = strdup(url))) {
        free(s);
        return pd_error_set(PD_ERR_NOMEM, "out of memory opening the job store");
    }
    snprintf(s->holder, sizeof s->holder, "%s", holder);
    s->lease_s = lease_s;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->freed, NULL);
    atomic_init(&s->queries, 0);
    atomic_init(&s->notifications, 0);
    atomic_init(&s->up, false);
    pd_status st = pd_pg_store_ping(s);
    if (st == PD_ERR_FORMAT) {
        pd_pg_store_close(s);
        return st;
    }
    if (st) PD_WARN("pg_store", "%s; retrying in the background", pd_error_msg());
    *out = s;
    return PD_OK;
}

void pd_pg_store_close(pd_pg_store *s) {
    if (!s) return;
    for (int i = 0; i < POOL_SIZE; i++)
        if (s->slots[i].conn) PQfinish(s->slots[i].conn);
    if (s->listen) PQfinish(s->listen);
    pthread_cond_destroy(&s->freed);
    pthread_mutex_destroy(&s->mu);
    free(s->url);
    free(s);
}

pd_status pd_pg_store_ping(pd_pg_store *s) {
    int k;
    PD_TRY(get_conn(s, true, &k));
    put_conn(s, k);
    return PD_OK;
}

void pd_pg_store_stats_get(pd_pg_store *s, pd_pg_store_stats *out) {
    out->queries = atomic_load(&s->queries);
    out->notifications = atomic_load(&s->notifications);
    out->up = atomic_load(&s->up);
}

/* Whether job id is stored, and its queue position: ids are random, so a row with this one is the
 * caller's own create, committed before its reply was lost (the retry on a fresh connection then
 * fails on the primary key, or on the queue bound the job itself fills). When not, the error (st and
 * its message) stays as it was. */
static bool created_already(pd_pg_store *s, const char *id, pd_status st, int *queue_position) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", pd_error_msg());
    pd_pg_job own;
    bool found = pd_pg_store_get(s, id, &own) == PD_OK;
    if (found) *queue_position = own.queue_position > 0 ? own.queue_position : 0;
    if (found) pd_pg_job_free(&own);
    else pd_error_set(st, "%s", msg);
    return found;
}

pd_status pd_pg_store_create(pd_pg_store *s, const pd_job *j, int capacity, int *queue_position) {
    json_t *rec = pd_journal_rec_job(j);
    char *req = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    if (!req) return pd_error_set(PD_ERR_NOMEM, "out of memory storing a job");
    char created[32], cap[16];
    snprintf(created, sizeof created, "%.6f", j->created_at);
    snprintf(cap, sizeof cap, "%d", capacity);
    const char *p[] = {j->id, created, req, cap};
    PGresult *r;
    pd_status st = run(s, S_CREATE, p, &r);
    free(req);
    long long pos = -1;
    if (st == PD_OK) {
        pos = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
        if (pos < 0) st = pd_error_set(PD_ERR_BUSY, "the queue is full (%d jobs waiting)", capacity);
    }
    if ((st == PD_ERR_IO || st == PD_ERR_BUSY) && created_already(s, j->id, st, queue_position)) return PD_OK;
    if (st) return st;
    *queue_position = (int)pos;
    return PD_OK;
}

pd_status pd_pg_store_get(pd_pg_store *s, const char *id, pd_pg_job *out) {
    const char *p[] = {id};
    PGresult *r;
    PD_TRY(run(s, S_GET, p, &r));
    pd_status st = PQntuples(r) == 1 ? parse_row(r, 0, out) : pd_error_set(PD_ERR_NOT_FOUND, "no job %s", id);
    PQclear(r);
    return st;
}

pd_status pd_pg_store_list(pd_pg_store *s, const char *after, int limit, bool ascending, pd_pg_job *out, int *n, bool *more) {
    *n = 0;
    *more = false;
    char seq[24], lim[16];
    snprintf(seq, sizeof seq, "%s", ascending ? "0" : "9223372036854775807");
    PGresult *r;
    if (after) {
        const char *p[] = {after};
        PD_TRY(run(s, S_SEQ, p, &r));
        bool found = PQntuples(r) == 1;
        if (found) snprintf(seq, sizeof seq, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        if (!found) return pd_error_set(PD_ERR_NOT_FOUND, "'after' names no video");
    }
    snprintf(lim, sizeof lim, "%d", limit + 1);
    const char *p[] = {seq, lim};
    PD_TRY(run(s, ascending ? S_LIST_ASC : S_LIST_DESC, p, &r));
    int rows = PQntuples(r);
    pd_status st = PD_OK;
    for (int i = 0; i < rows && i < limit && st == PD_OK; i++) {
        st = parse_row(r, i, &out[i]);
        if (st == PD_OK) (*n)++;
    }
    *more = rows > limit;
    PQclear(r);
    if (st)
        for (int i = 0; i < *n; i++) pd_pg_job_free(&out[i]);
    if (st) *n = 0;
    return st;
}

pd_status pd_pg_store_queue_position(pd_pg_store *s, const char *id, int *pos) {
    const char *p[] = {id};
    PGresult *r;
    *pos = -1;
    PD_TRY(run(s, S_QPOS, p, &r));
    if (PQntuples(r) == 1) *pos = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return PD_OK;
}

pd_status pd_pg_store_count(pd_pg_store *s, int counts[PD_JOB_STATUS_COUNT]) {
    PGresult *r;
    memset(counts, 0, PD_JOB_STATUS_COUNT * sizeof *counts);
    PD_TRY(run(s, S_COUNTS, NULL, &r));
    for (int i = 0; i < PQntuples(r); i++) counts[pd_journal_status_parse(PQgetvalue(r, i, 0))] += atoi(PQgetvalue(r, i, 1));
    PQclear(r);
    return PD_OK;
}

pd_status pd_pg_store_live(pd_pg_store *s, int cap, pd_pg_job *out, int *n) {
    char lim[16];
    snprintf(lim, sizeof lim, "%d", cap);
    const char *p[] = {lim};
    PGresult *r;
    *n = 0;
    PD_TRY(run(s, S_LIVE, p, &r));
    pd_status st = PD_OK;
    int queued = 0;
    for (int i = 0; i < PQntuples(r) && i < cap && st == PD_OK; i++) {
        st = parse_row(r, i, &out[i]);
        if (st) break;
        if (out[i].job.status == PD_JOB_QUEUED) out[i].queue_position = queued++;
        (*n)++;
    }
    PQclear(r);
    if (st) {
        for (int i = 0; i < *n; i++) pd_pg_job_free(&out[i]);
        *n = 0;
    }
    return st;
}

pd_status pd_pg_store_take(pd_pg_store *s, double now, pd_pg_job *out) {
    char lease[32], t[32];
    snprintf(lease, sizeof lease, "%.3f", s->lease_s);
    snprintf(t, sizeof t, "%.6f", now);
    const char *p[] = {s->holder, lease, t};
    PGresult *r;
    PD_TRY(run(s, S_TAKE, p, &r));
    pd_status st = PQntuples(r) == 1 ? parse_row(r, 0, out) : pd_error_set(PD_ERR_NOT_FOUND, "no job is queued");
    PQclear(r);
    return st;
}

/* Runs a fenced statement whose first three parameters are id, holder, fence. */
static pd_status fenced(pd_pg_store *s, enum stmt which, const char **p, int64_t fence) {
    char f[24];
    snprintf(f, sizeof f, "%" PRId64, fence);
    p[1] = s->holder;
    p[2] = f;
    PGresult *r;
    PD_TRY(run(s, which, p, &r));
    bool changed = atoi(PQcmdTuples(r)) == 1;
    PQclear(r);
    return changed ? PD_OK : pd_error_set(PD_ERR_CANCELLED, "the lease on job %s was lost (requeued, taken elsewhere, cancelled or deleted)", p[0]);
}

pd_status pd_pg_store_progress(pd_pg_store *s, const char *id, int64_t fence, int progress, int stage, int step, int total) {
    char a[16], b[16], c[16], d[16];
    snprintf(a, sizeof a, "%d", progress);
    snprintf(b, sizeof b, "%d", stage);
    snprintf(c, sizeof c, "%d", step);
    snprintf(d, sizeof d, "%d", total);
    const char *p[] = {id, NULL, NULL, a, b, c, d};
    return fenced(s, S_PROGRESS, p, fence);
}

/* After a fenced result was refused: whether the row already holds this replica's own result of
 * attempt `fence` (status, and for a failure its error code), written by an earlier call whose reply
 * was lost with its connection. */
static bool own_result(pd_pg_store *s, const char *id, int64_t fence, pd_job_status status, const char *code) {
    pd_pg_job j;
    if (pd_pg_store_get(s, id, &j)) return false;
    bool own = j.job.status == status && j.fence == fence && !strcmp(j.holder, s->holder) && (!code || !strcmp(j.job.error_code, code));
    pd_pg_job_free(&j);
    return own;
}

pd_status pd_pg_store_complete(pd_pg_store *s, const char *id, int64_t fence, double t, double expires_at) {
    char a[32], b[32];
    snprintf(a, sizeof a, "%.6f", t);
    snprintf(b, sizeof b, "%.6f", expires_at);
    const char *p[] = {id, NULL, NULL, a, b};
    pd_status st = fenced(s, S_COMPLETE, p, fence);
    if (st == PD_ERR_CANCELLED && own_result(s, id, fence, PD_JOB_COMPLETED, NULL)) return PD_OK;
    if (st == PD_ERR_CANCELLED) pd_error_set(st, "the lease on job %s was lost (requeued, taken elsewhere, cancelled or deleted)", id);
    return st;
}

pd_status pd_pg_store_fail(pd_pg_store *s, const char *id, int64_t fence, double t, double expires_at, const char *code, const char *message) {
    char a[32], b[32];
    snprintf(a, sizeof a, "%.6f", t);
    snprintf(b, sizeof b, "%.6f", expires_at);
    const char *p[] = {id, NULL, NULL, a, b, code, message};
    pd_status st = fenced(s, S_FAIL, p, fence);
    if (st == PD_ERR_CANCELLED && strcmp(code, "cancelled") && own_result(s, id, fence, PD_JOB_FAILED, code)) return PD_OK;
    if (st == PD_ERR_CANCELLED) pd_error_set(st, "the lease on job %s was lost (requeued, taken elsewhere, cancelled or deleted)", id);
    return st;
}

pd_status pd_pg_store_release(pd_pg_store *s, const char *id, int64_t fence) {
    const char *p[] = {id, NULL, NULL};
    return fenced(s, S_RELEASE, p, fence);
}

/* Copies column 0 of every row into ids (room for cap); *n = the row count. */
static void ids_of(PGresult *r, char (*ids)[PD_JOB_ID_LEN + 1], int cap, int *n) {
    *n = PQntuples(r);
    for (int i = 0; i < *n && i < cap; i++) snprintf(ids[i], PD_JOB_ID_LEN + 1, "%s", PQgetvalue(r, i, 0));
}

pd_status pd_pg_store_renew(pd_pg_store *s, const char (*ids)[PD_JOB_ID_LEN + 1], int n_ids, char (*held)[PD_JOB_ID_LEN + 1], int *n) {
    char lease[32];
    snprintf(lease, sizeof lease, "%.3f", s->lease_s);
    *n = 0;
    if (n_ids == 0) return PD_OK;
    char *arr = malloc((size_t)n_ids * (PD_JOB_ID_LEN + 1) + 3);
    if (!arr) return pd_error_set(PD_ERR_NOMEM, "out of memory renewing leases");
    size_t off = 0;
    arr[off++] = '{';
    for (int i = 0; i < n_ids; i++) off += (size_t)sprintf(arr + off, "%s%s", i ? "," : "", ids[i]); /* ids are [a-z0-9_] */
    arr[off++] = '}';
    arr[off] = 0;
    const char *p[] = {s->holder, lease, arr};
    PGresult *r;
    pd_status st = run(s, S_RENEW, p, &r);
    free(arr);
    PD_TRY(st);
    ids_of(r, held, n_ids, n);
    PQclear(r);
    return PD_OK;
}

pd_status pd_pg_store_requeue_expired(pd_pg_store *s, int *n) {
    PGresult *r;
    *n = 0;
    PD_TRY(run(s, S_REQUEUE, NULL, &r));
    *n = PQntuples(r);
    for (int i = 0; i < *n; i++) PD_INFO("pg_store", "%s: its lease expired; back in the queue", PQgetvalue(r, i, 0));
    PQclear(r);
    return PD_OK;
}

pd_status pd_pg_store_cancel(pd_pg_store *s, const char *id, double t, double expires_at, pd_pg_job *out, bool *cancelled) {
    char a[32], b[32];
    snprintf(a, sizeof a, "%.6f", t);
    snprintf(b, sizeof b, "%.6f", expires_at);
    const char *p[] = {id, a, b};
    PGresult *r;
    PD_TRY(run(s, S_CANCEL, p, &r));
    if (cancelled) *cancelled = atoi(PQcmdTuples(r)) == 1;
    PQclear(r);
    return pd_pg_store_get(s, id, out);
}

pd_status pd_pg_store_delete(pd_pg_store *s, const char *id, bool *was_live) {
    const char *p[] = {id};
    PGresult *r;
    PD_TRY(run(s, S_DELETE, p, &r));
    bool found = PQntuples(r) == 1;
    if (found) {
        pd_job_status js = pd_journal_status_parse(PQgetvalue(r, 0, 0));
        *was_live = js == PD_JOB_QUEUED || js == PD_JOB_IN_PROGRESS;
    }
    PQclear(r);
    return found ? PD_OK : pd_error_set(PD_ERR_NOT_FOUND, "no job %s", id);
}

pd_status pd_pg_store_expire(pd_pg_store *s, double now, char (*ids)[PD_JOB_ID_LEN + 1], int cap, int *n) {
    char a[32], b[16];
    snprintf(a, sizeof a, "%.6f", now);
    snprintf(b, sizeof b, "%d", cap);
    const char *p[] = {a, b};
    PGresult *r;
    *n = 0;
    PD_TRY(run(s, S_EXPIRE, p, &r));
    ids_of(r, ids, cap, n);
    PQclear(r);
    return PD_OK;
}

/* ---- LISTEN ---- */

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

static pd_status listen_connect(pd_pg_store *s, double timeout_s, pd_pg_notify_fn fn, void *ud) {
    double now = pd_now_s();
    if (now < s->listen_next_try) {
        sleep_s(fmin(timeout_s, s->listen_next_try - now));
        if (pd_now_s() < s->listen_next_try) return pd_error_set(PD_ERR_IO, "the job store is unreachable (retrying)");
    }
    s->listen = connect_url(s);
    atomic_fetch_add(&s->queries, 1);
    PGresult *r = NULL;
    if (s->listen && PQstatus(s->listen) == CONNECTION_OK) r = counted_exec(s, s->listen, "LISTEN pipedit_jobs");
    bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        char m[256];
        pd_error_set(PD_ERR_IO, "the job store's notifications are unreachable: %s",
                     short_msg(s->listen ? PQerrorMessage(s->listen) : "out of memory", m, sizeof m));
        if (s->listen) PQfinish(s->listen);
        s->listen = NULL;
        s->listen_backoff_s = s->listen_backoff_s <= 0 ? BACKOFF_MIN_S : fmin(s->listen_backoff_s * 2, BACKOFF_MAX_S);
        s->listen_next_try = pd_now_s() + s->listen_backoff_s;
        return PD_ERR_IO;
    }
    s->listen_backoff_s = 0;
    s->listen_next_try = 0;
    fn(ud, NULL, NULL, 0, NULL); /* anything may have changed while nobody listened */
    return PD_OK;
}

pd_status pd_pg_store_listen(pd_pg_store *s, double timeout_s, pd_pg_notify_fn fn, void *ud) {
    if (!s->listen) PD_TRY(listen_connect(s, timeout_s, fn, ud));
    struct pollfd pfd = {.fd = PQsocket(s->listen), .events = POLLIN};
    int rc = pfd.fd >= 0 ? poll(&pfd, 1, (int)(timeout_s * 1000)) : -1;
    bool bad = rc < 0 && errno != EINTR;
    if (rc > 0 && !PQconsumeInput(s->listen)) bad = true;
    PGnotify *n;
    while (!bad && (n = PQnotifies(s->listen))) {
        atomic_fetch_add(&s->notifications, 1);
        /* "<id> <status> <fence> <holder>" */
        char id[PD_JOB_ID_LEN + 1] = "", status[16] = "", holder[PD_PG_HOLDER_MAX] = "";
        long long fence = -1;
        int used = 0;
        if (sscanf(n->extra, "%38s %15s %lld %n", id, status, &fence, &used) == 3 && pd_job_id_valid(id)) {
            snprintf(holder, sizeof holder, "%s", n->extra + used);
            fn(ud, id, status, (int64_t)fence, holder);
        }
        PQfreemem(n);
    }
    if (bad || PQstatus(s->listen) != CONNECTION_OK) {
        PQfinish(s->listen);
        s->listen = NULL;
        s->listen_backoff_s = BACKOFF_MIN_S;
        s->listen_next_try = pd_now_s() + s->listen_backoff_s;
        return pd_error_set(PD_ERR_IO, "the job store's notification connection was lost");
    }
    return PD_OK;
}
