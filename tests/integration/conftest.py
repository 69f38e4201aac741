"""The integration tests' services and the fixtures every integration module may use by name.

- Services: moto's S3 server (`s3_server`), the tests' database migrated and wiped with their
  Redis databases before and after the session (`_clean_slate`), the API app (`app`, `client`,
  `make_app`) and a real in-process Celery worker (`job_worker`). They live here, not in
  tests/conftest.py, so the unit tests need none of them (`make test-unit`).
- The live API over real HTTP (`live_server`) and a files worker for it (`files_worker`), see
  live_server.py.
- Every test collected under this directory carries the `integration` marker, so
  `pytest -m "not integration"` runs the unit tests alone.

The environment these use (URLs, shrunk timings, the S3 port) is set in tests/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from shared.config import Settings, load_settings
from tests.integration.live_server import files_worker, live_server

__all__ = ["files_worker", "live_server"]

HERE = Path(__file__).resolve().parent
TABLES = "dead_letters, job_logs, job_events, jobs, users, celery_taskmeta, celery_tasksetmeta"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration `integration`, before `-m` selects (a conftest
    hook sees the whole session's items, so only this directory's are marked)."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


def _wipe(settings: Settings) -> None:
    from redis import Redis
    from sqlalchemy import text

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
    """moto's standalone S3 server: a separate process speaking S3 over HTTP, on the port
    tests/conftest.py pointed S3_ENDPOINT_URL at."""
    import subprocess
    import sys

    import requests

    from tests.helpers import wait_for

    port = os.environ["TEST_S3_PORT"]
    log = (tmp_path_factory.mktemp("s3") / "s3.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", port],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(url, timeout=1).status_code < 500
        except (requests.ConnectionError, requests.Timeout):  # a slow first answer: not up yet
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
def make_app(settings: Settings) -> Callable[..., Flask]:
    """Build an app with some settings changed (quotas, broker URL...)."""
    from api import create_app

    def build(**changes: Any) -> Flask:
        return create_app(replace(settings, **changes))

    return build


@pytest.fixture(scope="session")
def job_worker(settings: Settings) -> Iterator[Any]:
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
