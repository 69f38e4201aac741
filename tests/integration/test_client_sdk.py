"""The SDK (client/dockyard_client) against live APIs over real HTTP: gunicorn on the tests'
database and broker, the session's diagnostics worker, and a files worker of this module.

The module's stack keeps files in local storage with a large MAX_CONTENT_LENGTH (the big
upload and download run through it); two more servers have a 2 s access token and a
3-a-minute submit quota. Nothing sleeps blindly: waits are on conditions (a token's own
expiry, a job's status), and the 429 waits are recorded instead of slept.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from sqlalchemy import select

import dockyard_client
from dockyard_client import (
    AuthenticationError,
    Client,
    Conflict,
    NotFound,
    PermissionDenied,
    RateLimited,
    ValidationError,
    verify_webhook_signature,
)
from dockyard_client import client as client_module
from shared.db import session_scope
from shared.models import Job
from tests.helpers import free_port, wait_for
from tests.integration.git_repos import FakeGitHub
from tests.integration.live_server import new_account, serve
from tests.integration.workers import celery_worker, deploy_fleet

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "client" / "README.md"
BIG = 256 * 1024 * 1024  # the big file: 256 MiB ...
MEMORY_CAP = 128 * 1024 * 1024  # ... through a process allowed 128 MiB of address space
WEBHOOK_ENV = {
    "WEBHOOK_ALLOW_HTTP": "true",
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "WEBHOOK_TIMEOUT": "2",
}


@pytest.fixture(scope="module")
def stack(settings, job_worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The module's live API with local storage and a worker for file jobs and webhooks."""
    workdir = tmp_path_factory.mktemp("sdk-stack")
    storage = workdir / "storage"
    env = {
        "STORAGE_BACKEND": "local",
        "STORAGE_LOCAL_ROOT": str(storage),
        "MAX_CONTENT_LENGTH": str(BIG + 16 * 1024 * 1024),
        **WEBHOOK_ENV,
    }
    with serve(workdir, env) as base:
        worker_env = {**env, "PUBLIC_BASE_URL": base}
        with celery_worker(workdir, "sdk-files", "files,webhooks", 2, worker_env):
            yield {"base": base, "storage": storage}


@pytest.fixture()
def base(stack: dict) -> str:
    return str(stack["base"])


@pytest.fixture()
def sdk(base: str) -> Iterator[Client]:
    """A logged-in client of a fresh user."""
    email, password = new_account(base)
    with Client(base) as client:
        client.login(email, password)
        yield client


def _expiry(token: str) -> float:
    payload = token.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


# --- the README's example ------------------------------------------------------------------


def test_readme_example_runs_as_printed(base: str, tmp_path: Path, monkeypatch) -> None:
    text = README.read_text()
    block = re.search(
        r"<!-- sdk-example:start -->\n```python\n(.*?)```\n<!-- sdk-example:end -->", text, re.S
    )
    assert block, "client/README.md's example (between its markers) is missing"
    email, password = new_account(base)
    monkeypatch.setenv("DOCKYARD_API_URL", base)
    monkeypatch.setenv("DOCKYARD_EMAIL", email)
    monkeypatch.setenv("DOCKYARD_PASSWORD", password)
    monkeypatch.chdir(tmp_path)
    out = StringIO()
    with redirect_stdout(out):
        exec(compile(block.group(1), str(README), "exec"), {"__name__": "example"})  # noqa: S102
    printed = out.getvalue()
    assert re.search(r"^\d+ submitted ", printed, re.M), printed
    assert len(re.findall(r"^\d+ progress ", printed, re.M)) == 4, printed
    assert "outcome: succeeded" in printed
    result = re.search(r"^result: (\S+) ", printed, re.M)
    assert result, printed
    assert json.loads((tmp_path / result.group(1)).read_text())["words"] == 11
    assert re.search(r"^ValidationError 422 invalid_params \{'fields'", printed, re.M), printed


# --- tokens --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_tokens(settings, job_worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A live API whose access tokens last 2 seconds."""
    with serve(tmp_path_factory.mktemp("sdk-short"), {"JWT_ACCESS_TOKEN_EXPIRES": "2"}) as url:
        yield url


