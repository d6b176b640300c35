#!/usr/bin/env bash
# Black-box checks of pipeditd's HTTP edge: every bad request gets the right status and exactly the
# OpenAI error envelope, and changes nothing (no job, no journal line, no file); plus /v1/models,
# health and the Prometheus text on /metrics. Needs no generation.
TEST_NAME=daemon_api
source "$(dirname "$0")/daemon_lib.sh"

# ---- a configuration the scheduler would refuse is refused at load: exit 2, a message, nothing made ----
bad_config() { # bad_config WHAT WORD JSON [flags...]
    local what=$1 word=$2 json=$3
    shift 3
    printf '%s\n' "$json" >"$T/bad.json"
    local rc=0
    "$PIPEDIT_BIN/pipeditd" --config "$T/bad.json" --host 127.0.0.1 --port 0 --data-dir "$T/never" "$@" >"$T/bad.out" 2>&1 || rc=$?
    [ "$rc" = 2 ] || fail "$what: exit status $rc, want 2: $(head -c 300 "$T/bad.out")"
    grep -q "$word" "$T/bad.out" || fail "$what: the message does not name $word: $(head -c 300 "$T/bad.out")"
    [ ! -e "$T/never" ] || fail "$what: the data folder was created"
    pass "config $what refused: $(head -n 1 "$T/bad.out")"
}
bad_config "decode_workers = workers" decode_workers '{"workers": 2, "decode_workers": 2}'
bad_config "sp_degree without room for a decoder" sp_degree '{"workers": 2}' --sp-degree 2
bad_config "unknown device" device '{"device": "tpu"}'
bad_config "body deadline below the header deadline" body_timeout_s '{"header_timeout_s": 10, "body_timeout_s": 5}'

KEY=test-key-0123456789
start_daemon "$T/daemon.log" --data-dir "$T/data" --api-keys "$KEY" --max-prompt-bytes 4096 --max-frames 81 --max-steps 50
AUTH=(-H "Authorization: Bearer $KEY")

# ---- auth ----
as_key "" http GET /v1/videos
expect_error "no API key" 401
as_key "Bearer wrong-key-0123456789" http GET /v1/videos
expect_error "wrong API key" 401
as_key "Bearer ${KEY}x" http GET /v1/models
expect_error "key with an extra byte" 401
as_key "Basic $KEY" http GET /v1/models
expect_error "non-bearer scheme" 401
grep -qi '^WWW-Authenticate: Bearer' "$T/headers" || fail "401 without WWW-Authenticate"

# ---- models ----
http GET /v1/models
[ "$STATUS" = 200 ] || fail "models: $STATUS"
[ "$(jq_body 'b["object"], b["data"][0]["id"], b["data"][0]["object"], len(b["data"])')" = "list tiny model 1" ] ||
    fail "models body: $(cat "$T/body")"
http GET /v1/models/tiny
[ "$STATUS" = 200 ] && [ "$(jq_body 'b["id"]')" = tiny ] || fail "model tiny: $STATUS"
http GET /v1/models/sora-2
expect_error "unknown model id" 404
pass "models"

# ---- health (no key needed) ----
as_key "" http GET /health/live
[ "$STATUS" = 200 ] && [ "$(jq_body 'b["status"]')" = ok ] || fail "live: $STATUS"
wait_ready 120
as_key "" http GET /health/ready
[ "$(jq_body 'b["status"], b["workers_up"] >= 1')" = "ready True" ] || fail "ready body: $(cat "$T/body")"
pass "health"

