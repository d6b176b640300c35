#!/usr/bin/env bash
# Black-box checks of pipeditd's gRPC API (proto/pipedit/v1/video.proto, grpc.health.v1) with an
# independent client: Debian's python3-grpcio, with stubs generated here from proto/ by
# python3-grpc-tools. The checks themselves are in grpc_api_check.py. Skips (77) only when this
# pipeditd was built without gRPC.
TEST_NAME=grpc_api
source "$(dirname "$0")/daemon_lib.sh"
source "$(dirname "$0")/grpc_lib.sh"

KEY=test-key-0123456789
GPORT=$(free_port)
start_daemon "$T/daemon.log" --data-dir "$T/data" --api-keys "$KEY" --grpc-port "$GPORT" --queue-capacity 1 --workers 2 \
    --drain-timeout-s 1 --max-steps 100
grep -q "gRPC listening on 127.0.0.1:$GPORT" "$LOG" || fail "no gRPC listener in the log"
wait_ready 120
"$PYTHON" "$(dirname "$0")/grpc_api_check.py" --grpc "127.0.0.1:$GPORT" --http "$URL" --key "$KEY" --gen "$GEN" \
    --pid "$DAEMON_PID" --data "$T/data" || fail "gRPC checks"
wait "$DAEMON_PID"
rc=$?
[ "$rc" = 0 ] || fail "pipeditd exited with $rc after SIGTERM"
if grep -q "ERROR: AddressSanitizer\|ERROR: LeakSanitizer" "$LOG"; then fail "sanitizer report in the daemon log"; fi
pass "pipeditd exited cleanly"
