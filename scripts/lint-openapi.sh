#!/usr/bin/env bash
# Lints api/openapi.yaml with the pinned Redocly CLI (tools/package-lock.json) and the repo's
# redocly.yaml (`recommended` ruleset) plus .redocly.lint-ignore.yaml.
# Usage: scripts/lint-openapi.sh   (run by `make lint-openapi`). Installs tools/node_modules with
# `npm ci` when it is missing or older than the lock file. Exits 1 on any error or warning,
# in the document or in the Redocly configuration; 2 when the tooling cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

doc=api/openapi.yaml
redocly=tools/node_modules/.bin/redocly
stamp=tools/node_modules/.package-lock.json # npm's record of what is installed

for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "lint-openapi: $tool not found (make deps-test)" >&2; exit 2; }
done

if [ ! -x "$redocly" ] || [ ! -f "$stamp" ] || [ tools/package-lock.json -nt "$stamp" ] \
   || [ tools/package.json -nt "$stamp" ]; then
  echo "lint-openapi: installing tools/ (npm ci)" >&2
  npm ci --prefix tools --no-audit --no-fund >&2
  touch "$stamp" # npm ci may keep the lock file's mtime; mark this install as current
fi

# No usage reports, no update checks: the lint must not depend on the network.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Machine-readable run: the exit status alone does not count warnings.
rc=0
"$redocly" lint "$doc" --config redocly.yaml --lint-config error --format json \
  >"$tmp/report.json" 2>"$tmp/stderr" || rc=$?

if ! totals=$(node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const t = r.totals || {};
  if (![t.errors, t.warnings, t.ignored].every(Number.isInteger)) process.exit(1);
  console.log(`${t.errors} ${t.warnings} ${t.ignored} ${r.version || "?"}`);
' "$tmp/report.json" 2>/dev/null); then
  echo "lint-openapi: redocly produced no report (exit $rc):" >&2
  cat "$tmp/stderr" "$tmp/report.json" >&2
  exit 2
fi
read -r errors warnings ignored version <<<"$totals"

if [ "$rc" -ne 0 ] || [ "$errors" -ne 0 ] || [ "$warnings" -ne 0 ]; then
  # Show the problems with their source lines, as a person wants to read them.
  "$redocly" lint "$doc" --config redocly.yaml --lint-config error --format codeframe \
    --max-problems 1000 >&2 || true
  echo "lint-openapi: FAILED — $errors error(s), $warnings warning(s) in $doc" \
       "(redocly $version, exit $rc)" >&2
  exit 1
fi

echo "lint-openapi: $doc ok — 0 errors, 0 warnings, $ignored listed exception(s)" \
     "in .redocly.lint-ignore.yaml (redocly $version, ruleset: recommended)"
