#!/usr/bin/env bash
# The web page in headless Chromium: `sdrt serve` with the tiny conformance model (CPU backend), the page
# opened with ?...&autorun=1 (fills the form and presses Generate), then the DOM is checked for progress
# seen during sampling and the finished image with its parameters; a screenshot is left in the build
# folder (browser_test.png) to look at.
set -euo pipefail
SDRT=$1 CONF=$2 SHOT=$3
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$CHROME" ]; then echo "SKIP: no chromium (scripts/setup.sh installs it)"; exit 77; fi
source "$(dirname "$0")/serve_tiny.sh"
serve_tiny "$SDRT" "$CONF"
DOM="$(dirname "$SHOT")/browser_test_dom.html"
URL="http://127.0.0.1:$PORT/?prompt=a%20red%20cube%20on%20a%20table&steps=20&width=128&height=128&seed=3&autorun=1"
FLAGS=(--headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,800 --virtual-time-budget=30000)
timeout 180 "$CHROME" "${FLAGS[@]}" --dump-dom "$URL" >"$DOM" 2>/dev/null
fail() { echo "FAIL: $1"; echo "--- status: $(grep -o 'id="status">[^<]*' "$DOM")"; exit 1; }
grep -q 'id="status">done: 1 image' "$DOM" || fail "the page did not report a finished image"
grep -q '<figure><img src="data:image/png;base64,' "$DOM" || fail "no image in the gallery"
grep -q 'Steps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 3, Size: 128x128' "$DOM" || fail "the image's parameters are not shown"
STEPS=$(grep -c '^step [0-9]* / 20$\|>step [0-9]* / 20$' "$DOM" || true)
[ "$STEPS" -ge 1 ] || fail "no progress was seen while sampling"
echo "page: finished image with its parameters; $STEPS progress updates seen"
timeout 180 "$CHROME" "${FLAGS[@]}" --screenshot="$SHOT" "$URL" >/dev/null 2>&1
[ -s "$SHOT" ] || fail "no screenshot"
echo "screenshot: $SHOT"