def test_refreshes_an_expired_access_token_by_itself(short_tokens: str) -> None:
    email, password = new_account(short_tokens)
    saved: list[tuple[str, str | None]] = []
    with Client(short_tokens, on_tokens=lambda a, r: saved.append((a, r))) as client:
        client.login(email, password)
        first = client.token
        assert first and saved == [(first, client.refresh_token)]
        wait_for(lambda: time.time() > _expiry(first) + 0.5, timeout=5, message="token expiry")
        with pytest.raises(AuthenticationError) as expired:
            Client(short_tokens, first).whoami()
        assert expired.value.code == "token_expired"
        assert client.whoami()["email"] == email  # refreshed, then repeated
        assert client.token != first and len(saved) == 2
        assert saved[-1] == (client.token, client.refresh_token)

        # A stream outliving its token ends with `token_expired`: watch reconnects with a
        # refreshed token and Last-Event-ID, and misses nothing.
        job = client.submit("debug.sleep", {"seconds": 5, "steps": 5})
        seen = [event["id"] for event in client.watch(job["id"])]
        assert len(saved) >= 4  # the 5 s job outlived at least two 2 s tokens
        assert seen == [event["id"] for event in client.events(job["id"])]
        assert client.job(job["id"])["status"] == "succeeded"


# --- jobs ----------------------------------------------------------------------------------


def test_processors_submit_watch_wait(sdk: Client) -> None:
    names = {p["name"] for p in sdk.processors()}
    assert {"debug.sleep", "debug.echo", "text.stats", "file.checksum"} <= names
    job = sdk.submit("debug.sleep", {"seconds": 0.3, "steps": 3}, labels={"t": "watch"})
    assert job["status"] in ("queued", "running")
    watched = list(sdk.watch(job["id"]))
    assert [e["type"] for e in watched] == ["submitted", "started"] + ["progress"] * 3 + [
        "succeeded"
    ]
    finished = sdk.wait(job["id"], timeout=30)
    assert finished["status"] == "succeeded" and finished["labels"] == {"t": "watch"}
    assert [e["id"] for e in sdk.events(job["id"])] == [e["id"] for e in watched]
    # A finished job's watch replays its history and ends.
    assert [e["id"] for e in sdk.watch(job["id"])] == [e["id"] for e in watched]


def test_wait_times_out(sdk: Client) -> None:
    job = sdk.submit("debug.sleep", {"seconds": 1}, delay_seconds=300)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        sdk.wait(job["id"], timeout=1)
    assert time.monotonic() - started < 5
    sdk.cancel(job["id"])


def test_jobs_iterates_every_cursor_page(sdk: Client) -> None:
    run = uuid.uuid4().hex[:8]
    batch = sdk.submit_batch(
        [
            {"processor": "debug.echo", "params": {"message": str(i)}, "labels": {"run": run}}
            for i in range(5)
        ]
    )
    assert len(batch) == 5
    pages: list[httpx.Request] = []
    sdk._http.event_hooks["request"].append(
        lambda request: pages.append(request) if request.url.path.endswith("/jobs") else None
    )
    listed = list(sdk.jobs(label=f"run:{run}", limit=2))
    ids = [job["id"] for job in listed]
    assert len(ids) == 5 and set(ids) == {job["id"] for job in batch}  # each once
    assert len(pages) == 3  # 2 + 2 + 1
    assert "cursor" not in pages[0].url.params and "cursor" in pages[2].url.params


def test_cancel_and_retry(sdk: Client) -> None:
    job = sdk.submit("debug.sleep", {"seconds": 0.1}, delay_seconds=300)
    assert sdk.cancel(job["id"])["status"] == "cancelled"
    with pytest.raises(Conflict) as conflict:
        sdk.cancel(job["id"])
    assert conflict.value.status == 409 and conflict.value.request_id
    retried = sdk.retry(job["id"])
    assert retried["status"] in ("queued", "running", "succeeded")
    assert sdk.wait(job["id"], timeout=30)["status"] == "succeeded"


# --- errors --------------------------------------------------------------------------------


def test_error_classes_carry_the_api_error(base: str, sdk: Client) -> None:
    with Client(base, "not-a-token") as anonymous, pytest.raises(AuthenticationError) as bad:
        next(anonymous.jobs())
    assert (bad.value.status, bad.value.code) == (401, "invalid_token")
    assert bad.value.message and bad.value.request_id
    assert str(bad.value) == f"invalid_token: {bad.value.message}"

    with pytest.raises(NotFound) as missing:
        sdk.job(str(uuid.uuid4()))
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert missing.value.request_id

    with pytest.raises(ValidationError) as invalid:
        sdk.submit("debug.sleep", {"seconds": "soon"})
    assert invalid.value.status == 422 and invalid.value.code == "invalid_params"
    assert "seconds" in invalid.value.details["fields"]["params"]

    job = sdk.submit("debug.echo", {"message": "done"})
    sdk.wait(job["id"], timeout=30)
    with pytest.raises(Conflict) as finished:
        sdk.cancel(job["id"])
    assert finished.value.code == "job_not_cancellable" and "succeeded" in finished.value.message
    with pytest.raises(Conflict) as not_ready:
        sdk.download(job["id"], Path("/nonexistent"))
    assert not_ready.value.code == "result_not_ready"


