#!/usr/bin/env bash
# Black-box: three pipeditd replicas on one PostgreSQL job store (a throwaway server from pg_lib.sh),
# one shared outputs folder, a 3 s lease.
#  1. Jobs created round-robin across the replicas all complete exactly once (the store's completion
#     count and fence), and every replica lists and serves every video (the same bytes).
#  2. A cancel sent to a replica that does not run the job stops it: error.code "cancelled", the
#     holder hears of it by the store's notification and its worker stops, and an event stream on the
#     third replica follows the job to its "failed" event.
#  3. SIGKILL of the replica running a job (its whole process group: workers too): the job goes back
#     to the queue when the lease expires and completes on another replica, exactly once (fence 2);
#     a gRPC WatchVideo on a surviving replica (when built with gRPC) follows it to completion.
#  4. The database stopped mid-run: readiness is 503 and creates answer 503 (never 200), then after
#     the restart readiness recovers and every job accepted before completes.
#  5. The queue bound (queue_capacity 4) and queue positions are global: with every replica busy,
#     jobs created on either replica queue at positions 0-3 and the next create is 429 on both.
#  6. Expiry happens once: two fresh replicas with a 2 s output TTL (the others stopped with
#     SIGTERM) both sweep; each expired job is deleted by exactly one of them, its files go, and
#     both answer 404.
TEST_NAME=replicas
source "$(dirname "$0")/daemon_lib.sh"
source "$(dirname "$0")/pg_lib.sh"
source "$(dirname "$0")/replicas_lib.sh"

pg_start_or_skip

# A store that is not PostgreSQL is a configuration error (exit 2) that leaves nothing behind.
"$PIPEDIT_BIN/pipeditd" --port 0 --data-dir "$T/bad" --store "mysql://x@127.0.0.1/db" >"$T/bad.log" 2>&1
rc=$?
[ "$rc" = 2 ] || fail "--store mysql://...: exit $rc, want 2: $(cat "$T/bad.log")"
grep -q "store" "$T/bad.log" && [ ! -e "$T/bad" ] || fail "a bad store setting: $(cat "$T/bad.log")"

OUT=$T/outputs
mkdir -p "$OUT"
PIDS=()
GPORTS=()
HAVE_GRPC=0
grep -qa "gRPC listening on" "$PIPEDIT_BIN/pipeditd" && HAVE_GRPC=1
for i in 0 1 2; do
    grpc=()
    if [ "$HAVE_GRPC" = 1 ]; then
        GPORTS+=("$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')")
        grpc=(--grpc-port "${GPORTS[$i]}")
    fi
    start_daemon "$T/r$i.log" --data-dir "$T/d$i" --workers 1 --threads-per-worker 1 --store "$PG_URL" --replica-id "r$i" \
        --store-lease-s 3 --outputs-dir "$OUT" --queue-capacity 4 ${grpc[@]+"${grpc[@]}"}
    URLS+=("$URL")
    PIDS+=("$DAEMON_PID")
    LOGS+=("$LOG")
done
for i in 0 1 2; do
    URL=${URLS[$i]} DAEMON_PID=${PIDS[$i]} LOG=${LOGS[$i]} wait_ready 180
done
pass "three replicas ready on one store"

SMALL='"size":"64x48","num_frames":5,"num_inference_steps":2'
LONG='"size":"128x96","num_frames":17,"num_inference_steps":100' # outlasts the checks in a release build too

holder_of() { psql_q "SELECT coalesce(lease_holder, '') FROM pipedit_jobs WHERE id = '$1'"; }

# ---- 1. round-robin creates complete once; every replica lists and serves every video ----
JOBS=()
for k in 0 1 2 3 4 5; do
    create $((k % 3)) "{\"prompt\":\"round robin $k\",$SMALL,\"seed\":$k}"
    JOBS+=("$ID")
done
for id in "${JOBS[@]}"; do wait_status $((RANDOM % 3)) "$id" completed 120; done
[ "$(psql_q "SELECT count(*) FROM pipedit_jobs WHERE status = 'completed' AND completions = 1 AND fence = 1")" = 6 ] ||
    fail "not every job completed exactly once: $(psql_q "SELECT id, status, completions, fence, lease_holder FROM pipedit_jobs")"
