#!/usr/bin/env bash
# Docket load benchmark (see bench/README.md). Starts what it measures — PostgreSQL, Redis,
# Docket (`all`, or split into gateway + services, or `all` on SQLite) and nginx as the HTTP
# ceiling — seeds Docket through its public API, runs each scenario with wrk (and pgbench for
# db_ceiling), prints one row per scenario plus the targets, and writes
# bench/results/<date>-<commit>-<mode>.json. Loopback only; bounded in time (--max-seconds);
# stops everything it started, whatever happens.
#
# Usage: bench/run.sh [--split | --sqlite] [--duration=S] [--connections=N] [--users=N]
#                     [--tasks=N] [--scenarios=a,b,...] [--bin=PATH] [--no-build] ...
#        bench/run.sh --help
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
PY=/usr/bin/python3
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export PGBIN

mode=all
duration=10
warmup=1
conns=32
login_conns=4
storm_conns=200
storm_me_conns=4
users=50
tasks=200
scenarios=""
bin=${DOCKET_BIN:-}
build=1
install=1
keep=0
max_seconds=900
results=${BENCH_RESULTS:-$BENCH/results}

usage() {
    cat <<EOF
Usage: bench/run.sh [options]

Deployment (one per run):
  (default)            docket all on PostgreSQL 15 + Redis
  --split              docket gateway + users + auth + tasks, one process each, on PostgreSQL + Redis
  --sqlite             docket all on SQLite (embedded defaults: no PostgreSQL, no Redis)

Load:
  --duration=S         seconds per scenario (default $duration), after --warmup=S (default $warmup)
  --connections=N      wrk connections (default $conns); pgbench clients for db_ceiling too
  --login-connections=N            login scenario (default $login_conns)
  --storm-connections=N            login_storm (default $storm_conns)
  --storm-me-connections=N         me during the storm, and me_low (default $storm_me_conns)
  --users=N            seeded users (default $users)
  --tasks=N            seeded tasks per user (default $tasks)
  --scenarios=a,b,...  subset, in this order (default: all of them for the mode):
                       health ceiling me task_get db_ceiling task_list search project_list
                       task_create task_patch mixed me_low login login_storm

Other:
  --bin=PATH           docket binary to measure (default: \`make build\`, then build/docket;
                       or \$DOCKET_BIN)
  --no-build           use build/docket as it is
  --no-install         do not apt-get install missing tools (wrk, nginx, redis, pgbench, ...)
  --results=DIR        where the JSON goes (default bench/results)
  --max-seconds=S      stop everything and fail after S seconds (default $max_seconds)
  --keep               keep the work directory (logs, data file) under /tmp

BENCH_PG_OPTIONS adds server options to the throwaway PostgreSQL, e.g. "-c
shared_preload_libraries=pg_stat_statements" to see, with --keep, what each statement cost.
DOCKET_* variables in the environment reach every docket process (e.g. DOCKET_SERVER_THREADS,
DOCKET_DATABASE_POOL_SIZE) and are recorded in the result.
EOF
}

while [ $# -gt 0 ]; do
    opt=$1
    val=
    case "$opt" in
    --*=*) val=${opt#*=}; opt=${opt%%=*} ;;
    esac
    case "$opt" in
    --duration | --warmup | --connections | --login-connections | --storm-connections | \
        --storm-me-connections | --users | --tasks | --scenarios | --bin | --results | \
        --max-seconds | --mode)
        if [ -z "$val" ]; then
            [ $# -ge 2 ] || { echo "bench: $opt needs a value" >&2; exit 2; }
            val=$2
            shift
        fi
        ;;
    esac
    case "$opt" in
    --split) mode='split' ;;
    --sqlite) mode=sqlite ;;
    --mode) mode=$val ;;
    --duration) duration=$val ;;
    --warmup) warmup=$val ;;
    --connections) conns=$val ;;
    --login-connections) login_conns=$val ;;
    --storm-connections) storm_conns=$val ;;
    --storm-me-connections) storm_me_conns=$val ;;
    --users) users=$val ;;
    --tasks) tasks=$val ;;
    --scenarios) scenarios=${val//,/ } ;;
    --bin) bin=$val ;;
    --results) results=$val ;;
    --max-seconds) max_seconds=$val ;;
    --no-build) build=0 ;;
    --no-install) install=0 ;;
    --keep) keep=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

case "$mode" in all | split | sqlite) ;; *) echo "bench: unknown mode $mode" >&2; exit 2 ;; esac
for v in duration warmup conns login_conns storm_conns storm_me_conns users tasks max_seconds; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench: $v must be a whole number" >&2; exit 2; }
done
if [ "$duration" -lt 1 ] || [ "$users" -lt 2 ] || [ "$tasks" -lt 1 ] || [ "$conns" -lt 1 ]; then
    echo "bench: need --duration >= 1, --users >= 2, --tasks >= 1, --connections >= 1" >&2
    exit 2
fi
if [ -z "$scenarios" ]; then
    scenarios="health ceiling me task_get db_ceiling task_list search project_list task_create"
    scenarios+=" task_patch mixed"
    scenarios+=" me_low login login_storm"
fi
if [ "$mode" = sqlite ]; then
    kept=
    for s in $scenarios; do [ "$s" = db_ceiling ] || kept+="$s "; done
    scenarios=$kept
fi

t_start=${EPOCHREALTIME/./}
elapsed() { local d=$((${EPOCHREALTIME/./} - t_start)); printf '%d.%d' $((d / 1000000)) $((d / 100000 % 10)); }
log() { printf '[%6ss] %s\n' "$(elapsed)" "$*"; }

# ---------------------------------------------------------------------------- tools

apt_install() {
    if [ "$install" = 0 ] || [ "$(id -u)" -ne 0 ]; then
        echo "bench: missing $* (install it, or run as root without --no-install)" >&2
        exit 1
    fi
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-upgrade --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "$@" >/dev/null
}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v curl >/dev/null || missing+=(curl)
command -v cc >/dev/null || missing+=(gcc)
[ -f /usr/include/argon2.h ] || missing+=(libargon2-dev)
/usr/bin/python3 -c 'import requests' 2>/dev/null || missing+=(python3-requests)
if [ "$mode" != sqlite ]; then
    [ -x "$PGBIN/postgres" ] || missing+=(postgresql-15)
    [ -x "$PGBIN/pgbench" ] || missing+=(postgresql-client-15)
    command -v redis-server >/dev/null || missing+=(redis-server)
fi
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ -z "$bin" ]; then
    if [ "$build" = 1 ]; then
        log "make build"
        make -C "$REPO" --no-print-directory build >/dev/null
    fi
    bin=$REPO/build/docket
fi
[ -x "$bin" ] || { echo "bench: no docket binary at $bin" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

# ---------------------------------------------------------------------------- lifecycle

WORK=$(mktemp -d /tmp/docket-bench.XXXXXX)
chmod 755 "$WORK"
export BENCH_WORK=$WORK
docket_pids=()
declare -A docket_names=()
nginx_pid=
redis_pid=
redis_port=
pg_started=0
child=
watchdog=
ok=0

stop_pid() { # PID [SIGNAL]: signal a child of this shell and reap it (SIGKILL after 15 s)
    local pid=$1 sig=${2:-TERM} i
    kill -"$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    trap - TERM INT
    [ -n "$child" ] && stop_pid "$child"
    local pid
    for pid in "${docket_pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${docket_pids[@]}"; do stop_pid "$pid"; done
    [ -n "$nginx_pid" ] && stop_pid "$nginx_pid"
    if [ -n "$redis_pid" ]; then
        redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1
        stop_pid "$redis_pid"
    fi
    if [ "$pg_started" = 1 ]; then
        as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null 2>&1
    fi
    if [ -n "$watchdog" ]; then kill -TERM "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null; fi
    if [ "$ok" = 1 ] && [ "$keep" = 0 ]; then
        rm -rf "$WORK"
    else
        if [ "$ok" = 0 ]; then
            echo "bench: FAILED (exit $rc). Logs:" >&2
            local f
            for f in "$WORK"/docket-*.log "$WORK"/migrate.log "$WORK"/redis.log \
                "$WORK"/pg/pg.log "$WORK"/nginx/error.log; do
                [ -f "$f" ] || continue
                echo "--- $f (last 15 lines)" >&2
                tail -n 15 "$f" >&2
            done
        fi
        echo "bench: work directory kept: $WORK" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench: SIGTERM (the --max-seconds=$max_seconds limit, or from outside): stopping" >&2; exit 143' TERM
trap 'exit 130' INT

# Time limit: SIGTERM to this shell, whose trap stops everything.
(
    sp=
    trap '[ -n "$sp" ] && kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$max_seconds" &
    sp=$!
    wait "$sp"
    kill -TERM $$
) </dev/null >/dev/null 2>&1 &
watchdog=$!

# Runs a command in the background and waits for it, so that a signal reaches the traps at once.
run_child() {
    "$@" </dev/null &
    child=$!
    local rc=0
    wait "$child" || rc=$?
    child=
    return $rc
}

as_pg() { if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # PORT PATH SECONDS [PID]: until GET answers 200
    local port=$1 path=$2 secs=$3 pid=${4:-} i
    for ((i = 0; i < secs * 20; i++)); do
        curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port$path" 2>/dev/null && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            echo "bench: process $pid exited while starting" >&2
            return 1
        fi
        sleep 0.05
    done
    echo "bench: http://127.0.0.1:$port$path not ready after $secs s" >&2
    return 1
}

alive() { # fails when a docket process has exited
    local pid
    for pid in "${docket_pids[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
            echo "bench: docket ${docket_names[$pid]} (pid $pid) has exited" >&2
            return 1
        fi
    done
}

# ---------------------------------------------------------------------------- environment

# Nothing from the caller may point Docket elsewhere; other DOCKET_* settings pass through.
unset DATABASE_URL REDIS_URL JWT_SECRET DOCKET_DATABASE_URL DOCKET_REDIS_URL \
    DOCKET_AUTH_JWT_SECRET DOCKET_STORAGE_DATA_DIR DOCKET_SERVER_PORT DOCKET_SERVER_HOST \
    S3_ENDPOINT SMTP_URL OTEL_EXPORTER_OTLP_ENDPOINT DOCKET_GATEWAY_AUTH_URL \
    DOCKET_GATEWAY_USERS_URL DOCKET_GATEWAY_TASKS_URL DOCKET_GATEWAY_NOTIFICATIONS_URL
docket_env=(
    "JWT_SECRET=$($PY -c 'import secrets; print(secrets.token_urlsafe(48))')"
    # One client IP sends everything: the per-IP limits of the edge and of /auth are lifted.
    "DOCKET_GATEWAY_RATE_LIMIT_RPS=${DOCKET_GATEWAY_RATE_LIMIT_RPS:-0}"
    "DOCKET_RATE_LIMITING_MAX_REQUESTS=${DOCKET_RATE_LIMITING_MAX_REQUESTS:-10000000}"
    "DOCKET_SERVER_MAX_CONNECTIONS_PER_IP=${DOCKET_SERVER_MAX_CONNECTIONS_PER_IP:-0}"
    # Tokens from the seeding must outlive the run even when it is slow.
    "DOCKET_AUTH_JWT_EXPIRY=${DOCKET_AUTH_JWT_EXPIRY:-1h}"
    # No access log line per request, as the Node peer (log level warn, request logging off);
    # DOCKET_LOG_ACCESS=true measures its cost.
    "DOCKET_LOG_ACCESS=${DOCKET_LOG_ACCESS:-false}"
)

export BENCH_DURATION=$duration BENCH_WARMUP=$warmup BENCH_CONNS=$conns \
    BENCH_LOGIN_CONNS=$login_conns BENCH_STORM_CONNS=$storm_conns \
    BENCH_STORM_ME_CONNS=$storm_me_conns BENCH_NUSERS=$users BENCH_RESULTS=$results

log "mode $mode, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), binary $bin"
log "work directory $WORK"
$PY "$BENCH/lib/bench.py" meta loadavg_at_start "[$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)]"
$PY "$BENCH/lib/bench.py" meta binary "$($PY -c 'import json, sys; print(json.dumps(dict(
    zip(("path", "version", "sha256", "mtime"), sys.argv[1:]))))' "$bin" \
    "$("$bin" version 2>/dev/null || true)" "$(sha256sum "$bin" | cut -d' ' -f1)" \
    "$(date -u -r "$bin" +%Y-%m-%dT%H:%M:%SZ)")"

# ---------------------------------------------------------------------------- servers

if [ "$mode" != sqlite ]; then
    pg_port=$(free_port)
    mkdir -p "$WORK/pg"
    [ "$(id -u)" -eq 0 ] && chown postgres "$WORK/pg"
    as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth-local=trust --auth-host=trust \
        -E UTF8 --locale=C.UTF-8 --no-sync >"$WORK/initdb.log" 2>&1
    as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/pg.log" -w -o \
        "-c listen_addresses=127.0.0.1 -p $pg_port -k $WORK/pg -c fsync=off -c max_connections=300 ${BENCH_PG_OPTIONS:-}" \
        start >/dev/null </dev/null
    pg_started=1
    pg_pid=$(head -n 1 "$WORK/pg/data/postmaster.pid")
    "$PGBIN/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE docket" >/dev/null
    redis_port=$(free_port)
    redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
        --daemonize no >"$WORK/redis.log" 2>&1 </dev/null &
    redis_pid=$!
    for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    redis-cli -p "$redis_port" ping >/dev/null
    docket_env+=("DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/docket"
        "REDIS_URL=redis://127.0.0.1:$redis_port")
    export BENCH_DB_PIDS="$pg_pid $redis_pid" BENCH_PG_PORT=$pg_port BENCH_PG_DB=docket
    log "PostgreSQL on :$pg_port (pid $pg_pid), Redis on :$redis_port"
    env "${docket_env[@]}" "$bin" migrate >"$WORK/migrate.log" 2>&1 </dev/null
    log "docket migrate: ok"
fi

ceiling_port=$(free_port)
mkdir -p "$WORK/nginx"
sed -e "s|@PREFIX@|$WORK/nginx|g" -e "s|@PORT@|$ceiling_port|g" "$BENCH/nginx.conf.in" \
    >"$WORK/nginx/nginx.conf"
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" \
    >"$WORK/nginx.log" 2>&1 </dev/null &
nginx_pid=$!
wait_http "$ceiling_port" /health 10 "$nginx_pid"
export BENCH_NGINX_PID=$nginx_pid BENCH_CEILING_URL=http://127.0.0.1:$ceiling_port
log "nginx (ceiling) on :$ceiling_port"

start_docket() { # NAME PORT ENV-ASSIGNMENTS... -- ARGS...
    local name=$1 port=$2
    shift 2
    local extra=()
    while [ "$1" != -- ]; do extra+=("$1"); shift; done
    shift
    env "${docket_env[@]}" "${extra[@]}" "$bin" "$@" --server.port="$port" \
        --server.host=127.0.0.1 >"$WORK/docket-$name.log" 2>&1 </dev/null &
    local pid=$!
    docket_pids+=("$pid")
    docket_names[$pid]=$name
    wait_http "$port" /ready 30 "$pid"
    log "docket $name on :$port (pid $pid)"
}

startup() { # KEY PORT ENV-ASSIGNMENTS... -- ARGS...: 3 timed starts, each stopped again
    local key=$1 port=$2
    shift 2
    local extra=()
    while [ "$1" != -- ]; do extra+=("$1"); shift; done
    shift
    run_child env "${docket_env[@]}" "${extra[@]}" "$PY" "$BENCH/lib/bench.py" startup "$key" \
        "$port" "${trials:-3}" -- "$bin" "$@" --server.port="$port" --server.host=127.0.0.1
}

port=$(free_port)
export BENCH_URL=http://127.0.0.1:$port
case "$mode" in
all)
    startup all "$(free_port)" -- all
    start_docket all "$port" -- all
    export BENCH_METRICS_URLS="$BENCH_URL/metrics"
    ;;
sqlite)
    mkdir -p "$WORK/data"
    trials=1 startup all_first "$(free_port)" -- all --storage.data_dir="$WORK/data"
    startup all "$(free_port)" -- all --storage.data_dir="$WORK/data"
    start_docket all "$port" -- all --storage.data_dir="$WORK/data"
    export BENCH_METRICS_URLS="$BENCH_URL/metrics"
    ;;
split)
    declare -A sport=()
    for s in users auth tasks notifications; do sport[$s]=$(free_port); done
    svc_env=("DOCKET_SERVER_TRUST_FORWARDED_FOR=true"
        "DOCKET_GATEWAY_USERS_URL=http://127.0.0.1:${sport[users]}")
    startup users "$(free_port)" "${svc_env[@]}" -- users
    start_docket users "${sport[users]}" "${svc_env[@]}" -- users
    for s in auth tasks notifications; do
        startup "$s" "$(free_port)" "${svc_env[@]}" -- "$s"
        start_docket "$s" "${sport[$s]}" "${svc_env[@]}" -- "$s"
    done
    gw_env=()
    for s in users auth tasks notifications; do gw_env+=("DOCKET_GATEWAY_${s^^}_URL=http://127.0.0.1:${sport[$s]}"); done
    start_docket gateway "$port" "${gw_env[@]}" -- gateway
    startup gateway "$(free_port)" "${gw_env[@]}" -- gateway
    BENCH_METRICS_URLS="$BENCH_URL/metrics"
    for s in users auth tasks notifications; do
        BENCH_METRICS_URLS+=" http://127.0.0.1:${sport[$s]}/metrics"
    done
    export BENCH_METRICS_URLS
    ;;
esac
export BENCH_DOCKET_PIDS="${docket_pids[*]}"
rss_args=()
for pid in "${docket_pids[@]}"; do rss_args+=("${docket_names[$pid]}=$pid"); done
$PY "$BENCH/lib/bench.py" rss idle_rss_start "${rss_args[@]}"

# ---------------------------------------------------------------------------- seeding

log "seeding $users users x $tasks tasks through the API"
run_child "$PY" "$BENCH/lib/seed.py" --base "$BENCH_URL" --users "$users" --tasks "$tasks" \
    --out "$WORK/data.txt" >"$WORK/seed.json"
cat "$WORK/seed.json"
$PY "$BENCH/lib/bench.py" meta seed "$(cat "$WORK/seed.json")"
export BENCH_DATA=$WORK/data.txt
ntasks=$(grep -c '^T ' "$WORK/data.txt")
export BENCH_NTASKS=$ntasks
if [ "$mode" != sqlite ]; then
    # db_ceiling's id table (see pgbench_task_get.sql); ANALYZE now, so that no plan changes
    # mid-run when autovacuum gets to the freshly seeded tables.
    "$PGBIN/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d docket -qAt -v ON_ERROR_STOP=1 <<'EOF'
CREATE SCHEMA bench;
CREATE TABLE bench.task_ids (n integer PRIMARY KEY, id text COLLATE "C" NOT NULL);
INSERT INTO bench.task_ids SELECT row_number() OVER (ORDER BY id), id FROM tasks.tasks;
ANALYZE;
EOF
    n=$("$PGBIN/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d docket -qAt -c \
        "SELECT count(*) FROM bench.task_ids b JOIN tasks.tasks t ON t.id = b.id WHERE b.n <= $ntasks")
    [ "$n" = "$ntasks" ] || { echo "bench: $n tasks in the database, $ntasks seeded" >&2; exit 1; }
fi

# ---------------------------------------------------------------------------- scenarios

log "scenarios ($duration s each, $conns connections, wrk -t1 on the same $(nproc) CPUs): $scenarios"
for s in $scenarios; do
    alive
    if [ "$s" = login ]; then
        cc -std=c17 -O2 -pthread -o "$WORK/argon2_rate" "$BENCH/argon2_rate.c" -largon2
        a_threads=${DOCKET_AUTH_HASH_WORKERS:-0}
        [ "$a_threads" = 0 ] && a_threads=$(nproc)
        run_child "$WORK/argon2_rate" "$duration" "$a_threads" \
            "${DOCKET_AUTH_ARGON2_MEMORY_KIB:-19456}" "${DOCKET_AUTH_ARGON2_ITERATIONS:-2}" \
            "${DOCKET_AUTH_ARGON2_PARALLELISM:-1}" >"$WORK/argon2_rate.json"
        $PY "$BENCH/lib/bench.py" meta argon2_rate "$(cat "$WORK/argon2_rate.json")"
        log "raw Argon2id: $(cat "$WORK/argon2_rate.json")"
    fi
    log "$s"
    run_child "$PY" "$BENCH/lib/bench.py" scenario "$s"
done
alive

sleep 1
$PY "$BENCH/lib/bench.py" rss idle_rss_end "${rss_args[@]}"

# Server log lines at warn or error level, counted by message, for the report.
log_args=()
for pid in "${docket_pids[@]}"; do log_args+=("${docket_names[$pid]}=$WORK/docket-${docket_names[$pid]}.log"); done
$PY "$BENCH/lib/bench.py" logs "${log_args[@]}"

$PY "$BENCH/lib/bench.py" meta run_seconds "$(elapsed)"
$PY "$BENCH/lib/bench.py" report "$mode"
log "done"
ok=1
