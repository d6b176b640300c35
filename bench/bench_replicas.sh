#!/usr/bin/env bash
# Replicas on the shared PostgreSQL store (--store) against the local-journal daemon, on one machine
# with the embedded tiny model. What it shows on 2 cores is the store's overhead and that every job
# completes once, not scaling: the replicas, their workers and the database share the same cores.
#   1. Jobs per minute: per configuration (the local daemon; 1, 2 and 3 replicas on one store, each
#      configuration on a fresh database and outputs folder), N jobs are created at once, round-robin
#      over the replicas, alternately the tiny preset's default (128x96, 9 frames, 8 steps) and a small
#      one (64x48, 5 frames, 4 steps); throughput = N / (last completion - first create). Every daemon
#      has 1 worker with 1 CPU thread. Rounds alternate the configurations.
#   2. Store round trips per job: the rise of pipedit_store_queries_total over all replicas during the
#      run, less the bench's own list polls (their cost is measured after the run, the idle rate
#      before it), over N; every other pipedit_store_*_total counter per job likewise (raw). Checks:
#      every job completed, listed as completed by every replica, its video served by every replica,
#      pipedit_store_jobs_taken_total summed over the replicas = N, no stale result.
#   3. Status requests: wrk GET /v1/videos/{id} (64 connections, 10 s, 2 threads, as wrk_get.sh) on the
#      local daemon and on one replica on the store, each with one long job running; round trips per
#      GET from the same counter.
# Writes bench/results/bench_replicas-<machine>-<date>.json. Needs a pipeditd with --store, PostgreSQL's
# server (tests/integration/pg_lib.sh starts a throwaway one: fsync off, so commits cost less than on a
# durable database; the local journal does fsync) and wrk; exits 77 (skipped) without the last two.
#   PIPEDIT_BIN            folder with pipeditd and pipedit (default: build/bin, a release build)
#   PIPEDIT_BENCH_RESULTS  where the result goes (default: bench/results)
#   REPLICAS_JOBS (60, at most 100), REPLICAS_ROUNDS (3), REPLICAS_COUNTS ("1 2 3"; "" = the local daemon only)
#   WRK_DURATION, WRK_CONNECTIONS, WRK_THREADS   override 10 s / 64 / 2 (0 s skips part 3)
#   REPLICAS_NOTE          recorded as config.note (e.g. which build ran)
set -u
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${PIPEDIT_BIN:-$src/build/bin}
results=${PIPEDIT_BENCH_RESULTS:-$src/bench/results}
jobs=${REPLICAS_JOBS:-60}
rounds=${REPLICAS_ROUNDS:-3}
counts=${REPLICAS_COUNTS-1 2 3}
duration=${WRK_DURATION:-10}
conns=${WRK_CONNECTIONS:-64}
threads=${WRK_THREADS:-2}
py=/usr/bin/python3
if [ "$jobs" -lt 2 ] || [ "$jobs" -gt 100 ]; then echo "bench_replicas: REPLICAS_JOBS must be 2-100"; exit 2; fi
[ -x "$bin/pipeditd" ] || { echo "bench_replicas: $bin/pipeditd is not built (make build)"; exit 1; }
"$bin/pipeditd" --help 2>&1 | grep -qE '^ +--store ' ||
    { echo "bench_replicas: $bin/pipeditd has no --store setting (the shared PostgreSQL job store): build one that has it"; exit 1; }
command -v wrk >/dev/null || { echo "bench_replicas: skipped: wrk is not installed (scripts/deps.sh installs it)"; exit 77; }

source "$src/bench/serve_lib.sh"
bench_name=bench_replicas
source "$src/tests/integration/pg_lib.sh"
why=$(pg_available)
[ -z "$why" ] || { echo "bench_replicas: skipped: $why"; exit 77; }
pg_start || die "PostgreSQL did not start"
load0=$(cut -d' ' -f1 /proc/loadavg)

# The same settings for every daemon: one single-threaded worker, room for every job in the queue, and
# admission that lets serve_start's long job in.
common=(--workers 1 --threads-per-worker 1 --queue-capacity 256 --http-threads 2 --max-job-seconds 86400)
urls=()

