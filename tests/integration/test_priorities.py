"""Priorities: within one fleet a worker always takes waiting `high` work before `normal`
before `low` (shared/priorities.py), and every later delivery of a job keeps its priority."""

from __future__ import annotations

import uuid

from shared import priorities, transitions
from shared.config import get_settings
from shared.db import session_scope
from shared.models import Job
from tests.helpers import User
from tests.integration.workers import celery_worker

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
