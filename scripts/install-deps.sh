#!/usr/bin/env bash
# Installs the Debian packages Docket needs to build, run or test, when they are missing.
# Usage: scripts/install-deps.sh build|test|analysis  (each ⊇ build). Never upgrades what is
# installed.
set -euo pipefail
what=${1:-build}

build_pkgs=(build-essential cmake pkg-config clang-format
  libmicrohttpd-dev libjansson-dev libjwt-dev libargon2-dev libsodium-dev libssl-dev libpq-dev
  libsqlite3-dev libhiredis-dev libyaml-dev libcurl4-openssl-dev zlib1g-dev)
test_pkgs=(clang libcmocka-dev postgresql-15 redis-server openssl prometheus curl
  python3-pytest python3-pytest-xdist python3-requests python3-jwt python3-psycopg2 python3-redis python3-yaml
  jq nodejs npm chromium)

analysis_pkgs=(clang-tidy cppcheck gcovr)

pkgs=("${build_pkgs[@]}")
[ "$what" = test ] && pkgs+=("${test_pkgs[@]}")
[ "$what" = analysis ] && pkgs+=("${analysis_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# node/npm may come from the machine image rather than Debian: accept them on PATH.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=()
  for p in "${missing[@]}"; do [ "$p" = nodejs ] || [ "$p" = npm ] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
if [ ! -d /var/lib/apt/lists ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] \
   || ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then
  $sudo apt-get update -q -o DPkg::Lock::Timeout=600
fi
$sudo apt-get install -y -q --no-upgrade --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
