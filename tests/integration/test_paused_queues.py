"""Paused queues with real worker processes: while a queue is paused no worker of it starts
new work (running jobs finish), submissions are accepted and wait, a worker started after the
pause takes nothing either, and resume runs them all.

The workers consume only `files` (diagnostics sent there with `fleet`), so the suite's own
in-process worker on `diagnostics` is never paused.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, select

from shared.db import session_scope
from shared.dispatch import queue_states
from shared.models import Job, QueueState
from tests.helpers import User, wait_for
from tests.integration.test_operations import scrape, value
from tests.integration.workers import celery_worker

QUEUE = "files"
#: A worker idle on its queue claims a new job within a few hundred milliseconds (most of it
#: the API's publish and the worker's BRPOP wake-up), so a job still `queued` after this long
#: with a live worker was held back by the pause, not merely not picked up yet.
HELD_WINDOW = 2.0


@pytest.fixture(autouse=True)
def _no_pauses_left() -> Iterator[None]:
    yield
    with session_scope() as session:
        session.execute(delete(QueueState))


def queue_view(admin: User, name: str = QUEUE) -> dict:
    response = admin.get("/api/v1/admin/queues")
    assert response.status_code == 200, response.get_json()
    return {item["name"]: item for item in response.get_json()["items"]}[name]


def statuses(user: User, jobs: list[dict]) -> set[str]:
    return {user.job(job["id"])["status"] for job in jobs}


def assert_stay_queued(user: User, jobs: list[dict]) -> None:
    """Polls over HELD_WINDOW (see there): every job is still queued the whole time."""
    deadline = time.monotonic() + HELD_WINDOW
    while time.monotonic() < deadline:
        assert statuses(user, jobs) == {"queued"}
        time.sleep(0.1)


def submit_echoes(user: User, *levels: str) -> list[dict]:
    return [
        user.submit("debug.echo", {"message": level, "fleet": QUEUE}, priority=level)
        for level in levels
    ]


def started_by(user: User, job: dict) -> list[str]:
    return [e["data"]["worker"] for e in user.events(job["id"]) if e["type"] == "started"]


def test_pause_holds_new_work_even_for_a_worker_started_later(client, tmp_path) -> None:
    admin, user = User(client, "admin"), User(client)
    with celery_worker(tmp_path, "pause-before", QUEUE) as worker:
        wait_for(lambda: queue_view(admin)["workers"] == ["pause-before@localhost"])
        running = user.submit("debug.sleep", {"seconds": 1.5, "steps": 3, "fleet": QUEUE})
        user.wait_status(running["id"], "running")

        paused = admin.post(f"/api/v1/admin/queues/{QUEUE}/pause")
        assert paused.status_code == 200, paused.get_json()
        assert paused.get_json()["paused"] is True

        waiting = submit_echoes(user, "low", "normal", "high")  # accepted: 202
        assert user.wait_status(running["id"], "succeeded")["attempts"] == 1  # it finishes
        wait_for(lambda: "Canceling queue files" in worker.log(), message="consumer cancelled")
        assert_stay_queued(user, waiting)

    # A worker started after the pause reads the stored state before it takes anything.
    with celery_worker(tmp_path, "pause-after", QUEUE) as late:
        view = wait_for(
            lambda: (v := queue_view(admin))["workers"] == ["pause-after@localhost"] and v
        )
        assert view["paused"] is True
        assert view["depth"] == {"high": 1, "normal": 1, "low": 1}
        assert view["oldest_waiting_seconds"] >= HELD_WINDOW
        assert "Canceling queue files" in late.log()
        assert_stay_queued(user, waiting)

        resumed = admin.post(f"/api/v1/admin/queues/{QUEUE}/resume")
        assert resumed.status_code == 200, resumed.get_json()
        assert resumed.get_json()["paused"] is False
        for job in waiting:
            user.wait_status(job["id"], "succeeded", timeout=10)
            assert started_by(user, job) == ["pause-after@localhost"]
            # Neither worker even took its message while paused (no claim had to hold it).
            assert "held" not in [e["type"] for e in user.events(job["id"])]
        view = queue_view(admin)
    assert view["depth"] == {"high": 0, "normal": 0, "low": 0}
    assert view["oldest_waiting_seconds"] is None


def test_a_delivery_that_slips_past_the_pause_is_held_and_runs_on_resume(client, tmp_path) -> None:
    """A retry's countdown message is already inside the worker when the queue is paused, and
    the pause is stored without its broadcast (as if the broker lost it): when the countdown
    ends the claim holds the job back (queued, unpublished, `held` event, priority kept)
    instead of running it; the worker's periodic check stops it consuming; resume publishes
    the job again."""
    admin, user = User(client, "admin"), User(client)
    slow_retry = {"RETRY_BACKOFF_BASE": "3", "RETRY_JITTER": "0"}  # the countdown: 3 s
    with celery_worker(tmp_path, "pause-missed", QUEUE, env=slow_retry) as worker:
        job = user.submit("debug.fail", {"fail_times": 1, "fleet": QUEUE}, priority="high")
        user.wait_status(job["id"], "retrying")
        with session_scope() as session:
            queue_states.set_paused(session, QUEUE, True, None)
        wait_for(
            lambda: "held" in [e["type"] for e in user.events(job["id"])],
            timeout=10,
            message="the due retry to be held",
        )
        with session_scope() as session:
            row = session.scalar(select(Job).where(Job.id == uuid.UUID(job["id"])))
            assert row is not None
            assert (row.status, row.published_at, row.priority) == ("queued", None, "high")
        assert queue_view(admin)["depth"]["high"] == 1  # held in PostgreSQL, still counted
        wait_for(lambda: "Canceling queue files" in worker.log(), message="the check to heal")
        assert_stay_queued(user, [job])

        assert admin.post(f"/api/v1/admin/queues/{QUEUE}/resume").status_code == 200
        done = user.wait_status(job["id"], "succeeded", timeout=10)
    assert done["attempts"] == 2


def test_unknown_queue_is_404_and_only_admins_may_pause(client) -> None:
    admin, user = User(client, "admin"), User(client)
    for name in ("nope", "maintenance", "dead_letter"):
        response = admin.post(f"/api/v1/admin/queues/{name}/pause")
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"
    assert user.get("/api/v1/admin/queues").status_code == 403
    assert user.post(f"/api/v1/admin/queues/{QUEUE}/pause").status_code == 403
    assert user.post(f"/api/v1/admin/queues/{QUEUE}/resume").status_code == 403
    assert [q["name"] for q in admin.get("/api/v1/admin/queues").get_json()["items"]] == [
        "diagnostics",
        "files",
        "deploy",
    ]


def test_metric_and_stats_show_paused_queues(client) -> None:
    admin = User(client, "admin")
    assert admin.post(f"/api/v1/admin/queues/{QUEUE}/pause").status_code == 200
    samples = scrape(client)
    assert value(samples, "dockyard_queue_paused", queue=QUEUE) == 1.0
    assert value(samples, "dockyard_queue_paused", queue="diagnostics") == 0.0
    assert ("dockyard_queue_paused", (("queue", "deploy"),)) in samples
    assert admin.get("/api/v1/admin/stats").get_json()["paused_queues"] == [QUEUE]

    assert admin.post(f"/api/v1/admin/queues/{QUEUE}/resume").status_code == 200
    assert value(scrape(client), "dockyard_queue_paused", queue=QUEUE) == 0.0
    assert admin.get("/api/v1/admin/stats").get_json()["paused_queues"] == []
