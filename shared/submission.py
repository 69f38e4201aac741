"""Submitting a job: the one path every kind of job takes, whichever endpoint it came through.

In order:

1. Idempotency: a key that names a job of the last 24 hours answers with that job, before
   any quota is spent (a different request under the same key is a conflict).
2. Quotas (the caller's `Quotas`; this module knows none of them): the rate first, then,
   under a per-user advisory lock, the owner's active work, so concurrent submits cannot
   race past a limit together. A kind's own quota (active deployments) is checked there too.
3. Staging (`InputStager`): the input is stored under the new job's id only once the
   request is known to be new and within quota.
4. Insert: one statement writes the job and its `submitted` event and takes the job's lock.
5. Rows that belong to the job (`with_job`: a deployment) join the same transaction.
6. Publish before the commit (`shared.dispatch.publish_new_job`), then commit: one commit.
7. The metric and the live event.

If anything after staging fails, or a concurrent request with the same key inserted first,
the staged object is discarded: no object is left without its job and no job is committed
without its input. The caller parses the request and answers; it commits nothing itself.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Protocol

from celery import Celery
from sqlalchemy import BigInteger, DateTime, column, select, text
from sqlalchemy.orm import Session

from shared import live, locks, logging_setup, metrics
from shared.dispatch import publish_new_job
from shared.jobs import JobConflict, now
from shared.models import Job
from shared.priorities import Priority
from shared.processors import Processor
from shared.status import JobStatus

log = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW = timedelta(hours=24)


class NewJob(SimpleNamespace):
    """A just-inserted job row, read like a Job (attribute access)."""


@dataclass(frozen=True)
class SubmitResult:
    job: Job | NewJob
    created: bool  # False: the answer is an earlier job with the same Idempotency-Key


class Quotas(Protocol):
    """The limits on new work: asked only once a submission is known not to be a replay."""

    def count_submission(self) -> None:
        """Spend this submission against limits that need no lock (submissions per minute)."""

    def checks_active_work(self) -> bool:
        """Whether `check_active_work` has a limit to check (the lock costs a query)."""

    def check_active_work(self, session: Session) -> None:
        """Refuse if the owner has too much active work; runs under `lock_owner`."""


class InputStager(Protocol):
    """Stores a submission's input under the new job's id, and removes it again."""

    def stage(self, job_id: uuid.UUID) -> dict[str, Any]:
        """Store the input; returns what the job records of it (its `input_file`)."""

    def discard(self, stored: dict[str, Any]) -> None:
        """Remove what `stage` stored because no job will own it. Must not raise."""


@dataclass(frozen=True)
class Submission:
    """Everything a submit needs, as the caller parsed it from the request."""

    owner_id: uuid.UUID
    processor: Processor
    params: dict[str, Any]
    max_attempts: int
    queue: str | None = None  # default: the processor's
    idempotency_key: str | None = None
    request_id: str | None = None
    quotas: Quotas | None = None
    stager: InputStager | None = None
    with_job: Callable[[Session, NewJob], None] | None = None  # adds rows the job owns
    priority: str = Priority.NORMAL.value
    labels: dict[str, str] = field(default_factory=dict)
    run_at: datetime | None = None  # later than now: the job waits as `scheduled`
    schedule_id: uuid.UUID | None = None  # made by this schedule...
    scheduled_for: datetime | None = None  # ...for this occurrence (unique per schedule)
    batch_id: uuid.UUID | None = None

    @property
    def waits(self) -> bool:
        """Whether the job is held back as `scheduled` until its `run_at`."""
        return self.run_at is not None and self.run_at > now()


def submit_job(
    session: Session, submission: Submission, *, celery: Celery | None, redis_url: str
) -> SubmitResult:
    """Create the job, or answer the earlier one its Idempotency-Key names (module docstring).

    Commits on success; on any failure rolls back, discards what was staged and re-raises.
    """
    expired = None
    if submission.idempotency_key:
        existing = find_by_idempotency_key(session, submission.owner_id, submission.idempotency_key)
        if existing is not None:
            if existing.created_at >= now() - IDEMPOTENCY_WINDOW:
                check_same_request(existing, submission.processor, submission.params)
                return SubmitResult(existing, created=False)
            expired = existing
    if submission.quotas is not None:
        _check_quotas(session, submission.owner_id, submission.quotas)
    if expired is not None:
        expired.idempotency_key = None  # the key may name a new job
        session.flush()
    job_id = uuid.uuid4()
    stager = submission.stager
    staged = stager.stage(job_id) if stager is not None else None
    try:
        job = insert_job(session, submission, job_id, staged)
        if job is None:
            winner = _concurrent_winner(session, submission)
            session.commit()
            if stager is not None and staged is not None:
                stager.discard(staged)
            return SubmitResult(winner, created=False)
        if submission.with_job is not None:
            submission.with_job(session, job)
        if job.status == JobStatus.QUEUED.value:  # a scheduled job is published when due
            publish_new_job(session, job, submission.processor.task_name, celery)
        session.commit()
    except BaseException:
        session.rollback()
        if stager is not None and staged is not None:
            stager.discard(staged)
        raise
    _announce(job, submission, redis_url)
    return SubmitResult(job, created=True)


def lock_owner(session: Session, owner_id: uuid.UUID) -> None:
    """Serialise the owner's submissions (and retries) until the transaction ends, so counts
    of their active work cannot be raced past by a concurrent request."""
    locks.lock(session, owner_id)


def _check_quotas(session: Session, owner_id: uuid.UUID, quotas: Quotas) -> None:
    quotas.count_submission()
    if quotas.checks_active_work():
        lock_owner(session, owner_id)
        quotas.check_active_work(session)


def find_by_idempotency_key(session: Session, owner_id: uuid.UUID, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


def recent_job(session: Session, owner_id: uuid.UUID, key: str) -> Job | None:
    """The job this key names if a submit with it would be answered as a replay."""
    existing = find_by_idempotency_key(session, owner_id, key)
    if existing is not None and existing.created_at >= now() - IDEMPOTENCY_WINDOW:
        return existing
    return None


#: Params a submit generates itself (not part of what the user asked): ignored on replays.
_GENERATED_PARAMS = ("deployment_id",)


def check_same_request(existing: Job, processor: Processor, params: dict[str, Any]) -> None:
    def asked(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k not in _GENERATED_PARAMS}

    if existing.processor != processor.name or asked(existing.params) != asked(params):
        raise JobConflict(
            "idempotency_key_reused",
            "This Idempotency-Key was already used for a different request.",
        )


def _concurrent_winner(session: Session, submission: Submission) -> Job:
    """The job of the request with the same key that inserted first (its answer is ours)."""
    assert submission.idempotency_key is not None
    existing = find_by_idempotency_key(session, submission.owner_id, submission.idempotency_key)
    if existing is None:
        raise JobConflict(
            "idempotency_key_in_flight",
            "A request with this Idempotency-Key is still being processed.",
        )
    check_same_request(existing, submission.processor, submission.params)
    return existing


# One statement inserts the job and its `submitted` event and takes the job's advisory lock
# (held until commit, see shared.dispatch.publish_new_job). `published_at` is set
# optimistically and cleared if the publish then fails. A keyed insert that collides with a
# concurrent one returns no row instead of aborting the transaction.
_INSERT_JOB = text("""
WITH lock AS (SELECT pg_advisory_xact_lock(:lock_key)),
job AS (
    INSERT INTO jobs (id, owner_id, kind, processor, queue, params, status, attempts,
        max_attempts, idempotency_key, request_id, dispatch_id, cancel_requested,
        input_file, published_at, priority, run_at, labels, schedule_id, scheduled_for,
        batch_id, created_at, updated_at)
    SELECT :id, :owner_id, :kind, :processor, :queue, CAST(:params AS jsonb), :status, 0,
        :max_attempts, :idempotency_key, :request_id, :dispatch_id, false,
        CAST(:input_file AS jsonb), CASE WHEN :status = 'queued' THEN now() END, :priority,
        :run_at, CAST(:labels AS jsonb), :schedule_id, :scheduled_for, :batch_id, now(), now()
    FROM lock
    ON CONFLICT ON CONSTRAINT uq_jobs_owner_idempotency_key DO NOTHING
    RETURNING id, created_at, updated_at, published_at
), event AS (
    INSERT INTO job_events (job_id, type, attempt, data, created_at)
    SELECT id, 'submitted', NULL, CAST(:event AS jsonb), now() FROM job
    RETURNING id
)
SELECT job.created_at, job.updated_at, job.published_at,
    (SELECT id FROM event) AS submitted_event_id
