#!/usr/bin/env bash
# The sse_fanout scenario (see bench/README.md, "sse_fanout"): N open notification streams
# across U users on one client thread (bench/lib/sse_fanout.py, Python selectors/epoll), idle,
# then notifications at a steady rate. Starts PostgreSQL 15 (with pg_stat_statements), Redis
# and Docket (`all`, or split: gateway + users + auth + tasks + R notifications replicas) on
# 127.0.0.1, stops all of it at the end; writes bench/results/<date>-<commit>-sse_fanout-<mode>.json.
#
# Split mode runs G gateways (default 2: a proxied stream costs a gateway two descriptors, and
# the open-file hard limit here is 20,000); the client spreads the streams over them.
#
# Usage: bench/sse_fanout.sh [--split] [--replicas=R] [--gateways=G] [--users=2000] [--streams=10000]
#                            [--idle=30] [--settle=3] [--rate=200] [--load=30] [--bin=PATH] [--no-build]
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
PY=/usr/bin/python3
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
mode=all
replicas=1
gateways=2
users=2000
streams=10000
idle=30
settle=3
rate=200
load=30
bin=${DOCKET_BIN:-}
build=1
keep=0
results=${BENCH_RESULTS:-$BENCH/results}

for arg in "$@"; do
    val=${arg#*=}
    case $arg in
    --split) mode=split ;;
    --replicas=*) replicas=$val ;;
    --gateways=*) gateways=$val ;;
    --users=*) users=$val ;;
    --streams=*) streams=$val ;;
    --idle=*) idle=$val ;;
    --settle=*) settle=$val ;;
    --rate=*) rate=$val ;;
    --load=*) load=$val ;;
    --bin=*) bin=$val ;;
    --no-build) build=0 ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "sse_fanout: unknown option $arg" >&2; exit 2 ;;
    esac
done
if [ -z "$bin" ]; then
    [ "$build" = 1 ] && make -C "$REPO" build >/dev/null
    bin=$REPO/build/docket
fi
command -v redis-server >/dev/null || { echo "sse_fanout: redis-server missing (apt-get install redis-server)" >&2; exit 1; }

# The streams, the client's sockets and (split) the gateway's upstream sockets need files.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/docket-sse-fanout.XXXXXX)
chmod 755 "$WORK"
pids=()
redis_pid=
pg_started=0
ok=0
as_pg() { if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
log() { printf '[sse_fanout %s] %s\n' "$(date +%T)" "$*"; }

cleanup() {
    local rc=$? pid
    set +e
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    done
    if [ -n "$redis_pid" ]; then
        redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1
        wait "$redis_pid" 2>/dev/null
    fi
    [ "$pg_started" = 1 ] && as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null 2>&1
    if [ "$ok" = 1 ] && [ "$keep" = 0 ]; then
        rm -rf "$WORK"
    else
        for f in "$WORK"/docket-*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 15 "$f"; }; done >&2
        echo "sse_fanout: work directory kept: $WORK" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

pg_port=$(free_port)
mkdir -p "$WORK/pg"
[ "$(id -u)" -eq 0 ] && chown postgres "$WORK/pg"
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth-local=trust --auth-host=trust \
    -E UTF8 --locale=C.UTF-8 --no-sync >"$WORK/initdb.log" 2>&1
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/pg.log" -w -o \
    "-c listen_addresses=127.0.0.1 -p $pg_port -k $WORK/pg -c fsync=off -c max_connections=300 -c shared_preload_libraries=pg_stat_statements" \
    start >/dev/null </dev/null
pg_started=1
pg_pid=$(head -n 1 "$WORK/pg/data/postmaster.pid")
"$PGBIN/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -qAt -c "CREATE DATABASE docket" >/dev/null
"$PGBIN/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d docket -qAt -c "CREATE EXTENSION pg_stat_statements" >/dev/null
redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --daemonize no \
    >"$WORK/redis.log" 2>&1 </dev/null &
redis_pid=$!
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

env_common=(
    "JWT_SECRET=$($PY -c 'import secrets; print(secrets.token_urlsafe(48))')"
    "DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/docket"
    "REDIS_URL=redis://127.0.0.1:$redis_port"
    # one client IP holds every stream; seeding is not what is measured
    "DOCKET_GATEWAY_RATE_LIMIT_RPS=0" "DOCKET_RATE_LIMITING_MAX_REQUESTS=10000000"
    "DOCKET_SERVER_MAX_CONNECTIONS_PER_IP=0" "DOCKET_SERVER_MAX_CONNECTIONS=${DOCKET_SERVER_MAX_CONNECTIONS:-30000}"
    "DOCKET_AUTH_ARGON2_MEMORY_KIB=1024" "DOCKET_AUTH_ARGON2_ITERATIONS=1"
    "DOCKET_AUTH_JWT_EXPIRY=1h" "DOCKET_LOG_ACCESS=false"
)
env "${env_common[@]}" "$bin" migrate >"$WORK/migrate.log" 2>&1 </dev/null

start() { # NAME PORT ENV... -- ARGS...
    local name=$1 port=$2
    shift 2
    local extra=()
    while [ "$1" != -- ]; do extra+=("$1"); shift; done
    shift
    env "${env_common[@]}" "${extra[@]}" "$bin" "$@" --server.port="$port" --server.host=127.0.0.1 \
        >"$WORK/docket-$name.log" 2>&1 </dev/null &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 600); do
        curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/ready" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { echo "sse_fanout: docket $name exited" >&2; exit 1; }
        sleep 0.05
    done
    log "docket $name on :$port (pid $pid)"
    eval "pid_$(echo "$name" | tr -c 'a-z0-9\n' _)=$pid"
}

