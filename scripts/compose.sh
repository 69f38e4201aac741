#!/usr/bin/env bash
# docker-compose for ops (`make up`, `make down`, `make scale`). With LOCAL_IMAGES=1 (the
# default: this kind of machine has no registry) the images are built here first and the
# stack uses them; with LOCAL_IMAGES=0 compose pulls public images and builds the platform
# image itself (set image variables in .env, see .env.example).
#
# Settings and secrets come from ENV_FILE (default .env), which scripts/make_env.sh creates or
# completes with random secrets first (values already there are kept). S3_BIND_ADDRESS and
# FLOWER_BIND_ADDRESS (environment or ENV_FILE) opt in to publishing S3 and Flower, by adding
# deploy/compose/expose-s3.yml and expose-flower.yml. SKIP_IMAGES=1 (what `make scale` sets)
# reuses the images the last `up` built instead of building them again.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ENV_FILE="$(realpath -m "${ENV_FILE:-$ROOT/.env}")"
scripts/make_env.sh "$ENV_FILE"
setting() {  # setting NAME: the environment's value, else the env file's
  if [[ -n "${!1:-}" ]]; then printf '%s' "${!1}"; else sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1; fi
}
FILES=(-f docker-compose.yml)
[[ -z "$(setting S3_BIND_ADDRESS)" ]] || FILES+=(-f deploy/compose/expose-s3.yml)
[[ -z "$(setting FLOWER_BIND_ADDRESS)" ]] || FILES+=(-f deploy/compose/expose-flower.yml)
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  command -v docker-compose >/dev/null 2>&1 || {
    echo "[compose] installing docker-compose" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  }
  COMPOSE=(docker-compose)
fi
if [[ "${LOCAL_IMAGES:-1}" == "1" && "${1:-}" == "up" ]]; then
  mkdir -p var
  if [[ "${SKIP_IMAGES:-0}" != "1" || ! -s var/compose-images.env ]]; then
    scripts/compose_images.sh >var/compose-images.env.new
    mv var/compose-images.env.new var/compose-images.env
  fi
  set -a
  # shellcheck disable=SC1091
  . var/compose-images.env
  set +a
  export NO_BUILD=--no-build
fi
export DOCKER_GID="${DOCKER_GID:-$(getent group docker | cut -d: -f3 || echo 0)}"
if [[ "${1:-}" == "up" ]]; then
  # The deploy workers run as a non-root user in their own network namespace: they cannot set
  # the host firewall that keeps one user's apps away from the host, other users' published
  # ports and private networks (workers/deploy/firewall.py). The operator's `make up` can.
  if [[ $EUID -eq 0 ]] && command -v iptables >/dev/null 2>&1; then
    deny="$(setting DEPLOY_EGRESS_DENY)"
    env -i PATH="$PATH" ${deny:+DEPLOY_EGRESS_DENY="$deny"} python3 -m workers.deploy.firewall --apply
    echo "[compose] deploy firewall applied on this host (iptables chains DOCKYARD-DEPLOY-IN/OUT)" >&2
  else
    echo "[compose] WARNING: deploy firewall not applied (needs root and iptables): users' apps" \
      "can reach this host's services and each other's published ports; run" \
      "'python3 -m workers.deploy.firewall --apply' as root on the engine host" >&2
  fi
fi
if [[ "${1:-}" == "up" && -n "${NO_BUILD:-}" ]]; then
  shift
  exec "${COMPOSE[@]}" --env-file "$ENV_FILE" -p "${COMPOSE_PROJECT_NAME:-dockyard}" "${FILES[@]}" \
    up --no-build "$@"
fi
exec "${COMPOSE[@]}" --env-file "$ENV_FILE" -p "${COMPOSE_PROJECT_NAME:-dockyard}" "${FILES[@]}" "$@"
