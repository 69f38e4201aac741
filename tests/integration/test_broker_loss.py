"""Broker data loss: a real Redis of the test's own, shut down without saving and started
again empty, with queued jobs, retrying jobs and a job mid-run; and a worker that dies after
taking a message but before claiming its job. Everything talks to that Redis from its own
process (API under gunicorn, celery workers, beat), as in `make run`."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from shared.db import session_scope
from shared.dispatch import broker_marks, priorities
from shared.models import Job, JobEvent
from tests.helpers import wait_for
from tests.integration.stack import Api, PrivateRedis, api_server, scratch_database
from tests.integration.workers import celery_beat, celery_worker

NORMAL_DEPLOY = priorities.list_name("deploy", "normal")  # where normal deploy jobs wait


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


#: The database the helpers below read: the stack's own while a stack test runs.
_DATABASE: dict[str, str | None] = {"url": None}


@pytest.fixture
def stack_env(private_redis: PrivateRedis, settings) -> Iterator[dict[str, str]]:  # noqa: ANN001
    """Broker, blocklist, metrics and live events all on the Redis that will lose its data;
    a database of the stack's own (its sweeps must not act on other tests' rows)."""
    with scratch_database(settings.database_url, "broker_loss") as url:
        _DATABASE["url"] = url
        try:
            yield {
                "DATABASE_URL": url,
                "CELERY_BROKER_URL": f"redis://127.0.0.1:{private_redis.port}/0",
                "REDIS_URL": f"redis://127.0.0.1:{private_redis.port}/1",
                "RETRY_BACKOFF_BASE": "8",
                "RETRY_BACKOFF_MAX": "8",
                "RETRY_JITTER": "0",
            }
        finally:
            _DATABASE["url"] = None


def _jobs(ids: list[uuid.UUID]) -> dict[uuid.UUID, Job]:
    with session_scope(_DATABASE["url"]) as session:
        return {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(ids)))}


def _statuses(ids: list[uuid.UUID]) -> list[str]:
    return [job.status for job in _jobs(ids).values()]


def _event_types(job_id: uuid.UUID) -> list[str]:
    with session_scope(_DATABASE["url"]) as session:
        return list(
            session.scalars(
                select(JobEvent.type).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
            )
        )


def _events(job_id: uuid.UUID, type_: str) -> list[dict[str, Any]]:
    with session_scope(_DATABASE["url"]) as session:
        return [
            dict(data)
            for data in session.scalars(
                select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == type_)
            )
        ]


def _requeued_broker_lost(base: str) -> float:
    text = requests.get(base.removesuffix("/api/v1") + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("dockyard_jobs_requeued_total") and 'reason="broker_lost"' in line
    )


def test_jobs_survive_a_broker_that_lost_its_data(
    tmp_path: Path, private_redis: PrivateRedis, stack_env: dict[str, str]
) -> None:
    with api_server(tmp_path, stack_env) as base:
        api = Api(base)
        # Two jobs fail their first attempt and wait out an 8 s backoff; the worker is then
        # stopped (a warm shutdown hands its held retry messages back to Redis), so the
        # retry messages live only in Redis when it loses them.
        with celery_worker(tmp_path, "diag-before", "diagnostics", env=stack_env):
            retrying = [api.submit("debug.fail", {"fail_times": 1}) for _ in range(2)]
            wait_for(
                lambda: _statuses(retrying) == ["retrying"] * 2,
                timeout=20,
                message="the failing jobs to wait for their retry",
            )
        # Ten jobs queued with no diagnostics worker running: their messages wait in Redis.
        queued = [api.submit("debug.echo", {"message": f"m{i}"}) for i in range(10)]
        jobs = _jobs(queued)
        assert all(
            private_redis.client.exists(broker_marks.key(j.dispatch_id)) for j in jobs.values()
        )
        # One job mid-run on the files fleet while the broker loses everything.
        with celery_worker(tmp_path, "files-w", "files", env=stack_env) as files_worker:
            running = api.submit("debug.sleep", {"seconds": 6, "steps": 6, "fleet": "files"})
            wait_for(lambda: _statuses([running]) == ["running"], timeout=20, message="mid-run")

            private_redis.lose_everything()
            came_back = time.monotonic()

            with (
                celery_worker(tmp_path, "diag-after", "diagnostics,maintenance", env=stack_env),
                celery_beat(tmp_path, env=stack_env),
            ):
                everyone = [*retrying, *queued, running]
                wait_for(
                    lambda: _statuses(everyone) == ["succeeded"] * len(everyone),
                    timeout=60,
                    interval=0.2,
                    message="every job to succeed after the broker came back",
                )
                recovered_in = time.monotonic() - came_back
                assert recovered_in < 60
                counted = wait_for(
                    lambda: _requeued_broker_lost(base) >= 12 and _requeued_broker_lost(base),
                    timeout=10,
                    message="12 broker_lost requeues counted",
                )
                assert counted == 12
            assert files_worker.popen.poll() is None, files_worker.log()

    final = _jobs(everyone)
    for job_id in queued:
        assert final[job_id].attempts == 1
        assert _event_types(job_id) == ["submitted", "redispatched", "started", "succeeded"]
        (event,) = _events(job_id, "redispatched")
        assert event["reason"] == "broker_lost" and event["status"] == "queued"
    for job_id in retrying:
        assert final[job_id].attempts == 2
        types = _event_types(job_id)
        assert types.count("started") == 2 and types.count("succeeded") == 1
        assert types.count("redispatched") == 1 and types[-1] == "succeeded"
        (event,) = _events(job_id, "redispatched")
        assert event["reason"] == "broker_lost" and event["status"] == "retrying"
    # The job mid-run was never published again: it ran once and its worker finished it.
    assert final[running].attempts == 1
    types = _event_types(running)
    assert "redispatched" not in types and types.count("started") == 1
    assert types[-1] == "succeeded"


def test_a_message_taken_by_a_worker_that_died_before_claiming_is_sent_again(
    tmp_path: Path, private_redis: PrivateRedis, stack_env: dict[str, str]
) -> None:
    """A real worker receives the message (its node is named in the mark), its claim is held
    up by a row lock, and the whole worker is SIGKILLed: the message is stranded in the
    broker's unacknowledged set until the visibility timeout (two hours). The sweep sees the
    node's liveness key expire and publishes the job again; another worker runs it once."""
    with (
        api_server(tmp_path, stack_env) as base,
        celery_worker(tmp_path, "maint", "maintenance", env=stack_env),
        celery_beat(tmp_path, env=stack_env),
    ):
        api = Api(base)
        job_id = api.submit("debug.echo", {"message": "taken"})
        (job,) = _jobs([job_id]).values()
        mark = broker_marks.key(job.dispatch_id)
        assert private_redis.client.get(mark) == broker_marks.WAITING
        with session_scope(_DATABASE["url"]) as session:
            session.execute(select(Job).where(Job.id == job_id).with_for_update())
            with celery_worker(tmp_path, "doomed", "diagnostics", env=stack_env) as doomed:
                wait_for(
                    lambda: private_redis.client.get(mark) == b"doomed@localhost",
                    timeout=30,
                    message="the worker to receive the message",
                )
                doomed.kill_group()
            session.rollback()  # the claim it was waiting to make can never commit now
        assert _statuses([job_id]) == ["queued"]

        with celery_worker(tmp_path, "diag", "diagnostics", env=stack_env):
            wait_for(
                lambda: _statuses([job_id]) == ["succeeded"],
                timeout=30,
                message="the job to run after its holder died",
            )
    (final,) = _jobs([job_id]).values()
    assert final.attempts == 1
    assert _event_types(job_id) == ["submitted", "redispatched", "started", "succeeded"]
    (event,) = _events(job_id, "redispatched")
    assert event["reason"] == "worker_lost_before_claim"


