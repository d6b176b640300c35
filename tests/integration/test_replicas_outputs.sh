#!/usr/bin/env bash
# Black-box: what the shared store's replicas do with the attempt files in their shared outputs folder
# (".<id>.a<attempt>.mp4/.png": an attempt's output until the store accepted it), and what they count.
#  1. An accepted completion whose replica died before it renamed its attempt's files (the state
#     reproduced: the job completed in the store, its files moved back to the accepted attempt's
#     names): GET content on another replica serves the video and the thumbnail (the same bytes).
#  2. A cancel performed by a replica that does not run the job counts there
#     (pipedit_jobs_cancelled_total, pipedit_jobs_finished_total{status="failed"}), not on the
#     holder; each completion counts once, on the replica whose result the store accepted.
#     Every replica estimates the completion of every queued or running job, not only of those it
#     runs (estimated_completed_at, from the store's live jobs).
#  3. Two more replicas sweep the folder every 0.3 s, both at once: the accepted attempt of a
#     completed job is published without any request; old files of attempts that can never be
#     accepted (a stale attempt of a completed job, a job no longer in the store, a temporary file)
#     go; a fresh one stays; the running attempt stays while it runs and goes once it is cancelled;
#     neither sweeper logs an error.
TEST_NAME=replicas_outputs
source "$(dirname "$0")/daemon_lib.sh"
source "$(dirname "$0")/pg_lib.sh"
source "$(dirname "$0")/replicas_lib.sh"

pg_start_or_skip

OUT=$T/outputs
mkdir -p "$OUT"
PIDS=()
# replica I INTERVAL: starts replica rI sweeping every INTERVAL seconds.
replica() {
    start_daemon "$T/r$1.log" --data-dir "$T/d$1" --workers 1 --threads-per-worker 1 --store "$PG_URL" --replica-id "r$1" \
        --store-lease-s 3 --outputs-dir "$OUT" --housekeeping-interval-s "$2" --max-steps 400
    URLS[$1]=$URL
    PIDS[$1]=$DAEMON_PID
    LOGS[$1]=$LOG
}
SMALL='"size":"64x48","num_frames":5,"num_inference_steps":2'
LONG='"size":"128x96","num_frames":17,"num_inference_steps":400' # cancelled, never waited for: outlasts the checks in any build

