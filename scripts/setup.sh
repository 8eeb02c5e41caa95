#!/usr/bin/env bash
# Installs the Debian 12 packages sdrt builds and tests with. Idempotent; safe to rerun.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS=(
  build-essential cmake ninja-build pkg-config
  libopenblas-dev          # sgemm under the CPU backend's conv/linear/attention
  nlohmann-json3-dev       # safetensors headers, config.json
  libgtest-dev             # unit and conformance tests
  libcli11-dev             # command line of the sdrt tool
  libpng-dev               # PNG output with the parameters text chunk, init images
  libcurl4-openssl-dev     # model downloads from the hub
  clang libclang-rt-14-dev # libFuzzer target for the safetensors parser
  libcpp-httplib-dev       # sdrt serve (WebUI-compatible HTTP API)
  chromium                 # headless browser test of the web page
  golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev golang-github-xeipuuv-gojsonschema-dev
                           # renders the Helm chart as `helm template` does (Go templates + Sprig) in the tests
)
# Node.js (the Kubernetes schema validator and the Dockerfile linter from npm): Debian's, unless a node
# and npm are already installed from elsewhere.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then PKGS+=(nodejs npm); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi

# npm modules of the deployment tests (tests/deploy/package-lock.json pins them)
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f "$here/tests/deploy/node_modules/.package-lock.json" ] || [ "$here/tests/deploy/package-lock.json" -nt "$here/tests/deploy/node_modules/.package-lock.json" ]; then
  echo "setup: npm ci in tests/deploy"
  npm ci --prefix "$here/tests/deploy" --no-audit --no-fund --loglevel=error
fi