def test_connection_errors(tmp_path: Path) -> None:
    port = free_port()
    with (
        Client(f"http://127.0.0.1:{port}") as client,
        pytest.raises(dockyard_client.APIConnectionError) as down,
    ):
        client.processors()
    assert down.value.status is None and down.value.code == "connection_error"


@pytest.fixture(scope="module")
def small_quota(settings, job_worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A live API allowing 3 submissions a minute per user."""
    with serve(tmp_path_factory.mktemp("sdk-quota"), {"QUOTA_SUBMITS_PER_MINUTE": "3"}) as url:
        yield url


def _mid_minute() -> None:
    """The quota counts per calendar minute: start where the next few requests share one."""
    wait_for(lambda: time.time() % 60 < 55, timeout=6, message="a fresh part of the minute")


def _record_pauses(monkeypatch, then=None) -> list[float]:
    """The SDK's retry waits, recorded instead of slept (`then` runs at each)."""
    waits: list[float] = []

    def pause(seconds: float) -> None:
        waits.append(seconds)
        if then is not None:
            then()

    monkeypatch.setattr(client_module, "_pause", pause)
    return waits


def test_429_is_retried_after_retry_after_then_succeeds(small_quota: str, monkeypatch) -> None:
    email, password = new_account(small_quota)
    with Client(small_quota) as client:
        client.login(email, password)
        user_id = client.whoami()["id"]
        _mid_minute()
        for i in range(3):
            client.submit("debug.echo", {"message": str(i)})
        redis = Redis.from_url(os.environ["REDIS_URL"])

        def minute_passes() -> None:  # what the real wait would have brought
            for key in redis.scan_iter(f"dockyard:quota:submits:{user_id}:*"):
                redis.delete(key)

        waits = _record_pauses(monkeypatch, minute_passes)
        keys: list[str] = []
        client._http.event_hooks["request"].append(
            lambda request: keys.append(request.headers.get("Idempotency-Key", ""))
        )
        job = client.submit("debug.echo", {"message": "after the wait"})
    assert job["status"] in ("queued", "running", "succeeded")
    assert len(waits) == 1 and 1 <= waits[0] <= 30  # the server's Retry-After (<= 61 s, capped)
    assert len(keys) == 2 and keys[0] == keys[1]  # the same submission, sent again


def test_429_raises_rate_limited_after_max_retries(small_quota: str, monkeypatch) -> None:
    email, password = new_account(small_quota)
    waits = _record_pauses(monkeypatch)
    with Client(small_quota, max_retries=2) as client:
        client.login(email, password)
        _mid_minute()
        for i in range(3):
            client.submit("debug.echo", {"message": str(i)})
        with pytest.raises(RateLimited) as limited:
            client.submit("debug.echo", {"message": "one too many"})
    assert len(waits) == 2
    error = limited.value
    assert (error.status, error.code) == (429, "rate_limited") and error.request_id
    assert error.retry_after is not None and error.retry_after >= 1
    assert error.details["limit"] == 3


# --- live events through a connection the server side drops ------------------------------


class CuttingProxy:
    """A TCP proxy to the API that cuts its first `cuts` event streams mid-frame: it
    forwards `after` whole events, then part of the next one, then closes both sides."""

    def __init__(self, upstream: str, cuts: int = 2, after: int = 2) -> None:
        self.upstream = httpx.URL(upstream)
        self.remaining = cuts
        self.after = after
        self.cut = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(downstream,), daemon=True).start()

    def _serve(self, downstream: socket.socket) -> None:
        upstream = socket.create_connection((self.upstream.host, self.upstream.port))
        streaming = threading.Event()

        def requests() -> None:
            try:
                while data := downstream.recv(65536):
                    if re.search(rb"GET /api/v1/jobs/[0-9a-f-]+/stream", data):
                        streaming.set()
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=requests, daemon=True).start()
        seen = b""
        try:
            while data := upstream.recv(65536):
                if streaming.is_set() and self._take_cut():
                    seen += data
                    starts = [m.start() for m in re.finditer(rb"\nid: ", seen)]
                    if len(starts) > self.after:
                        downstream.sendall(seen[: starts[self.after] + 6])  # half a frame
                        with self.lock:
                            self.cut += 1
                        return
                    self._give_back_cut()
                downstream.sendall(data)
        except OSError:
            pass
        finally:
            for end in (downstream, upstream):
                end.close()

    def _take_cut(self) -> bool:
        with self.lock:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            return True

    def _give_back_cut(self) -> None:
        with self.lock:
            self.remaining += 1


