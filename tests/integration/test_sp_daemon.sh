#!/usr/bin/env bash
# pipeditd with sequence-parallel denoise groups (sp_degree 2 over 3 workers: one group of two ranks
# plus a decode worker): the group forms, a job's video matches the single-device `pipedit generate`
# of the same request, a cancel stops both ranks before the same DiT block, a rank killed mid-denoise
# fails its job within the collective timeout, the group is re-formed and the next job completes.
# Then CFG parallelism over a group of four ranks gives the same video again.
TEST_NAME=sp_daemon
source "$(dirname "$0")/daemon_lib.sh"
command -v ffmpeg >/dev/null || fail "ffmpeg is not installed (scripts/deps.sh installs it)"
export PIPEDIT_CACHE=$T/cache # the daemon and `pipedit generate` share the embedded tiny model

REQ='{"prompt":"a red fox in the snow","num_frames":9,"size":"64x48","num_inference_steps":5,"seed":11}'

# wait_status ID STATUS SECONDS: polls until the job has STATUS (fails on another final status).
wait_status() {
    local id=$1 want=$2 i st
    for i in $(seq 1 $(($3 * 10))); do
        http GET "/v1/videos/$id"
        st=$(jq_body 'b["status"]')
        [ "$st" = "$want" ] && return 0
        if [ "$st" = completed ] || [ "$st" = failed ]; then fail "job $id ended $st, want $want: $(cat "$T/body")"; fi
        sleep 0.1
    done
    fail "job $id not $want within $3 s: $(cat "$T/body")"
}

# wait_denoising ID: until the job is a few denoising steps in (progress >= 2).
wait_denoising() {
    local i
    for i in $(seq 1 1200); do
        http GET "/v1/videos/$1"
        [ "$(jq_body 'b["status"] == "in_progress" and b["progress"] >= 2')" = True ] && return 0
        sleep 0.1
    done
    fail "job $1 did not start denoising: $(cat "$T/body")"
}

create() { # JSON -> ID
    post_json /v1/videos "$1"
    [ "$STATUS" = 200 ] || fail "create: $STATUS $(cat "$T/body")"
    ID=$(jq_body 'b["id"]')
}

# Videos are compared by the PSNR of their decoded frames (tests/lib/psnr.py): the MP4 is lossy, and
# rounding flips may change a few encoder decisions; a different seed scores < 20 dB.
PSNR="$(dirname "$0")/../lib/psnr.py"

# to_rgb MP4: its frames as raw rgb24 in MP4.rgb.
to_rgb() { ffmpeg -loglevel error -y -i "$1" -f rawvideo -pix_fmt rgb24 "$1.rgb" || fail "ffmpeg cannot decode $1"; }

# same_video ID TAG WHAT: the job's MP4 scores >= 40 dB against the single-device reference.
same_video() {
    http GET "/v1/videos/$1/content"
    [ "$STATUS" = 200 ] || fail "$3: content: $STATUS"
    cp "$T/body" "$T/$2.mp4"
    to_rgb "$T/$2.mp4"
    local db
    db=$("$PYTHON" "$PSNR" "$T/$2.mp4.rgb" "$T/ref.mp4.rgb" --at-least 40) || fail "$3: PSNR $db dB against one device"
    pass "$3 = single device (PSNR $db dB)"
}

# The single-device reference of REQ.
PIPEDIT_LOG=warn timeout 300 "$PIPEDIT_BIN/pipedit" generate --prompt "a red fox in the snow" --frames 9 --size 64x48 \
    --steps 5 --seed 11 --threads 1 --out "$T/ref.mp4" >/dev/null || fail "pipedit generate (reference) failed"
PIPEDIT_LOG=warn timeout 300 "$PIPEDIT_BIN/pipedit" generate --prompt "a red fox in the snow" --frames 9 --size 64x48 \
    --steps 5 --seed 12 --threads 1 --out "$T/other.mp4" >/dev/null || fail "pipedit generate (seed 12) failed"
to_rgb "$T/ref.mp4" # decoded once for every comparison
to_rgb "$T/other.mp4"
db=$("$PYTHON" "$PSNR" "$T/other.mp4.rgb" "$T/ref.mp4.rgb" --below 20) \
    || fail "another seed scores $db dB: PSNR cannot tell videos apart"

# ---- one group of two ranks + one decode worker ----
start_daemon "$T/a.log" --data-dir "$T/data" --workers 3 --sp-degree 2 --threads-per-worker 1 --comm-timeout-s 5 --max-steps 1000 \
    --worker-timeout-s 60
