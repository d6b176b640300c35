#!/usr/bin/env bash
# The web page at GET / in a real browser: headless Chromium, driven over its DevTools protocol by
# web_page_check.py on a phone-sized screen, with API keys on. Screenshots go to
# $PIPEDIT_TMP/web_page/ (the build's testtmp/). Skips (77) only when Chromium is not installed.
TEST_NAME=web_page
source "$(dirname "$0")/daemon_lib.sh"

CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROMIUM" ]; then
    echo "skip: Chromium is not installed (scripts/deps.sh installs Debian's chromium package)"
    exit 77
fi
"$PYTHON" -c "import websocket" 2>/dev/null || fail "$PYTHON cannot import websocket (python3-websocket; scripts/deps.sh installs it)"

KEY=test-key-0123456789
start_daemon "$T/daemon.log" --data-dir "$T/data" --api-keys "$KEY" --workers 2
wait_ready 120
http GET /
[ "$STATUS" = 200 ] || fail "GET /: $STATUS"
grep -qi '^Content-Type: text/html' "$T/headers" || fail "GET / is not text/html"
grep -qi "<script src\|<link[^>]*href=\"http\|@import" "$T/body" && fail "the page references external assets"
pass "GET / serves the embedded page"

SHOTS=$TMPROOT/web_page
mkdir -p "$SHOTS"
DEVPORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$PYTHON" "$(dirname "$0")/web_page_check.py" --url "$URL" --key "$KEY" --chromium "$CHROMIUM" --profile "$T/chrome" \
    --port "$DEVPORT" --shots "$SHOTS" || fail "browser checks (chromium log: $T/chrome.log)"
