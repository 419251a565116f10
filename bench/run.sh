#!/usr/bin/env bash
# Docket load benchmark (see bench/README.md). Starts what it measures — PostgreSQL, Redis,
# Docket (`all`, or split into gateway + services, or `all` on SQLite) and nginx as the HTTP
# ceiling — seeds Docket through its public API, runs each scenario with wrk (and pgbench for
# db_ceiling), prints one row per scenario plus the targets, and writes
# bench/results/<date>-<commit>-<mode>.json. Loopback only; bounded in time (--max-seconds);
# stops everything it started, whatever happens.
#
# With --peer it runs the Node.js peer (../shared/peers/node) beside Docket in the same run,
# each stack on its own PostgreSQL and Redis with identical settings, and prints the ratios.
#
# Usage: bench/run.sh [--split | --sqlite] [--peer] [--duration=S] [--connections=N]
#                     [--users=N] [--tasks=N] [--scenarios=a,b,...] [--bin=PATH] [--no-build] ...
#        bench/run.sh --help
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
PY=/usr/bin/python3
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export PGBIN

mode=all
duration=8
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
max_seconds=
results=${BENCH_RESULTS:-$BENCH/results}
peer=0
peer_dir=${BENCH_PEER_DIR:-$REPO/../shared/peers/node}
pg_fast=0
pg_stats=0
baseline=

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
                       mixed task_create task_patch me_low login login_storm

The Node.js peer (see bench/README.md):
  --peer               also run the peer (Fastify + pg + ioredis) on its own PostgreSQL 15 and
                       Redis, same settings, seed, scenarios and wrk settings, scenario by
                       scenario next to Docket (never both under load at once); prints the
                       ratio table and the targets of issue 18
  --peer-dir=DIR       where the peer is (default \$BENCH_PEER_DIR, or ../shared/peers/node
                       beside the repository); it is copied into the work directory and
                       started with its up.sh, stopped with its down.sh --purge.
                       BENCH_PEER_ENV="WORKERS=2 ..." adds settings for the peer only

PostgreSQL (both stacks get the same settings): fsync on, synchronous_commit on,
shared_buffers=256MB, max_connections=300, pg_stat_statements loaded
  --pg-fast            fsync=off instead (NOT durable; recorded and printed as such)
  --pg-stats           print the statements each write scenario made, per request and stack
  --baseline=FILE      an earlier result of the same mode: the SQLite write targets of issue
                       18 are evaluated against its task_create rate