# start_local TAG: the local-journal daemon; urls=(its url).
start_local() {
    SERVE_DIR=$tmp/$1 serve_daemon bench_replicas "${common[@]}"
    urls=("$url")
}

# start_replicas TAG K: K replicas on a new database (bench_TAG) and a new outputs folder; urls=(theirs).
start_replicas() {
    local tag=$1 k=$2 i
    psql_q "CREATE DATABASE bench_$tag" >/dev/null || die "could not create database bench_$tag"
    urls=()
    for i in $(seq 1 "$k"); do
        SERVE_DIR=$tmp/$tag/r$i serve_daemon bench_replicas "${common[@]}" \
            --store "postgres://pipedit@127.0.0.1:$PG_PORT/bench_$tag" --outputs-dir "$tmp/$tag/outputs" --replica-id "r$i"
        urls+=("$url")
    done
}

# run_jobs TAG STORE: part 1 (and 2 with STORE=1) against urls; writes $tmp/TAG.json.
run_jobs() {
    "$py" - "$1" "$2" "$jobs" "$tmp/$1.json" "${urls[@]}" <<'PY' || die "run $1 failed"
import json, sys, time, urllib.request
tag, store, n, out, urls = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4], sys.argv[5:]
MIX = ({"size": "128x96", "num_frames": 9, "num_inference_steps": 8}, {"size": "64x48", "num_frames": 5, "num_inference_steps": 4})

def req(u, path, body=None):
    r = urllib.request.Request(u + path, data=None if body is None else json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(r, timeout=30) as f:
        return f.status, f.read()

def metrics(u):
    m = {}
    for line in req(u, "/metrics")[1].decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            m[k] = float(v)
    return m

def store_sum(ms):  # every pipedit_store_*_total counter (labels dropped), summed over the replicas
    s = {}
    for m in ms:
        for k, v in m.items():
            k = k.split("{", 1)[0]
            if k.startswith("pipedit_store_") and k.endswith("_total"):
                s[k] = s.get(k, 0.0) + v
    return s

def listed(u):
    return {v["id"]: v for v in json.loads(req(u, "/v1/videos?limit=100")[1])["data"]}

# The idle rate of store round trips (lease renewals, queue checks), over all replicas, once the
# start-up's own queries are over.
time.sleep(3.0 if store else 0.0)
s0, t0 = store_sum(metrics(u) for u in urls), time.monotonic()
time.sleep(3.0 if store else 0.0)
s1, t1 = store_sum(metrics(u) for u in urls), time.monotonic()
idle_rate = (s1.get("pipedit_store_queries_total", 0) - s0.get("pipedit_store_queries_total", 0)) / (t1 - t0)

before = [metrics(u) for u in urls]
t_start = time.monotonic()
ids = []
for i in range(n):
    st, body = req(urls[i % len(urls)], "/v1/videos", dict(MIX[i % 2], prompt="a fox %d" % i, seed=i))
    ids.append(json.loads(body)["id"])
t_created = time.monotonic() - t_start
want, done, polls, t_last = set(ids), {}, 0, time.monotonic()
while len(done) < n:
    vids = listed(urls[0])
    polls += 1
    for i in want:
        v = vids.get(i)
        if v is None:
            continue
        if v["status"] == "failed":
            sys.exit("job %s failed: %s" % (i, v.get("error")))
        if v["status"] == "completed" and i not in done:
            done[i] = time.monotonic() - t_start
            t_last = time.monotonic()
    if time.monotonic() - t_last > 60:
        sys.exit("stalled: %d of %d jobs completed, none in the last 60 s" % (len(done), n))
    time.sleep(0.2)
t_end = max(done.values())
after = [metrics(u) for u in urls]

# Checks: every replica lists every job as completed and serves the last one's video.
for u in urls:
    vids = listed(u)
    missing = [i for i in ids if vids.get(i, {}).get("status") != "completed"]
    if missing:
        sys.exit("%s does not list %d jobs as completed (e.g. %s)" % (u, len(missing), missing[0]))
    st, body = req(u, "/v1/videos/%s/content" % ids[-1])
    if st != 200 or len(body) == 0:
        sys.exit("%s did not serve %s's video" % (u, ids[-1]))

res = {"tag": tag, "replicas": len(urls) if store else 0, "jobs": n, "create_s": t_created, "makespan_s": t_end,
       "jobs_per_min": 60.0 * n / t_end, "polls": polls,
       "completed_by_replica": [a.get('pipedit_jobs_finished_total{status="completed"}', 0) - b.get('pipedit_jobs_finished_total{status="completed"}', 0)
                                for a, b in zip(after, before)]}
if store:
    # The cost of one list poll: 20 of them on an otherwise idle store, less the idle rate.
    q0, t0 = store_sum(metrics(u) for u in urls)["pipedit_store_queries_total"], time.monotonic()
    for _ in range(20):
        listed(urls[0])
    q1, t1 = store_sum(metrics(u) for u in urls)["pipedit_store_queries_total"], time.monotonic()
    per_poll = max(0.0, (q1 - q0 - idle_rate * (t1 - t0)) / 20)
    sb, sa = store_sum(before), store_sum(after)
    delta = {k: sa[k] - sb.get(k, 0) for k in sa}
    res.update(idle_queries_per_s=idle_rate, queries_per_poll=per_poll, store_delta=delta,
               queries_per_job=(delta["pipedit_store_queries_total"] - polls * per_poll) / n,
               queries_per_job_raw=delta["pipedit_store_queries_total"] / n)
    taken = delta.get("pipedit_store_jobs_taken_total")
    if taken is not None and taken != n:
        sys.exit("pipedit_store_jobs_taken_total rose by %g over the replicas, not %d" % (taken, n))
    if delta.get("pipedit_store_stale_results_total", 0) != 0:
        sys.exit("%g results were refused as stale" % delta["pipedit_store_stale_results_total"])
json.dump(res, open(out, "w"))
print("%-8s %7.2f jobs/min  (%d jobs in %.1f s; creates %.2f s%s)" % (
    tag, res["jobs_per_min"], n, t_end, t_created,
    "; %.1f store round trips/job, %.1f raw" % (res["queries_per_job"], res["queries_per_job_raw"]) if store else ""))
PY
}