echo "ran on: $(psql_q "SELECT string_agg(lease_holder, ' ' ORDER BY seq) FROM pipedit_jobs")"
for i in 0 1 2; do
    on $i
    http GET "/v1/videos?limit=100&order=asc"
    [ "$STATUS" = 200 ] || fail "list on r$i: $STATUS"
    [ "$(jq_body '" ".join(v["id"] for v in b["data"])')" = "${JOBS[*]}" ] || fail "r$i lists $(jq_body '[v["id"] for v in b["data"]]')"
    for id in "${JOBS[@]}"; do
        http GET "/v1/videos/$id/content"
        [ "$STATUS" = 200 ] || fail "r$i content of $id: $STATUS"
        cmp -s "$T/body" "$OUT/$id.mp4" || fail "r$i served other bytes for $id"
    done
done
ls -A "$OUT" | grep -q '^\.' && fail "attempt files left in the outputs folder: $(ls -A "$OUT")"
pass "6 jobs created round-robin completed once each; every replica lists and serves all of them"

# ---- 2. a cancel sent to a replica that does not run the job stops it ----
create 0 "{\"prompt\":\"to cancel\",$LONG,\"seed\":11}"
CID=$ID
H=$(wait_running "$CID")
[ -n "$H" ] || fail "$CID never ran"
O=$(((H + 1) % 3))
W=$(((H + 2) % 3))
curl -s -N --max-time 60 "${URLS[$W]}/v1/videos/$CID/events" >"$T/events" 2>/dev/null &
SSE=$!
sleep 0.5
t0=$(date +%s.%N)
on "$O"
http POST "/v1/videos/$CID/cancel"
[ "$STATUS" = 200 ] || fail "cancel on r$O: $STATUS $(cat "$T/body")"
[ "$(jq_body 'b["status"] + " " + b["error"]["code"]')" = "failed cancelled" ] || fail "after the cancel: $(cat "$T/body")"
# The worker says "job <id> stage <n>: cancelled: cancelled before step/DiT block ..." when it stops.
for i in $(seq 1 100); do
    grep -q "$CID stage [0-9]*: cancelled" "${LOGS[$H]}" && break
    sleep 0.1
done
t1=$(date +%s.%N)
grep -q "$CID stage [0-9]*: cancelled" "${LOGS[$H]}" || fail "the worker of r$H (which ran $CID) did not stop within 10 s"
took=$("$PYTHON" -c "print(round($t1 - $t0, 2))")
echo "r$H's worker stopped $took s after the cancel on r$O"
# The holder heard of it by notification (not at its next lease renewal, up to a second later).
grep -q "$CID: cancelled; stopping the local run" "${LOGS[$H]}" || fail "r$H did not stop $CID on the store's notification"
wait "$SSE"
grep -q '^event: failed' "$T/events" || fail "the event stream on r$W did not end with 'failed': $(tail -c 400 "$T/events")"
grep -q '"cancelled"' "$T/events" || fail "the failed event does not say cancelled"
grep -q '^event: progress' "$T/events" || fail "the event stream on r$W sent no progress"
[ "$(psql_q "SELECT status || ' ' || error_code || ' ' || completions FROM pipedit_jobs WHERE id = '$CID'")" = "failed cancelled 0" ] ||
    fail "the store says: $(psql_q "SELECT status, error_code, completions FROM pipedit_jobs WHERE id = '$CID'")"
pass "a cancel on r$O stopped $CID running on r$H; the stream on r$W followed it"

# ---- 3. SIGKILL of the replica running a job ----
create 1 "{\"prompt\":\"survives its replica\",$LONG,\"seed\":12}"
KID=$ID
K=$(wait_running "$KID")
[ -n "$K" ] || fail "$KID never ran"
S=$(((K + 1) % 3))
if [ "$HAVE_GRPC" = 1 ]; then
    "$PIPEDIT_BIN/pipedit" client --grpc "127.0.0.1:${GPORTS[$S]}" wait "$KID" >/dev/null 2>"$T/watch.txt" &
    WATCH=$!