Other:
  --bin=PATH           docket binary to measure (default: \`make build\`, then build/docket;
                       or \$DOCKET_BIN)
  --no-build           use build/docket as it is
  --no-install         do not apt-get install missing tools (wrk, nginx, redis, pgbench, ...)
  --results=DIR        where the JSON goes (default bench/results)
  --max-seconds=S      stop everything and fail after S seconds (default 900, 1500 with --peer)
  --keep               keep the work directory (logs, data file) under /tmp

BENCH_PG_OPTIONS adds settings to both throwaway PostgreSQLs, as "-c name=value ...", e.g.
"-c work_mem=8MB". DOCKET_* variables in the environment reach every docket process (e.g. DOCKET_SERVER_THREADS,
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
        --max-seconds | --mode | --peer-dir | --baseline)
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
    --peer) peer=1 ;;
    --peer-dir) peer_dir=$val ;;
    --pg-fast) pg_fast=1 ;;
    --pg-stats) pg_stats=1 ;;
    --baseline) baseline=$val ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

case "$mode" in all | split | sqlite) ;; *) echo "bench: unknown mode $mode" >&2; exit 2 ;; esac
if [ -z "$max_seconds" ]; then
    max_seconds=900
    [ "$peer" = 1 ] && max_seconds=1500
fi
for v in duration warmup conns login_conns storm_conns storm_me_conns users tasks max_seconds; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench: $v must be a whole number" >&2; exit 2; }
done
if [ "$duration" -lt 1 ] || [ "$users" -lt 2 ] || [ "$tasks" -lt 1 ] || [ "$conns" -lt 1 ]; then
    echo "bench: need --duration >= 1, --users >= 2, --tasks >= 1, --connections >= 1" >&2
    exit 2
fi
if [ -z "$scenarios" ]; then
    # mixed before the write scenarios: each stack's task_create grows its own table by its
    # own rate, so after it a faster stack would run mixed on more rows (bench/README.md)
    scenarios="health ceiling me task_get db_ceiling task_list search project_list mixed"
    scenarios+=" task_create task_patch"
    scenarios+=" me_low login login_storm"
fi
if [ "$mode" = sqlite ]; then
    kept=
    for s in $scenarios; do [ "$s" = db_ceiling ] || kept+="$s "; done
    scenarios=$kept
fi
if [ "$peer" = 1 ]; then
    if [ ! -f "$peer_dir/up.sh" ] || [ ! -f "$peer_dir/down.sh" ] || [ ! -f "$peer_dir/package.json" ]; then
        echo "bench: --peer needs the Node.js peer (up.sh, down.sh, package.json) in $peer_dir;" \
            "give its place with --peer-dir=DIR or BENCH_PEER_DIR" >&2
        exit 2
    fi
    peer_dir=$(cd "$peer_dir" && pwd)
    # The peer has no projects: project_list is skipped on both stacks, and both are seeded
    # without projects, so that every other scenario runs on the same data on each side.
    kept=
    for s in $scenarios; do [ "$s" = project_list ] || kept+="$s "; done
    [ "$kept" = "$scenarios" ] || echo "bench: --peer: project_list skipped (the peer has no projects)" >&2
    scenarios=$kept
fi
if [ -n "$baseline" ]; then
    [ -r "$baseline" ] || { echo "bench: cannot read --baseline=$baseline" >&2; exit 2; }
    baseline=$(cd "$(dirname "$baseline")" && pwd)/$(basename "$baseline")
fi
# Server settings of every PostgreSQL of the run (Docket's and the peer's): durable by default.
pg_settings=(shared_buffers=256MB max_connections=300
    shared_preload_libraries=pg_stat_statements pg_stat_statements.track=top)
[ "$pg_fast" = 1 ] && pg_settings+=(fsync=off)
read -r -a pg_extra <<<"${BENCH_PG_OPTIONS:-}"
for ((i = 0; i < ${#pg_extra[@]}; i++)); do
    o=${pg_extra[$i]}
    if [ "$o" = -c ] && [ $((i + 1)) -lt ${#pg_extra[@]} ]; then
        i=$((i + 1))
        o=${pg_extra[$i]}
    elif [[ $o == -c?* ]]; then
        o=${o#-c}
    else
        echo "bench: BENCH_PG_OPTIONS takes only \"-c name=value\" pairs, not $o" >&2
        exit 2
    fi
    [[ $o == ?*=* ]] || { echo "bench: BENCH_PG_OPTIONS: $o is not name=value" >&2; exit 2; }
    pg_settings+=("$o")
done

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
[ -f /usr/include/sodium.h ] || missing+=(libsodium-dev)
/usr/bin/python3 -c 'import requests' 2>/dev/null || missing+=(python3-requests)
if [ "$mode" != sqlite ] || [ "$peer" = 1 ]; then
    [ -x "$PGBIN/postgres" ] || missing+=(postgresql-15)
    [ -x "$PGBIN/pgbench" ] || missing+=(postgresql-client-15)
    command -v redis-server >/dev/null || missing+=(redis-server)
fi
if [ "$peer" = 1 ]; then
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
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
peer_started=0
peer_pids=()
PEER_SRC=$WORK/peer
PEER_RUN=$WORK/peer-run
child=
child_group=0
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
    if [ -n "$child" ]; then
        if [ "$child_group" = 1 ]; then
            # The peer's up.sh runs in a process group of its own (npm ci, pg_ctl, ...): all of
            # it, and wait until the group is gone (SIGKILL after 10 s).
            local g=$child i
            kill -TERM -- "-$g" 2>/dev/null
            for ((i = 0; i < 100; i++)); do
                ps -e -o pgid=,stat= | awk -v g="$g" '$1 == g && $2 !~ /^Z/ { f = 1 } END { exit !f }' ||
                    break
                sleep 0.1
            done
            kill -KILL -- "-$g" 2>/dev/null
        fi
        stop_pid "$child"
    fi
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
    [ "$peer_started" = 1 ] && stop_peer
    if [ -n "$watchdog" ]; then kill -TERM "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null; fi
    if [ "$ok" = 1 ] && [ "$keep" = 0 ]; then
        rm -rf "$WORK"
    else
        if [ "$ok" = 0 ]; then
            echo "bench: FAILED (exit $rc). Logs:" >&2
            local f
            for f in "$WORK"/docket-*.log "$WORK"/migrate.log "$WORK"/redis.log \
                "$WORK"/pg/pg.log "$WORK"/nginx/error.log "$WORK"/peer-up.log \
                "$WORK"/peer-logs/peer.log "$WORK"/peer-logs/postgres.log; do
                [ -f "$f" ] || continue
                echo "--- $f (last 15 lines)" >&2
                tail -n 15 "$f" >&2
            done
        fi
        echo "bench: work directory kept: $WORK" >&2
    fi
    exit "$rc"
}
# Stops the peer with its own down.sh --purge (its PID files: node, Redis; pg_ctl on its data
# directory), keeping its logs in $WORK/peer-logs; then makes sure that nothing it ran is left
# (SIGKILL to a survivor, by the PID this run recorded).
stop_peer() {
    mkdir -p "$WORK/peer-logs"
    local f pid i
    for f in peer.log postgres.log redis.log initdb.log; do
        [ -f "$PEER_RUN/$f" ] && cp "$PEER_RUN/$f" "$WORK/peer-logs/" 2>/dev/null
    done
    # Whatever up.sh got to start, also when it was interrupted before this run read the PIDs.
    for f in "$PEER_RUN/peer.pid" "$PEER_RUN/redis.pid"; do
        [ -f "$f" ] && peer_pids+=("$(cat "$f" 2>/dev/null)")
    done
    [ -f "$PEER_RUN/pgdata/postmaster.pid" ] && peer_pids+=("$(head -n 1 "$PEER_RUN/pgdata/postmaster.pid")")
    PEER_RUN_DIR=$PEER_RUN PGBIN=$PGBIN "$PEER_SRC/down.sh" --purge >>"$WORK/peer-down.log" 2>&1 </dev/null
    for pid in "${peer_pids[@]}"; do
        [[ $pid =~ ^[0-9]+$ ]] || continue
        for ((i = 0; i < 50; i++)); do
            [ -e "/proc/$pid" ] || break
            [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
            sleep 0.1
        done
        if [ -e "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
            echo "bench: peer process $pid still running after down.sh: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    peer_started=0
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

# The same in a process group of its own (setsid), which cleanup signals as a whole; output
# to LOG (redirected here, not around the call: a trap that runs while this waits must not
# write into LOG).
run_child_group() { # LOG COMMAND...
    local out=$1
    shift
    setsid "$@" </dev/null >"$out" 2>&1 &
    child=$!
    child_group=1
    local rc=0
    wait "$child" || rc=$?
    child=
    child_group=0
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
if [ "$mode" != sqlite ] || [ "$peer" = 1 ]; then
    if [ "$pg_fast" = 1 ]; then
        log "PostgreSQL: fsync=off (--pg-fast): NOT durable, not the settings of issue 18's comparison"
    else
        log "PostgreSQL: durable (fsync on, synchronous_commit on), shared_buffers=256MB"
    fi
fi
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
    pg_opts="-c listen_addresses=127.0.0.1 -p $pg_port -k $WORK/pg"
    for o in "${pg_settings[@]}"; do pg_opts+=" -c $o"; done
    as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/pg.log" -w -o "$pg_opts" \
        start >/dev/null </dev/null
    pg_started=1
    pg_pid=$(head -n 1 "$WORK/pg/data/postmaster.pid")
    "$PGBIN/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE docket" >/dev/null
    "$PGBIN/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d docket -qAt -v ON_ERROR_STOP=1 \
        -c "CREATE EXTENSION pg_stat_statements" >/dev/null
    redis_port=$(free_port)
    redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
        --daemonize no >"$WORK/redis.log" 2>&1 </dev/null &
    redis_pid=$!
    for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    redis-cli -p "$redis_port" ping >/dev/null
    docket_env+=("DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/docket"
        "REDIS_URL=redis://127.0.0.1:$redis_port")
    export BENCH_DB_PIDS="$pg_pid $redis_pid" BENCH_PG_PORT=$pg_port BENCH_PG_DB=docket
    docket_db_pids="$pg_pid $redis_pid"
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

if [ "$peer" = 1 ]; then
    # A copy of the peer, so that its node_modules (npm ci, by up.sh) go into the work
    # directory and not into the shared tree; the same files, recorded by hash.
    mkdir -p "$PEER_SRC"
    tar -C "$peer_dir" --exclude=./node_modules -cf - . | tar -C "$PEER_SRC" -xf -
    chmod -R u+w "$PEER_SRC"
    peer_started=1
    # Its PostgreSQL data directory is made here, as up.sh would make it (initdb, trust), so
    # that the settings of this run (pg_stat_statements, --pg-fast, BENCH_PG_OPTIONS) go into
    # its postgresql.conf; up.sh finds it and starts it with its own options
    # (max_connections=300, shared_buffers=256MB: the same as here).
    mkdir -p "$PEER_RUN/pgdata"
    chmod 755 "$PEER_RUN"
    chown postgres:postgres "$PEER_RUN/pgdata"
    chmod 700 "$PEER_RUN/pgdata"
    as_pg "$PGBIN/initdb" -D "$PEER_RUN/pgdata" -U postgres --auth=trust -E UTF8 \
        --locale=C.UTF-8 --no-sync >"$WORK/peer-initdb.log" 2>&1
    {
        echo "# bench/run.sh: the same server settings as Docket's PostgreSQL in this run"
        for o in "${pg_settings[@]}"; do echo "${o%%=*} = '${o#*=}'"; done
    } >>"$PEER_RUN/pgdata/postgresql.conf"
    peer_port=$(free_port)
    peer_pg_port=$(free_port)
    peer_redis_port=$(free_port)
    # Docket's DOCKET_* settings from the caller's environment are not the peer's;
    # BENCH_PEER_ENV gives the peer its own.
    peer_unset=()
    for v in $(compgen -e); do [[ $v == DOCKET_* || $v == WORKERS ]] && peer_unset+=(-u "$v"); done
    read -r -a peer_extra <<<"${BENCH_PEER_ENV:-}"
    # Limits lifted and tokens long-lived as for Docket (see bench/README.md).
    peer_settings=(DOCKET_AUTH_JWT_EXPIRY=1h DOCKET_RATE_LIMITING_ENABLED=false
        DOCKET_RATE_LIMITING_MAX_REQUESTS=10000000 LOG_LEVEL=warn "${peer_extra[@]}")
    peer_env=(PEER_RUN_DIR="$PEER_RUN" PEER_PG_PORT="$peer_pg_port"
        PEER_REDIS_PORT="$peer_redis_port" PORT="$peer_port" PEER_FRESH=1 PGBIN="$PGBIN"
        JWT_SECRET="$($PY -c 'import secrets; print(secrets.token_urlsafe(48))')"
        "${peer_settings[@]}")
    log "starting the Node peer ($peer_dir) with its up.sh"
    run_child_group "$WORK/peer-up.log" env "${peer_unset[@]}" "${peer_env[@]}" \
        "$PEER_SRC/up.sh" || { echo "bench: the peer's up.sh failed" >&2; exit 1; }
    peer_pid=$(cat "$PEER_RUN/peer.pid")
    peer_redis_pid=$(cat "$PEER_RUN/redis.pid")
    peer_pg_pid=$(head -n 1 "$PEER_RUN/pgdata/postmaster.pid")
    peer_pids=("$peer_pid" "$peer_redis_pid" "$peer_pg_pid")
    [ "$(cat "/proc/$peer_pid/comm" 2>/dev/null)" = node ] ||
        { echo "bench: $PEER_RUN/peer.pid ($peer_pid) is not the node process" >&2; exit 1; }
    "$PGBIN/psql" -h 127.0.0.1 -p "$peer_pg_port" -U postgres -d docket -qAt -v ON_ERROR_STOP=1 \
        -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    export BENCH_PEER_URL=http://127.0.0.1:$peer_port BENCH_PEER_PIDS=$peer_pid \
        BENCH_PEER_DB_PIDS="$peer_pg_pid $peer_redis_pid" BENCH_PEER_PG_PORT=$peer_pg_port
    log "peer on :$peer_port (node pid $peer_pid), its PostgreSQL on :$peer_pg_port (pid" \
        "$peer_pg_pid), Redis on :$peer_redis_port (pid $peer_redis_pid)"
    $PY "$BENCH/lib/bench.py" meta peer "$($PY -c 'import json, sys; print(json.dumps(dict(
        zip(("dir", "node", "files_sha256", "env"), (sys.argv[1], sys.argv[2], sys.argv[3],
        sys.argv[4:])))))' "$peer_dir" "$(node --version)" \
        "$(cd "$PEER_SRC" && find . -path ./node_modules -prune -o -type f -print | LC_ALL=C sort |
            xargs sha256sum | sha256sum | cut -d' ' -f1)" \
        "${peer_settings[@]}")"
fi

# The server settings of each PostgreSQL, recorded; with two of them, any difference fails
# the run (the comparison would not be like for like).
pg_ports=()
[ "$mode" != sqlite ] && pg_ports+=("docket=$pg_port")
[ "$peer" = 1 ] && pg_ports+=("peer=$peer_pg_port")
if [ ${#pg_ports[@]} -gt 0 ]; then
    $PY "$BENCH/lib/bench.py" pg_settings "$pg_fast" "${pg_ports[@]}"
fi

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
seed_args=(--users "$users" --tasks "$tasks" --run-id "$(date +%s)")
[ "$peer" = 1 ] && seed_args+=(--projects 0)
run_child "$PY" "$BENCH/lib/seed.py" --base "$BENCH_URL" "${seed_args[@]}" \
    --out "$WORK/data.txt" >"$WORK/seed.json"
cat "$WORK/seed.json"
$PY "$BENCH/lib/bench.py" meta seed "$(cat "$WORK/seed.json")"
if [ "$peer" = 1 ]; then
    log "seeding the peer the same way"
    run_child "$PY" "$BENCH/lib/seed.py" --base "$BENCH_PEER_URL" "${seed_args[@]}" \
        --out "$WORK/peer-data.txt" >"$WORK/peer-seed.json"
    cat "$WORK/peer-seed.json"
    $PY "$BENCH/lib/bench.py" meta peer_seed "$(cat "$WORK/peer-seed.json")"
    # As for Docket below: VACUUM and statistics now, not by autovacuum in the middle of a
    # scenario (PostgreSQL 15 vacuums a table after 1000 + 20 % inserts, within a minute).
    "$PGBIN/psql" -h 127.0.0.1 -p "$peer_pg_port" -U postgres -d docket -qAt -v ON_ERROR_STOP=1 \
        -c "VACUUM ANALYZE" >/dev/null
fi
export BENCH_DATA=$WORK/data.txt
ntasks=$(grep -c '^T ' "$WORK/data.txt")
export BENCH_NTASKS=$ntasks
if [ "$mode" != sqlite ]; then
    # db_ceiling's id table (see pgbench_task_get.sql); VACUUM ANALYZE now, so that no plan
    # changes mid-run when autovacuum gets to the freshly seeded tables, and so that searches
    # do not scan the GIN indexes' pending lists of the seed's inserts, which autovacuum would
    # merge at a moment of its choosing (in a real deployment within a minute of the inserts).
    "$PGBIN/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d docket -qAt -v ON_ERROR_STOP=1 <<'EOF'
CREATE SCHEMA bench;
CREATE TABLE bench.task_ids (n integer PRIMARY KEY, id text COLLATE "C" NOT NULL);
INSERT INTO bench.task_ids SELECT row_number() OVER (ORDER BY id), id FROM tasks.tasks;
EOF
    "$PGBIN/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d docket -qAt -v ON_ERROR_STOP=1 \
        -c "VACUUM ANALYZE" >/dev/null
    n=$("$PGBIN/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d docket -qAt -c \
        "SELECT count(*) FROM bench.task_ids b JOIN tasks.tasks t ON t.id = b.id WHERE b.n <= $ntasks")
    [ "$n" = "$ntasks" ] || { echo "bench: $n tasks in the database, $ntasks seeded" >&2; exit 1; }
fi

# ---------------------------------------------------------------------------- scenarios

peer_alive() {
    [ "$peer" = 1 ] || return 0
    if ! kill -0 "$peer_pid" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$peer_pid/stat" 2>/dev/null)" = Z ]; then
        echo "bench: the peer (node pid $peer_pid) has exited; see $PEER_RUN/peer.log" >&2
        return 1
    fi
}

# Scenarios both stacks run (ceiling and db_ceiling measure nginx and pgbench once;
# project_list is not run with --peer).
peer_scenario() {
    case "$1" in
    health | me | task_get | task_list | search | task_create | task_patch | mixed | me_low | \
        login | login_storm) return 0 ;;
    esac
    return 1
}

# One stack at a time, never both under load. With --peer each scenario runs on both stacks
# back to back, and which one goes first alternates from scenario to scenario (see README):
# both measurements of a scenario are seconds apart, so a change in the machine's load hits
# both, and neither stack is always the one that runs right after the other's writes.
run_stack() { # STACK SCENARIO
    if [ "$1" = peer ]; then
        run_child env BENCH_STACK=peer BENCH_URL="$BENCH_PEER_URL" \
            BENCH_DOCKET_PIDS="$BENCH_PEER_PIDS" BENCH_DB_PIDS="$BENCH_PEER_DB_PIDS" \
            BENCH_PG_PORT="$BENCH_PEER_PG_PORT" BENCH_PG_DB=docket BENCH_METRICS_URLS= \
            BENCH_DATA="$WORK/peer-data.txt" \
            BENCH_OTHER_PIDS="${docket_pids[*]} ${docket_db_pids:-}" \
            "$PY" "$BENCH/lib/bench.py" scenario "$2"
    elif [ "$peer" = 1 ]; then
        run_child env BENCH_OTHER_PIDS="$BENCH_PEER_PIDS $BENCH_PEER_DB_PIDS" \
            "$PY" "$BENCH/lib/bench.py" scenario "$2"
    else
        run_child "$PY" "$BENCH/lib/bench.py" scenario "$2"
    fi
}

log "scenarios ($duration s each, $conns connections, wrk -t1 on the same $(nproc) CPUs): $scenarios"
[ "$peer" = 1 ] && log "each on Docket and on the Node peer, one after the other"
npair=0
ran=()
for s in $scenarios; do
    alive
    peer_alive
    if [ "$s" = login ]; then
        # linked as docket links libsodium: its private static copy with mmap wrapped, so
        # the Argon2 area is on huge pages as in the server (src/core/hugepages.h)
        if [ -f "$REPO/build/libsodium-private.o" ]; then
            cc -std=c17 -O2 -pthread -D_GNU_SOURCE -DDOCKET_WRAP_MMAP -I"$REPO/src" \
                -o "$WORK/argon2_rate" "$BENCH/argon2_rate.c" "$REPO/src/core/hugepages.c" \
                "$REPO/build/libsodium-private.o" -Wl,--wrap=mmap -Wl,--wrap=mmap64 -largon2
        else
            cc -std=c17 -O2 -pthread -o "$WORK/argon2_rate" "$BENCH/argon2_rate.c" -largon2 -lsodium
        fi
        a_threads=${DOCKET_AUTH_HASH_WORKERS:-0}
        [ "$a_threads" = 0 ] && a_threads=$(nproc)
        run_child "$WORK/argon2_rate" "$duration" "$a_threads" \
            "${DOCKET_AUTH_ARGON2_MEMORY_KIB:-19456}" "${DOCKET_AUTH_ARGON2_ITERATIONS:-2}" \
            "${DOCKET_AUTH_ARGON2_PARALLELISM:-1}" >"$WORK/argon2_rate.json"
        $PY "$BENCH/lib/bench.py" meta argon2_rate "$(cat "$WORK/argon2_rate.json")"
        log "raw Argon2id: $(cat "$WORK/argon2_rate.json")"
    fi
    order=docket
    if [ "$peer" = 1 ] && peer_scenario "$s"; then
        if [ $((npair % 2)) = 0 ]; then order="docket peer"; else order="peer docket"; fi
        npair=$((npair + 1))
    fi
    for st in $order; do
        if [ "$order" = docket ]; then log "$s"; else log "$s ($st)"; fi
        run_stack "$st" "$s"
        ran+=("\"$s:$st\"")
    done
done
$PY "$BENCH/lib/bench.py" meta order "[$(IFS=,; echo "${ran[*]}")]"
alive
peer_alive

sleep 1
$PY "$BENCH/lib/bench.py" rss idle_rss_end "${rss_args[@]}"

# Server log lines at warn or error level, counted by message, for the report.
log_args=()
for pid in "${docket_pids[@]}"; do log_args+=("${docket_names[$pid]}=$WORK/docket-${docket_names[$pid]}.log"); done
$PY "$BENCH/lib/bench.py" logs "${log_args[@]}"

$PY "$BENCH/lib/bench.py" meta run_seconds "$(elapsed)"
BENCH_PEER=$peer BENCH_PG_STATS=$pg_stats BENCH_BASELINE=$baseline \
    $PY "$BENCH/lib/bench.py" report "$mode"
log "done"
ok=1
