#!/bin/sh
# Smoke test of a running Docket: liveness, readiness, metrics, and one real round trip
# through the API (register → login → /users/me → logout) with a throwaway account.
# Usage: deploy/smoke-test.sh BASE_URL      e.g. deploy/smoke-test.sh https://api.staging.example.com
# Environment: SMOKE_TIMEOUT (seconds to wait for /ready, default 60), SMOKE_INSECURE=1 (accept
# a self-signed certificate). Exit 0 when every step passed, 1 otherwise. Needs curl.
set -eu
base=${1:?usage: $0 BASE_URL}
base=${base%/}
api="$base/api/v1"
timeout=${SMOKE_TIMEOUT:-60}
k=""
[ "${SMOKE_INSECURE:-0}" = 1 ] && k="--insecure"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
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

req GET "$base/health" 200
ok "/health"
i=0
# shellcheck disable=SC2086
until [ "$(curl -sS $k --max-time 5 -o "$tmp/body" -w '%{http_code}' "$base/ready" 2>/dev/null)" = 200 ]; do
  i=$((i + 1))
  [ "$i" -lt "$timeout" ] || fail "/ready did not answer 200 within ${timeout}s: $(head -c 300 "$tmp/body")"
  sleep 1
done
ok "/ready"

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
req GET "$api/users/me" 401
ok "/users/me without a token is 401"
req POST "$api/auth/logout" 204 "" "$token"
ok "logout"
echo "smoke: all checks passed against $base"
