#!/usr/bin/env bash
# Black-box lifecycle of pipeditd on the embedded tiny model: create -> progress rising over SSE and
# polling -> completed -> an MP4 that ffprobe accepts (whole and by Range) -> list paging -> cancel
# -> delete; the plan in force (logged at start; /metrics: split, chunk, share, predicted against
# measured stage times); then a full queue (429), SIGTERM with jobs queued (readiness 503, creates 503, exit 0),
# a --profile that is no file stops the start, and a restart with a profile file (its plan logged)
# on the same data folder that still lists and serves the finished video and runs the
# jobs left queued to completion.
TEST_NAME=daemon_flow
source "$(dirname "$0")/daemon_lib.sh"
command -v ffprobe >/dev/null || fail "ffprobe is not installed (scripts/deps.sh installs it)"

DATA=$T/data
FLAGS=(--data-dir "$DATA" --queue-capacity 2 --drain-timeout-s 1 --poll-after-ms 250)
start_daemon "$T/a.log" "${FLAGS[@]}"
wait_ready 120

# ---- create: 1 s at 16 fps -> 17 frames; 100 steps keep the denoise (1-3 s here) running while the event
# stream below connects, so the stream sees it ----
post_json /v1/videos '{"prompt":"a red fox in the snow","seconds":"1","size":"64x48","num_inference_steps":100,"seed":7,"noise":"torch-cpu"}'
[ "$STATUS" = 200 ] || fail "create: $STATUS $(cat "$T/body")"
read -r ID1 ST1 FR1 SEED1 OBJ1 NOISE1 <<<"$(jq_body '" ".join(map(str, [b["id"], b["status"], b["num_frames"], b["seed"], b["object"], b["noise"]]))')"
# The body shows the job as it is when the answer is written: a free pipeline may already have started it.
case "$ST1" in queued | in_progress) ;; *) fail "create status '$ST1': $(cat "$T/body")" ;; esac
[ "$FR1 $SEED1 $OBJ1 $NOISE1" = "17 7 video torch-cpu" ] || fail "create body: $(cat "$T/body")"
[[ $ID1 =~ ^video_[0-9a-f]{32}$ ]] || fail "id $ID1"
grep -q "\"id\":\"$ID1\"" "$DATA/journal.jsonl" || fail "the job was not journaled before the answer"
pass "create $ID1"

# Events in the background while polling in the foreground.
timeout 300 curl -s -N "$URL/v1/videos/$ID1/events" >"$T/sse.txt" &
SSE_PID=$!
polled=()
for i in $(seq 1 1200); do
    http GET "/v1/videos/$ID1"
    [ "$STATUS" = 200 ] || fail "retrieve: $STATUS"
    [ "$(header_of openai-poll-after-ms)" = 250 ] || fail "no openai-poll-after-ms header"
    read -r st pr <<<"$(jq_body 'b["status"] + " " + str(b["progress"])')"
    polled+=("$pr")
    [ "$st" = completed ] && break
    [ "$st" = failed ] && fail "job failed: $(cat "$T/body")"
    sleep 0.1
done
[ "$st" = completed ] || fail "not completed in time"
"$PYTHON" - "${polled[@]}" <<'PY' || fail "polled progress ${polled[*]}"
import sys
p = [int(x) for x in sys.argv[1:]]
assert p == sorted(p), "progress went down"
assert p[-1] == 100 and all(x < 100 for x in p[:-1]), "100 only when completed"
assert len({x for x in p if 0 < x < 100}) >= 2, "no intermediate progress seen while polling"
PY
pass "polling: progress ${polled[*]}"

# ---- the plan in force: logged at start, in /metrics with what it predicted and what was measured ----
grep -q "plan (profile cpu-reference, model tiny.*rev 1: 1 denoise + 1 decode workers.*predicted per job text" "$T/a.log" ||
    fail "no start plan in the log: $(grep -m3 'plan' "$T/a.log")"
http GET /metrics
plan_metric() { awk -v k="$1" '$1 == k {print $2}' "$T/body"; }
[ "$(plan_metric 'pipedit_plan_info{profile="cpu-reference",source="cost_model"}')" = 1 ] || fail "plan_info: $(grep plan_info "$T/body")"
[ "$(plan_metric pipedit_plan_denoise_workers) $(plan_metric pipedit_plan_decode_workers)" = "1 1" ] || fail "plan split: $(grep pipedit_plan_ "$T/body")"
[ -n "$(plan_metric pipedit_plan_revisions_total)" ] && [ -n "$(plan_metric pipedit_plan_aco_share)" ] &&
    [ "$(plan_metric pipedit_plan_pipesp_chunk)" = 0 ] || fail "plan gauges: $(grep pipedit_plan_ "$T/body")"
