#!/usr/bin/env node
// Checks across rendered environments and clusters, which no single render can show:
//  - each environment's PostgreSQL backups go to a prefix of their own (a shared prefix lets
//    production's `restore latest` fetch staging's dump);
//  - each cluster's Velero BackupStorageLocation has a prefix of its own;
//  - every image an environment references is one the CI workflow pushes: the workflow's
//    registry, one owner for all, a name it builds (five services and pg-backup), a tag it
//    pushes (a branch it runs on, or sha-<commit>). A local development registry is exempt.
// Usage: node cross-check.mjs --workflow CI.yml [--env NAME=RENDER.yaml …] [--cluster NAME=RENDER.yaml …]
// Exit 0 when consistent, 1 with one line per problem.
import fs from "node:fs";
import YAML from "yaml";
import { imageRegistry } from "./docket-policy.mjs";

const args = process.argv.slice(2);
const envs = [], clusters = [];
let workflowFile = null;
for (let i = 0; i < args.length; i++) {
  const [k, v] = [args[i], args[++i]];
  if (k === "--workflow") workflowFile = v;
  else if (k === "--env" || k === "--cluster") {
    const [name, file] = v.split("=");
    (k === "--env" ? envs : clusters).push({ name, objs: YAML.parseAllDocuments(fs.readFileSync(file, "utf8")).map((d) => d.toJS()).filter(Boolean) });
  } else {
    console.error(`usage: node cross-check.mjs --workflow CI.yml [--env NAME=FILE …] [--cluster NAME=FILE …] (bad argument ${k})`);
    process.exit(2);
  }
}
const problems = [];

// ---- backup prefixes per environment ----
const prefixes = new Map();
for (const e of envs) {
  const cm = e.objs.find((o) => o.kind === "ConfigMap" && /^postgres-backup-config/.test(o.metadata?.name));
  if (!cm) continue;
  const key = `${cm.data?.S3_ENDPOINT}|${cm.data?.S3_BUCKET}|${cm.data?.BACKUP_PREFIX}`;
  if (prefixes.has(key)) problems.push(`backups: ${e.name} and ${prefixes.get(key)} write to the same place (${cm.data?.S3_BUCKET}/${cm.data?.BACKUP_PREFIX})`);
  else prefixes.set(key, e.name);
}

// ---- Velero prefixes per cluster ----
const veleroPrefixes = new Map();
for (const c of clusters) {
  for (const bsl of c.objs.filter((o) => o.kind === "BackupStorageLocation")) {
    const p = `${bsl.spec?.objectStorage?.bucket}/${bsl.spec?.objectStorage?.prefix ?? ""}`;
    if (!bsl.spec?.objectStorage?.prefix || /unset/.test(p)) problems.push(`velero: cluster ${c.name}: BackupStorageLocation ${bsl.metadata.name} has no prefix of its own (${p})`);
    if (veleroPrefixes.has(p)) problems.push(`velero: clusters ${c.name} and ${veleroPrefixes.get(p)} share ${p}: each would sync, prune and restore the other's backups`);
    else veleroPrefixes.set(p, c.name);
  }
}

// ---- images: what the overlays reference is what the workflow pushes ----
if (workflowFile) {
  const text = fs.readFileSync(workflowFile, "utf8");
  const wf = YAML.parse(text);
  const registry = wf.env?.REGISTRY;
  const names = new Set();
  const loop = /for s in ([a-z -]+); do\s+echo "\$\{prefix\}\/\$\{s\}"/.exec(text);
  for (const n of (loop?.[1] ?? "").trim().split(/\s+/)) if (n) names.add(n);
  if (/backup_image=\$\{prefix\}\/pg-backup/.test(text)) names.add("pg-backup");
  const branches = wf.on?.push?.branches ?? [];
  const metaSteps = Object.values(wf.jobs ?? {}).flatMap((j) => j.steps ?? []).filter((s) => String(s.uses ?? "").startsWith("docker/metadata-action"));
  const pushesBranchTags = (img) => metaSteps.some((s) => String(s.with?.images ?? "").includes(img) && /type=ref,event=branch/.test(s.with?.tags ?? ""));
  const branchTagged = new Set();
  if (pushesBranchTags("steps.names.outputs.images")) for (const n of names) if (n !== "pg-backup") branchTagged.add(n);
  if (pushesBranchTags("steps.names.outputs.backup_image")) branchTagged.add("pg-backup");
  if (!registry) problems.push(`${workflowFile}: no env.REGISTRY`);
  if (names.size === 0) problems.push(`${workflowFile}: cannot find the image names it pushes`);
  const owners = new Map();
  for (const e of envs) {
    const pods = e.objs.filter((o) => ["Deployment", "CronJob"].includes(o.kind));
    for (const o of pods) {
      const tmpl = o.kind === "CronJob" ? o.spec?.jobTemplate?.spec?.template : o.spec?.template;
      for (const c of [...(tmpl?.spec?.initContainers ?? []), ...(tmpl?.spec?.containers ?? [])]) {
        const host = imageRegistry(c.image);
        if (host === "localhost" || /^localhost:/.test(host ?? "")) continue; // a developer's local registry
        const m = /^([^/]+)\/([^/]+)\/docket\/([a-z-]+):([\w.-]+)$/.exec(c.image ?? "");
        if (!m) {
          problems.push(`${e.name}: ${o.kind} ${o.metadata.name}/${c.name}: image ${c.image} is not <registry>/<owner>/docket/<name>:<tag> as CI pushes it`);
          continue;
        }
        const [, reg, owner, name, tag] = m;
        if (reg !== registry) problems.push(`${e.name}: image ${c.image}: registry ${reg}, but CI pushes to ${registry}`);
        if (!names.has(name)) problems.push(`${e.name}: image ${c.image}: CI never builds ${name}`);
        if (!(tag.startsWith("sha-") || (branches.includes(tag) && branchTagged.has(name)))) {
          problems.push(`${e.name}: image ${c.image}: CI never pushes the tag ${tag} for ${name}`);
        }
        if (!owners.has(owner)) owners.set(owner, e.name);
      }
    }
  }
  if (owners.size > 1) problems.push(`images: several owners (${[...owners.keys()].join(", ")}); CI pushes under one`);
}

if (problems.length) {
  for (const p of problems) console.error(`cross-check: ${p}`);
  process.exit(1);
}
console.log(`cross-check: ${envs.length} environment(s) and ${clusters.length} cluster(s) consistent (backup prefixes, Velero prefixes, images CI pushes)`);
