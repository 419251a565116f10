#!/usr/bin/env bash
# Backup/restore drill on PostgreSQL with the shipped tooling (deploy/backup/pg-backup.sh, the
# script the CronJob runs), timed against the seed's recovery time objective (15 minutes):
#   1. a throwaway PostgreSQL 15 (scripts/with-test-servers.sh) and a throwaway S3 server that
#      checks SigV4 signatures (tools/deploy/s3-server.mjs), bucket "drill";
#   2. a database: Docket's schema (`docket migrate`, when build/docket exists) with real
#      accounts in it (`docket all` on that database: 25 users registered and logged in over
#      HTTP), plus a table of 100,000 rows; the count and an md5 checksum of every row of every
#      table are recorded;
#   3. `pg-backup.sh backup`: pg_dump -Fc, upload, retention (a dump older than 7 days that was
#      planted in the bucket must be deleted, a recent one kept);
#   4. the database is dropped and created empty again (the incident);
#   5. `pg-backup.sh restore latest`: download + pg_restore;
#   6. every table's count and checksum compared with step 2; with build/docket, Docket started
#      on the restored database must log an account of step 2 in.
# Usage: scripts/pg-backup-drill.sh [ROWS]   (default 100000)
# Exit 0 when the restored database equals the original, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ -z "${DOCKET_DRILL_INNER:-}" ]; then
  export DOCKET_DRILL_INNER=1
  exec scripts/with-test-servers.sh "$0" "$@"
fi

rows=${1:-100000}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export PATH="$PGBIN:$PATH"
say() { echo "pg-drill: $*"; }
die() { echo "pg-drill: FAIL $*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# npm ci for tools/deploy when needed (the S3 server)
stamp=tools/deploy/node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ tools/deploy/package-lock.json -nt "$stamp" ]; then
  npm ci --prefix tools/deploy --no-audit --no-fund --loglevel=error >&2
  touch "$stamp"
fi

