"""Paused queues: the operator's pause of a job queue, stored, and the jobs it holds back.

PostgreSQL is the source of truth (`queue_states`; no row: the queue runs), so a worker
restarted or started later obeys a pause it never heard announced. Three layers keep every
worker of a paused queue from starting new work (running jobs finish):

1. Workers stop consuming it (workers/queue_pause.py): a broadcast on every change
   (`announce`), a check as a worker starts, and a periodic check that heals a lost
   broadcast. Messages submitted meanwhile simply wait in the broker.
2. The claim refuses it: the fast claim's guard (shared/jobs/fast_transitions.py) matches no job
   of a paused queue, and the general path holds the job (shared/jobs/transitions.py `hold`:
   `queued`, unpublished, its broker mark removed), for a message a worker took before it
   heard of the pause or a retry's countdown that came due meanwhile.
3. The sweeps leave held jobs alone (`not_paused`); resume publishes them (`release_held`)
   with their dispatch id and priority.

Only the job fleets' queues can be paused: `maintenance` and `dead_letter` carry the
platform's own recovery (the sweeps, dead-letter recording), which must never wait.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from celery import Celery
from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.clock import now
from shared.db import session_scope
from shared.dispatch import priorities, queues
from shared.dispatch.publish import Dispatch, publish_jobs
from shared.jobs.status import JobStatus
from shared.models import Job, QueueState
from shared.processors import get_processor

log = logging.getLogger(__name__)

#: Queues an operator may pause: the fleets that run user jobs.
PAUSABLE = queues.JOB_QUEUES
#: The remote-control command a worker obeys (workers/queue_pause.py registers it).
CONTROL_COMMAND = "dockyard_queue_state"


def not_paused(queue: Any) -> ColumnElement[bool]:
    """A WHERE clause: the job's queue (a column) is not paused."""
    return ~exists().where(QueueState.name == queue, QueueState.paused.is_(True))


def paused_names(session: Session) -> set[str]:
    return set(session.scalars(select(QueueState.name).where(QueueState.paused.is_(True))))


def is_paused(session: Session, name: str) -> bool:
    return bool(session.scalar(select(QueueState.paused).where(QueueState.name == name)))


def set_paused(session: Session, name: str, paused: bool, changed_by: uuid.UUID | None) -> None:
    """Store the state (the caller commits, then announces it)."""
    values = {"name": name, "paused": paused, "changed_by": changed_by}
    session.execute(
        insert(QueueState)
        .values(**values)
        .on_conflict_do_update(
            index_elements=[QueueState.name],
            set_={"paused": paused, "changed_by": changed_by, "updated_at": func.now()},
        )
    )


def held_depths(session: Session, name: str) -> dict[str, int]:
    """Jobs of a queue waiting unpublished in PostgreSQL (held by a pause, or not yet sent
    by the outbox), per priority: part of the queue's true depth."""
    rows = session.execute(
        select(Job.priority, func.count())
        .where(
            Job.queue == name,
            Job.status == JobStatus.QUEUED.value,
            Job.published_at.is_(None),
        )
        .group_by(Job.priority)
    ).all()
    counts = {level.value: 0 for level in priorities.Priority}
    for priority, count in rows:
        counts[priority or priorities.DEFAULT.value] += count
    return counts


def oldest_waiting(session: Session, name: str) -> datetime | None:
    """When the queue's oldest queued job was submitted (None: nothing waits)."""
    return session.scalar(
        select(func.min(Job.created_at)).where(
            Job.queue == name, Job.status == JobStatus.QUEUED.value
        )
    )


def release_held(name: str, limit: int, celery: Celery | None = None, batch: int = 200) -> int:
    """Publish up to `limit` held jobs of a resumed queue, `batch` rows per transaction
    (rows locked with SKIP LOCKED and touched, so the outbox sweep leaves them alone). What
    is left, or refused by the broker, the outbox sweep publishes on its next runs."""
    released = 0
    while released < limit:
        with session_scope() as session:
            jobs = session.scalars(
                select(Job)
                .where(
                    Job.queue == name,
                    Job.status == JobStatus.QUEUED.value,
                    Job.published_at.is_(None),
                    not_paused(Job.queue),
                )
                .order_by(Job.created_at)
                .limit(min(batch, limit - released))
                .with_for_update(skip_locked=True)
            ).all()
            dispatches = [
                Dispatch.for_job(job, processor.task_name)
                for job in jobs
                if (processor := get_processor(job.processor)) is not None
            ]
            for job in jobs:
                # Fresh again for OUTBOX_GRACE (judged by updated_at): the sweep leaves these
                # rows to this publish instead of sending them a second time after the commit.
                job.updated_at = now()
        if not jobs:
            break
        published = publish_jobs(dispatches, celery)  # one broker round trip per batch
        released += len(jobs)
        if published < len(jobs):
            break  # the broker refuses (or a processor is gone): left to the sweep
    return released


def announce(celery: Celery, name: str, paused: bool, destination: list[str] | None = None) -> bool:
    """Tell the workers (all, or `destination` nodes) to stop or start consuming `name`.
    Best effort: a worker that misses it heals at its next periodic check."""
    try:
        celery.control.broadcast(
            CONTROL_COMMAND,
            arguments={"queue": name, "paused": paused},
            destination=destination,
        )
    except Exception:
        log.warning(
            "queue state not announced; workers heal at their next check",
            exc_info=True,
            extra={"event": "queue_state_announce_failed", "queue": name},
        )
        return False
    return True
