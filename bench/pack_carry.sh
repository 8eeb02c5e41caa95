#!/usr/bin/env bash
# Packs the binaries bench/device_run.sh runs into .carry/bin.tar.xz (stripped, xz: about 4 MB for 28 MB),
# from a CUDA build tree (default build-cuda), for the device tool's 64 MiB working-tree limit. BINS: the
# binaries (default sdrt, sdrt_tests, bench_unet_forward, bench_geglu_gemm; any of bench_* built there).
# Where missing, it also fills .carry/lib with the shared libraries the GPU host (Ubuntu 24.04) lacks -
# Debian 12's libcpp-httplib.so.0.11, which sdrt and sdrt_tests link - and .carry/conformance with
# ../shared/conformance less randn.safetensors (read only by CPU tests): with it the carried tree is about
# 63 MiB, so a call that needs no conformance data (op tests, benchmarks but `sdrt bench`, which reads only
# its tokenizer folder) carries just .carry/bin.tar.xz and .carry/lib.
#   cmake --build build-cuda -j2 && bash bench/pack_carry.sh [BUILD_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-cuda}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$root/.carry/lib"
for b in ${BINS:-sdrt sdrt_tests bench_unet_forward bench_geglu_gemm}; do
  src=$build/$b
  [ "$b" = sdrt_tests ] && src=$build/tests/sdrt_tests
  [ -x "$src" ] || { echo "pack_carry: $src not built" >&2; exit 1; }
  strip -o "$tmp/bin/$b" "$src"
  # the libraries it links that the GPU host has no version of
  for lib in $(ldd "$src" | awk '/libcpp-httplib/ {print $3}'); do
    [ -e "$root/.carry/lib/$(basename "$lib")" ] || cp -L "$lib" "$root/.carry/lib/"
  done
done
tar cJf "$root/.carry/bin.tar.xz" -C "$tmp" bin
rm -rf "$root/.carry/bin"  # device_run.sh unpacks the archive where .carry/bin is missing
if [ ! -d "$root/.carry/conformance" ] && [ -d "$root/../shared/conformance" ]; then
  cp -r "$root/../shared/conformance" "$root/.carry/conformance"
  rm -f "$root/.carry/conformance/randn.safetensors"
fi
ls -l "$root/.carry/bin.tar.xz"
du -sh "$root/.carry"
