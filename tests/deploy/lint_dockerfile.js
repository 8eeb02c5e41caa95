#!/usr/bin/env node
// Lints the Dockerfile (dockerfile-utils, the linter of the VS Code Docker language service, from npm) and
// checks what the image must be: CUDA and CPU variants chosen by ARG VARIANT, pinned base images, a build
// stage that runs deploy/docker/build.sh, a final stage that copies only /opt/sdrt and runs `sdrt serve` as
// a numeric non-root user with SDRT_HOME on a volume, and a .dockerignore that keeps .git and build
// folders out. Writes what the docker test then runs without Docker into OUT_DIR: build_run.sh (the build
// stage's RUN line), build_args.txt (its ARGs with defaults) and cmd.txt (ENTRYPOINT + CMD, one argument per line), env.txt (the final ENV).
// usage: lint_dockerfile.js DOCKERFILE DOCKERIGNORE [OUT_DIR]
"use strict";
const fs = require("fs");
const path = require("path");
const { validate } = require("dockerfile-utils");
const { DockerfileParser } = require("dockerfile-ast");

const [file, ignoreFile, outDir] = process.argv.slice(2);
const text = fs.readFileSync(file, "utf8");
const problems = [];
const expect = (ok, what) => { if (!ok) problems.push(what); };

for (const d of validate(text)) problems.push(`line ${d.range.start.line + 1}: ${d.message} (dockerfile-utils)`);

const df = DockerfileParser.parse(text);
const stages = [];  // {name, from, instructions}
for (const ins of df.getInstructions()) {
  if (ins.getKeyword() === "FROM") stages.push({ name: ins.getBuildStage(), from: ins, ins: [] });
  else if (stages.length) stages[stages.length - 1].ins.push(ins);
}
const byName = Object.fromEntries(stages.filter((s) => s.name).map((s) => [s.name, s]));
const all = df.getInstructions();
const firstFrom = all.findIndex((i) => i.getKeyword() === "FROM");
const args = Object.fromEntries(all.slice(0, firstFrom).filter((i) => i.getKeyword() === "ARG").map((i) => i.getArgumentsContent().split("=")));
expect(args.VARIANT === "cuda", "ARG VARIANT defaults to cuda");
for (const n of ["build-cuda", "build-cpu", "run-cuda", "run-cpu", "build"]) expect(byName[n], `a stage named ${n}`);
for (const s of stages) {
  const img = s.from.getImageName();
  if (img.includes("${VARIANT}")) continue;  // the variant switch between named stages
  const tag = s.from.getImageTag();
  expect(tag && tag !== "latest", `${img}: a pinned tag (got ${tag})`);
}
expect(byName.build && byName.build.from.getImageName() === "build-${VARIANT}", "the build stage starts from build-${VARIANT}");
const buildRun = byName.build ? byName.build.ins.filter((i) => i.getKeyword() === "RUN").map((i) => i.getArgumentsContent()).find((c) => c.includes("deploy/docker/build.sh")) : null;
expect(buildRun, "the build stage runs deploy/docker/build.sh");
const final = stages[stages.length - 1];
expect(final.from.getImageName() === "run-${VARIANT}", "the final stage starts from run-${VARIANT}");
const kw = (k) => final.ins.filter((i) => i.getKeyword() === k);
const copies = kw("COPY").map((i) => `${i.getFlags().map((f) => `--${f.getName()}=${f.getValue()} `).join("")}${i.getArgumentsContent()}`);
expect(copies.length === 1 && copies[0] === "--from=build /opt/sdrt /opt/sdrt", `the final stage copies only /opt/sdrt from the build stage (got ${JSON.stringify(copies)})`);
const user = kw("USER").map((i) => i.getArgumentsContent()).pop() || "";
expect(/^[1-9][0-9]*(:[1-9][0-9]*)?$/.test(user), `a numeric non-root USER (got '${user}'), so runAsNonRoot can verify it`);
const json = (k) => { const i = kw(k).pop(); return i && i.getJSONStrings ? i.getJSONStrings().map((s) => s.getJSONValue()) : null; };
const entry = json("ENTRYPOINT"), cmd = json("CMD");
expect(entry && entry.length === 1 && entry[0] === "sdrt", "ENTRYPOINT [\"sdrt\"] in exec form (signals reach sdrt)");
expect(cmd && cmd[0] === "serve" && cmd.includes("0.0.0.0"), "CMD runs serve on all addresses, in exec form");
expect(kw("EXPOSE").some((i) => i.getArgumentsContent() === "7860"), "EXPOSE 7860");
const env = {};
for (const i of kw("ENV")) for (const p of i.getProperties()) env[p.getName()] = p.getValue();
expect(env.SDRT_HOME === "/cache", "ENV SDRT_HOME=/cache (the cache volume)");
expect(kw("STOPSIGNAL").some((i) => i.getArgumentsContent() === "SIGTERM"), "STOPSIGNAL SIGTERM (the graceful drain)");

const ignore = fs.readFileSync(ignoreFile, "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
for (const must of [".git", "build*"]) expect(ignore.includes(must), `.dockerignore excludes ${must}`);

if (outDir) {
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, "build_run.sh"), (buildRun || "false") + "\n");
  // the build stage's ARGs with their defaults: the environment its RUN lines see
  const stageArgs = byName.build ? byName.build.ins.filter((i) => i.getKeyword() === "ARG").map((i) => i.getArgumentsContent()) : [];
  fs.writeFileSync(path.join(outDir, "build_args.txt"), stageArgs.map((a) => (a.includes("=") ? a : `${a}=${args[a] || ""}`)).join("\n") + "\n");
  fs.writeFileSync(path.join(outDir, "cmd.txt"), [...(entry || []), ...(cmd || [])].join("\n") + "\n");
  fs.writeFileSync(path.join(outDir, "env.txt"), Object.entries(env).map(([k, v]) => `${k}=${v}`).join("\n") + "\n");
}
for (const p of problems) console.log(`FAIL: ${p}`);
console.log(problems.length ? `lint_dockerfile: ${problems.length} problems` : `lint_dockerfile: ok (${stages.length} stages, user ${user}, CMD ${JSON.stringify(cmd)})`);
process.exit(problems.length ? 1 : 0);