fi
kill -KILL -- "-${PIDS[$K]}" 2>/dev/null || fail "kill r$K"
tk=$(date +%s)
wait_status "$S" "$KID" completed 240
echo "$KID completed $(($(date +%s) - tk)) s after r$K was killed"
read -r holder fence comp <<<"$(psql_q "SELECT lease_holder || ' ' || fence || ' ' || completions FROM pipedit_jobs WHERE id = '$KID'")"
[ "$holder" != "r$K" ] && [ "$fence" = 2 ] && [ "$comp" = 1 ] || fail "after the kill: holder $holder fence $fence completions $comp"
grep -q "$KID: its lease expired" "${LOGS[0]}" "${LOGS[1]}" "${LOGS[2]}" || fail "no replica requeued $KID"
on "$S"
http GET "/v1/videos/$KID/content"
[ "$STATUS" = 200 ] && cmp -s "$T/body" "$OUT/$KID.mp4" || fail "content of $KID after the kill: $STATUS"
if [ "$HAVE_GRPC" = 1 ]; then
    wait "$WATCH" || fail "the gRPC watch on r$S did not end with completion: $(tr '\r' '\n' <"$T/watch.txt" | tail -n 3)"
    grep -q completed "$T/watch.txt" || fail "the gRPC watch on r$S: $(cat "$T/watch.txt")"
fi
pass "SIGKILL of r$K mid-job: $KID completed once on $holder after the lease (fence 2)"

# ---- 4. the database stopped and restarted mid-run ----
LIVE=()
for i in 0 1 2; do [ "$i" != "$K" ] && LIVE+=("$i"); done
A=${LIVE[0]}
B=${LIVE[1]}
create "$A" "{\"prompt\":\"across the outage\",$LONG,\"seed\":13}"
D1=$ID
create "$B" "{\"prompt\":\"queued across the outage\",$SMALL,\"seed\":14}"
D2=$ID
[ -n "$(wait_running "$D1")" ] || fail "$D1 never ran"
pg_stop
on "$A"
for i in $(seq 1 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health/ready")" = 503 ] && break
    sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health/ready")" = 503 ] || fail "r$A still ready without its store"
for i in "$A" "$B"; do
    on "$i"
    post_json /v1/videos "{\"prompt\":\"in the gap\",$SMALL}"
    expect_error "create on r$i without the store" 503
    [ "$(jq_body 'b["error"]["code"]')" = store_unavailable ] || fail "code: $(cat "$T/body")"
    http GET "/v1/videos/$D2"
    [ "$STATUS" = 503 ] || fail "a read without the store: $STATUS"
done
curl -s "${URLS[$A]}/metrics" >"$T/metrics"
grep -q '^pipedit_store_up 0$' "$T/metrics" && grep -q '^pipedit_replica_info{replica="r'"$A"'"} 1$' "$T/metrics" ||
    fail "/metrics without the store: $(grep 'store_up\|replica_info' "$T/metrics")"
sleep 1
pg_restart 0 || fail "pg_restart"
for i in "$A" "$B"; do URL=${URLS[$i]} DAEMON_PID=${PIDS[$i]} LOG=${LOGS[$i]} wait_ready 30; done
pass "without the store: not ready, creates and reads 503; ready again after the restart"
wait_status "$A" "$D1" completed 240
wait_status "$B" "$D2" completed 120
[ "$(psql_q "SELECT count(*) FROM pipedit_jobs WHERE request LIKE '%in the gap%'")" = 0 ] || fail "a create refused in the gap was stored"
[ "$(psql_q "SELECT count(*) FROM pipedit_jobs WHERE completions > 1")" = 0 ] || fail "a job completed twice"
[ "$(psql_q "SELECT count(*) FROM pipedit_jobs WHERE status = 'completed'")" = 9 ] ||
    fail "jobs lost: $(psql_q "SELECT id, status, completions, fence FROM pipedit_jobs")"
pass "jobs accepted before the outage completed exactly once"

# Round trips and progress writes per job, for the record.
q=0
for i in "$A" "$B"; do
    n=$(curl -s "${URLS[$i]}/metrics" | sed -n 's/^pipedit_store_queries_total //p')
    q=$((q + n))
done
echo "store: $(psql_q "SELECT round(avg(progress_writes), 1) FROM pipedit_jobs WHERE status = 'completed'") progress writes per completed job;" \
    "$q round trips by the two surviving replicas in all"

