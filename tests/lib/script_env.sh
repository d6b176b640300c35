# Sourced by the script tests (tests/*/test_*.sh) as `source "$(dirname "$0")/../lib/script_env.sh" NAME`:
# strict mode, the variables ctest passes (PIPEDIT_BIN, PYTHON, PIPEDIT_SRC, PIPEDIT_TMP), a scratch
# folder $work (removed at exit), $pd = the pipedit binary, and warnings-only logging.
set -euo pipefail
: "${PIPEDIT_BIN:?}" "${PYTHON:?}" "${PIPEDIT_SRC:?}" "${PIPEDIT_TMP:?}"
mkdir -p "$PIPEDIT_TMP"
work=$(mktemp -d "$PIPEDIT_TMP/$1.XXXXXX")
trap 'rm -rf "$work"' EXIT
pd="$PIPEDIT_BIN/pipedit"
export PIPEDIT_LOG=warn
