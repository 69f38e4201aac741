"""Periodic maintenance run by Celery beat on the maintenance queue.

Each sweep handles at most `SWEEP_BATCH_SIZE` rows per run, oldest first, and locks rows with
SKIP LOCKED: after an outage there may be thousands of stale rows, and one huge transaction
would hold locks and starve the API. Running every few seconds, bounded batches drain any
backlog quickly while every single run stays short.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from shared.clock import now
from shared.config import Settings
from shared.db import session_scope
from shared.dispatch import queue_states
from shared.dispatch.publish import Dispatch, publish_job
from shared.jobs import transitions
from shared.jobs.dead_letters import dead_letter_payload, send_dead_letter
from shared.jobs.status import JobStatus
from shared.jobs.transitions import Effects
from shared.models import DeadLetter, Job
from shared.processors import get_processor
from workers.broker_recovery import recover_lost_messages

log = logging.getLogger(__name__)


def _task_name(job: Job) -> str:
    processor = get_processor(job.processor)
    if processor is None:
        raise LookupError(f"unknown processor {job.processor}")
    return processor.task_name


def publish_unpublished(settings: Settings) -> int:
    """Publish queued jobs whose message never left (the API died or the broker was down).

    Rows changed less than OUTBOX_GRACE ago are left to whoever is still publishing them (the
    API request, a requeue, the release of a delayed job: those commit first, then publish):
    judged by `updated_at`, since a released job was created long before it was queued.
    """
    cutoff = now() - timedelta(seconds=settings.outbox_grace)
    with session_scope() as session:
        jobs = session.scalars(
            select(Job)
            .where(
                Job.status == JobStatus.QUEUED.value,
                Job.published_at.is_(None),
                Job.updated_at <= cutoff,
                queue_states.not_paused(Job.queue),  # held until resumed
            )
            .order_by(Job.created_at)
            .limit(settings.sweep_batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        dispatches = [Dispatch.for_job(job, _task_name(job)) for job in jobs]
    published = sum(1 for dispatch in dispatches if publish_job(dispatch))
    if dispatches:
        log.info(
            "outbox sweep published %d of %d jobs",
            published,
            len(dispatches),
            extra={"event": "outbox_sweep", "published": published},
        )
    return published


def recover_stale_jobs(settings: Settings) -> int:
    """Re-dispatch running jobs whose heartbeat stopped (their whole worker died) and retries
    whose delayed message never ran (the worker holding it died)."""
    stale = now() - timedelta(seconds=settings.heartbeat_stale_after)
    effects: list[Effects] = []
    with session_scope() as session:
        jobs = session.scalars(
            select(Job)
            .where(
                or_(
                    and_(Job.status == JobStatus.RUNNING.value, Job.heartbeat_at < stale),
                    and_(
                        Job.status == JobStatus.RETRYING.value,
                        Job.next_attempt_at < stale,
                        # its message waits in the paused queue's list, not lost
                        queue_states.not_paused(Job.queue),
                    ),
                )
            )
            .order_by(Job.updated_at)
            .limit(settings.sweep_batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        for job in jobs:
            effects.append(_recover(session, job, settings))
    for effect in effects:
        effect.apply(settings.redis_url)
    return len(jobs)


def _recover(session: Session, job: Job, settings: Settings) -> Effects:
    task_name = _task_name(job)
    if job.status == JobStatus.RETRYING.value:
        return transitions.schedule_retry(
            session, job, task_name, settings, delay=0.0, reason="retry_message_lost"
        )
    log.warning(
        "job heartbeat stale; worker presumed dead",
        extra={"event": "worker_lost", "job_id": str(job.id), "worker": job.worker_host},
    )
    heartbeat_at = job.heartbeat_at.isoformat() if job.heartbeat_at else None
    outcome, lost = transitions.worker_lost(session, job, task_name, heartbeat_at=heartbeat_at)
    if outcome != "again":
        return lost
    retry = transitions.schedule_retry(
        session, job, task_name, settings, delay=0.0, reason="worker_lost"
    )
    retry.worker_lost = True
    return retry


def resend_missing_dead_letters(settings: Settings) -> int:
    """Dead jobs whose dead-letter message was lost get it again: none is dropped silently."""
    cutoff = now() - timedelta(seconds=max(settings.outbox_grace, 30.0))
    with session_scope() as session:
        jobs = session.scalars(
            select(Job)
            .where(
                Job.status == JobStatus.DEAD.value,
                Job.finished_at <= cutoff,
                ~exists().where(DeadLetter.dispatch_id == Job.dispatch_id),
            )
            .order_by(Job.finished_at)
            .limit(settings.sweep_batch_size)
        ).all()
        payloads = [_resent_payload(job) for job in jobs]
    return sum(1 for payload in payloads if send_dead_letter(payload))


def _resent_payload(job: Job) -> dict[str, Any]:
    # Selected with `finished_at <= cutoff`, which no NULL satisfies: the job has ended.
    assert job.finished_at is not None
    return dead_letter_payload(job, _task_name(job), None, job.finished_at)


def run_sweeps(settings: Settings) -> dict[str, Any]:
    return {
        "published": publish_unpublished(settings),
        "redispatched": recover_lost_messages(settings),
        "recovered": recover_stale_jobs(settings),
        "dead_letters_resent": resend_missing_dead_letters(settings),
    }
