# Sourced by the serving benchmarks (wrk_get.sh, grpc_get.sh, slow_clients.sh, max_job_refusal.sh,
# bench_aco_daemon.sh, bench_replicas.sh).
# serve_daemon NAME [pipeditd flags...] starts pipeditd (from $bin) on loopback with the embedded tiny
# model and waits until it is ready; its data folder and log are $SERVE_DIR/data and $SERVE_DIR/log
# (SERVE_DIR defaults to tmp, the scratch folder); it sets pid, port and url (SERVE_READY_S, default 60:
# how long readiness may take). serve_stop stops the latest daemon, serve_stop_all every one started.
# serve_start NAME [flags...] does the same with two HTTP threads and then creates one long job that
# keeps the worker busy for the whole run (id, target = $url/v1/videos/$id). The daemons and the folder
# go away on exit. die MESSAGE prints the latest daemon's last log lines and exits 1.
tmp=$(mktemp -d)
pid=""
serve_pids=()
serve_log=$tmp/log
bench_name=serve
# serve_kill PID: SIGTERM, up to 10 s to exit, then SIGKILL for its whole session (its workers).
serve_kill() {
    kill -TERM "$1" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$1" 2>/dev/null
}
serve_stop() {
    local p rest=()
    [ -n "$pid" ] || return 0
    serve_kill "$pid"
    for p in ${serve_pids[@]+"${serve_pids[@]}"}; do [ "$p" = "$pid" ] || rest+=("$p"); done
    serve_pids=(${rest[@]+"${rest[@]}"})
    pid=""
}
serve_stop_all() {
    local p
    for p in ${serve_pids[@]+"${serve_pids[@]}"}; do serve_kill "$p"; done
    serve_pids=()
    pid=""
}
cleanup() { serve_stop_all; rm -rf "$tmp"; }
trap cleanup EXIT
die() { echo "$bench_name: $*" >&2; [ -f "$serve_log" ] && tail -n 20 "$serve_log" >&2; exit 1; }

serve_daemon() {
    bench_name=$1
    shift
    local dir=${SERVE_DIR:-$tmp}
    [ -x "$bin/pipeditd" ] || die "$bin/pipeditd is not built (make build)"
    mkdir -p "$dir"
    serve_log=$dir/log
    setsid "$bin/pipeditd" --host 127.0.0.1 --port 0 --data-dir "$dir/data" --drain-timeout-s 0 "$@" >"$serve_log" 2>&1 &
    pid=$!
    serve_pids+=("$pid")
    port=""
    for _ in $(seq 1 300); do
        port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$serve_log" | head -n 1)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || die "pipeditd exited"
        sleep 0.1
    done
    [ -n "$port" ] || die "pipeditd is not listening"
    url="http://127.0.0.1:$port"
    for _ in $(seq 1 $((${SERVE_READY_S:-60} * 10))); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health/ready")" = 200 ] && break
        sleep 0.1
    done
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health/ready")" = 200 ] || die "not ready"
}

serve_start() {
    local name=$1
    shift
    # The long job below is meant to outlast the run: admission must not refuse it by its estimate.
    serve_daemon "$name" --http-threads 2 --max-job-seconds 86400 "$@"
    id=$(curl -s "$url/v1/videos" -H 'Content-Type: application/json' \
        -d '{"prompt":"benchmark load","size":"256x256","num_frames":129,"num_inference_steps":100}' |
        "$py" -c 'import json,sys; print(json.load(sys.stdin)["id"])') || die "create failed"
    target="$url/v1/videos/$id"
}
