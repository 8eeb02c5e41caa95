#!/usr/bin/env bash
# The Dockerfile, exercised without Docker (CI has none): lint and structure checks (lint_dockerfile.js),
# the build stage's own RUN line for VARIANT=cpu into a temporary /opt/sdrt (deploy/docker/build.sh: a
# Release build, the binary and its shared libraries), a check that the installed tree needs nothing but
# glibc from the base image, then the final stage's ENTRYPOINT + CMD from that tree with only the image's
# environment, as the image's numeric user (when run as root), the model where the image expects its mount:
# it must serve generations and exit 0 on SIGTERM. Not run here: the base images, apt-get, COPY/USER as
# Docker does them - see docs/DEPLOY.md.
# usage: docker_test.sh REPO_ROOT WORK_DIR LOADTEST CONFORMANCE_DIR
set -euo pipefail
root=$1 work=$2 load=$3 conf=$4
here="$root/tests/deploy"
command -v node >/dev/null || { echo "SKIP: no node (scripts/setup.sh installs it)"; exit 77; }
[ -d "$here/node_modules/dockerfile-utils" ] || { echo "SKIP: run 'npm ci --prefix tests/deploy' (scripts/setup.sh does)"; exit 77; }
[ -d "$conf/tiny-sd15/diffusers" ] || { echo "SKIP: no conformance data at $conf"; exit 77; }
rm -rf "$work/df" "$work/opt" "$work/models" "$work/cache"
mkdir -p "$work"

echo "== lint"
node "$here/lint_dockerfile.js" "$root/Dockerfile" "$root/.dockerignore" "$work/df"
# The build stage's packages (Ubuntu 24.04 names; Debian 12 has the same): installed here, so the build
# below used what the image installs.
pkgs=$(sed -n '/^FROM build-\${VARIANT}/,/^FROM/p' "$root/Dockerfile" | sed -n '/apt-get install/,/rm -rf/p' |
       tr ' \\' '\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vE '^(apt-get|install|rm|update)$')
for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || { echo "the build stage's package $p is not installed here"; exit 1; }; done
echo "build stage packages present: $(echo $pkgs)"

echo "== build stage: $(cat "$work/df/build_run.sh")"
prefix="$work/opt/sdrt"
run=$(sed "s|/opt/sdrt|$prefix|g" "$work/df/build_run.sh")
mapfile -t build_args < "$work/df/build_args.txt"   # the stage's ARGs and their defaults, then the CPU variant
echo "build args: ${build_args[*]} VARIANT=cpu"
(cd "$root" && env "${build_args[@]}" VARIANT=cpu SDRT_IMAGE_BUILD_DIR="$work/build-image" sh -c "$run")

echo "== the installed tree needs only glibc from the base image"
bad=""
while read -r name arrow path _; do
  [ "$arrow" = "=>" ] || continue
  case "$name" in libc.so.*|libm.so.*|libmvec.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*) continue ;; esac
  [ "$path" = "not" ] && { bad+="$name not found"$'\n'; continue; }
  [ "$(dirname "$(readlink -f "$path")")" = "$(readlink -f "$prefix/lib")" ] || bad+="$name => $path"$'\n'
done < <(env -i ldd "$prefix/bin/sdrt")
[ -z "$bad" ] || { echo "libraries from outside $prefix/lib:"; echo "$bad"; exit 1; }
echo "ok: $(ls "$prefix/lib" | wc -l) libraries in $prefix/lib"

echo "== final stage: ENTRYPOINT + CMD"
mkdir -p "$work/models" "$work/cache"
cp -r "$conf/tiny-sd15/diffusers" "$work/models/model"     # the image's /models/model mount
chmod -R a+rX "$work/models" "$work"
mapfile -t cmd < "$work/df/cmd.txt"
args=()
for a in "${cmd[@]}"; do
  case "$a" in
    /models/model) a="$work/models/model" ;;
    7860) a=0 ;;   # any free port
  esac
  args+=("$a")
done
envs=()
while IFS= read -r kv; do envs+=("${kv//\/opt\/sdrt/$prefix}"); done < "$work/df/env.txt"
envs=("${envs[@]//\$\{PATH\}//usr/bin:/bin}")
envs=("${envs[@]//SDRT_HOME=\/cache/SDRT_HOME=$work/cache}")
as_user=()
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
  uid=$(sed -n 's/^USER \([0-9]*\).*/\1/p' "$root/Dockerfile")
  chown -R "$uid" "$work/cache"
  as_user=(setpriv --reuid="$uid" --regid="$uid" --clear-groups)
fi
log="$work/serve.log"
echo "running: ${as_user[*]} env -i ${envs[*]} ${args[*]}"
(cd "$work/cache" && exec "${as_user[@]}" env -i "${envs[@]}" "${args[@]}") 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's|.*http://0.0.0.0:\([0-9]*\)/.*|\1|p' "$log" | head -1)
  [ -n "$port" ] && grep -q "ready" "$log" && break
  kill -0 $pid 2>/dev/null || { echo "the image's command exited:"; cat "$log"; exit 1; }
  sleep 0.2
done
[ -n "$port" ] || { echo "not ready:"; cat "$log"; exit 1; }
"$load" --port "$port" --requests 3 --clients 1
kill -TERM $pid
rc=0
wait $pid || rc=$?
trap - EXIT
grep "sdrt serve:" "$log" | tail -2
[ "$rc" -eq 0 ] || { echo "exit status $rc after SIGTERM"; exit 1; }
echo "docker_test: PASS"
