// Schema and unknown-field validation of Kubernetes objects (used by k8s-validate.mjs and
// selftest.mjs). validateObjects(objects, {secretTemplate}) returns a list of problems, each
// "Kind namespace/name: message".
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { crdSchemas, validateCrd } from "./crd-schemas.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const nodeModules = path.join(here, "node_modules");

// ---- schema lookup ----------------------------------------------------------------------------
const validatorCache = new Map();
async function validatorFor(apiVersion, kind) {
  const id = `${apiVersion}/${kind}`;
  if (validatorCache.has(id)) return validatorCache.get(id);
  let result = null;
  if (typeof apiVersion === "string" && typeof kind === "string" && /^[A-Za-z0-9]+$/.test(kind)) {
    const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
    const candidates = [
      path.join(nodeModules, "kubernetes-models", group, version, `${kind}.js`),
      path.join(nodeModules, "@kubernetes-models/autoscaler", group, version, `${kind}.js`),
    ];
    for (const file of candidates) {
      if (!fs.existsSync(file)) continue;
      // The model module imports its compiled schema validator: use that validator directly.
      const m = /from"(\.\.\/[^"]*_schemas\/[A-Za-z0-9]+\.js)"/.exec(fs.readFileSync(file, "utf8"));
      if (!m) continue;
      const mod = await import(pathToFileURL(path.resolve(path.dirname(file), m[1])).href);
      result = { kind: "k8s", validate: mod.validate };
      break;
    }
    if (!result && crdSchemas[id]) result = { kind: "crd", schema: crdSchemas[id] };
  }
  validatorCache.set(id, result);
  return result;
}

// ---- unknown-field detection ------------------------------------------------------------------
// Wrap every object/array of the document in a Proxy that notes the keys the validator reads
// (get/has) and whether it enumerated the object (a map such as labels or resources.limits).
function track(value, pointer, records) {
  if (value === null || typeof value !== "object") return value;
  const rec = { accessed: new Set(), enumerated: false, array: Array.isArray(value), value };
  records.set(pointer, rec);
  const copy = Array.isArray(value)
    ? value.map((x, i) => track(x, `${pointer}/${i}`, records))
    : Object.fromEntries(Object.entries(value).map(([k, x]) => [k, track(x, `${pointer}/${escapePointer(k)}`, records)]));
  return new Proxy(copy, {
    get(t, k, r) {
      if (typeof k === "string") rec.accessed.add(k);
      return Reflect.get(t, k, r);
    },
    has(t, k) {
      if (typeof k === "string") rec.accessed.add(k);
      return Reflect.has(t, k);
    },
    ownKeys(t) {
      rec.enumerated = true;
      return Reflect.ownKeys(t);
    },
    getOwnPropertyDescriptor(t, k) {
      return Reflect.getOwnPropertyDescriptor(t, k);
    },
  });
}
const escapePointer = (k) => k.replace(/~/g, "~0").replace(/\//g, "~1");

function unknownFields(records) {
  const out = [];
  const reported = [];
  for (const [pointer, rec] of [...records.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    if (rec.array || rec.enumerated) continue;
    if (reported.some((p) => pointer.startsWith(p + "/"))) continue; // inside an unknown field
    for (const key of Object.keys(rec.value)) {
      if (!rec.accessed.has(key)) {
        const p = `${pointer}/${escapePointer(key)}`;
        out.push(p);
        reported.push(p);
      }
    }
  }
  return out;
}

export const describe = (o) => `${o.kind ?? "?"} ${o.metadata?.namespace ? o.metadata.namespace + "/" : ""}${o.metadata?.name ?? "?"}`;

export async function validateObjects(objects, { secretTemplate = false } = {}) {
  const problems = [];
  const problem = (where, msg) => problems.push(`${where}: ${msg}`);
  for (const obj of objects) {
    const where = describe(obj);
    if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
      problem(where, "apiVersion and kind are required");
      continue;
    }
    if (!obj.metadata || typeof obj.metadata.name !== "string" || obj.metadata.name === "") {
      problem(where, "metadata.name is required");
    }
    const v = await validatorFor(obj.apiVersion, obj.kind);
    if (!v) {
      problem(where, `no schema for ${obj.apiVersion} ${obj.kind} (unknown apiVersion/kind?)`);
      continue;
    }
    if (v.kind === "crd") {
      for (const e of validateCrd(v.schema, obj)) problem(where, e);
      continue;
    }
    const records = new Map();
    const ok = v.validate(track(obj, "", records));
    if (!ok) {
      for (const e of v.validate.errors ?? []) {
        const detail = e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : "";
        problem(where, `${e.instancePath || "/"}: ${e.keyword}${detail}${e.message ? " " + e.message : ""}`);
      }
    }
    for (const p of unknownFields(records)) problem(where, `${p}: unknown field`);
  }

  // ---- Secret templates -------------------------------------------------------------------------
  if (secretTemplate) {
    for (const obj of objects) {
      const where = describe(obj);
      if (obj.kind !== "Secret") {
        problem(where, "a secret template holds Secrets only");
        continue;
      }
      if (obj.data !== undefined) problem(where, "use stringData with ${PLACEHOLDER} values, not data");
      for (const [k, val] of Object.entries(obj.stringData ?? {})) {
        if (typeof val !== "string" || !/^\$\{[A-Z][A-Z0-9_]*\}$/.test(val)) {
          problem(where, `stringData.${k}: not a \${PLACEHOLDER} — never commit a real secret value`);
        }
      }
      if (Object.keys(obj.stringData ?? {}).length === 0) problem(where, "no stringData keys");
    }
  }
  return problems;
}
