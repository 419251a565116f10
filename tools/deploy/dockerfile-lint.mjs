#!/usr/bin/env node
// Lints Dockerfiles: the syntax and instruction checks of npm dockerfile-utils (the engine of
// the VS Code Docker extension; every warning counts), then Docket's rules for its images:
//   - every FROM names a tagged image (through ARG defaults too), never :latest;
//   - the final stage runs as a fixed non-root user (USER uid:gid, not 0/root);
//   - the final stage declares a HEALTHCHECK (CMD, or NONE for a one-shot job image);
//   - no ARG/ENV whose name looks like a secret (it would stay in the image's history);
//   - no ADD of a URL; no `ENV DEBIAN_FRONTEND` (it would leak into the runtime);
//   - apt-get install always with --no-install-recommends, lists removed in the same RUN;
//   - with --service: a multi-stage build whose final stage installs no compiler, cmake or
//     -dev package, copies the binary from an earlier stage, and EXPOSEs a port.
// Usage: node dockerfile-lint.mjs [--service] Dockerfile...   Exit 0 clean, 1 problems, 2 usage.
import fs from "node:fs";
import { DockerfileParser } from "dockerfile-ast";
import { validate } from "dockerfile-utils";

const args = process.argv.slice(2);
let service = false;
const files = [];
for (const a of args) {
  if (a === "--service") service = true;
  else if (a.startsWith("--")) {
    console.error(`dockerfile-lint: unknown option ${a}`);
    process.exit(2);
  } else files.push(a);
}
if (files.length === 0) {
  console.error("usage: node dockerfile-lint.mjs [--service] Dockerfile...");
  process.exit(2);
}

export function lintDockerfile(text, { service = false } = {}) {
  const out = [];
  const at = (i) => `line ${i.getRange().start.line + 1}`;
  for (const d of validate(text)) {
    out.push(`line ${d.range.start.line + 1}: ${d.severity === 1 ? "error" : "warning"}: ${d.message}`);
  }
  const df = DockerfileParser.parse(text);
  const instructions = df.getInstructions();
  // ARG defaults before the first FROM resolve ${NAME} in FROM lines
  const globalArgs = {};
  for (const i of instructions) {
    if (i.getKeyword() === "FROM") break;
    if (i.getKeyword() === "ARG") {
      const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$/.exec(i.getArgumentsContent() ?? "");
      if (m) globalArgs[m[1]] = m[2];
    }
  }
  const stages = [];
  for (const i of instructions) {
    const kw = i.getKeyword();
    const content = i.getArgumentsContent() ?? "";
    if (kw === "FROM") {
      stages.push({ from: i, name: i.getBuildStage(), instructions: [] });
      let image = content.split(/\s+/)[0].replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (_, n) => globalArgs[n] ?? `<unset ${n}>`);
      const earlier = stages.slice(0, -1).some((s) => s.name === image);
      if (!earlier) {
        if (image.includes("<unset")) out.push(`${at(i)}: FROM ${content}: an ARG without a default`);
        else if (!/(:[\w.-]+|@sha256:[0-9a-f]{64})$/.test(image.split("/").pop())) out.push(`${at(i)}: FROM ${image}: name a tag`);
        else if (/:latest$/.test(image)) out.push(`${at(i)}: FROM ${image}: not :latest`);
      }
      continue;
    }
    if (stages.length === 0) continue;
    stages[stages.length - 1].instructions.push(i);
    if (kw === "ARG" || kw === "ENV") {
      for (const m of content.matchAll(/(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)/g)) {
        if (/SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL/i.test(m[1])) {
          out.push(`${at(i)}: ${kw} ${m[1]}: secrets must not be build arguments or image environment`);
        }
      }
      if (kw === "ENV" && /\bDEBIAN_FRONTEND\b/.test(content)) out.push(`${at(i)}: use ARG DEBIAN_FRONTEND, ENV would stay set in the image`);
    }
    if (kw === "ADD" && /\bhttps?:\/\//.test(content)) out.push(`${at(i)}: ADD of a URL: download in a RUN with a checksum instead`);
    if (kw === "RUN" && /apt-get\s+(-\S+\s+)*install/.test(content)) {
      if (!content.includes("--no-install-recommends")) out.push(`${at(i)}: apt-get install without --no-install-recommends`);
      if (/apt-get\s+update/.test(content) && !/rm -rf \/var\/lib\/apt\/lists/.test(content)) {
        out.push(`${at(i)}: apt-get update without rm -rf /var/lib/apt/lists/* in the same RUN`);
      }
    }
    if (kw === "COPY") {
      const from = i.getFromFlag?.()?.getValue?.();
      if (from !== undefined && from !== null && !stages.slice(0, -1).some((s) => s.name === from)) {
        out.push(`${at(i)}: COPY --from=${from}: no earlier stage of that name`);
      }
    }
  }
  if (stages.length === 0) return [...out, "no FROM"];
  const last = stages[stages.length - 1];
  const lastOf = (kw) => [...last.instructions].reverse().find((i) => i.getKeyword() === kw);
  const user = lastOf("USER");
  if (!user) out.push("final stage: no USER (it would run as root)");
  else {
    const u = (user.getArgumentsContent() ?? "").trim();
    const [uid, gid] = u.split(":");
    if (uid === "0" || uid === "root" || gid === "0" || gid === "root") out.push(`${at(user)}: USER ${u} is root`);
    if (!/^[0-9]+(:[0-9]+)?$/.test(u)) out.push(`${at(user)}: USER ${u}: use a numeric uid:gid so runAsNonRoot can verify it`);
  }
  if (!lastOf("HEALTHCHECK")) out.push("final stage: no HEALTHCHECK (CMD …, or NONE for a job)");
  if (service) {
    if (stages.length < 2) out.push("a service image is a multi-stage build (builder + runtime)");
    if (!lastOf("EXPOSE")) out.push("final stage: no EXPOSE");
    const hc = lastOf("HEALTHCHECK");
    if (hc && /^NONE\b/.test(hc.getArgumentsContent() ?? "")) out.push(`${at(hc)}: a service image needs a real HEALTHCHECK`);
    for (const i of last.instructions) {
      const c = i.getArgumentsContent() ?? "";
      if (i.getKeyword() === "RUN" && /apt-get\s+(-\S+\s+)*install/.test(c)) {
        const bad = c.split(/\s+/).filter((w) => /-dev$|^(build-essential|gcc|clang|cmake|make|pkg-config)$/.test(w));
        if (bad.length) out.push(`${at(i)}: the runtime stage installs build tools: ${bad.join(" ")}`);
      }
    }
    if (!last.instructions.some((i) => i.getKeyword() === "COPY" && i.getFromFlag?.())) {
      out.push("final stage: the binary should come from the build stage (COPY --from=…)");
    }
  }
  return out;
}

let failed = 0;
for (const f of files) {
  const problems = lintDockerfile(fs.readFileSync(f, "utf8"), { service });
  if (problems.length) {
    failed++;
    for (const p of problems) console.error(`${f}: ${p}`);
  } else {
    console.log(`dockerfile-lint: ${f} ok${service ? " (service rules)" : ""}`);
  }
}
process.exit(failed ? 1 : 0);
