#!/usr/bin/env bash
# Aco end to end: a stream of attention-heavy requests through pipeditd with 1 denoise + 1 decode
# worker (one CPU thread each), with Aco off and on (auto, and optionally on), alternating rounds.
# The model is `pipedit mkmodel --preset attn-bench` (dim 512, 8 heads x 64, 2 layers, ffn 1024; the
# tiny text encoder and VAE); each request is its default: one 1536x1376 frame (8256 tokens), 4 steps,
# no CFG. Per round, N requests are queued at once; the throughput is (N - 1) jobs over the time from
# the first completion to the last (the pipeline is full then), in jobs per minute. From /metrics:
# the lent share, lends, declines, and the decode start delay (from a decode's ASSIGN reaching its
# worker to the decode starting: the back-off, at most the one lend in progress) against one lend's
# work (the helpers' attention time per lend).
# Back-off round (ACO_BACKOFF_JOBS, default 4; 0 skips it): 2 denoise + 1 decode worker with --aco on,
# 1024x1024 requests (4096 tokens), alternately 6 and 1 steps: the decode worker helps the denoise
# worker with a long job while the other's short job finishes and its latent arrives, so decodes land
# mid-session; the figures are the decode start delays (max, mean) against the longest lend (one
# block's lent work) and the declines.
# Writes bench/results/bench_aco_daemon-<machine>-<date>.json; with ACO_ROUNDS=0 (the back-off round
# only) bench/results/bench_aco_backoff-<machine>-<date>.json.
#   PIPEDIT_BIN            folder with pipeditd and pipedit (default: build/bin, a release build)
#   PIPEDIT_BENCH_RESULTS  where the result goes (default: bench/results)
#   ACO_JOBS (6), ACO_ROUNDS (2), ACO_MODES ("off auto"), ACO_STEPS (4), ACO_BACKOFF_JOBS (4)
set -u
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${PIPEDIT_BIN:-$src/build/bin}
results=${PIPEDIT_BENCH_RESULTS:-$src/bench/results}
jobs=${ACO_JOBS:-6}
rounds=${ACO_ROUNDS:-2}
modes=${ACO_MODES:-off auto}
steps=${ACO_STEPS:-4}
backoff_jobs=${ACO_BACKOFF_JOBS:-4}
py=/usr/bin/python3
[ -x "$bin/pipeditd" ] || { echo "bench_aco_daemon: $bin/pipeditd is not built (make build)"; exit 1; }

source "$src/bench/serve_lib.sh"
bench_name=bench_aco_daemon

"$bin/pipedit" mkmodel --preset attn-bench --out "$tmp/model" >/dev/null || die "mkmodel failed"
load0=$(cut -d' ' -f1 /proc/loadavg)

# run_round MODE TAG WORKERS JOBS EXTRA_JSON [EXTRA_JSON_EVEN]: one daemon (WORKERS - 1 denoise + 1
# decode), JOBS queued requests (EXTRA_JSON: more request fields; the even-numbered ones take
# EXTRA_JSON_EVEN when given); writes $tmp/TAG.json.
run_round() {
    local mode=$1 tag=$2 workers=$3 n=$4 extra=$5 extra_even=${6:-$5} i x
    rm -rf "$tmp/data" # a fresh data folder per round
    SERVE_READY_S=300 serve_daemon bench_aco_daemon --model "$tmp/model" --workers "$workers" --decode-workers 1 \
        --threads-per-worker 1 --aco "$mode" --max-width 1536 --max-height 1536 --max-steps 100 --queue-capacity 64 \
        --worker-timeout-s 600
    for i in $(seq 1 "$n"); do
        x=$extra
        [ $((i % 2)) -eq 0 ] && x=$extra_even
        curl -s "$url/v1/videos" -H 'Content-Type: application/json' \
            -d "{\"prompt\":\"a fox $i\",\"seed\":$i$x}" >/dev/null || die "create failed"
    done
    "$py" - "$url" "$n" "$tmp/$tag.json" "$mode" <<'PY' || die "round $tag failed"
import json, sys, time, urllib.request
url, n, out, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
done, t0 = {}, time.monotonic()
while len(done) < n:
    vids = json.load(urllib.request.urlopen(url + "/v1/videos?limit=100"))["data"]
    for v in vids:
        if v["status"] == "failed":
            sys.exit("job %s failed: %s" % (v["id"], v["error"]))
        if v["status"] == "completed" and v["id"] not in done:
            done[v["id"]] = time.monotonic() - t0
    if time.monotonic() - t0 > 3600:
        sys.exit("timed out")
    time.sleep(0.25)
t = sorted(done.values())
m = {}
for line in urllib.request.urlopen(url + "/metrics").read().decode().splitlines():
    if line and not line.startswith("#"):
        k, v = line.rsplit(" ", 1)
        m[k] = float(v)
json.dump({"mode": mode, "completions_s": t, "jobs_per_min": 60.0 * (n - 1) / (t[-1] - t[0]),
           "metrics": {k: v for k, v in m.items() if "aco" in k or "decode_start" in k or "stage_duration_seconds_sum" in k
                       or "stage_duration_seconds_count" in k}}, open(out, "w"))
print("%-5s %.3f jobs/min (completions %s)" % (mode, 60.0 * (n - 1) / (t[-1] - t[0]), ", ".join("%.1f" % x for x in t)))
PY
    serve_stop
}

for r in $(seq 1 "$rounds"); do
    for mode in $modes; do run_round "$mode" "r$r-$mode" 2 "$jobs" ",\"num_inference_steps\":$steps"; done
