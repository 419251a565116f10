#!/usr/bin/env node
// Every metric an alert rule, a recording rule, a dashboard panel or the prometheus-adapter rule
// reads must exist: either in Docket's own exposition (scraped from the real binary by
// scripts/deploy-check.sh) or in the short list below of metrics other exporters provide
// (kube-state-metrics v2, Prometheus itself). A misspelt or renamed metric makes an alert that
// can never fire; this check names it.
// Usage: node metric-names.mjs EXPOSITION.txt RULES.yml [RULES.yml …]
// (rule files: Prometheus rule groups; monitoring-prepare.mjs writes the dashboard's and the
// adapter's queries in that form.) Exit 0 when every name is known, 1 otherwise.
import fs from "node:fs";
import YAML from "yaml";

export const EXTERNAL = new Set([
  "up", // Prometheus: one per scrape target
  // kube-state-metrics v2
  "kube_pod_status_ready",
  "kube_deployment_status_replicas_unavailable",
  "kube_pod_container_status_restarts_total",
  "kube_pod_init_container_status_restarts_total",
  "kube_pod_container_resource_limits",
  "kube_horizontalpodautoscaler_status_current_replicas",
  "kube_horizontalpodautoscaler_spec_max_replicas",
  "kube_cronjob_status_last_successful_time",
  "kube_cronjob_created",
  "kube_job_status_failed",
]);

const KEYWORDS = new Set(["and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
  "bool", "offset", "inf", "nan", "atan2"]);

// The metric names a PromQL expression reads (selectors), by a small tokenizer: strings, label
// matchers and grouping lists are removed, then every identifier that is not a function call,
// a keyword or a template is a metric name.
export function metricNames(expr) {
  let e = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  e = e.replace(/\{[^}]*\}/g, " ");
  e = e.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  e = e.replace(/\[[^\]]*\]/g, " ");
  const names = new Set();
  for (const m of e.matchAll(/([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?/g)) {
    const [, id, call] = m;
    const before = e[m.index - 1];
    if (call || KEYWORDS.has(id.toLowerCase()) || /[0-9.]/.test(before ?? "")) continue;
    names.add(id);
  }
  return names;
}

// Names in a text exposition: histogram series (_bucket, _sum, _count) under their own names.
export function exposedNames(text) {
  const names = new Set();
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]/.exec(line);
    if (m) names.add(m[1]);
  }
  return names;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [expoFile, ...ruleFiles] = process.argv.slice(2);
  if (!expoFile || ruleFiles.length === 0) {
    console.error("usage: node metric-names.mjs EXPOSITION.txt RULES.yml [RULES.yml …]");
    process.exit(2);
  }
  const known = exposedNames(fs.readFileSync(expoFile, "utf8"));
  if (known.size === 0) {
    console.error(`metric-names: ${expoFile} holds no metric`);
    process.exit(1);
  }
  const problems = [];
  let exprs = 0;
  for (const f of ruleFiles) {
    const doc = YAML.parse(fs.readFileSync(f, "utf8"));
    for (const g of doc?.groups ?? doc?.spec?.groups ?? []) {
      for (const r of g.rules ?? []) {
        exprs++;
        for (const n of metricNames(String(r.expr))) {
          if (!known.has(n) && !EXTERNAL.has(n)) problems.push(`${f}: ${r.alert ?? r.record}: metric ${n} exists neither in Docket's /metrics nor in the known exporters' list`);
        }
      }
    }
  }
  if (problems.length) {
    for (const p of problems) console.error(p);
    process.exit(1);
  }
  console.log(`metric-names: ${exprs} expressions read only metrics that exist (${known.size} from Docket, ${EXTERNAL.size} from exporters)`);
}
