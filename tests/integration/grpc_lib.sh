# Helpers for the gRPC tests (sourced after daemon_lib.sh): skip (77) when pipeditd has no gRPC
# server, check the Python client packages, generate stubs from proto/ into $GEN, and pick free ports.
: "${PIPEDIT_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
if ! grep -qa "gRPC listening on" "$PIPEDIT_BIN/pipeditd"; then
    echo "skip: this pipeditd was built without gRPC (libgrpc-dev, libprotobuf-c-dev, protobuf-c-compiler; scripts/deps.sh installs them)"
    exit 77
fi
"$PYTHON" -c "import grpc, grpc_tools.protoc" 2>/dev/null ||
    fail "$PYTHON cannot import grpc and grpc_tools (python3-grpcio, python3-grpc-tools; scripts/deps.sh installs them)"

# Stubs from the public .proto files. The health proto goes under grpc_health/ so its Python package
# does not shadow grpcio's own 'grpc' package (the wire name stays grpc.health.v1.Health).
GEN=$T/gen
mkdir -p "$GEN" "$T/protos/grpc_health/v1"
cp "$PIPEDIT_SRC/proto/grpc/health/v1/health.proto" "$T/protos/grpc_health/v1/"
"$PYTHON" -m grpc_tools.protoc -I "$PIPEDIT_SRC/proto" -I "$T/protos" --python_out="$GEN" --grpc_python_out="$GEN" \
    "$PIPEDIT_SRC/proto/pipedit/v1/video.proto" "$T/protos/grpc_health/v1/health.proto" || fail "grpc_tools.protoc"

# free_port: a TCP port nobody listens on right now.
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