# store_rows TAG: from the run's database (bench_TAG), the progress writes per job and the completions
# (each job exactly once), read from the table itself; writes $tmp/TAG.rows ("" when the columns are
# not there).
store_rows() {
    psql -X -q -A -t -F ' ' -h 127.0.0.1 -p "$PG_PORT" -U pipedit -d "bench_$1" \
        -c "SELECT count(*), avg(progress_writes), min(completions), max(completions) FROM pipedit_jobs" >"$tmp/$1.rows" 2>/dev/null ||
        { echo "bench_replicas: warning: could not read progress_writes and completions from bench_$1" >&2; : >"$tmp/$1.rows"; }
    read -r n writes cmin cmax <"$tmp/$1.rows" || return 0
    [ "$n" = "$jobs" ] && [ "$cmin" = 1 ] && [ "$cmax" = 1 ] ||
        die "bench_$1 holds $n jobs with $cmin-$cmax completions each, not $jobs jobs completed once"
    echo "$1: $writes progress writes per job, every job completed once"
}

# run_wrk TAG: part 3 against the latest daemon (url, pid): one long job, then wrk; writes $tmp/TAG.json.
run_wrk() {
    local tag=$1 id target
    id=$(curl -s "$url/v1/videos" -H 'Content-Type: application/json' \
        -d '{"prompt":"benchmark load","size":"256x256","num_frames":129,"num_inference_steps":100}' |
        "$py" -c 'import json,sys; print(json.load(sys.stdin)["id"])') || die "create failed"
    target="$url/v1/videos/$id"
    sleep 2 # until a replica has taken it
    curl -s "$url/metrics" >"$tmp/$tag.m0"
    sleep 3
    curl -s "$url/metrics" >"$tmp/$tag.m1"
    wrk -t"$threads" -c"$conns" -d"${duration}s" --latency -s "$src/bench/wrk_get.lua" "$target" >"$tmp/$tag.txt" 2>&1 || die "wrk failed"
    curl -s "$url/metrics" >"$tmp/$tag.m2"
    "$py" - "$tag" "$tmp" "$(curl -s "$target")" <<'PY' || die "wrk run $tag failed"
import json, os, re, sys
tag, tmp, job = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def q(name):
    for line in open(os.path.join(tmp, "%s.%s" % (tag, name))):
        if line.startswith("pipedit_store_queries_total ") or line.startswith("pipedit_store_queries_total{"):
            return float(line.rsplit(" ", 1)[1])
    return None
w = json.loads(re.search(r"^WRK_JSON (.*)$", open(os.path.join(tmp, tag + ".txt")).read(), re.M).group(1))
res = {"requests_per_s": w["requests"] / (w["duration_us"] / 1e6), "p50_ms": w["p50_us"] / 1e3, "p99_ms": w["p99_us"] / 1e3,
       "errors": w["err_connect"] + w["err_read"] + w["err_write"] + w["err_status"] + w["err_timeout"],
       "requests": w["requests"], "job_status_after": job["status"]}
if q("m0") is not None:
    idle = (q("m1") - q("m0")) / 3.0  # the running job's lease renewals and progress writes
    res["queries_per_get"] = (q("m2") - q("m1") - idle * w["duration_us"] / 1e6) / max(w["requests"], 1)
json.dump(res, open(os.path.join(tmp, tag + ".json"), "w"))
print("%-10s %9.0f req/s  p50 %.2f ms  p99 %.2f ms  errors %d%s" % (tag, res["requests_per_s"], res["p50_ms"], res["p99_ms"], res["errors"],
      "  %.2f store round trips/GET" % res["queries_per_get"] if "queries_per_get" in res else ""))
PY
    curl -s -o /dev/null -X DELETE "$target"
}

