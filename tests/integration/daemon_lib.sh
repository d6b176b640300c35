# Helpers shared by the black-box daemon tests (sourced, not a test itself): start the real pipeditd
# on a free loopback port, speak HTTP with curl, check OpenAI error envelopes, and clean up every
# process on exit, failure included.
set -u
PYTHON=${PYTHON:-/usr/bin/python3}
: "${PIPEDIT_BIN:?PIPEDIT_BIN must name the bin folder of a build}"
TMPROOT=${PIPEDIT_TMP:-/tmp}
mkdir -p "$TMPROOT"
T=$(mktemp -d "$TMPROOT/${TEST_NAME:-daemon}.XXXXXX")
DAEMON_PIDS=()
LOG=""
URL=""
AUTH=()

cleanup() {
    local p i
    for p in "${DAEMON_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${DAEMON_PIDS[@]}"; do
        for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        # Still alive: the whole session (daemon and its workers) goes.
        kill -0 "$p" 2>/dev/null && kill -KILL -- "-$p" 2>/dev/null
    done
    if [ "${KEEP_TMP:-0}" != 1 ]; then rm -rf "$T"; fi
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    local f logs=("$LOG")
    # Several daemons (the replica tests keep theirs in LOGS): the end of every one's log.
    if declare -p LOGS >/dev/null 2>&1 && [ "${#LOGS[@]}" -gt 0 ]; then
        logs=("${LOGS[@]}")
        [[ " ${LOGS[*]} " == *" $LOG "* ]] || logs+=("$LOG") # one still starting is not in LOGS yet
    fi
    for f in "${logs[@]}"; do
        if [ -n "$f" ] && [ -f "$f" ]; then echo "--- last lines of $f" >&2; tail -n 25 "$f" >&2; fi
    done
    exit 1
}
pass() { echo "ok: $*"; }

[ -x "$PIPEDIT_BIN/pipeditd" ] || fail "pipeditd is not built"
command -v curl >/dev/null || fail "curl is not installed (scripts/deps.sh installs it)"

# start_daemon LOGFILE [flags...]: starts pipeditd in its own session on a free port; sets URL, LOG and
# DAEMON_PID. A daemon that cannot start its workers fails the test.
start_daemon() {
    LOG=$1
    shift
    setsid "$PIPEDIT_BIN/pipeditd" --host 127.0.0.1 --port 0 "$@" >"$LOG" 2>&1 &
    DAEMON_PID=$!
    DAEMON_PIDS+=("$DAEMON_PID")
    local i port=""
    for i in $(seq 1 300); do
        port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$LOG" 2>/dev/null | head -n 1)
        [ -n "$port" ] && break
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            fail "pipeditd exited during start"
        fi
        sleep 0.1
    done
    [ -n "$port" ] || fail "pipeditd did not start listening within 30 s"
    PORT=$port
    URL="http://127.0.0.1:$port"
}

# wait_ready SECONDS: until /health/ready answers 200.
wait_ready() {
    local i
    for i in $(seq 1 $(($1 * 5))); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health/ready")" = 200 ] && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || fail "pipeditd died before it was ready"
        sleep 0.2
    done
    fail "not ready within $1 s: $(grep -m1 'cannot start\|start-up failed' "$LOG")"
}

# http METHOD PATH [curl args...]: the body lands in $T/body, the headers in $T/headers, the status in STATUS.
http() {
    local method=$1 path=$2
    shift 2
    STATUS=$(curl -s -o "$T/body" -D "$T/headers" -w '%{http_code}' -X "$method" ${AUTH[@]+"${AUTH[@]}"} "$@" "$URL$path")
}

# as_key AUTHORIZATION CMD...: runs CMD with that Authorization header value ("" = none).
as_key() {
    local saved=(${AUTH[@]+"${AUTH[@]}"})
    if [ -n "$1" ]; then AUTH=(-H "Authorization: $1"); else AUTH=(); fi
    shift
    "$@"
    AUTH=(${saved[@]+"${saved[@]}"})
}

# post_json PATH JSON: POST with a JSON body.
post_json() { http POST "$1" -H 'Content-Type: application/json' --data-binary "$2"; }

# jq_body PYTHON_EXPR: evaluates an expression over the parsed body bound to `b`.
jq_body() { "$PYTHON" -c "import json,sys; b=json.load(open(sys.argv[1])); print($1)" "$T/body"; }

# raw_http FORMAT [ARGS...]: sends printf FORMAT ARGS as it is on a fresh connection to the daemon and reads the answer
# until the server closes or 5 s pass; the status lands in STATUS ("none" when nothing came back), the
# body in $T/body, the headers in $T/headers. For requests curl will not send (framing tests).
RAW_HTTP_PY='
import socket, sys, time
port, hfile, bfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
req = sys.stdin.buffer.read()
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(req)
data, t_end = b"", time.monotonic() + 5
try:
    while time.monotonic() < t_end:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
except OSError:
    pass
head, _, body = data.partition(b"\r\n\r\n")
open(hfile, "wb").write(head + b"\r\n")
open(bfile, "wb").write(body)
line = head.split(b"\r\n", 1)[0].split()
print(line[1].decode() if len(line) >= 2 else "none")
'
raw_http() {
    # shellcheck disable=SC2059 # the format is the request
    printf "$@" >"$T/request"
    STATUS=$("$PYTHON" -c "$RAW_HTTP_PY" "$PORT" "$T/headers" "$T/body" <"$T/request")
}

header_of() { grep -i "^$1:" "$T/headers" | head -n 1 | cut -d' ' -f2- | tr -d '\r'; }

# expect_error WHAT STATUS [PARAM]: the last answer has this status and exactly the OpenAI envelope
# {"error":{"message","type","param","code"}} with a non-empty message (and this param when given).
expect_error() {
    local what=$1 want=$2 param=${3:-}
    [ "$STATUS" = "$want" ] || fail "$what: status $STATUS, want $want; body: $(head -c 300 "$T/body")"
    "$PYTHON" - "$T/body" "$param" <<'PY' || fail "$what: not an OpenAI error envelope: $(head -c 300 "$T/body")"
import json, sys
b = json.load(open(sys.argv[1]))
assert list(b.keys()) == ["error"], b
e = b["error"]
assert set(e.keys()) == {"message", "type", "param", "code"}, e
assert isinstance(e["message"], str) and e["message"], e
assert isinstance(e["type"], str) and e["type"], e
assert e["param"] is None or isinstance(e["param"], str), e
assert e["code"] is None or isinstance(e["code"], str), e
if sys.argv[2]:
    assert e["param"] == sys.argv[2], (e["param"], sys.argv[2])
PY
    pass "$what -> $want"
}