done
if [ "$backoff_jobs" -gt 0 ]; then
    run_round on backoff 3 "$backoff_jobs" ',"num_inference_steps":6,"size":"1024x1024"' \
        ',"num_inference_steps":1,"size":"1024x1024"'
fi

mkdir -p "$results"
"$py" - "$tmp" "$results" "$src" "$jobs" "$rounds" "$steps" "$load0" "$(cut -d' ' -f1 /proc/loadavg)" "$backoff_jobs" \
    $modes <<'PY'
import datetime, glob, json, os, statistics, subprocess, sys
tmp, results, src, jobs, rounds, steps, load0, load1, backoff_jobs = sys.argv[1:10]
modes = sys.argv[10:]
runs = {m: [json.load(open(p)) for p in sorted(glob.glob(os.path.join(tmp, "r*-%s.json" % m)))] for m in modes}
modes = [m for m in modes if runs[m]]  # none with ACO_ROUNDS=0
sys.path.insert(0, os.path.join(src, "bench"))
import result_lib
figs = []
for m in modes:
    jpm = [r["jobs_per_min"] for r in runs[m]]
    figs.append({"name": "%s_jobs_per_min" % m, "value": round(statistics.median(jpm), 4), "unit": "jobs/min"})
    for i, x in enumerate(jpm):
        figs.append({"name": "%s_jobs_per_min_round%d" % (m, i + 1), "value": round(x, 4), "unit": "jobs/min"})
    met = runs[m][-1]["metrics"]
    if m != "off":
        lends = max(met.get("pipedit_aco_helper_lends_total", 0), 1)
        figs += [
            {"name": "%s_lent_share" % m, "value": met.get("pipedit_aco_lent_share", 0), "unit": "fraction"},
            {"name": "%s_lends" % m, "value": met.get("pipedit_aco_lends_total", 0), "unit": "count"},
            {"name": "%s_declines" % m, "value": met.get("pipedit_aco_declines_total", 0), "unit": "count"},
            {"name": "%s_lend_work" % m, "value": round(1e3 * met.get("pipedit_aco_helper_compute_seconds_total", 0) / lends, 3),
             "unit": "ms"},
        ]
    cnt = max(met.get("pipedit_decode_start_delay_seconds_count", 0), 1)
    figs += [
        {"name": "%s_decode_start_delay_max" % m, "value": round(1e3 * met.get("pipedit_decode_start_delay_seconds_max", 0), 3), "unit": "ms"},
        {"name": "%s_decode_start_delay_mean" % m, "value": round(1e3 * met.get("pipedit_decode_start_delay_seconds_sum", 0) / cnt, 3), "unit": "ms"},
    ]
    for st in ("denoise", "decode"):
        s = met.get('pipedit_stage_duration_seconds_sum{stage="%s"}' % st, 0)
        c = max(met.get('pipedit_stage_duration_seconds_count{stage="%s"}' % st, 0), 1)
        figs.append({"name": "%s_%s_stage_mean" % (m, st), "value": round(s / c, 3), "unit": "s"})
base = statistics.median(r["jobs_per_min"] for r in runs["off"]) if runs.get("off") else None
for m in modes:
    if m != "off" and base:
        figs.append({"name": "%s_throughput_ratio" % m, "value": round(statistics.median(r["jobs_per_min"] for r in runs[m]) / base, 4),
                     "unit": "x"})
if int(backoff_jobs) > 0:
    met = json.load(open(os.path.join(tmp, "backoff.json")))["metrics"]
    cnt = max(met.get("pipedit_decode_start_delay_seconds_count", 0), 1)
    lends = max(met.get("pipedit_aco_helper_lends_total", 0), 1)
    figs += [
        {"name": "backoff_decodes", "value": met.get("pipedit_decode_start_delay_seconds_count", 0), "unit": "count"},
        {"name": "backoff_declines", "value": met.get("pipedit_aco_declines_total", 0), "unit": "count"},
        {"name": "backoff_decode_start_delay_max", "value": round(1e3 * met.get("pipedit_decode_start_delay_seconds_max", 0), 3), "unit": "ms"},
        {"name": "backoff_decode_start_delay_mean", "value": round(1e3 * met.get("pipedit_decode_start_delay_seconds_sum", 0) / cnt, 3), "unit": "ms"},
        {"name": "backoff_lend_work_mean", "value": round(1e3 * met.get("pipedit_aco_helper_compute_seconds_total", 0) / lends, 3), "unit": "ms"},
        {"name": "backoff_lend_work_max", "value": round(1e3 * met.get("pipedit_aco_helper_lend_seconds_max", 0), 3), "unit": "ms"},
    ]
out = result_lib.header("bench_aco_daemon" if int(rounds) > 0 else "bench_aco_backoff", src)
out.update({
    "config": {"model": "attn-bench (dim 512, 8x64 heads, 2 layers, ffn 1024; tiny text encoder and VAE)",
               "request": "1536x1376, 1 frame (8256 tokens), %s steps, guidance 1" % steps, "workers": "1 denoise + 1 decode",
               "threads_per_worker": 1, "jobs_per_round": int(jobs), "rounds": int(rounds), "modes": " ".join(modes),
               "backoff_round": "2 denoise + 1 decode worker, --aco on, %s jobs of 1024x1024 (4096 tokens), alternately 6 and 1 steps" % backoff_jobs,
               "throughput": "(N - 1) jobs / (last completion - first completion)",
               "load_average_at_start": float(load0), "load_average_at_end": float(load1)},
    "figures": figs,
})
result_lib.write(out, results, width=34)
PY
