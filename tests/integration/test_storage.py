"""Storage backends against real servers: the API's signed local URLs, and an S3 endpoint
(moto's S3 server process, speaking the S3 HTTP API) driven through boto3."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from shared.storage import object_key
from shared.storage.local import LocalStorage


def payload(size: int = 3 * 1024 * 1024 + 17) -> bytes:
    return os.urandom(size)


@pytest.fixture()
def local_app(make_app, tmp_path):
    app = make_app(storage_backend="local", storage_local_root=str(tmp_path / "store"))
    return app, app.extensions["dockyard_storage"]


def test_local_round_trip_and_signed_download(local_app) -> None:
    app, storage = local_app
    data = payload()
    key = object_key(uuid.uuid4(), uuid.uuid4(), "result", "../../report final.csv")
    assert key.endswith("/result/report_final.csv")
    stored = storage.put(key, io.BytesIO(data), "text/csv")
    assert stored.size == len(data)
    assert b"".join(storage.open(key)) == data
    url = storage.download_url(key, "report.csv", 60)
    parts = urlsplit(url)
    response = app.test_client().get(f"{parts.path}?{parts.query}")
    assert response.status_code == 200
    assert response.data == data
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert "report.csv" in response.headers["Content-Disposition"]


def test_local_urls_refuse_tampering_and_expiry(local_app) -> None:
    app, storage = local_app
    client = app.test_client()
    key = object_key(uuid.uuid4(), uuid.uuid4(), "result", "secret.txt")
    storage.put(key, io.BytesIO(b"secret"), "text/plain")
    parts = urlsplit(storage.download_url(key, "secret.txt", 60))
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}

    def fetch(path: str, **changes: str):
        return client.get(f"{path}?{urlencode({**query, **changes})}")

    assert fetch(parts.path).status_code == 200
    other_key = parts.path.replace("secret.txt", "other.txt")
    for response in (
        fetch(parts.path, signature="0" * 64),
        fetch(parts.path, expires=str(int(query["expires"]) + 3600)),
        fetch(parts.path, filename="renamed.txt"),
        fetch(other_key),
    ):
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "invalid_download_url"
    expired = urlsplit(storage.download_url(key, "secret.txt", -5))
    response = client.get(f"{expired.path}?{expired.query}")
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "download_url_expired"


def test_local_keys_cannot_escape_the_root(tmp_path) -> None:
    from shared.storage import StorageError

    storage = LocalStorage(tmp_path / "store", b"k", "http://x/files")
    storage.ensure_ready()
    with pytest.raises(StorageError):
        storage.put("../outside.txt", io.BytesIO(b"x"), "text/plain")
    assert not (tmp_path / "outside.txt").exists()


@pytest.fixture()
def s3_storage(s3_server, monkeypatch):
    from shared.storage.s3 import S3Storage

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    storage = S3Storage(
        bucket=f"dockyard-{uuid.uuid4().hex[:8]}",
        endpoint_url=s3_server,
        region="us-east-1",
        create_bucket=True,
    )
    storage.ensure_ready()
    return storage


def test_s3_round_trip_presigned_download_and_prefix_delete(s3_storage) -> None:
    owner, job = uuid.uuid4(), uuid.uuid4()
    data = payload()
    input_key = object_key(owner, job, "input", "photo.png")
    result_key = object_key(owner, job, "result", "photo-thumb.png")
    assert s3_storage.put(input_key, io.BytesIO(data), "image/png").size == len(data)
    s3_storage.put(result_key, io.BytesIO(b"result"), "image/png")
    assert (
        hashlib.sha256(b"".join(s3_storage.open(input_key))).digest()
        == hashlib.sha256(data).digest()
    )
    url = s3_storage.download_url(input_key, "photo.png", 60)
    response = requests.get(url, timeout=10)
    assert response.status_code == 200 and response.content == data
    assert response.headers["Content-Disposition"] == 'attachment; filename="photo.png"'
    # (moto's server does not verify presigned signatures; AWS and MinIO do.)
    assert s3_storage.delete_prefix(f"users/{owner}/jobs/{job}/") == 2
    from shared.storage import StorageError

    with pytest.raises(StorageError):
        b"".join(s3_storage.open(input_key))


def test_s3_downloads_through_the_api_when_s3_is_not_reachable(make_app, settings) -> None:
    """S3_DOWNLOADS=api (the compose stack's default, S3 unpublished): the URL points at the
    API, which checks its signature and streams the object from the real S3 server; a
    tampered URL is refused and a deleted object is 404, like the local backend."""
    app = make_app(storage_backend="s3", s3_downloads="api", public_base_url="http://users.test")
    storage, client = app.extensions["dockyard_storage"], app.test_client()
    key = object_key(uuid.uuid4(), uuid.uuid4(), "result", "big.bin")
    data = payload()
    storage.put(key, io.BytesIO(data), "application/octet-stream")
    url = urlsplit(storage.download_url(key, "big.bin", 60))
    assert (url.scheme, url.netloc) == ("http", "users.test")
    assert url.path.startswith("/api/v1/files/")
    response = client.get(f"{url.path}?{url.query}")
    assert response.status_code == 200 and response.data == data
    assert response.headers["Content-Disposition"] == "attachment; filename=big.bin"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    tampered = client.get(f"{url.path}?{urlencode({**query, 'filename': 'other.bin'})}")
    assert tampered.get_json()["error"]["code"] == "invalid_download_url"
    storage.delete(key)
    missing = client.get(f"{url.path}?{url.query}")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
