#!/usr/bin/env node
// Validates Kubernetes manifests (multi-document YAML, e.g. `kubectl kustomize` output):
//  1. every object against the Kubernetes schemas of npm kubernetes-models (types, required
//     fields, enums) or, for the VerticalPodAutoscaler, @kubernetes-models/autoscaler; Velero's
//     Schedule and BackupStorageLocation against the field lists in crd-schemas.mjs;
//  2. no unknown field anywhere (a misspelt `replica:` or `readinesProbe:` is an error): the
//     schema validator is run on a proxy of the object that records which keys it reads, so a
//     key it never looked at is not in the schema;
//  3. with --policy docket: Docket's rules for a rendered environment (docker image, probes,
//     security context, secrets, HPA/VPA/PDB/Service per Deployment, references that resolve …);
//  4. with --secret-template: the file holds only Secrets whose values are ${PLACEHOLDERS}.
// Usage: node k8s-validate.mjs [--policy docket] [--secret-template] [--configs-out DIR]
//                              [--label NAME] FILE|-
// --configs-out writes each ConfigMap's config.yaml to DIR/<configmap>.yaml (checked by the
// real binary afterwards). Exit 0 when valid, 1 with one line per problem, 2 on usage errors.
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import { checkDocketPolicy } from "./docket-policy.mjs";
import { validateObjects } from "./k8s-lib.mjs";

function usage(msg) {
  console.error(`k8s-validate: ${msg}`);
  console.error("usage: node k8s-validate.mjs [--policy docket] [--secret-template] [--configs-out DIR] [--label NAME] FILE|-");
  process.exit(2);
}

const opts = { policy: null, secretTemplate: false, configsOut: null, label: null, file: null };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "--policy") opts.policy = argv[++i];
  else if (a === "--secret-template") opts.secretTemplate = true;
  else if (a === "--configs-out") opts.configsOut = argv[++i];
  else if (a === "--label") opts.label = argv[++i];
  else if (a.startsWith("--")) usage(`unknown option ${a}`);
  else if (opts.file === null) opts.file = a;
  else usage("one input only");
}
if (opts.file === null) usage("no input");
if (opts.policy !== null && opts.policy !== "docket") usage(`unknown policy ${opts.policy}`);
const label = opts.label ?? opts.file;

const text = fs.readFileSync(opts.file === "-" ? 0 : opts.file, "utf8");
const problems = [];
const problem = (where, msg) => problems.push(`${label}: ${where}: ${msg}`);

// ---- parse ------------------------------------------------------------------------------------
const docs = YAML.parseAllDocuments(text, { uniqueKeys: true });
const objects = [];
docs.forEach((doc, i) => {
  for (const e of doc.errors) problem(`document ${i + 1}`, `YAML: ${e.message}`);
  for (const w of doc.warnings) problem(`document ${i + 1}`, `YAML: ${w.message}`);
  const value = doc.toJS({ maxAliasCount: 100 });
  if (value === null || value === undefined) return; // empty document
  if (typeof value !== "object" || Array.isArray(value)) {
    problem(`document ${i + 1}`, "not a mapping");
    return;
  }
  objects.push(value);
});
if (objects.length === 0) problem("input", "no Kubernetes object");

const libProblems = await validateObjects(objects, { secretTemplate: opts.secretTemplate });
for (const p of libProblems) problems.push(`${label}: ${p}`);

// ---- Docket policy ----------------------------------------------------------------------------
if (opts.policy === "docket") {
  for (const p of checkDocketPolicy(objects)) problems.push(`${label}: ${p}`);
}

// ---- ConfigMap contents for the binary --------------------------------------------------------
if (opts.configsOut) {
  fs.mkdirSync(opts.configsOut, { recursive: true });
  for (const obj of objects) {
    if (obj.kind === "ConfigMap" && typeof obj.data?.["config.yaml"] === "string") {
      fs.writeFileSync(path.join(opts.configsOut, `${obj.metadata.name}.yaml`), obj.data["config.yaml"]);
    }
  }
}

if (problems.length) {
  for (const p of problems) console.error(p);
  console.error(`k8s-validate: ${label}: ${problems.length} problem(s) in ${objects.length} object(s)`);
  process.exit(1);
}
const kinds = {};
for (const o of objects) kinds[o.kind] = (kinds[o.kind] ?? 0) + 1;
console.log(
  `k8s-validate: ${label}: ${objects.length} object(s) valid` +
    ` (${Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(", ")})` +
    (opts.policy ? `, policy ${opts.policy} ok` : "") +
    (opts.secretTemplate ? ", placeholders only" : ""),
);