for r in $(seq 1 "$rounds"); do
    start_local "r$r-local"
    run_jobs "r$r-local" 0
    serve_stop_all
    for k in $counts; do
        start_replicas "r${r}_store$k" "$k"
        run_jobs "r${r}_store$k" 1
        store_rows "r${r}_store$k"
        serve_stop_all
    done
done
if [ "$duration" -gt 0 ]; then
    start_local wrk-local
    run_wrk wrk-local
    serve_stop_all
    start_replicas wrk_store 1
    run_wrk wrk-store
    serve_stop_all
fi

mkdir -p "$results"
"$py" - "$tmp" "$results" "$src" "$jobs" "$rounds" "$duration" "$conns" "$threads" "$load0" "$(cut -d' ' -f1 /proc/loadavg)" \
    "$(psql_q 'SHOW server_version')" $counts <<'PY'
import glob, json, os, statistics, sys
tmp, results, src, jobs, rounds, duration, conns, threads, load0, load1, pg_version = sys.argv[1:12]
counts = [int(k) for k in sys.argv[12:]]
sys.path.insert(0, os.path.join(src, "bench"))
import result_lib
def runs(suffix):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(tmp, "r*%s.json" % suffix)))]
med = lambda xs: round(statistics.median(xs), 4)
figs = []
local = runs("-local")
base = statistics.median(r["jobs_per_min"] for r in local)
figs.append({"name": "local_jobs_per_min", "value": round(base, 4), "unit": "jobs/min"})
for i, r in enumerate(local):
    figs.append({"name": "local_jobs_per_min_round%d" % (i + 1), "value": round(r["jobs_per_min"], 4), "unit": "jobs/min"})
