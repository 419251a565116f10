#!/usr/bin/env bash
# Builds the Docket image with podman from the repository's source and runs it the way
# Kubernetes does (read-only root filesystem, no capabilities, a volume for the data):
#   1. a Debian bookworm base bootstrapped locally (debootstrap --variant=minbase, slimmed like
#      debian:bookworm-slim, apt sources of this machine) — no registry is needed; kept in
#      podman's storage as localhost/docket-base/debian:bookworm-slim for the next run;
#   2. podman build of deploy/docker/Dockerfile (multi-stage: the builder compiles the real
#      source with cmake) tagged docket/docket and the five service names; and of the backup
#      image deploy/backup/Dockerfile;
#   3. checks of the image: USER 10001:10001, HEALTHCHECK, EXPOSE, no build tools, no missing
#      shared library (ldd), no secret-looking environment;
#   4. a container of it (`docket all`, embedded SQLite): /health and /ready answer, the process
#      runs as uid 10001 (read from /proc on the host), the HEALTHCHECK passes,
#      deploy/smoke-test.sh passes (register → login → /users/me), SIGTERM stops it cleanly;
#   5. split mode, as Kubernetes runs it: a throwaway PostgreSQL and Redis
#      (scripts/with-test-servers.sh), `docket migrate` as a one-shot container, then one
#      container per service of the image under its service name (docket/user-service … each
#      with its command) and docket/api-gateway in front; the smoke test through the gateway.
# Usage: scripts/image-check.sh [--rev REV] [--refresh-base] [--keep]
#   --rev REV       build the source of git revision REV (src/, CMakeLists.txt, scripts/; e.g.
#                   HEAD while the work tree is half-edited) with the work tree's deploy/ files
#   --refresh-base  bootstrap the Debian base again
#   --keep          keep the built images (default: remove them, keep the base)
# Needs root (podman without a user namespace setup, debootstrap). Installs podman, runc,
# debootstrap when missing. Exit 0 when every check passed, 1 when one failed, 2 when the
# tooling cannot run here.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

rev="" refresh=0 keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --rev) rev=${2:?--rev needs a revision}; shift 2 ;;
    --refresh-base) refresh=1; shift ;;
    --keep) keep=1; shift ;;
    *) echo "usage: $0 [--rev REV] [--refresh-base] [--keep]" >&2; exit 2 ;;
  esac
done

t0=$(date +%s)
say() { echo "image-check: $*"; }
die() { echo "image-check: FAIL $*" >&2; exit 1; }
elapsed() { echo $(($(date +%s) - $1)); }

if [ "$(id -u)" -ne 0 ]; then
  echo "image-check: needs root (rootful podman and debootstrap); skipped" >&2
  exit 2
fi
# step 5 needs PostgreSQL and Redis: run the whole check under scripts/with-test-servers.sh
if [ -z "${DOCKET_TEST_PG_URL:-}" ] && [ -z "${DOCKET_IMAGE_CHECK_INNER:-}" ] \
   && [ -x /usr/lib/postgresql/15/bin/initdb ] && command -v redis-server >/dev/null; then
  export DOCKET_IMAGE_CHECK_INNER=1
  exec scripts/with-test-servers.sh "$0" "$@"
fi

# ---- tools ------------------------------------------------------------------------------------
missing=()
for p in podman runc debootstrap curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-cache show "${missing[0]}" >/dev/null 2>&1 || apt-get update -q -o DPkg::Lock::Timeout=600 >&2
  apt-get install -y -q --no-upgrade --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2 \
    || { echo "image-check: cannot install ${missing[*]}; skipped" >&2; exit 2; }
fi