FROM job
""").columns(  # typed result columns: SQLAlchemy then reuses the result metadata
    column("created_at", DateTime(timezone=True)),
    column("updated_at", DateTime(timezone=True)),
    column("published_at", DateTime(timezone=True)),
    column("submitted_event_id", BigInteger),
)
# What a just-inserted job holds besides the values the insert was given: only the
# timestamps above come from the database. Returning and parsing every column instead
# cost about a tenth of a submit's CPU.
_NEW_JOB_DEFAULTS: dict[str, Any] = {
    "attempts": 0,
    "progress_current": None,
    "progress_total": None,
    "progress_message": None,
    "error_code": None,
    "error_message": None,
    "result": None,
    "next_attempt_at": None,
    "heartbeat_at": None,
    "worker_host": None,
    "worker_pid": None,
    "cancel_requested": False,
    "input_deleted_at": None,
    "result_file": None,
    "result_expires_at": None,
    "result_deleted_at": None,
    "started_at": None,
    "finished_at": None,
}


def insert_job(
    session: Session,
    submission: Submission,
    job_id: uuid.UUID,
    input_file: dict[str, Any] | None = None,
) -> NewJob | None:
    """Insert the queued job and its `submitted` event; None if a concurrent request with
    the same Idempotency-Key inserted first.

    `input_file` describes what was staged under `job_id` (an upload). The job is inserted
    as published; the caller publishes it before committing and `publish_new_job` clears
    `published_at` if the broker refuses (the outbox sweep then sends it).
    """
    processor = submission.processor
    queue = submission.queue or processor.queue
    inserted = {
        "id": job_id,
        "owner_id": submission.owner_id,
        "kind": processor.kind,
        "processor": processor.name,
        "queue": queue,
        "params": submission.params,
        "max_attempts": submission.max_attempts,
        "idempotency_key": submission.idempotency_key,
        "request_id": submission.request_id,
        "dispatch_id": uuid.uuid4(),
        "input_file": input_file,
        "status": (JobStatus.SCHEDULED if submission.waits else JobStatus.QUEUED).value,
        "priority": submission.priority,
        "run_at": submission.run_at,
        "labels": submission.labels,
        "schedule_id": submission.schedule_id,
        "scheduled_for": submission.scheduled_for,
        "batch_id": submission.batch_id,
    }
    values = {
        **inserted,
        "lock_key": locks.lock_key(job_id),
        "params": json.dumps(submission.params),
        "labels": json.dumps(submission.labels),
        "input_file": json.dumps(input_file) if input_file is not None else None,
        "event": json.dumps(
            {
                "processor": processor.name,
                "queue": queue,
                "max_attempts": submission.max_attempts,
                "request_id": submission.request_id,
                "priority": submission.priority,
                **({"run_at": submission.run_at.isoformat()} if submission.run_at else {}),
            }
        ),
    }
    row = session.execute(_INSERT_JOB, values).mappings().one_or_none()
    if row is None:
        return None
    # A plain snapshot of the new row: mapping it into the ORM costs more than the insert.
    return NewJob(**_NEW_JOB_DEFAULTS, **inserted, **row)


def _announce(job: NewJob, submission: Submission, redis_url: str) -> None:
    """After the commit: the log line, the metric and the live `submitted` event."""
    processor = submission.processor
    logging_setup.bind(job_id=str(job.id), user_id=str(submission.owner_id))
    log.info("job submitted", extra={"event": "job_submitted", "processor": processor.name})
    metrics.job_submitted(redis_url, processor.kind, processor.name)
    live.broadcast(
        [
            live.message(
                job.submitted_event_id, job.id, "submitted", None, {"processor": processor.name},
                owner_id=submission.owner_id,
            )
        ]
    )  # fmt: skip
