#!/usr/bin/env node
// Prepares deploy/monitoring for promtool (run by scripts/deploy-check.sh), checking what
// promtool cannot see on its own. Writes into OUTDIR:
//   prometheus.check.yml  prometheus.yml with each kubernetes_sd_configs replaced by a
//                         static_configs (Debian's promtool has no Kubernetes discovery), the
//                         in-cluster credential files dropped and rule_files pointed at the repo;
//   dashboard-exprs.yml   every query of the Grafana dashboard as a recording rule, with the
//                         dashboard variables substituted (for `promtool check rules`);
//   adapter.test.yml      tests/requests-per-second.test.yml with EXPR replaced by
//                         the adapter rule's metricsQuery, expanded as the adapter expands it
//                         (for `promtool test rules`).
// Checks on the way: the dashboard is valid JSON with unique panel ids, a data-source variable
// and the seed's three panels (Request Rate, Response Time, Error Rate) plus saturation panels;
// the adapter rule derives every Pods metric the HorizontalPodAutoscalers of deploy/k8s/base
// name from http_requests_total.
// Usage: node monitoring-prepare.mjs REPO_ROOT OUTDIR   Exit 0 ok, 1 problems, 2 usage.
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";

const [root, outDir] = process.argv.slice(2);
if (!root || !outDir) {
  console.error("usage: node monitoring-prepare.mjs REPO_ROOT OUTDIR");
  process.exit(2);
}
const mon = path.join(root, "deploy/monitoring");
fs.mkdirSync(outDir, { recursive: true });
const problems = [];

// ---- prometheus.yml ---------------------------------------------------------------------------
{
  const cfg = YAML.parse(fs.readFileSync(path.join(mon, "prometheus.yml"), "utf8"));
  let sd = 0;
  for (const job of cfg.scrape_configs ?? []) {
    if (job.kubernetes_sd_configs) {
      for (const k of job.kubernetes_sd_configs) {
        if (!["pod", "endpoints", "service", "node", "ingress", "endpointslice"].includes(k.role)) {
          problems.push(`prometheus.yml: job ${job.job_name}: kubernetes_sd_configs role ${k.role} is not a Kubernetes role`);
        }
      }
      delete job.kubernetes_sd_configs;
      job.static_configs = [{ targets: ["127.0.0.1:9"] }];
      sd++;
    }
    if (job.tls_config?.ca_file) delete job.tls_config.ca_file;
    if (job.authorization?.credentials_file) delete job.authorization;
    if (job.bearer_token_file) delete job.bearer_token_file;
  }
  const pods = (cfg.scrape_configs ?? []).find((j) => j.job_name === "kubernetes-pods");
  const keep = (pods?.relabel_configs ?? []).find((r) => r.action === "keep");
  if (!pods || !keep || !String(keep.source_labels).includes("__meta_kubernetes_pod_annotation_prometheus_io_scrape")) {
    problems.push("prometheus.yml: no kubernetes-pods job keeping pods annotated prometheus.io/scrape");
  }
  for (const l of ["namespace", "pod"]) {
    if (!(pods?.relabel_configs ?? []).some((r) => r.target_label === l)) {
      problems.push(`prometheus.yml: kubernetes-pods must set the label ${l} (prometheus-adapter maps it to the pod)`);
    }
  }
  cfg.rule_files = [path.resolve(mon, "rules/*.yml")];
  fs.writeFileSync(path.join(outDir, "prometheus.check.yml"), YAML.stringify(cfg));
  if (sd === 0) problems.push("prometheus.yml: no kubernetes_sd_configs (pods must be discovered through the API)");
}

