#!/usr/bin/env bash
# Black-box durability of pipeditd (issue 13, items 1, 3, 4) on the embedded tiny model:
#  - the data folder belongs to one daemon: a second pipeditd on it exits non-zero naming the folder
#    and the first one's pid, and changes nothing (journal byte-identical); the first keeps working
#    and what it accepts afterwards survives a restart;
#  - a cancel and a delete are on disk before they are answered: the daemon SIGKILLed right after the
#    answer comes back with the job cancelled (never run again) or still deleted;
#  - workers die with their daemon: SIGKILL the daemon while a worker is busy in a long step and no
#    worker of it is left within 3 s; a lock still held by a dead daemon's worker makes the next
#    daemon wait instead of competing with it.
TEST_NAME=daemon_durability
source "$(dirname "$0")/daemon_lib.sh"

DATA=$T/data
# The long jobs below are meant to outlast the test: admission must not refuse them by their estimate.
FLAGS=(--data-dir "$DATA" --poll-after-ms 250 --drain-timeout-s 1 --max-job-seconds 2592000)
SMALL='{"prompt":"small","num_frames":5,"size":"32x32","num_inference_steps":2}'
# About 3 s per denoising step on a 2-core VM under the sanitizers: a worker stays busy for minutes.
LONG='{"prompt":"long","num_frames":33,"size":"256x256","num_inference_steps":100}'
# Four times the tokens: one denoising step takes far longer than the 2 s a killed daemon's workers get.
HUGE='{"prompt":"huge","num_frames":33,"size":"512x512","num_inference_steps":100}'

create() { # create JSON -> ID
    post_json /v1/videos "$1"
    [ "$STATUS" = 200 ] || fail "create: $STATUS $(cat "$T/body")"
    ID=$(jq_body 'b["id"]')
}

wait_status() { # wait_status ID STATUS SECONDS
    local i st
    for i in $(seq 1 $(($3 * 10))); do
        http GET "/v1/videos/$1"
        st=$(jq_body 'b["status"]')
        [ "$st" = "$2" ] && return 0
        sleep 0.1
    done
    fail "$1 is $st, not $2, after $3 s"
}

# gone_within SECONDS PID...: every pid has exited (a zombie nobody reaped counts as exited).
gone_within() {
    local s=$1 i p left
    shift
    for i in $(seq 1 $((s * 10))); do
        left=""
        for p in "$@"; do
            [ -r "/proc/$p/stat" ] && [ "$(cut -d' ' -f3 "/proc/$p/stat" 2>/dev/null)" != Z ] && left="$left $p"
        done
        [ -z "$left" ] && return 0
        sleep 0.1
    done
    ps -o pid,ppid,stat,pcpu,rss,args -p "${left# }" >&2
    fail "worker process(es)$left still running $s s after the daemon was killed"
}

# kill_daemon_hard: SIGKILL the daemon (only it) and check its workers follow within 2 s.
kill_daemon_hard() {
    local workers
    workers=$(ps -o pid= --ppid "$DAEMON_PID" | tr -d ' ' | tr '\n' ' ')
    [ -n "$workers" ] || fail "the daemon has no worker processes"
    kill -KILL "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null
    gone_within 2 $workers
    pass "SIGKILL of the daemon took its workers ($workers) with it"
}