work=$(mktemp -d /tmp/docket-image-check.XXXXXX)
name=docket-image-check-$$
volume=$name-data
split_containers=()
split_volumes=()
cleanup() {
  podman rm -f -t 0 "$name" "${split_containers[@]+"${split_containers[@]}"}" >/dev/null 2>&1 || true
  podman volume rm -f "$volume" "${split_volumes[@]+"${split_volumes[@]}"}" >/dev/null 2>&1 || true
  if [ $keep = 0 ]; then
    podman rmi -f docket/docket:check docket/api-gateway:check docket/auth-service:check \
      docket/user-service:check docket/task-service:check docket/notification-service:check \
      docket/pg-backup:check >/dev/null 2>&1 || true
    podman image prune -f >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---- 1. base image ----------------------------------------------------------------------------
# shellcheck source=scripts/debian-base.sh
. "$root/scripts/debian-base.sh"
podman_config
ensure_debian_base

# ---- 2. build ---------------------------------------------------------------------------------
context=$root
if [ -n "$rev" ]; then
  context=$work/src
  mkdir -p "$context"
  git -C "$root" archive "$rev" | tar -x -C "$context"
  rm -rf "$context/deploy"
  cp -r "$root/deploy" "$context/deploy"
  cp "$root/.dockerignore" "$context/.dockerignore"
  say "building from git revision $(git -C "$root" rev-parse --short "$rev")"
else
  say "building from the work tree ($(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD -- src CMakeLists.txt 2>/dev/null || echo ', with uncommitted changes'))"
fi
t=$(date +%s)
tags=()
for s in docket api-gateway auth-service user-service task-service notification-service; do
  tags+=(-t "docket/$s:check")
done
podman build --format docker --pull=never --network=host \
  --build-arg DEBIAN_IMAGE="$base" --build-arg VERSION=check \
  --build-arg REVISION="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)" \
  -f "$context/deploy/docker/Dockerfile" "${tags[@]}" "$context" >"$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log" >&2; die "podman build of deploy/docker/Dockerfile failed"; }
build_s=$(elapsed "$t")
size=$(podman image inspect --format '{{.Size}}' docket/docket:check)
say "ok   built docket/docket:check in $build_s s ($((size / 1000000)) MB; same image as docket/{api-gateway,auth-service,user-service,task-service,notification-service}:check)"
t=$(date +%s)
# PG_MAJOR 15: Debian 12's own client (the PGDG repository may be out of reach here)
podman build --format docker --pull=never --network=host --build-arg DEBIAN_IMAGE="$base" --build-arg PG_MAJOR=15 \
  -f "$context/deploy/backup/Dockerfile" -t docket/pg-backup:check "$context" >"$work/build-backup.log" 2>&1 \
  || { tail -40 "$work/build-backup.log" >&2; die "podman build of deploy/backup/Dockerfile failed"; }
say "ok   built docket/pg-backup:check in $(elapsed "$t") s ($(podman run --rm --no-healthcheck --entrypoint pg_dump docket/pg-backup:check --version))"

# ---- 3. the image -----------------------------------------------------------------------------
ids=$(for s in docket api-gateway auth-service user-service task-service notification-service; do
  podman image inspect --format '{{.Id}}' "docket/$s:check"; done | sort -u | wc -l)
[ "$ids" = 1 ] || die "the six tags are not one image"
user=$(podman image inspect --format '{{.Config.User}}' docket/docket:check)
[ "$user" = 10001:10001 ] || die "image USER is '$user', expected 10001:10001"
say "ok   USER $user"
hc=$(podman image inspect --format '{{if .Config.Healthcheck}}{{join .Config.Healthcheck.Test " "}}{{end}}' docket/docket:check)
[ -n "$hc" ] || die "no HEALTHCHECK in the image"
say "ok   HEALTHCHECK $hc"
ports=$(podman image inspect --format '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}' docket/docket:check)
[[ $ports == *3000/tcp* ]] || die "port 3000 not exposed (EXPOSE: $ports)"
say "ok   EXPOSE $ports"
if podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' docket/docket:check | grep -iE '^[A-Z_]*(SECRET|PASSWORD|TOKEN|ACCESS_KEY)[A-Z_]*='; then
  die "secret-looking environment baked into the image"
fi
say "ok   no secret in the image environment"
if podman history --no-trunc --format '{{.CreatedBy}}' docket/docket:check | grep -iE 'JWT_SECRET=|PASSWORD=|AWS_SECRET'; then
  die "secret-looking value in the image history"