// ---- Grafana dashboard ------------------------------------------------------------------------
{
  const file = path.join(mon, "grafana/docket-overview.json");
  let dash;
  try {
    dash = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    problems.push(`docket-overview.json: ${e.message}`);
  }
  if (dash) {
    if (!dash.uid || !dash.title) problems.push("docket-overview.json: needs uid and title");
    const vars = (dash.templating?.list ?? []).map((v) => v.name);
    if (!vars.includes("datasource")) problems.push("docket-overview.json: no datasource variable");
    const panels = (dash.panels ?? []).flatMap((p) => (p.type === "row" ? [p, ...(p.panels ?? [])] : [p]));
    const ids = panels.map((p) => p.id);
    if (new Set(ids).size !== ids.length) problems.push("docket-overview.json: duplicate panel ids");
    for (const t of ["Request Rate", "Response Time", "Error Rate"]) {
      if (!panels.some((p) => p.title === t)) problems.push(`docket-overview.json: no "${t}" panel (the seed's)`);
    }
    const sat = panels.filter((p) => p.type !== "row" && /used|busy|maximum|lag|limit/i.test(p.title));
    if (sat.length < 3) problems.push("docket-overview.json: fewer than 3 saturation panels");
    const rules = [];
    for (const p of panels) {
      if (p.type === "row") continue;
      if (!p.targets?.length) problems.push(`docket-overview.json: panel ${p.id} "${p.title}" has no query`);
      for (const t of p.targets ?? []) {
        if (typeof t.expr !== "string" || !t.expr.trim()) {
          problems.push(`docket-overview.json: panel ${p.id} target ${t.refId}: empty expr`);
          continue;
        }
        for (const m of t.expr.matchAll(/\$\{?([A-Za-z_]\w*)/g)) {
          if (!vars.includes(m[1]) && !m[1].startsWith("__")) problems.push(`docket-overview.json: panel ${p.id}: unknown variable $${m[1]}`);
        }
        const expr = t.expr
          .replace(/\$__rate_interval|\$\{__rate_interval\}|\$__interval|\$\{__interval\}/g, "5m")
          .replace(/\$\{?namespace\}?/g, "production")
          .replace(/\$\{?(\w+)\}?/g, "x");
        rules.push({ record: `dashboard:panel_${p.id}_${t.refId}`.toLowerCase(), expr });
      }
    }
    fs.writeFileSync(path.join(outDir, "dashboard-exprs.yml"), YAML.stringify({ groups: [{ name: "dashboard", rules }] }));
  }
}

// ---- prometheus-adapter rule ------------------------------------------------------------------
{
  const values = YAML.parse(fs.readFileSync(path.join(mon, "prometheus-adapter/values.yaml"), "utf8"));
  const rules = values?.rules?.custom ?? [];
  // the Pods metrics the HPAs ask for
  const wanted = new Set();
  const baseDir = path.join(root, "deploy/k8s/base");
  for (const f of fs.readdirSync(baseDir).filter((f) => f.endsWith(".yaml"))) {
    for (const doc of YAML.parseAllDocuments(fs.readFileSync(path.join(baseDir, f), "utf8"))) {
      const o = doc.toJS();
      if (o?.kind !== "HorizontalPodAutoscaler") continue;
      for (const m of o.spec?.metrics ?? []) if (m.type === "Pods") wanted.add(m.pods.metric.name);
    }
  }
  if (wanted.size === 0) problems.push("no HorizontalPodAutoscaler in deploy/k8s/base names a Pods metric");
  for (const name of wanted) {
    const rule = rules.find((r) => r.name?.as === name);
    if (!rule) {
      problems.push(`prometheus-adapter/values.yaml: no rule serves the HPA metric ${name}`);
      continue;
    }
    for (const k of ["seriesQuery", "metricsQuery"]) if (typeof rule[k] !== "string") problems.push(`adapter rule ${name}: ${k} missing`);
    const ov = rule.resources?.overrides ?? {};
    if (ov.namespace?.resource !== "namespace" || ov.pod?.resource !== "pod") {
      problems.push(`adapter rule ${name}: resources.overrides must map the labels namespace and pod`);
    }
    const series = /^\^?([a-zA-Z_:][\w:]*)\$?$/.exec(rule.name?.matches ?? "")?.[1];
    if (series !== "http_requests_total") problems.push(`adapter rule ${name}: must derive from http_requests_total (name.matches)`);
    if (!String(rule.seriesQuery).startsWith(series ?? "?")) problems.push(`adapter rule ${name}: seriesQuery does not select ${series}`);
    if (!/rate\(/.test(rule.metricsQuery)) problems.push(`adapter rule ${name}: a per-second rate needs rate()`);
    const expanded = String(rule.metricsQuery)
      .replace(/<<\.Series>>/g, series)
      .replace(/<<\.LabelMatchers>>/g, 'namespace="production",pod=~"auth-service-a|auth-service-b"')
      .replace(/<<\.GroupBy>>/g, "pod");
    if (/<<|>>/.test(expanded)) problems.push(`adapter rule ${name}: unknown template field in ${rule.metricsQuery}`);
    const test = fs.readFileSync(path.join(mon, "tests/requests-per-second.test.yml"), "utf8");
    if (!/^\s*- expr: EXPR$/m.test(test)) problems.push("requests-per-second.test.yml: no `- expr: EXPR` line to fill");
    fs.writeFileSync(
      path.join(outDir, "adapter.test.yml"),
      test.replace(/^(\s*- expr: )EXPR$/m, (_, lead) => lead + JSON.stringify(expanded)),
    );
    // the seriesQuery is a selector: check it as an expression too
    fs.writeFileSync(
      path.join(outDir, "adapter-exprs.yml"),
      YAML.stringify({ groups: [{ name: "adapter", rules: [{ record: "adapter:series", expr: rule.seriesQuery }, { record: "adapter:metrics", expr: expanded }] }] }),
    );
  }
}

if (problems.length) {
  for (const p of problems) console.error(`monitoring: ${p}`);
  process.exit(1);
}
console.log("monitoring: dashboard, adapter rule and Prometheus config prepared for promtool");
