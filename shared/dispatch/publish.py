"""Publishing job messages so that a job row and its queue message never diverge for good.

New jobs (`publish_new_job`): the message is sent while the INSERT is still uncommitted,
guarded by an advisory lock a fast worker waits on, and the row commits marked published.
Existing rows (`publish_job`: retries, requeues, the sweep): the state change commits first, the
message follows, and the row is marked published (`publish_jobs`: many rows, one broker round
trip, as delayed jobs are released). Whenever the broker refuses, the row stays
unpublished and the maintenance sweep sends it: a job the API accepted is never lost.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from sqlalchemy import tuple_, update
from sqlalchemy.orm import Session

from shared import locks
from shared.celery_app import app as celery_app
from shared.db import session_scope
from shared.dispatch import broker_marks, fast_publish, priorities
from shared.models import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dispatch:
    """One message to publish for one delivery of a job."""

    job_id: uuid.UUID
    dispatch_id: uuid.UUID
    queue: str
    task_name: str
    request_id: str | None = None
    countdown: float | None = None
    priority: str = priorities.DEFAULT.value  # every delivery of a job keeps its priority

    @classmethod
    def for_job(cls, job: Any, task_name: str, countdown: float | None = None) -> Dispatch:
        assert job.dispatch_id is not None, "a job is dispatched only with a dispatch id"
        return cls(
            job.id,
            job.dispatch_id,
            job.queue,
            task_name,
            job.request_id,
            countdown,
            job.priority or priorities.DEFAULT.value,
        )


def _arguments(dispatch: Dispatch) -> tuple[dict[str, Any], str]:
    """The task's kwargs and their ready-made repr."""
    kwargs = {
        "job_id": str(dispatch.job_id),
        "dispatch_id": str(dispatch.dispatch_id),
        "request_id": dispatch.request_id,
    }
    kwargsrepr = f"{{'job_id': '{dispatch.job_id}', 'dispatch_id': '{dispatch.dispatch_id}'}}"
    return kwargs, kwargsrepr


def send(dispatch: Dispatch, celery: Celery | None = None) -> None:
    """Publish the task message; raises on broker errors."""
    celery = celery or celery_app
    kwargs, kwargsrepr = _arguments(dispatch)
    if dispatch.countdown is None and fast_publish.supports(celery):
        fast_publish.push_task_message(
            celery,
            dispatch.task_name,
            str(dispatch.dispatch_id),
            kwargs,
            dispatch.queue,
            kwargsrepr,
            dispatch.priority,
        )
        return
    celery.send_task(
        dispatch.task_name,
        kwargs=kwargs,
        queue=dispatch.queue,
        task_id=str(dispatch.dispatch_id),
        countdown=dispatch.countdown,
        priority=priorities.step_of(dispatch.priority),
        # Given ready-made, Celery skips building safe reprs of the arguments.
        argsrepr="()",
        kwargsrepr=kwargsrepr,
    )
    if fast_publish.supports(celery):
        # After the message: a mark never claims a message the broker did not take.
        broker_marks.mark(fast_publish.broker_client(celery), dispatch.dispatch_id)


def send_many(dispatches: Sequence[Dispatch], celery: Celery) -> None:
    """Publish immediate messages, with their marks, in one Redis transaction (a Redis
    broker only): one round trip, all or none; raises on broker errors."""
    messages = []
    for dispatch in dispatches:
        assert dispatch.countdown is None, "only immediate messages are sent together"
        kwargs, kwargsrepr = _arguments(dispatch)
        message = fast_publish.task_message(
            celery, dispatch.task_name, str(dispatch.dispatch_id), kwargs, dispatch.queue,
            kwargsrepr, dispatch.priority,
        )  # fmt: skip
        messages.append((dispatch.queue, dispatch.priority, message))
    fast_publish.push_task_messages(celery, messages)


