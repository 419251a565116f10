#!/bin/sh
# PostgreSQL backups of Docket to S3-compatible object storage (the image docket/pg-backup runs
# it from the CronJob in deploy/backup/postgres; an operator can run it anywhere with
# pg_dump/pg_restore of the server's major version or newer, and curl 7.75+; `backup` checks the
# versions first).
#
#   pg-backup.sh backup            pg_dump -Fc → s3://$S3_BUCKET/$BACKUP_PREFIX<timestamp>.dump,
#                                  then prune dumps older than $BACKUP_RETENTION_DAYS
#   pg-backup.sh list              the dumps under the prefix, oldest first
#   pg-backup.sh prune             delete the dumps older than the retention
#   pg-backup.sh fetch KEY|latest FILE    download one dump
#   pg-backup.sh restore KEY|latest       download and pg_restore it into $DATABASE_URL
#                                  (--clean --if-exists: replaces what the dump contains)
#
# Environment: DATABASE_URL (postgres://…), S3_ENDPOINT (https://s3.us-west-2.amazonaws.com),
# S3_BUCKET, S3_REGION (us-east-1), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# BACKUP_PREFIX (postgres/; one per environment, e.g. postgres/production/: `restore` refuses a
# KEY outside it unless BACKUP_ALLOW_OTHER_PREFIX=1), BACKUP_RETENTION_DAYS (7), S3_VIRTUAL_HOST (false: path-style
# URLs endpoint/bucket/key; true: bucket.host/key), TMPDIR (/tmp: where the dump is staged).
# Requests are signed with AWS SigV4 by curl. Exit 0 on success, 1 on any failure, 2 on usage.
set -eu

log() { printf '%s pg-backup: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
need() { eval "[ -n \"\${$1:-}\" ]" || die "$1 is not set"; }

S3_REGION=${S3_REGION:-us-east-1}
BACKUP_PREFIX=${BACKUP_PREFIX:-postgres/}
BACKUP_RETENTION_DAYS=${BACKUP_RETENTION_DAYS:-7}
S3_VIRTUAL_HOST=${S3_VIRTUAL_HOST:-false}
TMPDIR=${TMPDIR:-/tmp}

# URL of KEY; a KEY of "?query" addresses the bucket itself (…/bucket?query, no slash)
s3_url() {
  endpoint=${S3_ENDPOINT%/}
  sep=/
  case $1 in \?*) sep="" ;; esac
  if [ "$S3_VIRTUAL_HOST" = true ]; then
    scheme=${endpoint%%://*}
    [ -z "$sep" ] && sep=/ # virtual-hosted: https://bucket.host/?query
    printf '%s://%s.%s%s%s' "$scheme" "$S3_BUCKET" "${endpoint#*://}" "$sep" "$1"
  else
    printf '%s/%s%s%s' "$endpoint" "$S3_BUCKET" "$sep" "$1"
  fi
}

# s3 METHOD KEY [FILE-TO-PUT] [curl args…]: one signed request; S3 wants the payload's SHA-256.
s3() {
  method=$1 key=$2
  shift 2
  payload_hash=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 # sha256("")
  if [ "$method" = PUT ]; then
    payload_hash=$(sha256sum "$1" | cut -d' ' -f1)
    set -- --upload-file "$1"
  fi
  curl --silent --show-error --fail --retry 3 --retry-all-errors --max-time 3600 \
    --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: $payload_hash" -X "$method" "$@" "$(s3_url "$key")"
}

check_s3_env() { for v in S3_ENDPOINT S3_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do need $v; done; }

# The keys under the prefix, one a line, oldest first (timestamps sort as text).
list_keys() {
  prefix_q=$(printf '%s' "$BACKUP_PREFIX" | sed 's|/|%2F|g')
  # query parameters in name order, RFC 3986-encoded, as SigV4 signs them
  listing=$(s3 GET "?list-type=2&max-keys=1000&prefix=$prefix_q") || die "cannot list s3://$S3_BUCKET/$BACKUP_PREFIX"
  case $listing in *"<IsTruncated>true</IsTruncated>"*) log "warning: more than 1000 objects under the prefix; only the first 1000 are considered" ;; esac
  printf '%s\n' "$listing" | tr '<' '\n' | sed -n 's|^Key>||p' | grep -E '[0-9]{8}T[0-9]{6}Z\.dump$' | sort || true
}

