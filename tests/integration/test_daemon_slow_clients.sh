#!/usr/bin/env bash
# Black-box check that slow clients cannot take pipeditd's connection slots: a header or body that
# trickles in is cut off at its deadline (header_timeout_s / body_timeout_s, counted from the
# request's start, not reset by each byte), and while 150 connections trickle headers against a
# 64-connection limit, a health probe on a fresh connection is answered within 1 s every time and
# ordinary requests (a body included) are served (the slowest waiting connection makes room for a
# new one). The full-size measurement is
# bench/slow_clients.sh; this is its small version.
TEST_NAME=daemon_slow_clients
source "$(dirname "$0")/daemon_lib.sh"
: "${PIPEDIT_SRC:=$(cd "$(dirname "$0")/../.." && pwd)}"

# 150 attackers + probes here, 64 connections (+ headroom) in the daemon: far below any usual limit.
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 512 ] || ulimit -n 512 2>/dev/null ||
    { echo "SKIP: the open-file limit $(ulimit -n) is below 512"; exit 77; }

DATA=$T/data
start_daemon "$T/daemon.log" --data-dir "$DATA" --workers 1 --max-connections 64 --header-timeout-s 2 --body-timeout-s 3

# ---- one client trickling its headers, one trickling its body: cut off at the deadlines ----
"$PYTHON" - "$PORT" <<'PY' || fail "deadlines"
import socket, sys, time
port = int(sys.argv[1])

def trickle(first, line, deadline, what):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(0.4)
    t0 = time.monotonic()
    s.sendall(first)
    while time.monotonic() - t0 < deadline + 8:
        try:
            if s.recv(4096) == b"":
                break
        except socket.timeout:
            pass
        except OSError:
            break
        try:
            s.sendall(line)
        except OSError:
            break
    dt = time.monotonic() - t0
    s.close()
    assert deadline - 0.1 <= dt <= deadline + 1.5, "%s: the server closed it after %.1f s; its deadline is %g s" % (what, dt, deadline)
    print("ok: %s closed after %.1f s (deadline %g s)" % (what, dt, deadline))

trickle(b"GET /health/live HTTP/1.1\r\n", b"X-Slow: 1\r\n", 2, "a trickled header")
trickle(b"POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", b" ", 3,
        "a trickled body")
PY
http GET /v1/videos
[ "$STATUS" = 200 ] && [ "$(jq_body 'len(b["data"])')" = 0 ] || fail "a cut-off body created a job: $(head -c 300 "$T/body")"

# ---- a keep-alive client that is not slow keeps its connection across requests ----
curl -s -o /dev/null -o /dev/null -w '%{num_connects}\n' "$URL/health/live" "$URL/health/live" >"$T/connects" ||
    fail "two requests on one connection"
[ "$(paste -sd, "$T/connects")" = "1,0" ] || fail "keep-alive: connects per request $(paste -sd, "$T/connects"), want 1,0"
pass "keep-alive across two requests"

# ---- 150 trickling connections against 64 slots; a probe every 0.1 s must be answered within 1 s ----
"$PYTHON" "$PIPEDIT_SRC/bench/slow_clients.py" --port "$PORT" --connections 150 --duration 8 --trickle-min 0.5 --trickle-max 1 \
    --open-rate 300 --probe-interval 0.1 --probe-limit 1 >"$T/attack.json" &
ATTACK=$!
# Meanwhile an ordinary client, body included, is served too.
sleep 2
for i in 1 2 3; do
    STATUS=$(curl -s -o "$T/body" -w '%{http_code}' --max-time 2 "$URL/v1/videos")
    [ "$STATUS" = 200 ] || fail "GET /v1/videos during the attack: $STATUS"
    post_json /v1/videos '{"prompt":"a cat","guidance_scale":75}'
    expect_error "a create with a body during the attack" 400 guidance_scale
done
wait "$ATTACK" || fail "slow_clients.py failed"
"$PYTHON" - "$T/attack.json" <<'PY' || fail "probes during the attack: $(cat "$T/attack.json")"
import json, sys
r = json.load(open(sys.argv[1]))
p, a = r["probes"], r["attack"]
print("probes %d sent, %d ok, max %.1f ms, p99 %.1f ms; attack: %d opened, %d dropped by the server, at most %d open" % (
    p["sent"], p["ok"], p["latency_ms"]["max"] or -1, p["latency_ms"]["p99"] or -1, a["opened"], a["dropped_by_server"], a["max_open"]))
assert p["sent"] >= 40, "too few probes ran"
assert p["failed"] == 0 and p["over_limit"] == 0, "a probe failed or took over 1 s: %s" % p
assert a["dropped_by_server"] > 0 and a["lifetime_s"]["max"] <= 2 + 1.5, "slow connections outlived their header deadline"
PY
pass "a probe answered within 1 s throughout a 150-connection slow attack"

# The server counted what it dropped.
http GET /metrics
[ "$STATUS" = 200 ] || fail "metrics: $STATUS"
dropped() { sed -n "s/^pipedit_http_connections_dropped_total{reason=\"$1\"} //p" "$T/body"; }
[ "$(dropped deadline)" -ge 2 ] && [ "$(dropped evicted)" -ge 1 ] ||
    fail "metrics: dropped for deadline '$(dropped deadline)', evicted '$(dropped evicted)'"
pass "metrics: $(dropped deadline) dropped at a deadline, $(dropped evicted) evicted, $(dropped refused) refused"

# The server is whole afterwards, and the attack created nothing.
http GET /health/live
[ "$STATUS" = 200 ] || fail "live after the attack: $STATUS"
[ ! -s "$DATA/journal.jsonl" ] || fail "the journal was written"
grep -q "ERROR\|AddressSanitizer" "$LOG" && fail "errors in the log"
echo "PASS test_daemon_slow_clients"