# ---- 1. one daemon per data folder ----
start_daemon "$T/a.log" "${FLAGS[@]}"
FIRST=$DAEMON_PID
wait_ready 120
create "$SMALL"
J1=$ID
wait_status "$J1" completed 300 # nothing of the first daemon's writes the folder while the second tries
cp "$DATA/journal.jsonl" "$T/journal.before"
ls -lAR --time-style=+%s.%N "$DATA" >"$T/ls.before"
timeout 30 "$PIPEDIT_BIN/pipeditd" --host 127.0.0.1 --port 0 "${FLAGS[@]}" >"$T/second.log" 2>&1
rc=$?
[ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "a second pipeditd on the same data folder: exit status $rc; log: $(tail -n 5 "$T/second.log")"
grep -q "data folder $DATA is in use by another pipeditd (pid $FIRST" "$T/second.log" ||
    fail "the second daemon's message does not name the folder and pid $FIRST: $(tail -n 3 "$T/second.log")"
cmp -s "$DATA/journal.jsonl" "$T/journal.before" || fail "the second daemon changed the journal"
ls -lAR --time-style=+%s.%N "$DATA" >"$T/ls.after"
cmp -s "$T/ls.before" "$T/ls.after" || fail "the second daemon changed the data folder: $(diff "$T/ls.before" "$T/ls.after")"
pass "second daemon refused (exit $rc): $(grep -o 'data folder.*' "$T/second.log" | head -n 1)"
create "$SMALL"
J2=$ID
wait_status "$J2" completed 300

# ---- 3a. a cancel answered is a cancel kept, even when the daemon dies right after it ----
create "$LONG"
L1=$ID
wait_status "$L1" in_progress 120
http POST "/v1/videos/$L1/cancel"
[ "$STATUS" = 200 ] || fail "cancel: $STATUS $(cat "$T/body")"
[ "$(jq_body 'b["status"], b["error"]["code"]')" = "failed cancelled" ] || fail "cancel answer: $(cat "$T/body")"
kill_daemon_hard

start_daemon "$T/b.log" "${FLAGS[@]}"
wait_ready 120
for id in "$J1" "$J2"; do
    http GET "/v1/videos/$id"
    [ "$STATUS" = 200 ] || fail "$id, accepted by the first daemon, is gone after a restart: $STATUS"
done
pass "jobs accepted before and after the refused second daemon survive a restart"
http GET "/v1/videos/$L1"
[ "$(jq_body 'b["status"], b["error"]["code"]')" = "failed cancelled" ] || fail "cancelled job after a SIGKILL and restart: $(cat "$T/body")"
sleep 2
http GET "/v1/videos/$L1"
[ "$(jq_body 'b["status"]')" = failed ] || fail "the cancelled job ran again: $(cat "$T/body")"
grep -q "$L1 re-submitted" "$T/b.log" && fail "the cancelled job was queued again after the restart"
pass "cancel survives a SIGKILL right after its answer"

# ---- 3b. a delete answered stays deleted ----
create "$LONG"
L2=$ID
wait_status "$L2" in_progress 120
http DELETE "/v1/videos/$L2"
[ "$STATUS" = 200 ] || fail "delete: $STATUS $(cat "$T/body")"
kill_daemon_hard
start_daemon "$T/c.log" "${FLAGS[@]}"
http GET "/v1/videos/$L2"
[ "$STATUS" = 404 ] || fail "deleted job came back after a SIGKILL and restart: $STATUS $(cat "$T/body")"
grep -q "$L2 re-submitted" "$T/c.log" && fail "the deleted job was queued again after the restart"
pass "delete survives a SIGKILL right after its answer"

# ---- 4. workers die with their daemon, one of them busy inside a long denoising step ----
create "$HUGE"
wait_status "$ID" in_progress 120
sleep 1
kill_daemon_hard

# ---- 4b. a lock still held by a dead daemon's straggler: the next daemon waits for it ----
sleep 0.1 &
DEAD=$!
wait "$DEAD"
echo "$DEAD" >"$DATA/pipeditd.lock"
flock "$DATA/pipeditd.lock" sleep 3 &
HOLDER=$!
sleep 0.3
start_daemon "$T/d.log" "${FLAGS[@]}"
grep -q "waiting for the workers of the previous pipeditd (pid $DEAD)" "$T/d.log" || fail "no wait for the dead daemon's lock holders: $(head -n 5 "$T/d.log")"
[ "$(cut -d' ' -f3 "/proc/$HOLDER/stat" 2>/dev/null)" = S ] && fail "the daemon started while the lock was still held"
wait "$HOLDER"
http GET "/v1/videos/$J2"
[ "$STATUS" = 200 ] || fail "after waiting for the lock: $STATUS"
pass "the next daemon waited for the previous one's stragglers to release the folder"
