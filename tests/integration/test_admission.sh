#!/usr/bin/env bash
# Black-box admission by cost on the embedded tiny model: the largest request the static limits allow
# (1280x1280, 129 frames, 100 steps) is refused with 400 job_too_large whose message gives the
# estimate and max_job_seconds, and creates nothing (no video listed, nothing journaled, no file);
# a tight job_memory_bytes refuses by memory the same way; a small request is accepted and carries an
# estimated_completed_at between its creation and its deadline, later for a job queued behind it.
TEST_NAME=admission
source "$(dirname "$0")/daemon_lib.sh"

DATA=$T/data
start_daemon "$T/a.log" --data-dir "$DATA" --workers 1 --max-job-seconds 600
wait_ready 120

MAX='{"prompt":"everything at once","size":"1280x1280","num_frames":129,"num_inference_steps":100}'
post_json /v1/videos "$MAX"
expect_error "the maximum request" 400
[ "$(jq_body 'b["error"]["code"]')" = job_too_large ] || fail "code: $(cat "$T/body")"
"$PYTHON" - "$T/body" <<'PY' || fail "the refusal does not give the estimate and the limit: $(cat "$T/body")"
import json, re, sys
m = json.load(open(sys.argv[1]))["error"]["message"]
est = re.search(r"estimated run time on this deployment is (\d+) s", m)
assert est and int(est.group(1)) > 600, m
assert "max_job_seconds = 600 s" in m, m
PY
pass "max request refused: $(jq_body 'b["error"]["message"]')"
http GET /v1/videos
[ "$STATUS" = 200 ] && [ "$(jq_body 'len(b["data"])')" = 0 ] || fail "the refusal left a video: $(cat "$T/body")"
[ ! -s "$DATA/journal.jsonl" ] || ! grep -q '"job"' "$DATA/journal.jsonl" || fail "the refusal was journaled"
[ -z "$(ls -A "$DATA/videos" 2>/dev/null)" ] || fail "the refusal left files: $(ls "$DATA/videos")"
pass "the refusal created nothing"

# Two jobs: each gets an estimated completion time after its creation and before its deadline; the
# one queued behind finishes later.
post_json /v1/videos '{"prompt":"a small one","size":"64x48","num_frames":9,"num_inference_steps":20,"seed":1}'
[ "$STATUS" = 200 ] || fail "small request: $STATUS $(cat "$T/body")"
read -r ID1 C1 E1 <<<"$(jq_body '" ".join(map(str, [b["id"], b["created_at"], b["estimated_completed_at"]]))')"
post_json /v1/videos '{"prompt":"behind it","size":"64x48","num_frames":9,"num_inference_steps":20,"seed":2}'
[ "$STATUS" = 200 ] || fail "second request: $STATUS $(cat "$T/body")"
read -r ID2 C2 E2 <<<"$(jq_body '" ".join(map(str, [b["id"], b["created_at"], b["estimated_completed_at"]]))')"
http GET "/v1/videos/$ID2"
E2b=$(jq_body 'b["estimated_completed_at"]')
"$PYTHON" - "$C1" "$E1" "$C2" "$E2" "$E2b" <<'PY' || fail "estimated_completed_at $E1 / $E2 / $E2b for created $C1 / $C2"
import sys
c1, e1, c2, e2, e2b = (int(float(x)) for x in sys.argv[1:])
assert c1 <= e1 <= c1 + 600, "first job"
assert c2 <= e2 <= c2 + 2 * 600 and e2 >= e1, "second job, queued behind"
assert e2b >= e1, "retrieve"
PY
pass "estimated_completed_at: $E1 and $E2 (created $C1, $C2)"
for id in "$ID1" "$ID2"; do
    for i in $(seq 1 1200); do
        http GET "/v1/videos/$id"
        st=$(jq_body 'b["status"]')
        [ "$st" = completed ] && break
        [ "$st" = failed ] && fail "job failed: $(cat "$T/body")"
        sleep 0.1
    done
    [ "$st" = completed ] || fail "$id not completed"
    [ "$(jq_body 'b["estimated_completed_at"]')" = None ] || fail "a completed job keeps an estimate: $(cat "$T/body")"
done
pass "both completed"

# The memory limit: a second daemon whose workers may use 64 MiB refuses a wide request by memory.
start_daemon "$T/b.log" --data-dir "$T/data2" --workers 1 --job-memory-bytes 67108864
wait_ready 120
post_json /v1/videos '{"prompt":"wide","size":"1280x1280","num_frames":5,"num_inference_steps":1}'
expect_error "over the memory limit" 400
"$PYTHON" -c "import json,sys; m=json.load(open(sys.argv[1]))['error']['message']; assert 'activation memory' in m and 'job_memory_bytes = 64.0 MiB' in m, m" "$T/body" ||
    fail "memory refusal: $(cat "$T/body")"
pass "memory limit: $(jq_body 'b["error"]["message"]')"