wait_ready 240
grep -q "SP group 0: generation 1 formed (2 ranks" "$LOG" || fail "the group did not form"
http GET /metrics
grep -q '^pipedit_sp_groups{state="formed"} 1$' "$T/body" || fail "metrics: $(grep sp_groups "$T/body")"
pass "SP group of 2 ranks formed (and in /metrics)"

create "$REQ"
wait_status "$ID" completed 300
same_video "$ID" sp2 "SP 2 video"

# ---- cancel: both ranks stop before the same DiT block of the same step ----
create '{"prompt":"a long one","num_frames":9,"size":"64x48","num_inference_steps":400,"seed":3}'
CANCEL_ID=$ID
wait_denoising "$CANCEL_ID"
http POST "/v1/videos/$CANCEL_ID/cancel"
[ "$STATUS" = 200 ] || fail "cancel: $STATUS $(cat "$T/body")"
wait_status "$CANCEL_ID" failed 60
[ "$(jq_body 'b["error"]["code"]')" = cancelled ] || fail "cancelled job: $(cat "$T/body")"
sleep 0.5
lines=$(grep "job $CANCEL_ID: rank [01] of SP group 0 stopped" "$LOG" || true)
steps=$(sed -n 's/.*denoise step \([0-9]*\) of 400: cancelled before DiT block \([0-9]*\) of [0-9]* (rank \([0-9]\) of 2).*/\3:\1.\2/p' <<<"$lines" | sort)
[ "$(wc -l <<<"$steps")" = 2 ] || fail "want one cancellation line per rank, got: $lines"
k0=${steps%%$'\n'*}
k1=${steps##*$'\n'}
[ "${k0#0:}" = "${k1#1:}" ] && [ "${k0%%:*}" = 0 ] && [ "${k1%%:*}" = 1 ] || fail "ranks stopped at different blocks: $steps"
step=${k0#0:}
step=${step%.*}
[ "$step" -ge 1 ] && [ "$step" -le 400 ] || fail "stopped at step $step"
pass "cancel: both ranks stopped at step.block ${k0#0:}"

# ---- a rank dies mid-denoise: the job fails fast, the group re-forms, the next job completes ----
create '{"prompt":"another long one","num_frames":9,"size":"64x48","num_inference_steps":400,"seed":4}'
DEAD_ID=$ID
wait_denoising "$DEAD_ID"
pid=$(sed -n 's/.*worker 1 (denoise) started, pid \([0-9]*\).*/\1/p' "$LOG" | tail -n 1)
[ -n "$pid" ] && kill -0 "$pid" || fail "no live rank 1 pid in the log"
t0=$(date +%s)
kill -KILL "$pid"
wait_status "$DEAD_ID" failed 30
t1=$(date +%s)
code=$(jq_body 'b["error"]["code"]')
msg=$(jq_body 'b["error"]["message"]')
case "$code" in worker_died | device | timeout) ;; *) fail "killed rank: error code $code ($msg)" ;; esac
[ $((t1 - t0)) -le 15 ] || fail "the job took $((t1 - t0)) s to fail after a rank died (collective timeout 5 s)"
pass "killed rank 1 -> job failed in $((t1 - t0)) s ($code: $msg)"
for i in $(seq 1 600); do
    grep -q "SP group 0: generation [2-9][0-9]* formed" "$LOG" && break
    sleep 0.2
done
grep -q "SP group 0: generation 2 formed" "$LOG" || fail "the group was not re-formed as generation 2 (one failure, one new generation): $(grep 'SP group 0' "$LOG" | tail -n 5)"
create "$REQ"
wait_status "$ID" completed 300
same_video "$ID" sp2b "group re-formed; the next job's video"
kill -TERM "$DAEMON_PID"
for i in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.2; done

# ---- CFG parallelism: a group of four ranks, halves per branch ----
start_daemon "$T/b.log" --data-dir "$T/data2" --workers 5 --sp-degree 4 --cfg-parallel 1 --pipesp-chunk 1 \
    --threads-per-worker 1 --comm-timeout-s 20 --worker-timeout-s 60
wait_ready 300
grep -q "SP group 0: generation 1 formed (4 ranks, CFG parallel" "$LOG" || fail "the CFG-parallel group did not form"
create "$REQ"
wait_status "$ID" completed 300
same_video "$ID" cfg4 "SP 4 with CFG parallelism: video"

# ---- configuration errors are refused at start ----
rc=0
timeout 30 "$PIPEDIT_BIN/pipeditd" --port 0 --data-dir "$T/data3" --workers 2 --sp-degree 2 >"$T/c.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && grep -q "sp_degree 2 needs at least 3 workers" "$T/c.log" || fail "sp_degree 2 over 2 workers: exit $rc: $(cat "$T/c.log")"
pass "sp_degree without a decode worker refused"
echo "all SP daemon checks passed"