for stage in text denoise decode; do
    p=$(plan_metric "pipedit_plan_predicted_stage_seconds{stage=\"$stage\"}")
    m=$(plan_metric "pipedit_plan_measured_stage_seconds{stage=\"$stage\"}")
    "$PYTHON" -c 'import sys; assert float(sys.argv[1]) > 0 and float(sys.argv[2]) > 0' "$p" "$m" || fail "$stage: predicted '$p', measured '$m'"
done
pass "plan: logged at start, /metrics shows the split, chunk, share and predicted vs measured stage times"
wait "$SSE_PID" || fail "the event stream did not end cleanly"
"$PYTHON" - "$T/sse.txt" "$ID1" <<'PY' || fail "SSE stream: $(head -c 600 "$T/sse.txt")"
import json, sys
events, ev = [], None
for line in open(sys.argv[1]).read().split("\n"):
    if line.startswith("event: "):
        ev = line[7:]
    elif line.startswith("data: "):
        events.append((ev, json.loads(line[6:])))
names = [e for e, _ in events]
prog = [d["progress"] for _, d in events]
assert all(d["id"] == sys.argv[2] for _, d in events)
assert names[-1] == "completed" and events[-1][1]["status"] == "completed", names
assert names.count("completed") == 1 and "failed" not in names
assert "stage" in names, names
assert prog == sorted(prog) and prog[-1] == 100, prog
assert len({p for p in prog if 0 < p < 100}) >= 3, prog
stages = [d["stage"] for _, d in events if d["stage"]]
assert "denoise" in stages and "decode" in stages, stages
assert stages.index("denoise") < stages.index("decode"), stages
print("sse:", len(events), "events, stages", stages)
PY
pass "SSE progress rises to completed"

# ---- the video: ffprobe, Range, thumbnail ----
http GET "/v1/videos/$ID1/content"
[ "$STATUS" = 200 ] && [ "$(header_of Content-Type)" = video/mp4 ] && [ "$(header_of Accept-Ranges)" = bytes ] || fail "content: $STATUS"
cp "$T/body" "$T/v1.mp4"
probe=$(ffprobe -v error -select_streams v:0 -count_frames -show_entries stream=codec_name,width,height,nb_read_frames -of csv=p=0 "$T/v1.mp4") ||
    fail "ffprobe rejects the MP4"
