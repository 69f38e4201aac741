"""File jobs on workers configured differently: a short wall-clock limit, an unreachable
Docker engine or storage (retryable: retried with backoff, then dead-lettered), and the local
storage backend that `make run` uses, downloads signed and served by the API."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from tests.helpers import User, wait_for
from tests.integration.workers import celery_worker


def compress_24_mib_with_xz(app, tmp_path, level: int) -> tuple[User, dict, dict]:  # noqa: ANN001
    """24 MiB of random bytes through archive.compress (xz) on a fresh files worker, run to
    its end: xz is the processor that can be made to outrun its time or memory limit."""
    user = User(app.test_client())
    with celery_worker(tmp_path, f"files-xz{level}", "files"):
        job = user.submit_file(
            "archive.compress", os.urandom(24 * 1024 * 1024), {"format": "xz", "level": level}
        )
        done = user.wait_status(job["id"], "failed", "succeeded", "dead", timeout=90)
    return user, job, done


def test_a_processor_over_its_time_limit_fails_with_timeout(app, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FILE_JOB_TIMEOUT_MAX", "4.5")  # xz -6 on 24 MiB: ~13 s of CPU
    user, job, done = compress_24_mib_with_xz(app, tmp_path, level=6)
    assert done["status"] == "failed" and done["attempts"] == 1
    assert done["error"]["code"] == "timeout"
    assert "4.5 s" in done["error"]["message"]
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
        # The worker routes the dead letter just after committing `dead`: wait for it before
        # stopping the worker, or the stop can land in between (the sweep would re-send it).
        wait_for(
            lambda: any(
                item["job_id"] == job["id"]
                for item in admin.get(
                    "/api/v1/admin/dead-letters?processor=file.checksum"
                ).get_json()["items"]
            ),
            message="the dead letter",
        )
    assert done["status"] == "dead" and done["attempts"] == 2
    assert done["error"]["code"] == "docker_unavailable"
    types = [event["type"] for event in user.events(job["id"])]
    assert types.count("attempt_failed") == 2 and "retry_scheduled" in types
    # Kept for a requeue once the engine is back: a dead job's input is not deleted.
    assert done["input"]["deleted"] is False


def test_unreachable_storage_in_the_worker_is_retried_then_dead(
    app, tmp_path, monkeypatch, job_worker
) -> None:
    user = User(app.test_client())
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9")  # only the worker's
    with celery_worker(tmp_path, "files-no-storage", "files"):
        job = user.submit_file("file.checksum", b"bytes", max_attempts=2)
        done = user.wait_status(job["id"], "dead", "failed", "succeeded", timeout=90)
    assert done["status"] == "dead" and done["attempts"] == 2
    assert done["error"]["code"] == "storage_error"


def test_local_backend_end_to_end_with_a_signed_download(make_app, tmp_path, monkeypatch) -> None:
    root = tmp_path / "storage"
    monkeypatch.setenv("STORAGE_BACKEND", "local")
    monkeypatch.setenv("STORAGE_LOCAL_ROOT", str(root))
    app = make_app(storage_backend="local", storage_local_root=str(root))
    user = User(app.test_client())
    with celery_worker(tmp_path, "files-local", "files"):
        job = user.submit_file("archive.compress", b"local " * 1000, {"format": "bz2"})
        done = user.wait_status(job["id"], "succeeded", "failed", "dead", timeout=60)
    assert done["status"] == "succeeded", done["error"]
    url = urlsplit(user.get(f"/api/v1/jobs/{job['id']}/download").get_json()["url"])
    assert url.path.startswith("/api/v1/files/users/")
    download = app.test_client().get(f"{url.path}?{url.query}")  # the URL is the credential
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment")
    import bz2

    assert bz2.decompress(download.data) == b"local " * 1000
    tampered = app.test_client().get(f"{url.path}?{url.query.replace('signature=', 'signature=0')}")
    assert tampered.status_code == 403


def test_a_processor_over_its_memory_limit_fails_with_memory_limit_exceeded(app, tmp_path) -> None:
    """xz -9 needs about 670 MiB to compress; archive.compress runs with 128 MiB, so the
    kernel kills it: a permanent `memory_limit_exceeded`, not a generic processor failure."""
    _user, _job, done = compress_24_mib_with_xz(app, tmp_path, level=9)
    assert done["status"] == "failed" and done["attempts"] == 1
    assert done["error"]["code"] == "memory_limit_exceeded"
    assert "128 MB" in done["error"]["message"]
