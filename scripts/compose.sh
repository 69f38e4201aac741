#!/usr/bin/env bash
# docker-compose for ops (`make up`, `make down`, `make scale`). With LOCAL_IMAGES=1 (the
# default: this kind of machine has no registry) the images are built here first and the
# stack uses them; with LOCAL_IMAGES=0 compose pulls public images and builds the platform
# image itself (set image variables in .env, see .env.example).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
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
  scripts/compose_images.sh >var/compose-images.env
  set -a
  # shellcheck disable=SC1091
  . var/compose-images.env
  set +a
  export NO_BUILD=--no-build
fi
export DOCKER_GID="${DOCKER_GID:-$(getent group docker | cut -d: -f3 || echo 0)}"
if [[ "${1:-}" == "up" && -n "${NO_BUILD:-}" ]]; then
  shift
  exec "${COMPOSE[@]}" -p "${COMPOSE_PROJECT_NAME:-dockyard}" up --no-build "$@"
fi
exec "${COMPOSE[@]}" -p "${COMPOSE_PROJECT_NAME:-dockyard}" "$@"
