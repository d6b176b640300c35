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
    --drain-timeout-s 1 --max-steps 100 --grpc-max-calls 55
grep -q "gRPC listening on 127.0.0.1:$GPORT" "$LOG" || fail "no gRPC listener in the log"
wait_ready 120
# ---- pipedit client --grpc: a C client on the gRPC core library ----
CLI=("$PIPEDIT_BIN/pipedit" client --grpc "127.0.0.1:$GPORT" --api-key "$KEY")
"${CLI[@]}" models >"$T/models.json" || fail "client --grpc models"
"$PYTHON" -c 'import json,sys; assert json.load(open(sys.argv[1]))["data"][0]["id"] == "tiny"' "$T/models.json" || fail "models output"
"${CLI[@]}" create --prompt "a lighthouse at night" --size 64x48 --seconds 1 --steps 4 --seed 3 --wait >"$T/create.json" 2>"$T/wait.txt" ||
    fail "client --grpc create --wait: $(tail -c 300 "$T/wait.txt")"
CID=$("$PYTHON" -c 'import json,sys; v=json.load(open(sys.argv[1])); assert v["seed"] == 3 and v["size"] == "64x48"; print(v["id"])' "$T/create.json") ||
    fail "create output: $(cat "$T/create.json")"
grep -q "completed" "$T/wait.txt" || fail "no completion in the progress output"
"${CLI[@]}" get "$CID" | grep -q '"status": "VIDEO_STATUS_COMPLETED"' || fail "client --grpc get"
"${CLI[@]}" download "$CID" --output "$T/cli.mp4" >/dev/null || fail "client --grpc download"
curl -s -H "Authorization: Bearer $KEY" -o "$T/http.mp4" "$URL/v1/videos/$CID/content"
cmp -s "$T/cli.mp4" "$T/http.mp4" || fail "the gRPC download differs from the HTTP content"
"${CLI[@]}" list --limit 5 | grep -q "$CID" || fail "client --grpc list"
"${CLI[@]}" create --prompt "x" --steps 0 2>"$T/err.txt" && fail "an invalid create succeeded"
grep -q "INVALID_ARGUMENT: num_inference_steps:" "$T/err.txt" || fail "client error output: $(cat "$T/err.txt")"
"${CLI[@]}" delete "$CID" | grep -q '"deleted": true' || fail "client --grpc delete"
"$PIPEDIT_BIN/pipedit" client --grpc "127.0.0.1:$GPORT" models 2>"$T/err.txt" && fail "no key accepted"
grep -q UNAUTHENTICATED "$T/err.txt" || fail "no-key output: $(cat "$T/err.txt")"
pass "pipedit client --grpc: models, create --wait, get, download, list, delete, errors"

"$PYTHON" "$(dirname "$0")/grpc_api_check.py" --grpc "127.0.0.1:$GPORT" --http "$URL" --key "$KEY" --gen "$GEN" \
    --pid "$DAEMON_PID" --data "$T/data" || fail "gRPC checks"
wait "$DAEMON_PID"
rc=$?
[ "$rc" = 0 ] || fail "pipeditd exited with $rc after SIGTERM"
if grep -q "ERROR: AddressSanitizer\|ERROR: LeakSanitizer" "$LOG"; then fail "sanitizer report in the daemon log"; fi
pass "pipeditd exited cleanly"
