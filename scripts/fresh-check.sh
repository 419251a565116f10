#!/usr/bin/env bash
# The first ten minutes of a new user, on a machine that has never seen Docket: in a podman
# container from the debootstrapped Debian 12 base that `make image-check` builds (nothing on it
# but Debian's minbase):
#   1. apt-get install git make ca-certificates — what it takes to get the repository and type
#      `make` at all;
#   2. git clone of this repository (its committed HEAD, or --rev REV: uncommitted work is not
#      in a clone);
#   3. `make run` in the background, until /health answers (make run installs what it needs);
#   4. curl and jq, as the README's "Try it" says, then that block, extracted from README.md,
#      against the running `make run` (bash -euo pipefail; an unexpected 4xx/5xx fails it).
# Takes 3-5 minutes (most of it apt inside the container; the base is reused once built).
# Usage: scripts/fresh-check.sh [--rev REV] [--refresh-base]. Needs root, podman, runc,
# debootstrap (installed when missing). Exit 0 when the README worked, 1 when not, 2 when the
# tooling cannot run here.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

rev=HEAD refresh=0
while [ $# -gt 0 ]; do
  case $1 in
    --rev) rev=${2:?--rev needs a revision}; shift 2 ;;
    --refresh-base) refresh=1; shift ;;
    *) echo "usage: $0 [--rev REV] [--refresh-base]" >&2; exit 2 ;;
  esac
done

t0=$(date +%s)
say() { echo "fresh-check: $*"; }
die() { echo "fresh-check: FAIL $*" >&2; exit 1; }
elapsed() { echo $(($(date +%s) - $1)); }

if [ "$(id -u)" -ne 0 ]; then
  echo "fresh-check: needs root (rootful podman and debootstrap); skipped" >&2
  exit 2
fi
missing=()
for p in podman runc debootstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-cache show "${missing[0]}" >/dev/null 2>&1 || apt-get update -q -o DPkg::Lock::Timeout=600 >&2
  apt-get install -y -q --no-upgrade --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2 \
    || { echo "fresh-check: cannot install ${missing[*]}; skipped" >&2; exit 2; }
fi

work=$(mktemp -d /tmp/docket-fresh-check.XXXXXX)
name=docket-fresh-check-$$
cleanup() {
  podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=scripts/debian-base.sh
. "$root/scripts/debian-base.sh"
podman_config
ensure_debian_base

# the repository as a clone would see it: a bare copy of the commits, mounted read-only
commit=$(git -C "$root" rev-parse "$rev")
git clone -q --bare "$root" "$work/docket.git"
git -C "$work/docket.git" update-ref refs/heads/fresh-check "$commit"
git -C "$work/docket.git" symbolic-ref HEAD refs/heads/fresh-check
# the README's Try-it block, for step 4 (from the commit, not the work tree)
git -C "$root" show "$commit:README.md" \
  | awk '/<!-- readme-test: begin/{f=1} /<!-- readme-test: end/{f=0} f' \
  | awk '/^```sh/{b=1; next} /^```/{b=0} b' >"$work/try-it.sh"
port=3000
if (exec 3<>/dev/tcp/127.0.0.1/3000) 2>/dev/null; then
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
  sed -i "s/localhost:3000/localhost:$port/g" "$work/try-it.sh"
  say "port 3000 is taken on this host: make run PORT=$port"
fi

cat >"$work/inside.sh" <<EOF
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
step() { echo "fresh-check: [\$((\$(date +%s) - $t0)) s] \$*"; }
step "1. apt-get install git make ca-certificates (to clone and run make)"
apt-get update -q >/tmp/apt.log 2>&1 && apt-get install -y -q --no-install-recommends git make ca-certificates >>/tmp/apt.log 2>&1 \
  || { tail -20 /tmp/apt.log; exit 1; }
step "2. git clone"
git clone -q /repo.git /root/docket
cd /root/docket
git log -1 --format='   %h %s'
step "3. make run PORT=$port"
t=\$(date +%s)
make run PORT=$port >/tmp/make-run.log 2>&1 &
runpid=\$!
# no curl yet (the README installs it for step 4): ask /health with bash's /dev/tcp
health() { (exec 3<>/dev/tcp/127.0.0.1/$port && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 \
  && head -c 12 <&3 | grep -q ' 200') 2>/dev/null; }
for _ in \$(seq 1800); do
  health && break
  if ! kill -0 \$runpid 2>/dev/null; then echo "make run exited:"; tail -40 /tmp/make-run.log; exit 1; fi
  sleep 0.5
done
health || { tail -40 /tmp/make-run.log; exit 1; }
step "   /health answers, \$((\$(date +%s) - t)) s after make run; make run printed \$(wc -l </tmp/make-run.log) lines, ending:"
grep -v '"request completed"' /tmp/make-run.log | tail -n 4 | sed 's/^/   | /'
step "4. apt-get install curl jq (as the README says), then the README's Try-it block"
apt-get install -y -q --no-install-recommends curl jq >>/tmp/apt.log 2>&1 || { tail -20 /tmp/apt.log; exit 1; }
[ -s /try-it.sh ] || { echo "README.md has no readme-test block"; exit 1; }
mkdir -p /tmp/try && cd /tmp/try
{ echo 'curl() { case " \$* " in *" -i "*|*" -w "*) command curl "\$@" ;; *) command curl --fail-with-body "\$@" ;; esac; }'
  echo 'set -euo pipefail'
  cat /try-it.sh; } >/tmp/try-it-run.sh
if bash /tmp/try-it-run.sh >/tmp/try.out 2>&1; then
  step "   the Try-it block ran to the end (\$(wc -l </tmp/try.out) lines of output; its statuses:" \
       "\$(grep -E '^(HTTP/[0-9.]+ [0-9]{3}|[0-9]{3})' /tmp/try.out | awk '{print (\$2 ~ /^[0-9]+\$/ ? \$2 : \$1)}' | tr '\n' ' '))"
else
  cat /tmp/try.out; echo "the Try-it block failed"; exit 1
fi
kill \$runpid 2>/dev/null || true
EOF

say "container from $base; repository at $(git -C "$root" rev-parse --short "$commit")"
podman run --rm --name "$name" --network=host \
  -v "$work/docket.git:/repo.git:ro" -v "$work/try-it.sh:/try-it.sh:ro" -v "$work/inside.sh:/inside.sh:ro" \
  "$base" bash /inside.sh || die "the first ten minutes failed (see above)"
say "ok   fresh machine → make run → README Try-it block, in $(elapsed "$t0") s"
