#!/usr/bin/env bash
# Aco through pipeditd: the same request gives the same MP4 bytes with Aco off and on (1 denoise + 1
# decode worker; an SP group of two ranks + 1 decode worker), and the pair really lent heads
# (/metrics); a helper that SIGKILLs itself mid-lend (PIPEDIT_ACO_FAULT_AFTER) costs no job: the
# job completes with the same bytes, the helper is restarted and the next job pairs again.
# Bad --aco values are refused at start.
TEST_NAME=aco_daemon
source "$(dirname "$0")/daemon_lib.sh"
export PIPEDIT_CACHE=$T/cache # every daemon shares the embedded tiny model

REQ='{"prompt":"a red fox in the snow","num_frames":9,"size":"64x48","num_inference_steps":5,"seed":11}'
LONG='{"prompt":"a long walk","num_frames":9,"size":"64x48","num_inference_steps":80,"seed":5}'

wait_completed() { # ID SECONDS
    local i st
    for i in $(seq 1 $(($2 * 10))); do
        http GET "/v1/videos/$1"
        st=$(jq_body 'b["status"]')
        [ "$st" = completed ] && return 0
        [ "$st" = failed ] && fail "job $1 failed: $(cat "$T/body")"
        sleep 0.1
    done
    fail "job $1 not completed within $2 s: $(cat "$T/body")"
}

# run_job TAG [JSON]: submits JSON (default REQ), waits, saves the MP4 as $T/TAG.mp4.
run_job() {
    post_json /v1/videos "${2:-$REQ}"
    [ "$STATUS" = 200 ] || fail "create: $STATUS $(cat "$T/body")"
    local id
    id=$(jq_body 'b["id"]')
    wait_completed "$id" 300
    http GET "/v1/videos/$id/content"
    [ "$STATUS" = 200 ] || fail "$1: content: $STATUS"
    cp "$T/body" "$T/$1.mp4"
}

metric() { # NAME{LABELS} -> value from the last /metrics
    http GET /metrics
    awk -v k="$1" '$1 == k {print $2}' "$T/body"
}

stop_daemon() {
    kill -TERM "$DAEMON_PID"
    for i in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.2; done
}

COMMON=(--threads-per-worker 1 --comm-timeout-s 20 --worker-timeout-s 60)

# ---- 1 denoise + 1 decode worker ----
start_daemon "$T/off.log" --data-dir "$T/d-off" --workers 2 --aco off "${COMMON[@]}"
wait_ready 240
run_job off
run_job long-off "$LONG"
[ "$(metric pipedit_aco_sessions_total)" = 0 ] || fail "--aco off started a pair"
stop_daemon

start_daemon "$T/on.log" --data-dir "$T/d-on" --workers 2 --aco on "${COMMON[@]}"
wait_ready 240
run_job on
lends=$(metric pipedit_aco_lends_total)
lent=$(metric 'pipedit_aco_heads_total{where="lent"}')
[ "${lends:-0}" -gt 0 ] && [ "${lent:-0}" -gt 0 ] || fail "--aco on lent nothing (lends ${lends:-?}, heads ${lent:-?})"
cmp -s "$T/off.mp4" "$T/on.mp4" || fail "the video differs with Aco on"
pass "1+1 workers: same MP4 bytes with Aco off and on ($lends lends, $lent heads lent)"
share=$(metric pipedit_aco_lent_share)
[ "$share" = 0.5000 ] || fail "lent share gauge $share, want 0.5000 (on: half the heads)"
[ "$(metric pipedit_decode_start_delay_seconds_count)" -ge 1 ] || fail "no decode start delay recorded"
pass "/metrics: lent share $share, decode start delay recorded"
stop_daemon

# ---- the helper SIGKILLs itself mid-lend (its 3rd lend, after receiving q, k, v) ----
PIPEDIT_ACO_FAULT_AFTER=3 start_daemon "$T/fault.log" --data-dir "$T/d-fault" --workers 2 --aco on "${COMMON[@]}"
wait_ready 240
run_job fault1
cmp -s "$T/off.mp4" "$T/fault1.mp4" || fail "the video differs after the helper died mid-lend"
lost=$(metric 'pipedit_aco_helper_failures_total{kind="helper_lost"}')
failed=$(metric 'pipedit_aco_helper_failures_total{kind="lend_failed"}')
[ "${lost:-0}" -ge 1 ] && [ "${failed:-0}" -ge 1 ] || fail "no helper failure counted (lost ${lost:-?}, lend failed ${failed:-?})"
pass "helper killed mid-lend: the job completed with the same bytes (helpers lost $lost, failed lends $failed)"
# The helper is restarted and the next job pairs again (and its helper dies again: same bytes again).
for i in $(seq 1 600); do
    [ "$(grep -c 'worker 1 (decode) started' "$LOG")" -ge 2 ] && [ "$(metric pipedit_workers_up)" = 2 ] && break
    sleep 0.2
