#!/usr/bin/env node
// Checks the values that matter in a rendered sdrt chart (YAML on stdin): the GPU request, probes, volumes,
// security contexts, the drain's grace period, and that Service, HPA, PDB and Ingress point at the pods.
// usage: helmrender ... | node check_chart.js '{"maxBatch": 8, "gpu": 1, "hubId": "org/name", ...}'
"use strict";
const fs = require("fs");
const YAML = require("yaml");

const want = JSON.parse(process.argv[2] || "{}");
const objs = YAML.parseAllDocuments(fs.readFileSync(0, "utf8")).map((d) => d.toJS()).filter(Boolean);
const problems = [];
const expect = (ok, what) => { if (!ok) problems.push(what); };
const one = (kind) => {
  const all = objs.filter((o) => o.kind === kind);
  return all.length === 1 ? all[0] : null;
};
const matches = (selector, labels) => Object.entries(selector || {}).every(([k, v]) => labels[k] === v) && Object.keys(selector || {}).length > 0;

const dep = one("Deployment");
expect(dep, "exactly one Deployment");
if (dep) {
  const pod = dep.spec.template.spec;
  const labels = dep.spec.template.metadata.labels;
  expect(matches(dep.spec.selector.matchLabels, labels), "the Deployment's selector matches its pod labels");
  const c = pod.containers.find((x) => x.name === "sdrt");
  expect(c, "a container named sdrt");
  const args = c ? c.args : [];
  const arg = (name) => { const a = args.find((x) => x.startsWith(`--${name}=`)); return a && a.slice(name.length + 3); };
  expect(args[0] === "serve", "the container runs `sdrt serve`");
  expect(arg("host") === "0.0.0.0", "serve listens on all addresses (pod IP)");
  expect(arg("max-batch") === String(want.maxBatch), `--max-batch=${want.maxBatch} (got ${arg("max-batch")})`);
  if (want.model) expect(arg("model") === want.model, `--model=${want.model} (got ${arg("model")})`);
  // GPU
  const limits = (c && c.resources && c.resources.limits) || {};
  expect(limits["nvidia.com/gpu"] === want.gpu, `limits nvidia.com/gpu = ${want.gpu} (got ${limits["nvidia.com/gpu"]})`);
  expect(c && c.resources.requests && c.resources.requests.cpu && c.resources.requests.memory, "CPU and memory requests");
  if (want.memoryLimit) expect(limits.memory === want.memoryLimit, `memory limit ${want.memoryLimit} (got ${limits.memory})`);
  if (want.gpuProduct) expect(pod.nodeSelector && pod.nodeSelector["nvidia.com/gpu.product"] === want.gpuProduct, `nodeSelector nvidia.com/gpu.product=${want.gpuProduct}`);
  else expect(!pod.nodeSelector || !pod.nodeSelector["nvidia.com/gpu.product"], "no GPU product pinned");
  expect((pod.tolerations || []).some((t) => t.key === "nvidia.com/gpu" && t.effect === "NoSchedule"), "tolerates the nvidia.com/gpu taint");
  // probes
  const port = c && c.ports.find((p) => p.name === "http");
  expect(port && port.containerPort === 7860, "container port http = 7860");
  expect(c && c.readinessProbe && c.readinessProbe.httpGet.path === "/health" && c.readinessProbe.httpGet.port === "http", "readiness probe GET /health on http");
  expect(c && c.livenessProbe && c.livenessProbe.httpGet.path === "/health/live" && c.livenessProbe.httpGet.port === "http", "liveness probe GET /health/live on http");
  // security
  const psc = pod.securityContext || {};
  expect(psc.runAsNonRoot === true && psc.runAsUser > 0 && psc.fsGroup > 0, "pod runs as a non-root user with an fsGroup (writable volumes)");
  expect(psc.seccompProfile && psc.seccompProfile.type === "RuntimeDefault", "seccomp RuntimeDefault");
  expect(pod.automountServiceAccountToken === false, "no service account token mounted");
  for (const x of [...pod.containers, ...(pod.initContainers || [])]) {
    const sc = x.securityContext || {};
    expect(sc.readOnlyRootFilesystem === true, `${x.name}: read-only root filesystem`);
    expect(sc.allowPrivilegeEscalation === false, `${x.name}: no privilege escalation`);
    expect(sc.capabilities && (sc.capabilities.drop || []).includes("ALL") && !sc.capabilities.add, `${x.name}: all capabilities dropped`);
    const env = Object.fromEntries((x.env || []).map((e) => [e.name, e]));
    expect(env.SDRT_HOME && env.SDRT_HOME.value === "/cache", `${x.name}: SDRT_HOME=/cache`);
    const mounts = Object.fromEntries((x.volumeMounts || []).map((m) => [m.mountPath, m]));
    expect(mounts["/cache"] && mounts["/cache"].name === "cache", `${x.name}: the cache volume at /cache`);
    expect(mounts["/tmp"], `${x.name}: a writable /tmp`);
  }
  // volumes
  const vols = Object.fromEntries(pod.volumes.map((v) => [v.name, v]));
  if (want.cacheClaim) {
    expect(vols.cache && vols.cache.persistentVolumeClaim && vols.cache.persistentVolumeClaim.claimName === want.cacheClaim, `cache volume from claim ${want.cacheClaim}`);
    const pvc = objs.find((o) => o.kind === "PersistentVolumeClaim" && o.metadata.name === want.cacheClaim);
    if (want.createsClaim) expect(pvc && pvc.spec.accessModes.includes("ReadWriteMany"), "the chart creates the cache claim, ReadWriteMany (shared plans)");
    else expect(!pvc, "no claim created for an existing one");
  } else {
    expect(vols.cache && vols.cache.emptyDir, "cache is an emptyDir without persistence");
  }
  expect(vols.tmp && vols.tmp.emptyDir, "/tmp is an emptyDir");
  const init = (pod.initContainers || []).find((x) => x.name === "pull-model");
  if (want.hubId) expect(init && init.args[0] === "pull" && init.args[1] === want.hubId, `an init container pulls ${want.hubId}`);
  else expect(!init, "no pull init container for a model on a volume");
  if (want.modelsClaim) {
    expect(vols.models && vols.models.persistentVolumeClaim.claimName === want.modelsClaim && vols.models.persistentVolumeClaim.readOnly, `models claim ${want.modelsClaim}, read-only`);
    const m = c.volumeMounts.find((v) => v.name === "models");
    expect(m && m.mountPath === "/models" && m.readOnly === true, "models mounted read-only at /models");
  }
  // graceful shutdown: preStop sleep + the drain must fit in the grace period
  const drain = Number(arg("drain-timeout"));
  const pre = c && c.lifecycle && c.lifecycle.preStop && c.lifecycle.preStop.exec && Number(c.lifecycle.preStop.exec.command[1]);
  expect(c && c.lifecycle.preStop.exec.command[0] === "sleep" && pre >= 0, "a preStop sleep");
  expect(pod.terminationGracePeriodSeconds >= drain + pre + 5, `terminationGracePeriodSeconds (${pod.terminationGracePeriodSeconds}) covers preStop (${pre}) + drain (${drain}) + 5`);
  // auth
  const authEnv = (c.env || []).find((e) => e.name === "SDRT_API_AUTH");
  if (want.authSecret) expect(authEnv && authEnv.valueFrom.secretKeyRef.name === want.authSecret, `SDRT_API_AUTH from secret ${want.authSecret}`);
  else expect(!authEnv, "no auth configured");

  const svc = one("Service");
  expect(svc && matches(svc.spec.selector, labels) && svc.spec.ports[0].targetPort === "http", "the Service selects the pods, targetPort http");
  const hpa = one("HorizontalPodAutoscaler");
  if (want.hpa) {
    expect(hpa && hpa.spec.scaleTargetRef.name === dep.metadata.name && hpa.spec.scaleTargetRef.kind === "Deployment", "the HPA scales the Deployment");
    const ms = (hpa && hpa.spec.metrics) || [];
    expect(ms.some((m) => m.type === "Pods" && m.pods.metric.name === "sdrt_queue_length"), "the HPA scales on sdrt_queue_length per pod");
    expect(ms.some((m) => m.type === "Resource" && m.resource.name === "cpu"), "the HPA falls back to CPU");
    expect(dep.spec.replicas === undefined, "no fixed replicas under an HPA");
  } else {
    expect(!hpa && dep.spec.replicas >= 1, "fixed replicas without an HPA");
  }
  const pdb = one("PodDisruptionBudget");
  expect(pdb && matches(pdb.spec.selector.matchLabels, labels), "a PodDisruptionBudget selects the pods");
  const ing = one("Ingress");
  if (want.ingress) {
    const b = ing && ing.spec.rules[0].http.paths[0].backend.service;
    expect(b && b.name === svc.metadata.name && b.port.name === "http", "the Ingress routes to the Service");
  } else {
    expect(!ing, "no Ingress unless enabled");
  }
}
for (const p of problems) console.log(`FAIL: ${p}`);
console.log(problems.length ? `check_chart: ${problems.length} problems` : `check_chart: ok (${objs.length} objects)`);
process.exit(problems.length ? 1 : 0);