fi
lib_out=$(podman run --rm --no-healthcheck --network=none --entrypoint ldd docket/docket:check /usr/local/bin/docket)
if grep -q 'not found' <<<"$lib_out"; then
  grep 'not found' <<<"$lib_out" >&2
  die "shared libraries missing from the runtime image"
fi
say "ok   every shared library of /usr/local/bin/docket is in the image ($(grep -c '=>' <<<"$lib_out") resolved)"
if tools=$(podman run --rm --no-healthcheck --network=none --entrypoint sh docket/docket:check -c \
    'for t in cc gcc clang cmake make pkg-config; do command -v $t; done; ls /usr/include 2>/dev/null | head -n 3'); [ -n "$tools" ]; then
  die "build tools or headers in the runtime image: $tools"
fi
say "ok   no compiler, cmake or headers in the runtime image"

# ---- 4. a container ---------------------------------------------------------------------------
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
# no systemd here to time the HEALTHCHECK: it is run by hand below (podman healthcheck run)
run_args=(--name "$name" --health-interval=disable --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges
  -v "$volume:/var/lib/docket" docket/docket:check all)
base_url=http://127.0.0.1:$port
t=$(date +%s)
if ! podman run -d -p "127.0.0.1:$port:3000" "${run_args[@]}" >/dev/null 2>"$work/run.err"; then
  # no port forwarding on this machine: share the host's network namespace instead
  podman rm -f "$name" >/dev/null 2>&1 || true
  say "port publishing unavailable ($(head -n1 "$work/run.err")); using --network=host"
  podman run -d --network=host -e DOCKET_SERVER_PORT="$port" "${run_args[@]}" >/dev/null
fi
for _ in $(seq 300); do
  curl -fsS -o /dev/null --max-time 1 "$base_url/health" 2>/dev/null && break
  [ "$(podman inspect --format '{{.State.Running}}' "$name")" = true ] || { podman logs "$name" >&2; die "the container exited"; }
  sleep 0.1
