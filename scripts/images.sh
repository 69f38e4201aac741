#!/usr/bin/env bash
# The Docker engine and the locally built images the platform runs jobs in.
# There is no registry here (see ../shared/ENVIRONMENT.md): the base image is made with
# debootstrap and imported; the processor image is built FROM it. Both are cached: the base
# is made once, the processor image is rebuilt only when deploy/processors/ changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '[images] %s\n' "$*"; }

BASE_IMAGE="${DOCKYARD_BASE_IMAGE:-dockyard/base:bookworm}"
PROCESSOR_IMAGE="${PROCESSOR_IMAGE:-dockyard/processors:latest}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  mkdir -p var/log
  setsid nohup dockerd >var/log/dockerd.log 2>&1 < /dev/null &  # a daemon, like Redis
  for _ in $(seq 1 150); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see var/log/dockerd.log"; exit 1; }
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "making $BASE_IMAGE with debootstrap (about a minute)"
  rootfs="$(mktemp -d /var/tmp/dockyard-base.XXXXXX)"
  debootstrap --variant=minbase --include=python3,python3-pil,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >var/log/debootstrap.log 2>&1 \
    || { log "debootstrap failed; see var/log/debootstrap.log"; rm -rf "$rootfs"; exit 1; }
  tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi

# The processor image is rebuilt when its sources or its base (name or content) change.
base_id="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")"
source_hash="$( (cat deploy/processors/*; echo "$BASE_IMAGE $base_id") | sha256sum | cut -c1-16)"
current="$(docker image inspect -f '{{index .Config.Labels "dockyard.source-hash"}}' \
  "$PROCESSOR_IMAGE" 2>/dev/null || true)"
if [[ "$current" != "$source_hash" ]]; then
  log "building $PROCESSOR_IMAGE"
  docker build -t "$PROCESSOR_IMAGE" --label "dockyard.source-hash=$source_hash" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg INSTALL_PILLOW=0 \
    deploy/processors >var/log/docker-build.log 2>&1 \
    || { log "image build failed:"; tail -20 var/log/docker-build.log; exit 1; }
fi
log "ready ($PROCESSOR_IMAGE)"
