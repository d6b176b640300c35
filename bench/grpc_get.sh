#!/usr/bin/env bash
# gRPC serving benchmark beside HTTP, in one run on one pipeditd (loopback, embedded tiny model, one long
# job running): wrk measures HTTP GET /v1/videos/{id} and bench_grpc (a load generator on the gRPC C core
# library) measures pipedit.v1.VideoService/GetVideo, both with the same number of connections; then
# bench_grpc opens 1000 WatchVideo streams at once, reads each to its first event and drops them all, five times (GRPC_BENCH_ROUNDS), and records the daemon's RSS.
# Writes bench/results/bench_grpc-<machine>-<date>.json.
#   PIPEDIT_BIN            folder with pipeditd and bench_grpc (default: build/bin, a release build)
#   PIPEDIT_BENCH_RESULTS  where the result goes (default: bench/results)
#   GRPC_BENCH_DURATION, GRPC_BENCH_CONNECTIONS, GRPC_BENCH_WATCHES, GRPC_BENCH_ROUNDS   override 10 s / 16 / 1000 / 5
set -u
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${PIPEDIT_BIN:-$src/build/bin}
results=${PIPEDIT_BENCH_RESULTS:-$src/bench/results}
duration=${GRPC_BENCH_DURATION:-10}
conns=${GRPC_BENCH_CONNECTIONS:-16}
watches=${GRPC_BENCH_WATCHES:-1000}
rounds=${GRPC_BENCH_ROUNDS:-5}
py=/usr/bin/python3
command -v wrk >/dev/null || { echo "grpc_get: wrk is not installed (scripts/deps.sh installs it)"; exit 77; }
[ -x "$bin/bench_grpc" ] || { echo "grpc_get: $bin/bench_grpc is not built (a build with gRPC: make build)"; exit 77; }
gport=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

source "$src/bench/serve_lib.sh"
serve_start grpc_get --grpc-port "$gport" --grpc-threads 2

wrk -t2 -c"$conns" -d"${duration}s" --latency -s "$src/bench/wrk_get.lua" "$target" >"$tmp/wrk.txt" 2>&1 || die "wrk failed"
read -r http_rps http_p50 http_p99 <<<"$(sed -n 's/^WRK_JSON //p' "$tmp/wrk.txt" |
    "$py" -c 'import json,sys; w=json.load(sys.stdin); print(w["requests"]/(w["duration_us"]/1e6), w["p50_us"]/1e3, w["p99_us"]/1e3)')"
echo "grpc_get: HTTP GET: $http_rps req/s, p50 $http_p50 ms, p99 $http_p99 ms over $conns connections"
"$bin/bench_grpc" --target "127.0.0.1:$gport" --id "$id" --pid "$pid" --threads "$conns" --duration "$duration" --watches "$watches" --rounds "$rounds" \
    --http-rps "$http_rps" --http-p50-ms "$http_p50" --http-p99-ms "$http_p99" --http-connections "$conns" --results "$results" ||
    die "bench_grpc failed"
[ "$(curl -s "$target" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["status"])')" = in_progress ] ||
    echo "grpc_get: warning: the background job was not in progress at the end" >&2
