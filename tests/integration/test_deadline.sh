#!/usr/bin/env bash
# Black-box deadline: pipeditd with max_job_seconds 30 admits a job estimated well under it; the
# worker running it is then stalled (SIGSTOP) past the job's deadline, as an overloaded or swapping
# machine would. Once it runs again the job must stop at the next DiT block and fail with error.code
# "deadline_exceeded" (shown on the Video object), not run on to completion; the worker then serves
# the next job.
TEST_NAME=deadline
source "$(dirname "$0")/daemon_lib.sh"

LIMIT=30
start_daemon "$T/a.log" --data-dir "$T/data" --workers 1 --max-job-seconds $LIMIT
wait_ready 120
WORKER=$(sed -n 's/.*worker 0 (all) started, pid \([0-9]*\).*/\1/p' "$LOG" | tail -n 1)
[ -n "$WORKER" ] || fail "no worker pid in the log"

# The longest job of this shape that is admitted, halving the steps from 100 (max_steps).
steps=100
while :; do
    post_json /v1/videos "{\"prompt\":\"stalled\",\"size\":\"64x48\",\"num_frames\":9,\"num_inference_steps\":$steps,\"seed\":1}"
    [ "$STATUS" = 200 ] && break
    [ "$STATUS" = 400 ] && [ "$(jq_body 'b["error"]["code"]')" = job_too_large ] || fail "create: $STATUS $(cat "$T/body")"
    steps=$((steps / 2))
    [ "$steps" -ge 4 ] || fail "even 4 steps are estimated over $LIMIT s"
done
ID=$(jq_body 'b["id"]')
for i in $(seq 1 2000); do
    http GET "/v1/videos/$ID"
    [ "$(jq_body 'b["status"]')" = in_progress ] && break
    sleep 0.02
done
kill -STOP "$WORKER" || fail "cannot stop the worker"
sleep $((LIMIT + 2))
kill -CONT "$WORKER"
for i in $(seq 1 600); do
    http GET "/v1/videos/$ID"
    st=$(jq_body 'b["status"]')
    [ "$st" = failed ] || [ "$st" = completed ] && break
    sleep 0.1
done
[ "$(jq_body 'b["status"] + " " + str((b["error"] or {}).get("code"))')" = "failed deadline_exceeded" ] ||
    fail "a job past its deadline: $(cat "$T/body")"
pass "a job ($steps steps) stalled past its deadline failed: $(jq_body 'b["error"]["message"]')"
# the check points: before a DiT block, before a sampler step (the stall may end between steps), in the VAE
grep -q "deadline exceeded before DiT block\|deadline exceeded before step\|deadline exceeded in the" "$LOG" ||
    fail "the worker did not stop at a check point"
jq_body 'b["error"]["message"]' | grep -q "max_job_seconds = $LIMIT s" || fail "the message does not name the limit"

post_json /v1/videos '{"prompt":"after","size":"64x48","num_frames":9,"num_inference_steps":2,"seed":2}'
[ "$STATUS" = 200 ] || fail "create after: $STATUS $(cat "$T/body")"
ID2=$(jq_body 'b["id"]')
for i in $(seq 1 1200); do
    http GET "/v1/videos/$ID2"
    st=$(jq_body 'b["status"]')
    [ "$st" = completed ] || [ "$st" = failed ] && break
    sleep 0.1
done
[ "$st" = completed ] || fail "the next job: $(cat "$T/body")"
pass "the worker serves the next job"