port=$(free_port)
bases=http://127.0.0.1:$port
hold=""
gw_pids=""
if [ "$mode" = all ]; then
    start all "$port" -- all
    hold=$pid_all
else
    declare -A urls=()
    svc_env=("DOCKET_SERVER_TRUST_FORWARDED_FOR=true")
    uport=$(free_port)
    tport=$(free_port)
    svc_env+=("DOCKET_GATEWAY_USERS_URL=http://127.0.0.1:$uport" "DOCKET_GATEWAY_TASKS_URL=http://127.0.0.1:$tport")
    start users "$uport" "${svc_env[@]}" -- users
    urls[users]=http://127.0.0.1:$uport
    start tasks "$tport" "${svc_env[@]}" -- tasks
    urls[tasks]=http://127.0.0.1:$tport
    p=$(free_port); start auth "$p" "${svc_env[@]}" -- auth; urls[auth]=http://127.0.0.1:$p
    for r in $(seq "$replicas"); do
        p=$(free_port)
        start "notifications$r" "$p" "${svc_env[@]}" -- notifications
        urls[notifications]+="${urls[notifications]:+,}http://127.0.0.1:$p"
        v=pid_notifications$r
        hold+=" ${!v}"
    done
    gw_env=()
    for s in users auth tasks notifications; do gw_env+=("DOCKET_GATEWAY_${s^^}_URL=${urls[$s]}"); done
    port=$(free_port)   # now: a port taken before the services bound theirs could be one of them
    start gateway "$port" "${gw_env[@]}" -- gateway
    gw_pids=$pid_gateway
    bases=http://127.0.0.1:$port
    for g in $(seq 2 "$gateways"); do
        p=$(free_port)
        start "gateway$g" "$p" "${gw_env[@]}" -- gateway
        v=pid_gateway$g
        gw_pids+=" ${!v}"
        bases+=",http://127.0.0.1:$p"
    done
fi

log "mode $mode (notifications replicas: $replicas), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$results"
out="$results/$(date -u +%Y%m%dT%H%M%SZ)-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo nogit)-sse_fanout-$mode.json"
PATH=$PGBIN:$PATH $PY "$BENCH/lib/sse_fanout.py" --base "$bases" --users "$users" \
    --streams "$streams" --idle "$idle" --settle "$settle" --rate "$rate" --load "$load" --pids "${pids[*]}" \
    --hold-pids "$hold" --gw-pids "${gw_pids:-}" --db-pids "$pg_pid $redis_pid" --pg-port "$pg_port" --redis-port "$redis_port" \
    --label "$mode" --out "$out" </dev/null
if [ "$mode" = split ]; then
    $PY - "$out" $gw_pids <<'EOF'
import json, sys
p = sys.argv[1]
r = json.load(open(p))
r["rss_mib_gateways"] = []
for gw in sys.argv[2:]:
    for line in open(f"/proc/{gw}/status"):
        if line.startswith("VmRSS:"):
            r["rss_mib_gateways"].append(round(int(line.split()[1]) / 1024, 1))
json.dump(r, open(p, "w"), indent=1)
EOF
fi
grep -h '"level":"\(warn\|error\)"' "$WORK"/docket-*.log | sed "s/.*\"level\":\"\([a-z]*\)\".*\"msg\":\"\([^\"]*\)\".*/\1: \2/" | sort | uniq -c | sort -rn | head -10 || true
cat "$out"
ok=1
