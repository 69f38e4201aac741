"""Server-Sent Events over a real HTTP server: live job events from Redis pub/sub, resume
with Last-Event-ID, and one user never seeing another's events."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from werkzeug.serving import make_server

from api import sse
from tests.helpers import User, free_port


@contextmanager
def serving(app) -> Iterator[str]:  # noqa: ANN001
    port = free_port()
    httpd = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        httpd.shutdown()


@pytest.fixture(scope="module")
def server(app) -> Iterator[str]:
    with serving(app) as base:
        yield base


def sse_frames(response: requests.Response) -> Iterator[dict[str, str]]:
    """Each SSE frame that carries data, as its fields, until the server ends the stream."""
    frame: dict[str, str] = {}
    for line in response.iter_lines(decode_unicode=True):
        if line:
            field, _, value = line.partition(":")
            frame[field] = value.strip()
            continue
        if "data" in frame:
            yield frame
        frame = {}


def read_events(response: requests.Response, until) -> list[dict]:  # noqa: ANN001
    """Parse SSE frames until `until(event)` is true."""
    events: list[dict] = []
    for frame in sse_frames(response):
        event = json.loads(frame["data"])
        assert frame["id"] == str(event["id"]) and frame["event"] == event["type"]
        events.append(event)
        if until(event):
            return events
    raise AssertionError(f"stream ended early after {events}")


def open_stream(server: str, user: User, path: str, **headers) -> requests.Response:
    response = requests.get(
        server + path, headers={**user.headers, **headers}, stream=True, timeout=30
    )
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return response


def test_a_job_stream_replays_then_follows_live(app, server, job_worker) -> None:
    user = User(app.test_client())
    job = user.submit("debug.sleep", {"seconds": 1.5, "steps": 3})
    with open_stream(
        server, user, f"/api/v1/jobs/{job['id']}/stream", **{"Last-Event-ID": "0"}
    ) as r:
        events = read_events(r, lambda e: e["type"] == "succeeded")
    types = [e["type"] for e in events]
    assert types[0] == "submitted" and types[-1] == "succeeded"
    assert types.count("progress") == 3 and "started" in types
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [e["data"]["current"] for e in events if e["type"] == "progress"] == [1, 2, 3]
    # Resume after "started": only what came later, nothing twice.
    started = next(e["id"] for e in events if e["type"] == "started")
    with open_stream(server, user, f"/api/v1/jobs/{job['id']}/stream?last_event_id={started}") as r:
        resumed = read_events(r, lambda e: e["type"] == "succeeded")
    assert [e["id"] for e in resumed] == [i for i in ids if i > started]


def test_the_all_jobs_stream_carries_only_the_callers_jobs(app, server, job_worker) -> None:
    alice, bob = User(app.test_client()), User(app.test_client())
    with open_stream(server, alice, "/api/v1/jobs/stream") as r:
        theirs = bob.submit("debug.echo", {"message": "bob's"})
        mine = alice.submit("debug.sleep", {"seconds": 0.3, "steps": 2})
        events = read_events(r, lambda e: e["job_id"] == mine["id"] and e["type"] == "succeeded")
    assert {e["job_id"] for e in events} == {mine["id"]}
    assert theirs["id"] not in json.dumps(events)
    assert bob.get(f"/api/v1/jobs/{mine['id']}/stream").status_code == 404


def test_streams_need_a_token(server) -> None:
    response = requests.get(server + "/api/v1/jobs/stream", timeout=5)
    assert response.status_code == 401
    assert response.json()["error"]["code"]


def test_a_stream_ends_when_its_token_is_revoked(app, server, monkeypatch) -> None:
    """A logout must not leave a stream of the user's events open; the server ends it (a
    stream it did not end would block here until the 30 s read timeout fails the test)."""
    monkeypatch.setattr(sse, "AUTH_RECHECK_SECONDS", 0.5)
    user = User(app.test_client())
    with open_stream(server, user, "/api/v1/jobs/stream") as response:
        lines = response.iter_lines(decode_unicode=True)
        assert next(lines) == "retry: 2000"
        assert user.post("/api/v1/auth/logout").status_code in (200, 204)
        rest = list(lines)
    assert "event: token_revoked" in rest


def test_a_stream_ends_when_its_token_expires(make_app) -> None:
    short = make_app(jwt_access_token_expires=2)
    user = User(short.test_client())
    with serving(short) as base, open_stream(base, user, "/api/v1/jobs/stream") as response:
        rest = list(response.iter_lines(decode_unicode=True))
    assert rest[0] == "retry: 2000" and "event: token_expired" in rest


def test_every_live_event_carries_its_owner(app, server, job_worker) -> None:
    """Progress events (written by the worker's UPDATE path) used to carry owner_id null
    while submitted/started/succeeded carried the owner; every event now carries it."""
    user = User(app.test_client())
    with open_stream(server, user, "/api/v1/jobs/stream") as r:
        job = user.submit("debug.sleep", {"seconds": 0.6, "steps": 3})
        events = read_events(r, lambda e: e["job_id"] == job["id"] and e["type"] == "succeeded")
    mine = [e for e in events if e["job_id"] == job["id"]]
    assert [e["type"] for e in mine].count("progress") == 3
    assert {e["owner_id"] for e in mine} == {user.profile["id"]}, mine


def read_to_end(response: requests.Response) -> list[dict]:
    """Every event until the server ends the stream (a stream that never ended would
    fail the read timeout)."""
    return [json.loads(frame["data"]) for frame in sse_frames(response) if "id" in frame]


def test_a_job_stream_ends_after_the_terminal_event_and_a_retry_gets_a_new_one(
    app, server, job_worker
) -> None:
    user = User(app.test_client())
    job = user.submit("debug.fail", {"permanent": True})
    path = f"/api/v1/jobs/{job['id']}/stream"
    with open_stream(server, user, path, **{"Last-Event-ID": "0"}) as r:
        first = read_to_end(r)
    assert first[0]["type"] == "submitted" and first[-1]["type"] == "failed"
    # Finished, nothing after the last event seen: 204, so an EventSource stops.
    done = requests.get(
        server + path, headers={**user.headers, "Last-Event-ID": str(first[-1]["id"])}, timeout=10
    )
    assert done.status_code == 204 and not done.content
    assert requests.get(server + path, headers=user.headers, timeout=10).status_code == 204
    # The whole history of a finished job is replayed, then the stream ends.
    with open_stream(server, user, path + "?last_event_id=0") as r:
        assert [e["id"] for e in read_to_end(r)] == [e["id"] for e in first]
    # A retry: the stream, opened again from the last event seen, follows the new run.
    assert user.post(f"/api/v1/jobs/{job['id']}/retry").status_code == 202
    with open_stream(server, user, path, **{"Last-Event-ID": str(first[-1]["id"])}) as r:
        second = read_to_end(r)
    assert second[0]["type"] == "requeued" and second[-1]["type"] == "failed"
    assert min(e["id"] for e in second) > first[-1]["id"]


def test_a_live_job_stream_ends_at_success(app, server, job_worker) -> None:
    user = User(app.test_client())
    job = user.submit("debug.sleep", {"seconds": 1.5, "steps": 2})
    with open_stream(server, user, f"/api/v1/jobs/{job['id']}/stream") as r:
        events = read_to_end(r)
    assert events and events[-1]["type"] == "succeeded"
