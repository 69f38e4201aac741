#!/usr/bin/env bash
# `make run`: set up, then run the whole platform in the foreground:
# the API (gunicorn), one Celery worker per queue (webhooks included), beat, Flower and the
# apps' reverse proxy (Caddy; admin API on loopback, routes set by the deploy workers).
# Ctrl-C (SIGINT) or SIGTERM stops every process this script started, and nothing else:
# Redis and PostgreSQL are daemons shared with other runs and tests, so they keep running
# (a second `make run` reuses them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

API_PORT="${API_PORT:-8000}"
FLOWER_PORT="${FLOWER_PORT:-5555}"
PROXY_PORT="${PROXY_PORT:-8080}"
export FLOWER_BASIC_AUTH="${FLOWER_BASIC_AUTH:-admin:dockyard}"
export LOG_JSON="${LOG_JSON:-false}"  # readable lines in a terminal; JSON in production

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$API_PORT" "$FLOWER_PORT" "$PROXY_PORT"; do
  if listening "$port"; then
    echo "[run] port $port is already in use (is another 'make run' running?)" >&2
    exit 1
  fi
done

scripts/setup.sh

mkdir -p var
pids=()
start() {  # start NAME COMMAND...: own process group, output prefixed with the name
  local name="$1"; shift
  setsid "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=("$!")
}

stopping=0
stop_all() {
  [[ $stopping -eq 1 ]] && return
  stopping=1
  echo "[run] stopping ${#pids[@]} processes"
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  echo "[run] stopped; redis and postgresql are still running for the next run"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

# Caddy starts with no apps (deploy/proxy/caddy.json with PROXY_PORT and PROXY_ADMIN_URL
# applied); the deploy workers load the routes through its admin API. Its state (certificates
# with PROXY_HTTPS) stays under var/caddy.
mkdir -p var/run var/caddy
.venv/bin/python -m workers.deploy.proxy --print-config >var/run/caddy.json
start proxy env XDG_CONFIG_HOME="$ROOT/var/caddy" XDG_DATA_HOME="$ROOT/var/caddy" \
  caddy run --config var/run/caddy.json
start api .venv/bin/gunicorn -c python:api.gunicorn_conf --bind "127.0.0.1:$API_PORT" --workers "${API_WORKERS:-3}" \
  --threads "${API_THREADS:-4}" --access-logfile - 'api.wsgi:app'
for queue in diagnostics files deploy dead_letter,maintenance webhooks; do
  name="worker-${queue%%,*}"
  start "$name" .venv/bin/celery -A shared.celery_app worker -Q "$queue" -n "${queue%%,*}@%h" \
    --loglevel=INFO -E -c "${WORKER_CONCURRENCY:-2}"
done
start beat .venv/bin/celery -A shared.celery_app beat --loglevel=INFO -s var/celerybeat-schedule
start flower .venv/bin/celery -A shared.celery_app flower --address=127.0.0.1 --port="$FLOWER_PORT"

for _ in $(seq 1 150); do listening "$API_PORT" && listening "$FLOWER_PORT" && break; sleep 0.2; done
cat <<BANNER
[run] ------------------------------------------------------------
[run] API:    http://127.0.0.1:$API_PORT/api/v1
[run] Docs:   http://127.0.0.1:$API_PORT/api/v1/docs
[run] Flower: http://127.0.0.1:$FLOWER_PORT  (user ${FLOWER_BASIC_AUTH%%:*})
[run] Apps:   http://<app>.${DEPLOY_DOMAIN:-localhost}:$PROXY_PORT/  (Caddy)
[run] Ctrl-C stops everything started here.
[run] ------------------------------------------------------------
BANNER

# If any process dies on its own, stop the rest and fail: a half-running platform misleads.
set +e
wait -n "${pids[@]}"
status=$?
set -e
if [[ $stopping -eq 0 ]]; then
  echo "[run] a process exited unexpectedly (status $status); stopping the rest" >&2
  stop_all
  exit 1
fi