work=$(mktemp -d /tmp/docket-pg-drill.XXXXXX)
s3_pid=""
cleanup() {
  [ -n "$s3_pid" ] && kill "$s3_pid" 2>/dev/null && wait "$s3_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# ---- 1. servers -------------------------------------------------------------------------------
admin_url=$DOCKET_TEST_PG_URL # the maintenance database
db=docket_drill
url=${admin_url%/*}/$db
psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -d "$admin_url" "$@"; }
psql_db() { psql -X -q -v ON_ERROR_STOP=1 -d "$url" "$@"; }

s3_port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
mkdir -p "$work/s3" "$work/tmp"
node tools/deploy/s3-server.mjs "$s3_port" "$work/s3" drill >"$work/s3.log" 2>&1 </dev/null &
s3_pid=$!
for _ in $(seq 100); do grep -q ready "$work/s3.log" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/s3.log" || { cat "$work/s3.log" >&2; die "the S3 server did not start"; }
export S3_ENDPOINT=http://127.0.0.1:$s3_port S3_BUCKET=drill S3_REGION=us-east-1
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
export BACKUP_PREFIX=postgres/drill/ BACKUP_RETENTION_DAYS=7 TMPDIR=$work/tmp
say "PostgreSQL $(psql_admin -tAc 'SHOW server_version') and an S3 server (SigV4) on 127.0.0.1:$s3_port"

# ---- 2. data ----------------------------------------------------------------------------------
psql_admin -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
bin=${DOCKET_BIN:-$root/build/docket}
if [ -x "$bin" ]; then
  (cd "$work" && env -i PATH=/usr/bin:/bin DATABASE_URL="$url" "$bin" migrate >"$work/migrate.log" 2>&1) \
    || { cat "$work/migrate.log" >&2; die "docket migrate failed"; }
  say "docket migrate: $(grep -c 'applied' "$work/migrate.log") service schema(s) migrated"
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
  (cd "$work" && exec env -i PATH=/usr/bin:/bin DATABASE_URL="$url" REDIS_URL="$DOCKET_TEST_REDIS_URL" \
    JWT_SECRET=drill-only-secret-0123456789abcdef DOCKET_RATE_LIMITING_ENABLED=false \
    DOCKET_SERVER_PORT="$port" DOCKET_STORAGE_DATA_DIR="$work/data" "$bin" all >"$work/docket.log" 2>&1 </dev/null) &
  docket_pid=$!
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$port/ready" 2>/dev/null && break; sleep 0.1; done
  api=http://127.0.0.1:$port/api/v1
  for i in $(seq 25); do
    curl -fsS -o /dev/null -H 'Content-Type: application/json' "$api/auth/register" \
      -d "{\"email\":\"drill$i@example.com\",\"password\":\"drill password $i\",\"name\":\"Drill $i\"}" \
      || { cat "$work/docket.log" >&2; die "register drill$i"; }
    curl -fsS -o /dev/null -H 'Content-Type: application/json' "$api/auth/login" \
      -d "{\"email\":\"drill$i@example.com\",\"password\":\"drill password $i\"}" || die "login drill$i"
  done
  kill -TERM "$docket_pid"
  wait "$docket_pid" || true
  say "docket all on that database: 25 accounts registered and logged in"
else
  say "no build/docket: Docket's schema skipped, the drill table alone"
fi
t=$(now)
psql_db <<SQL
CREATE SCHEMA drill;
CREATE TABLE drill.items (
  id         bigint PRIMARY KEY,
  owner      uuid NOT NULL,
  title      text NOT NULL,
  body       text,
  done       boolean NOT NULL,
  due_at     timestamptz,
  tags       text[] NOT NULL,
  attrs      jsonb NOT NULL
);
INSERT INTO drill.items
SELECT g,
       md5('owner' || (g % 997))::uuid,
       'task ' || g || ' ' || md5(g::text),
       CASE WHEN g % 5 = 0 THEN NULL ELSE repeat(md5((g * 7)::text), 1 + g % 4) END,
       g % 3 = 0,
       CASE WHEN g % 2 = 0 THEN timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute' END,
       ARRAY['t' || (g % 11), 'p' || (g % 3)],
       jsonb_build_object('n', g, 'half', g / 2.0, 'name', 'item-' || g)
FROM generate_series(1, $rows) AS g;
CREATE INDEX items_owner ON drill.items (owner, due_at);
SQL
say "wrote $rows rows into drill.items in $(secs "$t" "$(now)") s ($(psql_db -tAc "SELECT pg_size_pretty(pg_database_size('$db'))") database)"

# count + md5 over every row of every table, in primary-key (or full-row) order
fingerprint() {
  local out=$1 t
  : >"$out"
  for t in $(psql_db -tAc "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables
                           WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"); do
    printf '%s %s\n' "$t" "$(psql_db -tAc "SELECT count(*) || ' ' || coalesce(md5(string_agg(r::text, E'\\n' ORDER BY r::text)), '-') FROM $t AS r")" >>"$out"
  done
}
fingerprint "$work/before.txt"
say "fingerprinted $(wc -l <"$work/before.txt") tables ($(awk '{s += $2} END {print s}' "$work/before.txt") rows)"

# ---- 3. backup (with retention) ---------------------------------------------------------------
old_key="${BACKUP_PREFIX}docket-20200101T000000Z.dump"
recent_key="${BACKUP_PREFIX}docket-$(date -u -d '-1 day' +%Y%m%dT%H%M%SZ).dump"
printf 'stale' >"$work/stale.dump"
for k in "$old_key" "$recent_key"; do
  curl -sS --fail --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: $(sha256sum "$work/stale.dump" | cut -d' ' -f1)" \
    --upload-file "$work/stale.dump" "$S3_ENDPOINT/$S3_BUCKET/$k" >/dev/null
done
t=$(now)
DATABASE_URL=$url deploy/backup/pg-backup.sh backup 2>&1 | sed 's/^/pg-drill:   /'
backup_s=$(secs "$t" "$(now)")
keys=$(deploy/backup/pg-backup.sh list)
echo "$keys" | grep -qx "$old_key" && die "retention: the 2020 dump was not deleted"
echo "$keys" | grep -qx "$recent_key" || die "retention: yesterday's dump was deleted"
latest=$(echo "$keys" | tail -n1)
[ "$latest" != "$recent_key" ] || die "no new dump in the bucket"
say "backup in $backup_s s: $latest; retention deleted the 2020 dump, kept yesterday's"

# ---- 4. the incident --------------------------------------------------------------------------
psql_admin -c "DROP DATABASE $db" -c "CREATE DATABASE $db"
[ "$(psql_db -tAc "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema')")" = 0 ] \
  || die "the database is not empty after the drop"
say "dropped the database $db and created it empty"

# ---- 5. restore -------------------------------------------------------------------------------
t=$(now)
DATABASE_URL=$url deploy/backup/pg-backup.sh restore latest 2>&1 | sed 's/^/pg-drill:   /'
restore_s=$(secs "$t" "$(now)")

# ---- 6. verify --------------------------------------------------------------------------------
t=$(now)
fingerprint "$work/after.txt"
verify_s=$(secs "$t" "$(now)")
if ! diff -u "$work/before.txt" "$work/after.txt" >&2; then die "the restored database differs"; fi
say "verified: $(wc -l <"$work/after.txt") tables, $(awk '{s += $2} END {print s}' "$work/after.txt") rows, every count and md5 equal"
sed 's/^/pg-drill:   /' "$work/after.txt"
if [ -x "$bin" ]; then
  (cd "$work" && exec env -i PATH=/usr/bin:/bin DATABASE_URL="$url" REDIS_URL="$DOCKET_TEST_REDIS_URL" \
    JWT_SECRET=drill-only-secret-0123456789abcdef DOCKET_SERVER_PORT="$port" \
    DOCKET_STORAGE_DATA_DIR="$work/data" "$bin" all >"$work/docket2.log" 2>&1 </dev/null) &
  docket_pid=$!
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$port/ready" 2>/dev/null && break; sleep 0.1; done
  status=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' "$api/auth/login" \
    -d '{"email":"drill7@example.com","password":"drill password 7"}') || status=none
  kill -TERM "$docket_pid"
  wait "$docket_pid" || true
  [ "$status" = 200 ] || { cat "$work/docket2.log" >&2; die "login on the restored database: HTTP $status"; }
  say "docket all on the restored database: drill7@example.com logs in (HTTP 200)"
fi
total=$(awk -v a="$restore_s" -v b="$verify_s" 'BEGIN { printf "%.2f", a + b }')
say "backup $backup_s s; restore (download + pg_restore) $restore_s s; verification $verify_s s"
say "time to recover: $total s of the seed's 15-minute RTO (900 s): $(awk -v t="$total" 'BEGIN { printf "%.1f", 100 * t / 900 }') % used"
awk -v t="$total" 'BEGIN { exit !(t < 900) }' || die "restore slower than the RTO"
say "drill passed"