# ---- 5. the queue bound and queue positions are global ----
create "$A" "{\"prompt\":\"busy a\",$LONG,\"seed\":21}"
BUSY=("$ID")
create "$B" "{\"prompt\":\"busy b\",$LONG,\"seed\":22}"
BUSY+=("$ID")
for id in "${BUSY[@]}"; do [ -n "$(wait_running "$id")" ] || fail "$id never ran"; done
QUEUED=()
for k in 0 1 2 3; do
    on $((k % 2 ? B : A))
    post_json /v1/videos "{\"prompt\":\"waits $k\",$SMALL,\"seed\":$((30 + k))}"
    [ "$STATUS" = 200 ] || fail "create $k behind busy replicas: $STATUS $(cat "$T/body")"
    [ "$(jq_body 'b["queue_position"]')" = "$k" ] || fail "create $k: position $(jq_body 'b["queue_position"]'), want $k"
    QUEUED+=("$(jq_body 'b["id"]')")
done
for i in "$A" "$B"; do
    on "$i"
    post_json /v1/videos "{\"prompt\":\"one too many\",$SMALL}"
    expect_error "a fifth queued job on r$i" 429
    http GET "/v1/videos/${QUEUED[3]}"
    [ "$(jq_body 'b["queue_position"]')" = 3 ] || fail "r$i: position of the last queued job: $(cat "$T/body")"
done
for id in "${BUSY[@]}"; do
    on "$A"
    http POST "/v1/videos/$id/cancel"
    [ "$STATUS" = 200 ] || fail "cancel $id: $STATUS"
done
for id in "${QUEUED[@]}"; do wait_status "$B" "$id" completed 120; done
[ "$(psql_q "SELECT count(*) FROM pipedit_jobs WHERE completions > 1")" = 0 ] || fail "a job completed twice"
pass "queue_capacity and queue positions hold across replicas (429 on both)"

# ---- 6. expiry happens once ----
for i in "$A" "$B"; do kill -TERM "${PIDS[$i]}"; done
for i in "$A" "$B"; do
    for k in $(seq 1 150); do kill -0 "${PIDS[$i]}" 2>/dev/null || break; sleep 0.2; done
    kill -0 "${PIDS[$i]}" 2>/dev/null && fail "r$i did not stop on SIGTERM"
done
for i in 3 4; do
    start_daemon "$T/r$i.log" --data-dir "$T/d$i" --workers 1 --threads-per-worker 1 --store "$PG_URL" --replica-id "r$i" \
        --store-lease-s 3 --outputs-dir "$OUT" --output-ttl-s 2
    URLS+=("$URL")
    PIDS+=("$DAEMON_PID")
    LOGS+=("$LOG")
done
for i in 3 4; do URL=${URLS[$i]} DAEMON_PID=${PIDS[$i]} LOG=${LOGS[$i]} wait_ready 180; done
EXP=()
for i in 3 4; do
    create "$i" "{\"prompt\":\"short lived $i\",$SMALL,\"seed\":$((40 + i))}"
    EXP+=("$ID")
done
for id in "${EXP[@]}"; do
    for k in $(seq 1 300); do
        [ "$(psql_q "SELECT count(*) FROM pipedit_jobs WHERE id = '$id'")" = 0 ] && break
        sleep 0.2
    done
    [ "$(psql_q "SELECT count(*) FROM pipedit_jobs WHERE id = '$id'")" = 0 ] || fail "$id did not expire: $(psql_q "SELECT status, expires_at FROM pipedit_jobs WHERE id = '$id'")"
done
sleep 2 # both replicas sweep again
for id in "${EXP[@]}"; do
    n=$(cat "${LOGS[3]}" "${LOGS[4]}" | grep -c "$id expired")
    [ "$n" = 1 ] || fail "$id expired $n times"
    [ ! -e "$OUT/$id.mp4" ] && [ ! -e "$OUT/$id.png" ] || fail "the files of $id outlived it"
    for i in 3 4; do
        on "$i"
        http GET "/v1/videos/$id"
        [ "$STATUS" = 404 ] || fail "r$i: $id after expiry: $STATUS"
    done
done
pass "jobs with a 2 s TTL expired once, files and all, on two replicas that both sweep"
