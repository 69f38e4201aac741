"""File jobs end to end: the API, a real `celery worker` on the `files` queue, the Docker
engine running the processor image, and the S3 server holding inputs and results."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import time
import uuid
from collections import Counter

import boto3
import docker
import pytest
import requests
from docker.errors import NotFound
from PIL import Image
from sqlalchemy import select, update

from shared.db import session_scope
from shared.models import Job
from tests.helpers import User, wait_for
from tests.integration.workers import celery_worker
from workers.file_sweeps import delete_ended_inputs, expire_results
from workers.sandbox import LABEL_JOB


@pytest.fixture(scope="module")
def files_worker(tmp_path_factory):
    with celery_worker(tmp_path_factory.mktemp("files"), "files-fleet", "files", 4) as worker:
        yield worker


@pytest.fixture()
def user(app, files_worker) -> User:
    return User(app.test_client())


@pytest.fixture(scope="module")
def bucket(s3_server):
    s3 = boto3.resource("s3", endpoint_url=s3_server, region_name="us-east-1")
    return s3.Bucket(os.environ["S3_BUCKET"])


def keys_under(bucket, prefix: str) -> list[str]:
    return [item.key for item in bucket.objects.filter(Prefix=prefix)]


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def fetch_result(user: User, job_id: str) -> requests.Response:
    response = user.get(f"/api/v1/jobs/{job_id}/download")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["expires_in"] == 3600
    download = requests.get(body["url"], timeout=10)
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert body["filename"] in download.headers["Content-Disposition"]
    return download


TEXT = "the quick brown fox\njumps over the lazy dog\nthe end, the fox\n"
CSV_ROWS = [["name", "qty"], ["apple", "3"], ["pear", "5"], ["plum, red", "7"]]


def csv_bytes() -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(CSV_ROWS)
    return buffer.getvalue().encode()


def test_every_processor_does_its_work_in_a_container(user, bucket) -> None:
    blob = os.urandom(300_000)
    jobs = {
        "thumbnail": user.submit_file(
            "image.thumbnail", png(400, 200), {"width": 100, "height": 100}, filename="cat.png"
        ),
        "convert": user.submit_file(
            "image.convert", png(64, 48), {"format": "jpeg", "quality": 80}, filename="a.png"
        ),
        "csv": user.submit_file("csv.to_json", csv_bytes(), {}, filename="fruit.csv"),
        "stats": user.submit_file("text.stats", TEXT.encode(), filename="words.txt"),
        "gzip": user.submit_file(
            "archive.compress", blob, {"format": "gzip", "level": 6}, filename="blob.bin"
        ),
        "checksum": user.submit_file(
            "file.checksum", blob, {"algorithms": ["sha256", "md5"]}, filename="blob.bin"
        ),
    }
    done = {
        name: user.wait_status(job["id"], "succeeded", "failed", "dead", timeout=90)
        for name, job in jobs.items()
    }
    for name, job in done.items():
        assert job["status"] == "succeeded", (name, job["error"])

    thumb = Image.open(io.BytesIO(fetch_result(user, jobs["thumbnail"]["id"]).content))
    assert (thumb.width, thumb.height, thumb.format) == (100, 50, "PNG")
    assert done["thumbnail"]["output"]["filename"] == "cat-thumb.png"
    assert done["thumbnail"]["result"]["width"] == 100

    converted = fetch_result(user, jobs["convert"]["id"])
    assert Image.open(io.BytesIO(converted.content)).format == "JPEG"
    assert done["convert"]["output"]["content_type"] == "image/jpeg"

    records = json.loads(fetch_result(user, jobs["csv"]["id"]).content)
    assert records == [dict(zip(CSV_ROWS[0], row, strict=True)) for row in CSV_ROWS[1:]]

    stats = json.loads(fetch_result(user, jobs["stats"]["id"]).content)
    words = TEXT.replace(",", " ").split()
    assert stats["lines"] == 3 and stats["words"] == len(words)
    assert stats["characters"] == len(TEXT)
    assert {w["word"]: w["count"] for w in stats["top_words"]}["the"] == Counter(words)["the"] == 4

    assert gzip.decompress(fetch_result(user, jobs["gzip"]["id"]).content) == blob
    assert done["gzip"]["output"]["filename"] == "blob.bin.gz"

    sums = json.loads(fetch_result(user, jobs["checksum"]["id"]).content)
    assert sums == {
        "sha256": hashlib.sha256(blob).hexdigest(),
        "md5": hashlib.md5(blob).hexdigest(),
    }
    assert done["checksum"]["result"]["checksums"] == sums

    # Progress lines printed in the container became progress events; the output is the log.
    events = [e["type"] for e in user.events(jobs["checksum"]["id"])]
    assert "progress" in events
    logs = user.get(f"/api/v1/jobs/{jobs['checksum']['id']}/logs").get_json()["items"]
    assert logs[0]["source"] == "processor" and "DOCKYARD-PROGRESS" in logs[0]["content"]
    # Inputs are deleted when the job ends; results stay (under the job's own prefix).
    owner = user.profile["id"]
    for name, job in done.items():
        wait_for(lambda job=job: user.job(job["id"])["input"]["deleted"], message=name)
        prefix = f"users/{owner}/jobs/{job['id']}/"
        assert keys_under(bucket, prefix + "input/") == []
        assert len(keys_under(bucket, prefix + "result/")) == 1


def test_rejections_answer_4xx_and_store_nothing(user, make_app, bucket) -> None:
    owner = user.profile["id"]
    cases = [
        (
            user.upload("image.thumbnail", TEXT.encode(), {"width": 5, "height": 5}),
            415,
            "unsupported_media_type",
        ),
        # Judged from the bytes, not the name: a PNG name on text is still text.
        (
            user.upload("image.convert", b"plain words", {"format": "png"}, filename="x.png"),
            415,
            "unsupported_media_type",
        ),
        (user.upload("image.nope", png(4, 4), {}), 422, "unknown_processor"),
        (user.upload("debug.echo", b"x", {"message": "hi"}), 422, "unknown_processor"),
        (user.upload("image.thumbnail", png(4, 4), {"width": 0}), 422, "invalid_params"),
        (user.upload("file.checksum", b"abc", {"algorithms": ["crc0"]}), 422, "invalid_params"),
        (user.upload("file.checksum", b""), 422, "empty_file"),
    ]
    bad_json = user.post(
        "/api/v1/jobs/files",
        data={"processor": "file.checksum", "params": "{nope", "file": (io.BytesIO(b"a"), "a")},
        content_type="multipart/form-data",
    )
    cases.append((bad_json, 422, "invalid_params"))
    no_file = user.post(
        "/api/v1/jobs/files",
        data={"processor": "file.checksum"},
        content_type="multipart/form-data",
    )
    cases.append((no_file, 422, "missing_file"))
    for response, status, code in cases:
        body = response.get_json()
        assert response.status_code == status, body
        assert body["error"]["code"] == code
        assert body["error"]["request_id"]
    assert cases[0][0].get_json()["error"]["details"]["detected"] == "text/plain"

    small = User(make_app(max_content_length=64 * 1024).test_client())
    too_big = small.upload("file.checksum", os.urandom(200 * 1024))
    assert too_big.status_code == 413
    assert too_big.get_json()["error"]["code"] == "payload_too_large"

    assert user.get("/api/v1/jobs").get_json()["items"] == []
    assert keys_under(bucket, f"users/{owner}/") == []


def test_a_failed_job_insert_removes_the_upload(user, bucket, monkeypatch) -> None:
    from sqlalchemy.exc import OperationalError

    import shared.jobs.submission

    def broken_insert(*args, **kwargs):
        raise OperationalError("INSERT INTO jobs", {}, Exception("database went away"))

    monkeypatch.setattr(shared.jobs.submission, "insert_job", broken_insert)
    response = user.upload("file.checksum", b"precious bytes")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "service_unavailable"
    monkeypatch.undo()
    assert keys_under(bucket, f"users/{user.profile['id']}/") == []
    assert user.get("/api/v1/jobs").get_json()["items"] == []


def test_storage_down_at_upload_answers_503_without_a_job(user, make_app) -> None:
    down = User(
        make_app(s3_endpoint_url="http://127.0.0.1:9", s3_create_bucket=False).test_client()
    )
    response = down.upload("file.checksum", b"bytes")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "storage_unavailable"
    assert down.get("/api/v1/jobs").get_json()["items"] == []


def test_processor_rejecting_the_input_fails_at_once_with_its_log(user) -> None:
    broken_png = b"\x89PNG\r\n\x1a\n" + os.urandom(200)  # PNG by its magic, garbage after
    job = user.submit_file("image.thumbnail", broken_png, {"width": 10, "height": 10})
    done = user.wait_status(job["id"], "failed", "succeeded", "dead", timeout=60)
    assert done["status"] == "failed" and done["attempts"] == 1
    assert done["error"]["code"] == "input_rejected"
    logs = user.get(f"/api/v1/jobs/{job['id']}/logs").get_json()["items"]
    assert "rejected" in logs[0]["content"]
    download = user.get(f"/api/v1/jobs/{job['id']}/download")
    assert download.status_code == 409
    assert download.get_json()["error"]["code"] == "result_not_ready"


def test_cancel_kills_the_running_container_within_two_seconds(user, bucket) -> None:
    engine = docker.from_env()
    # xz on incompressible data: many seconds of work (level 6: within the memory limit).
    job = user.submit_file(
        "archive.compress", os.urandom(24 * 1024 * 1024), {"format": "xz", "level": 6}
    )
    containers = wait_for(
        lambda: engine.containers.list(filters={"label": f"{LABEL_JOB}={job['id']}"}),
        timeout=60,
        message="the processor container to run",
    )
    running = user.wait_status(job["id"], "running")
    assert user.get(f"/api/v1/jobs/{job['id']}/download").status_code == 409
    assert running["links"]["download"].endswith("/download")
    cancelled_at = time.monotonic()
    assert user.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 202

    def killed() -> bool:
        try:
            return engine.containers.get(containers[0].id).status != "running"
        except NotFound:
            return True

    def gone() -> bool:
        try:
            engine.containers.get(containers[0].id)
        except NotFound:
            return True
        return False

    wait_for(killed, timeout=5, interval=0.02, message="the container to be killed")
    assert time.monotonic() - cancelled_at < 2.0
    wait_for(gone, timeout=15, message="the killed container to be removed")
    done = user.wait_status(job["id"], "cancelled")
    assert done["result"] is None and done["output"] is None
    wait_for(lambda: user.job(job["id"])["input"]["deleted"], message="the input's removal")
    assert keys_under(bucket, f"users/{user.profile['id']}/jobs/{job['id']}/") == []


def test_download_rules_isolation_and_admin(user, app) -> None:
    job = user.submit_file("file.checksum", b"some bytes", {"algorithms": ["sha1"]})
    user.wait_status(job["id"], "succeeded", timeout=60)
    path = f"/api/v1/jobs/{job['id']}"

    redirected = user.get(f"{path}/download?redirect=true")
    assert redirected.status_code == 302
    assert requests.get(redirected.headers["Location"], timeout=10).json() == {
        "sha1": hashlib.sha1(b"some bytes").hexdigest()
    }
    capped = user.get(f"{path}/download?expires_in=999999999").get_json()
    assert capped["expires_in"] == 24 * 3600
    short = user.get(f"{path}/download?expires_in=60").get_json()
    assert short["expires_in"] == 60
    assert short["url"] != capped["url"]  # generated per request

    stranger = User(app.test_client())
    for suffix in ("", "/download", "/logs", "/events"):
        response = stranger.get(path + suffix)
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"
    admin = User(app.test_client(), role="admin")
    assert admin.get(f"{path}/download").status_code == 200
    assert admin.get(f"{path}/logs").get_json()["items"]


def test_results_expire_after_retention_and_inputs_of_ended_jobs_go(user, settings, bucket) -> None:
    job = user.submit_file("text.stats", TEXT.encode())
    user.wait_status(job["id"], "succeeded", timeout=60)
    # The worker deletes the input just after the job succeeds (holding the row meanwhile).
    wait_for(lambda: user.job(job["id"])["input"]["deleted"], message="the worker's delete")
    prefix = f"users/{user.profile['id']}/jobs/{job['id']}/"
    assert keys_under(bucket, prefix + "result/")
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == uuid.UUID(job["id"]))
            .values(result_expires_at=Job.created_at)
        )
    assert expire_results(settings) >= 1
    assert keys_under(bucket, prefix) == []
    response = user.get(f"/api/v1/jobs/{job['id']}/download")
    assert response.status_code == 410
    assert response.get_json()["error"]["code"] == "result_expired"
    assert user.job(job["id"])["output"]["deleted"] is True

    # An input left behind (the worker could not delete it) is removed by the sweep.
    other = user.submit_file("file.checksum", b"left behind")
    user.wait_status(other["id"], "succeeded", timeout=60)
    # The worker deletes the input just after the job succeeds; let it finish first, or it
    # could delete the object put back below and then mark the input deleted after us.
    wait_for(lambda: user.job(other["id"])["input"]["deleted"], message="the worker's delete")
    with session_scope() as session:
        row = session.scalar(select(Job).where(Job.id == uuid.UUID(other["id"])))
        bucket.put_object(Key=row.input_file["key"], Body=b"left behind")
        row.input_deleted_at = None
    assert delete_ended_inputs(settings) >= 1
    assert keys_under(bucket, f"users/{user.profile['id']}/jobs/{other['id']}/input/") == []


def test_same_idempotency_key_returns_the_original_file_job(user) -> None:
    headers = {"Idempotency-Key": f"upload-{uuid.uuid4()}"}
    first = user.upload("file.checksum", b"once", headers=headers)
    again = user.upload("file.checksum", b"once", headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.get_json()["id"] == again.get_json()["id"]


def test_the_catalogue_lists_file_processors_with_limits(user) -> None:
    items = {p["name"]: p for p in user.get("/api/v1/processors").get_json()["items"]}
    for name in (
        "image.thumbnail",
        "image.convert",
        "csv.to_json",
        "text.stats",
        "archive.compress",
        "file.checksum",
    ):
        entry = items[name]
        assert entry["kind"] == "file" and entry["input"] == "file" and entry["queue"] == "files"
        assert entry["limits"]["timeout_seconds"] > 0 and entry["image"]
    assert "image/png" in items["image.thumbnail"]["accepts"]
    assert set(items["image.thumbnail"]["params"]["required"]) == {"width", "height"}
