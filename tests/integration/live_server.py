"""A live API over real HTTP for clients that speak HTTP (the SDK and the `dockyard`
command line): gunicorn serving the app on a free port, on the tests' own database, broker
and Redis (from the environment tests/conftest.py sets up), so the session's in-process
`job_worker` runs its diagnostics jobs and a `files_worker` its file jobs.

`live_server` is the module's shared server; `serve(...)` starts another one with changed
settings (a short token lifetime, a small submit quota...) for the tests that need them.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.helpers import PASSWORD, free_port, wait_for
from tests.integration.workers import Process, celery_worker

BIN = Path(sys.executable).parent


def _answers(url: str) -> bool:
    """Whether the server answers 200 yet. Not yet also when it accepted the connection but
    took more than a second to answer (its workers still importing the app on a busy
    machine): a read timeout, which failed the fixture instead of waiting longer."""
    try:
        return requests.get(url, timeout=1).status_code == 200
    except (requests.ConnectionError, requests.Timeout):
        return False


@contextmanager
def serve(
    workdir: Path, env: Mapping[str, str] | None = None, *, workers: int = 2, threads: int = 8
) -> Iterator[str]:
    """gunicorn serving the API (as the compose stack runs it) with the tests' environment
    plus `env`; yields the base URL (the server root, e.g. http://127.0.0.1:PORT). Each open
    SSE stream holds one of the `workers * threads` threads."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {
        **os.environ,
        "PUBLIC_BASE_URL": base,
        "LOG_LEVEL": "WARNING",
        "LOG_JSON": "false",
        **(env or {}),
    }
    environment.pop("CELERY_RESULT_BACKEND", None)
    process = Process(
        [str(BIN / "gunicorn"), "-c", "python:api.gunicorn_conf", "--bind", f"127.0.0.1:{port}"]
        + ["--workers", str(workers), "--threads", str(threads), "--timeout", "120"]
        + ["api.wsgi:app"],
        workdir / f"gunicorn-{port}.log",
        environment,
    )
    try:
        wait_for(
            lambda: _answers(base + "/healthz") or process.popen.poll() is not None,
            timeout=60,
            message="the live API",
        )
        assert process.popen.poll() is None, process.log()
        yield base
    finally:
        process.stop()


@pytest.fixture(scope="module")
def live_server(settings, job_worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The module's live API (base URL); diagnostics jobs run on the session's worker."""
    with serve(tmp_path_factory.mktemp("live-api")) as base:
        yield base


@pytest.fixture(scope="module")
def files_worker(settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A `celery worker` on the files queue, for file jobs submitted to the live API."""
    with celery_worker(tmp_path_factory.mktemp("files"), "live-files", "files", 2) as worker:
        yield worker


def new_account(base: str, admin: bool = False) -> tuple[str, str]:
    """Register a fresh account over HTTP (made an admin with the CLI's helper if asked):
    (email, password)."""
    email = f"live-{uuid.uuid4().hex[:10]}@example.com"
    response = requests.post(
        f"{base}/api/v1/auth/register", json={"email": email, "password": PASSWORD}, timeout=30
    )
    assert response.status_code == 201, response.text
    if admin:
        from api.cli import ensure_admin

        ensure_admin(email, None, os.environ["DATABASE_URL"])
    return email, PASSWORD