def publish_job(
    dispatch: Dispatch, celery: Celery | None = None, session: Session | None = None
) -> bool:
    """Send and mark the job published (in `session` if given, committing it). False, and
    logged, if the broker refused: the row stays unpublished for the sweep."""
    try:
        send(dispatch, celery)
    except Exception:
        log.warning(
            "publish failed; the outbox sweep will retry",
            exc_info=True,
            extra={"event": "publish_failed", "job_id": str(dispatch.job_id)},
        )
        return False
    statement = (
        update(Job)
        .where(Job.id == dispatch.job_id, Job.dispatch_id == dispatch.dispatch_id)
        .values(published_at=datetime.now(UTC))
    )
    if session is not None:
        session.execute(statement)
        session.commit()
    else:
        with session_scope() as own:
            own.execute(statement)
    return True


def _send_all(dispatches: Sequence[Dispatch], celery: Celery) -> bool:
    """Send every message, in one Redis transaction on a Redis broker (one round trip, all or
    none); False, logged, if the broker refused."""
    try:
        if fast_publish.supports(celery):
            send_many(dispatches, celery)
        else:
            for dispatch in dispatches:
                send(dispatch, celery)
    except Exception:
        log.warning(
            "publish of %d jobs failed; the outbox sweep will retry",
            len(dispatches),
            exc_info=True,
            extra={"event": "publish_failed", "jobs": len(dispatches)},
        )
        return False
    return True


def publish_jobs(dispatches: Sequence[Dispatch], celery: Celery | None = None) -> int:
    """Send immediate messages for existing, committed rows together, then mark the rows
    published in one UPDATE; how many were sent (0 if the broker refused: the rows stay
    unpublished for the outbox sweep)."""
    if not dispatches or not _send_all(dispatches, celery or celery_app):
        return 0
    sent = [(dispatch.job_id, dispatch.dispatch_id) for dispatch in dispatches]
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(tuple_(Job.id, Job.dispatch_id).in_(sent))
            .values(published_at=datetime.now(UTC))
        )
    return len(dispatches)


def publish_new_job(session: Session, job: Any, task_name: str, celery: Celery | None) -> bool:
    """Publish a job whose INSERT is not committed yet, so a submit costs one commit.

    The submit's transaction holds an advisory lock on the job (taken by its INSERT) until it
    ends. A worker that receives the message first finds no row, waits on that lock, and looks
    again: the row is there if the submit committed, absent (the message is dropped) if it
    rolled back. If the broker refuses, `published_at` is cleared and the row commits
    unpublished for the outbox sweep. Only for new rows: an existing row's old state would be
    visible to a fast worker.
    """
    try:
        send(Dispatch.for_job(job, task_name), celery)
    except Exception:
        log.warning(
            "publish failed; the outbox sweep will retry",
            exc_info=True,
            extra={"event": "publish_failed", "job_id": str(job.id)},
        )
        session.execute(update(Job).where(Job.id == job.id).values(published_at=None))
        return False
    return True


def publish_new_jobs(
    session: Session, dispatches: Sequence[Dispatch], celery: Celery | None
) -> bool:
    """`publish_new_job` for a batch of uncommitted rows: every message (with its mark) in
    one Redis transaction, so one broker round trip, all or none. If the broker refuses,
    every row's `published_at` is cleared and they commit unpublished for the outbox sweep."""
    if _send_all(dispatches, celery or celery_app):
        return True
    ids = [dispatch.job_id for dispatch in dispatches]
    session.execute(update(Job).where(Job.id.in_(ids)).values(published_at=None))
    return False


def wait_for_uncommitted_job(session: Session, job_id: uuid.UUID) -> None:
    """Block until a submit that may still be inserting this job has ended (see above)."""
    locks.lock(session, job_id)


def delivered(dispatch_id: uuid.UUID, celery: Celery | None = None) -> None:
    """A worker claimed the job of this dispatch: its broker mark has done its work."""
    celery = celery or celery_app
    if fast_publish.supports(celery):
        broker_marks.unmark(fast_publish.broker_client(celery), dispatch_id)
