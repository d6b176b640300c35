#!/usr/bin/env bash
# Black-box checks that pipeditd refuses ambiguous HTTP framing instead of guessing, over raw sockets
# (curl will not send most of these): both Content-Length and Transfer-Encoding, conflicting
# Content-Lengths, a Transfer-Encoding other than chunked, an HTTP/1.1 request without Host (or with
# two), a percent-encoded NUL or slash in the path, and a Range whose numbers overflow. Each gets
# 400 (416 for the Range) and creates nothing; the well-formed neighbours of each still work.
TEST_NAME=daemon_framing
source "$(dirname "$0")/daemon_lib.sh"

DATA=$T/data
start_daemon "$T/daemon.log" --data-dir "$DATA" --workers 1
BODY='{"prompt":"a cat","size":"32x32","num_frames":1,"num_inference_steps":1}'
LEN=${#BODY}

journal_lines() { if [ -f "$DATA/journal.jsonl" ]; then wc -l <"$DATA/journal.jsonl"; else echo 0; fi; }
# nothing_created JOBS JOURNAL_LINES WHAT: the job list and the journal are as they were.
nothing_created() {
    http GET /v1/videos
    [ "$STATUS" = 200 ] && [ "$(jq_body 'len(b["data"])')" = "$1" ] || fail "$3: the job list changed: $(head -c 300 "$T/body")"
    [ "$(journal_lines)" = "$2" ] || fail "$3: the journal changed"
    pass "$3 created nothing"
}

# ---- body framing ----
raw_http 'POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n' \
    "$LEN" "$LEN" "$BODY"
expect_error "Content-Length and Transfer-Encoding" 400
raw_http 'POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nContent-Length: 2\r\n\r\n%s' \
    "$LEN" "$BODY"
expect_error "conflicting Content-Lengths" 400
raw_http 'POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: %d\r\n\r\n%s' \
    "$LEN" "$BODY"
expect_error "conflicting Content-Lengths, the short one first" 400
raw_http 'POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip\r\n\r\n%s' "$BODY"
expect_error "Transfer-Encoding gzip" 400
raw_http 'POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n' \
    "$LEN" "$BODY"
expect_error "two Transfer-Encodings" 400
raw_http 'POST /v1/videos HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' "$LEN" "$BODY"
expect_error "HTTP/1.1 create without Host" 400
raw_http 'POST /v1/videos HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' "$LEN" "$BODY"
expect_error "two Host headers" 400
raw_http 'GET /health/live HTTP/1.1\r\n\r\n'
expect_error "HTTP/1.1 GET without Host" 400
raw_http 'GET /health/live HTTP/1.0\r\n\r\n'
[ "$STATUS" = 200 ] || fail "HTTP/1.0 without Host: $STATUS (HTTP/1.0 has no Host requirement)"
pass "HTTP/1.0 without Host -> 200"
nothing_created 0 0 "refused framing"

# ---- the path: %00 and %2F would move the end of the id or a segment boundary ----
UNKNOWN=video_0123456789abcdef0123456789abcdef
for p in "/v1/videos/$UNKNOWN%00" "/v1/videos/$UNKNOWN%00/content" "/v1/videos/${UNKNOWN}%2Fcontent" "/v1/videos/${UNKNOWN}%2fevents" \
    "/v1/videos/..%2F..%2Fjournal.jsonl" "/v1/models/tiny%2F..%2F.."; do
    raw_http 'GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' "$p"
    expect_error "GET $p" 400
done
raw_http 'POST /v1/videos/%s%%2Fcancel HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' "$UNKNOWN"
expect_error "POST {id}%2Fcancel" 400
raw_http 'GET /v1/videos?limit=5&note=a%%2Fb%%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
[ "$STATUS" = 200 ] || fail "%2F and %00 in the query string: $STATUS (only the path is checked)"

# ---- a well-formed request on the same server works, and a video to take Ranges of ----
wait_ready 120
raw_http 'POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "$LEN" "$BODY"
[ "$STATUS" = 200 ] || fail "well-formed create: $STATUS $(head -c 300 "$T/body")"
ID=$(jq_body 'b["id"]')
for i in $(seq 1 600); do
    http GET "/v1/videos/$ID"
    st=$(jq_body 'b["status"]')
    [ "$st" = completed ] && break
    [ "$st" = failed ] && fail "job failed: $(cat "$T/body")"
    sleep 0.2
done
[ "$st" = completed ] || fail "the job did not complete"
pass "well-formed create completed ($ID)"

LINES=$(journal_lines)
# The id with %00 appended would be the id itself once decoded: refused, not served.
raw_http 'GET /v1/videos/%s%%00/content HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' "$ID"
expect_error "GET {real id}%00/content" 400
raw_http 'POST /v1/videos/%s%%2Fcancel HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' "$ID"
expect_error "POST {real id}%2Fcancel" 400

# ---- Range ----
range() { raw_http 'GET /v1/videos/%s/content HTTP/1.1\r\nHost: x\r\nRange: %s\r\nConnection: close\r\n\r\n' "$ID" "$1"; }
SIZE=$(stat -c %s "$DATA/videos/$ID.mp4")
range "bytes=0-9"
[ "$STATUS" = 206 ] && [ "$(stat -c %s "$T/body")" = 10 ] || fail "bytes=0-9: $STATUS, $(stat -c %s "$T/body") bytes"
for r in "bytes=0-99999999999999999999999" "bytes=99999999999999999999999-" "bytes=99999999999999999999999-5" "bytes=-99999999999999999999999" \
    "bytes=18446744073709551616-18446744073709551617" "bytes=$SIZE-"; do
    range "$r"
    [ "$STATUS" = 416 ] || fail "Range $r: $STATUS, want 416"
    [ "$(header_of Content-Range)" = "bytes */$SIZE" ] || fail "Range $r: Content-Range '$(header_of Content-Range)'"
    pass "Range $r -> 416"
done
range "bytes=-18446744073709551615"
[ "$STATUS" = 206 ] && [ "$(stat -c %s "$T/body")" = "$SIZE" ] || fail "a suffix longer than the file (no overflow): $STATUS"
nothing_created 1 "$LINES" "refused paths and Ranges"
echo "PASS test_daemon_framing"
