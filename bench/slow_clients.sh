#!/usr/bin/env bash
# Slow-client benchmark: pipeditd on loopback (default settings: 512 connections, 20 s header
# deadline) under 1,000 connections that each trickle a header line every 2-3 s, while a probe asks
# GET /health/live on a fresh connection every 0.1 s (bench/slow_clients.py). SLOW_RUNS runs replace
# each connection the server drops at once (at most 1,000 new ones a second: the pressure never lets
# up), then one run opens the 1,000 once and holds them past the header deadline. The figure that
# matters: every probe answered within 1 s throughout. Latency: the worst (max) over all runs, the
# median p99 over the replacing runs; the server's own counts of dropped connections per run (/metrics).
# Writes bench/results/slow_clients-<machine>-<date>.json in bench/common/bench.h's format.
#   PIPEDIT_BIN            folder with pipeditd and pipedit (default: build/bin, a release build)
#   PIPEDIT_BENCH_RESULTS  where the result goes (default: bench/results)
#   SLOW_CONNECTIONS, SLOW_DURATION, SLOW_RUNS   override 1000 / 30 s / 3
set -u
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${PIPEDIT_BIN:-$src/build/bin}
results=${PIPEDIT_BENCH_RESULTS:-$src/bench/results}
conns=${SLOW_CONNECTIONS:-1000}
duration=${SLOW_DURATION:-30}
runs=${SLOW_RUNS:-3}
py=/usr/bin/python3
# One descriptor per connection on both sides, plus the daemon's own.
need=$((conns + 1024))
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$need" ] || ulimit -n "$need" 2>/dev/null ||
    { echo "slow_clients: the open-file limit $(ulimit -n) is below $need (ulimit -Hn is $(ulimit -Hn))"; exit 77; }

source "$src/bench/serve_lib.sh"
serve_daemon slow_clients --workers 1

load=$(cut -d' ' -f1 /proc/loadavg)
# run i: replace mode for i = 1..runs, then one hold mode run (the connections opened once, held
# past the header deadline). The server's drop counters are read after each run.
curl -s "http://127.0.0.1:$port/metrics" >"$tmp/metrics0.txt" || die "metrics"
for r in $(seq 1 $((runs + 1))); do
    mode=replace extra=()
    [ "$r" -gt "$runs" ] && mode=hold extra=(--no-replace)
    "$py" "$src/bench/slow_clients.py" --port "$port" --connections "$conns" --duration "$duration" "${extra[@]}" >"$tmp/run$r.json" ||
        die "slow_clients.py failed (run $r)"
    curl -s "http://127.0.0.1:$port/metrics" >"$tmp/metrics$r.txt" || die "metrics"
    "$py" -c 'import json,sys; r=json.load(open(sys.argv[1])); p=r["probes"]; a=r["attack"]; print("run %s (%s): probes %d/%d ok, max %.1f ms, p99 %.1f ms; attack %d opened, %d dropped, at most %d open" % (sys.argv[2], sys.argv[3], p["ok"], p["sent"], p["latency_ms"]["max"] or -1, p["latency_ms"]["p99"] or -1, a["opened"], a["dropped_by_server"], a["max_open"]))' "$tmp/run$r.json" "$r" "$mode"
done
kill -0 "$pid" 2>/dev/null || die "pipeditd died during the attack"

mkdir -p "$results"
"$py" - "$tmp" "$runs" "$results" "$src" "$conns" "$duration" "$load" <<'PY'
import datetime, json, os, re, statistics, subprocess, sys
tmp, runs, results, src, conns, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
load = float(sys.argv[7])
rs = [json.load(open(os.path.join(tmp, "run%d.json" % i))) for i in range(1, runs + 2)]
def dropped(i):
    """The server's drop counters after run i (0 = before the first)."""
    text = open(os.path.join(tmp, "metrics%d.txt" % i)).read()
    out = {}
    for reason in ("deadline", "evicted", "refused"):
        m = re.search(r'^pipedit_http_connections_dropped_total\{reason="%s"\} (\d+)$' % reason, text, re.M)
        out[reason] = int(m.group(1)) if m else None
    return out
