#!/usr/bin/env node
// Checks Kubernetes manifests (multi-document YAML, from files or stdin) against the Kubernetes API schemas
// that kubernetes-models ships (types, required fields, enums, formats, quantities), and strictly: a field
// the API does not define is an error too (as `kubeconform -strict`), found from the same package's type
// declarations. Prints one line per object; exits 1 on any problem.
"use strict";
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const modelsRoot = path.dirname(require.resolve("kubernetes-models/package.json"));
const nodeModules = path.dirname(modelsRoot);

// --- the field tree from the .d.ts declarations ---------------------------------------------------------
const interfaces = new Map();  // d.ts file -> {props: Map(name -> type text), imports: Map(name -> file)}

function parseDts(file) {
  if (interfaces.has(file)) return interfaces.get(file);
  const src = fs.readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const imports = new Map();
  for (const m of src.matchAll(/import\s*\{([^}]*)\}\s*from\s*"([^"]+)"/g)) {
    const spec = m[2];
    const target = spec.startsWith(".") ? path.resolve(path.dirname(file), spec) : path.join(nodeModules, spec);
    for (const n of m[1].split(",").map((s) => s.trim()).filter(Boolean)) imports.set(n, target + ".d.ts");
  }
  const props = new Map();
  const head = src.match(/export interface (\w+)[^{]*\{/);
  let leaf = !head;
  if (head) {
    let i = head.index + head[0].length, depth = 0, start = i;
    for (; i < src.length; ++i) {  // the body up to its closing brace
      if (src[i] === "{") ++depth;
      else if (src[i] === "}") { if (depth === 0) break; --depth; }
    }
    const body = src.slice(start, i);
    let j = 0;
    while (j < body.length) {
      const m = /"([^"]+)"\??:\s*/y;
      m.lastIndex = body.slice(j).search(/"/) + j;
      if (m.lastIndex < j) break;
      const r = m.exec(body);
      if (!r) break;
      let k = m.lastIndex, d = 0;
      for (; k < body.length; ++k) {  // the type, up to ';' outside braces and angle brackets
        const c = body[k];
        if (c === "{" || c === "<") ++d;
        else if (c === "}" || c === ">") --d;
        else if (c === ";" && d === 0) break;
      }
      props.set(r[1], body.slice(m.lastIndex, k).trim());
      j = k + 1;
    }
  }
  const entry = { props, imports, leaf };
  interfaces.set(file, entry);
  return entry;
}

// Walks `value` along the declared type; reports fields the API does not define.
function strict(value, typeText, imports, where, problems) {
  if (value === null || value === undefined) return;
  let t = typeText.trim();
  let m;
  if ((m = t.match(/^Array<(.+)>$/s))) {
    if (Array.isArray(value)) value.forEach((v, i) => strict(v, m[1], imports, `${where}[${i}]`, problems));
    return;
  }
  if ((m = t.match(/^\{\s*\[key: string\]:\s*(.+?);?\s*\}$/s))) {
    if (value && typeof value === "object") for (const [k, v] of Object.entries(value)) strict(v, m[1], imports, `${where}.${k}`, problems);
    return;
  }
  if (/^\w+$/.test(t) && imports.has(t)) return strictObject(value, imports.get(t), where, problems);
  // string, number, boolean, unions, literal types, aliases of those: nothing below to check
}

function strictObject(value, file, where, problems) {
  if (!value || typeof value !== "object" || Array.isArray(value)) return;
  const def = parseDts(file);
  if (def.leaf || def.props.size === 0) return;  // type aliases (Quantity, IntOrString, RawExtension ...)
  for (const [k, v] of Object.entries(value)) {
    if (!def.props.has(k)) problems.push(`${where}.${k}: unknown field (${path.basename(file, ".d.ts")} has: ${[...def.props.keys()].join(", ")})`);
    else strict(v, def.props.get(k), def.imports, `${where}.${k}`, problems);
  }
}

// --- one object --------------------------------------------------------------------------------------------
function modelFile(apiVersion, kind) {  // "apps/v1" -> kubernetes-models/apps/v1/Kind; "v1" (core) -> v1/Kind
  return path.join(modelsRoot, apiVersion, kind);
}

function check(obj) {
  const problems = [];
  if (!obj || typeof obj !== "object") return [`not an object`];
  const { apiVersion, kind } = obj;
  if (typeof apiVersion !== "string" || typeof kind !== "string") return ["apiVersion and kind must be strings"];
  const base = modelFile(apiVersion, kind);
  let Model;
  try {
    Model = require(base)[kind];
  } catch (e) {
    return [`${apiVersion} ${kind} is not a Kubernetes API type this validator knows`];
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    problems.push(...String(e.message).split(/,\s*(?=data)/).map((s) => s.replace(/^data/, kind)));
  }
  strictObject(obj, base + ".d.ts", kind, problems);
  const name = obj.metadata && obj.metadata.name;
  if (!name) problems.push(`${kind}: metadata.name is required`);
  else if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name)) problems.push(`${kind}: metadata.name '${name}' is not a DNS subdomain`);
  return problems;
}

function main() {
  const files = process.argv.slice(2);
  const texts = files.length ? files.map((f) => [f, fs.readFileSync(f, "utf8")]) : [["-", fs.readFileSync(0, "utf8")]];
  let bad = 0, n = 0;
  for (const [file, text] of texts) {
    for (const doc of YAML.parseAllDocuments(text)) {
      if (doc.errors.length) { console.log(`${file}: YAML error: ${doc.errors[0].message}`); ++bad; continue; }
      const obj = doc.toJS();
      if (obj === null) continue;
      ++n;
      const problems = check(obj);
      const label = `${obj.kind || "?"}/${(obj.metadata && obj.metadata.name) || "?"}`;
      if (problems.length) {
        ++bad;
        console.log(`INVALID ${label}`);
        for (const p of problems) console.log(`  ${p}`);
      } else {
        console.log(`valid   ${label} (${obj.apiVersion})`);
      }
    }
  }
  console.log(`${n} objects, ${bad} invalid`);
  process.exit(bad || n === 0 ? 1 : 0);
}

main();
