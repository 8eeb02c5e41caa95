#!/usr/bin/env bash
# Packs the binaries bench/device_run.sh runs into .carry/bin.tar.xz (stripped, xz: about 4 MB for 28 MB),
# from a CUDA build tree (default build-cuda), for the device tool's 64 MiB working-tree limit. BINS: the
# binaries (default sdrt, sdrt_tests, bench_unet_forward, bench_geglu_gemm; any of bench_* built there).
#   cmake --build build-cuda -j2 && bash bench/pack_carry.sh [BUILD_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-cuda}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$root/.carry"
for b in ${BINS:-sdrt sdrt_tests bench_unet_forward bench_geglu_gemm}; do
  src=$build/$b
  [ "$b" = sdrt_tests ] && src=$build/tests/sdrt_tests
  [ -x "$src" ] || { echo "pack_carry: $src not built" >&2; exit 1; }
  strip -o "$tmp/bin/$b" "$src"
done
tar cJf "$root/.carry/bin.tar.xz" -C "$tmp" bin
rm -rf "$root/.carry/bin"  # device_run.sh unpacks the archive where .carry/bin is missing
ls -l "$root/.carry/bin.tar.xz"
