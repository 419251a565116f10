#!/usr/bin/env node
// Prints the PrometheusRule (Prometheus Operator, as kube-prometheus-stack runs it) that carries
// deploy/monitoring/rules/docket-alerts.yml unchanged, so the alerts promtool tests are the ones
// the operator loads. deploy-check regenerates it and diffs it with the committed copy
// deploy/monitoring/kube-prometheus-stack/prometheusrule.yaml.
// Usage: node prometheus-rule.mjs RULES.yml > prometheusrule.yaml
import fs from "node:fs";
import YAML from "yaml";

const file = process.argv[2];
if (!file) {
  console.error("usage: node prometheus-rule.mjs RULES.yml");
  process.exit(2);
}
const rules = YAML.parse(fs.readFileSync(file, "utf8"));
const obj = {
  apiVersion: "monitoring.coreos.com/v1",
  kind: "PrometheusRule",
  metadata: {
    name: "docket-alerts",
    labels: {
      "app.kubernetes.io/part-of": "docket",
      // kube-prometheus-stack's default ruleSelector: the Helm release's name
      release: "kube-prometheus-stack",
    },
  },
  spec: { groups: rules.groups },
};
process.stdout.write(
  "# GENERATED from deploy/monitoring/rules/docket-alerts.yml by tools/deploy/prometheus-rule.mjs;\n" +
    "# edit the rules file and regenerate (make deploy-check fails when the two differ):\n" +
    "#   node tools/deploy/prometheus-rule.mjs deploy/monitoring/rules/docket-alerts.yml \\\n" +
    "#     > deploy/monitoring/kube-prometheus-stack/prometheusrule.yaml\n" +
    YAML.stringify(obj, { lineWidth: 0 }),
);
