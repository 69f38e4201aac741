#!/usr/bin/env bash
# The virtualenv and nothing else: .venv with the project (and its dev tools) and the client
# installed, skipped when their pyproject.toml files did not change. No service is started or
# needed, so `make test-unit` and the lint targets can run on a machine with no Redis,
# PostgreSQL or Docker. scripts/setup.sh calls it for the rest of the set-up.
#   PYTHON   the interpreter .venv is created with (default python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '[venv] %s\n' "$*"; }
PYTHON="${PYTHON:-python3}"

if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  log "installing the project into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# The client (SDK and the `dockyard` command line), its own distribution in client/.
client_stamp=".venv/.client-installed-$(sha256sum client/pyproject.toml | cut -c1-16)"
if [[ ! -f "$client_stamp" ]]; then
  log "installing the client (dockyard) into .venv"
  .venv/bin/pip install -q -e ./client
  rm -f .venv/.client-installed-*
  touch "$client_stamp"
fi
