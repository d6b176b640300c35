# A throwaway PostgreSQL server for the tests and benchmarks that need a shared job store (sourced, not a
# test itself). pg_start creates a fresh cluster under a temporary folder, starts it on a free loopback
# port with durability off (a test server, never a real one) and sets PG_URL; pg_stop / pg_restart stop
# and restart it (the data stays); the server is stopped on exit. Run as root, the server runs as the
# `postgres` user that Debian's postgresql package creates (PostgreSQL refuses to run as root).
#
# pg_available says why a server cannot be started here (printed by the caller before it skips), or
# nothing when it can.
set -u
PG_BIN=""
PG_DIR=""
PG_PORT=""
PG_URL=""
PG_AS=()

_pg_find_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then PG_BIN=$d; fi
    done
}

pg_available() {
    _pg_find_bin
    if [ -z "$PG_BIN" ]; then
        echo "PostgreSQL's server is not installed (scripts/deps.sh installs postgresql-15)"
        return 0
    fi
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        echo "running as root and there is no postgres user to run the server as"
        return 0
    fi
    command -v psql >/dev/null || echo "psql is not installed (postgresql-client)"
}

_pg_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# pg_start: a new cluster in a folder of its own under /tmp (which the postgres user can reach wherever
# the test runs from), removed on exit; database "pipedit", user "pipedit", trust
# authentication on loopback only. Sets PG_URL (postgres://pipedit@127.0.0.1:PORT/pipedit).
pg_start() {
    local why
    why=$(pg_available)
    [ -z "$why" ] || { echo "pg_start: $why" >&2; return 1; }
    _pg_find_bin
    PG_DIR=$(mktemp -d /tmp/pipedit-pg.XXXXXX)
    if [ "$(id -u)" -eq 0 ]; then
        PG_AS=(runuser -u postgres --)
        chown postgres "$PG_DIR"
    fi
    "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U pipedit -A trust --no-sync -E UTF8 >"$PG_DIR/initdb.log" 2>&1 ||
        { echo "pg_start: initdb failed:" >&2; tail -n 5 "$PG_DIR/initdb.log" >&2; return 1; }
    PG_PORT=$(_pg_free_port)
    _pg_up || return 1
    psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U pipedit -d postgres -c "CREATE DATABASE pipedit" >/dev/null ||
        { echo "pg_start: could not create the database" >&2; return 1; }
    PG_URL="postgres://pipedit@127.0.0.1:$PG_PORT/pipedit"
    trap '_pg_exit' EXIT
}

_pg_up() {
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
        -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null || { echo "pg_start: the server did not start:" >&2; tail -n 5 "$PG_DIR/server.log" >&2; return 1; }
}

# pg_start_or_skip: pg_start, or exit 77 (a skip) naming the reason when no server can run here; a
# server that can run but does not start fails the test.
pg_start_or_skip() {
    local why
    why=$(pg_available)
    if [ -n "$why" ]; then
        echo "SKIP: $why"
        exit 77
    fi
    pg_start || fail "pg_start"
}

# pg_stop: fast shutdown (open connections are cut), data kept.
pg_stop() {
    [ -n "$PG_DIR" ] || return 0
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
}

# pg_restart [DOWN_SECONDS]: stops the server, waits, starts it again on the same port.
pg_restart() {
    pg_stop
    sleep "${1:-0}"
    _pg_up
}

# psql_q SQL: runs one statement on the test database, unaligned, no headers.
psql_q() {
    psql -X -q -A -t -h 127.0.0.1 -p "$PG_PORT" -U pipedit -d pipedit -c "$1"
}

_pg_exit() {
    local rc=$?
    if declare -F cleanup >/dev/null; then cleanup; fi
    pg_stop
    [ -n "$PG_DIR" ] && rm -rf "$PG_DIR"
    exit $rc
}