[ "$probe" = "h264,64,48,17" ] || fail "ffprobe: $probe (want h264,64,48,17)"
comment=$(ffprobe -v error -show_entries format_tags=comment -of default=nw=1:nk=1 "$T/v1.mp4")
[[ $comment == *"seed=7 noise=torch-cpu"* ]] || fail "the MP4's comment tag \"$comment\" does not record seed and noise"
size=$(stat -c %s "$T/v1.mp4")
http GET "/v1/videos/$ID1/content?variant=video" -H 'Range: bytes=100-199'
[ "$STATUS" = 206 ] || fail "range: $STATUS"
[ "$(header_of Content-Range)" = "bytes 100-199/$size" ] || fail "Content-Range: $(header_of Content-Range)"
cmp -s "$T/body" <(tail -c +101 "$T/v1.mp4" | head -c 100) || fail "range bytes differ from the file"
curl -s -o "$T/tail" -H 'Range: bytes=-10' "$URL/v1/videos/$ID1/content"
cmp -s "$T/tail" <(tail -c 10 "$T/v1.mp4") || fail "suffix range"
http GET "/v1/videos/$ID1/content" -H "Range: bytes=$size-"
[ "$STATUS" = 416 ] && [ "$(header_of Content-Range)" = "bytes */$size" ] || fail "unsatisfiable range: $STATUS"
curl -s -o "$T/thumb.png" "$URL/v1/videos/$ID1/content?variant=thumbnail"
[ "$(head -c 8 "$T/thumb.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "thumbnail is not a PNG"
pass "content: $probe, $size bytes, Range 206/416, thumbnail"

# ---- the client tool agrees ----
"$PIPEDIT_BIN/pipedit" client --url "$URL" download "$ID1" --output "$T/client.mp4" >/dev/null || fail "pipedit client download"
cmp -s "$T/client.mp4" "$T/v1.mp4" || fail "client download differs"
"$PIPEDIT_BIN/pipedit" client --url "$URL/v1" get "$ID1" | grep -q '"status": "completed"' || fail "pipedit client get"
pass "pipedit client get/download"

# ---- multipart create, list paging ----
http POST /v1/videos -F 'prompt=a blue bird' -F 'seconds=0.5' -F 'size=32x32' -F 'num_inference_steps=2' -F 'seed=3'
[ "$STATUS" = 200 ] || fail "multipart create: $STATUS $(cat "$T/body")"
ID2=$(jq_body 'b["id"]')
[ "$(jq_body 'b["num_frames"], b["size"], b["seed"]')" = "9 32x32 3" ] || fail "multipart fields: $(cat "$T/body")"
"$PIPEDIT_BIN/pipedit" client --url "$URL" wait "$ID2" 2>"$T/wait.txt" || fail "client wait: $(tail -c 300 "$T/wait.txt")"
grep -q "100%" "$T/wait.txt" || fail "client wait drew no final progress bar"
http GET '/v1/videos?limit=1&order=asc'
[ "$(jq_body 'len(b["data"]), b["data"][0]["id"] == b["first_id"] == b["last_id"], b["first_id"], b["has_more"]')" = "1 True $ID1 True" ] ||
    fail "page 1: $(cat "$T/body")"
http GET "/v1/videos?limit=1&order=asc&after=$ID1"
[ "$(jq_body 'b["first_id"], b["has_more"]')" = "$ID2 False" ] || fail "page 2: $(cat "$T/body")"
http GET '/v1/videos'
[ "$(jq_body '" ".join(d["id"] for d in b["data"])')" = "$ID2 $ID1" ] || fail "default order is newest first: $(cat "$T/body")"
pass "list paging"

# ---- cancel a running job ----
post_json /v1/videos '{"prompt":"a long one","num_frames":5,"size":"32x32","num_inference_steps":100}'
[ "$STATUS" = 200 ] || fail "create 3: $STATUS"
ID3=$(jq_body 'b["id"]')
for i in $(seq 1 600); do
    http GET "/v1/videos/$ID3"
    [ "$(jq_body 'b["status"]')" = in_progress ] && break
    sleep 0.1
done
http POST "/v1/videos/$ID3/cancel"
[ "$STATUS" = 200 ] || fail "cancel: $STATUS $(cat "$T/body")"
for i in $(seq 1 600); do
    http GET "/v1/videos/$ID3"
    [ "$(jq_body 'b["status"]')" = failed ] && break
    sleep 0.1
done
[ "$(jq_body 'b["status"], b["error"]["code"], b["progress"] < 100')" = "failed cancelled True" ] || fail "cancelled job: $(cat "$T/body")"
pass "cancel -> failed/cancelled"

# ---- delete ----
[ -f "$DATA/videos/$ID2.mp4" ] || fail "no file for $ID2"
http DELETE "/v1/videos/$ID2"
[ "$STATUS" = 200 ] || fail "delete: $STATUS"
[ "$(jq_body 'sorted(b.items()) == sorted({"id": sys.argv[0] and b["id"], "object": "video.deleted", "deleted": True}.items()), b["id"]')" = "True $ID2" ] ||
    fail "delete body: $(cat "$T/body")"
[ ! -e "$DATA/videos/$ID2.mp4" ] && [ ! -e "$DATA/videos/$ID2.png" ] || fail "files of $ID2 remain"
http GET "/v1/videos/$ID2"
expect_error "retrieve after delete" 404
http DELETE "/v1/videos/$ID2"
expect_error "second delete" 404
pass "delete"

# ---- a full queue, then SIGTERM with jobs queued (jobs of about a second each, so the queue outlasts
# the 0.3 s before the readiness check and the 1 s drain) ----
accepted=()
saw429=0
for i in $(seq 1 8); do
    post_json /v1/videos "{\"prompt\":\"queued $i\",\"num_frames\":9,\"size\":\"64x64\",\"num_inference_steps\":100,\"seed\":$i}"
    if [ "$STATUS" = 200 ]; then
        accepted+=("$(jq_body 'b["id"]')")
    elif [ "$STATUS" = 429 ]; then
        expect_error "queue full" 429
        [ "$(header_of Retry-After)" -ge 1 ] || fail "429 without Retry-After"
        saw429=1
        break
    else
        fail "create while queueing: $STATUS"
    fi
done
[ "$saw429" = 1 ] || fail "a queue of capacity 2 never answered 429"
[ "${#accepted[@]}" -ge 2 ] || fail "only ${#accepted[@]} jobs accepted"
kill -TERM "$DAEMON_PID"
sleep 0.3
http GET /health/ready
[ "$STATUS" = 503 ] && [ "$(jq_body 'b["status"]')" = draining ] || fail "readiness while draining: $STATUS $(cat "$T/body")"
post_json /v1/videos '{"prompt":"too late"}'
expect_error "create while draining" 503
[ -n "$(header_of Retry-After)" ] || fail "503 without Retry-After"
wait "$DAEMON_PID"
rc=$?
[ "$rc" = 0 ] || fail "pipeditd exited with $rc after SIGTERM"
grep -q "unfinished job(s) journaled" "$T/a.log" || fail "no shutdown summary"
pgrep -f "pipedit worker" -s "$DAEMON_PID" >/dev/null && fail "workers outlived the daemon"
left=$(grep -o 'stopped; [0-9]* unfinished' "$T/a.log" | grep -o '[0-9]*')
[ "${left:-0}" -ge 1 ] || fail "every queued job finished within the 1 s drain: nothing left to test the restart with"
pass "SIGTERM: drained for 1 s, exit 0, $left of ${#accepted[@]} queued jobs left for the next start"

# ---- a bad profile stops the start; restart on the same data folder with a profile file (outputs
# finished from now on expire after 3 s) ----
rc=0
"$PIPEDIT_BIN/pipeditd" --data-dir "$T/bad" --profile "$T/none.json" >"$T/bad.log" 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q "profile: neither a built-in profile" "$T/bad.log" || fail "--profile none.json: rc $rc, $(cat "$T/bad.log")"
cat >"$T/prof.json" <<'JSON'
{"name": "flow-profile", "source": "test", "gemm_bf16_flops": 2e10, "gemm_f32_flops": 4e10, "attn_flops": 1.5e10,
 "mem_bw_bytes": 2e10, "conv_flops": 5e10, "mem_bytes": 8e9, "eltwise_passes": 92, "act_bytes": 4, "topology": "shm",
 "a2a": {"bw_bytes": 1.5e9, "latency_s": 2e-5}, "p2p": {"bw_bytes": 5e9, "latency_s": 1e-5}}
JSON
start_daemon "$T/b.log" "${FLAGS[@]}" --output-ttl-s 3 --profile "$T/prof.json"
grep -q "plan (profile flow-profile, model tiny.*rev 1: 1 denoise + 1 decode workers" "$T/b.log" ||
    fail "the profile's plan is not in the log: $(grep -m3 'plan' "$T/b.log")"
http GET /metrics
grep -q '^pipedit_plan_info{profile="flow-profile",source="cost_model"} 1$' "$T/body" || fail "plan_info: $(grep plan_info "$T/body")"
pass "--profile FILE: the plan made with it is logged and in /metrics; a missing file stops the start"
http GET "/v1/videos/$ID1"
[ "$(jq_body 'b["status"], b["progress"], b["num_frames"], b["noise"]')" = "completed 100 17 torch-cpu" ] || fail "after restart: $(cat "$T/body")"
curl -s -o "$T/v1b.mp4" "$URL/v1/videos/$ID1/content"
cmp -s "$T/v1b.mp4" "$T/v1.mp4" || fail "the video changed across the restart"
http GET "/v1/videos/$ID3"
[ "$(jq_body 'b["error"]["code"]')" = cancelled ] || fail "cancelled job after restart: $(cat "$T/body")"
http GET "/v1/videos/$ID2"
[ "$STATUS" = 404 ] || fail "deleted job came back: $STATUS"
for id in "${accepted[@]}"; do
    for i in $(seq 1 1800); do
        http GET "/v1/videos/$id"
        st=$(jq_body 'b["status"]')
        [ "$st" = completed ] && break
        [ "$st" = failed ] && fail "$id failed after restart: $(cat "$T/body")"
        sleep 0.1
    done
    [ "$st" = completed ] || fail "$id did not complete after the restart"
    [ "$(ffprobe -v error -count_frames -show_entries stream=nb_read_frames -of csv=p=0 "$DATA/videos/$id.mp4")" = 9 ] || fail "$id: bad MP4"
done
[ "$(grep -c "re-submitted after restart" "$T/b.log")" = "$left" ] || fail "want $left jobs re-submitted"
pass "restart: finished video kept and served, ${#accepted[@]} queued jobs completed"

# ---- expiry: the last job's output goes 3 s after it finished; the older video stays ----
last=${accepted[-1]}
for i in $(seq 1 100); do
    http GET "/v1/videos/$last"
    [ "$STATUS" = 404 ] && break
    sleep 0.1
done
[ "$STATUS" = 404 ] || fail "$last did not expire"
[ ! -e "$DATA/videos/$last.mp4" ] && [ ! -e "$DATA/videos/$last.png" ] || fail "expired files remain"
grep -q "\"op\":\"delete\",\"id\":\"$last\"" "$DATA/journal.jsonl" || fail "expiry not journaled"
http GET "/v1/videos/$ID1"
[ "$STATUS" = 200 ] || fail "$ID1 expired too early"
pass "expiry after the TTL"
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID" || fail "second daemon exit status $?"
echo "PASS test_daemon_flow"
