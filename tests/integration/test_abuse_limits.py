"""Abuse limits against the real app, Redis and PostgreSQL: password hashing per address and
per process, JSON body size (Content-Length and chunked), uploads refused before they are
read, open streams per user (closed, disconnected and crashed-process slots), retry quotas.

Each limit is hit for real; each 429 carries Retry-After; each `0` turns its limit off.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import func, select

from api import quotas, sse
from shared.db import session_scope
from shared.models import Job
from tests.helpers import PASSWORD, User, api_error, free_port, register, wait_for
from tests.integration.test_streams import serving

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def assert_429(response, code: str, max_retry_after: int = 61) -> dict:  # noqa: ANN001
    assert response.status_code == 429, response.data if hasattr(response, "data") else ""
    body = api_error(response)
    assert body["code"] == code, body
    assert 1 <= int(response.headers["Retry-After"]) <= max_retry_after
    assert body["details"]["retry_after"] == int(response.headers["Retry-After"])
    return body


def fresh_minute() -> None:
    """Fixed one-minute windows: start a counting test early in a minute, so the window
    cannot turn over (and reset the count) in the middle of it."""
    wait_for(lambda: time.time() % 60 < 45, timeout=20, message="the start of a minute")


# --- Password hashing: per client address ------------------------------------------------


def _login(client, email: str, address: str, password: str = "wrong-password"):  # noqa: ANN001, S107
    return client.post(
        "/api/v1/auth/login",
        json={"email": email, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


@pytest.mark.parametrize("limit", [4, 0])
def test_hashing_is_rate_limited_per_client_address(make_app, limit: int) -> None:
    """Past AUTH_RATE_PER_MINUTE, logins and registrations from one address answer 429
    without hashing (a refused registration creates no account); other addresses are not
    affected. 0 turns the limit off. The count is in Redis: a second app (another API
    process) sees the first one's count."""
    fresh_minute()
    first = make_app(auth_rate_per_minute=limit, login_max_failures=0).test_client()
    second = make_app(auth_rate_per_minute=limit, login_max_failures=0).test_client()
    address, other = f"10.9.{limit}.{uuid.uuid4().int % 250}", "10.8.0.1"
    email = f"rate-{uuid.uuid4().hex[:8]}@example.com"
    created = first.post(
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD},
        environ_base={"REMOTE_ADDR": address},
    )
    assert created.status_code == 201
    for client in (first, second, first):  # 4 hashes in all, spread over two "processes"
        assert _login(client, email, address).status_code == 401
    late = f"late-{uuid.uuid4().hex[:8]}@example.com"
    refused_register = second.post(
        "/api/v1/auth/register",
        json={"email": late, "password": PASSWORD},
        environ_base={"REMOTE_ADDR": address},
    )
    refused_login = _login(first, email, address, PASSWORD)
    if limit == 0:
        assert refused_register.status_code == 201
        assert refused_login.status_code == 200
        return
    body = assert_429(refused_register, "too_many_requests")
    assert body["details"]["reason"] == "address_rate" and body["details"]["limit"] == limit
    assert_429(refused_login, "too_many_requests")
    # The refused registration hashed nothing and stored nothing.
    assert _login(first, late, other, PASSWORD).status_code == 401
    # Another address is not limited by this one's count.
    assert _login(second, email, other, PASSWORD).status_code == 200


@pytest.fixture()
def held_hash_slot() -> Iterator[None]:
    """Fill the process's only hashing slot (AUTH_HASH_CONCURRENCY=1) as a running hash
    would: the semaphore the API uses, acquired here."""
    slots = quotas.hash_slots(1)
    assert slots.acquire(timeout=10)
    try:
        yield
    finally:
        slots.release()


def test_a_full_hashing_cap_answers_429_at_once(make_app, held_hash_slot) -> None:
    client = make_app(auth_hash_concurrency=1).test_client()
    email = f"cap-{uuid.uuid4().hex[:8]}@example.com"
    started = time.monotonic()
    refused = client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert time.monotonic() - started < 1.0  # it did not wait for the slot
    body = assert_429(refused, "too_many_requests", max_retry_after=1)
    assert body["details"] == {"reason": "hash_concurrency", "limit": 1, "retry_after": 1}
    login = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert_429(login, "too_many_requests", max_retry_after=1)
    # 0 = off: the same request with no cap goes through while the slot is held.
    assert register(make_app(auth_hash_concurrency=0).test_client(), email)["email"] == email


