"""What unit and integration tests share: the tests' environment, and nothing that connects.

The environment is set here, before any test module is imported, rather than in
tests/integration/conftest.py: modules read it once at import (`shared.celery_app` builds its
Celery app from it), and in one `pytest tests` run a unit test may import them before the
integration conftest is loaded. Setting variables opens no connection, so `make test-unit`
runs with no PostgreSQL, Redis, S3 or Docker reachable. The service fixtures (S3 server,
database and Redis wipe, the app, the in-process worker) live in tests/integration/conftest.py.

`make test` (scripts/test.sh) exports the database and Redis URLs; the defaults below let a
bare `pytest` work against the same services.
"""

from __future__ import annotations

import os

os.environ.setdefault("DOCKYARD_ENV", "test")
os.environ.setdefault(
    "DATABASE_URL", "postgresql+psycopg2://dockyard:dockyard@127.0.0.1:5432/dockyard_test"
)
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
# Lifecycle timings shrunk so retries, stale heartbeats and sweeps happen in seconds.
os.environ.setdefault("RETRY_BACKOFF_BASE", "0.3")
os.environ.setdefault("RETRY_BACKOFF_MAX", "5")
os.environ.setdefault("RETRY_JITTER", "0.5")
os.environ.setdefault("HEARTBEAT_INTERVAL", "0.5")
os.environ.setdefault("HEARTBEAT_STALE_AFTER", "3")
os.environ.setdefault("SWEEP_INTERVAL", "1")
os.environ.setdefault("OUTBOX_GRACE", "0.5")
os.environ.setdefault("QUOTA_SUBMITS_PER_MINUTE", "0")
os.environ.setdefault("QUOTA_ACTIVE_JOBS", "0")
# Every test client is 127.0.0.1: the per-address hashing limit is tested on its own.
os.environ.setdefault("AUTH_RATE_PER_MINUTE", "0")
os.environ.setdefault("LOG_LEVEL", "INFO")
# No test's deploy worker configures a proxy it did not start itself (a developer's `make run`
# Caddy listens on the default admin port): the ones that route start their own Caddy.
os.environ.setdefault("PROXY_ADMIN_URL", "http://127.0.0.1:9")
# File jobs run against a real S3 endpoint: moto's S3 server process, which the integration
# tests' `s3_server` fixture starts on TEST_S3_PORT. Setting it lets two test runs on one
# machine (parallel work) keep their own server.
os.environ.setdefault("TEST_S3_PORT", "5698")
os.environ.setdefault("STORAGE_BACKEND", "s3")
os.environ.setdefault("S3_ENDPOINT_URL", f"http://127.0.0.1:{os.environ['TEST_S3_PORT']}")
os.environ.setdefault("S3_BUCKET", "dockyard-test")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
