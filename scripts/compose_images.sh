#!/usr/bin/env bash
# Images for docker-compose on a machine without a registry: the platform image built from
# deploy/Dockerfile on a local Debian base (with wheels built here: pip inside `docker build`
# cannot reach the package index), and local stand-ins for redis, postgres and MinIO, and the
# apps' reverse proxy (Debian's caddy).
# Prints the environment that points docker-compose at them. Docker caches every layer, so
# a second run only rebuilds what changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '[compose-images] %s\n' "$*" >&2; }
scripts/images.sh >&2
BASE_IMAGE="${DOCKYARD_BASE_IMAGE:-dockyard/base:bookworm}"
mkdir -p var/log deploy/wheels
# One build at a time (compose.sh and the pytest-celery tests both call this script): two
# would write the same wheels directory and tags.
exec 9>var/compose-images.lock
flock 9

build() {  # build TAG DOCKERFILE CONTEXT [build args...]
  local tag="$1" file="$2" context="$3"
  shift 3
  log "building $tag"
  docker build -q -t "$tag" -f "$file" "$@" "$context" >"var/log/build-${tag//[\/:]/_}.log" 2>&1 \
    || { log "build of $tag failed:"; tail -30 "var/log/build-${tag//[\/:]/_}.log" >&2; return 1; }
}
pids=()
background() {  # background COMMAND...: run it alongside, `await` collects its status
  "$@" &
  pids+=($!)
}
await() {  # wait for every background build; fail if any failed
  local failed=0 pid
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  pids=()
  [[ $failed -eq 0 ]] || exit 1
}

# The images FROM the Debian base spend their time in apt downloads and the wheels in pip's:
# they run side by side (most of it is waiting on the network, even on 2 cores).
background build dockyard/base-venv:bookworm deploy/compose/base-venv.Dockerfile deploy/compose \
  --build-arg BASE_IMAGE="$BASE_IMAGE"
background build dockyard/redis-local:latest deploy/compose/redis.Dockerfile deploy/compose \
  --build-arg BASE_IMAGE="$BASE_IMAGE"
background build dockyard/postgres-local:latest deploy/compose/postgres.Dockerfile deploy/compose \
  --build-arg BASE_IMAGE="$BASE_IMAGE"
background build dockyard/proxy:local deploy/compose/proxy.Dockerfile deploy \
  --build-arg BASE_IMAGE="$BASE_IMAGE"

# Wheels are rebuilt only when what they come from changes, reproducibly (fixed timestamps),
# so an unchanged tree gives the same image and `compose up` leaves running containers alone.
# The dependencies' wheels follow pyproject.toml; a change in the sources alone rebuilds only
# the project's own wheel (seconds, instead of resolving and fetching every dependency again).
# deploy/wheels/.stamp holds both keys: DEPENDENCIES-SOURCES.
deps_stamp="$(sha256sum pyproject.toml | cut -c1-16)"
stamp="$deps_stamp-$(cat pyproject.toml celeryconfig.py $(find api shared workers -name '*.py' -o -name '*.mako' -o -name '*.ini' | sort) | sha256sum | cut -c1-16)"
built="$(cat deploy/wheels/.stamp 2>/dev/null || true)"
if [[ "$built" != "$stamp" ]]; then
  rm -f deploy/wheels/dockyard-*.whl
  rm -rf build  # setuptools' in-tree build directory: never package a stale copy
  if [[ "${built%%-*}" != "$deps_stamp" ]]; then
    log "building wheels into deploy/wheels"
    # async-timeout: redis needs it on Python < 3.11.3 (Debian's 3.11.2), not on this venv's.
    SOURCE_DATE_EPOCH=315532800 .venv/bin/pip wheel -q -w deploy/wheels . \
      "moto[server]>=5,<6" setuptools wheel async-timeout \
      >var/log/wheels.log 2>&1 || { tail -20 var/log/wheels.log >&2; exit 1; }
  else
    log "building the dockyard wheel into deploy/wheels (dependencies unchanged)"
    SOURCE_DATE_EPOCH=315532800 .venv/bin/pip wheel -q --no-deps -w deploy/wheels . \
      >var/log/wheels.log 2>&1 || { tail -20 var/log/wheels.log >&2; exit 1; }
  fi
  echo "$stamp" >deploy/wheels/.stamp
fi

await  # the platform image needs the wheels and base-venv; the S3 stand-in needs the platform
build dockyard/platform:latest deploy/Dockerfile . --build-arg BASE_IMAGE=dockyard/base-venv:bookworm \
  --build-arg PIP_INDEX_OPTION=--no-index || exit 1
build dockyard/s3-local:latest deploy/compose/s3.Dockerfile deploy \
  --build-arg PLATFORM_IMAGE=dockyard/platform:latest || exit 1

cat <<ENV
PLATFORM_IMAGE=dockyard/platform:latest
PLATFORM_BASE_IMAGE=dockyard/base-venv:bookworm
REDIS_IMAGE=dockyard/redis-local:latest
POSTGRES_IMAGE=dockyard/postgres-local:latest
MINIO_IMAGE=dockyard/s3-local:latest
PROXY_IMAGE=dockyard/proxy:local
DOCKER_GID=$(getent group docker | cut -d: -f3 || echo 0)
ENV