for i, r in enumerate(rs, 1):
    before, after = dropped(i - 1), dropped(i)
    r["mode"] = "replace" if i <= runs else "hold"
    r["server_dropped"] = {k: (after[k] - before[k]) if after[k] is not None and before[k] is not None else None for k in after}
rep, hold = rs[:runs], rs[runs]
sys.path.insert(0, os.path.join(src, "bench"))
import result_lib
def worst(values):
    return None if any(v is None for v in values) else round(max(values), 3)
c0 = rs[0]["config"]
out = result_lib.header("slow_clients", src)
out.update({
    "config": {"attack": "%d connections, a header line every %g-%g s" % (conns, c0["trickle_s"][0], c0["trickle_s"][1]),
               "modes": "%d run(s) replacing each dropped connection (<= %g/s), then 1 run holding the %d opened once" % (
                   runs, c0["open_rate_per_s"], conns),
               "probe": "GET %s on a fresh connection every %g s" % (c0["probe_path"], c0["probe_interval_s"]),
               "duration_s": duration, "server": "defaults: max_connections 512, header_timeout_s 20, http_threads 4",
               "model": "tiny (embedded), idle", "load_average_at_start": load},
    "figures": [
        {"name": "probe_latency_max", "value": worst([r["probes"]["latency_ms"]["max"] for r in rs]), "unit": "ms"},
        {"name": "probe_latency_p99", "value": round(statistics.median(r["probes"]["latency_ms"]["p99"] or 0 for r in rep), 3), "unit": "ms"},
        {"name": "probe_latency_p50", "value": round(statistics.median(r["probes"]["latency_ms"]["p50"] or 0 for r in rep), 3), "unit": "ms"},
        {"name": "probes_sent", "value": sum(r["probes"]["sent"] for r in rs), "unit": "count"},
        {"name": "probes_failed", "value": sum(r["probes"]["failed"] for r in rs), "unit": "count"},
        {"name": "probes_over_1s", "value": sum(r["probes"]["over_limit"] for r in rs), "unit": "count"},
        {"name": "replace_connections_opened", "value": sum(r["attack"]["opened"] for r in rep), "unit": "count"},
        {"name": "replace_connect_failed", "value": sum(r["attack"]["connect_failed"] for r in rep), "unit": "count"},
        {"name": "replace_max_open", "value": max(r["attack"]["max_open"] for r in rep), "unit": "count"},
        {"name": "replace_server_dropped_evicted", "value": sum(r["server_dropped"]["evicted"] or 0 for r in rep), "unit": "count"},
        {"name": "replace_server_dropped_deadline", "value": sum(r["server_dropped"]["deadline"] or 0 for r in rep), "unit": "count"},
        {"name": "replace_server_dropped_refused", "value": sum(r["server_dropped"]["refused"] or 0 for r in rep), "unit": "count"},
        {"name": "hold_probe_latency_max", "value": worst([hold["probes"]["latency_ms"]["max"]]), "unit": "ms"},
        {"name": "hold_connections_opened", "value": hold["attack"]["opened"], "unit": "count"},
        {"name": "hold_server_dropped_evicted", "value": hold["server_dropped"]["evicted"], "unit": "count"},
        {"name": "hold_server_dropped_deadline", "value": hold["server_dropped"]["deadline"], "unit": "count"},
        {"name": "hold_open_at_end", "value": hold["attack"]["open_at_end"], "unit": "count"},
        {"name": "hold_lifetime_max", "value": worst([hold["attack"]["lifetime_s"]["max"]]), "unit": "s"},
    ],
    "runs": rs,
})
result_lib.write(out, results, width=28)
PY
