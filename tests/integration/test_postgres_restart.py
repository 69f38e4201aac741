"""PostgreSQL restarted (a fast shutdown terminates every connection) with jobs queued and
running: nothing the API accepted is lost, and every job ends `succeeded` exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import wait_for
from tests.integration.stack import Api, PrivatePostgres, PrivateRedis, api_server
from tests.integration.workers import celery_beat, celery_worker


@pytest.fixture
def platform_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], PrivatePostgres]]:
    postgres = PrivatePostgres()
    redis_server = PrivateRedis(tmp_path)
    try:
        postgres.start()
        redis_server.start()
        env = {
            "DATABASE_URL": postgres.url,
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{redis_server.port}/0",
            "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/1",
        }
        subprocess.run(
            [sys.executable, "-m", "shared.migrate", "upgrade"],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        yield env, postgres
    finally:
        redis_server.stop()
        postgres.stop()


def _status(api: Api, job_id: object) -> str | None:
    try:
        return api.get(f"/jobs/{job_id}")["status"]
    except (AssertionError, requests.RequestException):
        return None  # the API answers 503 while the database is away


def test_jobs_in_flight_survive_a_postgres_restart(
    tmp_path: Path, platform_env: tuple[dict[str, str], PrivatePostgres]
) -> None:
    env, postgres = platform_env
    with (
        api_server(tmp_path, env) as base,
        celery_worker(tmp_path, "diag", "diagnostics,maintenance", concurrency=2, env=env),
        celery_beat(tmp_path, env=env),
    ):
        api = Api(base)
        jobs = [api.submit("debug.sleep", {"seconds": 3, "steps": 6}) for _ in range(6)]
        wait_for(
            lambda: [_status(api, j) for j in jobs].count("running") == 2,
            timeout=30,
            message="two jobs running, four queued",
        )
        postgres.restart()
        wait_for(
            lambda: [_status(api, j) for j in jobs] == ["succeeded"] * len(jobs),
            timeout=90,
            interval=0.2,
            message="every job to succeed after PostgreSQL came back",
        )
        for job_id in jobs:
            types = [event["type"] for event in api.get(f"/jobs/{job_id}/events")["items"]]
            assert types.count("succeeded") == 1, types
            assert types[-1] == "succeeded", types
            assert "failed" not in types and "dead_lettered" not in types, types
