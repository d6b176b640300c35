#!/usr/bin/env bash
# HTTP serving benchmark: pipeditd on loopback with the embedded tiny model, one long job running,
# wrk hammering GET /v1/videos/{id} (the poll every client does).
#   1. RSS of pipeditd before and after 10,000 GETs (a leak or an unbounded cache shows here);
#   2. 10 s with 64 connections (2 wrk threads): requests/s, p50/p99 latency, errors.
# Writes bench/results/wrk_get-<machine>-<date>.json in bench/common/bench.h's format.
#   PIPEDIT_BIN            folder with pipeditd and pipedit (default: build/bin, a release build)
#   PIPEDIT_BENCH_RESULTS  where the result goes (default: bench/results)
#   WRK_DURATION, WRK_CONNECTIONS, WRK_THREADS   override 10 s / 64 / 2
set -u
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${PIPEDIT_BIN:-$src/build/bin}
results=${PIPEDIT_BENCH_RESULTS:-$src/bench/results}
duration=${WRK_DURATION:-10}
conns=${WRK_CONNECTIONS:-64}
threads=${WRK_THREADS:-2}
py=/usr/bin/python3
command -v wrk >/dev/null || { echo "wrk_get: wrk is not installed (scripts/deps.sh installs it)"; exit 77; }

source "$src/bench/serve_lib.sh"
serve_start wrk_get

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
curl -s -o /dev/null "$target"
rss_before=$(rss_kib)
WRK_LIMIT=10000 wrk -t1 -c8 -d120s -s "$src/bench/wrk_get.lua" "$target" >"$tmp/count.txt" 2>&1 || die "wrk (count) failed"
rss_after=$(rss_kib)
counted=$(sed -n 's/^WRK_JSON //p' "$tmp/count.txt" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
status_during=$(curl -s "$target" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["status"])')

wrk -t"$threads" -c"$conns" -d"${duration}s" --latency -s "$src/bench/wrk_get.lua" "$target" >"$tmp/run.txt" 2>&1 || die "wrk failed"
status_after=$(curl -s "$target" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["status"])')
cat "$tmp/run.txt"
[ "$status_after" = in_progress ] || echo "wrk_get: warning: the background job was $status_after at the end, not in_progress" >&2
curl -s -o /dev/null -X DELETE "$target"

mkdir -p "$results"
"$py" - "$tmp/run.txt" "$results" "$src" "$rss_before" "$rss_after" "$counted" "$duration" "$conns" "$threads" \
    "$status_during" "$status_after" <<'PY'
import datetime, json, os, re, subprocess, sys
run_txt, results, src, rss0, rss1, counted, duration, conns, threads, st_during, st_after = sys.argv[1:]
w = json.loads(re.search(r"^WRK_JSON (.*)$", open(run_txt).read(), re.M).group(1))
errors = w["err_connect"] + w["err_read"] + w["err_write"] + w["err_status"] + w["err_timeout"]
sys.path.insert(0, os.path.join(src, "bench"))
import result_lib
out = result_lib.header("wrk_get", src)
out.update({
    "config": {"route": "GET /v1/videos/{id}", "model": "tiny (embedded)", "connections": int(conns), "wrk_threads": int(threads),
               "duration_s": int(duration), "http_threads": 2, "background_job": "256x256, 129 frames, 100 steps",
               "job_status_during": st_during, "job_status_after": st_after},
    "figures": [
        {"name": "requests_per_s", "value": round(w["requests"] / (w["duration_us"] / 1e6), 1), "unit": "req/s"},
        {"name": "latency_p50", "value": w["p50_us"] / 1000.0, "unit": "ms"},
        {"name": "latency_p99", "value": w["p99_us"] / 1000.0, "unit": "ms"},
        {"name": "latency_max", "value": w["max_us"] / 1000.0, "unit": "ms"},
        {"name": "requests", "value": w["requests"], "unit": "count"},
        {"name": "errors", "value": errors, "unit": "count"},
        {"name": "rss_before_10k", "value": round(int(rss0) / 1024.0, 2), "unit": "MiB"},
        {"name": "rss_after_10k", "value": round(int(rss1) / 1024.0, 2), "unit": "MiB"},
        {"name": "rss_growth_10k", "value": round((int(rss1) - int(rss0)) / 1024.0, 2), "unit": "MiB"},
        {"name": "requests_counted_for_rss", "value": int(counted), "unit": "count"},
    ],
})
result_lib.write(out, results, width=26)
PY
