#!/usr/bin/env bash
# Load test from a second process: `sdrt serve` on loopback with the tiny conformance model (CPU backend),
# then sdrt_loadtest: 200 requests from 20 concurrent clients, malformed requests interleaved. The queue
# bound (32) is above the client count, so no request may get a 429. Then a burst: 100 clients connect at
# once (past the queue bound: 429s are retried) and every request must still be answered.
set -euo pipefail
SDRT=$1 LOAD=$2 CONF=$3
source "$(dirname "$0")/serve_tiny.sh"
serve_tiny "$SDRT" "$CONF" --max-queue 32 --max-batch 8
"$LOAD" --port "$PORT" --requests 200 --clients 20 --max-429 0
"$LOAD" --port "$PORT" --requests 100 --clients 100 --max-429 100000
