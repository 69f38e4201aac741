"""File-job failures that need a worker configured differently: a wall-clock timeout, and
an unreachable Docker engine (retryable: retried with backoff, then dead-lettered)."""

from __future__ import annotations

import os

from tests.helpers import User, wait_for
from tests.integration.workers import celery_worker


def test_a_processor_over_its_time_limit_fails_with_timeout(app, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FILE_JOB_TIMEOUT_MAX", "1.5")
    user = User(app.test_client())
    with celery_worker(tmp_path, "files-short", "files"):
        job = user.submit_file(
            "archive.compress", os.urandom(24 * 1024 * 1024), {"format": "xz", "level": 9}
        )
        done = user.wait_status(job["id"], "failed", "succeeded", "dead", timeout=60)
    assert done["status"] == "failed" and done["attempts"] == 1
    assert done["error"]["code"] == "timeout"
    assert "1.5 s" in done["error"]["message"]
    logs = user.get(f"/api/v1/jobs/{job['id']}/logs").get_json()["items"]
    assert "DOCKYARD-PROGRESS" in logs[0]["content"]


def test_an_unreachable_docker_engine_is_retried_then_dead_lettered(
    app, tmp_path, monkeypatch, job_worker
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    user = User(app.test_client())
    admin = User(app.test_client(), role="admin")
    with celery_worker(tmp_path, "files-no-docker", "files"):
        job = user.submit_file("file.checksum", b"bytes", max_attempts=2)
        done = user.wait_status(job["id"], "dead", "failed", "succeeded", timeout=60)
    assert done["status"] == "dead" and done["attempts"] == 2
    assert done["error"]["code"] == "docker_unavailable"
    types = [event["type"] for event in user.events(job["id"])]
    assert types.count("attempt_failed") == 2 and "retry_scheduled" in types
    # Kept for a requeue once the engine is back: a dead job's input is not deleted.
    assert done["input"]["deleted"] is False
    wait_for(
        lambda: any(
            item["job_id"] == job["id"]
            for item in admin.get("/api/v1/admin/dead-letters?processor=file.checksum").get_json()[
                "items"
            ]
        ),
        message="the dead letter",
    )