def test_watch_resumes_after_dropped_connections(base: str, sdk: Client) -> None:
    proxy = CuttingProxy(base, cuts=2, after=2)
    try:
        job = sdk.submit("debug.sleep", {"seconds": 1.5, "steps": 6})
        with Client(proxy.url, sdk.token) as through:
            through.reconnect_delay = 0.1
            watched = [event["id"] for event in through.watch(job["id"])]
    finally:
        proxy.close()
    assert proxy.cut == 2
    assert watched == [event["id"] for event in sdk.events(job["id"])]  # no gap, no duplicate
    assert len(watched) == 9  # submitted, started, 6 progress, succeeded


def test_watch_polls_when_streaming_is_refused(base: str, sdk: Client) -> None:
    """A proxy answering 501 to the stream: watch falls back to polling the events."""
    job = sdk.submit("debug.sleep", {"seconds": 0.5, "steps": 2})

    def refuse(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            return httpx.Response(501, json={"error": {"code": "not_implemented"}})
        forwarded = httpx.request(
            request.method, base + request.url.raw_path.decode(), headers=request.headers
        )
        return httpx.Response(forwarded.status_code, content=forwarded.content)

    with Client(base, sdk.token) as polling:
        polling._http = httpx.Client(
            base_url=polling.base_url, transport=httpx.MockTransport(refuse)
        )
        watched = [event["type"] for event in polling.watch(job["id"], poll_interval=0.1)]
    assert watched[0] == "submitted" and watched[-1] == "succeeded"
    assert watched.count("progress") == 2


# --- files ---------------------------------------------------------------------------------

CHILD = """
import json, resource, sys
cap, mode, base, token, path, control = sys.argv[1:7]
resource.setrlimit(resource.RLIMIT_AS, (int(cap), int(cap)))
try:
    open(control, "rb").read()
    print("control: read whole", flush=True)
except MemoryError:
    print("control: MemoryError", flush=True)
from dockyard_client import Client
with Client(base, token) as client:
    if mode == "upload":
        job = client.submit_file(path, "file.checksum", {}, delay_seconds=600)
        print(json.dumps(job))
    else:
        print(json.dumps({"saved": str(client.download(sys.argv[7], path))}))
"""


def _capped(*args: str) -> dict[str, Any]:
    """Run CHILD with its address space capped at MEMORY_CAP; its last line, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(MEMORY_CAP), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "control: MemoryError", done.stdout  # the cap holds the file out
    return dict(json.loads(lines[-1]))


def test_submit_file_streams_a_file_larger_than_the_memory_cap(sdk: Client, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        out.truncate(BIG)
    job = _capped("upload", sdk.base_url, str(sdk.token), str(big), str(big))
    assert job["processor"] == "file.checksum"
    with session_scope() as session:
        stored = session.scalar(select(Job.input_file).where(Job.id == job["id"]))
    assert stored["size"] == BIG  # all of it arrived
    sdk.cancel(job["id"])


def test_download_streams_a_result_larger_than_the_memory_cap(
    stack: dict, sdk: Client, tmp_path: Path
) -> None:
    source = tmp_path / "words.txt"
    source.write_text("one two two three three three\n")
    job = sdk.submit_file(source, "text.stats")
    assert sdk.wait(job["id"], timeout=120)["status"] == "succeeded"
    small = sdk.download(job["id"], tmp_path)
    assert json.loads(small.read_text())["words"] == 6
    with session_scope() as session:
        key = session.scalar(select(Job.result_file).where(Job.id == job["id"]))["key"]
    stored = Path(stack["storage"]) / key
    with stored.open("wb") as out:  # the stored result becomes a big one
        out.truncate(BIG)
    into = tmp_path / "into"
    into.mkdir()
    saved = Path(
        _capped("download", sdk.base_url, str(sdk.token), str(into), str(stored), job["id"])[
            "saved"
        ]
    )
    assert saved.parent == into and saved.stat().st_size == BIG
    assert not list(into.glob("*.part"))


# --- webhooks ------------------------------------------------------------------------------


class Receiver:
    """An HTTP receiver on 127.0.0.1 recording each delivery's headers and raw body."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_webhook_deliveries_verify_with_the_sdk(sdk: Client) -> None:
    receiver = Receiver()
    try:
        webhook = sdk.create_webhook(receiver.url, ["job.succeeded"])
        old = webhook["secret"]
        sdk.ping_webhook(webhook["id"])
        wait_for(lambda: len(receiver.received) == 1, timeout=30, message="the ping")
        headers, body = receiver.received[0]
        assert verify_webhook_signature(old, headers, body)
        assert not verify_webhook_signature(old, headers, body + b" ")  # tampered
        assert not verify_webhook_signature("another secret", headers, body)
        assert not verify_webhook_signature(old, headers, body, tolerance=-1)  # too old

        new = sdk.rotate_webhook_secret(webhook["id"])["secret"]
        sdk.ping_webhook(webhook["id"])
        wait_for(lambda: len(receiver.received) == 2, timeout=30, message="the second ping")
        headers, body = receiver.received[1]
        assert headers["Dockyard-Signature"].count("v1=") == 2  # during the overlap
        assert verify_webhook_signature(new, headers, body)
        assert verify_webhook_signature(old, headers, body)
        assert [w["id"] for w in sdk.webhooks()] == [webhook["id"]]
        sdk.delete_webhook(webhook["id"])
        with pytest.raises(NotFound):
            sdk.webhook(webhook["id"])
    finally:
        receiver.server.shutdown()


# --- deploys and apps ------------------------------------------------------------------------

DEPLOY_PORTS = (22200, 22219)  # inside no other test's range


@pytest.fixture(scope="module")
def deploy_stack(settings, job_worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A deploy worker cloning from the GitHub stand-in, and a live API started in its
    environment (the API checks repository URLs with the same settings)."""
    workdir = tmp_path_factory.mktemp("sdk-deploy")
    github = FakeGitHub(workdir / "github")
    github.publish("sdkapp", fixture="webapp")
    try:
        with (
            deploy_fleet(
                github, workdir, "sdk-deploy", DEPLOY_PORTS, 2, DEPLOY_HEALTH_TIMEOUT="30"
            ),
            serve(workdir) as url,
        ):
            yield {"base": url, "repo": github.url("sdkapp")}
    finally:
        github.remove_images()


def test_deploy_follow_build_apps_releases_rollback(deploy_stack: dict) -> None:
    base, repo = deploy_stack["base"], deploy_stack["repo"]
    name = f"sdk-{uuid.uuid4().hex[:8]}"
    email, password = new_account(base)
    with Client(base) as client:
        client.login(email, password)
        job = client.deploy(repo, app=name, health_path="/health")
        deployment_id = job["params"]["deployment_id"]
        lines = list(client.follow_build(deployment_id, timeout=180))
        assert lines[-1]["event"] == "outcome", lines[-3:]
        outcome = lines[-1]["data"]["outcome"]
        assert outcome["status"] == "healthy", outcome
        assert {"step", "output"} <= {line["event"] for line in lines}
        ids = [line["id"] for line in lines[:-1]]
        assert ids == sorted(set(ids))  # each line once, in order
        first = client.wait(job["id"], timeout=120)
        assert first["status"] == "succeeded" and first["result"]["release"] == 1
        assert client.deployment(deployment_id)["status"] == "healthy"

        app = client.app(name)
        assert app["current_release"] == 1 and app["url"] == outcome["url"]
        assert name in [a["name"] for a in client.apps()]
        assert client.update_app(name, auto_deploy=False)["auto_deploy"] is False

        other_email, other_password = new_account(base)
        with Client(base) as other:
            other.login(other_email, other_password)
            with pytest.raises(Conflict) as taken:
                other.deploy(repo, app=name)
            assert taken.value.code == "app_name_taken" and taken.value.request_id
            with pytest.raises(NotFound):
                other.app(name)
        with pytest.raises(ValidationError) as invalid:
            client.deploy(repo, app="Not A Name")
        assert "app" in invalid.value.details["fields"]

        second = client.wait(
            client.deploy(repo, app=name, health_path="/health")["id"], timeout=180
        )
        assert second["status"] == "succeeded" and second["result"]["release"] == 2
        rolled = client.wait(client.rollback(name, 1)["id"], timeout=120)
        assert rolled["status"] == "succeeded" and rolled["result"]["release"] == 3
        releases = list(client.releases(name, limit=2))  # two pages
        assert [r["version"] for r in releases] == ["v3", "v2", "v1"]
        assert releases[0]["rollback_of"] == 1

        current = rolled["result"]["deployment_id"]
        client.stop_deployment(current)
        wait_for(
            lambda: client.deployment(current)["status"] == "stopped",
            timeout=30,
            message="the deployment to stop",
        )
        assert client.delete_app(name)["deleted"] is True
        with pytest.raises(NotFound):
            client.app(name)


# --- schedules and admin -------------------------------------------------------------------


def test_schedules(sdk: Client) -> None:
    schedule = sdk.create_schedule(
        name="sdk nightly", processor="debug.echo", params={"message": "hi"}, cron="0 3 * * *"
    )
    assert sdk.schedule(schedule["id"])["name"] == "sdk nightly"
    assert [s["id"] for s in sdk.schedules()] == [schedule["id"]]
    assert sdk.update_schedule(schedule["id"], enabled=False)["enabled"] is False
    triggered = sdk.trigger_schedule(schedule["id"])
    assert sdk.wait(triggered["id"], timeout=30)["status"] == "succeeded"
    assert [job["id"] for job in sdk.schedule_runs(schedule["id"])] == [triggered["id"]]
    with pytest.raises(ValidationError) as invalid:
        sdk.create_schedule(name="bad", processor="debug.echo", cron="not a cron")
    assert invalid.value.details["fields"]
    sdk.delete_schedule(schedule["id"])
    with pytest.raises(NotFound):
        sdk.schedule(schedule["id"])


def test_admin_queues_stats_and_dead_letters(base: str, sdk: Client) -> None:
    with pytest.raises(PermissionDenied) as denied:
        sdk.stats()
    assert denied.value.status == 403
    email, password = new_account(base, admin=True)
    with Client(base) as admin:
        admin.login(email, password)
        assert {"jobs_by_status", "queue_depths", "dead_letters_waiting"} <= set(admin.stats())
        assert {"diagnostics", "files", "deploy"} <= {q["name"] for q in admin.queues()}
        assert admin.pause_queue("deploy")["paused"] is True
        assert admin.resume_queue("deploy")["paused"] is False

        job = sdk.submit("debug.fail", {"fail_times": 5}, max_attempts=1)
        assert sdk.wait(job["id"], timeout=30)["status"] == "dead"
        letter = wait_for(
            lambda: next((d for d in admin.dead_letters() if d["job_id"] == job["id"]), None),
            timeout=30,
            message="the dead letter",
        )
        admin.requeue_dead_letter(letter["id"])
        wait_for(
            lambda: [e["type"] for e in sdk.events(job["id"])].count("dead_lettered") == 2,
            timeout=30,
            message="the requeued job to die again",
        )
        # Its second letter is recorded by the dead-letter worker after the event: await it.
        wait_for(
            lambda: any(d["job_id"] == job["id"] for d in admin.dead_letters()),
            timeout=30,
            message="the second dead letter",
        )
        purged = admin.purge_dead_letters(processor="debug.fail", state="all")
        assert purged["affected"] >= 1
        assert not [d for d in admin.dead_letters(state="all") if d["job_id"] == job["id"]]


# --- the package on its own ------------------------------------------------------------------


def test_installs_in_a_fresh_virtualenv_without_the_server(tmp_path: Path) -> None:
    source = tmp_path / "client"
    shutil.copytree(
        ROOT / "client", source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    installed = subprocess.run(
        [*pip, "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert installed.returncode == 0, installed.stderr
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import dockyard_client, importlib.util as u; "
            "print(dockyard_client.__version__, dockyard_client.Client.__name__); "
            "print([m for m in ('flask', 'celery', 'sqlalchemy', 'boto3', 'api', 'shared') "
            "if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.splitlines() == [f"{dockyard_client.__version__} Client", "[]"]
    names = subprocess.run([*pip, "list", "--format=json"], capture_output=True, text=True)
    packages = {p["name"].lower() for p in json.loads(names.stdout)}
    assert {"httpx", "click", "rich", "dockyard-client"} <= packages
    assert not packages & {"flask", "celery", "sqlalchemy", "boto3", "redis", "psycopg2-binary"}
    assert (venv / "bin" / "dockyard").exists()
