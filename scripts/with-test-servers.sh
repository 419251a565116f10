#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL 15 and Redis on free 127.0.0.1 ports, exported as
# DOCKET_TEST_PG_URL and DOCKET_TEST_REDIS_URL, and stops both afterwards (whatever happens).
# Usage: scripts/with-test-servers.sh COMMAND [ARGS...]
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

# Servers given from outside (e.g. CI service containers) are used as they are.
if [ -n "${DOCKET_TEST_PG_URL:-}" ] && [ -n "${DOCKET_TEST_REDIS_URL:-}" ]; then
  exec "$@"
fi

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

dir=$(mktemp -d /tmp/docket-servers.XXXXXX)
chmod 755 "$dir"
pg_port=$(free_port)
redis_port=$(free_port)
pg_started=0
redis_started=0

cleanup() {
  if [ $redis_started = 1 ]; then redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true; fi
  if [ $pg_started = 1 ]; then
    (cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir/pg" -m immediate -w stop >/dev/null 2>&1) || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

run_pg() { if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres "$dir"
run_pg "$PGBIN/initdb" -D "$dir/pg" -U postgres --auth-local=trust --auth-host=trust -E UTF8 \
  --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; exit 1; }
run_pg "$PGBIN/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $dir -c fsync=off -c max_connections=200" start \
  >/dev/null </dev/null || { cat "$dir/pg.log"; exit 1; }
pg_started=1
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --daemonize no \
  >"$dir/redis.log" 2>&1 </dev/null &
redis_started=1
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

export DOCKET_TEST_PG_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
export DOCKET_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
"$@"