fence_of() { psql_q "SELECT fence FROM pipedit_jobs WHERE id = '$1'"; }
metric() { # metric I NAME: the value of one series on replica I's /metrics
    curl -s "${URLS[$1]}/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}
# unpublish ID: moves a job's files back to its accepted attempt's names (a replica that died between
# the store's acceptance and the rename leaves exactly this).
unpublish() {
    local f
    f=$(fence_of "$1")
    mv "$OUT/$1.mp4" "$OUT/.$1.a$f.mp4" && mv "$OUT/$1.png" "$OUT/.$1.a$f.png" || fail "unpublish $1"
}

# Two replicas that do not sweep during the test (their first sweep is an hour away).
replica 0 3600
replica 1 3600
for i in 0 1; do URL=${URLS[$i]} DAEMON_PID=${PIDS[$i]} wait_ready 180; done
pass "two replicas ready on one store"

# ---- 1. content on another replica finishes the accepted attempt's rename ----
create 0 "{\"prompt\":\"accepted, then its replica died\",$SMALL,\"seed\":1}"
J1=$ID
create 1 "{\"prompt\":\"published by the sweep\",$SMALL,\"seed\":2}"
J2=$ID
wait_status 0 "$J1" completed 120
wait_status 0 "$J2" completed 120
cp "$OUT/$J1.mp4" "$T/j1.mp4" && cp "$OUT/$J1.png" "$T/j1.png" || fail "$J1 has no files"
H1=$(psql_q "SELECT lease_holder FROM pipedit_jobs WHERE id = '$J1'")
O1=$((1 - ${H1#r}))
unpublish "$J1"
on "$O1"
http GET "/v1/videos/$J1/content"
[ "$STATUS" = 200 ] || fail "content of $J1 on r$O1 after its holder $H1 left the attempt unpublished: $STATUS $(cat "$T/body")"
cmp -s "$T/body" "$T/j1.mp4" || fail "r$O1 served other bytes for $J1"
http GET "/v1/videos/$J1/content?variant=thumbnail"
[ "$STATUS" = 200 ] && cmp -s "$T/body" "$T/j1.png" || fail "thumbnail of $J1 on r$O1: $STATUS"
[ -e "$OUT/$J1.mp4" ] && [ ! -e "$OUT/.$J1.a$(fence_of "$J1").mp4" ] || fail "the attempt of $J1 was not published: $(ls -A "$OUT")"
pass "an accepted attempt left unpublished by $H1 is served (and published) by r$O1"

# ---- 2. cancels count where they are performed; completions once, where accepted; estimates ----
create 0 "{\"prompt\":\"cancelled elsewhere\",$LONG,\"seed\":3}"
C=$ID
H=$(wait_running "$C")
O=$((1 - H))
create "$O" "{\"prompt\":\"keeps the other busy\",$LONG,\"seed\":5}"
C2=$ID
wait_running "$C2" >/dev/null
create "$O" "{\"prompt\":\"waits for both\",$SMALL,\"seed\":6}"
Q=$ID
now=$(date +%s)
foreign=0 # estimates checked for a job the asked replica does not run
for i in 0 1; do
    for id in "$Q" "$C" "$C2"; do
        on "$i"
        http GET "/v1/videos/$id"
        st=$(jq_body 'b["status"]')
        [ "$st" = queued ] || [ "$st" = in_progress ] || continue # a fast build may have finished it
        eta=$(jq_body 'b.get("estimated_completed_at") or 0')
        holder=$(psql_q "SELECT coalesce(lease_holder, '-') FROM pipedit_jobs WHERE id = '$id'")
        [ "$eta" -ge "$now" ] || fail "r$i: no estimate for $id ($st, holder $holder): $(cat "$T/body")"
        [ "$holder" != "r$i" ] && foreign=$((foreign + 1))
        [ "$id" = "$Q" ] && echo "r$i: $Q $st, estimated to complete in $((eta - now)) s"
    done
done
[ "$foreign" -ge 2 ] || fail "only $foreign estimates of jobs run elsewhere or queued were checked"
# C's attempt file (made old): the sweepers of part 3 remove it once C is cancelled.
CF=$(fence_of "$C")
touch -d '10 minutes ago' "$OUT/.$C.a$CF.mp4"
on "$O"
http POST "/v1/videos/$C/cancel"
[ "$STATUS" = 200 ] || fail "cancel on r$O: $STATUS $(cat "$T/body")"
sleep 1 # the holder's worker stops and reports
[ "$(metric "$O" pipedit_jobs_cancelled_total)" = 1 ] || fail "r$O performed the cancel but counts $(metric "$O" pipedit_jobs_cancelled_total)"
[ "$(metric "$O" 'pipedit_jobs_finished_total{status="failed"}')" = 1 ] || fail "r$O: failed $(metric "$O" 'pipedit_jobs_finished_total{status="failed"}')"
[ "$(metric "$H" pipedit_jobs_cancelled_total)" = 0 ] || fail "r$H (the holder) counts the cancel too"
[ "$(metric "$H" 'pipedit_jobs_finished_total{status="failed"}')" = 0 ] || fail "r$H counts a failure"
for id in "$C2" "$Q"; do # Q may have run and completed on r$H since C was cancelled
    on 0
    http POST "/v1/videos/$id/cancel"
    [ "$STATUS" = 200 ] || [ "$STATUS" = 400 ] || fail "cancel $id: $STATUS"
done
sleep 1 # nothing can complete any more
done_store=$(psql_q "SELECT count(*) FROM pipedit_jobs WHERE status = 'completed'")
done_total=$(($(metric 0 'pipedit_jobs_finished_total{status="completed"}') + $(metric 1 'pipedit_jobs_finished_total{status="completed"}')))
[ "$done_total" = "$done_store" ] || fail "$done_store jobs completed, the replicas count $done_total"
pass "the cancel counts on r$O (which performed it), not on r$H; $done_store completions counted once; both replicas estimate every live job"

# A running attempt, whose (future) file, made old, the sweepers of part 3 must keep while it runs.
create 1 "{\"prompt\":\"runs while they sweep\",$LONG,\"seed\":4}"
L=$ID
wait_running "$L" >/dev/null
LF=$(fence_of "$L")
touch -d '10 minutes ago' "$OUT/.$L.a$LF.mp4"

# ---- 3. two replicas sweeping at once ----
unpublish "$J2"
GONE_ID=video_0123456789abcdef0123456789abcdef
touch -d '10 minutes ago' "$OUT/.$J1.a7.mp4" "$OUT/.$J1.a7.png" "$OUT/.$GONE_ID.a1.mp4" "$OUT/..$J1.a7.mp4.tmp.Ab12Cd"
touch "$OUT/.$GONE_ID.a2.mp4" # fresh: could still be written
replica 2 0.3
replica 3 0.3
for i in 2 3; do URL=${URLS[$i]} DAEMON_PID=${PIDS[$i]} wait_ready 180; done
GOES=(".$J1.a7.mp4" ".$J1.a7.png" ".$GONE_ID.a1.mp4" "..$J1.a7.mp4.tmp.Ab12Cd" ".$C.a$CF.mp4")
swept() {
    local f
    [ -e "$OUT/$J2.mp4" ] && [ -e "$OUT/$J2.png" ] || return 1
    for f in "${GOES[@]}"; do [ ! -e "$OUT/$f" ] || return 1; done
}
for i in $(seq 1 50); do
    swept && break
    sleep 0.2
done
[ -e "$OUT/$J2.mp4" ] && [ -e "$OUT/$J2.png" ] || fail "the sweep did not publish $J2's accepted attempt: $(ls -A "$OUT")"
for f in "${GOES[@]}"; do
    [ ! -e "$OUT/$f" ] || fail "the sweep left $f (job $C: $(psql_q "SELECT status, fence FROM pipedit_jobs WHERE id = '$C'"))"
done
[ -e "$OUT/.$GONE_ID.a2.mp4" ] || fail "the sweep removed a fresh attempt file"
[ -e "$OUT/.$L.a$LF.mp4" ] || fail "the sweep removed the running attempt's file"
on 2
http GET "/v1/videos/$J2/content"
[ "$STATUS" = 200 ] || fail "content of $J2 after the sweep: $STATUS"
on 0
http POST "/v1/videos/$L/cancel"
[ "$STATUS" = 200 ] || fail "cancel $L: $STATUS"
for i in $(seq 1 25); do
    [ ! -e "$OUT/.$L.a$LF.mp4" ] && break
    sleep 0.2
done
[ ! -e "$OUT/.$L.a$LF.mp4" ] || fail "the cancelled attempt's file stayed"
grep -E "ERROR|WARN.*(unlink|rename)" "${LOGS[2]}" "${LOGS[3]}" && fail "a sweeper logged an error"
grep -c "removed [0-9]* orphaned" "${LOGS[2]}" "${LOGS[3]}"
pass "two replicas sweeping at once published $J2, removed what no attempt can claim, kept the fresh and the running"
echo "PASS"
