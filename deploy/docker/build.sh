#!/usr/bin/env bash
# The container image's build step (run by the Dockerfile's build stage; run by tests/deploy/docker_test.sh
# without Docker): builds `sdrt` in Release and installs it into PREFIX as
#   PREFIX/bin/sdrt    with RPATH $ORIGIN/../lib (DT_RPATH, which also serves its libraries' own dependencies)
#   PREFIX/lib/        the shared libraries it needs that the runtime base image does not provide
# (everything ldd resolves except glibc and NVIDIA's CUDA libraries, which the CUDA runtime image has),
# then runs the installed binary once with no environment to show it starts.
# usage: deploy/docker/build.sh PREFIX [SDRT_CUDA=ON|OFF|AUTO] [BUILD_DIR (default $SDRT_IMAGE_BUILD_DIR or build-image)]
set -euo pipefail
prefix=${1:?usage: build.sh PREFIX [ON|OFF|AUTO] [BUILD_DIR]}
cuda=${2:-AUTO}
build=${3:-${SDRT_IMAGE_BUILD_DIR:-build-image}}
case "$cuda" in ON|OFF|AUTO) ;; *) echo "build.sh: SDRT_CUDA must be ON, OFF or AUTO, not '$cuda'" >&2; exit 2 ;; esac

# CUDA architectures: $SDRT_CUDA_ARCHITECTURES (CMake's list, e.g. "86;89;90"), else the project's default (90)
arch=()
[ -n "${SDRT_CUDA_ARCHITECTURES:-}" ] && arch=("-DCMAKE_CUDA_ARCHITECTURES=$SDRT_CUDA_ARCHITECTURES")
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSDRT_CUDA="$cuda" -DSDRT_BUILD_TESTS=OFF "${arch[@]}" \
  '-DCMAKE_BUILD_RPATH=$ORIGIN/../lib' -DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags
cmake --build "$build" --target sdrt

rm -rf "$prefix"
mkdir -p "$prefix/bin" "$prefix/lib"
install -m 0755 "$build/sdrt" "$prefix/bin/sdrt"
strip --strip-unneeded "$prefix/bin/sdrt"
ldd "$prefix/bin/sdrt" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
  case "$name" in
    # glibc (the base image's own) and NVIDIA's libraries (the CUDA runtime image's; the driver's at run time)
    libc.so.*|libm.so.*|libmvec.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*|ld-linux*) continue ;;
    libcuda.so.*|libcudart.so.*|libcublas.so.*|libcublasLt.so.*|libcudnn*.so.*|libnvrtc*.so.*) continue ;;
  esac
  cp -L "$path" "$prefix/lib/$name"
done
readelf -d "$prefix/bin/sdrt" | grep -q 'RPATH.*\$ORIGIN/../lib' || { echo "build.sh: sdrt lacks RPATH \$ORIGIN/../lib" >&2; exit 1; }
env -i "$prefix/bin/sdrt" --version
echo "build.sh: installed into $prefix: bin/sdrt and $(ls "$prefix/lib" | wc -l) libraries ($(du -sh "$prefix" | cut -f1))"
