"""Delayed jobs: a job with a future `run_at` (or `delay_seconds`) waits as `scheduled` in
PostgreSQL and is released by beat's release tick (workers/release.py) when it comes due, in
due order, once, never when cancelled, and through a restart of beat and worker."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from redis import Redis
from sqlalchemy import select, text, update

from shared.celery_app import make_celery
from shared.config import get_settings
from shared.db import session_scope
from shared.dispatch import priorities
from shared.models import Job, JobEvent
from tests.helpers import User, wait_for
from tests.integration.workers import celery_beat, celery_worker
from workers import release
from workers.sweeps import publish_unpublished

FLEET = {"fleet": "files"}  # no in-process test worker consumes it: only ours run these
WORKER_QUEUES = "maintenance,files"  # the release ticks and the jobs they release


def _at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def _messages(queue: str) -> Counter[str]:
    """How many messages wait in the queue's lists (every priority) for each job id."""
    broker = Redis.from_url(get_settings().broker_url)
    counts: Counter[str] = Counter()
    for name in priorities.list_names(queue).values():
        for raw in broker.lrange(name, 0, -1):
            body = json.loads(base64.b64decode(json.loads(raw)["body"]))
            counts[body[1]["job_id"]] += 1
    return counts


def _types(user: User, job_id: str) -> list[str]:
    return [event["type"] for event in user.events(job_id)]


def _sleep_until(moment: str) -> None:
    """Time itself is the condition here: nothing may happen before `moment` passes."""
    time.sleep(max(0.0, (datetime.fromisoformat(moment) - datetime.now(UTC)).total_seconds()))


def test_jobs_start_in_run_at_order_within_a_second(client, tmp_path) -> None:
    user = User(client)
    with celery_worker(tmp_path, "release", WORKER_QUEUES), celery_beat(tmp_path):
        offsets = [2.0, 1.0, 2.5, 1.5]  # submitted out of order
        jobs = [
            user.submit("debug.echo", {"message": str(offset), **FLEET}, run_at=_at(offset))
            for offset in offsets
        ]
        for job in jobs:
            assert job["status"] == "scheduled" and job["run_at"] is not None
        done = [user.wait_status(job["id"], "succeeded", timeout=30) for job in jobs]
    by_start = [job["id"] for job in sorted(done, key=lambda job: job["started_at"])]
    by_due = [job["id"] for job in sorted(jobs, key=lambda job: job["run_at"])]
    assert by_start == by_due
    for job in done:
        assert _types(user, job["id"]) == ["submitted", "released", "started", "succeeded"]
        released = next(e for e in user.events(job["id"]) if e["type"] == "released")
        assert 0 <= released["data"]["late"] < 1.0, released
        started = datetime.fromisoformat(job["started_at"])
        assert started >= datetime.fromisoformat(job["run_at"])


@pytest.mark.usefixtures("job_worker")
def test_a_job_cancelled_before_it_is_due_is_never_released(client) -> None:
    user = User(client)
    job = user.submit("debug.echo", {"message": "never", **FLEET}, delay_seconds=1)
    assert job["status"] == "scheduled"
    cancelled = user.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    _sleep_until(job["run_at"])
    release.release_due()
    assert user.job(job["id"])["status"] == "cancelled"
    assert _types(user, job["id"]) == ["submitted", "cancelled"]
    assert user.events(job["id"])[-1]["data"]["while_status"] == "scheduled"
    assert _messages("files")[job["id"]] == 0


def test_a_waiting_job_survives_a_restart_of_beat_and_worker(client, tmp_path) -> None:
    user = User(client)
    with celery_worker(tmp_path, "release", WORKER_QUEUES), celery_beat(tmp_path):
        # Due well after both have stopped, even on a loaded machine (stopping takes seconds).
        job = user.submit("debug.echo", {"message": "later", **FLEET}, delay_seconds=8)
    # Both stopped before it was due; nothing releases it while they are down.
    assert user.job(job["id"])["status"] == "scheduled"
    _sleep_until(job["run_at"])
    assert user.job(job["id"])["status"] == "scheduled"
    with celery_worker(tmp_path, "release-again", WORKER_QUEUES), celery_beat(tmp_path):
        done = user.wait_status(job["id"], "succeeded", timeout=30)
    assert done["attempts"] == 1 and done["result"] == {"message": "later"}
    assert _types(user, job["id"]) == ["submitted", "released", "started", "succeeded"]


