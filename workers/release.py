"""Releasing delayed jobs when they come due: `scheduled` -> `queued`, then published.

A delayed job waits in PostgreSQL, not in the broker. A Celery ETA/countdown message would sit
unacknowledged in a worker for the whole wait and be delivered again, or twice, once the
visibility timeout passed (celery#2599, #3270, #4766); a row waits safely for any length of
time, through any restart. Beat asks for a release every RELEASE_INTERVAL (`release_tick`):
a tick releases what is due, then, until the next tick would come, sleeps until the next job
comes due and releases it, so a job is late by the publish and the query, not the interval.

Why the work is bounded: a tick releases batches of `BATCH_SIZE` jobs, oldest `run_at` first
(the `ix_jobs_due` partial index), each in its own short transaction, and stops at the next
tick's time. Thousands of jobs due at one moment (a popular `run_at`, a backlog after beat was
down) would otherwise be one long transaction holding row locks that cancels wait on, and one
tick running far past the next; bounded batches drain the same backlog tick after tick while
each transaction stays short. Rows are locked with FOR UPDATE SKIP LOCKED, so two releasers
(two beat processes, overlapping ticks) share the work instead of waiting on each other, and
a row is taken only while still `scheduled` (PostgreSQL re-checks the WHERE under the lock;
the transition checks the state machine): a job is released once, and a cancelled job never.
"""

from __future__ import annotations

import logging
import time

from celery import Celery
from sqlalchemy import func, select

from shared.clock import now
from shared.db import session_scope
from shared.dispatch.publish import publish_jobs
from shared.jobs import transitions
from shared.jobs.status import JobStatus
from shared.models import Job
from shared.processors import get_processor

log = logging.getLogger(__name__)

#: Jobs released in one transaction (and published in one broker round trip).
BATCH_SIZE = 500
#: Shortest wait between looks at a due job another releaser still holds: no busy loop.
MIN_WAIT = 0.02


def _task_name(job: Job) -> str:
    processor = get_processor(job.processor)
    if processor is None:
        raise LookupError(f"unknown processor {job.processor}")
    return processor.task_name


def release_batch(celery: Celery | None = None, limit: int = BATCH_SIZE) -> int:
    """Release up to `limit` jobs due now, oldest `run_at` first: commit, then send all their
    messages together. A refused publish leaves the rows `queued` and unpublished, which the
    outbox sweep sends. Returns how many were released."""
    with session_scope() as session:
        jobs = session.scalars(
            select(Job)
            .where(Job.status == JobStatus.SCHEDULED.value, Job.run_at <= now())
            .order_by(Job.run_at, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        dispatches = []
        for job in jobs:
            effects = transitions.release(session, job, _task_name(job))
            assert effects.dispatch is not None
            dispatches.append(effects.dispatch)
    published = publish_jobs(dispatches, celery)
    if dispatches:
        log.info(
            "released %d delayed jobs (%d published)",
            len(dispatches),
            published,
            extra={"event": "jobs_released", "released": len(dispatches), "published": published},
        )
    return len(dispatches)


def release_due(celery: Celery | None = None, deadline: float | None = None) -> int:
    """Release batches until fewer than a whole batch were due, or `deadline` (a
    time.monotonic() value) has passed: the next tick continues a longer backlog."""
    released = 0
    while True:
        count = release_batch(celery)
        released += count
        if count < BATCH_SIZE or (deadline is not None and time.monotonic() >= deadline):
            return released


def _wait_for_next(deadline: float) -> float | None:
    """Seconds to sleep until the next scheduled job comes due, or None if it is not due
    before `deadline` (the next tick's business)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    with session_scope() as session:
        next_due = session.scalar(
            select(func.min(Job.run_at)).where(Job.status == JobStatus.SCHEDULED.value)
        )
    if next_due is None:
        return None
    wait = (next_due - now()).total_seconds()
    return max(wait, MIN_WAIT) if wait < remaining else None


def release_tick(interval: float, celery: Celery | None = None) -> int:
    """One beat tick: release what is due, then, for `interval` seconds (until the next
    tick), release each job as it comes due. Returns how many were released."""
    deadline = time.monotonic() + interval
    released = release_due(celery, deadline)
    while (wait := _wait_for_next(deadline)) is not None:
        time.sleep(wait)
        released += release_due(celery, deadline)
    return released