for k in counts:
    rs = runs("_store%d" % k)
    p = "store%d" % k
    jpm = [r["jobs_per_min"] for r in rs]
    figs.append({"name": p + "_jobs_per_min", "value": med(jpm), "unit": "jobs/min"})
    for i, x in enumerate(jpm):
        figs.append({"name": "%s_jobs_per_min_round%d" % (p, i + 1), "value": round(x, 4), "unit": "jobs/min"})
    figs.append({"name": p + "_over_local", "value": round(statistics.median(jpm) / base, 4), "unit": "x"})
    figs.append({"name": p + "_queries_per_job", "value": med([r["queries_per_job"] for r in rs]), "unit": "round trips"})
    figs.append({"name": p + "_queries_per_job_raw", "value": med([r["queries_per_job_raw"] for r in rs]), "unit": "round trips"})
    for key in sorted(rs[-1]["store_delta"]):
        name = key[len("pipedit_store_"):-len("_total")]
        if name != "queries":
            figs.append({"name": "%s_%s_per_job" % (p, name), "value": med([r["store_delta"].get(key, 0) / r["jobs"] for r in rs]),
                         "unit": "count"})
    rows = [open(os.path.join(tmp, "r%d_store%d.rows" % (i + 1, k))).read().split() for i in range(len(rs))]
    if all(rows):
        if "pipedit_store_progress_writes_total" not in rs[-1]["store_delta"]:
            figs.append({"name": p + "_progress_writes_per_job", "value": med([float(x[1]) for x in rows]), "unit": "count"})
        figs.append({"name": p + "_completions_per_job_max", "value": max(int(x[3]) for x in rows), "unit": "count"})
    figs.append({"name": p + "_idle_queries_per_s", "value": med([r["idle_queries_per_s"] for r in rs]), "unit": "round trips/s"})
    figs.append({"name": p + "_queries_per_list_poll", "value": med([r["queries_per_poll"] for r in rs]), "unit": "round trips"})
for tag in ("wrk-local", "wrk-store"):
    path = os.path.join(tmp, tag + ".json")
    if not os.path.exists(path):
        continue
    w, p = json.load(open(path)), tag.replace("-", "_")
    figs += [{"name": p + "_get_requests_per_s", "value": round(w["requests_per_s"], 1), "unit": "req/s"},
             {"name": p + "_get_latency_p50", "value": w["p50_ms"], "unit": "ms"},
             {"name": p + "_get_latency_p99", "value": w["p99_ms"], "unit": "ms"},
             {"name": p + "_get_errors", "value": w["errors"], "unit": "count"}]
    if "queries_per_get" in w:
        figs.append({"name": p + "_queries_per_get", "value": round(w["queries_per_get"], 3), "unit": "round trips"})
if os.path.exists(os.path.join(tmp, "wrk-local.json")) and os.path.exists(os.path.join(tmp, "wrk-store.json")):
    a, b = (json.load(open(os.path.join(tmp, t + ".json")))["requests_per_s"] for t in ("wrk-local", "wrk-store"))
    figs.append({"name": "wrk_store_over_local", "value": round(b / a, 4), "unit": "x"})
dist = "; ".join("%s %s" % (r["tag"], "/".join("%d" % x for x in r["completed_by_replica"])) for r in runs("") if r["replicas"] > 1)
out = result_lib.header("bench_replicas", src)
out.update({
    "config": {"model": "tiny (embedded)", "daemon": "1 worker, 1 CPU thread, queue_capacity 256, http_threads 2",
               "job_mix": "alternately 128x96 9 frames 8 steps and 64x48 5 frames 4 steps (guidance 5)", "jobs_per_run": int(jobs),
               "rounds": int(rounds), "replica_counts": " ".join(map(str, counts)), "store_lease_s": "default",
               "throughput": "N / (last completion - first create), completions seen by polling one replica's list every 0.2 s",
               "store_queries_per_job": "rise of pipedit_store_queries_total over all replicas during the run, less the list polls, / N",
               "postgres": "%s on loopback, same machine, fsync off, synchronous_commit off (tests/integration/pg_lib.sh)" % pg_version,
               "local_journal": "fsync per create and per result (the default)", "wrk": "GET /v1/videos/{id}, %s connections, %s threads, %s s, one long job running" % (conns, threads, duration),
               "completed_by_replica": dist, "host": "2-core Debian 12 VM, shared with other builds and tests", "load_average_at_start": float(load0), "load_average_at_end": float(load1)},
    "figures": figs,
})
if os.environ.get("REPLICAS_NOTE"):
    out["config"]["note"] = os.environ["REPLICAS_NOTE"]
result_lib.write(out, results, width=34)
PY
