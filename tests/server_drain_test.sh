#!/usr/bin/env bash
# Graceful shutdown: `sdrt serve` (tiny model, CPU, one job at a time) takes 6 requests, gets SIGTERM while
# most of them wait in the queue, and must answer every one with its image, refuse new work meanwhile
# (/health and new requests 503), then exit 0.
set -euo pipefail
SDRT=$1 LOAD=$2 CONF=$3
source "$(dirname "$0")/serve_tiny.sh"
serve_tiny "$SDRT" "$CONF" --max-queue 32 --max-batch 1 --drain-timeout 300
"$LOAD" --port "$PORT" --requests 6 --clients 6 --steps 30 --sigterm "$SERVE_PID"
rc=0
wait "$SERVE_PID" || rc=$?
echo "server exit status: $rc"
grep "sdrt serve:" "$SERVE_LOG" | tail -3
[ "$rc" -eq 0 ] && grep -q "every accepted job was answered" "$SERVE_LOG"
