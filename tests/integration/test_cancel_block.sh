#!/usr/bin/env bash
# Black-box: a cancel takes effect within one DiT block, not one denoising step. pipeditd serves a tiny
# model made 16 blocks deep (`pipedit mkmodel --layers 16`); a job of 10 steps on a size where one step
# takes seconds is timed for one whole step (progress ticks 9% per step), then cancelled a fifth of
# the way into a step. It fails with error.code "cancelled", and the worker must be free for the
# small job queued behind it (which then starts) within a third of that step's time: one block is
# about a sixteenth, a check at step boundaries waits out the rest of the step. (The Video object
# says "cancelled" as soon as the cancel is durable; the next job's start shows the worker stopped.)
TEST_NAME=cancel_block
source "$(dirname "$0")/daemon_lib.sh"

MODEL=$T/model16
"$PIPEDIT_BIN/pipedit" mkmodel --out "$MODEL" --layers 16 >/dev/null || fail "mkmodel --layers 16"
start_daemon "$T/a.log" --data-dir "$T/data" --workers 1 --model "$MODEL"
wait_ready 180

post_json /v1/videos '{"prompt":"a slow one","size":"160x160","num_frames":33,"num_inference_steps":10,"seed":3}'
[ "$STATUS" = 200 ] || fail "create: $STATUS $(cat "$T/body")"
ID=$(jq_body 'b["id"]')
post_json /v1/videos '{"prompt":"next in line","size":"64x48","num_frames":5,"num_inference_steps":1,"seed":4}'
[ "$STATUS" = 200 ] || fail "create the next job: $STATUS $(cat "$T/body")"
NEXT=$(jq_body 'b["id"]')

now() { date +%s.%N; }
# progress_at P: polls until the job's progress reaches P; prints the time.
progress_at() {
    local i st pr
    for i in $(seq 1 6000); do
        http GET "/v1/videos/$ID"
        read -r st pr <<<"$(jq_body 'b["status"] + " " + str(b["progress"])')"
        [ "$st" = failed ] || [ "$st" = completed ] && fail "job ended early: $(cat "$T/body")"
        if [ "$pr" -ge "$1" ]; then now; return; fi
        sleep 0.05
    done
    fail "progress never reached $1"
}
t1=$(progress_at 9)   # step 1 done
t2=$(progress_at 18)  # step 2 done
STEP=$("$PYTHON" -c "print($t2 - $t1)")
sleep "$("$PYTHON" -c "print($STEP * 0.2)")"
tc=$(now)
http POST "/v1/videos/$ID/cancel"
[ "$STATUS" = 200 ] || fail "cancel: $STATUS $(cat "$T/body")"
for i in $(seq 1 6000); do
    http GET "/v1/videos/$NEXT"
    [ "$(jq_body 'b["status"]')" != queued ] && break
    sleep 0.02
done
tf=$(now)
http GET "/v1/videos/$ID"
[ "$(jq_body 'b["status"] + " " + b["error"]["code"]')" = "failed cancelled" ] || fail "after cancel: $(cat "$T/body")"
"$PYTHON" - "$STEP" "$tc" "$tf" <<'PY' || fail "cancel too slow"
import sys
step, tc, tf = map(float, sys.argv[1:])
took = tf - tc
print(f"one step {step:.2f} s; the worker was free for the next job {took:.3f} s after the cancel")
assert step > 0.5, "a step must take long enough to tell a block from a step"
assert took < step / 3, f"the worker stopped {took:.3f} s after the cancel, over a third of a {step:.2f} s step"
PY
grep -q "cancelled before DiT block" "$T/a.log" || fail "the worker did not stop between blocks"
pass "cancel within a block"
