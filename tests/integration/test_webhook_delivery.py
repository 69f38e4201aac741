"""Webhook sending with a real receiver and a real `celery worker -Q webhooks`.

A threaded HTTP server on 127.0.0.1 in this process answers as each test scripts it; the
worker subprocess is allowed to call it (WEBHOOK_ALLOW_HTTP, WEBHOOK_ALLOWED_NETWORKS) and
retries on a compressed backoff. Webhooks are made through the API, deliveries by pings and
by jobs that end (recorded and sent as in production); beat runs the dispatcher (retries,
leases of killed workers)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from shared.clock import now
from shared.config import Settings
from shared.db import session_scope
from shared.dispatch import queues
from shared.models import Webhook, WebhookAttempt, WebhookDelivery
from shared.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify
from tests.helpers import User, wait_for
from tests.integration.workers import celery_beat, celery_worker

TIMEOUT = 2.0
ENV = {
    "WEBHOOK_ALLOW_HTTP": "true",
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "WEBHOOK_BACKOFF_SCALE": "0.005",  # 0.3 s, 1.5 s, 9 s, ...
    "WEBHOOK_MAX_ATTEMPTS": "3",
    "WEBHOOK_TIMEOUT": str(TIMEOUT),
    "WEBHOOK_ENDPOINT_CONCURRENCY": "2",
    "WEBHOOK_DISPATCH_INTERVAL": "0.3",
}
Answer = Callable[["Received"], int]


class Received:
    """One request as the receiver saw it."""

    def __init__(self, path: str, headers: dict[str, str], body: bytes) -> None:
        self.path, self.headers, self.body = path, headers, body
        self.answered: int | None = None

    @property
    def delivery(self) -> str:
        return self.headers.get(DELIVERY_HEADER, "")


class Receiver:
    """Routes by path to a scripted answer (a status code); records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Answer] = {}
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received = Received(self.path, dict(self.headers.items()), body)
                with receiver.lock:
                    receiver.requests.append(received)
                answer = receiver.routes.get(self.path, lambda _: 404)
                code = answer(received)
                self.send_response(code)
                if code == 302:
                    self.send_header("Location", "/ok")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                received.answered = code

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, answer: Answer) -> str:
        path = f"/{uuid.uuid4().hex}"
        self.routes[path] = answer
        return path

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def env_settings(settings: Settings) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ENV.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def hooks_app(settings: Settings) -> Flask:
    """The API, allowed to save webhooks on this machine's receiver."""
    from api import create_app

    allowed = replace(settings, webhook_allow_http=True, webhook_allowed_networks=("127.0.0.0/8",))
    return create_app(allowed)


@pytest.fixture(scope="module")
def beat(tmp_path_factory: pytest.TempPathFactory, env_settings: None) -> Iterator[None]:
    with celery_beat(tmp_path_factory.mktemp("webhook-beat")):
        yield


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, beat: None) -> Iterator[Any]:
    """The module's webhooks worker (starting one takes seconds), shared by the tests after
    the first that asks for it: the tests that run workers of their own (other settings, one
    killed) come first in this file, so this one never takes their deliveries. Every test
    waits for its deliveries to end, so none leaves work behind for the next."""
    workdir = tmp_path_factory.mktemp("webhooks-worker")
    with celery_worker(workdir, "webhooks", queues.WEBHOOKS, concurrency=3) as process:
        yield process


class Hooks:
    """A user of the API with webhooks on the receiver."""

    def __init__(self, app: Flask) -> None:
        self.user = User(app.test_client())

    def webhook(self, url: str, events: list[str] | None = None) -> tuple[uuid.UUID, str]:
        """A new webhook's id and secret."""
        response = self.user.post("/api/v1/webhooks", json={"url": url, "events": events or ["*"]})
        assert response.status_code == 201, response.get_json()
        body = response.get_json()
        return uuid.UUID(body["id"]), body["secret"]

    def ping(self, webhook_id: uuid.UUID) -> uuid.UUID:
        """A ping delivery, recorded and sent as every delivery is."""
        response = self.user.post(f"/api/v1/webhooks/{webhook_id}/ping")
        assert response.status_code == 202, response.get_json()
        return uuid.UUID(response.get_json()["id"])

    def rotate(self, webhook_id: uuid.UUID) -> str:
        response = self.user.post(f"/api/v1/webhooks/{webhook_id}/rotate-secret")
        assert response.status_code == 200, response.get_json()
        return response.get_json()["secret"]


