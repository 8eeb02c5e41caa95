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
)
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
