#!/usr/bin/env bash
# Admission by cost on the embedded tiny model: pipeditd (one worker, default max_job_seconds) is sent
# the largest request its static limits allow (1280x1280, 129 frames, 100 steps). It must refuse it
# with 400 job_too_large giving the estimate and the limit, and create nothing. Then one default-sized
# job runs to completion so the record also shows how its estimate compared with its real time.
# Writes bench/results/max_job_refusal-<machine>-<date>.json (DESIGN.md section 10): the request, the
# answer's status and body, the estimate and the limit parsed from it, and the small job's figures.
#   PIPEDIT_BIN            folder with pipeditd and pipedit (default: build/bin, a release build)
#   PIPEDIT_BENCH_RESULTS  where the result goes (default: bench/results)
set -u
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${PIPEDIT_BIN:-$src/build/bin}
results=${PIPEDIT_BENCH_RESULTS:-$src/bench/results}
py=/usr/bin/python3

source "$src/bench/serve_lib.sh"
serve_daemon max_job_refusal --workers 1

max='{"prompt":"everything at once","size":"1280x1280","num_frames":129,"num_inference_steps":100}'
curl -s -o "$tmp/refusal.json" -w '%{http_code} %{time_total}\n' "$url/v1/videos" -H 'Content-Type: application/json' \
    -d "$max" >"$tmp/refusal.status" || die "the max request got no answer"
videos_after=$(curl -s "$url/v1/videos" | "$py" -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))')

small='{"prompt":"a default-sized job","seed":5}'
t_small0=$(date +%s.%N)
curl -s -o "$tmp/small.json" "$url/v1/videos" -H 'Content-Type: application/json' -d "$small" || die "small create failed"
id=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$tmp/small.json") || die "small create: $(cat "$tmp/small.json")"
for _ in $(seq 1 3000); do
    curl -s "$url/v1/videos/$id" >"$tmp/small_done.json"
    st=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$tmp/small_done.json")
    [ "$st" = completed ] || [ "$st" = failed ] && break
    sleep 0.1
done
t_small1=$(date +%s.%N)
[ "$st" = completed ] || die "the small job ended $st"

mkdir -p "$results"
"$py" - "$tmp" "$results" "$src" "$max" "$small" "$videos_after" "$t_small0" "$t_small1" <<'PY'
import datetime, json, os, re, subprocess, sys
tmp, results, src, max_req, small_req, videos_after, t0, t1 = sys.argv[1:]
code, secs = open(os.path.join(tmp, "refusal.status")).read().split()
body = json.load(open(os.path.join(tmp, "refusal.json")))
msg = body["error"]["message"]
def num(pattern):
    m = re.search(pattern, msg)
    return float(m.group(1)) if m else None
est, limit = num(r"is (\d+) s \("), num(r"max_job_seconds = (\d+) s")
small0 = json.load(open(os.path.join(tmp, "small.json")))
# estimated_completed_at is whole unix seconds (rounded up); the real time is polled every 0.1 s
small_est = round(small0["estimated_completed_at"] - float(t0), 2)
small_real = round(float(t1) - float(t0), 2)
sys.path.insert(0, os.path.join(src, "bench"))
import result_lib
out = result_lib.header("max_job_refusal", src)
out.update({
    "config": {"model": "tiny (embedded)", "workers": 1, "backend": "cpu", "max_job_seconds": "default",
               "rates": "from the worker's warm-up (no job had finished)", "request": max_req,
               "small_request": small_req},
    "request": json.loads(max_req),
    "answer": {"status": int(code), "body": body},
    "figures": [
        {"name": "status", "value": int(code), "unit": "http"},
        {"name": "estimate", "value": est, "unit": "s"},
        {"name": "limit_max_job_seconds", "value": limit, "unit": "s"},
        {"name": "estimate_over_limit", "value": round(est / limit, 1) if est and limit else None, "unit": "x"},
        {"name": "answer_time", "value": round(float(secs) * 1000, 2), "unit": "ms"},
        {"name": "videos_after_refusal", "value": int(videos_after), "unit": "count"},
        {"name": "small_job_estimated", "value": small_est, "unit": "s"},
        {"name": "small_job_real", "value": small_real, "unit": "s"},
    ],
})
result_lib.write(out, results, width=24)
print("  answer %s: %s" % (code, msg))
assert int(code) == 400 and int(videos_after) == 0, "the max request was not refused cleanly"
PY
