#!/usr/bin/env bash
# `make test`: the same set-up as `make run` plus a test database, then the whole suite.
# Tests use their own database and Redis databases, so a running `make run` is not disturbed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh --test
export DOCKYARD_ENV="${DOCKYARD_ENV:-test}"
export DATABASE_URL="${TEST_DATABASE_URL:-postgresql+psycopg2://dockyard:dockyard@127.0.0.1:5432/dockyard_test}"
export CELERY_BROKER_URL="${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/14}"
export REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
unset CELERY_RESULT_BACKEND
exec .venv/bin/pytest "$@"