@pytest.mark.parametrize("cap", [1, 0])
def test_concurrent_logins_past_the_cap_are_refused(make_app, cap: int) -> None:
    """Eight logins at once over a real threaded HTTP server: with a cap of one, those that
    find the slot taken answer 429 while one hashes; with 0 (off) every one is answered."""
    app = make_app(auth_hash_concurrency=cap)
    user = register(app.test_client())
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def attempt(base: str) -> None:
        barrier.wait()
        response = requests.post(
            base + "/api/v1/auth/login",
            json={"email": user["email"], "password": PASSWORD},
            timeout=30,
        )
        statuses.append(response.status_code)

    with serving(app) as base:
        threads = [threading.Thread(target=attempt, args=(base,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert 200 in statuses
    if cap:
        assert 429 in statuses and set(statuses) == {200, 429}, statuses
    else:
        assert statuses == [200] * 8


# --- JSON bodies -----------------------------------------------------------------------------


def _raw_request(base: str, head: str, body: bytes = b"", timeout: float = 10) -> tuple[int, str]:
    """Send a request's head (and the start of its body) on a socket, and read the answer
    without sending the rest: a server that waited for the whole body would time out."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode() + body)
        received = b""
        while b"\r\n\r\n" not in received or not _complete(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    status_line, _, rest = received.decode(errors="replace").partition("\r\n")
    return int(status_line.split()[1]), rest


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def test_json_bodies_over_the_limit_are_refused_with_413(make_app) -> None:
    app = make_app(max_json_bytes=2048)
    client = app.test_client()
    big = {"email": "a@example.com", "password": "x" * 3000}
    response = client.post("/api/v1/auth/register", json=big)
    assert response.status_code == 413
    body = api_error(response)
    assert body["code"] == "payload_too_large" and body["details"]["limit"] == 2048
    user = User(client)
    job = user.post(
        "/api/v1/jobs", json={"processor": "debug.echo", "params": {"message": "m" * 4000}}
    )
    api_error(job, 413, "payload_too_large")
    # Under the limit, the same endpoints work.
    assert user.submit("debug.echo", {"message": "m" * 1000}, expect=202)

    with serving(app) as base:
        # Content-Length alone decides: 10 MB announced, none of it sent, 413 at once.
        status, rest = _raw_request(
            base,
            "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 10000000\r\n\r\n",
        )
        assert status == 413 and '"payload_too_large"' in rest

        # Chunked, no length: cut off once it passes the limit.
        def chunks() -> Iterator[bytes]:
            yield b'{"email": "a@example.com", "password": "'
            for _ in range(6):
                yield b"y" * 500
            yield b'"}'

        chunked = requests.post(
            base + "/api/v1/auth/login",
            data=chunks(),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
        api_error(chunked, 413, "payload_too_large")

        def small() -> Iterator[bytes]:
            yield b'{"email": "nobody@example.com", '
            yield b'"password": "not-the-password"}'

        fine = requests.post(
            base + "/api/v1/auth/login",
            data=small(),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert fine.status_code == 401  # read and judged: under the limit


def test_uploads_keep_max_content_length_not_the_json_limit(make_app, s3_server) -> None:
    user = User(make_app(max_json_bytes=2048).test_client())
    response = user.upload("file.checksum", b"z" * 20_000, {"algorithms": ["sha256"]})
    assert response.status_code == 202, response.get_json()


# --- Uploads refused before they are read -------------------------------------------------


def _upload_head(user: User, size: int) -> tuple[str, bytes]:
    boundary = "dockyardboundary"
    preamble = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="processor"\r\n\r\n'
        f"file.checksum\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    head = (
        "POST /api/v1/jobs/files HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {user.tokens['access_token']}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {size}\r\n\r\n"
    )
    return head, preamble


def _jobs_of(user: User) -> int:
    with session_scope() as session:
        return session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.owner_id == uuid.UUID(user.profile["id"]))
        )


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"quota_active_jobs": 1}, "too_many_active_jobs"),
        ({"quota_submits_per_minute": 1}, "rate_limited"),
    ],
)
def test_an_upload_the_quotas_refuse_is_answered_before_its_body_is_read(
    make_app, s3_server, changes: dict, code: str
) -> None:
    """A 50 MB upload announced, only its first bytes sent: the quota's 429 arrives while
    the client still holds the rest (a server that read the body first would time out)."""
    fresh_minute()
    app = make_app(**changes)
    user = User(app.test_client())
    # One job that stays active: queued on the files fleet, which no worker here consumes.
    held = user.submit("debug.sleep", {"seconds": 1, "fleet": "files"})
    head, preamble = _upload_head(user, 50 * 1024 * 1024)
    with serving(app) as base:
        status, rest = _raw_request(base, head, preamble)
    assert status == 429 and f'"{code}"' in rest
    if code == "rate_limited":
        assert "Retry-After:" in rest
    assert _jobs_of(user) == 1  # nothing stored, no job
    assert user.post(f"/api/v1/jobs/{held['id']}/cancel").status_code == 200


def test_an_upload_within_the_quotas_is_read_and_accepted(make_app, s3_server) -> None:
    user = User(make_app(quota_active_jobs=1, quota_submits_per_minute=5).test_client())
    response = user.upload("file.checksum", b"hello", {"algorithms": ["md5"]})
    assert response.status_code == 202, response.get_json()


# --- Open streams per user ---------------------------------------------------------------


@pytest.fixture()
def quick_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams that write (keep-alives) often, so a client that left is noticed quickly."""
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.2)
    monkeypatch.setattr(sse, "AUTH_RECHECK_SECONDS", 0.2)


def _stream(base: str, user: User, path: str = "/api/v1/jobs/stream") -> requests.Response:
    return requests.get(base + path, headers=user.headers, stream=True, timeout=30)


def test_open_streams_are_capped_per_user_and_freed_when_closed(make_app, quick_streams) -> None:
    app = make_app(max_streams_per_user=2)
    alice, bob = User(app.test_client()), User(app.test_client())
    job = alice.submit("debug.sleep", {"seconds": 1, "fleet": "files"})
    with serving(app) as base:
        first = _stream(base, alice)
        second = _stream(base, alice, f"/api/v1/jobs/{job['id']}/stream")  # counts too
        assert first.status_code == second.status_code == 200
        third = _stream(base, alice)
        body = assert_429(third, "too_many_streams", max_retry_after=int(quotas.STREAM_SLOT_TTL))
        assert body["details"]["limit"] == 2
        also = _stream(base, alice, f"/api/v1/jobs/{job['id']}/stream")
        assert also.status_code == 429
        other = _stream(base, bob)  # another user's own slots
        assert other.status_code == 200
        # The client goes away: the server notices at its next write and frees the slot.
        first.close()
        reopened = wait_for(
            lambda: (r := _stream(base, alice)).status_code == 200 and r,
            timeout=10,
            message="the closed stream's slot to free",
        )
        for response in (second, reopened, other):
            response.close()
    assert alice.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200


def test_no_stream_cap_when_zero(make_app) -> None:
    app = make_app(max_streams_per_user=0)
    user = User(app.test_client())
    with serving(app) as base:
        opened = [_stream(base, user) for _ in range(7)]
        assert [r.status_code for r in opened] == [200] * 7
        for response in opened:
            response.close()


_CRASHING_SERVER = """
import os, sys
from dataclasses import replace
from werkzeug.serving import make_server
from api import create_app, quotas, sse
from shared.config import load_settings
quotas.STREAM_SLOT_TTL = 2.0
quotas.STREAM_SLOT_REFRESH = 0.2
sse.AUTH_RECHECK_SECONDS = 0.2
app = create_app(replace(load_settings(), max_streams_per_user=2))
make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True).serve_forever()
"""


@contextmanager
def api_process(port: int) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_SERVER, str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_a_crashed_api_process_does_not_hold_stream_slots_forever(make_app) -> None:
    """Streams of an API process killed with SIGKILL never release their slots; the slots
    expire once that process stops refreshing them, and the user can open streams again."""
    app = make_app(max_streams_per_user=2)
    user = User(app.test_client())
    port = free_port()
    with api_process(port) as process:
        crashing = f"http://127.0.0.1:{port}"
        wait_for(lambda: _up(crashing), timeout=30, message="the API process")
        held = [_stream(crashing, user) for _ in range(2)]
        assert [r.status_code for r in held] == [200, 200]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    with serving(app) as base:
        refused = _stream(base, user)
        assert refused.status_code == 429  # the dead process's slots still count...
        reopened = wait_for(
            lambda: (r := _stream(base, user)).status_code == 200 and r,
            timeout=15,
            message="the dead process's slots to expire",
        )  # ...until they expire
        reopened.close()
    for response in held:
        response.close()


def _up(base: str) -> bool:
    try:
        return requests.get(base + "/healthz", timeout=1).status_code == 200
    except (requests.ConnectionError, requests.Timeout):  # a slow first answer: not up yet
        return False


# --- Retry obeys the submit quotas -------------------------------------------------------


def _failed_job(user: User) -> dict:
    job = user.submit("debug.fail", {"permanent": True})
    return user.wait_status(job["id"], "failed")


def test_retry_obeys_the_active_jobs_quota(make_app, job_worker) -> None:
    user = User(make_app(quota_active_jobs=1).test_client())
    failed = _failed_job(user)
    held = user.submit("debug.sleep", {"seconds": 1, "fleet": "files"})  # stays queued
    refused = user.post(f"/api/v1/jobs/{failed['id']}/retry")
    api_error(refused, 429, "too_many_active_jobs")
    assert user.job(failed["id"])["status"] == "failed"  # nothing changed
    assert user.post(f"/api/v1/jobs/{held['id']}/cancel").status_code == 200
    assert user.post(f"/api/v1/jobs/{failed['id']}/retry").status_code == 202
    user.wait_status(failed["id"], "failed")


def test_retry_counts_in_the_submission_rate(make_app, job_worker) -> None:
    fresh_minute()
    user = User(make_app(quota_submits_per_minute=2).test_client())
    failed = _failed_job(user)  # submission 1
    assert user.post(f"/api/v1/jobs/{failed['id']}/retry").status_code == 202  # 2
    user.wait_status(failed["id"], "failed")
    refused = user.post(f"/api/v1/jobs/{failed['id']}/retry")  # 3: over
    assert_429(refused, "rate_limited")
    assert user.job(failed["id"])["status"] == "failed"
    # A retry refused for its state (409) does not spend the quota.
    other = User(make_app(quota_submits_per_minute=2).test_client())
    queued = other.submit("debug.sleep", {"seconds": 1, "fleet": "files"})  # 1
    assert other.post(f"/api/v1/jobs/{queued['id']}/retry").status_code == 409
    second = other.submit("debug.sleep", {"seconds": 1, "fleet": "files"})  # 2: still allowed
    for job in (queued, second):
        assert other.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200


def test_retry_without_quotas(make_app, job_worker) -> None:
    user = User(make_app(quota_active_jobs=0, quota_submits_per_minute=0).test_client())
    failed = _failed_job(user)
    for _ in range(3):
        assert user.post(f"/api/v1/jobs/{failed['id']}/retry").status_code == 202
        user.wait_status(failed["id"], "failed")


@pytest.mark.parametrize("proxies", [0, 1])
def test_behind_trusted_proxies_the_address_limit_holds_per_client(make_app, proxies: int) -> None:
    """Every request arrives from the proxy's address. With TRUSTED_PROXIES=1 the client's
    address is the last X-Forwarded-For entry, so two clients keep budgets of their own (and
    an entry a client forged in front of it changes nothing); with 0 they share the proxy's."""
    fresh_minute()
    client = make_app(
        auth_rate_per_minute=2, login_max_failures=0, trusted_proxies=proxies
    ).test_client()
    proxy = f"10.7.{proxies}.{uuid.uuid4().int % 250}"
    email = f"proxy-{uuid.uuid4().hex[:8]}@example.com"

    def login(forwarded: str):  # noqa: ANN202
        return client.post(
            "/api/v1/auth/login",
            json={"email": email, "password": "wrong-password"},
            headers={"X-Forwarded-For": forwarded},
            environ_base={"REMOTE_ADDR": proxy},
        )

    spoofed = f"198.51.100.{uuid.uuid4().int % 250}"
    assert login("203.0.113.1").status_code == 401
    assert login(f"{spoofed}, 203.0.113.1").status_code == 401  # same client, forged prefix
    other = login("203.0.113.2")
    if proxies:
        assert other.status_code == 401  # a budget of its own
        assert_429(login("203.0.113.1"), "too_many_requests")
    else:
        assert_429(other, "too_many_requests")  # all share the proxy's address