prune() {
  cutoff=$(date -u -d "@$(($(date +%s) - BACKUP_RETENTION_DAYS * 86400))" +%Y%m%dT%H%M%SZ)
  kept=0 deleted=0
  keys=$(list_keys) || exit 1
  for key in $keys; do
    stamp=$(printf '%s' "$key" | grep -oE '[0-9]{8}T[0-9]{6}Z' | tail -n1)
    if [ "$(printf '%s' "$stamp" | tr -d TZ)" -lt "$(printf '%s' "$cutoff" | tr -d TZ)" ]; then
      s3 DELETE "$key" >/dev/null
      deleted=$((deleted + 1))
      log "deleted $key (older than $BACKUP_RETENTION_DAYS days)"
    else
      kept=$((kept + 1))
    fi
  done
  log "retention: $kept kept, $deleted deleted"
}

# pg_dump older than the server refuses to dump it ("server version mismatch"); say so plainly,
# naming the build argument that fixes it, before any work is done.
check_client_version() {
  server=$(psql --no-psqlrc --tuples-only --no-align --dbname="$DATABASE_URL" \
    --command='SHOW server_version_num') || die "cannot reach the database to read its version"
  server_major=$((server / 10000))
  client_major=$(pg_dump --version | sed -n 's/^pg_dump (PostgreSQL) \([0-9]*\).*/\1/p')
  [ -n "$client_major" ] || die "cannot read pg_dump's version"
  if [ "$client_major" -lt "$server_major" ]; then
    die "pg_dump $client_major cannot dump PostgreSQL $server_major: rebuild docket/pg-backup with --build-arg PG_MAJOR=$server_major"
  fi
}

resolve_key() {
  if [ "$1" = latest ]; then
    keys=$(list_keys) || exit 1
    key=$(printf '%s\n' "$keys" | tail -n1)
    [ -n "$key" ] || die "no dump under s3://$S3_BUCKET/$BACKUP_PREFIX"
    printf '%s' "$key"
  else
    # another environment's dump is never restored by accident
    case $1 in
      "$BACKUP_PREFIX"*) ;;
      *) [ "${BACKUP_ALLOW_OTHER_PREFIX:-0}" = 1 ] || die "$1 is not under this environment's prefix $BACKUP_PREFIX (set BACKUP_ALLOW_OTHER_PREFIX=1 to restore it anyway)" ;;
    esac
    printf '%s' "$1"
  fi
}

cmd=${1:-}
case $cmd in
  backup)
    need DATABASE_URL
    check_s3_env
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    upload="$TMPDIR/docket-$stamp.dump"
    trap 'rm -f "$upload"' EXIT
    check_client_version
    start=$(date +%s)
    pg_dump --format=custom --compress=6 --no-owner --no-privileges \
      --dbname="$DATABASE_URL" --file="$upload"
    # a dump that pg_restore cannot read is no backup
    pg_restore --list "$upload" >/dev/null || die "pg_restore cannot read the new dump"
    size=$(wc -c <"$upload")
    key="${BACKUP_PREFIX}docket-$stamp.dump"
    s3 PUT "$key" "$upload" >/dev/null
    log "uploaded s3://$S3_BUCKET/$key ($size bytes, $(($(date +%s) - start)) s)"
    prune
    ;;
  list)
    check_s3_env
    keys=$(list_keys) || exit 1
    [ -z "$keys" ] || printf '%s\n' "$keys"
    ;;
  prune)
    check_s3_env
    prune
    ;;
  fetch)
    [ $# -eq 3 ] || { echo "usage: $0 fetch KEY|latest FILE" >&2; exit 2; }
    check_s3_env
    key=$(resolve_key "$2")
    s3 GET "$key" --output "$3"
    log "downloaded s3://$S3_BUCKET/$key to $3"
    ;;
  restore)
    [ $# -eq 2 ] || { echo "usage: $0 restore KEY|latest" >&2; exit 2; }
    need DATABASE_URL
    check_s3_env
    key=$(resolve_key "$2")
    file="$TMPDIR/docket-restore.$$.dump"
    trap 'rm -f "$file"' EXIT
    start=$(date +%s)
    s3 GET "$key" --output "$file"
    pg_restore --clean --if-exists --no-owner --no-privileges --exit-on-error \
      --dbname="$DATABASE_URL" "$file"
    log "restored s3://$S3_BUCKET/$key ($(($(date +%s) - start)) s)"
    ;;
  *)
    echo "usage: $0 backup|list|prune|fetch KEY|latest FILE|restore KEY|latest" >&2
    exit 2
    ;;
esac
