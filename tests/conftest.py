"""Test set-up: a database and Redis databases of the tests' own, fast lifecycle timings,
the API app, and a real in-process Celery worker.

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
# File jobs run against a real S3 endpoint: moto's S3 server process, started below.
# TEST_S3_PORT lets two test runs on one machine (parallel work) keep their own server.
S3_PORT = int(os.environ.get("TEST_S3_PORT", "5698"))
os.environ.setdefault("STORAGE_BACKEND", "s3")
os.environ.setdefault("S3_ENDPOINT_URL", f"http://127.0.0.1:{S3_PORT}")
os.environ.setdefault("S3_BUCKET", "dockyard-test")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

from collections.abc import Iterator  # noqa: E402
from dataclasses import replace  # noqa: E402

import pytest  # noqa: E402
from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402
from redis import Redis  # noqa: E402
from sqlalchemy import text  # noqa: E402

from shared.config import Settings, load_settings  # noqa: E402

TABLES = "dead_letters, job_logs, job_events, jobs, users, celery_taskmeta, celery_tasksetmeta"


def _wipe(settings: Settings) -> None:
    from shared.db import get_engine

    with get_engine().begin() as connection:
        existing = {
            row[0]
            for row in connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
        }
        tables = [t.strip() for t in TABLES.split(",") if t.strip() in existing]
        if tables:
            connection.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
    Redis.from_url(settings.redis_url).flushdb()
    Redis.from_url(settings.broker_url).flushdb()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3 server: a separate process speaking S3 over HTTP."""
    import subprocess
    import sys
    from pathlib import Path

    import requests

    from tests.helpers import wait_for

    log = (tmp_path_factory.mktemp("s3") / "s3.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(S3_PORT)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{S3_PORT}"

    def up() -> bool:
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, timeout=30, message="the S3 server")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def settings(s3_server: str) -> Settings:
    return load_settings()


@pytest.fixture(scope="session", autouse=True)
def _clean_slate(settings: Settings) -> Iterator[None]:
    """Start from empty tables and Redis databases; leave nothing behind."""
    from shared.migrate import upgrade

    upgrade(settings.database_url)
    _wipe(settings)
    yield
    _wipe(settings)


@pytest.fixture(scope="session")
def app(settings: Settings) -> Flask:
    from api import create_app

    return create_app(settings)


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture()
def make_app(settings: Settings):
    """Build an app with some settings changed (quotas, broker URL...)."""
    from api import create_app

    def build(**changes: object) -> Flask:
        return create_app(replace(settings, **changes))

    return build


@pytest.fixture(scope="session")
def job_worker(settings: Settings):
    """A real Celery worker, in this process, consuming diagnostics, dead letters and
    maintenance. Crash tests start their own `celery worker` subprocesses on `files`."""
    from celery.contrib.testing.worker import start_worker

    import workers.tasks  # noqa: F401  (registers the tasks)
    from shared.celery_app import app as celery_app
    from shared.dispatch import queues

    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        queues=[queues.DIAGNOSTICS, queues.DEAD_LETTER, queues.MAINTENANCE],
        hostname="pytest-worker@localhost",
        shutdown_timeout=30,
    ) as worker:
        yield worker
