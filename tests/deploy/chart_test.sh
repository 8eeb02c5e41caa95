#!/usr/bin/env bash
# The Helm chart (deploy/helm/sdrt), rendered as `helm template` would (helmrender: Go text/template + Sprig,
# Debian's packages; Helm itself is not in Debian) for the default values and each GPU preset, checked
# against the Kubernetes API schemas (validate.js: kubernetes-models from npm, strict about unknown
# fields) and for the values that matter (check_chart.js). Then the checks themselves are shown to catch
# errors: a broken manifest, values the chart's schema refuses, an Ingress without auth.
# usage: chart_test.sh REPO_ROOT WORK_DIR        (exits 77 - skipped - without go, node or the npm modules)
set -euo pipefail
root=$1 work=$2
here="$root/tests/deploy"
chart="$root/deploy/helm/sdrt"
presets="$root/deploy/helm/presets"
for tool in go node; do command -v $tool >/dev/null || { echo "SKIP: no $tool (scripts/setup.sh installs it)"; exit 77; }; done
[ -d "$here/node_modules/kubernetes-models" ] || { echo "SKIP: run 'npm ci --prefix tests/deploy' (scripts/setup.sh does)"; exit 77; }
[ -d /usr/share/gocode/src/github.com/Masterminds/sprig ] || { echo "SKIP: golang-github-masterminds-sprig-dev is not installed"; exit 77; }
mkdir -p "$work"
(cd "$here/helmrender" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$work/gocache" GOFLAGS= go build -o "$work/helmrender" main.go)
render() { "$work/helmrender" --name sd --namespace gen "$@" "$chart"; }

fail=0
check() {  # check NAME EXPECT_JSON RENDER_ARGS...
  local name=$1 want=$2
  shift 2
  echo "== $name"
  render "$@" > "$work/$name.yaml"
  node "$here/validate.js" "$work/$name.yaml" || fail=1
  node "$here/check_chart.js" "$want" < "$work/$name.yaml" || fail=1
}
hub=stable-diffusion-v1-5/stable-diffusion-v1-5
check default "{\"maxBatch\":8,\"gpu\":1,\"hubId\":\"$hub\",\"model\":\"$hub\",\"cacheClaim\":\"sd-sdrt-cache\",\"createsClaim\":true,\"hpa\":true,\"memoryLimit\":\"28Gi\"}"
check gpu-24gb "{\"maxBatch\":16,\"gpu\":1,\"hubId\":\"$hub\",\"model\":\"$hub\",\"cacheClaim\":\"sd-sdrt-cache\",\"createsClaim\":true,\"hpa\":true,\"memoryLimit\":\"56Gi\"}" -f "$presets/gpu-24gb.yaml"
check gpu-80gb "{\"maxBatch\":32,\"gpu\":1,\"hubId\":\"$hub\",\"model\":\"$hub\",\"cacheClaim\":\"sd-sdrt-cache\",\"createsClaim\":true,\"hpa\":true,\"memoryLimit\":\"110Gi\",\"gpuProduct\":\"NVIDIA-H100-80GB-HBM3\"}" -f "$presets/gpu-80gb.yaml"
check volume-ingress '{"maxBatch":8,"gpu":1,"model":"/models/sd15","modelsClaim":"sd-models","cacheClaim":"sdrt-shared-cache","createsClaim":false,"hpa":false,"ingress":true,"authSecret":"sdrt-api-auth"}' -f "$here/values-volume-ingress.yaml"

echo "== the checks catch mistakes"
expect_fail() {  # expect_fail WHAT COMMAND...: the command must fail and say why
  local what=$1
  shift
  if out=$("$@" 2>&1); then echo "NOT CAUGHT: $what"; fail=1; else echo "caught: $what: $(echo "$out" | grep -m1 -iE 'unknown field|must|not allowed|less than|set serve|FAIL' || echo "$out" | tail -1)"; fi
}
sed 's/periodSeconds: 5/periodSecond: 5/' "$work/default.yaml" > "$work/typo.yaml"
expect_fail "a misspelled field (periodSecond)" node "$here/validate.js" "$work/typo.yaml"
sed 's/maxReplicas: 8/maxReplicas: "eight"/' "$work/default.yaml" > "$work/type.yaml"
expect_fail "a wrong type (maxReplicas: \"eight\")" node "$here/validate.js" "$work/type.yaml"
sed 's|path: /health$|path: /healthz|' "$work/default.yaml" > "$work/probe.yaml"
expect_fail "a readiness probe on the wrong path" sh -c "node '$here/check_chart.js' '{\"maxBatch\":8,\"gpu\":1,\"hubId\":\"$hub\",\"cacheClaim\":\"sd-sdrt-cache\",\"createsClaim\":true,\"hpa\":true}' < '$work/probe.yaml'"
printf 'serve:\n  maxbatch: 16\n' > "$work/bad-values.yaml"
expect_fail "a misspelled value (serve.maxbatch)" render -f "$work/bad-values.yaml"
printf 'serve:\n  maxBatch: 500\n' > "$work/big-values.yaml"
expect_fail "an absurd batch (serve.maxBatch 500)" render -f "$work/big-values.yaml"
printf 'ingress:\n  enabled: true\n' > "$work/open-values.yaml"
expect_fail "an Ingress without API auth" render -f "$work/open-values.yaml"
printf 'model:\n  hubId: ""\n' > "$work/nomodel-values.yaml"
expect_fail "no model named" render -f "$work/nomodel-values.yaml"

[ "$fail" -eq 0 ] && echo "chart_test: PASS" || { echo "chart_test: FAIL"; exit 1; }