# ---- bad create requests: each 400 with the offending param ----
n400=0
bad() { # bad WHAT PARAM JSON
    post_json /v1/videos "$3"
    expect_error "$1" 400 "$2"
    n400=$((n400 + 1))
}
bad "malformed JSON" "" '{"prompt": "a cat"'
bad "not an object" "" '["a cat"]'
bad "trailing garbage" "" '{"prompt":"a"} x'
bad "duplicate key" "" '{"prompt":"a","prompt":"b"}'
bad "prompt of the wrong type" prompt '{"prompt": 5}'
bad "missing prompt" prompt '{"seconds": "4"}'
bad "empty prompt" prompt '{"prompt": ""}'
bad "blank prompt" prompt '{"prompt": "   \n "}'
bad "prompt with NUL" "" '{"prompt": "a\u0000b"}'
bad "unknown model" model '{"prompt":"a","model":"sora-2"}'
bad "unknown parameter" temperature '{"prompt":"a","temperature":1}'
bad "seed as a string" seed '{"prompt":"a","seed":"abc"}'
bad "negative seed" seed '{"prompt":"a","seed":-1}'
bad "fractional steps" num_inference_steps '{"prompt":"a","num_inference_steps":2.5}'
bad "negative steps" num_inference_steps '{"prompt":"a","num_inference_steps":-3}'
bad "zero steps" num_inference_steps '{"prompt":"a","num_inference_steps":0}'
bad "too many steps" num_inference_steps '{"prompt":"a","num_inference_steps":51}'
bad "size not WxH" size '{"prompt":"a","size":"large"}'
bad "size not a multiple of 16" width '{"prompt":"a","size":"100x96"}'
bad "size too large" width '{"prompt":"a","size":"4096x96"}'
bad "height too large" height '{"prompt":"a","width":128,"height":99984}'
bad "size and width disagree" size '{"prompt":"a","size":"128x96","width":64}'
bad "frames not 4k+1" num_frames '{"prompt":"a","num_frames":10}'
bad "too many frames" num_frames '{"prompt":"a","num_frames":85}'
bad "seconds and frames" seconds '{"prompt":"a","seconds":"1","num_frames":17}'
bad "seconds not a number" seconds '{"prompt":"a","seconds":"four"}'
bad "seconds negative" seconds '{"prompt":"a","seconds":-4}'
bad "too many seconds for max_frames" seconds '{"prompt":"a","seconds":"8"}'
bad "guidance as a string" guidance_scale '{"prompt":"a","guidance_scale":"high"}'
bad "guidance 75 (the pipeline's limit is 50)" guidance_scale '{"prompt":"a","guidance_scale":75}'
bad "guidance 50.5" guidance_scale '{"prompt":"a","guidance_scale":50.5}'
bad "zero flow shift" flow_shift '{"prompt":"a","flow_shift":0}'
bad "flow shift that is 0 as a float" flow_shift '{"prompt":"a","flow_shift":1e-50}'
bad "unknown sampler" sampler '{"prompt":"a","sampler":"ddim"}'
bad "unknown noise generator" noise '{"prompt":"a","noise":"torch-cuda"}'
bad "noise not a string" noise '{"prompt":"a","noise":1}'
bad "unknown output format" output_format '{"prompt":"a","output_format":"gif"}'
bad "fps out of range" fps '{"prompt":"a","fps":0}'
# A 1 MB prompt fits the 1 MiB body limit but not max_prompt_bytes.
"$PYTHON" -c 'import json; print(json.dumps({"prompt": "x" * 1000000}))' >"$T/big.json"
http POST /v1/videos -H 'Content-Type: application/json' --data-binary "@$T/big.json"
expect_error "1 MB prompt" 400 prompt
n400=$((n400 + 1))
# multipart/form-data
http POST /v1/videos -F 'seconds=4'
expect_error "multipart without prompt" 400 prompt
n400=$((n400 + 1))
printf 'PNG' >"$T/ref.png"
http POST /v1/videos -F 'prompt=a cat' -F "input_reference=@$T/ref.png"
expect_error "multipart file upload" 400 input_reference
n400=$((n400 + 1))
http POST /v1/videos -H 'Content-Type: multipart/form-data; boundary=zz' --data-binary $'--zz\r\nno headers here'
expect_error "broken multipart" 400
n400=$((n400 + 1))
http POST /v1/videos -F 'prompt=a' -F 'num_inference_steps=many'
expect_error "multipart steps not a number" 400 num_inference_steps
n400=$((n400 + 1))

# ---- bodies over the limit: 413 ----
head -c 2000000 /dev/zero | tr '\0' 'a' >"$T/huge"
http POST /v1/videos -H 'Content-Type: application/json' --data-binary "@$T/huge"
expect_error "2 MB body" 413
http POST /v1/videos -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' --data-binary "@$T/huge"
expect_error "2 MB chunked body" 413

# ---- unknown ids and path traversal: 404 ----
UNKNOWN=video_0123456789abcdef0123456789abcdef
for p in "/v1/videos/$UNKNOWN" "/v1/videos/$UNKNOWN/content" "/v1/videos/$UNKNOWN/events"; do
    http GET "$p"
    expect_error "GET $p" 404
