"""Priorities: within one fleet a worker always takes waiting `high` work before `normal`
before `low` (shared/dispatch/priorities.py), and every later delivery of a job keeps its priority."""

from __future__ import annotations

import json
import uuid

from redis import Redis

from shared.config import get_settings
from shared.db import session_scope
from shared.dispatch import priorities
from shared.jobs import transitions
from shared.models import Job
from tests.helpers import User, wait_for
from tests.integration.workers import celery_worker
from workers.release import release_due

FLEET = {"fleet": "files"}  # a fleet no in-process test worker consumes


def _started_order(user: User, ids: list[str]) -> list[str]:
    jobs = [user.job(job_id) for job_id in ids]
    return [job["id"] for job in sorted(jobs, key=lambda job: job["started_at"])]


def test_a_busy_fleet_takes_high_then_normal_then_low(client, tmp_path) -> None:
    user = User(client)
    with celery_worker(tmp_path, "one-slot", "files", concurrency=1):
        blocker = user.submit("debug.sleep", {"seconds": 4, "steps": 8, **FLEET})
        user.wait_status(blocker["id"], "running")
        low = [user.submit("debug.echo", {"message": f"l{i}", **FLEET}, priority="low")["id"]
               for i in range(10)]  # fmt: skip
        normal = [user.submit("debug.echo", {"message": f"n{i}", **FLEET})["id"]
                  for i in range(10)]  # fmt: skip
        high = user.submit("debug.echo", {"message": "h", **FLEET}, priority="high")["id"]
        # Everything was waiting while the only slot was busy, or the order proves nothing.
        assert user.job(blocker["id"])["status"] == "running"
        assert user.job(high)["priority"] == "high" and user.job(low[0])["priority"] == "low"
        for job_id in [high, *normal, *low]:
            user.wait_status(job_id, "succeeded", timeout=60)
    order = _started_order(user, [high, *normal, *low])
    assert order[0] == high
    assert set(order[1:11]) == set(normal)
    assert set(order[11:]) == set(low)
    # Within a level, first come first served.
    assert order[1:11] == normal and order[11:] == low


def test_a_retry_is_published_with_the_jobs_priority(client) -> None:
    """The retry message of a `low` job waits in the `low` list, not the default one."""
    user = User(client)
    owner = uuid.UUID(user.profile["id"])
    with session_scope() as session:
        job = Job(
            owner_id=owner,
            kind="diagnostic",
            processor="debug.fail",
            queue="files",
            params={"fail_times": 1},
            status="running",
            attempts=1,
            max_attempts=3,
            priority="low",
            dispatch_id=uuid.uuid4(),
        )
        session.add(job)
        session.flush()
        effects = transitions.schedule_retry(
            session, job, "dockyard.diagnostic.run", get_settings(), delay=0.0
        )
    assert effects.dispatch is not None and effects.dispatch.priority == "low"
    assert priorities.list_name("files", "low") == "files\x06\x166"
    assert priorities.list_name("files", "high") == "files"


def test_priority_is_validated(client) -> None:
    user = User(client)
    response = user.post(
        "/api/v1/jobs", json={"processor": "debug.echo", "params": {}, "priority": "urgent"}
    )
    assert response.status_code == 422
    assert "priority" in response.get_json()["error"]["details"]["fields"]
    job = user.submit("debug.echo", {"message": "x", **FLEET})
    assert job["priority"] == "normal"
    user.post(f"/api/v1/jobs/{job['id']}/cancel")


def _waiting_in(broker: Redis, queue: str, priority: str) -> dict[str, bytes]:
    """Messages waiting in one priority list of a queue, by task id (the dispatch id)."""
    raws = broker.lrange(priorities.list_name(queue, priority), 0, -1)
    return {json.loads(raw)["headers"]["id"]: raw for raw in raws}


def _dispatch_id(job_id: str) -> str:
    with session_scope() as session:
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None
        return str(job.dispatch_id)


def test_every_publish_path_puts_a_job_in_its_priority_list(client) -> None:
    """Submit, batch, the release of a delayed job and a broker-loss redispatch each write the
    message to the Redis list of the job's own priority (what the worker's BRPOP orders)."""
    settings = get_settings()
    broker = Redis.from_url(settings.broker_url)
    user = User(client)
    low = user.submit("debug.echo", {"message": "low", **FLEET}, priority="low")
    response = user.post(
        "/api/v1/jobs/batch",
        json={
            "jobs": [
                {"processor": "debug.echo", "params": {"message": "b", **FLEET}, "priority": "high"}
            ]
        },
    )
    assert response.status_code == 202, response.get_json()
    (batched,) = response.get_json()["items"]
    delayed = user.submit(
        "debug.echo", {"message": "later", **FLEET}, priority="low", delay_seconds=1
    )
    assert delayed["status"] == "scheduled"
    try:
        assert _dispatch_id(low["id"]) in _waiting_in(broker, "files", "low")
        assert _dispatch_id(batched["id"]) in _waiting_in(broker, "files", "high")
        assert _dispatch_id(delayed["id"]) not in _waiting_in(broker, "files", "low")

        wait_for(lambda: release_due() or user.job(delayed["id"])["status"] == "queued",
                 message="the delayed job to be released")  # fmt: skip
        assert _dispatch_id(delayed["id"]) in _waiting_in(broker, "files", "low")

        # The broker lost the low job's message: the redispatch goes to the low list again.
        previous = _dispatch_id(low["id"])
        broker.lrem(
            priorities.list_name("files", "low"), 0, _waiting_in(broker, "files", "low")[previous]
        )
        with session_scope() as session:
            job = session.get(Job, uuid.UUID(low["id"]), with_for_update=True)
            assert job is not None
            effects = transitions.redispatch(session, job, "dockyard.diagnostic.run", "broker_lost")
        effects.send()
        current = _dispatch_id(low["id"])
        assert current != previous
        assert current in _waiting_in(broker, "files", "low")
        assert current not in _waiting_in(broker, "files", "normal")
    finally:
        for job in (low, batched, delayed):
            user.post(f"/api/v1/jobs/{job['id']}/cancel")
        for level in ("high", "low"):
            for dispatch, raw in _waiting_in(broker, "files", level).items():
                if dispatch in {_dispatch_id(j["id"]) for j in (low, batched, delayed)}:
                    broker.lrem(priorities.list_name("files", level), 0, raw)