done
[ "$(grep -c 'worker 1 (decode) started' "$LOG")" -ge 2 ] || fail "the helper was not restarted"
run_job fault2
cmp -s "$T/off.mp4" "$T/fault2.mp4" || fail "the next job's video differs"
[ "$(metric pipedit_aco_sessions_total)" -ge 2 ] || fail "the pair was not formed again"
[ "$(metric 'pipedit_aco_helper_failures_total{kind="lend_failed"}')" -ge 2 ] || fail "the second job did not lend"
pass "helper restarted, the pair re-formed for the next job, same bytes"
stop_daemon

# ---- decoding comes first: 2 denoise + 1 decode worker. A long job on worker 0 lends to the decode
# worker; a short job on worker 1 finishes meanwhile and its latent goes to the decode worker mid-session:
# it declines from its next request on (the long job's rank computes every head), decodes at once (no
# wait past the lend in progress), and both videos are the same bytes as without Aco.
start_daemon "$T/back.log" --data-dir "$T/d-back" --workers 3 --decode-workers 1 --aco on "${COMMON[@]}"
wait_ready 240
post_json /v1/videos "$LONG"
[ "$STATUS" = 200 ] || fail "create: $STATUS $(cat "$T/body")"
long_id=$(jq_body 'b["id"]')
for i in $(seq 1 600); do
    grep -q "Aco session 1: worker 0 lends to worker 2" "$LOG" && break
    sleep 0.1
done
grep -q "Aco session 1: worker 0 lends to worker 2" "$LOG" || fail "no pair formed for the long job"
run_job short-on
cmp -s "$T/short-on.mp4" "$T/off.mp4" || fail "the short job's video differs"
wait_completed "$long_id" 300
http GET "/v1/videos/$long_id/content"
cmp -s "$T/body" "$T/long-off.mp4" || fail "the long job's video differs after its helper declined"
delay=$(metric pipedit_decode_start_delay_seconds_max)
lendmax=$(metric pipedit_aco_helper_lend_seconds_max)
declines=$(metric pipedit_aco_declines_total)
lends=$(metric pipedit_aco_lends_total)
[ "${declines:-0}" -ge 1 ] || fail "the helper never declined (declines ${declines:-?}, lends ${lends:-?})"
"$PYTHON" -c "import sys; sys.exit(0 if float('$delay') <= float('$lendmax') + 1.0 else 1)" ||
    fail "a decode waited $delay s to start (longest lend $lendmax s)"
pass "decode mid-session: $declines declines, $lends lends; decode start delay max ${delay} s (longest lend ${lendmax} s); same bytes"
stop_daemon

# ---- an SP group of two ranks + one decode worker (rank 0 gets the helper) ----
start_daemon "$T/spoff.log" --data-dir "$T/d-spoff" --workers 3 --sp-degree 2 --aco off "${COMMON[@]}"
wait_ready 300
run_job spoff
stop_daemon
start_daemon "$T/spon.log" --data-dir "$T/d-spon" --workers 3 --sp-degree 2 --aco on "${COMMON[@]}"
wait_ready 300
run_job spon
lends=$(metric pipedit_aco_lends_total)
[ "${lends:-0}" -gt 0 ] || fail "SP: --aco on lent nothing"
cmp -s "$T/spoff.mp4" "$T/spon.mp4" || fail "SP 2: the video differs with Aco on"
pass "SP 2 + 1 decode worker: same MP4 bytes with Aco off and on ($lends lends)"
stop_daemon

# ---- bad values are refused at start ----
rc=0
"$PIPEDIT_BIN/pipeditd" --data-dir "$T/d-bad" --aco sometimes >"$T/bad.log" 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q "not auto, on or off" "$T/bad.log" || fail "--aco sometimes: rc $rc, $(cat "$T/bad.log")"
rc=0
PIPEDIT_ACO=maybe "$PIPEDIT_BIN/pipeditd" --data-dir "$T/d-bad" >"$T/bad.log" 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q "not auto, on or off" "$T/bad.log" || fail "PIPEDIT_ACO=maybe: rc $rc, $(cat "$T/bad.log")"
pass "bad --aco values refused"
echo "PASS"