done
health=$(curl -fsS --max-time 2 "$base_url/health") || { podman logs "$name" >&2; die "/health does not answer"; }
say "ok   GET /health → $health (after $(elapsed "$t") s)"
ready=$(curl -fsS --max-time 2 "$base_url/ready") || die "/ready does not answer 200"
say "ok   GET /ready → $ready"
pid=$(podman inspect --format '{{.State.Pid}}' "$name")
uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")
gids=$(awk '/^Gid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")
[ "$uids" = "10001 10001 10001 10001" ] || die "the process runs with uids $uids (real, effective, saved, fs)"
say "ok   the process (host pid $pid, $(tr '\0' ' ' <"/proc/$pid/cmdline")) runs as uid $uids / gid $gids, not root"
capeff=$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")
[ "$capeff" = 0000000000000000 ] || die "effective capabilities $capeff"
say "ok   no effective capabilities (CapEff $capeff)"
if podman exec "$name" sh -c 'touch /usr/local/bin/x' 2>/dev/null; then die "the root filesystem is writable"; fi
podman healthcheck run "$name" >/dev/null 2>&1 || die "the image's HEALTHCHECK fails"
say "ok   HEALTHCHECK passes ($(podman inspect --format '{{.State.Health.Status}}' "$name" 2>/dev/null || echo run))"
SMOKE_TIMEOUT=30 deploy/smoke-test.sh "$base_url" | sed 's/^/image-check:      /' || die "smoke test failed"
metrics_lines=$(curl -fsS --max-time 2 "$base_url/metrics" | grep -c '^http_requests_total') || die "/metrics"
say "ok   /metrics exposes $metrics_lines http_requests_total series"
t=$(date +%s)
podman stop -t 20 "$name" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { podman logs --tail 20 "$name" >&2; die "exit code $code after SIGTERM (137 = killed)"; }
say "ok   SIGTERM: clean exit 0 in $(elapsed "$t") s"
podman logs "$name" 2>&1 | tail -n 3 | sed 's/^/image-check:      log: /'

# ---- 5. split mode ----------------------------------------------------------------------------
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# which split-mode commands this build has (a command it lacks is "unknown command")
has_command() {
  local out
  out=$(podman run --rm --no-healthcheck --network=none docket/docket:check "$1" --server.port=x 2>&1) || true
  [[ $out != *"unknown command"* ]]
}
if [ -z "${DOCKET_TEST_PG_URL:-}" ]; then
  say "skip split mode: no PostgreSQL/Redis (needs postgresql-15 and redis-server: make deps-test)"
elif ! has_command gateway; then
  say "skip split mode: this build has no \`docket gateway\`"
else
  t=$(date +%s)
  common=(--network=host --health-interval=disable --read-only --tmpfs /tmp --cap-drop ALL
    --security-opt no-new-privileges -e DATABASE_URL="$DOCKET_TEST_PG_URL"
    -e REDIS_URL="$DOCKET_TEST_REDIS_URL" -e JWT_SECRET=image-check-only-secret-0123456789abcdef)
  podman run --rm --no-healthcheck "${common[@]}" docket/docket:check migrate >"$work/migrate.log" 2>&1 \
    || { cat "$work/migrate.log" >&2; die "split mode: docket migrate failed"; }
  say "ok   split mode: \`docket migrate\` (one-shot container) applied the schema"
  declare -A port image
  image=([users]=user-service [auth]=auth-service [tasks]=task-service [notifications]=notification-service)
  services=()
  for svc in users auth tasks notifications; do
    if has_command "$svc"; then services+=("$svc"); else say "     split mode: this build has no \`docket $svc\` yet: not started"; fi
  done
  for svc in "${services[@]}"; do port[$svc]=$(free_port); done
  port[gateway]=$(free_port)
  for svc in "${services[@]}" gateway; do
    c=$name-$svc
    split_containers+=("$c")
    img=docket/${image[$svc]:-api-gateway}:check
    extra=(-e DOCKET_SERVER_PORT="${port[$svc]}")
    [ -n "${port[users]:-}" ] && extra+=(-e DOCKET_GATEWAY_USERS_URL="http://127.0.0.1:${port[users]}")
    if [ "$svc" = gateway ]; then
      for up in auth tasks notifications; do
        [ -n "${port[$up]:-}" ] && extra+=(-e "DOCKET_GATEWAY_${up^^}_URL=http://127.0.0.1:${port[$up]}")
      done
    else
      extra+=(-e DOCKET_SERVER_TRUST_FORWARDED_FOR=true)
    fi
    # each service has its own data volume, as each pod has in deploy/k8s: the users service
    # keeps avatars there on the filesystem store
    split_volumes+=("$c-data")
    podman run -d --name "$c" "${common[@]}" -v "$c-data:/var/lib/docket" "${extra[@]}" "$img" "$svc" >/dev/null
    for _ in $(seq 200); do
      curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:${port[$svc]}/ready" 2>/dev/null && break
      [ "$(podman inspect --format '{{.State.Running}}' "$c")" = true ] || break
      sleep 0.1
    done
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${port[$svc]}/ready" \
      || { podman logs "$c" >&2; die "split mode: $img $svc is not ready"; }
    cpid=$(podman inspect --format '{{.State.Pid}}' "$c")
    cuid=$(awk '/^Uid:/ {print $3}' "/proc/$cpid/status")
    [ "$cuid" = 10001 ] || die "split mode: $svc runs as uid $cuid"
    say "ok   split mode: $img \`docket $svc\` ready on :${port[$svc]}, uid $cuid"
  done
  SMOKE_TIMEOUT=30 deploy/smoke-test.sh "http://127.0.0.1:${port[gateway]}" | sed 's/^/image-check:      /' \
    || { for c in "${split_containers[@]}"; do podman logs --tail 20 "$c" >&2; done; die "split mode: smoke test through the gateway failed"; }
  for c in "${split_containers[@]}"; do
    podman stop -t 20 "$c" >/dev/null
    code=$(podman inspect --format '{{.State.ExitCode}}' "$c")
    [ "$code" = 0 ] || { podman logs --tail 20 "$c" >&2; die "split mode: $c exited $code after SIGTERM"; }
  done
  say "ok   split mode: smoke test through the gateway, then every container stopped cleanly ($(elapsed "$t") s)"
fi

say "all checks passed in $(elapsed "$t0") s (image build $build_s s)"
