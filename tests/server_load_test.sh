#!/usr/bin/env bash
# Load test from a second process: `sdrt serve` on loopback with the tiny conformance model (CPU backend),
# then sdrt_loadtest: 200 requests from 20 concurrent clients, malformed requests interleaved. The queue
# bound (32) is above the client count, so no request may get a 429.
set -euo pipefail
SDRT=$1 LOAD=$2 CONF=$3
M="$CONF/tiny-sd15/diffusers"
if [ ! -d "$M" ]; then echo "SKIP: no conformance data at $CONF"; exit 77; fi
LOG=$(mktemp)
"$SDRT" serve -m "$M" --tokenizer "$M/tokenizer" --backend cpu --port 0 --max-queue 32 --max-batch 8 --no-engine-cache 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
PORT=""
for _ in $(seq 1 100); do
  PORT=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$LOG" | head -1)
  [ -n "$PORT" ] && break
  sleep 0.2
done
[ -n "$PORT" ] || { echo "server did not start:"; cat "$LOG"; exit 1; }
"$LOAD" --port "$PORT" --requests 200 --clients 20 --max-429 0