def test_a_long_healthy_backlog_is_never_duplicated_and_a_lost_tail_is_found(app, settings) -> None:
    """Fifty jobs wait on a queue nobody consumes; the check walks them (and whatever rows
    earlier tests left) in windows of 20 with its cursor. With every mark present nothing is
    sent again, however often it runs; after the last five messages and marks vanish (the last
    writes a failover loses), those five and only those are redispatched, once each."""
    from dataclasses import replace

    from redis import Redis as Client

    from tests.helpers import User
    from workers.broker_recovery import CURSOR_KEY, recover_lost_messages

    small = replace(settings, sweep_batch_size=2)  # windows of 20 candidate rows
    broker = Client.from_url(settings.broker_url)
    Client.from_url(settings.redis_url).delete(CURSOR_KEY)
    user = User(app.test_client())
    # The deploy fleet's queue: no worker consumes it in this test.
    ids = [
        user.submit("debug.echo", {"message": str(i), "fleet": "deploy"})["id"] for i in range(50)
    ]
    try:
        wait_for(
            lambda: all(job.published_at for job in _jobs([uuid.UUID(i) for i in ids]).values()),
            message="every job marked published",
        )
        assert _queued_once(broker, ids)
        # Past the one-second margin for fresh publications, without sleeping blind.
        wait_for(lambda: _candidates_ready(ids), timeout=5, message="jobs a second old")
        for _ in range(6):  # three full walks of the backlog (rows other tests left included)
            recover_lost_messages(small)
        assert not [i for i in ids if "redispatched" in _event_types(uuid.UUID(i))]
        assert _queued_once(broker, ids)

        jobs = _jobs([uuid.UUID(i) for i in ids])
        tail = sorted(jobs.values(), key=lambda job: (job.published_at, job.id))[-5:]
        for job in tail:
            broker.delete(broker_marks.key(job.dispatch_id))
        for raw in broker.lrange(NORMAL_DEPLOY, 0, -1):
            if any(str(job.dispatch_id) in raw.decode() for job in tail):
                broker.lrem(NORMAL_DEPLOY, 1, raw)
        assert not _queued_once(broker, ids)

        # The walk reaches the tail within a few runs; there, passes of two jobs
        # (SWEEP_BATCH_SIZE, one transaction each) repeat until a pass finds less than a batch.
        for _ in range(10):
            recover_lost_messages(small)
            if all(_events(job.id, "redispatched") for job in tail):
                break
        for job in tail:
            (event,) = _events(job.id, "redispatched")
            assert event["reason"] == "broker_lost"
        for _ in range(6):
            recover_lost_messages(small)
        assert [len(_events(job.id, "redispatched")) for job in tail] == [1] * 5
        others = [uuid.UUID(i) for i in ids if uuid.UUID(i) not in {job.id for job in tail}]
        assert all("redispatched" not in _event_types(job_id) for job_id in others)
        assert _queued_once(broker, ids)  # each job's current message, exactly once
    finally:
        for job_id in ids:
            user.post(f"/api/v1/jobs/{job_id}/cancel")
        broker.delete(*priorities.list_names("deploy").values())


def _queued_once(broker, ids: list[str]) -> bool:  # noqa: ANN001
    """Each job's current dispatch has exactly one message in the deploy queue."""
    current = {str(job.dispatch_id) for job in _jobs([uuid.UUID(i) for i in ids]).values()}
    seen = [json.loads(raw)["headers"]["id"] for raw in broker.lrange(NORMAL_DEPLOY, 0, -1)]
    return all(seen.count(dispatch) == 1 for dispatch in current)


def _candidates_ready(ids: list[str]) -> bool:
    from datetime import UTC, datetime, timedelta

    oldest_allowed = datetime.now(UTC) - timedelta(seconds=1.1)
    return all(
        job.published_at < oldest_allowed for job in _jobs([uuid.UUID(i) for i in ids]).values()
    )
