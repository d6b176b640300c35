#!/usr/bin/env bash
# Black-box: a job requeued while its replica still decodes it (its lease taken away, as when another
# replica found the lease expired) is stopped there and runs again, on the same replica when that is
# the only one. With a separate decode worker the replica has a free denoise pipeline at once and
# takes the job again while its first attempt is still ending; its scheduler refuses the same id then,
# and the replica gives the job back to the queue (it never fails it) and takes it once the first
# attempt has ended. It completes exactly once, on a later attempt.
# Then SIGTERM with a 0.5 s drain while a job runs: the replica gives the job back to the queue as it
# stops (not a lease later), and a replica started after it completes the job once.
# Last, the database away for longer than the lease (6 s) while a replica runs a job: when it is back,
# the job is still that replica's (its renewal keeps a lease that expired while the store was away),
# so it completes on attempt 1 and is not run over again.
TEST_NAME=replicas_retake
source "$(dirname "$0")/daemon_lib.sh"
source "$(dirname "$0")/pg_lib.sh"
source "$(dirname "$0")/replicas_lib.sh"

pg_start_or_skip
mkdir -p "$T/outputs"
start_daemon "$T/r0.log" --data-dir "$T/d0" --workers 2 --decode-workers 1 --threads-per-worker 1 --store "$PG_URL" --replica-id r0 \
    --store-lease-s 30 --outputs-dir "$T/outputs" --drain-timeout-s 0.5
wait_ready 180

for round in 1 2 3; do
    post_json /v1/videos "{\"prompt\":\"requeued under its replica $round\",\"size\":\"128x96\",\"num_frames\":17,\"num_inference_steps\":6,\"seed\":$round}"
    [ "$STATUS" = 200 ] || fail "create: $STATUS $(cat "$T/body")"
    ID=$(jq_body 'b["id"]')
    for i in $(seq 1 600); do
        [ "$(psql_q "SELECT stage >= 2 FROM pipedit_jobs WHERE id = '$ID' AND status = 'in_progress'")" = t ] && break # decode
        sleep 0.02
    done
    # What pd_pg_store_requeue_expired does to an expired lease.
    psql_q "UPDATE pipedit_jobs SET status = 'queued', lease_holder = NULL, lease_expires = NULL, started_at = 0, progress = 0,
            stage = -1, step = 0, total = 0 WHERE id = '$ID' AND status = 'in_progress'" >/dev/null
    store_wait_finished "$ID" 600
    read -r s fence comp code <<<"$(psql_q "SELECT status || ' ' || fence || ' ' || completions || ' ' || error_code FROM pipedit_jobs WHERE id = '$ID'")"
    [ "$s $comp" = "completed 1" ] && [ "$fence" -ge 2 ] || fail "round $round: $ID is $s (fence $fence, completions $comp, error '$code'): $(grep "$ID" "$LOG" | tail -n 5)"
    http GET "/v1/videos/$ID/content"
    [ "$STATUS" = 200 ] || fail "content of $ID: $STATUS"
done
grep -q "could not be started here" "$LOG" && echo "(the scheduler refused a retake while the first attempt was ending: handled)"
pass "a job requeued while its replica decoded it completed once, on a later attempt, three times over"

# ---- SIGTERM mid-job ----
# (49 frames, 100 steps: several seconds even in a release build, far past the drain)
post_json /v1/videos '{"prompt":"outlives a drain","size":"128x96","num_frames":49,"num_inference_steps":100,"seed":9}'
[ "$STATUS" = 200 ] || fail "create: $STATUS"
ID=$(jq_body 'b["id"]')
store_wait_running "$ID"
kill -TERM "$DAEMON_PID"
for i in $(seq 1 100); do
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$DAEMON_PID" 2>/dev/null && fail "r0 did not stop within 10 s of SIGTERM"
[ "$(psql_q "SELECT status || ' ' || fence || ' ' || coalesce(lease_holder, '-') FROM pipedit_jobs WHERE id = '$ID'")" = "queued 1 -" ] ||
    fail "after r0 stopped, $ID is $(psql_q "SELECT status, fence, lease_holder FROM pipedit_jobs WHERE id = '$ID'") (want queued, not held)"
start_daemon "$T/r1.log" --data-dir "$T/d1" --workers 1 --threads-per-worker 1 --store "$PG_URL" --replica-id r1 \
    --store-lease-s 6 --outputs-dir "$T/outputs"
wait_ready 180
store_wait_finished "$ID" 900
[ "$(psql_q "SELECT status || ' ' || fence || ' ' || lease_holder || ' ' || completions FROM pipedit_jobs WHERE id = '$ID'")" = "completed 2 r1 1" ] ||
    fail "$ID after the drain: $(psql_q "SELECT status, fence, lease_holder, completions, error_code FROM pipedit_jobs WHERE id = '$ID'")"
pass "SIGTERM mid-job: r0 returned $ID to the queue as it stopped; r1 completed it once"

# ---- the database away for longer than the lease ----
post_json /v1/videos '{"prompt":"outlives an outage","size":"128x96","num_frames":17,"num_inference_steps":100,"seed":10}'
[ "$STATUS" = 200 ] || fail "create: $STATUS"
ID=$(jq_body 'b["id"]')
store_wait_running "$ID"
pg_restart 9
store_wait_finished "$ID" 1500
[ "$(psql_q "SELECT status || ' ' || fence || ' ' || completions FROM pipedit_jobs WHERE id = '$ID'")" = "completed 1 1" ] ||
    fail "$ID after the outage: $(psql_q "SELECT status, fence, completions, error_code FROM pipedit_jobs WHERE id = '$ID'"): $(grep "$ID" "$LOG" | tail -n 4)"
grep -q "$ID: its lease expired" "$LOG" && fail "r1 requeued $ID, which it was running"
pass "the database away for 9 s (lease 6 s): r1 kept and completed $ID on attempt 1"
echo PASS
