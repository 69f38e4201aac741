#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (as root) or a developer machine:
# system packages, the virtualenv, Redis, PostgreSQL, the role and databases, migrations.
# Safe to run again: it reuses whatever is installed and running.
#   scripts/setup.sh          development database
#   scripts/setup.sh --test   also the test database
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1

VAR="$ROOT/var"
mkdir -p "$VAR/run" "$VAR/log"
log() { printf '[setup] %s\n' "$*"; }

DB_USER=dockyard
DB_PASSWORD=dockyard
DEV_DB=dockyard
TEST_DB=dockyard_test
DB_HOST=127.0.0.1
DB_PORT=5432
REDIS_PORT=6379

# --- system packages (only what is missing, in one apt-get update and one install) ----------
# One batch: every separate install pays for apt's dependency resolution and dpkg's triggers
# again. It includes what scripts/images.sh needs (the Docker engine, debootstrap) and, for
# the tests, docker-compose (`make up` in the compose tests would install it mid-run).
missing=()
need_pkg() {  # need_pkg COMMAND PACKAGE...
  command -v "$1" >/dev/null 2>&1 || missing+=("${@:2}")
}
need_pkg redis-server redis-server
need_pkg pg_ctlcluster postgresql
need_pkg git git
need_pkg wrk wrk
need_pkg caddy caddy  # the apps' reverse proxy (`make run` starts it; no system service)
need_pkg dockerd docker.io
need_pkg debootstrap debootstrap
if [[ $WITH_TEST -eq 1 ]] && ! docker compose version >/dev/null 2>&1; then
  need_pkg docker-compose docker-compose
fi
if [[ ${#missing[@]} -gt 0 ]]; then
  log "apt-get update"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Caddy binds a new listening socket (SO_REUSEPORT) on every route change and closes the old
# one: with this, connections still queued on the old socket move to the new one instead of
# being reset (Linux 5.14+; it is per network namespace).
if [[ -e /proc/sys/net/ipv4/tcp_migrate_req && "$(cat /proc/sys/net/ipv4/tcp_migrate_req)" != 1 ]]; then
  echo 1 2>/dev/null >/proc/sys/net/ipv4/tcp_migrate_req \
    && log "net.ipv4.tcp_migrate_req=1 (no connection reset when the proxy changes routes)" \
    || log "WARNING: could not set net.ipv4.tcp_migrate_req=1: a route change may reset a connection"
fi

# --- Docker engine and the processor images, in the background -----------------------------
# Making the base image (debootstrap, about a minute of downloads) does not need the
# virtualenv and pip's install does not need Docker: on a fresh machine they overlap.
images_log="$VAR/log/images.log"
scripts/images.sh >"$images_log" 2>&1 &
images_pid=$!

# --- virtualenv and the project (skipped when pyproject.toml did not change) ---------------
scripts/venv.sh

# --- Redis -----------------------------------------------------------------------------------
if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  log "starting redis on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --logfile "$VAR/log/redis.log"
  echo redis >> "$VAR/run/started-by-dockyard"
  for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli -p "$REDIS_PORT" ping >/dev/null || { log "redis did not start"; exit 1; }

# --- PostgreSQL ------------------------------------------------------------------------------
if ! pg_isready -q -h "$DB_HOST" -p "$DB_PORT"; then
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  log "starting postgresql $version/main"
  pg_ctlcluster "$version" main start
  echo postgres >> "$VAR/run/started-by-dockyard"
  for _ in $(seq 1 100); do pg_isready -q -h "$DB_HOST" -p "$DB_PORT" && break; sleep 0.1; done
fi
pg_isready -q -h "$DB_HOST" -p "$DB_PORT" || { log "postgresql did not start"; exit 1; }

psql_admin() { su postgres -c "psql -v ON_ERROR_STOP=1 -qtAc \"$1\""; }
if [[ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname='$DB_USER'")" != "1" ]]; then
  log "creating role $DB_USER"
  psql_admin "CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD'"
fi
databases=("$DEV_DB")
[[ $WITH_TEST -eq 1 ]] && databases+=("$TEST_DB")
for db in "${databases[@]}"; do
  if [[ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname='$db'")" != "1" ]]; then
    log "creating database $db"
    psql_admin "CREATE DATABASE $db OWNER $DB_USER"
  fi
done

# --- Docker engine and the processor images (file jobs run in them): started above -------
images_status=0
wait "$images_pid" || images_status=$?
cat "$images_log"
[[ $images_status -eq 0 ]] || { log "scripts/images.sh failed (see above)"; exit 1; }

# --- migrations ------------------------------------------------------------------------------
for db in "${databases[@]}"; do
  url="postgresql+psycopg2://$DB_USER:$DB_PASSWORD@$DB_HOST:$DB_PORT/$db"
  if [[ "$db" == "$DEV_DB" && -n "${DATABASE_URL:-}" ]]; then url="$DATABASE_URL"; fi
  log "migrating $db"
  DATABASE_URL="$url" .venv/bin/python -m shared.migrate upgrade
done
log "ready"
