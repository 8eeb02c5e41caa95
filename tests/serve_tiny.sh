# Sourced by the server tests: `serve_tiny SDRT CONF [serve options...]` starts `sdrt serve` on a free
# loopback port with the tiny conformance model (CPU backend), waits until it is ready and sets PORT; the
# server is stopped when the script exits. Exits 77 (skip) without conformance data.
serve_tiny() {
  local sdrt=$1 conf=$2
  shift 2
  local m="$conf/tiny-sd15/diffusers"
  if [ ! -d "$m" ]; then echo "SKIP: no conformance data at $conf"; exit 77; fi
  SERVE_LOG=$(mktemp)
  "$sdrt" serve -m "$m" --tokenizer "$m/tokenizer" --backend cpu --port 0 --no-engine-cache "$@" 2>"$SERVE_LOG" &
  SERVE_PID=$!
  trap 'kill $SERVE_PID 2>/dev/null || true; wait $SERVE_PID 2>/dev/null || true; rm -f "$SERVE_LOG"' EXIT
  PORT=""
  for _ in $(seq 1 150); do
    PORT=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$SERVE_LOG" | head -1)
    [ -n "$PORT" ] && grep -q "ready" "$SERVE_LOG" && return 0
    sleep 0.2
  done
  echo "server did not start:"
  cat "$SERVE_LOG"
  exit 1
}