@pytest.fixture()
def hooks(hooks_app: Flask) -> Hooks:
    return Hooks(hooks_app)


def set_url(webhook_id: uuid.UUID, url: str) -> None:
    """Change the stored URL behind the API's save-time check (as a DNS change would)."""
    with session_scope() as session:
        webhook = session.get(Webhook, webhook_id)
        assert webhook is not None
        webhook.url = url


def delivery(delivery_id: uuid.UUID) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    with session_scope() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        attempts = session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery_id)
            .order_by(WebhookAttempt.id)
        ).all()
        session.expunge_all()
        return row, list(attempts)


def wait_status(delivery_id: uuid.UUID, status: str, timeout: float = 30.0) -> Any:
    return wait_for(
        lambda: (d := delivery(delivery_id))[0].status == status and d,
        timeout=timeout,
        message=f"delivery {delivery_id} to be {status}",
    )


# Tests with workers of their own first: the module's `worker` starts with the first test
# that asks for it and runs until the module ends.
def test_a_job_failing_3_times_then_200_is_delivered_on_the_fourth_attempt(
    receiver: Receiver, tmp_path: Path, beat: None, hooks: Hooks, job_worker: Any
) -> None:
    path = receiver.route(lambda r: 200 if len(receiver.at(r.path)) >= 4 else 503)
    webhook_id, secret = hooks.webhook(receiver.url(path), ["job.succeeded"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WEBHOOK_MAX_ATTEMPTS", "5")
        patch.setenv("WEBHOOK_BACKOFF", "0.5,1,1")
        patch.setenv("WEBHOOK_BACKOFF_SCALE", "1")
        with celery_worker(tmp_path, "webhooks-4", queues.WEBHOOKS, concurrency=2):
            job = hooks.user.submit("debug.echo", {"message": "hello"})
            hooks.user.wait_status(job["id"], "succeeded")
            with session_scope() as session:
                [delivery_id] = session.scalars(
                    select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == webhook_id)
                ).all()
            row, attempts = wait_status(delivery_id, "delivered")
    assert [a.response_code for a in attempts] == [503, 503, 503, 200]
    assert row.attempts == 4
    got = receiver.at(path)
    assert len({r.body for r in got}) == 1  # every retry sent the same bytes
    assert verify(secret, got[-1].headers, got[-1].body)
    body = json.loads(got[-1].body)
    assert body["type"] == "job.succeeded" and body["data"]["id"] == job["id"]
    assert body["data"]["status"] == "succeeded"


def test_a_worker_killed_mid_delivery_delivers_it_later_once(
    receiver: Receiver, tmp_path: Path, beat: None, hooks: Hooks
) -> None:
    arrived, release = threading.Event(), threading.Event()

    def first_blocks(received: Received) -> int:
        if len(receiver.at(received.path)) == 1:
            arrived.set()
            release.wait(30)
        return 200

    path = receiver.route(first_blocks)
    webhook_id, _ = hooks.webhook(receiver.url(path))
    with celery_worker(tmp_path, "webhooks-doomed", queues.WEBHOOKS) as doomed:
        delivery_id = hooks.ping(webhook_id)
        assert arrived.wait(20), doomed.log()
        doomed.kill_group()
    release.set()
    with celery_worker(tmp_path, "webhooks-after", queues.WEBHOOKS):
        # The lease (WEBHOOK_TIMEOUT + margin) expires; the dispatcher sends it again.
        row, attempts = wait_status(delivery_id, "delivered", timeout=40)
    assert row.attempts == 1 and [a.response_code for a in attempts] == [200]
    got = receiver.at(path)
    assert [r.delivery for r in got] == [str(delivery_id)] * 2  # the killed try, the retry
    # `answered` is set once the response is written, which may be after the worker recorded it.
    wait_for(lambda: got[1].answered == 200, timeout=5, message="the retry's 200 to be recorded")


def test_a_webhook_failing_for_webhook_disable_after_is_disabled(
    receiver: Receiver, tmp_path: Path, beat: None, hooks: Hooks
) -> None:
    path = receiver.route(lambda _: 500)
    webhook_id, _ = hooks.webhook(receiver.url(path))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WEBHOOK_DISABLE_AFTER", "1")
        patch.setenv("WEBHOOK_MAX_ATTEMPTS", "20")  # the disabling ends it, not the budget
        patch.setenv("WEBHOOK_BACKOFF", "0.3")
        patch.setenv("WEBHOOK_BACKOFF_SCALE", "1")
        with celery_worker(tmp_path, "webhooks-disable", queues.WEBHOOKS):
            delivery_id = hooks.ping(webhook_id)
            row, attempts = wait_status(delivery_id, "failed")
    shown = hooks.user.get(f"/api/v1/webhooks/{webhook_id}").get_json()
    assert shown["enabled"] is False
    assert shown["disabled_reason"].startswith("disabled automatically: every delivery has failed")
    # Sent until a failure came a second after the first, then the next one is not sent.
    assert 3 <= row.attempts < 20
    assert attempts[-1].error == "not sent: the webhook is disabled"
    assert all(a.response_code == 500 for a in attempts[:-1])
    assert len(receiver.at(path)) == row.attempts - 1
    refused = hooks.user.post(f"/api/v1/webhooks/{webhook_id}/ping")
    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "webhook_disabled"


def test_a_signed_delivery_arrives_and_verifies(
    receiver: Receiver, worker: Any, hooks: Hooks, client: Any
) -> None:
    path = receiver.route(lambda _: 200)
    webhook_id, secret = hooks.webhook(receiver.url(path))
    delivery_id = hooks.ping(webhook_id)
    row, attempts = wait_status(delivery_id, "delivered")
    [got] = receiver.at(path)
    assert got.headers[DELIVERY_HEADER] == str(delivery_id)
    assert got.headers[EVENT_HEADER] == "ping"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert verify(secret, got.headers, got.body)
    assert not verify("whsec_another", got.headers, got.body)
    body = json.loads(got.body)
    assert body["id"] == str(delivery_id) and body["type"] == "ping"
    assert body["data"] == {"webhook_id": str(webhook_id)}
    assert got.body.decode() == row.body  # the kept body is what was signed and sent
    assert [(a.attempt, a.response_code, a.response_body) for a in attempts] == [(1, 200, "ok")]
    assert row.delivered_at is not None and row.attempts == 1
    with session_scope() as session:
        webhook = session.get(Webhook, webhook_id)
        assert webhook is not None
        assert webhook.last_success_at is not None and webhook.failing_since is None
    scrape = client.get("/metrics").get_data(as_text=True)
    assert 'dockyard_webhook_deliveries_total{event="ping",outcome="delivered"}' in scrape
    assert 'dockyard_webhook_delivery_latency_seconds_count{event="ping"}' in scrape


def test_an_endpoint_that_never_answers_200_ends_failed(
    receiver: Receiver, worker: Any, hooks: Hooks
) -> None:
    path = receiver.route(lambda _: 500)
    webhook_id, _ = hooks.webhook(receiver.url(path))
    delivery_id = hooks.ping(webhook_id)
    row, attempts = wait_status(delivery_id, "failed")
    assert [a.response_code for a in attempts] == [500, 500, 500]
    assert row.next_attempt_at is None and row.delivered_at is None
    assert len(receiver.at(path)) == 3
    with session_scope() as session:
        webhook = session.get(Webhook, webhook_id)
        assert webhook is not None and webhook.failing_since is not None
        assert webhook.enabled  # seconds of failures are not WEBHOOK_DISABLE_AFTER


def test_a_refused_connection_and_a_refused_url_are_failed_attempts(
    worker: Any, hooks: Hooks
) -> None:
    closed_hook, _ = hooks.webhook("http://127.0.0.1:9/closed")
    closed = hooks.ping(closed_hook)
    private_hook, _ = hooks.webhook("http://127.0.0.1:9/moved")
    set_url(private_hook, "http://10.11.12.13/private")  # checked again at delivery
    refused = hooks.ping(private_hook)
    _, attempts = wait_status(closed, "failed")
    assert attempts[0].response_code is None and "connection failed" in (attempts[0].error or "")
    _, attempts = wait_status(refused, "failed")
    assert "URL refused" in (attempts[0].error or "") and "10.11.12.13" in attempts[0].error


def test_redirects_are_not_followed(receiver: Receiver, worker: Any, hooks: Hooks) -> None:
    receiver.routes["/ok"] = lambda _: 200
    path = receiver.route(lambda _: 302)
    delivery_id = hooks.ping(hooks.webhook(receiver.url(path))[0])
    _, attempts = wait_status(delivery_id, "failed")
    assert [a.response_code for a in attempts] == [302, 302, 302]
    assert not receiver.at("/ok")


def test_both_signatures_during_a_rotation_overlap(
    receiver: Receiver, worker: Any, hooks: Hooks
) -> None:
    path = receiver.route(lambda _: 200)
    webhook_id, old = hooks.webhook(receiver.url(path))
    new = hooks.rotate(webhook_id)
    wait_status(hooks.ping(webhook_id), "delivered")
    [got] = receiver.at(path)
    assert verify(new, got.headers, got.body) and verify(old, got.headers, got.body)
    assert got.headers[SIGNATURE_HEADER].count("v1=") == 2
    with session_scope() as session:  # the overlap over: the old secret no longer signs
        webhook = session.get(Webhook, webhook_id)
        assert webhook is not None
        webhook.previous_secret_expires_at = now() - timedelta(seconds=1)
    wait_status(hooks.ping(webhook_id), "delivered")
    last = receiver.at(path)[-1]
    assert verify(new, last.headers, last.body)
    assert not verify(old, last.headers, last.body)


def test_a_slow_endpoint_does_not_delay_another_users_delivery(
    receiver: Receiver, worker: Any, hooks: Hooks, hooks_app: Flask
) -> None:
    release = threading.Event()

    def slow(_: Received) -> int:
        release.wait(TIMEOUT * 0.8)
        return 200

    slow_path = receiver.route(slow)
    slow_hook, _ = hooks.webhook(receiver.url(slow_path))
    other = Hooks(hooks_app)
    fast_path = receiver.route(lambda _: 200)
    fast_hook, _ = other.webhook(receiver.url(fast_path))
    try:
        slow_ids = [hooks.ping(slow_hook) for _ in range(6)]
        wait_for(lambda: len(receiver.at(slow_path)) >= 2, message="the slow endpoint busy")
        started = time.monotonic()
        fast = other.ping(fast_hook)
        wait_status(fast, "delivered", timeout=10)
        took = time.monotonic() - started
        # The cap (2) left the third slot free: the other user waited for no slow request.
        assert took < TIMEOUT * 0.8, took
        assert len([r for r in receiver.at(slow_path) if r.answered is None]) <= 2
    finally:
        release.set()
    for delivery_id in slow_ids:
        wait_status(delivery_id, "delivered")


def test_a_failed_delivery_redelivered_arrives_with_the_same_id(
    receiver: Receiver, worker: Any, hooks: Hooks
) -> None:
    answer = {"code": 500}
    path = receiver.route(lambda _: answer["code"])
    webhook_id, secret = hooks.webhook(receiver.url(path))
    delivery_id = hooks.ping(webhook_id)
    wait_status(delivery_id, "failed")
    answer["code"] = 200
    response = hooks.user.post(f"/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["status"] == "pending"
    row, attempts = wait_status(delivery_id, "delivered")
    got = receiver.at(path)
    assert [r.delivery for r in got] == [str(delivery_id)] * 4
    assert verify(secret, got[-1].headers, got[-1].body)
    assert got[-1].body == got[0].body  # the kept body, not rendered again
    # A fresh cycle numbered from 1; the failed one stays in the history.
    assert [(a.attempt, a.response_code) for a in attempts] == [
        (1, 500),
        (2, 500),
        (3, 500),
        (1, 200),
    ]
    assert row.attempts == 1
    listed = hooks.user.get(f"/api/v1/webhooks/{webhook_id}/deliveries").get_json()["items"]
    [shown] = [d for d in listed if d["id"] == str(delivery_id)]
    assert shown["status"] == "delivered" and shown["delivered_at"] is not None
