#!/bin/sh
# Smoke test of a running Docket: one real round trip through the API (register → login →
# /users/me → logout) with a throwaway account, deleted again at the end (also when a step
# fails), so production keeps no smoke-test accounts. It first waits for the API to answer
# (a just-started container or a just-rolled Deployment needs a moment).
# Usage: deploy/smoke-test.sh BASE_URL      e.g. deploy/smoke-test.sh https://api.staging.example.com
# Environment: SMOKE_TIMEOUT (seconds to wait for the API, default 60), SMOKE_INSECURE=1 (accept
# a self-signed certificate), SMOKE_OPS=1 (also /health and /ready: only where they are
# reachable, e.g. a container's own port; the Ingress serves /api alone).
# Exit 0 when every step passed, 1 otherwise. Needs curl.
set -eu
base=${1:?usage: $0 BASE_URL}
base=${base%/}
api="$base/api/v1"
timeout=${SMOKE_TIMEOUT:-60}
k=""
[ "${SMOKE_INSECURE:-0}" = 1 ] && k="--insecure"
tmp=$(mktemp -d)
token=""
cleanup() {
  # the account goes, whatever happened after login
  if [ -n "$token" ]; then
    # shellcheck disable=SC2086 # $k is empty or one flag
    code=$(curl -sS $k --max-time 10 -o /dev/null -w '%{http_code}' -X DELETE \
      -H "Authorization: Bearer $token" "$api/users/me" 2>/dev/null) || code=000
    [ "$code" = 204 ] && echo "smoke: ok: deleted the smoke-test account" ||
      echo "smoke: warning: could not delete the smoke-test account $email (HTTP $code)" >&2
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
ok() { echo "smoke: ok: $*"; }

# $1 method, $2 url, $3 expected status, [$4 body], [$5 bearer token]; body in $tmp/body
req() {
  set -- "$1" "$2" "$3" "${4:-}" "${5:-}"
  # shellcheck disable=SC2086 # $k is empty or one flag
  status=$(curl -sS $k --max-time 10 -o "$tmp/body" -w '%{http_code}' -X "$1" \
    -H 'Content-Type: application/json' ${5:+-H "Authorization: Bearer $5"} \
    ${4:+--data "$4"} "$2") || fail "$1 $2: no answer"
  [ "$status" = "$3" ] || fail "$1 $2: HTTP $status, expected $3: $(head -c 300 "$tmp/body")"
}
json_field() { sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\([^\"]*\)\".*/\1/p" "$tmp/body" | head -n1; }

# wait_for URL STATUS WHAT: polls once a second until URL answers STATUS
wait_for() {
  i=0
  # shellcheck disable=SC2086
  until [ "$(curl -sS $k --max-time 5 -o "$tmp/body" -w '%{http_code}' "$1" 2>/dev/null)" = "$2" ]; do
    i=$((i + 1))
    [ "$i" -lt "$timeout" ] || fail "$3 did not answer $2 within ${timeout}s: $(head -c 300 "$tmp/body" 2>/dev/null)"
    sleep 1
  done
  ok "$3"
}

if [ "${SMOKE_OPS:-0}" = 1 ]; then
  wait_for "$base/health" 200 "/health"
  wait_for "$base/ready" 200 "/ready"
fi
# the API is up when it refuses an anonymous caller the way it should
wait_for "$api/users/me" 401 "the API answers (/users/me without a token is 401)"

email="smoke-$(date +%s)-$$@example.com"
password="smoke-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
req POST "$api/auth/register" 201 "{\"email\":\"$email\",\"password\":\"$password\",\"name\":\"Smoke Test\"}"
ok "register $email"
req POST "$api/auth/login" 200 "{\"email\":\"$email\",\"password\":\"$password\"}"
token=$(json_field access_token)
[ -n "$token" ] || fail "login: no access_token in $(head -c 300 "$tmp/body")"
ok "login"
req GET "$api/users/me" 200 "" "$token"
grep -q "\"$email\"" "$tmp/body" || fail "/users/me does not name $email"
ok "/users/me"
# a second session for the logout check; the first one deletes the account at exit
req POST "$api/auth/login" 200 "{\"email\":\"$email\",\"password\":\"$password\"}"
second=$(json_field access_token)
req POST "$api/auth/logout" 204 "" "$second"
req GET "$api/users/me" 401 "" "$second"
ok "logout (the session's token is refused afterwards)"
echo "smoke: all checks passed against $base"
