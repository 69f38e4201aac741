"""The single-statement twins of start and succeed (shared/jobs/fast_transitions.py) must leave the
same row and the same events as the general transitions (shared/jobs/transitions.py): two jobs in
the same state, one moved each way, compared column by column."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import inspect, select

from shared.clock import now
from shared.db import session_scope
from shared.jobs import transitions
from shared.jobs.fast_transitions import try_start, try_succeed
from shared.models import Job, JobEvent, Webhook, WebhookDelivery
from tests.helpers import User

# Columns that differ between any two jobs, or hold the moment each statement ran.
_OWN = {"id", "dispatch_id", "created_at", "updated_at", "started_at", "heartbeat_at"}
_MOMENTS = {"finished_at"}


def _job(owner: uuid.UUID, **state: Any) -> tuple[uuid.UUID, uuid.UUID]:
    """A retrying job with leftovers from an earlier attempt, which the start must clear."""
    job_id, dispatch_id = uuid.uuid4(), uuid.uuid4()
    with session_scope() as session:
        session.add(
            Job(
                id=job_id,
                owner_id=owner,
                kind="diagnostic",
                processor="debug.echo",
                queue="files",
                params={"message": "twin"},
                status="retrying",
                attempts=1,
                max_attempts=3,
                dispatch_id=dispatch_id,
                progress_current=3,
                progress_total=9,
                progress_message="earlier attempt",
                error_code="boom",
                error_message="the first attempt failed",
                next_attempt_at=now() + timedelta(seconds=5),
                **state,
            )
        )
    return job_id, dispatch_id


def _webhook(owner: uuid.UUID) -> uuid.UUID:
    """A webhook that wants the job.succeeded of jobs labelled team=twins."""
    webhook_id = uuid.uuid4()
    with session_scope() as session:
        session.add(
            Webhook(
                id=webhook_id,
                owner_id=owner,
                url="https://hooks.example.com/twins",
                events=["job.succeeded"],
                labels={"team": "twins"},
                secret="not-a-real-token",
            )
        )
    return webhook_id


def _deliveries(job_id: uuid.UUID) -> list[tuple[Any, ...]]:
    with session_scope() as session:
        rows = session.execute(
            select(
                WebhookDelivery.webhook_id,
                WebhookDelivery.event_type,
                WebhookDelivery.deployment_id,
                WebhookDelivery.status,
                WebhookDelivery.attempts,
                WebhookDelivery.body,
                WebhookDelivery.next_attempt_at.is_not(None),
            ).where(WebhookDelivery.job_id == job_id)
        ).all()
    return [tuple(row) for row in rows]


def _snapshot(job_id: uuid.UUID) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        columns = [c.key for c in inspect(Job).column_attrs if c.key not in _OWN | _MOMENTS]
        row = {name: getattr(job, name) for name in columns}
        row.update({name: getattr(job, name) is not None for name in _MOMENTS})
        events = session.execute(
            select(JobEvent.type, JobEvent.attempt, JobEvent.data)
            .where(JobEvent.job_id == job_id)
            .order_by(JobEvent.id)
        ).all()
    return row, [tuple(event) for event in events]


def _start_general(job_id: uuid.UUID) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None
        transitions.start(session, job, "twin-host", 4242)


def _succeed_general(job_id: uuid.UUID, result: dict[str, Any]) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None
        effects = transitions.succeed(session, job, result)
    assert (effects.kind, effects.processor, effects.ended) == (
        "diagnostic",
        "debug.echo",
        "succeeded",
    )


def test_fast_and_general_start_and_succeed_write_the_same_row_and_events(app) -> None:
    owner = uuid.UUID(User(app.test_client()).profile["id"])
    webhook_id = _webhook(owner)
    fast_id, fast_dispatch = _job(owner, labels={"team": "twins", "env": "test"})
    general_id, _ = _job(owner, labels={"team": "twins", "env": "test"})

    assert try_start(fast_id, fast_dispatch, "twin-host", 4242) is not None
    _start_general(general_id)
    fast_row, fast_events = _snapshot(fast_id)
    general_row, general_events = _snapshot(general_id)
    assert fast_row["status"] == "running" and fast_row["attempts"] == 2
    assert fast_row["progress_message"] is None and fast_row["next_attempt_at"] is None
    assert fast_row == general_row
    assert fast_events == general_events == [("started", 2, {"worker": "twin-host"})]

    result = {"echo": "twin", "n": 1}
    effects = try_succeed(fast_id, fast_dispatch, result)
    assert effects is not None and effects.ended == "succeeded"
    _succeed_general(general_id, result)
    fast_row, fast_events = _snapshot(fast_id)
    general_row, general_events = _snapshot(general_id)
    assert fast_row["status"] == "succeeded" and fast_row["error_code"] is None
    assert fast_row["result"] == result and fast_row["finished_at"] is True
    assert fast_row == general_row
    assert fast_events == general_events
    assert fast_events[-1] == ("succeeded", 2, {})
    assert _deliveries(fast_id) == _deliveries(general_id)
    assert _deliveries(fast_id) == [(webhook_id, "job.succeeded", None, "pending", 0, None, True)]


def test_the_fast_start_leaves_a_cancel_to_the_general_path(app) -> None:
    """A cancel asked before the start matches no row in the fast statement, so the general
    path can finish it as cancelled instead of running it."""
    owner = uuid.UUID(User(app.test_client()).profile["id"])
    job_id, dispatch_id = _job(owner, cancel_requested=True)
    assert try_start(job_id, dispatch_id, "twin-host", 4242) is None
    row, events = _snapshot(job_id)
    assert row["status"] == "retrying" and events == []
