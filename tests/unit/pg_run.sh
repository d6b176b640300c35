# Runs a test program against a throwaway PostgreSQL server (tests/integration/pg_lib.sh), its URL in
# PIPEDIT_PG_URL; exits 77 (skipped) with the reason when no server can run here.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../integration/pg_lib.sh
source "$here/../integration/pg_lib.sh"
why=$(pg_available)
if [ -n "$why" ]; then
    echo "SKIP: $why"
    exit 77
fi
pg_start || exit 1
PIPEDIT_PG_URL=$PG_URL "$@"