done
http DELETE "/v1/videos/$UNKNOWN"
expect_error "DELETE unknown" 404
http POST "/v1/videos/$UNKNOWN/cancel"
expect_error "cancel unknown" 404
http GET "/v1/videos/VIDEO_0123456789ABCDEF0123456789ABCDEF"
expect_error "upper-case id" 404
for p in "/v1/videos/../../etc/passwd" "/v1/videos/%2e%2e/content"; do
    http GET "$p" --path-as-is
    [ "$STATUS" = 404 ] || fail "traversal $p: $STATUS"
    grep -q 'op' "$T/body" && fail "traversal $p leaked a file"
    expect_error "traversal $p" 404
done
# A percent-encoded slash or NUL in the path is refused outright (test_daemon_framing.sh has more).
for p in "/v1/videos/..%2F..%2Fjournal.jsonl/content" "/v1/videos/video_..%2F..%2F..%2Fetc%2Fpasswd/content" \
    "/v1/videos/video_0123456789abcdef0123456789abcde%00/content" "/v1/videos/$UNKNOWN%2F..%2F..%2Fjournal.jsonl/content"; do
    http GET "$p" --path-as-is
    grep -q 'op' "$T/body" && fail "traversal $p leaked a file"
    expect_error "traversal $p" 400
done

# ---- list parameters, methods, routes ----
http GET '/v1/videos?limit=0'
expect_error "limit 0" 400 limit
http GET '/v1/videos?limit=abc'
expect_error "limit abc" 400 limit
http GET '/v1/videos?order=sideways'
expect_error "bad order" 400 order
http GET '/v1/videos?after=../x'
expect_error "bad cursor" 400 after
http GET "/v1/videos?after=$UNKNOWN"
expect_error "unknown cursor" 400 after
http GET "/v1/videos/$UNKNOWN/content?variant=spritesheet"
expect_error "bad variant" 400 variant
http PUT /v1/videos
expect_error "PUT /v1/videos" 405
http GET /v2/nothing
expect_error "unknown route" 404

# ---- nothing changed ----
http GET /v1/videos
[ "$STATUS" = 200 ] || fail "list: $STATUS"
[ "$(jq_body 'b["object"], b["data"], b["first_id"], b["last_id"], b["has_more"]')" = "list [] None None False" ] ||
    fail "jobs appeared after bad requests: $(head -c 300 "$T/body")"
[ ! -s "$T/data/journal.jsonl" ] || fail "the journal was written: $(head -c 300 "$T/data/journal.jsonl")"
[ -z "$(ls -A "$T/data/videos")" ] || fail "files appeared in videos/"
pass "bad requests changed nothing"

# ---- metrics: Prometheus text, and it counted what we sent ----
as_key "" http GET /metrics
[ "$STATUS" = 200 ] || fail "metrics: $STATUS"
grep -qi '^Content-Type: text/plain; version=0.0.4' "$T/headers" || fail "metrics content type"
"$PYTHON" - "$T/body" "$n400" <<'PY' || fail "metrics format"
import re, sys
text = open(sys.argv[1]).read()
assert text.endswith("\n")
sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? (?P<v>-?[0-9.eE+-]+|\+Inf|NaN)$')
types, values = {}, {}
for line in text.splitlines():
    if line.startswith("# HELP "):
        continue
    if line.startswith("# TYPE "):
        _, _, name, kind = line.split(" ", 3)
        assert kind in ("counter", "gauge", "histogram", "summary"), line
        types[name] = kind
        continue
    m = sample.match(line)
    assert m, "bad sample line: %r" % line
    name = m.group(1)
    base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
    assert base in types, "sample without TYPE: %r" % line
    values[name + (m.group(2) or "")] = float(m.group("v"))
want = int(sys.argv[2])
got = values.get('pipedit_http_requests_total{route="/v1/videos",method="POST",code="400"}')
assert got == want, ("POST 400 count", got, want)
assert values.get('pipedit_http_requests_total{route="/v1/videos",method="POST",code="413"}') == 2
assert values.get('pipedit_http_requests_total{route="/v1/videos",method="GET",code="401"}') == 2
assert values['pipedit_workers_up'] >= 1 and values['pipedit_ready'] == 1
assert values['pipedit_worker_memory_bytes'] > 1e6, values['pipedit_worker_memory_bytes']
assert values['pipedit_queue_depth'] == 0
for st in ("queued", "in_progress", "completed", "failed"):
    assert values['pipedit_jobs{status="%s"}' % st] == 0
for stage in ("text", "denoise", "decode", "encode"):
    assert values['pipedit_stage_duration_seconds_bucket{stage="%s",le="+Inf"}' % stage] == 0
print("metrics ok:", len(values), "samples")
PY
pass "metrics"
echo "PASS test_daemon_api"