def _due_jobs(owner: uuid.UUID, queue: str, count: int) -> list[uuid.UUID]:
    """`count` scheduled jobs already due (oldest first), for a queue nobody consumes."""
    due = datetime.now(UTC) - timedelta(seconds=1)
    with session_scope() as session:
        jobs = [
            Job(
                owner_id=owner,
                kind="diagnostic",
                processor="debug.echo",
                queue=queue,
                params={"message": str(i)},
                status="scheduled",
                max_attempts=1,
                dispatch_id=uuid.uuid4(),
                run_at=due + timedelta(milliseconds=i),
            )
            for i in range(count)
        ]
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]


def _released_events(ids: list[uuid.UUID]) -> Counter[uuid.UUID]:
    with session_scope() as session:
        rows = session.scalars(
            select(JobEvent.job_id).where(JobEvent.job_id.in_(ids), JobEvent.type == "released")
        ).all()
    return Counter(rows)


def _tidy(queue: str, ids: list[uuid.UUID]) -> None:
    """Leave neither runnable rows nor messages behind for later tests."""
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.id.in_(ids)).values(status="cancelled", dispatch_id=None)
        )
    broker = Redis.from_url(get_settings().broker_url)
    broker.delete(*priorities.list_names(queue).values())


def test_two_releasers_at_once_release_each_job_once(client) -> None:
    owner = uuid.UUID(User(client).profile["id"])
    queue = f"delayed-{uuid.uuid4().hex[:8]}"
    ids = _due_jobs(owner, queue, 600)
    counts: list[int] = []
    start = threading.Barrier(2)

    def releaser() -> None:
        start.wait()
        total = 0
        while count := release.release_batch(limit=50):
            total += count
        counts.append(total)

    try:
        threads = [threading.Thread(target=releaser) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sum(counts) == len(ids), counts
        assert _released_events(ids) == Counter({job_id: 1 for job_id in ids})
        assert _messages(queue) == Counter({str(job_id): 1 for job_id in ids})
        with session_scope() as session:
            rows = session.execute(
                select(Job.status, Job.published_at).where(Job.id.in_(ids))
            ).all()
        assert all(status == "queued" and published for status, published in rows)
    finally:
        _tidy(queue, ids)


def test_a_release_the_broker_refuses_is_published_by_the_outbox_sweep(client, settings) -> None:
    owner = uuid.UUID(User(client).profile["id"])
    queue = f"delayed-{uuid.uuid4().hex[:8]}"
    ids = _due_jobs(owner, queue, 3)
    try:
        assert release.release_batch(make_celery("redis://127.0.0.1:1/0")) == 3
        with session_scope() as session:
            rows = session.execute(
                select(Job.status, Job.published_at).where(Job.id.in_(ids))
            ).all()
        assert rows and all(row == ("queued", None) for row in rows)
        assert not _messages(queue)
        wait_for(
            lambda: publish_unpublished(settings) >= 3 and _messages(queue),
            timeout=10,
            message="the outbox sweep to publish the released jobs",
        )
        assert _messages(queue) == Counter({str(job_id): 1 for job_id in ids})
        assert _released_events(ids) == Counter({job_id: 1 for job_id in ids})
    finally:
        _tidy(queue, ids)


def test_scheduled_jobs_have_their_own_quota_and_are_not_active(make_app) -> None:
    client = make_app(quota_scheduled_jobs=2, quota_active_jobs=1).test_client()
    user = User(client)
    later = {"message": "later", **FLEET}
    waiting = [user.submit("debug.echo", later, delay_seconds=600) for _ in range(2)]
    refused = user.post(
        "/api/v1/jobs", json={"processor": "debug.echo", "params": later, "delay_seconds": 600}
    )
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    assert error["code"] == "too_many_scheduled_jobs"
    assert error["details"] == {"limit": 2, "scheduled": 2}
    # Waiting jobs are not active: the one active slot is still free, then taken.
    active = user.submit("debug.echo", later)
    assert active["status"] == "queued"
    too_many = user.post("/api/v1/jobs", json={"processor": "debug.echo", "params": later})
    assert too_many.status_code == 429
    assert too_many.get_json()["error"]["code"] == "too_many_active_jobs"
    # A cancelled scheduled job frees its place.
    user.post(f"/api/v1/jobs/{waiting[0]['id']}/cancel")
    again = user.submit("debug.echo", later, delay_seconds=600)
    for job in (waiting[1], active, again):
        user.post(f"/api/v1/jobs/{job['id']}/cancel")


def test_run_at_and_delay_seconds_are_validated(client, settings) -> None:
    user = User(client)

    def refused(**options: object) -> dict:
        response = user.post(
            "/api/v1/jobs", json={"processor": "debug.echo", "params": {"message": "x"}, **options}
        )
        assert response.status_code == 422, response.get_json()
        return response.get_json()["error"]

    both = refused(run_at=_at(10), delay_seconds=10)
    assert both["code"] == "invalid_params" and "delay_seconds" in both["details"]["fields"]
    too_far = refused(run_at=_at(settings.max_delay_seconds + 60))
    assert too_far["code"] == "invalid_params" and "run_at" in too_far["details"]["fields"]
    too_long = refused(delay_seconds=settings.max_delay_seconds + 1)
    assert too_long["code"] == "invalid_params"
    assert refused(run_at="tomorrow")["details"]["fields"]["run_at"]
    assert refused(run_at="2030-01-01T00:00:00")["details"]["fields"]["run_at"]  # no offset


@pytest.mark.usefixtures("job_worker")
def test_a_run_at_in_the_past_runs_at_once(client) -> None:
    user = User(client)
    past = _at(-30)
    job = user.submit("debug.echo", {"message": "now"}, run_at=past)
    assert job["status"] == "queued"
    assert datetime.fromisoformat(job["run_at"]) == datetime.fromisoformat(past)
    done = user.wait_status(job["id"], "succeeded")
    assert _types(user, job["id"]) == ["submitted", "started", "succeeded"]
    assert done["run_at"] == job["run_at"]


def test_the_release_query_is_served_by_the_partial_index(client) -> None:
    """Over a job history of 50,000 rows (a tenth of them waiting), `ix_jobs_due` (scheduled
    rows only, in due order) answers the release's query without a sort, so its cost follows
    the due jobs, not the history. The rows and their statistics are rolled back."""
    owner = uuid.UUID(User(client).profile["id"])
    with session_scope() as session:
        session.execute(
            text(
                "INSERT INTO jobs (id, owner_id, kind, processor, queue, params, status, attempts,"
                " max_attempts, cancel_requested, priority, labels, run_at, created_at,"
                " updated_at)"
                " SELECT gen_random_uuid(), :owner, 'diagnostic', 'debug.echo', 'files', '{}',"
                " CASE WHEN i % 10 = 0 THEN 'scheduled' ELSE 'succeeded' END, 0, 1, false,"
                " 'normal', '{}', now() + i * interval '1 second', now(), now()"
                " FROM generate_series(1, 50000) AS i"
            ),
            {"owner": owner},
        )
        session.execute(text("ANALYZE jobs"))
        plan = "\n".join(
            session.scalars(
                text(
                    "EXPLAIN SELECT * FROM jobs WHERE status = 'scheduled' AND run_at <= now() "
                    "ORDER BY run_at, id LIMIT 500 FOR UPDATE SKIP LOCKED"
                )
            )
        )
        session.rollback()
    assert "ix_jobs_due" in plan and "Sort" not in plan, plan


def test_an_upload_can_wait_too(client) -> None:
    """POST /jobs/files takes the same options as form fields; a cancel ends it at once."""
    user = User(client)
    job = user.submit_file("file.checksum", b"later", {}, filename="a.txt", delay_seconds=60)
    assert job["status"] == "scheduled" and job["run_at"] is not None
    both = user.upload("file.checksum", b"x", {}, delay_seconds=60, run_at=_at(60))
    assert both.status_code == 422 and both.get_json()["error"]["code"] == "invalid_params"
    cancelled = user.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"


def test_a_run_at_before_the_epoch_is_refused(client) -> None:
    """A past run_at runs at once, but one before 1970 is a mistake: 422, not a row that
    PostgreSQL stores as a BC date and the API then cannot read back (a 500 on every list)."""
    user = User(client)
    for value in ("0001-01-01T00:00:00+01:00", "1969-12-31T23:59:59Z"):
        response = user.post(
            "/api/v1/jobs",
            json={"processor": "debug.echo", "params": {"message": "x"}, "run_at": value},
        )
        assert response.status_code == 422, value
        assert response.get_json()["error"]["code"] == "invalid_params"
    assert user.get("/api/v1/jobs").status_code == 200


def test_a_deploy_can_wait_too(client) -> None:
    """POST /jobs/deploy takes the same options: a delayed deploy waits as `scheduled` with
    its deployment recorded, and a cancel ends it before anything is cloned."""
    user = User(client)
    response = user.post(
        "/api/v1/jobs/deploy",
        json={"repo_url": "https://github.com/octo/later", "delay_seconds": 3600},
    )
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert job["status"] == "scheduled" and job["run_at"] is not None
    assert job["kind"] == "deploy"
    cancelled = user.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.get_json()["status"] == "cancelled"
