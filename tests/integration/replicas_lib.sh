# Helpers of the replica tests (sourced after daemon_lib.sh and pg_lib.sh, not a test itself): several
# pipeditd replicas on one shared store, kept in the arrays URLS and LOGS (index = replica number, whose
# --replica-id is r<number>), and waits on the store's pipedit_jobs table.
set -u
URLS=()
LOGS=()

# on I: the next requests go to replica I (sets URL and LOG).
on() { URL=${URLS[$1]}; LOG=${LOGS[$1]}; }

# create I BODY: creates a video on replica I (200 or the test fails); sets ID.
create() {
    on "$1"
    post_json /v1/videos "$2"
    [ "$STATUS" = 200 ] || fail "create on r$1: $STATUS $(cat "$T/body")"
    ID=$(jq_body 'b["id"]')
}

# wait_status I ID WANT SECONDS: polls replica I until the job has status WANT (a job that fails
# while something else is awaited fails the test).
wait_status() {
    local i s
    for i in $(seq 1 $(($4 * 5))); do
        on "$1"
        http GET "/v1/videos/$2"
        s=$(jq_body 'b.get("status")' 2>/dev/null)
        [ "$s" = "$3" ] && return 0
        if [ "$3" != failed ] && [ "$s" = failed ]; then fail "$2 failed: $(cat "$T/body")"; fi
        sleep 0.2
    done
    fail "$2 is not $3 after $4 s: $(cat "$T/body")"
}

# wait_running ID: until the store shows the job in progress with some progress (60 s at most);
# prints the number of the replica holding it.
wait_running() {
    local i h p
    for i in $(seq 1 600); do
        read -r h p <<<"$(psql_q "SELECT coalesce(lease_holder, '-') || ' ' || progress FROM pipedit_jobs WHERE id = '$1' AND status = 'in_progress'")"
        if [ -n "$h" ] && [ "${p:-0}" -gt 0 ]; then echo "${h#r}"; return 0; fi
        sleep 0.1
    done
    fail "$1 never ran"
}

# store_wait_running ID: until the store shows job ID in progress with some progress (up to 30 s).
store_wait_running() {
    local i
    for i in $(seq 1 600); do
        [ "$(psql_q "SELECT progress > 0 FROM pipedit_jobs WHERE id = '$1' AND status = 'in_progress'")" = t ] && return 0
        sleep 0.05
    done
}

# store_wait_finished ID TRIES: until job ID is completed or failed in the store (TRIES x 0.2 s).
store_wait_finished() {
    local i s
    for i in $(seq 1 "$2"); do
        s=$(psql_q "SELECT status FROM pipedit_jobs WHERE id = '$1'")
        [ "$s" = completed ] || [ "$s" = failed ] && return 0
        sleep 0.2
    done
}

